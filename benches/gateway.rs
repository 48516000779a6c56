//! The gateway's benchmark (`cargo bench --bench gateway`; `-- --quick` for a ~30 s smoke run;
//! see BENCHMARKS.md).
//!
//! A gRPC load generator (tonic clients over several HTTP/2 connections, many calls in flight
//! on each) drives, in one process and one run:
//!
//! 1. a bare tonic `MeService` answering `PayloadCounts` from memory: the ceiling;
//! 2. the gateway on cache hits (`MeService/PayloadCounts`, one warm key);
//! 3. the gateway on cache misses (`cache-control: no-store`) against the standalone sandbox,
//!    beside direct pooled HTTP calls to the same sandbox endpoint;
//! 4. bursts of concurrent identical cold reads, counting upstream requests;
//! 5. a stream of distinct keys into a byte-bounded cache, watching the process's RSS;
//!
//! plus allocations per call (a counting global allocator) and the hit path taken apart in
//! process. Servers, upstreams and the load generator run on separate tokio runtimes whose
//! threads are tagged, so allocations can be told apart. Everything listens on 127.0.0.1, and
//! every loop is bounded by a count and a deadline.
//!
//! Goals are printed as MET / NOT MET and are informational: the exit status is non-zero only
//! when something is functionally wrong (a call failed, a sampled `x-cache` was not what the
//! phase expects, or a burst made other than one upstream call).

#[path = "gateway/alloc.rs"]
mod alloc;
#[path = "gateway/bare.rs"]
mod bare;
#[path = "gateway/load.rs"]
mod load;
#[path = "gateway/micro.rs"]
mod micro;
#[path = "gateway/pinned.rs"]
mod pinned;
#[path = "gateway/process.rs"]
mod process;
#[path = "gateway/replicas.rs"]
mod replicas;

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use http::{HeaderValue, header};
use tokio::{
    net::TcpListener,
    runtime::{Handle, Runtime},
    sync::watch,
};
use tonic::{
    Request,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};
use wnology_gateway::{
    config::Settings,
    gateway::Gateway,
    json::UpstreamJson,
    proto::{MePayloadCountsRequest, PayloadStats, me_service_client::MeServiceClient},
    routes,
    sandbox::{DEMO_TOKEN, Sandbox, SandboxOptions},
    server,
};

use alloc::{Role, Snapshot};
use load::{Caller, Limit, Run};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

const DAY_MS: i64 = 86_400_000;
/// The window of the hit and miss phases: one day (cheap for the sandbox to compute).
const HIT_START: i64 = 1_700_000_000_000;
/// Burst rounds use weekly windows after this, each one a key nobody asked for before.
const BURST_START: i64 = 1_710_000_000_000;
/// The distinct keys of the RSS phase are `start = RSS_START + n`.
const RSS_START: i64 = 1_600_000_000_000;
const MIB: u64 = 1024 * 1024;
/// What the trivial upstream of the RSS phase answers.
const SMALL_STATS: &str = r#"{"mqttIn":{"device":42},"deviceState":{"device":7}}"#;
/// h2load's gRPC load in the pinned phase: connections × streams (as in issue 14).
const PINNED_CONNECTIONS: usize = 8;
const PINNED_STREAMS: usize = 32;
/// HTTP/1.1 connections of h2load for direct REST, loaded.
const REST_CONNECTIONS: usize = 64;
/// Sampled calls (one in this many) have their `x-cache` checked.
const SAMPLE_EVERY: u64 = 64;

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    /// HTTP/2 connections of the load generator.
    connections: usize,
    /// Calls in flight on each connection.
    in_flight: usize,
    /// Worker threads of each runtime (load generator, server under test, upstream).
    threads: usize,
    /// Install the gateway's own log subscriber (JSON, `info`, so one access-log line per RPC),
    /// writing to a sink: formatting is measured, the write to stdout is not.
    access_log: bool,
    /// One runtime for everything instead of three (fewer cross-thread wake-ups; allocations
    /// can then not be split by role).
    shared_runtime: bool,
    warmup: Duration,
    /// Throughput scenarios run as `rounds` interleaved slices of `slice` each (A, B, A, B, …),
    /// so that a noisy neighbour hurts both sides of a ratio alike.
    rounds: usize,
    slice: Duration,
    /// Slices of the one-call-at-a-time miss latency comparison.
    latency_slice: Duration,
    /// Sequential calls whose allocations are counted (hits; misses use a quarter).
    alloc_calls: u64,
    burst: usize,
    burst_rounds: usize,
    rss_keys: u64,
    rss_time: Duration,
    /// Calls in flight per connection in the RSS phase.
    rss_in_flight: usize,
    cache_max_bytes: u64,
    micro_iters: u64,
    /// The replicas phase's workload: tokens × reads of each.
    replica_tokens: usize,
    replica_reads: usize,
    /// Phases to run (all when empty): pinned, replicas, throughput, miss, alloc, burst, rss,
    /// micro; `profile`
    /// (not in "all") runs only the first micro row, `Gateway::call` on a warm key, for perf.
    only: Vec<String>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.iter().any(|a| a == "--quick")
            || std::env::var("WNOLOGY_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let full = Options {
            quick,
            connections: 4,
            in_flight: 64,
            threads,
            shared_runtime: false,
            access_log: false,
            warmup: Duration::from_secs(2),
            rounds: 3,
            slice: Duration::from_secs(5),
            latency_slice: Duration::from_secs(3),
            alloc_calls: 20_000,
            burst: 1_000,
            burst_rounds: 5,
            rss_keys: 1_000_000,
            rss_time: Duration::from_secs(300),
            rss_in_flight: 64,
            cache_max_bytes: 64 * MIB,
            micro_iters: 200_000,
            replica_tokens: 60,
            replica_reads: 20,
            only: Vec::new(),
        };
        let mut o = if quick {
            Options {
                warmup: Duration::from_millis(500),
                rounds: 1,
                slice: Duration::from_secs(2),
                latency_slice: Duration::from_millis(1500),
                alloc_calls: 2_000,
                rss_keys: 100_000,
                rss_time: Duration::from_secs(10),
                micro_iters: 20_000,
                replica_tokens: 12,
                replica_reads: 6,
                ..full
            }
        } else {
            full
        };
        for arg in &args {
            // `cargo bench` passes `--bench`; libtest-style filters are ignored too.
            if arg == "--quick" || arg == "--bench" || !arg.starts_with("--") {
                continue;
            }
            if arg == "--shared-runtime" {
                o.shared_runtime = true;
                continue;
            }
            if arg == "--access-log" {
                o.access_log = true;
                continue;
            }
            let (name, value) = arg[2..]
                .split_once('=')
                .ok_or_else(|| format!("`{arg}`: expected --name=value (see BENCHMARKS.md)"))?;
            let number = || -> Result<u64, String> {
                value
                    .replace('_', "")
                    .parse()
                    .map_err(|_| format!("`{arg}`: not a number"))
            };
            let seconds = || -> Result<Duration, String> {
                value
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| format!("`{arg}`: not a number of seconds"))
            };
            match name {
                "connections" => o.connections = number()?.max(1) as usize,
                "in-flight" => o.in_flight = number()?.max(1) as usize,
                "threads" => o.threads = number()?.max(1) as usize,
                "warmup" => o.warmup = seconds()?,
                "rounds" => o.rounds = number()?.max(1) as usize,
                "slice" => o.slice = seconds()?,
                "latency-slice" => o.latency_slice = seconds()?,
                "alloc-calls" => o.alloc_calls = number()?.max(1),
                "burst" => o.burst = number()?.max(1) as usize,
                "burst-rounds" => o.burst_rounds = number()?.max(1) as usize,
                "rss-keys" => o.rss_keys = number()?,
                "rss-seconds" => o.rss_time = seconds()?,
                "rss-in-flight" => o.rss_in_flight = number()?.max(1) as usize,
                "cache-max-bytes" => o.cache_max_bytes = number()?.max(1),
                "micro-iters" => o.micro_iters = number()?.max(1),
                "replica-tokens" => o.replica_tokens = number()?.max(1) as usize,
                "replica-reads" => o.replica_reads = number()?.max(1) as usize,
                "only" => o.only = value.split(',').map(str::to_string).collect(),
                _ => return Err(format!("unknown option `{arg}` (see BENCHMARKS.md)")),
            }
        }
        Ok(o)
    }

    fn runs(&self, phase: &str) -> bool {
        (self.only.is_empty() && phase != "profile") || self.only.iter().any(|p| p == phase)
    }
}

