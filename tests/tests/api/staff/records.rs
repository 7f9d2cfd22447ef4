//! Shifts and hours, the safety log, and the audit log reader.

use serde_json::json;
use switchyard_tests::{gql_code, spawn_app};

use super::{add_scoped, events, id, second_venue};
use crate::sessions::floor;

#[tokio::test]
async fn staff_clock_in_once_at_a_time_show_on_shift_and_their_hours_add_up() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (staff_id, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let shift = app
        .gql_ok(
            &staff,
            "mutation($v: UUID!) { clockIn(venueId: $v) { id userId endedAt } }",
            json!({"v": f.venue}),
        )
        .await;
    let shift_id = id(&shift["clockIn"]["id"]);
    let body = app
        .gql(
            Some(&staff),
            "mutation($v: UUID!) { clockIn(venueId: $v) { id } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&body), "conflict", "{body}");
    let on = app
        .gql_ok(
            &f.t.access,
            "query($v: UUID!) { onShift(venueId: $v) { id userId } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(on["onShift"], json!([{"id": shift_id, "userId": staff_id}]));

    // Eight hours ago, as far as the books go.
    let mut tx = app.tenant_tx(f.t.id).await;
    sqlx::query("update staff_shift set started_at = now() - interval '8 hours' where tenant_id = $1 and id = $2")
        .bind(f.t.id)
        .bind(shift_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let out = app
        .gql_ok(&staff, "mutation { clockOut { id endedAt } }", json!({}))
        .await;
    assert_eq!(out["clockOut"]["id"], json!(shift_id));
    let body = app
        .gql(Some(&staff), "mutation { clockOut { id } }", json!({}))
        .await;
    assert_eq!(gql_code(&body), "conflict");
    let hours = app
        .gql_ok(
            &f.t.access,
            "query($f: DateTime!, $t: DateTime!) { shiftHours(from: $f, to: $t) { userId hours shifts } }",
            json!({"f": chrono::Utc::now() - chrono::Duration::days(1), "t": chrono::Utc::now() + chrono::Duration::hours(1)}),
        )
        .await;
    assert_eq!(
        hours["shiftHours"],
        json!([{"userId": staff_id, "hours": 8.0, "shifts": 1}])
    );
    let body = app
        .gql(Some(&f.t.access), "{ shiftHours(from: \"2026-02-01T00:00:00Z\", to: \"2026-01-01T00:00:00Z\") { hours } }", json!({}))
        .await;
    assert_eq!(gql_code(&body), "validation_failed");
    assert_eq!(body["errors"][0]["extensions"]["field"], "to");
    let kinds: Vec<String> = events(&app, f.t.id, "shift")
        .await
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(kinds, ["shift.started", "shift.ended"]);
}

#[tokio::test]
async fn the_safety_log_records_interventions_and_refuses_bad_input_clearly() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Sam", None).await;
    let (_, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let record = "mutation($i: SafetyEntryInput!) { recordSafetyEntry(input: $i) { id kind severity patronId } }";
    let entry = app
        .gql_ok(&staff, record, json!({"i": {"venueId": f.venue, "patronId": patron, "kind": "warning", "note": "shouting", "severity": "LOW"}}))
        .await;
    assert_eq!(entry["recordSafetyEntry"]["kind"], "warning");
    let log = app
        .gql_ok(
            &staff,
            "query($p: UUID!) { safetyLog(patronId: $p) { id note } }",
            json!({"p": patron}),
        )
        .await;
    assert_eq!(
        log["safetyLog"],
        json!([{"id": entry["recordSafetyEntry"]["id"], "note": "shouting"}])
    );
    for (input, field) in [
        (
            json!({"venueId": f.venue, "patronId": patron, "kind": "Bad Kind", "severity": "LOW"}),
            "kind",
        ),
        (
            json!({"venueId": f.venue, "kind": "warning", "severity": "LOW"}),
            "patronId",
        ),
        (
            json!({"venueId": f.venue, "stationId": f.station, "kind": "check", "note": "x".repeat(2001), "severity": "LOW"}),
            "note",
        ),
    ] {
        let body = app.gql(Some(&staff), record, json!({"i": input})).await;
        assert_eq!(gql_code(&body), "validation_failed", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    let body = app
        .gql(Some(&staff), "{ safetyLog(limit: 0) { id } }", json!({}))
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "limit");
}

#[tokio::test]
async fn the_audit_log_shows_who_did_what_from_where_and_scoped_managers_read_their_venues_only() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (other, _) = second_venue(&app, &f).await;
    let (_, manager) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let raise = json!({"query": "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }", "variables": {"v": f.venue}});
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&f.t.access)
        .header("user-agent", "StaffApp/1.0")
        .header("x-request-id", "req-sos-1")
        .json(&raise)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    app.gql_ok(
        &f.t.access,
        "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }",
        json!({"v": other}),
    )
    .await;

    let log = app
        .gql_ok(&f.t.access, "{ auditLog(action: \"sos.raise\") { action objectType venueId requestId ip userAgent } }", json!({}))
        .await;
    let entries = log["auditLog"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let first = entries
        .iter()
        .find(|e| e["venueId"] == json!(f.venue))
        .unwrap();
    assert_eq!(first["requestId"], "req-sos-1");
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["userAgent"], "StaffApp/1.0");
    let scoped = app
        .gql_ok(
            &manager,
            "{ auditLog(action: \"sos.raise\") { venueId } }",
            json!({}),
        )
        .await;
    assert_eq!(scoped["auditLog"], json!([{"venueId": f.venue}]));
    let (_, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let body = app
        .gql(Some(&staff), "{ auditLog { id } }", json!({}))
        .await;
    assert_eq!(gql_code(&body), "forbidden");
    let body = app
        .gql(
            Some(&f.t.access),
            "{ auditLog(limit: 501) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "limit");
}

#[tokio::test]
async fn staff_starting_a_session_for_a_flagged_patron_are_warned_until_a_manager_unflags_it() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Flo", None).await;
    crate::sessions::top_up(&app, &f, patron, 1000, "flagged-top-up").await;
    let (_, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let flag = app
        .gql_ok(
            &staff,
            "mutation($p: UUID!) { flagPatron(patronId: $p, reason: \"threatened staff\") { patronId reason } }",
            json!({"p": patron}),
        )
        .await;
    assert_eq!(
        flag["flagPatron"],
        json!({"patronId": patron, "reason": "threatened staff"})
    );
    let started = app
        .gql_ok(
            &staff,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, durationMinutes: 10, payment: WALLET}) { id patronFlag } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    assert_eq!(started["startSession"]["patronFlag"], "threatened staff");

    let body = app
        .gql(
            Some(&staff),
            "mutation($p: UUID!) { unflagPatron(patronId: $p) }",
            json!({"p": patron}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden", "staff do not unflag");
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($p: UUID!) { unflagPatron(patronId: $p) }",
            json!({"p": patron}),
        )
        .await;
    assert_eq!(data["unflagPatron"], true);
    let seen = app
        .gql_ok(
            &staff,
            "query($p: UUID!) { patron(id: $p) { flagged flagReason } }",
            json!({"p": patron}),
        )
        .await;
    assert_eq!(
        seen["patron"],
        json!({"flagged": false, "flagReason": null})
    );
    let stored: Option<String> =
        sqlx::query_scalar("select flag_reason from patron where tenant_id = $1 and id = $2")
            .bind(f.t.id)
            .bind(patron)
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_eq!(stored, None);
}

#[tokio::test]
async fn a_station_of_a_venue_the_member_cannot_see_is_not_found_where_an_owner_hears_it_is_elsewhere(
) {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (_, elsewhere) = second_venue(&app, &f).await;
    let (_, manager) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let attempts = [
        (
            "mutation($v: UUID!, $s: UUID!) { raiseSos(input: {venueId: $v, stationId: $s, severity: LOW}) { id } }",
            json!({"v": f.venue, "s": elsewhere}),
        ),
        (
            "mutation($v: UUID!, $s: UUID!) { createTask(input: {venueId: $v, stationId: $s, title: \"Clean\"}) { id } }",
            json!({"v": f.venue, "s": elsewhere}),
        ),
        (
            "mutation($t: UUID!, $v: UUID!, $s: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v, stationId: $s}) { id } }",
            json!({"t": f.tariff, "v": f.venue, "s": elsewhere}),
        ),
    ];
    for (mutation, variables) in attempts {
        let scoped = app.gql(Some(&manager), mutation, variables.clone()).await;
        assert_eq!(gql_code(&scoped), "not_found", "{mutation}: {scoped}");
        let owner = app.gql(Some(&f.t.access), mutation, variables).await;
        assert_eq!(gql_code(&owner), "validation_failed", "{mutation}: {owner}");
    }
    // Nothing was written by either.
    let sos = app
        .gql_ok(&f.t.access, "{ incidents { id } tasks { id } }", json!({}))
        .await;
    assert_eq!(sos, json!({"incidents": [], "tasks": []}));
}
