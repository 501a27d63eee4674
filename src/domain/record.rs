//! The command record: the numbered entries an incident keeps beside its chat (the
//! decision log), what they are called, and the text cordon posts for each one.
//!
//! Entries are never edited or removed: a correction is a new entry that names the one
//! it corrects. Their text is sealed to the records officers as it is recorded
//! (`archive::record`); this module only renders what cordon posts in the command room
//! from text it has just read, and never stores it.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::incident::plan::format_time;

/// What kind of entry of the command record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A decision (`!cordon decision`), numbered D1, D2, …
    Decision,
    /// A METHANE report (`!cordon methane`), numbered by version: v1, v2, …; the latest
    /// supersedes the others, which are kept.
    Methane,
    /// A situation report (`!cordon sitrep`), numbered SITREP 1, 2, … in the order given.
    Sitrep,
}

impl EntryKind {
    /// The letter its numbers carry (`D` for decisions).
    pub fn letter(self) -> &'static str {
        match self {
            Self::Decision => "D",
            Self::Methane => "v",
            Self::Sitrep => "S",
        }
    }

    /// The entry's label: `D3`, or `METHANE v2`.
    pub fn label(self, number: u32) -> String {
        match self {
            Self::Decision => format!("D{number}"),
            Self::Methane => format!("METHANE v{number}"),
            Self::Sitrep => format!("SITREP {number}"),
        }
    }

    /// The label as it names a file: `D3`, `methane-v2` (no spaces).
    pub fn file_label(self, number: u32) -> String {
        match self {
            Self::Decision => format!("D{number}"),
            Self::Methane => format!("methane-v{number}"),
            Self::Sitrep => format!("sitrep-{number}"),
        }
    }

    /// The name used in the store, the audit log and the archive (`decision`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::Methane => "methane",
            Self::Sitrep => "sitrep",
        }
    }
}

/// The most characters of a decision's text or rationale cordon takes.
pub const MAX_TEXT_CHARS: usize = 2000;

/// What cordon posts in the command room for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionPost<'a> {
    /// Its number.
    pub number: u32,
    /// Who decided.
    pub decided_by: &'a str,
    /// Who logged it.
    pub logged_by: &'a str,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// When it was logged.
    pub logged_at: DateTime<Utc>,
    /// The decision, read back from the chat; `None` when the message is gone.
    pub text: Option<&'a str>,
    /// The rationale, if any.
    pub because: Option<&'a str>,
    /// The entry it corrects.
    pub corrects: Option<u32>,
}

impl DecisionPost<'_> {
    /// The post's plain text, times to the minute in `tz`.
    pub fn render(&self, tz: Tz) -> String {
        let label = EntryKind::Decision.label(self.number);
        let logged = format_time(self.logged_at, tz);
        let decided = if self.decided_by == self.logged_by
            && self.decided_at.timestamp() / 60 == self.logged_at.timestamp() / 60
        {
            format!("decided by {}", self.decided_by)
        } else if self.decided_at.timestamp() / 60 == self.logged_at.timestamp() / 60 {
            format!(
                "decided by {}, logged by {}",
                self.decided_by, self.logged_by
            )
        } else {
            format!(
                "decided by {} at {}, logged by {}",
                self.decided_by,
                format_time(self.decided_at, tz),
                self.logged_by
            )
        };
        let mut out = format!("Decision {label} · {logged} · {decided}");
        if let Some(n) = self.corrects {
            out.push_str(&format!("\nCorrects {}.", EntryKind::Decision.label(n)));
        }
        match self.text {
            Some(text) => {
                out.push('\n');
                out.push_str(text);
            }
            None => out.push_str(
                "\n(I could not read the decision back from the chat to post it here; its \
                 text is in the sealed record for the records officers.)",
            ),
        }
        if let Some(because) = self.because {
            out.push_str("\nBecause: ");
            out.push_str(because);
        }
        out
    }
}

