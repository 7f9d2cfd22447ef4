//! `bench-ocpp`: many OCPP 1.6 chargers on one API process, and the same load on the Python baseline.
//!
//! It creates a database `switchyard_bench_ocpp` next to `DATABASE_URL`'s (a superuser), inserts `--chargers`
//! chargers (100 tenants, one venue each; a station of kind `ev_charger`, control `ocpp`, a charger with its
//! password's SHA-256 and its directory entry), runs the real `switchyard serve` binary (release, next to this one),
//! reads its resident memory, connects every charger (HTTP Basic, `ocpp1.6`; BootNotification, and for every fourth
//! charger StartTransaction), reads the memory again, and then:
//!
//! 1. the **fixed load** for `--seconds`: every charger a Heartbeat every 60 s, the chargers in a transaction
//!    MeterValues every 10 s (each charger's first message spread over its interval); every MeterValues is timed
//!    from the CALL sent to its CALLRESULT received;
//! 2. the **ramp**: the chargers in a transaction send MeterValues faster, step by step (`--step-seconds` each,
//!    after 2 s to settle, the rate ×1.5 a step), until the step's MeterValues p99 passes `--p99-ms` (50) or the
//!    server no longer keeps up (fewer than 90 % of the MeterValues asked for are answered in the step); then
//!    `--refine` (3) more steps, each halfway between the highest rate that passed (never below the fixed load) and
//!    the lowest that failed. The highest rate that passed, the fixed load included, is the server's sustainable
//!    rate at that p99 (none when no step held the bound).
//!
//! By default the transactions' tags are unknown, so the transactions are kept but bill nothing. With `--billed 1`
//! each venue also has an energy tariff and each of those tags belongs to a patron with money in the wallet: the
//! transactions are accepted and every reading meters a session, as a real charging network's do; at the end the
//! program checks that every one of those sessions took its readings.
//!
//! Then it does the same against the Python central system of `tests/ocpp/central_system.py` (the `ocpp` package's
//! server example; `SWITCHYARD_OCPP_PYTHON`), unless `--python 0`. A charger sends one CALL at a time and waits for
//! its answer, as OCPP asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::Digest;
use sqlx::migrate::MigrateDatabase;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use switchyard_tests::{bench_arg as arg, cpu, with_database};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const HEARTBEAT: Duration = Duration::from_secs(60);
const METER_EVERY: Duration = Duration::from_secs(10);
/// A CALL not answered within this is counted as failed.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Every CALL any charger sent, and every answer (or CALLERROR) it got, over the whole run: what the watchdog
/// reports.
static CALLS_SENT: AtomicU64 = AtomicU64::new(0);
static CALLS_ANSWERED: AtomicU64 = AtomicU64::new(0);
/// The phase the run is in, when it began, and how long it may take.
static PHASE: Mutex<Option<(String, Instant, Duration)>> = Mutex::new(None);
/// The servers this program started: a watchdog's exit runs no destructors, so it stops them itself.
static SERVERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Remembers a server's process for the watchdog.
fn started(pid: u32) {
    if let Ok(mut s) = SERVERS.lock() {
        s.push(pid);
    }
}

/// Forgets a server's process once it is stopped (its pid may be given to another process).
fn stopped(pid: u32) {
    if let Ok(mut s) = SERVERS.lock() {
        s.retain(|p| *p != pid);
    }
}

/// Enters a phase that should be over within `expected` (the watchdog allows three times that and two minutes).
fn phase(name: impl Into<String>, expected: Duration) {
    let name = name.into();
    if let Ok(mut p) = PHASE.lock() {
        *p = Some((name, Instant::now(), expected));
    }
}

