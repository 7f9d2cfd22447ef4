//! The error catalogue at the HTTP edge, health, metrics and the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_tests::spawn_app;

#[tokio::test]
async fn unknown_routes_methods_and_malformed_ids_get_catalogue_errors() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let (status, body) = app.get("/api/v1/nope", &t.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    let (status, body) = app
        .send(Method::DELETE, "/api/v1/stations", Some(&t.access), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let (status, body) = app.get("/api/v1/stations/not-a-uuid", &t.access).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["error"],
        json!({"code": "validation_failed", "message": "the id in the path must be a UUID", "field": "id"})
    );

    let (status, body) = app
        .get(
            &format!("/api/v1/stations/{}", uuid::Uuid::new_v4()),
            &t.access,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "station not found");

    let (status, body) = app.get("/api/v1/stations?kind=spaceship", &t.access).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown variant `spaceship`"),
        "{body}"
    );

    let (status, body) = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "validation_failed");

    let (status, body) = app
        .send(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "a@b.co", "password": "x", "extra": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `extra`"),
        "{body}"
    );
}

#[tokio::test]
async fn an_oversized_rest_body_is_refused_with_413() {
    let app = spawn_app().await;
    let big = json!({"refresh_token": "x".repeat(2 << 20)});
    let (status, body) = app.post("/api/v1/auth/refresh", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "from-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get("x-request-id").unwrap(),
        "from-the-client"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_report_the_service() {
    let app = spawn_app().await;
    let (status, body) = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!({"status": "ok", "checks": {"database": "ok", "redis": "ok"}})
        )
    );
    app.signup().await;

    let text = app.metrics_text().await;
    let signup_line = text
        .lines()
        .find(|l| {
            l.starts_with("http_requests_total")
                && l.contains("route=\"/api/v1/auth/signup\"")
                && l.contains("status=\"202\"")
        })
        .unwrap_or_else(|| panic!("no signup counter in:\n{text}"));
    assert!(signup_line.contains("method=\"POST\""));
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "latency histogram"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("db_pool_connections{state=\"max\"} 8")),
        "{text}"
    );
}

