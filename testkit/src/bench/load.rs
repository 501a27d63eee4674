//! `cordon-bench load`: many incidents at once, from several commanders, on a real
//! Synapse, with traffic, sweeps and reminders running, then all stood down.
//!
//! 1. **Baselines**, in the same run on the same homeserver: one incident declared on
//!    its own, then stood down, a few times (cordon alone); and a raw-HTTP client
//!    replaying the same declares at the same concurrency (every `createRoom` with its
//!    initial state, invite, pin and message, built from the same room plans, as
//!    `cordon-bench declare`'s baseline), which says what the homeserver itself takes.
//! 2. **Declare**: every incident declared at once, spread over the commanders, each
//!    from its own control room. Confirmation is cordon's `DECLARED:` summary.
//! 3. **Traffic**: the commanders join their incidents' rooms and post messages at the
//!    given rate, spread over every room, while each room's retention sweep (a short
//!    window) and the command room's reminder (every minute) run.
//! 4. **Stand-down**: every incident stood down at once. Confirmation is the control
//!    room's "has stood down"; completion is "room(s) are destroyed". The raw-HTTP
//!    baseline then does the same to its own incidents' rooms, all at once: pages each
//!    room's history and deletes it (`purge`, `block`), polling until it is done, one
//!    room after the other in each incident, as cordon does.
//!
//! Ratios cordon/baseline are reported for the declare's p50 and p95 and for the whole
//! stand-down of all incidents (first command to last room deleted); the targets are
//! [`RATIO_TARGET`] and [`RSS_TARGET_MIB`], and every reminder due in the traffic within
//! [`REMINDER_BOUND`]. `CORDON_SYNAPSE` picks the homeserver's form.
//!
//! Times run between server timestamps (command event to confirmation event), so
//! client sync latency is not counted. The bot's peak RSS (`VmHWM`) and CPU seconds
//! are read from `/proc`; the requests it sent while the incidents were declared, by
//! endpoint, and its guard's reads of whole rooms, from its `/metrics`. At the end the
//! store is opened and checked: every incident destroyed with all its rooms created
//! once and destroyed, one sealed archive each, the audit chain intact. The benchmark
//! fails when a target is missed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use matrix_sdk::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId};

use super::{BenchError, server_ts};
use cordon::dev::bot::{BotProcess, BotSetup, enrol};
use cordon::dev::{Synapse, TestUser};
use cordon::domain::incident::{IncidentId, State};
use cordon::input::playbook::Playbook;

/// Longest wait for any one confirmation.
const WAIT: Duration = Duration::from_secs(900);
/// The peak RSS target.
pub const RSS_TARGET_MIB: f64 = 150.0;
/// The target for cordon/baseline at the same concurrency.
pub const RATIO_TARGET: f64 = 1.5;
/// The retention window of the load playbook: short, so sweeps run during the traffic.
const RETENTION: &str = "1m";
/// How many of the first declared the report follows (as many as are provisioned at
/// once, a turn).
pub const FIRST_FEW: usize = 8;
/// How late a reminder may be posted after its minute; later, or never, fails the run.
pub const REMINDER_BOUND: Duration = Duration::from_secs(30);

/// Options of `cordon-bench load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The `cordon` binary.
    pub binary: PathBuf,
    /// Incidents declared at once.
    pub incidents: usize,
    /// Commanders they are spread over, each with a control room.
    pub commanders: usize,
    /// Messages a minute across all rooms during the traffic phase.
    pub messages_per_minute: u32,
    /// How long the traffic runs.
    pub traffic: Duration,
    /// Role holders in the playbook (each with a device, not enrolled: invited with a
    /// warning).
    pub holders: usize,
    /// Lone declare and stand-down runs for the baseline.
    pub baseline_runs: usize,
}

