//! When a failed read is tried again, and after how long.

use std::time::Duration;

use crate::error::{GatewayError, UpstreamError};

/// Whether a failed read may be tried again: the upstream did not process it, or said it is
/// temporarily unable to.
pub(super) fn is_retryable(error: &GatewayError) -> bool {
    match error {
        GatewayError::Unreachable(_) | GatewayError::ReadFailed(_) => true,
        GatewayError::Upstream(upstream) => matches!(upstream.status, 429 | 502 | 503 | 504),
        _ => false,
    }
}

/// Backoff before resend `n` (0-based): full jitter over 25 ms × 2ⁿ, but never less than the
/// upstream's `Retry-After`.
pub(super) fn backoff(resend_count: u32, error: &GatewayError) -> Duration {
    let ceiling = Duration::from_millis(25).saturating_mul(1 << resend_count.min(10));
    let jittered = ceiling.mul_f64(rand::random::<f64>());
    match error {
        GatewayError::Upstream(UpstreamError {
            retry_after: Some(after),
            ..
        }) => jittered.max(*after),
        _ => jittered,
    }
}
