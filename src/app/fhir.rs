//! Delivering an incident's clinical advice to the patient record: the FHIR bundle the
//! archive holds, POSTed as a transaction to the configured FHIR server (`fhir:
//! base_url`) at stand-down, after the archive is sealed and before the rooms are
//! destroyed.
//!
//! 1. **Prepare** ([`prepare`], in the seal step, before the archive is recorded): the
//!    advice items cordon sealed to its delivery key as they were flagged
//!    ([`crate::archive::delivery`]) are opened and checked, built into the bundle (by
//!    [`crate::archive::reader::advice_bundle`], which also makes the one a records
//!    officer's `cordon archive fhir` prints), and the bundle is sealed to the delivery
//!    key in the outbox, and recorded. An exercise's advice is never delivered.
//! 2. **Deliver** ([`deliver`], the pipeline's step before destruction): the attempt is
//!    counted, then the bundle POSTed. A 2xx whose transaction-response entries are all
//!    2xx is delivered (audited `fhir.delivered`, the outbox copy deleted, the control
//!    room told); anything else is audited `fhir.failed`, the control room told once,
//!    and the step fails, so the scheduler tries again with backoff (5 s doubling to 5
//!    minutes) and the rooms are not destroyed. Each Communication is created only if
//!    none with its identifier exists (`ifNoneExist`), so a delivery whose answer was
//!    lost and is sent again records nothing twice.
//! 3. **Skip** ([`skip`]): an operator's `!cordon retry --skip-fhir` ends the wait
//!    without delivering (audited `fhir.skipped`); the bundle stays in the archive.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::chat::{send_once, user_ids};
use super::ctx::{ACTOR, AppError, Ctx};
use crate::archive::{self, ArchiveError, Manifest, segment};
use crate::domain::incident::Incident;
use crate::input::playbook::Playbook;
use crate::matrix::rooms::{self, notice};
use crate::store::standdown::{FhirDelivery, FhirOutcome};

/// The outbox directory under the state directory.
const OUTBOX_DIR: &str = "fhir-outbox";

/// How long one POST may take, answer included.
const POST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The recipients advice is sealed to: the playbook's records officers, and cordon's
/// delivery key when a FHIR server is configured.
pub(crate) fn advice_recipients(ctx: &Ctx, playbook: &Playbook) -> Vec<age::x25519::Recipient> {
    let mut out = playbook.archive.recipients.clone();
    if ctx.config.fhir.delivery.is_some()
        && let Some(key) = &ctx.fhir_key
    {
        out.push(key.to_public());
    }
    out
}

/// The seal step's part: the bundle to deliver, sealed in the outbox, once the archive
/// is written and verified (`manifest` is its manifest). `None` when there is nothing
/// to deliver: no FHIR server configured, an exercise, or no advice.
pub(crate) async fn prepare(
    ctx: &Ctx,
    incident: &Incident,
    manifest: &Manifest,
) -> Result<Option<FhirDelivery>, AppError> {
    let (Some(_), Some(key)) = (&ctx.config.fhir.delivery, &ctx.fhir_key) else {
        return Ok(None);
    };
    if incident.exercise || manifest.advice.is_empty() {
        return Ok(None);
    }
    // The items as they wait under the archive directory (`<incident>/advice/…`), the
    // manifest's members (`advice/…`) before they were copied.
    let sealed_dir = ctx.config.archive_dir.join(incident.id.as_str());
    let relative = format!("{OUTBOX_DIR}/{}.json.age", incident.id.as_str());
    let state_dir = ctx.config.state_dir.clone();
    let (manifest, key, to_write) = (manifest.clone(), key.clone(), relative.clone());
    let (items, warnings) = tokio::task::spawn_blocking(move || {
        let mut warnings = Vec::new();
        let bundle = archive::reader::advice_bundle(
            &manifest,
            |member| {
                let bytes = std::fs::read(sealed_dir.join(member))
                    .map_err(ArchiveError::io(&sealed_dir.join(member)))?;
                segment::open_sealed(&bytes, key.as_ref())
                    .map_err(|e| ArchiveError::BadInput(e.to_string()))
            },
            &mut warnings,
        );
        let body = serde_json::to_vec(&bundle)
            .map_err(|e| AppError::Record(format!("the FHIR bundle: {e}")))?;
        segment::write_sealed(&state_dir, &to_write, &body, &[key.to_public()])?;
        Ok::<_, AppError>((manifest.advice.len(), warnings))
    })
    .await
    .map_err(|e| AppError::Record(format!("sealing the FHIR bundle: {e}")))??;
    // Advice flagged before delivery was configured was sealed to the records officers
    // alone: it is delivered without its text.
    for warning in &warnings {
        warn!(incident = %incident.id, %warning, "an advice item is delivered without its text");
    }
    info!(incident = %incident.id, items, "FHIR bundle ready to deliver");
    Ok(Some(FhirDelivery {
        outbox: relative,
        items,
        attempts: 0,
        outcome: None,
    }))
}

