//! Chat commands: the one dispatcher. Each command is checked in DESIGN.md's order,
//! run once, and answered once.
//!
//! The checks, in order: the command is not a copy of an earlier one (its megolm
//! message), not handled before, not one too many from a sender cordon does not trust,
//! not stale, parsable, from a verified device if it changes anything, and in a room
//! that takes it. Then the incident it names is resolved, the sender's authority over it
//! checked ([`Authority`]), and the workflow runs (`declare`, `roster`, `deadlines`,
//! `standdown`, `advice`, `record`, `status`). Every outcome comes back here as
//! `Ok(Done)` or a [`CommandError`], and [`finish`] turns it into the answer and, for a
//! refusal, the audit entry. A refusal changes nothing.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::room::MessagesOptions;
use matrix_sdk::ruma::events::room::message::MessageType;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, UInt};
use serde_json::json;
use tracing::{error, info, instrument, warn};

use super::chat::{CommandError, Done, Incoming, mark_handled, refuse, reply, send_once};
use super::ctx::{Ctx, millis_to_utc};
use super::resolve::{resolve_any, resolve_here, resolve_many, resolve_one};
use super::{advice, deadlines, declare, record, roster, standdown, status};
use crate::domain::command::Command;
use crate::domain::command::authority::{Authority, Standing};
use crate::domain::command::flood::Gate;
use crate::domain::incident::{Incident, IncidentId};
use crate::matrix::rooms::{self, notice};
use crate::store::ciphertexts::{Acceptance, AcceptedCiphertext};
use crate::trust::replay;
use crate::trust::sender::SenderDevice;

/// Handles one command message, once.
#[instrument(skip_all, fields(room = %incoming.room.room_id(), event = %incoming.event_id))]
pub async fn handle(ctx: Arc<Ctx>, incoming: Incoming) {
    let room_id = incoming.room.room_id().to_owned();
    // Control rooms take every command; incident rooms take `advice` and `transcribed`
    // (and are told where the rest go); elsewhere cordon stays silent rather than
    // reveal itself.
    let in_control_room = ctx.is_control_room(&room_id);
    if !in_control_room
        && !ctx
            .store
            .room_by_matrix_id(room_id.as_str())
            .is_ok_and(|r| r.is_some())
    {
        return;
    }
    let now = ctx.now();
    let (incident, outcome) = match check(&ctx, &incoming, in_control_room, now).await {
        Ok(command) => run(&ctx, &incoming, command).await,
        Err(e) => (None, Err(e)),
    };
    finish(&ctx, &incoming, incident.as_ref(), outcome, now).await;
}

