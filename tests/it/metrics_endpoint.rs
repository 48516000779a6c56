//! The admin listener serves Prometheus metrics: RPCs and latency by method and code, upstream
//! calls by status, cache figures, in-flight RPCs and build info.

use crate::support::*;
use serde_json::json;
use tokio::net::TcpListener;
use wnology_gateway::{admin, proto};

#[tokio::test]
async fn metrics_cover_rpcs_upstream_calls_and_the_cache() {
    wnology_gateway::install_crypto_provider();
    let upstream = RecordingUpstream::start_with(|request| {
        if request.path_and_query.starts_with("/orgs/") {
            Answer::json(404, &json!({"type": "NotFound", "message": "nope"}))
        } else {
            Answer::json(200, &json!({}))
        }
    })
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = listener.local_addr().unwrap();
    tokio::spawn(admin::serve(
        gateway.gateway.metrics().clone(),
        listener,
        std::future::pending(),
    ));

    let mut me = gateway.me().await;
    for _ in 0..3 {
        me.payload_counts(authed(proto::MePayloadCountsRequest::default()))
            .await
            .unwrap();
    }
    let _ = gateway
        .org()
        .await
        .get(authed(proto::OrgGetRequest {
            org_id: id(1),
            ..Default::default()
        }))
        .await;
    let _ = me
        .get(tonic::Request::new(proto::MeGetRequest::default()))
        .await;

    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{admin_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for expected in [
        r#"wnology_gateway_rpc_requests_total{service="wnology.v1.MeService",method="PayloadCounts",code="OK"} 3"#,
        r#"wnology_gateway_rpc_requests_total{service="wnology.v1.OrgService",method="Get",code="NOT_FOUND"} 1"#,
        r#"wnology_gateway_rpc_requests_total{service="wnology.v1.MeService",method="Get",code="UNAUTHENTICATED"} 1"#,
        r#"wnology_gateway_rpc_duration_seconds_count{service="wnology.v1.MeService",method="PayloadCounts",code="OK"} 3"#,
        r#"wnology_gateway_upstream_requests_total{action="me.payloadCounts",status="200"} 1"#,
        r#"wnology_gateway_upstream_requests_total{action="org.get",status="404"} 1"#,
        r#"wnology_gateway_upstream_duration_seconds_count{action="org.get",status="404"} 1"#,
        "wnology_gateway_cache_hits_total 2",
        "wnology_gateway_cache_misses_total 2",
        "wnology_gateway_cache_entries ",
        "wnology_gateway_cache_weighted_size_bytes ",
        "wnology_gateway_rpc_in_flight 0",
        "wnology_gateway_build_info{version=",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    let health = http
        .get(format!("http://{admin_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
