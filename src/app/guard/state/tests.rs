use serde_json::json;

use super::*;

fn event(t: &str, key: &str, content: Value, id: &str, sender: &str) -> Value {
    json!({
        "type": t, "state_key": key, "content": content, "event_id": id,
        "sender": sender, "origin_server_ts": 1_700_000_000_000u64,
    })
}

const TOPIC: &str = "Drill: NOT the medical record";

fn desired() -> Value {
    json!({
        "name": "Drill - Command",
        "topic": TOPIC,
        "state": {
            "m.room.join_rules": { "join_rule": "invite" },
            "m.room.history_visibility": { "history_visibility": "invited" },
            "m.room.encryption": { "algorithm": "m.megolm.v1.aes-sha2" },
            "m.room.guest_access": { "guest_access": "forbidden" },
            "m.room.retention": { "max_lifetime": 4_500_000 },
            "m.room.pinned_events": { "pinned": [] },
            "m.room.power_levels": crate::domain::incident::plan::power_levels(
                &[matrix_sdk::ruma::owned_user_id!("@lead:hs")].into_iter().collect()
            ),
        },
    })
}

/// The room exactly as `createRoom` leaves it (as Synapse 1.163 writes it: an
/// extra `historical` power level, the topic's text form, the canonical alias).
fn as_created() -> Vec<Value> {
    let d = desired();
    let mut events: Vec<Value> = d["state"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t != "m.room.pinned_events")
        .map(|(t, c)| event(t, "", c.clone(), &format!("${t}"), "@cordon:hs"))
        .collect();
    let pl = index_of(&events, "m.room.power_levels");
    events[pl]["content"]["historical"] = json!(100);
    for (t, content) in [
        ("m.room.create", json!({ "room_version": "12" })),
        ("m.room.name", json!({ "name": "Drill - Command" })),
        (
            "m.room.topic",
            json!({ "topic": TOPIC, "m.topic": { "m.text": [{ "body": TOPIC }] } }),
        ),
        (
            "m.room.canonical_alias",
            json!({ "alias": "#cordon-x1:hs" }),
        ),
    ] {
        events.push(event(t, "", content, &format!("${t}"), "@cordon:hs"));
    }
    for (user, membership, id) in [("@cordon:hs", "join", "$m1"), ("@lead:hs", "invite", "$m2")] {
        events.push(event(
            "m.room.member",
            user,
            json!({ "membership": membership }),
            id,
            "@cordon:hs",
        ));
    }
    events
}

fn index_of(events: &[Value], t: &str) -> usize {
    events.iter().position(|e| e["type"] == t).unwrap()
}

fn drifts(events: &[Value]) -> Vec<Drift> {
    drift(&desired(), Some("cordon-x1"), &snapshot(events))
}

#[test]
fn a_room_as_provisioned_has_no_drift() {
    let events = as_created();
    let snap = snapshot(&events);
    assert_eq!(drifts(&events), vec![]);
    assert!(
        snap.get("m.room.create").is_none(),
        "the create event is never compared"
    );
    let present: Vec<_> = snap.present().map(|(u, m, _)| (u, m)).collect();
    assert_eq!(
        present,
        vec![("@cordon:hs", "join"), ("@lead:hs", "invite")]
    );
}

#[test]
fn a_forged_power_level_grant_is_drift_whoever_claims_it() {
    let mut events = as_created();
    let pl = index_of(&events, "m.room.power_levels");
    events[pl]["content"]["users"]["@intruder:hs"] = json!(100);
    events[pl]["event_id"] = json!("$forged");
    let drifts = drifts(&events);
    assert_eq!(drifts.len(), 1);
    assert_eq!(drifts[0].event_type, "m.room.power_levels");
    assert!(drifts[0].own);
    assert_eq!(drifts[0].restore, desired()["state"]["m.room.power_levels"]);
    let seen = drifts[0].seen.as_ref().unwrap();
    assert_eq!(seen.event_id, "$forged");
    assert_eq!(
        seen.sender, "@cordon:hs",
        "the claimed sender is kept for the alert"
    );
}

#[test]
fn every_type_cordon_set_is_compared_and_a_missing_one_is_drift() {
    let base = as_created();
    for t in [
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.encryption",
        "m.room.guest_access",
        "m.room.retention",
        "m.room.power_levels",
        "m.room.name",
        "m.room.topic",
    ] {
        let i = index_of(&base, t);
        let mut events = base.clone();
        events[i]["content"]["extra"] = json!(true);
        let found = drifts(&events);
        if t == "m.room.power_levels" {
            assert_eq!(found, vec![], "an unknown power-level key grants nothing");
        } else {
            assert_eq!(found.len(), 1, "{t}");
            assert_eq!(found[0].event_type, t);
        }
        let mut events = base.clone();
        events.remove(i);
        let found = drifts(&events);
        assert_eq!(found.len(), 1, "{t} missing");
        assert_eq!(found[0].seen, None);
        assert!(found[0].own);
    }
}

#[test]
fn a_rename_or_a_new_topic_is_put_back_to_cordons() {
    let mut events = as_created();
    let name = index_of(&events, "m.room.name");
    events[name]["content"] = json!({ "name": "This room has moved" });
    let topic = index_of(&events, "m.room.topic");
    events[topic]["content"]["m.topic"]["m.text"][0]["body"] = json!("Use the other room");
    let found = drifts(&events);
    let types: Vec<&str> = found.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(types, vec!["m.room.name", "m.room.topic"]);
    assert_eq!(found[0].restore, json!({ "name": "Drill - Command" }));
    assert_eq!(found[1].restore["topic"], TOPIC);
    // What cordon sends back is the same to the next look.
    assert!(same_content(
        "m.room.topic",
        &found[1].restore,
        &found[1].restore
    ));
}

