//! `cordon-bench standdown`: a whole stand-down, from the command to rooms destroyed
//! with a verified archive, against a raw-HTTP baseline that only pages the same amount
//! of history and deletes the rooms, in the same run on the same Synapse.
//!
//! Each run declares an incident of `rooms` rooms (`cordon run` as its own process, as
//! in production), and the commander's matrix-sdk client writes `messages` encrypted
//! messages into each. The baseline account creates as many rooms of its own and fills
//! each with the same number of `m.room.encrypted` events of the same size. Then:
//!
//! - **cordon:** from the `standdown` command to the notice that the rooms are
//!   destroyed (both server timestamps): freeze, export (paging and decrypting every
//!   event), seal with age, re-read and verify, kick the members, delete each room with
//!   `purge` and `block` and poll its deletion, delete the media, notices;
//! - **baseline:** a plain reqwest client pages each room's history forward (pages of
//!   500 events, as cordon's export), deletes the room with `purge` and `block`, and
//!   polls the deletion status every 500 ms (cordon's interval) until it is complete,
//!   one room after the other as cordon does.
//!
//! The one that goes first alternates between runs; medians and their ratio are
//! reported.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use matrix_sdk::ruma::OwnedRoomId;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use serde_json::{Value, json};

use super::{BenchError, create_room, median, request, txn};
use crate::encode;
use cordon::dev::bot::{BotProcess, BotSetup};
use cordon::dev::{Registration, Synapse, TestUser};

const WAIT: Duration = Duration::from_secs(600);

/// The baseline's poll interval for a room's deletion (cordon's own).
const POLL: Duration = Duration::from_millis(500);

/// Raw messages in flight while seeding the baseline's rooms.
const SEED_CONCURRENCY: usize = 16;

/// Options of `cordon-bench standdown`.
#[derive(Debug, Clone)]
pub struct StandDownBenchOptions {
    /// The `cordon` binary.
    pub binary: PathBuf,
    /// Runs of each (cordon and baseline).
    pub runs: usize,
    /// Rooms per incident.
    pub rooms: usize,
    /// Messages per room.
    pub messages: usize,
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct StandDownBenchReport {
    /// cordon's times.
    pub cordon: Vec<Duration>,
    /// The baseline's times.
    pub baseline: Vec<Duration>,
    /// The options it ran with.
    pub options: StandDownBenchOptions,
}

impl StandDownBenchReport {
    /// Median of cordon's times.
    pub fn cordon_median(&self) -> Duration {
        median(&self.cordon)
    }
    /// Median of the baseline's times.
    pub fn baseline_median(&self) -> Duration {
        median(&self.baseline)
    }
    /// cordon / baseline.
    pub fn ratio(&self) -> f64 {
        self.cordon_median().as_secs_f64() / self.baseline_median().as_secs_f64().max(1e-9)
    }
}

fn other(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(e.to_string())
}

/// The benchmark playbook: `rooms` rooms, each with the lead and three crew members
/// (accounts without devices, so `verification: warn`).
fn playbook_text(rooms: usize, server: &str, recipient: &str) -> String {
    let mut list = String::new();
    for r in 0..rooms {
        list.push_str(&format!(
            "  - key: room{r}\n    name: \"{{incident}} - Room {r}\"\n    members: [lead, crew]\n"
        ));
    }
    format!(
        r#"id: bench-standdown
title: "Benchmark: stand-down"
trigger: {{ allowed: [role:lead] }}
verification: warn
duration: {{ max: 24h, warn_before: [2h], extend_max: 24h }}
retention: {{ messages: 12h }}
roles:
  lead:
    title: Lead
    holders: ["@lead:{server}"]
    min: 1
  crew:
    title: Crew
    holders: ["@crew0:{server}", "@crew1:{server}", "@crew2:{server}"]
rooms:
{list}archive:
  recipients: ["{recipient}"]
  keep: 30d
"#
    )
}

/// Runs the benchmark on a fresh Synapse.
pub async fn standdown(options: StandDownBenchOptions) -> Result<StandDownBenchReport, BenchError> {
    let hs = Synapse::start().await?;
    let dir = std::env::temp_dir().join(format!("cordon-bench-standdown-{}", std::process::id()));
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).map_err(other)?;
    let officer = age::x25519::Identity::generate();
    std::fs::write(
        playbooks.join("bench-standdown.yaml"),
        playbook_text(
            options.rooms.max(1),
            hs.server_name(),
            &officer.to_public().to_string(),
        ),
    )
    .map_err(other)?;
    hs.register("lead", "bench", false).await?;
    for crew in ["crew0", "crew1", "crew2"] {
        hs.register(crew, "bench", false).await?;
    }
    let lead_id = hs.user_id("lead")?;
    let setup = BotSetup::create(
        &hs,
        &dir,
        "cordon",
        &playbooks,
        std::slice::from_ref(&lead_id),
        "",
    )
    .await?;
    let mut bot = BotProcess::start(&options.binary, &setup, &[])?;
    bot.wait_for_log("cordon is ready", WAIT).await?;
    let lead = TestUser::login(&hs, "lead", "bench").await?;
    cordon::dev::bot::enrol(&options.binary, &setup, &lead).await?;
    let control = lead
        .create_encrypted_room("Bench control", std::slice::from_ref(&setup.user_id))
        .await?;
    let bot_id = setup.user_id.clone();
    lead.wait_for_message(&control, WAIT, |s, b| {
        s == bot_id && b.contains("control room")
    })
    .await?;