/// The pipeline's step before destruction: delivers the bundle if one waits. `Ok` when
/// there is nothing (more) to deliver; an error keeps the rooms and is retried.
pub(crate) async fn deliver(ctx: &Arc<Ctx>, incident: &Incident) -> Result<(), AppError> {
    let id = &incident.id;
    let Some(mut record) = ctx.store.standdown(id)? else {
        return Ok(());
    };
    let Some(pending) = record.fhir.clone().filter(FhirDelivery::is_pending) else {
        return Ok(());
    };
    let attempt = pending.attempts + 1;
    if let Some(d) = record.fhir.as_mut() {
        d.attempts = attempt;
    }
    record.updated_at = ctx.now();
    ctx.store.put_standdown(id, &record)?;
    let url = ctx
        .config
        .fhir
        .delivery
        .as_ref()
        .map(|d| d.base_url.to_string());
    match post(ctx, &pending).await {
        Ok(()) => {
            let url = url.unwrap_or_default();
            let mut record = ctx.store.standdown(id)?.unwrap_or(record);
            if let Some(d) = record.fhir.as_mut() {
                d.outcome = Some(FhirOutcome::Delivered {
                    at: ctx.now(),
                    url: url.clone(),
                });
            }
            record.updated_at = ctx.now();
            ctx.store.put_standdown(id, &record)?;
            ctx.store.audit(
                ACTOR,
                "fhir.delivered",
                Some(id),
                json!({ "url": url, "items": pending.items, "attempt": attempt }),
                ctx.now(),
            )?;
            remove_outbox(ctx, &pending.outbox);
            info!(incident = %id, items = pending.items, attempt, "advice delivered to the FHIR server");
            tell(
                ctx,
                incident,
                "fhir-delivered",
                &format!(
                    "The clinical advice of {} ({} item(s)) is delivered to the patient \
                     record at {url}.",
                    id.as_str(),
                    pending.items
                ),
                false,
            )
            .await;
            Ok(())
        }
        Err(failure) => {
            ctx.store.audit(
                ACTOR,
                "fhir.failed",
                Some(id),
                json!({ "url": url, "attempt": attempt, "reason": failure.audited }),
                ctx.now(),
            )?;
            warn!(incident = %id, attempt, reason = %failure.audited, "FHIR delivery failed");
            tell(
                ctx,
                incident,
                "fhir-failed",
                &format!(
                    "ALERT: the clinical advice of {id} ({n} item(s)) could not be delivered \
                     to the patient record ({why}). Its rooms stay frozen and are not destroyed \
                     until it is: cordon keeps trying, and `!cordon retry {id}` tries now. An \
                     operator can send `!cordon retry {id} --skip-fhir` to destroy them \
                     without delivering; the bundle is in the sealed archive (`cordon archive \
                     fhir`).",
                    id = id.as_str(),
                    n = pending.items,
                    why = failure.told,
                ),
                true,
            )
            .await;
            Err(AppError::Fhir(failure.told))
        }
    }
}

/// `retry --skip-fhir`: ends the wait for delivery without delivering. Returns false if
/// no delivery was waiting.
pub(crate) fn skip(ctx: &Ctx, incident: &Incident, by: &str) -> Result<bool, AppError> {
    let id = &incident.id;
    let Some(mut record) = ctx.store.standdown(id)? else {
        return Ok(false);
    };
    let Some(d) = record.fhir.as_mut().filter(|d| d.is_pending()) else {
        return Ok(false);
    };
    d.outcome = Some(FhirOutcome::Skipped {
        by: by.to_owned(),
        at: ctx.now(),
    });
    let (outbox, items) = (d.outbox.clone(), d.items);
    record.updated_at = ctx.now();
    ctx.store.put_standdown(id, &record)?;
    ctx.store.audit(
        by,
        "fhir.skipped",
        Some(id),
        json!({ "items": items }),
        ctx.now(),
    )?;
    remove_outbox(ctx, &outbox);
    info!(incident = %id, by, "FHIR delivery skipped");
    Ok(true)
}

/// True while `incident`'s rooms wait for its advice to be delivered.
pub(crate) fn is_waiting(ctx: &Ctx, incident: &Incident) -> bool {
    ctx.store
        .standdown(&incident.id)
        .ok()
        .flatten()
        .and_then(|r| r.fhir)
        .is_some_and(|d| d.is_pending())
}

