//! A consistent snapshot of a state directory, taken while the bot runs: what
//! `cordon backup` packs and encrypts.
//!
//! Copying the files of a running bot is not a backup: the store and the sqlite files
//! can be caught mid-write. So each part is copied through its own database:
//!
//! - the store through one redb read transaction, table by table, into a new redb
//!   file (a read transaction sees one commit, whatever is written meanwhile);
//! - matrix-sdk's sqlite stores with sqlite's `VACUUM INTO`, which writes a
//!   transactionally consistent copy while other connections keep writing;
//! - `session.json` and `archive-signing.key` as they are: both are only ever replaced
//!   whole (written beside and renamed), so a copy is one version or the other.
//!
//! Not in it: `archives/` (sealed for the records officers, kept and delivered on
//! their own terms), the lock and the admin socket. The store and the stores copied
//! are taken within moments of each other, not at one instant; every step of cordon
//! is idempotent and resumable, so a restore behaves like a restart after the moment
//! the last of them was copied.

use std::fs;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::tables::*;
use super::{FILE_NAME, Store, StoreError};

/// The state directory's parts a snapshot holds, relative to it.
pub const SESSION_FILES: [&str; 2] = ["session.json", "archive-signing.key"];
/// matrix-sdk's store directory in the state directory.
pub const SDK_STORE_DIR: &str = "matrix";

/// What a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where it was written (a new directory, owner-only).
    pub dir: PathBuf,
    /// The files in it, relative to `dir`.
    pub files: Vec<PathBuf>,
}

impl Store {
    /// Writes a consistent copy of the store to a new redb file at `path`, through one
    /// read transaction. Returns the number of records copied.
    pub fn copy_to(&self, path: &Path) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        let copy = Database::builder()
            .create(path)
            .map_err(|e| StoreError::Database(e.into()))?;
        let write = copy.begin_write()?;
        let mut records = 0;
        records += copy_table(&read, &write, META)?;
        records += copy_table(&read, &write, INCIDENTS)?;
        records += copy_table(&read, &write, ROOMS)?;
        records += copy_table(&read, &write, TIMERS)?;
        records += copy_table(&read, &write, PROCESSED)?;
        records += copy_table(&read, &write, OUTBOX)?;
        records += copy_table(&read, &write, AUDIT)?;
        records += copy_table(&read, &write, CONTROL_ROOMS)?;
        records += copy_table(&read, &write, PLAYBOOK_SNAPSHOTS)?;
        records += copy_table(&read, &write, ENROLMENTS)?;
        records += copy_table(&read, &write, ROSTER)?;
        records += copy_table(&read, &write, ADVICE)?;
        records += copy_table(&read, &write, SWEEPS)?;
        records += copy_table(&read, &write, SEAL_SEGMENTS)?;
        records += copy_table(&read, &write, STANDDOWN)?;
        records += copy_table(&read, &write, CIPHERTEXTS)?;
        records += copy_table(&read, &write, MEDIA)?;
        records += copy_table(&read, &write, RECORD)?;
        records += copy_table(&read, &write, PID_NUDGES)?;
        // A table this list forgot would be lost in every backup: refuse instead.
        let tables = |names: &mut dyn Iterator<Item = redb::UntypedTableHandle>| {
            let mut names: Vec<String> = names.map(|t| t.name().to_owned()).collect();
            names.sort();
            names
        };
        let source = tables(&mut read.list_tables()?);
        let copied = tables(&mut write.list_tables()?);
        if source != copied {
            return Err(StoreError::Snapshot {
                path: self.path.clone(),
                detail: format!(
                    "the store has the tables {source:?}, the snapshot copied {copied:?}"
                ),
            });
        }
        write.commit()?;
        Ok(records)
    }
}

