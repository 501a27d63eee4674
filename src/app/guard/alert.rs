//! The guard's alerts: what they say, where they go, and sending each exactly once.
//!
//! An alert goes to the incident's control room (where it was declared) and to its
//! command room (room key `command`, else the playbook's first room), mentioning the
//! commander. Its text is stored in the outbox under a stable key *before* the guard
//! acts, and each room's send goes through [`send_once`], so a restart at any point
//! sends it once: [`resume`] re-sends what a restart interrupted.

use chrono::{DateTime, Utc};
use matrix_sdk::ruma::OwnedUserId;
use tracing::{error, warn};

use crate::app::chat::send_once;
use crate::app::ctx::Ctx;
use crate::domain::incident::Incident;
use crate::matrix::rooms::{self, notice};
use crate::store::{Effect, OutboxEntry};

/// `at` in UTC and in the configured time zone, to the second:
/// `2026-03-01 14:03:12 UTC (14:03:12 GMT, Europe/London)`.
pub fn when(at: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    format!(
        "{} ({} {})",
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        at.with_timezone(&tz).format("%H:%M:%S %Z,"),
        tz.name()
    )
}

/// One thing the guard found in a room and what it does about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Someone joined or was invited without cordon's invite record.
    Intruder {
        /// Who.
        user: String,
        /// `join` or `invite`.
        membership: String,
        /// The sender the member event claims.
        claimed_sender: String,
        /// When the server says it happened.
        at: DateTime<Utc>,
        /// Why they are not allowed (from the roster).
        why: String,
    },
    /// A state event differs from what cordon set, or is one cordon never sets.
    Drift {
        /// The event type.
        event_type: String,
        /// The state key.
        state_key: String,
        /// The sender the event claims, when there is an event.
        claimed_sender: Option<String>,
        /// When the server says it was sent.
        at: Option<DateTime<Utc>>,
        /// True for state cordon set (restored); false for state it never sets
        /// (emptied).
        own: bool,
    },
    /// A role holder cordon let in was banned or removed, and cordon did not do it.
    Ejected {
        /// Who.
        user: String,
        /// `ban` or `leave`.
        membership: String,
        /// The sender the member event claims.
        claimed_sender: String,
        /// When the server says it happened.
        at: DateTime<Utc>,
    },
    /// cordon itself is no longer in the room, and did not leave it.
    CordonRemoved {
        /// Its membership now (`leave`, `ban`), if known.
        membership: String,
        /// The sender the member event claims, if known.
        claimed_sender: Option<String>,
        /// When the server says it happened, if known.
        at: Option<DateTime<Utc>>,
    },
}

/// What the incident is called in alerts: `Tram crash (mc-4k7p)`.
fn incident_name(incident: &Incident) -> String {
    format!("{} ({})", incident.display_name, incident.id.as_str())
}

fn claims(sender: &str, own: &str) -> String {
    if sender == own {
        format!("the event claims to come from cordon ({own}), which did not send it")
    } else {
        format!("the event claims to come from {sender}")
    }
}

/// `at <time> (<who the event claims>)`, or nothing when the server told neither.
fn happened(
    at: Option<DateTime<Utc>>,
    sender: Option<&str>,
    own: &str,
    tz: chrono_tz::Tz,
) -> String {
    match (at, sender) {
        (Some(at), Some(sender)) => format!(" at {} ({})", when(at, tz), claims(sender, own)),
        (Some(at), None) => format!(" at {}", when(at, tz)),
        (None, Some(sender)) => format!(" ({})", claims(sender, own)),
        (None, None) => String::new(),
    }
}

