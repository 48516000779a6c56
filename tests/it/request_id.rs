//! A request id ties a call together: the caller's `x-request-id` is kept (or one is made),
//! returned in the response metadata and in error details (`google.rpc.RequestInfo`).

use crate::support::*;
use serde_json::json;
use tonic_types::StatusExt;
use wnology_gateway::proto;

#[tokio::test]
async fn the_callers_request_id_comes_back_on_success_and_in_error_details() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;

    let mut request = authed(proto::MeGetRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "caller-req-42".parse().unwrap());
    let response = me.get(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap(),
        "caller-req-42"
    );

    let mut request = tonic::Request::new(proto::MeGetRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "caller-req-43".parse().unwrap());
    let status = me.get(request).await.unwrap_err();
    assert_eq!(
        status.metadata().get("x-request-id").unwrap(),
        "caller-req-43"
    );
    assert_eq!(
        status
            .get_error_details()
            .request_info()
            .unwrap()
            .request_id,
        "caller-req-43"
    );

    upstream.answer(Answer::json(
        404,
        &json!({"type": "NotFound", "message": "gone"}),
    ));
    let mut request = authed(proto::OrgGetRequest {
        org_id: id(1),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-request-id", "caller-req-44".parse().unwrap());
    let status = gateway.org().await.get(request).await.unwrap_err();
    let details = status.get_error_details();
    assert_eq!(details.request_info().unwrap().request_id, "caller-req-44");
    assert_eq!(
        details.error_info().unwrap().reason,
        "NOT_FOUND",
        "the request id is beside the upstream error"
    );
}

#[tokio::test]
async fn a_missing_or_unusable_request_id_is_replaced_by_a_fresh_one() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut me = gateway.me().await;
    let first = me
        .get(authed(proto::MeGetRequest::default()))
        .await
        .unwrap();
    let second = me
        .get(authed(proto::MeGetRequest::default()))
        .await
        .unwrap();
    let first = first
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let second = second
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(first.len(), 32);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(first, second);

    let mut request = authed(proto::MeGetRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "x".repeat(200).parse().unwrap());
    let response = me.get(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-request-id").unwrap().len(),
        32,
        "an over-long id is replaced"
    );
}
