//! The read cache: upstream answers as their protobuf encoding (see [`crate::reply`]), keyed by
//! RPC, request and caller, in a moka cache bounded by bytes.
//!
//! An answer is only ever served to the token that fetched it: the key holds an HMAC of the
//! token under a per-process random key (never the token itself), so a narrower-scoped token of
//! the same user never reads what a broader one fetched. Concurrent identical misses share one
//! upstream call, which runs in a detached task so that a cancelled first caller does not make
//! the others call again. Errors are never cached. Writes invalidate what they change (see
//! [`crate::routes::Scope`]) through generation counters checked on every read, so no
//! answer that may predate a write is served once the write has returned, not even stale.
//!
//! Past its TTL an entry is kept for its class's longest stale window (see [`stale`]): served
//! at once while one background refresh runs, or in place of an upstream failure.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    error::GatewayError,
    routes::{self, CacheClass},
};
use bytes::Bytes;
use hmac::{Hmac, Mac, digest::KeyInit};
use moka::{future::Cache, notification::RemovalCause};
use sha2::Sha256;

mod control;
mod inflight;
pub mod shared;
pub mod stale;

pub use control::{CacheControl, Directive};
use inflight::{InFlight, LoadResult};
use stale::{Freshness, StaleSettings, StaleWindows, Timing};

/// Bytes counted for each entry beyond its key's bytes and its encoded answer: moka's nodes,
/// the key and value structs, the `Bytes` handle and the allocator's rounding. Measured at about
/// 540 bytes of heap per entry beyond those (BENCHMARKS.md, phase 5), so with the key struct
/// the weigher does not count less than the heap an entry costs.
pub const ENTRY_OVERHEAD_BYTES: u32 = 512;

/// Who is calling: an HMAC-SHA256 of the bearer token under the process's random key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub(crate) [u8; 32]);

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short prefix is enough to correlate; the full digest is not printed.
        write!(
            f,
            "TokenId({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl TokenId {
    /// The id of `authorization` under `key` (a keyed HMAC-SHA256 of the whole value).
    pub(crate) fn under(key: &Hmac<Sha256>, authorization: &[u8]) -> TokenId {
        let mut mac = key.clone();
        mac.update(authorization);
        TokenId(mac.finalize().into_bytes().into())
    }
}

/// What identifies one cached answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The route's upstream action (`me.payloadCounts`).
    pub route: &'static str,
    /// The caller.
    pub token: TokenId,
    /// The request message, protobuf-encoded (deterministic: request messages have no maps).
    pub request: Box<[u8]>,
}

/// The scopes an answer belongs to, for invalidation: its route's [`routes::Scope`]s resolved
/// against its request. A function of the key (the request decides it), so it is kept with the
/// answer and a hit needs no look at the request beyond its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    /// The organization the answer belongs to (lowercase id).
    pub org: Option<[u8; 24]>,
    /// Whether the answer is in its caller's `CallerMe` scope (`MeService` reads).
    pub me: bool,
    /// Whether the answer is an organization list.
    pub org_list: bool,
    /// Whether the answer is the caller's invitations.
    pub invitations: bool,
}

impl Scopes {
    /// The scopes of an answer of a route whose cached answers belong to `rules`, for the
    /// organization its request names (lowercase id).
    pub fn of(rules: &[routes::Scope], org: Option<[u8; 24]>) -> Scopes {
        Scopes {
            org: org.filter(|_| rules.contains(&routes::Scope::Org)),
            me: rules.contains(&routes::Scope::CallerMe),
            org_list: rules.contains(&routes::Scope::OrgLists),
            invitations: rules.contains(&routes::Scope::Invitations),
        }
    }
}

/// What one upstream load produced.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The response message, protobuf-encoded.
    pub answer: Bytes,
    /// The upstream's HTTP status.
    pub upstream_status: u16,
}

/// One load of a cacheable read (the upstream's answer, or the shared tier's): made afresh for
/// each attempt (again when the caller whose load was shared went away and a waiter takes
/// over), owning what it needs, so that it may outlive the caller that started it.
pub type Load = futures_util::future::BoxFuture<'static, Result<Loaded, GatewayError>>;

/// What one load through the shared tier produced (see [`ResponseCache::get_or_load`]).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The answer.
    pub fetched: Fetched,
    /// The longest this replica may keep it (a shared hit's remaining time, or the 1 s cap
    /// while the invalidation feed is not trusted); `None`: the route's TTL.
    pub keep_at_most: Option<Duration>,
    /// Whether it came from the shared tier rather than the upstream.
    pub from_shared: bool,
    /// How long ago it was fetched from the upstream (a shared hit's time in the shared tier).
    pub age: Duration,
    /// Whether it must not be served past its time here (the shared tier's feed is not
    /// trusted, so another replica's invalidation might be missed).
    pub no_stale: bool,
    /// Set when the answer is already past its TTL (the shared tier's stale entry): its callers
    /// are answered stale, and it is kept here with its true timing.
    pub stale: Option<StaleAnswer>,
}

