//! Time limits, reminders, retention and advice against the real Synapse. A real
//! homeserver cannot run on paused time, so the tests move the bot's clock instead
//! ([`World::advance_clock`], [`World::freeze_clock`]): an expiry two hours away, a
//! retention window of an hour or a cron firing arrives in a moment, and what follows
//! is waited for as it shows (a message, a redaction, a log line). The bot is its own
//! process; people are matrix-sdk clients of their own.

use std::time::Duration;

use chrono::{DateTime, Utc};

use cordon::domain::incident::IncidentId;
use cordon::store::Store;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::{EventId, OwnedRoomId, RoomId};
use serde_json::Value;

use crate::support::WAIT;
use crate::world::{Timing, World, incident_id_in};

/// The failpoint that stops the stand-down pipeline once the rooms are frozen, before
/// the archive is sealed.
pub(crate) const FREEZE_ONLY: &str = "standdown.seal";

/// Declares the world's playbook and returns the incident id and its command room,
/// joined by the first nurse.
pub(crate) async fn declare(w: &World, name: &str) -> (String, OwnedRoomId) {
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    let summary = w.bot_says("DECLARED").await;
    let incident = incident_id_in(&summary);
    let rooms = w.created_rooms(&incident).await;
    let command = rooms["command"][0].clone();
    let nurse = &w.nurses[0];
    loop {
        let invite = nurse.wait_for_invite(WAIT).await.unwrap();
        if invite.room_id() == command {
            break;
        }
    }
    nurse.join(&command).await.unwrap();
    (incident, command)
}

