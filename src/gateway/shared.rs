//! Stage 3b, the shared tier: a local miss looks in Redis inside the local tier's coalesced
//! load (so local coalescing and local generation stamps still apply), then coalesces a cold
//! read with the other replicas, then calls the upstream and fills the shared tier without
//! delaying the reply. Redis keeps answers past their TTL for their class's stale windows,
//! so a replica without a copy of its own still answers stale (at once while one replica
//! refreshes, or in place of an upstream failure). Redis failing only ever turns into the
//! single-replica behaviour.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use super::BuildError;
use crate::{
    cache::{
        CacheControl, CacheKey, CachePolicy, Fetched, LoadFor, Loaded, ResponseCache, Scope,
        Scopes, StaleAnswer, StaleReason,
        shared::{
            Caller, Coalesced, Lifetime, SharedHit, SharedLookup, SharedStale, SharedTier,
            SharedTierMetrics, Ticket, key::Namer,
        },
        stale::{self, Freshness, StaleWindows, Timing},
    },
    config::Settings,
    error::GatewayError,
    metrics::Metrics,
};

/// One cacheable read's view of the shared tier.
#[derive(Debug, Clone)]
pub(super) struct SharedRead {
    /// The tier.
    pub tier: SharedTier,
    /// The caller (its token id and value key).
    pub caller: Caller,
    /// The local tier's key (the shared tier names it by an HMAC of it).
    pub key: CacheKey,
    /// The answer's scopes, checked against the generations in Redis.
    pub scopes: Scopes,
    /// The route's time to live, for what is stored in Redis.
    pub ttl: Duration,
    /// The route class's stale windows: Redis keeps an answer this much longer, and a stale
    /// one found there is served within them.
    pub windows: StaleWindows,
    /// The caller's `cache-control` (`max-age`, `stale-if-error` narrow what is served stale).
    pub control: CacheControl,
    /// How long a fill lease is held at most (the upstream call's time limit).
    pub lease_for: Duration,
    /// When this caller stops waiting for another replica's fill.
    pub deadline: Instant,
}

impl SharedRead {
    /// The load of a local miss: the shared tier's answer, or `upstream`'s (stored in the
    /// shared tier in the background). A stale answer there is served at once within
    /// stale-while-revalidate (the local tier then starts a [`LoadFor::Refresh`], which
    /// leads the refresh or waits for the replica that does, so one upstream call refreshes
    /// it for every replica), and in place of an upstream failure within stale-if-error.
    pub(super) async fn load<F>(self, upstream: F, purpose: LoadFor) -> Result<Loaded, GatewayError>
    where
        F: Future<Output = Result<Fetched, GatewayError>>,
    {
        // Each Redis round trip is boxed: fred's futures are large, and this load is itself
        // boxed (moved whole) by the local tier; an allocation is small beside a round trip.
        let looked_up = Box::pin(self.tier.get(&self.caller, &self.key, &self.scopes)).await;
        let (ticket, stale) = match looked_up {
            SharedLookup::Hit(hit) => return Ok(self.keep_shared(hit)),
            SharedLookup::Skipped => return self.keep_upstream(upstream.await),
            SharedLookup::Miss(ticket) => (ticket, None),
            // A refresh must bring a fresh answer: the stale one is what it replaces.
            SharedLookup::Stale(_, ticket) if purpose == LoadFor::Refresh => (ticket, None),
            SharedLookup::Stale(stale, ticket) => (ticket, Some(stale)),
        };
        let Some(stale) = stale else {
            return self.coalesced(ticket, upstream).await;
        };
        let now = Instant::now();
        let timing = Timing::expired(now, stale.age, stale.past);
        if stale::freshness(timing, self.windows, &self.control, now) == Freshness::Revalidate {
            return Ok(self.keep_stale(stale, StaleReason::Revalidate));
        }
        match self.coalesced(ticket, upstream).await {
            Err(error)
                if stale::is_upstream_failure(&error)
                    && stale::usable_on_error(
                        timing,
                        self.windows,
                        &self.control,
                        Instant::now(),
                    ) =>
            {
                Ok(self.keep_stale(stale, StaleReason::Error))
            }
            loaded => loaded,
        }
    }

