//! The running bot's tasks and its one shutdown: a [`CancellationToken`] and a
//! [`TaskTracker`], held together in [`Tasks`] (mini-redis's broadcast signal and count
//! of finished tasks, in tokio-util's words).
//!
//! # Shutdown
//!
//! Every task `cordon run` starts is spawned through the one [`Tasks`] the bot's context
//! holds: the scheduler and each job it runs (the stand-down, provisioning …), the
//! guard's watchers and periodic pass, the watch for a failed store, the metrics
//! listener and its connections, the admin socket and its connections, and the work the
//! event handlers hand off (a command, a reaction, a reconcile). Nothing else spawns. The
//! sync loop runs in `app::run` itself. Shutdown goes in four steps:
//!
//! 1. **Stop.** The token is cancelled: by `cordon run` on SIGTERM or ctrl-c, or by the
//!    bot itself when its store fails. Nothing new starts: the sync loop ends (so no
//!    event reaches a handler), the scheduler dispatches no more jobs, the listeners
//!    stop accepting, the periodic watchers end at their next wait
//!    ([`Tasks::stopping`]).
//! 2. **Grace.** Work under way (a job, a command being handled, a reconcile) goes on
//!    to its end, for at most the grace `app::run` gives ([`Tasks::drain`], 10 s). The
//!    scheduler records the outcome of each job that ends in it.
//! 3. **Cut.** Whatever still runs then is dropped at its next `.await` ([`Tasks::spawn`]
//!    wraps every piece of work for that). Every step in cordon records its intent in
//!    the store before its side effect and is safe to repeat, so a step cut here resumes
//!    at the next start exactly as after a SIGKILL: a job whose outcome was not recorded
//!    is still due and runs again at once (the scheduler records nothing for a job cut
//!    short, so no backoff delays it), a stand-down resumes from its recorded step, a
//!    declare from its last recorded room, invite or message.
//! 4. **Done.** [`Tasks::drain`] returns once the tracker is closed and empty, and only
//!    then does `app::run` return: no task of the bot outlives it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;
use tracing::error;

/// The tracker every task of the running bot is spawned on, the token that stops them,
/// and the token that cuts short what is left after the grace. Cheap to clone; clones
/// share everything. See the module documentation for how shutdown goes.
#[derive(Debug, Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    cut: CancellationToken,
}

impl Tasks {
    /// Tasks that stop when `stop` is cancelled (by whoever holds it, or by
    /// [`Tasks::stop`]).
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            stop,
            cut: CancellationToken::new(),
        }
    }

    /// Starts the shutdown: cancels the token.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// True once the shutdown has started.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes once the shutdown has started. Long-lived loops wait on it beside
    /// their own wake-ups and end when it completes.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// The stop token itself, for a task that must own it.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Spawns `work` on the tracker. It runs to its end, through the shutdown's grace,
    /// unless the grace ends first: then it is dropped at its next `.await` and the
    /// handle yields `None`. Work must therefore be resumable from any `.await`, as every
    /// step in cordon is.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let cut = self.cut.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = cut.cancelled() => None,
                out = work => Some(out),
            }
        })
    }

    /// Spawns `work` like [`Tasks::spawn`], for nobody to await: a panic in it is logged
    /// rather than lost with the handle.
    pub fn spawn_detached<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.spawn(async move {
            if AssertUnwindSafe(work).catch_unwind().await.is_err() {
                error!("a background task panicked");
            }
        }));
    }

    /// Spawns a task that is never cut short: one that ends by itself once stopped and
    /// whose only waits after that are on work spawned with [`Tasks::spawn`], which the
    /// cut ends (the scheduler's loop, which records the outcome of each job it runs).
    pub fn spawn_supervisor<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Waits, without stopping anything, until every task has ended (the tracker is
    /// closed first: tasks may still be spawned, and are waited for too).
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Shuts down: stops, gives the work under way `grace` to end, cuts short whatever
    /// is left, and returns once every task has ended. Returns false when something had
    /// to be cut short.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.stop();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.cut.cancel();
        self.tracker.wait().await;
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[tokio::test(start_paused = true)]
    async fn work_under_way_finishes_within_the_grace() {
        let tasks = Tasks::new(CancellationToken::new());
        let done = Arc::new(AtomicBool::new(false));
        let handle = tasks.spawn({
            let done = done.clone();
            async move {
                tokio::time::sleep(secs(3)).await;
                done.store(true, Ordering::SeqCst);
                7
            }
        });
        let started = tokio::time::Instant::now();
        assert!(tasks.drain(secs(10)).await, "nothing was cut short");
        assert_eq!(started.elapsed(), secs(3));
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(handle.await.unwrap(), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_past_the_grace_is_cut_short_and_drain_returns_after_it() {
        let tasks = Tasks::new(CancellationToken::new());
        let handle = tasks.spawn(async {
            tokio::time::sleep(secs(3600)).await;
        });
        let started = tokio::time::Instant::now();
        assert!(!tasks.drain(secs(10)).await, "the work was cut short");
        assert_eq!(started.elapsed(), secs(10));
        assert!(handle.is_finished());
        assert_eq!(handle.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_token_stops_the_loops_waiting_on_it() {
        let token = CancellationToken::new();
        let tasks = Tasks::new(token.clone());
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let watcher = {
            let (tasks2, ticks) = (tasks.clone(), ticks.clone());
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        () = tasks2.stopping() => break,
                        () = tokio::time::sleep(secs(60)) => {}
                    }
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        tokio::time::sleep(secs(150)).await;
        assert!(!tasks.is_stopping());
        token.cancel();
        assert!(tasks.is_stopping());
        let started = tokio::time::Instant::now();
        assert!(tasks.drain(secs(10)).await);
        assert_eq!(started.elapsed(), Duration::ZERO, "the loop ended at once");
        assert_eq!(watcher.await.unwrap(), Some(()));
        assert_eq!(ticks.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_supervisor_outlives_the_cut_of_the_work_it_waits_for() {
        let tasks = Tasks::new(CancellationToken::new());
        let job = tasks.spawn(async {
            tokio::time::sleep(secs(3600)).await;
        });
        let supervisor = tasks.spawn_supervisor(async move { job.await.unwrap() });
        assert!(!tasks.drain(secs(10)).await);
        assert_eq!(supervisor.await.unwrap(), None, "it saw its job cut short");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_in_detached_work_ends_only_that_work() {
        let tasks = Tasks::new(CancellationToken::new());
        tasks.spawn_detached(async {
            let v: Option<u8> = None;
            assert!(v.is_some(), "this work panics");
        });
        let after = tasks.spawn(async { 1 });
        assert!(tasks.drain(secs(10)).await);
        assert_eq!(after.await.unwrap(), Some(1));
    }
}
