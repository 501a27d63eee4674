use chrono::TimeZone;

use super::*;
use crate::domain::incident::{IncidentId, NewIncident};

fn incident() -> Incident {
    let at = Utc.with_ymd_and_hms(2026, 7, 1, 13, 0, 0).unwrap();
    Incident::new(
        IncidentId::parse("drill-4k7p").unwrap(),
        NewIncident {
            playbook: "drill".into(),
            display_name: "Tram crash".into(),
            control_room: "!control".into(),
            commander: "@lead:hs".into(),
            expires_at: at,
            exercise: false,
        },
        at,
    )
}

#[test]
fn times_are_given_in_utc_and_local_time() {
    let at = Utc.with_ymd_and_hms(2026, 7, 1, 13, 4, 5).unwrap();
    assert_eq!(
        when(at, chrono_tz::Europe::London),
        "2026-07-01 13:04:05 UTC (14:04:05 BST, Europe/London)"
    );
}

#[test]
fn a_compromise_alert_names_the_forgery_the_time_and_the_commander() {
    let at = Utc.with_ymd_and_hms(2026, 7, 1, 13, 4, 5).unwrap();
    let body = compromise_body(
        &incident(),
        &[(
            "Tram crash - Command".to_owned(),
            vec![
                Finding::Intruder {
                    user: "@eve:hs".into(),
                    membership: "invite".into(),
                    claimed_sender: "@cordon:hs".into(),
                    at,
                    why: "cordon never invited them".into(),
                },
                Finding::Drift {
                    event_type: "m.room.power_levels".into(),
                    state_key: String::new(),
                    claimed_sender: Some("@cordon:hs".into()),
                    at: Some(at),
                    own: true,
                },
                Finding::Drift {
                    event_type: "m.room.tombstone".into(),
                    state_key: String::new(),
                    claimed_sender: Some("@eve:hs".into()),
                    at: Some(at),
                    own: false,
                },
                Finding::Ejected {
                    user: "@nurse:hs".into(),
                    membership: "ban".into(),
                    claimed_sender: "@eve:hs".into(),
                    at,
                },
            ],
        )],
        "@cordon:hs",
        at,
        chrono_tz::Europe::London,
    );
    for needle in [
        "POSSIBLE SERVER COMPROMISE",
        "Tram crash (drill-4k7p)",
        "In room \"Tram crash - Command\"",
        "@eve:hs was invited at 2026-07-01 13:04:05 UTC (14:04:05 BST, Europe/London)",
        "claims to come from cordon (@cordon:hs), which did not send it",
        "cordon banned them",
        "m.room.power_levels was changed",
        "restored",
        "m.room.tombstone was set",
        "emptied it",
        "this room has moved",
        "@nurse:hs was banned",
        "claims to come from @eve:hs",
        "lifted the ban and invited them back",
        "rotated the room's encryption key",
        "72-hour",
        "Commander: @lead:hs",
    ] {
        assert!(body.contains(needle), "{needle:?} not in:\n{body}");
    }
}

#[test]
fn a_state_only_alert_does_not_claim_a_ban() {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let body = compromise_body(
        &incident(),
        &[(
            "Ward".to_owned(),
            vec![Finding::Drift {
                event_type: "m.room.join_rules".into(),
                state_key: String::new(),
                claimed_sender: None,
                at: None,
                own: true,
            }],
        )],
        "@cordon:hs",
        at,
        chrono_tz::UTC,
    );
    assert!(body.contains("m.room.join_rules is missing"), "{body}");
    assert!(!body.contains("banned"), "{body}");
}

#[test]
fn cordon_removed_from_a_room_says_the_room_is_lost() {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let body = compromise_body(
        &incident(),
        &[(
            "Ward".to_owned(),
            vec![Finding::CordonRemoved {
                membership: "leave".into(),
                claimed_sender: Some("@cordon:hs".into()),
                at: Some(at),
            }],
        )],
        "@cordon:hs",
        at,
        chrono_tz::UTC,
    );
    assert!(
        body.contains("cordon itself was removed from this room"),
        "{body}"
    );
    assert!(body.contains("which did not send it"), "{body}");
    assert!(body.contains("treat the room as compromised"), "{body}");
}

#[test]
fn identity_and_device_alerts_say_what_was_done() {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let tz = chrono_tz::UTC;
    let removed = identity_body(&incident(), "@n:hs", IdentityAction::Removed, at, tz);
    assert!(removed.contains("removed @n:hs"), "{removed}");
    let stays = identity_body(&incident(), "@n:hs", IdentityAction::AlertOnly, at, tz);
    assert!(stays.contains("stays in the rooms"), "{stays}");
    let device = device_body(&incident(), "@n:hs", "DEV1", Some("phone\n"), at, tz);
    assert!(device.contains("DEV1 (\"phone \")"), "{device}");
    assert!(device.contains("Commander: @lead:hs"), "{device}");
}
