//! The archive's Markdown: one rendering per room (`rooms/<key>.md`), `index.md`, and
//! the decision log that opening writes (`decision-log.md`, [`decision_log`]).
//!
//! Message bodies, names and reasons are untrusted: [`escape`] turns HTML's `<`, `>`
//! and `&` into entities and backslash-escapes Markdown's inline syntax (links, images,
//! emphasis, code) and the block markers that could start a heading, list, quote or
//! code block, so nothing a sender typed can become a link, an image or markup. The
//! only links in a rendering are the ones cordon writes: to anchors of entries, to
//! `../media/…` and to the rooms' renderings.
//!
//! The sender of an event is whatever the homeserver wrote. An entry whose line is
//! marked `unauthenticated` (plaintext in an encrypted room, an unverified device, a
//! sender who does not own the encryption session) says so before its words, a
//! reaction's sender is marked in the summary, and `index.md` lists every such event,
//! so a message the server injected is never read as a clinician's.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::manifest::{Manifest, is_edit, relation};
use super::record::EntryKind;
use super::{DECISION_LOG_FILE, DECISION_LOG_RENDERING, RECORD_DIR};
use crate::domain::transcript::{SOURCE_PRE_SEAL, TranscriptLine, Unauthenticated};

mod debrief;
mod decisions;

pub(crate) use debrief::debrief as debrief_rendering;
pub(crate) use decisions::{Decision, decision_log, reports_rendering};

/// An undecryptable event, for `index.md`'s list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UndecryptableEvent {
    pub room_key: String,
    pub event_id: String,
    pub sender: String,
    pub origin_server_ts: i64,
    pub reason: Option<String>,
}

impl UndecryptableEvent {
    pub(crate) fn all(lines: &[TranscriptLine]) -> impl Iterator<Item = UndecryptableEvent> + '_ {
        lines
            .iter()
            .filter(|l| l.undecryptable)
            .map(|l| UndecryptableEvent {
                room_key: l.room_key.clone(),
                event_id: l.event_id.clone(),
                sender: l.sender.clone(),
                origin_server_ts: l.origin_server_ts,
                reason: l.encryption.as_ref().and_then(|e| e.failure.clone()),
            })
    }
}

/// An event nothing proves came from its sender, for `index.md`'s list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnauthenticatedEvent {
    pub room_key: String,
    pub event_id: String,
    pub sender: String,
    pub origin_server_ts: i64,
    pub why: Unauthenticated,
}

impl UnauthenticatedEvent {
    pub(crate) fn all(lines: &[TranscriptLine]) -> impl Iterator<Item = UnauthenticatedEvent> + '_ {
        lines.iter().filter_map(|l| {
            Some(UnauthenticatedEvent {
                room_key: l.room_key.clone(),
                event_id: l.event_id.clone(),
                sender: l.sender.clone(),
                origin_server_ts: l.origin_server_ts,
                why: l.unauthenticated?,
            })
        })
    }
}

/// The warning written before an unauthenticated entry's words.
fn warning(sender: &str, why: Unauthenticated) -> String {
    format!(
        "\u{26a0} **Not proven to be from {}** ({}): {}.",
        escape(sender),
        why.as_str(),
        why.explain()
    )
}

/// What a room's rendering says about its room and incident at the top.
pub(crate) struct RoomHeading<'a> {
    pub incident: &'a str,
    pub display_name: &'a str,
    pub room_key: &'a str,
    pub room_id: &'a str,
    pub room_name: &'a str,
    /// Set for the merged rendering that `cordon archive open` writes.
    pub merged: bool,
}

/// The top of a room's rendering.
pub(crate) fn room_heading(h: &RoomHeading<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", escape(h.room_name));
    let _ = writeln!(
        out,
        "Incident {} ({}), room {} ({}).{}\n",
        escape(h.display_name),
        escape(h.incident),
        escape(h.room_key),
        escape(h.room_id),
        if h.merged {
            " This rendering merges the pre-seal segments: messages that retention \
             removed are shown from the copy sealed before their removal, marked \
             \u{201c}restored\u{201d}."
        } else {
            ""
        }
    );
    out.push_str(
        "Times are UTC. Senders are Matrix user ids as the homeserver reported them; an \
         entry marked \u{26a0} **Not proven to be from** is one that nothing ties to that \
         person (sent unencrypted, from an unverified device, or under another sender's \
         encryption session).\n\n---\n\n",
    );
    out
}

