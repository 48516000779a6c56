//! Prometheus metrics, served by the admin listener at `/metrics` (OpenMetrics text).
//!
//! Labels are all drawn from closed sets (service, method, gRPC code, upstream action and
//! status): never from caller input, so a label can carry no token and cardinality is bounded.

use std::{
    fmt,
    sync::{Arc, OnceLock, atomic::AtomicI64},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
        info::Info,
    },
    registry::{Registry, Unit},
};

use crate::cache::CacheFigures;

/// Labels of one RPC outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RpcLabels {
    /// `wnology.v1.MeService`
    pub service: &'static str,
    /// `PayloadCounts`
    pub method: &'static str,
    /// The gRPC code name, `OK`, `NOT_FOUND`, …
    pub code: &'static str,
}

/// Labels of one upstream call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream action, `me.payloadCounts`.
    pub action: &'static str,
    /// The HTTP status, or the failure (`connect_error`, `timeout`, …) when there was none.
    pub status: UpstreamStatus,
}

/// Labels of a count kept per service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    /// `wnology.v1.MeService`
    pub service: &'static str,
}

/// Labels of a count kept per upstream action.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ActionLabels {
    /// `me.payloadCounts`
    pub action: &'static str,
}

/// Labels of a request refused before it reached the gateway's pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `read_timeout`, `too_large`, `extra_message` or `content_type`.
    pub reason: &'static str,
}

/// Labels of a circuit-breaker transition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BreakerTransitionLabels {
    /// The state left: `closed`, `open`, `half_open`.
    pub from: &'static str,
    /// The state entered.
    pub to: &'static str,
}

/// The HTTP status of an upstream call, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamStatus {
    /// An HTTP answer.
    Http(u16),
    /// No answer: the named failure.
    Failed(&'static str),
}

impl prometheus_client::encoding::EncodeLabelValue for UpstreamStatus {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder,
    ) -> Result<(), fmt::Error> {
        use std::fmt::Write;
        match self {
            UpstreamStatus::Http(status) => write!(encoder, "{status}"),
            UpstreamStatus::Failed(reason) => encoder.write_str(reason),
        }
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
    .into_iter()
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    rpcs: Family<RpcLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram>,
    upstream: UpstreamMetrics,
    in_flight: Gauge,
    shed: Family<ServiceLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    breaker: BreakerMetrics,
    cache_figures: Arc<OnceLock<Box<dyn Fn() -> CacheFigures + Send + Sync>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The upstream calls' metrics (`wnology_gateway_upstream_*`).
#[derive(Debug, Clone)]
struct UpstreamMetrics {
    requests: Family<UpstreamLabels, Counter>,
    duration: Family<UpstreamLabels, Histogram>,
    in_flight: Gauge,
    retries: Family<ActionLabels, Counter>,
}

impl UpstreamMetrics {
    fn register(registry: &mut Registry) -> UpstreamMetrics {
        let metrics = UpstreamMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            in_flight: Gauge::default(),
            retries: Family::default(),
        };
        registry.register(
            "upstream_requests",
            "Upstream HTTP calls, by action and status",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "upstream_duration",
            "Time of an upstream HTTP call, by action and status",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "upstream_in_flight",
            "Upstream HTTP requests in flight (bounded by --max-upstream-in-flight)",
            metrics.in_flight.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream reads sent again after a retryable failure, by action",
            metrics.retries.clone(),
        );
        metrics
    }
}

/// The upstream circuit breaker's metrics (`wnology_gateway_upstream_breaker_*`).
#[derive(Debug, Clone)]
struct BreakerMetrics {
    state: Gauge,
    transitions: Family<BreakerTransitionLabels, Counter>,
    refused: Counter,
}

