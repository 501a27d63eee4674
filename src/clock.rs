//! The injectable clock. Everything time-based reads a [`Clock`], so tests can move
//! time and the scheduler can notice clock jumps.

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock moved by a fixed offset: fault injection for the tests (a clock
/// jump, a command that looks old), set with `CORDON_CLOCK_SKEW_SECS`. Only in a build
/// with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy)]
pub struct SkewedClock {
    /// Added to the system time (may be negative).
    pub skew: chrono::TimeDelta,
}

#[cfg(feature = "test-hooks")]
impl Clock for SkewedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.skew
    }
}

/// The environment variable that skews the bot's clock (seconds, may be negative). Only
/// in a build with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub const SKEW_VAR: &str = "CORDON_CLOCK_SKEW_SECS";

/// The clock `cordon run` uses: the system clock, skewed when [`SKEW_VAR`] is set (a
/// build with the `test-hooks` feature only).
#[cfg(feature = "test-hooks")]
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    match std::env::var(SKEW_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(chrono::TimeDelta::try_seconds)
    {
        Some(skew) if skew != chrono::TimeDelta::zero() => {
            tracing::warn!(skew_secs = skew.num_seconds(), "clock skew injected");
            std::sync::Arc::new(SkewedClock { skew })
        }
        _ => std::sync::Arc::new(SystemClock),
    }
}

/// The clock `cordon run` uses: the system clock. This build has no `test-hooks`
/// feature, so nothing in the environment can move it.
#[cfg(not(feature = "test-hooks"))]
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    std::sync::Arc::new(SystemClock)
}

#[cfg(all(test, feature = "test-hooks"))]
mod tests {
    use super::*;

    #[test]
    fn skewed_clock_is_ahead_by_its_skew() {
        let c = SkewedClock {
            skew: chrono::TimeDelta::hours(2),
        };
        let d = c.now() - SystemClock.now();
        assert!(d > chrono::TimeDelta::minutes(119) && d <= chrono::TimeDelta::hours(2));
    }
}
