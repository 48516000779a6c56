//! Generation stamps in Redis and the Lua scripts that check them in the read's own round trip.
//!
//! Each scope an answer belongs to has a generation key (see [`super::key`]); a stored answer
//! is a hash `{s: stamp, v: sealed}` whose stamp lists the generations current when its load
//! began. The read script returns the value only if that stamp equals the current generations,
//! so once a write's `INCR`s have returned no replica reads what may predate it. A miss returns
//! the current stamp, which the caller's fill must carry: the put script stores nothing when a
//! write came in between.
//!
//! A missing generation reads as `-` and a stored stamp never holds `-`: the put script creates
//! missing generations with a random start. So a generation lost to eviction, expiry or a Redis
//! restart never matches an old stamp again (a miss, never a stale hit), under any `maxmemory`
//! policy. Every key carries a TTL: values their answer's and their class's longest stale
//! window, generations [`GENERATION_TTL`] (refreshed by each fill), leases their lease time.
//!
//! A value kept past its TTL (for stale serving) is still returned by the read, under the same
//! generation check, so an invalidated value is never served stale either; the hash's `f`
//! field (when the value stops being fresh, Unix ms, written by the filler) lets the lease
//! script treat such a value as nothing to read, so that one replica refreshes it while the
//! others wait for that fill.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::types::{Value, scripts::Script};

use super::{
    key::EntryNames,
    store::{Store, StoreError},
};

/// How long an unused generation key lives (each fill that reads it refreshes it).
pub const GENERATION_TTL: Duration = Duration::from_secs(24 * 3600);

/// The channel of the feed (invalidations, heartbeats, fills).
pub const FEED_CHANNEL: &str = "wg1:feed";

/// Computes the current stamp of KEYS[3..] into `stamp` and reads the value's hash into
/// `entry` (a Lua fragment shared by scripts).
const STAMP: &str = r"
local gens = {}
for i = 3, #KEYS do
  gens[#gens + 1] = redis.call('GET', KEYS[i]) or '-'
end
local stamp = table.concat(gens, ',')
local entry = redis.call('HMGET', KEYS[1], 's', 'v', 'f')
";

/// The read: KEYS = value, lease, generations. `{1, sealed, stamp}` (fresh or kept past its
/// TTL: the caller opens it and sees which) or `{0, stamp}`.
fn read_script() -> String {
    format!(
        "{STAMP}\nif entry[1] == stamp and entry[2] then\n  return {{1, entry[2], stamp}}\nend\nreturn {{0, stamp}}"
    )
}

/// The read that takes the fill lease when there is nothing fresh to read: ARGV = lease token,
/// lease ms, now (Unix ms). `{1, sealed, stamp}` (a fresh value), `{2, stamp}` (this caller
/// leads) or `{0, stamp}` (another replica leads: wait). A value past its `f` counts as
/// nothing, so that it is refreshed once, not by every replica that finds it stale.
fn acquire_script() -> String {
    format!(
        "{STAMP}\nif entry[1] == stamp and entry[2] and (not entry[3] or tonumber(entry[3]) > tonumber(ARGV[3])) then\n  return {{1, entry[2], stamp}}\nend\nif redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then\n  return {{2, stamp}}\nend\nreturn {{0, stamp}}"
    )
}

/// The fill: ARGV = stamp, sealed, ms Redis keeps it, generation ttl ms, lease token (or ``),
/// channel, value name, fresh until (Unix ms), then one random start per generation. Releases the lease if held and tells
/// waiters (`F` filled, `A` abandoned because a write came in between). 1 stored, 0 not.
const PUT: &str = r"
local current = {}
for i = 3, #KEYS do
  current[#current + 1] = redis.call('GET', KEYS[i]) or '-'
end
local held = ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5]
if held then redis.call('DEL', KEYS[2]) end
if table.concat(current, ',') ~= ARGV[1] then
  if held then redis.call('PUBLISH', ARGV[6], 'A' .. ARGV[7]) end
  return 0
end
for i = 3, #KEYS do
  if current[i - 2] == '-' then
    current[i - 2] = ARGV[6 + i]
    redis.call('SET', KEYS[i], ARGV[6 + i], 'PX', ARGV[4])
  else
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', table.concat(current, ','), 'v', ARGV[2], 'f', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if held then redis.call('PUBLISH', ARGV[6], 'F' .. ARGV[7]) end
return 1
";

/// A leader's release without a fill: KEYS = lease; ARGV = lease token, channel, value name.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], 'A' .. ARGV[3])
  return 1
end
return 0
";

/// A write's bump of one generation: KEYS = generation; ARGV = generation ttl ms. A bump
/// creates a missing generation (so a fill whose miss saw it missing stores nothing), with a TTL.
const BUMP: &str = r"
redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
";

/// The generations an answer's load began under (opaque; carried from the miss to the fill).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(pub(crate) String);

/// What a read script answered.
#[derive(Debug)]
pub enum Read {
    /// A value whose stamp is current (still sealed).
    Value(Vec<u8>, Stamp),
    /// Nothing servable; the current stamp.
    Nothing(Stamp),
    /// Nothing servable, and this caller now holds the fill lease.
    Leading(Stamp),
}

/// The loaded scripts (EVALSHA, loaded again on `NOSCRIPT`).
#[derive(Debug)]
pub struct Scripts {
    read: Script,
    acquire: Script,
    put: Script,
    release: Script,
    bump: Script,
}

/// One fill, as the put script takes it.
#[derive(Debug)]
pub struct Fill<'a> {
    /// Where.
    pub names: &'a EntryNames,
    /// The stamp of the miss.
    pub stamp: &'a Stamp,
    /// The sealed value.
    pub sealed: Vec<u8>,
    /// How long Redis keeps it: its TTL and its class's longest stale window.
    pub ttl: Duration,
    /// When it stops being fresh (wall clock, Unix ms).
    pub fresh_until_ms: u64,
    /// The lease token when this fill is a leader's.
    pub lease: Option<&'a str>,
}

