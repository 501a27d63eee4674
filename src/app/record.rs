//! The decision log: `!cordon decision` records a numbered, attributed, timed entry and
//! posts it in the command room; `!cordon log` lists the entries.
//!
//! The order is what makes it safe. The text is sealed to the records officers first
//! (`archive::record`, a file no key of cordon's opens); then one store transaction
//! records the entry (number, times, people, hashes, never the text), marks the command
//! handled, audits it and arms a fallback timer to post it; then it is posted, once
//! (`send_once`: a stored transaction id, so a retry after a crash is the same event).
//! A crash before the transaction leaves the command unhandled (it is run again at the
//! next start, sealing to a new file; the one left behind is never archived); a crash
//! after it leaves the timer, whose job reads the command back from the chat to post
//! it. Entries are never edited or removed: a correction is a new entry (`--corrects
//! D5`).
//!
//! Who may: the commander, and holders of the roles the playbook lets log decisions
//! (`decisions.by`; a `loggist` role by default), in the control room or in one of the
//! incident's rooms. Sent as a reply, the message replied to is the decision and its
//! author the one who decided.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use matrix_sdk::Room;
use matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{EventId, OwnedEventId, OwnedRoomId};
use tracing::{info, warn};

use super::chat::{CommandError, Done, Incoming, send_once};
use super::ctx::{AppError, Ctx, millis_to_utc};
use crate::archive::record::{ENTRY_VERSION, SealedEntry, seal_entry};
use crate::domain::command::Command;
use crate::domain::incident::timers as timer_plan;
use crate::domain::incident::{Incident, IncidentId, State};
use crate::domain::record::{DecisionPost, EntryKind, SitrepCycle, Timeliness};
use crate::domain::schedule::Timer;
use crate::matrix::rooms::{self, notice};
use crate::store::record::{Posted, RecordEntry, Recorded};

/// How many times a decision is numbered again when another took its number first.
const NUMBER_ATTEMPTS: u32 = 8;

/// Most entries `log` lists; the earlier ones are counted.
const MAX_LISTED: usize = 30;

/// Whether `sender` may log decisions on `incident` as the holder of a role its
/// playbook lets log them.
pub(crate) fn is_loggist(ctx: &Ctx, incident: &Incident, sender: &str) -> bool {
    let Ok(playbook) = super::ctx::declared_playbook(ctx, &incident.id) else {
        return false;
    };
    if playbook.decision_loggers.is_empty() {
        return false;
    }
    ctx.store
        .roster_for_user(sender)
        .unwrap_or_default()
        .iter()
        .filter(|e| e.incident == incident.id && e.is_allowed())
        .any(|e| {
            e.roles
                .iter()
                .any(|r| playbook.decision_loggers.iter().any(|l| l.as_str() == r))
        })
}

/// Whether `sender` holds the role `incident`'s playbook asks SITREPs from.
pub(crate) fn is_reporter(ctx: &Ctx, incident: &Incident, sender: &str) -> bool {
    let Ok(playbook) = super::ctx::declared_playbook(ctx, &incident.id) else {
        return false;
    };
    let Some(sitrep) = &playbook.sitrep else {
        return false;
    };
    role_holders(ctx, &incident.id, sitrep.from.as_str())
        .iter()
        .any(|h| h == sender)
}

/// The people the roster lets in who hold `role` in `incident`, once each.
fn role_holders(ctx: &Ctx, id: &IncidentId, role: &str) -> Vec<String> {
    let mut out: Vec<String> = ctx
        .store
        .roster_for_incident(id)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.is_allowed() && e.roles.iter().any(|r| r == role))
        .map(|e| e.user)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The incident's SITREP cycle, when its playbook has one.
fn sitrep_cycle(ctx: &Ctx, incident: &Incident) -> Option<(SitrepCycle, String)> {
    let playbook = super::ctx::declared_playbook(ctx, &incident.id).ok()?;
    let s = playbook.sitrep?;
    Some((
        SitrepCycle {
            declared_at: incident.declared_at,
            every: s.every,
            grace: s.grace,
        },
        s.from.as_str().to_owned(),
    ))
}

