//! `manifest.json`: what the archive holds, with a SHA-256 for every member, and the
//! figures of each room's transcript.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::EntryKind;
use crate::domain::transcript::{TranscriptLine, Unauthenticated};

/// The manifest's format version, in its `v`. Version 2 added the counts of lines
/// whose sender nothing proves (`unencrypted`, `unverified_device`,
/// `mismatched_sender`) and the transcripts' `unauthenticated` marker; a cordon that
/// reads only version 1 refuses it rather than render those lines unmarked.
///
/// Version 3 added the command record (`record`, members under `record/`) and
/// `time_zone`. Both are optional with defaults, so this cordon still reads versions 1
/// and 2 (they read as no decision and UTC). The version changes nonetheless because a
/// cordon that reads only version 2 would meet `record/` members it does not know and
/// refuse the archive as altered ("do not rely on this copy"), sending a records
/// officer to report tampering that never happened; with version 3 it says instead that
/// a newer cordon is needed.
///
/// Version 4 added `exercise`. A cordon that reads only version 3 would ignore the
/// field and present a drill's archive as a real incident's; with version 4 it says that
/// a newer cordon is needed instead.
///
/// Version 5 added the clinical advice (`advice`, members under `advice/`, sealed to
/// the records officers as each item was flagged). A cordon that reads only version 4
/// would meet `advice/` members it does not know and refuse the archive as altered.
pub const MANIFEST_VERSION: u32 = 5;

/// Every manifest version this cordon reads. A version 1 archive has none of version
/// 2's counts (they read as 0) and no marked line, so its figures still check; version
/// 1 and 2 archives have no command record and no time zone; before version 4 no
/// archive is an exercise's; before version 5 none holds sealed advice.
pub const READABLE_VERSIONS: [u32; 5] = [1, 2, 3, 4, 5];

/// `manifest.json`. Signed, byte for byte, by `manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The format version ([`MANIFEST_VERSION`]).
    pub v: u32,
    /// The incident id, e.g. `mc-4k7p`.
    pub incident: String,
    /// The incident's name as declared.
    pub display_name: String,
    /// The playbook it was declared from.
    pub playbook: String,
    /// Who declared it (its commander).
    pub commander: String,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// When it would have expired.
    pub expires_at: DateTime<Utc>,
    /// When it was stood down, if it was (an expired incident was not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stood_down_at: Option<DateTime<Utc>>,
    /// Who stood it down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stood_down_by: Option<String>,
    /// When the archive was sealed.
    pub sealed_at: DateTime<Utc>,
    /// The homeserver's server name.
    pub server_name: String,
    /// The time zone the incident was run in (an IANA name, e.g. `Europe/London`), in
    /// which opening renders the decision log's times. Absent before version 3: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// True when the incident was an exercise (a drill, `declare … --exercise`), not a
    /// real incident. Absent (false) for real incidents and before version 4.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exercise: bool,
    /// The cordon version that sealed it.
    pub cordon_version: String,
    /// The key that signed `manifest.sig`, `ed25519:<unpadded base64>`.
    pub signing_key: String,
    /// The rooms' transcripts.
    pub rooms: Vec<RoomManifest>,
    /// Every attachment's bytes.
    pub media: Vec<MediaManifest>,
    /// The pre-seal segments, copied verbatim.
    pub pre_seal: Vec<PreSealManifest>,
    /// The command record's entries (the decision log), copied verbatim as they were
    /// sealed, in order of kind and number. Absent before version 3, and when nothing
    /// was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record: Vec<RecordManifest>,
    /// The messages flagged as clinical advice, in the order they were sent, each with
    /// its sealed copy (`advice/…`) when it has one. Absent before version 5, and when
    /// none was flagged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<AdviceManifest>,
    /// The playbook's roles as the incident ran them: each role's title and everyone who
    /// held it (the playbook's holders and anyone added). Absent before version 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleManifest>,
    /// The incident's slice of the audit log.
    pub audit: AuditManifest,
    /// The Markdown renderings (each room's and `index.md`).
    pub renderings: Vec<FileHash>,
}

/// One role of the incident and its holders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleManifest {
    /// The playbook's role id (`ed-lead`).
    pub id: String,
    /// Its title (`ED consultant in charge`).
    pub title: String,
    /// Everyone who held it during the incident, Matrix user ids, sorted.
    pub holders: Vec<String>,
}

/// One room's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomManifest {
    /// The playbook's room key.
    pub key: String,
    /// The Matrix room id.
    pub room_id: String,
    /// The room's name.
    pub name: String,
    /// `rooms/<key>.jsonl`.
    pub file: String,
    /// SHA-256 of the transcript, hex.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// Its figures, recomputed by every verification.
    pub counts: Counts,
}

