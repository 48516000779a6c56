//! The load generator: a set of workers, each owning one client and keeping one call in flight,
//! bounded by a request count and a deadline. Latencies go to HDR histograms (one per shard,
//! behind an uncontended-most-of-the-time mutex, so memory does not grow with the worker count).

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Latencies are recorded in nanoseconds, 3 significant digits, up to two minutes.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// One worker's client: makes call number `seq` (a number unique within the run).
pub(crate) trait Caller: Send + 'static {
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// How long a run may go on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// Stop issuing calls after this long.
    pub duration: Duration,
    /// Stop issuing calls after this many.
    pub max_calls: u64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub hist: Histogram<u64>,
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Default for Run {
    fn default() -> Self {
        Run {
            hist: histogram(),
            ok: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }
}

impl Run {
    /// Adds another (interleaved) slice of the same scenario.
    pub(crate) fn merge(&mut self, other: &Run) {
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Successful calls per second.
    pub(crate) fn rps(&self) -> f64 {
        if self.elapsed.is_zero() {
            return 0.0;
        }
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.hist.value_at_quantile(q))
    }

    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.hist.max())
    }
}

/// Runs every caller in its own task on the current runtime until `limit`, and hands the
/// callers back for the next run.
pub(crate) async fn drive<C: Caller>(callers: Vec<C>, limit: Limit) -> (Run, Vec<C>) {
    let shards = callers.len().clamp(1, 8);
    let hists: Arc<Vec<Mutex<Histogram<u64>>>> =
        Arc::new((0..shards).map(|_| Mutex::new(histogram())).collect());
    let issued = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new((0u64, None::<String>)));
    let started = Instant::now();
    let deadline = started + limit.duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .enumerate()
        .map(|(index, mut caller)| {
            let (hists, issued, failures) = (
                Arc::clone(&hists),
                Arc::clone(&issued),
                Arc::clone(&failures),
            );
            tokio::spawn(async move {
                let shard = &hists[index % hists.len()];
                let mut ok = 0u64;
                loop {
                    let seq = issued.fetch_add(1, Relaxed);
                    if seq >= limit.max_calls {
                        break;
                    }
                    let sent = Instant::now();
                    if sent >= deadline {
                        break;
                    }
                    match caller.call(seq).await {
                        Ok(()) => {
                            let nanos = sent.elapsed().as_nanos() as u64;
                            shard
                                .lock()
                                .expect("histogram lock")
                                .saturating_record(nanos.max(1));
                            ok += 1;
                        }
                        Err(error) => {
                            let mut failures = failures.lock().expect("failures lock");
                            failures.0 += 1;
                            failures.1.get_or_insert(error);
                        }
                    }
                }
                (caller, ok)
            })
        })
        .collect();
    let mut ok = 0;
    let mut callers = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (caller, done) = task.await.expect("load worker panicked");
        ok += done;
        callers.push(caller);
    }
    let elapsed = started.elapsed();
    let mut hist = histogram();
    for shard in hists.iter() {
        hist.add(&*shard.lock().expect("histogram lock"))
            .expect("same histogram bounds");
    }
    let (failed, first_error) = failures.lock().expect("failures lock").clone();
    let run = Run {
        hist,
        ok,
        failed,
        elapsed,
        first_error,
    };
    (run, callers)
}
