//! The shared cache tier: one cache for every replica, on Redis (or Valkey), behind each
//! replica's own moka cache.
//!
//! # Guarantees (the same as the local tier's, across replicas)
//! - **Nothing readable without the token.** Key names are HMACs under subkeys of the shared
//!   secret ([`key`]); values are sealed with XChaCha20-Poly1305 under a key derived from the
//!   secret and the caller's `authorization` value, with the key name as associated data
//!   ([`seal`]). A value that does not open (moved, another token, another format version)
//!   is a miss, counted in `errors{kind="unopenable"}`.
//! - **Isolation.** A value is only found under, and only opens for, the token that fetched it.
//! - **Invalidation.** [`SharedTier::invalidate`] bumps generation keys in Redis, then
//!   publishes the scopes to every replica ([`feed`]). Reads check the generations in the
//!   read's own round trip ([`generations`]), so once `invalidate` has returned no replica
//!   reads from Redis what the write changed; other replicas drop their local copies when the
//!   message arrives (milliseconds). Without a live feed a replica's local copies are dropped
//!   and new ones kept at most 1 s ([`SharedTier::local_ttl_cap`]).
//! - **Coalescing.** [`SharedTier::lead_or_wait`]: one replica leads a cold read, the others
//!   wait for its fill ([`lease`]).
//! - **Never a point of failure.** Every operation is bounded by `--cache-redis-timeout` and
//!   gives [`SharedLookup::Skipped`] / nothing on failure; a breaker skips the tier after
//!   consecutive failures ([`store`]). Nothing here returns an error to an RPC.
//!
//! # Wiring (what the request path does)
//! With `directive` the call's `cache-control` and `key`, `scopes`, `ttl` as for the local tier,
//! inside the local tier's load (so local coalescing and local stamps still apply):
//! ```text
//! let caller = shared.caller(authorization);            // once per RPC
//! if directive == NoStore { upstream only }
//! if directive == NoCache { fetch; shared.put(&caller, ticket_from(get?) ...) – or skip put }
//! match shared.get(&caller, &key, &scopes).await {
//!     Hit(hit)   => serve hit.answer, x-cache: shared-hit; fill local for hit.remaining
//!     Skipped    => fetch from upstream (single-replica behaviour)
//!     Stale(s, t) if within stale-while-revalidate => serve s stale; refresh in the background
//!                   through lead_or_wait (one replica leads, the others wait for its fill)
//!     Miss(t) | Stale(s, t) => match shared.lead_or_wait(&caller, t, lease_for, deadline).await {
//!         Filled(hit) => as Hit
//!         Lead(lease) => fetch; Ok → lease.fill(answer, status, lifetime); Err → lease.abandon()
//!         Alone(t)    => fetch; Ok → shared.put(&caller, t, answer, status, lifetime)
//!     }   // an upstream failure is answered with s when within stale-if-error
//! }
//! ```
//! where `lifetime` is the TTL and the class's longest stale window ([`Lifetime`]): Redis
//! keeps a value that long, and [`SharedTier::get`] returns it past its TTL as
//! [`SharedLookup::Stale`], under the same generation check as a fresh one.
//! and after a write returned from the upstream, before replying:
//! `local.invalidate(scope)` for each scope, then `shared.invalidate(&scopes).await`.
//! The local tier must name tokens with [`SharedTier::token_id`] (the same on every replica),
//! so that token scopes received from other replicas match local entries; the handler given
//! to [`SharedTier::connect`] is `move |scopes| for s in scopes { local.invalidate(*s) }`.

pub mod feed;
pub mod generations;
pub mod key;
pub mod lease;
pub mod metrics;
pub mod seal;
pub mod settings;
pub mod store;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;

use self::{
    feed::{Feed, Handler},
    generations::{Read, Scripts, Stamp},
    key::{EntryNames, Namer, Placement},
    seal::SealKey,
    settings::{CacheSecret, SharedTierConfig},
    store::{Store, StoreError},
};
pub use self::{
    lease::{Coalesced, Lease},
    metrics::SharedTierMetrics,
    settings::SharedTierSettings,
};
use crate::cache::{CacheKey, Scope, Scopes, TokenId};

