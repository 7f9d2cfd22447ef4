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
    /// A settings file of `KEY=value` lines (the environment overrides it); see the manual for the keys.
    #[arg(long, env = "BRIDGE_CONFIG", global = true)]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the cloud and drive the venue's devices (the default).
    Run,
    /// Simulate a PC agent: connect to a bridge's agent server, print what it says, send heartbeats.
    AgentSim {
        /// `ws://<bridge>:<port>/ws/agent/<station id>`
        #[arg(long)]
        url: String,
        /// The station's agent key (from `issueAgentKey`).
        #[arg(long, env = "AGENT_KEY")]
        key: String,
        #[arg(long, default_value_t = 10_000)]
        heartbeat_ms: u64,
        /// Reconnect this long after the connection ends or is refused (as a real agent would); 0: exit instead.
        #[arg(long, default_value_t = 0)]
        retry_ms: u64,
    },
    /// Simulate powerbank cabinets on an MQTT broker (the open cabinet protocol); prints what happens as JSON lines.
    CabinetSim {
        /// The broker, `mqtt://host:1883`.
        #[arg(long, env = "BRIDGE_MQTT_URL")]
        mqtt: String,
        /// A cabinet, `<id>:<slots>[:<label>@<battery>,...]` (powerbanks fill the slots from 1); repeat for more.
        #[arg(long = "cabinet", required = true)]
        cabinets: Vec<edge_bridge::cabinet_sim::CabinetSpec>,
        /// A jammed slot, `<cabinet id>:<slot>` (its ejects fail with `jammed`); repeat for more.
        #[arg(long = "jammed")]
        jammed: Vec<String>,
        /// The share of ejects that fail with `motor_error`, 0.0–1.0.
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Each powerbank below 100 % gains 1 % this often; 0: never.
        #[arg(long, default_value_t = 60_000)]
        charge_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    // `LOG_FORMAT=json` for a log collector (one object per line); text, which journald keeps, by default.
    // Anything else is text too, with a warning: a bad value must not keep a venue's bridge from starting.
    let format = std::env::var("LOG_FORMAT").unwrap_or_default();
    match format.trim() {
        "json" => logs.json().flatten_event(true).init(),
        "" | "text" => logs.init(),
        other => {
            logs.init();
            tracing::warn!(value = other, "LOG_FORMAT is text or json; writing text");
        }
    }
    let cli = Cli::parse();
    if let Some(Command::CabinetSim {
        mqtt,
        cabinets,
        jammed,
        fail_rate,
        charge_ms,
    }) = cli.command
    {
        let jammed = jammed
            .iter()
            .map(|j| {
                let (cabinet, slot) = j
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--jammed is <cabinet id>:<slot>, not {j:?}"))?;
                Ok((cabinet.to_owned(), slot.parse()?))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config = edge_bridge::cabinet_sim::SimConfig {
            mqtt_url: mqtt,
            cabinets,
            jammed,
            fail_rate,
            charge_every: Some(std::time::Duration::from_millis(charge_ms))
                .filter(|d| !d.is_zero()),
        };
        return edge_bridge::cabinet_sim::start(config).await?.wait().await;
    }
    if let Some(Command::AgentSim {
        url,
        key,
        heartbeat_ms,
        retry_ms,
    }) = cli.command
    {
        let heartbeat = std::time::Duration::from_millis(heartbeat_ms.max(100));
        loop {
            let outcome = edge_bridge::agents::simulate(&url, &key, heartbeat).await;
            if retry_ms == 0 {
                return outcome;
            }
            if let Err(e) = outcome {
                tracing::info!(error = %e, "agent connection failed; retrying");
            }
            tokio::time::sleep(std::time::Duration::from_millis(retry_ms)).await;
        }
    }
    let config = edge_bridge::Config::load(cli.config.as_deref())?;
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
