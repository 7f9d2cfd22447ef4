use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{gql_code, spawn_app, spawn_app_with};
use uuid::Uuid;

const VENUE_FIELDS: &str = "id name timezone currency address archivedAt";
const STATION_FIELDS: &str = "id venueId name kind control status controlSettings location archivedAt connectors { number status }";

#[tokio::test]
async fn currencies_are_listed_with_the_minor_units_of_the_ledger() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let data = app
        .gql_ok(&t.access, "{ currencies { code minorUnits } }", json!({}))
        .await;
    let list = data["currencies"].as_array().cloned().unwrap_or_default();
    let of = |code: &str| {
        list.iter()
            .find(|c| c["code"] == code)
            .map(|c| c["minorUnits"].clone())
    };
    // Forint and rupiah have 2 in ISO 4217 (as in the ledger), whatever a browser's locale data says.
    assert_eq!(
        [of("EUR"), of("HUF"), of("IDR"), of("JPY"), of("KWD")],
        [
            Some(json!(2)),
            Some(json!(2)),
            Some(json!(2)),
            Some(json!(0)),
            Some(json!(3))
        ]
    );
    assert!(list.len() > 150, "{}", list.len());
}

#[tokio::test]
async fn venues_are_created_updated_listed_and_archived_with_an_audit_trail() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let created = app
        .gql_ok(
            &t.access,
            &format!("mutation($i: CreateVenueInput!) {{ createVenue(input: $i) {{ {VENUE_FIELDS} }} }}"),
            json!({"i": {"name": " Night Owl ", "timezone": "Asia/Tokyo", "currency": "JPY", "address": "1-1 Shibuya"}}),
        )
        .await;
    let venue = &created["createVenue"];
    assert_eq!(venue["name"], "Night Owl");
    assert_eq!(venue["timezone"], "Asia/Tokyo");
    assert_eq!(venue["currency"], "JPY");
    assert_eq!(venue["address"], "1-1 Shibuya");
    assert_eq!(venue["archivedAt"], Value::Null);
    let id: Uuid = venue["id"].as_str().unwrap().parse().unwrap();

    let updated = app
        .gql_ok(
            &t.access,
            "mutation($id: UUID!) { updateVenue(id: $id, input: {name: \"Early Bird\"}) { name timezone } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        updated["updateVenue"],
        json!({"name": "Early Bird", "timezone": "Asia/Tokyo"})
    );

    let other = app.create_venue(&t.access, "Second Site").await;
    let list = app
        .gql_ok(&t.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(
        list["venues"],
        json!([{"name": "Early Bird"}, {"name": "Second Site"}])
    );

    let station = app.create_station(&t.access, other, "PC-1").await;
    let archived = app
        .gql_ok(
            &t.access,
            "mutation($id: UUID!) { archiveVenue(id: $id) { archivedAt } }",
            json!({"id": other}),
        )
        .await;
    assert!(archived["archiveVenue"]["archivedAt"].is_string());
    let list = app
        .gql_ok(&t.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(list["venues"], json!([{"name": "Early Bird"}]));
    let list = app
        .gql_ok(
            &t.access,
            "{ venues(includeArchived: true) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(list["venues"].as_array().unwrap().len(), 2);
    // Its stations were archived with it.
    let s = app
        .gql_ok(
            &t.access,
            "query($id: UUID!) { station(id: $id) { archivedAt } }",
            json!({"id": station}),
        )
        .await;
    assert!(s["station"]["archivedAt"].is_string());

    let audit: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "select action, object_id from audit_log where tenant_id = $1 and object_type = 'venue' order by created_at, id",
    )
    .bind(t.id)
    .fetch_all(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap();
    let actions: Vec<&str> = audit.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "venue.create",
            "venue.update",
            "venue.create",
            "venue.archive"
        ]
    );
    assert_eq!(audit[1].1, Some(id));
    let request_ids: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and request_id is not null and actor_user_id is not null",
    )
    .bind(t.id)
    .fetch_one(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap();
    assert!(
        request_ids >= 5,
        "every mutation records its actor and request id"
    );
}

