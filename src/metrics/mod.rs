//! Prometheus metrics: one registry for what cordon counts as it runs (guard alerts,
//! job failures, Matrix request latency, the last good sync), and gauges read from the
//! store at each scrape (incidents by state, rooms, invites pending, sweep lag), so they
//! can never drift from what the store says.
//!
//! Label values come from fixed sets (states, statuses, alert kinds, job kinds, path
//! words), never from ids, names or message text: a scrape shows no patient data and
//! its size does not grow with the traffic.

pub mod http;
pub mod layer;

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::incident::State;
use crate::domain::schedule::TimerKind;
use crate::store::{IncidentFilter, RoomStatus, RosterStatus, Store, StoreError};

/// The prefix of every metric's name.
pub const PREFIX: &str = "cordon";

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Room statuses, in the order of the lifecycle.
const ROOM_STATUSES: [RoomStatus; 6] = [
    RoomStatus::Planned,
    RoomStatus::Created,
    RoomStatus::Frozen,
    RoomStatus::Deleting,
    RoomStatus::Destroyed,
    RoomStatus::PurgePending,
];

/// Guard alert kinds: the words [`alert_kind`] looks for, then `other`.
pub const ALERT_KINDS: [&str; 6] = [
    "compromise",
    "identity",
    "device",
    "revoked",
    "readmitted",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

/// What made the guard read a room: a state event in its incident, or the full pass
/// (at start-up and every minute).
pub const LOOK_CAUSES: [&str; 2] = ["event", "pass"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type LatencyFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

/// What cordon counts while it runs. One per process ([`global`]).
pub struct Metrics {
    registry: Registry,
    guard_alerts: Family<KindLabel, Counter>,
    guard_looks: Family<CauseLabel, Counter>,
    job_failures: Family<JobLabel, Counter>,
    matrix_requests: LatencyFamily,
    last_sync: Gauge<f64, AtomicU64>,
    prevention: Gauge,
    prevented: Counter,
    key_query_timeouts: Counter,
}

fn latency_histogram() -> Histogram {
    // 5 ms to about 41 s: a send, a page of history, a room deletion.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "cordon's version (always 1)", build);
        let guard_alerts = Family::<KindLabel, Counter>::default();
        for kind in ALERT_KINDS {
            let _ = guard_alerts.get_or_create(&KindLabel { kind });
        }
        registry.register(
            "guard_alerts",
            "Guard alerts raised (identity and device changes, intruders' ejections, \
             revoked staff), by kind",
            guard_alerts.clone(),
        );
        let guard_looks = Family::<CauseLabel, Counter>::default();
        for cause in LOOK_CAUSES {
            let _ = guard_looks.get_or_create(&CauseLabel { cause });
        }
        registry.register(
            "guard_room_looks",
            "Incident rooms the guard read whole from the homeserver and judged, by what \
             asked: a state event in the incident (event) or the full pass at start-up and \
             every minute (pass)",
            guard_looks.clone(),
        );
        let job_failures = Family::<JobLabel, Counter>::default();
        for job in JOB_KINDS {
            let _ = job_failures.get_or_create(&JobLabel { job });
        }
        registry.register(
            "job_failures",
            "Scheduled jobs (sweeps, reminders, warnings, expiries …) that failed and \
             will be retried, by job",
            job_failures.clone(),
        );
        let matrix_requests = LatencyFamily::new_with_constructor(latency_histogram);
        registry.register(
            "matrix_request_duration_seconds",
            "Time from sending a request to the homeserver (client or admin API) to its \
             response, retries included, by endpoint",
            matrix_requests.clone(),
        );
        let last_sync = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sync_last_success_timestamp_seconds",
            "When the last sync with the homeserver succeeded (Unix time; 0 before the \
             first)",
            last_sync.clone(),
        );
        let prevention = Gauge::default();
        prevention.set(-1);
        registry.register(
            "prevention_enabled",
            "Whether the homeserver's cordon_synapse module asks cordon before membership \
             and state changes in its rooms: 1 on, 0 off, -1 not configured",
            prevention.clone(),
        );
        let prevented = Counter::default();
        registry.register(
            "prevention_refusals",
            "Membership and state changes in cordon's rooms that cordon refused when the \
             module asked",
            prevented.clone(),
        );
        let key_query_timeouts = Counter::default();
        registry.register(
            "encryption_key_query_timeouts",
            "Times an encrypted send waited the full five seconds matrix-sdk allows for a \
             pending /keys/query of a member (one per member); the sync sends those \
             queries, so cordon keeps its sends apart from it and this stays 0",
            key_query_timeouts.clone(),
        );
        Self {
            registry,
            guard_alerts,
            guard_looks,
            job_failures,
            matrix_requests,
            last_sync,
            prevention,
            prevented,
            key_query_timeouts,
        }
    }

    /// Counts one guard alert of `kind` (one of [`ALERT_KINDS`]; anything else counts as
    /// `other`).
    pub fn guard_alert(&self, kind: &str) {
        let kind = ALERT_KINDS
            .into_iter()
            .find(|k| *k == kind)
            .unwrap_or("other");
        self.guard_alerts.get_or_create(&KindLabel { kind }).inc();
    }

    /// Counts one room the guard read and judged, for `cause` (one of [`LOOK_CAUSES`]).
    pub fn guard_look(&self, cause: &'static str) {
        self.guard_looks.get_or_create(&CauseLabel { cause }).inc();
    }

    /// Counts one failed run of a scheduled job.
    pub fn job_failed(&self, kind: &TimerKind) {
        self.job_failures
            .get_or_create(&JobLabel {
                job: job_label(kind),
            })
            .inc();
    }

    /// Records how long one request to `endpoint` took.
    pub fn matrix_request(&self, endpoint: &str, seconds: f64) {
        self.matrix_requests
            .get_or_create(&EndpointLabel {
                endpoint: endpoint.to_owned(),
            })
            .observe(seconds);
    }

    /// Records whether prevention is on (`Some`) or not configured (`None`).
    pub fn prevention(&self, on: Option<bool>) {
        self.prevention.set(match on {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        });
    }

    /// Counts one change refused when the module asked.
    pub fn prevented(&self) {
        self.prevented.inc();
    }

    /// Counts one send that waited out matrix-sdk's time for a pending key query.
    pub fn key_query_timeout(&self) {
        self.key_query_timeouts.inc();
    }

    /// Records a successful sync at `at`.
    pub fn synced(&self, at: DateTime<Utc>) {
        self.last_sync.set(at.timestamp_millis() as f64 / 1000.0);
    }

    /// The OpenMetrics text exposition: the counters, and the store's gauges when there
    /// is a snapshot (none before the bot has opened its store).
    pub fn render(&self, snapshot: Option<&Snapshot>) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and every label set here encodes.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        if let Some(snapshot) = snapshot {
            let _ =
                prometheus_client::encoding::text::encode_registry(&mut out, &snapshot.registry());
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// The job label of each timer kind.
const JOB_KINDS: [&str; 7] = [
    "expiry",
    "warning",
    "sweep",
    "reminder",
    "briefing",
    "keep-time-end",
    "other",
];

fn job_label(kind: &TimerKind) -> &'static str {
    match kind {
        TimerKind::Expiry => "expiry",
        TimerKind::Warning => "warning",
        TimerKind::Sweep => "sweep",
        TimerKind::Reminder => "reminder",
        TimerKind::Briefing => "briefing",
        TimerKind::KeepTimeEnd => "keep-time-end",
        TimerKind::Other(_) => "other",
    }
}

fn room_status_label(status: RoomStatus) -> &'static str {
    match status {
        RoomStatus::Planned => "planned",
        RoomStatus::Created => "created",
        RoomStatus::Frozen => "frozen",
        RoomStatus::Deleting => "deleting",
        RoomStatus::Destroyed => "destroyed",
        RoomStatus::PurgePending => "purge-pending",
    }
}

