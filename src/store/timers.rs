//! Durable timers.

use chrono::{DateTime, Utc};
use redb::ReadableTable;

use super::records::{Schedule, Timer};
use super::{Store, StoreError, decode, encode, tables};
use crate::incident::IncidentId;

impl Store {
    /// Inserts or replaces a timer (by its id).
    pub fn put_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut timers = tx.open_table(tables::TIMERS)?;
            let bytes = encode("timer", timer)?;
            timers.insert(timer.id.as_str(), bytes.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The timer with this id, if any.
    pub fn timer(&self, id: &str) -> Result<Option<Timer>, StoreError> {
        let read = self.read()?;
        let timers = read.open_table(tables::TIMERS)?;
        match timers.get(id)? {
            None => Ok(None),
            Some(bytes) => decode("timers", id, bytes.value()).map(Some),
        }
    }

    /// Every timer, ordered by id.
    pub fn timers(&self) -> Result<Vec<Timer>, StoreError> {
        self.timers_where(|_| true)
    }

    /// The timers of one incident, ordered by id.
    pub fn timers_for(&self, incident: &IncidentId) -> Result<Vec<Timer>, StoreError> {
        self.timers_where(|t| t.incident.as_ref() == Some(incident))
    }

    /// The one-shot timers due at `now` that have not fired since their deadline.
    /// Cron timers are the scheduler's to evaluate (from `last_fired`).
    pub fn due_timers(&self, now: DateTime<Utc>) -> Result<Vec<Timer>, StoreError> {
        self.timers_where(|t| match t.schedule {
            Schedule::At(due) => due <= now && t.last_fired.is_none_or(|fired| fired < due),
            Schedule::Cron { .. } => false,
        })
    }

    fn timers_where(&self, keep: impl Fn(&Timer) -> bool) -> Result<Vec<Timer>, StoreError> {
        let read = self.read()?;
        let timers = read.open_table(tables::TIMERS)?;
        let mut out = Vec::new();
        for item in timers.iter()? {
            let (key, value) = item?;
            let timer: Timer = decode("timers", key.value(), value.value())?;
            if keep(&timer) {
                out.push(timer);
            }
        }
        Ok(out)
    }

    /// Records that timer `id` fired at `at`. Returns false if there is no such timer.
    pub fn mark_timer_fired(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let found = {
            let mut timers = tx.open_table(tables::TIMERS)?;
            let timer: Option<Timer> = match timers.get(id)? {
                None => None,
                Some(bytes) => Some(decode("timers", id, bytes.value())?),
            };
            match timer {
                None => false,
                Some(mut timer) => {
                    timer.last_fired = Some(at);
                    let bytes = encode("timer", &timer)?;
                    timers.insert(id, bytes.as_slice())?;
                    true
                }
            }
        };
        tx.commit()?;
        Ok(found)
    }

    /// Removes timer `id`. Returns whether it existed.
    pub fn remove_timer(&self, id: &str) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let existed = tx.open_table(tables::TIMERS)?.remove(id)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Removes every timer of `incident`. Returns how many were removed.
    pub fn remove_timers_for(&self, incident: &IncidentId) -> Result<u64, StoreError> {
        let tx = self.write()?;
        let mut removed = 0;
        {
            let mut timers = tx.open_table(tables::TIMERS)?;
            let mut doomed = Vec::new();
            for item in timers.iter()? {
                let (key, value) = item?;
                let timer: Timer = decode("timers", key.value(), value.value())?;
                if timer.incident.as_ref() == Some(incident) {
                    doomed.push(timer.id);
                }
            }
            for id in doomed {
                if timers.remove(id.as_str())?.is_some() {
                    removed += 1;
                }
            }
        }
        tx.commit()?;
        Ok(removed)
    }
}
