//! The retention sweep job: redacts a room's messages older than the playbook's window
//! ([`crate::retention`]), then arms the room's next sweep for when its oldest remaining
//! message reaches the window. A legal hold pauses it: the sweep is looked at again a
//! window later, and `release` re-arms it at once.

use std::sync::Arc;

use chrono::TimeDelta;
use tracing::info;

use super::ctx::declared_playbook;
use super::ctx::{AppError, Ctx};
use super::reminders::room_of;
use crate::domain::incident::State;
use crate::domain::incident::timers as timer_plan;
use crate::domain::schedule::Timer;
use crate::retention::{self, MIN_RESWEEP, SealTarget, SweepParams};

/// A sweep timer's job.
pub(crate) async fn on_sweep(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let (Some(id), Some(room_key)) = (
        &timer.incident,
        timer.payload.get("room").and_then(|r| r.as_str()),
    ) else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    // The rooms exist from `active` until they are destroyed.
    if !matches!(
        incident.state,
        State::Active | State::StandingDown | State::Archived
    ) {
        return Ok(());
    }
    let playbook = declared_playbook(ctx, id)?;
    let window = playbook.retention.messages;
    let now = ctx.now();
    let later = |now: chrono::DateTime<chrono::Utc>| {
        now + TimeDelta::from_std(window.max(MIN_RESWEEP)).unwrap_or(TimeDelta::MAX)
    };
    if incident.is_held() {
        info!(incident = %id, room = room_key, "retention sweep paused by a legal hold");
        ctx.arm(&timer_plan::sweep(id, room_key, later(now)))?;
        return Ok(());
    }
    let Some(room) = room_of(ctx, &incident, room_key)? else {
        return Ok(());
    };
    let seal = playbook.retention.seal_before_redact.then(|| SealTarget {
        dir: &ctx.config.archive_dir,
        recipients: &playbook.archive.recipients,
    });
    let params = SweepParams {
        incident: id,
        room_key,
        cutoff: now - TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX),
        window,
        reason: retention::reason_for(window),
        seal,
    };
    let report = retention::sweep_room(&room, &ctx.store, &params).await?;
    if report.held {
        info!(incident = %id, room = room_key, "retention sweep paused by a legal hold");
        ctx.arm(&timer_plan::sweep(id, room_key, later(ctx.now())))?;
        return Ok(());
    }
    if report.redacted > 0 || report.sealed > 0 {
        info!(
            incident = %id,
            room = room_key,
            redacted = report.redacted,
            sealed = report.sealed,
            rate_limited = report.rate_limited,
            "retention sweep"
        );
    }
    ctx.arm(&timer_plan::sweep(id, room_key, report.next_due))?;
    Ok(())
}
