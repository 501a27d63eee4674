//! Retention sweeps: where each incident room's sweep stands (`sweeps`) and the
//! pre-seal segments written before redacting (`seal_segments`).
//!
//! A sweep writes its record once per page of history, never once per event: the
//! record holds the pagination token from which the next sweep re-reads, so a restart
//! (even after SIGKILL) resumes there. A page's segment is recorded, with the record's
//! note of what that page has sealed, in one transaction before any of the page's
//! redactions is sent. The sweep's audit entry commits with its last record write.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, append_in, audit, decode, encode, tables};
use crate::domain::incident::IncidentId;

/// One room's retention sweep as stored in `sweeps` (key: incident id, room key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRecord {
    /// The Matrix room the record belongs to; a record for another room is refused.
    pub room_id: String,
    /// The `/messages?dir=f` token from which the next sweep re-reads; `None` is the
    /// start of the room. Every redactable event before it is redacted.
    pub from: Option<String>,
    /// The sequence number the next pre-seal segment gets (from 1).
    pub next_seal_seq: u64,
    /// What the page starting at `from` has already sealed, so a resumed sweep does not
    /// seal those events again. Cleared when `from` moves on.
    pub sealed_page: Option<SealedPage>,
    /// Everything the sweeps of this room have done.
    pub totals: SweepCounts,
    /// What has been done but not yet audited: a sweep that stopped on an error (or was
    /// killed) leaves its counts here, and the next sweep that finishes audits them.
    pub unaudited: SweepCounts,
    /// Sweeps that ran to the end.
    pub sweeps: u64,
    /// The last sweep that ran to the end.
    pub last_sweep: Option<LastSweep>,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
}

impl SweepRecord {
    /// A new record for `room_id`: nothing swept yet, reading from the start of the room.
    pub fn new(room_id: &str, at: DateTime<Utc>) -> Self {
        Self {
            room_id: room_id.to_owned(),
            from: None,
            next_seal_seq: 1,
            sealed_page: None,
            totals: SweepCounts::default(),
            unaudited: SweepCounts::default(),
            sweeps: 0,
            last_sweep: None,
            updated_at: at,
        }
    }
}

/// Counts of what sweeps did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepCounts {
    /// Events redacted.
    pub redacted: u64,
    /// Due events found already redacted (by someone else, or by an attempt that
    /// stopped before it recorded them).
    pub already_redacted: u64,
    /// Events sealed into pre-seal segments.
    pub sealed: u64,
    /// Sequence numbers of the segments written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<u64>,
}

impl SweepCounts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &SweepCounts) {
        self.redacted += other.redacted;
        self.already_redacted += other.already_redacted;
        self.sealed += other.sealed;
        self.segments.extend_from_slice(&other.segments);
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.redacted == 0
            && self.already_redacted == 0
            && self.sealed == 0
            && self.segments.is_empty()
    }
}

/// The events of one page that are sealed already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPage {
    /// The token the page was read from (the record's `from` at the time).
    pub from: Option<String>,
    /// The last event sealed, in page order: it and every due event before it are in a
    /// segment.
    pub through: String,
}

/// When the last complete sweep ran and what it decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSweep {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Its cutoff: events at or before it were due.
    pub cutoff: DateTime<Utc>,
    /// When the next sweep must run.
    pub next_due: DateTime<Utc>,
}

/// One pre-seal segment as stored in `seal_segments` (key: incident id, room key, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealSegment {
    /// The segment's sequence number within its room (from 1).
    pub seq: u64,
    /// The file, relative to the archive directory
    /// (`<incident>/pre-seal/<room key>-<seq:06>.jsonl.age`).
    pub file: String,
    /// Lines (events) in it.
    pub events: u64,
    /// The first event in it.
    pub first_event: String,
    /// The last event in it.
    pub last_event: String,
    /// SHA-256 of the encrypted file, hex.
    pub sha256: String,
    /// Size of the encrypted file in bytes.
    pub bytes: u64,
    /// When it was written.
    pub sealed_at: DateTime<Utc>,
}

/// The sweep's audit entry, written with its last record.
#[derive(Debug, Clone)]
pub struct SweepAudit<'a> {
    /// Who acts (cordon).
    pub actor: &'a str,
    /// The action (`retention.swept`).
    pub action: &'a str,
    /// Its details (counts, room key, cutoff; never message content).
    pub details: serde_json::Value,
}

