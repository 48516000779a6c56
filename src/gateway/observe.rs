//! Stage 1 and last, observe: the request id, the server span (only when exported and
//! sampled), the in-flight gauge, and when the call ends its metrics and access-log line.

use std::{future::Future, sync::Arc, time::Instant};

use futures_util::future::Either;
use opentelemetry::trace::FutureExt as _;
use tonic::{Code, metadata::MetadataMap};
use tracing::{Instrument, field::Empty};

use super::{Answer, RequestId};
use crate::{
    cache::Outcome,
    error::{GatewayError, code_name},
    metrics::{InFlight, Metrics, RpcLabels},
    routes::Route,
    telemetry::{AccessLine, ServerTrace, Tracing},
};

/// One call under observation, from its first byte decoded to its answer.
#[derive(Debug)]
pub(super) struct Observation {
    route: &'static Route,
    started: Instant,
    request_id: RequestId,
    trace: Option<ServerTrace>,
    span: tracing::Span,
    _in_flight: InFlight,
}

impl Observation {
    /// Starts observing a call: reads or mints its request id and decides its tracing.
    pub(super) fn start(
        route: &'static Route,
        metadata: &MetadataMap,
        metrics: &Metrics,
        tracing: &Tracing,
    ) -> Observation {
        let started = Instant::now();
        let request_id = RequestId::from_metadata(metadata);
        // A span only when it is exported and sampled: an unsampled call (and every call with
        // export off) creates none, and runs in a context that still carries the trace.
        let trace = ServerTrace::decide(tracing, metadata, route.full_method());
        let span = match trace {
            ServerTrace::Sampled { .. } => server_span(route, &request_id),
            _ => tracing::Span::none(),
        };
        Observation {
            route,
            started,
            request_id,
            trace: Some(trace),
            span,
            _in_flight: metrics.in_flight(),
        }
    }

    /// Runs the call's work in its span, or in the unsampled trace context.
    ///
    /// A future that wraps `work` in place (not an `async fn`, whose state would hold `work`
    /// twice: as the argument and as the wrapper it awaits).
    pub(super) fn run<F: Future>(&mut self, work: F) -> impl Future<Output = F::Output> {
        let work = work.instrument(self.span.clone());
        match self.trace.take().unwrap_or(ServerTrace::Off) {
            ServerTrace::Sampled { parent, trace_id } => {
                ServerTrace::adopt(parent, trace_id, &self.span);
                Either::Left(work)
            }
            ServerTrace::Unsampled(context) => Either::Right(work.with_context(context)),
            ServerTrace::Off => Either::Left(work),
        }
    }

    /// Records how the call ended: span status, metrics and the access-log line.
    pub(super) fn finish(
        self,
        metrics: &Metrics,
        result: &Result<Answer, Arc<GatewayError>>,
    ) -> RequestId {
        let elapsed = self.started.elapsed();
        let route = self.route;
        let code = result
            .as_ref()
            .map_or_else(|error| error.code(), |_| Code::Ok);
        let (cache, upstream_status) = match result {
            Ok(answer) => (answer.cache, answer.upstream_status),
            Err(error) => (None, error.upstream_status()),
        };
        if !self.span.is_disabled() {
            record_outcome(&self.span, code, result, cache);
        }
        metrics.rpc(
            RpcLabels {
                service: route.service.grpc_name(),
                method: route.rpc,
                code: code_name(code),
            },
            elapsed,
        );
        AccessLine {
            service: route.service.grpc_name(),
            method: route.rpc,
            code: code_name(code),
            latency: elapsed,
            cache: cache.map_or("-", Outcome::as_str),
            upstream_status,
            request_id: self.request_id.as_str(),
        }
        .log(&self.span);
        self.request_id
    }
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
