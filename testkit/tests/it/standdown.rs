//! Stand-down end to end against the real Synapse: an incident with encrypted history
//! (messages, an edit, a redaction, a reaction, an image) is stood down; the sealed
//! archive is opened with the records officer's key through `cordon archive`, and the
//! rooms and their media are checked gone through the admin API. Also: a legal hold
//! blocks destruction, and a SIGKILL at every step of the pipeline still ends in one
//! complete archive and destroyed rooms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use cordon::dev::{Synapse, TestUser};
use matrix_sdk::attachment::AttachmentConfig;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::events::room::message::{ReplacementMetadata, RoomMessageEventContent};
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{WAIT, cordon_bin};
use crate::world::{Timing, World, admin_get, admin_token, incident_id_in};

/// A records officer: an age identity, its file, and the public key the playbook names.
pub(crate) struct Officer {
    _dir: tempfile::TempDir,
    pub(crate) key_file: PathBuf,
    pub(crate) recipient: String,
}

impl Officer {
    pub(crate) fn new() -> Officer {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let key_file = dir.path().join("officer.key");
        std::fs::write(
            &key_file,
            format!("{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
        Officer {
            recipient: identity.to_public().to_string(),
            key_file,
            _dir: dir,
        }
    }
}

/// A world whose playbook seals to `officer`, with the incident declared and both rooms
/// joined by everyone invited to them. Returns the incident id and its rooms by key.
pub(crate) async fn declared(
    officer: &Officer,
    name: &str,
) -> (World, String, BTreeMap<String, OwnedRoomId>) {
    let hs = Synapse::shared().await.expect("synapse");
    declared_on(hs, officer, name).await
}

/// [`declared`], on the homeserver `hs`.
async fn declared_on(
    hs: &'static Synapse,
    officer: &Officer,
    name: &str,
) -> (World, String, BTreeMap<String, OwnedRoomId>) {
    declared_timed(hs, officer, name, Timing::default()).await
}

/// [`declared_on`], with the playbook's `timing` (its recipient is the officer's).
pub(crate) async fn declared_timed(
    hs: &'static Synapse,
    officer: &Officer,
    name: &str,
    timing: Timing,
) -> (World, String, BTreeMap<String, OwnedRoomId>) {
    let timing = Timing {
        recipient: Some(officer.recipient.clone()),
        ..timing
    };
    let w = World::builder().on(hs).timing(timing).build().await;
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    let summary = w.bot_says("DECLARED").await;
    let incident = incident_id_in(&summary);
    let rooms: BTreeMap<String, OwnedRoomId> = w
        .created_rooms(&incident)
        .await
        .into_iter()
        .map(|(k, v)| (k, v[0].clone()))
        .collect();
    // The commander is in the command room; the nurse in both.
    join_when_invited(&w.commander, &[&rooms["command"]]).await;
    join_when_invited(&w.nurses[0], &[&rooms["command"], &rooms["ward"]]).await;
    (w, incident, rooms)
}

pub(crate) async fn join_when_invited(user: &TestUser, rooms: &[&OwnedRoomId]) {
    let mut left: Vec<&OwnedRoomId> = rooms.to_vec();
    while !left.is_empty() {
        let invite = user.wait_for_invite(WAIT).await.unwrap();
        left.retain(|r| **r != invite.room_id());
    }
    for room in rooms {
        user.join(room).await.unwrap();
    }
}

/// What the test sent, to compare with the archive.
#[derive(Default)]
struct Sent {
    /// (room key, event id, body) of every text message.
    texts: Vec<(String, OwnedEventId, String)>,
    edit: Option<(OwnedEventId, String)>,
    redacted: Option<OwnedEventId>,
    reaction: Option<(OwnedEventId, String)>,
    image: Option<(OwnedEventId, Vec<u8>, String)>,
}

/// A PNG's worth of bytes (the content does not matter to anyone but the test).
fn scan_bytes() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..4096u32).map(|i| (i % 251) as u8));
    bytes
}

