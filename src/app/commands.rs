//! Chat commands: checked in DESIGN.md's order, executed once, always answered.
//!
//! Checks, in order: (1) the sending device is verified (arrives with the verification
//! work), (2) the command and its playbook exist, (3) the sender is allowed, (4) the
//! playbook is valid. A refusal changes nothing, is audited, and is answered.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::events::room::message::MessageType;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UInt};
use serde_json::json;
use tracing::{error, info, instrument, warn};

use super::chat::{Incoming, refuse, reply, send_once};
use super::ctx::{Bot, millis_to_utc};
use super::{roster, status};
use crate::domain::command::flood::Gate;
use crate::domain::command::{Command, IncidentRef};
use crate::domain::incident::{Incident, IncidentId, NewIncident, State};
use crate::input::playbook::Catalog;
use crate::matrix::rooms::{self, notice};
use crate::store::IncidentFilter;
use crate::store::ciphertexts::{Acceptance, AcceptedCiphertext};
use crate::trust::replay;
use crate::trust::sender::SenderDevice;

/// Handles one command message, once.
#[instrument(skip_all, fields(room = %incoming.room.room_id(), event = %incoming.event_id))]
pub async fn handle(bot: Arc<Bot>, incoming: Incoming) {
    let room_id = incoming.room.room_id().to_owned();
    // Control rooms take every command; incident rooms take `advice` and `transcribed`
    // (and are told where the rest go); elsewhere cordon stays silent rather than
    // reveal itself.
    let in_control_room = bot.is_control_room(&room_id);
    if !in_control_room
        && !bot
            .store
            .room_by_matrix_id(room_id.as_str())
            .is_ok_and(|r| r.is_some())
    {
        return;
    }
    let now = bot.now();
    let is_declare = matches!(incoming.parsed, Ok(Command::Declare { .. }));

    // A command from a verified device is keyed by its megolm message before anything
    // runs: a copy posted again as a new event (a replay) is refused.
    let mut replay_of = None;
    if let (SenderDevice::Verified, Some(info)) = (&incoming.device, &incoming.encryption) {
        match accept_ciphertext(&bot, &incoming, info, now).await {
            Ok(None) => {}
            Ok(Some(first)) => replay_of = Some(first),
            Err(Unaccepted::Store) => return,
            Err(Unaccepted::Unidentified(why)) => {
                if command_changes_state(&incoming) {
                    warn!(why = %why.0, "a command's megolm message could not be identified");
                    let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
                    refuse(
                        &bot,
                        &incoming,
                        None,
                        "unidentified-ciphertext",
                        &format!(
                            "I did not act on this command: I could not check that it is not \
                             a copy of an earlier one ({why}). Nothing was changed. Send it \
                             again in a minute."
                        ),
                    )
                    .await;
                    return;
                }
            }
        }
    }

    // `declare` records the command and the incident in one transaction (below);
    // everything else is marked handled before it is answered.
    if !is_declare || replay_of.is_some() {
        match bot.store.mark_processed(incoming.event_id.as_str(), now) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(error = %e, "store: marking the command processed");
                return;
            }
        }
    } else if bot
        .store
        .is_processed(incoming.event_id.as_str())
        .unwrap_or(false)
    {
        return;
    }

    // Commands cordon does not trust (an unverified device, a replay) take from their
    // sender's answer budget; a verified commander is always answered.
    if replay_of.is_some() || !matches!(incoming.device, SenderDevice::Verified) {
        let (gate, closed) = bot.flood_take(incoming.sender.as_str(), now);
        if let Some(closed) = closed {
            bot.audit_suppressed(&closed);
        }
        match gate {
            Gate::Pass => {}
            Gate::Notice => {
                if is_declare {
                    let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
                }
                let text = format!(
                    "{} sent more commands than I answer from an unverified device or as \
                     copies in one minute ({} answered). I am not answering or acting on \
                     the rest for a minute; they are counted in the audit log. Verified \
                     commanders are still answered.",
                    incoming.sender,
                    crate::domain::command::flood::BUDGET
                );
                reply(&bot, &incoming, None, &text).await;
                return;
            }
            Gate::Drop => {
                if is_declare {
                    let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
                }
                return;
            }
        }
    }
    if let Some(first) = replay_of {
        replayed(&bot, &incoming, &first).await;
        return;
    }

    let age = now - incoming.sent_at;
    let max_age = TimeDelta::from_std(bot.config.command_max_age).unwrap_or(TimeDelta::MAX);
    if age > max_age {
        if is_declare {
            let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
        }
        let minutes = age.num_minutes();
        refuse(
            &bot,
            &incoming,
            None,
            "stale",
            &format!(
                "I did not act on this command: it was sent {minutes} min ago, while I was \
                 unavailable, and commands older than {} are not run. If it is still \
                 needed, send it again.",
                humantime::format_duration(bot.config.command_max_age)
            ),
        )
        .await;
        return;
    }

    let command = match &incoming.parsed {
        Ok(c) => c.clone(),
        Err(rejection) => {
            refuse(&bot, &incoming, None, "unparsable", &rejection.reply()).await;
            return;
        }
    };
    // (1) Anything that changes something must come from a verified device. The
    // sender's unverified device cannot decrypt the answer; the room's verified members
    // can, so they see the refusal.
    if command.changes_state()
        && let SenderDevice::Unverified(why) = &incoming.device
    {
        if is_declare {
            let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
        }
        refuse(
            &bot,
            &incoming,
            None,
            why.code(),
            &format!(
                "I did not act on `{}` from {}: {}. Nothing was changed.",
                command.name(),
                incoming.sender,
                why.explain()
            ),
        )
        .await;
        return;
    }
    info!(command = command.name(), "command");
    if !in_control_room
        && !matches!(
            command,
            Command::Advice { .. } | Command::Transcribed { .. }
        )
    {
        reply(
            &bot,
            &incoming,
            None,
            "In an incident room I take only `!cordon advice <link>` and `!cordon \
             transcribed <link>` (or react 🩺 and ✅ to the message). Send other commands \
             in the control room. Nothing was changed.",
        )
        .await;
        return;
    }
    match command {
        Command::Help { topic } => {
            let text = match crate::domain::command::help(topic.as_deref()) {
                Ok(t) => t,
                Err(r) => r.reply(),
            };
            reply(&bot, &incoming, None, &text).await;
        }
        Command::Status { incident } => {
            let text = match resolve_many(&bot, &incoming, incident.as_ref()) {
                Ok(list) => status::render(&bot, &list).await,
                Err(why) => why,
            };
            reply(&bot, &incoming, None, &text).await;
        }
        Command::Declare { playbook, name } => {
            declare(&bot, &incoming, playbook.as_str(), name.as_str()).await;
        }
        Command::Add {
            incident,
            user,
            role,
        } => {
            if let Some(incident) = resolve_one(&bot, &incoming, incident.as_ref()).await {
                roster::add(&bot, &incoming, incident, user, role.as_str()).await;
            }
        }
        Command::Remove { incident, user } => {
            if let Some(incident) = resolve_one(&bot, &incoming, incident.as_ref()).await {
                roster::remove(&bot, &incoming, incident, user).await;
            }
        }
        Command::Handover { incident, user } => {
            if let Some(incident) = resolve_one(&bot, &incoming, incident.as_ref()).await {
                roster::handover(&bot, &incoming, incident, user).await;
            }
        }
        Command::Admit {
            incident,
            user,
            reason,
        } => {
            if let Some(incident) = resolve_one(&bot, &incoming, incident.as_ref()).await {
                roster::admit(&bot, &incoming, incident, user, reason.as_str()).await;
            }
        }
        Command::Extend { incident, duration } => {
            if let Some(incident) = resolve_one(&bot, &incoming, incident.as_ref()).await {
                let done = super::deadlines::extend(&bot, &incoming, incident, duration).await;
                answer_failure(&bot, &incoming, done).await;
            }
        }
        Command::Standdown { incident } => {
            if let Some(incident) = resolve_one(&bot, &incoming, incident.as_ref()).await {
                // Answered by the stand-down notice in this room.
                let done = super::standdown::command(&bot, &incoming, incident).await;
                answer_failure(&bot, &incoming, done).await;
            }
        }
        Command::Hold { incident, reason } => {
            if let Some(incident) = resolve_any(&bot, &incoming, incident.as_ref()).await {
                let done = super::standdown::hold(&bot, &incoming, incident, reason.as_str()).await;
                answer_failure(&bot, &incoming, done).await;
            }
        }
        Command::Release { incident } => {
            if let Some(incident) = resolve_any(&bot, &incoming, incident.as_ref()).await {
                let done = super::standdown::release(&bot, &incoming, incident).await;
                answer_failure(&bot, &incoming, done).await;
            }
        }
        Command::Retry { incident } => {
            if let Some(incident) = resolve_any(&bot, &incoming, incident.as_ref()).await {
                let done = super::standdown::retry(&bot, &incoming, incident).await;
                answer_failure(&bot, &incoming, done).await;
            }
        }
        Command::Advice { event } => {
            super::advice::command(&bot, &incoming, &event, false).await;
        }
        Command::Transcribed { event } => {
            super::advice::command(&bot, &incoming, &event, true).await;
        }
    }
}

