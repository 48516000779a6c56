//! Fidelity of the gateway's messages to what the upstream (here the sandbox) sends.
//!
//! Every one of the 42 actions is called once through the real gateway (and a few actions again
//! with options that bring out more properties). The sandbox's router is wrapped in a layer that
//! records each HTTP exchange, so the raw JSON of the very exchange the gateway made is at hand:
//!
//! - the gateway sent exactly the call `wnology_gateway::upstream::resolve` describes, and the
//!   sandbox answered the action's documented success status;
//! - every key path of the raw JSON (recursively; arrays by their items; `map<>` fields by their
//!   values) is a field of the reply message, found through the message descriptor, with a JSON
//!   type that field can hold; so no data is silently dropped;
//! - the reply equals the decoded raw JSON, and re-encoding it with `to_upstream_json()` gives
//!   back the raw JSON exactly, but for empty arrays (a proto3 repeated field has no presence,
//!   so `[]` and absent are the same message);
//! - the raw JSON holds the upstream schema's facts: required properties, JSON types, ids of
//!   24 hex characters, RFC 3339 dates, enumerations and closed objects. The facts are written
//!   below as a table, taken from the upstream API 1.30.0 schemas.
#![cfg(feature = "sandbox")]

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    future::Future,
};

use crate::support_sandbox::*;
use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Value, json};
use tonic::{Status, transport::Channel};
use wnology_gateway::{
    config::Settings,
    json::{self, UpstreamJson},
    proto::{
        self, instance_org_service_client::InstanceOrgServiceClient,
        me_service_client::MeServiceClient, org_service_client::OrgServiceClient,
    },
    routes::{self, ROUTES, Route},
    sandbox::{
        DEMO_INSTANCE_ID, DEMO_INVITE_ID, DEMO_ORG_APPLICATION_ID, DEMO_ORG_ID, DEMO_TOKEN,
        DEMO_USER_APPLICATION_ID, DEMO_USER_DASHBOARD_ID, DEMO_USER_ID, DEMO_USER_PASSWORD,
        INSTANCE_ADMIN_TOKEN, INSTANCE_ONLY_ORG_ID, INSTANCE_ORG_ID, SECOND_USER_EMAIL,
        SECOND_USER_ID, SECOND_USER_PASSWORD, SECOND_USER_TOKEN, SandboxOptions, THIRD_USER_ID,
        TWO_FACTOR_CODE,
    },
    upstream,
};

use crate::support::TestGateway;

/// 2025-06-02T00:00:00.000Z (a Monday), in ms since the epoch.
const START: i64 = 1_748_822_400_000;
const DAY_MS: i64 = 86_400_000;
/// The demo user's new password (`me.changePassword`, then `me.delete`).
const NEW_PASSWORD: &str = "Fidelity-Check-Passw0rd!";

/// What one call through the gateway produced.
struct Captured {
    action: &'static str,
    /// The reply message's descriptor.
    message: MessageDescriptor,
    /// Whether the upstream JSON is a bare array of the message's `items`.
    top_level_array: bool,
    /// The request as sent (method and path with query).
    sent: String,
    /// The sandbox's raw JSON.
    raw: Value,
    /// The raw JSON decoded into the reply type and re-encoded.
    reencoded: Value,
    /// Whether the gateway's reply equals the decoded raw JSON.
    reply_is_decoded_raw: bool,
}

/// A recording sandbox, the gateway in front of it, and what was captured so far.
struct Harness {
    sandbox: RunningSandbox,
    log: ExchangeLog,
    gateway: TestGateway,
    channel: Channel,
    captured: Vec<Captured>,
}

impl Harness {
    async fn start() -> Harness {
        let (sandbox, log) = RunningSandbox::start_recording(SandboxOptions::default()).await;
        let gateway = TestGateway::start_with(Settings::for_upstream(sandbox.url())).await;
        let channel = gateway.channel().await;
        Harness {
            sandbox,
            log,
            gateway,
            channel,
            captured: Vec::new(),
        }
    }

    /// Makes one call through the gateway (reads bypass the cache) and captures the exchange
    /// the gateway had with the sandbox for it.
    async fn call<Req, Resp, F, Fut>(
        &mut self,
        route: &'static Route,
        token: &str,
        request: Req,
        rpc: F,
    ) -> Resp
    where
        Req: prost::Name + serde::Serialize,
        Resp: UpstreamJson + PartialEq + Debug,
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let request_json = json::to_json_value(&request).expect("request encodes");
        let expected = upstream::resolve(route, &request_json)
            .unwrap_or_else(|e| panic!("{}: the request does not resolve: {e}", route.action));
        let _ = self.log.take();
        let reply = rpc(self.channel.clone(), uncached(request, token)).await;
        let reply = ok(route.action, reply).into_inner();

        let exchanges = self.log.take();
        assert_eq!(
            exchanges.len(),
            1,
            "{}: the gateway made exactly one upstream call",
            route.action
        );
        let exchange = &exchanges[0];
        let sent = format!("{} {}", exchange.method, exchange.path_and_query);
        assert_eq!(
            sent,
            format!("{} {}", expected.method, expected.path_and_query),
            "{}: the upstream call is the resolved one",
            route.action
        );
        assert_eq!(
            exchange.status, route.success,
            "{}: documented success status",
            route.action
        );

        let raw: Value = serde_json::from_slice(&exchange.body)
            .unwrap_or_else(|e| panic!("{}: the sandbox answered non-JSON: {e}", route.action));
        let decoded = Resp::from_upstream_json(&exchange.body)
            .unwrap_or_else(|e| panic!("{}: the raw JSON does not decode: {e}", route.action));
        let reencoded = decoded.to_upstream_json().expect("reply encodes");
        let message = json::descriptor_pool()
            .get_message_by_name(&Resp::full_name())
            .expect("reply descriptor");
        self.captured.push(Captured {
            action: route.action,
            message,
            top_level_array: Resp::TOP_LEVEL_ARRAY,
            sent,
            raw,
            reencoded,
            reply_is_decoded_raw: reply == decoded,
        });
        reply
    }
}

macro_rules! me {
    ($h:expr, $route:ident, $token:expr, $method:ident, $request:expr) => {
        $h.call(&routes::$route, $token, $request, |channel, r| async move {
            MeServiceClient::new(channel).$method(r).await
        })
        .await
    };
}

macro_rules! org {
    ($h:expr, $route:ident, $token:expr, $method:ident, $request:expr) => {
        $h.call(&routes::$route, $token, $request, |channel, r| async move {
            OrgServiceClient::new(channel).$method(r).await
        })
        .await
    };
}

macro_rules! inst {
    ($h:expr, $route:ident, $token:expr, $method:ident, $request:expr) => {
        $h.call(&routes::$route, $token, $request, |channel, r| async move {
            InstanceOrgServiceClient::new(channel).$method(r).await
        })
        .await
    };
}