/// `per_room` text messages in each room (the commander in `command`, the nurse in
/// `ward`), then an edit, a redaction with a reason, a reaction and an encrypted image.
async fn write_history(w: &World, rooms: &BTreeMap<String, OwnedRoomId>, per_room: usize) -> Sent {
    let mut sent = Sent::default();
    for i in 0..per_room {
        for (key, user) in [("command", &w.commander), ("ward", &w.nurses[0])] {
            let body = format!("{key} {i}: bed {} needs O neg", i % 17);
            let id = user.send_text(&rooms[key], &body).await.unwrap();
            sent.texts.push((key.to_owned(), id, body));
        }
    }
    let command = w.commander.client().get_room(&rooms["command"]).unwrap();
    let (_, first, _) = sent.texts[0].clone();
    let edit = RoomMessageEventContent::text_plain("corrected: bed 0 needs 2 units O neg")
        .make_replacement(ReplacementMetadata::new(first.clone(), None));
    command.send(edit).await.unwrap();
    sent.edit = Some((
        first.clone(),
        "corrected: bed 0 needs 2 units O neg".to_owned(),
    ));

    let (_, second, _) = sent.texts[2].clone();
    command
        .redact(&second, Some("wrong patient"), None)
        .await
        .unwrap();
    sent.redacted = Some(second);

    let nurse_command = w.nurses[0].client().get_room(&rooms["command"]).unwrap();
    nurse_command
        .send(ReactionEventContent::new(Annotation::new(
            first.clone(),
            "👍".to_owned(),
        )))
        .await
        .unwrap();
    sent.reaction = Some((first, "👍".to_owned()));

    let ward = w.nurses[0].client().get_room(&rooms["ward"]).unwrap();
    let bytes = scan_bytes();
    let response = ward
        .send_attachment(
            "chest-xray.png",
            &"image/png".parse::<mime::Mime>().unwrap(),
            bytes.clone(),
            AttachmentConfig::new(),
        )
        .await
        .unwrap();
    // The media address, as the nurse's client sees it in the event.
    let event = ward.event(&response.event_id, None).await.unwrap();
    let content: Value = event
        .raw()
        .deserialize_as::<Value>()
        .ok()
        .and_then(|e| e.get("content").cloned())
        .unwrap_or_default();
    let mxc = content
        .pointer("/file/url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    assert!(
        mxc.starts_with("mxc://"),
        "the image is encrypted media: {content}"
    );
    sent.image = Some((response.event_id, bytes, mxc));
    sent
}

pub(crate) fn archive_path(w: &World, incident: &str) -> PathBuf {
    w.setup
        .dir
        .join("archives")
        .join(format!("{incident}.cordon-archive.age"))
}

pub(crate) async fn cordon(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(cordon_bin())
        .args(args)
        .output()
        .await
        .unwrap()
}

