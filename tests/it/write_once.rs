//! A write is never retried: when the upstream connection drops after the request was sent, the
//! write reached the upstream exactly once and the caller hears UNKNOWN (outcome unknown), not
//! UNAVAILABLE, so it does not blindly resend it. A read in the same situation is retried.

use crate::support::{faults::*, *};
use tonic::Code;
use tonic_types::StatusExt;
use wnology_gateway::proto;

#[tokio::test]
async fn a_write_whose_connection_drops_after_sending_is_sent_once_and_answered_unknown() {
    for fault in [Fault::CloseAfterRequest, Fault::Reset] {
        let upstream = FaultyUpstream::start(fault).await;
        let gateway = TestGateway::start(&upstream.url()).await;
        let patch = proto::OrgPatchRequest {
            org_id: id(1),
            body: Some(proto::OrgPatch {
                name: Some("renamed".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = gateway.org().await.patch(authed(patch)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unknown, "{fault:?}: {status:?}");
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "UPSTREAM_OUTCOME_UNKNOWN"
        );
        assert_eq!(
            upstream.requests(),
            1,
            "{fault:?}: the write was sent exactly once"
        );
    }
}

#[tokio::test]
async fn a_read_whose_connection_drops_is_retried_then_unavailable() {
    let upstream = FaultyUpstream::start(Fault::CloseAfterRequest).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let status = gateway
        .org()
        .await
        .get(authed(proto::OrgGetRequest {
            org_id: id(1),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(upstream.requests(), 3, "the first try and two retries");
}