impl Store {
    /// The sweep record of `(incident, room_key)`, if a sweep ran there.
    pub fn sweep_record(
        &self,
        incident: &IncidentId,
        room_key: &str,
    ) -> Result<Option<SweepRecord>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::SWEEPS)?;
        match table.get((incident.as_str(), room_key))? {
            Some(bytes) => {
                decode("sweeps", &format!("{incident}/{room_key}"), bytes.value()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Replaces the sweep record of `(incident, room_key)` (one durable write: a page's
    /// progress).
    pub fn put_sweep_record(
        &self,
        incident: &IncidentId,
        room_key: &str,
        record: &SweepRecord,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(tables::SWEEPS)?;
            let bytes = encode("sweep", record)?;
            table.insert((incident.as_str(), room_key), bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a written segment and the sweep record that notes it (its next sequence
    /// number and the page's sealed events), in one transaction.
    pub fn record_seal_segment(
        &self,
        incident: &IncidentId,
        room_key: &str,
        segment: &SealSegment,
        record: &SweepRecord,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut segments = tx.open_table(tables::SEAL_SEGMENTS)?;
            let bytes = encode("seal segment", segment)?;
            segments.insert((incident.as_str(), room_key, segment.seq), bytes.as_slice())?;
            let mut sweeps = tx.open_table(tables::SWEEPS)?;
            let bytes = encode("sweep", record)?;
            sweeps.insert((incident.as_str(), room_key), bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Writes a finished sweep's record and, when given, its audit entry, in one
    /// transaction.
    pub fn finish_sweep(
        &self,
        incident: &IncidentId,
        room_key: &str,
        record: &SweepRecord,
        audit_entry: Option<SweepAudit<'_>>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(tables::SWEEPS)?;
            let bytes = encode("sweep", record)?;
            table.insert((incident.as_str(), room_key), bytes.as_slice())?;
        }
        if let Some(entry) = audit_entry {
            append_in(
                &tx,
                audit::NewEntry {
                    actor: entry.actor,
                    action: entry.action,
                    incident: Some(incident),
                    details: &entry.details,
                    at,
                },
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every pre-seal segment of `incident`, by room key, then sequence number.
    pub fn seal_segments(
        &self,
        incident: &IncidentId,
    ) -> Result<Vec<(String, SealSegment)>, StoreError> {
        let read = self.read()?;
        let table = read.open_table(tables::SEAL_SEGMENTS)?;
        let mut out = Vec::new();
        for item in table.range((incident.as_str(), "", 0u64)..)? {
            let (key, value) = item?;
            let (id, room_key, seq) = key.value();
            if id != incident.as_str() {
                break;
            }
            let segment = decode(
                "seal_segments",
                &format!("{id}/{room_key}/{seq}"),
                value.value(),
            )?;
            out.push((room_key.to_owned(), segment));
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().unwrap()
            + chrono::TimeDelta::minutes(min)
    }

    fn segment(seq: u64) -> SealSegment {
        SealSegment {
            seq,
            file: format!("mc-4k7p/pre-seal/command-{seq:06}.jsonl.age"),
            events: 2,
            first_event: "$a".into(),
            last_event: "$b".into(),
            sha256: "00".into(),
            bytes: 10,
            sealed_at: t(1),
        }
    }

    #[test]
    fn sweep_records_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = IncidentId::parse("mc-4k7p").unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.sweep_record(&id, "command").unwrap(), None);
            let mut record = SweepRecord::new("!r", t(0));
            record.from = Some("t1-2_3".into());
            record.totals.redacted = 4;
            store.put_sweep_record(&id, "command", &record).unwrap();
            record.next_seal_seq = 2;
            record.sealed_page = Some(SealedPage {
                from: record.from.clone(),
                through: "$b".into(),
            });
            store
                .record_seal_segment(&id, "command", &segment(1), &record)
                .unwrap();
            store
                .record_seal_segment(&id, "ward", &segment(1), &record)
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let record = store.sweep_record(&id, "command").unwrap().unwrap();
        assert_eq!(record.from.as_deref(), Some("t1-2_3"));
        assert_eq!(record.next_seal_seq, 2);
        assert_eq!(record.totals.redacted, 4);
        let segments = store.seal_segments(&id).unwrap();
        let keys: Vec<_> = segments.iter().map(|(k, s)| (k.as_str(), s.seq)).collect();
        assert_eq!(keys, vec![("command", 1), ("ward", 1)]);
        let other = IncidentId::parse("mc-zzzz").unwrap();
        assert!(store.seal_segments(&other).unwrap().is_empty());
    }

    #[test]
    fn finish_sweep_audits_in_the_same_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = IncidentId::parse("mc-4k7p").unwrap();
        let record = SweepRecord::new("!r", t(0));
        store
            .finish_sweep(&id, "command", &record, None, t(1))
            .unwrap();
        assert!(store.audit_entries(.., None).unwrap().is_empty());
        let entry = SweepAudit {
            actor: "cordon",
            action: "retention.swept",
            details: json!({ "room_key": "command", "redacted": 3 }),
        };
        store
            .finish_sweep(&id, "command", &record, Some(entry), t(2))
            .unwrap();
        let entries = store.audit_entries(.., Some(&id)).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].action, "retention.swept");
        assert!(store.verify_audit().unwrap().is_intact());
    }
}