/// One line of a compromise alert.
fn finding_line(f: &Finding, own: &str, tz: chrono_tz::Tz) -> String {
    match f {
        Finding::Intruder {
            user,
            membership,
            claimed_sender,
            at,
            why,
        } => {
            let verb = if membership == "invite" {
                "was invited"
            } else {
                "joined"
            };
            format!(
                "- {user} {verb} at {} ({}); {why}. cordon banned them.",
                when(*at, tz),
                claims(claimed_sender, own),
            )
        }
        Finding::Drift {
            event_type,
            state_key,
            claimed_sender,
            at,
            own: set_by_cordon,
        } => {
            let what = if state_key.is_empty() {
                event_type.clone()
            } else {
                format!("{event_type} (state key \"{}\")", one_line(state_key, 80))
            };
            let when_who = happened(*at, claimed_sender.as_deref(), own, tz);
            match (set_by_cordon, claimed_sender) {
                (true, None) => format!("- {what} is missing. cordon restored its own setting."),
                (true, Some(_)) => {
                    format!("- {what} was changed{when_who}. cordon restored its own setting.")
                }
                (false, _) => {
                    let hint = match event_type.as_str() {
                        "m.room.tombstone" => {
                            " Ignore any \"this room has moved\" notice: the incident's \
                             rooms are the ones cordon invited you to."
                        }
                        "m.room.pinned_events" => " Do not trust what was pinned.",
                        _ => "",
                    };
                    format!(
                        "- {what} was set{when_who}. cordon never sets it, and emptied it.{hint}"
                    )
                }
            }
        }
        Finding::Ejected {
            user,
            membership,
            claimed_sender,
            at,
        } => {
            let (verb, done) = if membership == "ban" {
                ("was banned", "cordon lifted the ban and invited them back.")
            } else {
                ("was removed", "cordon invited them back.")
            };
            format!(
                "- {user} {verb} at {} ({}), but cordon did not remove them. {done}",
                when(*at, tz),
                claims(claimed_sender, own),
            )
        }
        Finding::CordonRemoved {
            membership,
            claimed_sender,
            at,
        } => {
            let how = if membership == "ban" {
                "banned from"
            } else {
                "removed from"
            };
            format!(
                "- cordon itself was {how} this room{}. It can no longer guard it: treat \
                 the room as compromised and use the incident's other rooms until the \
                 server operators have investigated.",
                happened(*at, claimed_sender.as_deref(), own, tz),
            )
        }
    }
}

