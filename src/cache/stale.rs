//! When an entry past its time to live may still be served (RFC 5861): at once while one
//! background refresh runs (stale-while-revalidate), or in place of an upstream failure
//! (stale-if-error), each within a window per route class (usage, entity); and what the
//! caller's `cache-control` narrows. Entries are kept past their TTL only as long as the
//! longest window of their class.

use std::time::{Duration, Instant};

use clap::Args;

use super::control::CacheControl;
use crate::{config::parse_duration, error::GatewayError, routes::CacheClass};

/// The stale windows' settings (`--cache-*-stale-*`).
#[derive(Debug, Clone, Copy, Args)]
pub struct StaleSettings {
    /// How long past its TTL a cached usage read is still answered at once while one
    /// background refresh per key runs; 0 disables.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub cache_usage_stale_while_revalidate: Duration,
    /// How long past its TTL a cached entity or list is still answered at once while one
    /// background refresh per key runs; 0 disables.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub cache_entity_stale_while_revalidate: Duration,
    /// How long past its TTL a cached usage read may answer in place of an upstream failure
    /// (connection error, timeout, 5xx, 429, open circuit); 0 disables.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub cache_usage_stale_if_error: Duration,
    /// How long past its TTL a cached entity or list may answer in place of an upstream
    /// failure; 0 disables.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub cache_entity_stale_if_error: Duration,
}

impl StaleSettings {
    /// Every window 0: entries are never served past their TTL.
    pub fn off() -> StaleSettings {
        StaleSettings {
            cache_usage_stale_while_revalidate: Duration::ZERO,
            cache_entity_stale_while_revalidate: Duration::ZERO,
            cache_usage_stale_if_error: Duration::ZERO,
            cache_entity_stale_if_error: Duration::ZERO,
        }
    }

    /// The windows of a route class.
    pub fn windows(&self, class: CacheClass) -> StaleWindows {
        match class {
            CacheClass::Never => StaleWindows::default(),
            CacheClass::Usage => StaleWindows {
                revalidate: self.cache_usage_stale_while_revalidate,
                if_error: self.cache_usage_stale_if_error,
            },
            CacheClass::Entity => StaleWindows {
                revalidate: self.cache_entity_stale_while_revalidate,
                if_error: self.cache_entity_stale_if_error,
            },
        }
    }
}

/// How long past its TTL an entry may be served, and when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleWindows {
    /// Served at once while a background refresh runs.
    pub revalidate: Duration,
    /// Served in place of an upstream failure.
    pub if_error: Duration,
}

impl StaleWindows {
    /// How long past its TTL an entry is kept: the longer window, which also bounds what a
    /// caller's `stale-if-error=N` may ask for.
    pub fn longest(&self) -> Duration {
        self.revalidate.max(self.if_error)
    }

    /// The stale-if-error window of a call: the caller's, up to the longest window.
    fn if_error_for(&self, control: &CacheControl) -> Duration {
        control
            .stale_if_error
            .map_or(self.if_error, |asked| asked.min(self.longest()))
    }
}

/// When an entry was fetched and until when it is fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When its answer was fetched from the upstream (earlier than stored, for a shared hit).
    pub fetched_at: Instant,
    /// The end of its time to live.
    pub fresh_until: Instant,
}

impl Timing {
    /// The timing at `now` of an answer `age` old and `past` its TTL (a stale answer from the
    /// shared tier, which says both relative to its own clock).
    pub fn expired(now: Instant, age: Duration, past: Duration) -> Timing {
        Timing {
            fetched_at: now.checked_sub(age).unwrap_or(now),
            fresh_until: now.checked_sub(past).unwrap_or(now),
        }
    }

    /// Its age at `now`.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched_at)
    }
}

/// What an entry may be used for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within its TTL: a hit.
    Fresh,
    /// Past its TTL, within the stale-while-revalidate window: served, and refreshed.
    Revalidate,
    /// Past both windows, or older than the caller's `max-age`: not served (it is only kept
    /// for an error when [`usable_on_error`] says so).
    Expired,
}

/// What `timing` makes of an entry at `now` for a call with `control`.
pub fn freshness(
    timing: Timing,
    windows: StaleWindows,
    control: &CacheControl,
    now: Instant,
) -> Freshness {
    if control.max_age.is_some_and(|most| timing.age(now) > most) {
        return Freshness::Expired;
    }
    match now.checked_duration_since(timing.fresh_until) {
        None => Freshness::Fresh,
        Some(past) if past < windows.revalidate => Freshness::Revalidate,
        Some(_) => Freshness::Expired,
    }
}

