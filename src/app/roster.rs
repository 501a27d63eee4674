//! Roster changes during an incident: `add`, `remove`, `handover`, `admit`, and letting
//! in pending holders once an operator has enrolled them.
//!
//! Every change is written to the roster (the guard's ground truth) and audited in one
//! transaction *before* the invite or kick goes out, so the guard never mistakes a
//! legitimate change for an intrusion, and a crash in between is repaired by the next
//! attempt (the invite's outbox key is the command's event id).

use std::collections::BTreeMap;
use std::sync::Arc;

use matrix_sdk::Room;
use matrix_sdk::ruma::{OwnedUserId, UserId};
use serde_json::json;
use tracing::{debug, info, warn};

use super::chat::{CommandError, Done, Incoming};
use super::ctx::declared_playbook;
use super::ctx::{ACTOR, AppError, Ctx};
use super::invites::Kind;
use super::provision::unverified_reason;
use crate::domain::incident::plan::{self, IncidentFacts, PL_MODERATOR};
use crate::domain::incident::{Event, Incident, State};
use crate::input::playbook::Playbook;
use crate::matrix::MatrixError;
use crate::matrix::rooms;
use crate::store::{Effect, IncidentFilter, RoomRecord, RosterAudit, RosterEntry, RosterStatus};
use crate::trust::{self, Trust};

/// One room a person is to be let into, as the plan has it.
struct Seat {
    record: RoomRecord,
    room_id: String,
    roles: Vec<String>,
    reason: String,
    moderator: bool,
}

/// The rooms `user` would be in, with the invite reason, if `playbook` (as changed by
/// the caller) and `commander` applied.
fn seats_for(
    ctx: &Ctx,
    incident: &Incident,
    playbook: &Playbook,
    commander: &UserId,
    user: &UserId,
) -> Result<Vec<Seat>, AppError> {
    let facts = IncidentFacts::of(incident, playbook, commander, ctx.config.time_zone);
    let records: BTreeMap<String, RoomRecord> = ctx
        .store
        .rooms(&incident.id)?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let mut seats = Vec::new();
    for p in plan::plan_rooms(&facts, ctx.now()) {
        let Some(inv) = p.invites.iter().find(|i| i.user == user) else {
            continue;
        };
        let Some(record) = records.get(&p.key) else {
            continue;
        };
        let Some(room_id) = record.room_id.clone() else {
            continue;
        };
        let moderator = p.power_levels["users"]
            .get(user.as_str())
            .and_then(|v| v.as_i64())
            .is_some_and(|pl| pl >= PL_MODERATOR);
        seats.push(Seat {
            record: record.clone(),
            room_id,
            roles: inv.roles.clone(),
            reason: inv.reason.clone(),
            moderator,
        });
    }
    Ok(seats)
}

fn check_open(incident: &Incident) -> Result<(), String> {
    match incident.state {
        State::Active => Ok(()),
        State::Provisioning => Err(format!(
            "{} is still being provisioned; try again when the summary has been posted.",
            incident.id.as_str()
        )),
        other => Err(format!(
            "{} is {}; its roster can no longer change. Nothing was changed. If the work \
             goes on, declare a new incident with `!cordon declare`.",
            incident.id.as_str(),
            other.as_str()
        )),
    }
}

