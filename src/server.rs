//! The gRPC server: the three services, health and reflection on one listener.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::ServingStatus;

use crate::{
    config::Settings,
    gateway::Gateway,
    proto::{
        self, instance_org_service_server::InstanceOrgServiceServer,
        me_service_server::MeServiceServer, org_service_server::OrgServiceServer,
    },
    services::{InstanceOrgHandler, MeHandler, OrgHandler},
    upstream::UpstreamConfigError,
};

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The upstream settings are unusable.
    #[error(transparent)]
    Upstream(#[from] UpstreamConfigError),
    /// The reflection service could not read the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Serves the gateway on `listener` until `shutdown` completes.
pub async fn serve(
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_gateway(Gateway::new(settings)?, listener, shutdown).await
}

/// Serves an already built `gateway` on `listener` until `shutdown` completes.
pub async fn serve_gateway(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for service in [
        "",
        proto::me_service_server::SERVICE_NAME,
        proto::org_service_server::SERVICE_NAME,
        proto::instance_org_service_server::SERVICE_NAME,
    ] {
        health_reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(MeServiceServer::new(MeHandler(gateway.clone())))
        .add_service(OrgServiceServer::new(OrgHandler(gateway.clone())))
        .add_service(InstanceOrgServiceServer::new(InstanceOrgHandler(gateway)))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
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
