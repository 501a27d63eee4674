//! The decision log in the archive: each entry sealed as it was made, copied into the
//! archive verbatim by [`ArchiveWriter::add_record`], checked by [`verify_file`], and
//! decrypted by [`open_file`] into `decision-log.jsonl` and `decision-log.md`.

use chrono::DateTime;

use super::*;
use crate::archive::record::{ENTRY_VERSION, EntryKind, SealedEntry, WrittenEntry, seal_entry};

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .with_timezone(&Utc)
}

fn decision(number: u32, text: &str, decided_at: &str, logged_at: &str) -> SealedEntry {
    SealedEntry {
        v: ENTRY_VERSION,
        incident: "mc-4k7p".into(),
        kind: EntryKind::Decision,
        number,
        text: text.into(),
        because: None,
        decided_by: "@a:hs".into(),
        logged_by: "@loggist:hs".into(),
        decided_at: at(decided_at),
        logged_at: at(logged_at),
        command_room: "!command:hs".into(),
        command_event: format!("$cmd{number}"),
        source_event: None,
        corrects: None,
    }
}

/// Three decisions in July (London is on BST, UTC+1): D1 decided when logged; D2
/// decided just before midnight UTC, which is the same day in London; D3 decided the
/// day before it was logged, correcting D1. D2's text tries to forge Markdown.
fn three() -> Vec<SealedEntry> {
    let d1 = decision(
        1,
        "Divert P1 trauma to St George's",
        "2026-07-04T13:32:10Z",
        "2026-07-04T13:32:10Z",
    );
    let mut d2 = decision(
        2,
        "Open the second theatre\n### D9 \u{b7} forged\n[click](http://evil) <b>x</b>",
        "2026-07-03T23:50:00Z",
        "2026-07-04T13:40:00Z",
    );
    d2.because = Some("CT down\n- not a list".into());
    d2.decided_by = "@consultant:hs".into();
    d2.source_event = Some("$said".into());
    let mut d3 = decision(
        3,
        "Divert P1 trauma to King's instead",
        "2026-07-03T22:59:00Z",
        "2026-07-04T15:05:00Z",
    );
    d3.corrects = Some(1);
    vec![d1, d2, d3]
}

/// What the store keeps of a sealed entry: the manifest's record of it.
fn recorded(entry: &SealedEntry, written: &WrittenEntry) -> RecordManifest {
    RecordManifest {
        kind: entry.kind,
        number: entry.number,
        file: String::new(),
        sha256: written.file.sha256.clone(),
        bytes: written.file.bytes,
        content_sha256: written.content_sha256.clone(),
        decided_at: entry.decided_at,
        logged_at: entry.logged_at,
        decided_by: entry.decided_by.clone(),
        logged_by: entry.logged_by.clone(),
        corrects: entry.corrects,
        posted_event: Some(format!("$post{}", entry.number)),
    }
}

/// The sealed file's name and bytes.
fn sealed_file(state: &Path, written: &WrittenEntry) -> (String, Vec<u8>) {
    let name = Path::new(&written.file.file)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (name, fs::read(state.join(&written.file.file)).unwrap())
}

/// An archive of one room and `entries`, each sealed as the bot seals it and then
/// added (in reverse order) as the stand-down adds it; `change` may alter a record
/// before it is added.
fn seal_with(
    entries: &[SealedEntry],
    time_zone: Option<&str>,
    mut change: impl FnMut(&mut RecordManifest),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let officers = vec![
        age::x25519::Identity::generate(),
        age::x25519::Identity::generate(),
    ];
    let recipients: Vec<_> = officers.iter().map(|i| i.to_public()).collect();
    let signer = ArchiveSigner::generate();
    let state = dir.path().join("state");
    let mut w = ArchiveWriter::create(
        &dir.path().join("archive"),
        &archive_file_name("mc-4k7p"),
        &recipients,
    )
    .unwrap();
    for entry in entries.iter().rev() {
        let written = seal_entry(&state, entry, &recipients).unwrap();
        let (name, bytes) = sealed_file(&state, &written);
        let mut record = recorded(entry, &written);
        change(&mut record);
        w.add_record(record, &name, &bytes).unwrap();
    }
    w.add_room(&RoomExport {
        key: "command".into(),
        room_id: "!command:hs".into(),
        name: "Command".into(),
        lines: vec![text("command", "$t", T0, "Bed 4: 2 units O neg")],
    })
    .unwrap();
    let mut h = header();
    h.time_zone = time_zone.map(str::to_owned);
    let sealed = w.finish(h, &signer).unwrap();
    Fixture {
        dir,
        officers,
        signer,
        sealed,
    }
}

