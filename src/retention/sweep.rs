//! The sweep job: pages a room's history forward and redacts what is due. See the
//! module documentation of [`crate::retention`] for the whole picture.

use std::future::IntoFuture;

use chrono::TimeDelta;
use futures_util::StreamExt;
use matrix_sdk::EncryptionState;
use matrix_sdk::Room;
use matrix_sdk::config::RequestConfig;
use matrix_sdk::deserialized_responses::{
    DeviceLinkProblem, TimelineEventKind, VerificationLevel, VerificationState,
};
use matrix_sdk::ruma::api::client::filter::RoomEventFilter;
use matrix_sdk::ruma::api::client::message::get_message_events;
use matrix_sdk::ruma::api::client::redact::redact_event;
use matrix_sdk::ruma::events::AnyTimelineEvent;
use matrix_sdk::ruma::events::room::encrypted::OriginalSyncRoomEncryptedEvent;
use matrix_sdk::ruma::serde::Raw;
use matrix_sdk::ruma::{OwnedEventId, OwnedTransactionId, UInt};
use serde_json::{Value, json};
use tracing::{debug, info, instrument, warn};

use super::classify::{EventHead, Pending, REDACTION_TYPE, next_due, redaction_txn_id, scan_page};
use super::rate_limit::{Failed, RateGate, limit_of};
use super::{AUDIT_ACTION, SealTarget, SweepError, SweepParams, SweepReport, SweepTuning};
use crate::archive::segment;
use crate::domain::attachments::media_addresses;
use crate::domain::transcript::{
    Encryption, Reading, TranscriptLine, VERIFICATION_MISMATCHED_SENDER,
};
use crate::store::{
    LastSweep, MediaSeenIn, MediaSighting, SealSegment, SealedPage, Store, SweepAudit, SweepCounts,
    SweepRecord,
};

/// The audit actor.
const ACTOR: &str = "cordon";

/// Sweeps one incident room with the default [`SweepTuning`].
pub async fn sweep_room(
    room: &Room,
    store: &Store,
    params: &SweepParams<'_>,
) -> Result<SweepReport, SweepError> {
    sweep_room_with(room, store, params, &SweepTuning::default()).await
}

