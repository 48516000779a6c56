//! gRPC-Web for browsers on the gRPC port: the layers in front of every service when
//! `--grpc-web` is on (the default).
//!
//! From the outside in: tower-http's CORS (preflights answered, the gRPC headers exposed, origins
//! from `--cors-allowed-origins`), tonic-web's translation (`application/grpc-web`, `+proto`,
//! `-text` over HTTP/1.1 and HTTP/2, trailers in the body), then [`Guarded`], which refuses a
//! call whose `Origin` is not allowed and holds HTTP/1.1 requests to `--max-header-bytes` (on
//! HTTP/2 the server's `SETTINGS_MAX_HEADER_LIST_SIZE` does that). Inside, the services see an
//! ordinary gRPC call, so auth passthrough, the cache, limits, the deny list, load shedding,
//! tracing, metrics and the access log apply to gRPC-Web calls unchanged.
//!
//! [`WebService`] sends plain gRPC calls (HTTP/2, no `Origin`, not gRPC-Web) around these
//! layers: they would only re-box the bodies and add CORS headers no gRPC client reads.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::future::{Either as EitherFuture, Ready, ready};
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use tonic::{Code, Status, body::Body, server::NamedService};
use tonic_types::{ErrorDetails, StatusExt};
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{
    Layer, Service, ServiceExt,
    util::{Either, Oneshot},
};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use crate::error::GATEWAY_DOMAIN;

/// Request headers a page may send: the gRPC-Web client's own, the token, and the metadata the
/// gateway reads (request id, cache bypass, trace context).
const ALLOWED_HEADERS: [&str; 9] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
    "x-request-id",
    "cache-control",
    "traceparent",
    "tracestate",
];

/// Response headers a page may read: the status (trailers-only answers carry it in headers) and
/// the gateway's response metadata.
const EXPOSED_HEADERS: [&str; 6] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "x-cache",
    "age",
];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(2 * 60 * 60);

/// Why the gRPC-Web settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A `--cors-allowed-origins` entry is not `scheme://host[:port]`.
    #[error(
        "`{0}` is not an origin: write `http://host[:port]` or `https://host[:port]`, without a path, or `*`"
    )]
    NotAnOrigin(String),
    /// `*` was listed beside named origins.
    #[error("--cors-allowed-origins: `*` (any origin) cannot be listed with other origins")]
    WildcardWithOthers,
}

/// Parses one `--cors-allowed-origins` entry into the form browsers send in `Origin`
/// (lowercase, no default port). `*` is any origin; an empty entry is ignored.
pub fn parse_origin(text: &str) -> Result<String, WebError> {
    let text = text.trim();
    if text.is_empty() || text == "*" {
        return Ok(text.to_string());
    }
    let invalid = || WebError::NotAnOrigin(text.to_string());
    // `Uri` reads `https://x` and `https://x/` alike, so the path is checked on the text.
    let bare = text
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?', '#', '@']));
    let uri: Uri = text.parse().map_err(|_| invalid())?;
    let (Some(scheme), Some(authority), true) = (uri.scheme_str(), uri.authority(), bare) else {
        return Err(invalid());
    };
    if !matches!(scheme, "http" | "https") {
        return Err(invalid());
    }
    let host = authority.host().to_ascii_lowercase();
    let origin = match (scheme, authority.port_u16()) {
        ("http", Some(80)) | ("https", Some(443)) | (_, None) => format!("{scheme}://{host}"),
        (_, Some(port)) => format!("{scheme}://{host}:{port}"),
    };
    HeaderValue::from_str(&origin).map_err(|_| invalid())?;
    Ok(origin)
}

/// What `--grpc-web`, `--cors-allowed-origins` and `--max-header-bytes` ask of the layer.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// `--grpc-web`.
    pub enabled: bool,
    /// `--cors-allowed-origins`, each parsed by [`parse_origin`].
    pub allowed_origins: Vec<String>,
    /// `--max-header-bytes`, enforced here on HTTP/1.1.
    pub max_header_bytes: u32,
}

/// Which origins may call.
#[derive(Debug)]
enum Origins {
    Any,
    /// Empty: no cross-origin browser access.
    Only(Vec<HeaderValue>),
}

impl Origins {
    fn allows(&self, origin: &HeaderValue) -> bool {
        match self {
            Origins::Any => true,
            Origins::Only(origins) => origins.contains(origin),
        }
    }
}

/// The gRPC-Web layers, or nothing when `--grpc-web false`.
#[derive(Debug, Clone)]
pub struct WebLayer(Option<(CorsLayer, Arc<Policy>)>);

impl WebLayer {
    /// The layer `options` describe.
    pub fn new(options: &WebOptions) -> Result<WebLayer, WebError> {
        if !options.enabled {
            return Ok(WebLayer(None));
        }
        let named: Vec<&str> = options
            .allowed_origins
            .iter()
            .map(|origin| origin.trim())
            .filter(|origin| !origin.is_empty())
            .collect();
        let origins = if named.contains(&"*") {
            if named.len() > 1 {
                return Err(WebError::WildcardWithOthers);
            }
            Origins::Any
        } else {
            let parsed = named.iter().map(|origin| {
                let origin = parse_origin(origin)?;
                HeaderValue::from_str(&origin).map_err(|_| WebError::NotAnOrigin(origin))
            });
            Origins::Only(parsed.collect::<Result<_, _>>()?)
        };
        let allow_origin = match &origins {
            Origins::Any => AllowOrigin::any(),
            Origins::Only(list) => AllowOrigin::list(list.iter().cloned()),
        };
        // No `allow_credentials`: the token travels in `authorization`, never in cookies, so a
        // page never needs credentialed requests (and `*` stays legal).
        let cors = CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE);
        let policy = Policy {
            origins,
            max_header_bytes: usize::try_from(options.max_header_bytes).unwrap_or(usize::MAX),
        };
        Ok(WebLayer(Some((cors, Arc::new(policy)))))
    }

    /// Whether gRPC-Web is served (the server must then accept HTTP/1.1).
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }
}