/// A load's answer that is past its TTL, and why it was served anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleAnswer {
    /// Within stale-while-revalidate (a background refresh follows), or in place of an
    /// upstream failure.
    pub reason: StaleReason,
    /// How long past its TTL it is.
    pub past: Duration,
}

/// What a load made by [`ResponseCache::get_or_load_for`]'s maker is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadFor {
    /// A caller waits for it: an answer past its TTL within stale-while-revalidate may be
    /// answered at once (the cache then starts a refresh).
    Answer,
    /// A background refresh of a stale entry: it must bring a fresh answer (or fail), never
    /// the stale one again.
    Refresh,
}

impl From<Fetched> for Loaded {
    fn from(fetched: Fetched) -> Loaded {
        Loaded {
            fetched,
            keep_at_most: None,
            from_shared: false,
            age: Duration::ZERO,
            no_stale: false,
            stale: None,
        }
    }
}

/// What a call got from [`ResponseCache::get_or_load`].
#[derive(Debug, Clone)]
pub struct Served {
    /// The response message, protobuf-encoded.
    pub answer: Bytes,
    /// What the cache did.
    pub outcome: Outcome,
    /// The upstream's HTTP status, when this call's answer came from an upstream call.
    pub upstream_status: Option<u16>,
    /// How long ago the answer was fetched from the upstream, for a cached answer (`age`).
    pub age: Option<Duration>,
}

/// A cached answer.
#[derive(Clone)]
struct Cached {
    fetched: Fetched,
    from_shared: bool,
    /// Why its load's callers were answered stale (the load brought an answer past its TTL).
    stale: Option<StaleReason>,
    timing: Timing,
    /// Its stale windows (none when it must not be served stale).
    windows: StaleWindows,
    scopes: Scopes,
    stamp: Stamp,
}

impl Cached {
    /// An answer just loaded, kept for `ttl` (or less, as the load says) and `windows`.
    fn new(
        loaded: Loaded,
        ttl: Duration,
        windows: StaleWindows,
        scopes: Scopes,
        stamp: Stamp,
    ) -> Cached {
        let now = Instant::now();
        let fresh_for = loaded.keep_at_most.map_or(ttl, |most| most.min(ttl));
        let windows = if loaded.no_stale {
            StaleWindows::default()
        } else {
            windows
        };
        // A stale answer keeps its true timing, so its windows here end where the shared
        // entry's do.
        let timing = match loaded.stale {
            Some(stale) => Timing::expired(now, loaded.age, stale.past),
            None => Timing {
                fetched_at: now.checked_sub(loaded.age).unwrap_or(now),
                fresh_until: now + fresh_for,
            },
        };
        Cached {
            fetched: loaded.fetched,
            from_shared: loaded.from_shared,
            stale: loaded.stale.map(|stale| stale.reason),
            timing,
            windows,
            scopes,
            stamp,
        }
    }
}

impl Cached {
    /// How long moka keeps it from `now`: until its longest stale window past its TTL ends, so
    /// that the byte bound counts entries kept stale (an answer stored already stale, from the
    /// shared tier, is kept no longer than there).
    fn keep(&self, now: Instant) -> Duration {
        self.timing
            .fresh_until
            .checked_add(self.windows.longest())
            .map_or(Duration::MAX, |end| end.saturating_duration_since(now))
    }
}

impl fmt::Debug for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("answer_len", &self.fetched.answer.len())
            .field("timing", &self.timing)
            .field("windows", &self.windows)
            .finish()
    }
}

/// How one read may use the cache: its class's TTL and stale windows, the caller's
/// `cache-control`, and how long it may wait for a load.
#[derive(Debug, Clone, Copy)]
pub struct ReadPolicy {
    /// The route's time to live.
    pub ttl: Duration,
    /// The route class's stale windows.
    pub windows: StaleWindows,
    /// The caller's `cache-control`.
    pub control: CacheControl,
    /// The longest the call waits for a load (its deadline): past it the load is a timeout,
    /// which a stale entry may answer for.
    pub wait: Duration,
}

impl ReadPolicy {
    /// Plain read-through for `ttl`: no stale windows, default `cache-control`, no wait bound.
    pub fn new(ttl: Duration) -> ReadPolicy {
        ReadPolicy {
            ttl,
            windows: StaleWindows::default(),
            control: CacheControl::default(),
            wait: Duration::MAX,
        }
    }
}

