//! Store unit tests: persistence, refusal of damaged files, and audit tamper detection
//! done by writing to the redb tables directly.

use std::fs;
use std::path::Path;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use redb::{ReadableTable, TableDefinition};
use serde_json::json;

use super::*;
use crate::domain::incident::{ArchiveInfo, Event, Incident, NewIncident, State};
use crate::domain::schedule::{Schedule, Timer, TimerKind};

fn t(min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).single().unwrap() + TimeDelta::minutes(min.into())
}

fn counter() -> impl FnMut() -> u64 {
    let mut n = 0;
    move || {
        n += 1;
        n
    }
}

fn declare(store: &Store, playbook: &str, room: &str) -> Incident {
    store
        .create_incident(
            NewIncident {
                playbook: playbook.into(),
                display_name: "Tram crash Addiscombe".into(),
                control_room: room.into(),
                commander: "@ic:nhs.example".into(),
                expires_at: t(50),
                exercise: false,
            },
            &mut counter(),
            "@ic:nhs.example",
            t(0),
        )
        .unwrap()
}

/// A store with `n` audit entries: a declaration, then plain entries.
fn store_with_entries(dir: &Path, n: u64) -> Store {
    let store = Store::open(dir).unwrap();
    let incident = declare(&store, "mass-casualty", "!ctl");
    for i in 1..n {
        store
            .audit(
                "cordon",
                "test.entry",
                Some(&incident.id),
                json!({ "i": i, "z": [1, 2.5, "x\n\"y\""], "a": null }),
                t(1),
            )
            .unwrap();
    }
    store
}

/// Opens the raw file as an attacker would and runs `f` in one write transaction.
fn tamper(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join(FILE_NAME)).unwrap();
    let tx = db.begin_write().unwrap();
    f(&tx);
    tx.commit().unwrap();
}

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn raw_entry(tx: &redb::WriteTransaction, seq: u64) -> serde_json::Value {
    let table = tx.open_table(AUDIT).unwrap();
    let bytes = table.get(seq).unwrap().unwrap();
    serde_json::from_slice(bytes.value()).unwrap()
}

fn put_entry(tx: &redb::WriteTransaction, seq: u64, v: &serde_json::Value) {
    let mut table = tx.open_table(AUDIT).unwrap();
    table
        .insert(seq, serde_json::to_vec(v).unwrap().as_slice())
        .unwrap();
}

fn verify(dir: &Path) -> AuditReport {
    Store::open_existing(dir).unwrap().verify_audit().unwrap()
}

#[test]
fn new_store_has_schema_version_and_an_intact_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::open(&state).unwrap();
    let report = store.verify_audit().unwrap();
    assert!(report.is_intact());
    assert_eq!(report.entries, 0);
    assert_eq!(store.audit_head().unwrap(), None);
    assert!(!state.join(NEW_FILE_NAME).exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let mode = fs::metadata(state.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "store file readable by others: {mode:o}");
    }
    drop(store);
    tamper(&state, |tx| {
        let meta = tx.open_table(META).unwrap();
        let v = meta.get("schema_version").unwrap().unwrap();
        assert_eq!(v.value(), b"1");
    });
}

#[test]
fn open_existing_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Store::open_existing(&missing).unwrap_err();
    assert!(matches!(err, StoreError::NoStateDir { .. }), "{err}");
    assert!(!missing.exists());
    let err = Store::open_existing(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::NoStore { .. }), "{err}");
    assert!(err.to_string().contains("cordon.redb"), "{err}");
    assert!(!dir.path().join(FILE_NAME).exists());
}

#[test]
fn a_leftover_half_created_store_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(NEW_FILE_NAME), b"half").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.verify_audit().unwrap().is_intact());
    assert!(!dir.path().join(NEW_FILE_NAME).exists());
}

#[test]
fn second_open_while_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
}

#[test]
fn reopen_after_drop_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (id, head) = {
        let store = Store::open(dir.path()).unwrap();
        let inc = declare(&store, "mass-casualty", "!ctl");
        store
            .apply(&inc.id, Event::Provisioned, "cordon", t(2))
            .unwrap();
        store
            .upsert_room(&RoomRecord {
                incident: inc.id.clone(),
                key: "command".into(),
                room_id: Some("!abc".into()),
                desired: json!({"join_rule": "invite"}),
                status: RoomStatus::Created,
                updated_at: t(2),
                delete_id: None,
                create_alias: None,
                forgotten_at: None,
            })
            .unwrap();
        store
            .put_timer(&Timer {
                id: format!("{}/expiry", inc.id),
                incident: Some(inc.id.clone()),
                kind: TimerKind::Expiry,
                schedule: Schedule::At(t(50)),
                payload: json!(null),
                last_fired: None,
            })
            .unwrap();
        assert!(store.mark_processed("$ev1", t(2)).unwrap());
        store
            .outbox_put("k1", Some(&inc.id), send("!abc"), t(3))
            .unwrap();
        (inc.id, store.audit_head().unwrap().unwrap())
    };
    let store = Store::open(dir.path()).unwrap();
    let inc = store.incident(&id).unwrap().unwrap();
    assert_eq!(inc.state, State::Active);
    assert_eq!(inc.playbook, "mass-casualty");
    let room = store.room(&id, "command").unwrap().unwrap();
    assert_eq!(room.room_id.as_deref(), Some("!abc"));
    assert_eq!(store.timers_for(&id).unwrap().len(), 1);
    assert!(!store.mark_processed("$ev1", t(9)).unwrap());
    assert_eq!(store.outbox_pending().unwrap().len(), 1);
    assert_eq!(store.audit_head().unwrap(), Some(head.clone()));
    assert_eq!(head.seq, 2);
    let report = store.verify_audit().unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries, 2);
}

