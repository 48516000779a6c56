//! The upstream's circuit breaker: when too many recent upstream calls failed, calls are refused
//! at once for a cool-down instead of piling onto a struggling upstream; then one probe is let
//! through (half-open), whose outcome closes the breaker or reopens it for twice as long.
//!
//! A failure is what says the upstream itself is in trouble: no connection, a broken
//! connection, a timeout, a 5xx. An answered 4xx is a success here (the upstream works; the
//! call was refused). Counts are kept in a sliding window of [`BUCKETS`] buckets, so old calls
//! age out without a timer. Time comes from a [`Clock`], so the tests drive it.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use clap::Args;

use crate::config::parse_duration;

/// How many buckets the window is cut into.
pub const BUCKETS: usize = 10;

/// The longest cool-down, however often probes fail.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// The circuit breaker's settings (`--upstream-breaker-*`).
#[derive(Debug, Clone, Copy, Args)]
pub struct BreakerSettings {
    /// Circuit breaker: the share of failed upstream calls (connection errors, timeouts, 5xx;
    /// not 4xx) within `--upstream-breaker-window` that opens it; 0 disables the breaker.
    #[arg(long, default_value_t = 0.5, value_parser = parse_ratio)]
    pub upstream_breaker_failure_ratio: f64,
    /// Circuit breaker: the fewest upstream calls within the window before it may open.
    #[arg(long, default_value_t = 20)]
    pub upstream_breaker_min_calls: u32,
    /// Circuit breaker: the sliding window its failure ratio is counted over.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub upstream_breaker_window: Duration,
    /// Circuit breaker: how long it stays open before one probe call is let through; doubles
    /// (up to 60 s) each time a probe fails.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub upstream_breaker_cooldown: Duration,
}

/// A failure ratio: a number from 0 to 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number from 0 to 1"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(format!("`{text}` is not a number from 0 to 1"))
    }
}

/// Where the breaker reads the time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The breaker's state, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe call is let through; the others are refused.
    HalfOpen,
}

impl State {
    /// `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The breaker-state gauge's value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// The cool-down now in force (the open period, when `to` is [`State::Open`]).
    pub cooldown: Duration,
}

/// A call refused because the breaker is open (or half-open with its probe in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When to try again: the rest of the cool-down (at least a moment while a probe runs).
    pub retry_after: Duration,
}

/// Told of every transition (logs and metrics).
pub type Observer = Box<dyn Fn(Transition) + Send + Sync>;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time (since the breaker's origin) these counts are of.
    index: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    cooldown: Duration,
    buckets: [Bucket; BUCKETS],
}

