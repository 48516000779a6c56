//! Upstream HTTP errors and transport failures become canonical gRPC statuses that keep the
//! upstream's `type` and `message`.

use crate::support::*;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::proto;

/// Retries are tested in `retries`; here one upstream answer is one status.
fn no_retries(upstream: &RecordingUpstream) -> wnology_gateway::config::Settings {
    let mut settings = wnology_gateway::config::Settings::for_upstream(upstream.url());
    settings.upstream_retries = 0;
    settings
}

async fn get_org(gateway: &TestGateway) -> tonic::Status {
    gateway
        .org()
        .await
        .get(authed(proto::OrgGetRequest {
            org_id: id(7),
            ..Default::default()
        }))
        .await
        .expect_err("the upstream answered an error")
}

#[tokio::test]
async fn every_http_error_status_maps_to_its_code_with_details() {
    let table = [
        (400, Code::InvalidArgument),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::NotFound),
        (405, Code::Unimplemented),
        (409, Code::Aborted),
        (410, Code::FailedPrecondition),
        (413, Code::InvalidArgument),
        (418, Code::FailedPrecondition),
        (422, Code::InvalidArgument),
        (429, Code::ResourceExhausted),
        (500, Code::Internal),
        (501, Code::Unimplemented),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (507, Code::Internal),
    ];
    let upstream = RecordingUpstream::start(Answer::json(500, &json!({}))).await;
    let gateway = TestGateway::start_with(no_retries(&upstream)).await;
    for (http_status, code) in table {
        let message = format!("upstream said {http_status}");
        upstream.answer(Answer::json(
            http_status,
            &json!({"type": "SomeErrorType", "message": message}),
        ));
        let status = get_org(&gateway).await;
        assert_eq!(status.code(), code, "HTTP {http_status}");
        assert_eq!(status.message(), message, "HTTP {http_status}");
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "SOME_ERROR_TYPE");
        assert_eq!(info.domain, "127.0.0.1");
        assert_eq!(info.metadata["http_status"], http_status.to_string());
        assert_eq!(info.metadata["upstream_type"], "SomeErrorType");
    }
    assert_eq!(
        upstream.count(),
        table.len(),
        "errors are not retried by the translation layer"
    );
}

#[tokio::test]
async fn upstream_not_found_keeps_type_and_message() {
    let upstream = RecordingUpstream::start(Answer::json(
        404,
        &json!({"type": "NotFound", "message": "Organization was not found"}),
    ))
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "Organization was not found");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "NOT_FOUND");
    assert_eq!(info.metadata["upstream_type"], "NotFound");
}

#[tokio::test]
async fn a_body_that_is_not_the_json_error_shape_gives_the_status_line() {
    let upstream =
        RecordingUpstream::start(Answer::raw(502, "text/html", "<html>Bad gateway</html>")).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "502 Bad Gateway");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "HTTP_502");
    assert_eq!(info.metadata["http_status"], "502");
    assert!(!info.metadata.contains_key("upstream_type"));

    upstream.answer(Answer::json(403, &json!({"type": "Forbidden"})));
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "403 Forbidden");
}

#[tokio::test]
async fn too_many_requests_carries_retry_info() {
    let upstream = RecordingUpstream::start(
        Answer::json(
            429,
            &json!({"type": "TooManyRequests", "message": "slow down"}),
        )
        .with_header("retry-after", "7"),
    )
    .await;
    let gateway = TestGateway::start_with(no_retries(&upstream)).await;
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    let retry = status
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(7)));
}

#[tokio::test]
async fn a_success_body_that_does_not_decode_is_internal() {
    let upstream =
        RecordingUpstream::start(Answer::raw(200, "application/json", "{\"name\": 42")).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status
            .message()
            .contains("org.get answered a body that does not decode"),
        "{}",
        status.message()
    );

    upstream.answer(Answer::json(200, &json!({"name": {"not": "a string"}})));
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::Internal);
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    // Bind and drop a listener so that nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = TestGateway::start(&format!("http://127.0.0.1:{port}")).await;
    let status = get_org(&gateway).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "UPSTREAM_UNREACHABLE");
}
