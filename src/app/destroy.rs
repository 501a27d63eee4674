//! The stand-down's last steps: the hold check, destroying the rooms, and, at the end
//! of the sealed archive's keep time, deleting the archive.
//!
//! Destruction runs only once the archive is verified (`archived`) and no legal hold is
//! set; the hold is checked again as each room starts, so one placed while the
//! pipeline runs stops it before the rooms not yet started. Up to four rooms are
//! destroyed at once; for each, recorded as `deleting` first:
//!
//! 1. every member (and pending invite) is kicked, with a reason;
//! 2. with admin rights, cordon leaves the room, the media Synapse lists for the room
//!    is noted, the room is deleted with `purge` and `block`, and its deletion status
//!    polled until complete; without them, cordon leaves and forgets the room, and the
//!    purge is reported as pending;
//! 3. the room is recorded `destroyed` (or `purge-pending`) and audited.
//!
//! Then the media of every room is deleted: purging a room leaves its media behind.
//! Synapse cannot list what encrypted events point to, so the addresses are cordon's
//! own: noted as sync delivered each message and before each retention redaction (the
//! `media` table), read by the seal, and what Synapse listed. Only media the incident's
//! own people uploaded is deleted (see [`delete_media`]). Finally the rooms are forgotten
//! in cordon's own stores ([`super::forget`]). Every step is safe to repeat.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use matrix_sdk::RoomMemberships;
use matrix_sdk::ruma::{OwnedMxcUri, OwnedRoomId};
use serde_json::json;
use tracing::{info, warn};

use super::chat::{send_once, user_ids};
use super::ctx::declared_playbook;
use super::ctx::{ACTOR, AppError, Ctx};
use crate::domain::incident::timers as timer_plan;
use crate::domain::incident::{Event, Incident, State};
use crate::domain::schedule::Timer;
use crate::matrix::MatrixError;
use crate::matrix::admin::{DeletionStatus, MediaDeletion, MediaUpload};
use crate::matrix::rooms::{self, notice};
use crate::store::{RoomStatus, StandDownStep};

/// How often a room's deletion status is polled.
const POLL: Duration = Duration::from_millis(500);

/// Rooms destroyed at once.
const ROOMS_AT_ONCE: usize = 4;

/// The longest cordon waits for one room's deletion before retrying the step.
const DELETE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Destroys the rooms of `incident` (archived), unless a legal hold is set, records it
/// (`destroyed`), arms the archive's keep-time end and tells the control room.
pub(crate) async fn destroy(ctx: &Arc<Ctx>, incident: &Incident) -> Result<(), AppError> {
    let id = &incident.id;
    if incident.state != State::Archived {
        return Ok(());
    }
    if held(ctx, incident).await? {
        return Ok(());
    }
    ctx.store
        .begin_standdown_step(id, StandDownStep::Destroy, ctx.now())?;
    // A failed check retries the step: leaving the rooms on a network error would give
    // up the purge that the admin rights make possible.
    let admin = ctx.admin.is_admin(ctx.user_id()).await?;
    let reason = format!(
        "{} has stood down: its rooms are closed and their record is sealed for the \
         records officer.",
        incident.display_name
    );
    let mut records = ctx.store.rooms(id)?;
    records.sort_by(|a, b| a.key.cmp(&b.key));
    let mut pending = 0;
    let mut left = Vec::new();
    for mut record in records {
        match record.status {
            RoomStatus::Destroyed => {}
            RoomStatus::PurgePending => pending += 1,
            _ => match record
                .room_id
                .as_deref()
                .and_then(|r| OwnedRoomId::try_from(r).ok())
            {
                Some(room_id) => left.push((record, room_id)),
                None => {
                    // Planned but never created: there is nothing to destroy.
                    record.status = RoomStatus::Destroyed;
                    record.updated_at = ctx.now();
                    ctx.store.upsert_room(&record)?;
                }
            },
        }
    }
    // A few rooms at once: most of a room's time is Synapse's purge, which runs in the
    // background on the server while cordon polls.
    let mut ends = futures_util::stream::iter(left)
        .map(|(record, room_id)| destroy_room(ctx, incident, record, room_id, admin, &reason))
        .buffer_unordered(ROOMS_AT_ONCE);
    let mut first_error = None;
    let mut stopped = false;
    while let Some(end) = ends.next().await {
        match end {
            Ok(RoomEnd::Destroyed) => {}
            Ok(RoomEnd::PurgePending) => pending += 1,
            Ok(RoomEnd::Held) => stopped = true,
            Err(e) => {
                warn!(incident = %id, error = %e, "a room could not be destroyed; the step is retried");
                first_error.get_or_insert(e);
            }
        }
    }
    drop(ends);
    if let Some(e) = first_error {
        return Err(e);
    }
    if stopped {
        return Ok(());
    }
    if admin {
        delete_media(ctx, incident).await?;
    }
    crate::failpoint::hit("standdown.media-deleted").await;
    let purge_pending = pending > 0;
    let (incident, _) =
        ctx.store
            .apply(id, Event::Destroyed { purge_pending }, ACTOR, ctx.now())?;
    crate::failpoint::hit("standdown.destroyed").await;
    finish(ctx, &incident).await
}