/// The circuit breaker. Cheap to share (`Arc`).
pub struct Breaker {
    failure_ratio: f64,
    min_calls: u32,
    bucket_width: Duration,
    base_cooldown: Duration,
    origin: Instant,
    clock: Arc<dyn Clock>,
    observer: Observer,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("failure_ratio", &self.failure_ratio)
            .field("min_calls", &self.min_calls)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Leave to make one upstream call; report its outcome with [`Permit::record`]. Dropped
/// unrecorded (the call was cancelled), a probe frees the half-open slot for another.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    /// A closed breaker; `None` when `settings` disable it (failure ratio 0).
    pub fn new(
        settings: &BreakerSettings,
        clock: Arc<dyn Clock>,
        observer: Observer,
    ) -> Option<Breaker> {
        if settings.upstream_breaker_failure_ratio <= 0.0 {
            return None;
        }
        let window = settings
            .upstream_breaker_window
            .max(Duration::from_millis(10));
        let origin = clock.now();
        Some(Breaker {
            failure_ratio: settings.upstream_breaker_failure_ratio,
            min_calls: settings.upstream_breaker_min_calls,
            bucket_width: window / BUCKETS as u32,
            base_cooldown: settings.upstream_breaker_cooldown,
            origin,
            clock,
            observer,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                cooldown: settings.upstream_breaker_cooldown,
                buckets: [Bucket::default(); BUCKETS],
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock cannot leave the counts inconsistent in a way that matters.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now (an open breaker whose cool-down is over reads as open until a call
    /// comes to probe).
    pub fn state(&self) -> State {
        match self.lock().phase {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Leave for one upstream call, or why not.
    pub fn admit(&self) -> Result<Permit<'_>, Refused> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } if now < until => {
                return Err(Refused {
                    retry_after: until - now,
                });
            }
            Phase::Open { .. } => {
                inner.phase = Phase::HalfOpen { probing: true };
                let cooldown = inner.cooldown;
                drop(inner);
                self.tell(State::Open, State::HalfOpen, cooldown);
                true
            }
            Phase::HalfOpen { probing: true } => {
                return Err(Refused {
                    retry_after: inner.cooldown.min(Duration::from_secs(1)),
                });
            }
            Phase::HalfOpen { probing: false } => {
                inner.phase = Phase::HalfOpen { probing: true };
                true
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    fn tell(&self, from: State, to: State, cooldown: Duration) {
        (self.observer)(Transition { from, to, cooldown });
    }

    /// Counts a call admitted while closed; opens the breaker when the window's failures
    /// reach the ratio.
    fn record_closed(&self, failed: bool) {
        let now = self.clock.now();
        let index = (now.saturating_duration_since(self.origin).as_nanos()
            / self.bucket_width.as_nanos().max(1)) as u64;
        let mut inner = self.lock();
        if !matches!(inner.phase, Phase::Closed) {
            // Opened by another call meanwhile: this outcome is of the past period.
            return;
        }
        let bucket = &mut inner.buckets[(index % BUCKETS as u64) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..Bucket::default()
            };
        }
        bucket.calls += 1;
        bucket.failures += u32::from(failed);
        if !failed {
            return;
        }
        let oldest = index.saturating_sub(BUCKETS as u64 - 1);
        let (calls, failures) = inner
            .buckets
            .iter()
            .filter(|b| b.index >= oldest && b.index <= index)
            .fold((0u64, 0u64), |(c, f), b| {
                (c + u64::from(b.calls), f + u64::from(b.failures))
            });
        if calls >= u64::from(self.min_calls)
            && failures as f64 >= self.failure_ratio * calls as f64
        {
            let cooldown = inner.cooldown;
            inner.phase = Phase::Open {
                until: now + cooldown,
            };
            drop(inner);
            self.tell(State::Closed, State::Open, cooldown);
        }
    }

    /// The probe's outcome: success closes (and forgets the window), failure reopens for
    /// twice the cool-down.
    fn record_probe(&self, failed: bool) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if failed {
            inner.cooldown = (inner.cooldown * 2).min(MAX_COOLDOWN.max(self.base_cooldown));
            let cooldown = inner.cooldown;
            inner.phase = Phase::Open {
                until: now + cooldown,
            };
            drop(inner);
            self.tell(State::HalfOpen, State::Open, cooldown);
        } else {
            inner.cooldown = self.base_cooldown;
            inner.buckets = [Bucket::default(); BUCKETS];
            inner.phase = Phase::Closed;
            drop(inner);
            self.tell(State::HalfOpen, State::Closed, self.base_cooldown);
        }
    }
}

impl Permit<'_> {
    /// Reports the call's outcome: `failed` when the upstream itself failed (see the module).
    pub fn record(mut self, failed: bool) {
        self.recorded = true;
        if self.probe {
            self.breaker.record_probe(failed);
        } else {
            self.breaker.record_closed(failed);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut inner = self.breaker.lock();
            if let Phase::HalfOpen { probing } = &mut inner.phase {
                *probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct FakeClock(Mutex<Instant>);

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    impl FakeClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    fn settings(ratio: f64, min_calls: u32) -> BreakerSettings {
        BreakerSettings {
            upstream_breaker_failure_ratio: ratio,
            upstream_breaker_min_calls: min_calls,
            upstream_breaker_window: Duration::from_secs(10),
            upstream_breaker_cooldown: Duration::from_secs(5),
        }
    }

    fn breaker(
        ratio: f64,
        min_calls: u32,
    ) -> (Breaker, Arc<FakeClock>, Arc<Mutex<Vec<Transition>>>) {
        let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let breaker = Breaker::new(
            &settings(ratio, min_calls),
            clock.clone(),
            Box::new(move |t| log.lock().unwrap().push(t)),
        )
        .unwrap();
        (breaker, clock, seen)
    }

    fn calls(breaker: &Breaker, n: usize, failed: bool) {
        for _ in 0..n {
            breaker.admit().unwrap().record(failed);
        }
    }

    #[test]
    fn a_zero_ratio_disables_it() {
        assert!(
            Breaker::new(&settings(0.0, 20), Arc::new(SystemClock), Box::new(|_| {})).is_none()
        );
    }

    #[test]
    fn it_opens_only_at_min_calls_and_the_ratio() {
        let (breaker, _, seen) = breaker(0.5, 20);
        calls(&breaker, 10, false);
        calls(&breaker, 9, true);
        assert_eq!(breaker.state(), State::Closed, "19 calls: below min-calls");
        calls(&breaker, 1, true);
        assert_eq!(breaker.state(), State::Open, "10 of 20 failed");
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [Transition {
                from: State::Closed,
                to: State::Open,
                cooldown: Duration::from_secs(5)
            }]
        );
    }

    #[test]
    fn below_the_ratio_it_stays_closed() {
        let (breaker, _, _) = breaker(0.5, 20);
        calls(&breaker, 30, false);
        calls(&breaker, 29, true);
        assert_eq!(breaker.state(), State::Closed, "29 of 59 < 0.5");
        calls(&breaker, 1, true);
        assert_eq!(breaker.state(), State::Open, "30 of 60 = 0.5");
    }

    #[test]
    fn old_calls_age_out_of_the_window() {
        let (breaker, clock, _) = breaker(0.5, 20);
        calls(&breaker, 19, true);
        clock.advance(Duration::from_secs(11));
        calls(&breaker, 1, true);
        assert_eq!(
            breaker.state(),
            State::Closed,
            "the 19 are out of the window"
        );
        calls(&breaker, 19, true);
        assert_eq!(breaker.state(), State::Open);
    }

    #[test]
    fn open_refuses_with_the_rest_of_the_cooldown_then_probes_once() {
        let (breaker, clock, seen) = breaker(0.5, 2);
        calls(&breaker, 2, true);
        clock.advance(Duration::from_secs(2));
        let refused = breaker.admit().unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(3));
        clock.advance(Duration::from_secs(3));
        let probe = breaker.admit().expect("the cool-down is over: one probe");
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.admit().is_err(), "only one probe at a time");
        probe.record(false);
        assert_eq!(breaker.state(), State::Closed);
        let states: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|t| (t.from, t.to))
            .collect();
        assert_eq!(
            states,
            [
                (State::Closed, State::Open),
                (State::Open, State::HalfOpen),
                (State::HalfOpen, State::Closed)
            ]
        );
        calls(&breaker, 1, true);
        assert_eq!(breaker.state(), State::Closed, "closing forgot the window");
    }

    #[test]
    fn a_failed_probe_doubles_the_cooldown_up_to_a_minute() {
        let (breaker, clock, _) = breaker(0.5, 1);
        calls(&breaker, 1, true);
        let mut expected = Duration::from_secs(5);
        for _ in 0..6 {
            clock.advance(expected);
            breaker.admit().unwrap().record(true);
            expected = (expected * 2).min(MAX_COOLDOWN);
            assert_eq!(breaker.admit().unwrap_err().retry_after, expected);
        }
        assert_eq!(expected, MAX_COOLDOWN);
        clock.advance(expected);
        breaker.admit().unwrap().record(false);
        calls(&breaker, 1, true);
        assert_eq!(
            breaker.admit().unwrap_err().retry_after,
            Duration::from_secs(5),
            "a success resets the cool-down"
        );
    }

    #[test]
    fn a_cancelled_probe_lets_another_call_probe() {
        let (breaker, clock, _) = breaker(0.5, 1);
        calls(&breaker, 1, true);
        clock.advance(Duration::from_secs(5));
        drop(breaker.admit().unwrap());
        assert_eq!(breaker.state(), State::HalfOpen);
        breaker.admit().expect("the slot was freed").record(false);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        assert_eq!(parse_ratio("0.5"), Ok(0.5));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("-0.1").is_err());
        assert!(parse_ratio("half").is_err());
    }
}
