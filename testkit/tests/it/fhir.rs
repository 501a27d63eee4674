//! Clinical advice into the patient record, against the real Synapse: advice flagged
//! with `--patient` (on a link, on a reply, added to a 🩺 later) is sealed as it is
//! flagged, never kept by cordon in the clear, and ends in the archive as FHIR R4
//! `Communication`s that an independent validator accepts; a wrong NHS number is
//! refused and changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cordon::dev::Synapse;
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::ruma::events::reaction::ReactionEventContent;
use matrix_sdk::ruma::events::relation::Annotation;
use serde_json::Value;

use crate::standdown::{
    Officer, archive_cli, archive_path, assert_destroyed, assert_rooms_remain, join_when_invited,
    open, text,
};
use crate::support::WAIT;
use crate::world::{Timing, World, incident_id_in};

/// Runs `scripts/fhir-validate` (fhir.resources from PyPI, in its own venv) on `file`.
pub(crate) async fn fhir_validate(file: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fhir-validate");
    tokio::process::Command::new(script)
        .arg(file)
        .output()
        .await
        .unwrap()
}

/// The bundle's Communication for the message `event`.
fn communication<'a>(bundle: &'a Value, event: &str) -> &'a Value {
    let id = event.trim_start_matches('$');
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|r| {
            r["identifier"][0]["value"]
                .as_str()
                .is_some_and(|v| v.ends_with(&format!("/e/{id}")))
        })
        .unwrap_or_else(|| panic!("no Communication for {event}: {bundle:#}"))
}

