//! What an attacker can do to an incident without anyone's encryption keys, for the
//! guard's tests.
//!
//! - [`ServerAdmin`]: someone with a Synapse admin account (a rogue or compromised
//!   operator, or a stolen admin token). `make_room_admin` forges a power-levels change
//!   and an invite *in the name of the room's creator* (cordon); the admin join API
//!   force-joins any local user. The same account reads rooms' state through the admin
//!   API, as an auditor would.
//! - [`login_unverified_device`]: someone with a holder's password signs in on a new
//!   device that the holder never cross-signs.
//! - [`ServerAdmin::replay`]: the same admin logs in as someone and posts the
//!   ciphertext of one of their earlier messages again, as a new event.
//! - [`login_cross_signed_device`]: a holder adds a device and cross-signs it.
//! - [`reset_identity`]: a holder's cross-signing identity replaced by a new one (what
//!   an account takeover, or an honest "reset encryption", looks like to cordon).

use std::collections::BTreeMap;

use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};
use url::Url;

use cordon::dev::synapse::{http_client, json_response};
use cordon::dev::{HarnessError, Synapse, TestUser};

use crate::encode;

/// A server admin acting through the Synapse admin API with their own access token.
#[derive(Clone)]
pub struct ServerAdmin {
    base: Url,
    token: String,
    user_id: OwnedUserId,
    http: reqwest::Client,
}

