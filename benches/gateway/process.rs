//! The real `wnology-gateway` binary (built by `cargo bench` in the bench profile) as a child
//! process, so that its memory is measured alone: the load generator and the upstream stay in
//! the bench process, and the gateway runs with the binary's own global allocator.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

/// The running binary; killed on drop.
pub struct GatewayProcess {
    child: Child,
    /// The gRPC listener.
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
}

impl GatewayProcess {
    /// Starts the binary against `upstream_url` with `extra` arguments and waits for its
    /// "serving" line.
    pub fn start(upstream_url: &str, extra: &[&str]) -> Result<GatewayProcess, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wnology-gateway"));
        command
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--upstream-url", upstream_url, "--log-format", "json"])
            .args(extra)
            // The access log is off: writing a line per call to a pipe would measure the pipe.
            .env("RUST_LOG", "info,wnology_gateway::access=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("WNOLOGY_") || name.starts_with("OTEL_") {
                command.env_remove(name.as_ref());
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the gateway binary: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (serving_tx, serving_rx) = mpsc::channel();
        // Reads stdout to the end so that the gateway never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addresses) = serving_addresses(&line) {
                    let _ = serving_tx.send(addresses);
                }
            }
        });
        match serving_rx.recv_timeout(Duration::from_secs(30)) {
            Ok((addr, admin)) => Ok(GatewayProcess { child, addr, admin }),
            Err(_) => {
                let _ = child.kill();
                Err("the gateway binary printed no \"serving\" line".into())
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
    pub fn status_bytes(&self, field: &str) -> Option<u64> {
        crate::status_kib_of(&format!("/proc/{}/status", self.child.id()), field).map(|k| k * 1024)
    }

    /// One value of the gateway's Prometheus exposition.
    pub async fn metric(&self, client: &reqwest::Client, name: &str) -> Option<f64> {
        let text = client
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .filter_map(|line| line.strip_prefix(name))
            .find_map(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serving_addresses(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let event: Value = serde_json::from_str(line).ok()?;
    let fields = event.get("fields").unwrap_or(&event);
    if fields.get("message")?.as_str()? != "wnology-gateway serving" {
        return None;
    }
    let address = |name: &str| fields.get(name)?.as_str()?.parse().ok();
    Some((address("listen")?, address("admin")?))
}
