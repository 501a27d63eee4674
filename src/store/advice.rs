//! Clinical advice flagged in the incident rooms (🩺 or `!cordon advice <link>`), and
//! its transcription into the patient record (✅ or `!cordon transcribed <link>`). The
//! records name messages by event id and never hold their content.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError, append_in, audit, decode, encode, tables};
use crate::domain::incident::IncidentId;

/// How a flag or a mark was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkedVia {
    /// A reaction (🩺 or ✅).
    Reaction,
    /// A command (`advice` or `transcribed`).
    Command,
}

impl MarkedVia {
    /// Its name in the audit log and the archive: `reaction` or `command`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reaction => "reaction",
            Self::Command => "command",
        }
    }
}

/// Who did something, when, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The Matrix user id.
    pub by: String,
    /// When cordon recorded it.
    pub at: DateTime<Utc>,
    /// How.
    pub via: MarkedVia,
}

/// One message flagged as clinical advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdviceRecord {
    /// The incident.
    pub incident: IncidentId,
    /// The playbook's room key.
    pub room_key: String,
    /// The Matrix room id.
    pub room_id: String,
    /// The message's event id.
    pub event_id: String,
    /// Who wrote the message (the person a reminder goes to).
    pub author: String,
    /// When the message was sent (its server timestamp).
    pub sent_at: DateTime<Utc>,
    /// Who flagged it.
    pub flagged: Mark,
    /// Who marked it transcribed, once someone has. A mark made by reaction is
    /// unconfirmed (see [`AdviceRecord::is_confirmed`]).
    pub transcribed: Option<Mark>,
    /// When its author was reminded, once they have been.
    pub reminded_at: Option<DateTime<Utc>>,
    /// Its copy sealed to the records officers (text, patient), once sealed; `None` for
    /// advice flagged before cordon sealed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<SealedRef>,
}

/// Where an advice item's sealed copy is, and what cordon may know of it: hashes, and
/// whether a patient was given. Never the text or the NHS number, nor a hash of the
/// number alone (ten digits with a check digit are quickly guessed from their hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRef {
    /// The sealed file, relative to the archive directory.
    pub file: String,
    /// SHA-256 of the sealed file, hex.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256 of the sealed plaintext, hex.
    pub content_sha256: String,
    /// True when the sealed copy names a patient (`--patient`).
    pub patient: bool,
}

impl AdviceRecord {
    /// True once someone confirmed the transcription by command. Reactions are sent
    /// unencrypted, so the homeserver alone vouches for who sent one (and can send one
    /// in anyone's name): a ✅ is recorded, but only `!cordon transcribed <link>` from a
    /// verified device confirms it.
    pub fn is_confirmed(&self) -> bool {
        self.transcribed
            .as_ref()
            .is_some_and(|m| m.via == MarkedVia::Command)
    }

    /// The unconfirmed mark (a ✅ reaction), while no command has confirmed it.
    pub fn unconfirmed(&self) -> Option<&Mark> {
        self.transcribed
            .as_ref()
            .filter(|m| m.via == MarkedVia::Reaction)
    }

    /// True until someone confirms its transcription by command: an unconfirmed ✅
    /// keeps it on the outstanding list, in reminders and in the stand-down notice.
    pub fn is_outstanding(&self) -> bool {
        !self.is_confirmed()
    }
}

/// What [`Store::mark_transcribed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranscribedOutcome {
    /// Marked now (and flagged now too, if it was not flagged before).
    Marked(AdviceRecord),
    /// Someone had already marked it (by command, or by reaction when this mark is a
    /// reaction too); nothing changed.
    Already(AdviceRecord),
}

/// What [`Store::reseal_advice`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resealed {
    /// The new copy replaced this file (to remove), or none.
    Replaced(Option<String>),
    /// There is no such advice; nothing changed.
    NotFlagged,
}

