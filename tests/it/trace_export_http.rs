//! OTLP/HTTP with protobuf bodies (the default protocol) exports the same spans, to
//! `<endpoint>/v1/traces`, with the configured sampler.

use std::collections::HashMap;

use crate::support::{otlp::*, *};
use serde_json::json;
use wnology_gateway::{
    proto,
    telemetry::{LogFormat, LogOptions, Telemetry},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_http_protobuf() {
    // It installs the process-wide subscriber: alone in a process of its own.
    if !in_own_process(module_path!(), "spans_are_exported_over_http_protobuf") {
        return;
    }
    let (collector, received) = http_receiver().await;
    let env: HashMap<String, String> = HashMap::from([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://{collector}"),
        ),
        ("OTEL_TRACES_SAMPLER".to_string(), "always_on".to_string()),
    ]);
    let telemetry =
        Telemetry::init_with(LogOptions::new(LogFormat::Text), &env, std::io::sink).unwrap();
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"counts": []}))).await;
    let gateway = TestGateway::start_traced(
        wnology_gateway::config::Settings::for_upstream(upstream.url()),
        telemetry.tracing(),
    )
    .await;
    let mut me = gateway.me().await;
    me.device_counts(authed(proto::MeDeviceCountsRequest::default()))
        .await
        .unwrap();
    me.device_counts(authed(proto::MeDeviceCountsRequest::default()))
        .await
        .unwrap();
    telemetry.force_flush();

    let spans = received.wait_for(|spans| spans.len() >= 3).await;
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "wnology.v1.MeService/DeviceCounts")
        .collect();
    assert_eq!(servers.len(), 2);
    let caches: Vec<_> = servers
        .iter()
        .filter_map(|s| attribute(&s.attributes, "wnology.cache.result"))
        .collect();
    assert_eq!(
        caches,
        ["miss", "hit"],
        "the cache result is on the server span"
    );
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "GET /me/deviceCounts")
        .collect();
    assert_eq!(clients.len(), 1, "a cache hit makes no upstream call");
    assert_eq!(clients[0].parent_span_id, servers[0].span_id);
    // Without a caller trace the gateway starts one, and the upstream sees it.
    let traceparent = upstream
        .only_request()
        .header("traceparent")
        .unwrap()
        .to_string();
    assert!(
        traceparent.contains(&hex(&servers[0].trace_id)),
        "{traceparent}"
    );
    telemetry.shutdown();
}
