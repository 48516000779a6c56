//! The gateway's integration tests, one binary: a module per behaviour (each file's `//!`
//! says which), all against loopback upstreams and the real gateway on ephemeral ports. One
//! binary links once instead of once per file; a test is still selected by its module path,
//! e.g. `cargo test --test it cache_isolation::` or `cargo test --test it -- --exact
//! trace_export::server_and_client_spans_are_exported_and_the_trace_reaches_the_upstream`.
//!
//! Tests share the process: they must not set environment variables or other process-wide
//! state. The few that install the global `tracing` subscriber (`access_log`, `redaction`,
//! `trace_export`, `trace_export_http`) re-run themselves in a process of their own
//! (`support::in_own_process`). `tests/cache_memory.rs`, which installs a global allocator,
//! is a binary of its own.

mod schemas;
mod support;
#[cfg(feature = "sandbox")]
mod support_sandbox;

mod access_log;
mod breaker;
mod cache_coalescing;
mod cache_control;
mod cache_invalidation;
mod cache_isolation;
mod deadlines;
mod deny_list;
mod faults;
mod graceful_shutdown;
mod grpc_web;
mod health_reflection;
mod hostile_input;
mod limits;
mod local_validation;
mod metrics_endpoint;
mod overload;
mod rate_limit;
mod redaction;
mod request_id;
mod retries;
mod rpc_translation;
mod sandbox_fidelity;
mod sandbox_session;
mod schema_roundtrip;
mod shared_cache;
mod shared_tier;
mod smoke;
mod stale;
mod stale_shared;
mod tls;
mod trace_export;
mod trace_export_http;
mod upstream_errors;
mod write_once;
