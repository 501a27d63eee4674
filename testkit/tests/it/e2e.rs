//! End to end against a real Synapse: `cordon run` as its own process, people as
//! matrix-sdk clients of their own, exactly as a commander and role holders would be.

use std::time::Duration;

use cordon::dev::TestUser;
use cordon::dev::bot::enrol;

use crate::support::{WAIT, cordon_bin, unique};
use crate::world::{World, incident_id_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_provisions_locked_down_rooms_that_holders_join_and_read() {
    let mut w = World::new(2).await;
    w.say(&format!(
        "!cordon declare {} \"Tram crash Addiscombe\"",
        w.playbook_id
    ))
    .await;
    let summary = w.bot_says("DECLARED").await;
    let incident = incident_id_in(&summary);
    assert!(summary.contains("Tram crash Addiscombe"), "{summary}");
    assert!(summary.contains("https://matrix.to/#/!"), "{summary}");
    assert!(
        summary.contains("(3 invited)"),
        "the ghost is not counted: {summary}"
    );
    assert!(
        summary.contains("-ghost:localhost not invited: the account does not exist"),
        "the ghost holder is listed as pending, with why: {summary}"
    );

    // The progress message was edited in place to "done".
    w.bot_says("Declaring Tram crash Addiscombe").await;

    let rooms = w.created_rooms(&incident).await;
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    assert!(rooms.values().all(|r| r.len() == 1), "{rooms:?}");
    let command = rooms["command"][0].clone();

    // A nurse receives the invite with a reason, joins, and decrypts the briefing.
    let nurse = &w.nurses[0];
    loop {
        let inv = nurse.wait_for_invite(WAIT).await.unwrap();
        if inv.room_id() == command {
            break;
        }
    }
    let reason = nurse
        .invites()
        .into_iter()
        .find(|i| i.room_id == command)
        .and_then(|i| i.reason)
        .unwrap_or_default();
    assert!(
        reason.contains("Nurse in charge"),
        "invite reason: {reason:?}"
    );
    assert!(reason.contains("not the medical record"), "{reason}");
    nurse.join(&command).await.unwrap();
    let bot = w.bot_id();
    let (_, briefing) = nurse
        .wait_for_message(&command, WAIT, |s, b| s == bot && b.contains("BRIEFING"))
        .await
        .unwrap();
    assert!(briefing.contains("NOT the medical record"), "{briefing}");
    nurse
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("Instructions for Nurse in charge")
        })
        .await
        .unwrap();

    // The room's state is exactly what the security model asks for.
    let state = |t: &'static str| nurse.room_state_json(&command, t, "");
    assert_eq!(
        state("m.room.join_rules").await.unwrap()["join_rule"],
        "invite"
    );
    assert_eq!(
        state("m.room.history_visibility").await.unwrap()["history_visibility"],
        "invited"
    );
    assert_eq!(
        state("m.room.guest_access").await.unwrap()["guest_access"],
        "forbidden"
    );
    assert_eq!(
        state("m.room.encryption").await.unwrap()["algorithm"],
        "m.megolm.v1.aes-sha2"
    );
    let create = state("m.room.create").await.unwrap();
    assert_eq!(create["m.federate"], false, "{create}");
    assert_eq!(create["org.cordon.incident"], incident.as_str());
    let retention = state("m.room.retention").await.unwrap();
    assert_eq!(
        retention["max_lifetime"],
        (3600 + 15 * 60) * 1000,
        "{retention}"
    );
    let pl = state("m.room.power_levels").await.unwrap();
    for k in ["invite", "kick", "ban", "state_default"] {
        assert_eq!(pl[k], 100, "{k}: {pl}");
    }
    assert_eq!(pl["users_default"], 0);
    assert_eq!(pl["users"][w.commander.user_id().as_str()], 50);
    let topic = state("m.room.topic").await.unwrap();
    assert!(
        topic["topic"]
            .as_str()
            .unwrap()
            .contains("NOT the medical record"),
        "{topic}"
    );
    let pinned = state("m.room.pinned_events").await.unwrap();
    assert_eq!(
        pinned["pinned"].as_array().map(Vec::len),
        Some(1),
        "{pinned}"
    );

    // A member cannot invite anyone: the server refuses it.
    let outsider = unique("outsider");
    w.hs.register(&outsider, "pw", false).await.unwrap();
    let outsider_id = w.hs.user_id(&outsider).unwrap();
    assert!(
        nurse.invite(&command, &outsider_id).await.is_err(),
        "a member could invite"
    );

    // Status shows the incident, its rooms and who has joined.
    w.say("!cordon status").await;
    let status = w.bot_says(&format!("{incident} ·")).await;
    assert!(status.contains("active"), "{status}");
    assert!(status.contains("1 joined"), "{status}");
    assert!(
        status.contains("1 pending"),
        "the ghost is pending: {status}"
    );

    // The operator's view: /metrics shows the incident, its rooms and the pending ghost,
    // and timed the room creations; /healthz says sync is live and the store writable.
    let base = w
        .bot
        .as_ref()
        .and_then(|b| b.metrics_url())
        .expect("metrics URL logged");
    let http = reqwest::Client::new();
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.unwrap();
    for line in [
        "cordon_incidents{state=\"active\"} 1",
        "cordon_rooms{status=\"created\"} 2",
        // The ghost (no account) holds a seat in both rooms: two invites wait.
        "cordon_invites_pending 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    let created: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("cordon_matrix_request_duration_seconds_count{endpoint=\"createRoom\"} ")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(created >= 2, "createRoom timed {created} times:\n{metrics}");
    assert!(!metrics.contains(incident.as_str()), "no ids in metrics");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["sync"]["ok"], true, "{health}");
    assert_eq!(health["checks"]["store"]["ok"], true, "{health}");

    w.stop_bot();
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    assert!(store.verify_audit().unwrap().is_intact());
    drop(w.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_are_answered_audited_and_create_nothing() {
    let mut w = World::new(1).await;
    // An outsider in the control room is not allowed to declare.
    let name = unique("intruder");
    w.hs.register(&name, "pw", false).await.unwrap();
    let intruder = TestUser::login(w.hs, &name, "pw").await.unwrap();
    w.commander
        .invite(w.control(), intruder.user_id())
        .await
        .unwrap();
    intruder.wait_for_invite(WAIT).await.unwrap();
    intruder.join(w.control()).await.unwrap();
    // Not enrolled: refused before anything else is looked at.
    intruder
        .send_text(
            w.control(),
            &format!("!cordon declare {} \"Fake incident\"", w.playbook_id),
        )
        .await
        .unwrap();
    let reply = w.bot_says("has not been verified by cordon").await;
    assert_says_what_to_do_next(&reply);
    // Enrolled, but not allowed by the playbook.
    enrol(&cordon_bin(), &w.setup, &intruder).await.unwrap();
    intruder
        .send_text(
            w.control(),
            &format!("!cordon declare {} \"Fake incident 2\"", w.playbook_id),
        )
        .await
        .unwrap();
    let reply = w.bot_says("not allowed to declare").await;
    assert_says_what_to_do_next(&reply);

    w.say("!cordon declare no-such-playbook \"X\"").await;
    let reply = w.bot_says("There is no playbook").await;
    assert_says_what_to_do_next(&reply);
    assert!(
        reply.contains(&w.playbook_id),
        "lists the available ones: {reply}"
    );

    w.say("!cordon declare \"unbalanced").await;
    let reply = w.bot_says("quote").await;
    assert_says_what_to_do_next(&reply);

    w.say("!cordon frobnicate").await;
    w.bot_says("help").await;

    // Commands about incidents that do not exist: answered, each with what to do next.
    for (command, says) in [
        ("!cordon status zz-2222", "There is no incident `zz-2222`"),
        (
            "!cordon extend 1h",
            "There is no active incident in this room",
        ),
        (
            "!cordon standdown zz-3333",
            "There is no incident `zz-3333`",
        ),
        ("!cordon extend", "needs"),
    ] {
        w.say(command).await;
        let reply = w.bot_says(says).await;
        assert_says_what_to_do_next(&reply);
    }

    // A playbook that fails `cordon check` is refused with its problem.
    std::fs::write(
        w.setup.playbooks_dir.join("broken.yaml"),
        "id: broken\ntitle: Broken\nduration: { max: forever }\n",
    )
    .unwrap();
    w.say("!cordon declare broken \"X\"").await;
    let reply = w.bot_says("cannot be used").await;
    assert!(reply.contains("broken.yaml:"), "{reply}");
    assert_says_what_to_do_next(&reply);

    let admin_rooms = w.created_rooms_count().await;
    assert_eq!(admin_rooms, 0, "a refused command created rooms");

    w.stop_bot();
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let refusals = store
        .audit_entries(.., None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "command.refused")
        .count();
    // Unverified, not allowed, no playbook, a quote, an unknown command, a missing
    // argument, a broken playbook; the unknown incidents are answered, not audited.
    assert_eq!(refusals, 7, "every refusal is audited");
    assert!(
        store
            .incidents(&cordon::store::IncidentFilter::all())
            .unwrap()
            .is_empty()
    );
}

/// A refusal says what to do next: a command to send, or whom to ask.
#[track_caller]
pub(crate) fn assert_says_what_to_do_next(reply: &str) {
    let next = [
        "`!cordon ",
        "`cordon ",
        "Try ",
        "Ask ",
        "ask an operator",
        "Ask an operator",
    ];
    assert!(
        next.iter().any(|n| reply.contains(n)),
        "a refusal that does not say what to do next: {reply}"
    );
}

impl World {
    async fn created_rooms_count(&self) -> usize {
        self.rooms_created_by_bot().await.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_while_down_are_handled_once_and_stale_ones_are_not_run() {
    let mut w = World::new(1).await;
    w.stop_bot();
    w.say("!cordon status").await;
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    w.bot_says("No open incident").await;
    // A restart does not answer it again.
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    w.say("!cordon help").await;
    w.bot_says("declare").await;
    assert_eq!(w.bot_messages("No open incident"), 1);

    // A declare that waited while cordon was down longer than commands.max_age (15m,
    // seen through a clock skewed forward an hour) is not run; its sender is asked to
    // send it again.
    w.stop_bot();
    w.say(&format!("!cordon declare {} \"Old news\"", w.playbook_id))
        .await;
    let bot = w.restart(&[(cordon::clock::SKEW_VAR, "3600")]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    w.bot_says("send it again").await;
    assert_eq!(w.created_rooms_count().await, 0);
}

/// After an interruption at `point` and a restart: the incident `name` is declared
/// once, with exactly the playbook's rooms, each created once, every nurse invited to
/// each of their rooms once, and the briefing posted once. Returns the incident's id.
pub(crate) async fn assert_declared_once(w: &World, name: &str, point: &str) -> String {
    let summary = w.bot_says(&format!("DECLARED: {name}")).await;
    let incident = incident_id_in(&summary);

    let rooms = w.created_rooms(&incident).await;
    assert_eq!(rooms.len(), 2, "{point}: {rooms:?}");
    for (key, ids) in &rooms {
        assert_eq!(
            ids.len(),
            1,
            "{point}: room {key} created {} times",
            ids.len()
        );
    }
    assert_eq!(w.bot_messages(&format!("DECLARED: {name}")), 1, "{point}");

    // Each nurse is invited to each of their rooms exactly once, and the briefing
    // is there exactly once.
    for nurse in &w.nurses {
        for room in [&rooms["command"][0], &rooms["ward"][0]] {
            let invites = nurse
                .invites()
                .into_iter()
                .filter(|i| &i.room_id == room)
                .count();
            assert_eq!(
                invites,
                1,
                "{point}: {} invited {invites} times",
                nurse.user_id()
            );
        }
    }
    let nurse = &w.nurses[0];
    let command = &rooms["command"][0];
    nurse.join(command).await.unwrap();
    let bot_id = w.bot_id();
    nurse
        .wait_for_message(command, WAIT, |s, b| s == bot_id && b.contains("BRIEFING"))
        .await
        .unwrap();
    nurse
        .wait_for_message(command, WAIT, |s, b| {
            s == bot_id && b.contains("Instructions for Nurse in charge")
        })
        .await
        .unwrap();
    let briefings = nurse
        .messages(command)
        .iter()
        .filter(|m| m.sender == bot_id && m.body.contains("BRIEFING"))
        .count();
    assert_eq!(briefings, 1, "{point}: briefing posted {briefings} times");
    incident
}

/// Kills the bot with SIGKILL at each failpoint of a declare, restarts it, and checks
/// the end state: exactly the playbook's rooms, everyone invited once, nothing sent twice.
/// The points are taken in three worlds of their own, so the three run side by side.
async fn sigkill_at_each_point_resumes_without_duplicates(points: &[&str]) {
    let mut w = World::new(2).await;
    for (n, point) in points.iter().enumerate() {
        let name = format!("Crash drill {n}");
        let bot = w.restart(&[("CORDON_FAILPOINT", point)]);
        bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
        w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
            .await;
        let bot = w.bot.as_mut().unwrap();
        bot.wait_for_log("failpoint reached", WAIT).await.unwrap();
        bot.kill9();
        let bot = w.restart(&[]);
        bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
        assert_declared_once(&w, &name, point).await;
    }
    // Nothing cordon did itself, cut short by a kill, ever looked like forged state to
    // the guard (each restart's first pass has long run by now): a room's own creation
    // alias left by a kill before its removal, or a room still being created.
    assert_no_compromise_alert(&w);
    w.stop_bot();
    assert_all_active(&w, points.len());
}

/// No "possible server compromise" alert in the control room, as the commander reads it.
fn assert_no_compromise_alert(w: &World) {
    let bot_id = w.bot_id();
    let alarms: Vec<String> = w
        .commander
        .messages(w.control())
        .into_iter()
        .filter(|m| m.sender == bot_id && m.body.contains("COMPROMISE"))
        .map(|m| m.body)
        .collect();
    let log = std::fs::read_to_string(&w.setup.log).unwrap_or_default();
    assert!(alarms.is_empty(), "{alarms:?}\nbot log, every run:\n{log}");
}

/// A world on a homeserver of its own whose `testkit/creation_fault.py` does `action`
/// (`hold` or `refuse`) to the first power-levels event of each room cordon creates,
/// and the directory where it marks each room it acted on.
async fn world_with_creation_fault(action: &str) -> (World, tempfile::TempDir) {
    let markers = tempfile::tempdir().unwrap();
    let hs = cordon::dev::Synapse::own_with(cordon::dev::SynapseOptions {
        test_modules: vec![cordon::dev::TestModule {
            file_name: "creation_fault.py".into(),
            source: include_str!("../../creation_fault.py").into(),
            class: "CreationFault".into(),
            config: serde_json::json!({
                "sender_suffix": "-cordon:localhost",
                "action": action,
                "delay_seconds": 15,
                "marker_dir": markers.path(),
            }),
        }],
        ..cordon::dev::SynapseOptions::default()
    })
    .await
    .unwrap();
    (World::builder().on(hs).nurses(2, 0).build().await, markers)
}

/// After `w`'s declare of `name` (incident `incident`): the guard has looked at the
/// rooms since they were recorded (the invites alone make it look) and raised nothing,
/// and nothing cordon posted in the command room was in the clear.
async fn assert_taken_whole(w: &mut World, incident: &str) {
    let bot = w.bot.as_mut().unwrap();
    bot.wait_for_log("incident's rooms looked at", WAIT)
        .await
        .unwrap();
    assert!(
        !bot.log_text().contains("possible server compromise"),
        "{}",
        bot.log_text()
    );
    assert_no_compromise_alert(w);
    let rooms = w.created_rooms(incident).await;
    let bot_id = w.bot_id();
    let clear: Vec<String> = w.nurses[0]
        .messages(&rooms["command"][0])
        .into_iter()
        .filter(|m| m.sender == bot_id && m.encryption_info.is_none())
        .map(|m| m.body)
        .collect();
    assert!(clear.is_empty(), "cordon posted in the clear: {clear:?}");
}

/// cordon killed while the homeserver is still creating its rooms, and restarted: it
/// finds a room by its creation alias (or its tags) while Synapse has written only the
/// create event and cordon's join, without power levels, encryption or join rules. The
/// room is recorded, and used, only once it is whole: before, the guard took each of
/// its missing state events for a forgery and raised a "possible server compromise"
/// (first seen when the crash drills ran side by side), and the briefing and role
/// instructions went into the room unencrypted. The homeserver holds each new room's
/// power levels for 15 s, so the window is there every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_still_being_created_at_a_restart_is_taken_whole_and_raises_nothing() {
    let (mut w, markers) = world_with_creation_fault("hold").await;
    let name = "Slow rooms";
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    // A room half made on the homeserver: kill cordon while its createRoom runs.
    let held = tokio::time::timeout(WAIT, async {
        while std::fs::read_dir(markers.path()).unwrap().next().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(held.is_ok(), "no room creation was held:\n{}", w.log());
    w.crash_restart(&[]);
    w.wait_ready().await;
    let incident = assert_declared_once(&w, name, "a room still being created").await;
    assert_taken_whole(&mut w, &incident).await;
    let log = std::fs::read_to_string(&w.setup.log).unwrap();
    assert!(
        log.contains("is still being created"),
        "the restarted bot never met a room half made (the test lost its point):\n{log}"
    );
    w.stop_bot();
    assert_all_active(&w, 1);
}

/// With `provisioning.at_once: 1`, three declares sent together are provisioned one
/// after the other in the order they were sent: each takes its turn only once the one
/// before it is active, the later ones say they are waiting, and the summaries come in
/// that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_beyond_the_turns_wait_and_are_served_in_the_order_declared() {
    let mut w = World::builder()
        .nurses(1, 0)
        .config("provisioning: { at_once: 1 }\n")
        .build()
        .await;
    let names = ["Turn A", "Turn B", "Turn C"];
    for name in names {
        w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
            .await;
    }
    for name in names {
        w.bot_says(&format!("DECLARED: {name}")).await;
    }
    let bot_id = w.bot_id();
    let said: Vec<String> = w
        .commander
        .messages(w.control())
        .into_iter()
        .filter(|m| m.sender == bot_id)
        .map(|m| m.body)
        .collect();
    let at = |name: &str| {
        said.iter()
            .position(|b| b.contains(&format!("DECLARED: {name}")))
            .unwrap()
    };
    assert!(
        at("Turn A") < at("Turn B") && at("Turn B") < at("Turn C"),
        "summaries out of order: {said:#?}"
    );
    assert!(
        said.iter()
            .any(|b| b
                .contains("waiting for its turn (1 queued before it; 1 are provisioned at a time")),
        "the last declare never said it was waiting: {said:#?}"
    );
    // In the bot's log, each turn begins after the one before it is active.
    let log = w.log();
    let steps: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            if l.contains("cordon::app::provision: its turn") {
                Some("turn")
            } else if l.contains("cordon::app::provision: incident active") {
                Some("active")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        steps,
        ["turn", "active", "turn", "active", "turn", "active"],
        "{log}"
    );
    // Each holder's account was asked about for the first declare only: found active,
    // it stands for the next ones (`Ctx::account`). The ghost, who has no account, is
    // asked about every time. So 3 + 1 + 1 of the 9 asked before.
    let asked = w
        .metric("cordon_matrix_request_duration_seconds_count{endpoint=\"admin/users\"}")
        .await;
    assert_eq!(
        asked,
        Some(5.0),
        "account look-ups for 3 declares of 3 holders"
    );
    w.stop_bot();
    assert_all_active(&w, 3);
}

/// A homeserver whose `alias_creation_rules` refuse cordon its rooms' creation aliases
/// (`cordon doctor` warns of it): the refusal is told apart from a creation refused
/// half way (no room under the alias), and each room is created once without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_homeserver_that_refuses_creation_aliases_still_gets_each_room_once() {
    let mut settings = serde_json::Map::new();
    settings.insert(
        "alias_creation_rules".into(),
        serde_json::json!([{ "user_id": "*", "alias": "*", "room_id": "*", "action": "deny" }]),
    );
    let hs = cordon::dev::Synapse::own_with(cordon::dev::SynapseOptions {
        settings,
        ..cordon::dev::SynapseOptions::default()
    })
    .await
    .unwrap();
    let mut w = World::builder().on(hs).nurses(2, 0).build().await;
    let name = "No aliases";
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    let incident = assert_declared_once(&w, name, "aliases refused").await;
    assert!(
        w.log()
            .contains("the homeserver refuses cordon a room alias"),
        "the rooms were not created without an alias:\n{}",
        w.log()
    );
    assert_taken_whole(&mut w, &incident).await;
    w.stop_bot();
    assert_all_active(&w, 1);
}

/// The homeserver fails cordon's createRoom half way (as one stopped in the middle
/// would): the room exists under its creation alias with only its create event and
/// cordon's join. cordon's next attempt finds it by the alias, waits for the rest of
/// its state, and when none comes sends it itself (audited `room.creation-completed`),
/// then provisions as usual: encrypted, no alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_the_homeserver_left_half_made_is_completed_by_cordon() {
    let (mut w, markers) = world_with_creation_fault("refuse").await;
    let name = "Half made";
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    let incident = assert_declared_once(&w, name, "a room left half made").await;
    assert_eq!(
        std::fs::read_dir(markers.path()).unwrap().count(),
        2,
        "each room's creation was cut short"
    );
    assert_taken_whole(&mut w, &incident).await;
    w.stop_bot();
    assert_all_active(&w, 1);
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let completed: Vec<_> = store
        .audit_entries(.., None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "room.creation-completed")
        .collect();
    assert_eq!(completed.len(), 2, "{completed:?}");
}

/// SIGKILL while the rooms are created and before the invites go out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_rooms_are_created_resumes_without_duplicates() {
    sigkill_at_each_point_resumes_without_duplicates(&[
        "provision.before_create_room",
        // Rooms are created a few at once: `@2` is the second room to get there.
        "provision.before_create_room@2",
        "provision.after_create_room",
        "provision.after_create_room@2",
        // Recorded, its creation alias not yet removed: the alias stays until the
        // stand-down, and the guard must take the canonical alias for cordon's own.
        "provision.before_alias_removed",
        "provision.before_invite",
    ])
    .await;
}

/// SIGKILL while the invites are recorded and the first messages are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_inviting_and_sending_resumes_without_duplicates() {
    sigkill_at_each_point_resumes_without_duplicates(&[
        "provision.before_invites_recorded",
        "send.before@1",
        "send.before@2",
        "send.before@3",
        "send.before@4",
    ])
    .await;
}

