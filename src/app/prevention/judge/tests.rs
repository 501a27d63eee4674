use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::domain::incident::{IncidentId, NewIncident};
use crate::store::{RoomStatus, RosterStatus};

const ME: &str = "@cordon:hs";
const ROOM: &str = "!cmd:hs";

fn incident(state: State) -> Incident {
    let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let mut i = Incident::new(
        IncidentId::parse("drill-4k7p").unwrap(),
        NewIncident {
            playbook: "drill".into(),
            display_name: "Drill".into(),
            control_room: "!control:hs".into(),
            commander: "@ic:hs".into(),
            expires_at: at,
            exercise: false,
        },
        at,
    );
    i.state = state;
    i
}

fn room(room_id: Option<&str>) -> RoomRecord {
    RoomRecord {
        incident: IncidentId::parse("drill-4k7p").unwrap(),
        key: "command".into(),
        room_id: room_id.map(str::to_owned),
        desired: json!({
            "state": {
                "m.room.join_rules": { "join_rule": "invite" },
                "m.room.power_levels": { "users": {}, "invite": 100, "kick": 100, "ban": 100 },
            },
            "name": "Drill command",
        }),
        status: RoomStatus::Created,
        updated_at: Utc::now(),
        delete_id: None,
        create_alias: Some("cordon-drill-4k7p-command".into()),
        forgotten_at: None,
    }
}

fn roster(status: RosterStatus) -> RosterEntry {
    RosterEntry {
        incident: IncidentId::parse("drill-4k7p").unwrap(),
        room_key: "command".into(),
        room_id: ROOM.into(),
        user: "@nurse:hs".into(),
        roles: vec!["nurse".into()],
        status,
        unverified: false,
        at: Utc::now(),
    }
}

fn ask(
    records: Records<'_>,
    event_type: &str,
    state_key: &str,
    sender: &str,
    content: Value,
    replaces: Option<Value>,
) -> Verdict {
    judge(
        &records,
        &Proposed {
            room_id: ROOM,
            event_type,
            state_key,
            sender,
            content: &content,
            replaces: replaces.as_ref(),
        },
    )
}

fn member(r: Records<'_>, who: &str, sender: &str, m: &str, before: Option<&str>) -> Verdict {
    ask(
        r,
        "m.room.member",
        who,
        sender,
        json!({ "membership": m }),
        before.map(|b| json!({ "membership": b })),
    )
}

