//! The accept loop: each connection is served by hyper with the HTTP/2 limits the gateway
//! advertises (streams per connection, header list size) and keepalive pings, and is closed
//! gracefully (GOAWAY: calls in flight finish) when it is too old, has been idle too long, or
//! the server shuts down. A TLS handshake that does not complete in time closes the connection.
//!
//! tonic's own loop offers age but no idle limit, and hides the connection it would have to
//! close; this one is the same few steps with that added.

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tower::{Service, ServiceExt};

/// How connections are served.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
    /// `--max-header-bytes`.
    pub max_header_bytes: u32,
    /// `--keepalive-interval` (none: no pings).
    pub keepalive_interval: Option<Duration>,
    /// `--keepalive-timeout`.
    pub keepalive_timeout: Duration,
    /// `--max-connection-age` (none: no limit).
    pub max_age: Option<Duration>,
    /// `--max-connection-idle` (none: no limit).
    pub max_idle: Option<Duration>,
    /// Whether HTTP/1.1 is served beside HTTP/2 (gRPC-Web needs it).
    pub http1: bool,
}

/// The longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves connections from `listener` with `service` until `stop` completes; then stops
/// accepting (the listening socket closes at once), asks every connection to close gracefully
/// and returns once all have.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = builder(&limits);
    let (closing, closed) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let connection = Connection {
                    builder: builder.clone(),
                    limits: limits.clone(),
                    closing: closed.clone(),
                };
                tokio::spawn(connection.run(stream, tls.clone(), service.clone()));
            }
        }
    }
    drop(listener);
    drop(closed);
    let _ = closing.send(());
    closing.closed().await;
}

fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !limits.http1 {
        builder = builder.http2_only();
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    // hyper enforces its HTTP/1 header read timeout only with a timer.
    builder.http1().timer(TokioTimer::new());
    builder
}

/// One accepted connection.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    limits: ConnectionLimits,
    /// Changes (or closes) when the server shuts down.
    closing: watch::Receiver<()>,
}

impl Connection {
    async fn run<S>(self, stream: TcpStream, tls: Option<TlsAcceptor>, service: S)
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        // Unary RPCs are latency-bound: a response split across writes must not wait for a
        // delayed ACK.
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        match tls {
            None => self.serve(TokioIo::new(stream), service).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                if let Ok(Ok(stream)) = handshake.await {
                    self.serve(TokioIo::new(stream), service).await;
                }
            }
        }
    }

    async fn serve<I, S>(mut self, io: I, service: S)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let calls = Arc::clone(&activity);
        let service = service
            .map_request(|request: http::Request<Incoming>| request.map(Body::new))
            .map_future(move |answer| {
                let active = Active::start(Arc::clone(&calls));
                async move {
                    let answer = answer.await;
                    drop(active);
                    answer
                }
            });
        let connection = self
            .builder
            .serve_connection(io, TowerToHyperService::new(service));
        let mut connection = pin!(connection);
        let mut age = pin!(sleep_or_never(self.limits.max_age));
        let max_idle = self.limits.max_idle;
        let mut closing = false;
        loop {
            tokio::select! {
                _ = connection.as_mut() => break,
                () = &mut age, if !closing => closing = true,
                () = idle_for(&activity, max_idle), if !closing => closing = true,
                _ = self.closing.changed(), if !closing => closing = true,
            }
            if closing {
                if activity.calls_seen.load(Ordering::Relaxed) == 0 {
                    // Never a call: nothing to finish, and hyper's graceful shutdown would wait
                    // for a handshake that a silent peer never completes.
                    break;
                }
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Calls in flight on a connection and when it last had none. Kept in atomics, read by a
/// timer: a watch channel woke the connection's task at every call's start and end.
#[derive(Debug)]
struct Activity {
    /// When the connection was accepted: `idle_since` counts from here.
    epoch: Instant,
    calls: AtomicUsize,
    /// Calls ever started on the connection.
    calls_seen: AtomicU64,
    /// When the last call ended (or the connection opened), in µs since `epoch`.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            calls: AtomicUsize::new(0),
            calls_seen: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    /// How long the connection has had no call (zero while it has one).
    fn idle_for(&self) -> Duration {
        if self.calls.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_micros(self.idle_since.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(since)
    }
}

/// Marks one call in flight until its answer is ready (or the call is dropped).
#[derive(Debug)]
struct Active(Arc<Activity>);

impl Active {
    fn start(activity: Arc<Activity>) -> Active {
        activity.calls_seen.fetch_add(1, Ordering::Relaxed);
        activity.calls.fetch_add(1, Ordering::AcqRel);
        Active(activity)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let micros = u64::try_from(self.0.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.0.idle_since.fetch_max(micros, Ordering::AcqRel);
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Completes once the connection has had no call for `max_idle` (never without a limit):
/// it sleeps for what is left of the limit and looks again.
async fn idle_for(activity: &Activity, max_idle: Option<Duration>) {
    let Some(max_idle) = max_idle else {
        return std::future::pending().await;
    };
    loop {
        let idle = activity.idle_for();
        if idle >= max_idle {
            return;
        }
        tokio::time::sleep(max_idle - idle).await;
    }
}

async fn sleep_or_never(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
