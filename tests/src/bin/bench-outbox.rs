//! `bench-outbox`: how many emails a minute the notification outbox delivers to a local SMTP server. It creates a
//! database `switchyard_bench_outbox` next to `DATABASE_URL`'s (a superuser), migrates it, queues `--count` emails
//! (5,000) across `--tenants` tenants (5) through the outbox's own `enqueue`, then runs `--loops` delivery loops (2,
//! as two worker replicas would) of the workers' own pass (`notify::deliver::run_once`, `--concurrency` messages of a
//! batch at once) against the SMTP server at `SMTP_HOST`/`SMTP_PORT`, and counts the messages the server wrote to
//! `BENCH_MAIL_DIR` (one `.json` per accepted message). `./infra/dev.sh bench outbox` starts the SMTP sink
//! (`tests/mail/smtp_sink.py`) and sets these.
//!
//! The per-tenant sending limit (`NOTIFY_TENANT_PER_MINUTE`, 120 by default) is raised for the run: the figure is the
//! pipeline's throughput, not the limit's.

#![expect(
    clippy::expect_used,
    reason = "a benchmark program: a failed setup step should stop it at once"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use switchyard_core::notify::deliver::{self, Settings, Transports};
use switchyard_core::notify::smtp::{SmtpSettings, SmtpTransport};
use switchyard_core::notify::{enqueue, Channel, Kind, Locale, NewMessage};
use switchyard_core::{Db, TenantId};
use switchyard_tests::bench_arg as arg;
use uuid::Uuid;

fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL");
    format!("{base}/{db}")
}

fn received(folder: &PathBuf) -> usize {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count = arg("count", 5_000) as usize;
    let tenants = arg("tenants", 5).max(1) as usize;
    let loops = arg("loops", 2).max(1) as usize;
    let concurrency = arg("concurrency", 8).max(1) as usize;
    let folder = PathBuf::from(std::env::var("BENCH_MAIL_DIR")?);
    let owner = with_database(&std::env::var("DATABASE_URL")?, "switchyard_bench_outbox");
    let app_url = with_database(
        &std::env::var("APP_DATABASE_URL")?,
        "switchyard_bench_outbox",
    );
    if sqlx::Postgres::database_exists(&owner).await? {
        sqlx::Postgres::drop_database(&owner).await?;
    }
    sqlx::Postgres::create_database(&owner).await?;
    let pool = sqlx::PgPool::connect(&owner).await?;
    switchyard_core::db::migrate(&pool).await?;

    // Queue the messages: `count` session warnings (a short template) to distinct recipients, spread over tenants.
    let db = Db::connect_lazy(&app_url, (loops * (concurrency + 1)).max(4) as u32)?;
    let ids: Vec<TenantId> = (0..tenants).map(|_| TenantId(Uuid::now_v7())).collect();
    for (n, tenant) in ids.iter().enumerate() {
        let mut tx = db.begin_tenant(*tenant).await?;
        sqlx::query("insert into tenant (id, name) values ($1, $2)")
            .bind(tenant)
            .bind(format!("Bench Arcade {n}"))
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
    }
    let queued = Instant::now();
    for (n, tenant) in ids.iter().enumerate() {
        let mut tx = db.begin_tenant(*tenant).await?;
        for i in (n..count).step_by(tenants) {
            enqueue(
                &mut tx,
                NewMessage {
                    event_key: format!("bench:{i}"),
                    channel: Channel::Email,
                    recipient: format!("patron-{i}@bench.test"),
                    kind: Kind::SessionWarning,
                    locale: if i % 2 == 0 { Locale::En } else { Locale::De },
                    data: json!({"name": format!("Patron {i}"), "venue": "Downtown", "station": "PC-07", "minutes": 5}),
                    secret: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
    }
    println!(
        "queued {count} emails across {tenants} tenants in {:.1} s",
        queued.elapsed().as_secs_f64()
    );

    let var = |k: &str| match k {
        "SMTP_FROM_ADDRESS" => {
            Some(std::env::var(k).unwrap_or_else(|_| "bench@switchyard.test".into()))
        }
        _ => std::env::var(k).ok().filter(|v| !v.is_empty()),
    };
    let smtp = SmtpSettings::from_lookup(var)?.expect("SMTP_HOST is set");
    let transports = Transports {
        email: Some(Arc::new(SmtpTransport::new(&smtp)?)),
        ..Transports::default()
    };
    let settings = Settings {
        per_tenant_per_minute: 1_000_000,
        concurrency,
        ..Settings::default()
    };
    let before = received(&folder);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..loops {
        let (db, transports, settings) = (db.clone(), transports.clone(), settings.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = 0;
            loop {
                let pass = deliver::run_once(&db, &transports, &settings, chrono::Utc::now())
                    .await
                    .expect("a delivery pass");
                sent += pass.sent;
                if pass.claimed == 0 {
                    return sent;
                }
            }
        }));
    }
    let mut sent = 0;
    for w in workers {
        sent += w.await?;
    }
    let delivered = started.elapsed();
    // Count at the server: every accepted message is a file there.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut at_sink = received(&folder) - before;
    while at_sink < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        at_sink = received(&folder) - before;
    }
    let elapsed = started.elapsed().max(delivered);
    let (pending, dead): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where status = 'pending'), count(*) filter (where status = 'dead') from notification",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "delivered: {sent} recorded sent by {loops} loop(s) x {concurrency} at once, {at_sink} received by the SMTP server, \
         {pending} pending, {dead} dead, in {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} emails/min at the SMTP server ({:.1} per second)",
        at_sink as f64 / elapsed.as_secs_f64() * 60.0,
        at_sink as f64 / elapsed.as_secs_f64()
    );
    pool.close().await;
    Ok(())
}
