//! The incident lifecycle: a pure state machine over [`Incident`] records.
//!
//! | state | may go to |
//! |---|---|
//! | `provisioning` | `active` ([`Event::Provisioned`]), `failed` ([`Event::Failed`]) |
//! | `active` | `active` ([`Event::Extended`], [`Event::RosterChanged`]), `standing-down` ([`Event::StandDown`]) |
//! | `standing-down` | `archived` ([`Event::Archived`]), `failed` ([`Event::Failed`]) |
//! | `archived` | `destroyed` ([`Event::Destroyed`]), refused while a legal hold is set |
//! | `destroyed` | `closed` ([`Event::Closed`]) once the sealed archive's keep time has ended, refused while a legal hold is set |
//! | `failed` | the step that failed ([`Event::Retry`]), or `standing-down` ([`Event::StandDown`]) |
//! | `closed` | nothing |
//!
//! A legal hold is a flag, not a state: [`Event::HoldSet`] and [`Event::HoldReleased`]
//! leave the state alone and are accepted in every state but `closed`. An exercise
//! takes no hold: a drill is not evidence, and it is destroyed as soon as it is sealed.
//!
//! [`Incident::apply`] either changes the record and returns the [`Transition`], or
//! returns a [`TransitionError`] and leaves the record untouched.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::id::IncidentId;

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Rooms are being created and people invited.
    Provisioning,
    /// The incident runs: rooms in use, timers armed.
    Active,
    /// Rooms frozen; export, sealing and verification under way.
    StandingDown,
    /// The sealed archive was verified; the rooms still exist.
    Archived,
    /// Every room is deleted (or its purge is pending without admin rights).
    Destroyed,
    /// The sealed archive's keep time has ended; nothing more happens.
    Closed,
    /// A step failed beyond its retries; see [`Incident::failure`].
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 7] = [
        State::Provisioning,
        State::Active,
        State::StandingDown,
        State::Archived,
        State::Destroyed,
        State::Closed,
        State::Failed,
    ];

    /// The kebab-case name used in the store, the audit log and chat (`standing-down`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Provisioning => "provisioning",
            State::Active => "active",
            State::StandingDown => "standing-down",
            State::Archived => "archived",
            State::Destroyed => "destroyed",
            State::Closed => "closed",
            State::Failed => "failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sealed archive of an incident, recorded when it was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// SHA-256 (hex) of the sealed archive file.
    pub sha256: String,
    /// Where the sealed archive was written (path or URL, as the archive module names it).
    pub location: String,
    /// The end of the archive's keep time: the incident may close after it.
    pub keep_until: DateTime<Utc>,
    /// What it holds, for the control room's notice (absent in records written before
    /// cordon kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<ArchiveContents>,
}

/// What a sealed archive holds, as its verified manifest counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveContents {
    /// The file's size in bytes.
    pub size: u64,
    /// Rooms exported.
    pub rooms: u64,
    /// Events of every kind.
    pub events: u64,
    /// Messages among them.
    pub messages: u64,
    /// Attachments.
    pub media: u64,
    /// Events cordon could not decrypt (listed in the archive).
    pub undecryptable: u64,
}

/// A step that failed beyond its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The state whose step failed; [`Event::Retry`] returns to it.
    pub step: State,
    /// What went wrong, for the commander and operators.
    pub reason: String,
    /// When it failed.
    pub at: DateTime<Utc>,
}

/// A legal hold on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Why the hold was placed (e.g. an inquest reference).
    pub reason: String,
    /// Who placed it (a Matrix user id).
    pub by: String,
    /// When it was placed.
    pub since: DateTime<Utc>,
}

/// What a declaration supplies; the store adds the id and the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIncident {
    /// The playbook id (`mass-casualty`).
    pub playbook: String,
    /// The display name the commander gave ("Tram crash Addiscombe").
    pub display_name: String,
    /// The Matrix room id of the control room it was declared in.
    pub control_room: String,
    /// The Matrix user id of the incident commander.
    pub commander: String,
    /// When the incident expires unless extended.
    pub expires_at: DateTime<Utc>,
    /// A drill (`declare … --exercise`), not a real incident: every room name, topic and
    /// message says EXERCISE, its archive is kept apart, and no legal hold applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exercise: bool,
}