/// Why a stale answer was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Within stale-while-revalidate, while a background refresh runs.
    Revalidate,
    /// In place of an upstream failure.
    Error,
}

/// What the cache did for one call (the `x-cache` response metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from this replica's cache.
    Hit,
    /// Served from the shared tier (another replica fetched it).
    SharedHit,
    /// Fetched from the upstream (possibly shared with identical concurrent calls).
    Miss,
    /// The cache was not read (`cache-control`, or caching disabled for the RPC).
    Bypass,
    /// Served past its TTL, from this replica's cache or the shared tier's
    /// (stale-while-revalidate, stale-if-error).
    Stale,
}

impl Outcome {
    /// The `x-cache` metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::SharedHit => "shared-hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
            Outcome::Stale => "stale",
        }
    }
}

/// What a call that ran (or joined) a load is told: a load answered by the shared tier is a
/// shared hit, and only an upstream answer carries the upstream's status.
fn served(cached: Cached, outcome: Outcome) -> Served {
    let outcome = match outcome {
        Outcome::Miss if cached.from_shared => Outcome::SharedHit,
        outcome => outcome,
    };
    let cached_answer = matches!(outcome, Outcome::Hit | Outcome::SharedHit | Outcome::Stale);
    Served {
        age: cached_answer.then(|| cached.timing.age(Instant::now())),
        answer: cached.fetched.answer,
        outcome,
        upstream_status: (!cached_answer).then_some(cached.fetched.upstream_status),
    }
}

/// What a call that found no servable entry got: an entry stored meanwhile, or a load's answer.
enum Got {
    Hit(Served),
    Loaded(Cached),
}

/// Waits at most `wait` for `load`; past it, a timeout.
async fn bounded<T>(
    wait: Duration,
    load: impl Future<Output = Result<T, Arc<GatewayError>>>,
) -> Result<T, Arc<GatewayError>> {
    tokio::time::timeout(wait, load)
        .await
        .unwrap_or_else(|_| Err(Arc::new(GatewayError::DeadlineExceeded)))
}

/// The cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// Bound on the weighted size (key + encoded answer + overhead per entry).
    pub max_bytes: u64,
    /// Time to live of usage reads; zero disables caching them.
    pub usage_ttl: Duration,
    /// Time to live of entities and lists; zero disables caching them.
    pub entity_ttl: Duration,
    /// The stale windows of both classes.
    pub stale: StaleSettings,
}

impl CachePolicy {
    /// The time to live of a class; `None` when it is not cached.
    pub fn ttl(&self, class: CacheClass) -> Option<Duration> {
        let ttl = match class {
            CacheClass::Never => return None,
            CacheClass::Usage => self.usage_ttl,
            CacheClass::Entity => self.entity_ttl,
        };
        (!ttl.is_zero() && self.max_bytes > 0).then_some(ttl)
    }

    /// The stale windows of a class.
    pub fn windows(&self, class: CacheClass) -> StaleWindows {
        self.stale.windows(class)
    }
}

/// Counters kept for metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Calls answered from the cache.
    pub hits: AtomicU64,
    /// Calls that ran an upstream load.
    pub misses: AtomicU64,
    /// Calls that waited for another call's identical load instead of calling upstream.
    pub coalesced: AtomicU64,
    /// Entries evicted to stay within the byte bound.
    pub evictions: AtomicU64,
    /// Entries that expired.
    pub expirations: AtomicU64,
    /// Invalidations applied after writes.
    pub invalidations: AtomicU64,
    /// Stale answers served while a background refresh ran.
    pub stale_revalidate: AtomicU64,
    /// Stale answers served in place of an upstream failure.
    pub stale_error: AtomicU64,
    /// Background refreshes started (one per key at a time).
    pub refreshes: AtomicU64,
}

/// A snapshot of the cache's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    /// See [`CacheStats::hits`].
    pub hits: u64,
    /// See [`CacheStats::misses`].
    pub misses: u64,
    /// See [`CacheStats::coalesced`].
    pub coalesced: u64,
    /// See [`CacheStats::evictions`].
    pub evictions: u64,
    /// See [`CacheStats::expirations`].
    pub expirations: u64,
    /// See [`CacheStats::invalidations`].
    pub invalidations: u64,
    /// See [`CacheStats::stale_revalidate`].
    pub stale_revalidate: u64,
    /// See [`CacheStats::stale_error`].
    pub stale_error: u64,
    /// See [`CacheStats::refreshes`].
    pub refreshes: u64,
    /// Entries now (approximate until pending maintenance runs).
    pub entries: u64,
    /// Weighted size now, in bytes.
    pub weighted_bytes: u64,
    /// Upstream loads in flight now (each shared by its coalesced callers).
    pub loads_in_flight: u64,
}