/// What the run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Lone declares: command to summary.
    pub baseline_declare: Vec<Duration>,
    /// Lone stand-downs: command to "has stood down".
    pub baseline_standdown: Vec<Duration>,
    /// Each concurrent declare: command to summary, in the order sent.
    pub declare: Vec<Duration>,
    /// Each concurrent declare's time, by incident.
    pub declare_by_id: BTreeMap<IncidentId, Duration>,
    /// The first incident declared: its time. The commands go out at once, so "first"
    /// is cordon's order, the one it serves them in (each incident's `declared_at`).
    pub first_declare: Option<Duration>,
    /// The slowest of the first [`FIRST_FEW`] declared.
    pub first_few_declare: Option<Duration>,
    /// The raw-HTTP baseline's declares at the same concurrency: first request to last
    /// response, each.
    pub raw_declare: Vec<Duration>,
    /// The whole concurrent stand-down: first command to the last "destroyed".
    pub standdown_whole: Duration,
    /// The raw-HTTP baseline's whole stand-down of as many incidents at once.
    pub raw_standdown_whole: Duration,
    /// The homeserver's form.
    pub form: &'static str,
    /// Each concurrent stand-down: command to "has stood down".
    pub standdown: Vec<Duration>,
    /// Each concurrent stand-down: command to "room(s) are destroyed".
    pub destroyed: Vec<Duration>,
    /// Messages posted in the traffic phase, and how many failed to send.
    pub messages_sent: usize,
    /// Messages that could not be sent.
    pub messages_failed: usize,
    /// Reminders cordon posted during the traffic, as the commanders saw them.
    pub reminders_seen: usize,
    /// The server time of each reminder seen, by room (ms since the epoch).
    pub reminder_times: BTreeMap<OwnedRoomId, Vec<u64>>,
    /// The traffic's start and end, by this machine's clock (ms since the epoch; the
    /// homeserver's clock is the same).
    pub traffic_window: (u64, u64),
    /// Reminders due in the traffic (each command room's minutes, but for the last
    /// [`REMINDER_BOUND`]), and each one's delay after its minute; `None` when none
    /// came within the bound.
    pub reminder_delays: Vec<Option<Duration>>,
    /// Redactions cordon made during the traffic (from the audit log).
    pub redactions: usize,
    /// The requests cordon sent the homeserver while the incidents were declared at
    /// once (from the first command to the last confirmation), by endpoint, and the
    /// guard's reads of whole rooms in that time (`guard looks`): what cordon asks of
    /// the homeserver beyond what the raw-HTTP baseline does.
    pub declare_requests: BTreeMap<String, u64>,
    /// The bot's peak resident set, MiB.
    pub peak_rss_mib: f64,
    /// The bot's resident set at the end, MiB: anonymous (its heap) and file-backed
    /// (mostly its own code, which a debug build has several times more of).
    pub end_rss_mib: (f64, f64),
    /// The bot's CPU time, user + system, seconds.
    pub cpu_seconds: f64,
    /// Wall time of the whole run after set-up.
    pub wall: Duration,
    /// Problems found by the final checks (empty when everything held).
    pub problems: Vec<String>,
}

/// `a` / `b`, cordon's time over its baseline's (a zero baseline counts as 1 ms).
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-3)
}

/// The `p`-th percentile (nearest rank) of `v`.
pub fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

impl LoadReport {
    /// The report as lines of text, with each ratio against its baseline.
    pub fn render(&self, options: &LoadOptions) -> String {
        let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        let bd = percentile(&self.baseline_declare, 50.0);
        let bs = percentile(&self.baseline_standdown, 50.0);
        let mut out = String::new();
        out.push_str(&format!(
            "load: {} incidents from {} commanders, {} messages/min for {:.0} s\n",
            options.incidents,
            options.commanders,
            options.messages_per_minute,
            options.traffic.as_secs_f64()
        ));
        out.push_str(&format!(
            "homeserver: {}\nbaseline (one incident alone, {} runs): declare p50 {}, stand-down p50 {}\n",
            self.form,
            self.baseline_declare.len(),
            s(bd),
            s(bs)
        ));
        let (rd50, rd95) = (
            percentile(&self.raw_declare, 50.0),
            percentile(&self.raw_declare, 95.0),
        );
        let (d50, d95) = (
            percentile(&self.declare, 50.0),
            percentile(&self.declare, 95.0),
        );
        out.push_str(&format!(
            "raw-HTTP baseline, {} declares at once: p50 {}, p95 {}; cordon/baseline p50 {:.2}, p95 {:.2} (target at most {RATIO_TARGET})\n",
            self.raw_declare.len(),
            s(rd50),
            s(rd95),
            ratio(d50, rd50),
            ratio(d95, rd95),
        ));
        if let (Some(first), Some(few)) = (self.first_declare, self.first_few_declare) {
            out.push_str(&format!(
                "first incident declared: confirmed in {} (alone: {}); the first {FIRST_FEW} all within {}\n",
                s(first),
                s(bd),
                s(few)
            ));
        }
        out.push_str(&format!(
            "whole stand-down of every incident: cordon {}, raw-HTTP baseline {}; cordon/baseline {:.2} (target at most {RATIO_TARGET})\n",
            s(self.standdown_whole),
            s(self.raw_standdown_whole),
            ratio(self.standdown_whole, self.raw_standdown_whole),
        ));
        for (what, v, base) in [
            ("declare", &self.declare, Some(bd)),
            ("stand-down (frozen)", &self.standdown, Some(bs)),
            ("stand-down (destroyed)", &self.destroyed, None),
        ] {
            let p50 = percentile(v, 50.0);
            let p95 = percentile(v, 95.0);
            out.push_str(&format!(
                "{what}: {} confirmed, p50 {}, p95 {}, max {}{}\n",
                v.len(),
                s(p50),
                s(p95),
                s(percentile(v, 100.0)),
                base.map(|b| format!(", p50 ratio to baseline {:.2}", ratio(p50, b)))
                    .unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "traffic: {} messages sent ({} failed), {} reminders seen, {} redactions by retention\n",
            self.messages_sent, self.messages_failed, self.reminders_seen, self.redactions
        ));
        let on_time: Vec<Duration> = self.reminder_delays.iter().flatten().copied().collect();
        out.push_str(&format!(
            "reminders: {} due in the traffic, {} posted within {} s of their minute (delay p50 {}, max {})\n",
            self.reminder_delays.len(),
            on_time.len(),
            REMINDER_BOUND.as_secs(),
            s(percentile(&on_time, 50.0)),
            s(percentile(&on_time, 100.0)),
        ));
        if !self.declare_requests.is_empty() {
            let mut by_count: Vec<(&String, &u64)> = self.declare_requests.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let total: u64 = self
                .declare_requests
                .iter()
                .filter(|(k, _)| !k.starts_with("guard ") && *k != KEY_QUERY_TIMEOUTS)
                .map(|(_, n)| n)
                .sum();
            let per = self.declare.len().max(1) as u64;
            out.push_str(&format!(
                "cordon's requests while declaring: {total} ({} an incident):",
                total / per
            ));
            for (endpoint, n) in by_count {
                out.push_str(&format!(" {endpoint} {n},"));
            }
            out.pop();
            out.push('\n');
        }
        out.push_str(&format!(
            "bot: peak RSS {:.1} MiB (target < {RSS_TARGET_MIB} MiB; at the end {:.1} MiB \
             anonymous, {:.1} MiB file-backed), CPU {:.1} s over {:.0} s\n",
            self.peak_rss_mib,
            self.end_rss_mib.0,
            self.end_rss_mib.1,
            self.cpu_seconds,
            self.wall.as_secs_f64()
        ));
        if self.problems.is_empty() {
            out.push_str("checks: every incident declared, answered, sealed and destroyed once; audit chain intact\n");
        } else {
            for p in &self.problems {
                out.push_str(&format!("PROBLEM: {p}\n"));
            }
        }
        out
    }

    /// The ratios cordon/baseline that have a target: declare p50, declare p95, whole
    /// stand-down.
    pub fn ratios(&self) -> [f64; 3] {
        [
            ratio(
                percentile(&self.declare, 50.0),
                percentile(&self.raw_declare, 50.0),
            ),
            ratio(
                percentile(&self.declare, 95.0),
                percentile(&self.raw_declare, 95.0),
            ),
            ratio(self.standdown_whole, self.raw_standdown_whole),
        ]
    }

    /// Whether every target held.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && self.peak_rss_mib < RSS_TARGET_MIB
            && self.ratios().iter().all(|r| *r <= RATIO_TARGET)
    }
}