/// `add [incident] @user --role R`: a verified person joins in a role.
pub(super) async fn add(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    user: &UserId,
    role: &str,
) -> Result<Done, CommandError> {
    let id = incident.id.as_str();
    check_open(incident).map_err(|e| format!("{e} Nothing was changed."))?;
    let mut playbook = declared_playbook(ctx, &incident.id).map_err(store_trouble)?;
    let Some(r) = playbook.roles.iter_mut().find(|r| r.id.as_str() == role) else {
        let roles: Vec<&str> = playbook.roles.iter().map(|r| r.id.as_str()).collect();
        return Err(CommandError::NotDone(format!(
            "{} has no role `{}`. Nothing was changed. Roles: {}.",
            playbook.id,
            role,
            roles.join(", ")
        )));
    };
    if !r.holders.iter().any(|h| h == user) {
        r.holders.push(user.to_owned());
    }
    let title = r.title.clone();
    let commander = commander_of(incident)?;
    let seats = seats_for(ctx, incident, &playbook, &commander, user).map_err(store_trouble)?;
    if seats.is_empty() {
        return Err(CommandError::NotDone(format!(
            "The role {title} has no room in {id}. Nothing was changed. Choose a role that has \
             a room (`!cordon status {id}` lists the rooms), or ask the planners to add this \
             role to a room's `members`."
        )));
    }
    let standing = trust::status(&ctx.client, &ctx.store, user, true).await;
    if !standing.is_verified() {
        // Recorded as pending, so that `admit` (or an enrolment) can let them in.
        let entries: Vec<RosterEntry> = seats
            .iter()
            .map(|s| {
                entry(
                    incident,
                    s,
                    user,
                    RosterStatus::Pending {
                        why: standing.reason(),
                    },
                    false,
                    ctx,
                )
            })
            .filter(|e| !already_allowed(ctx, e))
            .collect();
        if !entries.is_empty() {
            ctx.store
                .roster_put(
                    &entries,
                    Some(RosterAudit {
                        actor: incoming.sender.as_str(),
                        action: "roster.pending",
                        details: json!({ "user": user, "role": role, "why": standing.reason() }),
                    }),
                    ctx.now(),
                )
                .map_err(store_trouble)?;
        }
        return Err(CommandError::NotDone(format!(
            "{user} was not added: {}. An operator can enrol them in person with `cordon \
             verify {user}` (they are then invited as {title}), or in an emergency: \
             `!cordon admit {id} {user} --unverified --reason \"…\"`.",
            standing.reason()
        )));
    }
    let invited = let_in(
        ctx,
        incoming,
        incident,
        user,
        &seats,
        false,
        "roster.added",
        json!({ "role": role }),
    )
    .await
    .map_err(|e| format!("I could not add {user}: {e}. Try again; nothing is sent twice."))?;
    Ok(Done::Reply(format!(
        "Added {user} to {id} as {title}: invited to {}.",
        invited.join(", ")
    )))
}

/// `admit [incident] @user --unverified --reason …`: the audited emergency override
/// that lets in a pending holder without a verified identity. Commanders only.
pub(super) async fn admit(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    user: &UserId,
    reason: &str,
) -> Result<Done, CommandError> {
    let id = incident.id.as_str();
    check_open(incident).map_err(|e| format!("{e} Nothing was changed."))?;
    let pending: Vec<RosterEntry> = ctx
        .store
        .roster_for_incident(&incident.id)
        .map_err(store_trouble)?
        .into_iter()
        .filter(|e| e.user == user.as_str() && matches!(e.status, RosterStatus::Pending { .. }))
        .collect();
    if pending.is_empty() {
        return Err(CommandError::NotDone(format!(
            "{user} is not pending in {id}, so there is nobody to admit. To bring in \
             someone new, first `!cordon add {id} {user} --role <role>`."
        )));
    }
    let playbook = declared_playbook(ctx, &incident.id).map_err(store_trouble)?;
    let mut with_holder = playbook.clone();
    for e in &pending {
        for role in &e.roles {
            if let Some(r) = with_holder.roles.iter_mut().find(|r| r.id.as_str() == role)
                && !r.holders.iter().any(|h| h == user)
            {
                r.holders.push(user.to_owned());
            }
        }
    }
    let commander = commander_of(incident)?;
    let seats: Vec<Seat> = seats_for(ctx, incident, &with_holder, &commander, user)
        .map_err(store_trouble)?
        .into_iter()
        .filter(|s| pending.iter().any(|p| p.room_id == s.room_id))
        .collect();
    let invited = let_in(
        ctx,
        incoming,
        incident,
        user,
        &seats,
        true,
        "roster.admitted-unverified",
        json!({ "reason": reason }),
    )
    .await
    .map_err(|e| format!("I could not admit {user}: {e}. Try again; nothing is sent twice."))?;
    Ok(Done::Reply(format!(
        "ADMITTED WITHOUT VERIFICATION: {user} into {id} ({}), on your authority: \
         \"{reason}\". This is in the audit log. cordon's own messages stay unreadable \
         to them until an operator enrols them in person.",
        invited.join(", ")
    )))
}

