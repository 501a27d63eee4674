use super::*;
use crate::domain::incident::IncidentId;

fn entry(status: RosterStatus, at: DateTime<Utc>) -> RosterEntry {
    RosterEntry {
        incident: IncidentId::parse("drill-4k7p").unwrap(),
        room_key: "command".into(),
        room_id: "!r".into(),
        user: "@n:hs".into(),
        roles: vec!["nurse".into()],
        status,
        unverified: false,
        at,
    }
}

#[test]
fn only_an_invited_roster_entry_lets_someone_in() {
    let now = Utc::now();
    let old = now - TimeDelta::hours(1);
    let v = |e: Option<&RosterEntry>| verdict("@n:hs", e, "@cordon:hs", now);
    assert_eq!(
        v(Some(&entry(RosterStatus::Invited, old))),
        Verdict::Allowed
    );
    assert!(matches!(v(None), Verdict::Intruder { .. }));
    let pending = entry(
        RosterStatus::Pending {
            why: "not enrolled".into(),
        },
        old,
    );
    match v(Some(&pending)) {
        Verdict::Intruder { why } => assert!(why.contains("not enrolled"), "{why}"),
        other => panic!("{other:?}"),
    }
    let removed = entry(
        RosterStatus::Removed {
            why: IDENTITY_CHANGED.into(),
        },
        old,
    );
    assert!(matches!(v(Some(&removed)), Verdict::Intruder { .. }));
}

#[test]
fn a_removal_under_way_is_not_an_intrusion() {
    let now = Utc::now();
    let just = entry(
        RosterStatus::Removed { why: "x".into() },
        now - TimeDelta::seconds(5),
    );
    assert_eq!(
        verdict("@n:hs", Some(&just), "@cordon:hs", now),
        Verdict::BeingRemoved
    );
}

#[test]
fn cordon_itself_is_never_an_intruder() {
    assert_eq!(
        verdict("@cordon:hs", None, "@cordon:hs", Utc::now()),
        Verdict::Allowed
    );
}

#[test]
fn a_holder_put_out_by_anyone_but_themselves_was_ejected() {
    let let_in = Utc::now();
    let after = let_in + TimeDelta::seconds(1);
    let e = |membership, sender| ejected("@n:hs", membership, sender, after, let_in);
    assert!(e("ban", "@evil:hs"));
    assert!(e("ban", "@cordon:hs"), "a ban claiming cordon is forged");
    assert!(e("leave", "@cordon:hs"), "a kick claiming cordon is forged");
    assert!(e("leave", "@evil:hs"));
    assert!(!e("leave", "@n:hs"), "they left by their own hand");
    for fine in ["join", "invite", "knock"] {
        assert!(!e(fine, "@evil:hs"), "{fine}");
    }
    assert!(
        !ejected(
            "@n:hs",
            "leave",
            "@cordon:hs",
            let_in - TimeDelta::minutes(5),
            let_in
        ),
        "cordon's own removal, before it let them in again"
    );
}

#[test]
fn only_guard_removals_are_undone_by_reverification() {
    assert!(removed_by_guard(&RosterStatus::Removed {
        why: IDENTITY_CHANGED.into()
    }));
    assert!(removed_by_guard(&RosterStatus::Removed {
        why: REVOKED.into()
    }));
    assert!(!removed_by_guard(&RosterStatus::Removed {
        why: "removed by the commander".into()
    }));
    assert!(!removed_by_guard(&RosterStatus::Invited));
}
