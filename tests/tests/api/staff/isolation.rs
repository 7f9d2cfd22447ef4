//! Another tenant's staff-tools ids answer `not_found` and change nothing.

use serde_json::json;
use switchyard_tests::{gql_code, spawn_app, Tenant, TestApp};

use super::id;
use crate::sessions::floor;

/// Every staff-tools row of `tenant`, as text.
async fn snapshot(app: &TestApp, t: &Tenant) -> Vec<(String,)> {
    sqlx::query_as(
        "select row(s.*)::text from sos s where tenant_id = $1
         union all select row(k.*)::text from staff_task k where tenant_id = $1
         union all select row(h.*)::text from staff_shift h where tenant_id = $1
         union all select row(e.*)::text from safety_entry e where tenant_id = $1
         union all select row(p.id, p.flagged_at, p.flag_reason)::text from patron p where tenant_id = $1
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
        .gql_ok(
            &a.t.access,
            "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: HIGH}) { id } }",
            json!({"v": a.venue}),
        )
        .await;
    let sos = id(&data["raiseSos"]["id"]);
    let data = app
        .gql_ok(
            &a.t.access,
            "mutation($v: UUID!) { createTask(input: {venueId: $v, title: \"Mop\"}) { id } }",
            json!({"v": a.venue}),
        )
        .await;
    let task = id(&data["createTask"]["id"]);
    let data = app
        .gql_ok(
            &a.t.access,
            "mutation($v: UUID!) { clockIn(venueId: $v) { id } }",
            json!({"v": a.venue}),
        )
        .await;
    let shift = id(&data["clockIn"]["id"]);
    let data = app
        .gql_ok(
            &a.t.access,
            "mutation($v: UUID!, $s: UUID!) { recordSafetyEntry(input: {venueId: $v, stationId: $s, kind: \"check\", severity: LOW}) { id } }",
            json!({"v": a.venue, "s": a.station}),
        )
        .await;
    let entry = id(&data["recordSafetyEntry"]["id"]);
    let patron = app.create_patron(&a.t.access, "Kim", None).await;
    let before = snapshot(&app, &a.t).await;
    let (b_user, _) = app.add_member(&b, "STAFF").await;

    for (query, variables) in [
        (
            "query($id: UUID!) { sos(id: $id) { id } }",
            json!({"id": sos}),
        ),
        (
            "mutation($id: UUID!) { acknowledgeSos(id: $id) { id } }",
            json!({"id": sos}),
        ),
        (
            "mutation($id: UUID!) { respondToSos(id: $id, note: \"x\") { id } }",
            json!({"id": sos}),
        ),
        (
            "mutation($id: UUID!) { resolveSos(id: $id) { id } }",
            json!({"id": sos}),
        ),
        (
            "query($id: UUID!) { task(id: $id) { id } }",
            json!({"id": task}),
        ),
        (
            "mutation($id: UUID!, $u: UUID!) { assignTask(id: $id, assigneeUserId: $u) { id } }",
            json!({"id": task, "u": b_user}),
        ),
        (
            "mutation($id: UUID!) { completeTask(id: $id) { id } }",
            json!({"id": task}),
        ),
        (
            "mutation($id: UUID!) { cancelTask(id: $id) { id } }",
            json!({"id": task}),
        ),
        (
            "query($id: UUID!) { shift(id: $id) { id } }",
            json!({"id": shift}),
        ),
        (
            "mutation($id: UUID!) { clockOut(shiftId: $id) { id } }",
            json!({"id": shift}),
        ),
        (
            "query($id: UUID!) { safetyEntry(id: $id) { id } }",
            json!({"id": entry}),
        ),
        (
            "mutation($p: UUID!) { flagPatron(patronId: $p, reason: \"x\") { reason } }",
            json!({"p": patron}),
        ),
        (
            "mutation($p: UUID!) { unflagPatron(patronId: $p) }",
            json!({"p": patron}),
        ),
        (
            "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }",
            json!({"v": a.venue}),
        ),
        (
            "mutation($v: UUID!) { clockIn(venueId: $v) { id } }",
            json!({"v": a.venue}),
        ),
    ] {
        let body = app.gql(Some(&b.access), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query} -> {body}");
    }
    let lists = app
        .gql_ok(
            &b.access,
            "{ incidents { id } tasks { id } onShift { id } safetyLog { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        lists,
        json!({"incidents": [], "tasks": [], "onShift": [], "safetyLog": []})
    );
    assert_eq!(
        snapshot(&app, &a.t).await,
        before,
        "tenant A's rows are unchanged"
    );
}