/// What a write makes stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every read of this organization (lowercase id), for every token.
    Org([u8; 24]),
    /// Every organization list, for every token.
    OrgLists,
    /// This token's `MeService` reads.
    TokenMe(TokenId),
    /// Everything cached for this token.
    TokenAll(TokenId),
    /// Every token's cached invitations.
    Invitations,
    /// Everything, for every token.
    Everything,
}

impl Scope {
    fn covers(&self, owner: TokenId, scopes: &Scopes) -> bool {
        match self {
            Scope::Org(org) => scopes.org == Some(*org),
            Scope::OrgLists => scopes.org_list,
            Scope::TokenMe(token) => owner == *token && scopes.me,
            Scope::TokenAll(token) => owner == *token,
            Scope::Invitations => scopes.invitations,
            Scope::Everything => true,
        }
    }
}

/// Invalidation generations: every scope a key belongs to has a counter (striped, so memory
/// is bounded: two scopes sharing a stripe only cost a spurious miss), which a write bumps.
/// An answer records the generations its load started under and is served only while they
/// are current, so no answer that may predate a write is served after the write returned, even
/// when its load raced the write or was joined by callers that came after it.
struct Generations {
    stripes: Box<[AtomicU64]>,
    org_lists: AtomicU64,
    invitations: AtomicU64,
    everything: AtomicU64,
}

/// The generations of a key's scopes: organization, organization lists, token's me reads,
/// token, invitations, everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp([u64; 6]);

const STRIPES: usize = 4096;

impl Generations {
    fn new() -> Generations {
        Generations {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            org_lists: AtomicU64::new(0),
            invitations: AtomicU64::new(0),
            everything: AtomicU64::new(0),
        }
    }

    fn stripe(&self, tag: u8, bytes: &[u8]) -> &AtomicU64 {
        // FNV-1a: the inputs are an HMAC output or an id, so no adversary picks collisions
        // that matter (a collision only causes a spurious miss).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(tag);
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.stripes[(hash % STRIPES as u64) as usize]
    }

    fn counter(&self, scope: &Scope) -> &AtomicU64 {
        match scope {
            Scope::Org(org) => self.stripe(1, org),
            Scope::OrgLists => &self.org_lists,
            Scope::TokenMe(token) => self.stripe(2, &token.0),
            Scope::TokenAll(token) => self.stripe(3, &token.0),
            Scope::Invitations => &self.invitations,
            Scope::Everything => &self.everything,
        }
    }

    fn stamp(&self, token: TokenId, scopes: &Scopes) -> Stamp {
        let load = |counter: &AtomicU64| counter.load(Ordering::Acquire);
        Stamp([
            scopes
                .org
                .map_or(0, |org| load(self.counter(&Scope::Org(org)))),
            if scopes.org_list {
                load(&self.org_lists)
            } else {
                0
            },
            if scopes.me {
                load(self.counter(&Scope::TokenMe(token)))
            } else {
                0
            },
            load(self.counter(&Scope::TokenAll(token))),
            if scopes.invitations {
                load(&self.invitations)
            } else {
                0
            },
            load(&self.everything),
        ])
    }
}

/// The read cache.
pub struct ResponseCache {
    entries: Cache<CacheKey, Cached>,
    inflight: InFlight,
    /// Keyed once with a per-process random key; cloned per call.
    hmac: Hmac<Sha256>,
    generations: Generations,
    stats: Arc<CacheStats>,
    policy: CachePolicy,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

struct PerEntryTtl;

impl moka::Expiry<CacheKey, Cached> for PerEntryTtl {
    fn expire_after_create(&self, _: &CacheKey, value: &Cached, now: Instant) -> Option<Duration> {
        Some(value.keep(now))
    }

    fn expire_after_update(
        &self,
        _: &CacheKey,
        value: &Cached,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep(now))
    }
}

impl ResponseCache {
    /// An empty cache with a fresh random HMAC key.
    pub fn new(policy: CachePolicy) -> ResponseCache {
        let hmac = <Hmac<Sha256> as KeyInit>::new(&rand::random::<[u8; 64]>().into());
        ResponseCache::with_token_hmac(policy, hmac)
    }

    /// An empty cache naming tokens with `hmac`: with the shared tier, the key every replica
    /// derives from the shared secret, so that token scopes from other replicas match.
    pub fn with_token_hmac(policy: CachePolicy, hmac: Hmac<Sha256>) -> ResponseCache {
        let stats = Arc::new(CacheStats::default());
        let listener_stats = Arc::clone(&stats);
        let entries = Cache::builder()
            .max_capacity(policy.max_bytes)
            .weigher(|key: &CacheKey, value: &Cached| {
                let bytes = key.request.len() + value.fetched.answer.len() + size_of::<CacheKey>();
                u32::try_from(bytes)
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD_BYTES)
            })
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                let counter = match cause {
                    RemovalCause::Size => &listener_stats.evictions,
                    RemovalCause::Expired => &listener_stats.expirations,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        ResponseCache {
            entries,
            inflight: InFlight::default(),
            hmac,
            generations: Generations::new(),
            stats,
            policy,
        }
    }

