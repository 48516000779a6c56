//! One test per RPC: the real gateway, called through the generated client with every request
//! field set, sends exactly the upstream call the official clients send (method, path, query,
//! headers, JSON body), and answers with exactly what the upstream returned (the fixture of the
//! action's response schema).
//!
//! Request messages are written as full struct literals (no `..Default::default()`), so a field
//! added to the contract fails to compile here until a test sets it.

use std::fmt::Debug;

use crate::schemas::{fixture, fixture_bytes, fixture_text};
use crate::support::*;
use serde_json::json;
use wnology_gateway::{json::UpstreamJson, proto};

/// Ids used in requests (also written literally in the expected request lines).
const ORG: &str = "575ed6e87ae143cd83dc4aa8";
const INSTANCE: &str = "5f3e2d1c0b9a887766554433";
const INVITE: &str = "66b2c3d4e5f60718293a4b5c";
/// Upper-case hex is valid upstream and must pass through unchanged.
const MEMBER: &str = "5C9A3E7B1D2F4A6B8C0D1E2F";
const PARENT: &str = "63a1b2c3d4e5f60718293a4c";

/// 2024-05-01T00:00:00Z and 2024-06-01T00:00:00Z, in ms since the epoch.
const START: i64 = 1_714_521_600_000;
const END: i64 = 1_717_200_000_000;

/// A recording upstream answering `status` with the fixture of `schema`, and the gateway in
/// front of it.
async fn start(status: u16, schema: &str) -> (RecordingUpstream, TestGateway) {
    let upstream = RecordingUpstream::start(Answer::raw(
        status,
        "application/json",
        fixture_text(schema),
    ))
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    (upstream, gateway)
}

