//! The scheduler task, in mini-redis's shape: one loop on
//! `select!{ sleep_until(next due), notified(), a job finished, stopping }`.
//!
//! Each pass reads every timer from the store, asks [`decide`] about each, records
//! skips, and dispatches due jobs, each in its own task on the bot's [`Tasks`] so that
//! a panic is caught (as a [`tokio::task::JoinError`]) and treated as a failure. Two
//! jobs of the same incident (or of the same incident-less timer) never run at once;
//! jobs of different incidents run concurrently, at most
//! [`SchedulerConfig::max_concurrent`] (provisioning aside: see `Class::Provision`).
//! Deadline-bound posts (reminders, expiry warnings: `Class::Deadline`) are the
//! exception on both counts: they have slots of their own
//! ([`SchedulerConfig::max_concurrent_deadline`]) and run beside their incident's
//! routine jobs, so a reminder is posted at its time however far behind the sweeps and
//! re-posts are. While an incident is being provisioned, the routine jobs (sweeps and
//! posts) run one at a time ([`SchedulerConfig::max_routine_while_provisioning`]): a
//! commander waits for the rooms, and with a short retention window fifty running
//! incidents' re-posts and sweeps took a fifth of the homeserver during a burst of
//! declares.
//! The outcome of each job is written to the store by the loop itself, so the store's
//! record of a timer changes only in one place.
//!
//! The scheduler stops with everything else (see [`crate::tasks`]): once stopping it
//! dispatches nothing more, waits for the jobs under way and records their outcomes. A
//! job cut short at the end of the shutdown's grace has no outcome and none is recorded:
//! its timer is still due at the next start, and runs again at once.
//!
//! The store is called directly from the loop: its transactions are short, and
//! `spawn_blocking` would let paused tokio time run ahead while it works.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, watch};
use tokio::task::JoinError;
use tracing::{Instrument, debug, error, info, instrument, warn};

use super::error::ScheduleError;
use crate::clock::Clock;
use crate::domain::incident::IncidentId;
use crate::domain::schedule::TimerError;
use crate::domain::schedule::TimerState;
use crate::domain::schedule::backoff::Backoff;
use crate::domain::schedule::catch_up::{Decision, Firing, Verdict, verdict};
use crate::domain::schedule::{Schedule, Timer, TimerKind};
use crate::store::Store;
use crate::tasks::Tasks;

/// What a job is told about the firing it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FireContext {
    /// The due time this firing is for (the deadline, or the latest cron occurrence).
    pub due: DateTime<Utc>,
    /// How many scheduled occurrences it stands for: more than 1 when occurrences were
    /// missed (downtime, failures) and collapsed into this one. See
    /// [`Firing::collapsed`].
    pub collapsed: u32,
    /// Which attempt this is: 1 the first time, more after failures. A job may give up
    /// (report the step as failed and return `Ok`) when this grows too large.
    pub attempt: u32,
    /// How many of the failed attempts before this one counted (see
    /// [`JobError::waiting`]): what a job that gives up after so many real failures,
    /// but waits out an outage however long, counts.
    pub strikes: u32,
    /// When the scheduler dispatched it, by its clock.
    pub fired_at: DateTime<Utc>,
}

/// Why a job failed. Its text goes to the operator's log and the timer's state: name
/// what failed, never quote a message body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    message: String,
    counts: bool,
}

impl JobError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            counts: true,
        }
    }

    /// A failure while the job only waited on something outside cordon (the homeserver
    /// unreachable): retried with backoff like any other, but not counted in
    /// [`FireContext::strikes`].
    pub fn waiting(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            counts: false,
        }
    }

    /// The description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What a job returns: a boxed future of its outcome.
pub type JobFuture = BoxFuture<'static, Result<(), JobError>>;