/// What follows the destruction, from the store alone, so that a stand-down resumed
/// after `destroyed` was recorded does it too, once: the rooms forgotten in cordon's own
/// stores, the other timers disarmed, the end of the archive's keep time armed, and the
/// control room told.
pub(crate) async fn finish(ctx: &Arc<Ctx>, incident: &Incident) -> Result<(), AppError> {
    let id = &incident.id;
    // Part of destruction: the step is done once the rooms are forgotten.
    super::forget::forget_rooms(ctx, incident).await?;
    ctx.store
        .begin_standdown_step(id, StandDownStep::Done, ctx.now())?;
    // Nothing runs in rooms that are gone; the keep time's end is all that is left.
    for timer in ctx.store.timers_for(id)? {
        if timer.id != timer_plan::standdown_id(id) && timer.id != timer_plan::keep_time_end_id(id)
        {
            ctx.disarm(&timer.id)?;
        }
    }
    // The archive is kept for `archive.keep` after destruction (a hold may have kept the
    // rooms long past the seal).
    let keep = declared_playbook(ctx, id)
        .ok()
        .and_then(|p| chrono::TimeDelta::from_std(p.archive.keep).ok())
        .unwrap_or_default();
    let keep_until = incident.archive.as_ref().map(|archive| {
        archive.keep_until.max(
            ctx.now()
                .checked_add_signed(keep)
                .unwrap_or(archive.keep_until),
        )
    });
    if let Some(due) = keep_until {
        ctx.arm(&timer_plan::keep_time_end(id, due))?;
    }
    let rooms = ctx.store.rooms(id)?;
    // Rooms planned but never created are recorded destroyed too; they are not counted.
    let destroyed = rooms
        .iter()
        .filter(|r| r.status == RoomStatus::Destroyed && r.room_id.is_some())
        .count() as u64;
    let pending = rooms
        .iter()
        .filter(|r| r.status == RoomStatus::PurgePending)
        .count() as u64;
    let media_deleted: u64 = ctx
        .store
        .audit_entries(.., Some(id))?
        .iter()
        .filter(|e| e.action == "media.deleted")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.details).ok())
        .filter_map(|d| d.get("deleted").and_then(serde_json::Value::as_u64))
        .sum();
    tell_destroyed(ctx, incident, destroyed, pending, media_deleted, keep_until).await;
    Ok(())
}

/// How one room's destruction ended.
enum RoomEnd {
    Destroyed,
    PurgePending,
    /// A legal hold was placed while the pipeline ran: the room was left alone.
    Held,
}

