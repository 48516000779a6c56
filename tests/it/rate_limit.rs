//! Per-token rate limits (`--rate-limit-*`): a token over its limit is answered
//! RESOURCE_EXHAUSTED / `RATE_LIMITED` with a RetryInfo and nothing reaches the upstream;
//! another token is untouched; cache hits are not counted unless `--rate-limit-cache-hits`;
//! an upstream 429 holds that token's calls of that action back (`UPSTREAM_RATE_LIMITED`)
//! until its `Retry-After`; with a real `redis-server` two gateway processes share one limit
//! (and the upstream's holds), and with Redis stopped each applies it on its own, failing no
//! call. Counts carry the assertions; the one time bound allows for scheduling jitter.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;
use wnology_gateway::{
    config::Settings,
    proto::{self, org_service_client::OrgServiceClient},
    ratelimit::Rate,
};
use wnology_testkit::redis::bulk_strings;

use crate::support::{binary::GatewayBinary, *};

/// The tests that start processes share two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Each multi-process test's bound.
const TEST_BOUND: Duration = Duration::from_secs(120);

/// 6 a minute (one per 10 s) with a burst of `burst`: over a test of a few seconds exactly
/// `burst` calls are admitted per limit.
fn limited(upstream: &RecordingUpstream, burst: u32, cache_hits: bool) -> Settings {
    let mut settings = Settings::for_upstream(upstream.url());
    settings.rate_limit.rate_limit_per_token = Some(Rate {
        count: NonZeroU32::new(6).unwrap(),
        per: Duration::from_secs(60),
    });
    settings.rate_limit.rate_limit_burst = Some(burst);
    settings.rate_limit.rate_limit_cache_hits = cache_hits;
    settings
}

async fn get(client: &mut OrgServiceClient<Channel>, token: &str, org: u32) -> Result<(), Status> {
    let request = proto::OrgGetRequest {
        org_id: id(org),
        ..Default::default()
    };
    client.get(with_token(request, token)).await.map(|_| ())
}

/// The refusal's reason and RetryInfo delay (panics unless RESOURCE_EXHAUSTED with both).
fn refusal(status: &Status) -> (String, Duration) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let details = status.get_error_details();
    let reason = details.error_info().expect("an ErrorInfo").reason.clone();
    let delay = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a RetryInfo with a delay");
    (reason, delay)
}

/// Upstream requests whose `authorization` carries `token`.
fn requests_of(upstream: &RecordingUpstream, token: &str) -> usize {
    let header = format!("Bearer {token}");
    upstream
        .requests()
        .iter()
        .filter(|r| r.header("authorization") == Some(header.as_str()))
        .count()
}