/// Sweeps one incident room: redacts (after sealing, when asked) every message-like
/// event at or before `params.cutoff`, from where the last sweep of this room stopped.
///
/// Idempotent and resumable: run it again after any error or a crash and it continues
/// from the last complete page, without redacting or sealing anything twice.
#[instrument(skip_all, fields(incident = %params.incident, room = %room.room_id(), key = params.room_key))]
pub async fn sweep_room_with(
    room: &Room,
    store: &Store,
    params: &SweepParams<'_>,
    tuning: &SweepTuning,
) -> Result<SweepReport, SweepError> {
    segment::check_room_key(params.room_key)?;
    let now = params.cutoff + TimeDelta::from_std(params.window).unwrap_or(TimeDelta::MAX);
    let cutoff_ms = params.cutoff.timestamp_millis();
    let room_id = room.room_id().as_str();
    let mut record = match store.sweep_record(params.incident, params.room_key)? {
        Some(r) if r.room_id == room_id => r,
        Some(r) => {
            return Err(SweepError::RoomMismatch {
                incident: params.incident.to_string(),
                room_key: params.room_key.to_owned(),
                recorded: r.room_id,
                room: room_id.to_owned(),
            });
        }
        None => SweepRecord::new(room_id, now),
    };
    let gate = RateGate::new(tuning.retry);
    let page_size = tuning.page_size.clamp(1, 1000);
    let mut report = SweepReport {
        redacted: 0,
        sealed: 0,
        already_redacted: 0,
        skipped: 0,
        segments: Vec::new(),
        pages: 0,
        events_read: 0,
        rate_limited: 0,
        held: false,
        next_due: now,
    };

    let pending = loop {
        if on_hold(store, params)? {
            info!("legal hold: sweep paused");
            report.held = true;
            break Pending::Nothing;
        }
        let from = record.from.clone();
        let started = std::time::Instant::now();
        let page = fetch_page(room, &gate, from.as_deref(), page_size).await?;
        let fetch_ms = started.elapsed().as_millis();
        report.pages += 1;
        report.events_read += page.chunk.len() as u64;
        let heads: Vec<EventHead> = page
            .chunk
            .iter()
            .map(|e| EventHead::parse(e.json().get()))
            .collect();
        let scan = scan_page(&heads, cutoff_ms);
        debug!(
            events = heads.len(),
            due = scan.due.len(),
            stop = ?scan.stop,
            fetch_ms,
            "page read"
        );
        report.skipped += scan.skipped;

        if let Some(target) = &params.seal {
            let sealed = seal_page(
                room,
                store,
                params,
                target,
                &mut record,
                SealInput {
                    from: &from,
                    events: &page.chunk,
                    heads: &heads,
                    due: &scan.due,
                    now,
                },
            )
            .await?;
            report.sealed += sealed.sealed;
            report.segments.extend_from_slice(&sealed.segments);
        }

        // The attachments of what is about to be redacted, noted first: once redacted,
        // nobody can read their addresses, and stand-down must delete the media.
        note_media(room, store, params, &page.chunk, &heads, &scan.due, now).await?;

        let due: Vec<&str> = scan
            .due
            .iter()
            .filter_map(|&i| heads[i].event_id.as_deref())
            .collect();
        let started = std::time::Instant::now();
        let redacted = redact_events(room, &gate, &due, &params.reason, tuning.concurrency).await?;
        debug!(
            redacted,
            redact_ms = started.elapsed().as_millis(),
            "page redacted"
        );
        crate::failpoint::hit("retention.page-redacted").await;
        report.redacted += redacted;
        report.already_redacted += scan.already_redacted;

        let (next_from, done) = match (scan.stop, page.end) {
            (Some(0), _) => (from.clone(), true),
            (Some(stop), _) => (
                token_before(room, &gate, from.as_deref(), stop, &heads).await?,
                true,
            ),
            // Nothing more now (Synapse omits `end` at the end of the room).
            (None, None) => (from.clone(), true),
            // An empty page that does not move on: the end, too.
            (None, Some(end)) if page.chunk.is_empty() && from.as_deref() == Some(end.as_str()) => {
                (from.clone(), true)
            }
            (None, Some(end)) => (Some(end), false),
        };
        let counts = SweepCounts {
            redacted,
            already_redacted: scan.already_redacted,
            sealed: 0,
            segments: Vec::new(),
        };
        record.totals.add(&counts);
        record.unaudited.add(&counts);
        if next_from != from {
            record.sealed_page = None;
        }
        record.from = next_from;
        record.updated_at = now;
        if done {
            break if scan.stop.is_some() {
                scan.pending
            } else {
                Pending::Nothing
            };
        }
        store.put_sweep_record(params.incident, params.room_key, &record)?;
    };

    let next_due = next_due(pending, now, params.window, tuning.min_resweep);
    if !report.held {
        record.sweeps += 1;
    }
    record.last_sweep = Some(LastSweep {
        at: now,
        cutoff: params.cutoff,
        next_due,
    });
    let audit = (record.unaudited.redacted > 0 || record.unaudited.sealed > 0).then(|| {
        let done = std::mem::take(&mut record.unaudited);
        SweepAudit {
            actor: ACTOR,
            action: AUDIT_ACTION,
            details: json!({
                "room_key": params.room_key,
                "room": room_id,
                "cutoff": params.cutoff,
                "window": humantime::format_duration(params.window).to_string(),
                "reason": params.reason,
                "redacted": done.redacted,
                "already_redacted": done.already_redacted,
                "sealed": done.sealed,
                "segments": done.segments,
                "pages": report.pages,
                "rate_limited": gate.waits(),
                "next_due": next_due,
            }),
        }
    });
    crate::failpoint::hit("retention.before_finish").await;
    store.finish_sweep(params.incident, params.room_key, &record, audit, now)?;
    report.next_due = next_due;
    report.rate_limited = gate.waits();
    info!(
        redacted = report.redacted,
        already_redacted = report.already_redacted,
        sealed = report.sealed,
        pages = report.pages,
        rate_limited = report.rate_limited,
        held = report.held,
        next_due = %next_due,
        "retention sweep done"
    );
    Ok(report)
}

fn on_hold(store: &Store, params: &SweepParams<'_>) -> Result<bool, SweepError> {
    Ok(store
        .incident(params.incident)?
        .is_some_and(|i| i.hold.is_some()))
}

