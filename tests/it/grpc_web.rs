//! gRPC-Web and what tools need to read errors: reflection serves `google.rpc.Status` and the
//! error details; gRPC-Web calls (binary and text, HTTP/1.1 and HTTP/2, through a plain HTTP
//! client that parses the frames and the trailer frame itself) get the same answers, cache,
//! metrics, auth passthrough, deny list and error details as gRPC calls; CORS preflights are
//! answered for allowed origins only, and a call from another origin is refused before the
//! upstream; `--grpc-web false` turns it all off.

use crate::support::*;
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use serde_json::json;
use tonic_types::StatusExt;
use wnology_gateway::{config::Cli, config::Settings, proto};

const ALLOWED: &str = "http://dash.example.test:8000";
const OTHER: &str = "http://evil.example.test";
const GET: &str = "/wnology.v1.OrgService/Get";

fn org_get(n: u32) -> Vec<u8> {
    proto::OrgGetRequest {
        org_id: id(n),
        ..Default::default()
    }
    .encode_to_vec()
}

async fn org_upstream() -> RecordingUpstream {
    RecordingUpstream::start_with(|request| {
        let id = request
            .path_and_query
            .split(['/', '?'])
            .nth(2)
            .unwrap_or("");
        Answer::json(200, &json!({"id": id, "name": "Acme"}))
    })
    .await
}

/// The settings every test starts from: the given origins allowed.
fn settings(upstream: &RecordingUpstream, origins: &[&str]) -> Settings {
    let mut settings = Settings::for_upstream(upstream.url());
    settings.cors_allowed_origins = origins.iter().map(ToString::to_string).collect();
    settings
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Binary,
    Text,
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Http1,
    Http2,
}

/// A gRPC-Web answer, its frames taken apart.
#[derive(Debug)]
struct WebReply {
    http_status: u16,
    headers: HeaderMap,
    messages: Vec<Bytes>,
    /// From the trailer frame in the body; empty when the answer was trailers-only (then the
    /// status is in `headers`).
    trailers: HeaderMap,
}

impl WebReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The gRPC status, from the trailer frame or, for a trailers-only answer, the headers.
    fn status(&self) -> tonic::Status {
        let source = if self.trailers.contains_key("grpc-status") {
            &self.trailers
        } else {
            &self.headers
        };
        tonic::Status::from_header_map(source).expect("a grpc-status")
    }

    fn only_message<M: Message + Default>(&self) -> M {
        assert_eq!(self.messages.len(), 1, "{self:?}");
        M::decode(self.messages[0].clone()).unwrap()
    }
}

fn frame(flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(flags);
    frame.put_u32(u32::try_from(payload.len()).unwrap());
    frame.put_slice(payload);
    frame.freeze()
}

/// Splits a gRPC-Web body into its messages and its trailer frame (RFC-822 style lines).
fn parse_frames(mut body: Bytes) -> (Vec<Bytes>, HeaderMap) {
    let (mut messages, mut trailers) = (Vec::new(), HeaderMap::new());
    while body.has_remaining() {
        assert!(body.len() >= 5, "truncated frame header: {body:?}");
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        assert!(body.len() >= len, "truncated frame");
        let payload = body.split_to(len);
        if flags & 0x80 == 0 {
            messages.push(payload);
            continue;
        }
        for line in std::str::from_utf8(&payload).unwrap().split("\r\n") {
            if let Some((name, value)) = line.split_once(':') {
                trailers.append(
                    HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                    HeaderValue::from_str(value.trim()).unwrap(),
                );
            }
        }
    }
    (messages, trailers)
}

/// Decodes a `grpc-web-text` body: base64 written in chunks, each padded on its own, so it is
/// decoded one 4-character quantum at a time.
fn decode_text(body: &[u8]) -> Bytes {
    let engine = base64::engine::general_purpose::STANDARD;
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert_eq!(
        clean.len() % 4,
        0,
        "not base64 quanta: {:?}",
        String::from_utf8_lossy(body)
    );
    let mut out = Vec::new();
    for quantum in clean.chunks(4) {
        out.extend(engine.decode(quantum).unwrap());
    }
    out.into()
}

fn client(transport: Transport) -> reqwest::Client {
    let builder = reqwest::Client::builder().no_proxy();
    match transport {
        Transport::Http1 => builder.http1_only(),
        Transport::Http2 => builder.http2_prior_knowledge(),
    }
    .build()
    .unwrap()
}