/// SIGKILL while the briefings are posted and pinned, and before the incident is
/// active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_briefing_resumes_without_duplicates() {
    sigkill_at_each_point_resumes_without_duplicates(&[
        "send.before@5",
        "send.before@6",
        "send.before@7",
        "provision.before_pin",
        "provision.before_active",
    ])
    .await;
}

/// In the stopped bot's store: `count` incidents, all active, and the audit chain intact.
pub(crate) fn assert_all_active(w: &World, count: usize) {
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    assert!(store.verify_audit().unwrap().is_intact());
    let incidents = store
        .incidents(&cordon::store::IncidentFilter::all())
        .unwrap();
    assert_eq!(incidents.len(), count);
    assert!(
        incidents
            .iter()
            .all(|i| i.state == cordon::domain::incident::State::Active)
    );
}

/// cordon joins a control room only when an operator invites it into an encrypted room;
/// every other invite is declined (and audited). Its logs never carry its password or
/// its access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operator_invites_to_encrypted_rooms_are_accepted_and_logs_hold_no_secrets() {
    let mut w = World::new(0).await;
    let bot_id = w.bot_id();

    // A stranger's invite into an encrypted room is declined.
    let name = unique("stranger");
    w.hs.register(&name, "pw", false).await.unwrap();
    let stranger = TestUser::login(w.hs, &name, "pw").await.unwrap();
    let theirs = stranger
        .create_encrypted_room("Stranger's room", std::slice::from_ref(&bot_id))
        .await
        .unwrap();
    // The operator's invite into an unencrypted room is declined too.
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.name = Some("Plain room".into());
    request.invite = vec![bot_id.clone()];
    let plain = w.commander.create_room(request).await.unwrap();

    for room in [&theirs, &plain] {
        let mut declined = false;
        for _ in 0..600 {
            let state = w
                .commander
                .room_state_json(room, "m.room.member", bot_id.as_str())
                .await;
            let stranger_view = stranger
                .room_state_json(room, "m.room.member", bot_id.as_str())
                .await;
            let membership = state
                .ok()
                .or(stranger_view.ok())
                .and_then(|v| v["membership"].as_str().map(str::to_owned));
            if membership.as_deref() == Some("leave") {
                declined = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(declined, "cordon did not decline the invite to {room}");
    }

    let log = w.bot.as_ref().unwrap().log_text();
    w.stop_bot();
    let password = std::fs::read_to_string(w.setup.dir.join("password")).unwrap();
    let session_file = w.setup.state_dir.join("session.json");
    let session =
        cordon::matrix::session::read_session(&session_file, &w.setup.store_passphrase().unwrap())
            .unwrap()
            .expect("a saved session");
    assert!(!session.was_in_the_clear);
    let token = session.session.tokens.access_token.as_str();
    assert!(!log.contains(password.trim()), "the password is in the log");
    assert!(!log.contains(token), "the access token is in the log");
    // Nor is it in session.json: sealed with the store passphrase, which the file
    // does not open without.
    let on_disk = std::fs::read_to_string(&session_file).unwrap();
    assert!(
        !on_disk.contains(token),
        "the access token is in session.json: {on_disk}"
    );
    assert!(!on_disk.contains("access_token"), "{on_disk}");
    assert!(
        cordon::matrix::session::read_session(
            &session_file,
            &cordon::input::config::Secret::new("not the passphrase".to_owned()),
        )
        .is_err()
    );

    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let declined = store
        .audit_entries(.., None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "invite.declined")
        .count();
    assert_eq!(declined, 2);
    assert_eq!(
        store.control_rooms().unwrap(),
        vec![w.control().to_string()]
    );
}

/// `verification: required`: only enrolled holders are invited, the others are reported
/// pending with the reason, and enrolling one later lets them in. A command from a
/// device that is not cross-signed (a second login with the commander's password) is
/// refused, and the refusal is readable by the room's verified members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_holders_are_not_invited_and_unverified_devices_cannot_command() {
    let w = World::builder().nurses(2, 1).build().await;
    let (enrolled, unenrolled) = (&w.nurses[0], &w.nurses[1]);

    // The commander's password on another device: no cross-signing, so no authority.
    let localpart = w.commander.user_id().localpart().to_owned();
    let stolen = TestUser::login(w.hs, &localpart, "pw").await.unwrap();
    stolen
        .send_text(
            w.control(),
            &format!("!cordon declare {} \"Phantom\"", w.playbook_id),
        )
        .await
        .unwrap();
    let refusal = w.bot_says("did not act on `declare`").await;
    assert!(
        refusal.contains("not verified with your own identity"),
        "{refusal}"
    );
    assert_eq!(w.created_rooms_count().await, 0, "the phantom declared");

    w.say(&format!(
        "!cordon declare {} \"Chemical spill\"",
        w.playbook_id
    ))
    .await;
    let summary = w.bot_says("DECLARED: Chemical spill").await;
    let incident = incident_id_in(&summary);
    assert!(
        summary.contains(&format!(
            "{} not invited: not enrolled",
            unenrolled.user_id()
        )),
        "{summary}"
    );
    assert!(summary.contains("cordon verify"), "says how: {summary}");
    let rooms = w.created_rooms(&incident).await;

    // The enrolled nurse is invited to both rooms; the other to none.
    for _ in 0..2 {
        enrolled.wait_for_invite(WAIT).await.unwrap();
    }
    unenrolled.wait_for_syncs(2, WAIT).await.unwrap();
    assert!(
        unenrolled.invites().is_empty(),
        "an unenrolled holder was invited"
    );

    // Enrolled in person later, they are let in without anyone re-declaring.
    enrol(&cordon_bin(), &w.setup, unenrolled).await.unwrap();
    let invite = unenrolled.wait_for_invite(WAIT).await.unwrap_or_else(|e| {
        panic!(
            "{e}\nbot log:\n{}",
            w.bot.as_ref().map(|b| b.log_text()).unwrap_or_default()
        )
    });
    assert!(
        rooms.values().flatten().any(|r| r == invite.room_id()),
        "invited to {}",
        invite.room_id()
    );
    unenrolled.join(invite.room_id()).await.unwrap();

    // The stolen device cannot read what cordon says in the control room: the refusal
    // reached it only as ciphertext.
    stolen.wait_for_syncs(2, WAIT).await.unwrap();
    let bot = w.bot_id();
    assert!(
        stolen.messages(w.control()).iter().all(|m| m.sender != bot),
        "an unverified device decrypted a message from cordon"
    );
    assert!(
        !stolen.undecryptable(w.control()).is_empty(),
        "the stolen device saw none of cordon's messages at all"
    );
    stolen.stop().await;
}

