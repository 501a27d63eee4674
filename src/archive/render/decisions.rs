//! `decision-log.md`, which opening writes from the command record's decrypted entries.
//!
//! What a decision says (its text, its rationale, the people named) is as untrusted as
//! a message body: it goes through [`escape`] and [`body_text`], so nothing written in
//! a decision can forge a heading, a link or another entry. The only structure is the
//! one written here: a heading per entry, from its label and times.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{body_text, escape};
use crate::archive::manifest::RecordManifest;
use crate::archive::record::{EntryKind, SealedEntry};

/// One decision as opening found it: what the manifest records, what the sealed entry
/// says when it could be opened, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision<'a> {
    /// The manifest's record of it (signed by cordon).
    pub record: &'a RecordManifest,
    /// The entry as decrypted; `None` when it could not be decrypted or read.
    pub entry: Option<SealedEntry>,
    /// Why it is not to be relied on as it stands: empty when it opened and matched the
    /// manifest in every respect.
    pub problems: Vec<String>,
    /// The numbers of the decisions that correct it, in order.
    pub corrected_by: Vec<u32>,
}

impl Decision<'_> {
    /// Its label, from the manifest (`D3`).
    pub fn label(&self) -> String {
        self.record.label()
    }

    /// Who decided: the entry's word when it was opened, else the manifest's.
    pub fn decided_by(&self) -> &str {
        self.entry
            .as_ref()
            .map_or(&self.record.decided_by, |e| &e.decided_by)
    }

    /// Who logged it.
    pub fn logged_by(&self) -> &str {
        self.entry
            .as_ref()
            .map_or(&self.record.logged_by, |e| &e.logged_by)
    }

    /// When it was decided.
    pub fn decided_at(&self) -> DateTime<Utc> {
        self.entry
            .as_ref()
            .map_or(self.record.decided_at, |e| e.decided_at)
    }

    /// When it was logged.
    pub fn logged_at(&self) -> DateTime<Utc> {
        self.entry
            .as_ref()
            .map_or(self.record.logged_at, |e| e.logged_at)
    }

    /// The number of the decision it corrects.
    pub fn corrects(&self) -> Option<u32> {
        self.entry
            .as_ref()
            .map_or(self.record.corrects, |e| e.corrects)
    }
}

/// `decision-log.md`: the incident, then every decision in the order given (by number),
/// its times to the minute in `tz`.
pub(crate) fn decision_log(
    incident: &str,
    display_name: &str,
    tz: Tz,
    decisions: &[Decision<'_>],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Decision log: {}\n", escape(display_name));
    let _ = write!(
        out,
        "Incident {} ({}). ",
        escape(display_name),
        escape(incident)
    );
    if decisions.is_empty() {
        out.push_str("No decisions were logged.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{} decision{}, in the order they were numbered. Times are {}, to the minute.\n",
        decisions.len(),
        if decisions.len() == 1 { "" } else { "s" },
        escape(tz.name())
    );
    out.push_str(
        "Each decision was sealed to the records officers when it was logged, and is shown \
         here as it was sealed. People are Matrix user ids as the homeserver reported them. \
         A decision marked \u{26a0} could not be opened, or does not match cordon\u{2019}s \
         record of it: do not rely on it without checking.\n\n---\n",
    );
    for d in decisions {
        out.push('\n');
        out.push_str(&entry(d, tz));
    }
    out
}

/// `methane.md` or `sitreps.md`: the incident's reports of `kind`, every one by
/// number, its times to the minute in `tz`.
pub(crate) fn reports_rendering(
    kind: EntryKind,
    incident: &str,
    display_name: &str,
    tz: Tz,
    reports: &[Decision<'_>],
) -> String {
    let n = reports.len();
    let (title, counted) = match kind {
        EntryKind::Methane => (
            "METHANE reports",
            format!(
                "{n} version{}; each supersedes the one before, and all are kept",
                if n == 1 { "" } else { "s" }
            ),
        ),
        EntryKind::Sitrep => (
            "Situation reports (SITREPs)",
            format!(
                "{n} report{}, in the order received",
                if n == 1 { "" } else { "s" }
            ),
        ),
        EntryKind::Decision => (
            "Decisions",
            format!("{n} decision{}", if n == 1 { "" } else { "s" }),
        ),
    };
    let mut out = String::new();
    let _ = writeln!(out, "# {title}: {}\n", escape(display_name));
    let _ = writeln!(
        out,
        "Incident {} ({}). {counted}. Times are {}, to the minute. Each was sealed to the \
         records officers when it was given; one marked \u{26a0} could not be opened or does \
         not match cordon\u{2019}s record of it.\n\n---",
        escape(display_name),
        escape(incident),
        escape(tz.name())
    );
    for r in reports {
        out.push('\n');
        out.push_str(&entry(r, tz));
    }
    out
}

/// One decision: its heading, then its lines.
fn entry(d: &Decision<'_>, tz: Tz) -> String {
    let minute = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
    let (logged, decided) = (d.logged_at(), d.decided_at());
    let mut out = format!(
        "### {} \u{b7} {} {}\n\n",
        d.label(),
        minute(logged),
        escape(tz.name())
    );
    // Paragraphs: what is wrong, who and when, what was decided, why and what it
    // corrects. Untrusted text never makes a paragraph break (`body_text` fills blank
    // lines), so it cannot end one of these early.
    let mut paragraphs: Vec<Vec<String>> = Vec::new();
    if !d.problems.is_empty() {
        let problems = d
            .problems
            .iter()
            .map(|p| escape(p))
            .collect::<Vec<_>>()
            .join("; ");
        paragraphs.push(vec![match d.entry {
            None => format!(
                "\u{26a0} **Not opened**: {problems}. What was decided is not shown; what \
                 follows is cordon\u{2019}s record of the entry."
            ),
            Some(_) => format!(
                "\u{26a0} **Does not match cordon\u{2019}s record of it**: {problems}. Do \
                 not rely on it without checking."
            ),
        }]);
    }
    // The decision's own time when it is not the logging's minute: the hour alone on
    // the same day, the date too on another.
    let (logged_min, decided_min) = (minute(logged), minute(decided));
    let when = match (decided_min.split_once(' '), logged_min.split_once(' ')) {
        _ if decided_min == logged_min => String::new(),
        (Some((day, hour)), Some((logged_day, _))) if day == logged_day => {
            format!(" (at {hour})")
        }
        _ => format!(" (at {decided_min})"),
    };
    paragraphs.push(vec![
        format!("Decided by {}{when}", escape(d.decided_by())),
        format!("Logged by {}", escape(d.logged_by())),
    ]);
    let mut why = Vec::new();
    if let Some(e) = &d.entry {
        paragraphs.push(vec![body_text(&e.text)]);
        if let Some(because) = &e.because {
            why.push(format!("Because: {}", body_text(because)));
        }
    }
    if let Some(n) = d.corrects() {
        why.push(format!("Corrects {}.", d.record.kind.label(n)));
    }
    if !d.corrected_by.is_empty() {
        let by: Vec<String> = d
            .corrected_by
            .iter()
            .map(|n| d.record.kind.label(*n))
            .collect();
        why.push(format!("Corrected by {}.", by.join(", ")));
    }
    if !why.is_empty() {
        paragraphs.push(why);
    }
    let paragraphs: Vec<String> = paragraphs.iter().map(|p| p.join("  \n")).collect();
    out.push_str(&paragraphs.join("\n\n"));
    out.push('\n');
    out
}