    /// The cache's settings.
    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    /// The caller's identity for keys: a keyed hash of the whole `authorization` value.
    pub fn token_id(&self, authorization: &[u8]) -> TokenId {
        TokenId::under(&self.hmac, authorization)
    }

    /// Answers from the cache, or runs a load made by `make_load` (once for all identical
    /// concurrent callers) and stores its answer for `read.ttl` (or less: a load through the
    /// shared tier says how long its answer may be kept here) and its stale windows.
    ///
    /// An entry past its TTL within stale-while-revalidate is answered at once while one
    /// background refresh runs; an older one within stale-if-error answers in place of an
    /// upstream failure. Neither is served once a write has invalidated it.
    pub async fn get_or_load(
        &self,
        key: CacheKey,
        scopes: Scopes,
        read: ReadPolicy,
        make_load: impl Fn() -> Load,
    ) -> Result<Served, Arc<GatewayError>> {
        self.get_or_load_for(key, scopes, read, |_| make_load())
            .await
    }

    /// [`ResponseCache::get_or_load`] with a maker told what each load is for: a background
    /// refresh must not answer with a stale entry again (see [`LoadFor`]). A load that answers
    /// stale ([`Loaded::stale`]) is served as `Outcome::Stale`, kept with its true timing and,
    /// within stale-while-revalidate, followed by one background refresh.
    pub async fn get_or_load_for(
        &self,
        key: CacheKey,
        scopes: Scopes,
        read: ReadPolicy,
        make_load: impl Fn(LoadFor) -> Load,
    ) -> Result<Served, Arc<GatewayError>> {
        let stamp = self.generations.stamp(key.token, &scopes);
        let load_for = |purpose| {
            let load = make_load(purpose);
            async move {
                let loaded = load.await.map_err(Arc::new)?;
                Ok(Cached::new(loaded, read.ttl, read.windows, scopes, stamp))
            }
        };
        let load = || load_for(LoadFor::Answer);
        let refresh = || load_for(LoadFor::Refresh);
        if read.control.only_if_cached && read.control.directive != Directive::Default {
            // `no-cache`/`no-store` read no cache, and `only-if-cached` calls no upstream.
            return Err(Arc::new(GatewayError::NotCached));
        }
        match read.control.directive {
            Directive::NoStore => {
                return Ok(served(bounded(read.wait, load()).await?, Outcome::Bypass));
            }
            Directive::NoCache => {
                let cached = bounded(read.wait, load()).await?;
                self.entries.insert(key, cached.clone()).await;
                return Ok(served(cached, Outcome::Bypass));
            }
            Directive::Default => {}
        }
        let seen = self.current_entry(&key).await;
        if let Some(entry) = &seen
            && let Some(answered) = self.answer_entry(&key, scopes, entry, &read.control, refresh)
        {
            return Ok(answered);
        }
        if read.control.only_if_cached {
            return Err(Arc::new(GatewayError::NotCached));
        }
        let loading = self.load_default(&key, scopes, stamp, seen.is_none(), &read.control, load);
        let loaded = bounded(read.wait, loading).await.map(|got| match got {
            Got::Hit(hit) => hit,
            Got::Loaded(cached) => self.answer_load(&key, scopes, cached, &read.control, refresh),
        });
        self.or_stale_on_error(&key, seen, &read.control, loaded)
    }

    /// The answer of an entry found here, if it may answer: fresh, or within
    /// stale-while-revalidate (then one background refresh is started, except for
    /// `only-if-cached`, which never calls the upstream, not even in the background).
    fn answer_entry<F>(
        &self,
        key: &CacheKey,
        scopes: Scopes,
        entry: &Cached,
        control: &CacheControl,
        refresh: impl FnOnce() -> F,
    ) -> Option<Served>
    where
        F: Future<Output = LoadResult> + Send + 'static,
    {
        let answered = self.servable_entry(entry, control)?;
        if answered.outcome == Outcome::Stale && !control.only_if_cached {
            self.refresh(key, scopes, refresh);
        }
        Some(answered)
    }

