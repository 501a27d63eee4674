//! The debrief's readings of the audit log: the timeline's moment for each entry, the
//! SITREP cycle's outcomes, and the advice and its transcription.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Advice, AuditLine, Moment, SitrepCycle, Sitreps, span};
use crate::archive::manifest::Manifest;

/// A moment of the timeline.
pub(super) fn moment(at: DateTime<Utc>, kind: &str, by: Option<&str>, what: String) -> Moment {
    Moment {
        at,
        kind: kind.to_owned(),
        by: by.map(str::to_owned),
        what,
    }
}

/// The timeline's moment for one audit entry, if it is one the debrief shows.
pub(super) fn moment_of(m: &Manifest, a: &AuditLine) -> Option<Moment> {
    let by = person(&a.actor);
    let d = a.details();
    let field = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match a.action.as_str() {
        "incident.declared" => Some(moment(
            a.at,
            "declared",
            by,
            format!(
                "Declared from playbook {}{}",
                m.playbook,
                if m.exercise { " (EXERCISE)" } else { "" }
            ),
        )),
        "room.created" => Some(moment(
            a.at,
            "room-created",
            None,
            format!("Room {} created: {}", field("key"), field("name")),
        )),
        "incident.provisioned" => Some(moment(
            a.at,
            "provisioned",
            None,
            "Every room created and every verified holder invited".to_owned(),
        )),
        "incident.warned" => Some(moment(
            a.at,
            "warning",
            None,
            format!(
                "Expiry warning: {} left",
                span(d.get("left_secs").and_then(Value::as_i64).unwrap_or(0))
            ),
        )),
        "incident.extended" => {
            let to = d
                .pointer("/event/new_expiry")
                .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok())
                .map_or_else(
                    || "later".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                );
            Some(moment(
                a.at,
                "extended",
                by,
                format!("Extended: now expires {to}"),
            ))
        }
        "incident.expiry-grace" => Some(moment(
            a.at,
            "warning",
            None,
            "Expiry passed while cordon was down: grace given".to_owned(),
        )),
        "incident.hold-set" => Some(moment(
            a.at,
            "hold",
            by,
            format!(
                "Legal hold placed: {}",
                d.pointer("/event/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
        )),
        "incident.hold-released" => Some(moment(
            a.at,
            "hold-released",
            by,
            "Legal hold released".into(),
        )),
        "incident.failed" => Some(moment(
            a.at,
            "failed",
            None,
            format!(
                "A step failed: {}",
                d.pointer("/event/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            ),
        )),
        "incident.retry" => Some(moment(a.at, "retry", by, "Failed step retried".into())),
        "incident.stand-down" => Some(moment(
            a.at,
            "stand-down",
            by,
            if by.is_some() {
                "Stood down".to_owned()
            } else {
                "Stood down at expiry".to_owned()
            },
        )),
        "incident.frozen" => Some(moment(
            a.at,
            "frozen",
            None,
            "Rooms frozen (read-only) for sealing".to_owned(),
        )),
        "roster.added" => Some(moment(
            a.at,
            "added",
            by,
            format!("{} added as {}", field("user"), field("role")),
        )),
        "roster.removed" => Some(moment(
            a.at,
            "removed",
            by,
            format!("{} removed", field("user")),
        )),
        "roster.admitted-unverified" => Some(moment(
            a.at,
            "admitted-unverified",
            by,
            format!("{} admitted unverified", field("user")),
        )),
        "roster.commander-seated" => Some(moment(
            a.at,
            "handover",
            by,
            format!("Commander handed over to {}", field("user")),
        )),
        "sitrep.late" => Some(moment(
            a.at,
            "sitrep-late",
            by,
            format!(
                "SITREP {} came late ({} after it was due)",
                d.get("cycle").and_then(Value::as_u64).unwrap_or(0),
                span(d.get("late_by_secs").and_then(Value::as_i64).unwrap_or(0))
            ),
        )),
        "sitrep.missed" => Some(moment(
            a.at,
            "sitrep-missed",
            None,
            format!(
                "SITREP {} not received within its grace: holders and commander reminded",
                d.get("cycle").and_then(Value::as_u64).unwrap_or(0)
            ),
        )),
        "pid.nudged" => Some(moment(
            a.at,
            "pid-notice",
            None,
            format!(
                "Notice to {}: patient identifiers ({}) in a message in {}",
                field("sender"),
                d.get("found")
                    .and_then(Value::as_array)
                    .map(|k| {
                        k.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                field("room")
            ),
        )),
        "advice.flagged" => Some(moment(
            a.at,
            "advice",
            by,
            format!(
                "Advice by {} flagged in {} ({})",
                field("author"),
                field("room"),
                field("event")
            ),
        )),
        action if action.starts_with("guard.") => {
            Some(moment(a.at, "guard", None, guard_words(action, &d)))
        }
        _ => None,
    }
}

/// The person an audit entry names as its actor; `None` for cordon itself.
fn person(actor: &str) -> Option<&str> {
    (actor != "cordon").then_some(actor)
}

/// A guard alert in words.
fn guard_words(action: &str, d: &Value) -> String {
    let who = d
        .get("user")
        .or_else(|| d.get("member"))
        .or_else(|| d.get("sender"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let room = d
        .get("room_key")
        .or_else(|| d.get("key"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let setting = d
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or("a setting");
    let what = match action {
        "guard.banned" => {
            "someone cordon did not invite (or let in) was removed and banned".to_owned()
        }
        "guard.removed" => format!(
            "a member was taken out of the incident: {}",
            d.get("why")
                .and_then(Value::as_str)
                .unwrap_or("their standing changed")
        ),
        "guard.state-reverted" => format!("{setting} changed by someone else; cordon put it back"),
        "guard.state-emptied" => format!("{setting} added by someone else; cordon emptied it"),
        "guard.member-restored" => "a membership changed by someone else was put back".to_owned(),
        "guard.readmitted" => "a member verified again and was let back in".to_owned(),
        "guard.identity-changed" => "a member's identity (cross-signing key) changed".to_owned(),
        "guard.device-alert" => "a member used a device they have not verified".to_owned(),
        "guard.cordon-removed" => "cordon was removed from a room".to_owned(),
        "guard.control-room-joiner" => "someone unexpected joined the control room".to_owned(),
        other => other.strip_prefix("guard.").unwrap_or(other).to_owned(),
    };
    let mut out = format!("Guard: {what}");
    if !who.is_empty() {
        out.push_str(&format!(" ({who}"));
        if !room.is_empty() {
            out.push_str(&format!(" in {room}"));
        }
        out.push(')');
    } else if !room.is_empty() {
        out.push_str(&format!(" (in {room})"));
    }
    out
}

/// The SITREP cycle from the audit: each cycle's outcome, the last word on it winning
/// (a cycle missed and then answered late is late).
pub(super) fn sitreps(audit: &[AuditLine], received: usize) -> Sitreps {
    let mut cycles: BTreeMap<u64, SitrepCycle> = BTreeMap::new();
    let mut early = 0;
    for a in audit {
        if a.action == "sitrep.early" {
            early += 1;
            continue;
        }
        let outcome = match a.action.as_str() {
            "sitrep.on-time" => "on-time",
            "sitrep.late" => "late",
            "sitrep.missed" => "missed",
            _ => continue,
        };
        let d = a.details();
        let Some(n) = d.get("cycle").and_then(Value::as_u64) else {
            continue;
        };
        let due = d
            .get("due")
            .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v.clone()).ok());
        let entry = cycles.entry(n).or_insert(SitrepCycle {
            cycle: n,
            due,
            outcome: outcome.to_owned(),
            received_at: None,
            late_by_secs: None,
        });
        // A report outranks the miss that came before it; a repeated miss changes
        // nothing.
        if outcome != "missed" {
            entry.outcome = outcome.to_owned();
            entry.received_at = Some(a.at);
            entry.late_by_secs = d.get("late_by_secs").and_then(Value::as_i64);
        }
        if entry.due.is_none() {
            entry.due = due;
        }
    }
    let cycles: Vec<SitrepCycle> = cycles.into_values().collect();
    let count = |o: &str| cycles.iter().filter(|c| c.outcome == o).count();
    Sitreps {
        on_time: count("on-time"),
        late: count("late"),
        missed: count("missed"),
        received,
        early,
        cycles,
    }
}

/// The advice flagged in the audit, with its first transcription mark.
pub(super) fn advice(audit: &[AuditLine]) -> Vec<Advice> {
    let mut items: Vec<Advice> = Vec::new();
    let mut confirmed: BTreeSet<String> = BTreeSet::new();
    for a in audit {
        let Some(event) = a.text("event") else {
            continue;
        };
        match a.action.as_str() {
            "advice.flagged" => {
                if items.iter().any(|i| i.event == event) {
                    continue;
                }
                items.push(Advice {
                    room_key: a.text("room").unwrap_or_default(),
                    author: a.text("author").unwrap_or_default(),
                    event,
                    flagged_at: a.at,
                    flagged_by: a.actor.clone(),
                    transcribed_at: None,
                    transcribed_by: None,
                    confirmed: false,
                    took_secs: None,
                });
            }
            "advice.transcribed" | "advice.transcribed-unconfirmed" => {
                if a.action == "advice.transcribed" {
                    confirmed.insert(event.clone());
                }
                if let Some(item) = items.iter_mut().find(|i| i.event == event)
                    && item.transcribed_at.is_none()
                {
                    item.transcribed_at = Some(a.at);
                    item.transcribed_by = Some(a.actor.clone());
                    item.took_secs = Some((a.at - item.flagged_at).num_seconds());
                }
            }
            _ => {}
        }
    }
    for item in &mut items {
        item.confirmed = confirmed.contains(&item.event);
    }
    items
}
