//! Caller bypass (`cache-control`), per-class time to live, what is never cached, and the byte
//! bound.

use std::time::Duration;

use crate::support::*;
use serde_json::json;
use wnology_gateway::{config::Settings, proto};

fn request_with(cache_control: &str) -> tonic::Request<proto::MeDeviceCountsRequest> {
    let mut request = authed(proto::MeDeviceCountsRequest {
        start: Some(1),
        end: Some(2),
    });
    request
        .metadata_mut()
        .insert("cache-control", cache_control.parse().unwrap());
    request
}

fn x_cache<T>(response: &tonic::Response<T>) -> &str {
    response
        .metadata()
        .get("x-cache")
        .unwrap()
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn no_cache_refreshes_and_no_store_neither_reads_nor_writes() {
    let upstream =
        RecordingUpstream::start(Answer::json(200, &json!({"counts": [{"total": 1}]}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;
    let first = me
        .device_counts(authed(proto::MeDeviceCountsRequest {
            start: Some(1),
            end: Some(2),
        }))
        .await
        .unwrap();
    assert_eq!(x_cache(&first), "miss");

    upstream.answer(Answer::json(200, &json!({"counts": [{"total": 2}]})));
    let stored = me.device_counts(request_with("no-store")).await.unwrap();
    assert_eq!(x_cache(&stored), "bypass");
    assert_eq!(
        stored.get_ref().counts[0].total,
        Some(2),
        "no-store does not read the cache"
    );
    let cached = me
        .device_counts(authed(proto::MeDeviceCountsRequest {
            start: Some(1),
            end: Some(2),
        }))
        .await
        .unwrap();
    assert_eq!(
        (x_cache(&cached), cached.get_ref().counts[0].total),
        ("hit", Some(1)),
        "no-store does not write it"
    );

    let refreshed = me
        .device_counts(request_with("max-age=0, no-cache"))
        .await
        .unwrap();
    assert_eq!(
        (x_cache(&refreshed), refreshed.get_ref().counts[0].total),
        ("bypass", Some(2))
    );
    let cached = me
        .device_counts(authed(proto::MeDeviceCountsRequest {
            start: Some(1),
            end: Some(2),
        }))
        .await
        .unwrap();
    assert_eq!(
        (x_cache(&cached), cached.get_ref().counts[0].total),
        ("hit", Some(2)),
        "no-cache stored the fresh answer"
    );
    assert_eq!(upstream.count(), 3);
}

#[tokio::test]
async fn entries_expire_after_their_class_ttl() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.cache_usage_ttl = Duration::from_millis(300);
    settings.cache_entity_ttl = Duration::ZERO;
    // Past its TTL an entry is not served at all (stale answers: tests/it/stale.rs).
    settings.cache_stale = wnology_gateway::cache::stale::StaleSettings::off();
    let gateway = TestGateway::start_with(settings).await;
    let mut me = gateway.me().await;
    let usage = || authed(proto::MeDeviceCountsRequest::default());
    assert_eq!(x_cache(&me.device_counts(usage()).await.unwrap()), "miss");
    assert_eq!(x_cache(&me.device_counts(usage()).await.unwrap()), "hit");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        x_cache(&me.device_counts(usage()).await.unwrap()),
        "miss",
        "expired"
    );

    // A zero TTL disables the class.
    assert_eq!(
        x_cache(
            &me.get(authed(proto::MeGetRequest::default()))
                .await
                .unwrap()
        ),
        "bypass"
    );
    assert_eq!(
        x_cache(
            &me.get(authed(proto::MeGetRequest::default()))
                .await
                .unwrap()
        ),
        "bypass"
    );
    assert_eq!(upstream.count(), 4);
}

#[tokio::test]
async fn refresh_token_and_writes_are_never_cached() {
    let upstream = RecordingUpstream::start(Answer::json(
        200,
        &json!({"userId": id(1), "token": "fresh", "success": true}),
    ))
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;
    for _ in 0..2 {
        let answer = me
            .refresh_token(authed(proto::MeRefreshTokenRequest {}))
            .await
            .unwrap();
        assert!(answer.metadata().get("x-cache").is_none());
        me.verify_email(authed(proto::MeVerifyEmailRequest {}))
            .await
            .unwrap();
    }
    assert_eq!(upstream.count(), 4);
    assert_eq!(gateway.gateway.cache().figures().entries, 0);
}

#[tokio::test]
async fn the_weighted_size_never_exceeds_the_bound() {
    const BOUND: u64 = 64 * 1024;
    let filler = "x".repeat(1000);
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"name": filler}))).await;
    let mut settings = Settings::for_upstream(upstream.url());
    settings.cache_max_bytes = BOUND;
    let gateway = TestGateway::start_with(settings).await;
    let mut org = gateway.org().await;
    let cache = gateway.gateway.cache();
    for n in 0..400 {
        org.get(authed(proto::OrgGetRequest {
            org_id: id(n),
            ..Default::default()
        }))
        .await
        .unwrap();
        if n % 20 == 0 {
            cache.run_pending_tasks().await;
            assert!(
                cache.figures().weighted_bytes <= BOUND,
                "{:?}",
                cache.figures()
            );
        }
    }
    cache.run_pending_tasks().await;
    let figures = cache.figures();
    assert!(figures.weighted_bytes <= BOUND, "{figures:?}");
    assert!(
        figures.weighted_bytes > BOUND / 2,
        "the cache was filled: {figures:?}"
    );
    assert!(figures.evictions > 0, "{figures:?}");
}