#[tokio::test]
async fn a_token_over_its_limit_is_refused_with_retry_info_and_another_token_is_untouched() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let mut settings = limited(&upstream, 3, false);
    settings.cache_entity_ttl = Duration::ZERO;
    let gateway = TestGateway::start_with(settings).await;
    let mut org = gateway.org().await;
    for n in 0..3 {
        get(&mut org, "noisy", n).await.expect("within the burst");
    }
    for n in 3..8 {
        let status = get(&mut org, "noisy", n).await.unwrap_err();
        let (reason, delay) = refusal(&status);
        assert_eq!(reason, "RATE_LIMITED");
        assert!(
            delay > Duration::from_secs(5) && delay <= Duration::from_secs(10),
            "the wait until the next call conforms (one per 10 s): {delay:?}"
        );
    }
    assert_eq!(
        requests_of(&upstream, "noisy"),
        3,
        "no refused call reached the upstream"
    );
    // Another token, while the first is limited: its own full burst.
    for n in 0..3 {
        get(&mut org, "quiet", n)
            .await
            .expect("another token is untouched");
    }
    assert!(get(&mut org, "quiet", 9).await.is_err());
    assert_eq!(requests_of(&upstream, "quiet"), 3);
    let metrics = gateway.gateway.metrics().encode();
    for line in [
        "wnology_gateway_rate_limited_total{reason=\"RATE_LIMITED\"} 6",
        "wnology_gateway_rate_limited_total{reason=\"UPSTREAM_RATE_LIMITED\"} 0",
        "wnology_gateway_rate_limit_checks_total{store=\"local\"} 12",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn cache_hits_are_not_counted_unless_configured() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    // Hits free: one miss, ten hits, a second miss are all admitted; a third miss is not.
    let gateway = TestGateway::start_with(limited(&upstream, 2, false)).await;
    let mut org = gateway.org().await;
    for _ in 0..11 {
        get(&mut org, "reader", 1).await.expect("a miss, then hits");
    }
    get(&mut org, "reader", 2).await.expect("the second miss");
    let status = get(&mut org, "reader", 3).await.unwrap_err();
    assert_eq!(refusal(&status).0, "RATE_LIMITED");
    get(&mut org, "reader", 1)
        .await
        .expect("a hit is served while limited");
    assert_eq!(upstream.count(), 2);
    gateway.stop().await;

    // Hits counted: a miss and one hit use the burst of 2; the next hit is refused.
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start_with(limited(&upstream, 2, true)).await;
    let mut org = gateway.org().await;
    get(&mut org, "reader", 1).await.expect("the miss");
    get(&mut org, "reader", 1).await.expect("a hit, counted");
    let status = get(&mut org, "reader", 1).await.unwrap_err();
    assert_eq!(refusal(&status).0, "RATE_LIMITED");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn an_upstream_429_with_retry_after_2_holds_that_token_and_action_back_then_lets_it_through()
{
    let first = Arc::new(AtomicBool::new(true));
    let upstream = RecordingUpstream::start_with(move |request| {
        let is_get = request
            .path_and_query
            .starts_with(&format!("/orgs/{}", id(1)));
        if is_get && first.swap(false, Ordering::SeqCst) {
            Answer::json(429, &json!({"type": "RateLimited", "message": "slow down"}))
                .with_header("retry-after", "2")
        } else {
            Answer::json(200, &json!({}))
        }
    })
    .await;
    let mut settings = limited(&upstream, 1000, false);
    settings.rate_limit.rate_limit_per_token = Some("1000/s".parse().unwrap());
    settings.cache_entity_ttl = Duration::ZERO;
    settings.upstream_retries = 0;
    let gateway = TestGateway::start_with(settings).await;
    let mut org = gateway.org().await;
    let status = get(&mut org, "busy", 1).await.unwrap_err();
    let started = Instant::now();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "the upstream's own 429"
    );
    let (reason, delay) = refusal(&get(&mut org, "busy", 1).await.unwrap_err());
    assert_eq!(reason, "UPSTREAM_RATE_LIMITED");
    assert!(
        delay > Duration::from_secs(1) && delay <= Duration::from_secs(2),
        "{delay:?}"
    );
    // Another action of the same token, and the same action of another token, pass.
    org.list(with_token(proto::OrgListRequest::default(), "busy"))
        .await
        .expect("another action is not held back");
    get(&mut org, "other", 1)
        .await
        .expect("another token is not held back");
    let mut held = 1;
    loop {
        match get(&mut org, "busy", 1).await {
            Ok(()) => break,
            Err(status) => {
                assert_eq!(refusal(&status).0, "UPSTREAM_RATE_LIMITED");
                held += 1;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the hold never ends"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    eprintln!("held back {held} calls for {elapsed:?}");
    // About 2 s: the hold is set when the 429 arrives, a little before `started`.
    assert!(
        elapsed > Duration::from_millis(1500) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    assert!(held >= 3, "calls were refused during the hold: {held}");
    let gets_of_busy = upstream
        .requests()
        .iter()
        .filter(|r| r.path_and_query.starts_with(&format!("/orgs/{}", id(1))))
        .filter(|r| r.header("authorization") == Some("Bearer busy"))
        .count();
    assert_eq!(
        gets_of_busy, 2,
        "the 429 and the call after the hold, nothing between"
    );
    let metrics = gateway.gateway.metrics().encode();
    let line =
        format!("wnology_gateway_rate_limited_total{{reason=\"UPSTREAM_RATE_LIMITED\"}} {held}");
    assert!(metrics.contains(&line), "{line} in {metrics}");
}

/// A recording upstream and two gateway processes sharing one limit on one Redis
/// ([`crate::support::Replicas`]), with a client of each.
struct Replicas {
    deployment: crate::support::Replicas,
    upstream: RecordingUpstream,
    clients: Vec<OrgServiceClient<Channel>>,
}

impl Replicas {
    async fn start(upstream: RecordingUpstream, burst: &str) -> Replicas {
        let args = [
            "--cache-entity-ttl",
            "0",
            "--upstream-retries",
            "0",
            "--rate-limit-per-token",
            "6/m",
            "--rate-limit-burst",
            burst,
        ];
        let deployment = crate::support::Replicas::start(2, &upstream.url(), &args).await;
        let mut clients = Vec::new();
        for replica in 0..2 {
            clients.push(OrgServiceClient::new(deployment.channel(replica).await));
        }
        Replicas {
            deployment,
            upstream,
            clients,
        }
    }

    /// `calls` reads of `token`, alternating replicas: (admitted, refused `RATE_LIMITED`)
    /// per replica; any other outcome fails the test.
    async fn spread(&mut self, token: &str, calls: u32) -> [(u32, u32); 2] {
        let mut outcomes = [(0, 0); 2];
        for n in 0..calls {
            let replica = (n % 2) as usize;
            match get(&mut self.clients[replica], token, n).await {
                Ok(()) => outcomes[replica].0 += 1,
                Err(status) => {
                    assert_eq!(refusal(&status).0, "RATE_LIMITED", "{status:?}");
                    outcomes[replica].1 += 1;
                }
            }
        }
        outcomes
    }
}

async fn bounded(test: impl Future<Output = ()>) {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("the test ends within its bound");
}

/// The value of the metric line that starts with `series` on a replica (0 when absent).
async fn metric(binary: &GatewayBinary, series: &str) -> u64 {
    admin_get(binary.admin, "/metrics")
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_admit_no_more_than_one_limit_and_share_the_upstreams_holds() {
    bounded(async {
        let upstream = RecordingUpstream::start_with(|request| {
            if request.header("authorization") == Some("Bearer throttled") {
                Answer::json(429, &json!({"type": "RateLimited"})).with_header("retry-after", "30")
            } else {
                Answer::json(200, &json!({}))
            }
        })
        .await;
        let mut d = Replicas::start(upstream, "4").await;
        let started = Instant::now();
        let outcomes = d.spread("shared", 24).await;
        let elapsed = started.elapsed();
        let admitted = outcomes[0].0 + outcomes[1].0;
        eprintln!("24 calls over two replicas in {elapsed:?}: {outcomes:?}");
        // The burst, plus one per 10 s that passed (none in a test this short).
        let refills = (elapsed.as_secs() / 10) as u32 + 1;
        assert!(
            (4..=4 + refills).contains(&admitted),
            "admitted {admitted} (burst 4) in {elapsed:?}: {outcomes:?}"
        );
        assert!(
            outcomes[0].0 >= 1 && outcomes[1].0 >= 1,
            "both replicas admitted: {outcomes:?}"
        );
        assert_eq!(requests_of(&d.upstream, "shared"), admitted as usize);
        let mut counted_in_redis = 0;
        for binary in &d.deployment.binaries {
            counted_in_redis += metric(
                binary,
                "wnology_gateway_rate_limit_checks_total{store=\"redis\"}",
            )
            .await;
            assert_eq!(
                metric(
                    binary,
                    "wnology_gateway_rate_limit_checks_total{store=\"local\"}"
                )
                .await,
                0
            );
            let lines = binary.log();
            let starts = lines
                .iter()
                .filter(|l| l.contains("token rate limited"))
                .count();
            assert_eq!(
                starts, 1,
                "one log line when the token starts being limited"
            );
            assert!(
                lines
                    .iter()
                    .all(|l| !l.contains("Bearer shared") && !l.contains("\"shared\""))
            );
        }
        assert_eq!(counted_in_redis, 24);
        let keys = bulk_strings(&d.deployment.redis.command(&[b"KEYS", b"wg1:rl:*"]).unwrap());
        assert!(!keys.is_empty() && keys.iter().all(|k| !k.windows(6).any(|w| w == b"shared")));

        // The upstream's 429 to one replica holds the token back on the other too.
        let status = get(&mut d.clients[0], "throttled", 1).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let recorded = Instant::now();
        while bulk_strings(
            &d.deployment
                .redis
                .command(&[b"KEYS", b"wg1:rl:*:hold:*"])
                .unwrap(),
        )
        .is_empty()
        {
            assert!(
                recorded.elapsed() < Duration::from_secs(10),
                "the hold never reached Redis"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (reason, delay) = refusal(&get(&mut d.clients[1], "throttled", 1).await.unwrap_err());
        assert_eq!(reason, "UPSTREAM_RATE_LIMITED");
        assert!(delay > Duration::from_secs(20), "{delay:?}");
        assert_eq!(requests_of(&d.upstream, "throttled"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_each_replica_limits_on_its_own_and_no_call_fails() {
    bounded(async {
        let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
        let mut d = Replicas::start(upstream, "3").await;
        let before = d.spread("warm", 2).await;
        assert_eq!(before, [(1, 0), (1, 0)], "Redis counts while it is up");
        d.deployment.redis.stop();
        let started = Instant::now();
        let outcomes = d.spread("alone", 20).await;
        let elapsed = started.elapsed();
        eprintln!("20 calls over two replicas without Redis in {elapsed:?}: {outcomes:?}");
        // Each replica its own burst of 3 (plus one per 10 s that passed): 6 in all, more
        // than the one limit's 3 — and every other call a clean RATE_LIMITED.
        let refills = (elapsed.as_secs() / 10) as u32 + 1;
        for (replica, (admitted, refused)) in outcomes.iter().enumerate() {
            assert!(
                (3..=3 + refills).contains(admitted),
                "replica {replica}: {outcomes:?}"
            );
            assert_eq!(admitted + refused, 10);
        }
        assert_eq!(
            requests_of(&d.upstream, "alone") as u32,
            outcomes[0].0 + outcomes[1].0
        );
        for binary in &d.deployment.binaries {
            assert_eq!(
                metric(binary, "wnology_gateway_rate_limit_fallback").await,
                1
            );
            assert!(
                metric(
                    binary,
                    "wnology_gateway_rate_limit_checks_total{store=\"local\"}"
                )
                .await
                    >= 10
            );
            let warnings = binary
                .log()
                .iter()
                .filter(|l| l.contains("rate limit: Redis cannot be used"))
                .count();
            assert_eq!(warnings, 1, "one warning per change of state");
        }
    })
    .await;
}
