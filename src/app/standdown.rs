//! Standing an incident down, by `standdown` or at expiry, and the legal hold.
//!
//! The stand-down pipeline, driven by one timer per incident (`<id>/standdown`) so that
//! the scheduler retries a failed step with backoff and a restart resumes it:
//!
//! 1. **Freeze** (here): the transition to `standing-down` is recorded (and audited)
//!    first; every room is frozen (read-only power levels, written to the room record
//!    before they are sent, so the guard keeps them); a final notice lists the advice
//!    not yet marked transcribed; the incident's timers stop (all but the retention
//!    sweeps, which run while the rooms exist).
//! 2. **Seal** ([`super::seal`]): every room's history exported, sealed into one age
//!    archive, re-read and verified; then `archived`.
//! 3. **Hold check and destroy** ([`super::destroy`]): members removed, rooms and media
//!    deleted through the admin API; then `destroyed`, and the archive is kept until
//!    the playbook's `archive.keep` ends.
//!
//! Each step is recorded ([`crate::store::StandDownRecord`]) before it starts and is
//! safe to repeat. A legal hold (`hold --reason`) pauses the retention sweeps and blocks
//! destruction and the archive's deletion; only an operator or a records officer can
//! `release` it.

use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::chat::{CommandError, Done, Incoming, reply, send_once, user_ids};
use super::ctx::{ACTOR, AppError, Ctx, declared_playbook, incident_rooms};
use crate::domain::incident::plan::{self, IncidentFacts, PL_CORDON};
use crate::domain::incident::timers as timer_plan;
use crate::domain::incident::{Event, Incident, IncidentId, State};
use crate::domain::schedule::{Timer, TimerKind};
use crate::input::playbook::Playbook;
use crate::matrix::rooms::{self, notice};
use crate::schedule::FireContext;
use crate::store::{RoomStatus, StandDownStep};

/// Why an incident stood down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StandDownCause {
    /// Its time limit was reached.
    Expiry,
    /// Someone ran `standdown`.
    Command,
}

impl StandDownCause {
    /// Why `incident` stood down, from who stood it down (cordon itself at expiry).
    pub(crate) fn of(incident: &Incident) -> Self {
        match incident.stood_down_by.as_deref() {
            Some(by) if by != ACTOR => StandDownCause::Command,
            _ => StandDownCause::Expiry,
        }
    }
}

/// Read-only power levels made from the room's desired ones: nobody but cordon may send
/// anything, redact, invite or change state.
pub fn frozen_power_levels(desired: &Value) -> Value {
    let mut pl = desired.clone();
    if let Some(obj) = pl.as_object_mut() {
        obj.insert("events_default".into(), json!(PL_CORDON));
        obj.insert("state_default".into(), json!(PL_CORDON));
        obj.insert("redact".into(), json!(PL_CORDON));
        obj.insert("invite".into(), json!(PL_CORDON));
        if let Some(events) = obj.get_mut("events").and_then(Value::as_object_mut) {
            for level in events.values_mut() {
                *level = json!(PL_CORDON);
            }
        }
    }
    pl
}

/// Stands `incident` down on behalf of `by` (a user id, or cordon at expiry): records
/// the transition, then arms the pipeline's timer, whose job ([`on_job`]) freezes the
/// rooms, seals and verifies the archive, and destroys the rooms. Safe to repeat: a
/// stand-down already under way is only woken.
pub(crate) async fn stand_down(
    ctx: &Arc<Ctx>,
    incident: &Incident,
    by: &str,
) -> Result<(), AppError> {
    let id = &incident.id;
    match incident.state {
        State::Active | State::Failed => {
            ctx.store
                .apply(id, Event::StandDown { by: by.to_owned() }, by, ctx.now())?;
            info!(incident = %id, by, "standing down");
        }
        State::StandingDown => {}
        _ => return Ok(()),
    }
    ctx.arm(&timer_plan::standdown(id, ctx.now()))
}

/// How many failed attempts of the pipeline's job pass before the commander and the
/// operators are told it is retrying.
const TELL_AFTER_ATTEMPTS: u32 = 3;

