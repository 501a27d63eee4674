//! Retention sweeps against a real Synapse: `sweep_room` called directly with a
//! matrix-sdk client acting as cordon in an encrypted room, a holder writing in it.
//!
//! Events are made "old" by the cutoff, not by waiting: they are sent, then the cutoff
//! is taken.

use std::time::Duration;

use chrono::{DateTime, Utc};
use cordon::archive::segment::read_segment;
use cordon::dev::{Synapse, TestUser};
use cordon::domain::incident::IncidentId;
use cordon::retention::{
    MIN_RESWEEP, RetryPolicy, SealTarget, SweepError, SweepParams, SweepTuning, reason_for,
    sweep_room, sweep_room_with,
};
use cordon::store::Store;
use matrix_sdk::ruma::api::client::room::get_room_event;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId};
use serde_json::{Value, json};

use crate::support::{WAIT, unique};

const WINDOW: Duration = Duration::from_secs(3600);

/// cordon (a server admin, for the rate-limit override) and a holder in one encrypted
/// room, and an empty store.
struct Fixture {
    hs: &'static Synapse,
    cordon: TestUser,
    cordon_admin_token: String,
    alice: TestUser,
    room_id: OwnedRoomId,
    incident: IncidentId,
    _dir: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    async fn new() -> Fixture {
        let hs = Synapse::shared().await.expect("synapse");
        let tag = unique("ret");
        let cordon_name = format!("{tag}-cordon");
        let admin = hs.register_session(&cordon_name, "pw", true).await.unwrap();
        let cordon = TestUser::login(hs, &cordon_name, "pw").await.unwrap();
        let alice_name = format!("{tag}-alice");
        hs.register(&alice_name, "pw", false).await.unwrap();
        let alice = TestUser::login(hs, &alice_name, "pw").await.unwrap();
        let room_id = cordon
            .create_encrypted_room("Retention", &[alice.user_id().to_owned()])
            .await
            .unwrap();
        alice.wait_for_invite(WAIT).await.unwrap();
        alice.join(&room_id).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        Fixture {
            hs,
            cordon,
            cordon_admin_token: admin.access_token,
            alice,
            room_id,
            incident: IncidentId::parse(&tag).unwrap(),
            _dir: dir,
            store,
        }
    }

    fn room(&self) -> matrix_sdk::Room {
        self.cordon.client().get_room(&self.room_id).unwrap()
    }

