use super::*;

#[test]
fn incident_ref_is_lowercased_and_bounded() {
    assert_eq!(IncidentRef::parse("MC-4K7P").unwrap().as_str(), "mc-4k7p");
    assert!(IncidentRef::parse("").is_err());
    assert!(IncidentRef::parse(&"a".repeat(33)).is_err());
    assert!(IncidentRef::parse(&"a".repeat(32)).is_ok());
    assert!(IncidentRef::parse("mc_4k7p").is_err());
    assert!(IncidentRef::parse("mç-1").is_err());
}

#[test]
fn incident_ref_that_looks_like_a_user_says_so() {
    let err = IncidentRef::parse("@bob:hs").unwrap_err();
    assert!(err.to_string().contains("looks like a person"), "{err}");
}

#[test]
fn playbook_ids_are_slugs() {
    assert!(PlaybookId::parse("mass-casualty").is_ok());
    assert!(PlaybookId::parse("2-fire").is_ok());
    assert!(PlaybookId::parse("-fire").is_err());
    assert!(PlaybookId::parse("fire_2").is_err());
    assert!(PlaybookId::parse(&"a".repeat(65)).is_err());
    assert!(PlaybookId::parse(&"a".repeat(64)).is_ok());
    let err = PlaybookId::parse("Mass-Casualty").unwrap_err();
    assert!(
        err.to_string().contains("did you mean `mass-casualty`"),
        "{err}"
    );
}

#[test]
fn durations_are_positive_and_bounded() {
    assert_eq!(parse_duration("4h").unwrap(), Duration::from_secs(4 * 3600));
    assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(90 * 60));
    assert_eq!(
        parse_duration("1h30m").unwrap(),
        Duration::from_secs(90 * 60)
    );
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("4x").is_err());
    assert!(parse_duration("-4h").is_err());
    assert!(parse_duration("4").is_err());
    assert!(parse_duration("31days").is_err());
    assert!(parse_duration("99999999999999999999h").is_err());
}

#[test]
fn users_by_id_and_by_link() {
    let bob = UserId::parse("@bob:example.org").unwrap();
    assert_eq!(parse_user("@bob:example.org").unwrap(), bob);
    assert_eq!(
        parse_user("https://matrix.to/#/@bob:example.org").unwrap(),
        bob
    );
    assert_eq!(
        parse_user("https://matrix.to/#/%40bob%3Aexample.org").unwrap(),
        bob
    );
    assert_eq!(parse_user("matrix:u/bob:example.org").unwrap(), bob);
    assert!(parse_user("bob").is_err());
    assert!(parse_user("@bob").is_err());
    assert!(parse_user("https://matrix.to/#/!room:example.org").is_err());
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("%40bob%3Aexample.org"), "@bob:example.org");
    assert_eq!(percent_decode("%E2%80%AE"), "\u{202E}");
    assert_eq!(percent_decode("100%"), "100%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
    assert_eq!(percent_decode("%FF"), "\u{FFFD}");
}

#[test]
fn lookalike_users_are_refused() {
    // Cyrillic а in the server name.
    let err = parse_user("@bob:ex\u{430}mple.org").unwrap_err();
    assert!(err.to_string().contains("non-ASCII"), "{err}");
    // Right-to-left override hidden in a percent-encoded link.
    let err = parse_user("https://matrix.to/#/%40bob%E2%80%AE%3Aexample.org").unwrap_err();
    assert!(err.to_string().contains("text-direction"), "{err}");
    assert!(!err.to_string().contains('\u{202E}'));
    // Cyrillic е in a percent-encoded server name.
    let err = parse_user("https://matrix.to/#/%40duty%3Anhs.%D0%B5xample").unwrap_err();
    assert!(err.to_string().contains("non-ASCII"), "{err}");
    let err = parse_user("matrix:u/duty:nhs.%D0%B5xample").unwrap_err();
    assert!(err.to_string().contains("non-ASCII"), "{err}");
    let err = parse_user("@b\u{200B}ob:example.org").unwrap_err();
    assert!(err.to_string().contains("invisible"), "{err}");
}

#[test]
fn event_refs_in_three_forms() {
    let bare = EventRef::parse("$abc123:example.org").unwrap();
    assert_eq!(bare.room, None);
    assert_eq!(bare.event.as_str(), "$abc123:example.org");

    let link = EventRef::parse(
        "https://matrix.to/#/!room:example.org/$ev123?via=example.org&via=other.org",
    )
    .unwrap();
    assert_eq!(link.room.as_ref().unwrap().as_str(), "!room:example.org");
    assert_eq!(link.event.as_str(), "$ev123");
    assert_eq!(link.via.len(), 2);

    let uri = EventRef::parse("matrix:roomid/room:example.org/e/ev123?via=example.org").unwrap();
    assert_eq!(uri.room.as_ref().unwrap().as_str(), "!room:example.org");
    assert_eq!(uri.event.as_str(), "$ev123");

    assert!(EventRef::parse("https://matrix.to/#/!room:example.org").is_err());
    assert!(EventRef::parse("https://matrix.to/#/@bob:example.org").is_err());
    assert!(EventRef::parse("hello").is_err());
    assert!(EventRef::parse("https://example.org/$ev").is_err());
}

#[test]
fn names_and_reasons_are_joined_and_bounded() {
    let name = IncidentName::from_words(&["Tram", " crash ", "Addiscombe"]).unwrap();
    assert_eq!(name.as_str(), "Tram crash Addiscombe");
    assert!(IncidentName::from_words(&["  "]).is_err());
    assert!(IncidentName::from_words(&["x".repeat(201)]).is_err());
    assert!(IncidentName::from_words(&["é".repeat(200)]).is_ok());
    assert!(Reason::from_words(&["coroner", "request"]).is_ok());
    assert!(Reason::from_words::<&str>(&[]).is_err());
}

#[test]
fn lookalike_classification() {
    assert_eq!(Lookalike::of('\u{7}'), Some(Lookalike::Control));
    assert_eq!(Lookalike::of('\u{1b}'), Some(Lookalike::Control));
    assert_eq!(Lookalike::of('\u{202E}'), Some(Lookalike::Direction));
    assert_eq!(Lookalike::of('\u{2067}'), Some(Lookalike::Direction));
    assert_eq!(Lookalike::of('\u{200B}'), Some(Lookalike::Invisible));
    assert_eq!(Lookalike::of('\u{FEFF}'), Some(Lookalike::Invisible));
    assert_eq!(Lookalike::of('a'), None);
    assert_eq!(Lookalike::of('é'), None);
}
