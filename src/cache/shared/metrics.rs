//! The shared tier's metrics, registered by the gateway into its registry
//! ([`SharedTierMetrics::register`]). Labels come from closed sets only.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// Labels of a shared-tier failure.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `timeout`, `redis` (an error answer or a lost connection), `unopenable` (a value that
    /// did not open: another format version, moved, tampered), `invalidation` (a write's
    /// invalidation that could not be recorded at once and is retried).
    pub kind: &'static str,
}

/// Labels of a drop of every local copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    /// `feed_lost` and `feed_back` (the feed's trust changed), `lagged` (feed messages were
    /// dropped before this replica read them), `reconnected` (messages published while the
    /// subscriber was disconnected are lost).
    pub reason: &'static str,
}

/// Counters and gauges of the shared tier. Cheap to clone (every metric is shared).
#[derive(Debug, Clone)]
pub struct SharedTierMetrics {
    /// Reads answered by the shared tier.
    pub hits: Counter,
    /// Reads the shared tier had no servable answer for.
    pub misses: Counter,
    /// Reads that found an answer past its TTL, kept for the stale windows (served stale, or
    /// loaded afresh, as the read's windows and `cache-control` decide).
    pub stale: Counter,
    /// Operations skipped: the breaker was open.
    pub skipped: Counter,
    /// Failures by kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// Latency of shared-tier round trips, in seconds.
    pub latency: Histogram,
    /// Invalidation messages published by this replica.
    pub invalidations_published: Counter,
    /// Invalidation messages from other replicas applied here.
    pub invalidations_received: Counter,
    /// Reads that waited for another replica's fill instead of calling the upstream.
    pub coalesced: Counter,
    /// Answers written to the shared tier.
    pub writes: Counter,
    /// 1 while the breaker is open (the tier is skipped).
    pub breaker_open: Gauge,
    /// 1 while the invalidation feed is trusted.
    pub feed_trusted: Gauge,
    /// Drops of every local copy because invalidations may have been missed, by reason.
    pub local_drops: Family<DropLabels, Counter>,
}

impl Default for SharedTierMetrics {
    fn default() -> Self {
        SharedTierMetrics {
            hits: Counter::default(),
            misses: Counter::default(),
            stale: Counter::default(),
            skipped: Counter::default(),
            errors: Family::default(),
            latency: Histogram::new([
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
            invalidations_published: Counter::default(),
            invalidations_received: Counter::default(),
            coalesced: Counter::default(),
            writes: Counter::default(),
            breaker_open: Gauge::default(),
            feed_trusted: Gauge::default(),
            local_drops: Family::default(),
        }
    }
}

impl SharedTierMetrics {
    /// Counts one drop of every local copy, for `reason`.
    pub fn local_drop(&self, reason: &'static str) {
        self.local_drops.get_or_create(&DropLabels { reason }).inc();
    }

    /// Counts one failure of `kind`.
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// Registers every metric under `wnology_gateway_shared_cache_*` (the caller passes the
    /// gateway's registry, or a sub-registry with its prefix).
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("shared_cache");
        registry.register(
            "hits",
            "Reads answered by the shared (Redis) tier",
            self.hits.clone(),
        );
        registry.register(
            "misses",
            "Reads the shared tier had no servable answer for",
            self.misses.clone(),
        );
        registry.register(
            "stale",
            "Reads that found an answer past its TTL in the shared tier, kept for the stale windows",
            self.stale.clone(),
        );
        registry.register(
            "skipped",
            "Shared-tier operations skipped while the breaker was open",
            self.skipped.clone(),
        );
        registry.register(
            "errors",
            "Shared-tier failures by kind",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "latency",
            "Latency of one shared-tier round trip",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "invalidations_published",
            "Invalidation messages this replica published",
            self.invalidations_published.clone(),
        );
        registry.register(
            "invalidations_received",
            "Invalidation messages from other replicas applied here",
            self.invalidations_received.clone(),
        );
        registry.register(
            "coalesced",
            "Reads that waited for another replica's fill instead of calling the upstream",
            self.coalesced.clone(),
        );
        registry.register(
            "writes",
            "Answers written to the shared tier",
            self.writes.clone(),
        );
        registry.register(
            "breaker_open",
            "1 while the shared tier is skipped after consecutive failures",
            self.breaker_open.clone(),
        );
        registry.register(
            "feed_trusted",
            "1 while the cross-replica invalidation feed is live",
            self.feed_trusted.clone(),
        );
        registry.register(
            "local_drops",
            "Drops of every local copy because invalidations may have been missed, by reason",
            self.local_drops.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes() {
        let metrics = SharedTierMetrics::default();
        metrics.hits.inc();
        metrics.stale.inc();
        metrics.error("timeout");
        metrics.local_drop("lagged");
        let mut registry = Registry::with_prefix("wnology_gateway");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("wnology_gateway_shared_cache_hits_total 1"),
            "{text}"
        );
        assert!(text.contains("wnology_gateway_shared_cache_stale_total 1"));
        assert!(text.contains("wnology_gateway_shared_cache_errors_total{kind=\"timeout\"} 1"));
        assert!(text.contains("wnology_gateway_shared_cache_latency_seconds_bucket"));
        assert!(
            text.contains("wnology_gateway_shared_cache_local_drops_total{reason=\"lagged\"} 1")
        );
    }
}