/// The checks before any command runs, in order. `Ok` is the command to run.
async fn check(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    in_control_room: bool,
    now: DateTime<Utc>,
) -> Result<Command, CommandError> {
    // `declare` and the command record's entries (`decision`, `methane`, `sitrep`) record
    // the command with what it does, in one transaction.
    let records_itself = matches!(
        incoming.parsed,
        Ok(Command::Declare { .. }
            | Command::Decision { .. }
            | Command::Methane { .. }
            | Command::Sitrep { .. })
    );

    // A command from a verified device is keyed by its megolm message before anything
    // runs: a copy posted again as a new event (a replay) is refused.
    let mut replay_of = None;
    if let (SenderDevice::Verified, Some(info)) = (&incoming.device, &incoming.encryption) {
        match accept_ciphertext(ctx, incoming, info, now).await {
            Ok(None) => {}
            Ok(Some(first)) => replay_of = Some(first),
            Err(Unaccepted::Store) => return Err(CommandError::Dropped),
            Err(Unaccepted::Unidentified(why)) => {
                if command_changes_state(incoming) {
                    warn!(why = %why.0, "a command's megolm message could not be identified");
                    mark_handled(ctx, incoming, now);
                    return Err(CommandError::refused(
                        "unidentified-ciphertext",
                        format!(
                            "I did not act on this command: I could not check that it is \
                             not a copy of an earlier one ({why}). Nothing was changed. Send \
                             it again in a minute."
                        ),
                    ));
                }
            }
        }
    }

    // `declare` records the command and the incident in one transaction (in
    // `declare`), `decision`, `methane` and `sitrep` the command and the entry (in
    // `record`); everything else is marked handled before it is answered.
    if !records_itself || replay_of.is_some() {
        match ctx.store.mark_processed(incoming.event_id.as_str(), now) {
            Ok(true) => {}
            Ok(false) => return Err(CommandError::Dropped),
            Err(e) => {
                warn!(error = %e, "store: marking the command processed");
                return Err(CommandError::Dropped);
            }
        }
    } else if ctx
        .store
        .is_processed(incoming.event_id.as_str())
        .unwrap_or(false)
    {
        return Err(CommandError::Dropped);
    }

    // Commands cordon does not trust (an unverified device, a replay) take from their
    // sender's answer budget; a verified commander is always answered.
    if replay_of.is_some() || !matches!(incoming.device, SenderDevice::Verified) {
        let (gate, closed) = ctx.flood_take(incoming.sender.as_str(), now);
        if let Some(closed) = closed {
            ctx.audit_suppressed(&closed);
        }
        if records_itself && gate != Gate::Pass {
            mark_handled(ctx, incoming, now);
        }
        match gate {
            Gate::Pass => {}
            Gate::Notice => {
                return Err(CommandError::NotDone(format!(
                    "{} sent more commands than I answer from an unverified device or as \
                     copies in one minute ({} answered). I am not answering or acting on \
                     the rest for a minute; they are counted in the audit log. Verified \
                     commanders are still answered.",
                    incoming.sender,
                    crate::domain::command::flood::BUDGET
                )));
            }
            Gate::Drop => return Err(CommandError::Dropped),
        }
    }
    if let Some(first) = replay_of {
        replayed(ctx, incoming, &first).await;
        return Err(CommandError::Dropped);
    }

    let age = now - incoming.sent_at;
    let max_age = TimeDelta::from_std(ctx.config.command_max_age).unwrap_or(TimeDelta::MAX);
    if age > max_age {
        let minutes = age.num_minutes();
        return Err(CommandError::refused(
            "stale",
            format!(
                "I did not act on this command: it was sent {minutes} min ago, while I was \
                 unavailable, and commands older than {} are not run. If it is still \
                 needed, send it again.",
                humantime::format_duration(ctx.config.command_max_age)
            ),
        ));
    }

    let command = match &incoming.parsed {
        Ok(c) => c.clone(),
        Err(rejection) => return Err(CommandError::refused("unparsable", rejection.reply())),
    };
    // Anything that changes something must come from a verified device. The sender's
    // unverified device cannot decrypt the answer; the room's verified members can, so
    // they see the refusal.
    if command.changes_state()
        && let SenderDevice::Unverified(why) = &incoming.device
    {
        return Err(CommandError::refused(
            why.code(),
            format!(
                "I did not act on `{}` from {}: {}. Nothing was changed.",
                command.name(),
                incoming.sender,
                why.explain()
            ),
        ));
    }
    info!(command = command.name(), "command");
    if !in_control_room
        && !matches!(
            command,
            Command::Advice { .. }
                | Command::Transcribed { .. }
                | Command::Decision { .. }
                | Command::Methane { .. }
                | Command::Sitrep { .. }
                | Command::Log { .. }
        )
    {
        return Err(CommandError::NotDone(
            "In an incident room I take only `!cordon advice <link>` and `!cordon \
             transcribed <link>` (or react 🩺 and ✅ to the message), `!cordon decision`, \
             `!cordon methane`, `!cordon sitrep` and `!cordon log`. Send other commands in \
             the control room. Nothing was changed."
                .to_owned(),
        ));
    }
    Ok(command)
}

/// Runs a checked command: resolves the incident it is about, checks the sender's
/// authority over it, then runs its workflow. Returns the incident (for the answer's
/// bookkeeping) and the outcome.
async fn run(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    command: Command,
) -> (Option<IncidentId>, Result<Done, CommandError>) {
    // The incident: open ones for most commands; any state for a legal hold and the
    // retry of a failed step, which outlive the rooms.
    let incident = match &command {
        Command::Help { .. }
        | Command::Status { .. }
        | Command::Declare { .. }
        | Command::Advice { .. }
        | Command::Transcribed { .. } => None,
        Command::Hold { incident, .. }
        | Command::Release { incident }
        | Command::Retry { incident, .. } => match resolve_any(ctx, incoming, incident.as_ref()) {
            Ok(i) => Some(i),
            Err(answer) => return (None, Err(CommandError::NotDone(answer))),
        },
        // In an incident room, its incident; a log outlives the rooms.
        Command::Decision { incident, .. }
        | Command::Methane { incident, .. }
        | Command::Sitrep { incident, .. }
        | Command::Log { incident } => {
            let any_state = matches!(command, Command::Log { .. });
            match resolve_here(ctx, incoming, incident.as_ref(), any_state) {
                Ok(i) => Some(i),
                Err(answer) => return (None, Err(CommandError::NotDone(answer))),
            }
        }
        other => match resolve_one(ctx, incoming, other.incident()) {
            Ok(i) => Some(i),
            Err(answer) => return (None, Err(CommandError::NotDone(answer))),
        },
    };
    let Some(incident) = incident else {
        return (None, run_unscoped(ctx, incoming, command).await);
    };
    let id = incident.id.clone();
    let authority = Authority::of(&command);
    let sender = &incoming.sender;
    let standing = Standing {
        commander: incident.commander == sender.as_str(),
        operator: ctx.is_operator(sender),
        records_officer: ctx.config.records_officers.contains(sender),
        loggist: match authority {
            Authority::CommanderOrLoggist => record::is_loggist(ctx, &incident, sender.as_str()),
            Authority::CommanderLoggistOrReporter => {
                record::is_loggist(ctx, &incident, sender.as_str())
                    || record::is_reporter(ctx, &incident, sender.as_str())
            }
            _ => false,
        },
    };
    if !authority.allows(standing) {
        let text = authority.refusal(id.as_str(), &incident.commander);
        return (Some(id), Err(CommandError::refused("not-allowed", text)));
    }
    (Some(id), run_on(ctx, incoming, command, incident).await)
}

