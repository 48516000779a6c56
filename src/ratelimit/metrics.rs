//! The rate limit's metrics, registered into the gateway's registry
//! ([`RateLimitMetrics::register`]). Labels come from closed sets only (never a token).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Labels of a refused call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `RATE_LIMITED` (over `--rate-limit-per-token`) or `UPSTREAM_RATE_LIMITED` (held back
    /// after the upstream's 429).
    pub reason: &'static str,
}

/// Labels of a counted call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreLabels {
    /// `redis` (one limit across replicas) or `local` (this replica's).
    pub store: &'static str,
}

/// Counters and gauges of the rate limit. Cheap to clone (every metric is shared).
#[derive(Debug, Clone, Default)]
pub struct RateLimitMetrics {
    /// Calls refused, by reason.
    pub limited: Family<ReasonLabels, Counter>,
    /// Calls counted against the limit, by where the count was kept.
    pub checks: Family<StoreLabels, Counter>,
    /// 1 while Redis cannot be used and each replica limits alone.
    pub fallback: Gauge,
}

impl RateLimitMetrics {
    /// Counts one refusal for `reason`.
    pub fn limited(&self, reason: &'static str) {
        self.limited.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts one call counted in `store`.
    pub fn checked(&self, store: &'static str) {
        self.checks.get_or_create(&StoreLabels { store }).inc();
    }

    /// Registers `wnology_gateway_rate_limited_total{reason}`,
    /// `wnology_gateway_rate_limit_checks_total{store}` and
    /// `wnology_gateway_rate_limit_fallback` (the caller passes the gateway's registry).
    pub fn register(&self, registry: &mut Registry) {
        for reason in [super::RATE_LIMITED, super::UPSTREAM_RATE_LIMITED] {
            let _ = self.limited.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "rate_limited",
            "Calls refused by the per-token rate limit, by reason (nothing was sent upstream)",
            self.limited.clone(),
        );
        registry.register(
            "rate_limit_checks",
            "Calls counted against the per-token rate limit, by store (redis: across replicas; local: this replica)",
            self.checks.clone(),
        );
        registry.register(
            "rate_limit_fallback",
            "1 while Redis cannot be used for the rate limit and each replica limits on its own",
            self.fallback.clone(),
        );
    }
}
