//! The shared cache tier (src/cache/shared) against real `redis-server` processes on loopback:
//! several `SharedTier` instances stand for several replicas.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use wnology_gateway::cache::{
    CacheKey, Scope, Scopes, TokenId,
    shared::{
        Coalesced, Lifetime, SharedLookup, SharedTier, SharedTierMetrics,
        key::Namer,
        settings::{CacheSecret, RedisUrl, SharedTierConfig},
    },
};
use wnology_testkit::redis::{RedisCluster, RedisServer, bulk_strings};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-shared-test-secret";
const TOKEN_A: &[u8] = b"Bearer token-aaaaaaaaaaaaaaaa";
const TOKEN_B: &[u8] = b"Bearer token-bbbbbbbbbbbbbbbb";
const ORG: [u8; 24] = *b"5f00aa00bb00cc00dd00ee00";
const TTL: Duration = Duration::from_secs(30);

fn config(url: &str, cluster: bool, timeout: Duration) -> SharedTierConfig {
    SharedTierConfig {
        url: RedisUrl::parse(url).unwrap(),
        cluster,
        secret: CacheSecret::new(SECRET.to_vec()).unwrap(),
        timeout,
    }
}

type Received = Arc<Mutex<Vec<(Instant, Vec<Scope>)>>>;

/// One "replica": a tier and what its invalidation handler received.
async fn replica(url: &str, cluster: bool) -> (SharedTier, Received) {
    // Generous: these tests share two loaded cores; the time bound has its own test below.
    replica_with(config(url, cluster, Duration::from_millis(500))).await
}

async fn replica_with(config: SharedTierConfig) -> (SharedTier, Received) {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    let tier = SharedTier::connect(
        &config,
        SharedTierMetrics::default(),
        move |scopes: &[Scope]| {
            sink.lock().unwrap().push((Instant::now(), scopes.to_vec()));
        },
    )
    .unwrap();
    assert!(
        tier.connected(Duration::from_secs(10)).await,
        "connected to Redis"
    );
    (tier, received)
}

fn key(token: TokenId, request: &[u8]) -> CacheKey {
    CacheKey {
        route: "devices.get",
        token,
        request: request.into(),
    }
}

fn org_tags() -> Scopes {
    Scopes {
        org: Some(ORG),
        ..Scopes::default()
    }
}

async fn until<F: FnMut() -> bool>(within: Duration, mut ready: F) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if ready() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ready()
}

async fn until_trusted(tier: &SharedTier) {
    assert!(
        until(Duration::from_secs(10), || tier.is_trusted()).await,
        "the feed became live"
    );
}

