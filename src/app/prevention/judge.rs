//! The answer to one question of the prevention module: may this membership or state
//! event exist in this incident room? Pure: decided from cordon's records alone (the
//! incident, the room's record, the person's roster entry), never from the sender the
//! event claims. A server admin's forged power levels and invites *are* sent in
//! cordon's name, and an admin can log in as cordon; what cordon intends is what its
//! store says, written before cordon sends anything.

use serde_json::Value;

use crate::app::guard::state;
use crate::domain::incident::{Incident, State};
use crate::store::{RoomRecord, RosterEntry};

/// What the module asks about: one event, and the content of the state event it
/// would replace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed<'a> {
    /// The room.
    pub room_id: &'a str,
    /// The event's type.
    pub event_type: &'a str,
    /// Its state key.
    pub state_key: &'a str,
    /// The sender it claims (named in refusals, never trusted).
    pub sender: &'a str,
    /// Its content.
    pub content: &'a Value,
    /// The content it replaces, if any.
    pub replaces: Option<&'a Value>,
}

/// What cordon's store holds about the room and the person.
#[derive(Debug, Clone, Copy)]
pub struct Records<'a> {
    /// cordon's own user id.
    pub me: &'a str,
    /// The incident the room's tag names, if cordon has it.
    pub incident: Option<&'a Incident>,
    /// The room's record, found by the incident and the room key of its tag.
    pub room: Option<&'a RoomRecord>,
    /// The roster entry of the member event's target in this room, if any.
    pub target: Option<&'a RosterEntry>,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the event be.
    Allow,
    /// Refuse it: the server's own 403 stops it, and cordon reports why.
    Refuse(String),
}

/// Decides one event.
pub fn judge(r: &Records<'_>, p: &Proposed<'_>) -> Verdict {
    let Some(incident) = r.incident else {
        return Verdict::Refuse(
            "the room's tag names an incident cordon has no record of".to_owned(),
        );
    };
    let Some(room) = r.room else {
        return Verdict::Refuse(format!(
            "cordon has no record of this room in {}",
            incident.id
        ));
    };
    if room.room_id.as_deref().is_some_and(|id| id != p.room_id) {
        return Verdict::Refuse(format!(
            "{}'s {} room is another room; this one only carries its tag",
            incident.id, room.key
        ));
    }
    if p.event_type == "m.room.member" {
        return membership(r, incident, p);
    }
    let alias = room.create_alias.as_deref();
    if state::intended(&room.desired, alias, p.event_type, p.state_key, p.content) {
        Verdict::Allow
    } else {
        Verdict::Refuse(format!(
            "{} (state key {:?}) is not what cordon set in this room",
            p.event_type, p.state_key
        ))
    }
}

fn membership(r: &Records<'_>, incident: &Incident, p: &Proposed<'_>) -> Verdict {
    let target = p.state_key;
    let wanted = p.content.get("membership").and_then(Value::as_str);
    let before = p
        .replaces
        .and_then(|c| c.get("membership"))
        .and_then(Value::as_str);
    let allowed = r.target.is_some_and(RosterEntry::is_allowed);
    let open = matches!(incident.state, State::Provisioning | State::Active);
    let roster_says = || match r.target {
        None => format!("{target} is not on {}'s roster for this room", incident.id),
        Some(e) => format!(
            "{target} is on {}'s roster for this room as {}",
            incident.id,
            status_word(e)
        ),
    };
    if target == r.me {
        return match wanted {
            // cordon's own join (it creates every room), and its own leaving.
            Some("join") => Verdict::Allow,
            Some("leave") if p.sender == r.me => Verdict::Allow,
            _ => Verdict::Refuse("a change to cordon's own membership".to_owned()),
        };
    }
    match wanted {
        Some("invite" | "join") if allowed => Verdict::Allow,
        Some("invite") => Verdict::Refuse(format!("an invite: {}", roster_says())),
        Some("join") => Verdict::Refuse(format!("a join: {}", roster_says())),
        // Leaving of their own accord only narrows access.
        Some("leave") if p.sender == target => Verdict::Allow,
        // An unban: cordon lifts a ban only to let someone the roster lets in back.
        Some("leave") if before == Some("ban") => {
            if allowed {
                Verdict::Allow
            } else {
                Verdict::Refuse(format!("an unban: {}", roster_says()))
            }
        }
        // A kick: of someone the roster no longer lets in, or anyone once the incident
        // is standing down (its rooms are emptied and destroyed).
        Some("leave") => {
            if !allowed || !open || !matches!(before, Some("join" | "invite")) {
                Verdict::Allow
            } else {
                Verdict::Refuse(format!(
                    "removing {target}, whom the roster lets in (only cordon removes people, \
                     with `!cordon remove`)"
                ))
            }
        }
        Some("ban") if !allowed => Verdict::Allow,
        Some("ban") => Verdict::Refuse(format!("banning {target}, whom the roster lets in")),
        _ => Verdict::Refuse(format!(
            "membership {:?} for {target}",
            wanted.unwrap_or("(none)")
        )),
    }
}

fn status_word(e: &RosterEntry) -> String {
    match &e.status {
        crate::store::RosterStatus::Invited => "invited".to_owned(),
        crate::store::RosterStatus::Pending { why } => format!("pending ({why})"),
        crate::store::RosterStatus::Removed { why } => format!("removed ({why})"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
