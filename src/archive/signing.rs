//! cordon's archive signing key: an ed25519 key in its state directory that signs every
//! archive's manifest, so a records officer who pinned its public key knows the archive
//! came from this cordon and was not re-sealed by someone else (anyone can encrypt to a
//! records officer's public key; only cordon can sign).
//!
//! The key file holds the public key in the clear and the private key sealed with the
//! store passphrase ([`crate::sealed`]); a file from before the seal (the private key in
//! the clear) is sealed the next time the bot loads it.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::ArchiveError;
use crate::input::config::Secret;

pub use super::archive_file_name;

/// The signing key's file, in cordon's state directory (owner-only, 0600).
pub const SIGNING_KEY_FILE: &str = "archive-signing.key";

/// The prefix of the key line in a file from before the seal: the key in the clear.
const SECRET_PREFIX: &str = "ed25519-secret:";

/// The prefix of the sealed private key's line.
const SEALED_PREFIX: &str = "ed25519-sealed:";

/// The prefix of a public key's text form.
const PUBLIC_PREFIX: &str = "ed25519:";

/// The private signing key. Its bytes are zeroised when it is dropped and it has no
/// `Debug` that shows them.
pub struct ArchiveSigner {
    key: SigningKey,
}

impl fmt::Debug for ArchiveSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchiveSigner({})", self.public())
    }
}

/// What the key file holds, read without the passphrase.
struct KeyFile {
    /// The public key (`ed25519:…`), absent only in a file from before the seal.
    public: Option<ArchivePublicKey>,
    /// The private key, sealed with the store passphrase.
    sealed: Option<String>,
    /// The private key in the clear: a file from before the seal.
    clear: Option<[u8; 32]>,
}

impl KeyFile {
    fn parse(text: &str) -> Result<Self, &'static str> {
        let mut file = Self {
            public: None,
            sealed: None,
            clear: None,
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            if let Some(b64) = line.strip_prefix(SEALED_PREFIX) {
                if file.sealed.replace(b64.to_owned()).is_some() {
                    return Err("more than one sealed key line");
                }
            } else if let Some(b64) = line.strip_prefix(SECRET_PREFIX) {
                let bytes: [u8; 32] = STANDARD_NO_PAD
                    .decode(b64.trim_end_matches('='))
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or("the key is not 32 bytes of base64")?;
                if file.clear.replace(bytes).is_some() {
                    return Err("more than one key line");
                }
            } else if line.starts_with(PUBLIC_PREFIX) {
                let public = line.parse().map_err(|_| "the public key line is damaged")?;
                if file.public.replace(public).is_some() {
                    return Err("more than one public key line");
                }
            } else {
                return Err("a line is neither a comment nor a key");
            }
        }
        match (&file.sealed, &file.clear) {
            (None, None) => Err("no key in the file"),
            (Some(_), Some(_)) => Err("both a sealed and a plain key"),
            (Some(_), None) if file.public.is_none() => Err("a sealed key without its public key"),
            _ => Ok(file),
        }
    }
}