    let http = reqwest::Client::new();
    let base = hs.base_url();
    let baseline = hs.register_session("baseline", "bench", true).await?;
    for user in [&baseline.user_id, &lead_id] {
        let url = base
            .join(&format!(
                "_synapse/admin/v1/users/{}/override_ratelimit",
                encode(user.as_str())
            ))
            .map_err(other)?;
        request(
            http.post(url)
                .bearer_auth(&baseline.access_token)
                .json(&json!({"messages_per_second": 0, "burst_count": 0})),
        )
        .await?;
    }

    let mut report = StandDownBenchReport {
        cordon: Vec::new(),
        baseline: Vec::new(),
        options: options.clone(),
    };
    for run in 0..options.runs {
        let incident = declare(&lead, &control, &bot_id, run, options.rooms).await?;
        let seeded = Instant::now();
        let rooms = incident.rooms.clone();
        seed_encrypted(&lead, &rooms, options.messages, run).await?;
        let sample = sample_ciphertext(&lead, &rooms[0]).await?;
        let mut baseline_rooms = Vec::new();
        for r in 0..rooms.len() {
            let room = create_room(
                &http,
                &base,
                &baseline.access_token,
                &json!({"preset": "private_chat", "name": format!("Baseline {run} room {r}")}),
            )
            .await?;
            seed_raw(&http, &base, &baseline, &room, &sample, options.messages).await?;
            baseline_rooms.push(room);
        }
        println!(
            "run {run}: seeded 2 x {} rooms x {} messages in {:.1} s",
            rooms.len(),
            options.messages,
            seeded.elapsed().as_secs_f64()
        );
        let cordon_first = run % 2 == 0;
        if !cordon_first {
            let took = run_baseline(&http, &base, &baseline, &baseline_rooms).await?;
            println!("run {run}: baseline {:>7.3} s", took.as_secs_f64());
            report.baseline.push(took);
        }
        let took = stand_down(&lead, &control, &bot_id, &incident.id).await?;
        println!("run {run}: cordon   {:>7.3} s", took.as_secs_f64());
        report.cordon.push(took);
        check_archive(
            &setup,
            &officer,
            &incident.id,
            options.rooms * options.messages,
        )?;
        if cordon_first {
            let took = run_baseline(&http, &base, &baseline, &baseline_rooms).await?;
            println!("run {run}: baseline {:>7.3} s", took.as_secs_f64());
            report.baseline.push(took);
        }
    }
    bot.terminate(Duration::from_secs(20));
    lead.stop().await;
    super::finish_dir(&dir, Some(&setup.log));
    Ok(report)
}

