//! Enrolment by fingerprint: the person reads out their master key (Element shows it as
//! the "cross-signing public key"), the operator types it, and cordon signs the
//! person's identity only if it matches the homeserver's copy exactly.

use chrono::{DateTime, Utc};
use matrix_sdk::Client;
use matrix_sdk::ruma::UserId;
use serde_json::json;

use super::{TrustError, master_key, sign_and_record};
use crate::store::{EnrolMethod, Enrolment, Store};

/// Length of an ed25519 public key in unpadded base64.
const KEY_LEN: usize = 43;

/// Normalises a fingerprint as people type it: spaces, dashes and line breaks between
/// groups are dropped; the rest must be 43 characters of unpadded base64 (a trailing
/// `=` is accepted).
pub fn parse(input: &str) -> Result<String, TrustError> {
    let key: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let key = key.trim_end_matches('=');
    if key.is_empty() {
        return Err(TrustError::BadFingerprint(
            "the fingerprint is empty: give the person's master key, as Element shows it \
             under Settings > Security > Cross-signing"
                .to_owned(),
        ));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
    {
        return Err(TrustError::BadFingerprint(format!(
            "the fingerprint contains {bad:?}, which is not base64; read it out again"
        )));
    }
    if key.chars().count() != KEY_LEN {
        return Err(TrustError::BadFingerprint(format!(
            "the fingerprint has {} characters; a master key has {KEY_LEN} (ignoring spaces)",
            key.chars().count()
        )));
    }
    Ok(key.to_owned())
}

/// Checks `fingerprint` against `user`'s master key as the homeserver has it now and,
/// on a match, signs the identity and records the enrolment. A mismatch signs nothing,
/// is audited, and is an error.
pub async fn verify(
    client: &Client,
    store: &Store,
    user: &UserId,
    fingerprint: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Enrolment, TrustError> {
    let wanted = parse(fingerprint)?;
    if client.user_id() == Some(user) {
        return Err(TrustError::OwnAccount(user.to_string()));
    }
    let identity = client
        .encryption()
        .request_user_identity(user)
        .await
        .map_err(|e| TrustError::matrix(format!("fetching {user}'s identity"), e))?
        .ok_or_else(|| TrustError::NoIdentity {
            user: user.to_string(),
        })?;
    if master_key(&identity).as_deref() != Some(wanted.as_str()) {
        store.audit(
            by,
            "identity.verify-failed",
            None,
            json!({ "user": user, "method": "fingerprint", "why": "mismatch" }),
            now,
        )?;
        return Err(TrustError::Mismatch {
            user: user.to_string(),
        });
    }
    let enrolment = sign_and_record(store, &identity, EnrolMethod::Fingerprint, by, now).await?;
    super::unblock_signed_devices(client, user).await?;
    Ok(enrolment)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "Gw2Xw0Jx4t0Ao7m1n0v5v0bqkq2x7B2xD6F9p0ZQ1Yc";

    #[test]
    fn accepts_a_key_as_typed_in_groups() {
        let grouped = "Gw2X w0Jx 4t0A o7m1 n0v5 v0bq kq2x 7B2x D6F9 p0ZQ 1Yc";
        assert_eq!(parse(grouped).unwrap(), KEY);
        assert_eq!(parse(&format!("  {KEY}=\n")).unwrap(), KEY);
    }

    #[test]
    fn refuses_wrong_length_and_foreign_characters() {
        assert!(matches!(parse(""), Err(TrustError::BadFingerprint(_))));
        let short = &KEY[..40];
        let err = parse(short).unwrap_err().to_string();
        assert!(err.contains("40 characters"), "{err}");
        let bad = format!("{}!", &KEY[..42]);
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("'!'"), "{err}");
    }
}
