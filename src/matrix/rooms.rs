//! Room operations, each safe to repeat: create a planned room (or find it again by its
//! tag), invite with a reason, send with a stored transaction id, pin, edit.

use matrix_sdk::Client;
use matrix_sdk::Room;
use matrix_sdk::ruma::api::client::membership::invite_user;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::state::get_state_event_for_key;
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::events::room::message::{
    ReplacementMetadata, RoomMessageEventContent, RoomMessageEventContentWithoutRelation,
};
use matrix_sdk::ruma::events::{AnyInitialStateEvent, StateEventType};
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
};
use serde_json::{Value, json};
use tracing::{debug, instrument, warn};

use super::MatrixError;
use crate::domain::incident::plan::{RoomPlan, TAG_INCIDENT, TAG_ROOM_KEY};

fn raw<T>(value: &Value) -> Result<Raw<T>, MatrixError> {
    let json = serde_json::value::to_raw_value(value)
        .map_err(|e| MatrixError::Client(format!("encoding a request: {e}")))?;
    Ok(Raw::from_json(json))
}

/// The room version of every room cordon creates. Pinned rather than left to the
/// server's default: the power levels cordon sets rely on version 12's rules (the
/// creator has unlimited power and is not listed in `users`), and a server whose
/// default changes must not change what an incident room is.
pub const ROOM_VERSION: RoomVersionId = RoomVersionId::V12;

/// The `createRoom` request for `plan` (without its creation alias).
fn planned_room_request(plan: &RoomPlan) -> Result<create_room::v3::Request, MatrixError> {
    let mut request = create_room::v3::Request::new();
    request.room_version = Some(ROOM_VERSION);
    request.name = Some(plan.name.clone());
    request.topic = Some(plan.topic.clone());
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.visibility = matrix_sdk::ruma::api::client::room::Visibility::Private;
    request.creation_content = Some(raw(&plan.creation_content)?);
    request.power_level_content_override = Some(raw(&plan.power_levels)?);
    request.initial_state = plan
        .initial_state
        .iter()
        .map(|ev| {
            raw::<AnyInitialStateEvent>(&json!({
                "type": ev.event_type,
                "state_key": ev.state_key,
                "content": ev.content,
            }))
        })
        .collect::<Result<_, _>>()?;
    Ok(request)
}

