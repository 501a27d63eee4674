//! `cordon-bench declare`: how long a declare takes, against a raw-HTTP baseline
//! measured in the same run on the same Synapse. `cordon-bench sweep` is in [`sweep`],
//! `cordon-bench standdown` in [`standdown`], `cordon-bench load` in [`load`],
//! `cordon-bench cost` in [`cost`].
//!
//! cordon's time runs from the command event to the summary cordon posts once the last
//! invite and every briefing are confirmed (both server timestamps, so client sync
//! latency is not counted). The baseline sends the same requests, built from the same
//! room plans (each `createRoom` with its initial state, every invite with its reason,
//! each briefing, pin and role message, the progress message, its edits and the
//! summary) straight to Synapse with a plain HTTP client: rooms all at once, each room's
//! invites all at once, messages in their order. Its time runs from its first request
//! to its last response. Runs alternate between the two; medians are reported with
//! their ratio.

pub mod cost;
pub mod load;
pub mod standdown;
pub mod sweep;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::future::join_all;
use serde_json::{Value, json};

use cordon::dev::bot::{BotProcess, BotSetup};
use cordon::dev::{HarnessError, Synapse, TestUser};
use cordon::domain::incident::IncidentId;
use cordon::domain::incident::plan::{self, IncidentFacts, RoomPlan};

const WAIT: Duration = Duration::from_secs(180);

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The harness failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// A baseline request failed.
    #[error("baseline: {0}")]
    Baseline(String),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// Options of `cordon-bench declare`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `cordon` binary.
    pub binary: PathBuf,
    /// Runs of each (cordon and baseline).
    pub runs: usize,
    /// Role holders in the playbook.
    pub holders: usize,
    /// Run Synapse with the prevention module (which asks cordon about every
    /// membership and state event of the declare), and cordon answering it.
    pub prevention: bool,
}

/// The benchmark's result.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// cordon's times.
    pub cordon: Vec<Duration>,
    /// The baseline's times.
    pub baseline: Vec<Duration>,
    /// Invites per declare.
    pub invites: usize,
    /// Rooms per declare.
    pub rooms: usize,
}

