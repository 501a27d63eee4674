//! The durable timers an incident runs on, planned from the incident and its playbook.
//! Pure: the bot arms what this returns ([`crate::schedule::SchedulerHandle::arm`]) and
//! runs their jobs (`bot::jobs`).
//!
//! | timer id | kind | fires |
//! |---|---|---|
//! | `<id>/expiry` | expiry | at `expires_at`: automatic stand-down |
//! | `<id>/warn/<secs>` | warning | `secs` before `expires_at`, for each `warn_before` |
//! | `<id>/reminder/<room>/<n>` | reminder | on the room's `n`-th cron schedule |
//! | `<id>/sweep/<room>` | sweep | when the room's oldest unredacted message reaches the window (re-armed by each sweep) |
//! | `<id>/briefing/<room>` | briefing | shortly before the pinned briefing reaches the window (re-armed by each re-post) |
//! | `<id>/advice/<event>` | `advice-reminder` | shortly before flagged advice reaches the window |
//! | `<id>/provision` | `provision` | at `declare` (and `retry`, and every start while provisioning): the provisioning pipeline |
//! | `<id>/standdown` | `standdown` | at `standdown` or expiry (and `release`, `retry`, every start while unfinished): the stand-down pipeline |
//! | `<id>/keep-time-end` | keep-time-end | when the sealed archive's keep time ends |
//!
//! Ids are stable, so arming again after a restart is idempotent, and an extension
//! re-arms the same expiry and warning timers with their new times.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::{Incident, IncidentId};
use crate::domain::schedule::catch_up::DEADLINE_KEY;
use crate::domain::schedule::{Backoff, Schedule, Timer, TimerKind};
use crate::input::playbook::Playbook;

/// The kind name of the timer that reminds the author of untranscribed advice.
pub const ADVICE_KIND: &str = "advice-reminder";

/// The kind of the timer that drives the stand-down pipeline.
pub const STANDDOWN_KIND: &str = "standdown";

/// The kind of the timer that posts a command-record entry (a decision) in the command
/// room, should the post right after recording it not happen (a crash, the homeserver
/// away).
pub const RECORD_POST_KIND: &str = "record-post";

/// How long after recording an entry its post timer is due: the post is made at once,
/// and the timer only picks up one that was not.
pub const RECORD_POST_FALLBACK: Duration = Duration::from_secs(30);

/// The kind of the timer that drives the provisioning pipeline.
pub const PROVISION_KIND: &str = "provision";

/// The longest lead before the window that the briefing re-post and the advice
/// reminder keep: a tenth of the window, at most this.
const MAX_LEAD: Duration = Duration::from_secs(15 * 60);

/// The expiry timer's id.
pub fn expiry_id(id: &IncidentId) -> String {
    format!("{}/expiry", id.as_str())
}

/// The id of the timer that stands an incident down after the grace it was given when
/// its expiry passed while cordon was down.
pub fn expiry_grace_id(id: &IncidentId) -> String {
    format!("{}/expiry-grace", id.as_str())
}

/// The grace timer: an expiry at `until`.
pub fn expiry_grace(id: &IncidentId, until: DateTime<Utc>) -> Timer {
    at(expiry_grace_id(id), id, TimerKind::Expiry, until, json!({}))
}

/// The id of the warning `before` the expiry.
pub fn warning_id(id: &IncidentId, before: Duration) -> String {
    format!("{}/warn/{}", id.as_str(), before.as_secs())
}

/// The prefix of every warning timer's id of the incident.
pub fn warning_prefix(id: &IncidentId) -> String {
    format!("{}/warn/", id.as_str())
}

/// The id of a room's retention sweep timer.
pub fn sweep_id(id: &IncidentId, room: &str) -> String {
    format!("{}/sweep/{room}", id.as_str())
}

/// The id of a room's `n`-th reminder (0-based, in playbook order).
pub fn reminder_id(id: &IncidentId, room: &str, n: usize) -> String {
    format!("{}/reminder/{room}/{n}", id.as_str())
}

/// The id of a room's briefing re-post timer.
pub fn briefing_id(id: &IncidentId, room: &str) -> String {
    format!("{}/briefing/{room}", id.as_str())
}

/// The id of the reminder about one flagged advice message.
pub fn advice_id(id: &IncidentId, event: &str) -> String {
    format!("{}/advice/{event}", id.as_str())
}

/// The kind of the timer that reminds the commander that a METHANE report is due
/// (`methane: required`).
pub const METHANE_KIND: &str = "methane-reminder";

