//! Who may be in an incident room, and taking people out and letting them back in.
//!
//! The roster in cordon's store is the only ground truth: [`verdict`] judges one
//! member from their roster entry alone, never from who the membership event claims
//! sent the invite. People whose identity changed or whose enrolment was revoked are
//! removed ([`remove`]) and, once verified again, invited back ([`on_enrolled`]).

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use matrix_sdk::Room;
use matrix_sdk::ruma::UserId;
use matrix_sdk::ruma::events::room::member::MembershipState;
use serde_json::{Value, json};
use tracing::{error, info, warn};

use super::Seats;
use super::alert::{self, IdentityAction};
use crate::app::ctx::{ACTOR, Ctx};
use crate::app::invites::{self, Kind};
use crate::input::playbook::IdentityChange;
use crate::matrix::rooms::{self, InviteOutcome};
use crate::store::{Effect, RosterAudit, RosterEntry, RosterStatus};
use crate::trust::{self, Trust};

/// The roster reason of a member removed because their identity changed.
pub const IDENTITY_CHANGED: &str = "identity changed";
/// The roster reason of a member removed because their enrolment was revoked.
pub const REVOKED: &str = "enrolment revoked";

/// How long after a roster entry became `removed` the person may still be seen in the
/// room without it counting as an intrusion: the removal (roster first, then the kick)
/// is still under way. Later, a removed person back in the room was let in by someone
/// other than cordon.
pub const REMOVAL_GRACE: TimeDelta = TimeDelta::seconds(60);

/// What the guard makes of one joined or invited member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// cordon let them in (or it is cordon).
    Allowed,
    /// cordon did not let them in: ban.
    Intruder {
        /// Why, for the alert and the audit log.
        why: String,
    },
    /// cordon is taking them out right now: kick, without an alert.
    BeingRemoved,
}

/// Judges `user` (joined or invited) from their roster entry in the room alone.
pub fn verdict(user: &str, entry: Option<&RosterEntry>, own: &str, now: DateTime<Utc>) -> Verdict {
    if user == own {
        return Verdict::Allowed;
    }
    let Some(entry) = entry else {
        return Verdict::Intruder {
            why: "cordon has no invite record for them".to_owned(),
        };
    };
    match &entry.status {
        RosterStatus::Invited => Verdict::Allowed,
        RosterStatus::Pending { why } => Verdict::Intruder {
            why: format!("cordon did not let them in (pending: {why})"),
        },
        RosterStatus::Removed { .. } if now - entry.at < REMOVAL_GRACE => Verdict::BeingRemoved,
        RosterStatus::Removed { why } => Verdict::Intruder {
            why: format!("cordon removed them earlier ({why})"),
        },
    }
}

/// True when a role holder cordon let in at `let_in` (their roster entry's time, and
/// cordon did not take them out since) has `membership` after an event claiming
/// `sender` at `at`: someone else put them out. A ban is never cordon's for a holder it
/// let in; a leave is theirs only when they sent it themselves (left, or declined the
/// invite), and then they stay out. A removal from before cordon let them in again (a
/// readmission whose invite is on its way) is cordon's own, undone by that invite.
pub fn ejected(
    user: &str,
    membership: &str,
    sender: &str,
    at: DateTime<Utc>,
    let_in: DateTime<Utc>,
) -> bool {
    if at <= let_in {
        return false;
    }
    match membership {
        "ban" => true,
        "leave" => sender != user,
        _ => false,
    }
}

/// Lets a role holder someone else banned or removed back into `room`: the ban lifted,
/// then invited again with the reason. The roster still lets them in, so a step cut
/// short is done again at the next look.
pub(super) async fn let_back_in(
    ctx: &Ctx,
    w: &super::Watched,
    room: &Room,
    finding: &super::Finding,
    now: DateTime<Utc>,
) {
    let super::Finding::Ejected {
        user,
        membership,
        claimed_sender,
        at,
    } = finding
    else {
        return;
    };
    let Ok(user_id) = UserId::parse(user.as_str()) else {
        return;
    };
    if membership == "ban"
        && let Err(e) = room
            .unban_user(
                &user_id,
                Some("cordon: banned by someone other than cordon"),
            )
            .await
    {
        warn!(user = %user_id, error = %e, "could not lift a forged ban; retrying at the next look");
        return;
    }
    let reason = format!(
        "You were removed from {name} ({incident}) by someone other than cordon (possible \
         server compromise): cordon invites you back. Not the medical record: transcribe \
         clinical advice into the patient record.",
        name = w.name(),
        incident = w.incident.display_name,
    );
    let outcome = match rooms::invite_with_reason(&ctx.client, room.room_id(), &user_id, &reason)
        .await
    {
        Ok(InviteOutcome::Invited | InviteOutcome::AlreadyThere) => json!("invited"),
        Ok(InviteOutcome::Refused(why)) => json!({ "refused": why }),
        Err(e) => {
            warn!(user = %user_id, error = %e, "could not invite a holder back; retrying at the next look");
            return;
        }
    };
    info!(user = %user_id, membership = %membership, "let a holder someone else put out back in");
    audit_room(
        ctx,
        &w.incident.id,
        "guard.member-restored",
        json!({
            "room": w.room_id, "room_key": w.record.key, "user": user,
            "membership": membership, "claimed_sender": claimed_sender,
            "event_at": at, "detected_at": now, "outcome": outcome,
        }),
    );
}

