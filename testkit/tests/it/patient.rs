//! Less patient data in the chat, against the real Synapse: a message holding an NHS
//! number or a date of birth gets one notice to its sender an hour, which never repeats
//! what it found; cordon's store never holds it; a playbook can turn the notices off.

use std::time::Duration;

use cordon::dev::Synapse;
use matrix_sdk::ruma::OwnedRoomId;

use crate::standdown::join_when_invited;
use crate::support::WAIT;
use crate::world::{Timing, World, incident_id_in};

/// Declares the world's playbook and lets the nurse and the commander into the rooms;
/// returns the incident and the ward and command rooms.
async fn declared(w: &World, name: &str) -> (String, OwnedRoomId, OwnedRoomId) {
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    let summary = w.bot_says("DECLARED").await;
    let incident = incident_id_in(&summary);
    let rooms = w.created_rooms(&incident).await;
    let (command, ward) = (rooms["command"][0].clone(), rooms["ward"][0].clone());
    join_when_invited(&w.nurses[0], &[&command, &ward]).await;
    join_when_invited(&w.commander, &[&command]).await;
    (incident, ward, command)
}

/// The bot's notices in `room` mentioning patient identifiers, as `user` received them.
fn notices(w: &World, user: &cordon::dev::TestUser, room: &OwnedRoomId) -> Vec<String> {
    let bot = w.bot_id();
    user.messages(room)
        .into_iter()
        .filter(|m| m.sender == bot && m.body.contains("looks like it holds"))
        .map(|m| m.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nhs_number_gets_one_notice_an_hour_that_never_repeats_it() {
    let hs = Synapse::shared().await.expect("synapse");
    let w = World::builder()
        .on(hs)
        .timing(Timing::default())
        .config("commands: { max_age: 3h }\n")
        .build()
        .await;
    let (incident, ward, command) = declared(&w, "PID drill").await;
    let nurse = &w.nurses[0];
    let nurse_id = nurse.user_id().to_owned();
    let bot = w.bot_id();

    nurse
        .send_text(&ward, "Pt 943 476 5919 to CT, then theatre 2")
        .await
        .unwrap();
    let (_, said) = nurse
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.contains("looks like it holds an NHS number")
        })
        .await
        .unwrap();
    assert!(
        said.contains(nurse_id.as_str()),
        "mentions the sender: {said}"
    );
    for value in ["943", "476", "5919"] {
        assert!(!said.contains(value), "the notice repeats {value}: {said}");
    }
    assert!(said.contains("initials, or the bed and ward"), "{said}");

    // Within the hour: a date of birth from the same nurse gets no second notice.
    nurse
        .send_text(&ward, "Second casualty DOB 12/03/1984, query pelvis")
        .await
        .unwrap();
    w.wait_for_log_lines("sender nudged within the hour", 1)
        .await;
    // A message with nothing in it, and a wrong check digit, get nothing either.
    nurse
        .send_text(&ward, "Bed 12 free; ref 943 476 5918")
        .await
        .unwrap();
    // Another sender is nudged on their own account, in another room.
    w.commander
        .send_text(&command, "Tell ED: 9434765870 is on the way")
        .await
        .unwrap();
    let commander = w.commander.user_id().to_owned();
    w.commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("looks like it holds") && b.contains(commander.as_str())
        })
        .await
        .unwrap();
    assert_eq!(notices(&w, nurse, &ward).len(), 1, "one notice an hour");

    // An hour on, the nurse is nudged again.
    w.advance_clock(Duration::from_secs(61 * 60)).await;
    nurse
        .send_text(&ward, "Third casualty born 1 April 1990")
        .await
        .unwrap();
    nurse
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.contains("looks like it holds a date of birth")
        })
        .await
        .unwrap();
    assert_eq!(notices(&w, nurse, &ward).len(), 2);

    // `status` counts them.
    w.say(&format!("!cordon status {incident}")).await;
    let status = w
        .bot_says("notices about patient identifiers (NHS numbers, dates of birth) in messages: 3")
        .await;
    assert!(status.contains(&incident), "{status}");

    // Recorded and audited as ids and kinds; the number itself never reached the store.
    let mut w = w;
    let store = w.stop_and_open_store();
    let nudged: Vec<serde_json::Value> = store
        .audit_entries(.., None)
        .unwrap()
        .iter()
        .filter(|e| e.action == "pid.nudged")
        .map(|e| e.details_value())
        .collect();
    assert_eq!(nudged.len(), 3, "{nudged:?}");
    assert_eq!(nudged[0]["found"], serde_json::json!(["nhs-number"]));
    drop(store);
    let bytes = std::fs::read(w.store_dir().join("cordon.redb")).unwrap();
    for secret in ["9434765919", "943 476 5919", "9434765870", "12/03/1984"] {
        assert!(
            !bytes.windows(secret.len()).any(|s| s == secret.as_bytes()),
            "{secret:?} is in cordon's store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playbook_can_turn_the_notices_off() {
    let hs = Synapse::shared().await.expect("synapse");
    let timing = Timing {
        extra: "pid_nudges: false",
        ..Timing::default()
    };
    let w = World::builder().on(hs).timing(timing).build().await;
    let (_, ward, _) = declared(&w, "Quiet drill").await;
    let nurse = &w.nurses[0];
    nurse
        .send_text(&ward, "Pt 943 476 5919 to CT")
        .await
        .unwrap();
    w.wait_for_log_lines("PID nudges are off", 1).await;
    assert!(notices(&w, nurse, &ward).is_empty());
}
