//! cordon's archive signing key: an ed25519 key in its state directory that signs every
//! archive's manifest, so a records officer who pinned its public key knows the archive
//! came from this cordon and was not re-sealed by someone else (anyone can encrypt to a
//! records officer's public key; only cordon can sign).

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::ArchiveError;

pub use super::archive_file_name;

/// The signing key's file, in cordon's state directory (owner-only, 0600).
pub const SIGNING_KEY_FILE: &str = "archive-signing.key";

/// The prefix of the key file's one key line.
const SECRET_PREFIX: &str = "ed25519-secret:";

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

impl ArchiveSigner {
    /// Loads the key from `state_dir`, creating it (0600, written atomically) the first
    /// time.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, ArchiveError> {
        match Self::load(state_dir) {
            Err(ArchiveError::NoSigningKey(_)) => {}
            other => return other,
        }
        let signer = Self::generate();
        let path = state_dir.join(SIGNING_KEY_FILE);
        let tmp = state_dir.join(format!(
            ".{SIGNING_KEY_FILE}.{:08x}.tmp",
            rand::random::<u32>()
        ));
        let text = format!(
            "# cordon's archive signing key: keep it secret, back it up with the state directory.\n\
             # Public key (for records officers to pin): {}\n{SECRET_PREFIX}{}\n",
            signer.public(),
            STANDARD_NO_PAD.encode(signer.key.to_bytes())
        );
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
            Self::load(state_dir)
        }
    }

    /// Loads the key from `state_dir`; [`ArchiveError::NoSigningKey`] when there is none.
    pub fn load(state_dir: &Path) -> Result<Self, ArchiveError> {
        let path = state_dir.join(SIGNING_KEY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ArchiveError::NoSigningKey(state_dir.to_owned()));
            }
            Err(source) => return Err(ArchiveError::Io { path, source }),
        };
        Self::parse(&text).map_err(|detail| ArchiveError::SigningKey {
            path: path.clone(),
            detail: detail.to_owned(),
        })
    }

    fn parse(text: &str) -> Result<Self, &'static str> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = keys.next().ok_or("no key in the file")?;
        if keys.next().is_some() {
            return Err("more than one key line");
        }
        let b64 = line
            .strip_prefix(SECRET_PREFIX)
            .ok_or("the key line does not start with `ed25519-secret:`")?;
        let bytes: [u8; 32] = STANDARD_NO_PAD
            .decode(b64.trim_end_matches('='))
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the key is not 32 bytes of base64")?;
        Ok(Self {
            key: SigningKey::from_bytes(&bytes),
        })
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

/// The signing key's path in `state_dir`.
pub fn signing_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SIGNING_KEY_FILE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ArchiveSigner::load(dir.path()),
            Err(ArchiveError::NoSigningKey(_))
        ));
        let a = ArchiveSigner::load_or_create(dir.path()).unwrap();
        let b = ArchiveSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(
            ArchiveSigner::load(dir.path()).unwrap().public(),
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
    fn a_garbled_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(signing_key_path(dir.path()), "ed25519-secret:nope\n").unwrap();
        assert!(matches!(
            ArchiveSigner::load_or_create(dir.path()),
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
