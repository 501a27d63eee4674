//! The Synapse admin API, used when cordon's account is a server admin.
//!
//! cordon works without admin rights, but then it cannot lift its own rate limits or
//! purge incident rooms; `docs/deploy.md` tells operators why to grant them.

use std::time::Duration;

use matrix_sdk::Client;
use matrix_sdk::ruma::{MxcUri, OwnedMxcUri, RoomId, UserId};
use serde_json::{Value, json};
use tracing::{info, instrument, warn};

use super::MatrixError;

/// A thin client for the Synapse admin endpoints cordon uses.
#[derive(Clone)]
pub struct SynapseAdmin {
    http: reqwest::Client,
    base: url::Url,
    token: String,
}

impl std::fmt::Debug for SynapseAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SynapseAdmin")
            .field("base", &self.base)
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

impl SynapseAdmin {
    /// An admin client speaking for `client`'s logged-in user.
    pub fn new(client: &Client) -> Result<Self, MatrixError> {
        let token = client
            .access_token()
            .ok_or_else(|| MatrixError::Client("not logged in".into()))?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| MatrixError::Admin(e.to_string()))?;
        Ok(Self {
            http,
            base: client.homeserver(),
            token,
        })
    }

    fn url(&self, path: &str) -> Result<url::Url, MatrixError> {
        self.base
            .join(path)
            .map_err(|e| MatrixError::Admin(format!("bad admin URL {path}: {e}")))
    }

    /// Whether the homeserver answers at all now (its unauthenticated versions
    /// endpoint, within 10 s): a failed step is then worth counting as a failure rather
    /// than waiting out an outage.
    pub async fn reachable(&self) -> bool {
        let Ok(url) = self.url("_matrix/client/versions") else {
            return false;
        };
        self.http
            .get(url)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// True when `user` (cordon itself) is a server admin.
    pub async fn is_admin(&self, user: &UserId) -> Result<bool, MatrixError> {
        let url = self.url(&format!(
            "_synapse/admin/v1/users/{}/admin",
            encode(user.as_str())
        ))?;
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| MatrixError::Admin(e.to_string()))?;
        match response.status().as_u16() {
            200 => {
                let body: serde_json::Value = response
                    .json()
                    .await
                    .map_err(|e| MatrixError::Admin(e.to_string()))?;
                Ok(body.get("admin").and_then(|v| v.as_bool()).unwrap_or(false))
            }
            // Synapse answers 403 M_FORBIDDEN "You are not a server admin".
            401 | 403 | 404 => Ok(false),
            code => Err(MatrixError::Admin(format!(
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
        let url = self.url(&format!(
            "_synapse/admin/v1/users/{}/override_ratelimit",
            encode(user.as_str())
        ))?;
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&json!({ "messages_per_second": 0, "burst_count": 0 }))
            .send()
            .await
            .map_err(|e| MatrixError::Admin(e.to_string()))?;
        if !response.status().is_success() {
            return Err(MatrixError::Admin(format!(
                "override_ratelimit answered HTTP {}",
                response.status()
            )));
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
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), MatrixError> {
        let url = self.url(path)?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = std::time::Instant::now();
        let response = request.send().await;
        let timed = || {
            crate::metrics::global().matrix_request(
                &crate::metrics::layer::endpoint(url_path(path)),
                started.elapsed().as_secs_f64(),
            )
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                timed();
                return Err(MatrixError::Admin(format!("{method} {path}: {e}")));
            }
        };
        let status = response.status().as_u16();
        // Error bodies are JSON too (`errcode`, `error`); an empty one reads as null.
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        timed();
        Ok((status, body))
    }

    fn unexpected(what: &str, status: u16, body: &Value) -> MatrixError {
        let error = body.get("error").and_then(Value::as_str).unwrap_or("");
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
        let path = format!("_synapse/admin/v2/rooms/{}", encode(room.as_str()));
        let body = json!({ "purge": true, "block": true, "message": message });
        match self
            .send(reqwest::Method::DELETE, &path, Some(body))
            .await?
        {
            (200, body) => Ok(body
                .get("delete_id")
                .and_then(Value::as_str)
                .map(str::to_owned)),
            // Refused because a deletion of it is under way or done: that is the goal.
            (status, body) => match self.deletion_status(room).await? {
                DeletionStatus::Running(_) | DeletionStatus::Complete => Ok(None),
                _ => Err(Self::unexpected("deleting the room", status, &body)),
            },
        }
    }

    /// The latest status of `room`'s deletions. Synapse lists a deletion by room only
    /// once its task has started: one still `scheduled` answers [`DeletionStatus::Unknown`]
    /// here, so [`Self::deletion`] (by id) is the one to poll when the id is known.
    pub async fn deletion_status(&self, room: &RoomId) -> Result<DeletionStatus, MatrixError> {
        let path = format!(
            "_synapse/admin/v2/rooms/{}/delete_status",
            encode(room.as_str())
        );
        match self.send(reqwest::Method::GET, &path, None).await? {
            (200, body) => Ok(deletion_status_of(&body)),
            (404, _) => Ok(DeletionStatus::Unknown),
            (status, body) => Err(Self::unexpected("the deletion status", status, &body)),
        }
    }

    /// The status of the deletion `delete_id` (from [`Self::delete_room`]), scheduled
    /// ones included.
    pub async fn deletion(&self, delete_id: &str) -> Result<DeletionStatus, MatrixError> {
        let path = format!(
            "_synapse/admin/v2/rooms/delete_status/{}",
            encode(delete_id)
        );
        match self.send(reqwest::Method::GET, &path, None).await? {
            (200, body) => Ok(deletion_status_of(&json!({ "results": [body] }))),
            (404, _) => Ok(DeletionStatus::Unknown),
            (status, body) => Err(Self::unexpected("the deletion status", status, &body)),
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
        let path = format!("_synapse/admin/v1/rooms/{}", encode(room.as_str()));
        match self.send(reqwest::Method::GET, &path, None).await? {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(Self::unexpected("the room's details", status, &body)),
        }
    }

    /// The media Synapse knows to be referenced from `room`'s (unencrypted) events.
    /// Encrypted events hide their media from the server: their addresses come from
    /// cordon's own export.
    pub async fn room_media(&self, room: &RoomId) -> Result<Vec<OwnedMxcUri>, MatrixError> {
        let path = format!("_synapse/admin/v1/room/{}/media", encode(room.as_str()));
        match self.send(reqwest::Method::GET, &path, None).await? {
            (200, body) => Ok(["local", "remote"]
                .iter()
                .filter_map(|k| body.get(*k).and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_str)
                .map(OwnedMxcUri::from)
                .collect()),
            (404, _) => Ok(Vec::new()),
            (status, body) => Err(Self::unexpected("listing the room's media", status, &body)),
        }
    }

    /// Who uploaded one piece of local media (`GET /_synapse/admin/v1/media/…`).
    pub async fn media_upload(&self, mxc: &MxcUri) -> Result<MediaUpload, MatrixError> {
        let path = media_path(mxc)?;
        match self.send(reqwest::Method::GET, &path, None).await? {
            (200, body) => Ok(MediaUpload::By(
                body.pointer("/media_info/user_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            )),
            (404, _) => Ok(MediaUpload::Absent),
            (status, body) => Err(Self::unexpected("reading media", status, &body)),
        }
    }

    /// Deletes one piece of local media (its file and thumbnails).
    pub async fn delete_media(&self, mxc: &MxcUri) -> Result<MediaDeletion, MatrixError> {
        let path = media_path(mxc)?;
        match self.send(reqwest::Method::DELETE, &path, None).await? {
            (200, body) => {
                let total = body.get("total").and_then(Value::as_u64).unwrap_or(0);
                Ok(if total > 0 {
                    MediaDeletion::Deleted
                } else {
                    MediaDeletion::Absent
                })
            }
            (404, _) => Ok(MediaDeletion::Absent),
            (status, body) => Err(Self::unexpected("deleting media", status, &body)),
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
        let (path, admin_api) = if admin {
            (
                format!("_synapse/admin/v2/users/{}", encode(user.as_str())),
                true,
            )
        } else {
            (
                format!("_matrix/client/v3/profile/{}", encode(user.as_str())),
                false,
            )
        };
        let Ok(url) = self.url(&path) else {
            return Account::Unknown;
        };
        let Ok(response) = self.http.get(url).bearer_auth(&self.token).send().await else {
            return Account::Unknown;
        };
        match response.status().as_u16() {
            404 => Account::Missing,
            200 if admin_api => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                if body.get("deactivated").and_then(|d| d.as_bool()) == Some(true) {
                    Account::Deactivated
                } else {
                    Account::Exists
                }
            }
            200 => Account::Exists,
            _ => Account::Unknown,
        }
    }
}

/// Percent-encodes a path segment (user ids contain `@` and `:`).
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() * 3);
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path` without its query string.
fn url_path(path: &str) -> &str {
    path.split_once('?').map_or(path, |(path, _)| path)
}

/// The admin API path of one piece of media: `_synapse/admin/v1/media/{server}/{id}`.
fn media_path(mxc: &MxcUri) -> Result<String, MatrixError> {
    let (server, media) = mxc
        .parts()
        .map_err(|e| MatrixError::Admin(format!("bad media address {mxc}: {e}")))?;
    Ok(format!(
        "_synapse/admin/v1/media/{}/{}",
        encode(server.as_str()),
        encode(media)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_deletion_decides() {
        let body = json!({ "results": [
            { "delete_id": "a", "status": "failed", "error": "boom" },
            { "delete_id": "b", "status": "purging" },
        ]});
        assert_eq!(
            deletion_status_of(&body),
            DeletionStatus::Running("purging".into())
        );
        let done = json!({ "results": [
            { "delete_id": "b", "status": "complete" },
            { "delete_id": "a", "status": "failed", "error": "boom" },
        ]});
        assert_eq!(deletion_status_of(&done), DeletionStatus::Complete);
        let failed = json!({ "results": [{ "status": "failed", "error": "boom" }] });
        assert_eq!(
            deletion_status_of(&failed),
            DeletionStatus::Failed("boom".into())
        );
        assert_eq!(deletion_status_of(&json!({})), DeletionStatus::Unknown);
    }

    #[test]
    fn a_scheduled_deletion_is_running_and_a_cancelled_one_failed() {
        // The by-id answer is one task, wrapped as the by-room list is.
        let scheduled = json!({ "results": [{ "delete_id": "a", "status": "scheduled" }] });
        assert_eq!(
            deletion_status_of(&scheduled),
            DeletionStatus::Running("scheduled".into())
        );
        let cancelled = json!({ "results": [{ "delete_id": "a", "status": "cancelled" }] });
        assert!(matches!(
            deletion_status_of(&cancelled),
            DeletionStatus::Failed(_)
        ));
    }

    #[test]
    fn user_ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode("@cordon:nhs.example"), "%40cordon%3Anhs.example");
        assert_eq!(encode("a/b"), "a%2Fb");
    }
}
