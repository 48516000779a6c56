//! The one pipeline every RPC goes through, as named stages, each in a module of its own:
//!
//! 1. **observe** ([`observe`]): request id, server span (exported and sampled only), the
//!    in-flight gauge; at the end the metrics and the access-log line;
//! 2. **admit** ([`admit`]): a concurrency slot, the deny list, a bearer token; the token's
//!    rate limit (before the cache when hits count, else just before the upstream call);
//! 3. **serve from the cache** ([`cached`]): the key, the hit path, the read-through load;
//! 4. **call the upstream** ([`upstream_call`]): request JSON, REST resolution, deadline, load
//!    and decode;
//! 5. **store and invalidate** ([`write`]): writes run to their end and drop what their route
//!    says they change.
//!
//! [`Gateway::call`] reads as that list. What does not need the route (transport limits, the
//! request guard, gRPC-Web, CORS) is a tower layer in [`crate::server`] and [`crate::web`].

use std::{collections::HashSet, future::Future, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Serialize;
use tonic::{
    Request, Response, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
};

use crate::{
    cache::{
        CacheControl, Fetched, Outcome, ResponseCache, shared::SharedTier,
        shared::settings::SettingsError,
    },
    config::Settings,
    error::GatewayError,
    json::{self, UpstreamJson},
    metrics::Metrics,
    overload::ConcurrencyBudget,
    ratelimit::{BackPressure, RateLimiter},
    reply::Encoded,
    routes::{self, CacheClass, Route},
    telemetry::Tracing,
    upstream::{UpstreamClient, UpstreamConfigError},
};

mod admit;
mod cached;
mod deadline;
mod observe;
mod request_id;
mod shared;
mod upstream_call;
mod write;

pub use admit::bearer_authorization;
pub use deadline::{deadline_margin, parse_grpc_timeout, upstream_timeout};
pub use request_id::{REQUEST_ID, RequestId};

use admit::{Admission, Admitted, Metered};
use cached::CachedRead;
use observe::Observation;
use upstream_call::UpstreamCall;

/// The shared state behind every RPC. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: UpstreamClient,
    upstream_timeout: Duration,
    cache: Arc<ResponseCache>,
    /// The shared tier, when `--cache-redis-url` is set.
    shared: Option<SharedTier>,
    /// Whether writes reach the shared tier and the other replicas (off only in a test).
    shared_invalidation: bool,
    metrics: Arc<Metrics>,
    admission: Admission,
    /// The per-token rate limit, when `--rate-limit-per-token` is set.
    rate_limit: Option<Arc<RateLimiter>>,
    /// Whether and how the gateway traces its calls.
    tracing: Tracing,
}

/// Why the gateway could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The upstream settings are unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    /// `--deny-rpcs` names an RPC the gateway does not have.
    #[error(
        "--deny-rpcs: unknown RPC `{0}` (write `OrgService/Delete` or `wnology.v1.OrgService/Delete`)"
    )]
    UnknownRpc(String),
    /// The embedded descriptor set does not decode (a build defect).
    #[error("the embedded descriptor set does not decode: {0}")]
    Descriptors(String),
    /// The shared tier's settings are refused (secret missing, short or unreadable, …).
    #[error(transparent)]
    SharedTier(#[from] SettingsError),
    /// The Redis client refused its configuration.
    #[error("--cache-redis-url: {0}")]
    SharedTierClient(#[from] fred::error::Error),
}

/// Resolves `--deny-rpcs` names to routes' actions.
fn deny_list(names: &[String]) -> Result<HashSet<&'static str>, BuildError> {
    names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(|name| {
            let wanted = name.trim_start_matches('/');
            routes::ROUTES
                .iter()
                .find(|route| {
                    let full = route.full_method().to_string();
                    full == wanted || full.strip_prefix("wnology.v1.") == Some(wanted)
                })
                .map(|route| route.action)
                .ok_or_else(|| BuildError::UnknownRpc(name.to_string()))
        })
        .collect()
}

/// What a served call produced: its answer, encoded, and how it was obtained.
#[derive(Debug)]
struct Answer {
    answer: Bytes,
    cache: Option<Outcome>,
    upstream_status: Option<u16>,
    /// How long ago a cached answer was fetched (the `age` metadata).
    age: Option<Duration>,
}

