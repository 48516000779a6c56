//! Child processes under test: what they inherit from the test's environment, and free
//! loopback ports for servers that bind their own.

use std::{
    net::{SocketAddr, TcpListener},
    process::Command,
};

/// Whether `name` is a variable that configures the gateway or its telemetry.
pub fn is_settings_var(name: &str) -> bool {
    name.starts_with("WNOLOGY_") || name.starts_with("OTEL_") || name == "RUST_LOG"
}

/// Removes from `command` every variable of the test's own environment that would configure
/// the gateway ([`is_settings_var`]), so that only what the test passes configures the child.
pub fn clear_settings_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if is_settings_var(&name) {
            command.env_remove(name.as_ref());
        }
    }
}

/// A free loopback port, released just before the child binds it (for programs that take an
/// address rather than report the one they bound).
///
/// Another process may take the port between its release and the child's bind (the kernel
/// hands released ports out again): callers that start a child on it retry with a fresh port
/// when the child cannot bind, as [`crate::redis::RedisServer`] does.
pub fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| format!("address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_variables_are_the_gateways_and_telemetrys() {
        assert!(is_settings_var("WNOLOGY_LISTEN"));
        assert!(is_settings_var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        assert!(is_settings_var("RUST_LOG"));
        assert!(!is_settings_var("PATH"));
        assert!(!is_settings_var("RUST_BACKTRACE"));
    }

    #[test]
    fn a_free_port_is_on_loopback_and_bindable() {
        // A port can be taken by a concurrent process between release and bind (that race is
        // why callers retry); a few fresh ports in a row cannot all be taken.
        let bound = (0..5).any(|_| {
            let addr = free_port().expect("a free port");
            assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
            TcpListener::bind(addr).is_ok()
        });
        assert!(bound, "none of five free ports could be bound again");
    }
}
