//! What a person's sync loop has seen: the messages they could read, what they could
//! not decrypt, their invites and verification requests, and a signal for each change.

#[allow(clippy::wildcard_imports, reason = "the parent's imports and helpers")]
use super::*;

/// What the sync loop has seen so far.
#[derive(Default)]
pub(super) struct InboxState {
    pub(super) messages: HashMap<OwnedRoomId, Vec<ReceivedMessage>>,
    /// Events that could not be decrypted, per room.
    pub(super) undecryptable: HashMap<OwnedRoomId, Vec<OwnedEventId>>,
    pub(super) invites: Vec<ReceivedInvite>,
    /// How many invites [`TestUser::wait_for_invite`] has handed out.
    pub(super) invites_taken: usize,
    /// How many syncs have completed.
    pub(super) syncs: u64,
    /// Verification requests received from other people's devices: (sender, flow id).
    pub(super) verification_requests: Vec<(OwnedUserId, String)>,
    /// How many of them [`TestUser::accept_sas`] has handed out.
    pub(super) verification_requests_taken: usize,
}

/// The record the event handlers write and the waits read. `changed` is bumped after
/// every write, so a waiter subscribes, looks, and sleeps until the next change.
pub(super) struct Inbox {
    pub(super) state: Mutex<InboxState>,
    pub(super) changed: watch::Sender<u64>,
}

impl Inbox {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(InboxState::default()),
            changed: watch::Sender::new(0),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, InboxState> {
        // A panic while holding this lock cannot leave the log inconsistent (each write
        // is a single push), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut InboxState)) {
        f(&mut self.lock());
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Records readable messages, undecryptable events and invites into the inbox.
pub(super) fn add_handlers(client: &Client, inbox: &Arc<Inbox>, own: &UserId) {
    let messages = inbox.clone();
    client.add_event_handler(
        move |event: OriginalSyncRoomMessageEvent,
              room: Room,
              encryption_info: Option<EncryptionInfo>| {
            let inbox = messages.clone();
            async move {
                let (msgtype, body) = match &event.content.msgtype {
                    MessageType::Text(t) => ("m.text".to_owned(), t.body.clone()),
                    MessageType::Notice(n) => ("m.notice".to_owned(), n.body.clone()),
                    MessageType::Emote(e) => ("m.emote".to_owned(), e.body.clone()),
                    other => (other.msgtype().to_owned(), other.body().to_owned()),
                };
                let message = ReceivedMessage {
                    event_id: event.event_id,
                    sender: event.sender,
                    msgtype,
                    body,
                    encryption_info,
                };
                inbox.update(|s| {
                    s.messages
                        .entry(room.room_id().to_owned())
                        .or_default()
                        .push(message)
                });
            }
        },
    );

    let undecryptable = inbox.clone();
    client.add_event_handler(move |event: OriginalSyncRoomEncryptedEvent, room: Room| {
        let inbox = undecryptable.clone();
        async move {
            inbox.update(|s| {
                s.undecryptable
                    .entry(room.room_id().to_owned())
                    .or_default()
                    .push(event.event_id)
            });
        }
    });

    let requests = inbox.clone();
    client.add_event_handler(move |event: ToDeviceKeyVerificationRequestEvent| {
        let inbox = requests.clone();
        async move {
            let request = (event.sender, event.content.transaction_id.to_string());
            inbox.update(|s| s.verification_requests.push(request));
        }
    });

    let invites = inbox.clone();
    let own = own.to_owned();
    client.add_event_handler(move |event: StrippedRoomMemberEvent, room: Room| {
        let inbox = invites.clone();
        let own = own.clone();
        async move {
            if event.state_key != own || event.content.membership != MembershipState::Invite {
                return;
            }
            let invite = ReceivedInvite {
                room_id: room.room_id().to_owned(),
                inviter: event.sender,
                reason: event.content.reason,
            };
            inbox.update(|s| {
                // A room shows up once per pending invite, even if re-sent in a later sync.
                let pending = s.invites[s.invites_taken..]
                    .iter()
                    .any(|i| i.room_id == invite.room_id);
                if !pending {
                    s.invites.push(invite);
                }
            });
        }
    });
}

/// Syncs forever, retrying with a short backoff on errors (for example while the
/// homeserver restarts). Each completed sync bumps the inbox's counter.
pub(super) async fn sync_loop(client: Client, inbox: Arc<Inbox>) {
    let settings = SyncSettings::default().timeout(SYNC_POLL);
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.sync_once(settings.clone()).await {
            Ok(_) => {
                backoff = Duration::from_millis(100);
                inbox.update(|s| s.syncs += 1);
            }
            Err(e) => {
                tracing::debug!(error = %e, "test user sync failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}
