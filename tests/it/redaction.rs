//! The bearer token never appears in any log line (even at `RUST_LOG=trace`), span attribute
//! or metric.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex},
};

use crate::support::{otlp::*, *};
use serde_json::json;
use wnology_gateway::{
    proto,
    telemetry::{LogFormat, LogOptions, Telemetry},
};

const SECRET: &str = "s3cr3t-bearer-token-e1b7f05c";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_logs_spans_or_metrics() {
    // It installs the process-wide subscriber: alone in a process of its own.
    if !in_own_process(
        module_path!(),
        "the_token_never_appears_in_logs_spans_or_metrics",
    ) {
        return;
    }
    let (collector, received) = grpc_receiver().await;
    let env: HashMap<String, String> = HashMap::from([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://{collector}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
            "grpc".to_string(),
        ),
        ("RUST_LOG".to_string(), "trace".to_string()),
    ]);
    let logs = Captured::default();
    let writer = logs.clone();
    let telemetry = Telemetry::init_with(LogOptions::new(LogFormat::Json), &env, move || {
        writer.clone()
    })
    .unwrap();

    let upstream = RecordingUpstream::start_with(|request| match request.method.as_str() {
        "GET" => Answer::json(200, &json!({"id": id(1), "name": "Acme"})),
        _ => Answer::json(
            401,
            &json!({"type": "Unauthorized", "message": "Invalid token"}),
        ),
    })
    .await;
    let gateway = TestGateway::start_traced(
        wnology_gateway::config::Settings::for_upstream(upstream.url()),
        telemetry.tracing(),
    )
    .await;
    let mut org = gateway.org().await;
    for _ in 0..2 {
        org.get(with_token(
            proto::OrgGetRequest {
                org_id: id(1),
                ..Default::default()
            },
            SECRET,
        ))
        .await
        .unwrap();
    }
    let patch = proto::OrgPatchRequest {
        org_id: id(1),
        body: Some(proto::OrgPatch::default()),
        ..Default::default()
    };
    assert!(org.patch(with_token(patch, SECRET)).await.is_err());
    assert!(
        org.get(with_token(
            proto::OrgGetRequest {
                org_id: "bad".into(),
                ..Default::default()
            },
            SECRET
        ))
        .await
        .is_err()
    );
    telemetry.force_flush();

    let spans = received.wait_for(|spans| spans.len() >= 6).await;
    assert!(spans.len() >= 6, "spans were exported: {}", spans.len());
    let span_text = format!("{spans:?}");
    let metrics = gateway.gateway.metrics().encode();
    let log_text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        log_text.contains("\"target\":\"wnology_gateway::access\""),
        "access lines were logged"
    );
    assert!(
        log_text.contains("\"level\":\"DEBUG\""),
        "debug-level logs were captured"
    );
    assert!(
        log_text.contains("upstream call"),
        "the upstream client's debug lines were captured"
    );
    for (what, text) in [
        ("logs", &log_text),
        ("spans", &span_text),
        ("metrics", &metrics),
    ] {
        assert!(!text.contains(SECRET), "the token leaked into {what}");
        assert!(
            !text.contains("s3cr3t"),
            "part of the token leaked into {what}"
        );
    }
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str()),
        "the token does reach the upstream"
    );
    telemetry.shutdown();
}