#[test]
fn an_invite_or_join_needs_the_roster_whoever_claims_to_send_it() {
    let active = incident(State::Active);
    let record = room(Some(ROOM));
    let invited = roster(RosterStatus::Invited);
    let on = Records {
        me: ME,
        incident: Some(&active),
        room: Some(&record),
        target: Some(&invited),
    };
    assert_eq!(member(on, "@nurse:hs", ME, "invite", None), Verdict::Allow);
    assert_eq!(
        member(on, "@nurse:hs", "@nurse:hs", "join", Some("invite")),
        Verdict::Allow
    );
    // make_room_admin's invite, sent in cordon's own name, of someone not on the roster.
    let off = Records { target: None, ..on };
    match member(off, "@admin:hs", ME, "invite", None) {
        Verdict::Refuse(why) => assert!(why.contains("not on drill-4k7p's roster"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        member(off, "@eve:hs", "@eve:hs", "join", Some("invite")),
        Verdict::Refuse(_)
    ));
    let pending = roster(RosterStatus::Pending {
        why: "not enrolled".into(),
    });
    let waiting = Records {
        target: Some(&pending),
        ..on
    };
    match member(waiting, "@nurse:hs", ME, "invite", None) {
        Verdict::Refuse(why) => assert!(why.contains("pending (not enrolled)"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_kick_of_someone_let_in_is_refused_but_an_unban_of_them_is_not() {
    let active = incident(State::Active);
    let record = room(Some(ROOM));
    let invited = roster(RosterStatus::Invited);
    let r = Records {
        me: ME,
        incident: Some(&active),
        room: Some(&record),
        target: Some(&invited),
    };
    assert!(matches!(
        member(r, "@nurse:hs", ME, "leave", Some("join")),
        Verdict::Refuse(_)
    ));
    assert_eq!(
        member(r, "@nurse:hs", ME, "leave", Some("ban")),
        Verdict::Allow
    );
    assert!(matches!(
        member(r, "@nurse:hs", ME, "ban", Some("join")),
        Verdict::Refuse(_)
    ));
    // Leaving of their own accord.
    assert_eq!(
        member(r, "@nurse:hs", "@nurse:hs", "leave", Some("join")),
        Verdict::Allow
    );
    // Once removed, cordon's kick and ban go through; an unban does not.
    let removed = roster(RosterStatus::Removed {
        why: "removed by the commander".into(),
    });
    let gone = Records {
        target: Some(&removed),
        ..r
    };
    assert_eq!(
        member(gone, "@nurse:hs", ME, "leave", Some("join")),
        Verdict::Allow
    );
    assert_eq!(
        member(gone, "@nurse:hs", ME, "ban", Some("join")),
        Verdict::Allow
    );
    assert!(matches!(
        member(gone, "@nurse:hs", ME, "leave", Some("ban")),
        Verdict::Refuse(_)
    ));
    // Standing down: the rooms are emptied.
    let standing_down = incident(State::StandingDown);
    let closing = Records {
        incident: Some(&standing_down),
        ..r
    };
    assert_eq!(
        member(closing, "@nurse:hs", ME, "leave", Some("join")),
        Verdict::Allow
    );
    assert!(matches!(
        member(r, "@nurse:hs", ME, "knock", None),
        Verdict::Refuse(_)
    ));
}

#[test]
fn cordons_own_membership_is_its_own() {
    let active = incident(State::Active);
    let record = room(None);
    let r = Records {
        me: ME,
        incident: Some(&active),
        room: Some(&record),
        target: None,
    };
    // Its join as it creates the room (the room id not yet recorded).
    assert_eq!(member(r, ME, ME, "join", None), Verdict::Allow);
    assert_eq!(member(r, ME, ME, "leave", Some("join")), Verdict::Allow);
    assert!(matches!(
        member(r, ME, "@admin:hs", "leave", Some("join")),
        Verdict::Refuse(_)
    ));
    assert!(matches!(
        member(r, ME, ME, "ban", Some("join")),
        Verdict::Refuse(_)
    ));
}

#[test]
fn state_passes_only_as_cordon_set_it() {
    let active = incident(State::Active);
    let record = room(Some(ROOM));
    let r = Records {
        me: ME,
        incident: Some(&active),
        room: Some(&record),
        target: None,
    };
    let pl = |users: Value| json!({ "users": users, "invite": 100, "kick": 100, "ban": 100 });
    assert_eq!(
        ask(r, "m.room.power_levels", "", ME, pl(json!({})), None),
        Verdict::Allow
    );
    // make_room_admin's power levels, in cordon's name.
    match ask(
        r,
        "m.room.power_levels",
        "",
        ME,
        pl(json!({ "@admin:hs": 100 })),
        None,
    ) {
        Verdict::Refuse(why) => assert!(why.contains("not what cordon set"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ask(
            r,
            "m.room.name",
            "",
            ME,
            json!({ "name": "Drill command" }),
            None
        ),
        Verdict::Allow
    );
    assert!(matches!(
        ask(
            r,
            "m.room.name",
            "",
            ME,
            json!({ "name": "Open to all" }),
            None
        ),
        Verdict::Refuse(_)
    ));
    assert!(matches!(
        ask(
            r,
            "m.room.join_rules",
            "",
            ME,
            json!({ "join_rule": "public" }),
            None
        ),
        Verdict::Refuse(_)
    ));
    // A state event cordon never set may only be emptied (the guard's revert).
    assert_eq!(
        ask(r, "m.widget", "w1", ME, json!({}), None),
        Verdict::Allow
    );
    assert!(matches!(
        ask(r, "m.widget", "w1", ME, json!({ "url": "https://x" }), None),
        Verdict::Refuse(_)
    ));
    assert_eq!(
        ask(
            r,
            "m.room.canonical_alias",
            "",
            ME,
            json!({ "alias": "#cordon-drill-4k7p-command:hs" }),
            None
        ),
        Verdict::Allow
    );
}

#[test]
fn rooms_cordon_has_no_record_of_are_refused() {
    let active = incident(State::Active);
    let record = room(Some("!other:hs"));
    let none = Records {
        me: ME,
        incident: None,
        room: None,
        target: None,
    };
    assert!(matches!(
        member(none, ME, ME, "join", None),
        Verdict::Refuse(_)
    ));
    let no_room = Records {
        incident: Some(&active),
        ..none
    };
    assert!(matches!(
        member(no_room, ME, ME, "join", None),
        Verdict::Refuse(_)
    ));
    let elsewhere = Records {
        incident: Some(&active),
        room: Some(&record),
        ..none
    };
    match member(elsewhere, ME, ME, "join", None) {
        Verdict::Refuse(why) => assert!(why.contains("another room"), "{why}"),
        other => panic!("{other:?}"),
    }
}