impl BenchReport {
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

/// Removes a benchmark's working directory, or keeps it (saying where, with the bot's
/// log) when `CORDON_KEEP_BENCH` is set.
pub(crate) fn finish_dir(dir: &std::path::Path, bot_log: Option<&std::path::Path>) {
    if std::env::var_os("CORDON_KEEP_BENCH").is_some() {
        match bot_log {
            Some(log) => println!("kept {} (bot log: {})", dir.display(), log.display()),
            None => println!("kept {}", dir.display()),
        }
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The server's timestamp (`origin_server_ts`, ms) of `event` in `room`, as `user`
/// fetches it.
pub(crate) async fn server_ts(
    user: &TestUser,
    room: &matrix_sdk::ruma::RoomId,
    event: &matrix_sdk::ruma::EventId,
) -> Result<u64, BenchError> {
    let joined = user
        .client()
        .get_room(room)
        .ok_or_else(|| BenchError::Other(format!("{room} unknown to {}", user.user_id())))?;
    let ev = joined
        .event(event, None)
        .await
        .map_err(|e| BenchError::Other(format!("fetching {event}: {e}")))?;
    let v: Value = ev
        .raw()
        .deserialize_as_unchecked()
        .map_err(|e| BenchError::Other(format!("{event}: {e}")))?;
    v.get("origin_server_ts")
        .and_then(Value::as_u64)
        .ok_or_else(|| BenchError::Other(format!("{event} has no origin_server_ts")))
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The bench playbook: the mass-casualty structure (9 roles, 4 rooms) with `holders`
/// holders spread over the roles, on `server`. `verification: warn`, because the
/// holders are accounts without devices: every one is invited, after its identity
/// check.
pub fn playbook_text(server: &str, holders: usize) -> (String, Vec<String>) {
    const ROLES: [&str; 9] = [
        "site-commander",
        "loggist",
        "ed-lead",
        "trauma-team-leader",
        "ed-nurse-in-charge",
        "theatre-coordinator",
        "critical-care-lead",
        "site-manager",
        "communications",
    ];
    let mut by_role: Vec<Vec<String>> = vec![Vec::new(); ROLES.len()];
    let mut names = Vec::new();
    for i in 0..holders.max(ROLES.len()) {
        let name = format!("holder{i:03}");
        by_role[i % ROLES.len()].push(format!("\"@{name}:{server}\""));
        names.push(name);
    }
    let mut roles = String::new();
    for (role, list) in ROLES.iter().zip(&by_role) {
        roles.push_str(&format!(
            "  {role}:\n    title: \"{role} (bench)\"\n    holders: [{}]\n    min: 1\n    instructions: \"Instructions for {{incident}}: do the {role} job.\"\n",
            list.join(", ")
        ));
    }
    let text = format!(
        r#"id: bench
title: "Benchmark: mass casualty"
trigger: {{ allowed: [role:site-commander] }}
verification: warn
duration: {{ max: 24h, warn_before: [2h], extend_max: 24h }}
retention: {{ messages: 12h }}
roles:
{roles}rooms:
  - key: command
    name: "{{incident}} - Command"
    members: [site-commander, loggist, ed-lead, theatre-coordinator, critical-care-lead, site-manager, communications]
    moderators: [site-commander]
  - key: ed-resus
    name: "{{incident}} - ED and resus"
    members: [ed-lead, trauma-team-leader, ed-nurse-in-charge, site-commander]
    moderators: [ed-lead]
  - key: theatres
    name: "{{incident}} - Theatres and critical care"
    members: [theatre-coordinator, critical-care-lead, trauma-team-leader, ed-lead]
  - key: site-comms
    name: "{{incident}} - Site and communications"
    members: [site-manager, communications, site-commander]
briefing: "BRIEFING for {{incident}} ({{incident_id}}): not the medical record."
archive:
  recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
  keep: 30d
"#
    );
    (text, names)
}

/// Runs the benchmark.
pub async fn declare(options: BenchOptions) -> Result<BenchReport, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "cordon-bench-{}-{}",
        std::process::id(),
        if options.prevention {
            "prevention"
        } else {
            "plain"
        }
    ));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Other(e.to_string()))?;
    let prevention = match options.prevention {
        true => Some(cordon::dev::Prevention::create(&dir)?),
        false => None,
    };
    let hs = Synapse::start_with(prevention).await?;
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).map_err(|e| BenchError::Other(e.to_string()))?;
    let (text, names) = playbook_text(hs.server_name(), options.holders);
    let file = playbooks.join("bench.yaml");
    std::fs::write(&file, &text).map_err(|e| BenchError::Other(e.to_string()))?;
    let playbook = cordon::input::playbook::load_file(&file)
        .map_err(|d| BenchError::Other(format!("bench playbook: {:?}", d.first())))?;
    for name in &names {
        hs.register(name, "bench", false).await?;
    }
    let commander_name = names.first().cloned().unwrap_or_default();
    let commander_id = hs.user_id(&commander_name)?;
    let setup = BotSetup::create(
        &hs,
        &dir,
        "cordon",
        &playbooks,
        std::slice::from_ref(&commander_id),
        &hs.prevention()
            .map(cordon::dev::Prevention::cordon_config)
            .unwrap_or_default(),
    )
    .await?;
    let mut bot = BotProcess::start(&options.binary, &setup, &[])?;
    bot.wait_for_log("cordon is ready", WAIT).await?;
    let commander = TestUser::login(&hs, &commander_name, "bench").await?;
    // Enrolled, so that cordon takes its commands and its messages reach it. The other
    // holders have no device (so no identity): under `verification: warn` they are all
    // invited, after the same identity check a real declare makes for each of them.
    cordon::dev::bot::enrol(&options.binary, &setup, &commander).await?;
    let control = commander
        .create_encrypted_room("Bench control", std::slice::from_ref(&setup.user_id))
        .await?;
    let bot_id = setup.user_id.clone();
    commander
        .wait_for_message(&control, WAIT, |s, b| {
            s == bot_id && b.contains("control room")
        })
        .await?;

    // The baseline's own account, a server admin with its rate limits lifted like cordon.
    let baseline = hs.register_session("baseline", "bench", true).await?;
    let http = reqwest::Client::new();
    let base = hs.base_url();
    let admin_url = base
        .join(&format!(
            "_synapse/admin/v1/users/{}/override_ratelimit",
            baseline.user_id
        ))
        .map_err(|e| BenchError::Other(e.to_string()))?;
    http.post(admin_url)
        .bearer_auth(&baseline.access_token)
        .json(&json!({"messages_per_second": 0, "burst_count": 0}))
        .send()
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let baseline_control = create_room(
        &http,
        &base,
        &baseline.access_token,
        &json!({"preset": "private_chat", "name": "Baseline control"}),
    )
    .await?;

    let mut report = BenchReport {
        cordon: Vec::new(),
        baseline: Vec::new(),
        invites: 0,
        rooms: playbook.rooms.len(),
    };
    for run in 0..options.runs {
        // cordon
        let name = format!("Bench run {run}");
        let command_event = commander
            .send_text(&control, &format!("!cordon declare bench \"{name}\""))
            .await?;
        let needle = format!("DECLARED: {name} ");
        commander
            .wait_for_message(&control, WAIT, |s, b| s == bot_id && b.starts_with(&needle))
            .await?;
        let summary_event = commander
            .messages(&control)
            .into_iter()
            .find(|m| m.sender == bot_id && m.body.starts_with(&needle))
            .map(|m| m.event_id)
            .ok_or_else(|| BenchError::Other("summary vanished".into()))?;
        let t0 = server_ts(&commander, &control, &command_event).await?;
        let t1 = server_ts(&commander, &control, &summary_event).await?;
        let took = Duration::from_millis(t1.saturating_sub(t0));
        println!("run {run}: cordon   {:>7.3} s", took.as_secs_f64());
        report.cordon.push(took);

        // baseline: the same requests, from the same plans.
        let id = IncidentId::parse(&format!("bl-{run}"))
            .map_err(|e| BenchError::Other(e.to_string()))?;
        let facts = IncidentFacts {
            id: &id,
            display_name: &name,
            playbook: &playbook,
            commander: &commander_id,
            expires_at: Utc::now() + chrono::TimeDelta::hours(24),
            time_zone: chrono_tz::Europe::London,
            exercise: false,
        };
        let mut plans = plan::plan_rooms(&facts, Utc::now());
        if options.prevention {
            // The baseline's rooms are not cordon's: untagged, the module lets them be
            // (cordon would refuse an incident it never declared).
            for p in &mut plans {
                if let Some(content) = p.creation_content.as_object_mut() {
                    content.remove(plan::TAG_INCIDENT);
                    content.remove(plan::TAG_ROOM_KEY);
                }
            }
        }
        report.invites = plans.iter().map(|p| p.invites.len()).sum();
        let started = Instant::now();
        baseline_declare(
            &http,
            &base,
            &baseline.access_token,
            &baseline_control,
            &facts,
            &plans,
        )
        .await?;
        let took = started.elapsed();
        println!("run {run}: baseline {:>7.3} s", took.as_secs_f64());
        report.baseline.push(took);
    }
    bot.terminate(Duration::from_secs(20));
    commander.stop().await;
    finish_dir(&dir, Some(&setup.log));
    Ok(report)
}

