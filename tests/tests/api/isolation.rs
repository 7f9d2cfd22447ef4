//! Tenant B using tenant A's ids gets "not found" everywhere and changes nothing; lists never mix tenants.

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{gql_code, spawn_app};

/// Every venue, station and membership row of `tenant`, as text, to compare before and after.
async fn snapshot(app: &switchyard_tests::TestApp, tenant: uuid::Uuid) -> Vec<(String,)> {
    sqlx::query_as(
        "select row(v.*)::text from venue v where tenant_id = $1
         union all select row(s.*)::text from station s where tenant_id = $1
         union all select row(m.*)::text from membership m where tenant_id = $1
         order by 1",
    )
    .bind(tenant)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_in_every_graphql_field_and_rest_route() {
    let app = spawn_app().await;
    let a = app.signup().await;
    let b = app.signup().await;
    let a_venue = app.create_venue(&a.access, "A venue").await;
    let a_station = app.create_station(&a.access, a_venue, "A station").await;
    let (a_member, _) = app.add_member(&a, "STAFF").await;
    let b_venue = app.create_venue(&b.access, "B venue").await;
    let before = snapshot(&app, a.id).await;

    let cases: Vec<(&str, Value)> = vec![
        ("query($id: UUID!) { venue(id: $id) { name } }", json!({"id": a_venue})),
        ("query($id: UUID!) { station(id: $id) { name } }", json!({"id": a_station})),
        ("mutation($id: UUID!) { updateVenue(id: $id, input: {name: \"pwned\"}) { name } }", json!({"id": a_venue})),
        ("mutation($id: UUID!) { archiveVenue(id: $id) { id } }", json!({"id": a_venue})),
        ("mutation($id: UUID!) { updateStation(id: $id, input: {name: \"pwned\"}) { name } }", json!({"id": a_station})),
        ("mutation($id: UUID!) { archiveStation(id: $id) { id } }", json!({"id": a_station})),
        (
            "mutation($v: UUID!) { createStation(input: {venueId: $v, name: \"x\", kind: PC, control: AGENT}) { id } }",
            json!({"v": a_venue}),
        ),
        ("mutation($u: UUID!) { changeMemberRole(userId: $u, role: MANAGER) { role } }", json!({"u": a_member})),
        ("mutation($u: UUID!) { removeMember(userId: $u) { role } }", json!({"u": a_member})),
    ];
    for (query, variables) in cases {
        let body = app.gql(Some(&b.access), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query} -> {body}");
        assert_eq!(body["data"], Value::Null, "{query}");
    }
    // Nested fields resolve within B only.
    let data = app
        .gql_ok(
            &b.access,
            "query($id: UUID!) { venue(id: $id) { stations { id } } }",
            json!({"id": b_venue}),
        )
        .await;
    assert_eq!(data["venue"]["stations"], json!([]));

    let (status, body) = app
        .get(&format!("/api/v1/stations/{a_station}"), &b.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = app
        .get(&format!("/api/v1/stations?venue_id={a_venue}"), &b.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");

    assert_eq!(
        snapshot(&app, a.id).await,
        before,
        "tenant A's rows are unchanged"
    );
}

#[tokio::test]
async fn lists_show_only_the_callers_tenant() {
    let app = spawn_app().await;
    let a = app.signup().await;
    let b = app.signup().await;
    let a_venue = app.create_venue(&a.access, "Only A").await;
    app.create_station(&a.access, a_venue, "A-PC").await;
    let b_venue = app.create_venue(&b.access, "Only B").await;
    app.create_station(&b.access, b_venue, "B-PC").await;

    let data = app
        .gql_ok(
            &b.access,
            "{ venues { name } stations { name } members { email } tenant { id } }",
            json!({}),
        )
        .await;
    assert_eq!(data["venues"], json!([{"name": "Only B"}]));
    assert_eq!(data["stations"], json!([{"name": "B-PC"}]));
    assert_eq!(data["members"], json!([{"email": b.email.to_lowercase()}]));
    assert_eq!(data["tenant"]["id"], b.id.to_string());
    let (_, body) = app.get("/api/v1/stations", &b.access).await;
    let names: Vec<&str> = body["stations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["B-PC"]);
}

#[tokio::test]
async fn the_same_names_may_exist_in_two_tenants() {
    let app = spawn_app().await;
    let a = app.signup().await;
    let b = app.signup().await;
    let va = app.create_venue(&a.access, "Main Street").await;
    let vb = app.create_venue(&b.access, "Main Street").await;
    app.create_station(&a.access, va, "PC-01").await;
    app.create_station(&b.access, vb, "PC-01").await;
}

/// Every row of `tenant` in the tables the cases below could write, as text, to compare before and after.
async fn everything(app: &switchyard_tests::TestApp, tenant: uuid::Uuid) -> Vec<(String,)> {
    let tables = [
        "venue",
        "station",
        "membership",
        "member_venue",
        "invitation",
        "tariff_assignment",
        "patron",
        "patron_card",
        "session",
        "staff_task",
        "sos",
        "safety_entry",
        "bridge",
        "invoice",
        "ledger_balance",
    ];
    let sql = tables
        .iter()
        .map(|t| format!("select '{t}: ' || row(x.*)::text from {t} x where tenant_id = $1"))
        .collect::<Vec<_>>()
        .join(" union all ")
        + " order by 1";
    sqlx::query_as(&sql)
        .bind(tenant)
        .fetch_all(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap()
}

/// The ids a field takes besides its subject (a venue to file under, a station or patron it concerns, a member to
/// assign) and the filters of lists: another tenant's id is `not_found`, or filters to nothing while the caller's own
/// rows exist, and changes nothing of the other tenant's.
#[tokio::test]
async fn another_tenants_ids_as_arguments_and_filters_are_not_found_and_change_nothing() {
    use crate::sessions::{floor, patron_with_cash, start};
    let app = spawn_app().await;
    let a = floor(&app).await;
    let b = floor(&app).await;
    let a_patron = patron_with_cash(&app, &a, 1_000).await;
    let b_patron = patron_with_cash(&app, &b, 1_000).await;
    let (a_member, _) = app.add_member(&a.t, "STAFF").await;
    let (b_member, _) = app.add_member(&b.t, "STAFF").await;
    let session = |t: &switchyard_tests::Tenant, station, patron, key: &'static str| {
        let token = t.access.clone();
        let app = &app;
        async move {
            let (status, started) = start(
                app,
                &token,
                Some(key),
                json!({"station_id": station, "patron_id": patron, "duration_minutes": 10, "payment": "wallet"}),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{started}");
            started["session_id"].as_str().unwrap().to_owned()
        }
    };
    let a_session = session(&a.t, a.station, a_patron, "a").await;
    let b_session = session(&b.t, b.station, b_patron, "b").await;
    // B's own rows, which a filter that was ignored would show.
    let b_task = app
        .gql_ok(
            &b.t.access,
            "mutation($v: UUID!) { createTask(input: {venueId: $v, title: \"mop\"}) { id } }",
            json!({"v": b.venue}),
        )
        .await["createTask"]["id"]
        .clone();
    app.gql_ok(
        &b.t.access,
        "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }",
        json!({"v": b.venue}),
    )
    .await;
    app.gql_ok(
        &b.t.access,
        "mutation($v: UUID!, $p: UUID!, $s: UUID!) {
           recordSafetyEntry(input: {venueId: $v, patronId: $p, stationId: $s, kind: \"warning\", severity: LOW}) { id } }",
        json!({"v": b.venue, "p": b_patron, "s": b.station}),
    )
    .await;
    app.gql_ok(
        &b.t.access,
        "mutation($v: UUID!) { clockIn(venueId: $v) { id } }",
        json!({"v": b.venue}),
    )
    .await;
    let before = everything(&app, a.t.id).await;

    let (av, ast, ap, asn, am) = (a.venue, a.station, a_patron, &a_session, a_member);
    let (bv, bst, bp) = (b.venue, b.station, b_patron);
    let not_found: Vec<(&str, Value)> = vec![
        ("mutation($id: UUID!) { pauseSession(id: $id) { id } }", json!({"id": asn})),
        ("mutation($id: UUID!) { resumeSession(id: $id) { id } }", json!({"id": asn})),
        (
            "mutation($p: UUID!) { savePatronCard(patronId: $p, paymentMethod: \"pm_card_visa\") { id } }",
            json!({"p": ap}),
        ),
        (
            "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
            json!({"t": b.tariff, "v": av}),
        ),
        (
            "mutation($t: UUID!, $v: UUID!, $s: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v, stationId: $s}) { id } }",
            json!({"t": b.tariff, "v": bv, "s": ast}),
        ),
        (
            "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 5, idempotencyKey: \"x\") { id } }",
            json!({"p": bp, "v": av}),
        ),
        ("mutation($v: UUID!) { createTask(input: {venueId: $v, title: \"t\"}) { id } }", json!({"v": av})),
        (
            "mutation($v: UUID!, $s: UUID!) { createTask(input: {venueId: $v, stationId: $s, title: \"t\"}) { id } }",
            json!({"v": bv, "s": ast}),
        ),
        (
            "mutation($v: UUID!, $p: UUID!) { recordSafetyEntry(input: {venueId: $v, patronId: $p, kind: \"warning\", severity: LOW}) { id } }",
            json!({"v": av, "p": bp}),
        ),
        (
            "mutation($v: UUID!, $p: UUID!) { recordSafetyEntry(input: {venueId: $v, patronId: $p, kind: \"warning\", severity: LOW}) { id } }",
            json!({"v": bv, "p": ap}),
        ),
        (
            "mutation($v: UUID!, $s: UUID!) { recordSafetyEntry(input: {venueId: $v, stationId: $s, kind: \"warning\", severity: LOW}) { id } }",
            json!({"v": bv, "s": ast}),
        ),
        (
            "mutation($v: UUID!, $s: UUID!) { raiseSos(input: {venueId: $v, stationId: $s, severity: HIGH}) { id } }",
            json!({"v": bv, "s": ast}),
        ),
        ("mutation($p: UUID!, $v: UUID) { flagPatron(patronId: $p, reason: \"x\", venueId: $v) { patronId } }", json!({"p": bp, "v": av})),
        (
            "mutation($v: UUID!) { setVenueGeofence(venueId: $v, latitude: 1.0, longitude: 1.0, radiusM: 100) { id } }",
            json!({"v": av}),
        ),
        ("mutation($s: UUID!) { rotateStationQr(stationId: $s) { payload } }", json!({"s": ast})),
        ("mutation($v: UUID!) { rotateVenueQr(venueId: $v) { payload } }", json!({"v": av})),
        ("query($v: UUID!) { revenueProjection(venueId: $v) { method } }", json!({"v": av})),
        ("mutation($v: UUID!) { createBridge(venueId: $v, name: \"edge\") { token } }", json!({"v": av})),
        ("mutation($s: UUID!) { issueAgentKey(stationId: $s) }", json!({"s": ast})),
        ("query($v: UUID!) { venueTax(venueId: $v) { rateBp } }", json!({"v": av})),
        ("mutation($p: UUID!, $s: [UUID!]!) { createInvoice(patronId: $p, sessionIds: $s) { id } }", json!({"p": ap, "s": []})),
        ("mutation($p: UUID!, $s: [UUID!]!) { createInvoice(patronId: $p, sessionIds: $s) { id } }", json!({"p": bp, "s": [asn]})),
        (
            "mutation($v: [UUID!]) { inviteMember(email: \"new@example.com\", role: STAFF, venueIds: $v) { invitation { id } } }",
            json!({"v": [av]}),
        ),
        ("mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }", json!({"u": am, "v": [bv]})),
        ("mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }", json!({"u": b_member, "v": [av]})),
        (
            "mutation($v: UUID!) { createTariff(name: \"stray\", terms: {currency: \"EUR\", perMinute: 10}, applyTo: {venueId: $v}) { id } }",
            json!({"v": av}),
        ),
        (
            "mutation($v: UUID!, $s: UUID!) { createTariff(name: \"stray\", terms: {currency: \"EUR\", perMinute: 10}, applyTo: {venueId: $v, stationId: $s}) { id } }",
            json!({"v": bv, "s": ast}),
        ),
        ("query($v: UUID!) { venueFloor(venueId: $v) { count } }", json!({"v": av})),
        (
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, durationMinutes: 5, payment: WALLET}) { id } }",
            json!({"s": ast, "p": bp}),
        ),
        (
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, durationMinutes: 5, payment: WALLET}) { id } }",
            json!({"s": bst, "p": ap}),
        ),
    ];
    let mut wrong = vec![];
    for (query, variables) in not_found {
        let body = app.gql(Some(&b.t.access), query, variables).await;
        if gql_code(&body) != "not_found" {
            wrong.push(format!("{query} -> {body}"));
        }
    }
    assert!(wrong.is_empty(), "not `not_found`:\n{}", wrong.join("\n"));
    // An assignee is checked to be one of the caller's members: A's member is answered exactly as an id no one has.
    // (Each query takes what it declares of `v`, `id` and `u`.)
    let assign = [
        "mutation($v: UUID!, $u: UUID!) { createTask(input: {venueId: $v, title: \"t\", assigneeUserId: $u}) { id } }",
        "mutation($id: UUID!, $u: UUID!) { assignTask(id: $id, assigneeUserId: $u) { id } }",
    ];
    for query in assign {
        let answer = |u: Value| {
            let variables = json!({"v": bv, "id": b_task, "u": u});
            let app = &app;
            let token = b.t.access.clone();
            async move { app.gql(Some(&token), query, variables).await }
        };
        let theirs = answer(json!(am)).await;
        assert_eq!(
            gql_code(&theirs),
            "validation_failed",
            "{query} -> {theirs}"
        );
        assert_eq!(theirs["errors"][0]["extensions"]["field"], "assigneeUserId");
        assert_eq!(
            theirs["errors"][0]["message"],
            answer(json!(uuid::Uuid::new_v4())).await["errors"][0]["message"],
            "{query}"
        );
    }

    // Lists filtered by A's ids: `not_found` for the id itself, as an id passed anywhere else; the audit log, which
    // keeps naming objects and members that are gone, answers nothing (B's own rows exist and are left out).
    let lists: Vec<(&str, &str, Value)> = vec![
        ("sessions", "query($x: UUID) { sessions(stationId: $x) { id } }", json!({"x": ast})),
        ("sessions", "query($x: UUID) { sessions(venueId: $x) { id } }", json!({"x": av})),
        ("sessions", "query($x: UUID) { sessions(patronId: $x) { id } }", json!({"x": ap})),
        ("tasks", "query($x: UUID) { tasks(venueId: $x) { id } }", json!({"x": av})),
        ("incidents", "query($x: UUID) { incidents(venueId: $x) { id } }", json!({"x": av})),
        ("onShift", "query($x: UUID) { onShift(venueId: $x) { id } }", json!({"x": av})),
        (
            "shiftHours",
            "query($x: UUID, $f: DateTime!, $t: DateTime!) { shiftHours(from: $f, to: $t, venueId: $x) { userId } }",
            json!({"x": av, "f": chrono::Utc::now() - chrono::Duration::days(1), "t": chrono::Utc::now() + chrono::Duration::days(1)}),
        ),
        ("safetyLog", "query($x: UUID) { safetyLog(venueId: $x) { id } }", json!({"x": av})),
        ("safetyLog", "query($x: UUID) { safetyLog(patronId: $x) { id } }", json!({"x": ap})),
        ("safetyLog", "query($x: UUID) { safetyLog(stationId: $x) { id } }", json!({"x": ast})),
        ("auditLog", "query($x: UUID) { auditLog(objectId: $x) { id } }", json!({"x": asn})),
        ("auditLog", "query($x: UUID) { auditLog(actorUserId: $x) { id } }", json!({"x": am})),
        ("unansweredEjects", "query($x: UUID) { unansweredEjects(venueId: $x) { commandId } }", json!({"x": av})),
        ("invoices", "query($x: UUID) { invoices(patronId: $x) { id } }", json!({"x": ap})),
        ("bridges", "query($x: UUID) { bridges(venueId: $x) { id } }", json!({"x": av})),
        ("chargers", "query($x: UUID) { chargers(venueId: $x) { id } }", json!({"x": av})),
        ("stations", "query($x: UUID) { stations(venueId: $x) { id } }", json!({"x": av})),
    ];
    for (field, query, variables) in lists {
        let body = app.gql(Some(&b.t.access), query, variables).await;
        let nothing = if field == "auditLog" {
            body["errors"].is_null() && body["data"][field] == json!([])
        } else {
            gql_code(&body) == "not_found"
        };
        if !nothing {
            wrong.push(format!("{query} -> {body}"));
        }
    }
    // An id no one has is answered the same way.
    let body = app
        .gql(
            Some(&b.t.access),
            "query($x: UUID) { stations(venueId: $x) { id } }",
            json!({"x": uuid::Uuid::new_v4()}),
        )
        .await;
    if gql_code(&body) != "not_found" {
        wrong.push(format!("stations(venueId: unknown) -> {body}"));
    }
    assert!(
        wrong.is_empty(),
        "not `not_found` (or, for the audit log, not empty):\n{}",
        wrong.join("\n")
    );
    // The same lists unfiltered show B's own rows, so the empty answers above are the filters at work.
    let own = app
        .gql_ok(
            &b.t.access,
            "{ sessions { id } tasks { id } incidents { id } onShift { id } safetyLog { id } }",
            json!({}),
        )
        .await;
    assert_eq!(own["sessions"], json!([{"id": b_session}]), "{own}");
    for field in ["tasks", "incidents", "onShift", "safetyLog"] {
        assert_eq!(own[field].as_array().unwrap().len(), 1, "{field}: {own}");
    }
    // The incidents' CSV: B's own incident under the header, and `not_found` for A's venue.
    let csv = |v: Option<uuid::Uuid>| {
        let app = &app;
        let token = b.t.access.clone();
        async move {
            app.gql(
                Some(&token),
                "query($v: UUID) { incidentsCsv(venueId: $v) }",
                json!({"v": v}),
            )
            .await
        }
    };
    let own = csv(None).await;
    assert_eq!(
        own["data"]["incidentsCsv"]
            .as_str()
            .unwrap()
            .lines()
            .count(),
        2,
        "B's header and incident: {own}"
    );
    let theirs = csv(Some(av)).await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    // Nothing was left of the refused tariffs in B either (each was refused whole, not created and left unapplied).
    let stray: i64 =
        sqlx::query_scalar("select count(*) from tariff where tenant_id = $1 and name = 'stray'")
            .bind(b.t.id)
            .fetch_one(&mut *app.tenant_tx(b.t.id).await)
            .await
            .unwrap();
    assert_eq!(stray, 0);

    // REST: the dashboard and the station list of A's venue, a start for A's patron on B's station.
    for path in ["dashboard", "stations"] {
        let (status, body) = app
            .get(&format!("/api/v1/{path}?venue_id={av}"), &b.t.access)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let (status, body) = app
        .get(&format!("/api/v1/stations?venue_id={bv}"), &b.t.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stations"][0]["id"], json!(bst), "{body}");
    let (status, body) = start(
        &app,
        &b.t.access,
        Some("b-for-a"),
        json!({"station_id": bst, "patron_id": ap, "duration_minutes": 5, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    assert_eq!(
        everything(&app, a.t.id).await,
        before,
        "tenant A's rows are unchanged"
    );
}