/// matrix-sdk's own retries are off for the sweep's requests: the [`RateGate`] handles
/// 429s, and any other failure ends the sweep (see [`super::rate_limit`]).
fn request_config() -> RequestConfig {
    RequestConfig::new().disable_retry()
}

/// One page of history forward from `from` (the start of the room when `None`), without
/// redaction events.
async fn fetch_page(
    room: &Room,
    gate: &RateGate,
    from: Option<&str>,
    limit: u32,
) -> Result<get_message_events::v3::Response, SweepError> {
    let mut request = get_message_events::v3::Request::forward(room.room_id().to_owned())
        .from(from.map(str::to_owned));
    request.limit = UInt::from(limit);
    let mut filter = RoomEventFilter::default();
    filter.not_types = vec![REDACTION_TYPE.to_owned()];
    request.filter = filter;
    let client = room.client();
    gate.run(limit_of, || {
        client
            .send(request.clone())
            .with_request_config(request_config())
            .into_future()
    })
    .await
    .map_err(|failed| match failed {
        Failed::Error(source) => SweepError::Messages {
            room: room.room_id().to_string(),
            source,
        },
        Failed::RateLimited(why) => SweepError::RateLimited {
            room: room.room_id().to_string(),
            why,
        },
    })
}

/// A token between the first `stop` events from `from` and the rest: re-reads exactly
/// those events, whose answer ends there. Falls back to `from` (the page is re-read next
/// time, its redacted events skipped) if the history does not read back the same.
async fn token_before(
    room: &Room,
    gate: &RateGate,
    from: Option<&str>,
    stop: usize,
    heads: &[EventHead],
) -> Result<Option<String>, SweepError> {
    let limit = u32::try_from(stop).unwrap_or(u32::MAX);
    let page = fetch_page(room, gate, from, limit).await?;
    let same = page.chunk.len() == stop
        && page
            .chunk
            .iter()
            .zip(heads)
            .all(|(e, h)| e.get_field::<String>("event_id").ok().flatten() == h.event_id);
    match page.end {
        Some(end) if same => Ok(Some(end)),
        _ => {
            warn!("the history did not read back the same; the next sweep re-reads this page");
            Ok(from.map(str::to_owned))
        }
    }
}

/// Redacts `events`, `concurrency` at a time. Returns how many were redacted; stops at
/// the first failure (the rest are redacted by the next sweep).
async fn redact_events(
    room: &Room,
    gate: &RateGate,
    events: &[&str],
    reason: &str,
    concurrency: usize,
) -> Result<u64, SweepError> {
    let client = room.client();
    let room_id = room.room_id();
    // Owned ids, collected before the stream: a closure over borrowed items held across
    // an await makes the sweep's future not provably `Send` for every lifetime
    // (rust-lang/rust#102211), and the scheduler runs it on a spawned task.
    let owned: Vec<String> = events.iter().map(|e| (*e).to_owned()).collect();
    let mut results = futures_util::stream::iter(owned)
        .map(|event: String| {
            let client = &client;
            async move {
                let Ok(event_id) = OwnedEventId::try_from(event.as_str()) else {
                    warn!("an event id from the server does not parse; not redacted");
                    return Ok(false);
                };
                let txn = OwnedTransactionId::from(redaction_txn_id(&event));
                let mut request = redact_event::v3::Request::new(room_id.to_owned(), event_id, txn);
                request.reason = Some(reason.to_owned());
                gate.run(limit_of, || {
                    client
                        .send(request.clone())
                        .with_request_config(request_config())
                        .into_future()
                })
                .await
                .map(|_| true)
                .map_err(|failed| match failed {
                    Failed::Error(source) => SweepError::Redact {
                        room: room_id.to_string(),
                        event: event.clone(),
                        source,
                    },
                    Failed::RateLimited(why) => SweepError::RateLimited {
                        room: room_id.to_string(),
                        why,
                    },
                })
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut redacted = 0;
    while let Some(result) = results.next().await {
        if result? {
            redacted += 1;
            crate::failpoint::hit("retention.redacted").await;
        }
    }
    Ok(redacted)
}

/// Records the media addresses (see [`crate::domain::attachments`]) of the page's due messages
/// and stickers, decrypted as cordon reads them, in one store transaction, before any of
/// them is redacted. An event that cannot be read is redacted all the same: retention
/// does not wait for a key that may never come (the seal and sync note what they can).
async fn note_media(
    room: &Room,
    store: &Store,
    params: &SweepParams<'_>,
    events: &[Raw<AnyTimelineEvent>],
    heads: &[EventHead],
    due: &[usize],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), SweepError> {
    let mut found = Vec::new();
    for &i in due {
        let head = &heads[i];
        let readable = matches!(
            head.event_type.as_deref(),
            Some("m.room.encrypted") | Some("m.room.message") | Some("m.sticker")
        );
        if !readable {
            continue;
        }
        // Only the addresses are read here, not how the line is marked: whether the
        // room is encrypted does not change them.
        let line = match read_line(room, params.room_key, &events[i], head, true).await {
            Ok(Some(line)) => line,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %e, "an event due for redaction could not be read for its attachments");
                continue;
            }
        };
        let Some(content) = &line.content else {
            continue;
        };
        let sighting = MediaSighting {
            room: line.room_id.clone(),
            event: line.event_id.clone(),
            seen_in: MediaSeenIn::Sweep,
            at: now,
        };
        found.extend(
            media_addresses(&line.event_type, content)
                .into_iter()
                .map(|address| (address, sighting.clone())),
        );
    }
    let new = store.record_media(params.incident, &found)?;
    if new > 0 {
        debug!(new, "attachment addresses noted before redaction");
    }
    Ok(())
}

/// What [`seal_page`] seals from.
struct SealInput<'p> {
    from: &'p Option<String>,
    events: &'p [Raw<AnyTimelineEvent>],
    heads: &'p [EventHead],
    due: &'p [usize],
    now: chrono::DateTime<chrono::Utc>,
}