#[test]
fn garbage_file_is_refused_with_restore_instructions() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(FILE_NAME), vec![0x5a; 20_000]).unwrap();
    for result in [Store::open(dir.path()), Store::open_existing(dir.path())] {
        let err = result.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("backup") && msg.contains("do not delete"),
            "{msg}"
        );
    }
    // Nothing was reset: the garbage is still there.
    assert_eq!(
        fs::read(dir.path().join(FILE_NAME)).unwrap(),
        vec![0x5a; 20_000]
    );
}

#[test]
fn truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    for len in [0, 100, 4096, full.len() / 2, full.len() - 1] {
        fs::write(&path, &full[..len]).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "len {len}: {err}"
        );
        assert!(err.to_string().contains("backup"), "{err}");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len as u64,
            "file was changed"
        );
    }
}

/// A full disk: the write that meets it fails and is not recorded, the store reports
/// itself unusable (naming the file and the cause, once), and the last complete commit
/// is what the next open finds. While the disk stays full, an open is refused and
/// leaves the file as it was.
#[test]
fn a_full_disk_fails_the_write_keeps_the_last_commit_and_refuses_to_open_until_freed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let store = Store::open_with_full_disk(dir.path(), full.clone()).unwrap();
    let incident = declare(&store, "mass-casualty", "!ctl");
    assert!(store.unusable().is_none());

    full.store(true, Ordering::SeqCst);
    let big = "x".repeat(256 * 1024);
    let lost = store.audit(
        "cordon",
        "test.lost",
        Some(&incident.id),
        json!({ "big": big }),
        t(1),
    );
    assert!(lost.is_err(), "a write on a full disk succeeded");
    let err = store.unusable().expect("the store knows it failed");
    let text = err.to_string();
    assert!(text.contains("No space left on device"), "{text}");
    assert!(
        text.contains(FILE_NAME) && text.contains("Free space"),
        "{text}"
    );
    // Whoever waits for the failure hears of it.
    let heard = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.failed());
    assert!(matches!(heard, StoreError::Unusable { .. }), "{heard}");
    // Nothing after the failure is written either (redb latches it).
    assert!(store.probe_write(t(2)).is_err());
    drop(store);

    // While the disk stays full, an open is refused and changes nothing.
    let path = dir.path().join(FILE_NAME);
    let before = fs::read(&path).unwrap();
    let refused = Store::open_file(path.clone(), backend::Fault::Flag(full.clone()));
    assert!(
        matches!(refused, Err(StoreError::Unusable { .. })),
        "{refused:?}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a refused open changed the file"
    );

    full.store(false, Ordering::SeqCst);
    let store = Store::open_with_full_disk(dir.path(), full).unwrap();
    let entries = store.audit_entries(.., Some(&incident.id)).unwrap();
    assert!(
        entries.iter().all(|e| e.action != "test.lost"),
        "{entries:?}"
    );
    assert_eq!(
        store.incident(&incident.id).unwrap().unwrap().state,
        State::Provisioning
    );
    assert!(store.verify_audit().unwrap().is_intact());
    store.probe_write(t(3)).unwrap();
}

#[test]
fn damaged_pages_are_refused_not_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 3));
    let path = dir.path().join(FILE_NAME);
    let full = fs::read(&path).unwrap();
    // Flip bytes throughout the file after the header page.
    let mut refused = 0;
    let mut opened_intact = 0;
    for offset in (4096..full.len()).step_by(4096) {
        let mut bytes = full.clone();
        for b in &mut bytes[offset..(offset + 64).min(full.len())] {
            *b ^= 0xff;
        }
        fs::write(&path, &bytes).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Corrupt { .. }) => refused += 1,
            Err(other) => panic!("offset {offset}: unexpected error {other}"),
            Ok(store) => {
                // A page no committed tree uses: everything must still be there.
                let report = store.verify_audit().unwrap();
                assert!(report.is_intact(), "offset {offset}: {report}");
                assert_eq!(report.entries, 3, "offset {offset}: silently rolled back");
                opened_intact += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "no damage was detected ({opened_intact} opened)"
    );
}

#[test]
fn newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    tamper(dir.path(), |tx| {
        let mut meta = tx.open_table(META).unwrap();
        meta.insert("schema_version", b"2".as_slice()).unwrap();
    });
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("newer cordon"), "{err}");
}

#[test]
fn store_without_meta_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(redb::Database::create(dir.path().join(FILE_NAME)).unwrap());
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("meta"), "{err}");
}

#[test]
fn a_table_of_the_wrong_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    tamper(dir.path(), |tx| {
        tx.delete_table(AUDIT).unwrap();
        let t: TableDefinition<&str, &str> = TableDefinition::new("audit");
        tx.open_table(t).unwrap();
    });
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn audit_chain_links_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_entries(dir.path(), 4);
    let entries = store.audit_entries(.., None).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0].prev, GENESIS);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    for e in &entries {
        assert_eq!(e.compute_hash(), e.hash);
    }
    assert_eq!(entries[0].action, "incident.declared");
    // Details are canonical: sorted keys.
    assert_eq!(
        entries[1].details,
        r#"{"a":null,"i":1,"z":[1,2.5,"x\n\"y\""]}"#
    );
    let head = store.audit_head().unwrap().unwrap();
    assert_eq!((head.seq, &head.hash), (4, &entries[3].hash));
    assert_eq!(store.audit_entries(2..=3, None).unwrap().len(), 2);
    let report = store.verify_audit().unwrap();
    assert!(report.is_intact());
    assert_eq!(
        report.to_string(),
        format!(
            "audit log intact: 4 entries, head seq 4 sha256 {}",
            head.hash
        )
    );
}

fn assert_problem(report: &AuditReport, want: &AuditProblem) {
    assert!(!report.is_intact());
    assert!(report.problems.contains(want), "{want:?} not in {report}");
    let text = report.to_string();
    assert!(text.contains("NOT intact"), "{text}");
    assert!(text.contains(&want.to_string()), "{text}");
}

