//! `bench-live`: live events over `/graphql/ws`. It creates a database `switchyard_bench_live` next to
//! `DATABASE_URL`'s (a superuser), one tenant and its owner, and runs two real `switchyard serve` processes (release,
//! next to this one) that announce events to each other through Redis when `REDIS_URL` is set, else Postgres
//! `notify`. Then, with raw graphql-transport-ws clients:
//!
//! 1. **latency**: one subscriber on replica B; `--events` events committed one at a time through the outbox (as
//!    the app commits them); each timed from just before its commit to its arrival at the client;
//! 2. **fan-out**: `--staff` subscribers spread over both replicas; `--alerts` `sos.raised` events committed one at
//!    a time; each delivery timed from just before the commit;
//! 3. **idle**: `--idle` subscribed connections held open on replica A; its resident memory before and after.

#![expect(
    clippy::expect_used,
    reason = "a benchmark program: a failed setup step should stop it at once"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::migrate::MigrateDatabase;
use switchyard_core::events::NewEvent;
use switchyard_core::{Db, Role, TenantId};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use switchyard_tests::{bench_arg as arg, with_database};

const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A graphql-transport-ws connection to `addr`, signed in and subscribed to `liveEvents` (acknowledged).
async fn subscriber(addr: &str, token: &str) -> Ws {
    let mut request = format!("ws://{addr}/graphql/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let mut ws = loop {
        match tokio_tungstenite::connect_async(request.clone()).await {
            Ok((ws, _)) => break ws,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string()))
        .await
        .expect("init");
    loop {
        let Some(Ok(Message::Text(text))) = ws.next().await else {
            panic!("no connection_ack");
        };
        if text.contains("connection_ack") {
            break;
        }
    }
    let subscribe = json!({"id": "1", "type": "subscribe",
        "payload": {"query": "subscription { liveEvents { seq kind data } }"}});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("subscribe");
    ws
}

/// Reads `ws` until it ends, recording (event number, arrival) for each event.
fn listen(mut ws: Ws, arrivals: Arc<Mutex<Vec<(i64, Instant)>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let Some(n) = v["payload"]["data"]["liveEvents"]["data"]["n"].as_i64() {
                arrivals.lock().expect("lock").push((n, at));
            }
        }
    })
}

