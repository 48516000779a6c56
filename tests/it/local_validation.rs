//! Bad input is refused before any upstream call: a missing token is UNAUTHENTICATED, a bad
//! or missing id, parameter or body is INVALID_ARGUMENT naming the field.

use crate::support::*;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::proto;

async fn gateway_and_upstream() -> (RecordingUpstream, TestGateway) {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    (upstream, gateway)
}

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, field, "{status:?}");
    assert!(
        status.message().contains(field),
        "message names the field: {}",
        status.message()
    );
}

#[tokio::test]
async fn a_missing_or_malformed_token_is_unauthenticated_and_never_sent() {
    let (upstream, gateway) = gateway_and_upstream().await;
    let mut me = gateway.me().await;
    let status = me
        .get(tonic::Request::new(proto::MeGetRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    for bad in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer   ",
        "token-without-scheme",
    ] {
        let mut request = tonic::Request::new(proto::MeGetRequest::default());
        request
            .metadata_mut()
            .insert("authorization", bad.parse().unwrap());
        let status = me.get(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{bad}");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn rejected_path_ids_never_reach_the_upstream() {
    let (upstream, gateway) = gateway_and_upstream().await;
    let mut org = gateway.org().await;
    for bad in [
        "../me",
        "",
        "575ed6e87ae143cd83dc4aa",
        "575ed6e87ae143cd83dc4aa8a",
        "575ed6e87ae143cd83dc4aaz",
        "575ed6e8%2e%2e3cd83dc4aa8",
        "575ed6e87ae143cd83dc4a/8",
    ] {
        let status = org
            .get(authed(proto::OrgGetRequest {
                org_id: bad.into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_invalid(&status, "org_id");
    }
    let mut instance_org = gateway.instance_org().await;
    let status = instance_org
        .get(authed(proto::InstanceOrgGetRequest {
            instance_id: "../../me".into(),
            org_id: id(1),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "instance_id");
    let status = instance_org
        .delete(authed(proto::InstanceOrgDeleteRequest {
            instance_id: id(1),
            org_id: "x".into(),
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "org_id");
    let mut me = gateway.me().await;
    let status = me
        .invite(authed(proto::MeInviteRequest {
            invite_id: "?x=1".into(),
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "invite_id");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn rejected_query_ids_never_reach_the_upstream() {
    let (upstream, gateway) = gateway_and_upstream().await;
    let mut org = gateway.org().await;
    let status = org
        .remove_member(authed(proto::OrgRemoveMemberRequest {
            org_id: id(1),
            user_id: "me&x=1".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "user_id");
    let status = org
        .revoke_invite(authed(proto::OrgRevokeInviteRequest {
            org_id: id(1),
            invite_id: "123".into(),
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "invite_id");
    let status = gateway
        .me()
        .await
        .fetch_recent_items(authed(proto::MeFetchRecentItemsRequest {
            parent_id: "nope".into(),
            item_type: proto::ItemType::Device as i32,
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "parent_id");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn required_query_parameters_and_bodies_must_be_present() {
    let (upstream, gateway) = gateway_and_upstream().await;
    let mut org = gateway.org().await;
    let status = org
        .remove_member(authed(proto::OrgRemoveMemberRequest {
            org_id: id(1),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "user_id");
    let status = org
        .revoke_invite(authed(proto::OrgRevokeInviteRequest {
            org_id: id(1),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "invite_id");
    let status = gateway
        .me()
        .await
        .fetch_recent_items(authed(proto::MeFetchRecentItemsRequest::default()))
        .await
        .unwrap_err();
    assert_invalid(&status, "item_type");

    let status = org
        .create(authed(proto::OrgCreateRequest::default()))
        .await
        .unwrap_err();
    assert_invalid(&status, "body");
    let status = org
        .create(authed(proto::OrgCreateRequest {
            body: Some(proto::OrgPost {
                description: Some("no name".into()),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "body.name");
    let status = org
        .modify_member(authed(proto::OrgModifyMemberRequest {
            org_id: id(1),
            body: Some(proto::OrgMemberPatch {
                role: Some("view".into()),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "body.user_id");
    let status = gateway
        .me()
        .await
        .delete(authed(proto::MeDeleteRequest::default()))
        .await
        .unwrap_err();
    assert_invalid(&status, "body");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn unknown_enum_numbers_and_bad_list_items_are_refused() {
    let (upstream, gateway) = gateway_and_upstream().await;
    let mut org = gateway.org().await;
    let status = org
        .list(authed(proto::OrgListRequest {
            sort_direction: 7,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "sort_direction");
    let status = org
        .list(authed(proto::OrgListRequest {
            summary_include: vec!["payloadCount,deviceCount".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "summary_include");
    let status = org
        .list(authed(proto::OrgListRequest {
            summary_exclude: vec![String::new()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_invalid(&status, "summary_exclude");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_clear_mask_naming_anything_but_an_empty_list_of_the_body_is_refused() {
    let (upstream, gateway) = gateway_and_upstream().await;
    let mut instance = gateway.instance_org().await;
    let tagged = proto::InstanceOrgPatch {
        tags: vec![proto::OrgTag::default()],
        ..Default::default()
    };
    for (path, body) in [
        ("name", proto::InstanceOrgPatch::default()),
        ("no_such_field", proto::InstanceOrgPatch::default()),
        ("limits.device", proto::InstanceOrgPatch::default()),
        ("tags", tagged),
    ] {
        let status = instance
            .patch(authed(proto::InstanceOrgPatchRequest {
                instance_id: id(1),
                org_id: id(2),
                summary_include: Vec::new(),
                body: Some(body),
                clear_mask: Some(pbjson_types::FieldMask {
                    paths: vec![path.into()],
                }),
            }))
            .await
            .unwrap_err();
        assert_invalid(&status, "clear_mask");
    }
    assert_eq!(upstream.count(), 0);
}
