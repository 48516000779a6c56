//! Serving through upstream trouble: stale-if-error (a stale answer during an outage, with
//! `x-cache: stale` and a growing `age`; never for an answered 4xx, never after a write
//! invalidated it), stale-while-revalidate (one background refresh for many stale reads), the
//! caller's `max-age`, `stale-if-error` and `only-if-cached`, the byte bound with entries kept
//! past their TTL, and each window at 0 turning its feature off.

use std::time::Duration;

use crate::support::*;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::{config::Settings, proto};

const SECOND: Duration = Duration::from_secs(1);

fn counts(total: i64) -> Answer {
    Answer::json(200, &json!({"counts": [{"total": total}]}))
}

fn down(status: u16) -> Answer {
    Answer::json(
        status,
        &json!({"type": "Trouble", "message": "status {status}"}),
    )
}

/// Usage reads cached for `ttl`, with the given stale windows; no retries, no breaker.
fn settings(
    upstream: &RecordingUpstream,
    ttl: Duration,
    revalidate: Duration,
    if_error: Duration,
) -> Settings {
    let mut settings = Settings::for_upstream(upstream.url());
    settings.cache_usage_ttl = ttl;
    settings.cache_stale.cache_usage_stale_while_revalidate = revalidate;
    settings.cache_stale.cache_usage_stale_if_error = if_error;
    settings.upstream_retries = 0;
    settings.upstream_breaker.upstream_breaker_failure_ratio = 0.0;
    settings
}

fn device_counts(cache_control: Option<&str>) -> tonic::Request<proto::MeDeviceCountsRequest> {
    let mut request = authed(proto::MeDeviceCountsRequest {
        start: Some(1),
        end: Some(2),
    });
    if let Some(value) = cache_control {
        request
            .metadata_mut()
            .insert("cache-control", value.parse().unwrap());
    }
    request
}

/// What one `MeService/DeviceCounts` answered: its total, `x-cache` and `age`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub total: Option<i64>,
    pub x_cache: String,
    pub age: Option<u64>,
}

impl Seen {
    /// What `response` says.
    pub(crate) fn of(response: &tonic::Response<proto::DeviceCounts>) -> Seen {
        let header = |name| {
            response
                .metadata()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        Seen {
            total: response.get_ref().counts.first().and_then(|c| c.total),
            x_cache: header("x-cache").unwrap_or_default(),
            age: header("age").map(|age| age.parse().unwrap()),
        }
    }
}

async fn read(gateway: &TestGateway, cache_control: Option<&str>) -> Result<Seen, tonic::Status> {
    let response = gateway
        .me()
        .await
        .device_counts(device_counts(cache_control))
        .await?;
    Ok(Seen::of(&response))
}

#[tokio::test]
async fn an_outage_is_answered_stale_with_a_growing_age() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let mut settings = settings(&upstream, SECOND, Duration::ZERO, Duration::from_secs(600));
    settings.upstream_timeout = Duration::from_millis(300);
    let gateway = TestGateway::start_with(settings).await;
    let first = read(&gateway, None).await.unwrap();
    assert_eq!((first.total, first.x_cache.as_str()), (Some(1), "miss"));
    let hit = read(&gateway, None).await.unwrap();
    assert_eq!(
        (hit.x_cache.as_str(), hit.age),
        ("hit", Some(0)),
        "age on every cached answer"
    );