#[test]
fn modified_details_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    tamper(dir.path(), |tx| {
        let mut e = raw_entry(tx, 3);
        e["details"] = json!(r#"{"i":999}"#);
        put_entry(tx, 3, &e);
    });
    let report = verify(dir.path());
    assert_problem(&report, &AuditProblem::Modified { seq: 3 });
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.entries, 5);
}

#[test]
fn modified_entry_with_recomputed_hash_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    tamper(dir.path(), |tx| {
        let mut e: AuditEntry = serde_json::from_value(raw_entry(tx, 3)).unwrap();
        e.actor = "@someone-else:hs".into();
        e.hash = e.compute_hash();
        put_entry(tx, 3, &serde_json::to_value(&e).unwrap());
    });
    let report = verify(dir.path());
    assert_eq!(report.problems, vec![AuditProblem::BrokenLink { seq: 4 }]);
}

#[test]
fn deleted_middle_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    tamper(dir.path(), |tx| {
        tx.open_table(AUDIT).unwrap().remove(3).unwrap();
    });
    let report = verify(dir.path());
    assert_problem(&report, &AuditProblem::Missing { first: 3, last: 3 });
    assert_eq!(report.entries, 4);
    assert!(
        report.to_string().contains("seq 3: entry removed"),
        "{report}"
    );
}

#[test]
fn renumbered_entries_after_a_deletion_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    tamper(dir.path(), |tx| {
        // Delete entry 3 and shift 4, 5 down, fixing their seq fields and the head.
        let e4 = raw_entry(tx, 4);
        let e5 = raw_entry(tx, 5);
        let mut e4b = e4.clone();
        e4b["seq"] = json!(3);
        let mut e5b = e5.clone();
        e5b["seq"] = json!(4);
        put_entry(tx, 3, &e4b);
        put_entry(tx, 4, &e5b);
        tx.open_table(AUDIT).unwrap().remove(5).unwrap();
        let head = json!({"seq": 4, "hash": e5["hash"]});
        tx.open_table(META)
            .unwrap()
            .insert("audit_head", serde_json::to_vec(&head).unwrap().as_slice())
            .unwrap();
    });
    let report = verify(dir.path());
    assert_problem(&report, &AuditProblem::Modified { seq: 3 });
    assert_problem(&report, &AuditProblem::BrokenLink { seq: 3 });
}

#[test]
fn swapped_entries_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    tamper(dir.path(), |tx| {
        let e2 = raw_entry(tx, 2);
        let e4 = raw_entry(tx, 4);
        put_entry(tx, 2, &e4);
        put_entry(tx, 4, &e2);
    });
    let report = verify(dir.path());
    assert_problem(&report, &AuditProblem::Misplaced { seq: 2, claimed: 4 });
    assert_problem(&report, &AuditProblem::Misplaced { seq: 4, claimed: 2 });
    assert_problem(&report, &AuditProblem::BrokenLink { seq: 2 });
}

#[test]
fn inserted_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 3));
    tamper(dir.path(), |tx| {
        // A well-formed entry appended after the head, correctly chained.
        let last: AuditEntry = serde_json::from_value(raw_entry(tx, 3)).unwrap();
        let mut forged = last.clone();
        forged.seq = 4;
        forged.prev = last.hash.clone();
        forged.action = "incident.hold-released".into();
        forged.hash = forged.compute_hash();
        put_entry(tx, 4, &serde_json::to_value(&forged).unwrap());
        // And one at key 0.
        put_entry(tx, 0, &serde_json::to_value(&last).unwrap());
    });
    let report = verify(dir.path());
    assert_problem(
        &report,
        &AuditProblem::BeyondHead {
            head_seq: 3,
            last_seq: 4,
        },
    );
    assert_problem(&report, &AuditProblem::Unexpected { seq: 0 });
}

#[test]
fn deleted_last_entry_is_detected_by_the_head() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 5));
    tamper(dir.path(), |tx| {
        tx.open_table(AUDIT).unwrap().remove(5).unwrap();
    });
    let report = verify(dir.path());
    assert_eq!(
        report.problems,
        vec![AuditProblem::TailMissing {
            head_seq: 5,
            last_seq: 4
        }]
    );
    // The bot keeps appending after the head, so the gap stays visible.
    let store = Store::open(dir.path()).unwrap();
    let e = store
        .audit("cordon", "test.after", None, json!({}), t(5))
        .unwrap();
    assert_eq!(e.seq, 6);
    let report = store.verify_audit().unwrap();
    assert_problem(&report, &AuditProblem::Missing { first: 5, last: 5 });
}

#[test]
fn bumped_or_altered_head_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 3));
    let original = Store::open(dir.path())
        .unwrap()
        .audit_head()
        .unwrap()
        .unwrap();
    let set_head = |head: serde_json::Value| {
        tamper(dir.path(), |tx| {
            tx.open_table(META)
                .unwrap()
                .insert("audit_head", serde_json::to_vec(&head).unwrap().as_slice())
                .unwrap();
        });
    };
    set_head(json!({"seq": 4, "hash": original.hash}));
    assert_eq!(
        verify(dir.path()).problems,
        vec![AuditProblem::TailMissing {
            head_seq: 4,
            last_seq: 3
        }]
    );
    set_head(json!({"seq": 3, "hash": GENESIS}));
    assert_eq!(
        verify(dir.path()).problems,
        vec![AuditProblem::HeadHashMismatch { seq: 3 }]
    );
    set_head(json!({"seq": 2, "hash": original.hash}));
    assert_eq!(
        verify(dir.path()).problems,
        vec![AuditProblem::BeyondHead {
            head_seq: 2,
            last_seq: 3
        }]
    );
    set_head(json!("garbage"));
    assert!(matches!(
        verify(dir.path()).problems.as_slice(),
        [AuditProblem::HeadUnreadable { .. }]
    ));
}

