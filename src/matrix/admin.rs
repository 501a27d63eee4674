//! The Synapse admin API, used when cordon's account is a server admin.
//!
//! cordon works without admin rights, but then it cannot lift its own rate limits or
//! purge incident rooms; `docs/deploy.md` tells operators why to grant them.
//!
//! Each admin endpoint is a typed ruma request (the [`endpoints`] module, written with
//! ruma's `request`/`response` macros as matrix-sdk re-exports them) sent through the
//! bot's own [`Client::send`]: the SDK adds the access token, retries a transient
//! failure (a lost connection, a 5xx, a 429) at most [`RETRIES`] times, and times the
//! request like every other one (`crate::metrics::layer`). ruma percent-encodes the
//! path parameters.

use std::time::Duration;

use matrix_sdk::config::RequestConfig;
use matrix_sdk::ruma::api::OutgoingRequest;
use matrix_sdk::ruma::api::auth_scheme::AccessToken;
use matrix_sdk::ruma::api::client::discovery::get_supported_versions;
use matrix_sdk::ruma::api::client::profile::get_profile;
use matrix_sdk::ruma::api::error::ErrorBody;
use matrix_sdk::ruma::api::path_builder::SinglePath;
use matrix_sdk::ruma::{MxcUri, OwnedMxcUri, OwnedServerName, RoomId, UserId};
use matrix_sdk::{Client, HttpError};
use serde_json::{Value, json};
use tracing::{info, instrument, warn};

use super::MatrixError;

/// How long one admin request may take, each attempt and all of them together.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`SynapseAdmin::reachable`] waits for an answer.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times matrix-sdk retries a transient failure of an admin request.
const RETRIES: usize = 3;

/// A thin client for the Synapse admin endpoints cordon uses, speaking through the
/// bot's matrix-sdk [`Client`].
#[derive(Clone)]
pub struct SynapseAdmin {
    client: Client,
    /// Each request's timeout and retries ([`config`], or [`preflight_config`]).
    request: RequestConfig,
}

impl std::fmt::Debug for SynapseAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynapseAdmin")
            .field("base", &self.client.homeserver())
            .finish_non_exhaustive()
    }
}

/// Whether cordon could lift its own rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimits {
    /// Lifted through the admin API.
    Lifted,
    /// The account is not a server admin; the defaults apply.
    NotAdmin,
}

/// An admin request's response, or the status and error text of the server's refusal.
type Answer<R> = Result<<R as OutgoingRequest>::IncomingResponse, (u16, String)>;

/// The request settings of an admin request.
fn config() -> RequestConfig {
    RequestConfig::new()
        .retry_limit(RETRIES)
        .timeout(TIMEOUT)
        .max_retry_time(TIMEOUT)
}

/// The request settings of `cordon doctor`'s admin requests: one attempt, 10 s, so an
/// operator waits seconds, not minutes, for a verdict.
fn preflight_config() -> RequestConfig {
    RequestConfig::new()
        .disable_retry()
        .timeout(REACHABLE_TIMEOUT)
}

/// What the admin API said about cordon's own account ([`SynapseAdmin::admin_rights`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRights {
    /// A server admin.
    Admin,
    /// Synapse answered: not a server admin (401 or 403).
    NotAdmin,
    /// Something in front of Synapse answered instead (404 or 405: a reverse proxy that
    /// does not pass `/_synapse/admin`), with the status and any error text.
    NotForwarded(u16, String),
}

/// A user's rate-limit override as Synapse holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitOverride {
    /// None: Synapse's default limits apply.
    None,
    /// Messages per second and burst count (0 and 0: no limit).
    Set {
        /// `messages_per_second`.
        messages_per_second: u64,
        /// `burst_count`.
        burst_count: u64,
    },
}

