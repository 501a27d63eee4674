//! The bot's side of the scheduler: what each kind of timer does when it fires.
//!
//! Every job is idempotent (sends go through the outbox with stored transaction ids,
//! state changes check the incident's state first), because a job interrupted by a
//! crash runs again at the next start. A job that fails is retried by the scheduler
//! with backoff; one whose incident has moved on (stood down, extended) returns `Ok`
//! without acting.

use std::sync::{Arc, Weak};

use tracing::warn;

use super::ctx::{Bot, BotError};
use crate::domain::incident::timers::{ADVICE_KIND, PROVISION_KIND, STANDDOWN_KIND};
use crate::domain::schedule::{Timer, TimerKind};
use crate::schedule::{FireContext, JobError, JobFuture, Jobs};

/// The jobs of a running bot. Holds the bot weakly: the bot owns the scheduler.
pub(crate) struct BotJobs {
    pub(crate) bot: Weak<Bot>,
}

impl Jobs for BotJobs {
    fn run(&self, timer: Timer, ctx: FireContext) -> JobFuture {
        let bot = self.bot.upgrade();
        Box::pin(async move {
            let Some(bot) = bot else {
                return Err(JobError::new("cordon is stopping"));
            };
            match &timer.kind {
                // Tells a failure while the homeserver is down from one that counts.
                TimerKind::Other(kind) if kind == PROVISION_KIND => {
                    super::provision::on_job(&bot, &timer, ctx).await
                }
                _ => run(&bot, &timer, ctx)
                    .await
                    .map_err(|e| JobError::new(e.to_string())),
            }
        })
    }
}

async fn run(bot: &Arc<Bot>, timer: &Timer, ctx: FireContext) -> Result<(), BotError> {
    match &timer.kind {
        TimerKind::Expiry => super::deadlines::on_expiry(bot, timer, ctx).await,
        TimerKind::Warning => super::deadlines::on_warning(bot, timer).await,
        TimerKind::Reminder => super::reminders::on_reminder(bot, timer, ctx).await,
        TimerKind::Briefing => super::reminders::on_briefing(bot, timer).await,
        TimerKind::Sweep => super::sweep::on_sweep(bot, timer).await,
        TimerKind::Other(kind) if kind == ADVICE_KIND => super::advice::on_due(bot, timer).await,
        TimerKind::Other(kind) if kind == STANDDOWN_KIND => {
            super::standdown::on_job(bot, timer, ctx).await
        }
        TimerKind::KeepTimeEnd => super::destroy::on_keep_time_end(bot, timer).await,
        other => {
            warn!(timer = %timer.id, kind = ?other, "no job for this kind of timer");
            Ok(())
        }
    }
}