/// Why a POST failed: what the audit log keeps (status and codes, never a body that
/// could echo patient data) and what the control room is told.
struct Failure {
    audited: String,
    told: String,
}

impl Failure {
    fn plain(why: String) -> Self {
        Self {
            audited: why.clone(),
            told: why,
        }
    }
}

/// POSTs the outbox's bundle to the configured server.
async fn post(ctx: &Ctx, pending: &FhirDelivery) -> Result<(), Failure> {
    let Some(delivery) = &ctx.config.fhir.delivery else {
        return Err(Failure::plain(
            "fhir.base_url is no longer in cordon's config".to_owned(),
        ));
    };
    let Some(key) = &ctx.fhir_key else {
        return Err(Failure::plain(
            "cordon has no FHIR delivery key to open the bundle".to_owned(),
        ));
    };
    let path = ctx.config.state_dir.join(&pending.outbox);
    let sealed = tokio::fs::read(&path).await.map_err(|e| {
        Failure::plain(format!("the outbox {} cannot be read: {e}", path.display()))
    })?;
    let body = segment::open_sealed(&sealed, key.as_ref())
        .map_err(|e| Failure::plain(format!("the outbox cannot be opened: {e}")))?;
    let token = match &delivery.token {
        None => None,
        Some(source) => Some(
            source
                .read()
                .map_err(|e| Failure::plain(format!("the FHIR token cannot be read: {e}")))?,
        ),
    };
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|e| Failure::plain(format!("no HTTP client: {e}")))?;
    let mut request = client
        .post(delivery.base_url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/fhir+json")
        .header(reqwest::header::ACCEPT, "application/fhir+json")
        .body(body);
    if let Some(token) = &token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|e| {
        Failure::plain(format!(
            "{} did not answer: {}",
            delivery.base_url,
            short(&e)
        ))
    })?;
    let status = response.status();
    let answer: Option<Value> = response.json().await.ok();
    if !status.is_success() {
        let codes = issue_codes(answer.as_ref());
        return Err(Failure::plain(format!(
            "{} answered HTTP {}{codes}",
            delivery.base_url,
            status.as_u16()
        )));
    }
    // A transaction-response lists each entry's outcome: every one must be 2xx.
    if let Some(entries) = answer
        .as_ref()
        .filter(|a| a["resourceType"] == "Bundle")
        .and_then(|a| a["entry"].as_array())
    {
        let refused: Vec<&str> = entries
            .iter()
            .filter_map(|e| e["response"]["status"].as_str())
            .filter(|s| !s.trim_start().starts_with('2'))
            .collect();
        if !refused.is_empty() {
            return Err(Failure::plain(format!(
                "{} answered HTTP {} but refused {} entr(y/ies) ({})",
                delivery.base_url,
                status.as_u16(),
                refused.len(),
                refused.join(", ")
            )));
        }
    }
    Ok(())
}

/// `: codes x, y` from an OperationOutcome's issues (never their diagnostics).
fn issue_codes(answer: Option<&Value>) -> String {
    let codes: Vec<&str> = answer
        .filter(|a| a["resourceType"] == "OperationOutcome")
        .and_then(|a| a["issue"].as_array())
        .map(|issues| issues.iter().filter_map(|i| i["code"].as_str()).collect())
        .unwrap_or_default();
    if codes.is_empty() {
        String::new()
    } else {
        format!(" (issue {})", codes.join(", "))
    }
}

/// A request error without the URL reqwest repeats in it.
fn short(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

fn remove_outbox(ctx: &Ctx, outbox: &str) {
    let path = ctx.config.state_dir.join(outbox);
    if let Err(e) = std::fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(file = %Path::new(outbox).display(), error = %e, "could not remove the FHIR outbox copy");
    }
}

/// Tells the control room, once per incident and `what`; an alert mentions the
/// commander and the operators.
async fn tell(ctx: &Arc<Ctx>, incident: &Incident, what: &str, body: &str, alert: bool) {
    let Some(control) = rooms::joined(&ctx.client, &incident.control_room) else {
        return;
    };
    let mut mention = vec![incident.commander.as_str()];
    if alert {
        mention.extend(ctx.config.operators.iter().map(|o| o.as_str()));
    }
    let key = format!("{}/{what}", incident.id.as_str());
    if let Err(e) = send_once(
        ctx,
        &control,
        &key,
        Some(&incident.id),
        notice(body, &user_ids(&mention)),
    )
    .await
    {
        warn!(incident = %incident.id, error = %e, "could not tell the control room about the FHIR delivery");
    }
}
