//! The decision log that opening writes: each sealed entry of the command record
//! (written out under `record/`) decrypted with the records officer's identities,
//! checked against the manifest's record of it, and written as
//! [`DECISION_LOG_FILE`] (JSON Lines) and [`DECISION_LOG_RENDERING`] (Markdown).
//!
//! An entry that cannot be decrypted or read, or whose content is not the one sealed
//! (its SHA-256), or that names another incident, kind, number, person or time than the
//! manifest, is neither dropped nor trusted: it keeps its place in both files, marked
//! with what is wrong, and opening reports it as a warning.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

#[allow(clippy::wildcard_imports, reason = "the parent's imports and helpers")]
use super::*;
use crate::archive::manifest::RecordManifest;
use crate::archive::record::{ENTRY_VERSION, EntryKind, SealedEntry};
use crate::archive::render::{Decision, decision_log, reports_rendering};
use crate::archive::segment::SealError;
use crate::archive::{
    DECISION_LOG_FILE, DECISION_LOG_RENDERING, METHANE_FILE, METHANE_RENDERING, SITREP_FILE,
    SITREP_RENDERING,
};

/// One line of [`DECISION_LOG_FILE`]: the sealed entry's fields (those the manifest
/// records, when it could not be opened), its label, cordon's post of it, the
/// decisions that correct it, and what is wrong with it.
#[derive(Debug, Serialize)]
struct LogLine<'a> {
    /// `D3`, from the manifest.
    label: String,
    /// The entry's format version; absent when it could not be opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    v: Option<u32>,
    incident: &'a str,
    kind: EntryKind,
    number: u32,
    /// `null` when it could not be opened.
    text: Option<&'a str>,
    because: Option<&'a str>,
    decided_by: &'a str,
    logged_by: &'a str,
    decided_at: DateTime<Utc>,
    logged_at: DateTime<Utc>,
    command_room: Option<&'a str>,
    command_event: Option<&'a str>,
    source_event: Option<&'a str>,
    corrects: Option<u32>,
    posted_event: Option<&'a str>,
    corrected_by: &'a [u32],
    /// The member it was decrypted from (`record/…`).
    file: &'a str,
    /// What is wrong with it; absent when nothing is.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    problems: &'a [String],
}

impl<'a> LogLine<'a> {
    fn of(d: &'a Decision<'a>, incident: &'a str) -> Self {
        let r = d.record;
        let e = d.entry.as_ref();
        LogLine {
            label: d.label(),
            v: e.map(|e| e.v),
            incident: e.map_or(incident, |e| e.incident.as_str()),
            kind: e.map_or(r.kind, |e| e.kind),
            number: e.map_or(r.number, |e| e.number),
            text: e.map(|e| e.text.as_str()),
            because: e.and_then(|e| e.because.as_deref()),
            decided_by: d.decided_by(),
            logged_by: d.logged_by(),
            decided_at: d.decided_at(),
            logged_at: d.logged_at(),
            command_room: e.map(|e| e.command_room.as_str()),
            command_event: e.map(|e| e.command_event.as_str()),
            source_event: e.and_then(|e| e.source_event.as_deref()),
            corrects: d.corrects(),
            posted_event: r.posted_event.as_deref(),
            corrected_by: &d.corrected_by,
            file: &r.file,
            problems: &d.problems,
        }
    }
}

/// Every entry of `m`'s command record, opened with `decrypt` (which returns an
/// entry's plaintext) and checked against the manifest: the decisions by number, each
/// with the decisions that correct it, then the METHANE reports, then the SITREPs.
pub(super) fn open_record<'m>(
    m: &'m Manifest,
    decrypt: impl Fn(&RecordManifest) -> Result<Vec<u8>, ArchiveError>,
) -> Vec<Decision<'m>> {
    let mut records: Vec<&RecordManifest> = m.record.iter().collect();
    records.sort_by_key(|r| (r.kind, r.number));
    let mut opened: Vec<Decision<'_>> = records
        .into_iter()
        .map(|r| open_one(r, &m.incident, decrypt(r)))
        .collect();
    let corrections: Vec<(u32, u32)> = opened
        .iter()
        .filter(|d| d.record.kind == EntryKind::Decision)
        .filter_map(|d| Some((d.corrects()?, d.record.number)))
        .collect();
    for d in opened
        .iter_mut()
        .filter(|d| d.record.kind == EntryKind::Decision)
    {
        d.corrected_by = corrections
            .iter()
            .filter(|(corrected, _)| *corrected == d.record.number)
            .map(|(_, by)| *by)
            .collect();
        d.corrected_by.sort_unstable();
    }
    opened
}

