//! Clinical advice: flagged with a 🩺 reaction or `!cordon advice [<link>] [--patient
//! <NHS number>]` (the link, or the message the command replies to), marked transcribed
//! into the patient record with a ✅ reaction or `!cordon transcribed <link>`. cordon
//! records who and when for both (audited), counts what is outstanding in `status`,
//! names it by link in reminders and at stand-down, and reminds the author once before
//! retention deletes a message that is still outstanding.
//!
//! Flagging reads the message once and seals what the patient record needs (its text,
//! author, time, the message it answers, the patient's NHS number) to the records
//! officers (`archive::advice`) before the store records the flag, which keeps the file
//! and its hashes, never the text or the number; a sealed file whose record did not
//! commit is removed. `--patient` for advice already flagged seals it again with the
//! number. A command that gave an NHS number is redacted once the number is sealed, so
//! that the number is not left in the chat. The archive's FHIR bundle is made from the
//! sealed items (`archive::fhir`), and delivered by `app::fhir` when configured.
//!
//! Who may: a member of the incident room on its roster (or the commander). The
//! commands, like every command, need a verified device. Reactions cannot: Matrix
//! clients (Element, matrix-sdk) send reactions unencrypted, so a reaction's sender is
//! vouched for by the homeserver alone, which can send one in anyone's name. cordon
//! takes a 🩺 from roster members all the same (a forged flag only adds a reminder),
//! but a ✅ is recorded as *unconfirmed*: the item stays outstanding (in `status`, in
//! the reminder, which still goes out, and in the stand-down notice, marked as such)
//! until `!cordon transcribed <link>` from a verified device confirms it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use matrix_sdk::Room;
use matrix_sdk::ruma::events::reaction::OriginalSyncReactionEvent;
use matrix_sdk::ruma::events::room::message::SyncRoomMessageEvent;
use matrix_sdk::ruma::events::{AnySyncMessageLikeEvent, AnySyncTimelineEvent};
use matrix_sdk::ruma::{EventId, OwnedEventId, OwnedRoomId, UserId};
use tracing::{info, warn};

use super::chat::{CommandError, Done, Incoming, reply_target, send_once, user_ids};
use super::ctx::{AppError, Ctx, incident_room, millis_to_utc};
use super::record::remove_orphan;
use crate::archive::advice::{ADVICE_VERSION, SealedAdvice, seal_advice};
use crate::domain::command::EventRef;
use crate::domain::incident::plan::format_time;
use crate::domain::incident::timers as timer_plan;
use crate::domain::incident::{Incident, State};
use crate::domain::pid::NhsNumber;
use crate::matrix::rooms::{self, notice};
use crate::store::RoomRecord;
use crate::store::advice::{
    AdviceRecord, Mark, MarkedVia, Resealed, SealedRef, TranscribedOutcome,
};

/// The reaction that flags a message as clinical advice.
pub const FLAG_KEY: &str = "🩺";
/// The reaction that marks advice transcribed.
pub const TRANSCRIBED_KEY: &str = "✅";

/// Most advice links listed in one message; the rest are counted.
const MAX_LISTED: usize = 10;

/// What a reaction key means to cordon, ignoring emoji presentation selectors.
fn reaction_meaning(key: &str) -> Option<Kind> {
    match key.trim_end_matches('\u{FE0F}') {
        k if k == FLAG_KEY => Some(Kind::Flag),
        k if k == TRANSCRIBED_KEY || k == "✔" || k == "☑" => Some(Kind::Transcribed),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Flag,
    Transcribed,
}

/// True for someone cordon let into the room (or the incident's commander).
fn is_member(ctx: &Ctx, record: &RoomRecord, incident: &Incident, user: &UserId) -> bool {
    if incident.commander == user.as_str() {
        return true;
    }
    let Some(room_id) = record.room_id.as_deref() else {
        return false;
    };
    ctx.store
        .roster_entry(room_id, user.as_str())
        .ok()
        .flatten()
        .is_some_and(|e| e.is_allowed())
}

/// A 🩺 or ✅ reaction in an incident room.
pub(crate) async fn on_reaction(ctx: Arc<Ctx>, ev: OriginalSyncReactionEvent, room: Room) {
    if ev.sender == ctx.config.user {
        return;
    }
    let Some(kind) = reaction_meaning(&ev.content.relates_to.key) else {
        return;
    };
    let Some((record, incident)) = incident_room(&ctx, room.room_id().as_str()) else {
        return;
    };
    if incident.state != State::Active || !is_member(&ctx, &record, &incident, &ev.sender) {
        return;
    }
    let marking = Marking {
        record: &record,
        incident: &incident,
        room: &room,
        target: &ev.content.relates_to.event_id,
        by: &ev.sender,
        via: MarkedVia::Reaction,
    };
    if let Err(why) = marking.apply(&ctx, kind, None).await {
        info!(incident = %incident.id, why, "reaction not recorded");
    }
}

/// What came of a flag or a mark, as the sender reads it.
type Outcome = Result<String, String>;

/// One flag or mark: someone, in an incident room, about one message.
#[derive(Clone, Copy)]
struct Marking<'a> {
    record: &'a RoomRecord,
    incident: &'a Incident,
    room: &'a Room,
    target: &'a EventId,
    by: &'a UserId,
    via: MarkedVia,
}