/// `remove [incident] @user`: takes a person out of every room of the incident.
pub(super) async fn remove(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    user: &UserId,
) -> Result<Done, CommandError> {
    let id = incident.id.as_str();
    if incident.commander == user.as_str() {
        return Err(CommandError::NotDone(format!(
            "{user} is the commander of {id}. Hand over first (`!cordon handover {id} \
             @someone`), then remove them. Nothing was changed."
        )));
    }
    check_open(incident).map_err(|e| format!("{e} Nothing was changed."))?;
    let why = format!("removed by {}", incoming.sender);
    let entries: Vec<RosterEntry> = ctx
        .store
        .roster_for_incident(&incident.id)
        .map_err(store_trouble)?
        .into_iter()
        .filter(|e| e.user == user.as_str() && !matches!(e.status, RosterStatus::Removed { .. }))
        .map(|mut e| {
            e.status = RosterStatus::Removed { why: why.clone() };
            e.at = ctx.now();
            e
        })
        .collect();
    if entries.is_empty() {
        return Err(CommandError::NotDone(format!(
            "{user} is not on the roster of {id}. Nothing was changed. Check the user id; \
             `!cordon status {id}` shows the rooms and who is in them."
        )));
    }
    ctx.store
        .roster_put(
            &entries,
            Some(RosterAudit {
                actor: incoming.sender.as_str(),
                action: "roster.removed",
                details: json!({ "user": user, "rooms": entries.iter().map(|e| &e.room_id).collect::<Vec<_>>() }),
            }),
            ctx.now(),
        )
        .map_err(store_trouble)?;
    let mut names = Vec::new();
    for e in &entries {
        let Some(room) = rooms::joined(&ctx.client, &e.room_id) else {
            continue;
        };
        if let Err(err) = kick_if_present(&room, user, &format!("cordon: {why}")).await {
            warn!(room = %e.room_id, error = %err, "could not remove a member; the guard retries");
        }
        if let Err(err) = set_moderator(ctx, &incident.id, &e.room_key, user, false).await {
            warn!(room = %e.room_id, error = %err, "could not update power levels");
        }
        names.push(room_name(ctx, incident, &e.room_key));
    }
    Ok(Done::Reply(format!(
        "Removed {user} from {id}: {}.",
        names.join(", ")
    )))
}

/// `handover [incident] @user`: the commander role moves to a verified person, who is
/// let into every room as a moderator.
pub(super) async fn handover(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    user: &UserId,
) -> Result<Done, CommandError> {
    let id = incident.id.as_str();
    if incident.commander == user.as_str() {
        return Err(CommandError::NotDone(format!(
            "{user} already commands {id}. Nothing was changed."
        )));
    }
    check_open(incident).map_err(|e| format!("{e} Nothing was changed."))?;
    let standing = trust::status(&ctx.client, &ctx.store, user, true).await;
    if !standing.is_verified() {
        return Err(CommandError::NotDone(format!(
            "{user} cannot take command: {}. A commander must be verified; an operator \
             can enrol them in person with `cordon verify {user}`. Nothing was changed.",
            standing.reason()
        )));
    }
    let playbook = declared_playbook(ctx, &incident.id).map_err(store_trouble)?;
    let seats = seats_for(ctx, incident, &playbook, user, user).map_err(store_trouble)?;
    // The roster first (so the guard expects the new commander), then the incident.
    let invited = let_in(
        ctx,
        incoming,
        incident,
        user,
        &seats,
        false,
        "roster.commander-seated",
        json!({}),
    )
    .await
    .map_err(|e| format!("I could not hand {id} over: {e}. Try again; nothing is sent twice."))?;
    ctx.store
        .apply(
            &incident.id,
            Event::RosterChanged {
                commander: Some(user.to_string()),
            },
            incoming.sender.as_str(),
            ctx.now(),
        )
        .map_err(store_trouble)?;
    info!(incident = %incident.id, to = %user, "handed over");
    Ok(Done::Reply(format!(
        "{user} now commands {id} (handed over by {}). They moderate every room: {}.",
        incoming.sender,
        invited.join(", ")
    )))
}

