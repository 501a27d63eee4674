//! Less patient data in the chat: a message in an incident room that holds an NHS
//! number or a full date of birth (`domain::pid`) gets a short notice to its sender, at
//! most once an hour for each sender, unless the playbook says `pid_nudges: false`. The
//! notice never repeats what it found, and cordon keeps only that it nudged whom about
//! which message (`store::pid`, audited as `pid.nudged`).

use std::sync::Arc;

use chrono::TimeDelta;
use matrix_sdk::Room;
use matrix_sdk::ruma::{EventId, UserId};
use tracing::{info, warn};

use super::chat::send_once;
use super::ctx::{Ctx, declared_playbook, incident_room};
use crate::domain::incident::State;
use crate::domain::pid;
use crate::matrix::rooms::notice;
use crate::store::pid::PidSighting;

/// How long a sender who was nudged is not nudged again, per incident.
pub const QUIET: TimeDelta = TimeDelta::hours(1);

/// Looks at one message someone sent in `room`; nudges its sender when it holds patient
/// identifiers and the incident's playbook wants it.
pub(crate) async fn on_message(
    ctx: &Arc<Ctx>,
    room: &Room,
    sender: &UserId,
    event_id: &EventId,
    body: &str,
) {
    // The scan first: most messages hold nothing, and then nothing else is read.
    let today = ctx.now().with_timezone(&ctx.config.time_zone).date_naive();
    let found = pid::scan(body, today);
    if found.is_empty() {
        return;
    }
    let Some((record, incident)) = incident_room(ctx, room.room_id().as_str()) else {
        return;
    };
    if incident.state != State::Active {
        return;
    }
    match declared_playbook(ctx, &incident.id) {
        Ok(playbook) if playbook.pid_nudges => {}
        Ok(_) => {
            info!(incident = %incident.id, "patient identifiers in a message; PID nudges are off");
            return;
        }
        Err(e) => {
            warn!(incident = %incident.id, error = %e, "reading the playbook for a PID nudge");
            return;
        }
    }
    let kinds = found.kinds();
    let seen = PidSighting {
        incident: &incident.id,
        room_key: &record.key,
        sender: sender.as_str(),
        event_id: event_id.as_str(),
        kinds: &kinds,
        at: ctx.now(),
    };
    match ctx.store.record_pid_nudge(&seen, QUIET) {
        Ok(true) => {}
        Ok(false) => {
            info!(incident = %incident.id, "patient identifiers in a message; sender nudged within the hour");
            return;
        }
        Err(e) => {
            warn!(incident = %incident.id, error = %e, "store: recording a PID nudge");
            return;
        }
    }
    let text = nudge_text(sender, &found);
    let key = format!("{}/pid/{}", incident.id.as_str(), event_id);
    let content = notice(&text, &[sender.to_owned()]);
    match send_once(ctx, room, &key, Some(&incident.id), content).await {
        Ok(_) => info!(incident = %incident.id, room = %record.key, "PID nudge sent"),
        Err(e) => warn!(incident = %incident.id, error = %e, "could not send a PID nudge"),
    }
}

/// The nudge, naming what kind of identifier was seen, never its value.
fn nudge_text(sender: &UserId, found: &pid::Found) -> String {
    format!(
        "{sender}: your last message looks like it holds {what}. Please keep \
         patient-identifiable data out of this chat: use initials, or the bed and ward. \
         The chat is not the patient record, and everything in it is sealed for the \
         records officer. To tie clinical advice to a patient, flag it with \
         `!cordon advice <link> --patient <NHS number>` (or reply to it with `!cordon \
         advice --patient <NHS number>`): cordon seals the number for the records \
         officers and the patient record's export, then removes the command from the \
         chat. (No more reminders about this for an hour.)",
        what = found.words()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nudge_names_the_kind_never_the_value() {
        let sender = UserId::parse("@nurse:hs.example").unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let message = "Pt 943 476 5919, DOB 12/03/1984, to CT";
        let text = nudge_text(&sender, &pid::scan(message, today));
        assert!(text.contains("an NHS number and a date of birth"), "{text}");
        for value in ["943", "5919", "1984", "12/03"] {
            assert!(!text.contains(value), "{value} repeated: {text}");
        }
    }
}
