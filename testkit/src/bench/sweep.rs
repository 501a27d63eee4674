//! `cordon-bench sweep`: a retention sweep over a backlog of due events, against a
//! raw-HTTP baseline sending the same redactions in the same run on the same Synapse.
//!
//! Each run seeds two identical rooms with `events` plaintext `m.room.message` events
//! (raw HTTP sends from a third account), takes the cutoff after the last one, then
//! times:
//!
//! - **cordon:** [`cordon::retention::sweep_room_with`] on a matrix-sdk client of
//!   cordon's account and a fresh store: paging the history forward, redacting every
//!   due event with its reason and derived transaction id, storing progress once per
//!   page, auditing at the end;
//! - **baseline:** a plain reqwest client that already knows the event ids and sends
//!   `PUT /rooms/{room}/redact/{event}/{txn}` with the same reason for each, with the
//!   same number of requests in flight.
//!
//! Both speak for cordon's account (two devices of it), a server admin with its rate
//! limits lifted, creator of both rooms. By default the baseline first reads its room's
//! history, untimed, so that neither side meets a colder event cache. The order
//! alternates between runs; medians and their ratio are reported.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use matrix_sdk::Client;
use matrix_sdk::ruma::api::client::room::Visibility;
use matrix_sdk::ruma::api::client::room::create_room::v3::{
    Request as CreateRoomRequest, RoomPreset,
};
use serde_json::{Value, json};

use super::{BenchError, create_room, median, request};
use cordon::dev::{Registration, Synapse};
use cordon::domain::incident::IncidentId;
use cordon::retention::{SealTarget, SweepParams, SweepTuning, reason_for, sweep_room_with};
use cordon::store::Store;

/// The retention window the sweep is told (only its reason and next due time use it).
const WINDOW: Duration = Duration::from_secs(12 * 3600);

