//! Room state as the server shows it, against the state cordon stored for the room.
//!
//! The pure half of the guard's state check: [`snapshot`] reads the room's state events
//! (as `GET /rooms/{id}/state` returns them) into the watched state and the members, and
//! [`drift`] lists every watched event type whose content differs from the room
//! record's desired state. Nothing here trusts an event's claimed sender: a difference
//! is a difference, whoever the event says made it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The state event types the guard keeps as cordon set them.
pub const WATCHED: [&str; 6] = [
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.encryption",
    "m.room.guest_access",
    "m.room.retention",
];

/// True for an event type the guard reconciles (membership is handled separately).
pub fn is_watched(event_type: &str) -> bool {
    WATCHED.contains(&event_type)
}

/// One state event as the server holds it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// Its content.
    pub content: Value,
    /// Its event id (the guard's key for "already alerted").
    pub event_id: String,
    /// The sender it claims (a forged event claims cordon).
    pub sender: String,
    /// When the server says it was sent.
    pub at: DateTime<Utc>,
}

/// A room's current state, as far as the guard cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Watched event types (state key `""`) to their current event.
    pub state: BTreeMap<String, Seen>,
    /// Every member event, by user id: the membership (`join`, `invite`, `ban` …) and
    /// the event.
    pub members: BTreeMap<String, (String, Seen)>,
}

impl Snapshot {
    /// Users whose membership is `join` or `invite`, with their member event.
    pub fn present(&self) -> impl Iterator<Item = (&str, &str, &Seen)> {
        self.members
            .iter()
            .filter(|(_, (m, _))| m == "join" || m == "invite")
            .map(|(user, (m, seen))| (user.as_str(), m.as_str(), seen))
    }
}

/// Reads state events (full events with `type`, `state_key`, `content`, `event_id`,
/// `sender`, `origin_server_ts`) into a [`Snapshot`]. Events that lack a field are
/// skipped.
pub fn snapshot(events: &[Value]) -> Snapshot {
    let mut out = Snapshot::default();
    for ev in events {
        let (Some(event_type), Some(state_key)) = (
            ev.get("type").and_then(Value::as_str),
            ev.get("state_key").and_then(Value::as_str),
        ) else {
            continue;
        };
        let content = ev.get("content").cloned().unwrap_or(Value::Null);
        let seen = Seen {
            event_id: str_field(ev, "event_id"),
            sender: str_field(ev, "sender"),
            at: ev
                .get("origin_server_ts")
                .and_then(Value::as_u64)
                .map(crate::bot::millis_to_utc)
                .unwrap_or_default(),
            content,
        };
        if event_type == "m.room.member" {
            let membership = seen
                .content
                .get("membership")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            out.members.insert(state_key.to_owned(), (membership, seen));
        } else if state_key.is_empty() && is_watched(event_type) {
            out.state.insert(event_type.to_owned(), seen);
        }
    }
    out
}

fn str_field(ev: &Value, name: &str) -> String {
    ev.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// One watched event type whose current content is not the desired one.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// The event type.
    pub event_type: String,
    /// The content cordon stored for it (sent back as the revert).
    pub desired: Value,
    /// The current event, or `None` when the room has no such state at all.
    pub seen: Option<Seen>,
}

/// Every watched event type in `desired` (a room record's `desired` JSON, whose
/// `"state"` maps event type to content) whose current content in `snapshot` differs.
/// Types the record does not name are not compared.
pub fn drift(desired: &Value, snapshot: &Snapshot) -> Vec<Drift> {
    let Some(wanted) = desired.get("state").and_then(Value::as_object) else {
        return Vec::new();
    };
    WATCHED
        .iter()
        .filter_map(|t| {
            let want = wanted.get(*t)?;
            let seen = snapshot.state.get(*t);
            let same = seen.is_some_and(|s| same_content(t, want, &s.content));
            (!same).then(|| Drift {
                event_type: (*t).to_owned(),
                desired: want.clone(),
                seen: seen.cloned(),
            })
        })
        .collect()
}

/// True when `actual` means the same as `desired` for `event_type`. Power levels are
/// compared by what they grant (Synapse adds keys of its own, such as `historical`, to
/// the content cordon gave, and omitted fields have defaults); every other watched type
/// must match exactly, so an added field (say, a weaker `rotation_period_ms`) counts.
pub fn same_content(event_type: &str, desired: &Value, actual: &Value) -> bool {
    if event_type == "m.room.power_levels" {
        PowerLevels::of(desired) == PowerLevels::of(actual)
    } else {
        desired == actual
    }
}

/// Power levels reduced to what they grant, with the specification's defaults filled
/// in. Unknown keys are dropped; an unparseable level counts as a difference (it maps to
/// `None`).
#[derive(Debug, PartialEq, Eq)]
struct PowerLevels {
    ban: Option<i64>,
    kick: Option<i64>,
    redact: Option<i64>,
    invite: Option<i64>,
    events_default: Option<i64>,
    state_default: Option<i64>,
    users_default: Option<i64>,
    notifications_room: Option<i64>,
    events: BTreeMap<String, Option<i64>>,
    users: BTreeMap<String, Option<i64>>,
}