#[test]
fn removed_head_is_reported_and_blocks_appends() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 3));
    tamper(dir.path(), |tx| {
        tx.open_table(META).unwrap().remove("audit_head").unwrap();
    });
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.verify_audit().unwrap().problems,
        vec![AuditProblem::HeadMissing { last_seq: 3 }]
    );
    let err = store
        .audit("cordon", "x", None, json!({}), t(3))
        .unwrap_err();
    assert!(matches!(err, StoreError::AuditHeadMissing), "{err}");
}

#[test]
fn unreadable_entry_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 4));
    tamper(dir.path(), |tx| {
        tx.open_table(AUDIT)
            .unwrap()
            .insert(2, b"\xff not json".as_slice())
            .unwrap();
    });
    let report = verify(dir.path());
    assert!(
        matches!(
            report.problems.as_slice(),
            [AuditProblem::Unreadable { seq: 2, .. }]
        ),
        "{report}"
    );
}

#[test]
fn wiped_log_with_head_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_entries(dir.path(), 3));
    tamper(dir.path(), |tx| {
        tx.delete_table(AUDIT).unwrap();
        tx.open_table(AUDIT).unwrap();
    });
    let report = verify(dir.path());
    assert_eq!(report.entries, 0);
    assert_eq!(
        report.problems,
        vec![AuditProblem::TailMissing {
            head_seq: 3,
            last_seq: 0
        }]
    );
}

#[test]
fn apply_writes_state_and_audit_atomically_and_refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let inc = declare(&store, "mass-casualty", "!ctl");
    assert_eq!(inc.id.as_str(), "mc-3222");
    let head = store.audit_head().unwrap();
    let err = store
        .apply(
            &inc.id,
            Event::Destroyed {
                purge_pending: false,
            },
            "@ic:hs",
            t(1),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition { .. }), "{err}");
    assert!(err.to_string().contains("provisioning"), "{err}");
    assert_eq!(store.audit_head().unwrap(), head);
    assert_eq!(store.incident(&inc.id).unwrap().unwrap(), inc);

    let (after, entry) = store
        .apply(&inc.id, Event::Provisioned, "cordon", t(2))
        .unwrap();
    assert_eq!(after.state, State::Active);
    assert_eq!(entry.action, "incident.provisioned");
    assert_eq!(entry.incident.as_ref(), Some(&inc.id));
    assert_eq!(entry.details_value()["from"], "provisioning");
    assert_eq!(entry.details_value()["to"], "active");
    assert_eq!(store.incident(&inc.id).unwrap().unwrap(), after);

    let missing = IncidentId::parse("zz-2222").unwrap();
    let err = store
        .apply(&missing, Event::Provisioned, "cordon", t(2))
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchIncident(_)), "{err}");
}

#[test]
fn full_lifecycle_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = declare(&store, "mass-casualty", "!ctl").id;
    let steps = [
        Event::Failed {
            reason: "createRoom 500".into(),
        },
        Event::Retry,
        Event::Provisioned,
        Event::Extended { new_expiry: t(55) },
        Event::StandDown {
            by: "@ic:hs".into(),
        },
        Event::Archived(ArchiveInfo {
            sha256: "00".into(),
            location: "x.age".into(),
            keep_until: t(58),
            contents: None,
        }),
        Event::HoldSet {
            reason: "inquest".into(),
            by: "@ro:hs".into(),
        },
        Event::HoldReleased {
            by: "@op:hs".into(),
        },
        Event::Destroyed {
            purge_pending: false,
        },
        Event::Closed,
    ];
    for (i, event) in steps.into_iter().enumerate() {
        store.apply(&id, event, "cordon", t(51 + i as u32)).unwrap();
    }
    let inc = store.incident(&id).unwrap().unwrap();
    assert_eq!(inc.state, State::Closed);
    assert_eq!(inc.extended_total_secs, 300);
    let entries = store.audit_entries(.., Some(&id)).unwrap();
    assert_eq!(entries.len(), 11);
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn ids_are_unique_and_collisions_draw_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // The same counter start for each: the second must skip the first's id.
    let a = declare(&store, "mass-casualty", "!ctl");
    let b = declare(&store, "mass-casualty", "!ctl");
    assert_ne!(a.id, b.id);
    assert_eq!(b.id.as_str(), "mc-4222");
    let err = store
        .create_incident(
            NewIncident {
                playbook: "mass-casualty".into(),
                display_name: "x".into(),
                control_room: "!ctl".into(),
                commander: "@ic:hs".into(),
                expires_at: t(50),
                exercise: false,
            },
            &mut || 1,
            "@ic:hs",
            t(0),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::IdsExhausted { .. }), "{err}");
    assert_eq!(store.incidents(&IncidentFilter::all()).unwrap().len(), 2);
}