/// The stand-down pipeline's job: runs every step not done yet, in order. A step that
/// fails for a reason that may pass (the homeserver unreachable) returns the error, and
/// the scheduler runs the job again with backoff; one that must not be retried blindly
/// (the archive failed verification) stops the pipeline as `failed`, before anything
/// is destroyed, and alerts.
pub(crate) async fn on_job(
    ctx: &Arc<Ctx>,
    timer: &Timer,
    fire: FireContext,
) -> Result<(), AppError> {
    let Some(id) = &timer.incident else {
        return Ok(());
    };
    let Some(_running) = ctx.running_guard(id) else {
        return Err(AppError::Busy(id.clone()));
    };
    let result = run_pipeline(ctx, id).await;
    if let Err(e) = &result {
        warn!(incident = %id, attempt = fire.attempt, error = %e, "stand-down step failed; retrying");
        // A failed delivery tells the control room itself, at once.
        if fire.attempt == TELL_AFTER_ATTEMPTS && !matches!(e, AppError::Fhir(_)) {
            tell_retrying(ctx, id, e).await;
        }
    }
    result
}

async fn run_pipeline(ctx: &Arc<Ctx>, id: &IncidentId) -> Result<(), AppError> {
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    let playbook = declared_playbook(ctx, id)?;
    let incident = match incident.state {
        State::StandingDown => {
            ctx.store
                .begin_standdown_step(id, StandDownStep::Freeze, ctx.now())?;
            freeze(ctx, &incident, StandDownCause::of(&incident)).await?;
            match super::seal::seal(ctx, &incident, &playbook).await {
                Ok(archived) => archived,
                Err(super::seal::SealFailure::Retry(e)) => return Err(e),
                Err(super::seal::SealFailure::Stop(why)) => {
                    super::seal::stop(ctx, &incident, &why).await?;
                    return Ok(());
                }
            }
        }
        // Resumed after the archive was recorded: its notice may not have gone out.
        State::Archived => {
            super::seal::tell_archived(ctx, &incident).await;
            incident
        }
        // Resumed after the destruction was recorded: what follows it may not have run.
        State::Destroyed => return super::destroy::finish(ctx, &incident).await,
        _ => return Ok(()),
    };
    // The advice delivered to the patient record (when a FHIR server is configured)
    // before anything is destroyed: a failure keeps the rooms and is retried.
    super::fhir::deliver(ctx, &incident).await?;
    super::destroy::destroy(ctx, &incident).await
}

/// Tells the control room that the stand-down keeps failing and is being retried.
async fn tell_retrying(ctx: &Arc<Ctx>, id: &IncidentId, error: &AppError) {
    let Ok(Some(incident)) = ctx.store.incident(id) else {
        return;
    };
    let Some(control) = rooms::joined(&ctx.client, &incident.control_room) else {
        return;
    };
    let body = format!(
        "The stand-down of {id} is stuck and cordon keeps retrying: {error}. Nothing has \
         been destroyed that is not sealed. If it does not clear, an operator should check \
         the homeserver and cordon's log.",
        id = id.as_str()
    );
    let key = format!("{}/standdown/retrying", id.as_str());
    let mention = user_ids(&[incident.commander.as_str()]);
    if let Err(e) = send_once(ctx, &control, &key, Some(id), notice(&body, &mention)).await {
        warn!(incident = %id, error = %e, "could not tell the control room the stand-down is retrying");
    }
}