impl<S: Clone> Layer<S> for WebLayer {
    type Service = Either<WebService<S>, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            Some((cors, policy)) => {
                let guarded = Guarded {
                    inner: inner.clone(),
                    policy: Arc::clone(policy),
                };
                Either::Left(WebService {
                    web: Arc::new(cors.layer(GrpcWebLayer::new().layer(guarded))),
                    plain: inner,
                })
            }
            None => Either::Right(inner),
        }
    }
}

/// Steers browser and gRPC-Web requests through CORS, tonic-web and the [`Policy`], and plain
/// gRPC calls straight to the services.
#[derive(Debug, Clone)]
pub struct WebService<S> {
    /// Shared, and cloned only for a call that needs it: hyper clones the service for every
    /// request, and the CORS layer's clone allocates.
    web: Arc<Cors<GrpcWebService<Guarded<S>>>>,
    plain: S,
}

/// Whether `request` needs the web layers: anything on HTTP/1.x (tonic-web answers what is not
/// gRPC-Web there), preflights, requests from a page (`Origin`) and gRPC-Web content types.
fn needs_web_layers<B>(request: &Request<B>) -> bool {
    request.version() < Version::HTTP_2
        || request.method() == Method::OPTIONS
        || request.headers().contains_key(header::ORIGIN)
        || request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"))
}

impl<S> Service<Request<Body>> for WebService<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = EitherFuture<Oneshot<Cors<GrpcWebService<Guarded<S>>>, Request<Body>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if needs_web_layers(&request) {
            EitherFuture::Left(Cors::clone(&self.web).oneshot(request))
        } else {
            EitherFuture::Right(self.plain.call(request))
        }
    }
}

/// The origin and HTTP/1.1 header-size checks.
#[derive(Debug)]
pub struct Policy {
    origins: Origins,
    max_header_bytes: usize,
}

impl Policy {
    /// The status a call is refused with, if it is.
    fn refusal<B>(&self, request: &Request<B>) -> Option<Status> {
        if let Some(origin) = request.headers().get(header::ORIGIN)
            && !self.origins.allows(origin)
        {
            let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            tracing::debug!(%origin, "call from an origin --cors-allowed-origins does not list");
            let mut details = ErrorDetails::new();
            let metadata = HashMap::from([("origin".to_string(), origin.clone())]);
            details.set_error_info("ORIGIN_NOT_ALLOWED", GATEWAY_DOMAIN, metadata);
            return Some(Status::with_error_details(
                Code::PermissionDenied,
                format!(
                    "origin `{origin}` is not allowed to call this gateway (--cors-allowed-origins)"
                ),
                details,
            ));
        }
        if request.version() < Version::HTTP_2 {
            // Counted as HTTP/2 counts SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113, 6.5.2).
            let size: usize = request
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 32)
                .sum();
            if size > self.max_header_bytes {
                let mut details = ErrorDetails::new();
                details.set_error_info("HEADERS_TOO_LARGE", GATEWAY_DOMAIN, HashMap::new());
                return Some(Status::with_error_details(
                    Code::ResourceExhausted,
                    format!(
                        "request headers of {size} bytes exceed {} bytes (--max-header-bytes)",
                        self.max_header_bytes
                    ),
                    details,
                ));
            }
        }
        None
    }
}

/// A service behind the [`Policy`]: refused calls are answered here, as gRPC statuses (which
/// tonic-web then frames for the browser), before any service sees them.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<Request<B>> for Guarded<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = EitherFuture<S::Future, Ready<Result<Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.policy.refusal(&request) {
            Some(status) => EitherFuture::Right(ready(Ok(status.into_http()))),
            None => EitherFuture::Left(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_as_browsers_send_them() {
        assert_eq!(
            parse_origin("https://Dash.Example.com:443").unwrap(),
            "https://dash.example.com"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(parse_origin(" * ").unwrap(), "*");
        for bad in [
            "dash.example.com",
            "ftp://x",
            "https://x/app",
            "https://x/",
            "https://u@x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_stands_alone() {
        let options = |origins: &[&str]| WebOptions {
            enabled: true,
            allowed_origins: origins.iter().map(ToString::to_string).collect(),
            max_header_bytes: 16384,
        };
        assert!(WebLayer::new(&options(&["*"])).is_ok());
        assert!(WebLayer::new(&options(&[])).is_ok());
        assert!(matches!(
            WebLayer::new(&options(&["*", "https://a.example"])),
            Err(WebError::WildcardWithOthers)
        ));
        let disabled = WebOptions {
            enabled: false,
            ..options(&[])
        };
        assert!(!WebLayer::new(&disabled).unwrap().enabled());
    }
}
