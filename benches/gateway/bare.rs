//! The ceiling: a bare tonic server for `wnology.v1.MeService` whose `PayloadCounts` answers a
//! clone of a prebuilt `PayloadStats` from memory with tonic's stock prost codec (what any
//! tonic service holding the answer in memory does), with the same transport settings as the
//! gateway's listener. Every other method is UNIMPLEMENTED.
//!
//! It is the body of a tonic-generated server reduced to one method: the gateway's generated
//! servers answer with pre-encoded bytes (`wnology_gateway::reply`), so they cannot serve as
//! the stock baseline.

use std::{
    convert::Infallible,
    future::Future,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    body::Body,
    server::{Grpc, NamedService, UnaryService},
    transport::{Server, server::TcpIncoming},
};
use tonic_prost::ProstCodec;
use wnology_gateway::proto::{MePayloadCountsRequest, PayloadStats};

/// The bare service.
#[derive(Debug, Clone)]
pub(crate) struct Bare {
    pub stats: Arc<PayloadStats>,
}

impl NamedService for Bare {
    const NAME: &'static str = "wnology.v1.MeService";
}

struct PayloadCounts(Arc<PayloadStats>);

impl UnaryService<MePayloadCountsRequest> for PayloadCounts {
    type Response = PayloadStats;
    type Future = BoxFuture<'static, Result<Response<PayloadStats>, Status>>;

    fn call(&mut self, _request: Request<MePayloadCountsRequest>) -> Self::Future {
        let stats = Arc::clone(&self.0);
        Box::pin(async move { Ok(Response::new(PayloadStats::clone(&stats))) })
    }
}

impl tower::Service<http::Request<Body>> for Bare {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != "/wnology.v1.MeService/PayloadCounts" {
            let status = Status::unimplemented(request.uri().path().to_string());
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = PayloadCounts(Arc::clone(&self.stats));
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<PayloadStats, MePayloadCountsRequest>::default());
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// Serves `bare` on `listener` (no-delay and keep-alive as the gateway's accept loop sets them)
/// until `shutdown`.
pub(crate) async fn serve(
    bare: Bare,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    Server::builder()
        .add_service(bare)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