/// A declare's requests, sent straight to Synapse: the progress message, the rooms at
/// once, each room's invites at once, the briefings, pins and role messages, the edits
/// and the summary. Returns the rooms.
async fn baseline_declare(
    http: &reqwest::Client,
    base: &url::Url,
    token: &str,
    control: &str,
    facts: &IncidentFacts<'_>,
    plans: &[RoomPlan],
) -> Result<Vec<String>, BenchError> {
    let progress = send_message(http, base, token, control, "Declaring (baseline)").await?;
    let rooms: Vec<String> = join_all(plans.iter().map(|p| {
        let body = json!({
            "preset": "private_chat",
            "visibility": "private",
            "name": p.name,
            "topic": p.topic,
            "creation_content": p.creation_content,
            "power_level_content_override": p.power_levels,
            "initial_state": p.initial_state.iter().map(|e| json!({
                "type": e.event_type, "state_key": e.state_key, "content": e.content,
            })).collect::<Vec<_>>(),
        });
        async move { create_room(http, base, token, &body).await }
    }))
    .await
    .into_iter()
    .collect::<Result<_, _>>()?;
    edit(http, base, token, control, &progress, "rooms created").await?;
    let invites = plans.iter().zip(&rooms).flat_map(|(p, room)| {
        p.invites.iter().map(move |inv| {
            let url = base.join(&format!("_matrix/client/v3/rooms/{room}/invite"));
            let body = json!({ "user_id": inv.user, "reason": inv.reason });
            async move {
                let url = url.map_err(|e| BenchError::Baseline(e.to_string()))?;
                request(http.post(url).bearer_auth(token).json(&body)).await
            }
        })
    });
    for r in join_all(invites).await {
        r?;
    }
    edit(http, base, token, control, &progress, "invites sent").await?;
    let posts = plans.iter().zip(&rooms).map(|(p, room)| async move {
        let briefing = plan::briefing(facts, p, Utc::now());
        let event = send_message(http, base, token, room, &briefing).await?;
        let url = base
            .join(&format!(
                "_matrix/client/v3/rooms/{room}/state/m.room.pinned_events/"
            ))
            .map_err(|e| BenchError::Baseline(e.to_string()))?;
        request(
            http.put(url)
                .bearer_auth(token)
                .json(&json!({ "pinned": [event] })),
        )
        .await?;
        for msg in plan::role_messages(facts, &p.key, Utc::now()) {
            send_message(http, base, token, room, &msg.body).await?;
        }
        Ok::<_, BenchError>(())
    });
    for r in join_all(posts).await {
        r?;
    }
    edit(http, base, token, control, &progress, "done").await?;
    send_message(http, base, token, control, "DECLARED (baseline)").await?;
    Ok(rooms)
}

