//! The caller's deadline: how long the upstream call may take.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Taken off the caller's deadline so that the gateway's own timer fires first and the caller
/// hears DEADLINE_EXCEEDED from the gateway, in time, rather than its own or the transport's
/// cancellation: a twentieth of the deadline, from 5 ms to 100 ms.
pub fn deadline_margin(deadline: Duration) -> Duration {
    (deadline / 20).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

/// The time the upstream call may take: the caller's `grpc-timeout` less a margin, capped by
/// `--upstream-timeout`.
pub fn upstream_timeout(metadata: &MetadataMap, configured: Duration) -> Duration {
    match metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        Some(deadline) => deadline
            .saturating_sub(deadline_margin(deadline))
            .min(configured),
        None => configured,
    }
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn the_margin_is_a_twentieth_within_bounds() {
        assert_eq!(
            deadline_margin(Duration::from_secs(1)),
            Duration::from_millis(50)
        );
        assert_eq!(
            deadline_margin(Duration::from_millis(10)),
            Duration::from_millis(5)
        );
        assert_eq!(
            deadline_margin(Duration::from_secs(60)),
            Duration::from_millis(100)
        );
    }
}