pub(crate) fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The bot's archive signing key, as `cordon archive pubkey` prints it for records
/// officers to pin.
pub(crate) async fn signing_key(w: &World) -> String {
    let out = cordon(&[
        "archive",
        "pubkey",
        "--state-dir",
        w.setup.state_dir.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "archive pubkey: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// `cordon archive <command> FILE -i KEY --signer <w's bot key>`, then `extra`: what a
/// records officer runs who pinned this bot's signing key.
pub(crate) async fn archive_cli(
    w: &World,
    command: &str,
    file: &Path,
    key_file: &Path,
    extra: &[&str],
) -> std::process::Output {
    let signer = signing_key(w).await;
    let mut args = vec![
        "archive",
        command,
        file.to_str().unwrap(),
        "-i",
        key_file.to_str().unwrap(),
        "--signer",
        &signer,
    ];
    args.extend_from_slice(extra);
    cordon(&args).await
}

/// Opens the archive with the officer's key, pinning `w`'s bot as its signer, into a
/// fresh directory.
pub(crate) async fn open(w: &World, officer: &Officer, file: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("opened");
    let done = archive_cli(
        w,
        "open",
        file,
        &officer.key_file,
        &["--out", dest.to_str().unwrap()],
    )
    .await;
    assert!(done.status.success(), "archive open: {}", text(&done));
    out
}

pub(crate) fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A Synapse admin API call's HTTP status.
async fn admin_status(w: &World, path: &str) -> u16 {
    let admin = admin_token(w.hs).await;
    reqwest::Client::new()
        .get(w.hs.base_url().join(path).unwrap())
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every room still exists on the homeserver (its admin details answer); `why` ends the
/// failure's message ("room ward was destroyed <why>").
pub(crate) async fn assert_rooms_remain(
    w: &World,
    rooms: &BTreeMap<String, OwnedRoomId>,
    why: &str,
) {
    for (key, room) in rooms {
        assert_eq!(
            admin_status(w, &format!("_synapse/admin/v1/rooms/{room}")).await,
            200,
            "room {key} was destroyed {why}"
        );
    }
}

/// Every room answers as deleted (no details, deletion complete), no member can read it.
pub(crate) async fn assert_destroyed(w: &World, rooms: &BTreeMap<String, OwnedRoomId>) {
    for (key, room) in rooms {
        assert_eq!(
            admin_status(w, &format!("_synapse/admin/v1/rooms/{room}")).await,
            404,
            "room {key} still exists"
        );
        let status = admin_get(
            w.hs,
            &format!("_synapse/admin/v2/rooms/{room}/delete_status"),
        )
        .await;
        // Synapse keeps a deletion's status for a while after it completes.
        let results = status["results"].as_array().cloned().unwrap_or_default();
        assert!(
            results.iter().all(|r| r["status"] == "complete"),
            "room {key}: {status}"
        );
        let read = w.nurses[0]
            .client()
            .get_room(room)
            .unwrap()
            .messages(matrix_sdk::room::MessagesOptions::backward())
            .await;
        assert!(read.is_err(), "a member can still read room {key}");
    }
}

fn cordon_notices(w: &World, needle: &str) -> usize {
    w.bot_messages(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stood_down_incident_is_sealed_verified_opened_and_its_rooms_destroyed() {
    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "Archive drill").await;
    let sent = write_history(&w, &rooms, 100).await;

    w.say(&format!("!cordon standdown {incident}")).await;
    let sealed = w.bot_says("is sealed and verified").await;
    assert!(sealed.contains("cordon cannot open it"), "{sealed}");
    let destroyed = w.bot_says("room(s) are destroyed").await;
    assert!(destroyed.contains("2 room(s)"), "{destroyed}");
    assert!(destroyed.contains("1 attachment file(s)"), "{destroyed}");
    w.stop_bot();

    let file = archive_path(&w, &incident);
    // Verified by the records officer's CLI, the bot's key pinned: integrity,
    // signature, manifest.
    let verified = archive_cli(&w, "verify", &file, &officer.key_file, &[]).await;
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains(&incident), "{}", text(&verified));
    // A key the archive was not sealed to is refused.
    let stranger = Officer::new();
    let refused = archive_cli(&w, "verify", &file, &stranger.key_file, &[]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));

    let opened = open(&w, &officer, &file).await;
    let root = opened.path().join("opened");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("manifest.json")).unwrap())
            .unwrap();
    let mut by_key: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for room in manifest["rooms"].as_array().unwrap() {
        let key = room["key"].as_str().unwrap().to_owned();
        let path = root.join(room["file"].as_str().unwrap());
        // The hash in the signed manifest is the hash of the transcript.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            room["sha256"].as_str().unwrap(),
            "{key}'s transcript hash"
        );
        by_key.insert(key, read_lines(&path));
    }
    assert_eq!(by_key.len(), 2, "{manifest}");
    let find = |key: &str, id: &str| -> Value {
        by_key[key]
            .iter()
            .find(|l| l["event_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is not in {key}'s transcript"))
    };
    // Every message as the members saw it, each once.
    for (key, id, body) in &sent.texts {
        let line = find(key, id.as_str());
        if Some(id) == sent.redacted.as_ref() {
            continue;
        }
        assert_eq!(line["content"]["body"], body.as_str(), "{line}");
        assert_eq!(line["type"], "m.room.message");
        assert!(line.get("undecryptable").is_none(), "{line}");
        let copies = by_key[key]
            .iter()
            .filter(|l| l["event_id"] == id.as_str())
            .count();
        assert_eq!(copies, 1, "{id} is in the transcript {copies} times");
    }
    let (original, new_body) = sent.edit.as_ref().unwrap();
    assert!(
        by_key["command"].iter().any(|l| {
            l["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && l["content"]["m.relates_to"]["event_id"] == original.as_str()
                && l["content"]["m.new_content"]["body"] == new_body.as_str()
        }),
        "the edit is kept"
    );
    let redacted = find("command", sent.redacted.as_ref().unwrap().as_str());
    assert!(redacted.get("content").is_none(), "{redacted}");
    assert_eq!(
        redacted["redacted"]["reason"], "wrong patient",
        "{redacted}"
    );
    assert_eq!(
        redacted["redacted"]["by"],
        w.commander.user_id().as_str(),
        "{redacted}"
    );
    let (target, key) = sent.reaction.as_ref().unwrap();
    assert!(
        by_key["command"].iter().any(|l| {
            l["type"] == "m.reaction"
                && l["content"]["m.relates_to"]["event_id"] == target.as_str()
                && l["content"]["m.relates_to"]["key"] == key.as_str()
        }),
        "the reaction is kept"
    );
    assert!(
        by_key["ward"]
            .iter()
            .any(|l| l["type"] == "m.room.member"
                && l["state_key"] == w.nurses[0].user_id().as_str()),
        "membership changes are kept"
    );
    let (image, bytes, mxc) = sent.image.as_ref().unwrap();
    let line = find("ward", image.as_str());
    assert_eq!(line["media"]["mxc"], mxc.as_str(), "{line}");
    assert_eq!(line["media"]["encrypted"], true, "{line}");
    let stored = std::fs::read(root.join(line["media"]["file"].as_str().unwrap())).unwrap();
    assert_eq!(
        &stored, bytes,
        "the image is archived decrypted, byte for byte"
    );
    assert!(root.join("rooms/command.md").exists());
    assert!(root.join("audit.jsonl").exists());
    let rendering = std::fs::read_to_string(root.join("rooms/ward.md")).unwrap();
    assert!(
        rendering.contains("ward 7: bed 7 needs O neg"),
        "{rendering}"
    );

    // Nothing remains on the server: the rooms and the image.
    assert_destroyed(&w, &rooms).await;
    let (server, media_id) = mxc.trim_start_matches("mxc://").split_once('/').unwrap();
    let download = w.nurses[0]
        .client()
        .media()
        .get_media_content(
            &matrix_sdk::media::MediaRequestParameters {
                source: matrix_sdk::ruma::events::room::MediaSource::Plain(
                    format!("mxc://{server}/{media_id}").into(),
                ),
                format: matrix_sdk::media::MediaFormat::File,
            },
            false,
        )
        .await;
    assert!(
        download.is_err(),
        "the image's media is still on the server"
    );
    // Exactly one notice of each, and the audit log says what was destroyed and when.
    assert_eq!(cordon_notices(&w, "is sealed and verified"), 1);
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let id = cordon::domain::incident::IncidentId::parse(&incident).unwrap();
    let audit = store.audit_entries(.., Some(&id)).unwrap();
    let destroyed_rooms = audit
        .iter()
        .filter(|e| e.action == "room.destroyed")
        .count();
    assert_eq!(destroyed_rooms, 2, "{audit:?}");
    assert!(audit.iter().any(|e| e.action == "media.deleted"));
    let state = store.incident(&id).unwrap().unwrap();
    assert_eq!(state.state, cordon::domain::incident::State::Destroyed);
    assert!(!state.purge_pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legal_hold_blocks_destruction_until_it_is_released() {
    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "Hold at stand-down").await;
    w.nurses[0]
        .send_text(&rooms["ward"], "Keep this for the inquest")
        .await
        .unwrap();
    w.say(&format!(
        "!cordon hold {incident} --reason \"Inquest 2026/7\""
    ))
    .await;
    w.bot_says("Legal hold placed").await;
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    let held = w.bot_says("are not destroyed: a legal hold is set").await;
    assert!(held.contains("Inquest 2026/7"), "{held}");
    // The rooms still exist and are still readable by their members.
    assert_rooms_remain(&w, &rooms, "under a legal hold").await;
    // The hold outlives a restart: once the restarted scheduler has run everything due
    // (a resumed stand-down runs through its timer, due at once), the rooms are there.
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    w.wait_scheduler_idle().await;
    assert_rooms_remain(&w, &rooms, "under a legal hold, after a restart").await;
    w.say(&format!("!cordon release {incident}")).await;
    w.bot_says("The stand-down goes on now").await;
    w.bot_says("room(s) are destroyed").await;
    assert_destroyed(&w, &rooms).await;
    w.stop_bot();
    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let lines = read_lines(&opened.path().join("opened/rooms/ward.jsonl"));
    assert!(
        lines
            .iter()
            .any(|l| l["content"]["body"] == "Keep this for the inquest"),
        "the held message is in the archive"
    );
}

/// The points of the pipeline a SIGKILL lands on, in order.
/// `@2` is the second time in a process: rooms are frozen one after the other, so that
/// is the second room. (They are destroyed several at once, so which room reaches
/// `standdown.kicked` second is a race, and it is not a point here.)
///
/// `standdown.archived` and `standdown.destroyed` land just after the incident's state
/// is recorded and before what follows it: they found that a stand-down resumed there
/// never told the control room the archive was sealed, nor that the rooms were
/// destroyed, nor armed the end of the archive's keep time. `standdown.forgotten` lands
/// after a room was forgotten in cordon's own stores and before that is recorded: the
/// restart forgets it again (it is gone from the client by then) and goes on.
const KILL_POINTS: [&str; 11] = [
    "standdown.before_freeze",
    "standdown.before_freeze@2",
    "standdown.frozen",
    "standdown.seal",
    "standdown.sealed",
    "standdown.archived",
    "standdown.kicked",
    "standdown.delete-requested",
    "standdown.media-deleted",
    "standdown.destroyed",
    "standdown.forgotten",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_every_step_of_the_stand_down_ends_in_one_archive_and_destroyed_rooms() {
    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "Kill drill").await;
    let sent = write_history(&w, &rooms, 20).await;
    let mut first = true;
    for point in KILL_POINTS {
        let bot = w.restart(&[("CORDON_FAILPOINT", point)]);
        bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
        if first {
            w.say(&format!("!cordon standdown {incident}")).await;
            first = false;
        }
        w.kill_at(point).await;
    }
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    assert_stood_down_once(&mut w, &officer, &incident, &rooms, &sent).await;
}

/// The disk under the store fills up at two points of a stand-down: once the archive is
/// written but before it is recorded, and (after a restart) while the rooms are being
/// destroyed. Each time cordon tells the control room and stops; the restart with space
/// again ends in one archive holding every message once, and destroyed rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_the_stand_down_stops_cordon_and_the_restart_ends_in_one_archive() {
    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "Disk drill").await;
    let sent = write_history(&w, &rooms, 5).await;
    for (n, point) in ["standdown.sealed", "standdown.kicked"].iter().enumerate() {
        let bot = w.restart(&[(cordon::failpoint::DISK_FULL_VAR, point)]);
        bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
        if n == 0 {
            w.say(&format!("!cordon standdown {incident}")).await;
        }
        crate::faults::stops_on_a_full_disk(&mut w, point, n + 1).await;
    }
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    assert_stood_down_once(&mut w, &officer, &incident, &rooms, &sent).await;
}