    tokio::time::sleep(SECOND + Duration::from_millis(200)).await;
    let mut ages = Vec::new();
    for failure in [down(503), down(500), down(429), counts(2).after(3 * SECOND)] {
        upstream.answer(failure);
        let before = upstream.count();
        let stale = read(&gateway, None)
            .await
            .expect("a stale answer, not the failure");
        assert_eq!(upstream.count(), before + 1, "the upstream was asked first");
        assert_eq!((stale.total, stale.x_cache.as_str()), (Some(1), "stale"));
        ages.push(stale.age.expect("age"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(ages[0] >= 1 && ages[3] > ages[0], "a growing age: {ages:?}");

    upstream.answer(counts(3));
    let recovered = read(&gateway, None).await.unwrap();
    assert_eq!(
        (recovered.total, recovered.x_cache.as_str()),
        (Some(3), "miss")
    );
    let metrics = gateway.gateway.metrics().encode();
    assert!(
        metrics.contains("cache_stale_answers_total{reason=\"error\"} 4"),
        "{metrics}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn answers_of_the_upstream_about_the_call_pass_through_never_stale() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let settings = settings(
        &upstream,
        Duration::from_millis(200),
        Duration::ZERO,
        600 * SECOND,
    );
    let gateway = TestGateway::start_with(settings).await;
    read(&gateway, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (status, code) in [
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (400, Code::InvalidArgument),
        (404, Code::NotFound),
        (410, Code::FailedPrecondition),
    ] {
        upstream.answer(down(status));
        let error = read(&gateway, None).await.unwrap_err();
        assert_eq!(error.code(), code, "{status} is passed on: {error:?}");
    }
    upstream.answer(down(503));
    let stale = read(&gateway, None).await.unwrap();
    assert_eq!(
        stale.x_cache, "stale",
        "the entry is still there for failures"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_entry_a_write_invalidated_is_never_served_stale() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let settings = settings(
        &upstream,
        Duration::from_millis(200),
        Duration::ZERO,
        600 * SECOND,
    );
    let gateway = TestGateway::start_with(settings).await;
    read(&gateway, None).await.unwrap();
    upstream.answer(Answer::json(200, &json!({"id": id(1), "firstName": "A"})));
    let patch = proto::MePatchRequest {
        body: Some(proto::MePatch::default()),
        ..Default::default()
    };
    gateway.me().await.patch(authed(patch)).await.unwrap();
    upstream.answer(down(503));
    let fresh_but_invalidated = read(&gateway, None).await.unwrap_err();
    assert_eq!(fresh_but_invalidated.code(), Code::Unavailable);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let past_ttl = read(&gateway, None).await.unwrap_err();
    assert_eq!(past_ttl.code(), Code::Unavailable, "not stale either");
    gateway.stop().await;
}

#[tokio::test]
async fn a_hundred_stale_reads_make_one_background_refresh() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let settings = settings(&upstream, SECOND, 30 * SECOND, 600 * SECOND);
    let gateway = TestGateway::start_with(settings).await;
    read(&gateway, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.answer(counts(2).after(Duration::from_millis(500)));

    let me = gateway.me().await;
    let reads: Vec<_> = (0..100)
        .map(|_| {
            let mut me = me.clone();
            tokio::spawn(async move { me.device_counts(device_counts(None)).await })
        })
        .collect();
    for read in reads {
        let response = read.await.unwrap().expect("answered");
        assert_eq!(response.metadata().get("x-cache").unwrap(), "stale");
        assert_eq!(response.get_ref().counts[0].total, Some(1));
    }
    assert!(upstream.count() <= 2, "answered before the refresh ended");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(upstream.count(), 2, "one refresh for 100 stale reads");
    let refreshed = read(&gateway, None).await.unwrap();
    assert_eq!(
        (refreshed.total, refreshed.x_cache.as_str()),
        (Some(2), "hit")
    );

    // A failed refresh leaves the entry for stale-if-error.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    upstream.answer(down(503));
    assert_eq!(read(&gateway, None).await.unwrap().x_cache, "stale");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.count(), 3, "the second refresh ran, and failed");
    let kept = read(&gateway, None).await.unwrap();
    assert_eq!((kept.total, kept.x_cache.as_str()), (Some(2), "stale"));

    let metrics = gateway.gateway.metrics().encode();
    for line in [
        "cache_background_refreshes_total 3",
        "cache_stale_answers_total{reason=\"revalidate\"} 102",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn each_window_at_zero_turns_its_feature_off() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let ttl = Duration::from_millis(200);
    let gateway =
        TestGateway::start_with(settings(&upstream, ttl, Duration::ZERO, 600 * SECOND)).await;
    read(&gateway, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    upstream.answer(counts(2));
    let no_revalidate = read(&gateway, None).await.unwrap();
    assert_eq!(
        (no_revalidate.total, no_revalidate.x_cache.as_str()),
        (Some(2), "miss")
    );
    gateway.stop().await;

    let upstream = RecordingUpstream::start(counts(1)).await;
    let gateway =
        TestGateway::start_with(settings(&upstream, ttl, Duration::ZERO, Duration::ZERO)).await;
    read(&gateway, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    upstream.answer(down(503));
    let no_stale_if_error = read(&gateway, None).await.unwrap_err();
    assert_eq!(no_stale_if_error.code(), Code::Unavailable);
    gateway.stop().await;
}

#[tokio::test]
async fn the_callers_max_age_and_stale_if_error() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let gateway = TestGateway::start_with(settings(
        &upstream,
        Duration::from_secs(60),
        Duration::ZERO,
        600 * SECOND,
    ))
    .await;
    read(&gateway, None).await.unwrap();
    tokio::time::sleep(SECOND + Duration::from_millis(100)).await;
    assert_eq!(
        read(&gateway, Some("max-age=5")).await.unwrap().x_cache,
        "hit"
    );
    upstream.answer(counts(2));
    let younger = read(&gateway, Some("max-age=1")).await.unwrap();
    assert_eq!((younger.total, younger.x_cache.as_str()), (Some(2), "miss"));
    assert_eq!(upstream.count(), 2);
    gateway.stop().await;

    let upstream = RecordingUpstream::start(counts(1)).await;
    let ttl = Duration::from_millis(200);
    let gateway =
        TestGateway::start_with(settings(&upstream, ttl, Duration::ZERO, 600 * SECOND)).await;
    read(&gateway, None).await.unwrap();
    tokio::time::sleep(SECOND + Duration::from_millis(100)).await;
    upstream.answer(down(503));
    for narrower in ["stale-if-error=0", "max-age=1"] {
        let error = read(&gateway, Some(narrower)).await.unwrap_err();
        assert_eq!(
            error.code(),
            Code::Unavailable,
            "{narrower}: no stale answer"
        );
    }
    assert_eq!(
        read(&gateway, Some("stale-if-error=60"))
            .await
            .unwrap()
            .x_cache,
        "stale"
    );
    assert_eq!(read(&gateway, None).await.unwrap().x_cache, "stale");
    gateway.stop().await;
}

#[tokio::test]
async fn only_if_cached_never_reaches_the_upstream() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let ttl = Duration::from_millis(300);
    let gateway =
        TestGateway::start_with(settings(&upstream, ttl, 30 * SECOND, 600 * SECOND)).await;
    let error = read(&gateway, Some("only-if-cached")).await.unwrap_err();
    assert_eq!(error.code(), Code::Unavailable);
    let details = error.get_error_details();
    assert_eq!(
        details.error_info().expect("ErrorInfo").reason,
        "NOT_CACHED"
    );
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");

    read(&gateway, None).await.unwrap();
    assert_eq!(
        read(&gateway, Some("only-if-cached"))
            .await
            .unwrap()
            .x_cache,
        "hit"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stale = read(&gateway, Some("only-if-cached")).await.unwrap();
    assert_eq!(stale.x_cache, "stale");
    let too_old = read(&gateway, Some("only-if-cached, max-age=0"))
        .await
        .unwrap_err();
    assert_eq!(too_old.code(), Code::Unavailable);
    let bypass = read(&gateway, Some("only-if-cached, no-cache"))
        .await
        .unwrap_err();
    assert_eq!(bypass.code(), Code::Unavailable, "no-cache reads no cache");
    let mut uncached = gateway.me().await;
    let mut request = authed(proto::MeRefreshTokenRequest::default());
    request
        .metadata_mut()
        .insert("cache-control", "only-if-cached".parse().unwrap());
    let never_cached = uncached.refresh_token(request).await.unwrap_err();
    assert_eq!(
        never_cached.code(),
        Code::Unavailable,
        "a route that is never cached"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upstream.count(), 1, "not even a background refresh");
    gateway.stop().await;
}

#[tokio::test]
async fn entries_kept_past_their_ttl_stay_within_the_byte_bound() {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let mut settings = settings(
        &upstream,
        Duration::from_millis(100),
        Duration::ZERO,
        600 * SECOND,
    );
    let bound = 32 * 1024;
    settings.cache_max_bytes = bound;
    let gateway = TestGateway::start_with(settings).await;
    let mut me = gateway.me().await;
    for start in 0..200 {
        me.device_counts(authed(proto::MeDeviceCountsRequest {
            start: Some(start),
            end: Some(1_000_000),
        }))
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cache = gateway.gateway.cache();
    cache.run_pending_tasks().await;
    let figures = cache.figures();
    assert!(figures.weighted_bytes <= bound, "{figures:?}");
    assert!(figures.evictions > 0, "the bound evicted: {figures:?}");
    assert!(
        figures.entries > 0 && figures.expirations == 0,
        "entries outlive their TTL, counted by the weigher: {figures:?}"
    );
    gateway.stop().await;
}