// ---------------------------------------------------------------------------------------------
// Callers

/// What a gRPC caller does and expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The bare server: no `x-cache` expected.
    Bare,
    /// The gateway on a warm key: sampled answers must say `x-cache: hit`.
    Hit,
    /// `cache-control: no-store`: sampled answers must say `x-cache: bypass`.
    NoStore,
    /// A distinct key per call (`start = RSS_START + seq`): sampled answers must be misses.
    Distinct,
}

struct GrpcCaller {
    client: MeServiceClient<Channel>,
    authorization: AsciiMetadataValue,
    request: MePayloadCountsRequest,
    mode: Mode,
}

impl Caller for GrpcCaller {
    async fn call(&mut self, seq: u64) -> Result<(), String> {
        let mut message = self.request;
        if self.mode == Mode::Distinct {
            message.start = Some(RSS_START + seq as i64);
            message.end = None;
        }
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        if self.mode == Mode::NoStore {
            metadata.insert("cache-control", AsciiMetadataValue::from_static("no-store"));
        }
        let response = self
            .client
            .payload_counts(request)
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
        if seq.is_multiple_of(SAMPLE_EVERY) {
            let expected = match self.mode {
                Mode::Bare => None,
                Mode::Hit => Some("hit"),
                Mode::NoStore => Some("bypass"),
                Mode::Distinct => Some("miss"),
            };
            let got = response
                .metadata()
                .get("x-cache")
                .and_then(|v| v.to_str().ok());
            if got != expected {
                return Err(format!("x-cache: expected {expected:?}, got {got:?}"));
            }
        }
        Ok(())
    }
}

/// A caller without the gateway: GET the sandbox endpoint on a pooled HTTP client, read and
/// decode the JSON into the same message.
struct DirectCaller {
    http: reqwest::Client,
    url: String,
    authorization: HeaderValue,
}

impl Caller for DirectCaller {
    async fn call(&mut self, _seq: u64) -> Result<(), String> {
        let response = self
            .http
            .get(&self.url)
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header("accept-version", HeaderValue::from_static("^1.30.0"))
            .header(header::AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        let stats = PayloadStats::from_upstream_json(&body).map_err(|e| e.to_string())?;
        std::hint::black_box(stats);
        Ok(())
    }
}

/// The gateway's own REST client, called directly (no gRPC hop, no wrapper), doing what
/// [`DirectCaller`] does: tells the REST client's cost apart from the rest of a miss.
struct UpstreamClientCaller {
    client: Arc<wnology_gateway::upstream::UpstreamClient>,
    request: Arc<wnology_gateway::upstream::UpstreamRequest>,
    authorization: HeaderValue,
}

impl Caller for UpstreamClientCaller {
    async fn call(&mut self, _seq: u64) -> Result<(), String> {
        let response = self
            .client
            .send(
                wnology_gateway::upstream::Outbound {
                    route: &routes::ME_PAYLOAD_COUNTS,
                    request: &self.request,
                    authorization: &self.authorization,
                    caller_trace: &[],
                },
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| e.to_string())?;
        let stats = PayloadStats::from_upstream_json(&response.body).map_err(|e| e.to_string())?;
        std::hint::black_box(stats);
        Ok(())
    }
}

/// The pooled client the gateway builds (`upstream::UpstreamClient::new`), for direct calls.
fn direct_http_client() -> reqwest::Client {
    wnology_gateway::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn payload_counts_path(request: &MePayloadCountsRequest) -> String {
    // What `upstream::resolve` makes of the request (checked against the gateway's answer).
    let mut path = String::from("/me/payloadCounts?_actions=false&_links=true&_embedded=true");
    if let Some(start) = request.start {
        path.push_str(&format!("&start={start}"));
    }
    if let Some(end) = request.end {
        path.push_str(&format!("&end={end}"));
    }
    path
}

// ---------------------------------------------------------------------------------------------
// Process facts

/// A `kB` field of a `/proc/<pid>/status` file.
fn status_kib_of(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The sum of the values of the OpenMetrics samples `name{…}` whose labels include every one
/// of `labels`.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (set, value) = rest.split_once("} ")?;
            labels
                .iter()
                .all(|label| set.contains(label))
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------------------------------------
// Set-up

fn runtime(name: &str, role: Role, threads: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || alloc::set_role(role))
        .build()
        .expect("tokio runtime")
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// A gateway serving on the server runtime.
struct RunningGateway {
    gateway: Gateway,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
}

fn start_gateway(rt: &Handle, upstream_url: &str, cache_max_bytes: u64) -> RunningGateway {
    let mut settings = Settings::for_upstream(upstream_url);
    settings.cache_max_bytes = cache_max_bytes;
    // Long enough that nothing expires during a run.
    settings.cache_usage_ttl = Duration::from_secs(3600);
    let _entered = rt.enter();
    let gateway = Gateway::new(&settings).expect("gateway settings");
    let gateway_clone = gateway.clone();
    let listener = rt.block_on(server::bind(&settings)).expect("bind gateway");
    let addr = listener.local_addr().expect("gateway address");
    let (stop, stop_rx) = watch::channel(false);
    let options = server::ServeOptions::from_settings(&settings);
    let task = rt.spawn(async move {
        server::serve_with(gateway_clone, &options, listener, stopped(stop_rx)).await
    });
    RunningGateway {
        gateway,
        addr,
        stop,
        task,
    }
}

impl RunningGateway {
    fn shut_down(self, rt: &Handle) {
        let _ = self.stop.send(true);
        let task = self.task;
        match rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await }) {
            Ok(Ok(Ok(()))) => {}
            other => eprintln!("warning: gateway did not stop cleanly: {other:?}"),
        }
    }
}

async fn connect(addr: SocketAddr, connections: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the server under test");
        channels.push(channel);
    }
    channels
}

fn grpc_callers(
    channels: &[Channel],
    in_flight: usize,
    authorization: &AsciiMetadataValue,
    request: MePayloadCountsRequest,
    mode: Mode,
) -> Vec<GrpcCaller> {
    let mut callers = Vec::with_capacity(channels.len() * in_flight);
    for _ in 0..in_flight {
        for channel in channels {
            callers.push(GrpcCaller {
                client: MeServiceClient::new(channel.clone()),
                authorization: authorization.clone(),
                request,
                mode,
            });
        }
    }
    callers
}

/// Runs `a` and `b` in `rounds` interleaved slices after a warm-up of each, and returns the
/// merged runs.
async fn interleaved<A: Caller, B: Caller>(
    mut a: Vec<A>,
    mut b: Vec<B>,
    warmup: Duration,
    rounds: usize,
    slice: Duration,
) -> (Run, Run) {
    let warm = Limit {
        duration: warmup,
        max_calls: u64::MAX,
    };
    let measured = Limit {
        duration: slice,
        max_calls: u64::MAX,
    };
    (_, a) = load::drive(a, warm).await;
    (_, b) = load::drive(b, warm).await;
    let (mut run_a, mut run_b) = (Run::default(), Run::default());
    // A B, B A, A B, …: a drift in the machine's load weighs on both sides alike.
    for round in 0..rounds {
        for side in [round % 2, 1 - round % 2] {
            if side == 0 {
                let (run, back) = load::drive(a, measured).await;
                run_a.merge(&run);
                a = back;
            } else {
                let (run, back) = load::drive(b, measured).await;
                run_b.merge(&run);
                b = back;
            }
        }
    }
    (run_a, run_b)
}