fn keys(names: &EntryNames) -> Vec<String> {
    let mut keys = Vec::with_capacity(2 + names.generations.len());
    keys.push(names.value.clone());
    keys.push(names.lease.clone());
    keys.extend(names.generations.iter().cloned());
    keys
}

fn millis(duration: Duration) -> String {
    duration.as_millis().max(1).to_string()
}

fn text(value: &Value) -> Option<String> {
    value
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn parse(reply: Value) -> Result<Read, StoreError> {
    let Value::Array(items) = reply else {
        return Err(StoreError::Reply);
    };
    match items.as_slice() {
        [Value::Integer(1), value, stamp] => Ok(Read::Value(
            value.as_bytes().ok_or(StoreError::Reply)?.to_vec(),
            Stamp(text(stamp).ok_or(StoreError::Reply)?),
        )),
        [Value::Integer(2), stamp] => {
            Ok(Read::Leading(Stamp(text(stamp).ok_or(StoreError::Reply)?)))
        }
        [Value::Integer(0), stamp] => {
            Ok(Read::Nothing(Stamp(text(stamp).ok_or(StoreError::Reply)?)))
        }
        _ => Err(StoreError::Reply),
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            read: Script::from_lua(read_script()),
            acquire: Script::from_lua(acquire_script()),
            put: Script::from_lua(PUT),
            release: Script::from_lua(RELEASE),
            bump: Script::from_lua(BUMP),
        }
    }
}

impl Scripts {
    /// Loads every script (on each connection, so the first reads need no `NOSCRIPT` retry).
    pub async fn load(&self, client: &fred::clients::Client) -> Result<(), fred::error::Error> {
        for script in [
            &self.read,
            &self.acquire,
            &self.put,
            &self.release,
            &self.bump,
        ] {
            script.load(client).await?;
        }
        Ok(())
    }

    /// Reads one answer checked against its generations (one round trip).
    pub async fn read(&self, store: &Store, names: &EntryNames) -> Result<Read, StoreError> {
        let reply = store
            .run("read", async {
                let reply: Value = self
                    .read
                    .evalsha_with_reload(store.client(), keys(names), Vec::<String>::new())
                    .await?;
                Ok(reply)
            })
            .await?;
        parse(reply)
    }

    /// Reads one fresh answer, or takes its fill lease (for `lease`) when there is none (a
    /// value past its TTL by this replica's wall clock is none).
    pub async fn acquire(
        &self,
        store: &Store,
        names: &EntryNames,
        token: &str,
        lease: Duration,
    ) -> Result<Read, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let reply = store
            .run("acquire", async {
                let reply: Value = self
                    .acquire
                    .evalsha_with_reload(
                        store.client(),
                        keys(names),
                        vec![token.to_owned(), millis(lease), now.as_millis().to_string()],
                    )
                    .await?;
                Ok(reply)
            })
            .await?;
        parse(reply)
    }

    /// Stores one answer if no write came since its miss; `true` when stored.
    pub async fn put(&self, store: &Store, fill: Fill<'_>) -> Result<bool, StoreError> {
        let mut args: Vec<Value> = vec![
            fill.stamp.0.clone().into(),
            Value::Bytes(fill.sealed.into()),
            millis(fill.ttl).into(),
            millis(GENERATION_TTL).into(),
            fill.lease.unwrap_or("").to_owned().into(),
            FEED_CHANNEL.into(),
            fill.names.value.clone().into(),
            fill.fresh_until_ms.to_string().into(),
        ];
        // Random starts for generations that are missing (62 bits: room for increments).
        args.extend(
            fill.names
                .generations
                .iter()
                .map(|_| Value::from((rand::random::<u64>() >> 2) as i64)),
        );
        let stored = store
            .run("put", async {
                let stored: i64 = self
                    .put
                    .evalsha_with_reload(store.client(), keys(fill.names), args)
                    .await?;
                Ok(stored)
            })
            .await?;
        Ok(stored == 1)
    }

    /// Releases a lease this caller holds without filling; waiters fall back to their own call.
    pub async fn release(
        &self,
        store: &Store,
        names: &EntryNames,
        token: &str,
    ) -> Result<(), StoreError> {
        store
            .run("release", async {
                let _: i64 = self
                    .release
                    .evalsha_with_reload(
                        store.client(),
                        vec![names.lease.clone()],
                        vec![
                            token.to_owned(),
                            FEED_CHANNEL.to_owned(),
                            names.value.clone(),
                        ],
                    )
                    .await?;
                Ok(())
            })
            .await
    }

    /// Bumps every generation key in `keys` (concurrently: they span every shard).
    pub async fn bump(&self, store: &Store, keys: &[String]) -> Result<(), StoreError> {
        let ttl = millis(GENERATION_TTL);
        store
            .run("invalidate", async {
                let bumps = keys.iter().map(|key| {
                    self.bump.evalsha_with_reload::<i64, _, _>(
                        store.client(),
                        vec![key.clone()],
                        vec![ttl.clone()],
                    )
                });
                for result in futures_util::future::join_all(bumps).await {
                    result?;
                }
                Ok(())
            })
            .await
    }
}