/// The seven lines of a METHANE report, in order: the letter and what it stands for.
pub const METHANE_LINES: [(&str, &str); 7] = [
    ("M", "major incident declared or standby"),
    ("E", "exact location"),
    ("T", "type of incident"),
    ("H", "hazards, present and potential"),
    ("A", "access, and the routes in"),
    ("N", "number and severity of casualties"),
    ("E", "emergency services present and required"),
];

/// A METHANE report: the seven lines' texts, in [`METHANE_LINES`] order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Methane {
    /// The texts after `M:`, `E:`, `T:`, `H:`, `A:`, `N:`, `E:`.
    pub lines: [String; 7],
}

impl Methane {
    /// The report as seven `X: text` lines: what is sealed and posted.
    pub fn to_text(&self) -> String {
        METHANE_LINES
            .iter()
            .zip(&self.lines)
            .map(|((letter, _), text)| format!("{letter}: {text}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether `M:` says the major incident is declared (rather than standby).
    pub fn declared(&self) -> bool {
        self.lines[0].to_lowercase().contains("declared")
    }
}

/// Appends a report's text on the lines after a post's heading, or, when it could not
/// be read back from the chat, where it is.
fn push_report(out: &mut String, report: Option<&str>) {
    match report {
        Some(text) => {
            out.push('\n');
            out.push_str(text);
        }
        None => out.push_str(
            "\n(I could not read the report back from the chat to post it here; it is in \
             the sealed record for the records officers.)",
        ),
    }
}

/// What cordon posts (and pins) in the command room for a METHANE report.
pub fn methane_post(
    version: u32,
    by: &str,
    at: DateTime<Utc>,
    report: Option<&str>,
    tz: Tz,
) -> String {
    let mut out = format!("METHANE v{version} · {} · from {by}", format_time(at, tz));
    if version > 1 {
        out.push_str(&format!(" (supersedes v{})", version - 1));
    }
    push_report(&mut out, report);
    out
}

/// The SITREP cycle: the `n`-th report is due `n × every` after the declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SitrepCycle {
    /// When the incident was declared.
    pub declared_at: DateTime<Utc>,
    /// How often one is due.
    pub every: std::time::Duration,
    /// How long after it is due a missing one is raised.
    pub grace: std::time::Duration,
}

/// How a SITREP stands against its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeliness {
    /// Before the first one was due.
    Early,
    /// Within the grace of cycle `n`.
    OnTime(u32),
    /// After the grace of cycle `n`, late by this long.
    Late(u32, TimeDelta),
}

impl SitrepCycle {
    fn every(&self) -> TimeDelta {
        TimeDelta::from_std(self.every).unwrap_or(TimeDelta::MAX)
    }

