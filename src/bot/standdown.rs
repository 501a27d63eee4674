//! Standing an incident down, by `standdown` or at expiry, and the legal hold.
//!
//! The first stage of the stand-down pipeline: the transition to `standing-down` is
//! recorded (and audited) first, then every room is frozen (read-only power levels,
//! written to the room record before they are sent, so the guard keeps them), a final
//! notice lists the advice not yet marked transcribed, and the incident's timers stop
//! (all but the retention sweeps, which keep running while the rooms exist). Each step
//! is safe to repeat, so a stand-down interrupted by a crash is finished at the next
//! start or the next firing of the expiry timer. Sealing the archive and destroying the
//! rooms come next (issue 6).
//!
//! A legal hold (`hold --reason`) pauses the retention sweeps and will block
//! destruction; only an operator or a records officer can `release` it.

use std::sync::Arc;

use matrix_sdk::Room;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::commands::{Incoming, refuse, reply, send_once, user_ids};
use super::deadlines::StandDownCause;
use super::{Bot, BotError};
use crate::incident::plan::{self, IncidentFacts, PL_CORDON};
use crate::incident::timers as timer_plan;
use crate::incident::{Event, Incident, State};
use crate::matrix::rooms::{self, notice};
use crate::playbook::Playbook;
use crate::store::{RoomRecord, RoomStatus, TimerKind};

