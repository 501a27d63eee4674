//! The records kept beside incidents: rooms, durable timers and the outbox.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::{IncidentId, State};

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
    /// `matrix::rooms::create_planned_room`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_alias: Option<String>,
    /// When cordon's own Matrix stores forgot the room, once it was destroyed (or left,
    /// purge pending): its room keys dropped from the crypto store and the key backup,
    /// the room removed from the state store. Until then a destroyed room is still to
    /// be forgotten (see `bot::forget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_at: Option<DateTime<Utc>>,
}

/// What a durable timer is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// The incident's expiry (automatic stand-down).
    Expiry,
    /// A warning before expiry.
    Warning,
    /// A retention sweep.
    Sweep,
    /// A playbook reminder.
    Reminder,
    /// Re-posting the briefing before retention removes it.
    Briefing,
    /// Closing once the archive's keep time ends.
    KeepTimeEnd,
    /// Anything else, named.
    Other(String),
}

/// When a timer fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Once, at a deadline.
    At(DateTime<Utc>),
    /// Repeatedly, on a cron expression in an IANA time zone.
    Cron {
        /// The cron source, as the playbook wrote it.
        expr: String,
        /// The IANA time zone (`Europe/London`).
        tz: String,
    },
}

/// A durable timer. The scheduler decides when it is due; the store keeps it and when
/// it last fired, so a restart catches up without firing twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timer {
    /// A stable id chosen by the caller (`mc-4k7p/expiry`), so re-arming is idempotent.
    pub id: String,
    /// The incident it belongs to, if any.
    pub incident: Option<IncidentId>,
    /// What it is for.
    pub kind: TimerKind,
    /// When it fires.
    pub schedule: Schedule,
    /// Caller data (the reminder's room key and text, the warning's offset …).
    pub payload: serde_json::Value,
    /// When it last fired, if ever. The scheduler records the due time the firing was
    /// for (the deadline, or the latest cron occurrence it covered), so a job that ran
    /// late does not shift the schedule.
    pub last_fired: Option<DateTime<Utc>>,
}

/// The scheduler's bookkeeping for one timer, kept in the timer's own record (under the
/// key `state`) so that a restart neither resets a backoff nor forgets a skipped firing.
///
/// Every field defaults, so records written before it existed still decode (with a
/// clear state), and [`Timer`] itself decodes from a record that carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimerState {
    /// When the timer was armed through [`crate::store::Store::arm_timer`]: where a cron
    /// timer that has never fired starts counting its occurrences.
    pub armed_at: Option<DateTime<Utc>>,
    /// Failed attempts since the timer last fired (0 when it is not failing).
    pub attempts: u32,
    /// When the next attempt after a failure may run, if one failed.
    pub retry_at: Option<DateTime<Utc>>,
    /// The last failure, for operators (the job's error, never a message body).
    pub last_error: Option<String>,
    /// The due time of the latest firing that was dropped instead of run (a warning whose
    /// deadline had passed too).
    pub last_skipped: Option<DateTime<Utc>>,
}

impl TimerState {
    /// Forgets past failures: no attempts, no retry time, no last error.
    pub fn clear_retry(&mut self) {
        self.attempts = 0;
        self.retry_at = None;
        self.last_error = None;
    }

    /// The latest due time that has been dealt with, fired or skipped.
    pub fn settled_until(&self, timer: &Timer) -> Option<DateTime<Utc>> {
        timer.last_fired.max(self.last_skipped)
    }
}

/// An intent to record with [`crate::store::Store::outbox_put_many`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxIntent {
    /// The idempotency key.
    pub key: String,
    /// What kind of effect.
    pub kind: String,
    /// What to do, as JSON.
    pub payload: serde_json::Value,
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
    /// What kind of effect (`send`, `create-room`, `redact` …).
    pub kind: String,
    /// What to do, as JSON.
    pub payload: serde_json::Value,
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

    pub(crate) fn matches(&self, incident: &crate::incident::Incident) -> bool {
        (self.states.is_empty() || self.states.contains(&incident.state))
            && self
                .control_room
                .as_ref()
                .is_none_or(|room| *room == incident.control_room)
    }
}
