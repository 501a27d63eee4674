//! The debrief report (`debrief.json`, `debrief.md`): what an emergency planner takes
//! to the debrief and the lessons-identified log, built when an archive is opened (or
//! by `cordon archive report`) from what the archive holds and its signed manifest
//! covers:
//!
//! | part | from |
//! |---|---|
//! | the incident, its times, commander, exercise or not | the manifest |
//! | rooms created, warnings, extensions, holds, guard alerts, people added or removed, stand-down | `audit.jsonl` |
//! | each holder invited and joined, and the time it took | the rooms' `m.room.member` events |
//! | per role, the time to the first holder's join | those, and the manifest's `roles` |
//! | METHANE versions, the decision log | the sealed command record, decrypted |
//! | SITREP compliance | `sitrep.on-time`, `sitrep.late` and `sitrep.missed` in the audit |
//! | advice flagged and transcribed, and the time it took | `advice.*` in the audit |
//! | what was outstanding at stand-down | all of the above |
//!
//! Building it never fails: a part the archive does not hold (an archive sealed before
//! the manifest listed roles, say) is empty, and the rendering says why.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::Manifest;
use super::record::EntryKind;
use super::render::Decision;
use crate::domain::transcript::TranscriptLine;

/// The format version of `debrief.json`.
pub const DEBRIEF_VERSION: u32 = 1;

/// One entry of the archive's `audit.jsonl`: the fields the debrief reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditLine {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it (a user id, or `cordon`).
    pub actor: String,
    /// What was done (`incident.extended`).
    pub action: String,
    /// The details, as canonical JSON text.
    #[serde(default)]
    pub details: String,
}

impl AuditLine {
    fn details(&self) -> Value {
        serde_json::from_str(&self.details).unwrap_or(Value::Null)
    }

    fn text(&self, key: &str) -> Option<String> {
        self.details().get(key)?.as_str().map(str::to_owned)
    }
}

/// What the debrief is built from.
pub(crate) struct Sources<'a> {
    /// The verified manifest.
    pub manifest: &'a Manifest,
    /// The archive's audit slice, in order.
    pub audit: &'a [AuditLine],
    /// Every room's exported transcript lines (only `m.room.member` events are read).
    pub transcripts: &'a [TranscriptLine],
    /// The command record's entries, opened (every kind).
    pub record: &'a [Decision<'a>],
}

/// The debrief, as `debrief.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Debrief {
    /// [`DEBRIEF_VERSION`].
    pub v: u32,
    /// The incident id.
    pub incident: String,
    /// Its name.
    pub display_name: String,
    /// Its playbook.
    pub playbook: String,
    /// A drill, not a real incident.
    pub exercise: bool,
    /// Its commander when it was declared.
    pub commander: String,
    /// The zone times are shown in (`debrief.md`); JSON times are UTC.
    pub time_zone: String,
    /// When it was declared.
    pub declared_at: DateTime<Utc>,
    /// When it would have expired.
    pub expires_at: DateTime<Utc>,
    /// When it was stood down.
    pub stood_down_at: Option<DateTime<Utc>>,
    /// Who stood it down (`cordon` at expiry).
    pub stood_down_by: Option<String>,
    /// When the archive was sealed.
    pub sealed_at: DateTime<Utc>,
    /// Everything that happened, in time order.
    pub timeline: Vec<Moment>,
    /// Every invite of a person to a room, and when they joined.
    pub arrivals: Vec<Arrival>,
    /// Per role: its holders, and the first of them to join.
    pub roles: Vec<RoleArrival>,
    /// The METHANE reports, every version.
    pub methane: Vec<Report>,
    /// The SITREP cycle's compliance.
    pub sitreps: Sitreps,
    /// The decision log.
    pub decisions: Vec<DecisionLine>,
    /// Clinical advice flagged, and its transcription.
    pub advice: Vec<Advice>,
    /// What was still open when the incident was stood down.
    pub outstanding: Outstanding,
}

/// One moment of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moment {
    /// When.
    pub at: DateTime<Utc>,
    /// What kind of moment (`declared`, `room-created`, `invited`, `joined`, `warning`,
    /// `extended`, `hold`, `hold-released`, `guard`, `stand-down`, …).
    pub kind: String,
    /// Who did it, when a person did.
    pub by: Option<String>,
    /// What happened, in words.
    pub what: String,
}

