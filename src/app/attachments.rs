//! Notes the attachment addresses of every message and sticker sync delivers in an
//! incident room, so that stand-down deletes them (see [`crate::domain::attachments`]).
//!
//! Sync is the first time cordon sees an event, and for an encrypted one often the
//! only time its content can be read: a message its sender or a moderator redacts
//! before the retention sweep or the seal reads it keeps no address, and Synapse cannot
//! list what encrypted events point to. matrix-sdk hands this handler the decrypted
//! event when it could decrypt it; an event it could not is read again by the sweep and
//! the seal, which note what they find too.

use std::sync::Arc;

use matrix_sdk::Room;
use matrix_sdk::ruma::events::AnySyncMessageLikeEvent;
use matrix_sdk::ruma::serde::Raw;
use serde_json::Value;
use tracing::{debug, error};

use super::ctx::Ctx;
use crate::domain::attachments::{MEDIA_EVENT_TYPES, media_addresses};
use crate::store::{MediaSeenIn, MediaSighting};

/// Records the media addresses `raw` names, if it is a message or sticker in an
/// incident room.
pub(crate) fn on_message_like(ctx: &Arc<Ctx>, raw: &Raw<AnySyncMessageLikeEvent>, room: &Room) {
    let Ok(Some(event_type)) = raw.get_field::<String>("type") else {
        return;
    };
    if !MEDIA_EVENT_TYPES.contains(&event_type.as_str()) {
        return;
    }
    let Ok(Some(content)) = raw.get_field::<Value>("content") else {
        return;
    };
    let addresses = media_addresses(&event_type, &content);
    if addresses.is_empty() {
        return;
    }
    let room_id = room.room_id().as_str();
    let record = match ctx.store.room_by_matrix_id(room_id) {
        Ok(Some(record)) => record,
        // Not an incident room (a control room): nothing of an incident to delete.
        Ok(None) => return,
        Err(e) => {
            error!(room = %room_id, error = %e, "store: finding the incident of a room");
            return;
        }
    };
    let event = raw
        .get_field::<String>("event_id")
        .ok()
        .flatten()
        .unwrap_or_default();
    let sighting = MediaSighting {
        room: room_id.to_owned(),
        event: event.clone(),
        seen_in: MediaSeenIn::Sync,
        at: ctx.now(),
    };
    let found: Vec<_> = addresses
        .iter()
        .map(|address| (address.clone(), sighting.clone()))
        .collect();
    match ctx.store.record_media(&record.incident, &found) {
        Ok(new) => debug!(
            incident = %record.incident,
            room = %room_id,
            event = %event,
            addresses = addresses.len(),
            new,
            "attachment addresses noted"
        ),
        Err(e) => error!(
            incident = %record.incident,
            room = %room_id,
            error = %e,
            "store: noting attachment addresses"
        ),
    }
}