pub(super) fn other(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(e.to_string())
}

/// The load playbook: the bench playbook (the mass-casualty structure) with a short
/// retention window and a reminder every minute in the command room.
fn playbook_text(server: &str, holders: usize) -> Result<String, BenchError> {
    let (text, _) = super::playbook_text(server, holders);
    let retention = "retention: { messages: 12h }";
    let command_room = "    moderators: [site-commander]\n  - key: ed-resus";
    if !text.contains(retention) || !text.contains(command_room) {
        return Err(other("the bench playbook changed shape"));
    }
    Ok(text
        .replace("id: bench", "id: load")
        .replace(retention, &format!("retention: {{ messages: {RETENTION} }}"))
        .replace(
            command_room,
            "    moderators: [site-commander]\n    reminders:\n      - { cron: \"* * * * *\", text: \"LOAD REMINDER for {incident_id}: transcribe clinical advice.\" }\n  - key: ed-resus",
        ))
}

/// This machine's clock, ms since the epoch.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// For each minute `from` to `until` (ms) whose reminder was due at least
/// [`REMINDER_BOUND`] before `until`, the delay of the first reminder in `times` within
/// the bound after it, or `None`.
pub fn reminder_delays(times: &[u64], from: u64, until: u64) -> Vec<Option<Duration>> {
    let bound = u64::try_from(REMINDER_BOUND.as_millis()).unwrap_or(u64::MAX);
    let mut minute = from.div_ceil(60_000) * 60_000;
    let mut delays = Vec::new();
    while minute.saturating_add(bound) <= until {
        let delay = times
            .iter()
            .filter(|&&t| t >= minute && t - minute <= bound)
            .min()
            .map(|t| Duration::from_millis(t - minute));
        delays.push(delay);
        minute += 60_000;
    }
    delays
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(status: &str, field: &str) -> Result<f64, BenchError> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| other(format!("no {field} in /proc status")))
}

