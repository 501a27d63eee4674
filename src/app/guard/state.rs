//! Room state as the server shows it, against the state cordon itself set.
//!
//! The pure half of the guard's state check: [`snapshot`] reads the room's state events
//! (as `GET /rooms/{id}/state` returns them) into every state event and the members,
//! and [`drift`] lists every state event that is not as cordon left it. Nothing here
//! trusts an event's claimed sender: a difference is a difference, whoever the event
//! says made it.
//!
//! What cordon set is its room record alone: the desired state (`"state"`: event type
//! to content, state key `""`), the room's name and topic, and the alias it created the
//! room under. Every other state event (a tombstone, a widget, a server ACL, an avatar,
//! any custom type, any state key) is one cordon never set, and is put back to empty
//! content. Only `m.room.create`, which nobody can replace, and memberships, which the
//! guard judges against the roster, are left out.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A state event's type and state key.
pub type Key = (String, String);

/// The event types whose change alone makes the guard look at a room: all of them
/// except the ephemeral ones (state events have none), so any state event does.
pub fn is_watched(event_type: &str) -> bool {
    event_type != "m.room.create"
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
    /// The state event it replaced, as the server tells (`unsigned`): that event's
    /// id, claimed sender and content. Empty for the first of its type and key.
    pub prev: Option<Prev>,
}

/// The state event a [`Seen`] replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct Prev {
    /// Its event id (`unsigned.replaces_state`).
    pub event_id: String,
    /// The sender it claims (`unsigned.prev_sender`), when the server gives it.
    pub sender: Option<String>,
    /// Its content (`unsigned.prev_content`).
    pub content: Value,
}

impl Prev {
    /// The membership of a replaced member event.
    pub fn membership(&self) -> Option<&str> {
        self.content.get("membership").and_then(Value::as_str)
    }
}

/// Reads the replaced event from an event's `unsigned`, as Synapse fills it.
pub fn prev_of(ev: &Value) -> Option<Prev> {
    let unsigned = ev.get("unsigned")?;
    let event_id = unsigned.get("replaces_state")?.as_str()?.to_owned();
    Some(Prev {
        event_id,
        sender: unsigned
            .get("prev_sender")
            .and_then(Value::as_str)
            .map(str::to_owned),
        content: unsigned.get("prev_content").cloned().unwrap_or(Value::Null),
    })
}

/// A room's current state, as far as the guard cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every state event but memberships and the create event, by type and state key.
    pub state: BTreeMap<Key, Seen>,
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

    /// `user`'s membership and its event, if they have one.
    pub fn membership(&self, user: &str) -> Option<(&str, &Seen)> {
        self.members.get(user).map(|(m, s)| (m.as_str(), s))
    }

    /// The current event of a state type with state key `""`.
    pub fn get(&self, event_type: &str) -> Option<&Seen> {
        self.state.get(&(event_type.to_owned(), String::new()))
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
                .map(crate::app::millis_to_utc)
                .unwrap_or_default(),
            prev: prev_of(ev),
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
        } else if is_watched(event_type) {
            out.state
                .insert((event_type.to_owned(), state_key.to_owned()), seen);
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

/// One state event that is not as cordon left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// The event type.
    pub event_type: String,
    /// The state key.
    pub state_key: String,
    /// The content to send back: cordon's own, or empty content for a state event
    /// cordon never set.
    pub restore: Value,
    /// The current event, or `None` when the room has no such state at all.
    pub seen: Option<Seen>,
    /// True when cordon set this state event itself; false for one it never set.
    pub own: bool,
}

/// What cordon set in a room: each state event's content, by type and state key.
fn own_state(desired: &Value) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    if let Some(state) = desired.get("state").and_then(Value::as_object) {
        for (t, content) in state {
            out.insert((t.clone(), String::new()), content.clone());
        }
    }
    if let Some(name) = desired.get("name").and_then(Value::as_str) {
        out.insert(
            ("m.room.name".into(), String::new()),
            json!({ "name": name }),
        );
    }
    if let Some(topic) = desired.get("topic").and_then(Value::as_str) {
        // As Synapse writes a `createRoom` topic: with its MSC3765 text form.
        out.insert(
            ("m.room.topic".into(), String::new()),
            json!({ "topic": topic, "m.topic": { "m.text": [{ "body": topic }] } }),
        );
    }
    out
}

/// The content that undoes a state event cordon never set: empty, except where
/// Synapse refuses empty content. A server ACL goes back to allowing every server, as
/// if there were none (an empty one would shut out Synapse's own server). A tombstone
/// must name a replacement room: it names none (an empty string, which clients do not
/// take for a room to move to).
pub fn neutral(event_type: &str) -> Value {
    match event_type {
        "m.room.server_acl" => json!({ "allow": ["*"], "deny": [], "allow_ip_literals": true }),
        "m.room.tombstone" => json!({ "replacement_room": "" }),
        _ => json!({}),
    }
}

