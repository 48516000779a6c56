//! `--deny-rpcs`: listed RPCs are refused locally with PERMISSION_DENIED (ErrorInfo reason
//! `RPC_DENIED`) before anything else happens — before the token check, before validation and
//! without any upstream request — while every other RPC is served as usual; an unknown name is
//! a build error; the environment variable route parses into the same list.

use std::collections::HashMap;

use crate::support::*;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::{
    config::{Cli, Settings},
    error::GATEWAY_DOMAIN,
    gateway::{BuildError, Gateway},
    proto,
};

/// The two spellings `--deny-rpcs` accepts: `Service/Method` and the full
/// `package.Service/Method`.
fn denying(upstream: &RecordingUpstream) -> Settings {
    let mut settings = Settings::for_upstream(upstream.url());
    settings.deny_rpcs = vec![
        "OrgService/Delete".into(),
        "wnology.v1.MeService/Delete".into(),
    ];
    settings
}

#[track_caller]
fn assert_denied(status: &tonic::Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "RPC_DENIED");
    assert_eq!(info.domain, GATEWAY_DOMAIN);
}

#[tokio::test]
async fn denied_rpcs_answer_permission_denied_without_calling_the_upstream() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"success": true}))).await;
    let gateway = TestGateway::start_with(denying(&upstream)).await;
    let mut org = gateway.org().await;
    let mut me = gateway.me().await;

    let status = org
        .delete(authed(proto::OrgDeleteRequest { org_id: id(1) }))
        .await
        .expect_err("OrgService/Delete is denied");
    assert_denied(&status);

    let status = me
        .delete(authed(proto::MeDeleteRequest {
            body: Some(proto::UserCredentials {
                email: Some("someone@example.com".into()),
                password: Some("correct horse".into()),
                ..Default::default()
            }),
        }))
        .await
        .expect_err("MeService/Delete is denied");
    assert_denied(&status);

    assert_eq!(
        upstream.count(),
        0,
        "a denied RPC never reaches the upstream"
    );
}

#[tokio::test]
async fn the_deny_check_runs_before_authentication_and_validation() {
    // `Gateway::call_parts` checks the deny list first: a denied RPC is PERMISSION_DENIED even
    // with no token at all (not UNAUTHENTICATED) and with an invalid request (not
    // INVALID_ARGUMENT), so a denied RPC reveals nothing about the caller's input.
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({"success": true}))).await;
    let gateway = TestGateway::start_with(denying(&upstream)).await;
    let mut org = gateway.org().await;
    let mut me = gateway.me().await;

    let no_token = org
        .delete(tonic::Request::new(proto::OrgDeleteRequest {
            org_id: id(1),
        }))
        .await
        .expect_err("denied");
    assert_denied(&no_token);

    let invalid_id = org
        .delete(authed(proto::OrgDeleteRequest {
            org_id: "not-an-id".into(),
        }))
        .await
        .expect_err("denied");
    assert_denied(&invalid_id);

    let no_body = me
        .delete(tonic::Request::new(proto::MeDeleteRequest::default()))
        .await
        .expect_err("denied");
    assert_denied(&no_body);

    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn other_rpcs_are_still_served() {
    let upstream = RecordingUpstream::start_with(|request| match request.method.as_str() {
        "DELETE" => Answer::json(200, &json!({"success": true})),
        _ => Answer::json(200, &json!({"id": id(2), "name": "Acme"})),
    })
    .await;
    let gateway = TestGateway::start_with(denying(&upstream)).await;
    let mut org = gateway.org().await;
    let mut instance_org = gateway.instance_org().await;

    let got = org
        .get(authed(proto::OrgGetRequest {
            org_id: id(2),
            ..Default::default()
        }))
        .await
        .expect("OrgService/Get is not denied")
        .into_inner();
    assert_eq!(got.name.as_deref(), Some("Acme"));

    // Another service's Delete is a different RPC: only the listed ones are refused.
    let deleted = instance_org
        .delete(authed(proto::InstanceOrgDeleteRequest {
            instance_id: id(3),
            org_id: id(2),
        }))
        .await
        .expect("InstanceOrgService/Delete is not denied")
        .into_inner();
    assert_eq!(deleted.success, Some(true));

    let methods: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path_and_query))
        .collect();
    assert_eq!(methods.len(), 2, "{methods:?}");
    assert!(methods[0].starts_with(&format!("GET /orgs/{}?", id(2))));
    assert!(methods[1].starts_with(&format!("DELETE /instances/{}/orgs/{}?", id(3), id(2))));
}

#[test]
fn an_unknown_rpc_name_is_a_build_error() {
    for bad in [
        "OrgService/Nope",
        "wnology.v1.OrgService/Nope",
        "NopeService/Delete",
        "Delete",
    ] {
        let mut settings = Settings::for_upstream("http://127.0.0.1:9");
        settings.deny_rpcs = vec!["MeService/Delete".into(), bad.into()];
        match Gateway::new(&settings) {
            Err(BuildError::UnknownRpc(name)) => assert_eq!(name, bad),
            other => panic!("{bad}: expected BuildError::UnknownRpc, got {other:?}"),
        }
    }
}

#[test]
fn names_may_carry_the_package_a_leading_slash_and_spaces() {
    let mut settings = Settings::for_upstream("http://127.0.0.1:9");
    settings.deny_rpcs = vec![
        " OrgService/Delete ".into(),
        "/wnology.v1.MeService/Delete".into(),
        String::new(),
    ];
    Gateway::new(&settings).expect("all three spellings are accepted");
}

#[test]
fn the_environment_variable_parses_into_the_list() {
    let env = HashMap::from([(
        "WNOLOGY_DENY_RPCS".to_string(),
        "OrgService/Delete,MeService/Delete".to_string(),
    )]);
    let cli = Cli::load(["wnology-gateway"], &env).expect("valid environment");
    assert_eq!(
        cli.settings.deny_rpcs,
        vec![
            "OrgService/Delete".to_string(),
            "MeService/Delete".to_string()
        ]
    );
    Gateway::new(&cli.settings).expect("both names are RPCs");

    let env = HashMap::from([(
        "WNOLOGY_DENY_RPCS".to_string(),
        "OrgService/Nope".to_string(),
    )]);
    let cli = Cli::load(["wnology-gateway"], &env).expect("parses: names are checked at build");
    assert!(matches!(
        Gateway::new(&cli.settings),
        Err(BuildError::UnknownRpc(name)) if name == "OrgService/Nope"
    ));
}

/// "A flag given on the command line wins over the variable" (config.rs), lists included: the
/// two lists are never concatenated (they were while the variable was spliced into the command
/// line, as clap's `args_override_self` does not apply to a `Vec` field's `Append`).
#[test]
fn the_command_line_list_replaces_the_environment_list() {
    let env = HashMap::from([(
        "WNOLOGY_DENY_RPCS".to_string(),
        "OrgService/Delete,MeService/Delete".to_string(),
    )]);
    let cli = Cli::load(
        [
            "wnology-gateway",
            "--deny-rpcs",
            "InstanceOrgService/Delete",
        ],
        &env,
    )
    .expect("valid command line");
    assert_eq!(cli.settings.deny_rpcs, vec!["InstanceOrgService/Delete"]);
}