/// A world sealing to `officer` with `config`, and an incident declared in it as `name`
/// whose rooms the nurse joined; returns the incident and its rooms by key.
async fn declared(
    officer: &Officer,
    config: &str,
    name: &str,
) -> (World, String, BTreeMap<String, OwnedRoomId>) {
    let hs = Synapse::shared().await.expect("synapse");
    let timing = Timing {
        recipient: Some(officer.recipient.clone()),
        ..Timing::default()
    };
    let w = World::builder()
        .on(hs)
        .timing(timing)
        .config(config)
        .build()
        .await;
    w.say(&format!("!cordon declare {} \"{name}\"", w.playbook_id))
        .await;
    let incident = incident_id_in(&w.bot_says("DECLARED").await);
    let rooms: BTreeMap<String, OwnedRoomId> = w
        .created_rooms(&incident)
        .await
        .into_iter()
        .map(|(k, v)| (k, v[0].clone()))
        .collect();
    join_when_invited(&w.nurses[0], &[&rooms["command"], &rooms["ward"]]).await;
    (w, incident, rooms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advice_for_a_patient_ends_as_a_valid_communication_with_its_author_time_and_transcriber() {
    let officer = Officer::new();
    let (w, incident, rooms) =
        declared(&officer, "commands: { max_age: 3h }\n", "FHIR drill").await;
    let (command, ward) = (rooms["command"].clone(), rooms["ward"].clone());
    let nurse = &w.nurses[0];
    join_when_invited(&w.commander, &[&command]).await;
    let bot = w.bot_id();
    let flagged = |b: &str| b.contains("Flagged as clinical advice");

    // The advice, and a wrong NHS number (one digit mistyped): refused, nothing flagged.
    let advice = nurse
        .send_text(&ward, "Bed 4: give 1 g tranexamic acid over 10 minutes")
        .await
        .unwrap();
    let sent_after = chrono::Utc::now();
    nurse
        .send_text(
            &ward,
            &format!("!cordon advice {advice} --patient 943 476 5918"),
        )
        .await
        .unwrap();
    let (_, refused) = nurse
        .wait_for_message(&ward, WAIT, |s, b| s == bot && b.contains("--patient"))
        .await
        .unwrap();
    assert!(refused.contains("check digit"), "{refused}");
    assert!(refused.contains("Usage"), "a usage reply: {refused}");

    // The right one, on the link: sealed, and the command taken out of the chat.
    let with_number = nurse
        .send_text(
            &ward,
            &format!("!cordon advice {advice} --patient 943 476 5919"),
        )
        .await
        .unwrap();
    let (_, ok) = nurse
        .wait_for_message(&ward, WAIT, |s, b| s == bot && flagged(b))
        .await
        .unwrap();
    assert!(ok.contains("for the patient you named"), "{ok}");
    assert!(!ok.contains("5919"), "the reply repeats the number: {ok}");
    assert!(ok.contains("I removed your command from the chat"), "{ok}");
    let served = nurse
        .client()
        .get_room(&ward)
        .unwrap()
        .event(&with_number, None)
        .await
        .unwrap();
    let served = served.raw().json().get().to_owned();
    assert!(served.contains("redacted_because"), "{served}");
    assert!(!served.contains("5919"), "{served}");

    // A reply to it, flagged by replying to the reply with --patient.
    let answer = nurse
        .send_reply(&ward, &advice, "And repeat the Hb in one hour")
        .await
        .unwrap();
    nurse
        .send_reply(&ward, &answer, "!cordon advice --patient 9434765919")
        .await
        .unwrap();
    nurse
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && flagged(b) && b.contains(answer.as_str())
        })
        .await
        .unwrap();

    // Advice flagged with 🩺 (no patient), then given its patient by command.
    let third = nurse
        .send_text(&ward, "Bed 9: nil by mouth until the surgical review")
        .await
        .unwrap();
    nurse
        .client()
        .get_room(&ward)
        .unwrap()
        .send(ReactionEventContent::new(Annotation::new(
            third.clone(),
            "🩺".into(),
        )))
        .await
        .unwrap();
    w.wait_for_log_lines("advice flagged", 3).await;
    nurse
        .send_text(
            &ward,
            &format!("!cordon advice {third} --patient 401 023 2137"),
        )
        .await
        .unwrap();
    nurse
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.starts_with("Added the patient")
        })
        .await
        .unwrap();

    // Transcribed twelve minutes later (cordon's clock), by the commander from the
    // control room, by the message's link.
    w.advance_clock(Duration::from_secs(12 * 60)).await;
    w.say(&format!(
        "!cordon transcribed https://matrix.to/#/{ward}/{advice}"
    ))
    .await;
    w.bot_says("Marked transcribed").await;

    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    w.bot_says("room(s) are destroyed").await;

    // The archive's bundle: valid to an independent validator, one Communication each.
    let file = archive_path(&w, &incident);
    let opened = open(&w, &officer, &file).await;
    let bundle_file = opened.path().join("opened/fhir/advice.json");
    let checked = fhir_validate(&bundle_file).await;
    assert!(checked.status.success(), "validator: {}", text(&checked));
    assert!(
        text(&checked).contains("3 Communication(s)"),
        "{}",
        text(&checked)
    );
    let bundle: Value = serde_json::from_slice(&std::fs::read(&bundle_file).unwrap()).unwrap();
    assert_eq!(bundle["type"], "transaction");

    let nurse_uri = format!(
        "matrix:u/{}",
        nurse.user_id().as_str().trim_start_matches('@')
    );
    let commander = w.commander.user_id().to_string();
    let a = communication(&bundle, advice.as_str());
    assert_eq!(a["status"], "completed");
    assert_eq!(
        a["subject"]["identifier"],
        serde_json::json!({ "system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919" })
    );
    assert_eq!(
        a["sender"]["identifier"]["value"],
        Value::from(nurse_uri.as_str())
    );
    assert_eq!(
        a["payload"][0]["contentString"],
        "Bed 4: give 1 g tranexamic acid over 10 minutes"
    );
    let sent: chrono::DateTime<chrono::Utc> = a["sent"].as_str().unwrap().parse().unwrap();
    assert!(
        sent <= sent_after && sent_after - sent < chrono::TimeDelta::seconds(30),
        "sent {sent}, the test saw it sent by {sent_after}"
    );
    let notes: Vec<&Value> = a["note"].as_array().unwrap().iter().collect();
    assert!(notes[0]["text"].as_str().unwrap().contains(&incident));
    assert_eq!(
        notes[1]["authorString"],
        Value::from(nurse.user_id().as_str())
    );
    let transcribed = notes[2];
    assert_eq!(transcribed["authorString"], Value::from(commander.as_str()));
    assert!(
        transcribed["text"].as_str().unwrap().contains("confirmed"),
        "{transcribed}"
    );
    let flagged_at: chrono::DateTime<chrono::Utc> =
        notes[1]["time"].as_str().unwrap().parse().unwrap();
    let transcribed_at: chrono::DateTime<chrono::Utc> =
        transcribed["time"].as_str().unwrap().parse().unwrap();
    let took = (transcribed_at - flagged_at).num_seconds();
    assert!(
        (720..780).contains(&took),
        "transcribed {took} s after the flag"
    );

    let b = communication(&bundle, answer.as_str());
    assert_eq!(b["subject"]["identifier"]["value"], "9434765919");
    let a_url = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| std::ptr::eq(&e["resource"], a))
        .unwrap()["fullUrl"]
        .clone();
    assert_eq!(b["inResponseTo"][0]["reference"], a_url);
    assert!(
        b["note"][2]["text"]
            .as_str()
            .unwrap()
            .contains("Not marked transcribed")
    );

    let c = communication(&bundle, third.as_str());
    assert_eq!(c["subject"]["identifier"]["value"], "4010232137");
    assert!(c["note"][1]["text"].as_str().unwrap().contains("reaction"));

    // `cordon archive fhir` prints the same bundle, and writes nothing.
    let printed = archive_cli(&w, "fhir", &file, &officer.key_file, &[]).await;
    assert!(printed.status.success(), "{}", text(&printed));
    let printed: Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed, bundle);

    // The validator is not a formality: a bundle with a broken resource fails it.
    let mut broken = bundle.clone();
    broken["entry"][0]["resource"]["status"] = Value::from("flagged");
    let broken_file = opened.path().join("broken.json");
    std::fs::write(&broken_file, serde_json::to_vec(&broken).unwrap()).unwrap();
    let refused = fhir_validate(&broken_file).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));

    // cordon's store holds ids and hashes, never the numbers or the advice.
    let mut w = w;
    drop(w.stop_and_open_store());
    let store = std::fs::read(w.store_dir().join("cordon.redb")).unwrap();
    for secret in ["9434765919", "4010232137", "tranexamic", "nil by mouth"] {
        assert!(
            !store.windows(secret.len()).any(|s| s == secret.as_bytes()),
            "{secret:?} is in cordon's store"
        );
    }
}

