//! Production cannot run as a toy: start-up guards, migrations that enforce the roles, metrics apart from the
//! API, and a database outage answered as `503 unavailable` (never a sign-out).

use std::process::Stdio;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_api::{Config, Server};
use switchyard_tests::proxy::Proxy;
use switchyard_tests::{env_url, metrics_page, spawn_app_with, TEST_JWT_SECRET};
use tokio::process::Command;

use crate::binaries::binary;

fn production_config(app_url: &str) -> anyhow::Result<Config> {
    let mut vars: Vec<(&str, &str)> = switchyard_tests::PRODUCTION.to_vec();
    vars.extend([
        ("APP_DATABASE_URL", app_url),
        ("JWT_SECRET", TEST_JWT_SECRET),
        ("LISTEN_ADDR", "127.0.0.1:0"),
    ]);
    Config::from_lookup(|k| {
        vars.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| (*v).to_owned())
    })
}

#[tokio::test]
async fn production_refuses_a_database_login_that_would_bypass_row_level_security() {
    // The owner URL logs in as a superuser that owns the tables.
    let err = match Server::bind(production_config(&env_url("TEST_DATABASE_URL")).unwrap()).await {
        Ok(_) => panic!("a production API started as a superuser"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("is a superuser")
            && err.contains("owns tables")
            && err.contains("APP_DATABASE_URL"),
        "{err}"
    );
    // The app role passes.
    let server = Server::bind(production_config(&env_url("TEST_APP_DATABASE_URL")).unwrap()).await;
    assert!(server.is_ok(), "the app role is accepted");

    // The workers refuse the same, and a missing payment provider, before doing any work.
    for (url, provider, expected) in [
        (
            env_url("TEST_DATABASE_URL"),
            Some("stripe"),
            "is a superuser",
        ),
        (
            env_url("TEST_APP_DATABASE_URL"),
            None,
            "PAYMENT_PROVIDER set explicitly",
        ),
        (
            env_url("TEST_APP_DATABASE_URL"),
            Some("dev"),
            "PAYMENT_PROVIDER=dev",
        ),
    ] {
        let mut workers = Command::new(binary("switchyard-workers"));
        workers
            .env("APP_ENV", "production")
            .env("APP_DATABASE_URL", &url)
            .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
            .env("STRIPE_SECRET_KEY", "sk_test_unused")
            .env_remove("PAYMENT_PROVIDER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = provider {
            workers.env("PAYMENT_PROVIDER", p);
        }
        let out = workers.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "workers started with {provider:?} on {url}"
        );
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test]
async fn migrations_put_the_roles_right_even_when_they_already_exist() {
    let owner = sqlx::PgPool::connect(&env_url("TEST_DATABASE_URL"))
        .await
        .unwrap();
    // An attribute the app role must not have (harmless to the tests running beside this one).
    let _held = switchyard_tests::ROLE_ATTRIBUTES.lock().await;
    sqlx::query("alter role switchyard_app createdb")
        .execute(&owner)
        .await
        .unwrap();
    let database = switchyard_tests::fresh_database().await;
    let (createdb, bypass, superuser): (bool, bool, bool) = sqlx::query_as(
        "select rolcreatedb, rolbypassrls, rolsuper from pg_roles where rolname = 'switchyard_app'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((createdb, bypass, superuser), (false, false, false));
    let fresh = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    let can_create: bool =
        sqlx::query_scalar("select has_schema_privilege('switchyard_app', 'public', 'create')")
            .fetch_one(&fresh)
            .await
            .unwrap();
    assert!(!can_create, "the app role cannot create objects in public");
}

#[tokio::test]
async fn metrics_can_listen_apart_from_the_api_and_leave_its_port() {
    let app = spawn_app_with(&[("METRICS_LISTEN_ADDR", "127.0.0.1:0")]).await;
    let (status, body) = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    // A request counted on the API shows on the metrics listener.
    app.send(Method::GET, "/healthz", None, None).await;
    let metrics = app.metrics_addr.expect("a metrics listener");
    let text = metrics_page(&format!("http://{metrics}/metrics")).await;
    assert!(text.contains("db_pool_connections"), "{text}");
    assert!(text.contains("/healthz"), "{text}");

    // In production /metrics is never on the API port.
    let prod = spawn_app_with(&switchyard_tests::PRODUCTION).await;
    let (status, _) = prod.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The test database's app-role URL, reached through `proxy`.
fn through(proxy: &Proxy) -> String {
    let url: url::Url = env_url("TEST_APP_DATABASE_URL").parse().unwrap();
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.addr.port())).unwrap();
    proxied.to_string()
}

async fn postgres_addr() -> std::net::SocketAddr {
    let url: url::Url = env_url("TEST_APP_DATABASE_URL").parse().unwrap();
    let host = url.host_str().unwrap().to_owned();
    tokio::net::lookup_host((host, url.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test]
async fn a_database_outage_answers_503_unavailable_and_everything_resumes_after_it() {
    let proxy = Proxy::start(postgres_addr().await).await;
    let app = spawn_app_with(&[("APP_DATABASE_URL", &through(&proxy)), ("REDIS_URL", "")]).await;
    let t = app.signup().await;
    let venues = "{ venues { id name } }";
    let (status, _) = app
        .send(Method::GET, "/api/v1/stations", Some(&t.access), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    proxy.cut();
    // REST: a signed-in call and a sign-in; neither is a 401 that would log the user out.
    let response = app
        .client
        .get(app.url("/api/v1/stations"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        !body.to_string().contains("pool"),
        "no internal text: {body}"
    );
    let (status, body) = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": t.email, "password": t.password})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("unavailable"))
    );
    // GraphQL alike.
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&t.access)
        .json(&json!({"query": venues}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "unavailable",
        "{body}"
    );
    // Readiness names the dependency that is down.
    let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["checks"],
        json!({"database": "unreachable", "redis": "not_used"}),
        "{body}"
    );

    // Back without a restart.
    proxy.restore();
    let body = app.gql(Some(&t.access), venues, json!({})).await;
    assert_eq!(body["data"]["venues"], json!([]), "{body}");
    let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body["checks"]["database"].clone()),
        (StatusCode::OK, json!("ok"))
    );
}

/// A rolling update: a new release's pods are not ready until its migrations ran; the old release stays ready
/// on the newer schema (migrations are additive), so traffic always has somewhere to go.
#[tokio::test]
async fn readiness_waits_for_this_builds_migrations_and_survives_the_next_releases() {
    let database = switchyard_tests::fresh_database().await;
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    let app = switchyard_tests::spawn_app_in(&database).await;
    let ready = || async {
        let response = reqwest::get(app.url("/readyz")).await.unwrap();
        (response.status(), response.json::<Value>().await.unwrap())
    };
    let (status, _) = ready().await;
    assert_eq!(status, StatusCode::OK);

    // The database is one migration behind this build: not ready, saying what to do.
    let latest: i64 = sqlx::query_scalar("select max(version) from _sqlx_migrations")
        .fetch_one(&owner)
        .await
        .unwrap();
    let row: (String, Vec<u8>) =
        sqlx::query_as("select description, checksum from _sqlx_migrations where version = $1")
            .bind(latest)
            .fetch_one(&owner)
            .await
            .unwrap();
    sqlx::query("update _sqlx_migrations set version = -version where version = $1")
        .bind(latest)
        .execute(&owner)
        .await
        .unwrap();
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"], "not_migrated");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("run `switchyard migrate`"),
        "{body}"
    );

    // The next release migrated past this build: still ready.
    sqlx::query("update _sqlx_migrations set version = $1 where version = -$1")
        .bind(latest)
        .execute(&owner)
        .await
        .unwrap();
    sqlx::query(
        "insert into _sqlx_migrations (version, description, success, checksum, execution_time)
         values ($1, $2, true, $3, 1)",
    )
    .bind(latest + 1)
    .bind(format!("after {}", row.0))
    .bind(row.1)
    .execute(&owner)
    .await
    .unwrap();
    let (status, body) = ready().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
}
