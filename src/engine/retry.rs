//! Retry policy as data: exponential backoff with full jitter, `Retry-After` honoured.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        max_attempts: 8,
        initial: Duration::from_secs(10),
        max: Duration::from_secs(3600),
    };

    /// The wait before attempt `attempt + 1`, after `attempt` failed ones (1-based).
    /// Backoff is `initial * 2^(attempt-1)` capped at `max`, with full jitter; a target's
    /// `Retry-After` is a floor (never retry earlier than asked), and `max` clamps it all.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let exp = self.initial.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.max);
        let jittered = Duration::from_millis(
            rng.random_range(0..=u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX)),
        );
        let wait = match retry_after {
            Some(asked) => jittered.max(asked),
            None => jittered,
        };
        wait.min(self.max)
    }

    /// Whether another automatic attempt is allowed after `attempts` ones.
    pub fn allows_another(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        let mut rng = rand::rng();
        for _ in 0..200 {
            assert!(p.delay(1, None, &mut rng) <= Duration::from_secs(1));
            assert!(p.delay(3, None, &mut rng) <= Duration::from_secs(4));
            assert!(p.delay(30, None, &mut rng) <= Duration::from_secs(60));
            assert!(p.delay(1, Some(Duration::from_secs(7)), &mut rng) >= Duration::from_secs(7));
            assert_eq!(
                p.delay(1, Some(Duration::from_secs(600)), &mut rng),
                Duration::from_secs(60)
            );
        }
        assert!(p.allows_another(4) && !p.allows_another(5));
    }
}