/// Calls `path` with one message through gRPC-Web, with the test token and `headers`.
async fn call(
    gateway: &TestGateway,
    transport: Transport,
    mode: Mode,
    path: &str,
    message: &[u8],
    headers: &[(&str, &str)],
) -> Result<WebReply, reqwest::Error> {
    // As grpc-web clients do, text mode asks for a text answer in `accept`.
    let (content_type, body) = match mode {
        Mode::Binary => ("application/grpc-web+proto", frame(0, message)),
        Mode::Text => {
            let text = base64::engine::general_purpose::STANDARD.encode(frame(0, message));
            ("application/grpc-web-text", Bytes::from(text))
        }
    };
    let mut request = client(transport)
        .post(format!("http://{}{path}", gateway.addr))
        .header("content-type", content_type)
        .header("accept", content_type)
        .header("x-grpc-web", "1")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let http_status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.bytes().await?;
    if matches!(mode, Mode::Text) && !body.is_empty() {
        body = decode_text(&body);
    }
    let (messages, trailers) = parse_frames(body);
    Ok(WebReply {
        http_status,
        headers,
        messages,
        trailers,
    })
}

async fn preflight(gateway: &TestGateway, origin: &str) -> reqwest::Response {
    client(Transport::Http1)
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}{GET}", gateway.addr),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
        .send()
        .await
        .unwrap()
}

fn header_list(response: &reqwest::Response, name: &str) -> Vec<String> {
    response
        .headers()
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn reflection_serves_status_and_error_details_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let upstream = RecordingUpstream::start(Answer::json(200, &json!({}))).await;
    let gateway = TestGateway::start(&upstream.url()).await;
    let symbols = [
        ("google.rpc.ErrorInfo", "google/rpc/error_details.proto"),
        ("google.rpc.RetryInfo", "google/rpc/error_details.proto"),
        ("google.rpc.BadRequest", "google/rpc/error_details.proto"),
        ("google.rpc.RequestInfo", "google/rpc/error_details.proto"),
        ("google.rpc.Status", "google/rpc/status.proto"),
    ];
    let mut v1_client =
        v1::server_reflection_client::ServerReflectionClient::new(gateway.channel().await);
    let mut v1alpha_client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(gateway.channel().await);
    for (symbol, file_name) in symbols {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
            ),
        };
        let reply = v1_client
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(v1_files)) =
            reply.message_response
        else {
            panic!("v1: no descriptor for {symbol}: {reply:?}");
        };
        assert_declares(&v1_files.file_descriptor_proto, symbol, file_name);

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    symbol.into(),
                ),
            ),
        };
        let reply = v1alpha_client
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(
            files,
        )) = reply.message_response
        else {
            panic!("v1alpha: no descriptor for {symbol}: {reply:?}");
        };
        assert_declares(&files.file_descriptor_proto, symbol, file_name);
    }

    // Their imports are served too, by file name (tools ask for them next).
    for file_name in [
        "google/protobuf/any.proto",
        "google/protobuf/duration.proto",
    ] {
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileByFilename(file_name.into()),
            ),
        };
        let reply = v1_client
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                reply.message_response,
                Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
            ),
            "{file_name}: {reply:?}"
        );
    }

    // grpcurl asks v1alpha: it must list both reflection services.
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let reply = v1alpha_client
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(names.contains(&service), "{service} not in {names:?}");
    }
    assert_eq!(upstream.count(), 0);
}

/// The first file (the one asked for) is `file_name` and declares `symbol`'s message.
#[track_caller]
fn assert_declares(files: &[Vec<u8>], symbol: &str, file_name: &str) {
    let decoded: Vec<prost_types::FileDescriptorProto> = files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let first = &decoded[0];
    assert_eq!(first.name(), file_name);
    let message = symbol.strip_prefix("google.rpc.").unwrap();
    assert_eq!(first.package(), "google.rpc");
    assert!(
        first.message_type.iter().any(|m| m.name() == message),
        "{file_name} does not declare {message}"
    );
    for import in &first.dependency {
        assert!(
            [
                "google/protobuf/any.proto",
                "google/protobuf/duration.proto"
            ]
            .contains(&import.as_str()),
            "{file_name} imports {import}"
        );
    }
}

#[tokio::test]
async fn unary_call_in_binary_and_text_modes_over_http1_and_http2() {
    let upstream = org_upstream().await;
    let gateway = TestGateway::start_with(settings(&upstream, &[])).await;
    let cases = [
        (Transport::Http1, Mode::Binary, "application/grpc-web+proto"),
        (
            Transport::Http1,
            Mode::Text,
            "application/grpc-web-text+proto",
        ),
        (Transport::Http2, Mode::Binary, "application/grpc-web+proto"),
        (
            Transport::Http2,
            Mode::Text,
            "application/grpc-web-text+proto",
        ),
    ];
    for (n, (transport, mode, content_type)) in (1..).zip(cases) {
        let reply = call(&gateway, transport, mode, GET, &org_get(n), &[])
            .await
            .unwrap();
        assert_eq!(reply.http_status, 200, "{transport:?} {mode:?}");
        assert_eq!(reply.header("content-type"), Some(content_type));
        let org: proto::Org = reply.only_message();
        assert_eq!(org.id.as_deref(), Some(id(n).as_str()));
        assert_eq!(org.name.as_deref(), Some("Acme"));
        // Trailers travel in the body's trailer frame.
        assert_eq!(
            reply
                .trailers
                .get("grpc-status")
                .map(|v| v.to_str().unwrap()),
            Some("0"),
            "{transport:?} {mode:?}: {reply:?}"
        );
        assert_eq!(reply.header("x-cache"), Some("miss"));
        assert!(reply.header("x-request-id").is_some_and(|v| !v.is_empty()));
    }
    // Auth passthrough: the token went upstream unchanged, once per call.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
}

