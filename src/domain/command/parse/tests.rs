use std::time::Duration;

use matrix_sdk::ruma::UserId;

use super::*;
use crate::domain::command::IncidentRef;
use crate::domain::command::text::Lookalike;

fn ok(body: &str) -> Command {
    match parse(body) {
        Some(Ok(command)) => command,
        other => panic!("{body:?} gave {other:?}"),
    }
}

fn rejected(body: &str) -> Rejection {
    match parse(body) {
        Some(Err(rejection)) => rejection,
        other => panic!("{body:?} gave {other:?}"),
    }
}

fn incident(s: &str) -> Option<IncidentRef> {
    Some(IncidentRef::parse(s).unwrap())
}

fn user(s: &str) -> matrix_sdk::ruma::OwnedUserId {
    UserId::parse(s).unwrap()
}

#[test]
fn not_addressed_is_none() {
    assert!(parse("hello").is_none());
    assert!(parse("!cordonx status").is_none());
    assert!(parse("please !cordon status").is_none());
    assert!(parse("").is_none());
}

#[test]
fn empty_command_is_rejected() {
    assert_eq!(rejected("!cordon"), Rejection::Empty);
    assert_eq!(rejected("  !cordon   \n "), Rejection::Empty);
}

#[test]
fn declare_with_quotes_without_quotes_and_curly_quotes() {
    for body in [
        r#"!cordon declare mass-casualty "Tram crash Addiscombe""#,
        "!cordon declare mass-casualty Tram crash Addiscombe",
        "!cordon declare mass-casualty “Tram crash Addiscombe”",
        "!Cordon Declare mass-casualty 'Tram crash'  Addiscombe",
    ] {
        let Command::Declare {
            playbook,
            name,
            exercise,
        } = ok(body)
        else {
            panic!("{body}");
        };
        assert_eq!(playbook.as_str(), "mass-casualty");
        assert_eq!(name.as_str(), "Tram crash Addiscombe");
        assert!(!exercise, "{body}");
    }
}

#[test]
fn declare_an_exercise_with_the_flag_anywhere_after_the_playbook() {
    for body in [
        r#"!cordon declare mass-casualty "Exercise Tramline" --exercise"#,
        "!cordon declare mass-casualty --exercise Exercise Tramline",
        "!cordon declare --exercise mass-casualty Exercise Tramline",
    ] {
        let Command::Declare { name, exercise, .. } = ok(body) else {
            panic!("{body}");
        };
        assert!(exercise, "{body}");
        assert_eq!(name.as_str(), "Exercise Tramline", "{body}");
    }
    // A mistyped flag is refused, never taken into the name.
    assert!(matches!(
        rejected("!cordon declare mass-casualty Tramline --excercise"),
        Rejection::UnexpectedArgument { .. }
    ));
}

#[test]
fn declare_rejects_bad_playbook_and_missing_name() {
    assert!(matches!(
        rejected("!cordon declare Mass_Casualty x"),
        Rejection::InvalidArgument { ref argument, .. } if argument == "<PLAYBOOK>"
    ));
    assert!(matches!(
        rejected("!cordon declare mass-casualty"),
        Rejection::MissingArgument { ref argument, .. } if argument.contains("<NAME>")
    ));
    assert!(matches!(
        rejected(&format!("!cordon declare mc {}", "x".repeat(201))),
        Rejection::InvalidArgument { ref argument, .. } if argument == "<NAME>"
    ));
    assert!(matches!(
        rejected("!cordon declare mc \"  \""),
        Rejection::InvalidArgument { .. }
    ));
}

#[test]
fn status_with_and_without_incident() {
    assert_eq!(ok("!cordon status"), Command::Status { incident: None });
    assert_eq!(
        ok("!cordon status MC-4k7p"),
        Command::Status {
            incident: incident("mc-4k7p")
        }
    );
    assert!(matches!(
        rejected("!cordon status mc-1 extra"),
        Rejection::UnexpectedArgument { ref argument, .. } if argument == "extra"
    ));
}

#[test]
fn extend_disambiguates_by_count() {
    assert_eq!(
        ok("!cordon extend 4h"),
        Command::Extend {
            incident: None,
            duration: Duration::from_secs(4 * 3600)
        }
    );
    assert_eq!(
        ok("!cordon extend mc-4k7p 90m"),
        Command::Extend {
            incident: incident("mc-4k7p"),
            duration: Duration::from_secs(90 * 60)
        }
    );
    assert_eq!(
        ok("!cordon extend 4h 30m"),
        Command::Extend {
            incident: None,
            duration: Duration::from_secs(4 * 3600 + 1800)
        }
    );
    assert_eq!(
        ok("!cordon extend mc-1 1h 30m"),
        Command::Extend {
            incident: incident("mc-1"),
            duration: Duration::from_secs(5400)
        }
    );
    assert_eq!(
        ok("!cordon extend mc-1 2 hours"),
        Command::Extend {
            incident: incident("mc-1"),
            duration: Duration::from_secs(7200)
        }
    );
    assert!(matches!(
        rejected("!cordon extend"),
        Rejection::MissingArgument { ref argument, .. } if argument == "<DURATION>"
    ));
}