/// The fixture of a body schema, as the typed body message.
fn body<M: UpstreamJson>(schema: &str) -> Option<M> {
    Some(
        M::from_upstream_json(fixture_bytes(schema))
            .unwrap_or_else(|e| panic!("body fixture {schema}: {e}")),
    )
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What the upstream must have received as the body.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// No body and no `Content-Type` (GET).
    Nothing,
    /// The JSON `{}` (a bodiless POST/PATCH/DELETE, as the JavaScript client sends).
    EmptyObject,
    /// Exactly the fixture of this body schema.
    Fixture(&'static str),
}

/// Checks that the upstream received exactly one request, and that it is `method
/// path_and_query` with the official client's headers and `sent` as its body.
#[track_caller]
fn assert_sent(upstream: &RecordingUpstream, method: &str, path_and_query: &str, sent: Sent) {
    let request = upstream.only_request();
    assert_eq!(request.method, method, "HTTP method");
    assert_eq!(request.path_and_query, path_and_query, "path and query");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(request.header("accept-version"), Some("^1.30.0"));
    match sent {
        Sent::Nothing => {
            assert!(request.body.is_empty(), "GET body: {:?}", request.body);
            assert_eq!(request.header("content-type"), None);
        }
        Sent::EmptyObject => {
            assert_eq!(&request.body[..], b"{}");
            assert_eq!(request.header("content-type"), Some("application/json"));
        }
        Sent::Fixture(schema) => {
            assert_eq!(request.json(), fixture(schema), "body (fixture {schema})");
            assert_eq!(request.header("content-type"), Some("application/json"));
        }
    }
}

/// Checks that the RPC succeeded with the fixture of `schema`, decoded, and that the answer
/// re-encodes to the fixture exactly.
#[track_caller]
fn assert_reply<M: UpstreamJson + PartialEq + Debug>(
    reply: Result<tonic::Response<M>, tonic::Status>,
    schema: &str,
) {
    let message = reply
        .unwrap_or_else(|status| panic!("RPC failed: {status:?}"))
        .into_inner();
    let expected = M::from_upstream_json(fixture_bytes(schema)).unwrap();
    assert_eq!(message, expected, "decoded reply (fixture {schema})");
    assert_eq!(
        message.to_upstream_json().unwrap(),
        fixture(schema),
        "re-encoded reply (fixture {schema})"
    );
}

// MeService

#[tokio::test]
async fn me_add_recent_item() {
    let (upstream, gateway) = start(200, "recentItemList").await;
    let reply = gateway
        .me()
        .await
        .add_recent_item(authed(proto::MeAddRecentItemRequest {
            body: body("recentItem"),
        }))
        .await;
    assert_reply(reply, "recentItemList");
    assert_sent(
        &upstream,
        "POST",
        "/me/recentItems?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("recentItem"),
    );
}

#[tokio::test]
async fn me_change_password() {
    let (upstream, gateway) = start(200, "authedUser").await;
    let reply = gateway
        .me()
        .await
        .change_password(authed(proto::MeChangePasswordRequest {
            body: body("changePassword"),
        }))
        .await;
    assert_reply(reply, "authedUser");
    assert_sent(
        &upstream,
        "PATCH",
        "/me/changePassword?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("changePassword"),
    );
}

#[tokio::test]
async fn me_delete() {
    let (upstream, gateway) = start(200, "success").await;
    let reply = gateway
        .me()
        .await
        .delete(authed(proto::MeDeleteRequest {
            body: body("userCredentials"),
        }))
        .await;
    assert_reply(reply, "success");
    assert_sent(
        &upstream,
        "POST",
        "/me/delete?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("userCredentials"),
    );
}

#[tokio::test]
async fn me_device_counts() {
    let (upstream, gateway) = start(200, "deviceCounts").await;
    let reply = gateway
        .me()
        .await
        .device_counts(authed(proto::MeDeviceCountsRequest {
            start: Some(START),
            end: Some(END),
        }))
        .await;
    assert_reply(reply, "deviceCounts");
    assert_sent(
        &upstream,
        "GET",
        "/me/deviceCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_disable_two_factor_auth() {
    let (upstream, gateway) = start(200, "me").await;
    let reply = gateway
        .me()
        .await
        .disable_two_factor_auth(authed(proto::MeDisableTwoFactorAuthRequest {
            include_recent: Some(true),
            summary_exclude: list(&["storageStats", "notebookStats"]),
            summary_include: list(&["payloadCount", "orgCount"]),
            body: body("multiFactorAuthDisable"),
        }))
        .await;
    assert_reply(reply, "me");
    assert_sent(
        &upstream,
        "PATCH",
        "/me/disableTwoFactorAuth?_actions=false&_links=true&_embedded=true&includeRecent=true&summaryExclude=storageStats%2CnotebookStats&summaryInclude=payloadCount%2CorgCount",
        Sent::Fixture("multiFactorAuthDisable"),
    );
}

#[tokio::test]
async fn me_disconnect_github() {
    let (upstream, gateway) = start(200, "me").await;
    let reply = gateway
        .me()
        .await
        .disconnect_github(authed(proto::MeDisconnectGithubRequest {
            include_recent: Some(true),
            summary_exclude: list(&["payloadCount"]),
            summary_include: list(&["appCount", "dashCount", "deviceCount"]),
        }))
        .await;
    assert_reply(reply, "me");
    assert_sent(
        &upstream,
        "PATCH",
        "/me/disconnectGithub?_actions=false&_links=true&_embedded=true&includeRecent=true&summaryExclude=payloadCount&summaryInclude=appCount%2CdashCount%2CdeviceCount",
        Sent::EmptyObject,
    );
}

#[tokio::test]
async fn me_enable_two_factor_auth() {
    let (upstream, gateway) = start(200, "me").await;
    let reply = gateway
        .me()
        .await
        .enable_two_factor_auth(authed(proto::MeEnableTwoFactorAuthRequest {
            include_recent: Some(true),
            summary_exclude: list(&["notebookStats"]),
            summary_include: list(&["instanceCount", "orgCount"]),
            body: body("multiFactorAuthEnable"),
        }))
        .await;
    assert_reply(reply, "me");
    assert_sent(
        &upstream,
        "PATCH",
        "/me/enableTwoFactorAuth?_actions=false&_links=true&_embedded=true&includeRecent=true&summaryExclude=notebookStats&summaryInclude=instanceCount%2CorgCount",
        Sent::Fixture("multiFactorAuthEnable"),
    );
}

#[tokio::test]
async fn me_fetch_recent_items() {
    let (upstream, gateway) = start(200, "recentItemList").await;
    let reply = gateway
        .me()
        .await
        .fetch_recent_items(authed(proto::MeFetchRecentItemsRequest {
            parent_id: PARENT.to_string(),
            item_type: proto::ItemType::Device.into(),
        }))
        .await;
    assert_reply(reply, "recentItemList");
    assert_sent(
        &upstream,
        "GET",
        "/me/recentItems?_actions=false&_links=true&_embedded=true&parentId=63a1b2c3d4e5f60718293a4c&itemType=device",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_generate_two_factor_auth() {
    let (upstream, gateway) = start(200, "multiFactorAuthInfo").await;
    let reply = gateway
        .me()
        .await
        .generate_two_factor_auth(authed(proto::MeGenerateTwoFactorAuthRequest {}))
        .await;
    assert_reply(reply, "multiFactorAuthInfo");
    assert_sent(
        &upstream,
        "PATCH",
        "/me/generateTwoFactorAuth?_actions=false&_links=true&_embedded=true",
        Sent::EmptyObject,
    );
}

#[tokio::test]
async fn me_get() {
    let (upstream, gateway) = start(200, "me").await;
    let reply = gateway
        .me()
        .await
        .get(authed(proto::MeGetRequest {
            include_recent: Some(true),
            summary_exclude: list(&["storageStats", "notebookStats"]),
            summary_include: list(&["payloadCount", "deviceCount"]),
        }))
        .await;
    assert_reply(reply, "me");
    assert_sent(
        &upstream,
        "GET",
        "/me?_actions=false&_links=true&_embedded=true&includeRecent=true&summaryExclude=storageStats%2CnotebookStats&summaryInclude=payloadCount%2CdeviceCount",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_invite() {
    let (upstream, gateway) = start(200, "orgInviteUser").await;
    let reply = gateway
        .me()
        .await
        .invite(authed(proto::MeInviteRequest {
            invite_id: INVITE.to_string(),
        }))
        .await;
    assert_reply(reply, "orgInviteUser");
    assert_sent(
        &upstream,
        "GET",
        "/me/invites/66b2c3d4e5f60718293a4b5c?_actions=false&_links=true&_embedded=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_invites() {
    let (upstream, gateway) = start(200, "orgInvitesUser").await;
    let reply = gateway
        .me()
        .await
        .invites(authed(proto::MeInvitesRequest {}))
        .await;
    assert_reply(reply, "orgInvitesUser");
    assert_sent(
        &upstream,
        "GET",
        "/me/invites?_actions=false&_links=true&_embedded=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_notebook_minute_counts() {
    let (upstream, gateway) = start(200, "notebookMinuteCounts").await;
    let reply = gateway
        .me()
        .await
        .notebook_minute_counts(authed(proto::MeNotebookMinuteCountsRequest {
            start: Some(START),
            end: Some(END),
        }))
        .await;
    assert_reply(reply, "notebookMinuteCounts");
    assert_sent(
        &upstream,
        "GET",
        "/me/notebookMinuteCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_patch() {
    let (upstream, gateway) = start(200, "me").await;
    let reply = gateway
        .me()
        .await
        .patch(authed(proto::MePatchRequest {
            include_recent: Some(true),
            summary_exclude: list(&["payloadCount"]),
            summary_include: list(&["orgCount"]),
            body: body("mePatch"),
        }))
        .await;
    assert_reply(reply, "me");
    assert_sent(
        &upstream,
        "PATCH",
        "/me?_actions=false&_links=true&_embedded=true&includeRecent=true&summaryExclude=payloadCount&summaryInclude=orgCount",
        Sent::Fixture("mePatch"),
    );
}

#[tokio::test]
async fn me_payload_counts() {
    let (upstream, gateway) = start(200, "payloadStats").await;
    let reply = gateway
        .me()
        .await
        .payload_counts(authed(proto::MePayloadCountsRequest {
            start: Some(START),
            end: Some(END),
            as_bytes: Some(true),
        }))
        .await;
    assert_reply(reply, "payloadStats");
    assert_sent(
        &upstream,
        "GET",
        "/me/payloadCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000&asBytes=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_payload_counts_breakdown() {
    let (upstream, gateway) = start(200, "payloadCountsBreakdown").await;
    let reply = gateway
        .me()
        .await
        .payload_counts_breakdown(authed(proto::MePayloadCountsBreakdownRequest {
            start: Some(START),
            end: Some(END),
            resolution: proto::Resolution::Hour.into(),
            as_bytes: Some(true),
            include_non_billable: Some(true),
        }))
        .await;
    assert_reply(reply, "payloadCountsBreakdown");
    assert_sent(
        &upstream,
        "GET",
        "/me/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000&resolution=3600000&asBytes=true&includeNonBillable=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_refresh_token() {
    let (upstream, gateway) = start(200, "authedUser").await;
    let reply = gateway
        .me()
        .await
        .refresh_token(authed(proto::MeRefreshTokenRequest {}))
        .await;
    assert_reply(reply, "authedUser");
    assert_sent(
        &upstream,
        "GET",
        "/me/refreshToken?_actions=false&_links=true&_embedded=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn me_respond_to_invite() {
    let (upstream, gateway) = start(200, "orgInviteResultUser").await;
    let reply = gateway
        .me()
        .await
        .respond_to_invite(authed(proto::MeRespondToInviteRequest {
            invite_id: INVITE.to_string(),
            body: body("orgInviteActionUser"),
        }))
        .await;
    assert_reply(reply, "orgInviteResultUser");
    assert_sent(
        &upstream,
        "POST",
        "/me/invites/66b2c3d4e5f60718293a4b5c?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("orgInviteActionUser"),
    );
}

#[tokio::test]
async fn me_transfer_resources() {
    let (upstream, gateway) = start(200, "success").await;
    let reply = gateway
        .me()
        .await
        .transfer_resources(authed(proto::MeTransferResourcesRequest {
            body: body("resourceTransfer"),
        }))
        .await;
    assert_reply(reply, "success");
    assert_sent(
        &upstream,
        "PATCH",
        "/me/transferResources?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("resourceTransfer"),
    );
}

#[tokio::test]
async fn me_verify_email() {
    let (upstream, gateway) = start(200, "success").await;
    let reply = gateway
        .me()
        .await
        .verify_email(authed(proto::MeVerifyEmailRequest {}))
        .await;
    assert_reply(reply, "success");
    assert_sent(
        &upstream,
        "POST",
        "/me/verify-email?_actions=false&_links=true&_embedded=true",
        Sent::EmptyObject,
    );
}

// OrgService

#[tokio::test]
async fn org_list() {
    let (upstream, gateway) = start(200, "orgs").await;
    let reply = gateway
        .org()
        .await
        .list(authed(proto::OrgListRequest {
            sort_field: proto::SortField::LastUpdated.into(),
            sort_direction: proto::SortDirection::Desc.into(),
            page: Some(2),
            per_page: Some(25),
            filter_field: proto::FilterField::Name.into(),
            filter: "acme* water".to_string(),
            summary_exclude: list(&["payloadCount", "storageStats"]),
            summary_include: list(&["deviceCount", "memberCount"]),
        }))
        .await;
    assert_reply(reply, "orgs");
    assert_sent(
        &upstream,
        "GET",
        "/orgs?_actions=false&_links=true&_embedded=true&sortField=lastUpdated&sortDirection=desc&page=2&perPage=25&filterField=name&filter=acme%2A%20water&summaryExclude=payloadCount%2CstorageStats&summaryInclude=deviceCount%2CmemberCount",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_create() {
    let (upstream, gateway) = start(201, "org").await;
    let reply = gateway
        .org()
        .await
        .create(authed(proto::OrgCreateRequest {
            summary_exclude: list(&["notebookStats"]),
            summary_include: list(&["appCount", "memberCount"]),
            body: body("orgPost"),
        }))
        .await;
    assert_reply(reply, "org");
    assert_sent(
        &upstream,
        "POST",
        "/orgs?_actions=false&_links=true&_embedded=true&summaryExclude=notebookStats&summaryInclude=appCount%2CmemberCount",
        Sent::Fixture("orgPost"),
    );
}

#[tokio::test]
async fn org_delete() {
    let (upstream, gateway) = start(200, "success").await;
    let reply = gateway
        .org()
        .await
        .delete(authed(proto::OrgDeleteRequest {
            org_id: ORG.to_string(),
        }))
        .await;
    assert_reply(reply, "success");
    assert_sent(
        &upstream,
        "DELETE",
        "/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true",
        Sent::EmptyObject,
    );
}

#[tokio::test]
async fn org_device_counts() {
    let (upstream, gateway) = start(200, "deviceCounts").await;
    let reply = gateway
        .org()
        .await
        .device_counts(authed(proto::OrgDeviceCountsRequest {
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
        }))
        .await;
    assert_reply(reply, "deviceCounts");
    assert_sent(
        &upstream,
        "GET",
        "/orgs/575ed6e87ae143cd83dc4aa8/deviceCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_get() {
    let (upstream, gateway) = start(200, "org").await;
    let reply = gateway
        .org()
        .await
        .get(authed(proto::OrgGetRequest {
            org_id: ORG.to_string(),
            summary_exclude: list(&["storageStats"]),
            summary_include: list(&["payloadCount", "pendingInviteCount"]),
        }))
        .await;
    assert_reply(reply, "org");
    assert_sent(
        &upstream,
        "GET",
        "/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true&summaryExclude=storageStats&summaryInclude=payloadCount%2CpendingInviteCount",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_invite_member() {
    let (upstream, gateway) = start(200, "orgInvites").await;
    let reply = gateway
        .org()
        .await
        .invite_member(authed(proto::OrgInviteMemberRequest {
            org_id: ORG.to_string(),
            body: body("orgInvitePost"),
        }))
        .await;
    assert_reply(reply, "orgInvites");
    assert_sent(
        &upstream,
        "POST",
        "/orgs/575ed6e87ae143cd83dc4aa8/invites?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("orgInvitePost"),
    );
}

#[tokio::test]
async fn org_modify_member() {
    let (upstream, gateway) = start(200, "org").await;
    let reply = gateway
        .org()
        .await
        .modify_member(authed(proto::OrgModifyMemberRequest {
            org_id: ORG.to_string(),
            summary_exclude: list(&["payloadCount", "notebookStats"]),
            summary_include: list(&["memberCount"]),
            body: body("orgMemberPatch"),
            clear_mask: None,
        }))
        .await;
    assert_reply(reply, "org");
    assert_sent(
        &upstream,
        "PATCH",
        "/orgs/575ed6e87ae143cd83dc4aa8/member?_actions=false&_links=true&_embedded=true&summaryExclude=payloadCount%2CnotebookStats&summaryInclude=memberCount",
        Sent::Fixture("orgMemberPatch"),
    );
}

#[tokio::test]
async fn org_notebook_minute_counts() {
    let (upstream, gateway) = start(200, "notebookMinuteCounts").await;
    let reply = gateway
        .org()
        .await
        .notebook_minute_counts(authed(proto::OrgNotebookMinuteCountsRequest {
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
        }))
        .await;
    assert_reply(reply, "notebookMinuteCounts");
    assert_sent(
        &upstream,
        "GET",
        "/orgs/575ed6e87ae143cd83dc4aa8/notebookMinuteCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_patch() {
    let (upstream, gateway) = start(200, "org").await;
    let reply = gateway
        .org()
        .await
        .patch(authed(proto::OrgPatchRequest {
            org_id: ORG.to_string(),
            summary_exclude: list(&["storageStats", "payloadCount"]),
            summary_include: list(&["flowCount", "webhookCount"]),
            body: body("orgPatch"),
        }))
        .await;
    assert_reply(reply, "org");
    assert_sent(
        &upstream,
        "PATCH",
        "/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true&summaryExclude=storageStats%2CpayloadCount&summaryInclude=flowCount%2CwebhookCount",
        Sent::Fixture("orgPatch"),
    );
}

#[tokio::test]
async fn org_payload_counts() {
    let (upstream, gateway) = start(200, "payloadStats").await;
    let reply = gateway
        .org()
        .await
        .payload_counts(authed(proto::OrgPayloadCountsRequest {
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
            as_bytes: Some(true),
        }))
        .await;
    assert_reply(reply, "payloadStats");
    assert_sent(
        &upstream,
        "GET",
        "/orgs/575ed6e87ae143cd83dc4aa8/payloadCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000&asBytes=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_payload_counts_breakdown() {
    let (upstream, gateway) = start(200, "payloadCountsBreakdown").await;
    let reply = gateway
        .org()
        .await
        .payload_counts_breakdown(authed(proto::OrgPayloadCountsBreakdownRequest {
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
            resolution: proto::Resolution::Hour.into(),
            as_bytes: Some(true),
            include_non_billable: Some(true),
        }))
        .await;
    assert_reply(reply, "payloadCountsBreakdown");
    assert_sent(
        &upstream,
        "GET",
        "/orgs/575ed6e87ae143cd83dc4aa8/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000&resolution=3600000&asBytes=true&includeNonBillable=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_pending_invites() {
    let (upstream, gateway) = start(200, "orgInvites").await;
    let reply = gateway
        .org()
        .await
        .pending_invites(authed(proto::OrgPendingInvitesRequest {
            org_id: ORG.to_string(),
        }))
        .await;
    assert_reply(reply, "orgInvites");
    assert_sent(
        &upstream,
        "GET",
        "/orgs/575ed6e87ae143cd83dc4aa8/invites?_actions=false&_links=true&_embedded=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn org_remove_member() {
    let (upstream, gateway) = start(200, "org").await;
    let reply = gateway
        .org()
        .await
        .remove_member(authed(proto::OrgRemoveMemberRequest {
            org_id: ORG.to_string(),
            user_id: MEMBER.to_string(),
            summary_exclude: list(&["notebookStats"]),
            summary_include: list(&["memberCount", "pendingInviteCount"]),
        }))
        .await;
    assert_reply(reply, "org");
    assert_sent(
        &upstream,
        "DELETE",
        "/orgs/575ed6e87ae143cd83dc4aa8/member?_actions=false&_links=true&_embedded=true&userId=5C9A3E7B1D2F4A6B8C0D1E2F&summaryExclude=notebookStats&summaryInclude=memberCount%2CpendingInviteCount",
        Sent::EmptyObject,
    );
}

#[tokio::test]
async fn org_revoke_invite() {
    let (upstream, gateway) = start(200, "orgInvites").await;
    let reply = gateway
        .org()
        .await
        .revoke_invite(authed(proto::OrgRevokeInviteRequest {
            org_id: ORG.to_string(),
            invite_id: INVITE.to_string(),
        }))
        .await;
    assert_reply(reply, "orgInvites");
    assert_sent(
        &upstream,
        "DELETE",
        "/orgs/575ed6e87ae143cd83dc4aa8/invites?_actions=false&_links=true&_embedded=true&inviteId=66b2c3d4e5f60718293a4b5c",
        Sent::EmptyObject,
    );
}

#[tokio::test]
async fn org_transfer_resources() {
    let (upstream, gateway) = start(200, "success").await;
    let reply = gateway
        .org()
        .await
        .transfer_resources(authed(proto::OrgTransferResourcesRequest {
            org_id: ORG.to_string(),
            body: body("resourceTransfer"),
        }))
        .await;
    assert_reply(reply, "success");
    assert_sent(
        &upstream,
        "PATCH",
        "/orgs/575ed6e87ae143cd83dc4aa8/transferResources?_actions=false&_links=true&_embedded=true",
        Sent::Fixture("resourceTransfer"),
    );
}

// InstanceOrgService

#[tokio::test]
async fn instance_org_delete() {
    let (upstream, gateway) = start(200, "success").await;
    let reply = gateway
        .instance_org()
        .await
        .delete(authed(proto::InstanceOrgDeleteRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
        }))
        .await;
    assert_reply(reply, "success");
    assert_sent(
        &upstream,
        "DELETE",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true",
        Sent::EmptyObject,
    );
}

#[tokio::test]
async fn instance_org_device_counts() {
    let (upstream, gateway) = start(200, "deviceCounts").await;
    let reply = gateway
        .instance_org()
        .await
        .device_counts(authed(proto::InstanceOrgDeviceCountsRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
        }))
        .await;
    assert_reply(reply, "deviceCounts");
    assert_sent(
        &upstream,
        "GET",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8/deviceCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn instance_org_get() {
    let (upstream, gateway) = start(200, "instanceOrg").await;
    let reply = gateway
        .instance_org()
        .await
        .get(authed(proto::InstanceOrgGetRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
            summary_include: list(&["payloadCount", "storageStats", "memberCount"]),
        }))
        .await;
    assert_reply(reply, "instanceOrg");
    assert_sent(
        &upstream,
        "GET",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true&summaryInclude=payloadCount%2CstorageStats%2CmemberCount",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn instance_org_notebook_minute_counts() {
    let (upstream, gateway) = start(200, "notebookMinuteCounts").await;
    let reply = gateway
        .instance_org()
        .await
        .notebook_minute_counts(authed(proto::InstanceOrgNotebookMinuteCountsRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
        }))
        .await;
    assert_reply(reply, "notebookMinuteCounts");
    assert_sent(
        &upstream,
        "GET",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8/notebookMinuteCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000",
        Sent::Nothing,
    );
}

/// An empty list is sent as `[]` only when `clear_mask` names it (proto3 lists have no
/// presence); the rest of the body is sent as usual.
#[tokio::test]
async fn org_modify_member_sends_the_lists_named_in_clear_mask_empty() {
    let (upstream, gateway) = start(200, "org").await;
    let mut patch: proto::OrgMemberPatch = body("orgMemberPatch").unwrap();
    patch.application_roles.clear();
    let reply = gateway
        .org()
        .await
        .modify_member(authed(proto::OrgModifyMemberRequest {
            org_id: ORG.to_string(),
            summary_exclude: Vec::new(),
            summary_include: Vec::new(),
            body: Some(patch),
            clear_mask: Some(pbjson_types::FieldMask {
                paths: vec!["application_roles".into()],
            }),
        }))
        .await;
    assert_reply(reply, "org");
    let mut expected = fixture("orgMemberPatch");
    expected["applicationRoles"] = serde_json::json!([]);
    assert_eq!(upstream.only_request().json(), expected);
}

#[tokio::test]
async fn instance_org_patch() {
    let (upstream, gateway) = start(200, "instanceOrg").await;
    let reply = gateway
        .instance_org()
        .await
        .patch(authed(proto::InstanceOrgPatchRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
            summary_include: list(&["deviceCount"]),
            body: body("instanceOrgPatch"),
            clear_mask: None,
        }))
        .await;
    assert_reply(reply, "instanceOrg");
    assert_sent(
        &upstream,
        "PATCH",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true&summaryInclude=deviceCount",
        Sent::Fixture("instanceOrgPatch"),
    );
}

#[tokio::test]
async fn instance_org_payload_counts() {
    let (upstream, gateway) = start(200, "payloadStats").await;
    let reply = gateway
        .instance_org()
        .await
        .payload_counts(authed(proto::InstanceOrgPayloadCountsRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
            as_bytes: Some(true),
        }))
        .await;
    assert_reply(reply, "payloadStats");
    assert_sent(
        &upstream,
        "GET",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8/payloadCounts?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000&asBytes=true",
        Sent::Nothing,
    );
}

#[tokio::test]
async fn instance_org_payload_counts_breakdown() {
    let (upstream, gateway) = start(200, "payloadCountsBreakdown").await;
    let reply = gateway
        .instance_org()
        .await
        .payload_counts_breakdown(authed(proto::InstanceOrgPayloadCountsBreakdownRequest {
            instance_id: INSTANCE.to_string(),
            org_id: ORG.to_string(),
            start: Some(START),
            end: Some(END),
            resolution: proto::Resolution::Hour.into(),
            as_bytes: Some(true),
            include_non_billable: Some(true),
        }))
        .await;
    assert_reply(reply, "payloadCountsBreakdown");
    assert_sent(
        &upstream,
        "GET",
        "/instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&start=1714521600000&end=1717200000000&resolution=3600000&asBytes=true&includeNonBillable=true",
        Sent::Nothing,
    );
}

// Query parameters: omission, enums, integers and flags.

/// An upstream answering `{}` to everything (every message below decodes from it), and the
/// gateway in front of it.
async fn start_empty() -> (RecordingUpstream, TestGateway) {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    (upstream, gateway)
}

/// The path and query of every request the upstream received, in order.
fn sent_lines(upstream: &RecordingUpstream) -> Vec<String> {
    upstream
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect()
}

#[tokio::test]
async fn only_required_fields_send_only_the_global_and_required_params() {
    let (upstream, gateway) = start_empty().await;
    let mut me = gateway.me().await;
    let mut org = gateway.org().await;
    let mut instance_org = gateway.instance_org().await;
    me.get(authed(proto::MeGetRequest::default()))
        .await
        .unwrap();
    me.fetch_recent_items(authed(proto::MeFetchRecentItemsRequest {
        item_type: proto::ItemType::Flow.into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    me.payload_counts_breakdown(authed(proto::MePayloadCountsBreakdownRequest::default()))
        .await
        .unwrap();
    me.device_counts(authed(proto::MeDeviceCountsRequest::default()))
        .await
        .unwrap();
    org.list(authed(proto::OrgListRequest::default()))
        .await
        .unwrap();
    org.create(authed(proto::OrgCreateRequest {
        body: Some(proto::OrgPost {
            name: Some("Only a name".into()),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await
    .unwrap();
    org.remove_member(authed(proto::OrgRemoveMemberRequest {
        org_id: ORG.into(),
        user_id: MEMBER.into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    instance_org
        .get(authed(proto::InstanceOrgGetRequest {
            instance_id: INSTANCE.into(),
            org_id: ORG.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    instance_org
        .payload_counts(authed(proto::InstanceOrgPayloadCountsRequest {
            instance_id: INSTANCE.into(),
            org_id: ORG.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        sent_lines(&upstream),
        [
            "GET /me?_actions=false&_links=true&_embedded=true",
            "GET /me/recentItems?_actions=false&_links=true&_embedded=true&itemType=flow",
            "GET /me/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true",
            "GET /me/deviceCounts?_actions=false&_links=true&_embedded=true",
            "GET /orgs?_actions=false&_links=true&_embedded=true",
            "POST /orgs?_actions=false&_links=true&_embedded=true",
            "DELETE /orgs/575ed6e87ae143cd83dc4aa8/member?_actions=false&_links=true&_embedded=true&userId=5C9A3E7B1D2F4A6B8C0D1E2F",
            "GET /instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8?_actions=false&_links=true&_embedded=true",
            "GET /instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8/payloadCounts?_actions=false&_links=true&_embedded=true",
        ]
    );
    // A body with only its required field is sent with only that field.
    assert_eq!(
        upstream.requests()[5].json(),
        json!({"name": "Only a name"})
    );
}

#[tokio::test]
async fn enum_query_values_map_to_the_upstream_strings() {
    use proto::{ItemType, Resolution, SortDirection, SortField};

    let (upstream, gateway) = start_empty().await;
    let mut me = gateway.me().await;
    let mut org = gateway.org().await;
    for (field, direction) in [
        (SortField::Name, SortDirection::Asc),
        (SortField::Id, SortDirection::Desc),
        (SortField::CreationDate, SortDirection::Desc),
        (SortField::LastUpdated, SortDirection::Asc),
    ] {
        org.list(authed(proto::OrgListRequest {
            sort_field: field.into(),
            sort_direction: direction.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    for item_type in [
        ItemType::Application,
        ItemType::Device,
        ItemType::Flow,
        ItemType::Dashboard,
        ItemType::Organization,
    ] {
        me.fetch_recent_items(authed(proto::MeFetchRecentItemsRequest {
            item_type: item_type.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    for resolution in [Resolution::Hour, Resolution::Day, Resolution::Unspecified] {
        me.payload_counts_breakdown(authed(proto::MePayloadCountsBreakdownRequest {
            resolution: resolution.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    org.list(authed(proto::OrgListRequest {
        filter_field: proto::FilterField::Name.into(),
        filter: "my*org".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        sent_lines(&upstream),
        [
            "GET /orgs?_actions=false&_links=true&_embedded=true&sortField=name&sortDirection=asc",
            "GET /orgs?_actions=false&_links=true&_embedded=true&sortField=id&sortDirection=desc",
            "GET /orgs?_actions=false&_links=true&_embedded=true&sortField=creationDate&sortDirection=desc",
            "GET /orgs?_actions=false&_links=true&_embedded=true&sortField=lastUpdated&sortDirection=asc",
            "GET /me/recentItems?_actions=false&_links=true&_embedded=true&itemType=application",
            "GET /me/recentItems?_actions=false&_links=true&_embedded=true&itemType=device",
            "GET /me/recentItems?_actions=false&_links=true&_embedded=true&itemType=flow",
            "GET /me/recentItems?_actions=false&_links=true&_embedded=true&itemType=dashboard",
            "GET /me/recentItems?_actions=false&_links=true&_embedded=true&itemType=organization",
            "GET /me/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&resolution=3600000",
            "GET /me/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&resolution=86400000",
            "GET /me/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true",
            "GET /orgs?_actions=false&_links=true&_embedded=true&filterField=name&filter=my%2Aorg",
        ]
    );
}

#[tokio::test]
async fn int64_query_values_go_out_in_decimal() {
    let (upstream, gateway) = start_empty().await;
    let mut me = gateway.me().await;
    let mut org = gateway.org().await;
    let mut instance_org = gateway.instance_org().await;
    // Beyond 2^53: a detour through f64 would round it.
    me.device_counts(authed(proto::MeDeviceCountsRequest {
        start: Some(-2_592_000_000),
        end: Some(9_007_199_254_740_993),
    }))
    .await
    .unwrap();
    org.notebook_minute_counts(authed(proto::OrgNotebookMinuteCountsRequest {
        org_id: ORG.into(),
        start: Some(0),
        end: Some(i64::MAX),
    }))
    .await
    .unwrap();
    instance_org
        .device_counts(authed(proto::InstanceOrgDeviceCountsRequest {
            instance_id: INSTANCE.into(),
            org_id: ORG.into(),
            start: Some(1),
            end: None,
        }))
        .await
        .unwrap();
    org.list(authed(proto::OrgListRequest {
        page: Some(0),
        per_page: Some(u32::MAX),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        sent_lines(&upstream),
        [
            "GET /me/deviceCounts?_actions=false&_links=true&_embedded=true&start=-2592000000&end=9007199254740993",
            "GET /orgs/575ed6e87ae143cd83dc4aa8/notebookMinuteCounts?_actions=false&_links=true&_embedded=true&start=0&end=9223372036854775807",
            "GET /instances/5f3e2d1c0b9a887766554433/orgs/575ed6e87ae143cd83dc4aa8/deviceCounts?_actions=false&_links=true&_embedded=true&start=1",
            "GET /orgs?_actions=false&_links=true&_embedded=true&page=0&perPage=4294967295",
        ]
    );
}

#[tokio::test]
async fn flags_set_to_false_are_sent_and_unset_flags_are_omitted() {
    let (upstream, gateway) = start_empty().await;
    let mut me = gateway.me().await;
    let mut org = gateway.org().await;
    me.payload_counts(authed(proto::MePayloadCountsRequest {
        as_bytes: Some(false),
        ..Default::default()
    }))
    .await
    .unwrap();
    me.payload_counts(authed(proto::MePayloadCountsRequest {
        as_bytes: None,
        start: Some(START),
        ..Default::default()
    }))
    .await
    .unwrap();
    org.payload_counts_breakdown(authed(proto::OrgPayloadCountsBreakdownRequest {
        org_id: ORG.into(),
        as_bytes: Some(false),
        include_non_billable: Some(false),
        ..Default::default()
    }))
    .await
    .unwrap();
    org.payload_counts_breakdown(authed(proto::OrgPayloadCountsBreakdownRequest {
        org_id: ORG.into(),
        as_bytes: None,
        include_non_billable: Some(true),
        ..Default::default()
    }))
    .await
    .unwrap();
    me.get(authed(proto::MeGetRequest {
        include_recent: Some(false),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        sent_lines(&upstream),
        [
            "GET /me/payloadCounts?_actions=false&_links=true&_embedded=true&asBytes=false",
            "GET /me/payloadCounts?_actions=false&_links=true&_embedded=true&start=1714521600000",
            "GET /orgs/575ed6e87ae143cd83dc4aa8/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&asBytes=false&includeNonBillable=false",
            "GET /orgs/575ed6e87ae143cd83dc4aa8/payloadCountsBreakdown?_actions=false&_links=true&_embedded=true&includeNonBillable=true",
            "GET /me?_actions=false&_links=true&_embedded=true&includeRecent=false",
        ]
    );
}