/// How many times an invalidation that could not be recorded is retried in the background
/// (about a minute), after which the values it concerned age out by their TTLs.
const INVALIDATION_RETRIES: u32 = 60;

/// The shared tier. Cheap to clone; its background tasks end when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
    _tasks: Arc<Tasks>,
}

#[derive(Debug)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// What the tier's operations share.
#[derive(Debug)]
pub(crate) struct Inner {
    store: Arc<Store>,
    scripts: Scripts,
    namer: Namer,
    secret: CacheSecret,
    feed: Arc<Feed>,
    metrics: SharedTierMetrics,
}

/// One caller, as the shared tier knows it: its token id, its shard, its value key.
/// Made once per RPC by [`SharedTier::caller`]; prints nothing of the token.
#[derive(Clone)]
pub struct Caller {
    placement: Placement,
    seal: Arc<SealKey>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("token", &self.placement.token)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// The token id (as [`SharedTier::token_id`] gives it).
    pub fn token_id(&self) -> TokenId {
        self.placement.token
    }
}

/// A miss: where the answer goes and the generations its load began under. Hand it back to
/// [`SharedTier::put`] or [`SharedTier::lead_or_wait`].
#[derive(Debug, Clone)]
pub struct Ticket {
    names: EntryNames,
    stamp: Stamp,
}

/// An answer from the shared tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHit {
    /// The response message, protobuf-encoded.
    pub answer: Bytes,
    /// The upstream's status when it was fetched.
    pub upstream_status: u16,
    /// How long it stays fresh: fill the local tier for this long (capped by
    /// [`SharedTier::local_ttl_cap`]).
    pub remaining: Duration,
    /// How old it is.
    pub age: Duration,
}

/// An answer the shared tier holds past its TTL, kept for its class's stale windows; the
/// generations were checked in the same round trip, so no write has invalidated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStale {
    /// The response message, protobuf-encoded.
    pub answer: Bytes,
    /// The upstream's status when it was fetched.
    pub upstream_status: u16,
    /// How old it is.
    pub age: Duration,
    /// How long past its TTL it is.
    pub past: Duration,
}

/// How long a stored answer is fresh, and how much longer Redis keeps it so that it may be
/// served stale (the class's longest stale window). A bare `Duration` is a TTL with no window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Its time to live.
    pub ttl: Duration,
    /// How long past its TTL Redis keeps it.
    pub stale_for: Duration,
}

impl From<Duration> for Lifetime {
    fn from(ttl: Duration) -> Lifetime {
        Lifetime {
            ttl,
            stale_for: Duration::ZERO,
        }
    }
}

/// What [`SharedTier::get`] found.
#[derive(Debug)]
pub enum SharedLookup {
    /// A servable answer.
    Hit(SharedHit),
    /// An answer past its TTL that no write invalidated: the caller decides whether it may be
    /// served (stale-while-revalidate, stale-if-error); to load afresh, use the ticket as for
    /// a miss.
    Stale(SharedStale, Ticket),
    /// Nothing servable: fetch, then `put` (or `lead_or_wait` first).
    Miss(Ticket),
    /// The tier was not usable (breaker open, timeout, Redis error): behave as one replica.
    Skipped,
}

