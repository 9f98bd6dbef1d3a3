//! Failed authentication is rate-limited per client address: after a burst of bad tokens
//! an address is refused (429) for a while, even with a good token, so that tokens cannot
//! be guessed at network speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failures an address may make in a burst, then one more per `REFILL`.
const BURST: u32 = 10;
const REFILL: Duration = Duration::from_secs(6);

pub struct AuthThrottle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for AuthThrottle {
    fn default() -> AuthThrottle {
        let quota = Quota::with_period(REFILL)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN));
        AuthThrottle {
            failures: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }
}

impl AuthThrottle {
    /// How long `ip` must still wait, if it is blocked.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().ok()?;
        let until = *blocked.get(&ip)?;
        until.checked_duration_since(Instant::now())
    }

    /// Counts one failure; past the burst the address is blocked until a cell frees up.
    pub fn failed(&self, ip: IpAddr) {
        if let Err(not_until) = self.failures.check_key(&ip) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            if let Ok(mut blocked) = self.blocked.lock() {
                let now = Instant::now();
                blocked.retain(|_, until| *until > now);
                blocked.insert(ip, now + wait.max(Duration::from_secs(1)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_burst_and_others_are_not() {
        let t = AuthThrottle::default();
        let bad: IpAddr = "10.0.0.1".parse().expect("ip");
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..BURST {
            t.failed(bad);
        }
        assert!(t.blocked_for(bad).is_none(), "the burst itself is allowed");
        t.failed(bad);
        assert!(t.blocked_for(bad).is_some());
        assert!(t.blocked_for(other).is_none());
    }
}