#[test]
fn incidents_filter_by_state_and_control_room() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = declare(&store, "mass-casualty", "!one");
    let b = declare(&store, "fire", "!two");
    store
        .apply(&a.id, Event::Provisioned, "cordon", t(1))
        .unwrap();
    let active = store.incidents(&IncidentFilter::active()).unwrap();
    assert_eq!(
        active.iter().map(|i| &i.id).collect::<Vec<_>>(),
        vec![&a.id]
    );
    let in_two = store
        .incidents(&IncidentFilter::open().in_control_room("!two"))
        .unwrap();
    assert_eq!(
        in_two.iter().map(|i| &i.id).collect::<Vec<_>>(),
        vec![&b.id]
    );
    assert!(
        store
            .incidents(&IncidentFilter::active().in_control_room("!two"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.incidents(&IncidentFilter::all()).unwrap().len(), 2);
}

#[test]
fn rooms_are_kept_per_incident() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = declare(&store, "mass-casualty", "!ctl");
    let b = declare(&store, "mass-casualty", "!ctl");
    let room = |inc: &IncidentId, key: &str, status| RoomRecord {
        incident: inc.clone(),
        key: key.into(),
        room_id: Some(format!("!{inc}-{key}")),
        desired: json!({}),
        status,
        updated_at: t(1),
        delete_id: None,
        create_alias: None,
        forgotten_at: None,
    };
    store
        .upsert_room(&room(&a.id, "command", RoomStatus::Planned))
        .unwrap();
    store
        .upsert_room(&room(&a.id, "ed", RoomStatus::Created))
        .unwrap();
    store
        .upsert_room(&room(&b.id, "command", RoomStatus::Created))
        .unwrap();
    store
        .upsert_room(&room(&a.id, "command", RoomStatus::Frozen))
        .unwrap();
    let rooms = store.rooms(&a.id).unwrap();
    assert_eq!(
        rooms
            .iter()
            .map(|r| (r.key.as_str(), r.status))
            .collect::<Vec<_>>(),
        vec![("command", RoomStatus::Frozen), ("ed", RoomStatus::Created)]
    );
    assert_eq!(store.rooms(&b.id).unwrap().len(), 1);
    let found = store.room_by_matrix_id(&format!("!{}-ed", a.id)).unwrap();
    assert_eq!(found.map(|r| r.key), Some("ed".to_owned()));
    let orphan = room(
        &IncidentId::parse("zz-2222").unwrap(),
        "x",
        RoomStatus::Planned,
    );
    assert!(matches!(
        store.upsert_room(&orphan),
        Err(StoreError::NoSuchIncident(_))
    ));
}

#[test]
fn timers_crud_and_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = declare(&store, "mass-casualty", "!ctl").id;
    let timer = |name: &str, schedule| Timer {
        id: format!("{id}/{name}"),
        incident: Some(id.clone()),
        kind: TimerKind::Warning,
        schedule,
        payload: json!({"before": "30m"}),
        last_fired: None,
    };
    store.put_timer(&timer("w1", Schedule::At(t(10)))).unwrap();
    store.put_timer(&timer("w2", Schedule::At(t(20)))).unwrap();
    store
        .put_timer(&timer(
            "r",
            Schedule::Cron {
                expr: "0 */30 * * * *".into(),
                tz: "Europe/London".into(),
            },
        ))
        .unwrap();
    store
        .put_timer(&Timer {
            incident: None,
            ..timer("global-sweep", Schedule::At(t(5)))
        })
        .unwrap();
    assert_eq!(store.timers().unwrap().len(), 4);
    assert_eq!(store.timers_for(&id).unwrap().len(), 3);
    let due: Vec<String> = store
        .due_timers(t(15))
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(due.len(), 2, "{due:?}");
    assert!(store.mark_timer_fired(&format!("{id}/w1"), t(15)).unwrap());
    assert!(!store.mark_timer_fired("nope", t(15)).unwrap());
    assert_eq!(store.due_timers(t(15)).unwrap().len(), 1);
    assert_eq!(
        store
            .timer(&format!("{id}/w1"))
            .unwrap()
            .unwrap()
            .last_fired,
        Some(t(15))
    );
    assert!(store.remove_timer(&format!("{id}/w2")).unwrap());
    assert!(!store.remove_timer(&format!("{id}/w2")).unwrap());
    assert_eq!(store.remove_timers_for(&id).unwrap(), 2);
    assert_eq!(store.timers().unwrap().len(), 1);
}

fn cron_timer(id: &IncidentId) -> Timer {
    Timer {
        id: format!("{id}/reminder"),
        incident: Some(id.clone()),
        kind: TimerKind::Reminder,
        schedule: Schedule::Cron {
            expr: "*/30 * * * *".into(),
            tz: "Europe/London".into(),
        },
        payload: json!({"room": "command"}),
        last_fired: None,
    }
}

#[test]
fn arming_again_keeps_the_record_and_a_changed_timer_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = declare(&store, "mass-casualty", "!ctl").id;
    let timer = cron_timer(&id);
    assert!(store.arm_timer(&timer, t(0)).unwrap());
    assert!(store.mark_timer_fired(&timer.id, t(30)).unwrap());
    store
        .record_timer_failure(&timer.id, "send failed", t(61), true)
        .unwrap();
    // A restart arms the same timer again: nothing is reset.
    assert!(!store.arm_timer(&timer, t(40)).unwrap());
    let (kept, state) = store.timer_entry(&timer.id).unwrap().unwrap();
    assert_eq!(kept.last_fired, Some(t(30)));
    assert_eq!((state.armed_at, state.attempts), (Some(t(0)), 1));
    // A different schedule is a new timer.
    let changed = Timer {
        schedule: Schedule::At(t(90)),
        ..timer.clone()
    };
    assert!(store.arm_timer(&changed, t(41)).unwrap());
    let (kept, state) = store.timer_entry(&timer.id).unwrap().unwrap();
    assert_eq!(kept, changed);
    assert_eq!(
        state,
        crate::domain::schedule::TimerState {
            armed_at: Some(t(41)),
            ..Default::default()
        }
    );
}