/// Allocations per call over `calls` sequential calls (after a short warm-up).
async fn count_allocations<C: Caller>(caller: C, calls: u64) -> (Snapshot, u64, Run) {
    let (_, mut callers) = load::drive(
        vec![caller],
        Limit {
            duration: Duration::from_secs(30),
            max_calls: (calls / 10).max(100),
        },
    )
    .await;
    let before = Snapshot::now();
    alloc::enable(true);
    let (run, back) = load::drive(
        std::mem::take(&mut callers),
        Limit {
            duration: Duration::from_secs(120),
            max_calls: calls,
        },
    )
    .await;
    alloc::enable(false);
    drop(back);
    let delta = Snapshot::now().since(&before);
    (delta, run.ok.max(1), run)
}

// ---------------------------------------------------------------------------------------------
// Report

struct Report {
    rows: Vec<(String, Run)>,
    failures: Vec<String>,
    goals: Vec<(String, String, Option<bool>)>,
    notes: Vec<String>,
}

impl Report {
    fn scenario(&mut self, name: &str, run: Run) {
        if run.failed > 0 || run.ok == 0 {
            self.failures.push(format!(
                "{name}: {} of {} calls failed (first: {})",
                run.failed,
                run.ok + run.failed,
                run.first_error.as_deref().unwrap_or("no call completed")
            ));
        }
        self.rows.push((name.to_string(), run));
    }

    /// The scenario whose name starts with `prefix` (`"2a."`).
    fn run(&self, prefix: &str) -> Option<&Run> {
        self.rows
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, r)| r)
    }

    fn goal(&mut self, what: impl Into<String>, measured: impl Into<String>, met: Option<bool>) {
        self.goals.push((what.into(), measured.into(), met));
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn signed_micros(nanos: i128) -> String {
    format!("{:+.1} µs", nanos as f64 / 1000.0)
}

fn print_table(rows: &[(String, Run)]) {
    println!(
        "| {:<44} | {:>9} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} | {:>6} |",
        "scenario", "req/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "calls", "errors"
    );
    println!(
        "|{:-<46}|{:->11}|{:->10}|{:->10}|{:->10}|{:->10}|{:->10}|{:->11}|{:->8}|",
        "", "", "", "", "", "", "", "", ""
    );
    for (name, run) in rows {
        println!(
            "| {:<44} | {:>9.0} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9} | {:>6} |",
            name,
            run.rps(),
            micros(run.quantile(0.50)),
            micros(run.quantile(0.90)),
            micros(run.quantile(0.99)),
            micros(run.quantile(0.999)),
            micros(run.max()),
            run.ok,
            run.failed
        );
    }
}

fn met(flag: Option<bool>) -> &'static str {
    match flag {
        Some(true) => "MET",
        Some(false) => "NOT MET",
        None => "n/a",
    }
}

