//! The `status` reply: each incident, its rooms, who has joined, who is invited, and
//! the time to expiry. Short enough for a phone screen.

use matrix_sdk::RoomMemberships;

use super::Bot;
use crate::incident::plan::{format_remaining, format_time};
use crate::incident::{Incident, State};
use crate::matrix::rooms;
use crate::store::RoomStatus;

/// Renders `incidents` as the status reply.
pub async fn render(bot: &Bot, incidents: &[Incident]) -> String {
    if incidents.is_empty() {
        return "No open incident in this control room. Declare one with \
                `!cordon declare <playbook> \"<name>\"`; `!cordon help declare` explains."
            .to_owned();
    }
    let now = bot.now();
    let mut out = String::new();
    for incident in incidents {
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        let held = if incident.is_held() {
            " · LEGAL HOLD"
        } else {
            ""
        };
        out.push_str(&format!(
            "{id} · {name} · {state}{held}\ncommander {commander} · closes {expires} ({left})",
            id = incident.id.as_str(),
            name = incident.display_name,
            state = incident.state.as_str(),
            commander = incident.commander,
            expires = format_time(incident.expires_at, bot.config.time_zone),
            left = format_remaining(incident.expires_at, now),
        ));
        let advice = super::advice::outstanding_count(bot, incident);
        if advice > 0 {
            out.push_str(&format!("\nadvice not yet marked transcribed: {advice}"));
        }
        if let Some(failure) = &incident.failure
            && incident.state == State::Failed
        {
            out.push_str(&format!(
                "\nfailed: {} (`!cordon retry {}` once fixed)",
                failure.reason,
                incident.id.as_str()
            ));
        }
        if incident.state == State::StandingDown
            && let Ok(Some(record)) = bot.store.standdown(&incident.id)
        {
            out.push_str(&format!("\nstand-down at: {}", record.step.as_str()));
        }
        if let Some(archive) = &incident.archive {
            out.push_str(&format!(
                "\narchive sealed and verified, SHA-256 {}…, kept at least until {}",
                archive.sha256.get(..12).unwrap_or(&archive.sha256),
                format_time(archive.keep_until, bot.config.time_zone)
            ));
        }
        let mut records = bot.store.rooms(&incident.id).unwrap_or_default();
        records.sort_by_key(|r| {
            r.desired
                .get("position")
                .and_then(|p| p.as_u64())
                .unwrap_or(u64::MAX)
        });
        for record in records {
            let name = record
                .desired
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or(&record.key)
                .to_owned();
            let planned = record
                .desired
                .get("invites")
                .and_then(|i| i.as_array())
                .map_or(0, |a| a.len());
            let gone = match record.status {
                RoomStatus::Deleting => Some("being destroyed"),
                RoomStatus::Destroyed => Some("destroyed"),
                RoomStatus::PurgePending => Some("closed, purge pending on the server"),
                _ => None,
            };
            if let Some(gone) = gone {
                out.push_str(&format!("\n- {name}: {gone}"));
                continue;
            }
            let Some(room) = record
                .room_id
                .as_deref()
                .and_then(|id| rooms::joined(&bot.client, id))
            else {
                out.push_str(&format!("\n- {name}: not created yet"));
                continue;
            };
            let members = room
                .members(RoomMemberships::JOIN | RoomMemberships::INVITE)
                .await
                .unwrap_or_default();
            let me = bot.user_id();
            let joined = members
                .iter()
                .filter(|m| m.user_id() != me)
                .filter(|m| {
                    *m.membership() == matrix_sdk::ruma::events::room::member::MembershipState::Join
                })
                .count();
            let invited = members
                .iter()
                .filter(|m| {
                    *m.membership()
                        == matrix_sdk::ruma::events::room::member::MembershipState::Invite
                })
                .count();
            // From the roster when there is one: who cordon let in but has not joined
            // yet, and who is waiting (unverified, no account …).
            let roster = bot
                .store
                .roster_for_room(room.room_id().as_str())
                .unwrap_or_default();
            let pending = if roster.is_empty() {
                planned.saturating_sub(joined + invited)
            } else {
                let waiting = roster
                    .iter()
                    .filter(|e| matches!(e.status, crate::store::RosterStatus::Pending { .. }))
                    .count();
                let allowed = roster.iter().filter(|e| e.is_allowed()).count();
                waiting + allowed.saturating_sub(joined + invited)
            };
            out.push_str(&format!(
                "\n- {name}: {joined} joined, {invited} invited, {pending} pending"
            ));
        }
    }
    out
}
