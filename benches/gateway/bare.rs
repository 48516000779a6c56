//! The ceiling: a bare tonic server implementing `MeService`, whose `PayloadCounts` answers a
//! clone of a prebuilt `PayloadStats` from memory (the same message the gateway caches), with
//! the same transport settings as the gateway's listener. Every other method is UNIMPLEMENTED.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use wnology_gateway::proto::{
    self, me_service_server::MeService, me_service_server::MeServiceServer,
};

/// The bare service.
#[derive(Debug, Clone)]
pub struct Bare {
    pub stats: proto::PayloadStats,
}

macro_rules! bare_service {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl MeService for Bare {
            async fn payload_counts(
                &self,
                _request: Request<proto::MePayloadCountsRequest>,
            ) -> Result<Response<proto::PayloadStats>, Status> {
                Ok(Response::new(self.stats.clone()))
            }
            $(
                async fn $method(
                    &self,
                    _request: Request<proto::$request>,
                ) -> Result<Response<proto::$response>, Status> {
                    Err(Status::unimplemented(stringify!($method)))
                }
            )*
        }
    };
}

bare_service! {
    add_recent_item(MeAddRecentItemRequest) -> RecentItemList;
    change_password(MeChangePasswordRequest) -> AuthedUser;
    delete(MeDeleteRequest) -> Success;
    device_counts(MeDeviceCountsRequest) -> DeviceCounts;
    disable_two_factor_auth(MeDisableTwoFactorAuthRequest) -> Me;
    disconnect_github(MeDisconnectGithubRequest) -> Me;
    enable_two_factor_auth(MeEnableTwoFactorAuthRequest) -> Me;
    fetch_recent_items(MeFetchRecentItemsRequest) -> RecentItemList;
    generate_two_factor_auth(MeGenerateTwoFactorAuthRequest) -> MultiFactorAuthInfo;
    get(MeGetRequest) -> Me;
    invite(MeInviteRequest) -> OrgInviteUser;
    invites(MeInvitesRequest) -> OrgInvitesUser;
    notebook_minute_counts(MeNotebookMinuteCountsRequest) -> NotebookMinuteCounts;
    patch(MePatchRequest) -> Me;
    payload_counts_breakdown(MePayloadCountsBreakdownRequest) -> PayloadCountsBreakdown;
    refresh_token(MeRefreshTokenRequest) -> AuthedUser;
    respond_to_invite(MeRespondToInviteRequest) -> OrgInviteResultUser;
    transfer_resources(MeTransferResourcesRequest) -> Success;
    verify_email(MeVerifyEmailRequest) -> Success;
}

/// Serves `bare` on `listener` (no-delay and keep-alive as `server::serve_gateway` sets them)
/// until `shutdown`.
pub async fn serve(
    bare: Bare,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)));
    Server::builder()
        .add_service(MeServiceServer::new(bare))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
