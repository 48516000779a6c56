//! The pinned phase: the servers as users run them. Every server under test is a child process
//! pinned to core 0 (`taskset -c 0`): bare tonic (this bench executable re-run with
//! `--bare-serve`), the release `wnology-gateway` with its default flags (stdout to a file),
//! with `--access-log false`, and with OTLP export at 1 % sampling to a loopback receiver; the
//! standalone sandbox (`wnology-gateway sandbox`) is the upstream on core 1. The load generator
//! is h2load (Debian `nghttp2-client`) pinned to core 1, with a per-request log from which the
//! exact percentiles are read. Server CPU per request is the process's utime + stime
//! (`/proc/PID/stat`) over the run divided by the requests; the generator's CPU share is its
//! own (the bench's children's) CPU time over the run's wall time.

// The OTLP receiver the tests use.
use wnology_testkit::otlp;

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::runtime::Handle;
use tonic::{Request, metadata::AsciiMetadataValue};
use wnology_gateway::proto::{MePayloadCountsRequest, me_service_client::MeServiceClient};

/// One measured scenario, merged over its rounds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub name: String,
    pub requests: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Per-request latencies, µs.
    pub latencies: Vec<u32>,
    pub server_ticks: u64,
    pub upstream_ticks: Option<u64>,
    pub generator_ticks: u64,
}

impl Row {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// The `q` quantile of the latencies, µs (they are sorted once merged).
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let at = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        f64::from(self.latencies[at - 1])
    }

    /// The upstream's CPU per request, µs (0 without an upstream).
    pub(crate) fn per_request_upstream(&self, tick_us: f64) -> f64 {
        self.per_request(self.upstream_ticks.unwrap_or(0), tick_us)
    }

    fn per_request(&self, ticks: u64, tick_us: f64) -> f64 {
        ticks as f64 * tick_us / self.requests.max(1) as f64
    }
}

