//! Clinical advice, sealed as it is flagged.
//!
//! When a message is flagged as clinical advice (🩺 or `!cordon advice`), cordon reads
//! it once and seals what the patient record needs (the text, who gave it and when,
//! the patient's NHS number when `--patient` gave one, the message it answers) with age
//! to the playbook's records recipients, beside the command record's entries
//! (`<incident>/advice/<tag>-<attempt>.json.age`). cordon's store keeps only the file,
//! its hashes and whether a patient was given: never the text or the number. The
//! stand-down copies the sealed files into the archive verbatim (`advice/`), and
//! opening decrypts them into the FHIR bundle ([`super::fhir`]).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::{WrittenEntry, from_json_line, json_line, open_line, seal_line};
use super::segment::SealError;
use crate::domain::incident::IncidentId;
pub use crate::input::config::Registration;

/// The version of [`SealedAdvice`]'s format.
pub const ADVICE_VERSION: u32 = 1;

/// One advice item as sealed to the records officers: the plaintext inside its
/// `.json.age` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAdvice {
    /// [`ADVICE_VERSION`].
    pub v: u32,
    /// The incident id.
    pub incident: String,
    /// The playbook's room key.
    pub room_key: String,
    /// The Matrix room id.
    pub room_id: String,
    /// The message's event id.
    pub event_id: String,
    /// Who wrote the message (who gave the advice).
    pub author: String,
    /// Their professional registration, when the config maps them to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_registration: Option<Registration>,
    /// When the message was sent (its server timestamp).
    pub sent_at: DateTime<Utc>,
    /// The message's text as cordon read it when it was flagged; `None` when cordon
    /// could not read it (a message it could not decrypt).
    pub text: Option<String>,
    /// The message the advice replies to, when it is a reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The patient's NHS number (ten digits, check digit valid), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Who flagged it.
    pub flagged_by: String,
    /// When cordon recorded the flag.
    pub flagged_at: DateTime<Utc>,
    /// 16 random bytes, hex: the store keeps the SHA-256 of this plaintext, and without
    /// them a message cordon could not read would leave only the NHS number unknown,
    /// which its hash would give away to anyone who tries the numbers.
    #[serde(default)]
    pub salt: String,
}

impl SealedAdvice {
    /// The exact bytes that are sealed: the item as one line of JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SealError> {
        json_line(self)
    }

    /// Reads an item from its sealed bytes, once decrypted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        from_json_line(bytes)
    }
}

/// The item's path relative to the archive directory:
/// `<incident>/advice/<event hash>-<attempt>.json.age`. The attempt tag is random, so
/// that sealing again (a patient added later, the same flag handled twice at once)
/// never overwrites a file the store names.
pub fn advice_path(incident: &IncidentId, event_id: &str, attempt: u64) -> String {
    let tag = hex::encode(Sha256::digest(event_id.as_bytes()));
    format!("{incident}/advice/{}-{attempt:016x}.json.age", &tag[..16])
}

/// Seals `item` to `recipients` under `archive_dir`, at a new [`advice_path`], durably.
pub fn seal_advice(
    archive_dir: &Path,
    item: &SealedAdvice,
    recipients: &[age::x25519::Recipient],
) -> Result<WrittenEntry, SealError> {
    let incident = IncidentId::parse(&item.incident)
        .map_err(|_| SealError::BadRoomKey(item.incident.clone()))?;
    let relative = advice_path(&incident, &item.event_id, rand::random());
    seal_line(archive_dir, &relative, &item.to_bytes()?, recipients)
}

/// Opens a sealed item's bytes with an identity (the records officer's). Returns the
/// item and the SHA-256 of its plaintext, to check against the manifest.
pub fn open_advice(
    bytes: &[u8],
    identity: &dyn age::Identity,
) -> Result<(SealedAdvice, String), SealError> {
    open_line(bytes, identity)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    pub(crate) fn item() -> SealedAdvice {
        let at = DateTime::parse_from_rfc3339("2026-12-04T14:32:10Z")
            .unwrap()
            .with_timezone(&Utc);
        SealedAdvice {
            v: ADVICE_VERSION,
            incident: "mc-4k7p".into(),
            room_key: "ward".into(),
            room_id: "!w:nhs.example".into(),
            event_id: "$advice".into(),
            author: "@consultant:nhs.example".into(),
            author_registration: None,
            sent_at: at,
            text: Some("Bed 4: give 1 g tranexamic acid over 10 minutes".into()),
            in_reply_to: None,
            patient: Some("9434765919".into()),
            flagged_by: "@nurse:nhs.example".into(),
            flagged_at: at,
            salt: "00".repeat(16),
        }
    }

    #[test]
    fn advice_is_sealed_to_its_recipient_and_never_on_disk_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let officer = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let a = item();
        let written = seal_advice(dir.path(), &a, &[officer.to_public()]).unwrap();
        assert!(written.file.file.starts_with("mc-4k7p/advice/"));
        assert!(written.file.file.ends_with(".json.age"));
        let raw = std::fs::read(dir.path().join(&written.file.file)).unwrap();
        assert_eq!(written.file.sha256, hex::encode(Sha256::digest(&raw)));
        for clear in [&b"tranexamic"[..], b"9434765919"] {
            assert!(
                !raw.windows(clear.len()).any(|w| w == clear),
                "in the clear"
            );
        }
        let (opened, sha) = open_advice(&raw, &officer).unwrap();
        assert_eq!(opened, a);
        assert_eq!(sha, written.content_sha256);
        assert!(open_advice(&raw, &other).is_err());
        let again = seal_advice(dir.path(), &a, &[officer.to_public()]).unwrap();
        assert_ne!(again.file.file, written.file.file);
    }
}
