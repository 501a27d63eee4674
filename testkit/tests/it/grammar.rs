//! Integration tests: the chat grammar, through the public API (`cordon::domain::command`).

use std::time::Duration;

use cordon::domain::command::{Command, Rejection, help, parse};
use proptest::prelude::*;

fn ok(body: &str) -> Command {
    match parse(body) {
        Some(Ok(command)) => command,
        other => panic!("{body:?} gave {other:?}"),
    }
}

fn reply(body: &str) -> String {
    match parse(body) {
        Some(Err(rejection)) => rejection.reply(),
        other => panic!("{body:?} gave {other:?}"),
    }
}

/// The reply is plain chat text: no ANSI, no control characters but newlines, no
/// direction or invisible characters.
fn assert_clean(text: &str) {
    cordon_testkit::fuzz::assert_displayable(text);
}

#[test]
fn messages_not_addressed_to_cordon_are_ignored() {
    for body in [
        "",
        "hello",
        "!cordonx status",
        "!cordon_status",
        "cordon status",
        "re: !cordon status",
        "> <@a:b.c> !cordon standdown\n\nno thanks",
    ] {
        assert_eq!(parse(body), None, "{body:?}");
    }
}

#[test]
fn prefix_is_case_insensitive_and_may_follow_whitespace_and_a_reply_fallback() {
    assert!(matches!(ok("  !CORDON status"), Command::Status { .. }));
    assert!(matches!(
        ok("> <@alice:nhs.example> is the tram crash ours?\n> yes\n\n!cordon status"),
        Command::Status { .. }
    ));
}

#[test]
fn declare_from_a_phone_keyboard() {
    let Command::Declare { playbook, name, .. } =
        ok("!cordon declare mass-casualty “Tram crash at St Mary’s”")
    else {
        panic!("not a declare");
    };
    assert_eq!(playbook.as_str(), "mass-casualty");
    assert_eq!(name.as_str(), "Tram crash at St Mary’s");
    let Command::Declare { name, .. } = ok("!cordon declare mass-casualty Tram crash Addiscombe")
    else {
        panic!("not a declare");
    };
    assert_eq!(name.as_str(), "Tram crash Addiscombe");
}

#[test]
fn extend_reads_incident_and_duration_by_count() {
    assert_eq!(
        ok("!cordon extend 4h"),
        Command::Extend {
            incident: None,
            duration: Duration::from_secs(4 * 3600)
        }
    );
    let Command::Extend { incident, duration } = ok("!cordon extend MC-4K7P 90m") else {
        panic!("not an extend");
    };
    assert_eq!(
        incident.map(|i| i.as_str().to_owned()).as_deref(),
        Some("mc-4k7p")
    );
    assert_eq!(duration, Duration::from_secs(90 * 60));
}

#[test]
fn admit_is_refused_without_unverified() {
    let text = reply("!cordon admit mc-4k7p @locum:nhs.example --reason \"Locum on shift\"");
    assert!(text.contains("--unverified"), "{text}");
    assert!(
        text.contains("admit [INCIDENT] <USER> --unverified"),
        "{text}"
    );
    assert!(matches!(
        ok("!cordon admit mc-4k7p @locum:nhs.example --unverified --reason \"Locum on shift\""),
        Command::Admit { .. }
    ));
}

#[test]
fn reasons_need_no_quotes() {
    for body in [
        "!cordon hold mc-4k7p --reason Coroner's request",
        "!cordon hold mc-4k7p —reason “Coroner's request”",
        "!cordon hold mc-4k7p --reason=Coroner's request",
    ] {
        let Command::Hold { reason, .. } = ok(body) else {
            panic!("{body} is not a hold");
        };
        assert_eq!(reason.as_str(), "Coroner's request", "{body}");
    }
}

#[test]
fn hold_is_refused_without_reason() {
    let text = reply("!cordon hold mc-4k7p");
    assert!(text.contains("--reason"), "{text}");
    assert!(text.contains("Try `!cordon help hold`."), "{text}");
}

