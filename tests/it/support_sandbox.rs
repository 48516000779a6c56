//! Shared harness of the sandbox end-to-end tests: a sandbox (the in-memory simulator of the
//! upstream REST API) on an ephemeral loopback port, the real gateway in front of it, and small
//! helpers to read what the gateway answered (`x-cache`, error details).
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;
use wnology_gateway::{
    config::Settings,
    sandbox::{Sandbox, SandboxOptions},
};

use crate::support::TestGateway;

/// The `ErrorInfo.domain` of errors the sandbox answered: the upstream host the gateway calls.
pub(crate) const SANDBOX_DOMAIN: &str = "127.0.0.1";

/// A sandbox serving on `127.0.0.1:0`, stopped when dropped.
pub(crate) struct RunningSandbox {
    /// Shares state with the served sandbox (for `request_count`).
    pub sandbox: Sandbox,
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl RunningSandbox {
    /// Starts a sandbox with `options` through [`Sandbox::serve`].
    pub(crate) async fn start(options: SandboxOptions) -> RunningSandbox {
        let sandbox = Sandbox::new(options).expect("the built-in seed is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let serving = sandbox.clone();
        tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        RunningSandbox {
            sandbox,
            addr,
            shutdown: Some(tx),
        }
    }

    /// Starts a sandbox whose router is wrapped in a layer that records every exchange (the raw
    /// response body exactly as the sandbox wrote it).
    pub(crate) async fn start_recording(options: SandboxOptions) -> (RunningSandbox, ExchangeLog) {
        let sandbox = Sandbox::new(options).expect("the built-in seed is valid");
        let log = ExchangeLog::default();
        let router = sandbox
            .router()
            .layer(middleware::from_fn_with_state(log.clone(), record));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        let running = RunningSandbox {
            sandbox,
            addr,
            shutdown: Some(tx),
        };
        (running, log)
    }

    /// The base URL the gateway is given.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// HTTP requests the sandbox has received so far.
    pub(crate) fn requests(&self) -> u64 {
        self.sandbox.request_count()
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// One HTTP exchange the sandbox served.
#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub method: String,
    /// Path and query, exactly as received.
    pub path_and_query: String,
    pub status: u16,
    /// The response body, byte for byte.
    pub body: Vec<u8>,
}

/// The exchanges recorded by [`RunningSandbox::start_recording`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ExchangeLog(Arc<Mutex<Vec<Exchange>>>);

impl ExchangeLog {
    /// Removes and returns everything recorded so far.
    pub(crate) fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

async fn record(State(log): State<ExchangeLog>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("sandbox bodies are in memory");
    log.0.lock().unwrap().push(Exchange {
        method,
        path_and_query,
        status: parts.status.as_u16(),
        body: body.to_vec(),
    });
    Response::from_parts(parts, Body::from(body))
}

/// A sandbox with the built-in seed and the real gateway (default settings) in front of it.
pub(crate) struct Stack {
    pub upstream: RunningSandbox,
    pub gateway: TestGateway,
}

impl Stack {
    /// The built-in seed, invitations valid for 7 days.
    pub(crate) async fn start() -> Stack {
        Stack::start_with(SandboxOptions::default()).await
    }

    /// A sandbox started with `options`.
    pub(crate) async fn start_with(options: SandboxOptions) -> Stack {
        let upstream = RunningSandbox::start(options).await;
        let gateway = TestGateway::start_with(Settings::for_upstream(upstream.url())).await;
        Stack { upstream, gateway }
    }

    pub(crate) async fn channel(&self) -> Channel {
        self.gateway.channel().await
    }
}

/// Invitations that expire `ttl` after they are made.
pub(crate) fn invite_ttl(ttl: Duration) -> SandboxOptions {
    SandboxOptions {
        invite_ttl: ttl,
        ..SandboxOptions::default()
    }
}

/// A request with `authorization: Bearer <token>` and `cache-control: no-cache` (read through
/// the cache to the upstream).
pub(crate) fn uncached<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = crate::support::with_token(message, token);
    request
        .metadata_mut()
        .insert("cache-control", "no-cache".parse().unwrap());
    request
}

/// The `x-cache` metadata of a reply (`hit`, `miss`, `bypass`), or `-` when there is none.
pub(crate) fn x_cache<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// Unwraps a reply, naming the RPC on failure.
#[track_caller]
pub(crate) fn ok<T>(what: &str, reply: Result<tonic::Response<T>, Status>) -> tonic::Response<T> {
    reply.unwrap_or_else(|status| {
        panic!(
            "{what}: expected success, got {:?}: {}",
            status.code(),
            status.message()
        )
    })
}

/// The error of a reply that must have failed.
#[track_caller]
pub(crate) fn err<T: std::fmt::Debug>(
    what: &str,
    reply: Result<tonic::Response<T>, Status>,
) -> Status {
    match reply {
        Ok(response) => panic!("{what}: expected an error, got {response:?}"),
        Err(status) => status,
    }
}

/// Checks a status the gateway made from a sandbox (upstream) HTTP error: the code, the
/// upstream's message kept verbatim, and the `ErrorInfo` (reason = upstream type in
/// UPPER_SNAKE, domain = upstream host, `http_status`, `upstream_type`).
#[track_caller]
pub(crate) fn assert_upstream_error(
    status: &Status,
    code: Code,
    http_status: u16,
    upstream_type: &str,
    message: &str,
) {
    assert_eq!(status.code(), code, "code of {status:?}");
    assert_eq!(status.message(), message, "message of {status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(
        info.reason,
        wnology_gateway::error::upper_snake(upstream_type)
    );
    assert_eq!(info.domain, SANDBOX_DOMAIN);
    assert_eq!(
        info.metadata.get("http_status").map(String::as_str),
        Some(http_status.to_string().as_str())
    );
    assert_eq!(
        info.metadata.get("upstream_type").map(String::as_str),
        Some(upstream_type)
    );
}

/// Like [`assert_upstream_error`] for a message that is only known to contain `part`.
#[track_caller]
pub(crate) fn assert_upstream_error_containing(
    status: &Status,
    code: Code,
    http_status: u16,
    upstream_type: &str,
    part: &str,
) {
    assert!(
        status.message().contains(part),
        "message of {status:?} should contain {part:?}"
    );
    let message = status.message().to_string();
    assert_upstream_error(status, code, http_status, upstream_type, &message);
}

/// The `ErrorInfo.reason` of a status.
pub(crate) fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// Whether `text` is a 24 character hex id.
pub(crate) fn is_id(text: &str) -> bool {
    text.len() == 24 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
