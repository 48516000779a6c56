//! Loads in flight: concurrent identical misses share one upstream call, which runs in a task of
//! its own so that a first caller who goes away does not make the others call again; and a load
//! whose every waiter has gone is cancelled, so that callers who reset cannot pile work on the
//! upstream that nobody will read.

use std::{
    collections::{HashMap, hash_map::Entry},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use moka::future::Cache;
use tokio::task::AbortHandle;

use super::{CacheKey, Cached, Scopes};
use crate::error::GatewayError;

/// What a load produces.
pub(super) type LoadResult = Result<Cached, Arc<GatewayError>>;

/// One load in flight.
struct Load {
    /// Tells this load from a later one of the same key.
    id: u64,
    scopes: Scopes,
    result: Shared<BoxFuture<'static, LoadResult>>,
    /// Callers waiting for it; changed only under the registry's lock.
    waiters: usize,
    abort: AbortHandle,
}

type Registry = Arc<Mutex<HashMap<CacheKey, Load>>>;

/// The loads in flight, by key.
#[derive(Default)]
pub(super) struct InFlight {
    loads: Registry,
    next_id: AtomicU64,
}

/// A caller's share in a load: dropping it (the caller went away) before the load ends
/// cancels the load if no other caller waits for it.
pub(super) struct Waiter {
    loads: Registry,
    key: CacheKey,
    id: u64,
    result: Shared<BoxFuture<'static, LoadResult>>,
}

impl InFlight {
    /// Joins the load in flight for `key`, or starts `load` (storing its answer in `entries`)
    /// when there is none; `true` when this call started it. `None` when `look_again` (the
    /// caller found no entry) and an answer was stored since the caller looked: it should look
    /// again (that answer may serve it, fresh or stale, while a refresh runs). A caller that
    /// found a stale entry loads whatever is stored.
    pub(super) fn join_or_start<F>(
        &self,
        key: &CacheKey,
        scopes: Scopes,
        entries: &Cache<CacheKey, Cached>,
        look_again: bool,
        load: impl FnOnce() -> F,
    ) -> Option<(Waiter, bool)>
    where
        F: Future<Output = LoadResult> + Send + 'static,
    {
        let mut loads = self
            .loads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Before joining too: a load in flight beside a stored entry may be a background
        // refresh, which a caller the entry can answer must not wait for.
        if look_again && entries.contains_key(key) {
            return None;
        }
        let (load, started) = match loads.entry(key.clone()) {
            Entry::Occupied(existing) => {
                let existing = existing.into_mut();
                existing.waiters += 1;
                (existing, false)
            }
            Entry::Vacant(vacant) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let task = tokio::spawn(store_when_loaded(
                    load(),
                    Arc::clone(&self.loads),
                    entries.clone(),
                    key.clone(),
                    id,
                ));
                let abort = task.abort_handle();
                let load = vacant.insert(Load {
                    id,
                    scopes,
                    result: task.map(joined).boxed().shared(),
                    waiters: 1,
                    abort,
                });
                (load, true)
            }
        };
        let waiter = Waiter {
            loads: Arc::clone(&self.loads),
            key: key.clone(),
            id: load.id,
            result: load.result.clone(),
        };
        Some((waiter, started))
    }

    /// Forgets the loads `stale` says may predate a write: they still answer the callers who
    /// wait for them, but no later caller joins them, and what they load is not stored.
    pub(super) fn forget(&self, stale: impl Fn(&CacheKey, &Scopes) -> bool) {
        let mut loads = self
            .loads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        loads.retain(|key, load| !stale(key, &load.scopes));
    }

    /// Loads in flight now.
    pub(super) fn len(&self) -> usize {
        self.loads.lock().map_or(0, |loads| loads.len())
    }
}

impl Waiter {
    /// The load's result.
    pub(super) async fn result(&self) -> LoadResult {
        self.result.clone().await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut loads = self
            .loads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(load) = loads.get_mut(&self.key).filter(|load| load.id == self.id) else {
            // Finished or forgotten: nothing to cancel for the others.
            return;
        };
        load.waiters -= 1;
        if load.waiters == 0 {
            load.abort.abort();
            loads.remove(&self.key);
        }
    }
}

/// Runs `load`; stores a success in `entries` unless the load was forgotten meanwhile, then
/// leaves the registry (in that order, so that a caller who finds neither entry nor load has
/// really come after both).
async fn store_when_loaded<F>(
    load: F,
    loads: Registry,
    entries: Cache<CacheKey, Cached>,
    key: CacheKey,
    id: u64,
) -> LoadResult
where
    F: Future<Output = LoadResult> + Send + 'static,
{
    let result = load.await;
    let current = |loads: &Registry| {
        loads
            .lock()
            .is_ok_and(|loads| loads.get(&key).is_some_and(|load| load.id == id))
    };
    if let Ok(cached) = &result
        && current(&loads)
    {
        entries.insert(key.clone(), cached.clone()).await;
    }
    if let Ok(mut loads) = loads.lock()
        && loads.get(&key).is_some_and(|load| load.id == id)
    {
        loads.remove(&key);
    }
    result
}

fn joined(result: Result<LoadResult, tokio::task::JoinError>) -> LoadResult {
    result.unwrap_or_else(|error| {
        Err(Arc::new(GatewayError::Internal(format!(
            "upstream load task failed: {error}"
        ))))
    })
}
