//! The playbook's reminders, and the briefing re-posted before retention removes it.
//!
//! Reminders are notices, with their template filled in at the time they are posted,
//! followed by the room's advice not yet marked transcribed (by link, never quoting
//! it). Reminders missed while cordon was down are collapsed into one. Each post is
//! sent under a stored transaction id keyed by its timer and due time, so a job run
//! again after a crash posts it once.

use std::sync::Arc;

use matrix_sdk::ruma::OwnedEventId;
use tracing::info;

use super::chat::send_once;
use super::ctx::declared_playbook;
use super::ctx::{AppError, Ctx};
use super::provision::commander;
use crate::domain::incident::plan::{self, IncidentFacts};
use crate::domain::incident::timers as timer_plan;
use crate::domain::incident::{Incident, State};
use crate::domain::schedule::Timer;
use crate::matrix::rooms::{self, notice};
use crate::schedule::FireContext;

/// The incident a timer belongs to, when it is still active.
fn active_incident(ctx: &Ctx, timer: &Timer) -> Result<Option<Incident>, AppError> {
    let Some(id) = &timer.incident else {
        return Ok(None);
    };
    Ok(ctx.store.incident(id)?.filter(|i| i.state == State::Active))
}

fn payload_room(timer: &Timer) -> Option<&str> {
    timer.payload.get("room").and_then(|r| r.as_str())
}

/// A reminder timer's job: posts the reminder in its room.
pub(crate) async fn on_reminder(
    ctx: &Arc<Ctx>,
    timer: &Timer,
    fire: FireContext,
) -> Result<(), AppError> {
    let Some(incident) = active_incident(ctx, timer)? else {
        return Ok(());
    };
    let (Some(room_key), Some(index)) = (
        payload_room(timer),
        timer.payload.get("index").and_then(|n| n.as_u64()),
    ) else {
        return Ok(());
    };
    let playbook = declared_playbook(ctx, &incident.id)?;
    let Some(reminder) = playbook.room(room_key).and_then(|r| {
        r.reminders
            .get(usize::try_from(index).unwrap_or(usize::MAX))
    }) else {
        return Ok(());
    };
    let Some(room) = room_of(ctx, &incident, room_key)? else {
        return Ok(());
    };
    let commander = commander(&incident)?;
    let facts = IncidentFacts::of(&incident, &playbook, &commander, ctx.config.time_zone);
    let mut body = reminder.text.render(&facts.vars(ctx.now()));
    if fire.collapsed > 1 {
        body.push_str(&format!(
            "\n({} earlier reminders fell due while cordon was unavailable; this one stands \
             for them.)",
            fire.collapsed - 1
        ));
    }
    body.push_str(&super::advice::outstanding_lines(
        ctx,
        &incident,
        Some(room_key),
    ));
    let key = format!("{}/{}", timer.id, fire.due.timestamp());
    send_once(ctx, &room, &key, Some(&incident.id), notice(&body, &[])).await?;
    info!(incident = %incident.id, room = room_key, "reminder posted");
    Ok(())
}

/// A briefing timer's job: posts the briefing again, pins the new copy in place of the
/// old one (which retention is about to remove), and arms the next re-post.
pub(crate) async fn on_briefing(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let Some(incident) = active_incident(ctx, timer)? else {
        return Ok(());
    };
    let Some(room_key) = payload_room(timer) else {
        return Ok(());
    };
    let generation = timer
        .payload
        .get("generation")
        .and_then(|g| g.as_u64())
        .unwrap_or(0);
    let old: Option<OwnedEventId> = timer
        .payload
        .get("pinned")
        .and_then(|p| p.as_str())
        .and_then(|p| OwnedEventId::try_from(p).ok());
    let playbook = declared_playbook(ctx, &incident.id)?;
    let Some(room) = room_of(ctx, &incident, room_key)? else {
        return Ok(());
    };
    let commander = commander(&incident)?;
    let facts = IncidentFacts::of(&incident, &playbook, &commander, ctx.config.time_zone);
    let Some(p) = plan::plan_rooms(&facts, incident.declared_at)
        .into_iter()
        .find(|p| p.key == room_key)
    else {
        return Ok(());
    };
    let body = format!(
        "{}\n(Posted again: the earlier copy is about to be deleted by retention.)",
        plan::briefing(&facts, &p, ctx.now())
    );
    let next = generation + 1;
    let key = format!("{}/{}/briefing/{next}", incident.id.as_str(), room_key);
    let event = send_once(ctx, &room, &key, Some(&incident.id), notice(&body, &[])).await?;
    super::pins::pin(ctx, &incident.id, room_key, &room, old.as_deref(), &event).await?;
    // From when the re-post was recorded: a job run again after a crash does not push
    // the next one later.
    let posted_at = ctx
        .store
        .outbox_get(&key)?
        .map_or_else(|| ctx.now(), |e| e.created_at);
    ctx.arm(&timer_plan::briefing(
        &incident.id,
        room_key,
        posted_at,
        playbook.retention.messages,
        next,
        Some(event.as_str()),
    ))?;
    info!(incident = %incident.id, room = room_key, generation = next, "briefing re-posted");
    Ok(())
}

/// The joined Matrix room of one of the incident's rooms.
pub(crate) fn room_of(
    ctx: &Ctx,
    incident: &Incident,
    room_key: &str,
) -> Result<Option<matrix_sdk::Room>, AppError> {
    Ok(ctx
        .store
        .room(&incident.id, room_key)?
        .and_then(|r| r.room_id)
        .and_then(|id| rooms::joined(&ctx.client, &id)))
}
