//! The sealed archive of an incident: one age-encrypted tar file per incident, written
//! at stand-down, that a records officer verifies and opens with their own key.
//!
//! The format is specified in `docs/archive-format.md` ("The sealed archive"). In short:
//! a tar stream (`manifest.json`, its ed25519 signature `manifest.sig`, each room's
//! transcript and Markdown rendering, the attachments, the pre-seal segments and the
//! command record's sealed entries verbatim, the audit log's slice and `index.md`),
//! encrypted with age to the playbook's records officers.
//!
//! - [`writer`]: [`ArchiveWriter`], which streams members into the encrypted file and, at
//!   [`ArchiveWriter::finish`], re-reads what reached the disk and checks all of it.
//! - [`reader`]: [`verify_file`] and [`open_file`], what a records officer runs;
//!   opening also decrypts the decision log ([`DECISION_LOG_FILE`],
//!   [`DECISION_LOG_RENDERING`]).
//! - [`manifest`]: the manifest and the transcripts' figures ([`Counts`]).
//! - [`signing`]: cordon's signing key, [`ArchiveSigner`], and [`ArchivePublicKey`].
//! - [`keyring`]: the keys a records officer trusts ([`TrustedSigners`], from
//!   `--signer` and trust files); an archive is never verified without one.
//! - [`render`]: the Markdown renderings, which treat every body as untrusted.
//! - [`record`]: the command record's entries (the decision log), each sealed to the
//!   records officers as it is made.
//! - [`merge`]: putting the pre-seal segments' lines back into a room's transcript.
//! - [`error`]: the one error type, [`ArchiveError`].
//!
//! Nothing here speaks Matrix: the stand-down's export hands in plain data.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::domain::transcript::TranscriptLine;

pub mod advice;
pub mod debrief;
pub mod delivery;
pub mod error;
pub mod fhir;
pub mod keyring;
pub mod manifest;
pub mod merge;
pub mod reader;
pub mod record;
pub mod render;
pub mod segment;
pub mod signing;
pub mod writer;

#[cfg(test)]
mod tests;

pub use error::ArchiveError;
pub use keyring::{KeySource, TrustedKey, TrustedSigners};
pub use manifest::{
    AdviceManifest, AuditManifest, Counts, FileHash, MANIFEST_VERSION, Manifest, MediaManifest,
    PreSealManifest, READABLE_VERSIONS, RecordManifest, RoleManifest, RoomManifest, SealedMember,
    TranscribedManifest,
};
pub use reader::{Opened, Reported, Verified, open_file, report_file, verify_file};
pub use signing::{ArchivePublicKey, ArchiveSigner, SIGNING_KEY_FILE};
pub use writer::ArchiveWriter;

/// The manifest's member name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The signature's member name.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// The audit log's member name.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The summary's member name.
pub const INDEX_FILE: &str = "index.md";
/// The directory of the command record's sealed entries inside the archive.
pub const RECORD_DIR: &str = "record";
/// The directory of the sealed advice items inside the archive.
pub const ADVICE_DIR: &str = "advice";
/// The FHIR bundle of the incident's advice that opening writes.
pub const FHIR_ADVICE_FILE: &str = "fhir/advice.json";
/// The decision log that opening writes, one JSON object per decision.
pub const DECISION_LOG_FILE: &str = "decision-log.jsonl";
/// The decision log's rendering that opening writes.
pub const DECISION_LOG_RENDERING: &str = "decision-log.md";
/// The METHANE reports opening writes, one JSON object per version, when there are any.
pub const METHANE_FILE: &str = "methane.jsonl";
/// Their Markdown rendering.
pub const METHANE_RENDERING: &str = "methane.md";
/// The SITREPs opening writes, one JSON object each, when there are any.
pub const SITREP_FILE: &str = "sitreps.jsonl";
/// Their Markdown rendering.
pub const SITREP_RENDERING: &str = "sitreps.md";
/// The debrief report opening writes ([`debrief`]), as JSON.
pub const DEBRIEF_FILE: &str = "debrief.json";
/// Its Markdown rendering, which `cordon archive report` prints.
pub const DEBRIEF_RENDERING: &str = "debrief.md";

