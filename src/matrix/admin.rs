//! The Synapse admin API, used when cordon's account is a server admin.
//!
//! cordon works without admin rights, but then it cannot lift its own rate limits or
//! purge incident rooms; `docs/deploy.md` tells operators why to grant them.

use matrix_sdk::Client;
use matrix_sdk::ruma::UserId;
use serde_json::json;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_encoded_as_one_path_segment() {
        assert_eq!(encode("@cordon:nhs.example"), "%40cordon%3Anhs.example");
        assert_eq!(encode("a/b"), "a%2Fb");
    }
}
