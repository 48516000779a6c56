//! The three gRPC services. Each method is bound to its route in [`crate::routes`] and served by
//! [`Gateway::call`]; nothing here is specific to one RPC.

use tonic::{Request, Response, Status};

use crate::{
    gateway::Gateway,
    proto::{
        self, instance_org_service_server::InstanceOrgService, me_service_server::MeService,
        org_service_server::OrgService,
    },
    reply::Encoded,
    routes,
};

/// Implements a generated service trait by binding each method to its route.
macro_rules! bind_routes {
    ($handler:ident: $service:ident {
        $($method:ident($request:ident) -> $response:ident = $route:ident;)*
    }) => {
        #[tonic::async_trait]
        impl $service for $handler {
            $(
                async fn $method(&self, request: Request<proto::$request>) -> Result<Response<Encoded<proto::$response>>, Status> {
                    self.0.call(&routes::$route, request).await
                }
            )*
        }
    };
}

/// `wnology.v1.MeService`.
#[derive(Debug, Clone)]
pub struct MeHandler(pub Gateway);

/// `wnology.v1.OrgService`.
#[derive(Debug, Clone)]
pub struct OrgHandler(pub Gateway);

/// `wnology.v1.InstanceOrgService`.
#[derive(Debug, Clone)]
pub struct InstanceOrgHandler(pub Gateway);

bind_routes! {
    MeHandler: MeService {
        add_recent_item(MeAddRecentItemRequest) -> RecentItemList = ME_ADD_RECENT_ITEM;
        change_password(MeChangePasswordRequest) -> AuthedUser = ME_CHANGE_PASSWORD;
        delete(MeDeleteRequest) -> Success = ME_DELETE;
        device_counts(MeDeviceCountsRequest) -> DeviceCounts = ME_DEVICE_COUNTS;
        disable_two_factor_auth(MeDisableTwoFactorAuthRequest) -> Me = ME_DISABLE_TWO_FACTOR_AUTH;
        disconnect_github(MeDisconnectGithubRequest) -> Me = ME_DISCONNECT_GITHUB;
        enable_two_factor_auth(MeEnableTwoFactorAuthRequest) -> Me = ME_ENABLE_TWO_FACTOR_AUTH;
        fetch_recent_items(MeFetchRecentItemsRequest) -> RecentItemList = ME_FETCH_RECENT_ITEMS;
        generate_two_factor_auth(MeGenerateTwoFactorAuthRequest) -> MultiFactorAuthInfo = ME_GENERATE_TWO_FACTOR_AUTH;
        get(MeGetRequest) -> Me = ME_GET;
        invite(MeInviteRequest) -> OrgInviteUser = ME_INVITE;
        invites(MeInvitesRequest) -> OrgInvitesUser = ME_INVITES;
        notebook_minute_counts(MeNotebookMinuteCountsRequest) -> NotebookMinuteCounts = ME_NOTEBOOK_MINUTE_COUNTS;
        patch(MePatchRequest) -> Me = ME_PATCH;
        payload_counts(MePayloadCountsRequest) -> PayloadStats = ME_PAYLOAD_COUNTS;
        payload_counts_breakdown(MePayloadCountsBreakdownRequest) -> PayloadCountsBreakdown = ME_PAYLOAD_COUNTS_BREAKDOWN;
        refresh_token(MeRefreshTokenRequest) -> AuthedUser = ME_REFRESH_TOKEN;
        respond_to_invite(MeRespondToInviteRequest) -> OrgInviteResultUser = ME_RESPOND_TO_INVITE;
        transfer_resources(MeTransferResourcesRequest) -> Success = ME_TRANSFER_RESOURCES;
        verify_email(MeVerifyEmailRequest) -> Success = ME_VERIFY_EMAIL;
    }
}

bind_routes! {
    OrgHandler: OrgService {
        list(OrgListRequest) -> Orgs = ORG_LIST;
        create(OrgCreateRequest) -> Org = ORG_CREATE;
        delete(OrgDeleteRequest) -> Success = ORG_DELETE;
        device_counts(OrgDeviceCountsRequest) -> DeviceCounts = ORG_DEVICE_COUNTS;
        get(OrgGetRequest) -> Org = ORG_GET;
        invite_member(OrgInviteMemberRequest) -> OrgInvites = ORG_INVITE_MEMBER;
        modify_member(OrgModifyMemberRequest) -> Org = ORG_MODIFY_MEMBER;
        notebook_minute_counts(OrgNotebookMinuteCountsRequest) -> NotebookMinuteCounts = ORG_NOTEBOOK_MINUTE_COUNTS;
        patch(OrgPatchRequest) -> Org = ORG_PATCH;
        payload_counts(OrgPayloadCountsRequest) -> PayloadStats = ORG_PAYLOAD_COUNTS;
        payload_counts_breakdown(OrgPayloadCountsBreakdownRequest) -> PayloadCountsBreakdown = ORG_PAYLOAD_COUNTS_BREAKDOWN;
        pending_invites(OrgPendingInvitesRequest) -> OrgInvites = ORG_PENDING_INVITES;
        remove_member(OrgRemoveMemberRequest) -> Org = ORG_REMOVE_MEMBER;
        revoke_invite(OrgRevokeInviteRequest) -> OrgInvites = ORG_REVOKE_INVITE;
        transfer_resources(OrgTransferResourcesRequest) -> Success = ORG_TRANSFER_RESOURCES;
    }
}

bind_routes! {
    InstanceOrgHandler: InstanceOrgService {
        delete(InstanceOrgDeleteRequest) -> Success = INSTANCE_ORG_DELETE;
        device_counts(InstanceOrgDeviceCountsRequest) -> DeviceCounts = INSTANCE_ORG_DEVICE_COUNTS;
        get(InstanceOrgGetRequest) -> InstanceOrg = INSTANCE_ORG_GET;
        notebook_minute_counts(InstanceOrgNotebookMinuteCountsRequest) -> NotebookMinuteCounts = INSTANCE_ORG_NOTEBOOK_MINUTE_COUNTS;
        patch(InstanceOrgPatchRequest) -> InstanceOrg = INSTANCE_ORG_PATCH;
        payload_counts(InstanceOrgPayloadCountsRequest) -> PayloadStats = INSTANCE_ORG_PAYLOAD_COUNTS;
        payload_counts_breakdown(InstanceOrgPayloadCountsBreakdownRequest) -> PayloadCountsBreakdown = INSTANCE_ORG_PAYLOAD_COUNTS_BREAKDOWN;
    }
}