/// Why a command's ciphertext was not accepted.
enum Unaccepted {
    /// The store failed (logged; the store watch stops cordon).
    Store,
    /// The megolm message could not be identified.
    Unidentified(crate::trust::replay::Unidentified),
}

/// True when the command would change something (unparsable ones change nothing).
fn command_changes_state(incoming: &Incoming) -> bool {
    incoming.parsed.as_ref().is_ok_and(Command::changes_state)
}

/// Records the command's megolm message as accepted. `Ok(Some(first))` when it was
/// accepted before, for another event: a replay of `first`.
async fn accept_ciphertext(
    bot: &Bot,
    incoming: &Incoming,
    info: &EncryptionInfo,
    now: DateTime<Utc>,
) -> Result<Option<AcceptedCiphertext>, Unaccepted> {
    let megolm = replay::identify(&incoming.room, &incoming.event_id, info, &incoming.body)
        .await
        .map_err(Unaccepted::Unidentified)?;
    let first = AcceptedCiphertext {
        event_id: incoming.event_id.to_string(),
        room: incoming.room.room_id().to_string(),
        sender: incoming.sender.to_string(),
        at: now,
        sha256: megolm.sha256.clone(),
    };
    match bot.store.accept_ciphertext(&megolm.key, &first) {
        Ok(Acceptance::New | Acceptance::SameEvent) => Ok(None),
        Ok(Acceptance::Replay(original)) => {
            warn!(
                original = %original.event_id, session = %megolm.session_id, index = megolm.index,
                "a replayed command: the same megolm message as an earlier one"
            );
            Ok(Some(original))
        }
        Err(e) => {
            error!(error = %e, "store: recording a command's ciphertext");
            Err(Unaccepted::Store)
        }
    }
}