/// One person invited to one room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arrival {
    /// The playbook's room key.
    pub room_key: String,
    /// The person.
    pub user: String,
    /// The roles they held (from the manifest; empty for the commander alone).
    pub roles: Vec<String>,
    /// When cordon invited them (first invite).
    pub invited_at: DateTime<Utc>,
    /// When they first joined after it; `None` if they never did.
    pub joined_at: Option<DateTime<Utc>>,
    /// `joined_at - invited_at`, in seconds.
    pub took_secs: Option<i64>,
}

/// A role, and the first of its holders to join any room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleArrival {
    /// The role id.
    pub role: String,
    /// Its title.
    pub title: String,
    /// Everyone who held it.
    pub holders: Vec<String>,
    /// The first holder to join an incident room.
    pub first_joined_by: Option<String>,
    /// When.
    pub first_joined_at: Option<DateTime<Utc>>,
    /// Seconds from the declaration to that join.
    pub after_declared_secs: Option<i64>,
}

/// A METHANE report (one version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `METHANE v2`.
    pub label: String,
    /// When it was given.
    pub at: DateTime<Utc>,
    /// Who gave it.
    pub by: String,
    /// What is wrong with the sealed entry (it is then not to be relied on).
    pub problems: Vec<String>,
}

/// The SITREP cycle, cycle by cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sitreps {
    /// Every cycle the audit names, in order.
    pub cycles: Vec<SitrepCycle>,
    /// How many came on time.
    pub on_time: usize,
    /// How many came after the grace.
    pub late: usize,
    /// How many never came.
    pub missed: usize,
    /// SITREPs received in all (early ones included).
    pub received: usize,
    /// Of those, how many came before the first cycle was due (answering no cycle).
    pub early: usize,
}

/// One cycle of the SITREP cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SitrepCycle {
    /// Its number, from 1.
    pub cycle: u64,
    /// When it was due.
    pub due: Option<DateTime<Utc>>,
    /// `on-time`, `late` or `missed`.
    pub outcome: String,
    /// When the SITREP for it came.
    pub received_at: Option<DateTime<Utc>>,
    /// How late, in seconds after the due time, when it came late.
    pub late_by_secs: Option<i64>,
}

/// One decision, as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionLine {
    /// `D3`.
    pub label: String,
    /// When it was decided.
    pub decided_at: DateTime<Utc>,
    /// When it was logged.
    pub logged_at: DateTime<Utc>,
    /// Who decided.
    pub decided_by: String,
    /// Who logged it.
    pub logged_by: String,
    /// What was decided; `None` when the entry could not be opened.
    pub text: Option<String>,
    /// Why.
    pub because: Option<String>,
    /// The decision it corrects (`D1`).
    pub corrects: Option<String>,
    /// The decisions that correct it.
    pub corrected_by: Vec<String>,
    /// What is wrong with the sealed entry.
    pub problems: Vec<String>,
}

/// One item of clinical advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// The room it was given in.
    pub room_key: String,
    /// The message's event id.
    pub event: String,
    /// Who wrote it.
    pub author: String,
    /// When it was flagged as advice.
    pub flagged_at: DateTime<Utc>,
    /// Who flagged it.
    pub flagged_by: String,
    /// When it was first marked transcribed (by command or reaction).
    pub transcribed_at: Option<DateTime<Utc>>,
    /// Who marked it.
    pub transcribed_by: Option<String>,
    /// Confirmed with `!cordon transcribed` (a ✅ reaction alone is not).
    pub confirmed: bool,
    /// `transcribed_at - flagged_at`, in seconds.
    pub took_secs: Option<i64>,
}

/// What was still open at stand-down.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outstanding {
    /// Advice never marked transcribed (event ids).
    pub advice: Vec<String>,
    /// Advice marked only by a ✅ reaction, never confirmed.
    pub advice_unconfirmed: Vec<String>,
    /// People invited who never joined (`user` in `room`).
    pub never_joined: Vec<String>,
    /// SITREP cycles that never got one.
    pub sitreps_missed: Vec<u64>,
    /// True when no METHANE report was given.
    pub no_methane: bool,
}