    /// `entry`'s answer when it may answer now: a hit when fresh, a stale answer within
    /// stale-while-revalidate (whether a refresh starts is the caller's to decide).
    fn servable_entry(&self, entry: &Cached, control: &CacheControl) -> Option<Served> {
        match stale::freshness(entry.timing, entry.windows, control, Instant::now()) {
            Freshness::Fresh => Some(self.hit(entry.clone())),
            Freshness::Revalidate => Some(self.stale(entry.clone(), StaleReason::Revalidate)),
            Freshness::Expired => None,
        }
    }

    /// What the callers of a load are told: a miss (or shared hit), or a stale answer when the
    /// load brought one (then, within stale-while-revalidate, one background refresh starts).
    fn answer_load<F>(
        &self,
        key: &CacheKey,
        scopes: Scopes,
        cached: Cached,
        control: &CacheControl,
        refresh: impl FnOnce() -> F,
    ) -> Served
    where
        F: Future<Output = LoadResult> + Send + 'static,
    {
        match cached.stale {
            None => served(cached, Outcome::Miss),
            Some(reason) => {
                if reason == StaleReason::Revalidate && !control.only_if_cached {
                    self.refresh(key, scopes, refresh);
                }
                self.stale(cached, reason)
            }
        }
    }

    /// `loaded`, or when it is an upstream failure, `seen` if it may answer for it: no write
    /// has invalidated it (checked now) and it is within this call's stale-if-error window.
    fn or_stale_on_error(
        &self,
        key: &CacheKey,
        seen: Option<Cached>,
        control: &CacheControl,
        loaded: Result<Served, Arc<GatewayError>>,
    ) -> Result<Served, Arc<GatewayError>> {
        let error = match loaded {
            Err(error) if stale::is_upstream_failure(&error) => error,
            other => return other,
        };
        let usable = seen.filter(|entry| {
            self.is_current(key, entry)
                && stale::usable_on_error(entry.timing, entry.windows, control, Instant::now())
        });
        match usable {
            Some(entry) => Ok(self.stale(entry, StaleReason::Error)),
            None => Err(error),
        }
    }

    /// The read-through of a call that found no servable entry: it joins the load in flight
    /// or starts one. `look_again`: the call found no entry at all, so one stored since it
    /// looked is a hit rather than a reason to load.
    async fn load_default<F>(
        &self,
        key: &CacheKey,
        scopes: Scopes,
        stamp: Stamp,
        mut look_again: bool,
        control: &CacheControl,
        load: impl Fn() -> F,
    ) -> Result<Got, Arc<GatewayError>>
    where
        F: Future<Output = LoadResult> + Send + 'static,
    {
        let cached = loop {
            if let Some(result) = self.load_coalesced(key, scopes, look_again, &load).await {
                break result?;
            }
            if let Some(hit) = self.servable(key, control).await {
                return Ok(Got::Hit(hit));
            }
            // Stored but not servable (expired): load it, not in a loop.
            look_again = false;
        };
        if cached.stamp != stamp {
            // This call joined a load that began before a write it came after: that
            // answer may predate the write, so fetch afresh (read-your-writes).
            let fresh = load().await?;
            self.entries.insert(key.clone(), fresh.clone()).await;
            return Ok(Got::Loaded(fresh));
        }
        Ok(Got::Loaded(cached))
    }

    /// The entry for `key` if no write has invalidated it since its load began (one that a
    /// write did is dropped, so that a load replaces it).
    async fn current_entry(&self, key: &CacheKey) -> Option<Cached> {
        let entry = self.entries.get(key).await?;
        if !self.is_current(key, &entry) {
            self.entries.remove(key).await;
            return None;
        }
        Some(entry)
    }

    /// Whether no write has invalidated `entry` since its load began.
    fn is_current(&self, key: &CacheKey, entry: &Cached) -> bool {
        self.generations.stamp(key.token, &entry.scopes) == entry.stamp
    }

    fn hit(&self, entry: Cached) -> Served {
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        served(entry, Outcome::Hit)
    }

