//! The catch-up rules: given a timer, its scheduler state and the time, whether it is
//! due and what to do. Plain data in, a [`Decision`] out; no clock, no store, no tokio.
//!
//! - A one-shot timer ([`Schedule::At`]) that fell due and has not fired is run once,
//!   however late: an expiry missed during downtime still stands the incident down.
//! - A cron timer that missed several occurrences fires once, for the latest of them,
//!   and reports how many it stands for ([`Firing::collapsed`]): a sweep missed five
//!   times runs once, and missed reminders become one ("3 reminders were missed while
//!   cordon was down"), never a burst.
//! - A [`TimerKind::Warning`] whose mark passed is still sent once while the deadline
//!   it warns about is ahead; once that deadline has passed too, it is dropped
//!   ([`Decision::Skip`], recorded by the scheduler). The deadline is read from the
//!   timer's payload under [`DEADLINE_KEY`]; a warning without one is sent.
//! - After a failure, nothing runs before the state's `retry_at`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::TimerError;
use super::occurrences::occurrences_after;
use crate::domain::schedule::TimerState;
use crate::domain::schedule::{Schedule, Timer, TimerKind};
use crate::input::playbook::cron::{CronError, CronSchedule};

/// The key of a warning timer's payload that holds the deadline it warns about
/// (RFC 3339, as `chrono` serialises a `DateTime<Utc>`).
pub const DEADLINE_KEY: &str = "deadline";

/// Counting missed occurrences stops here; [`Firing::collapsed`] then means "at least".
pub const MAX_COLLAPSED: u32 = 100_000;

/// How far back the latest missed occurrence is looked for once the count is capped.
const CAPPED_LOOKBACK: TimeDelta = TimeDelta::days(2);

/// One firing of a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    /// The due time this firing is for: the deadline, or the latest cron occurrence it
    /// covers. The store records it as the timer's `last_fired`.
    pub due: DateTime<Utc>,
    /// How many scheduled occurrences this one firing stands for: 1 normally; `n > 1`
    /// when `n` occurrences fell due without being run (downtime, a failing job) and
    /// were collapsed into this one. Capped at [`MAX_COLLAPSED`].
    pub collapsed: u32,
}

/// Why a firing is dropped instead of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A warning whose deadline has already passed: warning of it now would mislead.
    DeadlinePassed {
        /// The deadline the warning was for.
        deadline: DateTime<Utc>,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::DeadlinePassed { deadline } => write!(
                f,
                "the deadline it warns about ({}) had passed too",
                deadline.to_rfc3339()
            ),
        }
    }
}

/// What to do with a timer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not due: look again at this time (a deadline, an occurrence, or a retry time).
    Wait(DateTime<Utc>),
    /// Run its job.
    Fire(Firing),
    /// Do not run it; record the firing due at `due` as skipped.
    Skip {
        /// The due time dropped.
        due: DateTime<Utc>,
        /// Why.
        reason: SkipReason,
    },
    /// It will never fire again (a one-shot that fired or was skipped, or a cron
    /// schedule with no further occurrence).
    Spent,
}

/// Decides what to do with `timer` at `now`. A cron timer runs in the zone its
/// schedule names, or in `default_tz` when that is empty.
pub fn decide(
    timer: &Timer,
    state: &TimerState,
    now: DateTime<Utc>,
    default_tz: Tz,
) -> Result<Decision, TimerError> {
    Ok(verdict(timer, state, now, default_tz)?.decision)
}

/// A [`Decision`], and how long it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What to do now.
    pub decision: Decision,
    /// The same timer in the same state decides the same way at every time from the
    /// `now` it was decided at up to (not including) this one; `None` when for ever. A
    /// caller may keep the decision that long instead of deciding again: for a cron
    /// timer that is the next occurrence, and finding occurrences in a zone costs a day
    /// and more of wall-clock times pulled from the cron crate (see `occurrences`).
    pub holds_until: Option<DateTime<Utc>>,
}

