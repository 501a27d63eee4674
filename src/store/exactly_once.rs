//! Exactly-once bookkeeping: processed command events and the outbox of intended side
//! effects.

use chrono::{DateTime, Utc};
use redb::ReadableTable;

use super::records::{Effect, OutboxEntry, OutboxIntent};
use super::{Store, StoreError, decode, encode, tables};
use crate::domain::incident::IncidentId;

impl Store {
    /// Records that Matrix event `event_id` was handled at `at`. Returns true if it was
    /// new, false if it had been handled already (so: handle it only on true).
    pub fn mark_processed(&self, event_id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let new = {
            let mut processed = tx.open_table(tables::PROCESSED)?;
            if processed.get(event_id)?.is_some() {
                false
            } else {
                processed.insert(event_id, at.timestamp_millis())?;
                true
            }
        };
        tx.commit()?;
        Ok(new)
    }

    /// Whether Matrix event `event_id` was handled.
    pub fn is_processed(&self, event_id: &str) -> Result<bool, StoreError> {
        let read = self.read()?;
        let processed = read.open_table(tables::PROCESSED)?;
        Ok(processed.get(event_id)?.is_some())
    }

    /// Forgets events handled before `cutoff`. Returns how many were forgotten.
    pub fn prune_processed_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let cutoff = cutoff.timestamp_millis();
        let tx = self.write()?;
        let mut removed = 0;
        {
            let mut processed = tx.open_table(tables::PROCESSED)?;
            processed.retain(|_, at| {
                let keep = at >= cutoff;
                if !keep {
                    removed += 1;
                }
                keep
            })?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Records the intent to perform a side effect under the idempotency `key`, with a
    /// fresh transaction id, before it is performed. If `key` is already recorded the
    /// existing entry (and its transaction id) is returned unchanged, so a retry after a
    /// restart reuses it.
    pub fn outbox_put(
        &self,
        key: &str,
        incident: Option<&IncidentId>,
        effect: Effect,
        at: DateTime<Utc>,
    ) -> Result<OutboxEntry, StoreError> {
        let intent = OutboxIntent {
            key: key.to_owned(),
            effect,
        };
        let mut entries = self.outbox_put_many(incident, std::slice::from_ref(&intent), at)?;
        entries
            .pop()
            .ok_or(StoreError::IncompleteBatch("outbox intent"))
    }

    /// Records several intents in one transaction (one fsync for a whole batch of
    /// invites), each exactly as [`Store::outbox_put`] would. Returns the entries in the
    /// order given.
    pub fn outbox_put_many(
        &self,
        incident: Option<&IncidentId>,
        intents: &[OutboxIntent],
        at: DateTime<Utc>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let tx = self.write()?;
        let mut out = Vec::with_capacity(intents.len());
        {
            let mut outbox = tx.open_table(tables::OUTBOX)?;
            let mut meta = tx.open_table(tables::META)?;
            let mut last: u64 = match meta.get(tables::OUTBOX_SEQ)? {
                None => 0,
                Some(bytes) => decode("meta", tables::OUTBOX_SEQ, bytes.value())?,
            };
            let first = last;
            for intent in intents {
                let existing: Option<OutboxEntry> = match outbox.get(intent.key.as_str())? {
                    None => None,
                    Some(bytes) => Some(decode("outbox", &intent.key, bytes.value())?),
                };
                if let Some(existing) = existing {
                    out.push(existing);
                    continue;
                }
                last += 1;
                let entry = OutboxEntry {
                    key: intent.key.clone(),
                    // The time part keeps ids unique even if the store is ever rebuilt.
                    txn_id: format!("cordon.{}.{last}", at.timestamp_millis()),
                    incident: incident.cloned(),
                    effect: intent.effect.clone(),
                    created_at: at,
                    done_at: None,
                    outcome: None,
                };
                outbox.insert(intent.key.as_str(), encode("outbox", &entry)?.as_slice())?;
                out.push(entry);
            }
            if last != first {
                meta.insert(tables::OUTBOX_SEQ, encode("meta", &last)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// The outbox entry under `key`, if any.
    pub fn outbox_get(&self, key: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let read = self.read()?;
        let outbox = read.open_table(tables::OUTBOX)?;
        match outbox.get(key)? {
            None => Ok(None),
            Some(bytes) => decode("outbox", key, bytes.value()).map(Some),
        }
    }

    /// Marks the entry under `key` done at `at` with its `outcome`. Marking an entry
    /// done twice keeps the first completion. Returns the entry, or `None` if unknown.
    pub fn outbox_complete(
        &self,
        key: &str,
        outcome: Option<serde_json::Value>,
        at: DateTime<Utc>,
    ) -> Result<Option<OutboxEntry>, StoreError> {
        let mut done = self.outbox_complete_many(&[(key.to_owned(), outcome)], at)?;
        Ok(done.pop().flatten())
    }

    /// Marks several entries done in one transaction, each as
    /// [`Store::outbox_complete`] would. Returns them in the order given.
    pub fn outbox_complete_many(
        &self,
        completions: &[(String, Option<serde_json::Value>)],
        at: DateTime<Utc>,
    ) -> Result<Vec<Option<OutboxEntry>>, StoreError> {
        let tx = self.write()?;
        let mut out = Vec::with_capacity(completions.len());
        {
            let mut outbox = tx.open_table(tables::OUTBOX)?;
            for (key, outcome) in completions {
                let existing: Option<OutboxEntry> = match outbox.get(key.as_str())? {
                    None => None,
                    Some(bytes) => Some(decode("outbox", key, bytes.value())?),
                };
                out.push(match existing {
                    None => None,
                    Some(entry) if !entry.is_pending() => Some(entry),
                    Some(mut entry) => {
                        entry.done_at = Some(at);
                        entry.outcome = outcome.clone();
                        outbox.insert(key.as_str(), encode("outbox", &entry)?.as_slice())?;
                        Some(entry)
                    }
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Every intent not yet marked done, oldest first (ties by key): the work to resume
    /// on restart.
    pub fn outbox_pending(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let read = self.read()?;
        let outbox = read.open_table(tables::OUTBOX)?;
        let mut out: Vec<OutboxEntry> = Vec::new();
        for item in outbox.iter()? {
            let (key, value) = item?;
            let entry: OutboxEntry = decode("outbox", key.value(), value.value())?;
            if entry.is_pending() {
                out.push(entry);
            }
        }
        out.sort_by_key(|e| e.created_at);
        Ok(out)
    }

    /// Forgets entries completed before `cutoff`. Returns how many were forgotten.
    pub fn outbox_prune_done_before(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        let tx = self.write()?;
        let mut removed = 0;
        {
            let mut outbox = tx.open_table(tables::OUTBOX)?;
            let mut doomed = Vec::new();
            for item in outbox.iter()? {
                let (key, value) = item?;
                let entry: OutboxEntry = decode("outbox", key.value(), value.value())?;
                if entry.done_at.is_some_and(|done| done < cutoff) {
                    doomed.push(entry.key);
                }
            }
            for key in doomed {
                if outbox.remove(key.as_str())?.is_some() {
                    removed += 1;
                }
            }
        }
        tx.commit()?;
        Ok(removed)
    }
}
