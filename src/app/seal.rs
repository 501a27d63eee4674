//! The stand-down's second step: export every room's history as cordon decrypts it,
//! seal it into one age archive for the records officers, and verify it.
//!
//! The export pages forward through each frozen room from its first event. Every event
//! becomes one transcript line (`docs/archive-format.md`): messages, edits, replies and
//! reactions with their decrypted content, membership and other state changes, and
//! redacted events as markers (who, when, why), the ones cordon's retention removed
//! named as such. Attachments are fetched (and decrypted) into the archive, and every
//! media address is kept for the destroy step: encrypted rooms hide them from the
//! server. The pre-seal segments retention wrote are copied in, and the incident's
//! slice of the audit log.
//!
//! [`ArchiveWriter::finish`](crate::archive::ArchiveWriter::finish) re-reads the sealed
//! file from disk with a one-time identity that was an extra recipient for this alone,
//! checks it, and forgets the identity. A sealed archive that does not verify stops the
//! pipeline before anything is destroyed. The archive's name is fixed per incident, so
//! sealing again after a crash replaces the earlier attempt: there is one archive.

use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;

use chrono::TimeDelta;
use matrix_sdk::Room;
use matrix_sdk::media::{MediaFormat, MediaRequestParameters};
use matrix_sdk::ruma::api::client::filter::RoomEventFilter;
use matrix_sdk::ruma::api::client::message::get_message_events;
use matrix_sdk::ruma::events::room::{EncryptedFile, MediaSource};
use matrix_sdk::ruma::{OwnedMxcUri, UInt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::chat::{send_once, user_ids};
use super::ctx::{AppError, Ctx, incident_rooms};
use crate::archive::{self, ArchiveError, ArchiveHeader, ArchiveWriter, RoomExport};
use crate::domain::incident::{ArchiveContents, ArchiveInfo, Event, Incident, State};
use crate::domain::transcript::{MediaRef, Redacted, SOURCE_EXPORT, TranscriptLine};
use crate::input::playbook::Playbook;
use crate::matrix::MatrixError;
use crate::matrix::rooms::{self, notice};
use crate::retention::classify::{EventHead, REDACTION_TYPE};
use crate::store::advice::MarkedVia;
use crate::store::{RoomRecord, RoomStatus, StandDownStep};

/// Events per page of the export.
const PAGE: u32 = 500;

/// Why sealing did not end in a verified archive.
pub(crate) enum SealFailure {
    /// Something that may pass (the homeserver unreachable): the job runs again.
    Retry(AppError),
    /// The archive could not be sealed or did not verify: the pipeline stops, as
    /// `failed`, before anything is destroyed.
    Stop(String),
}

impl From<AppError> for SealFailure {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Archive(e) => SealFailure::Stop(e.to_string()),
            other => SealFailure::Retry(other),
        }
    }
}

impl From<ArchiveError> for SealFailure {
    fn from(e: ArchiveError) -> Self {
        SealFailure::Stop(e.to_string())
    }
}

impl From<crate::store::StoreError> for SealFailure {
    fn from(e: crate::store::StoreError) -> Self {
        SealFailure::Retry(e.into())
    }
}