/// Builds the debrief from `sources`.
pub(crate) fn build(sources: &Sources<'_>) -> Debrief {
    let m = sources.manifest;
    let audit = sources.audit;
    let end = m.stood_down_at.unwrap_or(m.sealed_at);
    let moment = parts::moment;
    let mut timeline: Vec<Moment> = audit
        .iter()
        .filter_map(|a| parts::moment_of(m, a))
        .collect();
    // A notice audited again after a crash between its audit and its send shows once.
    timeline.dedup_by(|later, earlier| {
        matches!(earlier.kind.as_str(), "sitrep-missed" | "warning")
            && later.kind == earlier.kind
            && later.what == earlier.what
    });

    let arrivals = arrivals(m, sources.transcripts);
    // Each person's first invite and first join, across rooms.
    let mut firsts: BTreeMap<&str, InviteAndJoin> = BTreeMap::new();
    for a in &arrivals {
        let e = firsts.entry(&a.user).or_insert((a.invited_at, a.joined_at));
        e.0 = e.0.min(a.invited_at);
        e.1 = match (e.1, a.joined_at) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
    }
    for (user, (invited, joined)) in &firsts {
        timeline.push(moment(*invited, "invited", None, format!("{user} invited")));
        if let Some(joined) = joined {
            timeline.push(moment(
                *joined,
                "joined",
                Some(*user),
                format!(
                    "{user} joined, {} after the first invite",
                    span((*joined - *invited).num_seconds())
                ),
            ));
        }
    }
    for d in sources.record {
        let (kind, what) = match d.record.kind {
            EntryKind::Methane => ("methane", format!("{} given", d.label())),
            EntryKind::Decision => (
                "decision",
                match d.corrects() {
                    Some(n) => format!(
                        "{} logged (corrects {})",
                        d.label(),
                        EntryKind::Decision.label(n)
                    ),
                    None => format!("{} logged", d.label()),
                },
            ),
            EntryKind::Sitrep => ("sitrep", format!("{} received", d.label())),
        };
        timeline.push(moment(d.logged_at(), kind, Some(d.logged_by()), what));
    }
    timeline.sort_by(|a, b| {
        a.at.cmp(&b.at)
            .then_with(|| rank(&a.kind).cmp(&rank(&b.kind)))
    });

    let roles = m
        .roles
        .iter()
        .map(|role| {
            let first = arrivals
                .iter()
                .filter(|a| role.holders.contains(&a.user))
                .filter_map(|a| Some((a.joined_at?, a.user.clone())))
                .min();
            RoleArrival {
                role: role.id.clone(),
                title: role.title.clone(),
                holders: role.holders.clone(),
                first_joined_by: first.as_ref().map(|(_, u)| u.clone()),
                first_joined_at: first.as_ref().map(|(at, _)| *at),
                after_declared_secs: first.map(|(at, _)| (at - m.declared_at).num_seconds()),
            }
        })
        .collect();

    let methane: Vec<Report> = sources
        .record
        .iter()
        .filter(|d| d.record.kind == EntryKind::Methane)
        .map(|d| Report {
            label: d.label(),
            at: d.logged_at(),
            by: d.logged_by().to_owned(),
            problems: d.problems.clone(),
        })
        .collect();
    let decisions = sources
        .record
        .iter()
        .filter(|d| d.record.kind == EntryKind::Decision)
        .map(|d| DecisionLine {
            label: d.label(),
            decided_at: d.decided_at(),
            logged_at: d.logged_at(),
            decided_by: d.decided_by().to_owned(),
            logged_by: d.logged_by().to_owned(),
            text: d.entry.as_ref().map(|e| e.text.clone()),
            because: d.entry.as_ref().and_then(|e| e.because.clone()),
            corrects: d.corrects().map(|n| EntryKind::Decision.label(n)),
            corrected_by: d
                .corrected_by
                .iter()
                .map(|n| EntryKind::Decision.label(*n))
                .collect(),
            problems: d.problems.clone(),
        })
        .collect();
    let received = sources
        .record
        .iter()
        .filter(|d| d.record.kind == EntryKind::Sitrep)
        .count();
    let sitreps = parts::sitreps(audit, received);
    let advice = parts::advice(audit);

    let outstanding = Outstanding {
        advice: advice
            .iter()
            .filter(|a| a.transcribed_at.is_none_or(|t| t > end))
            .map(|a| a.event.clone())
            .collect(),
        advice_unconfirmed: advice
            .iter()
            .filter(|a| a.transcribed_at.is_some_and(|t| t <= end) && !a.confirmed)
            .map(|a| a.event.clone())
            .collect(),
        never_joined: arrivals
            .iter()
            .filter(|a| a.joined_at.is_none_or(|t| t > end))
            .map(|a| format!("{} in {}", a.user, a.room_key))
            .collect(),
        sitreps_missed: sitreps
            .cycles
            .iter()
            .filter(|c| c.outcome == "missed")
            .map(|c| c.cycle)
            .collect(),
        no_methane: methane.is_empty(),
    };

    Debrief {
        v: DEBRIEF_VERSION,
        incident: m.incident.clone(),
        display_name: m.display_name.clone(),
        playbook: m.playbook.clone(),
        exercise: m.exercise,
        commander: m.commander.clone(),
        time_zone: m.time_zone.clone().unwrap_or_else(|| "UTC".to_owned()),
        declared_at: m.declared_at,
        expires_at: m.expires_at,
        stood_down_at: m.stood_down_at,
        stood_down_by: m.stood_down_by.clone(),
        sealed_at: m.sealed_at,
        timeline,
        arrivals,
        roles,
        methane,
        sitreps,
        decisions,
        advice,
        outstanding,
    }
}

