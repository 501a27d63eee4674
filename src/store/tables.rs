//! Table definitions and `meta` keys. Values are JSON (`serde_json`) bytes unless noted.

use redb::TableDefinition;

/// `meta`: key → JSON value. Keys: [`SCHEMA_VERSION`], [`AUDIT_HEAD`], [`OUTBOX_SEQ`],
/// [`HEALTH_PROBE`].
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `incidents`: incident id → `Incident` JSON.
pub const INCIDENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("incidents");
/// `rooms`: (incident id, room key) → `RoomRecord` JSON.
pub const ROOMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rooms");
/// `timers`: timer id → `Timer` JSON.
pub const TIMERS: TableDefinition<&str, &[u8]> = TableDefinition::new("timers");
/// `processed_events`: Matrix event id → when it was handled (Unix milliseconds).
pub const PROCESSED: TableDefinition<&str, i64> = TableDefinition::new("processed_events");
/// `outbox`: intent key → `OutboxEntry` JSON.
pub const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// `audit`: sequence number (from 1) → `AuditEntry` JSON.
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// `control_rooms`: Matrix room id → `ControlRoom` JSON (rooms an operator invited
/// cordon into).
pub const CONTROL_ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("control_rooms");
/// `playbook_snapshots`: incident id → `PlaybookSnapshot` JSON (the playbook exactly as
/// declared).
pub const PLAYBOOK_SNAPSHOTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("playbook_snapshots");

/// `meta` key: the schema version (a JSON number).
pub const SCHEMA_VERSION: &str = "schema_version";
/// `meta` key: the audit log's head, `{"seq": N, "hash": "<hex>"}`.
pub const AUDIT_HEAD: &str = "audit_head";
/// `meta` key: the last outbox sequence number handed out (a JSON number).
pub const OUTBOX_SEQ: &str = "outbox_seq";
/// `meta` key: when `/healthz` last checked that the store can be written (RFC 3339).
pub const HEALTH_PROBE: &str = "health_probe";

/// `enrolments`: Matrix user id → `Enrolment` JSON (people cordon verified, and
/// revocations).
pub const ENROLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrolments");
/// `roster`: (Matrix room id, user id) → `RosterEntry` JSON: who cordon let into each
/// incident room. The guard bans anyone joined or invited without an `invited` entry.
pub const ROSTER: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("roster");
/// `advice`: (incident id, Matrix event id) → `AdviceRecord` JSON: messages flagged as
/// clinical advice, and whether and by whom they were marked transcribed.
pub const ADVICE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("advice");

/// `sweeps`: (incident id, room key) → `SweepRecord` JSON: where the room's retention
/// sweep stands (the token the next sweep re-reads from, counts, the last sweep).
pub const SWEEPS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sweeps");
/// `seal_segments`: (incident id, room key, seq) → `SealSegment` JSON: the pre-seal
/// segments written before redacting (`retention.seal_before_redact`).
pub const SEAL_SEGMENTS: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("seal_segments");
/// `standdown`: incident id → `StandDownRecord` JSON: which step of the stand-down
/// pipeline the incident is at, recorded before the step starts, and what the export
/// found that destruction must delete.
pub const STANDDOWN: TableDefinition<&str, &[u8]> = TableDefinition::new("standdown");
/// `ciphertexts`: `megolm/<sender key>/<session id>/<message index>` →
/// `AcceptedCiphertext` JSON: the megolm messages commands were accepted from (replays
/// of them are refused). Kept for good.
pub const CIPHERTEXTS: TableDefinition<&str, &[u8]> = TableDefinition::new("ciphertexts");
/// `media`: (incident id, `mxc://` address) → `MediaSighting` JSON: every attachment
/// address cordon saw in an incident's messages (in sync or before the retention sweep
/// redacted them), deleted at stand-down. Ids and addresses only, never message text.
pub const MEDIA: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("media");
/// `record`: (incident id, `<kind>/<number:08>`) → `RecordEntry` JSON: the command
/// record's entries (the decision log): numbers, times, people, hashes and the sealed
/// file. Never their text, which is sealed to the records officers.
pub const RECORD: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("record");
/// `pid_nudges`: (incident id, sender) → `PidNudges` JSON: when cordon last nudged a
/// sender about patient identifiers in a message, and how often. Never what was found.
pub const PID_NUDGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("pid_nudges");