#[test]
fn extend_rejects_bad_durations() {
    for body in [
        "!cordon extend 4x",
        "!cordon extend mc-1 0s",
        "!cordon extend mc-1",
        "!cordon extend mc-1 forever",
    ] {
        assert!(
            matches!(
                rejected(body),
                Rejection::InvalidArgument { ref argument, .. } if argument == "<DURATION>"
            ),
            "{body}"
        );
    }
    assert!(matches!(
        rejected("!cordon extend a 4h 5h 6h x"),
        Rejection::UnexpectedArgument { .. }
    ));
}

#[test]
fn standdown_release_retry_with_and_without_incident() {
    assert_eq!(
        ok("!cordon standdown"),
        Command::Standdown { incident: None }
    );
    assert_eq!(
        ok("!cordon stand-down mc-1"),
        Command::Standdown {
            incident: incident("mc-1")
        }
    );
    assert_eq!(ok("!cordon release"), Command::Release { incident: None });
    assert_eq!(
        ok("!cordon release mc-1"),
        Command::Release {
            incident: incident("mc-1")
        }
    );
    assert_eq!(
        ok("!cordon retry"),
        Command::Retry {
            incident: None,
            skip_fhir: false
        }
    );
    assert_eq!(
        ok("!cordon retry mc-1"),
        Command::Retry {
            incident: incident("mc-1"),
            skip_fhir: false
        }
    );
    assert_eq!(
        ok("!cordon retry mc-1 --skip-fhir"),
        Command::Retry {
            incident: incident("mc-1"),
            skip_fhir: true
        }
    );
}

#[test]
fn hold_requires_a_reason() {
    let Command::Hold {
        incident: i,
        reason,
    } = ok("!cordon hold --reason Coroner's request")
    else {
        panic!();
    };
    assert_eq!(i, None);
    assert_eq!(reason.as_str(), "Coroner's request");
    let Command::Hold {
        incident: i,
        reason,
    } = ok("!cordon hold mc-1 —reason “Inquest, case 14”")
    else {
        panic!();
    };
    assert_eq!(i, incident("mc-1"));
    assert_eq!(reason.as_str(), "Inquest, case 14");
    assert!(matches!(
        rejected("!cordon hold mc-1"),
        Rejection::MissingArgument { ref argument, .. } if argument.contains("--reason")
    ));
    assert!(matches!(
        rejected("!cordon hold mc-1 --reason"),
        Rejection::MissingArgument { ref argument, .. } if argument == "a value after --reason"
    ));
    let Command::Hold { reason, .. } = ok("!cordon hold mc-1 --reason=Coroner asked") else {
        panic!();
    };
    assert_eq!(reason.as_str(), "Coroner asked");
}

#[test]
fn add_disambiguates_incident_and_user() {
    assert_eq!(
        ok("!cordon add @bob:nhs.example --role ed-lead"),
        Command::Add {
            incident: None,
            user: user("@bob:nhs.example"),
            role: crate::domain::command::RoleId::parse("ed-lead").unwrap()
        }
    );
    assert_eq!(
        ok("!cordon add --role ed-lead mc-1 https://matrix.to/#/@bob:nhs.example"),
        Command::Add {
            incident: incident("mc-1"),
            user: user("@bob:nhs.example"),
            role: crate::domain::command::RoleId::parse("ed-lead").unwrap()
        }
    );
    // A lone incident id where the user belongs.
    assert!(matches!(
        rejected("!cordon add mc-1 --role ed-lead"),
        Rejection::InvalidArgument { ref argument, .. } if argument == "<USER>"
    ));
    // User and incident swapped.
    let r = rejected("!cordon add @bob:nhs.example mc-1 --role ed-lead");
    assert!(r.reply().contains("looks like a person"), "{}", r.reply());
    assert!(matches!(
        rejected("!cordon add @bob:nhs.example"),
        Rejection::MissingArgument { ref argument, .. } if argument.contains("--role")
    ));
}