#[tokio::test]
async fn venue_input_errors_name_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let t = app.signup().await;
    app.create_venue(&t.access, "Taken").await;
    let cases = [
        (
            json!({"name": "A", "timezone": "Mars/Olympus", "currency": "EUR"}),
            "validation_failed",
            Some("timezone"),
        ),
        // Postgres on Debian knows this alias of Europe/Berlin; pricing does not, and would have priced the venue
        // in UTC.
        (
            json!({"name": "A", "timezone": "posix/Europe/Berlin", "currency": "EUR"}),
            "validation_failed",
            Some("timezone"),
        ),
        (
            json!({"name": "A", "timezone": "UTC", "currency": "eur"}),
            "validation_failed",
            Some("currency"),
        ),
        (
            json!({"name": "A", "timezone": "UTC", "currency": "ABC"}),
            "validation_failed",
            Some("currency"),
        ),
        (
            json!({"name": "   ", "timezone": "UTC", "currency": "EUR"}),
            "validation_failed",
            Some("name"),
        ),
        (
            json!({"name": "taken", "timezone": "UTC", "currency": "EUR"}),
            "conflict",
            None,
        ),
    ];
    for (input, code, field) in cases {
        let body = app
            .gql(
                Some(&t.access),
                "mutation($i: CreateVenueInput!) { createVenue(input: $i) { id } }",
                json!({"i": input}),
            )
            .await;
        assert_eq!(gql_code(&body), code, "{input} -> {body}");
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
        }
    }
    let body = app
        .gql(
            Some(&t.access),
            "mutation { createVenue(input: {name: 5}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&body), "invalid_query", "{body}");
    let list = app
        .gql_ok(&t.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(list["venues"], json!([{"name": "Taken"}]));
}

#[tokio::test]
async fn stations_of_several_kinds_are_created_filtered_updated_and_archived() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "Hub").await;
    let create = format!(
        "mutation($i: CreateStationInput!) {{ createStation(input: $i) {{ {STATION_FIELDS} }} }}"
    );
    let charger = app
        .gql_ok(
            &t.access,
            &create,
            json!({"i": {"venueId": venue, "name": "CP 1", "kind": "EV_CHARGER", "control": "OCPP",
                         "controlSettings": {"charge_point_id": "CP-1"}, "connectorCount": 2, "location": "Bay 1"}}),
        )
        .await;
    let charger = &charger["createStation"];
    assert_eq!(charger["kind"], "EV_CHARGER");
    assert_eq!(charger["status"], "OFFLINE");
    assert_eq!(
        charger["controlSettings"],
        json!({"charge_point_id": "CP-1"})
    );
    assert_eq!(
        charger["connectors"],
        json!([{"number": 1, "status": "OFFLINE"}, {"number": 2, "status": "OFFLINE"}])
    );
    let plug = app
        .gql_ok(
            &t.access,
            &create,
            json!({"i": {"venueId": venue, "name": "Console", "kind": "CONSOLE", "control": "SHELLY",
                         "controlSettings": {"host": "10.0.0.9", "generation": 2}}}),
        )
        .await;
    let plug_id = plug["createStation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(plug["createStation"]["connectors"], json!([]));

    let consoles = app
        .gql_ok(&t.access, "{ stations(kind: CONSOLE) { name } }", json!({}))
        .await;
    assert_eq!(consoles["stations"], json!([{"name": "Console"}]));
    let at_venue = app
        .gql_ok(
            &t.access,
            "query($v: UUID!) { stations(venueId: $v) { name venue { name } } }",
            json!({"v": venue}),
        )
        .await;
    assert_eq!(
        at_venue["stations"],
        json!([{"name": "Console", "venue": {"name": "Hub"}}, {"name": "CP 1", "venue": {"name": "Hub"}}])
    );

    let updated = app
        .gql_ok(
            &t.access,
            "mutation($id: UUID!) { updateStation(id: $id, input: {status: MAINTENANCE, name: \"Console 1\"}) { name status } }",
            json!({"id": plug_id}),
        )
        .await;
    assert_eq!(
        updated["updateStation"],
        json!({"name": "Console 1", "status": "MAINTENANCE"})
    );
    let in_maintenance = app
        .gql_ok(
            &t.access,
            "{ stations(status: MAINTENANCE) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(in_maintenance["stations"], json!([{"name": "Console 1"}]));

    let bad = app
        .gql(
            Some(&t.access),
            "mutation($id: UUID!) { updateStation(id: $id, input: {status: IN_SESSION}) { name } }",
            json!({"id": plug_id}),
        )
        .await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    let bad = app
        .gql(
            Some(&t.access),
            "mutation($id: UUID!) { updateStation(id: $id, input: {control: TASMOTA}) { name } }",
            json!({"id": plug_id}),
        )
        .await;
    assert_eq!(
        gql_code(&bad),
        "validation_failed",
        "switching to tasmota needs a topic: {bad}"
    );

    app.gql_ok(
        &t.access,
        "mutation($id: UUID!) { archiveStation(id: $id) { id } }",
        json!({"id": plug_id}),
    )
    .await;
    let all = app
        .gql_ok(&t.access, "{ stations { name } }", json!({}))
        .await;
    assert_eq!(all["stations"], json!([{"name": "CP 1"}]));

    // The REST mirror shows the same stations in the seed 000 shape.
    let (status, body) = app
        .get(&format!("/api/v1/stations?venue_id={venue}"), &t.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    let stations = body["stations"].as_array().unwrap();
    assert_eq!(stations.len(), 1);
    assert_eq!(stations[0]["name"], "CP 1");
    assert_eq!(stations[0]["kind"], "ev_charger");
    assert_eq!(stations[0]["control"], "ocpp");
    assert_eq!(stations[0]["location"], "Bay 1");
    assert_eq!(stations[0]["connectors"].as_array().unwrap().len(), 2);
    let (status, one) = app
        .get(
            &format!("/api/v1/stations/{}", charger["id"].as_str().unwrap()),
            &t.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["name"], "CP 1");
    assert_eq!(one["venue_id"], venue.to_string());
    let (_, archived) = app
        .get(&format!("/api/v1/stations/{plug_id}"), &t.access)
        .await;
    assert!(archived["archived_at"].is_string());
}

#[tokio::test]
async fn station_input_errors_are_clear() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "V").await;
    let create = "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }";
    let cases = [
        (
            json!({"venueId": venue, "name": "P", "kind": "PC", "control": "SHELLY"}),
            "validation_failed",
        ),
        (
            json!({"venueId": venue, "name": "P", "kind": "PC", "control": "MANUAL", "controlSettings": [1]}),
            "validation_failed",
        ),
        (
            json!({"venueId": venue, "name": "P", "kind": "PC", "control": "MANUAL", "connectorCount": 2}),
            "validation_failed",
        ),
        (
            json!({"venueId": venue, "name": "P", "kind": "EV_CHARGER", "control": "OCPP",
                "controlSettings": {"charge_point_id": "x"}, "connectorCount": 99}),
            "validation_failed",
        ),
        (
            json!({"venueId": venue, "name": "P", "kind": "PC", "control": "MIKROTIK",
                "controlSettings": {"host": "r", "mac": "m", "password": "hunter2"}}),
            "validation_failed",
        ),
        (
            json!({"venueId": Uuid::new_v4(), "name": "P", "kind": "PC", "control": "MANUAL"}),
            "not_found",
        ),
        (
            json!({"venueId": venue, "name": "P", "kind": "SPACESHIP", "control": "MANUAL"}),
            "invalid_query",
        ),
        (
            json!({"venueId": "not-a-uuid", "name": "P", "kind": "PC", "control": "MANUAL"}),
            "invalid_query",
        ),
    ];
    for (input, code) in cases {
        let body = app.gql(Some(&t.access), create, json!({"i": input})).await;
        assert_eq!(gql_code(&body), code, "{input} -> {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            !message.to_lowercase().contains("sql"),
            "no internal text: {message}"
        );
    }
    app.create_station(&t.access, venue, "Dup").await;
    let body = app
        .gql(
            Some(&t.access),
            create,
            json!({"i": {"venueId": venue, "name": "DUP", "kind": "PC", "control": "AGENT"}}),
        )
        .await;
    assert_eq!(gql_code(&body), "conflict");
    assert_eq!(
        body["errors"][0]["message"],
        "a station with this name already exists at this venue"
    );
    let count: i64 = sqlx::query_scalar("select count(*) from station where tenant_id = $1")
        .bind(t.id)
        .fetch_one(&mut *app.tenant_tx(t.id).await)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn staff_read_the_tenant_but_only_owners_and_managers_change_it() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "V").await;
    let (_, staff) = app.add_member(&t, "STAFF").await;
    let (_, manager) = app.add_member(&t, "MANAGER").await;

    let read = app
        .gql_ok(
            &staff,
            "{ venues { name } stations { id } members { role } }",
            json!({}),
        )
        .await;
    assert_eq!(read["venues"], json!([{"name": "V"}]));
    let body = app
        .gql(Some(&staff), "mutation { createVenue(input: {name: \"X\", timezone: \"UTC\", currency: \"EUR\"}) { id } }", json!({}))
        .await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    assert_eq!(body["data"], Value::Null);
    let body = app
        .gql(
            Some(&staff),
            "mutation($id: UUID!) { archiveVenue(id: $id) { id } }",
            json!({"id": venue}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");

    let made = app.create_station(&manager, venue, "By manager").await;
    assert!(!made.is_nil());
    let venues = app
        .gql_ok(&t.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(
        venues["venues"],
        json!([{"name": "V"}]),
        "staff changed nothing"
    );
}

#[tokio::test]
async fn anonymous_requests_get_unauthenticated() {
    let app = spawn_app().await;
    let body = app.gql(None, "{ venues { id } }", json!({})).await;
    assert_eq!(gql_code(&body), "unauthenticated");
    let (status, body) = app
        .send(reqwest::Method::GET, "/api/v1/stations", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
}

#[tokio::test]
async fn abusive_queries_are_rejected_before_execution_with_a_clear_error() {
    let app = spawn_app().await;
    let t = app.signup().await;

    let deep = format!(
        "{{ {}id{} }}",
        "venues { stations { venue { ".repeat(17),
        " } } }".repeat(17)
    );
    let body = app.gql(Some(&t.access), &deep, json!({})).await;
    assert_eq!(gql_code(&body), "invalid_query", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("nested too deep"),
        "{body}"
    );

    let aliases: String = (0..1000)
        .map(|i| format!("a{i}: me {{ email }} "))
        .collect();
    let body = app
        .gql(Some(&t.access), &format!("{{ {aliases} }}"), json!({}))
        .await;
    assert_eq!(gql_code(&body), "invalid_query");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1000 aliases"),
        "{body}"
    );

    let batch: Vec<Value> = (0..1000)
        .map(|_| json!({"query": "{ me { email } }"}))
        .collect();
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/graphql",
            Some(&t.access),
            Some(json!(batch)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(gql_code(&body), "invalid_query");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("1000 operations"),
        "{body}"
    );

    let small_batch = json!([{"query": "{ me { role } }"}, {"query": "{ tenant { id } }"}]);
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/graphql",
            Some(&t.access),
            Some(small_batch),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body[0]["data"]["me"]["role"], "OWNER");
    assert_eq!(body[1]["data"]["tenant"]["id"], t.id.to_string());

    let huge = format!(
        "{{\"query\": \"{{ me {{ email }} }}\", \"variables\": {{\"x\": \"{}\"}}}}",
        "x".repeat(10 << 20)
    );
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&t.access)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(gql_code(&body), "payload_too_large");

    let response = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(gql_code(&body), "malformed_request");
}

