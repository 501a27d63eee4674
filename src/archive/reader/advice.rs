//! The FHIR bundle that opening writes ([`FHIR_ADVICE_FILE`]) and `cordon archive fhir`
//! prints: each advice item's sealed copy decrypted with the records officer's
//! identities and checked against the manifest (its content hash, and that it names the
//! same incident, room, message, author and times), then [`fhir::bundle`].
//!
//! An item that cannot be decrypted or does not match is not dropped: it stays in the
//! bundle with what the manifest knows (no text, no patient) and a note saying so, and
//! opening reports it as a warning.

#[allow(clippy::wildcard_imports, reason = "the parent's imports and helpers")]
use super::*;
use crate::archive::advice::{ADVICE_VERSION, SealedAdvice};
use crate::archive::fhir::{self, Item};
use crate::archive::manifest::AdviceManifest;

/// Opens every sealed advice item of `m` with `decrypt` (which returns a member's
/// plaintext), checked; a problem leaves the item unopened and is named in `warnings`.
pub(super) fn open_all(
    m: &Manifest,
    decrypt: impl Fn(&str) -> Result<Vec<u8>, ArchiveError>,
    warnings: &mut Vec<String>,
) -> Vec<Option<SealedAdvice>> {
    m.advice
        .iter()
        .map(|a| {
            let member = a.sealed.as_ref()?;
            match open_one(a, &m.incident, decrypt(&member.file)) {
                Ok(item) => Some(item),
                Err(why) => {
                    warnings.push(format!(
                        "advice {} ({}): {why}; it is in the FHIR bundle without its text \
                         or patient",
                        a.event_id, member.file
                    ));
                    None
                }
            }
        })
        .collect()
}

fn open_one(
    a: &AdviceManifest,
    incident: &str,
    plaintext: Result<Vec<u8>, ArchiveError>,
) -> Result<SealedAdvice, String> {
    let member = a.sealed.as_ref().ok_or("no sealed copy")?;
    let plaintext = plaintext.map_err(|e| format!("could not be decrypted ({e})"))?;
    let sha = hex::encode(Sha256::digest(&plaintext));
    if sha != member.content_sha256.to_ascii_lowercase() {
        return Err("its content is not the one sealed (SHA-256 differs)".to_owned());
    }
    let item =
        SealedAdvice::from_bytes(&plaintext).map_err(|e| format!("is not an advice item ({e})"))?;
    if item.v != ADVICE_VERSION {
        return Err(format!(
            "is in format version {}, which this cordon does not read",
            item.v
        ));
    }
    let same = item.incident == incident
        && item.room_key == a.room_key
        && item.room_id == a.room_id
        && item.event_id == a.event_id
        && item.author == a.author
        && item.sent_at == a.sent_at
        && item.patient.is_some() == a.patient;
    if !same {
        return Err(
            "names another incident, room, message, author or time than the \
                    manifest"
                .to_owned(),
        );
    }
    if let Some(nhs) = &item.patient
        && !crate::domain::pid::nhs_check_digit_ok(nhs)
    {
        return Err("its NHS number is not a valid one".to_owned());
    }
    Ok(item)
}

/// The bundle of `m`'s advice, with `opened` from [`open_all`].
pub(super) fn bundle(m: &Manifest, opened: &[Option<SealedAdvice>]) -> serde_json::Value {
    let items: Vec<Item<'_>> = m
        .advice
        .iter()
        .zip(opened)
        .map(|(listed, sealed)| Item {
            listed,
            sealed: sealed.as_ref(),
        })
        .collect();
    fhir::bundle(m, &items)
}

/// The bundle as written to [`FHIR_ADVICE_FILE`]: pretty JSON and a final newline.
pub(super) fn to_bytes(bundle: &serde_json::Value) -> Result<Vec<u8>, ArchiveError> {
    let mut out = serde_json::to_vec_pretty(bundle)
        .map_err(|e| ArchiveError::BadInput(format!("{FHIR_ADVICE_FILE}: {e}")))?;
    out.push(b'\n');
    Ok(out)
}