/// The jobs timers run, provided by the caller (the bot).
///
/// **Jobs must be idempotent.** A firing is recorded only after its job returns `Ok`,
/// so a crash while a job runs runs it again on restart, and a job that returns an
/// error after doing part of its work is retried in full.
pub trait Jobs: Send + Sync + 'static {
    /// Runs the job of `timer` for the firing described by `ctx`.
    fn run(&self, timer: Timer, ctx: FireContext) -> JobFuture;
}

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The longest sleep before the clock is read again (default 60 s), so a jump of
    /// the wall clock or a suspend is noticed.
    pub max_sleep: Duration,
    /// How many jobs may run at once, across incidents (default 4; at least 1),
    /// provisioning and deadline-bound posts aside.
    pub max_concurrent: usize,
    /// How many deadline-bound posts (reminders, expiry warnings) may run at once,
    /// beside the other jobs (default 16; at least 1). Each is a message or two, so
    /// many fit; at 50 incidents whose reminders fall due on the same minute they go out
    /// in a few rounds instead of waiting behind the routine jobs.
    pub max_concurrent_deadline: usize,
    /// How many routine jobs (sweeps, briefing re-posts, the advice and command-record
    /// posts) may run while an incident is being provisioned (default 1; at least 1):
    /// a commander waits for the rooms, and each routine job's requests are taken from
    /// the same homeserver. They still run, one at a time, and a late one runs once.
    pub max_routine_while_provisioning: usize,
    /// The wait after each failed attempt.
    pub backoff: Backoff,
    /// Another wait for the timers of some kinds (provisioning's, shorter: a commander
    /// is waiting for the rooms).
    pub backoff_by_kind: HashMap<TimerKind, Backoff>,
    /// The zone of cron timers that name none (the config's `time_zone`).
    pub time_zone: Tz,
    /// How long to wait before trying again after the store failed (default 5 s).
    pub store_retry: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_sleep: Duration::from_secs(60),
            max_concurrent: 4,
            max_concurrent_deadline: 16,
            max_routine_while_provisioning: 1,
            backoff: Backoff::default(),
            backoff_by_kind: HashMap::new(),
            time_zone: crate::input::config::DEFAULT_TIME_ZONE,
            store_retry: Duration::from_secs(5),
        }
    }
}

/// The scheduler task. Start it with [`Scheduler::spawn`]; talk to it through the
/// returned [`SchedulerHandle`].
pub struct Scheduler {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    jobs: Arc<dyn Jobs>,
    config: SchedulerConfig,
    notify: Arc<Notify>,
    /// Where the jobs run, and the token the scheduler stops on.
    tasks: Tasks,
    /// The jobs under way, each yielding its task id and outcome when it ends.
    running: FuturesUnordered<BoxFuture<'static, Done>>,
    /// The running jobs, by task id.
    jobs_running: HashMap<tokio::task::Id, Running>,
    /// Timers not to dispatch before a time: their outcome could not be recorded.
    held: HashMap<String, DateTime<Utc>>,
    /// Timers already reported as unschedulable, so the log says it once.
    reported: HashSet<String>,
    /// The last decision about each timer, kept while it holds ([`Remembered`]).
    verdicts: HashMap<String, Remembered>,
    /// Whose turn it is for the next slot between posts and sweeps ([`fair_order`]):
    /// `None` until one of them has run.
    post_turn: Option<bool>,
}

/// A decision about a timer in a state, from a time, while it holds. Deciding about a
/// cron timer pulls a day and more of wall-clock times from the cron crate (the zone's
/// offsets, see `domain::schedule::occurrences`): at fifty incidents, each with
/// every-minute reminders and sweeps, doing that for every timer at every pass took
/// most of the scheduler's time (a quarter of a second a pass in a debug build), and the
/// loop runs on the bot's runtime.
struct Remembered {
    timer: Timer,
    state: TimerState,
    from: DateTime<Utc>,
    verdict: Verdict,
}

/// A job in flight.
struct Running {
    timer: String,
    kind: TimerKind,
    class: Class,
    key: String,
    ctx: FireContext,
}

/// A finished job task: its id, and what it returned (`None` when it was cut short at
/// the end of the shutdown's grace), or how it ended abnormally.
type Done = (
    tokio::task::Id,
    Result<Option<Result<(), JobError>>, JoinError>,
);

/// What woke the loop.
enum Wake {
    Stop,
    Finished(Done),
    Look,
}

impl Scheduler {
    /// Starts the scheduler on `tasks`, which its jobs run on too; it stops when they
    /// stop. It picks up every timer already in the store, so a restart catches up by
    /// itself.
    pub fn spawn(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        jobs: Arc<dyn Jobs>,
        config: SchedulerConfig,
        tasks: &Tasks,
    ) -> SchedulerHandle {
        let notify = Arc::new(Notify::new());
        let scheduler = Scheduler {
            store: store.clone(),
            clock: clock.clone(),
            jobs,
            config,
            notify: notify.clone(),
            tasks: tasks.clone(),
            running: FuturesUnordered::new(),
            jobs_running: HashMap::new(),
            held: HashMap::new(),
            reported: HashSet::new(),
            verdicts: HashMap::new(),
            post_turn: None,
        };
        // Not cut short itself: once stopping it waits only on its jobs, which the cut
        // ends, and records the outcome of each that finished in the grace.
        tasks.spawn_supervisor(scheduler.run());
        SchedulerHandle {
            shared: Arc::new(Shared {
                store,
                clock,
                notify,
            }),
        }
    }