/// A thread of its own, outside the async runtime: when a phase runs far past its time, it says where the run
/// stands (the phase, whether the chargers still send and hear anything) and ends the program, so that a run
/// that stops making progress fails with a diagnosis instead of waiting for ever.
fn watchdog() {
    std::thread::spawn(|| {
        let mut last = (0, 0);
        loop {
            std::thread::sleep(Duration::from_secs(10));
            let calls = (
                CALLS_SENT.load(Ordering::Relaxed),
                CALLS_ANSWERED.load(Ordering::Relaxed),
            );
            let Some((name, since, expected)) = PHASE.lock().ok().and_then(|p| p.clone()) else {
                continue;
            };
            if since.elapsed() > expected * 3 + Duration::from_secs(120) {
                eprintln!(
                    "bench-ocpp: stalled: {name} has run {:.0?} (expected {expected:.0?}); calls sent {} and \
                     answered {} in all ({} and {} in the last 10 s); load average {}",
                    since.elapsed(),
                    calls.0,
                    calls.1,
                    calls.0 - last.0,
                    calls.1 - last.1,
                    loadavg()
                );
                for pid in SERVERS.lock().map(|s| s.clone()).unwrap_or_default() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                std::process::exit(3);
            }
            last = calls;
        }
    });
}

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

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// What the chargers record while a measurement runs.
#[derive(Default)]
struct Stats {
    /// Whether answers are being counted now.
    on: std::sync::atomic::AtomicBool,
    /// MeterValues round trips, in microseconds.
    meter: Mutex<Vec<u32>>,
    /// CALLs answered with a CALLRESULT (all actions).
    answered: AtomicU64,
    /// CALLs answered with a CALLERROR, or not answered in time.
    failed: AtomicU64,
}

struct Window {
    seconds: f64,
    meter: Vec<u32>,
    answered: u64,
    failed: u64,
}

impl Window {
    fn pct(&self, p: f64) -> f64 {
        if self.meter.is_empty() {
            return f64::NAN;
        }
        let i = ((self.meter.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.meter[i]) / 1000.0
    }
    fn rate(&self) -> f64 {
        self.answered as f64 / self.seconds
    }
    fn meter_rate(&self) -> f64 {
        self.meter.len() as f64 / self.seconds
    }
    fn line(&self) -> String {
        format!(
            "{:.0} messages/s answered ({:.0} MeterValues/s), MeterValues round trip p50 {:.1} ms, p99 {:.1} ms, \
             max {:.1} ms over {} MeterValues; {} failed",
            self.rate(),
            self.meter_rate(),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0),
            self.meter.len(),
            self.failed
        )
    }
}

