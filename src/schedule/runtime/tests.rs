//! The scheduler task on paused tokio time with a [`ManualClock`]. Every wait below is
//! a deadline on tokio's paused clock, never a real sleep.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{TimeDelta, TimeZone};
use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::domain::schedule::TimerKind;
use crate::domain::schedule::catch_up::DEADLINE_KEY;
use crate::schedule::test_clock::ManualClock;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn incident(id: &str) -> IncidentId {
    IncidentId::parse(id).unwrap()
}

fn deadline(id: &str, incident: Option<&str>, due: DateTime<Utc>) -> Timer {
    Timer {
        id: id.into(),
        incident: incident.map(self::incident),
        kind: TimerKind::Expiry,
        schedule: Schedule::At(due),
        payload: json!(null),
        last_fired: None,
    }
}

/// Jobs from a closure.
struct FnJobs<F>(F);

impl<F> Jobs for FnJobs<F>
where
    F: Fn(Timer, FireContext) -> JobFuture + Send + Sync + 'static,
{
    fn run(&self, timer: Timer, ctx: FireContext) -> JobFuture {
        (self.0)(timer, ctx)
    }
}

/// Jobs that report each run (timer id and context) and succeed.
fn reporting() -> (
    Arc<dyn Jobs>,
    mpsc::UnboundedReceiver<(String, FireContext)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let jobs = FnJobs(move |timer: Timer, ctx: FireContext| -> JobFuture {
        let _ = tx.send((timer.id, ctx));
        async { Ok(()) }.boxed()
    });
    (Arc::new(jobs), rx)
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    /// The process's tasks: the scheduler stops when they stop.
    tasks: Tasks,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    Fixture {
        dir,
        store,
        clock: Arc::new(ManualClock::new(start())),
        tasks: Tasks::new(tokio_util::sync::CancellationToken::new()),
    }
}

impl Fixture {
    fn spawn(&self, jobs: Arc<dyn Jobs>, config: SchedulerConfig) -> SchedulerHandle {
        Scheduler::spawn(
            self.store.clone(),
            self.clock.clone(),
            jobs,
            config,
            &self.tasks,
        )
    }

    /// Stops the scheduler as a shutdown does, and waits (with no grace limit) until
    /// its running jobs have finished and their outcomes are recorded.
    async fn stop(&self) {
        self.tasks.stop();
        self.tasks.wait().await;
    }

