//! The gRPC server: the three services (behind load shedding), health and reflection on one
//! listener, with its limits, optional TLS, gRPC-Web (`crate::web`) and the graceful shutdown
//! sequence.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Notify};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    config::Settings,
    gateway::BuildError,
    gateway::Gateway,
    overload::ConcurrencyBudget,
    proto::{
        self, instance_org_service_server::InstanceOrgServiceServer,
        me_service_server::MeServiceServer, org_service_server::OrgServiceServer,
    },
    services::{InstanceOrgHandler, MeHandler, OrgHandler},
    web::{WebError, WebLayer, WebOptions},
};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The settings are unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The reflection service could not read the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC-Web settings are unusable.
    #[error(transparent)]
    Web(#[from] WebError),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A TLS file could not be read.
    #[error("cannot read {path}: {source}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Server-level settings: limits, TLS and the shutdown sequence.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `--max-concurrency` (0: no limit).
    pub max_concurrency: usize,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-header-bytes`.
    pub max_header_bytes: u32,
    /// `--max-connection-age` (zero: none).
    pub max_connection_age: Duration,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`.
    pub tls: Option<TlsFiles>,
    /// `--drain-delay`.
    pub drain_delay: Duration,
    /// `--shutdown-grace`.
    pub shutdown_grace: Duration,
    /// `--grpc-web`, `--cors-allowed-origins`.
    pub web: WebOptions,
}

/// PEM files for TLS on the gRPC listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// CA bundle for client certificates (mutual TLS), if required.
    pub client_ca: Option<PathBuf>,
}

impl ServeOptions {
    /// The options the settings describe.
    pub fn from_settings(settings: &Settings) -> ServeOptions {
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: settings.tls_client_ca.clone(),
            }),
            _ => None,
        };
        ServeOptions {
            max_concurrency: settings.max_concurrency,
            max_request_bytes: settings.max_request_bytes,
            max_header_bytes: settings.max_header_bytes,
            max_connection_age: settings.max_connection_age,
            tls,
            drain_delay: settings.drain_delay,
            shutdown_grace: settings.shutdown_grace,
            web: WebOptions {
                enabled: settings.grpc_web,
                allowed_origins: settings.cors_allowed_origins.clone(),
                max_header_bytes: settings.max_header_bytes,
            },
        }
    }
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions::from_settings(&Settings::for_upstream("http://127.0.0.1"))
    }
}

/// Serves the gateway on `listener` until `shutdown` completes.
pub async fn serve(
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(
        Gateway::new(settings)?,
        &ServeOptions::from_settings(settings),
        listener,
        shutdown,
    )
    .await
}

/// Serves an already built `gateway` with default server options.
pub async fn serve_gateway(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(gateway, &ServeOptions::default(), listener, shutdown).await
}

/// Serves `gateway` on `listener`. When `shutdown` completes: health turns NOT_SERVING while
/// calls are still served for the drain delay (so endpoints and load balancers move away),
/// then new connections are refused and calls in flight get the shutdown grace to finish.
pub async fn serve_with(
    gateway: Gateway,
    options: &ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in SERVED {
        health
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        REFLECTED.iter().fold(
            tonic_reflection::server::Builder::configure(),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let budget = ConcurrencyBudget::new(options.max_concurrency);
    let limit = options.max_request_bytes;
    let me = MeServiceServer::new(MeHandler(gateway.clone())).max_decoding_message_size(limit);
    let org = OrgServiceServer::new(OrgHandler(gateway.clone())).max_decoding_message_size(limit);
    let instance_org =
        InstanceOrgServiceServer::new(InstanceOrgHandler(gateway)).max_decoding_message_size(limit);

    let web = WebLayer::new(&options.web)?;
    let mut server = Server::builder()
        .http2_max_header_list_size(options.max_header_bytes)
        .accept_http1(web.enabled());
    if !options.max_connection_age.is_zero() {
        // No `max_connection_age_grace`: in tonic 0.14 it replaces the GOAWAY at the age with a
        // hard cut at age + grace, failing the calls in flight.
        server = server.max_connection_age(options.max_connection_age);
    }
    if let Some(tls) = &options.tls {
        server = server.tls_config(tls_config(tls)?)?;
    }

    let drained = Arc::new(Notify::new());
    let stop = {
        let (drained, drain_delay) = (Arc::clone(&drained), options.drain_delay);
        async move {
            shutdown.await;
            for service in SERVED {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            tracing::info!(
                drain_delay_ms = drain_delay.as_millis() as u64,
                "draining: health is NOT_SERVING"
            );
            tokio::time::sleep(drain_delay).await;
            tracing::info!("refusing new connections; finishing calls in flight");
            drained.notify_one();
        }
    };
    let serving = server
        .layer(web)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(budget.shed(me))
        .add_service(budget.shed(org))
        .add_service(budget.shed(instance_org))
        .serve_with_incoming_shutdown(incoming(listener), stop);
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => result?,
        () = drained.notified() => match tokio::time::timeout(options.shutdown_grace, serving).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                grace_ms = options.shutdown_grace.as_millis() as u64,
                "shutdown grace expired: closing with calls still in flight"
            ),
        },
    }
    Ok(())
}

/// The descriptor sets reflection serves: the contract, health, both reflection versions (each
/// version otherwise lists only itself, and grpcurl asks v1alpha), and `google.rpc.Status` with
/// the error details, so that tools decode `grpc-status-details-bin`.
const REFLECTED: [&[u8]; 5] = [
    proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    proto::GOOGLE_RPC_DESCRIPTOR_SET,
];

/// The names the health service reports: overall and each gateway service.
const SERVED: [&str; 4] = [
    "",
    proto::me_service_server::SERVICE_NAME,
    proto::org_service_server::SERVICE_NAME,
    proto::instance_org_service_server::SERVICE_NAME,
];

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| ServeError::Tls {
            path: path.clone(),
            source,
        })
    };
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

/// Binds `settings.listen`.
pub async fn bind(settings: &Settings) -> Result<TcpListener, ServeError> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })
}

/// Accepted connections, with Nagle's algorithm off (unary RPCs are latency-bound: a response
/// split across writes must not wait for a delayed ACK) and TCP keep-alive on.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)))
}
