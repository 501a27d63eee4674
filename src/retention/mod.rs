//! Retention sweeps: redact every message of an incident room once it is older than the
//! playbook's window (`retention.messages`), sealing it first when the playbook says
//! `retention.seal_before_redact: true`.
//!
//! # Layout
//!
//! - [`classify`]: the pure rules: which events are redacted (message-like events of
//!   any type; never state events, redactions, or events already redacted), where a
//!   sweep stops, when the next one is due, and each redaction's transaction id.
//! - [`rate_limit`]: 429 handling (`Retry-After`), shared by one sweep's requests, and
//!   how it differs from matrix-sdk's own retries.
//! - Pre-seal segments (what a sweep seals before it redacts) are the archive's:
//!   [`crate::archive::segment`], in the transcript format of
//!   [`crate::domain::transcript`] (`docs/archive-format.md`).
//! - [`sweep`]: the job itself, [`sweep_room`].
//!
//! # How a sweep runs
//!
//! The sweep pages the room's history forward (`/messages?dir=f`, redactions filtered
//! out by the server) from the token stored for the room in the `sweeps` table, or
//! from the start of the room. On each page it redacts every due message-like event,
//! a few at a time, with the given reason and a transaction id derived from the event
//! id. It stops at the first event newer than the cutoff, and stores a token pointing
//! just before it, so an event that becomes due while a sweep runs is caught by the
//! next sweep, and a restart resumes there instead of re-reading the room. Progress is
//! stored once per page, and only once every event of the page is done.
//!
//! With sealing, each page's due events are first written, decrypted as cordon reads
//! them, into one segment file encrypted to the records officers, and the segment is
//! recorded in the store before any of them is redacted.
//!
//! Every page's due messages and stickers are also read (decrypted) for their
//! attachment addresses ([`crate::domain::attachments`]), recorded in the store's `media` table
//! before any of them is redacted: afterwards nobody can read them, and stand-down
//! deletes the files. One that cannot be read is redacted all the same.
//!
//! Each sweep that redacted or sealed something writes one `retention.swept` audit
//! entry (counts, room key, cutoff; never content) with its last store write; the counts
//! include the work of an earlier attempt that stopped before auditing. A legal hold on
//! the incident stops the sweep before its next page.
//!
//! For the crash tests, the failpoints `retention.sealed` (a page's segment recorded,
//! nothing of it redacted yet) and `retention.page-redacted` (a page's redactions done,
//! its progress not yet stored) stop a sweep at those two points.

pub mod classify;
mod error;
pub mod rate_limit;
pub mod sweep;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use classify::{MIN_RESWEEP, redaction_txn_id};
pub use error::SweepError;
pub use rate_limit::RetryPolicy;
pub use sweep::{sweep_room, sweep_room_with};

use crate::domain::incident::IncidentId;

/// The audit action of a sweep.
pub const AUDIT_ACTION: &str = "retention.swept";

/// What one sweep of one incident room does.
#[derive(Debug, Clone)]
pub struct SweepParams<'a> {
    /// The incident.
    pub incident: &'a IncidentId,
    /// The playbook's key of the room (names its store record and segment files).
    pub room_key: &'a str,
    /// Every message-like event with `origin_server_ts <= cutoff` is redacted. The
    /// sweep's own "now" is `cutoff + window`.
    pub cutoff: DateTime<Utc>,
    /// The retention window (`retention.messages`).
    pub window: Duration,
    /// The redaction reason, e.g. `retention: 12h` (see [`reason_for`]).
    pub reason: String,
    /// Where to seal events before redacting them, when the playbook says
    /// `retention.seal_before_redact: true`.
    pub seal: Option<SealTarget<'a>>,
}

/// Where pre-seal segments go, and to whom they are encrypted.
#[derive(Debug, Clone, Copy)]
pub struct SealTarget<'a> {
    /// The archive directory (`archive_dir` in the config).
    pub dir: &'a Path,
    /// The playbook's records recipients.
    pub recipients: &'a [age::x25519::Recipient],
}

/// How a sweep paces itself. [`Default`] is what `cordon run` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepTuning {
    /// Events asked for per `/messages` page (Synapse caps it at 1000). Progress is
    /// stored once per page.
    pub page_size: u32,
    /// Redactions in flight at once (at least 1). After a 429 they go one at a time.
    pub concurrency: usize,
    /// The soonest the next sweep is asked to run ([`MIN_RESWEEP`]).
    pub min_resweep: Duration,
    /// What to do on 429.
    pub retry: RetryPolicy,
}

impl Default for SweepTuning {
    fn default() -> Self {
        Self {
            page_size: 500,
            concurrency: 4,
            min_resweep: MIN_RESWEEP,
            retry: RetryPolicy::default(),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Events redacted.
    pub redacted: u64,
    /// Events sealed into segments before their redaction.
    pub sealed: u64,
    /// Due events found already redacted, and skipped.
    pub already_redacted: u64,
    /// Due events never redacted: state events and malformed ones.
    pub skipped: u64,
    /// The segments written (their sequence numbers).
    pub segments: Vec<u64>,
    /// `/messages` pages read.
    pub pages: u64,
    /// Events read.
    pub events_read: u64,
    /// Waits for a rate limit (429).
    pub rate_limited: u64,
    /// True when a legal hold stopped the sweep.
    pub held: bool,
    /// When the next sweep of this room must run: `window` after the first message
    /// not yet due, or `window` from now when none is left; never sooner than
    /// [`SweepTuning::min_resweep`] from now.
    pub next_due: DateTime<Utc>,
}

/// How every redaction reason of a retention sweep starts.
pub const REASON_PREFIX: &str = "retention: ";

/// The redaction reason for a window: `retention: 12h`.
pub fn reason_for(window: Duration) -> String {
    format!("{REASON_PREFIX}{}", humantime::format_duration(window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_the_window() {
        assert_eq!(reason_for(Duration::from_secs(12 * 3600)), "retention: 12h");
        assert_eq!(reason_for(Duration::from_secs(5400)), "retention: 1h 30m");
    }
}