/// How long after declaring the first METHANE reminder comes, and then how often.
pub const METHANE_FIRST: Duration = Duration::from_secs(5 * 60);
/// How often the METHANE reminder repeats until a report is given.
pub const METHANE_EVERY: Duration = Duration::from_secs(10 * 60);

/// The METHANE reminder of `incident`, due at `due`.
pub fn methane_reminder(incident: &IncidentId, due: DateTime<Utc>) -> Timer {
    at(
        format!("{}/methane", incident.as_str()),
        incident,
        TimerKind::Other(METHANE_KIND.to_owned()),
        due,
        serde_json::Value::Null,
    )
}

/// The kind of the timer that asks for the `n`-th SITREP when it is due.
pub const SITREP_DUE_KIND: &str = "sitrep-due";
/// The kind of the timer that raises the `n`-th SITREP when it has not come by the
/// end of its grace.
pub const SITREP_GRACE_KIND: &str = "sitrep-grace";

/// The timer that asks for SITREP `n` at `due`.
pub fn sitrep_due(incident: &IncidentId, n: u32, due: DateTime<Utc>) -> Timer {
    at(
        format!("{}/sitrep/{n}", incident.as_str()),
        incident,
        TimerKind::Other(SITREP_DUE_KIND.to_owned()),
        due,
        serde_json::json!({ "cycle": n }),
    )
}

/// The timer that raises SITREP `n` if it has not come by `due`.
pub fn sitrep_grace(incident: &IncidentId, n: u32, due: DateTime<Utc>) -> Timer {
    at(
        format!("{}/sitrep/{n}/grace", incident.as_str()),
        incident,
        TimerKind::Other(SITREP_GRACE_KIND.to_owned()),
        due,
        serde_json::json!({ "cycle": n }),
    )
}

/// The id of the timer that posts entry `label` (`D3`) of `incident`'s record.
pub fn record_post_id(incident: &IncidentId, label: &str) -> String {
    format!("{}/record/{label}", incident.as_str())
}

/// The timer that posts entry `number` of `kind` if it is not posted by `due`.
pub fn record_post(
    incident: &IncidentId,
    kind: crate::domain::record::EntryKind,
    number: u32,
    due: DateTime<Utc>,
) -> Timer {
    at(
        record_post_id(incident, &kind.label(number)),
        incident,
        TimerKind::Other(RECORD_POST_KIND.to_owned()),
        due,
        serde_json::json!({ "kind": kind, "number": number }),
    )
}

