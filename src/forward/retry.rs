//! What to do after one delivery attempt, and when to try again: each failure is classified
//! with a reason (SPEC §5), and retries back off exponentially with jitter, honouring the
//! app's `Retry-After`, until the event's `max_age`.

use std::time::Duration;

use super::{AppResponse, SendError};

/// First retry delay; doubled per attempt.
pub const BASE_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between two attempts, so a recovered app is reached within a minute.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured (an app asking for a day still gets tried hourly).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after the delay; the reason goes to the store and the log.
    Retry {
        after: Duration,
        reason: String,
    },
    /// Give up: a dead letter, kept until replayed or purged.
    Dead {
        reason: String,
    },
}

/// Classifies attempt number `attempt` (1-based) of an event that is `age` old.
pub fn classify(result: &Result<AppResponse, SendError>, attempt: u32, age: Duration, max_age: Duration) -> Verdict {
    let (reason, retry_after) = match result {
        Ok(r) if (200..300).contains(&r.status) => return Verdict::Delivered,
        Ok(r) if r.status >= 500 || r.status == 408 || r.status == 429 => {
            (format!("app answered {}", r.status), r.retry_after)
        }
        Ok(r) => {
            return Verdict::Dead {
                reason: format!("app answered {} (not retryable)", r.status),
            }
        }
        Err(e) => (e.to_string(), None),
    };
    let after = backoff(attempt, rand::random::<f64>()).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
    if age + after > max_age {
        return Verdict::Dead {
            reason: format!("{reason}; max_age {} reached", humantime::format_duration(max_age)),
        };
    }
    Verdict::Retry { after, reason }
}

/// `BASE_DELAY · 2^(attempt-1)`, capped at `MAX_DELAY`, scaled by a jitter in [0.5, 1.0) so
/// events that failed together do not all return together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = BASE_DELAY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    exp.min(MAX_DELAY).mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, retry_after: Option<u64>) -> Result<AppResponse, SendError> {
        Ok(AppResponse {
            status,
            content_type: None,
            retry_after: retry_after.map(Duration::from_secs),
            body: Bytes::new(),
        })
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn classification_follows_the_spec() {
        let retry = |r| matches!(classify(&r, 1, Duration::ZERO, DAY), Verdict::Retry { .. });
        let dead = |r| matches!(classify(&r, 1, Duration::ZERO, DAY), Verdict::Dead { .. });
        assert_eq!(classify(&answer(204, None), 1, Duration::ZERO, DAY), Verdict::Delivered);
        for s in [500, 502, 503, 504, 408, 429] {
            assert!(retry(answer(s, None)), "{s} is retried");
        }
        for s in [400, 401, 403, 404, 409, 422, 301] {
            assert!(dead(answer(s, None)), "{s} is a dead letter");
        }
        assert!(retry(Err(SendError::Connect("refused".into()))));
        assert!(retry(Err(SendError::Timeout(Duration::from_secs(1)))));
    }

    #[test]
    fn max_age_turns_retries_into_dead_letters() {
        let v = classify(&answer(503, None), 9, DAY - Duration::from_secs(1), DAY);
        assert!(
            matches!(v, Verdict::Dead { ref reason } if reason.contains("max_age")),
            "{v:?}"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        assert_eq!(backoff(1, 1.0), BASE_DELAY);
        assert_eq!(backoff(1, 0.0), BASE_DELAY / 2);
        assert_eq!(backoff(3, 1.0), BASE_DELAY * 4);
        assert_eq!(backoff(40, 1.0), MAX_DELAY);
        let Verdict::Retry { after, .. } = classify(&answer(503, Some(120)), 1, Duration::ZERO, DAY) else {
            panic!()
        };
        assert_eq!(after, Duration::from_secs(120));
        let Verdict::Retry { after, .. } = classify(&answer(429, Some(999_999)), 1, Duration::ZERO, DAY) else {
            panic!()
        };
        assert_eq!(after, MAX_RETRY_AFTER);
    }
}