/// Every entry of a room's rendering, in the transcript's order.
pub(crate) fn room_body(lines: &[TranscriptLine]) -> String {
    let by_id: HashMap<&str, usize> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| (l.event_id.as_str(), i))
        .rev() // the first line of an id wins
        .collect();
    let target_of = |l: &TranscriptLine| -> Option<usize> {
        let id = relation(l)?.get("event_id")?.as_str()?;
        by_id.get(id).copied()
    };
    // Edits and reactions, by the entry they belong to.
    let mut edits: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut reactions: HashMap<usize, Vec<Reaction>> = HashMap::new();
    let mut summarised = vec![false; lines.len()];
    for (i, l) in lines.iter().enumerate() {
        let Some(t) = target_of(l) else { continue };
        if is_edit(l) {
            edits.entry(t).or_default().push(i);
        } else if l.event_type == "m.reaction" && l.redacted.is_none() {
            let key = relation(l)
                .and_then(|r| r.get("key"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            reactions.entry(t).or_default().push(Reaction {
                key: key.to_owned(),
                sender: l.sender.clone(),
                unauthenticated: l.unauthenticated,
            });
            summarised[i] = true;
        }
    }
    let mut members: HashMap<&str, &str> = HashMap::new();
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        if summarised[i] {
            continue;
        }
        let mut entry: Vec<String> = Vec::new();
        let restored = if l.source == SOURCE_PRE_SEAL {
            " (restored from a pre-seal segment)"
        } else {
            ""
        };
        entry.push(format!(
            "<a id=\"e{i}\"></a>**{}** \u{2014} {}{restored}",
            time_ms(l.origin_server_ts),
            escape(&l.sender)
        ));
        if let Some(why) = l.unauthenticated {
            entry.push(warning(&l.sender, why));
        }
        if let Some(r) = &l.redacted {
            let when = r
                .at_ms
                .map(time_ms)
                .unwrap_or_else(|| "an unknown time".into());
            let reason = r
                .reason
                .as_deref()
                .map(|why| format!(": {}", escape(why)))
                .unwrap_or_default();
            entry.push(if r.by_retention {
                format!("\\[removed by retention at {when}{reason}\\]")
            } else {
                format!("\\[redacted by {} at {when}{reason}\\]", escape(&r.by))
            });
        } else if l.undecryptable {
            let why = l
                .encryption
                .as_ref()
                .and_then(|e| e.failure.as_deref())
                .unwrap_or("no reason given");
            entry.push(format!("\u{26a0} could not be decrypted ({})", escape(why)));
        } else {
            entry.extend(describe(l, lines, &by_id, target_of(l), &mut members));
        }
        if let Some(list) = edits.get(&i) {
            let links: Vec<String> = list
                .iter()
                .map(|&e| format!("[{}](#e{e})", time_ms(lines[e].origin_server_ts)))
                .collect();
            entry.push(format!("_(edited: {})_", links.join(", ")));
        }
        if let Some(list) = reactions.get(&i) {
            entry.push(format!("Reactions: {}", reaction_summary(list)));
        }
        out.push_str(&entry.join("  \n"));
        out.push_str("\n\n");
    }
    if lines.is_empty() {
        out.push_str("_No events._\n");
    }
    out
}

