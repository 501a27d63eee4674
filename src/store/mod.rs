//! The store: one redb file, `cordon.redb`, in the bot's state directory (created 0700).
//!
//! "Nothing is lost": every transition and every intended side effect is written here
//! before it is performed, and every mutation that changes an incident's state writes
//! its audit entry in the same write transaction. The store never reads the clock;
//! callers pass every time in. Commits are durable and use redb's two-phase commit, so
//! a damaged latest commit is refused instead of silently rolled back.
//!
//! # Layout
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` | JSON: `schema_version` (number), `audit_head` (`{"seq","hash"}`), `outbox_seq` (number) |
//! | `incidents` | incident id (`&str`) | [`Incident`] JSON |
//! | `rooms` | (incident id, room key) (`(&str, &str)`) | [`RoomRecord`] JSON |
//! | `timers` | timer id (`&str`) | [`Timer`](crate::domain::schedule::Timer) JSON |
//! | `processed_events` | Matrix event id (`&str`) | handled at, Unix ms (`i64`) |
//! | `outbox` | intent key (`&str`) | [`OutboxEntry`] JSON |
//! | `audit` | seq (`u64`, from 1) | [`AuditEntry`] JSON (see [`audit`] for the chain) |
//! | `control_rooms` | Matrix room id | [`ControlRoom`] JSON |
//! | `playbook_snapshots` | incident id | [`PlaybookSnapshot`] JSON |
//! | `enrolments` | Matrix user id | [`Enrolment`] JSON (verified people, revocations) |
//! | `roster` | (Matrix room id, user id) | [`RosterEntry`] JSON (the guard's invite records) |
//! | `advice` | (incident id, Matrix event id) | [`advice::AdviceRecord`] JSON (flagged advice, transcribed or not) |
//! | `sweeps` | (incident id, room key) | [`SweepRecord`] JSON (retention sweep progress) |
//! | `seal_segments` | (incident id, room key, seq `u64`) | [`SealSegment`] JSON (pre-seal segments) |
//! | `media` | (incident id, `mxc://` address) | [`MediaSighting`] JSON (attachment addresses to delete at stand-down) |
//! | `record` | (incident id, `<kind>/<number:08>`) | [`record::RecordEntry`] JSON (the command record: numbers, times, people, hashes) |
//! | `pid_nudges` | (incident id, sender) | [`pid::PidNudges`] JSON (when a sender was last nudged about patient identifiers, and how often) |
//!
//! # Opening
//!
//! [`Store::open`] creates the directory and the store when absent. A new store is built
//! as `cordon.redb.new` and linked into place only once its `meta` table is committed,
//! so a crash during creation never leaves a half-made `cordon.redb`. An existing file is
//! opened with redb's full integrity check: a garbage, truncated or damaged file, one
//! without a `meta` table, or one with a newer schema version is refused with
//! instructions ([`StoreError::Corrupt`], [`StoreError::NewerSchema`]), never reset.
//! [`Store::open_existing`] (offline CLIs) never creates anything.

pub mod advice;
pub mod audit;
pub mod audit_export;
mod backend;
pub mod backup;
pub mod ciphertexts;
mod control;
mod error;
mod exactly_once;
mod incidents;
pub mod media;
pub mod offline_status;
pub mod pid;
pub mod record;
pub mod records;
mod roster;
pub mod standdown;
mod sweeps;
pub mod tables;
mod timers;
mod trust;

use std::fs;
use std::io;
use std::ops::RangeBounds;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use audit::{AuditEntry, AuditHead, AuditProblem, AuditReport, GENESIS};
pub use control::{ControlRoom, PlaybookSnapshot};
pub use error::StoreError;
pub use media::{MediaSeenIn, MediaSighting};
pub use records::{Effect, IncidentFilter, OutboxEntry, OutboxIntent, RoomRecord, RoomStatus};
pub use roster::{RosterAudit, RosterEntry, RosterStatus};
pub use standdown::{StandDownRecord, StandDownStep};
pub use sweeps::{LastSweep, SealSegment, SealedPage, SweepAudit, SweepCounts, SweepRecord};
pub use trust::{EnrolMethod, Enrolment, Revocation};

#[cfg(doc)]
use crate::domain::incident::Incident;
use crate::domain::incident::IncidentId;

/// The store file's name inside the state directory.
pub const FILE_NAME: &str = "cordon.redb";

