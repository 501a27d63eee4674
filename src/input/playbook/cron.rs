//! Reminder schedules: standard 5-field cron (optionally with a leading seconds field),
//! compiled with the `cron` crate, which wants 6 or 7 fields with seconds first.
//!
//! Two traps are closed here:
//! - numeric weekdays mean different days in different cron dialects (`1` is Monday in
//!   Vixie cron but Sunday in the `cron` crate), so weekdays must be written as names;
//! - a schedule that fires more than once a minute would spam clinicians, so it is
//!   refused.

use std::fmt;
use std::str::FromStr;

use cron::{Schedule, TimeUnitSpec};

/// A compiled reminder schedule that remembers how it was written.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    source: String,
    schedule: Schedule,
}

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not 5 or 6 fields.
    #[error(
        "cron needs 5 fields `minute hour day-of-month month day-of-week` (or 6 with a \
         leading seconds field), found {0}"
    )]
    FieldCount(usize),
    /// A number in the day-of-week field.
    #[error(
        "write days of the week as names (`MON`, `MON-FRI`, `SAT,SUN`), not numbers: \
         cron dialects disagree on which day `{0}` is"
    )]
    NumericWeekday(String),
    /// The `cron` crate's parser refused it.
    #[error("invalid cron expression: {0}")]
    Syntax(String),
    /// More than once a minute.
    #[error(
        "fires more than once a minute ({0} times); reminders that often would flood the \
         room: use a single seconds value such as `0`"
    )]
    TooFrequent(u32),
    /// Never fires (e.g. 30 February).
    #[error("never fires (no such date)")]
    Never,
}

impl CronSchedule {
    /// Parses a 5- or 6-field expression.
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let full = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 => fields.join(" "),
            n => return Err(CronError::FieldCount(n)),
        };
        if let Some(weekday) = fields.last()
            && weekday.chars().any(|c| c.is_ascii_digit())
            && !weekday.starts_with("*/")
        {
            return Err(CronError::NumericWeekday((*weekday).to_owned()));
        }
        let schedule = Schedule::from_str(&full).map_err(|e| {
            // The crate echoes the 6-field expression and a caret; keep only the reason.
            let text = e.to_string();
            let reason = text.rsplit('^').next().unwrap_or(&text).trim();
            CronError::Syntax(
                reason
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect(),
            )
        })?;
        let per_minute = schedule.seconds().count();
        if per_minute > 1 {
            return Err(CronError::TooFrequent(per_minute));
        }
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(CronError::Never);
        }
        Ok(Self {
            source: expr.to_owned(),
            schedule,
        })
    }

    /// The expression as written in the playbook.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled schedule (6 fields, seconds first). Evaluate it in the config's
    /// time zone: `schedule().after(&now.with_timezone(&tz))`.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn five_fields_get_a_zero_seconds_field() {
        let s = CronSchedule::parse("*/30 * * * *").unwrap();
        assert_eq!(s.source(), "*/30 * * * *");
        let start = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 7).unwrap();
        let next: Vec<_> = s.schedule().after(&start).take(2).collect();
        assert_eq!((next[0].minute(), next[0].second()), (30, 0));
        assert_eq!((next[1].hour(), next[1].minute()), (11, 0));
    }

    #[test]
    fn six_fields_with_seconds_are_accepted() {
        assert!(CronSchedule::parse("0 */30 * * * *").is_ok());
        assert!(CronSchedule::parse("0 0 8 * * MON-FRI").is_ok());
    }

    #[test]
    fn wrong_field_counts() {
        assert_eq!(
            CronSchedule::parse("* * * *").unwrap_err(),
            CronError::FieldCount(4)
        );
        assert_eq!(
            CronSchedule::parse("0 0 * * * * 2030").unwrap_err(),
            CronError::FieldCount(7)
        );
        assert_eq!(
            CronSchedule::parse("").unwrap_err(),
            CronError::FieldCount(0)
        );
    }

    #[test]
    fn more_than_once_a_minute_is_refused() {
        assert_eq!(
            CronSchedule::parse("* * * * * *").unwrap_err(),
            CronError::TooFrequent(60)
        );
        assert!(matches!(
            CronSchedule::parse("*/10 * * * * *").unwrap_err(),
            CronError::TooFrequent(6)
        ));
        assert!(CronSchedule::parse("* * * * *").is_ok());
    }

    #[test]
    fn numeric_weekdays_and_bad_syntax_are_refused() {
        assert!(matches!(
            CronSchedule::parse("0 9 * * 1").unwrap_err(),
            CronError::NumericWeekday(_)
        ));
        assert!(matches!(
            CronSchedule::parse("61 * * * *").unwrap_err(),
            CronError::Syntax(_)
        ));
        assert!(matches!(
            CronSchedule::parse("0 0 30 FEB *").unwrap_err(),
            CronError::Never
        ));
    }
}
