//! Retries with exponential backoff and full jitter, and the record of every attempt.
//!
//! [`deliver_with_retry`] calls [`Channel::send`] until it succeeds, fails permanently, or the
//! policy's attempt or time budget is spent. Before retry `k` (k = 1 for the second attempt) it
//! sleeps a uniformly random time in `[0, min(max_backoff, initial_backoff * 2^(k-1))]` ("full
//! jitter": many instances retrying against one receiver spread out instead of arriving
//! together). Elapsed time counts the attempts' wall time plus the requested sleeps, so a test
//! with a fake sleep sees the same budget as production; a retry whose sleep would end past
//! `max_elapsed` is not made.
//!
//! Every attempt is returned ([`Attempt`]: number, start, wall time, outcome with the error
//! text), for the caller to write to the alert log.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::channel::{Channel, ConfigError, Delivery, Retry, SendError, Validated};
use crate::model::{Notification, now_ms};

/// How a failed delivery is retried on every channel: exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// At most this many attempts in all, the first included (1 = no retry).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The backoff bound before the first retry; it doubles for each further retry.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// The backoff bound never exceeds this.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt started.
    #[serde(default = "default_max_elapsed", with = "humantime_serde")]
    pub max_elapsed: Duration,
}

/// Default `max_attempts`: 6.
fn default_max_attempts() -> u32 {
    6
}
/// Default `initial_backoff`: 1 s.
fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
/// Default `max_backoff`: 1 minute.
fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}
/// Default `max_elapsed`: 5 minutes.
fn default_max_elapsed() -> Duration {
    Duration::from_secs(300)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_elapsed: default_max_elapsed(),
        }
    }
}

impl RetryPolicy {
    /// Checks the fields (no I/O).
    pub fn validate(self) -> Result<Validated<Self>, ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::Invalid {
                field: "max_attempts",
                reason: "must be at least 1",
            });
        }
        if self.max_backoff < self.initial_backoff {
            return Err(ConfigError::BackoffBounds {
                initial: self.initial_backoff,
                max: self.max_backoff,
            });
        }
        Ok(Validated(self))
    }

    /// The upper bound of the sleep before retry `k` (1-based):
    /// `min(max_backoff, initial_backoff * 2^(k-1))`.
    pub fn backoff_bound(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Delivered.
    Delivered(Delivery),
    /// Failed.
    Failed {
        /// Whether it was worth retrying.
        retry: Retry,
        /// The HTTP status or SMTP code, when the receiver answered.
        code: Option<u16>,
        /// The error with its sources, `: `-separated.
        error: String,
    },
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When it started, ms since the epoch.
    pub started_at_ms: i64,
    /// How long it took.
    pub wall: Duration,
    /// What happened.
    pub outcome: AttemptOutcome,
}

impl Attempt {
    /// `"delivered"`, `"retryable"` or `"permanent"` (for the alert log's status column).
    pub fn status(&self) -> &'static str {
        match &self.outcome {
            AttemptOutcome::Delivered(_) => "delivered",
            AttemptOutcome::Failed { retry: Retry::Retryable, .. } => "retryable",
            AttemptOutcome::Failed { retry: Retry::Permanent, .. } => "permanent",
        }
    }
}

/// Why a delivery stopped without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The last error was permanent.
    Permanent,
    /// `max_attempts` attempts were made.
    MaxAttempts,
    /// The next retry would have started after `max_elapsed`.
    MaxElapsed,
    /// The sleep function asked to stop (shutdown).
    Cancelled,
}

/// The end of a delivery.
#[derive(Debug)]
pub enum Outcome {
    /// Delivered by the last attempt.
    Delivered(Delivery),
    /// Not delivered.
    Failed {
        /// Why it stopped.
        reason: GiveUp,
        /// The last attempt's error.
        error: SendError,
    },
}

/// Every attempt of a delivery and how it ended.
#[derive(Debug)]
pub struct DeliveryReport {
    /// The attempts in order; never empty.
    pub attempts: Vec<Attempt>,
    /// Delivered or not, and why not.
    pub outcome: Outcome,
}

impl DeliveryReport {
    /// Whether the notification was delivered.
    pub fn delivered(&self) -> bool {
        matches!(self.outcome, Outcome::Delivered(_))
    }
}

/// A sleep function for [`deliver_with_retry`] that sleeps the thread and never cancels.
pub fn thread_sleep(d: Duration) -> bool {
    std::thread::sleep(d);
    true
}