/// Creates the room described by `plan` in one `createRoom` call, with all its state in
/// `initial_state`. Invites are sent separately, so that each carries a reason.
///
/// Created under `alias` (a localpart from [`new_creation_alias`], recorded before this
/// call): `createRoom` has no transaction id, but the homeserver gives an alias to one
/// room only, so a second request with the same alias is refused and the room the
/// first one made is found by it. A request cut short by a crash or a timeout, whose
/// room may appear at any time later, is never answered with a second room.
#[instrument(skip_all, fields(room_key = %plan.key))]
pub async fn create_planned_room(
    client: &Client,
    plan: &RoomPlan,
    alias: &str,
) -> Result<Created, MatrixError> {
    let request = planned_room_request(plan)?;
    let mut with_alias = request.clone();
    with_alias.room_alias_name = Some(alias.to_owned());
    match client.create_room(with_alias).await {
        Ok(room) => {
            debug!(room = %room.room_id(), "created");
            Ok(Created::New(room))
        }
        Err(e) if e.client_api_error_kind() == Some(&ErrorKind::RoomInUse) => {
            let room_id = own_room_by_alias(client, alias, plan).await?;
            debug!(room = %room_id, "created before, found by its alias");
            Ok(Created::Before(room_id))
        }
        // Any 403 (Synapse refuses an alias with `M_UNKNOWN`, a module an event with
        // `M_FORBIDDEN`). Refused after the homeserver took the alias (a module refused
        // one of the room's events): the room it left, half made, is the one; the
        // caller waits for or completes its state. Refused before: the server's
        // `alias_creation_rules` refuse cordon an alias, so create the room without one
        // (a creation cut short is then found only by its tags).
        Err(e)
            if e.as_client_api_error()
                .is_some_and(|c| c.status_code.as_u16() == 403) =>
        {
            let full = full_alias(client, alias)?;
            match client.resolve_room_alias(&full).await {
                Ok(_) => {
                    let room_id = own_room_by_alias(client, alias, plan).await?;
                    warn!(
                        room = %room_id, error = %e,
                        "the homeserver refused the room's creation half way"
                    );
                    return Ok(Created::Before(room_id));
                }
                Err(lookup) if lookup.client_api_error_kind() == Some(&ErrorKind::NotFound) => {}
                Err(lookup) => return Err(matrix_sdk::Error::from(lookup).into()),
            }
            warn!(
                error = %e,
                "the homeserver refuses cordon a room alias; creating the room without one"
            );
            let room = client.create_room(request).await?;
            debug!(room = %room.room_id(), "created");
            Ok(Created::New(room))
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`create_planned_room`] came to.
#[derive(Debug)]
pub enum Created {
    /// The room, created now.
    New(Room),
    /// An earlier request with the same alias created it (one cut short by a crash or
    /// a timeout, whose answer never came back).
    Before(OwnedRoomId),
}

/// A fresh localpart for a room's creation alias: random, so nobody can take it first.
pub fn new_creation_alias() -> String {
    format!("cordon-{:032x}", rand::random::<u128>())
}

/// `#alias:server`, on cordon's own server.
fn full_alias(
    client: &Client,
    alias: &str,
) -> Result<matrix_sdk::ruma::OwnedRoomAliasId, MatrixError> {
    let server = client
        .user_id()
        .ok_or_else(|| MatrixError::Client("not logged in".into()))?
        .server_name();
    matrix_sdk::ruma::OwnedRoomAliasId::try_from(format!("#{alias}:{server}"))
        .map_err(|e| MatrixError::Client(format!("creation alias {alias}: {e}")))
}

/// The room `alias` points to, checked to be the one `plan` describes: created with its
/// incident and room key tags, readable by cordon (so cordon is in it).
async fn own_room_by_alias(
    client: &Client,
    alias: &str,
    plan: &RoomPlan,
) -> Result<OwnedRoomId, MatrixError> {
    let full = full_alias(client, alias)?;
    let room_id = client
        .resolve_room_alias(&full)
        .await
        .map_err(matrix_sdk::Error::from)?
        .room_id;
    let request = get_state_event_for_key::v3::Request::new(
        room_id.clone(),
        StateEventType::RoomCreate,
        String::new(),
    );
    let response = client
        .send(request)
        .await
        .map_err(matrix_sdk::Error::from)?;
    let content: Value = serde_json::from_str(response.event_or_content.get())
        .map_err(|e| MatrixError::Client(format!("the create event of {room_id}: {e}")))?;
    let tag = |name: &str| content.get(name).and_then(Value::as_str).map(str::to_owned);
    let want = |name: &str| {
        plan.creation_content
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if tag(TAG_INCIDENT).is_none()
        || tag(TAG_INCIDENT) != want(TAG_INCIDENT)
        || tag(TAG_ROOM_KEY) != want(TAG_ROOM_KEY)
    {
        return Err(MatrixError::Client(format!(
            "the alias {full} points to {room_id}, which is not the room cordon planned \
             (its create event carries other tags)"
        )));
    }
    Ok(room_id)
}

/// Removes a room's creation alias once the room is recorded (it was only there to make
/// the creation idempotent). Removing the alias also clears it from the room's
/// canonical alias. An alias already gone is fine.
pub async fn remove_creation_alias(client: &Client, alias: &str) -> Result<(), MatrixError> {
    let full = full_alias(client, alias)?;
    let request = matrix_sdk::ruma::api::client::alias::delete_alias::v3::Request::new(full);
    match client.send(request).await {
        Ok(_) => Ok(()),
        Err(e) if e.client_api_error_kind() == Some(&ErrorKind::NotFound) => Ok(()),
        Err(e) => Err(matrix_sdk::Error::from(e).into()),
    }
}

/// Creates a small encrypted room for an identity check with `user`: invite-only, not
/// federated, no history for later joiners, nothing but cordon's invite (sent
/// separately, with a reason). See `trust::sas` for why it exists.
#[instrument(skip_all, fields(user = %user))]
pub async fn create_identity_check_room(
    client: &Client,
    user: &UserId,
) -> Result<Room, MatrixError> {
    let room = client.create_room(identity_check_request()?).await?;
    debug!(room = %room.room_id(), "created an identity-check room");
    Ok(room)
}

/// The `createRoom` request of an identity-check room.
fn identity_check_request() -> Result<create_room::v3::Request, MatrixError> {
    let mut request = create_room::v3::Request::new();
    request.room_version = Some(ROOM_VERSION);
    request.name = Some("cordon: identity check".to_owned());
    request.topic = Some(
        "cordon uses this room only to verify your identity with an operator. It holds no \
         messages and cordon leaves it when the check is over."
            .to_owned(),
    );
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.visibility = matrix_sdk::ruma::api::client::room::Visibility::Private;
    request.is_direct = true;
    request.creation_content = Some(raw(&json!({ "m.federate": false }))?);
    request.initial_state = vec![
        raw::<AnyInitialStateEvent>(&json!({
            "type": "m.room.encryption", "state_key": "",
            "content": { "algorithm": "m.megolm.v1.aes-sha2" },
        }))?,
        raw::<AnyInitialStateEvent>(&json!({
            "type": "m.room.history_visibility", "state_key": "",
            "content": { "history_visibility": "joined" },
        }))?,
    ];
    Ok(request)
}

/// The tags in a room's creation event, if cordon tagged it.
pub async fn room_tags(room: &Room) -> Option<(String, String)> {
    let raw = room
        .get_state_event(StateEventType::RoomCreate, "")
        .await
        .ok()
        .flatten()?;
    let value: Value = match raw {
        matrix_sdk::deserialized_responses::RawAnySyncOrStrippedState::Sync(r) => {
            r.deserialize_as_unchecked().ok()?
        }
        matrix_sdk::deserialized_responses::RawAnySyncOrStrippedState::Stripped(r) => {
            r.deserialize_as_unchecked().ok()?
        }
    };
    let content = value.get("content")?;
    let incident = content.get(TAG_INCIDENT)?.as_str()?.to_owned();
    let key = content.get(TAG_ROOM_KEY)?.as_str()?.to_owned();
    Some((incident, key))
}

/// Finds a joined room that cordon created for `incident`'s room `key` (after a crash
/// between `createRoom` and recording its id).
pub async fn find_tagged_room(client: &Client, incident: &str, key: &str) -> Option<Room> {
    for room in client.joined_rooms() {
        if let Some((i, k)) = room_tags(&room).await
            && i == incident
            && k == key
        {
            return Some(room);
        }
    }
    None
}

/// What an invite came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteOutcome {
    /// Invited now.
    Invited,
    /// Already invited or joined: nothing to do.
    AlreadyThere,
    /// The server refused this invite for good (the account does not exist, is
    /// deactivated or is on a server cordon may not reach); retrying will not help.
    Refused(String),
}

/// Invites `user` with a `reason` (unencrypted, so the invitee can read why before
/// joining). Repeating it is harmless.
#[instrument(skip_all, fields(room = %room_id, user = %user))]
pub async fn invite_with_reason(
    client: &Client,
    room_id: &RoomId,
    user: &UserId,
    reason: &str,
) -> Result<InviteOutcome, MatrixError> {
    let mut recipient = invite_user::v3::InviteUserId::new(user.to_owned());
    recipient.reason = Some(reason.to_owned());
    let request = invite_user::v3::Request::new(room_id.to_owned(), recipient.into());
    match client.send(request).await {
        Ok(_) => Ok(InviteOutcome::Invited),
        Err(e) => {
            // Synapse answers 403 "… is already in the room" for a repeated invite of a
            // member; check the membership rather than trusting the wording.
            if let Some(room) = client.get_room(room_id)
                && let Ok(Some(member)) = room.get_member(user).await
                && matches!(
                    member.membership(),
                    matrix_sdk::ruma::events::room::member::MembershipState::Invite
                        | matrix_sdk::ruma::events::room::member::MembershipState::Join
                )
            {
                return Ok(InviteOutcome::AlreadyThere);
            }
            // A 4xx other than rate limiting is about this invitee: say why and go on.
            if let Some(api) = e.as_client_api_error()
                && api.status_code.is_client_error()
                && api.status_code.as_u16() != 429
            {
                let why = match e.client_api_error_kind() {
                    Some(kind) => format!("{kind:?}"),
                    None => api.status_code.to_string(),
                };
                return Ok(InviteOutcome::Refused(format!(
                    "the homeserver refused the invite (HTTP {}: {why})",
                    api.status_code.as_u16()
                )));
            }
            Err(MatrixError::Http(e.to_string()))
        }
    }
}

/// Sends `content` with the stored transaction id `txn_id`: the homeserver deduplicates
/// a retry with the same id from the same device.
///
/// One send at a time in each room: matrix-sdk 0.18 panics ("Session expired", an
/// assertion in its group session manager) when two sends in one encrypted room race
/// across the rotation of the room's megolm session, which happens every 100 messages
/// by default. The reminders, alerts and notices of a long incident reach that.
///
/// Never while a sync holds the sends ([`hold_sends`]).
pub async fn send_message(
    room: &Room,
    content: RoomMessageEventContent,
    txn_id: &str,
) -> Result<OwnedEventId, MatrixError> {
    let txn: matrix_sdk::ruma::OwnedTransactionId = txn_id.into();
    let lock = send_lock(room.room_id());
    let _one_at_a_time = lock.lock().await;
    // Taken inside the room's lock: a sync waits only for the sends under way, not for
    // those queued behind them in their rooms.
    let _not_while_syncing = SENDS.read().await;
    let response = room.send(content).with_transaction_id(txn).await?;
    Ok(response.response.event_id)
}

/// Encrypted sends hold it shared; a sync that must not overlap them holds it alone
/// ([`hold_sends`]).
static SENDS: std::sync::LazyLock<tokio::sync::RwLock<()>> =
    std::sync::LazyLock::new(|| tokio::sync::RwLock::new(()));

/// Waits for the sends under way to finish and keeps new ones waiting until the guard
/// is dropped. The sync loop holds it across a sync while cordon is creating rooms or
/// inviting.
///
/// Why: matrix-sdk 0.18 encrypts under one client-wide lock (its key-claim lock), and
/// under it waits up to five seconds for a pending `/keys/query` of any member of whom
/// it knows no device, cordon's own account included (its own device does not count).
/// A sync marks those users pending whenever cordon has joined a new room or someone
/// was invited since the last one, and only the sync itself sends the query, after
/// taking the same lock. Sends overlapping that sync therefore each waited the full
/// five seconds, one after another, with the sync queued behind them: under fifty
/// declares at once, every send (briefings, reminders) stalled for up to 80 s. A sync
/// that runs alone sends its queries before any send asks for them.
pub async fn hold_sends() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SENDS.write().await
}

/// The lock that keeps sends in `room` one at a time ([`send_message`]).
fn send_lock(room: &RoomId) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    type Locks = std::collections::HashMap<OwnedRoomId, std::sync::Arc<tokio::sync::Mutex<()>>>;
    static LOCKS: std::sync::LazyLock<std::sync::Mutex<Locks>> =
        std::sync::LazyLock::new(Default::default);
    let mut locks = LOCKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Rooms nobody is sending in are forgotten, so the map stays as small as the work.
    locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
    locks.entry(room.to_owned()).or_default().clone()
}

