//! The archive is safe to open and honest about what it holds (issue 19), against the
//! real Synapse: an archive sealed by a real stand-down is opened by the records
//! officer's CLI.
//!
//! - A plaintext message injected into an encrypted incident room is marked in the
//!   opened transcript, its rendering and the manifest's counts.
//! - An archive re-signed by another key is refused, naming that key, whether the
//!   officer pinned cordon's key or keeps a trust file; without either nothing is
//!   verified.
//! - An archive whose signed manifest gives a pre-seal segment a room key with `../`
//!   writes nothing outside `--out`, even signed with cordon's own key.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cordon::archive::ArchiveSigner;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::standdown::{Officer, archive_path, cordon, declared, read_lines, signing_key, text};
use crate::world::World;

/// Stands the incident down and waits for its archive; the bot is stopped after.
async fn stand_down(w: &mut World, incident: &str) -> PathBuf {
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    w.stop_bot();
    archive_path(w, incident)
}

/// The archive's members, decrypted with the officer's identity.
fn members(file: &Path, officer: &Officer) -> Vec<(String, Vec<u8>)> {
    let identities = cordon::archive::read_identities(&officer.key_file).unwrap();
    let decryptor =
        age::Decryptor::new_buffered(std::io::BufReader::new(std::fs::File::open(file).unwrap()))
            .unwrap();
    let mut plain = Vec::new();
    decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
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

/// What someone holding `signer`'s secret can make of an archive: its manifest changed
/// by `change` (which may add members), signed by `signer`, the whole encrypted again to
/// the officer. Written to `out`.
fn resign(
    file: &Path,
    officer: &Officer,
    signer: &ArchiveSigner,
    out: &Path,
    change: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &mut Value),
) {
    let mut m = members(file, officer);
    let at =
        |m: &Vec<(String, Vec<u8>)>, name: &str| m.iter().position(|(n, _)| n == name).unwrap();
    let mut manifest: Value = serde_json::from_slice(&m[at(&m, "manifest.json")].1).unwrap();
    manifest["signing_key"] = json!(signer.public().to_string());
    change(&mut m, &mut manifest);
    let mut bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    bytes.push(b'\n');
    let sig = signer.sign(&bytes).into_bytes();
    let i = at(&m, "manifest.json");
    m[i].1 = bytes;
    let j = at(&m, "manifest.sig");
    m[j].1 = sig;
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in &m {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    let plain = tar.into_inner().unwrap();
    let recipient: age::x25519::Recipient = officer.recipient.parse().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut sealed = Vec::new();
    let mut w = encryptor.wrap_output(&mut sealed).unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    std::fs::write(out, sealed).unwrap();
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_message_injected_into_an_encrypted_incident_room_is_marked_in_the_opened_transcript()
 {
    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "Injection drill").await;
    let nurse = &w.nurses[0];
    let genuine = nurse
        .send_text(&rooms["ward"], "Bed 4: 2 units O neg given")
        .await
        .unwrap();
    // The same account, but no encryption: what the homeserver can write in anyone's
    // name.
    let injected = nurse
        .send_unencrypted(
            &rooms["ward"],
            "m.room.message",
            &json!({ "msgtype": "m.text", "body": "Give 10 units insulin IV now" }),
        )
        .await
        .unwrap();
    let file = stand_down(&mut w, &incident).await;

    let signer = signing_key(&w).await;
    let dest_root = tempfile::tempdir().unwrap();
    let dest = dest_root.path().join("opened");
    let opened = cordon(&[
        "archive",
        "open",
        file.to_str().unwrap(),
        "-i",
        officer.key_file.to_str().unwrap(),
        "--signer",
        &signer,
        "--out",
        dest.to_str().unwrap(),
    ])
    .await;
    let said = text(&opened);
    assert!(opened.status.success(), "{said}");
    assert!(
        said.contains("NOT PROVEN TO BE FROM THEIR SENDER: 1 unencrypted"),
        "{said}"
    );

    let nurse_id = w.nurses[0].user_id().to_string();
    for transcript in ["rooms/ward.jsonl", "rooms/ward.merged.jsonl"] {
        let lines = read_lines(&dest.join(transcript));
        let line = |id: &str| {
            lines
                .iter()
                .find(|l| l["event_id"] == id)
                .unwrap_or_else(|| panic!("{id} is not in {transcript}"))
                .clone()
        };
        let bad = line(injected.as_str());
        assert_eq!(
            bad["content"]["body"], "Give 10 units insulin IV now",
            "{bad}"
        );
        assert_eq!(bad["unauthenticated"], "unencrypted", "{bad}");
        assert_eq!(bad["sender"], nurse_id.as_str(), "{bad}");
        let good = line(genuine.as_str());
        assert!(good.get("unauthenticated").is_none(), "{good}");
        assert_eq!(good["encryption"]["verified"], true, "{good}");
        // Nothing else in the room is marked: cordon's own notices and the enrolled
        // members' messages are proven.
        let marked: Vec<&Value> = lines
            .iter()
            .filter(|l| l.get("unauthenticated").is_some())
            .collect();
        assert_eq!(marked.len(), 1, "{transcript}: {marked:#?}");
    }
    for rendering in ["rooms/ward.md", "rooms/ward.merged.md"] {
        let md = std::fs::read_to_string(dest.join(rendering)).unwrap();
        let warning = md
            .find(&format!(
                "**Not proven to be from {nurse_id}** (unencrypted)"
            ))
            .unwrap_or_else(|| panic!("{rendering} does not mark it:\n{md}"));
        let words = md.find("Give 10 units insulin IV now").unwrap();
        assert!(
            warning < words,
            "{rendering}: the warning must come first\n{md}"
        );
    }
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dest.join("manifest.json")).unwrap()).unwrap();
    let ward = manifest["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "ward")
        .unwrap();
    assert_eq!(ward["counts"]["unencrypted"], 1, "{ward}");
    assert_eq!(ward["counts"]["unverified_device"], 0, "{ward}");
    assert_eq!(ward["counts"]["mismatched_sender"], 0, "{ward}");
    let index = std::fs::read_to_string(dest.join("index.md")).unwrap();
    // Markdown-escaped as the rendering writes it: event ids hold `$` and `_`.
    let listed = injected.as_str().replace('$', "\\$").replace('_', "\\_");
    assert!(
        index.contains(&format!("event {listed}: not end-to-end encrypted")),
        "{index}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_signed_by_another_key_is_refused_with_the_key_that_signed_it() {
    let officer = Officer::new();
    let (mut w, incident, _rooms) = declared(&officer, "Re-signed archive").await;
    let file = stand_down(&mut w, &incident).await;
    let pinned = signing_key(&w).await;
    let work = tempfile::tempdir().unwrap();
    let trust_file = work.path().join("records-office.keys");
    std::fs::write(&trust_file, format!("{pinned}  St Elsewhere cordon\n")).unwrap();
    let key = officer.key_file.to_str().unwrap();
    let trust = trust_file.to_str().unwrap();

    // The genuine archive verifies against either.
    for how in [["--signer", pinned.as_str()], ["--trust-file", trust]] {
        let ok = cordon(&[
            "archive",
            "verify",
            file.to_str().unwrap(),
            "-i",
            key,
            how[0],
            how[1],
        ])
        .await;
        assert!(ok.status.success(), "{how:?}: {}", text(&ok));
        assert!(text(&ok).contains("archive OK"), "{}", text(&ok));
    }

    // Re-sealed with other contents by someone with a key of their own.
    let forger = ArchiveSigner::generate();
    let forged = work.path().join("forged.cordon-archive.age");
    resign(&file, &officer, &forger, &forged, |_, m| {
        m["display_name"] = json!("Nothing happened");
    });
    let forged_arg = forged.to_str().unwrap();
    let forger_key = forger.public().to_string();
    for how in [["--signer", pinned.as_str()], ["--trust-file", trust]] {
        let refused = cordon(&["archive", "verify", forged_arg, "-i", key, how[0], how[1]]).await;
        let said = text(&refused);
        assert_eq!(refused.status.code(), Some(1), "{how:?}: {said}");
        assert!(
            said.contains(&format!("signed by {forger_key}")),
            "{how:?}: {said}"
        );
        assert!(!said.contains("archive OK"), "{how:?}: {said}");
        let out = work.path().join("forged-out");
        let refused = cordon(&[
            "archive",
            "open",
            forged_arg,
            "-i",
            key,
            how[0],
            how[1],
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
        assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
        assert!(!out.exists(), "a refused archive was written out");
    }
    // Without a key to trust, nothing is verified: the forgery is not "archive OK".
    let unpinned = cordon(&["archive", "verify", forged_arg, "-i", key]).await;
    let said = text(&unpinned);
    assert_eq!(unpinned.status.code(), Some(2), "{said}");
    assert!(!said.contains("archive OK"), "{said}");
    assert!(said.contains("--trust-file"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_archive_with_dot_dot_in_a_room_key_writes_nothing_outside_out() {
    let officer = Officer::new();
    let (mut w, incident, _rooms) = declared(&officer, "Crafted archive").await;
    let file = stand_down(&mut w, &incident).await;
    let pinned = signing_key(&w).await;
    // Signed with cordon's own key (a leaked key, a compromised host): the signature
    // says who sealed it, not that its names are harmless.
    let own =
        ArchiveSigner::load(&w.setup.state_dir, &w.setup.store_passphrase().unwrap()).unwrap();
    assert_eq!(own.public().to_string(), pinned);
    let work = tempfile::tempdir().unwrap();
    let crafted = work.path().join("crafted.cordon-archive.age");
    let segment = b"not really a segment".to_vec();
    let sha = hex::encode(Sha256::digest(&segment));
    resign(&file, &officer, &own, &crafted, |members, m| {
        members.insert(
            0,
            ("pre-seal/ward-000001.jsonl.age".into(), segment.clone()),
        );
        m["pre_seal"].as_array_mut().unwrap().push(json!({
            "room_key": "../../escaped",
            "file": "pre-seal/ward-000001.jsonl.age",
            "sha256": sha,
            "bytes": segment.len(),
            "lines": 1,
        }));
    });
    let case = work.path().join("case");
    std::fs::create_dir(&case).unwrap();
    let out = case.join("out");
    let opened = cordon(&[
        "archive",
        "open",
        crafted.to_str().unwrap(),
        "-i",
        officer.key_file.to_str().unwrap(),
        "--signer",
        &pinned,
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    let said = text(&opened);
    // First what matters most: nothing beside `--out` (where `rooms/../../escaped`
    // lands).
    let outside: Vec<String> = files_under(&case)
        .into_iter()
        .filter(|f| !f.starts_with("out/"))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside --out: {outside:?}\n{said}"
    );
    assert_eq!(opened.status.code(), Some(1), "{said}");
    assert!(said.contains("room key \"../../escaped\""), "{said}");
    assert!(
        files_under(work.path())
            .iter()
            .all(|f| !f.contains("escaped")),
        "{:?}",
        files_under(work.path())
    );
    assert!(!out.exists(), "a refused archive was written out");
}
