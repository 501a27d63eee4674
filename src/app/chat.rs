//! Talking in chat, once: a command as it arrived ([`Incoming`]), its answer and its
//! audited refusal, and every message cordon sends, each under an idempotency key
//! stored before the send ([`send_once`]). Every workflow beside it answers through
//! these; they import nothing of the workflows.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use matrix_sdk::Room;
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedEventId, OwnedUserId};
use serde_json::json;
use tracing::{error, warn};

use super::ctx::{AppError, Ctx};
use crate::domain::command::{Command, Rejection};
use crate::domain::incident::IncidentId;
use crate::matrix::MatrixError;
use crate::matrix::rooms::{self, notice};
use crate::store::Effect;
use crate::trust::sender::SenderDevice;

/// A command message as it arrived.
pub struct Incoming {
    /// The room it was sent in.
    pub room: Room,
    /// Who sent it.
    pub sender: OwnedUserId,
    /// Whether the sending device may change anything.
    pub device: SenderDevice,
    /// Its event id (the deduplication key).
    pub event_id: OwnedEventId,
    /// When the sender's server received it.
    pub sent_at: DateTime<Utc>,
    /// The message's text, as decrypted.
    pub body: String,
    /// How it was encrypted, if it was.
    pub encryption: Option<EncryptionInfo>,
    /// The parsed command, or why it does not parse.
    pub parsed: Result<Command, Rejection>,
    /// The message it replies to, when it was sent as a reply.
    pub reply_to: Option<OwnedEventId>,
}

/// The message a room message replies to, if it is a reply (an `m.in_reply_to`
/// relation, threaded or not).
pub(crate) fn reply_target(
    content: &matrix_sdk::ruma::events::room::message::RoomMessageEventContent,
) -> Option<OwnedEventId> {
    use matrix_sdk::ruma::events::room::message::Relation;
    match content.relates_to.as_ref()? {
        Relation::Reply(reply) => Some(reply.in_reply_to.event_id.clone()),
        // In a thread, a fallback reply only points at the thread's latest message.
        Relation::Thread(thread) if !thread.is_falling_back => {
            thread.in_reply_to.as_ref().map(|r| r.event_id.clone())
        }
        _ => None,
    }
}

/// Answers a command in its room, once (the reply's transaction id is stored first).
pub async fn reply(ctx: &Arc<Ctx>, incoming: &Incoming, incident: Option<&IncidentId>, text: &str) {
    let content = notice(text, std::slice::from_ref(&incoming.sender));
    let key = format!("reply/{}", incoming.event_id);
    if let Err(e) = send_once(ctx, &incoming.room, &key, incident, content).await {
        warn!(error = %e, "could not answer a command");
    }
}

/// What a command's workflow did, when it did what was asked.
#[derive(Debug)]
pub(crate) enum Done {
    /// Answer with this.
    Reply(String),
    /// The workflow answered itself (the declare summary, the stand-down notice).
    Answered,
}

/// Why a command did not do what was asked. The dispatcher turns each into the answer
/// and, for a refusal, the one `command.refused` audit entry ([`audit_refusal`]).
#[derive(Debug)]
pub(crate) enum CommandError {
    /// Refused before anything changed: audited with `code`, answered with `text`.
    Refused {
        /// Why, for the audit log (`not-allowed`, `stale`, `not-active` …).
        code: String,
        /// The answer.
        text: String,
        /// The incident it is about, when the workflow found it (otherwise the one the
        /// dispatcher resolved, if any).
        incident: Option<IncidentId>,
    },
    /// Not done, answered with this, and nothing to audit: a question back (which
    /// incident?), a state that does not allow it yet, a store that could not be read.
    NotDone(String),
    /// The work failed part-way: what was done is recorded, and sending the command
    /// again finishes it (every step is safe to repeat).
    Failed(AppError),
    /// Neither run nor answered: a copy already handled, or a sender over their budget.
    Dropped,
}

impl CommandError {
    /// A refusal, audited as `code`.
    pub(crate) fn refused(code: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Refused {
            code: code.into(),
            text: text.into(),
            incident: None,
        }
    }

    /// A refusal about `incident`, audited as `code`.
    pub(crate) fn refused_about(
        incident: &IncidentId,
        code: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Self::Refused {
            code: code.into(),
            text: text.into(),
            incident: Some(incident.clone()),
        }
    }
}

impl From<AppError> for CommandError {
    fn from(e: AppError) -> Self {
        Self::Failed(e)
    }
}

impl From<crate::store::StoreError> for CommandError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Failed(e.into())
    }
}