/// A notice (bots speak in notices, which other bots do not answer) with mentions.
/// cordon never notifies a whole room: the mentions name people, and an `@room` in the
/// text (a playbook template, an incident name) is defused ([`defuse_room_mention`]).
pub fn notice(body: &str, mentions: &[OwnedUserId]) -> RoomMessageEventContent {
    let body = defuse_room_mention(body);
    let html = to_html_mentioning(&body, mentions);
    let mut content = RoomMessageEventContent::notice_html(body, html);
    content.mentions = Some(matrix_sdk::ruma::events::Mentions::with_user_ids(
        mentions.iter().cloned(),
    ));
    content
}

/// `@room` with a word joiner after the `@`, so that clients that still match the text
/// (the legacy `.m.rule.roomnotif` push rule) do not notify the whole room. It reads the
/// same.
pub fn defuse_room_mention(body: &str) -> String {
    body.replace("@room", "@\u{2060}room")
}

/// `content` with `label` put before its text (the plain body and the HTML one, and an
/// edit's new text as well): how every message of an exercise says EXERCISE first.
pub fn labelled(mut content: RoomMessageEventContent, label: &str) -> RoomMessageEventContent {
    use matrix_sdk::ruma::events::room::message::{MessageType, Relation};
    fn prefix(msgtype: &mut MessageType, label: &str) {
        let (body, formatted) = match msgtype {
            MessageType::Notice(n) => (&mut n.body, n.formatted.as_mut()),
            MessageType::Text(t) => (&mut t.body, t.formatted.as_mut()),
            MessageType::Emote(e) => (&mut e.body, e.formatted.as_mut()),
            _ => return,
        };
        // An edit's fallback body starts with `* `; the label goes after it.
        let at = if body.starts_with("* ") { 2 } else { 0 };
        if !body[at..].starts_with(label) {
            body.insert_str(at, label);
        }
        if let Some(f) = formatted {
            let at = if f.body.starts_with("* ") { 2 } else { 0 };
            let html = to_html(label);
            if !f.body[at..].starts_with(&html) {
                f.body.insert_str(at, &html);
            }
        }
    }
    prefix(&mut content.msgtype, label);
    if let Some(Relation::Replacement(replacement)) = content.relates_to.as_mut() {
        prefix(&mut replacement.new_content.msgtype, label);
    }
    content
}

