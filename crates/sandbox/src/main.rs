//! The `wnology-sandbox` binary: the sandbox upstream alone, as `wnology-gateway sandbox` runs
//! it (same flags), for curl, benchmarks and client development.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wnology_sandbox::cli::{SandboxArgs, Standalone};

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "wnology-sandbox", version, about)]
struct Cli {
    #[command(flatten)]
    args: SandboxArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let standalone = match Standalone::bind(&cli.args).await {
        Ok(standalone) => standalone,
        Err(error) => return fail(&error),
    };
    // The banner is the program's output: the documented, public demo tokens.
    print!("{}", standalone.banner());
    match standalone.serve(terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &dyn std::error::Error) -> ExitCode {
    tracing::error!(%error, "wnology-sandbox stopped");
    ExitCode::FAILURE
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