/// The first step: every room frozen (read-only power levels, written to the room
/// record before they are sent, so the guard keeps them), the final notices (with the
/// advice not yet marked transcribed), and the incident's timers stopped (all but the
/// retention sweeps, which run while the rooms exist, and the pipeline's own).
async fn freeze(
    ctx: &Arc<Ctx>,
    incident: &Incident,
    cause: StandDownCause,
) -> Result<(), AppError> {
    let id = &incident.id;
    let by = incident.stood_down_by.as_deref().unwrap_or(ACTOR);
    let rooms = incident_rooms(ctx, incident)?;
    let mut frozen = 0;
    for (mut record, room) in rooms.iter().cloned() {
        let Some(desired_pl) = record
            .desired
            .pointer("/state/m.room.power_levels")
            .cloned()
        else {
            continue;
        };
        let _quiet = crate::app::guard::changing(&incident.id).await;
        if record.status == RoomStatus::Created {
            // The desired state first, so the guard keeps the rooms frozen from now on.
            let pl = frozen_power_levels(&desired_pl);
            let now = ctx.now();
            if let Some(written) = ctx.store.update_room(&record.incident, &record.key, |r| {
                if let Some(state) = r.desired.get_mut("state").and_then(Value::as_object_mut) {
                    state.insert("m.room.power_levels".into(), pl);
                }
                r.status = RoomStatus::Frozen;
                r.updated_at = now;
            })? {
                record = written;
            }
        }
        if record.status != RoomStatus::Frozen {
            continue;
        }
        crate::failpoint::hit("standdown.before_freeze").await;
        let pl = record
            .desired
            .pointer("/state/m.room.power_levels")
            .cloned()
            .unwrap_or(desired_pl);
        room.send_state_event_raw("m.room.power_levels", "", pl)
            .await
            .map_err(crate::matrix::MatrixError::from)?;
        frozen += 1;
    }
    crate::failpoint::hit("standdown.frozen").await;
    let why = match cause {
        StandDownCause::Expiry => "its time limit was reached".to_owned(),
        StandDownCause::Command => format!("stood down by {by}"),
    };
    for (record, room) in &rooms {
        let advice = super::advice::outstanding_lines(ctx, incident, Some(&record.key));
        let body = format!(
            "This incident has stood down: {why}. These rooms are now read-only. Any \
             clinical advice here must be in the patient record.{advice}"
        );
        let key = format!("{}/{}/final", id.as_str(), record.key);
        send_once(ctx, room, &key, Some(id), notice(&body, &[])).await?;
    }
    if let Some(control) = rooms::joined(&ctx.client, &incident.control_room) {
        let advice = super::advice::outstanding_lines(ctx, incident, None);
        let body = format!(
            "{name} ({id}) has stood down: {why}. Its {frozen} room(s) are read-only \
             now.{advice}",
            name = incident.display_name,
            id = id.as_str(),
        );
        let key = format!("{}/stood-down", id.as_str());
        let mention = user_ids(&[incident.commander.as_str()]);
        send_once(ctx, &control, &key, Some(id), notice(&body, &mention)).await?;
    }
    // Audited once, however often an interrupted stand-down is resumed.
    let audited = ctx
        .store
        .audit_entries(.., Some(id))?
        .iter()
        .any(|e| e.action == "incident.frozen");
    if !audited {
        ctx.store.audit(
            by,
            "incident.frozen",
            Some(id),
            json!({ "rooms": frozen, "cause": match cause {
            StandDownCause::Expiry => "expiry",
            StandDownCause::Command => "command",
        } }),
            ctx.now(),
        )?;
    }
    // Last, once everything above is done: everything but the sweeps stops (no more
    // warnings, reminders, briefings or advice reminders in read-only rooms). Until
    // then the expiry timer stays armed, so a stand-down that failed part-way is
    // retried by the scheduler, and the others see the incident is no longer active.
    let pipeline = timer_plan::standdown_id(id);
    for timer in ctx.store.timers_for(id)? {
        if timer.kind != TimerKind::Sweep && timer.id != pipeline {
            ctx.disarm(&timer.id)?;
        }
    }
    Ok(())
}

/// `standdown [incident]`: the commander (or an operator) stands the incident down now.
/// Answered by the stand-down notice in the control room.
pub(crate) async fn command(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Incident,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    if !matches!(
        incident.state,
        State::Active | State::Failed | State::StandingDown
    ) {
        let text = format!(
            "{} is {}: there is nothing to stand down.",
            id.as_str(),
            incident.state.as_str()
        );
        return Err(CommandError::refused("not-active", text));
    }
    if incident.state == State::StandingDown {
        let step = ctx
            .store
            .standdown(id)?
            .map_or("freeze", |r| r.step.as_str());
        let text = format!(
            "{} is already standing down (now at: {step}). Its progress is posted here.",
            id.as_str()
        );
        reply(ctx, incoming, Some(id), &text).await;
    }
    stand_down(ctx, &incident, incoming.sender.as_str()).await?;
    Ok(Done::Answered)
}