/// The commands that are not about one resolved incident.
async fn run_unscoped(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    command: Command,
) -> Result<Done, CommandError> {
    match command {
        Command::Help { topic } => Ok(Done::Reply(
            match crate::domain::command::help(topic.as_deref()) {
                Ok(t) => t,
                Err(r) => r.reply(),
            },
        )),
        Command::Status { incident } => {
            let list = resolve_many(ctx, incoming, incident.as_ref())?;
            Ok(Done::Reply(status::render(ctx, &list).await))
        }
        Command::Declare {
            playbook,
            name,
            exercise,
        } => declare::declare(ctx, incoming, playbook.as_str(), name.as_str(), exercise).await,
        Command::Advice { event, patient } => {
            advice::command(ctx, incoming, event.as_ref(), patient.as_ref(), false).await
        }
        Command::Transcribed { event } => {
            advice::command(ctx, incoming, Some(&event), None, true).await
        }
        other => Err(CommandError::NotDone(format!(
            "`{}` needs an incident. Nothing was changed.",
            other.name()
        ))),
    }
}

/// The commands about one incident, once the sender's authority over it is checked.
async fn run_on(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    command: Command,
    incident: Incident,
) -> Result<Done, CommandError> {
    match command {
        Command::Add { user, role, .. } => {
            roster::add(ctx, incoming, &incident, &user, role.as_str()).await
        }
        Command::Remove { user, .. } => roster::remove(ctx, incoming, &incident, &user).await,
        Command::Handover { user, .. } => roster::handover(ctx, incoming, &incident, &user).await,
        Command::Admit { user, reason, .. } => {
            roster::admit(ctx, incoming, &incident, &user, reason.as_str()).await
        }
        Command::Extend { duration, .. } => {
            deadlines::extend(ctx, incoming, incident, duration).await
        }
        Command::Standdown { .. } => standdown::command(ctx, incoming, incident).await,
        Command::Hold { reason, .. } => {
            standdown::hold(ctx, incoming, incident, reason.as_str()).await
        }
        Command::Release { .. } => standdown::release(ctx, incoming, incident).await,
        Command::Retry { skip_fhir, .. } => {
            standdown::retry(ctx, incoming, incident, skip_fhir).await
        }
        Command::Decision {
            text,
            because,
            corrects,
            ..
        } => record::decision(ctx, incoming, &incident, text, because, corrects).await,
        Command::Methane { report, .. } => record::methane(ctx, incoming, &incident, &report).await,
        Command::Sitrep { text, .. } => record::sitrep(ctx, incoming, &incident, text).await,
        Command::Log { .. } => record::log(ctx, &incident).await,
        other => run_unscoped(ctx, incoming, other).await,
    }
}