/// The message flagged, as read from the room when it was flagged.
struct Message {
    author: String,
    sent_at: DateTime<Utc>,
    /// Its text; `None` when cordon cannot read it (a message it could not decrypt).
    text: Option<String>,
    /// The message it replies to.
    in_reply_to: Option<String>,
}

impl Marking<'_> {
    async fn apply(self, ctx: &Arc<Ctx>, kind: Kind, patient: Option<&NhsNumber>) -> Outcome {
        match kind {
            Kind::Flag => self.flag(ctx, patient).await,
            Kind::Transcribed => self.transcribed(ctx).await,
        }
    }

    fn link(self, ctx: &Ctx) -> String {
        rooms::event_link(
            self.room.room_id().as_str(),
            self.target.as_str(),
            ctx.server_name(),
        )
    }

    /// Flags the message as advice (sealing it, with the patient when given), and arms
    /// its reminder. Advice already flagged is sealed again when a patient is given.
    async fn flag(self, ctx: &Arc<Ctx>, patient: Option<&NhsNumber>) -> Outcome {
        let (incident, record) = (self.incident, self.record);
        let link = self.link(ctx);
        let already = || format!("{link} is already flagged as clinical advice.");
        let existing = ctx
            .store
            .advice(&incident.id, self.target.as_str())
            .map_err(|e| store_trouble(&e))?;
        if let Some(existing) = existing {
            return match patient {
                None => Ok(already()),
                Some(patient) => self.add_patient(ctx, &existing, patient).await,
            };
        }
        let message = self.read(ctx).await?;
        let mut unflagged = self.fresh_record(ctx, &message);
        let sealed = self
            .seal(ctx, &unflagged, &message, patient.map(NhsNumber::digits))
            .await?;
        unflagged.sealed = Some(sealed.clone());
        let new = ctx.store.flag_advice(&unflagged).map_err(|e| {
            remove_orphan(&ctx.config.archive_dir, &sealed.file);
            store_trouble(&e)
        })?;
        if !new {
            // Flagged by someone else meanwhile: that record gets the patient.
            remove_orphan(&ctx.config.archive_dir, &sealed.file);
            let flagged = ctx
                .store
                .advice(&incident.id, self.target.as_str())
                .map_err(|e| store_trouble(&e))?;
            return match (flagged, patient) {
                (Some(flagged), Some(patient)) => self.add_patient(ctx, &flagged, patient).await,
                _ => Ok(already()),
            };
        }
        let playbook =
            super::ctx::declared_playbook(ctx, &incident.id).map_err(|e| store_trouble(&e))?;
        let timer = timer_plan::advice(
            &incident.id,
            &record.key,
            self.target.as_str(),
            unflagged.sent_at,
            playbook.retention.messages,
        );
        ctx.arm(&timer).map_err(|e| store_trouble(&e))?;
        info!(incident = %incident.id, room = %record.key, "advice flagged");
        let for_patient = if patient.is_some() {
            " for the patient you named (the NHS number is sealed for the records \
             officers with the advice, not kept in cordon's store)"
        } else {
            ""
        };
        Ok(format!(
            "Flagged as clinical advice{for_patient}: {link}. Once it is in the patient \
             record, send `!cordon transcribed {link}` (a ✅ reaction is noted, but cannot \
             be confirmed)."
        ))
    }

    /// Seals flagged advice again, now naming `patient` (a patient added, or another
    /// one given), and removes the copy it replaces. The message is read again: if
    /// cordon can no longer read it, the copy it has stays as it is.
    async fn add_patient(
        self,
        ctx: &Arc<Ctx>,
        existing: &AdviceRecord,
        patient: &NhsNumber,
    ) -> Outcome {
        let link = self.link(ctx);
        let message = self.read(ctx).await?;
        let sealed = self
            .seal(ctx, existing, &message, Some(patient.digits()))
            .await?;
        let outcome = ctx
            .store
            .reseal_advice(
                &self.incident.id,
                self.target.as_str(),
                &sealed,
                self.by.as_str(),
                ctx.now(),
            )
            .map_err(|e| {
                remove_orphan(&ctx.config.archive_dir, &sealed.file);
                store_trouble(&e)
            })?;
        match outcome {
            Resealed::Replaced(old) => {
                if let Some(old) = old {
                    remove_orphan(&ctx.config.archive_dir, &old);
                }
                info!(incident = %self.incident.id, room = %self.record.key,
                      "advice sealed again with a patient");
                let had = existing.sealed.as_ref().is_some_and(|s| s.patient);
                Ok(format!(
                    "{} the patient of the clinical advice {link}: the NHS number is sealed \
                     for the records officers with it, not kept in cordon's store.",
                    if had { "Replaced" } else { "Added" }
                ))
            }
            Resealed::NotFlagged => {
                remove_orphan(&ctx.config.archive_dir, &sealed.file);
                Err("That message is no longer flagged as advice.".to_owned())
            }
        }
    }

    /// Seals `record`'s message (as read now) and `patient` to the incident's records
    /// recipients, under the archive directory.
    async fn seal(
        self,
        ctx: &Ctx,
        record: &AdviceRecord,
        message: &Message,
        patient: Option<&str>,
    ) -> Result<SealedRef, String> {
        let playbook =
            super::ctx::declared_playbook(ctx, &self.incident.id).map_err(|e| store_trouble(&e))?;
        let item = SealedAdvice {
            v: ADVICE_VERSION,
            incident: record.incident.as_str().to_owned(),
            room_key: record.room_key.clone(),
            room_id: record.room_id.clone(),
            event_id: record.event_id.clone(),
            author: record.author.clone(),
            author_registration: ctx.config.fhir.registration_of(&record.author),
            sent_at: record.sent_at,
            text: message.text.clone(),
            in_reply_to: message.in_reply_to.clone(),
            patient: patient.map(str::to_owned),
            flagged_by: record.flagged.by.clone(),
            flagged_at: record.flagged.at,
            salt: hex::encode(rand::random::<[u8; 16]>()),
        };
        let dir = ctx.config.archive_dir.clone();
        let recipients = super::fhir::advice_recipients(ctx, &playbook);
        let written = tokio::task::spawn_blocking(move || seal_advice(&dir, &item, &recipients))
            .await
            .map_err(|e| store_trouble(&e))?
            .map_err(|e| {
                warn!(error = %e, "advice: sealing");
                "I could not seal it for the records officers; nothing was changed. Try \
                 again in a minute."
                    .to_owned()
            })?;
        Ok(SealedRef {
            file: written.file.file,
            sha256: written.file.sha256,
            bytes: written.file.bytes,
            content_sha256: written.content_sha256,
            patient: patient.is_some(),
        })
    }

    /// Marks the message transcribed, and stops its reminder.
    async fn transcribed(self, ctx: &Arc<Ctx>) -> Outcome {
        let link = self.link(ctx);
        let existing = ctx
            .store
            .advice(&self.incident.id, self.target.as_str())
            .map_err(|e| store_trouble(&e))?;
        // A message nobody flagged is recorded as flagged by this mark: sealed first.
        let (unflagged, sealed_here) = match existing {
            Some(existing) => (existing, None),
            None => {
                let message = self.read(ctx).await?;
                let mut unflagged = self.fresh_record(ctx, &message);
                let sealed = self.seal(ctx, &unflagged, &message, None).await?;
                let file = sealed.file.clone();
                unflagged.sealed = Some(sealed);
                (unflagged, Some(file))
            }
        };
        let mark = Mark {
            by: self.by.to_string(),
            at: ctx.now(),
            via: self.via,
        };
        let outcome = ctx.store.mark_transcribed(&unflagged, &mark);
        // The copy sealed here stays only if the store now names it (this mark
        // recorded the advice, rather than another flag at the same moment).
        if let Some(file) = sealed_here
            && !names_sealed_copy(ctx, &self, &file)
        {
            remove_orphan(&ctx.config.archive_dir, &file);
        }
        match outcome.map_err(|e| store_trouble(&e))? {
            TranscribedOutcome::Already(existing) => {
                let who = existing.transcribed.map(|m| m.by).unwrap_or_default();
                Ok(format!("{link} was already marked transcribed by {who}."))
            }
            // A ✅ is recorded but confirms nothing: the reminder stays armed.
            TranscribedOutcome::Marked(_) if self.via == MarkedVia::Reaction => {
                info!(incident = %self.incident.id, room = %self.record.key,
                      "advice marked transcribed by reaction (unconfirmed)");
                Ok(format!(
                    "Recorded your ✅ on {link}, unconfirmed: reactions are not encrypted. \
                     Send `!cordon transcribed {link}` to confirm it."
                ))
            }
            TranscribedOutcome::Marked(_) => {
                let id = &self.incident.id;
                if let Err(e) = ctx.disarm(&timer_plan::advice_id(id, self.target.as_str())) {
                    // The reminder then fires once more and finds the advice transcribed.
                    warn!(error = %e, "store: disarming a transcribed advice's reminder");
                }
                info!(incident = %id, room = %self.record.key, "advice marked transcribed");
                Ok(format!("Marked transcribed: {link}. Thank you."))
            }
        }
    }

    /// The record for the message as if it were flagged now: its author and time come
    /// from the event as the homeserver serves it.
    fn fresh_record(self, ctx: &Ctx, message: &Message) -> AdviceRecord {
        AdviceRecord {
            incident: self.incident.id.clone(),
            room_key: self.record.key.clone(),
            room_id: self.room.room_id().to_string(),
            event_id: self.target.to_string(),
            author: message.author.clone(),
            sent_at: message.sent_at,
            flagged: Mark {
                by: self.by.to_string(),
                at: ctx.now(),
                via: self.via,
            },
            transcribed: None,
            reminded_at: None,
            sealed: None,
        }
    }

    /// Reads the message from the room (decrypted when cordon can): its author, time,
    /// text and what it replies to. Refuses what is not a message, cordon's own and a
    /// deleted one.
    async fn read(self, ctx: &Ctx) -> Result<Message, String> {
        let event = self
            .room
            .event(self.target, None)
            .await
            .map_err(|_| "I cannot find that message in this room.".to_owned())?;
        let Ok(parsed) = event.raw().deserialize() else {
            return Err("I cannot read that event.".to_owned());
        };
        let is_message = matches!(
            &parsed,
            AnySyncTimelineEvent::MessageLike(
                AnySyncMessageLikeEvent::RoomMessage(_) | AnySyncMessageLikeEvent::RoomEncrypted(_)
            )
        );
        if !is_message {
            return Err("Only a message can be flagged as advice.".to_owned());
        }
        if parsed.sender() == ctx.user_id() {
            return Err("cordon's own messages are not clinical advice.".to_owned());
        }
        if let AnySyncTimelineEvent::MessageLike(m) = &parsed
            && m.original_content().is_none()
        {
            return Err("That message has been deleted.".to_owned());
        }
        let (text, in_reply_to) = match &parsed {
            AnySyncTimelineEvent::MessageLike(AnySyncMessageLikeEvent::RoomMessage(
                SyncRoomMessageEvent::Original(m),
            )) => (
                Some(
                    crate::domain::command::strip_reply_fallback(m.content.body())
                        .trim()
                        .to_owned(),
                ),
                reply_target(&m.content).map(|e| e.to_string()),
            ),
            _ => (None, None),
        };
        Ok(Message {
            author: parsed.sender().to_string(),
            sent_at: millis_to_utc(parsed.origin_server_ts().get().into()),
            text,
            in_reply_to,
        })
    }
}

