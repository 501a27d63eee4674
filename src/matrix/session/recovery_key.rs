//! Where cordon's recovery key goes when it sets up recovery (normally its first
//! start): a file the operator named, a terminal, or standard output when asked, and
//! never the logs. With nowhere safe to put it, recovery waits.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use matrix_sdk::Client;
use matrix_sdk::encryption::recovery::RecoveryState;
use tracing::{error, info, warn};

use crate::matrix::MatrixError;

/// Where the recovery key goes when cordon sets up recovery (normally its first start).
/// Never the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryKeyOut {
    /// A new file the operator named, written owner-only (0600); an existing file is
    /// never overwritten.
    File(PathBuf),
    /// Standard output: a terminal, or another output the operator asked for.
    Stdout,
    /// Nowhere to put it safely: recovery is not set up, and cordon says so at every
    /// start until it is.
    Nowhere,
}

impl RecoveryKeyOut {
    /// The file if one is named; otherwise stdout if it is a terminal or `to_stdout`
    /// asks for it; otherwise nowhere (a service's stdout is its journal).
    pub fn choose(file: Option<PathBuf>, to_stdout: bool) -> Self {
        use std::io::IsTerminal;
        match file {
            Some(path) => Self::File(path),
            None if to_stdout || std::io::stdout().is_terminal() => Self::Stdout,
            None => Self::Nowhere,
        }
    }
}

/// Sets up recovery (secret storage holding the cross-signing keys, and key backup) if
/// it is not yet, and hands the new recovery key to `out`. A server-side failure is
/// logged and does not stop cordon: it runs, but a lost disk would mean re-enrolling
/// everyone. A key file that cannot be created stops it before recovery is set up, so
/// no key is made that nobody holds.
pub(super) async fn ensure_recovery(
    client: &Client,
    out: &RecoveryKeyOut,
) -> Result<(), MatrixError> {
    let encryption = client.encryption();
    encryption.wait_for_e2ee_initialization_tasks().await;
    let recovery = encryption.recovery();
    match recovery.state() {
        RecoveryState::Enabled => {}
        RecoveryState::Disabled => {
            let mut file = match out {
                RecoveryKeyOut::Nowhere => {
                    warn!(
                        "recovery is not set up: cordon has nowhere safe to put its recovery \
                         key (standard output is not a terminal). Stop it and start it once \
                         with `--recovery-key-out FILE` (or in a terminal); until then a lost \
                         disk means re-enrolling everyone"
                    );
                    return Ok(());
                }
                RecoveryKeyOut::File(path) => Some((path, create_key_file(path)?)),
                RecoveryKeyOut::Stdout => None,
            };
            match recovery.enable().await {
                Ok(key) => match file.as_mut() {
                    Some((path, file)) => {
                        write_key_file(path, file, &key)?;
                        info!(
                            file = %path.display(),
                            "recovery is set up; the recovery key is in the file named \
                             (move it offline)"
                        );
                    }
                    None => {
                        print_recovery_key(&key);
                        info!("recovery is set up; the recovery key was printed on stdout");
                    }
                },
                Err(e) => {
                    if let Some((path, file)) = file {
                        drop(file);
                        let _ = std::fs::remove_file(path);
                    }
                    error!(
                        error = %e,
                        "could not set up recovery; without it a lost disk means \
                         re-enrolling everyone"
                    );
                }
            }
        }
        state => warn!(
            ?state,
            "recovery is not complete for this device; check secret storage and key backup"
        ),
    }
    Ok(())
}

/// Creates the recovery key's file, new and owner-only.
pub(crate) fn create_key_file(path: &Path) -> Result<File, MatrixError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| MatrixError::SessionFile {
        path: path.to_path_buf(),
        why: format!(
            "creating the recovery key's file ({e}; an existing file is never overwritten)"
        ),
    })
}

pub(crate) fn write_key_file(path: &Path, file: &mut File, key: &str) -> Result<(), MatrixError> {
    let text = format!(
        "# cordon's RECOVERY KEY. Keep it offline, away from the server, and delete\n\
         # this copy once it is. `cordon recover --config FILE < THIS-FILE` restores\n\
         # cordon's identity on a new disk with it. Anyone holding it can act as cordon.\n\
         {key}\n"
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| MatrixError::SessionFile {
            path: path.to_path_buf(),
            why: format!("writing the recovery key ({e}); it is printed below instead"),
        })
        .inspect_err(|_| print_recovery_key(key))
}

/// Prints the recovery key in a frame the operator cannot miss. On stdout, never in
/// the logs.
fn print_recovery_key(key: &str) {
    let rule = "=".repeat(78);
    let text = format!(
        "\n{rule}\n\
         cordon's RECOVERY KEY. It is shown this once and stored nowhere else.\n\
         \n\
         Recovery key: {key}\n\
         \n\
         Write it down or print it, and keep it offline, away from this server (a safe, a\n\
         sealed envelope). If the state directory is lost, `cordon recover --config FILE`\n\
         restores cordon's identity with this key, and nobody needs to be enrolled again.\n\
         Without it, a lost disk means re-enrolling everyone. Anyone holding it can act\n\
         as cordon: treat it like the bot's password.\n\
         {rule}\n"
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
