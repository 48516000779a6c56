//! Spans are exported over OTLP/gRPC: one server span per RPC with a child client span per
//! upstream call, the caller's trace continued, semantic-convention attributes, and W3C trace
//! context (never baggage) sent upstream.

use std::collections::HashMap;

use crate::support::{otlp::*, *};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use serde_json::json;
use wnology_gateway::{
    proto,
    telemetry::{LogFormat, LogOptions, Telemetry},
};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_client_spans_are_exported_and_the_trace_reaches_the_upstream() {
    // It installs the process-wide subscriber: alone in a process of its own.
    if !in_own_process(
        module_path!(),
        "server_and_client_spans_are_exported_and_the_trace_reaches_the_upstream",
    ) {
        return;
    }
    let (collector, received) = grpc_receiver().await;
    let env: HashMap<String, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_SERVICE_NAME", "gateway-under-test".to_string()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let telemetry =
        Telemetry::init_with(LogOptions::new(LogFormat::Json), &env, std::io::sink).unwrap();

    let upstream = RecordingUpstream::start_with(|request| {
        if request.path_and_query.starts_with("/orgs/") {
            Answer::json(
                404,
                &json!({"type": "NotFound", "message": "Organization was not found"}),
            )
        } else {
            Answer::json(200, &json!({"email": "dana@example.com"}))
        }
    })
    .await;
    let gateway = TestGateway::start_traced(
        wnology_gateway::config::Settings::for_upstream(upstream.url()),
        telemetry.tracing(),
    )
    .await;
    let mut request = authed(proto::MeGetRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    request
        .metadata_mut()
        .insert("tracestate", "vendor=abc".parse().unwrap());
    request
        .metadata_mut()
        .insert("baggage", "user.secret=do-not-forward".parse().unwrap());
    gateway.me().await.get(request).await.unwrap();
    let status = gateway
        .org()
        .await
        .get(authed(proto::OrgGetRequest {
            org_id: id(3),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    telemetry.force_flush();

    let spans = received.wait_for(|spans| spans.len() >= 4).await;
    let server = spans
        .iter()
        .find(|s| s.name == "wnology.v1.MeService/Get")
        .expect("server span");
    let client = spans
        .iter()
        .find(|s| s.name == "GET /me")
        .expect("client span");

    // The caller's trace continues through the gateway to the upstream.
    assert_eq!(hex(&server.trace_id), TRACE_ID);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the client span is the server span's child"
    );
    assert_eq!(client.kind, SpanKind::Client as i32);

    assert_eq!(
        attribute(&server.attributes, "rpc.system.name").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        attribute(&server.attributes, "rpc.method").as_deref(),
        Some("wnology.v1.MeService/Get")
    );
    assert_eq!(
        attribute(&server.attributes, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    assert_eq!(
        attribute(&server.attributes, "wnology.cache.result").as_deref(),
        Some("miss")
    );
    assert!(attribute(&server.attributes, "wnology.request_id").is_some());
    // The access line is the server span's event, with its fields (in JSON it is written
    // without a `tracing` event on unsampled calls, but a sampled span still records it).
    let access = server
        .events
        .iter()
        .find(|event| event.name == "rpc")
        .unwrap_or_else(|| panic!("the server span has the access line: {:?}", server.events));
    assert_eq!(attribute(&access.attributes, "code").as_deref(), Some("OK"));
    assert_eq!(
        attribute(&access.attributes, "rpc").as_deref(),
        Some("wnology.v1.MeService/Get")
    );
    assert_ne!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    assert_eq!(
        attribute(&client.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attribute(&client.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&client.attributes, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(&client.attributes, "server.port").as_deref(),
        Some(upstream.addr.port().to_string().as_str())
    );
    assert_eq!(
        attribute(&client.attributes, "url.full"),
        Some(format!(
            "{}/me?_actions=false&_links=true&_embedded=true",
            upstream.url()
        ))
    );

    // A failed upstream call: the client span carries the HTTP status and error type; a
    // NOT_FOUND is the caller's problem, not a server error.
    let failed_server = spans
        .iter()
        .find(|s| s.name == "wnology.v1.OrgService/Get")
        .expect("server span");
    let failed_client = spans
        .iter()
        .find(|s| s.name == "GET /orgs/{orgId}")
        .expect("client span");
    assert_eq!(failed_client.parent_span_id, failed_server.span_id);
    assert_eq!(
        attribute(&failed_client.attributes, "http.response.status_code").as_deref(),
        Some("404")
    );
    assert_eq!(
        attribute(&failed_client.attributes, "error.type").as_deref(),
        Some("404")
    );
    assert_eq!(
        failed_client.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attribute(&failed_server.attributes, "rpc.response.status_code").as_deref(),
        Some("NOT_FOUND")
    );

    // The resource.
    let resources = received.resources.lock().unwrap().clone();
    assert!(
        resources
            .iter()
            .any(|r| attribute(r, "service.name").as_deref() == Some("gateway-under-test"))
    );
    assert!(
        resources
            .iter()
            .any(|r| attribute(r, "deployment.environment").as_deref() == Some("test"))
    );

    // What the upstream saw: the gateway's client span as parent, in the caller's trace, and
    // no baggage.
    let sent = upstream.requests();
    let traceparent = sent[0]
        .header("traceparent")
        .expect("traceparent sent upstream");
    assert_eq!(
        traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&client.span_id))
    );
    assert_eq!(sent[0].header("tracestate"), Some("vendor=abc"));
    assert!(
        sent.iter().all(|r| r.header("baggage").is_none()),
        "baggage is never forwarded"
    );
    telemetry.shutdown();
}