/// Exports, seals and verifies the archive of `incident` (standing down, its rooms
/// frozen), records it (`archived`) and tells the control room. Returns the incident
/// as recorded.
pub(crate) async fn seal(
    ctx: &Arc<Ctx>,
    incident: &Incident,
    playbook: &Playbook,
) -> Result<Incident, SealFailure> {
    let id = &incident.id;
    let mut record = ctx
        .store
        .begin_standdown_step(id, StandDownStep::Seal, ctx.now())?;
    info!(incident = %id, attempt = record.seal_attempts, "sealing the archive");
    crate::failpoint::hit("standdown.seal").await;
    let rooms = exportable_rooms(ctx, incident)?;
    let dir = ctx.config.archive_dir.clone();
    let name = archive::archive_file_name(id.as_str());
    // An exercise's archive is kept apart from real incidents' (`exercises/`).
    let sealed_dir = match archive::archive_relative_path(id.as_str(), incident.exercise).parent() {
        Some(sub) => dir.join(sub),
        None => dir.clone(),
    };
    let mut writer = ArchiveWriter::create(&sealed_dir, &name, &playbook.archive.recipients)?;
    let mut media = BTreeSet::new();
    for (record, room) in &rooms {
        let export = export_room(ctx, record, room, &mut writer, &mut media).await?;
        writer.add_room(&export)?;
    }
    // After the export: a segment a sweep sealed meanwhile is in the list.
    for (room_key, segment) in ctx.store.seal_segments(id)? {
        let (file_name, bytes) = read_sealed(&dir, &segment.file, |path| {
            format!("the pre-seal segment {}", path.display())
        })
        .await?;
        writer.add_pre_seal(
            &room_key,
            &file_name,
            &bytes,
            &segment.sha256,
            segment.events,
        )?;
    }
    // The command record's sealed entries, copied verbatim: only the records officer's
    // key opens them (into `decision-log.md` and `.jsonl`).
    for entry in ctx.store.record_entries(id)? {
        let (file_name, bytes) = read_sealed(&dir, &entry.sealed_file, |path| {
            format!("the sealed entry {} ({})", entry.label(), path.display())
        })
        .await?;
        let manifest = archive::RecordManifest {
            kind: entry.kind,
            number: entry.number,
            file: String::new(),
            sha256: entry.sealed_sha256.clone(),
            bytes: entry.sealed_bytes,
            content_sha256: entry.content_sha256.clone(),
            decided_at: entry.decided_at,
            logged_at: entry.logged_at,
            decided_by: entry.decided_by.clone(),
            logged_by: entry.logged_by.clone(),
            corrects: entry.corrects,
            posted_event: entry.posted.as_ref().map(|p| p.event_id.clone()),
        };
        writer.add_record(manifest, &file_name, &bytes)?;
    }
    // The advice, each item with its sealed copy (text, patient) verbatim: only the
    // records officer's key opens them (into the FHIR bundle).
    for advice in ctx.store.advice_for(id)? {
        let sealed = match &advice.sealed {
            None => None,
            Some(s) => Some(
                read_sealed(&dir, &s.file, |path| {
                    format!("the sealed advice {} ({})", advice.event_id, path.display())
                })
                .await?,
            ),
        };
        let listed = archive::AdviceManifest {
            room_key: advice.room_key.clone(),
            room_id: advice.room_id.clone(),
            event_id: advice.event_id.clone(),
            author: advice.author.clone(),
            sent_at: advice.sent_at,
            flagged_by: advice.flagged.by.clone(),
            flagged_at: advice.flagged.at,
            flagged_via: advice.flagged.via.as_str().to_owned(),
            transcribed: advice
                .transcribed
                .as_ref()
                .map(|m| archive::TranscribedManifest {
                    by: m.by.clone(),
                    at: m.at,
                    confirmed: m.via == MarkedVia::Command,
                }),
            patient: advice.sealed.as_ref().is_some_and(|s| s.patient),
            sealed: advice.sealed.as_ref().map(|s| archive::SealedMember {
                file: String::new(),
                sha256: s.sha256.clone(),
                bytes: s.bytes,
                content_sha256: s.content_sha256.clone(),
            }),
        };
        writer.add_advice(
            listed,
            sealed.as_ref().map(|(n, b)| (n.as_str(), b.as_slice())),
        )?;
    }
    let audit: Vec<Value> = ctx
        .store
        .audit_entries(.., Some(id))?
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    writer.add_audit(&audit)?;
    // What destruction must delete, recorded before the archive exists.
    record.media = media.into_iter().collect();
    record.updated_at = ctx.now();
    ctx.store.put_standdown(id, &record)?;

    let header = ArchiveHeader {
        incident: id.to_string(),
        display_name: incident.display_name.clone(),
        playbook: incident.playbook.clone(),
        commander: incident.commander.clone(),
        declared_at: incident.declared_at,
        expires_at: incident.expires_at,
        stood_down_at: stood_down_at(ctx, incident),
        stood_down_by: incident.stood_down_by.clone(),
        sealed_at: ctx.now(),
        server_name: ctx.config.user.server_name().to_string(),
        time_zone: Some(ctx.config.time_zone.name().to_owned()),
        exercise: incident.exercise,
        roles: roles_held(ctx, incident, playbook)?,
    };
    let signer = ctx.signer.clone();
    let sealed = tokio::task::spawn_blocking(move || writer.finish(header, &signer))
        .await
        .map_err(|e| SealFailure::Stop(format!("the sealing task failed: {e}")))??;
    crate::failpoint::hit("standdown.sealed").await;
    // The advice to deliver to the patient record, from the items sealed to cordon's
    // delivery key, before the archive is recorded (the items go with the pre-seal
    // directory once it is).
    let fhir = super::fhir::prepare(ctx, incident, &sealed.manifest).await?;
    if fhir.is_some() {
        record.fhir = fhir;
        record.updated_at = ctx.now();
        ctx.store.put_standdown(id, &record)?;
    }
    let keep = TimeDelta::from_std(playbook.archive.keep).unwrap_or(TimeDelta::MAX);
    let counts = sealed.manifest.totals();
    let info = ArchiveInfo {
        sha256: sealed.sha256.clone(),
        location: sealed.path.display().to_string(),
        keep_until: ctx
            .now()
            .checked_add_signed(keep)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
        contents: Some(ArchiveContents {
            size: sealed.size,
            rooms: sealed.manifest.rooms.len() as u64,
            events: counts.events,
            messages: counts.messages,
            media: counts.media,
            undecryptable: counts.undecryptable,
        }),
    };
    let (archived, _) = ctx.store.apply(
        id,
        Event::Archived(info.clone()),
        super::ctx::ACTOR,
        ctx.now(),
    )?;
    crate::failpoint::hit("standdown.archived").await;
    remove_pre_seal_dir(&dir, id.as_str());
    info!(
        incident = %id,
        file = %info.location,
        sha256 = %info.sha256,
        messages = counts.messages,
        undecryptable = counts.undecryptable,
        "archive sealed and verified"
    );
    tell_archived(ctx, &archived).await;
    Ok(archived)
}

