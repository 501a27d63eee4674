//! A wall clock for the scheduler's tests, in [`crate::clock`]'s style: it follows
//! tokio's (paused) time from a chosen start, and a test can jump it, as a changed
//! system clock or a suspend would.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

use crate::clock::Clock;

/// Wall time = `start` + tokio time elapsed since creation + every jump so far.
#[derive(Debug)]
pub struct ManualClock {
    start: DateTime<Utc>,
    origin: Instant,
    jumped: Mutex<TimeDelta>,
}

impl ManualClock {
    /// A clock reading `start` now.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            start,
            origin: Instant::now(),
            jumped: Mutex::new(TimeDelta::zero()),
        }
    }

    /// Moves the wall clock by `by` (may be negative) without moving tokio's time.
    pub fn jump(&self, by: TimeDelta) {
        let mut jumped = self.jumped.lock().unwrap_or_else(|e| e.into_inner());
        *jumped += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.origin.elapsed()).unwrap_or(TimeDelta::MAX);
        let jumped = *self.jumped.lock().unwrap_or_else(|e| e.into_inner());
        self.start + elapsed + jumped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_time_and_jumps() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(std::time::Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + TimeDelta::seconds(90));
        clock.jump(TimeDelta::hours(2));
        assert_eq!(
            clock.now(),
            start + TimeDelta::seconds(90) + TimeDelta::hours(2)
        );
    }
}
