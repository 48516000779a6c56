//! The upstream REST client: turns a routed request into the HTTP call the official clients
//! make, sends it on one shared, pooled connection pool, and reads the answer within limits.
//!
//! What goes out (as the official JavaScript client for API 1.30.0 sends it):
//! `Accept: application/json`, `Accept-Version`, the caller's `Authorization` unchanged, the
//! global query parameters `_actions=false&_links=true&_embedded=true` followed by the route's
//! parameters in order, and for every method but GET a JSON body (`{}` when the action has
//! none) with `Content-Type: application/json`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use prost_reflect::Kind;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::{Instrument, field::Empty};

use crate::{
    config::Settings,
    error::{GatewayError, UpstreamError},
    json::{self, UpstreamJson},
    metrics::{Metrics, UpstreamLabels, UpstreamStatus},
    proto,
    routes::{ParamKind, Route, enum_query_value},
    telemetry,
};

/// The global query parameters every official client adds.
pub const GLOBAL_QUERY: &str = "_actions=false&_links=true&_embedded=true";

/// What RFC 3986 query encoding (the JavaScript client's `qs`) leaves as-is: `A-Za-z0-9-._~`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The longest upstream path and query string sent: servers and proxies commonly refuse request
/// lines past 8–16 KiB, and the HTTP client cannot even build some of them, so a longer one is
/// the caller's error, refused before anything is sent.
pub const MAX_PATH_AND_QUERY_BYTES: usize = 16 * 1024;

/// A request resolved to its upstream form, validated, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path and query string, `/orgs/…?_actions=false&…`.
    pub path_and_query: String,
    /// The JSON body (none for GET).
    pub body: Option<Bytes>,
}

/// Resolves `route` for a request message given as its upstream-flavoured JSON (see
/// [`crate::json::to_json_value`]); every check that can fail locally fails here.
pub fn resolve(route: &Route, request: &Value) -> Result<UpstreamRequest, GatewayError> {
    let empty = Map::new();
    let fields = request.as_object().unwrap_or(&empty);

    let mut path = String::with_capacity(route.path.len() + 48);
    for segment in route.path.split('/').skip(1) {
        path.push('/');
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let id = fields.get(name).and_then(Value::as_str).unwrap_or_default();
                check_id(name, id)?;
                path.push_str(id);
            }
            None => path.push_str(segment),
        }
    }

    let mut query = String::from(GLOBAL_QUERY);
    // The field that adds most to the query string, named when the URL is too long.
    let mut longest: Option<(&str, usize)> = None;
    for param in route.query {
        let value = fields.get(param.name);
        let Some(text) = query_value(param.name, param.kind, value)? else {
            if param.required {
                return Err(GatewayError::invalid(field_name(param.name), "is required"));
            }
            continue;
        };
        let before = query.len();
        query.push('&');
        query.push_str(param.name);
        query.push('=');
        query.extend(utf8_percent_encode(&text, QUERY_VALUE));
        let added = query.len() - before;
        if longest.is_none_or(|(_, most)| added > most) {
            longest = Some((param.name, added));
        }
    }
    if path.len() + 1 + query.len() > MAX_PATH_AND_QUERY_BYTES {
        let field = longest.map_or_else(|| "request".to_string(), |(name, _)| field_name(name));
        return Err(GatewayError::invalid(
            field,
            format!(
                "makes the upstream URL longer than {MAX_PATH_AND_QUERY_BYTES} bytes; send less"
            ),
        ));
    }

    let body = match route.body {
        Some(spec) => {
            let Some(body) = fields.get("body").filter(|b| b.is_object()) else {
                return Err(GatewayError::invalid("body", "is required"));
            };
            if let Some(path) = null_path(body, "body") {
                return Err(GatewayError::invalid(
                    path,
                    "is set but empty (a oneof with no member)",
                ));
            }
            for required in spec.required_fields {
                if body.get(required).is_none_or(Value::is_null) {
                    return Err(GatewayError::invalid(
                        format!("body.{}", field_name(required)),
                        "is required",
                    ));
                }
            }
            let clear = mask_paths(fields.get("clearMask"));
            if clear.is_empty() {
                Some(Bytes::from(body.to_string()))
            } else {
                let mut body = body.clone();
                clear_lists(route, &clear, &mut body)?;
                Some(Bytes::from(body.to_string()))
            }
        }
        None if route.method == Method::GET => None,
        None => Some(Bytes::from_static(b"{}")),
    };

    Ok(UpstreamRequest {
        method: route.method.clone(),
        path_and_query: format!("{path}?{query}"),
        body,
    })
}

