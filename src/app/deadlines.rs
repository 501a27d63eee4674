//! Time limits: the warnings before expiry, the expiry itself, and `extend`.
//!
//! Every incident expires at declaration + `duration.max`, moved later by `extend` up to
//! `duration.extend_max` in total. Warnings go to the control room (mentioning the
//! commander, with how to extend) and to every incident room. At expiry the incident
//! stands down by itself ([`super::standdown`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use tracing::info;

use super::chat::{CommandError, Done, Incoming, send_once};
use super::ctx::declared_playbook;
use super::ctx::{ACTOR, AppError, Ctx};
use crate::domain::incident::plan::{format_remaining, format_time};
use crate::domain::incident::{Event, Incident, State};
use crate::domain::schedule::Timer;
use crate::domain::schedule::catch_up::DEADLINE_KEY;
use crate::input::playbook::model::format_duration;
use crate::matrix::rooms::notice;
use crate::schedule::FireContext;

/// The expiry timer's job: stands the incident down when its time is up.
pub(crate) async fn on_expiry(
    ctx: &Arc<Ctx>,
    timer: &Timer,
    fire: FireContext,
) -> Result<(), AppError> {
    let Some(id) = &timer.incident else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    match incident.state {
        // Extended meanwhile: the timer was re-armed for the new expiry.
        State::Active if incident.expires_at > fire.due => Ok(()),
        State::Active if incident.expires_at < ctx.started_at => late_expiry(ctx, &incident).await,
        State::Active | State::StandingDown | State::Failed => {
            super::standdown::stand_down(ctx, &incident, ACTOR).await
        }
        State::Provisioning => Err(AppError::Matrix(crate::matrix::MatrixError::Client(
            "the incident expired while still provisioning; standing down once it is done".into(),
        ))),
        _ => Ok(()),
    }
}

/// An expiry that passed while cordon was down. The first time: the warning it could not
/// send, with the grace it gets now (`deadlines.grace_after_downtime`), audited, and a
/// timer at the grace's end. Then, and after a restart meanwhile: the stand-down once
/// the grace is over. A grace of zero stands it down at once, as before.
async fn late_expiry(ctx: &Arc<Ctx>, incident: &Incident) -> Result<(), AppError> {
    let id = &incident.id;
    let grace = ctx.config.grace_after_downtime;
    let marker = format!(
        "{}/late-expiry/{}",
        id.as_str(),
        incident.expires_at.timestamp()
    );
    if grace.is_zero() {
        return super::standdown::stand_down(ctx, incident, ACTOR).await;
    }
    if ctx.store.is_processed(&marker)? {
        // The grace was given: its timer stands the incident down when it ends.
        let now = ctx.now();
        let waiting = ctx
            .store
            .timer(&crate::domain::incident::timers::expiry_grace_id(id))?
            .is_some_and(
                |t| matches!(t.schedule, crate::domain::schedule::Schedule::At(due) if due > now),
            );
        if waiting {
            return Ok(());
        }
        return super::standdown::stand_down(ctx, incident, ACTOR).await;
    }
    let now = ctx.now();
    let until = now + TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    ctx.store.audit(
        ACTOR,
        "incident.expiry-grace",
        Some(id),
        serde_json::json!({
            "expired_at": incident.expires_at, "back_at": ctx.started_at,
            "stands_down_at": until, "grace_secs": grace.as_secs(),
        }),
        now,
    )?;
    ctx.arm(&crate::domain::incident::timers::expiry_grace(id, until))?;
    ctx.store.mark_processed(&marker, now)?;
    let playbook = declared_playbook(ctx, id)?;
    let tz = ctx.config.time_zone;
    let how = how_to_extend(
        incident,
        &playbook,
        &format!(", counted from {}", format_time(incident.expires_at, tz)),
    );
    let at = format_time(until, tz);
    let left = format_remaining(until, now);
    let control = format!(
        "⏳ {name} ({id}) reached its time limit at {expired} while cordon was \
         unavailable. It stands down in {left}, at {at}, unless extended: its rooms then \
         become read-only and are sealed and destroyed. {how}",
        name = incident.display_name,
        id = id.as_str(),
        expired = format_time(incident.expires_at, tz),
    );
    let rooms = format!(
        "⏳ This incident reached its time limit while cordon was unavailable. It stands \
         down in {left}, at {at}, unless the commander extends it. These rooms then \
         become read-only and are destroyed: transcribe any clinical advice into the \
         patient record now."
    );
    announce(
        ctx,
        incident,
        |room| format!("{marker}/{room}"),
        &control,
        &rooms,
    )
    .await?;
    info!(incident = %id, until = %until, "expired while cordon was down: grace given");
    Ok(())
}

