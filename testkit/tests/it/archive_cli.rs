//! `cordon archive verify|open|pubkey`, through the real binary, on an archive sealed
//! with the library: what a records officer sees, and the exit codes scripts rely on
//! (0 intact, 1 a failed check, 2 usage or I/O).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{TimeZone, Utc};
use cordon::archive::{self, ArchiveHeader, ArchiveSigner, ArchiveWriter, RoomExport, Sealed};
use cordon::domain::transcript::{SOURCE_EXPORT, TranscriptLine};
use serde_json::json;

use crate::support::cordon_bin;

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(cordon_bin()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Sealing {
    dir: tempfile::TempDir,
    key_file: PathBuf,
    state_dir: PathBuf,
    signer: ArchiveSigner,
    sealed: Sealed,
}

/// An identity file as `age-keygen` writes it.
fn write_identity(path: &Path, identity: &age::x25519::Identity) {
    use age::secrecy::ExposeSecret;
    fs::write(
        path,
        format!(
            "# created: 2025-12-02T13:00:00Z\n# public key: {}\n{}\n",
            identity.to_public(),
            identity.to_string().expose_secret()
        ),
    )
    .unwrap();
}

fn seal() -> Sealing {
    let dir = tempfile::tempdir().unwrap();
    let officer = age::x25519::Identity::generate();
    let key_file = dir.path().join("officer.key");
    write_identity(&key_file, &officer);
    let state_dir = dir.path().join("state");
    fs::create_dir(&state_dir).unwrap();
    let passphrase = cordon::input::config::Secret::new("store passphrase".to_owned());
    let signer = ArchiveSigner::load_or_create(&state_dir, &passphrase).unwrap();

    let mut w = ArchiveWriter::create(
        &dir.path().join("archives"),
        &archive::archive_file_name("mc-4k7p"),
        &[
            officer.to_public(),
            age::x25519::Identity::generate().to_public(),
        ],
    )
    .unwrap();
    let line = |id: &str, ts: i64, body: &str| TranscriptLine {
        v: 1,
        source: SOURCE_EXPORT.into(),
        event_id: id.into(),
        room_id: "!command:nhs.example".into(),
        room_key: "command".into(),
        sender: "@ic:nhs.example".into(),
        origin_server_ts: ts,
        event_type: "m.room.message".into(),
        content: Some(json!({ "msgtype": "m.text", "body": body })),
        relates_to: None,
        encryption: None,
        undecryptable: false,
        state_key: None,
        redacted: None,
        media: None,
        unauthenticated: None,
    };
    w.add_room(&RoomExport {
        key: "command".into(),
        room_id: "!command:nhs.example".into(),
        name: "Command".into(),
        lines: vec![
            line("$1", 1_764_680_000_000, "Major incident declared"),
            line("$2", 1_764_680_060_000, "ED on divert"),
        ],
    })
    .unwrap();
    w.add_audit(&[json!({ "seq": 1, "kind": "incident.declared" })])
        .unwrap();
    let at = |h| Utc.with_ymd_and_hms(2025, 12, 2, h, 0, 0).unwrap();
    let sealed = w
        .finish(
            ArchiveHeader {
                incident: "mc-4k7p".into(),
                display_name: "Tram crash Addiscombe".into(),
                playbook: "mass-casualty".into(),
                commander: "@ic:nhs.example".into(),
                declared_at: at(8),
                expires_at: at(20),
                stood_down_at: Some(at(12)),
                time_zone: None,
                stood_down_by: Some("@ic:nhs.example".into()),
                sealed_at: at(13),
                server_name: "nhs.example".into(),
                exercise: false,
                roles: Vec::new(),
            },
            &signer,
        )
        .unwrap();
    Sealing {
        dir,
        key_file,
        state_dir,
        signer,
        sealed,
    }
}

#[test]
fn verify_prints_the_manifest_and_archive_ok() {
    let s = seal();
    let key = s.signer.public().to_string();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for expected in [
        "mc-4k7p",
        "Tram crash Addiscombe",
        "2 events, 2 messages",
        &s.sealed.sha256,
        &s.sealed.manifest.rooms[0].sha256,
        &key,
        "pinned",
        "archive OK",
    ] {
        assert!(all.contains(expected), "{expected:?} in {all}");
    }
}

#[test]
fn verify_exits_1_for_a_wrong_key_a_truncated_file_and_another_signer() {
    let s = seal();
    let key = s.signer.public().to_string();
    let stranger = s.dir.path().join("stranger.key");
    write_identity(&stranger, &age::x25519::Identity::generate());
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        stranger.as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("error: this archive is not encrypted to the given identity"),
        "{all}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{all}"
    );

    let raw = fs::read(&s.sealed.path).unwrap();
    let cut = s.dir.path().join("cut.age");
    fs::write(&cut, &raw[..raw.len() - 100]).unwrap();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        cut.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("truncated or damaged"), "{all}");
    assert!(!all.contains("archive OK"), "{all}");

    let other = ArchiveSigner::generate().public().to_string();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--signer".as_ref(),
        other.as_ref(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("not by the pinned key"), "{all}");
    // The refusal names the key that did sign it.
    assert!(all.contains(&format!("signed by {key}")), "{all}");
    assert!(!all.contains("archive OK"), "{all}");
}

