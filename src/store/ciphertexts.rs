//! Ciphertexts cordon has accepted commands from, so that a replayed one runs nothing.
//!
//! matrix-sdk decrypts a megolm message as often as it is sent, and a server admin (or
//! whoever holds a commander's password) can post the `content` of an earlier
//! `m.room.encrypted` command again as a new event: it decrypts as the commander's
//! verified device, with a fresh server timestamp. What cannot be made fresh is the
//! megolm message itself: its session and message index are signed by the sending
//! device. So each command's (sender key, session, index) is recorded here before the
//! command runs, and kept for good (an inbound megolm session can be used for as long
//! as cordon keeps it, which is for good).

use chrono::{DateTime, Utc};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode, encode, tables};

/// The first event a megolm message was accepted from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedCiphertext {
    /// The event that carried it first.
    pub event_id: String,
    /// Its room.
    pub room: String,
    /// Its sender, as the server gave it.
    pub sender: String,
    /// When cordon accepted it.
    pub at: DateTime<Utc>,
    /// SHA-256 (hex) of the ciphertext bytes, for the audit.
    pub sha256: String,
}

/// What [`Store::accept_ciphertext`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    /// Never seen: recorded now, the command may run.
    New,
    /// Recorded before for this same event (a restart, or the catch-up seeing it
    /// again): the processed-events check decides.
    SameEvent,
    /// Recorded before for another event: a replay.
    Replay(AcceptedCiphertext),
}

impl Store {
    /// Records that the megolm message `key` (sender key, session id and message index)
    /// was accepted as `first`, unless it was accepted before.
    pub fn accept_ciphertext(
        &self,
        key: &str,
        first: &AcceptedCiphertext,
    ) -> Result<Acceptance, StoreError> {
        let tx = self.write()?;
        let found = {
            let mut table = tx.open_table(tables::CIPHERTEXTS)?;
            let existing: Option<AcceptedCiphertext> = match table.get(key)? {
                None => None,
                Some(bytes) => Some(decode("ciphertexts", key, bytes.value())?),
            };
            match existing {
                Some(e) if e.event_id == first.event_id => Acceptance::SameEvent,
                Some(e) => Acceptance::Replay(e),
                None => {
                    table.insert(key, encode("ciphertexts", first)?.as_slice())?;
                    Acceptance::New
                }
            }
        };
        tx.commit()?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(event: &str) -> AcceptedCiphertext {
        AcceptedCiphertext {
            event_id: event.into(),
            room: "!c:x.org".into(),
            sender: "@ic:x.org".into(),
            at: DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default(),
            sha256: "00".into(),
        }
    }

    #[test]
    fn a_ciphertext_is_accepted_once_and_its_replay_names_the_first_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let key = "megolm/KEY/SESSION/7";
        assert_eq!(
            store.accept_ciphertext(key, &accepted("$first")).unwrap(),
            Acceptance::New
        );
        assert_eq!(
            store.accept_ciphertext(key, &accepted("$first")).unwrap(),
            Acceptance::SameEvent,
            "the same event seen again is not a replay"
        );
        assert_eq!(
            store.accept_ciphertext(key, &accepted("$copy")).unwrap(),
            Acceptance::Replay(accepted("$first"))
        );
        assert_eq!(
            store
                .accept_ciphertext("megolm/KEY/SESSION/8", &accepted("$next"))
                .unwrap(),
            Acceptance::New,
            "the next message of the same session is new"
        );
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.accept_ciphertext(key, &accepted("$later")).unwrap(),
            Acceptance::Replay(accepted("$first")),
            "kept across restarts"
        );
    }
}