/// True when the store's record of the marking's advice names `file` as its sealed
/// copy (so it must not be removed).
fn names_sealed_copy(ctx: &Ctx, marking: &Marking<'_>, file: &str) -> bool {
    ctx.store
        .advice(&marking.incident.id, marking.target.as_str())
        .ok()
        .flatten()
        .and_then(|a| a.sealed)
        .is_some_and(|s| s.file == file)
}

fn store_trouble(e: &dyn std::fmt::Display) -> String {
    warn!(error = %e, "advice: store");
    "I could not record it in my store; nothing was changed. Try again in a minute.".to_owned()
}

/// `advice <link>` and `transcribed <link>`, in an incident room or in the control room
/// (with a link that names the incident room).
pub(crate) async fn command(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    event: Option<&EventRef>,
    patient: Option<&NhsNumber>,
    mark: bool,
) -> Result<Done, CommandError> {
    // The message: the link's, else the one the command replies to.
    let (room, target): (Option<Room>, OwnedEventId) = match (event, &incoming.reply_to) {
        (Some(event), _) => (
            match &event.room {
                None => Some(incoming.room.clone()),
                Some(r) => OwnedRoomId::try_from(r.as_str())
                    .ok()
                    .and_then(|id| ctx.client.get_room(&id)),
            },
            event.event.clone(),
        ),
        (None, Some(reply_to)) => (Some(incoming.room.clone()), reply_to.clone()),
        (None, None) => {
            return Err(CommandError::NotDone(
                "Which message? Give its link (Options → Share → Copy link): `!cordon advice \
                 <link> [--patient <NHS number>]`, or send the command as a reply to the \
                 message. Nothing was changed."
                    .to_owned(),
            ));
        }
    };
    let found = room
        .and_then(|room| incident_room(ctx, room.room_id().as_str()).map(|(r, i)| (room, r, i)));
    let Some((room, record, incident)) = found else {
        return Err(CommandError::refused(
            "not-incident-room",
            "That message is not in one of the incident rooms. Use the message's link \
             (Share → Copy link), or send the command in the incident room. Nothing was \
             changed.",
        ));
    };
    if incident.state != State::Active {
        let text = format!(
            "{} is {}: advice can no longer be flagged or marked there.",
            incident.id.as_str(),
            incident.state.as_str()
        );
        return Err(CommandError::refused_about(
            &incident.id,
            "not-active",
            text,
        ));
    }
    if !is_member(ctx, &record, &incident, &incoming.sender) && !ctx.is_operator(&incoming.sender) {
        return Err(CommandError::refused_about(
            &incident.id,
            "not-member",
            "Only members of that incident room can flag advice or mark it transcribed. \
             Nothing was changed.",
        ));
    }
    let marking = Marking {
        record: &record,
        incident: &incident,
        room: &room,
        target: &target,
        by: &incoming.sender,
        via: MarkedVia::Command,
    };
    let kind = if mark { Kind::Transcribed } else { Kind::Flag };
    let outcome = marking.apply(ctx, kind, patient).await;
    match outcome {
        Ok(text) if patient.is_some() => Ok(Done::Reply(format!(
            "{text} {}",
            remove_command(incoming).await
        ))),
        Ok(text) => Ok(Done::Reply(text)),
        Err(text) => Err(CommandError::refused_about(
            &incident.id,
            "advice",
            format!("{text} Nothing was changed."),
        )),
    }
}

