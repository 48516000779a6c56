//! The recording upstream: an HTTP server on loopback that keeps every request it receives
//! (method, path and query, headers, body) and answers each with what a responder says, so a
//! test can assert exactly what the gateway sent upstream.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::Request, http::HeaderMap, response::IntoResponse};
use tokio::{net::TcpListener, task::JoinHandle};

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The HTTP method.
    pub method: String,
    /// Path and query string, exactly as sent.
    pub path_and_query: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
}

impl Recorded {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the recording upstream answers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    /// `status` with `body` as `application/json`.
    pub fn json(status: u16, body: &serde_json::Value) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }

    /// `status` with `body` as `content_type`.
    pub fn raw(status: u16, content_type: &str, body: &str) -> Answer {
        Answer {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    /// The same answer, sent after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// The same answer with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Responder = dyn Fn(&Recorded) -> Answer + Send + Sync;

/// An upstream on loopback that records every request and answers with a responder.
pub struct RecordingUpstream {
    /// Where it listens.
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

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the answer for later requests.
    pub fn answer(&self, answer: Answer) {
        *self.responder.lock().unwrap() = Arc::new(move |_| answer.clone());
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    /// How many requests arrived so far.
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