#[test]
fn remove_and_handover() {
    assert_eq!(
        ok("!cordon remove @bob:nhs.example"),
        Command::Remove {
            incident: None,
            user: user("@bob:nhs.example")
        }
    );
    assert_eq!(
        ok("!cordon remove mc-1 @bob:nhs.example"),
        Command::Remove {
            incident: incident("mc-1"),
            user: user("@bob:nhs.example")
        }
    );
    assert_eq!(
        ok("!cordon handover @bob:nhs.example"),
        Command::Handover {
            incident: None,
            user: user("@bob:nhs.example")
        }
    );
    assert_eq!(
        ok("!cordon handover mc-1 @bob:nhs.example"),
        Command::Handover {
            incident: incident("mc-1"),
            user: user("@bob:nhs.example")
        }
    );
    assert!(matches!(
        rejected("!cordon handover bob"),
        Rejection::InvalidArgument { ref argument, .. } if argument == "<USER>"
    ));
}

#[test]
fn admit_demands_unverified_and_reason() {
    let Command::Admit {
        incident: i,
        user: u,
        reason,
    } = ok("!cordon admit mc-1 @locum:nhs.example --unverified --reason Locum on shift")
    else {
        panic!();
    };
    assert_eq!(i, incident("mc-1"));
    assert_eq!(u, user("@locum:nhs.example"));
    assert_eq!(reason.as_str(), "Locum on shift");
    assert!(matches!(
        ok("!cordon admit @locum:nhs.example —unverified —reason x"),
        Command::Admit { incident: None, .. }
    ));
    let r = rejected("!cordon admit @locum:nhs.example --reason x");
    assert!(
        matches!(r, Rejection::MissingArgument { ref argument, .. } if argument == "--unverified"),
        "{r:?}"
    );
    assert!(r.reply().contains("--unverified"));
    assert!(matches!(
        rejected("!cordon admit @locum:nhs.example --unverified"),
        Rejection::MissingArgument { .. }
    ));
    assert!(matches!(
        rejected("!cordon admit @locum:nhs.example --unverified=yes --reason x"),
        Rejection::Usage { .. }
    ));
}

#[test]
fn advice_and_transcribed_take_event_refs() {
    let Command::Advice {
        event: Some(event),
        patient: None,
    } = ok("!cordon advice https://matrix.to/#/!abc:nhs.example/$def?via=nhs.example")
    else {
        panic!();
    };
    assert_eq!(event.event.as_str(), "$def");
    let Command::Transcribed { event } = ok("!cordon transcribed $def") else {
        panic!();
    };
    assert_eq!(event.room, None);
    assert!(matches!(
        ok("!cordon transcribed matrix:roomid/abc:nhs.example/e/def"),
        Command::Transcribed { .. }
    ));
    // Without a link: a reply to the message (the workflow asks for one otherwise).
    assert!(matches!(
        ok("!cordon advice"),
        Command::Advice {
            event: None,
            patient: None
        }
    ));
    assert!(matches!(
        rejected("!cordon advice not-a-link"),
        Rejection::InvalidArgument { .. }
    ));
}

#[test]
fn advice_takes_a_checked_nhs_number_before_or_after_the_link() {
    let patient = |body: &str| match ok(body) {
        Command::Advice {
            event,
            patient: Some(p),
        } => (event.map(|e| e.event.to_string()), p.digits().to_owned()),
        other => panic!("{body}: {other:?}"),
    };
    let digits = "9434765919".to_owned();
    assert_eq!(
        patient("!cordon advice $def --patient 943 476 5919"),
        (Some("$def".to_owned()), digits.clone())
    );
    assert_eq!(
        patient("!cordon advice --patient 9434765919 $def"),
        (Some("$def".to_owned()), digits.clone())
    );
    assert_eq!(
        patient("!cordon advice --patient 943 476 5919 https://matrix.to/#/!abc:nhs.example/$def"),
        (Some("$def".to_owned()), digits.clone())
    );
    assert_eq!(
        patient("!cordon advice --patient 943 476 5919"),
        (None, digits)
    );
    // A mistyped digit, too few digits, letters: refused with the reason, as usage.
    for body in [
        "!cordon advice $def --patient 943 476 5918",
        "!cordon advice $def --patient 943 476",
        "!cordon advice $def --patient NHS-number",
        "!cordon advice $def --patient",
    ] {
        let why = rejected(body);
        assert!(
            matches!(why, Rejection::InvalidArgument { ref argument, .. } if argument.contains("--patient"))
                || matches!(
                    why,
                    Rejection::MissingArgument { .. } | Rejection::Usage { .. }
                ),
            "{body}: {why:?}"
        );
    }
    let Rejection::InvalidArgument { reason, .. } =
        rejected("!cordon advice $def --patient 943 476 5918")
    else {
        panic!()
    };
    assert!(reason.contains("check digit"), "{reason}");
    // Two links: which one?
    assert!(matches!(
        rejected("!cordon advice $abc --patient 9434765919 $def"),
        Rejection::InvalidArgument { .. }
    ));
    // The number never shows in the command's Debug (logs).
    assert!(!format!("{:?}", ok("!cordon advice $def --patient 9434765919")).contains("943"));
}

