//! Reads are retried on connection errors, 502/503/504 and 429 (honouring `Retry-After`),
//! inside the deadline and a retry budget; writes never are.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::*;
use serde_json::json;
use tonic::Code;
use wnology_gateway::{config::Settings, proto};

/// An upstream that fails the first `failures` requests with `status`, then answers 200.
async fn flaky(
    failures: usize,
    status: u16,
    retry_after: Option<&'static str>,
) -> RecordingUpstream {
    let seen = Arc::new(AtomicUsize::new(0));
    RecordingUpstream::start_with(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            let answer = Answer::json(
                status,
                &json!({"type": "Unavailable", "message": "try again"}),
            );
            match retry_after {
                Some(after) => answer.with_header("retry-after", after),
                None => answer,
            }
        } else {
            Answer::json(200, &json!({"name": "Acme"}))
        }
    })
    .await
}

fn get_org(n: u32) -> tonic::Request<proto::OrgGetRequest> {
    authed(proto::OrgGetRequest {
        org_id: id(n),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_read_is_retried_until_it_succeeds() {
    for status in [502, 503, 504, 429] {
        let upstream = flaky(2, status, None).await;
        let gateway = TestGateway::start(&upstream.url()).await;
        let org = gateway
            .org()
            .await
            .get(get_org(1))
            .await
            .expect("the third try succeeds")
            .into_inner();
        assert_eq!(org.name.as_deref(), Some("Acme"));
        assert_eq!(
            upstream.count(),
            3,
            "HTTP {status}: the first try and two retries"
        );
    }
}

#[tokio::test]
async fn retries_stop_at_the_configured_count_and_not_for_other_errors() {
    let upstream = flaky(10, 503, None).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.upstream_retries = 1;
    let gateway = TestGateway::start_with(settings).await;
    assert_eq!(
        gateway
            .org()
            .await
            .get(get_org(1))
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    assert_eq!(upstream.count(), 2);

    let upstream = flaky(10, 500, None).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    assert_eq!(
        gateway
            .org()
            .await
            .get(get_org(1))
            .await
            .unwrap_err()
            .code(),
        Code::Internal
    );
    assert_eq!(upstream.count(), 1, "a 500 is not retried");
}

#[tokio::test]
async fn retry_after_is_honoured_and_the_deadline_bounds_the_retries() {
    let upstream = flaky(1, 429, Some("1")).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let started = Instant::now();
    gateway
        .org()
        .await
        .get(get_org(1))
        .await
        .expect("retried after Retry-After");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited for Retry-After"
    );
    assert_eq!(upstream.count(), 2);

    // A Retry-After beyond the caller's deadline is not waited for: the 429 comes back at once,
    // with its RetryInfo.
    let upstream = flaky(1, 429, Some("30")).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut request = get_org(1);
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = gateway.org().await.get(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn writes_are_never_retried() {
    let upstream = flaky(1, 503, None).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let patch = proto::OrgPatchRequest {
        org_id: id(1),
        body: Some(proto::OrgPatch::default()),
        ..Default::default()
    };
    let status = gateway.org().await.patch(authed(patch)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "the upstream said 503: it did not apply the write"
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_keeps_a_failing_upstream_from_being_stormed() {
    const READS: u32 = 300;
    let upstream = flaky(usize::MAX, 503, None).await;
    // The circuit breaker (tests/it/breaker.rs) would stop these calls before the budget does.
    let mut settings = Settings::for_upstream(upstream.url());
    settings.upstream_breaker.upstream_breaker_failure_ratio = 0.0;
    let gateway = TestGateway::start_with(settings).await;
    let client = gateway.org().await;
    let calls: Vec<_> = (0..READS).map(|n| spawn_org_get(&client, n)).collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Unavailable);
    }
    let requests = upstream.count() as u32;
    // Without a budget: 3 × 300 = 900. The budget allows 20 % of the calls plus a reserve of
    // 10 a second over its 10 s window.
    assert!(requests > READS, "some reads were retried: {requests}");
    assert!(
        requests <= READS + READS / 5 + 100 + 5,
        "the budget capped retries: {requests} requests"
    );
}
