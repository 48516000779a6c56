//! Per-caller rate limits (`--rate-limit-per-token`), shared across replicas through Redis,
//! and back-pressure from the upstream's own 429s.
//!
//! - **Keyed by the token's HMAC id** ([`TokenId`], the cache's: with `--cache-redis-url` the
//!   same on every replica), never by the token.
//! - **Exact and atomic:** GCRA, in Redis by one Lua script ([`redis`]) when the shared tier is
//!   configured (one limit across replicas), else in this process with governor ([`local`]).
//!   A refused call is answered at once with `RATE_LIMITED` and the wait until a call would
//!   conform; the upstream is not called.
//! - **Back-pressure** ([`backpressure`]): a 429 to a token holds its further calls of the same
//!   action back until the upstream's `Retry-After` (1 s without), answered
//!   `UPSTREAM_RATE_LIMITED`; in every replica with Redis.
//! - **Redis never fails a call:** while it cannot be used, each replica applies the limit on
//!   its own (never "no limit").
//! - A log line when a token starts being limited (its short id), metrics by reason
//!   ([`metrics`]).

pub mod backpressure;
pub mod local;
pub mod metrics;
pub mod redis;
pub mod settings;

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus_client::registry::Registry;

pub use self::{
    backpressure::BackPressure,
    settings::{Limit, Rate, RateLimitSettings},
};
use self::{
    backpressure::Holds, local::LocalLimiter, metrics::RateLimitMetrics, redis::RedisLimiter,
};
use crate::{
    cache::{TokenId, shared::SharedTier},
    error::GatewayError,
};

/// The `ErrorInfo.reason` of a call over the token's limit.
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// The `ErrorInfo.reason` of a call held back after the upstream's 429.
pub const UPSTREAM_RATE_LIMITED: &str = "UPSTREAM_RATE_LIMITED";

/// Tokens remembered as "being limited" at which the ended episodes are swept.
const EPISODES_SWEEP_AT: usize = 4096;

/// What the limiter decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The call may go upstream (it was counted).
    Admit,
    /// Over the token's limit: a call would conform after the wait.
    Limited(Duration),
    /// Held back after the upstream's 429, for the wait.
    Held(Duration),
}

/// The rate limit: a limiter per token (Redis, or this replica's), the upstream's holds.
#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    counts_hits: bool,
    local: LocalLimiter,
    holds: Holds,
    redis: Option<RedisLimiter>,
    metrics: RateLimitMetrics,
    /// Until when each token counts as "being limited" (one log line per episode).
    episodes: Mutex<HashMap<TokenId, Instant>>,
}

impl RateLimiter {
    /// The limiter the settings ask for (`None` without `--rate-limit-per-token`): across
    /// replicas, on the shared tier's Redis connection, when the tier is configured. Its
    /// metrics join `registry`.
    pub fn from_settings(
        settings: &RateLimitSettings,
        shared: Option<&SharedTier>,
        registry: &mut Registry,
    ) -> Option<RateLimiter> {
        let limit = Limit::from_settings(settings)?;
        let metrics = RateLimitMetrics::default();
        metrics.register(registry);
        let redis = shared.map(|tier| RedisLimiter::new(tier.store(), metrics.fallback.clone()));
        tracing::info!(
            rate = %settings.rate_limit_per_token.map(|r| r.to_string()).unwrap_or_default(),
            burst = limit.burst.get(),
            across_replicas = redis.is_some(),
            cache_hits_count = settings.rate_limit_cache_hits,
            "per-token rate limit configured"
        );
        Some(RateLimiter::new(
            limit,
            settings.rate_limit_cache_hits,
            redis,
            metrics,
        ))
    }

    /// A limiter of `limit` per token (across replicas through `redis`, if given).
    pub fn new(
        limit: Limit,
        counts_hits: bool,
        redis: Option<RedisLimiter>,
        metrics: RateLimitMetrics,
    ) -> RateLimiter {
        RateLimiter {
            limit,
            counts_hits,
            local: LocalLimiter::new(limit),
            holds: Holds::default(),
            redis,
            metrics,
            episodes: Mutex::new(HashMap::new()),
        }
    }

    /// Whether cache hits count too (`--rate-limit-cache-hits`): then every call is checked
    /// before the cache, else only those about to call the upstream.
    pub fn counts_hits(&self) -> bool {
        self.counts_hits
    }

