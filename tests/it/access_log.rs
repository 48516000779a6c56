//! The access log never holds up an RPC: when the log sink stops taking lines, RPCs are still
//! answered, and the lines that do not fit the buffer are dropped and counted
//! (`wnology_gateway_access_log_dropped_total`); `--access-log false` writes no access line.

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use crate::support::{binary::GatewayBinary, *};
use serde_json::json;
use wnology_gateway::{
    proto::{self, me_service_client::MeServiceClient},
    telemetry::{self, LogFormat, LogOptions, Telemetry},
};

/// A sink that takes nothing until released, as stdout does when nobody reads the pipe.
#[derive(Clone, Default)]
struct Stuck(Arc<(Mutex<bool>, Condvar)>);

impl Stuck {
    fn release(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

impl Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (released, wake) = &*self.0;
        let guard = released.lock().unwrap();
        let _released = wake.wait_while(guard, |released| !*released).unwrap();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_log_sink_drops_and_counts_access_lines_and_rpcs_still_succeed() {
    // It installs the process-wide subscriber: alone in a process of its own.
    if !in_own_process(
        module_path!(),
        "a_stuck_log_sink_drops_and_counts_access_lines_and_rpcs_still_succeed",
    ) {
        return;
    }
    let sink = Stuck::default();
    let writer = sink.clone();
    let options = LogOptions {
        access_log_buffer_lines: 4,
        ..LogOptions::new(LogFormat::Json)
    };
    let env = HashMap::from([(
        "RUST_LOG".to_string(),
        "warn,wnology_gateway::access=info".to_string(),
    )]);
    let telemetry = Telemetry::init_with(options, &env, move || writer.clone()).unwrap();

    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({"email": "dana@example.com"}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;
    // Bounded in time so that a blocked request path fails the test instead of hanging it.
    let calls = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..40 {
            me.get(authed(proto::MeGetRequest::default()))
                .await
                .unwrap();
        }
    })
    .await;
    assert!(calls.is_ok(), "RPCs were held up by the stuck log sink");

    // 40 lines: one in the worker's hands, 4 in the buffer, the rest dropped.
    let dropped = telemetry::access_log_dropped();
    assert!(dropped >= 30, "dropped {dropped} of 40 lines");
    let metrics = gateway.gateway.metrics().encode();
    assert!(
        metrics.contains(&format!(
            "wnology_gateway_access_log_dropped_total {dropped}"
        )),
        "{metrics}"
    );
    sink.release();
    telemetry.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_false_writes_no_access_line() {
    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({"email": "dana@example.com"}))).await;
    for (args, expected) in [(&["--access-log", "false"][..], false), (&[][..], true)] {
        let gateway = GatewayBinary::start(gateway_binary(), &upstream.url(), args, &[]).unwrap();
        let mut me = MeServiceClient::new(connect(gateway.addr).await);
        me.get(authed(proto::MeGetRequest::default()))
            .await
            .unwrap();
        // The access line is written off the request path: wait for it (bounded) when expected.
        let mut logged = false;
        for _ in 0..50 {
            logged = gateway.logged("\"target\":\"wnology_gateway::access\"");
            if logged || !expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !expected {
            // Give a line that should not exist the same chance to appear.
            tokio::time::sleep(Duration::from_millis(500)).await;
            logged = gateway.logged("\"target\":\"wnology_gateway::access\"");
        }
        assert_eq!(logged, expected, "args {args:?}: {:#?}", gateway.log());
    }
}

/// The access lines the binary wrote, parsed.
fn access_lines(gateway: &GatewayBinary) -> Vec<serde_json::Value> {
    gateway
        .log()
        .iter()
        .filter(|line| line.contains("\"target\":\"wnology_gateway::access\""))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Waits (bounded) until the binary wrote `count` access lines.
async fn wait_for_access_lines(gateway: &GatewayBinary, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..50 {
        let lines = access_lines(gateway);
        if lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    access_lines(gateway)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_line_has_every_field_of_the_rpc() {
    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({"email": "dana@example.com"}))).await;
    let gateway = GatewayBinary::start(gateway_binary(), &upstream.url(), &[], &[]).unwrap();
    let mut me = MeServiceClient::new(connect(gateway.addr).await);
    for id in ["first-call", "second-call"] {
        let mut request = authed(proto::MeGetRequest::default());
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
        me.get(request).await.unwrap();
    }
    let lines = wait_for_access_lines(&gateway, 2).await;
    assert_eq!(lines.len(), 2, "{:#?}", gateway.log());
    for (line, (id, cache, status)) in lines
        .iter()
        .zip([("first-call", "miss", "200"), ("second-call", "hit", "-")])
    {
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(line["message"], "rpc", "{line}");
        assert_eq!(line["rpc"], "wnology.v1.MeService/Get", "{line}");
        assert_eq!(line["code"], "OK", "{line}");
        assert_eq!(line["cache"], cache, "{line}");
        assert_eq!(line["upstream_status"], status, "{line}");
        assert_eq!(line["request_id"], id, "{line}");
        let latency = line["latency_ms"].as_f64().unwrap();
        assert!(latency > 0.0 && latency < 30_000.0, "{line}");
        let at = line["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_turns_the_access_log_off_and_on_by_its_target() {
    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({"email": "dana@example.com"}))).await;
    // The gateway's own INFO lines stay on: the test kit waits for the "serving" line.
    for (rust_log, expected) in [
        ("info,wnology_gateway::access=off", 0),
        ("warn,wnology_gateway=info,wnology_gateway::access=warn", 0),
        ("warn,wnology_gateway=info", 1),
        ("error,wnology_gateway=info,wnology_gateway::access=info", 1),
    ] {
        let env = [("RUST_LOG", rust_log)];
        let gateway = GatewayBinary::start(gateway_binary(), &upstream.url(), &[], &env).unwrap();
        let mut me = MeServiceClient::new(connect(gateway.addr).await);
        me.get(authed(proto::MeGetRequest::default()))
            .await
            .unwrap();
        let mut lines = wait_for_access_lines(&gateway, 1).await;
        if expected == 0 {
            // Give a line that should not exist the same chance to appear.
            tokio::time::sleep(Duration::from_millis(500)).await;
            lines = access_lines(&gateway);
        }
        assert_eq!(lines.len(), expected, "RUST_LOG={rust_log}: {lines:#?}");
    }
}
