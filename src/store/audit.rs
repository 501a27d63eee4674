//! The append-only, hash-chained audit log.
//!
//! Entry `n` (from 1, contiguous) is stored at key `n` of the `audit` table. Its `hash` is
//! the SHA-256 (hex) of its [canonical bytes](AuditEntry::canonical_bytes), which include
//! `prev`, the hash of entry `n - 1` ([`GENESIS`] for entry 1). The `meta` table keeps the
//! head (last seq and hash), written in the same transaction as the entry, so removing
//! entries from the end is detected too.
//!
//! The chain has no secret key: someone who rewrites every later entry and the head
//! consistently is not detected from the file alone. Copies held elsewhere (the sealed
//! archives, the state events mirrored into incident rooms) anchor it.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use redb::{ReadableTable, Table};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::tables::AUDIT_HEAD;
use crate::domain::incident::IncidentId;

/// The `prev` of the first entry: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The domain tag that starts every entry's canonical bytes.
const DOMAIN: &[u8] = b"cordon-audit-v1\n";

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, contiguous.
    pub seq: u64,
    /// When it happened (supplied by the caller's clock).
    pub at: DateTime<Utc>,
    /// Who did it: a Matrix user id, or `cordon`.
    pub actor: String,
    /// What was done, dotted (`incident.declared`, `command.refused`).
    pub action: String,
    /// The incident concerned, if any.
    pub incident: Option<IncidentId>,
    /// Details as canonical JSON text (object keys sorted, no whitespace); the hash
    /// covers these exact bytes. See [`Self::details_value`].
    pub details: String,
    /// The previous entry's hash (hex), or [`GENESIS`].
    pub prev: String,
    /// SHA-256 (hex) of [`Self::canonical_bytes`].
    pub hash: String,
}

impl AuditEntry {
    /// The bytes the hash covers: the tag `cordon-audit-v1\n`, then `seq` as 8 big-endian
    /// bytes, then each of `prev`, `at` (RFC 3339, nanoseconds, `Z`), `actor`, `action`,
    /// `incident` (empty when absent, after a presence byte 0 or 1) and `details` as an
    /// 8-byte big-endian length followed by its UTF-8 bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + 128 + self.details.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&self.seq.to_be_bytes());
        field(&mut out, &self.prev);
        field(
            &mut out,
            &self.at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        );
        field(&mut out, &self.actor);
        field(&mut out, &self.action);
        match &self.incident {
            Some(id) => {
                out.push(1);
                field(&mut out, id.as_str());
            }
            None => {
                out.push(0);
                field(&mut out, "");
            }
        }
        field(&mut out, &self.details);
        out
    }

    /// The SHA-256 (hex) of the canonical bytes, as it should be stored in `hash`.
    pub fn compute_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_bytes()))
    }

    /// The details parsed as JSON (`null` if the text does not parse).
    pub fn details_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.details).unwrap_or(serde_json::Value::Null)
    }
}

fn field(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes `v` as canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace,
/// strings escaped minimally. Independent of serde_json's `preserve_order` feature.
pub fn canonical_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                if let Some(value) = map.get(key) {
                    write_canonical(value, out);
                }
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The head of the log as kept in `meta`: the last entry's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The last entry's seq.
    pub seq: u64,
    /// The last entry's hash.
    pub hash: String,
}

/// The pieces of a new entry; the store assigns `seq`, `prev` and `hash`.
pub(crate) struct NewEntry<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub incident: Option<&'a IncidentId>,
    pub details: &'a serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Reads the head from `meta`. `Ok(None)` when absent.
fn read_head(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<AuditHead>, StoreError> {
    match meta.get(AUDIT_HEAD)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|source| StoreError::BadRecord {
                table: "meta",
                key: AUDIT_HEAD.to_owned(),
                source,
            }),
    }
}

/// Appends an entry inside the caller's write transaction and moves the head.
pub(crate) fn append(
    meta: &mut Table<&'static str, &'static [u8]>,
    audit: &mut Table<u64, &'static [u8]>,
    new: NewEntry<'_>,
) -> Result<AuditEntry, StoreError> {
    let head = match read_head(meta)? {
        Some(head) => head,
        None if audit.last()?.is_some() => return Err(StoreError::AuditHeadMissing),
        None => AuditHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        },
    };
    let mut entry = AuditEntry {
        seq: head.seq + 1,
        at: new.at,
        actor: new.actor.to_owned(),
        action: new.action.to_owned(),
        incident: new.incident.cloned(),
        details: canonical_json(new.details),
        prev: head.hash,
        hash: String::new(),
    };
    entry.hash = entry.compute_hash();
    let bytes = encode(&entry)?;
    audit.insert(entry.seq, bytes.as_slice())?;
    let head = encode(&AuditHead {
        seq: entry.seq,
        hash: entry.hash.clone(),
    })?;
    meta.insert(AUDIT_HEAD, head.as_slice())?;
    Ok(entry)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode {
        what: "audit",
        source,
    })
}

