//! Pure provisioning plans: what rooms an incident needs, with which state, who is
//! invited and why, and what cordon posts in them.
//!
//! Nothing here performs I/O. The Matrix layer turns a [`RoomPlan`] into one
//! `createRoom` request and the invites and messages that follow; the store keeps the
//! plan's state as the room's *desired state*, which the guard reconciles against.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use matrix_sdk::ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::domain::incident::IncidentId;
use crate::input::playbook::{Playbook, Room, TemplateVars};

/// `creation_content` key carrying the incident id (finds a room again after a crash).
pub const TAG_INCIDENT: &str = "org.cordon.incident";
/// `creation_content` key carrying the playbook's room key.
pub const TAG_ROOM_KEY: &str = "org.cordon.room_key";

/// Power level of cordon-only actions. In room version 12 the creator (cordon) has
/// unlimited power and nobody else is ever given 100.
pub const PL_CORDON: i64 = 100;
/// Power level of moderators (may redact others' messages).
pub const PL_MODERATOR: i64 = 50;

/// The megolm algorithm every incident room uses.
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

/// What starts every room name, topic, invite and message of an exercise, so that
/// nobody mistakes a drill for a real incident (JESIP: exercise messages say EXERCISE).
pub const EXERCISE_LABEL: &str = "EXERCISE · ";

/// [`EXERCISE_LABEL`] for an exercise, nothing for a real incident.
pub fn exercise_label(exercise: bool) -> &'static str {
    if exercise { EXERCISE_LABEL } else { "" }
}

/// Facts about one incident that plans are made from.
#[derive(Debug, Clone)]
pub struct IncidentFacts<'a> {
    /// The incident's short id.
    pub id: &'a IncidentId,
    /// The commander's name for it ("Tram crash Addiscombe").
    pub display_name: &'a str,
    /// The playbook it was declared with.
    pub playbook: &'a Playbook,
    /// The incident commander.
    pub commander: &'a UserId,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// The time zone for times shown to people.
    pub time_zone: chrono_tz::Tz,
    /// A drill: room names, topics and invites say EXERCISE.
    pub exercise: bool,
}

impl<'a> IncidentFacts<'a> {
    /// The facts of `incident`, declared with `playbook`, commanded by `commander`
    /// (the incident's commander, parsed), with times shown in `time_zone`.
    pub fn of(
        incident: &'a super::Incident,
        playbook: &'a Playbook,
        commander: &'a UserId,
        time_zone: chrono_tz::Tz,
    ) -> Self {
        Self {
            id: &incident.id,
            display_name: &incident.display_name,
            playbook,
            commander,
            expires_at: incident.expires_at,
            time_zone,
            exercise: incident.exercise,
        }
    }

    /// What starts every room name, topic and invite of a drill (`EXERCISE · `), empty
    /// for a real incident.
    pub fn label(&self) -> &'static str {
        exercise_label(self.exercise)
    }

    /// The template variables at `now`.
    pub fn vars(&self, now: DateTime<Utc>) -> TemplateVars {
        TemplateVars {
            incident: self.display_name.to_owned(),
            incident_id: self.id.as_str().to_owned(),
            playbook: self.playbook.title.clone(),
            expires: format_time(self.expires_at, self.time_zone),
            time_left: format_remaining(self.expires_at, now),
            commander: self.commander.to_string(),
        }
    }
}

/// One state event to put in a room.
#[derive(Debug, Clone, PartialEq)]
pub struct StateEvent {
    /// The event type.
    pub event_type: String,
    /// The state key.
    pub state_key: String,
    /// The content.
    pub content: Value,
}

/// Someone to invite to a room, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitePlan {
    /// The person.
    pub user: OwnedUserId,
    /// The role ids that bring them into this room (empty for the commander alone).
    pub roles: Vec<String>,
    /// The invite reason (sent unencrypted, so the invitee can read it before joining).
    pub reason: String,
}

