//! The store's error type.

use std::path::PathBuf;

use crate::domain::incident::{IncidentId, TransitionError};

/// What to tell an operator whose store file cannot be trusted.
const RESTORE: &str = "cordon will not reset or repair it. Stop cordon, keep this file \
    (do not delete it: it holds the incident records and the audit log), and restore \
    cordon.redb from your latest backup";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory is absent (offline CLIs never create one).
    #[error(
        "no state directory at {dir}: check --store (it must be the bot's state directory, \
         holding cordon.redb)"
    )]
    NoStateDir {
        /// The directory given.
        dir: PathBuf,
    },
    /// The state directory exists but holds no store.
    #[error(
        "no store in {dir}: {path} does not exist (is this the bot's state directory? \
         cordon creates the store on its first `run`)",
        path = dir.join(super::FILE_NAME).display()
    )]
    NoStore {
        /// The directory given.
        dir: PathBuf,
    },
    /// Creating the state directory or the store file failed.
    #[error("cannot create {path}: {source}")]
    Create {
        /// What was being created.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process has the store open.
    #[error("the store {path} is in use by another process (is cordon already running?)")]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a readable cordon store: garbage, truncated, or damaged.
    #[error("the store {path} is damaged or is not a cordon store ({detail}). {RESTORE}.")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The file was written by a newer cordon.
    #[error(
        "the store {path} has schema version {found}, but this cordon understands versions up \
         to {supported}: it was written by a newer cordon. Run that newer version, or restore \
         the backup taken before the upgrade; do not delete the file"
    )]
    NewerSchema {
        /// The store file.
        path: PathBuf,
        /// The version found in the `meta` table.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Reading or writing the store's file failed (a full disk, an I/O error): redb keeps
    /// its last complete commit and refuses everything after it until it is reopened.
    #[error(
        "the store {path} cannot be used: {cause}. Its last complete commit stands, so \
         nothing recorded before is lost. Free space on its disk (or fix the file system), \
         then start cordon again: it resumes every incident where it left off, and answers \
         the commands sent meanwhile"
    )]
    Unusable {
        /// The store file.
        path: PathBuf,
        /// What failed, as the operating system said it.
        cause: String,
    },
    /// An I/O error outside redb (metadata, permissions, rename).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An error from redb while reading or writing.
    #[error("store database error: {0}")]
    Database(#[source] redb::Error),
    /// A snapshot for a backup could not be taken.
    #[error("taking a snapshot of {path}: {detail}")]
    Snapshot {
        /// The database being copied.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A batch write returned fewer records than it was given (a bug, not bad data).
    #[error("the store returned an incomplete batch ({0})")]
    IncompleteBatch(&'static str),
    /// A stored record does not decode.
    #[error("stored record {table}[{key}] is unreadable ({source}). {RESTORE}.")]
    BadRecord {
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// Encoding a record failed (a value that JSON cannot hold).
    #[error("cannot encode a {what} record: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// No incident with this id.
    #[error("no incident {0}")]
    NoSuchIncident(IncidentId),
    /// The lifecycle refused the event; nothing was written.
    #[error("incident {id}: {source}")]
    Transition {
        /// The incident.
        id: IncidentId,
        /// Why.
        source: TransitionError,
    },
    /// Every generated id collided with an existing one.
    #[error("no free incident id for playbook {playbook} after {attempts} attempts")]
    IdsExhausted {
        /// The playbook.
        playbook: String,
        /// How many ids were tried.
        attempts: u32,
    },
    /// The audit log has entries but its head record is gone: appending would hide a
    /// truncated tail, so cordon refuses to write.
    #[error(
        "the audit log's head record is missing from the store's meta table although the log \
         has entries: the store was altered outside cordon. Run `cordon audit verify`; {RESTORE}"
    )]
    AuditHeadMissing,
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
