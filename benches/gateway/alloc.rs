//! A counting wrapper around mimalloc (the gateway binary's allocator), installed as this bench
//! binary's global allocator (the library itself stays `#![forbid(unsafe_code)]`; `GlobalAlloc` can only be
//! implemented with `unsafe impl`, so that unsafety lives here and only here).
//!
//! Counting is off unless [`enable`]d, so the throughput phases pay one relaxed load per
//! allocation and nothing else. Each thread carries a [`Role`] (set when a runtime starts its
//! threads), so allocations can be split between the load generator, the server under test
//! and the upstream.
#![allow(unsafe_code)] // `unsafe impl GlobalAlloc`: see above.

use mimalloc::MiMalloc;
use std::{
    alloc::{GlobalAlloc, Layout},
    cell::Cell,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

/// Which side of the benchmark a thread works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The main thread and anything untagged (micro-benchmarks run here).
    Other = 0,
    /// The load generator (tonic and reqwest clients).
    Client = 1,
    /// The server under test (the bare tonic server or the gateway).
    Server = 2,
    /// The upstream (the sandbox or the trivial JSON upstream).
    Upstream = 3,
}

const ROLES: usize = 4;

thread_local! {
    // `const` initialised and without a destructor: safe to touch from inside the allocator.
    static ROLE: Cell<usize> = const { Cell::new(0) };
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static COUNTS: [AtomicU64; ROLES] = [const { AtomicU64::new(0) }; ROLES];
static BYTES: [AtomicU64; ROLES] = [const { AtomicU64::new(0) }; ROLES];

/// Tags the calling thread.
pub(crate) fn set_role(role: Role) {
    ROLE.with(|r| r.set(role as usize));
}

/// Starts or stops counting.
pub(crate) fn enable(on: bool) {
    ENABLED.store(on, Relaxed);
}

/// Allocations (including reallocations) and bytes requested so far, per role.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub counts: [u64; ROLES],
    pub bytes: [u64; ROLES],
}

impl Snapshot {
    pub(crate) fn now() -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| COUNTS[i].load(Relaxed)),
            bytes: std::array::from_fn(|i| BYTES[i].load(Relaxed)),
        }
    }

    /// What happened between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            counts: std::array::from_fn(|i| self.counts[i] - earlier.counts[i]),
            bytes: std::array::from_fn(|i| self.bytes[i] - earlier.bytes[i]),
        }
    }

    pub(crate) fn count(&self, role: Role) -> u64 {
        self.counts[role as usize]
    }

    pub(crate) fn total_count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(crate) fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

#[inline]
fn note(size: usize) {
    if ENABLED.load(Relaxed) {
        let role = ROLE.try_with(Cell::get).unwrap_or(0);
        COUNTS[role].fetch_add(1, Relaxed);
        BYTES[role].fetch_add(size as u64, Relaxed);
    }
}

/// mimalloc, counted.
pub(crate) struct Counting;

// SAFETY: every method forwards its arguments unchanged to `MiMalloc`, which upholds the
// `GlobalAlloc` contract; the counting touches only atomics and a const thread-local (no
// allocation, no re-entrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
}