    fn state(&self, id: &str) -> (Timer, TimerState) {
        self.store.timer_entry(id).unwrap().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn an_armed_deadline_runs_at_its_time_and_only_once() {
    let f = fixture();
    let (jobs, mut rx) = reporting();
    let handle = f.spawn(jobs, SchedulerConfig::default());
    let due = start() + TimeDelta::seconds(30);
    assert!(
        handle
            .arm(&deadline("mc-1/expiry", Some("mc-1"), due))
            .unwrap()
    );
    assert!(
        timeout(secs(29), rx.recv()).await.is_err(),
        "not due before its time"
    );
    let (id, ctx) = timeout(secs(2), rx.recv()).await.unwrap().unwrap();
    assert_eq!(id, "mc-1/expiry");
    assert_eq!((ctx.due, ctx.collapsed, ctx.attempt), (due, 1, 1));
    assert!(timeout(secs(600), rx.recv()).await.is_err(), "fired twice");
    assert_eq!(f.state("mc-1/expiry").0.last_fired, Some(due));
    f.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_catches_up_each_kind_by_its_rule() {
    let f = fixture();
    let down_since = start() - TimeDelta::hours(2);
    // Armed before cordon went down at 08:00; it comes back at 10:00.
    f.store
        .arm_timer(
            &deadline("mc-1/expiry", Some("mc-1"), start() - TimeDelta::hours(1)),
            down_since,
        )
        .unwrap();
    let reminder = Timer {
        id: "mc-2/reminder".into(),
        incident: Some(incident("mc-2")),
        kind: TimerKind::Reminder,
        schedule: Schedule::Cron {
            expr: "*/30 * * * *".into(),
            tz: "Europe/London".into(),
        },
        payload: json!({"room": "command"}),
        last_fired: None,
    };
    f.store.arm_timer(&reminder, down_since).unwrap();
    let late_warning = Timer {
        id: "mc-3/warn-30m".into(),
        incident: Some(incident("mc-3")),
        kind: TimerKind::Warning,
        payload: json!({ DEADLINE_KEY: start() - TimeDelta::minutes(30) }),
        ..deadline("mc-3/warn-30m", None, start() - TimeDelta::minutes(60))
    };
    f.store.arm_timer(&late_warning, down_since).unwrap();
    let live_warning = Timer {
        id: "mc-4/warn-30m".into(),
        incident: Some(incident("mc-4")),
        payload: json!({ DEADLINE_KEY: start() + TimeDelta::minutes(10) }),
        ..late_warning.clone()
    };
    f.store.arm_timer(&live_warning, down_since).unwrap();

    let (jobs, mut rx) = reporting();
    let _handle = f.spawn(jobs, SchedulerConfig::default());
    let mut ran = HashMap::new();
    for _ in 0..3 {
        let (id, ctx) = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
        ran.insert(id, ctx);
    }
    assert!(timeout(secs(1), rx.recv()).await.is_err(), "{ran:?}");
    f.stop().await;

    assert_eq!(ran["mc-1/expiry"].due, start() - TimeDelta::hours(1));
    // 08:30, 09:00, 09:30 and 10:00 were missed: one firing, for 10:00, standing for 4.
    assert_eq!(ran["mc-2/reminder"].due, start());
    assert_eq!(ran["mc-2/reminder"].collapsed, 4);
    assert!(
        ran.contains_key("mc-4/warn-30m"),
        "its deadline is still ahead"
    );
    assert!(
        !ran.contains_key("mc-3/warn-30m"),
        "its deadline passed too"
    );
    let (_, skipped) = f.state("mc-3/warn-30m");
    assert_eq!(skipped.last_skipped, Some(start() - TimeDelta::minutes(60)));
    let audit = f.store.audit_entries(.., None).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "timer.skipped" && e.incident == Some(incident("mc-3"))),
        "the dropped warning is audited"
    );
    assert_eq!(f.state("mc-2/reminder").0.last_fired, Some(start()));
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_the_backoff_survives_a_restart() {
    let f = fixture();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let clock = f.clock.clone();
    let failing = move || -> Arc<dyn Jobs> {
        let tx = tx.clone();
        let clock = clock.clone();
        Arc::new(FnJobs(
            move |_timer: Timer, ctx: FireContext| -> JobFuture {
                let _ = tx.send((clock.now(), ctx.attempt));
                async { Err(JobError::new("boom")) }.boxed()
            },
        ))
    };
    f.store
        .arm_timer(&deadline("mc-1/expiry", Some("mc-1"), start()), start())
        .unwrap();
    let handle = f.spawn(failing(), SchedulerConfig::default());
    let mut attempts = Vec::new();
    for _ in 0..4 {
        attempts.push(timeout(secs(60), rx.recv()).await.unwrap().unwrap());
    }
    f.stop().await;
    drop(handle);
    let offsets: Vec<(i64, u32)> = attempts
        .iter()
        .map(|(at, n)| ((*at - start()).num_seconds(), *n))
        .collect();
    assert_eq!(offsets, vec![(0, 1), (5, 2), (15, 3), (35, 4)]);
    let (_, state) = f.state("mc-1/expiry");
    let fourth = start() + TimeDelta::seconds(35);
    assert_eq!(state.attempts, 4);
    assert_eq!(state.retry_at, Some(fourth + TimeDelta::seconds(40)));
    assert_eq!(state.last_error.as_deref(), Some("boom"));

    // Restart: reopen the store from its directory after 10 s down.
    let Fixture {
        dir, store, clock, ..
    } = f;
    drop(store);
    tokio::time::sleep(secs(10)).await;
    let f = Fixture {
        store: Arc::new(Store::open(dir.path()).unwrap()),
        dir,
        clock,
        tasks: Tasks::new(tokio_util::sync::CancellationToken::new()),
    };
    let _handle = f.spawn(failing(), SchedulerConfig::default());
    let (at, attempt) = timeout(secs(60), rx.recv()).await.unwrap().unwrap();
    assert_eq!(
        ((at - start()).num_seconds(), attempt),
        (75, 5),
        "the restart kept the backoff: no retry before 35 s + 40 s"
    );
    let (at, attempt) = timeout(secs(120), rx.recv()).await.unwrap().unwrap();
    assert_eq!(((at - start()).num_seconds(), attempt), (155, 6));
    f.stop().await;
}

fn panics_while_running() -> JobFuture {
    async {
        let result: Result<(), JobError> = Ok(());
        assert!(result.is_err(), "job b panics while it runs");
        result
    }
    .boxed()
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_does_not_stop_the_next() {
    let f = fixture();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let jobs = FnJobs(move |timer: Timer, _ctx: FireContext| -> JobFuture {
        match timer.id.as_str() {
            "a" => panic!("job a panics before it returns a future"),
            "b" => return panics_while_running(),
            _ => {}
        }
        let _ = tx.send(timer.id);
        async { Ok(()) }.boxed()
    });
    for (id, after) in [("a", 0), ("b", 1), ("c", 10)] {
        f.store
            .arm_timer(
                &deadline(id, None, start() + TimeDelta::seconds(after)),
                start(),
            )
            .unwrap();
    }
    let _handle = f.spawn(Arc::new(jobs), SchedulerConfig::default());
    let ran = timeout(secs(11), rx.recv()).await.unwrap().unwrap();
    assert_eq!(ran, "c");
    for id in ["a", "b"] {
        let (timer, state) = f.state(id);
        assert_eq!(timer.last_fired, None, "{id}");
        assert!(state.attempts >= 1, "{id}: {state:?}");
        assert_eq!(
            state.last_error.as_deref(),
            Some("the job panicked"),
            "{id}"
        );
    }
    assert_eq!(
        f.state("c").0.last_fired,
        Some(start() + TimeDelta::seconds(10))
    );
    f.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_clock_jump_forward_is_noticed_within_a_minute() {
    let f = fixture();
    let (jobs, mut rx) = reporting();
    let due = start() + TimeDelta::hours(2);
    f.store
        .arm_timer(&deadline("mc-1/expiry", Some("mc-1"), due), start())
        .unwrap();
    let _handle = f.spawn(jobs, SchedulerConfig::default());
    // Let it make its first pass and go to sleep, then move the wall clock past the
    // expiry without moving tokio's time (a suspend, or a corrected system clock).
    assert!(timeout(secs(1), rx.recv()).await.is_err());
    f.clock.jump(TimeDelta::hours(2));
    let (id, ctx) = timeout(secs(60), rx.recv()).await.unwrap().unwrap();
    assert_eq!((id.as_str(), ctx.due), ("mc-1/expiry", due));
    f.stop().await;
}

/// A [`ManualClock`] that says when it is moved ([`Clock::moves`]), as a test build's
/// movable clock does.
struct Announcing {
    clock: Arc<ManualClock>,
    moves: watch::Sender<()>,
}

impl Clock for Announcing {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn moves(&self) -> Option<watch::Receiver<()>> {
        Some(self.moves.subscribe())
    }
}

#[tokio::test(start_paused = true)]
async fn a_clock_that_says_it_moved_wakes_the_scheduler_at_once() {
    let f = fixture();
    let (jobs, mut rx) = reporting();
    let due = start() + TimeDelta::hours(2);
    f.store
        .arm_timer(&deadline("mc-1/expiry", Some("mc-1"), due), start())
        .unwrap();
    let clock = Arc::new(Announcing {
        clock: f.clock.clone(),
        moves: watch::Sender::new(()),
    });
    // A long sleep cap, so only the clock's signal can wake it before the hour.
    let config = SchedulerConfig {
        max_sleep: secs(3600),
        ..SchedulerConfig::default()
    };
    let _handle = Scheduler::spawn(f.store.clone(), clock.clone(), jobs, config, &f.tasks);
    assert!(timeout(secs(1), rx.recv()).await.is_err());
    f.clock.jump(TimeDelta::hours(2));
    clock.moves.send_replace(());
    let (id, ctx) = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    assert_eq!((id.as_str(), ctx.due), ("mc-1/expiry", due));
    f.stop().await;
}

#[tokio::test(start_paused = true)]
async fn arming_a_sooner_timer_wakes_the_scheduler() {
    let f = fixture();
    let (jobs, mut rx) = reporting();
    f.store
        .arm_timer(
            &deadline(
                "mc-1/expiry",
                Some("mc-1"),
                start() + TimeDelta::minutes(30),
            ),
            start(),
        )
        .unwrap();
    // A long sleep cap, so only the notification can wake it before the half hour.
    let config = SchedulerConfig {
        max_sleep: secs(3600),
        ..SchedulerConfig::default()
    };
    let handle = f.spawn(jobs, config);
    assert!(timeout(secs(1), rx.recv()).await.is_err());
    let sooner = f.clock.now() + TimeDelta::seconds(10);
    handle
        .arm(&deadline("mc-2/warn", Some("mc-2"), sooner))
        .unwrap();
    let (id, ctx) = timeout(secs(11), rx.recv()).await.unwrap().unwrap();
    assert_eq!((id.as_str(), ctx.due), ("mc-2/warn", sooner));
    f.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_the_running_job_and_records_it() {
    let f = fixture();
    let release = Arc::new(Notify::new());
    let finished = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let jobs = {
        let (release, finished) = (release.clone(), finished.clone());
        FnJobs(move |_timer: Timer, _ctx: FireContext| -> JobFuture {
            let (release, finished, tx) = (release.clone(), finished.clone(), tx.clone());
            async move {
                let _ = tx.send(());
                release.notified().await;
                finished.store(true, Ordering::SeqCst);
                Ok(())
            }
            .boxed()
        })
    };
    f.store
        .arm_timer(&deadline("mc-1/expiry", Some("mc-1"), start()), start())
        .unwrap();
    let _handle = f.spawn(Arc::new(jobs), SchedulerConfig::default());
    timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    let stopping = tokio::spawn({
        let tasks = f.tasks.clone();
        async move {
            tasks.stop();
            tasks.wait().await;
        }
    });
    tokio::time::sleep(secs(120)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown returned while the job ran"
    );
    release.notify_one();
    stopping.await.unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert_eq!(f.state("mc-1/expiry").0.last_fired, Some(start()));
}

/// A job still running when the shutdown's grace ends is cut short, and nothing is
/// recorded for it: no firing, no failure (so no backoff). At the next start its timer
/// is due at once, as after a SIGKILL.
#[tokio::test(start_paused = true)]
async fn a_job_cut_short_at_shutdown_is_not_recorded_and_runs_at_once_after_a_restart() {
    let f = fixture();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hanging = move || -> Arc<dyn Jobs> {
        let tx = tx.clone();
        Arc::new(FnJobs(
            move |_timer: Timer, ctx: FireContext| -> JobFuture {
                let _ = tx.send(ctx.attempt);
                async {
                    tokio::time::sleep(secs(3600)).await;
                    Ok(())
                }
                .boxed()
            },
        ))
    };
    f.store
        .arm_timer(&deadline("mc-1/expiry", Some("mc-1"), start()), start())
        .unwrap();
    let _handle = f.spawn(hanging(), SchedulerConfig::default());
    assert_eq!(timeout(secs(1), rx.recv()).await.unwrap(), Some(1));
    let stopped = tokio::time::Instant::now();
    assert!(!f.tasks.drain(secs(10)).await, "the job was cut short");
    assert_eq!(stopped.elapsed(), secs(10), "the grace, then the cut");
    let (timer, state) = f.state("mc-1/expiry");
    assert_eq!(timer.last_fired, None);
    assert_eq!((state.attempts, state.retry_at), (0, None));

    // The next start runs it again at once, as its first attempt.
    let f = Fixture {
        tasks: Tasks::new(tokio_util::sync::CancellationToken::new()),
        ..f
    };
    let _handle = f.spawn(hanging(), SchedulerConfig::default());
    assert_eq!(timeout(secs(1), rx.recv()).await.unwrap(), Some(1));
    assert!(!f.tasks.drain(secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn jobs_of_one_incident_never_overlap_but_other_incidents_run_alongside() {
    let f = fixture();
    let ids = ["mc-1/a", "mc-1/b", "mc-2/a"];
    let releases: Arc<HashMap<String, Arc<Notify>>> = Arc::new(
        ids.iter()
            .map(|id| ((*id).to_owned(), Arc::new(Notify::new())))
            .collect(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let jobs = {
        let releases = releases.clone();
        FnJobs(move |timer: Timer, _ctx: FireContext| -> JobFuture {
            let release = releases[&timer.id].clone();
            let _ = tx.send(timer.id);
            async move {
                release.notified().await;
                Ok(())
            }
            .boxed()
        })
    };
    for id in ids {
        let incident = &id[..4];
        f.store
            .arm_timer(&deadline(id, Some(incident), start()), start())
            .unwrap();
    }
    let _handle = f.spawn(Arc::new(jobs), SchedulerConfig::default());
    let first = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    let second = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("mc-1/a", "mc-2/a"));
    assert!(
        timeout(secs(300), rx.recv()).await.is_err(),
        "mc-1/b started while mc-1/a ran"
    );
    releases["mc-1/a"].notify_one();
    let third = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    assert_eq!(third, "mc-1/b");
    for id in ["mc-1/b", "mc-2/a"] {
        releases[id].notify_one();
    }
    f.stop().await;
    for id in ids {
        assert_eq!(f.state(id).0.last_fired, Some(start()), "{id}");
    }
}

/// Found by `cordon-bench load`: with 200 rooms' sweeps due again and again, the job
/// slots went to the earliest due sweeps, so no reminder fired and stand-downs waited
/// minutes; and then, with posts put first, the briefing re-posts starved the sweeps.
/// The lifecycle now goes first, and posts and sweeps take turns.
#[tokio::test(start_paused = true)]
async fn a_backlog_of_due_sweeps_does_not_starve_a_stand_down_or_a_reminder() {
    let f = fixture();
    let timer = |id: &str, kind: TimerKind, due: DateTime<Utc>| Timer {
        id: id.into(),
        incident: Some(incident(&id[..id.find('/').unwrap()])),
        kind,
        schedule: Schedule::At(due),
        payload: json!(null),
        last_fired: None,
    };
    let long_ago = start() - TimeDelta::minutes(10);
    let arm = |t: Timer| f.store.arm_timer(&t, long_ago).unwrap();
    for n in 0..6 {
        arm(timer(
            &format!("sw-{n}/sweep/command"),
            TimerKind::Sweep,
            long_ago,
        ));
        // Posts due later than every sweep, in other incidents.
        arm(timer(
            &format!("br-{n}/briefing/command"),
            TimerKind::Briefing,
            start() - TimeDelta::minutes(1),
        ));
    }
    arm(timer(
        "rm-1/reminder/command/0",
        TimerKind::Reminder,
        start(),
    ));
    arm(timer(
        "sd-1/standdown",
        TimerKind::Other(crate::domain::incident::timers::STANDDOWN_KIND.into()),
        start(),
    ));
    let (jobs, mut rx) = reporting();
    let _handle = f.spawn(
        jobs,
        SchedulerConfig {
            max_concurrent: 1,
            ..SchedulerConfig::default()
        },
    );
    let mut order = Vec::new();
    for _ in 0..14 {
        order.push(timeout(secs(60), rx.recv()).await.unwrap().unwrap().0);
    }
    // The stand-down first, though every sweep was due ten minutes before it, and the
    // reminder beside it in a slot of its own.
    assert_eq!(order[0], "sd-1/standdown", "{order:?}");
    assert_eq!(order[1], "rm-1/reminder/command/0", "{order:?}");
    // Then sweeps and posts take turns, the older queue (the sweeps) first.
    for (i, id) in order[2..].iter().enumerate() {
        let sweep = i % 2 == 0;
        assert_eq!(id.contains("/sweep/"), sweep, "{i}: {order:?}");
    }
    f.stop().await;
}

/// Found by `cordon-bench load` (issue 25): fifty incidents, each with a reminder every
/// minute, saw no reminder at all in two minutes of traffic. Every minute brought more
/// routine work than the four job slots could do (sweeps and briefing re-posts, slow
/// under load), the reminders queued behind it earliest due first, and each minute's
/// firing collapsed into the next before its turn came. Reminders and warnings now have
/// slots of their own and run beside their incident's routine jobs: every one is posted
/// within seconds of its time, while the lifecycle still runs alone in its incident.
#[tokio::test(start_paused = true)]
async fn reminders_keep_their_time_at_fifty_incidents_behind_a_backlog_of_routine_work() {
    use crate::domain::incident::timers::STANDDOWN_KIND;
    let f = fixture();
    let every_minute = Schedule::Cron {
        expr: "* * * * *".into(),
        tz: "Europe/London".into(),
    };
    let timer = |id: String, kind: TimerKind, schedule: Schedule| Timer {
        incident: Some(incident(&id[..id.find('/').unwrap()])),
        id,
        kind,
        schedule,
        payload: json!(null),
        last_fired: None,
    };
    let long_ago = start() - TimeDelta::minutes(10);
    for n in 0..50 {
        // Routine work due again every minute, overdue since ten minutes ago: far more
        // than four slots do (each job takes 50 s).
        for kind in [TimerKind::Sweep, TimerKind::Briefing] {
            let t = timer(
                format!("in-{n}/{kind:?}/command"),
                kind,
                every_minute.clone(),
            );
            f.store.arm_timer(&t, long_ago).unwrap();
        }
        let reminder = timer(
            format!("in-{n}/reminder/command/0"),
            TimerKind::Reminder,
            every_minute.clone(),
        );
        f.store.arm_timer(&reminder, start()).unwrap();
    }
    // One incident stands down for three minutes from 10:01:30: its lifecycle runs
    // alone, no reminder of it beside.
    let standdown = timer(
        "in-7/standdown".into(),
        TimerKind::Other(STANDDOWN_KIND.into()),
        Schedule::At(start() + TimeDelta::seconds(90)),
    );
    f.store.arm_timer(&standdown, start()).unwrap();

    // (timer, due, collapsed, started, ended) of each run, by the scheduler's clock.
    type Run = (String, DateTime<Utc>, u32, DateTime<Utc>, DateTime<Utc>);
    let (tx, mut rx) = mpsc::unbounded_channel::<Run>();
    let clock = f.clock.clone();
    let jobs = FnJobs(move |timer: Timer, ctx: FireContext| -> JobFuture {
        let tx = tx.clone();
        let clock = clock.clone();
        let takes = match timer.kind {
            TimerKind::Reminder => 1,
            TimerKind::Other(_) => 180,
            _ => 50,
        };
        async move {
            let started = clock.now();
            tokio::time::sleep(secs(takes)).await;
            let _ = tx.send((timer.id, ctx.due, ctx.collapsed, started, clock.now()));
            Ok(())
        }
        .boxed()
    });
    let _handle = f.spawn(Arc::new(jobs), SchedulerConfig::default());
    tokio::time::sleep(secs(5 * 60 + 40)).await;
    f.stop().await;
    let mut runs = Vec::new();
    while let Ok(run) = rx.try_recv() {
        runs.push(run);
    }
    let (sd_start, sd_end) = runs
        .iter()
        .find(|r| r.0 == "in-7/standdown")
        .map(|r| (r.3, r.4))
        .expect("the stand-down ran");
    let mut routine = 0;
    for n in 0..50 {
        let id = format!("in-{n}/reminder/command/0");
        for minute in 1..=5 {
            let due = start() + TimeDelta::minutes(minute);
            let run = runs.iter().find(|r| r.0 == id && r.1 == due);
            if n == 7 && due > sd_start && due < sd_end {
                // Its incident's stand-down ran then: the reminder waited for it.
                assert!(
                    run.is_none_or(|r| r.3 >= sd_end),
                    "{id} due {due} ran during the stand-down: {run:?}"
                );
                continue;
            }
            let run = run.unwrap_or_else(|| panic!("{id} due {due} never ran"));
            let late = run.3 - due;
            assert!(
                late <= TimeDelta::seconds(30) && run.2 == 1,
                "{id} due {due} started {late} late, standing for {} firings",
                run.2
            );
        }
    }
    for run in &runs {
        let of_7 = run.0.starts_with("in-7/") && run.0 != "in-7/standdown";
        assert!(
            !(of_7 && run.3 < sd_end && run.4 > sd_start),
            "{} ran beside the stand-down ({sd_start} to {sd_end}): {run:?}",
            run.0
        );
        if !run.0.contains("/reminder/") && run.0 != "in-7/standdown" {
            routine += 1;
        }
    }
    // The routine work was in fact backlogged all along: four slots, 50 s a job.
    assert!((20..=30).contains(&routine), "{routine} routine jobs ran");
}

/// Provisioning's own backoff (2 s doubling) applies to its timers, and a failure that
/// only waited on the homeserver is an attempt (the backoff grows) but not a strike
/// (the job does not come closer to giving up).
#[tokio::test(start_paused = true)]
async fn a_kind_s_own_backoff_applies_and_waiting_failures_are_not_strikes() {
    use crate::domain::incident::timers::{PROVISION_KIND, provision_backoff};
    let f = fixture();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let clock = f.clock.clone();
    let jobs = FnJobs(move |_timer: Timer, ctx: FireContext| -> JobFuture {
        let _ = tx.send((clock.now(), ctx.attempt, ctx.strikes));
        // Two attempts during an outage, then two real failures, then done.
        let outcome = match ctx.attempt {
            1 | 2 => Err(JobError::waiting("homeserver down")),
            3 | 4 => Err(JobError::new("boom")),
            _ => Ok(()),
        };
        async move { outcome }.boxed()
    });
    let kind = TimerKind::Other(PROVISION_KIND.into());
    let timer = Timer {
        kind: kind.clone(),
        ..deadline("mc-1/provision", Some("mc-1"), start())
    };
    f.store.arm_timer(&timer, start()).unwrap();
    let config = SchedulerConfig {
        backoff_by_kind: HashMap::from([(kind, provision_backoff())]),
        ..SchedulerConfig::default()
    };
    let _handle = f.spawn(Arc::new(jobs), config);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (at, attempt, strikes) = timeout(secs(60), rx.recv()).await.unwrap().unwrap();
        seen.push(((at - start()).num_seconds(), attempt, strikes));
    }
    f.stop().await;
    assert_eq!(
        seen,
        vec![(0, 1, 0), (2, 2, 0), (6, 3, 0), (14, 4, 1), (30, 5, 2)]
    );
    let (timer, state) = f.state("mc-1/provision");
    assert_eq!(timer.last_fired, Some(start()));
    assert_eq!((state.attempts, state.strikes), (0, 0), "cleared once done");
}

/// A declare is provisioned at once even when every job slot is taken, as when each
/// declare ran in a task of its own.
#[tokio::test(start_paused = true)]
async fn provisioning_takes_no_job_slot() {
    let f = fixture();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let jobs = FnJobs(move |timer: Timer, _ctx: FireContext| -> JobFuture {
        let _ = tx.send(timer.id);
        async {
            tokio::time::sleep(secs(3600)).await;
            Ok(())
        }
        .boxed()
    });
    for id in ["ex-1/expiry", "ex-2/expiry"] {
        f.store
            .arm_timer(&deadline(id, Some(&id[..4]), start()), start())
            .unwrap();
    }
    let provision = crate::domain::incident::timers::provision(
        &incident("pr-1"),
        start() + TimeDelta::seconds(10),
    );
    f.store.arm_timer(&provision, start()).unwrap();
    let _handle = f.spawn(
        Arc::new(jobs),
        SchedulerConfig {
            max_concurrent: 1,
            ..SchedulerConfig::default()
        },
    );
    let first = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    assert!(first.ends_with("/expiry"), "{first}");
    let second = timeout(secs(11), rx.recv()).await.unwrap().unwrap();
    assert_eq!(second, "pr-1/provision");
    assert!(
        timeout(secs(300), rx.recv()).await.is_err(),
        "the second expiry waits for the one slot"
    );
    assert!(!f.tasks.drain(secs(1)).await);
}

/// While an incident is being provisioned, sweeps and posts of the running incidents
/// run one at a time (`max_routine_while_provisioning`); when it is done, the rest go.
#[tokio::test(start_paused = true)]
async fn routine_jobs_yield_to_provisioning() {
    use crate::domain::incident::timers;
    let f = fixture();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let jobs = FnJobs(move |timer: Timer, _ctx: FireContext| -> JobFuture {
        let _ = tx.send(timer.id.clone());
        // The declare is provisioned in a minute; the routine jobs take an hour.
        let took = if timer.id.ends_with("/provision") {
            60
        } else {
            3600
        };
        async move {
            tokio::time::sleep(secs(took)).await;
            Ok(())
        }
        .boxed()
    });
    f.store
        .arm_timer(&timers::provision(&incident("pr-1"), start()), start())
        .unwrap();
    let later = start() + TimeDelta::seconds(5);
    for id in ["sw-1", "sw-2", "sw-3"] {
        f.store
            .arm_timer(&timers::sweep(&incident(id), "ward", later), start())
            .unwrap();
    }
    let _handle = f.spawn(Arc::new(jobs), SchedulerConfig::default());
    let first = timeout(secs(1), rx.recv()).await.unwrap().unwrap();
    assert_eq!(first, "pr-1/provision");
    let sweep = timeout(secs(10), rx.recv()).await.unwrap().unwrap();
    assert!(sweep.ends_with("/sweep/ward"), "{sweep}");
    assert!(
        timeout(secs(40), rx.recv()).await.is_err(),
        "a second sweep ran while the declare was provisioned"
    );
    // Provisioning done: the other two take their slots (four in all).
    let mut rest = vec![
        timeout(secs(30), rx.recv()).await.unwrap().unwrap(),
        timeout(secs(1), rx.recv()).await.unwrap().unwrap(),
    ];
    rest.push(sweep);
    rest.sort();
    assert_eq!(
        rest,
        ["sw-1/sweep/ward", "sw-2/sweep/ward", "sw-3/sweep/ward"]
    );
    assert!(!f.tasks.drain(secs(1)).await);
}