/// The homeserver restarts in the middle of a stand-down: cordon is held just before
/// it exports the rooms' history, Synapse is stopped, the export is let go (and fails),
/// and Synapse comes back. The stand-down is retried until it is through, and ends in
/// one archive holding every message once, and destroyed rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synapse_restart_during_the_stand_down_ends_in_one_archive_and_destroyed_rooms() {
    use cordon::failpoint::{HOLD_VAR, RELEASE_VAR};
    let officer = Officer::new();
    let hs = Synapse::own().await.expect("synapse");
    let (mut w, incident, rooms) = declared_on(hs, &officer, "Restart drill").await;
    let sent = write_history(&w, &rooms, 5).await;
    let release = w.dir.path().join("release-standdown");
    let release_var = release.to_str().unwrap().to_owned();
    let bot = w.restart(&[(HOLD_VAR, "standdown.seal"), (RELEASE_VAR, &release_var)]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    w.say(&format!("!cordon standdown {incident}")).await;
    let bot = w.bot.as_mut().unwrap();
    bot.wait_for_log("failpoint holding: standdown.seal", WAIT)
        .await
        .unwrap();
    let stopped = std::time::Instant::now();
    hs.stop().await;
    std::fs::write(&release, b"").unwrap();
    bot.wait_for_log("stand-down step failed; retrying", WAIT)
        .await
        .unwrap();
    hs.restart().await.expect("synapse comes back");
    let away = stopped.elapsed();
    w.bot_says("room(s) are destroyed").await;
    // For docs/reliability.md (not asserted).
    eprintln!(
        "synapse restart during a stand-down: away {:.1} s, destroyed {:.1} s after it was back",
        away.as_secs_f64(),
        (stopped.elapsed() - away).as_secs_f64()
    );
    assert_stood_down_once(&mut w, &officer, &incident, &rooms, &sent).await;
}