/// Seals the page's due events not sealed yet into one segment, and records it (with
/// the record's note of what this page has sealed) before returning. Returns what it
/// sealed.
async fn seal_page(
    room: &Room,
    store: &Store,
    params: &SweepParams<'_>,
    target: &SealTarget<'_>,
    record: &mut SweepRecord,
    input: SealInput<'_>,
) -> Result<SweepCounts, SweepError> {
    let SealInput {
        from,
        events,
        heads,
        due,
        now,
    } = input;
    // A resumed sweep re-reading the same page skips what an earlier attempt sealed.
    let sealed_through = record
        .sealed_page
        .as_ref()
        .filter(|p| &p.from == from)
        .map(|p| p.through.as_str());
    let start = sealed_through.map_or(0, |through| {
        due.iter()
            .position(|&i| heads[i].event_id.as_deref() == Some(through))
            .map_or(0, |p| p + 1)
    });
    let to_seal = &due[start..];
    let Some(&last) = to_seal.last() else {
        return Ok(SweepCounts::default());
    };
    let mut lines = Vec::with_capacity(to_seal.len());
    let encrypted = room_is_encrypted(room).await?;
    for &i in to_seal {
        match read_line(room, params.room_key, &events[i], &heads[i], encrypted).await? {
            Some(line) => lines.push(line),
            None => warn!("an event without sender or type cannot be sealed"),
        }
    }
    let (Some(first_line), Some(last_line)) = (lines.first(), lines.last()) else {
        return Ok(SweepCounts::default());
    };
    let seq = record.next_seal_seq;
    let relative = segment::segment_path(params.incident, params.room_key, seq)?;
    let segment = SealSegment {
        seq,
        file: relative.clone(),
        events: lines.len() as u64,
        first_event: first_line.event_id.clone(),
        last_event: last_line.event_id.clone(),
        sha256: String::new(),
        bytes: 0,
        sealed_at: now,
    };
    let dir = target.dir.to_owned();
    let recipients = target.recipients.to_vec();
    let count = lines.len() as u64;
    let written = tokio::task::spawn_blocking(move || {
        segment::write_segment(&dir, &relative, &lines, &recipients)
    })
    .await
    .map_err(|e| SweepError::SealTask(e.to_string()))??;
    crate::failpoint::hit("retention.segment-written").await;
    let segment = SealSegment {
        sha256: written.sha256,
        bytes: written.bytes,
        ..segment
    };
    // Due events are redactable, so they have an id.
    let through = heads[last].event_id.clone().unwrap_or_default();
    let counts = SweepCounts {
        redacted: 0,
        already_redacted: 0,
        sealed: count,
        segments: vec![seq],
    };
    record.next_seal_seq = seq + 1;
    record.sealed_page = Some(SealedPage {
        from: from.clone(),
        through,
    });
    record.totals.add(&counts);
    record.unaudited.add(&counts);
    store.record_seal_segment(params.incident, params.room_key, &segment, record)?;
    info!(seq, events = count, "pre-seal segment written");
    crate::failpoint::hit("retention.sealed").await;
    Ok(counts)
}