/// The lines that say what a (not redacted, decrypted) event was.
fn describe<'l>(
    l: &'l TranscriptLine,
    lines: &[TranscriptLine],
    by_id: &HashMap<&str, usize>,
    target: Option<usize>,
    members: &mut HashMap<&'l str, &'l str>,
) -> Vec<String> {
    let content = l.content.as_ref();
    let text = |k: &str| content.and_then(|c| c.get(k)).and_then(Value::as_str);
    let target_link = |t: usize| {
        format!(
            "[the message of {} by {}](#e{t})",
            time_ms(lines[t].origin_server_ts),
            escape(&lines[t].sender)
        )
    };
    let mut out = Vec::new();
    match l.event_type.as_str() {
        "m.room.message" | "m.sticker" => {
            if is_edit(l) {
                let new = content.and_then(|c| c.get("m.new_content"));
                let body = new
                    .and_then(|n| n.get("body"))
                    .and_then(Value::as_str)
                    .or_else(|| text("body").map(|b| b.strip_prefix("* ").unwrap_or(b)))
                    .unwrap_or("");
                out.push(match target {
                    Some(t) => format!("\u{270e} edit of {}:", target_link(t)),
                    None => format!(
                        "\u{270e} edit of an earlier message ({}):",
                        escape(
                            relation(l)
                                .and_then(|r| r.get("event_id"))
                                .and_then(Value::as_str)
                                .unwrap_or("unknown")
                        )
                    ),
                });
                out.push(body_text(body));
                return out;
            }
            let reply_to = relation(l)
                .and_then(|r| r.get("m.in_reply_to"))
                .and_then(|r| r.get("event_id"))
                .and_then(Value::as_str);
            if let Some(id) = reply_to {
                out.push(match by_id.get(id).copied() {
                    Some(t) => format!("\u{21a9} in reply to {}", target_link(t)),
                    None => format!("\u{21a9} in reply to an earlier message ({})", escape(id)),
                });
            }
            let mut body = text("body").unwrap_or("");
            if reply_to.is_some() {
                body = strip_reply_fallback(body);
            }
            if let Some(media) = &l.media {
                let name = if body.is_empty() { "attachment" } else { body };
                let detail = [
                    media.mimetype.clone(),
                    media.size.map(|s| format!("{s} bytes")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", escape(&detail))
                };
                out.push(match media.file.as_deref().filter(|f| is_media_member(f)) {
                    Some(file) => format!("\u{1f4ce} [{}](../{file}){detail}", escape(name)),
                    None => format!(
                        "\u{1f4ce} {}{detail}: not in the archive ({})",
                        escape(name),
                        escape(media.error.as_deref().unwrap_or("no file"))
                    ),
                });
            } else if text("msgtype") == Some("m.emote") {
                out.push(format!("\\* {} {}", escape(&l.sender), body_text(body)));
            } else {
                out.push(body_text(body));
            }
        }
        "m.reaction" => {
            let key = relation(l)
                .and_then(|r| r.get("key"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            out.push(format!(
                "reacted {} to an earlier message ({})",
                escape(key),
                escape(
                    relation(l)
                        .and_then(|r| r.get("event_id"))
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                )
            ));
        }
        "m.room.member" => {
            let target = l.state_key.as_deref().unwrap_or(&l.sender);
            let membership = text("membership").unwrap_or("");
            let previous = members.get(target).copied();
            let who = escape(target);
            let by = escape(&l.sender);
            let own = target == l.sender;
            let mut said = match membership {
                "join" if previous == Some("join") => format!("{who} changed their profile"),
                "join" => format!("{who} joined"),
                "invite" => format!("{by} invited {who}"),
                "leave" if own && previous == Some("invite") => {
                    format!("{who} declined the invitation")
                }
                "leave" if own => format!("{who} left"),
                "leave" if previous == Some("ban") => format!("{by} unbanned {who}"),
                "leave" if previous == Some("invite") => {
                    format!("{by} withdrew the invitation of {who}")
                }
                "leave" => format!("{by} kicked {who}"),
                "ban" => format!("{by} banned {who}"),
                "knock" => format!("{who} asked to join"),
                other => format!("{who}: membership {}", escape(other)),
            };
            if membership == "join"
                && let Some(name) = text("displayname")
            {
                let _ = write!(said, " as \u{201c}{}\u{201d}", escape(name));
            }
            if let Some(reason) = text("reason") {
                let _ = write!(said, ": {}", escape(reason));
            }
            members.insert(target, membership);
            out.push(said);
        }
        "m.room.name" => out.push(format!(
            "named the room \u{201c}{}\u{201d}",
            escape(text("name").unwrap_or(""))
        )),
        "m.room.topic" => out.push(format!(
            "set the topic to \u{201c}{}\u{201d}",
            escape(text("topic").unwrap_or(""))
        )),
        "m.room.redaction" => {
            let id = text("redacts").unwrap_or("");
            let reason = text("reason")
                .map(|r| format!(": {}", escape(r)))
                .unwrap_or_default();
            out.push(match by_id.get(id).copied() {
                Some(t) => format!("redacted {}{reason}", target_link(t)),
                None => format!("redacted an earlier event ({}){reason}", escape(id)),
            });
        }
        other if l.state_key.is_some() => out.push(format!(
            "changed the room\u{2019}s {} state{}",
            escape(other),
            l.state_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(|k| format!(" for {}", escape(k)))
                .unwrap_or_default()
        )),
        other => out.push(format!("sent a {} event", escape(other))),
    }
    out
}

/// One reaction, summarised under the entry it reacts to.
struct Reaction {
    key: String,
    sender: String,
    unauthenticated: Option<Unauthenticated>,
}

/// `👍 ×2 (@a:hs, @b:hs), ✅ (@c:hs)`, in order of first use; a reaction nothing proves
/// is marked after its sender (`@c:hs ⚠ unencrypted`).
fn reaction_summary(list: &[Reaction]) -> String {
    let mut keys: Vec<(&str, Vec<String>)> = Vec::new();
    for r in list {
        let who = match r.unauthenticated {
            Some(why) => format!("{} \u{26a0} {}", escape(&r.sender), why.as_str()),
            None => escape(&r.sender),
        };
        match keys.iter_mut().find(|(k, _)| *k == r.key.as_str()) {
            Some((_, senders)) => senders.push(who),
            None => keys.push((r.key.as_str(), vec![who])),
        }
    }
    keys.iter()
        .map(|(key, senders)| {
            let count = if senders.len() > 1 {
                format!(" \u{d7}{}", senders.len())
            } else {
                String::new()
            };
            format!("{}{count} ({})", escape(key), senders.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A reply's body without the quoted fallback (`> <@a:hs> …` lines and the blank line
/// after them).
fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    let mut rest = body;
    while let Some(line_end) = rest.find('\n') {
        if rest.starts_with('>') {
            rest = &rest[line_end + 1..];
        } else {
            break;
        }
    }
    if rest.starts_with('>') {
        return body;
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// A multi-line body as lines of one Markdown paragraph.
fn body_text(body: &str) -> String {
    if body.is_empty() {
        return "_(empty)_".to_owned();
    }
    body.lines()
        .map(|line| {
            let e = escape(line);
            if e.is_empty() { "\u{a0}".to_owned() } else { e }
        })
        .collect::<Vec<_>>()
        .join("  \n")
}

/// Makes untrusted text inert in Markdown and HTML (one line: newlines become spaces).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut at_line_start = true;
    let mut digits_at_start = false;
    for c in text.chars() {
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if at_line_start && (c == ' ' || c == '\t') {
            // Leading spaces would make an indented code block.
            out.push('\u{a0}');
            continue;
        }
        let first = at_line_start;
        at_line_start = false;
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '!' | '#' | '|' | '~' | '{' | '}'
            | '$' => {
                out.push('\\');
                out.push(c);
            }
            // Block markers that only matter first on a line: lists, thematic breaks,
            // setext headings.
            '-' | '+' | '=' if first => {
                out.push('\\');
                out.push(c);
            }
            // `1.` or `1)` first on a line would start an ordered list.
            '.' if digits_at_start => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        digits_at_start = c.is_ascii_digit() && (first || digits_at_start);
    }
    out
}

/// `2025-12-02 10:25:03 UTC` for Unix milliseconds.
pub(crate) fn time_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| time(&t))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// `2025-12-02 10:25:03 UTC`.
pub(crate) fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// True for a member name cordon writes under `media/` (so a link to it is safe).
pub(crate) fn is_media_member(file: &str) -> bool {
    file.strip_prefix("media/").is_some_and(super::is_safe_name)
}

/// `index.md`: the incident, its rooms with their figures, the pre-seal segments, how
/// many decisions were logged, every event nothing proves came from its sender, and
/// every undecryptable event.
pub(crate) fn index(
    m: &Manifest,
    undecryptable: &[UndecryptableEvent],
    unauthenticated: &[UnauthenticatedEvent],
) -> String {
    let mut out = String::new();
    if m.exercise {
        let _ = writeln!(
            out,
            "# EXERCISE archive: {}\n\n**EXERCISE. This was a drill, not a real incident.**\n",
            escape(&m.display_name)
        );
    } else {
        let _ = writeln!(out, "# Incident archive: {}\n", escape(&m.display_name));
    }
    out.push_str("| | |\n|---|---|\n");
    let stood_down = match (&m.stood_down_at, &m.stood_down_by) {
        (Some(at), Some(by)) => format!("{} by {}", time(at), escape(by)),
        (Some(at), None) => time(at),
        (None, _) => "not stood down (expired or closed otherwise)".into(),
    };
    let rows = [
        (
            "Incident",
            if m.exercise {
                format!("{} (EXERCISE)", escape(&m.incident))
            } else {
                escape(&m.incident)
            },
        ),
        ("Playbook", escape(&m.playbook)),
        ("Commander", escape(&m.commander)),
        ("Declared", time(&m.declared_at)),
        ("Expires", time(&m.expires_at)),
        ("Stood down", stood_down),
        ("Sealed", time(&m.sealed_at)),
        ("Server", escape(&m.server_name)),
        ("Sealed by", format!("cordon {}", escape(&m.cordon_version))),
        ("Signing key", escape(&m.signing_key)),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push_str("\n## Rooms\n\n");
    out.push_str(
        "| Room | Key | Events | Messages | Edits | Reactions | State | Redacted | \
         Removed by retention | Undecryptable | Not authenticated | Media | Media missing |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &m.rooms {
        let c = &r.counts;
        let _ = writeln!(
            out,
            "| [{}](rooms/{}.md) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            escape(&r.name),
            r.key,
            escape(&r.key),
            c.events,
            c.messages,
            c.edits,
            c.reactions,
            c.state,
            c.redacted,
            c.retention_removed,
            c.undecryptable,
            c.unauthenticated(),
            c.media,
            c.media_missing
        );
    }
    if m.rooms.is_empty() {
        out.push_str("\n_No rooms._\n");
    }
    out.push_str("\n## Pre-seal segments\n\n");
    if m.pre_seal.is_empty() {
        out.push_str("None: retention sealed nothing before removing it.\n");
    } else {
        let _ = writeln!(
            out,
            "{} segment(s), copied as retention wrote them (still encrypted to the records \
             officers). `cordon archive open` decrypts them and writes each room's \
             `rooms/<key>.merged.md`, with the messages retention removed put back.\n",
            m.pre_seal.len()
        );
        for p in &m.pre_seal {
            let _ = writeln!(
                out,
                "- {} (room {}): {} line(s)",
                escape(&p.file),
                escape(&p.room_key),
                p.lines
            );
        }
    }
    out.push_str("\n## Decision log\n\n");
    let decisions = m
        .record
        .iter()
        .filter(|r| r.kind == EntryKind::Decision)
        .count();
    if decisions == 0 {
        out.push_str("No decisions were logged.\n");
    } else {
        let _ = writeln!(
            out,
            "{decisions} decision{} logged, each sealed to the records officers when it was \
             made and copied here as sealed (`{RECORD_DIR}/`). Their text is in \
             `{DECISION_LOG_RENDERING}` (and `{DECISION_LOG_FILE}`) when the archive is \
             opened with a records officer\u{2019}s key (`cordon archive open`).",
            if decisions == 1 { " was" } else { "s were" }
        );
    }
    let _ = writeln!(
        out,
        "\n## Audit\n\n{} entr{} of cordon's audit log in {}.",
        m.audit.entries,
        if m.audit.entries == 1 { "y" } else { "ies" },
        escape(&m.audit.file)
    );
    out.push_str("\n## Events not proven to come from their sender\n\n");
    if unauthenticated.is_empty() {
        out.push_str(
            "None: every event that could be encrypted was, and came from a device cordon \
             had verified.\n",
        );
    } else {
        out.push_str(
            "The homeserver names each event's sender. Nothing ties these to the person \
             named: do not attribute them without checking with that person.\n\n",
        );
        for u in unauthenticated {
            let _ = writeln!(
                out,
                "- room {}, {}, from {}, event {}: {} ({})",
                escape(&u.room_key),
                time_ms(u.origin_server_ts),
                escape(&u.sender),
                escape(&u.event_id),
                u.why.explain(),
                u.why.as_str()
            );
        }
    }
    out.push_str("\n## Undecryptable events\n\n");
    if undecryptable.is_empty() {
        out.push_str("None: cordon could decrypt every event.\n");
    } else {
        for u in undecryptable {
            let _ = writeln!(
                out,
                "- room {}, {}, from {}, event {}: {}",
                escape(&u.room_key),
                time_ms(u.origin_server_ts),
                escape(&u.sender),
                escape(&u.event_id),
                escape(u.reason.as_deref().unwrap_or("no reason given"))
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
