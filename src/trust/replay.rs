//! Which megolm message a command came in, so that a replayed command is refused.
//!
//! matrix-sdk-crypto decrypts a megolm message as often as it is posted (it does not
//! check the message index for replays), and cordon's event-id deduplication does not
//! help: anyone who can post as a commander (a server admin through Synapse's
//! `POST /_synapse/admin/v1/users/<user>/login`, or a stolen password) can copy the
//! `content` of an earlier `m.room.encrypted` command into a new event. It decrypts as
//! the commander's verified device, with a fresh server timestamp.
//!
//! What a copy cannot change is the megolm message: its session and message index are
//! signed by the device that encrypted it. So cordon reads the event as the homeserver
//! stores it, decrypts that ciphertext itself (which checks the signature), checks
//! that it is the command being handled (same session, device and text), and keys the
//! command by (sender key, session id, message index). The store keeps each key with
//! the first event it came in ([`crate::store::ciphertexts`]).

use matrix_sdk::Room;
use matrix_sdk::deserialized_responses::{AlgorithmInfo, EncryptionInfo};
use matrix_sdk::ruma::EventId;
use matrix_sdk::ruma::api::client::room::get_room_event;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk_base::crypto::vodozemac::megolm::MegolmMessage;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The megolm message a command came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Megolm {
    /// `megolm/<sender key>/<session id>/<message index>`: the replay key.
    pub key: String,
    /// The session id.
    pub session_id: String,
    /// The message index within the session.
    pub index: u32,
    /// SHA-256 (hex) of the ciphertext bytes.
    pub sha256: String,
}

/// Why a command's megolm message could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unidentified(pub String);

/// The parts of a stored `m.room.encrypted` event the key is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphertext {
    /// The session id, as the event's content gives it.
    pub session_id: String,
    /// The message index, read from the signed megolm message.
    pub index: u32,
    /// SHA-256 (hex) of the megolm message's bytes.
    pub sha256: String,
}

/// Reads the megolm ciphertext out of a stored event (pure).
pub fn ciphertext(event: &Value) -> Result<Ciphertext, Unidentified> {
    if event.get("type").and_then(Value::as_str) != Some("m.room.encrypted") {
        return Err(Unidentified(
            "the homeserver holds this event unencrypted".into(),
        ));
    }
    let content = event.get("content").unwrap_or(&Value::Null);
    if content.get("algorithm").and_then(Value::as_str) != Some("m.megolm.v1.aes-sha2") {
        return Err(Unidentified("it is not a megolm message".into()));
    }
    let session_id = content
        .get("session_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Unidentified("it names no megolm session".into()))?;
    let text = content
        .get("ciphertext")
        .and_then(Value::as_str)
        .ok_or_else(|| Unidentified("it carries no ciphertext".into()))?;
    let message = MegolmMessage::from_base64(text)
        .map_err(|e| Unidentified(format!("its ciphertext is malformed: {e}")))?;
    Ok(Ciphertext {
        session_id: session_id.to_owned(),
        index: message.message_index(),
        sha256: hex::encode(Sha256::digest(message.to_bytes())),
    })
}

/// The replay key of a megolm message.
pub fn key(sender_key: &str, session_id: &str, index: u32) -> String {
    format!("megolm/{sender_key}/{session_id}/{index}")
}

/// Identifies the megolm message of command `event_id` in `room`, which cordon handled
/// with encryption info `info` and text `body`. One request to the homeserver, and one
/// decryption.
pub async fn identify(
    room: &Room,
    event_id: &EventId,
    info: &EncryptionInfo,
    body: &str,
) -> Result<Megolm, Unidentified> {
    let AlgorithmInfo::MegolmV1AesSha2 {
        curve25519_key,
        session_id: Some(session_id),
        ..
    } = &info.algorithm_info
    else {
        return Err(Unidentified(
            "it was not decrypted from a megolm session".into(),
        ));
    };
    let request = get_room_event::v3::Request::new(room.room_id().to_owned(), event_id.to_owned());
    let raw = room
        .client()
        .send(request)
        .await
        .map_err(|e| Unidentified(format!("the homeserver did not give the event: {e}")))?
        .event;
    let stored: Value = serde_json::from_str(raw.json().get())
        .map_err(|e| Unidentified(format!("the stored event is unreadable: {e}")))?;
    let found = ciphertext(&stored)?;
    if &found.session_id != session_id {
        return Err(Unidentified(
            "the stored event names another megolm session than the one it was decrypted with"
                .into(),
        ));
    }
    // Decrypt what the homeserver stores: the signature check makes the index
    // authentic, and the comparison makes it this command's.
    let encrypted: Raw<OriginalSyncRoomEncryptedEvent> = Raw::from_json(raw.into_json());
    let decrypted = room
        .decrypt_event(&encrypted, None)
        .await
        .map_err(|e| Unidentified(format!("the stored event does not decrypt: {e}")))?;
    let Some(again) = decrypted.encryption_info() else {
        return Err(Unidentified("the stored event does not decrypt".into()));
    };
    let same_device = again.sender == info.sender
        && again.sender_device == info.sender_device
        && again.session_id() == Some(session_id.as_str())
        && matches!(&again.algorithm_info,
            AlgorithmInfo::MegolmV1AesSha2 { curve25519_key: k, .. } if k == curve25519_key);
    let text = decrypted
        .raw()
        .get_field::<Value>("content")
        .ok()
        .flatten()
        .and_then(|c| c.get("body").and_then(Value::as_str).map(str::to_owned));
    if !same_device || text.as_deref() != Some(body) {
        return Err(Unidentified(
            "the stored event is not the command that was handled".into(),
        ));
    }
    Ok(Megolm {
        key: key(curve25519_key, session_id, found.index),
        session_id: found.session_id,
        index: found.index,
        sha256: found.sha256,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_megolm_event_with_a_well_formed_ciphertext_is_identified() {
        assert!(ciphertext(&json!({"type": "m.room.message", "content": {"body": "x"}})).is_err());
        assert!(
            ciphertext(&json!({"type": "m.room.encrypted", "content": {
                "algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {}
            }}))
            .is_err()
        );
        let bad = ciphertext(&json!({"type": "m.room.encrypted", "content": {
            "algorithm": "m.megolm.v1.aes-sha2", "session_id": "S", "ciphertext": "AwgA"
        }}));
        assert!(
            bad.as_ref().is_err_and(|e| e.0.contains("malformed")),
            "{bad:?}"
        );
        assert!(
            ciphertext(&json!({"type": "m.room.encrypted", "content": {
                "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgA"
            }}))
            .is_err()
        );
    }

    #[test]
    fn the_index_is_read_from_the_signed_message() {
        use matrix_sdk_base::crypto::vodozemac::megolm::{GroupSession, SessionConfig};
        let mut session = GroupSession::new(SessionConfig::version_1());
        let event = |m: MegolmMessage| {
            json!({"type": "m.room.encrypted", "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "session_id": "S",
                "ciphertext": m.to_base64(),
            }})
        };
        let first = ciphertext(&event(session.encrypt("!cordon standdown"))).unwrap();
        let second = ciphertext(&event(session.encrypt("!cordon standdown"))).unwrap();
        assert_eq!((first.index, second.index), (0, 1));
        assert_eq!(first.session_id, "S");
        assert_ne!(
            first.sha256, second.sha256,
            "the same text twice is two messages"
        );
    }

    #[test]
    fn the_key_names_the_sender_key_session_and_index() {
        assert_eq!(key("K", "S", 7), "megolm/K/S/7");
        assert_ne!(key("K", "S", 7), key("K", "S", 8));
    }
}
