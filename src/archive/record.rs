//! The command record's entries (the decision log), sealed one by one as they are made.
//!
//! What people write in a decision can hold patient data, like every message, so cordon
//! never keeps it in the clear: each entry is encrypted with age to the playbook's
//! records recipients the moment it is recorded, written atomically beside the pre-seal
//! segments (`<incident>/record/<file>.json.age`), and the store keeps only its number,
//! times, people, kind and hashes. The stand-down copies the sealed files into the
//! archive verbatim; opening the archive decrypts them into `decision-log.jsonl` and
//! `decision-log.md`. cordon keeps no key that can open an entry.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::segment::{SealError, WrittenSegment, open_sealed, write_sealed};
use crate::domain::incident::IncidentId;
pub use crate::domain::record::EntryKind;

/// The version of [`SealedEntry`]'s format.
pub const ENTRY_VERSION: u32 = 1;

/// One entry as sealed to the records officers: everything said and who said it. This
/// is the plaintext inside the entry's `.json.age` file; nothing of it but the hash,
/// the number, the times and the people is kept anywhere cordon can read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedEntry {
    /// [`ENTRY_VERSION`].
    pub v: u32,
    /// The incident id.
    pub incident: String,
    /// What kind of entry.
    pub kind: EntryKind,
    /// Its number within the incident and kind (the 3 of D3).
    pub number: u32,
    /// What was decided, as written (for a decision logged as a reply: the text of the
    /// message replied to).
    pub text: String,
    /// The rationale (`--because`), if given.
    pub because: Option<String>,
    /// Who decided: the sender, or the author of the message replied to.
    pub decided_by: String,
    /// Who logged it: the sender of the command.
    pub logged_by: String,
    /// When it was decided: the command's time, or the time of the message replied to.
    pub decided_at: DateTime<Utc>,
    /// When it was logged: the command's time (its server timestamp).
    pub logged_at: DateTime<Utc>,
    /// The room the command was sent in.
    pub command_room: String,
    /// The command's event id.
    pub command_event: String,
    /// The message replied to, when the decision was logged as a reply.
    pub source_event: Option<String>,
    /// The number of the entry this one corrects (`--corrects D5`), if any.
    pub corrects: Option<u32>,
}

impl SealedEntry {
    /// The entry's label: `D3`.
    pub fn label(&self) -> String {
        self.kind.label(self.number)
    }

    /// The exact bytes that are sealed: the entry as one line of JSON.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SealError> {
        json_line(self)
    }

    /// Reads an entry from its sealed bytes, once decrypted.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        from_json_line(bytes)
    }
}

/// `value` as the one line of JSON that is sealed (the object and `\n`).
pub(crate) fn json_line(value: &impl Serialize) -> Result<Vec<u8>, SealError> {
    let mut out =
        serde_json::to_vec(value).map_err(|source| SealError::Line { line: 1, source })?;
    out.push(b'\n');
    Ok(out)
}

/// A value read back from its sealed line, once decrypted.
pub(crate) fn from_json_line<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SealError> {
    serde_json::from_slice(bytes).map_err(|source| SealError::Line { line: 1, source })
}

/// Seals `plaintext` to `recipients` at `relative` under `archive_dir`, durably, with
/// the SHA-256 of the plaintext that the store and the manifest keep.
pub(crate) fn seal_line(
    archive_dir: &Path,
    relative: &str,
    plaintext: &[u8],
    recipients: &[age::x25519::Recipient],
) -> Result<WrittenEntry, SealError> {
    let content_sha256 = hex::encode(Sha256::digest(plaintext));
    let file = write_sealed(archive_dir, relative, plaintext, recipients)?;
    Ok(WrittenEntry {
        file,
        content_sha256,
    })
}

/// Opens a sealed line with an identity: the value and the SHA-256 of its plaintext,
/// to check against the manifest.
pub(crate) fn open_line<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    identity: &dyn age::Identity,
) -> Result<(T, String), SealError> {
    let plaintext = open_sealed(bytes, identity)?;
    let sha256 = hex::encode(Sha256::digest(&plaintext));
    Ok((from_json_line(&plaintext)?, sha256))
}

