//! Durable timers: deadlines (expiry, warnings, keep-time ends) and cron schedules
//! (reminders, sweeps), kept in the store and run by one background task.
//!
//! - The timers as data and the pure rules (when a timer is due, catch-up after
//!   downtime, cron occurrences, backoff) are in [`crate::domain::schedule`].
//! - [`runtime`]: the [`Scheduler`] task and its [`SchedulerHandle`]; jobs are the
//!   caller's, behind the [`Jobs`] trait.
//!
//! # Time
//!
//! The scheduler reads the time only from an injected [`crate::clock::Clock`], and
//! never sleeps longer than a minute (by default) before reading it again, so a wall
//! clock that jumps forward, or a machine that was suspended, is noticed within a
//! minute and whatever fell due in between is caught up by the rules above.
//!
//! # Crash safety
//!
//! Timers and their state live in the store, one write transaction per change:
//!
//! - A firing is recorded ([`crate::store::Store::mark_timer_fired`]) only *after* its
//!   job returned `Ok`. A crash or SIGKILL while a job runs therefore runs that job
//!   again on restart: **every job must be idempotent** (send with a stored
//!   transaction id, look for what a previous attempt created, and so on), as every
//!   step in cordon is.
//! - A failure is recorded with its attempt count and retry time
//!   ([`crate::store::Store::record_timer_failure`]) before the next attempt is
//!   considered, so a restart neither resets the backoff nor retries in a hot loop.
//! - A dropped warning is recorded and audited in one transaction
//!   ([`crate::store::Store::skip_timer`]), so it is not reconsidered.
//! - Arming is idempotent ([`crate::store::Store::arm_timer`]): re-arming the same
//!   timer after a restart keeps its record.
//!
//! A job's failure or panic is logged and retried; it never stops the scheduler.

mod error;
pub mod runtime;
#[cfg(test)]
pub(crate) mod test_clock;

pub use error::ScheduleError;
pub use runtime::{
    FireContext, JobError, JobFuture, Jobs, Scheduler, SchedulerConfig, SchedulerHandle,
};