/// A message read back from a room: who sent it, when, and its text.
struct Message {
    sender: String,
    at: DateTime<Utc>,
    text: String,
}

/// Reads the text message `event` of `room` (decrypted), or says why it cannot.
async fn read_message(room: &Room, event: &EventId) -> Result<Message, &'static str> {
    let found = room
        .event(event, None)
        .await
        .map_err(|_| "I cannot find that message in this room.")?;
    let parsed = found
        .raw()
        .deserialize()
        .map_err(|_| "I cannot read that message.")?;
    match parsed {
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            SyncRoomMessageEvent::Original(m),
        )) => Ok(Message {
            sender: m.sender.to_string(),
            at: millis_to_utc(m.origin_server_ts.get().into()),
            text: crate::domain::command::strip_reply_fallback(m.content.body())
                .trim()
                .to_owned(),
        }),
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
            SyncRoomMessageEvent::Redacted(_),
        )) => Err("That message has been deleted."),
        AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomEncrypted(_)) => {
            Err("I cannot decrypt that message.")
        }
        _ => Err("Only a message can be logged as a decision."),
    }
}

/// What a decision says, as given: the text and rationale, who decided and when, and
/// the message replied to.
struct Said {
    text: String,
    because: Option<String>,
    decided_by: String,
    decided_at: DateTime<Utc>,
    source: Option<(String, String)>,
}

/// `decision`: records, seals and posts one entry.
pub(crate) async fn decision(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    text: Option<String>,
    because: Option<String>,
    corrects: Option<u32>,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    if incident.state != State::Active {
        return Err(closed(incident));
    }
    let said = what_was_said(ctx, incoming, text, because).await?;
    if let Some(n) = corrects
        && ctx
            .store
            .record_entry_get(id, EntryKind::Decision, n)?
            .is_none()
    {
        return Err(no_such_entry(ctx, id, n));
    }
    record(ctx, incoming, incident, EntryKind::Decision, said, corrects).await
}

/// The refusal of a new entry once the incident is no longer active.
fn closed(incident: &Incident) -> CommandError {
    let id = incident.id.as_str();
    CommandError::refused_about(
        &incident.id,
        "not-active",
        format!(
            "{id} is {}: its command record is closed. `!cordon log {id}` lists its \
             decisions. Nothing was changed.",
            incident.state.as_str()
        ),
    )
}

/// `methane`: records, seals, posts and pins a METHANE report, the next version.
pub(crate) async fn methane(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    report: &crate::domain::record::Methane,
) -> Result<Done, CommandError> {
    if incident.state != State::Active {
        return Err(closed(incident));
    }
    let said = Said {
        text: report.to_text(),
        because: None,
        decided_by: incoming.sender.to_string(),
        decided_at: incoming.sent_at,
        source: None,
    };
    record(ctx, incoming, incident, EntryKind::Methane, said, None).await
}

/// `sitrep`: records, seals and posts a situation report, judged against the cycle
/// (on time, or late) when the playbook has one.
pub(crate) async fn sitrep(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    text: String,
) -> Result<Done, CommandError> {
    if incident.state != State::Active {
        return Err(closed(incident));
    }
    // Judged by when cordon received it: the cycle is cordon's clock.
    let received = ctx.now();
    let said = Said {
        text,
        because: None,
        decided_by: incoming.sender.to_string(),
        decided_at: received,
        source: None,
    };
    let done = record(ctx, incoming, incident, EntryKind::Sitrep, said, None).await?;
    if let Some((cycle, _)) = sitrep_cycle(ctx, incident) {
        let (action, details) = match cycle.judge(received) {
            Timeliness::Early => ("sitrep.early", serde_json::json!({})),
            Timeliness::OnTime(n) => (
                "sitrep.on-time",
                serde_json::json!({ "cycle": n, "due": cycle.due(n) }),
            ),
            Timeliness::Late(n, by) => (
                "sitrep.late",
                serde_json::json!({ "cycle": n, "due": cycle.due(n), "late_by_secs": by.num_seconds() }),
            ),
        };
        if let Err(e) = ctx.store.audit(
            incoming.sender.as_str(),
            action,
            Some(&incident.id),
            details,
            received,
        ) {
            warn!(error = %e, "store: auditing a SITREP's timeliness");
        }
    }
    Ok(done)
}

