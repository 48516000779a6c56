//! The standalone sandbox's command line, shared by the `wnology-sandbox` binary and the
//! gateway's `wnology-gateway sandbox` subcommand (which flattens [`SandboxArgs`]), so that
//! both take the same flags.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use tokio::net::TcpListener;

use crate::{Sandbox, SandboxError, SandboxOptions};

/// Settings of the standalone sandbox.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Address the sandbox REST API listens on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// JSON file that replaces the sandbox's built-in seed data.
    #[arg(long)]
    pub sandbox_seed: Option<PathBuf>,
    /// How long a sandbox invitation stays valid (e.g. `7d`, `90s`).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub sandbox_invite_ttl: Duration,
    /// Faults on demand: `off`, `503` or `hang` for a share of calls (`503:0.5`); changed at
    /// run time with `PUT /_sandbox/faults` on the sandbox's port.
    #[arg(long, default_value = "off")]
    pub sandbox_faults: crate::faults::Faults,
}

impl SandboxArgs {
    /// The options these flags ask for.
    pub fn options(&self) -> SandboxOptions {
        SandboxOptions {
            seed: self.sandbox_seed.clone(),
            invite_ttl: self.sandbox_invite_ttl,
            faults: self.sandbox_faults,
        }
    }
}

/// A duration: a bare number of seconds, or a number with a unit as `humantime` reads it
/// (`250ms`, `90s`, `5m`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}")),
    }
}

/// A sandbox bound to its listener, not serving yet.
#[derive(Debug)]
pub struct Standalone {
    sandbox: Sandbox,
    listener: TcpListener,
    url: String,
}

impl Standalone {
    /// Builds the sandbox `args` describe and binds its listener.
    pub async fn bind(args: &SandboxArgs) -> Result<Standalone, SandboxError> {
        let sandbox = Sandbox::new(args.options())?;
        let bind_error = |source| SandboxError::Bind {
            addr: args.listen,
            source,
        };
        let listener = TcpListener::bind(args.listen).await.map_err(bind_error)?;
        let url = format!("http://{}", listener.local_addr().map_err(bind_error)?);
        Ok(Standalone {
            sandbox,
            listener,
            url,
        })
    }

    /// Where it listens and its documented tokens ([`Sandbox::banner`]).
    pub fn banner(&self) -> String {
        self.sandbox.banner(&self.url)
    }

    /// Serves until `shutdown` completes ([`Sandbox::serve`]).
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.sandbox.serve(self.listener, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 60 "), Ok(Duration::from_secs(60)));
        assert!(parse_duration("7 fortnights").is_err());
        assert!(parse_duration("").is_err());
    }
}
