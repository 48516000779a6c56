//! wnology-gateway: a gRPC gateway in front of the WEGnology (white-labelled Losant) REST API.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod json;
pub mod proto;
pub mod routes;
pub mod upstream;

/// Installs rustls' `ring` provider as the process default (once; later calls are no-ops).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
pub mod admin;
pub mod cache;
pub mod gateway;
pub mod metrics;
pub mod server;
pub mod services;
pub mod telemetry;