/// The guard alert kind of an alert's outbox key: `guard/<incident>/<kind>/…`, or
/// `guard/<incident>/<room key>/compromise/…` for forged membership or state. A readmit
/// notice (`readmit`) counts with `readmitted`.
pub fn alert_kind(key: &str) -> &'static str {
    let segments: Vec<&str> = key.split('/').collect();
    if segments.get(3) == Some(&"compromise") {
        return "compromise";
    }
    match segments.get(2).copied() {
        Some("readmit") => "readmitted",
        Some(word) => ALERT_KINDS
            .into_iter()
            .find(|k| *k == word)
            .unwrap_or("other"),
        None => "other",
    }
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// A gauge per lifecycle state, from `counts`.
fn by_state(counts: &[(State, u64)]) -> Family<StateLabel, Gauge> {
    let family = Family::<StateLabel, Gauge>::default();
    for (state, n) in counts {
        family
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .set(*n as i64);
    }
    family
}

/// The gauges read from the store at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Incidents by state, every state listed (0 included); exercises are not counted.
    pub incidents: Vec<(State, u64)>,
    /// Exercises (drills) by state, every state listed (0 included).
    pub exercises: Vec<(State, u64)>,
    /// Rooms of incidents not yet closed, by status.
    pub rooms: Vec<(RoomStatus, u64)>,
    /// Invites waiting to be sent, one per person per room: role holders not yet let
    /// in (unverified, no account …) in incidents that are provisioning, active or
    /// failed.
    pub invites_pending: u64,
    /// How far behind the most overdue retention sweep is, in seconds (0 when none is
    /// overdue).
    pub sweep_lag_seconds: f64,
    /// Incidents whose rooms wait for their advice to be delivered to the FHIR server.
    pub fhir_waiting: u64,
}