// ---------------------------------------------------------------------------------------------
// Main

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = bare_serve(&args) {
        return code;
    }
    let options = match Options::parse() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("gateway bench: {error}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    wnology_gateway::install_crypto_provider();
    let _telemetry = options.access_log.then(|| {
        let env = std::collections::HashMap::<String, String>::new();
        wnology_gateway::telemetry::Telemetry::init_with(
            wnology_gateway::telemetry::LogOptions::new(
                wnology_gateway::telemetry::LogFormat::Json,
            ),
            &env,
            std::io::sink,
        )
        .expect("the gateway's log subscriber")
    });
    let runtimes = if options.shared_runtime {
        vec![runtime("bench", Role::Other, options.threads)]
    } else {
        vec![
            runtime("bench-client", Role::Client, options.threads),
            runtime("bench-server", Role::Server, options.threads),
            runtime("bench-upstream", Role::Upstream, options.threads),
        ]
    };
    let handle = |i: usize| runtimes[i.min(runtimes.len() - 1)].handle().clone();
    let (client_rt, server_rt, upstream_rt) = (handle(0), handle(1), handle(2));
    let (stop_all, stop_rx) = watch::channel(false);

    println!(
        "wnology-gateway benchmark ({} run{})\nmachine: {} CPUs available, CPU model: {}; kernel {}\nload: {} connections x {} calls in flight; {}\n",
        if options.quick { "quick" } else { "full" },
        if options.access_log {
            ", with the gateway's JSON access log (to a sink)"
        } else {
            ", no log subscriber installed"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        options.connections,
        options.in_flight,
        if options.shared_runtime {
            format!(
                "one shared runtime of {} worker threads for load generator, servers and upstreams",
                options.threads
            )
        } else {
            format!(
                "{} worker threads in each of three runtimes (load generator, server under test, upstream)",
                options.threads
            )
        },
    );

    let mut report = Report {
        rows: Vec::new(),
        failures: Vec::new(),
        goals: Vec::new(),
        notes: Vec::new(),
    };
    let authorization: AsciiMetadataValue = format!("Bearer {DEMO_TOKEN}")
        .parse()
        .expect("token metadata");
    let bearer = HeaderValue::from_str(&format!("Bearer {DEMO_TOKEN}")).expect("token header");

    // ---- P. The pinned phase, first, while nothing else of the bench runs.
    if options.runs("pinned")
        && let Err(error) = pinned_phase(&options, &client_rt, &authorization, &mut report)
    {
        report.failures.push(format!("pinned phase: {error}"));
    }

    // ---- 5. RSS of the gateway binary under a stream of distinct keys.
    if options.runs("rss")
        && let Err(error) = rss_phase(
            &options,
            &client_rt,
            &upstream_rt,
            &authorization,
            &mut report,
        )
    {
        report.failures.push(format!("RSS phase: {error}"));
    }

    // ---- R. Three replicas, each with its own cache, then sharing Redis.
    if options.runs("replicas") {
        replicas_phase(&options, &client_rt, &mut report);
    }

    // ---- The sandbox, the gateway in front of it, the bare server.
    let sandbox = Sandbox::new(SandboxOptions {
        seed: None,
        invite_ttl: Duration::from_secs(7 * 24 * 3600),
        faults: Default::default(),
    })
    .expect("sandbox");
    let sandbox_listener = upstream_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind sandbox");
    let sandbox_url = format!(
        "http://{}",
        sandbox_listener.local_addr().expect("sandbox address")
    );
    upstream_rt.spawn(
        sandbox
            .clone()
            .serve(sandbox_listener, stopped(stop_rx.clone())),
    );
    let hit_request = MePayloadCountsRequest {
        start: Some(HIT_START),
        end: Some(HIT_START + DAY_MS - 1),
        as_bytes: None,
    };
    let direct_url = format!("{sandbox_url}{}", payload_counts_path(&hit_request));
    let http = direct_http_client();
    let (stats, sandbox_body) = client_rt.block_on(async {
        let body = http
            .get(&direct_url)
            .header(header::AUTHORIZATION, bearer.clone())
            .send()
            .await
            .expect("sandbox answers")
            .bytes()
            .await
            .expect("sandbox body");
        let stats =
            PayloadStats::from_upstream_json(&body).expect("sandbox JSON is a PayloadStats");
        (stats, body)
    });
    let stats_len = prost::Message::encoded_len(&stats);
    let stats_entries: usize = stats.types().iter().map(|m| m.len()).sum();
    println!(
        "response: PayloadStats from the sandbox, {} bytes of JSON, {stats_len} bytes encoded, 19 maps, {stats_entries} entries\n",
        sandbox_body.len()
    );

    let gw = start_gateway(&server_rt, &sandbox_url, 256 * MIB);
    let bare_listener = server_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind bare server");
    let bare_addr = bare_listener.local_addr().expect("bare address");
    server_rt.spawn(bare::serve(
        bare::Bare {
            stats: std::sync::Arc::new(stats.clone()),
        },
        bare_listener,
        stopped(stop_rx.clone()),
    ));

    let (gw_channels, bare_channels) = client_rt.block_on(async {
        (
            connect(gw.addr, options.connections).await,
            connect(bare_addr, options.connections).await,
        )
    });

    // Warm the hit key and check that the gateway serves what the bare server serves.
    client_rt.block_on(async {
        let mut client = MeServiceClient::new(gw_channels[0].clone());
        for expected in ["miss", "hit"] {
            let mut request = Request::new(hit_request);
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
            match client.payload_counts(request).await {
                Ok(response) => {
                    let cache = response.metadata().get("x-cache").cloned();
                    if cache.as_ref().and_then(|v| v.to_str().ok()) != Some(expected) {
                        report.failures.push(format!(
                            "warm-up: expected x-cache {expected}, got {cache:?}"
                        ));
                    }
                    if response.get_ref() != &stats {
                        report.failures.push(
                            "warm-up: the gateway's answer differs from the sandbox's".into(),
                        );
                    }
                }
                Err(status) => report
                    .failures
                    .push(format!("warm-up call failed: {status}")),
            }
        }
    });

    // ---- 1 + 2. Bare server vs gateway hits, interleaved.
    let workers = options.connections * options.in_flight;
    if options.runs("throughput") {
        let (bare_run, hit_run) = client_rt.block_on(interleaved(
            grpc_callers(
                &bare_channels,
                options.in_flight,
                &authorization,
                hit_request,
                Mode::Bare,
            ),
            grpc_callers(
                &gw_channels,
                options.in_flight,
                &authorization,
                hit_request,
                Mode::Hit,
            ),
            options.warmup,
            options.rounds,
            options.slice,
        ));
        report.scenario(
            &format!("1a. bare tonic server, {workers} in flight"),
            bare_run,
        );
        report.scenario(
            &format!("2a. gateway cache hit, {workers} in flight"),
            hit_run,
        );
        let (bare_run, hit_run) = client_rt.block_on(interleaved(
            grpc_callers(
                &bare_channels[..1],
                1,
                &authorization,
                hit_request,
                Mode::Bare,
            ),
            grpc_callers(&gw_channels[..1], 1, &authorization, hit_request, Mode::Hit),
            options.warmup,
            options.rounds,
            options.latency_slice,
        ));
        report.scenario("1b. bare tonic server, 1 in flight", bare_run);
        report.scenario("2b. gateway cache hit, 1 in flight", hit_run);
    }

    // ---- 3. Misses: gateway with no-store vs direct REST, one call at a time, then loaded.
    if options.runs("miss") {
        let direct = |workers: usize| -> Vec<DirectCaller> {
            (0..workers)
                .map(|_| DirectCaller {
                    http: http.clone(),
                    url: direct_url.clone(),
                    authorization: bearer.clone(),
                })
                .collect()
        };
        let metrics_before = gw.gateway.metrics().encode();
        let (direct_run, miss_run) = client_rt.block_on(interleaved(
            direct(1),
            grpc_callers(
                &gw_channels[..1],
                1,
                &authorization,
                hit_request,
                Mode::NoStore,
            ),
            options.warmup,
            options.rounds,
            options.latency_slice,
        ));
        let metrics_after = gw.gateway.metrics().encode();
        let mean = |name: &str, labels: &[&str]| {
            let sum = metric_value(&metrics_after, &format!("{name}_sum"), labels)
                - metric_value(&metrics_before, &format!("{name}_sum"), labels);
            let count = metric_value(&metrics_after, &format!("{name}_count"), labels)
                - metric_value(&metrics_before, &format!("{name}_count"), labels);
            sum / count.max(1.0) * 1e6
        };
        let rpc = mean(
            "wnology_gateway_rpc_duration_seconds",
            &["method=\"PayloadCounts\"", "code=\"OK\""],
        );
        let upstream = mean(
            "wnology_gateway_upstream_duration_seconds",
            &["action=\"me.payloadCounts\"", "status=\"200\""],
        );
        report.notes.push(format!(
            "\nMiss, 1 in flight, split by the gateway's own metrics (means, µs): load generator saw {:.1} \
             (direct REST {:.1}); the gateway's RPC span {rpc:.1}, of which the upstream call \
             (reqwest send + body read) {upstream:.1} and the rest of the wrapper {:.1}; outside the \
             wrapper (gRPC client + server transport) {:.1}.",
            miss_run.hist.mean() / 1e3,
            direct_run.hist.mean() / 1e3,
            rpc - upstream,
            miss_run.hist.mean() / 1e3 - rpc,
        ));
        report.scenario("3a. direct REST to the sandbox, 1 in flight", direct_run);
        report.scenario("3b. gateway miss (no-store), 1 in flight", miss_run);
        let client = Arc::new(
            wnology_gateway::upstream::UpstreamClient::new(
                &Settings::for_upstream(&sandbox_url),
                Arc::new(wnology_gateway::metrics::Metrics::new()),
            )
            .expect("upstream client"),
        );
        let resolved = Arc::new(
            wnology_gateway::json::to_json_value(&hit_request)
                .map_err(|e| e.to_string())
                .and_then(|json| {
                    wnology_gateway::upstream::resolve(&routes::ME_PAYLOAD_COUNTS, &json)
                        .map_err(|e| e.to_string())
                })
                .expect("the hit request resolves"),
        );
        let (direct_run, client_run) = client_rt.block_on(interleaved(
            direct(1),
            vec![UpstreamClientCaller {
                client,
                request: resolved,
                authorization: bearer.clone(),
            }],
            options.warmup,
            options.rounds,
            options.latency_slice,
        ));
        report.scenario("3e. direct REST again, 1 in flight", direct_run);
        report.scenario(
            "3f. the gateway's UpstreamClient alone, 1 in flight",
            client_run,
        );
        let (direct_run, miss_run) = client_rt.block_on(interleaved(
            direct(workers),
            grpc_callers(
                &gw_channels,
                options.in_flight,
                &authorization,
                hit_request,
                Mode::NoStore,
            ),
            options.warmup,
            options.rounds,
            options.latency_slice,
        ));
        report.scenario(
            &format!("3c. direct REST to the sandbox, {workers} in flight"),
            direct_run,
        );
        report.scenario(
            &format!("3d. gateway miss (no-store), {workers} in flight"),
            miss_run,
        );
    }

    // ---- Allocations per call, sequential calls.
    let mut alloc_lines = Vec::new();
    if options.runs("alloc") {
        let one = |channels: &[Channel], mode| {
            grpc_callers(&channels[..1], 1, &authorization, hit_request, mode)
                .pop()
                .expect("one caller")
        };
        let measured = client_rt.block_on(async {
            let bare =
                count_allocations(one(&bare_channels, Mode::Bare), options.alloc_calls).await;
            let hit = count_allocations(one(&gw_channels, Mode::Hit), options.alloc_calls).await;
            let miss_calls = (options.alloc_calls / 4).max(100);
            let direct = count_allocations(
                DirectCaller {
                    http: http.clone(),
                    url: direct_url.clone(),
                    authorization: bearer.clone(),
                },
                miss_calls,
            )
            .await;
            let miss = count_allocations(one(&gw_channels, Mode::NoStore), miss_calls).await;
            [
                ("bare tonic server", bare),
                ("gateway, cache hit", hit),
                ("direct REST (reqwest + JSON decode)", direct),
                ("gateway, miss (no-store)", miss),
            ]
        });
        let per = |(delta, calls, _): &(Snapshot, u64, Run), role: Role| {
            delta.count(role) as f64 / *calls as f64
        };
        for (name, m) in &measured {
            if m.2.failed > 0 {
                report.failures.push(format!(
                    "allocation count, {name}: {} calls failed ({})",
                    m.2.failed,
                    m.2.first_error.as_deref().unwrap_or("?")
                ));
            }
            alloc_lines.push(format!(
                "| {:<36} | {:>9.1} | {:>8.1} | {:>8.1} | {:>8.1} | {:>11.0} | {:>6} |",
                name,
                m.0.total_count() as f64 / m.1 as f64,
                per(m, Role::Client),
                per(m, Role::Server),
                per(m, Role::Upstream),
                m.0.total_bytes() as f64 / m.1 as f64,
                m.1
            ));
        }
        let (bare, hit) = (&measured[0].1, &measured[1].1);
        let extra_total = per(hit, Role::Client) + per(hit, Role::Server) + per(hit, Role::Other)
            - per(bare, Role::Client)
            - per(bare, Role::Server)
            - per(bare, Role::Other);
        let extra_server = per(hit, Role::Server) - per(bare, Role::Server);
        report.goal(
            "allocations per cache hit, gateway's own (total/call, hit − bare)",
            format!("{extra_total:.1} (server threads alone: {extra_server:.1})"),
            None,
        );
    }

    // ---- 4. Bursts of identical cold reads.
    let mut burst_lines = Vec::new();
    if options.runs("burst") {
        let mut exact = true;
        for round in 0..options.burst_rounds {
            let start = BURST_START + (round as i64 + 1) * 7 * DAY_MS;
            let request = MePayloadCountsRequest {
                start: Some(start),
                end: Some(start + DAY_MS - 1),
                as_bytes: None,
            };
            let before = sandbox.request_count();
            let figures_before = gw.gateway.cache().figures();
            let (outcomes, elapsed, hist) =
                client_rt.block_on(burst(&gw_channels, &authorization, request, options.burst));
            let upstream_calls = sandbox.request_count() - before;
            let figures = gw.gateway.cache().figures();
            let failed = outcomes.iter().filter(|o| o.is_err()).count();
            let misses = outcomes
                .iter()
                .filter(|o| matches!(o, Ok(Some(c)) if c == "miss"))
                .count();
            let hits = outcomes
                .iter()
                .filter(|o| matches!(o, Ok(Some(c)) if c == "hit"))
                .count();
            if let Some(Err(error)) = outcomes.iter().find(|o| o.is_err()) {
                report.failures.push(format!(
                    "burst round {}: {failed} calls failed (first: {error})",
                    round + 1
                ));
            }
            if upstream_calls != 1 {
                exact = false;
                report.failures.push(format!(
                    "burst round {}: {upstream_calls} upstream requests for {} identical cold reads (expected exactly 1)",
                    round + 1,
                    options.burst
                ));
            }
            burst_lines.push(format!(
                "| {:>5} | {:>8} | {:>13} | {:>6} | {:>9} | {:>4} | {:>6} | {:>9} | {:>9} | {:>9} |",
                round + 1,
                options.burst,
                upstream_calls,
                misses,
                figures.coalesced - figures_before.coalesced,
                hits,
                failed,
                format!("{:.1}", elapsed.as_secs_f64() * 1e3),
                micros(Duration::from_nanos(hist.value_at_quantile(0.5))),
                micros(Duration::from_nanos(hist.value_at_quantile(0.99))),
            ));
        }
        report.goal(
            format!(
                "exactly one upstream call per burst of {} identical cold reads",
                options.burst
            ),
            if exact {
                format!("1 per round in all {} rounds", options.burst_rounds)
            } else {
                "see the burst table".to_string()
            },
            Some(exact),
        );
    }

    // ---- Micro: the hit path in process.
    let mut micro_rows = Vec::new();
    if options.runs("micro") || options.runs("profile") {
        let micro_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("micro runtime");
        micro_rows = micro_rt.block_on(micro::run(
            &gw.gateway,
            hit_request,
            authorization.clone(),
            &stats,
            &sandbox_body,
            options.micro_iters,
            !options.runs("micro"),
        ));
    }

    // ---- Ratios and goals.
    if let (Some(bare), Some(hit)) = (report.run("1a.").cloned(), report.run("2a.").cloned()) {
        let ratio = hit.rps() / bare.rps().max(f64::MIN_POSITIVE);
        let p99 = hit.quantile(0.99).as_secs_f64() / bare.quantile(0.99).as_secs_f64().max(1e-12);
        let p50 = hit.quantile(0.5).as_secs_f64() / bare.quantile(0.5).as_secs_f64().max(1e-12);
        report.goal(
            "in process (informational; generator shares the cores): hit/bare req/s",
            format!("{ratio:.3}x ({:.0} / {:.0} req/s)", hit.rps(), bare.rps()),
            None,
        );
        report.goal(
            "hit p99 / bare p99 (informational)",
            format!("{p99:.2}x (p50: {p50:.2}x)"),
            None,
        );
    }
    if let (Some(bare), Some(hit)) = (report.run("1b.").cloned(), report.run("2b.").cloned()) {
        let gap = |q: f64| hit.quantile(q).as_nanos() as i128 - bare.quantile(q).as_nanos() as i128;
        report.goal(
            "hit added latency over bare, 1 in flight (informational)",
            format!(
                "{} at p50 ({} at p99)",
                signed_micros(gap(0.5)),
                signed_micros(gap(0.99))
            ),
            None,
        );
    }
    let quantile_gap = |a: &Run, b: &Run, q: f64| -> i128 {
        a.quantile(q).as_nanos() as i128 - b.quantile(q).as_nanos() as i128
    };
    if let (Some(direct), Some(miss)) = (report.run("3a.").cloned(), report.run("3b.").cloned()) {
        let p50 = quantile_gap(&miss, &direct, 0.5);
        report.goal(
            "in process (informational): miss added latency at p50 (gateway miss − direct REST, 1 in flight)",
            format!(
                "{} at p50 ({} at p99)",
                signed_micros(p50),
                signed_micros(quantile_gap(&miss, &direct, 0.99))
            ),
            None,
        );
    }
    if let (Some(direct), Some(miss)) = (report.run("3c.").cloned(), report.run("3d.").cloned()) {
        let (direct, miss) = (&direct, &miss);
        report.goal(
            format!(
                "miss added latency under load (informational, {} in flight)",
                options.connections * options.in_flight
            ),
            format!(
                "{} at p50 ({} at p99); miss/direct req/s {:.2}x",
                signed_micros(quantile_gap(miss, direct, 0.5)),
                signed_micros(quantile_gap(miss, direct, 0.99)),
                miss.rps() / direct.rps().max(f64::MIN_POSITIVE)
            ),
            None,
        );
    }

    // ---- Print.
    if !report.rows.is_empty() {
        println!(
            "\n## In process: throughput and latency (load generator in the bench process, sharing the cores; informational)\n"
        );
        report.rows.sort_by(|a, b| a.0.cmp(&b.0));
        print_table(&report.rows);
    }
    if !alloc_lines.is_empty() {
        println!(
            "\n## Allocations per call ({} sequential calls for hits, a quarter of that for misses; all threads of the process, split by role)\n",
            options.alloc_calls
        );
        println!(
            "| {:<36} | {:>9} | {:>8} | {:>8} | {:>8} | {:>11} | {:>6} |",
            "scenario", "total", "client", "server", "upstream", "bytes/call", "calls"
        );
        println!(
            "|{:-<38}|{:->11}|{:->10}|{:->10}|{:->10}|{:->13}|{:->8}|",
            "", "", "", "", "", "", ""
        );
        for line in &alloc_lines {
            println!("{line}");
        }
    }
    if !burst_lines.is_empty() {
        println!(
            "\n## Bursts of identical cold reads (distinct key per round; sandbox request counter)\n"
        );
        println!(
            "| round | requests | upstream reqs | x-miss | coalesced | x-hit | failed | burst ms  | p50 µs    | p99 µs    |"
        );
        println!(
            "|------:|---------:|--------------:|-------:|----------:|-----:|-------:|----------:|----------:|----------:|"
        );
        for line in &burst_lines {
            println!("{line}");
        }
    }
    for note in &report.notes {
        println!("{note}");
    }
    if !micro_rows.is_empty() {
        println!(
            "\n## The hit path in process, no transport ({} iterations each, one thread)\n",
            options.micro_iters
        );
        println!(
            "| {:<46} | {:>9} | {:>8} | {:>10} |",
            "operation", "ns/op", "allocs", "bytes"
        );
        println!("|{:-<48}|{:->11}|{:->10}|{:->12}|", "", "", "", "");
        for row in &micro_rows {
            println!(
                "| {:<46} | {:>9.0} | {:>8.1} | {:>10.0} |",
                row.name, row.ns, row.allocs, row.bytes
            );
        }
    }
    println!(
        "\n## Goals (ratios against baselines measured in this run; the exit status only reflects functional failures)\n"
    );
    for (what, measured, flag) in &report.goals {
        println!("- {:<8} {what}: {measured}", met(*flag));
    }

    // ---- Stop everything.
    let _ = stop_all.send(true);
    drop(gw_channels);
    drop(bare_channels);
    gw.shut_down(&server_rt);
    for runtime in runtimes {
        runtime.shutdown_timeout(Duration::from_secs(5));
    }

    println!("\ntotal time {:.1} s", started.elapsed().as_secs_f64());
    if report.failures.is_empty() {
        println!("result: OK (no functional failure)");
        ExitCode::SUCCESS
    } else {
        println!("result: FUNCTIONAL FAILURE");
        for failure in &report.failures {
            println!("  - {failure}");
        }
        ExitCode::FAILURE
    }
}

/// `n` identical calls released at once over the connections; each call's `x-cache`, the
/// burst's duration and the calls' latencies.
async fn burst(
    channels: &[Channel],
    authorization: &AsciiMetadataValue,
    request: MePayloadCountsRequest,
    n: usize,
) -> (
    Vec<Result<Option<String>, String>>,
    Duration,
    hdrhistogram::Histogram<u64>,
) {
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut client = MeServiceClient::new(channels[i % channels.len()].clone());
            let barrier = Arc::clone(&barrier);
            let authorization = authorization.clone();
            tokio::spawn(async move {
                let mut call = Request::new(request);
                call.metadata_mut().insert("authorization", authorization);
                barrier.wait().await;
                let sent = Instant::now();
                let result =
                    tokio::time::timeout(Duration::from_secs(30), client.payload_counts(call))
                        .await;
                let latency = sent.elapsed();
                let outcome = match result {
                    Ok(Ok(response)) => Ok(response
                        .metadata()
                        .get("x-cache")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)),
                    Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                    Err(_) => Err("no answer within 30 s".to_string()),
                };
                (outcome, latency)
            })
        })
        .collect();
    barrier.wait().await;
    let released = Instant::now();
    let mut outcomes = Vec::with_capacity(n);
    let mut hist = load::histogram();
    for task in tasks {
        let (outcome, latency) = task.await.expect("burst task");
        hist.saturating_record(latency.as_nanos() as u64);
        outcomes.push(outcome);
    }
    (outcomes, released.elapsed(), hist)
}

