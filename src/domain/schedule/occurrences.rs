//! When a cron schedule fires, as instants, in an IANA time zone, with daylight-saving
//! changes handled so that no firing is skipped or doubled.
//!
//! The `cron` crate evaluated in a zone drops a wall-clock time that does not exist (a
//! daily `30 1 * * *` would not fire on the day the clocks go forward in London). So
//! the schedule is evaluated on wall-clock times, and each wall-clock time is mapped to
//! an instant here:
//!
//! - **Clocks go forward** (01:00 to 02:00 in London in March): a wall-clock time in
//!   the missing hour fires at the change itself (02:00 BST), like Vixie cron's "run
//!   soon after the change". Several missing times fold into that one firing, which
//!   also absorbs a firing scheduled for the change's own instant.
//! - **Clocks go back** (02:00 to 01:00 in October): a repeated wall-clock time fires
//!   once, at its first occurrence, when the schedule names fixed hours (`30 1 * * *`).
//!   A schedule whose hour field is `*` (every 30 minutes, hourly) runs by elapsed time
//!   instead, in both passes of the repeated hour, as Vixie cron does for wildcards,
//!   so a half-hourly reminder does not fall silent for 90 minutes.

use std::collections::BTreeSet;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use cron::TimeUnitSpec;

use crate::input::playbook::cron::CronSchedule;

/// An instant is at most this far before its wall-clock time (UTC+14, with a margin).
const MAX_AHEAD: TimeDelta = TimeDelta::hours(15);
/// An instant is at most this far after its wall-clock time (UTC−12, with a margin).
const MAX_BEHIND: TimeDelta = TimeDelta::hours(13);
/// The longest gap searched for the end of (a day skipped by Samoa in 2011, doubled).
const MAX_GAP_MINUTES: i64 = 48 * 60;

/// The instants at which `schedule` fires in `tz` strictly after `after`, in increasing
/// order, without duplicates.
pub fn occurrences_after(
    schedule: &CronSchedule,
    tz: Tz,
    after: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    // Wall-clock times are carried as `DateTime<Utc>` so that the cron crate iterates
    // them without any zone rules of its own.
    let start = Utc.from_utc_datetime(
        &after
            .naive_utc()
            .checked_sub_signed(MAX_BEHIND)
            .unwrap_or(NaiveDateTime::MIN),
    );
    Occurrences {
        wall: schedule.schedule().after(&start),
        tz,
        by_elapsed_time: schedule.schedule().hours().count() == 24,
        pending: BTreeSet::new(),
        last: after,
        pulled: None,
        exhausted: false,
    }
}

struct Occurrences<'a> {
    wall: cron::ScheduleIterator<'a, Utc>,
    tz: Tz,
    by_elapsed_time: bool,
    /// Instants mapped from the wall-clock times pulled so far, not yet returned.
    pending: BTreeSet<DateTime<Utc>>,
    /// The last instant returned (or the lower bound).
    last: DateTime<Utc>,
    /// The latest wall-clock time pulled.
    pulled: Option<NaiveDateTime>,
    exhausted: bool,
}

impl Occurrences<'_> {
    /// True when no wall-clock time still to be pulled can map before `instant`.
    fn settled(&self, instant: DateTime<Utc>) -> bool {
        self.exhausted
            || self
                .pulled
                .and_then(|wall| wall.checked_sub_signed(MAX_AHEAD))
                .is_some_and(|bound| instant <= Utc.from_utc_datetime(&bound))
    }

    fn pull(&mut self) {
        match self.wall.next() {
            None => self.exhausted = true,
            Some(wall) => {
                let wall = wall.naive_utc();
                self.pulled = Some(wall);
                for instant in instants(self.tz, wall, self.by_elapsed_time) {
                    if instant > self.last {
                        self.pending.insert(instant);
                    }
                }
            }
        }
    }
}

impl Iterator for Occurrences<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        loop {
            if let Some(&first) = self.pending.first()
                && self.settled(first)
            {
                self.pending.remove(&first);
                self.last = first;
                return Some(first);
            }
            if self.exhausted {
                return None;
            }
            self.pull();
        }
    }
}