#[test]
fn failures_count_up_and_firing_clears_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = declare(&store, "mass-casualty", "!ctl").id;
    let timer = cron_timer(&id);
    store.arm_timer(&timer, t(0)).unwrap();
    let first = store
        .record_timer_failure(&timer.id, "homeserver unreachable", t(1), true)
        .unwrap()
        .unwrap();
    assert_eq!((first.attempts, first.retry_at), (1, Some(t(1))));
    let long = "x".repeat(2000);
    let second = store
        .record_timer_failure(&timer.id, &long, t(2), true)
        .unwrap()
        .unwrap();
    assert_eq!((second.attempts, second.retry_at), (2, Some(t(2))));
    assert_eq!(second.last_error.map(|e| e.len()), Some(500));
    assert_eq!(
        store.record_timer_failure("nope", "x", t(2), true).unwrap(),
        None
    );
    // A failure that does not count is an attempt (for the backoff), not a strike.
    let third = store
        .record_timer_failure(&timer.id, "homeserver down", t(3), false)
        .unwrap()
        .unwrap();
    assert_eq!((third.attempts, third.strikes), (3, 2));
    // Survives a reopen.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let kept = store.timer_entry(&timer.id).unwrap().unwrap().1;
    assert_eq!((kept.attempts, kept.strikes), (3, 2));
    assert!(store.mark_timer_fired(&timer.id, t(30)).unwrap());
    let (fired, state) = store.timer_entry(&timer.id).unwrap().unwrap();
    assert_eq!(fired.last_fired, Some(t(30)));
    assert_eq!(
        (
            state.attempts,
            state.strikes,
            state.retry_at,
            state.last_error
        ),
        (0, 0, None, None)
    );
    assert_eq!(
        state.armed_at,
        Some(t(0)),
        "firing keeps the rest of the state"
    );
}

#[test]
fn a_skipped_firing_is_recorded_audited_and_no_longer_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = declare(&store, "mass-casualty", "!ctl").id;
    let warning = Timer {
        id: format!("{id}/warn-30m"),
        incident: Some(id.clone()),
        kind: TimerKind::Warning,
        schedule: Schedule::At(t(20)),
        payload: json!({"deadline": t(50)}),
        last_fired: None,
    };
    store.arm_timer(&warning, t(0)).unwrap();
    assert_eq!(store.due_timers(t(60)).unwrap().len(), 1);
    let head = store.audit_head().unwrap().unwrap();
    assert!(
        store
            .skip_timer(&warning.id, t(20), "deadline passed", t(60))
            .unwrap()
    );
    assert!(!store.skip_timer("nope", t(20), "x", t(60)).unwrap());
    assert!(store.due_timers(t(60)).unwrap().is_empty());
    let (_, state) = store.timer_entry(&warning.id).unwrap().unwrap();
    assert_eq!(state.last_skipped, Some(t(20)));
    let entries = store.audit_entries(head.seq + 1.., Some(&id)).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].action, "timer.skipped");
    let details: serde_json::Value = serde_json::from_str(&entries[0].details).unwrap();
    assert_eq!(details["timer"], json!(warning.id));
    assert_eq!(details["kind"], json!("warning"));
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn a_timer_stored_before_the_scheduler_state_existed_still_decodes() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let old = json!({
        "id": "mc-1/expiry",
        "incident": "mc-1",
        "kind": "expiry",
        "schedule": {"at": t(50)},
        "payload": null,
        "last_fired": null,
    });
    tamper(dir.path(), |tx| {
        let mut timers = tx.open_table(tables::TIMERS).unwrap();
        timers
            .insert("mc-1/expiry", serde_json::to_vec(&old).unwrap().as_slice())
            .unwrap();
    });
    let store = Store::open(dir.path()).unwrap();
    let (timer, state) = store.timer_entry("mc-1/expiry").unwrap().unwrap();
    assert_eq!(timer.schedule, Schedule::At(t(50)));
    assert_eq!(state, crate::domain::schedule::TimerState::default());
    assert!(store.adopt_timer("mc-1/expiry", t(1)).unwrap());
    assert!(store.adopt_timer("mc-1/expiry", t(2)).unwrap());
    let (timer, state) = store.timer_entry("mc-1/expiry").unwrap().unwrap();
    assert_eq!(state.armed_at, Some(t(1)), "adopting twice keeps the first");
    assert_eq!(store.timer("mc-1/expiry").unwrap(), Some(timer));
}

/// A timer's state written before failures were told apart from strikes (a stand-down
/// retrying when this build starts) decodes with no strike and keeps its attempts.
#[test]
fn a_timer_state_stored_before_strikes_existed_still_decodes() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let old = json!({
        "id": "mc-1/standdown",
        "incident": "mc-1",
        "kind": {"other": "standdown"},
        "schedule": {"at": t(50)},
        "payload": {},
        "last_fired": null,
        "state": {
            "armed_at": t(50),
            "attempts": 2,
            "retry_at": t(70),
            "last_error": "homeserver unreachable",
            "last_skipped": null,
        },
    });
    tamper(dir.path(), |tx| {
        let mut timers = tx.open_table(tables::TIMERS).unwrap();
        timers
            .insert(
                "mc-1/standdown",
                serde_json::to_vec(&old).unwrap().as_slice(),
            )
            .unwrap();
    });
    let store = Store::open(dir.path()).unwrap();
    let (_, state) = store.timer_entry("mc-1/standdown").unwrap().unwrap();
    assert_eq!(
        (state.attempts, state.strikes, state.retry_at),
        (2, 0, Some(t(70)))
    );
}

#[test]
fn processed_events_are_marked_once_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.mark_processed("$a", t(1)).unwrap());
    assert!(!store.mark_processed("$a", t(2)).unwrap());
    assert!(store.mark_processed("$b", t(5)).unwrap());
    assert!(store.is_processed("$a").unwrap());
    assert_eq!(store.prune_processed_before(t(5)).unwrap(), 1);
    assert!(!store.is_processed("$a").unwrap());
    assert!(store.is_processed("$b").unwrap());
}

/// A message send to `room`, the simplest outbox effect.
fn send(room: &str) -> Effect {
    Effect::Send {
        room: room.to_owned(),
    }
}

