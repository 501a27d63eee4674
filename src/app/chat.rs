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

use super::ctx::{Bot, BotError};
use crate::domain::command::{Command, Rejection};
use crate::domain::incident::{Incident, IncidentId};
use crate::matrix::rooms::{self, notice};
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
}

/// Answers a command in its room, once (the reply's transaction id is stored first).
pub async fn reply(bot: &Arc<Bot>, incoming: &Incoming, incident: Option<&IncidentId>, text: &str) {
    let content = notice(text, std::slice::from_ref(&incoming.sender));
    let key = format!("reply/{}", incoming.event_id);
    if let Err(e) = send_once(bot, &incoming.room, &key, incident, content).await {
        warn!(error = %e, "could not answer a command");
    }
}

/// The valid Matrix user ids among `users` (mentions for notices).
pub(crate) fn user_ids(users: &[&str]) -> Vec<OwnedUserId> {
    users
        .iter()
        .filter_map(|u| OwnedUserId::try_from(*u).ok())
        .collect()
}

/// True when the sender is the incident's commander or an operator; otherwise refuses
/// (audited, answered) with "Only the commander … or an operator can {action}." and
/// returns false.
pub(crate) async fn commander_or_operator(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    incident: &Incident,
    action: &str,
) -> bool {
    if incident.commander == incoming.sender.as_str() || bot.is_operator(&incoming.sender) {
        return true;
    }
    let text = format!(
        "Only the commander of {} ({}) or an operator can {action}. Nothing was changed.",
        incident.id.as_str(),
        incident.commander
    );
    refuse(bot, incoming, Some(&incident.id), "not-allowed", &text).await;
    false
}

/// Sends `content` in `room` at most once under the idempotency `key`: the intent and
/// its transaction id are stored before the send and reused on retry.
pub async fn send_once(
    bot: &Bot,
    room: &Room,
    key: &str,
    incident: Option<&IncidentId>,
    content: RoomMessageEventContent,
) -> Result<OwnedEventId, BotError> {
    let now = bot.now();
    let entry = bot.store.outbox_put(
        key,
        incident,
        "send",
        json!({ "room": room.room_id() }),
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
    bot.before_send(room).await;
    let event_id = rooms::send_message(room, content, &entry.txn_id).await?;
    bot.store
        .outbox_complete(key, Some(json!({ "event_id": event_id })), bot.now())?;
    Ok(event_id)
}

/// Refuses a command: audits the refusal, then answers it. The command has already been
/// marked as processed.
pub(crate) async fn refuse(
    bot: &Arc<Bot>,
    incoming: &Incoming,
    incident: Option<&IncidentId>,
    why: &str,
    text: &str,
) {
    let audited = bot.store.audit(
        incoming.sender.as_str(),
        "command.refused",
        incident,
        json!({
            "room": incoming.room.room_id(),
            "event": incoming.event_id,
            "why": why,
            "command": incoming.parsed.as_ref().map(|c| c.name()).unwrap_or("unparsable"),
        }),
        bot.now(),
    );
    if let Err(e) = audited {
        // The refusal is still answered: the sender must learn that nothing was done.
        error!(error = %e, why, "could not audit a refused command");
    }
    reply(bot, incoming, incident, text).await;
}