/// Refuses a replayed command: audited as `command.replayed`, and raised in the
/// control room (the incident's, for a command in an incident room) as a possible
/// compromise, naming the sender and the original event.
async fn replayed(bot: &Arc<Bot>, incoming: &Incoming, first: &AcceptedCiphertext) {
    let here = incoming.room.room_id();
    let incident = bot
        .store
        .room_by_matrix_id(here.as_str())
        .ok()
        .flatten()
        .and_then(|r| bot.store.incident(&r.incident).ok().flatten());
    if let Err(e) = bot.store.audit(
        incoming.sender.as_str(),
        "command.replayed",
        incident.as_ref().map(|i| &i.id),
        json!({
            "room": here,
            "event": incoming.event_id,
            "original_event": first.event_id,
            "original_room": first.room,
            "original_at": first.at,
            "ciphertext_sha256": first.sha256,
            "command": incoming.parsed.as_ref().map(|c| c.name()).unwrap_or("unparsable"),
        }),
        bot.now(),
    ) {
        error!(error = %e, "store: auditing a replayed command");
    }
    let server = bot.server_name();
    let copy = rooms::event_link(here.as_str(), incoming.event_id.as_str(), server);
    let original = rooms::event_link(&first.room, &first.event_id, server);
    let body = format!(
        "ALERT: possible compromise. A copy of an earlier command was posted in {sender}'s \
         name: {copy} repeats {original} (accepted {at}), the same encrypted message from \
         the same device. I did not run it; nothing was changed. Someone who can post as \
         {sender} (a homeserver admin, or their password) is replaying their commands. \
         Operators: check the homeserver's admin actions and {sender}'s sessions.",
        sender = incoming.sender,
        at = crate::domain::incident::plan::format_time(first.at, bot.config.time_zone),
    );
    let mut mention: Vec<OwnedUserId> = bot.config.operators.iter().cloned().collect();
    mention.push(incoming.sender.clone());
    let content = notice(&body, &mention);
    let key = format!("replay/{}", incoming.event_id);
    let target = match &incident {
        Some(i) => OwnedRoomId::try_from(i.control_room.as_str())
            .ok()
            .and_then(|id| bot.client.get_room(&id)),
        None => Some(incoming.room.clone()),
    };
    let Some(room) = target else {
        warn!("no control room to raise a replayed command in");
        return;
    };
    if let Err(e) = send_once(bot, &room, &key, incident.as_ref().map(|i| &i.id), content).await {
        warn!(error = %e, "could not raise a replayed command");
    }
}

