//! Arming an incident's timers (planned in [`crate::domain::incident::timers`]) in the store
//! the scheduler runs from.
//!
//! - At `declare` (and `retry`), the provisioning pipeline's; at every start, that of
//!   each incident still provisioning, due at once ([`ensure_all`]).
//! - When provisioning completes, and again at every start for each open incident
//!   ([`ensure`]): arming is idempotent, so a crash between `active` and the arming
//!   loses nothing, and a restart neither fires a timer twice nor resets a backoff.
//! - Self-re-arming timers (a room's sweep, its briefing re-post) are armed only when
//!   absent: their job moves them on, and re-arming the first plan would move them back.
//! - After `extend` ([`rearm_deadlines`]) the expiry moves, and the warnings are planned
//!   afresh from the new expiry.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::ctx::{AppError, Ctx};
use crate::domain::incident::timers as plan;
use crate::domain::incident::{Incident, State};
use crate::domain::schedule::Timer;
use crate::input::playbook::Playbook;

impl Ctx {
    /// Arms `timer` ([`crate::store::Store::arm_timer`]: idempotent) and wakes the
    /// scheduler.
    pub(crate) fn arm(&self, timer: &Timer) -> Result<(), AppError> {
        self.store.arm_timer(timer, self.now())?;
        self.wake_scheduler();
        Ok(())
    }

    /// Arms `timer` unless a timer with its id exists.
    pub(crate) fn arm_if_absent(&self, timer: &Timer) -> Result<(), AppError> {
        if self.store.timer(&timer.id)?.is_none() {
            self.arm(timer)?;
        }
        Ok(())
    }

    /// Removes timer `id`, if armed.
    pub(crate) fn disarm(&self, id: &str) -> Result<(), AppError> {
        self.store.remove_timer(id)?;
        self.wake_scheduler();
        Ok(())
    }

    /// Asks the scheduler to look at its timers now.
    pub(crate) fn wake_scheduler(&self) {
        if let Some(handle) = self.scheduler.get() {
            handle.wake();
        }
    }
}

/// Arms every timer an incident in its state runs on. Active: expiry, warnings still
/// ahead, reminders, each room's sweep and briefing re-post. Standing down (frozen
/// rooms, until they are destroyed): the sweeps alone, so retention still holds.
pub(crate) fn ensure(ctx: &Ctx, incident: &Incident, playbook: &Playbook) -> Result<(), AppError> {
    match incident.state {
        State::Active => {
            ctx.arm(&plan::expiry(incident))?;
            for w in plan::warnings(incident, playbook, ctx.now()) {
                ctx.arm(&w)?;
            }
            for r in plan::reminders(incident, playbook, ctx.config.time_zone.name()) {
                ctx.arm(&r)?;
            }
            for room in &playbook.rooms {
                ctx.arm_if_absent(&plan::first_sweep(incident, playbook, &room.key))?;
                let pinned = briefing_event(ctx, incident, &room.key);
                // The briefing went out after the declaration: re-posting as if it had
                // gone out at the declaration is early, never late.
                ctx.arm_if_absent(&plan::briefing(
                    &incident.id,
                    &room.key,
                    incident.declared_at,
                    playbook.retention.messages,
                    0,
                    pinned.as_deref(),
                ))?;
            }
        }
        State::StandingDown | State::Archived => {
            for room in &playbook.rooms {
                ctx.arm_if_absent(&plan::first_sweep(incident, playbook, &room.key))?;
            }
            // The pipeline resumes where it stopped; a held one waits for `release`.
            if incident.state == State::StandingDown || !incident.is_held() {
                ctx.arm(&plan::standdown(&incident.id, ctx.now()))?;
            }
        }
        State::Destroyed => {
            if let Some(archive) = &incident.archive {
                ctx.arm_if_absent(&plan::keep_time_end(&incident.id, archive.keep_until))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The event id of the briefing posted in `room_key` at declaration, from the outbox.
fn briefing_event(ctx: &Ctx, incident: &Incident, room_key: &str) -> Option<String> {
    let key = format!("{}/{}/briefing", incident.id.as_str(), room_key);
    ctx.store
        .outbox_get(&key)
        .ok()
        .flatten()
        .and_then(|e| e.outcome)
        .and_then(|o| {
            o.get("event_id")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
        })
}

/// After an extension: the expiry at the new time, and the warnings planned again from
/// it (those whose mark has already passed are dropped: the commander was just told).
pub(crate) fn rearm_deadlines(
    ctx: &Ctx,
    incident: &Incident,
    playbook: &Playbook,
) -> Result<(), AppError> {
    ctx.arm(&plan::expiry(incident))?;
    let prefix = plan::warning_prefix(&incident.id);
    for timer in ctx.store.timers_for(&incident.id)? {
        if timer.id.starts_with(&prefix) {
            ctx.disarm(&timer.id)?;
        }
    }
    for w in plan::warnings(incident, playbook, ctx.now()) {
        ctx.arm(&w)?;
    }
    Ok(())
}

/// At start: the timers of every open incident, so those armed before a crash (or
/// never armed, when cordon stopped between `active` and arming) all run.
pub(crate) fn ensure_all(ctx: &Arc<Ctx>) {
    let incidents = match ctx
        .store
        .incidents(&crate::store::IncidentFilter::in_states(&[
            State::Provisioning,
            State::Active,
            State::StandingDown,
            State::Archived,
            State::Destroyed,
        ])) {
        Ok(list) => list,
        Err(e) => {
            error!(error = %e, "store: listing incidents to arm their timers");
            return;
        }
    };
    for incident in incidents {
        if incident.state == State::Provisioning {
            // Resumed at once, where its records say it stopped (the pipeline loads the
            // declared playbook itself, and gives up on one that no longer loads).
            info!(incident = %incident.id, "resuming provisioning");
            if let Err(e) = ctx.arm(&plan::provision(&incident.id, ctx.now())) {
                warn!(incident = %incident.id, error = %e, "could not arm provisioning");
            }
            continue;
        }
        let armed = super::ctx::declared_playbook(ctx, &incident.id)
            .and_then(|playbook| ensure(ctx, &incident, &playbook));
        if let Err(e) = armed {
            warn!(incident = %incident.id, error = %e, "could not arm the incident's timers");
        }
    }
}
