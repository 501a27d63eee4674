//! Integration tests: the store and `cordon audit verify`, through the real binary.
//!
//! The store is populated through the library, dropped, then checked by the `cordon`
//! binary in a new process. Tampering opens the file with the `redb` crate directly, as
//! someone with access to the file would, using the documented table names and types.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, TimeZone, Utc};
use cordon::domain::incident::{Event, IncidentId, NewIncident, State};
use cordon::domain::schedule::{Schedule, Timer, TimerKind};
use cordon::store::{RoomRecord, RoomStatus, Store};
use redb::{ReadableTable, TableDefinition};
use serde_json::json;

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn t(min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 14, min, 0)
        .single()
        .unwrap()
}

/// `cordon <command> --store <dir> <args>`.
fn offline(command: &[&str], dir: &Path, args: &[&str]) -> Output {
    Command::new(crate::support::cordon_bin())
        .args(command)
        .arg("--store")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn verify(dir: &Path) -> Output {
    offline(&["audit", "verify"], dir, &[])
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Declares an incident, provisions it, records a room and a timer, and adds plain
/// entries: 2 + `extra` audit entries in all.
fn populate(dir: &Path, extra: u32) -> IncidentId {
    let store = Store::open(dir).unwrap();
    let mut draws = 7u64..;
    let incident = store
        .create_incident(
            NewIncident {
                playbook: "mass-casualty".into(),
                display_name: "Tram crash Addiscombe".into(),
                control_room: "!control:nhs.example".into(),
                commander: "@ic:nhs.example".into(),
                expires_at: t(50),
                exercise: false,
            },
            &mut || draws.next().unwrap_or(0),
            "@ic:nhs.example",
            t(0),
        )
        .unwrap();
    store
        .apply(&incident.id, Event::Provisioned, "cordon", t(1))
        .unwrap();
    store
        .upsert_room(&RoomRecord {
            incident: incident.id.clone(),
            key: "command".into(),
            room_id: Some("!cmd".into()),
            desired: json!({"join_rule": "invite", "history_visibility": "invited"}),
            status: RoomStatus::Created,
            updated_at: t(1),
            delete_id: None,
            create_alias: None,
            forgotten_at: None,
        })
        .unwrap();
    store
        .put_timer(&Timer {
            id: format!("{}/expiry", incident.id),
            incident: Some(incident.id.clone()),
            kind: TimerKind::Expiry,
            schedule: Schedule::At(t(50)),
            payload: json!(null),
            last_fired: None,
        })
        .unwrap();
    for i in 0..extra {
        store
            .audit(
                "@someone:nhs.example",
                "command.refused",
                Some(&incident.id),
                json!({"reason": "unverified device", "n": i}),
                t(2),
            )
            .unwrap();
    }
    incident.id
}

fn tamper(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join("cordon.redb")).unwrap();
    let tx = db.begin_write().unwrap();
    f(&tx);
    tx.commit().unwrap();
}

#[test]
fn verify_reports_an_intact_log_with_its_entry_count() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3);
    let out = verify(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("audit log intact: 5 entries"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("head seq 5"), "{}", text(&out));
}

#[test]
fn verify_names_a_modified_entry() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3);
    tamper(dir.path(), |tx| {
        let mut audit = tx.open_table(AUDIT).unwrap();
        let mut entry: serde_json::Value =
            serde_json::from_slice(audit.get(3).unwrap().unwrap().value()).unwrap();
        entry["actor"] = json!("@innocent:nhs.example");
        audit
            .insert(3, serde_json::to_vec(&entry).unwrap().as_slice())
            .unwrap();
    });
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("NOT intact"), "{}", text(&out));
    assert!(stdout.contains("seq 3: entry modified"), "{}", text(&out));
}

#[test]
fn verify_names_a_removed_middle_entry() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3);
    tamper(dir.path(), |tx| {
        tx.open_table(AUDIT).unwrap().remove(2).unwrap();
    });
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("seq 2: entry removed"),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_detects_a_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3);
    tamper(dir.path(), |tx| {
        tx.open_table(AUDIT).unwrap().remove(5).unwrap();
    });
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4 entries"), "{}", text(&out));
    assert!(stdout.contains("seq 5:"), "{}", text(&out));
    assert!(stdout.contains("truncated"), "{}", text(&out));
}

#[test]
fn verify_detects_a_rewritten_head() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 1);
    tamper(dir.path(), |tx| {
        let mut meta = tx.open_table(META).unwrap();
        let head = json!({"seq": 9, "hash": "00"});
        meta.insert("audit_head", serde_json::to_vec(&head).unwrap().as_slice())
            .unwrap();
    });
    let out = verify(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("seq 9:"),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_refuses_a_missing_store_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-state");
    let out = verify(&missing);
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no state directory"), "{}", text(&out));
    assert!(!missing.exists());

    // An existing directory without a store: refused, and still empty.
    let out = verify(dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no store"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn verify_refuses_a_damaged_store_file_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cordon.redb");
    std::fs::write(&path, b"this is not a database").unwrap();
    let out = verify(dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("damaged"), "{}", text(&out));
    assert!(stderr.contains("backup"), "{}", text(&out));
    assert_eq!(std::fs::read(&path).unwrap(), b"this is not a database");
}