    fn params(&self, cutoff: DateTime<Utc>) -> SweepParams<'_> {
        SweepParams {
            incident: &self.incident,
            room_key: "command",
            cutoff,
            window: WINDOW,
            reason: reason_for(WINDOW),
            seal: None,
        }
    }

    /// The event as the server now serves it to cordon.
    async fn event(&self, event_id: &OwnedEventId) -> Value {
        let request = get_room_event::v3::Request::new(self.room_id.clone(), event_id.clone());
        let response = self.cordon.client().send(request).await.unwrap();
        serde_json::from_str(response.event.json().get()).unwrap()
    }

    /// The reason of the event's redaction, if it is redacted.
    async fn redaction_reason(&self, event_id: &OwnedEventId) -> Option<String> {
        let v = self.event(event_id).await;
        let because = v.get("unsigned")?.get("redacted_because")?;
        Some(
            because["content"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    }

    /// Waits until cordon has decrypted alice's message `body` (so it holds her key).
    async fn cordon_reads(&self, body: &str) {
        self.cordon
            .wait_for_message(&self.room_id, WAIT, |_, b| b == body)
            .await
            .unwrap();
    }

    /// A plaintext event sent by a raw request (no encryption), as a client without
    /// end-to-end encryption would.
    async fn send_plain(&self, user: &TestUser, event_type: &str, content: Value) -> OwnedEventId {
        let url = self
            .hs
            .base_url()
            .join(&format!(
                "_matrix/client/v3/rooms/{}/send/{event_type}/{}",
                self.room_id,
                unique("txn")
            ))
            .unwrap();
        let token = user.client().access_token().unwrap();
        let reply: Value = reqwest::Client::new()
            .put(url)
            .bearer_auth(token)
            .json(&content)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        OwnedEventId::try_from(reply["event_id"].as_str().unwrap()).unwrap()
    }

    /// Sets cordon's own message rate limit through the admin API (whole messages per
    /// second; `0, 0` lifts it).
    async fn cordon_rate_limit(&self, per_second: u32, burst: u32) {
        let url = self
            .hs
            .base_url()
            .join(&format!(
                "_synapse/admin/v1/users/{}/override_ratelimit",
                self.cordon.user_id()
            ))
            .unwrap();
        reqwest::Client::new()
            .post(url)
            .bearer_auth(&self.cordon_admin_token)
            .json(&json!({ "messages_per_second": per_second, "burst_count": burst }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
    }

    /// The details of the incident's `retention.swept` audit entries, oldest first.
    fn audits(&self) -> Vec<Value> {
        self.store
            .audit_entries(.., Some(&self.incident))
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "retention.swept")
            .map(|e| serde_json::from_str(&e.details).unwrap())
            .collect()
    }
}

/// A moment strictly after every event sent so far (server timestamps are whole ms).
async fn cutoff_now() -> DateTime<Utc> {
    let cutoff = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    cutoff
}

fn ts(v: &Value) -> i64 {
    v["origin_server_ts"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_are_redacted_with_the_reason_and_newer_ones_and_state_are_not() {
    let f = Fixture::new().await;
    let room = f.room();
    let text = f
        .alice
        .send_text(&f.room_id, "old encrypted 1")
        .await
        .unwrap();
    let own = f
        .cordon
        .send_text(&f.room_id, "cordon's own briefing")
        .await
        .unwrap();
    let reaction = f
        .alice
        .client()
        .get_room(&f.room_id)
        .unwrap()
        .send(ReactionEventContent::new(Annotation::new(
            text.clone(),
            "👍".into(),
        )))
        .await
        .unwrap()
        .response
        .event_id;
    let plain = f
        .send_plain(
            &f.alice,
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "old plain" }),
        )
        .await;
    let topic = room
        .set_room_topic("Not the medical record")
        .await
        .unwrap()
        .event_id;
    let text2 = f
        .alice
        .send_text(&f.room_id, "old encrypted 2")
        .await
        .unwrap();
    let cutoff = cutoff_now().await;
    let newer = f.alice.send_text(&f.room_id, "newer").await.unwrap();
    let old = [&text, &own, &reaction, &plain, &text2];
    assert_eq!(f.event(&text).await["type"], "m.room.encrypted");
    assert_eq!(f.event(&plain).await["type"], "m.room.message");

    let report = sweep_room(&room, &f.store, &f.params(cutoff))
        .await
        .unwrap();
    assert_eq!(report.redacted, 5, "{report:?}");
    assert_eq!(report.already_redacted, 0);
    assert!(report.skipped >= 1, "state events are skipped: {report:?}");
    for e in old {
        assert_eq!(
            f.redaction_reason(e).await.as_deref(),
            Some("retention: 1h"),
            "{e}"
        );
    }
    assert_eq!(f.redaction_reason(&newer).await, None);
    assert_eq!(
        f.redaction_reason(&topic).await,
        None,
        "a state event was redacted"
    );
    let topic_now = f
        .cordon
        .room_state_json(&f.room_id, "m.room.topic", "")
        .await
        .unwrap();
    assert_eq!(topic_now["topic"], "Not the medical record");
    // Due again an hour after the first message left.
    // (never sooner than a second after this sweep's now, cutoff + window).
    let hour = chrono::TimeDelta::hours(1);
    let newer_due = DateTime::from_timestamp_millis(ts(&f.event(&newer).await)).unwrap() + hour;
    let floor = cutoff + hour + chrono::TimeDelta::from_std(MIN_RESWEEP).unwrap();
    assert_eq!(report.next_due, newer_due.max(floor));

    // One audit entry, with counts and no content.
    let audits = f.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0]["redacted"], 5);
    assert_eq!(audits[0]["room_key"], "command");
    let details = audits[0].to_string();
    assert!(!details.contains("old encrypted") && !details.contains("briefing"));

    // Later, the newer message is due too: the next sweep continues from the stored
    // token (just before it) instead of re-reading the room, and re-redacts nothing.
    let cutoff2 = cutoff_now().await;
    let newest = f.alice.send_text(&f.room_id, "newest").await.unwrap();
    let report2 = sweep_room(&room, &f.store, &f.params(cutoff2))
        .await
        .unwrap();
    assert_eq!(report2.redacted, 1, "{report2:?}");
    assert_eq!(report2.already_redacted, 0, "{report2:?}");
    assert!(
        report2.events_read <= 2,
        "re-read the room instead of resuming: {report2:?}"
    );
    assert_eq!(
        f.redaction_reason(&newer).await.as_deref(),
        Some("retention: 1h")
    );
    assert_eq!(f.redaction_reason(&newest).await, None);
    let record = f
        .store
        .sweep_record(&f.incident, "command")
        .unwrap()
        .unwrap();
    assert_eq!(record.totals.redacted, 6);
    assert_eq!(record.sweeps, 2);

    // Nothing new is due: nothing is redacted, and nothing audited.
    let report3 = sweep_room(&room, &f.store, &f.params(cutoff2))
        .await
        .unwrap();
    assert_eq!((report3.redacted, report3.already_redacted), (0, 0));
    assert_eq!(f.audits().len(), 2);
}

