//! The bot's side of the scheduler: what each kind of timer does when it fires.
//!
//! Every job is idempotent (sends go through the outbox with stored transaction ids,
//! state changes check the incident's state first), because a job interrupted by a
//! crash runs again at the next start. A job that fails is retried by the scheduler
//! with backoff; one whose incident has moved on (stood down, extended) returns `Ok`
//! without acting.

use std::sync::{Arc, Weak};

use tracing::warn;

use super::ctx::{AppError, Ctx};
use crate::domain::incident::timers::{
    ADVICE_KIND, METHANE_KIND, PROVISION_KIND, RECORD_POST_KIND, SITREP_DUE_KIND,
    SITREP_GRACE_KIND, STANDDOWN_KIND,
};
use crate::domain::schedule::{Timer, TimerKind};
use crate::schedule::{FireContext, JobError, JobFuture, Jobs};

/// The jobs of a running bot. Holds the bot weakly: the bot owns the scheduler.
pub(crate) struct AppJobs {
    pub(crate) ctx: Weak<Ctx>,
}

impl Jobs for AppJobs {
    fn run(&self, timer: Timer, fire: FireContext) -> JobFuture {
        let ctx = self.ctx.upgrade();
        Box::pin(async move {
            let Some(ctx) = ctx else {
                return Err(JobError::new("cordon is stopping"));
            };
            match &timer.kind {
                // Tells a failure while the homeserver is down from one that counts.
                TimerKind::Other(kind) if kind == PROVISION_KIND => {
                    super::provision::on_job(&ctx, &timer, fire).await
                }
                _ => run(&ctx, &timer, fire)
                    .await
                    .map_err(|e| JobError::new(e.to_string())),
            }
        })
    }
}

async fn run(ctx: &Arc<Ctx>, timer: &Timer, fire: FireContext) -> Result<(), AppError> {
    match &timer.kind {
        TimerKind::Expiry => super::deadlines::on_expiry(ctx, timer, fire).await,
        TimerKind::Warning => super::deadlines::on_warning(ctx, timer).await,
        TimerKind::Reminder => super::reminders::on_reminder(ctx, timer, fire).await,
        TimerKind::Briefing => super::reminders::on_briefing(ctx, timer).await,
        TimerKind::Sweep => super::sweep::on_sweep(ctx, timer).await,
        TimerKind::Other(kind) if kind == ADVICE_KIND => super::advice::on_due(ctx, timer).await,
        TimerKind::Other(kind) if kind == SITREP_DUE_KIND => {
            super::record::on_sitrep_due(ctx, timer).await
        }
        TimerKind::Other(kind) if kind == SITREP_GRACE_KIND => {
            super::record::on_sitrep_grace(ctx, timer).await
        }
        TimerKind::Other(kind) if kind == METHANE_KIND => {
            super::record::on_methane_due(ctx, timer).await
        }
        TimerKind::Other(kind) if kind == RECORD_POST_KIND => {
            super::record::on_post_due(ctx, timer).await
        }
        TimerKind::Other(kind) if kind == STANDDOWN_KIND => {
            super::standdown::on_job(ctx, timer, fire).await
        }
        TimerKind::KeepTimeEnd => super::destroy::on_keep_time_end(ctx, timer).await,
        other => {
            warn!(timer = %timer.id, kind = ?other, "no job for this kind of timer");
            Ok(())
        }
    }
}
