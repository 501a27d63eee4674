use std::path::Path;

use super::*;

const PLAYBOOK: &str = r#"
id: drill
title: "Major incident drill"
trigger: { allowed: [role:lead] }
duration: { max: 2h, warn_before: [30m], extend_max: 1h }
retention: { messages: 1h }
roles:
  lead: { title: Incident lead, holders: ["@lead:hs.example"], min: 1, instructions: "Run {incident}." }
  nurse: { title: Nurse in charge, holders: ["@n1:hs.example", "@n2:hs.example"] }
rooms:
  - key: command
    name: "{incident} - Command"
    members: [lead, nurse]
    moderators: [lead]
  - key: open
    name: "{incident} - Open"
    members: [nurse]
    federate: true
archive:
  recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
  keep: 30d
"#;

fn playbook() -> Playbook {
    crate::input::playbook::load_str(Path::new("drill.yaml"), PLAYBOOK).unwrap()
}

fn plans(pb: &Playbook) -> Vec<RoomPlan> {
    plans_of(pb, false)
}

fn plans_of(pb: &Playbook, exercise: bool) -> Vec<RoomPlan> {
    let id = IncidentId::parse("dr-2345").unwrap();
    let commander = UserId::parse("@boss:hs.example").unwrap();
    let now = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let facts = IncidentFacts {
        id: &id,
        display_name: "Tram crash",
        playbook: pb,
        commander: &commander,
        expires_at: now + chrono::TimeDelta::hours(2),
        time_zone: chrono_tz::Europe::London,
        exercise,
    };
    plan_rooms(&facts, now)
}

fn state_of<'a>(plan: &'a RoomPlan, t: &str) -> &'a Value {
    &plan
        .initial_state
        .iter()
        .find(|e| e.event_type == t)
        .unwrap_or_else(|| panic!("no {t}"))
        .content
}

#[test]
fn rooms_are_locked_down_as_the_security_model_requires() {
    let pb = playbook();
    let plans = plans(&pb);
    assert_eq!(plans.len(), 2);
    let command = &plans[0];
    assert_eq!(command.name, "Tram crash - Command");
    assert_eq!(state_of(command, "m.room.encryption")["algorithm"], MEGOLM);
    assert_eq!(
        state_of(command, "m.room.join_rules")["join_rule"],
        "invite"
    );
    assert_eq!(
        state_of(command, "m.room.guest_access")["guest_access"],
        "forbidden"
    );
    assert_eq!(
        state_of(command, "m.room.history_visibility")["history_visibility"],
        "invited"
    );
    assert_eq!(command.creation_content["m.federate"], false);
    assert_eq!(command.creation_content[TAG_INCIDENT], "dr-2345");
    assert_eq!(command.creation_content[TAG_ROOM_KEY], "command");
    // A room the playbook lets federate has no m.federate: false.
    assert!(plans[1].creation_content.get("m.federate").is_none());
}

#[test]
fn only_cordon_may_invite_kick_ban_or_change_state() {
    let pb = playbook();
    let pl = &plans(&pb)[0].power_levels;
    for key in ["invite", "kick", "ban", "state_default"] {
        assert_eq!(pl[key], PL_CORDON, "{key}");
    }
    assert_eq!(pl["users_default"], 0);
    assert_eq!(pl["redact"], PL_MODERATOR);
    assert_eq!(pl["notifications"]["room"], PL_CORDON);
    assert_eq!(pl["events"]["m.room.power_levels"], PL_CORDON);
    // Moderators (and the commander) get 50, nobody gets 100, and cordon itself is
    // not listed (room version 12 refuses the creator in `users`).
    let users = pl["users"].as_object().unwrap();
    assert_eq!(users["@lead:hs.example"], PL_MODERATOR);
    assert_eq!(users["@boss:hs.example"], PL_MODERATOR);
    assert!(users.values().all(|v| v.as_i64() < Some(PL_CORDON)));
    assert!(!users.contains_key("@n1:hs.example"));
}

#[test]
fn retention_is_set_raw_with_a_margin_above_the_window() {
    let pb = playbook();
    let plan = &plans(&pb)[0];
    let ms = state_of(plan, "m.room.retention")["max_lifetime"]
        .as_u64()
        .unwrap();
    assert_eq!(ms, (3600 + 15 * 60) * 1000);
    assert_eq!(
        retention_max_lifetime(Duration::from_secs(12 * 3600)),
        Duration::from_secs(12 * 3600 + 72 * 60)
    );
}

#[test]
fn every_holder_of_a_member_role_is_invited_once_with_a_reason() {
    let pb = playbook();
    let plan = &plans(&pb)[0];
    let users: Vec<&str> = plan.invites.iter().map(|i| i.user.as_str()).collect();
    assert_eq!(
        users,
        [
            "@boss:hs.example",
            "@lead:hs.example",
            "@n1:hs.example",
            "@n2:hs.example"
        ]
    );
    let lead = plan
        .invites
        .iter()
        .find(|i| i.user == "@lead:hs.example")
        .unwrap();
    assert!(lead.reason.contains("Incident lead"), "{}", lead.reason);
    assert!(lead.reason.contains("dr-2345"));
    assert!(lead.reason.contains("not the medical record"));
    assert!(!lead.reason.contains('\n'));
}

#[test]
fn topic_carries_the_banner() {
    let pb = playbook();
    let plan = &plans(&pb)[0];
    assert!(
        plan.topic.contains("NOT the medical record"),
        "{}",
        plan.topic
    );
    assert!(
        plan.topic.contains("Wed 25 Nov 12:00 GMT"),
        "{}",
        plan.topic
    );
}

#[test]
fn an_exercise_says_so_first_in_every_name_topic_and_invite() {
    let pb = playbook();
    for plan in plans_of(&pb, true) {
        assert!(plan.name.starts_with("EXERCISE · "), "{}", plan.name);
        assert!(plan.topic.starts_with("EXERCISE · "), "{}", plan.topic);
        for invite in &plan.invites {
            assert!(
                invite.reason.starts_with("cordon: EXERCISE · "),
                "{}",
                invite.reason
            );
        }
        assert_eq!(
            plan.desired_state()["name"],
            serde_json::json!(plan.name),
            "the guard keeps the labelled name"
        );
    }
    for plan in plans(&pb) {
        assert!(!plan.name.contains("EXERCISE"), "{}", plan.name);
        assert!(!plan.topic.contains("EXERCISE"), "{}", plan.topic);
    }
}

#[test]
fn frozen_rooms_are_read_only() {
    let pl = frozen_power_levels(&BTreeSet::new());
    assert_eq!(pl["events_default"], PL_CORDON);
    assert_eq!(pl["events"]["m.room.encrypted"], PL_CORDON);
}

#[test]
fn remaining_time_reads_naturally() {
    let now = Utc::now();
    assert_eq!(
        format_remaining(now + chrono::TimeDelta::minutes(185), now),
        "3h 05m"
    );
    assert_eq!(
        format_remaining(now - chrono::TimeDelta::minutes(1), now),
        "expired"
    );
}
