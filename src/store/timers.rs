//! Durable timers.
//!
//! A timer's record is the [`Timer`] JSON with the scheduler's [`TimerState`] beside its
//! fields under the key `state`. Records without it (written before it existed, or by
//! [`Store::put_timer`]) decode with a clear state. Every method here is one read or one
//! write transaction.

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Store, StoreError, append_in, audit, decode, encode, tables};
use crate::domain::incident::IncidentId;
use crate::domain::schedule::{Schedule, Timer, TimerState};

/// Longest failure text kept in a timer's state.
const MAX_ERROR_CHARS: usize = 500;

/// A timer record as stored: the timer and, beside its fields, the scheduler's state.
#[derive(Debug, Serialize, Deserialize)]
struct StoredTimer {
    #[serde(flatten)]
    timer: Timer,
    #[serde(default)]
    state: TimerState,
}

/// Inserts or replaces `timer` inside the caller's write transaction, armed at `at`
/// with a clear scheduler state, so that a record and the job that acts on it commit
/// together.
pub(super) fn insert_timer_in(
    tx: &redb::WriteTransaction,
    timer: &Timer,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut timers = tx.open_table(tables::TIMERS)?;
    let stored = StoredTimer {
        timer: timer.clone(),
        state: TimerState {
            armed_at: Some(at),
            ..TimerState::default()
        },
    };
    let bytes = encode("timer", &stored)?;
    timers.insert(timer.id.as_str(), bytes.as_slice())?;
    Ok(())
}

impl Store {
    /// Inserts or replaces a timer (by its id), with a clear scheduler state. Prefer
    /// [`Store::arm_timer`], which keeps the state when nothing changed.
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

    /// The one-shot timers due at `now` that have not fired (nor been skipped) since
    /// their deadline. Cron timers are the scheduler's to evaluate (from `last_fired`).
    pub fn due_timers(&self, now: DateTime<Utc>) -> Result<Vec<Timer>, StoreError> {
        Ok(self
            .timer_entries_where(|t, state| match t.schedule {
                Schedule::At(due) => {
                    due <= now && state.settled_until(t).is_none_or(|settled| settled < due)
                }
                Schedule::Cron { .. } => false,
            })?
            .into_iter()
            .map(|(timer, _)| timer)
            .collect())
    }

    fn timers_where(&self, keep: impl Fn(&Timer) -> bool) -> Result<Vec<Timer>, StoreError> {
        Ok(self
            .timer_entries_where(|t, _| keep(t))?
            .into_iter()
            .map(|(timer, _)| timer)
            .collect())
    }

    /// Every timer with its scheduler state, ordered by id.
    pub fn timer_entries(&self) -> Result<Vec<(Timer, TimerState)>, StoreError> {
        self.timer_entries_where(|_, _| true)
    }

    /// The timer with this id and its scheduler state, if any.
    pub fn timer_entry(&self, id: &str) -> Result<Option<(Timer, TimerState)>, StoreError> {
        let read = self.read()?;
        let timers = read.open_table(tables::TIMERS)?;
        match timers.get(id)? {
            None => Ok(None),
            Some(bytes) => {
                let stored: StoredTimer = decode("timers", id, bytes.value())?;
                Ok(Some((stored.timer, stored.state)))
            }
        }
    }

    fn timer_entries_where(
        &self,
        keep: impl Fn(&Timer, &TimerState) -> bool,
    ) -> Result<Vec<(Timer, TimerState)>, StoreError> {
        let read = self.read()?;
        let timers = read.open_table(tables::TIMERS)?;
        let mut out = Vec::new();
        for item in timers.iter()? {
            let (key, value) = item?;
            let stored: StoredTimer = decode("timers", key.value(), value.value())?;
            if keep(&stored.timer, &stored.state) {
                out.push((stored.timer, stored.state));
            }
        }
        Ok(out)
    }

