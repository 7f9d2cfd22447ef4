//! `bench-console`: the web console's live floor in Chromium. It creates a database `switchyard_bench_console` next to
//! `DATABASE_URL`'s (a superuser), migrates it, serves the real router with the built console (`CONSOLE_DIR`) on a
//! free port in this process, and sets up one venue with `--stations` stations (200), each running a walk-in
//! session. Then `console/e2e/bench-floor.mjs` measures, in Debian's Chromium, how long a reload takes until every
//! tile is drawn, and how far the floor lags while `--rate` changes a second (50) arrive for `--seconds`.

#![expect(
    clippy::expect_used,
    reason = "a benchmark program: a failed setup step should stop it at once"
)]

use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use switchyard_api::{Config, Server};

use switchyard_tests::{bench_arg as arg, with_database};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stations = arg("stations", 200);
    let rate = arg("rate", 50);
    let seconds = arg("seconds", 10);
    let console = std::env::var("CONSOLE_ROOT").expect("CONSOLE_ROOT: the console/ folder, built");
    let dist = format!("{console}/dist");
    let owner = with_database(&std::env::var("DATABASE_URL")?, "switchyard_bench_console");
    let app_url = with_database(
        &std::env::var("APP_DATABASE_URL")?,
        "switchyard_bench_console",
    );
    if sqlx::Postgres::database_exists(&owner).await? {
        sqlx::Postgres::drop_database(&owner).await?;
    }
    sqlx::Postgres::create_database(&owner).await?;
    let pool = sqlx::PgPool::connect(&owner).await?;
    switchyard_core::db::migrate(&pool).await?;
    pool.close().await;

    let vars = [
        ("APP_DATABASE_URL", app_url.as_str()),
        ("JWT_SECRET", "bench-secret-bench-secret-bench-secret-00"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("CONSOLE_DIR", dist.as_str()),
        ("DB_MAX_CONNECTIONS", "20"),
        ("AUTH_RATE_BURST", "100000"),
        ("RATE_BURST", "100000000"),
        ("TENANT_MAX_CONCURRENT_REQUESTS", "100000"),
    ];
    let config = Config::from_lookup(|k| {
        vars.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| (*v).to_owned())
    })?;
    let server = Server::bind(config).await?;
    let base = format!("http://{}", server.local_addr()?);
    tokio::spawn(server.run(std::future::pending()));
    let http = reqwest::Client::new();

    let email = "floor@example.com";
    let password = "neon-tiles-passphrase-9";
    http.post(format!("{base}/api/v1/auth/signup"))
        .json(&json!({"organization": "Floor bench", "email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?;
    let login: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("sign-in failed: {login}"))
        .to_owned();
    let gql = |query: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let body: Value = http
                .post(format!("{base}/graphql"))
                .bearer_auth(&token)
                .json(&json!({"query": query}))
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(body.get("errors").is_none(), "{body}");
            anyhow::Ok(body["data"].clone())
        }
    };
    let venue = gql(r#"mutation { createVenue(input: {name: "Big Floor", timezone: "Europe/Berlin", currency: "EUR"}) { id } }"#.into())
        .await?["createVenue"]["id"]
        .as_str()
        .expect("venue")
        .to_owned();
    let tariff = gql(
        r#"mutation { createTariff(name: "T", terms: {currency: "EUR", perMinute: 10}) { id } }"#
            .into(),
    )
    .await?["createTariff"]["id"]
        .as_str()
        .expect("tariff")
        .to_owned();
    gql(format!(r#"mutation {{ assignTariff(input: {{tariffId: "{tariff}", venueId: "{venue}"}}) {{ id }} }}"#)).await?;
    let mut sessions = Vec::new();
    for i in 0..stations {
        let station = gql(format!(
            r#"mutation {{ createStation(input: {{venueId: "{venue}", name: "S-{i:03}", kind: PC, control: MANUAL}}) {{ id }} }}"#
        ))
        .await?["createStation"]["id"]
            .as_str()
            .expect("station")
            .to_owned();
        let session = gql(format!(
            r#"mutation {{ startSession(input: {{stationId: "{station}", durationMinutes: 600, payment: CASH}}) {{ id }} }}"#
        ))
        .await?["startSession"]["id"]
            .as_str()
            .expect("session")
            .to_owned();
        sessions.push(session);
    }
    println!("set up: {stations} stations, each with a running session; now Chromium");

    let status = tokio::process::Command::new("node")
        .arg("e2e/bench-floor.mjs")
        .current_dir(&console)
        .env("CONSOLE_URL", &base)
        .env("OWNER_EMAIL", email)
        .env("OWNER_PASSWORD", password)
        .env("STATIONS", stations.to_string())
        .env("RATE", rate.to_string())
        .env("SECONDS", seconds.to_string())
        .env("SESSIONS", sessions.join(","))
        .status()
        .await?;
    anyhow::ensure!(status.success(), "the browser benchmark failed: {status}");
    Ok(())
}