/// The persisted record of one incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// The short id (`mc-4k7p`).
    pub id: IncidentId,
    /// The playbook id.
    pub playbook: String,
    /// The display name.
    pub display_name: String,
    /// The Matrix room id of the declaring control room.
    pub control_room: String,
    /// The Matrix user id of the current incident commander.
    pub commander: String,
    /// The lifecycle state.
    pub state: State,
    /// Set while `state` is [`State::Failed`]: which step failed and why.
    pub failure: Option<Failure>,
    /// The legal hold, if one is set.
    pub hold: Option<Hold>,
    /// When the incident was declared.
    pub declared_at: DateTime<Utc>,
    /// When it expires (moved by [`Event::Extended`]).
    pub expires_at: DateTime<Utc>,
    /// The total of all extensions, in seconds.
    pub extended_total_secs: i64,
    /// Who stood it down (or `cordon` at expiry), once it has been.
    pub stood_down_by: Option<String>,
    /// The sealed archive, once verified.
    pub archive: Option<ArchiveInfo>,
    /// True when the rooms were left and forgotten without admin rights: purge pending.
    pub purge_pending: bool,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
    /// A drill, not a real incident (see [`NewIncident::exercise`]); absent (false) in
    /// records written before exercises existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exercise: bool,
}

/// Something that happens to an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Provisioning finished: `provisioning → active`.
    Provisioned,
    /// The current step failed beyond its retries: `provisioning | standing-down → failed`.
    Failed {
        /// What went wrong.
        reason: String,
    },
    /// The commander extended the incident: `active → active`. The new expiry must be
    /// later than the current one (the playbook's bound is the command layer's check).
    Extended {
        /// The new expiry.
        new_expiry: DateTime<Utc>,
    },
    /// Someone was added, removed, or the commander role handed over: `active → active`.
    RosterChanged {
        /// The new commander, when the change was a handover.
        commander: Option<String>,
    },
    /// Stand down, by command or at expiry: `active | failed → standing-down`.
    StandDown {
        /// Who stood it down (a Matrix user id, or `cordon` at expiry).
        by: String,
    },
    /// The sealed archive was verified: `standing-down → archived`.
    Archived(ArchiveInfo),
    /// Every room was destroyed: `archived → destroyed`; refused while held.
    Destroyed {
        /// True when the rooms were only left and forgotten (no admin rights).
        purge_pending: bool,
    },
    /// The archive's keep time has ended: `destroyed → closed`; refused while held or
    /// before [`ArchiveInfo::keep_until`].
    Closed,
    /// Try the failed step again: `failed →` the state recorded in [`Incident::failure`].
    Retry,
    /// Place (or re-word) a legal hold; any state but `closed`.
    HoldSet {
        /// Why.
        reason: String,
        /// Who placed it.
        by: String,
    },
    /// Release the legal hold; any state but `closed`, when one is set.
    HoldReleased {
        /// Who released it.
        by: String,
    },
}

/// The kind of an [`Event`], without its data: for errors and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// [`Event::Provisioned`]
    Provisioned,
    /// [`Event::Failed`]
    Failed,
    /// [`Event::Extended`]
    Extended,
    /// [`Event::RosterChanged`]
    RosterChanged,
    /// [`Event::StandDown`]
    StandDown,
    /// [`Event::Archived`]
    Archived,
    /// [`Event::Destroyed`]
    Destroyed,
    /// [`Event::Closed`]
    Closed,
    /// [`Event::Retry`]
    Retry,
    /// [`Event::HoldSet`]
    HoldSet,
    /// [`Event::HoldReleased`]
    HoldReleased,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 11] = [
        EventKind::Provisioned,
        EventKind::Failed,
        EventKind::Extended,
        EventKind::RosterChanged,
        EventKind::StandDown,
        EventKind::Archived,
        EventKind::Destroyed,
        EventKind::Closed,
        EventKind::Retry,
        EventKind::HoldSet,
        EventKind::HoldReleased,
    ];

    /// The kebab-case name, also the audit action suffix (`incident.stand-down`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Provisioned => "provisioned",
            EventKind::Failed => "failed",
            EventKind::Extended => "extended",
            EventKind::RosterChanged => "roster-changed",
            EventKind::StandDown => "stand-down",
            EventKind::Archived => "archived",
            EventKind::Destroyed => "destroyed",
            EventKind::Closed => "closed",
            EventKind::Retry => "retry",
            EventKind::HoldSet => "hold-set",
            EventKind::HoldReleased => "hold-released",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Event {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Provisioned => EventKind::Provisioned,
            Event::Failed { .. } => EventKind::Failed,
            Event::Extended { .. } => EventKind::Extended,
            Event::RosterChanged { .. } => EventKind::RosterChanged,
            Event::StandDown { .. } => EventKind::StandDown,
            Event::Archived(_) => EventKind::Archived,
            Event::Destroyed { .. } => EventKind::Destroyed,
            Event::Closed => EventKind::Closed,
            Event::Retry => EventKind::Retry,
            Event::HoldSet { .. } => EventKind::HoldSet,
            Event::HoldReleased { .. } => EventKind::HoldReleased,
        }
    }
}

