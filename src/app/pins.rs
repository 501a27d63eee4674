//! The briefing's pin. cordon's pin list lives in the room record's desired state,
//! where the guard compares the room's pins with it: each change is written there
//! first, then sent, so a forged pin is put back and cordon's own never is.

use matrix_sdk::Room;
use matrix_sdk::ruma::EventId;
use serde_json::{Value, json};

use super::ctx::{AppError, Ctx};
use crate::domain::incident::IncidentId;
use crate::matrix::rooms;

/// The desired-state key of cordon's pins.
const PINS: &str = "m.room.pinned_events";

/// Pins `new` in `room` (room `room_key` of `incident`) in place of `old`.
pub(crate) async fn pin(
    ctx: &Ctx,
    incident: &IncidentId,
    room_key: &str,
    room: &Room,
    old: Option<&EventId>,
    new: &EventId,
) -> Result<(), AppError> {
    let _quiet = crate::app::guard::changing(incident).await;
    let record = ctx.store.update_room(incident, room_key, |record| {
        let current: Vec<String> = record
            .desired
            .pointer(&format!("/state/{PINS}/pinned"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let pinned = rooms::pins_after(&current, old, new);
        if let Some(state) = record
            .desired
            .get_mut("state")
            .and_then(Value::as_object_mut)
        {
            state.insert(PINS.into(), json!({ "pinned": pinned }));
        }
    })?;
    let Some(content) = record.and_then(|r| r.desired.pointer(&format!("/state/{PINS}")).cloned())
    else {
        return Ok(());
    };
    rooms::set_pins(room, content).await?;
    Ok(())
}