    async fn run(mut self) {
        info!("scheduler started");
        let tasks = self.tasks.clone();
        // A clock moved by other means than time (a test's) wakes the loop, which
        // otherwise sleeps until the next due time by the old reading.
        let mut clock_moves = self.clock.moves();
        loop {
            if tasks.is_stopping() {
                break;
            }
            let wait = self.pass();
            let wake = tokio::select! {
                () = tasks.stopping() => Wake::Stop,
                Some(done) = self.running.next() => Wake::Finished(done),
                () = self.notify.notified() => Wake::Look,
                () = clock_moved(&mut clock_moves) => Wake::Look,
                () = tokio::time::sleep(wait) => Wake::Look,
            };
            match wake {
                Wake::Stop => break,
                Wake::Finished(done) => self.finished(done),
                Wake::Look => {}
            }
        }
        if !self.running.is_empty() {
            info!(
                jobs = self.running.len(),
                "scheduler stopping: waiting for running jobs"
            );
        }
        while let Some(done) = self.running.next().await {
            self.finished(done);
        }
        info!("scheduler stopped");
    }

    /// One pass over the timers: records skips, dispatches what is due and may run,
    /// and returns how long to sleep before the next pass at the latest.
    fn pass(&mut self) -> Duration {
        let now = self.clock.now();

        let entries = match self.store.timer_entries() {
            Ok(entries) => entries,
            Err(e) => {
                error!(error = %e, "scheduler cannot read its timers; trying again");
                return self.config.store_retry;
            }
        };
        let mut next: Option<DateTime<Utc>> = None;
        let mut store_trouble = false;
        let mut due: Vec<(Timer, TimerState, Firing)> = Vec::new();
        let running: HashSet<String> = self
            .jobs_running
            .values()
            .map(|r| r.timer.clone())
            .collect();
        let mut seen = HashSet::new();
        for (timer, mut state) in entries {
            seen.insert(timer.id.clone());
            // A running job's timer is looked at again when the job finishes.
            if running.contains(&timer.id) {
                continue;
            }
            if let Some(&until) = self.held.get(&timer.id) {
                if until > now {
                    next = earliest(next, until);
                    continue;
                }
                self.held.remove(&timer.id);
            }
            if matches!(timer.schedule, Schedule::Cron { .. })
                && state.armed_at.is_none()
                && state.settled_until(&timer).is_none()
            {
                // Stored without arm_timer: count its occurrences from now on.
                match self.store.adopt_timer(&timer.id, now) {
                    Ok(_) => state.armed_at = Some(now),
                    Err(e) => {
                        error!(timer = %timer.id, error = %e, "cannot adopt timer");
                        store_trouble = true;
                        continue;
                    }
                }
            }
            match self.decide(&timer, &state, now) {
                Err(e) => {
                    if self.reported.insert(timer.id.clone()) {
                        error!(timer = %timer.id, error = %e, "timer cannot be scheduled; ignoring it");
                    }
                }
                Ok(Decision::Wait(at)) => next = earliest(next, at),
                Ok(Decision::Fire(firing)) => due.push((timer, state, firing)),
                Ok(Decision::Skip { due, reason }) => {
                    let why = reason.to_string();
                    match self.store.skip_timer(&timer.id, due, &why, now) {
                        Ok(_) => info!(timer = %timer.id, reason = %why, "firing dropped"),
                        Err(e) => {
                            error!(timer = %timer.id, error = %e, "cannot record a dropped firing");
                            store_trouble = true;
                        }
                    }
                }
                Ok(Decision::Spent) => {}
            }
        }
        self.reported.retain(|id| seen.contains(id));
        self.verdicts.retain(|id, _| seen.contains(id));
        for (timer, state, firing) in fair_order(due, self.post_turn) {
            let kind = class(&timer.kind);
            if let Some(limit) = self.slots(kind) {
                let taken = self
                    .jobs_running
                    .values()
                    .filter(|r| self.slots(r.class).is_some() && r.class.pooled_with(kind))
                    .count();
                if taken >= limit {
                    // A finishing job wakes the loop.
                    continue;
                }
                if kind.routine() && self.provisioning() {
                    let routine = self
                        .jobs_running
                        .values()
                        .filter(|r| r.class.routine())
                        .count();
                    if routine >= self.config.max_routine_while_provisioning.max(1) {
                        continue;
                    }
                }
            }
            let key = exclusivity_key(&timer);
            if self
                .jobs_running
                .values()
                .any(|r| r.key == key && !r.class.runs_beside(kind))
            {
                continue;
            }
            match kind {
                Class::Post => self.post_turn = Some(false),
                Class::Sweep => self.post_turn = Some(true),
                Class::Provision | Class::Lifecycle | Class::Deadline => {}
            }
            self.dispatch(timer, &state, firing, now);
        }
        if self.running.is_empty() {
            debug!(%now, "scheduler idle: nothing is due or running");
        }
        let mut wait = self.config.max_sleep;
        if let Some(at) = next {
            let until = (at - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            wait = wait.min(until);
        }
        if store_trouble {
            wait = wait.max(self.config.store_retry);
        }
        wait
    }

    #[instrument(skip_all, fields(timer = %timer.id))]
    fn dispatch(&mut self, timer: Timer, state: &TimerState, firing: Firing, now: DateTime<Utc>) {
        let ctx = FireContext {
            due: firing.due,
            collapsed: firing.collapsed,
            attempt: state.attempts.saturating_add(1),
            strikes: state.strikes,
            fired_at: now,
        };
        if ctx.attempt > 1 {
            warn!(attempt = ctx.attempt, due = %ctx.due, "retrying job");
        } else {
            info!(due = %ctx.due, collapsed = ctx.collapsed, "running job");
        }
        let key = exclusivity_key(&timer);
        let id = timer.id.clone();
        let kind = timer.kind.clone();
        let class = class(&kind);
        let jobs = self.jobs.clone();
        // `run` is called inside the task, so that even a panic before its future
        // exists is caught as the task's.
        let job = async move { jobs.run(timer, ctx).await }.in_current_span();
        let handle = self.tasks.spawn(job);
        let task = handle.id();
        self.running
            .push(Box::pin(async move { (task, handle.await) }));
        self.jobs_running.insert(
            task,
            Running {
                timer: id,
                kind,
                class,
                key,
                ctx,
            },
        );
    }

    /// Records the outcome of a finished job.
    fn finished(&mut self, (task, done): Done) {
        let outcome = match done {
            Ok(Some(outcome)) => outcome,
            // Cut short at the end of the shutdown's grace: as after a SIGKILL, nothing
            // is recorded, so the timer is still due at the next start.
            Ok(None) => {
                if let Some(run) = self.jobs_running.remove(&task) {
                    warn!(timer = %run.timer, "job cut short by the shutdown; it runs again at the next start");
                }
                return;
            }
            Err(join) => Err(JobError::new(if join.is_panic() {
                "the job panicked"
            } else {
                "the job was cancelled"
            })),
        };
        let Some(run) = self.jobs_running.remove(&task) else {
            return;
        };
        let now = self.clock.now();
        match outcome {
            Ok(()) => match self.store.mark_timer_fired(&run.timer, run.ctx.due) {
                Ok(true) => info!(timer = %run.timer, "job done"),
                Ok(false) => {
                    info!(timer = %run.timer, "job done; its timer was disarmed meanwhile")
                }
                Err(e) => {
                    error!(timer = %run.timer, error = %e, "job done but not recorded; it will run again");
                    self.hold(&run.timer, now);
                }
            },
            Err(failure) => {
                crate::metrics::global().job_failed(&run.kind);
                let backoff = self
                    .config
                    .backoff_by_kind
                    .get(&run.kind)
                    .unwrap_or(&self.config.backoff);
                let delay = backoff.delay(run.ctx.attempt);
                let retry_at = now.checked_add_signed(delay).unwrap_or(now);
                match self.store.record_timer_failure(
                    &run.timer,
                    failure.message(),
                    retry_at,
                    failure.counts,
                ) {
                    Ok(Some(state)) => warn!(
                        timer = %run.timer,
                        attempts = state.attempts,
                        retry_in_secs = delay.num_seconds(),
                        error = %failure,
                        "job failed; will retry"
                    ),
                    Ok(None) => {
                        info!(timer = %run.timer, error = %failure, "job failed; its timer was disarmed meanwhile")
                    }
                    Err(e) => {
                        error!(timer = %run.timer, error = %failure, store_error = %e, "job failed and the failure was not recorded");
                        self.held.insert(run.timer.clone(), retry_at);
                    }
                }
            }
        }
    }

    /// What to do with `timer` in `state` at `now`: the decision remembered for it while
    /// that holds, else a new one.
    fn decide(
        &mut self,
        timer: &Timer,
        state: &TimerState,
        now: DateTime<Utc>,
    ) -> Result<Decision, TimerError> {
        if let Some(known) = self.verdicts.get(&timer.id)
            && known.from <= now
            && known.verdict.holds_until.is_none_or(|until| now < until)
            && known.state == *state
            && known.timer == *timer
        {
            return Ok(known.verdict.decision);
        }
        let verdict = verdict(timer, state, now, self.config.time_zone)?;
        self.verdicts.insert(
            timer.id.clone(),
            Remembered {
                timer: timer.clone(),
                state: state.clone(),
                from: now,
                verdict,
            },
        );
        Ok(verdict.decision)
    }

    /// Whether an incident is being provisioned (its job running, perhaps waiting for
    /// its turn).
    fn provisioning(&self) -> bool {
        self.jobs_running
            .values()
            .any(|r| r.class == Class::Provision)
    }

    /// How many jobs of `class` (with those it shares its slots with) may run at once;
    /// `None` when it takes no slot.
    fn slots(&self, class: Class) -> Option<usize> {
        match class {
            Class::Provision => None,
            Class::Deadline => Some(self.config.max_concurrent_deadline.max(1)),
            Class::Lifecycle | Class::Post | Class::Sweep => {
                Some(self.config.max_concurrent.max(1))
            }
        }
    }

    /// Keeps `timer` from being dispatched for a while after the store failed to record
    /// its outcome, so a failing store does not re-run its job in a hot loop.
    fn hold(&mut self, timer: &str, now: DateTime<Utc>) {
        let wait =
            chrono::TimeDelta::from_std(self.config.store_retry).unwrap_or(self.config.backoff.cap);
        self.held.insert(
            timer.to_owned(),
            now.checked_add_signed(wait).unwrap_or(now),
        );
    }
}

/// Resolves when the clock behind `moves` has been moved ([`Clock::moves`]); never for
/// a clock that only runs.
async fn clock_moved(moves: &mut Option<watch::Receiver<()>>) {
    if let Some(rx) = moves {
        if rx.changed().await.is_ok() {
            return;
        }
        *moves = None;
    }
    std::future::pending::<()>().await;
}

fn earliest(next: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(next.map_or(at, |next| next.min(at)))
}

/// Which queue a due timer waits in for a free job slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Provisioning a declared incident: first, and outside
    /// [`SchedulerConfig::max_concurrent`], as when each declare ran in a task of its
    /// own. A commander is waiting for the rooms, the declares of a major incident come
    /// together, and provisioning bounds its own requests across incidents (the bot's
    /// fan-out) rather than by job slots.
    Provision,
    /// The incident's lifecycle: expiry, the stand-down pipeline, the archive's keep
    /// time.
    Lifecycle,
    /// Posts that say something at a time: playbook reminders and expiry warnings.
    /// Slots of their own ([`SchedulerConfig::max_concurrent_deadline`]), and they run
    /// beside their incident's routine jobs: under load (fifty incidents, minutes of
    /// sweeps and briefing re-posts overdue) a reminder that queued with the routine
    /// work was posted minutes late or never, each minute's firing collapsing into the
    /// next.
    Deadline,
    /// Routine posts: the briefing re-post, advice reminders, the command record's.
    Post,
    /// Retention sweeps.
    Sweep,
}

