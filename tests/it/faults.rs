//! Fault injection: an upstream that hangs, drops or resets connections, truncates or trickles
//! its body or answers invalid JSON gives the documented status within the caller's deadline,
//! never a panic, and leaves no task behind.

use std::time::{Duration, Instant};

use crate::support::{faults::*, *};
use serde_json::json;
use tonic::Code;
use wnology_gateway::{config::Settings, proto};

fn get_org() -> tonic::Request<proto::OrgGetRequest> {
    let mut request = authed(proto::OrgGetRequest {
        org_id: id(1),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(3));
    request
}

async fn outcome(upstream_url: &str) -> (Code, Duration) {
    let gateway = TestGateway::start(upstream_url).await;
    let mut org = gateway.org().await;
    let started = Instant::now();
    let status = org
        .get(get_org())
        .await
        .expect_err("the fault surfaces as an error");
    (status.code(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_gives_its_documented_status_within_the_deadline() {
    let table = [
        (Fault::Hang, Code::DeadlineExceeded),
        (Fault::CloseAfterRequest, Code::Unavailable),
        (Fault::Reset, Code::Unavailable),
        (Fault::TruncatedBody, Code::Unavailable),
        (Fault::InvalidJson, Code::Internal),
        (Fault::Trickle, Code::DeadlineExceeded),
    ];
    for (fault, expected) in table {
        let upstream = FaultyUpstream::start(fault).await;
        let (code, elapsed) = outcome(&upstream.url()).await;
        assert_eq!(code, expected, "{fault:?}");
        assert!(
            elapsed < Duration::from_secs(3),
            "{fault:?} took {elapsed:?}"
        );
    }
    for (http_status, expected) in [
        (500, Code::Internal),
        (503, Code::Unavailable),
        (429, Code::ResourceExhausted),
    ] {
        let upstream = RecordingUpstream::start(Answer::json(
            http_status,
            &json!({"type": "X", "message": "y"}),
        ))
        .await;
        let (code, elapsed) = outcome(&upstream.url()).await;
        assert_eq!(code, expected, "HTTP {http_status}");
        assert!(
            elapsed < Duration::from_secs(3),
            "HTTP {http_status} took {elapsed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_task_count_returns_to_its_baseline_after_faults() {
    let hang = FaultyUpstream::start(Fault::Hang).await;
    let trickle = FaultyUpstream::start(Fault::Trickle).await;
    let runtime = tokio::runtime::Handle::current().metrics();
    for upstream in [&hang, &trickle] {
        let mut settings = Settings::for_upstream(upstream.url());
        settings.upstream_timeout = Duration::from_millis(300);
        let gateway = TestGateway::start_with(settings).await;
        let mut org = gateway.org().await;
        // Warm the connection machinery, then take the baseline.
        let _ = org
            .get(authed(proto::OrgGetRequest {
                org_id: id(99),
                ..Default::default()
            }))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = runtime.num_alive_tasks();
        let calls: Vec<_> = (0..20).map(|n| spawn_org_get(&org, n)).collect();
        for call in calls {
            assert_eq!(
                call.await.unwrap().unwrap_err().code(),
                Code::DeadlineExceeded
            );
        }
        let mut alive = runtime.num_alive_tasks();
        for _ in 0..50 {
            if alive <= baseline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            alive = runtime.num_alive_tasks();
        }
        assert!(
            alive <= baseline,
            "tasks left behind: {alive} alive, baseline {baseline}"
        );
    }
}