/// Options of `cordon-bench sweep`.
#[derive(Debug, Clone)]
pub struct SweepBenchOptions {
    /// Runs of each (cordon and baseline).
    pub runs: usize,
    /// Due events per room.
    pub events: usize,
    /// Redactions in flight, for cordon and the baseline alike.
    pub concurrency: usize,
    /// cordon's `/messages` page size.
    pub page_size: u32,
    /// Seal every page before redacting (`seal_before_redact`).
    pub seal: bool,
    /// Start the baseline's timer without first reading its room's history. By default
    /// the baseline reads it (untimed), so that Synapse's event cache holds the events
    /// it redacts, as cordon's own reading leaves them for its redactions.
    pub cold_baseline: bool,
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct SweepBenchReport {
    /// cordon's times.
    pub cordon: Vec<Duration>,
    /// The baseline's times.
    pub baseline: Vec<Duration>,
    /// The options it ran with.
    pub options: SweepBenchOptions,
}

impl SweepBenchReport {
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

fn baseline_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Baseline(e.to_string())
}

/// Runs the benchmark on a fresh Synapse.
pub async fn sweep(options: SweepBenchOptions) -> Result<SweepBenchReport, BenchError> {
    let hs = Synapse::start().await?;
    let dir = std::env::temp_dir().join(format!("cordon-bench-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(other)?;
    let http = reqwest::Client::new();
    let base = hs.base_url();

    // The baseline speaks for cordon's own account, through the device its
    // registration created (cordon's client logs in as a second device). With an
    // account of its own, the baseline's redactions came out 10 to 20 % slower on the
    // same Synapse, for a server-side reason not pinned down (docs/benchmarks.md).
    let baseline = hs.register_session("cordon", "bench", true).await?;
    let seeder = hs.register_session("seeder", "bench", false).await?;
    for account in [&baseline, &seeder] {
        lift_rate_limits(&http, &base, &baseline, account).await?;
    }
    let client = Client::builder()
        .homeserver_url(base.as_str())
        .sqlite_store(dir.join("sdk"), None)
        .build()
        .await
        .map_err(other)?;
    client
        .matrix_auth()
        .login_username("cordon", "bench")
        .initial_device_display_name("cordon (bench)")
        .await
        .map_err(other)?;

    let archive = dir.join("archive");
    let identity = age::x25519::Identity::generate();
    let recipients = [identity.to_public()];
    let tuning = SweepTuning {
        page_size: options.page_size,
        concurrency: options.concurrency.max(1),
        ..SweepTuning::default()
    };
    let mut report = SweepBenchReport {
        cordon: Vec::new(),
        baseline: Vec::new(),
        options: options.clone(),
    };
    for run in 0..options.runs {
        // Two identical rooms, seeded in alternating order.
        let mut request = CreateRoomRequest::new();
        request.preset = Some(RoomPreset::PrivateChat);
        request.visibility = Visibility::Private;
        request.name = Some(format!("Sweep bench {run} (cordon)"));
        request.invite = vec![seeder.user_id.clone()];
        let room = client.create_room(request).await.map_err(other)?;
        let cordon_room = room.room_id().to_string();
        let baseline_room = create_room(
            &http,
            &base,
            &baseline.access_token,
            &json!({
                "preset": "private_chat",
                "name": format!("Sweep bench {run} (baseline)"),
                "invite": [seeder.user_id],
            }),
        )
        .await?;
        for r in [&cordon_room, &baseline_room] {
            let url = base
                .join(&format!("_matrix/client/v3/join/{r}"))
                .map_err(other)?;
            request_ok(
                http.post(url)
                    .bearer_auth(&seeder.access_token)
                    .json(&json!({})),
            )
            .await?;
        }
        let seeded = Instant::now();
        let (first, second) = if run % 2 == 0 {
            (&cordon_room, &baseline_room)
        } else {
            (&baseline_room, &cordon_room)
        };
        let first_ids = seed(&http, &base, &seeder, first, options.events).await?;
        let second_ids = seed(&http, &base, &seeder, second, options.events).await?;
        let baseline_ids = if first == &baseline_room {
            first_ids
        } else {
            second_ids
        };
        println!(
            "run {run}: seeded 2 x {} events in {:.1} s",
            options.events,
            seeded.elapsed().as_secs_f64()
        );
        let cutoff = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(5)).await;

        let store = Store::open(&dir.join(format!("store-{run}"))).map_err(other)?;
        let incident = IncidentId::parse(&format!("bench-{run}")).map_err(other)?;
        let params = SweepParams {
            incident: &incident,
            room_key: "command",
            cutoff,
            window: WINDOW,
            reason: reason_for(WINDOW),
            seal: options.seal.then_some(SealTarget {
                dir: &archive,
                recipients: &recipients,
            }),
        };
        let run_cordon = async || -> Result<Duration, BenchError> {
            let started = Instant::now();
            let swept = sweep_room_with(&room, &store, &params, &tuning)
                .await
                .map_err(other)?;
            let took = started.elapsed();
            if swept.redacted != options.events as u64 {
                return Err(BenchError::Other(format!(
                    "cordon redacted {} of {} events: {swept:?}",
                    swept.redacted, options.events
                )));
            }
            println!(
                "run {run}: cordon   {:>7.3} s ({} pages, {} rate-limit waits)",
                took.as_secs_f64(),
                swept.pages,
                swept.rate_limited
            );
            Ok(took)
        };
        let run_baseline = async || -> Result<Duration, BenchError> {
            if !options.cold_baseline {
                read_history(&http, &base, &baseline, &baseline_room).await?;
            }
            let started = Instant::now();
            redact_raw(
                &http,
                &base,
                &baseline,
                &baseline_room,
                &baseline_ids,
                options.concurrency.max(1),
            )
            .await?;
            let took = started.elapsed();
            println!("run {run}: baseline {:>7.3} s", took.as_secs_f64());
            Ok(took)
        };
        if run % 2 == 0 {
            report.cordon.push(run_cordon().await?);
            report.baseline.push(run_baseline().await?);
        } else {
            report.baseline.push(run_baseline().await?);
            report.cordon.push(run_cordon().await?);
        }
    }
    super::finish_dir(&dir, None);
    Ok(report)
}

/// Lifts `account`'s rate limits with the baseline's admin token.
async fn lift_rate_limits(
    http: &reqwest::Client,
    base: &url::Url,
    admin: &Registration,
    account: &Registration,
) -> Result<(), BenchError> {
    let url = base
        .join(&format!(
            "_synapse/admin/v1/users/{}/override_ratelimit",
            account.user_id
        ))
        .map_err(other)?;
    request_ok(
        http.post(url)
            .bearer_auth(&admin.access_token)
            .json(&json!({"messages_per_second": 0, "burst_count": 0})),
    )
    .await
}

async fn request_ok(builder: reqwest::RequestBuilder) -> Result<(), BenchError> {
    request(builder).await.map(|_| ())
}

/// Reads the whole history of `room` forward, 1000 events a page (the baseline's
/// untimed warm-up).
async fn read_history(
    http: &reqwest::Client,
    base: &url::Url,
    account: &Registration,
    room: &str,
) -> Result<(), BenchError> {
    let mut from: Option<String> = None;
    loop {
        let mut url = base
            .join(&format!("_matrix/client/v3/rooms/{room}/messages"))
            .map_err(baseline_err)?;
        url.query_pairs_mut()
            .append_pair("dir", "f")
            .append_pair("limit", "1000");
        if let Some(from) = &from {
            url.query_pairs_mut().append_pair("from", from);
        }
        let page = request(http.get(url).bearer_auth(&account.access_token)).await?;
        let empty = page["chunk"].as_array().is_none_or(Vec::is_empty);
        match page["end"].as_str() {
            Some(end) if !(empty && from.as_deref() == Some(end)) => from = Some(end.to_owned()),
            _ => return Ok(()),
        }
    }
}

/// Sends `n` plaintext messages to `room`, 16 at a time; returns their event ids.
async fn seed(
    http: &reqwest::Client,
    base: &url::Url,
    seeder: &Registration,
    room: &str,
    n: usize,
) -> Result<Vec<String>, BenchError> {
    let sends = futures_util::stream::iter(0..n)
        .map(|i| {
            let url = base.join(&format!(
                "_matrix/client/v3/rooms/{room}/send/m.room.message/seed-{i}"
            ));
            let body = json!({"msgtype": "m.text", "body": format!("Seeded message {i}: BP 120/80, bed {i}")});
            async move {
                let url = url.map_err(other)?;
                let v = request(http.put(url).bearer_auth(&seeder.access_token).json(&body)).await?;
                event_id(&v)
            }
        })
        .buffer_unordered(16);
    sends.collect::<Vec<_>>().await.into_iter().collect()
}

fn event_id(v: &Value) -> Result<String, BenchError> {
    v.get("event_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Baseline("no event_id in the answer".into()))
}

/// The baseline: one `PUT /redact` per event, `concurrency` in flight.
async fn redact_raw(
    http: &reqwest::Client,
    base: &url::Url,
    account: &Registration,
    room: &str,
    events: &[String],
    concurrency: usize,
) -> Result<(), BenchError> {
    let reason = reason_for(WINDOW);
    let mut redactions = futures_util::stream::iter(events.iter().enumerate())
        .map(|(i, event)| {
            let url = base.join(&format!(
                "_matrix/client/v3/rooms/{room}/redact/{event}/bl-{i}"
            ));
            let body = json!({ "reason": reason });
            async move {
                let url = url.map_err(baseline_err)?;
                request(http.put(url).bearer_auth(&account.access_token).json(&body)).await
            }
        })
        .buffer_unordered(concurrency);
    while let Some(result) = redactions.next().await {
        result?;
    }
    Ok(())
}
