//! The upstream circuit breaker: it opens after `--upstream-breaker-min-calls` calls of which
//! the failure ratio failed (5xx, not 4xx), then answers at once without touching the upstream
//! (reads and writes alike: UNAVAILABLE, `UPSTREAM_CIRCUIT_OPEN`, RetryInfo), probes once after
//! the cool-down, closes on success and reopens for twice as long on failure; ratio 0 disables it.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::{config::Settings, proto};

/// How long the failing upstream takes to fail: a refused call is answered well inside it.
const FAILING_TAKES: Duration = Duration::from_millis(300);

fn failing() -> Answer {
    Answer::json(503, &json!({"type": "Unavailable", "message": "down"})).after(FAILING_TAKES)
}

/// Uncached, unretried calls, a breaker that opens after 4 calls at half failed.
fn settings(upstream: &RecordingUpstream, ratio: f64, cooldown: Duration) -> Settings {
    let mut settings = Settings::for_upstream(upstream.url());
    settings.cache_entity_ttl = Duration::ZERO;
    settings.upstream_retries = 0;
    settings.upstream_breaker.upstream_breaker_failure_ratio = ratio;
    settings.upstream_breaker.upstream_breaker_min_calls = 4;
    settings.upstream_breaker.upstream_breaker_cooldown = cooldown;
    settings
}

fn get_org() -> tonic::Request<proto::OrgGetRequest> {
    authed(proto::OrgGetRequest {
        org_id: id(1),
        ..Default::default()
    })
}

/// The refusal of an open breaker, and the RetryInfo delay it gives.
fn assert_circuit_open(status: &tonic::Status) -> Duration {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().expect("ErrorInfo").reason,
        "UPSTREAM_CIRCUIT_OPEN"
    );
    details
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo with a delay")
}

#[tokio::test]
async fn it_opens_answers_at_once_probes_and_closes() {
    let upstream = RecordingUpstream::start(failing()).await;
    let cooldown = Duration::from_millis(400);
    let gateway = TestGateway::start_with(settings(&upstream, 0.5, cooldown)).await;
    let mut org = gateway.org().await;
    for _ in 0..4 {
        let status = org.get(get_org()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "the upstream's 503");
    }
    assert_eq!(upstream.count(), 4);

    let started = Instant::now();
    let status = org.get(get_org()).await.unwrap_err();
    let refused_in = started.elapsed();
    let retry = assert_circuit_open(&status);
    assert!(retry <= cooldown && !retry.is_zero(), "{retry:?}");
    println!("an open breaker answered in {refused_in:?}");
    assert!(
        refused_in < FAILING_TAKES / 3,
        "answered at once ({refused_in:?}), not after an upstream call"
    );
    let write = org
        .delete(authed(proto::OrgDeleteRequest { org_id: id(1) }))
        .await
        .unwrap_err();
    assert_circuit_open(&write);
    assert_eq!(
        upstream.count(),
        4,
        "nothing reached the upstream while open"
    );

    // The cool-down over, one probe goes; it fails, and the breaker reopens for twice as long.
    tokio::time::sleep(cooldown + Duration::from_millis(50)).await;
    let probe = org.get(get_org()).await.unwrap_err();
    assert_eq!(probe.code(), Code::Unavailable);
    assert_eq!(upstream.count(), 5, "one probe");
    let retry = assert_circuit_open(&org.get(get_org()).await.unwrap_err());
    assert!(retry > cooldown, "the cool-down doubled: {retry:?}");
    assert_eq!(upstream.count(), 5);

    // The upstream recovers: the next probe succeeds and the breaker closes.
    upstream.answer(Answer::json(200, &json!({"name": "Acme"})));
    tokio::time::sleep(retry + Duration::from_millis(50)).await;
    for n in 0..3 {
        let org = org.get(get_org()).await.expect("closed again");
        assert_eq!(org.get_ref().name.as_deref(), Some("Acme"));
        assert_eq!(upstream.count(), 6 + n);
    }
    let metrics = gateway.gateway.metrics().encode();
    for line in [
        "upstream_breaker_transitions_total{from=\"closed\",to=\"open\"} 1",
        "upstream_breaker_transitions_total{from=\"open\",to=\"half_open\"} 2",
        "upstream_breaker_transitions_total{from=\"half_open\",to=\"open\"} 1",
        "upstream_breaker_transitions_total{from=\"half_open\",to=\"closed\"} 1",
        "upstream_breaker_state 0",
        "upstream_breaker_refused_total 3",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn answered_4xx_do_not_open_it() {
    let upstream = RecordingUpstream::start(Answer::json(
        401,
        &json!({"type": "Unauthorized", "message": "bad token"}),
    ))
    .await;
    let gateway = TestGateway::start_with(settings(&upstream, 0.5, Duration::from_secs(5))).await;
    let mut org = gateway.org().await;
    for _ in 0..10 {
        let status = org.get(get_org()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    assert_eq!(upstream.count(), 10, "every call reached the upstream");
    gateway.stop().await;
}

#[tokio::test]
async fn a_failure_ratio_of_zero_turns_it_off() {
    let upstream = RecordingUpstream::start(Answer::json(503, &json!({"message": "down"}))).await;
    let gateway = TestGateway::start_with(settings(&upstream, 0.0, Duration::from_secs(5))).await;
    let mut org = gateway.org().await;
    for _ in 0..10 {
        let status = org.get(get_org()).await.unwrap_err();
        let reason = status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.clone());
        assert_ne!(reason.as_deref(), Some("UPSTREAM_CIRCUIT_OPEN"));
    }
    assert_eq!(upstream.count(), 10);
    gateway.stop().await;
}