/// Turns an outcome into the answer: a reply, a refusal (audited), a failure's
/// explanation, or nothing. A refused `declare` is marked handled here (a `declare` is
/// recorded with its incident only when it runs), and so is a `decision`, `methane` or
/// `sitrep` refused or not done (one that runs is recorded with its entry).
async fn finish(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Option<&IncidentId>,
    outcome: Result<Done, CommandError>,
    now: DateTime<Utc>,
) {
    let refused = matches!(outcome, Err(CommandError::Refused { .. }));
    let not_done = matches!(outcome, Err(CommandError::NotDone(_)));
    match incoming.parsed {
        Ok(Command::Declare { .. }) if refused => mark_handled(ctx, incoming, now),
        Ok(Command::Decision { .. } | Command::Methane { .. } | Command::Sitrep { .. })
            if refused || not_done =>
        {
            mark_handled(ctx, incoming, now)
        }
        _ => {}
    }
    match outcome {
        Ok(Done::Reply(text)) | Err(CommandError::NotDone(text)) => {
            reply(ctx, incoming, incident, &text).await;
        }
        Ok(Done::Answered) | Err(CommandError::Dropped) => {}
        Err(CommandError::Refused {
            code,
            text,
            incident: about,
        }) => {
            refuse(ctx, incoming, about.as_ref().or(incident), &code, &text).await;
        }
        Err(CommandError::Failed(e)) => {
            warn!(error = %e, "command failed");
            let text = format!(
                "I could not finish `{}`: {e}. What was done is recorded; send the command \
                 again to finish it, or ask an operator to check cordon's logs.",
                incoming
                    .parsed
                    .as_ref()
                    .map(|c| c.name())
                    .unwrap_or("command")
            );
            reply(ctx, incoming, incident, &text).await;
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
    ctx: &Ctx,
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
    match ctx.store.accept_ciphertext(&megolm.key, &first) {
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
async fn replayed(ctx: &Arc<Ctx>, incoming: &Incoming, first: &AcceptedCiphertext) {
    let here = incoming.room.room_id();
    let incident = super::ctx::incident_room(ctx, here.as_str()).map(|(_, i)| i);
    if let Err(e) = ctx.store.audit(
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
        ctx.now(),
    ) {
        error!(error = %e, "store: auditing a replayed command");
    }
    let server = ctx.server_name();
    let copy = rooms::event_link(here.as_str(), incoming.event_id.as_str(), server);
    let original = rooms::event_link(&first.room, &first.event_id, server);
    let body = format!(
        "ALERT: possible compromise. A copy of an earlier command was posted in {sender}'s \
         name: {copy} repeats {original} (accepted {at}), the same encrypted message from \
         the same device. I did not run it; nothing was changed. Someone who can post as \
         {sender} (a homeserver admin, or their password) is replaying their commands. \
         Operators: check the homeserver's admin actions and {sender}'s sessions.",
        sender = incoming.sender,
        at = crate::domain::incident::plan::format_time(first.at, ctx.config.time_zone),
    );
    let mut mention: Vec<OwnedUserId> = ctx.config.operators.iter().cloned().collect();
    mention.push(incoming.sender.clone());
    let content = notice(&body, &mention);
    let key = format!("replay/{}", incoming.event_id);
    let target = match &incident {
        Some(i) => OwnedRoomId::try_from(i.control_room.as_str())
            .ok()
            .and_then(|id| ctx.client.get_room(&id)),
        None => Some(incoming.room.clone()),
    };
    let Some(room) = target else {
        warn!("no control room to raise a replayed command in");
        return;
    };
    if let Err(e) = send_once(ctx, &room, &key, incident.as_ref().map(|i| &i.id), content).await {
        warn!(error = %e, "could not raise a replayed command");
    }
}

/// Finds commands that arrived while cordon was down, in every control room, and
/// handles each once (oldest first).
pub async fn catch_up(ctx: &Arc<Ctx>) {
    let horizon = ctx.now() - TimeDelta::hours(24);
    for room_id in ctx.control_rooms() {
        let Some(room) = ctx.client.get_room(&room_id) else {
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
                    && m.state_key() == ctx.user_id()
                    && m.membership()
                        == &matrix_sdk::ruma::events::room::member::MembershipState::Join
                {
                    // Nothing before cordon joined was meant for it.
                    break 'pages;
                }
                if let AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                    matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent::Original(m),
                )) = ev
                    && m.sender != ctx.config.user
                    && let MessageType::Text(text) = &m.content.msgtype
                    && let Some(parsed) = crate::domain::command::parse(&text.body)
                {
                    found.push((
                        event.encryption_info().map(|i| i.as_ref().clone()),
                        super::chat::reply_target(&m.content),
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
        for (encryption, reply_to, body, sender, event_id, sent_at, parsed) in
            found.into_iter().rev()
        {
            if ctx.store.is_processed(event_id.as_str()).unwrap_or(true) {
                continue;
            }
            let device = ctx.sender_device(encryption.as_ref(), &sender).await;
            let incoming = Incoming {
                room: room.clone(),
                device,
                sender,
                event_id,
                sent_at,
                body,
                encryption,
                parsed,
                reply_to,
            };
            info!(event = %incoming.event_id, "handling a command that arrived while cordon was down");
            handle(ctx.clone(), incoming).await;
        }
    }
}