#[test]
fn a_new_process_keeps_incidents_rooms_and_timers() {
    let dir = tempfile::tempdir().unwrap();
    let id = populate(dir.path(), 0);
    // A new process opens the store (with its integrity check) and verifies it.
    let out = verify(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 entries"),
        "{}",
        text(&out)
    );
    let store = Store::open_existing(dir.path()).unwrap();
    let incident = store.incident(&id).unwrap().unwrap();
    assert_eq!(incident.state, State::Active);
    assert_eq!(incident.display_name, "Tram crash Addiscombe");
    assert_eq!(incident.expires_at, t(50));
    let rooms = store.rooms(&id).unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].room_id.as_deref(), Some("!cmd"));
    let timers = store.timers_for(&id).unwrap();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].schedule, Schedule::At(t(50)));
    assert_eq!(store.audit_entries(.., Some(&id)).unwrap().len(), 2);
}

fn export(dir: &Path, args: &[&str]) -> Output {
    offline(&["audit", "export"], dir, args)
}

#[test]
fn export_writes_every_entry_as_csv_or_json_lines_with_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let id = populate(dir.path(), 3);
    let csv = export(dir.path(), &[]);
    assert!(csv.status.success(), "{}", text(&csv));
    let body = String::from_utf8(csv.stdout.clone()).unwrap();
    let rows: Vec<&str> = body.split_terminator("\r\n").collect();
    assert_eq!(rows[0], "seq,at,actor,action,incident,details,prev,hash");
    assert_eq!(rows.len(), 1 + 5, "{body}");
    assert!(rows[1].starts_with("1,2026-03-01T14:00:00.000Z,@ic:nhs.example,"));
    assert!(String::from_utf8_lossy(&csv.stderr).contains("hash chain intact"));

    let jsonl = export(
        dir.path(),
        &["--format", "jsonl", "--incident", id.as_str()],
    );
    assert!(jsonl.status.success(), "{}", text(&jsonl));
    let lines: Vec<serde_json::Value> = String::from_utf8(jsonl.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    // Each line's `prev` is the previous line's `hash`: the chain can be re-checked.
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
    assert_eq!(lines[4]["details"]["reason"], "unverified device");

    // A time window: the refusals were at 14:02.
    let window = export(
        dir.path(),
        &[
            "--format",
            "jsonl",
            "--since",
            "2026-03-01T14:02:00Z",
            "--until",
            "2026-03-01T14:03:00Z",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&window.stdout).lines().count(), 3);
}

#[test]
fn export_to_a_file_never_overwrites_and_bad_arguments_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 1);
    let file = dir.path().join("audit.csv");
    let first = export(dir.path(), &["--out", file.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first));
    let written = std::fs::read(&file).unwrap();
    assert!(written.starts_with(b"seq,at,"));
    let again = export(dir.path(), &["--out", file.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("never overwritten"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::read(&file).unwrap(), written);

    for args in [
        &["--incident", "not an id"][..],
        &["--since", "yesterday"][..],
        &[
            "--since",
            "2026-03-02T00:00:00Z",
            "--until",
            "2026-03-01T00:00:00Z",
        ][..],
        &["--format", "xml"][..],
    ] {
        let out = export(dir.path(), args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out));
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn export_of_a_tampered_log_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3);
    tamper(dir.path(), |tx| {
        let mut audit = tx.open_table(AUDIT).unwrap();
        audit.remove(3).unwrap();
    });
    let out = export(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hash chain is broken"),
        "{}",
        text(&out)
    );
    // What the store holds is still written out, for the investigation.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1 + 4);
}

fn status(dir: &Path, args: &[&str]) -> Output {
    offline(&["status"], dir, args)
}

#[test]
fn status_reads_the_store_without_the_bot() {
    let dir = tempfile::tempdir().unwrap();
    let id = populate(dir.path(), 0);
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .apply(
                &id,
                Event::HoldSet {
                    reason: "Inquest 2026/7".into(),
                    by: "@ro:nhs.example".into(),
                },
                "@ro:nhs.example",
                t(3),
            )
            .unwrap();
    }
    let out = status(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    for expected in [
        format!(
            "{}  active  \"Tram crash Addiscombe\"  playbook mass-casualty",
            id.as_str()
        ),
        "commander @ic:nhs.example".to_owned(),
        "expires 2026-03-01T14:50:00Z (now (past due))".to_owned(),
        "LEGAL HOLD since 2026-03-01T14:03:00Z by @ro:nhs.example: Inquest 2026/7".to_owned(),
        "rooms: 1 created".to_owned(),
        format!("timer {}/expiry at 2026-03-01T14:50:00Z", id.as_str()),
    ] {
        assert!(report.contains(&expected), "{expected:?} in:\n{report}");
    }

    // Given the bot's state directory, the store inside it is read.
    let state = tempfile::tempdir().unwrap();
    let id = populate(&state.path().join("store"), 0);
    let out = status(state.path(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(id.as_str()));
}

#[test]
fn status_refuses_a_missing_store_and_a_store_the_bot_holds() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = status(&missing, &[]);
    assert!(!out.status.success());
    assert!(!missing.exists(), "status created a store");

    populate(dir.path(), 0);
    let held = Store::open(dir.path()).unwrap();
    let out = status(dir.path(), &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop the bot first"),
        "{}",
        text(&out)
    );
    drop(held);
}