/// Seals, records and posts one entry of `kind`, numbered next.
async fn record(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: &Incident,
    kind: EntryKind,
    said: Said,
    corrects: Option<u32>,
) -> Result<Done, CommandError> {
    let id = &incident.id;
    let playbook = super::ctx::declared_playbook(ctx, id)?;
    let recipients = playbook.archive.recipients.clone();
    let dir = ctx.config.archive_dir.clone();
    for _ in 0..NUMBER_ATTEMPTS {
        let number = ctx.store.next_record_number(id, kind)?;
        let sealed = SealedEntry {
            v: ENTRY_VERSION,
            incident: id.as_str().to_owned(),
            kind,
            number,
            text: said.text.clone(),
            because: said.because.clone(),
            decided_by: said.decided_by.clone(),
            logged_by: incoming.sender.to_string(),
            decided_at: said.decided_at,
            // A SITREP is timed by cordon's receipt (its cycle runs on cordon's clock).
            logged_at: if kind == EntryKind::Sitrep {
                said.decided_at
            } else {
                incoming.sent_at
            },
            command_room: incoming.room.room_id().to_string(),
            command_event: incoming.event_id.to_string(),
            source_event: said.source.as_ref().map(|(_, e)| e.clone()),
            corrects,
        };
        let (dir, recipients, to_seal) = (dir.clone(), recipients.clone(), sealed.clone());
        let written = tokio::task::spawn_blocking(move || seal_entry(&dir, &to_seal, &recipients))
            .await
            .map_err(|e| AppError::Record(format!("sealing a decision: {e}")))?
            .map_err(AppError::from)?;
        let entry = RecordEntry {
            incident: id.clone(),
            kind,
            number,
            decided_by: sealed.decided_by.clone(),
            logged_by: sealed.logged_by.clone(),
            decided_at: sealed.decided_at,
            logged_at: sealed.logged_at,
            command_room: sealed.command_room.clone(),
            command_event: sealed.command_event.clone(),
            source: said.source.clone(),
            has_rationale: sealed.because.is_some(),
            corrects,
            sealed_file: written.file.file.clone(),
            sealed_sha256: written.file.sha256.clone(),
            sealed_bytes: written.file.bytes,
            content_sha256: written.content_sha256.clone(),
            posted: None,
        };
        let fallback = incoming.sent_at.max(ctx.now())
            + TimeDelta::from_std(timer_plan::RECORD_POST_FALLBACK).unwrap_or(TimeDelta::zero());
        let timer = timer_plan::record_post(id, kind, number, fallback);
        match ctx.store.record_entry(&entry, &timer)? {
            Recorded::New => {
                ctx.wake_scheduler();
                info!(incident = %id, label = %entry.label(), "command record entry recorded");
                crate::failpoint::hit("record.before-post").await;
                let posted = post(ctx, &entry, Some((&said.text, said.because.as_deref()))).await;
                return Ok(answer(ctx, incoming, &entry, posted));
            }
            Recorded::AlreadyHandled => {
                remove_orphan(&ctx.config.archive_dir, &written.file.file);
                return Err(CommandError::Dropped);
            }
            Recorded::NumberTaken => {
                remove_orphan(&ctx.config.archive_dir, &written.file.file);
            }
            Recorded::NoSuchEntry(n) => {
                remove_orphan(&ctx.config.archive_dir, &written.file.file);
                return Err(no_such_entry(ctx, id, n));
            }
        }
    }
    Err(CommandError::NotDone(
        "Several entries were being recorded at once and I could not number this one. \
         Nothing was recorded; send it again."
            .to_owned(),
    ))
}