impl std::fmt::Debug for ServerAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAdmin")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl ServerAdmin {
    /// Registers a new server admin account `localpart` on `hs`.
    pub async fn register(hs: &Synapse, localpart: &str) -> Result<Self, HarnessError> {
        let password = format!("pw-{localpart}");
        let session = hs.register_session(localpart, &password, true).await?;
        let http = http_client()?;
        Ok(Self {
            base: hs.base_url(),
            token: session.access_token,
            user_id: session.user_id,
            http,
        })
    }

    /// The admin's own user id.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, HarnessError> {
        let context = format!("{} {method} {path}", self.user_id);
        let url = self
            .base
            .join(path)
            .map_err(|e| HarnessError::BadResponse {
                context: context.clone(),
                detail: e.to_string(),
            })?;
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        json_response(&context, request.send().await).await
    }

    /// `POST /_synapse/admin/v1/rooms/{room}/make_room_admin {"user_id": user}`: Synapse
    /// sends, as the room's most powerful local member (cordon, the creator), a
    /// power-levels event giving `user` that member's power, and an invite if `user` is
    /// not in the room.
    pub async fn make_room_admin(&self, room: &RoomId, user: &UserId) -> Result<(), HarnessError> {
        self.call(
            reqwest::Method::POST,
            &format!(
                "_synapse/admin/v1/rooms/{}/make_room_admin",
                encode(room.as_str())
            ),
            Some(json!({ "user_id": user })),
        )
        .await
        .map(drop)
    }

    /// Joins `room` as the admin's own account (it must have been invited).
    pub async fn join(&self, room: &RoomId) -> Result<(), HarnessError> {
        self.call(
            reqwest::Method::POST,
            &format!("_matrix/client/v3/rooms/{}/join", encode(room.as_str())),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Sets room state as the admin's own account (`PUT /rooms/{room}/state/{type}/`),
    /// which works once a forged power level lets it.
    pub async fn send_state(
        &self,
        room: &RoomId,
        event_type: &str,
        content: Value,
    ) -> Result<(), HarnessError> {
        self.call(
            reqwest::Method::PUT,
            &format!(
                "_matrix/client/v3/rooms/{}/state/{}/",
                encode(room.as_str()),
                encode(event_type)
            ),
            Some(content),
        )
        .await
        .map(drop)
    }

    /// Sets room state under a state key as the admin's own account.
    pub async fn send_state_keyed(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: Value,
    ) -> Result<(), HarnessError> {
        self.call(
            reqwest::Method::PUT,
            &format!(
                "_matrix/client/v3/rooms/{}/state/{}/{}",
                encode(room.as_str()),
                encode(event_type),
                encode(state_key)
            ),
            Some(content),
        )
        .await
        .map(drop)
    }

    /// Bans (`action` `ban`) or kicks (`kick`) `user` from `room` as the admin's own
    /// account, which works once a forged power level lets it.
    pub async fn eject(
        &self,
        room: &RoomId,
        user: &UserId,
        action: &str,
    ) -> Result<(), HarnessError> {
        self.call(
            reqwest::Method::POST,
            &format!(
                "_matrix/client/v3/rooms/{}/{}",
                encode(room.as_str()),
                encode(action)
            ),
            Some(json!({ "user_id": user, "reason": "moved to the new room" })),
        )
        .await
        .map(drop)
    }

    /// Makes `user` leave `room` with a token the admin API issued for them (what a
    /// rogue admin does to take cordon out of a room it created).
    pub async fn leave_as(&self, user: &UserId, room: &RoomId) -> Result<(), HarnessError> {
        let token = self.login_as(user).await?;
        let context = format!("{user} leaving {room}");
        let url = self
            .base
            .join(&format!(
                "_matrix/client/v3/rooms/{}/leave",
                encode(room.as_str())
            ))
            .map_err(|e| HarnessError::BadResponse {
                context: context.clone(),
                detail: e.to_string(),
            })?;
        json_response(
            &context,
            self.http
                .post(url)
                .bearer_auth(&token)
                .json(&json!({}))
                .send()
                .await,
        )
        .await
        .map(drop)
    }

    /// `POST /_synapse/admin/v1/join/{room} {"user_id": user}`: joins a local user to a
    /// room without their consent. In an invite-only room Synapse first invites them as
    /// the admin, so the admin must be a member with invite power.
    pub async fn force_join(&self, room: &RoomId, user: &UserId) -> Result<(), HarnessError> {
        self.call(
            reqwest::Method::POST,
            &format!("_synapse/admin/v1/join/{}", encode(room.as_str())),
            Some(json!({ "user_id": user })),
        )
        .await
        .map(drop)
    }

    /// Every current state event of `room`, through the admin API.
    pub async fn room_state(&self, room: &RoomId) -> Result<Vec<Value>, HarnessError> {
        let reply = self
            .call(
                reqwest::Method::GET,
                &format!("_synapse/admin/v1/rooms/{}/state", encode(room.as_str())),
                None,
            )
            .await?;
        Ok(reply
            .get("state")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// The content of the state event `(event_type, state_key)` in `room`, if any.
    pub async fn state_content(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Value>, HarnessError> {
        Ok(self
            .room_state(room)
            .await?
            .into_iter()
            .find(|e| e["type"] == event_type && e["state_key"] == state_key)
            .map(|e| e["content"].clone()))
    }

    /// `user`'s membership in `room` (`join`, `invite`, `leave`, `ban`), if any.
    pub async fn membership(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Option<String>, HarnessError> {
        Ok(self
            .state_content(room, "m.room.member", user.as_str())
            .await?
            .and_then(|c| c["membership"].as_str().map(str::to_owned)))
    }

    /// `POST /_synapse/admin/v1/users/{user}/login`: an access token for `user`, for a
    /// new session of theirs, with no password (what a rogue admin uses to post as
    /// someone).
    pub async fn login_as(&self, user: &UserId) -> Result<String, HarnessError> {
        let reply = self
            .call(
                reqwest::Method::POST,
                &format!("_synapse/admin/v1/users/{}/login", encode(user.as_str())),
                Some(json!({})),
            )
            .await?;
        reply["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| HarnessError::BadResponse {
                context: format!("logging in as {user}"),
                detail: reply.to_string(),
            })
    }

    /// Replays `event` of `room` as `user`: reads the event as the homeserver stores it
    /// (an `m.room.encrypted` event stays encrypted) with a token from
    /// [`ServerAdmin::login_as`], and posts its type and content again as a new event.
    /// Nobody's keys are needed. Returns the new event's id.
    pub async fn replay(
        &self,
        user: &UserId,
        room: &RoomId,
        event: &EventId,
    ) -> Result<OwnedEventId, HarnessError> {
        let token = self.login_as(user).await?;
        let context = format!("replaying {event} as {user}");
        let as_user = |method: reqwest::Method, path: String| {
            let url = self
                .base
                .join(&path)
                .map_err(|e| HarnessError::BadResponse {
                    context: context.clone(),
                    detail: e.to_string(),
                })?;
            Ok::<_, HarnessError>(self.http.request(method, url).bearer_auth(&token))
        };
        let stored = json_response(
            &context,
            as_user(
                reqwest::Method::GET,
                format!(
                    "_matrix/client/v3/rooms/{}/event/{}",
                    encode(room.as_str()),
                    encode(event.as_str())
                ),
            )?
            .send()
            .await,
        )
        .await?;
        let event_type = stored["type"].as_str().unwrap_or_default().to_owned();
        let txn = format!("replay{}", rand::random::<u64>());
        let sent = json_response(
            &context,
            as_user(
                reqwest::Method::PUT,
                format!(
                    "_matrix/client/v3/rooms/{}/send/{}/{txn}",
                    encode(room.as_str()),
                    encode(&event_type)
                ),
            )?
            .json(&stored["content"])
            .send()
            .await,
        )
        .await?;
        sent["event_id"]
            .as_str()
            .and_then(|e| OwnedEventId::try_from(e).ok())
            .ok_or_else(|| HarnessError::BadResponse {
                context,
                detail: sent.to_string(),
            })
    }

    /// The rooms cordon (`creator`) created for `incident`, by room key, from the tags
    /// in their create events.
    pub async fn incident_rooms(
        &self,
        creator: &UserId,
        incident: &str,
    ) -> Result<BTreeMap<String, OwnedRoomId>, HarnessError> {
        let list = self
            .call(
                reqwest::Method::GET,
                "_synapse/admin/v1/rooms?limit=1000",
                None,
            )
            .await?;
        let mut out = BTreeMap::new();
        let rooms = list["rooms"].as_array().cloned().unwrap_or_default();
        for r in rooms
            .iter()
            .filter(|r| r["creator"].as_str() == Some(creator.as_str()))
        {
            let Some(id) = r["room_id"].as_str().and_then(|s| RoomId::parse(s).ok()) else {
                continue;
            };
            let Some(create) = self.state_content(&id, "m.room.create", "").await? else {
                continue;
            };
            if create["org.cordon.incident"].as_str() == Some(incident)
                && let Some(key) = create["org.cordon.room_key"].as_str()
            {
                out.insert(key.to_owned(), id);
            }
        }
        Ok(out)
    }
}

/// Signs in as `localpart` on a new device and leaves it as an attacker with the
/// password would: not cross-signed by its owner (the person already has an identity,
/// so no new one is bootstrapped, and nobody verifies the device). Fails if the device
/// somehow is cross-signed.
pub async fn login_unverified_device(
    hs: &Synapse,
    localpart: &str,
    password: &str,
) -> Result<TestUser, HarnessError> {
    let device = TestUser::login(hs, localpart, password).await?;
    let context = format!("checking {localpart}'s new device");
    let own = device
        .client()
        .encryption()
        .get_own_device()
        .await
        .map_err(|e| HarnessError::matrix(&context, e))?;
    if own.is_some_and(|d| d.is_cross_signed_by_owner()) {
        return Err(HarnessError::BadResponse {
            context,
            detail: "the new device is cross-signed (was a new identity bootstrapped?)".into(),
        });
    }
    Ok(device)
}

/// Signs in as `localpart` on a new device and has `owner` (a device of the same
/// person holding their self-signing key) cross-sign it: a device the person really
/// adds, which a client that trusts their identity trusts too.
pub async fn login_cross_signed_device(
    hs: &Synapse,
    owner: &TestUser,
    localpart: &str,
    password: &str,
) -> Result<TestUser, HarnessError> {
    let device = TestUser::login(hs, localpart, password).await?;
    let id = device
        .client()
        .device_id()
        .ok_or_else(|| HarnessError::BadResponse {
            context: format!("{localpart}'s new device"),
            detail: "no device id".into(),
        })?
        .to_owned();
    let context = format!("cross-signing {localpart}'s device {id}");
    let encryption = owner.client().encryption();
    let waited = async {
        loop {
            // The owner learns of the new device through a key query.
            let _ = encryption.request_user_identity(owner.user_id()).await;
            if let Ok(Some(d)) = encryption.get_device(owner.user_id(), &id).await {
                return d;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    };
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), waited)
        .await
        .map_err(|_| HarnessError::BadResponse {
            context: context.clone(),
            detail: "the owner never saw the new device".into(),
        })?;
    found
        .verify()
        .await
        .map_err(|e| HarnessError::BadResponse {
            context,
            detail: e.to_string(),
        })?;
    Ok(device)
}

/// Replaces `user`'s cross-signing identity with a new one from their current device
/// (answering the server's password prompt). Returns the new master key, as it would
/// be read out for `cordon verify --fingerprint`.
pub async fn reset_identity(user: &TestUser, password: &str) -> Result<String, HarnessError> {
    let context = format!("resetting {}'s identity", user.user_id());
    let encryption = user.client().encryption();
    let handle = encryption
        .reset_cross_signing()
        .await
        .map_err(|e| HarnessError::matrix(&context, e))?;
    if let Some(handle) = handle {
        let CrossSigningResetAuthType::Uiaa(info) = handle.auth_type() else {
            return Err(HarnessError::BadResponse {
                context,
                detail: "the server asks for OAuth approval".into(),
            });
        };
        let mut auth = uiaa::Password::new(
            uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(
                user.user_id().localpart().to_owned(),
            )),
            password.to_owned(),
        );
        auth.session = info.session.clone();
        handle
            .auth(Some(uiaa::AuthData::Password(auth)))
            .await
            .map_err(|e| HarnessError::matrix(&context, e))?;
    }
    user.master_key_fingerprint().await
}
