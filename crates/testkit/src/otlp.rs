//! An OTLP trace receiver on loopback (gRPC or HTTP/protobuf) that keeps every exported span.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::Span,
};
use prost::Message;
use tokio::net::TcpListener;

/// Exported spans, with their resource attributes.
#[derive(Clone, Default)]
pub struct Received {
    /// Every span received, in arrival order.
    pub spans: Arc<Mutex<Vec<Span>>>,
    /// The resource attributes of every export request.
    pub resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
}

impl Received {
    fn keep(&self, request: ExportTraceServiceRequest) {
        for resource_spans in request.resource_spans {
            if let Some(resource) = resource_spans.resource {
                self.resources.lock().unwrap().push(resource.attributes);
            }
            for scope_spans in resource_spans.scope_spans {
                self.spans.lock().unwrap().extend(scope_spans.spans);
            }
        }
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until `predicate` holds for the spans received.
    pub async fn wait_for(&self, predicate: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        for _ in 0..100 {
            let spans = self.spans();
            if predicate(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spans()
    }
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts an OTLP/gRPC receiver.
pub async fn grpc_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(Collector(received.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_listener(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

fn tokio_stream_listener(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
}

/// Starts an OTLP/HTTP (protobuf) receiver serving `POST /v1/traces`.
pub async fn http_receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                keep.keep(request);
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec(),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

/// The string (or integer, as text) value of attribute `key`.
pub fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        } => s.clone(),
        AnyValue {
            value: Some(any_value::Value::IntValue(i)),
        } => i.to_string(),
        AnyValue {
            value: Some(any_value::Value::BoolValue(b)),
        } => b.to_string(),
        AnyValue {
            value: Some(any_value::Value::DoubleValue(d)),
        } => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// `bytes` as lowercase hexadecimal (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