/// A warning timer's job: tells the control room and every incident room how long is
/// left. A warning about an expiry that has since moved is not sent.
pub(crate) async fn on_warning(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let Some(id) = &timer.incident else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    let deadline = timer
        .payload
        .get(DEADLINE_KEY)
        .and_then(|d| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(d.clone()).ok());
    if incident.state != State::Active || deadline.is_some_and(|d| d != incident.expires_at) {
        return Ok(());
    }
    let playbook = declared_playbook(ctx, id)?;
    let now = ctx.now();
    let at = format_time(incident.expires_at, ctx.config.time_zone);
    let left = format_remaining(incident.expires_at, now);
    let stamp = incident.expires_at.timestamp();
    let key = |room: &str| format!("{}/{stamp}/{room}", timer.id);

    let how = how_to_extend(&incident, &playbook, "");
    let control = format!(
        "⏳ {name} ({id}) stands down in {left}, at {at}. Its rooms then become read-only \
         and are sealed and destroyed. {how}",
        name = incident.display_name,
        id = id.as_str(),
    );
    let rooms = format!(
        "⏳ This incident stands down in {left}, at {at}. These rooms then become \
         read-only and are destroyed: transcribe any clinical advice into the patient \
         record now."
    );
    // Recorded once, before it is said, for the debrief's timeline.
    if ctx.store.outbox_get(&key("control"))?.is_none() {
        ctx.store.audit(
            ACTOR,
            "incident.warned",
            Some(id),
            serde_json::json!({
                "expires_at": incident.expires_at,
                "left_secs": (incident.expires_at - now).num_seconds().max(0),
            }),
            now,
        )?;
    }
    announce(ctx, &incident, key, &control, &rooms).await?;
    info!(incident = %id, left = %left, "expiry warning sent");
    Ok(())
}

/// How the commander keeps the incident open, for a deadline notice (`counted` says
/// from when, if it matters).
fn how_to_extend(
    incident: &Incident,
    playbook: &crate::input::playbook::Playbook,
    counted: &str,
) -> String {
    let headroom = extension_left(incident, playbook);
    if headroom.is_zero() {
        "It cannot be extended further.".to_owned()
    } else {
        format!(
            "To keep it open: `!cordon extend {} 4h` (up to {} more{counted}).",
            incident.id.as_str(),
            format_duration(headroom)
        )
    }
}

/// Posts a deadline notice once: `control` in the control room, mentioning the
/// commander, and `rooms` in every incident room, each followed by that room's advice
/// still to transcribe; `key` names each send.
async fn announce(
    ctx: &Arc<Ctx>,
    incident: &Incident,
    key: impl Fn(&str) -> String,
    control: &str,
    rooms: &str,
) -> Result<(), AppError> {
    let id = &incident.id;
    if let Some(room) = crate::matrix::rooms::joined(&ctx.client, &incident.control_room) {
        let mention = super::chat::user_ids(&[incident.commander.as_str()]);
        send_once(
            ctx,
            &room,
            &key("control"),
            Some(id),
            notice(control, &mention),
        )
        .await?;
    }
    for (record, room) in super::ctx::incident_rooms(ctx, incident)? {
        let advice = super::advice::outstanding_lines(ctx, incident, Some(&record.key));
        let body = format!("{rooms}{advice}");
        send_once(ctx, &room, &key(&record.key), Some(id), notice(&body, &[])).await?;
    }
    Ok(())
}

