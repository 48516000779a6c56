//! Traces: the sampling decision made before any span exists, the SDK's sampler and id
//! generator that honour it, and W3C trace context in and out.

use std::{
    cell::Cell,
    sync::{Arc, LazyLock},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator},
    trace::{Link, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId},
};
use opentelemetry_http::HeaderInjector;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    runtime::Tokio,
    trace::{
        IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult,
        SdkTracerProvider, ShouldSample,
    },
};
use tonic::metadata::{KeyRef, MetadataMap};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    TelemetryError,
    otlp::{OtlpProtocol, OtlpSettings},
};

/// The semantic conventions release whose attribute names the spans use.
pub const SEMCONV_SCHEMA_URL: &str = opentelemetry_semantic_conventions::SCHEMA_URL;

/// The caller's trace context headers: forwarded upstream only when the gateway does not
/// trace itself.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// Whether the gateway traces itself, and how it samples: handed to the gateway by
/// [`super::Telemetry::tracing`] (export on) or [`Tracing::off`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tracing {
    /// The configured sampler, consulted once per RPC before any span exists; `None` when
    /// spans are not exported.
    sampler: Option<Arc<Sampler>>,
}

impl Tracing {
    /// No export: no spans; the caller's trace headers go upstream unchanged.
    pub fn off() -> Tracing {
        Tracing::default()
    }

    pub(super) fn exporting_with(sampler: Sampler) -> Tracing {
        Tracing {
            sampler: Some(Arc::new(sampler)),
        }
    }

    /// Whether spans are being exported (so the gateway is a hop of its own in the trace).
    pub fn exporting(&self) -> bool {
        self.sampler.is_some()
    }
}

thread_local! {
    /// The trace id a sampled root server span must get: the one its sampling was decided on.
    static PRESET_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// How an RPC is traced, decided before any span is created so that an unsampled call costs
/// no span at all.
#[derive(Debug)]
pub enum ServerTrace {
    /// Export is off: no span; the caller's trace headers go upstream unchanged.
    Off,
    /// Sampled: record a server span (see [`ServerTrace::adopt`]).
    Sampled {
        /// The caller's context (trace context and baggage).
        parent: Context,
        /// The new trace's id when the caller sent no trace context.
        trace_id: Option<TraceId>,
    },
    /// Not sampled: no span. The call runs in this context, a non-recording span of the
    /// caller's trace (or of a new one), so that client spans are dropped as its children and
    /// the upstream still receives the trace context, marked not sampled.
    Unsampled(Context),
}

/// The propagators of the caller's context: W3C trace context and baggage.
static EXTRACTOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

impl ServerTrace {
    /// Reads the caller's trace context from `metadata` and asks the configured sampler about
    /// the server span `name`.
    pub fn decide(
        tracing: &Tracing,
        metadata: &MetadataMap,
        name: impl std::fmt::Display,
    ) -> ServerTrace {
        let Some(sampler) = tracing.sampler.as_deref() else {
            return ServerTrace::Off;
        };
        let name = name.to_string();
        let parent = extract_context(metadata);
        let caller = parent.span().span_context().clone();
        let trace_id = if caller.is_valid() {
            caller.trace_id()
        } else {
            RandomIdGenerator::default().new_trace_id()
        };
        let result =
            sampler.should_sample(Some(&parent), trace_id, &name, &SpanKind::Server, &[], &[]);
        if result.decision == SamplingDecision::RecordAndSample {
            return ServerTrace::Sampled {
                parent,
                trace_id: (!caller.is_valid()).then_some(trace_id),
            };
        }
        let unsampled = SpanContext::new(
            trace_id,
            RandomIdGenerator::default().new_span_id(),
            TraceFlags::default(),
            false,
            result.trace_state,
        );
        ServerTrace::Unsampled(parent.with_remote_span_context(unsampled))
    }

    /// Makes `span` (created because the call is sampled) the server span of the decided trace:
    /// its parent is the caller's context, and it starts now, with the trace id its sampling
    /// was decided on.
    pub fn adopt(parent: Context, trace_id: Option<TraceId>, span: &tracing::Span) {
        let _ = span.set_parent(parent);
        PRESET_TRACE_ID.with(|preset| preset.set(trace_id));
        drop(span.context());
        PRESET_TRACE_ID.with(|preset| preset.set(None));
    }
}

/// The SDK's sampler: a server span exists only when [`ServerTrace::decide`] sampled it, so it
/// is recorded; a span under a local parent follows the parent; anything else asks the
/// configured sampler.
#[derive(Debug, Clone)]
struct Predecided(Sampler);

impl ShouldSample for Predecided {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let parent = parent_context
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let follow = match (span_kind, &parent) {
            (SpanKind::Server, _) => Some(true),
            (_, Some(parent)) if !parent.is_remote() => Some(parent.is_sampled()),
            _ => None,
        };
        match follow {
            Some(sampled) => SamplingResult {
                decision: if sampled {
                    SamplingDecision::RecordAndSample
                } else {
                    SamplingDecision::Drop
                },
                attributes: Vec::new(),
                trace_state: parent.map(|p| p.trace_state().clone()).unwrap_or_default(),
            },
            None => {
                self.0
                    .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
            }
        }
    }
}

