//! Stage 4, call the upstream: the request as the upstream's JSON, resolved to its REST call,
//! with the time it may take and the trace headers; the load that sends it and decodes the
//! answer (encoded once here for every caller and the cache).

use std::{future::Future, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue};
use opentelemetry::trace::FutureExt as _;
use prost_reflect::{DynamicMessage, Kind};
use serde::Serialize;
use serde_json::Value;
use tonic::metadata::MetadataMap;
use tracing::Instrument;

use super::{Inner, deadline};
use crate::{
    cache::Fetched,
    error::GatewayError,
    json::{self, UpstreamJson},
    reply::Encoded,
    routes::Route,
    telemetry,
    upstream::{self, Outbound, UpstreamRequest},
};

/// One RPC's upstream call, ready to be sent (once, or again by each load that needs it).
#[derive(Debug)]
pub(super) struct UpstreamCall {
    /// The request as the upstream's JSON (what invalidations read too).
    pub request_json: Value,
    request: Arc<UpstreamRequest>,
    authorization: HeaderValue,
    /// The time the call may take (the caller's deadline less a margin, capped).
    pub timeout: Duration,
    trace: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl UpstreamCall {
    /// Encodes and resolves the request; bad input is refused here, before any upstream call.
    pub(super) fn prepare<Req>(
        route: &'static Route,
        message: &Req,
        metadata: &MetadataMap,
        authorization: HeaderValue,
        inner: &Inner,
    ) -> Result<UpstreamCall, GatewayError>
    where
        Req: prost::Message + prost::Name + Serialize,
    {
        let request_json =
            json::to_json_value(message).map_err(|e| unencodable_request(message, e))?;
        let request = Arc::new(upstream::resolve(route, &request_json)?);
        // When the gateway traces, the upstream gets the gateway's client span instead.
        let trace = Arc::new(if inner.tracing.exporting() {
            Vec::new()
        } else {
            telemetry::caller_trace_headers(metadata)
        });
        Ok(UpstreamCall {
            request_json,
            request,
            authorization,
            timeout: deadline::upstream_timeout(metadata, inner.upstream_timeout),
            trace,
        })
    }

    /// A load of this call: it owns what it needs, so it may run detached, for several
    /// callers, in the span and context of the call that started it.
    pub(super) fn load<Resp>(
        &self,
        inner: &Arc<Inner>,
        route: &'static Route,
    ) -> impl Future<Output = Result<Fetched, GatewayError>> + Send + 'static
    where
        Resp: UpstreamJson + Send + Sync + 'static,
    {
        let (inner, request, authorization, trace, timeout) = (
            Arc::clone(inner),
            Arc::clone(&self.request),
            self.authorization.clone(),
            Arc::clone(&self.trace),
            self.timeout,
        );
        let span = tracing::Span::current();
        let context = opentelemetry::Context::current();
        async move {
            let call = Outbound {
                route,
                request: &request,
                authorization: &authorization,
                caller_trace: &trace,
            };
            load::<Resp>(&inner, call, timeout).await
        }
        .instrument(span)
        .with_context(context)
    }
}

/// Calls the upstream and decodes its answer.
async fn load<Resp: UpstreamJson + Send + Sync + 'static>(
    inner: &Inner,
    call: Outbound<'_>,
    timeout: Duration,
) -> Result<Fetched, GatewayError> {
    let route = call.route;
    let response = inner.upstream.send(call, timeout).await?;
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
