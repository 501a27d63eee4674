//! Exercises and the debrief report against the real Synapse: an exercise says so in
//! every room name, topic and message, takes no legal hold, and is sealed apart from
//! real incidents; the debrief of a scripted incident holds the times it happened.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cordon::dev::Synapse;
use matrix_sdk::ruma::OwnedRoomId;
use serde_json::Value;

use crate::standdown::{Officer, archive_cli, archive_path, join_when_invited, open, text};
use crate::support::WAIT;
use crate::world::{Timing, World, incident_id_in};

/// The bot's messages in `room` as `user` received them.
fn bot_posts(w: &World, user: &cordon::dev::TestUser, room: &OwnedRoomId) -> Vec<String> {
    let bot = w.bot_id();
    user.messages(room)
        .into_iter()
        .filter(|m| m.sender == bot)
        .map(|m| m.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exercise_is_labelled_in_its_rooms_and_messages_takes_no_hold_and_is_sealed_apart() {
    let hs = Synapse::shared().await.expect("synapse");
    let officer = Officer::new();
    let timing = Timing {
        recipient: Some(officer.recipient.clone()),
        ..Timing::default()
    };
    let w = World::builder().on(hs).timing(timing).build().await;
    w.say(&format!(
        "!cordon declare {} \"Tramline drill\" --exercise",
        w.playbook_id
    ))
    .await;
    let summary = w.bot_says("DECLARED").await;
    assert!(summary.starts_with("EXERCISE · "), "{summary}");
    let incident = incident_id_in(&summary);
    let rooms = w.created_rooms(&incident).await;
    let command = rooms["command"][0].clone();
    let ward = rooms["ward"][0].clone();
    join_when_invited(&w.nurses[0], &[&command, &ward]).await;
    let nurse = &w.nurses[0];

    // Every room's name and topic say EXERCISE first, as any member's client shows them.
    for room in [&command, &ward] {
        let name = nurse
            .room_state_json(room, "m.room.name", "")
            .await
            .unwrap();
        let name = name["name"].as_str().unwrap_or_default().to_owned();
        assert!(name.starts_with("EXERCISE · "), "{name}");
        assert!(name.contains("Tramline drill"), "{name}");
        let topic = nurse
            .room_state_json(room, "m.room.topic", "")
            .await
            .unwrap();
        let topic = topic["topic"].as_str().unwrap_or_default().to_owned();
        assert!(topic.starts_with("EXERCISE · "), "{topic}");
    }
    // The briefing and the role instructions in the rooms say it too.
    let bot = w.bot_id();
    nurse
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.contains("Instructions for")
        })
        .await
        .unwrap();
    let posts = bot_posts(&w, nurse, &ward);
    assert!(posts.iter().any(|p| p.contains("BRIEFING")), "{posts:?}");
    for post in &posts {
        assert!(post.starts_with("EXERCISE · "), "not labelled: {post}");
    }

    // `status` sets it apart.
    w.say(&format!("!cordon status {incident}")).await;
    let status = w.bot_says(&format!("{incident} · Tramline drill")).await;
    assert!(status.starts_with("EXERCISE · "), "{status}");

    // A legal hold does not apply to a drill: refused, nothing changed.
    w.say(&format!("!cordon hold {incident} --reason Coroner asked"))
        .await;
    let refused = w.bot_says("legal hold does not apply").await;
    assert!(refused.contains("Nothing was changed"), "{refused}");

    // Stood down and destroyed at once; the archive is kept apart from real incidents'.
    w.say(&format!("!cordon standdown {incident}")).await;
    let sealed = w.bot_says("is sealed and verified").await;
    assert!(sealed.starts_with("EXERCISE · "), "{sealed}");
    w.bot_says("room(s) are destroyed").await;
    let real_place = archive_path(&w, &incident);
    let drill_place = w
        .setup
        .dir
        .join("archives")
        .join("exercises")
        .join(format!("{incident}.cordon-archive.age"));
    assert!(
        !real_place.exists(),
        "an exercise sealed among real incidents"
    );
    assert!(
        drill_place.exists(),
        "no archive at {}",
        drill_place.display()
    );

    let opened = open(&w, &officer, &drill_place).await;
    let dir = opened.path().join("opened");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["exercise"], true, "{manifest}");
    let index = std::fs::read_to_string(dir.join("index.md")).unwrap();
    assert!(
        index.starts_with("# EXERCISE archive: Tramline drill"),
        "{index}"
    );
    let debrief = std::fs::read_to_string(dir.join("debrief.md")).unwrap();
    assert!(
        debrief.starts_with("# EXERCISE debrief: Tramline drill"),
        "{debrief}"
    );
    let verified = archive_cli(&w, "verify", &drill_place, &officer.key_file, &[]).await;
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(
        text(&verified).contains("EXERCISE:   this was a drill"),
        "{}",
        text(&verified)
    );
}