/// The name a new store is built under before it is linked into place.
const NEW_FILE_NAME: &str = "cordon.redb.new";

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The store: incidents, rooms, timers, exactly-once bookkeeping and the audit log.
pub struct Store {
    db: Database,
    path: PathBuf,
    io: Arc<backend::IoHealth>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the store in the state directory `dir`, creating the directory (mode 0700)
    /// and an empty store when absent. An existing but unreadable store is an error.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !dir.exists() {
            create_state_dir(dir)?;
        }
        let path = dir.join(FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(_) => Self::open_file(path, backend::Fault::from_env()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_store(dir, &path)?;
                Self::open_file(path, backend::Fault::from_env())
            }
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Opens the existing store in `dir` for an offline CLI. Creates nothing: a missing
    /// directory or store file is an error.
    pub fn open_existing(dir: &Path) -> Result<Self, StoreError> {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(StoreError::NoStateDir {
                    dir: dir.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoStateDir {
                    dir: dir.to_owned(),
                });
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
        let path = dir.join(FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(_) => Self::open_file(path, backend::Fault::from_env()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NoStore {
                dir: dir.to_owned(),
            }),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`Store::open`], with a full disk injected while `full` is set.
    #[cfg(test)]
    pub(crate) fn open_with_full_disk(
        dir: &Path,
        full: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, StoreError> {
        drop(Self::open(dir)?);
        Self::open_file(dir.join(FILE_NAME), backend::Fault::Flag(full))
    }

    /// Why the store's file has become unusable ([`StoreError::Unusable`]), once a read
    /// or write of it has failed (a full disk, an I/O error). From then on redb refuses
    /// every operation, and the last complete commit is what is on disk.
    pub fn unusable(&self) -> Option<StoreError> {
        self.io.failure().map(|cause| unusable(&self.path, cause))
    }

    /// Waits until the store's file becomes unusable, and says why.
    pub async fn failed(&self) -> StoreError {
        unusable(&self.path, &self.io.wait().await)
    }

    fn open_file(path: PathBuf, fault: backend::Fault) -> Result<Self, StoreError> {
        let len = fs::metadata(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(StoreError::Corrupt {
                path,
                detail: "the file is empty (truncated)".into(),
            });
        }
        let io = Arc::new(backend::IoHealth::default());
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        // redb documents that a file altered outside it may make a plain open panic; the
        // integrity check turns that into an error, and the catch is a last line of
        // defence so that a damaged file is a refusal, not a crash. (The file is not
        // empty, checked above, so "create" here only ever opens it.)
        let opened = catch_unwind(AssertUnwindSafe(|| {
            let inner = redb::backends::FileBackend::new(file)?;
            let backend = backend::Watched::new(inner, io.clone(), fault);
            redb::Builder::new()
                .set_check_integrity_on_open(true)
                .create_with_backend(backend)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                let disk = io.disk_failure().map(|cause| unusable(&path, cause));
                return Err(disk.unwrap_or_else(|| open_error(path, e)));
            }
            Err(_) => {
                return Err(StoreError::Corrupt {
                    path,
                    detail: "reading it failed unexpectedly".into(),
                });
            }
        };
        let store = Self { db, path, io };
        let checked = catch_unwind(AssertUnwindSafe(|| store.check_schema()));
        match checked {
            Ok(Ok(())) => Ok(store),
            Ok(Err(e)) => Err(store
                .io
                .disk_failure()
                .map_or(e, |cause| unusable(&store.path, cause))),
            Err(_) => Err(StoreError::Corrupt {
                path: store.path.clone(),
                detail: "reading its meta table failed unexpectedly".into(),
            }),
        }
    }

    /// Checks the schema version and that every table has the expected types, creating
    /// tables a version-1 store may lack.
    fn check_schema(&self) -> Result<(), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let found: u32 = {
            let read = self.read()?;
            let meta = match read.open_table(tables::META) {
                Ok(meta) => meta,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Err(corrupt("it has no meta table".into()));
                }
                Err(e) => return Err(corrupt(format!("its meta table: {e}"))),
            };
            let Some(bytes) = meta.get(tables::SCHEMA_VERSION)? else {
                return Err(corrupt("its meta table records no schema version".into()));
            };
            serde_json::from_slice(bytes.value())
                .map_err(|e| corrupt(format!("its schema version is unreadable: {e}")))?
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            return Err(corrupt(format!("its schema version {found} is invalid")));
        }
        let tx = self.write()?;
        open_all_tables(&tx).map_err(|e| corrupt(e.to_string()))?;
        tx.commit()?;
        Ok(())
    }

    /// Begins a durable write transaction with two-phase commit.
    fn write(&self) -> Result<WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_two_phase_commit(true);
        Ok(tx)
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Appends a plain audit entry (a refusal, an alert, a room step …) in its own
    /// transaction. State changes are audited by [`Store::apply`] itself.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        incident: Option<&IncidentId>,
        details: serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<AuditEntry, StoreError> {
        let tx = self.write()?;
        let entry = append_in(
            &tx,
            audit::NewEntry {
                actor,
                action,
                incident,
                details: &details,
                at,
            },
        )?;
        tx.commit()?;
        Ok(entry)
    }

    /// The audit entries whose seq is in `range`, optionally only those about
    /// `incident`, in order. An unreadable entry is an error (run `verify_audit`).
    pub fn audit_entries(
        &self,
        range: impl RangeBounds<u64>,
        incident: Option<&IncidentId>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let read = self.read()?;
        let log = read.open_table(tables::AUDIT)?;
        let mut out = Vec::new();
        for item in log.range::<u64>((range.start_bound().cloned(), range.end_bound().cloned()))? {
            let (key, value) = item?;
            let entry: AuditEntry = decode("audit", &key.value().to_string(), value.value())?;
            if incident.is_none_or(|id| entry.incident.as_ref() == Some(id)) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The head of the audit log as recorded in `meta` (`None` while the log is empty).
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        let read = self.read()?;
        let meta = read.open_table(tables::META)?;
        match meta.get(tables::AUDIT_HEAD)? {
            None => Ok(None),
            Some(bytes) => decode("meta", tables::AUDIT_HEAD, bytes.value()).map(Some),
        }
    }

    /// Proves the store can be written: a durable transaction that records `at` (the
    /// health check's time) in the meta table.
    pub fn probe_write(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut meta = tx.open_table(tables::META)?;
            let value = encode("meta", &at)?;
            meta.insert(tables::HEALTH_PROBE, value.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Walks the whole audit chain and reports every modified, removed, inserted or
    /// reordered entry and any mismatch with the recorded head.
    pub fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let read = self.read()?;
        let meta = read.open_table(tables::META)?;
        let log = read.open_table(tables::AUDIT)?;
        audit::verify(&meta, &log)
    }
}

/// Opens (creating when absent) every table, checking their key and value types.
fn open_all_tables(tx: &WriteTransaction) -> Result<(), redb::TableError> {
    tx.open_table(tables::META)?;
    tx.open_table(tables::INCIDENTS)?;
    tx.open_table(tables::ROOMS)?;
    tx.open_table(tables::TIMERS)?;
    tx.open_table(tables::PROCESSED)?;
    tx.open_table(tables::OUTBOX)?;
    tx.open_table(tables::AUDIT)?;
    tx.open_table(tables::CONTROL_ROOMS)?;
    tx.open_table(tables::PLAYBOOK_SNAPSHOTS)?;
    tx.open_table(tables::ENROLMENTS)?;
    tx.open_table(tables::ROSTER)?;
    tx.open_table(tables::ADVICE)?;
    tx.open_table(tables::SWEEPS)?;
    tx.open_table(tables::SEAL_SEGMENTS)?;
    tx.open_table(tables::STANDDOWN)?;
    tx.open_table(tables::CIPHERTEXTS)?;
    tx.open_table(tables::MEDIA)?;
    tx.open_table(tables::RECORD)?;
    tx.open_table(tables::PID_NUDGES)?;
    Ok(())
}

fn create_state_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Create {
        path: dir.to_owned(),
        source,
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(err)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(err)?;
    Ok(())
}

/// Builds a new store as `cordon.redb.new`, then links it to `path` (never replacing an
/// existing file).
fn create_store(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let tmp = dir.join(NEW_FILE_NAME);
    let err = |source| StoreError::Create {
        path: tmp.clone(),
        source,
    };
    // A leftover from a crash during creation was never linked in, so held no data.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&tmp).map_err(err)?;
    }
    let db = redb::Database::create(&tmp)?;
    let mut tx = db.begin_write()?;
    tx.set_two_phase_commit(true);
    open_all_tables(&tx)?;
    {
        let mut meta = tx.open_table(tables::META)?;
        let version = encode("meta", &SCHEMA_VERSION)?;
        meta.insert(tables::SCHEMA_VERSION, version.as_slice())?;
    }
    tx.commit()?;
    db.close()?;
    match fs::hard_link(&tmp, path) {
        Ok(()) => {}
        // Another process won the race; use its store.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    fs::remove_file(&tmp).map_err(err)?;
    // Make the new directory entry durable.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The store `path` cannot be used: a read or write of it failed with `cause`.
fn unusable(path: &Path, cause: &str) -> StoreError {
    StoreError::Unusable {
        path: path.to_owned(),
        cause: cause.to_owned(),
    }
}

fn open_error(path: PathBuf, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path },
        // redb reports a foreign or cut-short file as InvalidData / UnexpectedEof.
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if !matches!(
                source.kind(),
                io::ErrorKind::InvalidData
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::InvalidInput
            ) =>
        {
            StoreError::Io { path, source }
        }
        other => StoreError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

/// Decodes a JSON record, naming the table and key when it does not decode.
/// Appends `entry` to the audit log inside the caller's write transaction, so that a
/// change and its audit entry commit together.
fn append_in(tx: &WriteTransaction, entry: audit::NewEntry<'_>) -> Result<AuditEntry, StoreError> {
    let mut meta = tx.open_table(tables::META)?;
    let mut log = tx.open_table(tables::AUDIT)?;
    audit::append(&mut meta, &mut log, entry)
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::BadRecord {
        table,
        key: key.to_owned(),
        source,
    })
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode { what, source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
