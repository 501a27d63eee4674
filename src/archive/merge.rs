//! Putting the pre-seal segments back into a room's transcript.
//!
//! Retention redacts messages during the incident; with `seal_before_redact` it first
//! writes them to pre-seal segments, which only the records officers can decrypt. The
//! export at stand-down sees those messages as redacted (`redacted.by_retention`). The
//! merged transcript replaces each such line by the sealed line of the same event id,
//! keeping the first sealed line of each id (segments can overlap after a resumed
//! sweep, and overlapping lines are the same event). Sealed events the export does not
//! have at all (for instance because the homeserver purged them) are appended at the
//! end, in timestamp order.

use std::collections::{HashMap, HashSet};

use crate::domain::transcript::TranscriptLine;

/// The room's transcript with retention-removed lines restored from `pre_seal` (every
/// segment's lines, in segment order).
pub fn merge(export: &[TranscriptLine], pre_seal: &[TranscriptLine]) -> Vec<TranscriptLine> {
    let mut sealed: HashMap<&str, &TranscriptLine> = HashMap::new();
    let mut first_seen: Vec<&TranscriptLine> = Vec::new();
    for line in pre_seal {
        if !sealed.contains_key(line.event_id.as_str()) {
            sealed.insert(&line.event_id, line);
            first_seen.push(line);
        }
    }
    let exported: HashSet<&str> = export.iter().map(|l| l.event_id.as_str()).collect();
    let mut out: Vec<TranscriptLine> = export
        .iter()
        .map(|line| {
            let removed = line.redacted.as_ref().is_some_and(|r| r.by_retention);
            match sealed.get(line.event_id.as_str()) {
                Some(restored) if removed => (*restored).clone(),
                _ => line.clone(),
            }
        })
        .collect();
    let mut absent: Vec<&TranscriptLine> = first_seen
        .into_iter()
        .filter(|l| !exported.contains(l.event_id.as_str()))
        .collect();
    absent.sort_by_key(|l| l.origin_server_ts);
    out.extend(absent.into_iter().cloned());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::transcript::{Redacted, SOURCE_EXPORT, SOURCE_PRE_SEAL};

    fn line(id: &str, ts: i64, source: &str, body: Option<&str>) -> TranscriptLine {
        TranscriptLine {
            v: 1,
            source: source.into(),
            event_id: id.into(),
            room_id: "!r".into(),
            room_key: "command".into(),
            sender: "@a:hs".into(),
            origin_server_ts: ts,
            event_type: "m.room.message".into(),
            content: body.map(|b| json!({ "msgtype": "m.text", "body": b })),
            relates_to: None,
            encryption: None,
            undecryptable: false,
            state_key: None,
            redacted: None,
            media: None,
            unauthenticated: None,
        }
    }

    fn removed(id: &str, ts: i64, by_retention: bool) -> TranscriptLine {
        let mut l = line(id, ts, SOURCE_EXPORT, None);
        l.redacted = Some(Redacted {
            by: "@cordon:hs".into(),
            at_ms: Some(ts + 1),
            reason: None,
            redaction_event_id: None,
            by_retention,
        });
        l
    }

    #[test]
    fn retention_removed_lines_are_restored_first_sealed_line_wins() {
        let export = vec![
            removed("$1", 1, true),
            line("$2", 2, SOURCE_EXPORT, Some("kept")),
            removed("$3", 3, false),
        ];
        let pre = vec![
            line("$1", 1, SOURCE_PRE_SEAL, Some("first")),
            // A resumed sweep sealed $1 again: the first line wins.
            line("$1", 1, SOURCE_PRE_SEAL, Some("second")),
            // Redacted by a moderator, not retention: the export's marker stays.
            line("$3", 3, SOURCE_PRE_SEAL, Some("sealed")),
            // Not in the export at all: appended, by time.
            line("$9", 9, SOURCE_PRE_SEAL, Some("late")),
            line("$0", 0, SOURCE_PRE_SEAL, Some("early")),
            line("$9", 9, SOURCE_PRE_SEAL, Some("dup")),
        ];
        let merged = merge(&export, &pre);
        let ids: Vec<&str> = merged.iter().map(|l| l.event_id.as_str()).collect();
        assert_eq!(ids, ["$1", "$2", "$3", "$0", "$9"]);
        assert_eq!(merged[0].content.as_ref().unwrap()["body"], "first");
        assert_eq!(merged[0].source, SOURCE_PRE_SEAL);
        assert!(merged[2].redacted.is_some());
        assert_eq!(merged[4].content.as_ref().unwrap()["body"], "late");
    }
}