/// The run's archive verifies with the officer's key and holds every message, each
/// decrypted: a fast stand-down that dropped history would not count.
fn check_archive(
    setup: &BotSetup,
    officer: &age::x25519::Identity,
    incident: &str,
    messages: usize,
) -> Result<(), BenchError> {
    let path = setup
        .dir
        .join("archives")
        .join(cordon::archive::archive_file_name(incident));
    // Checked against the key of the bot that sealed it, as a records officer would.
    let public = cordon::archive::ArchivePublicKey::of_state_dir(&setup.state_dir)
        .map_err(|e| other(format!("the bot's archive signing key: {e}")))?;
    let trusted = cordon::archive::TrustedSigners::pinned(public);
    let verified =
        cordon::archive::reader::verify_file(&path, std::slice::from_ref(officer), &trusted)
            .map_err(|e| other(format!("{}: {e}", path.display())))?;
    let totals = verified.manifest.totals();
    // The bot's own notices count as messages too.
    if totals.messages < messages as u64 || totals.undecryptable > 0 {
        return Err(other(format!(
            "{}: {} messages ({} undecryptable), expected at least {messages}",
            path.display(),
            totals.messages,
            totals.undecryptable
        )));
    }
    Ok(())
}

struct Declared {
    id: String,
    rooms: Vec<OwnedRoomId>,
}

/// Declares run `run`'s incident and joins the lead to its rooms.
async fn declare(
    lead: &TestUser,
    control: &OwnedRoomId,
    bot: &matrix_sdk::ruma::OwnedUserId,
    run: usize,
    rooms: usize,
) -> Result<Declared, BenchError> {
    let name = format!("Stand-down bench {run}");
    lead.send_text(
        control,
        &format!("!cordon declare bench-standdown \"{name}\""),
    )
    .await?;
    let needle = format!("DECLARED: {name} ");
    let (_, summary) = lead
        .wait_for_message(control, WAIT, |s, b| s == bot && b.starts_with(&needle))
        .await?;
    let id = summary
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| other("no incident id in the summary"))?;
    let mut joined = Vec::new();
    while joined.len() < rooms {
        let room = lead.wait_for_invite(WAIT).await?;
        let tagged = cordon::matrix::rooms::room_tags(&room).await;
        if tagged.as_ref().map(|(i, _)| i.as_str()) != Some(id.as_str()) {
            continue;
        }
        lead.join(room.room_id()).await?;
        joined.push(room.room_id().to_owned());
    }
    Ok(Declared { id, rooms: joined })
}

/// `messages` encrypted messages into each room, from the lead's client.
async fn seed_encrypted(
    lead: &TestUser,
    rooms: &[OwnedRoomId],
    messages: usize,
    run: usize,
) -> Result<(), BenchError> {
    // The rooms in parallel, each room's messages one after the other: matrix-sdk 0.18
    // panics ("Session expired") when concurrent sends in one room cross the megolm
    // session's rotation.
    let mut seeds = Vec::new();
    for (r, room_id) in rooms.iter().enumerate() {
        let room = lead
            .client()
            .get_room(room_id)
            .ok_or_else(|| other("an incident room is unknown to the lead"))?;
        seeds.push(async move {
            for i in 0..messages {
                let body = format!(
                    "run {run} room {r} message {i}: bay {} triaged P{} - obs stable, \
                     to CT when free",
                    i % 40,
                    i % 3 + 1
                );
                room.send(RoomMessageEventContent::text_plain(body))
                    .await
                    .map_err(other)?;
            }
            Ok::<(), BenchError>(())
        });
    }
    for seeded in futures_util::future::join_all(seeds).await {
        seeded?;
    }
    Ok(())
}

/// The content of one of the room's encrypted events, as the server holds it: the
/// baseline's rooms are filled with copies, so their events are the same size.
async fn sample_ciphertext(lead: &TestUser, room_id: &OwnedRoomId) -> Result<Value, BenchError> {
    use matrix_sdk::ruma::api::client::message::get_message_events;
    let mut request = get_message_events::v3::Request::backward(room_id.clone());
    request.limit = 20u32.into();
    let page = lead.client().send(request).await.map_err(other)?;
    page.chunk
        .iter()
        .filter_map(|raw| serde_json::from_str::<Value>(raw.json().get()).ok())
        .find(|e| e["type"] == "m.room.encrypted")
        .and_then(|e| e.get("content").cloned())
        .ok_or_else(|| other("no encrypted message to copy"))
}

