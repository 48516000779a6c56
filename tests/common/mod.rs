//! Shared test harness: a recording upstream on loopback, the real gateway on an ephemeral
//! loopback port, and generated tonic clients.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::Request, http::HeaderMap, response::IntoResponse};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use wnology_gateway::{
    config::Settings,
    gateway::Gateway,
    proto::{
        self, instance_org_service_client::InstanceOrgServiceClient,
        me_service_client::MeServiceClient, org_service_client::OrgServiceClient,
    },
    server::{self, ServeOptions},
};

pub mod binary;
pub mod faults;
pub mod otlp;

/// The token the tests send.
pub const TOKEN: &str = "test-token-7f3a";

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query string, exactly as sent.
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the recording upstream answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    pub fn json(status: u16, body: &serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, content_type: &str, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Answer + Send + Sync;

/// An upstream on loopback that records every request and answers with a responder.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    responder: Arc<Mutex<Arc<Responder>>>,
    _task: JoinHandle<()>,
}

impl RecordingUpstream {
    /// Starts an upstream that answers every request with `answer`.
    pub async fn start(answer: Answer) -> RecordingUpstream {
        Self::start_with(move |_| answer.clone()).await
    }

    /// Starts an upstream that answers with `responder`.
    pub async fn start_with(
        responder: impl Fn(&Recorded) -> Answer + Send + Sync + 'static,
    ) -> RecordingUpstream {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let responder: Arc<Mutex<Arc<Responder>>> = Arc::new(Mutex::new(Arc::new(responder)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (rec, resp) = (recorded.clone(), responder.clone());
        let app = axum::Router::new().fallback(move |request: Request| {
            let (rec, resp) = (rec.clone(), resp.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let recorded = Recorded {
                    method: parts.method.to_string(),
                    path_and_query: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body,
                };
                let responder = resp.lock().unwrap().clone();
                let answer = responder(&recorded);
                rec.lock().unwrap().push(recorded);
                if !answer.delay.is_zero() {
                    tokio::time::sleep(answer.delay).await;
                }
                let mut response = axum::response::Response::builder().status(answer.status);
                for (name, value) in &answer.headers {
                    response = response.header(name, value);
                }
                response
                    .body(axum::body::Body::from(answer.body))
                    .unwrap()
                    .into_response()
            }
        });
        let task = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.unwrap();
        });
        RecordingUpstream {
            addr,
            recorded,
            responder,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the answer for later requests.
    pub fn answer(&self, answer: Answer) {
        *self.responder.lock().unwrap() = Arc::new(move |_| answer.clone());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.recorded.lock().unwrap().len()
    }

    /// The one request received so far (panics unless exactly one).
    pub fn only_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one upstream request, got {requests:?}"
        );
        requests.into_iter().next().unwrap()
    }
}

/// The real gateway, serving on an ephemeral loopback port.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The gateway's shared state (its cache, for the figures).
    pub gateway: Gateway,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::ServeError>>>,
}

impl TestGateway {
    /// Starts the gateway against `upstream_url` with default settings.
    pub async fn start(upstream_url: &str) -> TestGateway {
        Self::start_with(Settings::for_upstream(upstream_url)).await
    }

    /// Starts the gateway with `settings` (its `listen` is replaced by an ephemeral port).
    pub async fn start_with(mut settings: Settings) -> TestGateway {
        settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = server::bind(&settings).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let gateway = Gateway::new(&settings).unwrap();
        let serving = gateway.clone();
        let task = tokio::spawn(async move {
            server::serve_with(
                serving,
                &ServeOptions::from_settings(&settings),
                listener,
                async {
                    let _ = rx.await;
                },
            )
            .await
        });
        TestGateway {
            addr,
            gateway,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    pub async fn me(&self) -> MeServiceClient<Channel> {
        MeServiceClient::new(self.channel().await)
    }

    pub async fn org(&self) -> OrgServiceClient<Channel> {
        OrgServiceClient::new(self.channel().await)
    }

    pub async fn instance_org(&self) -> InstanceOrgServiceClient<Channel> {
        InstanceOrgServiceClient::new(self.channel().await)
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A request carrying `authorization: Bearer TOKEN`.
pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(message, TOKEN)
}

/// `OrgService/Get` of organization `id(n)` with the test token, on a task of its own (for
/// calls that must be in flight together).
pub fn spawn_org_get(
    client: &OrgServiceClient<Channel>,
    n: u32,
) -> JoinHandle<Result<tonic::Response<proto::Org>, tonic::Status>> {
    let mut org = client.clone();
    tokio::spawn(async move {
        org.get(authed(proto::OrgGetRequest {
            org_id: id(n),
            ..Default::default()
        }))
        .await
    })
}

/// A request carrying `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A valid 24-hex id, distinct per `n`.
pub fn id(n: u32) -> String {
    format!("{n:024x}")
}

/// A channel to a gateway listening on `addr` (plaintext, connected before returning).
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}