/// The bot process's peak RSS in MiB, its RSS now (anonymous, file-backed) and its CPU
/// seconds, from `/proc`.
fn proc_usage(pid: u32) -> Result<(f64, (f64, f64), f64), BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(other)?;
    let hwm = status_mib(&status, "VmHWM")?;
    let now = (
        status_mib(&status, "RssAnon")?,
        status_mib(&status, "RssFile")?,
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(other)?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let hz = clock_ticks();
    Ok((hwm, now, (ticks(11) + ticks(12)) / hz))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A bot with its commanders, on a homeserver whose role holders are registered.
pub(super) struct Crew {
    pub(super) setup: BotSetup,
    pub(super) bot: BotProcess,
    pub(super) bot_id: OwnedUserId,
    pub(super) commanders: Vec<Commander>,
}

impl Crew {
    /// Registers `holders` (each with a device) and `commanders` operators, starts the
    /// bot on the playbooks in `playbooks`, enrols every commander and waits for each
    /// one's control room to be taken.
    pub(super) async fn start(
        hs: &Synapse,
        dir: &Path,
        playbooks: &Path,
        binary: &Path,
        holders: &[String],
        commanders: usize,
    ) -> Result<Self, BenchError> {
        // Each holder has a device with its keys uploaded, as staff who use Matrix do:
        // a holder without any device makes every first message in their rooms wait
        // for a `/keys/query` (matrix-sdk waits up to 5 s per such user), which is not
        // what a hospital's enrolled staff look like.
        let registered: Vec<Result<(), BenchError>> = futures_util::stream::iter(holders)
            .map(|name| async move {
                hs.register(name, "load", false).await?;
                TestUser::login(hs, name, "load").await?.stop().await;
                Ok(())
            })
            .buffer_unordered(8)
            .collect()
            .await;
        registered.into_iter().collect::<Result<Vec<()>, _>>()?;
        let mut commander_ids = Vec::new();
        for k in 0..commanders.max(1) {
            let name = format!("commander{k}");
            hs.register(&name, "load", false).await?;
            commander_ids.push(hs.user_id(&name)?);
        }
        // The commanders are operators: operators may declare any playbook.
        let setup = BotSetup::create(hs, dir, "cordon", playbooks, &commander_ids, "").await?;
        // `CORDON_BENCH_BOT_LOG` replaces the bot's log filter (`RUST_LOG`), to look
        // inside.
        let log_filter = std::env::var("CORDON_BENCH_BOT_LOG").ok();
        let env: Vec<(&str, &str)> = log_filter
            .as_deref()
            .map(|f| vec![("RUST_LOG", f)])
            .unwrap_or_default();
        let mut bot = BotProcess::start(binary, &setup, &env)?;
        bot.wait_for_log("cordon is ready", Duration::from_secs(180))
            .await?;
        let bot_id = setup.user_id.clone();
        let mut crew = Vec::new();
        for k in 0..commander_ids.len() {
            let user = TestUser::login(hs, &format!("commander{k}"), "load").await?;
            enrol(binary, &setup, &user).await?;
            let control = user
                .create_encrypted_room(&format!("Control {k}"), std::slice::from_ref(&bot_id))
                .await?;
            user.wait_for_message(&control, Duration::from_secs(180), |s, b| {
                s == bot_id && b.contains("control room")
            })
            .await?;
            crew.push(Commander { user, control });
        }
        Ok(Self {
            setup,
            bot,
            bot_id,
            commanders: crew,
        })
    }
}

/// The requests the bot has sent the homeserver so far, by endpoint, and its guard's
/// reads of whole rooms (`guard looks: event` and `guard looks: pass`), from its
/// `/metrics`; `None` when they cannot be read (the report then leaves them out).
async fn bot_requests(bot: &BotProcess) -> Option<BTreeMap<String, u64>> {
    let url = format!("{}/metrics", bot.metrics_url()?);
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    Some(request_counts(&text))
}

/// The key of [`request_counts`] for the sends that waited out a pending key query.
const KEY_QUERY_TIMEOUTS: &str = "key-query timeouts";

/// [`bot_requests`] from the metrics' text.
fn request_counts(metrics: &str) -> BTreeMap<String, u64> {
    const REQUESTS: &str = "cordon_matrix_request_duration_seconds_count{endpoint=\"";
    const LOOKS: &str = "cordon_guard_room_looks_total{cause=\"";
    const TIMEOUTS: &str = "cordon_encryption_key_query_timeouts_total ";
    metrics
        .lines()
        .filter_map(|line| {
            if let Some(count) = line.strip_prefix(TIMEOUTS) {
                return Some((KEY_QUERY_TIMEOUTS.to_owned(), count.trim().parse().ok()?));
            }
            let (name, rest) = if let Some(rest) = line.strip_prefix(REQUESTS) {
                (None, rest)
            } else {
                (Some("guard looks: "), line.strip_prefix(LOOKS)?)
            };
            let (label, count) = rest.split_once("\"} ")?;
            let key = format!("{}{label}", name.unwrap_or(""));
            Some((key, count.trim().parse().ok()?))
        })
        .collect()
}

/// Steps the bot's log says failed and were retried.
pub(super) fn retried_steps(bot: &BotProcess) -> usize {
    bot.log_text()
        .lines()
        .filter(|l| l.contains("step failed"))
        .count()
}

/// One commander: an enrolled account with a control room.
pub(super) struct Commander {
    pub(super) user: TestUser,
    pub(super) control: OwnedRoomId,
}

/// Waits for the bot's message in the control room that contains every one of
/// `needles`, returning its event.
async fn confirmation(
    c: &Commander,
    bot: &matrix_sdk::ruma::UserId,
    needles: &[&str],
) -> Result<OwnedEventId, BenchError> {
    let matches =
        |s: &matrix_sdk::ruma::UserId, b: &str| s == bot && needles.iter().all(|n| b.contains(n));
    c.user.wait_for_message(&c.control, WAIT, matches).await?;
    c.user
        .messages(&c.control)
        .into_iter()
        .find(|m| matches(&m.sender, &m.body))
        .map(|m| m.event_id)
        .ok_or_else(|| other("a confirmation vanished"))
}

/// The time from `command` to `reply`, both in `room`, by server timestamps.
async fn took(
    user: &TestUser,
    room: &RoomId,
    command: &OwnedEventId,
    reply: &OwnedEventId,
) -> Result<Duration, BenchError> {
    let t0 = server_ts(user, room, command).await?;
    let t1 = server_ts(user, room, reply).await?;
    Ok(Duration::from_millis(t1.saturating_sub(t0)))
}

/// Declares `name` on `playbook` from `c` and waits for the summary: its id and how
/// long it took.
pub(super) async fn declare(
    c: &Commander,
    bot: &matrix_sdk::ruma::UserId,
    playbook: &str,
    name: &str,
) -> Result<(IncidentId, Duration), BenchError> {
    let command = c
        .user
        .send_text(
            &c.control,
            &format!("!cordon declare {playbook} \"{name}\""),
        )
        .await?;
    let summary = confirmation(c, bot, &[&format!("DECLARED: {name} (")]).await?;
    let body = c
        .user
        .messages(&c.control)
        .into_iter()
        .find(|m| m.event_id == summary)
        .map(|m| m.body)
        .unwrap_or_default();
    let id = body
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id.to_owned())
        .ok_or_else(|| other(format!("no incident id in the summary: {body}")))?;
    let id = IncidentId::parse(&id).map_err(other)?;
    Ok((id, took(&c.user, &c.control, &command, &summary).await?))
}