impl Snapshot {
    /// Reads the gauges from `store` at `now`; cron timers without a zone run in `tz`.
    pub fn read(store: &Store, now: DateTime<Utc>, tz: chrono_tz::Tz) -> Result<Self, StoreError> {
        let incidents = store.incidents(&IncidentFilter::all())?;
        let mut by_state: Vec<(State, u64)> = State::ALL.iter().map(|s| (*s, 0)).collect();
        let mut drills = by_state.clone();
        let mut rooms: Vec<(RoomStatus, u64)> = ROOM_STATUSES.iter().map(|s| (*s, 0)).collect();
        let mut invites_pending = 0;
        let mut fhir_waiting = 0;
        for incident in &incidents {
            let counted = if incident.exercise {
                &mut drills
            } else {
                &mut by_state
            };
            if let Some((_, n)) = counted.iter_mut().find(|(s, _)| *s == incident.state) {
                *n += 1;
            }
            if incident.state == State::Closed {
                continue;
            }
            if store
                .standdown(&incident.id)?
                .and_then(|r| r.fhir)
                .is_some_and(|d| d.is_pending())
            {
                fhir_waiting += 1;
            }
            for room in store.rooms(&incident.id)? {
                if let Some((_, n)) = rooms.iter_mut().find(|(s, _)| *s == room.status) {
                    *n += 1;
                }
            }
            if matches!(
                incident.state,
                State::Provisioning | State::Active | State::Failed
            ) {
                invites_pending += store
                    .roster_for_incident(&incident.id)?
                    .iter()
                    .filter(|e| matches!(e.status, RosterStatus::Pending { .. }))
                    .count() as u64;
            }
        }
        let mut sweep_lag_seconds: f64 = 0.0;
        for (timer, state) in store.timer_entries()? {
            if timer.kind != TimerKind::Sweep {
                continue;
            }
            // A timer whose schedule no longer compiles is the scheduler's to report.
            if let Ok(Some(due)) =
                crate::domain::schedule::catch_up::oldest_unsettled(&timer, &state, now, tz)
            {
                let lag = (now - due).num_milliseconds().max(0) as f64 / 1000.0;
                sweep_lag_seconds = sweep_lag_seconds.max(lag);
            }
        }
        Ok(Self {
            incidents: by_state,
            exercises: drills,
            rooms,
            invites_pending,
            sweep_lag_seconds,
            fhir_waiting,
        })
    }

    fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register(
            "incidents",
            "Incidents in the store, by state (exercises are counted apart)",
            by_state(&self.incidents),
        );
        registry.register(
            "exercises",
            "Exercises (drills, declared with --exercise) in the store, by state",
            by_state(&self.exercises),
        );
        let rooms = Family::<StatusLabel, Gauge>::default();
        for (status, n) in &self.rooms {
            rooms
                .get_or_create(&StatusLabel {
                    status: room_status_label(*status),
                })
                .set(*n as i64);
        }
        registry.register(
            "rooms",
            "Rooms of incidents not yet closed, by status",
            rooms,
        );
        let pending = Gauge::<i64>::default();
        pending.set(self.invites_pending as i64);
        registry.register(
            "invites_pending",
            "Invites waiting to be sent, one per person per room: role holders not yet \
             let in (unverified identity, no account, identity changed …)",
            pending,
        );
        let lag = Gauge::<f64, AtomicU64>::default();
        lag.set(self.sweep_lag_seconds);
        let fhir = Gauge::<i64>::default();
        fhir.set(self.fhir_waiting as i64);
        registry.register(
            "fhir_deliveries_waiting",
            "Stood-down incidents whose rooms wait for their advice to be delivered to the \
             FHIR server (fhir.base_url)",
            fhir,
        );
        registry.register(
            "sweep_lag_seconds",
            "How long the most overdue retention sweep has been due (0 when none is)",
            lag,
        );
        registry
    }
}

#[cfg(test)]
mod tests;
