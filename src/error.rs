//! Everything that can fail on a request path, and its gRPC status.
//!
//! Upstream HTTP errors keep the upstream's `type` and `message`: the message is the status
//! message, and a `google.rpc.ErrorInfo` carries the type (in UPPER_SNAKE as `reason`), the
//! upstream host (`domain`) and the HTTP status. Local rejections carry a
//! `google.rpc.BadRequest` naming the field.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of errors the gateway raises itself.
pub const GATEWAY_DOMAIN: &str = "wnology-gateway";

/// A failed RPC.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No usable `authorization: Bearer <token>` metadata.
    #[error("missing bearer token: send metadata `authorization: Bearer <token>`")]
    MissingToken,
    /// `--max-concurrency` RPCs are already running: refused at once, safe to retry.
    #[error("the gateway is overloaded (--max-concurrency reached); retry with backoff")]
    Overloaded,
    /// The RPC is disabled on this gateway (`--deny-rpcs`).
    #[error("this RPC is disabled on this gateway (--deny-rpcs)")]
    Denied,
    /// A request field is missing or malformed; nothing was sent upstream.
    #[error("invalid `{field}`: {description}")]
    InvalidArgument {
        /// The request field, as the caller names it (`org_id`, `body.name`).
        field: String,
        /// What is wrong with it.
        description: String,
    },
    /// The upstream answered with an HTTP error.
    #[error("{}", .0.message)]
    Upstream(UpstreamError),
    /// No connection to the upstream could be made; the request was not sent.
    #[error("upstream unavailable: {0}")]
    Unreachable(String),
    /// A read failed after it was sent (the connection broke); it is safe to try again.
    #[error("upstream read failed: {0}")]
    ReadFailed(String),
    /// A write was sent but its outcome is unknown (the connection broke before the answer).
    #[error("upstream outcome unknown, the write may or may not have been applied: {0}")]
    OutcomeUnknown(String),
    /// The deadline passed before the upstream answered.
    #[error("deadline exceeded waiting for the upstream")]
    DeadlineExceeded,
    /// The upstream's answer is larger than `--max-upstream-response-bytes`.
    #[error("upstream response exceeds {limit} bytes")]
    ResponseTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The upstream's success body does not have the documented shape.
    #[error("upstream {action} answered a body that does not decode: {reason}")]
    BadResponse {
        /// The upstream action.
        action: &'static str,
        /// Why it does not decode.
        reason: String,
    },
    /// A defect in the gateway itself.
    #[error("internal error: {0}")]
    Internal(String),
    /// The upstream's circuit breaker is open: the call was not sent.
    #[error(
        "the upstream is failing and its circuit breaker is open; retry in {} ms",
        retry_after.as_millis()
    )]
    CircuitOpen {
        /// The rest of the cool-down.
        retry_after: Duration,
    },
    /// `cache-control: only-if-cached` and no cached answer may be served.
    #[error("no cached answer (cache-control: only-if-cached); the upstream was not called")]
    NotCached,
    /// The caller's token is over `--rate-limit-per-token`; nothing was sent upstream.
    #[error("this token is over its rate limit (--rate-limit-per-token); retry in {} ms", .retry_after.as_millis())]
    RateLimited {
        /// How long until a call would be admitted.
        retry_after: Duration,
    },
    /// The upstream answered 429 to this token for this RPC lately: held back until its
    /// retry time; nothing was sent upstream.
    #[error("the upstream rate-limited this token for this RPC; retry in {} ms", .retry_after.as_millis())]
    UpstreamRateLimited {
        /// How long the upstream asked to wait.
        retry_after: Duration,
    },
}

/// An HTTP error answered by the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// The HTTP status code.
    pub status: u16,
    /// The upstream error `type` (`NotFound`), when the body is the upstream's JSON error.
    pub error_type: Option<String>,
    /// The upstream `message`, or the status line when the body is not the JSON error shape.
    pub message: String,
    /// The upstream host.
    pub domain: String,
    /// The upstream's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

