//! A stored invite, sent once: the roster's (`add`, `admit`, `handover`, an enrolment)
//! and the guard's invites back after a re-verification are one mechanism. The intent
//! is in the outbox before anything is sent; it is sent only while the roster lets its
//! person in; a ban (the guard's, or an earlier removal's) is lifted first; the outcome
//! is stored against the intent. A restart replays whatever was left pending.

use matrix_sdk::ruma::UserId;
use matrix_sdk::ruma::events::room::member::MembershipState;
use serde_json::json;
use tracing::{info, warn};

use super::ctx::{AppError, Ctx};
use crate::matrix::MatrixError;
use crate::matrix::rooms::{self, InviteOutcome};
use crate::store::{Effect, OutboxEntry};

/// Which stored invites a replay sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The roster's: a commander's change or an enrolment.
    Roster,
    /// The guard's: a member re-verified after an identity change.
    Readmit,
}

/// The room, the person and the reason of a stored invite of `kind`.
fn parts(entry: &OutboxEntry, kind: Kind) -> Option<(&str, &str, &str)> {
    match (&entry.effect, kind) {
        (Effect::RosterInvite { room, user, reason }, Kind::Roster)
        | (Effect::GuardReadmit { room, user, reason }, Kind::Readmit) => {
            Some((room, user, reason))
        }
        _ => None,
    }
}

/// Sends the invite stored under `key`, of `kind`, unless it is done, or the roster no
/// longer lets its person in (an intent whose roster change never committed waits
/// until that change is made again).
pub(crate) async fn send(ctx: &Ctx, key: &str, kind: Kind) -> Result<(), AppError> {
    let Some(entry) = ctx.store.outbox_get(key)? else {
        return Ok(());
    };
    if !entry.is_pending() {
        return Ok(());
    }
    let Some((room_id, user, reason)) = parts(&entry, kind) else {
        return Ok(());
    };
    let Ok(user) = UserId::parse(user) else {
        warn!(key, "a stored invite names no valid user; skipping it");
        return Ok(());
    };
    let allowed = ctx
        .store
        .roster_entry(room_id, user.as_str())?
        .is_some_and(|e| e.is_allowed());
    if !allowed {
        return Ok(());
    }
    let Some(room) = rooms::joined(&ctx.client, room_id) else {
        return Err(MatrixError::Client(format!("cordon is not in room {room_id}")).into());
    };
    if let Ok(Some(member)) = room.get_member(&user).await
        && *member.membership() == MembershipState::Ban
    {
        let why = match kind {
            Kind::Roster => "cordon: let in again by the commander",
            Kind::Readmit => "cordon: verified again",
        };
        room.unban_user(&user, Some(why))
            .await
            .map_err(MatrixError::from)?;
    }
    let outcome =
        match rooms::invite_with_reason(&ctx.client, room.room_id(), &user, reason).await? {
            InviteOutcome::Invited => json!({ "outcome": "invited" }),
            InviteOutcome::AlreadyThere => json!({ "outcome": "already-there" }),
            InviteOutcome::Refused(why) => json!({ "outcome": "refused", "why": why }),
        };
    ctx.store.outbox_complete(key, Some(outcome), ctx.now())?;
    Ok(())
}

/// Sends every stored invite of `kind` left pending (cordon stopped half-way, or a send
/// failed); each failure is logged and left for the next replay.
pub(crate) async fn replay(ctx: &Ctx, kind: Kind) {
    let pending = match ctx.store.outbox_pending() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "store: listing pending invites");
            return;
        }
    };
    for entry in pending.iter().filter(|e| parts(e, kind).is_some()) {
        info!(key = entry.key, ?kind, "sending a stored invite");
        if let Err(e) = send(ctx, &entry.key, kind).await {
            warn!(key = entry.key, error = %e, "a stored invite could not be sent; retrying later");
        }
    }
}
