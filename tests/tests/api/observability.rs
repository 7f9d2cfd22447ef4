//! What an operator watches: the seed metrics (sessions, rentals, billing charges, debt collection), the
//! platform gauges the alert rules fire on, and JSON logs that carry the request id and the tenant id.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_tests::{metric, metrics_page, spawn_app, TestApp};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use uuid::Uuid;

use crate::binaries::{binary, sigterm, wait_for_line};
use crate::sessions::{floor, top_up, wallet_session};

#[tokio::test]
async fn the_workers_export_platform_gauges_that_count_what_the_database_holds() {
    let database = switchyard_tests::fresh_database().await;
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    // Six sessions across two tenants, started an hour ago and due for billing.
    let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
    switchyard_workers::bench::setup(&owner, 2, 3, t0)
        .await
        .unwrap();
    let (tenant, venue, station): (Uuid, Uuid, Uuid) =
        sqlx::query_as("select tenant_id, venue_id, id from station order by id limit 1")
            .fetch_one(&owner)
            .await
            .unwrap();
    // Two bridges of the venue, offline: one silent for ten minutes (counted), one for a minute (not yet).
    for (minutes, name) in [(10, "Back room"), (1, "Front desk")] {
        sqlx::query(
            "insert into bridge (tenant_id, id, venue_id, name, token_hash, online, last_seen_at)
             values ($1, $2, $3, $4, $5, false, now() - make_interval(mins => $6))",
        )
        .bind(tenant)
        .bind(Uuid::new_v4())
        .bind(venue)
        .bind(name)
        .bind(Uuid::new_v4().as_bytes().to_vec())
        .bind(minutes)
        .execute(&owner)
        .await
        .unwrap();
    }
    // A third still marked online though silent for ten minutes: the API process holding its tunnel stopped without
    // closing it. Not counted yet; the workers set it offline.
    let cellar = Uuid::new_v4();
    sqlx::query(
        "insert into bridge (tenant_id, id, venue_id, name, token_hash, online, last_seen_at)
         values ($1, $2, $3, 'Cellar', $4, true, now() - interval '10 minutes')",
    )
    .bind(tenant)
    .bind(cellar)
    .bind(venue)
    .bind(Uuid::new_v4().as_bytes().to_vec())
    .execute(&owner)
    .await
    .unwrap();
    // Behind it, an idle plug's station shown online; and another tenant's bridge heard 30 seconds ago, online with
    // its tunnel, which stays so.
    let plug = Uuid::new_v4();
    sqlx::query(
        "insert into station (tenant_id, id, venue_id, name, kind, control, control_settings, status)
         values ($1, $2, $3, 'Plug', 'pc', 'shelly', '{\"host\": \"10.0.0.9\"}', 'online')",
    )
    .bind(tenant)
    .bind(plug)
    .bind(venue)
    .execute(&owner)
    .await
    .unwrap();
    let lobby = Uuid::new_v4();
    sqlx::query(
        "insert into bridge (tenant_id, id, venue_id, name, token_hash, online, last_seen_at, tunnel_id)
         select tenant_id, $2, id, 'Lobby', $3, true, now() - interval '30 seconds', gen_random_uuid()
           from venue where tenant_id <> $1 order by id limit 1",
    )
    .bind(tenant)
    .bind(lobby)
    .bind(Uuid::new_v4().as_bytes().to_vec())
    .execute(&owner)
    .await
    .unwrap();
    // A charger still marked online though silent for ten minutes (its API process stopped without closing the
    // connection), with a command sent and unanswered, its station shown online: the workers set it offline. Another
    // tenant's charger heard 30 seconds ago stays online with its connection.
    let (bay, charger) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "insert into station (tenant_id, id, venue_id, name, kind, control, status)
         values ($1, $2, $3, 'Bay', 'ev_charger', 'ocpp', 'online')",
    )
    .bind(tenant)
    .bind(bay)
    .bind(venue)
    .execute(&owner)
    .await
    .unwrap();
    let call = Uuid::new_v4();
    for (who, id, station, identity, minutes) in [
        (Some(tenant), charger, Some(bay), "BAY-1", 10),
        (None, Uuid::new_v4(), None, "LOBBY-1", 0),
    ] {
        sqlx::query(
            "insert into charger (tenant_id, id, station_id, charge_point_id, registration, online, connection_id,
                                  last_seen_at)
             select t.id, $2, $3, $4, case when $3 is null then 'pending' else 'accepted' end::charger_registration,
                    true, gen_random_uuid(), now() - make_interval(mins => $5) - interval '30 seconds'
               from tenant t where t.id = $1 or ($1 is null and t.id in (select tenant_id from venue) and t.id <> $6)
              order by t.id limit 1",
        )
        .bind(who)
        .bind(id)
        .bind(station)
        .bind(identity)
        .bind(minutes)
        .bind(tenant)
        .execute(&owner)
        .await
        .unwrap();
    }
    sqlx::query(
        "insert into ocpp_call (tenant_id, id, charger_id, action, payload, status, connection_id, sent_at)
         select tenant_id, $2, id, 'UnlockConnector', '{\"connectorId\": 1}', 'sent', connection_id, now()
           from charger where id = $1",
    )
    .bind(charger)
    .bind(call)
    .execute(&owner)
    .await
    .unwrap();

    // Two PC-agent stations: one agent reported disconnected ten minutes ago, the other reconnected since.
    let bridge: Uuid = sqlx::query_scalar("select id from bridge where name = 'Back room'")
        .fetch_one(&owner)
        .await
        .unwrap();
    let other: Uuid = sqlx::query_scalar(
        "select id from station where tenant_id = $1 and id <> $2 order by id limit 1",
    )
    .bind(tenant)
    .bind(station)
    .fetch_one(&owner)
    .await
    .unwrap();
    sqlx::query("update station set control = 'agent' where id = any($1)")
        .bind(vec![station, other])
        .execute(&owner)
        .await
        .unwrap();
    for (seq, at, connected, which) in [
        (1i64, 20, true, station),
        (2, 10, false, station),
        (3, 12, false, other),
        (4, 2, true, other),
    ] {
        sqlx::query(
            "insert into bridge_event (tenant_id, bridge_id, seq, station_id, kind, body, occurred_at)
             values ($1, $2, $3, $4, 'agent_state', $5, now() - make_interval(mins => $6))",
        )
        .bind(tenant)
        .bind(bridge)
        .bind(seq)
        .bind(which)
        .bind(json!({ "connected": connected }))
        .bind(at)
        .execute(&owner)
        .await
        .unwrap();
    }

    // Ejects of a running session: one taken, unanswered and past its deadline (waiting for staff), one answered,
    // one still within its deadline, and one no bridge took (the workers void that rental).
    for (taken, answered, overdue) in [
        (true, false, true),
        (true, true, true),
        (true, false, false),
        (false, false, true),
    ] {
        sqlx::query(
            "insert into device_command (tenant_id, id, station_id, session_id, command, delivered_at, deadline_at,
                                         answered_at, outcome)
             select $1, $2, s.station_id, s.id, 'eject', case when $3 then now() end,
                    now() + case when $5 then interval '-1 minute' else interval '1 minute' end,
                    case when $4 then now() end, case when $4 then 'ejected' end
               from session s where s.tenant_id = $1 and s.station_id = $6",
        )
        .bind(tenant)
        .bind(Uuid::new_v4())
        .bind(taken)
        .bind(answered)
        .bind(overdue)
        .bind(station)
        .execute(&owner)
        .await
        .unwrap();
    }

    // What the app role reads across tenants (counts only).
    let db = switchyard_core::Db::connect_lazy(&database.app_url, 2).unwrap();
    let gauges = db
        .system()
        .platform_gauges(chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        (
            gauges.sessions_active,
            gauges.rentals_active,
            gauges.bridges_offline,
            gauges.chargers_offline,
            gauges.agents_offline,
            gauges.ejects_unanswered
        ),
        (6, 0, 1, 0, 1, 1)
    );
    assert!(
        (3500.0..3700.0).contains(&gauges.billing_oldest_due_seconds),
        "the billing backlog is an hour old: {}",
        gauges.billing_oldest_due_seconds
    );

    // The workers export them, and bill the backlog: six charges, after which nothing waits.
    let mut workers = Command::new(binary("switchyard-workers"))
        .env("APP_DATABASE_URL", &database.app_url)
        .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
        .env("WORKER_POLL_MS", "20")
        .env("METRICS_SAMPLE_MS", "20")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let metrics = wait_for_line(&mut workers, "metrics on ").await;
    let want = [
        ("billing_charges_total", 6.0),
        ("sessions_active{kind=\"session\"}", 6.0),
        ("sessions_active{kind=\"rental\"}", 0.0),
        ("active_rentals_total", 0.0),
        ("edge_bridges_offline", 2.0),
        ("ocpp_chargers_offline", 1.0),
        ("agents_offline", 1.0),
        ("edge_ejects_unanswered", 1.0),
        ("billing_oldest_due_seconds", 0.0),
        ("debt_collection_success_rate", 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics_page(&metrics).await;
        let seen: Vec<Option<f64>> = want.iter().map(|(name, _)| metric(&text, name)).collect();
        if want.iter().zip(&seen).all(|((_, v), s)| *s == Some(*v)) {
            assert!(metric(&text, "db_pool_connections{state=\"max\"}").is_some_and(|m| m >= 4.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workers' gauges never matched {want:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let charged: i64 =
        sqlx::query_scalar("select count(*) from journal where kind = 'session_charge'")
            .fetch_one(&owner)
            .await
            .unwrap();
    assert_eq!(charged, 6, "one charge journal per counted charge");
    // The silent bridge is offline since it was last heard, and its venue heard so.
    let (online, down_at_last_seen, heard): (bool, bool, i64) = sqlx::query_as(
        "select online, tunnel_down_at = last_seen_at,
                (select count(*) from live_event_pending p where p.subject_id = b.id and p.kind = 'bridge.offline')
                + (select count(*) from live_event e where e.subject_id = b.id and e.kind = 'bridge.offline')
           from bridge b where id = $1",
    )
    .bind(cellar)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((online, down_at_last_seen, heard), (false, true, 1));
    let (plug_status, lobby_online, lobby_tunnel): (String, bool, bool) = sqlx::query_as(
        "select (select status::text from station where id = $1),
                (select online from bridge where id = $2),
                (select tunnel_id is not null from bridge where id = $2)",
    )
    .bind(plug)
    .bind(lobby)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(
        (plug_status.as_str(), lobby_online, lobby_tunnel),
        ("offline", true, true)
    );
    // A heartbeat on a tunnel the cloud no longer holds (it raced the workers) leaves the bridge offline.
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(tenant))
        .await
        .unwrap();
    let marked = switchyard_core::bridges::seen(&mut tx, cellar, Some(Uuid::new_v4()), None, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let online: bool = sqlx::query_scalar("select online from bridge where id = $1")
        .bind(cellar)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!((marked, online), (false, false));

    // The silent charger is offline, its last heard time kept; its station followed, its command failed, and its
    // venue heard so. The other tenant's charger is untouched.
    let (online, connection, last_seen_old, bay_status, call_status, heard): (
        bool,
        Option<Uuid>,
        bool,
        String,
        String,
        i64,
    ) = sqlx::query_as(
        "select c.online, c.connection_id, c.last_seen_at < now() - interval '10 minutes',
                (select status::text from station where id = c.station_id),
                (select status from ocpp_call where id = $2),
                (select count(*) from live_event_pending p where p.subject_id = c.id and p.kind = 'charger.offline')
                + (select count(*) from live_event e where e.subject_id = c.id and e.kind = 'charger.offline')
           from charger c where c.id = $1",
    )
    .bind(charger)
    .bind(call)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(
        (
            online,
            connection,
            last_seen_old,
            bay_status.as_str(),
            call_status.as_str(),
            heard
        ),
        (false, None, true, "offline", "error", 1)
    );
    let (lobby_online, lobby_connected): (bool, bool) = sqlx::query_as(
        "select online, connection_id is not null from charger where charge_point_id = 'LOBBY-1'",
    )
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!((lobby_online, lobby_connected), (true, true));
}

/// The API counts session starts, ends by outcome and durations when their transaction commits.
#[tokio::test]
async fn session_starts_ends_and_durations_are_counted_on_the_apis_metrics() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Metered Mo", None).await;
    top_up(&app, &f, patron, 5_000, &Uuid::new_v4().to_string()).await;
    let before = app.metrics_text().await;
    let count = |text: &str, name: &str| metric(text, name).unwrap_or(0.0);
    let session = wallet_session(&app, &f.t.access, f.station, patron, None).await;
    // A start that fails (the station is busy) is not counted: only committed starts are.
    let busy = app
        .gql(
            Some(&f.t.access),
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    assert!(busy["errors"].is_array(), "{busy}");
    let stopped = app
        .gql_ok(
            &f.t.access,
            "mutation($id: UUID!) { stopSession(id: $id) { status } }",
            json!({"id": session}),
        )
        .await;
    assert_eq!(stopped["stopSession"]["status"], "ENDED");
    let after = app.metrics_text().await;
    // Other tests share the process's recorder: what this test did is at least what it added.
    for name in [
        "sessions_created_total{kind=\"session\"}",
        "sessions_completed_total{kind=\"session\",outcome=\"stopped\"}",
        "sessions_duration_seconds_count{kind=\"session\"}",
    ] {
        assert!(
            count(&after, name) >= count(&before, name) + 1.0,
            "{name}: {} then {}",
            count(&before, name),
            count(&after, name)
        );
    }
    assert!(
        after.contains("sessions_duration_seconds_bucket{kind=\"session\",le=\"60\"}"),
        "durations are a histogram with buckets"
    );
}

/// In production the API logs one JSON object per line; each request's line carries its request id and, once the
/// caller is signed in, the tenant id.
#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_tenant_id() {
    let app: TestApp = spawn_app().await;
    let t = app.signup().await;
    let mut server = Command::new(binary("switchyard"))
        .arg("serve")
        .env(
            "APP_DATABASE_URL",
            switchyard_tests::env_url("TEST_APP_DATABASE_URL"),
        )
        .env("JWT_SECRET", switchyard_tests::TEST_JWT_SECRET)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = wait_for_line(&mut server, "listening on ").await;
    let request_id = format!("obs-{}", Uuid::new_v4());
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/stations"))
        .bearer_auth(&t.access)
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    // Stop the server, then read everything it logged.
    sigterm(&server);
    let mut stderr = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(server.wait().await.unwrap().success());
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "listening"));
    let request = lines
        .iter()
        .find(|l| l["span"]["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no line of request {request_id}: {stderr}"));
    assert_eq!(request["level"], "INFO");
    assert_eq!(request["status"], 200);
    assert_eq!(request["span"]["path"], "/api/v1/stations");
    assert_eq!(request["span"]["tenant.id"], t.id.to_string());
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the API's request spans go to an OpenTelemetry collector (here a local
/// HTTP fake standing in for one) as OTLP/JSON traces, named by `OTEL_SERVICE_NAME`, with the request id; what is
/// still queued when the server stops is sent before it exits.
#[tokio::test]
async fn request_spans_are_exported_as_opentelemetry_traces_when_a_collector_is_configured() {
    use wiremock::matchers::{method, path};
    let collector = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&collector)
        .await;
    let app: TestApp = spawn_app().await;
    let t = app.signup().await;
    let mut server = Command::new(binary("switchyard"))
        .arg("serve")
        .env(
            "APP_DATABASE_URL",
            switchyard_tests::env_url("TEST_APP_DATABASE_URL"),
        )
        .env("JWT_SECRET", switchyard_tests::TEST_JWT_SECRET)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.uri())
        .env("OTEL_SERVICE_NAME", "switchyard-api-test")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = wait_for_line(&mut server, "listening on ").await;
    let request_id = format!("otel-{}", Uuid::new_v4());
    let response = reqwest::Client::new()
        .get(format!("{base}/api/v1/stations"))
        .bearer_auth(&t.access)
        .header("x-request-id", &request_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sigterm(&server);
    assert!(server.wait().await.unwrap().success());

    let exports: Vec<Value> = collector
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r.headers["content-type"], "application/json");
            serde_json::from_slice(&r.body).unwrap()
        })
        .collect();
    assert!(!exports.is_empty(), "nothing reached the collector");
    let string = |v: &Value| v["value"]["stringValue"].as_str().map(str::to_owned);
    let attribute = |attrs: &Value, key: &str| {
        attrs
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == key)
            .and_then(string)
    };
    let mut found = None;
    for export in &exports {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = attribute(&resource["resource"]["attributes"], "service.name");
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    if attribute(&span["attributes"], "request_id").as_deref()
                        == Some(request_id.as_str())
                    {
                        found = Some((service.clone(), span.clone()));
                    }
                }
            }
        }
    }
    let (service, span) =
        found.unwrap_or_else(|| panic!("no span of request {request_id} in {exports:?}"));
    assert_eq!(service.as_deref(), Some("switchyard-api-test"));
    assert_eq!(span["name"], "request");
    assert_eq!(
        attribute(&span["attributes"], "path").as_deref(),
        Some("/api/v1/stations")
    );
    assert_eq!(
        attribute(&span["attributes"], "tenant.id"),
        Some(t.id.to_string())
    );
    assert_eq!(span["traceId"].as_str().map(str::len), Some(32));
}
