//! The per-replica limiter: governor's keyed GCRA (exact, and it says how long until a call
//! would conform), keyed by the token's HMAC id. Used alone without Redis, and as the fallback
//! while Redis cannot be reached.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::settings::Limit;
use crate::cache::TokenId;

/// Checks between two sweeps of the tokens whose state has fully recovered.
const SWEEP_EVERY: u64 = 16_384;

/// One GCRA per token, in this process.
#[derive(Debug)]
pub struct LocalLimiter {
    limiter: DefaultKeyedRateLimiter<TokenId>,
    checks: AtomicU64,
}

impl LocalLimiter {
    /// A limiter of `limit` per token.
    pub fn new(limit: Limit) -> LocalLimiter {
        // Above 10⁹/s the interval rounds down to 0 ns, which governor refuses: 1 ns is the
        // finest rate it can keep.
        let interval = limit.interval.max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(limit.burst))
            .allow_burst(limit.burst);
        LocalLimiter {
            limiter: RateLimiter::dashmap(quota),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one call of `token`: `Ok` when it conforms, else how long until one would.
    pub fn check(&self, token: TokenId) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // Tokens not seen for a while hold no information; forget them (bounded memory).
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&token)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// How many tokens this limiter holds state for.
    pub fn tokens(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn token(n: u8) -> TokenId {
        TokenId([n; 32])
    }

    #[test]
    fn a_burst_then_the_wait_until_the_next_call() {
        let limiter = LocalLimiter::new(Limit {
            interval: Duration::from_secs(10),
            burst: NonZeroU32::new(3).unwrap(),
        });
        for _ in 0..3 {
            assert_eq!(limiter.check(token(1)), Ok(()));
        }
        let wait = limiter.check(token(1)).unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(
            limiter.check(token(2)),
            Ok(()),
            "another token is untouched"
        );
        assert_eq!(limiter.tokens(), 2);
    }
}
