//! The scheduler's error type.

use crate::domain::schedule::TimerError;
use crate::store::StoreError;

/// Errors from the scheduler. None of them stops a running scheduler: it logs them and
/// carries on with the other timers.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The store failed.
    #[error("scheduler store: {0}")]
    Store(#[from] StoreError),
    /// A timer's own record is unusable (its cron expression or time zone).
    #[error(transparent)]
    Timer(#[from] TimerError),
}