fn audit_room(
    ctx: &Ctx,
    incident: &crate::domain::incident::IncidentId,
    action: &str,
    details: Value,
) {
    if let Err(e) = ctx
        .store
        .audit(ACTOR, action, Some(incident), details, ctx.now())
    {
        error!(error = %e, action, "store: auditing a guard action");
    }
}

/// True for a removal the guard made and undoes once the person is verified again.
fn removed_by_guard(status: &RosterStatus) -> bool {
    matches!(status, RosterStatus::Removed { why } if why == IDENTITY_CHANGED || why == REVOKED)
}

/// The member's joined room, if cordon is in it.
fn room_of(ctx: &Ctx, entry: &RosterEntry) -> Option<Room> {
    rooms::joined(&ctx.client, &entry.room_id)
}

/// Kicks `user` from `room` if they are joined or invited there.
pub(super) async fn kick_if_present(room: &Room, user: &UserId, reason: &str) -> bool {
    match room.get_member_no_sync(user).await {
        Ok(Some(m))
            if matches!(
                m.membership(),
                MembershipState::Join | MembershipState::Invite
            ) => {}
        _ => return false,
    }
    match room.kick_user(user, Some(reason)).await {
        Ok(()) => true,
        Err(e) => {
            warn!(room = %room.room_id(), user = %user, error = %e, "could not kick");
            false
        }
    }
}

/// Takes `user` out of every room in `seats` (one incident): the roster first (audited
/// as `guard.removed` in the same transaction), then the kicks, then a fresh room key
/// in each room.
pub(super) async fn remove(ctx: &Ctx, user: &UserId, seats: &Seats, why: &str) {
    let now = ctx.now();
    let entries: Vec<RosterEntry> = seats
        .entries
        .iter()
        .map(|e| RosterEntry {
            status: RosterStatus::Removed {
                why: why.to_owned(),
            },
            at: now,
            ..e.clone()
        })
        .collect();
    if entries.is_empty() {
        return;
    }
    let rooms: Vec<&str> = entries.iter().map(|e| e.room_key.as_str()).collect();
    let audit = RosterAudit {
        actor: ACTOR,
        action: "guard.removed",
        details: json!({ "user": user, "rooms": rooms, "why": why, "detected_at": now }),
    };
    if let Err(e) = ctx.store.roster_put(&entries, Some(audit), now) {
        error!(error = %e, "store: recording a removal");
        return;
    }
    info!(incident = %seats.incident.id, user = %user, why, "removing a member");
    for entry in &entries {
        let Some(room) = room_of(ctx, entry) else {
            continue;
        };
        if kick_if_present(
            &room,
            user,
            &format!("cordon: {why}; re-verify to come back"),
        )
        .await
            && let Err(e) = room.discard_room_key().await
        {
            warn!(error = %e, "could not rotate the room key");
        }
    }
}

/// The playbook's identity-change policy for an incident. A playbook that no longer
/// loads counts as `remove`, the safer choice.
fn policy(ctx: &Ctx, seats: &Seats) -> IdentityChange {
    let loaded = ctx
        .store
        .playbook_snapshot(&seats.incident.id)
        .ok()
        .flatten()
        .and_then(|s| {
            crate::input::playbook::load_str(std::path::Path::new(&s.path), &s.text).ok()
        });
    match loaded {
        Some(p) => p.identity_change,
        None => {
            warn!(incident = %seats.incident.id, "declared playbook unreadable; removing on identity change");
            IdentityChange::Remove
        }
    }
}

/// A member's identity changed since enrolment: alert once per new identity and
/// incident, and remove them where the playbook says so.
pub(super) async fn identity_changed(ctx: &Ctx, user: &UserId, all: &[Seats]) {
    let identity = ctx
        .client
        .encryption()
        .get_user_identity(user)
        .await
        .ok()
        .flatten();
    let master = identity
        .as_ref()
        .and_then(trust::master_key)
        .unwrap_or_else(|| "none".to_owned());
    let enrolled = ctx
        .store
        .enrolment(user.as_str())
        .ok()
        .flatten()
        .and_then(|e| e.master_key);
    for seats in all {
        let policy = policy(ctx, seats);
        let key = format!("guard/{}/identity/{user}/{master}", seats.incident.id);
        let fresh = match ctx.store.outbox_get(&key) {
            Ok(None) => true,
            // Alerted before; under `alert` there is nothing more to do.
            Ok(Some(existing)) if policy == IdentityChange::Alert => {
                alert::deliver(ctx, &existing).await;
                continue;
            }
            Ok(Some(_)) => false,
            Err(e) => {
                error!(error = %e, "store: reading a guard alert");
                continue;
            }
        };
        let now = ctx.now();
        let action = match policy {
            IdentityChange::Remove => IdentityAction::Removed,
            IdentityChange::Alert => IdentityAction::AlertOnly,
        };
        let body = alert::identity_body(
            &seats.incident,
            user.as_str(),
            action,
            now,
            ctx.config.time_zone,
        );
        let Some(entry) = alert::record(ctx, &seats.incident, &key, &body) else {
            continue;
        };
        if fresh {
            warn!(incident = %seats.incident.id, user = %user, "identity changed since enrolment");
            audit(
                ctx,
                seats,
                "guard.identity-changed",
                json!({
                    "user": user,
                    "master_key": master,
                    "enrolled_master_key": enrolled,
                    "policy": if policy == IdentityChange::Remove { "remove" } else { "alert" },
                    "detected_at": now,
                }),
            );
        }
        if policy == IdentityChange::Remove {
            remove(ctx, user, seats, IDENTITY_CHANGED).await;
        }
        alert::deliver(ctx, &entry).await;
    }
}