#[tokio::test]
async fn readiness_fails_clearly_on_an_unmigrated_database() {
    let setup = spawn_app().await;
    let name = format!("switchyard_unmigrated_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("create database {name}"))
        .execute(&setup.owner)
        .await
        .unwrap();
    let url = switchyard_tests::env_url("TEST_APP_DATABASE_URL");
    let url = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    let app = switchyard_tests::spawn_app_with(&[("APP_DATABASE_URL", &url)]).await;
    let (status, body) = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("switchyard migrate"),
        "{body}"
    );
    drop(app);
    sqlx::query(&format!("drop database {name} with (force)"))
        .execute(&setup.owner)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_openapi_document_covers_every_rest_route() {
    let app = spawn_app().await;
    let (status, doc) = app
        .send(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    // `switchyard print-openapi` (the manual publishes it) prints the same document.
    assert_eq!(
        serde_json::to_value(switchyard_api::app::openapi_document().unwrap()).unwrap(),
        doc
    );
    let mut routes: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "DELETE /api/v1/sessions/{id}",
            "GET /api/v1/dashboard",
            "GET /api/v1/payments/intent/{id}",
            "GET /api/v1/payments/status/{id}",
            "GET /api/v1/rentals/{id}",
            "GET /api/v1/reports/session/{id}",
            "GET /api/v1/reports/{id}",
            "GET /api/v1/sessions/{id}",
            "GET /api/v1/sessions/{id}/receipt",
            "GET /api/v1/stations",
            "GET /api/v1/stations/{id}",
            "GET /api/v1/stations/{id}/qr",
            "GET /api/v1/stations/{id}/qr.png",
            "GET /api/v1/stations/{id}/qr.svg",
            "GET /api/v1/venues/{id}/qr",
            "GET /api/v1/venues/{id}/qr.png",
            "GET /api/v1/venues/{id}/qr.svg",
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "POST /api/v1/auth/login",
            "POST /api/v1/auth/logout",
            "POST /api/v1/auth/password/forgot",
            "POST /api/v1/auth/password/reset",
            "POST /api/v1/auth/patron/login",
            "POST /api/v1/auth/patron/signup",
            "POST /api/v1/auth/refresh",
            "POST /api/v1/auth/signup",
            "POST /api/v1/auth/verify-email",
            "POST /api/v1/payments/cancel/{id}",
            "POST /api/v1/payments/confirm/{id}",
            "POST /api/v1/payments/intent",
            "POST /api/v1/rentals/quote",
            "POST /api/v1/rentals/start",
            "POST /api/v1/rentals/stop",
            "POST /api/v1/reports/{id}",
            "POST /api/v1/sessions/start",
            "POST /webhooks/stripe",
            "POST /webhooks/stripe/{tenant_id}",
            "PUT /api/v1/sessions/{id}/contact",
            "PUT /api/v1/sessions/{id}/extend",
        ]
    );
    let token_pair = &doc["components"]["schemas"]["TokenPair"]["properties"];
    for field in [
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "tenant_id",
    ] {
        assert!(
            token_pair.get(field).is_some(),
            "TokenPair.{field} documented"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let _: &Value = &doc;
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app =
        switchyard_tests::spawn_app_with(&[("CORS_ORIGINS", "https://admin.example.com")]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://admin.example.com").await.unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://admin.example.com"
    );
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn responses_are_compressed_when_the_client_accepts_gzip() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("content-encoding").unwrap(), "gzip");
    let compressed = response.bytes().await.unwrap();
    assert_eq!(&compressed[..2], &[0x1f, 0x8b], "a gzip stream");
}

#[tokio::test]
async fn control_characters_in_any_text_input_are_refused_with_422_naming_the_field() {
    let app = spawn_app().await;
    // REST: a NUL in a sign-up field used to reach Postgres and answer 500.
    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Nul\u{0}Org", "email": switchyard_tests::unique_email("nul"), "password": "a-long-enough-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["field"], "organization");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("control characters"),
        "{body}"
    );
    let t = app.signup().await;
    let (status, body) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": t.id, "display_name": "Esc\u{1b}ape", "email": switchyard_tests::unique_email("p"), "password": "a-long-enough-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "display_name");

    // GraphQL: in a variable (the path inside the input object is named) ...
    let venue = app
        .gql(
            Some(&t.access),
            "mutation($i: CreateVenueInput!) { createVenue(input: $i) { id } }",
            json!({"i": {"name": "Bad\u{0}Venue", "timezone": "Europe/Berlin", "currency": "EUR"}}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&venue),
        "validation_failed",
        "{venue}"
    );
    assert_eq!(venue["errors"][0]["extensions"]["field"], "i.name");
    assert!(venue["data"].is_null(), "{venue}");
    // ... and in a literal.
    let patron = app
        .gql(
            Some(&t.access),
            r#"mutation { createPatron(input: {displayName: "Nul\u0000Pat"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&patron),
        "validation_failed",
        "{patron}"
    );
    assert_eq!(
        patron["errors"][0]["extensions"]["field"],
        "input.displayName"
    );
    // ... and in a JSON value's key (a NUL there used to reach Postgres's jsonb and answer `internal`).
    let kind = app
        .gql(
            Some(&t.access),
            "mutation($t: JSON!) { defineReportKind(key: \"nul\", title: \"Nul\", template: $t) { key } }",
            json!({"t": {"fields": [], "a\u{0}b": 1}}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&kind),
        "validation_failed",
        "{kind}"
    );
    assert_eq!(
        kind["errors"][0]["extensions"]["field"], "t.a\\0b",
        "{kind}"
    );
    // Nothing was stored; tabs and line breaks are still fine.
    let venues = app
        .gql_ok(&t.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(venues["venues"], json!([]));
    app.create_patron(&t.access, "Line\nBreak", None).await;
}