/// Stands `id` down from `c`: the times to "has stood down" and to "destroyed".
pub(super) async fn stand_down(
    c: &Commander,
    bot: &matrix_sdk::ruma::UserId,
    id: &IncidentId,
) -> Result<(Duration, Duration), BenchError> {
    let command = c
        .user
        .send_text(&c.control, &format!("!cordon standdown {}", id.as_str()))
        .await?;
    let frozen = confirmation(c, bot, &[&format!("({}) has stood down", id.as_str())]).await?;
    let mine = format!("{}'s ", id.as_str());
    let destroyed = confirmation(c, bot, &[&mine, "room(s) are destroyed"]).await?;
    Ok((
        took(&c.user, &c.control, &command, &frozen).await?,
        took(&c.user, &c.control, &command, &destroyed).await?,
    ))
}

/// Runs the load benchmark.
pub async fn load(options: LoadOptions) -> Result<LoadReport, BenchError> {
    let hs = Synapse::start().await?;
    let dir = std::env::temp_dir().join(format!("cordon-load-{}", std::process::id()));
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).map_err(other)?;
    let text = playbook_text(hs.server_name(), options.holders)?;
    std::fs::write(playbooks.join("load.yaml"), text).map_err(other)?;
    let (_, holders) = super::playbook_text(hs.server_name(), options.holders);
    let Crew {
        setup,
        mut bot,
        bot_id,
        commanders,
    } = Crew::start(
        &hs,
        &dir,
        &playbooks,
        &options.binary,
        &holders,
        options.commanders,
    )
    .await?;
    let started = Instant::now();
    let mut report = LoadReport {
        form: hs.form().name(),
        ..LoadReport::default()
    };

    // 1. The baseline: one incident at a time, from the first commander.
    for run in 0..options.baseline_runs {
        let c = &commanders[0];
        let (id, declared) = declare(c, &bot_id, "load", &format!("Alone {run}")).await?;
        let (frozen, _) = stand_down(c, &bot_id, &id).await?;
        println!(
            "baseline run {run}: declare {:.2} s, stand-down {:.2} s",
            declared.as_secs_f64(),
            frozen.as_secs_f64()
        );
        report.baseline_declare.push(declared);
        report.baseline_standdown.push(frozen);
    }

    // The raw-HTTP baseline at the same concurrency, before cordon's own.
    let raw = RawBaseline::create(&hs).await?;
    let playbook = load_playbook(&playbooks.join("load.yaml"))?;
    let (raw_declare, raw_rooms) = raw.declare_all(&playbook, "rb", options.incidents).await?;
    report.raw_declare = raw_declare;
    println!(
        "raw-HTTP baseline: {} declares at once, p50 {:.2} s, p95 {:.2} s",
        report.raw_declare.len(),
        percentile(&report.raw_declare, 50.0).as_secs_f64(),
        percentile(&report.raw_declare, 95.0).as_secs_f64()
    );

    // The baseline incidents' rooms are gone: their invites are not joined later.
    let stale: std::collections::BTreeSet<OwnedRoomId> = commanders
        .iter()
        .flat_map(|c| c.user.invites())
        .map(|i| i.room_id)
        .collect();

    // 2. Every incident at once.
    let requests_before = bot_requests(&bot).await;
    let declares = (0..options.incidents).map(|i| {
        let c = &commanders[i % commanders.len()];
        let bot_id = &bot_id;
        async move { (i, declare(c, bot_id, "load", &format!("Load {i}")).await) }
    });
    let mut ids: BTreeMap<usize, IncidentId> = BTreeMap::new();
    for (i, result) in join_all(declares).await {
        match result {
            Ok((id, t)) => {
                report.declare.push(t);
                report.declare_by_id.insert(id.clone(), t);
                ids.insert(i, id);
            }
            Err(e) => report.problems.push(format!("declare {i} unanswered: {e}")),
        }
    }
    if let (Some(before), Some(after)) = (requests_before, bot_requests(&bot).await) {
        report.declare_requests = after
            .into_iter()
            .map(|(k, n)| {
                let was = before.get(&k).copied().unwrap_or(0);
                (k, n.saturating_sub(was))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
    }
    println!(
        "declared {} incidents: p50 {:.2} s, p95 {:.2} s",
        ids.len(),
        percentile(&report.declare, 50.0).as_secs_f64(),
        percentile(&report.declare, 95.0).as_secs_f64()
    );

    // 3. Traffic: the commanders join their incidents' rooms and talk.
    let mut rooms: Vec<(usize, OwnedRoomId)> = Vec::new();
    for (k, c) in commanders.iter().enumerate() {
        let mine = ids.keys().filter(|i| *i % commanders.len() == k).count() * 4;
        let deadline = Instant::now() + WAIT;
        let fresh = || {
            c.user
                .invites()
                .into_iter()
                .filter(|i| i.inviter == bot_id && !stale.contains(&i.room_id))
                .collect::<Vec<_>>()
        };
        while fresh().len() < mine && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for invite in fresh() {
            c.user.join(&invite.room_id).await?;
            rooms.push((k, invite.room_id));
        }
    }
    let total = (f64::from(options.messages_per_minute) * options.traffic.as_secs_f64() / 60.0)
        .round() as usize;
    let every = Duration::from_secs_f64(60.0 / f64::from(options.messages_per_minute.max(1)));
    let mut tick = tokio::time::interval(every);
    let mut sends = Vec::with_capacity(total);
    let traffic_start = epoch_ms();
    for n in 0..total {
        tick.tick().await;
        if rooms.is_empty() {
            break;
        }
        let (k, room) = rooms[n % rooms.len()].clone();
        let user = commanders[k].user.client().clone();
        sends.push(tokio::spawn(async move {
            let Some(room) = user.get_room(&room) else {
                return false;
            };
            let body = format!("load message {n}: BP 120/80, obs stable");
            room.send(
                matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain(body),
            )
            .await
            .is_ok()
        }));
    }
    for sent in join_all(sends).await {
        if matches!(sent, Ok(true)) {
            report.messages_sent += 1;
        } else {
            report.messages_failed += 1;
        }
    }
    report.traffic_window = (traffic_start, epoch_ms());
    for (k, room) in &rooms {
        let user = &commanders[*k].user;
        for m in user.messages(room) {
            if m.sender == bot_id && m.body.starts_with("LOAD REMINDER") {
                let at = server_ts(user, room, &m.event_id).await?;
                report.reminders_seen += 1;
                report
                    .reminder_times
                    .entry(room.clone())
                    .or_default()
                    .push(at);
            }
        }
    }

    // 4. Every incident stood down at once.
    let standdowns = ids.iter().map(|(i, id)| {
        let c = &commanders[i % commanders.len()];
        let bot_id = &bot_id;
        async move { (id.clone(), stand_down(c, bot_id, id).await) }
    });
    for (id, result) in join_all(standdowns).await {
        match result {
            Ok((frozen, destroyed)) => {
                report.standdown.push(frozen);
                report.destroyed.push(destroyed);
            }
            Err(e) => report
                .problems
                .push(format!("stand-down of {} unanswered: {e}", id.as_str())),
        }
    }
    // The commands went out at once: the whole is the longest command-to-destroyed.
    report.standdown_whole = percentile(&report.destroyed, 100.0);
    report.raw_standdown_whole = raw.stand_down_all(&raw_rooms).await?;
    println!(
        "raw-HTTP baseline: whole stand-down {:.2} s",
        report.raw_standdown_whole.as_secs_f64()
    );
    report.wall = started.elapsed();
    // "No error": a step that failed and was retried is an error the commander felt.
    let retried = retried_steps(&bot);
    if retried > 0 {
        report.problems.push(format!(
            "{retried} steps failed and were retried (see the bot's log; CORDON_KEEP_BENCH=1 keeps it)"
        ));
    }
    // A send that waited out matrix-sdk's five seconds for a key query held every other
    // send back for as long (`cordon::matrix::rooms::hold_sends`).
    if let Some(timeouts) = bot_requests(&bot)
        .await
        .and_then(|counts| counts.get(KEY_QUERY_TIMEOUTS).copied())
        && timeouts > 0
    {
        report.problems.push(format!(
            "{timeouts} encrypted sends waited out five seconds for a pending key query"
        ));
    }
    let (rss, end_rss, cpu) = proc_usage(bot.pid())?;
    report.peak_rss_mib = rss;
    report.end_rss_mib = end_rss;
    report.cpu_seconds = cpu;
    bot.terminate(Duration::from_secs(30));
    for c in commanders {
        c.user.stop().await;
    }

    let expected = options.incidents + options.baseline_runs;
    let concurrent: Vec<IncidentId> = ids.values().cloned().collect();
    check_store(
        &setup.state_dir.join("store"),
        &setup.dir,
        expected,
        &concurrent,
        &mut report,
    )?;
    super::finish_dir(&dir, Some(&setup.log));
    Ok(report)
}

/// The raw-HTTP baseline: an admin account of its own (rate limits lifted, as cordon's)
/// sending, with a plain HTTP client, the requests of a declare built from the same room
/// plans as cordon's.
pub(super) struct RawBaseline {
    http: reqwest::Client,
    base: url::Url,
    account: cordon::dev::Registration,
    control: String,
    commander: matrix_sdk::ruma::OwnedUserId,
}

/// The playbook in the file at `path`, as cordon reads it.
pub(super) fn load_playbook(path: &Path) -> Result<Playbook, BenchError> {
    cordon::input::playbook::load_file(path)
        .map_err(|d| other(format!("load playbook: {:?}", d.first())))
}

impl RawBaseline {
    pub(super) async fn create(hs: &Synapse) -> Result<Self, BenchError> {
        let account = hs.register_session("raw-baseline", "load", true).await?;
        // Its incidents' commander: an account of its own (the creator may not be among
        // a v12 room's power-level users, and a real commander would be invited to the
        // baseline's rooms and join them for the traffic).
        let commander = hs.register("raw-commander", "load", false).await?;
        let http = reqwest::Client::new();
        let base = hs.base_url();
        let url = base
            .join(&format!(
                "_synapse/admin/v1/users/{}/override_ratelimit",
                account.user_id
            ))
            .map_err(other)?;
        super::request(
            http.post(url)
                .bearer_auth(&account.access_token)
                .json(&serde_json::json!({"messages_per_second": 0, "burst_count": 0})),
        )
        .await?;
        let control = super::create_room(
            &http,
            &base,
            &account.access_token,
            &serde_json::json!({"preset": "private_chat", "name": "Raw baseline control"}),
        )
        .await?;
        Ok(Self {
            http,
            base,
            commander,
            account,
            control,
        })
    }

    /// `n` declares of `playbook` at once (incident ids `<prefix>-<i>`): each one's time
    /// from its first request to its last response, and its rooms.
    pub(super) async fn declare_all(
        &self,
        playbook: &Playbook,
        prefix: &str,
        n: usize,
    ) -> Result<(Vec<Duration>, Vec<Vec<String>>), BenchError> {
        use cordon::domain::incident::plan::{self, IncidentFacts};
        let ids: Vec<IncidentId> = (0..n)
            .map(|i| IncidentId::parse(&format!("{prefix}-{i}")).map_err(other))
            .collect::<Result<_, _>>()?;
        let names: Vec<String> = (0..n).map(|i| format!("Raw {i}")).collect();
        let runs = ids.iter().zip(&names).map(|(id, name)| async move {
            let facts = IncidentFacts {
                id,
                display_name: name,
                playbook,
                commander: &self.commander,
                expires_at: chrono::Utc::now() + chrono::TimeDelta::hours(24),
                time_zone: chrono_tz::Europe::London,
                exercise: false,
            };
            let plans = plan::plan_rooms(&facts, chrono::Utc::now());
            let started = Instant::now();
            let rooms = super::baseline_declare(
                &self.http,
                &self.base,
                &self.account.access_token,
                &self.control,
                &facts,
                &plans,
            )
            .await?;
            Ok::<_, BenchError>((started.elapsed(), rooms))
        });
        let mut times = Vec::new();
        let mut all = Vec::new();
        for result in join_all(runs).await {
            let (took, rooms) = result?;
            times.push(took);
            all.push(rooms);
        }
        Ok((times, all))
    }

    /// Every incident's rooms paged and deleted, incidents at once and each one's rooms
    /// one after the other: the time until the last deletion completed.
    pub(super) async fn stand_down_all(
        &self,
        incidents: &[Vec<String>],
    ) -> Result<Duration, BenchError> {
        let started = Instant::now();
        let runs = incidents.iter().map(|rooms| {
            super::standdown::run_baseline(&self.http, &self.base, &self.account, rooms)
        });
        for result in join_all(runs).await {
            result?;
        }
        Ok(started.elapsed())
    }
}

/// The final checks, on the stopped bot's store: every incident destroyed, with all
/// its rooms created once and destroyed, its archive sealed once, the audit intact, and
/// every reminder due in the traffic posted in each `concurrent` incident's command room
/// within [`REMINDER_BOUND`] of its minute.
fn check_store(
    state_dir: &Path,
    bot_dir: &Path,
    expected: usize,
    concurrent: &[IncidentId],
    report: &mut LoadReport,
) -> Result<(), BenchError> {
    let store = cordon::store::Store::open_existing(state_dir).map_err(other)?;
    let incidents = store
        .incidents(&cordon::store::IncidentFilter::all())
        .map_err(other)?;
    if incidents.len() != expected {
        report.problems.push(format!(
            "{} incidents in the store, {expected} declared",
            incidents.len()
        ));
    }
    let audit = store.audit_entries(.., None).map_err(other)?;
    let count = |action: &str, id: &IncidentId| {
        audit
            .iter()
            .filter(|e| e.action == action && e.incident.as_ref() == Some(id))
            .count()
    };
    report.redactions = audit
        .iter()
        .filter(|e| e.action == cordon::retention::AUDIT_ACTION)
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.details).ok())
        .filter_map(|d| d.get("redacted").and_then(serde_json::Value::as_u64))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .sum();
    // cordon's order of the concurrent declares.
    let mut order: Vec<(chrono::DateTime<chrono::Utc>, &IncidentId)> = incidents
        .iter()
        .filter(|i| concurrent.contains(&i.id))
        .map(|i| (i.declared_at, &i.id))
        .collect();
    order.sort();
    let times: Vec<Duration> = order
        .iter()
        .filter_map(|(_, id)| report.declare_by_id.get(*id).copied())
        .collect();
    report.first_declare = times.first().copied();
    report.first_few_declare = times.iter().take(FIRST_FEW).max().copied();
    for incident in &incidents {
        let id = &incident.id;
        if !matches!(incident.state, State::Destroyed | State::Closed) {
            report.problems.push(format!(
                "{} is {}, not destroyed",
                id.as_str(),
                incident.state.as_str()
            ));
        }
        let rooms = store.rooms(id).map_err(other)?;
        if let Some(command) = rooms
            .iter()
            .find(|r| r.key == "command")
            .and_then(|r| r.room_id.as_deref())
            .and_then(|r| OwnedRoomId::try_from(r).ok())
            && concurrent.contains(id)
        {
            let times = report
                .reminder_times
                .get(&command)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let (from, until) = report.traffic_window;
            let delays = reminder_delays(times, from, until);
            let late = delays.iter().filter(|d| d.is_none()).count();
            if late > 0 {
                report.problems.push(format!(
                    "{}: {late} of {} reminders due in the traffic not posted within {} s",
                    id.as_str(),
                    delays.len(),
                    REMINDER_BOUND.as_secs()
                ));
            }
            report.reminder_delays.extend(delays);
        }
        let created = count("room.created", id);
        if rooms.len() != 4 || created != 4 {
            report.problems.push(format!(
                "{}: {} room records, {created} rooms created (4 planned)",
                id.as_str(),
                rooms.len()
            ));
        }
        if count("room.destroyed", id) != 4 {
            report.problems.push(format!(
                "{}: {} rooms destroyed of 4",
                id.as_str(),
                count("room.destroyed", id)
            ));
        }
        if incident.archive.is_none() {
            report
                .problems
                .push(format!("{}: no sealed archive recorded", id.as_str()));
        }
        let archive = bot_dir
            .join("archives")
            .join(format!("{}.cordon-archive.age", id.as_str()));
        if !archive.exists() {
            report.problems.push(format!(
                "{}: the archive {} is missing",
                id.as_str(),
                archive.display()
            ));
        }
    }
    if !store.verify_audit().map_err(other)?.is_intact() {
        report.problems.push("the audit chain is broken".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reminder_is_on_time_within_the_bound_after_its_minute_and_late_or_missing_otherwise() {
        let m = |min: u64, sec: u64| (min * 60 + sec) * 1000;
        // Traffic from 0:10 to 3:20: minutes 1 and 2 are due (3 is within the bound of
        // the end, not counted).
        let delays = reminder_delays(&[m(1, 4), m(2, 31), m(0, 5)], m(0, 10), m(3, 20));
        assert_eq!(delays, vec![Some(Duration::from_secs(4)), None]);
        assert_eq!(
            reminder_delays(&[], m(0, 0), m(2, 30)),
            vec![None, None, None]
        );
        assert!(reminder_delays(&[m(1, 1)], m(0, 59), m(1, 29)).is_empty());
    }

    #[test]
    fn request_counts_are_read_by_endpoint_with_the_guard_s_looks_and_key_query_timeouts() {
        let metrics = "# TYPE cordon_matrix_request_duration_seconds histogram\n\
            cordon_matrix_request_duration_seconds_sum{endpoint=\"rooms/state\"} 1.5\n\
            cordon_matrix_request_duration_seconds_count{endpoint=\"rooms/state\"} 12\n\
            cordon_matrix_request_duration_seconds_bucket{le=\"0.005\",endpoint=\"sync\"} 1\n\
            cordon_matrix_request_duration_seconds_count{endpoint=\"sync\"} 3\n\
            cordon_guard_room_looks_total{cause=\"event\"} 7\n\
            cordon_guard_alerts_total{kind=\"device\"} 2\n\
            cordon_encryption_key_query_timeouts_total 4\n";
        let counts = request_counts(metrics);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![
                ("guard looks: event".to_owned(), 7),
                ("key-query timeouts".to_owned(), 4),
                ("rooms/state".to_owned(), 12),
                ("sync".to_owned(), 3),
            ]
        );
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_secs(10));
        assert_eq!(percentile(&v, 95.0), Duration::from_secs(19));
        assert_eq!(percentile(&v, 100.0), Duration::from_secs(20));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
        assert_eq!(percentile(&v[..1], 95.0), Duration::from_secs(1));
    }

    #[test]
    fn the_load_playbook_is_valid_with_a_short_window_and_a_reminder() {
        let text = playbook_text("hs.example", 20).unwrap();
        let pb = cordon::input::playbook::load_str(Path::new("load.yaml"), &text).unwrap();
        assert_eq!(pb.retention.messages, Duration::from_secs(60));
        assert_eq!(pb.rooms[0].reminders.len(), 1);
        assert_eq!(pb.rooms.len(), 4);
    }
}
