//! `bench-tunnels`: many edge tunnels on one API process. It creates a database `switchyard_bench_tunnels` next to
//! `DATABASE_URL`'s (a superuser), inserts `--tunnels` venues (across 100 tenants), each with a station and a
//! bridge, runs the real `switchyard serve` binary (release, next to this one), reads its resident memory, opens
//! every tunnel (hello, welcome, schedule), reads the memory again, then issues `--commands` device commands one at a
//! time to random venues and times each from the insert to its arrival at that venue's tunnel. The wake-up goes
//! through Redis when `REDIS_URL` is set (as with several replicas), else through Postgres `notify`.

#![expect(
    clippy::expect_used,
    reason = "a benchmark program: a failed setup step should stop it at once"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sha2::Digest;
use sqlx::migrate::MigrateDatabase;
use switchyard_edge_protocol::{decode, encode, Down, Up};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use switchyard_tests::{bench_arg as arg, with_database};

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tunnels = arg("tunnels", 5_000) as usize;
    let commands = arg("commands", 500) as usize;
    let owner_url = with_database(&std::env::var("DATABASE_URL")?, "switchyard_bench_tunnels");
    let app_url = with_database(
        &std::env::var("APP_DATABASE_URL")?,
        "switchyard_bench_tunnels",
    );
    if sqlx::Postgres::database_exists(&owner_url).await? {
        sqlx::Postgres::drop_database(&owner_url).await?;
    }
    sqlx::Postgres::create_database(&owner_url).await?;
    let owner = sqlx::PgPool::connect(&owner_url).await?;
    switchyard_core::db::migrate(&owner).await?;

    // 100 tenants, tunnels / 100 venues each; a Shelly station and a bridge (token `bench-<i>`) per venue.
    let venues: Vec<(Uuid, Uuid, Uuid)> = (0..tunnels)
        .map(|_| (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()))
        .collect();
    let tenants: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let tenant_of = |i: usize| tenants[i % tenants.len()];
    sqlx::query(
        "insert into tenant (id, name) select id, 'bench' from unnest($1::uuid[]) as t(id)",
    )
    .bind(&tenants)
    .execute(&owner)
    .await?;
    let t: Vec<Uuid> = (0..tunnels).map(tenant_of).collect();
    let v: Vec<Uuid> = venues.iter().map(|x| x.0).collect();
    let s: Vec<Uuid> = venues.iter().map(|x| x.1).collect();
    let b: Vec<Uuid> = venues.iter().map(|x| x.2).collect();
    let names: Vec<String> = (0..tunnels).map(|i| format!("Venue {i}")).collect();
    let hashes: Vec<Vec<u8>> = (0..tunnels)
        .map(|i| sha2::Sha256::digest(format!("bench-{i}").as_bytes()).to_vec())
        .collect();
    sqlx::query(
        "insert into venue (tenant_id, id, name, timezone, currency)
         select t, v, n, 'Europe/Berlin', 'EUR' from unnest($1::uuid[], $2::uuid[], $3::text[]) as x(t, v, n)",
    )
    .bind(&t)
    .bind(&v)
    .bind(&names)
    .execute(&owner)
    .await?;
    sqlx::query(
        "insert into station (tenant_id, id, venue_id, name, kind, control, control_settings)
         select t, s, v, 'Plug', 'pc', 'shelly', '{\"host\": \"127.0.0.1:9\", \"generation\": 2}'
         from unnest($1::uuid[], $2::uuid[], $3::uuid[]) as x(t, s, v)",
    )
    .bind(&t)
    .bind(&s)
    .bind(&v)
    .execute(&owner)
    .await?;
    sqlx::query(
        "insert into bridge (tenant_id, id, venue_id, name, token_hash)
         select t, b, v, 'Bridge', h from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bytea[]) as x(t, b, v, h)",
    )
    .bind(&t)
    .bind(&b)
    .bind(&v)
    .bind(&hashes)
    .execute(&owner)
    .await?;

    let exe = std::env::current_exe()?;
    let mut server = tokio::process::Command::new(exe.with_file_name("switchyard"))
        .arg("serve")
        .env("APP_DATABASE_URL", &app_url)
        .env("JWT_SECRET", "bench-secret-bench-secret-bench-secret-00")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(switchyard_tests::PRODUCTION)
        .env("DB_MAX_CONNECTIONS", "20")
        // Thousands of tunnels from one address, all at once.
        .env("RATE_BURST", "100000000")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().expect("pid");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await?
            .expect("the server printed its address");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().trim_start_matches("http://").to_owned();
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);

    let arrived: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(tunnels);
    for i in 0..tunnels {
        let (url, arrived, ready) = (
            format!("ws://{addr}/edge/v1/tunnel"),
            arrived.clone(),
            ready.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut request = url.into_client_request().expect("request");
            request.headers_mut().insert(
                "authorization",
                format!("Bearer bench-{i}").parse().expect("header"),
            );
            let mut ws = loop {
                match tokio_tungstenite::connect_async(request.clone()).await {
                    Ok((ws, _)) => break ws,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let hello = Up::hello("bench");
            ws.send(Message::text(encode(&hello))).await.expect("hello");
            let mut scheduled = false;
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                match decode::<Down>(&text) {
                    Ok(Down::Schedule { .. }) if !scheduled => {
                        scheduled = true;
                        ready.add_permits(1);
                    }
                    Ok(Down::Command { id, .. }) => {
                        arrived.lock().expect("lock").insert(id, Instant::now());
                    }
                    _ => {}
                }
            }
        }));
    }
    let _all = ready.acquire_many(tunnels as u32).await?;
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid);

    // Wake-ups travel as the server's do: Redis pub/sub when REDIS_URL is set, else Postgres notify.
    let signals = switchyard_core::signals::Signals::from_url(
        std::env::var("REDIS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .as_deref(),
    )?;
    println!("wake-ups through {signals:?}");
    let app = switchyard_core::Db::connect_lazy(&app_url, 2)?.with_signals(signals);
    let mut latencies = Vec::with_capacity(commands);
    for k in 0..commands {
        let i = (k * 7919 + 13) % tunnels;
        let id = Uuid::now_v7();
        let sent = Instant::now();
        // As the app writes a command: the outbox row and the venue's wake-up, committed together.
        let mut tx = app.begin_tenant(switchyard_core::TenantId(t[i])).await?;
        sqlx::query(
            "insert into device_command (tenant_id, id, station_id, command, payload) values ($1, $2, $3, 'warn', '{}')",
        )
        .bind(t[i])
        .bind(id)
        .bind(s[i])
        .execute(tx.conn())
        .await?;
        tx.wake_venue(v[i]).await?;
        tx.commit().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = arrived.lock().expect("lock").get(&id) {
                latencies.push(*at - sent);
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "command {k} did not arrive in 10 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    println!("tunnels: {tunnels} open on one API process (hello, welcome, schedule each) in {connect_time:.1?}");
    println!(
        "API resident memory: {:.1} MiB before, {:.1} MiB with the tunnels open: {:.1} KiB per tunnel",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / tunnels as f64
    );
    println!(
        "command delivery (insert → frame at the venue's tunnel), {commands} commands one at a time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    server.start_kill()?;
    for task in tasks {
        task.abort();
    }
    Ok(())
}
