//! The command record's entries (the decision log): numbers, times, people, hashes and
//! where the sealed text is. Never the text: that is sealed to the records officers
//! before the entry is recorded (`archive::record`).

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError, append_in, audit, decode, encode, tables, timers};
use crate::domain::incident::IncidentId;
use crate::domain::record::EntryKind;
use crate::domain::schedule::Timer;

/// Where cordon posted an entry in the command room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    /// The Matrix room id.
    pub room: String,
    /// The post's event id.
    pub event_id: String,
    /// When it was posted.
    pub at: DateTime<Utc>,
}

/// One entry of an incident's command record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEntry {
    /// The incident.
    pub incident: IncidentId,
    /// What kind of entry.
    pub kind: EntryKind,
    /// Its number within the incident and kind (the 3 of D3).
    pub number: u32,
    /// Who decided (the sender, or the author of the message replied to).
    pub decided_by: String,
    /// Who logged it (the command's sender).
    pub logged_by: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// When it was logged (the command's server time).
    pub logged_at: DateTime<Utc>,
    /// The room the command was sent in.
    pub command_room: String,
    /// The command's event id.
    pub command_event: String,
    /// The message replied to (room, event), when the entry was logged as a reply.
    pub source: Option<(String, String)>,
    /// Whether a rationale (`--because`) was given (its text is sealed).
    pub has_rationale: bool,
    /// The number of the entry it corrects.
    pub corrects: Option<u32>,
    /// The sealed text: its file relative to the archive directory.
    pub sealed_file: String,
    /// SHA-256 of the sealed file, hex.
    pub sealed_sha256: String,
    /// Size of the sealed file.
    pub sealed_bytes: u64,
    /// SHA-256 of the sealed plaintext, hex.
    pub content_sha256: String,
    /// Where and when cordon posted it, once it has.
    pub posted: Option<Posted>,
}

impl RecordEntry {
    /// Its label: `D3`.
    pub fn label(&self) -> String {
        self.kind.label(self.number)
    }
}

/// What [`Store::record_entry`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now.
    New,
    /// The command was handled before; nothing was written.
    AlreadyHandled,
    /// Another entry took this number first; nothing was written (number again).
    NumberTaken,
    /// The entry it corrects does not exist; nothing was written.
    NoSuchEntry(u32),
}

fn key(kind: EntryKind, number: u32) -> String {
    format!("{}/{number:08}", kind.as_str())
}

impl Store {
    /// The number the next entry of `kind` in `incident` takes.
    pub fn next_record_number(
        &self,
        incident: &IncidentId,
        kind: EntryKind,
    ) -> Result<u32, StoreError> {
        Ok(self
            .record_entries(incident)?
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.number)
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Records `entry` for the command event `entry.command_event`, in one
    /// transaction with marking that event processed, auditing it (`record.<kind>`,
    /// with its hashes, never its text) and arming `post` (the job that posts it in the
    /// command room). Writes nothing when the command was handled before, the number is
    /// taken, or the entry it corrects does not exist.
    pub fn record_entry(&self, entry: &RecordEntry, post: &Timer) -> Result<Recorded, StoreError> {
        let tx = self.write()?;
        {
            let mut processed = tx.open_table(tables::PROCESSED)?;
            if processed.get(entry.command_event.as_str())?.is_some() {
                return Ok(Recorded::AlreadyHandled);
            }
            let mut table = tx.open_table(tables::RECORD)?;
            let incident = entry.incident.as_str();
            if table
                .get((incident, key(entry.kind, entry.number).as_str()))?
                .is_some()
            {
                return Ok(Recorded::NumberTaken);
            }
            if let Some(n) = entry.corrects
                && (n >= entry.number
                    || table
                        .get((incident, key(entry.kind, n).as_str()))?
                        .is_none())
            {
                return Ok(Recorded::NoSuchEntry(n));
            }
            processed.insert(
                entry.command_event.as_str(),
                entry.logged_at.timestamp_millis(),
            )?;
            let bytes = encode("record entry", entry)?;
            table.insert(
                (incident, key(entry.kind, entry.number).as_str()),
                bytes.as_slice(),
            )?;
        }
        append_in(
            &tx,
            audit::NewEntry {
                actor: &entry.logged_by,
                action: match entry.kind {
                    EntryKind::Decision => "record.decision",
                    EntryKind::Methane => "record.methane",
                    EntryKind::Sitrep => "record.sitrep",
                },
                incident: Some(&entry.incident),
                details: &json!({
                    "label": entry.label(),
                    "number": entry.number,
                    "decided_by": entry.decided_by,
                    "decided_at": entry.decided_at,
                    "corrects": entry.corrects.map(|n| entry.kind.label(n)),
                    "command_event": entry.command_event,
                    "source_event": entry.source.as_ref().map(|(_, e)| e),
                    "rationale": entry.has_rationale,
                    "content_sha256": entry.content_sha256,
                    "sealed_file": entry.sealed_file,
                    "sealed_sha256": entry.sealed_sha256,
                }),
                at: entry.logged_at,
            },
        )?;
        timers::insert_timer_in(&tx, post, entry.logged_at)?;
        tx.commit()?;
        Ok(Recorded::New)
    }

    /// Every entry of `incident`'s command record, by kind then number.
    pub fn record_entries(&self, incident: &IncidentId) -> Result<Vec<RecordEntry>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::RECORD)?;
        let mut out = Vec::new();
        let id = incident.as_str();
        for item in table.range((id, "")..)? {
            let (k, v) = item?;
            let (found, name) = k.value();
            if found != id {
                break;
            }
            out.push(decode("record", name, v.value())?);
        }
        Ok(out)
    }

    /// One entry, if it exists.
    pub fn record_entry_get(
        &self,
        incident: &IncidentId,
        kind: EntryKind,
        number: u32,
    ) -> Result<Option<RecordEntry>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::RECORD)?;
        let k = key(kind, number);
        match table.get((incident.as_str(), k.as_str()))? {
            None => Ok(None),
            Some(v) => decode("record", &k, v.value()).map(Some),
        }
    }

    /// Records where cordon posted an entry. Returns false if there is no such entry;
    /// an entry posted before keeps its first post.
    pub fn mark_record_posted(
        &self,
        incident: &IncidentId,
        kind: EntryKind,
        number: u32,
        posted: &Posted,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let found = {
            let mut table = tx.open_table(tables::RECORD)?;
            let k = key(kind, number);
            let existing: Option<RecordEntry> = match table.get((incident.as_str(), k.as_str()))? {
                None => None,
                Some(v) => Some(decode("record", &k, v.value())?),
            };
            match existing {
                None => false,
                Some(mut entry) => {
                    if entry.posted.is_none() {
                        entry.posted = Some(posted.clone());
                        let bytes = encode("record entry", &entry)?;
                        table.insert((incident.as_str(), k.as_str()), bytes.as_slice())?;
                    }
                    true
                }
            }
        };
        tx.commit()?;
        Ok(found)
    }
}