/// An answer that says nothing was done.
impl From<String> for CommandError {
    fn from(text: String) -> Self {
        Self::NotDone(text)
    }
}

/// The valid Matrix user ids among `users` (mentions for notices).
pub(crate) fn user_ids(users: &[&str]) -> Vec<OwnedUserId> {
    users
        .iter()
        .filter_map(|u| OwnedUserId::try_from(*u).ok())
        .collect()
}

/// Sends `content` in `room` at most once under the idempotency `key`: the intent and
/// its transaction id are stored before the send and reused on retry. A message about
/// an exercise (`incident` is one) is labelled EXERCISE here, the one way out.
pub async fn send_once(
    ctx: &Ctx,
    room: &Room,
    key: &str,
    incident: Option<&IncidentId>,
    content: RoomMessageEventContent,
) -> Result<OwnedEventId, AppError> {
    let now = ctx.now();
    let entry = ctx.store.outbox_put(
        key,
        incident,
        Effect::Send {
            room: room.room_id().to_string(),
        },
        now,
    )?;
    if let Some(event) = entry
        .outcome
        .as_ref()
        .and_then(|o| o.get("event_id"))
        .and_then(|e| e.as_str())
        .and_then(|e| OwnedEventId::try_from(e).ok())
    {
        return Ok(event);
    }
    crate::failpoint::hit("send.before").await;
    refuse_clear_text(ctx, room).await?;
    ctx.before_send(room).await;
    // Every message about an exercise says so first, whichever workflow sent it.
    let content = match incident {
        Some(id) if ctx.store.incident(id)?.is_some_and(|i| i.exercise) => {
            rooms::labelled(content, crate::domain::incident::plan::EXERCISE_LABEL)
        }
        _ => content,
    };
    let event_id = rooms::send_message(room, content, &entry.txn_id).await?;
    ctx.store
        .outbox_complete(key, Some(json!({ "event_id": event_id })), ctx.now())?;
    Ok(event_id)
}

/// Nothing goes into an incident room in the clear. matrix-sdk encrypts a message only
/// in a room it knows to be encrypted; a room whose `m.room.encryption` the client has
/// not yet seen (one an earlier, interrupted request was still creating when cordon
/// found it) would get the message unencrypted. The send fails instead and is retried
/// with its job, once the room's state has arrived.
async fn refuse_clear_text(ctx: &Ctx, room: &Room) -> Result<(), AppError> {
    // What the client already knows first (in memory): on the usual send, to a room
    // known to be encrypted, neither the store nor the homeserver is asked.
    if room.encryption_state().is_encrypted()
        || ctx
            .store
            .room_by_matrix_id(room.room_id().as_str())?
            .is_none()
    {
        return Ok(());
    }
    let state = room
        .latest_encryption_state()
        .await
        .map_err(MatrixError::from)?;
    if state.is_encrypted() {
        return Ok(());
    }
    Err(MatrixError::Client(format!(
        "incident room {} is not known to be encrypted yet; nothing is sent in the clear",
        room.room_id()
    ))
    .into())
}

/// Refuses a command: audits the refusal, then answers it. The command has already been
/// marked as processed.
pub(crate) async fn refuse(
    ctx: &Arc<Ctx>,
    incoming: &Incoming,
    incident: Option<&IncidentId>,
    why: &str,
    text: &str,
) {
    audit_refusal(ctx, incoming, incident, why);
    reply(ctx, incoming, incident, text).await;
}

/// Writes a refused command's audit entry (`command.refused`, with `why`), the one
/// place it is written. A failure is logged: the refusal is still answered, since the
/// sender must learn that nothing was done.
pub(crate) fn audit_refusal(
    ctx: &Ctx,
    incoming: &Incoming,
    incident: Option<&IncidentId>,
    why: &str,
) {
    let audited = ctx.store.audit(
        incoming.sender.as_str(),
        "command.refused",
        incident,
        json!({
            "room": incoming.room.room_id(),
            "event": incoming.event_id,
            "why": why,
            "command": incoming.parsed.as_ref().map(|c| c.name()).unwrap_or("unparsable"),
        }),
        ctx.now(),
    );
    if let Err(e) = audited {
        error!(error = %e, why, "could not audit a refused command");
    }
}

/// Marks a command as handled without running it (it is being refused or dropped), so
/// that it is not answered twice. A store failure is logged; the refusal still stands.
pub(crate) fn mark_handled(ctx: &Ctx, incoming: &Incoming, now: DateTime<Utc>) {
    if let Err(e) = ctx.store.mark_processed(incoming.event_id.as_str(), now) {
        error!(error = %e, "store: marking a refused command as handled");
    }
}
