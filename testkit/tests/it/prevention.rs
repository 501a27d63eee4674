//! Prevention, against a real Synapse running the repository's `cordon_synapse` module:
//! the homeserver asks cordon before any membership or state event exists in its rooms.
//! The attacks are the guard's (a server admin's `make_room_admin` and admin join API),
//! and here they fail with the server's own error instead of being undone; cordon's own
//! work goes through unchanged; with cordon stopped, its rooms refuse changes while
//! other rooms do not.

use cordon::clock::Setting;
use cordon::dev::{Prevention, Synapse};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::Value;

use std::time::Duration;

use crate::guard::audited;
use crate::schedule::wait_redacted;
use crate::support::unique;
use crate::world::{World, admin_get};

/// A homeserver of the test's own, running the module that asks this world's cordon.
async fn guarded_homeserver() -> &'static Synapse {
    let dir = cordon::dev::fresh_temp_dir("cordon-prevention").unwrap();
    Synapse::own_with_prevention(Prevention::create(&dir).unwrap())
        .await
        .unwrap()
}

async fn world(hs: &'static Synapse) -> World {
    World::builder()
        .on(hs)
        .prefix("p")
        .guard_playbooks(&["remove"])
        .server_admin()
        .build()
        .await
}

/// Every member event of `user` in `room`, in its state and in its whole timeline, as
/// the server holds them.
async fn member_events(hs: &Synapse, room: &RoomId, user: &OwnedUserId) -> Vec<Value> {
    let state = admin_get(hs, &format!("_synapse/admin/v1/rooms/{room}/state")).await;
    let timeline = admin_get(
        hs,
        &format!("_synapse/admin/v1/rooms/{room}/messages?dir=b&limit=1000"),
    )
    .await;
    let of_user = |e: &&Value| {
        e.get("type").and_then(Value::as_str) == Some("m.room.member")
            && e.get("state_key").and_then(Value::as_str) == Some(user.as_str())
    };
    let mut out: Vec<Value> = state["state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(of_user)
        .cloned()
        .collect();
    out.extend(
        timeline["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(of_user)
            .cloned(),
    );
    out
}

/// The power levels of `room` as the server holds them.
async fn power_levels(hs: &Synapse, room: &RoomId) -> Value {
    let state = admin_get(hs, &format!("_synapse/admin/v1/rooms/{room}/state")).await;
    state["state"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.power_levels"))
        .map(|e| e["content"].clone())
        .unwrap_or(Value::Null)
}

/// The admin-API injection the guard undoes after the fact is refused before it
/// happens: `make_room_admin` and the admin join API fail with the server's 403, no
/// member event of the admin or the intruder ever exists in the room (state or
/// timeline), the power levels stay cordon's, and cordon reports the prevented change
/// in the control room and the audit log. `status` says prevention is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_injection_is_refused_by_the_server_and_reported() {
    let hs = guarded_homeserver().await;
    let mut w = world(hs).await;
    w.say("!cordon status").await;
    w.bot_says("Prevention: on").await;
    let (incident, rooms) = w.declare("remove", "Prevented").await;
    let command: OwnedRoomId = rooms["command"].clone();
    w.nurse_joins(&command).await;
    let levels = power_levels(hs, &command).await;

    let admin: OwnedUserId = w.admin().user_id().to_owned();
    let refused = w
        .admin()
        .make_room_admin(&command, &admin)
        .await
        .expect_err("make_room_admin went through");
    let said = refused.to_string();
    assert!(
        said.contains("403") && said.contains("not allowed"),
        "the server's own error: {said}"
    );
    println!("make_room_admin refused by the server: {said}");
    let intruder_name = unique("intruder");
    let intruder = hs.register(&intruder_name, "pw", false).await.unwrap();
    let refused = w
        .admin()
        .force_join(&command, &intruder)
        .await
        .expect_err("the admin join API went through");
    println!("admin join API refused by the server: {refused}");

    let alert = w
        .bot_says_all(&["PREVENTED", "power levels", &incident])
        .await;
    assert!(alert.contains("Nothing changed in the room"), "{alert}");
    for user in [&admin, &intruder] {
        let events = member_events(hs, &command, user).await;
        assert!(events.is_empty(), "{user} has member events: {events:?}");
    }
    assert_eq!(power_levels(hs, &command).await, levels);
    let store = w.stop_and_open_store();
    let refusals = audited(&store, "prevention.refused");
    assert!(
        refusals
            .iter()
            .any(|d| d["type"] == "m.room.power_levels" && d["room"] == command.as_str()),
        "{refusals:?}"
    );
    // The guard had nothing to undo.
    assert!(audited(&store, "guard.intruder-banned").is_empty());
}

/// cordon's own work goes through the module unchanged: rooms created and set up,
/// holders invited and joining, retention (the briefing pinned again, old messages
/// redacted), a member removed and added back, command handed over (power levels), and
/// the stand-down's freeze and destruction; nothing of cordon's is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordons_own_work_goes_through_the_module() {
    let hs = guarded_homeserver().await;
    let mut w = world(hs).await;
    let (incident, rooms) = w.declare("remove", "Own work").await;
    let command = rooms["command"].clone();
    w.nurse_joins(&command).await;
    let nurse = w.nurse().user_id().to_owned();

    // Retention: an hour on, the briefing is posted and pinned again (a state change)
    // and the sweep redacts what is older than the window.
    let old = w.nurse().send_text(&command, "Bay 4 free").await.unwrap();
    w.advance_clock(Duration::from_secs(61 * 60)).await;
    assert_eq!(wait_redacted(&w, &command, &old).await, "retention: 1h");
    // Back to real time, so that the next commands are not an hour old to cordon.
    w.set_clock(Setting::Offset(chrono::TimeDelta::zero()))
        .await;

    w.say(&format!("!cordon remove {incident} {nurse}")).await;
    w.bot_says(&format!("Removed {nurse} from {incident}"))
        .await;
    w.say(&format!("!cordon add {incident} {nurse} --role nurse"))
        .await;
    w.bot_says(&format!("Added {nurse} to {incident}")).await;
    w.nurse_joins(&command).await;
    w.say(&format!("!cordon handover {incident} {nurse}")).await;
    w.bot_says(&format!("{nurse} now commands {incident}"))
        .await;

    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("room(s) are destroyed").await;
    assert_eq!(w.bot_messages("PREVENTED"), 0);
    // The module did ask, about every step, and was never refused.
    let status: Value = reqwest::get(
        hs.base_url()
            .join("_synapse/client/cordon/v1/status")
            .unwrap(),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(status["asked"].as_u64().unwrap() > 10, "{status}");
    assert_eq!(status["refused"], 0, "{status}");
    assert_eq!(status["unanswered"], 0, "{status}");
    let store = w.stop_and_open_store();
    let refusals = audited(&store, "prevention.refused");
    assert!(
        refusals.is_empty(),
        "cordon's own work refused: {refusals:?}"
    );
}

/// With cordon stopped, the module cannot ask: changes in cordon's rooms are refused
/// (fail closed), rooms that are not cordon's work as usual, and a member may still
/// leave. Started again, cordon answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cordon_stopped_its_rooms_refuse_changes_and_others_do_not() {
    let hs = guarded_homeserver().await;
    let mut w = world(hs).await;
    let (_incident, rooms) = w.declare("remove", "Stopped").await;
    let command = rooms["command"].clone();
    w.nurse_joins(&command).await;
    w.stop_bot();

    let admin: OwnedUserId = w.admin().user_id().to_owned();
    let refused = w.admin().make_room_admin(&command, &admin).await;
    assert!(
        refused.is_err(),
        "make_room_admin went through with cordon down"
    );
    // A room that is not cordon's: the commander invites the admin as usual.
    let other = w
        .commander
        .create_encrypted_room("Not cordon's", std::slice::from_ref(&admin))
        .await;
    assert!(other.is_ok(), "an ordinary room refused: {other:?}");
    // Leaving only narrows access: allowed with nobody to ask.
    let nurse = w.nurse().user_id().to_owned();
    w.admin().leave_as(&nurse, &command).await.unwrap();
    assert!(member_events(hs, &command, &admin).await.is_empty());

    w.restart(&[]);
    w.wait_ready().await;
    w.say("!cordon status").await;
    w.bot_says("Prevention: on").await;
}

/// cordon knows whether prevention is on: when the homeserver comes back without the
/// module, the control room is told (and `status` and `/healthz` say so); when the
/// module is back, the control room is told again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_room_is_told_when_prevention_goes_off_and_when_it_is_back() {
    let hs = guarded_homeserver().await;
    let w = world(hs).await;
    w.say("!cordon status").await;
    w.bot_says("Prevention: on").await;

    hs.restart_with_module(false).await.unwrap();
    let off = w.bot_says("PREVENTION OFF").await;
    assert!(off.contains("no cordon_synapse module"), "{off}");
    let metrics = w.bot.as_ref().unwrap().metrics_url().unwrap();
    let health: Value = reqwest::get(format!("{metrics}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["prevention"], "off", "{health}");
    w.say("!cordon status").await;
    w.bot_says("Prevention: OFF").await;

    hs.restart_with_module(true).await.unwrap();
    w.bot_says("Prevention is on again").await;
    assert_eq!(w.metric("cordon_prevention_enabled").await, Some(1.0));
}