/// Every state event in `snapshot` that is not as cordon left it, with what to send
/// back. `desired` is the room record's desired JSON; `alias` the localpart cordon
/// created the room under, whose canonical-alias event `createRoom` wrote.
///
/// The record's power levels come first: the other reverts are sent after them.
pub fn drift(desired: &Value, alias: Option<&str>, snapshot: &Snapshot) -> Vec<Drift> {
    // A record without desired state tells nothing of what cordon set: compare nothing
    // rather than empty the whole room.
    if !desired.get("state").is_some_and(Value::is_object) {
        return Vec::new();
    }
    let own = own_state(desired);
    let mut out = Vec::new();
    for (key, want) in &own {
        let seen = snapshot.state.get(key);
        let same = match seen {
            Some(s) => same_content(&key.0, want, &s.content),
            None => absent_is_same(&key.0, want),
        };
        if !same {
            out.push(Drift {
                event_type: key.0.clone(),
                state_key: key.1.clone(),
                restore: want.clone(),
                seen: seen.cloned(),
                own: true,
            });
        }
    }
    for (key, seen) in &snapshot.state {
        if own.contains_key(key) {
            continue;
        }
        let (event_type, state_key) = key;
        if !foreign_is_fine(alias, event_type, state_key, &seen.content) {
            out.push(Drift {
                event_type: event_type.clone(),
                state_key: state_key.clone(),
                restore: neutral(event_type),
                seen: Some(seen.clone()),
                own: false,
            });
        }
    }
    out.sort_by_key(|d| d.event_type != "m.room.power_levels");
    out
}

/// Whether a state event of `event_type` and `state_key` with `content` is one cordon
/// itself intends for a room whose record holds `desired` (created under `alias`): its
/// own state as the record has it now (so its own changes, written to the record before
/// they are sent, and the guard's reverts pass), the empty content that undoes a state
/// event it never set, or the canonical alias `createRoom` wrote. What the prevention
/// module asks about; [`drift`] is the same judgement over a whole room.
pub fn intended(
    desired: &Value,
    alias: Option<&str>,
    event_type: &str,
    state_key: &str,
    content: &Value,
) -> bool {
    if !desired.get("state").is_some_and(Value::is_object) {
        return false;
    }
    let key = (event_type.to_owned(), state_key.to_owned());
    match own_state(desired).get(&key) {
        Some(want) => same_content(event_type, want, content),
        None => foreign_is_fine(alias, event_type, state_key, content),
    }
}

/// True for a state event cordon never set whose content is harmless: the empty content
/// that undoes it, or the canonical alias `createRoom` wrote for cordon's alias.
fn foreign_is_fine(
    alias: Option<&str>,
    event_type: &str,
    state_key: &str,
    content: &Value,
) -> bool {
    *content == neutral(event_type)
        || (event_type == "m.room.canonical_alias"
            && state_key.is_empty()
            && own_alias(alias, content))
}

/// True for the canonical-alias content `createRoom` wrote for cordon's alias: that
/// alias (or none) and no alternatives.
fn own_alias(alias: Option<&str>, content: &Value) -> bool {
    let main_ok = match content.get("alias") {
        None | Some(Value::Null) => true,
        Some(Value::String(a)) => alias.is_some_and(|local| {
            a.strip_prefix('#')
                .and_then(|r| r.split_once(':'))
                .is_some_and(|(l, _)| l == local)
        }),
        Some(_) => false,
    };
    let no_alternatives = match content.get("alt_aliases") {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    let known = content
        .as_object()
        .is_some_and(|o| o.keys().all(|k| k == "alias" || k == "alt_aliases"));
    main_ok && no_alternatives && known
}

/// True when a room without this state event is as cordon left it: no pinned events
/// at all is the same as cordon's empty pin list.
fn absent_is_same(event_type: &str, desired: &Value) -> bool {
    event_type == "m.room.pinned_events"
        && desired
            .get("pinned")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
}

/// True when `actual` means the same as `desired` for `event_type`. Power levels are
/// compared by what they grant (Synapse adds keys of its own, such as `historical`, to
/// the content cordon gave, and omitted fields have defaults). A topic is the same when
/// its plain text and every text form of it are cordon's (Synapse writes both, and
/// clients show either). Every other type must match exactly, so an added field (say, a
/// weaker `rotation_period_ms`) counts.
pub fn same_content(event_type: &str, desired: &Value, actual: &Value) -> bool {
    match event_type {
        "m.room.power_levels" => PowerLevels::of(desired) == PowerLevels::of(actual),
        "m.room.topic" => same_topic(desired, actual),
        _ => desired == actual,
    }
}

fn same_topic(desired: &Value, actual: &Value) -> bool {
    let Some(topic) = desired.get("topic").and_then(Value::as_str) else {
        return desired == actual;
    };
    let Some(fields) = actual.as_object() else {
        return false;
    };
    if fields.get("topic").and_then(Value::as_str) != Some(topic) {
        return false;
    }
    fields.iter().all(|(k, v)| match k.as_str() {
        "topic" => true,
        "m.topic" => v
            .get("m.text")
            .and_then(Value::as_array)
            .is_some_and(|texts| {
                texts.iter().all(|t| {
                    t.get("body").and_then(Value::as_str) == Some(topic)
                        && t.get("mimetype")
                            .and_then(Value::as_str)
                            .is_none_or(|m| m == "text/plain")
                })
            }),
        _ => false,
    })
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
mod tests;
