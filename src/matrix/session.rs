//! The bot's Matrix session: one device, kept across restarts.
//!
//! The first start logs in with the password and writes the session (user, device,
//! access token) to `session.json` in the state directory, owner-only, the token sealed
//! with the store passphrase ([`crate::sealed`]). Every later start
//! restores it, so cordon keeps one device and the people who verified it need not do so
//! again. The sqlite crypto and state store lives beside it, encrypted with the store
//! passphrase.
//!
//! At first start cordon also bootstraps its cross-signing identity and sets up
//! recovery (secret storage and key backup), printing the recovery key once on stdout
//! for the operator to keep offline; `cordon recover` (see [`crate::trust::recovery`])
//! uses it to restore the identity on a new disk.
//!
//! One process at a time owns a state directory: [`StateLock`] is an exclusive lock on
//! `cordon.lock`, held by `cordon run` for its lifetime and by the offline CLI commands
//! while they run, because two processes on one device drift apart.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use matrix_sdk::authentication::matrix::MatrixSession;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::encryption::{BackupDownloadStrategy, EncryptionSettings};
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::store::RoomLoadSettings;
use matrix_sdk::{Client, SqliteStoreConfig};
use tracing::{info, instrument, warn};

mod recovery_key;
mod saved;

pub use recovery_key::RecoveryKeyOut;
use recovery_key::ensure_recovery;
pub(crate) use recovery_key::{create_key_file, write_key_file};
pub(crate) use saved::write_session;
pub use saved::{SavedSession, read_session};

use super::MatrixError;
use crate::input::config::{Config, Secret};

/// File name of the persisted session in the state directory.
pub const SESSION_FILE: &str = "session.json";
/// Directory of the matrix-sdk sqlite stores in the state directory.
pub const SDK_STORE_DIR: &str = "matrix";
/// The device display name other people see in their clients.
pub const DEVICE_NAME: &str = "cordon incident bot";
/// File name of the state directory's lock.
pub const LOCK_FILE: &str = "cordon.lock";

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
/// makes sure the bot has cross-signing keys and recovery. When recovery is set up for
/// the first time, the recovery key goes where `recovery_key` says (never the logs).
///
/// The caller holds the state directory's [`StateLock`].
#[instrument(skip_all, fields(user = %config.user))]
pub async fn connect(
    config: &Config,
    password: &Secret,
    store_passphrase: &Secret,
    recovery_key: &RecoveryKeyOut,
) -> Result<Client, MatrixError> {
    let paths = SessionPaths::new(&config.state_dir);
    create_private_dir(&config.state_dir)?;
    let saved = read_session(&paths.session, store_passphrase)?;
    if saved.is_none() {
        set_aside_orphaned_store(&paths.sdk_store)?;
    }
    if let Some(saved) = &saved
        && saved.was_in_the_clear
    {
        // A session.json from before the seal: seal its token now, before anything else.
        write_session(&paths.session, &saved.session, store_passphrase)?;
        info!("sealed the access token in session.json with the store passphrase");
    }
    let saved = saved.map(|s| s.session);
    let client = build_client(config, store_passphrase, &paths.sdk_store).await?;

    let fresh_login = match saved {
        Some(session) => {
            if session.meta.user_id != config.user {
                return Err(MatrixError::SessionMismatch {
                    path: paths.session.clone(),
                    found: session.meta.user_id.to_string(),
                    configured: config.user.to_string(),
                });
            }
            let device = session.meta.device_id.clone();
            let session =
                renew_if_revoked(config, password, store_passphrase, &paths, session).await?;
            client
                .matrix_auth()
                .restore_session(session, RoomLoadSettings::default())
                .await?;
            info!(device = %device, "restored the saved session");
            false
        }
        None => {
            let response = client
                .matrix_auth()
                .login_username(config.user.as_str(), password.expose())
                .initial_device_display_name(DEVICE_NAME)
                .send()
                .await
                .map_err(|e| login_refused(config, e))?;
            info!(device = %response.device_id, "logged in with a new device");
            true
        }
    };

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
    let complete = encryption
        .cross_signing_status()
        .await
        .is_some_and(|s| s.is_complete());
    if !complete && fresh_login {
        // The identity exists on the homeserver, but its private keys are not in this
        // new state directory: a lost or wiped disk. Carrying on would leave a cordon
        // that cannot sign anyone; leave the server and this directory as they were.
        if let Err(e) = client.logout().await {
            warn!(error = %e, "could not log the new device out again");
        }
        drop(client);
        set_aside_orphaned_store(&paths.sdk_store)?;
        return Err(MatrixError::Client(format!(
            "{} already has a cross-signing identity, but this state directory ({}) does \
             not hold its keys. Restore cordon's identity with `cordon recover --config \
             {}` and the recovery key printed at cordon's first start",
            config.user,
            config.state_dir.display(),
            config.path.display()
        )));
    }
    if !complete {
        warn!("cross-signing keys are incomplete in this store; cordon cannot sign people");
    }
    if fresh_login {
        let session = client
            .matrix_auth()
            .session()
            .ok_or_else(|| MatrixError::Client("login returned no session".into()))?;
        write_session(&paths.session, &session, store_passphrase)?;
    }
    if complete {
        ensure_recovery(&client, recovery_key).await?;
    }
    Ok(client)
}