/// The figures of one transcript. Every line is one event; a line can be counted under
/// several headings (an edit is also an event, a redacted message also a message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Every line.
    pub events: u64,
    /// Lines of type `m.room.message` or `m.sticker` that are not edits, redacted or not.
    pub messages: u64,
    /// State events: lines with a `state_key` (memberships, name, topic, …).
    pub state: u64,
    /// Edits: lines whose relation (`relates_to`, or the content's `m.relates_to`) has
    /// `rel_type` `m.replace`.
    pub edits: u64,
    /// Lines of type `m.reaction`.
    pub reactions: u64,
    /// Lines whose event had been redacted when it was exported (`redacted` is set), by
    /// anyone, retention included.
    pub redacted: u64,
    /// Of those, the ones cordon's retention sweep redacted (`redacted.by_retention`):
    /// their content may be in a pre-seal segment.
    pub retention_removed: u64,
    /// Lines cordon could not decrypt (`undecryptable`).
    pub undecryptable: u64,
    /// Attachments whose bytes are in the archive (`media.file` is set).
    pub media: u64,
    /// Attachments whose bytes could not be fetched (`media` set, `media.file` absent).
    pub media_missing: u64,
    /// Lines sent in plaintext into an encrypted room (`unauthenticated:
    /// unencrypted`): the homeserver could have written them. 0 in version 1.
    #[serde(default)]
    pub unencrypted: u64,
    /// Lines decrypted from a device cordon had not verified (`unauthenticated:
    /// unverified-device`). 0 in version 1.
    #[serde(default)]
    pub unverified_device: u64,
    /// Lines whose sender is not the owner of their encryption session
    /// (`unauthenticated: mismatched-sender`). 0 in version 1.
    #[serde(default)]
    pub mismatched_sender: u64,
}

impl Manifest {
    /// The counts of every room added up.
    pub fn totals(&self) -> Counts {
        let mut t = Counts::default();
        for r in &self.rooms {
            let c = &r.counts;
            t.events += c.events;
            t.messages += c.messages;
            t.state += c.state;
            t.edits += c.edits;
            t.reactions += c.reactions;
            t.redacted += c.redacted;
            t.retention_removed += c.retention_removed;
            t.undecryptable += c.undecryptable;
            t.media += c.media;
            t.media_missing += c.media_missing;
            t.unencrypted += c.unencrypted;
            t.unverified_device += c.unverified_device;
            t.mismatched_sender += c.mismatched_sender;
        }
        t
    }
}

impl Counts {
    /// Adds one line's figures.
    pub fn add(&mut self, line: &TranscriptLine) {
        self.events += 1;
        let edit = is_edit(line);
        if matches!(line.event_type.as_str(), "m.room.message" | "m.sticker") && !edit {
            self.messages += 1;
        }
        if line.state_key.is_some() {
            self.state += 1;
        }
        if edit {
            self.edits += 1;
        }
        if line.event_type == "m.reaction" {
            self.reactions += 1;
        }
        if let Some(r) = &line.redacted {
            self.redacted += 1;
            if r.by_retention {
                self.retention_removed += 1;
            }
        }
        if line.undecryptable {
            self.undecryptable += 1;
        }
        if let Some(m) = &line.media {
            if m.file.is_some() {
                self.media += 1;
            } else {
                self.media_missing += 1;
            }
        }
        match line.unauthenticated {
            Some(Unauthenticated::Unencrypted) => self.unencrypted += 1,
            Some(Unauthenticated::UnverifiedDevice) => self.unverified_device += 1,
            Some(Unauthenticated::MismatchedSender) => self.mismatched_sender += 1,
            None => {}
        }
    }

    /// Lines of any kind whose sender nothing proves.
    pub fn unauthenticated(&self) -> u64 {
        self.unencrypted + self.unverified_device + self.mismatched_sender
    }

    /// The figures of a whole transcript.
    pub fn of(lines: &[TranscriptLine]) -> Counts {
        let mut c = Counts::default();
        lines.iter().for_each(|l| c.add(l));
        c
    }

    /// The first figure that differs, as `name: manifest X, transcript Y`.
    pub(crate) fn first_difference(&self, actual: &Counts) -> Option<String> {
        let pairs = [
            ("events", self.events, actual.events),
            ("messages", self.messages, actual.messages),
            ("state", self.state, actual.state),
            ("edits", self.edits, actual.edits),
            ("reactions", self.reactions, actual.reactions),
            ("redacted", self.redacted, actual.redacted),
            (
                "retention_removed",
                self.retention_removed,
                actual.retention_removed,
            ),
            ("undecryptable", self.undecryptable, actual.undecryptable),
            ("media", self.media, actual.media),
            ("media_missing", self.media_missing, actual.media_missing),
            ("unencrypted", self.unencrypted, actual.unencrypted),
            (
                "unverified_device",
                self.unverified_device,
                actual.unverified_device,
            ),
            (
                "mismatched_sender",
                self.mismatched_sender,
                actual.mismatched_sender,
            ),
        ];
        pairs
            .iter()
            .find(|(_, a, b)| a != b)
            .map(|(name, a, b)| format!("{name}: manifest says {a}, transcript has {b}"))
    }
}

