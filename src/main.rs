//! The `wnology-gateway` binary: the gateway, the standalone sandbox, or the RPC table.

use std::process::ExitCode;

use wnology_gateway::{
    config::{Cli, Command, ProcessEnv},
    routes, server,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::load(std::env::args_os(), &ProcessEnv) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    wnology_gateway::install_crypto_provider();

    let result = match cli.command {
        Some(Command::Routes) => {
            print!("{}", routes::markdown_table());
            Ok(())
        }
        #[cfg(feature = "sandbox")]
        Some(Command::Sandbox(_)) => todo_sandbox(),
        None => run_gateway(cli.settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wnology-gateway stopped");
            eprintln!("wnology-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_gateway(
    settings: wnology_gateway::config::Settings,
) -> Result<(), server::ServeError> {
    let listener = server::bind(&settings).await?;
    tracing::info!(listen = %settings.listen, upstream = %settings.upstream_url, "serving");
    server::serve(&settings, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

#[cfg(feature = "sandbox")]
fn todo_sandbox() -> Result<(), server::ServeError> {
    Ok(())
}
