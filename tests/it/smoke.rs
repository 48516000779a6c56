use crate::support::*;
use wnology_gateway::proto;

#[tokio::test]
async fn get_org_round_trip() {
    let upstream = RecordingUpstream::start(Answer::json(
        200,
        &serde_json::json!({"id": id(1), "name": "Acme"}),
    ))
    .await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let org = gateway
        .org()
        .await
        .get(authed(proto::OrgGetRequest {
            org_id: id(1),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.name.as_deref(), Some("Acme"));
    let sent = upstream.only_request();
    assert_eq!(sent.method, "GET");
    assert_eq!(
        sent.path_and_query,
        format!("/orgs/{}?_actions=false&_links=true&_embedded=true", id(1))
    );
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    gateway.stop().await;
}