/// A member's enrolment was revoked: remove them from every open incident and alert.
pub(super) async fn revoked(ctx: &Ctx, user: &UserId, all: &[Seats]) {
    let since = ctx
        .store
        .enrolment(user.as_str())
        .ok()
        .flatten()
        .and_then(|e| e.revoked)
        .map(|r| r.at.timestamp_millis())
        .unwrap_or_default();
    for seats in all {
        let key = format!("guard/{}/revoked/{user}/{since}", seats.incident.id);
        let now = ctx.now();
        let body = alert::revoked_body(&seats.incident, user.as_str(), now, ctx.config.time_zone);
        let Some(entry) = alert::record(ctx, &seats.incident, &key, &body) else {
            continue;
        };
        remove(ctx, user, seats, REVOKED).await;
        alert::deliver(ctx, &entry).await;
    }
}

fn audit(ctx: &Ctx, seats: &Seats, action: &str, details: Value) {
    if let Err(e) = ctx
        .store
        .audit(ACTOR, action, Some(&seats.incident.id), details, ctx.now())
    {
        error!(error = %e, action, "store: auditing a guard action");
    }
}

/// Invites `user` back into every room the guard removed them from (identity change or
/// revocation), once cordon sees them verified again. Their identity is fetched from
/// the homeserver: someone removed from the rooms may share none with cordon any more,
/// and then nothing refreshes cordon's local copy of it.
pub(super) async fn readmit(ctx: &Arc<Ctx>, user: &UserId) {
    let removed = super::seats_where(ctx, user, removed_by_guard);
    if removed.is_empty() {
        return;
    }
    if trust::status(&ctx.client, &ctx.store, user, true).await != Trust::Verified {
        return;
    }
    for seats in removed {
        let now = ctx.now();
        // Intents first (one per room, keyed by the removal), then the roster, then the
        // invites: a restart in between finds the intents and sends them.
        let mut intents = Vec::new();
        for e in &seats.entries {
            let key = format!(
                "guard/{}/readmit/{user}/{}/{}",
                seats.incident.id,
                e.room_key,
                e.at.timestamp_millis()
            );
            let name = room_name(ctx, e);
            let reason = format!(
                "You are invited back to {name} ({}): an operator verified your identity \
                 again. Not the medical record: transcribe clinical advice into the \
                 patient record.",
                seats.incident.display_name
            );
            let effect = Effect::GuardReadmit {
                room: e.room_id.clone(),
                user: user.to_string(),
                reason,
            };
            match ctx
                .store
                .outbox_put(&key, Some(&seats.incident.id), effect, now)
            {
                Ok(entry) => intents.push(entry),
                Err(e) => error!(error = %e, "store: recording an invite back"),
            }
        }
        let entries: Vec<RosterEntry> = seats
            .entries
            .iter()
            .map(|e| RosterEntry {
                status: RosterStatus::Invited,
                at: now,
                ..e.clone()
            })
            .collect();
        let names: Vec<String> = seats.entries.iter().map(|e| room_name(ctx, e)).collect();
        let audit = RosterAudit {
            actor: ACTOR,
            action: "guard.readmitted",
            details: json!({ "user": user, "rooms": names, "at": now }),
        };
        if let Err(e) = ctx.store.roster_put(&entries, Some(audit), now) {
            error!(error = %e, "store: recording a readmission");
            continue;
        }
        info!(incident = %seats.incident.id, user = %user, "inviting a re-verified member back");
        for intent in &intents {
            if let Err(e) = invites::send(ctx, &intent.key, Kind::Readmit).await {
                warn!(error = %e, "could not invite back; retrying later");
            }
        }
        let key = format!(
            "guard/{}/readmitted/{user}/{}",
            seats.incident.id,
            now.timestamp_millis()
        );
        let body = alert::readmitted_body(&seats.incident, user.as_str(), &names);
        if let Some(entry) = alert::record(ctx, &seats.incident, &key, &body) {
            alert::deliver(ctx, &entry).await;
        }
    }
}

fn room_name(ctx: &Ctx, entry: &RosterEntry) -> String {
    ctx.store
        .room(&entry.incident, &entry.room_key)
        .ok()
        .flatten()
        .and_then(|r| {
            r.desired
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| entry.room_key.clone())
}

#[cfg(test)]
mod tests;