/// The answer to the sender: nothing more when the post is in the room they wrote in
/// (the post is the answer), else where it went.
fn answer(
    ctx: &Ctx,
    incoming: &Incoming,
    entry: &RecordEntry,
    posted: Result<Posted, AppError>,
) -> Done {
    match posted {
        Ok(p) if p.room == incoming.room.room_id().as_str() => Done::Answered,
        Ok(p) => Done::Reply(format!(
            "{} as {} and {} in the command room: {}",
            match entry.kind {
                EntryKind::Decision => "Logged",
                EntryKind::Methane | EntryKind::Sitrep => "Recorded",
            },
            entry.label(),
            match entry.kind {
                EntryKind::Decision | EntryKind::Sitrep => "posted",
                EntryKind::Methane => "pinned",
            },
            rooms::event_link(&p.room, &p.event_id, ctx.server_name())
        )),
        Err(e) => {
            warn!(error = %e, label = %entry.label(), "could not post an entry yet");
            Done::Reply(format!(
                "Recorded as {}. I could not post it in the command room yet ({e}); I will \
                 keep trying.",
                entry.label()
            ))
        }
    }
}

/// A sealed file written for an entry that was not recorded; removed so that nothing
/// sealed is left that the store does not know. (Each attempt seals to a file of its
/// own, so this never touches a recorded entry's file.)
pub(super) fn remove_orphan(dir: &std::path::Path, relative: &str) {
    if let Err(e) = std::fs::remove_file(dir.join(relative)) {
        warn!(error = %e, "could not remove a sealed entry that was not recorded");
    }
}

fn no_such_entry(ctx: &Ctx, id: &IncidentId, n: u32) -> CommandError {
    let last = ctx
        .store
        .next_record_number(id, EntryKind::Decision)
        .map(|n| n - 1)
        .unwrap_or(0);
    let have = match last {
        0 => "it has no decisions yet".to_owned(),
        1 => "it has D1".to_owned(),
        n => format!("it has D1 to D{n}"),
    };
    CommandError::refused_about(
        id,
        "no-such-decision",
        format!(
            "There is no D{n} in the decision log of {} ({have}). Nothing was recorded.",
            id.as_str()
        ),
    )
}

/// The decision as given: the command's own text, or the message it replies to.
async fn what_was_said(
    ctx: &Ctx,
    incoming: &Incoming,
    text: Option<String>,
    because: Option<String>,
) -> Result<Said, CommandError> {
    let usage = "Usage: `!cordon decision <what was decided> --because <why>`, or send \
                 `!cordon decision` as a reply to the message that says what was decided. \
                 Nothing was recorded.";
    match (&incoming.reply_to, text) {
        (None, Some(text)) => Ok(Said {
            text,
            because,
            decided_by: incoming.sender.to_string(),
            decided_at: incoming.sent_at,
            source: None,
        }),
        (None, None) => Err(CommandError::NotDone(format!("What was decided? {usage}"))),
        (Some(_), Some(_)) => Err(CommandError::NotDone(format!(
            "As a reply, the message you reply to is the decision: leave the text out \
             (keep --because), or send it without replying. {usage}"
        ))),
        (Some(target), None) => {
            let message = read_message(&incoming.room, target)
                .await
                .map_err(|why| CommandError::NotDone(format!("{why} Nothing was recorded.")))?;
            if message.sender == ctx.user_id().as_str() {
                return Err(CommandError::NotDone(
                    "cordon's own messages are not decisions: reply to the message that \
                     says what was decided. Nothing was recorded."
                        .to_owned(),
                ));
            }
            if message.text.is_empty() {
                return Err(CommandError::NotDone(
                    "That message has no text to log. Nothing was recorded.".to_owned(),
                ));
            }
            if message.text.chars().count() > crate::domain::record::MAX_TEXT_CHARS {
                return Err(CommandError::NotDone(format!(
                    "That message is longer than {} characters; log a summary instead. \
                     Nothing was recorded.",
                    crate::domain::record::MAX_TEXT_CHARS
                )));
            }
            Ok(Said {
                text: message.text,
                because,
                decided_by: message.sender,
                decided_at: message.at,
                source: Some((incoming.room.room_id().to_string(), target.to_string())),
            })
        }
    }
}

