//! The Redis connection (fred: one node or a Cluster, TLS for `rediss://`, reconnecting by
//! itself) and the guard around every operation: a time bound (`--cache-redis-timeout`) and a
//! breaker that skips the tier for a cool-down after consecutive failures. No operation ever
//! returns anything but a value or a [`StoreError`] the caller treats as "no shared tier".

use std::{
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use fred::{
    clients::{Client, SubscriberClient},
    interfaces::ClientLike,
    types::{
        Builder,
        config::{Config, ReconnectPolicy},
    },
};
use tracing::Instrument;

use super::{metrics::SharedTierMetrics, settings::SharedTierConfig};

/// Consecutive failures that open the breaker.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long the tier is skipped once the breaker opens, before one probe is let through.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(2);

/// Why a shared-tier operation gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The breaker is open: the operation was not tried.
    #[error("skipped: the shared tier's breaker is open")]
    Skipped,
    /// No answer within the time bound.
    #[error("timed out")]
    Timeout,
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// Redis answered something the scripts never return.
    #[error("unexpected reply")]
    Reply,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; others are skipped until it reports (or `since` is long past).
    Probing {
        since: Instant,
    },
}

/// Skips the tier after [`BREAKER_THRESHOLD`] consecutive failures, for [`BREAKER_COOL_DOWN`].
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    timeout: Duration,
    metrics: SharedTierMetrics,
}

impl Breaker {
    fn new(timeout: Duration, metrics: SharedTierMetrics) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            timeout,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether an operation may run now.
    pub fn admit(&self) -> bool {
        let mut state = self.lock();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } | State::Probing { since: until }
                if now < until + self.probe_allowance(&state) =>
            {
                false
            }
            State::Open { .. } | State::Probing { .. } => {
                *state = State::Probing { since: now };
                true
            }
        }
    }

    fn probe_allowance(&self, state: &State) -> Duration {
        // A probe whose caller went away never reports: after a few time bounds, allow another.
        match state {
            State::Probing { .. } => self.timeout * 4,
            _ => Duration::ZERO,
        }
    }

    /// Whether the breaker is open now (the tier is being skipped).
    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }

    fn success(&self) {
        let mut state = self.lock();
        if !matches!(*state, State::Closed { .. }) {
            tracing::warn!("shared cache tier (Redis) is available again: using it");
            self.metrics.breaker_open.set(0);
        }
        *state = State::Closed { failures: 0 };
    }

    fn failure(&self) {
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + BREAKER_COOL_DOWN,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= BREAKER_THRESHOLD => {
                tracing::warn!(
                    failures = failures + 1,
                    cool_down_ms = BREAKER_COOL_DOWN.as_millis() as u64,
                    "shared cache tier (Redis) is failing: skipping it, each replica caches alone meanwhile"
                );
                self.metrics.breaker_open.set(1);
                *state = open;
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                }
            }
            State::Open { .. } | State::Probing { .. } => *state = open,
        }
    }
}

/// The Redis clients and the guard around them.
#[derive(Debug)]
pub struct Store {
    client: Client,
    timeout: Duration,
    breaker: Breaker,
    metrics: SharedTierMetrics,
}

fn fred_config(config: &SharedTierConfig) -> Result<Config, fred::error::Error> {
    let url = config.url.expose();
    let mut fred = if config.cluster {
        Config::from_url_clustered(url)?
    } else {
        Config::from_url_centralized(url)?
    };
    // Start even when Redis is down: the client keeps reconnecting, the breaker skips the tier.
    fred.fail_fast = false;
    Ok(fred)
}

fn builder(config: &SharedTierConfig) -> Result<Builder, fred::error::Error> {
    let mut builder = Builder::from_config(fred_config(config)?);
    let timeout = config.timeout;
    builder
        .with_performance_config(|perf| perf.default_command_timeout = timeout)
        .with_connection_config(|conn| {
            conn.connection_timeout = timeout.max(Duration::from_millis(500));
            conn.internal_command_timeout = timeout.max(Duration::from_secs(1));
            conn.max_command_attempts = 1;
            conn.tcp.nodelay = Some(true);
            // A connection that stops answering is closed and reopened.
            conn.unresponsive.max_timeout = Some(timeout.max(Duration::from_secs(1)) * 2);
            conn.unresponsive.interval = Duration::from_millis(250);
        })
        // Unbounded attempts, 50 ms to 1 s apart.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2));
    Ok(builder)
}

impl Store {
    /// A store that connects in the background (it never waits for Redis).
    pub fn connect(
        config: &SharedTierConfig,
        metrics: SharedTierMetrics,
    ) -> Result<Store, fred::error::Error> {
        let client = builder(config)?.build()?;
        let _connection = client.connect();
        Ok(Store {
            client,
            timeout: config.timeout,
            breaker: Breaker::new(config.timeout, metrics.clone()),
            metrics,
        })
    }

    /// A subscriber client on the same Redis (for the feed), connecting in the background.
    pub fn subscriber(config: &SharedTierConfig) -> Result<SubscriberClient, fred::error::Error> {
        let subscriber = builder(config)?.build_subscriber_client()?;
        let _connection = subscriber.connect();
        Ok(subscriber)
    }

    /// The client, for commands (run them through [`Store::run`]).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The time bound of one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Runs one operation under the breaker and the time bound, recording its latency and
    /// outcome (a span named `shared_cache <operation>` when spans are exported).
    pub async fn run<T, F>(&self, operation: &'static str, future: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        if !self.breaker.admit() {
            self.metrics.skipped.inc();
            return Err(StoreError::Skipped);
        }
        let span = tracing::debug_span!(
            "shared_cache",
            otel.name = operation,
            db.system.name = "redis",
            db.operation.name = operation,
        );
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, future)
            .instrument(span)
            .await;
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(value)) => {
                self.breaker.success();
                Ok(value)
            }
            Ok(Err(error)) => {
                self.breaker.failure();
                self.metrics.error("redis");
                tracing::debug!(operation, %error, "shared cache operation failed");
                Err(error)
            }
            Err(_) => {
                self.breaker.failure();
                self.metrics.error("timeout");
                Err(StoreError::Timeout)
            }
        }
    }

    /// Closes the connection.
    pub async fn quit(&self) {
        let _ = tokio::time::timeout(self.timeout, self.client.quit()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_failures_and_probes_after_the_cool_down() {
        let breaker = Breaker::new(Duration::from_millis(10), SharedTierMetrics::default());
        for _ in 0..BREAKER_THRESHOLD - 1 {
            assert!(breaker.admit());
            breaker.failure();
        }
        breaker.success();
        for _ in 0..BREAKER_THRESHOLD {
            assert!(breaker.admit());
            breaker.failure();
        }
        assert!(breaker.is_open());
        assert!(!breaker.admit());
        *breaker.lock() = State::Open {
            until: Instant::now() - Duration::from_millis(1),
        };
        assert!(breaker.admit(), "one probe after the cool-down");
        assert!(!breaker.admit(), "only one");
        breaker.success();
        assert!(!breaker.is_open());
        assert!(breaker.admit());
    }
}
