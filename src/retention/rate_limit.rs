//! Honouring the homeserver's rate limits (HTTP 429, `M_LIMIT_EXCEEDED`).
//!
//! # What matrix-sdk 0.18 does on its own
//!
//! With the default `RequestConfig` (cordon's bot client), matrix-sdk retries a
//! request that failed with `M_LIMIT_EXCEEDED` itself, forever in count but within a
//! 15-minute total budget: it waits the server's delay when the error carries one as a
//! duration (`retry_after_ms`, or a `Retry-After: <seconds>` header, which ruma prefers
//! over the body), and otherwise an exponential backoff from 0.5 s to 60 s. It ignores
//! a `Retry-After` given as an HTTP date, retries 5xx answers the same way, and every
//! concurrent request waits and retries on its own, so k requests in flight hit the
//! limit k times per window.
//!
//! # What the sweep does instead
//!
//! The sweep's requests go out with matrix-sdk's retries disabled, and pass through a
//! [`RateGate`] shared by every request of one sweep:
//!
//! - on a 429, every request of the sweep waits until the server's `Retry-After` (a
//!   delay or a date; [`RetryPolicy::wait`]), and from then on requests go one at a
//!   time, so a backlog of thousands is drained at the server's pace instead of
//!   hammering it;
//! - a 429 without a delay waits an exponential backoff (1 s, doubling, at most 60 s),
//!   and no wait is shorter than 100 ms: never a hot loop;
//! - one request limited [`RetryPolicy::max_attempts`] times in a row, or told to wait
//!   longer than [`RetryPolicy::max_wait`], ends the sweep with
//!   [`super::SweepError::RateLimited`]; the progress made so far is kept, and the
//!   scheduler retries later;
//! - any other error ends the sweep at once (the scheduler retries with backoff).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use matrix_sdk::HttpError;
use matrix_sdk::ruma::api::error::{ErrorKind, RetryAfter};
use tokio::time::Instant;
use tracing::warn;

/// How long to wait after a 429, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// No wait is shorter than this, whatever the server says (never a hot loop).
    pub min_wait: Duration,
    /// A server asking for a longer wait than this ends the sweep instead.
    pub max_wait: Duration,
    /// The first wait when the server gives no delay; it doubles each time.
    pub fallback_first: Duration,
    /// The longest wait when the server gives no delay.
    pub fallback_max: Duration,
    /// How many 429s in a row one request may meet before the sweep gives up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(600),
            fallback_first: Duration::from_secs(1),
            fallback_max: Duration::from_secs(60),
            max_attempts: 50,
        }
    }
}

/// Why the sweep stopped waiting for a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// One request was limited too many times in a row.
    #[error("rate limited {attempts} times in a row")]
    TooManyAttempts {
        /// The 429s met.
        attempts: u32,
    },
    /// The server asked for a wait longer than the policy allows.
    #[error("the homeserver asked to wait {asked:?}, more than {max:?}")]
    WaitTooLong {
        /// The wait asked for.
        asked: Duration,
        /// The longest wait allowed.
        max: Duration,
    },
}

impl RetryPolicy {
    /// The wait before the next attempt of a request that met its `attempt`-th 429 in a
    /// row (from 1), given the server's hint and the current wall-clock time (for a
    /// `Retry-After` date).
    pub fn wait(
        &self,
        hint: Option<RetryAfter>,
        attempt: u32,
        now: SystemTime,
    ) -> Result<Duration, GiveUp> {
        if attempt >= self.max_attempts {
            return Err(GiveUp::TooManyAttempts { attempts: attempt });
        }
        let asked = match hint {
            Some(RetryAfter::Delay(d)) => d,
            Some(RetryAfter::DateTime(at)) => at.duration_since(now).unwrap_or_default(),
            None => {
                let doublings = attempt.saturating_sub(1).min(16);
                self.fallback_first
                    .saturating_mul(1 << doublings)
                    .min(self.fallback_max)
            }
        };
        if asked > self.max_wait {
            return Err(GiveUp::WaitTooLong {
                asked,
                max: self.max_wait,
            });
        }
        Ok(asked.max(self.min_wait))
    }
}

/// Whether an error is a rate limit, and the server's hint if so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Not a rate limit: fail.
    No,
    /// A 429 / `M_LIMIT_EXCEEDED`, with the server's `Retry-After` when it gave one.
    Yes(Option<RetryAfter>),
}

/// Reads a matrix-sdk error: `M_LIMIT_EXCEEDED` (its `Retry-After` header or
/// `retry_after_ms`, as ruma parsed them), or a bare HTTP 429 (a proxy's).
pub fn limit_of(error: &HttpError) -> Limit {
    if let Some(ErrorKind::LimitExceeded(data)) = error.client_api_error_kind() {
        return Limit::Yes(data.retry_after);
    }
    match error.as_client_api_error() {
        Some(e) if e.status_code.as_u16() == 429 => Limit::Yes(None),
        _ => Limit::No,
    }
}

