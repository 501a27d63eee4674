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
//! - [`bot`]: the running bot (`cordon run`): start-up, sync, command handling and the
//!   resumable provisioning pipeline.
//! - [`clock`]: the injectable clock every time-based step reads.
//! - [`matrix`]: the only code that speaks matrix-sdk and the Synapse admin API.
//! - [`failpoint`]: named stop points for the SIGKILL crash tests, and the injected
//!   faults (a full disk under the store, a step held while the homeserver restarts).
//!   They, and the skewed clock, exist only with the `test-hooks` feature, which the
//!   tests turn on and release builds leave off; without it every point is a no-op.
//! - [`dev`]: `cordon demo`'s embedded dev mode: a throwaway Synapse on loopback,
//!   matrix-sdk users playing the people, cordon as its own process, and the scripted
//!   incident. Never used by `cordon run`.
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
//!
//! The command line (`src/main.rs`, `src/cli/`) is the binary's own: it parses,
//! dispatches to one file per subcommand, and maps outcomes to exit codes.
//!
//! What only tests and benchmarks use is not here: the integration tests, the attack
//! tooling, the benchmarks (`cordon-bench`) and the fuzz properties live in the workspace
//! crate `cordon-testkit` (`testkit/`), which depends on this one and never the reverse.
//!
//! Pure logic takes plain data and returns plans; only the Matrix layer performs I/O.

#![recursion_limit = "256"]

pub mod app;
pub mod archive;
pub mod clock;
pub mod dev;
pub mod domain;
mod durable;
pub mod failpoint;
pub mod input;
pub mod matrix;
pub mod metrics;
pub mod retention;
pub mod schedule;
pub mod store;
pub mod trust;