/// `retry [incident]`: the commander or an operator runs the step that failed again
/// (provisioning, or the stand-down's sealing), once its cause is fixed.
pub(crate) async fn retry(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Incident,
    skip_fhir: bool,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    // The stand-down waiting for the advice's delivery: tried again now, or skipped.
    if incident.state == State::Archived && super::fhir::is_waiting(ctx, &incident) {
        let text = if skip_fhir {
            super::fhir::skip(ctx, &incident, incoming.sender.as_str())?;
            format!(
                "Skipping the delivery of {}'s advice to the patient record, as {} asked: the \
                 stand-down goes on, and its rooms are destroyed unless a legal hold keeps \
                 them. The bundle is in the sealed archive (`cordon archive fhir`) for the \
                 records officer to load.",
                id.as_str(),
                incoming.sender
            )
        } else {
            format!(
                "Trying the delivery of {}'s advice to the patient record again now.",
                id.as_str()
            )
        };
        reply(ctx, incoming, Some(id), &text).await;
        ctx.disarm(&timer_plan::standdown_id(id))?;
        ctx.arm(&timer_plan::standdown(id, ctx.now()))?;
        return Ok(Done::Answered);
    }
    if skip_fhir {
        let text = format!(
            "{} is not waiting for its advice to be delivered to the patient record: there \
             is nothing to skip. Nothing was changed.",
            id.as_str()
        );
        return Err(CommandError::refused("no-fhir-delivery", text));
    }
    let Some(failure) = incident
        .failure
        .as_ref()
        .filter(|_| incident.state == State::Failed)
    else {
        let text = format!(
            "{} is {}, not failed: there is nothing to retry. Nothing was changed.",
            id.as_str(),
            incident.state.as_str()
        );
        return Err(CommandError::refused("not-failed", text));
    };
    let text = format!(
        "Retrying {} at the step that failed ({}: {}).",
        id.as_str(),
        failure.step.as_str(),
        failure.reason
    );
    let (retried, _) = ctx
        .store
        .apply(id, Event::Retry, incoming.sender.as_str(), ctx.now())?;
    info!(incident = %id, step = %retried.state, "retrying");
    // Answered before the step runs again, so that its progress follows the answer.
    reply(ctx, incoming, Some(id), &text).await;
    match retried.state {
        State::StandingDown => ctx.arm(&timer_plan::standdown(id, ctx.now()))?,
        State::Provisioning => ctx.arm(&timer_plan::provision(id, ctx.now()))?,
        _ => {}
    }
    Ok(Done::Answered)
}

/// `hold [incident] --reason …`: the commander, an operator or a records officer (the
/// dispatcher checks) places a legal hold. Retention sweeps pause until it is released.
pub(crate) async fn hold(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Incident,
    reason: &str,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    let sender = &incoming.sender;
    if incident.exercise {
        return Err(CommandError::refused_about(
            id,
            "exercise",
            format!(
                "{} is an exercise: a legal hold does not apply to a drill, which is \
                 destroyed as soon as its archive is sealed and verified. Nothing was \
                 changed. If something real happened during the exercise, declare it as an \
                 incident.",
                id.as_str()
            ),
        ));
    }
    let was_held = incident.is_held();
    ctx.store.apply(
        id,
        Event::HoldSet {
            reason: reason.to_owned(),
            by: sender.to_string(),
        },
        sender.as_str(),
        ctx.now(),
    )?;
    info!(incident = %id, "legal hold placed");
    let kept = if incident.state == State::Destroyed {
        "its sealed archive is kept past its keep time"
    } else {
        "retention no longer deletes its messages, and it will not be destroyed"
    };
    let text = format!(
        "Legal hold {} on {}: {kept}, until an operator or a records officer sends \
         `!cordon release {}`.",
        if was_held { "re-worded" } else { "placed" },
        id.as_str(),
        id.as_str()
    );
    Ok(Done::Reply(text))
}

