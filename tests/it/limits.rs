//! Server limits: the request message size (`--max-request-bytes`), the request header list
//! size (`--max-header-bytes`), the upstream answer size (`--max-upstream-response-bytes`,
//! with and without `Content-Length`) and the connection age (`--max-connection-age`).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::*;
use axum::body::{Body, Bytes};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;
use wnology_gateway::{
    config::Settings, error::GATEWAY_DOMAIN, proto, proto::org_service_client::OrgServiceClient,
};

const KIB: usize = 1024;

fn org_get(n: u32) -> tonic::Request<proto::OrgGetRequest> {
    authed(proto::OrgGetRequest {
        org_id: id(n),
        ..Default::default()
    })
}

fn org_patch(description_len: usize) -> tonic::Request<proto::OrgPatchRequest> {
    authed(proto::OrgPatchRequest {
        org_id: id(1),
        body: Some(proto::OrgPatch {
            description: Some("d".repeat(description_len)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

// ---------------------------------------------------------------------------------------------
// --max-request-bytes

#[tokio::test]
async fn a_request_message_over_the_limit_is_refused_before_the_upstream() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_request_bytes = KIB;
    let gateway = TestGateway::start_with(settings).await;
    let mut org = gateway.org().await;

    // The request guard refuses a message whose length prefix exceeds the limit with
    // RESOURCE_EXHAUSTED (the gRPC status table's code for it), before the handler runs.
    let status = org
        .patch(org_patch(10 * KIB))
        .await
        .expect_err("a 10 KiB message is over the 1 KiB limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("exceeds --max-request-bytes"),
        "{status:?}"
    );
    assert!(
        status.message().contains("1024"),
        "names the limit: {status:?}"
    );
    assert_eq!(
        upstream.count(),
        0,
        "the oversized request never went upstream"
    );

    // The same RPC under the limit is served, on the same channel.
    let patched = org
        .patch(org_patch(100))
        .await
        .expect("a small message is served")
        .into_inner();
    assert_eq!(patched.name.as_deref(), Some("Acme"));
    let sent = upstream.only_request();
    assert_eq!(sent.method, "PATCH");
    assert_eq!(sent.json()["description"].as_str().map(str::len), Some(100));
}

// ---------------------------------------------------------------------------------------------
// --max-upstream-response-bytes

#[track_caller]
fn assert_too_large(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "upstream response exceeds 2048 bytes");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "UPSTREAM_RESPONSE_TOO_LARGE");
    assert_eq!(info.domain, GATEWAY_DOMAIN);
}

fn small_response_limit(upstream_url: String) -> Settings {
    let mut settings = Settings::for_upstream(upstream_url);
    settings.max_upstream_response_bytes = 2 * KIB;
    settings
}

#[tokio::test]
async fn an_upstream_answer_over_the_limit_with_content_length_is_resource_exhausted() {
    let upstream = RecordingUpstream::start(Answer::json(
        200,
        &json!({"name": "Acme", "description": "x".repeat(20 * KIB)}),
    ))
    .await;
    let gateway = TestGateway::start_with(small_response_limit(upstream.url())).await;
    let mut org = gateway.org().await;

    let status = org.get(org_get(1)).await.expect_err("20 KiB > 2 KiB");
    assert_too_large(&status);
    assert_eq!(upstream.count(), 1, "a too-large answer is not retried");

    // An answer under the limit is served.
    upstream.answer(Answer::json(
        200,
        &json!({"name": "Acme", "description": "x".repeat(KIB)}),
    ));
    let org_answer = org
        .get(org_get(2))
        .await
        .expect("1 KiB < 2 KiB")
        .into_inner();
    assert_eq!(org_answer.description.map(|d| d.len()), Some(KIB));
}

/// An upstream that answers every request 200 with a JSON body sent as `chunks` chunks of
/// `chunk_len` bytes each and no `Content-Length` (chunked transfer encoding).
async fn chunked_upstream(chunks: usize, chunk_len: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // `{"description":"xxx…xxx"}`, cut into `chunks` pieces of `chunk_len` bytes.
            let filler = chunks * chunk_len - r#"{"description":""}"#.len();
            let body = format!(r#"{{"description":"{}"}}"#, "x".repeat(filler)).into_bytes();
            let pieces: Vec<Result<Bytes, Infallible>> = body
                .chunks(chunk_len)
                .map(|piece| Ok(Bytes::copy_from_slice(piece)))
                .collect();
            axum::response::Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from_stream(futures_util::stream::iter(pieces)))
                .unwrap()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, requests)
}

#[tokio::test]
async fn an_upstream_answer_over_the_limit_without_content_length_is_resource_exhausted() {
    let (big, big_requests) = chunked_upstream(20, KIB).await;
    let (small, small_requests) = chunked_upstream(3, 512).await;

    // The premise: these answers really come without a Content-Length.
    let probe = reqwest::get(format!("http://{big}/orgs")).await.unwrap();
    assert_eq!(probe.content_length(), None);
    assert_eq!(
        probe
            .headers()
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("chunked")
    );
    assert_eq!(probe.bytes().await.unwrap().len(), 20 * KIB);
    big_requests.store(0, Ordering::SeqCst);

    let gateway = TestGateway::start_with(small_response_limit(format!("http://{big}"))).await;
    let status = gateway
        .org()
        .await
        .get(org_get(1))
        .await
        .expect_err("20 KiB streamed > 2 KiB");
    assert_too_large(&status);
    assert_eq!(big_requests.load(Ordering::SeqCst), 1, "not retried");

    // 1.5 KiB in three chunks is under the limit: the bound counts the whole body, not a chunk.
    let gateway = TestGateway::start_with(small_response_limit(format!("http://{small}"))).await;
    let answer = gateway
        .org()
        .await
        .get(org_get(1))
        .await
        .expect("1.5 KiB streamed < 2 KiB")
        .into_inner();
    let expected = 3 * 512 - r#"{"description":""}"#.len();
    assert_eq!(answer.description.map(|d| d.len()), Some(expected));
    assert_eq!(small_requests.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// --max-header-bytes

#[tokio::test]
async fn request_metadata_over_the_header_limit_fails_before_the_upstream() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_header_bytes = 4 * KIB as u32;
    let gateway = TestGateway::start_with(settings).await;
    let mut org = gateway.org().await;

    let with_filler = |n: u32, len: usize| {
        let mut request = org_get(n);
        request
            .metadata_mut()
            .insert("x-filler", "f".repeat(len).parse().unwrap());
        request
    };

    // The server advertises SETTINGS_MAX_HEADER_LIST_SIZE = 4096, but tonic's client sends
    // the headers anyway; h2 on the server refuses the stream with HTTP 431 (Request Header
    // Fields Too Large) and no gRPC status, which tonic's client maps to UNKNOWN ("grpc-status
    // header missing, mapped from HTTP status code 431"). So the refusal is the server's.
    let status = org
        .get(with_filler(1, 8 * KIB))
        .await
        .expect_err("8 KiB of metadata is over the 4 KiB limit");
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert!(status.message().contains("431"), "{status:?}");
    assert_eq!(upstream.count(), 0, "the call never reached the gateway");

    // Under the limit it is served, on the same channel.
    org.get(with_filler(2, KIB))
        .await
        .expect("1 KiB of metadata is under the limit");
    assert_eq!(upstream.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// --max-connection-age

/// A TCP proxy in front of `target` that counts the connections it accepts.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, accepted)
}

async fn channel_to(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// What this proves: the server closes a connection once it is older than the age, and an idle
/// channel reconnects, so the next call succeeds on a second connection. It does not prove that
/// the close is graceful: no call is in flight at the time (the next test covers that).
#[tokio::test]
async fn an_aged_connection_is_closed_and_the_channel_reconnects() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": "Acme"}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_connection_age = Duration::from_millis(200);
    settings.shutdown_grace = Duration::from_millis(200);
    let gateway = TestGateway::start_with(settings).await;
    let (proxy, accepted) = counting_proxy(gateway.addr).await;
    let mut org = OrgServiceClient::new(channel_to(proxy).await);

    org.get(org_get(1)).await.expect("first call");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Idle past the age (and its grace): the server has closed the connection by now.
    tokio::time::sleep(Duration::from_millis(800)).await;
    org.get(org_get(2))
        .await
        .expect("the channel reconnects after the server closed the aged connection");
    assert!(
        accepted.load(Ordering::SeqCst) >= 2,
        "the server closed the first connection: {} accepted",
        accepted.load(Ordering::SeqCst)
    );
}

/// A call in flight when its connection reaches the age finishes (the server sends GOAWAY and
/// lets the call complete, up to the grace), and the next call goes to a new connection: over
/// ~1.2 s of back-to-back 100 ms calls on one channel with a 300 ms age, every call succeeds
/// and the proxy sees several connections.
///
/// One caller only: with several callers, a call the client starts on the old connection in
/// the instant between the server's GOAWAY and the client noticing it fails with CANCELLED
/// ("connection closed") — tonic's client does not retry such a stream transparently — which
/// is a client-side race, not the server's doing.
#[tokio::test]
async fn calls_across_the_connection_age_all_succeed_on_new_connections() {
    let upstream = RecordingUpstream::start(
        Answer::json(200, &json!({"name": "Acme"})).after(Duration::from_millis(100)),
    )
    .await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_connection_age = Duration::from_millis(300);
    settings.shutdown_grace = Duration::from_secs(5);
    let gateway = TestGateway::start_with(settings).await;
    let (proxy, accepted) = counting_proxy(gateway.addr).await;
    let mut org = OrgServiceClient::new(channel_to(proxy).await);

    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        n += 1;
        let at = started.elapsed();
        if let Err(status) = org.get(org_get(n)).await {
            panic!(
                "call {n} started at {at:?} failed after {} connection(s): {status:?}",
                accepted.load(Ordering::SeqCst)
            );
        }
    }
    assert!(n >= 8, "{n} calls");
    assert!(
        accepted.load(Ordering::SeqCst) >= 3,
        "aged connections were replaced: {} accepted",
        accepted.load(Ordering::SeqCst)
    );
}