impl Store {
    /// Flags a message as advice and audits it (`advice.flagged`), in one transaction.
    /// A message already flagged is left as it is. Returns whether it was new.
    pub fn flag_advice(&self, record: &AdviceRecord) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let new = {
            let mut table = tx.open_table(tables::ADVICE)?;
            let key = (record.incident.as_str(), record.event_id.as_str());
            if table.get(key)?.is_some() {
                false
            } else {
                let bytes = encode("advice", record)?;
                table.insert(key, bytes.as_slice())?;
                true
            }
        };
        if new {
            append_in(
                &tx,
                audit::NewEntry {
                    actor: &record.flagged.by,
                    action: "advice.flagged",
                    incident: Some(&record.incident),
                    details: &json!({
                        "room": record.room_key,
                        "event": record.event_id,
                        "author": record.author,
                        "via": record.flagged.via,
                        "patient": record.sealed.as_ref().is_some_and(|s| s.patient),
                    }),
                    at: record.flagged.at,
                },
            )?;
        }
        tx.commit()?;
        Ok(new)
    }

    /// Marks advice transcribed and audits it, in one transaction: by command as
    /// `advice.transcribed` (confirmed, replacing an unconfirmed ✅), by reaction as
    /// `advice.transcribed-unconfirmed`. A message nobody flagged is recorded as flagged
    /// by the same mark: marking it transcribed says it was advice. `unflagged` is the
    /// record to write in that case.
    pub fn mark_transcribed(
        &self,
        unflagged: &AdviceRecord,
        mark: &Mark,
    ) -> Result<TranscribedOutcome, StoreError> {
        let tx = self.write()?;
        let outcome = {
            let mut table = tx.open_table(tables::ADVICE)?;
            let key = (unflagged.incident.as_str(), unflagged.event_id.as_str());
            let existing: Option<AdviceRecord> = match table.get(key)? {
                None => None,
                Some(bytes) => Some(decode("advice", &unflagged.event_id, bytes.value())?),
            };
            match existing {
                Some(record)
                    if record.is_confirmed()
                        || (record.transcribed.is_some() && mark.via == MarkedVia::Reaction) =>
                {
                    TranscribedOutcome::Already(record)
                }
                existing => {
                    let mut record = existing.unwrap_or_else(|| unflagged.clone());
                    record.transcribed = Some(mark.clone());
                    let bytes = encode("advice", &record)?;
                    table.insert(key, bytes.as_slice())?;
                    TranscribedOutcome::Marked(record)
                }
            }
        };
        if let TranscribedOutcome::Marked(record) = &outcome {
            append_in(
                &tx,
                audit::NewEntry {
                    actor: &mark.by,
                    action: match mark.via {
                        MarkedVia::Command => "advice.transcribed",
                        MarkedVia::Reaction => "advice.transcribed-unconfirmed",
                    },
                    incident: Some(&record.incident),
                    details: &json!({
                        "room": record.room_key,
                        "event": record.event_id,
                        "author": record.author,
                        "via": mark.via,
                    }),
                    at: mark.at,
                },
            )?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Replaces the sealed copy of flagged advice `event` (sealed again with a patient),
    /// auditing `advice.patient` as `by` at `at`, in one transaction.
    pub fn reseal_advice(
        &self,
        incident: &IncidentId,
        event: &str,
        sealed: &SealedRef,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Resealed, StoreError> {
        let tx = self.write()?;
        let mut old = None;
        let Some(record) = update_in(&tx, incident, event, |r| {
            old = r.sealed.replace(sealed.clone()).map(|s| s.file);
        })?
        else {
            return Ok(Resealed::NotFlagged);
        };
        append_in(
            &tx,
            audit::NewEntry {
                actor: by,
                action: "advice.patient",
                incident: Some(incident),
                details: &json!({
                    "room": record.room_key,
                    "event": record.event_id,
                    "author": record.author,
                }),
                at,
            },
        )?;
        tx.commit()?;
        Ok(Resealed::Replaced(old))
    }

    /// Records that the author of advice `event` was reminded at `at`. Returns false if
    /// there is no such record.
    pub fn mark_advice_reminded(
        &self,
        incident: &IncidentId,
        event: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let found = update_in(&tx, incident, event, |r| r.reminded_at = Some(at))?.is_some();
        tx.commit()?;
        Ok(found)
    }

    /// The advice record of `event` in `incident`, if it was flagged.
    pub fn advice(
        &self,
        incident: &IncidentId,
        event: &str,
    ) -> Result<Option<AdviceRecord>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ADVICE)?;
        match table.get((incident.as_str(), event))? {
            None => Ok(None),
            Some(bytes) => decode("advice", event, bytes.value()).map(Some),
        }
    }

    /// Every advice record of `incident`, oldest message first.
    pub fn advice_for(&self, incident: &IncidentId) -> Result<Vec<AdviceRecord>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::ADVICE)?;
        let mut out: Vec<AdviceRecord> = Vec::new();
        let id = incident.as_str();
        for item in table.range((id, "")..)? {
            let (key, value) = item?;
            let (inc, event) = key.value();
            if inc != id {
                break;
            }
            out.push(decode("advice", event, value.value())?);
        }
        out.sort_by(|a, b| a.sent_at.cmp(&b.sent_at).then(a.event_id.cmp(&b.event_id)));
        Ok(out)
    }
}

/// Changes the advice record of `event` in `incident` with `change`, inside `tx`, and
/// returns it as written; `None` (nothing written) when there is no such record.
fn update_in(
    tx: &redb::WriteTransaction,
    incident: &IncidentId,
    event: &str,
    change: impl FnOnce(&mut AdviceRecord),
) -> Result<Option<AdviceRecord>, StoreError> {
    let mut table = tx.open_table(tables::ADVICE)?;
    let existing: Option<AdviceRecord> = match table.get((incident.as_str(), event))? {
        None => None,
        Some(bytes) => Some(decode("advice", event, bytes.value())?),
    };
    let Some(mut record) = existing else {
        return Ok(None);
    };
    change(&mut record);
    let bytes = encode("advice", &record)?;
    table.insert((incident.as_str(), event), bytes.as_slice())?;
    Ok(Some(record))
}
