//! Incidents: the identity an incident commander types ([`IncidentId`]), the
//! persisted lifecycle state machine ([`lifecycle`]), and the pure provisioning plans
//! ([`plan`]: what rooms to create, whom to invite, what to post).
//!
//! Everything here is pure: no I/O, no clock. The store ([`crate::store`]) persists an
//! [`Incident`] and applies [`Event`]s to it together with their audit entries, in one
//! write transaction.

pub mod explain;
pub mod id;
pub mod lifecycle;
pub mod plan;
pub mod timers;

pub use id::{IdError, IncidentId};
pub use lifecycle::{
    ArchiveContents, ArchiveInfo, Event, EventKind, Failure, Hold, Incident, NewIncident, State,
    Transition, TransitionError,
};