#[tokio::test]
async fn an_enormous_extension_is_refused_with_422_and_changes_nothing() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let (status, started) = crate::sessions::start(
        &app,
        &f.t.access,
        Some("huge-1"),
        json!({"station_id": f.station, "duration_minutes": 60, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["session_id"].as_str().unwrap();
    for minutes in [i64::MAX, i64::MAX - 59, i64::MIN, 0] {
        let (status, body) = app
            .send(
                Method::PUT,
                &format!("/api/v1/sessions/{id}/extend"),
                Some(&f.t.access),
                Some(json!({ "minutes": minutes })),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{minutes}: {body}"
        );
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["field"], "minutes");
    }
    let gql = app
        .gql(
            Some(&f.t.access),
            "mutation($id: UUID!, $m: Int!) { extendSession(id: $id, minutes: $m) { id } }",
            json!({"id": id, "m": i32::MAX}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&gql),
        "validation_failed",
        "{gql}"
    );
    let (status, session) = app
        .get(&format!("/api/v1/sessions/{id}"), &f.t.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["duration_minutes"], 60, "{session}");
}

#[tokio::test]
async fn device_commands_are_a_bounded_list_of_the_latest() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    for i in 0..3 {
        let (status, started) = crate::sessions::start(
            &app,
            &f.t.access,
            Some(&format!("round-{i}")),
            json!({"station_id": f.station, "duration_minutes": 10, "payment": "cash"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{started}");
        let (status, body) = app
            .send(
                Method::DELETE,
                &format!(
                    "/api/v1/sessions/{}",
                    started["session_id"].as_str().unwrap()
                ),
                Some(&f.t.access),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let query = "query($s: UUID!, $l: Int!) { deviceCommands(stationId: $s, limit: $l) { command createdAt } }";
    let all = app
        .gql_ok(&f.t.access, query, json!({"s": f.station, "l": 100}))
        .await;
    let all = all["deviceCommands"].as_array().unwrap().clone();
    assert_eq!(all.len(), 6, "{all:?}");
    let latest = app
        .gql_ok(&f.t.access, query, json!({"s": f.station, "l": 2}))
        .await;
    // The latest two, oldest first.
    assert_eq!(latest["deviceCommands"], json!(all[4..].to_vec()));
    let capped = app
        .gql_ok(&f.t.access, query, json!({"s": f.station, "l": 1_000_000}))
        .await;
    assert_eq!(capped["deviceCommands"].as_array().unwrap().len(), 6);
}

/// Two tenant transactions that wait for each other (each holds a lock the other wants): Postgres breaks the
/// deadlock by undoing one, and that one is told to send the request again (`retry_later`, 503), not `internal`;
/// the other goes through.
#[tokio::test]
async fn a_transaction_undone_by_a_deadlock_is_a_retry_not_an_internal_error() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let db = switchyard_tests::app_db(4);
    let tenant = switchyard_core::TenantId(t.id);
    let (first, second) = (rand_key(), rand_key());
    let mut a = db.begin_tenant(tenant).await.unwrap();
    let mut b = db.begin_tenant(tenant).await.unwrap();
    let lock = "select pg_advisory_xact_lock($1)";
    sqlx::query(lock)
        .bind(first)
        .execute(a.conn())
        .await
        .unwrap();
    sqlx::query(lock)
        .bind(second)
        .execute(b.conn())
        .await
        .unwrap();
    let (from_a, from_b) = tokio::join!(
        sqlx::query(lock).bind(second).execute(a.conn()),
        sqlx::query(lock).bind(first).execute(b.conn()),
    );
    let (undone, went_through) = match (from_a, from_b) {
        (Err(e), Ok(_)) => (e, b),
        (Ok(_), Err(e)) => (e, a),
        other => panic!("expected exactly one side undone: {other:?}"),
    };
    let error = switchyard_core::Error::from(undone);
    assert_eq!(error.code(), switchyard_core::ErrorCode::RetryLater);
    assert_eq!(error.code().http_status(), 503);
    assert_eq!(
        error.to_string(),
        "this request ran into another change made at the same moment and was undone; send it again"
    );
    let cause = format!("{:?}", error.hidden_cause().expect("the cause is logged"));
    assert!(cause.contains("deadlock"), "{cause}");
    went_through.commit().await.unwrap();
}

fn rand_key() -> i64 {
    i64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}

/// A date Postgres cannot hold (a signed year the JSON scalar accepts) is the client's input: `validation_failed`,
/// not `internal`.
#[tokio::test]
async fn a_date_out_of_the_databases_range_is_a_validation_error() {
    let app = spawn_app().await;
    let t = app.signup().await;
    for query in [
        "{ sessions(from: \"-9999-01-01T00:00:00Z\") { id } }",
        "{ incidents(to: \"-9999-01-01T00:00:00Z\") { id } }",
        "{ auditLog(from: \"-9999-01-01T00:00:00Z\") { id } }",
    ] {
        let body = app.gql(Some(&t.access), query, serde_json::json!({})).await;
        assert_eq!(
            switchyard_tests::gql_code(&body),
            "validation_failed",
            "{query}: {body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("out of the range")),
            "{body}"
        );
    }
}