/// A refused login (`M_FORBIDDEN`: a wrong password) is for an operator to fix; any
/// other failure is the SDK's error, which a restart may get past.
fn login_refused(config: &Config, e: matrix_sdk::Error) -> MatrixError {
    use matrix_sdk::ruma::api::error::ErrorKind;
    match e.client_api_error_kind() {
        Some(ErrorKind::Forbidden | ErrorKind::UserDeactivated | ErrorKind::UserLocked) => {
            MatrixError::Refused(format!(
                "the homeserver refused to log {} in ({e}): check the password the config \
                 names (`password` in {}), then start cordon again",
                config.user,
                config.path.display()
            ))
        }
        _ => e.into(),
    }
}

/// Checks the saved access token before the session is restored. A token the server no
/// longer knows (`M_UNKNOWN_TOKEN`: an administrator logged the device out, or a
/// password change that logged out every device) is replaced by logging in again with
/// the configured password *as the same device*, so that cordon keeps its keys and
/// nobody verifies it again. That is only right while the device, with its keys, still
/// exists on the server; if it was deleted, the keys others encrypted to it are gone,
/// and cordon stops for an operator (`cordon recover`) rather than run half-blind.
///
/// Runs on a throwaway client without a store, so the real one never logs in twice.
/// An unreachable server is not a verdict: the saved session is used, and sync retries.
async fn renew_if_revoked(
    config: &Config,
    password: &Secret,
    store_passphrase: &Secret,
    paths: &SessionPaths,
    session: MatrixSession,
) -> Result<MatrixSession, MatrixError> {
    use matrix_sdk::ruma::api::client::keys::get_keys;
    use matrix_sdk::ruma::api::error::ErrorKind;
    let probe = storeless_client(config).await?;
    probe
        .matrix_auth()
        .restore_session(session.clone(), RoomLoadSettings::default())
        .await?;
    match probe.whoami().await {
        Ok(_) => return Ok(session),
        Err(e) if matches!(e.client_api_error_kind(), Some(ErrorKind::UnknownToken(_))) => {}
        Err(e) => {
            warn!(error = %e, "could not check the saved session; using it");
            return Ok(session);
        }
    }
    let device = session.meta.device_id.clone();
    warn!(
        device = %device,
        "the homeserver no longer accepts cordon's access token; logging in again as the \
         same device"
    );
    let fresh = storeless_client(config).await?;
    fresh
        .matrix_auth()
        .login_username(config.user.as_str(), password.expose())
        .device_id(device.as_str())
        .initial_device_display_name(DEVICE_NAME)
        .send()
        .await
        .map_err(|e| login_refused(config, e))?;
    // Does the server still hold the device's keys? A device it deleted comes back
    // empty from a login with its id.
    let mut query = get_keys::v3::Request::new();
    query
        .device_keys
        .insert(config.user.clone(), vec![device.clone()]);
    let keys = fresh
        .send(query)
        .await
        .map_err(|e| MatrixError::Http(e.to_string()))?;
    let kept = keys
        .device_keys
        .get(&config.user)
        .is_some_and(|devices| devices.contains_key(&device));
    if !kept {
        if let Err(e) = fresh.logout().await {
            warn!(error = %e, "could not log the empty device out again");
        }
        return Err(MatrixError::Refused(format!(
            "cordon's device {device} no longer exists on the homeserver (logged out with \
             its keys, e.g. by a password change that logged out every device), so what was \
             encrypted to it cannot be read and people would have to verify a new device. \
             Restore cordon's identity with `cordon recover --config {}` and its recovery \
             key (docs/operations.md, \"Rotating the bot's password\")",
            config.path.display()
        )));
    }
    let renewed = fresh
        .matrix_auth()
        .session()
        .ok_or_else(|| MatrixError::Client("login returned no session".into()))?;
    write_session(&paths.session, &renewed, store_passphrase)?;
    info!(device = %device, "logged in again as the same device; the new token is saved");
    Ok(renewed)
}