/// `declare`: checks, records the incident, and starts provisioning.
async fn declare(bot: &Arc<Bot>, incoming: &Incoming, playbook_id: &str, name: &str) {
    let now = bot.now();
    let (catalog, problems) = Catalog::load(std::slice::from_ref(&bot.config.playbooks_dir));

    // (2) The playbook exists, and (4) is valid: a file named after the id with
    // problems is reported as such rather than as unknown.
    let Some(playbook) = catalog.get(playbook_id) else {
        let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
        let related: Vec<String> = problems
            .iter()
            .filter(|d| {
                d.file
                    .file_stem()
                    .is_some_and(|s| s.to_string_lossy() == playbook_id)
            })
            .map(|d| d.to_string().lines().next().unwrap_or_default().to_owned())
            .collect();
        let message = if related.is_empty() {
            let available: Vec<&str> = catalog.ids().collect();
            format!(
                "There is no playbook `{playbook_id}`. Nothing was declared.\nAvailable \
                 playbooks: {}.\nExample: `!cordon declare {} \"Tram crash Addiscombe\"`",
                if available.is_empty() {
                    "none (ask the emergency planners to check the playbooks directory)".to_owned()
                } else {
                    available.join(", ")
                },
                available.first().copied().unwrap_or("mass-casualty"),
            )
        } else {
            let shown: Vec<String> = related.iter().take(5).cloned().collect();
            format!(
                "Playbook `{playbook_id}` cannot be used: it has {} problem(s). Nothing was \
                 declared.\n{}\nAsk the emergency planners to fix it and run `cordon check`.",
                related.len(),
                shown.join("\n")
            )
        };
        refuse(bot, incoming, None, "playbook", &message).await;
        return;
    };

    // (3) The sender is allowed: the playbook's trigger, or an operator.
    if !(playbook.may_declare(&incoming.sender) || bot.is_operator(&incoming.sender)) {
        let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
        refuse(
            bot,
            incoming,
            None,
            "not-allowed",
            &format!(
                "You are not allowed to declare `{}`. Nothing was declared. The playbook \
                 allows: {}. Ask an operator if this is wrong.",
                playbook.id,
                trigger_description(playbook)
            ),
        )
        .await;
        return;
    }

    // The playbook as declared, so that a resumed or later step uses exactly this
    // version even if the file changes on disk.
    let text = match crate::input::yaml::read_bounded(&playbook.source) {
        Ok(t) => t,
        Err(d) => {
            let _ = bot.store.mark_processed(incoming.event_id.as_str(), now);
            refuse(bot, incoming, None, "playbook", &d.to_string()).await;
            return;
        }
    };
    let expires_at = now + TimeDelta::from_std(playbook.duration.max).unwrap_or(TimeDelta::MAX);
    let new = NewIncident {
        playbook: playbook.id.clone(),
        display_name: name.to_owned(),
        control_room: incoming.room.room_id().to_string(),
        commander: incoming.sender.to_string(),
        expires_at,
    };
    let snapshot = crate::store::PlaybookSnapshot {
        path: playbook.source.display().to_string(),
        sha256: playbook.sha256.clone(),
        text,
    };
    let created = {
        let mut rng = rand::rng();
        let mut next = || rand::Rng::random::<u64>(&mut rng);
        bot.store.create_incident_for_command(
            incoming.event_id.as_str(),
            new,
            &snapshot,
            &mut next,
            incoming.sender.as_str(),
            now,
        )
    };
    let incident = match created {
        Ok(Some(incident)) => incident,
        Ok(None) => return, // handled before (a replay)
        Err(e) => {
            warn!(error = %e, "store: recording the incident");
            reply(
                bot,
                incoming,
                None,
                "I could not record the incident in my store, so nothing was declared. \
                 Operators: check cordon's logs. Try again in a minute.",
            )
            .await;
            return;
        }
    };
    info!(incident = %incident.id, playbook = %incident.playbook, "declared");
    // The pipeline is the provisioning timer's job, run by the scheduler at once. Should
    // arming fail (the store), the incident is still provisioning: its timer is armed
    // again at the next start.
    if let Err(e) = bot.arm(&crate::domain::incident::timers::provision(
        &incident.id,
        bot.now(),
    )) {
        error!(incident = %incident.id, error = %e, "store: arming provisioning");
    }
}