impl GatewayError {
    /// An INVALID_ARGUMENT for `field`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> GatewayError {
        GatewayError::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::MissingToken => Code::Unauthenticated,
            GatewayError::Denied => Code::PermissionDenied,
            GatewayError::Overloaded => Code::Unavailable,
            GatewayError::InvalidArgument { .. } => Code::InvalidArgument,
            GatewayError::Upstream(upstream) => code_for_http_status(upstream.status),
            GatewayError::Unreachable(_) | GatewayError::ReadFailed(_) => Code::Unavailable,
            GatewayError::OutcomeUnknown(_) => Code::Unknown,
            GatewayError::DeadlineExceeded => Code::DeadlineExceeded,
            GatewayError::ResponseTooLarge { .. } => Code::ResourceExhausted,
            GatewayError::BadResponse { .. } | GatewayError::Internal(_) => Code::Internal,
            GatewayError::CircuitOpen { .. } | GatewayError::NotCached => Code::Unavailable,
            GatewayError::RateLimited { .. } | GatewayError::UpstreamRateLimited { .. } => {
                Code::ResourceExhausted
            }
        }
    }

    /// The gRPC status, with its rich details.
    pub fn into_status(self) -> Status {
        self.to_status()
    }

    /// The HTTP status the upstream answered, when this is an upstream HTTP error.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            GatewayError::Upstream(upstream) => Some(upstream.status),
            _ => None,
        }
    }

    /// The gRPC status with its rich details and a `google.rpc.RequestInfo` naming the request.
    pub fn to_status_with_request_id(&self, request_id: &str) -> Status {
        self.status(Some(request_id))
    }

    /// The gRPC status, with its rich details.
    pub fn to_status(&self) -> Status {
        self.status(None)
    }

    fn status(&self, request_id: Option<&str>) -> Status {
        let code = self.code();
        let full = self.to_string();
        let message = bounded(&full, MAX_MESSAGE_BYTES);
        let mut details = ErrorDetails::new();
        match self {
            GatewayError::InvalidArgument { field, description } => {
                details.add_bad_request_violation(field.clone(), description.clone());
                details.set_error_info("INVALID_ARGUMENT", GATEWAY_DOMAIN, HashMap::new());
            }
            GatewayError::Upstream(upstream) => {
                let mut metadata =
                    HashMap::from([("http_status".to_string(), upstream.status.to_string())]);
                if message.len() < full.len() {
                    metadata.insert("upstream_message_bytes".to_string(), full.len().to_string());
                }
                let reason = match &upstream.error_type {
                    Some(error_type) => {
                        let error_type = bounded(error_type, MAX_TYPE_BYTES);
                        metadata.insert("upstream_type".to_string(), error_type.to_string());
                        upper_snake(&error_type)
                    }
                    None => format!("HTTP_{}", upstream.status),
                };
                details.set_error_info(reason, upstream.domain.clone(), metadata);
                if upstream.status == 429 {
                    details.set_retry_info(Some(
                        upstream.retry_after.unwrap_or(Duration::from_secs(1)),
                    ));
                }
            }
            GatewayError::CircuitOpen { retry_after }
            | GatewayError::RateLimited { retry_after }
            | GatewayError::UpstreamRateLimited { retry_after } => {
                details.set_error_info(local_reason(self), GATEWAY_DOMAIN, HashMap::new());
                details.set_retry_info(Some(*retry_after));
            }
            other => {
                details.set_error_info(local_reason(other), GATEWAY_DOMAIN, HashMap::new());
            }
        }
        if let Some(request_id) = request_id {
            details.set_request_info(request_id, "");
        }
        Status::with_error_details(code, message, details)
    }
}

/// The most of a message that goes into an answer. The message travels twice in the trailers
/// (`grpc-message`, percent-encoded: up to 3 bytes a byte; and the details, base64), and gRPC
/// clients refuse trailers past 8 KiB by default: 1 KiB keeps the worst case near 5 KiB.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The most of an upstream error `type` that goes into an answer (it is copied twice more, as
/// `reason` and `upstream_type`).
const MAX_TYPE_BYTES: usize = 128;

/// `text` cut on a character boundary to at most `limit` bytes plus a marker saying how long it
/// was; `text` itself when it fits.
pub fn bounded(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… [cut: {} bytes in all]",
        &text[..end],
        text.len()
    ))
}

impl From<GatewayError> for Status {
    fn from(error: GatewayError) -> Status {
        error.into_status()
    }
}

fn local_reason(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::MissingToken => "MISSING_TOKEN",
        GatewayError::Denied => "RPC_DENIED",
        GatewayError::Overloaded => "OVERLOADED",
        GatewayError::InvalidArgument { .. } => "INVALID_ARGUMENT",
        GatewayError::Upstream(_) => "UPSTREAM_ERROR",
        GatewayError::Unreachable(_) => "UPSTREAM_UNREACHABLE",
        GatewayError::ReadFailed(_) => "UPSTREAM_READ_FAILED",
        GatewayError::OutcomeUnknown(_) => "UPSTREAM_OUTCOME_UNKNOWN",
        GatewayError::DeadlineExceeded => "DEADLINE_EXCEEDED",
        GatewayError::ResponseTooLarge { .. } => "UPSTREAM_RESPONSE_TOO_LARGE",
        GatewayError::BadResponse { .. } => "UPSTREAM_BAD_RESPONSE",
        GatewayError::Internal(_) => "INTERNAL",
        GatewayError::CircuitOpen { .. } => "UPSTREAM_CIRCUIT_OPEN",
        GatewayError::NotCached => "NOT_CACHED",
        GatewayError::RateLimited { .. } => crate::ratelimit::RATE_LIMITED,
        GatewayError::UpstreamRateLimited { .. } => crate::ratelimit::UPSTREAM_RATE_LIMITED,
    }
}

