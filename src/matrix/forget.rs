//! Forgetting a destroyed room in cordon's own Matrix stores, so that a copy of the
//! state directory taken later holds nothing readable from the incident.
//!
//! Destroying a room on the server leaves cordon's side of it in matrix-sdk's sqlite
//! stores (`matrix/` in the state directory): the room's state (name, topic, members)
//! in the state store, and in the crypto store every inbound megolm session it received
//! for the room, which decrypts any copy of the room's ciphertext that survives
//! elsewhere (a member's backup, a database dump). Three parts, each safe to repeat:
//!
//! 1. **State store** (matrix-sdk's public API): cordon left the room before asking
//!    Synapse to delete it, so [`matrix_sdk::Room::forget`] tells the server and removes
//!    the room from the state store, the event cache and the client's memory. A room
//!    purged while the client still counted itself joined (a stand-down resumed after
//!    Synapse's deletion had already removed cordon) cannot be left or forgotten through
//!    the server any more (404), and a purged room sends no leave down sync: it is
//!    removed from the state store and the event cache directly
//!    (`StateStore::remove_room`), and only an empty shell stays in the client's memory
//!    until the next start.
//! 2. **Crypto store**: matrix-sdk 0.18 has no way to delete inbound group sessions.
//!    Its `CryptoStore` trait saves and reads them, never removes one, and nothing in
//!    `OlmMachine` or `Client` does either. The options were:
//!    - leave them: the keys of every destroyed incident stay on disk for good;
//!    - recreate the crypto store without them: that is a new device, and everyone
//!      would have to verify cordon again;
//!    - delete the rows in the sqlite file ourselves, which is what this module does.
//!
//!    The sqlite crypto store keys each row by the room id hashed with a key derived
//!    from its store cipher (`StoreCipher::hash_key`, one key per table), and keeps the
//!    cipher in its `kv` table encrypted with the store passphrase. So
//!    [`RoomKeyEraser::open`] imports that cipher once at start-up (the passphrase is
//!    not kept), and [`RoomKeyEraser::erase`] computes each table's hash of the room id
//!    and deletes the room's rows: inbound sessions, cordon's outbound session, withheld
//!    notices, room settings and key-bundle records. It runs in one transaction on its
//!    own connection (sqlite serialises it with matrix-sdk's own), with `secure_delete`
//!    so the freed pages are overwritten with zeros, then truncates the write-ahead log,
//!    so no copy of the rows is left in either file. matrix-sdk keeps no inbound
//!    session in memory (it reads them from the store for each decryption), so nothing
//!    brings them back; only a room key still in flight from a member's device could
//!    arrive and be stored afterwards.
//!
//!    This depends on the private schema of matrix-sdk-sqlite 0.18 (pinned in
//!    `Cargo.toml`). Every table and column is checked before anything is deleted, and
//!    a schema that differs is an error that stops the stand-down step rather than a
//!    silent no-op; the integration test reads the sessions back through matrix-sdk's
//!    own `CryptoStore` API, so an upgrade that changed the hashing fails it.
//! 3. **Key backup**: cordon backs its room keys up to the homeserver (recovery). The
//!    room's keys are deleted from the current backup version too
//!    (`DELETE /room_keys/keys/{roomId}`), after the local rows, so none is uploaded
//!    again afterwards.

use std::path::{Path, PathBuf};

use matrix_sdk::cross_process_lock::MappedCrossProcessLockState;
use matrix_sdk::ruma::api::client::backup::{delete_backup_keys_for_room, get_latest_backup_info};
use matrix_sdk::ruma::api::error::ErrorKind;
use matrix_sdk::ruma::{OwnedRoomId, RoomId};
use matrix_sdk::{Client, RoomState};
use matrix_sdk_store_encryption::StoreCipher;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tracing::{debug, info, warn};

use super::MatrixError;

/// The crypto store's file in matrix-sdk's store directory (matrix-sdk-sqlite 0.18).
pub const CRYPTO_STORE_FILE: &str = "matrix-sdk-crypto.sqlite3";

/// The crypto store's tables that hold something of a room, each keyed by a `room_id`
/// column hashed under the table's own name.
const ROOM_TABLES: [&str; 7] = [
    "inbound_group_session",
    "outbound_group_session",
    "direct_withheld_info",
    "room_settings",
    "received_room_key_bundle",
    "rooms_pending_key_bundle",
    "room_key_backups_fully_downloaded",
];