/// Copies every record of `table`, if the store has it.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    write: &redb::WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = match read.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut target = write.open_table(table)?;
    let mut n = 0;
    for entry in source.iter()? {
        let (k, v) = entry?;
        target.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Takes a snapshot of `state_dir` (whose store is `store`) into a new owner-only
/// directory inside it, named `.backup-…`, for the caller to pack and then remove.
pub fn snapshot(store: &Store, state_dir: &Path) -> Result<Snapshot, StoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let dir = state_dir.join(format!(".backup-{stamp}-{:08x}", rand::random::<u32>()));
    private_dir(&dir).map_err(io(&dir))?;
    let result = (|| {
        let mut files = Vec::new();
        let store_dir = dir.join("store");
        private_dir(&store_dir).map_err(io(&store_dir))?;
        store.copy_to(&store_dir.join(FILE_NAME))?;
        files.push(Path::new("store").join(FILE_NAME));

        let sdk = state_dir.join(SDK_STORE_DIR);
        if sdk.is_dir() {
            let target = dir.join(SDK_STORE_DIR);
            private_dir(&target).map_err(io(&target))?;
            let mut names: Vec<String> = fs::read_dir(&sdk)
                .map_err(io(&sdk))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sqlite3"))
                .collect();
            names.sort();
            for name in names {
                vacuum_into(&sdk.join(&name), &target.join(&name))?;
                files.push(Path::new(SDK_STORE_DIR).join(&name));
            }
        }
        for name in SESSION_FILES {
            let from = state_dir.join(name);
            match fs::read(&from) {
                Ok(bytes) => {
                    let to = dir.join(name);
                    crate::durable::write_atomic(&to, &bytes, 0o600)
                        .map_err(|(path, source)| StoreError::Io { path, source })?;
                    files.push(PathBuf::from(name));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&from)(e)),
            }
        }
        Ok(files)
    })();
    match result {
        Ok(files) => Ok(Snapshot { dir, files }),
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// A consistent copy of the sqlite database `from` at `to` (a new file).
fn vacuum_into(from: &Path, to: &Path) -> Result<(), StoreError> {
    let err = |detail: String| StoreError::Snapshot {
        path: from.to_path_buf(),
        detail,
    };
    let conn = rusqlite::Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| err(format!("opening it: {e}")))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| err(e.to_string()))?;
    let target = to
        .to_str()
        .ok_or_else(|| err("the snapshot's path is not UTF-8".to_owned()))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| err(format!("copying it: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(to, fs::Permissions::from_mode(0o600)).map_err(|source| {
            StoreError::Io {
                path: to.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Creates `dir` owner-only (0700); it must not exist.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The parts a backup may hold, as the first component of each path in it.
const PARTS: [&str; 4] = ["store", SDK_STORE_DIR, SESSION_FILES[0], SESSION_FILES[1]];

/// Why a backup could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No recipient to encrypt to.
    #[error("no recipient: give at least one operator's age public key (-r age1… or -R FILE)")]
    NoRecipients,
    /// The keys given do not open the backup, or it is not one.
    #[error("{0}: the identities given do not open it, or it is not a cordon backup")]
    CannotOpen(PathBuf),
    /// Something in the backup is not what cordon writes.
    #[error("{path}: not a cordon backup: {detail}; nothing was restored")]
    NotABackup {
        /// The backup.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The state directory is not empty.
    #[error(
        "{0} is not empty: restore only into an empty or absent state directory (move the \
         old one aside first, and never over a running cordon)"
    )]
    NotEmpty(PathBuf),
    /// A store error.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Packs the snapshot directory `dir` as a tar stream encrypted with age to
/// `recipients` (the operators' X25519 keys) into `out`, which the caller created new.
/// Returns the number of files.
pub fn pack(
    dir: &Path,
    recipients: &[age::x25519::Recipient],
    out: &mut fs::File,
    out_path: &Path,
) -> Result<usize, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| BackupError::Io {
                path: out_path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
    let writer = encryptor.wrap_output(&mut *out).map_err(io(out_path))?;
    let mut tar = tar::Builder::new(writer);
    tar.mode(tar::HeaderMode::Deterministic);
    // Plain entries only (redb's file has holes; `unpack` takes regular files alone).
    tar.sparse(false);
    let mut files = Vec::new();
    collect_files(dir, Path::new(""), &mut files).map_err(io(dir))?;
    files.sort();
    for relative in &files {
        let path = dir.join(relative);
        let mut file = fs::File::open(&path).map_err(io(&path))?;
        tar.append_file(relative, &mut file).map_err(io(&path))?;
    }
    let writer = tar.into_inner().map_err(io(out_path))?;
    writer.finish().map_err(io(out_path))?;
    out.sync_all().map_err(io(out_path))?;
    Ok(files.len())
}

fn collect_files(root: &Path, relative: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Restores the backup at `path` into `state_dir`, which must be empty or absent,
/// with owner-only modes. Every entry is checked before anything is written: only the
/// parts a backup holds, regular files, relative paths without `..`. It is unpacked
/// beside the target and moved into place, so a failure leaves nothing behind.
/// Returns the files restored.
pub fn unpack(
    path: &Path,
    identities: &[age::x25519::Identity],
    state_dir: &Path,
) -> Result<Vec<PathBuf>, BackupError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| BackupError::Io { path: p, source }
    };
    let bad = |detail: String| BackupError::NotABackup {
        path: path.to_path_buf(),
        detail,
    };
    match fs::read_dir(state_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(state_dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::durable::create_private_dirs(state_dir)
                .map_err(|(path, source)| BackupError::Io { path, source })?;
        }
        Err(e) => return Err(io(state_dir)(e)),
    }
    let file = fs::File::open(path).map_err(io(path))?;
    let decryptor = age::Decryptor::new(std::io::BufReader::new(file))
        .map_err(|_| BackupError::CannotOpen(path.to_path_buf()))?;
    let reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|_| BackupError::CannotOpen(path.to_path_buf()))?;
    let staging = state_dir.join(format!(".restore-{:08x}", rand::random::<u32>()));
    private_dir(&staging).map_err(io(&staging))?;
    let result = (|| {
        let mut restored = Vec::new();
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
            let mut entry = entry.map_err(|e| bad(e.to_string()))?;
            let relative = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
            let normal = relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            let part = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("");
            if !normal || !PARTS.contains(&part) {
                return Err(bad(format!("it holds {}", relative.display())));
            }
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(bad(format!(
                    "{} is not a plain file ({:?})",
                    relative.display(),
                    entry.header().entry_type()
                )));
            }
            let target = staging.join(&relative);
            if let Some(parent) = target.parent() {
                crate::durable::create_private_dirs(parent)
                    .map_err(|(path, source)| BackupError::Io { path, source })?;
            }
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut out = options.open(&target).map_err(io(&target))?;
            std::io::copy(&mut entry, &mut out).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    BackupError::CannotOpen(path.to_path_buf())
                } else {
                    io(&target)(e)
                }
            })?;
            out.sync_all().map_err(io(&target))?;
            restored.push(relative);
        }
        if !restored
            .iter()
            .any(|p| p == &Path::new("store").join(FILE_NAME))
        {
            return Err(bad("it holds no store".to_owned()));
        }
        // Readable as a store, with its audit chain intact, before it takes the place.
        let store = Store::open_existing(&staging.join("store"))?;
        if !store.verify_audit()?.is_intact() {
            return Err(bad("its audit chain is broken".to_owned()));
        }
        drop(store);
        for part in PARTS {
            let from = staging.join(part);
            if from.exists() {
                let to = state_dir.join(part);
                fs::rename(&from, &to).map_err(io(&to))?;
            }
        }
        Ok(restored)
    })();
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        for part in PARTS {
            let _ = fs::remove_dir_all(state_dir.join(part));
            let _ = fs::remove_file(state_dir.join(part));
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_holds_every_table_and_the_session_files_and_opens_as_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let store = Store::open(&state.join("store")).unwrap();
        store
            .audit(
                "operator:alice",
                "test.entry",
                None,
                serde_json::json!({"n": 1}),
                chrono::Utc::now(),
            )
            .unwrap();
        fs::write(state.join("session.json"), b"{}").unwrap();
        let snap = snapshot(&store, state).unwrap();
        assert!(snap.dir.starts_with(state));
        assert!(snap.files.contains(&PathBuf::from("session.json")));
        assert!(!snap.files.contains(&PathBuf::from("archive-signing.key")));
        let copy = Store::open_existing(&snap.dir.join("store")).unwrap();
        assert!(copy.verify_audit().unwrap().is_intact());
        assert_eq!(
            copy.audit_entries(.., None).unwrap().len(),
            store.audit_entries(.., None).unwrap().len()
        );
    }

    #[test]
    fn a_backup_opens_only_with_an_operators_key_and_restores_into_an_empty_dir_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let store = Store::open(&state.join("store")).unwrap();
        store
            .audit(
                "operator:alice",
                "test.entry",
                None,
                serde_json::json!({}),
                chrono::Utc::now(),
            )
            .unwrap();
        fs::write(state.join("session.json"), b"{\"sealed\":1}").unwrap();
        let snap = snapshot(&store, &state).unwrap();
        let operator = age::x25519::Identity::generate();
        let out_path = dir.path().join("backup.age");
        let mut out = fs::File::create(&out_path).unwrap();
        let files = pack(&snap.dir, &[operator.to_public()], &mut out, &out_path).unwrap();
        assert_eq!(files, 2);
        assert!(matches!(
            pack(&snap.dir, &[], &mut out, &out_path),
            Err(BackupError::NoRecipients)
        ));

        // Another key opens nothing, and writes nothing.
        let target = dir.path().join("restored");
        let stranger = age::x25519::Identity::generate();
        assert!(matches!(
            unpack(&out_path, &[stranger], &target),
            Err(BackupError::CannotOpen(_))
        ));
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
        // Not over a state directory that holds anything.
        assert!(matches!(
            unpack(&out_path, std::slice::from_ref(&operator), &state),
            Err(BackupError::NotEmpty(_))
        ));
        let restored = unpack(&out_path, &[operator], &target).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(
            fs::read(target.join("session.json")).unwrap(),
            b"{\"sealed\":1}"
        );
        let back = Store::open_existing(&target.join("store")).unwrap();
        assert_eq!(back.audit_entries(.., None).unwrap().len(), 1);
    }

    #[test]
    fn a_backup_with_a_path_outside_the_state_directory_restores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let operator = age::x25519::Identity::generate();
        let crafted = dir.path().join("crafted.age");
        {
            let file = fs::File::create(&crafted).unwrap();
            let recipient = operator.to_public();
            let encryptor =
                age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                    .unwrap();
            let writer = encryptor.wrap_output(file).unwrap();
            let mut tar = tar::Builder::new(writer);
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_mode(0o600);
            header.set_entry_type(tar::EntryType::Regular);
            // `append_data` refuses `..`; write the name into the header by hand.
            header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escaped.tx");
            header.set_cksum();
            tar.append(&header, &b"hi"[..]).unwrap();
            tar.into_inner().unwrap().finish().unwrap();
        }
        let target = dir.path().join("state");
        let err = unpack(&crafted, &[operator], &target).unwrap_err();
        assert!(matches!(err, BackupError::NotABackup { .. }), "{err}");
        assert!(!dir.path().join("escaped.tx").exists());
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
    }
}
