//! The records kept beside incidents: rooms, durable timers and the outbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::incident::{IncidentId, State};

/// Where one of an incident's rooms stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomStatus {
    /// Planned; `createRoom` not yet confirmed (look for the tagged room on retry).
    Planned,
    /// Created; its Matrix room id is known.
    Created,
    /// Frozen for stand-down (read-only power levels).
    Frozen,
    /// Deletion requested through the admin API; polling its status.
    Deleting,
    /// Deleted and purged.
    Destroyed,
    /// Left and forgotten without admin rights: purge pending.
    PurgePending,
}

/// One incident room: the desired state cordon reconciles the server against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// The incident.
    pub incident: IncidentId,
    /// The playbook's room key (`command`).
    pub key: String,
    /// The Matrix room id, once known.
    pub room_id: Option<String>,
    /// The desired room state (power levels, join rules, retention …) as JSON.
    pub desired: serde_json::Value,
    /// Where the room stands.
    pub status: RoomStatus,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
    /// The id of the Synapse deletion cordon asked for, once it did: a resumed
    /// stand-down follows that deletion instead of asking for another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_id: Option<String>,
    /// The alias localpart the room is created under, recorded before `createRoom`, so
    /// that a creation cut short is found by it rather than made twice (see
    /// `matrix::rooms::create_planned_room`). Kept once the room is created: the
    /// canonical alias `createRoom` wrote for it is cordon's until Synapse empties it
    /// when the alias is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_alias: Option<String>,
    /// When cordon's own Matrix stores forgot the room, once it was destroyed (or left,
    /// purge pending): its room keys dropped from the crypto store and the key backup,
    /// the room removed from the state store. Until then a destroyed room is still to
    /// be forgotten (see `bot::forget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_at: Option<DateTime<Utc>>,
}

/// An intent to record with [`crate::store::Store::outbox_put_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxIntent {
    /// The idempotency key.
    pub key: String,
    /// What to do.
    pub effect: Effect,
}

/// What an outbox intent does, each kind with what it takes to do it (again, after a
/// restart). Stored as `"kind": "<kind>", "payload": {…}` beside the entry's other
/// fields, the shape entries have always had, so entries written before read unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "kebab-case")]
pub enum Effect {
    /// A message sent once in `room` (its content is the caller's; the outcome keeps
    /// the event id).
    Send {
        /// The room's Matrix id.
        room: String,
    },
    /// A role holder invited while an incident is provisioned.
    Invite {
        /// The room's Matrix id.
        room: String,
        /// Who.
        user: String,
        /// The roles that bring them.
        roles: Vec<String>,
    },
    /// Someone let in by a roster command (`add`, `handover`, `admit`); sent again at
    /// start-up if cordon stopped before it was.
    RosterInvite {
        /// The room's Matrix id.
        room: String,
        /// Who.
        user: String,
        /// The invite's reason, as they see it.
        reason: String,
    },
    /// Someone invited back by the guard after an operator verified them again; sent
    /// again at start-up if cordon stopped before it was.
    GuardReadmit {
        /// The room's Matrix id.
        room: String,
        /// Who.
        user: String,
        /// The invite's reason, as they see it.
        reason: String,
    },
    /// A guard alert, recorded before the guard acts and delivered at least once.
    GuardAlert {
        /// Its text.
        body: String,
        /// Who is mentioned.
        mentions: Vec<String>,
        /// The rooms it is posted in (Matrix ids).
        rooms: Vec<String>,
    },
}

/// An intended side effect, recorded before it is performed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The caller's idempotency key (`mc-4k7p/briefing/post`).
    pub key: String,
    /// The transaction id to send with it, reused on every retry (unique in this store).
    pub txn_id: String,
    /// The incident it belongs to, if any.
    pub incident: Option<IncidentId>,
    /// What to do.
    #[serde(flatten)]
    pub effect: Effect,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it was confirmed done; `None` while pending.
    pub done_at: Option<DateTime<Utc>>,
    /// What came back (an event id, a room id …), once done.
    pub outcome: Option<serde_json::Value>,
}

impl OutboxEntry {
    /// True until [`crate::store::Store::outbox_complete`] marks it done.
    pub fn is_pending(&self) -> bool {
        self.done_at.is_none()
    }
}

/// Which incidents [`crate::store::Store::incidents`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentFilter {
    /// Only these states; empty means every state.
    pub states: Vec<State>,
    /// Only incidents declared in this control room.
    pub control_room: Option<String>,
}

impl IncidentFilter {
    /// Every incident.
    pub fn all() -> Self {
        Self::default()
    }

    /// Incidents in the `active` state.
    pub fn active() -> Self {
        Self::in_states(&[State::Active])
    }

    /// Incidents not yet `closed`.
    pub fn open() -> Self {
        Self::in_states(&[
            State::Provisioning,
            State::Active,
            State::StandingDown,
            State::Archived,
            State::Destroyed,
            State::Failed,
        ])
    }

    /// Incidents in any of `states`.
    pub fn in_states(states: &[State]) -> Self {
        Self {
            states: states.to_vec(),
            control_room: None,
        }
    }

    /// Narrows to one control room.
    pub fn in_control_room(mut self, room: impl Into<String>) -> Self {
        self.control_room = Some(room.into());
        self
    }

    pub(crate) fn matches(&self, incident: &crate::domain::incident::Incident) -> bool {
        (self.states.is_empty() || self.states.contains(&incident.state))
            && self
                .control_room
                .as_ref()
                .is_none_or(|room| *room == incident.control_room)
    }
}