/// Destroys one room (recorded `deleting` first): kicks everyone, then deletes and
/// purges it (admin) or leaves and forgets it, records the outcome and audits it.
async fn destroy_room(
    ctx: &Arc<Ctx>,
    incident: &Incident,
    mut record: crate::store::RoomRecord,
    room_id: OwnedRoomId,
    admin: bool,
    reason: &str,
) -> Result<RoomEnd, AppError> {
    let id = &incident.id;
    // A hold placed while the pipeline runs stops it before the rooms not yet started.
    if let Some(current) = ctx.store.incident(id)?
        && held(ctx, &current).await?
    {
        return Ok(RoomEnd::Held);
    }
    // An earlier attempt that got as far as the deletion: the room may be gone, and
    // cordon's own view of it stale, so the deletion is followed, not started again.
    let resumed = if admin && record.status == RoomStatus::Deleting {
        let status = match &record.delete_id {
            Some(delete_id) => ctx.admin.deletion(delete_id).await?,
            None => ctx.admin.deletion_status(&room_id).await?,
        };
        match status {
            DeletionStatus::Complete => true,
            DeletionStatus::Running(_) => {
                ctx.admin
                    .wait_deleted(
                        &room_id,
                        record.delete_id.clone(),
                        reason,
                        POLL,
                        DELETE_LIMIT,
                    )
                    .await?;
                true
            }
            DeletionStatus::Unknown | DeletionStatus::Failed(_) => false,
        }
    } else {
        false
    };
    if record.status != RoomStatus::Deleting {
        // Under the guard's incident lock: a look already under way ends before the
        // kicks, which it would take for someone else's; later looks skip the room.
        let _quiet = crate::app::guard::changing(id).await;
        record.status = RoomStatus::Deleting;
        record.updated_at = ctx.now();
        ctx.store.upsert_room(&record)?;
    }
    let (kicked, purged) = if resumed {
        (0, true)
    } else {
        let kicked = kick_everyone(ctx, &room_id, reason).await?;
        crate::failpoint::hit("standdown.kicked").await;
        if admin {
            // cordon leaves while the room is there to leave: a purged room answers
            // 404 and sends no leave down sync, so its client would count it as joined
            // for good and could not forget it afterwards (see `matrix::forget`).
            leave(ctx, &room_id).await?;
            // Listed before the purge, which forgets which media the room used.
            let listed = ctx.admin.room_media(&room_id).await?;
            remember_media(ctx, incident, &listed)?;
            let delete_id = ctx.admin.delete_room(&room_id, reason).await?;
            // Recorded at once: Synapse lists a deletion by room only once its task has
            // started, so after a restart only its id tells that it is under way.
            if delete_id.is_some() {
                record.delete_id.clone_from(&delete_id);
                record.updated_at = ctx.now();
                ctx.store.upsert_room(&record)?;
            }
            crate::failpoint::hit("standdown.delete-requested").await;
            ctx.admin
                .wait_deleted(&room_id, delete_id, reason, POLL, DELETE_LIMIT)
                .await?;
        } else {
            leave_and_forget(ctx, &room_id).await?;
        }
        (kicked, admin)
    };
    record.status = if purged {
        RoomStatus::Destroyed
    } else {
        RoomStatus::PurgePending
    };
    record.updated_at = ctx.now();
    ctx.store.upsert_room(&record)?;
    ctx.store.audit(
        ACTOR,
        if purged {
            "room.destroyed"
        } else {
            "room.left"
        },
        Some(id),
        json!({
            "room_key": record.key,
            "room": room_id,
            "members_removed": kicked,
            "purged": purged,
            "blocked": purged,
        }),
        ctx.now(),
    )?;
    info!(incident = %id, room = %room_id, key = %record.key, purged, "room destroyed");
    Ok(if purged {
        RoomEnd::Destroyed
    } else {
        RoomEnd::PurgePending
    })
}

/// True (and the control room told, once per hold) when a legal hold blocks destruction.
async fn held(ctx: &Arc<Ctx>, incident: &Incident) -> Result<bool, AppError> {
    let Some(hold) = &incident.hold else {
        return Ok(false);
    };
    let id = &incident.id;
    ctx.store
        .begin_standdown_step(id, StandDownStep::Held, ctx.now())?;
    info!(incident = %id, "legal hold: the rooms are not destroyed until it is released");
    if let Some(control) = rooms::joined(&ctx.client, &incident.control_room) {
        let body = format!(
            "{id}'s archive is sealed and verified, but its rooms are not destroyed: a \
             legal hold is set ({reason}, by {by}). They stay frozen until an operator or a \
             records officer sends `!cordon release {id}`.",
            id = id.as_str(),
            reason = hold.reason,
            by = hold.by,
        );
        let key = format!("{}/destroy-held/{}", id.as_str(), hold.since.timestamp());
        send_once(ctx, &control, &key, Some(id), notice(&body, &[])).await?;
    }
    Ok(true)
}

