//! The `switchyard` binary: `serve`, `migrate`, `seed-demo`, `print-schema`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::migrate::MigrateDatabase;
use switchyard_api::{config::LogFormat, seed, telemetry, AppState, Config, Server};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard: the cloud API for metered stations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve REST, GraphQL, health and metrics on LISTEN_ADDR.
    Serve,
    /// Create the database if missing and apply migrations, as the owner role (DATABASE_URL).
    Migrate,
    /// Create the demo tenant (idempotent) and print its logins.
    SeedDemo {
        /// Also point the demo arcade at simulated devices from this port on 127.0.0.1 (`demo-devices --base`)
        /// and write its bridge's settings (a fresh token, the agent PCs' keys) to `--bridge-env`.
        #[arg(long, requires = "bridge_env")]
        devices: Option<u16>,
        /// Where to write the demo bridge's settings, as `KEY=value` lines.
        #[arg(long)]
        bridge_env: Option<std::path::PathBuf>,
    },
    /// Print the GraphQL SDL (the content of graphql/schema.graphql).
    PrintSchema,
    /// Print the REST API's OpenAPI document (as served at /api/v1/openapi.json).
    PrintOpenapi,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            let config = Config::from_env()?;
            let telemetry = telemetry::init(
                config.log_format,
                telemetry::Tracing::from_env("switchyard")?,
            )?;
            let server = Server::bind(config).await?;
            let addr = server.local_addr()?;
            tracing::info!(%addr, "listening");
            println!("switchyard listening on http://{addr}");
            let served = server.run(shutdown_signal()).await;
            tracing::info!("stopped");
            telemetry.shutdown().await;
            served?;
        }
        Command::Migrate => {
            // As `serve` logs (the migration Job's lines are collected with the API's), without the rest of its
            // configuration, which migrating does not need.
            let var = |k: &str| {
                std::env::var(k)
                    .ok()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            };
            let production = var("APP_ENV").is_some_and(|v| v == "production");
            let format = LogFormat::from_setting(var("LOG_FORMAT").as_deref(), production)?;
            telemetry::init(format, None)?;
            let url = std::env::var("DATABASE_URL")
                .context("DATABASE_URL (the owner role's URL) is required")?;
            if !sqlx::Postgres::database_exists(&url)
                .await
                .context("while checking the database exists")?
            {
                sqlx::Postgres::create_database(&url)
                    .await
                    .context("while creating the database")?;
                tracing::info!("database created");
            }
            let pool = sqlx::PgPool::connect(&url)
                .await
                .context("while connecting as the owner role")?;
            switchyard_core::db::migrate(&pool).await?;
            // Containers and Kubernetes Jobs have no psql: the app role's password can be set here.
            if let Some(password) = std::env::var("APP_ROLE_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
            {
                anyhow::ensure!(
                    password.len() >= 16,
                    "APP_ROLE_PASSWORD must be at least 16 characters"
                );
                let statement: String = sqlx::query_scalar(
                    "select format('alter role switchyard_app password %L', $1::text)",
                )
                .bind(&password)
                .fetch_one(&pool)
                .await?;
                sqlx::raw_sql(&statement)
                    .execute(&pool)
                    .await
                    .context("while setting the app role's password")?;
                println!("the switchyard_app role's password is set");
            }
            let version = switchyard_core::db::MIGRATOR
                .iter()
                .map(|m| m.version)
                .max()
                .unwrap_or(0);
            println!("migrations applied (latest {version})");
        }
        Command::SeedDemo {
            devices,
            bridge_env,
        } => {
            let config = Config::from_env()?;
            telemetry::init(config.log_format, None)?;
            let state = AppState::new(config)?;
            let tenant = seed::seed_demo(&state).await?;
            if let (Some(base), Some(path)) = (devices, bridge_env) {
                let bridge = seed::demo_bridge(&state, base).await?;
                let agents: Vec<String> = bridge
                    .agents
                    .iter()
                    .map(|(station, key)| format!("{station}={key}"))
                    .collect();
                let text = format!(
                    "BRIDGE_TOKEN={}\nDEMO_AGENTS=\"{}\"\nHUB_BRIDGE_TOKEN={}\nDEMO_CABINET={}\nDEMO_CHARGER_ID={}\nDEMO_CHARGER_PASSWORD={}\n",
                    bridge.token,
                    agents.join(" "),
                    bridge.hub_token,
                    bridge.cabinet,
                    bridge.charger.0,
                    bridge.charger.1
                );
                write_private(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("demo tenant {tenant} ({})", seed::DEMO_ORGANIZATION);
            for (role, email, password) in seed::DEMO_LOGINS {
                println!("  {:<8} {email:<32} {password}", role.as_str());
            }
            let (email, password) = seed::DEMO_PATRON_LOGIN;
            println!(
                "  patron   {email:<32} {password}  ({}: gold tier, 50.00 EUR; POST /api/v1/auth/patron/login with tenant_id {tenant})",
                seed::DEMO_PATRON
            );
        }
        Command::PrintSchema => print!("{}", switchyard_graphql::sdl()),
        Command::PrintOpenapi => println!(
            "{}",
            serde_json::to_string_pretty(&switchyard_api::app::openapi_document()?)?
        ),
    }
    Ok(())
}

/// Writes a file only its owner can read (it holds a token).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