/// Writes the opened `record` ([`open_record`]) into `out`: [`DECISION_LOG_FILE`] and
/// [`DECISION_LOG_RENDERING`] always, the METHANE and SITREP files when there are any,
/// noting them in `written` and every problem in `warnings`.
pub(super) fn write_log(
    m: &Manifest,
    out: &Path,
    record: &[Decision<'_>],
    written: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ArchiveError> {
    let tz = time_zone(m, !record.is_empty(), warnings);
    let of = |kind: EntryKind| -> Vec<Decision<'_>> {
        record
            .iter()
            .filter(|d| d.record.kind == kind)
            .cloned()
            .collect()
    };
    let decisions = of(EntryKind::Decision);
    let md = decision_log(&m.incident, &m.display_name, tz, &decisions);
    let names = (DECISION_LOG_FILE, DECISION_LOG_RENDERING);
    write_pair(&decisions, &m.incident, out, names, &md, written, warnings)?;
    for (kind, names) in [
        (EntryKind::Methane, (METHANE_FILE, METHANE_RENDERING)),
        (EntryKind::Sitrep, (SITREP_FILE, SITREP_RENDERING)),
    ] {
        let reports = of(kind);
        if reports.is_empty() {
            continue;
        }
        let md = reports_rendering(kind, &m.incident, &m.display_name, tz, &reports);
        write_pair(&reports, &m.incident, out, names, &md, written, warnings)?;
    }
    Ok(())
}

/// Writes `entries` as JSON Lines to `names.0` and `md` to `names.1` under `out`,
/// noting both in `written` and each entry's problems in `warnings`.
fn write_pair(
    entries: &[Decision<'_>],
    incident: &str,
    out: &Path,
    (jsonl_name, md_name): (&str, &str),
    md: &str,
    written: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ArchiveError> {
    for d in entries.iter().filter(|d| !d.problems.is_empty()) {
        warnings.push(format!(
            "{} ({}): {}; it is marked in {md_name} and {jsonl_name}",
            d.label(),
            d.record.file,
            d.problems.join("; ")
        ));
    }
    let mut jsonl = Vec::new();
    for d in entries {
        serde_json::to_writer(&mut jsonl, &LogLine::of(d, incident))
            .map_err(|e| ArchiveError::BadInput(format!("{jsonl_name}: {e}")))?;
        jsonl.push(b'\n');
    }
    write_new(out, jsonl_name, |f| f.write_all(&jsonl))?;
    written.push(jsonl_name.to_owned());
    write_new(out, md_name, |f| f.write_all(md.as_bytes()))?;
    written.push(md_name.to_owned());
    Ok(())
}

/// The manifest's time zone; UTC when it names none, or one this cordon does not know
/// (a warning when there are decisions to render in it).
pub(super) fn time_zone(m: &Manifest, needed: bool, warnings: &mut Vec<String>) -> Tz {
    let Some(name) = m.time_zone.as_deref() else {
        return chrono_tz::UTC;
    };
    name.parse().unwrap_or_else(|_| {
        if needed {
            warnings.push(format!(
                "the manifest's time zone {name:?} is not one this cordon knows: the \
                 decision log's times are UTC"
            ));
        }
        chrono_tz::UTC
    })
}

/// Decrypts and checks one entry; never fails, since a bad entry is reported, not
/// dropped.
fn open_one<'m>(
    record: &'m RecordManifest,
    incident: &str,
    plaintext: Result<Vec<u8>, ArchiveError>,
) -> Decision<'m> {
    let mut problems = Vec::new();
    let entry = match plaintext {
        Err(ArchiveError::WrongKey) => {
            problems.push("it is not sealed to any of the identities given".to_owned());
            None
        }
        Err(e) => {
            problems.push(format!("it could not be decrypted ({e})"));
            None
        }
        Ok(plaintext) => {
            let found = hex::encode(Sha256::digest(&plaintext));
            if !found.eq_ignore_ascii_case(&record.content_sha256) {
                problems.push(format!(
                    "its content has SHA-256 {found}, but {} was recorded when it was sealed",
                    record.content_sha256
                ));
            }
            match SealedEntry::from_bytes(&plaintext) {
                Ok(entry) => {
                    problems.extend(differences(record, incident, &entry));
                    Some(entry)
                }
                Err(e) => {
                    let detail = match e {
                        SealError::Line { source, .. } => source.to_string(),
                        other => other.to_string(),
                    };
                    problems.push(format!("it does not hold a readable entry ({detail})"));
                    None
                }
            }
        }
    };
    Decision {
        record,
        entry,
        problems,
        corrected_by: Vec::new(),
    }
}

/// Where the decrypted entry and the manifest's record of it disagree.
fn differences(record: &RecordManifest, incident: &str, entry: &SealedEntry) -> Vec<String> {
    let mut out = Vec::new();
    if entry.v != ENTRY_VERSION {
        out.push(format!(
            "it is in entry format version {}, not {ENTRY_VERSION}",
            entry.v
        ));
    }
    if entry.incident != incident {
        out.push(format!(
            "it belongs to incident {:?}, not {incident}",
            entry.incident
        ));
    }
    if (entry.kind, entry.number) != (record.kind, record.number) {
        out.push(format!("it is {}, not {}", entry.label(), record.label()));
    }
    let mut differ = |field: &str, entry: &str, manifest: &str| {
        if entry != manifest {
            out.push(format!(
                "its {field} is {entry}, but the manifest says {manifest}"
            ));
        }
    };
    differ("decided_by", &entry.decided_by, &record.decided_by);
    differ("logged_by", &entry.logged_by, &record.logged_by);
    differ(
        "decided_at",
        &entry.decided_at.to_rfc3339(),
        &record.decided_at.to_rfc3339(),
    );
    differ(
        "logged_at",
        &entry.logged_at.to_rfc3339(),
        &record.logged_at.to_rfc3339(),
    );
    let label = |n: Option<u32>| n.map_or_else(|| "nothing".to_owned(), |n| record.kind.label(n));
    differ("corrects", &label(entry.corrects), &label(record.corrects));
    out
}
