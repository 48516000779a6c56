//! The one wrapper every RPC goes through: authenticate, validate and resolve the route, call
//! the upstream within the caller's deadline, decode the answer.

use std::{sync::Arc, time::Duration};

use http::HeaderValue;
use prost_reflect::{DynamicMessage, Kind};
use serde::Serialize;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    config::Settings,
    error::GatewayError,
    json::{self, UpstreamJson},
    routes::Route,
    upstream::{self, UpstreamClient, UpstreamConfigError},
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
}

impl Gateway {
    /// Builds the gateway from its settings.
    pub fn new(settings: &Settings) -> Result<Gateway, UpstreamConfigError> {
        let upstream = UpstreamClient::new(settings)?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                upstream,
                upstream_timeout: settings.upstream_timeout,
            }),
        })
    }

    /// Serves one RPC by its route.
    pub async fn call<Req, Resp>(
        &self,
        route: &'static Route,
        request: Request<Req>,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson,
    {
        let (metadata, _, message) = request.into_parts();
        self.call_parts(route, &metadata, &message)
            .await
            .map(Response::new)
            .map_err(GatewayError::into_status)
    }

    async fn call_parts<Req, Resp>(
        &self,
        route: &'static Route,
        metadata: &MetadataMap,
        message: &Req,
    ) -> Result<Resp, GatewayError>
    where
        Req: prost::Message + prost::Name + Serialize + Default,
        Resp: UpstreamJson,
    {
        let authorization = bearer_authorization(metadata)?;
        let request_json =
            json::to_json_value(message).map_err(|e| unencodable_request(message, e))?;
        let upstream_request = upstream::resolve(route, &request_json)?;
        let timeout = upstream_timeout(metadata, self.inner.upstream_timeout);
        let body = self
            .inner
            .upstream
            .send(route, &upstream_request, &authorization, timeout)
            .await?;
        Resp::from_upstream_json(&body).map_err(|e| GatewayError::BadResponse {
            action: route.action,
            reason: e.to_string(),
        })
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