/// Whether an entry may answer in place of an upstream failure at `now`.
pub fn usable_on_error(
    timing: Timing,
    windows: StaleWindows,
    control: &CacheControl,
    now: Instant,
) -> bool {
    if control.max_age.is_some_and(|most| timing.age(now) > most) {
        return false;
    }
    match now.checked_duration_since(timing.fresh_until) {
        None => true,
        Some(past) => past < windows.if_error_for(control),
    }
}

/// Whether an error is the upstream failing (no connection, a timeout, 5xx, 429 or a call
/// held back after one, the open circuit), which a stale entry may answer for; the caller's
/// own rate limit is not. What the upstream decided about this call
/// (400, 401, 403, 404, 410, …) is passed on: a revoked token never reads stale data.
pub fn is_upstream_failure(error: &GatewayError) -> bool {
    match error {
        GatewayError::Unreachable(_)
        | GatewayError::ReadFailed(_)
        | GatewayError::DeadlineExceeded
        | GatewayError::CircuitOpen { .. }
        // The upstream answered 429 lately and the gateway holds the call back: a 429 still.
        | GatewayError::UpstreamRateLimited { .. } => true,
        GatewayError::Upstream(upstream) => upstream.status == 429 || upstream.status >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::UpstreamError;

    const S: Duration = Duration::from_secs(1);

    fn timing(now: Instant, age: Duration, ttl: Duration) -> Timing {
        Timing {
            fetched_at: now - age,
            fresh_until: now - age + ttl,
        }
    }

    fn windows(revalidate: u64, if_error: u64) -> StaleWindows {
        StaleWindows {
            revalidate: S * revalidate as u32,
            if_error: S * if_error as u32,
        }
    }

    #[test]
    fn fresh_then_revalidate_then_expired() {
        let now = Instant::now();
        let any = CacheControl::default();
        let at = |age| freshness(timing(now, S * age, S * 10), windows(5, 60), &any, now);
        assert_eq!(at(9), Freshness::Fresh);
        assert_eq!(at(12), Freshness::Revalidate);
        assert_eq!(at(16), Freshness::Expired);
        let off = freshness(timing(now, S * 12, S * 10), windows(0, 60), &any, now);
        assert_eq!(off, Freshness::Expired, "a window of 0 is off");
    }

    #[test]
    fn on_error_within_the_callers_window_up_to_the_longest() {
        let now = Instant::now();
        let entry = timing(now, S * 40, S * 10);
        let with = |sie: Option<u64>| CacheControl {
            stale_if_error: sie.map(|s| S * s as u32),
            ..CacheControl::default()
        };
        assert!(usable_on_error(entry, windows(5, 60), &with(None), now));
        assert!(!usable_on_error(entry, windows(5, 20), &with(None), now));
        assert!(
            !usable_on_error(entry, windows(5, 60), &with(Some(10)), now),
            "narrowed"
        );
        assert!(
            !usable_on_error(entry, windows(5, 20), &with(Some(100)), now),
            "widened only up to the longest window"
        );
        assert!(usable_on_error(
            entry,
            windows(45, 20),
            &with(Some(100)),
            now
        ));
        assert!(
            !usable_on_error(entry, windows(5, 0), &with(None), now),
            "0 is off"
        );
    }

    #[test]
    fn max_age_refuses_older_answers_even_on_error() {
        let now = Instant::now();
        let entry = timing(now, S * 8, S * 10);
        let control = CacheControl {
            max_age: Some(S * 5),
            ..CacheControl::default()
        };
        assert_eq!(
            freshness(entry, windows(5, 60), &control, now),
            Freshness::Expired
        );
        assert!(!usable_on_error(entry, windows(5, 60), &control, now));
    }

    #[test]
    fn only_upstream_failures_allow_stale() {
        let http = |status| {
            GatewayError::Upstream(UpstreamError {
                status,
                error_type: None,
                message: String::new(),
                domain: String::new(),
                retry_after: None,
            })
        };
        for status in [429, 500, 502, 503, 504] {
            assert!(is_upstream_failure(&http(status)), "{status}");
        }
        for status in [400, 401, 403, 404, 410] {
            assert!(!is_upstream_failure(&http(status)), "{status}");
        }
        assert!(is_upstream_failure(&GatewayError::DeadlineExceeded));
        assert!(is_upstream_failure(&GatewayError::Unreachable("x".into())));
        assert!(!is_upstream_failure(&GatewayError::MissingToken));
        let wait = Duration::from_secs(1);
        assert!(is_upstream_failure(&GatewayError::UpstreamRateLimited {
            retry_after: wait
        }));
        assert!(!is_upstream_failure(&GatewayError::RateLimited {
            retry_after: wait
        }));
    }
}
