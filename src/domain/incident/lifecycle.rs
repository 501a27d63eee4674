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
//! leave the state alone and are accepted in every state but `closed`.
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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0)
            .single()
            .unwrap()
    }

    fn incident(state: State, held: bool, failed_step: Option<State>) -> Incident {
        let mut i = Incident::new(
            IncidentId::parse("mc-4k7p").unwrap(),
            NewIncident {
                playbook: "mass-casualty".into(),
                display_name: "Tram crash".into(),
                control_room: "!control".into(),
                commander: "@a:hs".into(),
                expires_at: t(10),
            },
            t(1),
        );
        i.state = state;
        if state == State::Failed {
            i.failure = failed_step.map(|step| Failure {
                step,
                reason: "boom".into(),
                at: t(2),
            });
        }
        if held {
            i.hold = Some(Hold {
                reason: "inquest 42".into(),
                by: "@ro:hs".into(),
                since: t(2),
            });
        }
        if matches!(state, State::Destroyed | State::Archived) {
            i.archive = Some(ArchiveInfo {
                sha256: "ab".into(),
                location: "a.age".into(),
                keep_until: t(5),
                contents: None,
            });
        }
        i
    }

    /// A valid example of each event kind (the times pass the extra checks).
    fn example(kind: EventKind) -> Event {
        match kind {
            EventKind::Provisioned => Event::Provisioned,
            EventKind::Failed => Event::Failed {
                reason: "createRoom 500".into(),
            },
            EventKind::Extended => Event::Extended { new_expiry: t(14) },
            EventKind::RosterChanged => Event::RosterChanged {
                commander: Some("@b:hs".into()),
            },
            EventKind::StandDown => Event::StandDown { by: "@a:hs".into() },
            EventKind::Archived => Event::Archived(ArchiveInfo {
                sha256: "cd".into(),
                location: "b.age".into(),
                keep_until: t(5),
                contents: None,
            }),
            EventKind::Destroyed => Event::Destroyed {
                purge_pending: false,
            },
            EventKind::Closed => Event::Closed,
            EventKind::Retry => Event::Retry,
            EventKind::HoldSet => Event::HoldSet {
                reason: "inquest 43".into(),
                by: "@ro:hs".into(),
            },
            EventKind::HoldReleased => Event::HoldReleased {
                by: "@op:hs".into(),
            },
        }
    }

    #[derive(Debug, PartialEq)]
    enum Expect {
        To(State),
        Illegal,
        NotFailed,
        Held,
        NotHeld,
    }

    /// The expected outcome, written out from the DESIGN.md table independently of
    /// [`target`]. `step` is the failed step recorded for `failed`.
    fn expected(state: State, kind: EventKind, held: bool, step: State) -> Expect {
        use EventKind as E;
        use Expect::*;
        use State as S;
        let legal: &[(State, EventKind, State)] = &[
            (S::Provisioning, E::Provisioned, S::Active),
            (S::Provisioning, E::Failed, S::Failed),
            (S::Active, E::Extended, S::Active),
            (S::Active, E::RosterChanged, S::Active),
            (S::Active, E::StandDown, S::StandingDown),
            (S::StandingDown, E::Archived, S::Archived),
            (S::StandingDown, E::Failed, S::Failed),
            (S::Archived, E::Destroyed, S::Destroyed),
            (S::Destroyed, E::Closed, S::Closed),
            (S::Failed, E::StandDown, S::StandingDown),
        ];
        if state == S::Closed {
            return Illegal;
        }
        match kind {
            E::HoldSet => return To(state),
            E::HoldReleased => return if held { To(state) } else { NotHeld },
            E::Retry => {
                return if state == S::Failed {
                    To(step)
                } else {
                    NotFailed
                };
            }
            _ => {}
        }
        match legal.iter().find(|(s, e, _)| *s == state && *e == kind) {
            Some((_, E::Destroyed | E::Closed, _)) if held => Held,
            Some((_, _, to)) => To(*to),
            None => Illegal,
        }
    }

    #[test]
    fn every_state_and_event_pair_matches_the_design_table() {
        let mut checked = 0;
        for state in State::ALL {
            for kind in EventKind::ALL {
                for held in [false, true] {
                    for step in [State::Provisioning, State::StandingDown] {
                        if held && state == State::Closed {
                            continue; // unreachable: a held incident cannot close
                        }
                        let mut inc = incident(state, held, Some(step));
                        let before = inc.clone();
                        let got = inc.apply(example(kind), t(6));
                        let want = expected(state, kind, held, step);
                        let ctx = format!("{state} + {kind} (held: {held}, step: {step})");
                        match (&got, &want) {
                            (Ok(tr), Expect::To(to)) => {
                                assert_eq!(tr.to, *to, "{ctx}");
                                assert_eq!(tr.from, state, "{ctx}");
                                assert_eq!(tr.event, kind, "{ctx}");
                                assert_eq!(inc.state, *to, "{ctx}");
                                assert_eq!(inc.updated_at, t(6), "{ctx}");
                            }
                            (
                                Err(TransitionError::Illegal { from, to, event }),
                                Expect::Illegal,
                            ) => {
                                assert_eq!((*from, *event), (state, kind), "{ctx}");
                                assert_eq!(*to, nominal_target(state, kind), "{ctx}");
                            }
                            (Err(TransitionError::NotFailed { from }), Expect::NotFailed) => {
                                assert_eq!(*from, state, "{ctx}");
                            }
                            (Err(TransitionError::Held { from, .. }), Expect::Held) => {
                                assert_eq!(*from, state, "{ctx}");
                            }
                            (Err(TransitionError::NotHeld), Expect::NotHeld) => {}
                            _ => panic!("{ctx}: got {got:?}, expected {want:?}"),
                        }
                        if got.is_err() {
                            assert_eq!(inc, before, "{ctx}: a refused event changed the record");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 11 * 2 * 2 - 11 * 2);
    }

    #[test]
    fn target_table_agrees_with_apply_for_every_pair() {
        for state in State::ALL {
            for kind in EventKind::ALL {
                let t = target(state, kind, Some(State::Provisioning));
                let want = expected(state, kind, true, State::Provisioning);
                match want {
                    Expect::To(s) => assert_eq!(t, Some(s), "{state} + {kind}"),
                    Expect::Held | Expect::NotHeld => assert!(t.is_some(), "{state} + {kind}"),
                    Expect::Illegal | Expect::NotFailed => assert_eq!(t, None, "{state} + {kind}"),
                }
            }
        }
    }

    #[test]
    fn failure_records_the_step_and_retry_returns_to_it() {
        for step in [State::Provisioning, State::StandingDown] {
            let mut inc = incident(step, false, None);
            inc.apply(
                Event::Failed {
                    reason: "timeout".into(),
                },
                t(3),
            )
            .unwrap();
            assert_eq!(inc.state, State::Failed);
            let failure = inc.failure.clone().unwrap();
            assert_eq!(
                (failure.step, failure.reason.as_str(), failure.at),
                (step, "timeout", t(3))
            );
            let tr = inc.apply(Event::Retry, t(4)).unwrap();
            assert_eq!((tr.from, tr.to), (State::Failed, step));
            assert_eq!(inc.state, step);
            assert_eq!(inc.failure, None);
        }
    }

    #[test]
    fn failed_without_a_recorded_step_cannot_retry_but_can_stand_down() {
        let mut inc = incident(State::Failed, false, None);
        assert_eq!(
            inc.apply(Event::Retry, t(4)),
            Err(TransitionError::NotFailed {
                from: State::Failed
            })
        );
        inc.apply(Event::StandDown { by: "@a:hs".into() }, t(4))
            .unwrap();
        assert_eq!(inc.state, State::StandingDown);
        assert_eq!(inc.stood_down_by.as_deref(), Some("@a:hs"));
        assert_eq!(inc.failure, None);
    }

    #[test]
    fn extension_moves_expiry_and_adds_up() {
        let mut inc = incident(State::Active, false, None);
        inc.apply(Event::Extended { new_expiry: t(12) }, t(3))
            .unwrap();
        inc.apply(Event::Extended { new_expiry: t(13) }, t(3))
            .unwrap();
        assert_eq!(inc.expires_at, t(13));
        assert_eq!(inc.extended_total(), TimeDelta::hours(3));
        let err = inc.apply(Event::Extended { new_expiry: t(13) }, t(3));
        assert_eq!(
            err,
            Err(TransitionError::ExtensionNotLater {
                current: t(13),
                new: t(13)
            })
        );
    }

    #[test]
    fn close_waits_for_the_keep_time() {
        let mut inc = incident(State::Destroyed, false, None);
        assert_eq!(
            inc.apply(Event::Closed, t(4)),
            Err(TransitionError::KeepTimeNotOver {
                keep_until: Some(t(5))
            })
        );
        assert_eq!(inc.state, State::Destroyed);
        inc.apply(Event::Closed, t(5)).unwrap();
        assert_eq!(inc.state, State::Closed);

        let mut no_archive = incident(State::Destroyed, false, None);
        no_archive.archive = None;
        assert_eq!(
            no_archive.apply(Event::Closed, t(23)),
            Err(TransitionError::KeepTimeNotOver { keep_until: None })
        );
    }

    #[test]
    fn hold_blocks_destroy_and_close_until_released() {
        let mut inc = incident(State::Archived, false, None);
        inc.apply(
            Event::HoldSet {
                reason: "coroner".into(),
                by: "@ro:hs".into(),
            },
            t(3),
        )
        .unwrap();
        assert!(inc.is_held());
        let err = inc
            .apply(
                Event::Destroyed {
                    purge_pending: false,
                },
                t(4),
            )
            .unwrap_err();
        assert!(err.to_string().contains("coroner"), "{err}");
        assert_eq!(inc.state, State::Archived);
        inc.apply(
            Event::HoldReleased {
                by: "@op:hs".into(),
            },
            t(4),
        )
        .unwrap();
        inc.apply(
            Event::Destroyed {
                purge_pending: true,
            },
            t(4),
        )
        .unwrap();
        assert!(inc.purge_pending);
        assert_eq!(
            inc.apply(
                Event::HoldReleased {
                    by: "@op:hs".into()
                },
                t(4)
            ),
            Err(TransitionError::NotHeld)
        );
    }

    #[test]
    fn rewording_a_hold_keeps_its_start() {
        let mut inc = incident(State::Active, true, None);
        inc.apply(
            Event::HoldSet {
                reason: "new".into(),
                by: "@x:hs".into(),
            },
            t(8),
        )
        .unwrap();
        let hold = inc.hold.unwrap();
        assert_eq!((hold.reason.as_str(), hold.since), ("new", t(2)));
    }

    #[test]
    fn handover_changes_the_commander() {
        let mut inc = incident(State::Active, false, None);
        inc.apply(Event::RosterChanged { commander: None }, t(3))
            .unwrap();
        assert_eq!(inc.commander, "@a:hs");
        inc.apply(
            Event::RosterChanged {
                commander: Some("@b:hs".into()),
            },
            t(3),
        )
        .unwrap();
        assert_eq!(inc.commander, "@b:hs");
    }

    #[test]
    fn illegal_transition_error_names_from_and_to() {
        let mut inc = incident(State::Active, false, None);
        let err = inc.apply(example(EventKind::Destroyed), t(3)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "an incident cannot go from active to destroyed (destroyed)"
        );
    }

    #[test]
    fn states_and_events_serialise_in_kebab_case() {
        let names: Vec<String> = State::ALL
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"provisioning\"",
                "\"active\"",
                "\"standing-down\"",
                "\"archived\"",
                "\"destroyed\"",
                "\"closed\"",
                "\"failed\""
            ]
        );
        for s in State::ALL {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for k in EventKind::ALL {
            assert_eq!(example(k).kind(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
            let json = serde_json::to_value(example(k)).unwrap();
            assert_eq!(json["event"], k.as_str(), "{json}");
        }
    }
}