/// How long before a message reaches the retention window its re-post (the briefing)
/// or its reminder (untranscribed advice) comes: a tenth of the window, at most 15
/// minutes.
pub fn lead(window: Duration) -> Duration {
    (window / 10).min(MAX_LEAD)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn at(
    id: String,
    incident: &IncidentId,
    kind: TimerKind,
    due: DateTime<Utc>,
    payload: serde_json::Value,
) -> Timer {
    Timer {
        id,
        incident: Some(incident.clone()),
        kind,
        schedule: Schedule::At(due),
        payload,
        last_fired: None,
    }
}

/// The id of the timer that drives the incident's provisioning pipeline.
pub fn provision_id(id: &IncidentId) -> String {
    format!("{}/provision", id.as_str())
}

/// The provisioning pipeline's timer, due `due` (now, to run it at once). The scheduler
/// retries it with [`provision_backoff`] until the incident is active or failed.
pub fn provision(incident: &IncidentId, due: DateTime<Utc>) -> Timer {
    at(
        provision_id(incident),
        incident,
        TimerKind::Other(PROVISION_KIND.to_owned()),
        due,
        json!({}),
    )
}

/// The wait after a failed provisioning attempt: 2 s, doubling, at most 30 s. Shorter
/// than other jobs' (5 s to 5 min): a commander is waiting for the rooms, and an
/// outage of the homeserver is waited out attempt after attempt.
pub fn provision_backoff() -> Backoff {
    Backoff {
        base: TimeDelta::seconds(2),
        cap: TimeDelta::seconds(30),
    }
}

/// The id of the timer that drives the incident's stand-down pipeline.
pub fn standdown_id(id: &IncidentId) -> String {
    format!("{}/standdown", id.as_str())
}

/// The id of the timer that deletes the sealed archive once its keep time ends.
pub fn keep_time_end_id(id: &IncidentId) -> String {
    format!("{}/keep-time-end", id.as_str())
}

/// The stand-down pipeline's timer, due `due` (now, to run it at once). The scheduler
/// retries it with backoff until the pipeline has finished or stopped on a failure.
pub fn standdown(incident: &IncidentId, due: DateTime<Utc>) -> Timer {
    at(
        standdown_id(incident),
        incident,
        TimerKind::Other(STANDDOWN_KIND.to_owned()),
        due,
        json!({}),
    )
}

/// The timer that deletes the sealed archive at the end of its keep time.
pub fn keep_time_end(incident: &IncidentId, due: DateTime<Utc>) -> Timer {
    at(
        keep_time_end_id(incident),
        incident,
        TimerKind::KeepTimeEnd,
        due,
        json!({}),
    )
}

/// The expiry timer at the incident's current `expires_at`.
pub fn expiry(incident: &Incident) -> Timer {
    at(
        expiry_id(&incident.id),
        &incident.id,
        TimerKind::Expiry,
        incident.expires_at,
        json!({}),
    )
}

/// The warnings before the incident's current `expires_at` whose mark is still ahead of
/// `now` (one whose mark has passed would only repeat what the commander was just
/// told), longest first.
pub fn warnings(incident: &Incident, playbook: &Playbook, now: DateTime<Utc>) -> Vec<Timer> {
    playbook
        .duration
        .warn_before
        .iter()
        .filter_map(|before| {
            let mark = incident.expires_at.checked_sub_signed(delta(*before))?;
            (mark > now).then(|| {
                at(
                    warning_id(&incident.id, *before),
                    &incident.id,
                    TimerKind::Warning,
                    mark,
                    json!({
                        DEADLINE_KEY: incident.expires_at,
                        "before_secs": before.as_secs(),
                    }),
                )
            })
        })
        .collect()
}

/// Every room's cron reminders, in the playbook's order, in time zone `tz` (an IANA
/// name).
pub fn reminders(incident: &Incident, playbook: &Playbook, tz: &str) -> Vec<Timer> {
    let mut out = Vec::new();
    for room in &playbook.rooms {
        for (n, reminder) in room.reminders.iter().enumerate() {
            out.push(Timer {
                id: reminder_id(&incident.id, &room.key, n),
                incident: Some(incident.id.clone()),
                kind: TimerKind::Reminder,
                schedule: Schedule::Cron {
                    expr: reminder.schedule.source().to_owned(),
                    tz: tz.to_owned(),
                },
                payload: json!({ "room": room.key, "index": n }),
                last_fired: None,
            });
        }
    }
    out
}

/// A room's sweep timer, due at `due`.
pub fn sweep(incident: &IncidentId, room: &str, due: DateTime<Utc>) -> Timer {
    at(
        sweep_id(incident, room),
        incident,
        TimerKind::Sweep,
        due,
        json!({ "room": room }),
    )
}

/// A room's first sweep: no message can reach the window before the incident has run
/// for the window's length.
pub fn first_sweep(incident: &Incident, playbook: &Playbook, room: &str) -> Timer {
    let due = incident
        .declared_at
        .checked_add_signed(delta(playbook.retention.messages))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    sweep(&incident.id, room, due)
}

/// The re-post of a room's briefing that was posted (at the latest) at `posted_at`:
/// due [`lead`] before it reaches the window. `generation` counts the re-posts (the
/// briefing posted at declaration is generation 0); `pinned` is the event it replaces.
pub fn briefing(
    incident: &IncidentId,
    room: &str,
    posted_at: DateTime<Utc>,
    window: Duration,
    generation: u64,
    pinned: Option<&str>,
) -> Timer {
    let due = posted_at
        .checked_add_signed(delta(window.saturating_sub(lead(window))))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    at(
        briefing_id(incident, room),
        incident,
        TimerKind::Briefing,
        due,
        json!({ "room": room, "generation": generation, "pinned": pinned }),
    )
}

/// The reminder to the author of advice sent at `sent_at` in `room`, due [`lead`]
/// before the message reaches the window.
pub fn advice(
    incident: &IncidentId,
    room: &str,
    event: &str,
    sent_at: DateTime<Utc>,
    window: Duration,
) -> Timer {
    let due = sent_at
        .checked_add_signed(delta(window.saturating_sub(lead(window))))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    at(
        advice_id(incident, event),
        incident,
        TimerKind::Other(ADVICE_KIND.to_owned()),
        due,
        json!({ "room": room, "event": event }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::incident::NewIncident;

    const PLAYBOOK: &str = r#"
id: t
title: T
trigger: { allowed: ["@a:x.org"] }
duration: { max: 4h, warn_before: [2h, 30m], extend_max: 4h }
retention: { messages: 1h }
roles:
  r: { title: R, holders: ["@a:x.org"] }
rooms:
  - key: one
    name: One
    members: [r]
    reminders:
      - { cron: "*/30 * * * *", text: "Transcribe." }
      - { cron: "0 * * * *", text: "Hourly." }
  - key: two
    name: Two
    members: [r]
archive:
  recipients: [age1f9lzzkp4457eaurqlcg72w5ud3jlkm8dpwjxgc6mq2a0xlnugyesm7vw6a]
"#;

    fn playbook() -> Playbook {
        crate::input::playbook::load_str(std::path::Path::new("t.yaml"), PLAYBOOK).unwrap()
    }

    fn incident(declared: DateTime<Utc>) -> Incident {
        Incident::new(
            IncidentId::parse("mc-4k7p").unwrap(),
            NewIncident {
                playbook: "t".into(),
                display_name: "Tram".into(),
                control_room: "!c:x.org".into(),
                commander: "@a:x.org".into(),
                expires_at: declared + TimeDelta::hours(4),
                exercise: false,
            },
            declared,
        )
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn warnings_fall_before_the_expiry_and_carry_its_deadline() {
        let i = incident(t0());
        let w = warnings(&i, &playbook(), t0());
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].id, "mc-4k7p/warn/7200");
        assert_eq!(w[0].schedule, Schedule::At(t0() + TimeDelta::hours(2)));
        assert_eq!(w[1].schedule, Schedule::At(t0() + TimeDelta::minutes(210)));
        assert_eq!(
            w[1].payload[DEADLINE_KEY],
            serde_json::to_value(i.expires_at).unwrap()
        );
    }

    #[test]
    fn a_warning_whose_mark_has_passed_is_not_planned() {
        let i = incident(t0());
        let later = t0() + TimeDelta::hours(3);
        let w = warnings(&i, &playbook(), later);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].id, "mc-4k7p/warn/1800");
        assert!(warnings(&i, &playbook(), i.expires_at).is_empty());
    }

    #[test]
    fn reminders_are_cron_timers_per_room_in_the_zone() {
        let r = reminders(&incident(t0()), &playbook(), "Europe/London");
        let ids: Vec<&str> = r.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["mc-4k7p/reminder/one/0", "mc-4k7p/reminder/one/1"]);
        assert_eq!(
            r[0].schedule,
            Schedule::Cron {
                expr: "*/30 * * * *".into(),
                tz: "Europe/London".into()
            }
        );
    }

    #[test]
    fn provisioning_runs_when_due_and_waits_two_seconds_doubling_to_thirty() {
        let id = IncidentId::parse("mc-4k7p").unwrap();
        let p = provision(&id, t0());
        assert_eq!(p.id, "mc-4k7p/provision");
        assert_eq!(p.kind, TimerKind::Other(PROVISION_KIND.into()));
        assert_eq!(p.schedule, Schedule::At(t0()));
        let waits: Vec<i64> = (1..=6)
            .map(|n| provision_backoff().delay(n).num_seconds())
            .collect();
        assert_eq!(waits, vec![2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn the_first_sweep_comes_a_window_after_declaration() {
        let s = first_sweep(&incident(t0()), &playbook(), "two");
        assert_eq!(s.id, "mc-4k7p/sweep/two");
        assert_eq!(s.schedule, Schedule::At(t0() + TimeDelta::hours(1)));
    }

    #[test]
    fn the_briefing_and_advice_come_a_lead_before_the_window() {
        let id = IncidentId::parse("mc-4k7p").unwrap();
        let window = Duration::from_secs(3600);
        assert_eq!(lead(window), Duration::from_secs(360));
        assert_eq!(
            lead(Duration::from_secs(12 * 3600)),
            Duration::from_secs(900)
        );
        let b = briefing(&id, "one", t0(), window, 1, Some("$e"));
        assert_eq!(b.schedule, Schedule::At(t0() + TimeDelta::minutes(54)));
        assert_eq!(b.payload["generation"], 1);
        let a = advice(&id, "one", "$adv", t0(), window);
        assert_eq!(a.id, "mc-4k7p/advice/$adv");
        assert_eq!(a.kind, TimerKind::Other(ADVICE_KIND.into()));
        assert_eq!(a.schedule, Schedule::At(t0() + TimeDelta::minutes(54)));
    }
}
