//! Who cordon trusts: enrolment (`cordon verify`), revocation, and the trust status of
//! role holders and command senders.
//!
//! "Verified" means matrix-sdk's `UserIdentity::is_verified()` (cordon's user-signing
//! key signed the person's master key) and not revoked in cordon's store. A signature
//! cannot be withdrawn, so a revocation lives in the store and the person's devices are
//! blacklisted locally, which keeps room keys from them.
//!
//! - [`fingerprint`]: the scriptable enrolment path, a master key read out in person.
//! - [`sas`]: the interactive emoji comparison with one of the person's devices.
//! - [`socket`]: the local admin socket `cordon verify` talks to while the bot runs,
//!   its JSON-lines protocol, and the server that runs every request with the bot's
//!   own client (also in-process when the bot is stopped).
//! - [`cli`]: the operator's side of `cordon verify`: find the running bot or take the
//!   state directory itself, send the request, show the emojis, ask, print the result.
//! - [`replay`]: which megolm message a command came in, so a replayed copy is
//!   refused.
//! - [`recovery`]: `cordon recover`, cordon's identity restored on a new disk from the
//!   recovery key printed at first start.

pub mod cli;
pub mod fingerprint;
pub mod recovery;
pub mod replay;
pub mod sas;
pub mod sender;
pub mod socket;

use chrono::{DateTime, Utc};
use matrix_sdk::Client;
use matrix_sdk::encryption::LocalTrust;
use matrix_sdk::encryption::identities::UserIdentity;
use matrix_sdk::ruma::UserId;
use serde::{Deserialize, Serialize};

use crate::store::{Enrolment, Revocation, Store, StoreError};

/// Why an enrolment, revocation or trust check failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The person has published no cross-signing identity.
    #[error(
        "{user} has no cross-signing identity on the homeserver: they must set up \
         cross-signing (in Element: Settings > Security > \"Set up\" secure backup or \
         verify a session) before they can be enrolled"
    )]
    NoIdentity {
        /// The person.
        user: String,
    },
    /// The fingerprint read out does not match the server's copy.
    #[error(
        "the fingerprint does not match {user}'s master key on the homeserver; nothing \
         was signed. Check it with the person again; if it still differs, their account \
         or the homeserver may be compromised"
    )]
    Mismatch {
        /// The person.
        user: String,
    },
    /// The fingerprint is not a master key.
    #[error("{0}")]
    BadFingerprint(String),
    /// cordon's own account cannot be enrolled.
    #[error("{0} is cordon's own account; it cannot enrol itself")]
    OwnAccount(String),
    /// The comparison was cancelled, mismatched or timed out.
    #[error("{0}")]
    Cancelled(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// matrix-sdk failed.
    #[error("{context}: {detail}")]
    Matrix {
        /// What cordon was doing.
        context: String,
        /// The SDK's error.
        detail: String,
    },
}

impl TrustError {
    pub(crate) fn matrix(context: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Matrix {
            context: context.into(),
            detail: e.to_string(),
        }
    }
}

/// A person's standing with cordon, as `declare`, the guard and `verify --list` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Trust {
    /// Verified by cordon and not revoked.
    Verified,
    /// The person has no cross-signing identity.
    NoCrossSigning,
    /// They have an identity that cordon has not verified.
    NotEnrolled,
    /// Their identity changed after cordon verified it (a reset, or an attack).
    IdentityChanged,
    /// An operator revoked their enrolment.
    Revoked,
    /// Their identity could not be fetched.
    Unknown {
        /// Why.
        why: String,
    },
}

impl Trust {
    /// True for [`Trust::Verified`].
    pub fn is_verified(&self) -> bool {
        matches!(self, Trust::Verified)
    }

    /// The reason a holder is pending, as the commander reads it.
    pub fn reason(&self) -> String {
        match self {
            Trust::Verified => "verified".to_owned(),
            Trust::NoCrossSigning => "no cross-signing (they must set it up first)".to_owned(),
            Trust::NotEnrolled => "not enrolled".to_owned(),
            Trust::IdentityChanged => {
                "identity changed since enrolment (re-verify them in person)".to_owned()
            }
            Trust::Revoked => "enrolment revoked by an operator".to_owned(),
            Trust::Unknown { why } => format!("identity could not be checked ({why})"),
        }
    }
}