/// The end of a stand-down that was interrupted and resumed: every room destroyed, one
/// archive with every message in it once, each notice once, and the end of the
/// archive's keep time armed. Stops the bot.
async fn assert_stood_down_once(
    w: &mut World,
    officer: &Officer,
    incident: &str,
    rooms: &BTreeMap<String, OwnedRoomId>,
    sent: &Sent,
) {
    w.bot_says("room(s) are destroyed").await;
    assert_destroyed(w, rooms).await;
    w.stop_bot();

    // One archive, no half-written attempt beside it.
    let dir = w.setup.dir.join("archives");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![format!("{incident}.cordon-archive.age")],
        "the archive directory holds exactly one archive"
    );
    let opened = open(w, officer, &archive_path(w, incident)).await;
    for key in ["command", "ward"] {
        let lines = read_lines(&opened.path().join(format!("opened/rooms/{key}.jsonl")));
        for (_, id, body) in sent.texts.iter().filter(|(k, _, _)| k == key) {
            if Some(id) == sent.redacted.as_ref() {
                continue;
            }
            let found: Vec<&Value> = lines
                .iter()
                .filter(|l| l["event_id"] == id.as_str())
                .collect();
            assert_eq!(found.len(), 1, "{id} in {key}");
            assert_eq!(found[0]["content"]["body"], body.as_str());
        }
    }
    // Each notice once, whatever the interruptions repeated.
    assert_eq!(cordon_notices(w, "is sealed and verified"), 1);
    assert_eq!(cordon_notices(w, "room(s) are destroyed"), 1);
    assert_eq!(cordon_notices(w, "has stood down"), 1);
    // And the archive's deletion at the end of its keep time is armed.
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    assert!(store.verify_audit().unwrap().is_intact());
    let id = cordon::domain::incident::IncidentId::parse(incident).unwrap();
    let keep = cordon::domain::incident::timers::keep_time_end_id(&id);
    let timers = store.timers_for(&id).unwrap();
    assert!(
        timers.iter().any(|t| t.id == keep),
        "the end of the keep time is not armed: {timers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_rights_the_rooms_are_emptied_left_and_reported_purge_pending() {
    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "No admin").await;
    w.nurses[0]
        .send_text(&rooms["ward"], "Sealed, then left")
        .await
        .unwrap();
    // The operator took cordon's server admin rights away after the declaration.
    let admin = admin_token(w.hs).await;
    let demoted = reqwest::Client::new()
        .put(
            w.hs.base_url()
                .join(&format!("_synapse/admin/v2/users/{}", w.bot_id()))
                .unwrap(),
        )
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "admin": false }))
        .send()
        .await
        .unwrap();
    assert!(demoted.status().is_success(), "{:?}", demoted.status());

    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    let closed = w.bot_says("purge pending").await;
    assert!(closed.contains("left and forgot 2 room(s)"), "{closed}");
    w.stop_bot();

    for (key, room) in &rooms {
        // The server still has the room (nobody could purge it) but nobody is in it.
        let members = admin_get(w.hs, &format!("_synapse/admin/v1/rooms/{room}/members")).await;
        assert_eq!(members["total"], 0, "room {key}: {members}");
        // Kicked, so no longer able to post. (What a former member saw before the kick
        // stays readable to them until an admin purges the room: "purge pending".)
        let sent = w.nurses[0].send_text(room, "still here?").await;
        assert!(
            sent.is_err(),
            "a kicked member can still post in room {key}"
        );
    }
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let id = cordon::domain::incident::IncidentId::parse(&incident).unwrap();
    let state = store.incident(&id).unwrap().unwrap();
    assert_eq!(state.state, cordon::domain::incident::State::Destroyed);
    assert!(state.purge_pending, "the purge is reported as pending");
    let audit = store.audit_entries(.., Some(&id)).unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.action == "room.left").count(),
        2,
        "{audit:?}"
    );
    assert!(!audit.iter().any(|e| e.action == "room.destroyed"));
    drop(store);
    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let lines = read_lines(&opened.path().join("opened/rooms/ward.jsonl"));
    assert!(
        lines
            .iter()
            .any(|l| l["content"]["body"] == "Sealed, then left")
    );
}

