//! A test that must be alone in its process: one that installs process-wide state (the global
//! `tracing` subscriber, the OpenTelemetry exporter it configures) cannot share a test binary
//! with others. [`in_own_process`] re-runs just that test in a child process of the same test
//! binary (libtest's `--exact` filter) and checks that it passed there; every other test keeps
//! running in parallel in the parent.
//!
//! Hand-written rather than `rusty-fork`: that crate runs a synchronous closure in the child,
//! and these tests are `async` bodies on the runtime `#[tokio::test]` built for them.
//!
//! ```ignore
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn spans_are_exported() {
//!     if !in_own_process(module_path!(), "spans_are_exported") {
//!         return; // the child ran it, and passed
//!     }
//!     // ... installs the global subscriber ...
//! }
//! ```

use std::{
    io::Read,
    process::{Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Set in the child to the test it runs.
pub const CHILD_VAR: &str = "TESTKIT_OWN_PROCESS";

/// How long the child may take.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(180);

/// True in the child process: run the test's body. In the parent, runs the test `name` of
/// module `module_path` (pass `module_path!()`) in a child and returns false once it passed;
/// panics, with the child's output, when it failed, ran no test or took too long.
pub fn in_own_process(module_path: &str, name: &str) -> bool {
    let test = test_path(module_path, name);
    if std::env::var(CHILD_VAR).is_ok_and(|running| running == test) {
        return true;
    }
    let (passed, output) = run_child(&test);
    assert!(
        passed,
        "{test} failed in its own process; its output:\n{output}"
    );
    // What the test printed in the child, captured by the parent's libtest like its own.
    #[allow(clippy::print_stdout)]
    {
        print!("{output}");
    }
    false
}

/// libtest's name of a test: the module path without the crate, then the function.
fn test_path(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{name}"),
        None => name.to_string(),
    }
}

/// Runs `test` alone in a child of this test binary: whether it passed, and what it printed.
fn run_child(test: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary starts again");
    // Read both pipes to the end, so that the child never blocks on a full one.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + CHILD_TIME_LIMIT;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let output = format!("{stdout}{}", stderr.join().unwrap_or_default());
    let ran_one = stdout.contains("test result: ok. 1 passed");
    (status.is_some_and(|s| s.success()) && ran_one, output)
}

/// Reads `pipe` to the end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_path_drops_the_crate_name() {
        assert_eq!(
            test_path("it::trace_export", "spans"),
            "trace_export::spans"
        );
        assert_eq!(test_path("it::a::b", "t"), "a::b::t");
        assert_eq!(test_path("it", "t"), "t");
    }

    #[test]
    fn a_child_that_runs_no_test_is_a_failure() {
        let (passed, output) = run_child("isolation::tests::no_such_test");
        assert!(!passed, "{output}");
    }
}