/// One event as cordon reads it: decrypted when it can be (the stand-down's export
/// reads with it too).
pub(crate) async fn read_line(
    room: &Room,
    room_key: &str,
    raw: &Raw<AnyTimelineEvent>,
    head: &EventHead,
    room_encrypted: bool,
) -> Result<Option<TranscriptLine>, SweepError> {
    let room_id = room.room_id().as_str();
    let parse = |json: &str| serde_json::from_str::<Value>(json).unwrap_or(Value::Null);
    if head.event_type.as_deref() != Some("m.room.encrypted") {
        return Ok(TranscriptLine::from_event(
            room_id,
            room_key,
            &parse(raw.json().get()),
            Reading::plain(room_encrypted),
        ));
    }
    let decrypted = room
        .decrypt_event(
            raw.cast_ref_unchecked::<OriginalSyncRoomEncryptedEvent>(),
            None,
        )
        .await
        .map_err(|source| SweepError::Decrypt {
            event: head.event_id.clone().unwrap_or_default(),
            source,
        })?;
    let line = match decrypted.kind {
        TimelineEventKind::Decrypted(d) => {
            let info = &d.encryption_info;
            let reading = Reading::Decrypted(Encryption {
                sender_device: info.sender_device.as_ref().map(ToString::to_string),
                verified: matches!(info.verification_state, VerificationState::Verified),
                verification: unverified_because(&info.verification_state).map(str::to_owned),
                session_id: info.session_id().map(str::to_owned),
                failure: None,
            });
            TranscriptLine::from_event(room_id, room_key, &parse(d.event.json().get()), reading)
        }
        TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
            let reading = Reading::Undecryptable(Encryption {
                sender_device: None,
                verified: false,
                verification: None,
                session_id: utd_info.session_id.clone(),
                failure: Some(format!("{:?}", utd_info.reason)),
            });
            TranscriptLine::from_event(room_id, room_key, &parse(raw.json().get()), reading)
        }
        TimelineEventKind::PlainText { event } => TranscriptLine::from_event(
            room_id,
            room_key,
            &parse(event.json().get()),
            Reading::plain(room_encrypted),
        ),
    };
    Ok(line)
}

/// Whether `room` is end-to-end encrypted, asking the homeserver when matrix-sdk does
/// not know yet. Every incident room is created encrypted; a plaintext message in one
/// is marked as such in the transcript.
pub(crate) async fn room_is_encrypted(room: &Room) -> Result<bool, SweepError> {
    let known = room.encryption_state();
    if !matches!(known, EncryptionState::Unknown) {
        return Ok(known.is_encrypted());
    }
    room.latest_encryption_state()
        .await
        .map(|s| s.is_encrypted())
        .map_err(|source| SweepError::EncryptionState {
            room: room.room_id().to_string(),
            source,
        })
}

/// Why a decrypted event is not from a verified device, as written in
/// `encryption.verification`; `None` when it is.
pub(crate) fn unverified_because(state: &VerificationState) -> Option<&'static str> {
    match state {
        VerificationState::Verified => None,
        VerificationState::Unverified(level) => Some(match level {
            VerificationLevel::UnverifiedIdentity => "unverified-identity",
            VerificationLevel::VerificationViolation => "verification-violation",
            VerificationLevel::UnsignedDevice => "unsigned-device",
            VerificationLevel::None(DeviceLinkProblem::MissingDevice) => "unknown-device",
            VerificationLevel::None(DeviceLinkProblem::InsecureSource) => "insecure-source",
            VerificationLevel::MismatchedSender => VERIFICATION_MISMATCHED_SENDER,
        }),
    }
}