/// `!cordon admit … --unverified --reason`, the commander's emergency override: an
/// unenrolled holder is let in, the commander's reason is audited, and the invite's
/// reason (the one thing an unverified person can read) tells them that cordon's own
/// messages stay unreadable to them until they are enrolled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commander_can_admit_an_unverified_holder_with_an_audited_reason() {
    let mut w = World::builder().nurses(1, 1).build().await;
    let locum = &w.nurses[0];
    w.say(&format!("!cordon declare {} \"Power cut\"", w.playbook_id))
        .await;
    let summary = w.bot_says("DECLARED: Power cut").await;
    let incident = incident_id_in(&summary);
    assert!(
        summary.contains(&format!("{} not invited", locum.user_id())),
        "{summary}"
    );

    w.say(&format!(
        "!cordon admit {incident} {} --unverified --reason \"Locum on shift\"",
        locum.user_id()
    ))
    .await;
    let reply = w.bot_says("ADMITTED WITHOUT VERIFICATION").await;
    assert!(
        reply.contains("Locum on shift") && reply.contains(locum.user_id().as_str()),
        "{reply}"
    );
    for _ in 0..2 {
        locum.wait_for_invite(WAIT).await.unwrap();
    }
    for invite in locum.invites() {
        let reason = invite.reason.unwrap_or_default();
        assert!(
            reason.contains("unreadable") && reason.contains("enrol"),
            "the invite does not warn them: {reason}"
        );
    }

    let locum_id = locum.user_id().to_owned();
    w.stop_bot();
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let admitted: Vec<_> = store
        .audit_entries(.., None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "roster.admitted-unverified")
        .map(|e| (e.actor.clone(), e.details_value()))
        .collect();
    assert_eq!(admitted.len(), 1, "{admitted:?}");
    assert_eq!(admitted[0].0, w.commander.user_id().as_str());
    assert_eq!(admitted[0].1["reason"], "Locum on shift");
    let entries = store.roster_for_user(locum_id.as_str()).unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    for entry in entries {
        assert!(entry.is_allowed() && entry.unverified, "{entry:?}");
    }
}