#[test]
fn rejections_reply_with_usage_and_next_step() {
    let text = reply("!cordon extend mc-4k7p soon");
    assert!(text.contains("<DURATION>"), "{text}");
    assert!(
        text.contains("Usage: !cordon extend [INCIDENT] <DURATION>"),
        "{text}"
    );
    assert!(text.contains("Try `!cordon help extend`."), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
}

#[test]
fn unknown_command_gets_a_suggestion_and_the_list() {
    let text = reply("!cordon standown");
    assert!(text.contains("Did you mean `standdown`?"), "{text}");
    for name in [
        "declare",
        "status",
        "extend",
        "admit",
        "transcribed",
        "help",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
}

#[test]
fn hostile_input_is_not_echoed() {
    for body in [
        "!cordon \u{1b}[31mstatus",
        "!cordon status mc-1\u{202E}",
        "!cordon add @bob\u{2066}:nhs.example --role x",
        "!cordon remove @b\u{200B}ob:nhs.example",
        "!cordon declare mc \"Tram\u{0}crash\"",
        "!cordon \u{7}",
        "!cordon @room",
    ] {
        let text = reply(body);
        assert_clean(&text);
        assert!(!text.to_ascii_lowercase().contains("@room"), "{text}");
    }
}

#[test]
fn lookalike_user_is_refused() {
    // A Cyrillic е in the server name.
    let text = reply("!cordon handover @duty:nhs.\u{435}xample");
    assert!(text.contains("non-ASCII"), "{text}");
    // The same, percent-encoded inside a matrix.to link.
    let text = reply("!cordon handover https://matrix.to/#/%40duty%3Anhs.%D0%B5xample");
    assert!(text.contains("non-ASCII"), "{text}");
    assert_clean(&text);
}

/// Found by fuzzing the command target: ruma panics on a matrix.to link whose event
/// pair has an empty half, and `advice` is accepted in incident rooms, so any member
/// could have crashed cordon's handling of the message (and its catch-up after every
/// restart) with one link.
#[test]
fn a_matrix_to_link_with_an_empty_half_is_a_usage_reply_not_a_panic() {
    for link in [
        "https://matrix.to/#/!room:nhs.example/",
        "https://matrix.to/#/!room:nhs.example//",
        "https://matrix.to/#//$event",
        "https://matrix.to/#/$event//?via=nhs.example",
        "https://matrix.to/#/!room:nhs//?roo/#/$urvcluuf+%cgftl",
    ] {
        for command in ["advice", "transcribed"] {
            let text = reply(&format!("!cordon {command} {link}"));
            assert!(
                text.contains(&format!("Usage: !cordon {command}")),
                "{link}: {text}"
            );
            assert_clean(&text);
        }
    }
    // A whole event link still parses.
    assert!(matches!(
        parse("!cordon advice https://matrix.to/#/!room:nhs.example/$event?via=nhs.example"),
        Some(Ok(_))
    ));
}

#[test]
fn limits_are_replied_to_not_panicked_on() {
    assert!(matches!(
        parse(&format!("!cordon declare mc {}", "x".repeat(5000))),
        Some(Err(Rejection::TooLong { .. }))
    ));
    assert!(matches!(
        parse(&format!("!cordon declare mc {}", "x ".repeat(40))),
        Some(Err(Rejection::TooManyArguments { .. }))
    ));
    assert!(matches!(
        parse(&format!("!cordon declare mc {}", "x".repeat(600))),
        Some(Err(Rejection::ArgumentTooLong { .. }))
    ));
}

#[test]
fn help_is_rendered_from_the_grammar() {
    let overview = help(None).unwrap();
    assert!(overview.contains("declare"), "{overview}");
    assert!(overview.contains("!cordon help declare"), "{overview}");
    let declare = help(Some("declare")).unwrap();
    assert!(declare.contains("Usage: !cordon declare"), "{declare}");
    assert!(
        declare.contains("Example: !cordon declare mass-casualty"),
        "{declare}"
    );
    assert!(help(Some("nonsense")).is_err());
    assert_clean(&overview);
    assert_clean(&declare);
}

#[test]
fn name_and_changes_state() {
    assert!(!ok("!cordon status").changes_state());
    assert!(!ok("!cordon help").changes_state());
    assert!(ok("!cordon standdown").changes_state());
    assert_eq!(ok("!cordon standdown").name(), "standdown");
}

proptest! {
    #[test]
    fn parse_never_panics(body in any::<String>()) {
        let _ = parse(&body);
    }

    #[test]
    fn parse_never_panics_when_addressed(rest in any::<String>()) {
        let body = format!("!cordon {rest}");
        let parsed = parse(&body);
        prop_assert!(parsed.is_some());
        if let Some(Err(rejection)) = parsed {
            assert_clean(&rejection.reply());
        }
    }

    #[test]
    fn parse_never_panics_on_command_shaped_input(
        command in prop::sample::select(vec![
            "declare", "status", "extend", "standdown", "hold", "release", "retry", "add",
            "remove", "handover", "admit", "advice", "transcribed", "help", "decalre",
            "decision", "log",
        ]),
        words in prop::collection::vec(
            prop::sample::select(vec![
                "mc-1", "4h", "@a:b.c", "--role", "--reason", "--unverified", "—reason", "\"",
                "“", "’", "'", "x", "$e", "https://matrix.to/#/!r:b.c/$e", "\\", "#", "-h",
                "\u{202E}", "é", "%E2%80%AE", "--", "-", "--because", "--corrects", "D1",
                "--incident", "—because", "\n",
            ]),
            0..12,
        ),
    ) {
        let body = format!("!cordon {command} {}", words.join(" "));
        if let Some(Err(rejection)) = parse(&body) {
            assert_clean(&rejection.reply());
        }
    }
}