/// A throwaway client on the configured address, without a store: nothing it does
/// touches cordon's device keys.
async fn storeless_client(config: &Config) -> Result<Client, MatrixError> {
    Client::builder()
        .homeserver_url(config.homeserver.as_str())
        .respect_login_well_known(false)
        .build()
        .await
        .map_err(|e| MatrixError::Client(e.to_string()))
}

/// How long any request to the homeserver may take (a sync: this beyond its long poll).
/// matrix-sdk's default is 30 s. Under load (fifty declares at once, `cordon-bench
/// load` on postgres-workers) Synapse took longer than that to answer a sync covering
/// hundreds of busy rooms: the sync timed out, was asked again from the same point, timed
/// out again, and cordon saw nothing new for minutes while the homeserver did the work
/// each time; invites queued at Synapse timed out the same way and failed their step.
/// A homeserver that is down refuses the connection at once; this bounds only a slow one.
pub(crate) const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The page cache of each of matrix-sdk's sqlite connections, in bytes.
const SQLITE_CACHE_BYTES: u32 = 500_000;

/// Builds the matrix-sdk client on the sqlite store at `sdk_store`, with cordon's
/// encryption settings.
pub(crate) async fn build_client(
    config: &Config,
    store_passphrase: &Secret,
    sdk_store: &Path,
) -> Result<Client, MatrixError> {
    Client::builder()
        .homeserver_url(config.homeserver.as_str())
        // The configured address for good: a login answer's `well_known` base URL
        // (Synapse's `public_baseurl`) would move the client past a proxy the
        // operator put in front of the admin API, for the rest of a first start.
        .respect_login_well_known(false)
        .request_config(RequestConfig::default().timeout(REQUEST_TIMEOUT))
        // A 500 KiB page cache per connection (matrix-sdk's low-memory figure) instead
        // of 2 MiB: each of its four databases has up to four connections per core,
        // each with a cache of its own (64 MiB at most on two cores with the default).
        // The pool keeps its default size.
        .sqlite_store_with_config_and_cache_path(
            SqliteStoreConfig::new(sdk_store)
                .cache_size(SQLITE_CACHE_BYTES)
                .passphrase(Some(store_passphrase.expose())),
            None::<&Path>,
        )
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
        .map_err(|e| MatrixError::Client(e.to_string()))
}

/// Without a saved session, a matrix-sdk store left in the state directory belongs to
/// a device nobody can use any more (a start that died between login and writing the
/// session, or a refused start), and the SDK would refuse to log in a new device over
/// it. It is renamed aside, not deleted: it may hold keys someone wants back.
pub(crate) fn set_aside_orphaned_store(sdk_store: &Path) -> Result<(), MatrixError> {
    if !sdk_store.exists() {
        return Ok(());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f");
    let aside = sdk_store.with_file_name(format!("{SDK_STORE_DIR}.orphaned-{stamp}"));
    std::fs::rename(sdk_store, &aside).map_err(|e| MatrixError::SessionFile {
        path: sdk_store.to_path_buf(),
        why: format!("moving an orphaned matrix store aside: {e}"),
    })?;
    warn!(
        moved_to = %aside.display(),
        "there was a matrix store without a session; moved it aside"
    );
    Ok(())
}

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "cordon is already running with this state directory ({dir}){pid}; stop it first, \
         or talk to it (`cordon verify` does so by itself)",
        pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// The holder's process id, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("locking {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The exclusive lock on a state directory (`cordon.lock`), held until dropped. The
/// holder's pid is written into the file so that a refused process can name it.
#[derive(Debug)]
pub struct StateLock {
    // Held for its lock; closing the file releases it.
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock on `state_dir` (created owner-only if missing), or fails at once
    /// with [`LockError::Held`] if another process has it.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        let path = state_dir.join(LOCK_FILE);
        let io = |source: std::io::Error| LockError::Io {
            path: path.clone(),
            source,
        };
        create_private_dir(state_dir).map_err(|e| LockError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: state_dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
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
