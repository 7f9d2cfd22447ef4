//! Switchyard's background workers: a loop that wakes every `WORKER_POLL_MS`, or when Postgres notifies
//! `switchyard_work`, and runs the billing tick (which also
//! ends sessions at their planned end), debt collection (which also settles rentals' card deposit holds), the
//! voiding of rentals whose eject no bridge took in time, the analytics rollups with the owners' daily summaries, the delivery of the notification outbox (email over SMTP),
//! housekeeping every `HOUSEKEEPING_SEC`; it exposes `/healthz` and `/metrics`, and stops cleanly on SIGTERM or
//! Ctrl-C.

pub mod bench;
pub mod billing;
pub mod debts;
pub mod ejects;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use switchyard_core::analytics;
use switchyard_core::notify::{self, deliver::Transports, smtp::SmtpTransport};
use switchyard_core::Db;
use tokio::sync::watch;

/// Session durations (`sessions_duration_seconds`), the buckets of the API's recorder
/// (`switchyard_api::metrics::SESSION_BUCKETS`; the workers do not depend on the API, so the list is repeated here,
/// and `deploy::the_workers_time_sessions_in_the_api_s_buckets` checks that the two agree).
pub const SESSION_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
];

/// Worker settings, from the environment.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub app_database_url: String,
    pub poll_interval: Duration,
    pub metrics_addr: SocketAddr,
    pub billing: billing::Billing,
    pub debts: debts::Debts,
    pub payments: switchyard_core::payments::ProviderSettings,
    /// Tenants' own Stripe accounts (`STRIPE_API_BASE`, `STRIPE_TIMEOUT_MS`, `SECRETS_KEY`): their debts are
    /// collected through them.
    pub payment_accounts: switchyard_core::payments::accounts::AccountSettings,
    pub housekeeping_interval: Duration,
    /// How often the platform-wide gauges of `/metrics` are read from the database (`METRICS_SAMPLE_MS`).
    pub sample_interval: Duration,
    /// How long bridge events (and the planned ends delivered to bridges) are kept; housekeeping deletes older.
    pub bridge_event_retention: chrono::Duration,
    /// How long live events are kept for subscribers that resume (`LIVE_EVENT_WINDOW_SECS`, as the API's).
    pub live_event_window: chrono::Duration,
    /// How the API replicas are woken for new bridge commands: Redis at `REDIS_URL`, else Postgres `notify`.
    pub signals: switchyard_core::signals::Signals,
    /// `APP_ENV=production`: an explicit payment provider and a database role under row-level security, checked
    /// at start.
    pub production: bool,
    /// Delivering the notification outbox (`NOTIFY_*`).
    pub notify: switchyard_core::notify::deliver::Settings,
    /// The SMTP server email goes through (`SMTP_*`); unset, email waits in the outbox.
    pub smtp: Option<switchyard_core::notify::smtp::SmtpSettings>,
    /// The SMS provider (`SMS_*`); unset, SMS waits in the outbox.
    pub sms: Option<switchyard_core::notify::sms::SmsSettings>,
    /// The push providers (`FCM_*`, `APNS_*`); unset, push messages wait in the outbox.
    pub push: Option<switchyard_core::notify::push::PushSettings>,
    /// The analytics rollup pass (`ANALYTICS_BATCH`, `ANALYTICS_TENANTS`).
    pub analytics: switchyard_core::analytics::rollup::Settings,
    /// The document store (`S3_*`) receipt and report PDFs are read from to attach or link them; unset, receipts
    /// go without their PDF and report messages wait.
    pub documents: switchyard_core::documents::StoreSettings,
}