fn open(f: &Fixture, path: &Path, name: &str) -> (Opened, PathBuf) {
    let out = f.dir.path().join(name);
    let opened = open_file(path, &f.officers[1..], &f.trusted(), &out).unwrap();
    (opened, out)
}

fn log_lines(out: &Path) -> Vec<Value> {
    fs::read_to_string(out.join(DECISION_LOG_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn decisions_are_archived_verified_and_opened_into_the_decision_log_in_order() {
    let entries = three();
    let f = seal_with(&entries, Some("Europe/London"), |_| {});
    let m = &f.sealed.manifest;
    assert_eq!(m.time_zone.as_deref(), Some("Europe/London"));
    let numbers: Vec<u32> = m.record.iter().map(|r| r.number).collect();
    assert_eq!(numbers, [1, 2, 3], "sorted whatever the order added");
    for r in &m.record {
        assert!(
            r.file.starts_with(&format!("record/D{}-", r.number)) && r.file.ends_with(".json.age"),
            "{}",
            r.file
        );
    }
    let names: Vec<String> = members(f.path(), &f.officers[0])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("record/")).count(), 3);
    // The sealed bytes are copied verbatim: still encrypted, nothing readable.
    let d2 = members(f.path(), &f.officers[0])
        .into_iter()
        .find(|(n, _)| n.starts_with("record/D2-"))
        .unwrap();
    assert!(!d2.1.windows(6).any(|w| w == b"theatr"));

    let v = verify_file(f.path(), &f.officers, &f.trusted()).unwrap();
    assert_eq!(&v.manifest, m);

    let (opened, out) = open(&f, f.path(), "opened");
    assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
    // The decision log, then the debrief built from it and the rest, then the advice.
    assert_eq!(
        opened.written[opened.written.len() - 5..],
        [
            DECISION_LOG_FILE,
            DECISION_LOG_RENDERING,
            DEBRIEF_FILE,
            DEBRIEF_RENDERING,
            crate::archive::FHIR_ADVICE_FILE,
        ]
    );

    let lines = log_lines(&out);
    let labels: Vec<&str> = lines.iter().map(|l| l["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["D1", "D2", "D3"]);
    assert_eq!(lines[0]["corrected_by"], json!([3]));
    assert_eq!(lines[1]["corrected_by"], json!([]));
    assert_eq!(lines[2]["corrects"], json!(1));
    assert_eq!(lines[1]["posted_event"], json!("$post2"));
    assert_eq!(lines[1]["file"], json!(m.record[1].file));
    for (line, entry) in lines.iter().zip(&entries) {
        assert!(line.get("problems").is_none(), "{line}");
        // Every field of the sealed entry, as it was sealed.
        let mut fields = line.as_object().unwrap().clone();
        for added in ["label", "posted_event", "corrected_by", "file"] {
            assert!(fields.remove(added).is_some(), "{added}");
        }
        let read: SealedEntry = serde_json::from_value(Value::Object(fields)).unwrap();
        assert_eq!(&read, entry);
    }

    let md = fs::read_to_string(out.join(DECISION_LOG_RENDERING)).unwrap();
    assert!(
        md.starts_with("# Decision log: Tram crash &lt;Addiscombe&gt;\n"),
        "{md}"
    );
    assert!(md.contains("(mc-4k7p)"), "{md}");
    assert!(
        md.contains("Times are Europe/London, to the minute."),
        "{md}"
    );
    let d1 = md
        .find("### D1 \u{b7} 2026-07-04 14:32 Europe/London\n")
        .unwrap();
    let d2 = md
        .find("### D2 \u{b7} 2026-07-04 14:40 Europe/London\n")
        .unwrap();
    let d3 = md
        .find("### D3 \u{b7} 2026-07-04 16:05 Europe/London\n")
        .unwrap();
    assert!(d1 < d2 && d2 < d3, "{md}");
    let (s1, s2, s3) = (&md[d1..d2], &md[d2..d3], &md[d3..]);
    // Decided when logged: no second time.
    assert!(
        s1.contains("Decided by @a:hs  \nLogged by @loggist:hs"),
        "{s1}"
    );
    assert!(
        s1.contains(
            "Logged by @loggist:hs\n\nDivert P1 trauma to St George's\n\nCorrected by D3.\n"
        ),
        "{s1}"
    );
    assert!(s1.contains("Corrected by D3."), "{s1}");
    // 23:50 UTC on the 3rd is 00:50 on the 4th in London: the same day.
    assert!(s2.contains("Decided by @consultant:hs (at 00:50)"), "{s2}");
    assert!(s2.contains("Because: CT down  \n\\- not a list"), "{s2}");
    assert!(
        !s2.contains("Corrects") && !s2.contains("Corrected"),
        "{s2}"
    );
    assert!(
        s3.contains("Decided by @a:hs (at 2026-07-03 23:59)"),
        "{s3}"
    );
    assert!(s3.contains("Corrects D1."), "{s3}");
    // What a decision says cannot become structure: no forged heading, link or HTML.
    assert_eq!(md.matches("\n### ").count(), 3, "{md}");
    assert!(s2.contains("\\#\\#\\# D9"), "{s2}");
    assert!(!md.contains("[click]("), "{md}");
    assert!(!md.contains("<b>"), "{md}");
    assert!(!md.contains("**Not opened**"), "{md}");
    assert!(!md.contains("**Does not match"), "{md}");

    let index = fs::read_to_string(out.join(INDEX_FILE)).unwrap();
    assert!(index.contains("## Decision log"), "{index}");
    assert!(index.contains("3 decisions were logged"), "{index}");
    assert!(index.contains("`decision-log.md`"), "{index}");
    // cordon never holds the text: the index does not either.
    assert!(!index.contains("St George"), "{index}");
}

#[test]
fn add_record_refuses_bytes_that_are_not_the_ones_sealed_and_bad_entries() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let entry = decision(3, "x", "2026-07-04T13:32:10Z", "2026-07-04T13:32:10Z");
    let written = seal_entry(dir.path(), &entry, &[officer.to_public()]).unwrap();
    let (name, bytes) = sealed_file(dir.path(), &written);
    let mut w = ArchiveWriter::create(
        &dir.path().join("archive"),
        "x.cordon-archive.age",
        &[officer.to_public()],
    )
    .unwrap();
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let err = w
        .add_record(recorded(&entry, &written), &name, &tampered)
        .unwrap_err();
    match &err {
        ArchiveError::RecordMismatch {
            label,
            file,
            expected,
            ..
        } => {
            assert_eq!(label, "D3");
            assert_eq!(file, &name);
            assert_eq!(expected, &written.file.sha256);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("refusing to archive it"), "{err}");
    for bad_name in ["../D3.json.age", "record/D3.json.age", ".D3", ""] {
        assert!(
            matches!(
                w.add_record(recorded(&entry, &written), bad_name, &bytes),
                Err(ArchiveError::BadInput(_))
            ),
            "{bad_name:?}"
        );
    }
    let mut zero = recorded(&entry, &written);
    zero.number = 0;
    assert!(matches!(
        w.add_record(zero, &name, &bytes),
        Err(ArchiveError::BadInput(_))
    ));
    let mut not_a_hash = recorded(&entry, &written);
    not_a_hash.content_sha256 = "nope".into();
    assert!(matches!(
        w.add_record(not_a_hash, &name, &bytes),
        Err(ArchiveError::BadInput(_))
    ));
    // The genuine bytes go in once; the same number again is refused.
    w.add_record(recorded(&entry, &written), &name, &bytes)
        .unwrap();
    let err = w
        .add_record(recorded(&entry, &written), "D3-other.json.age", &bytes)
        .unwrap_err();
    assert!(err.to_string().contains("D3 was added twice"), "{err}");
}

#[test]
fn a_record_member_missing_altered_or_unlisted_fails_verification() {
    let f = seal_with(&three(), Some("Europe/London"), |_| {});
    let d2 = f.sealed.manifest.record[1].file.clone();
    let removed = edit(&f, |m| m.retain(|(n, _)| *n != d2));
    assert!(matches!(
        verify_file(&removed, &f.officers, &f.trusted()).unwrap_err(),
        ArchiveError::MissingMember(n) if n == d2
    ));
    let altered = edit(&f, |m| {
        let member = m.iter_mut().find(|(n, _)| *n == d2).unwrap();
        let last = member.1.len() - 1;
        member.1[last] ^= 0x01;
    });
    assert!(matches!(
        verify_file(&altered, &f.officers, &f.trusted()).unwrap_err(),
        ArchiveError::Tampered { file } if file == d2
    ));
    let extra = edit(&f, |m| {
        m.insert(0, ("record/D4-0.json.age".into(), b"x".to_vec()))
    });
    assert!(matches!(
        verify_file(&extra, &f.officers, &f.trusted()).unwrap_err(),
        ArchiveError::UnexpectedMember(n) if n == "record/D4-0.json.age"
    ));
    // Even validly signed, a manifest may not place an entry elsewhere or list a
    // number twice.
    let elsewhere = resigned(&f, &f.signer, |m, v| {
        let member = m.iter_mut().find(|(n, _)| *n == d2).unwrap();
        member.0 = "media/D2.json.age".into();
        v["record"][1]["file"] = json!("media/D2.json.age");
    });
    let err = verify_file(&elsewhere, &f.officers, &f.trusted()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::BadManifest { detail, .. } if detail.contains("not under record/")),
        "{err}"
    );
    let twice = resigned(&f, &f.signer, |_, v| v["record"][2]["number"] = json!(2));
    let err = verify_file(&twice, &f.officers, &f.trusted()).unwrap_err();
    assert!(
        matches!(&err, ArchiveError::BadManifest { detail, .. } if detail.contains("lists D2 twice")),
        "{err}"
    );
}

#[test]
fn an_entry_that_cannot_be_opened_or_does_not_match_is_marked_never_dropped() {
    let entries = three();
    let stranger = age::x25519::Identity::generate();
    let dir = tempfile::tempdir().unwrap();
    // D2 was sealed to someone else; D3's record names another decider and a content
    // hash that is not the one sealed.
    let foreign = seal_entry(dir.path(), &entries[1], &[stranger.to_public()]).unwrap();
    let (_, foreign_bytes) = sealed_file(dir.path(), &foreign);
    let f = seal_with(&entries, None, |r| {
        if r.number == 3 {
            r.decided_by = "@someone-else:hs".into();
            r.content_sha256 = hex::encode(Sha256::digest(b"another entry"));
        }
    });
    let d2 = f.sealed.manifest.record[1].clone();
    // Replace D2's sealed file by the foreign one, as a compromised cordon could, and
    // sign the manifest that lists it.
    let path = resigned(&f, &f.signer, |m, v| {
        let member = m.iter_mut().find(|(n, _)| *n == d2.file).unwrap();
        member.1 = foreign_bytes.clone();
        v["record"][1]["sha256"] = json!(foreign.file.sha256);
        v["record"][1]["bytes"] = json!(foreign.file.bytes);
    });
    let (opened, out) = open(&f, &path, "marked");
    assert_eq!(opened.warnings.len(), 2, "{:?}", opened.warnings);
    assert!(
        opened.warnings[0].starts_with("D2 (record/D2-")
            && opened.warnings[0].contains("not sealed to any of the identities given"),
        "{:?}",
        opened.warnings
    );
    assert!(
        opened.warnings[1].contains("@someone-else:hs") && opened.warnings[1].contains("SHA-256"),
        "{:?}",
        opened.warnings
    );

    let lines = log_lines(&out);
    assert_eq!(lines.len(), 3);
    // D2 keeps its place with cordon's record of it, and no text.
    assert_eq!(lines[1]["label"], json!("D2"));
    assert_eq!(lines[1]["text"], Value::Null);
    assert_eq!(lines[1]["decided_by"], json!("@consultant:hs"));
    assert!(lines[1].get("v").is_none());
    assert_eq!(lines[1]["problems"].as_array().unwrap().len(), 1);
    // D3 is shown as sealed, with what is wrong.
    assert_eq!(lines[2]["decided_by"], json!("@a:hs"));
    assert_eq!(lines[2]["problems"].as_array().unwrap().len(), 2);
    assert!(lines[0].get("problems").is_none());
    // D3 still corrects D1.
    assert_eq!(lines[0]["corrected_by"], json!([3]));

    let md = fs::read_to_string(out.join(DECISION_LOG_RENDERING)).unwrap();
    // No time zone in the manifest: UTC, said so.
    assert!(md.contains("Times are UTC, to the minute."), "{md}");
    let s2 = &md[md.find("### D2 \u{b7} 2026-07-04 13:40 UTC\n").unwrap()..];
    let s3 = &md[md.find("### D3 \u{b7} 2026-07-04 15:05 UTC\n").unwrap()..];
    let s2 = &s2[..s2.find("### D3").unwrap()];
    assert!(s2.contains("\u{26a0} **Not opened**"), "{s2}");
    assert!(!s2.contains("second theatre"), "{s2}");
    assert!(
        s2.contains("Decided by @consultant:hs (at 2026-07-03 23:50)"),
        "{s2}"
    );
    assert!(
        s3.contains("\u{26a0} **Does not match cordon\u{2019}s record of it**"),
        "{s3}"
    );
    assert!(s3.contains("King's instead"), "{s3}");
}

#[test]
fn an_archive_without_decisions_opens_with_an_empty_decision_log() {
    let f = seal_with(&[], Some("Europe/London"), |_| {});
    let raw = members(f.path(), &f.officers[0]);
    let manifest = &raw.iter().find(|(n, _)| n == MANIFEST_FILE).unwrap().1;
    let value: Value = serde_json::from_slice(manifest).unwrap();
    assert!(value.get("record").is_none(), "{value}");
    let (opened, out) = open(&f, f.path(), "empty");
    assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
    assert!(opened.written.iter().any(|w| w == DECISION_LOG_FILE));
    assert_eq!(fs::read(out.join(DECISION_LOG_FILE)).unwrap(), b"");
    let md = fs::read_to_string(out.join(DECISION_LOG_RENDERING)).unwrap();
    assert!(md.contains("No decisions were logged."), "{md}");
    let index = fs::read_to_string(out.join(INDEX_FILE)).unwrap();
    assert!(
        index.contains("## Decision log\n\nNo decisions were logged."),
        "{index}"
    );
}

#[test]
fn an_archive_from_before_the_record_still_verifies_and_opens() {
    let f = seal();
    // A version 2 manifest: no `record`, no `time_zone`.
    let path = resigned(&f, &f.signer, |_, v| {
        v["v"] = json!(2);
        let object = v.as_object().unwrap();
        assert!(!object.contains_key("record") && !object.contains_key("time_zone"));
    });
    let v = verify_file(&path, &f.officers, &f.trusted()).unwrap();
    assert_eq!(v.manifest.v, 2);
    assert!(v.manifest.record.is_empty() && v.manifest.time_zone.is_none());
    let (opened, out) = open(&f, &path, "v2-out");
    assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
    let md = fs::read_to_string(out.join(DECISION_LOG_RENDERING)).unwrap();
    assert!(md.contains("No decisions were logged."), "{md}");
    // A newer version is refused as one, not as an altered archive.
    let future = resigned(&f, &f.signer, |_, v| v["v"] = json!(MANIFEST_VERSION + 1));
    let err = verify_file(&future, &f.officers, &f.trusted()).unwrap_err();
    assert!(
        err.to_string()
            .contains("(it reads versions 1, 2, 3, 4 and 5)"),
        "{err}"
    );
}

#[test]
fn a_time_zone_must_be_one_cordon_knows() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let w =
        ArchiveWriter::create(dir.path(), "x.cordon-archive.age", &[officer.to_public()]).unwrap();
    let mut h = header();
    h.time_zone = Some("Mars/Olympus_Mons".into());
    let err = w.finish(h, &ArchiveSigner::generate()).unwrap_err();
    assert!(matches!(err, ArchiveError::BadInput(_)), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // One a newer cordon knows and this one does not: UTC, with a warning.
    let f = seal_with(&three(), Some("Europe/London"), |_| {});
    let path = resigned(&f, &f.signer, |_, v| {
        v["time_zone"] = json!("Mars/Olympus_Mons")
    });
    let (opened, out) = open(&f, &path, "mars");
    assert_eq!(opened.warnings.len(), 1, "{:?}", opened.warnings);
    assert!(opened.warnings[0].contains("Mars/Olympus_Mons"));
    let md = fs::read_to_string(out.join(DECISION_LOG_RENDERING)).unwrap();
    assert!(md.contains("### D1 \u{b7} 2026-07-04 13:32 UTC\n"), "{md}");
}