#[test]
fn state_cordon_never_set_is_emptied_whatever_its_type_or_key() {
    let mut events = as_created();
    for (t, key, content) in [
        (
            "m.room.tombstone",
            "",
            json!({ "body": "moved", "replacement_room": "!evil:hs" }),
        ),
        ("m.room.avatar", "", json!({ "url": "mxc://hs/x" })),
        (
            "im.vector.modular.widgets",
            "w1",
            json!({ "url": "https://evil" }),
        ),
        (
            "m.room.server_acl",
            "",
            json!({ "allow": ["evil.example"] }),
        ),
        ("org.example.custom", "anything", json!({ "a": 1 })),
    ] {
        events.push(event(t, key, content, &format!("${t}"), "@cordon:hs"));
    }
    let alias = index_of(&events, "m.room.canonical_alias");
    events[alias]["content"] = json!({ "alias": "#evil:hs" });
    let found = drifts(&events);
    let by_type: BTreeMap<&str, &Drift> =
        found.iter().map(|d| (d.event_type.as_str(), d)).collect();
    assert_eq!(by_type.len(), 6, "{found:?}");
    for d in &found {
        assert!(!d.own, "{d:?}");
        assert_eq!(d.restore, neutral(&d.event_type));
    }
    assert_eq!(by_type["im.vector.modular.widgets"].state_key, "w1");
    assert_eq!(
        by_type["m.room.server_acl"].restore["allow"],
        json!(["*"]),
        "an ACL is reset to allow every server (Synapse refuses one that shuts out itself)"
    );
    // Once emptied, it is as cordon wants it.
    for d in &found {
        let i = events
            .iter()
            .position(|e| e["type"] == d.event_type.as_str())
            .unwrap();
        events[i]["content"] = d.restore.clone();
    }
    assert_eq!(drifts(&events), vec![]);
}

#[test]
fn cordons_own_alias_is_its_own_but_alternatives_are_not() {
    let alias = |content: Value| {
        let mut events = as_created();
        let i = index_of(&events, "m.room.canonical_alias");
        events[i]["content"] = content;
        drifts(&events).len()
    };
    assert_eq!(alias(json!({ "alias": "#cordon-x1:hs" })), 0);
    assert_eq!(alias(json!({})), 0);
    assert_eq!(alias(json!({ "alias": "#cordon-x2:hs" })), 1);
    assert_eq!(
        alias(json!({ "alias": "#cordon-x1:hs", "alt_aliases": ["#evil:hs"] })),
        1
    );
}

#[test]
fn pins_are_compared_with_what_cordon_pinned() {
    let mut d = desired();
    d["state"]["m.room.pinned_events"] = json!({ "pinned": ["$briefing"] });
    let mut events = as_created();
    let found = drift(&d, Some("cordon-x1"), &snapshot(&events));
    assert_eq!(found.len(), 1, "cordon's pin is missing: {found:?}");
    events.push(event(
        "m.room.pinned_events",
        "",
        json!({ "pinned": ["$briefing", "$evil"] }),
        "$p",
        "@cordon:hs",
    ));
    let found = drift(&d, Some("cordon-x1"), &snapshot(&events));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].restore, json!({ "pinned": ["$briefing"] }));
    // No pins at all is the same as cordon's empty list.
    assert_eq!(drifts(&as_created()), vec![]);
}

#[test]
fn power_levels_compare_by_what_they_grant() {
    let want = json!({ "ban": 100, "users": { "@a:hs": 50 }, "events": { "m.room.name": 100 } });
    let same = json!({ "ban": "100", "kick": 50, "users": { "@a:hs": 50 },
                           "events": { "m.room.name": 100 }, "historical": 100 });
    assert!(same_content("m.room.power_levels", &want, &same));
    for different in [
        json!({ "ban": 50, "users": { "@a:hs": 50 }, "events": { "m.room.name": 100 } }),
        json!({ "ban": 100, "users": { "@a:hs": 100 }, "events": { "m.room.name": 100 } }),
        json!({ "ban": 100, "users": { "@a:hs": 50, "@b:hs": 0 }, "events": { "m.room.name": 100 } }),
        json!({ "ban": 100, "users": { "@a:hs": 50 }, "events": {} }),
        json!({ "ban": 100, "users": { "@a:hs": 50 }, "events": { "m.room.name": 100 }, "state_default": 0 }),
        json!({ "ban": "lots", "users": { "@a:hs": 50 }, "events": { "m.room.name": 100 } }),
    ] {
        assert!(
            !same_content("m.room.power_levels", &want, &different),
            "{different}"
        );
    }
}

#[test]
fn a_record_without_desired_state_compares_nothing() {
    // Nothing is known of what cordon set: emptying the room would be the attack.
    let mut events = as_created();
    events.push(event(
        "m.room.tombstone",
        "",
        json!({ "replacement_room": "!x" }),
        "$t",
        "@x:hs",
    ));
    assert_eq!(drift(&json!({}), None, &snapshot(&events)), vec![]);
}
