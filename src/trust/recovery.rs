//! `cordon recover`: cordon's identity back on a new disk.
//!
//! At first start cordon sets up recovery (secret storage and key backup) and prints the
//! recovery key once (see [`crate::matrix::session`]). Its cross-signing keys live on
//! the homeserver, encrypted with that key. `cordon recover`, with the bot stopped and
//! a state directory without a session, logs in with the password as a new device,
//! opens secret storage with the key, imports the cross-signing keys, and has the new
//! device signed by cordon's self-signing key. The signatures cordon put on people's
//! identities are on the homeserver, so everyone enrolled stays verified.
//!
//! A wrong key changes nothing: the new device is logged out again, and neither a
//! session nor a store is written.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::encryption::recovery::RecoveryError;
use matrix_sdk::encryption::secret_storage::SecretStorageError;
use matrix_sdk::ruma::OwnedDeviceId;
use matrix_sdk::ruma::api::client::uiaa;
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::input::config::Config;
use crate::matrix::MatrixError;
use crate::matrix::session::{
    self, DEVICE_NAME, LockError, SessionPaths, StateLock, build_client, set_aside_orphaned_store,
};

/// Why recovery failed. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The state directory is in use.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The state directory already has a session.
    #[error(
        "{0} exists: this state directory already belongs to a cordon device. `cordon \
         recover` is for a new (or wiped) state directory; point state_dir at an empty \
         directory"
    )]
    HasSession(String),
    /// No key was given.
    #[error("no recovery key was given on standard input")]
    NoKey,
    /// The key does not open secret storage.
    #[error(
        "the recovery key does not open cordon's secret storage ({0}); check it and try \
         again. Nothing was written"
    )]
    WrongKey(String),
    /// The account has no recovery set up.
    #[error(
        "cordon's account has no secret storage on the homeserver, so there is nothing to \
         recover; nothing was written"
    )]
    NotSetUp,
    /// Recovery ran but the identity is not usable.
    #[error("recovery did not give a usable identity: {0}; nothing was written")]
    Unusable(String),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::input::config::SecretError),
    /// The Matrix layer failed.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What recovery did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The new device.
    pub device: OwnedDeviceId,
    /// cordon's other devices still on the homeserver (the lost disk's, probably).
    pub other_devices: Vec<OwnedDeviceId>,
    /// Whether those were removed.
    pub removed_other_devices: bool,
}

/// Reads the recovery key: from a terminal with a prompt on stderr and echo off, or
/// the first line of a pipe that is neither blank nor a `#` comment.
pub fn read_recovery_key() -> Result<String, RecoverError> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    if terminal {
        eprint!("cordon's recovery key (printed at its first start): ");
        let _ = std::io::stderr().flush();
        set_echo(false);
    }
    // The first line that is not blank or a `#` comment: the key, typed, or the file
    // `cordon run --recovery-key-out` wrote.
    let mut key = String::new();
    let mut lines = stdin.lock();
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    line.clone_into(&mut key);
                    break;
                }
                if terminal {
                    break;
                }
            }
        }
    }
    if terminal {
        set_echo(true);
        eprintln!();
    }
    if key.is_empty() {
        return Err(RecoverError::NoKey);
    }
    Ok(key)
}

/// Turns terminal echo on or off with `stty` (best effort: without it the key echoes).
fn set_echo(on: bool) {
    let _ = std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status();
}

/// Restores cordon's identity in `config.state_dir` from `recovery_key`. `by` is the
/// operator, for the audit entry `identity.recovered`. With `remove_other_devices`,
/// cordon's other devices (the lost disk's) are logged out with the password.
#[instrument(skip_all, fields(user = %config.user))]
pub async fn recover(
    config: &Config,
    recovery_key: &str,
    by: &str,
    remove_other_devices: bool,
) -> Result<Recovered, RecoverError> {
    let _lock = StateLock::acquire(&config.state_dir)?;
    let paths = SessionPaths::new(&config.state_dir);
    if paths.session.exists() {
        return Err(RecoverError::HasSession(
            paths.session.display().to_string(),
        ));
    }
    let password = config.password.read()?;
    let passphrase = config.store_passphrase.read()?;
    set_aside_orphaned_store(&paths.sdk_store)?;
    let client = build_client(config, &passphrase, &paths.sdk_store).await?;
    client
        .matrix_auth()
        .login_username(config.user.as_str(), password.expose())
        .initial_device_display_name(DEVICE_NAME)
        .send()
        .await
        .map_err(MatrixError::from)?;
    let device = client
        .device_id()
        .ok_or_else(|| MatrixError::Client("login returned no device".into()))?
        .to_owned();

    if let Err(e) = restore(&client, recovery_key).await {
        // Leave nothing behind: the device goes, and so does the store made for it.
        if let Err(logout) = client.logout().await {
            warn!(error = %logout, "could not log the new device out again");
        }
        drop(client);
        if let Err(rm) = remove_new_store(&paths.sdk_store) {
            warn!(error = %rm, "could not remove the new device's store");
        }
        return Err(e);
    }

    let session = client
        .matrix_auth()
        .session()
        .ok_or_else(|| MatrixError::Client("login returned no session".into()))?;
    session::write_session(&paths.session, &session, &passphrase)?;
    info!(device = %device, "cordon's identity is restored");

    let other_devices: Vec<OwnedDeviceId> = match client.devices().await {
        Ok(list) => list
            .devices
            .into_iter()
            .map(|d| d.device_id)
            .filter(|d| *d != device)
            .collect(),
        Err(e) => {
            warn!(error = %e, "could not list cordon's other devices");
            Vec::new()
        }
    };
    let removed_other_devices = if remove_other_devices && !other_devices.is_empty() {
        delete_devices(&client, config, password.expose(), &other_devices).await?;
        true
    } else {
        false
    };

    let store = crate::store::Store::open(&config.state_dir.join("store"))?;
    store.audit(
        by,
        "identity.recovered",
        None,
        json!({
            "user": config.user,
            "device": device,
            "other_devices": other_devices,
            "removed_other_devices": removed_other_devices,
        }),
        crate::clock::from_env().now(),
    )?;
    Ok(Recovered {
        device,
        other_devices,
        removed_other_devices,
    })
}

