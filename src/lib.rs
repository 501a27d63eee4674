//! # cordon
//!
//! A Matrix bot that runs incident-mode group messaging for hospitals and emergency
//! services: time-limited, verified, end-to-end encrypted incident rooms whose record is
//! sealed for the records officer and whose chat is destroyed at stand-down.
//!
//! # Layout
//!
//! - [`attachments`]: which media an event names (its attachment and thumbnail), noted
//!   in sync and in the retention sweep for stand-down to delete.
//! - [`bench`]: `cordon bench declare`, cordon's declare against a raw-HTTP baseline.
//! - [`bot`]: the running bot (`cordon run`): start-up, sync, command handling and the
//!   resumable provisioning pipeline.
//! - [`clock`]: the injectable clock every time-based step reads.
//! - [`matrix`]: the only code that speaks matrix-sdk and the Synapse admin API.
//! - [`failpoint`]: named stop points for the SIGKILL crash tests, and the injected
//!   faults (a full disk under the store, a step held while the homeserver restarts).
//!   They, and the skewed clock, exist only with the `test-hooks` feature, which the
//!   tests turn on and release builds leave off; without it every point is a no-op.
//! - [`fuzz`]: the bodies of the fuzz targets (playbook, config, chat grammar), shared by
//!   the cargo-afl targets in `fuzz/` and the short runs in `scripts/test`.
//! - [`demo`]: `cordon demo`, a scripted incident on a throwaway Synapse.
//! - [`diagnostic`]: one located error (`file:line:col: error: message`) with its source
//!   line, shared by everything that reads files written by people.
//! - [`yaml`]: bounded YAML loading (size, depth and alias limits) that turns every
//!   syntax or shape problem into [`diagnostic::Diagnostic`]s.
//! - [`playbook`]: the playbook language planners write: schema, semantic validation,
//!   `cordon check`, and the JSON Schema export for editors.
//! - [`config`]: the bot's own configuration, read in two phases (raw file, then a
//!   validated form built once).
//! - [`command`]: the chat grammar (`!cordon declare …`), a clap-derived enum whose doc
//!   comments are the help text.
//! - [`incident`]: the incident lifecycle state machine and pure planning.
//! - [`trust`]: who is verified: enrolment (`cordon verify` by emoji comparison or
//!   fingerprint, over the bot's admin socket or offline), revocation, the standing of a
//!   person and of a command's sending device, and `cordon recover`.
//! - [`guard`]: watches every incident room and reconciles it against cordon's own
//!   records: bans whoever cordon did not let in, reverts forged state, alerts on
//!   identity changes and unverified devices.
//! - [`schedule`]: durable timers (deadlines, cron), catch-up after downtime, retries.
//! - [`retention`]: the retention sweep: redacts every message older than the window,
//!   sealing it first when the playbook asks, resumable and rate-limit aware.
//! - [`store`]: redb tables for incidents, rooms, timers and the hash-chained audit log.
//! - [`harness`]: a real, throwaway Synapse on loopback and matrix-sdk users for the
//!   integration tests, `cordon demo` and the benchmarks. Never used in production.
//!
//! Pure logic takes plain data and returns plans; only the Matrix layer performs I/O.

#![recursion_limit = "256"]

pub mod app;
pub mod archive;
pub mod bench;
pub mod clock;
pub mod demo;
pub mod domain;
mod durable;
pub mod failpoint;
pub mod fuzz;
pub mod harness;
pub mod input;
pub mod matrix;
pub mod metrics;
pub mod retention;
pub mod schedule;
pub mod store;
pub mod trust;