    /// When the `n`-th SITREP is due.
    pub fn due(&self, n: u32) -> DateTime<Utc> {
        self.every()
            .checked_mul(i32::try_from(n).unwrap_or(i32::MAX))
            .and_then(|d| self.declared_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Which cycle a SITREP received at `at` answers (the latest one due), and whether it
    /// came within that cycle's grace.
    pub fn judge(&self, at: DateTime<Utc>) -> Timeliness {
        let every = self.every().num_milliseconds().max(1);
        let since = (at - self.declared_at).num_milliseconds();
        if since < every {
            return Timeliness::Early;
        }
        let n = u32::try_from(since / every).unwrap_or(u32::MAX);
        let grace_end = self.due(n) + TimeDelta::from_std(self.grace).unwrap_or(TimeDelta::zero());
        if at <= grace_end {
            Timeliness::OnTime(n)
        } else {
            Timeliness::Late(n, at - self.due(n))
        }
    }
}

/// What cordon posts in the command room for a SITREP.
pub fn sitrep_post(
    number: u32,
    by: &str,
    at: DateTime<Utc>,
    timeliness: Option<Timeliness>,
    report: Option<&str>,
    tz: Tz,
) -> String {
    let mut out = format!("SITREP {number} · {} · from {by}", format_time(at, tz));
    match timeliness {
        Some(Timeliness::OnTime(n)) => out.push_str(&format!(" (cycle {n}, on time)")),
        Some(Timeliness::Late(n, by)) => out.push_str(&format!(
            " (cycle {n}, {} min after it was due: late)",
            by.num_minutes()
        )),
        Some(Timeliness::Early) | None => {}
    }
    push_report(&mut out, report);
    out
}

/// Reads a label like `D5` (or `d5`, or `5`) as a decision's number.
pub fn parse_decision_label(text: &str) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix('D')
        .or_else(|| t.strip_prefix('d'))
        .unwrap_or(t);
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|n| *n > 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_sitrep_answers_the_latest_cycle_due_and_is_late_after_its_grace() {
        let cycle = SitrepCycle {
            declared_at: at("2026-12-04T14:00:00Z"),
            every: std::time::Duration::from_secs(30 * 60),
            grace: std::time::Duration::from_secs(10 * 60),
        };
        assert_eq!(cycle.due(2), at("2026-12-04T15:00:00Z"));
        assert_eq!(cycle.judge(at("2026-12-04T14:20:00Z")), Timeliness::Early);
        assert_eq!(
            cycle.judge(at("2026-12-04T14:30:00Z")),
            Timeliness::OnTime(1)
        );
        assert_eq!(
            cycle.judge(at("2026-12-04T14:40:00Z")),
            Timeliness::OnTime(1)
        );
        assert_eq!(
            cycle.judge(at("2026-12-04T14:52:00Z")),
            Timeliness::Late(1, TimeDelta::minutes(22))
        );
        assert_eq!(
            cycle.judge(at("2026-12-04T15:05:00Z")),
            Timeliness::OnTime(2)
        );
    }

    #[test]
    fn labels_read_and_write() {
        assert_eq!(EntryKind::Decision.label(3), "D3");
        assert_eq!(parse_decision_label("D5"), Some(5));
        assert_eq!(parse_decision_label("d12"), Some(12));
        assert_eq!(parse_decision_label("7"), Some(7));
        assert_eq!(parse_decision_label("D0"), None);
        assert_eq!(parse_decision_label("D"), None);
        assert_eq!(parse_decision_label("M1"), None);
        assert_eq!(parse_decision_label("D1234567"), None);
    }

    #[test]
    fn a_post_names_who_decided_who_logged_and_what_it_corrects() {
        let tz: Tz = "Europe/London".parse().unwrap();
        let post = DecisionPost {
            number: 3,
            decided_by: "@ic:x",
            logged_by: "@loggist:x",
            decided_at: at("2026-12-04T14:29:10Z"),
            logged_at: at("2026-12-04T14:32:50Z"),
            text: Some("Divert P1 trauma"),
            because: Some("CT down"),
            corrects: Some(1),
        };
        let text = post.render(tz);
        assert!(text.starts_with("Decision D3 · "), "{text}");
        assert!(text.contains("14:32"), "{text}");
        assert!(text.contains("decided by @ic:x at "), "{text}");
        assert!(text.contains("14:29"), "{text}");
        assert!(text.contains("logged by @loggist:x"), "{text}");
        assert!(text.contains("\nCorrects D1."), "{text}");
        assert!(
            text.contains("\nDivert P1 trauma\nBecause: CT down"),
            "{text}"
        );

        let own = DecisionPost {
            decided_by: "@ic:x",
            logged_by: "@ic:x",
            decided_at: at("2026-12-04T14:32:01Z"),
            logged_at: at("2026-12-04T14:32:01Z"),
            text: None,
            because: None,
            corrects: None,
            ..post
        };
        let text = own.render(tz);
        assert!(text.contains("· decided by @ic:x\n"), "{text}");
        assert!(text.contains("sealed record"), "{text}");
    }
}