/// Stores `answer` for (token, request) through `tier` and waits until it is readable.
async fn store(tier: &SharedTier, token: &[u8], request: &[u8], answer: &'static [u8]) {
    let caller = tier.caller(token);
    let key = key(caller.token_id(), request);
    let SharedLookup::Miss(ticket) = tier.get(&caller, &key, &org_tags()).await else {
        panic!("a cold read misses");
    };
    tier.put(&caller, ticket, Bytes::from_static(answer), 200, TTL);
    let started = Instant::now();
    while !matches!(
        tier.get(&caller, &key, &org_tags()).await,
        SharedLookup::Hit(_)
    ) {
        assert!(started.elapsed() < Duration::from_secs(5), "the put landed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn lookup(tier: &SharedTier, token: &[u8], request: &[u8]) -> SharedLookup {
    let caller = tier.caller(token);
    tier.get(&caller, &key(caller.token_id(), request), &org_tags())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_between_replicas_for_the_token_that_fetched_only() {
    let server = RedisServer::start();
    let (a, _) = replica(&server.url(), false).await;
    let (b, _) = replica(&server.url(), false).await;
    store(&a, TOKEN_A, b"request-1", b"answer-1").await;
    let SharedLookup::Hit(hit) = lookup(&b, TOKEN_A, b"request-1").await else {
        panic!("replica B reads what A stored");
    };
    assert_eq!(hit.answer, Bytes::from_static(b"answer-1"));
    assert_eq!(hit.upstream_status, 200);
    assert!(hit.remaining <= TTL && hit.remaining > TTL - Duration::from_secs(5));
    assert!(
        matches!(
            lookup(&b, TOKEN_B, b"request-1").await,
            SharedLookup::Miss(_)
        ),
        "another token misses"
    );
    assert_eq!(
        a.token_id(TOKEN_A),
        b.token_id(TOKEN_A),
        "replicas name tokens alike"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_nothing_in_clear_and_moved_or_other_version_values_miss() {
    let server = RedisServer::start();
    let (a, _) = replica(&server.url(), false).await;
    store(
        &a,
        TOKEN_A,
        b"request-secret-input",
        b"answer-text-of-token-a",
    )
    .await;
    store(
        &a,
        TOKEN_B,
        b"request-secret-input",
        b"answer-text-of-token-b",
    )
    .await;
    a.invalidate(&[Scope::TokenMe(a.token_id(TOKEN_A))]).await;

    let keys = bulk_strings(&server.command(&[b"KEYS", b"*"]).unwrap());
    assert!(keys.len() >= 4, "{} keys", keys.len());
    let mut everything = Vec::new();
    for name in &keys {
        everything.extend_from_slice(name);
        let kind = server.command(&[b"TYPE", name]).unwrap();
        let reply = if kind.starts_with(b"+hash") {
            server.command(&[b"HGETALL", name]).unwrap()
        } else {
            server.command(&[b"GET", name]).unwrap()
        };
        everything.extend_from_slice(&reply);
        let ttl = server.command(&[b"PTTL", name]).unwrap();
        assert!(
            !ttl.starts_with(b":-"),
            "every key has a TTL: {}",
            String::from_utf8_lossy(name)
        );
    }
    let forbidden: [&[u8]; 6] = [
        TOKEN_A,
        b"token-aaaa",
        SECRET,
        b"request-secret-input",
        b"answer-text",
        &ORG,
    ];
    for clear in forbidden {
        let n = clear.len().min(10);
        for window in clear.windows(n) {
            assert!(
                !everything.windows(n).any(|w| w == window),
                "found part of {:?} in Redis",
                String::from_utf8_lossy(clear)
            );
        }
    }

    // Move A's sealed value under B's key (B's stamp stays valid): it does not open.
    let namer = Namer::new(&CacheSecret::new(SECRET.to_vec()).unwrap());
    let name = |token: &[u8]| {
        let id = namer.token_id(token);
        namer
            .entry(
                &namer.place(id),
                &key(id, b"request-secret-input"),
                &org_tags(),
            )
            .value
    };
    let (name_a, name_b) = (name(TOKEN_A), name(TOKEN_B));
    let sealed_a =
        bulk_strings(&server.command(&[b"HGET", name_a.as_bytes(), b"v"]).unwrap()).remove(0);
    server
        .command(&[b"HSET", name_b.as_bytes(), b"v", &sealed_a])
        .unwrap();
    assert!(matches!(
        lookup(&a, TOKEN_B, b"request-secret-input").await,
        SharedLookup::Miss(_)
    ));
    // Another format version is a miss.
    let mut other_version = sealed_a.clone();
    other_version[0] = other_version[0].wrapping_add(1);
    server
        .command(&[b"HSET", name_a.as_bytes(), b"v", &other_version])
        .unwrap();
    assert!(matches!(
        lookup(&a, TOKEN_A, b"request-secret-input").await,
        SharedLookup::Miss(_)
    ));
    let errors = a.metrics().errors.clone();
    let unopenable = errors
        .get_or_create(&wnology_gateway::cache::shared::metrics::ErrorLabels { kind: "unopenable" })
        .get();
    assert_eq!(unopenable, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_token_makes_stale_what_every_token_cached_in_the_same_round_trip() {
    let server = RedisServer::start();
    let (a, _) = replica(&server.url(), false).await;
    let (b, _) = replica(&server.url(), false).await;
    store(&a, TOKEN_A, b"org-read", b"pre-write").await;
    // A fill whose miss came before the write stores nothing.
    let caller = a.caller(TOKEN_A);
    let other = key(caller.token_id(), b"org-read-2");
    let SharedLookup::Miss(old_ticket) = a.get(&caller, &other, &org_tags()).await else {
        panic!("cold");
    };
    assert!(b.invalidate(&[Scope::Org(ORG)]).await, "recorded");
    assert!(
        matches!(
            lookup(&a, TOKEN_A, b"org-read").await,
            SharedLookup::Miss(_)
        ),
        "no pre-write answer"
    );
    a.put(
        &caller,
        old_ticket,
        Bytes::from_static(b"raced-the-write"),
        200,
        TTL,
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(
            a.get(&caller, &other, &org_tags()).await,
            SharedLookup::Miss(_)
        ),
        "a racing fill is dropped"
    );
    // Token scopes only reach their token.
    store(&a, TOKEN_A, b"org-read", b"post-write").await;
    store(&a, TOKEN_B, b"org-read", b"post-write").await;
    b.invalidate(&[Scope::TokenAll(b.token_id(TOKEN_B))]).await;
    assert!(matches!(
        lookup(&a, TOKEN_A, b"org-read").await,
        SharedLookup::Hit(_)
    ));
    assert!(matches!(
        lookup(&a, TOKEN_B, b"org-read").await,
        SharedLookup::Miss(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_reach_other_replicas_within_200_ms_and_feed_loss_is_reported() {
    let mut server = RedisServer::start();
    let (a, received_a) = replica(&server.url(), false).await;
    let (b, received_b) = replica(&server.url(), false).await;
    until_trusted(&a).await;
    until_trusted(&b).await;
    received_b.lock().unwrap().clear();
    received_a.lock().unwrap().clear();
    let scopes = [Scope::Org(ORG), Scope::TokenMe(a.token_id(TOKEN_A))];
    for _ in 0..5 {
        let returned = {
            assert!(a.invalidate(&scopes).await);
            Instant::now()
        };
        let got = until(Duration::from_millis(200), || {
            !received_b.lock().unwrap().is_empty()
        })
        .await;
        assert!(got, "B received A's invalidation within 200 ms");
        let (at, scopes_b) = received_b.lock().unwrap().remove(0);
        assert!(at.duration_since(returned) <= Duration::from_millis(200));
        assert_eq!(scopes_b, scopes);
    }
    assert!(
        received_a.lock().unwrap().is_empty(),
        "a replica does not get its own invalidations back"
    );

    server.stop();
    let lost = Instant::now();
    assert!(
        until(Duration::from_secs(2), || !b.is_trusted()).await,
        "feed loss is noticed"
    );
    assert!(
        lost.elapsed() < Duration::from_secs(1),
        "within 1 s: {:?}",
        lost.elapsed()
    );
    assert_eq!(b.local_ttl_cap(), Some(Duration::from_secs(1)));
    let dropped = until(Duration::from_secs(1), || {
        received_b
            .lock()
            .unwrap()
            .iter()
            .any(|(_, s)| s == &[Scope::Everything])
    });
    assert!(
        dropped.await,
        "local copies are dropped when the feed is lost"
    );
    server.restart();
    assert!(
        until(Duration::from_secs(15), || b.is_trusted()).await,
        "the feed comes back by itself"
    );
    assert_eq!(b.local_ttl_cap(), None);
    // And carries invalidations again.
    received_b.lock().unwrap().clear();
    let mut delivered = false;
    for _ in 0..50 {
        if a.invalidate(&scopes).await
            && until(Duration::from_millis(200), || {
                received_b.lock().unwrap().iter().any(|(_, s)| s == &scopes)
            })
            .await
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "invalidations flow after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_reads_on_three_replicas_make_one_leader_fill() {
    let server = RedisServer::start();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        // 600 operations in one burst on a debug build: a bound that measures the tier, not
        // the machine (the gateway's local coalescing sends one waiter per replica).
        replicas.push(
            replica_with(config(&server.url(), false, Duration::from_secs(3)))
                .await
                .0,
        );
    }
    for tier in &replicas {
        until_trusted(tier).await;
    }
    let leaders = Arc::new(AtomicUsize::new(0));
    let filled = Arc::new(AtomicUsize::new(0));
    let alone = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..600 {
        let tier = replicas[i % 3].clone();
        let (leaders, filled, alone) = (
            Arc::clone(&leaders),
            Arc::clone(&filled),
            Arc::clone(&alone),
        );
        tasks.push(tokio::spawn(async move {
            let caller = tier.caller(TOKEN_A);
            let key = key(caller.token_id(), b"cold");
            let ticket = match tier.get(&caller, &key, &org_tags()).await {
                // Nothing is stale: the answer's TTL is longer than the test.
                SharedLookup::Miss(ticket) | SharedLookup::Stale(_, ticket) => ticket,
                SharedLookup::Hit(_) => return filled.fetch_add(1, Ordering::SeqCst),
                SharedLookup::Skipped => return alone.fetch_add(1, Ordering::SeqCst),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            match tier
                .lead_or_wait(&caller, ticket, Duration::from_secs(5), deadline)
                .await
            {
                Coalesced::Lead(lease) => {
                    // The "upstream call".
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    lease.fill(Bytes::from_static(b"the-one-answer"), 200, TTL);
                    leaders.fetch_add(1, Ordering::SeqCst)
                }
                Coalesced::Filled(hit) => {
                    assert_eq!(hit.answer, Bytes::from_static(b"the-one-answer"));
                    filled.fetch_add(1, Ordering::SeqCst)
                }
                Coalesced::Alone(_) => alone.fetch_add(1, Ordering::SeqCst),
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        leaders.load(Ordering::SeqCst),
        1,
        "exactly one upstream call"
    );
    assert_eq!(alone.load(Ordering::SeqCst), 0);
    assert_eq!(filled.load(Ordering::SeqCst), 599);
    let coalesced: u64 = replicas.iter().map(|t| t.metrics().coalesced.get()).sum();
    assert!(coalesced > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_leader_lets_waiters_fall_back_and_a_vanished_one_hands_over() {
    let server = RedisServer::start();
    let (a, _) = replica(&server.url(), false).await;
    let (b, _) = replica(&server.url(), false).await;
    until_trusted(&a).await;
    until_trusted(&b).await;
    let start = |tier: &SharedTier, request: &'static [u8], lease: Duration| {
        let tier = tier.clone();
        async move {
            let caller = tier.caller(TOKEN_A);
            let key = key(caller.token_id(), request);
            let SharedLookup::Miss(ticket) = tier.get(&caller, &key, &org_tags()).await else {
                panic!("cold");
            };
            tier.lead_or_wait(
                &caller,
                ticket,
                lease,
                Instant::now() + Duration::from_secs(5),
            )
            .await
        }
    };
    // Failure: the leader abandons; the waiter falls back at once (not after the lease).
    let Coalesced::Lead(lease) = start(&a, b"fails", Duration::from_secs(4)).await else {
        panic!("first leads");
    };
    let waiter = tokio::spawn(start(&b, b"fails", Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let abandoned = Instant::now();
    lease.abandon();
    assert!(matches!(waiter.await.unwrap(), Coalesced::Alone(_)));
    assert!(
        abandoned.elapsed() < Duration::from_secs(2),
        "fell back without waiting out the lease"
    );

    // A vanished leader (never fills, never releases): its lease expires and a waiter leads.
    let Coalesced::Lead(lease) = start(&a, b"vanishes", Duration::from_millis(400)).await else {
        panic!("first leads");
    };
    // Leaks the lease on purpose: a leader that vanishes without releasing is what is tested.
    #[allow(clippy::mem_forget)]
    std::mem::forget(lease);
    let taken = Instant::now();
    assert!(matches!(
        start(&b, b"vanishes", Duration::from_secs(4)).await,
        Coalesced::Lead(_)
    ));
    assert!(
        taken.elapsed() >= Duration::from_millis(200),
        "waited for the lease first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_skips_within_the_timeout_opens_the_breaker_and_recovers() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let (a, _) = replica_with(config(&server.url(), false, timeout)).await;
    store(&a, TOKEN_A, b"request", b"answer").await;
    server.stop();
    for round in 0..20 {
        let started = Instant::now();
        let lookup = lookup(&a, TOKEN_A, b"request").await;
        assert!(
            matches!(lookup, SharedLookup::Skipped),
            "round {round}: {lookup:?}"
        );
        // The bound plus scheduling slack on a loaded machine.
        assert!(
            started.elapsed() < timeout + Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        let invalidated = Instant::now();
        assert!(!a.invalidate(&[Scope::Org(ORG)]).await);
        assert!(invalidated.elapsed() < timeout * 2 + Duration::from_millis(250));
    }
    assert!(a.is_skipping(), "the breaker opened");
    assert!(a.metrics().skipped.get() > 0);
    server.restart();
    let caller = a.caller(TOKEN_A);
    let key = key(caller.token_id(), b"request");
    let mut back = false;
    for _ in 0..200 {
        if matches!(
            a.get(&caller, &key, &org_tags()).await,
            SharedLookup::Miss(_)
        ) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the tier is used again after the restart");
    assert!(!a.is_skipping());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_invalidates_and_feeds() {
    let cluster = RedisCluster::start();
    let (a, _) = replica(&cluster.url(), true).await;
    let (b, received_b) = replica(&cluster.url(), true).await;
    until_trusted(&a).await;
    until_trusted(&b).await;
    // Tokens spread over the shards, so over the three masters.
    let tokens: Vec<Vec<u8>> = (0..12)
        .map(|i| format!("Bearer cluster-token-{i}").into_bytes())
        .collect();
    for token in &tokens {
        store(&a, token, b"cluster-read", b"cluster-answer").await;
        assert!(matches!(
            lookup(&b, token, b"cluster-read").await,
            SharedLookup::Hit(_)
        ));
    }
    let mut masters_used = 0;
    for node in &cluster.nodes {
        let size = node.command(&[b"DBSIZE"]).unwrap();
        if size != b":0\r\n" {
            masters_used += 1;
        }
    }
    assert!(masters_used >= 2, "keys spread over the masters");
    received_b.lock().unwrap().clear();
    assert!(a.invalidate(&[Scope::Org(ORG)]).await);
    for token in &tokens {
        assert!(matches!(
            lookup(&b, token, b"cluster-read").await,
            SharedLookup::Miss(_)
        ));
    }
    assert!(
        until(Duration::from_millis(500), || !received_b
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
}

/// An answer stored with a stale window is kept past its TTL and read as stale, under the same
/// generation check as a fresh one; the lease script treats it as nothing fresh, so one replica
/// refreshes it and another waits for that fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_kept_past_its_ttl_reads_stale_is_refreshed_once_and_a_write_hides_it() {
    let server = RedisServer::start();
    let (a, _) = replica(&server.url(), false).await;
    let (b, _) = replica(&server.url(), false).await;
    let (caller_a, caller_b) = (a.caller(TOKEN_A), b.caller(TOKEN_A));
    let key = key(caller_a.token_id(), b"kept");
    let lifetime = Lifetime {
        ttl: Duration::from_millis(300),
        stale_for: Duration::from_secs(60),
    };
    let SharedLookup::Miss(ticket) = a.get(&caller_a, &key, &org_tags()).await else {
        panic!("a cold read misses");
    };
    a.put(&caller_a, ticket, Bytes::from_static(b"old"), 200, lifetime);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let SharedLookup::Stale(stale, ticket) = b.get(&caller_b, &key, &org_tags()).await else {
        panic!("kept past its TTL: stale");
    };
    assert_eq!(stale.answer, Bytes::from_static(b"old"));
    assert!(stale.past >= Duration::from_millis(150) && stale.age >= stale.past + lifetime.ttl);
    let names = bulk_strings(&server.command(&[b"KEYS", b"*:v:*"]).unwrap());
    assert_eq!(names.len(), 1, "one value: {names:?}");
    let pttl = String::from_utf8(server.command(&[b"PTTL", &names[0]]).unwrap()).unwrap();
    let pttl: i64 = pttl.trim_start_matches(':').trim().parse().unwrap();
    assert!(
        pttl > 50_000,
        "Redis keeps it for its stale window: {pttl} ms"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let lease_for = Duration::from_secs(5);
    let Coalesced::Lead(lease) = b.lead_or_wait(&caller_b, ticket, lease_for, deadline).await
    else {
        panic!("a stale value is nothing fresh: B leads its refresh");
    };
    let waiter = {
        let (a, caller_a, key) = (a.clone(), caller_a.clone(), key.clone());
        tokio::spawn(async move {
            let SharedLookup::Stale(_, ticket) = a.get(&caller_a, &key, &org_tags()).await else {
                panic!("still stale while B refreshes");
            };
            a.lead_or_wait(&caller_a, ticket, lease_for, deadline).await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    lease.fill(Bytes::from_static(b"new"), 200, lifetime);
    let Coalesced::Filled(hit) = waiter.await.unwrap() else {
        panic!("A waits for B's refresh");
    };
    assert_eq!(hit.answer, Bytes::from_static(b"new"));

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(matches!(
        a.get(&caller_a, &key, &org_tags()).await,
        SharedLookup::Stale(..)
    ));
    assert!(b.invalidate(&[Scope::Org(ORG)]).await, "recorded");
    assert!(
        matches!(
            a.get(&caller_a, &key, &org_tags()).await,
            SharedLookup::Miss(_)
        ),
        "an invalidated answer is not read stale either"
    );
}
