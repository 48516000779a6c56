//! Stage 2, admit: whether this call may proceed at all, decided before anything is looked
//! up or sent — a concurrency slot (`--max-concurrency`), the deny list (`--deny-rpcs`) and a
//! bearer token; then the token's rate limit (`--rate-limit-*`, [`Metered`]): before the cache
//! when hits count, else just before the upstream call (a hit, local or shared, costs the
//! upstream nothing and is not counted).

use futures_util::TryFutureExt as _;
use std::{collections::HashSet, future::Future, sync::Arc};

use http::HeaderValue;
use tonic::metadata::MetadataMap;

use crate::{
    cache::{Fetched, ResponseCache, TokenId},
    error::GatewayError,
    metrics::Metrics,
    overload::{ConcurrencyBudget, Slot},
    ratelimit::RateLimiter,
    routes::Route,
};

/// What admission checks, built once from the settings.
#[derive(Debug)]
pub(super) struct Admission {
    /// `--max-concurrency`.
    pub budget: ConcurrencyBudget,
    /// Actions refused locally (`--deny-rpcs`).
    pub denied: HashSet<&'static str>,
}

/// An admitted call: it holds a slot until it is dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    /// The call's concurrency slot.
    pub slot: Slot,
    /// The caller's `authorization`, to pass upstream unchanged.
    pub authorization: HeaderValue,
}

impl Admission {
    /// Admits the call, or says why not. A shed call is counted here.
    pub(super) fn admit(
        &self,
        route: &Route,
        metadata: &MetadataMap,
        metrics: &Metrics,
    ) -> Result<Admitted, GatewayError> {
        let Some(slot) = self.budget.try_take() else {
            metrics.shed(route.service.grpc_name());
            return Err(GatewayError::Overloaded);
        };
        if self.denied.contains(route.action) {
            return Err(GatewayError::Denied);
        }
        let authorization = bearer_authorization(metadata)?;
        Ok(Admitted {
            slot,
            authorization,
        })
    }
}

/// One admitted call's rate limit: the limiter and the caller's `authorization`, named by the
/// cache's token id (the same on every replica with the shared tier) only when a call is
/// counted, so that an uncounted hit costs no HMAC.
#[derive(Debug, Clone)]
pub(super) struct Metered {
    limiter: Arc<RateLimiter>,
    cache: Arc<ResponseCache>,
    authorization: HeaderValue,
}

impl Metered {
    /// The rate limit of a call by `authorization`, `None` when no limit is configured.
    pub(super) fn of(
        limiter: Option<&Arc<RateLimiter>>,
        cache: &Arc<ResponseCache>,
        authorization: &HeaderValue,
    ) -> Option<Metered> {
        limiter.map(|limiter| Metered {
            limiter: Arc::clone(limiter),
            cache: Arc::clone(cache),
            authorization: authorization.clone(),
        })
    }

    async fn admit(&self, route: &'static Route) -> Result<(), GatewayError> {
        let token: TokenId = self.cache.token_id(self.authorization.as_bytes());
        self.limiter.admit(token, route.action).await
    }

    /// Before the cache: counts the call when hits count too (`--rate-limit-cache-hits`).
    pub(super) async fn before_cache(
        metered: Option<&Metered>,
        route: &'static Route,
    ) -> Result<(), GatewayError> {
        match metered {
            // Boxed: a shared limit's Redis call is a large future, which every call's
            // future would otherwise carry.
            Some(m) if m.limiter.counts_hits() => Box::pin(m.admit(route)).await,
            _ => Ok(()),
        }
    }

    /// `load` (the upstream call), counted first unless [`Metered::before_cache`] did: a load
    /// that never runs (a shared hit, a coalesced waiter) is not counted.
    pub(super) fn before_upstream<F>(
        metered: Option<Metered>,
        route: &'static Route,
        load: F,
    ) -> impl Future<Output = Result<Fetched, GatewayError>> + Send + 'static
    where
        F: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        let metered = metered.filter(|m| !m.limiter.counts_hits());
        // A combinator rather than an `async` block: that would hold `load` twice (captured,
        // then awaited), and this future is moved whole into the cache's boxed load.
        async move {
            match metered {
                // Boxed: a shared limit's Redis call is a large future.
                Some(m) => Box::pin(m.admit(route)).await,
                None => Ok(()),
            }
        }
        .and_then(|()| load)
    }
}

/// The caller's `authorization` metadata, which must be `Bearer <token>`, as the header to pass
/// upstream unchanged (marked sensitive so no debug output shows it).
pub fn bearer_authorization(metadata: &MetadataMap) -> Result<HeaderValue, GatewayError> {
    let value = metadata
        .get("authorization")
        .ok_or(GatewayError::MissingToken)?;
    let bytes = value.as_bytes();
    let has_token = bytes.len() > 7
        && bytes[..7].eq_ignore_ascii_case(b"bearer ")
        && bytes[7..].iter().any(|b| !b.is_ascii_whitespace());
    if !has_token {
        return Err(GatewayError::MissingToken);
    }
    let mut header = HeaderValue::from_bytes(bytes).map_err(|_| GatewayError::MissingToken)?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut metadata = MetadataMap::new();
        assert!(matches!(
            bearer_authorization(&metadata),
            Err(GatewayError::MissingToken)
        ));
        for bad in ["Bearer", "Bearer ", "Basic abc", "Bearer    "] {
            metadata.insert("authorization", bad.parse().unwrap());
            assert!(
                matches!(
                    bearer_authorization(&metadata),
                    Err(GatewayError::MissingToken)
                ),
                "{bad}"
            );
        }
        metadata.insert("authorization", "bearer abc.def".parse().unwrap());
        assert_eq!(bearer_authorization(&metadata).unwrap(), "bearer abc.def");
    }
}
