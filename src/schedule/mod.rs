//! Durable timers: deadlines (expiry, warnings, keep-time ends) and cron schedules
//! (reminders, sweeps), kept in the store and run by one background task.
//!
//! - [`catch_up`]: the pure rules — given a timer, its state and the time, is it due,
//!   and what to do after downtime (run a missed expiry, run a missed sweep once,
//!   collapse missed reminders into one, drop a warning whose deadline has passed).
//! - [`occurrences`]: when a cron schedule fires in its IANA zone, with daylight-saving
//!   changes neither skipping nor doubling a firing.
//! - [`backoff`]: the deterministic, capped wait after a failed job.
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

pub mod backoff;
pub mod catch_up;
mod error;
pub mod occurrences;
pub mod runtime;
#[cfg(test)]
pub(crate) mod test_clock;

pub use backoff::Backoff;
pub use catch_up::{Decision, Firing, SkipReason, decide, next_due};
pub use error::ScheduleError;
pub use runtime::{
    FireContext, JobError, JobFuture, Jobs, Scheduler, SchedulerConfig, SchedulerHandle,
};