/// The incident's rooms that exist and that cordon has joined, with their records, in
/// playbook order.
pub(crate) fn incident_rooms(
    bot: &Bot,
    incident: &Incident,
) -> Result<Vec<(RoomRecord, Room)>, BotError> {
    let mut records = bot.store.rooms(&incident.id)?;
    records.sort_by_key(|r| {
        r.desired
            .get("position")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    });
    Ok(records
        .into_iter()
        .filter_map(|record| {
            let room = rooms::joined(&bot.client, record.room_id.as_deref()?)?;
            Some((record, room))
        })
        .collect())
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
/// the transition, stops the timers, freezes every room and posts the final notices.
/// Resumes a stand-down already under way.
pub(crate) async fn stand_down(
    bot: &Arc<Bot>,
    incident: &Incident,
    by: &str,
    cause: StandDownCause,
) -> Result<(), BotError> {
    let id = &incident.id;
    let incident = match incident.state {
        State::Active | State::Failed => {
            let (incident, _) =
                bot.store
                    .apply(id, Event::StandDown { by: by.to_owned() }, by, bot.now())?;
            info!(incident = %id, by, "standing down");
            incident
        }
        State::StandingDown => incident.clone(),
        _ => return Ok(()),
    };
    let rooms = incident_rooms(bot, &incident)?;
    let mut frozen = 0;
    for (mut record, room) in rooms.iter().cloned() {
        let Some(desired_pl) = record
            .desired
            .pointer("/state/m.room.power_levels")
            .cloned()
        else {
            continue;
        };
        if record.status == RoomStatus::Created {
            // The desired state first, so the guard keeps the rooms frozen from now on.
            let pl = frozen_power_levels(&desired_pl);
            if let Some(state) = record
                .desired
                .get_mut("state")
                .and_then(Value::as_object_mut)
            {
                state.insert("m.room.power_levels".into(), pl);
            }
            record.status = RoomStatus::Frozen;
            record.updated_at = bot.now();
            bot.store.upsert_room(&record)?;
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
    let why = match cause {
        StandDownCause::Expiry => "its time limit was reached".to_owned(),
        StandDownCause::Command => format!("stood down by {by}"),
    };
    for (record, room) in &rooms {
        let advice = super::advice::outstanding_lines(bot, &incident, Some(&record.key));
        let body = format!(
            "This incident has stood down: {why}. These rooms are now read-only. Any \
             clinical advice here must be in the patient record.{advice}"
        );
        let key = format!("{}/{}/final", id.as_str(), record.key);
        send_once(bot, room, &key, Some(id), notice(&body, &[])).await?;
    }
    if let Some(control) = rooms::joined(&bot.client, &incident.control_room) {
        let advice = super::advice::outstanding_lines(bot, &incident, None);
        let body = format!(
            "{name} ({id}) has stood down: {why}. Its {frozen} room(s) are read-only \
             now.{advice}",
            name = incident.display_name,
            id = id.as_str(),
        );
        let key = format!("{}/stood-down", id.as_str());
        let mention = user_ids(&[incident.commander.as_str()]);
        send_once(bot, &control, &key, Some(id), notice(&body, &mention)).await?;
    }
    // Audited once, however often an interrupted stand-down is resumed.
    let audited = bot
        .store
        .audit_entries(.., Some(id))?
        .iter()
        .any(|e| e.action == "incident.frozen");
    if !audited {
        bot.store.audit(
            by,
            "incident.frozen",
            Some(id),
            json!({ "rooms": frozen, "cause": match cause {
            StandDownCause::Expiry => "expiry",
            StandDownCause::Command => "command",
        } }),
            bot.now(),
        )?;
    }
    // Last, once everything above is done: everything but the sweeps stops (no more
    // warnings, reminders, briefings or advice reminders in read-only rooms). Until
    // then the expiry timer stays armed, so a stand-down that failed part-way is
    // retried by the scheduler, and the others see the incident is no longer active.
    for timer in bot.store.timers_for(id)? {
        if timer.kind != TimerKind::Sweep {
            bot.disarm(&timer.id)?;
        }
    }
    Ok(())
}

/// `standdown [incident]`: the commander (or an operator) stands the incident down now.
pub(crate) async fn command(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    incident: Incident,
) -> Result<(), BotError> {
    let id = &incident.id;
    if !(incident.commander == incoming.sender.as_str() || bot.is_operator(&incoming.sender)) {
        let text = format!(
            "Only the commander of {} ({}) or an operator can stand it down. Nothing was \
             changed.",
            id.as_str(),
            incident.commander
        );
        refuse(bot, incoming, Some(id), "not-allowed", &text).await;
        return Ok(());
    }
    if !matches!(
        incident.state,
        State::Active | State::Failed | State::StandingDown
    ) {
        let text = format!(
            "{} is {}: there is nothing to stand down.",
            id.as_str(),
            incident.state.as_str()
        );
        refuse(bot, incoming, Some(id), "not-active", &text).await;
        return Ok(());
    }
    stand_down(
        bot,
        &incident,
        incoming.sender.as_str(),
        StandDownCause::Command,
    )
    .await
}

/// `hold [incident] --reason …`: the commander, an operator or a records officer places
/// a legal hold. Retention sweeps pause until it is released.
pub(crate) async fn hold(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    incident: Incident,
    reason: &str,
) -> Result<(), BotError> {
    let id = &incident.id;
    let sender = &incoming.sender;
    let allowed = incident.commander == sender.as_str()
        || bot.is_operator(sender)
        || bot.config.records_officers.contains(sender);
    if !allowed {
        let text = format!(
            "Only the commander of {} ({}), an operator or a records officer can place a \
             legal hold. Nothing was changed.",
            id.as_str(),
            incident.commander
        );
        refuse(bot, incoming, Some(id), "not-allowed", &text).await;
        return Ok(());
    }
    let was_held = incident.is_held();
    bot.store.apply(
        id,
        Event::HoldSet {
            reason: reason.to_owned(),
            by: sender.to_string(),
        },
        sender.as_str(),
        bot.now(),
    )?;
    info!(incident = %id, "legal hold placed");
    let text = format!(
        "Legal hold {} on {}: retention no longer deletes its messages, and it will not be \
         destroyed, until an operator or a records officer sends `!cordon release {}`.",
        if was_held { "re-worded" } else { "placed" },
        id.as_str(),
        id.as_str()
    );
    reply(bot, incoming, Some(id), &text).await;
    Ok(())
}

/// `release [incident]`: an operator or a records officer releases the legal hold; the
/// retention sweeps resume at once.
pub(crate) async fn release(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    incident: Incident,
) -> Result<(), BotError> {
    let id = &incident.id;
    let sender = &incoming.sender;
    if !(bot.is_operator(sender) || bot.config.records_officers.contains(sender)) {
        let text = format!(
            "Only an operator or a records officer can release the legal hold on {}. \
             Nothing was changed.",
            id.as_str()
        );
        refuse(bot, incoming, Some(id), "not-allowed", &text).await;
        return Ok(());
    }
    if !incident.is_held() {
        let text = format!("{} has no legal hold. Nothing was changed.", id.as_str());
        refuse(bot, incoming, Some(id), "not-held", &text).await;
        return Ok(());
    }
    let (released, _) = bot.store.apply(
        id,
        Event::HoldReleased {
            by: sender.to_string(),
        },
        sender.as_str(),
        bot.now(),
    )?;
    // The sweeps paused by the hold run now.
    if matches!(released.state, State::Active | State::StandingDown) {
        for record in bot.store.rooms(id)? {
            bot.arm(&timer_plan::sweep(id, &record.key, bot.now()))?;
        }
    }
    info!(incident = %id, "legal hold released");
    let text = format!(
        "Legal hold on {} released: retention sweeps resume now.",
        id.as_str()
    );
    reply(bot, incoming, Some(id), &text).await;
    Ok(())
}

/// Sets each room's topic again from the incident as it is now (after `extend`, whose
/// new closing time the banner names). Best effort: a topic is not a safeguard.
pub(crate) async fn refresh_topics(bot: &Arc<Bot>, incident: &Incident, playbook: &Playbook) {
    let Ok(commander) = matrix_sdk::ruma::OwnedUserId::try_from(incident.commander.as_str()) else {
        return;
    };
    let facts = IncidentFacts::of(incident, playbook, &commander, bot.config.time_zone);
    let plans = plan::plan_rooms(&facts, bot.now());
    let Ok(rooms) = incident_rooms(bot, incident) else {
        return;
    };
    for (mut record, room) in rooms {
        let Some(p) = plans.iter().find(|p| p.key == record.key) else {
            continue;
        };
        if record.desired.get("topic").and_then(Value::as_str) == Some(p.topic.as_str()) {
            continue;
        }
        if let Some(obj) = record.desired.as_object_mut() {
            obj.insert("topic".into(), json!(p.topic));
        }
        record.updated_at = bot.now();
        if let Err(e) = bot.store.upsert_room(&record) {
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
