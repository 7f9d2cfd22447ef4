//! `bench-sessions`: start/stop throughput and latency over REST with concurrent clients. It creates a database
//! `switchyard_bench_sessions` next to `DATABASE_URL`'s (a superuser), migrates it, serves the real router on a free
//! port in this process, signs up a tenant with one PC per client and `--patrons` funded patrons (one per client
//! unless told: `--patrons 1` has every client bill the same wallet, which its lock then serializes), then has
//! every client start a 30-minute wallet session on its own PC for its patron and stop it, again and again: for
//! `--warmup` seconds (default 3), after which every table is analyzed (as autovacuum does on a deployment that has
//! been running), then for `--seconds`, which are measured.

#![expect(
    clippy::expect_used,
    reason = "a benchmark program: a failed setup step should stop it at once"
)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use switchyard_api::{Config, Server};

use switchyard_tests::{bench_arg as arg, with_database};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let clients = arg("clients", 50) as usize;
    let seconds = arg("seconds", 20);
    let patron_count = (arg("patrons", clients as u64) as usize).clamp(1, clients.max(1));
    let warmup = arg("warmup", 3);
    let owner = with_database(&std::env::var("DATABASE_URL")?, "switchyard_bench_sessions");
    let app_url = with_database(
        &std::env::var("APP_DATABASE_URL")?,
        "switchyard_bench_sessions",
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
        switchyard_tests::PRODUCTION[0],
        switchyard_tests::PRODUCTION[1],
        switchyard_tests::PRODUCTION[2],
        switchyard_tests::PRODUCTION[3],
        ("DB_MAX_CONNECTIONS", "40"),
        ("AUTH_RATE_BURST", "100000"),
        // The benchmark is one client and one tenant driving the API as hard as it can.
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
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;

    // Setup through the API: sign up, then sign in.
    let credentials = json!({"email": "bench@example.com", "password": "load-test-passphrase-9"});
    http.post(format!("{base}/api/v1/auth/signup"))
        .json(&json!({"organization": "Bench", "email": credentials["email"], "password": credentials["password"]}))
        .send()
        .await?
        .error_for_status()?;
    let signup: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&credentials)
        .send()
        .await?
        .json()
        .await?;
    let token = signup["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("sign-up failed: {signup}"))
        .to_owned();
    let gql = |query: String| {
        let http = http.clone();
        let base = base.clone();
        let token = token.clone();
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
    let venue = gql(r#"mutation { createVenue(input: {name: "V", timezone: "Europe/Berlin", currency: "EUR"}) { id } }"#.into())
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
    let mut patrons = Vec::new();
    for i in 0..patron_count {
        let data = gql(format!(
            r#"mutation {{ createPatron(input: {{displayName: "P{i}"}}) {{ id }} }}"#
        ))
        .await?;
        let patron = data["createPatron"]["id"]
            .as_str()
            .expect("patron")
            .to_owned();
        gql(format!(
            r#"mutation {{ topUpCash(patronId: "{patron}", venueId: "{venue}", amount: 1000000000, idempotencyKey: "bench-{i}") {{ id }} }}"#
        ))
        .await?;
        patrons.push(patron);
    }
    let mut stations = Vec::new();
    for i in 0..clients {
        let data = gql(format!(
            r#"mutation {{ createStation(input: {{venueId: "{venue}", name: "PC-{i}", kind: PC, control: AGENT}}) {{ id }} }}"#
        ))
        .await?;
        stations.push(
            data["createStation"]["id"]
                .as_str()
                .expect("station")
                .to_owned(),
        );
    }

    // A deployment that has been running has statistics on its tables (autovacuum analyzes them as they grow); a
    // database created a moment ago has none, and the plans made then (kept per connection) scan where they would
    // probe a key. The warm-up runs the same load, then the tables are analyzed, as autovacuum would have done.
    let clients_of = |stations: &[String]| -> Vec<Client> {
        stations
            .iter()
            .enumerate()
            .map(|(i, station)| Client {
                http: http.clone(),
                base: base.clone(),
                token: token.clone(),
                station: station.clone(),
                patron: patrons[i % patron_count].clone(),
            })
            .collect()
    };
    if warmup > 0 {
        eprintln!("{clients} clients, {patron_count} patrons, warm-up {warmup} s ...");
        let (_, stops, _) = run(clients_of(&stations), warmup).await?;
        let pool = sqlx::PgPool::connect(&owner).await?;
        sqlx::query("analyze").execute(&pool).await?;
        pool.close().await;
        eprintln!("warm-up: {} pairs, then ANALYZE", stops.len());
    }
    eprintln!("{clients} clients, {patron_count} patrons, {seconds} s ...");
    let (mut starts, mut stops, elapsed) = run(clients_of(&stations), seconds).await?;
    starts.sort();
    stops.sort();
    println!("clients            {clients} ({patron_count} patrons)");
    println!("duration           {elapsed:.1} s");
    println!(
        "sessions           {} started and stopped ({:.0} start+stop pairs/s, {:.0} requests/s)",
        stops.len(),
        stops.len() as f64 / elapsed,
        (starts.len() + stops.len()) as f64 / elapsed
    );
    println!(
        "start latency      p50 {:.1} ms, p99 {:.1} ms",
        percentile(&starts, 0.50),
        percentile(&starts, 0.99)
    );
    println!(
        "stop latency       p50 {:.1} ms, p99 {:.1} ms",
        percentile(&stops, 0.50),
        percentile(&stops, 0.99)
    );
    Ok(())
}

/// One client's PC, patron and credentials.
struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    station: String,
    patron: String,
}

/// Every client starts and stops sessions until `seconds` have passed: the start and stop latencies, and the time
/// it took.
async fn run(
    clients: Vec<Client>,
    seconds: u64,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, f64)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(tokio::spawn(async move {
            let (mut starts, mut stops) = (Vec::new(), Vec::new());
            while Instant::now() < deadline {
                let at = Instant::now();
                let response = c
                    .http
                    .post(format!("{}/api/v1/sessions/start", c.base))
                    .bearer_auth(&c.token)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&json!({"station_id": c.station, "patron_id": c.patron, "duration_minutes": 30, "payment": "wallet"}))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 201, "start answered {}", response.status());
                let session: Value = response.json().await?;
                starts.push(at.elapsed());
                let at = Instant::now();
                let id = session["session_id"].as_str().expect("session id");
                let response = c
                    .http
                    .delete(format!("{}/api/v1/sessions/{id}", c.base))
                    .bearer_auth(&c.token)
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 200, "stop answered {}", response.status());
                stops.push(at.elapsed());
            }
            anyhow::Ok((starts, stops))
        }));
    }
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for task in tasks {
        let (s, t) = task.await??;
        starts.extend(s);
        stops.extend(t);
    }
    Ok((starts, stops, started.elapsed().as_secs_f64()))
}