/// What the archive says about its incident; handed to [`ArchiveWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// The incident id.
    pub incident: String,
    /// Its name as declared.
    pub display_name: String,
    /// The playbook id.
    pub playbook: String,
    /// Its commander.
    pub commander: String,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// When it would expire.
    pub expires_at: DateTime<Utc>,
    /// When it was stood down.
    pub stood_down_at: Option<DateTime<Utc>>,
    /// Who stood it down.
    pub stood_down_by: Option<String>,
    /// When it is sealed.
    pub sealed_at: DateTime<Utc>,
    /// The homeserver's server name.
    pub server_name: String,
    /// The time zone the incident was run in, an IANA name (`Europe/London`; the
    /// configuration's `time_zone`), in which opening renders the decision log. `None`
    /// renders it in UTC.
    pub time_zone: Option<String>,
    /// True for an exercise (a drill).
    pub exercise: bool,
    /// The roles and everyone who held them.
    pub roles: Vec<RoleManifest>,
}

/// One room's exported transcript, for [`ArchiveWriter::add_room`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoomExport {
    /// The playbook's room key (`a-z`, `0-9`, `-`, `_`).
    pub key: String,
    /// The Matrix room id.
    pub room_id: String,
    /// The room's name.
    pub name: String,
    /// Its events in stream order; every line's `room_key` is `key`.
    pub lines: Vec<TranscriptLine>,
}

/// Where [`ArchiveWriter::add_media`] put an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaEntry {
    /// The path inside the archive, `media/<room key>-<n>.<ext>`: the value for the
    /// line's `media.file`.
    pub file: String,
    /// SHA-256 of the bytes, hex: the value for `media.sha256`.
    pub sha256: String,
    /// Their size: the value for `media.size`.
    pub size: u64,
}

/// A sealed, re-read and checked archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Where it is.
    pub path: PathBuf,
    /// SHA-256 of the sealed (encrypted) file, hex: worth logging and auditing, so a
    /// copy can be compared later.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Its manifest.
    pub manifest: Manifest,
}

/// The archive's file name for an incident: `<incident>.cordon-archive.age`.
pub fn archive_file_name(incident: &str) -> String {
    format!("{incident}.cordon-archive.age")
}

/// The folder, under the archive directory, that holds exercises' archives: kept apart
/// from real incidents' so that nobody files a drill as evidence, or a real incident as
/// a drill.
pub const EXERCISES_DIR: &str = "exercises";

/// Where an incident's sealed archive goes, relative to the archive directory:
/// [`archive_file_name`] for a real incident, under [`EXERCISES_DIR`] for an exercise.
pub fn archive_relative_path(incident: &str, exercise: bool) -> PathBuf {
    let name = archive_file_name(incident);
    if exercise {
        Path::new(EXERCISES_DIR).join(name)
    } else {
        PathBuf::from(name)
    }
}

/// Reads an `age-keygen` identity file: `AGE-SECRET-KEY-1…` lines, `#` comments and
/// blank lines allowed. The error never quotes the file's contents.
pub fn read_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, ArchiveError> {
    let fail = |detail: String| ArchiveError::Identities {
        path: path.to_owned(),
        detail,
    };
    let text = fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => fail("no such file".into()),
        io::ErrorKind::InvalidData => {
            fail("not a text file (expected AGE-SECRET-KEY-1… lines)".into())
        }
        _ => fail(e.to_string()),
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<age::x25519::Identity>() {
            Ok(identity) => out.push(identity),
            Err(_) => {
                return Err(fail(format!(
                    "line {} is not an age identity (expected AGE-SECRET-KEY-1…, as age-keygen writes)",
                    n + 1
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(fail(
            "holds no identity (expected AGE-SECRET-KEY-1… lines)".into(),
        ));
    }
    Ok(out)
}

/// A file name cordon writes inside the archive: `A-Z a-z 0-9 . _ -`, not starting with
/// `.` or `-`, no `..`, at most 200 bytes.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Creates `dir` and its missing parents owner-only (0700), flushing each parent.
pub(crate) fn create_private_dirs(dir: &Path) -> Result<(), ArchiveError> {
    crate::durable::create_private_dirs(dir)
        .map_err(|(path, source)| ArchiveError::Io { path, source })
}

/// Flushes a directory's entries to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    crate::durable::sync_dir(dir).map_err(|(path, source)| ArchiveError::Io { path, source })
}
