//! Load shedding: at most `--max-concurrency` RPCs of the gateway's services run at once, shared
//! across the three services; a call beyond that is answered UNAVAILABLE at once instead of
//! queueing without bound. Built from tower's `ConcurrencyLimit` and `LoadShed`, whose
//! `Overloaded` error is mapped here explicitly (a tower error reaching tonic would otherwise
//! be UNKNOWN). Health and reflection are not wrapped, so probes get through under load.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;
use tonic::{body::Body, server::NamedService};
use tower::{
    Service,
    limit::ConcurrencyLimit,
    load_shed::{LoadShed, error::Overloaded},
};

use crate::error::GatewayError;

/// The permits shared by every wrapped service.
#[derive(Debug, Clone)]
pub struct ConcurrencyBudget(Arc<Semaphore>);

impl ConcurrencyBudget {
    /// `max` calls at once; 0 means no limit.
    pub fn new(max: usize) -> ConcurrencyBudget {
        let permits = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max
        };
        ConcurrencyBudget(Arc::new(Semaphore::new(permits)))
    }

    /// Wraps a generated service.
    pub fn shed<S>(&self, service: S) -> Shed<S> {
        Shed {
            inner: LoadShed::new(ConcurrencyLimit::with_semaphore(
                service,
                Arc::clone(&self.0),
            )),
        }
    }
}

/// A service that refuses calls beyond the shared budget with UNAVAILABLE.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: LoadShed<ConcurrencyLimit<S>>,
}

impl<S: NamedService> NamedService for Shed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Shed<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // `LoadShed` is always ready: when no permit is free it fails the call instead. The
        // wrapped service cannot fail (`Infallible`), so neither can this.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            Ok(match call.await {
                Ok(response) => response,
                Err(error) if error.is::<Overloaded>() => {
                    GatewayError::Overloaded.into_status().into_http()
                }
                Err(error) => GatewayError::Internal(error.to_string())
                    .into_status()
                    .into_http(),
            })
        })
    }
}
