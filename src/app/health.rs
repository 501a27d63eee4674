//! What `/healthz` and `/metrics` read from the running bot: whether sync is live,
//! whether the store can be written, and the store's gauges.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::ctx::Ctx;
use crate::metrics::Snapshot;
use crate::metrics::http::{Check, Health, Probe};

/// A store write check is reused this long, so a busy scraper cannot turn the health
/// check into a stream of durable writes.
const STORE_CHECK_FOR: Duration = Duration::from_secs(5);

/// The bot's [`Probe`].
pub(crate) struct BotProbe {
    ctx: Weak<Ctx>,
    store_check: Mutex<Option<(Instant, Check)>>,
}

impl BotProbe {
    pub(crate) fn new(ctx: &Arc<Ctx>) -> Self {
        Self {
            ctx: Arc::downgrade(ctx),
            store_check: Mutex::new(None),
        }
    }

    fn store(&self, ctx: &Ctx) -> Check {
        let Ok(mut cached) = self.store_check.lock() else {
            return failed("the health check's cache is poisoned");
        };
        if let Some((at, check)) = &*cached
            && at.elapsed() < STORE_CHECK_FOR
        {
            return check.clone();
        }
        let check = match ctx.store.probe_write(ctx.now()) {
            Ok(()) => Check {
                ok: true,
                detail: "writable".into(),
            },
            Err(e) => failed(&format!("a write failed: {e}")),
        };
        *cached = Some((Instant::now(), check.clone()));
        check
    }
}

fn failed(detail: &str) -> Check {
    Check {
        ok: false,
        detail: detail.to_owned(),
    }
}

/// The sync check, given when the last sync succeeded and how old it may be
/// (`metrics.sync_stale_after`).
fn sync_check(last: Option<Instant>, live_for: Duration) -> Check {
    match last {
        None => failed("no sync with the homeserver yet"),
        Some(at) if at.elapsed() <= live_for => Check {
            ok: true,
            detail: format!("last sync {} s ago", at.elapsed().as_secs()),
        },
        Some(at) => failed(&format!(
            "last successful sync {} s ago; is the homeserver reachable?",
            at.elapsed().as_secs()
        )),
    }
}

impl Probe for BotProbe {
    fn health(&self) -> Health {
        let Some(ctx) = self.ctx.upgrade() else {
            let stopping = failed("cordon is shutting down");
            return Health {
                sync: stopping.clone(),
                store: stopping,
                prevention: None,
            };
        };
        let last = ctx.last_sync.lock().ok().and_then(|l| *l);
        Health {
            sync: sync_check(last, ctx.config.sync_stale_after),
            store: self.store(&ctx),
            prevention: ctx.prevention_seen().map(|p| p.on),
        }
    }

    fn snapshot(&self) -> Option<Snapshot> {
        let ctx = self.ctx.upgrade()?;
        match Snapshot::read(&ctx.store, ctx.now(), ctx.config.time_zone) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: reading the store failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_is_live_only_after_a_recent_success() {
        let live_for = Duration::from_secs(90);
        assert!(!sync_check(None, live_for).ok);
        assert!(sync_check(Some(Instant::now()), live_for).ok);
        if let Some(old) = Instant::now().checked_sub(live_for + Duration::from_secs(1)) {
            let check = sync_check(Some(old), live_for);
            assert!(!check.ok, "{check:?}");
            assert!(check.detail.contains("reachable"), "{check:?}");
        }
    }
}