/// A file sealed before the stand-down (a pre-seal segment, an entry of the command
/// record, an advice item), `relative` to the archive directory `dir`: its file name
/// and bytes, to copy into the archive verbatim. One that cannot be read stops the
/// pipeline, `describe`d by its path.
async fn read_sealed(
    dir: &Path,
    relative: &str,
    describe: impl FnOnce(&Path) -> String,
) -> Result<(String, Vec<u8>), SealFailure> {
    let path = dir.join(relative);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| SealFailure::Stop(format!("{} cannot be read: {e}", describe(&path))))?;
    let name = Path::new(relative)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(relative)
        .to_owned();
    Ok((name, bytes))
}

/// The rooms to export: every room cordon created, which must all be frozen and joined
/// (one that is not cannot be exported, and the pipeline must not go on without it).
fn exportable_rooms(
    ctx: &Ctx,
    incident: &Incident,
) -> Result<Vec<(RoomRecord, Room)>, SealFailure> {
    let joined = incident_rooms(ctx, incident)?;
    for record in ctx.store.rooms(&incident.id)? {
        let present = joined.iter().any(|(r, _)| r.key == record.key);
        if record.status == RoomStatus::Frozen && !present {
            return Err(SealFailure::Stop(format!(
                "cordon is no longer in the room `{}` ({}), so its history cannot be \
                 exported",
                record.key,
                record.room_id.as_deref().unwrap_or("no room id")
            )));
        }
    }
    Ok(joined
        .into_iter()
        .filter(|(r, _)| r.status == RoomStatus::Frozen)
        .collect())
}

