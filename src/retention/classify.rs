//! Pure rules: which events of a page of history a sweep redacts, where it stops, and
//! when the next sweep is due.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

/// The fields of a timeline event the sweep looks at. Content is parsed only to tell
/// whether it is empty (a redacted event keeps none).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventHead {
    /// The event id.
    pub event_id: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Present on state events (any value, even an empty string).
    #[serde(default, deserialize_with = "present")]
    pub state_key: bool,
    /// When the server received it, Unix milliseconds.
    pub origin_server_ts: Option<i64>,
    /// The sender.
    pub sender: Option<String>,
    /// Server-side data about the event.
    #[serde(default)]
    pub unsigned: Unsigned,
    /// Number of content fields, `None` when there is no content object.
    #[serde(default, rename = "content", deserialize_with = "field_count")]
    pub content_fields: Option<usize>,
}

/// The part of `unsigned` the sweep reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Unsigned {
    /// Present when the event has been redacted.
    #[serde(default, deserialize_with = "present")]
    pub redacted_because: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    // Only called when the field is there; `null` counts as absent.
    let v = Option::<IgnoredAny>::deserialize(d)?;
    Ok(v.is_some())
}

fn field_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v = Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?;
    Ok(v.map(|m| m.len()))
}

impl EventHead {
    /// Reads the fields from an event's JSON. An event that does not parse is malformed.
    pub fn parse(json: &str) -> EventHead {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// What the sweep does with one event, whatever its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// A state event: never redacted.
    State,
    /// A redaction: never redacted itself.
    Redaction,
    /// Already redacted (`unsigned.redacted_because`, or no content left): skipped.
    AlreadyRedacted,
    /// A message-like event (`m.room.message`, `m.room.encrypted`, `m.reaction`,
    /// `m.sticker`, any other non-state type): redacted once due.
    Redactable,
    /// No event id, type or timestamp: skipped, since it cannot be redacted or dated.
    Malformed,
}

/// The event type of redactions.
pub const REDACTION_TYPE: &str = "m.room.redaction";

/// Classifies one event.
pub fn classify(head: &EventHead) -> EventClass {
    let (Some(_), Some(kind), Some(_)) = (&head.event_id, &head.event_type, head.origin_server_ts)
    else {
        return EventClass::Malformed;
    };
    if head.state_key {
        EventClass::State
    } else if kind == REDACTION_TYPE {
        EventClass::Redaction
    } else if head.unsigned.redacted_because || head.content_fields.is_none_or(|n| n == 0) {
        EventClass::AlreadyRedacted
    } else {
        EventClass::Redactable
    }
}

/// What one page of history holds for a sweep with a given cutoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageScan {
    /// Indices of the due, redactable events before the stop, in page order.
    pub due: Vec<usize>,
    /// Due events found already redacted.
    pub already_redacted: u64,
    /// Due events skipped for good (state, redactions, malformed).
    pub skipped: u64,
    /// Index of the first event newer than the cutoff: the sweep stops there, and the
    /// next sweep re-reads from it.
    pub stop: Option<usize>,
    /// After the stop, what the rest of the page says about the next due time.
    pub pending: Pending,
}

/// What is known about the first message that is not yet due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pending {
    /// The sweep reached the end of the room: nothing is left.
    #[default]
    Nothing,
    /// The first redactable event at or after the stop was sent at this time (Unix ms).
    Message(i64),
    /// The page ended before a redactable event after the stop: only the stop event's
    /// time (Unix ms) is known, and the first message is no older than it in stream
    /// order, so `stop + window` is a safe (early) bound.
    AtLeast(i64),
}

/// Scans a page: the due events to redact up to the first event newer than `cutoff_ms`
/// (Unix ms, inclusive: an event at the cutoff is due), and what follows it.
pub fn scan_page(heads: &[EventHead], cutoff_ms: i64) -> PageScan {
    let mut scan = PageScan::default();
    for (i, head) in heads.iter().enumerate() {
        let class = classify(head);
        let ts = head.origin_server_ts;
        if let Some(ts) = ts.filter(|&ts| ts > cutoff_ms) {
            scan.stop = Some(i);
            scan.pending = heads[i..]
                .iter()
                .find(|h| classify(h) == EventClass::Redactable)
                .and_then(|h| h.origin_server_ts)
                .map_or(Pending::AtLeast(ts), Pending::Message);
            return scan;
        }
        match class {
            EventClass::Redactable => scan.due.push(i),
            EventClass::AlreadyRedacted => scan.already_redacted += 1,
            EventClass::State | EventClass::Redaction | EventClass::Malformed => scan.skipped += 1,
        }
    }
    scan
}