impl WorkerConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let poll_ms: u64 = var("WORKER_POLL_MS")
            .map(|v| {
                v.parse()
                    .context("WORKER_POLL_MS must be a whole number of milliseconds")
            })
            .transpose()?
            .unwrap_or(1000);
        let number = |key: &str, default: i64| -> anyhow::Result<i64> {
            var(key)
                .map(|v| {
                    v.parse()
                        .with_context(|| format!("{key} must be a whole number"))
                })
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let billing = billing::Billing {
            tick: chrono::Duration::seconds(number("BILLING_TICK_SEC", 30)?.clamp(1, 3600)),
            batch: number("BILLING_BATCH", 500)?.clamp(1, 10_000) as i32,
            concurrency: number("BILLING_CONCURRENCY", 4)?.clamp(1, 64) as usize,
        };
        let debts = debts::Debts {
            policy: switchyard_core::payments::collect::Policy {
                step: number("DEBT_CHARGE_STEP", 100)?
                    .clamp(1, switchyard_core::pricing::MAX_AMOUNT),
                retry_base: chrono::Duration::seconds(
                    number("DEBT_RETRY_BASE_SEC", 60)?.clamp(1, 86_400),
                ),
                max_attempts: number("DEBT_MAX_ATTEMPTS", 5)?.clamp(1, 100) as i32,
            },
            batch: number("DEBT_BATCH", 100)?.clamp(1, 10_000) as i32,
            lease_secs: number("DEBT_LEASE_SEC", 120)?.clamp(5, 3600) as i32,
        };
        let production = match var("APP_ENV").as_deref() {
            None | Some("development") => false,
            Some("production") => true,
            Some(other) => {
                anyhow::bail!("APP_ENV must be development or production, not {other:?}")
            }
        };
        if production {
            switchyard_core::payments::ProviderSettings::check_production(var)?;
        }
        let notify = switchyard_core::notify::deliver::Settings {
            batch: number("NOTIFY_BATCH", 100)?.clamp(1, 10_000) as i32,
            lease_secs: number("NOTIFY_LEASE_SEC", 120)?.clamp(5, 3600) as i32,
            max_attempts: number("NOTIFY_MAX_ATTEMPTS", 5)?.clamp(1, 100) as i32,
            retry_base: chrono::Duration::seconds(
                number("NOTIFY_RETRY_BASE_SEC", 30)?.clamp(1, 86_400),
            ),
            per_tenant_per_minute: number("NOTIFY_TENANT_PER_MINUTE", 120)?.clamp(1, 1_000_000),
            link_base: var("NOTIFY_LINK_BASE").unwrap_or_else(|| "http://127.0.0.1:8080".into()),
            concurrency: number("NOTIFY_CONCURRENCY", 8)?.clamp(1, 64) as usize,
        };
        let smtp = switchyard_core::notify::smtp::SmtpSettings::from_lookup(var)?;
        let sms = switchyard_core::notify::sms::SmsSettings::from_lookup(var)?;
        let push = switchyard_core::notify::push::PushSettings::from_lookup(var)?;
        if let Some(smtp) = &smtp {
            // A send must end well before its lease does, or another worker could send the message again.
            if smtp.timeout.as_secs() * 2 > notify.lease_secs as u64 {
                anyhow::bail!(
                    "NOTIFY_LEASE_SEC ({}) must be at least twice SMTP_TIMEOUT_MS ({} ms)",
                    notify.lease_secs,
                    smtp.timeout.as_millis()
                );
            }
        }
        let analytics = switchyard_core::analytics::rollup::Settings {
            batch: number("ANALYTICS_BATCH", 5_000)?.clamp(1, 100_000),
            tenants: number("ANALYTICS_TENANTS", 100)?.clamp(1, 10_000) as i32,
        };
        Ok(Self {
            analytics,
            documents: switchyard_core::documents::StoreSettings::from_lookup(var)?,
            notify,
            smtp,
            sms,
            push,
            production,
            signals: switchyard_core::signals::Signals::from_url(var("REDIS_URL").as_deref())?,
            billing,
            debts,
            payments: switchyard_core::payments::ProviderSettings::from_lookup(var)?,
            payment_accounts: switchyard_core::payments::accounts::AccountSettings::from_lookup(
                var,
            )?,
            housekeeping_interval: Duration::from_secs(
                number("HOUSEKEEPING_SEC", 300)?.clamp(1, 86_400) as u64,
            ),
            sample_interval: Duration::from_millis(
                number("METRICS_SAMPLE_MS", 15_000)?.clamp(10, 3_600_000) as u64,
            ),
            bridge_event_retention: chrono::Duration::days(
                number("BRIDGE_EVENT_RETENTION_DAYS", 30)?.clamp(1, 3650),
            ),
            live_event_window: chrono::Duration::seconds(
                number("LIVE_EVENT_WINDOW_SECS", 900)?.clamp(10, 7 * 86_400),
            ),
            app_database_url: var("APP_DATABASE_URL")
                .context("APP_DATABASE_URL is required (the app role's URL)")?,
            poll_interval: Duration::from_millis(poll_ms.max(10)),
            metrics_addr: var("WORKER_METRICS_ADDR")
                .unwrap_or_else(|| "127.0.0.1:9091".into())
                .parse()
                .context("WORKER_METRICS_ADDR must be an address like 127.0.0.1:9091")?,
        })
    }
}