/// The HTTP status of a failed request the server answered, and its `error` text.
fn answered(e: &HttpError) -> Option<(u16, String)> {
    let e = e.as_client_api_error()?;
    let text = match &e.body {
        ErrorBody::Standard(body) => body.message.clone(),
        ErrorBody::Json(body) => body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    };
    Some((e.status_code.as_u16(), text))
}

impl SynapseAdmin {
    /// An admin client speaking for `client`'s logged-in user.
    pub fn new(client: &Client) -> Result<Self, MatrixError> {
        if client.access_token().is_none() {
            return Err(MatrixError::Client("not logged in".into()));
        }
        Ok(Self {
            client: client.clone(),
            request: config(),
        })
    }

    /// As [`Self::new`], for `cordon doctor`: each request tried once, for 10 s.
    pub fn for_preflight(client: &Client) -> Result<Self, MatrixError> {
        Ok(Self {
            request: preflight_config(),
            ..Self::new(client)?
        })
    }

    /// Whether `user` (cordon itself) is a server admin, telling Synapse's refusal
    /// apart from a proxy's.
    pub async fn admin_rights(&self, user: &UserId) -> Result<AdminRights, MatrixError> {
        let request = endpoints::user_admin::Request::new(user.to_owned());
        match self.send("checking admin rights", request).await? {
            Ok(response) if response.admin => Ok(AdminRights::Admin),
            Ok(_) => Ok(AdminRights::NotAdmin),
            // Synapse answers 403 M_FORBIDDEN "You are not a server admin".
            Err((401 | 403, _)) => Ok(AdminRights::NotAdmin),
            Err((code @ (404 | 405), text)) => Ok(AdminRights::NotForwarded(code, text)),
            Err((code, _)) => Err(MatrixError::Admin(format!(
                "checking admin rights answered HTTP {code}"
            ))),
        }
    }

    /// `user`'s rate-limit override (read only; [`Self::lift_own_rate_limits`] sets it).
    pub async fn rate_limit_override(
        &self,
        user: &UserId,
    ) -> Result<RateLimitOverride, MatrixError> {
        let request = endpoints::get_ratelimit::Request::new(user.to_owned());
        match self
            .send("reading the rate-limit override", request)
            .await?
        {
            Ok(endpoints::get_ratelimit::Response {
                messages_per_second: Some(messages_per_second),
                burst_count: Some(burst_count),
            }) => Ok(RateLimitOverride::Set {
                messages_per_second,
                burst_count,
            }),
            Ok(_) => Ok(RateLimitOverride::None),
            Err(answer) => Err(Self::unexpected("reading the rate-limit override", answer)),
        }
    }

    /// Whether the homeserver answers at all now (its unauthenticated versions
    /// endpoint, within 10 s): a failed step is then worth counting as a failure rather
    /// than waiting out an outage.
    pub async fn reachable(&self) -> bool {
        self.client
            .send(get_supported_versions::Request::new())
            .with_request_config(
                RequestConfig::new()
                    .disable_retry()
                    .skip_auth()
                    .timeout(REACHABLE_TIMEOUT),
            )
            .await
            .is_ok()
    }

    /// True when `user` (cordon itself) is a server admin.
    /// A 404 (the admin API not passed by a proxy) counts as not an admin, as
    /// docs/deploy.md says; `cordon doctor` tells the two apart
    /// ([`Self::admin_rights`]).
    pub async fn is_admin(&self, user: &UserId) -> Result<bool, MatrixError> {
        match self.admin_rights(user).await? {
            AdminRights::Admin => Ok(true),
            AdminRights::NotAdmin | AdminRights::NotForwarded(404, _) => Ok(false),
            AdminRights::NotForwarded(code, _) => Err(MatrixError::Admin(format!(
                "checking admin rights answered HTTP {code}"
            ))),
        }
    }