#[tokio::test]
async fn production_mode_turns_off_introspection_and_graphiql() {
    let dev = spawn_app().await;
    let t = dev.signup().await;
    let body = dev
        .gql(
            Some(&t.access),
            "{ __schema { queryType { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "QueryRoot");
    let page = dev.client.get(dev.url("/graphql")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("graphiql"));

    let prod = spawn_app_with(&switchyard_tests::PRODUCTION).await;
    let body = prod
        .gql(
            Some(&t.access),
            "{ __schema { queryType { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["__schema"],
        Value::Null,
        "introspection is off: {body}"
    );
    let (status, body) = prod
        .send(reqwest::Method::GET, "/graphql", None, None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_patron_list_finds_names_and_emails_in_any_case_and_only_in_its_own_tenant() {
    let app = spawn_app().await;
    let (a, b) = (app.signup().await, app.signup().await);
    let create = "mutation($n: String!, $e: String) { createPatron(input: {displayName: $n, email: $e}) { id } }";
    let max_email = switchyard_tests::unique_email("mia.max");
    for (tenant, name, email) in [
        (&a, "Mia Wong", None),
        (&a, "Max", Some(max_email.as_str())),
        (&a, "Otto", None),
        (&b, "Mia Other", None),
    ] {
        app.gql_ok(&tenant.access, create, json!({"n": name, "e": email}))
            .await;
    }
    let names = |body: Value| -> Vec<String> {
        body["patrons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["displayName"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = "query($s: String) { patrons(search: $s) { displayName } }";
    // By name or by email, in any case, ordered by name.
    let found = app.gql_ok(&a.access, list, json!({"s": "mIA"})).await;
    assert_eq!(names(found), ["Max", "Mia Wong"]);
    let all = app.gql_ok(&a.access, list, json!({"s": null})).await;
    assert_eq!(names(all), ["Max", "Mia Wong", "Otto"]);
    let none = app.gql_ok(&a.access, list, json!({"s": "zzz"})).await;
    assert_eq!(names(none), Vec::<String>::new());
    // The other tenant's Mia is its own.
    let theirs = app.gql_ok(&b.access, list, json!({"s": "mia"})).await;
    assert_eq!(names(theirs), ["Mia Other"]);
}