/// Runs until `stop` turns true. Each wake-up is one pass over due work (none yet) and is counted in
/// `worker_passes_total`.
pub async fn run(config: WorkerConfig, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    // The passes run one after another: one connection per message sent at once or per tenant billed at once
    // (whichever is more), one the wake-up listener keeps, and one to spare.
    let connections = (config.notify.concurrency.max(config.billing.concurrency) as u32 + 2).max(4);
    let db = Db::connect_lazy(&config.app_database_url, connections)?
        .with_signals(config.signals.clone());
    let providers = switchyard_core::payments::accounts::Providers::new(
        config.payments.build()?,
        config.payment_accounts.clone(),
    );
    let transports = transports(&config)?;
    sqlx::query("select 1")
        .execute(db.pool())
        .await
        .context("while connecting to the database")?;
    if config.production {
        db.check_app_role().await?;
    }

    // The sessions the workers end (expired, bought out) are timed in buckets, as the API's: without them the
    // histogram would be exported as a summary, which the dashboards' histogram_quantile cannot read.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("sessions_duration_seconds".into()),
            SESSION_BUCKETS,
        )
        .map_err(|e| anyhow::anyhow!("while setting the histogram buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    let _ = metrics::set_global_recorder(recorder);
    let listener = tokio::net::TcpListener::bind(config.metrics_addr)
        .await
        .context("while binding the metrics port")?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || std::future::ready(handle.render())),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(%addr, "workers started; metrics at /metrics");
    println!("switchyard-workers running; metrics on http://{addr}/metrics");

    // Woken at once when work becomes due (`notify switchyard_work`); the poll is the fallback.
    let mut listener = match sqlx::postgres::PgListener::connect_with(db.pool()).await {
        Ok(mut listener) => match listener.listen("switchyard_work").await {
            Ok(()) => Some(listener),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for work notifications; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for work notifications; polling only");
            None
        }
    };
    let mut interval = tokio::time::interval(config.poll_interval);
    let mut housekeeping = tokio::time::interval(config.housekeeping_interval);
    let mut sampling = tokio::time::interval(config.sample_interval);
    debts::record_attempt(None);
    let stopping = stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = housekeeping.tick() => {
                match db.system().purge_expired(chrono::Utc::now()).await {
                    Ok((keys, quotes)) if keys + quotes > 0 => tracing::info!(keys, quotes, "purged expired keys and quotes"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = ?e, "housekeeping failed"),
                }
                let before = chrono::Utc::now() - config.bridge_event_retention;
                match db.system().purge_bridge_events(before).await {
                    Ok((events, deliveries)) if events + deliveries > 0 => tracing::info!(events, deliveries, "purged old bridge events"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = ?e, "bridge event housekeeping failed"),
                }
                // Kept a little past the resume window, so that a resume at its edge still finds its events.
                let before = chrono::Utc::now() - config.live_event_window - chrono::Duration::minutes(1);
                match db.system().purge_live_events(before).await {
                    Ok(n) if n > 0 => tracing::info!(events = n, "purged old live events"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = ?e, "live event housekeeping failed"),
                }
            }
            _ = sampling.tick() => {
                sample(&db).await;
                settle_silent(&db).await;
                follow_tag_credit(&db).await;
            }
            _ = interval.tick() => drain(&db, &providers, &transports, &config, &stopping).await,
            woken = next_notification(&mut listener) => {
                if let Err(e) = woken {
                    tracing::warn!(error = %e, "lost the notification connection; polling until it is back");
                    tokio::time::sleep(config.poll_interval).await;
                }
                metrics::counter!("worker_wakeups_total", "cause" => "notify").increment(1);
                drain(&db, &providers, &transports, &config, &stopping).await;
            }
        }
    }
    server.await.context("metrics server task")??;
    tracing::info!("workers stopped");
    println!("switchyard-workers stopped");
    Ok(())
}