/// Kicks every member and pending invite but cordon, with `reason`. Returns how many.
async fn kick_everyone(
    ctx: &Arc<Ctx>,
    room_id: &OwnedRoomId,
    reason: &str,
) -> Result<u64, AppError> {
    let Some(room) = ctx.client.get_room(room_id) else {
        return Ok(0);
    };
    if room.state() != matrix_sdk::RoomState::Joined {
        // cordon was removed already (a deletion that ran): nobody is left to kick.
        return Ok(0);
    }
    let members = room
        .members(RoomMemberships::JOIN | RoomMemberships::INVITE)
        .await
        .map_err(MatrixError::from)?;
    let mut kicked = 0;
    for member in members {
        if member.user_id() == ctx.user_id() {
            continue;
        }
        room.kick_user(member.user_id(), Some(reason))
            .await
            .map_err(MatrixError::from)?;
        kicked += 1;
    }
    Ok(kicked)
}

/// cordon leaves the room, if it is still in it.
async fn leave(ctx: &Arc<Ctx>, room_id: &OwnedRoomId) -> Result<(), AppError> {
    if let Some(room) = ctx.client.get_room(room_id)
        && room.state() == matrix_sdk::RoomState::Joined
    {
        room.leave().await.map_err(MatrixError::from)?;
    }
    Ok(())
}

/// Without admin rights: cordon leaves the room and forgets it. The server keeps its
/// events until an admin purges it.
async fn leave_and_forget(ctx: &Arc<Ctx>, room_id: &OwnedRoomId) -> Result<(), AppError> {
    leave(ctx, room_id).await?;
    if let Some(room) = ctx.client.get_room(room_id)
        && room.state() == matrix_sdk::RoomState::Left
    {
        room.forget().await.map_err(MatrixError::from)?;
    }
    Ok(())
}

/// Adds the media Synapse listed for a room to what the export found.
fn remember_media(ctx: &Ctx, incident: &Incident, listed: &[OwnedMxcUri]) -> Result<(), AppError> {
    let Some(mut record) = ctx.store.standdown(&incident.id)? else {
        return Ok(());
    };
    let mut changed = false;
    for mxc in listed {
        if !record.media.iter().any(|m| m == mxc.as_str()) {
            record.media.push(mxc.to_string());
            changed = true;
        }
    }
    if changed {
        record.updated_at = ctx.now();
        ctx.store.put_standdown(&incident.id, &record)?;
    }
    Ok(())
}

/// What deleting the incident's media did.
#[derive(Debug, Default)]
struct MediaCount {
    deleted: u64,
    absent: u64,
    foreign: u64,
    /// Uploaded by someone cordon never let into the incident: kept (see
    /// [`delete_media`]).
    kept: u64,
}

/// Every media address of the incident: what sync and the retention sweeps noted (the
/// `media` table), what the seal read and what Synapse listed for the rooms (the
/// stand-down record). Sorted, without repeats.
fn incident_media(ctx: &Ctx, incident: &Incident) -> Result<Vec<String>, AppError> {
    let mut all: std::collections::BTreeSet<String> = ctx
        .store
        .standdown(&incident.id)?
        .map(|r| r.media)
        .unwrap_or_default()
        .into_iter()
        .collect();
    all.extend(
        ctx.store
            .incident_media(&incident.id)?
            .into_iter()
            .map(|(address, _)| address),
    );
    Ok(all.into_iter().collect())
}

/// The people whose uploads belong to the incident: everyone cordon let into (or kept
/// out of) its rooms, the commander, and cordon.
fn incident_people(
    ctx: &Ctx,
    incident: &Incident,
) -> Result<std::collections::BTreeSet<String>, AppError> {
    let mut people: std::collections::BTreeSet<String> = ctx
        .store
        .roster_for_incident(&incident.id)?
        .into_iter()
        .map(|e| e.user)
        .collect();
    people.insert(incident.commander.clone());
    people.insert(ctx.user_id().to_string());
    Ok(people)
}