/// The incident's command room (its key and handle): the room with key `command`, else
/// its first room.
fn command_room(ctx: &Ctx, id: &IncidentId) -> Result<Option<(String, Room)>, AppError> {
    let records = ctx.store.rooms(id)?;
    Ok(super::ctx::command_room_record(&records).and_then(|r| {
        let room = rooms::joined(&ctx.client, r.room_id.as_deref()?)?;
        Some((r.key.clone(), room))
    }))
}

/// Posts `entry` in the command room once, and records the post. `said` is the text
/// and rationale when the caller has them; without them (after a crash), they are read
/// back from the command (and the message it replied to).
async fn post(
    ctx: &Ctx,
    entry: &RecordEntry,
    said: Option<(&str, Option<&str>)>,
) -> Result<Posted, AppError> {
    if let Some(p) = &entry.posted {
        return Ok(p.clone());
    }
    let id = &entry.incident;
    let Some((room_key, room)) = command_room(ctx, id)? else {
        return Err(AppError::Record(
            "cordon is not in the incident's command room".to_owned(),
        ));
    };
    let read_back;
    let (text, because) = match said {
        Some((t, b)) => (Some(t.to_owned()), b.map(str::to_owned)),
        None => {
            read_back = read_back_said(ctx, entry).await;
            read_back.clone()
        }
    };
    let tz = ctx.config.time_zone;
    let body = match entry.kind {
        EntryKind::Decision => DecisionPost {
            number: entry.number,
            decided_by: &entry.decided_by,
            logged_by: &entry.logged_by,
            decided_at: entry.decided_at,
            logged_at: entry.logged_at,
            text: text.as_deref(),
            because: because.as_deref(),
            corrects: entry.corrects,
        }
        .render(tz),
        EntryKind::Methane => crate::domain::record::methane_post(
            entry.number,
            &entry.logged_by,
            entry.logged_at,
            text.as_deref(),
            tz,
        ),
        EntryKind::Sitrep => {
            let timeliness = ctx
                .store
                .incident(id)?
                .and_then(|i| sitrep_cycle(ctx, &i))
                .map(|(cycle, _)| cycle.judge(entry.logged_at));
            crate::domain::record::sitrep_post(
                entry.number,
                &entry.logged_by,
                entry.logged_at,
                timeliness,
                text.as_deref(),
                tz,
            )
        }
    };
    let key = timer_plan::record_post_id(id, &entry.label());
    let event = send_once(ctx, &room, &key, Some(id), notice(&body, &[])).await?;
    if entry.kind == EntryKind::Methane {
        // The latest report is pinned in place of the one it supersedes.
        let previous = match entry.number.checked_sub(1).filter(|n| *n > 0) {
            Some(n) => ctx
                .store
                .record_entry_get(id, EntryKind::Methane, n)?
                .and_then(|e| e.posted)
                .and_then(|p| OwnedEventId::try_from(p.event_id).ok()),
            None => None,
        };
        super::pins::pin(ctx, id, &room_key, &room, previous.as_deref(), &event).await?;
    }
    let posted = Posted {
        room: room.room_id().to_string(),
        event_id: event.to_string(),
        at: ctx.now(),
    };
    ctx.store
        .mark_record_posted(id, entry.kind, entry.number, &posted)?;
    if let Err(e) = ctx.disarm(&key) {
        // The timer fires once more and finds the entry posted.
        warn!(error = %e, "store: disarming a posted decision's timer");
    }
    info!(incident = %id, label = %entry.label(), "command record entry posted");
    Ok(posted)
}

