//! The gRPC server: the three services (each behind the request guard), health and reflection
//! on one listener, with its limits, optional TLS and the graceful shutdown sequence.
//!
//! - [`guard`]: what a caller sends is checked while it arrives (content type, read timeout,
//!   message size, one message per unary call).
//! - [`connection`]: the accept loop and each connection's HTTP/2 limits, keepalive, age and
//!   idle limits.
//! - [`tls`]: TLS and mutual TLS.
//! - gRPC-Web and CORS for browsers ([`crate::web`]) wrap the whole set of services.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Notify};
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Layer;

use crate::{
    config::Settings,
    gateway::BuildError,
    gateway::Gateway,
    proto::{
        self, instance_org_service_server::InstanceOrgServiceServer,
        me_service_server::MeServiceServer, org_service_server::OrgServiceServer,
    },
    services::{InstanceOrgHandler, MeHandler, OrgHandler},
    web::{WebError, WebLayer, WebOptions},
};

pub mod connection;
pub mod guard;
mod tls;

use connection::ConnectionLimits;
use guard::{GuardLimits, Guarded};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The settings are unusable.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The reflection service could not read the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS files do not make a usable configuration (not PEM, key does not match, …).
    #[error("TLS: {0}")]
    TlsConfig(String),
    /// The gRPC-Web settings are unusable.
    #[error(transparent)]
    Web(#[from] WebError),
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
    /// What each request must meet while it arrives.
    pub guard: GuardLimits,
    /// How connections are served.
    pub connections: ConnectionLimits,
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
        let nonzero = |duration: Duration| (!duration.is_zero()).then_some(duration);
        ServeOptions {
            guard: GuardLimits {
                read_timeout: settings.request_read_timeout,
                max_message_bytes: settings.max_request_bytes,
            },
            connections: ConnectionLimits {
                max_concurrent_streams: settings.max_concurrent_streams,
                max_header_bytes: settings.max_header_bytes,
                keepalive_interval: nonzero(settings.keepalive_interval),
                keepalive_timeout: settings.keepalive_timeout,
                max_age: nonzero(settings.max_connection_age),
                max_idle: nonzero(settings.max_connection_idle),
                // gRPC-Web from browsers may come over HTTP/1.1.
                http1: settings.grpc_web,
            },
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
    set_health(&health, ServingStatus::Serving).await;
    let tls = match &options.tls {
        Some(files) => Some(tls::acceptor(files, options.connections.http1)?),
        None => None,
    };
    let routes = with_services(Routes::new(health_service), &gateway, &options.guard)?;
    let web = WebLayer::new(&options.web)?;
    let drained = Arc::new(Notify::new());
    let stop = drain(health, shutdown, options.drain_delay, Arc::clone(&drained));
    let serving = connection::serve(
        listener,
        tls,
        web.layer(routes),
        options.connections.clone(),
        stop,
    );
    tokio::pin!(serving);
    tokio::select! {
        () = &mut serving => {}
        () = drained.notified() => match tokio::time::timeout(options.shutdown_grace, serving).await {
            Ok(()) => {}
            Err(_) => tracing::warn!(
                grace_ms = options.shutdown_grace.as_millis() as u64,
                "shutdown grace expired: closing with calls still in flight"
            ),
        },
    }
    Ok(())
}

/// `routes` (health) with reflection and the three gateway services, each behind the request
/// guard.
fn with_services(
    routes: Routes,
    gateway: &Gateway,
    guard: &GuardLimits,
) -> Result<Routes, ServeError> {
    let reflection = || {
        REFLECTED.iter().fold(
            tonic_reflection::server::Builder::configure(),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        )
    };
    // tonic's own limit stays as a backstop; the guard refuses a long message at its prefix.
    let limit = guard.max_message_bytes;
    let metrics = gateway.metrics();
    let me = MeServiceServer::new(MeHandler(gateway.clone())).max_decoding_message_size(limit);
    let org = OrgServiceServer::new(OrgHandler(gateway.clone())).max_decoding_message_size(limit);
    let instance_org = InstanceOrgServiceServer::new(InstanceOrgHandler(gateway.clone()))
        .max_decoding_message_size(limit);
    Ok(routes
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(Guarded::new(me, guard.clone(), Arc::clone(metrics)))
        .add_service(Guarded::new(org, guard.clone(), Arc::clone(metrics)))
        .add_service(Guarded::new(
            instance_org,
            guard.clone(),
            Arc::clone(metrics),
        ))
        .prepare())
}

/// Once `shutdown` completes: health NOT_SERVING, the drain delay, then `drained` is told.
async fn drain(
    health: HealthReporter,
    shutdown: impl Future<Output = ()>,
    drain_delay: Duration,
    drained: Arc<Notify>,
) {
    shutdown.await;
    set_health(&health, ServingStatus::NotServing).await;
    tracing::info!(
        drain_delay_ms = drain_delay.as_millis() as u64,
        "draining: health is NOT_SERVING"
    );
    tokio::time::sleep(drain_delay).await;
    tracing::info!("refusing new connections; finishing calls in flight");
    drained.notify_one();
}

/// Sets every served name's health to `status`.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in SERVED {
        health.set_service_status(service, status).await;
    }
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

/// Binds `settings.listen`.
pub async fn bind(settings: &Settings) -> Result<TcpListener, ServeError> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: settings.listen,
            source,
        })
}
