//! The bundle built from a manifest's advice and opened items.

use serde_json::json;

use super::*;
use crate::archive::advice::{ADVICE_VERSION, Registration};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-04T14:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
        + chrono::TimeDelta::seconds(secs)
}

fn manifest(exercise: bool, advice: serde_json::Value) -> Manifest {
    serde_json::from_value(json!({
        "v": 5, "incident": "mc-4k7p", "display_name": "Tram crash", "playbook": "mc",
        "commander": "@ic:hs", "declared_at": at(0), "expires_at": at(86_400),
        "sealed_at": at(7_230), "server_name": "hs", "exercise": exercise,
        "cordon_version": "0", "signing_key": "ed25519:x", "rooms": [], "media": [],
        "pre_seal": [], "advice": advice,
        "audit": { "file": "audit.jsonl", "sha256": "", "entries": 0 }, "renderings": []
    }))
    .unwrap()
}

fn listed(
    event: &str,
    sent: i64,
    transcribed: serde_json::Value,
    patient: bool,
) -> serde_json::Value {
    json!({
        "room_key": "ward", "room_id": "!w:hs", "event_id": event, "author": "@dr:hs",
        "sent_at": at(sent), "flagged_by": "@nurse:hs", "flagged_at": at(sent + 60),
        "flagged_via": "command", "transcribed": transcribed, "patient": patient,
        "sealed": { "file": format!("advice/{}.json.age", &event[1..]), "sha256": "0", "bytes": 1,
                    "content_sha256": "0" }
    })
}

fn sealed(
    event: &str,
    sent: i64,
    text: Option<&str>,
    patient: Option<&str>,
    reply: Option<&str>,
) -> SealedAdvice {
    SealedAdvice {
        v: ADVICE_VERSION,
        incident: "mc-4k7p".into(),
        room_key: "ward".into(),
        room_id: "!w:hs".into(),
        event_id: event.into(),
        author: "@dr:hs".into(),
        author_registration: None,
        sent_at: at(sent),
        text: text.map(str::to_owned),
        in_reply_to: reply.map(str::to_owned),
        patient: patient.map(str::to_owned),
        flagged_by: "@nurse:hs".into(),
        flagged_at: at(sent + 60),
        salt: String::new(),
    }
}

#[test]
fn each_advice_item_is_a_communication_with_its_patient_author_times_and_transcriber() {
    let m = manifest(
        false,
        json!([
            listed(
                "$q",
                100,
                json!({ "by": "@nurse:hs", "at": at(900), "confirmed": true }),
                true
            ),
            listed("$a", 200, serde_json::Value::Null, false),
        ]),
    );
    let mut answer = sealed("$a", 200, Some("Give 1 g TXA"), None, Some("$q"));
    answer.author_registration = Some(Registration {
        system: "https://fhir.hl7.org.uk/Id/gmc-number".into(),
        value: "7654321".into(),
    });
    let question = sealed(
        "$q",
        100,
        Some("Bed 4: CT first?"),
        Some("9434765919"),
        None,
    );
    let items = [
        Item {
            listed: &m.advice[0],
            sealed: Some(&question),
        },
        Item {
            listed: &m.advice[1],
            sealed: Some(&answer),
        },
    ];
    let b = bundle(&m, &items);
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "transaction");
    let entries = b["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 2);

    let q = &entries[0]["resource"];
    assert_eq!(q["resourceType"], "Communication");
    assert_eq!(q["status"], "completed");
    assert_eq!(q["subject"]["identifier"]["system"], NHS_NUMBER_SYSTEM);
    assert_eq!(q["subject"]["identifier"]["value"], "9434765919");
    assert_eq!(q["sent"], "2026-12-04T14:01:40Z");
    assert_eq!(q["sender"]["identifier"]["value"], "matrix:u/dr:hs");
    assert_eq!(q["payload"][0]["contentString"], "Bed 4: CT first?");
    assert_eq!(q["identifier"][0]["value"], "matrix:roomid/w:hs/e/q");
    let notes = q["note"].as_array().unwrap();
    assert!(notes[0]["text"].as_str().unwrap().contains("mc-4k7p"));
    assert_eq!(notes[1]["authorString"], "@nurse:hs");
    assert_eq!(notes[2]["authorString"], "@nurse:hs");
    assert_eq!(notes[2]["time"], "2026-12-04T14:15:00Z");
    assert!(notes[2]["text"].as_str().unwrap().contains("confirmed"));
    assert_eq!(
        entries[0]["request"]["ifNoneExist"],
        "identifier=urn:ietf:rfc:3986|matrix:roomid/w:hs/e/q"
    );
    assert!(q.get("meta").is_none());

    let a = &entries[1]["resource"];
    assert!(a.get("subject").is_none(), "no patient given");
    assert_eq!(a["inResponseTo"][0]["reference"], entries[0]["fullUrl"]);
    assert_eq!(
        a["sender"]["identifier"]["system"],
        "https://fhir.hl7.org.uk/Id/gmc-number"
    );
    assert!(
        a["note"][2]["text"]
            .as_str()
            .unwrap()
            .contains("Not marked transcribed")
    );
    // Names are UUIDs, the same every time.
    let url = entries[1]["fullUrl"].as_str().unwrap();
    assert_eq!(url, full_url("$a"));
    assert_eq!(url.len(), "urn:uuid:".len() + 36);
    assert_eq!(&url[9 + 14..9 + 15], "8", "version 8");
}

#[test]
fn an_unopened_item_keeps_its_place_without_text_and_an_exercise_is_labelled_test_data() {
    let m = manifest(
        true,
        json!([listed(
            "$x",
            100,
            json!({ "by": "@b:hs", "at": at(300), "confirmed": false }),
            true
        )]),
    );
    let b = bundle(
        &m,
        &[Item {
            listed: &m.advice[0],
            sealed: None,
        }],
    );
    let c = &b["entry"][0]["resource"];
    assert!(c.get("payload").is_none());
    assert!(c.get("subject").is_none());
    assert_eq!(c["meta"]["security"][0]["code"], "HTEST");
    let text: Vec<&str> = c["note"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert!(text[0].starts_with("EXERCISE"), "{text:?}");
    assert!(text[2].contains("cannot confirm"), "{text:?}");
    assert!(text[3].contains("could not be opened"), "{text:?}");
}

#[test]
fn uris_encode_what_a_path_segment_cannot_hold() {
    assert_eq!(
        event_uri("!a/b:hs", "$c?d#e"),
        "matrix:roomid/a%2Fb:hs/e/c%3Fd%23e"
    );
    assert_eq!(user_uri("@x y:hs"), "matrix:u/x%20y:hs");
}
