//! Each invalidation rule of the route table: what a write makes stale is dropped, for the
//! tokens it concerns, and nothing else.

use crate::support::*;
use serde_json::json;
use wnology_gateway::proto;

const A: &str = "token-a";
const B: &str = "token-b";

async fn setup() -> (RecordingUpstream, TestGateway) {
    let upstream = RecordingUpstream::start_with(|request| {
        let path = request.path_and_query.split('?').next().unwrap_or_default();
        match path {
            "/orgs" if request.method == "POST" => {
                Answer::json(201, &json!({"id": id(9), "name": "new"}))
            }
            "/me/changePassword" | "/me/refreshToken" => {
                Answer::json(200, &json!({"userId": id(1), "token": "t2"}))
            }
            p if p.starts_with("/orgs/") && p.ends_with("/invites") => {
                Answer::json(200, &json!([]))
            }
            p if p.ends_with("Counts") => Answer::json(200, &json!({"counts": []})),
            "/me/recentItems" => Answer::json(200, &json!({"items": []})),
            _ => Answer::json(200, &json!({"name": "x", "success": true})),
        }
    })
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    (upstream, gateway)
}

/// Reads every cached read once per token so the next identical read is a hit.
struct Reads {
    upstream_before: usize,
}

async fn x_cache<T>(response: Result<tonic::Response<T>, tonic::Status>) -> String {
    response
        .unwrap()
        .metadata()
        .get("x-cache")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

async fn org_get(gateway: &TestGateway, token: &str, org: u32) -> String {
    x_cache(
        gateway
            .org()
            .await
            .get(with_token(
                proto::OrgGetRequest {
                    org_id: id(org),
                    ..Default::default()
                },
                token,
            ))
            .await,
    )
    .await
}

async fn org_usage(gateway: &TestGateway, token: &str, org: u32) -> String {
    x_cache(
        gateway
            .org()
            .await
            .device_counts(with_token(
                proto::OrgDeviceCountsRequest {
                    org_id: id(org),
                    ..Default::default()
                },
                token,
            ))
            .await,
    )
    .await
}

async fn instance_org_get(gateway: &TestGateway, token: &str, org: u32) -> String {
    x_cache(
        gateway
            .instance_org()
            .await
            .get(with_token(
                proto::InstanceOrgGetRequest {
                    instance_id: id(100),
                    org_id: id(org),
                    ..Default::default()
                },
                token,
            ))
            .await,
    )
    .await
}

async fn org_list(gateway: &TestGateway, token: &str) -> String {
    x_cache(
        gateway
            .org()
            .await
            .list(with_token(proto::OrgListRequest::default(), token))
            .await,
    )
    .await
}

async fn me_get(gateway: &TestGateway, token: &str) -> String {
    x_cache(
        gateway
            .me()
            .await
            .get(with_token(proto::MeGetRequest::default(), token))
            .await,
    )
    .await
}

async fn me_usage(gateway: &TestGateway, token: &str) -> String {
    x_cache(
        gateway
            .me()
            .await
            .payload_counts_breakdown(with_token(
                proto::MePayloadCountsBreakdownRequest::default(),
                token,
            ))
            .await,
    )
    .await
}

impl Reads {
    async fn warm(gateway: &TestGateway, upstream: &RecordingUpstream) -> Reads {
        for token in [A, B] {
            for org in [1, 2] {
                org_get(gateway, token, org).await;
                org_usage(gateway, token, org).await;
                instance_org_get(gateway, token, org).await;
            }
            org_list(gateway, token).await;
            me_get(gateway, token).await;
            me_usage(gateway, token).await;
        }
        for token in [A, B] {
            assert_eq!(org_get(gateway, token, 1).await, "hit");
            assert_eq!(me_get(gateway, token).await, "hit");
        }
        Reads {
            upstream_before: upstream.count(),
        }
    }
}

#[tokio::test]
async fn an_org_write_drops_every_read_of_that_org_for_every_token_and_the_lists() {
    let (upstream, gateway) = setup().await;
    Reads::warm(&gateway, &upstream).await;
    let patch = proto::OrgPatchRequest {
        org_id: id(1),
        body: Some(proto::OrgPatch::default()),
        ..Default::default()
    };
    gateway
        .org()
        .await
        .patch(with_token(patch, A))
        .await
        .unwrap();
    for token in [A, B] {
        assert_eq!(org_get(&gateway, token, 1).await, "miss", "{token}");
        assert_eq!(org_usage(&gateway, token, 1).await, "miss", "{token}");
        assert_eq!(
            instance_org_get(&gateway, token, 1).await,
            "miss",
            "{token}"
        );
        assert_eq!(org_list(&gateway, token).await, "miss", "{token}");
        assert_eq!(
            org_get(&gateway, token, 2).await,
            "hit",
            "another org is untouched"
        );
        assert_eq!(
            me_get(&gateway, token).await,
            "hit",
            "me reads are untouched"
        );
    }
}

#[tokio::test]
async fn member_invite_and_instance_org_writes_drop_the_org() {
    let (upstream, gateway) = setup().await;
    Reads::warm(&gateway, &upstream).await;
    let mut org = gateway.org().await;
    org.remove_member(with_token(
        proto::OrgRemoveMemberRequest {
            org_id: id(1),
            user_id: id(5),
            ..Default::default()
        },
        B,
    ))
    .await
    .unwrap();
    assert_eq!(org_get(&gateway, A, 1).await, "miss");
    assert_eq!(org_get(&gateway, A, 1).await, "hit");
    org.revoke_invite(with_token(
        proto::OrgRevokeInviteRequest {
            org_id: id(1),
            invite_id: id(6),
        },
        B,
    ))
    .await
    .unwrap();
    assert_eq!(org_get(&gateway, A, 1).await, "miss");
    gateway
        .instance_org()
        .await
        .patch(with_token(
            proto::InstanceOrgPatchRequest {
                instance_id: id(100),
                org_id: id(2),
                body: Some(proto::InstanceOrgPatch::default()),
                ..Default::default()
            },
            B,
        ))
        .await
        .unwrap();
    assert_eq!(
        org_get(&gateway, A, 2).await,
        "miss",
        "instance-org writes drop the org's org reads"
    );
    assert_eq!(instance_org_get(&gateway, A, 2).await, "miss");
    assert_eq!(org_get(&gateway, A, 1).await, "hit");
}

#[tokio::test]
async fn create_and_delete_drop_the_org_lists() {
    let (upstream, gateway) = setup().await;
    Reads::warm(&gateway, &upstream).await;
    let create = proto::OrgCreateRequest {
        body: Some(proto::OrgPost {
            name: Some("new".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    gateway
        .org()
        .await
        .create(with_token(create, A))
        .await
        .unwrap();
    assert_eq!(org_list(&gateway, A).await, "miss");
    assert_eq!(org_list(&gateway, B).await, "miss");
    assert_eq!(org_get(&gateway, B, 1).await, "hit");
    gateway
        .org()
        .await
        .delete(with_token(proto::OrgDeleteRequest { org_id: id(2) }, B))
        .await
        .unwrap();
    assert_eq!(org_list(&gateway, A).await, "miss");
    assert_eq!(org_get(&gateway, A, 2).await, "miss");
    assert_eq!(org_get(&gateway, A, 1).await, "hit");
}

#[tokio::test]
async fn me_writes_drop_only_that_tokens_me_reads() {
    let (upstream, gateway) = setup().await;
    let reads = Reads::warm(&gateway, &upstream).await;
    let patch = proto::MePatchRequest {
        body: Some(proto::MePatch::default()),
        ..Default::default()
    };
    gateway
        .me()
        .await
        .patch(with_token(patch, A))
        .await
        .unwrap();
    assert_eq!(me_get(&gateway, A).await, "miss");
    assert_eq!(me_usage(&gateway, A).await, "miss");
    assert_eq!(
        me_get(&gateway, B).await,
        "hit",
        "another token's me reads stay"
    );
    assert_eq!(org_get(&gateway, A, 1).await, "hit", "org reads stay");
    assert_eq!(upstream.count(), reads.upstream_before + 3);
}

#[tokio::test]
async fn a_password_change_that_invalidates_tokens_drops_everything_for_the_token() {
    let (upstream, gateway) = setup().await;
    Reads::warm(&gateway, &upstream).await;
    let mut me = gateway.me().await;
    let change = |invalidate: bool| proto::MeChangePasswordRequest {
        body: Some(proto::ChangePassword {
            password: Some("old-password".into()),
            new_password: Some("New-passw0rd!".into()),
            invalidate_existing_tokens: Some(invalidate),
            ..Default::default()
        }),
    };
    me.change_password(with_token(change(false), A))
        .await
        .unwrap();
    assert_eq!(me_get(&gateway, A).await, "miss");
    assert_eq!(
        org_get(&gateway, A, 1).await,
        "hit",
        "without invalidateExistingTokens only me reads go"
    );
    me.change_password(with_token(change(true), A))
        .await
        .unwrap();
    assert_eq!(org_get(&gateway, A, 1).await, "miss");
    assert_eq!(org_list(&gateway, A).await, "miss");
    // The user's other tokens are revoked upstream too, and the gateway cannot tell which
    // tokens are the user's: every token's entries go.
    assert_eq!(
        org_get(&gateway, B, 1).await,
        "miss",
        "other tokens' entries go too"
    );
    assert_eq!(me_get(&gateway, B).await, "miss");
}

#[tokio::test]
async fn a_patch_that_sets_a_token_cutoff_drops_everything() {
    let (upstream, gateway) = setup().await;
    Reads::warm(&gateway, &upstream).await;
    let mut me = gateway.me().await;
    let patch = |body: proto::MePatch| proto::MePatchRequest {
        body: Some(body),
        ..Default::default()
    };
    me.patch(with_token(
        patch(proto::MePatch {
            first_name: Some("Dana".into()),
            ..Default::default()
        }),
        A,
    ))
    .await
    .unwrap();
    assert_eq!(
        org_get(&gateway, B, 1).await,
        "hit",
        "a plain profile patch keeps other tokens' entries"
    );
    let cutoff = pbjson_types::Timestamp {
        seconds: 1_800_000_000,
        nanos: 0,
    };
    me.patch(with_token(
        patch(proto::MePatch {
            token_cutoff: Some(cutoff),
            ..Default::default()
        }),
        A,
    ))
    .await
    .unwrap();
    assert_eq!(org_get(&gateway, B, 1).await, "miss");
    assert_eq!(org_list(&gateway, A).await, "miss");
}

#[tokio::test]
async fn refreshing_the_token_drops_its_entries_and_deleting_the_user_drops_everything() {
    let (upstream, gateway) = setup().await;
    Reads::warm(&gateway, &upstream).await;
    let mut me = gateway.me().await;
    me.refresh_token(with_token(proto::MeRefreshTokenRequest {}, A))
        .await
        .unwrap();
    assert_eq!(org_get(&gateway, A, 1).await, "miss");
    assert_eq!(org_usage(&gateway, A, 2).await, "miss");
    assert_eq!(org_get(&gateway, B, 1).await, "hit");
    let credentials = proto::UserCredentials {
        email: Some("b@example.com".into()),
        password: Some("secret-pass".into()),
        ..Default::default()
    };
    me.delete(with_token(
        proto::MeDeleteRequest {
            body: Some(credentials),
        },
        B,
    ))
    .await
    .unwrap();
    assert_eq!(org_get(&gateway, B, 1).await, "miss");
    assert_eq!(me_get(&gateway, B).await, "miss");
    assert_eq!(
        org_get(&gateway, A, 1).await,
        "miss",
        "a deleted user's tokens are all gone"
    );
}
