//! The limit across replicas: one GCRA per token in Redis, decided atomically by one Lua
//! script (on Redis's own clock, so replicas' clocks do not matter), which also answers the
//! upstream's holds ([`super::backpressure`]) in the same round trip.
//!
//! The connection is made like the shared cache tier's (same URL, TLS, Cluster, time bound and
//! reconnection: [`Store::connect`]). Redis never fails a call: while it cannot be used (not
//! connected, an error, no answer within `--cache-redis-timeout`) the caller uses the local
//! limiter, and Redis is tried again after [`COOL_DOWN`]; each change of state is logged once.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fred::{
    interfaces::ClientLike,
    types::{Value, scripts::Script},
};
use prometheus_client::metrics::gauge::Gauge;

use super::{Decision, settings::Limit};
use crate::cache::{TokenId, shared::store::Store};

/// How long the local limiter stands in after Redis failed, before Redis is tried again.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// KEYS = the token's schedule (its theoretical arrival time, µs), the token's hold of one
/// action. ARGV = emission interval µs, burst tolerance µs. `{0, 0}` admitted, `{1, wait µs}`
/// over the limit, `{2, wait µs}` held back by the upstream. A refused call changes nothing.
const ADMIT: &str = r"
local held = redis.call('PTTL', KEYS[2])
if held > 0 then return {2, held * 1000} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + tonumber(ARGV[1])
local allowed_at = next_tat - tonumber(ARGV[2])
if allowed_at > now then return {1, allowed_at - now} end
local ttl_ms = math.max(1, math.ceil((next_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', string.format('%.0f', ttl_ms))
return {0, 0}
";

/// KEYS = the hold; ARGV = ms. Sets the hold unless a longer one is already there.
const HOLD: &str = r"
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
";

/// The Redis side of the limiter.
#[derive(Debug)]
pub struct RedisLimiter {
    store: Arc<Store>,
    admit: Script,
    hold: Script,
    /// `Some(when to try again)` while Redis is not used.
    down: Mutex<Option<Instant>>,
    fallback: Gauge,
}

/// The key names of one token: its schedule, and the prefix of its holds. The hash tag keeps
/// a token's keys in one Cluster slot (the script reads both). The id is already an HMAC under
/// the shared secret: nothing of the token is in a name.
fn names(token: TokenId) -> (String, String) {
    let id = hex::encode(&token.0[..16]);
    (format!("wg1:rl:{{{id}}}"), format!("wg1:rl:{{{id}}}:hold:"))
}

fn micros(duration: Duration) -> String {
    duration.as_micros().max(1).to_string()
}

impl RedisLimiter {
    /// The limiter on the shared tier's connection ([`crate::cache::shared::SharedTier::store`]:
    /// one client per replica, connected in the background; while Redis is down the limiter
    /// limits locally).
    pub fn new(store: Arc<Store>, fallback: Gauge) -> RedisLimiter {
        RedisLimiter {
            store,
            admit: Script::from_lua(ADMIT),
            hold: Script::from_lua(HOLD),
            down: Mutex::new(None),
            fallback,
        }
    }

    /// Counts one call of `token` to `action` in Redis; `None` when Redis cannot be used now
    /// (the caller decides locally).
    pub async fn admit(&self, token: TokenId, action: &str, limit: Limit) -> Option<Decision> {
        if !self.usable() {
            return None;
        }
        let (schedule, hold) = names(token);
        let args = vec![micros(limit.interval), micros(limit.tolerance())];
        let call = self.admit.evalsha_with_reload::<Value, _, _>(
            self.store.client(),
            vec![schedule, format!("{hold}{action}")],
            args,
        );
        let reply = tokio::time::timeout(self.store.timeout(), call).await;
        let decision = match reply {
            Ok(Ok(Value::Array(items))) => decision(&items),
            Ok(Ok(_)) => None,
            Ok(Err(error)) => {
                tracing::debug!(%error, "rate limit script failed");
                None
            }
            Err(_) => None,
        };
        match decision {
            Some(_) => self.up(),
            None => self.failed(),
        }
        decision
    }

    /// Holds `token`'s calls of `action` back for `wait` on every replica, in the background.
    pub fn hold(
        &self,
        token: TokenId,
        action: &str,
        wait: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let client = self.store.client().clone();
        let (script, timeout) = (self.hold.clone(), self.store.timeout());
        let key = format!("{}{action}", names(token).1);
        let ms = wait.as_millis().max(1).to_string();
        async move {
            let call = script.evalsha_with_reload::<i64, _, _>(&client, vec![key], vec![ms]);
            if !matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_))) {
                tracing::debug!(
                    "the upstream's hold could not be recorded in Redis; it holds on this replica"
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether to try Redis now: connected, and not cooling down after a failure.
    fn usable(&self) -> bool {
        if !self.store.client().is_connected() {
            self.failed();
            return false;
        }
        self.lock()
            .is_none_or(|retry_at| Instant::now() >= retry_at)
    }

    fn failed(&self) {
        let mut down = self.lock();
        if down.is_none() {
            tracing::warn!(
                "rate limit: Redis cannot be used; each replica applies --rate-limit-per-token on its own meanwhile"
            );
            self.fallback.set(1);
        }
        *down = Some(Instant::now() + COOL_DOWN);
    }

    fn up(&self) {
        let mut down = self.lock();
        if down.take().is_some() {
            tracing::warn!(
                "rate limit: Redis is available again; the limit is across replicas again"
            );
            self.fallback.set(0);
        }
    }
}

/// The script's answer as a decision.
fn decision(items: &[Value]) -> Option<Decision> {
    let micros = |value: &Value| match value {
        Value::Integer(n) => Some(Duration::from_micros(u64::try_from(*n).ok()?)),
        _ => None,
    };
    match items {
        [Value::Integer(0), _] => Some(Decision::Admit),
        [Value::Integer(1), wait] => Some(Decision::Limited(micros(wait)?)),
        [Value::Integer(2), wait] => Some(Decision::Held(micros(wait)?)),
        _ => None,
    }
}