/// An entry written to disk, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenEntry {
    /// The sealed file: its path relative to the archive directory, its SHA-256 and size.
    pub file: WrittenSegment,
    /// SHA-256 of the plaintext ([`SealedEntry::to_bytes`]), hex: what the store and the
    /// audit log keep, so that an opened entry can be checked against them.
    pub content_sha256: String,
}

/// The entry's path relative to the archive directory:
/// `<incident>/record/<label>-<command hash>-<attempt>.json.age`. The attempt tag is
/// random, so that no attempt ever overwrites a file another one recorded (the same
/// command handled twice at once, from sync and from catch-up, seals twice and records
/// once). A file whose attempt was not recorded (a crash in between) is never named by
/// the store, is not archived, and goes with the incident's directory once the archive
/// is sealed.
pub fn entry_path(
    incident: &IncidentId,
    kind: EntryKind,
    number: u32,
    command_event: &str,
    attempt: u64,
) -> String {
    let tag = hex::encode(Sha256::digest(command_event.as_bytes()));
    format!(
        "{incident}/record/{}-{}-{attempt:016x}.json.age",
        kind.file_label(number),
        &tag[..16]
    )
}

/// Seals `entry` to `recipients` under `archive_dir`, at a new [`entry_path`], durably.
pub fn seal_entry(
    archive_dir: &Path,
    entry: &SealedEntry,
    recipients: &[age::x25519::Recipient],
) -> Result<WrittenEntry, SealError> {
    let incident = IncidentId::parse(&entry.incident)
        .map_err(|_| SealError::BadRoomKey(entry.incident.clone()))?;
    let relative = entry_path(
        &incident,
        entry.kind,
        entry.number,
        &entry.command_event,
        rand::random(),
    );
    seal_line(archive_dir, &relative, &entry.to_bytes()?, recipients)
}

/// Opens a sealed entry's bytes with an identity (the records officer's). Returns the
/// entry and the SHA-256 of its plaintext, to check against the manifest.
pub fn open_entry(
    bytes: &[u8],
    identity: &dyn age::Identity,
) -> Result<(SealedEntry, String), SealError> {
    open_line(bytes, identity)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn entry() -> SealedEntry {
        let at = DateTime::parse_from_rfc3339("2026-12-04T14:32:10Z")
            .unwrap()
            .with_timezone(&Utc);
        SealedEntry {
            v: ENTRY_VERSION,
            incident: "mc-4k7p".into(),
            kind: EntryKind::Decision,
            number: 3,
            text: "Divert all P1 trauma to St George's; bed 4 patient J.S. to theatre".into(),
            because: Some("CT down".into()),
            decided_by: "@a:nhs.example".into(),
            logged_by: "@loggist1:nhs.example".into(),
            decided_at: at,
            logged_at: at,
            command_room: "!c:nhs.example".into(),
            command_event: "$cmd".into(),
            source_event: None,
            corrects: Some(1),
        }
    }

    #[test]
    fn an_entry_is_sealed_to_its_recipient_and_never_on_disk_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let officer = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let e = entry();
        let written = seal_entry(dir.path(), &e, &[officer.to_public()]).unwrap();
        assert!(written.file.file.starts_with("mc-4k7p/record/D3-"));
        assert!(written.file.file.ends_with(".json.age"));
        let raw = std::fs::read(dir.path().join(&written.file.file)).unwrap();
        assert_eq!(written.file.sha256, hex::encode(Sha256::digest(&raw)));
        assert!(!raw.windows(6).any(|w| w == b"Divert"), "plaintext on disk");
        let (opened, sha) = open_entry(&raw, &officer).unwrap();
        assert_eq!(opened, e);
        assert_eq!(sha, written.content_sha256);
        assert!(open_entry(&raw, &other).is_err());
        // Sealing again never overwrites what was sealed.
        let again = seal_entry(dir.path(), &e, &[officer.to_public()]).unwrap();
        assert_ne!(again.file.file, written.file.file);
        assert_eq!(
            std::fs::read(dir.path().join(&written.file.file)).unwrap(),
            raw
        );
        assert_eq!(e.label(), "D3");
    }

    #[test]
    fn sealing_needs_a_recipient() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            seal_entry(dir.path(), &entry(), &[]),
            Err(SealError::NoRecipients)
        ));
    }
}
