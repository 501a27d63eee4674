//! The store's gauges read from a real store, and the exposition they make.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::domain::incident::{Event, Incident, NewIncident};
use crate::domain::schedule::{Schedule, Timer};
use crate::store::{RoomRecord, RosterEntry};

fn t(min: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().unwrap() + TimeDelta::minutes(min)
}

fn declare(store: &Store, n: u64) -> Incident {
    declare_as(store, n, false)
}

fn declare_as(store: &Store, n: u64, exercise: bool) -> Incident {
    let mut next = move || n;
    store
        .create_incident(
            NewIncident {
                playbook: "mass-casualty".into(),
                display_name: format!("Incident {n}"),
                control_room: "!ctl:hs".into(),
                commander: "@ic:hs".into(),
                expires_at: t(600),
                exercise,
            },
            &mut next,
            "@ic:hs",
            t(0),
        )
        .unwrap()
}

fn room(store: &Store, incident: &Incident, key: &str, status: RoomStatus) {
    store
        .upsert_room(&RoomRecord {
            incident: incident.id.clone(),
            key: key.into(),
            room_id: Some(format!("!{key}-{}:hs", incident.id.as_str())),
            desired: json!({}),
            status,
            updated_at: t(1),
            delete_id: None,
            create_alias: None,
            forgotten_at: None,
        })
        .unwrap();
}

fn roster(store: &Store, incident: &Incident, user: &str, status: RosterStatus) {
    store
        .roster_put(
            &[RosterEntry {
                incident: incident.id.clone(),
                room_key: "command".into(),
                room_id: format!("!command-{}:hs", incident.id.as_str()),
                user: user.into(),
                roles: vec!["medical".into()],
                status,
                unverified: false,
                at: t(1),
            }],
            None,
            t(1),
        )
        .unwrap();
}

fn pending() -> RosterStatus {
    RosterStatus::Pending {
        why: "identity not verified".into(),
    }
}

fn count<T: PartialEq>(list: &[(T, u64)], key: T) -> u64 {
    list.iter().find(|(k, _)| *k == key).map_or(0, |(_, n)| *n)
}

#[test]
fn the_snapshot_counts_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let active = declare(&store, 1);
    store
        .apply(&active.id, Event::Provisioned, "cordon", t(2))
        .unwrap();
    room(&store, &active, "command", RoomStatus::Created);
    room(&store, &active, "medical", RoomStatus::Created);
    roster(&store, &active, "@waiting:hs", pending());
    roster(&store, &active, "@in:hs", RosterStatus::Invited);
    let provisioning = declare(&store, 2);
    room(&store, &provisioning, "command", RoomStatus::Planned);
    roster(&store, &provisioning, "@also-waiting:hs", pending());
    let destroyed = declare(&store, 3);
    for event in [
        Event::Provisioned,
        Event::StandDown {
            by: "@ic:hs".into(),
        },
    ] {
        store.apply(&destroyed.id, event, "cordon", t(3)).unwrap();
    }
    room(&store, &destroyed, "command", RoomStatus::Frozen);
    // A pending holder of an incident standing down is no longer waiting for an invite.
    roster(&store, &destroyed, "@late:hs", pending());
    // Its advice waits for the FHIR server.
    let mut record = store
        .begin_standdown_step(&destroyed.id, crate::store::StandDownStep::Seal, t(3))
        .unwrap();
    record.fhir = Some(crate::store::standdown::FhirDelivery {
        outbox: "fhir-outbox/x.json.age".into(),
        items: 2,
        attempts: 3,
        outcome: None,
    });
    store.put_standdown(&destroyed.id, &record).unwrap();

    // Two exercises: counted apart, never among the incidents.
    for n in [4, 5] {
        let drill = declare_as(&store, n, true);
        store
            .apply(&drill.id, Event::Provisioned, "cordon", t(2))
            .unwrap();
    }

    // A sweep every 10 minutes, armed at t(0) and never run: at t(25) it has been due
    // since t(10).
    store
        .arm_timer(
            &Timer {
                id: format!("{}/sweep/command", active.id.as_str()),
                incident: Some(active.id.clone()),
                kind: TimerKind::Sweep,
                schedule: Schedule::Cron {
                    expr: "*/10 * * * *".into(),
                    tz: "Europe/London".into(),
                },
                payload: json!({}),
                last_fired: None,
            },
            t(0),
        )
        .unwrap();
    // An overdue reminder is not a sweep.
    store
        .arm_timer(
            &Timer {
                id: format!("{}/reminder", active.id.as_str()),
                incident: Some(active.id.clone()),
                kind: TimerKind::Reminder,
                schedule: Schedule::At(t(-120)),
                payload: json!({}),
                last_fired: None,
            },
            t(0),
        )
        .unwrap();

    let s = Snapshot::read(&store, t(25), chrono_tz::Europe::London).unwrap();
    assert_eq!(count(&s.incidents, State::Active), 1);
    assert_eq!(count(&s.incidents, State::Provisioning), 1);
    assert_eq!(count(&s.incidents, State::StandingDown), 1);
    assert_eq!(count(&s.incidents, State::Closed), 0);
    assert_eq!(s.incidents.len(), State::ALL.len(), "every state is listed");
    assert_eq!(count(&s.exercises, State::Active), 2);
    assert_eq!(s.exercises.len(), State::ALL.len(), "every state is listed");
    assert_eq!(count(&s.rooms, RoomStatus::Created), 2);
    assert_eq!(count(&s.rooms, RoomStatus::Planned), 1);
    assert_eq!(count(&s.rooms, RoomStatus::Frozen), 1);
    assert_eq!(s.invites_pending, 2);
    assert_eq!(s.fhir_waiting, 1);
    assert!(
        (s.sweep_lag_seconds - 900.0).abs() < 1e-6,
        "{}",
        s.sweep_lag_seconds
    );

    let text = global().render(Some(&s));
    for line in [
        "cordon_incidents{state=\"active\"} 1",
        "cordon_incidents{state=\"closed\"} 0",
        "cordon_exercises{state=\"active\"} 2",
        "cordon_rooms{status=\"created\"} 2",
        "cordon_invites_pending 2",
        "cordon_fhir_deliveries_waiting 1",
        "cordon_sweep_lag_seconds 900.0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    for id in [&active.id, &provisioning.id, &destroyed.id] {
        assert!(!text.contains(id.as_str()), "no ids in metrics:\n{text}");
    }
    assert!(
        !text.contains("@waiting"),
        "no user ids in metrics:\n{text}"
    );
}