impl Gateway {
    /// Builds the gateway from its settings, not tracing its calls.
    pub fn new(settings: &Settings) -> Result<Gateway, BuildError> {
        Gateway::with_tracing(settings, Tracing::off())
    }

    /// Builds the gateway from its settings, tracing its calls as `tracing` says (see
    /// [`crate::telemetry::Telemetry::tracing`]).
    pub fn with_tracing(settings: &Settings, tracing: Tracing) -> Result<Gateway, BuildError> {
        json::check_descriptors().map_err(BuildError::Descriptors)?;
        let admission = Admission {
            budget: ConcurrencyBudget::new(settings.max_concurrency),
            denied: deny_list(&settings.deny_rpcs)?,
        };
        let mut metrics = Metrics::new();
        let (cache, shared) = shared::build(settings, &mut metrics)?;
        let rate_limit = RateLimiter::from_settings(
            &settings.rate_limit,
            shared.as_ref(),
            metrics.registry_mut(),
        )
        .map(Arc::new);
        let metrics = Arc::new(metrics);
        let mut upstream = UpstreamClient::new(settings, Arc::clone(&metrics))?.traced(&tracing);
        if let Some(limiter) = &rate_limit {
            let namer = Arc::clone(&cache);
            let back_pressure =
                BackPressure::new(Arc::clone(limiter), move |auth| namer.token_id(auth));
            upstream = upstream.with_back_pressure(back_pressure);
        }
        let inner = Arc::new(Inner {
            upstream,
            upstream_timeout: settings.upstream_timeout,
            cache,
            shared,
            shared_invalidation: !settings.cache_test_no_shared_invalidation,
            metrics,
            admission,
            rate_limit,
            tracing,
        });
        let observed = Arc::downgrade(&inner);
        inner.metrics.observe_cache(move || {
            observed
                .upgrade()
                .map(|inner| inner.cache.figures())
                .unwrap_or_default()
        });
        Ok(Gateway { inner })
    }

