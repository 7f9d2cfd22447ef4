#![expect(
    clippy::expect_used,
    reason = "test harness: a failed setup step should fail the test at once"
)]

//! The test harness: the real router on port 0 against the real test database, and helpers that speak to it
//! over HTTP. `./infra/dev.sh test` prepares the database and sets `TEST_DATABASE_URL` (owner role) and
//! `TEST_APP_DATABASE_URL` (app role).

use std::collections::HashMap;
use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_api::{Config, Server};
use uuid::Uuid;

/// Held by a test that gives a cluster-wide role a wrong attribute and then checks that a migration put it right,
/// so that another such test's change cannot land between its migration and its check.
pub static ROLE_ATTRIBUTES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The secret the test apps sign with; tests forge tokens with it to check expiry and audience handling.
pub const TEST_JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub fn env_url(key: &str) -> String {
    std::env::var(key)
        .unwrap_or_else(|_| panic!("{key} is not set: run the suite with ./infra/dev.sh test"))
}

/// A running app.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `/metrics` apart from the API, when `METRICS_LISTEN_ADDR` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    /// Owner-role pool, for inspecting stored state. The test command connects it as the cluster's superuser, which
    /// row-level security does not confine: a query here sees every tenant's rows, other tests' included, so it
    /// filters by the tenant or by ids of its own.
    pub owner: sqlx::PgPool,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the app with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A migrated database of its own, for tests whose subject looks across tenants (the billing claim, the workers):
/// they must not see, nor be seen by, other tests' sessions. Old ones are dropped by `./infra/dev.sh test`.
pub struct TestDatabase {
    pub owner_url: String,
    pub app_url: String,
}

/// An app-role pool on the test database that wakes bridges the way the test apps do (the suite's Redis).
pub fn app_db(max_connections: u32) -> switchyard_core::Db {
    let signals = switchyard_core::signals::Signals::from_url(
        std::env::var("TEST_REDIS_URL").ok().as_deref(),
    )
    .expect("TEST_REDIS_URL");
    switchyard_core::Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), max_connections)
        .expect("app pool")
        .with_signals(signals)
}

/// One billing tick of `session` as the workers run it (30-second ticks), at `at`, committed: what it charged.
pub async fn bill_tick(tenant: Uuid, session: Uuid, at: chrono::DateTime<chrono::Utc>) -> i64 {
    let db = app_db(1);
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(tenant))
        .await
        .expect("a tenant transaction");
    let billed =
        switchyard_core::sessions::bill_tick(&mut tx, session, at, chrono::Duration::seconds(30))
            .await
            .expect("the tick");
    tx.commit().await.expect("the tick's commit");
    billed
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    format!(
        "{}/{db}",
        url.rsplit_once('/').map_or(url, |(base, _)| base)
    )
}

/// A benchmark program's `--name <number>` argument, or `default`.
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == format!("--{name}"))
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

pub async fn fresh_database() -> TestDatabase {
    let name = format!("switchyard_test_{}", Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&env_url("TEST_DATABASE_URL"))
        .await
        .expect("owner connection");
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let owner_url = with_database(&env_url("TEST_DATABASE_URL"), &name);
    let owner = sqlx::PgPool::connect(&owner_url)
        .await
        .expect("owner connection");
    switchyard_core::db::migrate(&owner).await.expect("migrate");
    owner.close().await;
    TestDatabase {
        app_url: with_database(&env_url("TEST_APP_DATABASE_URL"), &name),
        owner_url,
    }
}

/// Starts the app on a database of its own.
pub async fn spawn_app_in(db: &TestDatabase) -> TestApp {
    spawn_app_in_with(db, &[]).await
}

/// Starts the app on a database of its own, with settings overridden.
pub async fn spawn_app_in_with(db: &TestDatabase, overrides: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![("APP_DATABASE_URL", db.app_url.as_str())];
    settings.extend_from_slice(overrides);
    let mut app = spawn_app_with(&settings).await;
    app.owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(&db.owner_url)
        .expect("owner pool");
    app
}

/// A production configuration as the guards at start-up accept it: an explicit payment provider (Stripe, at an
/// address where nothing listens; tests that use it do not take card payments).
pub const PRODUCTION: [(&str, &str); 4] = [
    ("APP_ENV", "production"),
    ("PAYMENT_PROVIDER", "stripe"),
    ("STRIPE_SECRET_KEY", "sk_test_unused"),
    ("STRIPE_API_BASE", "http://127.0.0.1:9/"),
];

/// The object-store settings the test apps take from the environment (`./infra/dev.sh test` sets them).
pub const S3_SETTINGS: [&str; 6] = [
    "S3_ENDPOINT",
    "S3_REGION",
    "S3_BUCKET",
    "S3_FORCE_PATH_STYLE",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
];

