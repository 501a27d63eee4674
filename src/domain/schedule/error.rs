//! Why a stored timer cannot be planned.

use crate::input::playbook::cron::CronError;

/// A timer's record is unusable: it was stored by something other than a checked
/// playbook. The scheduler logs it and carries on with the other timers.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
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