/// Opens secret storage with the key, imports the cross-signing keys (which signs this
/// device with the self-signing key) and checks the result.
async fn restore(client: &Client, recovery_key: &str) -> Result<(), RecoverError> {
    let encryption = client.encryption();
    encryption.wait_for_e2ee_initialization_tasks().await;
    // The new device's keys must be on the homeserver before the self-signing key can
    // sign them: one sync sends them (matrix-sdk uploads pending keys before syncing).
    // It also moves the sync position past everything sent while the disk was lost, so
    // the recovered bot, whose store has no record of the commands it already handled,
    // cannot run any of them a second time.
    client
        .sync_once(SyncSettings::default().timeout(std::time::Duration::ZERO))
        .await
        .map_err(MatrixError::from)?;
    match encryption.recovery().recover(recovery_key).await {
        Ok(()) => {}
        Err(RecoveryError::SecretStorage(
            e @ (SecretStorageError::SecretStorageKey(_) | SecretStorageError::Decryption(_)),
        )) => return Err(RecoverError::WrongKey(e.to_string())),
        Err(RecoveryError::SecretStorage(SecretStorageError::MissingKeyInfo { .. })) => {
            return Err(RecoverError::NotSetUp);
        }
        Err(e) => return Err(MatrixError::Client(format!("recovering: {e}")).into()),
    }
    let status = encryption
        .cross_signing_status()
        .await
        .ok_or_else(|| RecoverError::Unusable("no crypto store".into()))?;
    if !status.is_complete() {
        return Err(RecoverError::Unusable(format!(
            "secret storage did not hold every cross-signing key ({status:?})"
        )));
    }
    let own = encryption
        .get_own_device()
        .await
        .map_err(|e| MatrixError::Client(e.to_string()))?
        .ok_or_else(|| RecoverError::Unusable("this device is unknown to the store".into()))?;
    if !own.is_cross_signed_by_owner() {
        return Err(RecoverError::Unusable(
            "the new device is not signed by cordon's self-signing key".into(),
        ));
    }
    Ok(())
}

/// Removes the store directory made for a device that was logged out again.
fn remove_new_store(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Logs out `devices`, answering the homeserver's password challenge.
async fn delete_devices(
    client: &Client,
    config: &Config,
    password: &str,
    devices: &[OwnedDeviceId],
) -> Result<(), RecoverError> {
    let Err(first) = client.delete_devices(devices, None).await else {
        return Ok(());
    };
    let Some(info) = first.as_uiaa_response() else {
        return Err(MatrixError::Http(first.to_string()).into());
    };
    let mut auth = uiaa::Password::new(
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(config.user.to_string())),
        password.to_owned(),
    );
    auth.session = info.session.clone();
    client
        .delete_devices(devices, Some(uiaa::AuthData::Password(auth)))
        .await
        .map_err(|e| MatrixError::Http(e.to_string()))?;
    Ok(())
}

/// Replaces cordon's recovery key (`cordon rotate-recovery-key`), with the bot
/// stopped: secret storage is made again under a new key, which is written to `out` (a
/// new file, 0600) before anything changes on the server. The old key opens nothing
/// afterwards. Audited as `identity.recovery-key-rotated` (without the key).
#[instrument(skip_all, fields(user = %config.user))]
pub async fn rotate_key(config: &Config, out: &Path, by: &str) -> Result<(), RecoverError> {
    let _lock = StateLock::acquire(&config.state_dir)?;
    let paths = SessionPaths::new(&config.state_dir);
    if !paths.session.exists() {
        return Err(RecoverError::Unusable(
            "cordon has never started with this state directory, so it has no recovery \
             key to replace"
                .to_owned(),
        ));
    }
    let password = config.password.read()?;
    let passphrase = config.store_passphrase.read()?;
    let client = session::connect(
        config,
        &password,
        &passphrase,
        &session::RecoveryKeyOut::Nowhere,
    )
    .await?;
    drop(password);
    drop(passphrase);
    let encryption = client.encryption();
    encryption.wait_for_e2ee_initialization_tasks().await;
    if encryption.recovery().state() != matrix_sdk::encryption::recovery::RecoveryState::Enabled {
        return Err(RecoverError::NotSetUp);
    }
    let mut file = session::create_key_file(out)?;
    let key = match encryption.recovery().reset_key().await {
        Ok(key) => key,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(out);
            return Err(RecoverError::Unusable(format!(
                "the homeserver did not take the new key ({e}); the old key still holds"
            )));
        }
    };
    session::write_key_file(out, &mut file, &key)?;
    drop(key);
    let store = crate::store::Store::open(&config.state_dir.join("store"))?;
    store.audit(
        by,
        "identity.recovery-key-rotated",
        None,
        json!({ "user": config.user }),
        crate::clock::from_env().now(),
    )?;
    info!("the recovery key is replaced; the old one opens nothing any more");
    Ok(())
}
