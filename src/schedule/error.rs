//! The scheduler's error type.

use crate::playbook::cron::CronError;
use crate::store::StoreError;

/// Errors from the scheduler. None of them stops a running scheduler: it logs them and
/// carries on with the other timers.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The store failed.
    #[error("scheduler store: {0}")]
    Store(#[from] StoreError),
    /// A cron timer's expression does not compile (it was stored by something other
    /// than a checked playbook).
    #[error("timer {timer}: {source}")]
    Cron {
        /// The timer.
        timer: String,
        /// Why.
        source: CronError,
    },
    /// A cron timer names a time zone that is not in the IANA database.
    #[error("timer {timer}: unknown time zone {tz:?} (use an IANA name such as Europe/London)")]
    TimeZone {
        /// The timer.
        timer: String,
        /// The zone as stored.
        tz: String,
    },
}