/// The FHIR server stand-in (`testkit/fhir-standin.py`, Python's standard library
/// alone): its directory holds its port, each request it took, and the `fail` switch.
struct StandIn {
    dir: tempfile::TempDir,
    _process: tokio::process::Child,
    port: u16,
}

impl StandIn {
    /// Starts it, failing every POST with 503 while `failing` (until [`StandIn::heal`]).
    async fn start(failing: bool) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        if failing {
            std::fs::write(dir.path().join("fail"), "").unwrap();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-standin.py");
        let process = tokio::process::Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(dir.path().join("port")) {
                break p.trim().parse().unwrap();
            }
            assert!(started.elapsed() < WAIT, "the FHIR stand-in did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        StandIn {
            dir,
            _process: process,
            port,
        }
    }

    /// cordon's config for it, with a bearer token in a file beside it.
    fn config(&self) -> String {
        let token = self.dir.path().join("token");
        std::fs::write(&token, "s3cret-fhir-token\n").unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        format!(
            "commands: {{ max_age: 3h }}\nfhir:\n  base_url: http://127.0.0.1:{}/fhir\n  token_file: {}\n",
            self.port,
            token.display()
        )
    }

    /// Every request it took, in order.
    fn requests(&self) -> Vec<Value> {
        (1..)
            .map(|n| self.dir.path().join(format!("request-{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until it has taken `n` requests.
    async fn wait_for_requests(&self, n: usize) {
        let started = std::time::Instant::now();
        while self.requests().len() < n {
            assert!(
                started.elapsed() < WAIT,
                "the FHIR stand-in took {} request(s), not {n}",
                self.requests().len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// From now on it accepts what it is sent.
    fn heal(&self) {
        std::fs::remove_file(self.dir.path().join("fail")).unwrap();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.path().join("stop"), "");
    }
}

/// A world delivering to `fhir`, sealing to `officer`, with one advice item flagged for
/// a patient; returns the incident and its rooms.
async fn with_advice(
    fhir: &StandIn,
    officer: &Officer,
) -> (World, String, BTreeMap<String, OwnedRoomId>) {
    let (w, incident, rooms) = declared(officer, &fhir.config(), "Delivery drill").await;
    let ward = rooms["ward"].clone();
    let nurse = &w.nurses[0];
    let advice = nurse
        .send_text(&ward, "Bed 4: give 1 g tranexamic acid over 10 minutes")
        .await
        .unwrap();
    nurse
        .send_text(
            &ward,
            &format!("!cordon advice {advice} --patient 943 476 5919"),
        )
        .await
        .unwrap();
    let bot = w.bot_id();
    nurse
        .wait_for_message(&ward, WAIT, |s, b| {
            s == bot && b.contains("Flagged as clinical advice")
        })
        .await
        .unwrap();
    (w, incident, rooms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fhir_server_blocks_destruction_across_retries_and_a_restart_until_it_takes_the_bundle()
 {
    let fhir = StandIn::start(true).await;
    let officer = Officer::new();
    let (mut w, incident, rooms) = with_advice(&fhir, &officer).await;
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("is sealed and verified").await;
    let alert = w
        .bot_says("could not be delivered to the patient record")
        .await;
    assert!(alert.contains("HTTP 503"), "{alert}");
    assert!(alert.contains("--skip-fhir"), "{alert}");
    assert!(
        !alert.contains("9434765919"),
        "the server's diagnostics reached the chat: {alert}"
    );

    // Retried with backoff, and the rooms are still there after each attempt.
    fhir.wait_for_requests(2).await;
    assert_rooms_remain(&w, &rooms, "before the advice was delivered").await;
    // Killed and started again: still waiting, still retrying, nothing destroyed.
    let before = fhir.requests().len();
    w.bot.as_mut().unwrap().kill9();
    let bot = w.restart(&[]);
    bot.wait_for_log("cordon is ready", WAIT).await.unwrap();
    fhir.wait_for_requests(before + 1).await;
    assert_rooms_remain(
        &w,
        &rooms,
        "before the advice was delivered, after a kill -9",
    )
    .await;

    // `status` says what the rooms wait for.
    w.say(&format!("!cordon status {incident}")).await;
    let status = w
        .bot_says("waiting to be delivered to the patient record")
        .await;
    assert!(status.contains("1 item(s)"), "{status}");

    // The server comes back; `retry` tries at once.
    fhir.heal();
    w.say(&format!("!cordon retry {incident}")).await;
    w.bot_says("Trying the delivery").await;
    let delivered = w.bot_says("is delivered to the patient record").await;
    assert!(delivered.contains("1 item(s)"), "{delivered}");
    w.bot_says("room(s) are destroyed").await;
    assert_destroyed(&w, &rooms).await;

    // What arrived: the transaction, with the token, as FHIR JSON, valid.
    let requests = fhir.requests();
    let last = requests.last().unwrap();
    assert_eq!(last["path"], "/fhir/");
    assert_eq!(last["authorization"], "Bearer s3cret-fhir-token");
    assert_eq!(last["content_type"], "application/fhir+json");
    let body = &last["body"];
    assert_eq!(body["type"], "transaction");
    let c = &body["entry"][0]["resource"];
    assert_eq!(c["subject"]["identifier"]["value"], "9434765919");
    assert_eq!(
        c["payload"][0]["contentString"],
        "Bed 4: give 1 g tranexamic acid over 10 minutes"
    );
    let arrived = fhir.dir.path().join("arrived.json");
    std::fs::write(&arrived, serde_json::to_vec(body).unwrap()).unwrap();
    let checked = fhir_validate(&arrived).await;
    assert!(checked.status.success(), "{}", text(&checked));
    // The same bundle as the archive's, which the records officer opens.
    let opened = open(&w, &officer, &archive_path(&w, &incident)).await;
    let archived: Value = serde_json::from_slice(
        &std::fs::read(opened.path().join("opened/fhir/advice.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(&archived, body);

    // Audited: each failure (its status, never the server's words), then the delivery;
    // the outbox copy is gone.
    let store = w.stop_and_open_store();
    let audit = store.audit_entries(.., None).unwrap();
    let failed: Vec<String> = audit
        .iter()
        .filter(|e| e.action == "fhir.failed")
        .map(|e| e.details.clone())
        .collect();
    assert!(failed.len() >= 3, "{failed:?}");
    assert!(
        failed.iter().all(|d| !d.contains("9434765919")),
        "{failed:?}"
    );
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "fhir.delivered")
            .count(),
        1
    );
    drop(store);
    let outbox = w.setup.state_dir.join("fhir-outbox");
    let left: Vec<_> = std::fs::read_dir(&outbox)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the outbox still holds {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_can_skip_a_delivery_that_keeps_failing_and_the_rooms_are_destroyed() {
    let fhir = StandIn::start(true).await;
    let officer = Officer::new();
    let (mut w, incident, rooms) = with_advice(&fhir, &officer).await;
    // Nothing to skip before the stand-down.
    w.say(&format!("!cordon retry {incident} --skip-fhir"))
        .await;
    w.bot_says("there is nothing to skip").await;
    w.say(&format!("!cordon standdown {incident}")).await;
    w.bot_says("could not be delivered to the patient record")
        .await;
    // The commander here is an operator (the world's only one).
    w.say(&format!("!cordon retry {incident} --skip-fhir"))
        .await;
    let skipped = w.bot_says("Skipping the delivery").await;
    assert!(skipped.contains("cordon archive fhir"), "{skipped}");
    w.bot_says("room(s) are destroyed").await;
    assert_destroyed(&w, &rooms).await;
    let store = w.stop_and_open_store();
    let skips: Vec<_> = store
        .audit_entries(.., None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "fhir.skipped")
        .collect();
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0].actor, w.commander.user_id().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_fhir_server_and_names_one_that_does_not_answer() {
    let fhir = StandIn::start(false).await;
    let hs = Synapse::shared().await.expect("synapse");
    let w = World::builder().on(hs).config(&fhir.config()).build().await;
    let doctor = |config: std::path::PathBuf| async move {
        let out = crate::standdown::cordon(&["doctor", "--config", config.to_str().unwrap()]).await;
        text(&out)
    };
    let said = doctor(w.setup.config.clone()).await;
    let expected = format!(
        "PASS  FHIR server: FHIR 4.0.1, takes transactions at http://127.0.0.1:{}/fhir/",
        fhir.port
    );
    assert!(
        said.lines().any(|l| l == expected),
        "no {expected:?} in:\n{said}"
    );
    // Only a read: nothing was POSTed.
    assert!(fhir.requests().is_empty());

    std::fs::write(fhir.dir.path().join("stop"), "").unwrap();
    let started = std::time::Instant::now();
    loop {
        let said = doctor(w.setup.config.clone()).await;
        if let Some(line) = said.lines().find(|l| l.starts_with("FAIL  FHIR server:")) {
            assert!(line.contains("did not answer"), "{line}");
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the stopped server still passes:\n{said}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
