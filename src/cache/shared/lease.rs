//! Cross-replica coalescing of cold reads: a fill lease in Redis (`SET NX PX`, taken by the
//! same script that found nothing to read, so no caller can miss a fill that landed between
//! its read and its lease attempt).
//!
//! The leader calls the upstream and fills ([`Lease::fill`]), which releases the lease and
//! publishes `F`; waiters wake on that message (or poll every [`POLL`]) and read the fill. A
//! leader that fails releases the lease with `A` ([`Lease::abandon`], also on drop): its
//! waiters fall back to their own call (errors are not stored). A leader that vanishes lets
//! its lease expire: the next waiter to look takes the lease and leads. Waiting never outlasts
//! the caller's deadline, and a Redis failure while waiting ends the wait at once.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    Caller, Inner, Lifetime, Opened, SharedHit, Ticket,
    generations::{Fill, Read},
};

/// How often a waiter looks again when no fill message came.
pub const POLL: Duration = Duration::from_millis(100);

/// What [`super::SharedTier::lead_or_wait`] decided.
#[derive(Debug)]
pub enum Coalesced {
    /// This caller holds the lease: call the upstream, then [`Lease::fill`] or
    /// [`Lease::abandon`].
    Lead(Lease),
    /// Another replica's call filled the tier: serve this.
    Filled(SharedHit),
    /// No coalescing: the leader failed, the deadline came, or Redis failed. Call the upstream
    /// yourself (and `put` with the ticket).
    Alone(Ticket),
}

/// A held fill lease. Dropping it without filling abandons it.
#[derive(Debug)]
pub struct Lease {
    inner: Arc<Inner>,
    caller: Caller,
    ticket: Ticket,
    token: String,
    done: bool,
}

impl Lease {
    /// Stores the leader's answer (in the background, like `SharedTier::put`, for as long as
    /// `lifetime` says), releases the lease and wakes the waiters.
    pub fn fill(
        mut self,
        answer: bytes::Bytes,
        upstream_status: u16,
        lifetime: impl Into<Lifetime>,
    ) {
        let lifetime = lifetime.into();
        self.done = true;
        let inner = Arc::clone(&self.inner);
        let caller = self.caller.clone();
        let ticket = self.ticket.clone();
        let token = std::mem::take(&mut self.token);
        tokio::spawn(async move {
            inner
                .store_fill(
                    &caller,
                    &ticket,
                    answer,
                    upstream_status,
                    lifetime,
                    Some(&token),
                )
                .await;
        });
    }

    /// Gives the lease up without an answer: the waiters fall back to their own calls.
    pub fn abandon(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let names = self.ticket.names.clone();
        let token = std::mem::take(&mut self.token);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = inner.scripts.release(&inner.store, &names, &token).await;
            });
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

/// Leads or waits for `ticket`'s fill (see the module docs).
pub(crate) async fn lead_or_wait(
    inner: &Arc<Inner>,
    caller: &Caller,
    ticket: Ticket,
    lease_for: Duration,
    deadline: Instant,
) -> Coalesced {
    let mut watch = inner.feed.watch_fill(&ticket.names.value);
    let token = hex::encode(rand::random::<[u8; 16]>());
    let mut waited = false;
    loop {
        let read = inner
            .scripts
            .acquire(&inner.store, &ticket.names, &token, lease_for)
            .await;
        match read {
            Err(_) => return Coalesced::Alone(ticket),
            Ok(Read::Leading(stamp)) => {
                return Coalesced::Lead(Lease {
                    inner: Arc::clone(inner),
                    caller: caller.clone(),
                    ticket: Ticket { stamp, ..ticket },
                    token,
                    done: false,
                });
            }
            Ok(Read::Value(sealed, stamp)) => {
                let ticket = Ticket { stamp, ..ticket };
                return match inner.open(caller, &ticket, &sealed) {
                    Opened::Fresh(hit) => {
                        if waited {
                            inner.metrics.coalesced.inc();
                        }
                        Coalesced::Filled(hit)
                    }
                    // Past its TTL since the script saw it fresh, or not openable.
                    Opened::Stale(_) | Opened::Unopenable => Coalesced::Alone(ticket),
                };
            }
            Ok(Read::Nothing(_)) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return Coalesced::Alone(ticket);
        }
        waited = true;
        // Jitter keeps many waiters from polling in step.
        let pause = POLL + Duration::from_millis(rand::random_range(0..20));
        let wake = tokio::time::timeout(pause.min(deadline - now), watch.events.changed()).await;
        if let Ok(Ok(())) = wake
            && *watch.events.borrow_and_update() == super::feed::FillEvent::Abandoned
        {
            return Coalesced::Alone(ticket);
        }
    }
}

impl Inner {
    /// Seals and stores one answer under `ticket` (with the lease `token` when leading), kept
    /// in Redis for its TTL and stale window.
    pub(crate) async fn store_fill(
        &self,
        caller: &Caller,
        ticket: &Ticket,
        answer: bytes::Bytes,
        upstream_status: u16,
        lifetime: Lifetime,
        lease: Option<&str>,
    ) {
        let fetched_at = SystemTime::now();
        let entry = super::seal::Entry {
            answer,
            upstream_status,
            fetched_at,
            ttl: lifetime.ttl,
        };
        let sealed = caller.seal.seal(&ticket.names.value, &entry);
        let fresh_until = (fetched_at + lifetime.ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let fill = Fill {
            names: &ticket.names,
            stamp: &ticket.stamp,
            sealed,
            ttl: lifetime.ttl.saturating_add(lifetime.stale_for),
            fresh_until_ms: u64::try_from(fresh_until.as_millis()).unwrap_or(u64::MAX),
            lease,
        };
        if let Ok(true) = self.scripts.put(&self.store, fill).await {
            self.metrics.writes.inc();
        }
    }
}