/// Answers a command whose work failed part-way: what failed, and that it can be sent
/// again (every step is safe to repeat).
async fn answer_failure(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    done: Result<(), super::ctx::BotError>,
) {
    if let Err(e) = done {
        warn!(error = %e, "command failed");
        let text = format!(
            "I could not finish `{}`: {e}. What was done is recorded; send the command again \
             to finish it, or ask an operator to check cordon's logs.",
            incoming
                .parsed
                .as_ref()
                .map(|c| c.name())
                .unwrap_or("command")
        );
        reply(bot, incoming, None, &text).await;
    }
}

/// Like [`resolve_one`], but a named incident may be in any state (a hold outlives the
/// rooms), and the default is the only open incident of this control room.
async fn resolve_any(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
) -> Option<Incident> {
    if wanted.is_some() {
        return resolve_one(bot, incoming, wanted).await;
    }
    match resolve_many(bot, incoming, None) {
        Ok(mut list) if list.len() == 1 => list.pop(),
        Ok(list) if list.is_empty() => {
            let text = "There is no open incident in this room; name one, like `!cordon \
                        hold mc-4k7p --reason \"…\"`. Nothing was changed.";
            reply(bot, incoming, None, text).await;
            None
        }
        Ok(list) => {
            let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
            let text = format!(
                "Several incidents are open here ({}); name one. Nothing was changed.",
                ids.join(", ")
            );
            reply(bot, incoming, None, &text).await;
            None
        }
        Err(why) => {
            reply(bot, incoming, None, &why).await;
            None
        }
    }
}

/// The one incident a command acts on: the one named, which must have been declared in
/// this control room, or else the only active one here. Answers the command when there
/// is none or several.
async fn resolve_one(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
) -> Option<Incident> {
    let here = incoming.room.room_id().as_str();
    let answer = match wanted {
        Some(_) => match resolve_many(bot, incoming, wanted) {
            Ok(mut list) => match list.pop() {
                Some(incident) if incident.control_room == here => return Some(incident),
                Some(incident) => format!(
                    "{} was not declared in this room; manage it from its own control room.",
                    incident.id.as_str()
                ),
                None => "There is no such incident. Type `!cordon status` to list this room's \
                         incidents."
                    .to_owned(),
            },
            Err(why) => why,
        },
        None => {
            let active = bot.store.incidents(
                &IncidentFilter::in_states(&[State::Active, State::Provisioning])
                    .in_control_room(here),
            );
            match active {
                Ok(mut list) if list.len() == 1 => return list.pop(),
                Ok(list) if list.is_empty() => {
                    "There is no active incident in this room, so nothing was changed. \
                     `!cordon status` lists this room's incidents; `!cordon declare` starts one."
                        .to_owned()
                }
                Ok(list) => {
                    let ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
                    format!(
                        "Several incidents are active here ({}); name one, like `!cordon {} {} …`. \
                         Nothing was changed.",
                        ids.join(", "),
                        incoming
                            .parsed
                            .as_ref()
                            .map(|c| c.name())
                            .unwrap_or("status"),
                        ids.first().copied().unwrap_or("mc-4k7p"),
                    )
                }
                Err(e) => store_unreadable(&e),
            }
        }
    };
    reply(bot, incoming, None, &answer).await;
    None
}