/// When the stand-down was recorded, from the audit log.
fn stood_down_at(ctx: &Ctx, incident: &Incident) -> Option<chrono::DateTime<chrono::Utc>> {
    ctx.store
        .audit_entries(.., Some(&incident.id))
        .ok()?
        .iter()
        .find(|e| {
            e.details_value().get("to").and_then(Value::as_str)
                == Some(State::StandingDown.as_str())
        })
        .map(|e| e.at)
}

/// One room's history, oldest first, with its attachments added to `writer`.
async fn export_room(
    ctx: &Ctx,
    record: &RoomRecord,
    room: &Room,
    writer: &mut ArchiveWriter,
    media: &mut BTreeSet<String>,
) -> Result<RoomExport, SealFailure> {
    let client = room.client();
    let room_id = room.room_id();
    // Decides how a plaintext message is marked: in an encrypted room (every incident
    // room) nothing proves who wrote it.
    let encrypted = crate::retention::sweep::room_is_encrypted(room)
        .await
        .map_err(|e| SealFailure::Retry(e.into()))?;
    let mut lines: Vec<TranscriptLine> = Vec::new();
    // Events cordon could not decrypt yet, tried again below.
    let mut undecrypted = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut request =
            get_message_events::v3::Request::forward(room_id.to_owned()).from(from.clone());
        request.limit = UInt::from(PAGE);
        let mut filter = RoomEventFilter::default();
        // A redaction shows as a marker on the event it redacted.
        filter.not_types = vec![REDACTION_TYPE.to_owned()];
        request.filter = filter;
        let page = client
            .send(request)
            .into_future()
            .await
            .map_err(|e| AppError::Matrix(MatrixError::Http(e.to_string())))?;
        for raw in &page.chunk {
            let head = EventHead::parse(raw.json().get());
            let line = if head.unsigned.redacted_because {
                let json: Value = serde_json::from_str(raw.json().get()).unwrap_or(Value::Null);
                redacted_line(ctx, record, room_id.as_str(), &json, encrypted)
            } else {
                read(room, record, raw, &head, encrypted).await?
            };
            let Some(line) = line else {
                warn!(room = %room_id, "an event without id, sender or type is not exported");
                continue;
            };
            if line.undecryptable {
                undecrypted.push((lines.len(), raw.clone(), head));
                lines.push(line);
                continue;
            }
            lines.push(complete(ctx, writer, &record.key, line, media).await?);
        }
        match page.end {
            Some(end) if !page.chunk.is_empty() && from.as_deref() != Some(end.as_str()) => {
                from = Some(end);
            }
            _ => break,
        }
    }
    if !undecrypted.is_empty() {
        // A room key may still be on its way (to-device messages come with the sync):
        // wait for two syncs and try once more before calling a message undecryptable.
        ctx.settle_sync(2).await;
        let mut still = 0;
        for (index, raw, head) in undecrypted {
            let line = match read(room, record, &raw, &head, encrypted).await? {
                Some(line) if !line.undecryptable => {
                    complete(ctx, writer, &record.key, line, media).await?
                }
                _ => {
                    still += 1;
                    continue;
                }
            };
            if let Some(slot) = lines.get_mut(index) {
                *slot = line;
            }
        }
        if still > 0 {
            warn!(room = %room_id, count = still, "messages cordon could not decrypt are listed as such in the archive");
        }
    }
    for line in &mut lines {
        line.source = SOURCE_EXPORT.to_owned();
    }
    let name = room.name().unwrap_or_else(|| record.key.clone());
    info!(room = %room_id, key = %record.key, events = lines.len(), "room exported");
    Ok(RoomExport {
        key: record.key.clone(),
        room_id: room_id.to_string(),
        name,
        lines,
    })
}

