//! The access log's writer: an RPC appends its line to an in-memory batch and goes on; a thread
//! of its own writes the batch out every few milliseconds.
//!
//! Why not a channel per line (tracing-appender's `non_blocking`): each line then wakes the
//! writer thread, a futex wake-up and a context switch per RPC, which at cache-hit rates cost
//! more than the RPC itself. Here a line costs a short lock and a copy, and the writer wakes on
//! a timer, so its cost is per batch. A slow or stuck sink never holds up an RPC: lines beyond
//! the bound are dropped and counted.

use std::{
    io::Write,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// How often the writer thread writes what was logged meanwhile.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// How long shutdown waits for the last batch to be written to a sink that may be stuck.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The lines logged since the writer last took them.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: usize,
    closed: bool,
    /// Set by [`FlushGuard::flush`]: write now rather than at the next tick.
    flush: bool,
    /// Lines taken into a batch so far (not dropped ones).
    appended: u64,
}

#[derive(Debug)]
struct State {
    batch: Mutex<Batch>,
    /// Wakes the writer early, at shutdown.
    wake: Condvar,
    /// Signalled by the writer once it wrote its last batch.
    finished: (Mutex<bool>, Condvar),
    /// Lines written out so far (`Batch::appended` when the batch was taken), and its signal.
    written: (Mutex<u64>, Condvar),
    limit: usize,
    dropped: AtomicU64,
}

impl State {
    fn batch(&self) -> MutexGuard<'_, Batch> {
        // A panic while holding the lock leaves only bytes behind: keep using them.
        self.batch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The request-path side of the access log: a [`MakeWriter`] whose writers append to the batch.
#[derive(Debug, Clone)]
pub(super) struct AccessSink {
    state: Arc<State>,
}

/// Counts lines dropped because the sink did not keep up.
#[derive(Debug, Clone)]
pub(super) struct DroppedLines(Arc<State>);

impl DroppedLines {
    /// Lines dropped so far.
    pub(super) fn get(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Stops the writer when dropped, after it wrote what was logged (waiting at most a second for
/// a stuck sink).
#[derive(Debug)]
pub(super) struct FlushGuard {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl AccessSink {
    /// Starts the writer thread over `out`; at most `limit` lines wait in memory.
    pub(super) fn start<W: Write + Send + 'static>(
        out: W,
        limit: usize,
    ) -> std::io::Result<(AccessSink, DroppedLines, FlushGuard)> {
        let state = Arc::new(State {
            batch: Mutex::new(Batch::default()),
            wake: Condvar::new(),
            finished: (Mutex::new(false), Condvar::new()),
            written: (Mutex::new(0), Condvar::new()),
            limit: limit.max(1),
            dropped: AtomicU64::new(0),
        });
        let writer = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("wnology-access-log".into())
            .spawn(move || write_batches(&writer, out))?;
        let guard = FlushGuard {
            state: Arc::clone(&state),
            thread: Some(thread),
        };
        Ok((
            AccessSink {
                state: Arc::clone(&state),
            },
            DroppedLines(state),
            guard,
        ))
    }

    /// Adds one line (or drops and counts it when the bound is reached).
    pub(super) fn append(&self, line: &[u8]) {
        let mut batch = self.state.batch();
        if batch.lines >= self.state.limit || batch.closed {
            drop(batch);
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        batch.bytes.extend_from_slice(line);
        batch.lines += 1;
        batch.appended += 1;
    }
}

/// The writer thread: takes the batch every [`FLUSH_INTERVAL`] (at once when closing) and
/// writes it in one go.
fn write_batches<W: Write>(state: &State, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let (bytes, closed, upto) = {
            let batch = state.batch();
            let (mut batch, _) = state
                .wake
                .wait_timeout_while(batch, FLUSH_INTERVAL, |batch| !batch.closed && !batch.flush)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            batch.lines = 0;
            batch.flush = false;
            let bytes = std::mem::replace(&mut batch.bytes, std::mem::take(&mut spare));
            (bytes, batch.closed, batch.appended)
        };
        if !bytes.is_empty() {
            // Nowhere to report a failed log write but the counter: the lines are lost.
            if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                state
                    .dropped
                    .fetch_add(count_lines(&bytes), Ordering::Relaxed);
            }
        }
        spare = bytes;
        spare.clear();
        let (written, signal) = &state.written;
        *written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = upto;
        signal.notify_all();
        if closed {
            break;
        }
    }
    let (done, signal) = &state.finished;
    *done.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    signal.notify_all();
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

impl FlushGuard {
    /// Writes what was logged so far now, and returns once it is written (or after a second,
    /// for a stuck sink).
    pub(super) fn flush(&self) {
        let target = {
            let mut batch = self.state.batch();
            batch.flush = true;
            batch.appended
        };
        self.state.wake.notify_all();
        let (written, signal) = &self.state.written;
        let written = written
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = signal
            .wait_timeout_while(written, SHUTDOWN_WAIT, |written| *written < target)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.state.batch().closed = true;
        self.state.wake.notify_all();
        let (done, signal) = &self.state.finished;
        let done = done.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (done, _) = signal
            .wait_timeout_while(done, SHUTDOWN_WAIT, |done| !*done)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *done && let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line's writer; the formatting layer writes each event with one `write_all`.
#[derive(Debug)]
pub(super) struct LineWriter<'a>(&'a AccessSink);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for AccessSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

/// A sink that keeps what it is given, for the tests of the access log.
#[cfg(test)]
pub(super) mod testing {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::fmt::MakeWriter;

    /// Everything written, in order.
    #[derive(Clone, Default)]
    pub(crate) struct Collected(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Collected {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Collected {
        type Writer = Collected;
        fn make_writer(&'a self) -> Collected {
            self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::Collected, *};

    #[test]
    fn lines_are_written_in_order_and_flushed_at_shutdown() {
        let out = Collected::default();
        let (sink, dropped, guard) = AccessSink::start(out.clone(), 1000).unwrap();
        for i in 0..100 {
            sink.make_writer()
                .write_all(format!("{i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(dropped.get(), 0);
    }

    #[test]
    fn flush_writes_what_was_logged_before_it_returns() {
        let out = Collected::default();
        let (sink, _, guard) = AccessSink::start(out.clone(), 1000).unwrap();
        sink.make_writer().write_all(b"one\n").unwrap();
        guard.flush();
        assert_eq!(out.0.lock().unwrap().as_slice(), b"one\n");
        guard.flush(); // nothing new: returns at once
    }

    #[test]
    fn lines_over_the_bound_are_dropped_and_counted() {
        /// A sink that blocks until the test ends.
        struct Stuck(std::sync::mpsc::Receiver<()>);
        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.recv();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (release, stuck) = std::sync::mpsc::channel();
        let (sink, dropped, guard) = AccessSink::start(Stuck(stuck), 4).unwrap();
        sink.make_writer().write_all(b"first\n").unwrap();
        // Wait (bounded) until the writer holds the first line and is stuck writing it.
        for _ in 0..200 {
            if sink.state.batch().lines == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for _ in 0..10 {
            sink.make_writer().write_all(b"line\n").unwrap();
        }
        assert_eq!(dropped.get(), 6, "4 lines wait, 6 are dropped");
        drop(release);
        drop(guard);
    }
}