/// As [`decide`], with how long the decision holds.
pub fn verdict(
    timer: &Timer,
    state: &TimerState,
    now: DateTime<Utc>,
    default_tz: Tz,
) -> Result<Verdict, TimerError> {
    let done = |decision, holds_until| {
        Ok(Verdict {
            decision,
            holds_until,
        })
    };
    let settled = state.settled_until(timer);
    let (firing, holds_until) = match &timer.schedule {
        Schedule::At(due) => {
            let due = *due;
            if settled.is_some_and(|settled| settled >= due) {
                return done(Decision::Spent, None);
            }
            if due > now {
                return done(Decision::Wait(due), Some(due));
            }
            match warning_deadline(timer).filter(|_| timer.kind == TimerKind::Warning) {
                Some(deadline) if deadline <= now => {
                    return done(
                        Decision::Skip {
                            due,
                            reason: SkipReason::DeadlinePassed { deadline },
                        },
                        None,
                    );
                }
                // Until its deadline passes too.
                deadline => (Firing { due, collapsed: 1 }, deadline),
            }
        }
        Schedule::Cron { expr, tz } => {
            let (cron, tz) = compile(timer, expr, tz, default_tz)?;
            // A cron timer counts from when it last fired, else from when it was armed;
            // one with neither (not yet adopted by the scheduler) counts from now, so
            // its decision holds only now.
            let anchor = settled.or(state.armed_at);
            let only_now = anchor.is_none().then_some(now);
            match cron_firing(&cron, tz, anchor.unwrap_or(now), now) {
                CronNext::Never => return done(Decision::Spent, only_now),
                CronNext::At(at) => return done(Decision::Wait(at), only_now.or(Some(at))),
                CronNext::Due(firing, next) => (firing, next),
            }
        }
    };
    match state.retry_at {
        Some(retry_at) if retry_at > now => done(Decision::Wait(retry_at), Some(retry_at)),
        _ => done(Decision::Fire(firing), holds_until),
    }
}

/// When `timer` is next due at `now`: `now` itself when it is due (or to be skipped),
/// `None` when it will never fire again.
pub fn next_due(
    timer: &Timer,
    state: &TimerState,
    now: DateTime<Utc>,
    default_tz: Tz,
) -> Result<Option<DateTime<Utc>>, TimerError> {
    Ok(match decide(timer, state, now, default_tz)? {
        Decision::Wait(at) => Some(at),
        Decision::Fire(_) | Decision::Skip { .. } => Some(now),
        Decision::Spent => None,
    })
}

/// The earliest due time of `timer` that is at or before `now` and not yet dealt with,
/// whatever a retry after a failure waits for: how far behind the timer is. `None` when
/// it is not behind (nothing due, or spent).
pub fn oldest_unsettled(
    timer: &Timer,
    state: &TimerState,
    now: DateTime<Utc>,
    default_tz: Tz,
) -> Result<Option<DateTime<Utc>>, TimerError> {
    let settled = state.settled_until(timer);
    Ok(match &timer.schedule {
        Schedule::At(due) => {
            (*due <= now && settled.is_none_or(|settled| settled < *due)).then_some(*due)
        }
        Schedule::Cron { expr, tz } => {
            let (cron, tz) = compile(timer, expr, tz, default_tz)?;
            let anchor = settled.or(state.armed_at).unwrap_or(now);
            occurrences_after(&cron, tz, anchor)
                .next()
                .filter(|first| *first <= now)
        }
    })
}

/// The deadline a warning timer warns about, from its payload ([`DEADLINE_KEY`]).
pub fn warning_deadline(timer: &Timer) -> Option<DateTime<Utc>> {
    let value = timer.payload.get(DEADLINE_KEY)?;
    serde_json::from_value(value.clone()).ok()
}

enum CronNext {
    Never,
    At(DateTime<Utc>),
    /// Due, collapsing the occurrences so far, until the next occurrence (`None`:
    /// there is none, or it was not looked for).
    Due(Firing, Option<DateTime<Utc>>),
}

/// `expr` compiled, from a cache of the expressions seen so far. The scheduler decides
/// about every timer at each pass, and compiling an expression builds the cron crate's
/// sets of every second, minute, hour and day it matches: at fifty incidents that was
/// most of a pass's time (found with `perf` on the scheduler's test of that load).
/// Playbooks hold a handful of distinct expressions; the cache keeps at most 256, and
/// one refused is compiled again (and refused) each time.
fn parsed(expr: &str) -> Result<Arc<CronSchedule>, CronError> {
    const MOST: usize = 256;
    static CACHE: LazyLock<Mutex<HashMap<String, Arc<CronSchedule>>>> =
        LazyLock::new(Mutex::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cron) = cache.get(expr) {
        return Ok(cron.clone());
    }
    let cron = Arc::new(CronSchedule::parse(expr)?);
    if cache.len() < MOST {
        cache.insert(expr.to_owned(), cron.clone());
    }
    Ok(cron)
}