/// Lets pending holders who have since been enrolled into their rooms. Run after an
/// enrolment and periodically; returns how many seats were filled.
pub(crate) async fn admit_enrolled(ctx: &Arc<Ctx>, only: Option<&UserId>) -> usize {
    let open = match ctx
        .store
        .incidents(&IncidentFilter::in_states(&[State::Active]))
    {
        Ok(list) => list,
        Err(e) => {
            warn!(error = %e, "store: listing incidents");
            return 0;
        }
    };
    let mut filled = 0;
    for incident in open {
        let Ok(roster) = ctx.store.roster_for_incident(&incident.id) else {
            continue;
        };
        let mut by_user: BTreeMap<String, Vec<RosterEntry>> = BTreeMap::new();
        for e in roster {
            if matches!(e.status, RosterStatus::Pending { .. })
                && only.is_none_or(|u| u.as_str() == e.user)
            {
                by_user.entry(e.user.clone()).or_default().push(e);
            }
        }
        for (user, entries) in by_user {
            let Ok(user) = OwnedUserId::try_from(user.as_str()) else {
                continue;
            };
            // Fetched, not cached: cordon shares no room with a pending holder, so its
            // copy of their identity is never refreshed by a device-list change, and it
            // would not show the signature an enrolment just uploaded.
            let trust = trust::status(&ctx.client, &ctx.store, &user, true).await;
            if trust != Trust::Verified {
                debug!(incident = %incident.id, user = %user, ?trust, "pending holder not verified yet");
                continue;
            }
            let seats = match seats_for_entries(ctx, &incident, &user, &entries) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "planning seats for an enrolled holder");
                    continue;
                }
            };
            info!(incident = %incident.id, user = %user, seats = seats.len(), "letting an enrolled holder in");
            // Stable across restarts: the pending record's own time.
            let since = entries.iter().map(|e| e.at).min().unwrap_or_default();
            let key = format!("enrolled/{}", since.timestamp_millis());
            match let_in_keyed(
                ctx,
                ACTOR,
                &key,
                &incident,
                &user,
                &seats,
                false,
                "roster.enrolled",
                json!({}),
            )
            .await
            {
                Ok(rooms) => {
                    filled += rooms.len();
                    notify_commander(
                        ctx,
                        &incident,
                        &format!(
                            "{user} has been enrolled and is now invited to {}: {}.",
                            incident.id.as_str(),
                            rooms.join(", ")
                        ),
                        &key,
                    )
                    .await;
                }
                Err(e) => warn!(error = %e, "inviting an enrolled holder"),
            }
        }
    }
    filled
}

fn seats_for_entries(
    ctx: &Ctx,
    incident: &Incident,
    user: &UserId,
    entries: &[RosterEntry],
) -> Result<Vec<Seat>, AppError> {
    let mut playbook = declared_playbook(ctx, &incident.id)?;
    for e in entries {
        for role in &e.roles {
            if let Some(r) = playbook.roles.iter_mut().find(|r| r.id.as_str() == role)
                && !r.holders.iter().any(|h| h == user)
            {
                r.holders.push(user.to_owned());
            }
        }
    }
    let commander = commander_of(incident).map_err(MatrixError::Client)?;
    Ok(seats_for(ctx, incident, &playbook, &commander, user)?
        .into_iter()
        .filter(|s| entries.iter().any(|e| e.room_id == s.room_id))
        .collect())
}

#[allow(clippy::too_many_arguments)]
async fn let_in(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    user: &UserId,
    seats: &[Seat],
    unverified: bool,
    action: &str,
    details: serde_json::Value,
) -> Result<Vec<String>, AppError> {
    let key = incoming.event_id.to_string();
    let_in_keyed(
        ctx,
        incoming.sender.as_str(),
        &key,
        incident,
        user,
        seats,
        unverified,
        action,
        details,
    )
    .await
}

/// Records `user` as invited to each seat (audited, one transaction), then unbans if
/// needed, invites, and grants moderator power where the plan says so. Returns the
/// room names.
#[allow(clippy::too_many_arguments)]
async fn let_in_keyed(
    ctx: &Arc<Ctx>,
    actor: &str,
    key: &str,
    incident: &Incident,
    user: &UserId,
    seats: &[Seat],
    unverified: bool,
    action: &str,
    mut details: serde_json::Value,
) -> Result<Vec<String>, AppError> {
    // Intents first (replayed at start-up if cordon stops half-way), then the roster
    // and its audit entry, then the invites.
    let mut jobs = Vec::new();
    for seat in seats {
        let reason = if unverified {
            unverified_reason(&seat.reason)
        } else {
            seat.reason.clone()
        };
        let outbox_key = format!(
            "{}/{}/invite/{user}/{key}",
            incident.id.as_str(),
            seat.record.key
        );
        ctx.store.outbox_put(
            &outbox_key,
            Some(&incident.id),
            Effect::RosterInvite {
                room: seat.room_id.clone(),
                user: user.to_string(),
                reason: reason.clone(),
            },
            ctx.now(),
        )?;
        jobs.push((seat, outbox_key));
    }
    let entries: Vec<RosterEntry> = seats
        .iter()
        .map(|s| entry(incident, s, user, RosterStatus::Invited, unverified, ctx))
        .collect();
    if let Some(map) = details.as_object_mut() {
        map.insert("user".into(), json!(user));
        map.insert(
            "rooms".into(),
            json!(seats.iter().map(|s| &s.room_id).collect::<Vec<_>>()),
        );
    }
    ctx.store.roster_put(
        &entries,
        Some(RosterAudit {
            actor,
            action,
            details,
        }),
        ctx.now(),
    )?;
    let mut names = Vec::new();
    for (seat, outbox_key) in jobs {
        if seat.moderator {
            set_moderator(ctx, &incident.id, &seat.record.key, user, true).await?;
        }
        super::invites::send(ctx, &outbox_key, Kind::Roster).await?;
        names.push(room_name(ctx, incident, &seat.record.key));
    }
    Ok(names)
}

