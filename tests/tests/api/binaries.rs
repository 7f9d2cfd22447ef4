//! The real binaries: `switchyard migrate` and `serve`, and `switchyard-workers`, started as processes.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{json, Value};
use switchyard_tests::{env_url, TEST_JWT_SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Binaries sit next to the test's `deps/` folder; `./infra/dev.sh test` builds them first.
pub(crate) fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build with `cargo build --bins` (./infra/dev.sh test does)",
        path.display()
    );
    path
}

fn with_database(url: &str, db: &str) -> String {
    format!("{}/{db}", url.rsplit_once('/').unwrap().0)
}

/// Reads the child's stdout until a line contains `marker`, returning the rest of that line after it.
pub(crate) async fn wait_for_line(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some((_, rest)) = line.split_once(marker) {
            return rest.trim().to_owned();
        }
    }
    panic!("the process ended before printing {marker:?}");
}

/// A real `switchyard serve` on the test database, waking its peers through `redis_url` (empty: Postgres
/// `notify`), and the URL it listens on.
pub(crate) async fn api_replica(redis_url: &str) -> (Child, String) {
    let mut child = Command::new(binary("switchyard"))
        .arg("serve")
        .env("APP_DATABASE_URL", env_url("TEST_APP_DATABASE_URL"))
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("REDIS_URL", redis_url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = wait_for_line(&mut child, "listening on ").await;
    (child, url.trim().to_owned())
}

pub(crate) fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn switchyard_migrates_a_fresh_database_serves_it_and_stops_on_sigterm() {
    let db = format!("switchyard_e2e_{}", uuid::Uuid::new_v4().simple());
    let owner_url = with_database(&env_url("TEST_DATABASE_URL"), &db);
    let app_url = with_database(&env_url("TEST_APP_DATABASE_URL"), &db);
    for _ in 0..2 {
        let out = Command::new(binary("switchyard"))
            .arg("migrate")
            .env("DATABASE_URL", &owner_url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }

    let mut serve = Command::new(binary("switchyard"))
        .arg("serve")
        .env("APP_DATABASE_URL", &app_url)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(switchyard_tests::PRODUCTION)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = wait_for_line(&mut serve, "listening on ").await;
    let ready: Value = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");

    // The seeded demo works against the same database through the real binary.
    let out = Command::new(binary("switchyard"))
        .arg("seed-demo")
        .env("APP_DATABASE_URL", &app_url)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("owner@demo.switchyard.test"), "{printed}");
    let login = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "staff@demo.switchyard.test", "password": "Pixel-Floor-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The demo's documents: seed 003's two report kinds and the issuer's legal name.
    let documents: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"query": "{ reportKinds { key } legalDetails { legalName } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        documents["data"],
        serde_json::json!({"reportKinds": [{"key": "diagnostics"}, {"key": "thickness"}],
                           "legalDetails": {"legalName": "Demo Play & Charge GmbH"}}),
        "{documents}"
    );
    let stations: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/stations"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stations["stations"].as_array().unwrap().len(), 9);
    // The demo patron's app login works and sees its own wallet.
    let tenant = printed
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    let patron: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/patron/login"))
        .json(
            &serde_json::json!({"tenant_id": tenant, "email": "patron@demo.switchyard.test",
                                  "password": "Golden-Ticket-42"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(patron["access_token"].as_str().unwrap())
        .json(&serde_json::json!({"query": "{ myProfile { displayName tier rfidTags } myWallet(currency: \"EUR\") { balance } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me["data"],
        serde_json::json!({"myProfile": {"displayName": "Dana Demo", "tier": "gold", "rfidTags": ["04A1B2C3"]},
                           "myWallet": {"balance": 5000}})
    );
    let again = Command::new(binary("switchyard"))
        .arg("seed-demo")
        .env("APP_DATABASE_URL", &app_url)
        .env("JWT_SECRET", TEST_JWT_SECRET)
        .output()
        .await
        .unwrap();
    assert!(again.status.success(), "seeding twice is fine");

    sigterm(&serve);
    let status = serve.wait().await.unwrap();
    assert!(
        status.success(),
        "serve exits cleanly on SIGTERM: {status:?}"
    );

    let admin = sqlx::PgPool::connect(&env_url("TEST_DATABASE_URL"))
        .await
        .unwrap();
    sqlx::query(&format!("drop database {db} with (force)"))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_workers_binary_runs_its_loop_exposes_metrics_and_stops_on_sigterm() {
    // Its own database: the real billing tick must not bill other tests' sessions.
    let database = switchyard_tests::fresh_database().await;
    let mut workers = Command::new(binary("switchyard-workers"))
        .env("APP_DATABASE_URL", &database.app_url)
        .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
        .env("WORKER_POLL_MS", "10")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let metrics_url = wait_for_line(&mut workers, "metrics on ").await;
    // Bounded by time, not by attempts: other tests may keep the machine busy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while counter(&metrics_url, "worker_passes_total").await < 2.0 {
        assert!(std::time::Instant::now() < deadline, "the job loop runs");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sigterm(&workers);
    let out = workers.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("switchyard-workers stopped"));
}

/// Reads a counter from a Prometheus text page (0 when absent).
async fn counter(url: &str, name: &str) -> f64 {
    switchyard_tests::metric(&switchyard_tests::metrics_page(url).await, name).unwrap_or(0.0)
}

fn spawn_worker(app_url: &str) -> Child {
    Command::new(binary("switchyard-workers"))
        .env("APP_DATABASE_URL", app_url)
        .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
        .env("WORKER_POLL_MS", "10")
        .env("BILLING_BATCH", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_tick_leaves_no_duplicate_and_no_gap() {
    let database = switchyard_tests::fresh_database().await;
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    // 2,000 sessions across 20 tenants, started an hour ago, all due.
    let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
    switchyard_workers::bench::setup(&owner, 20, 100, t0)
        .await
        .unwrap();
    let total: i64 = sqlx::query_scalar("select count(*) from session")
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(total, 2_000);

    // A gate that makes the kill land mid-tick whatever the machine's speed: the session halfway along the order
    // the workers bill in (`sys_due_sessions`) is held locked, so the worker bills the first half, then its
    // transaction for the gate's tenant waits on it, with the second half still due.
    let gated: uuid::Uuid = sqlx::query_scalar(
        "select id from session order by next_tick_at, tenant_id, id offset $1 limit 1",
    )
    .bind(total / 2)
    .fetch_one(&owner)
    .await
    .unwrap();
    // Locked by itself (`for update` with `offset` would lock the rows it skips too).
    let mut gate = owner.begin().await.unwrap();
    sqlx::query("select 1 from session where id = $1 for update")
        .bind(gated)
        .execute(&mut *gate)
        .await
        .unwrap();
    let gate_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *gate)
        .await
        .unwrap();
    let mut first = spawn_worker(&database.app_url);
    let metrics = wait_for_line(&mut first, "metrics on ").await;
    let billed = "billing_sessions_total{outcome=\"billed\"}";
    // Bounded by progress: the worker bills on, or waits on the gate.
    let mut progress = (-1.0, std::time::Instant::now());
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))",
        )
        .bind(gate_pid)
        .fetch_one(&owner)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        let done = counter(&metrics, billed).await;
        if done > progress.0 {
            progress = (done, std::time::Instant::now());
        }
        assert!(
            progress.1.elapsed() < std::time::Duration::from_secs(120),
            "the worker stopped at {done} sessions billed, before the gate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Mid-tick: a worker transaction waits on the gate, sessions before it billed, the rest not.
    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert!(!status.success(), "killed");
    gate.rollback().await.unwrap();
    let (before, after): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where ticks >= 1), count(*) filter (where ticks = 0) from session",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert!(
        before >= 1 && after > 1,
        "killed with {before} sessions billed and {after} not"
    );
    let ticked: i64 = sqlx::query_scalar("select ticks::bigint from session where id = $1")
        .bind(gated)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(ticked, 0, "the gated session was not billed");

    let mut second = spawn_worker(&database.app_url);
    wait_for_line(&mut second, "metrics on ").await;
    // Wait for every session's first tick while billing makes progress (the dead worker's leased batch comes back
    // after 5 s): bounded by progress, not by the clock of a machine the rest of the suite is loading.
    let mut progress = (-1i64, std::time::Instant::now());
    loop {
        let done: i64 = sqlx::query_scalar("select count(*) from session where ticks >= 1")
            .fetch_one(&owner)
            .await
            .unwrap();
        if done == total {
            break;
        }
        if done > progress.0 {
            progress = (done, std::time::Instant::now());
        }
        assert!(
            progress.1.elapsed() < std::time::Duration::from_secs(120),
            "billing stopped at {done} of {total} sessions"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sigterm(&second);
    assert!(second.wait().await.unwrap().success());

    let (ticks, tick_journals, other_ticks, unbalanced): (i64, i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from session where ticks = 1),
                (select count(distinct idempotency_key) from journal where idempotency_key like 'session:%:tick:1'),
                (select count(*) from journal where kind = 'session_charge' and idempotency_key not like 'session:%:tick:1'),
                (select count(*) from (select 1 from journal_entry group by tenant_id, journal_id having sum(amount) <> 0) u)",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(
        (ticks, tick_journals, other_ticks, unbalanced),
        (total, total, 0, 0)
    );
    // Each session's charged amount is what its one journal credited, and covers at least the hour at 10/min.
    let wrong: i64 = sqlx::query_scalar(
        "select count(*) from session s where s.charged_amount < 600 or s.charged_amount <> (
           select coalesce(sum(e.amount), 0) from journal j join journal_entry e
             on e.tenant_id = j.tenant_id and e.journal_id = j.id
           where j.tenant_id = s.tenant_id and j.session_id = s.id and e.amount > 0)",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
}

#[tokio::test]
async fn a_debt_wakes_the_workers_through_notify_long_before_their_next_poll() {
    let w = crate::debts::world(&[]).await;
    let c = crate::rentals::setup(&w.app, 0).await;
    w.save_card(&c, "pm_card_visa").await;
    let (_, r) = w.start(&c, "notify").await;
    let rental: uuid::Uuid = r["rental_id"].as_str().unwrap().parse().unwrap();

    // An hour between polls: after its first pass at start, only a notification can wake this worker in time.
    let mut workers = Command::new(binary("switchyard-workers"))
        .env("APP_DATABASE_URL", &w.database.app_url)
        .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
        .env("WORKER_POLL_MS", "3600000")
        .env("DEBT_CHARGE_STEP", "1000")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let metrics_url = wait_for_line(&mut workers, "metrics on ").await;
    // Wait until the start-up pass is done and the worker listens (its pass counter reached 1).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while counter(&metrics_url, "worker_passes_total").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the worker never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Three hours of use with an empty wallet: 175 of debt, due now.
    w.bill(&c, rental, chrono::Duration::hours(3)).await;
    let debt = || async {
        w.app
            .gql_ok(
                &c.t.access,
                "query($p: UUID!) { patron(id: $p) { wallet(currency: \"EUR\") { debt } } }",
                serde_json::json!({"p": c.patron}),
            )
            .await["patron"]["wallet"]["debt"]
            .as_i64()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while debt().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the notified worker did not collect the debt"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let text = switchyard_tests::metrics_page(&metrics_url).await;
    assert!(
        switchyard_tests::metric(&text, "worker_wakeups_total{cause=\"notify\"}").unwrap_or(0.0)
            >= 1.0,
        "woken by the notification: {text}"
    );
    sigterm(&workers);
    assert!(workers.wait().await.unwrap().success());
}

#[tokio::test]
async fn four_worker_processes_charge_every_tick_of_5000_sessions_exactly_once() {
    let database = switchyard_tests::fresh_database().await;
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    // 5,000 sessions across 50 tenants, started an hour ago; 600/min in 1-second steps, so that every tick
    // (one a second) charges something and writes its journal.
    let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
    switchyard_workers::bench::setup(&owner, 50, 100, t0)
        .await
        .unwrap();
    sqlx::query(
        "update session set terms = terms || '{\"per_minute\": 600, \"billing_step_secs\": 1}'::jsonb",
    )
    .execute(&owner)
    .await
    .unwrap();

    let workers: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(binary("switchyard-workers"))
                .env("APP_DATABASE_URL", &database.app_url)
                .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
                .env("WORKER_POLL_MS", "10")
                .env("BILLING_TICK_SEC", "1")
                .env("BILLING_BATCH", "200")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    // Bounded by progress, not by the clock: the suite shares the two cores, so the three ticks may take long,
    // but billing must keep moving (claims serve the longest-waiting session first, so no session is left out
    // while others are billed again and again).
    let mut progress = (0i64, std::time::Instant::now());
    loop {
        let (least, total): (i32, i64) =
            sqlx::query_as("select min(ticks), sum(ticks)::bigint from session")
                .fetch_one(&owner)
                .await
                .unwrap();
        if least >= 3 {
            break;
        }
        if total > progress.0 {
            progress = (total, std::time::Instant::now());
        }
        assert!(
            progress.1.elapsed() < std::time::Duration::from_secs(120),
            "no tick was billed for two minutes ({total} so far, some session has only {least})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for mut worker in workers {
        sigterm(&worker);
        assert!(worker.wait().await.unwrap().success());
    }

    // Per session: one journal per tick, labelled 1..ticks (no duplicate, no gap), and the charged amount is
    // exactly what those journals credited.
    let (sessions, wrong, unbalanced): (i64, i64, i64) = sqlx::query_as(
        "with per as (
           select s.id, s.ticks, s.charged_amount,
                  count(j.id) as journals,
                  count(distinct j.idempotency_key) as keys,
                  max(split_part(j.idempotency_key, ':', 4)::int) as last,
                  (select coalesce(sum(e.amount), 0) from journal_entry e join journal jj
                     on jj.tenant_id = e.tenant_id and jj.id = e.journal_id
                   where jj.tenant_id = s.tenant_id and jj.session_id = s.id and e.amount > 0) as credited
           from session s
           left join journal j on j.tenant_id = s.tenant_id and j.session_id = s.id and j.kind = 'session_charge'
           group by s.tenant_id, s.id)
         select count(*),
                count(*) filter (where journals <> ticks or keys <> ticks or last <> ticks or credited <> charged_amount),
                (select count(*) from (select 1 from journal_entry group by tenant_id, journal_id having sum(amount) <> 0) u)
         from per",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((sessions, wrong, unbalanced), (5_000, 0, 0));
}

/// Containers have no psql: `migrate` sets the app role's password from APP_ROLE_PASSWORD (quoted safely).
#[tokio::test]
async fn migrate_sets_the_app_roles_password_when_given_one() {
    let database = switchyard_tests::fresh_database().await;
    let migrate = |password: &'static str| {
        let url = database.owner_url.clone();
        async move {
            Command::new(binary("switchyard"))
                .arg("migrate")
                .env("DATABASE_URL", url)
                .env("APP_ROLE_PASSWORD", password)
                .output()
                .await
                .unwrap()
        }
    };
    let out = migrate("short").await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("APP_ROLE_PASSWORD must be at least 16 characters"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The role is cluster-wide: only on the test command's own cluster is it changed (and then reset).
    if std::env::var("TEST_PRIVATE_CLUSTER").as_deref() != Ok("1") {
        return;
    }
    let out = migrate("it's a long pass; drop role x --").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("password is set"));
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    let (scram, roles): (bool, i64) = sqlx::query_as(
        "select (select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'switchyard_app'),
                (select count(*) from pg_roles where rolname like 'switchyard%')",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    sqlx::query("alter role switchyard_app password null")
        .execute(&owner)
        .await
        .unwrap();
    assert!(scram, "the password is stored (hashed)");
    assert_eq!(roles, 2, "the quote was data, not SQL");
}

/// On a managed Postgres the owner is no superuser: a role with `CREATEROLE` that owns the database. `migrate`
/// applies the whole ladder as such a role (the functions go to `switchyard_system`, which is left unable to create
/// in the schema), the app serves money from it, and a second run with nothing pending still puts a role's wrong
/// attribute right.
#[tokio::test]
async fn migrate_runs_as_an_owner_that_is_no_superuser_and_puts_the_roles_right_on_every_run() {
    use futures_util::FutureExt;
    let admin = sqlx::PgPool::connect(&env_url("TEST_DATABASE_URL"))
        .await
        .unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    // Not named `switchyard…`: another test counts the roles so named.
    let role = format!("owner_test_{suffix}");
    let name = format!("switchyard_test_{suffix}");
    for statement in [
        format!("create role {role} login createrole nosuperuser nobypassrls password '{suffix}'"),
        format!("create database {name} owner {role}"),
    ] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    let mut owner_url = url::Url::parse(&env_url("TEST_DATABASE_URL")).unwrap();
    owner_url.set_username(&role).unwrap();
    owner_url.set_password(Some(&suffix)).unwrap();
    owner_url.set_path(&name);
    let outcome = std::panic::AssertUnwindSafe(as_an_owner_that_is_no_superuser(
        &admin,
        owner_url.as_str(),
        &role,
        &name,
    ))
    .catch_unwind()
    .await;
    // The role is cluster-wide (and a member of switchyard_system): gone, whatever the outcome.
    for statement in [
        format!("drop database if exists {name} with (force)"),
        format!("drop role if exists {role}"),
    ] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn as_an_owner_that_is_no_superuser(
    admin: &sqlx::PgPool,
    owner_url: &str,
    role: &str,
    name: &str,
) {
    let migrate = || {
        Command::new(binary("switchyard"))
            .arg("migrate")
            .env("DATABASE_URL", owner_url)
            .output()
    };
    let out = migrate().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let latest = switchyard_core::db::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("latest {latest}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let database = sqlx::PgPool::connect(&with_database(&env_url("TEST_DATABASE_URL"), name))
        .await
        .unwrap();
    let (applied, foreign_tables, definers, misowned, system_creates): (i64, i64, i64, i64, bool) =
        sqlx::query_as(
            "select (select count(*) from _sqlx_migrations where success),
                    (select count(*) from pg_tables where schemaname = 'public' and tableowner <> $1),
                    (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                     where n.nspname = 'public' and p.prosecdef),
                    (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
                     where n.nspname = 'public' and p.prosecdef
                       and p.proowner <> 'switchyard_system'::regrole),
                    has_schema_privilege('switchyard_system', 'public', 'create')",
        )
        .bind(role)
        .fetch_one(&database)
        .await
        .unwrap();
    assert_eq!(applied, switchyard_core::db::MIGRATOR.iter().count() as i64);
    assert_eq!(foreign_tables, 0, "every table is the owner's");
    assert!(definers >= 20, "{definers} security-definer functions");
    assert_eq!(
        misowned, 0,
        "every security-definer function is switchyard_system's"
    );
    assert!(!system_creates, "switchyard_system cannot create in public");

    // The app serves from it: sign-up and sign-in (cross-tenant lookups), a top-up and a session charged.
    let app = switchyard_tests::spawn_app_in(&switchyard_tests::TestDatabase {
        owner_url: owner_url.to_owned(),
        app_url: with_database(&env_url("TEST_APP_DATABASE_URL"), name),
    })
    .await;
    let f = crate::sessions::floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Managed Mo", None).await;
    crate::sessions::top_up(&app, &f, patron, 1_000, "managed-1").await;
    let session =
        crate::sessions::wallet_session(&app, &f.t.access, f.station, patron, Some(30)).await;
    app.gql_ok(
        &f.t.access,
        "mutation($id: UUID!) { stopSession(id: $id) { status } }",
        json!({"id": session}),
    )
    .await;
    let balance = crate::sessions::wallet(&app, &f.t.access, patron).await["balance"]
        .as_i64()
        .unwrap();
    let charged: i64 = sqlx::query_scalar("select charged_amount from session where id = $1")
        .bind(session)
        .fetch_one(&database)
        .await
        .unwrap();
    assert!(charged > 0, "the session was charged");
    assert_eq!(balance, 1_000 - charged);
    drop(app);

    // Nothing pending, an attribute wrong: the next run still puts it right (a cluster-wide role, so only on the
    // test command's own cluster).
    if std::env::var("TEST_PRIVATE_CLUSTER").as_deref() == Ok("1") {
        let _held = switchyard_tests::ROLE_ATTRIBUTES.lock().await;
        sqlx::query("alter role switchyard_app createdb")
            .execute(admin)
            .await
            .unwrap();
        let out = migrate().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let createdb: bool =
            sqlx::query_scalar("select rolcreatedb from pg_roles where rolname = 'switchyard_app'")
                .fetch_one(admin)
                .await
                .unwrap();
        assert!(!createdb, "the second run put the app role right");
    }
    database.close().await;
}

/// Issue 14's failover: six clients start and stop sessions through replica A, each request with its own
/// idempotency key; A is killed (SIGKILL) in the middle, and every client carries on through replica B, sending the
/// request that was in flight again with the same key. Nothing committed is lost or doubled: every start a client
/// saw acknowledged (by A or B) is the one session its key made, replaying any key to B answers the same session,
/// every session is stopped and has its `switch_on` and `switch_off` commands, and the wallet paid exactly what
/// the sessions were charged. The venue's real bridge, its tunnel on A until A dies and then on B, acknowledges
/// every one of those commands: also those A took from the outbox just before it was killed.
#[tokio::test]
async fn an_api_killed_mid_load_loses_no_committed_write_and_no_device_command() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    const CLIENTS: usize = 6;
    const PAIRS: usize = 12;
    const KILL_AFTER: usize = 24;
    const FUNDS: i64 = 1_000_000;

    let app = switchyard_tests::spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Kim", None).await;
    crate::sessions::top_up(&app, &f, patron, FUNDS, "failover-funds").await;
    let mut stations = vec![f.station];
    for i in 1..CLIENTS {
        stations.push(
            app.create_station(&f.t.access, f.venue, &format!("Seat-{i}"))
                .await,
        );
    }

    let redis = env_url("TEST_REDIS_URL");
    let (mut a, a_url) = api_replica(&redis).await;
    let (_b, b_url) = api_replica(&redis).await;
    let a_dead = Arc::new(AtomicBool::new(false));
    let pairs_done = Arc::new(AtomicUsize::new(0));
    let http = reqwest::Client::new();

    // The venue's bridge, through a balancer that dials A while A is up, then B.
    let token = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Failover bridge\") { token } }",
            json!({"v": f.venue}),
        )
        .await["createBridge"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let address =
        |url: &str| -> std::net::SocketAddr { url.trim_start_matches("http://").parse().unwrap() };
    let balancer = crate::edge::failover(vec![address(&a_url), address(&b_url)]).await;
    let journal =
        std::env::temp_dir().join(format!("failover-{}.jsonl", uuid::Uuid::new_v4().simple()));
    let (_stop_bridge, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(edge_bridge::run(
        edge_bridge::Config {
            cloud_url: format!("ws://{balancer}/edge/v1/tunnel"),
            token,
            journal_path: journal.clone(),
            heartbeat: std::time::Duration::from_secs(1),
            reconnect_max: std::time::Duration::from_millis(500),
            agent_listen: None,
            mqtt_url: None,
            credentials_file: None,
            readings: None,
            metrics_listen: None,
            ocpp_listen: None,
            local_keepalive: Default::default(),
        },
        stopped,
    ));
    // Counted in one tenant transaction: (commands, acknowledged), and whether the bridge is online.
    let commands = || async {
        let row: (i64, i64, bool) = sqlx::query_as(
            "select (select count(*) from device_command where tenant_id = $1),
                    (select count(*) from device_command where tenant_id = $1 and acked_at is not null),
                    (select bool_or(online) from bridge where tenant_id = $1)",
        )
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
        row
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while !commands().await.2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the bridge never came online"));

    // Sends `request` (built for a base URL) to A until A is known dead, then to B; a request whose answer never
    // came (the connection died under it) is sent again to B, unchanged.
    async fn send(
        http: &reqwest::Client,
        a_dead: &AtomicBool,
        (a_url, b_url): (&str, &str),
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> (bool, reqwest::StatusCode, Value) {
        if !a_dead.load(Ordering::SeqCst) {
            if let Ok(response) = build(http, a_url).send().await {
                let status = response.status();
                if let Ok(body) = response.json::<Value>().await {
                    return (true, status, body);
                }
            }
            a_dead.store(true, Ordering::SeqCst);
        }
        let response = build(http, b_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("replica B: {e}"));
        let status = response.status();
        (false, status, response.json().await.unwrap_or(Value::Null))
    }

    let mut clients = Vec::new();
    for (i, station) in stations.iter().copied().enumerate() {
        let (http, a_dead, pairs_done) = (http.clone(), a_dead.clone(), pairs_done.clone());
        let (a_url, b_url, token) = (a_url.clone(), b_url.clone(), f.t.access.clone());
        clients.push(tokio::spawn(async move {
            let urls = (a_url.as_str(), b_url.as_str());
            // (key, session id, answered by A)
            let mut acknowledged: Vec<(String, String, bool)> = Vec::new();
            for k in 0..PAIRS {
                let key = format!("failover-{i}-{k}");
                let body = json!({"station_id": station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"});
                let (by_a, status, started) = send(&http, &a_dead, urls, |http, base| {
                    http.post(format!("{base}/api/v1/sessions/start"))
                        .bearer_auth(&token)
                        .header("idempotency-key", &key)
                        .json(&body)
                })
                .await;
                assert_eq!(status, 201, "{key}: {started}");
                let id = started["session_id"].as_str().unwrap_or_else(|| panic!("{started}")).to_owned();
                acknowledged.push((key.clone(), id.clone(), by_a));
                let (_, status, stopped) = send(&http, &a_dead, urls, |http, base| {
                    http.delete(format!("{base}/api/v1/sessions/{id}")).bearer_auth(&token)
                })
                .await;
                assert_eq!(status, 200, "{key}: {stopped}");
                assert_eq!(stopped["status"], "ended", "{stopped}");
                pairs_done.fetch_add(1, Ordering::SeqCst);
            }
            acknowledged
        }));
    }

    // A dies once a third of the work is done, with requests in flight.
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while pairs_done.load(Ordering::SeqCst) < KILL_AFTER {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the clients made no progress through A"));
    a.start_kill().unwrap();
    let exit = a.wait().await.unwrap();
    assert!(!exit.success(), "A was killed: {exit:?}");

    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    assert_eq!(acknowledged.len(), CLIENTS * PAIRS);
    let by_a = acknowledged.iter().filter(|(_, _, a)| *a).count();
    assert!(
        (KILL_AFTER..CLIENTS * PAIRS).contains(&by_a),
        "{by_a} starts answered by A"
    );

    // Replaying every key to B answers the session that key made, whoever answered first.
    for (key, id, _) in &acknowledged {
        let (i, _) = key.trim_start_matches("failover-").split_once('-').unwrap();
        let station = stations[i.parse::<usize>().unwrap()];
        let replay = http
            .post(format!("{b_url}/api/v1/sessions/start"))
            .bearer_auth(&f.t.access)
            .header("idempotency-key", key)
            .json(&json!({"station_id": station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"}))
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), 201, "{key}");
        let body: Value = replay.json().await.unwrap();
        assert_eq!(
            body["session_id"].as_str(),
            Some(id.as_str()),
            "{key}: {body}"
        );
    }

    // The database holds exactly those sessions, each ended, with both of its commands.
    let mut tx = app.tenant_tx(f.t.id).await;
    let rows: Vec<(uuid::Uuid, String, i64, i64, i64)> = sqlx::query_as(
        "select s.id, s.status::text, s.charged_amount,
                (select count(*) from device_command c where c.tenant_id = s.tenant_id and c.session_id = s.id
                   and c.command = 'switch_on'),
                (select count(*) from device_command c where c.tenant_id = s.tenant_id and c.session_id = s.id
                   and c.command = 'switch_off')
         from session s where s.tenant_id = $1",
    )
    .bind(f.t.id)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let mut made: Vec<String> = acknowledged.iter().map(|(_, id, _)| id.clone()).collect();
    made.sort();
    let mut stored: Vec<String> = rows.iter().map(|r| r.0.to_string()).collect();
    stored.sort();
    assert_eq!(stored, made, "one session per acknowledged key, none other");
    for (id, status, _, on, off) in &rows {
        assert_eq!(
            (status.as_str(), *on, *off),
            ("ended", 1, 1),
            "session {id}"
        );
    }
    let charged: i64 = rows.iter().map(|r| r.2).sum();
    let wallet: i64 = sqlx::query_scalar(
        "select coalesce(sum(e.amount), 0)::bigint from journal_entry e
         join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where e.tenant_id = $1 and a.owner_kind = 'patron' and a.owner_id = $2 and a.purpose = 'wallet'",
    )
    .bind(f.t.id)
    .bind(patron)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        wallet,
        FUNDS - charged,
        "the wallet paid what the sessions were charged"
    );
    drop(tx);

    // Every command reached the bridge and was acknowledged, whichever replica wrote it and whichever took it.
    let all = CLIENTS as i64 * PAIRS as i64 * 2;
    let waited = tokio::time::timeout(std::time::Duration::from_secs(180), async {
        loop {
            let (written, acked, _) = commands().await;
            if (written, acked) == (all, all) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    if waited.is_err() {
        let (written, acked, _) = commands().await;
        panic!("{acked} of {written} commands acknowledged, {all} expected");
    }
    let _ = std::fs::remove_file(&journal);
}