/// Past the playbook's `archive.keep` (30 days): the bot's clock skewed forward.
const PAST_KEEP: (&str, &str) = ("CORDON_CLOCK_SKEW_SECS", "2678400");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sealed_archive_is_deleted_at_the_end_of_its_keep_time_unless_held() {
    let officer = Officer::new();
    let (mut w, incident, _rooms) = declared(&officer, "Keep time").await;
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("room(s) are destroyed").await;
    let file = archive_path(&w, &incident);
    assert!(file.exists());
    w.say(&format!(
        "!cordon hold {incident} --reason \"FOI request 118\""
    ))
    .await;
    let placed = w.bot_says("Legal hold placed").await;
    assert!(placed.contains("sealed archive is kept"), "{placed}");

    // Past the keep time under the hold: the archive stays.
    let bot = w.restart(&[PAST_KEEP]);
    bot.wait_for_log("the sealed archive is kept past its keep time", WAIT)
        .await
        .unwrap();
    w.stop_bot();
    assert!(file.exists(), "a held archive was deleted");
    let id = cordon::domain::incident::IncidentId::parse(&incident).unwrap();
    {
        let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
        assert_eq!(
            store.incident(&id).unwrap().unwrap().state,
            cordon::domain::incident::State::Destroyed
        );
    }

    // Released (at the real time, so the command is fresh), then past the keep time.
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    w.say(&format!("!cordon release {incident}")).await;
    w.bot_says("deleted at the end of its keep time").await;
    assert!(file.exists(), "released before its keep time ended");
    let bot = w.restart(&[PAST_KEEP]);
    bot.wait_for_log("sealed archive deleted at the end of its keep time", WAIT)
        .await
        .unwrap();
    w.stop_bot();
    assert!(!file.exists(), "the archive outlived its keep time");
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    assert_eq!(
        store.incident(&id).unwrap().unwrap().state,
        cordon::domain::incident::State::Closed
    );
    let audit = store.audit_entries(.., Some(&id)).unwrap();
    let deleted: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "archive.deleted")
        .collect();
    assert_eq!(deleted.len(), 1, "{audit:?}");
}