fn s(text: &str) -> Option<String> {
    Some(text.to_string())
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn role(resource_id: &str, role: &str) -> proto::ResourceRole {
    proto::ResourceRole {
        resource_id: s(resource_id),
        role: s(role),
    }
}

/// Calls all 42 actions through the gateway, in an order the sandbox's state allows, plus a
/// few variants that bring out optional properties (recent items, `parentId`, list filters,
/// `asBytes`, hourly breakdowns, a disabled instance organization, `tokenCutoff`).
async fn capture_all() -> Vec<Captured> {
    let mut h = Harness::start().await;
    let week = (Some(START), Some(START + 7 * DAY_MS - 1));

    // MeService reads.
    me!(
        h,
        ME_GET,
        DEMO_TOKEN,
        get,
        proto::MeGetRequest {
            include_recent: Some(true),
            ..Default::default()
        }
    );
    me!(
        h,
        ME_FETCH_RECENT_ITEMS,
        DEMO_TOKEN,
        fetch_recent_items,
        proto::MeFetchRecentItemsRequest {
            parent_id: DEMO_ORG_APPLICATION_ID.into(),
            item_type: proto::ItemType::Device.into(),
        }
    );
    me!(
        h,
        ME_FETCH_RECENT_ITEMS,
        DEMO_TOKEN,
        fetch_recent_items,
        proto::MeFetchRecentItemsRequest {
            parent_id: String::new(),
            item_type: proto::ItemType::Application.into(),
        }
    );
    me!(
        h,
        ME_INVITES,
        DEMO_TOKEN,
        invites,
        proto::MeInvitesRequest {}
    );
    me!(
        h,
        ME_INVITE,
        DEMO_TOKEN,
        invite,
        proto::MeInviteRequest {
            invite_id: DEMO_INVITE_ID.into(),
        }
    );
    me!(
        h,
        ME_DEVICE_COUNTS,
        DEMO_TOKEN,
        device_counts,
        proto::MeDeviceCountsRequest {
            start: week.0,
            end: week.1,
        }
    );
    me!(
        h,
        ME_NOTEBOOK_MINUTE_COUNTS,
        DEMO_TOKEN,
        notebook_minute_counts,
        proto::MeNotebookMinuteCountsRequest {
            start: week.0,
            end: week.1,
        }
    );
    me!(
        h,
        ME_PAYLOAD_COUNTS,
        DEMO_TOKEN,
        payload_counts,
        proto::MePayloadCountsRequest {
            start: week.0,
            end: week.1,
            as_bytes: None,
        }
    );
    me!(
        h,
        ME_PAYLOAD_COUNTS,
        DEMO_TOKEN,
        payload_counts,
        proto::MePayloadCountsRequest {
            start: week.0,
            end: week.1,
            as_bytes: Some(true),
        }
    );
    me!(
        h,
        ME_PAYLOAD_COUNTS_BREAKDOWN,
        DEMO_TOKEN,
        payload_counts_breakdown,
        proto::MePayloadCountsBreakdownRequest {
            start: Some(START),
            end: Some(START + DAY_MS - 1),
            resolution: proto::Resolution::Hour.into(),
            as_bytes: None,
            include_non_billable: Some(true),
        }
    );

    // MeService writes.
    me!(
        h,
        ME_ADD_RECENT_ITEM,
        DEMO_TOKEN,
        add_recent_item,
        proto::MeAddRecentItemRequest {
            body: Some(proto::RecentItem {
                item_type: s("dashboard"),
                parent_id: None,
                item_id: s(DEMO_USER_DASHBOARD_ID),
            }),
        }
    );
    me!(
        h,
        ME_PATCH,
        DEMO_TOKEN,
        patch,
        proto::MePatchRequest {
            include_recent: None,
            summary_exclude: strings(&["payloadCount"]),
            summary_include: Vec::new(),
            body: Some(proto::MePatch {
                title: s("Chief IoT Architect"),
                location: s("Dayton, OH"),
                // Before the seed's tokens were issued, so they stay valid; brings out `tokenCutoff`.
                token_cutoff: Some(pbjson_types::Timestamp {
                    seconds: 1_704_067_200,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        }
    );
    me!(
        h,
        ME_VERIFY_EMAIL,
        DEMO_TOKEN,
        verify_email,
        proto::MeVerifyEmailRequest {}
    );
    me!(
        h,
        ME_DISCONNECT_GITHUB,
        DEMO_TOKEN,
        disconnect_github,
        proto::MeDisconnectGithubRequest {
            include_recent: Some(true),
            ..Default::default()
        }
    );
    me!(
        h,
        ME_GENERATE_TWO_FACTOR_AUTH,
        DEMO_TOKEN,
        generate_two_factor_auth,
        proto::MeGenerateTwoFactorAuthRequest {}
    );
    me!(
        h,
        ME_ENABLE_TWO_FACTOR_AUTH,
        DEMO_TOKEN,
        enable_two_factor_auth,
        proto::MeEnableTwoFactorAuthRequest {
            body: Some(proto::MultiFactorAuthEnable {
                two_factor_auth_key: None,
                password: s(DEMO_USER_PASSWORD),
                two_factor_code: s(TWO_FACTOR_CODE),
            }),
            ..Default::default()
        }
    );
    me!(
        h,
        ME_DISABLE_TWO_FACTOR_AUTH,
        DEMO_TOKEN,
        disable_two_factor_auth,
        proto::MeDisableTwoFactorAuthRequest {
            body: Some(proto::MultiFactorAuthDisable {
                two_factor_code: s(TWO_FACTOR_CODE),
                password: s(DEMO_USER_PASSWORD),
            }),
            ..Default::default()
        }
    );
    me!(
        h,
        ME_REFRESH_TOKEN,
        DEMO_TOKEN,
        refresh_token,
        proto::MeRefreshTokenRequest {}
    );
    me!(
        h,
        ME_TRANSFER_RESOURCES,
        DEMO_TOKEN,
        transfer_resources,
        proto::MeTransferResourcesRequest {
            body: Some(proto::ResourceTransfer {
                destination_id: s(DEMO_ORG_ID),
                destination_type: s("organization"),
                application_ids: strings(&[DEMO_USER_APPLICATION_ID]),
                dashboard_ids: Vec::new(),
                strict: Some(true),
            }),
        }
    );
    me!(
        h,
        ME_RESPOND_TO_INVITE,
        DEMO_TOKEN,
        respond_to_invite,
        proto::MeRespondToInviteRequest {
            invite_id: DEMO_INVITE_ID.into(),
            body: Some(proto::OrgInviteActionUser {
                action: s("accept"),
            }),
        }
    );

    // OrgService.
    org!(
        h,
        ORG_LIST,
        DEMO_TOKEN,
        list,
        proto::OrgListRequest {
            sort_field: proto::SortField::CreationDate.into(),
            sort_direction: proto::SortDirection::Desc.into(),
            page: Some(1),
            per_page: Some(2),
            filter_field: proto::FilterField::Name.into(),
            filter: "*a*".into(),
            summary_exclude: Vec::new(),
            summary_include: strings(&["memberCount", "payloadCount"]),
        }
    );
    let created = org!(
        h,
        ORG_CREATE,
        DEMO_TOKEN,
        create,
        proto::OrgCreateRequest {
            body: Some(proto::OrgPost {
                name: s("Fidelity Check Org"),
                description: s("Created by the fidelity tests"),
                billing_email: s("billing@example.com"),
                icon_color: s("#336699"),
                mfa_mode: s("adminRequired"),
                ..Default::default()
            }),
            ..Default::default()
        }
    );
    let new_org = created.id.clone().expect("the new organization has an id");
    org!(
        h,
        ORG_GET,
        DEMO_TOKEN,
        get,
        proto::OrgGetRequest {
            org_id: DEMO_ORG_ID.into(),
            ..Default::default()
        }
    );
    org!(
        h,
        ORG_PATCH,
        DEMO_TOKEN,
        patch,
        proto::OrgPatchRequest {
            org_id: new_org.clone(),
            body: Some(proto::OrgPatch {
                description: s("Patched by the fidelity tests"),
                ..Default::default()
            }),
            ..Default::default()
        }
    );
    let invites = org!(
        h,
        ORG_INVITE_MEMBER,
        DEMO_TOKEN,
        invite_member,
        proto::OrgInviteMemberRequest {
            org_id: new_org.clone(),
            body: Some(proto::OrgInvitePost {
                email: s(SECOND_USER_EMAIL),
                role: s("collaborate"),
                application_roles: vec![role(DEMO_ORG_APPLICATION_ID, "view")],
                dashboard_roles: vec![role(DEMO_USER_DASHBOARD_ID, "collaborate")],
                disallow_transfer: Some(true),
            }),
        }
    );
    let invite_id = invites.items[0]
        .id
        .clone()
        .expect("the invitation has an id");
    org!(
        h,
        ORG_PENDING_INVITES,
        DEMO_TOKEN,
        pending_invites,
        proto::OrgPendingInvitesRequest {
            org_id: DEMO_ORG_ID.into(),
        }
    );
    org!(
        h,
        ORG_REVOKE_INVITE,
        DEMO_TOKEN,
        revoke_invite,
        proto::OrgRevokeInviteRequest {
            org_id: new_org.clone(),
            invite_id,
        }
    );
    org!(
        h,
        ORG_MODIFY_MEMBER,
        DEMO_TOKEN,
        modify_member,
        proto::OrgModifyMemberRequest {
            org_id: DEMO_ORG_ID.into(),
            body: Some(proto::OrgMemberPatch {
                user_id: s(SECOND_USER_ID),
                role: s("collaborate"),
                application_roles: Vec::new(),
                dashboard_roles: vec![role(DEMO_USER_DASHBOARD_ID, "view")],
            }),
            ..Default::default()
        }
    );
    // Every organization of the demo user, Acme with the second user's new dashboard role.
    org!(
        h,
        ORG_LIST,
        DEMO_TOKEN,
        list,
        proto::OrgListRequest::default()
    );
    org!(
        h,
        ORG_REMOVE_MEMBER,
        DEMO_TOKEN,
        remove_member,
        proto::OrgRemoveMemberRequest {
            org_id: DEMO_ORG_ID.into(),
            user_id: THIRD_USER_ID.into(),
            ..Default::default()
        }
    );
    org!(
        h,
        ORG_DEVICE_COUNTS,
        DEMO_TOKEN,
        device_counts,
        proto::OrgDeviceCountsRequest {
            org_id: DEMO_ORG_ID.into(),
            start: week.0,
            end: week.1,
        }
    );
    org!(
        h,
        ORG_NOTEBOOK_MINUTE_COUNTS,
        DEMO_TOKEN,
        notebook_minute_counts,
        proto::OrgNotebookMinuteCountsRequest {
            org_id: DEMO_ORG_ID.into(),
            start: week.0,
            end: week.1,
        }
    );
    org!(
        h,
        ORG_PAYLOAD_COUNTS,
        DEMO_TOKEN,
        payload_counts,
        proto::OrgPayloadCountsRequest {
            org_id: DEMO_ORG_ID.into(),
            start: week.0,
            end: week.1,
            as_bytes: Some(false),
        }
    );
    org!(
        h,
        ORG_PAYLOAD_COUNTS_BREAKDOWN,
        DEMO_TOKEN,
        payload_counts_breakdown,
        proto::OrgPayloadCountsBreakdownRequest {
            org_id: DEMO_ORG_ID.into(),
            start: week.0,
            end: week.1,
            resolution: proto::Resolution::Day.into(),
            as_bytes: Some(true),
            include_non_billable: None,
        }
    );
    org!(
        h,
        ORG_TRANSFER_RESOURCES,
        DEMO_TOKEN,
        transfer_resources,
        proto::OrgTransferResourcesRequest {
            org_id: DEMO_ORG_ID.into(),
            body: Some(proto::ResourceTransfer {
                destination_id: s(DEMO_USER_ID),
                destination_type: s("user"),
                application_ids: strings(&[DEMO_USER_APPLICATION_ID]),
                dashboard_ids: Vec::new(),
                strict: None,
            }),
        }
    );
    org!(
        h,
        ORG_DELETE,
        DEMO_TOKEN,
        delete,
        proto::OrgDeleteRequest { org_id: new_org }
    );

    // InstanceOrgService.
    inst!(
        h,
        INSTANCE_ORG_GET,
        INSTANCE_ADMIN_TOKEN,
        get,
        proto::InstanceOrgGetRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ORG_ID.into(),
            summary_include: Vec::new(),
        }
    );
    inst!(
        h,
        INSTANCE_ORG_PATCH,
        INSTANCE_ADMIN_TOKEN,
        patch,
        proto::InstanceOrgPatchRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ORG_ID.into(),
            summary_include: strings(&["deviceCount", "notebookStats"]),
            clear_mask: None,
            body: Some(proto::InstanceOrgPatch {
                description: s("Patched by the fidelity tests"),
                limits: Some(proto::OrgLimits {
                    device: Some(6_000),
                    ..Default::default()
                }),
                // A date-time `disabledAt` comes back as a string.
                disabled_at: Some(proto::DisabledAt {
                    value: Some(proto::disabled_at::Value::At(pbjson_types::Timestamp {
                        seconds: 1_767_225_600,
                        nanos: 0,
                    })),
                }),
                tags: vec![proto::OrgTag {
                    key: s("tier"),
                    value: s("platinum"),
                }],
                banner: Some(proto::OrgBanner {
                    message: s("Read-only weekend"),
                    level: s("critical"),
                }),
                ..Default::default()
            }),
        }
    );
    inst!(
        h,
        INSTANCE_ORG_DEVICE_COUNTS,
        INSTANCE_ADMIN_TOKEN,
        device_counts,
        proto::InstanceOrgDeviceCountsRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ORG_ID.into(),
            start: None,
            end: None,
        }
    );
    inst!(
        h,
        INSTANCE_ORG_NOTEBOOK_MINUTE_COUNTS,
        DEMO_TOKEN,
        notebook_minute_counts,
        proto::InstanceOrgNotebookMinuteCountsRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ORG_ID.into(),
            start: week.0,
            end: week.1,
        }
    );
    inst!(
        h,
        INSTANCE_ORG_PAYLOAD_COUNTS,
        DEMO_TOKEN,
        payload_counts,
        proto::InstanceOrgPayloadCountsRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ORG_ID.into(),
            start: week.0,
            end: week.1,
            as_bytes: None,
        }
    );
    inst!(
        h,
        INSTANCE_ORG_PAYLOAD_COUNTS_BREAKDOWN,
        INSTANCE_ADMIN_TOKEN,
        payload_counts_breakdown,
        proto::InstanceOrgPayloadCountsBreakdownRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ORG_ID.into(),
            start: week.0,
            end: week.1,
            resolution: proto::Resolution::Unspecified.into(),
            as_bytes: None,
            include_non_billable: Some(true),
        }
    );
    inst!(
        h,
        INSTANCE_ORG_DELETE,
        INSTANCE_ADMIN_TOKEN,
        delete,
        proto::InstanceOrgDeleteRequest {
            instance_id: DEMO_INSTANCE_ID.into(),
            org_id: INSTANCE_ONLY_ORG_ID.into(),
        }
    );

    // Credentials last: a new password, then the second user deletes their account.
    me!(
        h,
        ME_CHANGE_PASSWORD,
        DEMO_TOKEN,
        change_password,
        proto::MeChangePasswordRequest {
            body: Some(proto::ChangePassword {
                two_factor_code: None,
                password: s(DEMO_USER_PASSWORD),
                new_password: s(NEW_PASSWORD),
                invalidate_existing_tokens: Some(false),
                token_ttl: Some(3_600),
            }),
        }
    );
    me!(
        h,
        ME_DELETE,
        SECOND_USER_TOKEN,
        delete,
        proto::MeDeleteRequest {
            body: Some(proto::UserCredentials {
                email: s(SECOND_USER_EMAIL),
                password: s(SECOND_USER_PASSWORD),
                ..Default::default()
            }),
        }
    );

    drop(h.gateway);
    drop(h.sandbox);
    h.captured
}

