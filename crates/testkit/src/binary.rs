//! The real `wnology-gateway` binary as a child process, configured only by its command line
//! (and the variables given), with JSON logs read to the end and kept. Shared by the tests that
//! need the process itself (`graceful_shutdown`, `access_log`) and by the benchmark's RSS phase.
//!
//! The caller names the binary: `env!("CARGO_BIN_EXE_wnology-gateway")` exists only while
//! cargo builds the gateway's own integration tests and benchmarks, and taking the path keeps
//! this crate free of a dependency on the gateway (it builds in parallel with it, and a change
//! to the gateway does not rebuild it).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use serde_json::Value;

/// The binary, running; killed on drop whatever happened.
pub struct GatewayBinary {
    child: Child,
    /// The gRPC listener.
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`).
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl GatewayBinary {
    /// Starts the gateway binary `program` against `upstream_url` on ephemeral loopback ports,
    /// with `args` added and `env` set (nothing else from the environment configures it), and
    /// waits for its "serving" log line.
    pub fn start(
        program: &Path,
        upstream_url: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<GatewayBinary, String> {
        let mut command = Command::new(program);
        command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--upstream-url", upstream_url, "--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        crate::process::clear_settings_env(&mut command);
        command.envs(env.iter().copied());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the gateway binary: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (serving_tx, serving_rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        // Reads stdout to the end, so that the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addresses) = serving_addresses(&line) {
                    let _ = serving_tx.send(addresses);
                }
                if let Ok(mut lines) = lines.lock() {
                    lines.push(line);
                }
            }
        });
        let serving = serving_rx.recv_timeout(Duration::from_secs(30));
        let mut gateway = GatewayBinary {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match serving {
            Ok((addr, admin)) => {
                gateway.addr = addr;
                gateway.admin = admin;
                Ok(gateway)
            }
            Err(_) => Err(format!(
                "no \"wnology-gateway serving\" line; stdout: {:#?}",
                gateway.log()
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line the binary has printed so far.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }

    /// Whether a printed line contains `message`.
    pub fn logged(&self, message: &str) -> bool {
        self.log().iter().any(|line| line.contains(message))
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for GatewayBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gRPC and admin addresses of a JSON log line "wnology-gateway serving".
fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let event: Value = serde_json::from_str(line).ok()?;
    let fields = event.get("fields").unwrap_or(&event);
    if fields.get("message")?.as_str()? != "wnology-gateway serving" {
        return None;
    }
    let address = |name: &str| fields.get(name)?.as_str()?.parse().ok();
    Some((address("listen")?, address("admin")?))
}
