//! The replicas phase: three gateway processes (the release binary, default flags) behind a
//! round-robin client, first each with its own cache, then sharing one `redis-server`; the
//! same workload of K tokens × M repeated reads against one recording upstream. It reports
//! what the shared tier is for (upstream requests for the workload) and what it costs (the
//! latency of a shared hit beside a local hit and a miss, one call at a time).

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use tokio::runtime::Handle;
use tonic::{Request, metadata::AsciiMetadataValue, transport::Channel};
use wnology_gateway::proto::me_service_client::MeServiceClient;
use wnology_testkit::{Answer, RecordingUpstream, binary::GatewayBinary, redis::RedisServer};

/// Replicas of each deployment.
const REPLICAS: usize = 3;
/// A test value of the shared secret (at least 32 bytes), written to a file of the phase's.
const SECRET: &str = "bench-replicas-shared-cache-secret-0123456789abcdef";

/// How many tokens read, and how often each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub tokens: usize,
    pub reads: usize,
}

impl Workload {
    /// The upstream requests one cache per replica makes: each token misses once on each
    /// replica it reaches (reads rotate over the replicas).
    pub(crate) fn per_replica_expected(&self) -> usize {
        self.tokens * self.reads.min(REPLICAS)
    }
}

/// What one deployment did with the workload.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Requests that reached the upstream.
    pub upstream_requests: usize,
    /// Latencies (µs, sorted) by `x-cache` value.
    pub latencies: BTreeMap<String, Vec<u32>>,
    /// Times a replica dropped all its local copies during the workload (its invalidation
    /// feed was lost, lagged or reconnected: invalidations may have been missed).
    pub local_drops: usize,
    /// Calls that failed, and the first failure.
    pub failed: usize,
    pub first_failure: Option<String>,
}

impl Outcome {
    /// The `q` quantile of the calls answered with `x-cache: outcome`, µs.
    pub(crate) fn quantile(&self, outcome: &str, q: f64) -> Option<u32> {
        let all = self.latencies.get(outcome).filter(|l| !l.is_empty())?;
        let at = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len());
        Some(all[at - 1])
    }

    /// `p50 / p99 µs (n calls)` of one outcome, or `-`.
    pub(crate) fn describe(&self, outcome: &str) -> String {
        match (self.quantile(outcome, 0.5), self.quantile(outcome, 0.99)) {
            (Some(p50), Some(p99)) => {
                let n = self.latencies.get(outcome).map_or(0, Vec::len);
                format!("{p50} / {p99} µs ({n} calls)")
            }
            _ => "-".into(),
        }
    }
}

/// Runs the workload on three replicas with a cache each, then on three sharing Redis.
pub(crate) fn run(rt: &Handle, workload: Workload) -> Result<(Outcome, Outcome), String> {
    let present = Command::new("redis-server").arg("--version").output();
    if !present.is_ok_and(|out| out.status.success()) {
        return Err("redis-server is not installed (Debian package redis-server)".into());
    }
    let dir = std::env::temp_dir().join(format!("wnology-bench-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = run_in(rt, workload, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_in(rt: &Handle, workload: Workload, dir: &Path) -> Result<(Outcome, Outcome), String> {
    let separate = deployment(rt, workload, &[])?;
    let redis = RedisServer::start();
    let secret_file = dir.join("cache.secret");
    std::fs::write(&secret_file, SECRET).map_err(|e| e.to_string())?;
    let url = redis.url();
    let secret = secret_file.to_string_lossy().into_owned();
    let shared_args = [
        "--cache-redis-url",
        url.as_str(),
        "--cache-secret-file",
        secret.as_str(),
    ];
    let shared = deployment(rt, workload, &shared_args)?;
    Ok((separate, shared))
}

/// Starts a recording upstream and three replicas with `args`, runs the workload, stops them.
fn deployment(rt: &Handle, workload: Workload, args: &[&str]) -> Result<Outcome, String> {
    let upstream = rt.block_on(RecordingUpstream::start(Answer::json(
        200,
        &serde_json::json!({"mqttIn": {"device": 42}, "deviceState": {"device": 7}}),
    )));
    let binary = Path::new(env!("CARGO_BIN_EXE_wnology-gateway"));
    let mut replicas = Vec::with_capacity(REPLICAS);
    for _ in 0..REPLICAS {
        replicas.push(GatewayBinary::start(binary, &upstream.url(), args, &[])?);
    }
    let shared = !args.is_empty();
    let clients = rt.block_on(async {
        let mut clients = Vec::with_capacity(REPLICAS);
        for replica in &replicas {
            if shared {
                feed_trusted(replica.admin).await?;
            }
            clients.push(MeServiceClient::new(channel(replica.addr).await?));
        }
        Ok::<_, String>(clients)
    })?;
    let drops_before = local_drops(&replicas);
    let mut outcome = rt.block_on(reads(clients, workload));
    outcome.upstream_requests = upstream.count();
    outcome.local_drops = local_drops(&replicas) - drops_before;
    drop(replicas);
    Ok(outcome)
}

/// The replicas' log lines so far that say all local copies were dropped.
fn local_drops(replicas: &[GatewayBinary]) -> usize {
    replicas
        .iter()
        .flat_map(GatewayBinary::log)
        .filter(|line| line.contains("local copies") && line.contains("dropped"))
        .count()
}

/// Round `m` sends token `k`'s read to replica `(k + m) % 3`: every token visits every
/// replica, one call at a time.
async fn reads(mut clients: Vec<MeServiceClient<Channel>>, workload: Workload) -> Outcome {
    let mut outcome = Outcome::default();
    let tokens: Vec<AsciiMetadataValue> = (0..workload.tokens)
        .map(|k| {
            format!("Bearer bench-replicas-token-{k:04}")
                .parse()
                .expect("ASCII")
        })
        .collect();
    for round in 0..workload.reads {
        for (k, token) in tokens.iter().enumerate() {
            let client = &mut clients[(k + round) % REPLICAS];
            let mut call = Request::new(crate::hit_request());
            call.metadata_mut().insert("authorization", token.clone());
            let started = Instant::now();
            let answered = client.payload_counts(call).await;
            let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            match answered {
                Ok(response) => {
                    let served = response
                        .metadata()
                        .get("x-cache")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    outcome.latencies.entry(served).or_default().push(micros);
                }
                Err(status) => {
                    outcome.failed += 1;
                    outcome.first_failure.get_or_insert_with(|| {
                        format!("{:?}: {}", status.code(), status.message())
                    });
                }
            }
        }
    }
    for latencies in outcome.latencies.values_mut() {
        latencies.sort_unstable();
    }
    outcome
}

async fn channel(addr: std::net::SocketAddr) -> Result<Channel, String> {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Waits until a replica's invalidation feed is live (its local copies are then kept for
/// their whole TTL, as in production), at most 10 s.
async fn feed_trusted(admin: std::net::SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("http://{admin}/metrics");
    while Instant::now() < deadline {
        if let Ok(response) = reqwest::get(&url).await
            && let Ok(text) = response.text().await
            && text.contains("wnology_gateway_shared_cache_feed_trusted 1")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{admin}: the shared tier's feed did not come up within 10 s"
    ))
}
