//! wnology-gateway: a gRPC gateway in front of the WEGnology (white-labelled Losant) REST API.
//!
//! A call flows `services` → `gateway` (the one wrapper: auth, validation, cache, tracing,
//! metrics) → `upstream` (the REST call described by `routes`), and back through `json` and
//! `error`; answers travel as protobuf bytes encoded once (`reply`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod config;
pub mod error;
pub mod gateway;
pub mod json;
pub mod metrics;
pub mod overload;
pub mod proto;
pub mod ratelimit;
pub mod reply;
pub mod routes;
/// The upstream simulator (crate `wnology-sandbox`), behind the `sandbox` feature.
#[cfg(feature = "sandbox")]
pub use wnology_sandbox as sandbox;
pub mod server;
pub mod services;
pub mod telemetry;
pub mod upstream;
pub mod web;

/// Installs rustls' `ring` provider as the process default (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
