//! The transcript format: one JSON line per event, the same in a pre-seal segment and
//! in the sealed archive (specified in `docs/archive-format.md`), and how cordon read
//! the event (decrypted, in the clear, undecryptable) and whether anything proves who
//! sent it. Pure: [`crate::archive::segment`] encrypts lines to disk, the retention
//! sweep and the stand-down's export make them from events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The transcript format's version, in every line's `v`.
pub const FORMAT_VERSION: u32 = 1;

/// How a line came to be written; pre-seal segments are `pre-seal`.
pub const SOURCE_PRE_SEAL: &str = "pre-seal";

/// How a line came to be written; the stand-down's export is `export`.
pub const SOURCE_EXPORT: &str = "export";

/// One event of the transcript: one line of a segment or of the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    /// The format version ([`FORMAT_VERSION`]).
    pub v: u32,
    /// How the line was written: `pre-seal` (by a retention sweep, before redacting).
    pub source: String,
    /// The event id: unique per event, so duplicate lines are recognised by it.
    pub event_id: String,
    /// The Matrix room.
    pub room_id: String,
    /// The playbook's room key.
    pub room_key: String,
    /// The sender, as the homeserver reports it.
    pub sender: String,
    /// When the homeserver received it, Unix milliseconds.
    pub origin_server_ts: i64,
    /// The event type as cordon read it: the decrypted type for an encrypted event
    /// cordon could decrypt, `m.room.encrypted` for one it could not.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The (decrypted) content; absent when undecryptable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// The content's `m.relates_to` (replies, edits, reactions, threads), when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relates_to: Option<Value>,
    /// Present on events that were end-to-end encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// True when cordon could not decrypt the event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undecryptable: bool,
    /// State events only: the state key (for membership changes, the member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    /// Set when the event had been redacted when it was read: its content is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted: Option<Redacted>,
    /// Attachments: where the media was, and where its (decrypted) bytes are in the
    /// archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRef>,
    /// Set when nothing proves the event came from `sender`: it arrived unencrypted in
    /// an encrypted room, from a device cordon had not verified, or under another
    /// sender than the owner of its encryption session. Absent on lines written before
    /// cordon marked them (manifest version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<Unauthenticated>,
}

/// Why nothing proves that an event came from the sender the homeserver names.
///
/// The homeserver writes an event's `sender`. Only end-to-end encryption from a device
/// cross-signed by an identity cordon verified ties the words to a person; each
/// variant is a way that tie is missing, so a reader never takes such a line for a
/// clinician's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unauthenticated {
    /// Sent in plaintext into an encrypted room: the homeserver, or any client of the
    /// sender's account without encryption, could have written it.
    Unencrypted,
    /// Decrypted, but the sending device was not cross-signed by an identity cordon
    /// verified (not enrolled, an identity changed since, an unsigned or unknown
    /// device, a key from an insecure source); `encryption.verification` says which.
    UnverifiedDevice,
    /// The event's `sender` is not the owner of the device that created its megolm
    /// session: someone else's message, re-sent under this sender's name.
    MismatchedSender,
}

impl Unauthenticated {
    /// The value as written in a transcript line (`unencrypted`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unencrypted => "unencrypted",
            Self::UnverifiedDevice => "unverified-device",
            Self::MismatchedSender => "mismatched-sender",
        }
    }

    /// What it means for a reader, one sentence without a full stop.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Unencrypted => {
                "not end-to-end encrypted in an encrypted room: the homeserver could have \
                 written it, and nothing proves the sender did"
            }
            Self::UnverifiedDevice => {
                "sent from a device cordon had not verified: nothing proves the sender wrote it"
            }
            Self::MismatchedSender => {
                "the sender is not the owner of its encryption session: it was re-sent in \
                 the sender's name and is not their message"
            }
        }
    }
}

/// The marker of a redaction, from the redacted event's `unsigned.redacted_because`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redacted {
    /// Who redacted it.
    pub by: String,
    /// When, Unix milliseconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<i64>,
    /// The redaction's reason, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The redaction event's id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redaction_event_id: Option<String>,
    /// True when cordon's retention sweep redacted it (the message itself may be in a
    /// pre-seal segment).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_retention: bool,
}