/// A transition that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after (equal to `from` for extensions, roster changes and holds).
    pub to: State,
    /// What caused it.
    pub event: EventKind,
}

/// Why an event was refused. The incident is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The lifecycle has no such edge.
    #[error("an incident cannot go from {from} to {to} ({event})")]
    Illegal {
        /// The current state.
        from: State,
        /// The state the event leads to.
        to: State,
        /// The refused event.
        event: EventKind,
    },
    /// `retry` on an incident that has not failed.
    #[error("nothing to retry: the incident is {from}, not failed")]
    NotFailed {
        /// The current state.
        from: State,
    },
    /// Destroy or close while a legal hold is set.
    #[error(
        "a legal hold is set ({reason}): the incident cannot go from {from} to {to} until it is released"
    )]
    Held {
        /// The current state.
        from: State,
        /// The refused target.
        to: State,
        /// The hold's reason.
        reason: String,
    },
    /// `hold-released` with no hold set.
    #[error("no legal hold is set on this incident")]
    NotHeld,
    /// A legal hold on an exercise: a drill is not evidence, and is destroyed at once.
    #[error("an exercise cannot be placed under a legal hold")]
    ExerciseNotHeld,
    /// `closed` before the sealed archive's keep time has ended (or with no archive).
    #[error(
        "the sealed archive must be kept until {keep_until:?}; the incident cannot close before then"
    )]
    KeepTimeNotOver {
        /// The end of the keep time, if an archive is recorded.
        keep_until: Option<DateTime<Utc>>,
    },
    /// An extension that does not move the expiry later.
    #[error("the new expiry {new} is not later than the current expiry {current}")]
    ExtensionNotLater {
        /// The current expiry.
        current: DateTime<Utc>,
        /// The requested one.
        new: DateTime<Utc>,
    },
}

/// The state an event leads to from `from`, per the lifecycle table, or `None` if there
/// is no such edge. Holds and their release leave the state alone; `Retry` goes to
/// `failed_step`. This is the table alone: hold, keep-time and expiry checks are in
/// [`Incident::apply`].
pub fn target(from: State, event: EventKind, failed_step: Option<State>) -> Option<State> {
    use EventKind as E;
    use State as S;
    match (from, event) {
        (S::Closed, _) => None,
        (_, E::HoldSet | E::HoldReleased) => Some(from),
        (S::Provisioning, E::Provisioned) => Some(S::Active),
        (S::Provisioning | S::StandingDown, E::Failed) => Some(S::Failed),
        (S::Active, E::Extended | E::RosterChanged) => Some(S::Active),
        (S::Active | S::Failed, E::StandDown) => Some(S::StandingDown),
        (S::StandingDown, E::Archived) => Some(S::Archived),
        (S::Archived, E::Destroyed) => Some(S::Destroyed),
        (S::Destroyed, E::Closed) => Some(S::Closed),
        (S::Failed, E::Retry) => failed_step,
        _ => None,
    }
}