/// Asks for `status` of `incident` and returns the answer (the newest one).
async fn status(w: &World, incident: &str) -> String {
    let needle = format!("{incident} ·");
    let before = w.bot_messages(&needle);
    w.say(&format!("!cordon status {incident}")).await;
    let bot = w.setup.user_id.clone();
    for _ in 0..(WAIT.as_secs() * 5) {
        let answers: Vec<String> = w
            .commander
            .messages(w.control())
            .into_iter()
            .filter(|m| m.sender == bot && m.body.contains(&needle))
            .map(|m| m.body)
            .collect();
        if answers.len() > before {
            return answers.last().cloned().unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no answer to status");
}

fn audit_actions(w: &World, incident: &str) -> Vec<(String, String, Value)> {
    let store = Store::open_existing(&w.store_dir()).unwrap();
    let id = IncidentId::parse(incident).unwrap();
    store
        .audit_entries(.., Some(&id))
        .unwrap()
        .into_iter()
        .map(|e| {
            let details = e.details_value();
            (e.actor, e.action, details)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_arrives_on_schedule_as_a_notice_with_its_template_filled_in() {
    let timing = Timing {
        reminders: r#"[{ cron: "* * * * *", text: "Reminder for {incident_id}: {time_left} left. Transcribe advice." }]"#,
        ..Timing::default()
    };
    let mut w = World::timed(1, 0, &timing).await;
    let (incident, command) = declare(&w, "Reminder drill").await;
    let bot = w.setup.user_id.clone();
    let needle = format!("Reminder for {incident}:");
    // Cron `* * * * *` fires at the top of each minute: a minute on, one has passed.
    w.advance_clock(Duration::from_secs(60)).await;
    let (_, body) = w.nurses[0]
        .wait_for_message(&command, WAIT, |s, b| s == bot && b.contains(&needle))
        .await
        .unwrap_or_else(|e| panic!("no reminder: {e}\n{}", w.bot.as_ref().unwrap().log_text()));
    assert!(body.contains(" left. Transcribe advice."), "{body}");
    assert!(!body.contains('{'), "template filled in: {body}");
    assert!(body.contains(": 1h 5"), "time left: {body}");
    w.stop_bot();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_warning_then_the_expiry_stand_the_incident_down_and_freeze_its_rooms() {
    // The retention window is as long as the incident, so no sweep removes a notice
    // before the nurse has read it (the clock moves ahead of the messages' timestamps).
    let timing = Timing {
        duration: "{ max: 2h, warn_before: [30m], extend_max: 0s }",
        retention: "{ messages: 2h }",
        reminders: "[]",
        recipient: None,
        extra: "",
    };
    let mut w = World::timed(1, 0, &timing).await;
    let (incident, command) = declare(&w, "Expiry drill").await;
    let bot = w.setup.user_id.clone();
    // The pipeline stops after the freeze, so the frozen rooms can be looked at (the
    // `standdown` tests follow it to the end).
    w.restart(&[("CORDON_FAILPOINT", FREEZE_ONLY)])
        .wait_for_log("cordon is ready", WAIT)
        .await
        .unwrap();

    // The warning, due 30 min before the expiry: in the control room, with how to
    // extend (here: it cannot be) …
    w.advance_clock(Duration::from_secs(91 * 60)).await;
    let warning = w.bot_says("stands down in").await;
    assert!(warning.contains(&incident), "{warning}");
    assert!(warning.contains("cannot be extended"), "{warning}");
    // … and in the incident room.
    w.nurses[0]
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("This incident stands down in")
        })
        .await
        .unwrap();

    // The expiry: stood down by cordon, rooms read-only.
    w.advance_clock(Duration::from_secs(30 * 60)).await;
    let done = w.bot_says("has stood down").await;
    assert!(done.contains("its time limit was reached"), "{done}");
    w.nurses[0]
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("These rooms are now read-only")
        })
        .await
        .unwrap();
    let pl = w.nurses[0]
        .room_state_json(&command, "m.room.power_levels", "")
        .await
        .unwrap();
    assert_eq!(pl["events_default"], 100, "{pl}");
    let refused = w.nurses[0].send_text(&command, "still here?").await;
    assert!(refused.is_err(), "a member could still post after expiry");

    w.bot.take().unwrap().kill9();
    let audit = audit_actions(&w, &incident);
    assert!(
        audit
            .iter()
            .any(|(actor, action, _)| actor == "cordon" && action == "incident.stand-down"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(_, a, _)| a == "incident.frozen"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_is_allowed_up_to_the_bound_and_refused_beyond_it_with_what_is_left() {
    // Default timing: max 2h, extend_max 1h.
    let mut w = World::timed(1, 0, &Timing::default()).await;
    let (incident, command) = declare(&w, "Extend drill").await;
    let bot = w.setup.user_id.clone();

    w.say(&format!("!cordon extend {incident} 2h")).await;
    let refused = w.bot_says("can be extended by at most").await;
    assert!(refused.contains("1h more"), "{refused}");
    assert!(refused.contains("Nothing was changed"), "{refused}");

    w.say(&format!("!cordon extend {incident} 40m")).await;
    let ok = w.bot_says(&format!("Extended {incident} by 40m")).await;
    assert!(ok.contains("Extension left: 20m"), "{ok}");
    w.nurses[0]
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("Extended by 40m")
        })
        .await
        .unwrap();

    w.say(&format!("!cordon extend {incident} 30m")).await;
    let again = w.bot_says("at most 20m more").await;
    assert!(again.contains("40m used"), "{again}");

    w.stop_bot();
    let audit = audit_actions(&w, &incident);
    let extended: Vec<_> = audit
        .iter()
        .filter(|(_, a, _)| a == "incident.extended")
        .collect();
    assert_eq!(extended.len(), 1, "one extension audited: {audit:?}");
    assert_eq!(extended[0].0, w.commander.user_id().as_str());
    let refusals = audit
        .iter()
        .filter(|(_, a, d)| a == "command.refused" && d["why"] == "beyond-bound")
        .count();
    assert_eq!(refusals, 2, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_restarted_across_a_due_expiry_still_stands_the_incident_down() {
    // No grace after downtime: the incident stands down at once, as it always did (the
    // grace is the next test's).
    let mut w = World::builder()
        .config("deadlines: { grace_after_downtime: 0s }\n")
        .build()
        .await;
    let (incident, command) = declare(&w, "Restart drill").await;
    w.stop_bot();
    // cordon comes back after the expiry (2h) has passed: its clock is moved on,
    // through the clock abstraction.
    let bot = w.restart(&[
        ("CORDON_CLOCK_SKEW_SECS", "7500"),
        ("CORDON_FAILPOINT", FREEZE_ONLY),
    ]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    let done = w.bot_says("has stood down").await;
    assert!(done.contains(&incident), "{done}");
    let pl = w.nurses[0]
        .room_state_json(&command, "m.room.power_levels", "")
        .await
        .unwrap();
    assert_eq!(pl["events_default"], 100, "{pl}");
    // The warning whose deadline had passed too was dropped, not sent late.
    assert_eq!(w.bot_messages("stands down in"), 0);
    w.bot.take().unwrap().kill9();
    let audit = audit_actions(&w, &incident);
    assert!(
        audit.iter().any(|(_, a, d)| a == "timer.skipped"
            && d["timer"].as_str().is_some_and(|t| t.contains("/warn/"))),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(_, a, _)| a == "incident.stand-down"),
        "{audit:?}"
    );
}

/// cordon comes back after expiries that passed while it was down: it first posts the
/// warning it could not send, with a grace (`deadlines.grace_after_downtime`, 10 min by
/// default) in which the commander may extend. The incident extended stays open past
/// the grace; the other stands down when its grace ends. Both graces are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_after_a_missed_expiry_cordon_warns_and_stands_down_after_a_grace() {
    // Commands are checked against cordon's clock, which is about to be two hours ahead.
    let mut w = World::builder()
        .config("commands: { max_age: 3h }\n")
        .build()
        .await;
    let mut ids = Vec::new();
    for name in ["Grace drill", "Grace drill two"] {
        w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
            .await;
        ids.push(incident_id_in(
            &w.bot_says(&format!("DECLARED: {name} ")).await,
        ));
    }
    let (extended, lapsed) = (&ids[0], &ids[1]);
    w.stop_bot();
    // Down across both expiries (2h after the declare).
    w.set_clock(cordon::clock::Setting::Offset(chrono::TimeDelta::minutes(
        125,
    )))
    .await;
    w.restart(&[])
        .wait_for_log("cordon is ready", WAIT)
        .await
        .unwrap();
    for id in [extended, lapsed] {
        let warned = w
            .bot_says_all(&["while cordon was unavailable", id.as_str()])
            .await;
        assert!(warned.contains("unless extended"), "{warned}");
        assert!(warned.contains(&format!("!cordon extend {id}")), "{warned}");
    }
    assert_eq!(
        w.bot_messages("has stood down"),
        0,
        "stood down before the grace"
    );
    w.say(&format!("!cordon extend {extended} 1h")).await;
    w.bot_says(&format!("Extended {extended} by 1h")).await;

    // The grace ends.
    w.advance_clock(Duration::from_secs(11 * 60)).await;
    let done = w.bot_says_all(&["has stood down", lapsed.as_str()]).await;
    assert!(done.contains("its time limit was reached"), "{done}");
    let open = status(&w, extended).await;
    assert!(open.contains("active"), "{open}");
    w.bot.take().unwrap().kill9();
    for id in [extended, lapsed] {
        let audit = audit_actions(&w, id);
        assert!(
            audit
                .iter()
                .any(|(_, a, d)| a == "incident.expiry-grace" && d["grace_secs"] == 600),
            "{audit:?}"
        );
    }
}

async fn react(user: &cordon::dev::TestUser, room: &RoomId, event: &EventId, key: &str) {
    let room = user.client().get_room(room).unwrap();
    room.send(ReactionEventContent::new(Annotation::new(
        event.to_owned(),
        key.to_owned(),
    )))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_is_flagged_counted_and_marked_transcribed_by_reaction_and_by_command() {
    let mut w = World::timed(1, 0, &Timing::default()).await;
    let (incident, command) = declare(&w, "Advice drill").await;
    let bot = w.setup.user_id.clone();
    let nurse = &w.nurses[0];
    // The commander is in the command room too (as moderator).
    loop {
        let invite = w.commander.wait_for_invite(WAIT).await.unwrap();
        if invite.room_id() == command {
            break;
        }
    }
    w.commander.join(&command).await.unwrap();
    let first = nurse
        .send_text(&command, "Give 1g tranexamic acid to P1-007")
        .await
        .unwrap();
    let second = nurse
        .send_text(&command, "P1-009 to CT before theatre")
        .await
        .unwrap();

    react(&w.commander, &command, &first, "🩺").await;
    w.commander
        .send_text(&command, &format!("!cordon advice {second}"))
        .await
        .unwrap();
    w.commander
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("Flagged as clinical advice")
        })
        .await
        .unwrap();

    // Both outstanding: `status` counts them.
    let counted = |n: usize| format!("advice not yet marked transcribed: {n}");
    let mut seen = String::new();
    for _ in 0..30 {
        seen = status(&w, &incident).await;
        if seen.contains(&counted(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(seen.contains(&counted(2)), "{seen}");

    // The nurse (a verified member) marks one with ✅, the other by command. The ✅
    // is unencrypted, so the server alone vouches for it: it is recorded, unconfirmed,
    // and the item stays outstanding.
    react(nurse, &command, &first, "✅").await;
    nurse
        .send_text(&command, &format!("!cordon transcribed {second}"))
        .await
        .unwrap();
    nurse
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("Marked transcribed")
        })
        .await
        .unwrap();
    for _ in 0..30 {
        seen = status(&w, &incident).await;
        if seen.contains(&counted(1)) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        seen.contains(&counted(1)) && seen.contains("unconfirmed"),
        "a ✅ reaction alone must leave the advice outstanding, marked unconfirmed: {seen}"
    );
    // Only the command, from a verified device, confirms it.
    nurse
        .send_text(&command, &format!("!cordon transcribed {first}"))
        .await
        .unwrap();
    nurse
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("Marked transcribed") && b.contains(first.as_str())
        })
        .await
        .unwrap();
    for _ in 0..30 {
        seen = status(&w, &incident).await;
        if !seen.contains("advice not yet marked transcribed") {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        !seen.contains("advice not yet marked transcribed"),
        "status still counts transcribed advice: {seen}\n{}",
        w.bot.as_ref().unwrap().log_text()
    );

    let nurse_id = nurse.user_id().to_owned();
    w.stop_bot();
    let audit = audit_actions(&w, &incident);
    let count = |action: &str| audit.iter().filter(|(_, a, _)| a == action).count();
    assert_eq!(count("advice.flagged"), 2, "{audit:?}");
    assert_eq!(count("advice.transcribed"), 2, "{audit:?}");
    assert_eq!(count("advice.transcribed-unconfirmed"), 1, "{audit:?}");
    let marked_by: Vec<&str> = audit
        .iter()
        .filter(|(_, a, _)| a == "advice.transcribed")
        .map(|(actor, _, _)| actor.as_str())
        .collect();
    assert!(
        marked_by.iter().all(|a| *a == nurse_id.as_str()),
        "{marked_by:?}"
    );
    // The audit names messages by id, never by content.
    let text = format!("{audit:?}");
    assert!(!text.contains("tranexamic"), "{text}");
}

/// The reason of the redaction of `event` as `user` sees it, or `None` while it is not
/// redacted (`GET /rooms/{room}/event/{event}`, raw, as any client reads it).
async fn redaction_reason(
    user: &cordon::dev::TestUser,
    room: &RoomId,
    event: &EventId,
) -> Option<String> {
    let body = event_json(user, room, event).await;
    let because = body.pointer("/unsigned/redacted_because")?;
    Some(
        because
            .pointer("/content/reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    )
}

/// When the homeserver says `event` was sent (its `origin_server_ts`).
async fn sent_at(user: &cordon::dev::TestUser, room: &RoomId, event: &EventId) -> DateTime<Utc> {
    let body = event_json(user, room, event).await;
    let ms = body["origin_server_ts"].as_i64().unwrap();
    DateTime::from_timestamp_millis(ms).unwrap()
}

/// `event` as `user` reads it (`GET /rooms/{room}/event/{event}`, raw).
async fn event_json(user: &cordon::dev::TestUser, room: &RoomId, event: &EventId) -> Value {
    let client = user.client();
    let url = client
        .homeserver()
        .join(&format!(
            "_matrix/client/v3/rooms/{}/event/{}",
            urlencode(room.as_str()),
            urlencode(event.as_str())
        ))
        .unwrap();
    reqwest::Client::new()
        .get(url)
        .bearer_auth(client.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Waits until `event` is redacted, and returns the reason.
pub(crate) async fn wait_redacted(w: &World, room: &RoomId, event: &EventId) -> String {
    for _ in 0..(WAIT.as_secs() * 5) {
        if let Some(reason) = redaction_reason(&w.nurses[0], room, event).await {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{event} was not redacted\n{}",
        w.bot.as_ref().unwrap().log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_older_than_the_window_are_redacted_and_newer_ones_are_not() {
    let timing = Timing {
        retention: "{ messages: 1h, seal_before_redact: true }",
        ..Timing::default()
    };
    let mut w = World::timed(1, 0, &timing).await;
    let (incident, command) = declare(&w, "Retention drill").await;
    let bot = w.setup.user_id.clone();
    let nurse = &w.nurses[0];
    let old = nurse
        .send_text(&command, "P1-003: 10ml/kg bolus then reassess")
        .await
        .unwrap();
    // Flagged as advice by its author, never marked transcribed: one reminder to them.
    react(nurse, &command, &old, "🩺").await;
    let newer = nurse.send_text(&command, "Bay 4 free").await.unwrap();
    let (old_at, newer_at) = (
        sent_at(nurse, &command, &old).await,
        sent_at(nurse, &command, &newer).await,
    );
    assert!(old_at < newer_at, "{old_at} {newer_at}");

    // 57 minutes on: the advice reminder and the briefing's re-post (each due 6 min
    // before the window ends) come, and no sweep yet (due an hour after the declare).
    w.advance_clock(Duration::from_secs(57 * 60)).await;
    let (_, reminder) = nurse
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("is not marked transcribed")
        })
        .await
        .unwrap();
    assert_eq!(
        redaction_reason(nurse, &command, &old).await,
        None,
        "the advice was redacted before its author was reminded"
    );
    // The clock stops an hour after the moment between the two messages: the old one
    // is past the window, the newer one not, whenever the sweep runs.
    w.freeze_clock(old_at + (newer_at - old_at) / 2 + chrono::TimeDelta::hours(1))
        .await;
    let reason = wait_redacted(&w, &command, &old).await;
    assert_eq!(reason, "retention: 1h");
    // Sealed for the records officer before it was redacted (the format and its
    // decryption are `retention::*`'s tests).
    let sealed = w
        .setup
        .state_dir
        .parent()
        .unwrap()
        .join("archives")
        .join(&incident)
        .join("pre-seal");
    let segments = std::fs::read_dir(&sealed)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    assert!(segments > 0, "no sealed segment in {}", sealed.display());
    assert_eq!(
        redaction_reason(nurse, &command, &newer).await,
        None,
        "a message younger than the window was redacted with the old one"
    );
    // The author was reminded, by link, before the redaction.
    assert!(
        reminder.contains(old.as_str()),
        "names the message by link: {reminder}"
    );
    assert!(!reminder.contains("bolus"), "never quotes it: {reminder}");

    // The briefing was posted again and pinned in place of the old one, which
    // retention then removed.
    nurse
        .wait_for_message(&command, WAIT, |s, b| {
            s == bot && b.contains("Posted again")
        })
        .await
        .unwrap();
    let pinned = nurse
        .room_state_json(&command, "m.room.pinned_events", "")
        .await
        .unwrap();
    let pinned: Vec<&str> = pinned["pinned"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(pinned.len(), 1, "{pinned:?}");
    let current = EventId::parse(pinned[0]).unwrap();
    assert_eq!(redaction_reason(nurse, &command, &current).await, None);

    // The newer message goes too once it is old enough: the next sweep continues.
    w.run_clock_from(newer_at + chrono::TimeDelta::hours(1) + chrono::TimeDelta::seconds(1))
        .await;
    assert_eq!(wait_redacted(&w, &command, &newer).await, "retention: 1h");
    // State is never redacted.
    let pl = nurse
        .room_state_json(&command, "m.room.power_levels", "")
        .await
        .unwrap();
    assert!(pl.get("users").is_some(), "power levels intact: {pl}");
    let retention = nurse
        .room_state_json(&command, "m.room.retention", "")
        .await
        .unwrap();
    assert!(retention.get("max_lifetime").is_some(), "{retention}");
    w.stop_bot();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_pauses_the_sweeps_until_it_is_released() {
    let timing = Timing {
        retention: "{ messages: 30s }",
        ..Timing::default()
    };
    let mut w = World::timed(1, 0, &timing).await;
    let (incident, command) = declare(&w, "Hold drill").await;
    w.say(&format!(
        "!cordon hold {incident} --reason \"Coroner's request 2026/114\""
    ))
    .await;
    w.bot_says("Legal hold placed").await;
    let kept = w.nurses[0]
        .send_text(&command, "Keep me for the coroner")
        .await
        .unwrap();
    // Wait until a sweep of the room has fired after the message became due, and was
    // paused by the hold.
    let paused = |log: &str| {
        log.lines()
            .filter(|l| l.contains("retention sweep paused by a legal hold"))
            .filter(|l| l.contains(&incident) && l.contains("room=\"command\""))
            .count()
    };
    // The room's first sweep (30 s after the declare) comes before the message is due;
    // the second (30 s after the first) after. The clock moves 30 s for each.
    for sweeps in 1..=2 {
        w.advance_clock(Duration::from_secs(30)).await;
        for _ in 0..(WAIT.as_secs() * 10) {
            if paused(&w.log()) >= sweeps {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let log = w.log();
    assert!(paused(&log) >= 2, "no paused sweeps:\n{log}");
    assert_eq!(
        redaction_reason(&w.nurses[0], &command, &kept).await,
        None,
        "a sweep redacted a message under a legal hold"
    );

    // Only an operator or a records officer may release it; the commander is one here.
    w.say(&format!("!cordon release {incident}")).await;
    w.bot_says("released").await;
    // The next sweep, due 30 s after the last paused one.
    w.advance_clock(Duration::from_secs(30)).await;
    assert_eq!(wait_redacted(&w, &command, &kept).await, "retention: 30s");
    w.stop_bot();
    let audit = audit_actions(&w, &incident);
    assert!(
        audit.iter().any(|(_, a, _)| a == "incident.hold-set"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(_, a, _)| a == "incident.hold-released"),
        "{audit:?}"
    );
}

/// SIGKILL inside the bot's own retention sweep, at five points from writing a page's
/// pre-seal segment to recording the finished sweep, each followed by a restart. Every old message ends up
/// redacted, and sealed exactly once for the records officer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_inside_a_sweep_resumes_and_seals_each_message_once() {
    let identity = age::x25519::Identity::generate();
    let timing = Timing {
        retention: "{ messages: 40s, seal_before_redact: true }",
        recipient: Some(identity.to_public().to_string()),
        ..Timing::default()
    };
    let mut w = World::timed(1, 0, &timing).await;
    let (incident, command) = declare(&w, "Sweep crash drill").await;
    let mut old = Vec::new();
    for i in 0..5 {
        let sent = w.nurses[0]
            .send_text(&command, &format!("Obs round {i}: stable"))
            .await
            .unwrap();
        old.push(sent);
    }
    // The messages are past the window for every bot from here on: the clock is
    // moved a minute on while no bot runs, so the first sweep runs under a failpoint.
    w.stop_bot();
    w.advance_clock(Duration::from_secs(60)).await;
    // In the order a sweep reaches them: the segment written but not yet recorded; the
    // segment recorded; three of the page's five redactions done; the page redacted;
    // the sweep done but not yet recorded.
    for point in [
        "retention.segment-written",
        "retention.sealed",
        "retention.redacted@3",
        "retention.page-redacted",
        "retention.before_finish",
    ] {
        let bot = w.restart(&[("CORDON_FAILPOINT", point)]);
        bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
        w.kill_at(point).await;
    }
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    for event in &old {
        assert_eq!(wait_redacted(&w, &command, event).await, "retention: 40s");
    }
    w.stop_bot();

    let dir = w
        .setup
        .dir
        .join("archives")
        .join(&incident)
        .join("pre-seal");
    let mut sealed: std::collections::BTreeMap<String, usize> = Default::default();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        for line in cordon::archive::segment::read_segment(&path, &identity).unwrap() {
            *sealed.entry(line.event_id).or_default() += 1;
        }
    }
    for event in &old {
        assert_eq!(
            sealed.get(event.as_str()),
            Some(&1),
            "{event} sealed {:?} times: {sealed:?}",
            sealed.get(event.as_str())
        );
    }
    assert!(sealed.values().all(|n| *n == 1), "{sealed:?}");
}