impl Class {
    /// Whether a job of this class, already running, lets a job of `other` in the same
    /// incident start beside it. A deadline-bound post only reads the incident and
    /// sends (once, through the outbox), so it runs beside the routine jobs and they
    /// beside it; the lifecycle and provisioning run alone in their incident, as does
    /// everything else.
    fn runs_beside(self, other: Class) -> bool {
        (self == Class::Deadline && (other.routine() || other == Class::Deadline))
            || (other == Class::Deadline && self.routine())
    }

    /// Routine work: posts and sweeps, which yield to provisioning
    /// ([`SchedulerConfig::max_routine_while_provisioning`]).
    fn routine(self) -> bool {
        matches!(self, Class::Post | Class::Sweep)
    }

    /// Whether jobs of this class and of `other` count against the same slots.
    fn pooled_with(self, other: Class) -> bool {
        (self == Class::Deadline) == (other == Class::Deadline)
    }
}

fn class(kind: &TimerKind) -> Class {
    match kind {
        TimerKind::Other(name) if name == crate::domain::incident::timers::PROVISION_KIND => {
            Class::Provision
        }
        TimerKind::Expiry | TimerKind::KeepTimeEnd => Class::Lifecycle,
        TimerKind::Reminder | TimerKind::Warning => Class::Deadline,
        TimerKind::Other(name) if name == crate::domain::incident::timers::STANDDOWN_KIND => {
            Class::Lifecycle
        }
        TimerKind::Briefing | TimerKind::Other(_) => Class::Post,
        TimerKind::Sweep => Class::Sweep,
    }
}

