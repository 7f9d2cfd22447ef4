//! `bench-load` (`./infra/dev.sh bench load`): the several-replica deployment under a realistic load, on one
//! machine. It creates the database `switchyard_bench_load` next to `DATABASE_URL`'s (a superuser) and migrates it,
//! then starts, as separate processes from its own build folder, two `switchyard serve` and two
//! `switchyard-workers` (waking each other through `REDIS_URL`) and one `edge-bridge` per venue, with a round-robin
//! TCP balancer in front of the APIs and a simulated Shelly plug behind every station. Everything talks through the
//! balancer, as clients would.
//!
//! Phases, each with every response's body checked:
//! 1. the limits: `pgbench` (`PGBENCH`) runs the station list's SQL in one tenant transaction as the app role
//!    (row-level security on) and as the owner (which bypasses it), alternating, the best of three runs each;
//! 2. reads: the floor's station list of 30, through the stack, against limit 1;
//! 3. start+stop pairs on their own stations (after `--warmup` seconds of them and an ANALYZE, as autovacuum gives a
//!    deployment that has been running), then every device command delivered to its plug by the bridges;
//! 4. a mix: floor and dashboard reads, sessions started, extended and stopped, powerbank rentals, patron app calls;
//!
//! with live subscriptions open throughout. Finally the ledger: each station's regular paid exactly what the stops of
//! their sessions charged.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use switchyard_tests::shelly_fake::ShellyFake;
use switchyard_tests::{bench_arg as arg, cpu, with_database};

const DB: &str = "switchyard_bench_load";
const JWT: &str = "bench-secret-bench-secret-bench-secret-00";
const STATIONS_PER_VENUE: usize = 30;
const FUNDS: i64 = 1_000_000_000;

/// Latencies of one kind of request.
#[derive(Default)]
struct Timings(Vec<Duration>);