impl ArchiveSigner {
    /// Loads the key from `state_dir`, creating it (0600, written atomically) the first
    /// time. Its private half is sealed with `passphrase` (the store passphrase); a key
    /// file from before the seal is sealed now.
    pub fn load_or_create(state_dir: &Path, passphrase: &Secret) -> Result<Self, ArchiveError> {
        match Self::load_file(state_dir, passphrase) {
            Err(ArchiveError::NoSigningKey(_)) => {}
            Ok((signer, true)) => return Ok(signer),
            Ok((signer, false)) => {
                let path = signing_key_path(state_dir);
                let text = signer.file_text(passphrase)?;
                crate::durable::write_atomic(&path, text.as_bytes(), 0o600)
                    .map_err(|(path, source)| ArchiveError::Io { path, source })?;
                tracing::info!("sealed the archive signing key with the store passphrase");
                return Ok(signer);
            }
            Err(e) => return Err(e),
        }
        let signer = Self::generate();
        let path = signing_key_path(state_dir);
        let tmp = state_dir.join(format!(
            ".{SIGNING_KEY_FILE}.{:08x}.tmp",
            rand::random::<u32>()
        ));
        let text = signer.file_text(passphrase)?;
        let result = (|| {
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(ArchiveError::io(&tmp))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(ArchiveError::io(&tmp))?;
            // A hard link never replaces an existing file: if another process created the
            // key meanwhile, its key wins and is loaded below.
            match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(source) => Err(ArchiveError::Io {
                    path: path.clone(),
                    source,
                }),
            }
        })();
        let _ = fs::remove_file(&tmp);
        let created = result?;
        super::sync_dir(state_dir)?;
        if created {
            tracing::info!(key = %signer.public(), "created the archive signing key");
            Ok(signer)
        } else {
            Self::load(state_dir, passphrase)
        }
    }

    /// Seals the key in `state_dir` again under `new` (`cordon rekey`): `Ok(false)` when
    /// `new` opens it already, `Ok(true)` when it was sealed again.
    pub fn reseal(state_dir: &Path, old: &Secret, new: &Secret) -> Result<bool, ArchiveError> {
        if let Ok((_, true)) = Self::load_file(state_dir, new) {
            return Ok(false);
        }
        let signer = Self::load(state_dir, old)?;
        let text = signer.file_text(new)?;
        crate::durable::write_atomic(&signing_key_path(state_dir), text.as_bytes(), 0o600)
            .map_err(|(path, source)| ArchiveError::Io { path, source })?;
        Ok(true)
    }

    /// Loads the key from `state_dir`, opening its seal with `passphrase`;
    /// [`ArchiveError::NoSigningKey`] when there is none.
    pub fn load(state_dir: &Path, passphrase: &Secret) -> Result<Self, ArchiveError> {
        Self::load_file(state_dir, passphrase).map(|(signer, _)| signer)
    }

    /// The key, and whether it was sealed (`false`: a file from before the seal).
    fn load_file(state_dir: &Path, passphrase: &Secret) -> Result<(Self, bool), ArchiveError> {
        let path = signing_key_path(state_dir);
        let bad = |detail: String| ArchiveError::SigningKey {
            path: path.clone(),
            detail,
        };
        let file = read_key_file(state_dir)?;
        let (bytes, sealed): ([u8; 32], bool) = match (&file.sealed, file.clear) {
            (_, Some(bytes)) => (bytes, false),
            (Some(sealed), None) => {
                let plain = crate::sealed::open(passphrase.expose(), sealed)
                    .map_err(|e| bad(e.to_string()))?;
                let bytes = plain
                    .try_into()
                    .map_err(|_| bad("the sealed key is not 32 bytes".to_owned()))?;
                (bytes, true)
            }
            (None, None) => return Err(bad("no key in the file".to_owned())),
        };
        let signer = Self {
            key: SigningKey::from_bytes(&bytes),
        };
        if file.public.is_some_and(|p| p != signer.public()) {
            return Err(bad(
                "its public key line does not match its private key (the file was altered)"
                    .to_owned(),
            ));
        }
        Ok((signer, sealed))
    }

    /// The key file's text: comments, the public key in the clear, the private key
    /// sealed.
    fn file_text(&self, passphrase: &Secret) -> Result<String, ArchiveError> {
        let sealed =
            crate::sealed::seal(passphrase.expose(), &self.key.to_bytes()).map_err(|e| {
                ArchiveError::SigningKey {
                    path: PathBuf::from(SIGNING_KEY_FILE),
                    detail: e.to_string(),
                }
            })?;
        Ok(format!(
            "# cordon's archive signing key: back it up with the state directory.\n\
             # The private key is sealed with the store passphrase; the public key below is\n\
             # the one records officers pin (`cordon archive pubkey` prints it).\n\
             {}\n{SEALED_PREFIX}{sealed}\n",
            self.public()
        ))
    }

    /// A fresh key (not saved anywhere).
    pub fn generate() -> Self {
        Self {
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// The public key records officers pin.
    pub fn public(&self) -> ArchivePublicKey {
        ArchivePublicKey(self.key.verifying_key())
    }

    /// `manifest.sig`'s text for `manifest` (the exact bytes of `manifest.json`): the
    /// signature in standard base64, one line. Public for tools and tests that build
    /// archives by hand; the writer is the only caller in cordon.
    pub fn sign(&self, manifest: &[u8]) -> String {
        let sig: Signature = self.key.sign(manifest);
        format!("{}\n", STANDARD.encode(sig.to_bytes()))
    }
}

/// An archive signing key's public half, written `ed25519:<unpadded standard base64>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArchivePublicKey(VerifyingKey);

impl ArchivePublicKey {
    /// Checks `manifest.sig`'s text against the bytes of `manifest.json` (strict
    /// ed25519: no malleable or small-order signatures).
    pub fn verify(&self, manifest: &[u8], sig_text: &[u8]) -> Result<(), ArchiveError> {
        let text = std::str::from_utf8(sig_text).map_err(|_| ArchiveError::BadSignature)?;
        let bytes: [u8; 64] = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(ArchiveError::BadSignature)?;
        self.0
            .verify_strict(manifest, &Signature::from_bytes(&bytes))
            .map_err(|_| ArchiveError::BadSignature)
    }
}

impl fmt::Display for ArchivePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PUBLIC_PREFIX}{}",
            STANDARD_NO_PAD.encode(self.0.as_bytes())
        )
    }
}