/// Sends an encrypted image into `room` and returns its event and its file's address.
async fn send_image(room: &matrix_sdk::Room, name: &str) -> (OwnedEventId, String) {
    let response = room
        .send_attachment(
            name,
            &"image/png".parse::<mime::Mime>().unwrap(),
            scan_bytes(),
            AttachmentConfig::new(),
        )
        .await
        .unwrap();
    let event: Value = room
        .event(&response.event_id, None)
        .await
        .unwrap()
        .raw()
        .deserialize_as::<Value>()
        .unwrap();
    let mxc = event
        .pointer("/content/file/url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    assert!(mxc.starts_with("mxc://"), "encrypted media: {event}");
    (response.event_id, mxc)
}

/// The HTTP status of downloading `mxc` as `user` (authenticated media).
async fn media_status(user: &TestUser, mxc: &str) -> u16 {
    let (server, media_id) = mxc.trim_start_matches("mxc://").split_once('/').unwrap();
    let client = user.client();
    let url = client
        .homeserver()
        .join(&format!(
            "_matrix/client/v1/media/download/{server}/{media_id}"
        ))
        .unwrap();
    reqwest::Client::new()
        .get(url)
        .bearer_auth(client.access_token().unwrap())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Attachments whose messages were redacted before the stand-down, one by the retention
/// sweep and one by its sender, are deleted with the rooms: the export finds no address
/// in a redacted event, and Synapse cannot list encrypted media, so cordon noted them
/// when it first read the messages (in sync, and in the sweep before it redacted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_of_messages_redacted_before_the_stand_down_are_deleted() {
    let officer = Officer::new();
    let hs = Synapse::shared().await.expect("synapse");
    let timing = Timing {
        retention: "{ messages: 30s }",
        ..Timing::default()
    };
    let (mut w, incident, rooms) = declared_timed(hs, &officer, "Redacted scans", timing).await;
    let ward = w.nurses[0].client().get_room(&rooms["ward"]).unwrap();
    let (swept, swept_mxc) = send_image(&ward, "xray-1.png").await;
    let (taken_back, taken_back_mxc) = send_image(&ward, "xray-2.png").await;
    // Its sender takes the second back once cordon has read it (a redaction that came
    // first would leave cordon nothing to read).
    w.wait_for_log_line(&["attachment addresses noted", taken_back.as_str()])
        .await;
    ward.redact(&taken_back, Some("wrong patient"), None)
        .await
        .unwrap();
    // The first goes when retention's window ends: the clock moves a minute on.
    w.advance_clock(Duration::from_secs(60)).await;
    assert_eq!(
        crate::schedule::wait_redacted(&w, &rooms["ward"], &swept).await,
        "retention: 30s"
    );
    for mxc in [&swept_mxc, &taken_back_mxc] {
        assert_eq!(
            media_status(&w.commander, mxc).await,
            200,
            "{mxc} is on the server before the stand-down"
        );
    }

    w.say(&format!("!cordon standdown {incident}")).await;
    let destroyed = w.bot_says("room(s) are destroyed").await;
    assert!(destroyed.contains("2 attachment file(s)"), "{destroyed}");
    for mxc in [&swept_mxc, &taken_back_mxc] {
        assert_eq!(
            media_status(&w.commander, mxc).await,
            404,
            "{mxc} outlived the stand-down"
        );
    }
    w.stop_bot();
}

/// Once the rooms are destroyed, cordon's own stores forget them: a copy of its state
/// directory holds no megolm session of theirs (read back through matrix-sdk's own
/// store API, with the store passphrase) and its state store no longer knows them, and
/// the homeserver's key backup holds none of their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordons_stores_keep_no_key_of_a_destroyed_room() {
    use matrix_sdk::StateStore;
    use matrix_sdk_base::crypto::store::CryptoStore;

    let officer = Officer::new();
    let (mut w, incident, rooms) = declared(&officer, "Forget drill").await;
    for key in ["command", "ward"] {
        w.nurses[0]
            .send_text(&rooms[key], &format!("{key}: bed 4 to theatre"))
            .await
            .unwrap();
    }
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("room(s) are destroyed").await;
    w.stop_bot();

    let passphrase = std::fs::read_to_string(w.setup.dir.join("store-passphrase")).unwrap();
    let sdk_store = w.setup.state_dir.join("matrix");
    {
        let crypto = matrix_sdk::SqliteCryptoStore::open(&sdk_store, Some(&passphrase))
            .await
            .unwrap();
        for (key, room) in &rooms {
            let sessions = crypto
                .get_inbound_group_sessions_by_room_id(room)
                .await
                .unwrap();
            assert!(
                sessions.is_empty(),
                "cordon's crypto store still holds {} session(s) of the destroyed room {key}",
                sessions.len()
            );
        }
        // What was not destroyed is kept: the control room's sessions are read back.
        assert!(
            !crypto
                .get_inbound_group_sessions_by_room_id(w.control())
                .await
                .unwrap()
                .is_empty(),
            "the control room's sessions are gone too"
        );
    }
    {
        let state = matrix_sdk::SqliteStateStore::open(&sdk_store, Some(&passphrase))
            .await
            .unwrap();
        let known: Vec<OwnedRoomId> = state
            .get_room_infos(&matrix_sdk::store::RoomLoadSettings::All)
            .await
            .unwrap()
            .iter()
            .map(|info| info.room_id().to_owned())
            .collect();
        for (key, room) in &rooms {
            assert!(
                !known.contains(room),
                "cordon's state store still knows the destroyed room {key}"
            );
        }
        assert!(known.contains(w.control()), "{known:?}");
    }

    // Each room forgotten once, and it did hold keys (the nurse wrote in both).
    let store = cordon::store::Store::open_existing(&w.store_dir()).unwrap();
    let id = cordon::domain::incident::IncidentId::parse(&incident).unwrap();
    let forgotten: Vec<Value> = store
        .audit_entries(.., Some(&id))
        .unwrap()
        .iter()
        .filter(|e| e.action == "room.forgotten")
        .map(|e| serde_json::from_str(&e.details).unwrap())
        .collect();
    assert_eq!(forgotten.len(), 2, "{forgotten:?}");
    for details in &forgotten {
        assert!(details["sessions_deleted"].as_u64() >= Some(1), "{details}");
        assert_eq!(details["backup_cleared"], true, "{details}");
    }
    for record in store.rooms(&id).unwrap() {
        assert!(record.forgotten_at.is_some(), "{record:?}");
    }

    // Nor does the key backup on the server hold any key of the rooms.
    let token = cordon::matrix::session::read_session(
        &w.setup.state_dir.join("session.json"),
        &w.setup.store_passphrase().unwrap(),
    )
    .unwrap()
    .expect("a saved session")
    .session
    .tokens
    .access_token;
    let http = reqwest::Client::new();
    let version: Value = http
        .get(
            w.hs.base_url()
                .join("_matrix/client/v3/room_keys/version")
                .unwrap(),
        )
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = version["version"].as_str().unwrap();
    for (key, room) in &rooms {
        let backed_up: Value = http
            .get(
                w.hs.base_url()
                    .join(&format!(
                        "_matrix/client/v3/room_keys/keys/{}?version={version}",
                        url::form_urlencoded::byte_serialize(room.as_str().as_bytes())
                            .collect::<String>()
                    ))
                    .unwrap(),
            )
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            backed_up["sessions"].as_object().map(|s| s.len()),
            Some(0),
            "the key backup still holds keys of room {key}: {backed_up}"
        );
    }
}