// Every action, exactly as the route table says.

/// All 42 actions are called; `Harness::call` checks each: exactly one upstream call, the one
/// `upstream::resolve` describes, answered with the action's documented success status.
#[tokio::test]
async fn every_action_is_served_through_the_gateway_as_the_route_table_says() {
    let captured = capture_all().await;
    let called: BTreeSet<&str> = captured.iter().map(|c| c.action).collect();
    let all: BTreeSet<&str> = ROUTES.iter().map(|r| r.action).collect();
    assert_eq!(all.len(), 42);
    assert_eq!(called, all, "every action is called");
}

// No data silently dropped.

/// The key paths of `value` (the upstream JSON of a `descriptor` message) that the message
/// cannot hold: keys without a field (by JSON name), and values of a JSON type the field's
/// kind does not take. Arrays are walked by their items (`[]`), `map<>` fields by their values.
fn unmapped(value: &Value, descriptor: &MessageDescriptor, path: &str, out: &mut Vec<String>) {
    let Value::Object(object) = value else {
        out.push(format!(
            "{path}: a {} where the message {} needs an object",
            json_type(value),
            descriptor.full_name()
        ));
        return;
    };
    for (key, value) in object {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = descriptor.get_field_by_json_name(key) else {
            out.push(format!("{at}: no field of {}", descriptor.full_name()));
            continue;
        };
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("map fields are messages");
            };
            let value_kind = entry.map_entry_value_field().kind();
            match value {
                Value::Object(map) => {
                    for (map_key, item) in map {
                        check_kind(item, &value_kind, &format!("{at}.<{map_key}>"), out);
                    }
                }
                other => out.push(format!("{at}: a {} for a map", json_type(other))),
            }
        } else if field.is_list() {
            match value {
                Value::Array(items) => {
                    for item in items {
                        check_kind(item, &field.kind(), &format!("{at}[]"), out);
                    }
                }
                other => out.push(format!("{at}: a {} for a repeated field", json_type(other))),
            }
        } else {
            check_kind(value, &field.kind(), &at, out);
        }
    }
}