impl fmt::Debug for ArchivePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArchivePublicKey({self})")
    }
}

impl FromStr for ArchivePublicKey {
    type Err = ArchiveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ArchiveError::BadPublicKey(s.to_owned());
        let b64 = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = STANDARD_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(ArchivePublicKey)
            .map_err(|_| bad())
    }
}

/// Reads and parses the key file in `state_dir` (no passphrase needed).
fn read_key_file(state_dir: &Path) -> Result<KeyFile, ArchiveError> {
    let path = signing_key_path(state_dir);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArchiveError::NoSigningKey(state_dir.to_owned()));
        }
        Err(source) => return Err(ArchiveError::Io { path, source }),
    };
    KeyFile::parse(&text).map_err(|detail| ArchiveError::SigningKey {
        path: path.clone(),
        detail: detail.to_owned(),
    })
}

impl ArchivePublicKey {
    /// The public key of the signing key in `state_dir`, read without the passphrase
    /// (`cordon archive pubkey`).
    pub fn of_state_dir(state_dir: &Path) -> Result<Self, ArchiveError> {
        let file = read_key_file(state_dir)?;
        match (file.public, file.clear) {
            (Some(public), _) => Ok(public),
            (None, Some(bytes)) => Ok(ArchiveSigner {
                key: SigningKey::from_bytes(&bytes),
            }
            .public()),
            (None, None) => Err(ArchiveError::SigningKey {
                path: signing_key_path(state_dir),
                detail: "no public key in the file".to_owned(),
            }),
        }
    }
}