impl BreakerMetrics {
    fn register(registry: &mut Registry) -> BreakerMetrics {
        let metrics = BreakerMetrics {
            state: Gauge::default(),
            transitions: Family::default(),
            refused: Counter::default(),
        };
        // Every possible transition from 0, so that `increase()` sees a replica's first one.
        for (from, to) in [
            ("closed", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
            ("half_open", "closed"),
        ] {
            let _ = metrics
                .transitions
                .get_or_create(&BreakerTransitionLabels { from, to });
        }
        registry.register(
            "upstream_breaker_state",
            "The upstream circuit breaker's state: 0 closed, 1 open, 2 half-open",
            metrics.state.clone(),
        );
        registry.register(
            "upstream_breaker_transitions",
            "Changes of the upstream circuit breaker's state, by state left and entered",
            metrics.transitions.clone(),
        );
        registry.register(
            "upstream_breaker_refused",
            "Upstream calls not sent because the circuit breaker was open",
            metrics.refused.clone(),
        );
        metrics
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The registry, to add the metrics of an optional part (the shared cache tier) before
    /// the gateway starts.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A registry with every metric, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wnology_gateway");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "RPCs served, by service, method and gRPC code",
            rpcs.clone(),
        );
        let rpc_duration = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register_with_unit(
            "rpc_duration",
            "Time to serve an RPC, by service, method and gRPC code",
            Unit::Seconds,
            rpc_duration.clone(),
        );
        let upstream = UpstreamMetrics::register(&mut registry);
        let in_flight = Gauge::default();
        registry.register("rpc_in_flight", "RPCs being served now", in_flight.clone());
        let shed = Family::<ServiceLabels, Counter>::default();
        registry.register(
            "rpc_shed",
            "RPCs refused at once because --max-concurrency calls were running, by service",
            shed.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "request_refused",
            "Requests refused while their message was read (too slow, too large, more than one \
             message, not gRPC), by reason",
            refused.clone(),
        );
        let breaker = BreakerMetrics::register(&mut registry);
        registry.register(
            "build",
            "Build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let cache_figures: Arc<OnceLock<Box<dyn Fn() -> CacheFigures + Send + Sync>>> =
            Arc::default();
        registry.register_collector(Box::new(CacheCollector(Arc::clone(&cache_figures))));
        registry.register_collector(Box::new(AccessLogCollector));
        Metrics {
            registry,
            rpcs,
            rpc_duration,
            upstream,
            in_flight,
            shed,
            refused,
            breaker,
            cache_figures,
        }
    }

    /// Where the cache figures come from at each scrape.
    pub fn observe_cache(&self, figures: impl Fn() -> CacheFigures + Send + Sync + 'static) {
        let _ = self.cache_figures.set(Box::new(figures));
    }

    /// Records a served RPC.
    pub fn rpc(&self, labels: RpcLabels, elapsed: Duration) {
        self.rpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.rpcs.get_or_create(&labels).inc();
    }

    /// Records an upstream call.
    pub fn upstream(&self, labels: UpstreamLabels, elapsed: Duration) {
        self.upstream
            .duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.upstream.requests.get_or_create(&labels).inc();
    }

    /// Counts an RPC in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts an RPC of `service` refused by load shedding.
    pub fn shed(&self, service: &'static str) {
        self.shed.get_or_create(&ServiceLabels { service }).inc();
    }

    /// Counts a request refused while its message was read.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts one upstream request in flight until the guard is dropped.
    pub fn upstream_in_flight(&self) -> InFlight {
        self.upstream.in_flight.inc();
        InFlight(self.upstream.in_flight.clone())
    }

    /// Counts a retry of an upstream read.
    pub fn upstream_retry(&self, action: &'static str) {
        self.upstream
            .retries
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    /// Records a change of the circuit breaker's state.
    pub fn upstream_breaker_transition(
        &self,
        from: &'static str,
        to: crate::upstream::breaker::State,
    ) {
        self.breaker.state.set(to.gauge());
        self.breaker
            .transitions
            .get_or_create(&BreakerTransitionLabels {
                from,
                to: to.as_str(),
            })
            .inc();
    }

    /// Counts an upstream call the open circuit breaker refused.
    pub fn upstream_breaker_refused(&self) {
        self.breaker.refused.inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// Decrements the in-flight gauge when dropped (also when the RPC is cancelled).
#[derive(Debug)]
pub struct InFlight(Gauge<i64, AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the cache's own counters at scrape time, so the hot path keeps no second copy.
struct CacheCollector(Arc<OnceLock<Box<dyn Fn() -> CacheFigures + Send + Sync>>>);

impl fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheCollector")
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(figures) = self.0.get() else {
            return Ok(());
        };
        let figures = figures();
        let counters = cache_counters(&figures);
        for (name, help, value) in counters {
            let metric = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(value).metric_type(),
            )?;
            ConstCounter::new(value).encode(metric)?;
        }
        let stale = encoder.encode_descriptor(
            "cache_stale_answers",
            "Answers served past their TTL, by reason: `revalidate` (while a background refresh \
             ran) or `error` (in place of an upstream failure)",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        encode_stale(stale, figures.stale_revalidate, figures.stale_error)?;
        let refreshes = ConstCounter::new(figures.refreshes);
        refreshes.encode(encoder.encode_descriptor(
            "cache_background_refreshes",
            "Background refreshes of entries served stale (one per key at a time)",
            None,
            refreshes.metric_type(),
        )?)?;
        let gauges = cache_gauges(&figures);
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// The cache's counters: name, help, value.
fn cache_counters(figures: &CacheFigures) -> [(&'static str, &'static str, u64); 6] {
    [
        ("cache_hits", "Reads answered from the cache", figures.hits),
        (
            "cache_misses",
            "Reads that called the upstream",
            figures.misses,
        ),
        (
            "cache_coalesced",
            "Reads that waited for an identical in-flight upstream call",
            figures.coalesced,
        ),
        (
            "cache_evictions",
            "Entries evicted to stay within --cache-max-bytes",
            figures.evictions,
        ),
        (
            "cache_expirations",
            "Entries that expired",
            figures.expirations,
        ),
        (
            "cache_invalidations",
            "Invalidations applied after writes",
            figures.invalidations,
        ),
    ]
}

/// The cache's gauges: name, help, unit, value.
fn cache_gauges(
    figures: &CacheFigures,
) -> [(&'static str, &'static str, Option<&'static Unit>, u64); 3] {
    [
        (
            "cache_entries",
            "Entries in the cache",
            None,
            figures.entries,
        ),
        (
            "cache_weighted_size",
            "Weighted size of the cache",
            Some(&Unit::Bytes),
            figures.weighted_bytes,
        ),
        (
            "cache_loads_in_flight",
            "Upstream loads in flight, each shared by its coalesced callers",
            None,
            figures.loads_in_flight,
        ),
    ]
}

/// Labels of a stale answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StaleLabels {
    reason: &'static str,
}

fn encode_stale(
    mut metric: prometheus_client::encoding::MetricEncoder<'_>,
    revalidate: u64,
    error: u64,
) -> Result<(), fmt::Error> {
    for (reason, value) in [("revalidate", revalidate), ("error", error)] {
        ConstCounter::new(value).encode(metric.encode_family(&StaleLabels { reason })?)?;
    }
    Ok(())
}

/// Reads the access log's dropped-line count at scrape time.
#[derive(Debug)]
struct AccessLogCollector;

impl Collector for AccessLogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let dropped = ConstCounter::new(crate::telemetry::access_log_dropped());
        let metric = encoder.encode_descriptor(
            "access_log_dropped",
            "Access-log lines dropped because the log sink (stdout) did not keep up",
            None,
            dropped.metric_type(),
        )?;
        dropped.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_labels_and_cache_figures() {
        let metrics = Metrics::new();
        metrics.rpc(
            RpcLabels {
                service: "wnology.v1.MeService",
                method: "Get",
                code: "OK",
            },
            Duration::from_millis(3),
        );
        metrics.upstream(
            UpstreamLabels {
                action: "me.get",
                status: UpstreamStatus::Http(200),
            },
            Duration::from_millis(2),
        );
        metrics.upstream(
            UpstreamLabels {
                action: "me.get",
                status: UpstreamStatus::Failed("connect_error"),
            },
            Duration::from_millis(2),
        );
        metrics.observe_cache(|| CacheFigures {
            hits: 7,
            misses: 1,
            coalesced: 2,
            evictions: 0,
            expirations: 0,
            invalidations: 0,
            entries: 1,
            weighted_bytes: 900,
            loads_in_flight: 0,
            stale_revalidate: 4,
            stale_error: 3,
            refreshes: 2,
        });
        metrics.upstream_breaker_transition("closed", crate::upstream::breaker::State::Open);
        let guard = metrics.in_flight();
        let text = metrics.encode();
        drop(guard);
        for expected in [
            r#"wnology_gateway_rpc_requests_total{service="wnology.v1.MeService",method="Get",code="OK"} 1"#,
            r#"wnology_gateway_rpc_duration_seconds_count{service="wnology.v1.MeService",method="Get",code="OK"} 1"#,
            r#"wnology_gateway_upstream_requests_total{action="me.get",status="200"} 1"#,
            r#"wnology_gateway_upstream_requests_total{action="me.get",status="connect_error"} 1"#,
            "wnology_gateway_rpc_in_flight 1",
            "wnology_gateway_cache_hits_total 7",
            "wnology_gateway_cache_coalesced_total 2",
            "wnology_gateway_cache_weighted_size_bytes 900",
            "wnology_gateway_access_log_dropped_total 0",
            r#"wnology_gateway_cache_stale_answers_total{reason="revalidate"} 4"#,
            r#"wnology_gateway_cache_stale_answers_total{reason="error"} 3"#,
            "wnology_gateway_cache_background_refreshes_total 2",
            "wnology_gateway_upstream_breaker_state 1",
            r#"wnology_gateway_upstream_breaker_transitions_total{from="closed",to="open"} 1"#,
            r#"wnology_gateway_build_info{version=""#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