/// `release [incident]`: an operator or a records officer (the dispatcher checks)
/// releases the legal hold; the
/// retention sweeps resume at once.
pub(crate) async fn release(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Incident,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    let sender = &incoming.sender;
    if !incident.is_held() {
        let text = format!("{} has no legal hold. Nothing was changed.", id.as_str());
        return Err(CommandError::refused("not-held", text));
    }
    let (released, _) = ctx.store.apply(
        id,
        Event::HoldReleased {
            by: sender.to_string(),
        },
        sender.as_str(),
        ctx.now(),
    )?;
    // The sweeps paused by the hold run now; so does a stand-down that waited for the
    // release to destroy the rooms, and the deletion of an archive kept past its time.
    if matches!(released.state, State::Active | State::StandingDown) {
        for record in ctx.store.rooms(id)? {
            ctx.arm(&timer_plan::sweep(id, &record.key, ctx.now()))?;
        }
    }
    let next = match released.state {
        State::StandingDown | State::Archived => {
            ctx.arm(&timer_plan::standdown(id, ctx.now()))?;
            " The stand-down goes on now: the rooms are destroyed once the archive is sealed \
             and verified."
        }
        State::Destroyed => {
            if let Some(archive) = &released.archive {
                // Its own due time (destruction + `archive.keep`) when still ahead; now,
                // if it passed under the hold.
                let armed = ctx.store.timer(&timer_plan::keep_time_end_id(id))?;
                let due = match armed.map(|t| t.schedule) {
                    Some(crate::domain::schedule::Schedule::At(at)) => at,
                    _ => archive.keep_until,
                };
                // Fresh: a spent timer re-armed with the same due time would not run
                // again (the keep time can have passed under the hold by a clock that
                // was later set back).
                ctx.disarm(&timer_plan::keep_time_end_id(id))?;
                ctx.arm(&timer_plan::keep_time_end(id, due.max(ctx.now())))?;
            }
            " The sealed archive is deleted at the end of its keep time."
        }
        _ => "",
    };
    info!(incident = %id, "legal hold released");
    let text = format!(
        "Legal hold on {} released: retention sweeps resume now.{next}",
        id.as_str()
    );
    Ok(Done::Reply(text))
}

/// Sets each room's topic again from the incident as it is now (after `extend`, whose
/// new closing time the banner names). Best effort: a topic is not a safeguard.
pub(crate) async fn refresh_topics(ctx: &Arc<Ctx>, incident: &Incident, playbook: &Playbook) {
    let Ok(commander) = matrix_sdk::ruma::OwnedUserId::try_from(incident.commander.as_str()) else {
        return;
    };
    let facts = IncidentFacts::of(incident, playbook, &commander, ctx.config.time_zone);
    let plans = plan::plan_rooms(&facts, ctx.now());
    let Ok(rooms) = incident_rooms(ctx, incident) else {
        return;
    };
    for (record, room) in rooms {
        let Some(p) = plans.iter().find(|p| p.key == record.key) else {
            continue;
        };
        if record.desired.get("topic").and_then(Value::as_str) == Some(p.topic.as_str()) {
            continue;
        }
        // The new topic is cordon's from here on: the guard compares the room with it.
        let _quiet = crate::app::guard::changing(&incident.id).await;
        let now = ctx.now();
        let written = ctx.store.update_room(&record.incident, &record.key, |r| {
            if let Some(obj) = r.desired.as_object_mut() {
                obj.insert("topic".into(), json!(p.topic));
            }
            r.updated_at = now;
        });
        if let Err(e) = written {
            warn!(error = %e, "store: recording a room's new topic");
            continue;
        }
        if let Err(e) = room.set_room_topic(&p.topic).await {
            warn!(room = %room.room_id(), error = %e, "could not update the room's topic");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frozen_power_levels_let_nobody_but_cordon_act() {
        let desired = json!({
            "users": { "@cordon:x.org": 100, "@mod:x.org": 50 },
            "users_default": 0,
            "events_default": 0,
            "state_default": 100,
            "redact": 50,
            "invite": 100,
            "events": { "m.reaction": 0, "m.room.encrypted": 0 },
        });
        let f = frozen_power_levels(&desired);
        assert_eq!(f["events_default"], 100);
        assert_eq!(f["redact"], 100);
        assert_eq!(f["events"]["m.reaction"], 100);
        assert_eq!(f["events"]["m.room.encrypted"], 100);
        // Members keep their levels, which are now below everything.
        assert_eq!(f["users"]["@mod:x.org"], 50);
        assert_eq!(f["users_default"], 0);
    }
}