/// Redacts the command that gave an NHS number, once the number is sealed, so that it
/// is not left in the chat's history; says which happened.
async fn remove_command(incoming: &Incoming) -> &'static str {
    let txn = matrix_sdk::ruma::OwnedTransactionId::from(format!(
        "cordon-nhs-{}",
        incoming.event_id.as_str().trim_start_matches('$')
    ));
    match incoming
        .room
        .redact(
            &incoming.event_id,
            Some("the NHS number is sealed for the records officers"),
            Some(txn),
        )
        .await
    {
        Ok(_) => "I removed your command from the chat, so the number is not left in it.",
        Err(e) => {
            warn!(error = %e, "could not redact a command holding an NHS number");
            "I could not remove your command from the chat: please delete it, since it \
             holds the NHS number."
        }
    }
}

/// The advice timer's job: reminds the author, once, of advice still not marked
/// transcribed before retention deletes it.
pub(crate) async fn on_due(
    ctx: &Arc<Ctx>,
    timer: &crate::domain::schedule::Timer,
) -> Result<(), AppError> {
    let (Some(id), Some(event)) = (
        &timer.incident,
        timer.payload.get("event").and_then(|e| e.as_str()),
    ) else {
        return Ok(());
    };
    if ctx
        .store
        .incident(id)?
        .is_none_or(|i| i.state != State::Active)
    {
        return Ok(());
    };
    let Some(advice) = ctx.store.advice(id, event)? else {
        return Ok(());
    };
    if !advice.is_outstanding() || advice.reminded_at.is_some() {
        return Ok(());
    }
    let Some(room) = rooms::joined(&ctx.client, &advice.room_id) else {
        return Ok(());
    };
    let playbook = super::ctx::declared_playbook(ctx, id)?;
    let deleted_at = advice.sent_at
        + chrono::TimeDelta::from_std(playbook.retention.messages)
            .unwrap_or(chrono::TimeDelta::MAX);
    let link = rooms::event_link(&advice.room_id, &advice.event_id, ctx.server_name());
    let tz = ctx.config.time_zone;
    let body = match advice.unconfirmed() {
        None => format!(
            "{author}: the clinical advice you gave at {sent} ({link}) is not marked \
             transcribed. It is deleted from this chat at about {deleted}. Transcribe it \
             into the patient record, attributed, then send `!cordon transcribed {link}`.",
            author = advice.author,
            sent = format_time(advice.sent_at, tz),
            deleted = format_time(deleted_at, tz),
        ),
        Some(mark) => format!(
            "{author}: the clinical advice you gave at {sent} ({link}) has a ✅ from {by}, \
             which cordon cannot confirm (reactions are not encrypted). It is deleted from \
             this chat at about {deleted}. Once it is in the patient record, attributed, \
             send `!cordon transcribed {link}` to confirm it.",
            author = advice.author,
            by = mark.by,
            sent = format_time(advice.sent_at, tz),
            deleted = format_time(deleted_at, tz),
        ),
    };
    let mention = user_ids(&[advice.author.as_str()]);
    send_once(ctx, &room, &timer.id, Some(id), notice(&body, &mention)).await?;
    ctx.store.mark_advice_reminded(id, event, ctx.now())?;
    info!(incident = %id, "advice reminder sent");
    Ok(())
}

