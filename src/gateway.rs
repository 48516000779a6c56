//! The one wrapper every RPC goes through: authenticate, validate and resolve the route, answer
//! from the cache or call the upstream within the caller's deadline, decode the answer, and
//! invalidate what a write changed.

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use http::HeaderValue;
use prost_reflect::{DynamicMessage, Kind};
use serde::Serialize;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    cache::{CacheKey, CachePolicy, Directive, Outcome, ResponseCache, SharedMessage, TokenId},
    config::Settings,
    error::GatewayError,
    json::{self, UpstreamJson},
    routes::{self, CacheClass, Invalidation, Route, Service},
    upstream::{self, UpstreamClient, UpstreamConfigError, UpstreamRequest},
};

/// Taken off the caller's deadline so that the gateway's own timer fires first and the caller
/// hears DEADLINE_EXCEEDED from the gateway rather than a transport-level cancellation.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(5);

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
}

impl Gateway {
    /// Builds the gateway from its settings.
    pub fn new(settings: &Settings) -> Result<Gateway, UpstreamConfigError> {
        let upstream = UpstreamClient::new(settings)?;
        let cache = ResponseCache::new(CachePolicy {
            max_bytes: settings.cache_max_bytes,
            usage_ttl: settings.cache_usage_ttl,
            entity_ttl: settings.cache_entity_ttl,
        });
        Ok(Gateway {
            inner: Arc::new(Inner {
                upstream,
                upstream_timeout: settings.upstream_timeout,
                cache,
            }),
        })
    }

    /// The read cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.inner.cache
    }

    /// Serves one RPC by its route.
    pub async fn call<Req, Resp>(
        &self,
        route: &'static Route,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Clone + Send + Sync + 'static,
    {
        let (metadata, _, message) = request.into_parts();
        match self.call_parts(route, &metadata, &message).await {
            Ok((answer, outcome)) => {
                let mut response = Response::new(answer);
                if let Some(outcome) = outcome {
                    response
                        .metadata_mut()
                        .insert("x-cache", http_value(outcome.as_str()));
                }
                Ok(response)
            }
            Err(error) => Err(error.to_status()),
        }
    }

    async fn call_parts<Req, Resp>(
        &self,
        route: &'static Route,
        metadata: &MetadataMap,
        message: &Req,
    ) -> Result<(Resp, Option<Outcome>), Arc<GatewayError>>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson + Clone + Send + Sync + 'static,
    {
        let authorization = bearer_authorization(metadata)?;
        let request_json =
            json::to_json_value(message).map_err(|e| unencodable_request(message, e))?;
        let upstream_request = upstream::resolve(route, &request_json)?;
        let timeout = upstream_timeout(metadata, self.inner.upstream_timeout);
        let cache = &self.inner.cache;

        let Some(ttl) = cache.policy().ttl(route.cache) else {
            let result = load::<Resp>(
                &self.inner,
                route,
                &upstream_request,
                &authorization,
                timeout,
            )
            .await;
            if !route.invalidates.is_empty() && result.as_ref().is_ok_or_outcome_unknown() {
                self.invalidate(
                    route,
                    cache.token_id(authorization.as_bytes()),
                    &request_json,
                );
            }
            let answer = result?;
            return Ok((
                answer,
                (route.cache != CacheClass::Never).then_some(Outcome::Bypass),
            ));
        };

        let key = CacheKey {
            route: route.action,
            token: cache.token_id(authorization.as_bytes()),
            org: org_tag(&request_json),
            me: route.service == Service::Me,
            request: message.encode_to_vec().into_boxed_slice(),
        };
        let make_load = || {
            let (inner, request, authorization) = (
                Arc::clone(&self.inner),
                upstream_request.clone(),
                authorization.clone(),
            );
            async move {
                let answer = load::<Resp>(&inner, route, &request, &authorization, timeout).await?;
                let encoded_len = answer.encoded_len();
                Ok((Arc::new(answer) as SharedMessage, encoded_len))
            }
        };
        // Bounded by this caller's own deadline too: a waiter must not outlive it while
        // another caller's load is in flight.
        let cached = cache.get_or_load(key, ttl, Directive::from_metadata(metadata), make_load);
        let (shared, outcome) = tokio::time::timeout(timeout, cached)
            .await
            .unwrap_or(Err(Arc::new(GatewayError::DeadlineExceeded)))?;
        let answer = shared.downcast_ref::<Resp>().cloned().ok_or_else(|| {
            GatewayError::Internal(format!(
                "cached answer of {} has another type",
                route.action
            ))
        })?;
        Ok((answer, Some(outcome)))
    }

    /// Drops what a write on `route` made stale.
    fn invalidate(&self, route: &'static Route, token: TokenId, request: &Value) {
        let cache = &self.inner.cache;
        for invalidation in route.invalidates {
            match invalidation {
                Invalidation::Org => {
                    if let Some(org) = org_tag(request) {
                        cache.invalidate(move |key| key.org == Some(org));
                    }
                }
                Invalidation::OrgLists => {
                    cache.invalidate(|key| key.route == routes::ORG_LIST.action)
                }
                Invalidation::CallerMe => cache.invalidate(move |key| key.token == token && key.me),
                Invalidation::CallerAll => cache.invalidate(move |key| key.token == token),
                Invalidation::CallerAllIfTokensInvalidated => {
                    if request.pointer("/body/invalidateExistingTokens") == Some(&Value::Bool(true))
                    {
                        cache.invalidate(move |key| key.token == token);
                    }
                }
            }
        }
    }
}

/// Calls the upstream and decodes its answer.
async fn load<Resp: UpstreamJson>(
    inner: &Inner,
    route: &'static Route,
    request: &UpstreamRequest,
    authorization: &HeaderValue,
    timeout: Duration,
) -> Result<Resp, GatewayError> {
    let body = inner
        .upstream
        .send(route, request, authorization, timeout)
        .await?;
    Resp::from_upstream_json(&body).map_err(|e| GatewayError::BadResponse {
        action: route.action,
        reason: e.to_string(),
    })
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

/// The organization a request is about (its `orgId`, lowercased), for cache invalidation.
fn org_tag(request: &Value) -> Option<[u8; 24]> {
    let id = request.get("orgId")?.as_str()?.as_bytes();
    let mut tag: [u8; 24] = id.try_into().ok()?;
    tag.make_ascii_lowercase();
    Some(tag)
}

fn http_value(value: &'static str) -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    tonic::metadata::MetadataValue::from_static(value)
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
        Some(deadline) => deadline.saturating_sub(DEADLINE_MARGIN).min(configured),
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
