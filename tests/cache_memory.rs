//! The byte bound is a memory bound: what the weigher counts for an entry is no less than the
//! heap the entry really costs (moka's nodes, key, value, encoded answer), measured with a
//! counting allocator, for a small answer and for a usage-sized one.
//!
//! This test binary installs its own global allocator (the library stays
//! `#![forbid(unsafe_code)]`; implementing `GlobalAlloc` needs `unsafe impl`, so it lives here).
#![allow(unsafe_code)] // `unsafe impl GlobalAlloc`: see above.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed},
    time::Duration,
};

use bytes::Bytes;
use wnology_gateway::{
    cache::{
        CacheKey, CachePolicy, Fetched, Load, Loaded, ReadPolicy, ResponseCache, Scopes,
        stale::StaleSettings,
    },
    error::GatewayError,
};

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Bytes allocated minus bytes freed while counting.
static NET: AtomicI64 = AtomicI64::new(0);

struct NetBytes;

// SAFETY: every method forwards its arguments unchanged to `System`; the counting touches only
// atomics (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for NetBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(delta: i64) {
    if COUNTING.load(Relaxed) {
        NET.fetch_add(delta, Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: NetBytes = NetBytes;

const ENTRIES: usize = 20_000;

/// Fills a fresh cache with `ENTRIES` distinct keys answered by `answer_len` bytes; returns the
/// net heap growth and the weighted size, per entry.
async fn per_entry(answer_len: usize) -> (f64, f64) {
    let cache = ResponseCache::new(CachePolicy {
        max_bytes: 1 << 34,
        usage_ttl: Duration::from_secs(3600),
        entity_ttl: Duration::from_secs(3600),
        stale: StaleSettings::off(),
    });
    let token = cache.token_id(b"Bearer memory-test");
    let answer = vec![0x2a_u8; answer_len];
    // Warm moka's lazily built parts, so that they are not charged to the entries.
    cache.run_pending_tasks().await;
    NET.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
    for n in 0..ENTRIES {
        let key = CacheKey {
            route: "me.payloadCounts",
            token,
            // What a `MePayloadCountsRequest` with `start` and `end` encodes to: 14 bytes.
            request: (n as u128).to_le_bytes()[..14].to_vec().into_boxed_slice(),
        };
        // Each answer is its own allocation, as an upstream load makes it.
        let fetched = Fetched {
            answer: Bytes::from(answer.clone()),
            upstream_status: 200,
        };
        let tags = Scopes {
            me: true,
            ..Scopes::default()
        };
        cache
            .get_or_load(
                key,
                tags,
                ReadPolicy::new(Duration::from_secs(3600)),
                || -> Load {
                    let fetched = fetched.clone();
                    Box::pin(async move { Ok::<_, GatewayError>(Loaded::from(fetched)) })
                },
            )
            .await
            .expect("the load answers");
    }
    cache.run_pending_tasks().await;
    COUNTING.store(false, Relaxed);
    let net = NET.load(Relaxed) as f64;
    let figures = cache.figures();
    assert_eq!(figures.entries, ENTRIES as u64, "every entry is kept");
    (
        net / ENTRIES as f64,
        figures.weighted_bytes as f64 / ENTRIES as f64,
    )
}

#[test]
fn the_weigher_counts_no_less_than_the_heap_an_entry_costs() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for answer_len in [32, 464, 4096] {
        let (heap, weighed) = runtime.block_on(per_entry(answer_len));
        println!(
            "answer of {answer_len} bytes: {heap:.0} bytes of heap per entry, {weighed:.0} weighed"
        );
        assert!(
            weighed >= heap,
            "an entry with a {answer_len}-byte answer costs {heap:.0} bytes of heap but is weighed {weighed:.0}"
        );
        // And the bound is not wildly pessimistic either (which would waste the cache).
        assert!(
            weighed <= heap * 2.0,
            "an entry with a {answer_len}-byte answer costs {heap:.0} bytes of heap but is weighed {weighed:.0}"
        );
    }
}