#[test]
fn counters_count_by_fixed_labels() {
    let m = global();
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|rest| rest.strip_prefix(' '))
            .map_or(0.0, |n| n.parse().unwrap())
    };
    let before = m.render(None);
    m.guard_alert(alert_kind("guard/mc-1/device/@a:hs/DEV"));
    m.guard_alert(alert_kind("guard/mc-1/command/compromise/abcd"));
    m.guard_alert("something new");
    m.job_failed(&TimerKind::Sweep);
    m.job_failed(&TimerKind::Other("patient-x".into()));
    m.guard_look("event");
    m.guard_look("event");
    m.guard_look("pass");
    let after = m.render(None);
    for (series, delta) in [
        ("cordon_guard_room_looks_total{cause=\"event\"}", 2.0),
        ("cordon_guard_room_looks_total{cause=\"pass\"}", 1.0),
        ("cordon_guard_alerts_total{kind=\"device\"}", 1.0),
        ("cordon_guard_alerts_total{kind=\"compromise\"}", 1.0),
        ("cordon_guard_alerts_total{kind=\"other\"}", 1.0),
        ("cordon_job_failures_total{job=\"sweep\"}", 1.0),
        ("cordon_job_failures_total{job=\"other\"}", 1.0),
    ] {
        assert_eq!(
            value(&after, series) - value(&before, series),
            delta,
            "{series}:\n{after}"
        );
    }
    assert!(
        !after.contains("patient-x") && !after.contains("something new"),
        "{after}"
    );
}

#[test]
fn alert_kinds_come_from_the_key() {
    for (key, kind) in [
        ("guard/mc-1/identity/@a:hs/MASTER", "identity"),
        ("guard/mc-1/device/@a:hs/DEV", "device"),
        ("guard/mc-1/revoked/@a:hs/123", "revoked"),
        ("guard/mc-1/readmit/@a:hs/command/123", "readmitted"),
        ("guard/mc-1/readmitted/@a:hs/123", "readmitted"),
        ("guard/mc-1/identity/compromise/abcd", "compromise"),
        ("guard/mc-1/x", "other"),
        ("", "other"),
    ] {
        assert_eq!(alert_kind(key), kind, "{key}");
    }
}