/// Deletes every local media address of the incident, and audits it (the control
/// room's notice counts from that entry).
///
/// Only media uploaded by the incident's own people is deleted. An address is whatever a
/// message says, and cordon deletes as a server admin: without the check, a member could
/// name another room's attachment (another incident's evidence under a legal hold, say)
/// and have cordon delete it. A file forwarded into the incident from elsewhere keeps its
/// first uploader and stays with the conversation it came from; those are counted as
/// kept.
async fn delete_media(ctx: &Arc<Ctx>, incident: &Incident) -> Result<(), AppError> {
    let addresses = incident_media(ctx, incident)?;
    let people = incident_people(ctx, incident)?;
    let server = ctx.user_id().server_name();
    let mut count = MediaCount::default();
    for address in &addresses {
        let mxc = OwnedMxcUri::from(address.as_str());
        match mxc.server_name() {
            Ok(s) if s == server => {}
            _ => {
                // Another server's media (the rooms are not federated, so not expected).
                count.foreign += 1;
                continue;
            }
        }
        match ctx.admin.media_upload(&mxc).await? {
            MediaUpload::Absent => {
                count.absent += 1;
                continue;
            }
            MediaUpload::By(Some(uploader)) if people.contains(&uploader) => {}
            MediaUpload::By(_) => {
                warn!(incident = %incident.id, media = %mxc, "media named in the incident but uploaded outside it is kept");
                count.kept += 1;
                continue;
            }
        }
        match ctx.admin.delete_media(&mxc).await? {
            MediaDeletion::Deleted => count.deleted += 1,
            MediaDeletion::Absent => count.absent += 1,
        }
    }
    if !addresses.is_empty() {
        ctx.store.audit(
            ACTOR,
            "media.deleted",
            Some(&incident.id),
            json!({
                "deleted": count.deleted,
                "already_absent": count.absent,
                "other_servers": count.foreign,
                "uploaded_outside_the_incident": count.kept,
            }),
            ctx.now(),
        )?;
    }
    Ok(())
}

async fn tell_destroyed(
    ctx: &Arc<Ctx>,
    incident: &Incident,
    destroyed: u64,
    pending: u64,
    media_deleted: u64,
    keep_until: Option<chrono::DateTime<chrono::Utc>>,
) {
    let Some(control) = rooms::joined(&ctx.client, &incident.control_room) else {
        return;
    };
    let keep = match (&incident.archive, keep_until) {
        (Some(a), Some(until)) => format!(
            " The sealed archive ({}) is kept until {}, then deleted.",
            a.location,
            crate::domain::incident::plan::format_time(until, ctx.config.time_zone)
        ),
        _ => String::new(),
    };
    let body = if pending == 0 {
        format!(
            "{id}'s {destroyed} room(s) are destroyed: every member removed, the rooms \
             deleted, purged and blocked on the server, and {deleted} attachment file(s) \
             deleted.{keep}",
            id = incident.id.as_str(),
            deleted = media_deleted,
        )
    } else {
        format!(
            "{id}'s rooms are closed: every member removed, and cordon left and forgot \
             {pending} room(s). cordon is not a server admin, so the server still holds \
             their events and media until an admin purges them: purge pending (see \
             docs/deploy.md).{keep}",
            id = incident.id.as_str(),
        )
    };
    let key = format!("{}/destroyed", incident.id.as_str());
    let mention = user_ids(&[incident.commander.as_str()]);
    if let Err(e) = send_once(
        ctx,
        &control,
        &key,
        Some(&incident.id),
        notice(&body, &mention),
    )
    .await
    {
        warn!(incident = %incident.id, error = %e, "could not tell the control room the rooms are destroyed");
    }
}

/// The keep-time end's job: deletes the sealed archive (unless a legal hold is set),
/// audits it, and closes the incident.
pub(crate) async fn on_keep_time_end(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let Some(id) = &timer.incident else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    if incident.state != State::Destroyed {
        return Ok(());
    }
    let Some(archive) = incident.archive.clone() else {
        return Ok(());
    };
    if incident.is_held() {
        // `release` arms this timer again.
        info!(incident = %id, "legal hold: the sealed archive is kept past its keep time");
        return Ok(());
    }
    // Armed for the later of `keep_until` and destruction + `archive.keep`; a timer
    // that fires early (a clock set back) waits for its own due time again.
    let due = match &timer.schedule {
        crate::domain::schedule::Schedule::At(at) => (*at).max(archive.keep_until),
        crate::domain::schedule::Schedule::Cron { .. } => archive.keep_until,
    };
    if ctx.now() < due {
        ctx.arm(&timer_plan::keep_time_end(id, due))?;
        return Ok(());
    }
    let path = std::path::Path::new(&archive.location);
    let existed = match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(AppError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    ctx.store.audit(
        ACTOR,
        "archive.deleted",
        Some(id),
        json!({
            "file": archive.location,
            "sha256": archive.sha256,
            "keep_until": archive.keep_until,
            "already_absent": !existed,
        }),
        ctx.now(),
    )?;
    ctx.store.apply(id, Event::Closed, ACTOR, ctx.now())?;
    info!(incident = %id, file = %archive.location, "sealed archive deleted at the end of its keep time; incident closed");
    Ok(())
}
