//! One caller must never deny service to the others: stalled bodies, reset storms, idle and
//! dead connections, over-long URLs, over-long upstream messages, extra messages and non-gRPC
//! content types, each tried against the real gateway on loopback (raw HTTP/2 from the `h2`
//! crate where a gRPC client refuses to misbehave).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::support::*;
use bytes::Bytes;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::{config::Settings, proto};

/// An upstream that answers after `delay` and counts requests in flight, the most at once, and
/// those dropped before their answer (the gateway cancelled them).
struct CountingUpstream {
    addr: SocketAddr,
    stats: Arc<Counts>,
    _task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    cancelled: AtomicUsize,
}

/// Marks a request in flight; counts it cancelled when dropped before it answered.
struct InFlight(Arc<Counts>, bool);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl CountingUpstream {
    async fn start(delay: Duration) -> CountingUpstream {
        let stats = Arc::new(Counts::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::clone(&stats);
        let app = axum::Router::new().fallback(move || {
            let counts = Arc::clone(&counts);
            async move {
                counts.started.fetch_add(1, Ordering::SeqCst);
                let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most.fetch_max(now, Ordering::SeqCst);
                let mut guard = InFlight(Arc::clone(&counts), false);
                tokio::time::sleep(delay).await;
                guard.1 = true;
                drop(guard);
                axum::Json(json!({"id": id(1), "name": "Acme"}))
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        CountingUpstream {
            addr,
            stats,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until no request is in flight and none started for 50 ms.
    async fn settle(&self) {
        // Quiet for two looks in a row: a request the gateway sent just before its caller
        // went may reach this upstream after a first look found none in flight.
        let mut quiet_since = None;
        for _ in 0..200 {
            let started = self.get(&self.stats.started);
            if self.get(&self.stats.in_flight) != 0 {
                quiet_since = None;
            } else if quiet_since == Some(started) {
                return;
            } else {
                quiet_since = Some(started);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("upstream requests still in flight after 10 s");
    }
}

/// A raw HTTP/2 connection to the gateway.
async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request(addr: SocketAddr, path: &str, content_type: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(())
        .unwrap()
}

/// A length-prefixed gRPC message.
fn framed(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = vec![0];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend(body);
    Bytes::from(framed)
}

/// The `grpc-status` of an answer: from its headers (trailers-only) or its trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> (http::StatusCode, Option<String>) {
    let response = response.await.unwrap();
    let status = response.status();
    let header = |map: &http::HeaderMap| {
        map.get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    };
    if let Some(code) = header(response.headers()) {
        return (status, Some(code));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk;
    }
    let trailers = body.trailers().await.ok().flatten();
    (status, trailers.as_ref().and_then(header))
}

/// Starts `count` calls made by `call`, each on a task of its own and dropped (its stream reset)
/// 30 ms after it starts; returns when all are gone.
async fn reset_after_30ms<F, C>(count: u32, call: F)
where
    F: Fn(u32) -> C,
    C: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let calls: Vec<_> = (0..count)
        .map(|n| {
            let call = call(n);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_millis(30), call).await;
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
}

fn org_get(n: u32) -> proto::OrgGetRequest {
    proto::OrgGetRequest {
        org_id: id(n),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_on_one_connection_do_not_lock_out_the_others() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    // Fewer slots than one connection may open streams: before the fix, stalled bodies took
    // every slot and every other caller was refused as overloaded.
    settings.max_concurrency = 150;
    settings.request_read_timeout = Duration::from_secs(2);
    let gateway = TestGateway::start_with(settings).await;

    // The attacker: 1,100 calls on one connection, each with 2 of the 5 prefix bytes.
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut attacker, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // Drive the connection until the server's SETTINGS are in, then read its stream limit.
    let _ = tokio::time::timeout(Duration::from_millis(300), &mut connection).await;
    assert_eq!(
        connection.max_concurrent_send_streams(),
        200,
        "the server advertises --max-concurrent-streams"
    );
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut stalled = Vec::new();
    for _ in 0..1_100 {
        attacker = attacker.ready().await.unwrap();
        let request = grpc_request(
            gateway.addr,
            "/wnology.v1.OrgService/Get",
            "application/grpc",
        );
        let (response, mut send) = attacker.send_request(request, false).unwrap();
        send.send_data(Bytes::from_static(&[0, 0]), false).unwrap();
        stalled.push((response, send));
    }

    let client = gateway.org().await;
    let calls: Vec<_> = (0..100).map(|n| spawn_org_get(&client, n)).collect();
    for call in calls {
        call.await.unwrap().expect("other connections are served");
    }
    assert_eq!(upstream.count(), 100);

    // The stalled calls are answered DEADLINE_EXCEEDED at the read timeout.
    let (response, _send) = stalled.remove(0);
    let (_, code) = tokio::time::timeout(Duration::from_secs(10), grpc_status(response))
        .await
        .expect("answered within the read timeout");
    assert_eq!(code.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    let metrics = gateway.gateway.metrics().encode();
    assert!(
        metrics.contains("wnology_gateway_request_refused_total{reason=\"read_timeout\"}"),
        "{metrics}"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_reads_never_put_more_than_the_bound_on_the_upstream() {
    let upstream = CountingUpstream::start(Duration::from_secs(3)).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_concurrency = 64;
    let gateway = TestGateway::start_with(settings).await;
    let client = gateway.org().await;

    // 400 distinct reads, each reset by its caller 30 ms after sending.
    reset_after_30ms(400, |n| {
        let mut org = client.clone();
        async move { org.get(authed(org_get(n))).await.map(drop) }
    })
    .await;
    upstream.settle().await;
    let most = upstream.get(&upstream.stats.most);
    assert!(most <= 64, "{most} upstream requests in flight at once");
    assert_eq!(
        upstream.get(&upstream.stats.cancelled),
        upstream.get(&upstream.stats.started),
        "every read whose caller went was cancelled upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_writes_keep_their_slot_until_the_upstream_answers() {
    let upstream = CountingUpstream::start(Duration::from_millis(1500)).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_concurrency = 64;
    settings.max_upstream_in_flight = Some(1_000);
    let gateway = TestGateway::start_with(settings).await;
    let client = gateway.org().await;

    reset_after_30ms(400, |n| {
        let mut org = client.clone();
        async move {
            let delete = proto::OrgDeleteRequest { org_id: id(n) };
            org.delete(authed(delete)).await.map(drop)
        }
    })
    .await;
    upstream.settle().await;
    let most = upstream.get(&upstream.stats.most);
    assert!(most <= 64, "{most} writes in flight at once");
    assert_eq!(
        upstream.get(&upstream.stats.cancelled),
        0,
        "a write runs to its end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_bound_holds_below_the_concurrency_limit() {
    let upstream = CountingUpstream::start(Duration::from_millis(300)).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_upstream_in_flight = Some(8);
    let gateway = TestGateway::start_with(settings).await;
    let client = gateway.org().await;
    let calls: Vec<_> = (0..40).map(|n| spawn_org_get(&client, n)).collect();
    for call in calls {
        call.await.unwrap().expect("each call waits for a permit");
    }
    assert_eq!(upstream.get(&upstream.stats.started), 40);
    assert!(upstream.get(&upstream.stats.most) <= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_read_is_cancelled_upstream_when_its_only_caller_goes() {
    let upstream = CountingUpstream::start(Duration::from_secs(5)).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut client = gateway.org().await;

    let call = client.get(authed(org_get(1)));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), call)
            .await
            .is_err()
    );
    upstream.settle().await;
    assert_eq!(upstream.get(&upstream.stats.cancelled), 1);

    // A coalesced load keeps running while any waiter remains.
    let leaving = {
        let mut org = client.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_millis(300), org.get(authed(org_get(2)))).await;
        })
    };
    let staying = spawn_org_get(&client, 2);
    leaving.await.unwrap();
    // The staying caller's deadline is the default 10 s; the upstream answers at 5 s.
    staying
        .await
        .unwrap()
        .expect("the remaining waiter is answered");
    assert_eq!(upstream.get(&upstream.stats.started), 2);
    assert_eq!(upstream.get(&upstream.stats.cancelled), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_with_goaway() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_connection_idle = Duration::from_millis(500);
    let gateway = TestGateway::start_with(settings).await;

    // A connection that made a call and went quiet gets GOAWAY and is closed.
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = grpc_request(
        gateway.addr,
        "/wnology.v1.OrgService/Get",
        "application/grpc",
    );
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(framed(&org_get(1)), true).unwrap();
    assert_eq!(grpc_status(response).await.1.as_deref(), Some("0"));
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .expect("closed gracefully (GOAWAY), not torn down");

    // A connection that never sends a byte is closed too.
    let mut silent = TcpStream::connect(gateway.addr).await.unwrap();
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent connection is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peers_are_detected_by_keepalive_pings() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.keepalive_interval = Duration::from_millis(300);
    settings.keepalive_timeout = Duration::from_millis(300);
    settings.max_connection_idle = Duration::ZERO;
    let gateway = TestGateway::start_with(settings).await;

    // A peer that opens HTTP/2 and then never answers anything (not even a PING).
    let mut peer = TcpStream::connect(gateway.addr).await.unwrap();
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match peer.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an unresponsive peer is closed");
}

#[tokio::test]
async fn an_over_long_url_is_refused_locally() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"items": []}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let status = gateway
        .org()
        .await
        .list(authed(proto::OrgListRequest {
            filter: "a".repeat(70_000),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.bad_request().unwrap().field_violations[0].field,
        "filter"
    );
    assert_eq!(upstream.count(), 0);
    let metrics = gateway.gateway.metrics().encode();
    assert!(
        !metrics.contains("action=\"orgs.get\""),
        "no upstream metric: {metrics}"
    );
}

#[tokio::test]
async fn a_long_upstream_message_stays_readable() {
    let message = "x".repeat(60_000);
    let upstream = RecordingUpstream::start(Answer::json(
        400,
        &json!({"type": "Validation", "message": message}),
    ))
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let status = gateway
        .org()
        .await
        .get(authed(org_get(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("xxxx"));
    assert!(status.message().len() < 2_000);
    let info = status.get_error_details().error_info().unwrap().clone();
    assert_eq!(info.reason, "VALIDATION");
    assert_eq!(info.metadata["upstream_message_bytes"], "60000");
}

#[tokio::test]
async fn a_second_message_in_a_unary_call_is_refused() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut client = h2_connect(gateway.addr).await.ready().await.unwrap();
    let request = grpc_request(
        gateway.addr,
        "/wnology.v1.OrgService/Get",
        "application/grpc",
    );
    let (response, mut send) = client.send_request(request, false).unwrap();
    let mut two = framed(&org_get(1)).to_vec();
    two.extend_from_slice(&framed(&org_get(2)));
    send.send_data(Bytes::from(two), true).unwrap();
    let (_, code) = grpc_status(response).await;
    assert_eq!(code.as_deref(), Some("13"), "INTERNAL");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_request_message_over_the_limit_is_resource_exhausted() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"items": []}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_request_bytes = 1_024;
    let gateway = TestGateway::start_with(settings).await;
    let status = gateway
        .org()
        .await
        .list(authed(proto::OrgListRequest {
            filter: "a".repeat(2_000),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_non_grpc_content_type_gets_415() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut client = h2_connect(gateway.addr).await.ready().await.unwrap();
    let request = grpc_request(gateway.addr, "/wnology.v1.OrgService/Get", "text/plain");
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(framed(&org_get(1)), true).unwrap();
    let (status, _) = grpc_status(response).await;
    assert_eq!(status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(upstream.count(), 0);
}
