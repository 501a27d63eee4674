//! The schedule as data and rules: durable timers ([`timer`]), when cron schedules
//! fire ([`occurrences`]), what is due after downtime ([`catch_up`]) and the wait after
//! a failed job ([`backoff`]). Pure: the running scheduler (`crate::schedule`) reads the
//! time and the store and acts on what these return.
//!
//! - [`catch_up`]: given a timer, its state and the time, is it due, and what to do
//!   after downtime (run a missed expiry, run a missed sweep once, collapse missed
//!   reminders into one, drop a warning whose deadline has passed).
//! - [`occurrences`]: when a cron schedule fires in its IANA zone, with daylight-saving
//!   changes neither skipping nor doubling a firing.
//! - [`backoff`]: the deterministic, capped wait after a failed job.

pub mod backoff;
pub mod catch_up;
pub mod error;
pub mod occurrences;
pub mod timer;

pub use backoff::Backoff;
pub use catch_up::{Decision, Firing, SkipReason, decide, next_due};
pub use error::TimerError;
pub use timer::{Schedule, Timer, TimerKind, TimerState};