/// An attachment of a message (`m.image`, `m.file`, `m.video`, `m.audio`, stickers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// The media's `mxc://` address.
    pub mxc: String,
    /// True when the media was end-to-end encrypted (an `EncryptedFile`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// The decrypted bytes' path inside the archive; absent when they could not be
    /// fetched (see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// SHA-256 (hex) of the decrypted bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size of the decrypted bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The MIME type the message gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mimetype: Option<String>,
    /// Why the bytes are not in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an encrypted event was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The sending device, when cordon decrypted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_device: Option<String>,
    /// Whether that device was verified (cross-signed by an identity cordon verified)
    /// when cordon decrypted it.
    #[serde(default)]
    pub verified: bool,
    /// When `verified` is false for a decrypted event, why, from matrix-sdk's
    /// verification level: `unverified-identity`, `verification-violation` (the
    /// identity changed after it was verified), `unsigned-device`, `unknown-device`,
    /// `insecure-source` (the key came from a backup or a forward), `mismatched-sender`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    /// The megolm session, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Why it could not be decrypted (undecryptable events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// How cordon read one event, for [`TranscriptLine::from_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// A plaintext event in a room without end-to-end encryption.
    Plain,
    /// A plaintext event in an encrypted room. Its line is marked
    /// [`Unauthenticated::Unencrypted`], unless it is a state event or a redaction (the
    /// protocol sends those in the clear) or a redacted encrypted event (whose type is
    /// still `m.room.encrypted`).
    PlainInEncryptedRoom,
    /// Decrypted; `event` passed is the decrypted event.
    Decrypted(Encryption),
    /// Could not be decrypted; `event` passed is the `m.room.encrypted` event.
    Undecryptable(Encryption),
}

impl TranscriptLine {
    /// The line for an event's JSON as cordon read it (`event` is the decrypted event
    /// when `reading` is `Decrypted`). `None` when the event lacks an id, sender, type
    /// or timestamp.
    pub fn from_event(
        room_id: &str,
        room_key: &str,
        event: &Value,
        reading: Reading,
    ) -> Option<TranscriptLine> {
        let text = |k: &str| event.get(k).and_then(Value::as_str).map(str::to_owned);
        let content = event.get("content").cloned();
        let relates_to = content
            .as_ref()
            .and_then(|c| c.get("m.relates_to"))
            .cloned();
        let unauthenticated = reading.unauthenticated(event);
        let (content, relates_to, encryption, undecryptable) = match reading {
            Reading::Plain | Reading::PlainInEncryptedRoom => (content, relates_to, None, false),
            Reading::Decrypted(e) => (content, relates_to, Some(e), false),
            // The ciphertext is useless to the reader; relations stay in the clear.
            Reading::Undecryptable(e) => (None, relates_to, Some(e), true),
        };
        Some(TranscriptLine {
            v: FORMAT_VERSION,
            source: SOURCE_PRE_SEAL.to_owned(),
            event_id: text("event_id")?,
            room_id: room_id.to_owned(),
            room_key: room_key.to_owned(),
            sender: text("sender")?,
            origin_server_ts: event.get("origin_server_ts")?.as_i64()?,
            event_type: text("type")?,
            content,
            relates_to,
            encryption,
            undecryptable,
            state_key: text("state_key"),
            redacted: None,
            media: None,
            unauthenticated,
        })
    }
}

/// `encryption.verification` when the event's sender is not its session's owner.
pub const VERIFICATION_MISMATCHED_SENDER: &str = "mismatched-sender";

impl Reading {
    /// A plaintext event's reading: [`Reading::PlainInEncryptedRoom`] when the room is
    /// encrypted.
    pub fn plain(room_encrypted: bool) -> Reading {
        if room_encrypted {
            Reading::PlainInEncryptedRoom
        } else {
            Reading::Plain
        }
    }