/// An edit of `original` replacing its text with `body`.
pub fn edit(original: &EventId, body: &str) -> RoomMessageEventContent {
    let body = defuse_room_mention(body);
    let html = to_html(&body);
    RoomMessageEventContentWithoutRelation::notice_html(body, html)
        .make_replacement(ReplacementMetadata::new(original.to_owned(), None))
}

/// The HTML form of a reply's plain text (`formatted_body`, for clients that render it):
/// every character that means something in HTML is escaped first, so an incident name,
/// a playbook template or a command argument can never inject markup; then a
/// `` `command` `` becomes `<code>` and each line break `<br>`. An unpaired backtick
/// stays as it is.
pub fn to_html(body: &str) -> String {
    to_html_mentioning(body, &[])
}

/// [`to_html`], with each of `mentions` written outside a `` `code` `` span made a
/// pill: a `matrix.to` link that clients show as the person's name and avatar.
pub fn to_html_mentioning(body: &str, mentions: &[OwnedUserId]) -> String {
    let mut out = String::with_capacity(body.len() + 16);
    for (i, line) in body.split('\n').enumerate() {
        if i > 0 {
            out.push_str("<br>");
        }
        let spans: Vec<&str> = line.split('`').collect();
        // An odd number of pieces means the backticks pair up.
        let paired = spans.len() % 2 == 1;
        for (j, span) in spans.iter().enumerate() {
            let code = j % 2 == 1;
            if code && paired {
                out.push_str("<code>");
                escape_into(&mut out, span);
                out.push_str("</code>");
            } else {
                if j > 0 && !paired {
                    out.push('`');
                }
                escape_with_pills(&mut out, span, mentions);
            }
        }
    }
    out
}

