//! `debrief.md`: the [`Debrief`] as an emergency planner reads it, times in the
//! incident's zone. Every name, id and text in it came from the chat or the homeserver
//! and goes through [`escape`] (one line) or [`body_text`] (a decision's text), so
//! nothing in them can forge a heading, a row or a link.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{body_text, escape};
use crate::archive::debrief::{Debrief, span};

/// `debrief.md` for `d`, times in `tz`.
pub(crate) fn debrief(d: &Debrief, tz: Tz) -> String {
    let clock = |t: DateTime<Utc>| t.with_timezone(&tz).format("%H:%M:%S").to_string();
    let day_clock = |t: DateTime<Utc>| {
        t.with_timezone(&tz)
            .format("%a %d %b %Y %H:%M:%S")
            .to_string()
    };
    let since = |t: DateTime<Utc>| {
        let s = (t - d.declared_at).num_seconds();
        let sign = if s < 0 { "-" } else { "+" };
        let s = s.unsigned_abs();
        format!("T{sign}{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    };
    let opt = |t: Option<DateTime<Utc>>| t.map_or("—".to_owned(), clock);
    let took = |s: Option<i64>| s.map_or("—".to_owned(), span);

    let mut out = String::new();
    if d.exercise {
        let _ = writeln!(
            out,
            "# EXERCISE debrief: {}\n\n**EXERCISE. This was a drill, not a real incident.**\n",
            escape(&d.display_name)
        );
    } else {
        let _ = writeln!(out, "# Debrief: {}\n", escape(&d.display_name));
    }
    out.push_str("| | |\n|---|---|\n");
    let stood_down = match (&d.stood_down_at, &d.stood_down_by) {
        (Some(at), Some(by)) if by == "cordon" => format!("{} (at expiry)", day_clock(*at)),
        (Some(at), Some(by)) => format!("{} by {}", day_clock(*at), escape(by)),
        (Some(at), None) => day_clock(*at),
        (None, _) => "not stood down".to_owned(),
    };
    let ran = d.stood_down_at.map_or("—".to_owned(), |at| {
        span((at - d.declared_at).num_seconds())
    });
    for (k, v) in [
        ("Incident", escape(&d.incident)),
        ("Playbook", escape(&d.playbook)),
        ("Commander", escape(&d.commander)),
        ("Declared", day_clock(d.declared_at)),
        ("Stood down", stood_down),
        ("Ran for", ran),
        ("Sealed", day_clock(d.sealed_at)),
        ("Times", escape(tz.name())),
    ] {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    // The figures first: what a planner reads aloud at the start of the debrief.
    let joined: Vec<i64> = d.arrivals.iter().filter_map(|a| a.took_secs).collect();
    let people: std::collections::BTreeSet<&str> =
        d.arrivals.iter().map(|a| a.user.as_str()).collect();
    let people_joined: std::collections::BTreeSet<&str> = d
        .arrivals
        .iter()
        .filter(|a| a.joined_at.is_some())
        .map(|a| a.user.as_str())
        .collect();
    let transcribed: Vec<i64> = d.advice.iter().filter_map(|a| a.took_secs).collect();
    let corrections = d.decisions.iter().filter(|x| x.corrects.is_some()).count();
    let count = |kind: &str| d.timeline.iter().filter(|m| m.kind == kind).count();
    out.push_str("\n## In figures\n\n");
    let figures = [
        format!("Rooms created: {}", count("room-created")),
        format!(
            "People invited: {}; joined: {}; median time from invite to join: {}",
            people.len(),
            people_joined.len(),
            median(&joined).map_or("—".to_owned(), span)
        ),
        format!("METHANE reports: {}", d.methane.len()),
        format!(
            "SITREPs: {} received ({} before any was due); cycles on time {}, late {}, missed {}",
            d.sitreps.received,
            d.sitreps.early,
            d.sitreps.on_time,
            d.sitreps.late,
            d.sitreps.missed
        ),
        format!(
            "Decisions logged: {} ({} correcting an earlier one)",
            d.decisions.len(),
            corrections
        ),
        format!(
            "Clinical advice flagged: {}; transcribed: {}; median time to transcribe: {}",
            d.advice.len(),
            transcribed.len(),
            median(&transcribed).map_or("—".to_owned(), span)
        ),
        format!(
            "Notices about patient identifiers in messages: {}",
            count("pid-notice")
        ),
        format!(
            "Expiry warnings: {}; extensions: {}; legal holds: {}; guard alerts: {}",
            count("warning"),
            count("extended"),
            count("hold"),
            count("guard")
        ),
    ];
    for f in figures {
        let _ = writeln!(out, "- {f}");
    }

    out.push_str("\n## Timeline\n\n");
    out.push_str(
        "From the audit log, the rooms' membership events and the command record. T+ is \
         the time since the declaration.\n\n| T+ | Time | What | Who |\n|---|---|---|---|\n",
    );
    for m in &d.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            since(m.at),
            clock(m.at),
            escape(&m.what),
            m.by.as_deref().map_or(String::new(), escape)
        );
    }

    out.push_str("\n## Time to first join, by role\n\n");
    if d.roles.is_empty() {
        out.push_str(
            "This archive does not list the roles' holders (it was sealed before cordon \
             recorded them); the invites and joins below are by person.\n",
        );
    } else {
        out.push_str("| Role | Holders | First to join | Joined | After the declaration |\n|---|---|---|---|---|\n");
        for r in &d.roles {
            let _ = writeln!(
                out,
                "| {} ({}) | {} | {} | {} | {} |",
                escape(&r.title),
                escape(&r.role),
                r.holders.len(),
                r.first_joined_by
                    .as_deref()
                    .map_or("nobody joined".to_owned(), escape),
                opt(r.first_joined_at),
                took(r.after_declared_secs)
            );
        }
    }

    out.push_str("\n## Invites and joins\n\n");
    if d.arrivals.is_empty() {
        out.push_str("Nobody was invited.\n");
    } else {
        out.push_str(
            "| Room | Person | Roles | Invited | Joined | Took |\n|---|---|---|---|---|---|\n",
        );
        for a in &d.arrivals {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                escape(&a.room_key),
                escape(&a.user),
                if a.roles.is_empty() {
                    "commander".to_owned()
                } else {
                    escape(&a.roles.join(", "))
                },
                clock(a.invited_at),
                a.joined_at.map_or("never".to_owned(), clock),
                took(a.took_secs)
            );
        }
    }

    out.push_str("\n## METHANE\n\n");
    if d.methane.is_empty() {
        out.push_str("No METHANE report was given.\n");
    } else {
        for r in &d.methane {
            let _ = writeln!(
                out,
                "- {} at {} ({}) by {}{}",
                escape(&r.label),
                clock(r.at),
                since(r.at),
                escape(&r.by),
                problems(&r.problems)
            );
        }
        out.push_str("\nThe reports' text is in `methane.md`.\n");
    }

    out.push_str("\n## SITREP compliance\n\n");
    if d.sitreps.cycles.is_empty() && d.sitreps.received == 0 {
        out.push_str("No SITREP cycle ran, and no SITREP was sent.\n");
    } else {
        let _ = writeln!(
            out,
            "On time: {}. Late: {}. Missed: {}. Received in all: {} ({} before any was due).\n",
            d.sitreps.on_time,
            d.sitreps.late,
            d.sitreps.missed,
            d.sitreps.received,
            d.sitreps.early
        );
        if !d.sitreps.cycles.is_empty() {
            out.push_str("| Cycle | Due | Outcome | Received | Late by |\n|---|---|---|---|---|\n");
            for c in &d.sitreps.cycles {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    c.cycle,
                    opt(c.due),
                    c.outcome,
                    opt(c.received_at),
                    took(c.late_by_secs)
                );
            }
        }
    }

    out.push_str("\n## Decision log\n\n");
    if d.decisions.is_empty() {
        out.push_str("No decisions were logged.\n");
    }
    for x in &d.decisions {
        let _ = writeln!(
            out,
            "### {} \u{b7} {} ({})\n",
            escape(&x.label),
            clock(x.logged_at),
            since(x.logged_at)
        );
        let mut who = format!("Decided by {}", escape(&x.decided_by));
        if x.decided_at != x.logged_at {
            let _ = write!(who, " at {}", clock(x.decided_at));
        }
        if x.logged_by != x.decided_by {
            let _ = write!(who, "; logged by {}", escape(&x.logged_by));
        }
        if let Some(c) = &x.corrects {
            let _ = write!(who, "; corrects {}", escape(c));
        }
        if !x.corrected_by.is_empty() {
            let _ = write!(who, "; corrected by {}", escape(&x.corrected_by.join(", ")));
        }
        let _ = writeln!(out, "{who}.{}\n", problems(&x.problems));
        match &x.text {
            Some(text) => {
                let _ = writeln!(out, "{}\n", body_text(text));
            }
            None => out.push_str("_(the sealed entry could not be opened)_\n\n"),
        }
        if let Some(because) = &x.because {
            let _ = writeln!(out, "Because: {}\n", body_text(because));
        }
    }

    out.push_str("\n## Clinical advice\n\n");
    if d.advice.is_empty() {
        out.push_str("No clinical advice was flagged.\n");
    } else {
        out.push_str(
            "| Room | Message | Author | Flagged | Transcribed | Took | By |\n|---|---|---|---|---|---|---|\n",
        );
        for a in &d.advice {
            let transcribed = match (a.transcribed_at, a.confirmed) {
                (Some(t), true) => clock(t),
                (Some(t), false) => format!("{} (✅ only, unconfirmed)", clock(t)),
                (None, _) => "not transcribed".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                escape(&a.room_key),
                escape(&a.event),
                escape(&a.author),
                clock(a.flagged_at),
                transcribed,
                took(a.took_secs),
                a.transcribed_by.as_deref().map_or(String::new(), escape)
            );
        }
    }

    out.push_str("\n## Outstanding at stand-down\n\n");
    let o = &d.outstanding;
    let mut open = Vec::new();
    if !o.advice.is_empty() {
        open.push(format!(
            "Advice never marked transcribed: {}",
            escape(&o.advice.join(", "))
        ));
    }
    if !o.advice_unconfirmed.is_empty() {
        open.push(format!(
            "Advice marked only with a ✅ reaction, never confirmed: {}",
            escape(&o.advice_unconfirmed.join(", "))
        ));
    }
    if !o.never_joined.is_empty() {
        open.push(format!(
            "Invited but never joined: {}",
            escape(&o.never_joined.join(", "))
        ));
    }
    if !o.sitreps_missed.is_empty() {
        let cycles: Vec<String> = o.sitreps_missed.iter().map(u64::to_string).collect();
        open.push(format!(
            "SITREP cycles never answered: {}",
            cycles.join(", ")
        ));
    }
    if o.no_methane {
        open.push("No METHANE report was given".to_owned());
    }
    if open.is_empty() {
        out.push_str("Nothing: every item was closed.\n");
    }
    for line in open {
        let _ = writeln!(out, "- {line}");
    }
    out
}

fn problems(problems: &[String]) -> String {
    if problems.is_empty() {
        String::new()
    } else {
        format!(
            " \u{26a0} **Not to be relied on**: {}",
            escape(&problems.join("; "))
        )
    }
}

/// The median of `values` (the lower middle one of an even count).
fn median(values: &[i64]) -> Option<i64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len().checked_sub(1)? / 2).copied()
}