/// The signing key's path in `state_dir`.
pub fn signing_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SIGNING_KEY_FILE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn pass() -> Secret {
        Secret::new("store passphrase".to_owned())
    }

    #[test]
    fn the_key_is_created_once_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ArchiveSigner::load(dir.path(), &pass()),
            Err(ArchiveError::NoSigningKey(_))
        ));
        let a = ArchiveSigner::load_or_create(dir.path(), &pass()).unwrap();
        let b = ArchiveSigner::load_or_create(dir.path(), &pass()).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(
            ArchiveSigner::load(dir.path(), &pass()).unwrap().public(),
            a.public()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(signing_key_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the key file is left: no temporary file.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_private_key_is_sealed_and_the_public_key_readable_without_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let signer = ArchiveSigner::load_or_create(dir.path(), &pass()).unwrap();
        let text = fs::read_to_string(signing_key_path(dir.path())).unwrap();
        let secret = STANDARD_NO_PAD.encode(signer.key.to_bytes());
        assert!(!text.contains(&secret), "{text}");
        assert!(!text.contains(SECRET_PREFIX), "{text}");
        assert_eq!(
            ArchivePublicKey::of_state_dir(dir.path()).unwrap(),
            signer.public()
        );
        // The wrong passphrase opens nothing, and creates no new key.
        let wrong = Secret::new("not it".to_owned());
        assert!(matches!(
            ArchiveSigner::load_or_create(dir.path(), &wrong),
            Err(ArchiveError::SigningKey { .. })
        ));
        assert_eq!(
            fs::read_to_string(signing_key_path(dir.path())).unwrap(),
            text
        );
    }

    #[test]
    fn a_key_file_from_before_the_seal_is_sealed_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let old = ArchiveSigner::generate();
        let secret = STANDARD_NO_PAD.encode(old.key.to_bytes());
        fs::write(
            signing_key_path(dir.path()),
            format!("# old\n{SECRET_PREFIX}{secret}\n"),
        )
        .unwrap();
        assert_eq!(
            ArchivePublicKey::of_state_dir(dir.path()).unwrap(),
            old.public()
        );
        let loaded = ArchiveSigner::load_or_create(dir.path(), &pass()).unwrap();
        assert_eq!(loaded.public(), old.public());
        let text = fs::read_to_string(signing_key_path(dir.path())).unwrap();
        assert!(!text.contains(&secret), "{text}");
        assert_eq!(
            ArchiveSigner::load(dir.path(), &pass()).unwrap().public(),
            old.public()
        );
    }

    #[test]
    fn a_public_line_that_does_not_match_the_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ArchiveSigner::load_or_create(dir.path(), &pass()).unwrap();
        let path = signing_key_path(dir.path());
        let text = fs::read_to_string(&path).unwrap();
        let mine = ArchivePublicKey::of_state_dir(dir.path())
            .unwrap()
            .to_string();
        let other = ArchiveSigner::generate().public().to_string();
        fs::write(&path, text.replace(&mine, &other)).unwrap();
        assert!(matches!(
            ArchiveSigner::load(dir.path(), &pass()),
            Err(ArchiveError::SigningKey { .. })
        ));
    }

    #[test]
    fn a_garbled_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(signing_key_path(dir.path()), "ed25519-secret:nope\n").unwrap();
        assert!(matches!(
            ArchiveSigner::load_or_create(dir.path(), &pass()),
            Err(ArchiveError::SigningKey { .. })
        ));
    }

    #[test]
    fn public_keys_round_trip_as_text_and_signatures_verify() {
        let signer = ArchiveSigner::generate();
        let text = signer.public().to_string();
        assert!(
            text.starts_with("ed25519:") && !text.ends_with('='),
            "{text}"
        );
        assert_eq!(text.len(), "ed25519:".len() + 43);
        let parsed: ArchivePublicKey = text.parse().unwrap();
        assert_eq!(parsed, signer.public());
        let sig = signer.sign(b"manifest");
        assert_eq!(sig.lines().count(), 1);
        parsed.verify(b"manifest", sig.as_bytes()).unwrap();
        assert!(matches!(
            parsed.verify(b"manifesT", sig.as_bytes()),
            Err(ArchiveError::BadSignature)
        ));
        let other = ArchiveSigner::generate().public();
        assert!(other.verify(b"manifest", sig.as_bytes()).is_err());
        for bad in ["", "ed25519:", "ed25519:AAAA", "x25519:AAAA", &text[1..]] {
            assert!(bad.parse::<ArchivePublicKey>().is_err(), "{bad:?}");
        }
    }
}