/// One event as cordon reads it, decrypted when it can be.
async fn read(
    room: &Room,
    record: &RoomRecord,
    raw: &matrix_sdk::ruma::serde::Raw<matrix_sdk::ruma::events::AnyTimelineEvent>,
    head: &EventHead,
    room_encrypted: bool,
) -> Result<Option<TranscriptLine>, SealFailure> {
    crate::retention::sweep::read_line(room, &record.key, raw, head, room_encrypted)
        .await
        .map_err(|e| SealFailure::Retry(e.into()))
}

/// Notes a readable line's media addresses and fetches its attachment into the archive.
async fn complete(
    ctx: &Ctx,
    writer: &mut ArchiveWriter,
    room_key: &str,
    mut line: TranscriptLine,
    media: &mut BTreeSet<String>,
) -> Result<TranscriptLine, SealFailure> {
    if let Some(content) = line.content.clone() {
        media.extend(crate::domain::attachments::media_addresses(
            &line.event_type,
            &content,
        ));
        if let Some(source) = attachment(&line.event_type, &content) {
            line.media = Some(fetch(ctx, writer, room_key, &line, &content, source).await?);
        }
    }
    Ok(line)
}

/// The line of an event that was redacted before the export read it: who, when and
/// why, and no content (the server has none left). A redacted encrypted event keeps its
/// type `m.room.encrypted`; one that was sent in plaintext into an encrypted room is
/// still marked as unencrypted.
fn redacted_line(
    ctx: &Ctx,
    record: &RoomRecord,
    room_id: &str,
    json: &Value,
    room_encrypted: bool,
) -> Option<TranscriptLine> {
    let mut line = TranscriptLine::from_event(
        room_id,
        &record.key,
        json,
        crate::domain::transcript::Reading::plain(room_encrypted),
    )?;
    line.content = None;
    line.relates_to = None;
    let because = json.pointer("/unsigned/redacted_because");
    let text = |p: &str| {
        because
            .and_then(|b| b.pointer(p))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let by = text("/sender").unwrap_or_default();
    let reason = text("/content/reason");
    let by_retention = by == ctx.config.user.as_str()
        && reason
            .as_deref()
            .is_some_and(|r| r.starts_with(crate::retention::REASON_PREFIX));
    line.redacted = Some(Redacted {
        by,
        at_ms: because
            .and_then(|b| b.get("origin_server_ts"))
            .and_then(Value::as_i64),
        reason,
        redaction_event_id: text("/event_id"),
        by_retention,
    });
    Some(line)
}

/// The attachment of a message, when it has one: `m.image`, `m.file`, `m.video`,
/// `m.audio` and stickers, encrypted (`file`) or not (`url`).
fn attachment(event_type: &str, content: &Value) -> Option<MediaSource> {
    let msgtype = content.get("msgtype").and_then(Value::as_str);
    let has_media = event_type == "m.sticker"
        || (event_type == "m.room.message"
            && matches!(msgtype, Some("m.image" | "m.file" | "m.video" | "m.audio")));
    if !has_media {
        return None;
    }
    if let Some(file) = content.get("file") {
        let file: EncryptedFile = serde_json::from_value(file.clone()).ok()?;
        return Some(MediaSource::Encrypted(Box::new(file)));
    }
    let url = content.get("url").and_then(Value::as_str)?;
    Some(MediaSource::Plain(OwnedMxcUri::from(url)))
}

/// Fetches (and decrypts) one attachment into the archive. Media the server no longer
/// has, or that does not decrypt, is recorded as missing with the reason; any other
/// failure is retried with the whole step, so nothing is left out because the network
/// blinked.
async fn fetch(
    ctx: &Ctx,
    writer: &mut ArchiveWriter,
    room_key: &str,
    line: &TranscriptLine,
    content: &Value,
    source: MediaSource,
) -> Result<MediaRef, SealFailure> {
    let (mxc, encrypted) = match &source {
        MediaSource::Plain(uri) => (uri.to_string(), false),
        MediaSource::Encrypted(file) => (file.url.to_string(), true),
    };
    let mimetype = content
        .pointer("/info/mimetype")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut reference = MediaRef {
        mxc: mxc.clone(),
        encrypted,
        file: None,
        sha256: None,
        size: None,
        mimetype: mimetype.clone(),
        error: None,
    };
    let request = MediaRequestParameters {
        source,
        format: MediaFormat::File,
    };
    match ctx.client.media().get_media_content(&request, false).await {
        Ok(bytes) => {
            let entry =
                writer.add_media(room_key, &line.event_id, &mxc, mimetype.as_deref(), &bytes)?;
            reference.file = Some(entry.file);
            reference.sha256 = Some(entry.sha256);
            reference.size = Some(entry.size);
        }
        Err(e) if is_gone(&e) => {
            warn!(event = %line.event_id, error = %e, "an attachment could not be archived");
            reference.error = Some(e.to_string());
        }
        Err(e) => return Err(SealFailure::Retry(MatrixError::from(e).into())),
    }
    Ok(reference)
}

/// True for a media failure that retrying cannot fix: the server does not have it
/// (404), or it does not decrypt.
fn is_gone(e: &matrix_sdk::Error) -> bool {
    match e {
        matrix_sdk::Error::Http(http) => http
            .as_client_api_error()
            .is_some_and(|api| api.status_code.as_u16() == 404),
        _ => true,
    }
}

/// The playbook's roles and everyone who held each during the incident: the
/// playbook's holders and anyone the roster seated in it (added, enrolled, admitted).
fn roles_held(
    ctx: &Ctx,
    incident: &Incident,
    playbook: &Playbook,
) -> Result<Vec<archive::RoleManifest>, SealFailure> {
    let roster = ctx.store.roster_for_incident(&incident.id)?;
    Ok(playbook
        .roles
        .iter()
        .map(|role| {
            let id = role.id.as_str();
            let holders: BTreeSet<String> = role
                .holders
                .iter()
                .map(|h| h.to_string())
                .chain(
                    roster
                        .iter()
                        .filter(|e| e.roles.iter().any(|r| r == id))
                        .map(|e| e.user.clone()),
                )
                .collect();
            archive::RoleManifest {
                id: id.to_owned(),
                title: role.title.clone(),
                holders: holders.into_iter().collect(),
            }
        })
        .collect())
}

/// Deletes the pre-seal segments and the command record's sealed entries once the
/// archive that holds them is recorded.
fn remove_pre_seal_dir(archive_dir: &Path, incident: &str) {
    let dir = archive_dir.join(incident);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        warn!(dir = %dir.display(), error = %e, "could not remove the pre-seal segments, which are in the sealed archive");
    }
}