/// How much more `extend` may add: `extend_max` less what was already added.
fn extension_left(incident: &Incident, playbook: &crate::input::playbook::Playbook) -> Duration {
    let used = incident.extended_total().to_std().unwrap_or(Duration::ZERO);
    playbook.duration.extend_max.saturating_sub(used)
}

/// `extend [incident] <duration>`: the commander (or an operator; the dispatcher checks)
/// moves the expiry later, up to the playbook's `extend_max` in total. Audited; a request beyond the
/// bound is refused with what is left.
pub(crate) async fn extend(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Incident,
    by: Duration,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    if incident.state != State::Active {
        let text = format!(
            "{} is {}: only an active incident can be extended. Nothing was changed. \
             `!cordon status {}` shows where it stands.",
            id.as_str(),
            incident.state.as_str(),
            id.as_str(),
        );
        return Err(CommandError::refused("not-active", text));
    }
    let playbook = declared_playbook(ctx, id)?;
    let max = playbook.duration.extend_max;
    let left = extension_left(&incident, &playbook);
    if by > left {
        let text = if max.is_zero() {
            format!(
                "{} cannot be extended: its playbook ({}) allows no extension. Nothing was \
                 changed. It stands down at {}; if the work goes on, declare a new incident \
                 before then.",
                id.as_str(),
                playbook.id,
                format_time(incident.expires_at, ctx.config.time_zone)
            )
        } else if left.is_zero() {
            format!(
                "{} cannot be extended further: its playbook allows {} in total, and all of \
                 it has been used. Nothing was changed. It stands down at {}; if the work \
                 goes on, declare a new incident before then.",
                id.as_str(),
                format_duration(max),
                format_time(incident.expires_at, ctx.config.time_zone)
            )
        } else {
            format!(
                "{} can be extended by at most {} more (the playbook allows {} in total; {} \
                 used). Nothing was changed. Try `!cordon extend {} {}`.",
                id.as_str(),
                format_duration(left),
                format_duration(max),
                format_duration(max.saturating_sub(left)),
                id.as_str(),
                format_duration(left).replace(' ', ""),
            )
        };
        return Err(CommandError::refused("beyond-bound", text));
    }
    let new_expiry = incident
        .expires_at
        .checked_add_signed(TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX))
        .unwrap_or(incident.expires_at);
    let (extended, _) = ctx.store.apply(
        id,
        Event::Extended { new_expiry },
        incoming.sender.as_str(),
        ctx.now(),
    )?;
    super::timers::rearm_deadlines(ctx, &extended, &playbook)?;
    info!(incident = %id, by = ?by, "extended");
    let at = format_time(extended.expires_at, ctx.config.time_zone);
    let now = ctx.now();
    for (record, room) in super::ctx::incident_rooms(ctx, &extended)? {
        let body = format!(
            "⏳ Extended by {} by {}: these rooms now close at {at} ({} from now).",
            format_duration(by),
            incoming.sender,
            format_remaining(extended.expires_at, now)
        );
        let key = format!(
            "{}/extended/{}/{}",
            id.as_str(),
            incoming.event_id,
            record.key
        );
        send_once(ctx, &room, &key, Some(id), notice(&body, &[])).await?;
    }
    super::standdown::refresh_topics(ctx, &extended, &playbook).await;
    let left = extension_left(&extended, &playbook);
    let text = format!(
        "Extended {} by {}: it now stands down at {at} ({} from now). Extension left: {}.",
        id.as_str(),
        format_duration(by),
        format_remaining(extended.expires_at, now),
        format_duration(left)
    );
    Ok(Done::Reply(text))
}
