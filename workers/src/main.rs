//! The `switchyard-workers` binary.

use clap::{Parser, Subcommand};
use switchyard_workers::{bench, run, WorkerConfig};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "switchyard-workers",
    version,
    about = "Switchyard's background workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job loop (the default).
    Run,
    /// Time one billing tick over many sessions against one set-based SQL statement (see the manual's figures).
    BenchBilling {
        #[arg(long, default_value_t = 100_000)]
        sessions: i64,
        #[arg(long, default_value_t = 1_000)]
        tenants: i64,
        #[arg(long, default_value_t = 2_000)]
        batch: i32,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Tenants' transactions at once in each worker (`BILLING_CONCURRENCY`).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Entries already in each patron's wallet before the tick (a regular's history of earlier charges).
        #[arg(long, default_value_t = 0)]
        history: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs as the API writes them: `LOG_FORMAT`, JSON by default in production.
    let setting = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let production = setting("APP_ENV").as_deref() == Some("production");
    let telemetry = switchyard_core::telemetry::init(
        switchyard_core::telemetry::LogFormat::from_setting(
            setting("LOG_FORMAT").as_deref(),
            production,
        )?,
        switchyard_core::telemetry::Tracing::from_env("switchyard-workers")?,
    )?;
    if let Some(Command::BenchBilling {
        sessions,
        tenants,
        batch,
        workers,
        concurrency,
        history,
    }) = Cli::parse().command
    {
        return bench::run(bench::BenchArgs {
            sessions,
            tenants,
            batch,
            workers,
            concurrency,
            history,
        })
        .await;
    }
    let config = WorkerConfig::from_env()?;
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
        tracing::info!("stop requested");
        let _ = stop_tx.send(true);
    });
    let ran = run(config, stop_rx).await;
    telemetry.shutdown().await;
    ran
}
