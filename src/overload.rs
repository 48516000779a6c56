//! Load shedding: at most `--max-concurrency` RPCs of the gateway's services are served at once,
//! shared across the three services; a call beyond that is answered UNAVAILABLE at once instead
//! of queueing without bound. Health and reflection take no slot, so probes get through under
//! load.
//!
//! A slot is taken once the request message has been received and decoded, not when its
//! headers arrive: a caller that stalls its request body holds no slot (the per-connection
//! stream limit and the request read timeout bound what it does hold, see
//! [`crate::server`]). A read gives its slot back when its caller is answered or goes away; a
//! write's slot goes with its upstream exchange, which runs to its end even when the caller
//! goes, so that resets cannot put more writes on the upstream than the budget allows.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots shared by every RPC of the gateway's services.
#[derive(Debug, Clone)]
pub struct ConcurrencyBudget(Arc<Semaphore>);

/// One RPC's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl ConcurrencyBudget {
    /// `max` calls at once; 0 means no limit.
    pub fn new(max: usize) -> ConcurrencyBudget {
        let permits = if max == 0 {
            Semaphore::MAX_PERMITS
        } else {
            max
        };
        ConcurrencyBudget(Arc::new(Semaphore::new(permits)))
    }

    /// A slot, or `None` when every slot is taken.
    pub fn try_take(&self) -> Option<Slot> {
        Arc::clone(&self.0)
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot { _permit: permit })
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_and_given_back() {
        let budget = ConcurrencyBudget::new(2);
        let first = budget.try_take().unwrap();
        let _second = budget.clone().try_take().unwrap();
        assert!(budget.try_take().is_none());
        drop(first);
        assert!(budget.try_take().is_some());
        assert_eq!(
            ConcurrencyBudget::new(0).available(),
            Semaphore::MAX_PERMITS
        );
    }
}