/// The rate-limit state one sweep's requests share.
#[derive(Debug, Default)]
pub struct RateGate {
    policy: RetryPolicy,
    not_before: Mutex<Option<Instant>>,
    limited: AtomicBool,
    lane: tokio::sync::Mutex<()>,
    waits: AtomicU64,
    waited_ms: AtomicU64,
}

/// A request that failed for good.
#[derive(Debug)]
pub enum Failed<E> {
    /// Any error but a rate limit.
    Error(E),
    /// Rate limited beyond the policy.
    RateLimited(GiveUp),
}

impl RateGate {
    /// A gate with this policy.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    /// How many times a request waited for a rate limit.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Total time spent waiting for rate limits (summed over requests).
    pub fn waited(&self) -> Duration {
        Duration::from_millis(self.waited_ms.load(Ordering::Relaxed))
    }

    /// Runs `op` until it succeeds, fails with an error that `limit` says is not a rate
    /// limit, or the policy gives up. Waits for any rate limit another request met, and
    /// once one was met, runs one request at a time.
    pub async fn run<T, E, F, Fut>(
        &self,
        limit: impl Fn(&E) -> Limit,
        mut op: F,
    ) -> Result<T, Failed<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 0u32;
        loop {
            let lane = if self.limited.load(Ordering::Relaxed) {
                Some(self.lane.lock().await)
            } else {
                None
            };
            self.wait_turn().await;
            let result = op().await;
            drop(lane);
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Limit::Yes(hint) = limit(&error) else {
                return Err(Failed::Error(error));
            };
            attempt += 1;
            let wait = self
                .policy
                .wait(hint, attempt, SystemTime::now())
                .map_err(Failed::RateLimited)?;
            warn!(
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "rate limited by the homeserver; waiting as asked"
            );
            self.limited.store(true, Ordering::Relaxed);
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.waited_ms.fetch_add(
                u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            self.push_back(Instant::now() + wait);
        }
    }