/// The sweep notes the attachment addresses of what it is about to redact, read from
/// the decrypted content, before redacting: once redacted nobody can read them, and
/// stand-down must delete the files (Synapse cannot list what encrypted events name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_notes_the_attachments_of_what_it_redacts_before_redacting() {
    use cordon::store::MediaSeenIn;
    use matrix_sdk::attachment::AttachmentConfig;

    let f = Fixture::new().await;
    let room = f.room();
    let alice_room = f.alice.client().get_room(&f.room_id).unwrap();
    let image = alice_room
        .send_attachment(
            "scan.png",
            &"image/png".parse::<mime::Mime>().unwrap(),
            b"\x89PNG\r\n\x1a\nnot really a scan".to_vec(),
            AttachmentConfig::new(),
        )
        .await
        .unwrap()
        .event_id;
    // The file's address, as alice's client sent it (encrypted: in `file.url`).
    let sent: Value = alice_room
        .event(&image, None)
        .await
        .unwrap()
        .raw()
        .deserialize_as::<Value>()
        .unwrap();
    let image_mxc = sent
        .pointer("/content/file/url")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    // An edit replacing the image with another file and thumbnail, and a sticker (the
    // addresses need not exist for cordon to note them).
    let edit = alice_room
        .send_raw(
            "m.room.message",
            json!({
                "msgtype": "m.image",
                "body": "* scan v2",
                "m.new_content": {
                    "msgtype": "m.image",
                    "body": "scan v2",
                    "url": "mxc://localhost/scanv2",
                    "info": { "thumbnail_url": "mxc://localhost/scanv2thumb" },
                },
                "m.relates_to": { "rel_type": "m.replace", "event_id": image },
            }),
        )
        .await
        .unwrap()
        .response
        .event_id;
    let sticker = alice_room
        .send_raw(
            "m.sticker",
            json!({ "body": "thumbs up", "url": "mxc://localhost/sticker", "info": {} }),
        )
        .await
        .unwrap()
        .response
        .event_id;
    let text = f.alice.send_text(&f.room_id, "obs stable").await.unwrap();
    f.cordon_reads("obs stable").await;
    let cutoff = cutoff_now().await;
    for e in [&image, &edit, &sticker] {
        assert_eq!(f.event(e).await["type"], "m.room.encrypted", "{e}");
    }

    let report = sweep_room(&room, &f.store, &f.params(cutoff))
        .await
        .unwrap();
    assert_eq!(report.redacted, 4, "{report:?}");
    for e in [&image, &edit, &sticker, &text] {
        assert_eq!(
            f.redaction_reason(e).await.as_deref(),
            Some("retention: 1h"),
            "{e}"
        );
    }
    let noted: std::collections::BTreeMap<String, cordon::store::MediaSighting> = f
        .store
        .incident_media(&f.incident)
        .unwrap()
        .into_iter()
        .collect();
    let mut want = vec![
        image_mxc.clone(),
        "mxc://localhost/scanv2".to_owned(),
        "mxc://localhost/scanv2thumb".to_owned(),
        "mxc://localhost/sticker".to_owned(),
    ];
    want.sort();
    assert_eq!(noted.keys().cloned().collect::<Vec<_>>(), want);
    let of_image = &noted[&image_mxc];
    assert_eq!(of_image.event, image.as_str());
    assert_eq!(of_image.room, f.room_id.as_str());
    assert_eq!(of_image.seen_in, MediaSeenIn::Sweep);
    assert_eq!(noted["mxc://localhost/scanv2thumb"].event, edit.as_str());
    assert_eq!(noted["mxc://localhost/sticker"].event, sticker.as_str());

    // A sweep over nothing new notes nothing new and keeps the first sighting.
    let again = sweep_room(&room, &f.store, &f.params(cutoff))
        .await
        .unwrap();
    assert_eq!(again.redacted, 0);
    assert_eq!(f.store.incident_media(&f.incident).unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_before_redact_writes_a_segment_the_records_officer_can_open_before_redacting() {
    let f = Fixture::new().await;
    let room = f.room();
    let first = f
        .alice
        .send_text(&f.room_id, "Bed 4: 2 units O neg")
        .await
        .unwrap();
    let reaction = f
        .alice
        .client()
        .get_room(&f.room_id)
        .unwrap()
        .send(ReactionEventContent::new(Annotation::new(
            first.clone(),
            "🩺".into(),
        )))
        .await
        .unwrap()
        .response
        .event_id;
    let own = f
        .cordon
        .send_text(&f.room_id, "Briefing: not the medical record")
        .await
        .unwrap();
    // An encrypted event whose key never reached cordon.
    let utd = f
        .send_plain(
            &f.alice,
            "m.room.encrypted",
            json!({
                "algorithm": "m.megolm.v1.aes-sha2",
                "ciphertext": "AwgAEnAxyz",
                "sender_key": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28",
                "device_id": "NOSUCHDEV",
                "session_id": "bm8gc3VjaCBzZXNzaW9uIG5vIHN1Y2ggc2Vzc2lvbg",
            }),
        )
        .await;
    let last = f
        .alice
        .send_text(&f.room_id, "Theatre 2 free at 14:00")
        .await
        .unwrap();
    f.cordon_reads("Theatre 2 free at 14:00").await;
    let cutoff = cutoff_now().await;

    let archive = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let recipients = [identity.to_public()];
    let mut params = f.params(cutoff);
    params.seal = Some(SealTarget {
        dir: archive.path(),
        recipients: &recipients,
    });
    let report = sweep_room(&room, &f.store, &params).await.unwrap();
    assert_eq!((report.sealed, report.redacted), (5, 5), "{report:?}");
    assert_eq!(report.segments, vec![1]);

    let path = archive
        .path()
        .join(f.incident.as_str())
        .join("pre-seal/command-000001.jsonl.age");
    let lines = read_segment(&path, &identity).unwrap();
    let ids: Vec<&str> = lines.iter().map(|l| l.event_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            first.as_str(),
            reaction.as_str(),
            own.as_str(),
            utd.as_str(),
            last.as_str()
        ]
    );
    let body = |i: usize| lines[i].content.as_ref().unwrap()["body"].clone();
    assert_eq!(body(0), "Bed 4: 2 units O neg");
    assert_eq!(lines[0].event_type, "m.room.message");
    assert!(lines[0].encryption.is_some());
    assert_eq!(lines[1].event_type, "m.reaction");
    assert_eq!(
        lines[1].relates_to.as_ref().unwrap()["event_id"],
        first.as_str()
    );
    assert_eq!(body(2), "Briefing: not the medical record");
    assert!(lines[3].undecryptable && lines[3].content.is_none());
    assert_eq!(body(4), "Theatre 2 free at 14:00");

    // The store knows the segment; its hash is the file's.
    let segments = f.store.seal_segments(&f.incident).unwrap();
    assert_eq!(segments.len(), 1);
    let bytes = std::fs::read(&path).unwrap();
    use sha2::Digest;
    assert_eq!(
        segments[0].1.sha256,
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(segments[0].1.events, 5);

    // Sealed first, redacted after: the file was complete before any redaction.
    let written_ms = std::fs::metadata(&path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for e in [&first, &reaction, &own, &utd, &last] {
        let v = f.event(e).await;
        let because = &v["unsigned"]["redacted_because"];
        assert_eq!(because["content"]["reason"], "retention: 1h", "{e}");
        assert!(
            ts(because) >= written_ms,
            "{e} redacted before it was sealed"
        );
    }

    // The next sweep seals only what became due since, into segment 2.
    let later = f.alice.send_text(&f.room_id, "Later advice").await.unwrap();
    f.cordon_reads("Later advice").await;
    let mut params = f.params(cutoff_now().await);
    params.seal = Some(SealTarget {
        dir: archive.path(),
        recipients: &recipients,
    });
    let report = sweep_room(&room, &f.store, &params).await.unwrap();
    assert_eq!((report.sealed, report.redacted), (1, 1), "{report:?}");
    let second = read_segment(&path.with_file_name("command-000002.jsonl.age"), &identity).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event_id, later.as_str());
    let audit = f.audits();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["sealed"], 5);
    assert!(!audit[0].to_string().contains("O neg"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_honours_429_retry_after_and_redacts_everything() {
    let f = Fixture::new().await;
    let room = f.room();
    // Redactions of cordon's own messages count against its own message limit.
    let mut own = Vec::new();
    for i in 0..6 {
        own.push(
            f.cordon
                .send_text(&f.room_id, &format!("notice {i}"))
                .await
                .unwrap(),
        );
    }
    let cutoff = cutoff_now().await;
    f.cordon_rate_limit(1, 1).await;
    let report = sweep_room(&room, &f.store, &f.params(cutoff)).await;
    f.cordon_rate_limit(0, 0).await;
    let report = report.unwrap();
    assert_eq!(report.redacted, 6, "{report:?}");
    assert!(report.rate_limited > 0, "never rate limited: {report:?}");
    for e in &own {
        assert_eq!(
            f.redaction_reason(e).await.as_deref(),
            Some("retention: 1h")
        );
    }
    assert_eq!(f.audits()[0]["rate_limited"], report.rate_limited);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_stopped_after_sealing_resumes_without_sealing_twice() {
    let f = Fixture::new().await;
    let room = f.room();
    let mut own = Vec::new();
    for i in 0..4 {
        own.push(
            f.cordon
                .send_text(&f.room_id, &format!("sealed {i}"))
                .await
                .unwrap(),
        );
    }
    let cutoff = cutoff_now().await;
    let archive = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let recipients = [identity.to_public()];
    let mut params = f.params(cutoff);
    params.seal = Some(SealTarget {
        dir: archive.path(),
        recipients: &recipients,
    });
    // One redaction a second, and a sweep that will not wait that long: it seals the
    // page, meets a 429, and stops with its page unfinished (as if killed after
    // sealing).
    let impatient = SweepTuning {
        retry: RetryPolicy {
            max_wait: Duration::from_millis(500),
            ..RetryPolicy::default()
        },
        ..SweepTuning::default()
    };
    f.cordon_rate_limit(1, 1).await;
    let stopped = sweep_room_with(&room, &f.store, &params, &impatient).await;
    f.cordon_rate_limit(0, 0).await;
    assert!(
        matches!(stopped, Err(SweepError::RateLimited { .. })),
        "{stopped:?}"
    );
    let dir = archive.path().join(f.incident.as_str()).join("pre-seal");
    let lines = read_segment(&dir.join("command-000001.jsonl.age"), &identity).unwrap();
    assert_eq!(lines.len(), 4, "the whole page is sealed before redacting");
    let mut redacted = 0;
    for e in &own {
        redacted += usize::from(f.redaction_reason(e).await.is_some());
    }
    assert!(redacted <= 1, "{redacted} redacted before the limit");

    let report = sweep_room(&room, &f.store, &params).await.unwrap();
    assert_eq!(report.sealed, 0, "sealed again: {report:?}");
    assert!(report.segments.is_empty());
    assert_eq!(report.redacted + report.already_redacted, 4, "{report:?}");
    for e in &own {
        assert_eq!(
            f.redaction_reason(e).await.as_deref(),
            Some("retention: 1h")
        );
    }
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "one segment, no leftovers");
    // The stopped attempt's work is audited by the sweep that finished it.
    let audit = f.audits();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["sealed"], 4);
    assert_eq!(
        audit[0]["redacted"].as_u64().unwrap() + audit[0]["already_redacted"].as_u64().unwrap(),
        4
    );
}