/// A character that can continue a user id, so `@a:hs.example` inside
/// `@a:hs.example.org` is not taken for it.
fn continues_user_id(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-' | '/' | '+' | ':' | '[' | ']')
}

/// Escapes `text` as [`escape_into`] does, with each whole occurrence of a mentioned
/// user id turned into a pill.
fn escape_with_pills(out: &mut String, text: &str, mentions: &[OwnedUserId]) {
    let mut rest = text;
    'outer: while !rest.is_empty() {
        let Some(at) = rest.find('@') else { break };
        for user in mentions {
            let id = user.as_str();
            let Some(after) = rest[at..].strip_prefix(id) else {
                continue;
            };
            let before_ok = !rest[..at]
                .chars()
                .next_back()
                .is_some_and(continues_user_id);
            // Punctuation may follow the id: `@a:hs.example.` is the id and a full stop,
            // `@a:hs.example: …` the id and a colon; `@a:hs.example.org` and
            // `@a:hs.example:8448` are other ids.
            let next = after[1.min(after.len())..].chars().next();
            let after_ok = match after.chars().next() {
                None => true,
                Some('.') => !next.is_some_and(continues_user_id),
                Some(':') => !next.is_some_and(|c| c.is_ascii_digit()),
                Some(c) => !continues_user_id(c),
            };
            if before_ok && after_ok {
                escape_into(out, &rest[..at]);
                out.push_str("<a href=\"");
                escape_into(out, &user.matrix_to_uri().to_string());
                out.push_str("\">");
                escape_into(out, id);
                out.push_str("</a>");
                rest = after;
                continue 'outer;
            }
        }
        escape_into(out, &rest[..=at]);
        rest = &rest[at + 1..];
    }
    escape_into(out, rest);
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// cordon's pin list after pinning `new` in place of `old` (the briefing re-posted
/// before retention removes the old one), keeping every other pin.
pub fn pins_after(current: &[String], old: Option<&EventId>, new: &EventId) -> Vec<String> {
    let mut pinned: Vec<String> = current
        .iter()
        .filter(|e| old.is_none_or(|o| o.as_str() != e.as_str()))
        .cloned()
        .collect();
    if !pinned.iter().any(|e| e == new.as_str()) {
        pinned.push(new.to_string());
    }
    pinned
}

/// Sets the room's pinned events to `content` (`{"pinned": [...]}`).
pub async fn set_pins(room: &Room, content: Value) -> Result<(), MatrixError> {
    room.send_state_event_raw("m.room.pinned_events", "", content)
        .await?;
    Ok(())
}

/// A matrix.to link to one event in a room.
pub fn event_link(room_id: &str, event_id: &str, server: &str) -> String {
    format!("https://matrix.to/#/{room_id}/{event_id}?via={server}")
}

/// A matrix.to link to a room.
pub fn room_link(room_id: &RoomId, server: &str) -> String {
    format!("https://matrix.to/#/{room_id}?via={server}")
}

/// The joined room with this id, if the client knows it.
pub fn joined(client: &Client, room_id: &str) -> Option<Room> {
    let id = OwnedRoomId::try_from(room_id).ok()?;
    client.get_room(&id)
}

#[cfg(test)]
mod tests;
