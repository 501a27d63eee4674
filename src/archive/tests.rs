//! The archive end to end: sealed by [`ArchiveWriter`], checked by [`verify_file`],
//! written out by [`open_file`], and refused when damaged, altered, re-signed or
//! opened with the wrong key.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::archive::segment::{self};
use crate::domain::transcript::{
    Encryption, MediaRef, Redacted, SOURCE_EXPORT, SOURCE_PRE_SEAL, TranscriptLine,
};

const T0: i64 = 1_764_650_000_000;

fn line(room: &str, id: &str, ts: i64, sender: &str, ty: &str, content: Value) -> TranscriptLine {
    TranscriptLine {
        v: 1,
        source: SOURCE_EXPORT.into(),
        event_id: id.into(),
        room_id: format!("!{room}:hs"),
        room_key: room.into(),
        sender: sender.into(),
        origin_server_ts: ts,
        event_type: ty.into(),
        relates_to: content.get("m.relates_to").cloned(),
        content: Some(content),
        encryption: None,
        undecryptable: false,
        state_key: None,
        redacted: None,
        media: None,
        unauthenticated: None,
    }
}

fn text(room: &str, id: &str, ts: i64, body: &str) -> TranscriptLine {
    line(
        room,
        id,
        ts,
        "@a:hs",
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
}

fn retention_removed(room: &str, id: &str, ts: i64) -> TranscriptLine {
    let mut l = line(room, id, ts, "@a:hs", "m.room.message", json!({}));
    l.redacted = Some(Redacted {
        by: "@cordon:hs".into(),
        at_ms: Some(ts + 60_000),
        reason: Some("retention".into()),
        redaction_event_id: None,
        by_retention: true,
    });
    l
}

fn header() -> ArchiveHeader {
    let at = |h| Utc.with_ymd_and_hms(2025, 12, 2, h, 0, 0).unwrap();
    ArchiveHeader {
        incident: "mc-4k7p".into(),
        display_name: "Tram crash <Addiscombe>".into(),
        playbook: "mass-casualty".into(),
        commander: "@cmd:hs".into(),
        declared_at: at(8),
        expires_at: at(20),
        stood_down_at: Some(at(12)),
        stood_down_by: Some("@cmd:hs".into()),
        sealed_at: at(13),
        server_name: "hs".into(),
        time_zone: None,
        exercise: false,
        roles: Vec::new(),
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    officers: Vec<age::x25519::Identity>,
    signer: ArchiveSigner,
    sealed: Sealed,
}

impl Fixture {
    fn path(&self) -> &Path {
        &self.sealed.path
    }

    /// What a records officer who pinned this cordon's key trusts.
    fn trusted(&self) -> TrustedSigners {
        TrustedSigners::pinned(self.signer.public())
    }
}

/// A sealed archive with two rooms, an attachment, two pre-seal segments (overlapping
/// on one event) and an audit slice, to two records officers.
fn seal() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let officers = vec![
        age::x25519::Identity::generate(),
        age::x25519::Identity::generate(),
    ];
    let recipients: Vec<_> = officers.iter().map(|i| i.to_public()).collect();
    let signer = ArchiveSigner::generate();

    // Retention sealed $r1 and $r2 during the incident, then $r2 again (a resumed
    // sweep) together with $gone, which the export no longer has.
    let seg_dir = dir.path().join("segments");
    let seg1 = segment::write_segment(
        &seg_dir,
        "command-000001.jsonl.age",
        &[
            sealed_line("$r1", T0 + 1_000, "sealed one"),
            sealed_line("$r2", T0 + 2_000, "sealed two"),
        ],
        &recipients,
    )
    .unwrap();
    let seg2 = segment::write_segment(
        &seg_dir,
        "command-000002.jsonl.age",
        &[
            sealed_line("$r2", T0 + 2_000, "sealed two again"),
            sealed_line("$gone", T0 + 500, "purged from the server"),
        ],
        &recipients,
    )
    .unwrap();

    let out = dir.path().join("archive");
    let mut w = ArchiveWriter::create(&out, &archive_file_name("mc-4k7p"), &recipients).unwrap();
    for (n, seg) in [&seg1, &seg2].into_iter().enumerate() {
        let bytes = fs::read(seg_dir.join(&seg.file)).unwrap();
        w.add_pre_seal("command", &seg.file, &bytes, &seg.sha256, 2)
            .unwrap_or_else(|e| panic!("segment {n}: {e}"));
    }
    let media = w
        .add_media(
            "command",
            "$img",
            "mxc://hs/xray",
            Some("image/png"),
            b"\x89PNG fake",
        )
        .unwrap();
    assert_eq!(media.file, "media/command-1.png");
    let mut img = line(
        "command",
        "$img",
        T0 + 3_000,
        "@b:hs",
        "m.room.message",
        json!({"msgtype": "m.image", "body": "xray.png"}),
    );
    img.media = Some(MediaRef {
        mxc: "mxc://hs/xray".into(),
        encrypted: true,
        file: Some(media.file.clone()),
        sha256: Some(media.sha256.clone()),
        size: Some(media.size),
        mimetype: Some("image/png".into()),
        error: None,
    });
    let mut missing = line(
        "command",
        "$pdf",
        T0 + 3_500,
        "@b:hs",
        "m.room.message",
        json!({"msgtype": "m.file", "body": "notes.pdf"}),
    );
    missing.media = Some(MediaRef {
        mxc: "mxc://hs/pdf".into(),
        encrypted: false,
        file: None,
        sha256: None,
        size: None,
        mimetype: Some("application/pdf".into()),
        error: Some("404 from the media repository".into()),
    });
    let mut undecryptable = line(
        "command",
        "$u",
        T0 + 4_000,
        "@c:hs",
        "m.room.encrypted",
        json!({}),
    );
    undecryptable.content = None;
    undecryptable.undecryptable = true;
    undecryptable.encryption = Some(Encryption {
        sender_device: None,
        verified: false,
        verification: None,
        session_id: Some("s".into()),
        failure: Some("MissingMegolmSession".into()),
    });
    let mut join = line(
        "command",
        "$j",
        T0,
        "@b:hs",
        "m.room.member",
        json!({"membership": "join"}),
    );
    join.state_key = Some("@b:hs".into());
    let command = RoomExport {
        key: "command".into(),
        room_id: "!command:hs".into(),
        name: "Command [gold]".into(),
        lines: vec![
            join,
            retention_removed("command", "$r1", T0 + 1_000),
            retention_removed("command", "$r2", T0 + 2_000),
            img,
            missing,
            undecryptable,
            text("command", "$t", T0 + 5_000, "Bed 4: 2 units O neg"),
            line(
                "command",
                "$e",
                T0 + 6_000,
                "@a:hs",
                "m.room.message",
                json!({"msgtype": "m.text", "body": "* Bed 5",
                       "m.new_content": {"msgtype": "m.text", "body": "Bed 5"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": "$t"}}),
            ),
            line(
                "command",
                "$x",
                T0 + 7_000,
                "@b:hs",
                "m.reaction",
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$t", "key": "👍"}}),
            ),
        ],
    };
    w.add_room(&command).unwrap();
    let ed = RoomExport {
        key: "ed-resus".into(),
        room_id: "!ed:hs".into(),
        name: "ED resus".into(),
        lines: vec![text("ed-resus", "$ed1", T0 + 100, "Resus 2 ready")],
    };
    w.add_room(&ed).unwrap();
    // Audit entries as the store writes them (the debrief reads `at`, `actor`, `action`
    // and `details`).
    let audit = |seq: u64, at: &str, actor: &str, action: &str, details: Value| {
        json!({
            "seq": seq, "at": at, "actor": actor, "action": action, "incident": "mc-4k7p",
            "details": details.to_string(), "prev": "0".repeat(64), "hash": "1".repeat(64),
        })
    };
    w.add_audit(&[
        audit(
            1,
            "2025-12-02T08:00:00Z",
            "@ic:hs",
            "incident.declared",
            json!({}),
        ),
        audit(
            2,
            "2025-12-02T08:00:01Z",
            "cordon",
            "room.created",
            json!({"key": "command", "name": "Command [gold]"}),
        ),
        audit(
            3,
            "2025-12-02T12:00:00Z",
            "@ic:hs",
            "incident.stand-down",
            json!({}),
        ),
    ])
    .unwrap();
    let sealed = w.finish(header(), &signer).unwrap();
    Fixture {
        dir,
        officers,
        signer,
        sealed,
    }
}

fn sealed_line(id: &str, ts: i64, body: &str) -> TranscriptLine {
    let mut l = text("command", id, ts, body);
    l.source = SOURCE_PRE_SEAL.into();
    l
}

/// Decrypts an archive to its members.
fn members(path: &Path, identity: &age::x25519::Identity) -> Vec<(String, Vec<u8>)> {
    let file = fs::File::open(path).unwrap();
    let decryptor = age::Decryptor::new_buffered(std::io::BufReader::new(file)).unwrap();
    let mut plain = Vec::new();
    decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let mut archive = tar::Archive::new(plain.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// What someone holding only the records officers' public keys can do: re-encrypt an
/// altered container to them.
fn reseal(path: &Path, members: &[(String, Vec<u8>)], recipients: &[age::x25519::Recipient]) {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        if name.starts_with("../") || name.starts_with('/') {
            // tar refuses to write such names; an attacker's tool would not.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            tar.append(&h, bytes.as_slice()).unwrap();
        } else {
            tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
        }
    }
    let plain = tar.into_inner().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .unwrap();
    let mut out = Vec::new();
    let mut w = encryptor.wrap_output(&mut out).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    fs::write(path, out).unwrap();
}

fn recipients(f: &Fixture) -> Vec<age::x25519::Recipient> {
    f.officers.iter().map(|i| i.to_public()).collect()
}

fn edit(f: &Fixture, change: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> PathBuf {
    let mut m = members(f.path(), &f.officers[0]);
    change(&mut m);
    let path = f.dir.path().join("altered.age");
    reseal(&path, &m, &recipients(f));
    path
}

#[test]
fn the_writer_can_move_to_a_blocking_task() {
    fn send<T: Send>() {}
    send::<ArchiveWriter>();
}

#[test]
fn an_archive_round_trips_and_each_records_officer_can_verify_it() {
    let f = seal();
    let raw = fs::read(f.path()).unwrap();
    assert_eq!(f.sealed.sha256, hex::encode(Sha256::digest(&raw)));
    assert_eq!(f.sealed.size, raw.len() as u64);
    assert_eq!(
        f.path().file_name().unwrap().to_str().unwrap(),
        "mc-4k7p.cordon-archive.age"
    );
    for officer in &f.officers {
        let v = verify_file(f.path(), std::slice::from_ref(officer), &f.trusted()).unwrap();
        assert_eq!(v.manifest, f.sealed.manifest);
        assert_eq!(v.signer, f.signer.public());
        assert_eq!(v.trusted_as, KeySource::Pinned);
        assert_eq!(v.file_sha256, f.sealed.sha256);
    }
    let m = &f.sealed.manifest;
    assert_eq!(m.v, MANIFEST_VERSION);
    assert_eq!(m.signing_key, f.signer.public().to_string());
    assert_eq!(m.cordon_version, env!("CARGO_PKG_VERSION"));
    let c = m.rooms[0].counts;
    assert_eq!(
        c,
        Counts {
            events: 9,
            messages: 5,
            state: 1,
            edits: 1,
            reactions: 1,
            redacted: 2,
            retention_removed: 2,
            undecryptable: 1,
            media: 1,
            media_missing: 1,
            unencrypted: 0,
            unverified_device: 0,
            mismatched_sender: 0,
        }
    );
    assert_eq!(m.audit.entries, 3);
    assert_eq!(m.pre_seal.len(), 2);
    assert_eq!(m.media[0].mxc, "mxc://hs/xray");
    let names: Vec<String> = members(f.path(), &f.officers[1])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for expected in [
        "manifest.json",
        "manifest.sig",
        "audit.jsonl",
        "index.md",
        "rooms/command.jsonl",
        "rooms/command.md",
        "rooms/ed-resus.jsonl",
        "rooms/ed-resus.md",
        "media/command-1.png",
        "pre-seal/command-000001.jsonl.age",
        "pre-seal/command-000002.jsonl.age",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert_eq!(names.len(), 11, "{names:?}");
    // The manifest and its signature come last, and the signature is one line.
    assert_eq!(names[names.len() - 2..], ["manifest.json", "manifest.sig"]);
}

#[test]
fn members_have_a_fixed_mode_owner_and_time() {
    let f = seal();
    let members = members(f.path(), &f.officers[0]);
    let file = fs::File::open(f.path()).unwrap();
    let decryptor = age::Decryptor::new_buffered(std::io::BufReader::new(file)).unwrap();
    let mut plain = Vec::new();
    decryptor
        .decrypt(std::iter::once(&f.officers[0] as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let mut archive = tar::Archive::new(plain.as_slice());
    for entry in archive.entries().unwrap() {
        let e = entry.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.mode().unwrap(), 0o600);
        assert_eq!(h.entry_type(), tar::EntryType::Regular);
    }
    assert!(!members.is_empty());
}

#[test]
fn a_key_it_was_not_sealed_to_is_refused_as_the_wrong_key() {
    let f = seal();
    let stranger = age::x25519::Identity::generate();
    let err = verify_file(f.path(), &[stranger], &f.trusted()).unwrap_err();
    assert!(matches!(err, ArchiveError::WrongKey), "{err}");
    assert_eq!(
        err.to_string(),
        "this archive is not encrypted to the given identity"
    );
    assert!(err.is_check_failure());
}

#[test]
fn a_truncated_file_is_refused_as_damaged_wherever_it_is_cut() {
    let f = seal();
    let raw = fs::read(f.path()).unwrap();
    let header_end = raw.windows(4).position(|w| w == b"\n---").unwrap();
    let cut = f.dir.path().join("cut.age");
    for at in [
        0,
        20,
        header_end,
        header_end + 60,
        raw.len() / 2,
        raw.len() - 17,
        raw.len() - 1,
    ] {
        fs::write(&cut, &raw[..at]).unwrap();
        let err = verify_file(&cut, &f.officers, &f.trusted()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Damaged { .. }),
            "cut at {at}: {err}"
        );
    }
}

#[test]
fn a_flipped_byte_in_the_ciphertext_is_refused_as_damaged() {
    let f = seal();
    let raw = fs::read(f.path()).unwrap();
    let header_end = raw.windows(4).position(|w| w == b"\n---").unwrap() + 60;
    let flipped = f.dir.path().join("flipped.age");
    for at in [header_end + 1, raw.len() / 2, raw.len() - 1] {
        let mut bad = raw.clone();
        bad[at] ^= 0x01;
        fs::write(&flipped, &bad).unwrap();
        let err = verify_file(&flipped, &f.officers, &f.trusted()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Damaged { .. }),
            "byte {at}: {err}"
        );
    }
}

#[test]
fn an_edited_manifest_re_encrypted_to_the_officers_fails_the_signature() {
    let f = seal();
    let path = edit(&f, |m| {
        let manifest = m.iter_mut().find(|(n, _)| n == "manifest.json").unwrap();
        let text = String::from_utf8(manifest.1.clone()).unwrap();
        manifest.1 = text.replace("@cmd:hs", "@someone-else:hs").into_bytes();
    });
    let err = verify_file(&path, &f.officers, &f.trusted()).unwrap_err();
    assert!(matches!(err, ArchiveError::BadSignature), "{err}");
}

#[test]
fn a_changed_transcript_with_a_recomputed_manifest_fails_the_old_signature() {
    let f = seal();
    let path = edit(&f, |m| {
        let room = m
            .iter_mut()
            .find(|(n, _)| n == "rooms/command.jsonl")
            .unwrap();
        room.1 = String::from_utf8(room.1.clone())
            .unwrap()
            .replace("2 units O neg", "no blood given")
            .into_bytes();
        let (sha, len) = (hex::encode(Sha256::digest(&room.1)), room.1.len() as u64);
        let manifest = m.iter_mut().find(|(n, _)| n == "manifest.json").unwrap();
        let mut value: Manifest = serde_json::from_slice(&manifest.1).unwrap();
        value.rooms[0].sha256 = sha;
        value.rooms[0].bytes = len;
        let mut bytes = serde_json::to_vec_pretty(&value).unwrap();
        bytes.push(b'\n');
        manifest.1 = bytes;
    });
    let err = verify_file(&path, &f.officers, &f.trusted()).unwrap_err();
    assert!(matches!(err, ArchiveError::BadSignature), "{err}");
}

#[test]
fn a_changed_member_under_an_intact_manifest_is_named_as_tampered() {
    let f = seal();
    let path = edit(&f, |m| {
        let media = m
            .iter_mut()
            .find(|(n, _)| n == "media/command-1.png")
            .unwrap();
        media.1[0] ^= 0xff;
    });
    let err = verify_file(&path, &f.officers, &f.trusted()).unwrap_err();
    match err {
        ArchiveError::Tampered { file } => assert_eq!(file, "media/command-1.png"),
        other => panic!("{other}"),
    }
}

#[test]
fn added_removed_and_escaping_members_are_refused() {
    let f = seal();
    let extra = edit(&f, |m| {
        m.insert(0, ("media/extra.bin".into(), b"x".to_vec()))
    });
    assert!(matches!(
        verify_file(&extra, &f.officers, &f.trusted()).unwrap_err(),
        ArchiveError::UnexpectedMember(n) if n == "media/extra.bin"
    ));
    let removed = edit(&f, |m| m.retain(|(n, _)| n != "audit.jsonl"));
    assert!(matches!(
        verify_file(&removed, &f.officers, &f.trusted()).unwrap_err(),
        ArchiveError::MissingMember(n) if n == "audit.jsonl"
    ));
    let escaping = edit(&f, |m| m.insert(0, ("../evil".into(), b"x".to_vec())));
    let out = f.dir.path().join("escaping-out");
    assert!(matches!(
        open_file(&escaping, &f.officers, &f.trusted(), &out).unwrap_err(),
        ArchiveError::UnsafePath(n) if n == "../evil"
    ));
    assert!(!f.dir.path().join("evil").exists());
    assert!(!out.exists());
    let absolute = edit(&f, |m| m.insert(0, ("/tmp/evil".into(), b"x".to_vec())));
    assert!(matches!(
        verify_file(&absolute, &f.officers, &f.trusted()).unwrap_err(),
        ArchiveError::UnsafePath(_)
    ));
}

#[test]
fn a_pinned_key_must_be_the_signer() {
    let f = seal();
    let ok = verify_file(f.path(), &f.officers, &f.trusted()).unwrap();
    assert_eq!(ok.trusted_as, KeySource::Pinned);
    let other = ArchiveSigner::generate().public();
    let err = verify_file(f.path(), &f.officers, &TrustedSigners::pinned(other)).unwrap_err();
    assert!(matches!(err, ArchiveError::UntrustedSigner { .. }), "{err}");
    assert!(err.is_check_failure());
}

#[test]
fn opening_writes_the_debrief_and_report_prints_the_same_without_writing() {
    let f = seal();
    let out = f.dir.path().join("opened");
    let opened = open_file(f.path(), &f.officers, &f.trusted(), &out).unwrap();
    for name in ["debrief.md", "debrief.json"] {
        assert!(opened.written.iter().any(|w| w == name), "{name}");
    }
    let md = fs::read_to_string(out.join("debrief.md")).unwrap();
    assert!(
        md.starts_with("# Debrief: Tram crash &lt;Addiscombe&gt;"),
        "{md}"
    );
    assert!(
        md.contains("Room command created: Command \\[gold\\]"),
        "{md}"
    );
    let json: Value = serde_json::from_slice(&fs::read(out.join("debrief.json")).unwrap()).unwrap();
    assert_eq!(json["timeline"][0]["kind"], "declared", "{json:#}");
    assert_eq!(json["exercise"], false);

    let reported = crate::archive::report_file(f.path(), &f.officers[1..], &f.trusted()).unwrap();
    assert_eq!(reported.markdown, md, "report prints what open wrote");
    assert!(reported.warnings.is_empty(), "{:?}", reported.warnings);
    // Not trusted, not reported.
    let stranger = TrustedSigners::pinned(ArchiveSigner::generate().public());
    assert!(matches!(
        crate::archive::report_file(f.path(), &f.officers, &stranger).unwrap_err(),
        ArchiveError::UntrustedSigner { .. }
    ));
}

#[test]
fn an_exercise_archive_is_marked_in_its_manifest_index_and_debrief() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let signer = ArchiveSigner::generate();
    let place = dir.path().join(archive_relative_path("mc-4k7p", true));
    assert!(place.ends_with("exercises/mc-4k7p.cordon-archive.age"));
    let w = ArchiveWriter::create(
        place.parent().unwrap(),
        &archive_file_name("mc-4k7p"),
        &[officer.to_public()],
    )
    .unwrap();
    let sealed = w
        .finish(
            ArchiveHeader {
                exercise: true,
                ..header()
            },
            &signer,
        )
        .unwrap();
    assert_eq!(sealed.path, place);
    assert!(sealed.manifest.exercise);
    let out = dir.path().join("opened");
    open_file(
        &place,
        &[officer],
        &TrustedSigners::pinned(signer.public()),
        &out,
    )
    .unwrap();
    let index = fs::read_to_string(out.join("index.md")).unwrap();
    assert!(index.starts_with("# EXERCISE archive:"), "{index}");
    let debrief = fs::read_to_string(out.join("debrief.md")).unwrap();
    assert!(debrief.starts_with("# EXERCISE debrief:"), "{debrief}");
    // A real incident's archive stays where it always was.
    assert_eq!(
        archive_relative_path("mc-4k7p", false),
        Path::new("mc-4k7p.cordon-archive.age")
    );
}

#[test]
fn opening_writes_every_member_and_merges_pre_seal_segments_by_event_id() {
    let f = seal();
    let out = f.dir.path().join("opened");
    let opened = open_file(f.path(), &f.officers[1..], &f.trusted(), &out).unwrap();
    assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
    for name in [
        "index.md",
        "manifest.json",
        "rooms/command.md",
        "rooms/command.merged.jsonl",
        "rooms/command.merged.md",
        "rooms/ed-resus.merged.jsonl",
        "media/command-1.png",
        "pre-seal/command-000002.jsonl.age",
    ] {
        assert!(out.join(name).is_file(), "{name}");
        assert!(opened.written.iter().any(|w| w == name), "{name}");
    }
    assert_eq!(
        fs::read(out.join("media/command-1.png")).unwrap(),
        b"\x89PNG fake"
    );
    let merged = segment::decode_lines(
        fs::read(out.join("rooms/command.merged.jsonl"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let ids: Vec<&str> = merged.iter().map(|l| l.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "$j", "$r1", "$r2", "$img", "$pdf", "$u", "$t", "$e", "$x", "$gone"
        ]
    );
    let body = |i: usize| merged[i].content.as_ref().unwrap()["body"].clone();
    assert_eq!(body(1), "sealed one");
    // $r2 was sealed twice: the first segment's line wins.
    assert_eq!(body(2), "sealed two");
    assert_eq!(body(9), "purged from the server");
    let md = fs::read_to_string(out.join("rooms/command.merged.md")).unwrap();
    assert!(md.contains("sealed one") && md.contains("restored from a pre-seal segment"));
    let plain_md = fs::read_to_string(out.join("rooms/command.md")).unwrap();
    assert!(plain_md.contains("# Command \\[gold\\]"), "{plain_md}");
    assert!(
        plain_md.contains("\\[removed by retention at"),
        "{plain_md}"
    );
    assert!(!plain_md.contains("sealed one"));
    let index = fs::read_to_string(out.join("index.md")).unwrap();
    assert!(index.contains("Tram crash &lt;Addiscombe&gt;"), "{index}");
    assert!(
        index.contains("[Command \\[gold\\]](rooms/command.md)"),
        "{index}"
    );
    assert!(index.contains("MissingMegolmSession"), "{index}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mode = fs::metadata(out.join("index.md"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    // A second opening into the same directory is refused.
    assert!(matches!(
        open_file(f.path(), &f.officers, &f.trusted(), &out).unwrap_err(),
        ArchiveError::OutputNotEmpty(_)
    ));
}

#[test]
fn the_one_time_identity_leaves_one_stanza_and_nothing_else_on_disk() {
    let f = seal();
    let raw = fs::read(f.path()).unwrap();
    let header_end = raw.windows(4).position(|w| w == b"\n---").unwrap();
    let header = std::str::from_utf8(&raw[..header_end]).unwrap();
    // Recipient stanzas only: age also adds one random `-grease` stanza, which no key
    // opens.
    let stanzas = header
        .lines()
        .filter(|l| l.starts_with("-> X25519 "))
        .count();
    assert_eq!(stanzas, f.officers.len() + 1, "{header}");
    let names: Vec<String> = fs::read_dir(f.path().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["mc-4k7p.cordon-archive.age"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(f.path().parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
    // No plaintext on disk.
    assert!(!raw.windows(9).any(|w| w == b"units O n"));
}

#[test]
fn a_pre_seal_segment_that_is_not_the_one_recorded_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let mut w =
        ArchiveWriter::create(dir.path(), "x.cordon-archive.age", &[officer.to_public()]).unwrap();
    let recorded = hex::encode(Sha256::digest(b"what retention wrote"));
    let err = w
        .add_pre_seal(
            "command",
            "command-000001.jsonl.age",
            b"something else",
            &recorded,
            1,
        )
        .unwrap_err();
    assert!(matches!(err, ArchiveError::PreSealMismatch { .. }), "{err}");
    assert!(
        w.add_pre_seal("command", "../x", b"", &hex::encode(Sha256::digest(b"")), 0)
            .is_err()
    );
}

#[test]
fn a_writer_dropped_unfinished_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let mut w =
        ArchiveWriter::create(dir.path(), "x.cordon-archive.age", &[officer.to_public()]).unwrap();
    w.add_media("command", "$e", "mxc://hs/m", None, b"bytes")
        .unwrap();
    drop(w);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn transcripts_that_name_media_not_in_the_archive_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let mut w =
        ArchiveWriter::create(dir.path(), "x.cordon-archive.age", &[officer.to_public()]).unwrap();
    let mut l = text("command", "$m", T0, "x.png");
    l.media = Some(MediaRef {
        mxc: "mxc://hs/m".into(),
        encrypted: false,
        file: Some("media/command-1.png".into()),
        sha256: None,
        size: None,
        mimetype: None,
        error: None,
    });
    let room = RoomExport {
        key: "command".into(),
        room_id: "!c:hs".into(),
        name: "c".into(),
        lines: vec![l],
    };
    assert!(matches!(w.add_room(&room), Err(ArchiveError::BadInput(_))));
    assert!(matches!(
        ArchiveWriter::create(dir.path(), "x.age", &[]),
        Err(ArchiveError::NoRecipients)
    ));
}

#[test]
fn identity_files_are_read_with_comments_and_garbled_ones_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let good = dir.path().join("officer.key");
    fs::write(
        &good,
        format!(
            "# created: 2025-12-02\n# public key: {}\n{}\n",
            identity.to_public(),
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
        ),
    )
    .unwrap();
    let read = read_identities(&good).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].to_public().to_string(),
        identity.to_public().to_string()
    );
    let Err(missing) = read_identities(&dir.path().join("nope")) else {
        panic!("a missing identity file was read");
    };
    assert!(missing.to_string().contains("no such file"), "{missing}");
    let garbled = dir.path().join("garbled.key");
    fs::write(&garbled, "# c\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let Err(err) = read_identities(&garbled) else {
        panic!("a garbled identity file was read");
    };
    let err = err.to_string();
    assert!(err.contains("line 2 is not an age identity"), "{err}");
    assert!(!err.contains("NOTAKEY"), "{err}");
    let empty = dir.path().join("empty.key");
    fs::write(&empty, "# nothing\n").unwrap();
    assert!(read_identities(&empty).is_err());
}

/// What someone holding a signing key can make: the manifest changed by `change` (which
/// may change the members too), named as signed by `signer`, signed by it, and
/// re-encrypted to the officers.
fn resigned(
    f: &Fixture,
    signer: &ArchiveSigner,
    change: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &mut Value),
) -> PathBuf {
    edit(f, |m| {
        let at =
            |m: &Vec<(String, Vec<u8>)>, name: &str| m.iter().position(|(n, _)| n == name).unwrap();
        let mut value: Value = serde_json::from_slice(&m[at(m, "manifest.json")].1).unwrap();
        value["signing_key"] = json!(signer.public().to_string());
        change(m, &mut value);
        let mut bytes = serde_json::to_vec_pretty(&value).unwrap();
        bytes.push(b'\n');
        let sig = signer.sign(&bytes);
        let i = at(m, "manifest.json");
        m[i].1 = bytes;
        let j = at(m, "manifest.sig");
        m[j].1 = sig.into_bytes();
    })
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_signed_manifest_whose_room_key_climbs_out_writes_nothing_anywhere() {
    let f = seal();
    let before = files_under(f.dir.path());
    // Validly signed by the pinned key (a leaked key, or a compromised host): the
    // names must still be checked.
    for (what, key) in [
        ("pre-seal", "../../escaped"),
        ("pre-seal", "/tmp/escaped"),
        ("media", "../escaped"),
    ] {
        let path = resigned(&f, &f.signer, |m, v| match what {
            "pre-seal" => {
                m.insert(0, ("pre-seal/x-000001.jsonl.age".into(), b"x".to_vec()));
                v["pre_seal"].as_array_mut().unwrap().push(json!({
                    "room_key": key, "file": "pre-seal/x-000001.jsonl.age",
                    "sha256": hex::encode(Sha256::digest(b"x")), "bytes": 1, "lines": 1,
                }));
            }
            _ => v["media"][0]["room_key"] = json!(key),
        });
        let out = f.dir.path().join("nest").join("out");
        let err = open_file(&path, &f.officers, &f.trusted(), &out).unwrap_err();
        match &err {
            ArchiveError::BadManifest { detail, .. } => {
                assert!(detail.contains(&format!("room key {key:?}")), "{detail}")
            }
            other => panic!("{what} {key}: {other}"),
        }
        assert!(err.is_check_failure());
        assert!(
            !out.exists(),
            "{what} {key}: the output directory was created"
        );
        let mut after = files_under(f.dir.path());
        after.retain(|p| p != "altered.age");
        assert_eq!(after, before, "{what} {key}: a file was written");
        assert!(!Path::new("/tmp/escaped.merged.jsonl").exists());
    }
}

#[test]
fn an_archive_signed_by_a_key_not_trusted_is_refused_naming_that_key() {
    let f = seal();
    let stranger = ArchiveSigner::generate();
    let path = resigned(&f, &stranger, |_, _| {});
    let err = verify_file(&path, &f.officers, &f.trusted()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ArchiveError::UntrustedSigner { .. }),
        "{text}"
    );
    assert!(text.contains(&stranger.public().to_string()), "{text}");
    assert!(
        text.contains(&format!("not by the pinned key {}", f.signer.public())),
        "{text}"
    );
    assert!(err.is_check_failure());
    // The same with a trust file, which the refusal names.
    let keys = f.dir.path().join("records.keys");
    fs::write(&keys, format!("{}  St Elsewhere\n", f.signer.public())).unwrap();
    let from_file = TrustedSigners::read_file(&keys).unwrap();
    let text = verify_file(&path, &f.officers, &from_file)
        .unwrap_err()
        .to_string();
    assert!(text.contains(&stranger.public().to_string()), "{text}");
    assert!(text.contains(&keys.display().to_string()), "{text}");
    // The genuine archive verifies against the file, saying which line trusted it.
    let ok = verify_file(f.path(), &f.officers, &from_file).unwrap();
    assert!(
        matches!(&ok.trusted_as, KeySource::TrustFile { line: 1, label, .. } if label == "St Elsewhere"),
        "{:?}",
        ok.trusted_as
    );
    // Nothing trusted: nothing verified, not even the genuine archive, nothing opened.
    let none = TrustedSigners::new();
    assert!(matches!(
        verify_file(f.path(), &f.officers, &none).unwrap_err(),
        ArchiveError::NoTrustedSigner
    ));
    let out = f.dir.path().join("untrusted-out");
    assert!(matches!(
        open_file(f.path(), &f.officers, &none, &out).unwrap_err(),
        ArchiveError::NoTrustedSigner
    ));
    assert!(!out.exists());
}

#[test]
fn a_version_1_archive_still_verifies_and_opens() {
    let f = seal();
    // An archive from before version 2: no counts of unauthenticated lines.
    let path = resigned(&f, &f.signer, |_, v| {
        v["v"] = json!(1);
        for room in v["rooms"].as_array_mut().unwrap() {
            let counts = room["counts"].as_object_mut().unwrap();
            for new in ["unencrypted", "unverified_device", "mismatched_sender"] {
                assert!(counts.remove(new).is_some(), "{new}");
            }
        }
    });
    let v = verify_file(&path, &f.officers, &f.trusted()).unwrap();
    assert_eq!(v.manifest.v, 1);
    assert_eq!(v.manifest.totals().unauthenticated(), 0);
    let out = f.dir.path().join("v1-out");
    open_file(&path, &f.officers, &f.trusted(), &out).unwrap();
    assert!(out.join("rooms/command.merged.md").is_file());
}

#[test]
fn unauthenticated_lines_are_counted_marked_before_their_words_and_listed_in_the_index() {
    use crate::domain::transcript::Unauthenticated;
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let signer = ArchiveSigner::generate();
    let mut w =
        ArchiveWriter::create(dir.path(), "x.cordon-archive.age", &[officer.to_public()]).unwrap();
    let marked = |id: &str, body: &str, why: Unauthenticated| {
        let mut l = text("command", id, T0, body);
        l.sender = "@consultant:hs".into();
        l.unauthenticated = Some(why);
        l
    };
    let mut reaction = line(
        "command",
        "$re",
        T0 + 4,
        "@nurse:hs",
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$ok", "key": "✅"}}),
    );
    reaction.unauthenticated = Some(Unauthenticated::Unencrypted);
    w.add_room(&RoomExport {
        key: "command".into(),
        room_id: "!command:hs".into(),
        name: "Command".into(),
        lines: vec![
            text("command", "$ok", T0, "Bed 4: 2 units O neg"),
            marked(
                "$in",
                "Give 10 units insulin IV now",
                Unauthenticated::Unencrypted,
            ),
            marked("$uv", "Discharge bed 7", Unauthenticated::UnverifiedDevice),
            marked(
                "$ms",
                "Stop the transfusion",
                Unauthenticated::MismatchedSender,
            ),
            reaction,
        ],
    })
    .unwrap();
    let sealed = w.finish(header(), &signer).unwrap();
    let c = sealed.manifest.rooms[0].counts;
    assert_eq!(
        (c.unencrypted, c.unverified_device, c.mismatched_sender),
        (2, 1, 1)
    );
    assert_eq!(c.unauthenticated(), 4);
    let out = dir.path().join("out");
    let trusted = TrustedSigners::pinned(signer.public());
    open_file(&sealed.path, &[officer], &trusted, &out).unwrap();
    let lines = segment::decode_lines(
        fs::read(out.join("rooms/command.jsonl"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(lines[1].unauthenticated, Some(Unauthenticated::Unencrypted));
    assert_eq!(lines[0].unauthenticated, None);
    for md in ["rooms/command.md", "rooms/command.merged.md"] {
        let md = fs::read_to_string(out.join(md)).unwrap();
        // The warning comes before the words it is about.
        let warned = md
            .find("**Not proven to be from @consultant:hs** (unencrypted)")
            .unwrap_or_else(|| panic!("{md}"));
        let words = md.find("Give 10 units insulin IV now").unwrap();
        assert!(warned < words, "{md}");
        assert!(md.contains("(unverified-device)"), "{md}");
        assert!(md.contains("(mismatched-sender)"), "{md}");
        assert!(md.contains("✅ (@nurse:hs \u{26a0} unencrypted)"), "{md}");
        // The verified message carries no warning.
        let ok = md.find("Bed 4: 2 units O neg").unwrap();
        let entry_start = md[..ok].rfind("<a id=").unwrap();
        assert!(!md[entry_start..ok].contains("Not proven"), "{md}");
    }
    let index = fs::read_to_string(out.join("index.md")).unwrap();
    assert!(
        index.contains("## Events not proven to come from their sender"),
        "{index}"
    );
    for id in ["$in", "$uv", "$ms", "$re"] {
        assert!(index.contains(&format!("event \\{id}")), "{id} in {index}");
    }
}

/// The command record's entries in the archive: sealed, copied, verified, decrypted.
mod advice;
mod decisions;
