//! The only part of cordon that speaks Matrix: matrix-sdk and the Synapse admin API.
//!
//! Everything above this module takes plain data and returns plans; this module
//! performs them.

pub mod admin;
pub mod forget;
pub mod rekey;
pub mod rooms;
pub mod session;

use std::path::PathBuf;

/// Errors from the Matrix layer.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// matrix-sdk refused or failed a request.
    #[error(transparent)]
    Sdk(#[from] matrix_sdk::Error),
    /// A client could not be built or used.
    #[error("matrix client: {0}")]
    Client(String),
    /// The persisted session file is unusable.
    #[error("session file {path}: {why}")]
    SessionFile {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The session file belongs to another account.
    #[error(
        "session file {path} belongs to {found}, but the config names {configured}; \
         point state_dir at the right directory"
    )]
    SessionMismatch {
        /// The file.
        path: PathBuf,
        /// The user in the file.
        found: String,
        /// The user in the config.
        configured: String,
    },
    /// A request to the homeserver failed.
    #[error("homeserver request: {0}")]
    Http(String),
    /// A Synapse admin API call failed.
    #[error("synapse admin API: {0}")]
    Admin(String),
    /// The homeserver refused cordon's credentials: a wrong password, or a device that
    /// no longer exists. Restarting cannot fix it; an operator must.
    #[error("{0}")]
    Refused(String),
    /// One of matrix-sdk's sqlite stores could not be read or changed directly (see
    /// [`forget`]).
    #[error("matrix store {path}: {why}")]
    LocalStore {
        /// The sqlite file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}

impl MatrixError {
    /// Whether only an operator can fix this (a secret, the session file, a refused
    /// login), so that restarting would only repeat it: `cordon run` then exits 78
    /// (EX_CONFIG), on which the systemd unit does not restart.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            Self::Refused(_) | Self::SessionFile { .. } | Self::SessionMismatch { .. }
        )
    }
}