/// The order in which due timers take the free job slots. Provisioning goes first (it
/// takes no slot), then the lifecycle, so a stand-down never waits behind routine work,
/// then the deadline-bound posts (in slots of their own), earliest due first. Posts and
/// sweeps then take turns, each
/// queue earliest due first, starting with `post_turn` (whose turn it is since the last
/// dispatch; when nothing has run yet, the queue whose head is older): when both are
/// backlogged each gets half the slots, and when one is idle the other gets them all.
/// Plain earliest-due-first let a backlog of sweeps (each re-armed as due again) take
/// every slot, so no reminder fired, and strict priority let briefing re-posts starve
/// the sweeps.
fn fair_order(
    mut due: Vec<(Timer, TimerState, Firing)>,
    post_turn: Option<bool>,
) -> Vec<(Timer, TimerState, Firing)> {
    due.sort_by_key(|(_, _, firing)| firing.due);
    let mut provision = Vec::new();
    let mut lifecycle = Vec::new();
    let mut deadline = Vec::new();
    let mut posts = std::collections::VecDeque::new();
    let mut sweeps = std::collections::VecDeque::new();
    for entry in due {
        match class(&entry.0.kind) {
            Class::Provision => provision.push(entry),
            Class::Lifecycle => lifecycle.push(entry),
            Class::Deadline => deadline.push(entry),
            Class::Post => posts.push_back(entry),
            Class::Sweep => sweeps.push_back(entry),
        }
    }
    let mut out = provision;
    out.extend(lifecycle);
    out.extend(deadline);
    let mut post_turn = match (posts.front(), sweeps.front()) {
        (Some(p), Some(s)) => post_turn.unwrap_or(p.2.due <= s.2.due),
        (p, _) => p.is_some(),
    };
    while !posts.is_empty() || !sweeps.is_empty() {
        let next = if post_turn {
            posts.pop_front().or_else(|| sweeps.pop_front())
        } else {
            sweeps.pop_front().or_else(|| posts.pop_front())
        };
        out.extend(next);
        post_turn = !post_turn;
    }
    out
}

