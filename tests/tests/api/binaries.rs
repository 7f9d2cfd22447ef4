//! The real binaries: `switchyard migrate` and `serve`, and `switchyard-workers`, started as processes.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use switchyard_tests::{env_url, TEST_JWT_SECRET};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Binaries sit next to the test's `deps/` folder; `./infra/dev.sh test` builds them first.
fn binary(name: &str) -> PathBuf {
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
async fn wait_for_line(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some((_, rest)) = line.split_once(marker) {
            return rest.trim().to_owned();
        }
    }
    panic!("the process ended before printing {marker:?}");
}

fn sigterm(child: &Child) {
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
        .env("APP_ENV", "production")
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
    let mut passes = 0.0;
    for _ in 0..200 {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        passes = text
            .lines()
            .find_map(|l| l.strip_prefix("worker_passes_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if passes >= 2.0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(passes >= 2.0, "the job loop runs");
    sigterm(&workers);
    let out = workers.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("switchyard-workers stopped"));
}
