//! A role holder: a person with their own matrix-sdk client, as their phone would be.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::encryption::verification::{
    SasState, SasVerification, Verification, VerificationRequestState,
};
use matrix_sdk::ruma::api::client::membership::invite_user::v3::{
    InviteUserId, Request as InviteRequest,
};
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use matrix_sdk::ruma::api::client::state::get_state_event_for_key::v3::Request as GetStateRequest;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::key::verification::request::ToDeviceKeyVerificationRequestEvent;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::member::{MembershipState, StrippedRoomMemberEvent};
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, RoomMessageEventContent,
};
use matrix_sdk::ruma::events::{InitialStateEvent, StateEventType};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use matrix_sdk::{Client, Room};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{HarnessError, Synapse};

/// How long [`TestUser::login`] waits for the first sync.
const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// The server-side long-poll of each sync request.
const SYNC_POLL: Duration = Duration::from_secs(5);

/// A message the user's client received and could read.
#[derive(Clone, Debug)]
pub struct ReceivedMessage {
    /// The event.
    pub event_id: OwnedEventId,
    /// Who sent it (as the server claims).
    pub sender: OwnedUserId,
    /// `m.text`, `m.notice`, `m.emote`, ...
    pub msgtype: String,
    /// The plain-text body.
    pub body: String,
    /// How it was decrypted, or `None` if it was sent unencrypted.
    pub encryption_info: Option<EncryptionInfo>,
}

/// An invite the user received.
#[derive(Clone, Debug)]
pub struct ReceivedInvite {
    /// The room.
    pub room_id: OwnedRoomId,
    /// Who invited them.
    pub inviter: OwnedUserId,
    /// The invite's reason, which is not encrypted.
    pub reason: Option<String>,
}

/// An emoji comparison in progress on the person's side, with the emojis their client
/// shows. The person's sync loop keeps running, so the other side's messages arrive.
#[derive(Debug)]
pub struct SasSession {
    user: OwnedUserId,
    sas: SasVerification,
    emojis: Vec<(String, String)>,
}

/// How an emoji comparison ended on the person's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SasOutcome {
    /// Both sides confirmed.
    Done,
    /// Cancelled, with the reason the SDK reports.
    Cancelled(String),
}

impl SasSession {
    /// The seven emojis as (symbol, name), e.g. `("🐶", "Dog")`, in order.
    pub fn emojis(&self) -> &[(String, String)] {
        &self.emojis
    }

    /// The device id of the other side (cordon's device).
    pub fn other_device(&self) -> String {
        self.sas.other_device().device_id().to_string()
    }

    /// The person says the emojis match. Returns at once; wait with
    /// [`SasSession::finished`].
    pub async fn confirm(&self) -> Result<(), HarnessError> {
        self.sas
            .confirm()
            .await
            .map_err(|e| HarnessError::matrix(format!("{} confirming the emojis", self.user), e))
    }

    /// The person says the emojis differ: the comparison is cancelled (mismatched SAS).
    pub async fn mismatch(&self) -> Result<(), HarnessError> {
        self.sas
            .mismatch()
            .await
            .map_err(|e| HarnessError::matrix(format!("{} rejecting the emojis", self.user), e))
    }

    /// Waits until the comparison is done or cancelled.
    pub async fn finished(&self, deadline: Duration) -> Result<SasOutcome, HarnessError> {
        let mut changes = self.sas.changes();
        let wait = async {
            loop {
                match self.sas.state() {
                    SasState::Done { .. } => return SasOutcome::Done,
                    SasState::Cancelled(info) => {
                        return SasOutcome::Cancelled(info.reason().to_owned());
                    }
                    _ => {}
                }
                if changes.next().await.is_none() {
                    return match self.sas.state() {
                        SasState::Done { .. } => SasOutcome::Done,
                        other => SasOutcome::Cancelled(format!("stream ended in {other:?}")),
                    };
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| HarnessError::Timeout {
                user: self.user.to_string(),
                what: "the emoji comparison to finish".into(),
                waited: deadline,
                seen: format!("state {:?}", self.sas.state()),
            })
    }
}

mod inbox;

use inbox::{Inbox, InboxState, add_handlers, sync_loop};

/// A person with their own matrix-sdk client and store, logged in with a password,
/// cross-signing bootstrapped, and syncing in a background task that keeps a per-room
/// log of the messages it could read and of the invites it received.
///
/// Runs on the tokio runtime that called [`TestUser::login`]; use it within that runtime.
pub struct TestUser {
    client: Client,
    user_id: OwnedUserId,
    store_dir: PathBuf,
    inbox: Arc<Inbox>,
    sync_task: Option<JoinHandle<()>>,
}

impl fmt::Debug for TestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestUser")
            .field("user_id", &self.user_id)
            .field("store_dir", &self.store_dir)
            .finish_non_exhaustive()
    }
}

