//! Time as the upstream writes it: JavaScript's `Date.prototype.toISOString()`, millisecond
//! precision, always UTC with a `Z` (`2026-01-01T00:00:00.000Z`).

use chrono::{DateTime, Utc};

/// `date` as `2026-01-01T00:00:00.000Z`.
pub(crate) fn iso(date: DateTime<Utc>) -> String {
    date.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Milliseconds since the Unix epoch as [`iso`]; empty when out of chrono's range.
pub(crate) fn iso_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(iso)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_milliseconds_and_z() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_748_736_000_123), "2025-06-01T00:00:00.123Z");
    }
}