impl Timings {
    fn ms(&mut self, p: f64) -> f64 {
        self.0.sort();
        match self.0.len() {
            0 => 0.0,
            n => self.0[((n as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0,
        }
    }

    fn line(&mut self, what: &str, seconds: f64) -> String {
        format!(
            "{what:<24} {:>7} in {seconds:.1} s = {:>6.0}/s   p50 {:>5.1} ms   p99 {:>5.1} ms",
            self.0.len(),
            self.0.len() as f64 / seconds,
            self.ms(0.50),
            self.ms(0.99)
        )
    }
}

/// `--statements N`: where Postgres spends a phase, from `pg_stat_statements` (the server must load it:
/// `PG_EXTRA_OPTS="-c shared_preload_libraries=pg_stat_statements"` when `dev.sh` starts its cluster). Each phase
/// starts from zero and ends with its `N` costliest statements (execution and planning), per unit of the phase's work.
struct Statements {
    db: sqlx::PgPool,
    top: i64,
}

impl Statements {
    async fn new(db: &sqlx::PgPool, top: i64) -> anyhow::Result<Option<Self>> {
        if top <= 0 {
            return Ok(None);
        }
        sqlx::query("create extension if not exists pg_stat_statements")
            .execute(db)
            .await?;
        sqlx::query("select 1 from pg_stat_statements limit 1")
            .execute(db)
            .await
            .context("--statements needs Postgres started with shared_preload_libraries=pg_stat_statements")?;
        Ok(Some(Self {
            db: db.clone(),
            top,
        }))
    }

    async fn reset(this: &Option<Self>) -> anyhow::Result<()> {
        if let Some(s) = this {
            sqlx::query("select pg_stat_statements_reset()")
                .execute(&s.db)
                .await?;
        }
        Ok(())
    }

    /// The phase's statements: all of them, then the costliest, each per `unit` (`units` of them were done).
    async fn print(this: &Option<Self>, units: usize, unit: &str) -> anyhow::Result<()> {
        let Some(s) = this else { return Ok(()) };
        let per = units.max(1) as f64;
        let rows: Vec<(i64, f64, f64, String)> = sqlx::query_as(
            "select calls, total_exec_time, total_plan_time,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 150)
             from pg_stat_statements
             where dbid = (select oid from pg_database where datname = current_database())
             order by total_exec_time + total_plan_time desc",
        )
        .fetch_all(&s.db)
        .await?;
        let calls: i64 = rows.iter().map(|r| r.0).sum();
        let exec: f64 = rows.iter().map(|r| r.1).sum();
        let plan: f64 = rows.iter().map(|r| r.2).sum();
        println!(
            "  statements       {:.1} a {unit}, {:.2} ms executing and {:.2} ms planning a {unit}; the costliest:",
            calls as f64 / per,
            exec / per,
            plan / per
        );
        for (calls, exec, plan, query) in rows.iter().take(s.top as usize) {
            println!(
                "    {:>6.2}/{unit} {:>7.3} ms a call {:>6.3} ms a {unit}  {query}",
                *calls as f64 / per,
                (exec + plan) / (*calls).max(1) as f64,
                (exec + plan) / per
            );
        }
        Ok(())
    }
}

/// The binaries next to this one (`cargo build --release --bins` puts them together).
fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?
        .parent()
        .context("no build folder")?
        .join(name);
    ensure!(
        path.exists(),
        "{} is missing: build with `cargo build --release --bins`",
        path.display()
    );
    Ok(path)
}

/// Starts `command` and reads its stdout until a line contains `marker`: the rest of that line.
async fn started(mut command: Command, marker: &str) -> anyhow::Result<(Child, String)> {
    let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some((_, rest)) = line.split_once(marker) {
            let rest = rest.trim().to_owned();
            // Keep draining, so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, rest));
        }
    }
    anyhow::bail!("the process ended before printing {marker:?}")
}

/// The settings every service of the deployment shares.
fn service(name: &str, app_url: &str, redis: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(binary(name)?);
    command
        .env("APP_DATABASE_URL", app_url)
        .env("JWT_SECRET", JWT)
        .env("REDIS_URL", redis)
        .env("RUST_LOG", "warn")
        .envs(switchyard_tests::PRODUCTION);
    Ok(command)
}

/// A client of the deployment: the balancer's URL and an HTTP client.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, request: reqwest::RequestBuilder, expect: u16) -> anyhow::Result<Value> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(
            status == expect,
            "answered {status} (expected {expect}): {body}"
        );
        Ok(body)
    }

    async fn get(&self, path: &str, token: &str) -> anyhow::Result<Value> {
        self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
            200,
        )
        .await
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Value,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        self.send(request, expect).await
    }

    async fn gql(&self, token: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body = self
            .post(
                "/graphql",
                token,
                None,
                json!({"query": query, "variables": variables}),
                200,
            )
            .await?;
        ensure!(body.get("errors").is_none(), "{body}");
        Ok(body["data"].clone())
    }
}

fn id(value: &Value) -> anyhow::Result<Uuid> {
    Ok(value.as_str().context("an id")?.parse()?)
}

