//! Logs and traces.
//!
//! Logs: JSON lines when stdout is not a terminal, readable text when it is (`--log-format`
//! overrides), filtered by `RUST_LOG`. The HTTP crates (`h2`, `hyper`, `reqwest`) are capped at
//! `info` whatever `RUST_LOG` says, because their trace output can carry raw header values and
//! so the bearer token.
//!
//! Traces: OpenTelemetry over OTLP, configured by the standard variables. Export is on when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set and
//! `OTEL_TRACES_EXPORTER` is not `none`; `OTEL_EXPORTER_OTLP(_TRACES)_PROTOCOL` picks `grpc` or
//! `http/protobuf` (the default); `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and
//! `OTEL_TRACES_SAMPLER(_ARG)` (parent-based always-on by default) are honoured. Attribute names
//! follow the OpenTelemetry semantic conventions release of [`SEMCONV_SCHEMA_URL`].
//!
//! W3C trace context (`traceparent`, `tracestate`) is read from the caller's metadata and
//! written on upstream requests; baggage is read but never forwarded to the third-party
//! upstream. With export off, the caller's trace context is passed upstream unchanged.

use std::{
    cell::Cell,
    io::{BufWriter, IsTerminal, Write},
    str::FromStr,
    sync::{
        LazyLock, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator},
    trace::{
        Link, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TracerProvider as _,
    },
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
use tracing::level_filters::LevelFilter;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, Targets, filter_fn},
    fmt::MakeWriter,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::EnvSource;

/// The semantic conventions release whose attribute names the spans use.
pub const SEMCONV_SCHEMA_URL: &str = opentelemetry_semantic_conventions::SCHEMA_URL;

