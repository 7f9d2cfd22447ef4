//! Staff tools (seed 001): venue-scoped members, SOS, tasks, shifts, the safety log and the audit log reader.

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{gql_code, spawn_app, unique_email, Tenant, TestApp};
use uuid::Uuid;

use crate::sessions::{floor, start, Floor};

/// Invites `role` confined to `venues` and accepts as a new login; returns (user id, access token).
async fn add_scoped(app: &TestApp, by: &str, role: &str, venues: &[Uuid]) -> (Uuid, String) {
    let email = unique_email(role);
    let data = app
        .gql_ok(
            by,
            "mutation($e: String!, $r: Role!, $v: [UUID!]) { inviteMember(email: $e, role: $r, venueIds: $v) { token invitation { venueIds } } }",
            json!({ "e": email, "r": role, "v": venues }),
        )
        .await;
    assert_eq!(data["inviteMember"]["invitation"]["venueIds"], json!(venues));
    let token = data["inviteMember"]["token"].as_str().unwrap();
    let body = app
        .gql(
            None,
            "mutation($t: String!) { acceptInvitation(token: $t, password: \"another-good-password\") { accessToken } }",
            json!({ "t": token }),
        )
        .await;
    let access = body["data"]["acceptInvitation"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app.gql_ok(&access, "{ me { userId } }", json!({})).await;
    (me["me"]["userId"].as_str().unwrap().parse().unwrap(), access)
}

/// A second venue with a station, under the floor's tariff.
async fn second_venue(app: &TestApp, f: &Floor) -> (Uuid, Uuid) {
    let venue = app.create_venue(&f.t.access, "Harbour").await;
    let station = app.create_station(&f.t.access, venue, "PC-9").await;
    app.gql_ok(
        &f.t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": f.tariff, "v": venue}),
    )
    .await;
    (venue, station)
}

fn id(v: &Value) -> Uuid {
    v.as_str().unwrap().parse().unwrap()
}

/// The kinds and venues of the tenant's stored live events of `topic`, in order.
async fn events(app: &TestApp, tenant: Uuid, topic: &str) -> Vec<(String, Option<Uuid>, Option<Uuid>)> {
    sqlx::query_as(
        "select kind, venue_id, user_id from live_event where tenant_id = $1 and kind like $2 || '.%' order by seq",
    )
    .bind(tenant)
    .bind(topic)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_staff_member_scoped_to_one_venue_sees_only_that_venue_and_not_found_for_the_other() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (other, other_station) = second_venue(&app, &f).await;
    let (code, other_session) = start(
        &app,
        &f.t.access,
        Some("other-venue-walk-in"),
        json!({"station_id": other_station, "duration_minutes": 30, "payment": "cash"}),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{other_session}");
    let other_session = other_session["session_id"].as_str().unwrap().to_owned();
    let (staff_id, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;

    let data = app
        .gql_ok(
            &staff,
            "{ venues { id } stations { id } sessions { id } members { userId venueIds } }",
            json!({}),
        )
        .await;
    assert_eq!(data["venues"], json!([{"id": f.venue}]));
    assert_eq!(data["stations"], json!([{"id": f.station}]));
    assert_eq!(data["sessions"], json!([]), "the other venue's session is not listed");
    let me = data["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["userId"] == json!(staff_id))
        .unwrap();
    assert_eq!(me["venueIds"], json!([f.venue]));

    for (query, variables) in [
        ("query($id: UUID!) { venue(id: $id) { id } }", json!({"id": other})),
        ("query($id: UUID!) { station(id: $id) { id } }", json!({"id": other_station})),
        ("query($id: UUID!) { session(id: $id) { id } }", json!({"id": other_session})),
        ("mutation($id: UUID!) { stopSession(id: $id) { id } }", json!({"id": other_session})),
        ("query($id: UUID!) { deviceCommands(stationId: $id) { id } }", json!({"id": other_station})),
        (
            "mutation($s: UUID!) { startSession(input: {stationId: $s, durationMinutes: 10, payment: CASH}) { id } }",
            json!({"s": other_station}),
        ),
        (
            "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: HIGH}) { id } }",
            json!({"v": other}),
        ),
        ("mutation($v: UUID!) { clockIn(venueId: $v) { id } }", json!({"v": other})),
    ] {
        let body = app.gql(Some(&staff), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query} -> {body}");
    }
    let status: String = sqlx::query_scalar("select status::text from session where tenant_id = $1 and id = $2")
        .bind(f.t.id)
        .bind(id(&json!(other_session)))
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(status, "active", "the other venue's session still runs");

    // REST answers the same way.
    let (code, body) = app.get(&format!("/api/v1/stations/{other_station}"), &staff).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (code, body) = app.get(&format!("/api/v1/sessions/{other_session}"), &staff).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    let (_, body) = app.get("/api/v1/dashboard", &staff).await;
    let venues: Vec<&Value> = body["venues"].as_array().unwrap().iter().map(|v| &v["venue_id"]).collect();
    assert_eq!(venues, [&json!(f.venue)]);

    // Widened by the owner, the member sees both at its next request.
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($u: UUID!) { setMemberVenues(userId: $u, venueIds: null) { venueIds } }",
            json!({"u": staff_id}),
        )
        .await;
    assert_eq!(data["setMemberVenues"]["venueIds"], Value::Null);
    let data = app.gql_ok(&staff, "{ venues { id } }", json!({})).await;
    assert_eq!(data["venues"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_scoped_manager_grants_only_its_own_venues() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (other, _) = second_venue(&app, &f).await;
    let (_, manager) = add_scoped(&app, &f.t.access, "MANAGER", &[f.venue]).await;
    let (staff_id, _) = add_scoped(&app, &manager, "STAFF", &[f.venue]).await;

    let set = "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { venueIds } }";
    let body = app.gql(Some(&manager), set, json!({"u": staff_id, "v": [other]})).await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let body = app.gql(Some(&manager), set, json!({"u": staff_id, "v": null})).await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let body = app.gql(Some(&manager), set, json!({"u": staff_id, "v": []})).await;
    assert_eq!(gql_code(&body), "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "venueIds");
    let body = app
        .gql(
            Some(&manager),
            "mutation($v: [UUID!]) { inviteMember(email: \"x@example.com\", role: STAFF, venueIds: $v) { token } }",
            json!({"v": [other]}),
        )
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let stored: Vec<Uuid> = sqlx::query_scalar("select venue_id from member_venue where tenant_id = $1 and user_id = $2")
        .bind(f.t.id)
        .bind(staff_id)
        .fetch_all(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(stored, [f.venue], "the staff member's venues are unchanged");
}

const SOS: &str = "id status severity location note seconds_to_acknowledge: secondsToAcknowledge
                   secondsToResolve acknowledgedAt respondedAt responseNote resolvedAt raisedByUser";

#[tokio::test]
async fn an_sos_is_raised_acknowledged_answered_and_resolved_with_its_response_times_and_events() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (staff_id, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let raised = app
        .gql_ok(
            &staff,
            &format!("mutation($v: UUID!, $s: UUID!) {{ raiseSos(input: {{venueId: $v, stationId: $s, severity: CRITICAL, location: \"by PC-1\", note: \"patron collapsed\"}}) {{ {SOS} }} }}"),
            json!({"v": f.venue, "s": f.station}),
        )
        .await;
    let sos = &raised["raiseSos"];
    assert_eq!(sos["status"], "RAISED");
    assert_eq!(sos["severity"], "CRITICAL");
    assert_eq!(sos["raisedByUser"], json!(staff_id));
    assert_eq!(sos["seconds_to_acknowledge"], Value::Null);
    let sos_id = id(&sos["id"]);

    let ack = app
        .gql_ok(&staff, &format!("mutation($id: UUID!) {{ acknowledgeSos(id: $id) {{ {SOS} }} }}"), json!({"id": sos_id}))
        .await;
    assert_eq!(ack["acknowledgeSos"]["status"], "ACKNOWLEDGED");
    assert!(ack["acknowledgeSos"]["seconds_to_acknowledge"].as_i64().unwrap() >= 0);
    let answered = app
        .gql_ok(
            &f.t.access,
            &format!("mutation($id: UUID!) {{ respondToSos(id: $id, note: \"first aid given\") {{ {SOS} }} }}"),
            json!({"id": sos_id}),
        )
        .await;
    assert_eq!(answered["respondToSos"]["responseNote"], "first aid given");
    assert_eq!(answered["respondToSos"]["acknowledgedAt"], ack["acknowledgeSos"]["acknowledgedAt"]);
    let resolved = app
        .gql_ok(&staff, &format!("mutation($id: UUID!) {{ resolveSos(id: $id, note: \"ambulance left\") {{ {SOS} }} }}"), json!({"id": sos_id}))
        .await;
    assert_eq!(resolved["resolveSos"]["status"], "RESOLVED");
    assert!(resolved["resolveSos"]["secondsToResolve"].as_i64().unwrap() >= 0);
    let again = app
        .gql(Some(&staff), "mutation($id: UUID!) { respondToSos(id: $id, note: \"late\") { id } }", json!({"id": sos_id}))
        .await;
    assert_eq!(gql_code(&again), "conflict");

    let (status, acked, resolved_at): (String, bool, bool) = sqlx::query_as(
        "select status::text, acknowledged_at is not null, resolved_at >= acknowledged_at from sos where tenant_id = $1 and id = $2",
    )
    .bind(f.t.id)
    .bind(sos_id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!((status.as_str(), acked, resolved_at), ("resolved", true, true));
    let kinds: Vec<(String, Option<Uuid>)> =
        events(&app, f.t.id, "sos").await.into_iter().map(|(k, v, _)| (k, v)).collect();
    let v = Some(f.venue);
    assert_eq!(
        kinds,
        [
            ("sos.raised".to_owned(), v),
            ("sos.acknowledged".to_owned(), v),
            ("sos.responded".to_owned(), v),
            ("sos.resolved".to_owned(), v)
        ]
    );

    // The incident log and its CSV (managers and owners only).
    let log = app
        .gql_ok(
            &f.t.access,
            "query($v: UUID!) { incidents(venueId: $v, status: RESOLVED) { id } incidentsCsv(venueId: $v) }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(log["incidents"], json!([{"id": sos_id}]));
    let csv = log["incidentsCsv"].as_str().unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("id,venue_id,station_id,severity,status"));
    assert!(lines[1].starts_with(&format!("{sos_id},{},{},critical,resolved,by PC-1,patron collapsed", f.venue, f.station)));
    let body = app.gql(Some(&staff), "{ incidents { id } }", json!({})).await;
    assert_eq!(gql_code(&body), "forbidden");
}

#[tokio::test]
async fn a_signed_in_patron_raises_an_sos_and_hears_of_it_but_never_of_its_flag() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let email = unique_email("patron");
    let (status, pair) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": f.t.id, "display_name": "Ada", "email": email, "password": "Blue-Lantern-77"}),
        )
        .await;
    assert!(status.is_success(), "{pair}");
    let patron = pair["access_token"].as_str().unwrap();
    let data = app
        .gql_ok(
            patron,
            "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: MEDIUM, note: \"someone is following me\"}) { id raisedByPatron raisedByUser } }",
            json!({"v": f.venue}),
        )
        .await;
    let patron_id = id(&data["raiseSos"]["raisedByPatron"]);
    assert_eq!(data["raiseSos"]["raisedByUser"], Value::Null);
    let stored: Option<Uuid> = sqlx::query_scalar("select patron_id from live_event where tenant_id = $1 and kind = 'sos.raised'")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(stored, Some(patron_id), "the patron hears of its own SOS");
    let body = app.gql(Some(patron), "mutation($id: UUID!) { acknowledgeSos(id: $id) { id } }", json!({"id": data["raiseSos"]["id"]})).await;
    assert_eq!(gql_code(&body), "forbidden");

    app.gql_ok(
        &f.t.access,
        "mutation($p: UUID!, $v: UUID!) { flagPatron(patronId: $p, reason: \"aggressive to staff\", venueId: $v) { reason } }",
        json!({"p": patron_id, "v": f.venue}),
    )
    .await;
    let me = app.gql_ok(patron, "{ myProfile { flagged flagReason } }", json!({})).await;
    assert_eq!(me["myProfile"], json!({"flagged": null, "flagReason": null}));
    let seen = app
        .gql_ok(&f.t.access, "query($p: UUID!) { patron(id: $p) { flagged flagReason } }", json!({"p": patron_id}))
        .await;
    assert_eq!(seen["patron"], json!({"flagged": true, "flagReason": "aggressive to staff"}));
    let flagged: (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("select venue_id, patron_id from live_event where tenant_id = $1 and kind = 'patron.flagged'")
            .bind(f.t.id)
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_eq!(flagged, (Some(f.venue), None), "members of the venue hear it, the patron does not");
}

#[tokio::test]
async fn tasks_are_assigned_listed_flagged_overdue_completed_and_cancelled() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (staff_id, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let create = "mutation($i: CreateTaskInput!) { createTask(input: $i) { id status overdue assigneeUserId } }";
    let late = app
        .gql_ok(
            &f.t.access,
            create,
            json!({"i": {"venueId": f.venue, "stationId": f.station, "title": "Clean PC-1", "assigneeUserId": staff_id, "dueAt": "2020-01-01T00:00:00Z"}}),
        )
        .await;
    assert_eq!(late["createTask"]["overdue"], true);
    let late_id = id(&late["createTask"]["id"]);
    let later = app
        .gql_ok(&f.t.access, create, json!({"i": {"venueId": f.venue, "title": "Restock", "dueAt": "2999-01-01T00:00:00Z"}}))
        .await;
    let later_id = id(&later["createTask"]["id"]);
    assert_eq!(later["createTask"]["overdue"], false);

    let body = app.gql(Some(&staff), create, json!({"i": {"venueId": f.venue, "title": "x"}})).await;
    assert_eq!(gql_code(&body), "forbidden", "staff do not create tasks");
    let body = app.gql(Some(&f.t.access), create, json!({"i": {"venueId": f.venue, "title": "  "}})).await;
    assert_eq!(gql_code(&body), "validation_failed");
    assert_eq!(body["errors"][0]["extensions"]["field"], "title");

    let mine = app.gql_ok(&staff, "{ tasks(mine: true) { id } overdue: tasks(state: OVERDUE) { id } }", json!({})).await;
    assert_eq!(mine["tasks"], json!([{"id": late_id}]));
    assert_eq!(mine["overdue"], json!([{"id": late_id}]));
    app.gql_ok(
        &f.t.access,
        "mutation($id: UUID!, $u: UUID!) { assignTask(id: $id, assigneeUserId: $u) { assigneeUserId } }",
        json!({"id": later_id, "u": staff_id}),
    )
    .await;
    let done = app.gql_ok(&staff, "mutation($id: UUID!) { completeTask(id: $id) { status overdue completedBy } }", json!({"id": late_id})).await;
    assert_eq!(done["completeTask"], json!({"status": "DONE", "overdue": false, "completedBy": staff_id}));
    let cancelled = app.gql_ok(&f.t.access, "mutation($id: UUID!) { cancelTask(id: $id) { status } }", json!({"id": later_id})).await;
    assert_eq!(cancelled["cancelTask"]["status"], "CANCELLED");
    let body = app.gql(Some(&staff), "mutation($id: UUID!) { completeTask(id: $id) { status } }", json!({"id": later_id})).await;
    assert_eq!(gql_code(&body), "conflict");

    let kinds: Vec<(String, Option<Uuid>)> =
        events(&app, f.t.id, "task").await.into_iter().map(|(k, _, u)| (k, u)).collect();
    let s = Some(staff_id);
    assert_eq!(
        kinds,
        [
            ("task.created".to_owned(), s),
            ("task.created".to_owned(), None),
            ("task.assigned".to_owned(), s),
            ("task.completed".to_owned(), s),
            ("task.cancelled".to_owned(), s)
        ]
    );
}

#[tokio::test]
async fn staff_clock_in_once_at_a_time_show_on_shift_and_their_hours_add_up() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (staff_id, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let shift = app.gql_ok(&staff, "mutation($v: UUID!) { clockIn(venueId: $v) { id userId endedAt } }", json!({"v": f.venue})).await;
    let shift_id = id(&shift["clockIn"]["id"]);
    let body = app.gql(Some(&staff), "mutation($v: UUID!) { clockIn(venueId: $v) { id } }", json!({"v": f.venue})).await;
    assert_eq!(gql_code(&body), "conflict", "{body}");
    let on = app.gql_ok(&f.t.access, "query($v: UUID!) { onShift(venueId: $v) { id userId } }", json!({"v": f.venue})).await;
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
    let out = app.gql_ok(&staff, "mutation { clockOut { id endedAt } }", json!({})).await;
    assert_eq!(out["clockOut"]["id"], json!(shift_id));
    let body = app.gql(Some(&staff), "mutation { clockOut { id } }", json!({})).await;
    assert_eq!(gql_code(&body), "conflict");
    let hours = app
        .gql_ok(
            &f.t.access,
            "query($f: DateTime!, $t: DateTime!) { shiftHours(from: $f, to: $t) { userId hours shifts } }",
            json!({"f": chrono::Utc::now() - chrono::Duration::days(1), "t": chrono::Utc::now() + chrono::Duration::hours(1)}),
        )
        .await;
    assert_eq!(hours["shiftHours"], json!([{"userId": staff_id, "hours": 8.0, "shifts": 1}]));
    let body = app
        .gql(Some(&f.t.access), "{ shiftHours(from: \"2026-02-01T00:00:00Z\", to: \"2026-01-01T00:00:00Z\") { hours } }", json!({}))
        .await;
    assert_eq!(gql_code(&body), "validation_failed");
    assert_eq!(body["errors"][0]["extensions"]["field"], "to");
    let kinds: Vec<String> = events(&app, f.t.id, "shift").await.into_iter().map(|(k, _, _)| k).collect();
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
    let log = app.gql_ok(&staff, "query($p: UUID!) { safetyLog(patronId: $p) { id note } }", json!({"p": patron})).await;
    assert_eq!(log["safetyLog"], json!([{"id": entry["recordSafetyEntry"]["id"], "note": "shouting"}]));
    for (input, field) in [
        (json!({"venueId": f.venue, "patronId": patron, "kind": "Bad Kind", "severity": "LOW"}), "kind"),
        (json!({"venueId": f.venue, "kind": "warning", "severity": "LOW"}), "patronId"),
        (json!({"venueId": f.venue, "stationId": f.station, "kind": "check", "note": "x".repeat(2001), "severity": "LOW"}), "note"),
    ] {
        let body = app.gql(Some(&staff), record, json!({"i": input})).await;
        assert_eq!(gql_code(&body), "validation_failed", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    let body = app.gql(Some(&staff), "{ safetyLog(limit: 0) { id } }", json!({})).await;
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
    app.gql_ok(&f.t.access, "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }", json!({"v": other}))
        .await;

    let log = app
        .gql_ok(&f.t.access, "{ auditLog(action: \"sos.raise\") { action objectType venueId requestId ip userAgent } }", json!({}))
        .await;
    let entries = log["auditLog"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let first = entries.iter().find(|e| e["venueId"] == json!(f.venue)).unwrap();
    assert_eq!(first["requestId"], "req-sos-1");
    assert_eq!(first["ip"], "127.0.0.1");
    assert_eq!(first["userAgent"], "StaffApp/1.0");
    let scoped = app.gql_ok(&manager, "{ auditLog(action: \"sos.raise\") { venueId } }", json!({})).await;
    assert_eq!(scoped["auditLog"], json!([{"venueId": f.venue}]));
    let (_, staff) = add_scoped(&app, &f.t.access, "STAFF", &[f.venue]).await;
    let body = app.gql(Some(&staff), "{ auditLog { id } }", json!({})).await;
    assert_eq!(gql_code(&body), "forbidden");
    let body = app.gql(Some(&f.t.access), "{ auditLog(limit: 501) { id } }", json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "limit");
}

/// Every staff-tools row of `tenant`, as text.
async fn snapshot(app: &TestApp, t: &Tenant) -> Vec<(String,)> {
    sqlx::query_as(
        "select row(s.*)::text from sos s where tenant_id = $1
         union all select row(k.*)::text from staff_task k where tenant_id = $1
         union all select row(h.*)::text from staff_shift h where tenant_id = $1
         union all select row(e.*)::text from safety_entry e where tenant_id = $1
         order by 1",
    )
    .bind(t.id)
    .fetch_all(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn another_tenants_sos_task_shift_and_safety_ids_are_not_found_and_change_nothing() {
    let app = spawn_app().await;
    let a = floor(&app).await;
    let b = app.signup().await;
    let data = app
        .gql_ok(&a.t.access, "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: HIGH}) { id } }", json!({"v": a.venue}))
        .await;
    let sos = id(&data["raiseSos"]["id"]);
    let data = app
        .gql_ok(&a.t.access, "mutation($v: UUID!) { createTask(input: {venueId: $v, title: \"Mop\"}) { id } }", json!({"v": a.venue}))
        .await;
    let task = id(&data["createTask"]["id"]);
    let data = app.gql_ok(&a.t.access, "mutation($v: UUID!) { clockIn(venueId: $v) { id } }", json!({"v": a.venue})).await;
    let shift = id(&data["clockIn"]["id"]);
    let data = app
        .gql_ok(
            &a.t.access,
            "mutation($v: UUID!, $s: UUID!) { recordSafetyEntry(input: {venueId: $v, stationId: $s, kind: \"check\", severity: LOW}) { id } }",
            json!({"v": a.venue, "s": a.station}),
        )
        .await;
    let entry = id(&data["recordSafetyEntry"]["id"]);
    let before = snapshot(&app, &a.t).await;
    let (b_user, _) = app.add_member(&b, "STAFF").await;

    for (query, variables) in [
        ("query($id: UUID!) { sos(id: $id) { id } }", json!({"id": sos})),
        ("mutation($id: UUID!) { acknowledgeSos(id: $id) { id } }", json!({"id": sos})),
        ("mutation($id: UUID!) { respondToSos(id: $id, note: \"x\") { id } }", json!({"id": sos})),
        ("mutation($id: UUID!) { resolveSos(id: $id) { id } }", json!({"id": sos})),
        ("query($id: UUID!) { task(id: $id) { id } }", json!({"id": task})),
        ("mutation($id: UUID!, $u: UUID!) { assignTask(id: $id, assigneeUserId: $u) { id } }", json!({"id": task, "u": b_user})),
        ("mutation($id: UUID!) { completeTask(id: $id) { id } }", json!({"id": task})),
        ("mutation($id: UUID!) { cancelTask(id: $id) { id } }", json!({"id": task})),
        ("query($id: UUID!) { shift(id: $id) { id } }", json!({"id": shift})),
        ("mutation($id: UUID!) { clockOut(shiftId: $id) { id } }", json!({"id": shift})),
        ("query($id: UUID!) { safetyEntry(id: $id) { id } }", json!({"id": entry})),
        ("mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }", json!({"v": a.venue})),
        ("mutation($v: UUID!) { clockIn(venueId: $v) { id } }", json!({"v": a.venue})),
    ] {
        let body = app.gql(Some(&b.access), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query} -> {body}");
    }
    let lists = app
        .gql_ok(&b.access, "{ incidents { id } tasks { id } onShift { id } safetyLog { id } }", json!({}))
        .await;
    assert_eq!(lists, json!({"incidents": [], "tasks": [], "onShift": [], "safetyLog": []}));
    assert_eq!(snapshot(&app, &a.t).await, before, "tenant A's rows are unchanged");
}
