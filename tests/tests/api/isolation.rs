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
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stations"], json!([]));

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