/// A child process, killed (by its PID) and reaped on drop.
pub(crate) struct Proc {
    child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the process (all its threads, live and gone), in clock ticks.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
        field(11) + field(12)
    }

    /// Moves every thread of the process to `core`.
    pub(crate) fn pin(&self, core: &str) -> Result<(), String> {
        let status = Command::new("taskset")
            .args(["-a", "-p", "-c", core, &self.pid().to_string()])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("taskset: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("taskset -p {core} failed: {status}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) use wnology_testkit::process::free_port;

/// Starts `program args` pinned to `core`, stdout and stderr to `log`, with only `env` of the
/// settings variables, and waits until `addr` accepts connections.
pub(crate) fn spawn(
    core: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    addr: SocketAddr,
    log: PathBuf,
) -> Result<Proc, String> {
    let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("log: {e}"))?;
    let mut command = Command::new("taskset");
    command
        .arg("-c")
        .arg(core)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("WNOLOGY_") || name.starts_with("OTEL_") || name == "RUST_LOG" {
            command.env_remove(name.as_ref());
        }
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    // taskset execs the program: the child's PID is the server's.
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let mut proc = Proc {
        child,
        addr,
        admin: None,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline || proc.child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(&proc.log).unwrap_or_default();
            return Err(format!(
                "{} did not listen on {addr}; its output:\n{log}",
                program.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.admin = None;
    Ok(proc)
}

/// The gateway binary with `args` on a free port, pinned to core 0.
pub(crate) fn gateway(
    upstream: &str,
    args: &[&str],
    env: &[(&str, String)],
    dir: &Path,
    name: &str,
) -> Result<Proc, String> {
    let (addr, admin) = (free_port()?, free_port()?);
    let mut all: Vec<String> = vec![
        "--listen".into(),
        addr.to_string(),
        "--admin-listen".into(),
        admin.to_string(),
        "--upstream-url".into(),
        upstream.into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let binary = Path::new(env!("CARGO_BIN_EXE_wnology-gateway"));
    let mut proc = spawn(
        "0",
        binary,
        &all,
        env,
        addr,
        dir.join(format!("{name}.log")),
    )?;
    proc.admin = Some(admin);
    Ok(proc)
}

/// What h2load sends.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub url: String,
    pub headers: Vec<String>,
    pub body: Option<PathBuf>,
    pub h1: bool,
}

/// One h2load run's figures.
struct H2Run {
    requests: u64,
    failed: u64,
    seconds: f64,
    latencies: Vec<u32>,
    generator_ticks: u64,
}

/// The bench's children's CPU time so far (cutime + cstime), in ticks.
fn children_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(13) + field(14)
}

fn h2load(
    target: &Target,
    connections: usize,
    streams: usize,
    duration: Duration,
    log: &Path,
) -> Result<H2Run, String> {
    let mut command = Command::new("taskset");
    command
        .args(["-c", "1", "h2load"])
        .args(["-c", &connections.to_string(), "-m", &streams.to_string()])
        .args([
            "-D",
            &format!("{:.0}", duration.as_secs_f64().ceil().max(1.0)),
        ])
        .arg(format!("--log-file={}", log.display()));
    if target.h1 {
        command.arg("--h1");
    }
    for header in &target.headers {
        command.args(["-H", header]);
    }
    if let Some(body) = &target.body {
        command.arg("-d").arg(body);
    }
    command.arg(&target.url).stdin(Stdio::null());
    let before = children_ticks();
    let started = Instant::now();
    let output = command.output().map_err(|e| format!("h2load: {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    let generator_ticks = children_ticks().saturating_sub(before);
    let text = String::from_utf8_lossy(&output.stdout);
    let number = |prefix: &str, suffix: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        let rest = line.split_once(prefix)?.1;
        let value = rest.split_once(suffix)?.0.trim();
        value.parse().ok()
    };
    let succeeded = number("requests:", " total").and_then(|_| {
        let line = text.lines().find(|l| l.starts_with("requests:"))?;
        line.split(',')
            .find_map(|part| part.trim().strip_suffix(" succeeded")?.parse::<f64>().ok())
    });
    let Some(succeeded) = succeeded else {
        return Err(format!(
            "h2load printed no request counts: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    let total = number("requests:", " total").unwrap_or(succeeded);
    let latencies: Vec<u32> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    let _ = std::fs::remove_file(log);
    let seconds = number("finished in", "s,").unwrap_or(wall);
    Ok(H2Run {
        requests: succeeded as u64,
        failed: (total - succeeded).max(0.0) as u64,
        seconds,
        latencies,
        generator_ticks,
    })
}

/// A scenario: where h2load sends, which process serves it, and which one is its upstream.
pub(crate) struct Scenario<'a> {
    pub name: String,
    pub target: Target,
    pub server: &'a Proc,
    pub upstream: Option<&'a Proc>,
    /// A process moved to core 0 for the run (the sandbox, which otherwise sits on core 1).
    pub repin: Option<&'a Proc>,
    pub connections: usize,
    pub streams: usize,
}

/// Runs each scenario `rounds` times, in interleaved order (forwards, then backwards, …), for
/// `slice` each, and merges each one's runs.
pub(crate) fn interleaved(
    scenarios: &[Scenario<'_>],
    rounds: usize,
    slice: Duration,
    dir: &Path,
) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = scenarios
        .iter()
        .map(|s| Row {
            name: s.name.clone(),
            upstream_ticks: s.upstream.map(|_| 0),
            ..Row::default()
        })
        .collect();
    // A short run of each first: connections, caches and allocators warm.
    for scenario in scenarios {
        measure(scenario, Duration::from_secs(1), dir)?;
    }
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..scenarios.len()).collect()
        } else {
            (0..scenarios.len()).rev().collect()
        };
        for i in order {
            let (run, server, upstream) = measure(&scenarios[i], slice, dir)?;
            let row = &mut rows[i];
            row.requests += run.requests;
            row.failed += run.failed;
            row.seconds += run.seconds;
            row.latencies.extend(run.latencies);
            row.server_ticks += server;
            row.generator_ticks += run.generator_ticks;
            if let Some(ticks) = &mut row.upstream_ticks {
                *ticks += upstream;
            }
        }
    }
    for row in &mut rows {
        row.latencies.sort_unstable();
    }
    Ok(rows)
}

fn measure(
    scenario: &Scenario<'_>,
    slice: Duration,
    dir: &Path,
) -> Result<(H2Run, u64, u64), String> {
    if let Some(moved) = scenario.repin {
        moved.pin("0")?;
    }
    let (server0, upstream0) = (
        scenario.server.cpu_ticks(),
        scenario.upstream.map_or(0, Proc::cpu_ticks),
    );
    let run = h2load(
        &scenario.target,
        scenario.connections,
        scenario.streams,
        slice,
        &dir.join("h2load-requests.log"),
    );
    let server = scenario.server.cpu_ticks().saturating_sub(server0);
    let upstream = scenario
        .upstream
        .map_or(0, Proc::cpu_ticks)
        .saturating_sub(upstream0);
    if let Some(moved) = scenario.repin {
        moved.pin("1")?;
    }
    Ok((
        run.map_err(|e| format!("{}: {e}", scenario.name))?,
        server,
        upstream,
    ))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub(crate) fn tick_us() -> f64 {
    let ticks = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    1e6 / ticks
}

/// Prints the table of `rows`.
pub(crate) fn print_rows(rows: &[Row], tick_us: f64) {
    println!(
        "| {:<52} | {:>8} | {:>7} | {:>7} | {:>8} | {:>13} | {:>15} | {:>9} | {:>8} | {:>6} |",
        "scenario",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "server µs/req",
        "upstream µs/req",
        "generator",
        "requests",
        "failed"
    );
    println!(
        "|{:-<54}|{:->10}|{:->9}|{:->9}|{:->10}|{:->15}|{:->17}|{:->11}|{:->10}|{:->8}|",
        "", "", "", "", "", "", "", "", "", ""
    );
    for row in rows {
        let upstream = row.upstream_ticks.map_or("–".to_string(), |t| {
            format!("{:.1}", row.per_request(t, tick_us))
        });
        println!(
            "| {:<52} | {:>8.0} | {:>7.0} | {:>7.0} | {:>8.0} | {:>13.2} | {:>15} | {:>8.0} % | {:>8} | {:>6} |",
            row.name,
            row.rps(),
            row.quantile(0.5),
            row.quantile(0.99),
            row.quantile(0.999),
            row.per_request(row.server_ticks, tick_us),
            upstream,
            row.generator_ticks as f64 * tick_us / 1e6 / row.seconds.max(1e-9) * 100.0,
            row.requests,
            row.failed
        );
    }
}

/// Server CPU per request of `row`, µs.
pub(crate) fn server_us(row: &Row, tick_us: f64) -> f64 {
    row.per_request(row.server_ticks, tick_us)
}

/// One gRPC call through `addr` that must answer with `x-cache: expected` (or none).
pub(crate) fn check_call(
    rt: &Handle,
    addr: SocketAddr,
    authorization: &AsciiMetadataValue,
    request: MePayloadCountsRequest,
    no_store: bool,
    expected: Option<&str>,
) -> Result<(), String> {
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let mut client = MeServiceClient::new(channel);
        let mut call = Request::new(request);
        call.metadata_mut()
            .insert("authorization", authorization.clone());
        if no_store {
            call.metadata_mut()
                .insert("cache-control", AsciiMetadataValue::from_static("no-store"));
        }
        let response = client
            .payload_counts(call)
            .await
            .map_err(|s| format!("{addr}: {:?}: {}", s.code(), s.message()))?;
        let got = response
            .metadata()
            .get("x-cache")
            .and_then(|v| v.to_str().ok());
        if got != expected {
            return Err(format!("{addr}: x-cache {got:?}, expected {expected:?}"));
        }
        Ok(())
    })
}

/// The gateway's `/metrics` text.
pub(crate) fn metrics(rt: &Handle, proc: &Proc) -> String {
    let Some(admin) = proc.admin else {
        return String::new();
    };
    rt.block_on(async {
        let response = reqwest::get(format!("http://{admin}/metrics")).await.ok()?;
        response.text().await.ok()
    })
    .unwrap_or_default()
}

/// Starts a loopback OTLP/gRPC receiver on `rt`; the spans it received are counted by the
/// returned closure.
pub(crate) fn otlp_receiver(rt: &Handle) -> (SocketAddr, impl Fn() -> usize) {
    let (addr, received) = rt.block_on(otlp::grpc_receiver());
    (addr, move || received.spans().len())
}