    /// Why nothing proves that `event`, read this way, came from its sender.
    fn unauthenticated(&self, event: &Value) -> Option<Unauthenticated> {
        match self {
            Reading::Plain | Reading::Undecryptable(_) => None,
            Reading::PlainInEncryptedRoom => {
                let event_type = event.get("type").and_then(Value::as_str);
                let in_the_clear_by_protocol = event.get("state_key").is_some()
                    || matches!(event_type, Some("m.room.redaction" | "m.room.encrypted"));
                (!in_the_clear_by_protocol).then_some(Unauthenticated::Unencrypted)
            }
            Reading::Decrypted(e)
                if e.verification.as_deref() == Some(VERIFICATION_MISMATCHED_SENDER) =>
            {
                Some(Unauthenticated::MismatchedSender)
            }
            Reading::Decrypted(e) if !e.verified => Some(Unauthenticated::UnverifiedDevice),
            Reading::Decrypted(_) => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A decrypted, verified message line, for the tests here and in the archive.
    pub(crate) fn line(id: &str, body: &str) -> TranscriptLine {
        TranscriptLine::from_event(
            "!room",
            "command",
            &json!({
                "event_id": id, "sender": "@a:hs", "origin_server_ts": 1_700_000_000_000_i64,
                "type": "m.room.message",
                "content": { "msgtype": "m.text", "body": body,
                             "m.relates_to": { "m.in_reply_to": { "event_id": "$p" } } },
            }),
            Reading::Decrypted(Encryption {
                sender_device: Some("DEV".into()),
                verified: true,
                verification: None,
                session_id: Some("s".into()),
                failure: None,
            }),
        )
        .unwrap()
    }

    #[test]
    fn lines_carry_content_relations_and_how_they_were_read() {
        let l = line("$e", "BP 90/60\nsecond line");
        assert_eq!(
            l.relates_to,
            Some(json!({ "m.in_reply_to": { "event_id": "$p" } }))
        );
        let bytes = serde_json::to_vec(&l).unwrap();
        // The newline in the body is escaped: a line is one line of JSON Lines (the
        // encoding itself is `archive::segment::encode_lines`, tested there).
        assert!(!bytes.contains(&b'\n'));
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["source"], "pre-seal");
        assert_eq!(v["type"], "m.room.message");
        assert_eq!(v["encryption"]["verified"], true);
        assert!(v.get("undecryptable").is_none());
    }

    #[test]
    fn an_undecryptable_event_keeps_no_ciphertext() {
        let l = TranscriptLine::from_event(
            "!room",
            "command",
            &json!({
                "event_id": "$u", "sender": "@a:hs", "origin_server_ts": 5,
                "type": "m.room.encrypted",
                "content": { "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAA",
                             "m.relates_to": { "rel_type": "m.thread", "event_id": "$root" } },
            }),
            Reading::Undecryptable(Encryption {
                sender_device: None,
                verified: false,
                verification: None,
                session_id: Some("s".into()),
                failure: Some("MissingMegolmSession".into()),
            }),
        )
        .unwrap();
        assert!(l.undecryptable);
        assert_eq!(l.content, None);
        assert_eq!(l.relates_to.unwrap()["rel_type"], "m.thread");
        let v: Value = serde_json::to_value(line("$x", "y")).unwrap();
        assert!(v.get("undecryptable").is_none());
    }

    #[test]
    fn lines_say_when_nothing_proves_their_sender_wrote_them() {
        let event = |ty: &str, state_key: Option<&str>| {
            let mut e = json!({
                "event_id": "$e", "sender": "@a:hs", "origin_server_ts": 5, "type": ty,
                "content": { "msgtype": "m.text", "body": "Give 10 units insulin" },
            });
            if let Some(k) = state_key {
                e["state_key"] = json!(k);
            }
            e
        };
        let mark = |ty: &str, state_key: Option<&str>, reading: Reading| {
            TranscriptLine::from_event("!r", "command", &event(ty, state_key), reading)
                .unwrap()
                .unauthenticated
        };
        let decrypted = |verified: bool, verification: Option<&str>| {
            Reading::Decrypted(Encryption {
                sender_device: Some("DEV".into()),
                verified,
                verification: verification.map(str::to_owned),
                session_id: None,
                failure: None,
            })
        };
        // Plaintext in an encrypted room: marked, unless the protocol sends it in the
        // clear (state, redactions) or it is a redacted encrypted event.
        assert_eq!(
            mark("m.room.message", None, Reading::plain(true)),
            Some(Unauthenticated::Unencrypted)
        );
        assert_eq!(
            mark("m.reaction", None, Reading::plain(true)),
            Some(Unauthenticated::Unencrypted)
        );
        assert_eq!(
            mark("m.room.member", Some("@a:hs"), Reading::plain(true)),
            None
        );
        assert_eq!(mark("m.room.redaction", None, Reading::plain(true)), None);
        assert_eq!(mark("m.room.encrypted", None, Reading::plain(true)), None);
        // In a room without encryption, plaintext is all there is.
        assert_eq!(mark("m.room.message", None, Reading::plain(false)), None);
        // Decrypted: only a verified device's message is unmarked.
        assert_eq!(mark("m.room.message", None, decrypted(true, None)), None);
        assert_eq!(
            mark(
                "m.room.message",
                None,
                decrypted(false, Some("unsigned-device"))
            ),
            Some(Unauthenticated::UnverifiedDevice)
        );
        assert_eq!(
            mark(
                "m.room.message",
                None,
                decrypted(false, Some(VERIFICATION_MISMATCHED_SENDER))
            ),
            Some(Unauthenticated::MismatchedSender)
        );
        // Written as kebab-case, and absent when there is nothing to say.
        let marked = TranscriptLine::from_event(
            "!r",
            "command",
            &event("m.room.message", None),
            Reading::plain(true),
        )
        .unwrap();
        let v: Value = serde_json::to_value(&marked).unwrap();
        assert_eq!(v["unauthenticated"], "unencrypted");
        let v: Value = serde_json::to_value(line("$x", "y")).unwrap();
        assert!(v.get("unauthenticated").is_none(), "{v}");
    }

    #[test]
    fn events_without_the_essentials_make_no_line() {
        let event = json!({ "event_id": "$e", "type": "m.room.message", "content": {} });
        assert!(TranscriptLine::from_event("!r", "k", &event, Reading::Plain).is_none());
    }
}
