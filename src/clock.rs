//! The injectable clock. Everything time-based reads a [`Clock`], so tests can move
//! time and the scheduler can notice clock jumps.
//!
//! A build with the `test-hooks` feature has two more: [`SkewedClock`], moved by a fixed
//! offset at start (`CORDON_CLOCK_SKEW_SECS`), and [`MovableClock`], which a test moves
//! while the bot runs by writing a file (`CORDON_CLOCK_FILE`), so that the end-to-end
//! tests move past an expiry, a retention window or a cron firing instead of waiting
//! for it. Without the feature neither exists and no variable is read.

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// A receiver that changes each time this clock is moved other than by the passing
    /// of time, so that whoever sleeps until a time by it (the scheduler) looks again at
    /// once. `None`, the default, for a clock that only runs.
    fn moves(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
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

/// The environment variable naming the file that moves a running bot's clock (a
/// [`Setting`] in its text form). Only in a build with the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub const FILE_VAR: &str = "CORDON_CLOCK_FILE";

#[cfg(feature = "test-hooks")]
pub use movable::{MOVED, MovableClock, Setting};

#[cfg(feature = "test-hooks")]
mod movable {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, Weak};
    use std::time::Duration;

    use chrono::{DateTime, TimeDelta, Utc};
    use tokio::sync::watch;

    use super::Clock;

    /// How often the file is read. A test waits for the bot to log the move
    /// ([`MOVED`]) rather than for this.
    const POLL: Duration = Duration::from_millis(20);

    /// What the bot logs, followed by the setting's text, once it reads a new setting.
    pub const MOVED: &str = "test clock moved to";

    /// Where a [`MovableClock`] stands.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Setting {
        /// The system clock plus this (may be negative): the clock runs.
        Offset(TimeDelta),
        /// This instant: the clock stands still until it is set again, so a test can put
        /// a cut-off exactly between two messages.
        Frozen(DateTime<Utc>),
    }

    impl Setting {
        /// The time by this setting.
        pub fn now(&self) -> DateTime<Utc> {
            match *self {
                Setting::Offset(by) => Utc::now() + by,
                Setting::Frozen(at) => at,
            }
        }
    }

    /// The file's text: `offset MILLISECONDS` or `frozen MILLISECONDS-SINCE-THE-EPOCH`.
    impl std::fmt::Display for Setting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Setting::Offset(by) => write!(f, "offset {}", by.num_milliseconds()),
                Setting::Frozen(at) => write!(f, "frozen {}", at.timestamp_millis()),
            }
        }
    }

    impl std::str::FromStr for Setting {
        type Err = String;

        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let bad = || format!("not a clock setting (`offset MS` or `frozen MS`): {s:?}");
            let (kind, ms) = s.trim().split_once(' ').ok_or_else(bad)?;
            let ms: i64 = ms.trim().parse().map_err(|_| bad())?;
            match kind {
                "offset" => TimeDelta::try_milliseconds(ms)
                    .map(Setting::Offset)
                    .ok_or_else(bad),
                "frozen" => DateTime::from_timestamp_millis(ms)
                    .map(Setting::Frozen)
                    .ok_or_else(bad),
                _ => Err(bad()),
            }
        }
    }

    /// A clock a test moves while the bot runs, by writing a [`Setting`] into a file.
    /// A thread reads the file every few milliseconds; each new setting is logged
    /// ([`MOVED`]) and wakes whoever watches [`Clock::moves`].
    #[derive(Debug)]
    pub struct MovableClock {
        setting: Mutex<Setting>,
        moves: watch::Sender<()>,
    }

    impl MovableClock {
        /// A clock at `initial` until `file` says otherwise; the thread reading the
        /// file ends when the clock is dropped.
        pub fn watch(file: &Path, initial: Setting) -> Arc<Self> {
            let clock = Arc::new(Self {
                setting: Mutex::new(read(file).unwrap_or(initial)),
                moves: watch::Sender::new(()),
            });
            let weak = Arc::downgrade(&clock);
            let file = file.to_path_buf();
            let spawned = std::thread::Builder::new()
                .name("test-clock".into())
                .spawn(move || poll(&weak, &file));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the test clock's reader");
            }
            clock
        }

        /// Where the clock stands.
        pub fn setting(&self) -> Setting {
            *self.setting.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Moves the clock to `setting` (what the file's reader does).
        pub fn set(&self, setting: Setting) {
            let mut current = self.setting.lock().unwrap_or_else(|e| e.into_inner());
            if *current != setting {
                *current = setting;
                drop(current);
                tracing::info!(%setting, "{MOVED} {setting}");
                self.moves.send_replace(());
            }
        }
    }

    impl Clock for MovableClock {
        fn now(&self) -> DateTime<Utc> {
            self.setting().now()
        }

        fn moves(&self) -> Option<watch::Receiver<()>> {
            Some(self.moves.subscribe())
        }
    }

    fn read(file: &Path) -> Option<Setting> {
        std::fs::read_to_string(file).ok()?.parse().ok()
    }

    fn poll(clock: &Weak<MovableClock>, file: &PathBuf) {
        let mut last_bad = None;
        loop {
            std::thread::sleep(POLL);
            let Some(clock) = clock.upgrade() else { return };
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            match text.parse::<Setting>() {
                Ok(setting) => clock.set(setting),
                Err(e) if last_bad.as_ref() != Some(&text) => {
                    tracing::warn!(error = %e, "test clock file ignored");
                    last_bad = Some(text);
                }
                Err(_) => {}
            }
        }
    }
}

