//! The incident's clinical advice as FHIR R4: one `Communication` per advice item, in
//! one `transaction` `Bundle` (`fhir/advice.json` in an opened archive, `cordon archive
//! fhir`, and what the stand-down delivers to a configured FHIR server).
//!
//! Each `Communication` says what the patient record needs: the text (`payload`), who
//! gave it (`sender`, a Practitioner by professional registration when the config maps
//! the person to one, else by Matrix user id), when (`sent`), about whom (`subject`, a
//! Patient by NHS number when `--patient` gave one), what it answers (`inResponseTo`,
//! when it replies to another item of the bundle), and, as notes, the incident and room,
//! who flagged it and who marked it transcribed, with times. Each is identified by its
//! Matrix event (`matrix:roomid/…/e/…`), and the transaction creates it only if none
//! with that identifier exists (`ifNoneExist`), so a bundle delivered twice records each
//! item once. An exercise's items carry the security label `HTEST` (test health data).
//!
//! The bundle is built from plain data (the manifest's list and the opened items);
//! nothing here speaks Matrix or HTTP.

use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::advice::SealedAdvice;
use super::manifest::{AdviceManifest, Manifest};

/// The FHIR identifier system of NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";
/// The identifier system of a URI (a Matrix user or event, `matrix:…`).
pub const URI_SYSTEM: &str = "urn:ietf:rfc:3986";
/// The code system of the `HTEST` security label.
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// One advice item: what the manifest lists and, when it could be opened, what was
/// sealed.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The manifest's record of it.
    pub listed: &'a AdviceManifest,
    /// The sealed item, decrypted and checked; `None` when it could not be opened or
    /// none was sealed.
    pub sealed: Option<&'a SealedAdvice>,
}

/// The transaction bundle of `items`, in the order given.
pub fn bundle(m: &Manifest, items: &[Item<'_>]) -> Value {
    let entries: Vec<Value> = items.iter().map(|item| entry(m, item, items)).collect();
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": instant(m.sealed_at),
        "entry": entries,
    })
}

/// A bundle entry: the resource, its `urn:uuid:` name and the conditional create.
fn entry(m: &Manifest, item: &Item<'_>, all: &[Item<'_>]) -> Value {
    let a = item.listed;
    let identifier = event_uri(&a.room_id, &a.event_id);
    let mut c = Map::new();
    c.insert("resourceType".into(), json!("Communication"));
    if m.exercise {
        c.insert(
            "meta".into(),
            json!({ "security": [{
                "system": ACT_REASON_SYSTEM,
                "code": "HTEST",
                "display": "test health data",
            }]}),
        );
    }
    c.insert(
        "identifier".into(),
        json!([{ "system": URI_SYSTEM, "value": identifier }]),
    );
    c.insert("status".into(), json!("completed"));
    c.insert(
        "category".into(),
        json!([{ "text": "Clinical advice given in a major incident's chat" }]),
    );
    if let Some(nhs) = item.sealed.and_then(|s| s.patient.as_deref()) {
        c.insert(
            "subject".into(),
            json!({
                "type": "Patient",
                "identifier": { "system": NHS_NUMBER_SYSTEM, "value": nhs },
            }),
        );
    }
    if let Some(answered) = item
        .sealed
        .and_then(|s| s.in_reply_to.as_deref())
        .and_then(|e| all.iter().find(|o| o.listed.event_id == e))
    {
        c.insert(
            "inResponseTo".into(),
            json!([{ "reference": full_url(&answered.listed.event_id) }]),
        );
    }
    c.insert("sent".into(), json!(instant(a.sent_at)));
    let registration = item.sealed.and_then(|s| s.author_registration.as_ref());
    let sender_identifier = match registration {
        Some(r) => json!({ "system": r.system, "value": r.value }),
        None => json!({ "system": URI_SYSTEM, "value": user_uri(&a.author) }),
    };
    c.insert(
        "sender".into(),
        json!({
            "type": "Practitioner",
            "identifier": sender_identifier,
            "display": a.author,
        }),
    );
    if let Some(text) = item.sealed.and_then(|s| s.text.as_deref()) {
        c.insert("payload".into(), json!([{ "contentString": text }]));
    }
    c.insert("note".into(), Value::Array(notes(m, item)));
    json!({
        "fullUrl": full_url(&a.event_id),
        "resource": Value::Object(c),
        "request": {
            "method": "POST",
            "url": "Communication",
            "ifNoneExist": format!("identifier={URI_SYSTEM}|{identifier}"),
        },
    })
}