/// `pgbench` with `script` for `seconds` over `clients` connections to `url`: transactions per second.
async fn pgbench(url: &str, script: &Path, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let pgbench = std::env::var("PGBENCH").unwrap_or_else(|_| "pgbench".into());
    let out = Command::new(&pgbench)
        .args(["-n", "-M", "prepared", "-j", "2", "-c"])
        .arg(clients.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(script)
        .arg(url)
        .output()
        .await
        .with_context(|| format!("running {pgbench}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}

/// The floor's station list: all of `venue`'s stations, each one of `expected`.
async fn list_stations(
    api: &Api,
    token: &str,
    venue: Uuid,
    expected: &HashSet<Uuid>,
) -> anyhow::Result<()> {
    let body = api
        .get(&format!("/api/v1/stations?venue_id={venue}"), token)
        .await?;
    let stations = body["stations"].as_array().context("stations")?;
    ensure!(
        stations.len() == expected.len(),
        "{} stations",
        stations.len()
    );
    for s in stations {
        ensure!(expected.contains(&id(&s["id"])?), "a stranger: {s}");
        ensure!(s["venue_id"] == json!(venue), "another venue's: {s}");
    }
    Ok(())
}

/// One session on `station`: started (30 minutes), extended by 15 when `extend`, stopped: what it cost.
async fn session(
    api: &Api,
    token: &str,
    station: Uuid,
    patron: Uuid,
    extend: Option<&mut Timings>,
    times: (&mut Timings, &mut Timings),
) -> anyhow::Result<i64> {
    let at = Instant::now();
    let key = Uuid::new_v4().to_string();
    let body = json!({"station_id": station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"});
    let s = api
        .post("/api/v1/sessions/start", token, Some(&key), body, 201)
        .await?;
    ensure!(
        s["station_id"] == json!(station)
            && s["patron_id"] == json!(patron)
            && s["status"] == "active",
        "start: {s}"
    );
    times.0 .0.push(at.elapsed());
    let session = id(&s["session_id"])?;
    if let Some(extend) = extend {
        let at = Instant::now();
        let request = api
            .http
            .put(format!("{}/api/v1/sessions/{session}/extend", api.base))
            .bearer_auth(token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&json!({"minutes": 15}));
        let e = api.send(request, 200).await?;
        ensure!(e["duration_minutes"] == 45, "extend: {e}");
        extend.0.push(at.elapsed());
    }
    let at = Instant::now();
    let response = api
        .http
        .delete(format!("{}/api/v1/sessions/{session}", api.base))
        .bearer_auth(token);
    let e = api.send(response, 200).await?;
    ensure!(
        e["session_id"] == json!(session) && e["status"] != "active" && e["ended_at"].is_string(),
        "stop: {e}"
    );
    times.1 .0.push(at.elapsed());
    e["charged_amount"].as_i64().context("charged_amount")
}

/// The venue's dashboard: a tile for each of its stations.
async fn dashboard(api: &Api, token: &str, venue: Uuid) -> anyhow::Result<()> {
    let d = api
        .get(&format!("/api/v1/dashboard?venue_id={venue}"), token)
        .await?;
    let tiles = d["venues"][0]["stations"].as_array().map(Vec::len);
    ensure!(tiles == Some(STATIONS_PER_VENUE), "dashboard: {d}");
    Ok(())
}

/// At the counter: staff rent a powerbank from `cabinet` to `patron` and take it back there.
async fn rental(
    api: &Api,
    token: &str,
    patron: Uuid,
    cabinet: Uuid,
    times: (&mut Timings, &mut Timings),
) -> anyhow::Result<()> {
    let at = Instant::now();
    let quote = json!({"user_id": patron, "station_id": cabinet});
    let q = api
        .post("/api/v1/rentals/quote", token, None, quote, 200)
        .await?;
    let key = Uuid::new_v4().to_string();
    let start = json!({"quote_id": q["quote_id"]});
    let r = api
        .post("/api/v1/rentals/start", token, Some(&key), start, 200)
        .await?;
    ensure!(
        r["status"] == "ACTIVE" && r["powerbank_id"].is_string(),
        "rental: {r}"
    );
    times.0 .0.push(at.elapsed());
    let at = Instant::now();
    let key = Uuid::new_v4().to_string();
    let stop = json!({"rental_id": r["rental_id"], "station_id": cabinet});
    let s = api
        .post("/api/v1/rentals/stop", token, Some(&key), stop, 200)
        .await?;
    ensure!(s["status"] == "FINISHED", "return: {s}");
    times.1 .0.push(at.elapsed());
    Ok(())
}

/// The patron app's home screen: the wallet and the latest sessions.
async fn patron_app(api: &Api, token: &str) -> anyhow::Result<()> {
    let query =
        "{ myWallet(currency: \"EUR\", limit: 5) { balance debt } mySessions(limit: 5) { id } }";
    let me = api.gql(token, query, json!({})).await?;
    ensure!(
        me["myWallet"]["balance"].is_i64() && me["mySessions"].is_array(),
        "patron app: {me}"
    );
    Ok(())
}

/// One client of the mix: its role, its timings (the request, or a session's start, extend and stop, or a
/// rental's start and return), and for a session client its station (by index) and what its sessions charged.
struct MixClient {
    role: &'static str,
    timings: [Timings; 3],
    station: usize,
    charged: i64,
}

struct Floor {
    api: Api,
    token: String,
    tenant: Uuid,
    venues: [Uuid; 2],
    stations: [Vec<Uuid>; 2],
    cabinet: Uuid,
    /// One regular per station, in the order of `stations`.
    patrons: Vec<Uuid>,
    app_token: String,
    app_patron: Uuid,
    plugs: Vec<ShellyFake>,
}

/// The tenant, through the API: two venues of 30 plugged PCs each, a cabinet of 8 powerbanks, a 10/min tariff, a
/// funded regular for each PC and a funded patron app login for rentals.
async fn floor(api: Api) -> anyhow::Result<Floor> {
    let owner = json!({"organization": "Load", "email": "owner@example.com", "password": "many-replicas-passphrase-9"});
    api.post("/api/v1/auth/signup", "", None, owner.clone(), 202)
        .await?;
    let login = api
        .post(
            "/api/v1/auth/login",
            "",
            None,
            json!({"email": owner["email"], "password": owner["password"]}),
            200,
        )
        .await?;
    let token = login["access_token"].as_str().context("token")?.to_owned();
    let tenant = id(&login["tenant_id"])?;
    let gql = |q: &'static str, v: Value| {
        let (api, token) = (api.clone(), token.clone());
        async move { api.gql(&token, q, v).await }
    };
    let tariff = gql(
        r#"mutation { createTariff(name: "Play", terms: {currency: "EUR", perMinute: 10}) { id } }"#,
        json!({}),
    )
    .await?["createTariff"]["id"]
        .clone();
    let mut venues = [Uuid::nil(); 2];
    let mut stations: [Vec<Uuid>; 2] = Default::default();
    let mut plugs = Vec::new();
    for (v, name) in ["Arcade", "Hall"].into_iter().enumerate() {
        venues[v] = id(&gql(
            "mutation($n: String!) { createVenue(input: {name: $n, timezone: \"Europe/Berlin\", currency: \"EUR\"}) { id } }",
            json!({"n": name}),
        )
        .await?["createVenue"]["id"])?;
        gql(
            "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
            json!({"t": tariff, "v": venues[v]}),
        )
        .await?;
        for i in 0..STATIONS_PER_VENUE {
            let plug = ShellyFake::start().await;
            stations[v].push(id(&gql(
                "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
                json!({"i": {"venueId": venues[v], "name": format!("{name} PC-{i:02}"), "kind": "PC",
                             "control": "SHELLY", "controlSettings": {"host": plug.host(), "generation": 2}}}),
            )
            .await?["createStation"]["id"])?);
            plugs.push(plug);
        }
    }
    let cabinet = id(&gql(
        "mutation($v: UUID!) { createStation(input: {venueId: $v, name: \"Cabinet\", kind: POWERBANK_CABINET,
           control: MANUAL, connectorCount: 8}) { id } }",
        json!({"v": venues[1]}),
    )
    .await?["createStation"]["id"])?;
    let powerbank = gql(
        "mutation { createTariff(name: \"Powerbank\", terms: {currency: \"EUR\", perMinute: 1, deposit: 500}) { id } }",
        json!({}),
    )
    .await?["createTariff"]["id"]
        .clone();
    gql(
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v, stationKind: POWERBANK_CABINET}) { id } }",
        json!({"t": powerbank, "v": venues[1]}),
    )
    .await?;
    for slot in 1..=8 {
        gql(
            "mutation($s: UUID!, $n: Int!, $l: String!) { dockAsset(stationId: $s, slot: $n, label: $l) { slot } }",
            json!({"s": cabinet, "n": slot, "l": format!("pb-{slot:03}")}),
        )
        .await?;
    }
    let mut patrons = Vec::new();
    for i in 0..2 * STATIONS_PER_VENUE {
        patrons.push(id(&gql(
            "mutation($n: String!) { createPatron(input: {displayName: $n}) { id } }",
            json!({"n": format!("Regular {i}")}),
        )
        .await?["createPatron"]["id"])?);
    }
    let app = api
        .post(
            "/api/v1/auth/patron/signup",
            "",
            None,
            json!({"tenant_id": tenant, "display_name": "App user", "email": "rider@example.com",
                   "password": "app-user-passphrase-1"}),
            201,
        )
        .await?;
    let app_token = app["access_token"]
        .as_str()
        .context("app token")?
        .to_owned();
    let app_patron = id(&api
        .gql(&app_token, "{ myProfile { id } }", json!({}))
        .await?["myProfile"]["id"])?;
    for p in patrons.iter().chain([&app_patron]) {
        gql(
            "mutation($p: UUID!, $v: UUID!, $a: Int!, $k: String!) { topUpCash(patronId: $p, venueId: $v, amount: $a, idempotencyKey: $k) { id } }",
            json!({"p": p, "v": venues[0], "a": FUNDS, "k": format!("fund-{p}")}),
        )
        .await?;
    }
    Ok(Floor {
        api,
        token,
        tenant,
        venues,
        stations,
        cabinet,
        patrons,
        app_token,
        app_patron,
        plugs,
    })
}

