//! How long a failed job waits before its next attempt: exponential, capped, and
//! deterministic (no jitter), so tests can assert the sequence and an operator can
//! predict it. One cordon runs per homeserver, so there is no herd to spread out.

use chrono::TimeDelta;

/// Exponential backoff: `base` after the first failure, doubling, never above `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub base: TimeDelta,
    /// The longest wait.
    pub cap: TimeDelta,
}

impl Default for Backoff {
    /// 5 s, doubling, capped at 5 min.
    fn default() -> Self {
        Self {
            base: TimeDelta::seconds(5),
            cap: TimeDelta::minutes(5),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1 for the first failure; 0 is
    /// treated as 1): `base × 2^(attempt−1)`, at most `cap`.
    pub fn delay(&self, attempt: u32) -> TimeDelta {
        let mut wait = self.base;
        for _ in 1..attempt {
            match wait.checked_add(&wait) {
                Some(doubled) if doubled < self.cap => wait = doubled,
                _ => return self.cap,
            }
        }
        wait.min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_five_seconds_to_a_five_minute_cap() {
        let b = Backoff::default();
        let secs: Vec<i64> = (1..=9).map(|n| b.delay(n).num_seconds()).collect();
        assert_eq!(secs, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(b.delay(0), b.delay(1));
        assert_eq!(b.delay(u32::MAX), TimeDelta::minutes(5));
    }
}