    /// The upstream's answer for `ticket`, coalesced with the other replicas: this caller
    /// leads (and fills), waits for the leader's fill, or calls alone (and puts).
    async fn coalesced<F>(&self, ticket: Ticket, upstream: F) -> Result<Loaded, GatewayError>
    where
        F: Future<Output = Result<Fetched, GatewayError>>,
    {
        let coalesced =
            Box::pin(
                self.tier
                    .lead_or_wait(&self.caller, ticket, self.lease_for, self.deadline),
            )
            .await;
        match coalesced {
            Coalesced::Filled(hit) => Ok(self.keep_shared(hit)),
            Coalesced::Lead(lease) => {
                let result = upstream.await;
                match &result {
                    Ok(fetched) => lease.fill(
                        fetched.answer.clone(),
                        fetched.upstream_status,
                        self.lifetime(),
                    ),
                    Err(_) => lease.abandon(),
                }
                self.keep_upstream(result)
            }
            Coalesced::Alone(ticket) => {
                let result = upstream.await;
                if let Ok(fetched) = &result {
                    let (answer, status) = (fetched.answer.clone(), fetched.upstream_status);
                    self.tier
                        .put(&self.caller, ticket, answer, status, self.lifetime());
                }
                self.keep_upstream(result)
            }
        }
    }

    /// The load of a `no-cache` read: `upstream`'s answer, which replaces the shared tier's
    /// (the generations are read first, so that a write during the call still wins).
    pub(super) async fn refresh<F>(self, upstream: F) -> Result<Loaded, GatewayError>
    where
        F: Future<Output = Result<Fetched, GatewayError>>,
    {
        let ticket = Box::pin(self.tier.ticket(&self.caller, &self.key, &self.scopes)).await;
        let result = upstream.await;
        if let (Some(ticket), Ok(fetched)) = (ticket, &result) {
            let (answer, status) = (fetched.answer.clone(), fetched.upstream_status);
            self.tier
                .put(&self.caller, ticket, answer, status, self.lifetime());
        }
        self.keep_upstream(result)
    }

    /// How long Redis keeps what this read stores: its TTL and its class's longest window.
    fn lifetime(&self) -> Lifetime {
        Lifetime {
            ttl: self.ttl,
            stale_for: self.windows.longest(),
        }
    }

    /// A shared hit, kept here for its remaining time (at most 1 s while the feed is down).
    fn keep_shared(&self, hit: SharedHit) -> Loaded {
        // Read once: the feed's trust decides both the cap and the windows.
        let cap = self.tier.local_ttl_cap();
        Loaded {
            fetched: Fetched {
                answer: hit.answer,
                upstream_status: hit.upstream_status,
            },
            keep_at_most: Some(cap.map_or(hit.remaining, |cap| hit.remaining.min(cap))),
            from_shared: true,
            age: hit.age,
            // While the feed is not trusted, another replica's write might go unseen.
            no_stale: cap.is_some(),
            stale: None,
        }
    }

    /// A stale shared answer, served for `reason`; kept here with its true timing (and no
    /// windows while the feed is down). Redis checked its generations in the same round
    /// trip, so no write has invalidated it.
    fn keep_stale(&self, stale: SharedStale, reason: StaleReason) -> Loaded {
        Loaded {
            fetched: Fetched {
                answer: stale.answer,
                upstream_status: stale.upstream_status,
            },
            keep_at_most: None,
            from_shared: true,
            age: stale.age,
            no_stale: self.tier.local_ttl_cap().is_some(),
            stale: Some(StaleAnswer {
                reason,
                past: stale.past,
            }),
        }
    }

    /// An upstream answer, kept here for the route's TTL (at most 1 s while the feed is down).
    fn keep_upstream(&self, result: Result<Fetched, GatewayError>) -> Result<Loaded, GatewayError> {
        Ok(Loaded {
            keep_at_most: self.tier.local_ttl_cap(),
            no_stale: self.tier.local_ttl_cap().is_some(),
            ..Loaded::from(result?)
        })
    }
}

/// The local tier, and the shared tier when `--cache-redis-url` is set (its settings checked:
/// a refused secret is a start-up error). With the shared tier the local tier names tokens as
/// every replica does, its metrics join `metrics`, and other replicas' invalidations reach
/// the local tier.
pub(super) fn build(
    settings: &Settings,
    metrics: &mut Metrics,
) -> Result<(Arc<ResponseCache>, Option<SharedTier>), BuildError> {
    let policy = CachePolicy {
        max_bytes: settings.cache_max_bytes,
        usage_ttl: settings.cache_usage_ttl,
        entity_ttl: settings.cache_entity_ttl,
        stale: settings.cache_stale,
    };
    let Some(config) = settings.shared_cache.resolve()? else {
        return Ok((Arc::new(ResponseCache::new(policy)), None));
    };
    let namer = Namer::new(&config.secret);
    let cache = Arc::new(ResponseCache::with_token_hmac(policy, namer.token_hmac()));
    let tier_metrics = SharedTierMetrics::default();
    tier_metrics.register(metrics.registry_mut());
    let local = Arc::clone(&cache);
    let shared = SharedTier::connect(&config, tier_metrics, move |scopes: &[Scope]| {
        for scope in scopes {
            local.invalidate(*scope);
        }
    })?;
    Ok((cache, Some(shared)))
}