/// The clock `cordon run` uses: the system clock, skewed when [`SKEW_VAR`] is set, and
/// movable while it runs when [`FILE_VAR`] names a file (a build with the `test-hooks`
/// feature only).
#[cfg(feature = "test-hooks")]
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    let skew = std::env::var(SKEW_VAR)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(chrono::TimeDelta::try_seconds)
        .filter(|skew| *skew != chrono::TimeDelta::zero());
    if let Some(file) = std::env::var_os(FILE_VAR) {
        let initial = Setting::Offset(skew.unwrap_or_else(chrono::TimeDelta::zero));
        let clock = MovableClock::watch(std::path::Path::new(&file), initial);
        tracing::warn!(setting = %clock.setting(), "movable test clock injected");
        return clock;
    }
    match skew {
        Some(skew) => {
            tracing::warn!(skew_secs = skew.num_seconds(), "clock skew injected");
            std::sync::Arc::new(SkewedClock { skew })
        }
        None => std::sync::Arc::new(SystemClock),
    }
}

/// The clock `cordon run` uses: the system clock. This build has no `test-hooks`
/// feature, so nothing in the environment can move it.
#[cfg(not(feature = "test-hooks"))]
pub fn from_env() -> std::sync::Arc<dyn Clock> {
    std::sync::Arc::new(SystemClock)
}

#[cfg(all(test, feature = "test-hooks"))]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn skewed_clock_is_ahead_by_its_skew() {
        let c = SkewedClock {
            skew: chrono::TimeDelta::hours(2),
        };
        let d = c.now() - SystemClock.now();
        assert!(d > chrono::TimeDelta::minutes(119) && d <= chrono::TimeDelta::hours(2));
    }

    #[test]
    fn a_setting_reads_back_from_its_text() {
        let at = DateTime::from_timestamp_millis(1_767_225_600_123).unwrap();
        for s in [
            Setting::Offset(TimeDelta::milliseconds(-90_500)),
            Setting::Offset(TimeDelta::hours(2)),
            Setting::Frozen(at),
        ] {
            assert_eq!(s.to_string().parse::<Setting>(), Ok(s));
        }
        for bad in ["", "offset", "offset x", "later 5", "frozen 1e3"] {
            assert!(bad.parse::<Setting>().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_movable_clock_follows_its_file_and_says_when_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clock");
        let clock = MovableClock::watch(&file, Setting::Offset(TimeDelta::zero()));
        let mut moves = clock.moves().unwrap();
        let d = clock.now() - Utc::now();
        assert!(d.abs() < TimeDelta::seconds(5), "{d}");

        let at = DateTime::from_timestamp_millis(1_767_225_600_000).unwrap();
        std::fs::write(&file, Setting::Frozen(at).to_string()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), moves.changed())
            .await
            .expect("the move is signalled")
            .unwrap();
        assert_eq!(clock.now(), at);
        assert_eq!(clock.now(), at, "a frozen clock stands still");

        std::fs::write(&file, Setting::Offset(TimeDelta::days(31)).to_string()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), moves.changed())
            .await
            .expect("the move is signalled")
            .unwrap();
        let d = clock.now() - Utc::now();
        assert!(d > TimeDelta::days(30), "{d}");
    }
}