/// The soonest the next sweep of a room is asked to run after this one: a room where
/// messages arrive every millisecond would otherwise be swept back to back. It bounds
/// how long past its window a message can stay (plus the sweep's own run time).
pub const MIN_RESWEEP: Duration = Duration::from_secs(1);

/// When the next sweep must run, given what the sweep found after its stop.
///
/// - A message not yet due becomes due `window` after it was sent.
/// - With nothing left, a message sent from now on is due `window` from now, so the
///   next sweep is due at `now + window` (not `cutoff + window`, which is now itself).
///
/// Never earlier than `now + min_resweep`.
pub fn next_due(
    pending: Pending,
    now: DateTime<Utc>,
    window: Duration,
    min_resweep: Duration,
) -> DateTime<Utc> {
    let window = delta(window);
    let due = match pending {
        Pending::Nothing => now + window,
        Pending::Message(ms) | Pending::AtLeast(ms) => from_ms(ms) + window,
    };
    due.max(now + delta(min_resweep))
}

/// A Unix-ms timestamp as a time (saturating at the representable range).
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The prefix of every retention redaction's transaction id.
pub const TXN_PREFIX: &str = "cordon-ret-";

/// The transaction id of the retention redaction of `event_id`: derived from the event
/// id alone, so a retried redaction (after a timeout, a 429, a restart) reuses it and
/// the homeserver deduplicates it, without a store write per event.
pub fn redaction_txn_id(event_id: &str) -> String {
    let digest = Sha256::digest(event_id.as_bytes());
    let hex = hex::encode(digest);
    format!("{TXN_PREFIX}{}", &hex[..24])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn ev(v: serde_json::Value) -> EventHead {
        EventHead::parse(&v.to_string())
    }

    fn msg(id: &str, ts: i64) -> EventHead {
        ev(json!({
            "event_id": id, "type": "m.room.message", "sender": "@a:hs",
            "origin_server_ts": ts, "content": { "msgtype": "m.text", "body": "x" },
        }))
    }

    #[test]
    fn message_like_events_are_redactable() {
        for kind in [
            "m.room.message",
            "m.room.encrypted",
            "m.reaction",
            "m.sticker",
            "org.example.custom",
        ] {
            let head = ev(json!({
                "event_id": "$e", "type": kind, "origin_server_ts": 1,
                "content": { "k": 1 },
            }));
            assert_eq!(classify(&head), EventClass::Redactable, "{kind}");
        }
    }

    #[test]
    fn state_events_are_never_redactable_even_with_an_empty_key() {
        let head = ev(json!({
            "event_id": "$e", "type": "m.room.topic", "state_key": "",
            "origin_server_ts": 1, "content": { "topic": "t" },
        }));
        assert_eq!(classify(&head), EventClass::State);
        // Encrypted state (MSC3414) is state too.
        let head = ev(json!({
            "event_id": "$e", "type": "m.room.encrypted", "state_key": "x",
            "origin_server_ts": 1, "content": { "ciphertext": "…" },
        }));
        assert_eq!(classify(&head), EventClass::State);
    }

    #[test]
    fn redactions_and_redacted_events_are_skipped() {
        let redaction = ev(json!({
            "event_id": "$r", "type": "m.room.redaction", "origin_server_ts": 1,
            "redacts": "$e", "content": { "redacts": "$e", "reason": "retention: 12h" },
        }));
        assert_eq!(classify(&redaction), EventClass::Redaction);
        let because = ev(json!({
            "event_id": "$e", "type": "m.room.message", "origin_server_ts": 1,
            "content": {}, "unsigned": { "redacted_because": { "type": "m.room.redaction" } },
        }));
        assert_eq!(classify(&because), EventClass::AlreadyRedacted);
        let emptied = ev(json!({
            "event_id": "$e", "type": "m.room.encrypted", "origin_server_ts": 1, "content": {},
        }));
        assert_eq!(classify(&emptied), EventClass::AlreadyRedacted);
        let no_content = ev(json!({
            "event_id": "$e", "type": "m.reaction", "origin_server_ts": 1,
        }));
        assert_eq!(classify(&no_content), EventClass::AlreadyRedacted);
    }

    #[test]
    fn events_without_id_type_or_time_are_malformed() {
        assert_eq!(
            classify(&EventHead::parse("not json")),
            EventClass::Malformed
        );
        let head =
            ev(json!({ "type": "m.room.message", "origin_server_ts": 1, "content": {"a": 1} }));
        assert_eq!(classify(&head), EventClass::Malformed);
        let head = ev(json!({ "event_id": "$e", "type": "m.room.message", "content": {"a": 1} }));
        assert_eq!(classify(&head), EventClass::Malformed);
    }

    #[test]
    fn a_page_is_redacted_up_to_the_first_event_newer_than_the_cutoff() {
        let state = ev(json!({
            "event_id": "$s", "type": "m.room.name", "state_key": "",
            "origin_server_ts": 15, "content": { "name": "n" },
        }));
        let redacted = ev(json!({
            "event_id": "$x", "type": "m.room.message", "origin_server_ts": 16,
            "content": {}, "unsigned": { "redacted_because": {} },
        }));
        let page = vec![
            msg("$a", 10),
            state,
            redacted,
            msg("$b", 20), // at the cutoff: due
            ev(
                json!({ "event_id": "$t", "type": "m.room.topic", "state_key": "", "origin_server_ts": 21, "content": {"topic": "t"} }),
            ),
            msg("$c", 25),
            msg("$d", 19), // older but after the stop: the next sweep gets it
        ];
        let scan = scan_page(&page, 20);
        assert_eq!(scan.due, vec![0, 3]);
        assert_eq!(scan.already_redacted, 1);
        assert_eq!(scan.skipped, 1);
        assert_eq!(scan.stop, Some(4));
        assert_eq!(scan.pending, Pending::Message(25));
    }

    #[test]
    fn a_page_without_a_newer_event_is_all_due() {
        let page = vec![msg("$a", 1), msg("$b", 2)];
        let scan = scan_page(&page, 2);
        assert_eq!(scan.due, vec![0, 1]);
        assert_eq!(scan.stop, None);
        assert_eq!(scan.pending, Pending::Nothing);
        assert_eq!(scan_page(&[], 2), PageScan::default());
    }

    #[test]
    fn a_stop_on_a_state_event_with_no_message_after_it_bounds_the_next_sweep() {
        let page = vec![ev(json!({
            "event_id": "$t", "type": "m.room.topic", "state_key": "",
            "origin_server_ts": 30, "content": {"topic": "t"},
        }))];
        let scan = scan_page(&page, 20);
        assert_eq!(scan.stop, Some(0));
        assert_eq!(scan.pending, Pending::AtLeast(30));
    }

    #[test]
    fn next_due_is_the_first_pending_message_plus_the_window() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap();
        let window = Duration::from_secs(12 * 3600);
        let sent = now - TimeDelta::hours(2);
        let got = next_due(
            Pending::Message(sent.timestamp_millis()),
            now,
            window,
            MIN_RESWEEP,
        );
        assert_eq!(got, now + TimeDelta::hours(10));
        let got = next_due(
            Pending::AtLeast(sent.timestamp_millis()),
            now,
            window,
            MIN_RESWEEP,
        );
        assert_eq!(got, now + TimeDelta::hours(10));
    }

    #[test]
    fn with_nothing_left_the_next_sweep_is_a_window_from_now_not_now() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap();
        let window = Duration::from_secs(12 * 3600);
        let cutoff = now - delta(window);
        let got = next_due(Pending::Nothing, now, window, MIN_RESWEEP);
        assert_eq!(got, now + TimeDelta::hours(12));
        assert!(
            got > cutoff + delta(window),
            "cutoff + window is now: a hot loop"
        );
    }

    #[test]
    fn next_due_is_never_sooner_than_the_minimum_resweep() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().unwrap();
        let window = Duration::from_secs(60);
        // Sent a millisecond after the cutoff: due a millisecond from now.
        let sent = now - TimeDelta::seconds(60) + TimeDelta::milliseconds(1);
        let got = next_due(
            Pending::Message(sent.timestamp_millis()),
            now,
            window,
            MIN_RESWEEP,
        );
        assert_eq!(got, now + delta(MIN_RESWEEP));
        // Out-of-order timestamps: a "pending" message older than the cutoff.
        let got = next_due(Pending::Message(0), now, window, MIN_RESWEEP);
        assert_eq!(got, now + delta(MIN_RESWEEP));
    }

    #[test]
    fn txn_ids_are_deterministic_distinct_and_short() {
        let a = redaction_txn_id("$abc:hs");
        assert_eq!(a, redaction_txn_id("$abc:hs"));
        assert_ne!(a, redaction_txn_id("$abd:hs"));
        assert!(a.starts_with(TXN_PREFIX));
        assert_eq!(a.len(), TXN_PREFIX.len() + 24);
        assert!(a[TXN_PREFIX.len()..].chars().all(|c| c.is_ascii_hexdigit()));
        // sha256("$abc:hs"), first 24 hex digits, pinned: a redaction retried across an
        // upgrade must keep its transaction id.
        assert_eq!(a, "cordon-ret-a7eb9184d5ffad9c8abb3e30");
    }
}
