//! Where and how spans are exported, read from the standard `OTEL_*` variables.

use std::str::FromStr;

use opentelemetry_sdk::trace::Sampler;

use super::TelemetryError;
use crate::config::EnvSource;

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
    pub(super) fn sampler(self) -> Sampler {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_env as env;

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
}
