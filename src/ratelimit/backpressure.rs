//! Back-pressure from the upstream: a 429 to one token for one action holds that token's
//! further calls of that action back until the upstream's `Retry-After` (1 s without it), in
//! this replica at once and, with Redis, in every replica (see [`super::redis`]).

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::HeaderValue;

use super::RateLimiter;
use crate::{cache::TokenId, error::GatewayError};

/// How long a token is held back after a 429 without `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest hold a `Retry-After` may ask for: a broken header must not lock a caller out.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Holds at which the expired ones are swept.
const SWEEP_AT: usize = 4096;

/// This replica's holds: until when each (token, action) is held back.
#[derive(Debug, Default)]
pub struct Holds {
    until: Mutex<HashMap<(TokenId, &'static str), Instant>>,
}

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TokenId, &'static str), Instant>> {
        self.until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds `token`'s calls of `action` back for `wait` (never shortening a longer hold).
    pub fn hold(&self, token: TokenId, action: &'static str, wait: Duration) {
        let now = Instant::now();
        let mut holds = self.lock();
        if holds.len() >= SWEEP_AT {
            holds.retain(|_, until| *until > now);
        }
        let until = holds.entry((token, action)).or_insert(now);
        *until = (*until).max(now + wait);
    }

    /// How long `token`'s calls of `action` are still held back, if they are.
    pub fn remaining(&self, token: TokenId, action: &'static str) -> Option<Duration> {
        let until = *self.lock().get(&(token, action))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

/// The wait a 429 asks for: its `Retry-After` (capped), or [`DEFAULT_RETRY_AFTER`].
pub fn retry_wait(retry_after: Option<Duration>) -> Duration {
    retry_after
        .filter(|after| !after.is_zero())
        .unwrap_or(DEFAULT_RETRY_AFTER)
        .min(MAX_RETRY_AFTER)
}

type Namer = dyn Fn(&[u8]) -> TokenId + Send + Sync;

/// What the upstream client tells of every failed attempt: a 429 holds its token and action
/// back. Built by the gateway with the cache's token namer (the same id on every replica).
#[derive(Clone)]
pub struct BackPressure {
    limiter: Arc<RateLimiter>,
    token_id: Arc<Namer>,
}

impl fmt::Debug for BackPressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackPressure").finish_non_exhaustive()
    }
}

impl BackPressure {
    /// Back-pressure into `limiter`, naming a caller's `authorization` with `token_id`.
    pub fn new(
        limiter: Arc<RateLimiter>,
        token_id: impl Fn(&[u8]) -> TokenId + Send + Sync + 'static,
    ) -> BackPressure {
        BackPressure {
            limiter,
            token_id: Arc::new(token_id),
        }
    }

    /// Looks at one failed upstream attempt: a 429 holds the caller's calls of `action` back.
    pub fn observe(&self, action: &'static str, authorization: &HeaderValue, error: &GatewayError) {
        if let GatewayError::Upstream(upstream) = error
            && upstream.status == 429
        {
            let token = (self.token_id)(authorization.as_bytes());
            self.limiter
                .hold(token, action, retry_wait(upstream.retry_after));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_covers_one_token_and_one_action_and_never_shrinks() {
        let holds = Holds::default();
        let (a, b) = (TokenId([1; 32]), TokenId([2; 32]));
        holds.hold(a, "orgs.get", Duration::from_secs(5));
        holds.hold(a, "orgs.get", Duration::from_secs(1));
        let left = holds.remaining(a, "orgs.get").unwrap();
        assert!(left > Duration::from_secs(4), "{left:?}");
        assert_eq!(holds.remaining(a, "org.get"), None);
        assert_eq!(holds.remaining(b, "orgs.get"), None);
        holds.hold(b, "orgs.get", Duration::ZERO);
        assert_eq!(
            holds.remaining(b, "orgs.get"),
            None,
            "a past hold holds nothing"
        );
    }

    #[test]
    fn retry_after_defaults_to_one_second_and_is_capped() {
        assert_eq!(retry_wait(None), Duration::from_secs(1));
        assert_eq!(retry_wait(Some(Duration::ZERO)), Duration::from_secs(1));
        assert_eq!(
            retry_wait(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_wait(Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
    }
}
