//! Small secrets sealed at rest with the store passphrase: the access token in
//! `session.json` and the archive signing key. Reading either needs the passphrase, as
//! matrix-sdk's sqlite stores beside them do, so a copy of the state directory without
//! the passphrase gives neither the bot's session nor its signature.
//!
//! The seal is an age file encrypted to the passphrase (age's scrypt recipient), kept as
//! unpadded base64 inside the file that holds it. Its work factor is 2^15 (32 MiB of
//! memory, about a tenth of a second here): the sqlite stores under the same passphrase
//! are protected by 200,000 rounds of PBKDF2, which is weaker, so a costlier seal would
//! slow every start and protect nothing more. A seal written with a higher factor (up to
//! 2^20) still opens.

use age::secrecy::SecretString;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// scrypt's log2 work factor for new seals (see the module docs).
const WORK_FACTOR: u8 = 15;
/// The highest work factor an opened seal may ask for: a seal that asks more is not
/// cordon's and would take minutes.
const MAX_WORK_FACTOR: u8 = 20;

/// Why a seal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The text is not base64 of an age file.
    #[error("the sealed value is damaged (not base64 of an age file)")]
    Damaged,
    /// The passphrase does not open it, or it was altered.
    #[error(
        "the store passphrase does not open it (a different passphrase than the one it was \
         sealed with, or the file was altered)"
    )]
    WrongPassphrase,
    /// age could not encrypt.
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// Seals `plain` with `passphrase` (the store passphrase, as the config gives it); the
/// result is unpadded base64 text.
pub fn seal(passphrase: &str, plain: &[u8]) -> Result<String, SealError> {
    let mut recipient = age::scrypt::Recipient::new(SecretString::from(passphrase.to_owned()));
    recipient.set_work_factor(WORK_FACTOR);
    let sealed = age::encrypt(&recipient, plain).map_err(|e| SealError::Seal(e.to_string()))?;
    Ok(STANDARD_NO_PAD.encode(sealed))
}

/// Opens what [`seal`] made.
pub fn open(passphrase: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
    let bytes = STANDARD_NO_PAD
        .decode(sealed.trim().trim_end_matches('='))
        .map_err(|_| SealError::Damaged)?;
    let mut identity = age::scrypt::Identity::new(SecretString::from(passphrase.to_owned()));
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    age::decrypt(&identity, &bytes).map_err(|e| match e {
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => SealError::Damaged,
        _ => SealError::WrongPassphrase,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn a_seal_opens_with_its_passphrase_only_and_never_shows_the_value() {
        let sealed = seal("correct horse", b"syt_token").unwrap();
        assert!(!sealed.contains("syt_token"));
        assert_eq!(open("correct horse", &sealed).unwrap(), b"syt_token");
        assert!(matches!(
            open("wrong", &sealed),
            Err(SealError::WrongPassphrase)
        ));
        assert!(matches!(
            open("correct horse", "not base64!"),
            Err(SealError::Damaged)
        ));
        // Two seals of one value differ (a fresh salt and file key each time).
        assert_ne!(seal("p", b"x").unwrap(), seal("p", b"x").unwrap());
    }
}
