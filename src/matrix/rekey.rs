//! A new store passphrase (`cordon rekey`): everything the passphrase protects is
//! sealed again under the new one, with the bot stopped.
//!
//! matrix-sdk's sqlite stores keep their data encrypted with a random store cipher,
//! which is itself stored encrypted with the passphrase (the `cipher` entry of each
//! store's `kv` table, PBKDF2). Re-keying re-exports that cipher under the new
//! passphrase: the data is untouched. The sealed access token in `session.json` and
//! the archive signing key are sealed again the same way.
//!
//! There is no single transaction across those files, so each step is idempotent: a
//! part that the new passphrase already opens is left as it is. A re-key cut short is
//! finished by running it again with the same two passphrases.

use std::path::Path;

use matrix_sdk_store_encryption::StoreCipher;
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::MatrixError;
use crate::input::config::Secret;

/// What re-keying did to one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rekeyed {
    /// Sealed again under the new passphrase.
    Done,
    /// The new passphrase opens it already (a re-key run before).
    AlreadyNew,
    /// There is no such part.
    Absent,
}

/// Re-exports the store cipher of the sqlite store at `path` under `new`.
pub fn sqlite_store(path: &Path, old: &Secret, new: &Secret) -> Result<Rekeyed, MatrixError> {
    let fail = |why: String| MatrixError::LocalStore {
        path: path.to_path_buf(),
        why,
    };
    if !path.exists() {
        return Ok(Rekeyed::Absent);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(format!("opening it: {e}")))?;
    let exported: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM kv WHERE key = 'cipher'", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(|e| fail(format!("reading its cipher: {e}")))?;
    let Some(exported) = exported else {
        return Ok(Rekeyed::Absent);
    };
    if StoreCipher::import(new.expose(), &exported).is_ok() {
        return Ok(Rekeyed::AlreadyNew);
    }
    let cipher = StoreCipher::import(old.expose(), &exported)
        .map_err(|_| fail("neither the old nor the new passphrase opens its cipher".to_owned()))?;
    let again = cipher
        .export(new.expose())
        .map_err(|e| fail(format!("sealing its cipher again: {e}")))?;
    conn.execute(
        "UPDATE kv SET value = ?1 WHERE key = 'cipher'",
        rusqlite::params![again],
    )
    .map_err(|e| fail(format!("writing its cipher: {e}")))?;
    Ok(Rekeyed::Done)
}

/// Seals `session.json`'s tokens again under `new`.
pub fn session_file(path: &Path, old: &Secret, new: &Secret) -> Result<Rekeyed, MatrixError> {
    if !path.exists() {
        return Ok(Rekeyed::Absent);
    }
    if let Ok(Some(saved)) = super::session::read_session(path, new)
        && !saved.was_in_the_clear
    {
        return Ok(Rekeyed::AlreadyNew);
    }
    let saved =
        super::session::read_session(path, old)?.ok_or_else(|| MatrixError::SessionFile {
            path: path.to_path_buf(),
            why: "it vanished while being re-keyed".to_owned(),
        })?;
    super::session::write_session(path, &saved.session, new)?;
    Ok(Rekeyed::Done)
}