impl PowerLevels {
    fn of(content: &Value) -> Self {
        let level = |v: &Value, default: i64| -> Option<i64> {
            match v.get_level() {
                Level::Missing => Some(default),
                Level::Is(n) => Some(n),
                Level::Bad => None,
            }
        };
        let at = |key: &str, default: i64| level(content.get(key).unwrap_or(&Value::Null), default);
        let map = |key: &str| -> BTreeMap<String, Option<i64>> {
            content
                .get(key)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| match v.get_level() {
                            Level::Is(n) => (k.clone(), Some(n)),
                            Level::Missing | Level::Bad => (k.clone(), None),
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            ban: at("ban", 50),
            kick: at("kick", 50),
            redact: at("redact", 50),
            invite: at("invite", 0),
            events_default: at("events_default", 0),
            state_default: at("state_default", 50),
            users_default: at("users_default", 0),
            notifications_room: level(
                content
                    .get("notifications")
                    .and_then(|n| n.get("room"))
                    .unwrap_or(&Value::Null),
                50,
            ),
            events: map("events"),
            users: map("users"),
        }
    }
}

enum Level {
    Missing,
    Is(i64),
    Bad,
}

trait GetLevel {
    fn get_level(&self) -> Level;
}

impl GetLevel for Value {
    /// A power level: an integer, or (in old room versions) a string holding one.
    fn get_level(&self) -> Level {
        match self {
            Value::Null => Level::Missing,
            Value::Number(n) => n.as_i64().map_or(Level::Bad, Level::Is),
            Value::String(s) => s.trim().parse().map_or(Level::Bad, Level::Is),
            _ => Level::Bad,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(t: &str, key: &str, content: Value, id: &str, sender: &str) -> Value {
        json!({
            "type": t, "state_key": key, "content": content, "event_id": id,
            "sender": sender, "origin_server_ts": 1_700_000_000_000u64,
        })
    }

    fn desired() -> Value {
        json!({ "state": {
            "m.room.join_rules": { "join_rule": "invite" },
            "m.room.history_visibility": { "history_visibility": "invited" },
            "m.room.encryption": { "algorithm": "m.megolm.v1.aes-sha2" },
            "m.room.guest_access": { "guest_access": "forbidden" },
            "m.room.retention": { "max_lifetime": 4_500_000 },
            "m.room.power_levels": crate::incident::plan::power_levels(
                &[matrix_sdk::ruma::owned_user_id!("@lead:hs")].into_iter().collect()
            ),
        }})
    }

    /// The room exactly as provisioning leaves it, with Synapse's extra `historical`.
    fn as_created() -> Vec<Value> {
        let d = desired();
        let mut events: Vec<Value> = d["state"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(t, c)| event(t, "", c.clone(), &format!("${t}"), "@cordon:hs"))
            .collect();
        let pl = index_of(&events, "m.room.power_levels");
        events[pl]["content"]["historical"] = json!(100);
        events.push(event(
            "m.room.member",
            "@cordon:hs",
            json!({ "membership": "join" }),
            "$m1",
            "@cordon:hs",
        ));
        events.push(event(
            "m.room.member",
            "@lead:hs",
            json!({ "membership": "invite" }),
            "$m2",
            "@cordon:hs",
        ));
        events.push(event(
            "m.room.topic",
            "",
            json!({ "topic": "x" }),
            "$t",
            "@cordon:hs",
        ));
        events
    }

    fn index_of(events: &[Value], t: &str) -> usize {
        events.iter().position(|e| e["type"] == t).unwrap()
    }

    #[test]
    fn a_room_as_provisioned_has_no_drift() {
        let events = as_created();
        let snap = snapshot(&events);
        assert_eq!(drift(&desired(), &snap), vec![]);
        assert_eq!(snap.state.len(), 6, "the topic is not watched");
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
        let drifts = drift(&desired(), &snapshot(&events));
        assert_eq!(drifts.len(), 1);
        assert_eq!(drifts[0].event_type, "m.room.power_levels");
        assert_eq!(drifts[0].desired, desired()["state"]["m.room.power_levels"]);
        let seen = drifts[0].seen.as_ref().unwrap();
        assert_eq!(seen.event_id, "$forged");
        assert_eq!(
            seen.sender, "@cordon:hs",
            "the claimed sender is kept for the alert"
        );
    }

    #[test]
    fn every_watched_type_is_compared_and_a_missing_one_is_drift() {
        let base = as_created();
        for t in WATCHED {
            let i = index_of(&base, t);
            let mut events = base.clone();
            events[i]["content"]["extra"] = json!(true);
            let drifts = drift(&desired(), &snapshot(&events));
            if t == "m.room.power_levels" {
                assert_eq!(drifts, vec![], "an unknown power-level key grants nothing");
            } else {
                assert_eq!(drifts.len(), 1, "{t}");
                assert_eq!(drifts[0].event_type, t);
            }
            let mut events = base.clone();
            events.remove(i);
            let drifts = drift(&desired(), &snapshot(&events));
            assert_eq!(drifts.len(), 1, "{t} missing");
            assert_eq!(drifts[0].seen, None);
        }
    }

    #[test]
    fn power_levels_compare_by_what_they_grant() {
        let want =
            json!({ "ban": 100, "users": { "@a:hs": 50 }, "events": { "m.room.name": 100 } });
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
        assert_eq!(drift(&json!({}), &snapshot(&as_created())), vec![]);
    }
}