/// Everything needed to create one incident room.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomPlan {
    /// The playbook's room key.
    pub key: String,
    /// Position of the room in the playbook (rooms are listed in this order).
    pub position: usize,
    /// The room name.
    pub name: String,
    /// The topic, with the incident banner.
    pub topic: String,
    /// `creation_content`, with the idempotency tags and `m.federate`.
    pub creation_content: Value,
    /// `initial_state` (encryption, join rules, guest access, history visibility,
    /// retention).
    pub initial_state: Vec<StateEvent>,
    /// `power_level_content_override`, given completely (Synapse merges it shallowly).
    pub power_levels: Value,
    /// People to invite, in a stable order.
    pub invites: Vec<InvitePlan>,
}

impl RoomPlan {
    /// The desired state the guard reconciles against, as stored in the room record.
    pub fn desired_state(&self) -> Value {
        let mut state = serde_json::Map::new();
        for ev in &self.initial_state {
            state.insert(ev.event_type.clone(), ev.content.clone());
        }
        state.insert("m.room.power_levels".into(), self.power_levels.clone());
        // cordon's pins, kept here before each pin is sent (none yet): the guard puts
        // back any other pin list.
        state.insert("m.room.pinned_events".into(), json!({ "pinned": [] }));
        json!({
            "position": self.position,
            "name": self.name,
            "topic": self.topic,
            "creation_content": self.creation_content,
            "state": Value::Object(state),
            "invites": self.invites.iter().map(|i| json!({
                "user": i.user, "roles": i.roles,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The room's `max_lifetime`: a margin above the playbook's window. Synapse hides events
/// older than `max_lifetime` from every client at once, cordon included, so cordon's own
/// audited sweep must run first and Synapse's purge is only the backstop.
pub fn retention_max_lifetime(window: Duration) -> Duration {
    let margin = (window / 10).max(Duration::from_secs(15 * 60));
    window + margin
}

/// Plans every room of the incident, in playbook order.
pub fn plan_rooms(facts: &IncidentFacts<'_>, now: DateTime<Utc>) -> Vec<RoomPlan> {
    let vars = facts.vars(now);
    facts
        .playbook
        .rooms
        .iter()
        .enumerate()
        .map(|(position, room)| plan_room(facts, room, position, &vars))
        .collect()
}

fn plan_room(
    facts: &IncidentFacts<'_>,
    room: &Room,
    position: usize,
    vars: &TemplateVars,
) -> RoomPlan {
    let pb = facts.playbook;
    let name = one_line(&format!("{}{}", facts.label(), room.name.render(vars)), 255);
    let banner = format!(
        "{exercise}{title}: {incident} ({id}). NOT the medical record: transcribe and \
         attribute clinical advice in the patient record. Messages are deleted after \
         {retention}. Closes {expires}.",
        exercise = facts.label(),
        title = pb.title,
        incident = facts.display_name,
        id = facts.id.as_str(),
        retention = humantime::format_duration(pb.retention.messages),
        expires = vars.expires,
    );
    let topic = match &room.topic {
        Some(t) => format!("{banner}\n{}", t.render(vars)),
        None => banner,
    };

    let mut creation_content = serde_json::Map::new();
    creation_content.insert(TAG_INCIDENT.into(), json!(facts.id.as_str()));
    creation_content.insert(TAG_ROOM_KEY.into(), json!(room.key));
    if !room.federate {
        creation_content.insert("m.federate".into(), json!(false));
    }

    let max_lifetime = retention_max_lifetime(pb.retention.messages);
    let initial_state = vec![
        state("m.room.encryption", json!({ "algorithm": MEGOLM })),
        state("m.room.join_rules", json!({ "join_rule": "invite" })),
        state(
            "m.room.guest_access",
            json!({ "guest_access": "forbidden" }),
        ),
        state(
            "m.room.history_visibility",
            json!({ "history_visibility": "invited" }),
        ),
        state(
            "m.room.retention",
            json!({ "max_lifetime": u64::try_from(max_lifetime.as_millis()).unwrap_or(u64::MAX) }),
        ),
    ];

    // Holders of the room's member roles, each once, with all the roles that bring them.
    let mut roles_of: BTreeMap<OwnedUserId, Vec<String>> = BTreeMap::new();
    for role_id in &room.members {
        if let Some(role) = pb.role(role_id) {
            for holder in &role.holders {
                let roles = roles_of.entry(holder.clone()).or_default();
                if !roles.contains(&role.id.as_str().to_owned()) {
                    roles.push(role.id.as_str().to_owned());
                }
            }
        }
    }
    // The commander oversees every room of their incident.
    roles_of.entry(facts.commander.to_owned()).or_default();

    let mut moderators: BTreeSet<OwnedUserId> = BTreeSet::new();
    for role_id in &room.moderators {
        if let Some(role) = pb.role(role_id) {
            moderators.extend(role.holders.iter().cloned());
        }
    }
    moderators.insert(facts.commander.to_owned());

    let invites = roles_of
        .into_iter()
        .map(|(user, roles)| {
            let reason = invite_reason(facts, &name, &roles, vars);
            InvitePlan {
                user,
                roles,
                reason,
            }
        })
        .collect();

    RoomPlan {
        key: room.key.clone(),
        position,
        name,
        topic,
        creation_content: Value::Object(creation_content),
        initial_state,
        power_levels: power_levels(&moderators),
        invites,
    }
}

fn state(event_type: &str, content: Value) -> StateEvent {
    StateEvent {
        event_type: event_type.to_owned(),
        state_key: String::new(),
        content,
    }
}

/// Power levels where only cordon may invite, kick, ban, change state or notify the
/// whole room, moderators may redact, and everyone else may talk. The `events` map is
/// given completely because Synapse replaces the default map rather than merging it.
pub fn power_levels(moderators: &BTreeSet<OwnedUserId>) -> Value {
    let users: serde_json::Map<String, Value> = moderators
        .iter()
        .map(|u| (u.to_string(), json!(PL_MODERATOR)))
        .collect();
    json!({
        "users_default": 0,
        "events_default": 0,
        "state_default": PL_CORDON,
        "invite": PL_CORDON,
        "kick": PL_CORDON,
        "ban": PL_CORDON,
        "redact": PL_MODERATOR,
        "notifications": { "room": PL_CORDON },
        "users": users,
        "events": {
            "m.room.name": PL_CORDON,
            "m.room.topic": PL_CORDON,
            "m.room.avatar": PL_CORDON,
            "m.room.canonical_alias": PL_CORDON,
            "m.room.power_levels": PL_CORDON,
            "m.room.join_rules": PL_CORDON,
            "m.room.guest_access": PL_CORDON,
            "m.room.history_visibility": PL_CORDON,
            "m.room.encryption": PL_CORDON,
            "m.room.retention": PL_CORDON,
            "m.room.server_acl": PL_CORDON,
            "m.room.tombstone": PL_CORDON,
            "m.room.pinned_events": PL_CORDON,
            "m.room.third_party_invite": PL_CORDON,
            "im.vector.modular.widgets": PL_CORDON,
            TAG_INCIDENT: PL_CORDON,
            "m.room.message": 0,
            "m.room.encrypted": 0,
            "m.reaction": 0,
            "m.room.redaction": 0,
        },
    })
}

/// Read-only power levels for a frozen room: nobody but cordon may post.
pub fn frozen_power_levels(moderators: &BTreeSet<OwnedUserId>) -> Value {
    let mut pl = power_levels(moderators);
    if let Some(obj) = pl.as_object_mut() {
        obj.insert("events_default".into(), json!(PL_CORDON));
        if let Some(events) = obj.get_mut("events").and_then(Value::as_object_mut) {
            for t in [
                "m.room.message",
                "m.room.encrypted",
                "m.reaction",
                "m.room.redaction",
            ] {
                events.insert(t.into(), json!(PL_CORDON));
            }
        }
    }
    pl
}

fn invite_reason(
    facts: &IncidentFacts<'_>,
    room_name: &str,
    roles: &[String],
    vars: &TemplateVars,
) -> String {
    let pb = facts.playbook;
    let why = if roles.is_empty() {
        "you are the incident commander".to_owned()
    } else {
        let titles: Vec<&str> = roles
            .iter()
            .filter_map(|r| pb.roles.iter().find(|role| role.id.as_str() == r))
            .map(|role| role.title.as_str())
            .collect();
        format!("you hold the role {}", titles.join(", "))
    };
    one_line(
        &format!(
            "cordon: {exercise}{why} in {title} \"{incident}\" ({id}), room {room_name}. \
             Encrypted, invite-only and time-limited: it closes {expires} and messages \
             are deleted after {retention}. It is not the medical record.",
            exercise = facts.label(),
            title = pb.title,
            incident = facts.display_name,
            id = facts.id.as_str(),
            expires = vars.expires,
            retention = humantime::format_duration(pb.retention.messages),
        ),
        1000,
    )
}

/// The briefing posted and pinned in `room`: the playbook's template if it has one,
/// else a standard briefing.
pub fn briefing(facts: &IncidentFacts<'_>, room: &RoomPlan, now: DateTime<Utc>) -> String {
    let vars = facts.vars(now);
    let pb = facts.playbook;
    match &pb.briefing {
        // The planners' own briefing, under a header naming the room.
        Some(t) => format!("BRIEFING: {}\n{}", room.name, t.render(&vars)),
        None => format!(
            "BRIEFING: {title}: {incident} ({id})\nRoom: {room}. Commander: {commander}. \
             Closes {expires} ({left} from now).\nThis chat is NOT the medical record. \
             Transcribe and attribute clinical advice in the patient record, then mark it \
             with `!cordon transcribed <link>`. Messages are deleted after {retention}.",
            title = pb.title,
            incident = facts.display_name,
            id = facts.id.as_str(),
            room = room.name,
            commander = facts.commander,
            expires = vars.expires,
            left = vars.time_left,
            retention = humantime::format_duration(pb.retention.messages),
        ),
    }
}

/// One role's instructions, to post in a room where the role is a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMessage {
    /// The role id.
    pub role: String,
    /// The text.
    pub body: String,
    /// The holders, mentioned so their clients notify them.
    pub mentions: Vec<OwnedUserId>,
}

/// The instructions of every role that is a member of `room_key` and has instructions.
pub fn role_messages(
    facts: &IncidentFacts<'_>,
    room_key: &str,
    now: DateTime<Utc>,
) -> Vec<RoleMessage> {
    let vars = facts.vars(now);
    let pb = facts.playbook;
    let Some(room) = pb.room(room_key) else {
        return Vec::new();
    };
    room.members
        .iter()
        .filter_map(|role_id| pb.role(role_id))
        .filter_map(|role| {
            let text = role.instructions.as_ref()?.render(&vars);
            let names: Vec<String> = role.holders.iter().map(|h| h.to_string()).collect();
            Some(RoleMessage {
                role: role.id.as_str().to_owned(),
                body: format!(
                    "Instructions for {title} ({holders}):\n{text}",
                    title = role.title,
                    holders = names.join(", "),
                ),
                mentions: role.holders.clone(),
            })
        })
        .collect()
}

/// A wall-clock time as people read it: `Tue 25 Nov 14:30 GMT`.
pub fn format_time(at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    at.with_timezone(&tz)
        .format("%a %d %b %H:%M %Z")
        .to_string()
}

/// Time left until `until` as `3h 05m`, or `expired`.
pub fn format_remaining(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (until - now).num_seconds();
    if secs <= 0 {
        return "expired".to_owned();
    }
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match (d, h) {
        (0, 0) if m == 0 => format!("{secs}s"),
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h {m:02}m"),
    }
}

/// Collapses whitespace and bounds the length, for names and invite reasons.
pub(crate) fn one_line(s: &str, max_chars: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests;
