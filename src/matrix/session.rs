//! The bot's Matrix session: one device, kept across restarts.
//!
//! The first start logs in with the password and writes the session (user, device,
//! access token) to `session.json` in the state directory, owner-only. Every later start
//! restores it, so cordon keeps one device and the people who verified it need not do so
//! again. The sqlite crypto and state store lives beside it, encrypted with the store
//! passphrase.

use std::io::Write;
use std::path::{Path, PathBuf};

use matrix_sdk::Client;
use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::store::RoomLoadSettings;
use tracing::{info, instrument, warn};

use super::MatrixError;
use crate::config::{Config, Secret};

/// File name of the persisted session in the state directory.
pub const SESSION_FILE: &str = "session.json";
/// Directory of the matrix-sdk sqlite stores in the state directory.
pub const SDK_STORE_DIR: &str = "matrix";
/// The device display name other people see in their clients.
pub const DEVICE_NAME: &str = "cordon incident bot";

/// Who receives cordon's room keys: only devices cross-signed by an identity cordon
/// has verified (see docs/security.md).
pub const ROOM_KEY_RECIPIENTS: matrix_sdk_base::crypto::CollectStrategy =
    matrix_sdk_base::crypto::CollectStrategy::OnlyTrustedDevices;

/// Paths of the session's files under a state directory.
#[derive(Debug, Clone)]
pub struct SessionPaths {
    /// `session.json`.
    pub session: PathBuf,
    /// The sqlite store directory.
    pub sdk_store: PathBuf,
}

impl SessionPaths {
    /// The paths under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            session: state_dir.join(SESSION_FILE),
            sdk_store: state_dir.join(SDK_STORE_DIR),
        }
    }
}

/// Builds the client, restoring the saved session or logging in with the password, and
/// makes sure the bot has cross-signing keys.
#[instrument(skip_all, fields(user = %config.user))]
pub async fn connect(
    config: &Config,
    password: &Secret,
    store_passphrase: &Secret,
) -> Result<Client, MatrixError> {
    let paths = SessionPaths::new(&config.state_dir);
    create_private_dir(&config.state_dir)?;
    let client = Client::builder()
        .homeserver_url(config.homeserver.as_str())
        .sqlite_store(&paths.sdk_store, Some(store_passphrase.expose()))
        // Room keys go only to devices of identities cordon has verified: the default
        // (`AllDevices`) would hand them to any device a hostile server adds, and to a
        // member whose identity changed after it was verified.
        .with_room_key_recipient_strategy(ROOM_KEY_RECIPIENTS)
        .with_encryption_settings(EncryptionSettings {
            auto_enable_cross_signing: false,
            backup_download_strategy: BackupDownloadStrategy::Manual,
            auto_enable_backups: false,
        })
        .build()
        .await
        .map_err(|e| MatrixError::Client(e.to_string()))?;

    match read_session(&paths.session)? {
        Some(session) => {
            if session.meta.user_id != config.user {
                return Err(MatrixError::SessionMismatch {
                    path: paths.session.clone(),
                    found: session.meta.user_id.to_string(),
                    configured: config.user.to_string(),
                });
            }
            let device = session.meta.device_id.clone();
            client
                .matrix_auth()
                .restore_session(session, RoomLoadSettings::default())
                .await?;
            info!(device = %device, "restored the saved session");
        }
        None => {
            let response = client
                .matrix_auth()
                .login_username(config.user.as_str(), password.expose())
                .initial_device_display_name(DEVICE_NAME)
                .send()
                .await?;
            let session = client
                .matrix_auth()
                .session()
                .ok_or_else(|| MatrixError::Client("login returned no session".into()))?;
            write_session(&paths.session, &session)?;
            info!(device = %response.device_id, "logged in with a new device");
        }
    }

    // A user whose cross-signing identity is unknown is an unverified device to every
    // client that excludes insecure devices; they would never share room keys with
    // cordon. Bootstrap once; Synapse lets a first upload through without
    // user-interactive auth (MSC3967), otherwise answer it with the password.
    let encryption = client.encryption();
    if let Err(first) = encryption.bootstrap_cross_signing_if_needed(None).await {
        match first.as_uiaa_response() {
            Some(uiaa_info) => {
                let mut auth = uiaa::Password::new(
                    uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(
                        config.user.to_string(),
                    )),
                    password.expose().to_owned(),
                );
                auth.session = uiaa_info.session.clone();
                encryption
                    .bootstrap_cross_signing(Some(uiaa::AuthData::Password(auth)))
                    .await?;
            }
            None => return Err(first.into()),
        }
    }
    if let Some(status) = encryption.cross_signing_status().await
        && !status.is_complete()
    {
        warn!("cross-signing keys are incomplete in this store; cordon cannot sign people");
    }
    Ok(client)
}

fn read_session(path: &Path) -> Result<Option<MatrixSession>, MatrixError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| MatrixError::SessionFile {
                    path: path.to_path_buf(),
                    why: format!("not a cordon session file ({e}); restore it from backup"),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MatrixError::SessionFile {
            path: path.to_path_buf(),
            why: e.to_string(),
        }),
    }
}

/// Writes the session atomically and owner-only: it holds the access token.
fn write_session(path: &Path, session: &MatrixSession) -> Result<(), MatrixError> {
    let err = |e: std::io::Error| MatrixError::SessionFile {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let bytes = serde_json::to_vec_pretty(session).map_err(|e| MatrixError::SessionFile {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let tmp = path.with_extension("json.tmp");
    let mut file = open_private(&tmp).map_err(err)?;
    file.write_all(&bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Creates `dir` (and parents) with owner-only permissions if it does not exist.
pub fn create_private_dir(dir: &Path) -> Result<(), MatrixError> {
    let err = |e: std::io::Error| MatrixError::SessionFile {
        path: dir.to_path_buf(),
        why: e.to_string(),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(err)
}