/// One break in the chain, located by sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditProblem {
    /// The stored bytes at `seq` do not decode as an entry.
    Unreadable {
        /// The key.
        seq: u64,
        /// The decoding error.
        detail: String,
    },
    /// The entry stored at `seq` says it is entry `claimed`: moved or swapped.
    Misplaced {
        /// The key it is stored under.
        seq: u64,
        /// The seq written inside it.
        claimed: u64,
    },
    /// Entries `first..=last` are missing from the middle of the log.
    Missing {
        /// The first missing seq.
        first: u64,
        /// The last missing seq.
        last: u64,
    },
    /// A key outside the sequence (0).
    Unexpected {
        /// The key.
        seq: u64,
    },
    /// The entry's contents do not match its hash: it was modified.
    Modified {
        /// The entry.
        seq: u64,
    },
    /// The entry's `prev` is not the previous entry's hash: something before it was
    /// replaced, or it was inserted or reordered.
    BrokenLink {
        /// The entry.
        seq: u64,
    },
    /// The log has entries but the head record is missing.
    HeadMissing {
        /// The last seq present.
        last_seq: u64,
    },
    /// The head record does not decode.
    HeadUnreadable {
        /// The decoding error.
        detail: String,
    },
    /// The head names a later entry than the last one present: entries were removed
    /// from the end (or the head was altered).
    TailMissing {
        /// The head's seq.
        head_seq: u64,
        /// The last seq present (0 when the log is empty).
        last_seq: u64,
    },
    /// Entries exist after the head's seq: added outside cordon.
    BeyondHead {
        /// The head's seq.
        head_seq: u64,
        /// The last seq present.
        last_seq: u64,
    },
    /// The head's hash is not the hash of the entry it names.
    HeadHashMismatch {
        /// The head's seq.
        seq: u64,
    },
}

impl AuditProblem {
    /// The sequence number the problem is reported at.
    pub fn seq(&self) -> u64 {
        match self {
            AuditProblem::Unreadable { seq, .. }
            | AuditProblem::Misplaced { seq, .. }
            | AuditProblem::Unexpected { seq }
            | AuditProblem::Modified { seq }
            | AuditProblem::BrokenLink { seq }
            | AuditProblem::HeadHashMismatch { seq } => *seq,
            AuditProblem::Missing { first, .. } => *first,
            AuditProblem::HeadMissing { last_seq } => *last_seq,
            AuditProblem::HeadUnreadable { .. } => 0,
            AuditProblem::TailMissing { head_seq, .. } => *head_seq,
            AuditProblem::BeyondHead { head_seq, .. } => head_seq + 1,
        }
    }
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditProblem::Unreadable { seq, detail } => {
                write!(f, "seq {seq}: entry unreadable ({detail})")
            }
            AuditProblem::Misplaced { seq, claimed } => write!(
                f,
                "seq {seq}: entry misplaced: it says it is seq {claimed} (entries moved or swapped)"
            ),
            AuditProblem::Missing { first, last } if first == last => {
                write!(f, "seq {first}: entry removed")
            }
            AuditProblem::Missing { first, last } => {
                write!(f, "seq {first}: entries {first} to {last} removed")
            }
            AuditProblem::Unexpected { seq } => {
                write!(f, "seq {seq}: entry inserted outside the sequence")
            }
            AuditProblem::Modified { seq } => write!(
                f,
                "seq {seq}: entry modified: its contents do not match its hash"
            ),
            AuditProblem::BrokenLink { seq } => write!(
                f,
                "seq {seq}: chain broken: its prev is not the hash of entry {} (an entry was \
                 replaced, inserted or reordered)",
                seq.saturating_sub(1)
            ),
            AuditProblem::HeadMissing { last_seq } => {
                write!(f, "seq {last_seq}: head record missing from the meta table")
            }
            AuditProblem::HeadUnreadable { detail } => {
                write!(f, "seq 0: head record unreadable ({detail})")
            }
            AuditProblem::TailMissing { head_seq, last_seq } => write!(
                f,
                "seq {head_seq}: the head records seq {head_seq} but the last entry is seq \
                 {last_seq}: entries removed from the end (truncated) or head altered"
            ),
            AuditProblem::BeyondHead { head_seq, last_seq } => write!(
                f,
                "seq {}: entries {} to {last_seq} lie beyond the head (seq {head_seq}): added \
                 outside cordon",
                head_seq + 1,
                head_seq + 1
            ),
            AuditProblem::HeadHashMismatch { seq } => {
                write!(f, "seq {seq}: the head's hash does not match entry {seq}")
            }
        }
    }
}

