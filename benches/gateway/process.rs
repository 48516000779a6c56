//! The real `wnology-gateway` binary (built by `cargo bench` in the bench profile) as a child
//! process (`wnology_testkit::binary`, shared with the tests), so that its memory is measured
//! alone: the load generator and the upstream stay in the bench process, and the gateway runs
//! with the binary's own global allocator. Here: what the RSS phase reads of it.

pub(crate) use wnology_testkit::binary::GatewayBinary;

/// The gateway binary cargo built for this benchmark.
pub(crate) fn gateway_binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_wnology-gateway"))
}

/// A field of the process's `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
pub(crate) fn status_bytes(gateway: &GatewayBinary, field: &str) -> Option<u64> {
    crate::status_kib_of(&format!("/proc/{}/status", gateway.pid()), field).map(|k| k * 1024)
}

/// One value of the gateway's Prometheus exposition.
pub(crate) async fn metric(
    gateway: &GatewayBinary,
    client: &reqwest::Client,
    name: &str,
) -> Option<f64> {
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
