//! Which incident a command is about: the one it names, or the one (or ones) open in
//! its control room. Each failure is the answer to give, as text.

use super::chat::Incoming;
use super::ctx::Ctx;
use crate::domain::command::IncidentRef;
use crate::domain::incident::{Incident, IncidentId, State};
use crate::store::IncidentFilter;

/// Like [`resolve_one`], but a named incident may be in any state (a hold outlives the
/// rooms), and the default is the only open incident of this control room.
pub(super) fn resolve_any(
    ctx: &Ctx,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
) -> Result<Incident, String> {
    if wanted.is_some() {
        return resolve_one(ctx, incoming, wanted);
    }
    let mut list = resolve_many(ctx, incoming, None)?;
    match list.len() {
        1 => Ok(list.remove(0)),
        0 => Err(
            "There is no open incident in this room; name one, like `!cordon hold \
                  mc-4k7p --reason \"…\"`. Nothing was changed."
                .to_owned(),
        ),
        _ => {
            let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
            Err(format!(
                "Several incidents are open here ({}); name one. Nothing was changed.",
                ids.join(", ")
            ))
        }
    }
}

/// For the commands an incident room takes too (`decision`, `log`): in an incident
/// room, that room's incident (a different one named is refused); in a control room,
/// as [`resolve_one`], or [`resolve_any`] when `any_state`.
pub(super) fn resolve_here(
    ctx: &Ctx,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
    any_state: bool,
) -> Result<Incident, String> {
    let here = incoming.room.room_id().as_str();
    if ctx.is_control_room(incoming.room.room_id()) {
        return if any_state {
            resolve_any(ctx, incoming, wanted)
        } else {
            resolve_one(ctx, incoming, wanted)
        };
    }
    let own = super::ctx::incident_room(ctx, here).map(|(_, i)| i);
    match (own, wanted) {
        (None, _) => Err("This room belongs to no incident I know.".to_owned()),
        (Some(incident), Some(w)) if w.as_str() != incident.id.as_str() => Err(format!(
            "This room belongs to {}; name that incident here, or send the command in \
             the control room. Nothing was changed.",
            incident.id.as_str()
        )),
        (Some(incident), _) => Ok(incident),
    }
}

/// The one incident a command acts on: the one named, which must have been declared in
/// this control room, or else the only active one here. The answer when there is none
/// or several is the error.
pub(super) fn resolve_one(
    ctx: &Ctx,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
) -> Result<Incident, String> {
    let here = incoming.room.room_id().as_str();
    let answer = match wanted {
        Some(_) => match resolve_many(ctx, incoming, wanted) {
            Ok(mut list) => match list.pop() {
                Some(incident) if incident.control_room == here => return Ok(incident),
                Some(incident) => format!(
                    "{} was not declared in this room; manage it from its own control room.",
                    incident.id.as_str()
                ),
                None => "There is no such incident. Type `!cordon status` to list this room's \
                         incidents."
                    .to_owned(),
            },
            Err(why) => why,
        },
        None => {
            let active = ctx.store.incidents(
                &IncidentFilter::in_states(&[State::Active, State::Provisioning])
                    .in_control_room(here),
            );
            match active {
                Ok(mut list) if list.len() == 1 => return Ok(list.remove(0)),
                Ok(list) if list.is_empty() => {
                    "There is no active incident in this room, so nothing was changed. \
                     `!cordon status` lists this room's incidents; `!cordon declare` starts one."
                        .to_owned()
                }
                Ok(list) => {
                    let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
                    format!(
                        "Several incidents are active here ({}); name one, like `!cordon {} {} …`. \
                         Nothing was changed.",
                        ids.join(", "),
                        incoming
                            .parsed
                            .as_ref()
                            .map(|c| c.name())
                            .unwrap_or("status"),
                        ids.first().copied().unwrap_or("mc-4k7p"),
                    )
                }
                Err(e) => store_unreadable(&e),
            }
        }
    };
    Err(answer)
}

/// The incidents a command names: the given one, or every open incident of this
/// control room.
pub(super) fn resolve_many(
    ctx: &Ctx,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
) -> Result<Vec<Incident>, String> {
    match wanted {
        Some(r) => {
            let id = IncidentId::parse(r.as_str()).map_err(|e| {
                format!(
                    "`{}` is not an incident id: {e}. Ids look like mc-4k7p; \
                         `!cordon status` lists this room's incidents.",
                    r.as_str()
                )
            })?;
            match ctx.store.incident(&id) {
                Ok(Some(i)) => Ok(vec![i]),
                Ok(None) => Err(format!(
                    "There is no incident `{}`. Type `!cordon status` to list them.",
                    id.as_str()
                )),
                Err(e) => Err(store_unreadable(&e)),
            }
        }
        None => {
            let filter = IncidentFilter::in_states(&[
                State::Provisioning,
                State::Active,
                State::StandingDown,
                State::Failed,
            ])
            .in_control_room(incoming.room.room_id().as_str());
            ctx.store
                .incidents(&filter)
                .map_err(|e| store_unreadable(&e))
        }
    }
}

/// The reply when the store cannot be read: nothing was done, and what to do next.
fn store_unreadable(e: &dyn std::fmt::Display) -> String {
    format!(
        "I could not read my store ({e}). Nothing was changed. Send the command again in a \
         minute; if this keeps happening, operators should check cordon's logs and \
         `/healthz`."
    )
}
