//! SOS from raise to resolve, the incident log, patrons raising SOS, and tasks.

use serde_json::{json, Value};
use switchyard_tests::{gql_code, spawn_app, unique_email};
use uuid::Uuid;

use super::{add_scoped, events, id};
use crate::sessions::floor;

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
        .gql_ok(
            &staff,
            &format!("mutation($id: UUID!) {{ acknowledgeSos(id: $id) {{ {SOS} }} }}"),
            json!({"id": sos_id}),
        )
        .await;
    assert_eq!(ack["acknowledgeSos"]["status"], "ACKNOWLEDGED");
    assert!(
        ack["acknowledgeSos"]["seconds_to_acknowledge"]
            .as_i64()
            .unwrap()
            >= 0
    );
    let answered = app
        .gql_ok(
            &f.t.access,
            &format!("mutation($id: UUID!) {{ respondToSos(id: $id, note: \"first aid given\") {{ {SOS} }} }}"),
            json!({"id": sos_id}),
        )
        .await;
    assert_eq!(answered["respondToSos"]["responseNote"], "first aid given");
    assert_eq!(
        answered["respondToSos"]["acknowledgedAt"],
        ack["acknowledgeSos"]["acknowledgedAt"]
    );
    let resolved = app
        .gql_ok(&staff, &format!("mutation($id: UUID!) {{ resolveSos(id: $id, note: \"ambulance left\") {{ {SOS} }} }}"), json!({"id": sos_id}))
        .await;
    assert_eq!(resolved["resolveSos"]["status"], "RESOLVED");
    assert!(resolved["resolveSos"]["secondsToResolve"].as_i64().unwrap() >= 0);
    let again = app
        .gql(
            Some(&staff),
            "mutation($id: UUID!) { respondToSos(id: $id, note: \"late\") { id } }",
            json!({"id": sos_id}),
        )
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
    assert_eq!(
        (status.as_str(), acked, resolved_at),
        ("resolved", true, true)
    );
    let kinds: Vec<(String, Option<Uuid>)> = events(&app, f.t.id, "sos")
        .await
        .into_iter()
        .map(|(k, v, _)| (k, v))
        .collect();
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
    assert!(lines[1].starts_with(&format!(
        "{sos_id},{},{},critical,resolved,by PC-1,patron collapsed",
        f.venue, f.station
    )));
    let body = app
        .gql(Some(&staff), "{ incidents { id } }", json!({}))
        .await;
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
    // Another operator's venue or station is not found, and raises nothing there.
    let other = floor(&app).await;
    for (query, variables) in [
        (
            "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: HIGH}) { id } }",
            json!({"v": other.venue}),
        ),
        (
            "mutation($v: UUID!, $s: UUID!) { raiseSos(input: {venueId: $v, stationId: $s, severity: HIGH}) { id } }",
            json!({"v": f.venue, "s": other.station}),
        ),
    ] {
        let body = app.gql(Some(patron), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query}: {body}");
    }
    let raised: Vec<(Uuid,)> =
        sqlx::query_as("select tenant_id from sos where tenant_id = any($1)")
            .bind([f.t.id, other.t.id])
            .fetch_all(&app.owner)
            .await
            .unwrap();
    assert_eq!(raised, [(f.t.id,)], "only the patron's own SOS");
    let stored: Option<Uuid> = sqlx::query_scalar(
        "select patron_id from live_event where tenant_id = $1 and kind = 'sos.raised'",
    )
    .bind(f.t.id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(stored, Some(patron_id), "the patron hears of its own SOS");
    let body = app
        .gql(
            Some(patron),
            "mutation($id: UUID!) { acknowledgeSos(id: $id) { id } }",
            json!({"id": data["raiseSos"]["id"]}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");

    app.gql_ok(
        &f.t.access,
        "mutation($p: UUID!, $v: UUID!) { flagPatron(patronId: $p, reason: \"aggressive to staff\", venueId: $v) { reason } }",
        json!({"p": patron_id, "v": f.venue}),
    )
    .await;
    let me = app
        .gql_ok(patron, "{ myProfile { flagged flagReason } }", json!({}))
        .await;
    assert_eq!(
        me["myProfile"],
        json!({"flagged": null, "flagReason": null})
    );
    let seen = app
        .gql_ok(
            &f.t.access,
            "query($p: UUID!) { patron(id: $p) { flagged flagReason } }",
            json!({"p": patron_id}),
        )
        .await;
    assert_eq!(
        seen["patron"],
        json!({"flagged": true, "flagReason": "aggressive to staff"})
    );
    let flagged: (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("select venue_id, patron_id from live_event where tenant_id = $1 and kind = 'patron.flagged'")
            .bind(f.t.id)
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_eq!(
        flagged,
        (Some(f.venue), None),
        "members of the venue hear it, the patron does not"
    );
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
        .gql_ok(
            &f.t.access,
            create,
            json!({"i": {"venueId": f.venue, "title": "Restock", "dueAt": "2999-01-01T00:00:00Z"}}),
        )
        .await;
    let later_id = id(&later["createTask"]["id"]);
    assert_eq!(later["createTask"]["overdue"], false);

    let body = app
        .gql(
            Some(&staff),
            create,
            json!({"i": {"venueId": f.venue, "title": "x"}}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden", "staff do not create tasks");
    let body = app
        .gql(
            Some(&f.t.access),
            create,
            json!({"i": {"venueId": f.venue, "title": "  "}}),
        )
        .await;
    assert_eq!(gql_code(&body), "validation_failed");
    assert_eq!(body["errors"][0]["extensions"]["field"], "title");

    let mine = app
        .gql_ok(
            &staff,
            "{ tasks(mine: true) { id } overdue: tasks(state: OVERDUE) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(mine["tasks"], json!([{"id": late_id}]));
    assert_eq!(mine["overdue"], json!([{"id": late_id}]));
    app.gql_ok(
        &f.t.access,
        "mutation($id: UUID!, $u: UUID!) { assignTask(id: $id, assigneeUserId: $u) { assigneeUserId } }",
        json!({"id": later_id, "u": staff_id}),
    )
    .await;
    let done = app
        .gql_ok(
            &staff,
            "mutation($id: UUID!) { completeTask(id: $id) { status overdue completedBy } }",
            json!({"id": late_id}),
        )
        .await;
    assert_eq!(
        done["completeTask"],
        json!({"status": "DONE", "overdue": false, "completedBy": staff_id})
    );
    let cancelled = app
        .gql_ok(
            &f.t.access,
            "mutation($id: UUID!) { cancelTask(id: $id) { status } }",
            json!({"id": later_id}),
        )
        .await;
    assert_eq!(cancelled["cancelTask"]["status"], "CANCELLED");
    let body = app
        .gql(
            Some(&staff),
            "mutation($id: UUID!) { completeTask(id: $id) { status } }",
            json!({"id": later_id}),
        )
        .await;
    assert_eq!(gql_code(&body), "conflict");

    let kinds: Vec<(String, Option<Uuid>)> = events(&app, f.t.id, "task")
        .await
        .into_iter()
        .map(|(k, _, u)| (k, u))
        .collect();
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