/// The decision's text and rationale read back from the chat: the command, and the
/// message it replied to. `None` for what can no longer be read (the post then says the
/// text is in the sealed record).
async fn read_back_said(ctx: &Ctx, entry: &RecordEntry) -> (Option<String>, Option<String>) {
    let room = |id: &str| {
        OwnedRoomId::try_from(id)
            .ok()
            .and_then(|r| ctx.client.get_room(&r))
    };
    let mut text = None;
    let mut because = None;
    if let Some(r) = room(&entry.command_room)
        && let Ok(event) = OwnedEventId::try_from(entry.command_event.as_str())
        && let Ok(command) = read_message(&r, &event).await
    {
        match crate::domain::command::parse(&command.text) {
            Some(Ok(Command::Decision {
                text: t,
                because: b,
                ..
            })) => {
                text = t;
                because = b;
            }
            Some(Ok(Command::Methane { report, .. })) => text = Some(report.to_text()),
            Some(Ok(Command::Sitrep { text: t, .. })) => text = Some(t),
            _ => {}
        }
    }
    if let Some((source_room, source_event)) = &entry.source {
        text = None;
        if let Some(r) = room(source_room)
            && let Ok(event) = OwnedEventId::try_from(source_event.as_str())
            && let Ok(message) = read_message(&r, &event).await
        {
            text = Some(message.text);
        }
    }
    (text, because)
}

/// The post timer's job: posts an entry that was recorded but not posted.
pub(crate) async fn on_post_due(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let Some(id) = &timer.incident else {
        return Ok(());
    };
    let kind: EntryKind = match timer.payload.get("kind").cloned() {
        Some(k) => serde_json::from_value(k).map_err(|e| AppError::Record(e.to_string()))?,
        None => return Ok(()),
    };
    let Some(number) = timer
        .payload
        .get("number")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
    else {
        return Ok(());
    };
    let Some(entry) = ctx.store.record_entry_get(id, kind, number)? else {
        return Ok(());
    };
    if entry.posted.is_some() {
        ctx.disarm(&timer.id)?;
        return Ok(());
    }
    if ctx
        .store
        .incident(id)?
        .is_none_or(|i| i.state != State::Active)
    {
        // Frozen or gone: the entry is in the sealed record, and the room takes no posts.
        return Ok(());
    }
    post(ctx, &entry, None).await.map(|_| ())
}

/// The METHANE reminder's job (`methane: required`): until a report is given, tells the
/// commander in the control room and the command room, then again every 10 minutes.
pub(crate) async fn on_methane_due(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let Some(id) = &timer.incident else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    let again = |after: std::time::Duration| {
        let due = ctx.now() + TimeDelta::from_std(after).unwrap_or(TimeDelta::zero());
        ctx.arm(&timer_plan::methane_reminder(id, due))
    };
    match incident.state {
        State::Provisioning => return again(std::time::Duration::from_secs(60)),
        State::Active => {}
        _ => return Ok(()),
    }
    let given = ctx
        .store
        .record_entries(id)?
        .iter()
        .any(|e| e.kind == EntryKind::Methane);
    if given {
        return Ok(());
    }
    let body = format!(
        "{commander}: no METHANE report yet for {name} ({id}), declared at {at}. Send \
         `!cordon methane` followed by seven lines: M: declared or standby, E: exact \
         location, T: type, H: hazards, A: access, N: number and severity of casualties, \
         E: emergency services present and required.",
        commander = incident.commander,
        name = incident.display_name,
        id = id.as_str(),
        at = crate::domain::incident::plan::format_time(incident.declared_at, ctx.config.time_zone),
    );
    let mention = super::chat::user_ids(&[incident.commander.as_str()]);
    let due = match timer.schedule {
        crate::domain::schedule::Schedule::At(at) => at.timestamp(),
        _ => 0,
    };
    let mut targets = vec![incident.control_room.clone()];
    if let Some((_, room)) = command_room(ctx, id)? {
        targets.push(room.room_id().to_string());
    }
    for (n, target) in targets.iter().enumerate() {
        if let Some(room) = rooms::joined(&ctx.client, target) {
            let key = format!("{}/methane/{due}/{n}", id.as_str());
            send_once(ctx, &room, &key, Some(id), notice(&body, &mention)).await?;
        }
    }
    info!(incident = %id, "METHANE reminder sent");
    again(timer_plan::METHANE_EVERY)
}

