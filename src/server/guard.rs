//! The request guard in front of each gateway service: what a caller sends is checked while it
//! arrives, before a message reaches the pipeline or takes a slot.
//!
//! - A content type that is not gRPC gets HTTP 415, as the gRPC spec asks.
//! - The whole request (its one message and the end of the stream) must arrive within
//!   `--request-read-timeout`; past it the call is answered DEADLINE_EXCEEDED and its stream
//!   reset, so a caller that stalls its body holds a stream for that long at most.
//! - A message longer than `--max-request-bytes` is refused as soon as its length prefix
//!   arrives, RESOURCE_EXHAUSTED (tonic's own limit says OUT_OF_RANGE, and only once it has
//!   buffered the message).
//! - A second message in a unary call is refused, INTERNAL, as gRPC's own servers do ("too many
//!   requests"), instead of being dropped unseen.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::{Status, body::Body, server::NamedService};
use tower::Service;

use crate::metrics::Metrics;

/// What the guard enforces.
#[derive(Debug, Clone)]
pub struct GuardLimits {
    /// `--request-read-timeout`.
    pub read_timeout: Duration,
    /// `--max-request-bytes`.
    pub max_message_bytes: usize,
}

/// A gateway service behind the request guard.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    inner: S,
    limits: GuardLimits,
    metrics: Arc<Metrics>,
}

impl<S> Guarded<S> {
    /// Guards `inner`.
    pub fn new(inner: S, limits: GuardLimits, metrics: Arc<Metrics>) -> Guarded<S> {
        Guarded {
            inner,
            limits,
            metrics,
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !is_grpc(&request) {
            self.metrics.refused("content_type");
            return Box::pin(std::future::ready(Ok(unsupported_media_type())));
        }
        let (limits, metrics) = (self.limits.clone(), Arc::clone(&self.metrics));
        let request = request.map(|body| Body::new(GuardedBody::new(body, limits, metrics)));
        Box::pin(self.inner.call(request))
    }
}

/// `application/grpc`, with or without a `+codec` or parameters.
fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("application/grpc"))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
}

fn unsupported_media_type() -> http::Response<Body> {
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(
        Bytes::from_static(b"content-type must be application/grpc\n"),
    )));
    *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
}

/// A request body checked as it arrives (see the module docs).
struct GuardedBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limits: GuardLimits,
    framing: Framing,
    metrics: Arc<Metrics>,
    /// Ended (or refused): nothing more is read.
    done: bool,
}

impl GuardedBody {
    fn new(inner: Body, limits: GuardLimits, metrics: Arc<Metrics>) -> GuardedBody {
        GuardedBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.read_timeout)),
            framing: Framing::new(limits.max_message_bytes),
            limits,
            metrics,
            done: false,
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        self.metrics.refused(refusal.reason());
        Poll::Ready(Some(Err(refusal.into_status(&self.limits))))
    }
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(refusal) = this.framing.feed(data)
                {
                    return this.refuse(refusal);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                this.refuse(Refusal::TooSlow)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request was refused while it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooSlow,
    TooLarge(usize),
    ExtraMessage,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::TooSlow => "read_timeout",
            Refusal::TooLarge(_) => "too_large",
            Refusal::ExtraMessage => "extra_message",
        }
    }

    fn into_status(self, limits: &GuardLimits) -> Status {
        match self {
            Refusal::TooSlow => Status::deadline_exceeded(format!(
                "the request message did not arrive within --request-read-timeout ({:?})",
                limits.read_timeout
            )),
            Refusal::TooLarge(len) => Status::resource_exhausted(format!(
                "request message of {len} bytes exceeds --max-request-bytes ({})",
                limits.max_message_bytes
            )),
            Refusal::ExtraMessage => {
                Status::internal("too many requests: a unary call takes exactly one message")
            }
        }
    }
}

/// Follows the gRPC length-prefixed framing (1 flag byte, 4 length bytes, the message) across
/// however the body is split into frames.
#[derive(Debug)]
struct Framing {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    messages: u32,
    limit: usize,
}

impl Framing {
    fn new(limit: usize) -> Framing {
        Framing {
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
            messages: 0,
            limit,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<(), Refusal> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let taken = self.remaining.min(data.len());
                self.remaining -= taken;
                data = &data[taken..];
                continue;
            }
            if self.prefix_len == 0 && self.messages >= 1 {
                return Err(Refusal::ExtraMessage);
            }
            let taken = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + taken].copy_from_slice(&data[..taken]);
            self.prefix_len += taken;
            data = &data[taken..];
            if self.prefix_len == 5 {
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.limit {
                    return Err(Refusal::TooLarge(len));
                }
                self.prefix_len = 0;
                self.remaining = len;
                self.messages += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len as usize));
        bytes
    }

    #[test]
    fn one_message_in_any_split_passes() {
        let message = framed(300);
        for split in [1, 2, 5, 6, 299, 305] {
            let mut framing = Framing::new(1000);
            for chunk in message.chunks(split) {
                framing.feed(chunk).unwrap();
            }
            assert_eq!(framing.messages, 1, "split {split}");
        }
        let mut framing = Framing::new(10);
        framing.feed(&framed(0)).unwrap();
    }

    #[test]
    fn a_second_message_is_refused() {
        let mut two = framed(3);
        two.extend(framed(3));
        assert_eq!(Framing::new(100).feed(&two), Err(Refusal::ExtraMessage));
        let mut framing = Framing::new(100);
        framing.feed(&framed(3)).unwrap();
        assert_eq!(framing.feed(&[0]), Err(Refusal::ExtraMessage));
    }

    #[test]
    fn a_long_message_is_refused_at_its_prefix() {
        let prefix = &framed(2000)[..5];
        assert_eq!(
            Framing::new(1000).feed(prefix),
            Err(Refusal::TooLarge(2000))
        );
        assert_eq!(Framing::new(2000).feed(prefix), Ok(()));
    }

    #[test]
    fn grpc_content_types() {
        let with = |value: &str| {
            http::Request::builder()
                .header("content-type", value)
                .body(())
                .unwrap()
        };
        for good in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
        ] {
            assert!(is_grpc(&with(good)), "{good}");
        }
        for bad in [
            "text/plain",
            "application/grpcx",
            "application/json",
            "application/grpc-web",
        ] {
            assert!(!is_grpc(&with(bad)), "{bad}");
        }
        assert!(!is_grpc(&http::Request::new(())));
    }
}
