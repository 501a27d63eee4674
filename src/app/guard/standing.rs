//! People's standing, enforced in cordon's crypto store and raised in the control
//! rooms, whether or not they hold a seat in an incident.
//!
//! On every device or identity update matrix-sdk reports, at each guard pass, and
//! before cordon sends into a room a revoked person is in, [`trust::enforce`] makes
//! the crypto store agree with the store's records: a revoked person's devices are all
//! blacklisted (the ones that appear later too), and a person whose identity changed
//! since enrolment keeps local trust on none of their devices. Then:
//!
//! - an identity change is raised once per new identity in every control room the
//!   person is a member of, saying what it means: their commands are refused and no
//!   room key of cordon's reaches them until they are enrolled again;
//! - a revoked person still in a control room is raised once per revocation there,
//!   to the operators: cordon withholds its keys, but the others' clients may not.

use std::sync::Arc;

use matrix_sdk::ruma::events::room::member::MembershipState;
use matrix_sdk::ruma::{OwnedUserId, UserId};
use serde_json::json;
use tracing::{error, warn};

use crate::app::ctx::{ACTOR, Ctx};
use crate::matrix::rooms::notice;
use crate::trust::{self, Enforced};

/// Enforces `user`'s standing and raises what is new in the control rooms.
pub(crate) async fn check(ctx: &Arc<Ctx>, user: &UserId) {
    if user == ctx.user_id() {
        return;
    }
    // One check of a person at a time: the watchers, the pass and a revocation may
    // all ask at once, and each alert is audited once.
    let slot = super::slot(format!("standing:{user}"));
    let _held = slot.lock.lock().await;
    match trust::enforce(&ctx.client, &ctx.store, user).await {
        Enforced::Nothing => {}
        Enforced::IdentityChanged {
            master_key,
            distrusted,
        } => identity_changed(ctx, user, &master_key, distrusted).await,
        Enforced::Revoked { .. } => revoked_in_control_rooms(ctx, user).await,
    }
}

/// Every enrolled person, once (the guard's periodic pass).
pub(crate) async fn check_everyone(ctx: &Arc<Ctx>) {
    let enrolments = match ctx.store.enrolments() {
        Ok(list) => list,
        Err(e) => {
            error!(error = %e, "store: listing enrolments");
            return;
        }
    };
    for e in enrolments {
        if let Ok(user) = OwnedUserId::try_from(e.user.as_str()) {
            check(ctx, &user).await;
        }
    }
}

/// The control rooms `user` is joined to or invited into.
async fn control_rooms_of(ctx: &Ctx, user: &UserId) -> Vec<matrix_sdk::Room> {
    let mut out = Vec::new();
    for id in ctx.control_rooms() {
        let Some(room) = ctx.client.get_room(&id) else {
            continue;
        };
        if let Ok(Some(member)) = room.get_member_no_sync(user).await
            && matches!(
                member.membership(),
                MembershipState::Join | MembershipState::Invite
            )
        {
            out.push(room);
        }
    }
    out
}

async fn identity_changed(ctx: &Arc<Ctx>, user: &UserId, master_key: &str, distrusted: usize) {
    let now = ctx.now();
    let body = format!(
        "SECURITY ALERT: the identity (cross-signing keys) of {user} changed since an \
         operator enrolled them; detected {detected}. This happens when someone resets \
         their encryption (a lost phone, a lost recovery key), and also when an attacker \
         takes over the account.\nNone of their devices keeps cordon's trust, the one an \
         operator compared emojis with included: commands from them are refused, and no \
         room key of cordon's reaches any of their devices, until an operator enrols them \
         again in person (`cordon verify {user}`).",
        detected = crate::domain::incident::plan::format_time(now, ctx.config.time_zone),
    );
    let mut mention: Vec<OwnedUserId> = ctx.config.operators.iter().cloned().collect();
    mention.push(user.to_owned());
    for room in control_rooms_of(ctx, user).await {
        let key = format!("trust/identity/{user}/{master_key}/{}", room.room_id());
        let details = json!({
            "user": user, "room": room.room_id(), "master_key": master_key,
            "devices_distrusted": distrusted, "detected_at": now,
        });
        raise(
            ctx,
            &room,
            &key,
            "trust.identity-changed",
            details,
            &body,
            &mention,
        )
        .await;
    }
}

async fn revoked_in_control_rooms(ctx: &Arc<Ctx>, user: &UserId) {
    let Ok(Some(enrolment)) = ctx.store.enrolment(user.as_str()) else {
        return;
    };
    let Some(revocation) = enrolment.revoked else {
        return;
    };
    let now = ctx.now();
    let tz = ctx.config.time_zone;
    let body = format!(
        "SECURITY ALERT: {user} is still a member of this control room, but an operator \
         revoked their enrolment ({by}, {at}). cordon withholds its room keys from every \
         device of theirs, new ones included, and refuses their commands; the other \
         members' clients may still share keys with them.\nOperators: remove {user} from \
         this room.",
        by = revocation.by,
        at = crate::domain::incident::plan::format_time(revocation.at, tz),
    );
    let mention: Vec<OwnedUserId> = ctx.config.operators.iter().cloned().collect();
    for room in control_rooms_of(ctx, user).await {
        let key = format!(
            "trust/revoked/{user}/{}/{}",
            revocation.at.timestamp_millis(),
            room.room_id()
        );
        let details = json!({ "user": user, "room": room.room_id(), "detected_at": now });
        raise(
            ctx,
            &room,
            &key,
            "trust.revoked-member",
            details,
            &body,
            &mention,
        )
        .await;
    }
}

/// Raises `body` in a control room once under `key`, audited as `action` the first
/// time (the outbox entry is what makes it once, across restarts too).
pub(super) async fn raise(
    ctx: &Ctx,
    room: &matrix_sdk::Room,
    key: &str,
    action: &str,
    details: serde_json::Value,
    body: &str,
    mention: &[OwnedUserId],
) {
    if matches!(ctx.store.outbox_get(key), Ok(None)) {
        warn!(room = %room.room_id(), action, "raising a person's standing in a control room");
        if let Err(e) = ctx.store.audit(ACTOR, action, None, details, ctx.now()) {
            error!(error = %e, action, "store: auditing a person's standing");
        }
    }
    if let Err(e) = crate::app::chat::send_once(ctx, room, key, None, notice(body, mention)).await {
        warn!(error = %e, action, "could not raise a person's standing in a control room");
    }
}