/// How long the eraser waits for matrix-sdk's own writes to the crypto store.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Deletes a room's keys from matrix-sdk's sqlite crypto store (see the module
/// documentation for why it goes under the SDK).
pub struct RoomKeyEraser {
    path: PathBuf,
    /// The store's cipher, which hashes its keys; `None` for a store opened without a
    /// passphrase, whose keys are plain.
    cipher: Option<StoreCipher>,
}

impl std::fmt::Debug for RoomKeyEraser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKeyEraser")
            .field("path", &self.path)
            .field("hashed_keys", &self.cipher.is_some())
            .finish()
    }
}

/// What forgetting one room removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Inbound megolm sessions deleted from the crypto store.
    pub sessions: u64,
    /// Other rows of the room deleted from the crypto store (cordon's outbound session,
    /// withheld notices, settings, key bundles).
    pub other_rows: u64,
    /// Whether the room was still in the client's state store.
    pub state_forgotten: bool,
    /// Whether the homeserver had a key backup, from which the room's keys were
    /// deleted.
    pub backup_cleared: bool,
}

impl RoomKeyEraser {
    /// Opens the eraser for the crypto store in matrix-sdk's store directory
    /// `sdk_store`, importing its store cipher with `passphrase` (slow on purpose:
    /// PBKDF2). Call it once, after the client has opened the store.
    pub fn open(sdk_store: &Path, passphrase: &str) -> Result<Self, MatrixError> {
        let path = sdk_store.join(CRYPTO_STORE_FILE);
        let conn = connect(&path)?;
        let exported: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM kv WHERE key = 'cipher'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| local_store(&path, format!("reading its cipher: {e}")))?;
        let cipher = exported
            .map(|bytes| StoreCipher::import(passphrase, &bytes))
            .transpose()
            .map_err(|e| local_store(&path, format!("unlocking its cipher: {e}")))?;
        Ok(Self { path, cipher })
    }

    /// The crypto store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The room id as the crypto store's `table` keys it.
    fn key(&self, table: &str, room: &RoomId) -> Vec<u8> {
        match &self.cipher {
            Some(cipher) => cipher.hash_key(table, room.as_bytes()).to_vec(),
            None => room.as_bytes().to_vec(),
        }
    }

    /// Deletes every row of `room` from the crypto store, overwriting the freed space,
    /// and returns (inbound sessions, other rows) deleted. Blocking: run it off the
    /// async runtime.
    pub fn erase(&self, room: &RoomId) -> Result<(u64, u64), MatrixError> {
        let mut conn = connect(&self.path)?;
        let fail = |what: &str, e: rusqlite::Error| local_store(&self.path, format!("{what}: {e}"));
        check_schema(&conn).map_err(|why| local_store(&self.path, why))?;
        // Deleted content is overwritten with zeros, in the database and the log.
        conn.pragma_update(None, "secure_delete", true)
            .map_err(|e| fail("turning on secure_delete", e))?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| fail("starting a transaction", e))?;
        let mut sessions = 0;
        let mut other = 0;
        for table in ROOM_TABLES {
            let deleted =
                tx.execute(
                    &format!("DELETE FROM \"{table}\" WHERE room_id = ?1"),
                    [self.key(table, room)],
                )
                .map_err(|e| fail(&format!("deleting from {table}"), e))? as u64;
            if table == "inbound_group_session" {
                sessions += deleted;
            } else {
                other += deleted;
            }
        }
        tx.commit().map_err(|e| fail("committing", e))?;
        // The pages the rows were in are zeroed in the log; copied into the database and
        // the log emptied, no old frame keeps them. A reader of matrix-sdk's may hold the
        // log for a moment: then the next checkpoint does it.
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .map_err(|e| fail("checkpointing", e))?;
        if busy != 0 {
            warn!(store = %self.path.display(), "the crypto store's log could not be truncated now; sqlite does it at a later checkpoint");
        }
        Ok((sessions, other))
    }
}

/// A read-write connection to an existing sqlite file (never creating one).
fn connect(path: &Path) -> Result<Connection, MatrixError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| local_store(path, format!("opening it: {e}")))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| local_store(path, format!("setting its busy timeout: {e}")))?;
    Ok(conn)
}

