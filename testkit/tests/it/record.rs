//! The command record against the real Synapse: the decision log. Decisions are
//! numbered, attributed and posted once in the command room (also when cordon is
//! killed between recording one and posting it), corrected by new entries, listed by
//! `log` after retention has swept the chat, never kept in the clear in cordon's store,
//! and opened from the sealed archive by the records officer.

use std::time::Duration;

use cordon::dev::Synapse;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId};
use serde_json::Value;

use crate::schedule::wait_redacted;
use crate::standdown::{Officer, archive_path, declared_timed, open, read_lines};
use crate::support::WAIT;
use crate::world::{Timing, World};

/// The bot's posts in `room` that contain `needle`, as the commander received them.
fn posts(w: &World, room: &OwnedRoomId, needle: &str) -> Vec<String> {
    let bot: OwnedUserId = w.bot_id();
    w.commander
        .messages(room)
        .into_iter()
        .filter(|m| m.sender == bot && m.body.contains(needle))
        .map(|m| m.body)
        .collect()
}

/// Waits for cordon's post of decision `label` in the command room; returns its text.
async fn wait_post(w: &World, command: &OwnedRoomId, label: &str) -> String {
    let bot = w.bot_id();
    let needle = format!("Decision {label} ·");
    match w
        .commander
        .wait_for_message(command, WAIT, |s, b| s == bot && b.contains(&needle))
        .await
    {
        Ok((_, body)) => body,
        Err(e) => panic!("no post of {label}: {e}\nbot log:\n{}", w.log()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_numbered_corrected_posted_once_and_survive_retention_sigkill_and_seal() {
    let hs = Synapse::shared().await.expect("synapse");
    let officer = Officer::new();
    let timing = Timing {
        retention: "{ messages: 40s }",
        extra: "decisions: { by: [nurse] }",
        ..Timing::default()
    };
    let (mut w, incident, rooms) = declared_timed(hs, &officer, "Decision drill", timing).await;
    let command = rooms["command"].clone();
    let commander = w.commander.user_id().to_owned();
    let nurse = w.nurses[0].user_id().to_owned();

    // D1: the commander, in the control room, with a rationale and an apostrophe.
    w.say("!cordon decision Divert P1 trauma to St George's\nuntil CT is back --because CT scanner down since 14:05")
        .await;
    let d1 = wait_post(&w, &command, "D1").await;
    assert!(d1.contains(&format!("decided by {commander}")), "{d1}");
    assert!(
        d1.contains("Divert P1 trauma to St George's\nuntil CT is back"),
        "{d1}"
    );
    assert!(d1.contains("Because: CT scanner down since 14:05"), "{d1}");
    w.bot_says_all(&["Logged as D1", "command room"]).await;

    // D2: the nurse (a role the playbook lets log decisions) logs the commander's
    // message, by replying to it in the command room: the commander decided.
    let said = w
        .commander
        .send_text(&command, "We open theatre 3 for the tram casualties now.")
        .await
        .unwrap();
    w.nurses[0]
        .send_reply(
            &command,
            &said,
            "!cordon decision --because theatres agreed at 14:20",
        )
        .await
        .unwrap();
    let d2 = wait_post(&w, &command, "D2").await;
    assert!(d2.contains(&format!("decided by {commander}")), "{d2}");
    assert!(d2.contains(&format!("logged by {nurse}")), "{d2}");
    assert!(
        d2.contains("We open theatre 3 for the tram casualties now."),
        "{d2}"
    );

    // A correction of a decision that does not exist changes nothing.
    w.say("!cordon decision --corrects D9 Nothing").await;
    w.bot_says("There is no D9 in the decision log").await;

    // D3 corrects D1, and cordon is killed between recording it and posting it: the
    // restarted bot posts it, once, read back from the command.
    w.restart(&[("CORDON_FAILPOINT", "record.before-post")]);
    w.wait_ready().await;
    w.say("!cordon decision --corrects D1 Divert P1 trauma to King's instead")
        .await;
    w.kill_at("record.before-post").await;
    assert!(posts(&w, &command, "Decision D3 ·").is_empty());
    w.crash_restart(&[]);
    w.wait_ready().await;
    // The fallback timer is due 30 s after the command; the movable clock gets it there.
    w.advance_clock(Duration::from_secs(60)).await;
    let d3 = wait_post(&w, &command, "D3").await;
    assert!(d3.contains("Corrects D1."), "{d3}");
    assert!(d3.contains("Divert P1 trauma to King's instead"), "{d3}");

    // Retention sweeps the command room (past 40 s by now): the commander's message and
    // cordon's posts go, the log does not.
    w.advance_clock(Duration::from_secs(120)).await;
    wait_redacted(&w, &command, &said).await;
    w.wait_scheduler_idle().await;
    for label in ["D1", "D2", "D3"] {
        assert_eq!(
            w.commander
                .messages(&command)
                .iter()
                .filter(
                    |m| m.sender == w.bot_id() && m.body.contains(&format!("Decision {label} ·"))
                )
                .count(),
            1,
            "{label} posted once"
        );
    }
    w.say(&format!("!cordon log {incident}")).await;
    let log = w.bot_says(&format!("Decision log of {incident}")).await;
    assert!(log.contains("3 entries"), "{log}");
    assert!(log.contains("- D1"), "{log}");
    assert!(log.contains("corrected by D3"), "{log}");
    assert!(log.contains("- D3") && log.contains("corrects D1"), "{log}");

    // Stand-down: the records officer opens the decision log from the sealed archive.
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    w.bot_says("room(s) are destroyed").await;
    w.stop_bot();

    // cordon's store never held the text.
    let store = std::fs::read(w.store_dir().join("cordon.redb")).unwrap();
    for secret in [
        "St George",
        "theatre 3",
        "King's instead",
        "CT scanner down",
    ] {
        assert!(
            !store.windows(secret.len()).any(|s| s == secret.as_bytes()),
            "{secret:?} is in cordon's store in the clear"
        );
    }

    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let dir = opened.path().join("opened");
    let log = read_lines(&dir.join("decision-log.jsonl"));
    let labels: Vec<&str> = log.iter().map(|e| e["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["D1", "D2", "D3"], "{log:?}");
    assert_eq!(
        log[0]["text"],
        Value::from("Divert P1 trauma to St George's\nuntil CT is back")
    );
    assert_eq!(
        log[0]["because"],
        Value::from("CT scanner down since 14:05")
    );
    assert_eq!(log[0]["corrected_by"], serde_json::json!([3]));
    assert_eq!(log[1]["decided_by"], Value::from(commander.as_str()));
    assert_eq!(log[1]["logged_by"], Value::from(nurse.as_str()));
    assert_eq!(log[1]["source_event"], Value::from(said.as_str()));
    assert_eq!(log[2]["corrects"], Value::from(1));
    let md = std::fs::read_to_string(dir.join("decision-log.md")).unwrap();
    assert!(md.contains("King's instead"), "{md}");
    assert!(md.contains("Corrects D1."), "{md}");
}

/// The event ids pinned in `room`, as its member `user` reads the state.
async fn pinned(user: &cordon::dev::TestUser, room: &OwnedRoomId) -> Vec<String> {
    let client = user.client();
    let url = client
        .homeserver()
        .join(&format!(
            "_matrix/client/v3/rooms/{}/state/m.room.pinned_events/",
            room.as_str().replace('!', "%21").replace(':', "%3A")
        ))
        .unwrap();
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(client.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["pinned"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The event id of cordon's post in `room` containing `needle`.
fn post_id(w: &World, room: &OwnedRoomId, needle: &str) -> String {
    let bot = w.bot_id();
    w.commander
        .messages(room)
        .into_iter()
        .find(|m| m.sender == bot && m.body.contains(needle))
        .map(|m| m.event_id.to_string())
        .unwrap_or_else(|| panic!("no post with {needle:?}"))
}

const METHANE_V1: &str = "!cordon methane
M: Major incident declared
E: Addiscombe Road tram stop
T: Tram derailment
H: Overhead lines may be live
A: From Lower Addiscombe Road
N: 12 P1, 20 P2, 40 P3
E: Ambulance, fire and police on scene; HART requested";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_methane_report_is_checked_pinned_superseded_sealed_and_chased_when_required() {
    let hs = Synapse::shared().await.expect("synapse");
    let officer = Officer::new();
    let timing = Timing {
        extra: "methane: required",
        ..Timing::default()
    };
    let (mut w, incident, rooms) = declared_timed(hs, &officer, "METHANE drill", timing).await;
    let command = rooms["command"].clone();
    let commander = w.commander.user_id().to_owned();

    // `methane: required`: five minutes after declaring, the commander is chased.
    w.advance_clock(Duration::from_secs(6 * 60)).await;
    let chased = w.bot_says("no METHANE report yet for").await;
    assert!(chased.contains(&commander.to_string()), "{chased}");
    assert!(chased.contains(&incident), "{chased}");

    // A report without its T: line is refused, naming the line; nothing is recorded.
    let without_t = METHANE_V1.replace("T: Tram derailment\n", "");
    w.say(&without_t).await;
    let refused = w.bot_says("`T:` line (type of incident)").await;
    assert!(refused.contains("Usage: !cordon methane"), "{refused}");
    let unknown = METHANE_V1.replace("H: Overhead", "X: Overhead");
    w.say(&unknown).await;
    w.bot_says("`X:` is not a METHANE line").await;

    w.say(METHANE_V1).await;
    w.bot_says("Recorded as METHANE v1").await;
    let v1 = {
        let bot = w.bot_id();
        w.commander
            .wait_for_message(&command, WAIT, |s, b| {
                s == bot && b.contains("METHANE v1 ·")
            })
            .await
            .unwrap()
            .1
    };
    assert!(v1.contains("T: Tram derailment"), "{v1}");
    let v1_id = post_id(&w, &command, "METHANE v1 ·");
    assert!(pinned(&w.commander, &command).await.contains(&v1_id));

    let v2_text = METHANE_V1.replace("12 P1, 20 P2, 40 P3", "15 P1, 22 P2, 41 P3");
    w.say(&v2_text).await;
    w.bot_says("Recorded as METHANE v2").await;
    let bot = w.bot_id();
    let (_, v2) = w
        .commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("METHANE v2 ·")
        })
        .await
        .unwrap();
    assert!(
        v2.contains("(supersedes v1)") && v2.contains("15 P1"),
        "{v2}"
    );
    let v2_id = post_id(&w, &command, "METHANE v2 ·");
    let pins = pinned(&w.commander, &command).await;
    assert!(pins.contains(&v2_id) && !pins.contains(&v1_id), "{pins:?}");

    w.say(&format!("!cordon status {incident}")).await;
    w.bot_says_all(&[&format!("{incident} ·"), "METHANE v2 from"])
        .await;
    // Given: no more chasing.
    let chases = w.bot_messages("no METHANE report yet for");
    w.advance_clock(Duration::from_secs(20 * 60)).await;
    w.wait_scheduler_idle().await;
    assert_eq!(w.bot_messages("no METHANE report yet for"), chases);
    // Back to the real time, so that the next command is not taken as stale.
    w.set_clock(cordon::clock::Setting::Offset(chrono::TimeDelta::zero()))
        .await;

    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    w.stop_bot();
    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let dir = opened.path().join("opened");
    let reports = read_lines(&dir.join("methane.jsonl"));
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports[1]["text"]
            .as_str()
            .unwrap()
            .contains("N: 15 P1, 22 P2, 41 P3"),
        "{reports:?}"
    );
    let md = std::fs::read_to_string(dir.join("methane.md")).unwrap();
    assert!(
        md.contains("METHANE v1") && md.contains("METHANE v2"),
        "{md}"
    );
    // The decision log is in every archive, empty or not.
    let log = std::fs::read_to_string(dir.join("decision-log.md")).unwrap();
    assert!(log.contains("No decisions were logged."), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sitrep_is_asked_for_on_its_cycle_and_a_missed_one_is_escalated_and_recorded_late() {
    let hs = Synapse::shared().await.expect("synapse");
    let officer = Officer::new();
    let timing = Timing {
        duration: "{ max: 4h, warn_before: [], extend_max: 1h }",
        recipient: Some(officer.recipient.clone()),
        extra: "sitrep: { every: 30m, from: nurse, grace: 10m }",
        ..Timing::default()
    };
    // The clock is moved past the cycle: commands sent meanwhile must not count as stale.
    let mut w = World::builder()
        .on(hs)
        .timing(timing)
        .config("commands: { max_age: 3h }\n")
        .build()
        .await;
    w.say(&format!(
        "!cordon declare {} \"SITREP drill\"",
        w.playbook_id
    ))
    .await;
    let summary = w.bot_says("DECLARED").await;
    let incident = crate::world::incident_id_in(&summary);
    let rooms = w.created_rooms(&incident).await;
    let command = rooms["command"][0].clone();
    crate::standdown::join_when_invited(&w.commander, &[&command]).await;
    crate::standdown::join_when_invited(&w.nurses[0], &[&command, &rooms["ward"][0]]).await;
    let nurse = w.nurses[0].user_id().to_owned();
    let commander = w.commander.user_id().to_owned();
    let bot = w.bot_id();

    // Cycle 1 is due 30 minutes after declaring: cordon asks the nurse role.
    w.advance_clock(Duration::from_secs(31 * 60)).await;
    let (_, asked) = w
        .commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.starts_with("SITREP 1 is due now")
        })
        .await
        .unwrap();
    assert!(asked.contains(nurse.as_str()), "{asked}");

    // Nothing within the grace: the role holders and the commander are mentioned in the
    // command room, and the control room is told.
    w.advance_clock(Duration::from_secs(10 * 60)).await;
    let (_, raised) = w
        .commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("SITREP 1 was due at")
        })
        .await
        .unwrap();
    assert!(
        raised.contains(nurse.as_str()) && raised.contains(commander.as_str()),
        "{raised}"
    );
    let told = w
        .bot_says(&format!("SITREP 1 of SITREP drill ({incident}) is late"))
        .await;
    assert!(told.contains("nothing within 10m"), "{told}");

    // It comes, late: recorded as late, and posted so.
    w.nurses[0]
        .send_text(
            &command,
            "!cordon sitrep 14 in resus, 3 to theatre, CT back at 15:10; need 2 ODPs",
        )
        .await
        .unwrap();
    let (_, posted) = w
        .commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.starts_with("SITREP 1 ·")
        })
        .await
        .unwrap();
    assert!(
        posted.contains("(cycle 1, ") && posted.contains("min after it was due: late)"),
        "{posted}"
    );
    assert!(posted.contains("need 2 ODPs"), "{posted}");

    // Cycle 2 (due at 60 minutes) answered within its grace: on time, nothing raised.
    w.advance_clock(Duration::from_secs(20 * 60)).await;
    w.commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.starts_with("SITREP 2 is due now")
        })
        .await
        .unwrap();
    w.nurses[0]
        .send_text(&command, "!cordon sitrep Resus clear; 2 awaiting theatre")
        .await
        .unwrap();
    let (_, second) = w
        .commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.starts_with("SITREP 2 ·")
        })
        .await
        .unwrap();
    assert!(second.contains("(cycle 2, on time)"), "{second}");
    w.advance_clock(Duration::from_secs(11 * 60)).await;
    w.wait_scheduler_idle().await;
    assert_eq!(w.bot_messages("SITREP 2 of SITREP drill"), 0);

    // The lateness is in the audit log and the SITREPs in the sealed archive.
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    let store = w.stop_and_open_store();
    let audit = store.audit_entries(.., None).unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    assert!(actions.contains(&"sitrep.missed"), "{actions:?}");
    assert!(actions.contains(&"sitrep.late"), "{actions:?}");
    assert!(actions.contains(&"sitrep.on-time"), "{actions:?}");
    drop(store);
    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let reports = read_lines(&opened.path().join("opened").join("sitreps.jsonl"));
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(reports[0]["text"].as_str().unwrap().contains("need 2 ODPs"));
}