/// What the workers set offline when it is left online by an API process that stopped without closing its
/// connection: otherwise its "offline" alert would never fire and its stations would show as reachable.
#[derive(Clone, Copy)]
enum Silent {
    /// An edge bridge's tunnel (its venue's stations follow).
    Bridge,
    /// A charger's OCPP connection (its station follows; its calls in flight fail).
    Charger,
}

async fn settle_silent(db: &Db) {
    for what in [Silent::Bridge, Silent::Charger] {
        let (name, found) = match what {
            Silent::Bridge => ("bridge", db.system().silent_bridges(100).await),
            Silent::Charger => ("charger", db.system().silent_chargers(100).await),
        };
        let silent = match found {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, kind = name, "could not look for silent connections");
                continue;
            }
        };
        for (tenant, id) in silent {
            let settled = async {
                let mut tx = db.begin_tenant(switchyard_core::TenantId(tenant)).await?;
                let was = match what {
                    Silent::Bridge => switchyard_core::bridges::silent(&mut tx, id).await?,
                    Silent::Charger => switchyard_core::charging::silent(&mut tx, id).await?,
                };
                tx.commit().await?;
                Ok::<_, switchyard_core::Error>(was)
            };
            match settled.await {
                Ok(true) => {
                    tracing::info!(tenant.id = %tenant, id = %id, kind = name, "a silent connection is offline")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, id = %id, kind = name, "could not set a silent connection offline")
                }
            }
        }
    }
}

/// Brings the credit of the tags in chargers' local lists up to date (`charging::tags::follow_credit`), for every
/// tenant where a patron's money moved across zero since its tags last changed. Run every `METRICS_SAMPLE_MS`.
pub async fn follow_tag_credit(db: &Db) {
    let tenants = match db.system().tag_credit_stale(100).await {
        Ok(tenants) => tenants,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for tags whose credit changed");
            return;
        }
    };
    for tenant in tenants {
        let followed = async {
            let mut tx = db.begin_tenant(switchyard_core::TenantId(tenant)).await?;
            let changed = switchyard_core::charging::tags::follow_credit(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, switchyard_core::Error>(changed)
        };
        match followed.await {
            Ok(0) => {}
            Ok(tags) => {
                metrics::counter!("rfid_tag_credit_changes_total").increment(tags);
                tracing::info!(tenant.id = %tenant, tags, "tags' credit changed in the local lists")
            }
            Err(e) => {
                tracing::warn!(tenant.id = %tenant, error = %e, "could not bring tags' credit up to date")
            }
        }
    }
}

/// Reads the platform-wide gauges (sessions and rentals running, the billing backlog's age, bridges, chargers and
/// PC agents offline, ejects waiting for staff) and this process's pool usage into `/metrics`. Every worker exports the same platform
/// figures; dashboards and alert rules take their `max`.
async fn sample(db: &Db) {
    match db.system().platform_gauges(chrono::Utc::now()).await {
        Ok(g) => {
            metrics::gauge!("sessions_active", "kind" => "session").set(g.sessions_active as f64);
            metrics::gauge!("sessions_active", "kind" => "rental").set(g.rentals_active as f64);
            metrics::gauge!("active_rentals_total").set(g.rentals_active as f64);
            metrics::gauge!("billing_oldest_due_seconds").set(g.billing_oldest_due_seconds);
            metrics::gauge!("edge_bridges_offline").set(g.bridges_offline as f64);
            metrics::gauge!("ocpp_chargers_offline").set(g.chargers_offline as f64);
            metrics::gauge!("agents_offline").set(g.agents_offline as f64);
            metrics::gauge!("edge_ejects_unanswered").set(g.ejects_unanswered as f64);
        }
        Err(e) => tracing::warn!(error = %e, "could not read the platform gauges"),
    }
    let (size, idle, max) = db.pool_usage();
    metrics::gauge!("db_pool_connections", "state" => "open").set(f64::from(size));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "max").set(f64::from(max));
}