async fn kick_if_present(room: &Room, user: &UserId, reason: &str) -> Result<(), MatrixError> {
    use matrix_sdk::ruma::events::room::member::MembershipState;
    match room.get_member(user).await {
        Ok(Some(m))
            if matches!(
                m.membership(),
                MembershipState::Join | MembershipState::Invite
            ) =>
        {
            room.kick_user(user, Some(reason))
                .await
                .map_err(MatrixError::from)
        }
        _ => Ok(()),
    }
}

/// Grants or withdraws moderator power: the desired state is updated first (so the
/// guard reverts to it, not from it), then the power levels are sent.
async fn set_moderator(
    ctx: &Ctx,
    incident: &crate::domain::incident::IncidentId,
    room_key: &str,
    user: &UserId,
    on: bool,
) -> Result<(), AppError> {
    let _quiet = crate::app::guard::changing(incident).await;
    let mut changed = false;
    let now = ctx.now();
    let Some(record) = ctx.store.update_room(incident, room_key, |record| {
        let Some(users) = record
            .desired
            .pointer_mut("/state/m.room.power_levels/users")
            .and_then(|u| u.as_object_mut())
        else {
            return;
        };
        changed = if on {
            users.insert(user.to_string(), json!(PL_MODERATOR)) != Some(json!(PL_MODERATOR))
        } else {
            users.remove(user.as_str()).is_some()
        };
        if changed {
            record.updated_at = now;
        }
    })?
    else {
        return Ok(());
    };
    if !changed {
        return Ok(());
    }
    let content = record.desired["state"]["m.room.power_levels"].clone();
    if let Some(room_id) = &record.room_id
        && let Some(room) = rooms::joined(&ctx.client, room_id)
    {
        room.send_state_event_raw("m.room.power_levels", "", content)
            .await
            .map_err(MatrixError::from)?;
    }
    Ok(())
}

fn entry(
    incident: &Incident,
    seat: &Seat,
    user: &UserId,
    status: RosterStatus,
    unverified: bool,
    ctx: &Ctx,
) -> RosterEntry {
    RosterEntry {
        incident: incident.id.clone(),
        room_key: seat.record.key.clone(),
        room_id: seat.room_id.clone(),
        user: user.to_string(),
        roles: seat.roles.clone(),
        status,
        unverified,
        at: ctx.now(),
    }
}

fn already_allowed(ctx: &Ctx, e: &RosterEntry) -> bool {
    ctx.store
        .roster_entry(&e.room_id, &e.user)
        .ok()
        .flatten()
        .is_some_and(|x| x.is_allowed())
}

fn room_name(ctx: &Ctx, incident: &Incident, key: &str) -> String {
    ctx.store
        .room(&incident.id, key)
        .ok()
        .flatten()
        .and_then(|r| {
            r.desired
                .get("name")
                .and_then(|n| n.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| key.to_owned())
}

fn commander_of(incident: &Incident) -> Result<OwnedUserId, String> {
    OwnedUserId::try_from(incident.commander.as_str()).map_err(|e| {
        format!(
            "the stored commander {} is not a user id: {e}",
            incident.commander
        )
    })
}

fn store_trouble(e: impl std::fmt::Display) -> String {
    warn!(error = %e, "roster change failed");
    format!(
        "I could not read or update my records ({e}). Nothing more was changed; operators: check cordon's logs."
    )
}

async fn notify_commander(ctx: &Arc<Ctx>, incident: &Incident, text: &str, key: &str) {
    let Some(room) = rooms::joined(&ctx.client, &incident.control_room) else {
        return;
    };
    let mention: Vec<OwnedUserId> = OwnedUserId::try_from(incident.commander.as_str())
        .into_iter()
        .collect();
    let key = format!("{}/{key}/notice", incident.id.as_str());
    if let Err(e) = super::chat::send_once(
        ctx,
        &room,
        &key,
        Some(&incident.id),
        rooms::notice(text, &mention),
    )
    .await
    {
        warn!(error = %e, "could not tell the commander about a roster change");
    }
}