/// The alert for forged membership or state in an incident's rooms: each room's
/// findings under its name.
pub fn compromise_body(
    incident: &Incident,
    rooms: &[(String, Vec<Finding>)],
    own: &str,
    detected: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> String {
    let mut out = format!(
        "SECURITY ALERT - POSSIBLE SERVER COMPROMISE in {name}.\n\
         Detected {detected}. Matrix membership and room settings are not end-to-end \
         protected: these changes were made through the homeserver, not by cordon.",
        name = incident_name(incident),
        detected = when(detected, tz),
    );
    let mut banned = false;
    for (room_name, findings) in rooms {
        if findings.is_empty() {
            continue;
        }
        out.push_str(&format!("\nIn room \"{}\":", one_line(room_name, 120)));
        for f in findings {
            banned |= matches!(f, Finding::Intruder { .. });
            out.push('\n');
            out.push_str(&finding_line(f, own, tz));
        }
    }
    if banned {
        out.push_str(
            "\ncordon rotated the room's encryption key. It never shares keys with \
             unverified devices, so its own messages stayed unreadable to them; members' \
             apps may have shared theirs.",
        );
    }
    out.push_str(&format!(
        "\nTell the server operators and your information governance lead now: this may \
         be a reportable breach (72-hour clock from detection).\nCommander: {}",
        incident.commander
    ));
    out
}

/// The alert for a member's device that its owner has not cross-signed.
pub fn device_body(
    incident: &Incident,
    user: &str,
    device: &str,
    device_name: Option<&str>,
    detected: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> String {
    let named = match device_name {
        Some(n) if !n.trim().is_empty() => format!("{device} (\"{}\")", one_line(n, 60)),
        _ => device.to_owned(),
    };
    format!(
        "SECURITY ALERT in {name}: {user} has a device that they have not verified: \
         {named}, seen {detected}.\ncordon shares no room keys with it, so it cannot read \
         cordon's messages; other members' apps may still share with it. If {user} did \
         not just sign in on a new device, their account may be compromised: check with \
         them in person and tell the server operators.\nCommander: {commander}",
        name = incident_name(incident),
        detected = when(detected, tz),
        commander = incident.commander,
    )
}

/// What the guard did about an identity change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityAction {
    /// Removed from the incident's rooms (`identity_change: remove`).
    Removed,
    /// Left in the rooms (`identity_change: alert`).
    AlertOnly,
}

/// The alert for a member whose cross-signing identity changed since enrolment.
pub fn identity_body(
    incident: &Incident,
    user: &str,
    action: IdentityAction,
    detected: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> String {
    let done = match action {
        IdentityAction::Removed => format!(
            "As the playbook says, cordon removed {user} from this incident's rooms until \
             an operator verifies them again in person (`cordon verify {user}`); then \
             they are invited back."
        ),
        IdentityAction::AlertOnly => format!(
            "The playbook says to alert only: {user} stays in the rooms, but cordon shares \
             no room keys with their devices until an operator verifies them again \
             (`cordon verify {user}`)."
        ),
    };
    format!(
        "SECURITY ALERT in {name}: the identity (cross-signing keys) of {user} changed \
         since an operator verified it; detected {detected}.\nThis happens when someone \
         resets their encryption (a new phone, a lost recovery key), and also when an \
         attacker takes over the account. {done}\nNone of their devices keeps cordon's \
         trust, the one an operator compared emojis with included: commands from them are \
         refused and no room key of cordon's reaches any of their devices until they are \
         enrolled again.\nCommander: {commander}",
        name = incident_name(incident),
        detected = when(detected, tz),
        commander = incident.commander,
    )
}

/// The alert for a member whose enrolment an operator revoked.
pub fn revoked_body(
    incident: &Incident,
    user: &str,
    detected: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> String {
    format!(
        "SECURITY ALERT in {name}: an operator revoked the enrolment of {user}; detected \
         {detected}. cordon removed them from this incident's rooms until they are \
         verified again.\nCommander: {commander}",
        name = incident_name(incident),
        detected = when(detected, tz),
        commander = incident.commander,
    )
}

/// The notice that a removed member was verified again and invited back.
pub fn readmitted_body(incident: &Incident, user: &str, rooms: &[String]) -> String {
    format!(
        "{user} was verified again by an operator and is invited back to {name}: {}.\n\
         Commander: {commander}",
        rooms.join(", "),
        name = incident_name(incident),
        commander = incident.commander,
    )
}

fn one_line(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// The rooms an incident's alerts go to: its control room, then its command room.
fn targets(ctx: &Ctx, incident: &Incident) -> Vec<String> {
    let mut out = vec![incident.control_room.clone()];
    match ctx.store.rooms(&incident.id) {
        Ok(records) => {
            let command =
                crate::app::ctx::command_room_record(&records).and_then(|r| r.room_id.clone());
            if let Some(room) = command
                && !out.contains(&room)
            {
                out.push(room);
            }
        }
        Err(e) => error!(error = %e, "store: reading an incident's rooms for an alert"),
    }
    out
}

/// Records the intent to send `body` as an alert about `incident` under `key` (its
/// text, mentions and target rooms), before the guard acts. An intent already recorded
/// under `key` is returned unchanged.
pub fn record(ctx: &Ctx, incident: &Incident, key: &str, body: &str) -> Option<OutboxEntry> {
    let effect = Effect::GuardAlert {
        body: body.to_owned(),
        mentions: vec![incident.commander.clone()],
        rooms: targets(ctx, incident),
    };
    let now = ctx.now();
    match ctx.store.outbox_put(key, Some(&incident.id), effect, now) {
        Ok(entry) => {
            // Counted once, when first recorded: a re-recorded intent keeps its time.
            if entry.created_at == now {
                crate::metrics::global().guard_alert(crate::metrics::alert_kind(key));
            }
            Some(entry)
        }
        Err(e) => {
            error!(error = %e, "store: recording a guard alert");
            None
        }
    }
}

/// Sends a recorded alert to each of its rooms once, and marks it done when every room
/// cordon is in has it.
pub async fn deliver(ctx: &Ctx, entry: &OutboxEntry) {
    if !entry.is_pending() {
        return;
    }
    let Effect::GuardAlert {
        body,
        mentions,
        rooms: targets,
    } = &entry.effect
    else {
        return;
    };
    let mentions: Vec<OwnedUserId> = mentions
        .iter()
        .filter_map(|u| OwnedUserId::try_from(u.as_str()).ok())
        .collect();
    let mut complete = true;
    for room_id in targets.iter().map(String::as_str) {
        let Some(room) = rooms::joined(&ctx.client, room_id) else {
            warn!(
                room = room_id,
                "cordon is not in an alert's room; skipping it"
            );
            continue;
        };
        let key = format!("{}/{room_id}", entry.key);
        if let Err(e) = send_once(
            ctx,
            &room,
            &key,
            entry.incident.as_ref(),
            notice(body, &mentions),
        )
        .await
        {
            warn!(room = room_id, error = %e, "could not send a guard alert; retrying later");
            complete = false;
        }
    }
    if complete && let Err(e) = ctx.store.outbox_complete(&entry.key, None, ctx.now()) {
        error!(error = %e, "store: completing a guard alert");
    }
}

/// Sends every alert whose sending a restart (or a failed send) interrupted.
pub async fn resume(ctx: &Ctx) {
    let pending = match ctx.store.outbox_pending() {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "store: listing pending guard alerts");
            return;
        }
    };
    for entry in pending
        .iter()
        .filter(|e| matches!(e.effect, Effect::GuardAlert { .. }))
    {
        deliver(ctx, entry).await;
    }
}

#[cfg(test)]
mod tests;
