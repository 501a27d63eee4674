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
}