/// The paths of a `FieldMask` in a request's JSON form (`{"paths": [...]}` as pbjson writes it,
/// or the canonical comma-joined string).
fn mask_paths(mask: Option<&Value>) -> Vec<&str> {
    match mask {
        Some(Value::String(joined)) => joined.split(',').filter(|p| !p.is_empty()).collect(),
        Some(Value::Object(mask)) => mask
            .get("paths")
            .and_then(Value::as_array)
            .map(|paths| paths.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Adds the lists `clear_mask` names (`paths`, as proto or JSON field names) to `body` as `[]`
/// (a map as `{}`): proto3 has no presence for them, so an empty list is otherwise left out and
/// cannot clear the list upstream.
fn clear_lists(route: &Route, paths: &[&str], body: &mut Value) -> Result<(), GatewayError> {
    let invalid = |reason: String| GatewayError::invalid("clear_mask", reason);
    let body_message = json::descriptor_pool()
        .get_service_by_name(route.service.grpc_name())
        .and_then(|service| service.methods().find(|m| m.name() == route.rpc))
        .and_then(|method| method.input().get_field_by_name("body"))
        .and_then(|field| match field.kind() {
            Kind::Message(message) => Some(message),
            _ => None,
        })
        .ok_or_else(|| GatewayError::Internal(format!("{}: no body message", route.action)))?;
    let Some(object) = body.as_object_mut() else {
        return Ok(());
    };
    for &path in paths {
        let field = body_message
            .get_field_by_json_name(path)
            .or_else(|| body_message.get_field_by_name(path));
        let Some(field) = field else {
            return Err(invalid(if path.contains('.') {
                format!("`{path}`: only lists of `body` itself can be cleared")
            } else {
                format!("`{path}` is not a field of {}", body_message.name())
            }));
        };
        let empty = if field.is_map() {
            Value::Object(Map::new())
        } else if field.is_list() {
            Value::Array(Vec::new())
        } else {
            return Err(invalid(format!(
                "`{}` is not a list (only lists and maps can be cleared)",
                field.name()
            )));
        };
        let name = field.json_name();
        if object.get(name).is_some_and(|value| value != &empty) {
            return Err(invalid(format!(
                "`{}` is cleared and given items at once",
                field.name()
            )));
        }
        object.insert(name.to_string(), empty);
    }
    Ok(())
}

/// The first null in a body: pbjson writes none but for a `DisabledAt` whose oneof is unset,
/// which the upstream would refuse.
fn null_path(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Null => Some(path.to_string()),
        Value::Object(object) => object
            .iter()
            .find_map(|(key, v)| null_path(v, &format!("{path}.{}", field_name(key)))),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| null_path(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The query text of one parameter; `None` when the caller left it out.
fn query_value(
    name: &str,
    kind: ParamKind,
    value: Option<&Value>,
) -> Result<Option<String>, GatewayError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = match (kind, value) {
        (ParamKind::Id, Value::String(id)) if id.is_empty() => return Ok(None),
        (ParamKind::Id, Value::String(id)) => {
            check_id(name, id)?;
            id.clone()
        }
        (ParamKind::Text, Value::String(text)) if text.is_empty() => return Ok(None),
        (ParamKind::Text, Value::String(text)) => text.clone(),
        (ParamKind::Integer, Value::Number(n)) => n.to_string(),
        (ParamKind::Flag, Value::Bool(flag)) => flag.to_string(),
        (ParamKind::List, Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                match item.as_str() {
                    Some(item) if !item.is_empty() && !item.contains(',') => names.push(item),
                    _ => {
                        return Err(GatewayError::invalid(
                            field_name(name),
                            "each item must be a non-empty name without commas",
                        ));
                    }
                }
            }
            if names.is_empty() {
                return Ok(None);
            }
            names.join(",")
        }
        (ParamKind::Enum, Value::String(proto_name)) => match enum_query_value(proto_name) {
            Some(upstream) => upstream.to_string(),
            None => return Ok(None),
        },
        (_, other) => {
            return Err(GatewayError::Internal(format!(
                "query parameter {name} has unexpected JSON {other}"
            )));
        }
    };
    Ok(Some(text))
}

/// Ids are 24 hexadecimal characters everywhere upstream; checking them also keeps a caller
/// from steering a call to another path (`org_id = "../me"`).
fn check_id(name: &str, id: &str) -> Result<(), GatewayError> {
    if id.is_empty() {
        return Err(GatewayError::invalid(field_name(name), "is required"));
    }
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GatewayError::invalid(
            field_name(name),
            "must be 24 hexadecimal characters",
        ));
    }
    Ok(())
}

/// The caller's (snake_case) name of an upstream (lowerCamelCase) field: `orgId` → `org_id`.
pub fn field_name(upstream: &str) -> String {
    heck::ToSnakeCase::to_snake_case(upstream)
}

/// One shared, pooled HTTP client for the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    /// `--upstream-url`, parsed once: each request's URL is a copy with its path and query
    /// set, so the host is not parsed (and IDNA-processed) again on every call.
    base: reqwest::Url,
    /// The base URL's own path, before each request's path.
    base_path: String,
    /// The base URL without any user:password, for spans and logs.
    redacted_base_url: String,
    domain: String,
    port: u16,
    accept_version: HeaderValue,
    max_response_bytes: usize,
    retries: u32,
    retry_budget: Arc<TpsBudget>,
    /// `--max-upstream-in-flight`: an attempt holds a permit while its HTTP exchange runs, so
    /// that nothing callers do (resets, storms) puts more than that on the upstream at once.
    in_flight: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// A successful upstream answer.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// The HTTP status (2xx).
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    /// `--upstream-url` is not an absolute http(s) URL.
    #[error("--upstream-url `{0}` is not an absolute http(s) URL")]
    BadUrl(String),
    /// `--accept-version` is not a valid header value.
    #[error("--accept-version `{0}` is not a valid header value")]
    BadAcceptVersion(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl UpstreamClient {
    /// Builds the client from the settings.
    pub fn new(
        settings: &Settings,
        metrics: Arc<Metrics>,
    ) -> Result<UpstreamClient, UpstreamConfigError> {
        let base_url = settings.upstream_url.trim_end_matches('/').to_string();
        let bad_url = || UpstreamConfigError::BadUrl(redact(&base_url));
        let mut url = reqwest::Url::parse(&base_url).map_err(|_| bad_url())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url());
        }
        let domain = url.host_str().ok_or_else(bad_url)?.to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let redacted_base_url = url.as_str().trim_end_matches('/').to_string();
        let accept_version = HeaderValue::from_str(&settings.accept_version)
            .map_err(|_| UpstreamConfigError::BadAcceptVersion(settings.accept_version.clone()))?;
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("wnology-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = reqwest::Url::parse(&base_url).map_err(|_| bad_url())?;
        let base_path = base.path().trim_end_matches('/').to_string();
        Ok(UpstreamClient {
            http,
            base,
            base_path,
            redacted_base_url,
            domain,
            port,
            accept_version,
            max_response_bytes: settings.max_upstream_response_bytes,
            retries: settings.upstream_retries,
            // Retries may add at most 20 % to the calls of the last 10 s, plus 10 a second so
            // that a quiet gateway can still retry.
            retry_budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
            in_flight: Arc::new(Semaphore::new(match settings.upstream_in_flight_bound() {
                0 => Semaphore::MAX_PERMITS,
                bound => bound,
            })),
            metrics,
        })
    }

    /// The upstream host, the `domain` of upstream errors.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The URL of a request: the base URL with the request's path (after the base's own path)
    /// and query.
    fn url(&self, path_and_query: &str) -> reqwest::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        if self.base_path.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.base_path));
        }
        url.set_query(query);
        url
    }

    /// Sends `request` with the caller's `authorization`, within `timeout`, and returns the
    /// success answer; an HTTP error becomes [`GatewayError::Upstream`]. `caller_trace` is the
    /// caller's trace context, forwarded when the gateway does not trace itself.
    ///
    /// A read (GET) that fails on a connection error, 502, 503, 504 or 429 is tried again, up
    /// to `--upstream-retries` times, after an exponential backoff with full jitter (at least
    /// the upstream's `Retry-After`), while the deadline allows and the retry budget (a share
    /// of recent calls) has room, so that a failing upstream is not stormed. Writes are sent
    /// exactly once.
    pub async fn send(
        &self,
        route: &'static Route,
        request: &UpstreamRequest,
        authorization: &HeaderValue,
        caller_trace: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<UpstreamResponse, GatewayError> {
        let deadline = Instant::now() + timeout;
        self.retry_budget.deposit();
        let mut resend_count = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self
                .attempt(
                    route,
                    request,
                    authorization,
                    caller_trace,
                    remaining,
                    resend_count,
                )
                .await;
            let Err(error) = &result else { return result };
            if !route.is_read() || resend_count >= self.retries || !is_retryable(error) {
                return result;
            }
            let delay = backoff(resend_count, error);
            if Instant::now() + delay >= deadline || !self.retry_budget.withdraw() {
                return result;
            }
            tracing::debug!(action = route.action, attempt = resend_count + 1, delay_ms = delay.as_millis() as u64, %error, "retrying upstream read");
            self.metrics.upstream_retry(route.action);
            tokio::time::sleep(delay).await;
            resend_count += 1;
        }
    }

    /// One HTTP exchange, in a client span of its own.
    async fn attempt(
        &self,
        route: &'static Route,
        request: &UpstreamRequest,
        authorization: &HeaderValue,
        caller_trace: &[(HeaderName, HeaderValue)],
        timeout: Duration,
        resend_count: u32,
    ) -> Result<UpstreamResponse, GatewayError> {
        let span = tracing::info_span!(
            "upstream",
            otel.name = %format_args!("{} {}", request.method, route.path),
            otel.kind = "client",
            otel.status_code = Empty,
            "http.request.method" = %request.method,
            "http.request.resend_count" = Empty,
            "url.full" = %format_args!("{}{}", self.redacted_base_url, request.path_and_query),
            "url.template" = route.path,
            "server.address" = %self.domain,
            "server.port" = self.port,
            "http.response.status_code" = Empty,
            "error.type" = Empty,
            "wnology.upstream.action" = route.action,
        );
        if resend_count > 0 {
            span.record("http.request.resend_count", resend_count);
        }
        let started = Instant::now();
        let result = self
            .bounded_exchange(route, request, authorization, caller_trace, timeout, &span)
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(response) => UpstreamStatus::Http(response.status),
            Err(GatewayError::Upstream(error)) => UpstreamStatus::Http(error.status),
            Err(error) => UpstreamStatus::Failed(failure_kind(error)),
        };
        match status {
            UpstreamStatus::Http(code) => {
                span.record("http.response.status_code", code);
                if code >= 400 {
                    span.record("error.type", tracing::field::display(code));
                    span.record("otel.status_code", "ERROR");
                }
            }
            UpstreamStatus::Failed(kind) => {
                span.record("error.type", kind);
                span.record("otel.status_code", "ERROR");
            }
        }
        let elapsed = started.elapsed();
        self.metrics.upstream(
            UpstreamLabels {
                action: route.action,
                status,
            },
            elapsed,
        );
        tracing::debug!(
            parent: &span,
            action = route.action,
            method = %request.method,
            path = %request.path_and_query,
            status = ?status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "upstream call"
        );
        result
    }

    /// [`Self::exchange`] once a permit of `--max-upstream-in-flight` is free, all within
    /// `timeout`.
    async fn bounded_exchange(
        &self,
        route: &Route,
        request: &UpstreamRequest,
        authorization: &HeaderValue,
        caller_trace: &[(HeaderName, HeaderValue)],
        timeout: Duration,
        span: &tracing::Span,
    ) -> Result<UpstreamResponse, GatewayError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = tokio::time::timeout_at(deadline, self.in_flight.acquire())
            .await
            .map_err(|_| GatewayError::DeadlineExceeded)?
            .map_err(|_| GatewayError::Internal("upstream permits closed".into()))?;
        let _in_flight = (permit, self.metrics.upstream_in_flight());
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.exchange(route, request, authorization, caller_trace, remaining, span)
            .await
    }

    async fn exchange(
        &self,
        route: &Route,
        request: &UpstreamRequest,
        authorization: &HeaderValue,
        caller_trace: &[(HeaderName, HeaderValue)],
        timeout: Duration,
        span: &tracing::Span,
    ) -> Result<UpstreamResponse, GatewayError> {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert("accept-version", self.accept_version.clone());
        headers.insert(header::AUTHORIZATION, authorization.clone());
        if telemetry::exporting() {
            telemetry::inject_context(span, &mut headers);
        } else {
            for (name, value) in caller_trace {
                headers.insert(name.clone(), value.clone());
            }
        }
        let exchange = async {
            let url = self.url(&request.path_and_query);
            let mut builder = self
                .http
                .request(request.method.clone(), url)
                .headers(headers);
            if let Some(body) = &request.body {
                builder = builder
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let response = builder
                .send()
                .await
                .map_err(|e| transport_error(route, e))?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let body = self.read_body(route, response).await?;
            if status.is_success() {
                Ok(UpstreamResponse {
                    status: status.as_u16(),
                    body,
                })
            } else {
                Err(GatewayError::Upstream(self.upstream_error(
                    status,
                    &body,
                    retry_after,
                )))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(GatewayError::DeadlineExceeded))
    }

    async fn read_body(
        &self,
        route: &Route,
        mut response: reqwest::Response,
    ) -> Result<Bytes, GatewayError> {
        let limit = self.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(GatewayError::ResponseTooLarge { limit });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(route, e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(GatewayError::ResponseTooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn upstream_error(
        &self,
        status: reqwest::StatusCode,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> UpstreamError {
        let parsed = proto::Error::from_upstream_json(body).ok();
        let (error_type, message) = match parsed {
            Some(proto::Error {
                r#type,
                message: Some(message),
            }) if !message.is_empty() => (r#type, message),
            Some(proto::Error { r#type, .. }) => (r#type, status_line(status)),
            None => (None, status_line(status)),
        };
        UpstreamError {
            status: status.as_u16(),
            error_type,
            message,
            domain: self.domain.clone(),
            retry_after,
        }
    }
}

/// A URL with any `user:password@` removed (for error messages).
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// Whether a failed read may be tried again: the upstream did not process it, or said it is
/// temporarily unable to.
fn is_retryable(error: &GatewayError) -> bool {
    match error {
        GatewayError::Unreachable(_) | GatewayError::ReadFailed(_) => true,
        GatewayError::Upstream(upstream) => matches!(upstream.status, 429 | 502 | 503 | 504),
        _ => false,
    }
}

/// Backoff before resend `n` (0-based): full jitter over 25 ms × 2ⁿ, but never less than the
/// upstream's `Retry-After`.
fn backoff(resend_count: u32, error: &GatewayError) -> Duration {
    let ceiling = Duration::from_millis(25).saturating_mul(1 << resend_count.min(10));
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    match error {
        GatewayError::Upstream(UpstreamError {
            retry_after: Some(after),
            ..
        }) => jittered.max(*after),
        _ => jittered,
    }
}

/// The `error.type` / metrics label of a failure without an HTTP answer.
fn failure_kind(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::Unreachable(_) => "connect_error",
        GatewayError::ReadFailed(_) | GatewayError::OutcomeUnknown(_) => "connection_lost",
        GatewayError::DeadlineExceeded => "timeout",
        GatewayError::ResponseTooLarge { .. } => "response_too_large",
        _ => "other",
    }
}

fn status_line(status: reqwest::StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Unknown Status")
    )
}

fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// A transport failure: before sending it is UNAVAILABLE; after sending, a read may be retried
/// (UNAVAILABLE) but a write's outcome is unknown (UNKNOWN), so clients do not blindly resend it.
fn transport_error(route: &Route, error: reqwest::Error) -> GatewayError {
    let (timeout, connect) = (error.is_timeout(), error.is_connect());
    let detail = error_chain(error.without_url());
    if timeout {
        GatewayError::DeadlineExceeded
    } else if connect {
        GatewayError::Unreachable(detail)
    } else if route.is_read() {
        GatewayError::ReadFailed(detail)
    } else {
        GatewayError::OutcomeUnknown(detail)
    }
}

/// The error and its sources, without the URL; reqwest never includes headers, so the token
/// cannot leak through here.
fn error_chain(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's URL is what parsing the base and the path as one string gives.
    #[test]
    fn request_urls_are_the_base_with_the_path_and_query() {
        let bases = [
            "http://127.0.0.1:9",
            "https://api.example.com/",
            "https://user:secret@api.example.com/base/",
            "http://h:1/v1",
        ];
        let paths = [
            "/me/payloadCounts?start=1&end=2",
            "/orgs/575ed6e87ae143cd83dc4aa8",
            "/orgs?filter=a%20b&summaryInclude=x%2Cy&sortField=name",
            "/me",
        ];
        for base in bases {
            let settings = crate::config::Settings::for_upstream(base);
            let client = UpstreamClient::new(&settings, Arc::new(Metrics::new())).unwrap();
            for path in paths {
                let expected =
                    reqwest::Url::parse(&format!("{}{path}", base.trim_end_matches('/'))).unwrap();
                assert_eq!(client.url(path), expected, "{base} + {path}");
            }
        }
    }
    use crate::routes;
    use serde_json::json;

    #[test]
    fn path_query_and_body() {
        let call = resolve(
            &routes::ORG_REMOVE_MEMBER,
            &json!({"orgId": "575ed6e87ae143cd83dc4aa8", "userId": "575ED6E87AE143CD83DC4AA9", "summaryInclude": ["payloadCount", "deviceCount"]}),
        )
        .unwrap();
        assert_eq!(call.method, Method::DELETE);
        assert_eq!(
            call.path_and_query,
            "/orgs/575ed6e87ae143cd83dc4aa8/member?_actions=false&_links=true&_embedded=true&userId=575ED6E87AE143CD83DC4AA9&summaryInclude=payloadCount%2CdeviceCount"
        );
        assert_eq!(call.body.as_deref(), Some(&b"{}"[..]));
    }

    /// The request as the gateway resolves it: through its JSON form.
    fn resolve_message<M: prost::Name + serde::Serialize>(
        route: &Route,
        message: &M,
    ) -> Result<UpstreamRequest, GatewayError> {
        resolve(route, &crate::json::to_json_value(message).unwrap())
    }

    fn modify_member(paths: &[&str], body: proto::OrgMemberPatch) -> proto::OrgModifyMemberRequest {
        proto::OrgModifyMemberRequest {
            org_id: "575ed6e87ae143cd83dc4aa8".into(),
            body: Some(body),
            clear_mask: Some(pbjson_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
            ..Default::default()
        }
    }

    fn member() -> proto::OrgMemberPatch {
        proto::OrgMemberPatch {
            user_id: Some("575ed6e87ae143cd83dc4aa9".into()),
            ..Default::default()
        }
    }

    #[test]
    fn clear_mask_sends_empty_lists() {
        let call = resolve_message(
            &routes::ORG_MODIFY_MEMBER,
            &modify_member(&["application_roles", "dashboardRoles"], member()),
        )
        .unwrap();
        let body: Value = serde_json::from_slice(call.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"userId": "575ed6e87ae143cd83dc4aa9", "applicationRoles": [], "dashboardRoles": []})
        );
        // Without a mask an empty list is left out, as before.
        let call =
            resolve_message(&routes::ORG_MODIFY_MEMBER, &modify_member(&[], member())).unwrap();
        assert_eq!(
            call.body.as_deref(),
            Some(&br#"{"userId":"575ed6e87ae143cd83dc4aa9"}"#[..])
        );
    }

    #[test]
    fn clear_mask_names_only_empty_lists_of_the_body() {
        let with_roles = proto::OrgMemberPatch {
            application_roles: vec![proto::ResourceRole::default()],
            ..member()
        };
        for (paths, body, reason) in [
            (&["role"][..], member(), "`role` is not a list"),
            (
                &["nope"][..],
                member(),
                "`nope` is not a field of OrgMemberPatch",
            ),
            (
                &["limits.tags"][..],
                member(),
                "only lists of `body` itself",
            ),
            (
                &["application_roles"][..],
                with_roles,
                "is cleared and given items at once",
            ),
        ] {
            let error = resolve_message(&routes::ORG_MODIFY_MEMBER, &modify_member(paths, body))
                .unwrap_err();
            let GatewayError::InvalidArgument {
                field,
                description: got,
            } = &error
            else {
                panic!("{paths:?}: {error:?}");
            };
            assert_eq!(field, "clear_mask");
            assert!(got.contains(reason), "{paths:?}: {got}");
        }
    }

    #[test]
    fn ids_are_checked() {
        for bad in [
            "../me",
            "575ed6e87ae143cd83dc4aa",
            "575ed6e87ae143cd83dc4aaZ",
            "575ed6e87ae143cd83dc4aa8/x",
        ] {
            let error = resolve(&routes::ORG_GET, &json!({"orgId": bad})).unwrap_err();
            assert!(
                matches!(error, GatewayError::InvalidArgument { ref field, .. } if field == "org_id"),
                "{bad}: {error}"
            );
        }
        let error = resolve(&routes::ORG_GET, &json!({})).unwrap_err();
        assert_eq!(error.to_string(), "invalid `org_id`: is required");
        let error = resolve(
            &routes::ORG_REVOKE_INVITE,
            &json!({"orgId": "575ed6e87ae143cd83dc4aa8"}),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "invalid `invite_id`: is required");
    }

    #[test]
    fn an_over_long_url_is_refused_naming_the_field() {
        let filter = "a".repeat(70_000);
        let error = resolve(&routes::ORG_LIST, &json!({"filter": filter})).unwrap_err();
        assert!(
            matches!(error, GatewayError::InvalidArgument { ref field, .. } if field == "filter"),
            "{error}"
        );
        let items: Vec<String> = (0..100_000).map(|i| format!("s{i}")).collect();
        let error = resolve(&routes::ORG_LIST, &json!({"summaryInclude": items})).unwrap_err();
        assert!(
            matches!(error, GatewayError::InvalidArgument { ref field, .. } if field == "summary_include"),
            "{error}"
        );
        let near = "a".repeat(MAX_PATH_AND_QUERY_BYTES - 200);
        assert!(resolve(&routes::ORG_LIST, &json!({"filter": near})).is_ok());
    }

    #[test]
    fn enums_integers_and_text() {
        let call = resolve(
            &routes::ORG_LIST,
            &json!({"sortField": "SORT_FIELD_CREATION_DATE", "sortDirection": "SORT_DIRECTION_DESC", "page": 0, "perPage": 5, "filterField": "FILTER_FIELD_NAME", "filter": "my*org 1"}),
        )
        .unwrap();
        assert_eq!(
            call.path_and_query,
            "/orgs?_actions=false&_links=true&_embedded=true&sortField=creationDate&sortDirection=desc&page=0&perPage=5&filterField=name&filter=my%2Aorg%201"
        );
        assert_eq!(call.body, None);
    }

    #[test]
    fn bodies_and_their_required_fields() {
        assert_eq!(
            resolve(&routes::ORG_CREATE, &json!({}))
                .unwrap_err()
                .to_string(),
            "invalid `body`: is required"
        );
        assert_eq!(
            resolve(&routes::ORG_CREATE, &json!({"body": {"description": "x"}}))
                .unwrap_err()
                .to_string(),
            "invalid `body.name`: is required"
        );
        assert_eq!(
            resolve(&routes::INSTANCE_ORG_PATCH, &json!({"instanceId": "575ed6e87ae143cd83dc4aa8", "orgId": "575ed6e87ae143cd83dc4aa8", "body": {"disabledAt": null}}))
                .unwrap_err()
                .to_string(),
            "invalid `body.disabled_at`: is set but empty (a oneof with no member)"
        );
        let call = resolve(&routes::ORG_CREATE, &json!({"body": {"name": "x"}})).unwrap();
        assert_eq!(call.body.as_deref(), Some(&br#"{"name":"x"}"#[..]));
    }
}