#[test]
fn help_forms() {
    assert_eq!(ok("!cordon help"), Command::Help { topic: None });
    assert_eq!(
        ok("!cordon help Declare"),
        Command::Help {
            topic: Some("declare".into())
        }
    );
    assert_eq!(
        ok("!cordon extend --help"),
        Command::Help {
            topic: Some("extend".into())
        }
    );
    assert_eq!(ok("!cordon --help"), Command::Help { topic: None });
    assert!(matches!(
        rejected("!cordon help frobnicate"),
        Rejection::UnknownCommand { .. }
    ));
}

#[test]
fn unknown_command_suggests_the_closest() {
    let r = rejected("!cordon decalre mc x");
    assert_eq!(
        r,
        Rejection::UnknownCommand {
            given: "decalre".into(),
            suggestion: Some("declare".into())
        }
    );
    let reply = r.reply();
    assert!(reply.contains("declare, status"), "{reply}");
    let reply = rejected("!cordon \"\" status").reply();
    assert!(reply.starts_with("An empty word"), "{reply}");
}

#[test]
fn unbalanced_quotes_are_rejected() {
    assert_eq!(
        rejected(r#"!cordon declare mc "Tram crash"#),
        Rejection::UnbalancedQuotes { quote: '"' }
    );
}

#[test]
fn bad_and_lookalike_users_are_rejected() {
    assert!(matches!(
        rejected("!cordon remove @bob"),
        Rejection::InvalidArgument { .. }
    ));
    // Cyrillic о in the localpart.
    let r = rejected("!cordon remove @b\u{43e}b:nhs.example");
    assert!(r.reply().contains("non-ASCII"), "{}", r.reply());
    let r = rejected("!cordon remove @bob\u{202E}elpmaxe.shn:evil.example");
    assert!(matches!(
        r,
        Rejection::Lookalike {
            kind: Lookalike::Direction,
            ..
        }
    ));
    assert!(!r.reply().contains('\u{202E}'));
}

#[test]
fn control_characters_are_rejected_and_not_echoed() {
    let r = rejected("!cordon status mc-1\u{1b}[2J");
    assert!(matches!(
        r,
        Rejection::Lookalike {
            kind: Lookalike::Control,
            ..
        }
    ));
    assert!(!r.reply().contains('\u{1b}'));
    let r = rejected("!cordon st\u{7}atus");
    assert!(!r.reply().contains('\u{7}'));
}

#[test]
fn oversized_input_is_rejected() {
    let r = rejected(&format!("!cordon declare mc {}", "word ".repeat(1000)));
    assert!(matches!(r, Rejection::TooLong { .. }));
    let r = rejected(&format!("!cordon declare mc {}", "w ".repeat(40)));
    assert!(matches!(r, Rejection::TooManyArguments { .. }));
}

#[test]
fn unknown_flags_suggest_the_right_one() {
    let r = rejected("!cordon hold --reasn x");
    assert!(
        matches!(r, Rejection::UnexpectedArgument { ref suggestion, .. } if suggestion.as_deref() == Some("--reason")),
        "{r:?}"
    );
}

#[test]
fn repeated_flag_is_a_usage_error() {
    let r = rejected("!cordon add @a:b.c --role x --role y");
    assert!(matches!(r, Rejection::Usage { .. }), "{r:?}");
    assert!(r.reply().contains("add [INCIDENT] <USER> --role <ROLE>"));
}

#[test]
fn merge_only_joins_real_durations() {
    let mut w: Vec<String> = ["extend", "mc-1", "4h"].map(String::from).to_vec();
    merge_spaced_duration(&mut w);
    assert_eq!(w, ["extend", "mc-1", "4h"]);
    let mut w: Vec<String> = ["extend", "4h", "30m"].map(String::from).to_vec();
    merge_spaced_duration(&mut w);
    assert_eq!(w, ["extend", "4h 30m"]);
    let mut w: Vec<String> = ["extend", "a", "b", "c"].map(String::from).to_vec();
    merge_spaced_duration(&mut w);
    assert_eq!(w, ["extend", "a", "b", "c"]);
}