/// Tells the control room, once, that the archive is sealed and verified, from what the
/// incident's record says of it: a stand-down resumed after the archive was recorded
/// tells it too.
pub(crate) async fn tell_archived(ctx: &Arc<Ctx>, incident: &Incident) {
    let Some(info) = &incident.archive else {
        return;
    };
    let Some(control) = rooms::joined(&ctx.client, &incident.control_room) else {
        return;
    };
    let body = archived_notice(incident.id.as_str(), info, ctx.config.time_zone);
    let key = format!("{}/archived", incident.id.as_str());
    if let Err(e) = send_once(ctx, &control, &key, Some(&incident.id), notice(&body, &[])).await {
        warn!(incident = %incident.id, error = %e, "could not tell the control room the archive is sealed");
    }
}

/// The control room's notice of a sealed archive.
fn archived_notice(id: &str, info: &ArchiveInfo, time_zone: chrono_tz::Tz) -> String {
    let keep = crate::domain::incident::plan::format_time(info.keep_until, time_zone);
    // A record written before cordon kept the counts.
    let Some(c) = info.contents else {
        return format!(
            "The archive of {id} is sealed and verified: {file} (SHA-256 {sha}), encrypted \
             to the records officers' keys; cordon cannot open it. It is kept until {keep}.",
            file = info.location,
            sha = info.sha256,
        );
    };
    let undecryptable = if c.undecryptable > 0 {
        format!(
            " {} message(s) could not be decrypted by cordon; they are listed in it.",
            c.undecryptable
        )
    } else {
        String::new()
    };
    format!(
        "The archive of {id} is sealed and verified: {file} ({size} bytes, SHA-256 \
         {sha}). It holds {events} events ({messages} messages) from {rooms} room(s) and \
         {media} attachment(s), encrypted to the records officers' keys; cordon cannot \
         open it.{undecryptable} It is kept until {keep}.",
        file = info.location,
        size = c.size,
        sha = info.sha256,
        events = c.events,
        messages = c.messages,
        rooms = c.rooms,
        media = c.media,
    )
}