/// The state an event names as its destination, for error messages.
fn nominal_target(from: State, event: EventKind) -> State {
    match event {
        EventKind::Provisioned | EventKind::Extended | EventKind::RosterChanged => State::Active,
        EventKind::Failed => State::Failed,
        EventKind::StandDown => State::StandingDown,
        EventKind::Archived => State::Archived,
        EventKind::Destroyed => State::Destroyed,
        EventKind::Closed => State::Closed,
        EventKind::Retry | EventKind::HoldSet | EventKind::HoldReleased => from,
    }
}

impl Incident {
    /// A newly declared incident, in [`State::Provisioning`].
    pub fn new(id: IncidentId, new: NewIncident, at: DateTime<Utc>) -> Self {
        Self {
            id,
            playbook: new.playbook,
            display_name: new.display_name,
            control_room: new.control_room,
            commander: new.commander,
            state: State::Provisioning,
            failure: None,
            hold: None,
            declared_at: at,
            expires_at: new.expires_at,
            extended_total_secs: 0,
            stood_down_by: None,
            archive: None,
            purge_pending: false,
            updated_at: at,
            exercise: new.exercise,
        }
    }

    /// True when a legal hold is set (destruction, closing and retention sweeps wait).
    pub fn is_held(&self) -> bool {
        self.hold.is_some()
    }

    /// The total of all extensions.
    pub fn extended_total(&self) -> TimeDelta {
        TimeDelta::seconds(self.extended_total_secs)
    }

    /// Checks `event` against the lifecycle and, if legal, applies it at time `at`.
    /// On error the record is unchanged.
    pub fn apply(
        &mut self,
        event: Event,
        at: DateTime<Utc>,
    ) -> Result<Transition, TransitionError> {
        let from = self.state;
        let kind = event.kind();
        let failed_step = self.failure.as_ref().map(|f| f.step);
        let Some(to) = target(from, kind, failed_step) else {
            return Err(if kind == EventKind::Retry && from != State::Closed {
                TransitionError::NotFailed { from }
            } else {
                TransitionError::Illegal {
                    from,
                    to: nominal_target(from, kind),
                    event: kind,
                }
            });
        };
        // Checks beyond the table; nothing is changed until they all pass.
        match &event {
            Event::Destroyed { .. } | Event::Closed => {
                if let Some(hold) = &self.hold {
                    return Err(TransitionError::Held {
                        from,
                        to,
                        reason: hold.reason.clone(),
                    });
                }
            }
            Event::HoldReleased { .. } if self.hold.is_none() => {
                return Err(TransitionError::NotHeld);
            }
            Event::HoldSet { .. } if self.exercise => {
                return Err(TransitionError::ExerciseNotHeld);
            }
            Event::Extended { new_expiry } if *new_expiry <= self.expires_at => {
                return Err(TransitionError::ExtensionNotLater {
                    current: self.expires_at,
                    new: *new_expiry,
                });
            }
            _ => {}
        }
        if let Event::Closed = event {
            let keep_until = self.archive.as_ref().map(|a| a.keep_until);
            if keep_until.is_none_or(|k| at < k) {
                return Err(TransitionError::KeepTimeNotOver { keep_until });
            }
        }
        match event {
            Event::Failed { reason } => {
                self.failure = Some(Failure {
                    step: from,
                    reason,
                    at,
                });
            }
            Event::Extended { new_expiry } => {
                let added = new_expiry - self.expires_at;
                self.extended_total_secs =
                    self.extended_total_secs.saturating_add(added.num_seconds());
                self.expires_at = new_expiry;
            }
            Event::RosterChanged { commander } => {
                if let Some(commander) = commander {
                    self.commander = commander;
                }
            }
            Event::StandDown { by } => self.stood_down_by = Some(by),
            Event::Archived(info) => self.archive = Some(info),
            Event::Destroyed { purge_pending } => self.purge_pending = purge_pending,
            Event::HoldSet { reason, by } => {
                let since = self.hold.as_ref().map_or(at, |h| h.since);
                self.hold = Some(Hold { reason, by, since });
            }
            Event::HoldReleased { .. } => self.hold = None,
            Event::Provisioned | Event::Closed | Event::Retry => {}
        }
        if from == State::Failed && to != State::Failed {
            self.failure = None;
        }
        self.state = to;
        self.updated_at = at;
        Ok(Transition {
            from,
            to,
            event: kind,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