/// Checks that every table the eraser deletes from exists with a `room_id` column, so
/// that a matrix-sdk upgrade that moved the keys elsewhere stops the step loudly.
fn check_schema(conn: &Connection) -> Result<(), String> {
    for table in ROOM_TABLES {
        let has_room_id: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = 'room_id'",
                [table],
                |row| row.get(0),
            )
            .map_err(|e| format!("reading its schema: {e}"))?;
        if !has_room_id {
            return Err(format!(
                "its table {table} has no room_id column: this is not the matrix-sdk-sqlite \
                 0.18 schema cordon knows, so it cannot delete a room's keys from it"
            ));
        }
    }
    Ok(())
}

fn local_store(path: &Path, why: String) -> MatrixError {
    MatrixError::LocalStore {
        path: path.to_owned(),
        why,
    }
}

/// Forgets `room_id` in cordon's own stores: the state store (leaving first if the
/// client still thinks it is joined), the crypto store's rows of the room, and the
/// room's keys in the homeserver's key backup. Safe to repeat; the room must already
/// be gone from the server or left.
pub async fn forget_room(
    client: &Client,
    eraser: &std::sync::Arc<RoomKeyEraser>,
    room_id: &OwnedRoomId,
) -> Result<Forgotten, MatrixError> {
    let mut forgotten = Forgotten::default();
    if let Some(room) = client.get_room(room_id) {
        if matches!(
            room.state(),
            RoomState::Joined | RoomState::Invited | RoomState::Knocked
        ) {
            // matrix-sdk counts a refusal as having left; a purged room answers 404.
            if let Err(e) = room.leave().await {
                debug!(room = %room_id, error = %e, "leaving before forgetting");
            }
        }
        match room.state() {
            RoomState::Left | RoomState::Banned => room.forget().await?,
            state => {
                // A room purged while the client still counted itself joined (a
                // stand-down resumed after Synapse's deletion had removed cordon): the
                // server knows the room no more, so neither `leave` nor `forget` can
                // reach matrix-sdk's own bookkeeping, and sync never brings the leave.
                // Its stores are cleared directly; the client's memory keeps an empty
                // shell of the room, which receives nothing, until the next start.
                warn!(room = %room_id, ?state, "the room is gone from the server; removing it from the stores directly");
                client
                    .state_store()
                    .remove_room(room_id)
                    .await
                    .map_err(|e| {
                        MatrixError::Client(format!("removing {room_id} from the state store: {e}"))
                    })?;
                let cache =
                    client.event_cache_store().lock().await.map_err(|e| {
                        MatrixError::Client(format!("locking the event cache: {e}"))
                    })?;
                let (MappedCrossProcessLockState::Clean(guard)
                | MappedCrossProcessLockState::Dirty(guard)) = cache;
                guard.remove_room(room_id).await.map_err(|e| {
                    MatrixError::Client(format!("removing {room_id} from the event cache: {e}"))
                })?;
            }
        }
        forgotten.state_forgotten = true;
    }
    let erase = eraser.clone();
    let room = room_id.clone();
    let (sessions, other) = tokio::task::spawn_blocking(move || erase.erase(&room))
        .await
        .map_err(|e| MatrixError::Client(format!("erasing room keys: {e}")))??;
    forgotten.sessions = sessions;
    forgotten.other_rows = other;
    forgotten.backup_cleared = delete_backed_up_keys(client, room_id).await?;
    info!(
        room = %room_id,
        sessions,
        other_rows = other,
        backup_cleared = forgotten.backup_cleared,
        "the room is forgotten in cordon's stores"
    );
    Ok(forgotten)
}

/// Deletes `room_id`'s keys from the homeserver's current key backup. False when there
/// is no backup.
async fn delete_backed_up_keys(
    client: &Client,
    room_id: &OwnedRoomId,
) -> Result<bool, MatrixError> {
    let version = match client
        .send(get_latest_backup_info::v3::Request::new())
        .await
    {
        Ok(info) => info.version,
        Err(e) if e.client_api_error_kind() == Some(&ErrorKind::NotFound) => return Ok(false),
        Err(e) => return Err(matrix_sdk::Error::from(e).into()),
    };
    // A backup replaced meanwhile answers an error: the step's next attempt reads the
    // new version.
    let request = delete_backup_keys_for_room::v3::Request::new(version, room_id.clone());
    client
        .send(request)
        .await
        .map_err(matrix_sdk::Error::from)?;
    Ok(true)
}
