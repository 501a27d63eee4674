//! `session.json`: the bot's session, its tokens sealed with the store passphrase.

use std::path::Path;

use matrix_sdk::authentication::matrix::MatrixSession;

use crate::input::config::Secret;
use crate::matrix::MatrixError;

/// `session.json` as written: who and which device in the clear, the tokens sealed
/// with the store passphrase ([`crate::sealed`]). A file from before the seal holds the
/// tokens in the clear (`access_token`, `refresh_token`); it is read, and sealed at the
/// next start ([`connect`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionFile {
    user_id: matrix_sdk::ruma::OwnedUserId,
    device_id: matrix_sdk::ruma::OwnedDeviceId,
    /// The [`SessionTokens`](matrix_sdk::SessionTokens) as JSON, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tokens_sealed: Option<String>,
    /// Only in a file from before the seal.
    #[serde(default, skip_serializing)]
    access_token: Option<String>,
    /// Only in a file from before the seal.
    #[serde(default, skip_serializing)]
    refresh_token: Option<String>,
}

/// A session read from `session.json`.
#[derive(Debug)]
pub struct SavedSession {
    /// The session.
    pub session: MatrixSession,
    /// Whether its tokens were in the clear (a file from before the seal).
    pub was_in_the_clear: bool,
}

/// Reads `session.json`; `None` when there is none. The tokens need the store
/// passphrase.
pub fn read_session(
    path: &Path,
    store_passphrase: &Secret,
) -> Result<Option<SavedSession>, MatrixError> {
    let bad = |why: String| MatrixError::SessionFile {
        path: path.to_path_buf(),
        why,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let file: SessionFile = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "not a cordon session file ({e}); restore it from backup"
        ))
    })?;
    let (tokens, was_in_the_clear) = match (file.tokens_sealed, file.access_token) {
        (Some(sealed), _) => {
            let plain = crate::sealed::open(store_passphrase.expose(), &sealed)
                .map_err(|e| bad(format!("its access token: {e}")))?;
            let tokens: matrix_sdk::SessionTokens = serde_json::from_slice(&plain)
                .map_err(|e| bad(format!("its sealed tokens are not a session ({e})")))?;
            (tokens, false)
        }
        (None, Some(access_token)) => (
            matrix_sdk::SessionTokens {
                access_token,
                refresh_token: file.refresh_token,
            },
            true,
        ),
        (None, None) => {
            return Err(bad(
                "it holds no access token; restore it from backup".to_owned()
            ));
        }
    };
    Ok(Some(SavedSession {
        session: MatrixSession {
            meta: matrix_sdk::SessionMeta {
                user_id: file.user_id,
                device_id: file.device_id,
            },
            tokens,
        },
        was_in_the_clear,
    }))
}

/// Writes the session atomically and owner-only, its tokens sealed with the store
/// passphrase.
pub(crate) fn write_session(
    path: &Path,
    session: &MatrixSession,
    store_passphrase: &Secret,
) -> Result<(), MatrixError> {
    let err = |why: String| MatrixError::SessionFile {
        path: path.to_path_buf(),
        why,
    };
    let tokens = serde_json::to_vec(&session.tokens).map_err(|e| err(e.to_string()))?;
    let file = SessionFile {
        user_id: session.meta.user_id.clone(),
        device_id: session.meta.device_id.clone(),
        tokens_sealed: Some(
            crate::sealed::seal(store_passphrase.expose(), &tokens)
                .map_err(|e| err(e.to_string()))?,
        ),
        access_token: None,
        refresh_token: None,
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
    // Owner-only, though the token is sealed: the device id is no one else's business.
    crate::durable::write_atomic(path, &bytes, 0o600).map_err(|(_, e)| err(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::matrix::session::SESSION_FILE;

    #[test]
    fn the_token_is_sealed_and_a_file_from_before_the_seal_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SESSION_FILE);
        let passphrase = Secret::new("store passphrase".to_owned());
        // As cordon wrote it before the seal: matrix-sdk's session, token in the clear.
        std::fs::write(
            &path,
            r#"{"user_id":"@cordon:hs.example","device_id":"DEVICEID","access_token":"syt_secret_token"}"#,
        )
        .unwrap();
        let old = read_session(&path, &passphrase).unwrap().unwrap();
        assert!(old.was_in_the_clear);
        assert_eq!(old.session.tokens.access_token, "syt_secret_token");

        write_session(&path, &old.session, &passphrase).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("syt_secret_token"), "{text}");
        assert!(text.contains("DEVICEID"), "{text}");
        let new = read_session(&path, &passphrase).unwrap().unwrap();
        assert!(!new.was_in_the_clear);
        assert_eq!(new.session.tokens.access_token, "syt_secret_token");
        assert_eq!(new.session.meta.device_id, "DEVICEID");

        let wrong = Secret::new("another".to_owned());
        let err = read_session(&path, &wrong).unwrap_err().to_string();
        assert!(err.contains("passphrase"), "{err}");
        assert!(
            read_session(&dir.path().join("none"), &passphrase)
                .unwrap()
                .is_none()
        );
    }
}