/// `messages` copies of `content` as `m.room.encrypted` events, by raw HTTP.
async fn seed_raw(
    http: &reqwest::Client,
    base: &url::Url,
    account: &Registration,
    room: &str,
    content: &Value,
    messages: usize,
) -> Result<(), BenchError> {
    let mut sends = futures_util::stream::iter(0..messages)
        .map(|_| async move {
            let url = base
                .join(&format!(
                    "_matrix/client/v3/rooms/{}/send/m.room.encrypted/{}",
                    encode(room),
                    txn()
                ))
                .map_err(other)?;
            request(
                http.put(url)
                    .bearer_auth(&account.access_token)
                    .json(content),
            )
            .await
            .map(|_| ())
        })
        .buffer_unordered(SEED_CONCURRENCY);
    while let Some(sent) = sends.next().await {
        sent?;
    }
    Ok(())
}

/// cordon's stand-down: command event to the "destroyed" notice, server timestamps.
async fn stand_down(
    lead: &TestUser,
    control: &OwnedRoomId,
    bot: &matrix_sdk::ruma::OwnedUserId,
    incident: &str,
) -> Result<Duration, BenchError> {
    let command = lead
        .send_text(control, &format!("!cordon standdown {incident}"))
        .await?;
    let needle = format!("{incident}'s ");
    lead.wait_for_message(control, WAIT, |s, b| {
        s == bot && b.starts_with(&needle) && b.contains("room(s) are destroyed")
    })
    .await?;
    let done = lead
        .messages(control)
        .into_iter()
        .find(|m| {
            m.sender == *bot
                && m.body.starts_with(&needle)
                && m.body.contains("room(s) are destroyed")
        })
        .map(|m| m.event_id)
        .ok_or_else(|| other("the destroyed notice vanished"))?;
    let room = lead
        .client()
        .get_room(control)
        .ok_or_else(|| other("control room unknown"))?;
    let ts = |ev: matrix_sdk::deserialized_responses::TimelineEvent| -> Option<u64> {
        let v: Value = ev.raw().deserialize_as_unchecked().ok()?;
        v.get("origin_server_ts")?.as_u64()
    };
    let t0 = room
        .event(&command, None)
        .await
        .ok()
        .and_then(ts)
        .ok_or_else(|| other("no command timestamp"))?;
    let t1 = room
        .event(&done, None)
        .await
        .ok()
        .and_then(ts)
        .ok_or_else(|| other("no notice timestamp"))?;
    Ok(Duration::from_millis(t1.saturating_sub(t0)))
}

/// The baseline: page every room's history, then delete it and wait for the deletion.
pub(super) async fn run_baseline(
    http: &reqwest::Client,
    base: &url::Url,
    account: &Registration,
    rooms: &[String],
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    for room in rooms {
        let mut from: Option<String> = None;
        loop {
            let mut url = base
                .join(&format!(
                    "_matrix/client/v3/rooms/{}/messages",
                    encode(room)
                ))
                .map_err(other)?;
            url.query_pairs_mut()
                .append_pair("dir", "f")
                .append_pair("limit", "500");
            if let Some(from) = &from {
                url.query_pairs_mut().append_pair("from", from);
            }
            let page = request(http.get(url).bearer_auth(&account.access_token)).await?;
            let empty = page
                .get("chunk")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            match page.get("end").and_then(Value::as_str) {
                Some(end) if !empty => from = Some(end.to_owned()),
                _ => break,
            }
        }
        let url = base
            .join(&format!("_synapse/admin/v2/rooms/{}", encode(room)))
            .map_err(other)?;
        let deletion = request(
            http.delete(url)
                .bearer_auth(&account.access_token)
                .json(&json!({"purge": true, "block": true})),
        )
        .await?;
        let delete_id = deletion
            .get("delete_id")
            .and_then(Value::as_str)
            .ok_or_else(|| other(format!("no delete_id in {deletion}")))?;
        let status_url = base
            .join(&format!(
                "_synapse/admin/v2/rooms/delete_status/{}",
                encode(delete_id)
            ))
            .map_err(other)?;
        loop {
            let status = request(
                http.get(status_url.clone())
                    .bearer_auth(&account.access_token),
            )
            .await?;
            if status["status"] == "failed" {
                return Err(other(format!("the baseline's deletion failed: {status}")));
            }
            if status["status"] == "complete" {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(started.elapsed())
}