fn compile(
    timer: &Timer,
    expr: &str,
    tz: &str,
    default_tz: Tz,
) -> Result<(Arc<CronSchedule>, Tz), TimerError> {
    let cron = parsed(expr).map_err(|source| TimerError::Cron {
        timer: timer.id.clone(),
        source,
    })?;
    let tz = if tz.trim().is_empty() {
        default_tz
    } else {
        tz.trim().parse().map_err(|_| TimerError::TimeZone {
            timer: timer.id.clone(),
            tz: tz.to_owned(),
        })?
    };
    Ok((cron, tz))
}

/// The occurrences of `cron` after `anchor` up to `now`, collapsed into one firing.
fn cron_firing(cron: &CronSchedule, tz: Tz, anchor: DateTime<Utc>, now: DateTime<Utc>) -> CronNext {
    let mut occurrences = occurrences_after(cron, tz, anchor);
    let Some(first) = occurrences.next() else {
        return CronNext::Never;
    };
    if first > now {
        return CronNext::At(first);
    }
    let mut latest = first;
    let mut collapsed = 1;
    let mut next = None;
    for at in occurrences {
        if at > now {
            next = Some(at);
            break;
        }
        if collapsed == MAX_COLLAPSED {
            // Not looked for: the firing holds only now.
            next = Some(now);
            break;
        }
        latest = at;
        collapsed += 1;
    }
    if collapsed == MAX_COLLAPSED
        && let Some(at) = occurrences_after(
            cron,
            tz,
            latest.max(now.checked_sub_signed(CAPPED_LOOKBACK).unwrap_or(latest)),
        )
        .take_while(|at| *at <= now)
        .last()
    {
        latest = at;
    }
    CronNext::Due(
        Firing {
            due: latest,
            collapsed,
        },
        next,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::London;
    use serde_json::json;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap() + TimeDelta::minutes(min)
    }

    fn at(kind: TimerKind, due: DateTime<Utc>) -> Timer {
        Timer {
            id: "mc-1/x".into(),
            incident: None,
            kind,
            schedule: Schedule::At(due),
            payload: json!(null),
            last_fired: None,
        }
    }

    fn cron(kind: TimerKind, expr: &str) -> Timer {
        Timer {
            schedule: Schedule::Cron {
                expr: expr.into(),
                tz: "Europe/London".into(),
            },
            ..at(kind, t(0))
        }
    }

    fn armed(at: DateTime<Utc>) -> TimerState {
        TimerState {
            armed_at: Some(at),
            ..TimerState::default()
        }
    }

    /// A verdict holds for exactly as long as it says: at every minute before its
    /// `holds_until` the timer decides the same, and at that time no longer (or the
    /// decision is for ever).
    #[test]
    fn a_verdict_holds_exactly_as_long_as_it_says() {
        let mut warning = at(TimerKind::Warning, t(10));
        warning.payload = json!({ DEADLINE_KEY: t(40) });
        let mut fired = cron(TimerKind::Sweep, "*/15 * * * *");
        fired.last_fired = Some(t(15));
        let retrying = TimerState {
            attempts: 1,
            retry_at: Some(t(37)),
            ..armed(t(0))
        };
        let cases = [
            (cron(TimerKind::Reminder, "* * * * *"), armed(t(0))),
            (cron(TimerKind::Sweep, "*/15 * * * *"), armed(t(0))),
            (cron(TimerKind::Sweep, "*/15 * * * *"), retrying),
            (fired, armed(t(0))),
            (cron(TimerKind::Reminder, "0 9 * * *"), armed(t(0))),
            (at(TimerKind::Expiry, t(20)), TimerState::default()),
            (warning, TimerState::default()),
        ];
        for (timer, state) in &cases {
            for from in 0..70 {
                let v = verdict(timer, state, t(from), London).unwrap();
                let end = v.holds_until.map_or(t(90), |u| u.min(t(90)));
                assert!(end > t(from), "{timer:?} at {from}: holds until {end}");
                let mut now = t(from);
                while now < end {
                    assert_eq!(decide_at(timer, state, now), v.decision, "{timer:?} {now}");
                    now += TimeDelta::seconds(20);
                }
                if let Some(until) = v.holds_until {
                    assert_ne!(
                        decide_at(timer, state, until),
                        v.decision,
                        "{timer:?} from {from}: still the same at {until}"
                    );
                }
            }
        }
        // A cron timer never armed counts from now: its verdict holds only now.
        let unarmed = cron(TimerKind::Sweep, "*/15 * * * *");
        let v = verdict(&unarmed, &TimerState::default(), t(5), London).unwrap();
        assert_eq!(v.holds_until, Some(t(5)));
    }

    fn decide_at(timer: &Timer, state: &TimerState, now: DateTime<Utc>) -> Decision {
        decide(timer, state, now, London).unwrap()
    }

    #[test]
    fn oldest_unsettled_is_the_first_missed_due_time_even_while_a_retry_waits() {
        let oldest = |timer: &Timer, state: &TimerState, now| {
            oldest_unsettled(timer, state, now, London).unwrap()
        };
        // A sweep every 10 minutes, armed at t(0), last fired for t(10).
        let mut sweep = cron(TimerKind::Sweep, "*/10 * * * *");
        assert_eq!(oldest(&sweep, &armed(t(0)), t(5)), None, "nothing due yet");
        assert_eq!(oldest(&sweep, &armed(t(0)), t(25)), Some(t(10)));
        sweep.last_fired = Some(t(10));
        assert_eq!(oldest(&sweep, &armed(t(0)), t(15)), None);
        let failing = TimerState {
            attempts: 3,
            retry_at: Some(t(40)),
            ..armed(t(0))
        };
        assert_eq!(
            oldest(&sweep, &failing, t(35)),
            Some(t(20)),
            "a failing sweep waiting for its retry is behind"
        );
        let once = at(TimerKind::Expiry, t(30));
        assert_eq!(oldest(&once, &TimerState::default(), t(29)), None);
        assert_eq!(oldest(&once, &TimerState::default(), t(31)), Some(t(30)));
        let fired = Timer {
            last_fired: Some(t(30)),
            ..once
        };
        assert_eq!(oldest(&fired, &TimerState::default(), t(90)), None, "spent");
    }

    #[test]
    fn a_deadline_is_not_due_before_it_and_due_from_it() {
        let timer = at(TimerKind::Expiry, t(30));
        let state = TimerState::default();
        assert_eq!(decide_at(&timer, &state, t(29)), Decision::Wait(t(30)));
        let fire = Decision::Fire(Firing {
            due: t(30),
            collapsed: 1,
        });
        assert_eq!(decide_at(&timer, &state, t(30)), fire);
        assert_eq!(
            next_due(&timer, &state, t(10), London).unwrap(),
            Some(t(30))
        );
    }

    #[test]
    fn an_expiry_missed_during_downtime_runs_once() {
        let mut timer = at(TimerKind::Expiry, t(30));
        let state = TimerState::default();
        assert_eq!(
            decide_at(&timer, &state, t(600)),
            Decision::Fire(Firing {
                due: t(30),
                collapsed: 1
            })
        );
        timer.last_fired = Some(t(30));
        assert_eq!(decide_at(&timer, &state, t(601)), Decision::Spent);
        assert_eq!(next_due(&timer, &state, t(601), London).unwrap(), None);
    }

    #[test]
    fn a_sweep_that_missed_several_ticks_runs_once_then_waits_for_the_next() {
        let mut timer = cron(TimerKind::Sweep, "*/10 * * * *");
        let state = armed(t(0));
        // Down from t(0) to t(55): ticks at 10, 20, 30, 40, 50 were missed.
        let Decision::Fire(firing) = decide_at(&timer, &state, t(55)) else {
            panic!("a missed sweep must run");
        };
        assert_eq!(firing.due, t(50), "for the latest tick");
        assert_eq!(firing.collapsed, 5);
        timer.last_fired = Some(firing.due);
        assert_eq!(decide_at(&timer, &state, t(55)), Decision::Wait(t(60)));
    }

    #[test]
    fn missed_reminders_are_collapsed_into_one_with_their_count() {
        let timer = cron(TimerKind::Reminder, "*/30 * * * *");
        let state = armed(t(1));
        assert_eq!(decide_at(&timer, &state, t(29)), Decision::Wait(t(30)));
        assert_eq!(
            decide_at(&timer, &state, t(30)),
            Decision::Fire(Firing {
                due: t(30),
                collapsed: 1
            }),
            "on time it stands for itself"
        );
        assert_eq!(
            decide_at(&timer, &state, t(100)),
            Decision::Fire(Firing {
                due: t(90),
                collapsed: 3
            }),
            "30, 60 and 90 were missed"
        );
    }

    #[test]
    fn a_cron_timer_counts_from_when_it_last_fired_not_from_arming() {
        let timer = Timer {
            last_fired: Some(t(60)),
            ..cron(TimerKind::Reminder, "*/30 * * * *")
        };
        let Decision::Fire(firing) = decide_at(&timer, &armed(t(-1)), t(125)) else {
            panic!("due");
        };
        assert_eq!((firing.due, firing.collapsed), (t(120), 2));
    }

    #[test]
    fn a_passed_warning_is_sent_while_its_deadline_is_ahead() {
        let timer = Timer {
            payload: json!({ DEADLINE_KEY: t(120), "before": "30m" }),
            ..at(TimerKind::Warning, t(90))
        };
        assert_eq!(warning_deadline(&timer), Some(t(120)));
        assert_eq!(
            decide_at(&timer, &TimerState::default(), t(100)),
            Decision::Fire(Firing {
                due: t(90),
                collapsed: 1
            })
        );
    }

    #[test]
    fn a_passed_warning_is_skipped_once_its_deadline_has_passed_too() {
        let timer = Timer {
            payload: json!({ DEADLINE_KEY: t(120) }),
            ..at(TimerKind::Warning, t(90))
        };
        let skip = Decision::Skip {
            due: t(90),
            reason: SkipReason::DeadlinePassed { deadline: t(120) },
        };
        assert_eq!(decide_at(&timer, &TimerState::default(), t(120)), skip);
        let recorded = TimerState {
            last_skipped: Some(t(90)),
            ..TimerState::default()
        };
        assert_eq!(decide_at(&timer, &recorded, t(121)), Decision::Spent);
        // Without a deadline there is nothing to compare: it is sent.
        let bare = at(TimerKind::Warning, t(90));
        assert!(matches!(
            decide_at(&bare, &TimerState::default(), t(500)),
            Decision::Fire(_)
        ));
    }

    #[test]
    fn nothing_runs_before_the_retry_time() {
        let timer = at(TimerKind::Expiry, t(30));
        let state = TimerState {
            attempts: 2,
            retry_at: Some(t(31)),
            ..TimerState::default()
        };
        assert_eq!(decide_at(&timer, &state, t(30)), Decision::Wait(t(31)));
        assert!(matches!(
            decide_at(&timer, &state, t(31)),
            Decision::Fire(_)
        ));
    }

    #[test]
    fn a_cron_timer_collapses_across_the_march_change() {
        // Daily 01:30 London, down from 27 to 31 March 2026 (clocks forward on the 29th):
        // 28th, 29th (at the change), 30th and 31st are four missed days, not three.
        let timer = cron(TimerKind::Reminder, "30 1 * * *");
        let from = Utc.with_ymd_and_hms(2026, 3, 27, 12, 0, 0).unwrap();
        let until = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        let Decision::Fire(firing) = decide_at(&timer, &armed(from), until) else {
            panic!("due");
        };
        assert_eq!(firing.collapsed, 4);
        assert_eq!(
            firing.due,
            Utc.with_ymd_and_hms(2026, 3, 31, 0, 30, 0).unwrap()
        );
    }

    #[test]
    fn next_due_steps_through_the_october_change_without_a_double() {
        let mut timer = cron(TimerKind::Reminder, "30 1 * * *");
        let state = armed(Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap());
        let mut seen = Vec::new();
        let mut now = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        for _ in 0..2 {
            let due = next_due(&timer, &state, now, London).unwrap().unwrap();
            now = due;
            let Decision::Fire(firing) = decide_at(&timer, &state, now) else {
                panic!("due at its own next due time");
            };
            seen.push(firing.due);
            timer.last_fired = Some(firing.due);
        }
        assert_eq!(
            seen,
            vec![
                Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 10, 26, 1, 30, 0).unwrap(),
            ]
        );
    }

    #[test]
    fn bad_cron_and_zone_are_errors_not_panics() {
        let timer = cron(TimerKind::Reminder, "nonsense");
        assert!(matches!(
            decide(&timer, &TimerState::default(), t(0), London),
            Err(TimerError::Cron { .. })
        ));
        let timer = Timer {
            schedule: Schedule::Cron {
                expr: "0 9 * * *".into(),
                tz: "Mars/Olympus".into(),
            },
            ..timer
        };
        assert!(matches!(
            decide(&timer, &TimerState::default(), t(0), London),
            Err(TimerError::TimeZone { .. })
        ));
    }
}