#[test]
fn outbox_effects_keep_the_stored_shape_of_kind_and_payload() {
    // Each effect as entries have always been stored: `kind` and `payload` beside the
    // entry's other fields. An entry written before the effects were typed reads back
    // as its effect, and writing it again gives the same JSON.
    let shapes = [
        (
            json!({ "kind": "send", "payload": { "room": "!r:hs" } }),
            send("!r:hs"),
        ),
        (
            json!({ "kind": "invite", "payload": { "room": "!r:hs", "user": "@a:hs", "roles": ["medic"] } }),
            Effect::Invite {
                room: "!r:hs".into(),
                user: "@a:hs".into(),
                roles: vec!["medic".into()],
            },
        ),
        (
            json!({ "kind": "roster-invite", "payload": { "room": "!r:hs", "user": "@a:hs", "reason": "added" } }),
            Effect::RosterInvite {
                room: "!r:hs".into(),
                user: "@a:hs".into(),
                reason: "added".into(),
            },
        ),
        (
            json!({ "kind": "guard-readmit", "payload": { "room": "!r:hs", "user": "@a:hs", "reason": "back" } }),
            Effect::GuardReadmit {
                room: "!r:hs".into(),
                user: "@a:hs".into(),
                reason: "back".into(),
            },
        ),
        (
            json!({ "kind": "guard-alert", "payload": { "body": "ALERT", "mentions": ["@c:hs"], "rooms": ["!r:hs"] } }),
            Effect::GuardAlert {
                body: "ALERT".into(),
                mentions: vec!["@c:hs".into()],
                rooms: vec!["!r:hs".into()],
            },
        ),
    ];
    for (shape, effect) in shapes {
        let mut stored = json!({
            "key": "k",
            "txn_id": "cordon.1.1",
            "incident": null,
            "created_at": "2026-03-01T00:00:00Z",
            "done_at": null,
            "outcome": null,
        });
        for (k, v) in shape.as_object().unwrap() {
            stored[k] = v.clone();
        }
        let entry: OutboxEntry = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(entry.effect, effect);
        assert_eq!(serde_json::to_value(&entry).unwrap(), stored);
    }
    // A kind cordon does not know, or a payload missing a field, is a bad record, not
    // a silently empty effect.
    for bad in [
        json!({ "kind": "redact", "payload": {} }),
        json!({ "kind": "roster-invite", "payload": { "room": "!r:hs", "user": "@a:hs" } }),
    ] {
        assert!(
            serde_json::from_value::<Effect>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn outbox_intents_are_idempotent_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.outbox_put("a", None, send("!one"), t(1)).unwrap();
    let again = store.outbox_put("a", None, send("!two"), t(9)).unwrap();
    assert_eq!(a, again);
    let b = store.outbox_put("b", None, send("!three"), t(2)).unwrap();
    assert_ne!(a.txn_id, b.txn_id);
    assert_eq!(
        store
            .outbox_pending()
            .unwrap()
            .iter()
            .map(|e| e.key.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let done = store
        .outbox_complete("a", Some(json!("$event")), t(3))
        .unwrap()
        .unwrap();
    assert_eq!(done.done_at, Some(t(3)));
    let twice = store.outbox_complete("a", None, t(4)).unwrap().unwrap();
    assert_eq!(twice.done_at, Some(t(3)));
    assert_eq!(twice.outcome, Some(json!("$event")));
    assert!(store.outbox_complete("zzz", None, t(4)).unwrap().is_none());
    assert_eq!(store.outbox_pending().unwrap().len(), 1);
    // A re-put after completion still returns the done entry, not a new intent.
    assert!(
        !store
            .outbox_put("a", None, send("!four"), t(5))
            .unwrap()
            .is_pending()
    );
    assert_eq!(store.outbox_prune_done_before(t(4)).unwrap(), 1);
    assert!(store.outbox_get("a").unwrap().is_none());
    let c = store.outbox_put("c", None, send("!five"), t(6)).unwrap();
    assert_ne!(c.txn_id, a.txn_id);
    assert_ne!(c.txn_id, b.txn_id);
}

mod flips {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Flipping any bit of any stored entry is either reported at that entry (or the
        /// next one, whose link it breaks) or leaves the entry's meaning unchanged (for
        /// instance `Z` and `z` in a timestamp).
        #[test]
        fn any_bit_flip_in_an_entry_is_detected_or_harmless(
            seq in 1u64..=4,
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            drop(store_with_entries(dir.path(), 4));
            let mut original: Option<AuditEntry> = None;
            tamper(dir.path(), |tx| {
                let mut table = tx.open_table(AUDIT).unwrap();
                let mut bytes = table.get(seq).unwrap().unwrap().value().to_vec();
                original = serde_json::from_slice(&bytes).ok();
                let i = pos.index(bytes.len());
                bytes[i] ^= 1 << bit;
                table.insert(seq, bytes.as_slice()).unwrap();
            });
            let report = verify(dir.path());
            if report.is_intact() {
                let store = Store::open_existing(dir.path()).unwrap();
                let now = store.audit_entries(seq..=seq, None).unwrap();
                prop_assert_eq!(now.first(), original.as_ref());
            } else {
                prop_assert!(
                    report.problems.iter().any(|p| p.seq() == seq || p.seq() == seq + 1),
                    "{}", report
                );
            }
        }
    }
}

fn advice_record(incident: &Incident, event: &str, sent: u32) -> advice::AdviceRecord {
    advice::AdviceRecord {
        incident: incident.id.clone(),
        room_key: "command".into(),
        room_id: "!r:x.org".into(),
        event_id: event.into(),
        author: "@nurse:x.org".into(),
        sent_at: t(sent),
        flagged: advice::Mark {
            by: "@lead:x.org".into(),
            at: t(sent + 1),
            via: advice::MarkedVia::Reaction,
        },
        transcribed: None,
        reminded_at: None,
        sealed: None,
    }
}

#[test]
fn advice_is_flagged_once_marked_once_and_audited_without_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let incident = declare(&store, "p", "!c:x.org");
    let other = declare(&store, "p", "!c:x.org");
    let a = advice_record(&incident, "$b", 5);
    assert!(store.flag_advice(&a).unwrap());
    assert!(
        !store.flag_advice(&a).unwrap(),
        "a second flag changes nothing"
    );
    store
        .flag_advice(&advice_record(&incident, "$a", 9))
        .unwrap();
    store.flag_advice(&advice_record(&other, "$c", 1)).unwrap();

    let list = store.advice_for(&incident.id).unwrap();
    let ids: Vec<&str> = list.iter().map(|a| a.event_id.as_str()).collect();
    assert_eq!(
        ids,
        ["$b", "$a"],
        "this incident's only, oldest message first"
    );

    let mark = advice::Mark {
        by: "@nurse2:x.org".into(),
        at: t(20),
        via: advice::MarkedVia::Command,
    };
    let done = store.mark_transcribed(&a, &mark).unwrap();
    assert!(
        matches!(done, advice::TranscribedOutcome::Marked(ref r) if r.transcribed.as_ref() == Some(&mark))
    );
    let again = store
        .mark_transcribed(
            &a,
            &advice::Mark {
                by: "@x:x.org".into(),
                ..mark.clone()
            },
        )
        .unwrap();
    assert!(
        matches!(again, advice::TranscribedOutcome::Already(ref r) if r.transcribed.as_ref().unwrap().by == "@nurse2:x.org")
    );
    assert!(
        !store
            .advice(&incident.id, "$b")
            .unwrap()
            .unwrap()
            .is_outstanding()
    );

    // Marking a message nobody flagged records it as advice, transcribed.
    let unflagged = advice_record(&incident, "$z", 30);
    store.mark_transcribed(&unflagged, &mark).unwrap();
    assert!(
        store
            .advice(&incident.id, "$z")
            .unwrap()
            .unwrap()
            .transcribed
            .is_some()
    );

    assert!(
        store
            .mark_advice_reminded(&incident.id, "$a", t(40))
            .unwrap()
    );
    assert!(
        !store
            .mark_advice_reminded(&incident.id, "$nope", t(40))
            .unwrap()
    );
    assert_eq!(
        store
            .advice(&incident.id, "$a")
            .unwrap()
            .unwrap()
            .reminded_at,
        Some(t(40))
    );

    let entries = store.audit_entries(.., Some(&incident.id)).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "advice.flagged").count(),
        2
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "advice.transcribed")
            .count(),
        2,
        "the repeated mark is not audited: {actions:?}"
    );
    let transcribed = entries
        .iter()
        .find(|e| e.action == "advice.transcribed")
        .unwrap();
    assert_eq!(transcribed.actor, "@nurse2:x.org");
    assert_eq!(transcribed.details_value()["event"], "$b");
}

