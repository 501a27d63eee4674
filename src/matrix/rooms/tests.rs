use super::*;

#[test]
fn every_room_cordon_creates_is_version_12_whatever_the_server_default() {
    let plan = RoomPlan {
        key: "command".into(),
        position: 0,
        name: "Drill - Command".into(),
        topic: "NOT the medical record".into(),
        creation_content: json!({ "m.federate": false }),
        initial_state: Vec::new(),
        power_levels: json!({ "users_default": 0 }),
        invites: Vec::new(),
    };
    let incident_room = planned_room_request(&plan).expect("request");
    assert_eq!(incident_room.room_version, Some(RoomVersionId::V12));
    let check_room = identity_check_request().expect("request");
    assert_eq!(check_room.room_version, Some(RoomVersionId::V12));
    assert_eq!(ROOM_VERSION.as_str(), "12");
}

#[test]
fn notices_never_notify_the_whole_room() {
    let content = notice("Hello @room, and @roomba", &[]);
    let body = content.body();
    assert!(!body.contains("@room"), "{body}");
    assert!(body.contains("@\u{2060}room"), "{body}");
    let html = formatted(&content);
    assert!(!html.contains("@room"), "{html}");
    let mentions = content.mentions.unwrap_or_default();
    assert!(!mentions.room, "m.mentions never names the room");
}

fn formatted(content: &RoomMessageEventContent) -> String {
    let json = serde_json::to_value(content).unwrap();
    assert_eq!(json["format"], "org.matrix.custom.html", "{json}");
    json["formatted_body"].as_str().unwrap().to_owned()
}

#[test]
fn replies_carry_html_with_the_plain_text_unchanged() {
    let text = "mc-4k7p is active.\nRun `!cordon status mc-4k7p` for details.";
    let content = notice(text, &[]);
    assert_eq!(content.body(), text);
    assert_eq!(
        formatted(&content),
        "mc-4k7p is active.<br>Run <code>!cordon status mc-4k7p</code> for details."
    );
    assert_eq!(to_html("one ` backtick"), "one ` backtick");
    assert_eq!(to_html("a `b` c ` d"), "a `b` c ` d");
}

#[test]
fn nothing_from_the_text_becomes_markup() {
    for hostile in [
        "<a href=\"https://evil.example\">click</a>",
        "<img src=x onerror=alert(1)>",
        "<mx-reply><blockquote>forged</blockquote></mx-reply>",
        "`<script>x</script>`",
        "&lt;already escaped&gt; ' \"",
    ] {
        let html = formatted(&notice(&format!("Incident \"{hostile}\" declared"), &[]));
        assert!(
            !html.contains('<') || only_our_tags(&html),
            "{hostile} -> {html}"
        );
        assert!(
            !html.contains('"') && !html.contains('\''),
            "{hostile} -> {html}"
        );
    }
    let html = to_html("&lt;");
    assert_eq!(html, "&amp;lt;", "an entity in the text stays text");
}

/// True when every tag in `html` is one cordon writes itself.
fn only_our_tags(html: &str) -> bool {
    let mut rest = html;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if !["<br>", "<code>", "</code>"]
            .iter()
            .any(|t| rest.starts_with(t))
        {
            return false;
        }
        rest = &rest[1..];
    }
    true
}

#[test]
fn mentioned_people_are_pills_and_nothing_else_is() {
    let ic: OwnedUserId = "@ic:hs.example".try_into().unwrap();
    let content = notice(
        "ALERT @ic:hs.example: new device of @eve:hs.example, not @ic:hs.example.org \
             or @ic:hs.example:8448; `@ic:hs.example` in code. Told @ic:hs.example.",
        std::slice::from_ref(&ic),
    );
    let html = formatted(&content);
    let pill = "<a href=\"https://matrix.to/#/@ic:hs.example\">@ic:hs.example</a>";
    assert_eq!(html.matches(pill).count(), 2, "{html}");
    assert!(html.contains(&format!("Told {pill}.")), "{html}");
    assert!(
        html.contains("not @ic:hs.example.org or @ic:hs.example:8448;"),
        "{html}"
    );
    assert!(html.contains("<code>@ic:hs.example</code>"), "{html}");
    assert!(html.contains("device of @eve:hs.example,"), "{html}");
    assert_eq!(content.mentions.unwrap().user_ids.len(), 1);
}

#[test]
fn edits_carry_html_too() {
    let id = matrix_sdk::ruma::event_id!("$orig:hs");
    let json = serde_json::to_value(edit(id, "now `done` @room")).unwrap();
    let new = &json["m.new_content"];
    assert_eq!(new["format"], "org.matrix.custom.html", "{json}");
    assert_eq!(
        new["formatted_body"], "now <code>done</code> @\u{2060}room",
        "{json}"
    );
}

#[test]
fn an_exercise_label_goes_first_in_every_form_of_the_text_once() {
    let user = OwnedUserId::try_from("@a:hs.example").unwrap();
    let content = labelled(notice("Reminder for @a:hs.example", &[user]), "EXERCISE · ");
    assert!(
        content.body().starts_with("EXERCISE · Reminder"),
        "{}",
        content.body()
    );
    assert!(formatted(&content).starts_with("EXERCISE · Reminder"));
    // Labelling twice (a retried send) does not say it twice.
    let again = labelled(content.clone(), "EXERCISE · ");
    assert_eq!(again.body(), content.body());
    // An edit says it in its fallback and in its new text.
    let original = OwnedEventId::try_from("$orig:hs.example").unwrap();
    let edited = labelled(edit(&original, "Status: active"), "EXERCISE · ");
    let json = serde_json::to_value(&edited).unwrap();
    assert_eq!(json["body"], "* EXERCISE · Status: active", "{json}");
    assert_eq!(
        json["m.new_content"]["body"], "EXERCISE · Status: active",
        "{json}"
    );
}
