//! The `edge-bridge` binary: `edge-bridge run` (the default) with the settings in the environment.

use clap::{Parser, Subcommand};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "edge-bridge",
    version,
    about = "Switchyard's per-venue edge bridge"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the cloud and drive the venue's devices (the default).
    Run,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (Some(Command::Run) | None) = Cli::parse().command;
    let config = edge_bridge::Config::from_lookup(|k| std::env::var(k).ok())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        let _ = stop_tx.send(true);
    });
    println!("edge-bridge {} starting", env!("CARGO_PKG_VERSION"));
    edge_bridge::run(config, stop_rx).await
}
