//! The harness of the gateway's integration tests: the real gateway on an ephemeral loopback
//! port, generated tonic clients, the test token; and, re-exported, the gateway-independent
//! pieces of `wnology-testkit` (upstreams, OTLP collector, the binary launcher).
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use wnology_gateway::{
    config::Settings,
    gateway::Gateway,
    proto::{
        self, instance_org_service_client::InstanceOrgServiceClient,
        me_service_client::MeServiceClient, org_service_client::OrgServiceClient,
    },
    server::{self, ServeOptions},
    telemetry::Tracing,
};

pub(crate) use wnology_testkit::{
    Answer, RecordingUpstream, binary, faults, isolation::in_own_process, otlp, redis::RedisServer,
};

/// The gateway binary cargo built for these tests.
pub(crate) fn gateway_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wnology-gateway"))
}

/// The token the tests send.
pub(crate) const TOKEN: &str = "test-token-7f3a";

/// The real gateway, serving on an ephemeral loopback port.
pub(crate) struct TestGateway {
    pub addr: SocketAddr,
    /// The gateway's shared state (its cache, for the figures).
    pub gateway: Gateway,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServeError>>>,
}

impl TestGateway {
    /// Starts the gateway against `upstream_url` with default settings.
    pub(crate) async fn start(upstream_url: &str) -> TestGateway {
        Self::start_with(Settings::for_upstream(upstream_url)).await
    }

    /// Starts the gateway with `settings` (its `listen` is replaced by an ephemeral port).
    pub(crate) async fn start_with(settings: Settings) -> TestGateway {
        Self::start_traced(settings, Tracing::off()).await
    }

    /// Starts the gateway with `settings`, tracing its calls as `tracing` says (the
    /// `Telemetry` the test installed).
    pub(crate) async fn start_traced(mut settings: Settings, tracing: Tracing) -> TestGateway {
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = server::bind(&settings).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let gateway = Gateway::with_tracing(&settings, tracing).unwrap();
        let serving = gateway.clone();
        let task = tokio::spawn(async move {
            server::serve_with(
                serving,
                &ServeOptions::from_settings(&settings),
                listener,
                async {
                    let _ = rx.await;
                },
            )
            .await
        });
        TestGateway {
            addr,
            gateway,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    pub(crate) async fn me(&self) -> MeServiceClient<Channel> {
        MeServiceClient::new(self.channel().await)
    }

    pub(crate) async fn org(&self) -> OrgServiceClient<Channel> {
        OrgServiceClient::new(self.channel().await)
    }

    pub(crate) async fn instance_org(&self) -> InstanceOrgServiceClient<Channel> {
        InstanceOrgServiceClient::new(self.channel().await)
    }

    /// Stops the gateway and waits for it.
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A request carrying `authorization: Bearer TOKEN`.
pub(crate) fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(message, TOKEN)
}

/// `OrgService/Get` of organization `id(n)` with the test token, on a task of its own (for
/// calls that must be in flight together).
pub(crate) fn spawn_org_get(
    client: &OrgServiceClient<Channel>,
    n: u32,
) -> JoinHandle<Result<tonic::Response<proto::Org>, tonic::Status>> {
    let mut org = client.clone();
    tokio::spawn(async move {
        org.get(authed(proto::OrgGetRequest {
            org_id: id(n),
            ..Default::default()
        }))
        .await
    })
}

/// A request carrying `authorization: Bearer <token>`.
pub(crate) fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A valid 24-hex id, distinct per `n`.
pub(crate) fn id(n: u32) -> String {
    format!("{n:024x}")
}

/// A channel to a gateway listening on `addr` (plaintext, connected before returning).
pub(crate) async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

/// The cache secret [`Replicas`] share.
pub(crate) const REPLICAS_SECRET: &str = "Qz8v1Lm4Tx9Wc2Rb7Ka0Yp5Hn3Jd6Fs-replicas-test-secret";

/// Several gateway processes sharing one `redis-server` (the shared cache tier, the rate
/// limit) against one upstream, all on loopback. Every process is stopped by its PID when
/// this is dropped (the handles' `Drop`), and the secret file is removed.
pub(crate) struct Replicas {
    /// The Redis they share.
    pub redis: RedisServer,
    /// The gateway processes, in start order.
    pub binaries: Vec<binary::GatewayBinary>,
    secret_file: PathBuf,
}

impl Replicas {
    /// Starts `count` replicas against `upstream_url`, with the shared tier on a fresh
    /// `redis-server` and `args` added, and waits until each one's invalidation feed is live.
    pub(crate) async fn start(count: usize, upstream_url: &str, args: &[&str]) -> Replicas {
        let redis = RedisServer::start();
        let secret_file = std::env::temp_dir().join(format!(
            "wg-replicas-{}-{}.secret",
            std::process::id(),
            redis.port()
        ));
        std::fs::write(&secret_file, REPLICAS_SECRET).unwrap();
        let (url, secret) = (redis.url(), secret_file.to_string_lossy().into_owned());
        let mut all = vec![
            "--cache-redis-url",
            url.as_str(),
            "--cache-secret-file",
            secret.as_str(),
            // Generous: several gateways and the test share two loaded cores.
            "--cache-redis-timeout",
            "1s",
        ];
        all.extend_from_slice(args);
        let binaries = (0..count)
            .map(|_| binary::GatewayBinary::start(gateway_binary(), upstream_url, &all, &[]))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let replicas = Replicas {
            redis,
            binaries,
            secret_file,
        };
        for replica in 0..count {
            replicas
                .wait_for_metric(replica, "wnology_gateway_shared_cache_feed_trusted 1")
                .await;
        }
        replicas
    }

    /// A channel to replica `replica`.
    pub(crate) async fn channel(&self, replica: usize) -> Channel {
        connect(self.binaries[replica].addr).await
    }

    /// Replica `replica`'s `/metrics` text.
    pub(crate) async fn metrics(&self, replica: usize) -> String {
        admin_get(self.binaries[replica].admin, "/metrics").await
    }

    /// The value of replica `replica`'s metric line that starts with `series` (0 when absent).
    pub(crate) async fn metric(&self, replica: usize, series: &str) -> u64 {
        self.metrics(replica)
            .await
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{series} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (at most 30 s) until replica `replica` exports the metric line `line`.
    pub(crate) async fn wait_for_metric(&self, replica: usize, line: &str) {
        let started = Instant::now();
        while !self.metrics(replica).await.contains(&format!("{line}\n")) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {replica} never exported {line}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.secret_file);
    }
}

/// A plain HTTP/1.1 GET on an admin listener: the whole response, head and body.
pub(crate) async fn admin_get(admin: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}
