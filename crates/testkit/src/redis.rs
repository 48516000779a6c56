//! Real `redis-server` processes for tests, on free loopback ports: a standalone server, a
//! three-node Cluster, and stop/restart of one node (outages). Standalone (std only): every
//! process is stopped by its PID when its handle is dropped. Needs `redis-server` and
//! `redis-cli` on `PATH` (Debian package `redis-server`).

#![allow(dead_code)]

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

/// How long a server gets to start answering.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How many fresh ports a server tries when the one it was given was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A free loopback port (bound once, then released: see [`crate::process::free_port`]).
fn free_port() -> u16 {
    crate::process::free_port()
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a standalone server (no persistence) on a free loopback port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with `extra` arguments (e.g. `--cluster-enabled yes`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 1..PORT_ATTEMPTS {
            if let Some(server) = RedisServer::try_start(extra) {
                return server;
            }
        }
        RedisServer::try_start(extra).expect("redis-server binds one of five free ports")
    }

    /// Starts a server on a fresh free port; `None` when another process took the port before
    /// the server could bind it.
    fn try_start(extra: &[&str]) -> Option<RedisServer> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wg-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.try_spawn().then_some(server)
    }

    /// Starts the process and waits until it answers; panics when it does not within
    /// [`READY_WITHIN`] (a restart on the same port must not silently move).
    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server could not bind port {}",
            self.port
        );
    }

    /// Starts the process and waits until it answers PING; `false` when it exited first
    /// (its port was taken).
    fn try_spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (apt-get install -y redis-server)");
        self.child = Some(child);
        let started = Instant::now();
        while self.command(&[b"PING"]).as_deref() != Some(b"+PONG\r\n") {
            if self.exited() {
                self.child = None;
                return false;
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "redis-server on port {} is not ready",
                self.port
            );
            sleep(Duration::from_millis(20));
        }
        // A server that exited while another one answered on its port is not ours.
        !self.exited()
    }

    /// Whether the process has exited (reaped if so).
    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_)) | Err(_)))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server (SIGKILL to its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("nodes.conf"));
        self.spawn();
    }

    /// Sends one command (RESP) and returns the raw reply bytes, or `None` when the server
    /// does not answer. Enough for PING, KEYS, HGETALL and the like in tests.
    pub fn command(&self, args: &[&[u8]]) -> Option<Vec<u8>> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&request).ok()?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 65536];
        // Read until the reply parses as complete (no partial reads of big replies).
        loop {
            let n = stream.read(&mut buffer).ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..n]);
            if complete(&reply).is_some() {
                break;
            }
        }
        (!reply.is_empty()).then_some(reply)
    }
}

/// The end offset of the first complete RESP2 value in `bytes`, if it is complete.
fn complete(bytes: &[u8]) -> Option<usize> {
    fn line(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = bytes[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&bytes[at..end], end + 2))
    }
    fn value(bytes: &[u8], at: usize) -> Option<usize> {
        let kind = *bytes.get(at)?;
        let (text, next) = line(bytes, at + 1)?;
        let number = || std::str::from_utf8(text).ok()?.parse::<i64>().ok();
        match kind {
            b'+' | b'-' | b':' => Some(next),
            b'$' => {
                let len = number()?;
                if len < 0 {
                    return Some(next);
                }
                let end = next + len as usize + 2;
                (bytes.len() >= end).then_some(end)
            }
            b'*' => {
                let mut at = next;
                for _ in 0..number()?.max(0) {
                    at = value(bytes, at)?;
                }
                Some(at)
            }
            _ => None,
        }
    }
    value(bytes, 0)
}

/// The bulk strings of a RESP2 array reply (e.g. of `KEYS *` or `HGETALL`).
pub fn bulk_strings(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(start) = reply[at..].iter().position(|&b| b == b'$').map(|p| p + at) {
        let Some(end) = reply[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| p + start)
        else {
            break;
        };
        let Ok(len) = std::str::from_utf8(&reply[start + 1..end])
            .unwrap_or("")
            .parse::<usize>()
        else {
            at = end;
            continue;
        };
        let body = end + 2;
        if body + len > reply.len() {
            break;
        }
        out.push(reply[body..body + len].to_vec());
        at = body + len + 2;
    }
    out
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled yes` servers and joins them with `redis-cli --cluster
    /// create`; returns once every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        let started = Instant::now();
        for node in &nodes {
            loop {
                let info = node.command(&[b"CLUSTER", b"INFO"]).unwrap_or_default();
                if info.windows(16).any(|w| w == b"cluster_state:ok") {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the cluster did not form"
                );
                sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// The URL of the first node.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}