#[tokio::test]
async fn cache_and_metrics_apply_to_grpc_web_calls() {
    let upstream = org_upstream().await;
    let gateway = TestGateway::start_with(settings(&upstream, &[])).await;
    let first = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(7),
        &[],
    )
    .await
    .unwrap();
    let second = call(
        &gateway,
        Transport::Http1,
        Mode::Text,
        GET,
        &org_get(7),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(
        second.only_message::<proto::Org>(),
        first.only_message::<proto::Org>()
    );
    assert_eq!(upstream.count(), 1);

    // A plain gRPC call shares the cache with gRPC-Web calls.
    let mut org = gateway.org().await;
    let response = org
        .get(authed(proto::OrgGetRequest {
            org_id: id(7),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        response
            .metadata()
            .get("x-cache")
            .unwrap()
            .to_str()
            .unwrap(),
        "hit"
    );
    // Plain gRPC goes around the web layers: no CORS headers on its answers.
    assert!(response.metadata().get("vary").is_none());
    assert!(
        response
            .metadata()
            .get("access-control-expose-headers")
            .is_none()
    );

    let metrics = gateway.gateway.metrics().encode();
    assert!(
        metrics.contains(
            r#"wnology_gateway_rpc_requests_total{service="wnology.v1.OrgService",method="Get",code="OK"} 3"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn errors_arrive_with_their_details() {
    let upstream = org_upstream().await;
    let mut settings = settings(&upstream, &[]);
    settings.deny_rpcs = vec!["OrgService/Delete".into()];
    let gateway = TestGateway::start_with(settings).await;

    // Refused locally: BadRequest names the field; nothing goes upstream.
    let bad = proto::OrgGetRequest {
        org_id: "nope".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for mode in [Mode::Binary, Mode::Text] {
        let reply = call(&gateway, Transport::Http1, mode, GET, &bad, &[])
            .await
            .unwrap();
        assert_eq!(reply.http_status, 200);
        assert!(reply.messages.is_empty());
        let status = reply.status();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{mode:?}");
        let details = status.get_error_details();
        let violations = &details.bad_request().expect("BadRequest").field_violations;
        assert_eq!(violations[0].field, "org_id");
        assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");
        assert_eq!(
            details.request_info().unwrap().request_id,
            reply.header("x-request-id").unwrap()
        );
    }

    // The deny list applies too.
    let delete = proto::OrgDeleteRequest { org_id: id(1) }.encode_to_vec();
    let reply = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        "/wnology.v1.OrgService/Delete",
        &delete,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reply.status().code(), tonic::Code::PermissionDenied);
    assert_eq!(upstream.count(), 0);

    // An upstream error: ErrorInfo carries the upstream type and HTTP status.
    upstream.answer(Answer::json(
        404,
        &json!({"type": "NotFound", "message": "Organization was not found"}),
    ));
    let reply = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(2),
        &[],
    )
    .await
    .unwrap();
    let status = reply.status();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "Organization was not found");
    let info = status.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "NOT_FOUND");
    assert_eq!(
        info.metadata.get("http_status").map(String::as_str),
        Some("404")
    );
}

#[tokio::test]
async fn cors_preflight_is_answered_for_allowed_origins_only() {
    let upstream = org_upstream().await;
    let gateway = TestGateway::start_with(settings(&upstream, &[ALLOWED])).await;

    let allowed = preflight(&gateway, ALLOWED).await;
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        ALLOWED
    );
    assert!(
        allowed
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    assert!(header_list(&allowed, "access-control-allow-methods").contains(&"post".into()));
    let allowed_headers = header_list(&allowed, "access-control-allow-headers");
    for name in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
    ] {
        assert!(
            allowed_headers.contains(&name.to_string()),
            "{name} not in {allowed_headers:?}"
        );
    }
    assert!(allowed.headers().contains_key("access-control-max-age"));

    let refused = preflight(&gateway, OTHER).await;
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{refused:?}"
    );

    // The call itself from the allowed origin: the page may read status and metadata.
    let reply = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(3),
        &[("origin", ALLOWED)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status().code(), tonic::Code::Ok);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ALLOWED));
    let exposed: Vec<String> = reply
        .headers
        .get_all("access-control-expose-headers")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    for name in [
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "x-request-id",
        "x-cache",
        "age",
    ] {
        assert!(
            exposed.contains(&name.to_string()),
            "{name} not in {exposed:?}"
        );
    }
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn calls_from_origins_not_allowed_are_refused_before_the_upstream() {
    let upstream = org_upstream().await;
    // Default: no origin is allowed. Then one named origin.
    for origins in [&[][..], &[ALLOWED][..]] {
        let gateway = TestGateway::start_with(settings(&upstream, origins)).await;
        for mode in [Mode::Binary, Mode::Text] {
            let reply = call(
                &gateway,
                Transport::Http1,
                mode,
                GET,
                &org_get(4),
                &[("origin", OTHER)],
            )
            .await
            .unwrap();
            assert!(reply.header("access-control-allow-origin").is_none());
            let status = reply.status();
            assert_eq!(status.code(), tonic::Code::PermissionDenied, "{origins:?}");
            assert!(status.message().contains(OTHER), "{}", status.message());
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.reason, "ORIGIN_NOT_ALLOWED");
        }
    }
    // A plain gRPC call that carries a disallowed `Origin` is refused the same way.
    let gateway = TestGateway::start_with(settings(&upstream, &[ALLOWED])).await;
    let mut request = authed(proto::OrgGetRequest {
        org_id: id(4),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("origin", OTHER.parse().unwrap());
    let refused = gateway.org().await.get(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(upstream.count(), 0);

    // `*`: any origin, still without credentials.
    let gateway = TestGateway::start_with(settings(&upstream, &["*"])).await;
    let reply = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(4),
        &[("origin", OTHER)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status().code(), tonic::Code::Ok);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert!(reply.header("access-control-allow-credentials").is_none());
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn http1_requests_are_held_to_max_header_bytes() {
    let upstream = org_upstream().await;
    let mut settings = settings(&upstream, &[]);
    settings.max_header_bytes = 4096;
    let gateway = TestGateway::start_with(settings).await;
    let big = "x".repeat(5000);
    let reply = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(5),
        &[("x-padding", big.as_str())],
    )
    .await
    .unwrap();
    let status = reply.status();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("--max-header-bytes"));
    assert_eq!(upstream.count(), 0);
    let reply = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(5),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(reply.status().code(), tonic::Code::Ok);
}

#[tokio::test]
async fn grpc_web_false_turns_it_off() {
    let cli = Cli::load(
        ["gw", "--grpc-web", "false"],
        &std::collections::HashMap::new(),
    )
    .unwrap();
    assert!(!cli.settings.grpc_web);
    let env = std::collections::HashMap::from([
        ("WNOLOGY_GRPC_WEB".to_string(), "false".to_string()),
        (
            "WNOLOGY_CORS_ALLOWED_ORIGINS".to_string(),
            format!("{ALLOWED},HTTPS://Other.example:443"),
        ),
    ]);
    let cli = Cli::load(["gw"], &env).unwrap();
    assert!(!cli.settings.grpc_web);
    assert_eq!(
        cli.settings.cors_allowed_origins,
        [ALLOWED, "https://other.example"]
    );
    assert!(
        Cli::load(["gw"], &std::collections::HashMap::new())
            .unwrap()
            .settings
            .grpc_web
    );
    assert!(Cli::load(["gw", "--cors-allowed-origins", "example.com"], &env).is_err());

    let upstream = org_upstream().await;
    let mut settings = settings(&upstream, &[ALLOWED]);
    settings.grpc_web = false;
    let gateway = TestGateway::start_with(settings).await;
    // No HTTP/1.1 at all, and no translation on HTTP/2.
    let http1 = call(
        &gateway,
        Transport::Http1,
        Mode::Binary,
        GET,
        &org_get(6),
        &[],
    )
    .await;
    assert!(http1.is_err(), "{http1:?}");
    // On HTTP/2 a gRPC-Web content type is then not gRPC: 415, as for any other.
    let http2 = client(Transport::Http2)
        .post(format!("http://{}{GET}", gateway.addr))
        .header("content-type", "application/grpc-web+proto")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(frame(0, &org_get(6)))
        .send()
        .await
        .unwrap();
    assert_eq!(http2.status().as_u16(), 415);
    assert_eq!(upstream.count(), 0);
    // gRPC itself is unaffected.
    let mut org = gateway.org().await;
    let org = org
        .get(authed(proto::OrgGetRequest {
            org_id: id(6),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.id.as_deref(), Some(id(6).as_str()));
    assert_eq!(upstream.count(), 1);
}