fn check_kind(value: &Value, kind: &Kind, path: &str, out: &mut Vec<String>) {
    let fits = match kind {
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => value.as_str().is_some_and(is_rfc3339),
            "wnology.v1.DisabledAt" => value.is_boolean() || value.as_str().is_some_and(is_rfc3339),
            _ => {
                unmapped(value, message, path, out);
                true
            }
        },
        Kind::String | Kind::Enum(_) => value.is_string(),
        Kind::Bool => value.is_boolean(),
        Kind::Double | Kind::Float => value.is_number(),
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64 => value.is_i64(),
        Kind::Uint32 | Kind::Fixed32 | Kind::Uint64 | Kind::Fixed64 => value.is_u64(),
        Kind::Bytes => value.is_string(),
    };
    if !fits {
        let kind = match kind {
            Kind::Message(message) => message.full_name().to_string(),
            other => format!("{other:?}"),
        };
        out.push(format!(
            "{path}: {value} does not fit a field of kind {kind}"
        ));
    }
}

/// `unmapped` for a whole reply, top-level arrays mapped to `items`.
fn unmapped_keys(captured: &Captured) -> Vec<String> {
    let mut out = Vec::new();
    if captured.top_level_array {
        let wrapped = json!({ "items": captured.raw });
        unmapped(&wrapped, &captured.message, "", &mut out);
    } else {
        unmapped(&captured.raw, &captured.message, "", &mut out);
    }
    out
}