/// The trust status of `user`. With `fetch`, the identity is queried from the
/// homeserver first (for people cordon shares no room with yet, whose keys it does not
/// track); otherwise the local copy, kept current by sync, is used.
pub async fn status(client: &Client, store: &Store, user: &UserId, fetch: bool) -> Trust {
    match store.enrolment(user.as_str()) {
        Ok(Some(e)) if !e.is_current() => return Trust::Revoked,
        Ok(_) => {}
        Err(e) => {
            return Trust::Unknown {
                why: format!("store: {e}"),
            };
        }
    }
    let identity = if fetch {
        client.encryption().request_user_identity(user).await
    } else {
        match client.encryption().get_user_identity(user).await {
            Ok(Some(i)) => Ok(Some(i)),
            Ok(None) => client.encryption().request_user_identity(user).await,
            Err(e) => Err(e.into()),
        }
    };
    match identity {
        Ok(Some(identity)) => classify(&identity, store, user),
        Ok(None) => Trust::NoCrossSigning,
        Err(e) => Trust::Unknown { why: e.to_string() },
    }
}

fn classify(identity: &UserIdentity, store: &Store, user: &UserId) -> Trust {
    let current = master_key(identity);
    let enrolled_key = store
        .enrolment(user.as_str())
        .ok()
        .flatten()
        .and_then(|e| e.master_key);
    if identity.is_verified() {
        match (&enrolled_key, &current) {
            // Signed by cordon, but not the key the operator checked: treat as changed.
            (Some(enrolled), Some(now)) if enrolled != now => Trust::IdentityChanged,
            _ => Trust::Verified,
        }
    } else if identity.has_verification_violation()
        || identity.was_previously_verified()
        || enrolled_key.is_some()
    {
        Trust::IdentityChanged
    } else {
        Trust::NotEnrolled
    }
}

/// The identity's master key as unpadded base64, the form people read out.
pub fn master_key(identity: &UserIdentity) -> Option<String> {
    identity.master_key().get_first_key().map(|k| k.to_base64())
}

/// Signs `identity` with cordon's user-signing key and records the enrolment.
pub(crate) async fn sign_and_record(
    store: &Store,
    identity: &UserIdentity,
    method: crate::store::EnrolMethod,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Enrolment, TrustError> {
    let user = identity.user_id().to_owned();
    identity
        .verify()
        .await
        .map_err(|e| TrustError::matrix(format!("signing {user}'s identity"), e))?;
    record(store, identity, method, by, now)
}

/// After a new enrolment: the devices blacklisted by an earlier revocation that the
/// newly enrolled identity cross-signs are no longer blacklisted (devices it does not
/// sign stay as they are: cordon never shares keys with them anyway).
pub(crate) async fn unblock_signed_devices(
    client: &Client,
    user: &UserId,
) -> Result<(), TrustError> {
    set_local_trust_where(client, user, LocalTrust::Unset, |d| {
        d.is_blacklisted() && d.is_cross_signed_by_owner()
    })
    .await
    .map(drop)
}

/// Records the enrolment of `identity`, which cordon has already signed (by
/// [`sign_and_record`], or by matrix-sdk at the end of an emoji comparison).
pub(crate) fn record(
    store: &Store,
    identity: &UserIdentity,
    method: crate::store::EnrolMethod,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Enrolment, TrustError> {
    let enrolment = Enrolment {
        user: identity.user_id().to_string(),
        master_key: master_key(identity),
        method,
        by: by.to_owned(),
        verified_at: now,
        revoked: None,
    };
    store.record_enrolment(&enrolment)?;
    Ok(enrolment)
}

/// Revokes `user`: records the revocation (audited) and blacklists every device of
/// theirs that cordon knows, so that no room key goes to them again.
pub async fn revoke(
    client: &Client,
    store: &Store,
    user: &UserId,
    by: &str,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<Enrolment, TrustError> {
    let record = store.revoke_enrolment(
        user.as_str(),
        Revocation {
            by: by.to_owned(),
            at: now,
            reason,
        },
    )?;
    blacklist_devices(client, user).await?;
    Ok(record)
}

/// Blacklists every device of `user`, fetched from the homeserver first so that devices
/// the bot has not seen yet are covered too (room keys are withheld from them). Returns
/// how many were blacklisted now.
pub async fn blacklist_devices(client: &Client, user: &UserId) -> Result<usize, TrustError> {
    let _ = client.encryption().request_user_identity(user).await;
    blacklist_new_devices(client, user).await
}

/// What [`enforce`] found and did for one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforced {
    /// Not enrolled, or enrolled and unchanged: nothing to do.
    Nothing,
    /// Their identity is no longer the one enrolled: every device's local trust was
    /// taken away (`distrusted` had it until now).
    IdentityChanged {
        /// The master key now on the homeserver (`none` without one).
        master_key: String,
        /// How many devices lost local trust just now.
        distrusted: usize,
    },
    /// Their enrolment is revoked: every device is blacklisted (`blacklisted` just now).
    Revoked {
        /// How many devices were blacklisted just now.
        blacklisted: usize,
    },
}

/// Makes cordon's crypto store agree with the person's standing, from the local copy
/// of their keys (kept current by sync and by the key queries cordon makes):
///
/// - revoked: every device is blacklisted, including devices that appeared after the
///   revocation (cordon's signature on their identity stays valid on the homeserver,
///   so a device they cross-sign later would otherwise be trusted);
/// - identity changed since enrolment: no device keeps local trust (an emoji comparison
///   trusts the compared device locally, and that trust would otherwise outlive the
///   identity), so no room key of cordon's reaches any of their devices until they are
///   enrolled again.
///
/// Called on every device and identity update, at each guard pass and before cordon
/// sends into a room a revoked person is in. Failures are logged; the next call
/// repeats the work.
pub async fn enforce(client: &Client, store: &Store, user: &UserId) -> Enforced {
    let enrolment = match store.enrolment(user.as_str()) {
        Ok(Some(e)) => e,
        Ok(None) => return Enforced::Nothing,
        Err(e) => {
            tracing::error!(error = %e, "store: reading an enrolment");
            return Enforced::Nothing;
        }
    };
    if !enrolment.is_current() {
        return match blacklist_new_devices(client, user).await {
            Ok(blacklisted) => Enforced::Revoked { blacklisted },
            Err(e) => {
                tracing::warn!(user = %user, error = %e, "could not blacklist a revoked person's devices");
                Enforced::Revoked { blacklisted: 0 }
            }
        };
    }
    let identity = match client.encryption().get_user_identity(user).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "could not read a person's identity");
            return Enforced::Nothing;
        }
    };
    let current = identity.as_ref().and_then(master_key);
    let changed = match (&enrolment.master_key, &current) {
        (Some(enrolled), Some(now)) => enrolled != now,
        // Enrolled, and now without any identity: a reset in progress, or removed.
        (Some(_), None) => true,
        // A record without a key (recovered, or only a revocation): cordon's signature
        // is all there is to go by.
        (None, _) => identity.as_ref().is_some_and(|i| !i.is_verified()),
    };
    if !changed {
        return Enforced::Nothing;
    }
    let distrusted = match distrust_devices(client, user).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "could not take local trust from a person's devices");
            0
        }
    };
    Enforced::IdentityChanged {
        master_key: current.unwrap_or_else(|| "none".to_owned()),
        distrusted,
    }
}