/// The canonical name of a gRPC code, `NOT_FOUND`.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The gRPC code for an upstream HTTP error status.
pub fn code_for_http_status(status: u16) -> Code {
    match status {
        400 | 413 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 | 501 => Code::Unimplemented,
        409 => Code::Aborted,
        410 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        502..=504 => Code::Unavailable,
        500..=599 => Code::Internal,
        400..=499 => Code::FailedPrecondition,
        // Not an error status: a defect on the upstream's side (e.g. a 3xx we do not follow).
        _ => Code::Internal,
    }
}

/// `NotFound` → `NOT_FOUND`, `InvalidJSON` → `INVALID_JSON`, `rate-limited` → `RATE_LIMITED`.
pub fn upper_snake(name: &str) -> String {
    heck::ToShoutySnakeCase::to_shouty_snake_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_snake_cases() {
        assert_eq!(upper_snake("NotFound"), "NOT_FOUND");
        assert_eq!(upper_snake("InvalidJSON"), "INVALID_JSON");
        assert_eq!(upper_snake("JSONParseError"), "JSON_PARSE_ERROR");
        assert_eq!(upper_snake("rate-limited"), "RATE_LIMITED");
        assert_eq!(upper_snake("Validation"), "VALIDATION");
        assert_eq!(upper_snake("Error404"), "ERROR404");
    }

    #[test]
    fn http_status_table() {
        let table = [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (405, Code::Unimplemented),
            (409, Code::Aborted),
            (410, Code::FailedPrecondition),
            (413, Code::InvalidArgument),
            (418, Code::FailedPrecondition),
            (422, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (500, Code::Internal),
            (501, Code::Unimplemented),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (507, Code::Internal),
        ];
        for (status, code) in table {
            assert_eq!(code_for_http_status(status), code, "HTTP {status}");
        }
    }

    #[test]
    fn upstream_error_details() {
        let status = GatewayError::Upstream(UpstreamError {
            status: 404,
            error_type: Some("NotFound".into()),
            message: "Organization was not found".into(),
            domain: "api.app.wnology.io".into(),
            retry_after: None,
        })
        .into_status();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "Organization was not found");
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "NOT_FOUND");
        assert_eq!(info.domain, "api.app.wnology.io");
        assert_eq!(info.metadata["http_status"], "404");
        assert_eq!(info.metadata["upstream_type"], "NotFound");
    }

    #[test]
    fn long_upstream_messages_are_cut_to_keep_the_trailers_readable() {
        let long = "é".repeat(30_000);
        let status = GatewayError::Upstream(UpstreamError {
            status: 400,
            error_type: Some("Validation".repeat(100)),
            message: long.clone(),
            domain: "api.app.wnology.io".into(),
            retry_after: None,
        })
        .into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES + 40);
        assert!(status.message().ends_with("[cut: 60000 bytes in all]"));
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.metadata["upstream_message_bytes"], "60000");
        assert!(info.metadata["upstream_type"].len() <= MAX_TYPE_BYTES + 40);
        let http = status.into_http::<tonic::body::Body>();
        let trailer_bytes: usize = http
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        assert!(trailer_bytes < 8 * 1024, "{trailer_bytes} bytes");
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        assert_eq!(bounded("aé", 2), "a… [cut: 3 bytes in all]");
    }

    #[test]
    fn an_open_circuit_says_when_to_retry() {
        let status = GatewayError::CircuitOpen {
            retry_after: Duration::from_millis(2500),
        }
        .into_status();
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().unwrap().reason,
            "UPSTREAM_CIRCUIT_OPEN"
        );
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(2500))
        );
        let status = GatewayError::NotCached.into_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "NOT_CACHED"
        );
    }

    #[test]
    fn rate_limits_are_resource_exhausted_with_their_reason_and_the_wait() {
        for (error, reason) in [
            (
                GatewayError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                "RATE_LIMITED",
            ),
            (
                GatewayError::UpstreamRateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                "UPSTREAM_RATE_LIMITED",
            ),
        ] {
            let status = error.into_status();
            assert_eq!(status.code(), Code::ResourceExhausted);
            let details = status.get_error_details();
            let info = details.error_info().unwrap();
            assert_eq!(
                (info.reason.as_str(), info.domain.as_str()),
                (reason, GATEWAY_DOMAIN)
            );
            let retry = details.retry_info().unwrap().retry_delay.unwrap();
            assert_eq!(retry, Duration::from_millis(1500));
        }
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status =
            GatewayError::invalid("org_id", "must be 24 hexadecimal characters").into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violation = &details.bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "org_id");
    }
}