/// Delivers `n` through `channel`, retrying retryable errors per `policy` (see the module docs).
/// `sleep` is called with each backoff and returns `false` to stop retrying (e.g. on shutdown);
/// [`thread_sleep`] just sleeps.
pub fn deliver_with_retry<C: Channel + ?Sized>(
    channel: &C,
    n: &Notification,
    policy: &Validated<RetryPolicy>,
    mut sleep: impl FnMut(Duration) -> bool,
) -> DeliveryReport {
    let mut attempts = Vec::new();
    let mut elapsed = Duration::ZERO;
    let mut number = 0u32;
    loop {
        number += 1;
        let started_at_ms = now_ms();
        let t0 = Instant::now();
        let result = channel.send(n);
        let wall = t0.elapsed();
        elapsed += wall;
        let error = match result {
            Ok(d) => {
                attempts.push(Attempt {
                    number,
                    started_at_ms,
                    wall,
                    outcome: AttemptOutcome::Delivered(d.clone()),
                });
                return DeliveryReport { attempts, outcome: Outcome::Delivered(d) };
            }
            Err(e) => e,
        };
        let retry = error.retry();
        attempts.push(Attempt {
            number,
            started_at_ms,
            wall,
            outcome: AttemptOutcome::Failed {
                retry,
                code: error.code(),
                error: error_chain(&error),
            },
        });
        let reason = if retry == Retry::Permanent {
            Some(GiveUp::Permanent)
        } else if number >= policy.max_attempts {
            Some(GiveUp::MaxAttempts)
        } else {
            None
        };
        if let Some(reason) = reason {
            return DeliveryReport { attempts, outcome: Outcome::Failed { reason, error } };
        }
        let bound = policy.backoff_bound(number);
        let pause = bound.mul_f64(fastrand::f64());
        if elapsed + pause > policy.max_elapsed {
            return DeliveryReport {
                attempts,
                outcome: Outcome::Failed { reason: GiveUp::MaxElapsed, error },
            };
        }
        if !sleep(pause) {
            return DeliveryReport {
                attempts,
                outcome: Outcome::Failed { reason: GiveUp::Cancelled, error },
            };
        }
        elapsed += pause;
    }
}

/// `error: source: source ...`
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::test_notification;

    /// A scripted channel for the retry logic alone (the channels are tested against real
    /// servers in tests/).
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Result<Delivery, SendError>>>);

    impl Channel for Scripted {
        fn kind(&self) -> &'static str {
            "scripted"
        }
        fn send(&self, _: &Notification) -> Result<Delivery, SendError> {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn ok() -> Result<Delivery, SendError> {
        Ok(Delivery { code: 200, detail: "OK".into() })
    }
    fn http(status: u16) -> Result<Delivery, SendError> {
        Err(SendError::Http { status, body: "nope".into() })
    }
    fn policy(max_attempts: u32, max_elapsed_s: u64) -> Validated<RetryPolicy> {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            max_elapsed: Duration::from_secs(max_elapsed_s),
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn retries_until_delivered_with_bounded_jittered_sleeps() {
        let ch = Scripted(Mutex::new(vec![http(500), http(503), http(429), ok()]));
        let mut sleeps = Vec::new();
        let r = deliver_with_retry(&ch, &test_notification("r", ""), &policy(10, 600), |d| {
            sleeps.push(d);
            true
        });
        assert!(r.delivered());
        assert_eq!(r.attempts.len(), 4);
        assert_eq!(
            r.attempts.iter().map(Attempt::status).collect::<Vec<_>>(),
            ["retryable", "retryable", "retryable", "delivered"]
        );
        assert_eq!(r.attempts.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(sleeps.len(), 3);
        for (k, s) in sleeps.iter().enumerate() {
            assert!(*s <= Duration::from_secs(1 << k), "sleep {k}: {s:?}");
        }
        match &r.attempts[0].outcome {
            AttemptOutcome::Failed { code, error, .. } => {
                assert_eq!(*code, Some(500));
                assert_eq!(error, "receiver answered HTTP 500: nope");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn permanent_error_stops_at_once() {
        let ch = Scripted(Mutex::new(vec![http(400), ok()]));
        let r = deliver_with_retry(&ch, &test_notification("r", ""), &policy(10, 600), |_| {
            panic!("no sleep")
        });
        assert!(matches!(r.outcome, Outcome::Failed { reason: GiveUp::Permanent, .. }));
        assert_eq!(r.attempts.len(), 1);
        assert_eq!(r.attempts[0].status(), "permanent");
    }

    #[test]
    fn attempt_and_time_budgets() {
        let ch = Scripted(Mutex::new(vec![http(500), http(500), http(500), ok()]));
        let r = deliver_with_retry(&ch, &test_notification("r", ""), &policy(3, 600), |_| true);
        assert!(matches!(r.outcome, Outcome::Failed { reason: GiveUp::MaxAttempts, .. }));
        assert_eq!(r.attempts.len(), 3);

        // A zero elapsed budget allows no sleep at all (unless the jitter draws exactly 0).
        let ch = Scripted(Mutex::new(vec![http(500), http(500), http(500), http(500), ok()]));
        let tight =
            RetryPolicy { max_elapsed: Duration::ZERO, ..policy(10, 0).0 }.validate().unwrap();
        let r = deliver_with_retry(&ch, &test_notification("r", ""), &tight, |d| d.is_zero());
        assert!(matches!(
            r.outcome,
            Outcome::Failed { reason: GiveUp::MaxElapsed | GiveUp::Cancelled, .. }
        ));

        let ch = Scripted(Mutex::new(vec![http(500), ok()]));
        let r = deliver_with_retry(&ch, &test_notification("r", ""), &policy(10, 600), |_| false);
        assert!(matches!(r.outcome, Outcome::Failed { reason: GiveUp::Cancelled, .. }));
    }

    #[test]
    fn backoff_bounds() {
        let p = policy(10, 600);
        assert_eq!(p.backoff_bound(1), Duration::from_secs(1));
        assert_eq!(p.backoff_bound(2), Duration::from_secs(2));
        assert_eq!(p.backoff_bound(3), Duration::from_secs(4));
        assert_eq!(p.backoff_bound(40), Duration::from_secs(4));
        let bad =
            RetryPolicy { initial_backoff: Duration::from_secs(120), ..RetryPolicy::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::BackoffBounds { .. })));
        assert_eq!(
            RetryPolicy { max_attempts: 0, ..RetryPolicy::default() }.validate().unwrap_err(),
            ConfigError::Invalid { field: "max_attempts", reason: "must be at least 1" }
        );
    }
}