    /// The read cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.inner.cache
    }

    /// The shared cache tier, when configured.
    pub fn shared_tier(&self) -> Option<&SharedTier> {
        self.inner.shared.as_ref()
    }

    /// Waits (at most `within`) for the first Redis connection (the shared tier's, which the
    /// rate limit uses too), so that the first calls find it up; `true` without Redis. The
    /// gateway serves without it.
    pub async fn warm_up(&self, within: Duration) -> bool {
        match &self.inner.shared {
            Some(shared) => shared.connected(within).await,
            None => true,
        }
    }

    /// Closes the Redis connection (at shutdown, after the last call).
    pub async fn close(&self) {
        if let Some(shared) = &self.inner.shared {
            shared.close().await;
        }
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Serves one RPC by its route: observed from start to end around [`Gateway::serve`].
    pub async fn call<Req, Resp>(
        &self,
        route: &'static Route,
        request: Request<Req>,
    ) -> Result<Response<Encoded<Resp>>, Status>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Send + Sync + 'static,
    {
        let (metadata, _, message) = request.into_parts();
        let inner = &self.inner;
        let mut observation = Observation::start(route, &metadata, &inner.metrics, &inner.tracing);
        let result = observation
            .run(self.serve::<Req, Resp>(route, &metadata, &message))
            .await;
        let request_id = observation.finish(&self.inner.metrics, &result);
        respond(result, &request_id)
    }

    /// Admits the call, answers from the cache, or calls the upstream (storing or
    /// invalidating as the route says).
    async fn serve<Req, Resp>(
        &self,
        route: &'static Route,
        metadata: &MetadataMap,
        message: &Req,
    ) -> Result<Answer, Arc<GatewayError>>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let admitted = inner.admission.admit(route, metadata, &inner.metrics)?;
        let metered = Metered::of(
            inner.rate_limit.as_ref(),
            &inner.cache,
            &admitted.authorization,
        );
        Metered::before_cache(metered.as_ref(), route).await?;
        let cached = CachedRead::new(
            &inner.cache,
            inner.shared.as_ref(),
            route,
            metadata,
            message,
            &admitted.authorization,
        );
        if let Some(read) = &cached
            && let Some(hit) = read.hit(&inner.cache).await
        {
            return Ok(hit);
        }
        // Boxed: the rest (the upstream call, both cache tiers) makes a future of tens of
        // kilobytes, which every call's future would otherwise carry, and which tonic's boxing
        // and hyper's spawn copy, hit or not.
        Box::pin(self.miss::<Req, Resp>(route, metadata, message, admitted, metered, cached)).await
    }

    /// A call the cache did not answer: it goes to the upstream, through the cache's
    /// read-through load when the route is cached.
    async fn miss<Req, Resp>(
        &self,
        route: &'static Route,
        metadata: &MetadataMap,
        message: &Req,
        admitted: Admitted,
        metered: Option<Metered>,
        cached: Option<CachedRead<'_>>,
    ) -> Result<Answer, Arc<GatewayError>>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Send + Sync + 'static,
    {
        let inner = &self.inner;
        if cached.is_none() && CacheControl::from_metadata(metadata).only_if_cached {
            // Nothing of this call is cached: `only-if-cached` never calls the upstream.
            return Err(Arc::new(GatewayError::NotCached));
        }
        let authorization = admitted.authorization.clone();
        let call = UpstreamCall::prepare(route, message, metadata, authorization, inner)?;
        let load =
            || Metered::before_upstream(metered.clone(), route, call.load::<Resp>(inner, route));
        match cached {
            Some(read) => {
                let request = (&call.request_json, &admitted.authorization);
                read.load_through(&inner.cache, route, request, call.timeout, load)
                    .await
            }
            None => {
                let fetch = load();
                self.uncached::<Resp, _>(route, admitted, call.request_json, fetch)
                    .await
            }
        }
    }

    /// A call whose answer is not cached: a read passes the upstream's answer on; a write
    /// runs to its end and invalidates, and so does a read that changes something
    /// (`MeService/RefreshToken` is a GET that revokes the old token).
    async fn uncached<Resp, F>(
        &self,
        route: &'static Route,
        admitted: Admitted,
        request_json: serde_json::Value,
        load: F,
    ) -> Result<Answer, Arc<GatewayError>>
    where
        Resp: UpstreamJson + Send + Sync + 'static,
        F: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        let fetched = if route.is_read() && route.invalidates.is_empty() {
            load.await?
        } else {
            let token = self.inner.cache.token_id(admitted.authorization.as_bytes());
            self.write::<Resp, _>(route, token, request_json, admitted.slot, load)
                .await?
        };
        Ok(Answer {
            answer: fetched.answer,
            cache: (route.cache != CacheClass::Never).then_some(Outcome::Bypass),
            upstream_status: Some(fetched.upstream_status),
            age: None,
        })
    }
}

/// The call's answer with its metadata (request id, `x-cache`), or its error status.
fn respond<Resp>(
    result: Result<Answer, Arc<GatewayError>>,
    request_id: &RequestId,
) -> Result<Response<Encoded<Resp>>, Status> {
    match result {
        Ok(answer) => {
            let mut response = Response::new(Encoded::from_bytes(answer.answer));
            let metadata = response.metadata_mut();
            metadata.insert(REQUEST_ID, request_id.to_metadata());
            if let Some(outcome) = answer.cache {
                metadata.insert("x-cache", AsciiMetadataValue::from_static(outcome.as_str()));
            }
            if let Some(age) = answer.age {
                metadata.insert("age", AsciiMetadataValue::from(age.as_secs()));
            }
            Ok(response)
        }
        Err(error) => {
            let mut status = error.to_status_with_request_id(request_id.as_str());
            status
                .metadata_mut()
                .insert(REQUEST_ID, request_id.to_metadata());
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tonic boxes every call's future and hyper moves it into a task: each call, hit or
    /// miss, copies it whole. The miss path (tens of kilobytes) is boxed apart so that this
    /// copy stays small; this catches a change that puts it back inline.
    #[tokio::test]
    async fn a_calls_future_stays_small() {
        let gateway = Gateway::new(&Settings::for_upstream("http://127.0.0.1:9")).unwrap();
        let request = Request::new(crate::proto::MePayloadCountsRequest::default());
        let call =
            gateway.call::<_, crate::proto::PayloadStats>(&routes::ME_PAYLOAD_COUNTS, request);
        let size = std::mem::size_of_val(&call);
        assert!(size <= 6 * 1024, "Gateway::call's future is {size} bytes");
    }
}
