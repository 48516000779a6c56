//! The caller's deadline (less a margin) bounds the upstream call, so the caller hears
//! DEADLINE_EXCEEDED from the gateway; `--upstream-timeout` bounds it otherwise.

use std::time::{Duration, Instant};

use crate::support::{faults::*, *};
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::{config::Settings, proto};

#[tokio::test]
async fn the_callers_deadline_bounds_the_upstream_call() {
    let upstream = FaultyUpstream::start(Fault::Hang).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;
    let mut request = authed(proto::MeGetRequest::default());
    request.set_timeout(Duration::from_secs(2));
    // The deadline runs from the call, not from connecting (which a busy machine slows).
    let started = Instant::now();
    let status = me.get(request).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "DEADLINE_EXCEEDED"
    );
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn the_upstream_timeout_applies_without_a_caller_deadline_and_to_writes() {
    let upstream = FaultyUpstream::start(Fault::Hang).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.upstream_timeout = Duration::from_millis(400);
    let gateway = TestGateway::start_with(settings).await;
    let started = Instant::now();
    let status = gateway
        .me()
        .await
        .get(authed(proto::MeGetRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));

    let patch = proto::OrgPatchRequest {
        org_id: id(1),
        body: Some(proto::OrgPatch::default()),
        ..Default::default()
    };
    let before = upstream.requests();
    let status = gateway.org().await.patch(authed(patch)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "a timed-out write is DEADLINE_EXCEEDED, never UNAVAILABLE"
    );
    assert_eq!(upstream.requests() - before, 1, "and it was sent once");
}