/// Stops the pipeline before anything is destroyed: the incident is recorded as
/// `failed` at the seal step, and the commander and the operators are alerted.
pub(crate) async fn stop(ctx: &Arc<Ctx>, incident: &Incident, why: &str) -> Result<(), AppError> {
    let id = &incident.id;
    warn!(incident = %id, why, "the archive could not be sealed and verified; the stand-down stops");
    ctx.store.apply(
        id,
        Event::Failed {
            reason: format!("sealing the archive: {why}"),
        },
        super::ctx::ACTOR,
        ctx.now(),
    )?;
    ctx.store.audit(
        super::ctx::ACTOR,
        "archive.failed",
        Some(id),
        json!({ "reason": why }),
        ctx.now(),
    )?;
    if let Some(control) = rooms::joined(&ctx.client, &incident.control_room) {
        let mut mention = vec![incident.commander.as_str()];
        mention.extend(ctx.config.operators.iter().map(|o| o.as_str()));
        let body = format!(
            "ALERT: the stand-down of {id} stopped before anything was destroyed: the \
             archive could not be sealed and verified ({why}). The rooms stay frozen and \
             nothing was deleted. An operator should fix the cause, then send `!cordon \
             retry {id}`.",
            id = id.as_str()
        );
        let attempt = ctx.store.standdown(id)?.map_or(0, |r| r.seal_attempts);
        let key = format!("{}/seal-failed/{attempt}", id.as_str());
        send_once(
            ctx,
            &control,
            &key,
            Some(id),
            notice(&body, &user_ids(&mention)),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(contents: Option<ArchiveContents>) -> ArchiveInfo {
        ArchiveInfo {
            sha256: "ab12".into(),
            location: "/var/lib/cordon/archives/mc-7f3a.cordon-archive.age".into(),
            keep_until: chrono::DateTime::UNIX_EPOCH,
            contents,
        }
    }

    #[test]
    fn the_archived_notice_comes_from_the_record_alone() {
        let counts = ArchiveContents {
            size: 4096,
            rooms: 2,
            events: 40,
            messages: 31,
            media: 1,
            undecryptable: 2,
        };
        let text = archived_notice("mc-7f3a", &info(Some(counts)), chrono_tz::UTC);
        for part in [
            "mc-7f3a is sealed and verified",
            "4096 bytes",
            "SHA-256 ab12",
            "40 events (31 messages) from 2 room(s) and 1 attachment(s)",
            "2 message(s) could not be decrypted",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        // A record from before the counts were kept: no made-up zeros.
        let old = archived_notice("mc-7f3a", &info(None), chrono_tz::UTC);
        assert!(
            old.contains("sealed and verified") && old.contains("SHA-256 ab12"),
            "{old}"
        );
        assert!(!old.contains("0 events"), "{old}");
    }
}
