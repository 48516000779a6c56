//! Concurrent identical cold reads share one upstream call, even when the first caller gives up.

use std::time::Duration;

use crate::support::*;
use serde_json::json;
use wnology_gateway::proto;

fn payload_counts() -> proto::MePayloadCountsRequest {
    proto::MePayloadCountsRequest {
        start: Some(1_700_000_000_000),
        end: Some(1_700_086_400_000),
        as_bytes: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_identical_cold_reads_make_one_upstream_request() {
    let stats = json!({"mqttIn": {"device": 42}});
    let upstream =
        RecordingUpstream::start(Answer::json(200, &stats).after(Duration::from_millis(300))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let client = gateway.me().await;
    let calls = (0..1000).map(|_| {
        let mut client = client.clone();
        tokio::spawn(async move { client.payload_counts(authed(payload_counts())).await })
    });
    let results = futures_join_all(calls).await;
    for result in &results {
        let response = result.as_ref().expect("call succeeded");
        assert_eq!(response.get_ref().mqtt_in.get("device"), Some(&42.0));
    }
    assert_eq!(
        upstream.count(),
        1,
        "one upstream request for 1,000 identical cold reads"
    );
    let figures = gateway.gateway.cache().figures();
    assert_eq!(figures.misses, 1);
    assert_eq!(figures.hits + figures.coalesced, 999);
}

#[tokio::test]
async fn a_cancelled_first_caller_does_not_make_the_waiters_call_again() {
    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({})).after(Duration::from_millis(400)))
            .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut first = gateway.me().await;
    let mut second = gateway.me().await;
    let first_call =
        tokio::spawn(async move { first.payload_counts(authed(payload_counts())).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second_call =
        tokio::spawn(async move { second.payload_counts(authed(payload_counts())).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    first_call.abort();
    let answer = second_call
        .await
        .unwrap()
        .expect("the waiter gets the detached load's answer");
    assert_eq!(answer.metadata().get("x-cache").unwrap(), "miss");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let upstream = RecordingUpstream::start(Answer::json(
        500,
        &json!({"type": "InternalError", "message": "down"}),
    ))
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;
    assert!(me.payload_counts(authed(payload_counts())).await.is_err());
    upstream.answer(Answer::json(200, &json!({})));
    let answer = me
        .payload_counts(authed(payload_counts()))
        .await
        .expect("the error was not cached");
    assert_eq!(answer.metadata().get("x-cache").unwrap(), "miss");
    assert_eq!(upstream.count(), 2);
}

async fn futures_join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.unwrap());
    }
    out
}