    fn stale(&self, entry: Cached, reason: StaleReason) -> Served {
        let counter = match reason {
            StaleReason::Revalidate => &self.stats.stale_revalidate,
            StaleReason::Error => &self.stats.stale_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        served(entry, Outcome::Stale)
    }

    /// Starts a background refresh of `key` unless a load of it is in flight already (that
    /// load stores its answer too): the refreshed answer replaces the entry, a failed one
    /// leaves it for stale-if-error.
    fn refresh<F>(&self, key: &CacheKey, scopes: Scopes, load: impl FnOnce() -> F)
    where
        F: Future<Output = LoadResult> + Send + 'static,
    {
        if let Some((waiter, true)) =
            self.inflight
                .join_or_start(key, scopes, &self.entries, false, load)
        {
            self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
            // The task is the load's waiter, so the load runs to its end without a caller.
            tokio::spawn(async move {
                let _ = waiter.result().await;
            });
        }
    }

    /// The answer of an entry stored since this call looked: fresh, or stale within
    /// stale-while-revalidate (its load just stored it, or a refresh of it runs or ran: the
    /// next call that finds it starts one if none is in flight).
    async fn servable(&self, key: &CacheKey, control: &CacheControl) -> Option<Served> {
        self.servable_entry(&self.current_entry(key).await?, control)
    }

    /// The fresh cached answer for `key`, if there is one that no write has made stale since
    /// its load began and that `control` accepts. The fast path: it needs nothing but the key.
    pub async fn lookup(&self, key: &CacheKey, control: &CacheControl) -> Option<Served> {
        let entry = self.current_entry(key).await?;
        let freshness = stale::freshness(entry.timing, entry.windows, control, Instant::now());
        (freshness == Freshness::Fresh).then(|| self.hit(entry))
    }

    /// The answer of the load in flight for `key`, or of `load` started now; `None` when
    /// `look_again` and an answer was stored meanwhile (look again).
    async fn load_coalesced<F>(
        &self,
        key: &CacheKey,
        scopes: Scopes,
        look_again: bool,
        load: impl FnOnce() -> F,
    ) -> Option<LoadResult>
    where
        F: Future<Output = LoadResult> + Send + 'static,
    {
        let (waiter, started) =
            self.inflight
                .join_or_start(key, scopes, &self.entries, look_again, load)?;
        let counter = if started {
            &self.stats.misses
        } else {
            &self.stats.coalesced
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(waiter.result().await)
    }

    /// Makes every answer in `scope` stale, for every token it concerns: from now on none of
    /// them is served, and loads in flight that began before this call store nothing servable.
    pub fn invalidate(&self, scope: Scope) {
        self.generations
            .counter(&scope)
            .fetch_add(1, Ordering::AcqRel);
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
        self.inflight
            .forget(|key, scopes| scope.covers(key.token, scopes));
        // Reclaims the memory now rather than at expiry; correctness does not depend on it.
        let _ = self
            .entries
            .invalidate_entries_if(move |key, value| scope.covers(key.token, &value.scopes));
    }

    /// The current figures.
    pub fn figures(&self) -> CacheFigures {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheFigures {
            hits: load(&self.stats.hits),
            misses: load(&self.stats.misses),
            coalesced: load(&self.stats.coalesced),
            evictions: load(&self.stats.evictions),
            expirations: load(&self.stats.expirations),
            invalidations: load(&self.stats.invalidations),
            stale_revalidate: load(&self.stats.stale_revalidate),
            stale_error: load(&self.stats.stale_error),
            refreshes: load(&self.stats.refreshes),
            entries: self.entries.entry_count(),
            weighted_bytes: self.entries.weighted_size(),
            loads_in_flight: self.inflight.len() as u64,
        }
    }

    /// Runs moka's pending maintenance (evictions, expirations, invalidations) now.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ResponseCache {
        let minute = Duration::from_secs(60);
        ResponseCache::new(CachePolicy {
            max_bytes: 1 << 20,
            usage_ttl: minute,
            entity_ttl: minute,
            stale: StaleSettings::off(),
        })
    }

    fn key(cache: &ResponseCache) -> CacheKey {
        CacheKey {
            route: "orgs.get",
            token: cache.token_id(b"Bearer t"),
            request: Box::new([1, 2, 3]),
        }
    }

    #[tokio::test]
    async fn a_load_from_the_shared_tier_is_a_shared_hit_kept_at_most_its_remaining_time() {
        let cache = cache();
        let load = || -> Load {
            Box::pin(async {
                Ok(Loaded {
                    fetched: Fetched {
                        answer: Bytes::from_static(b"answer"),
                        upstream_status: 200,
                    },
                    keep_at_most: Some(Duration::from_millis(100)),
                    from_shared: true,
                    age: Duration::from_secs(3),
                    no_stale: false,
                    stale: None,
                })
            })
        };
        let ttl = Duration::from_secs(60);
        let served = cache
            .get_or_load(key(&cache), Scopes::default(), ReadPolicy::new(ttl), load)
            .await
            .unwrap();
        assert_eq!(served.outcome, Outcome::SharedHit);
        assert_eq!(served.upstream_status, None);
        assert!(
            served.age >= Some(Duration::from_secs(3)),
            "its age in the shared tier"
        );
        let any = CacheControl::default();
        let again = cache.lookup(&key(&cache), &any).await.map(|s| s.outcome);
        assert_eq!(again, Some(Outcome::Hit), "it fills this replica's cache");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            cache.lookup(&key(&cache), &any).await.is_none(),
            "kept no longer than the shared entry's remaining time"
        );
    }

