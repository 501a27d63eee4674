use serde_json::json;

use super::*;
use crate::domain::transcript::{Encryption, MediaRef, Redacted, SOURCE_EXPORT};

fn line(id: &str, ts: i64, sender: &str, ty: &str, content: Value) -> TranscriptLine {
    TranscriptLine {
        v: 1,
        source: SOURCE_EXPORT.into(),
        event_id: id.into(),
        room_id: "!r:hs".into(),
        room_key: "command".into(),
        sender: sender.into(),
        origin_server_ts: ts,
        event_type: ty.into(),
        relates_to: content.get("m.relates_to").cloned(),
        content: Some(content),
        encryption: None,
        undecryptable: false,
        state_key: None,
        redacted: None,
        media: None,
        unauthenticated: None,
    }
}

#[test]
fn untrusted_text_cannot_become_links_images_or_html() {
    let e = escape("[click](http://evil) ![x](http://img) <script>&amp; `code` *b*");
    assert!(!e.contains("[click]("), "{e}");
    assert!(!e.contains("!["), "{e}");
    assert!(!e.contains('<') && !e.contains('>'), "{e}");
    assert!(e.contains("&lt;script&gt;&amp;amp;"), "{e}");
    assert!(e.contains("\\[click\\]\\(http://evil\\)"), "{e}");
    assert_eq!(escape("# title"), "\\# title");
    assert_eq!(escape("- item"), "\\- item");
    assert_eq!(escape("12. item"), "12\\. item");
    assert_eq!(escape("BP 90/60, 1.5 units"), "BP 90/60, 1.5 units");
    assert_eq!(escape("    code"), "\u{a0}\u{a0}\u{a0}\u{a0}code");
    assert_eq!(escape("a\nb"), "a b");
}

#[test]
fn a_room_renders_edits_replies_reactions_redactions_members_media_and_failures() {
    let mut lines = vec![
        {
            let mut l = line(
                "$m",
                1_764_650_000_000,
                "@a:hs",
                "m.room.member",
                json!({"membership": "join", "displayname": "Dr A"}),
            );
            l.state_key = Some("@a:hs".into());
            l
        },
        line(
            "$1",
            1_764_650_001_000,
            "@a:hs",
            "m.room.message",
            json!({"msgtype": "m.text", "body": "Bed 4 [x](javascript:y)"}),
        ),
        line(
            "$2",
            1_764_650_002_000,
            "@b:hs",
            "m.room.message",
            json!({"msgtype": "m.text", "body": "> <@a:hs> Bed 4\n\nOn my way",
                       "m.relates_to": {"m.in_reply_to": {"event_id": "$1"}}}),
        ),
        line(
            "$3",
            1_764_650_003_000,
            "@a:hs",
            "m.room.message",
            json!({"msgtype": "m.text", "body": "* Bed 5",
                       "m.new_content": {"msgtype": "m.text", "body": "Bed 5"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": "$1"}}),
        ),
        line(
            "$4",
            1_764_650_004_000,
            "@b:hs",
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$1", "key": "👍"}}),
        ),
        line(
            "$5",
            1_764_650_005_000,
            "@c:hs",
            "m.reaction",
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$1", "key": "👍"}}),
        ),
    ];
    let mut gone = line(
        "$6",
        1_764_650_006_000,
        "@a:hs",
        "m.room.message",
        json!({}),
    );
    gone.redacted = Some(Redacted {
        by: "@mod:hs".into(),
        at_ms: Some(1_764_650_007_000),
        reason: Some("wrong room".into()),
        redaction_event_id: None,
        by_retention: false,
    });
    lines.push(gone.clone());
    gone.event_id = "$7".into();
    gone.redacted.as_mut().unwrap().by_retention = true;
    lines.push(gone);
    let mut u = line(
        "$8",
        1_764_650_008_000,
        "@d:hs",
        "m.room.encrypted",
        json!({}),
    );
    u.content = None;
    u.undecryptable = true;
    u.encryption = Some(Encryption {
        sender_device: None,
        verified: false,
        verification: None,
        session_id: None,
        failure: Some("MissingMegolmSession".into()),
    });
    lines.push(u);
    let mut img = line(
        "$9",
        1_764_650_009_000,
        "@a:hs",
        "m.room.message",
        json!({"msgtype": "m.image", "body": "xray.png"}),
    );
    img.media = Some(MediaRef {
        mxc: "mxc://hs/abc".into(),
        encrypted: true,
        file: Some("media/command-1.png".into()),
        sha256: None,
        size: Some(3),
        mimetype: Some("image/png".into()),
        error: None,
    });
    lines.push(img);
    let mut kick = line(
        "$k",
        1_764_650_010_000,
        "@a:hs",
        "m.room.member",
        json!({"membership": "leave", "reason": "not on rota"}),
    );
    kick.state_key = Some("@x:hs".into());
    lines.push(kick);

    let md = room_body(&lines);
    assert!(md.contains("@a:hs joined as \u{201c}Dr A\u{201d}"), "{md}");
    assert!(md.contains("Bed 4 \\[x\\]\\(javascript:y\\)"), "{md}");
    assert!(!md.contains("](javascript"), "{md}");
    assert!(
        md.contains("\u{21a9} in reply to [the message of 2025-12-02 04:33:21 UTC by @a:hs](#e1)"),
        "{md}"
    );
    assert!(
        md.contains("On my way") && !md.contains("&gt; &lt;@a:hs&gt; Bed 4"),
        "{md}"
    );
    assert!(md.contains("\u{270e} edit of [the message of"), "{md}");
    assert!(
        md.contains("_(edited: [2025-12-02 04:33:23 UTC](#e3))_"),
        "{md}"
    );
    assert!(md.contains("Reactions: 👍 ×2 (@b:hs, @c:hs)"), "{md}");
    // Summarised reactions have no entry of their own.
    assert!(!md.contains("id=\"e4\""), "{md}");
    assert!(
        md.contains("\\[redacted by @mod:hs at 2025-12-02 04:33:27 UTC: wrong room\\]"),
        "{md}"
    );
    assert!(md.contains("\\[removed by retention at"), "{md}");
    assert!(
        md.contains("\u{26a0} could not be decrypted (MissingMegolmSession)"),
        "{md}"
    );
    assert!(
        md.contains("\u{1f4ce} [xray.png](../media/command-1.png) (image/png, 3 bytes)"),
        "{md}"
    );
    assert!(md.contains("@a:hs kicked @x:hs: not on rota"), "{md}");
}

#[test]
fn reply_fallbacks_are_stripped_only_when_well_formed() {
    assert_eq!(
        strip_reply_fallback("> <@a:hs> hi\n> more\n\nreply"),
        "reply"
    );
    assert_eq!(strip_reply_fallback("plain"), "plain");
    assert_eq!(strip_reply_fallback("> only a quote"), "> only a quote");
}
