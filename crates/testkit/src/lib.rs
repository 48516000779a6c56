//! wnology-testkit: the harness the gateway's integration tests and its benchmark share, kept
//! apart from the gateway crate so that it builds once, in parallel with the gateway, and a
//! change to the gateway does not rebuild it.
//!
//! - [`upstream`]: the recording upstream (answers as told, keeps every request);
//! - [`faults`]: a raw TCP upstream that misbehaves in one chosen way;
//! - [`otlp`]: an OTLP trace collector (gRPC and HTTP/protobuf) that keeps every span;
//! - [`binary`]: the gateway binary as a child process, its logs kept;
//! - [`process`]: what child processes inherit, free loopback ports;
//! - [`isolation`]: running one test in a process of its own;
//! - [`redis`]: `redis-server` processes (one, or a three-node Cluster) on loopback.
//!
//! What needs the gateway's own types (the in-process gateway, its generated clients) lives in
//! the gateway's `tests/it/support.rs`. The per-schema fixtures stay in `tests/fixtures/`
//! beside the tests that read them (`tests/it/schemas/`): they are data about the gateway's
//! contract, used by no benchmark.
#![warn(clippy::print_stdout)]

pub mod binary;
pub mod faults;
pub mod isolation;
pub mod otlp;
pub mod process;
pub mod redis;
pub mod upstream;

pub use upstream::{Answer, Recorded, RecordingUpstream};