    /// Sleeps until no rate limit holds the sweep back.
    async fn wait_turn(&self) {
        loop {
            let until = *self
                .not_before
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    fn push_back(&self, until: Instant) {
        let mut not_before = self
            .not_before
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if not_before.is_none_or(|t| t < until) {
            *not_before = Some(until);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use matrix_sdk::ruma::api::EndpointError;
    use matrix_sdk::ruma::exports::http;

    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        min_wait: Duration::from_millis(100),
        max_wait: Duration::from_secs(600),
        fallback_first: Duration::from_secs(1),
        fallback_max: Duration::from_secs(60),
        max_attempts: 50,
    };

    #[test]
    fn a_delay_is_honoured_but_never_below_the_floor() {
        let now = SystemTime::now();
        let d = |ms| Some(RetryAfter::Delay(Duration::from_millis(ms)));
        assert_eq!(
            POLICY.wait(d(2500), 1, now),
            Ok(Duration::from_millis(2500))
        );
        assert_eq!(POLICY.wait(d(0), 1, now), Ok(Duration::from_millis(100)));
        assert_eq!(
            POLICY.wait(d(700_000), 1, now),
            Err(GiveUp::WaitTooLong {
                asked: Duration::from_millis(700_000),
                max: Duration::from_secs(600)
            })
        );
    }

    #[test]
    fn a_date_is_honoured_and_a_past_date_waits_the_floor() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s| Some(RetryAfter::DateTime(now + Duration::from_secs(s)));
        assert_eq!(POLICY.wait(at(7), 1, now), Ok(Duration::from_secs(7)));
        let past = Some(RetryAfter::DateTime(now - Duration::from_secs(5)));
        assert_eq!(POLICY.wait(past, 1, now), Ok(Duration::from_millis(100)));
    }

    #[test]
    fn without_a_hint_the_wait_doubles_up_to_its_cap() {
        let now = SystemTime::now();
        let waits: Vec<u64> = (1..=8)
            .map(|n| POLICY.wait(None, n, now).unwrap().as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            POLICY.wait(None, 50, now),
            Err(GiveUp::TooManyAttempts { attempts: 50 })
        );
    }

    fn synapse_429(header: Option<&str>, retry_after_ms: Option<u64>) -> HttpError {
        let mut body =
            serde_json::json!({ "errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests" });
        if let Some(ms) = retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        let mut response = http::Response::builder().status(429);
        if let Some(h) = header {
            response = response.header("Retry-After", h);
        }
        let response = response.body(body.to_string().into_bytes()).unwrap();
        let error = matrix_sdk::ruma::api::error::Error::from_http_response(response);
        HttpError::from(matrix_sdk::ruma::api::error::FromHttpResponseError::Server(
            error,
        ))
    }

    #[test]
    fn synapse_429s_are_read_with_their_retry_after() {
        // Synapse 1.163 sends both: the header (whole seconds, rounded up) wins.
        assert_eq!(
            limit_of(&synapse_429(Some("2"), Some(1500))),
            Limit::Yes(Some(RetryAfter::Delay(Duration::from_secs(2))))
        );
        assert_eq!(
            limit_of(&synapse_429(None, Some(1500))),
            Limit::Yes(Some(RetryAfter::Delay(Duration::from_millis(1500))))
        );
        assert_eq!(limit_of(&synapse_429(None, None)), Limit::Yes(None));
        assert!(matches!(
            limit_of(&synapse_429(Some("Wed, 21 Oct 2065 07:28:00 GMT"), None)),
            Limit::Yes(Some(RetryAfter::DateTime(_)))
        ));
    }

    #[test]
    fn other_errors_are_not_rate_limits() {
        let response = http::Response::builder()
            .status(403)
            .body(br#"{"errcode":"M_FORBIDDEN","error":"no"}"#.to_vec())
            .unwrap();
        let error = matrix_sdk::ruma::api::error::Error::from_http_response(response);
        let error = HttpError::from(matrix_sdk::ruma::api::error::FromHttpResponseError::Server(
            error,
        ));
        assert_eq!(limit_of(&error), Limit::No);
        // A proxy's bare 429 is one.
        let response = http::Response::builder()
            .status(429)
            .body(b"<html>slow down</html>".to_vec())
            .unwrap();
        let error = matrix_sdk::ruma::api::error::Error::from_http_response(response);
        let error = HttpError::from(matrix_sdk::ruma::api::error::FromHttpResponseError::Server(
            error,
        ));
        assert_eq!(limit_of(&error), Limit::Yes(None));
    }

    /// A fake request: limited `limited` times (with `hint`), then fine.
    fn limited_then_ok(
        calls: Arc<AtomicU32>,
        limited: u32,
        hint: Option<RetryAfter>,
    ) -> impl FnMut() -> std::future::Ready<Result<u32, Option<RetryAfter>>> {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < limited { Err(hint) } else { Ok(n) })
        }
    }

    fn fake_limit(e: &Option<RetryAfter>) -> Limit {
        Limit::Yes(*e)
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_request_waits_as_asked_then_succeeds() {
        let gate = RateGate::new(POLICY);
        let calls = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let hint = Some(RetryAfter::Delay(Duration::from_secs(3)));
        let got = gate
            .run(fake_limit, limited_then_ok(calls.clone(), 2, hint))
            .await;
        assert_eq!(got.ok(), Some(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(started.elapsed(), Duration::from_secs(6));
        assert_eq!(gate.waits(), 2);
        assert_eq!(gate.waited(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_hint_there_is_no_hot_loop_and_the_gate_gives_up() {
        let policy = RetryPolicy {
            max_attempts: 5,
            ..POLICY
        };
        let gate = RateGate::new(policy);
        let calls = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let got = gate
            .run(fake_limit, limited_then_ok(calls.clone(), u32::MAX, None))
            .await;
        assert!(matches!(
            got,
            Err(Failed::RateLimited(GiveUp::TooManyAttempts { attempts: 5 }))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // 1 + 2 + 4 + 8 s between the five attempts.
        assert_eq!(started.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_s_limit_holds_back_the_others() {
        let gate = Arc::new(RateGate::new(POLICY));
        let first = {
            let gate = gate.clone();
            let calls = Arc::new(AtomicU32::new(0));
            let hint = Some(RetryAfter::Delay(Duration::from_secs(5)));
            tokio::spawn(async move {
                gate.run(fake_limit, limited_then_ok(calls, 1, hint))
                    .await
                    .ok()
            })
        };
        tokio::task::yield_now().await;
        // The first request met its limit; a second one now waits for it too.
        let started = Instant::now();
        let calls = Arc::new(AtomicU32::new(0));
        let second = gate
            .run(fake_limit, limited_then_ok(calls.clone(), 0, None))
            .await;
        assert_eq!(second.ok(), Some(0));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(first.await.unwrap(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_fail_at_once() {
        let gate = RateGate::new(POLICY);
        let got: Result<(), Failed<&str>> = gate
            .run(|_| Limit::No, || std::future::ready(Err("boom")))
            .await;
        assert!(matches!(got, Err(Failed::Error("boom"))));
        assert_eq!(gate.waits(), 0);
    }
}