    /// Arms `timer` at `at`, idempotently: when a timer with this id already holds the
    /// same incident, kind, schedule and payload, nothing is written and its record
    /// (when it last fired, a pending retry) is kept, so arming again after a restart
    /// neither fires it twice nor resets a backoff. Otherwise the timer replaces any
    /// old one, with a state that records `at` as when it was armed. Returns whether
    /// anything was written.
    pub fn arm_timer(&self, timer: &Timer, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let written = {
            let timers = tx.open_table(tables::TIMERS)?;
            let old: Option<StoredTimer> = match timers.get(timer.id.as_str())? {
                None => None,
                Some(bytes) => Some(decode("timers", &timer.id, bytes.value())?),
            };
            let same = old.is_some_and(|old| {
                old.timer.incident == timer.incident
                    && old.timer.kind == timer.kind
                    && old.timer.schedule == timer.schedule
                    && old.timer.payload == timer.payload
            });
            !same
        };
        if written {
            insert_timer_in(&tx, timer, at)?;
        }
        tx.commit()?;
        Ok(written)
    }

    /// Applies `change` to timer `id` in one write transaction, keeping its state.
    /// Returns `None` if there is no such timer.
    fn update_timer<R>(
        &self,
        id: &str,
        change: impl FnOnce(&mut Timer, &mut TimerState) -> R,
    ) -> Result<Option<R>, StoreError> {
        let tx = self.write()?;
        let out = update_timer_in(&tx, id, change)?;
        tx.commit()?;
        Ok(out)
    }

    /// Records that timer `id` fired for due time `at`, and clears any retry state
    /// (attempts, retry time, last error). Returns false if there is no such timer.
    pub fn mark_timer_fired(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self
            .update_timer(id, |timer, state| {
                timer.last_fired = Some(at);
                state.clear_retry();
            })?
            .is_some())
    }

    /// Records a failed attempt of timer `id`: one more attempt (and one more strike
    /// when the failure `counts`), the next one not before `retry_at`, and `error` (cut to
    /// 500 characters). Returns the new state, or `None` if there is no such timer (it
    /// was disarmed while its job ran).
    pub fn record_timer_failure(
        &self,
        id: &str,
        error: &str,
        retry_at: DateTime<Utc>,
        counts: bool,
    ) -> Result<Option<TimerState>, StoreError> {
        self.update_timer(id, |_, state| {
            state.attempts = state.attempts.saturating_add(1);
            if counts {
                state.strikes = state.strikes.saturating_add(1);
            }
            state.retry_at = Some(retry_at);
            state.last_error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
            state.clone()
        })
    }

    /// Records that timer `id` was adopted by the scheduler at `at` (it was stored
    /// without [`Store::arm_timer`], so it had no start to count cron occurrences from).
    /// Leaves a timer that already has one alone. Returns false if there is no such
    /// timer.
    pub fn adopt_timer(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self
            .update_timer(id, |_, state| {
                state.armed_at.get_or_insert(at);
            })?
            .is_some())
    }

    /// Records that the firing of timer `id` due at `due` was dropped instead of run,
    /// and audits it (`timer.skipped`, by `cordon`, with the timer, its kind, the due
    /// time and `reason`) in the same write transaction. Clears any retry state.
    /// Returns false, writing nothing, if there is no such timer.
    pub fn skip_timer(
        &self,
        id: &str,
        due: DateTime<Utc>,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let tx = self.write()?;
        let skipped = update_timer_in(&tx, id, |timer, state| {
            state.last_skipped = Some(due);
            state.clear_retry();
            timer.clone()
        })?;
        let found = match skipped {
            None => false,
            Some(timer) => {
                let details = json!({
                    "timer": timer.id,
                    "kind": timer.kind,
                    "due": due,
                    "reason": reason,
                });
                append_in(
                    &tx,
                    audit::NewEntry {
                        actor: "cordon",
                        action: "timer.skipped",
                        incident: timer.incident.as_ref(),
                        details: &details,
                        at,
                    },
                )?;
                true
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

/// Applies `change` to timer `id` inside `tx`, keeping its state. Returns `None` if
/// there is no such timer.
fn update_timer_in<R>(
    tx: &redb::WriteTransaction,
    id: &str,
    change: impl FnOnce(&mut Timer, &mut TimerState) -> R,
) -> Result<Option<R>, StoreError> {
    let mut timers = tx.open_table(tables::TIMERS)?;
    let Some(mut stored) = (match timers.get(id)? {
        None => None,
        Some(bytes) => Some(decode::<StoredTimer>("timers", id, bytes.value())?),
    }) else {
        return Ok(None);
    };
    let out = change(&mut stored.timer, &mut stored.state);
    let bytes = encode("timer", &stored)?;
    timers.insert(id, bytes.as_slice())?;
    Ok(Some(out))
}
