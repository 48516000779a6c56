//! The upstream REST client: turns a routed request into the HTTP call the official clients
//! make, sends it on one shared, pooled connection pool, and reads the answer within limits.
//!
//! What goes out (as the official JavaScript client for API 1.30.0 sends it):
//! `Accept: application/json`, `Accept-Version`, the caller's `Authorization` unchanged, the
//! global query parameters `_actions=false&_links=true&_embedded=true` followed by the route's
//! parameters in order, and for every method but GET a JSON body (`{}` when the action has
//! none) with `Content-Type: application/json`.
//!
//! The request is built by [`resolve`] (every local check), the client here sends it (bounded
//! in flight, within the deadline), and [`retry`] decides whether and when a failed read is
//! sent again.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::sync::Semaphore;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::{Instrument, field::Empty};

use crate::{
    config::Settings,
    error::{GatewayError, UpstreamError},
    json::UpstreamJson,
    metrics::{Metrics, UpstreamLabels, UpstreamStatus},
    proto,
    routes::Route,
    telemetry,
};

pub mod breaker;
mod resolve;
mod retry;

use breaker::{Breaker, SystemClock, Transition};
pub use resolve::{GLOBAL_QUERY, MAX_PATH_AND_QUERY_BYTES, UpstreamRequest, field_name, resolve};
use retry::{backoff, is_retryable};

/// One shared, pooled HTTP client for the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    http: reqwest::Client,
    /// `--upstream-url`, parsed once: each request's URL is a copy with its path and query
    /// set, so the host is not parsed (and IDNA-processed) again on every call.
    base: reqwest::Url,
    /// The base URL's own path, before each request's path.
    base_path: String,
    /// Whether the gateway exports spans (see [`UpstreamClient::traced`]).
    exporting: bool,
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
    /// The circuit breaker around every attempt; `None` when disabled.
    breaker: Option<Arc<Breaker>>,
    metrics: Arc<Metrics>,
    /// Told of each failed attempt, so that a 429 holds its caller back (`--rate-limit-*`).
    back_pressure: Option<crate::ratelimit::BackPressure>,
}

/// One request to send upstream and whose it is: the route, the resolved request, the caller's
/// `authorization` (passed on unchanged) and the caller's trace context (forwarded when the
/// gateway does not trace itself).
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The RPC's route.
    pub route: &'static Route,
    /// The REST request.
    pub request: &'a UpstreamRequest,
    /// The caller's `authorization` header.
    pub authorization: &'a HeaderValue,
    /// The caller's trace headers (empty when the gateway traces).
    pub caller_trace: &'a [(HeaderName, HeaderValue)],
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
            exporting: false,
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
            breaker: circuit_breaker(settings, &metrics),
            metrics,
            back_pressure: None,
        })
    }

    /// Tells `back_pressure` of every failed attempt (the upstream's 429s hold callers back).
    pub fn with_back_pressure(
        mut self,
        back_pressure: crate::ratelimit::BackPressure,
    ) -> UpstreamClient {
        self.back_pressure = Some(back_pressure);
        self
    }

    /// Puts the gateway's own client spans' trace context on upstream requests (when the
    /// gateway exports spans) instead of forwarding the caller's.
    pub fn traced(mut self, tracing: &telemetry::Tracing) -> UpstreamClient {
        self.exporting = tracing.exporting();
        self
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
        call: Outbound<'_>,
        timeout: Duration,
    ) -> Result<UpstreamResponse, GatewayError> {
        let route = call.route;
        let deadline = Instant::now() + timeout;
        self.retry_budget.deposit();
        let mut resend_count = 0;
        loop {
            let permit = match &self.breaker {
                Some(breaker) => Some(breaker.admit().map_err(|refused| {
                    self.metrics.upstream_breaker_refused();
                    GatewayError::CircuitOpen {
                        retry_after: refused.retry_after,
                    }
                })?),
                None => None,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self.attempt(call, remaining, resend_count).await;
            if let Some(permit) = permit {
                permit.record(is_upstream_failure(&result));
            }
            let Err(error) = &result else { return result };
            if let Some(back_pressure) = &self.back_pressure {
                back_pressure.observe(route.action, call.authorization, error);
            }
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
        call: Outbound<'_>,
        timeout: Duration,
        resend_count: u32,
    ) -> Result<UpstreamResponse, GatewayError> {
        let span = self.client_span(call, resend_count);
        let started = Instant::now();
        let result = self
            .bounded_exchange(call, timeout, &span)
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(response) => UpstreamStatus::Http(response.status),
            Err(GatewayError::Upstream(error)) => UpstreamStatus::Http(error.status),
            Err(error) => UpstreamStatus::Failed(failure_kind(error)),
        };
        record_status(&span, status);
        let elapsed = started.elapsed();
        let action = call.route.action;
        self.metrics
            .upstream(UpstreamLabels { action, status }, elapsed);
        tracing::debug!(
            parent: &span,
            action,
            method = %call.request.method,
            path = %call.request.path_and_query,
            status = ?status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "upstream call"
        );
        result
    }

    /// The client span of one attempt (OpenTelemetry's HTTP client conventions).
    fn client_span(&self, call: Outbound<'_>, resend_count: u32) -> tracing::Span {
        let (route, request) = (call.route, call.request);
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
        span
    }

    /// [`Self::exchange`] once a permit of `--max-upstream-in-flight` is free, all within
    /// `timeout`.
    async fn bounded_exchange(
        &self,
        call: Outbound<'_>,
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
        self.exchange(call, remaining, span).await
    }

    async fn exchange(
        &self,
        call: Outbound<'_>,
        timeout: Duration,
        span: &tracing::Span,
    ) -> Result<UpstreamResponse, GatewayError> {
        let Outbound {
            route,
            request,
            authorization,
            caller_trace,
        } = call;
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert("accept-version", self.accept_version.clone());
        headers.insert(header::AUTHORIZATION, authorization.clone());
        if self.exporting {
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

/// The circuit breaker of `--upstream-breaker-*`, which logs and counts its transitions.
fn circuit_breaker(settings: &Settings, metrics: &Arc<Metrics>) -> Option<Arc<Breaker>> {
    let metrics = Arc::clone(metrics);
    let observer = Box::new(move |transition: Transition| {
        metrics.upstream_breaker_transition(transition.from.as_str(), transition.to);
        tracing::warn!(
            from = transition.from.as_str(),
            to = transition.to.as_str(),
            cooldown_ms = transition.cooldown.as_millis() as u64,
            "upstream circuit breaker changed state"
        );
    });
    Breaker::new(&settings.upstream_breaker, Arc::new(SystemClock), observer).map(Arc::new)
}

/// Whether an attempt's outcome says the upstream itself is in trouble (the breaker counts
/// it): no connection, a broken one, a timeout, a 5xx. A 4xx is the upstream working.
pub fn is_upstream_failure(result: &Result<UpstreamResponse, GatewayError>) -> bool {
    match result {
        Ok(_) => false,
        Err(GatewayError::Upstream(upstream)) => upstream.status >= 500,
        Err(
            GatewayError::Unreachable(_)
            | GatewayError::ReadFailed(_)
            | GatewayError::OutcomeUnknown(_)
            | GatewayError::DeadlineExceeded,
        ) => true,
        Err(_) => false,
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

/// The `error.type` / metrics label of a failure without an HTTP answer.
/// Records how an attempt ended on its span (an error status for HTTP errors and failures).
fn record_status(span: &tracing::Span, status: UpstreamStatus) {
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
}

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
}
