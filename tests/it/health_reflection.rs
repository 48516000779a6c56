//! Health (overall and per service) and server reflection (v1 and v1alpha) need no token and
//! list the three services and their 42 methods.

use crate::support::*;
use prost::Message;
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

fn once<T>(item: T) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::iter([item])
}

const SERVICES: [&str; 3] = [
    "wnology.v1.MeService",
    "wnology.v1.OrgService",
    "wnology.v1.InstanceOrgService",
];

#[tokio::test]
async fn health_serves_overall_and_per_service_without_a_token() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut health = HealthClient::new(gateway.channel().await);
    for service in std::iter::once("").chain(SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "wnology.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn reflection_lists_the_three_services_and_their_42_methods() {
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut reflection = ServerReflectionClient::new(gateway.channel().await);
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };

    let mut stream = reflection
        .server_reflection_info(once(ask(MessageRequest::ListServices(String::new()))))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }

    let mut methods = 0;
    for service in SERVICES {
        let mut stream = reflection
            .server_reflection_info(once(ask(MessageRequest::FileContainingSymbol(
                service.into(),
            ))))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected file descriptors for {service}");
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
            for declared in &file.service {
                if format!("{}.{}", file.package(), declared.name()) == service {
                    methods += declared.method.len();
                }
            }
        }
    }
    assert_eq!(methods, 42);
}

#[tokio::test]
async fn reflection_v1alpha_answers_too() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let mut reflection = ServerReflectionClient::new(gateway.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(once(request))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "wnology.v1.OrgService")
    );
}