    /// Lifts `user`'s message rate limits when cordon is a server admin. The default
    /// limits refuse a createRoom with more than ten invites.
    #[instrument(skip_all, fields(user = %user))]
    pub async fn lift_own_rate_limits(&self, user: &UserId) -> Result<RateLimits, MatrixError> {
        if !self.is_admin(user).await? {
            warn!(
                "cordon's account is not a server admin: rate limits stay, and rooms cannot \
                 be purged at stand-down (see docs/deploy.md)"
            );
            return Ok(RateLimits::NotAdmin);
        }
        let request = endpoints::override_ratelimit::Request::new(user.to_owned());
        if let Err(e) = self
            .client
            .send(request)
            .with_request_config(self.request)
            .await
        {
            return Err(MatrixError::Admin(match e.as_client_api_error() {
                Some(answer) => format!("override_ratelimit answered HTTP {}", answer.status_code),
                None => e.to_string(),
            }));
        }
        info!("lifted cordon's own rate limits");
        Ok(RateLimits::Lifted)
    }
}

/// What deleting a piece of media found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDeletion {
    /// It was deleted now.
    Deleted,
    /// The server no longer had it (deleted before, or never stored).
    Absent,
}

/// Who uploaded a piece of local media, as Synapse records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaUpload {
    /// Uploaded by this user (`None`: Synapse made it itself, a URL preview).
    By(Option<String>),
    /// The server does not have it (deleted before, or never stored).
    Absent,
}

/// Where a room deletion (`DELETE /_synapse/admin/v2/rooms/…`) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionStatus {
    /// No deletion of this room is known: none was asked for, or (by room) its task is
    /// still scheduled.
    Unknown,
    /// Members are being removed or events purged.
    Running(String),
    /// Done: the room is purged and blocked.
    Complete,
    /// Synapse gave up, with its error.
    Failed(String),
}

impl SynapseAdmin {
    /// Sends an admin request; a failure the server answered comes back as its status
    /// and error text, anything else (no answer, an unreadable one) as an error.
    async fn send<R>(&self, what: &str, request: R) -> Result<Answer<R>, MatrixError>
    where
        R: OutgoingRequest<
                Authentication = AccessToken,
                PathBuilder = SinglePath,
                EndpointError = matrix_sdk::ruma::api::error::Error,
            > + Clone
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        R::IncomingResponse: Send + Sync,
    {
        match self
            .client
            .send(request)
            .with_request_config(self.request)
            .await
        {
            Ok(response) => Ok(Ok(response)),
            Err(e) => match answered(&e) {
                Some(answer) => Ok(Err(answer)),
                None => Err(MatrixError::Admin(format!("{what}: {e}"))),
            },
        }
    }

    fn unexpected(what: &str, (status, error): (u16, String)) -> MatrixError {
        MatrixError::Admin(format!("{what} answered HTTP {status} {error}"))
    }

    /// Asks Synapse to delete `room`: every local member is removed, its events are
    /// purged from the database (`purge`), and it is blocked so nobody can join or
    /// re-create it (`block`). Runs in the background on the server; see
    /// [`Self::wait_deleted`]. Returns the deletion's id, or `None` when Synapse refused
    /// because a deletion of the room is under way or done already (asking again is
    /// harmless).
    pub async fn delete_room(
        &self,
        room: &RoomId,
        message: &str,
    ) -> Result<Option<String>, MatrixError> {
        let request = endpoints::delete_room::Request::new(room.to_owned(), message.to_owned());
        match self.send("deleting the room", request).await? {
            Ok(response) => Ok(response.delete_id),
            // Refused because a deletion of it is under way or done: that is the goal.
            Err(answer) => match self.deletion_status(room).await? {
                DeletionStatus::Running(_) | DeletionStatus::Complete => Ok(None),
                _ => Err(Self::unexpected("deleting the room", answer)),
            },
        }
    }

