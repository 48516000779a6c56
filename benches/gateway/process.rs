//! The real `wnology-gateway` binary (built by `cargo bench` in the bench profile) as a child
//! process (`tests/common/binary.rs`, shared with the tests), so that its memory is measured
//! alone: the load generator and the upstream stay in the bench process, and the gateway runs
//! with the binary's own global allocator. Here: what the RSS phase reads of it.

// The tests use the drain helpers (`sigterm`, `try_wait`, `logged`); the bench does not.
#[allow(dead_code)]
#[path = "../../tests/common/binary.rs"]
mod binary;

pub use binary::GatewayBinary;

/// A field of the process's `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
pub fn status_bytes(gateway: &GatewayBinary, field: &str) -> Option<u64> {
    crate::status_kib_of(&format!("/proc/{}/status", gateway.pid()), field).map(|k| k * 1024)
}

/// One value of the gateway's Prometheus exposition.
pub async fn metric(gateway: &GatewayBinary, client: &reqwest::Client, name: &str) -> Option<f64> {
    let text = client
        .get(format!("http://{}/metrics", gateway.admin))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter_map(|line| line.strip_prefix(name))
        .find_map(|rest| rest.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