#[test]
fn verify_exits_2_for_a_missing_identity_file_or_archive() {
    let s = seal();
    let key = s.signer.public().to_string();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.dir.path().join("nope.key").as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nope.key"), "{}", text(&out));
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.dir.path().join("nope.age").as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nope.age"), "{}", text(&out));
}

#[test]
fn verify_and_open_are_refused_without_a_key_to_trust() {
    let s = seal();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("no trusted signing key was given"), "{all}");
    assert!(
        all.contains("--signer") && all.contains("--trust-file"),
        "{all}"
    );
    assert!(!all.contains("archive OK"), "{all}");
    let dest = s.dir.path().join("never");
    let out = run(&[
        "archive".as_ref(),
        "open".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--out".as_ref(),
        dest.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!dest.exists(), "open wrote without a trusted key");
}

#[test]
fn a_trust_file_names_the_keys_and_its_mistakes_are_located_by_line() {
    let s = seal();
    let key = s.signer.public().to_string();
    let keys = s.dir.path().join("records-office.keys");
    fs::write(
        &keys,
        format!(
            "# archive signing keys the records office trusts\n{}  DR site\n{key}  St Elsewhere cordon\n",
            ArchiveSigner::generate().public()
        ),
    )
    .unwrap();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--trust-file".as_ref(),
        keys.as_os_str(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains(&format!(
            "signer:     {key} (trusted: {}:3, \u{201c}St Elsewhere cordon\u{201d})",
            keys.display()
        )),
        "{all}"
    );
    assert!(all.contains("archive OK"), "{all}");

    fs::write(&keys, format!("{key}\nnot-a-key label\n\n{key} twice\n")).unwrap();
    let out = run(&[
        "archive".as_ref(),
        "verify".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--trust-file".as_ref(),
        keys.as_os_str(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let file = keys.display().to_string();
    assert!(
        all.contains(&format!("{file}:2: error: expected an archive signing key")),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "{file}:4: error: this key is already listed on line 1"
        )),
        "{all}"
    );
    assert!(!all.contains("archive OK"), "{all}");
}

#[test]
fn open_writes_readable_files_into_a_directory_named_after_the_incident() {
    let s = seal();
    let work = s.dir.path().join("work");
    fs::create_dir(&work).unwrap();
    let key = s.signer.public().to_string();
    let out = Command::new(cordon_bin())
        .current_dir(&work)
        .args(["archive", "open"])
        .arg(&s.sealed.path)
        .arg("-i")
        .arg(&s.key_file)
        .args(["--signer", &key])
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let dir = work.join("mc-4k7p");
    assert!(all.contains("rooms/command.merged.md"), "{all}");
    let md = fs::read_to_string(dir.join("rooms/command.md")).unwrap();
    assert!(md.contains("ED on divert"), "{md}");
    assert!(
        fs::read_to_string(dir.join("index.md"))
            .unwrap()
            .contains("Tram crash Addiscombe")
    );
    let audit = fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 1);

    // --out names the directory; one that is not empty is refused (exit 2).
    let chosen = s.dir.path().join("chosen");
    let out = run(&[
        "archive".as_ref(),
        "open".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
        "--out".as_ref(),
        chosen.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(chosen.join("manifest.json").is_file());
    let again = run(&[
        "archive".as_ref(),
        "open".as_ref(),
        s.sealed.path.as_os_str(),
        "-i".as_ref(),
        s.key_file.as_os_str(),
        "--signer".as_ref(),
        key.as_ref(),
        "--out".as_ref(),
        chosen.as_os_str(),
    ]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
}

#[test]
fn pubkey_prints_the_signing_key_from_the_state_dir_or_the_config() {
    let s = seal();
    let key = s.signer.public().to_string();
    let out = run(&[
        "archive".as_ref(),
        "pubkey".as_ref(),
        "--state-dir".as_ref(),
        s.state_dir.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), key);

    // The config names secrets that do not exist here: pubkey never reads them.
    let config = s.dir.path().join("cordon.yaml");
    fs::write(
        &config,
        format!(
            "homeserver: https://matrix.nhs.example\n\
             user: \"@cordon:nhs.example\"\n\
             password: {{ env: CORDON_TEST_UNSET_PASSWORD }}\n\
             store_passphrase: {{ file: secrets/absent }}\n\
             state_dir: {}\n\
             playbooks_dir: playbooks\n\
             archive_dir: archives\n\
             operators: [\"@it-oncall:nhs.example\"]\n",
            s.state_dir.display()
        ),
    )
    .unwrap();
    let out = run(&[
        "archive".as_ref(),
        "pubkey".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), key);

    let empty = s.dir.path().join("fresh-state");
    fs::create_dir(&empty).unwrap();
    let out = run(&[
        "archive".as_ref(),
        "pubkey".as_ref(),
        "--state-dir".as_ref(),
        empty.as_os_str(),
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("start the bot once to create it"), "{all}");
}
