//! The shared cache tier in the request path: three real gateway processes (replicas A, B, C)
//! against one recording upstream and one `redis-server`, all on loopback. Each test starts
//! its own processes and stops them by their PIDs (the handles' `Drop`); the tests run one at
//! a time (they share two cores) and each is bounded in time.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::support::{binary::GatewayBinary, *};
use tonic::transport::Channel;
use wnology_gateway::proto::{self, org_service_client::OrgServiceClient};
use wnology_testkit::Recorded;
use wnology_testkit::redis::{RedisServer, bulk_strings};

/// How long after a write returned every replica must serve what it wrote (the bound).
const PROPAGATION: Duration = Duration::from_millis(200);
/// Each test's bound.
const TEST_BOUND: Duration = Duration::from_secs(180);

/// The tests share two cores and several processes each: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The upstream's organizations: a version per organization, bumped by each `PATCH`; a read's
/// answer names its caller's token, the organization and the version it read.
#[derive(Default)]
struct Orgs {
    versions: Mutex<HashMap<String, u64>>,
    read_delay_ms: AtomicU64,
}

impl Orgs {
    fn answer(&self, request: &Recorded) -> Answer {
        let path = request.path_and_query.split('?').next().unwrap_or_default();
        let Some(org) = path.strip_prefix("/orgs/").filter(|o| !o.contains('/')) else {
            return Answer::json(404, &serde_json::json!({"type": "NotFound"}));
        };
        let token = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("-")
            .to_string();
        let mut versions = self.versions.lock().unwrap();
        let version = versions.entry(org.to_string()).or_insert(0);
        let delay = match request.method.as_str() {
            "PATCH" => {
                *version += 1;
                Duration::ZERO
            }
            _ => Duration::from_millis(self.read_delay_ms.load(Ordering::Relaxed)),
        };
        let name = format!("{token}|{org}|v{version}");
        Answer::json(200, &serde_json::json!({"id": org, "name": name})).after(delay)
    }
}

/// The upstream and three replicas on one Redis ([`crate::support::Replicas`]), with a client of each.
struct Deployment {
    replicas: crate::support::Replicas,
    upstream: RecordingUpstream,
    orgs: Arc<Orgs>,
    clients: Vec<OrgServiceClient<Channel>>,
}

impl Deployment {
    async fn start(extra: &[&str]) -> Deployment {
        let orgs = Arc::new(Orgs::default());
        let answering = Arc::clone(&orgs);
        let upstream =
            RecordingUpstream::start_with(move |request| answering.answer(request)).await;
        let replicas = crate::support::Replicas::start(3, &upstream.url(), extra).await;
        let mut clients = Vec::new();
        for replica in 0..3 {
            clients.push(OrgServiceClient::new(replicas.channel(replica).await));
        }
        Deployment {
            replicas,
            upstream,
            orgs,
            clients,
        }
    }

    fn client(&self, replica: usize) -> OrgServiceClient<Channel> {
        self.clients[replica % 3].clone()
    }

    fn upstream_reads(&self) -> usize {
        self.upstream
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count()
    }
}

/// A read's answer (the organization's name) and its `x-cache`.
async fn read(
    client: &mut OrgServiceClient<Channel>,
    token: &str,
    org: u32,
) -> Result<(String, String), tonic::Status> {
    let request = proto::OrgGetRequest {
        org_id: id(org),
        ..Default::default()
    };
    let response = client.get(with_token(request, token)).await?;
    let cache = response
        .metadata()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    Ok((response.into_inner().name.unwrap_or_default(), cache))
}