/// Every key path of a JSON value, arrays by their items and objects by their keys.
fn key_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                let at = format!("{path}.{key}");
                out.insert(at.clone());
                key_paths(value, &at, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_key_the_sandbox_returns_is_a_field_of_the_reply_message() {
    let captured = capture_all().await;
    let mut problems = Vec::new();
    let mut paths = BTreeSet::new();
    for c in &captured {
        for problem in unmapped_keys(c) {
            problems.push(format!(
                "{} ({}, after {}): {problem}",
                c.action,
                c.message.name(),
                c.sent
            ));
        }
        key_paths(&c.raw, c.action, &mut paths);
    }
    assert!(
        problems.is_empty(),
        "keys the gateway's messages cannot hold:\n{}",
        problems.join("\n")
    );
    // Not vacuous: the walk went deep (me, org, instanceOrg, invitations, usage series, maps).
    assert!(paths.len() > 900, "only {} key paths walked", paths.len());
    for sample in [
        "me.get.summary.payloadCount.deviceState.mqtt",
        "me.get.recentApplications.items[].name",
        "me.fetchRecentItems.parentId",
        "me.patch.tokenCutoff",
        "me.invites[].invitedBy.email",
        "orgs.get.items[].members[].applicationRoles[].resourceId",
        "orgs.get.filterField",
        "org.inviteMember[].dashboardRoles[].role",
        "org.get.banner.level",
        "instanceOrg.patch.tags[].value",
        "instanceOrg.patch.disabledAt",
        "me.payloadCountsBreakdown.counts[].value",
        "org.notebookMinuteCounts.counts[].timeout",
        "me.changePassword.needsToVerifyEmail",
    ] {
        assert!(paths.contains(sample), "no {sample} in the captured JSON");
    }
}

/// `value` without the object members whose value is an empty array, and their paths.
fn without_empty_arrays(value: &Value, path: &str, dropped: &mut Vec<String>) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .filter_map(|(key, value)| {
                    let at = format!("{path}.{key}");
                    if value.as_array().is_some_and(Vec::is_empty) {
                        dropped.push(at);
                        None
                    } else {
                        Some((key.clone(), without_empty_arrays(value, &at, dropped)))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| without_empty_arrays(item, &format!("{path}[]"), dropped))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The reply equals the decoded raw JSON, and re-encodes to the raw JSON exactly, with one
/// exception inherent to proto3: a repeated field has no presence, so an empty array
/// (`"tags": []`, `"applicationRoles": []`) decodes to the same message as an absent one and is
/// not written back. Every other byte of data (every value, date, number and map entry) must
/// come back unchanged.
#[tokio::test]
async fn replies_re_encode_to_exactly_the_json_the_sandbox_sent() {
    let captured = capture_all().await;
    let mut problems = Vec::new();
    let mut empty_arrays = BTreeSet::new();
    for c in &captured {
        if !c.reply_is_decoded_raw {
            problems.push(format!(
                "{}: the gateway's reply differs from the decoded JSON",
                c.action
            ));
        }
        let mut dropped = Vec::new();
        let expected = without_empty_arrays(&c.raw, c.action, &mut dropped);
        empty_arrays.extend(dropped);
        if c.reencoded != expected {
            let mut raw = BTreeSet::new();
            let mut again = BTreeSet::new();
            key_paths(&expected, "", &mut raw);
            key_paths(&c.reencoded, "", &mut again);
            problems.push(format!(
                "{}: re-encoding changes the JSON; lost {:?}, added {:?}\n  raw:       {}\n  reencoded: {}",
                c.action,
                raw.difference(&again).collect::<Vec<_>>(),
                again.difference(&raw).collect::<Vec<_>>(),
                c.raw,
                c.reencoded
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The exception is real (the sandbox, like the upstream, writes empty lists), and only
    // ever about lists.
    for path in [
        "org.get.members[].applicationRoles",
        "instanceOrg.get.whitelistedEmailDomains",
    ] {
        assert!(empty_arrays.contains(path), "{empty_arrays:#?}");
    }
}

/// The walk itself finds unknown keys, misplaced types, bad dates and bad map values.
#[test]
fn the_key_walk_reports_what_a_message_cannot_hold() {
    let pool = json::descriptor_pool();
    let org = pool.get_message_by_name("wnology.v1.Org").unwrap();
    let mut out = Vec::new();
    unmapped(
        &json!({
            "id": "665020000000000000000001",
            "novel": 1,
            "members": [{"userId": "665010000000000000000001", "nickname": "x"}],
            "limits": {"device": "many"},
            "creationDate": "yesterday",
            "disabledAt": false,
            "summary": {"payloadCount": {"mqttIn": {"mqtt": "1"}}},
        }),
        &org,
        "",
        &mut out,
    );
    out.sort();
    assert_eq!(
        out,
        vec![
            "creationDate: \"yesterday\" does not fit a field of kind google.protobuf.Timestamp"
                .to_string(),
            "limits.device: \"many\" does not fit a field of kind int64".to_string(),
            "members[].nickname: no field of wnology.v1.Org.Member".to_string(),
            "novel: no field of wnology.v1.Org".to_string(),
            "summary.payloadCount.mqttIn.<mqtt>: \"1\" does not fit a field of kind double"
                .to_string(),
        ]
    );
}

// Schema facts.

/// A JSON type or format of the upstream schemas.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Str,
    /// `type: integer`.
    Int,
    /// `type: number`.
    Num,
    Bool,
    Obj,
    Arr,
    /// `pattern: ^[A-Fa-f\d]{24}$`.
    Id,
    /// `format: date-time`.
    DateTime,
    /// `format: email`.
    Email,
    /// `format: uri`.
    Uri,
    /// `enum`.
    OneOf(&'static [&'static str]),
    /// `disabledAt`: `oneOf [{type: boolean, enum: [false]}, {type: string, format: date-time}]`.
    FalseOrDateTime,
    /// `success`: `{type: boolean, enum: [true]}`.
    True,
}

/// One fact about a property. Paths: `a.b` for nested properties, `[]` for the items of an
/// array (`members[].role`, `[].id` for a top-level array), `*` for any key (`*.*` are the
/// numbers inside each `payloadStats` type).
#[derive(Debug, Clone, Copy)]
enum Fact {
    /// The property is required and has this type.
    Required(&'static str, Ty),
    /// Where present, the property has this type.
    Typed(&'static str, Ty),
    /// `additionalProperties: false`: the object at this path has only these keys.
    Only(&'static str, &'static [&'static str]),
}

use Fact::{Only, Required, Typed};
use Ty::*;

const ROLES: &[&str] = &["admin", "edit", "collaborate", "view", "none"];
const RESOURCE_ROLES: &[&str] = &["collaborate", "view", "none"];
const MFA_MODES: &[&str] = &["notRequired", "adminRequired", "required"];
const SUBSCRIPTION_STATUSES: &[&str] = &["trialing", "active", "past_due", "canceled", "unpaid"];
const ITEM_TYPES: &[&str] = &["application", "device", "flow", "dashboard", "organization"];
const BANNER_LEVELS: &[&str] = &["info", "warning", "critical"];
const ORG_LIMIT_KEYS: &[&str] = &[
    "apitoken",
    "application",
    "applicationcertificate",
    "applicationcertificateauthority",
    "applicationkey",
    "credential",
    "dashboard",
    "datatable",
    "device",
    "devicerecipe",
    "experiencedomain",
    "experienceendpoint",
    "experiencegroup",
    "experienceslug",
    "experienceuser",
    "experienceversion",
    "experienceview",
    "file",
    "flow",
    "integration",
    "notebook",
    "privatefile",
    "resourcejob",
    "webhook",
    "dataTTL",
    "member",
    "payload",
    "storage",
    "notebookMinutesPerRun",
    "notebookMinutesPerMonth",
    "notebookInParallel",
    "experienceFlowSlots",
    "applicationFlowSlots",
    "systemInterval",
];
/// `me.limits` has the organization's keys but `member`.
const ME_LIMIT_KEYS: &[&str] = &[
    "apitoken",
    "application",
    "applicationcertificate",
    "applicationcertificateauthority",
    "applicationkey",
    "credential",
    "dashboard",
    "datatable",
    "device",
    "devicerecipe",
    "experiencedomain",
    "experienceendpoint",
    "experiencegroup",
    "experienceslug",
    "experienceuser",
    "experienceversion",
    "experienceview",
    "file",
    "flow",
    "integration",
    "notebook",
    "privatefile",
    "resourcejob",
    "webhook",
    "dataTTL",
    "payload",
    "storage",
    "notebookMinutesPerRun",
    "notebookMinutesPerMonth",
    "notebookInParallel",
    "experienceFlowSlots",
    "applicationFlowSlots",
    "systemInterval",
];
const INSTANCE_ORG_KEYS: &[&str] = &[
    "creationDate",
    "lastUpdated",
    "name",
    "id",
    "orgId",
    "instanceId",
    "description",
    "iconColor",
    "limits",
    "summary",
    "whitelistedEmailDomains",
    "auditLogEnabled",
    "disabledAt",
    "isReadOnly",
    "tags",
    "referralId",
    "mfaMode",
    "banner",
    "planId",
    "customerId",
    "subscriptionId",
    "billingEmail",
    "subscriptionStatus",
    "currentPeriodStart",
    "currentPeriodEnd",
];

/// `authedUser.json`.
const AUTHED_USER: &[Fact] = &[
    Required("userId", Id),
    Required("token", Str),
    Typed("needsToVerifyEmail", Bool),
];

/// `me.json`.
const ME: &[Fact] = &[
    Typed("id", Id),
    Typed("userId", Id),
    Typed("creationDate", DateTime),
    Typed("lastUpdated", DateTime),
    Typed("passwordLastUpdated", DateTime),
    Typed("email", Email),
    Typed("firstName", Str),
    Typed("lastName", Str),
    Typed("tokenCutoff", DateTime),
    Typed("emailVerified", Bool),
    Typed("needsToVerifyEmail", Bool),
    Typed("twoFactorAuthEnabled", Bool),
    Typed("fullName", Str),
    Typed("githubName", Str),
    Typed("avatarUrl", Uri),
    Typed("limits", Obj),
    Only("limits", ME_LIMIT_KEYS),
    Typed("limits.*", Int),
    Typed("recentDashboards.itemType", OneOf(ITEM_TYPES)),
    Typed("recentDashboards.items[].id", Id),
    Typed("recentApplications.items[].id", Id),
    Typed("recentApplications.items[].name", Str),
    Typed("recentOrganizations.items[].id", Id),
    Typed("summary", Obj),
    Typed("summary.appCount", Int),
    Typed("summary.dashCount", Int),
    Typed("summary.deviceCount", Int),
    Typed("summary.orgCount", Int),
    Typed("summary.instanceCount", Int),
    Typed("summary.webhookCount", Int),
    Typed("summary.payloadCount", Obj),
    Typed("summary.payloadCount.*", Obj),
    Typed("summary.payloadCount.*.*", Num),
    Typed("summary.storageStats.count", Int),
    Typed("summary.storageStats.size", Int),
    Typed("summary.notebookStats.awaitingCompletion", Int),
    Typed("summary.notebookStats.minutesThisPeriod", Int),
    Typed("summary.notebookStats.runsThisPeriod", Int),
    Typed("currentPeriodStart", DateTime),
    Typed("currentPeriodEnd", DateTime),
    Typed("ssoLinked", Bool),
];

/// `org.json` (also the items of `orgs.json`).
const ORG: &[Fact] = &[
    Typed("id", Id),
    Typed("orgId", Id),
    Typed("creationDate", DateTime),
    Typed("lastUpdated", DateTime),
    Typed("name", Str),
    Typed("description", Str),
    Typed("members", Arr),
    Typed("members[].userId", Id),
    Typed("members[].firstName", Str),
    Typed("members[].email", Email),
    Typed("members[].avatarUrl", Uri),
    Typed("members[].role", OneOf(ROLES)),
    Typed("members[].applicationRoles", Arr),
    Required("members[].applicationRoles[].resourceId", Id),
    Required("members[].applicationRoles[].role", OneOf(RESOURCE_ROLES)),
    Only("members[].applicationRoles[]", &["resourceId", "role"]),
    Required("members[].dashboardRoles[].resourceId", Id),
    Required("members[].dashboardRoles[].role", OneOf(RESOURCE_ROLES)),
    Only("members[].dashboardRoles[]", &["resourceId", "role"]),
    Typed("members[].twoFactorAuthEnabled", Bool),
    Typed("members[].ssoLinked", Bool),
    Typed("limits", Obj),
    Only("limits", ORG_LIMIT_KEYS),
    Typed("limits.*", Int),
    Typed("summary.memberCount", Int),
    Typed("summary.pendingInviteCount", Int),
    Typed("summary.deviceCount", Int),
    Typed("summary.payloadCount.*.*", Num),
    Typed("summary.storageStats.size", Int),
    Typed("planId", Str),
    Typed("billingEmail", Email),
    Typed("subscriptionStatus", OneOf(SUBSCRIPTION_STATUSES)),
    Typed("currentPeriodStart", DateTime),
    Typed("currentPeriodEnd", DateTime),
    Typed("isEnterprise", Bool),
    Typed("iconColor", Str),
    Typed("whitelistedEmailDomains", Arr),
    Typed("whitelistedEmailDomains[]", Str),
    Typed("disabledAt", FalseOrDateTime),
    Typed("isReadOnly", Bool),
    Typed("mfaMode", OneOf(MFA_MODES)),
    Typed("banner.message", Str),
    Typed("banner.level", OneOf(BANNER_LEVELS)),
    Only("banner", &["message", "level"]),
];

/// `orgs.json` (its items: [`ORG`]).
const ORGS: &[Fact] = &[
    Typed("items", Arr),
    Typed("count", Int),
    Typed("totalCount", Int),
    Typed("perPage", Int),
    Typed("page", Int),
    Typed("filter", Str),
    Typed("filterField", Str),
    Typed("sortField", Str),
    Typed("sortDirection", OneOf(&["asc", "desc", "ASC", "DESC", ""])),
];

/// `instanceOrg.json`.
const INSTANCE_ORG: &[Fact] = &[
    Only("", INSTANCE_ORG_KEYS),
    Required("name", Str),
    Typed("creationDate", DateTime),
    Typed("lastUpdated", DateTime),
    Typed("id", Id),
    Typed("orgId", Id),
    Typed("instanceId", Id),
    Typed("description", Str),
    Typed("iconColor", Str),
    Only("limits", ORG_LIMIT_KEYS),
    Typed("limits.*", Int),
    Typed("summary.memberCount", Int),
    Typed("summary.deviceCount", Int),
    Typed("summary.notebookStats.runsThisPeriod", Int),
    Typed("whitelistedEmailDomains", Arr),
    Typed("auditLogEnabled", Bool),
    Typed("disabledAt", FalseOrDateTime),
    Typed("isReadOnly", Bool),
    Typed("tags", Arr),
    Required("tags[].key", Str),
    Required("tags[].value", Str),
    Only("tags[]", &["key", "value"]),
    Typed("referralId", Str),
    Typed("mfaMode", OneOf(MFA_MODES)),
    Typed("banner.level", OneOf(BANNER_LEVELS)),
    Only("banner", &["message", "level"]),
    Typed("planId", Str),
    Typed("customerId", Str),
    Typed("subscriptionId", Str),
    Typed("billingEmail", Email),
    Typed("subscriptionStatus", OneOf(SUBSCRIPTION_STATUSES)),
    Typed("currentPeriodStart", DateTime),
    Typed("currentPeriodEnd", DateTime),
];

/// The items of `orgInvites.json`.
const ORG_INVITE: &[Fact] = &[
    Typed("id", Id),
    Typed("email", Email),
    Typed("role", OneOf(ROLES)),
    Typed("applicationRoles", Arr),
    Required("applicationRoles[].resourceId", Id),
    Required("applicationRoles[].role", OneOf(RESOURCE_ROLES)),
    Only("applicationRoles[]", &["resourceId", "role"]),
    Required("dashboardRoles[].resourceId", Id),
    Required("dashboardRoles[].role", OneOf(RESOURCE_ROLES)),
    Typed("inviteDate", DateTime),
    Typed("ttl", Num),
    Typed("hasExpired", Bool),
    Typed("disallowTransfer", Bool),
];

/// `orgInviteUser.json` (also the items of `orgInvitesUser.json`).
const ORG_INVITE_USER: &[Fact] = &[
    Typed("orgName", Str),
    Typed("role", OneOf(ROLES)),
    Typed("requiresMFA", Bool),
    Typed("inviteDate", DateTime),
    Typed("ttl", Num),
    Typed("expired", Bool),
    Typed("id", Id),
    Typed("invitedBy.fullName", Str),
    Typed("invitedBy.email", Email),
];

/// `orgInviteResultUser.json`.
const ORG_INVITE_RESULT_USER: &[Fact] = &[
    Typed("result", OneOf(&["accepted", "rejected", "dismissed"])),
    Typed("orgId", Id),
];

/// `recentItemList.json`.
const RECENT_ITEM_LIST: &[Fact] = &[
    Typed("itemType", OneOf(ITEM_TYPES)),
    Typed("parentId", Id),
    Typed("items", Arr),
    Typed("items[].id", Id),
    Typed("items[].name", Str),
];

/// `multiFactorAuthInfo.json`.
const MULTI_FACTOR_AUTH_INFO: &[Fact] = &[
    Only("", &["key", "keyUri"]),
    Typed("key", Str),
    Typed("keyUri", Str),
];

/// `success.json`.
const SUCCESS: &[Fact] = &[Typed("success", True)];

/// `deviceCounts.json`.
const DEVICE_COUNTS: &[Fact] = &[
    Typed("start", DateTime),
    Typed("end", DateTime),
    Typed("counts", Arr),
    Typed("counts[].date", DateTime),
    Typed("counts[].created", Int),
    Typed("counts[].deleted", Int),
    Typed("counts[].total", Int),
];

/// `notebookMinuteCounts.json`.
const NOTEBOOK_MINUTE_COUNTS: &[Fact] = &[
    Typed("start", DateTime),
    Typed("end", DateTime),
    Typed("counts", Arr),
    Typed("counts[].date", DateTime),
    Typed("counts[].minutes", Int),
    Typed("counts[].completed", Int),
    Typed("counts[].canceled", Int),
    Typed("counts[].errored", Int),
    Typed("counts[].timeout", Int),
];

/// `payloadCountsBreakdown.json`.
const PAYLOAD_COUNTS_BREAKDOWN: &[Fact] = &[
    Typed("start", DateTime),
    Typed("end", DateTime),
    Typed("counts", Arr),
    Typed("counts[].date", DateTime),
    Typed("counts[].value", Int),
];

/// `payloadStats.json`: each payload type is an object of numbers (`patternProperties`).
const PAYLOAD_STATS: &[Fact] = &[
    Typed("appFile", Obj),
    Typed("deviceState", Obj),
    Typed("mqttIn", Obj),
    Typed("webhook", Obj),
    Typed("*", Obj),
    Typed("*.*", Num),
];

/// A response schema: its facts, and the facts of nested schemas under a prefix.
struct Schema {
    name: &'static str,
    /// The JSON type of the whole body.
    body: Ty,
    facts: &'static [Fact],
    nested: &'static [(&'static str, &'static [Fact])],
}

const SCHEMAS: &[Schema] = &[
    Schema {
        name: "authedUser",
        body: Obj,
        facts: AUTHED_USER,
        nested: &[],
    },
    Schema {
        name: "me",
        body: Obj,
        facts: ME,
        nested: &[],
    },
    Schema {
        name: "org",
        body: Obj,
        facts: ORG,
        nested: &[],
    },
    Schema {
        name: "orgs",
        body: Obj,
        facts: ORGS,
        nested: &[("items[]", ORG)],
    },
    Schema {
        name: "instanceOrg",
        body: Obj,
        facts: INSTANCE_ORG,
        nested: &[],
    },
    Schema {
        name: "orgInvites",
        body: Arr,
        facts: &[],
        nested: &[("[]", ORG_INVITE)],
    },
    Schema {
        name: "orgInvitesUser",
        body: Arr,
        facts: &[],
        nested: &[("[]", ORG_INVITE_USER)],
    },
    Schema {
        name: "orgInviteUser",
        body: Obj,
        facts: ORG_INVITE_USER,
        nested: &[],
    },
    Schema {
        name: "orgInviteResultUser",
        body: Obj,
        facts: ORG_INVITE_RESULT_USER,
        nested: &[],
    },
    Schema {
        name: "recentItemList",
        body: Obj,
        facts: RECENT_ITEM_LIST,
        nested: &[],
    },
    Schema {
        name: "multiFactorAuthInfo",
        body: Obj,
        facts: MULTI_FACTOR_AUTH_INFO,
        nested: &[],
    },
    Schema {
        name: "success",
        body: Obj,
        facts: SUCCESS,
        nested: &[],
    },
    Schema {
        name: "deviceCounts",
        body: Obj,
        facts: DEVICE_COUNTS,
        nested: &[],
    },
    Schema {
        name: "notebookMinuteCounts",
        body: Obj,
        facts: NOTEBOOK_MINUTE_COUNTS,
        nested: &[],
    },
    Schema {
        name: "payloadCountsBreakdown",
        body: Obj,
        facts: PAYLOAD_COUNTS_BREAKDOWN,
        nested: &[],
    },
    Schema {
        name: "payloadStats",
        body: Obj,
        facts: PAYLOAD_STATS,
        nested: &[],
    },
];

/// Each action's documented success response schema (`endpoints.json`, API 1.30.0).
const RESPONSE_SCHEMAS: [(&str, &str); 42] = [
    ("me.addRecentItem", "recentItemList"),
    ("me.changePassword", "authedUser"),
    ("me.delete", "success"),
    ("me.deviceCounts", "deviceCounts"),
    ("me.disableTwoFactorAuth", "me"),
    ("me.disconnectGithub", "me"),
    ("me.enableTwoFactorAuth", "me"),
    ("me.fetchRecentItems", "recentItemList"),
    ("me.generateTwoFactorAuth", "multiFactorAuthInfo"),
    ("me.get", "me"),
    ("me.invite", "orgInviteUser"),
    ("me.invites", "orgInvitesUser"),
    ("me.notebookMinuteCounts", "notebookMinuteCounts"),
    ("me.patch", "me"),
    ("me.payloadCounts", "payloadStats"),
    ("me.payloadCountsBreakdown", "payloadCountsBreakdown"),
    ("me.refreshToken", "authedUser"),
    ("me.respondToInvite", "orgInviteResultUser"),
    ("me.transferResources", "success"),
    ("me.verifyEmail", "success"),
    ("orgs.get", "orgs"),
    ("orgs.post", "org"),
    ("org.delete", "success"),
    ("org.deviceCounts", "deviceCounts"),
    ("org.get", "org"),
    ("org.inviteMember", "orgInvites"),
    ("org.modifyMember", "org"),
    ("org.notebookMinuteCounts", "notebookMinuteCounts"),
    ("org.patch", "org"),
    ("org.payloadCounts", "payloadStats"),
    ("org.payloadCountsBreakdown", "payloadCountsBreakdown"),
    ("org.pendingInvites", "orgInvites"),
    ("org.removeMember", "org"),
    ("org.revokeInvite", "orgInvites"),
    ("org.transferResources", "success"),
    ("instanceOrg.delete", "success"),
    ("instanceOrg.deviceCounts", "deviceCounts"),
    ("instanceOrg.get", "instanceOrg"),
    ("instanceOrg.notebookMinuteCounts", "notebookMinuteCounts"),
    ("instanceOrg.patch", "instanceOrg"),
    ("instanceOrg.payloadCounts", "payloadStats"),
    (
        "instanceOrg.payloadCountsBreakdown",
        "payloadCountsBreakdown",
    ),
];

fn schema_of(action: &str) -> &'static Schema {
    let name = RESPONSE_SCHEMAS
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, schema)| *schema)
        .unwrap_or_else(|| panic!("no response schema for {action}"));
    SCHEMAS
        .iter()
        .find(|schema| schema.name == name)
        .unwrap_or_else(|| panic!("no facts for {name}"))
}

fn is_rfc3339(text: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why `value` is not of type `ty`, if it is not.
fn type_error(value: &Value, ty: Ty) -> Option<String> {
    let fits = match ty {
        Str => value.is_string(),
        Int => value.is_i64() || value.is_u64(),
        Num => value.is_number(),
        Bool => value.is_boolean(),
        Obj => value.is_object(),
        Arr => value.is_array(),
        Id => value.as_str().is_some_and(is_id),
        DateTime => value.as_str().is_some_and(is_rfc3339),
        Email => value.as_str().is_some_and(|text| {
            text.split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
        }),
        Uri => value.as_str().is_some_and(|text| {
            text.split_once("://")
                .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
        }),
        OneOf(allowed) => value.as_str().is_some_and(|text| allowed.contains(&text)),
        FalseOrDateTime => value == &Value::Bool(false) || value.as_str().is_some_and(is_rfc3339),
        True => value == &Value::Bool(true),
    };
    (!fits).then(|| format!("{value} is not {ty:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step<'a> {
    Key(&'a str),
    Items,
    AnyKey,
}

/// `members[].applicationRoles[].role` → Key, Items, Key, Items, Key.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        match name {
            "" => {}
            "*" => steps.push(Step::AnyKey),
            name => steps.push(Step::Key(name)),
        }
        if items {
            steps.push(Step::Items);
        }
    }
    steps
}

/// The values at `steps` below `value`, with their paths.
fn select<'v>(value: &'v Value, steps: &[Step], path: String) -> Vec<(String, &'v Value)> {
    let Some((step, rest)) = steps.split_first() else {
        return vec![(path, value)];
    };
    match (step, value) {
        (Step::Key(key), Value::Object(object)) => object
            .get(*key)
            .map(|v| select(v, rest, format!("{path}.{key}")))
            .unwrap_or_default(),
        (Step::AnyKey, Value::Object(object)) => object
            .iter()
            .flat_map(|(key, v)| select(v, rest, format!("{path}.{key}")))
            .collect(),
        (Step::Items, Value::Array(items)) => items
            .iter()
            .flat_map(|v| select(v, rest, format!("{path}[]")))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks `fact` on `body`; returns the problems and whether the fact applied anywhere.
fn check_fact(body: &Value, prefix: &str, fact: Fact, problems: &mut Vec<String>) -> bool {
    let (path, required) = match fact {
        Required(path, _) => (path, true),
        Typed(path, _) => (path, false),
        Only(path, allowed) => {
            let mut applied = false;
            for (at, object) in select(body, &steps(&format!("{prefix}.{path}")), String::new()) {
                applied = true;
                match object.as_object() {
                    Some(object) => {
                        for key in object.keys().filter(|key| !allowed.contains(&key.as_str())) {
                            problems.push(format!("{at}: property {key} is not allowed"));
                        }
                    }
                    None => problems.push(format!("{at}: {object} is not an object")),
                }
            }
            return applied;
        }
    };
    let ty = match fact {
        Required(_, ty) | Typed(_, ty) => ty,
        Only(..) => unreachable!(),
    };
    let full = format!("{prefix}.{path}");
    let all = steps(&full);
    let (last, parents) = all.split_last().expect("a fact names a property");
    let mut applied = false;
    for (at, parent) in select(body, parents, String::new()) {
        let values: Vec<(String, &Value)> = match (last, parent) {
            (Step::Key(key), Value::Object(object)) => match object.get(*key) {
                Some(value) => vec![(format!("{at}.{key}"), value)],
                None => {
                    if required {
                        problems.push(format!("{at}: required property {key} is missing"));
                    }
                    Vec::new()
                }
            },
            (Step::AnyKey, Value::Object(object)) => object
                .iter()
                .map(|(key, value)| (format!("{at}.{key}"), value))
                .collect(),
            (Step::Items, Value::Array(items)) => items
                .iter()
                .map(|value| (format!("{at}[]"), value))
                .collect(),
            (_, other) => {
                problems.push(format!("{at}: {other} is not a container"));
                Vec::new()
            }
        };
        for (at, value) in values {
            applied = true;
            if let Some(why) = type_error(value, ty) {
                problems.push(format!("{at}: {why}"));
            }
        }
    }
    applied
}

/// Checks a body against its schema's facts; returns the problems and which facts applied.
fn check_schema(
    schema: &Schema,
    body: &Value,
    problems: &mut Vec<String>,
    applied: &mut BTreeMap<String, bool>,
) {
    if let Some(why) = type_error(body, schema.body) {
        problems.push(format!("the body: {why}"));
    }
    let groups = std::iter::once(("", schema.facts)).chain(schema.nested.iter().copied());
    for (prefix, facts) in groups {
        for fact in facts {
            let hit = check_fact(body, prefix, *fact, problems);
            let entry = applied
                .entry(format!("{}: {prefix} {fact:?}", schema.name))
                .or_insert(false);
            *entry |= hit;
        }
    }
}

#[tokio::test]
async fn sandbox_responses_hold_the_schemas_required_properties_and_types() {
    let routed: BTreeSet<&str> = ROUTES.iter().map(|r| r.action).collect();
    let documented: BTreeSet<&str> = RESPONSE_SCHEMAS.iter().map(|(a, _)| *a).collect();
    assert_eq!(routed, documented, "a response schema for every action");

    let captured = capture_all().await;
    let mut problems = Vec::new();
    let mut applied = BTreeMap::new();
    for c in &captured {
        let mut found = Vec::new();
        check_schema(schema_of(c.action), &c.raw, &mut found, &mut applied);
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", c.action)));
    }
    assert!(
        problems.is_empty(),
        "schema facts broken:\n{}",
        problems.join("\n")
    );
    // Every fact of the table was exercised by at least one response.
    let unexercised: Vec<&String> = applied
        .iter()
        .filter(|(_, hit)| !**hit)
        .map(|(fact, _)| fact)
        .collect();
    assert!(
        unexercised.is_empty(),
        "facts no response exercised: {unexercised:#?}"
    );
}

/// The fact checker itself finds missing required properties, wrong types, bad ids and dates,
/// values outside an enumeration, and properties a closed object does not allow.
#[test]
fn the_schema_checker_reports_broken_facts() {
    let mut problems = Vec::new();
    let mut applied = BTreeMap::new();
    check_schema(
        schema_of("me.refreshToken"),
        &json!({"token": "t", "needsToVerifyEmail": "no"}),
        &mut problems,
        &mut applied,
    );
    check_schema(
        schema_of("instanceOrg.get"),
        &json!({
            "name": "n", "members": [], "creationDate": "2025-13-01",
            "tags": [{"key": "k"}], "mfaMode": "sometimes", "disabledAt": true,
            "limits": {"device": 1.5},
        }),
        &mut problems,
        &mut applied,
    );
    check_schema(
        schema_of("org.pendingInvites"),
        &json!([{"ttl": "7d", "applicationRoles": [{"role": "view", "extra": 1}]}]),
        &mut problems,
        &mut applied,
    );
    problems.sort();
    assert_eq!(
        problems,
        vec![
            ".creationDate: \"2025-13-01\" is not DateTime",
            ".disabledAt: true is not FalseOrDateTime",
            ".limits.device: 1.5 is not Int",
            ".mfaMode: \"sometimes\" is not OneOf([\"notRequired\", \"adminRequired\", \"required\"])",
            ".needsToVerifyEmail: \"no\" is not Bool",
            ".tags[]: required property value is missing",
            ": property members is not allowed",
            ": required property userId is missing",
            "[].applicationRoles[]: property extra is not allowed",
            "[].applicationRoles[]: required property resourceId is missing",
            "[].ttl: \"7d\" is not Num",
        ]
    );
}
