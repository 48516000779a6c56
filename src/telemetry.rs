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
    io::IsTerminal,
    str::FromStr,
    sync::atomic::{AtomicBool, Ordering},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context, KeyValue,
    propagation::{TextMapCompositePropagator, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    runtime::Tokio,
    trace::{Sampler, SdkTracerProvider},
};
use tonic::metadata::MetadataMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, filter_fn},
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

/// The running telemetry; flush it before exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber (logs to stdout, and traces when export is configured).
    pub fn init(format: LogFormat, env: &dyn EnvSource) -> Result<Telemetry, TelemetryError> {
        Telemetry::init_with_writer(format, env, std::io::stdout)
    }

    /// Installs the global subscriber, writing logs to `writer`.
    pub fn init_with_writer<W>(
        format: LogFormat,
        env: &dyn EnvSource,
        writer: W,
    ) -> Result<Telemetry, TelemetryError>
    where
        W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
    {
        let otlp = OtlpSettings::from_env(env)?;
        let provider = otlp.as_ref().map(tracer_provider).transpose()?;

        let filter = EnvFilter::try_new(env.var("RUST_LOG").unwrap_or_else(|| "info".to_string()))?
            .add_directive("h2=info".parse()?)
            .add_directive("hyper=info".parse()?)
            .add_directive("hyper_util=info".parse()?)
            .add_directive("reqwest=info".parse()?)
            .add_directive("tower=info".parse()?)
            .add_directive("tonic=info".parse()?);
        let json = match format {
            LogFormat::Json => true,
            LogFormat::Text => false,
            LogFormat::Auto => !std::io::stdout().is_terminal(),
        };
        let logs = if json {
            // JSON lines carry no span context, so spans are kept away from this layer: it
            // would otherwise format and store every span's fields, on every call, for
            // nothing (about 40% of a cache hit's CPU). With OTLP export off, no layer wants
            // spans and they are disabled outright.
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
        };
        let traces = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("wnology-gateway"))
                .with_error_records_to_exceptions(true)
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .try_init()?;
        if provider.is_some() {
            EXPORTING.store(true, Ordering::Relaxed);
        }
        Ok(Telemetry { provider })
    }

    /// Exports every finished span now.
    pub fn force_flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
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
        .with_sampler(settings.sampler.sampler())
        .with_resource(resource)
        .build())
}

/// Reads the caller's trace context and baggage from gRPC metadata.
pub fn extract_context(metadata: &MetadataMap) -> Context {
    let headers = metadata.clone().into_headers();
    let propagator = TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]);
    propagator.extract(&HeaderExtractor(&headers))
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
