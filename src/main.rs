//! The `wnology-gateway` binary: the gateway, the standalone sandbox, or the RPC table.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use std::sync::Arc;

use tokio::sync::watch;
use wnology_gateway::{
    admin,
    config::{Cli, Command, ProcessEnv, Settings},
    gateway::Gateway,
    routes, server,
    telemetry::{LogOptions, Telemetry, Tracing},
};
#[cfg(feature = "sandbox")]
use wnology_gateway::{
    config::SandboxArgs,
    sandbox::{Sandbox, SandboxOptions, cli::Standalone},
};

/// mimalloc rather than the system's malloc: under a churning cache (entries of a few hundred
/// bytes outliving the request buffers around them), glibc's malloc kept about 4× the live heap
/// as RSS, which made `--cache-max-bytes` meaningless as a memory budget; mimalloc keeps RSS
/// within the bound's reach (BENCHMARKS.md, phase 5).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::load(std::env::args_os(), &ProcessEnv) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    match cli.command {
        Some(Command::Routes) => {
            print!("{}", routes::markdown_table());
            return ExitCode::SUCCESS;
        }
        Some(Command::Settings) => {
            print!("{}", wnology_gateway::config::settings_markdown());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let log_options = LogOptions {
        access_log: cli.settings.access_log,
        ..LogOptions::new(cli.settings.log_format)
    };
    let telemetry = match Telemetry::init(log_options, &ProcessEnv) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("wnology-gateway: {error}");
            return ExitCode::FAILURE;
        }
    };
    wnology_gateway::install_crypto_provider();

    let result = match cli.command {
        #[cfg(feature = "sandbox")]
        Some(Command::Sandbox(args)) => run_sandbox(args).await,
        Some(Command::Routes | Command::Settings) | None => {
            run_gateway(cli.settings, telemetry.tracing()).await
        }
    };
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "wnology-gateway stopped");
            eprintln!("wnology-gateway: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg_attr(not(feature = "sandbox"), allow(unused_mut))]
async fn run_gateway(
    mut settings: Settings,
    tracing: Tracing,
) -> Result<(), Box<dyn std::error::Error>> {
    // `signalled` starts the gateway's drain; `finished` stops what must outlive the drain
    // (the admin listener, the embedded sandbox).
    let (signal, signalled) = watch::channel(false);
    let (finish, finished) = watch::channel(false);
    #[cfg(feature = "sandbox")]
    let sandbox = if settings.sandbox {
        let options = SandboxOptions {
            seed: settings.sandbox_seed.clone(),
            invite_ttl: settings.sandbox_invite_ttl,
            faults: settings.sandbox_faults,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        settings.upstream_url = format!("http://{}", listener.local_addr()?);
        let sandbox = Sandbox::new(options)?;
        print!("{}", sandbox.banner(&settings.upstream_url));
        Some(tokio::spawn(
            sandbox.serve(listener, wait(finished.clone())),
        ))
    } else {
        None
    };
    let gateway = Gateway::with_tracing(&settings, tracing)?;
    if !gateway.warm_up(std::time::Duration::from_secs(2)).await {
        tracing::warn!("the shared cache tier is not reachable yet: serving without it meanwhile");
    }
    let listener = server::bind(&settings).await?;
    let admin_listener = tokio::net::TcpListener::bind(settings.admin_listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        upstream = %settings.upstream_url,
        "wnology-gateway serving"
    );
    let admin = tokio::spawn(admin::serve(
        Arc::clone(gateway.metrics()),
        admin_listener,
        wait(finished.clone()),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received");
        let _ = signal.send(true);
    });
    let options = server::ServeOptions::from_settings(&settings);
    let closing = gateway.clone();
    let served = server::serve_with(gateway, &options, listener, wait(signalled)).await;
    closing.close().await;
    let _ = finish.send(true);
    served?;
    admin.await??;
    #[cfg(feature = "sandbox")]
    if let Some(sandbox) = sandbox {
        sandbox.await??;
    }
    Ok(())
}

#[cfg(feature = "sandbox")]
async fn run_sandbox(args: SandboxArgs) -> Result<(), Box<dyn std::error::Error>> {
    let sandbox = Standalone::bind(&args).await?;
    print!("{}", sandbox.banner());
    sandbox.serve(shutdown_signal()).await?;
    Ok(())
}

async fn wait(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
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