/// The `n` of a SITREP timer.
fn cycle_of(timer: &Timer) -> Option<u32> {
    timer
        .payload
        .get("cycle")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

/// The SITREP cycle's job: asks the role for SITREP `n` in the command room, then arms
/// its grace and the next cycle.
pub(crate) async fn on_sitrep_due(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let (Some(id), Some(n)) = (&timer.incident, cycle_of(timer)) else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    match incident.state {
        State::Provisioning => {
            let due = ctx.now() + TimeDelta::minutes(1);
            return ctx.arm(&timer_plan::sitrep_due(id, n, due));
        }
        State::Active => {}
        _ => return Ok(()),
    }
    let Some((cycle, role)) = sitrep_cycle(ctx, &incident) else {
        return Ok(());
    };
    let tz = ctx.config.time_zone;
    let holders = role_holders(ctx, id, &role);
    let grace_end = cycle.due(n) + TimeDelta::from_std(cycle.grace).unwrap_or(TimeDelta::zero());
    let body = format!(
        "SITREP {n} is due now ({due}) from {role}: {who}. Send `!cordon sitrep <the situation \
         now>` by {by}.",
        due = crate::domain::incident::plan::format_time(cycle.due(n), tz),
        who = if holders.is_empty() {
            "nobody holds the role; the commander, please".to_owned()
        } else {
            holders.join(", ")
        },
        by = crate::domain::incident::plan::format_time(grace_end, tz),
    );
    let names: Vec<&str> = holders.iter().map(String::as_str).collect();
    if let Some((_, room)) = command_room(ctx, id)? {
        let key = format!("{}/sitrep/{n}/ask", id.as_str());
        send_once(
            ctx,
            &room,
            &key,
            Some(id),
            notice(&body, &super::chat::user_ids(&names)),
        )
        .await?;
    }
    ctx.arm(&timer_plan::sitrep_grace(id, n, grace_end))?;
    ctx.arm(&timer_plan::sitrep_due(id, n + 1, cycle.due(n + 1)))?;
    info!(incident = %id, cycle = n, "SITREP asked for");
    Ok(())
}

/// The grace's job: when SITREP `n` has not come within its grace, mentions the role
/// holders and the commander in the command room, says so in the control room, and
/// records it (`sitrep.missed`).
pub(crate) async fn on_sitrep_grace(ctx: &Arc<Ctx>, timer: &Timer) -> Result<(), AppError> {
    let (Some(id), Some(n)) = (&timer.incident, cycle_of(timer)) else {
        return Ok(());
    };
    let Some(incident) = ctx.store.incident(id)? else {
        return Ok(());
    };
    if incident.state != State::Active {
        return Ok(());
    }
    let Some((cycle, role)) = sitrep_cycle(ctx, &incident) else {
        return Ok(());
    };
    let answered = ctx
        .store
        .record_entries(id)?
        .iter()
        .filter(|e| e.kind == EntryKind::Sitrep)
        .any(|e| cycle.judge(e.logged_at) == Timeliness::OnTime(n));
    if answered {
        return Ok(());
    }
    let tz = ctx.config.time_zone;
    let due = crate::domain::incident::plan::format_time(cycle.due(n), tz);
    let holders = role_holders(ctx, id, &role);
    let mut mention: Vec<&str> = holders.iter().map(String::as_str).collect();
    mention.push(incident.commander.as_str());
    let room_body = format!(
        "SITREP {n} was due at {due} from {role} and has not come: {who}. Send `!cordon \
         sitrep <the situation now>` as soon as you can; it is recorded as late.",
        who = mention.join(", "),
    );
    let control_body = format!(
        "SITREP {n} of {name} ({id}) is late: due at {due} from {role}, nothing within {grace}. \
         I reminded {who} in the command room.",
        name = incident.display_name,
        id = id.as_str(),
        grace = humantime::format_duration(cycle.grace),
        who = mention.join(", "),
    );
    // Recorded before it is said, once per cycle.
    let key = format!("{}/sitrep/{n}/missed", id.as_str());
    if ctx.store.outbox_get(&format!("{key}/0"))?.is_none() {
        ctx.store.audit(
            crate::app::ctx::ACTOR,
            "sitrep.missed",
            Some(id),
            serde_json::json!({ "cycle": n, "due": cycle.due(n), "role": role, "holders": holders }),
            ctx.now(),
        )?;
    }
    let users = super::chat::user_ids(&mention);
    if let Some((_, room)) = command_room(ctx, id)? {
        send_once(
            ctx,
            &room,
            &format!("{key}/0"),
            Some(id),
            notice(&room_body, &users),
        )
        .await?;
    }
    if let Some(control) = rooms::joined(&ctx.client, &incident.control_room) {
        send_once(
            ctx,
            &control,
            &format!("{key}/1"),
            Some(id),
            notice(&control_body, &users),
        )
        .await?;
    }
    info!(incident = %id, cycle = n, "SITREP missed, raised");
    Ok(())
}

/// `log`: the incident's decision log, newest last: number, time, who, what it
/// corrects, and the post's text when it can still be read.
pub(crate) async fn log(ctx: &Arc<Ctx>, incident: &Incident) -> Result<Done, CommandError> {
    let id = &incident.id;
    let entries: Vec<RecordEntry> = ctx
        .store
        .record_entries(id)?
        .into_iter()
        .filter(|e| e.kind == EntryKind::Decision)
        .collect();
    if entries.is_empty() {
        return Ok(Done::Reply(format!(
            "The decision log of {} is empty. `!cordon decision <what was decided> --because \
             <why>` logs one.",
            id.as_str()
        )));
    }
    let tz = ctx.config.time_zone;
    let mut out = format!(
        "Decision log of {} ({}), {} entr{}:",
        id.as_str(),
        incident.display_name,
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    let skipped = entries.len().saturating_sub(MAX_LISTED);
    if skipped > 0 {
        out.push_str(&format!(
            "\n… {skipped} earlier (all are in the sealed record)"
        ));
    }
    for entry in entries.iter().skip(skipped) {
        let corrected_by: Vec<String> = entries
            .iter()
            .filter(|e| e.corrects == Some(entry.number))
            .map(RecordEntry::label)
            .collect();
        out.push_str(&format!(
            "\n- {} · {} · decided by {}",
            entry.label(),
            crate::domain::incident::plan::format_time(entry.logged_at, tz),
            entry.decided_by
        ));
        if entry.logged_by != entry.decided_by {
            out.push_str(&format!(", logged by {}", entry.logged_by));
        }
        if let Some(n) = entry.corrects {
            out.push_str(&format!(" · corrects D{n}"));
        }
        if !corrected_by.is_empty() {
            out.push_str(&format!(" · corrected by {}", corrected_by.join(", ")));
        }
        match &entry.posted {
            Some(p) => {
                let link = rooms::event_link(&p.room, &p.event_id, ctx.server_name());
                match posted_text(ctx, p).await {
                    Some(text) => out.push_str(&format!("\n  {text} ({link})")),
                    None => out.push_str(&format!(
                        "\n  {link} (no longer in the chat: the text is in the sealed record)"
                    )),
                }
            }
            None => out.push_str("\n  (not posted yet)"),
        }
    }
    let reports: Vec<RecordEntry> = ctx
        .store
        .record_entries(id)?
        .into_iter()
        .filter(|e| e.kind == EntryKind::Methane)
        .collect();
    if let Some(latest) = reports.last() {
        out.push_str(&format!(
            "\nMETHANE: v{} from {} at {}, pinned in the command room ({} version(s), all kept)",
            latest.number,
            latest.logged_by,
            crate::domain::incident::plan::format_time(latest.logged_at, tz),
            reports.len()
        ));
    }
    Ok(Done::Reply(out))
}

/// The decision's words from cordon's own post, if it can still be read: the lines
/// after the heading, on one line, cut short.
async fn posted_text(ctx: &Ctx, posted: &Posted) -> Option<String> {
    let room = rooms::joined(&ctx.client, &posted.room)?;
    let event = OwnedEventId::try_from(posted.event_id.as_str()).ok()?;
    let message = read_message(&room, &event).await.ok()?;
    let words: String = message.text.lines().skip(1).collect::<Vec<_>>().join(" / ");
    let mut short: String = words.chars().take(160).collect();
    if words.chars().count() > 160 {
        short.push('…');
    }
    (!short.is_empty()).then_some(short)
}
