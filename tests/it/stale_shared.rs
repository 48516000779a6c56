//! Serving through upstream trouble across replicas: gateway processes sharing one
//! `redis-server` ([`Replicas`]) in front of one loopback upstream the test switches. A replica
//! that never read an entry answers it stale from the shared tier during an outage (a 503, a
//! refused connection), with `x-cache: stale` and a growing `age`; concurrent stale reads on
//! two replicas make one background refresh between them; a write through one replica keeps
//! every replica from serving the entry stale; a 401 passes through; windows at 0 serve
//! nothing stale; the server span records `wnology.cache.result=stale`; and while a replica's
//! invalidation feed is down (Redis forbids its channel), it still serves stale answers from
//! Redis but keeps none, and trusts its feed again once the channel is allowed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::stale::Seen;
use crate::support::{otlp::*, *};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    task::{JoinHandle, JoinSet},
};
use tonic::{Code, transport::Channel};
use wnology_gateway::{
    cache::shared::settings::RedisUrl,
    config::Settings,
    proto::{self, me_service_client::MeServiceClient},
    telemetry::{LogFormat, LogOptions, Telemetry},
};

const SECOND: Duration = Duration::from_secs(1);
/// Each test's bound.
const TEST_BOUND: Duration = Duration::from_secs(120);

/// The tests start several processes each on two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn bounded(test: impl Future<Output = ()>) {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("the test ends within its bound");
}

fn counts(total: i64) -> Answer {
    Answer::json(200, &json!({"counts": [{"total": total}]}))
}

fn down(status: u16) -> Answer {
    Answer::json(
        status,
        &json!({"type": "Trouble", "message": format!("status {status}")}),
    )
}

