//! The one wrapper every RPC goes through: authenticate, validate and resolve the route, answer
//! from the cache or call the upstream within the caller's deadline, decode the answer,
//! invalidate what a write changed; and around all of it the server span, the metrics, the
//! request id and the access log.

use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::HeaderValue;
use opentelemetry::trace::FutureExt as _;
use prost_reflect::{DynamicMessage, Kind};
use serde::Serialize;
use serde_json::Value;
use tonic::{
    Code, Request, Response, Status,
    metadata::{AsciiMetadataValue, MetadataMap},
};
use tracing::{Instrument, field::Empty};

use crate::{
    cache::{
        CacheKey, CachePolicy, Directive, Fetched, Outcome, ResponseCache, Scope, Tags, TokenId,
    },
    config::Settings,
    error::{GatewayError, code_name},
    json::{self, UpstreamJson},
    metrics::{Metrics, RpcLabels},
    overload::{ConcurrencyBudget, Slot},
    reply::Encoded,
    routes::{self, CacheClass, Invalidation, Route, Service},
    telemetry,
    upstream::{self, UpstreamClient, UpstreamConfigError, UpstreamRequest},
};
use std::collections::HashSet;

/// Taken off the caller's deadline so that the gateway's own timer fires first and the caller
/// hears DEADLINE_EXCEEDED from the gateway, in time, rather than its own or the transport's
/// cancellation: a twentieth of the deadline, from 5 ms to 100 ms.
pub fn deadline_margin(deadline: Duration) -> Duration {
    (deadline / 20).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// The metadata that carries the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// The shared state behind every RPC. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: UpstreamClient,
    upstream_timeout: Duration,
    cache: ResponseCache,
    metrics: Arc<Metrics>,
    /// `--max-concurrency`.
    budget: ConcurrencyBudget,
    /// Actions refused locally (`--deny-rpcs`).
    denied: HashSet<&'static str>,
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
struct Answer {
    answer: Bytes,
    cache: Option<Outcome>,
    upstream_status: Option<u16>,
}

impl Gateway {
    /// Builds the gateway from its settings.
    pub fn new(settings: &Settings) -> Result<Gateway, BuildError> {
        let denied = deny_list(&settings.deny_rpcs)?;
        let metrics = Arc::new(Metrics::new());
        let upstream = UpstreamClient::new(settings, Arc::clone(&metrics))?;
        let cache = ResponseCache::new(CachePolicy {
            max_bytes: settings.cache_max_bytes,
            usage_ttl: settings.cache_usage_ttl,
            entity_ttl: settings.cache_entity_ttl,
        });
        let inner = Arc::new(Inner {
            upstream,
            upstream_timeout: settings.upstream_timeout,
            cache,
            metrics,
            budget: ConcurrencyBudget::new(settings.max_concurrency),
            denied,
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

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Serves one RPC by its route.
    pub async fn call<Req, Resp>(
        &self,
        route: &'static Route,
        request: Request<Req>,
    ) -> Result<Response<Encoded<Resp>>, Status>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Send + Sync + 'static,
    {
        let started = Instant::now();
        let (metadata, _, message) = request.into_parts();
        let request_id = RequestId::from_metadata(&metadata);
        // A span only when it is exported and sampled: an unsampled call (and every call with
        // export off) creates none, and runs in a context that still carries the trace.
        let trace = telemetry::ServerTrace::decide(&metadata, route.full_method());
        let span = match trace {
            telemetry::ServerTrace::Sampled { .. } => server_span(route, &request_id),
            _ => tracing::Span::none(),
        };
        let in_flight = self.inner.metrics.in_flight();
        let parts = self
            .call_parts::<Req, Resp>(route, &metadata, &message)
            .instrument(span.clone());
        let result = match trace {
            telemetry::ServerTrace::Sampled { parent, trace_id } => {
                telemetry::ServerTrace::adopt(parent, trace_id, &span);
                parts.await
            }
            telemetry::ServerTrace::Unsampled(context) => parts.with_context(context).await,
            telemetry::ServerTrace::Off => parts.await,
        };
        drop(in_flight);

        let elapsed = started.elapsed();
        let code = result
            .as_ref()
            .map_or_else(|error| error.code(), |_| Code::Ok);
        let (cache, upstream_status) = match &result {
            Ok(answer) => (answer.cache, answer.upstream_status),
            Err(error) => (None, error.upstream_status()),
        };
        if !span.is_disabled() {
            record_outcome(&span, code, &result, cache);
        }
        self.inner.metrics.rpc(
            RpcLabels {
                service: route.service.grpc_name(),
                method: route.rpc,
                code: code_name(code),
            },
            elapsed,
        );
        tracing::info!(
            target: "wnology_gateway::access",
            parent: &span,
            rpc = %route.full_method(),
            code = code_name(code),
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            cache = cache.map_or("-", Outcome::as_str),
            upstream_status = %OptionalStatus(upstream_status),
            request_id = %request_id,
            "rpc",
        );

        match result {
            Ok(answer) => {
                let mut response = Response::new(Encoded::from_bytes(answer.answer));
                response
                    .metadata_mut()
                    .insert(REQUEST_ID, request_id.to_metadata());
                if let Some(outcome) = answer.cache {
                    response
                        .metadata_mut()
                        .insert("x-cache", AsciiMetadataValue::from_static(outcome.as_str()));
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

    async fn call_parts<Req, Resp>(
        &self,
        route: &'static Route,
        metadata: &MetadataMap,
        message: &Req,
    ) -> Result<Answer, Arc<GatewayError>>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Send + Sync + 'static,
    {
        let Some(slot) = self.inner.budget.try_take() else {
            self.inner.metrics.shed(route.service.grpc_name());
            return Err(Arc::new(GatewayError::Overloaded));
        };
        if self.inner.denied.contains(route.action) {
            return Err(Arc::new(GatewayError::Denied));
        }
        let authorization = bearer_authorization(metadata)?;
        let cache = &self.inner.cache;
        let ttl = cache.policy().ttl(route.cache);
        let directive = Directive::from_metadata(metadata);

        // The hit path needs only the key: a request whose bytes hit was checked when its
        // answer was loaded, so it is neither re-encoded to JSON nor resolved again.
        let key = ttl.map(|_| CacheKey {
            route: route.action,
            token: cache.token_id(authorization.as_bytes()),
            request: message.encode_to_vec().into_boxed_slice(),
        });
        if let (Some(key), Directive::Default) = (&key, directive)
            && let Some(hit) = cache.lookup(key).await
        {
            return Ok(Answer {
                answer: hit.answer,
                cache: Some(Outcome::Hit),
                upstream_status: None,
            });
        }

        let request_json =
            json::to_json_value(message).map_err(|e| unencodable_request(message, e))?;
        let upstream_request = Arc::new(upstream::resolve(route, &request_json)?);
        let timeout = upstream_timeout(metadata, self.inner.upstream_timeout);
        let trace = Arc::new(if telemetry::exporting() {
            Vec::new()
        } else {
            telemetry::caller_trace_headers(metadata)
        });
        let inner = &self.inner;
        let make_load = || {
            let (inner, request, authorization, trace) = (
                Arc::clone(inner),
                Arc::clone(&upstream_request),
                authorization.clone(),
                Arc::clone(&trace),
            );
            // A load may run detached, for several callers: it stays in the span of the call
            // that started it.
            let span = tracing::Span::current();
            let context = opentelemetry::Context::current();
            async move { load::<Resp>(&inner, route, &request, &authorization, &trace, timeout).await }.instrument(span).with_context(context)
        };

        let (Some(ttl), Some(key)) = (ttl, key) else {
            // A read that changes something (`MeService/RefreshToken` is a GET that revokes
            // the old token) is a write here: it runs to its end and invalidates.
            let fetched = if route.is_read() && route.invalidates.is_empty() {
                make_load().await?
            } else {
                let token = cache.token_id(authorization.as_bytes());
                self.write::<Resp, _>(route, token, request_json, slot, make_load())
                    .await?
            };
            return Ok(Answer {
                answer: fetched.answer,
                cache: (route.cache != CacheClass::Never).then_some(Outcome::Bypass),
                upstream_status: Some(fetched.upstream_status),
            });
        };

        let tags = Tags {
            org: org_id(request_json.get("orgId")),
            me: route.service == Service::Me,
            org_list: std::ptr::eq(route, &routes::ORG_LIST),
            invitations: std::ptr::eq(route, &routes::ME_INVITES)
                || std::ptr::eq(route, &routes::ME_INVITE),
        };
        // Bounded by this caller's own deadline too: a waiter must not outlive it while
        // another caller's load is in flight.
        let cached = cache.get_or_load(key, tags, ttl, directive, make_load);
        let served = tokio::time::timeout(timeout, cached)
            .await
            .unwrap_or(Err(Arc::new(GatewayError::DeadlineExceeded)))?;
        Ok(Answer {
            answer: served.answer,
            cache: Some(served.outcome),
            upstream_status: served.upstream_status,
        })
    }

    /// Runs a write to its end in a task of its own, holding the call's slot, and then drops
    /// what it made stale: a caller who goes away neither loses the write's outcome (and its
    /// invalidations) nor frees a slot while the upstream still works on the write.
    async fn write<Resp, F>(
        &self,
        route: &'static Route,
        token: TokenId,
        request_json: Value,
        slot: Slot,
        load: F,
    ) -> Result<Fetched, GatewayError>
    where
        Resp: UpstreamJson + Send + Sync + 'static,
        F: Future<Output = Result<Fetched, GatewayError>> + Send + 'static,
    {
        let gateway = self.clone();
        let task = tokio::spawn(async move {
            let result = load.await;
            if !route.invalidates.is_empty() && result.as_ref().is_ok_or_outcome_unknown() {
                // Rare (one write names its organization only in its answer): decode it again.
                let answer_json = result
                    .as_ref()
                    .ok()
                    .filter(|_| route.invalidates.contains(&Invalidation::AnswerOrg))
                    .and_then(|fetched| Resp::decode(fetched.answer.clone()).ok())
                    .and_then(|answer| answer.to_upstream_json().ok());
                gateway.invalidate(route, token, &request_json, answer_json.as_ref());
            }
            drop(slot);
            result
        });
        task.await.unwrap_or_else(|error| {
            Err(GatewayError::Internal(format!(
                "write task failed: {error}"
            )))
        })
    }

    /// Drops what a write on `route` made stale.
    fn invalidate(
        &self,
        route: &'static Route,
        token: TokenId,
        request: &Value,
        answer: Option<&Value>,
    ) {
        let cache = &self.inner.cache;
        for invalidation in route.invalidates {
            let scope = match invalidation {
                Invalidation::Org => org_tag(request.get("orgId")),
                Invalidation::AnswerOrg => org_tag(answer.and_then(|a| a.get("orgId"))),
                Invalidation::DestinationOrg => {
                    let body = request.get("body");
                    let to_org = body.and_then(|b| b.get("destinationType"))
                        == Some(&Value::from("organization"));
                    if to_org {
                        org_tag(body.and_then(|b| b.get("destinationId")))
                    } else {
                        None
                    }
                }
                Invalidation::OrgLists => Some(Scope::OrgLists),
                Invalidation::CallerMe => Some(Scope::TokenMe(token)),
                Invalidation::CallerAll => Some(Scope::TokenAll(token)),
                Invalidation::Invitations => Some(Scope::Invitations),
                Invalidation::Everything => Some(Scope::Everything),
                Invalidation::EverythingIfTokensRevoked => {
                    let body = request.get("body");
                    let revokes = body.and_then(|b| b.get("invalidateExistingTokens"))
                        == Some(&Value::Bool(true))
                        || body.and_then(|b| b.get("tokenCutoff")).is_some()
                        || (route.action == "me.patch"
                            && body.and_then(|b| b.get("password")).is_some());
                    revokes.then_some(Scope::Everything)
                }
            };
            if let Some(scope) = scope {
                cache.invalidate(scope);
            }
        }
    }
}

/// Calls the upstream and decodes its answer, which is encoded once here for every caller and
/// the cache.
async fn load<Resp: UpstreamJson + Send + Sync + 'static>(
    inner: &Inner,
    route: &'static Route,
    request: &UpstreamRequest,
    authorization: &HeaderValue,
    trace: &[(http::HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<Fetched, GatewayError> {
    let response = inner
        .upstream
        .send(route, request, authorization, trace, timeout)
        .await?;
    let message =
        Resp::from_upstream_json(&response.body).map_err(|e| GatewayError::BadResponse {
            action: route.action,
            reason: e.to_string(),
        })?;
    Ok(Fetched {
        answer: Encoded::encode(&message).into_bytes(),
        upstream_status: response.status,
    })
}

/// The server span of a sampled RPC; its outcome is recorded by [`record_outcome`].
fn server_span(route: &'static Route, request_id: &RequestId) -> tracing::Span {
    tracing::info_span!(
        "rpc",
        otel.name = %route.full_method(),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        "rpc.system.name" = "grpc",
        "rpc.method" = %route.full_method(),
        "rpc.response.status_code" = Empty,
        "wnology.cache.result" = Empty,
        "wnology.request_id" = %request_id,
    )
}

/// Records the RPC's status (an error status for server errors) and cache outcome on its span.
fn record_outcome(
    span: &tracing::Span,
    code: Code,
    result: &Result<Answer, Arc<GatewayError>>,
    cache: Option<Outcome>,
) {
    span.record("rpc.response.status_code", code_name(code));
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
        if let Err(error) = result {
            span.record("otel.status_description", tracing::field::display(error));
        }
    }
    if let Some(cache) = cache {
        span.record("wnology.cache.result", cache.as_str());
    }
}

/// A write whose answer was lost may still have been applied: invalidate as for a success.
trait WriteSettled {
    fn is_ok_or_outcome_unknown(&self) -> bool;
}

impl<T> WriteSettled for Result<&T, &GatewayError> {
    fn is_ok_or_outcome_unknown(&self) -> bool {
        matches!(
            self,
            Ok(_) | Err(GatewayError::OutcomeUnknown(_) | GatewayError::DeadlineExceeded)
        )
    }
}

/// gRPC codes that are errors of the server (OpenTelemetry's rule for gRPC server spans).
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The organization an id names (lowercased), for cache invalidation.
fn org_id(id: Option<&Value>) -> Option<[u8; 24]> {
    let mut tag: [u8; 24] = id?.as_str()?.as_bytes().try_into().ok()?;
    tag.make_ascii_lowercase();
    Some(tag)
}

fn org_tag(id: Option<&Value>) -> Option<Scope> {
    org_id(id).map(Scope::Org)
}

/// The id that ties a call's logs, spans, metadata and error details together: the caller's
/// `x-request-id` when it is a sane token, else a fresh random one.
#[derive(Debug, Clone)]
pub struct RequestId(String);

impl RequestId {
    /// Reads or mints the id.
    pub fn from_metadata(metadata: &MetadataMap) -> RequestId {
        let supplied = metadata
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            });
        match supplied {
            Some(id) => RequestId(id.to_string()),
            None => RequestId(format!("{:032x}", rand::random::<u128>())),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn to_metadata(&self) -> AsciiMetadataValue {
        // Only visible ASCII gets here (checked or minted), which is always a valid value.
        AsciiMetadataValue::try_from(self.0.as_str())
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("invalid"))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

struct OptionalStatus(Option<u16>);

impl fmt::Display for OptionalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(status) => write!(f, "{status}"),
            None => f.write_str("-"),
        }
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

/// The time the upstream call may take: the caller's `grpc-timeout` less a margin, capped by
/// `--upstream-timeout`.
pub fn upstream_timeout(metadata: &MetadataMap, configured: Duration) -> Duration {
    match metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(deadline) => deadline
            .saturating_sub(deadline_margin(deadline))
            .min(configured),
        None => configured,
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The only caller input pbjson refuses to encode is an enum number the contract does not
/// define; name that field.
fn unencodable_request<Req: prost::Message + prost::Name>(
    message: &Req,
    error: json::JsonError,
) -> GatewayError {
    let descriptor = json::descriptor_pool().get_message_by_name(&Req::full_name());
    let dynamic =
        descriptor.and_then(|d| DynamicMessage::decode(d, message.encode_to_vec().as_slice()).ok());
    if let Some(dynamic) = dynamic {
        for (field, value) in dynamic.fields() {
            if let (Kind::Enum(enumeration), Some(number)) = (field.kind(), value.as_enum_number())
                && enumeration.get_value(number).is_none()
            {
                return GatewayError::invalid(
                    field.name(),
                    format!("{number} is not a value of {}", enumeration.name()),
                );
            }
        }
    }
    GatewayError::Internal(format!("cannot encode the request: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

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

    #[test]
    fn unknown_enum_values_name_the_field() {
        let request = crate::proto::OrgListRequest {
            sort_field: 99,
            ..Default::default()
        };
        let error = json::to_json_value(&request).unwrap_err();
        let error = unencodable_request(&request, error);
        assert_eq!(
            error.to_string(),
            "invalid `sort_field`: 99 is not a value of SortField"
        );
    }
}