/// The notes: where it was given, who flagged it and who marked it transcribed.
fn notes(m: &Manifest, item: &Item<'_>) -> Vec<Value> {
    let a = item.listed;
    let mut out = vec![json!({
        "authorString": "cordon",
        "time": instant(m.sealed_at),
        "text": format!(
            "{}Given in the chat of major incident {} (\u{201c}{}\u{201d}), room `{}` ({}) on \
             {}, at {}. Exported from the incident's sealed archive.",
            if m.exercise { "EXERCISE: " } else { "" },
            m.incident,
            m.display_name,
            a.room_key,
            a.room_id,
            m.server_name,
            instant(a.sent_at),
        ),
    })];
    out.push(json!({
        "authorString": a.flagged_by,
        "time": instant(a.flagged_at),
        "text": format!("Flagged as clinical advice ({}).", via(&a.flagged_via)),
    }));
    match &a.transcribed {
        Some(t) if t.confirmed => out.push(json!({
            "authorString": t.by,
            "time": instant(t.at),
            "text": "Marked transcribed into the patient record (confirmed by command).",
        })),
        Some(t) => out.push(json!({
            "authorString": t.by,
            "time": instant(t.at),
            "text": "Marked transcribed by a \u{2705} reaction, which cordon cannot confirm \
                     (reactions are not encrypted); not confirmed by command before \
                     stand-down.",
        })),
        None => out.push(json!({
            "authorString": "cordon",
            "time": instant(m.sealed_at),
            "text": "Not marked transcribed into the patient record by stand-down.",
        })),
    }
    if item.sealed.is_some_and(|s| s.text.is_none()) {
        out.push(json!({
            "authorString": "cordon",
            "time": instant(a.flagged_at),
            "text": "cordon could not read the message's text when it was flagged; see the \
                     room's transcript in the archive.",
        }));
    } else if item.sealed.is_none() {
        out.push(json!({
            "authorString": "cordon",
            "time": instant(m.sealed_at),
            "text": "The sealed copy of this advice could not be opened; see the room's \
                     transcript in the archive.",
        }));
    }
    out
}

fn via(v: &str) -> &'static str {
    match v {
        "reaction" => "by a \u{1fa7a} reaction",
        _ => "by command",
    }
}

/// A FHIR `instant`: seconds (and milliseconds when there are any), `Z`.
fn instant(t: DateTime<Utc>) -> String {
    t.trunc_subsecs(3)
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The item's `fullUrl`: a UUID named by its event id (SHA-256, RFC 9562 version 8),
/// so that the same item has the same name in every bundle built from the archive.
pub fn full_url(event_id: &str) -> String {
    let mut b: [u8; 16] = [0; 16];
    b.copy_from_slice(&Sha256::digest(event_id.as_bytes())[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `matrix:roomid/<room>/e/<event>` (the Matrix URI of a message, sigils dropped).
pub fn event_uri(room_id: &str, event_id: &str) -> String {
    format!(
        "matrix:roomid/{}/e/{}",
        segment(room_id.trim_start_matches('!')),
        segment(event_id.trim_start_matches('$'))
    )
}

/// `matrix:u/<user>` (the Matrix URI of a user, sigil dropped).
pub fn user_uri(user_id: &str) -> String {
    format!("matrix:u/{}", segment(user_id.trim_start_matches('@')))
}

/// Percent-encodes what a URI path segment may not hold as it is (RFC 3986 `pchar`).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