async fn next_notification(
    listener: &mut Option<sqlx::postgres::PgListener>,
) -> Result<(), sqlx::Error> {
    match listener {
        Some(listener) => listener.recv().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// The notification transports the settings give: email over SMTP when `SMTP_HOST` is set.
pub fn transports(config: &WorkerConfig) -> anyhow::Result<Transports> {
    let email = match &config.smtp {
        Some(smtp) => {
            let transport = SmtpTransport::new(smtp).context("while setting up SMTP")?;
            tracing::info!(host = %smtp.host, port = smtp.port, "email goes out through SMTP");
            Some(std::sync::Arc::new(transport) as std::sync::Arc<dyn notify::deliver::Transport>)
        }
        None => {
            tracing::warn!("SMTP_HOST is not set: email waits in the outbox, undelivered");
            None
        }
    };
    let sms = match &config.sms {
        Some(sms) => Some(
            std::sync::Arc::new(notify::sms::TwilioSms::new(sms.clone())?)
                as std::sync::Arc<dyn notify::deliver::Transport>,
        ),
        None => None,
    };
    let push = match &config.push {
        Some(push) => Some(
            std::sync::Arc::new(notify::push::PushTransport::new(push.clone())?)
                as std::sync::Arc<dyn notify::deliver::Transport>,
        ),
        None => None,
    };
    Ok(Transports {
        email,
        sms,
        push,
        documents: switchyard_core::documents::Store::new(&config.documents),
    })
}

/// How many overdue ejects one pass voids before the next batch is read.
const EJECT_BATCH: i32 = 100;

/// One wake-up: drain what is due, batch by batch — billing, then debt collection, then rentals whose eject no
/// bridge took in time, then ejects that came to wait for staff (announced), then the analytics rollups and the
/// daily summaries they feed, then notifications.
async fn drain(
    db: &Db,
    providers: &switchyard_core::payments::accounts::Providers,
    transports: &Transports,
    config: &WorkerConfig,
    stopping: &watch::Receiver<bool>,
) {
    metrics::counter!("worker_passes_total").increment(1);
    loop {
        match billing::run_once(db, config.billing, chrono::Utc::now()).await {
            Ok(pass) if pass.more(config.billing.batch) && !*stopping.borrow() => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = ?e, "billing pass failed");
                break;
            }
        }
    }
    loop {
        match debts::run_once(db, providers, config.debts, chrono::Utc::now()).await {
            Ok(claimed) if claimed as i32 == config.debts.batch && !*stopping.borrow() => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = ?e, "debt collection pass failed");
                break;
            }
        }
    }
    loop {
        match ejects::run_once(db, EJECT_BATCH).await {
            Ok(more) if more && !*stopping.borrow() => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = ?e, "overdue eject pass failed");
                break;
            }
        }
    }
    loop {
        match ejects::alert_once(db, EJECT_BATCH).await {
            Ok(more) if more && !*stopping.borrow() => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = ?e, "unanswered eject pass failed");
                break;
            }
        }
    }
    match analytics::rollup::run_once(db, config.analytics).await {
        Ok(_) => {}
        Err(e) => tracing::error!(error = ?e, "analytics rollup pass failed"),
    }
    match analytics::summary::run_once(db, chrono::Utc::now(), config.analytics.batch).await {
        Ok(_) => {}
        Err(e) => tracing::error!(error = ?e, "daily summary pass failed"),
    }
    loop {
        match notify::deliver::run_once(db, transports, &config.notify, chrono::Utc::now()).await {
            Ok(pass) if pass.claimed as i32 == config.notify.batch && !*stopping.borrow() => {
                continue
            }
            Ok(_) => break,
            Err(e) => {
                tracing::error!(error = ?e, "notification pass failed");
                break;
            }
        }
    }
}
