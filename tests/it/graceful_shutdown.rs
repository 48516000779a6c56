//! The real binary's shutdown sequence on SIGTERM: health turns NOT_SERVING at once while calls
//! are still served for the drain delay; then the listener is closed (new connections are
//! refused) and calls in flight get the shutdown grace to finish; the process exits 0. A call
//! that outlives the grace does not hold the process up.

use std::{
    process::ExitStatus,
    time::{Duration, Instant},
};

use crate::support::{binary::GatewayBinary, *};
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use wnology_gateway::proto::{
    self, me_service_client::MeServiceClient, org_service_client::OrgServiceClient,
};

/// Starts the binary against `upstream_url` with the given drain delay and shutdown grace.
fn start(upstream_url: &str, drain_delay: &str, shutdown_grace: &str) -> GatewayBinary {
    GatewayBinary::start(
        gateway_binary(),
        upstream_url,
        &[
            "--drain-delay",
            drain_delay,
            "--shutdown-grace",
            shutdown_grace,
        ],
        &[],
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// Waits up to `bound` for the process to exit.
async fn exit_within(gateway: &mut GatewayBinary, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = gateway.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health answers during the drain")
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

const CHECKED: [&str; 2] = ["", "wnology.v1.OrgService"];

/// Starts an OrgService/Get of a distinct organization (so that no two share a cache load).
fn start_get(
    channel: &Channel,
    n: u32,
) -> JoinHandle<Result<(Option<String>, Instant), tonic::Status>> {
    let mut org = OrgServiceClient::new(channel.clone());
    tokio::spawn(async move {
        let answer = org
            .get(authed(proto::OrgGetRequest {
                org_id: id(n),
                ..Default::default()
            }))
            .await?;
        Ok((answer.into_inner().name, Instant::now()))
    })
}

async fn until_upstream_has(upstream: &RecordingUpstream, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.count() < count {
        assert!(
            Instant::now() < deadline,
            "the upstream got {} of {count} calls",
            upstream.count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_refuses_new_connections_and_finishes_calls_in_flight() {
    const DRAIN: Duration = Duration::from_secs(1);
    const SLOW: Duration = Duration::from_secs(2);
    // Organization reads are slow; `Me` reads are quick.
    let upstream = RecordingUpstream::start_with(|request| {
        if request.path_and_query.starts_with("/me?") {
            Answer::json(200, &json!({"email": "someone@example.com"}))
        } else {
            Answer::json(200, &json!({"name": "Acme"})).after(SLOW)
        }
    })
    .await;
    let mut gateway = start(&upstream.url(), "1s", "10s");
    let channel = connect(gateway.addr).await;
    for service in CHECKED {
        assert_eq!(health(&channel, service).await, ServingStatus::Serving);
    }

    let in_flight: Vec<_> = (1..=5).map(|n| start_get(&channel, n)).collect();
    until_upstream_has(&upstream, 5).await;
    gateway.sigterm();
    let signalled = Instant::now();

    // Health turns NOT_SERVING within the drain delay, overall and per service.
    for service in CHECKED {
        loop {
            if health(&channel, service).await == ServingStatus::NotServing {
                break;
            }
            assert!(
                signalled.elapsed() < DRAIN,
                "{service:?} still SERVING after the drain delay"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // During the drain a new call on the existing connection is served...
    let me = MeServiceClient::new(channel.clone())
        .get(authed(proto::MeGetRequest::default()))
        .await
        .expect("a call during the drain is served")
        .into_inner();
    assert_eq!(me.email.as_deref(), Some("someone@example.com"));
    // ... and so is a new connection.
    let during = connect(gateway.addr).await;
    assert_eq!(health(&during, "").await, ServingStatus::NotServing);
    assert!(
        signalled.elapsed() < DRAIN,
        "the drain-time calls took until {:?}",
        signalled.elapsed()
    );

    // After the drain delay the listener is closed: a new connection is refused.
    tokio::time::sleep((DRAIN + Duration::from_millis(250)).saturating_sub(signalled.elapsed()))
        .await;
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(gateway.addr),
    )
    .await
    .expect("connect answers at once");
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "after the drain delay: {refused:?}"
    );
    assert!(
        gateway.logged("refusing new connections"),
        "{:#?}",
        gateway.log()
    );

    // Every call that was in flight at SIGTERM completes, after the drain delay (in the grace).
    for call in in_flight {
        let (name, done) = call
            .await
            .unwrap()
            .expect("a call in flight at SIGTERM completes");
        assert_eq!(name.as_deref(), Some("Acme"));
        assert!(done.duration_since(signalled) > DRAIN);
    }
    assert_eq!(
        upstream.count(),
        6,
        "five slow reads and the drain-time one"
    );

    let status = exit_within(&mut gateway, Duration::from_secs(5))
        .await
        .expect("the gateway exits once its calls are done");
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < SLOW + Duration::from_secs(3),
        "{:?}",
        signalled.elapsed()
    );
    assert!(gateway.logged("draining: health is NOT_SERVING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_grace_bounds_a_call_that_takes_too_long() {
    const DRAIN: Duration = Duration::from_millis(200);
    const GRACE: Duration = Duration::from_secs(1);
    let upstream = RecordingUpstream::start(
        Answer::json(200, &json!({"name": "Acme"})).after(Duration::from_secs(8)),
    )
    .await;
    let mut gateway = start(&upstream.url(), "200ms", "1s");
    let channel = connect(gateway.addr).await;

    let stuck = start_get(&channel, 1);
    until_upstream_has(&upstream, 1).await;
    gateway.sigterm();
    let signalled = Instant::now();

    let status = exit_within(&mut gateway, DRAIN + GRACE + Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", signalled.elapsed()));
    let took = signalled.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took >= DRAIN + GRACE - Duration::from_millis(100),
        "exited after {took:?}, before the drain delay and the grace were over"
    );
    assert!(
        gateway.logged("shutdown grace expired"),
        "{:#?}",
        gateway.log()
    );

    // The stuck call is cut when the process exits, long before the upstream would answer.
    let outcome = tokio::time::timeout(Duration::from_secs(3), stuck)
        .await
        .expect("the stuck call ends with the process")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
}