/// How many advice items of `incident` are not marked transcribed.
pub(crate) fn outstanding_count(ctx: &Ctx, incident: &Incident) -> usize {
    ctx.store
        .advice_for(&incident.id)
        .map(|list| list.iter().filter(|a| a.is_outstanding()).count())
        .unwrap_or(0)
}

/// How many of those have an unconfirmed ✅ (a reaction, which cannot be confirmed).
pub(crate) fn unconfirmed_count(ctx: &Ctx, incident: &Incident) -> usize {
    ctx.store
        .advice_for(&incident.id)
        .map(|list| list.iter().filter(|a| a.unconfirmed().is_some()).count())
        .unwrap_or(0)
}

/// The advice not yet marked transcribed, in one room or in all, as lines to append to
/// a message (empty when there is none): links and authors, never content.
pub(crate) fn outstanding_lines(ctx: &Ctx, incident: &Incident, room_key: Option<&str>) -> String {
    let list: Vec<AdviceRecord> = ctx
        .store
        .advice_for(&incident.id)
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.is_outstanding())
        .filter(|a| room_key.is_none_or(|k| a.room_key == k))
        .collect();
    if list.is_empty() {
        return String::new();
    }
    let tz = ctx.config.time_zone;
    let mut out = format!("\nAdvice not yet marked transcribed ({}):", list.len());
    for a in list.iter().take(MAX_LISTED) {
        let unconfirmed = a
            .unconfirmed()
            .map(|m| format!("; ✅ by {}, unconfirmed", m.by))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n- {} (from {}, {}{unconfirmed})",
            rooms::event_link(&a.room_id, &a.event_id, ctx.server_name()),
            a.author,
            format_time(a.sent_at, tz)
        ));
    }
    if list.iter().any(|a| a.unconfirmed().is_some()) {
        out.push_str(
            "\nA ✅ reaction is not encrypted, so cordon cannot confirm who sent it: \
             confirm with `!cordon transcribed <link>`.",
        );
    }
    if list.len() > MAX_LISTED {
        out.push_str(&format!("\n… and {} more", list.len() - MAX_LISTED));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions_are_read_with_or_without_the_emoji_selector() {
        assert_eq!(reaction_meaning("🩺"), Some(Kind::Flag));
        assert_eq!(reaction_meaning("🩺\u{FE0F}"), Some(Kind::Flag));
        assert_eq!(reaction_meaning("✅"), Some(Kind::Transcribed));
        assert_eq!(reaction_meaning("✔\u{FE0F}"), Some(Kind::Transcribed));
        assert_eq!(reaction_meaning("👍"), None);
        assert_eq!(reaction_meaning("🩺🩺"), None);
    }
}