/// The incidents a command names: the given one, or every open incident of this
/// control room.
fn resolve_many(
    bot: &Bot,
    incoming: &Incoming,
    wanted: Option<&IncidentRef>,
) -> Result<Vec<Incident>, String> {
    match wanted {
        Some(r) => {
            let id = IncidentId::parse(r.as_str()).map_err(|e| {
                format!(
                    "`{}` is not an incident id: {e}. Ids look like mc-4k7p; \
                         `!cordon status` lists this room's incidents.",
                    r.as_str()
                )
            })?;
            match bot.store.incident(&id) {
                Ok(Some(i)) => Ok(vec![i]),
                Ok(None) => Err(format!(
                    "There is no incident `{}`. Type `!cordon status` to list them.",
                    id.as_str()
                )),
                Err(e) => Err(store_unreadable(&e)),
            }
        }
        None => {
            let filter = IncidentFilter::in_states(&[
                State::Provisioning,
                State::Active,
                State::StandingDown,
                State::Failed,
            ])
            .in_control_room(incoming.room.room_id().as_str());
            bot.store
                .incidents(&filter)
                .map_err(|e| store_unreadable(&e))
        }
    }
}

/// The reply when the store cannot be read: nothing was done, and what to do next.
fn store_unreadable(e: &dyn std::fmt::Display) -> String {
    format!(
        "I could not read my store ({e}). Nothing was changed. Send the command again in a \
         minute; if this keeps happening, operators should check cordon's logs and \
         `/healthz`."
    )
}

/// Finds commands that arrived while cordon was down, in every control room, and
/// handles each once (oldest first).
pub async fn catch_up(bot: &Arc<Bot>) {
    let horizon = bot.now() - TimeDelta::hours(24);
    for room_id in bot.control_rooms() {
        let Some(room) = bot.client.get_room(&room_id) else {
            continue;
        };
        let mut found = Vec::new();
        let mut from: Option<String> = None;
        'pages: for _ in 0..10 {
            let mut options = MessagesOptions::backward();
            options.limit = UInt::from(100u32);
            options.from = from.clone();
            let page = match room.messages(options).await {
                Ok(p) => p,
                Err(e) => {
                    warn!(room = %room_id, error = %e, "catch-up: could not page back");
                    break;
                }
            };
            for event in &page.chunk {
                let Ok(ev) = event.raw().deserialize() else {
                    continue;
                };
                let at = millis_to_utc(ev.origin_server_ts().get().into());
                if at < horizon {
                    break 'pages;
                }
                if let AnySyncTimelineEvent::State(
                    matrix_sdk::ruma::events::AnySyncStateEvent::RoomMember(m),
                ) = &ev
                    && m.state_key() == bot.user_id()
                    && m.membership()
                        == &matrix_sdk::ruma::events::room::member::MembershipState::Join
                {
                    // Nothing before cordon joined was meant for it.
                    break 'pages;
                }
                if let AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                    matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent::Original(m),
                )) = ev
                    && m.sender != bot.config.user
                    && let MessageType::Text(text) = &m.content.msgtype
                    && let Some(parsed) = crate::domain::command::parse(&text.body)
                {
                    found.push((
                        event.encryption_info().map(|i| i.as_ref().clone()),
                        text.body.clone(),
                        m.sender.clone(),
                        m.event_id.clone(),
                        at,
                        parsed,
                    ));
                }
            }
            match page.end {
                Some(end) => from = Some(end),
                None => break,
            }
        }
        for (encryption, body, sender, event_id, sent_at, parsed) in found.into_iter().rev() {
            if bot.store.is_processed(event_id.as_str()).unwrap_or(true) {
                continue;
            }
            let device = bot.sender_device(encryption.as_ref(), &sender).await;
            let incoming = Incoming {
                room: room.clone(),
                device,
                sender,
                event_id,
                sent_at,
                body,
                encryption,
                parsed,
            };
            info!(event = %incoming.event_id, "handling a command that arrived while cordon was down");
            handle(bot.clone(), incoming).await;
        }
    }
}

/// Who may declare a playbook, as people read it.
fn trigger_description(playbook: &crate::input::playbook::Playbook) -> String {
    let mut parts: Vec<String> = playbook
        .trigger
        .allowed
        .iter()
        .map(|a| match a {
            crate::input::playbook::Allowed::Role(role) => match playbook.role(role) {
                Some(r) => format!("holders of {} ({})", r.title, role.as_str()),
                None => format!("holders of {}", role.as_str()),
            },
            crate::input::playbook::Allowed::User(user) => user.to_string(),
        })
        .collect();
    parts.push("operators".to_owned());
    parts.join(", ")
}