/// The outcome of walking the audit chain (`cordon audit verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// How many entries are stored.
    pub entries: u64,
    /// The head as recorded in `meta`, if readable.
    pub head: Option<AuditHead>,
    /// Every break found, in the order found.
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    /// True when the chain is intact: no problem found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_intact() {
            "intact"
        } else {
            "NOT intact"
        };
        let plural = if self.entries == 1 {
            "entry"
        } else {
            "entries"
        };
        write!(f, "audit log {verdict}: {} {plural}", self.entries)?;
        match &self.head {
            Some(head) => write!(f, ", head seq {} sha256 {}", head.seq, head.hash)?,
            None => write!(f, ", no head")?,
        }
        if self.is_intact() {
            return Ok(());
        }
        let n = self.problems.len();
        write!(f, "; {n} problem{}:", if n == 1 { "" } else { "s" })?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        write!(
            f,
            "\nThe store was altered outside cordon. Keep the file as evidence (do not delete \
             it) and compare it with your backups."
        )
    }
}

/// Walks the whole chain and reports every break.
pub(crate) fn verify(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    audit: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<AuditReport, StoreError> {
    let mut problems = Vec::new();
    let mut entries = 0u64;
    let mut expected_seq = 1u64;
    // The hash the next entry's `prev` must equal; `None` when unknowable (after an
    // unreadable entry or a gap, which are already reported).
    let mut expected_prev: Option<String> = Some(GENESIS.to_owned());
    let mut last: Option<(u64, String)> = None;
    for item in audit.iter()? {
        let (key, value) = item?;
        let seq = key.value();
        entries += 1;
        if seq < expected_seq {
            problems.push(AuditProblem::Unexpected { seq });
            continue;
        }
        if seq > expected_seq {
            problems.push(AuditProblem::Missing {
                first: expected_seq,
                last: seq - 1,
            });
            expected_prev = None;
        }
        expected_seq = seq + 1;
        let entry: AuditEntry = match serde_json::from_slice(value.value()) {
            Ok(entry) => entry,
            Err(e) => {
                problems.push(AuditProblem::Unreadable {
                    seq,
                    detail: e.to_string(),
                });
                expected_prev = None;
                last = Some((seq, String::new()));
                continue;
            }
        };
        if entry.seq != seq {
            problems.push(AuditProblem::Misplaced {
                seq,
                claimed: entry.seq,
            });
        }
        if entry.compute_hash() != entry.hash {
            problems.push(AuditProblem::Modified { seq });
        }
        if let Some(prev) = &expected_prev
            && *prev != entry.prev
        {
            problems.push(AuditProblem::BrokenLink { seq });
        }
        expected_prev = Some(entry.hash.clone());
        last = Some((seq, entry.hash));
    }

    let head = match read_head(meta) {
        Ok(head) => head,
        Err(StoreError::BadRecord { source, .. }) => {
            problems.push(AuditProblem::HeadUnreadable {
                detail: source.to_string(),
            });
            return Ok(AuditReport {
                entries,
                head: None,
                problems,
            });
        }
        Err(e) => return Err(e),
    };
    let last_seq = last.as_ref().map_or(0, |(seq, _)| *seq);
    match &head {
        None if last_seq > 0 => problems.push(AuditProblem::HeadMissing { last_seq }),
        None => {}
        Some(head) if head.seq > last_seq => problems.push(AuditProblem::TailMissing {
            head_seq: head.seq,
            last_seq,
        }),
        Some(head) if head.seq < last_seq => problems.push(AuditProblem::BeyondHead {
            head_seq: head.seq,
            last_seq,
        }),
        Some(head) if last.as_ref().is_some_and(|(_, hash)| *hash != head.hash) => {
            problems.push(AuditProblem::HeadHashMismatch { seq: head.seq });
        }
        Some(_) => {}
    }
    Ok(AuditReport {
        entries,
        head,
        problems,
    })
}