/// Starts the app with some settings overridden (`("APP_ENV", "production")` ...).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("APP_DATABASE_URL".into(), env_url("TEST_APP_DATABASE_URL")),
        ("JWT_SECRET".into(), TEST_JWT_SECRET.into()),
        ("LISTEN_ADDR".into(), "127.0.0.1:0".into()),
        ("AUTH_RATE_BURST".into(), "100000".into()),
        ("RATE_BURST".into(), "100000".into()),
        ("TENANT_MAX_CONCURRENT_REQUESTS".into(), "1000".into()),
        // No back-off between a test's deliberate wrong passwords; the throttle's own tests set it.
        ("AUTH_BACKOFF_BASE_MS".into(), "0".into()),
        ("DB_MAX_CONNECTIONS".into(), "8".into()),
    ]);
    // Wake-ups go through the suite's Redis (an override of "" falls back to Postgres notify).
    if let Ok(redis) = std::env::var("TEST_REDIS_URL") {
        vars.insert("REDIS_URL".into(), redis);
    }
    // The object store `./infra/dev.sh test` started (documents).
    for key in S3_SETTINGS {
        if let Ok(value) = std::env::var(key) {
            vars.insert(key.into(), value);
        }
    }
    for (k, v) in overrides {
        vars.insert((*k).into(), (*v).into());
    }
    let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("test config");
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().expect("addr");
    let metrics_addr = server.metrics_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let owner = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_lazy(&env_url("TEST_DATABASE_URL"))
        .expect("owner pool");
    TestApp {
        addr,
        metrics_addr,
        client: reqwest::Client::new(),
        owner,
        _stop: stop,
    }
}

/// The Prometheus page at `url` (`http://host:port/metrics`); panics when it does not answer.
pub async fn metrics_page(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("the metrics page answers")
        .text()
        .await
        .expect("the metrics page's text")
}

/// The value of the sample `name` on a metrics page: its name with its labels as the page writes them
/// (`ws_writes_stalled_total{socket="tunnel"}`); `None` when the page has no such sample.
pub fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The password of every login [`TestApp::add_member`] creates.
pub const MEMBER_PASSWORD: &str = "another-good-password";