async fn request(builder: reqwest::RequestBuilder) -> Result<Value, BenchError> {
    let response = builder
        .send()
        .await
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(BenchError::Baseline(format!("HTTP {status}: {body}")));
    }
    Ok(body)
}

async fn create_room(
    http: &reqwest::Client,
    base: &url::Url,
    token: &str,
    body: &Value,
) -> Result<String, BenchError> {
    let url = base
        .join("_matrix/client/v3/createRoom")
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let v = request(http.post(url).bearer_auth(token).json(body)).await?;
    v.get("room_id")
        .and_then(|r| r.as_str())
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Baseline("createRoom returned no room_id".into()))
}

fn txn() -> String {
    use rand::Rng;
    format!("bl{:016x}", rand::rng().random::<u64>())
}

async fn send_message(
    http: &reqwest::Client,
    base: &url::Url,
    token: &str,
    room: &str,
    body: &str,
) -> Result<String, BenchError> {
    put_message(
        http,
        base,
        token,
        room,
        &json!({"msgtype": "m.notice", "body": body}),
    )
    .await
}

async fn edit(
    http: &reqwest::Client,
    base: &url::Url,
    token: &str,
    room: &str,
    original: &str,
    body: &str,
) -> Result<String, BenchError> {
    put_message(
        http,
        base,
        token,
        room,
        &json!({
            "msgtype": "m.notice",
            "body": format!("* {body}"),
            "m.new_content": {"msgtype": "m.notice", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }),
    )
    .await
}

async fn put_message(
    http: &reqwest::Client,
    base: &url::Url,
    token: &str,
    room: &str,
    content: &Value,
) -> Result<String, BenchError> {
    let url = base
        .join(&format!(
            "_matrix/client/v3/rooms/{room}/send/m.room.message/{}",
            txn()
        ))
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let v = request(http.put(url).bearer_auth(token).json(content)).await?;
    v.get("event_id")
        .and_then(|e| e.as_str())
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Baseline("send returned no event_id".into()))
}
