//! The debrief built from a scripted incident's manifest, audit and membership events.

use chrono::TimeDelta;
use serde_json::json;

use super::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T14:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

fn manifest() -> Manifest {
    let counts = serde_json::to_value(crate::archive::Counts::default()).unwrap();
    serde_json::from_value(json!({
        "v": 4,
        "incident": "mc-4k7p",
        "display_name": "Tram crash",
        "playbook": "mass-casualty",
        "commander": "@ic:hs",
        "declared_at": t0(),
        "expires_at": at(86_400),
        "stood_down_at": at(7_200),
        "stood_down_by": "@ic:hs",
        "sealed_at": at(7_230),
        "server_name": "hs",
        "time_zone": "Europe/London",
        "exercise": true,
        "cordon_version": "0",
        "signing_key": "ed25519:x",
        "rooms": [
            { "key": "command", "room_id": "!c:hs", "name": "Command", "file": "rooms/command.jsonl",
              "sha256": "", "bytes": 0, "counts": counts.clone() },
            { "key": "ed", "room_id": "!e:hs", "name": "ED", "file": "rooms/ed.jsonl",
              "sha256": "", "bytes": 0, "counts": counts }
        ],
        "media": [], "pre_seal": [],
        "roles": [
            { "id": "ed-lead", "title": "ED lead", "holders": ["@a:hs", "@late:hs"] },
            { "id": "loggist", "title": "Loggist", "holders": ["@never:hs"] }
        ],
        "audit": { "file": "audit.jsonl", "sha256": "", "entries": 0 },
        "renderings": []
    }))
    .unwrap()
}

fn audit(secs: i64, actor: &str, action: &str, details: serde_json::Value) -> AuditLine {
    AuditLine {
        at: at(secs),
        actor: actor.into(),
        action: action.into(),
        details: details.to_string(),
    }
}

fn member(room: &str, user: &str, membership: &str, secs: i64) -> TranscriptLine {
    serde_json::from_value(json!({
        "v": 1, "source": "export", "event_id": format!("${room}-{user}-{membership}-{secs}"),
        "room_id": format!("!{room}:hs"), "room_key": room, "sender": "@cordon:hs",
        "origin_server_ts": at(secs).timestamp_millis(), "type": "m.room.member",
        "state_key": user, "content": { "membership": membership }
    }))
    .unwrap()
}

fn scripted() -> Debrief {
    let m = manifest();
    let audit = vec![
        audit(
            0,
            "@ic:hs",
            "incident.declared",
            json!({ "playbook": "mass-casualty" }),
        ),
        audit(
            2,
            "cordon",
            "room.created",
            json!({ "key": "command", "name": "Command" }),
        ),
        audit(
            3,
            "cordon",
            "room.created",
            json!({ "key": "ed", "name": "ED" }),
        ),
        audit(
            600,
            "@a:hs",
            "advice.flagged",
            json!({ "room": "ed", "event": "$adv1", "author": "@a:hs" }),
        ),
        audit(
            700,
            "@a:hs",
            "advice.flagged",
            json!({ "room": "ed", "event": "$adv2", "author": "@late:hs" }),
        ),
        audit(
            1_500,
            "@ic:hs",
            "advice.transcribed",
            json!({ "room": "ed", "event": "$adv1" }),
        ),
        audit(
            1_800,
            "@a:hs",
            "sitrep.on-time",
            json!({ "cycle": 1, "due": at(1_800) }),
        ),
        audit(
            4_200,
            "cordon",
            "sitrep.missed",
            json!({ "cycle": 2, "due": at(3_600) }),
        ),
        // The same miss audited again after a crash: still one cycle, one moment.
        audit(
            4_201,
            "cordon",
            "sitrep.missed",
            json!({ "cycle": 2, "due": at(3_600) }),
        ),
        audit(
            4_500,
            "@a:hs",
            "sitrep.late",
            json!({ "cycle": 2, "due": at(3_600), "late_by_secs": 900 }),
        ),
        audit(
            6_000,
            "cordon",
            "sitrep.missed",
            json!({ "cycle": 3, "due": at(5_400) }),
        ),
        audit(
            5_000,
            "cordon",
            "incident.warned",
            json!({ "left_secs": 1_800 }),
        ),
        audit(
            5_100,
            "@ic:hs",
            "incident.extended",
            json!({ "event": { "event": "extended", "new_expiry": at(90_000) } }),
        ),
        audit(
            5_200,
            "cordon",
            "guard.banned",
            json!({ "room_key": "ed", "user": "@intruder:hs" }),
        ),
        audit(
            800,
            "cordon",
            "pid.nudged",
            json!({ "room": "ed", "sender": "@a:hs", "event": "$m", "found": ["nhs-number"] }),
        ),
        audit(7_200, "@ic:hs", "incident.stand-down", json!({})),
        // Transcribed after the stand-down: still outstanding at it.
        audit(
            7_300,
            "@a:hs",
            "advice.transcribed-unconfirmed",
            json!({ "room": "ed", "event": "$adv2" }),
        ),
    ];
    let transcripts = vec![
        member("command", "@cordon:hs", "join", 1),
        member("command", "@a:hs", "invite", 10),
        member("ed", "@a:hs", "invite", 12),
        member("ed", "@late:hs", "invite", 12),
        member("command", "@a:hs", "join", 70),
        member("ed", "@a:hs", "join", 75),
        member("ed", "@late:hs", "join", 900),
        member("ed", "@late:hs", "leave", 950),
        member("ed", "@late:hs", "join", 990),
        member("command", "@never:hs", "invite", 10),
    ];
    build(&Sources {
        manifest: &m,
        audit: &audit,
        transcripts: &transcripts,
        record: &[],
    })
}

