//! # cordon
//!
//! A Matrix bot that runs incident-mode group messaging for hospitals and emergency
//! services: time-limited, verified, end-to-end encrypted incident rooms whose record is
//! sealed for the records officer and whose chat is destroyed at stand-down.
//!
//! # Layout
//!
//! Layers whose imports point one way (docs/architecture.md, "Shape"); each module's
//! opening comment says what it holds and what it may use.
//!
//! - [`app`]: the running bot (`cordon run`): start-up, sync, command handling, the
//!   resumable provisioning pipeline, the scheduler's jobs, and [`app::guard`], which
//!   reconciles every incident room against cordon's own records.
//! - [`schedule`]: the scheduler task that runs the jobs from the durable timers.
//! - [`trust`]: who is verified: enrolment (`cordon verify`), revocation, the standing of
//!   a person and of a command's sending device, and `cordon recover`.
//! - [`retention`]: the retention sweep: redacts every message older than the window,
//!   sealing it first when the playbook asks, resumable and rate-limit aware.
//! - [`metrics`]: Prometheus metrics and the `/metrics` and `/healthz` listener.
//! - [`doctor`]: `cordon doctor`, the operator's preflight: secrets, directories,
//!   playbooks, the homeserver (trust, login, admin rights, room version 12, aliases),
//!   the metrics address and disk space, one pass/fail line each.
//! - [`dev`]: `cordon demo`'s dev mode: a throwaway Synapse on loopback, matrix-sdk users
//!   playing the people, cordon as its own process. Never used by `cordon run`.
//! - [`matrix`]: matrix-sdk and the Synapse admin API.
//! - [`store`]: redb tables for incidents, rooms, timers and the hash-chained audit log.
//! - [`archive`]: the sealed archive and the pre-seal segments: write, verify, open.
//! - [`domain`]: pure rules on plain data (ruma ids only): incidents, the chat grammar,
//!   schedule rules, the transcript format.
//! - [`input`]: what people write (playbooks, the config), read in two phases with every
//!   problem located as `file:line:col: error: message`.
//! - [`clock`], [`failpoint`]: the injectable clock, and the fault-test hooks, which
//!   exist only with the `test-hooks` feature (the tests turn it on, release builds
//!   leave it off; without it every point is a no-op).
//! - [`http`]: the small HTTP/1.1 server under cordon's listeners.
//! - [`sealed`]: small secrets at rest (the access token, the archive signing key)
//!   sealed with the store passphrase.
//! - [`tasks`]: the one shutdown: every task of the running bot is spawned on one
//!   tracker and stops on one cancellation token; its opening comment says how a stop
//!   goes.
//!
//! The command line (`src/main.rs` and `src/cli/`, a file per subcommand) is the
//! binary's own: it parses, calls one thing per subcommand, and maps outcomes to exit
//! codes.
//!
//! What only tests and benchmarks use is not here: the integration tests, the attack
//! tooling, the benchmarks (`cordon-bench`) and the fuzz properties live in the workspace
//! crate `cordon-testkit` (`testkit/`), which depends on this one and never the reverse.

#![recursion_limit = "256"]

pub mod app;
pub mod archive;
pub mod clock;
pub mod dev;
pub mod doctor;
pub mod domain;
mod durable;
pub mod failpoint;
pub mod http;
pub mod input;
pub mod matrix;
pub mod metrics;
pub mod retention;
pub mod schedule;
pub mod sealed;
pub mod store;
pub mod tasks;
pub mod trust;