#[test]
fn a_reaction_mark_stays_outstanding_until_a_command_confirms_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let incident = declare(&store, "p", "!c:x.org");
    let a = advice_record(&incident, "$r", 5);
    store.flag_advice(&a).unwrap();
    let by_reaction = advice::Mark {
        by: "@nurse2:x.org".into(),
        at: t(20),
        via: advice::MarkedVia::Reaction,
    };
    assert!(matches!(
        store.mark_transcribed(&a, &by_reaction).unwrap(),
        advice::TranscribedOutcome::Marked(_)
    ));
    let record = store.advice(&incident.id, "$r").unwrap().unwrap();
    assert!(record.is_outstanding(), "a ✅ alone confirms nothing");
    assert_eq!(record.unconfirmed(), Some(&by_reaction));
    assert!(matches!(
        store.mark_transcribed(&a, &by_reaction).unwrap(),
        advice::TranscribedOutcome::Already(_)
    ));

    let by_command = advice::Mark {
        by: "@nurse2:x.org".into(),
        at: t(30),
        via: advice::MarkedVia::Command,
    };
    assert!(matches!(
        store.mark_transcribed(&a, &by_command).unwrap(),
        advice::TranscribedOutcome::Marked(_)
    ));
    let record = store.advice(&incident.id, "$r").unwrap().unwrap();
    assert!(!record.is_outstanding());
    assert!(record.is_confirmed());
    assert_eq!(record.unconfirmed(), None);
    // A later ✅ does not turn a confirmed mark back into an unconfirmed one.
    assert!(matches!(
        store.mark_transcribed(&a, &by_reaction).unwrap(),
        advice::TranscribedOutcome::Already(_)
    ));
    assert!(
        store
            .advice(&incident.id, "$r")
            .unwrap()
            .unwrap()
            .is_confirmed()
    );

    let actions: Vec<String> = store
        .audit_entries(.., Some(&incident.id))
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "advice.transcribed-unconfirmed")
            .count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "advice.transcribed")
            .count(),
        1,
        "{actions:?}"
    );
}

#[test]
fn advice_is_sealed_again_with_a_patient_and_the_replaced_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let incident = declare(&store, "p", "!c:x.org");
    let sealed = |file: &str, patient: bool| advice::SealedRef {
        file: file.into(),
        sha256: "a".repeat(64),
        bytes: 10,
        content_sha256: "b".repeat(64),
        patient,
    };
    let mut a = advice_record(&incident, "$a", 10);
    a.sealed = Some(sealed("i/advice/one.json.age", false));
    assert!(store.flag_advice(&a).unwrap());
    let again = store
        .reseal_advice(
            &incident.id,
            "$a",
            &sealed("i/advice/two.json.age", true),
            "@lead:x.org",
            t(20),
        )
        .unwrap();
    assert_eq!(
        again,
        advice::Resealed::Replaced(Some("i/advice/one.json.age".into()))
    );
    let now = store.advice(&incident.id, "$a").unwrap().unwrap();
    assert_eq!(now.sealed, Some(sealed("i/advice/two.json.age", true)));
    assert_eq!(
        store
            .reseal_advice(&incident.id, "$b", &sealed("x", true), "@lead:x.org", t(21))
            .unwrap(),
        advice::Resealed::NotFlagged
    );
    let actions: Vec<String> = store
        .audit_entries(.., Some(&incident.id))
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "advice.patient").count(),
        1,
        "{actions:?}"
    );
}