#[test]
fn every_invite_has_its_join_and_the_time_it_took() {
    let d = scripted();
    let find = |room: &str, user: &str| {
        d.arrivals
            .iter()
            .find(|a| a.room_key == room && a.user == user)
            .unwrap()
    };
    assert_eq!(find("command", "@a:hs").took_secs, Some(60));
    assert_eq!(find("ed", "@a:hs").took_secs, Some(63));
    // The first join after the invite counts, not a later rejoin.
    assert_eq!(find("ed", "@late:hs").joined_at, Some(at(900)));
    assert_eq!(find("command", "@never:hs").joined_at, None);
    // cordon's own join is not an arrival: nobody invited it.
    assert!(d.arrivals.iter().all(|a| a.user != "@cordon:hs"));
    // Rooms in playbook order.
    assert_eq!(d.arrivals[0].room_key, "command");
    assert_eq!(find("ed", "@late:hs").roles, vec!["ed-lead".to_owned()]);
}

#[test]
fn each_role_has_its_first_join_counted_from_the_declaration() {
    let d = scripted();
    let ed = d.roles.iter().find(|r| r.role == "ed-lead").unwrap();
    assert_eq!(ed.first_joined_by.as_deref(), Some("@a:hs"));
    assert_eq!(ed.after_declared_secs, Some(70));
    let loggist = d.roles.iter().find(|r| r.role == "loggist").unwrap();
    assert_eq!(loggist.first_joined_at, None);
}

#[test]
fn sitrep_cycles_are_on_time_late_or_missed_once_each() {
    let d = scripted();
    let outcomes: Vec<(u64, &str)> = d
        .sitreps
        .cycles
        .iter()
        .map(|c| (c.cycle, c.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [(1, "on-time"), (2, "late"), (3, "missed")]);
    assert_eq!(
        (d.sitreps.on_time, d.sitreps.late, d.sitreps.missed),
        (1, 1, 1)
    );
    assert_eq!(d.sitreps.cycles[1].late_by_secs, Some(900));
    assert_eq!(d.outstanding.sitreps_missed, [3]);
    let missed = d
        .timeline
        .iter()
        .filter(|m| m.kind == "sitrep-missed")
        .count();
    assert_eq!(
        missed, 2,
        "cycle 2's repeated miss shows once, cycle 3's once"
    );
}

#[test]
fn advice_has_its_time_to_transcribe_and_what_was_open_at_stand_down() {
    let d = scripted();
    assert_eq!(d.advice.len(), 2);
    assert_eq!(d.advice[0].took_secs, Some(900));
    assert!(d.advice[0].confirmed);
    assert_eq!(d.advice[0].transcribed_by.as_deref(), Some("@ic:hs"));
    assert_eq!(d.outstanding.advice, ["$adv2"]);
    assert!(
        d.outstanding
            .never_joined
            .contains(&"@never:hs in command".to_owned())
    );
    assert!(d.outstanding.no_methane);
}

#[test]
fn the_timeline_runs_in_order_from_declaration_to_stand_down() {
    let d = scripted();
    assert_eq!(d.timeline.first().unwrap().kind, "declared");
    assert!(d.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    for kind in [
        "room-created",
        "invited",
        "joined",
        "warning",
        "extended",
        "guard",
        "stand-down",
        "advice",
    ] {
        assert!(
            d.timeline.iter().any(|m| m.kind == kind),
            "no {kind}: {:#?}",
            d.timeline
        );
    }
    let joined = d.timeline.iter().find(|m| m.kind == "joined").unwrap();
    assert_eq!(joined.at, at(70), "a person's first join across rooms");
    assert!(
        joined.what.contains("1m 00s after the first invite"),
        "{}",
        joined.what
    );
    let extended = d.timeline.iter().find(|m| m.kind == "extended").unwrap();
    assert_eq!(
        extended.what,
        "Extended: now expires 2026-12-05 15:00:00 UTC"
    );
    let guard = d.timeline.iter().find(|m| m.kind == "guard").unwrap();
    assert!(guard.what.contains("@intruder:hs in ed"), "{}", guard.what);
}

#[test]
fn the_rendering_says_exercise_and_shows_local_times() {
    let d = scripted();
    assert!(d.exercise);
    let md = crate::archive::render::debrief_rendering(&d, chrono_tz::Europe::London);
    assert!(md.starts_with("# EXERCISE debrief: Tram crash"), "{md}");
    assert!(md.contains("| T+0:01:10 | 14:01:10 |"), "{md}");
    assert!(md.contains("On time: 1. Late: 1. Missed: 1."), "{md}");
    assert!(
        md.contains("Received in all: 0 (0 before any was due)"),
        "{md}"
    );
    assert!(
        md.contains("| ED lead (ed-lead) | 2 | @a:hs | 14:01:10 | 1m 10s |"),
        "{md}"
    );
    assert!(
        md.contains("Advice never marked transcribed: \\$adv2"),
        "{md}"
    );
    assert!(md.contains("No METHANE report was given"), "{md}");
    assert!(
        md.contains("- Notices about patient identifiers in messages: 1"),
        "{md}"
    );
    assert!(
        md.contains("Notice to @a:hs: patient identifiers \\(nhs-number\\) in a message in ed"),
        "{md}"
    );
}

#[test]
fn durations_read_naturally() {
    assert_eq!(span(45), "45s");
    assert_eq!(span(185), "3m 05s");
    assert_eq!(span(7_440), "2h 04m");
}
