//! Durable timers as data: what a timer is for ([`TimerKind`]), when it fires
//! ([`Schedule`]), the timer itself ([`Timer`]) and the scheduler's bookkeeping for it
//! ([`TimerState`]). The store keeps them; [`super::catch_up`] decides on them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::incident::IncidentId;

/// What a durable timer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// The incident's expiry (automatic stand-down).
    Expiry,
    /// A warning before expiry.
    Warning,
    /// A retention sweep.
    Sweep,
    /// A playbook reminder.
    Reminder,
    /// Re-posting the briefing before retention removes it.
    Briefing,
    /// Closing once the archive's keep time ends.
    KeepTimeEnd,
    /// Anything else, named.
    Other(String),
}

/// When a timer fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Once, at a deadline.
    At(DateTime<Utc>),
    /// Repeatedly, on a cron expression in an IANA time zone.
    Cron {
        /// The cron source, as the playbook wrote it.
        expr: String,
        /// The IANA time zone (`Europe/London`).
        tz: String,
    },
}

/// A durable timer. The scheduler decides when it is due; the store keeps it and when
/// it last fired, so a restart catches up without firing twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    /// A stable id chosen by the caller (`mc-4k7p/expiry`), so re-arming is idempotent.
    pub id: String,
    /// The incident it belongs to, if any.
    pub incident: Option<IncidentId>,
    /// What it is for.
    pub kind: TimerKind,
    /// When it fires.
    pub schedule: Schedule,
    /// Caller data (the reminder's room key and text, the warning's offset …).
    pub payload: serde_json::Value,
    /// When it last fired, if ever. The scheduler records the due time the firing was
    /// for (the deadline, or the latest cron occurrence it covered), so a job that ran
    /// late does not shift the schedule.
    pub last_fired: Option<DateTime<Utc>>,
}

/// The scheduler's bookkeeping for one timer, kept in the timer's own record (under the
/// key `state`) so that a restart neither resets a backoff nor forgets a skipped firing.
///
/// Every field defaults, so records written before it existed still decode (with a
/// clear state), and [`Timer`] itself decodes from a record that carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimerState {
    /// When the timer was armed through [`crate::store::Store::arm_timer`]: where a cron
    /// timer that has never fired starts counting its occurrences.
    pub armed_at: Option<DateTime<Utc>>,
    /// Failed attempts since the timer last fired (0 when it is not failing).
    pub attempts: u32,
    /// Of those, the ones that count towards a job giving up: a job says a failure does
    /// not count when it only waited on something outside cordon (the homeserver down;
    /// see `crate::schedule::JobError::waiting`). Absent from records written before it
    /// existed, which decode with 0.
    pub strikes: u32,
    /// When the next attempt after a failure may run, if one failed.
    pub retry_at: Option<DateTime<Utc>>,
    /// The last failure, for operators (the job's error, never a message body).
    pub last_error: Option<String>,
    /// The due time of the latest firing that was dropped instead of run (a warning whose
    /// deadline had passed too).
    pub last_skipped: Option<DateTime<Utc>>,
}

impl TimerState {
    /// Forgets past failures: no attempts, no strikes, no retry time, no last error.
    pub fn clear_retry(&mut self) {
        self.attempts = 0;
        self.strikes = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// The latest due time that has been dealt with, fired or skipped.
    pub fn settled_until(&self, timer: &Timer) -> Option<DateTime<Utc>> {
        timer.last_fired.max(self.last_skipped)
    }
}