/// A loopback front of the upstream that can refuse connections: while it refuses, nothing
/// listens on its port (a connect is refused) and the connections it forwarded are closed.
struct Front {
    addr: SocketAddr,
    target: SocketAddr,
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl Front {
    async fn start(target: SocketAddr) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Front {
            addr,
            target,
            serving: Mutex::new(Some(tokio::spawn(forward(listener, target)))),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the listener and every forwarded connection.
    async fn refuse(&self) {
        let serving = self.serving.lock().unwrap().take();
        if let Some(task) = serving {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    async fn accept(&self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(128).unwrap();
        *self.serving.lock().unwrap() = Some(tokio::spawn(forward(listener, self.target)));
    }
}

/// Forwards each connection to `target`; dropping the task drops (closes) them all.
async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// The flags of usage reads cached for `ttl` with the given windows; no retries, no breaker.
fn flags(ttl: &str, revalidate: &str, if_error: &str) -> Vec<String> {
    [
        "--cache-usage-ttl",
        ttl,
        "--cache-usage-stale-while-revalidate",
        revalidate,
        "--cache-usage-stale-if-error",
        if_error,
        "--upstream-retries",
        "0",
        "--upstream-breaker-failure-ratio",
        "0",
        // A waiter waits for another replica's fill up to half of it (see `SharedRead`).
        "--upstream-timeout",
        "10s",
    ]
    .map(String::from)
    .to_vec()
}

/// The upstream (behind a front that can refuse) and `count` replicas sharing one Redis.
async fn deployment(count: usize, flags: &[String]) -> (RecordingUpstream, Front, Replicas) {
    let upstream = RecordingUpstream::start(counts(1)).await;
    let front = Front::start(upstream.addr).await;
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let replicas = Replicas::start(count, &front.url(), &args).await;
    (upstream, front, replicas)
}

async fn read(channel: &Channel) -> Result<Seen, tonic::Status> {
    let request = authed(proto::MeDeviceCountsRequest {
        start: Some(1),
        end: Some(2),
    });
    let response = MeServiceClient::new(channel.clone())
        .device_counts(request)
        .await?;
    Ok(Seen::of(&response))
}

/// Replica 0 reads the entry (a miss) and its fill lands in Redis.
async fn filled_by_first(replicas: &Replicas) {
    let first = read(&replicas.channel(0).await).await.unwrap();
    assert_eq!((first.total, first.x_cache.as_str()), (Some(1), "miss"));
    replicas
        .wait_for_metric(0, "wnology_gateway_shared_cache_writes_total 1")
        .await;
}

/// [`deployment`] of `count` replicas with [`flags`]`(ttl, revalidate, if_error)`, whose entry
/// replica 0 filled in Redis is now just past its TTL of `ttl_secs`.
async fn past_its_ttl(
    count: usize,
    ttl_secs: u64,
    revalidate: &str,
    if_error: &str,
) -> (RecordingUpstream, Front, Replicas) {
    let ttl = format!("{ttl_secs}s");
    let deployed = deployment(count, &flags(&ttl, revalidate, if_error)).await;
    filled_by_first(&deployed.2).await;
    tokio::time::sleep(Duration::from_secs(ttl_secs) + Duration::from_millis(200)).await;
    deployed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_never_read_an_entry_answers_it_stale_during_an_outage() {
    bounded(async {
        let (upstream, front, replicas) = past_its_ttl(2, 1, "0", "600s").await;
        let b = replicas.channel(1).await;

        upstream.answer(down(503));
        let before = upstream.count();
        let on_503 = read(&b).await.expect("a stale answer, not the 503");
        assert_eq!(upstream.count(), before + 1, "the upstream was asked first");
        assert_eq!((on_503.total, on_503.x_cache.as_str()), (Some(1), "stale"));
        tokio::time::sleep(SECOND).await;
        front.refuse().await;
        let on_refused = read(&b).await.expect("a stale answer, not UNAVAILABLE");
        assert_eq!(
            (on_refused.total, on_refused.x_cache.as_str()),
            (Some(1), "stale")
        );
        let ages = (on_503.age.expect("age"), on_refused.age.expect("age"));
        assert!(ages.0 >= 1 && ages.1 > ages.0, "a growing age: {ages:?}");
        assert_eq!(
            upstream.count(),
            before + 1,
            "nothing got through the front"
        );

        front.accept().await;
        upstream.answer(counts(3));
        let recovered = read(&b).await.unwrap();
        assert_eq!(
            (recovered.total, recovered.x_cache.as_str()),
            (Some(3), "miss")
        );
        let stale_errors = "wnology_gateway_cache_stale_answers_total{reason=\"error\"}";
        assert_eq!(replicas.metric(1, stale_errors).await, 2);
        assert!(
            replicas
                .metric(1, "wnology_gateway_shared_cache_stale_total")
                .await
                >= 2,
            "{}",
            replicas.metrics(1).await
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stale_reads_on_two_replicas_make_one_background_refresh() {
    bounded(async {
        let (upstream, _front, replicas) = past_its_ttl(2, 3, "30s", "600s").await;
        // Slow, so that every read arrives while the refresh is in flight.
        let refresh_takes = Duration::from_millis(1500);
        upstream.answer(counts(2).after(refresh_takes));

        let (a, b) = (replicas.channel(0).await, replicas.channel(1).await);
        let reads: Vec<_> = (0..100)
            .map(|n| {
                let channel = if n % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { read(&channel).await })
            })
            .collect();
        for read in reads {
            let seen = read.await.unwrap().expect("answered");
            assert_eq!((seen.total, seen.x_cache.as_str()), (Some(1), "stale"));
        }
        assert!(upstream.count() <= 2, "answered before the refresh ended");
        let started = Instant::now();
        while upstream.count() < 2 {
            assert!(started.elapsed() < 10 * SECOND, "no refresh ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The refresh's answer, its fill, and the other replica's wake-up on it.
        tokio::time::sleep(refresh_takes + Duration::from_millis(800)).await;
        for (name, channel) in [("A", &a), ("B", &b)] {
            let next = read(channel).await.unwrap();
            assert_eq!(
                (next.total, next.x_cache.as_str()),
                (Some(2), "hit"),
                "replica {name}'s next read is fresh"
            );
        }
        assert_eq!(
            upstream.count(),
            2,
            "one upstream call refreshed both replicas"
        );
        let revalidated = "wnology_gateway_cache_stale_answers_total{reason=\"revalidate\"}";
        let answered =
            replicas.metric(0, revalidated).await + replicas.metric(1, revalidated).await;
        assert_eq!(answered, 100);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_keeps_every_replica_from_serving_it_stale() {
    bounded(async {
        let (upstream, _front, replicas) = deployment(3, &flags("1s", "30s", "600s")).await;
        let started = Instant::now();
        filled_by_first(&replicas).await;
        let b = replicas.channel(1).await;
        let shared = read(&b).await.unwrap();
        assert_eq!(
            shared.x_cache, "shared-hit",
            "B holds a copy of its own too"
        );

        upstream.answer(Answer::json(200, &json!({"id": id(1), "firstName": "A"})));
        let patch = proto::MePatchRequest {
            body: Some(proto::MePatch::default()),
            ..Default::default()
        };
        MeServiceClient::new(replicas.channel(0).await)
            .patch(authed(patch))
            .await
            .unwrap();
        upstream.answer(down(503));
        // The other replicas' copies go within 200 ms (the feed); Redis's at once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut phases = vec!["fresh but invalidated"];
        loop {
            for replica in 0..3 {
                let channel = replicas.channel(replica).await;
                let error = read(&channel).await.unwrap_err();
                assert_eq!(
                    error.code(),
                    Code::Unavailable,
                    "replica {replica}, {}: {error:?}",
                    phases.last().unwrap()
                );
            }
            if phases.len() == 2 {
                break;
            }
            let past_ttl = (started + SECOND + Duration::from_millis(500))
                .saturating_duration_since(Instant::now());
            tokio::time::sleep(past_ttl).await;
            phases.push("past its TTL");
        }
        for replica in 0..3 {
            let stale = replicas
                .metric(
                    replica,
                    "wnology_gateway_cache_stale_answers_total{reason=\"error\"}",
                )
                .await;
            assert_eq!(stale, 0, "replica {replica}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_during_an_outage_passes_through_on_every_replica() {
    bounded(async {
        let (upstream, _front, replicas) = past_its_ttl(2, 1, "0", "600s").await;
        for (status, code) in [(401, Code::Unauthenticated), (403, Code::PermissionDenied)] {
            upstream.answer(down(status));
            for replica in [1, 0] {
                let channel = replicas.channel(replica).await;
                let error = read(&channel).await.unwrap_err();
                assert_eq!(
                    error.code(),
                    code,
                    "replica {replica}: {status} is passed on"
                );
            }
        }
        upstream.answer(down(503));
        let stale = read(&replicas.channel(1).await).await.unwrap();
        assert_eq!(
            stale.x_cache, "stale",
            "the entry is still there for failures"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_windows_at_zero_nothing_is_served_stale_across_replicas() {
    bounded(async {
        let (upstream, _front, replicas) = past_its_ttl(2, 1, "0", "0").await;
        upstream.answer(down(503));
        for replica in [1, 0] {
            let error = read(&replicas.channel(replica).await).await.unwrap_err();
            assert_eq!(error.code(), Code::Unavailable, "replica {replica}");
        }
        let kept = replicas
            .metric(1, "wnology_gateway_shared_cache_stale_total")
            .await;
        assert_eq!(kept, 0, "Redis kept the entry no longer than its TTL");
    })
    .await;
}

/// The secret file of in-process replicas (removed by the test).
fn secret_file() -> std::path::PathBuf {
    let file = std::env::temp_dir().join(format!("wg-stale-span-{}.secret", std::process::id()));
    std::fs::write(&file, REPLICAS_SECRET).unwrap();
    file
}

/// Two in-process gateways on `redis`, traced by `telemetry`, their feeds live: usage reads
/// cached for 500 ms with a stale-if-error window; no retries, no breaker.
async fn traced_pair(
    upstream: &RecordingUpstream,
    redis: &RedisServer,
    secret_file: &std::path::Path,
    telemetry: &Telemetry,
) -> (TestGateway, TestGateway) {
    let mut settings = Settings::for_upstream(upstream.url());
    settings.cache_usage_ttl = Duration::from_millis(500);
    settings.cache_stale.cache_usage_stale_while_revalidate = Duration::ZERO;
    settings.cache_stale.cache_usage_stale_if_error = 600 * SECOND;
    settings.upstream_retries = 0;
    settings.upstream_breaker.upstream_breaker_failure_ratio = 0.0;
    settings.shared_cache.cache_redis_url = Some(RedisUrl::parse(&redis.url()).unwrap());
    settings.shared_cache.cache_secret_file = Some(secret_file.to_path_buf());
    settings.shared_cache.cache_redis_timeout = SECOND;
    let a = TestGateway::start_traced(settings.clone(), telemetry.tracing()).await;
    let b = TestGateway::start_traced(settings, telemetry.tracing()).await;
    for gateway in [&a, &b] {
        let tier = gateway.gateway.shared_tier().expect("the shared tier");
        let started = Instant::now();
        while !tier.is_trusted() {
            assert!(started.elapsed() < 30 * SECOND, "the feed became live");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (a, b)
}

/// Two in-process gateways on one Redis, traced: replica B's stale answer from the shared tier
/// records `wnology.cache.result=stale` on its server span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_span_records_a_stale_answer() {
    // It installs the process-wide subscriber: alone in a process of its own (and, from the
    // parent, one at a time with the tests above).
    let _serial = SERIAL.lock().await;
    if !in_own_process(module_path!(), "the_server_span_records_a_stale_answer") {
        return;
    }
    let (collector, received) = grpc_receiver().await;
    let env: HashMap<String, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let telemetry =
        Telemetry::init_with(LogOptions::new(LogFormat::Json), &env, std::io::sink).unwrap();
    let upstream = RecordingUpstream::start(counts(1)).await;
    let (redis, secret_file) = (RedisServer::start(), secret_file());
    let (a, b) = traced_pair(&upstream, &redis, &secret_file, &telemetry).await;
    assert_eq!(read(&a.channel().await).await.unwrap().x_cache, "miss");
    let started = Instant::now();
    while !a
        .gateway
        .metrics()
        .encode()
        .contains("shared_cache_writes_total 1\n")
    {
        assert!(started.elapsed() < 30 * SECOND, "the fill landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    upstream.answer(down(503));
    assert_eq!(read(&b.channel().await).await.unwrap().x_cache, "stale");
    telemetry.force_flush();

    let is_stale_read = |span: &&Span| {
        span.name == "wnology.v1.MeService/DeviceCounts"
            && attribute(&span.attributes, "wnology.cache.result").as_deref() == Some("stale")
    };
    let spans = received
        .wait_for(|spans| spans.iter().any(|s| is_stale_read(&s)))
        .await;
    let stale = spans
        .iter()
        .find(is_stale_read)
        .expect("the stale read's span");
    assert_eq!(
        attribute(&stale.attributes, "rpc.response.status_code").as_deref(),
        Some("OK")
    );
    a.stop().await;
    b.stop().await;
    telemetry.shutdown();
    let _ = std::fs::remove_file(&secret_file);
}

/// Allows (`allchannels`) or forbids (`resetchannels`) every pub/sub channel to the gateways'
/// Redis user: the invalidation feed goes down while reads and scripts keep working.
fn set_channels(replicas: &Replicas, rule: &str) {
    let reply = replicas
        .redis
        .command(&[b"ACL", b"SETUSER", b"default", rule.as_bytes()])
        .expect("redis answers");
    assert_eq!(reply, b"+OK\r\n", "ACL SETUSER default {rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_feed_is_down_a_stale_answer_from_redis_is_served_but_not_kept() {
    bounded(async {
        let (upstream, _front, replicas) = past_its_ttl(2, 1, "0", "600s").await;
        set_channels(&replicas, "resetchannels");
        replicas
            .wait_for_metric(1, "wnology_gateway_shared_cache_feed_trusted 0")
            .await;

        let b = replicas.channel(1).await;
        upstream.answer(down(503));
        let before = upstream.count();
        let stale_from_redis = "wnology_gateway_shared_cache_stale_total";
        for n in 1..=3 {
            let seen = read(&b).await.expect("a stale answer, not the 503");
            assert_eq!((seen.total, seen.x_cache.as_str()), (Some(1), "stale"));
            // Not kept here: another replica's write might go unseen while the feed is
            // down, so every read asks the upstream, then Redis (whose generations decide).
            assert_eq!(upstream.count(), before + n, "read {n} asked the upstream");
            assert_eq!(replicas.metric(1, stale_from_redis).await, n as u64);
        }

        set_channels(&replicas, "allchannels");
        replicas
            .wait_for_metric(1, "wnology_gateway_shared_cache_feed_trusted 1")
            .await;
        upstream.answer(counts(4));
        let recovered = read(&b).await.unwrap();
        assert_eq!(
            (recovered.total, recovered.x_cache.as_str()),
            (Some(4), "miss")
        );
        let next = read(&b).await.unwrap();
        assert_eq!((next.total, next.x_cache.as_str()), (Some(4), "hit"));
    })
    .await;
}
