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

mod access;
mod access_sink;
mod otlp;
mod trace;

pub use access::{ACCESS_LOG_BUFFER_LINES, ACCESS_TARGET, AccessLine, access_log_dropped};
pub use otlp::{OtlpProtocol, OtlpSettings, SamplerSetting};
pub use trace::{
    SEMCONV_SCHEMA_URL, ServerTrace, TRACE_HEADERS, Tracing, caller_trace_headers, extract_context,
    inject_context,
};

use std::io::{IsTerminal, Write};

use access_sink::AccessSink;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, Targets, filter_fn},
    fmt::MakeWriter,
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

use crate::config::EnvSource;

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
    /// The access log's writer thread could not start.
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

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

/// The running telemetry; flush it before exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    tracing: Tracing,
    /// Writes what is left of the access log when dropped.
    access_log: Option<access_sink::FlushGuard>,
}

impl Telemetry {
    /// Installs the global subscriber (logs to stdout, and traces when export is configured).
    pub fn init(options: LogOptions, env: &dyn EnvSource) -> Result<Telemetry, TelemetryError> {
        Telemetry::init_with(options, env, std::io::stdout)
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
        let provider = otlp.as_ref().map(trace::tracer_provider).transpose()?;
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
        let mut json_sink = None;
        if options.access_log && access::access_enabled(log_filter(env)?) {
            let (sink, dropped, flush) =
                AccessSink::start(MadeWriter(writer), options.access_log_buffer_lines)
                    .map_err(TelemetryError::AccessLog)?;
            access::count_drops(dropped);
            if json {
                // Written by the calls themselves (`AccessLine::log`), not through a layer.
                json_sink = Some(sink);
            } else {
                let only_access = filter_fn(|metadata| metadata.target() == ACCESS_TARGET);
                layers.push(log_layer(false, sink, log_filter(env)?.and(only_access)));
            }
            guard = Some(flush);
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
        if let Some(sink) = json_sink {
            access::install_json(sink);
        }
        let tracing = otlp.map_or_else(Tracing::off, |otlp| {
            Tracing::exporting_with(otlp.sampler.sampler())
        });
        Ok(Telemetry {
            provider,
            tracing,
            access_log: guard,
        })
    }

    /// How the gateway traces its calls (hand it to [`crate::gateway::Gateway::with_tracing`]).
    pub fn tracing(&self) -> Tracing {
        self.tracing.clone()
    }

    /// Writes the access log and exports every finished span now.
    pub fn force_flush(&self) {
        if let Some(access_log) = &self.access_log {
            access_log.flush();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_env as env;

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
}