/// Orders moments of the same second: the declaration first, the stand-down last.
fn rank(kind: &str) -> u8 {
    match kind {
        "declared" => 0,
        "room-created" => 1,
        "invited" => 2,
        "joined" => 3,
        "stand-down" => 8,
        "frozen" => 9,
        _ => 5,
    }
}

/// When a person was first invited to a room, and first joined it after that.
type InviteAndJoin = (DateTime<Utc>, Option<DateTime<Utc>>);

/// Every invite in the transcripts, with the first join after it.
fn arrivals(m: &Manifest, transcripts: &[TranscriptLine]) -> Vec<Arrival> {
    // (room, user) -> (first invite, first join after it)
    let mut seen: BTreeMap<(String, String), InviteAndJoin> = BTreeMap::new();
    let mut lines: Vec<&TranscriptLine> = transcripts
        .iter()
        .filter(|l| l.event_type == "m.room.member")
        .collect();
    lines.sort_by_key(|l| l.origin_server_ts);
    for line in lines {
        let (Some(user), Some(at)) = (
            line.state_key.as_deref(),
            DateTime::from_timestamp_millis(line.origin_server_ts),
        ) else {
            continue;
        };
        let membership = line
            .content
            .as_ref()
            .and_then(|c| c.get("membership"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let key = (line.room_key.clone(), user.to_owned());
        match membership {
            "invite" => {
                seen.entry(key).or_insert((at, None));
            }
            "join" => {
                if let Some(e) = seen.get_mut(&key)
                    && e.1.is_none()
                {
                    e.1 = Some(at);
                }
            }
            _ => {}
        }
    }
    let roles_of = |user: &str| -> Vec<String> {
        m.roles
            .iter()
            .filter(|r| r.holders.iter().any(|h| h == user))
            .map(|r| r.id.clone())
            .collect()
    };
    let position = |key: &str| {
        m.rooms
            .iter()
            .position(|r| r.key == key)
            .unwrap_or(usize::MAX)
    };
    let mut out: Vec<Arrival> = seen
        .into_iter()
        .map(|((room_key, user), (invited_at, joined_at))| Arrival {
            roles: roles_of(&user),
            took_secs: joined_at.map(|j| (j - invited_at).num_seconds()),
            room_key,
            user,
            invited_at,
            joined_at,
        })
        .collect();
    out.sort_by(|a, b| {
        position(&a.room_key)
            .cmp(&position(&b.room_key))
            .then(a.invited_at.cmp(&b.invited_at))
            .then(a.user.cmp(&b.user))
    });
    out
}

/// A duration in seconds as people read it: `45s`, `3m 05s`, `2h 04m`.
pub(crate) fn span(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    if s < 60 {
        format!("{sign}{s}s")
    } else if s < 3600 {
        format!("{sign}{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{sign}{}h {:02}m", s / 3600, (s % 3600) / 60)
    }
}

mod parts;
#[cfg(test)]
mod tests;
