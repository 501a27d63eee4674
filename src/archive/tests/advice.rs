//! Clinical advice in the archive: each item sealed as it was flagged, copied verbatim
//! by [`ArchiveWriter::add_advice`], checked by [`verify_file`], and decrypted by
//! [`open_file`] (and `report_file`) into the FHIR bundle.

use chrono::DateTime;

use super::*;
use crate::archive::advice::{ADVICE_VERSION, SealedAdvice, seal_advice};
use crate::archive::record::WrittenEntry;
use crate::archive::{AdviceManifest, FHIR_ADVICE_FILE, SealedMember, TranscribedManifest};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0).unwrap() + chrono::TimeDelta::seconds(secs)
}

fn item(event: &str, sent: i64, patient: Option<&str>) -> SealedAdvice {
    SealedAdvice {
        v: ADVICE_VERSION,
        incident: "mc-4k7p".into(),
        room_key: "command".into(),
        room_id: "!command:hs".into(),
        event_id: event.into(),
        author: "@dr:hs".into(),
        author_registration: None,
        sent_at: at(sent),
        text: Some(format!("advice {event}: 1 g TXA")),
        in_reply_to: None,
        patient: patient.map(str::to_owned),
        flagged_by: "@nurse:hs".into(),
        flagged_at: at(sent + 30),
        salt: "ab".repeat(16),
    }
}

/// What the stand-down lists of `a`, sealed as `written`: flagged by command and
/// confirmed transcribed twelve minutes after it was sent.
fn listed(a: &SealedAdvice, written: &WrittenEntry) -> AdviceManifest {
    AdviceManifest {
        room_key: a.room_key.clone(),
        room_id: a.room_id.clone(),
        event_id: a.event_id.clone(),
        author: a.author.clone(),
        sent_at: a.sent_at,
        flagged_by: a.flagged_by.clone(),
        flagged_at: a.flagged_at,
        flagged_via: "command".into(),
        transcribed: Some(TranscribedManifest {
            by: "@clerk:hs".into(),
            at: a.sent_at + chrono::TimeDelta::minutes(12),
            confirmed: true,
        }),
        patient: a.patient.is_some(),
        sealed: Some(SealedMember {
            file: String::new(),
            sha256: written.file.sha256.clone(),
            bytes: written.file.bytes,
            content_sha256: written.content_sha256.clone(),
        }),
    }
}

/// An archive of one room and `items`, each sealed as the bot seals it and listed as
/// the stand-down lists it; `change` may alter a listing before it is added.
fn seal_with(items: &[SealedAdvice], mut change: impl FnMut(&mut AdviceManifest)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let officers = vec![age::x25519::Identity::generate()];
    let recipients: Vec<_> = officers.iter().map(|i| i.to_public()).collect();
    let signer = ArchiveSigner::generate();
    let state = dir.path().join("state");
    let mut w = ArchiveWriter::create(
        &dir.path().join("archive"),
        &archive_file_name("mc-4k7p"),
        &recipients,
    )
    .unwrap();
    for a in items.iter().rev() {
        let written = seal_advice(&state, a, &recipients).unwrap();
        let bytes = fs::read(state.join(&written.file.file)).unwrap();
        let name = Path::new(&written.file.file)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let mut listed = listed(a, &written);
        change(&mut listed);
        w.add_advice(listed, Some((&name, &bytes))).unwrap();
    }
    w.add_room(&RoomExport {
        key: "command".into(),
        room_id: "!command:hs".into(),
        name: "Command".into(),
        lines: vec![text("command", "$t", T0, "Bed 4: 2 units O neg")],
    })
    .unwrap();
    let sealed = w.finish(header(), &signer).unwrap();
    Fixture {
        dir,
        officers,
        signer,
        sealed,
    }
}

fn bundle_at(out: &Path) -> Value {
    serde_json::from_slice(&fs::read(out.join(FHIR_ADVICE_FILE)).unwrap()).unwrap()
}

#[test]
fn advice_is_archived_sealed_and_opened_into_a_fhir_bundle_report_prints_the_same() {
    let f = seal_with(
        &[item("$a", 10, Some("9434765919")), item("$b", 20, None)],
        |_| {},
    );
    let m = &f.sealed.manifest;
    assert_eq!(m.v, MANIFEST_VERSION);
    let events: Vec<&str> = m.advice.iter().map(|a| a.event_id.as_str()).collect();
    assert_eq!(
        events,
        ["$a", "$b"],
        "in the order sent, whatever the order added"
    );
    // Copied verbatim: nothing of the text or the number is readable in the archive.
    for (name, bytes) in members(f.path(), &f.officers[0]) {
        if name.starts_with("advice/") {
            for clear in [&b"TXA"[..], b"9434765919"] {
                assert!(!bytes.windows(clear.len()).any(|w| w == clear), "{name}");
            }
        } else {
            assert!(!bytes.windows(10).any(|w| w == b"9434765919"), "{name}");
        }
    }
    let out = f.dir.path().join("opened");
    let opened = open_file(f.path(), &f.officers, &f.trusted(), &out).unwrap();
    assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
    let b = bundle_at(&out);
    let a = &b["entry"][0]["resource"];
    assert_eq!(a["subject"]["identifier"]["value"], "9434765919");
    assert_eq!(a["payload"][0]["contentString"], "advice $a: 1 g TXA");
    assert_eq!(a["note"][2]["authorString"], "@clerk:hs");
    assert!(b["entry"][1]["resource"].get("subject").is_none());
    let reported = report_file(f.path(), &f.officers, &f.trusted()).unwrap();
    assert_eq!(reported.fhir, b);
}

#[test]
fn an_item_whose_listing_does_not_match_its_sealed_copy_stays_without_text_and_is_a_warning() {
    let f = seal_with(&[item("$a", 10, Some("9434765919"))], |l| {
        l.author = "@someone-else:hs".into();
    });
    let out = f.dir.path().join("opened");
    let opened = open_file(f.path(), &f.officers, &f.trusted(), &out).unwrap();
    assert_eq!(opened.warnings.len(), 1, "{:?}", opened.warnings);
    assert!(
        opened.warnings[0].contains("names another"),
        "{:?}",
        opened.warnings
    );
    let b = bundle_at(&out);
    let c = &b["entry"][0]["resource"];
    assert!(
        c.get("payload").is_none() && c.get("subject").is_none(),
        "{c}"
    );
}

#[test]
fn bytes_that_are_not_the_ones_sealed_are_refused_when_added() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let state = dir.path().join("state");
    let a = item("$a", 10, None);
    let written = seal_advice(&state, &a, &[officer.to_public()]).unwrap();
    let mut w = ArchiveWriter::create(
        &dir.path().join("archive"),
        "x.tar.age",
        &[officer.to_public()],
    )
    .unwrap();
    let listed = listed(&a, &written);
    let err = w
        .add_advice(listed.clone(), Some(("a.json.age", b"other bytes")))
        .unwrap_err();
    assert!(matches!(err, ArchiveError::RecordMismatch { .. }), "{err}");
    let err = w.add_advice(listed, None).unwrap_err();
    assert!(err.to_string().contains("disagree"), "{err}");
}