    /// A load through the shared tier that brings an answer `past` its TTL for `reason` when
    /// it answers a caller, and `refreshed` (or an upstream failure) when it refreshes.
    fn stale_then(
        reason: StaleReason,
        past: Duration,
        refreshed: Option<&'static [u8]>,
        refreshes: &Arc<AtomicU64>,
    ) -> impl Fn(LoadFor) -> Load {
        let refreshes = Arc::clone(refreshes);
        move |purpose| -> Load {
            let refreshes = Arc::clone(&refreshes);
            Box::pin(async move {
                let (answer, stale) = match purpose {
                    LoadFor::Answer => (&b"old"[..], Some(StaleAnswer { reason, past })),
                    LoadFor::Refresh => {
                        refreshes.fetch_add(1, Ordering::SeqCst);
                        let answer =
                            refreshed.ok_or_else(|| GatewayError::Unreachable("down".into()))?;
                        (answer, None)
                    }
                };
                Ok(Loaded {
                    fetched: Fetched {
                        answer: Bytes::from_static(answer),
                        upstream_status: 200,
                    },
                    keep_at_most: None,
                    from_shared: true,
                    age: past + Duration::from_secs(60),
                    no_stale: false,
                    stale,
                })
            })
        }
    }

    fn stale_read() -> ReadPolicy {
        ReadPolicy {
            windows: StaleWindows {
                revalidate: Duration::from_secs(30),
                if_error: Duration::from_secs(60),
            },
            ..ReadPolicy::new(Duration::from_secs(60))
        }
    }

    #[tokio::test]
    async fn a_stale_load_is_answered_stale_then_refreshed_once_in_the_background() {
        let cache = cache();
        let refreshes = Arc::new(AtomicU64::new(0));
        let past = Duration::from_secs(2);
        let make = stale_then(StaleReason::Revalidate, past, Some(b"new"), &refreshes);
        let served = cache
            .get_or_load_for(key(&cache), Scopes::default(), stale_read(), make)
            .await
            .unwrap();
        assert_eq!(served.outcome, Outcome::Stale);
        assert_eq!(&served.answer[..], b"old");
        assert!(served.age >= Some(Duration::from_secs(62)), "its true age");
        assert_eq!(served.upstream_status, None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            refreshes.load(Ordering::SeqCst),
            1,
            "one background refresh"
        );
        let any = CacheControl::default();
        let refreshed = cache.lookup(&key(&cache), &any).await.expect("refreshed");
        assert_eq!(&refreshed.answer[..], b"new");
        let figures = cache.figures();
        assert_eq!((figures.stale_revalidate, figures.refreshes), (1, 1));
    }

    #[tokio::test]
    async fn a_stale_answer_is_kept_here_no_longer_than_its_window_there() {
        let cache = cache();
        let refreshes = Arc::new(AtomicU64::new(0));
        // 200 ms of its 60 s stale-if-error window left.
        let past = Duration::from_millis(59_800);
        let make = stale_then(StaleReason::Error, past, None, &refreshes);
        let served = cache
            .get_or_load_for(key(&cache), Scopes::default(), stale_read(), &make)
            .await
            .unwrap();
        assert_eq!(served.outcome, Outcome::Stale);
        assert_eq!(cache.figures().stale_error, 1);
        let failing =
            || -> Load { Box::pin(async { Err(GatewayError::Unreachable("down".into())) }) };
        let again = cache
            .get_or_load(key(&cache), Scopes::default(), stale_read(), failing)
            .await
            .expect("the local copy answers for the failure");
        assert_eq!(
            (again.outcome, &again.answer[..]),
            (Outcome::Stale, &b"old"[..])
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let error = cache
            .get_or_load(key(&cache), Scopes::default(), stale_read(), failing)
            .await
            .unwrap_err();
        assert!(matches!(*error, GatewayError::Unreachable(_)), "{error:?}");
        assert!(
            !cache.entries.contains_key(&key(&cache)),
            "kept here no longer than its window there"
        );
        assert_eq!(
            refreshes.load(Ordering::SeqCst),
            0,
            "no refresh after an error"
        );
    }

    #[test]
    fn caches_keyed_alike_name_tokens_alike() {
        let hmac = || <Hmac<Sha256> as KeyInit>::new_from_slice(b"shared").unwrap();
        let (a, b) = (
            ResponseCache::with_token_hmac(cache().policy, hmac()),
            ResponseCache::with_token_hmac(cache().policy, hmac()),
        );
        assert_eq!(a.token_id(b"Bearer t"), b.token_id(b"Bearer t"));
        assert_ne!(cache().token_id(b"Bearer t"), a.token_id(b"Bearer t"));
    }
}
