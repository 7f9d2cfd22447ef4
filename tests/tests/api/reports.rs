//! Seed 003's kiosk reports over REST: a kiosk session's contact and metadata, report kinds from templates, PDFs in
//! the real S3-compatible server, delivery queued for the outbox, metrics, isolation and bad input.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::documents::reports::demo_kinds;
use switchyard_tests::{spawn_app, TestApp};
use uuid::Uuid;

use crate::documents::{download, pdf_text};
use crate::sessions::{floor, start, top_up, Floor};

/// A kiosk station at the floor's venue, a running session on it, and the seed's two report kinds.
pub(crate) async fn kiosk(app: &TestApp, f: &Floor) -> Uuid {
    for (key, title, template) in demo_kinds() {
        let kind = app
            .gql_ok(
                &f.t.access,
                "mutation($k: String!, $t: String!, $tpl: JSON!) {
                   defineReportKind(key: $k, title: $t, template: $tpl) { key title } }",
                json!({"k": key, "t": title, "tpl": template}),
            )
            .await;
        assert_eq!(kind["defineReportKind"]["key"], key);
    }
    let station: Uuid = app
        .gql_ok(
            &f.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": f.venue, "name": "Kiosk 1", "kind": "KIOSK", "control": "MANUAL"}}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let patron = app.create_patron(&f.t.access, "Walk-up", None).await;
    top_up(app, f, patron, 1_000, &Uuid::new_v4().to_string()).await;
    let (status, body) = start(
        app,
        &f.t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": station, "patron_id": patron, "duration_minutes": 20, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["session_id"].as_str().unwrap().parse().unwrap()
}

pub(crate) fn diagnostics() -> Value {
    json!({
        "vehicle": {"vin": "WVWZZZ1JZXW000001", "make": "Volkswagen", "model": "Golf", "mileage_km": 123456},
        "dtc_codes": [
            {"code": "P0300", "severity": "high", "description": "Random misfire detected"},
            {"code": "P0171", "severity": "low", "description": "System too lean"}
        ],
        "cleared": true
    })
}

pub(crate) async fn post_report(
    app: &TestApp,
    token: &str,
    kind: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/reports/{kind}")))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_kiosk_report_is_generated_stored_listed_and_queued_for_delivery_to_the_sessions_contact()
{
    let app = spawn_app().await;
    let f = floor(&app).await;
    let session = kiosk(&app, &f).await;

    let (status, contact) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{session}/contact"),
            Some(&f.t.access),
            Some(
                json!({"contact_email": "Driver@Example.com", "contact_phone": "+49 170 1234567",
                        "metadata": {"plate": "B-SY 42"}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{contact}");
    assert_eq!(
        contact,
        json!({"session_id": session, "contact_email": "driver@example.com",
               "contact_phone": "+49 170 1234567", "metadata": {"plate": "B-SY 42"}})
    );

    let (status, report) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        None,
        json!({"session_id": session, "data": diagnostics()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["type"], "diagnostics");
    assert_eq!(report["session_id"], session.to_string());
    assert_eq!(report["sent_to_email"], "driver@example.com");
    assert_eq!(report["sent_to_phone"], "+49 170 1234567");
    assert_eq!(report["delivery"], "pending");
    assert_eq!(report["sent_at"], Value::Null);
    assert_eq!(report["metadata"], diagnostics());
    let id = report["id"].as_str().unwrap().to_owned();
    let url = report["url"].as_str().unwrap();
    assert!(
        url.contains(&format!("/{}/reports/{id}.pdf", f.t.id)),
        "{url}"
    );
    let bytes = download(&app, url).await;
    assert_eq!(report["byte_size"], bytes.len());
    let text = pdf_text(&bytes).await;
    for needle in [
        "Vehicle diagnostics report",
        &format!("Session {session}"),
        "Station: Kiosk 1",
        "VIN: WVWZZZ1JZXW000001",
        "Mileage (km): 123456",
        "P0300",
        "Random misfire detected",
        "P0171",
        "Codes by severity: high",
        "The fault codes were cleared after the scan.",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }

    // A thickness report with its own recipient; no delivery without one.
    let (status, thickness) = post_report(
        &app,
        &f.t.access,
        "thickness",
        None,
        json!({"session_id": session, "email": "other@example.com", "data": {
            "vehicle_type": "sedan",
            "measurements": [{"zone": "hood", "value_um": 110, "status": "ok"},
                             {"zone": "door_fl", "value_um": 310, "status": "repainted"},
                             {"zone": "roof", "value_um": 105, "status": "ok"}],
            "recommendation": "Door front left was repainted."}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{thickness}");
    assert_eq!(thickness["sent_to_email"], "other@example.com");
    let text = pdf_text(&download(&app, thickness["url"].as_str().unwrap()).await).await;
    assert!(text.contains("Measurements: ok"), "{text}");
    assert!(
        text.contains("Recommendation: Door front left was repainted."),
        "{text}"
    );

    // GET one, and the session's list.
    let (status, got) = app.get(&format!("/api/v1/reports/{id}"), &f.t.access).await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        (got["id"].clone(), got["delivery"].clone()),
        (json!(id), json!("pending"))
    );
    assert_eq!(download(&app, got["url"].as_str().unwrap()).await, bytes);
    let (status, list) = app
        .get(&format!("/api/v1/reports/session/{session}"), &f.t.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let types: Vec<&str> = list["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["diagnostics", "thickness"]);

    // The outbox hook records a channel's outcome once: a second record changes and counts nothing.
    let db = switchyard_tests::app_db(2);
    let first: Uuid = id.parse().unwrap();
    for _ in 0..2 {
        let mut tx = db
            .begin_tenant(switchyard_core::TenantId(f.t.id))
            .await
            .unwrap();
        switchyard_core::documents::delivery::mark_report_delivered(&mut tx, first, "email", true)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let (_, got) = app.get(&format!("/api/v1/reports/{id}"), &f.t.access).await;
    // The email is done; the SMS is still to go, so the report as a whole is still pending.
    assert_eq!(
        (
            got["delivery"].clone(),
            got["email_delivery"].clone(),
            got["sms_delivery"].clone()
        ),
        (json!("pending"), json!("sent"), json!("pending")),
        "{got}"
    );
    assert!(got["sent_at"].is_string());

    // Metrics (seed 003).
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("reports_generated_total{kind=\"diagnostics\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("reports_delivered_total{method=\"email\"}"));
}

#[tokio::test]
async fn a_retried_report_with_the_same_key_is_the_same_report() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let session = kiosk(&app, &f).await;
    let body = json!({"session_id": session, "data": diagnostics()});
    let (s1, first) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        Some("kiosk-1"),
        body.clone(),
    )
    .await;
    let (s2, second) = post_report(&app, &f.t.access, "diagnostics", Some("kiosk-1"), body).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::CREATED, StatusCode::CREATED),
        "{first} {second}"
    );
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["delivery"], "none");
    let (_, list) = app
        .get(&format!("/api/v1/reports/session/{session}"), &f.t.access)
        .await;
    assert_eq!(list["reports"].as_array().unwrap().len(), 1);
    // The same key with other data is refused.
    let (status, body) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        Some("kiosk-1"),
        json!({"session_id": session, "data": {"vehicle": {"vin": "X"}, "dtc_codes": []}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn reports_refuse_bad_input_and_other_tenants_clearly() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let session = kiosk(&app, &f).await;
    let (status, report) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        None,
        json!({"session_id": session, "data": diagnostics()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let id = report["id"].as_str().unwrap();

    let cases: Vec<(&str, Value, StatusCode, &str, Option<&str>)> = vec![
        (
            "nope",
            json!({"session_id": session, "data": diagnostics()}),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "diagnostics",
            json!({"session_id": Uuid::new_v4(), "data": diagnostics()}),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            "diagnostics",
            json!({"session_id": session, "data": {"dtc_codes": []}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("data"),
        ),
        (
            "diagnostics",
            json!({"session_id": session, "data": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("data"),
        ),
        (
            "diagnostics",
            json!({"session_id": session, "email": "not-an-email", "data": diagnostics()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("email"),
        ),
        (
            "diagnostics",
            json!({"session_id": session, "phone": "call me", "data": diagnostics()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("phone"),
        ),
        (
            "diagnostics",
            json!({"session_id": session, "data": diagnostics(), "extra": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            None,
        ),
        (
            "diagnostics",
            json!({"session_id": "nope", "data": diagnostics()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            None,
        ),
    ];
    for (kind, body, want, code, field) in cases {
        let (status, answer) = post_report(&app, &f.t.access, kind, None, body.clone()).await;
        assert_eq!(status, want, "{kind} {body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
        assert!(!answer.to_string().contains("sqlx") && !answer.to_string().contains("constraint"));
    }
    // A kind no report kind can be named (a NUL, thousands of characters) is not found, with or without a key.
    let long = "k".repeat(3_000);
    for (kind, key) in [("diag%00", None), (long.as_str(), Some("long-kind"))] {
        let (status, answer) = post_report(
            &app,
            &f.t.access,
            kind,
            key,
            json!({"session_id": session, "data": diagnostics()}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"]["code"], "not_found", "{answer}");
    }
    // A session on a PC is not a kiosk session.
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, patron, 1_000, "pc-cash").await;
    let (_, pc) = start(
        &app,
        &f.t.access,
        Some("pc-1"),
        json!({"station_id": f.station, "patron_id": patron, "duration_minutes": 10, "payment": "wallet"}),
    )
    .await;
    let (status, answer) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        None,
        json!({"session_id": pc["session_id"], "data": diagnostics()}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("kiosk"));
    // A bad template is refused with the block named.
    let bad = app
        .gql(
            Some(&f.t.access),
            "mutation { defineReportKind(key: \"x\", title: \"X\", template: [{field: \"VIN\"}]) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&bad),
        "validation_failed",
        "{bad}"
    );
    assert_eq!(bad["errors"][0]["extensions"]["field"], "template");

    // Another tenant: not found for the report, the session's list, the contact, and posting on the session.
    let stranger = app.signup().await;
    for path in [
        format!("/api/v1/reports/{id}"),
        format!("/api/v1/reports/session/{session}"),
        format!("/api/v1/reports/{}", Uuid::new_v4()),
        "/api/v1/reports/not-a-uuid".to_owned(),
    ] {
        let (status, answer) = app.get(&path, &stranger.access).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert!(!answer.to_string().contains("X-Amz"));
    }
    let (status, _) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{session}/contact"),
            Some(&stranger.access),
            Some(json!({"contact_email": "x@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let contact: Option<String> =
        sqlx::query_scalar("select contact_email from session where tenant_id = $1 and id = $2")
            .bind(f.t.id)
            .bind(session)
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_ne!(
        contact.as_deref(),
        Some("x@example.com"),
        "the contact is unchanged"
    );
    // A kind only this tenant defined is not found for the stranger (the kind is looked up first); with the same kind
    // defined, this tenant's session still is not.
    for (define, missing) in [(false, "report kind"), (true, "session")] {
        if define {
            app.gql_ok(
                &stranger.access,
                "mutation($t: JSON!) { defineReportKind(key: \"diagnostics\", title: \"D\", template: $t) { key } }",
                json!({"t": demo_kinds()[0].2}),
            )
            .await;
        }
        let (status, answer) = post_report(
            &app,
            &stranger.access,
            "diagnostics",
            None,
            json!({"session_id": session, "data": diagnostics()}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"]["code"], "not_found", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(missing), "{answer}");
    }
    // Without a token.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/reports/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
