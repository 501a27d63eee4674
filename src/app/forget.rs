//! After destruction, cordon's own stores forget the incident's rooms: their keys leave
//! matrix-sdk's crypto store and the homeserver's key backup, and the rooms leave its
//! state store ([`crate::matrix::forget`] says how, and why it goes under the SDK for the
//! keys).
//!
//! Only a room already recorded `destroyed` (or `purge-pending`, left without admin
//! rights) is forgotten: until then cordon still needs the room in its client to kick
//! members and to follow the deletion. That record is the step's intent: a room in it
//! without `forgotten_at` is still to be forgotten, so a stand-down resumed after a
//! crash anywhere in here forgets it again (every part is safe to repeat) and only then
//! records it, with its audit entry (`room.forgotten`).

use std::sync::Arc;

use matrix_sdk::ruma::OwnedRoomId;
use serde_json::json;
use tracing::info;

use super::ctx::{ACTOR, AppError, Ctx};
use crate::domain::incident::Incident;
use crate::store::RoomStatus;

/// Forgets every destroyed room of `incident` that is not forgotten yet, and records
/// each.
pub(crate) async fn forget_rooms(ctx: &Arc<Ctx>, incident: &Incident) -> Result<(), AppError> {
    let id = &incident.id;
    for mut record in ctx.store.rooms(id)? {
        if !matches!(
            record.status,
            RoomStatus::Destroyed | RoomStatus::PurgePending
        ) || record.forgotten_at.is_some()
        {
            continue;
        }
        // Planned but never created: nothing of it was ever stored.
        let Some(room_id) = record
            .room_id
            .as_deref()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
        else {
            continue;
        };
        let forgotten =
            crate::matrix::forget::forget_room(&ctx.client, &ctx.room_keys, &room_id).await?;
        crate::failpoint::hit("standdown.forgotten").await;
        record.forgotten_at = Some(ctx.now());
        record.updated_at = ctx.now();
        ctx.store.upsert_room(&record)?;
        ctx.store.audit(
            ACTOR,
            "room.forgotten",
            Some(id),
            json!({
                "room_key": record.key,
                "room": room_id,
                "sessions_deleted": forgotten.sessions,
                "other_rows_deleted": forgotten.other_rows,
                "state_forgotten": forgotten.state_forgotten,
                "backup_cleared": forgotten.backup_cleared,
            }),
            ctx.now(),
        )?;
        info!(incident = %id, room = %room_id, key = %record.key, "room forgotten in cordon's stores");
    }
    Ok(())
}
