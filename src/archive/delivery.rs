//! The FHIR delivery key: the age identity cordon holds, only when a FHIR server is
//! configured (`fhir.base_url`), so that the stand-down can deliver the advice it
//! sealed.
//!
//! Advice is sealed as it is flagged. Without delivery it is sealed to the records
//! officers alone and cordon can never read it again. With delivery, each item is
//! sealed to this key too, and at stand-down cordon opens the items with it, builds the
//! bundle, seals that to the same key in its outbox (`<state dir>/fhir-outbox/`), and
//! deletes the outbox copy once the bundle is delivered or an operator skips delivery.
//! This lets cordon read no more than it could already: its crypto store holds the room
//! keys that decrypt every message of the incident rooms until they are destroyed.
//!
//! The key file holds the public key in the clear and the identity sealed with the
//! store passphrase ([`crate::sealed`]), like the archive signing key; `cordon rekey`
//! seals it again.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use super::ArchiveError;
use crate::input::config::Secret;

/// The key file's name in the state directory.
pub const DELIVERY_KEY_FILE: &str = "fhir-delivery.key";

const SEALED_PREFIX: &str = "sealed:";

/// The key file's path.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DELIVERY_KEY_FILE)
}

/// Loads the key from `state_dir`, creating it (0600, written atomically) the first
/// time.
pub fn load_or_create(
    state_dir: &Path,
    passphrase: &Secret,
) -> Result<age::x25519::Identity, ArchiveError> {
    match load(state_dir, passphrase) {
        Err(ArchiveError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    let identity = age::x25519::Identity::generate();
    write(state_dir, &identity, passphrase)?;
    tracing::info!(key = %identity.to_public(), "created the FHIR delivery key");
    Ok(identity)
}

/// Loads the key from `state_dir`, opening its seal with `passphrase`.
pub fn load(state_dir: &Path, passphrase: &Secret) -> Result<age::x25519::Identity, ArchiveError> {
    let path = key_path(state_dir);
    let bad = |detail: String| ArchiveError::DeliveryKey {
        path: path.clone(),
        detail,
    };
    let text = std::fs::read_to_string(&path).map_err(ArchiveError::io(&path))?;
    let mut public = None;
    let mut sealed = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix(SEALED_PREFIX) {
            sealed = Some(s.to_owned());
        } else {
            public = Some(line.to_owned());
        }
    }
    let sealed = sealed.ok_or_else(|| bad("no sealed key in the file".to_owned()))?;
    let plain =
        crate::sealed::open(passphrase.expose(), &sealed).map_err(|e| bad(e.to_string()))?;
    let plain =
        String::from_utf8(plain).map_err(|_| bad("the sealed key is not text".to_owned()))?;
    let identity = age::x25519::Identity::from_str(plain.trim())
        .map_err(|e| bad(format!("the sealed key is not an age identity ({e})")))?;
    if public.is_some_and(|p| p != identity.to_public().to_string()) {
        return Err(bad(
            "its public key line does not match its private key (the file was altered)".to_owned(),
        ));
    }
    Ok(identity)
}

/// Seals the key in `state_dir` again under `new` (`cordon rekey`): `Ok(false)` when
/// there is none or `new` opens it already, `Ok(true)` when it was sealed again.
pub fn reseal(state_dir: &Path, old: &Secret, new: &Secret) -> Result<bool, ArchiveError> {
    if !key_path(state_dir).exists() || load(state_dir, new).is_ok() {
        return Ok(false);
    }
    let identity = load(state_dir, old)?;
    write(state_dir, &identity, new)?;
    Ok(true)
}

fn write(
    state_dir: &Path,
    identity: &age::x25519::Identity,
    passphrase: &Secret,
) -> Result<(), ArchiveError> {
    let path = key_path(state_dir);
    let secret = identity.to_string();
    let sealed = crate::sealed::seal(passphrase.expose(), secret.expose_secret().as_bytes())
        .map_err(|e| ArchiveError::DeliveryKey {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    let text = format!(
        "# cordon's FHIR delivery key: it opens the advice cordon delivers to the patient\n\
         # record, until delivered. Sealed with the store passphrase; back it up with the\n\
         # state directory.\n{}\n{SEALED_PREFIX}{sealed}\n",
        identity.to_public()
    );
    crate::durable::write_atomic(&path, text.as_bytes(), 0o600)
        .map_err(|(path, source)| ArchiveError::Io { path, source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_sealed_and_resealed_under_a_new_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let old = Secret::new("correct horse".into());
        let new = Secret::new("battery staple".into());
        let made = load_or_create(dir.path(), &old).unwrap();
        let again = load_or_create(dir.path(), &old).unwrap();
        assert_eq!(made.to_public(), again.to_public());
        let text = std::fs::read_to_string(key_path(dir.path())).unwrap();
        assert!(
            !text.contains("AGE-SECRET-KEY"),
            "the identity is in the clear"
        );
        assert!(load(dir.path(), &new).is_err());
        assert!(reseal(dir.path(), &old, &new).unwrap());
        assert!(!reseal(dir.path(), &old, &new).unwrap());
        assert_eq!(
            load(dir.path(), &new).unwrap().to_public(),
            made.to_public()
        );
        assert!(!reseal(tempfile::tempdir().unwrap().path(), &old, &new).unwrap());
    }
}