/// A write of `org`; the version it made.
async fn write(client: &mut OrgServiceClient<Channel>, token: &str, org: u32) -> u64 {
    let request = proto::OrgPatchRequest {
        org_id: id(org),
        body: Some(proto::OrgPatch {
            name: Some("renamed".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = client.patch(with_token(request, token)).await.unwrap();
    version(&answer.into_inner().name.unwrap_or_default())
}

/// The version an answer's name carries (`token|org|v3` → 3).
fn version(name: &str) -> u64 {
    name.rsplit_once("|v")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in {name:?}"))
}

/// A small deterministic generator (the test's choices are reproducible).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

async fn bounded(test: impl Future<Output = ()>) {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_BOUND, test)
        .await
        .expect("the test ends within its bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_one_replica_is_a_shared_hit_on_the_others() {
    bounded(async {
        let d = Deployment::start(&[]).await;
        let (name, cache) = read(&mut d.client(0), "token-a", 1).await.unwrap();
        assert_eq!(cache, "miss");
        // The fill is written to Redis after the reply, by design.
        d.replicas
            .wait_for_metric(0, "wnology_gateway_shared_cache_writes_total 1")
            .await;
        for replica in [1, 2] {
            let (other, cache) = read(&mut d.client(replica), "token-a", 1).await.unwrap();
            assert_eq!(cache, "shared-hit", "replica {replica}");
            assert_eq!(other, name);
        }
        let (_, cache) = read(&mut d.client(1), "token-a", 1).await.unwrap();
        assert_eq!(cache, "hit", "a shared hit fills the replica's own cache");
        assert_eq!(d.upstream_reads(), 1);
        let metrics = d.replicas.metrics(1).await;
        assert!(
            metrics.contains("wnology_gateway_shared_cache_hits_total 1\n"),
            "shared-tier metrics are exported: {metrics}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_cold_reads_on_three_replicas_make_one_upstream_call() {
    bounded(async {
        let d = Deployment::start(&[]).await;
        // The upstream is slow, so that every read arrives while the first is in flight.
        d.orgs.read_delay_ms.store(300, Ordering::Relaxed);
        let calls: Vec<_> = (0..600)
            .map(|n| {
                let mut client = d.client(n);
                tokio::spawn(async move { read(&mut client, "token-a", 7).await })
            })
            .collect();
        let mut outcomes: HashMap<String, usize> = HashMap::new();
        for call in calls {
            let (name, cache) = call.await.unwrap().expect("every read is answered");
            assert_eq!(name, format!("token-a|{}|v0", id(7)));
            *outcomes.entry(cache).or_default() += 1;
        }
        eprintln!(
            "600 cold reads: {outcomes:?}, upstream reads {}",
            d.upstream_reads()
        );
        assert_eq!(d.upstream_reads(), 1, "outcomes: {outcomes:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_tokens_shuffled_over_three_replicas_only_ever_get_their_own_answers() {
    bounded(async {
        let d = Deployment::start(&[]).await;
        let tokens: Vec<String> = (0..40)
            .map(|t| format!("tok-{t:02}-{SECRET_FREE}"))
            .collect();
        let mut calls: Vec<(usize, usize)> =
            (0..40).flat_map(|t| (0..25).map(move |n| (t, n))).collect();
        let mut rng = Lcg(15);
        for i in (1..calls.len()).rev() {
            calls.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(64));
        let leaks = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (i, (t, _)) in calls.into_iter().enumerate() {
            let (mut client, token) = (d.client(i), tokens[t].clone());
            let (limit, leaks) = (Arc::clone(&limit), Arc::clone(&leaks));
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await.unwrap();
                let (name, _) = read(&mut client, &token, 3).await.expect("answered");
                if !name.starts_with(&format!("{token}|")) {
                    leaks.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        eprintln!(
            "40 tokens x 25 calls: {leaks:?} leaks, {} upstream reads",
            d.upstream_reads()
        );
        assert_eq!(
            leaks.load(Ordering::Relaxed),
            0,
            "answers served to another token"
        );
        assert!(d.upstream_reads() <= 40 * 3, "the cache served most calls");
        assert_redis_holds_nothing_in_clear(&d.replicas.redis, &tokens);
    })
    .await;
}

/// Marks the test tokens (so that a token found in Redis is recognised).
const SECRET_FREE: &str = "c7e1d2";

/// No key and no value in Redis holds a token, the secret or an answer in clear.
fn assert_redis_holds_nothing_in_clear(redis: &RedisServer, tokens: &[String]) {
    let keys = bulk_strings(&redis.command(&[b"KEYS", b"*"]).expect("KEYS answers"));
    assert!(!keys.is_empty(), "the session left entries in Redis");
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for key in &keys {
        let value = redis.command(&[b"GET", key]).unwrap_or_default();
        for part in [key.as_slice(), value.as_slice()] {
            for needle in [
                REPLICAS_SECRET.as_bytes(),
                SECRET_FREE.as_bytes(),
                b"tok-",
                id(3).as_bytes(),
            ] {
                assert!(!contains(part, needle), "Redis holds {needle:?} in clear");
            }
        }
    }
    assert!(tokens.iter().all(|t| t.contains(SECRET_FREE)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_reaches_the_others_within_200ms() {
    bounded(async {
        let d = Deployment::start(&[]).await;
        for replica in 0..3 {
            read(&mut d.client(replica), "token-a", 2).await.unwrap();
            let (_, cache) = read(&mut d.client(replica), "token-a", 2).await.unwrap();
            assert_eq!(cache, "hit", "replica {replica} holds its own copy");
        }
        let written = write(&mut d.client(0), "token-b", 2).await;
        tokio::time::sleep(PROPAGATION).await;
        for replica in [1, 2] {
            let (name, cache) = read(&mut d.client(replica), "token-a", 2).await.unwrap();
            assert_eq!(version(&name), written, "replica {replica} ({cache})");
        }
    })
    .await;
}

/// What a randomized mix of reads and writes saw.
#[derive(Default)]
struct Mix {
    /// (org, when the write returned, the version it made).
    writes: Vec<(u32, Instant, u64)>,
    /// (org, when the read began, the version it served).
    reads: Vec<(u32, Instant, u64)>,
}

impl Mix {
    /// Reads begun 200 ms or more after a write of their organization returned that served
    /// an older version.
    fn stale_reads(&self) -> usize {
        self.reads
            .iter()
            .filter(|(org, began, seen)| {
                self.writes.iter().any(|(written_org, returned, version)| {
                    written_org == org && *began >= *returned + PROPAGATION && seen < version
                })
            })
            .count()
    }
}

/// 8 workers × 60 operations (about one in six a write) over 4 tokens × 4 organizations × 3
/// replicas; returns how many reads were stale.
async fn randomized_mix(d: &Deployment) -> (usize, usize) {
    let mix = Arc::new(Mutex::new(Mix::default()));
    let workers: Vec<_> = (0..8u64)
        .map(|worker| {
            let clients: Vec<_> = (0..3).map(|r| d.client(r)).collect();
            let mix = Arc::clone(&mix);
            tokio::spawn(async move {
                let mut rng = Lcg(worker * 7919 + 1);
                for _ in 0..60 {
                    let mut client = clients[rng.below(3) as usize].clone();
                    let token = format!("token-{}", rng.below(4));
                    let org = 20 + rng.below(4) as u32;
                    if rng.below(6) == 0 {
                        let version = write(&mut client, &token, org).await;
                        let returned = Instant::now();
                        mix.lock().unwrap().writes.push((org, returned, version));
                    } else {
                        let began = Instant::now();
                        let (name, _) = read(&mut client, &token, org).await.expect("answered");
                        mix.lock().unwrap().reads.push((org, began, version(&name)));
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let mix = mix.lock().unwrap();
    (mix.stale_reads(), mix.reads.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_reads_and_writes_never_serve_pre_write_data_after_200ms() {
    bounded(async {
        let d = Deployment::start(&[]).await;
        let (stale, reads) = randomized_mix(&d).await;
        eprintln!("with invalidation: {stale} stale reads among {reads}");
        assert_eq!(stale, 0, "stale reads among {reads}");
    })
    .await;
}

/// The check above can fail: without cross-replica invalidation the same mix serves stale data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cross_replica_invalidation_the_mix_serves_stale_data() {
    bounded(async {
        let d = Deployment::start(&["--cache-test-no-shared-invalidation"]).await;
        let (stale, reads) = randomized_mix(&d).await;
        eprintln!("without invalidation: {stale} stale reads among {reads}");
        assert!(
            stale > 0,
            "no stale read among {reads} without invalidation"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_under_load_fails_no_call_and_is_used_again_after_restart() {
    bounded(async {
        let mut d = Deployment::start(&[]).await;
        let failures = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load: Vec<_> = (0..6u64)
            .map(|worker| {
                let mut client = d.client(worker as usize);
                let (failures, done) = (Arc::clone(&failures), Arc::clone(&done));
                tokio::spawn(async move {
                    let mut rng = Lcg(worker + 99);
                    let mut calls = 0;
                    while !done.load(Ordering::Relaxed) {
                        let token = format!("token-{}", rng.below(4));
                        let org = 40 + rng.below(8) as u32;
                        let result = if rng.below(10) == 0 {
                            let request = proto::OrgPatchRequest {
                                org_id: id(org),
                                body: Some(proto::OrgPatch::default()),
                                ..Default::default()
                            };
                            client.patch(with_token(request, &token)).await.map(|_| ())
                        } else {
                            read(&mut client, &token, org).await.map(|_| ())
                        };
                        if let Err(status) = result {
                            eprintln!("failed call: {status:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        calls += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    calls
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        d.replicas.redis.stop();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            health_serving(&d.replicas.binaries[0]).await,
            "health stays SERVING with Redis down"
        );
        d.replicas.redis.restart();
        tokio::time::sleep(Duration::from_secs(1)).await;
        done.store(true, Ordering::Relaxed);
        let mut calls = 0;
        for worker in load {
            calls += worker.await.unwrap();
        }
        eprintln!("Redis outage: {calls} calls, {failures:?} failed");
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "failed among {calls} calls"
        );
        assert!(calls > 20, "the load ran ({calls} calls)");
        // After the restart (and the breaker's cool-down) replicas share answers again.
        let started = Instant::now();
        let mut org = 100;
        loop {
            read(&mut d.client(0), "token-z", org).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (_, cache) = read(&mut d.client(1), "token-z", org).await.unwrap();
            if cache == "shared-hit" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the shared tier is not used again after Redis restarted"
            );
            org += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for replica in &d.replicas.binaries {
            assert!(health_serving(replica).await, "health stays SERVING");
        }
    })
    .await;
}

async fn health_serving(binary: &GatewayBinary) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(binary.addr).await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == 1)
}

/// `no-cache` on one replica refreshes the shared tier: after the upstream changed without a
/// write through the gateway, the other replicas' next reads serve the refreshed answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_on_one_replica_refreshes_the_shared_tier() {
    bounded(async {
        let d = Deployment::start(&[]).await;
        let (name, _) = read(&mut d.client(0), "token-a", 3).await.unwrap();
        assert_eq!(version(&name), 0);
        d.replicas
            .wait_for_metric(0, "wnology_gateway_shared_cache_writes_total 1")
            .await;
        // The organization changes upstream, not through the gateway (no invalidation).
        d.orgs.versions.lock().unwrap().insert(id(3), 5);
        let request = proto::OrgGetRequest {
            org_id: id(3),
            ..Default::default()
        };
        let mut fresh = with_token(request, "token-a");
        fresh
            .metadata_mut()
            .insert("cache-control", "no-cache".parse().unwrap());
        let answer = d.client(1).get(fresh).await.unwrap();
        assert_eq!(answer.metadata().get("x-cache").unwrap(), "bypass");
        assert_eq!(version(&answer.into_inner().name.unwrap_or_default()), 5);
        d.replicas
            .wait_for_metric(1, "wnology_gateway_shared_cache_writes_total 1")
            .await;
        let (name, cache) = read(&mut d.client(2), "token-a", 3).await.unwrap();
        assert_eq!((version(&name), cache.as_str()), (5, "shared-hit"));
        assert_eq!(d.upstream_reads(), 2);
    })
    .await;
}