impl TestUser {
    /// Logs in with a password as a fresh device with its own SQLite store, bootstraps cross-signing (so the person has a master key to be
    /// verified), starts the background sync and waits for its first sync.
    ///
    /// The store lives in a fresh directory inside the homeserver's data directory, so
    /// the homeserver's watchdog removes it too if the process dies; stop or drop the
    /// user before the [`Synapse`] it talks to.
    pub async fn login(
        hs: &Synapse,
        localpart: &str,
        password: &str,
    ) -> Result<TestUser, HarnessError> {
        let store_dir = hs.client_store_dir(localpart)?;
        match Self::login_in(hs, localpart, password, store_dir.clone()).await {
            Ok(user) => Ok(user),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&store_dir);
                Err(e)
            }
        }
    }

    async fn login_in(
        hs: &Synapse,
        localpart: &str,
        password: &str,
        store_dir: PathBuf,
    ) -> Result<TestUser, HarnessError> {
        let client = Client::builder()
            .homeserver_url(hs.base_url())
            .sqlite_store(&store_dir, None)
            .request_config(
                RequestConfig::new()
                    .timeout(Duration::from_secs(30))
                    .retry_limit(5),
            )
            .build()
            .await?;
        let login = client
            .matrix_auth()
            .login_username(localpart, password)
            .initial_device_display_name(&format!("{localpart} (cordon test)"))
            .await
            .map_err(|e| HarnessError::matrix(format!("logging in as {localpart}"), e))?;
        let user_id = login.user_id;

        let inbox = Arc::new(Inbox::new());
        add_handlers(&client, &inbox, &user_id);

        let encryption = client.encryption();
        if let Err(e) = encryption.bootstrap_cross_signing_if_needed(None).await {
            // Synapse lets the first upload through without auth; if it asks, answer with
            // the password.
            let Some(uiaa_info) = e.as_uiaa_response() else {
                return Err(HarnessError::matrix(
                    format!("bootstrapping cross-signing for {user_id}"),
                    e,
                ));
            };
            let mut auth = uiaa::Password::new(
                uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(localpart.to_owned())),
                password.to_owned(),
            );
            auth.session = uiaa_info.session.clone();
            encryption
                .bootstrap_cross_signing(Some(uiaa::AuthData::Password(auth)))
                .await
                .map_err(|e| {
                    HarnessError::matrix(format!("bootstrapping cross-signing for {user_id}"), e)
                })?;
        }

        let sync_task = tokio::spawn(sync_loop(client.clone(), inbox.clone()));
        let user = TestUser {
            client,
            user_id,
            store_dir,
            inbox,
            sync_task: Some(sync_task),
        };
        user.wait_for_syncs(1, FIRST_SYNC_TIMEOUT).await?;
        Ok(user)
    }

    /// The person's matrix-sdk client.
    pub fn client(&self) -> &matrix_sdk::Client {
        &self.client
    }

    /// The person's user id.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Creates an encrypted (megolm) `private_chat` room named `name`, inviting `invite`.
    pub async fn create_encrypted_room(
        &self,
        name: &str,
        invite: &[OwnedUserId],
    ) -> Result<OwnedRoomId, HarnessError> {
        let mut request = CreateRoomRequest::new();
        request.name = Some(name.to_owned());
        request.invite = invite.to_vec();
        request.preset = Some(RoomPreset::PrivateChat);
        request.initial_state = vec![
            InitialStateEvent::with_empty_state_key(
                RoomEncryptionEventContent::with_recommended_defaults(),
            )
            .to_raw_any(),
        ];
        self.create_room(request).await
    }

    /// Creates a room from a full `createRoom` request (for power-level overrides etc.).
    pub async fn create_room(
        &self,
        request: CreateRoomRequest,
    ) -> Result<OwnedRoomId, HarnessError> {
        let room =
            self.client.create_room(request).await.map_err(|e| {
                HarnessError::matrix(format!("{} creating a room", self.user_id), e)
            })?;
        Ok(room.room_id().to_owned())
    }

    /// The next invite not yet returned by this method (one already received counts),
    /// as a room in the invited state.
    pub async fn wait_for_invite(
        &self,
        deadline: Duration,
    ) -> Result<matrix_sdk::Room, HarnessError> {
        let invite = self
            .wait_until(deadline, "an invite", |state| {
                let invite = state.invites.get(state.invites_taken).cloned()?;
                state.invites_taken += 1;
                Some(invite)
            })
            .await?;
        self.room(&invite.room_id)
    }

    /// Every invite received so far, oldest first.
    pub fn invites(&self) -> Vec<ReceivedInvite> {
        self.inbox.lock().invites.clone()
    }

    /// Joins a room (usually one the person was invited to).
    pub async fn join(&self, room_id: &RoomId) -> Result<matrix_sdk::Room, HarnessError> {
        self.client
            .join_room_by_id(room_id)
            .await
            .map_err(|e| HarnessError::matrix(format!("{} joining {room_id}", self.user_id), e))
    }

    /// Sends a plain-text message (encrypted if the room is) and returns its event id.
    pub async fn send_text(
        &self,
        room_id: &RoomId,
        body: &str,
    ) -> Result<OwnedEventId, HarnessError> {
        let room = self.room(room_id)?;
        let sent = room
            .send(RoomMessageEventContent::text_plain(body))
            .await
            .map_err(|e| {
                HarnessError::matrix(format!("{} sending to {room_id}", self.user_id), e)
            })?;
        Ok(sent.response.event_id)
    }

    /// Sends a plain-text message as a reply to `in_reply_to` (an `m.in_reply_to`
    /// relation, as Element sends one) and returns its event id.
    pub async fn send_reply(
        &self,
        room_id: &RoomId,
        in_reply_to: &matrix_sdk::ruma::EventId,
        body: &str,
    ) -> Result<OwnedEventId, HarnessError> {
        use matrix_sdk::ruma::events::relation::{InReplyTo, Reply};
        use matrix_sdk::ruma::events::room::message::Relation;
        let room = self.room(room_id)?;
        let mut content = RoomMessageEventContent::text_plain(body);
        content.relates_to = Some(Relation::Reply(Reply::new(InReplyTo::new(
            in_reply_to.to_owned(),
        ))));
        let sent = room.send(content).await.map_err(|e| {
            HarnessError::matrix(format!("{} replying in {room_id}", self.user_id), e)
        })?;
        Ok(sent.response.event_id)
    }

    /// Sends an event of `event_type` with `content` in plaintext, even into an
    /// encrypted room, through the client-server API: what a client without end-to-end
    /// encryption does, and what a homeserver can inject in anyone's name. Returns its
    /// event id.
    pub async fn send_unencrypted(
        &self,
        room_id: &RoomId,
        event_type: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, HarnessError> {
        use matrix_sdk::ruma::TransactionId;
        use matrix_sdk::ruma::api::client::message::send_message_event;
        use matrix_sdk::ruma::serde::Raw;
        let context = || format!("{} sending unencrypted to {room_id}", self.user_id);
        let body = Raw::new(content)
            .map_err(|e| HarnessError::matrix(context(), matrix_sdk::Error::from(e)))?
            .cast_unchecked();
        let request = send_message_event::v3::Request::new_raw(
            room_id.to_owned(),
            TransactionId::new(),
            event_type.into(),
            body,
        );
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| HarnessError::matrix(context(), e))?;
        Ok(response.event_id)
    }

    /// The first message in `room_id` (already received, or arriving before `deadline`)
    /// for which `pred(sender, body)` holds. Counts every readable `m.room.message`
    /// (text, notice, emote, ...), decrypted or not, including the person's own.
    pub async fn wait_for_message(
        &self,
        room_id: &RoomId,
        deadline: Duration,
        pred: impl Fn(&UserId, &str) -> bool,
    ) -> Result<(OwnedUserId, String), HarnessError> {
        let found = self
            .wait_until(
                deadline,
                &format!("a matching message in {room_id}"),
                |state| {
                    state
                        .messages
                        .get(room_id)?
                        .iter()
                        .find(|m| pred(&m.sender, &m.body))
                        .map(|m| (m.sender.clone(), m.body.clone()))
                },
            )
            .await?;
        Ok(found)
    }

    /// Every readable message received in `room_id` so far, oldest first.
    pub fn messages(&self, room_id: &RoomId) -> Vec<ReceivedMessage> {
        self.inbox
            .lock()
            .messages
            .get(room_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Events in `room_id` this client could not decrypt (no room key reached it).
    pub fn undecryptable(&self, room_id: &RoomId) -> Vec<OwnedEventId> {
        self.inbox
            .lock()
            .undecryptable
            .get(room_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `count` more syncs have completed, so that everything the server had
    /// for this person when the call was made has been processed.
    pub async fn wait_for_syncs(&self, count: u64, deadline: Duration) -> Result<(), HarnessError> {
        let target = self.inbox.lock().syncs + count;
        self.wait_until(deadline, &format!("{count} sync(s)"), |state| {
            (state.syncs >= target).then_some(())
        })
        .await
    }

    /// Invites `user` to `room_id` by a raw request, so it works whether or not this
    /// client knows the room. The error is the server's answer: tests assert refusals
    /// with [`matrix_sdk::Error::client_api_error_kind`].
    pub async fn invite(&self, room_id: &RoomId, user: &UserId) -> Result<(), matrix_sdk::Error> {
        let request = InviteRequest::new(
            room_id.to_owned(),
            InviteUserId::new(user.to_owned()).into(),
        );
        self.client.send(request).await?;
        Ok(())
    }

    /// The content of the state event `(event_type, state_key)` in `room_id`, fetched
    /// from the server as raw JSON (`GET /rooms/{id}/state/{type}/{key}`), so custom and
    /// unstable event types come back exactly as stored.
    pub async fn room_state_json(
        &self,
        room_id: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<serde_json::Value, HarnessError> {
        let context = format!("{} reading {event_type} in {room_id}", self.user_id);
        let request = GetStateRequest::new(
            room_id.to_owned(),
            StateEventType::from(event_type),
            state_key.to_owned(),
        );
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| HarnessError::matrix(&context, e))?;
        serde_json::from_str(response.event_or_content.get()).map_err(|e| {
            HarnessError::BadResponse {
                context,
                detail: e.to_string(),
            }
        })
    }

    /// The person's master cross-signing key (unpadded base64 ed25519), as they would
    /// read it out to an operator enrolling them with `cordon verify --fingerprint`.
    pub async fn master_key_fingerprint(&self) -> Result<String, HarnessError> {
        let context = format!("reading {}'s master key", self.user_id);
        let identity = self
            .client
            .encryption()
            .get_user_identity(&self.user_id)
            .await
            .map_err(|e| HarnessError::matrix(&context, e))?
            .ok_or_else(|| HarnessError::BadResponse {
                context: context.clone(),
                detail: "no cross-signing identity".to_owned(),
            })?;
        identity
            .master_key()
            .get_first_key()
            .map(|key| key.to_base64())
            .ok_or(HarnessError::BadResponse {
                context,
                detail: "the master key has no ed25519 key".to_owned(),
            })
    }

    /// Accepts the next incoming verification request (one already received counts),
    /// as the person would tap "Accept" on their phone, and runs the emoji (SAS)
    /// comparison up to the point where both sides show the emojis. The returned
    /// session lets the test compare them and then [`SasSession::confirm`] or
    /// [`SasSession::mismatch`]. cordon (the requester) starts the SAS itself; should the
    /// request transition from this side instead, that works too.
    ///
    /// An invite that arrives meanwhile is accepted, as the person accepts cordon's
    /// identity-check room: their client only shows a request from a device it knows,
    /// which it learns from an encrypted room they share.
    pub async fn accept_sas(&self, deadline: Duration) -> Result<SasSession, HarnessError> {
        let started = tokio::time::Instant::now();
        enum Next {
            Request((OwnedUserId, String)),
            Invite(ReceivedInvite),
        }
        let (sender, flow_id) = loop {
            let left = deadline.saturating_sub(started.elapsed());
            let next = self
                .wait_until(left, "a verification request", |state| {
                    if let Some(request) = state
                        .verification_requests
                        .get(state.verification_requests_taken)
                        .cloned()
                    {
                        state.verification_requests_taken += 1;
                        return Some(Next::Request(request));
                    }
                    let invite = state.invites.get(state.invites_taken).cloned()?;
                    state.invites_taken += 1;
                    Some(Next::Invite(invite))
                })
                .await?;
            match next {
                Next::Request(request) => break request,
                Next::Invite(invite) => {
                    self.join(&invite.room_id).await?;
                }
            }
        };
        let context = format!("{} accepting verification from {sender}", self.user_id);
        let request = self
            .client
            .encryption()
            .get_verification_request(&sender, &flow_id)
            .await
            .ok_or_else(|| HarnessError::BadResponse {
                context: context.clone(),
                detail: format!("the SDK does not know request {flow_id}"),
            })?;
        let mut changes = request.changes();
        request
            .accept()
            .await
            .map_err(|e| HarnessError::matrix(&context, e))?;
        let remaining = |what: &str| {
            deadline
                .checked_sub(started.elapsed())
                .ok_or_else(|| HarnessError::Timeout {
                    user: self.user_id.to_string(),
                    what: what.to_owned(),
                    waited: deadline,
                    seen: self.summary(),
                })
        };
        // Wait for the SAS to start (cordon sends m.key.verification.start after our
        // ready).
        let sas = loop {
            match request.state() {
                VerificationRequestState::Transitioned {
                    verification: Verification::SasV1(sas),
                } => break sas,
                VerificationRequestState::Cancelled(info) => {
                    return Err(HarnessError::BadResponse {
                        context,
                        detail: format!("the request was cancelled: {}", info.reason()),
                    });
                }
                VerificationRequestState::Done => {
                    return Err(HarnessError::BadResponse {
                        context,
                        detail: "the request finished without an emoji comparison".into(),
                    });
                }
                _ => {}
            }
            let left = remaining("the emoji comparison to start")?;
            match tokio::time::timeout(left, changes.next()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(HarnessError::BadResponse {
                        context,
                        detail: "the request's state stream ended".into(),
                    });
                }
                Err(_) => {
                    return Err(HarnessError::Timeout {
                        user: self.user_id.to_string(),
                        what: "the emoji comparison to start".into(),
                        waited: deadline,
                        seen: self.summary(),
                    });
                }
            }
        };
        let mut sas_changes = sas.changes();
        if !sas.we_started() {
            sas.accept()
                .await
                .map_err(|e| HarnessError::matrix(&context, e))?;
        }
        let emojis = loop {
            match sas.state() {
                SasState::KeysExchanged { emojis, .. } => {
                    let emojis = emojis.ok_or_else(|| HarnessError::BadResponse {
                        context: context.clone(),
                        detail: "the comparison offers no emojis".into(),
                    })?;
                    break emojis
                        .emojis
                        .iter()
                        .map(|e| (e.symbol.to_owned(), e.description.to_owned()))
                        .collect::<Vec<_>>();
                }
                SasState::Cancelled(info) => {
                    return Err(HarnessError::BadResponse {
                        context,
                        detail: format!("the comparison was cancelled: {}", info.reason()),
                    });
                }
                _ => {}
            }
            let left = remaining("the emojis")?;
            match tokio::time::timeout(left, sas_changes.next()).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(HarnessError::BadResponse {
                        context,
                        detail: "the comparison's state stream ended".into(),
                    });
                }
                Err(_) => {
                    return Err(HarnessError::Timeout {
                        user: self.user_id.to_string(),
                        what: "the emojis".into(),
                        waited: deadline,
                        seen: self.summary(),
                    });
                }
            }
        };
        Ok(SasSession {
            user: self.user_id.clone(),
            sas,
            emojis,
        })
    }

    /// Stops the sync task and removes the person's store.
    pub async fn stop(mut self) {
        if let Some(task) = self.sync_task.take() {
            task.abort();
            let _ = task.await;
        }
        // Drop removes the store directory.
    }

    fn room(&self, room_id: &RoomId) -> Result<Room, HarnessError> {
        self.client
            .get_room(room_id)
            .ok_or_else(|| HarnessError::UnknownRoom {
                user: self.user_id.to_string(),
                room: room_id.to_string(),
            })
    }

    /// Waits until `check` finds something in the inbox, or `deadline` passes.
    async fn wait_until<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut check: impl FnMut(&mut InboxState) -> Option<T>,
    ) -> Result<T, HarnessError> {
        let mut changed = self.inbox.changed.subscribe();
        let wait = async {
            loop {
                if let Some(found) = check(&mut self.inbox.lock()) {
                    return found;
                }
                if changed.changed().await.is_err() {
                    // The sender lives in `self.inbox`, so this cannot happen; never spin.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| HarnessError::Timeout {
                user: self.user_id.to_string(),
                what: what.to_owned(),
                waited: deadline,
                seen: self.summary(),
            })
    }

    /// What has arrived so far, for timeout messages (test data only, so bodies are shown).
    fn summary(&self) -> String {
        let state = self.inbox.lock();
        let sync_alive = self.sync_task.as_ref().is_some_and(|t| !t.is_finished());
        let mut parts = vec![format!(
            "{} syncs (sync task running: {sync_alive})",
            state.syncs
        )];
        parts.push(format!(
            "{} invites ({} taken)",
            state.invites.len(),
            state.invites_taken
        ));
        for (room, messages) in &state.messages {
            let last: Vec<String> = messages
                .iter()
                .rev()
                .take(3)
                .map(|m| format!("{}: {:.80}", m.sender, m.body))
                .collect();
            parts.push(format!(
                "{room}: {} messages, latest {last:?}",
                messages.len()
            ));
        }
        for (room, events) in &state.undecryptable {
            parts.push(format!("{room}: {} undecryptable", events.len()));
        }
        parts.join("; ")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(task) = self.sync_task.take() {
            task.abort();
        }
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}