    /// Counts one call of `token` to `action`, or refuses it (`RATE_LIMITED` or
    /// `UPSTREAM_RATE_LIMITED`, with the wait).
    pub async fn admit(&self, token: TokenId, action: &'static str) -> Result<(), GatewayError> {
        let (reason, wait) = match self.decide(token, action).await {
            Decision::Admit => return Ok(()),
            Decision::Limited(wait) => (RATE_LIMITED, wait),
            Decision::Held(wait) => (UPSTREAM_RATE_LIMITED, wait),
        };
        self.metrics.limited(reason);
        self.note_episode(token, reason, action, wait);
        // Rounded up to the millisecond: a caller waiting exactly that long conforms.
        let retry_after = Duration::from_millis(wait.as_micros().div_ceil(1000) as u64);
        Err(match reason {
            RATE_LIMITED => GatewayError::RateLimited { retry_after },
            _ => GatewayError::UpstreamRateLimited { retry_after },
        })
    }

    async fn decide(&self, token: TokenId, action: &'static str) -> Decision {
        if let Some(left) = self.holds.remaining(token, action) {
            return Decision::Held(left);
        }
        if let Some(redis) = &self.redis
            && let Some(decision) = redis.admit(token, action, self.limit).await
        {
            self.metrics.checked("redis");
            if let Decision::Held(left) = decision {
                self.holds.hold(token, action, left);
            }
            return decision;
        }
        self.metrics.checked("local");
        match self.local.check(token) {
            Ok(()) => Decision::Admit,
            Err(wait) => Decision::Limited(wait),
        }
    }

    /// Holds `token`'s calls of `action` back for `wait` (the upstream answered 429): here at
    /// once, and on every replica through Redis (in the background).
    pub fn hold(&self, token: TokenId, action: &'static str, wait: Duration) {
        self.holds.hold(token, action, wait);
        tracing::info!(token = %short_id(token), action, retry_after_ms = wait.as_millis() as u64, "the upstream rate-limited a token: holding its calls of this action back");
        if let Some(redis) = &self.redis
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(redis.hold(token, action, wait));
        }
    }

    /// Logs when `token` starts being limited (not for each refused call of one episode).
    fn note_episode(&self, token: TokenId, reason: &str, action: &str, wait: Duration) {
        let now = Instant::now();
        let mut episodes = self
            .episodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if episodes.len() >= EPISODES_SWEEP_AT {
            episodes.retain(|_, until| *until > now);
        }
        let until = episodes.entry(token).or_insert(now);
        let starts = *until <= now;
        *until = (*until).max(now + wait);
        drop(episodes);
        if starts {
            tracing::info!(token = %short_id(token), reason, action, retry_after_ms = wait.as_millis() as u64, "token rate limited");
        }
    }
}

/// The first 4 bytes of the token's id in hex: enough to correlate log lines, nothing of the
/// token.
pub fn short_id(token: TokenId) -> String {
    hex::encode(&token.0[..4])
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn limiter(burst: u32) -> RateLimiter {
        let limit = Limit {
            interval: Duration::from_secs(60),
            burst: NonZeroU32::new(burst).unwrap(),
        };
        RateLimiter::new(limit, false, None, RateLimitMetrics::default())
    }

    #[tokio::test]
    async fn over_the_limit_is_rate_limited_with_the_wait() {
        let limiter = limiter(2);
        let token = TokenId([7; 32]);
        limiter.admit(token, "orgs.get").await.unwrap();
        limiter.admit(token, "org.get").await.unwrap();
        match limiter.admit(token, "orgs.get").await {
            Err(GatewayError::RateLimited { retry_after }) => {
                assert!(retry_after > Duration::from_secs(59), "{retry_after:?}")
            }
            other => panic!("{other:?}"),
        }
        limiter.admit(TokenId([8; 32]), "orgs.get").await.unwrap();
    }

    #[tokio::test]
    async fn a_hold_refuses_that_action_only_and_counts_nothing() {
        let limiter = limiter(1);
        let token = TokenId([7; 32]);
        limiter.hold(token, "orgs.get", Duration::from_secs(2));
        assert!(matches!(
            limiter.admit(token, "orgs.get").await,
            Err(GatewayError::UpstreamRateLimited { retry_after }) if retry_after <= Duration::from_secs(2)
        ));
        limiter.admit(token, "org.get").await.unwrap();
    }
}