/// The time now, by the test's clock.
fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A JSON time as UTC.
fn time(v: &Value) -> DateTime<Utc> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
}

const METHANE: &str = "!cordon methane
M: Major incident declared
E: Addiscombe Road tram stop
T: Tram derailment
H: Overhead lines may be live
A: From Lower Addiscombe Road
N: 12 P1, 20 P2, 40 P3
E: Ambulance, fire and police on scene";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debrief_holds_the_right_times_for_a_scripted_incident() {
    let hs = Synapse::shared().await.expect("synapse");
    let officer = Officer::new();
    let timing = Timing {
        duration: "{ max: 4h, warn_before: [], extend_max: 1h }",
        recipient: Some(officer.recipient.clone()),
        extra: "sitrep: { every: 30m, from: nurse, grace: 10m }",
        ..Timing::default()
    };
    // The clock is moved through the SITREP cycle: commands sent meanwhile still count.
    let w = World::builder()
        .on(hs)
        .timing(timing)
        .config("commands: { max_age: 3h }\n")
        .build()
        .await;
    let commander = w.commander.user_id().to_owned();
    let nurse_id = w.nurses[0].user_id().to_owned();
    w.say(&format!(
        "!cordon declare {} \"Debrief drill\"",
        w.playbook_id
    ))
    .await;
    let summary = w.bot_says("DECLARED").await;
    let incident = incident_id_in(&summary);
    let rooms = w.created_rooms(&incident).await;
    let command = rooms["command"][0].clone();
    let ward = rooms["ward"][0].clone();

    // The nurse joins at once; the commander a few seconds later: each join's time is
    // bracketed by the test's own clock (the homeserver is on this machine).
    let nurse_before = now();
    join_when_invited(&w.nurses[0], &[&command, &ward]).await;
    let nurse_after = now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let commander_before = now();
    join_when_invited(&w.commander, &[&command]).await;
    let commander_after = now();

    // A METHANE, two decisions (the second a correction), advice flagged and
    // transcribed 12 minutes later by cordon's clock.
    w.say(METHANE).await;
    w.bot_says("Recorded as METHANE v1").await;
    w.say("!cordon decision Open the second resus bay --because 12 P1 expected")
        .await;
    w.bot_says("Logged as D1").await;
    w.say("!cordon decision --corrects D1 Open resus bays 2 and 3")
        .await;
    w.bot_says("Logged as D2").await;
    let advice = w.nurses[0]
        .send_text(&ward, "Give 1g tranexamic acid to P1-007")
        .await
        .unwrap();
    let bot = w.bot_id();
    w.nurses[0]
        .send_text(&ward, &format!("!cordon advice {advice}"))
        .await
        .unwrap();
    w.nurses[0]
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.contains("Flagged as clinical advice")
        })
        .await
        .unwrap();
    w.advance_clock(Duration::from_secs(12 * 60)).await;
    w.nurses[0]
        .send_text(&ward, &format!("!cordon transcribed {advice}"))
        .await
        .unwrap();
    w.nurses[0]
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.contains("Marked transcribed")
        })
        .await
        .unwrap();

    // SITREP 1 (due at 30 minutes) comes on time; SITREP 2 (due at 60) never comes.
    w.advance_clock(Duration::from_secs(19 * 60 + 30)).await;
    w.commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.starts_with("SITREP 1 is due now")
        })
        .await
        .unwrap();
    w.nurses[0]
        .send_text(&command, "!cordon sitrep Resus full; 2 to theatre")
        .await
        .unwrap();
    w.commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.starts_with("SITREP 1 ·")
        })
        .await
        .unwrap();
    w.advance_clock(Duration::from_secs(41 * 60)).await;
    w.bot_says("SITREP 2 of Debrief drill").await;
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    w.bot_says("room(s) are destroyed").await;

    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let dir = opened.path().join("opened");
    let d: Value =
        serde_json::from_slice(&std::fs::read(dir.join("debrief.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(d["declared_at"], manifest["declared_at"], "{d:#}");
    assert_eq!(d["stood_down_by"], Value::from(commander.as_str()));

    // Each holder's invite and join: the join inside the test's bracket, the time taken
    // the difference of the two.
    let arrivals = d["arrivals"].as_array().unwrap();
    let arrival = |room: &str, user: &str| -> &Value {
        arrivals
            .iter()
            .find(|a| a["room_key"] == room && a["user"] == user)
            .unwrap_or_else(|| panic!("no arrival of {user} in {room}: {d:#}"))
    };
    let slack = chrono::TimeDelta::seconds(2);
    for (room, user, before, after) in [
        ("command", nurse_id.as_str(), nurse_before, nurse_after),
        ("ward", nurse_id.as_str(), nurse_before, nurse_after),
        (
            "command",
            commander.as_str(),
            commander_before,
            commander_after,
        ),
    ] {
        let a = arrival(room, user);
        let joined = time(&a["joined_at"]);
        assert!(
            joined >= before - slack && joined <= after + slack,
            "{user} in {room} joined at {joined}, outside {before}..{after}"
        );
        let invited = time(&a["invited_at"]);
        assert!(invited <= joined);
        assert_eq!(
            a["took_secs"],
            Value::from((joined - invited).num_seconds())
        );
    }
    assert_eq!(
        arrival("ward", nurse_id.as_str())["roles"],
        serde_json::json!(["nurse"])
    );

    // Per role, the first holder to join, counted from the declaration.
    let roles = d["roles"].as_array().unwrap();
    let role = |id: &str| roles.iter().find(|r| r["role"] == id).unwrap();
    assert_eq!(
        role("nurse")["first_joined_by"],
        Value::from(nurse_id.as_str())
    );
    let declared = time(&d["declared_at"]);
    let nurse_first = time(&role("nurse")["first_joined_at"]);
    assert_eq!(
        role("nurse")["after_declared_secs"],
        Value::from((nurse_first - declared).num_seconds())
    );

    // The command record: one METHANE, the decisions with their texts and correction.
    assert_eq!(d["methane"].as_array().unwrap().len(), 1, "{d:#}");
    let decisions = d["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[0]["text"], "Open the second resus bay");
    assert_eq!(decisions[0]["corrected_by"], serde_json::json!(["D2"]));
    assert_eq!(decisions[1]["corrects"], "D1");

    // SITREP compliance: cycle 1 on time, cycle 2 missed and still missed at stand-down.
    assert_eq!(d["sitreps"]["on_time"], 1, "{:#}", d["sitreps"]);
    assert_eq!(d["sitreps"]["missed"], 1, "{:#}", d["sitreps"]);
    assert_eq!(d["outstanding"]["sitreps_missed"], serde_json::json!([2]));

    // The advice took the 12 minutes cordon's clock was moved by (and the seconds the
    // commands took).
    let advice_items = d["advice"].as_array().unwrap();
    assert_eq!(advice_items.len(), 1);
    let took = advice_items[0]["took_secs"].as_i64().unwrap();
    assert!((12 * 60..12 * 60 + 60).contains(&took), "took {took} s");
    assert_eq!(
        advice_items[0]["transcribed_by"],
        Value::from(nurse_id.as_str())
    );
    assert_eq!(d["outstanding"]["advice"], serde_json::json!([]));

    // The timeline runs from the declaration, through both rooms, to the stand-down.
    let timeline = d["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["kind"], "declared", "{d:#}");
    let kinds: Vec<&str> = timeline.iter().filter_map(|m| m["kind"].as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "room-created").count(), 2);
    for kind in [
        "invited",
        "joined",
        "methane",
        "decision",
        "sitrep-missed",
        "stand-down",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }

    // `cordon archive report` prints the same report, writing nothing.
    let file = archive_path(&w, &incident);
    let report = archive_cli(&w, "report", &file, &officer.key_file, &[]).await;
    assert!(report.status.success(), "{}", text(&report));
    let printed = String::from_utf8(report.stdout).unwrap();
    let written = std::fs::read_to_string(dir.join("debrief.md")).unwrap();
    assert_eq!(printed, written);
    assert!(printed.contains("Open resus bays 2 and 3"), "{printed}");
    assert!(
        printed.contains("SITREP cycles never answered: 2"),
        "{printed}"
    );
}