/// Random ids, except for the trace id [`ServerTrace::adopt`] presets for the span it starts.
#[derive(Debug)]
struct PresetTraceId;

impl IdGenerator for PresetTraceId {
    fn new_trace_id(&self) -> TraceId {
        PRESET_TRACE_ID
            .with(Cell::take)
            .unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        RandomIdGenerator::default().new_span_id()
    }
}

pub(super) fn tracer_provider(
    settings: &OtlpSettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = match settings.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&settings.endpoint)
            .build()?,
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&settings.endpoint)
            .build()?,
    };
    let resource = Resource::builder_empty()
        .with_attributes(
            settings
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    // The batch processor runs on the Tokio runtime: the OTLP/HTTP client (hyper) and the
    // OTLP/gRPC client (tonic) both need a reactor, which the SDK's own thread does not have.
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter, Tokio,
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Predecided(settings.sampler.sampler()))
        .with_id_generator(PresetTraceId)
        .with_resource(resource)
        .build())
}

/// Reads the caller's trace context and baggage from gRPC metadata.
pub fn extract_context(metadata: &MetadataMap) -> Context {
    EXTRACTOR.extract(&MetadataExtractor(metadata))
}

/// The metadata as the propagators read it, without copying it into a header map.
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                KeyRef::Ascii(key) => Some(key.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Puts the trace context of `span` on an upstream request: W3C trace context only, so the
/// caller's baggage never reaches the third-party upstream.
pub fn inject_context(span: &tracing::Span, headers: &mut HeaderMap) {
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// The caller's `traceparent` / `tracestate`, to pass upstream when the gateway does not trace.
pub fn caller_trace_headers(metadata: &MetadataMap) -> Vec<(HeaderName, HeaderValue)> {
    TRACE_HEADERS
        .iter()
        .filter_map(|name| {
            let value = metadata.get(*name)?;
            let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
            Some((HeaderName::from_static(name), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata of a caller with a sampled trace.
    fn caller_metadata() -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        metadata
    }

    #[test]
    fn an_unsampled_context_keeps_the_callers_trace_and_is_not_sampled() {
        let metadata = caller_metadata();
        let parent = extract_context(&metadata);
        let caller = parent.span().span_context().clone();
        assert!(caller.is_valid() && caller.is_remote() && caller.is_sampled());
        // The SDK's sampler follows the decision taken before the span existed.
        let sampler = Predecided(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
        let server = sampler.should_sample(
            Some(&parent),
            caller.trace_id(),
            "rpc",
            &SpanKind::Server,
            &[],
            &[],
        );
        assert_eq!(server.decision, SamplingDecision::RecordAndSample);
        let unsampled = SpanContext::new(
            caller.trace_id(),
            RandomIdGenerator::default().new_span_id(),
            TraceFlags::default(),
            false,
            caller.trace_state().clone(),
        );
        let context = parent.with_remote_span_context(unsampled);
        let client = sampler.should_sample(
            Some(&context),
            caller.trace_id(),
            "GET /me",
            &SpanKind::Client,
            &[],
            &[],
        );
        assert_eq!(
            client.decision,
            SamplingDecision::Drop,
            "children of an unsampled call are dropped"
        );
    }

    #[test]
    fn caller_trace_headers_are_only_trace_context() {
        let mut metadata = caller_metadata();
        metadata.insert("baggage", "user=alice".parse().unwrap());
        let headers = caller_trace_headers(&metadata);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "traceparent");
    }
}
