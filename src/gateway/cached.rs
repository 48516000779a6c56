//! Stage 3, serve from the cache: the key of a cacheable read, the hit path (which needs only
//! the key), and the read-through load of a miss, coalesced with identical calls and bounded
//! by this caller's deadline; past its TTL an entry may answer stale (see
//! [`crate::cache::stale`]), with `x-cache: stale` and its `age`.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::TryFutureExt as _;
use http::HeaderValue;
use serde_json::Value;
use tonic::metadata::MetadataMap;

use super::{Answer, shared::SharedRead};
use crate::{
    cache::{
        CacheControl, CacheKey, Directive, Fetched, Load, LoadFor, Loaded, Outcome, ReadPolicy,
        ResponseCache, Scopes, shared::SharedTier, stale::StaleWindows,
    },
    error::GatewayError,
    routes::Route,
};

/// A call whose answer may come from, or go to, the cache.
#[derive(Debug)]
pub(super) struct CachedRead<'a> {
    key: CacheKey,
    ttl: Duration,
    windows: StaleWindows,
    control: CacheControl,
    /// The shared tier, when configured.
    shared: Option<&'a SharedTier>,
}

impl<'a> CachedRead<'a> {
    /// The cache's view of a call of `route` with `message` by `authorization`; `None` when
    /// the route is not cached (or caching is off for its class).
    pub(super) fn new(
        cache: &ResponseCache,
        shared: Option<&'a SharedTier>,
        route: &'static Route,
        metadata: &MetadataMap,
        message: &impl prost::Message,
        authorization: &HeaderValue,
    ) -> Option<CachedRead<'a>> {
        let ttl = cache.policy().ttl(route.cache)?;
        let key = CacheKey {
            route: route.action,
            token: cache.token_id(authorization.as_bytes()),
            request: message.encode_to_vec().into_boxed_slice(),
        };
        Some(CachedRead {
            key,
            ttl,
            windows: cache.policy().windows(route.cache),
            control: CacheControl::from_metadata(metadata),
            shared,
        })
    }

    /// The hit path: a request whose bytes hit was checked when its answer was loaded, so it
    /// is neither re-encoded to JSON nor resolved again.
    pub(super) async fn hit(&self, cache: &ResponseCache) -> Option<Answer> {
        if self.control.directive != Directive::Default {
            return None;
        }
        let hit = cache.lookup(&self.key, &self.control).await?;
        Some(Answer {
            answer: hit.answer,
            cache: Some(Outcome::Hit),
            upstream_status: None,
            age: hit.age,
        })
    }

    /// A miss (or `no-cache`/`no-store`): runs a load made by `make_load`, once for all identical
    /// concurrent callers, within `timeout`, and stores its answer. With the shared tier, the
    /// load looks there first; `no-cache` skips reading both tiers and stores its fresh answer
    /// in both, `no-store` neither reads nor stores. `authorization` opens the caller's
    /// values in the shared tier.
    pub(super) async fn load_through<M, F>(
        self,
        cache: &ResponseCache,
        route: &'static Route,
        request: (&Value, &HeaderValue),
        timeout: Duration,
        make_load: M,
    ) -> Result<Answer, Arc<GatewayError>>
    where
        M: Fn() -> F,
        F: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        let (request_json, authorization) = request;
        let scopes = Scopes::of(route.scopes, org_id(request_json.get("orgId")));
        let shared = self
            .shared
            .filter(|_| self.control.directive != Directive::NoStore)
            .map(|tier| SharedRead {
                // The local key's token id is the tier's (`shared::build` keys the local tier
                // with it): no second HMAC of the token.
                caller: tier.caller_with_id(self.key.token, authorization.as_bytes()),
                tier: tier.clone(),
                key: self.key.clone(),
                scopes,
                ttl: self.ttl,
                windows: self.windows,
                control: self.control,
                lease_for: timeout,
                // Waiting for another replica's fill may take half the deadline: the other
                // half is left for this caller's own upstream call if that fill never comes.
                deadline: Instant::now() + timeout / 2,
            });
        let refresh = self.control.directive == Directive::NoCache;
        // Boxed: the nested futures of both tiers and the upstream call are otherwise too deep
        // a type for the compiler's layout computation of the services' futures. Each branch
        // is boxed as it is (an `async` block around them would hold `upstream` twice).
        let make_load = move |purpose: LoadFor| -> Load {
            let upstream = make_load();
            match shared.clone() {
                // `upstream` boxed too: the shared tier's load holds it across round trips.
                Some(shared) if refresh => Box::pin(shared.refresh(Box::pin(upstream))),
                Some(shared) => Box::pin(shared.load(Box::pin(upstream), purpose)),
                None => Box::pin(upstream.map_ok(Loaded::from)),
            }
        };
        let read = ReadPolicy {
            ttl: self.ttl,
            windows: self.windows,
            control: self.control,
            // Bounded by this caller's own deadline too: a waiter must not outlive it while
            // another caller's load is in flight (and a stale entry may answer for it).
            wait: timeout,
        };
        let served = cache
            .get_or_load_for(self.key, scopes, read, make_load)
            .await?;
        Ok(Answer {
            answer: served.answer,
            cache: Some(served.outcome),
            upstream_status: served.upstream_status,
            age: served.age,
        })
    }
}

/// The organization an id names (lowercased), for the cache's scopes.
pub(super) fn org_id(id: Option<&Value>) -> Option<[u8; 24]> {
    let mut id: [u8; 24] = id?.as_str()?.as_bytes().try_into().ok()?;
    id.make_ascii_lowercase();
    Some(id)
}