/// The line's relation: its `relates_to`, else its content's `m.relates_to`.
pub(crate) fn relation(line: &TranscriptLine) -> Option<&Value> {
    line.relates_to
        .as_ref()
        .or_else(|| line.content.as_ref().and_then(|c| c.get("m.relates_to")))
}

/// True for an edit (`rel_type: m.replace`).
pub(crate) fn is_edit(line: &TranscriptLine) -> bool {
    relation(line)
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str)
        == Some("m.replace")
}

/// One attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaManifest {
    /// `media/<room key>-<n>.<ext>`.
    pub file: String,
    /// SHA-256 of the (decrypted) bytes, hex.
    pub sha256: String,
    /// Their size.
    pub bytes: u64,
    /// Where the media was on the homeserver.
    pub mxc: String,
    /// The message it was attached to.
    pub event_id: String,
    /// That message's room.
    pub room_key: String,
}

/// One pre-seal segment, copied verbatim (still encrypted to the records officers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreSealManifest {
    /// The room it was sealed from.
    pub room_key: String,
    /// `pre-seal/<room key>-<seq>.jsonl.age`.
    pub file: String,
    /// SHA-256 of the encrypted file, hex (the one recorded when it was written).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// How many transcript lines it holds, as recorded when it was written.
    pub lines: u64,
}

/// One message flagged as clinical advice: what cordon knows of it (ids, people,
/// times), never its text or patient, and its sealed copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdviceManifest {
    /// The room's key.
    pub room_key: String,
    /// The Matrix room id.
    pub room_id: String,
    /// The message's event id.
    pub event_id: String,
    /// Who wrote it.
    pub author: String,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// Who flagged it.
    pub flagged_by: String,
    /// When.
    pub flagged_at: DateTime<Utc>,
    /// How: `command` or `reaction`.
    pub flagged_via: String,
    /// Who marked it transcribed, when, and whether by command (confirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcribed: Option<TranscribedManifest>,
    /// True when a patient was given (`--patient`); the number is only in the sealed
    /// copy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub patient: bool,
    /// The sealed copy, when there is one (advice flagged before cordon sealed it has
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedMember>,
}

/// Who marked advice transcribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscribedManifest {
    /// The Matrix user id.
    pub by: String,
    /// When cordon recorded it.
    pub at: DateTime<Utc>,
    /// True when confirmed by command; false for a ✅ reaction alone.
    pub confirmed: bool,
}

/// A member copied verbatim, still encrypted to the records officers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedMember {
    /// Its path in the archive (`advice/<tag>-<attempt>.json.age`).
    pub file: String,
    /// SHA-256 of the encrypted file, hex (the one recorded when it was sealed).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of the sealed plaintext, hex: opening checks the decrypted item
    /// against it.
    pub content_sha256: String,
}

/// One entry of the command record, copied verbatim (still encrypted to the records
/// officers): what cordon knows of it without being able to read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordManifest {
    /// What kind of entry.
    pub kind: EntryKind,
    /// Its number within the incident and kind (the 3 of D3), from 1.
    pub number: u32,
    /// `record/<label>-<tag>.json.age`.
    pub file: String,
    /// SHA-256 of the encrypted file, hex (the one recorded when it was sealed).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of the sealed plaintext ([`super::record::SealedEntry::to_bytes`]), hex:
    /// opening checks the decrypted entry against it.
    pub content_sha256: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// When it was logged.
    pub logged_at: DateTime<Utc>,
    /// Who decided.
    pub decided_by: String,
    /// Who logged it.
    pub logged_by: String,
    /// The number of the entry (of the same kind) it corrects, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<u32>,
    /// The event id of cordon's post of the entry in the command room, if it was
    /// posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_event: Option<String>,
}

impl RecordManifest {
    /// The entry's label: `D3`.
    pub fn label(&self) -> String {
        self.kind.label(self.number)
    }
}

/// The audit log's slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditManifest {
    /// `audit.jsonl`.
    pub file: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// How many entries (lines) it holds.
    pub entries: u64,
}

/// A file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHash {
    /// The member's path.
    pub file: String,
    /// SHA-256, hex.
    pub sha256: String,
}