impl Stats {
    fn start(&self) {
        self.meter.lock().map(|mut m| m.clear()).ok();
        self.answered.store(0, Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
        self.on.store(true, Ordering::SeqCst);
    }
    fn stop(&self, seconds: f64) -> Window {
        self.on.store(false, Ordering::SeqCst);
        let mut meter = self
            .meter
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        meter.sort_unstable();
        Window {
            seconds,
            meter,
            answered: self.answered.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
        }
    }
}

/// One simulated charger's fixed facts.
struct Charger {
    index: usize,
    url: String,
    /// `Basic …`, or none (the Python server asks for none).
    authorization: Option<String>,
    in_transaction: bool,
    /// Its transaction must be accepted (a billed one, `--billed 1`), not merely kept.
    billed: bool,
}

async fn connect(charger: &Charger) -> anyhow::Result<Socket> {
    let mut request = charger.url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ocpp1.6".parse()?);
    if let Some(auth) = &charger.authorization {
        request.headers_mut().insert("authorization", auth.parse()?);
    }
    let mut tries = 0;
    loop {
        match tokio_tungstenite::connect_async(request.clone()).await {
            Ok((ws, _)) => return Ok(ws),
            Err(e) if tries >= 50 => return Err(e).context("connect"),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Sends a CALL and waits for its answer (pings are answered by the socket while reading). Ok(Some(payload)) for a
/// CALLRESULT, Ok(None) for a CALLERROR.
async fn call(
    ws: &mut Socket,
    id: &str,
    action: &str,
    payload: Value,
) -> anyhow::Result<Option<Value>> {
    let frame = json!([2, id, action, payload]).to_string();
    ws.send(Message::text(frame)).await?;
    CALLS_SENT.fetch_add(1, Ordering::Relaxed);
    let wait = tokio::time::timeout(ANSWER_WAIT, async {
        while let Some(frame) = ws.next().await {
            let Message::Text(text) = frame? else {
                continue;
            };
            let value: Value = serde_json::from_str(&text)?;
            let kind = value.get(0).and_then(Value::as_u64);
            let same = value.get(1).and_then(Value::as_str) == Some(id);
            match kind {
                Some(3) if same => {
                    CALLS_ANSWERED.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(value.get(2).cloned().unwrap_or(Value::Null)));
                }
                Some(4) if same => {
                    CALLS_ANSWERED.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                _ => {}
            }
        }
        anyhow::bail!("the socket closed")
    })
    .await;
    match wait {
        Ok(answer) => answer,
        Err(_) => Ok(None),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A fraction in [0, 1) that spreads chargers evenly over an interval.
fn spread(index: usize) -> f64 {
    (index as f64 * 0.618_033_988_749_895).fract()
}

/// Connects a charger, boots it (and starts its transaction), reports it ready, then runs the load until aborted.
async fn run_charger(
    charger: Charger,
    connecting: Arc<tokio::sync::Semaphore>,
    ready: Arc<tokio::sync::Semaphore>,
    stats: Arc<Stats>,
    mut period: tokio::sync::watch::Receiver<Duration>,
) -> anyhow::Result<()> {
    let permit = connecting.acquire().await?;
    let mut ws = connect(&charger).await?;
    let boot = json!({"chargePointVendor": "Bench", "chargePointModel": "Sim-1"});
    call(&mut ws, "boot", "BootNotification", boot)
        .await?
        .context("BootNotification refused")?;
    let mut transaction = None;
    if charger.in_transaction {
        let start = json!({
            "connectorId": 1, "idTag": tag(charger.index), "meterStart": 0, "timestamp": now(),
        });
        let answer = call(&mut ws, "start", "StartTransaction", start)
            .await?
            .context("StartTransaction refused")?;
        transaction = answer.get("transactionId").and_then(Value::as_i64);
        anyhow::ensure!(transaction.is_some(), "no transactionId in {answer}");
        let status = answer.pointer("/idTagInfo/status").and_then(Value::as_str);
        anyhow::ensure!(
            !charger.billed || status == Some("Accepted"),
            "the driver's tag was not accepted: {answer}"
        );
    }
    drop(permit);
    ready.add_permits(1);

    let started = tokio::time::Instant::now();
    let mut next_heartbeat = started + HEARTBEAT.mul_f64(spread(charger.index));
    let mut every = *period.borrow_and_update();
    let mut next_meter =
        transaction.map(|_| started + every.mul_f64(spread(charger.index * 7 + 3)));
    let mut register_wh: i64 = 0;
    let mut n: u64 = 0;
    loop {
        let due = next_meter.map_or(next_heartbeat, |m| m.min(next_heartbeat));
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            changed = period.changed(), if transaction.is_some() => {
                if changed.is_err() {
                    // The run is over.
                    return Ok(());
                }
                every = *period.borrow_and_update();
                let now = tokio::time::Instant::now();
                next_meter = Some(now + every.mul_f64(spread(charger.index * 7 + 3 + n as usize)));
                continue;
            }
            frame = ws.next() => match frame {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the server closed the connection"),
            },
        }
        n += 1;
        let id = n.to_string();
        let now_instant = tokio::time::Instant::now();
        let meter = next_meter.is_some_and(|m| m <= now_instant) && transaction.is_some();
        let (action, payload) = if meter {
            register_wh += 20;
            let at = now();
            let payload = json!({
                "connectorId": 1, "transactionId": transaction,
                "meterValue": [{"timestamp": at, "sampledValue": [
                    {"value": register_wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
                ]}],
            });
            ("MeterValues", payload)
        } else {
            ("Heartbeat", json!({}))
        };
        let on = stats.on.load(Ordering::Relaxed);
        let sent = Instant::now();
        let answer = call(&mut ws, &id, action, payload).await?;
        let took = sent.elapsed();
        if on && stats.on.load(Ordering::Relaxed) {
            if answer.is_some() {
                stats.answered.fetch_add(1, Ordering::Relaxed);
                if meter {
                    if let Ok(mut m) = stats.meter.lock() {
                        m.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
                    }
                }
            } else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let after = tokio::time::Instant::now();
        if meter {
            // On schedule; a charger that fell more than an interval behind starts again from now.
            let next = next_meter.map_or(after, |m| m + every);
            next_meter = Some(if next + every < after { after } else { next });
        } else {
            next_heartbeat += HEARTBEAT;
            if next_heartbeat < after {
                next_heartbeat = after;
            }
        }
    }
}

/// The load against one server: connect, memory, fixed load, ramp.
struct Server {
    name: &'static str,
    addr: String,
    path_prefix: &'static str,
    pid: u32,
    /// HTTP Basic per charger index (Switchyard), or none.
    passwords: bool,
    /// The transactions bill sessions (`--billed 1`): each StartTransaction must be accepted.
    billed: bool,
}

struct Outcome {
    sustained: f64,
    sustained_p99: f64,
}

async fn load(
    server: &Server,
    chargers: usize,
    seconds: u64,
    step_seconds: u64,
    p99_ms: f64,
    refine: usize,
) -> anyhow::Result<Outcome> {
    use base64::Engine;
    println!("\n== {} ({chargers} chargers) ==", server.name);
    phase(
        format!("{}: connecting", server.name),
        Duration::from_secs(60 + chargers as u64 / 100),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(server.pid);
    let stats = Arc::new(Stats::default());
    let connecting = Arc::new(tokio::sync::Semaphore::new(200));
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let (period_tx, period_rx) = tokio::sync::watch::channel(METER_EVERY);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(chargers);
    let failures = Arc::new(AtomicU64::new(0));
    for index in 0..chargers {
        let identity = format!("BENCH-{index}");
        let charger = Charger {
            index,
            url: format!("ws://{}{}{identity}", server.addr, server.path_prefix),
            authorization: server.passwords.then(|| {
                let pair = format!("{identity}:{}", password(index));
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }),
            in_transaction: index % 4 == 0,
            billed: server.billed,
        };
        let (connecting, ready, stats, period, failures) = (
            connecting.clone(),
            ready.clone(),
            stats.clone(),
            period_rx.clone(),
            failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = run_charger(charger, connecting, ready.clone(), stats, period).await {
                if failures.fetch_add(1, Ordering::SeqCst) < 5 {
                    eprintln!("charger {index}: {e:#}");
                }
                // Counted as ready so that the run goes on; the failure is reported.
                ready.add_permits(1);
            }
        }));
    }
    let _all = ready.acquire_many(chargers as u32).await?;
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.pid);
    let lost = failures.load(Ordering::SeqCst);
    println!(
        "connected and booted {} chargers ({} in a transaction) in {connect_time:.1?}; {lost} failed",
        chargers,
        chargers.div_ceil(4)
    );
    println!(
        "resident memory: {:.1} MiB before, {:.1} MiB with the chargers connected: {:.1} KiB per connection",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / chargers as f64
    );

    // 1. The fixed load.
    let heartbeat_rate = chargers as f64 / HEARTBEAT.as_secs_f64();
    let transacting = chargers.div_ceil(4);
    let fixed_rate = heartbeat_rate + transacting as f64 / METER_EVERY.as_secs_f64();
    println!(
        "fixed load: heartbeat every 60 s, MeterValues every 10 s on {transacting} chargers (≈{fixed_rate:.0} \
         messages/s), {seconds} s; load average {}",
        loadavg()
    );
    // One full MeterValues interval first, so that every charger is on its schedule.
    phase(
        format!("{}: the fixed load", server.name),
        METER_EVERY + Duration::from_secs(seconds),
    );
    tokio::time::sleep(METER_EVERY).await;
    stats.start();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let fixed = stats.stop(t.elapsed().as_secs_f64());
    println!("fixed load: {}", fixed.line());
    println!(
        "resident memory after the fixed load: {:.1} MiB ({:.1} KiB per connection over idle)",
        rss_kib(server.pid) as f64 / 1024.0,
        rss_kib(server.pid).saturating_sub(before) as f64 / chargers as f64
    );

    // 2. The ramp: MeterValues faster, ×1.5 a step until a step fails; then `refine` steps halve the gap between
    // the last rate that passed and the first that failed, never below the fixed load (the lowest rate the
    // comparison means: under it the heartbeats alone would make the rate). The fixed load counts as a step.
    let mut target = fixed_rate * 1.5;
    let mut sustained = if fixed.failed == 0 && fixed.pct(0.99) <= p99_ms {
        (fixed.rate(), fixed.pct(0.99))
    } else {
        (0.0, f64::NAN)
    };
    let (mut passed, mut failed): (f64, Option<f64>) = (fixed_rate, None);
    let mut refining = 0;
    loop {
        let meter_rate = (target - heartbeat_rate).max(1.0);
        let every = Duration::from_secs_f64(transacting as f64 / meter_rate);
        if every < Duration::from_millis(5) {
            println!("ramp: stopped at {target:.0} messages/s (the client's limit)");
            break;
        }
        period_tx.send(every)?;
        phase(
            format!("{}: the ramp at {target:.0} messages/s", server.name),
            Duration::from_secs(2 + step_seconds),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        stats.start();
        let t = Instant::now();
        let cpu_before = cpu::by_process();
        tokio::time::sleep(Duration::from_secs(step_seconds)).await;
        let w = stats.stop(t.elapsed().as_secs_f64());
        let used = cpu::by_program(&cpu_before);
        let kept_up = w.meter.len() as f64 >= 0.9 * meter_rate * w.seconds;
        let p99 = w.pct(0.99);
        let pass = kept_up && p99 <= p99_ms && w.failed == 0;
        println!(
            "ramp: asked {target:.0} messages/s: {} — {}",
            w.line(),
            if pass {
                "passes"
            } else if !kept_up {
                "does not keep up"
            } else {
                "p99 over the bound"
            }
        );
        let all: f64 = used.iter().map(|(_, s)| s).sum();
        println!(
            "      CPU {:.0} µs a message all told: {}",
            all * 1e6 / (w.rate() * w.seconds).max(1.0),
            used.iter()
                .take(4)
                .map(|(name, s)| format!(
                    "{name} {:.0} µs",
                    s * 1e6 / (w.rate() * w.seconds).max(1.0)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if pass {
            passed = target;
            if w.rate() > sustained.0 {
                sustained = (w.rate(), p99);
            }
        } else {
            failed = Some(target);
        }
        target = match failed {
            None => target * 1.5,
            Some(_) if refining == refine => break,
            Some(failed) => {
                refining += 1;
                (passed + failed) / 2.0
            }
        };
    }
    println!(
        "{}: sustained {:.0} messages/s with MeterValues p99 {:.1} ms (bound {p99_ms} ms); load average {}",
        server.name,
        sustained.0,
        sustained.1,
        loadavg()
    );
    phase(
        format!("{}: stopping", server.name),
        Duration::from_secs(30),
    );
    for task in &tasks {
        task.abort();
    }
    Ok(Outcome {
        sustained: sustained.0,
        sustained_p99: sustained.1,
    })
}

fn password(index: usize) -> String {
    format!("bench-password-{index:08}")
}

/// The database: 100 tenants with a venue each; per charger a station and a charger with its directory entry. With
/// `billed`, each venue's chargers also have an energy tariff, and each charger that starts a transaction has a
/// driver: a patron with its tag and money in the wallet, so its transaction meters a session.
async fn seed(owner_url: &str, app_url: &str, chargers: usize, billed: bool) -> anyhow::Result<()> {
    if sqlx::Postgres::database_exists(owner_url).await? {
        sqlx::Postgres::drop_database(owner_url).await?;
    }
    sqlx::Postgres::create_database(owner_url).await?;
    let owner = sqlx::PgPool::connect(owner_url).await?;
    switchyard_core::db::migrate(&owner).await?;
    let tenants: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    let venues: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "insert into tenant (id, name) select id, 'bench' from unnest($1::uuid[]) as t(id)",
    )
    .bind(&tenants)
    .execute(&owner)
    .await?;
    sqlx::query(
        "insert into venue (tenant_id, id, name, timezone, currency)
         select t, v, 'Charging hub', 'Europe/Berlin', 'EUR' from unnest($1::uuid[], $2::uuid[]) as x(t, v)",
    )
    .bind(&tenants)
    .bind(&venues)
    .execute(&owner)
    .await?;
    let t: Vec<Uuid> = (0..chargers).map(|i| tenants[i % 100]).collect();
    let v: Vec<Uuid> = (0..chargers).map(|i| venues[i % 100]).collect();
    let s: Vec<Uuid> = (0..chargers).map(|_| Uuid::now_v7()).collect();
    let c: Vec<Uuid> = (0..chargers).map(|_| Uuid::now_v7()).collect();
    let ids: Vec<String> = (0..chargers).map(|i| format!("BENCH-{i}")).collect();
    let names: Vec<String> = (0..chargers).map(|i| format!("Charger {i}")).collect();
    let hashes: Vec<Vec<u8>> = (0..chargers)
        .map(|i| sha2::Sha256::digest(password(i).as_bytes()).to_vec())
        .collect();
    sqlx::query(
        "insert into station (tenant_id, id, venue_id, name, kind, control, control_settings)
         select t, s, v, n, 'ev_charger', 'ocpp', jsonb_build_object('charge_point_id', i)
         from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[]) as x(t, s, v, n, i)",
    )
    .bind(&t)
    .bind(&s)
    .bind(&v)
    .bind(&names)
    .bind(&ids)
    .execute(&owner)
    .await?;
    sqlx::query(
        "insert into charger (tenant_id, id, station_id, charge_point_id, password_hash)
         select t, c, s, i, h from unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bytea[])
           as x(t, c, s, i, h)",
    )
    .bind(&t)
    .bind(&c)
    .bind(&s)
    .bind(&ids)
    .bind(&hashes)
    .execute(&owner)
    .await?;
    sqlx::query(
        "insert into charge_point_directory (charge_point_id, holder_tenant_id, charger_id)
         select i, t, c from unnest($1::text[], $2::uuid[], $3::uuid[]) as x(i, t, c)",
    )
    .bind(&ids)
    .bind(&t)
    .bind(&c)
    .execute(&owner)
    .await?;
    owner.close().await;
    if billed {
        drivers(app_url, chargers, &tenants, &venues).await?;
    }
    Ok(())
}

/// Through the product's own functions, as the app role: per tenant an energy tariff (0.40 EUR a kWh) for its venue,
/// and per charger that starts a transaction a patron holding the tag it sends, with 1,000.00 EUR in the wallet.
async fn drivers(
    app_url: &str,
    chargers: usize,
    tenants: &[Uuid],
    venues: &[Uuid],
) -> anyhow::Result<()> {
    use switchyard_core::{patrons, pricing::Terms, tariffs, Actor, Role, TenantId};
    let db = switchyard_core::Db::connect_lazy(app_url, 4)?;
    for (k, (&tenant, &venue)) in tenants.iter().zip(venues).enumerate() {
        let tenant = TenantId(tenant);
        let owner = Actor {
            tenant,
            user_id: Uuid::now_v7(),
            role: Role::Owner,
            request_id: None,
            venues: None,
            client: Default::default(),
        };
        let mut tx = db.begin_tenant(tenant).await?;
        let terms = Terms {
            per_kwh: 40,
            ..Terms::base("EUR")
        };
        let tariff = tariffs::create(&mut tx, &owner, "Bench energy", terms).await?;
        let scope = tariffs::Scope {
            venue_id: venue,
            station_kind: None,
            station_id: None,
        };
        tariffs::assign(&mut tx, &owner, tariff.id, scope).await?;
        for index in (k..chargers).step_by(tenants.len()).filter(|i| i % 4 == 0) {
            let patron = patrons::NewPatron {
                display_name: format!("Driver {index}"),
                email: None,
                phone: None,
                tier: None,
            };
            let patron = patrons::create(&mut tx, &owner, patron, false).await?;
            patrons::add_rfid_tag(&mut tx, &owner, patron.id, &tag(index)).await?;
            let key = format!("bench-{index}");
            patrons::top_up_cash(&mut tx, &owner, patron.id, venue, 100_000, &key).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// With `--billed 1`: every transaction's session is still running and took readings (its energy grew).
async fn metered(owner_url: &str, transactions: usize) -> anyhow::Result<()> {
    let owner = sqlx::PgPool::connect(owner_url).await?;
    let (sessions, metered, wh): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where energy_wh > 0), coalesce(sum(energy_wh), 0)::int8
         from session where status = 'active'",
    )
    .fetch_one(&owner)
    .await?;
    owner.close().await;
    println!(
        "billed: {sessions} sessions running, {metered} of them metered, {:.1} kWh in all",
        wh as f64 / 1000.0
    );
    anyhow::ensure!(
        sessions == transactions as i64 && metered == sessions,
        "expected {transactions} running sessions, every one metered"
    );
    Ok(())
}

/// The tag a charger's transaction starts with (the patron holding it, with `--billed 1`).
fn tag(index: usize) -> String {
    format!("BENCH{index}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let chargers = arg("chargers", 10_000) as usize;
    let seconds = arg("seconds", 60);
    let step_seconds = arg("step-seconds", 10);
    let p99_ms = arg("p99-ms", 50) as f64;
    let python = arg("python", 1) != 0;
    let refine = arg("refine", 3) as usize;
    let billed = arg("billed", 0) != 0;
    println!(
        "bench-ocpp: {chargers} chargers, {seconds} s fixed load, ramp steps of {step_seconds} s, p99 bound \
         {p99_ms} ms, transactions {}; {} cores; load average {}",
        if billed { "billed" } else { "kept, not billed" },
        std::thread::available_parallelism().map_or(0, usize::from),
        loadavg()
    );
    let owner_url = with_database(&std::env::var("DATABASE_URL")?, "switchyard_bench_ocpp");
    let app_url = with_database(&std::env::var("APP_DATABASE_URL")?, "switchyard_bench_ocpp");
    watchdog();
    phase("seeding the database", Duration::from_secs(300));
    seed(&owner_url, &app_url, chargers, billed).await?;

    phase("starting the API", Duration::from_secs(60));
    let exe = std::env::current_exe()?;
    let mut api = tokio::process::Command::new(exe.with_file_name("switchyard"))
        .arg("serve")
        .env("APP_DATABASE_URL", &app_url)
        .env("JWT_SECRET", "bench-secret-bench-secret-bench-secret-00")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(switchyard_tests::PRODUCTION)
        .env("DB_MAX_CONNECTIONS", "20")
        // Thousands of chargers from one address, all at once.
        .env("RATE_BURST", "100000000")
        .env("OCPP_HEARTBEAT_SECS", "60")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = api.id().context("the API's pid")?;
    started(pid);
    let mut lines = tokio::io::BufReader::new(api.stdout.take().context("stdout")?).lines();
    let addr = loop {
        let line = lines
            .next_line()
            .await?
            .context("the API ended before it listened")?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().trim_start_matches("http://").to_owned();
        }
    };
    let switchyard = load(
        &Server {
            name: "Switchyard",
            addr,
            path_prefix: "/ocpp/",
            pid,
            passwords: true,
            billed,
        },
        chargers,
        seconds,
        step_seconds,
        p99_ms,
        refine,
    )
    .await?;
    api.kill().await?;
    stopped(pid);
    if billed {
        phase("checking the billed sessions", Duration::from_secs(60));
        metered(&owner_url, chargers.div_ceil(4)).await?;
    }
    if !python {
        return Ok(());
    }

    let python = std::env::var("SWITCHYARD_OCPP_PYTHON")
        .context("SWITCHYARD_OCPP_PYTHON is not set (./infra/dev.sh bench ocpp sets it)")?;
    phase("starting the Python server", Duration::from_secs(60));
    let mut central = tokio::process::Command::new(python)
        .arg(switchyard_tests::ocpp_peer::peer_script(
            "central_system.py",
        ))
        .args(["--port", "0", "--log-level", "WARNING"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = central.id().context("the Python server's pid")?;
    started(pid);
    let mut lines = tokio::io::BufReader::new(central.stdout.take().context("stdout")?).lines();
    let port = loop {
        let line = lines
            .next_line()
            .await?
            .context("the Python server ended before it listened")?;
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(port) = event.get("port").and_then(Value::as_u64) {
            break port;
        }
    };
    let baseline = load(
        &Server {
            name: "Python ocpp central system",
            addr: format!("127.0.0.1:{port}"),
            path_prefix: "/",
            pid,
            passwords: false,
            billed,
        },
        chargers,
        seconds,
        step_seconds,
        p99_ms,
        refine,
    )
    .await?;
    central.kill().await?;
    stopped(pid);
    println!(
        "\nsustained at MeterValues p99 ≤ {p99_ms} ms: Switchyard {:.0} messages/s (p99 {:.1} ms), Python {:.0} \
         messages/s (p99 {:.1} ms): {}",
        switchyard.sustained,
        switchyard.sustained_p99,
        baseline.sustained,
        baseline.sustained_p99,
        if baseline.sustained > 0.0 {
            format!("{:.1}×", switchyard.sustained / baseline.sustained)
        } else {
            "no ratio (no step of Python's, the fixed load included, held the bound)".into()
        }
    );
    Ok(())
}
