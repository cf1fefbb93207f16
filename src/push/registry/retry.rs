//! When and how long to wait before trying a registry request again.
//!
//! Backoff is exponential with full jitter, capped, and a `Retry-After` from
//! the registry wins over the computed delay. The policy is the caller's
//! explicit choice ([`RetryPolicy`]), never hidden in a loop.

use std::time::Duration;

/// Attempts per request, first one included. Enough to ride out a registry
/// restart or a load balancer shuffle (about 30 s in total) without hiding an
/// outage from a person at a terminal.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// First backoff delay.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest single backoff delay.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(15);

/// How transient registry failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request including the first (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// First delay (default [`DEFAULT_INITIAL_BACKOFF`]); doubles each time.
    pub initial_backoff: Duration,
    /// Cap on a single delay (default [`DEFAULT_MAX_BACKOFF`]).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (attempt counts from 1), or
    /// `None` when the attempts are used up.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        if let Some(wait) = retry_after {
            return Some(wait.min(self.max_backoff * 4));
        }
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        // Full jitter keeps many clients from retrying in lock-step.
        Some(ceiling.mul_f64(0.5 + fastrand::f64() * 0.5))
    }
}

/// Whether an HTTP status is worth retrying.
pub fn is_transient_status(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// Parses a `Retry-After` header given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_end() {
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
        };
        let first = policy.delay(1, None).expect("retry");
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(50));
        let third = policy.delay(3, None).expect("retry");
        assert!(third <= Duration::from_millis(250));
        assert_eq!(policy.delay(4, None), None);
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
    }
}
