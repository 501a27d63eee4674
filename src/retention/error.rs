//! The sweep's error type.

use super::rate_limit::GiveUp;
use crate::archive::segment::SealError;
use crate::store::StoreError;

/// Why a sweep stopped before the end. Whatever it had done is recorded: the next
/// sweep (the scheduler retries with backoff) resumes from the last complete page.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Reading the room's history failed.
    #[error("reading the history of {room}: {source}")]
    Messages {
        /// The room.
        room: String,
        /// The cause.
        source: matrix_sdk::HttpError,
    },
    /// A redaction failed (not a rate limit).
    #[error("redacting {event} in {room}: {source}")]
    Redact {
        /// The room.
        room: String,
        /// The event.
        event: String,
        /// The cause.
        source: matrix_sdk::HttpError,
    },
    /// The homeserver kept refusing with 429 beyond the retry policy.
    #[error("rate limited in {room}: {why}")]
    RateLimited {
        /// The room.
        room: String,
        /// Why the sweep gave up waiting.
        why: GiveUp,
    },
    /// Decrypting an event to seal it failed (a crypto store error; an event cordon
    /// has no key for is sealed as undecryptable instead).
    #[error("decrypting {event} to seal it: {source}")]
    Decrypt {
        /// The event.
        event: String,
        /// The cause.
        source: matrix_sdk::Error,
    },
    /// matrix-sdk could not tell whether the room is encrypted, and asking the
    /// homeserver failed.
    #[error("reading the encryption state of {room}: {source}")]
    EncryptionState {
        /// The room.
        room: String,
        /// The cause.
        source: matrix_sdk::Error,
    },
    /// Writing a pre-seal segment failed.
    #[error("sealing before redacting: {0}")]
    Seal(#[from] SealError),
    /// The task writing a segment died.
    #[error("the task writing a pre-seal segment failed: {0}")]
    SealTask(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store's sweep record for this incident room names another Matrix room.
    #[error(
        "the sweep record of {incident}/{room_key} is for room {recorded}, not {room}: \
         refusing to sweep from another room's position"
    )]
    RoomMismatch {
        /// The incident.
        incident: String,
        /// The room key.
        room_key: String,
        /// The room in the record.
        recorded: String,
        /// The room given.
        room: String,
    },
}