    /// The latest status of `room`'s deletions. Synapse lists a deletion by room only
    /// once its task has started: one still `scheduled` answers [`DeletionStatus::Unknown`]
    /// here, so [`Self::deletion`] (by id) is the one to poll when the id is known.
    pub async fn deletion_status(&self, room: &RoomId) -> Result<DeletionStatus, MatrixError> {
        let request = endpoints::room_delete_status::Request::new(room.to_owned());
        match self.send("the deletion status", request).await? {
            Ok(response) => Ok(deletion_status_of(&response.body)),
            Err((404, _)) => Ok(DeletionStatus::Unknown),
            Err(answer) => Err(Self::unexpected("the deletion status", answer)),
        }
    }

    /// The status of the deletion `delete_id` (from [`Self::delete_room`]), scheduled
    /// ones included.
    pub async fn deletion(&self, delete_id: &str) -> Result<DeletionStatus, MatrixError> {
        let request = endpoints::delete_status::Request::new(delete_id.to_owned());
        match self.send("the deletion status", request).await? {
            Ok(response) => Ok(deletion_status_of(&json!({ "results": [response.body] }))),
            Err((404, _)) => Ok(DeletionStatus::Unknown),
            Err(answer) => Err(Self::unexpected("the deletion status", answer)),
        }
    }