impl SharedTier {
    /// Starts the tier: connects in the background (Redis may be down; the tier is then
    /// skipped until it is up), subscribes to the feed, and delivers other replicas'
    /// invalidations to `on_invalidation`. Fails only on a configuration fred refuses.
    pub fn connect(
        config: &SharedTierConfig,
        metrics: SharedTierMetrics,
        on_invalidation: impl Fn(&[Scope]) + Send + Sync + 'static,
    ) -> Result<SharedTier, fred::error::Error> {
        let store = Arc::new(Store::connect(config, metrics.clone())?);
        let subscriber = Store::subscriber(config)?;
        let handler: Handler = Arc::new(on_invalidation);
        let feed = Arc::new(Feed::new(
            SealKey::for_feed(&config.secret),
            handler,
            metrics.clone(),
        ));
        let mut tasks = feed::spawn(Arc::clone(&feed), Arc::clone(&store), subscriber);
        tracing::info!(url = %config.url, cluster = config.cluster, "shared cache tier configured");
        let inner = Arc::new(Inner {
            store,
            scripts: Scripts::default(),
            namer: Namer::new(&config.secret),
            secret: config.secret.clone(),
            feed,
            metrics,
        });
        tasks.push(tokio::spawn(load_scripts(Arc::clone(&inner))));
        Ok(SharedTier {
            inner,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    /// Waits (at most `within`) until Redis is connected; `false` if it is not. Optional: at
    /// start-up, to begin with a warm connection; the tier works (skipping) without it.
    pub async fn connected(&self, within: Duration) -> bool {
        use fred::interfaces::ClientLike;
        let client = self.inner.store.client();
        tokio::time::timeout(within, client.wait_for_connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The caller's token id, the same on every replica sharing the secret (the local tier
    /// should use it, see the module docs).
    pub fn token_id(&self, authorization: &[u8]) -> TokenId {
        self.inner.namer.token_id(authorization)
    }

    /// The caller of one RPC (its token id, shard and value key).
    pub fn caller(&self, authorization: &[u8]) -> Caller {
        self.caller_with_id(self.token_id(authorization), authorization)
    }

    /// [`SharedTier::caller`] for a token whose id is already known: a local tier built on
    /// this tier's token key (see [`SharedTier::token_id`]) holds it in its cache key.
    pub fn caller_with_id(&self, token: TokenId, authorization: &[u8]) -> Caller {
        Caller {
            placement: self.inner.namer.place(token),
            seal: Arc::new(SealKey::for_token(&self.inner.secret, authorization)),
        }
    }

    /// Looks `key` up, checking its generations in the same round trip.
    pub async fn get(&self, caller: &Caller, key: &CacheKey, scopes: &Scopes) -> SharedLookup {
        let names = self.inner.namer.entry(&caller.placement, key, scopes);
        match self.inner.scripts.read(&self.inner.store, &names).await {
            Ok(Read::Value(sealed, stamp)) => {
                let ticket = Ticket { names, stamp };
                match self.inner.open(caller, &ticket, &sealed) {
                    Opened::Fresh(hit) => SharedLookup::Hit(hit),
                    Opened::Stale(stale) => SharedLookup::Stale(stale, ticket),
                    Opened::Unopenable => SharedLookup::Miss(ticket),
                }
            }
            Ok(Read::Nothing(stamp) | Read::Leading(stamp)) => {
                self.inner.metrics.misses.inc();
                SharedLookup::Miss(Ticket { names, stamp })
            }
            Err(_) => SharedLookup::Skipped,
        }
    }

    /// Where a fresh answer for `key` goes, and the generations its load begins under, without
    /// reading the answer there: for a `no-cache` read, which replaces what the tier holds.
    /// `None` when the tier is not usable.
    pub async fn ticket(&self, caller: &Caller, key: &CacheKey, scopes: &Scopes) -> Option<Ticket> {
        let names = self.inner.namer.entry(&caller.placement, key, scopes);
        match self.inner.scripts.read(&self.inner.store, &names).await {
            Ok(Read::Value(_, stamp) | Read::Nothing(stamp) | Read::Leading(stamp)) => {
                Some(Ticket { names, stamp })
            }
            Err(_) => None,
        }
    }

    /// Stores an upstream answer for its `lifetime` (a TTL, and how long past it Redis keeps
    /// it), in the background (never delays the reply). Stores nothing if a write invalidated
    /// it since the miss.
    pub fn put(
        &self,
        caller: &Caller,
        ticket: Ticket,
        answer: Bytes,
        upstream_status: u16,
        lifetime: impl Into<Lifetime>,
    ) {
        let inner = Arc::clone(&self.inner);
        let caller = caller.clone();
        let lifetime = lifetime.into();
        tokio::spawn(async move {
            inner
                .store_fill(&caller, &ticket, answer, upstream_status, lifetime, None)
                .await;
        });
    }

    /// Coalesces a cold read with identical ones on other replicas: lead (hold the fill lease
    /// for at most `lease_for`, say the upstream timeout) or wait for the leader's fill until
    /// `deadline` (see [`lease`]).
    pub async fn lead_or_wait(
        &self,
        caller: &Caller,
        ticket: Ticket,
        lease_for: Duration,
        deadline: Instant,
    ) -> Coalesced {
        lease::lead_or_wait(&self.inner, caller, ticket, lease_for, deadline).await
    }

    /// Records a write's invalidations in Redis and tells every replica; returns within about
    /// one `--cache-redis-timeout`. `true` when recorded now; otherwise it is retried in the
    /// background (the failure is counted as `errors{kind="invalidation"}`).
    pub async fn invalidate(&self, scopes: &[Scope]) -> bool {
        if scopes.is_empty() {
            return true;
        }
        let keys: Vec<String> = scopes
            .iter()
            .flat_map(|s| self.inner.namer.invalidated(s))
            .collect();
        let message = self.inner.feed.invalidation_message(scopes);
        if self.inner.record(&keys, &message).await.is_ok() {
            return true;
        }
        self.inner.metrics.error("invalidation");
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            for _ in 0..INVALIDATION_RETRIES {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if inner.record(&keys, &message).await.is_ok() {
                    return;
                }
            }
        });
        false
    }

    /// Whether this replica's local copies may be trusted (the feed is live). Cheap.
    pub fn is_trusted(&self) -> bool {
        self.inner.feed.is_trusted()
    }

    /// The longest a local copy filled now may be kept: `Some(1 s)` while the feed is not
    /// trusted, `None` (the answer's own TTL) when it is.
    pub fn local_ttl_cap(&self) -> Option<Duration> {
        (!self.is_trusted()).then_some(feed::UNTRUSTED_LOCAL_TTL)
    }

    /// Whether the breaker is open (the tier is being skipped).
    pub fn is_skipping(&self) -> bool {
        self.inner.store.breaker().is_open()
    }

    /// The tier's metrics (register them with [`SharedTierMetrics::register`]).
    pub fn metrics(&self) -> &SharedTierMetrics {
        &self.inner.metrics
    }

    /// The tier's Redis connection, for other users of the same Redis (the rate limit), so
    /// that a replica holds one client and one set of settings.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.inner.store)
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&self) {
        self.inner.store.quit().await;
    }
}

/// Loads the scripts on every (re)connection, so reads do not each hit `NOSCRIPT` at once.
async fn load_scripts(inner: Arc<Inner>) {
    use fred::interfaces::{ClientLike, EventInterface};
    let client = inner.store.client();
    let mut connections = client.reconnect_rx();
    let _ = client.wait_for_connect().await;
    loop {
        if let Err(error) = inner.scripts.load(client).await {
            tracing::debug!(%error, "loading the shared cache scripts failed; EVALSHA loads them on demand");
        }
        if connections.recv().await.is_err() {
            return;
        }
    }
}

/// A value read from Redis, opened.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Within its TTL.
    Fresh(SharedHit),
    /// Past its TTL (kept for the stale windows).
    Stale(SharedStale),
    /// It did not open (a counted miss).
    Unopenable,
}

impl Inner {
    /// Opens a value read under `ticket`, counting it as a hit, a stale read or (when it does
    /// not open) a miss.
    fn open(&self, caller: &Caller, ticket: &Ticket, sealed: &[u8]) -> Opened {
        let entry = match caller.seal.open(&ticket.names.value, sealed) {
            Ok(entry) => entry,
            Err(_) => {
                self.metrics.error("unopenable");
                self.metrics.misses.inc();
                return Opened::Unopenable;
            }
        };
        let now = SystemTime::now();
        let age = entry.age(now);
        let Some(remaining) = entry.remaining(now) else {
            self.metrics.stale.inc();
            return Opened::Stale(SharedStale {
                past: age.saturating_sub(entry.ttl),
                age,
                answer: entry.answer,
                upstream_status: entry.upstream_status,
            });
        };
        self.metrics.hits.inc();
        Opened::Fresh(SharedHit {
            age,
            answer: entry.answer,
            upstream_status: entry.upstream_status,
            remaining,
        })
    }

    async fn record(&self, keys: &[String], message: &[u8]) -> Result<(), StoreError> {
        self.scripts.bump(&self.store, keys).await?;
        feed::publish(&self.store, message.to_vec()).await?;
        self.metrics.invalidations_published.inc();
        Ok(())
    }
}