/// Commits events `from..from + count` one at a time, each when all `clients` have it (or 10 s have passed), and
/// returns each delivery's latency from just before its commit.
async fn run(
    db: &Db,
    tenant: TenantId,
    kind: &'static str,
    from: i64,
    count: i64,
    clients: usize,
    arrivals: &Arc<Mutex<Vec<(i64, Instant)>>>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for n in from..from + count {
        let mut tx = db.begin_tenant(tenant).await.expect("begin");
        tx.emit(NewEvent::new(kind, json!({ "n": n, "severity": "high" })));
        let sent = Instant::now();
        tx.commit().await.expect("commit");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<Instant> = arrivals
                .lock()
                .expect("lock")
                .iter()
                .filter(|(m, _)| *m == n)
                .map(|(_, at)| *at)
                .collect();
            if got.len() >= clients || Instant::now() > deadline {
                assert_eq!(
                    got.len(),
                    clients,
                    "event {n} reached {} of {clients} clients in 10 s",
                    got.len()
                );
                latencies.extend(got.into_iter().map(|at| at - sent));
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    format!(
        "{} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events = arg("events", 500) as i64;
    let staff = arg("staff", 500) as usize;
    let alerts = arg("alerts", 50) as i64;
    let idle = arg("idle", 10_000) as usize;
    let owner_url = with_database(&std::env::var("DATABASE_URL")?, "switchyard_bench_live");
    let app_url = with_database(&std::env::var("APP_DATABASE_URL")?, "switchyard_bench_live");
    let redis = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if sqlx::Postgres::database_exists(&owner_url).await? {
        sqlx::Postgres::drop_database(&owner_url).await?;
    }
    sqlx::Postgres::create_database(&owner_url).await?;
    let owner = sqlx::PgPool::connect(&owner_url).await?;
    switchyard_core::db::migrate(&owner).await?;
    let (tenant, user) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("insert into tenant (id, name) values ($1, 'bench')")
        .bind(tenant)
        .execute(&owner)
        .await?;
    sqlx::query(
        "insert into app_user (id, email, password_hash) values ($1, 'owner@bench.test', 'x')",
    )
    .bind(user)
    .execute(&owner)
    .await?;
    sqlx::query("insert into membership (tenant_id, user_id, role) values ($1, $2, 'owner')")
        .bind(tenant)
        .bind(user)
        .execute(&owner)
        .await?;
    let keys = switchyard_core::auth::TokenKeys::new(
        &SecretString::from(SECRET),
        "switchyard",
        "switchyard-api",
        3600,
        3600,
    );
    let token = keys.issue(user, tenant, Role::Owner)?;

    let exe = std::env::current_exe()?;
    let serve = || -> anyhow::Result<tokio::process::Child> {
        Ok(
            tokio::process::Command::new(exe.with_file_name("switchyard"))
                .arg("serve")
                .env("APP_DATABASE_URL", &app_url)
                .env("JWT_SECRET", SECRET)
                .env("ACCESS_TOKEN_TTL_SECS", "900")
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .envs(switchyard_tests::PRODUCTION)
                .env("REDIS_URL", redis.clone().unwrap_or_default())
                .env("DB_MAX_CONNECTIONS", "20")
                .env("RATE_BURST", "100000000")
                .env("SUBSCRIPTIONS_PER_TENANT", "1000000")
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?,
        )
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut child = serve()?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let addr = loop {
            let line = lines
                .next_line()
                .await?
                .expect("the server printed its address");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.trim().trim_start_matches("http://").to_owned();
            }
        };
        replicas.push((child, addr));
    }
    let (a, b) = (replicas[0].1.clone(), replicas[1].1.clone());
    let signals = switchyard_core::signals::Signals::from_url(redis.as_deref())?;
    println!("two API replicas; announcements through {signals:?}");
    let db = Db::connect_lazy(&app_url, 4)?.with_signals(signals);
    let tenant = TenantId(tenant);

    // 1. Latency to one subscriber on the other replica.
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let one = listen(subscriber(&b, &token).await, arrivals.clone());
    // The subscription is open once a first event arrives.
    warm_up(&db, tenant, &arrivals, 1).await;
    let latency = run(&db, tenant, "bench.tick", 1, events, 1, &arrivals).await;
    println!(
        "latency, commit → one subscriber on the other replica: {}",
        summary(latency)
    );
    one.abort();

    // 2. An SOS to many staff clients over both replicas.
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..staff {
        let addr = if i % 2 == 0 { &a } else { &b };
        tasks.push(listen(subscriber(addr, &token).await, arrivals.clone()));
    }
    warm_up(&db, tenant, &arrivals, staff).await;
    let fanout = run(
        &db,
        tenant,
        "sos.raised",
        1_000_000,
        alerts,
        staff,
        &arrivals,
    )
    .await;
    println!(
        "fan-out, an SOS to {staff} staff clients over two replicas: {}",
        summary(fanout)
    );
    for task in tasks {
        task.abort();
    }

    // 3. Idle subscribed connections on one replica.
    let pid = replicas[0].0.id().expect("pid");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut held = Vec::with_capacity(idle);
    let token = Arc::new(token);
    let mut pending = futures_util::stream::iter((0..idle).map(|_| {
        let (a, token) = (a.clone(), token.clone());
        async move { subscriber(&a, &token).await }
    }))
    .buffer_unordered(200);
    while let Some(ws) = pending.next().await {
        held.push(ws);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    println!(
        "idle: {idle} subscribed connections on one API process opened in {opened:.1?}; resident memory {:.1} MiB \
         before, {:.1} MiB after: {:.1} KiB per connection",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / idle as f64
    );
    drop(held);
    Ok(())
}

/// Commits marker events until every one of `clients` has received one (subscriptions open asynchronously).
async fn warm_up(
    db: &Db,
    tenant: TenantId,
    arrivals: &Arc<Mutex<Vec<(i64, Instant)>>>,
    clients: usize,
) {
    for _ in 0..600 {
        let mut tx = db.begin_tenant(tenant).await.expect("begin");
        tx.emit(NewEvent::new("bench.warm_up", json!({ "n": -1 })));
        tx.commit().await.expect("commit");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let warm = arrivals
            .lock()
            .expect("lock")
            .iter()
            .filter(|(n, _)| *n == -1)
            .count();
        if warm >= clients {
            arrivals.lock().expect("lock").clear();
            return;
        }
        arrivals.lock().expect("lock").retain(|(n, _)| *n != -1);
    }
    panic!("the subscribers never heard the warm-up events");
}