/// Jobs with the same key never run at once: the incident, or the timer itself when it
/// belongs to none.
fn exclusivity_key(timer: &Timer) -> String {
    match &timer.incident {
        Some(incident) => format!("incident/{}", incident.as_str()),
        None => format!("timer/{}", timer.id),
    }
}

/// Talks to a running [`Scheduler`]. Cheap to clone. The scheduler stops with the
/// [`Tasks`] it was spawned on, not with its handles.
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for SchedulerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerHandle").finish_non_exhaustive()
    }
}

impl SchedulerHandle {
    /// Stores `timer` ([`Store::arm_timer`]: idempotent, armed now by the scheduler's
    /// clock) and wakes the scheduler, so a timer sooner than everything else is not
    /// left waiting. Returns whether anything changed.
    pub fn arm(&self, timer: &Timer) -> Result<bool, ScheduleError> {
        let changed = self
            .shared
            .store
            .arm_timer(timer, self.shared.clock.now())?;
        self.shared.notify.notify_one();
        Ok(changed)
    }

    /// Removes timer `id`. A job of it already running is not stopped; its outcome is
    /// then not recorded. Returns whether the timer existed.
    pub fn disarm(&self, id: &str) -> Result<bool, ScheduleError> {
        let existed = self.shared.store.remove_timer(id)?;
        self.shared.notify.notify_one();
        Ok(existed)
    }

    /// Removes every timer of `incident` (at stand-down). Returns how many there were.
    pub fn disarm_incident(&self, incident: &IncidentId) -> Result<u64, ScheduleError> {
        let removed = self.shared.store.remove_timers_for(incident)?;
        self.shared.notify.notify_one();
        Ok(removed)
    }

    /// Wakes the scheduler to look at its timers now (after a timer was stored by other
    /// means).
    pub fn wake(&self) {
        self.shared.notify.notify_one();
    }
}

#[cfg(test)]
mod tests;