/// The instants a wall-clock time stands for in `tz` (see the module doc).
fn instants(tz: Tz, wall: NaiveDateTime, by_elapsed_time: bool) -> Vec<DateTime<Utc>> {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(at) => vec![at.with_timezone(&Utc)],
        LocalResult::Ambiguous(first, second) if by_elapsed_time => {
            vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
        }
        LocalResult::Ambiguous(first, _) => vec![first.with_timezone(&Utc)],
        LocalResult::None => gap_end(tz, wall).into_iter().collect(),
    }
}

/// The instant the clocks went forward past `wall`, a time inside the gap: the first
/// whole wall-clock minute after it that exists.
fn gap_end(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let minute = wall.with_second(0)?.with_nanosecond(0)?;
    (1..=MAX_GAP_MINUTES).find_map(|k| {
        let wall = minute.checked_add_signed(TimeDelta::minutes(k))?;
        tz.from_local_datetime(&wall)
            .earliest()
            .map(|at| at.with_timezone(&Utc))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use chrono_tz::Europe::London;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn firings(expr: &str, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let schedule = CronSchedule::parse(expr).unwrap();
        occurrences_after(&schedule, London, from)
            .take_while(|at| *at <= until)
            .collect()
    }

    #[test]
    fn ordinary_days_follow_the_zone() {
        // 09:00 London is 09:00 UTC in winter and 08:00 UTC in summer.
        let got = firings("0 9 * * *", utc(2026, 1, 10, 0, 0), utc(2026, 1, 11, 23, 0));
        assert_eq!(got, vec![utc(2026, 1, 10, 9, 0), utc(2026, 1, 11, 9, 0)]);
        let got = firings("0 9 * * *", utc(2026, 7, 10, 0, 0), utc(2026, 7, 10, 23, 0));
        assert_eq!(got, vec![utc(2026, 7, 10, 8, 0)]);
    }

    #[test]
    fn march_change_neither_skips_nor_doubles_a_daily_time_in_the_missing_hour() {
        // 29 March 2026: 01:00 GMT becomes 02:00 BST, so 01:30 does not exist that day.
        let got = firings(
            "30 1 * * *",
            utc(2026, 3, 28, 0, 0),
            utc(2026, 3, 30, 23, 0),
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 28, 1, 30), // 01:30 GMT
                utc(2026, 3, 29, 1, 0),  // at the change, 02:00 BST
                utc(2026, 3, 30, 0, 30), // 01:30 BST
            ]
        );
    }

    #[test]
    fn march_change_keeps_a_half_hourly_schedule_every_thirty_minutes() {
        let got = firings(
            "*/30 * * * *",
            utc(2026, 3, 29, 0, 0),
            utc(2026, 3, 29, 2, 0),
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 29, 0, 30),
                utc(2026, 3, 29, 1, 0), // 01:00 and 01:30 GMT are folded into 02:00 BST
                utc(2026, 3, 29, 1, 30),
                utc(2026, 3, 29, 2, 0),
            ]
        );
    }

    #[test]
    fn october_change_fires_a_repeated_daily_time_once() {
        // 25 October 2026: 02:00 BST becomes 01:00 GMT, so 01:30 happens twice.
        let got = firings(
            "30 1 * * *",
            utc(2026, 10, 24, 0, 0),
            utc(2026, 10, 26, 23, 0),
        );
        assert_eq!(
            got,
            vec![
                utc(2026, 10, 24, 0, 30), // 01:30 BST
                utc(2026, 10, 25, 0, 30), // the first 01:30 (BST) only
                utc(2026, 10, 26, 1, 30), // 01:30 GMT
            ]
        );
    }

    #[test]
    fn october_change_runs_a_half_hourly_schedule_through_both_passes() {
        let got = firings(
            "*/30 * * * *",
            utc(2026, 10, 24, 23, 0),
            utc(2026, 10, 25, 2, 0),
        );
        let want: Vec<_> = (1..=6)
            .map(|k| utc(2026, 10, 24, 23, 0) + TimeDelta::minutes(30 * k))
            .collect();
        assert_eq!(got, want, "every 30 elapsed minutes, none doubled");
    }

    #[test]
    fn starting_inside_the_repeated_hour_does_not_go_back() {
        // 01:10 GMT, in the second pass: the fixed 01:30 already fired in the first.
        let got = firings(
            "30 1 * * *",
            utc(2026, 10, 25, 1, 10),
            utc(2026, 10, 26, 23, 0),
        );
        assert_eq!(got, vec![utc(2026, 10, 26, 1, 30)]);
    }
}