    /// Waits until `room`'s deletion is complete, polling every `poll`, for at most
    /// `limit`: by `delete_id` when this process asked for it, else by room (after a
    /// restart). A deletion Synapse does not know of (the request was lost, or a
    /// restart came between it and its task) is asked for again, and that one is
    /// followed by its id.
    pub async fn wait_deleted(
        &self,
        room: &RoomId,
        mut delete_id: Option<String>,
        message: &str,
        poll: Duration,
        limit: Duration,
    ) -> Result<(), MatrixError> {
        let started = tokio::time::Instant::now();
        loop {
            let status = match &delete_id {
                Some(id) => self.deletion(id).await?,
                None => self.deletion_status(room).await?,
            };
            match status {
                DeletionStatus::Complete => return Ok(()),
                DeletionStatus::Failed(error) => {
                    return Err(MatrixError::Admin(format!(
                        "Synapse could not delete {room}: {error}"
                    )));
                }
                DeletionStatus::Unknown => delete_id = self.delete_room(room, message).await?,
                DeletionStatus::Running(_) => {}
            }
            if started.elapsed() >= limit {
                return Err(MatrixError::Admin(format!(
                    "the deletion of {room} did not complete within {}s",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Whether the server still knows `room` (its details answer 200).
    pub async fn room_exists(&self, room: &RoomId) -> Result<bool, MatrixError> {
        let request = endpoints::room_details::Request::new(room.to_owned());
        match self.send("the room's details", request).await? {
            Ok(_) => Ok(true),
            Err((404, _)) => Ok(false),
            Err(answer) => Err(Self::unexpected("the room's details", answer)),
        }
    }

    /// The media Synapse knows to be referenced from `room`'s (unencrypted) events.
    /// Encrypted events hide their media from the server: their addresses come from
    /// cordon's own export.
    pub async fn room_media(&self, room: &RoomId) -> Result<Vec<OwnedMxcUri>, MatrixError> {
        let request = endpoints::room_media::Request::new(room.to_owned());
        match self.send("listing the room's media", request).await? {
            Ok(response) => Ok(response.local.into_iter().chain(response.remote).collect()),
            Err((404, _)) => Ok(Vec::new()),
            Err(answer) => Err(Self::unexpected("listing the room's media", answer)),
        }
    }

    /// Who uploaded one piece of local media (`GET /_synapse/admin/v1/media/…`).
    pub async fn media_upload(&self, mxc: &MxcUri) -> Result<MediaUpload, MatrixError> {
        let (server, media) = media_parts(mxc)?;
        let request = endpoints::media::Request::new(server, media);
        match self.send("reading media", request).await? {
            Ok(response) => Ok(MediaUpload::By(
                response.media_info.and_then(|info| info.user_id),
            )),
            Err((404, _)) => Ok(MediaUpload::Absent),
            Err(answer) => Err(Self::unexpected("reading media", answer)),
        }
    }

    /// Deletes one piece of local media (its file and thumbnails).
    pub async fn delete_media(&self, mxc: &MxcUri) -> Result<MediaDeletion, MatrixError> {
        let (server, media) = media_parts(mxc)?;
        let request = endpoints::delete_media::Request::new(server, media);
        match self.send("deleting media", request).await? {
            Ok(response) => Ok(if response.total > 0 {
                MediaDeletion::Deleted
            } else {
                MediaDeletion::Absent
            }),
            Err((404, _)) => Ok(MediaDeletion::Absent),
            Err(answer) => Err(Self::unexpected("deleting media", answer)),
        }
    }
}

/// The status of a `delete_status` answer, which lists every deletion Synapse
/// remembers for the room, in no promised order: one still running decides, then a
/// complete one, then a failure.
fn deletion_status_of(body: &Value) -> DeletionStatus {
    let results = body
        .get("results")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let status = |r: &Value| r.get("status").and_then(Value::as_str).map(str::to_owned);
    if let Some(running) = results
        .iter()
        .filter_map(status)
        .find(|s| !matches!(s.as_str(), "complete" | "failed" | "cancelled"))
    {
        return DeletionStatus::Running(running);
    }
    if results
        .iter()
        .any(|r| status(r).as_deref() == Some("complete"))
    {
        return DeletionStatus::Complete;
    }
    match results
        .iter()
        .find(|r| matches!(status(r).as_deref(), Some("failed" | "cancelled")))
    {
        Some(failed) => DeletionStatus::Failed(
            failed
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no reason given")
                .to_owned(),
        ),
        None => DeletionStatus::Unknown,
    }
}

/// Whether a holder's account can be invited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// It exists and is active.
    Exists,
    /// The homeserver has no such account.
    Missing,
    /// The account was deactivated.
    Deactivated,
    /// The homeserver would not say (another server, or profile lookups restricted).
    Unknown,
}

impl SynapseAdmin {
    /// Whether `user` exists: through the admin API when cordon is a server admin,
    /// else through a profile lookup (which only tells "missing" when the server
    /// answers 404).
    pub async fn account(&self, user: &UserId, admin: bool) -> Account {
        let answer = if admin {
            let request = endpoints::user::Request::new(user.to_owned());
            match self.send("the account", request).await {
                // Old Synapses wrote `deactivated` as 0 or 1: only `true` counts.
                Ok(Ok(response)) if response.deactivated == Some(Value::Bool(true)) => {
                    return Account::Deactivated;
                }
                Ok(Ok(_)) => return Account::Exists,
                Ok(Err(answer)) => Some(answer),
                Err(_) => None,
            }
        } else {
            // The profile endpoint needs no token, but a server that restricts profile
            // lookups wants one: send it anyway.
            let request = get_profile::v3::Request::new(user.to_owned());
            match self
                .client
                .send(request)
                .with_request_config(config().force_auth())
                .await
            {
                Ok(_) => return Account::Exists,
                Err(e) => answered(&e),
            }
        };
        match answer {
            Some((404, _)) => Account::Missing,
            _ => Account::Unknown,
        }
    }
}

/// The server name and media id of a media address, for the admin media paths
/// (`_synapse/admin/v1/media/{server}/{id}`).
fn media_parts(mxc: &MxcUri) -> Result<(OwnedServerName, String), MatrixError> {
    let (server, media) = mxc
        .parts()
        .map_err(|e| MatrixError::Admin(format!("bad media address {mxc}: {e}")))?;
    Ok((server.to_owned(), media.to_owned()))
}

#[cfg(not(feature = "client"))]
compile_error!(
    "the Synapse admin requests need cordon's `client` feature (a default one): ruma's \
     macros compile their client half under it"
);

pub(crate) mod endpoints;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