/// Takes local trust (what an emoji comparison gives the compared device) from every
/// device of `user`. Returns how many had it.
pub async fn distrust_devices(client: &Client, user: &UserId) -> Result<usize, TrustError> {
    set_local_trust_where(client, user, LocalTrust::Unset, |d| {
        d.local_trust_state() == LocalTrust::Verified
    })
    .await
}

/// Blacklists every device of `user` cordon knows that is not blacklisted yet, from
/// the local copy of their keys. Returns how many were blacklisted now.
async fn blacklist_new_devices(client: &Client, user: &UserId) -> Result<usize, TrustError> {
    set_local_trust_where(client, user, LocalTrust::BlackListed, |d| {
        !d.is_blacklisted()
    })
    .await
}

/// Sets the local trust of every device of `user` that `pick` picks, in cordon's
/// crypto store. Returns how many it set.
async fn set_local_trust_where(
    client: &Client,
    user: &UserId,
    trust: LocalTrust,
    pick: impl Fn(&matrix_sdk::encryption::identities::Device) -> bool,
) -> Result<usize, TrustError> {
    let devices = client
        .encryption()
        .get_user_devices(user)
        .await
        .map_err(|e| TrustError::matrix(format!("listing {user}'s devices"), e))?;
    let mut n = 0;
    for device in devices.devices().filter(|d| pick(d)) {
        device
            .set_local_trust(trust)
            .await
            .map_err(|e| TrustError::matrix(format!("setting {user}'s device's trust"), e))?;
        n += 1;
    }
    Ok(n)
}

/// One row of `cordon verify --list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listed {
    /// The record.
    pub enrolment: Enrolment,
    /// The person's standing now.
    pub trust: Trust,
}

/// Every enrolment record with the person's standing now.
pub async fn list(client: &Client, store: &Store) -> Result<Vec<Listed>, TrustError> {
    let mut out = Vec::new();
    for enrolment in store.enrolments()? {
        let trust = match UserId::parse(enrolment.user.as_str()) {
            Ok(user) => status(client, store, &user, true).await,
            Err(e) => Trust::Unknown { why: e.to_string() },
        };
        out.push(Listed { enrolment, trust });
    }
    Ok(out)
}