/// Phase 5: distinct keys into a byte-bounded cache of the real binary, answered by a trivial
/// upstream; the gateway process's peak RSS over its RSS once serving.
fn rss_phase(
    options: &Options,
    client_rt: &Handle,
    upstream_rt: &Handle,
    authorization: &AsciiMetadataValue,
    report: &mut Report,
) -> Result<(), String> {
    let (stop, stop_rx) = watch::channel(false);
    let listener = upstream_rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind trivial upstream: {e}"))?;
    let url = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| format!("upstream address: {e}"))?
    );
    let app = axum::Router::new().fallback(|| async {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            SMALL_STATS,
        )
    });
    let upstream_calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&upstream_calls);
    let app = app.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            counted.fetch_add(1, Relaxed);
            next.run(request)
        },
    ));
    let upstream = upstream_rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .await
    });

    let max_bytes = options.cache_max_bytes.to_string();
    let gw = process::GatewayBinary::start(
        process::gateway_binary(),
        &url,
        &[
            "--cache-max-bytes",
            &max_bytes,
            // Long enough that nothing expires during the run.
            "--cache-usage-ttl",
            "3600s",
        ],
        // The access log is off: writing a line per call to a pipe would measure the pipe.
        &[("RUST_LOG", "info,wnology_gateway::access=warn")],
    )?;
    let http = reqwest::Client::new();
    let request = MePayloadCountsRequest::default();
    let (run, baseline, figures) = client_rt.block_on(async {
        let channels = connect(gw.addr, options.connections).await;
        // One call first (not cached), so that the baseline includes the connections.
        let warm = grpc_callers(&channels[..1], 1, authorization, request, Mode::NoStore);
        let _ = load::drive(
            warm,
            Limit {
                duration: Duration::from_secs(5),
                max_calls: 1,
            },
        )
        .await;
        let baseline = process::status_bytes(&gw, "VmRSS").unwrap_or(0);
        let sampling = Arc::new(AtomicBool::new(true));
        let sampled_peak = Arc::new(AtomicU64::new(baseline));
        let sampler = {
            let (sampling, sampled_peak) = (Arc::clone(&sampling), Arc::clone(&sampled_peak));
            let status = format!("/proc/{}/status", gw.pid());
            std::thread::spawn(move || {
                while sampling.load(Relaxed) {
                    let rss = status_kib_of(&status, "VmRSS").unwrap_or(0) * 1024;
                    sampled_peak.fetch_max(rss, Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let callers = grpc_callers(
            &channels,
            options.rss_in_flight,
            authorization,
            request,
            Mode::Distinct,
        );
        let (run, callers) = load::drive(
            callers,
            Limit {
                duration: options.rss_time,
                max_calls: options.rss_keys,
            },
        )
        .await;
        drop(callers);
        drop(channels);
        sampling.store(false, Relaxed);
        let _ = sampler.join();
        let figure = |name: &'static str| {
            let (gw, http) = (&gw, &http);
            async move { process::metric(gw, http, name).await.unwrap_or(f64::NAN) }
        };
        let figures = [
            figure("wnology_gateway_cache_entries").await,
            figure("wnology_gateway_cache_weighted_size_bytes").await,
            figure("wnology_gateway_cache_evictions_total").await,
        ];
        (run, (baseline, sampled_peak.load(Relaxed)), figures)
    });
    let (baseline, sampled_peak) = baseline;
    let after = process::status_bytes(&gw, "VmRSS").unwrap_or(0);
    // VmHWM: the kernel's own peak, which no sampling interval can miss.
    let peak = process::status_bytes(&gw, "VmHWM")
        .unwrap_or(0)
        .max(sampled_peak);
    drop(gw);
    let _ = stop.send(true);
    let _ = upstream_rt.block_on(upstream);

    let [entries, weighted, evictions] = figures;
    let growth = peak.saturating_sub(baseline);
    let bound = options.cache_max_bytes + 50 * MIB;
    let inserted = run.ok;
    let complete = inserted >= options.rss_keys;
    report.scenario(
        &format!("5. gateway binary miss, distinct keys ({inserted} keys)"),
        run,
    );
    report.notes.push(format!(
        "\n## RSS of the gateway binary under distinct keys (cache bound {:.0} MiB, trivial upstream)\n\n\
         - keys inserted: {inserted} of {} ({}); upstream requests: {}\n\
         - cache after: {entries} entries, weighted {:.1} MiB, evictions {evictions}\n\
         - gateway process RSS: {:.1} MiB once serving (baseline), peak {:.1} MiB (VmHWM, and 50 ms samples), after {:.1} MiB\n\
         - peak RSS growth {:.1} MiB vs bound + 50 MiB = {:.1} MiB; RSS after over baseline: {:.0} bytes per cached entry (weigher counts {:.0})",
        options.cache_max_bytes as f64 / MIB as f64,
        options.rss_keys,
        if complete { "all" } else { "time bound reached first" },
        upstream_calls.load(Relaxed),
        weighted / MIB as f64,
        baseline as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        after as f64 / MIB as f64,
        growth as f64 / MIB as f64,
        bound as f64 / MIB as f64,
        after.saturating_sub(baseline) as f64 / entries.max(1.0),
        weighted / entries.max(1.0),
    ));
    report.goal(
        format!(
            "gateway peak RSS growth <= cache bound + 50 MiB ({:.0} MiB)",
            bound as f64 / MIB as f64
        ),
        format!(
            "{:.1} MiB over {inserted} keys{}",
            growth as f64 / MIB as f64,
            if complete {
                ""
            } else {
                " (time bound hit first)"
            }
        ),
        Some(growth <= bound),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The pinned phase (what users run: child processes, one core each)

/// `--bare-serve=ADDR --bare-upstream=URL`: this executable as the bare tonic server, answering
/// what the sandbox at URL answers for the hit request (the pinned phase starts it).
fn bare_serve(args: &[String]) -> Option<ExitCode> {
    let value = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
    };
    let addr: SocketAddr = value("--bare-serve")?.parse().ok()?;
    let upstream = value("--bare-upstream")?;
    wnology_gateway::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let served = rt.block_on(async move {
        let request = hit_request();
        let body = reqwest::Client::new()
            .get(format!("{upstream}{}", payload_counts_path(&request)))
            .header(header::AUTHORIZATION, format!("Bearer {DEMO_TOKEN}"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        let stats = PayloadStats::from_upstream_json(&body).map_err(|e| e.to_string())?;
        let listener = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
        bare::serve(
            bare::Bare {
                stats: Arc::new(stats),
            },
            listener,
            std::future::pending(),
        )
        .await
        .map_err(|e| e.to_string())
    });
    Some(match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bare server: {error}");
            ExitCode::FAILURE
        }
    })
}

/// The replicas phase: upstream requests of K tokens × M reads over three replicas, with and
/// without the shared tier, and what a shared hit costs beside a local one.
fn replicas_phase(options: &Options, rt: &Handle, report: &mut Report) {
    let workload = replicas::Workload {
        tokens: options.replica_tokens,
        reads: options.replica_reads,
    };
    let (separate, shared) = match replicas::run(rt, workload) {
        Ok(outcomes) => outcomes,
        Err(error) => return report.failures.push(format!("replicas phase: {error}")),
    };
    for (name, outcome) in [("a cache per replica", &separate), ("shared tier", &shared)] {
        if outcome.failed > 0 {
            report.failures.push(format!(
                "replicas phase, {name}: {} calls failed (first: {})",
                outcome.failed,
                outcome.first_failure.as_deref().unwrap_or("-")
            ));
        }
    }
    let (k, m) = (workload.tokens, workload.reads);
    let mut note = format!(
        "\n## Three replicas, round-robin ({k} tokens × {m} reads each, one call at a time; release binary, default flags, not pinned)\n\n\
         | deployment | upstream requests | miss p50 / p99 | shared-hit p50 / p99 | hit p50 / p99 | local drops |\n\
         |---|---:|---|---|---|---:|\n"
    );
    for (name, outcome) in [
        ("a cache per replica", &separate),
        ("shared tier (Redis)", &shared),
    ] {
        note.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            outcome.upstream_requests,
            outcome.describe("miss"),
            outcome.describe("shared-hit"),
            outcome.describe("hit"),
            outcome.local_drops,
        ));
    }
    report.notes.push(note);
    report.goal(
        format!("replicas: one upstream request per token with the shared tier ({k} tokens; a cache per replica makes {})", workload.per_replica_expected()),
        format!(
            "{} with the shared tier, {} without",
            shared.upstream_requests, separate.upstream_requests
        ),
        Some(shared.upstream_requests == k),
    );
    if let (Some(shared_hit), Some(hit)) = (
        shared.quantile("shared-hit", 0.5),
        shared.quantile("hit", 0.5),
    ) {
        report.goal(
            "replicas: a shared hit's cost over a local hit (p50, one call at a time)",
            format!(
                "+{} µs ({shared_hit} µs vs {hit} µs)",
                i64::from(shared_hit) - i64::from(hit)
            ),
            None,
        );
    }
}

fn hit_request() -> MePayloadCountsRequest {
    MePayloadCountsRequest {
        start: Some(HIT_START),
        end: Some(HIT_START + DAY_MS - 1),
        as_bytes: None,
    }
}

/// h2load on PATH, installed from Debian's `nghttp2-client` when missing (as root).
fn ensure_h2load() -> Result<(), String> {
    let present = || {
        std::process::Command::new("h2load")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    eprintln!("h2load missing: installing nghttp2-client");
    let _ = std::process::Command::new("bash")
        .args([
            "-c",
            "(apt-get install -y -qq nghttp2-client || (apt-get update -qq && apt-get install -y -qq nghttp2-client)) >/dev/null 2>&1",
        ])
        .status();
    present()
        .then_some(())
        .ok_or_else(|| "h2load is missing and nghttp2-client could not be installed".into())
}

/// The gRPC frame of `request`, as h2load sends it.
fn grpc_frame(request: &MePayloadCountsRequest) -> Vec<u8> {
    let message = prost::Message::encode_to_vec(request);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// The pinned phase: servers as child processes on core 0, h2load on core 1.
fn pinned_phase(
    options: &Options,
    rt: &Handle,
    authorization: &AsciiMetadataValue,
    report: &mut Report,
) -> Result<(), String> {
    ensure_h2load()?;
    let dir = std::env::temp_dir().join(format!("wnology-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = pinned_scenarios(options, rt, authorization, report, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn pinned_scenarios(
    options: &Options,
    rt: &Handle,
    authorization: &AsciiMetadataValue,
    report: &mut Report,
    dir: &std::path::Path,
) -> Result<(), String> {
    use pinned::{Scenario, Target, gateway, spawn};
    let request = hit_request();
    let body = dir.join("request.bin");
    std::fs::write(&body, grpc_frame(&request)).map_err(|e| e.to_string())?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_wnology-gateway"));
    let sandbox_addr = pinned::free_port()?;
    let sandbox = spawn(
        "1",
        binary,
        &[
            "sandbox".into(),
            "--listen".into(),
            sandbox_addr.to_string(),
        ],
        &[],
        sandbox_addr,
        dir.join("sandbox.log"),
    )?;
    let url = format!("http://{sandbox_addr}");
    let bare_addr = pinned::free_port()?;
    let this = std::env::current_exe().map_err(|e| e.to_string())?;
    let bare = spawn(
        "0",
        &this,
        &[
            format!("--bare-serve={bare_addr}"),
            format!("--bare-upstream={url}"),
        ],
        &[],
        bare_addr,
        dir.join("bare.log"),
    )?;
    let (collector, spans) = pinned::otlp_receiver(rt);
    let otlp_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        (
            "OTEL_TRACES_SAMPLER",
            "parentbased_traceidratio".to_string(),
        ),
        ("OTEL_TRACES_SAMPLER_ARG", "0.01".to_string()),
    ];
    let defaults = gateway(&url, &[], &[], dir, "gateway-defaults")?;
    let no_log = gateway(
        &url,
        &["--access-log", "false"],
        &[],
        dir,
        "gateway-no-access-log",
    )?;
    let otlp = gateway(&url, &[], &otlp_env, dir, "gateway-otlp")?;
    for gw in [&defaults, &no_log, &otlp] {
        pinned::check_call(rt, gw.addr, authorization, request, false, Some("miss"))?;
        pinned::check_call(rt, gw.addr, authorization, request, false, Some("hit"))?;
    }
    pinned::check_call(
        rt,
        defaults.addr,
        authorization,
        request,
        true,
        Some("bypass"),
    )?;
    pinned::check_call(rt, bare.addr, authorization, request, false, None)?;

    let grpc = |addr: SocketAddr, no_store: bool| {
        let mut headers = vec![
            "content-type: application/grpc".to_string(),
            "te: trailers".to_string(),
            format!("authorization: Bearer {DEMO_TOKEN}"),
        ];
        if no_store {
            headers.push("cache-control: no-store".into());
        }
        Target {
            url: format!("http://{addr}/wnology.v1.MeService/PayloadCounts"),
            headers,
            body: Some(body.clone()),
            h1: false,
        }
    };
    let rest = Target {
        url: format!("{url}{}", payload_counts_path(&request)),
        headers: vec![
            "accept: application/json".into(),
            "accept-version: ^1.30.0".into(),
            format!("authorization: Bearer {DEMO_TOKEN}"),
        ],
        body: None,
        h1: true,
    };
    let (c, m) = (PINNED_CONNECTIONS, PINNED_STREAMS);
    let in_flight = c * m;
    let scenario = |name: String, target: Target, server, upstream, repin, c, m| Scenario {
        name,
        target,
        server,
        upstream,
        repin,
        connections: c,
        streams: m,
    };
    let loaded = [
        scenario(
            format!("P1. bare tonic, {in_flight} in flight"),
            grpc(bare.addr, false),
            &bare,
            None,
            None,
            c,
            m,
        ),
        scenario(
            format!("P2. hit, default flags (access log on), {in_flight} in flight"),
            grpc(defaults.addr, false),
            &defaults,
            None,
            None,
            c,
            m,
        ),
        scenario(
            format!("P3. hit, --access-log false, {in_flight} in flight"),
            grpc(no_log.addr, false),
            &no_log,
            None,
            None,
            c,
            m,
        ),
        scenario(
            format!("P4. hit, OTLP export, 1 % sampled, {in_flight} in flight"),
            grpc(otlp.addr, false),
            &otlp,
            None,
            None,
            c,
            m,
        ),
        scenario(
            format!("P5. miss (no-store), defaults, {in_flight} in flight"),
            grpc(defaults.addr, true),
            &defaults,
            Some(&sandbox),
            None,
            c,
            m,
        ),
        scenario(
            format!("P6. direct REST to the sandbox, {REST_CONNECTIONS} connections"),
            rest.clone(),
            &sandbox,
            None,
            Some(&sandbox),
            REST_CONNECTIONS,
            1,
        ),
    ];
    let metrics_before: Vec<String> = [&defaults, &no_log, &otlp]
        .iter()
        .map(|gw| pinned::metrics(rt, gw))
        .collect();
    let spans_before = spans();
    let tick = pinned::tick_us();
    let mut rows = pinned::interleaved(&loaded, options.rounds, options.slice, dir)?;
    let spans_exported = spans() - spans_before;
    // One call at a time, both runs cross cores the same way: h2load on core 1, the server
    // and the sandbox on core 0. On this kind of VM a wake-up across cores costs ~130 µs per
    // round trip (direct REST, 1 in flight: mean 58 µs with h2load and the sandbox on one
    // core, 190 µs across), which would otherwise be counted as the gateway's: what is left
    // is the gateway's own work and its loopback hop to the upstream.
    let latency = [
        scenario(
            "P7. direct REST to the sandbox, 1 in flight".into(),
            rest,
            &sandbox,
            None,
            Some(&sandbox),
            1,
            1,
        ),
        scenario(
            "P8. miss (no-store), defaults, 1 in flight".into(),
            grpc(defaults.addr, true),
            &defaults,
            Some(&sandbox),
            Some(&sandbox),
            1,
            1,
        ),
    ];
    rows.extend(pinned::interleaved(
        &latency,
        options.rounds,
        options.latency_slice,
        dir,
    )?);

    // Functional checks: every call answered, every RPC OK, the sampled share exported.
    for row in &rows {
        if row.failed > 0 || row.requests == 0 {
            report.failures.push(format!(
                "{}: {} of {} requests failed",
                row.name,
                row.failed,
                row.requests + row.failed
            ));
        }
    }
    let names = ["defaults", "--access-log false", "OTLP"];
    let mut dropped = 0.0;
    for (i, gw) in [&defaults, &no_log, &otlp].into_iter().enumerate() {
        let after = pinned::metrics(rt, gw);
        let count = |text: &str, labels: &[&str]| {
            metric_value(text, "wnology_gateway_rpc_requests_total", labels)
        };
        let not_ok = (count(&after, &[]) - count(&after, &["code=\"OK\""]))
            - (count(&metrics_before[i], &[]) - count(&metrics_before[i], &["code=\"OK\""]));
        if not_ok > 0.0 {
            report
                .failures
                .push(format!("gateway ({}): {not_ok} RPCs were not OK", names[i]));
        }
        if i == 0 {
            dropped = after
                .lines()
                .find_map(|l| l.strip_prefix("wnology_gateway_access_log_dropped_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN);
        }
    }
    let otlp_hits = rows[3].requests as f64;
    if otlp_hits > 10_000.0 && spans_exported == 0 {
        report
            .failures
            .push("OTLP gateway: no span exported at 1 % sampling".into());
    }
    let access_lines = std::fs::read_to_string(&defaults.log)
        .map(|log| {
            log.matches("\"target\":\"wnology_gateway::access\"")
                .count()
        })
        .unwrap_or(0);
    drop((defaults, no_log, otlp, bare, sandbox));

    println!(
        "## Pinned: the servers as child processes on core 0, h2load on core 1 (interleaved rounds merged)\n"
    );
    pinned::print_rows(&rows, tick);
    report.notes.push(format!(
        "\nPinned phase: {} rounds of {:.0} s per loaded scenario, {:.0} s per 1-in-flight scenario; h2load -c {c} -m {m} for gRPC (-c {REST_CONNECTIONS} --h1 for REST); \
         `server µs/req` is the serving process's utime+stime over the run / requests; `upstream µs/req` the sandbox's; `generator` h2load's CPU share of its core. \
         The sandbox sits on core 1 and moves to core 0 for P6, P7 and P8 (P8: beside the gateway). Default gateway: {access_lines} access-log lines in its log file, {dropped} dropped; OTLP gateway: {spans_exported} spans exported for {otlp_hits:.0} hits ({:.2} %).",
        options.rounds,
        options.slice.as_secs_f64(),
        options.latency_slice.as_secs_f64(),
        spans_exported as f64 * 100.0 / otlp_hits.max(1.0),
    ));

    let server = |i: usize| pinned::server_us(&rows[i], tick);
    let ratio = |i: usize| rows[i].rps() / rows[0].rps().max(1e-9);
    report.goal(
        "hit throughput >= 0.85x bare tonic, default flags (access log on)",
        format!(
            "{:.3}x ({:.0} / {:.0} req/s)",
            ratio(1),
            rows[1].rps(),
            rows[0].rps()
        ),
        Some(ratio(1) >= 0.85),
    );
    report.goal(
        "CPU per hit <= 1.15x bare tonic, default flags",
        format!(
            "{:.3}x ({:.2} / {:.2} µs)",
            server(1) / server(0),
            server(1),
            server(0)
        ),
        Some(server(1) / server(0) <= 1.15),
    );
    report.goal(
        "hit throughput >= 0.9x bare tonic, --access-log false",
        format!(
            "{:.3}x ({:.0} req/s; {:.2} µs CPU per hit)",
            ratio(2),
            rows[2].rps(),
            server(2)
        ),
        Some(ratio(2) >= 0.9),
    );
    report.goal(
        "hit throughput >= 0.8x bare tonic, OTLP export at 1 % sampling",
        format!(
            "{:.3}x ({:.0} req/s; {:.2} µs CPU per hit)",
            ratio(3),
            rows[3].rps(),
            server(3)
        ),
        Some(ratio(3) >= 0.8),
    );
    // The issue's 30 µs was set on a machine where bare tonic cost 12.4 µs per request: as a
    // ratio to the baseline measured here, so that the goal does not depend on the machine.
    let own = server(4);
    let own_ratio = own / server(0).max(1e-9);
    report.goal(
        "gateway's own CPU per miss <= 30 µs at the issue's 12.4 µs bare tonic, i.e. <= 2.42x bare tonic's CPU per request",
        format!(
            "{own:.1} µs = {own_ratio:.2}x bare ({:.1} µs) (sandbox: {:.1} µs per request behind the gateway, {:.1} µs per direct request)",
            server(0),
            rows[4].per_request_upstream(tick),
            server(5)
        ),
        Some(own_ratio <= 30.0 / 12.4),
    );
    // One call at a time, the added latency is the gateway's own work on the serving core (its
    // CPU per miss, one at a time, is most of it): scaled the same way as the miss CPU.
    let (direct_p50, miss_p50) = (rows[6].quantile(0.5), rows[7].quantile(0.5));
    let bound = 60.0 / 12.4 * server(0);
    report.goal(
        "miss added latency <= 60 µs at p50 at the issue's 12.4 µs bare tonic, i.e. <= 4.84x bare tonic's CPU per request (1 in flight, gateway miss − direct REST, same cores)",
        format!(
            "{:+.0} µs at p50 against {bound:.0} µs here ({miss_p50:.0} vs {direct_p50:.0} µs; p99 {:+.0} µs; the issue's absolute 60 µs: {})",
            miss_p50 - direct_p50,
            rows[7].quantile(0.99) - rows[6].quantile(0.99),
            if miss_p50 - direct_p50 <= 60.0 { "met" } else { "not met" },
        ),
        Some(miss_p50 - direct_p50 <= bound),
    );
    Ok(())
}
