//! Beyond `--max-concurrency` calls are refused at once with UNAVAILABLE (never UNKNOWN), while
//! health and reflection still answer.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;
use wnology_gateway::{config::Settings, proto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_are_shed_at_once() {
    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({})).after(Duration::from_millis(1500)))
            .await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.max_concurrency = 2;
    let gateway = TestGateway::start_with(settings).await;
    let client = gateway.org().await;
    let slow: Vec<_> = (0..2).map(|n| spawn_org_get(&client, n)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let status = client
        .clone()
        .get(authed(proto::OrgGetRequest {
            org_id: id(9),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once: {:?}",
        started.elapsed()
    );
    assert_eq!(
        status.get_error_details().error_info().unwrap().reason,
        "OVERLOADED"
    );
    // The limit is shared by the three services.
    let status = gateway
        .me()
        .await
        .get(authed(proto::MeGetRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    let mut health = HealthClient::new(gateway.channel().await);
    let reply = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status,
        ServingStatus::Serving as i32,
        "health is exempt"
    );

    for call in slow {
        call.await
            .unwrap()
            .expect("the calls within the limit complete");
    }
    gateway
        .me()
        .await
        .get(authed(proto::MeGetRequest::default()))
        .await
        .expect("capacity is back");
    assert_eq!(upstream.count(), 3, "shed calls never reached the upstream");
}