/// The caller's trace context headers: forwarded upstream only when the gateway does not
/// trace itself.
pub const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are being exported (so the gateway is a hop of its own in the trace).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The configured sampler, consulted once per RPC before any span exists.
static SAMPLER: OnceLock<Sampler> = OnceLock::new();

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
    pub fn decide(metadata: &MetadataMap, name: impl std::fmt::Display) -> ServerTrace {
        let Some(sampler) = SAMPLER.get() else {
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

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, text when it is.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An `OTEL_*` variable has a value the gateway does not support.
    #[error("{name}={value}: {reason}")]
    BadVariable {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Where and how spans are exported, read from the standard `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// The traces endpoint.
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// `service.name`.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
    /// The sampler.
    pub sampler: SamplerSetting,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

/// `OTEL_TRACES_SAMPLER` (and its argument).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    /// `always_on`
    AlwaysOn,
    /// `always_off`
    AlwaysOff,
    /// `traceidratio`
    Ratio(f64),
    /// `parentbased_always_on` (the default)
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    fn sampler(self) -> Sampler {
        match self {
            SamplerSetting::AlwaysOn => Sampler::AlwaysOn,
            SamplerSetting::AlwaysOff => Sampler::AlwaysOff,
            SamplerSetting::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
            SamplerSetting::ParentBasedAlwaysOn => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
            }
            SamplerSetting::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerSetting::ParentBasedRatio(ratio) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
            }
        }
    }
}

impl OtlpSettings {
    /// Reads the standard variables; `None` when export is off.
    pub fn from_env(env: &dyn EnvSource) -> Result<Option<OtlpSettings>, TelemetryError> {
        let var = |name: &str| env.var(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporter) = var("OTEL_TRACES_EXPORTER") {
            match exporter.trim() {
                "none" => return Ok(None),
                "otlp" => {}
                _ => {
                    return Err(bad(
                        "OTEL_TRACES_EXPORTER",
                        exporter,
                        "only `otlp` and `none` are supported",
                    ));
                }
            }
        }
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        if traces_endpoint.is_none() && endpoint.is_none() {
            return Ok(None);
        }
        let protocol_name = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        let protocol = match protocol_name.as_deref().map(str::trim) {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(bad(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    other.into(),
                    "supported: `grpc`, `http/protobuf`",
                ));
            }
        };
        // The signal-specific endpoint is used as-is; the generic one gets the signal path
        // for OTLP/HTTP (per the OTLP exporter specification).
        let endpoint = match (traces_endpoint, endpoint) {
            (Some(traces), _) => traces,
            (None, Some(base)) if protocol == OtlpProtocol::HttpProtobuf => {
                format!("{}/v1/traces", base.trim_end_matches('/'))
            }
            (None, Some(base)) => base,
            (None, None) => return Ok(None),
        };
        let resource_attributes = var("OTEL_RESOURCE_ATTRIBUTES")
            .map(|v| parse_resource_attributes(&v))
            .unwrap_or_default();
        let service_name = var("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "wnology-gateway".to_string());
        let sampler = parse_sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?;
        Ok(Some(OtlpSettings {
            endpoint,
            protocol,
            service_name,
            resource_attributes,
            sampler,
        }))
    }
}

fn bad(name: &'static str, value: String, reason: &'static str) -> TelemetryError {
    TelemetryError::BadVariable {
        name,
        value,
        reason,
    }
}

fn parse_sampler(
    name: Option<String>,
    arg: Option<String>,
) -> Result<SamplerSetting, TelemetryError> {
    let ratio = || -> Result<f64, TelemetryError> {
        match &arg {
            None => Ok(1.0),
            Some(text) => match f64::from_str(text.trim()) {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
                _ => Err(bad(
                    "OTEL_TRACES_SAMPLER_ARG",
                    text.clone(),
                    "a ratio from 0 to 1",
                )),
            },
        }
    };
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => SamplerSetting::ParentBasedAlwaysOn,
        Some("always_on") => SamplerSetting::AlwaysOn,
        Some("always_off") => SamplerSetting::AlwaysOff,
        Some("traceidratio") => SamplerSetting::Ratio(ratio()?),
        Some("parentbased_always_off") => SamplerSetting::ParentBasedAlwaysOff,
        Some("parentbased_traceidratio") => SamplerSetting::ParentBasedRatio(ratio()?),
        Some(other) => {
            return Err(bad(
                "OTEL_TRACES_SAMPLER",
                other.into(),
                "unsupported sampler",
            ));
        }
    })
}

/// `key1=value1,key2=value2`, values percent-decoded (W3C Baggage octet rules).
fn parse_resource_attributes(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8_lossy()
                .into_owned();
            Some((key.trim().to_string(), value))
        })
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

/// The target of the access log: one line per RPC.
pub const ACCESS_TARGET: &str = "wnology_gateway::access";

/// Access-log lines held in memory while the sink is slow; beyond that they are dropped and
/// counted (`wnology_gateway_access_log_dropped_total`).
pub const ACCESS_LOG_BUFFER_LINES: usize = 64 * 1024;

/// How the logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// JSON, text, or JSON unless stdout is a terminal.
    pub format: LogFormat,
    /// One line per RPC (target [`ACCESS_TARGET`]), written off the request path.
    pub access_log: bool,
    /// Access-log lines buffered before new ones are dropped.
    pub access_log_buffer_lines: usize,
}

impl LogOptions {
    /// `format`, with the access log on and the default buffer.
    pub fn new(format: LogFormat) -> LogOptions {
        LogOptions {
            format,
            access_log: true,
            access_log_buffer_lines: ACCESS_LOG_BUFFER_LINES,
        }
    }
}

/// Counts the access-log lines dropped because the sink did not keep up.
static ACCESS_DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Access-log lines dropped so far because the log sink (stdout) did not keep up.
pub fn access_log_dropped() -> u64 {
    ACCESS_DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// The running telemetry; flush it before exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// Writes what is left of the access log when dropped.
    access_log: Option<WorkerGuard>,
}

impl Telemetry {
    /// Installs the global subscriber (logs to stdout, and traces when export is configured).
    pub fn init(options: LogOptions, env: &dyn EnvSource) -> Result<Telemetry, TelemetryError> {
        Telemetry::init_with(options, env, std::io::stdout)
    }

    /// Installs the global subscriber, writing logs to `writer` (access log on).
    pub fn init_with_writer<W>(
        format: LogFormat,
        env: &dyn EnvSource,
        writer: W,
    ) -> Result<Telemetry, TelemetryError>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        Telemetry::init_with(LogOptions::new(format), env, writer)
    }

    /// Installs the global subscriber, writing logs to `writer`. The access log goes through a
    /// buffer and a thread of its own, so a slow `writer` never holds up an RPC: when the
    /// buffer is full, lines are dropped and counted.
    pub fn init_with<W>(
        options: LogOptions,
        env: &dyn EnvSource,
        writer: W,
    ) -> Result<Telemetry, TelemetryError>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let otlp = OtlpSettings::from_env(env)?;
        let provider = otlp.as_ref().map(tracer_provider).transpose()?;
        let filter = log_filter(env)?;
        let json = match options.format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stdout().is_terminal(),
        };
        let writer = Shared(std::sync::Arc::new(writer));
        let not_access = filter_fn(|metadata| metadata.target() != ACCESS_TARGET);
        let mut layers = vec![log_layer(json, writer.clone(), filter.and(not_access))];
        let mut guard = None;
        if options.access_log {
            let (sink, worker, dropped) =
                non_blocking_sink(writer, options.access_log_buffer_lines);
            let _ = ACCESS_DROPPED.set(dropped);
            let only_access = filter_fn(|metadata| metadata.target() == ACCESS_TARGET);
            layers.push(log_layer(json, sink, log_filter(env)?.and(only_access)));
            guard = Some(worker);
        }
        if let Some(provider) = &provider {
            // Only the gateway's own spans and events, and other crates' INFO and above: the
            // HTTP crates' TRACE spans and events would otherwise be built on every call.
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("wnology-gateway"))
                    .with_error_records_to_exceptions(true)
                    .with_filter(
                        Targets::new()
                            .with_target("wnology_gateway", LevelFilter::TRACE)
                            .with_default(LevelFilter::INFO),
                    )
                    .boxed(),
            );
        }
        tracing_subscriber::registry().with(layers).try_init()?;
        if let Some(otlp) = &otlp {
            let _ = SAMPLER.set(otlp.sampler.sampler());
            EXPORTING.store(true, Ordering::Relaxed);
        }
        Ok(Telemetry {
            provider,
            access_log: guard,
        })
    }

    /// Exports every finished span now.
    pub fn force_flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Writes the rest of the access log, flushes and stops the exporter.
    pub fn shutdown(self) {
        drop(self.access_log);
        if let Some(provider) = self.provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

/// `RUST_LOG` (default `info`), with the HTTP crates capped at `info`: their TRACE output can
/// carry raw header values.
fn log_filter(env: &dyn EnvSource) -> Result<EnvFilter, TelemetryError> {
    Ok(
        EnvFilter::try_new(env.var("RUST_LOG").unwrap_or_else(|| "info".to_string()))?
            .add_directive("h2=info".parse()?)
            .add_directive("hyper=info".parse()?)
            .add_directive("hyper_util=info".parse()?)
            .add_directive("reqwest=info".parse()?)
            .add_directive("tower=info".parse()?)
            .add_directive("tonic=info".parse()?),
    )
}

/// One formatting layer: JSON lines without span context, or text.
fn log_layer<W, F>(json: bool, writer: W, filter: F) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    F: tracing_subscriber::layer::Filter<Registry> + Send + Sync + 'static,
{
    if json {
        // JSON lines carry no span context, so spans are kept away from this layer (its
        // filter never enables a span callsite): without OTLP export no layer wants spans,
        // and `info_span!` then costs a cached interest check.
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter.and(filter_fn(|metadata| metadata.is_event())))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed()
    }
}

/// The writer of the access log: lines go into a bounded channel (dropped and counted when it
/// is full) and a worker thread writes them to `writer` in batches, one write per batch.
fn non_blocking_sink<W>(
    writer: Shared<W>,
    lines: usize,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    WorkerGuard,
    ErrorCounter,
)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let batched = BufWriter::with_capacity(64 * 1024, MadeWriter(writer));
    let (sink, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(lines.max(1))
        .thread_name("wnology-access-log")
        .finish(batched);
    let dropped = sink.error_counter();
    (sink, guard, dropped)
}

/// One [`MakeWriter`] shared by the layers.
struct Shared<W>(std::sync::Arc<W>);

impl<W> Clone for Shared<W> {
    fn clone(&self) -> Self {
        Shared(std::sync::Arc::clone(&self.0))
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Shared<W> {
    type Writer = W::Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.0.make_writer()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        self.0.make_writer_for(meta)
    }
}

/// An `io::Write` over a [`MakeWriter`], asking it for a writer at each write.
struct MadeWriter<W>(Shared<W>);

impl<W> Write for MadeWriter<W>
where
    W: for<'a> MakeWriter<'a>,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.make_writer().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.make_writer().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.make_writer().flush()
    }
}

fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, TelemetryError> {
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
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_with_exporter_none() {
        assert_eq!(OtlpSettings::from_env(&env(&[])).unwrap(), None);
        assert_eq!(
            OtlpSettings::from_env(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_EXPORTER", "none")
            ]))
            .unwrap(),
            None
        );
    }

    #[test]
    fn endpoints_protocols_and_names() {
        let settings =
            OtlpSettings::from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]))
                .unwrap()
                .unwrap();
        assert_eq!(settings.endpoint, "http://c:4318/v1/traces");
        assert_eq!(settings.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(settings.service_name, "wnology-gateway");
        assert_eq!(settings.sampler, SamplerSetting::ParentBasedAlwaysOn);

        let settings = OtlpSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs,deployment.environment=prod%20eu",
            ),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(settings.endpoint, "http://c:4317");
        assert_eq!(settings.protocol, OtlpProtocol::Grpc);
        assert_eq!(settings.service_name, "from-attrs");
        assert!(
            settings
                .resource_attributes
                .contains(&("deployment.environment".into(), "prod eu".into()))
        );
        assert_eq!(settings.sampler, SamplerSetting::ParentBasedRatio(0.25));

        let settings = OtlpSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/custom"),
            ("OTEL_SERVICE_NAME", "gw-eu"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (settings.endpoint.as_str(), settings.service_name.as_str()),
            ("http://t:4318/custom", "gw-eu")
        );
    }

    #[test]
    fn unsupported_values_are_errors() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert!(
            OtlpSettings::from_env(&env(&[base, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
                .is_err()
        );
        assert!(
            OtlpSettings::from_env(&env(&[base, ("OTEL_TRACES_SAMPLER", "sometimes")])).is_err()
        );
        assert!(
            OtlpSettings::from_env(&env(&[
                base,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2")
            ]))
            .is_err()
        );
    }

    #[test]
    fn json_logs_without_export_create_no_span_and_keep_events() {
        let not_access = filter_fn(|metadata| metadata.target() != ACCESS_TARGET);
        let filter = log_filter(&env(&[])).unwrap().and(not_access);
        let layers = vec![log_layer(true, std::io::sink, filter)];
        let subscriber = tracing_subscriber::registry().with(layers);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("rpc", "rpc.method" = "x");
            assert!(span.is_disabled(), "a span nobody records is not created");
            assert!(tracing::event_enabled!(tracing::Level::INFO));
        });
    }

    #[test]
    fn an_unsampled_context_keeps_the_callers_trace_and_is_not_sampled() {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
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
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        metadata.insert("baggage", "user=alice".parse().unwrap());
        let headers = caller_trace_headers(&metadata);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "traceparent");
    }
}
