//! The harness of the gateway's integration tests: the real gateway on an ephemeral loopback
//! port, generated tonic clients, the test token; and, re-exported, the gateway-independent
//! pieces of `wnology-testkit` (upstreams, OTLP collector, the binary launcher).
#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, time::Duration};

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
    Answer, RecordingUpstream, binary, faults, isolation::in_own_process, otlp,
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