/// Runs `clients` copies of `work` (given the client's number) until `seconds` have passed: what each returned.
async fn for_a_while<F, Fut, T>(
    clients: usize,
    seconds: u64,
    work: F,
) -> anyhow::Result<(Vec<T>, f64)>
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(work(c, deadline)))
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await??);
    }
    Ok((out, started.elapsed().as_secs_f64()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let readers = arg("clients", 16) as usize;
    let pairs_clients = (arg("session-clients", 32) as usize).min(2 * STATIONS_PER_VENUE);
    let seconds = arg("seconds", 15);
    let warmup = arg("warmup", 3);
    let subscribers = arg("subscribers", 20) as usize;
    let top_statements = arg("statements", 0) as i64;
    let owner_url = with_database(&std::env::var("DATABASE_URL")?, DB);
    let app_url = with_database(&std::env::var("APP_DATABASE_URL")?, DB);
    let redis =
        std::env::var("REDIS_URL").context("REDIS_URL (the replicas' wake-ups) is required")?;
    if sqlx::Postgres::database_exists(&owner_url).await? {
        sqlx::Postgres::drop_database(&owner_url).await?;
    }
    sqlx::Postgres::create_database(&owner_url).await?;
    let db = sqlx::PgPool::connect(&owner_url).await?;
    switchyard_core::db::migrate(&db).await?;
    let statements = Statements::new(&db, top_statements).await?;
    // `--generic-plans 1`: an experiment, every statement of the app role on its connection's kept plan (as the
    // charger path does per transaction), to see what planning costs.
    if arg("generic-plans", 0) == 1 {
        sqlx::query(&format!(
            "alter role switchyard_app in database {DB} set plan_cache_mode = force_generic_plan"
        ))
        .execute(&db)
        .await?;
        println!("experiment         plan_cache_mode = force_generic_plan for the app role");
    }

    // The deployment.
    let mut apis = Vec::new();
    let mut upstreams: Vec<SocketAddr> = Vec::new();
    for _ in 0..2 {
        let mut command = service("switchyard", &app_url, &redis)?;
        command
            .arg("serve")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("DB_MAX_CONNECTIONS", "20")
            // One tenant driving the API as hard as it can: no rate limits in the way.
            .env("AUTH_RATE_BURST", "100000")
            .env("RATE_BURST", "100000000")
            .env("TENANT_MAX_CONCURRENT_REQUESTS", "100000")
            // 30 stations a venue, each starting and stopping sessions several times a second, are far busier than
            // a real floor: the bridges' frames per second are allowed for it.
            .env("EDGE_MAX_FRAMES_PER_SEC", "10000");
        let (child, url) = started(command, "listening on ").await?;
        upstreams.push(url.trim_start_matches("http://").parse()?);
        apis.push(child);
    }
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut command = service("switchyard-workers", &app_url, &redis)?;
        command.env("WORKER_METRICS_ADDR", "127.0.0.1:0");
        workers.push(command.stdout(Stdio::null()).kill_on_drop(true).spawn()?);
    }
    let front = switchyard_tests::proxy::balancer(upstreams.clone()).await?;
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        base: format!("http://{front}"),
    };
    eprintln!("2 APIs {upstreams:?} behind {front}, 2 workers; setting up the tenant ...");
    let f = floor(api.clone()).await?;
    let journals = std::env::temp_dir().join(format!("bench-load-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&journals)?;
    let mut bridges = Vec::new();
    for (v, venue) in f.venues.iter().enumerate() {
        let token = f
            .api
            .gql(
                &f.token,
                "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Bridge\") { token } }",
                json!({"v": venue}),
            )
            .await?["createBridge"]["token"]
            .as_str()
            .context("bridge token")?
            .to_owned();
        bridges.push(
            Command::new(binary("edge-bridge")?)
                .env("BRIDGE_CLOUD_URL", format!("ws://{front}/edge/v1/tunnel"))
                .env("BRIDGE_TOKEN", token)
                .env("BRIDGE_JOURNAL", journals.join(format!("bridge-{v}.jsonl")))
                .env("BRIDGE_METRICS_LISTEN", "127.0.0.1:0")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()?,
        );
    }
    let online = Instant::now();
    for venue in f.venues {
        while f
            .api
            .gql(
                &f.token,
                "query($v: UUID!) { bridges(venueId: $v) { online } }",
                json!({"v": venue}),
            )
            .await?["bridges"][0]["online"]
            != true
        {
            ensure!(
                online.elapsed() < Duration::from_secs(60),
                "the bridges did not come online"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Live subscriptions, open throughout, counting what they hear.
    let heard = Arc::new(AtomicU64::new(0));
    for s in 0..subscribers {
        let mut sub = switchyard_tests::subscribe_at(
            &format!("ws://{front}/graphql/ws"),
            &f.token,
            "subscription($v: UUID) { stationChanges(venueId: $v) { seq kind } }",
            json!({"v": f.venues[s % 2]}),
        )
        .await?;
        let heard = heard.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(_)) = sub.next().await {
                heard.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    println!("deployment         2 APIs behind a round-robin balancer, 2 workers, Redis, 2 edge bridges with 60 simulated Shelly plugs, {subscribers} subscriptions open");

    // 1. The limits: the station list's SQL (as `core::stations::list` and `connectors` run it) in one tenant
    // transaction, with row-level security and without.
    let arcade = &f.stations[0];
    let ids = arcade
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let script = journals.join("station-list.sql");
    std::fs::write(
        &script,
        format!(
            "begin;\nselect set_config('app.tenant_id', '{t}', true);\n\
             select id, venue_id, name, kind, control, status, control_settings, location, self_service, archived_at, created_at, updated_at \
             from station where tenant_id = '{t}' and ('{v}'::uuid is null or venue_id = '{v}') and (null::station_kind is null) \
             and (null::station_status is null) and (false or archived_at is null) order by lower(name), id limit 1000;\n\
             select id, station_id, number, status, reported_asset, battery_pct, charging, fault, reported_at \
             from connector where tenant_id = '{t}' and station_id = any('{{{ids}}}'::uuid[]) order by station_id, number;\n\
             commit;\n",
            t = f.tenant,
            v = f.venues[0]
        ),
    )?;
    // Alternating short runs, the best of three each: other work on the machine (the bridges' heartbeats, the
    // workers' ticks) lands on both alike.
    let (mut with_rls, mut bypassing) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        with_rls = with_rls.max(pgbench(&app_url, &script, readers, seconds.div_ceil(3)).await?);
        bypassing =
            bypassing.max(pgbench(&owner_url, &script, readers, seconds.div_ceil(3)).await?);
    }
    println!("pgbench            station list SQL, {readers} connections, best of 3 alternating runs: {with_rls:.0}/s as the app role (RLS), {bypassing:.0}/s as the owner (bypasses RLS)");

    // 2. Reads through the stack.
    let expected: Arc<HashSet<Uuid>> = Arc::new(arcade.iter().copied().collect());
    Statements::reset(&statements).await?;
    let cpu = cpu::by_process();
    let (lists, took) = for_a_while(readers, seconds, |_, deadline| {
        let (api, token, venue, expected) = (
            f.api.clone(),
            f.token.clone(),
            f.venues[0],
            expected.clone(),
        );
        async move {
            let mut t = Timings::default();
            while Instant::now() < deadline {
                let at = Instant::now();
                list_stations(&api, &token, venue, &expected).await?;
                t.0.push(at.elapsed());
            }
            anyhow::Ok(t)
        }
    })
    .await?;
    let mut reads = Timings(lists.into_iter().flat_map(|t| t.0).collect());
    let read_rate = reads.0.len() as f64 / took;
    println!("{}", reads.line("reads (station list)", took));
    println!("  CPU              {}", cpu::since(&cpu));
    Statements::print(&statements, reads.0.len(), "read").await?;

    // 3. Start+stop pairs, each client on its own station.
    let all: Vec<Uuid> = f.stations.iter().flatten().copied().collect();
    let pairs_of = |c: usize, deadline: Instant| {
        let (api, token, station, patron) = (f.api.clone(), f.token.clone(), all[c], f.patrons[c]);
        async move {
            let (mut starts, mut stops, mut charged) = (Timings::default(), Timings::default(), 0);
            while Instant::now() < deadline {
                charged += session(
                    &api,
                    &token,
                    station,
                    patron,
                    None,
                    (&mut starts, &mut stops),
                )
                .await?;
            }
            anyhow::Ok((starts, stops, charged))
        }
    };
    // What each regular (by station) was charged, the warm-up's sessions included.
    let mut charged = vec![0i64; all.len()];
    let mut warm_sessions = 0;
    // A deployment that has been running has statistics on its session and ledger tables (autovacuum analyzes them
    // as they grow); these were empty a moment ago, and plans made now (kept per connection) would scan where they
    // probe a key. The same load runs first for `--warmup` seconds, then everything is analyzed.
    if warmup > 0 {
        let (warm, _) = for_a_while(pairs_clients, warmup, pairs_of).await?;
        for (c, p) in warm.iter().enumerate() {
            charged[c] += p.2;
        }
        sqlx::query("analyze").execute(&db).await?;
        warm_sessions = warm.iter().map(|p| p.1 .0.len()).sum::<usize>();
        println!("warm-up            {warm_sessions} start+stop pairs in {warmup} s, then ANALYZE");
    }
    Statements::reset(&statements).await?;
    let cpu = cpu::by_process();
    let (pairs, took) = for_a_while(pairs_clients, seconds, pairs_of).await?;
    for (c, p) in pairs.iter().enumerate() {
        charged[c] += p.2;
    }
    let mut starts = Timings(pairs.iter().flat_map(|p| p.0 .0.clone()).collect());
    let mut stops = Timings(pairs.iter().flat_map(|p| p.1 .0.clone()).collect());
    let pair_rate = stops.0.len() as f64 / took;
    let mut pair_times = Timings(
        pairs
            .iter()
            .flat_map(|p| p.0 .0.iter().zip(&p.1 .0).map(|(a, b)| *a + *b))
            .collect(),
    );
    println!("{}", starts.line("session starts", took));
    println!("{}", stops.line("session stops", took));
    println!("{}", pair_times.line("start+stop pairs", took));
    println!("  CPU              {}", cpu::since(&cpu));
    Statements::print(&statements, stops.0.len(), "pair").await?;
    // Every command of those sessions reaches its plug through a bridge.
    let drained = Instant::now();
    let (commands, undelivered) = loop {
        let counts: (i64, i64) = sqlx::query_as(
            "select count(*), count(*) filter (where delivered_at is null) from device_command where tenant_id = $1",
        )
        .bind(f.tenant)
        .fetch_one(&db)
        .await?;
        // Delivered is the bridge's word; the plug itself may switch a moment later.
        let all_off = f.plugs.iter().all(|p| !p.is_on());
        if (counts.1 == 0 && all_off) || drained.elapsed() > Duration::from_secs(120) {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    ensure!(
        undelivered == 0,
        "{undelivered} of {commands} device commands undelivered after 120 s"
    );
    ensure!(
        commands == 2 * (warm_sessions + stops.0.len()) as i64,
        "{commands} device commands for {} sessions",
        warm_sessions + stops.0.len()
    );
    let switched: usize = f.plugs.iter().map(|p| p.switches().len()).sum();
    ensure!(
        f.plugs.iter().all(|p| !p.is_on()),
        "a plug was still on 120 s after the last stop"
    );
    println!(
        "device commands    {commands} (one switch_on and one switch_off per session) all delivered through the bridges, {:.1} s after the last stop; the plugs switched {switched} times and are all off",
        drained.elapsed().as_secs_f64()
    );

    // 4. The mix.
    let roles = [
        "floor",
        "floor",
        "floor",
        "floor",
        "dashboard",
        "session",
        "session",
        "session",
        "session",
        "rental",
        "patron app",
        "patron app",
    ];
    // One session client per station of the second venue at most.
    let mix_clients = readers.max(roles.len()).min(STATIONS_PER_VENUE);
    let cpu = cpu::by_process();
    let (mixed, took) = for_a_while(mix_clients, seconds, |c, deadline| {
        let role = roles[c % roles.len()];
        let (api, token, app_token) = (f.api.clone(), f.token.clone(), f.app_token.clone());
        let at = STATIONS_PER_VENUE + c;
        let (venue, expected, station, patron, cabinet, app_patron) = (
            f.venues[0],
            expected.clone(),
            all[at],
            f.patrons[at],
            f.cabinet,
            f.app_patron,
        );
        async move {
            let mut client = MixClient {
                role,
                timings: Default::default(),
                station: at,
                charged: 0,
            };
            let [first, second, third] = &mut client.timings;
            while Instant::now() < deadline {
                let started = Instant::now();
                match role {
                    "floor" => list_stations(&api, &token, venue, &expected).await?,
                    "dashboard" => dashboard(&api, &token, venue).await?,
                    "session" => {
                        let extend = Some(&mut *second);
                        client.charged += session(
                            &api,
                            &token,
                            station,
                            patron,
                            extend,
                            (&mut *first, &mut *third),
                        )
                        .await?;
                        continue;
                    }
                    "rental" => {
                        rental(
                            &api,
                            &token,
                            app_patron,
                            cabinet,
                            (&mut *second, &mut *third),
                        )
                        .await?;
                        continue;
                    }
                    _ => patron_app(&api, &app_token).await?,
                }
                first.0.push(started.elapsed());
            }
            anyhow::Ok(client)
        }
    })
    .await?;
    println!("mix ({mix_clients} clients: {})", roles.join(", "));
    let merged = |role: &str, part: usize| {
        Timings(
            mixed
                .iter()
                .filter(|m| m.role == role)
                .flat_map(|m| m.timings[part].0.clone())
                .collect(),
        )
    };
    for (role, part, what) in [
        ("floor", 0, "  station list"),
        ("dashboard", 0, "  dashboard"),
        ("session", 0, "  session start"),
        ("session", 1, "  session extend"),
        ("session", 2, "  session stop"),
        ("rental", 1, "  rental quote+start"),
        ("rental", 2, "  rental return"),
        ("patron app", 0, "  patron app wallet"),
    ] {
        println!("{}", merged(role, part).line(what, took));
    }
    let mut all_mixed = Timings(
        mixed
            .iter()
            .flat_map(|m| &m.timings)
            .flat_map(|t| t.0.clone())
            .collect(),
    );
    println!("{}", all_mixed.line("  every request", took));
    println!("  CPU              {}", cpu::since(&cpu));
    for m in &mixed {
        charged[m.station] += m.charged;
    }

    // The ledger: every regular paid exactly what the stops of their sessions charged.
    for (patron, charged) in f.patrons.iter().zip(&charged) {
        let wallet = f
            .api
            .gql(
                &f.token,
                "query($p: UUID!) { patron(id: $p) { wallet(currency: \"EUR\") { balance debt } } }",
                json!({"p": patron}),
            )
            .await?;
        ensure!(
            wallet["patron"]["wallet"] == json!({"balance": FUNDS - charged, "debt": 0}),
            "the wallet holds {} after {charged} charged",
            wallet["patron"]["wallet"]
        );
    }
    println!(
        "ledger             each of the {} regulars paid exactly what the stops charged ({} in all)",
        f.patrons.len(),
        charged.iter().sum::<i64>()
    );
    println!(
        "subscriptions      {} events heard by {subscribers} subscribers",
        heard.load(Ordering::Relaxed)
    );
    println!();
    println!(
        "against the limits reads {:.2}x pgbench's {with_rls:.0}/s (target >= 0.8) | start+stop {pair_rate:.0} pairs/s = {:.2}x of 500 | p99 reads {:.1} ms, pairs {:.1} ms (target <= 100) | RLS costs {:.1} % (target <= 5)",
        read_rate / with_rls,
        pair_rate / 500.0,
        reads.ms(0.99),
        pair_times.ms(0.99),
        (1.0 - with_rls / bypassing) * 100.0
    );
    drop((apis, workers, bridges));
    let _ = std::fs::remove_dir_all(&journals);
    Ok(())
}
