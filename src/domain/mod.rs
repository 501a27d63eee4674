//! What cordon knows and decides, as plain data and pure functions: no I/O, no clock,
//! no matrix-sdk (ruma's identifier types at most). Everything above this layer reads
//! the world, asks these functions what to do, and does it.
//!
//! It may use [`crate::input`] (a playbook is what an incident is planned from) and
//! nothing else of cordon's.
//!
//! - [`incident`]: the identity an incident commander types, the persisted lifecycle
//!   state machine, the pure provisioning plan and `cordon explain`.
//! - [`command`]: the chat grammar (`!cordon declare …`): a typed command or a rejection
//!   that tells the commander what to type instead.
//! - [`schedule`]: durable timers as data, cron occurrences, catch-up after downtime
//!   and backoff.
//! - [`transcript`]: the transcript format shared by pre-seal segments and the archive.
//! - [`attachments`]: which media an event names.
//! - [`record`]: the command record (the decision log): kinds, labels, and the text cordon
//!   posts for an entry.
//! - [`admission`]: who is let into an incident's rooms at provisioning (the
//!   verification policy per holder).

pub mod admission;
pub mod attachments;
pub mod command;
pub mod incident;
pub mod pid;
pub mod record;
pub mod schedule;
pub mod transcript;