/// A freshly signed-up tenant and its owner's tokens.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", Uuid::new_v4().simple())
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The app's metrics page: from its own listener when `METRICS_LISTEN_ADDR` gave it one, else from the API's port.
    pub async fn metrics_text(&self) -> String {
        metrics_page(&format!(
            "http://{}/metrics",
            self.metrics_addr.unwrap_or(self.addr)
        ))
        .await
    }

    /// Sends JSON, returns status and JSON body (`Value::Null` when the body is empty or not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An owner-role transaction scoped to `tenant`, for asserting stored state. (The owner is subject to the forced
    /// row-level security too, unless it is a superuser — as the test command's is: filter by the tenant anyway.)
    pub async fn tenant_tx(&self, tenant: Uuid) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut tx = self.owner.begin().await.expect("begin");
        sqlx::query("select set_config('app.tenant_id', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        tx
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, None, Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// Runs a GraphQL operation and returns the whole response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                "/graphql",
                token,
                Some(json!({ "query": query, "variables": variables })),
            )
            .await;
        assert!(status.is_success(), "graphql answered {status}: {body}");
        body
    }

    /// Runs a GraphQL operation that must succeed and returns `data`.
    pub async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.gql(Some(token), query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    pub async fn signup(&self) -> Tenant {
        self.signup_named(&format!("Org {}", Uuid::new_v4().simple()))
            .await
    }

    pub async fn signup_named(&self, organization: &str) -> Tenant {
        let email = unique_email("owner");
        let password = "correct-horse-battery".to_string();
        let (status, body) = self
            .post(
                "/api/v1/auth/signup",
                json!({ "organization": organization, "email": email, "password": password }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "accepted", "{body}");
        self.login(&email, &password).await
    }

    /// Signs in an owner who signed up elsewhere (in a browser, say).
    pub async fn login(&self, email: &str, password: &str) -> Tenant {
        let (email, password) = (email.to_owned(), password.to_owned());
        let (status, body) = self
            .post(
                "/api/v1/auth/login",
                json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        Tenant {
            id: body["tenant_id"]
                .as_str()
                .expect("tenant_id")
                .parse()
                .expect("uuid"),
            email,
            password,
            access: body["access_token"].as_str().expect("access").into(),
            refresh: body["refresh_token"].as_str().expect("refresh").into(),
        }
    }

    /// Invites `role` into the tenant and accepts as a new user with the token from the invitation's email;
    /// returns (user id, access token).
    pub async fn add_member(&self, owner: &Tenant, role: &str) -> (Uuid, String) {
        let (id, _, access) = self.add_member_login(owner, role).await;
        (id, access)
    }

    /// As [`TestApp::add_member`], with the new login's email (its password is [`MEMBER_PASSWORD`]): (user id,
    /// email, access token).
    pub async fn add_member_login(&self, owner: &Tenant, role: &str) -> (Uuid, String, String) {
        let email = unique_email(role);
        let token = self.invite_by_email(&owner.access, &email, role).await;
        let data = self
            .gql(
                None,
                "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, password: $p) { accessToken } }",
                json!({ "t": token, "p": MEMBER_PASSWORD }),
            )
            .await;
        let access = data["data"]["acceptInvitation"]["accessToken"]
            .as_str()
            .expect("accepted")
            .to_owned();
        let me = self.gql_ok(&access, "{ me { userId } }", json!({})).await;
        (
            me["me"]["userId"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
            email,
            access,
        )
    }

    /// Creates a patron (tier `standard` unless given) and returns its id.
    pub async fn create_patron(&self, token: &str, name: &str, tier: Option<&str>) -> Uuid {
        let data = self
            .gql_ok(
                token,
                "mutation($n: String!, $t: String) { createPatron(input: {displayName: $n, tier: $t}) { id } }",
                json!({ "n": name, "t": tier }),
            )
            .await;
        data["createPatron"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid")
    }

    /// Creates a tariff from GraphQL `TariffTermsInput` fields (e.g. `currency: "EUR", perMinute: 10`) and returns
    /// its id.
    pub async fn create_tariff(&self, token: &str, name: &str, terms: &str) -> Uuid {
        let query = format!(
            "mutation($n: String!) {{ createTariff(name: $n, terms: {{{terms}}}) {{ id }} }}"
        );
        let data = self.gql_ok(token, &query, json!({ "n": name })).await;
        data["createTariff"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid")
    }

    /// Creates a venue and returns its id.
    pub async fn create_venue(&self, token: &str, name: &str) -> Uuid {
        let data = self
            .gql_ok(
                token,
                "mutation($i: CreateVenueInput!) { createVenue(input: $i) { id } }",
                json!({ "i": { "name": name, "timezone": "Europe/Berlin", "currency": "EUR" } }),
            )
            .await;
        data["createVenue"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid")
    }

    /// Creates a PC station (agent control) at `venue` and returns its id.
    pub async fn create_station(&self, token: &str, venue: Uuid, name: &str) -> Uuid {
        let data = self
            .gql_ok(
                token,
                "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
                json!({ "i": { "venueId": venue, "name": name, "kind": "PC", "control": "AGENT" } }),
            )
            .await;
        data["createStation"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid")
    }
}

/// Polls all the futures concurrently on the current task (requests that must overlap) and returns their outputs
/// in order.
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (slot, future) in done.iter_mut().zip(pending.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// The `extensions.code` of the first GraphQL error.
pub fn gql_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<no code>")
}
pub mod charger_sim;
pub mod cpu;
pub mod mail;
pub mod ocpp_peer;
pub mod proxy;
pub mod routeros_fake;
pub mod shelly_fake;
pub mod stripe_fake;
pub mod tasmota_sim;

/// Any GraphQL operation for the graphql-ws-client library, answering the raw `{"data": .., "errors": ..}`.
#[derive(serde::Serialize)]
pub struct Operation {
    pub query: String,
    pub variables: Value,
}

impl graphql_ws_client::graphql::GraphqlOperation for Operation {
    type Response = Value;
    type Error = serde_json::Error;

    fn decode(&self, data: Value) -> Result<Value, serde_json::Error> {
        Ok(data)
    }
}

/// A subscription opened with the graphql-ws-client library.
pub type Subscription = graphql_ws_client::Subscription<Operation>;

impl TestApp {
    /// `/graphql/ws` of this app.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql/ws", self.addr)
    }

    /// Opens a graphql-transport-ws connection signed in with `token` (in `connection_init`) and subscribes.
    pub async fn subscribe(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<Subscription, graphql_ws_client::Error> {
        subscribe_at(&self.ws_url(), token, query, variables).await
    }
}

/// As [`TestApp::subscribe`], at any `/graphql/ws` URL (another API process).
pub async fn subscribe_at(
    url: &str,
    token: &str,
    query: &str,
    variables: Value,
) -> Result<Subscription, graphql_ws_client::Error> {
    use graphql_ws_transport::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().expect("ws url");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        graphql_ws_transport::tungstenite::http::HeaderValue::from_static("graphql-transport-ws"),
    );
    let (connection, _) = graphql_ws_transport::connect_async(request)
        .await
        .expect("connect to /graphql/ws");
    graphql_ws_client::Client::build(connection)
        .payload(serde_json::json!({ "authorization": format!("Bearer {token}") }))?
        .subscribe(Operation {
            query: query.to_owned(),
            variables,
        })
        .await
}

/// The subscription's next response, waiting at most a generous 60 s for it (a bound on a hang, not a timing).
pub async fn next_response(subscription: &mut Subscription) -> Value {
    use futures_util::StreamExt;
    match tokio::time::timeout(std::time::Duration::from_secs(60), subscription.next()).await {
        Ok(Some(Ok(response))) => response,
        Ok(Some(Err(e))) => panic!("the subscription failed: {e}"),
        Ok(None) => panic!("the subscription ended"),
        Err(_) => panic!("no event within 60 s"),
    }
}
