//! The seed 004 rental contract, end to end.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::{sessions, Db, TenantId};
use switchyard_tests::{env_url, gql_code, spawn_app, Tenant, TestApp};
use uuid::Uuid;

pub(crate) struct Cabinets {
    pub t: Tenant,
    pub venue: Uuid,
    pub a: Uuid,
    pub b: Uuid,
    pub patron: Uuid,
    pub currency: &'static str,
}

async fn cabinet(app: &TestApp, t: &Tenant, venue: Uuid, name: &str, slots: i32) -> Uuid {
    let data = app
        .gql_ok(
            &t.access,
            "mutation($v: UUID!, $n: String!, $c: Int!) { createStation(input: {venueId: $v, name: $n,
               kind: POWERBANK_CABINET, control: MANUAL, connectorCount: $c}) { id } }",
            json!({"v": venue, "n": name, "c": slots}),
        )
        .await;
    data["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Two cabinets (A with powerbanks pb-001 and pb-002, B empty), 60/hour after 5 free minutes, deposit 500,
/// buyout at 5000, and a patron with `cash` in the wallet.
pub(crate) async fn setup(app: &TestApp, cash: i64) -> Cabinets {
    setup_in(app, cash, "EUR", 500).await
}

/// The same at a venue whose currency is `currency`, with a deposit of `deposit`.
pub(crate) async fn setup_in(
    app: &TestApp,
    cash: i64,
    currency: &'static str,
    deposit: i64,
) -> Cabinets {
    let t = app.signup().await;
    let venue: Uuid = app
        .gql_ok(
            &t.access,
            "mutation($i: CreateVenueInput!) { createVenue(input: $i) { id } }",
            json!({"i": {"name": "Mall", "timezone": "Europe/Berlin", "currency": currency}}),
        )
        .await["createVenue"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let a = cabinet(app, &t, venue, "Cabinet A", 4).await;
    let b = cabinet(app, &t, venue, "Cabinet B", 1).await;
    let tariff = app
        .gql_ok(
            &t.access,
            "mutation($c: String!, $d: Int!) { createTariff(name: \"Powerbank\", terms: {currency: $c, perMinute: 1,
               freeMinutes: 5, deposit: $d, buyoutThreshold: 5000}) { id } }",
            json!({"c": currency, "d": deposit}),
        )
        .await["createTariff"]["id"]
        .clone();
    app.gql_ok(
        &t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v, stationKind: POWERBANK_CABINET}) { id } }",
        json!({"t": tariff, "v": venue}),
    )
    .await;
    for (slot, label) in [(1, "pb-001"), (2, "pb-002")] {
        let docked = app
            .gql_ok(
                &t.access,
                "mutation($s: UUID!, $n: Int!, $l: String!) { dockAsset(stationId: $s, slot: $n, label: $l) { label slot status } }",
                json!({"s": a, "n": slot, "l": label}),
            )
            .await;
        assert_eq!(
            docked["dockAsset"],
            json!({"label": label, "slot": slot, "status": "docked"})
        );
    }
    let patron: Uuid = app.create_patron(&t.access, "Rita", None).await;
    if cash > 0 {
        app.gql_ok(
            &t.access,
            "mutation($p: UUID!, $v: UUID!, $a: Int!) { topUpCash(patronId: $p, venueId: $v, amount: $a, idempotencyKey: \"seed\") { id } }",
            json!({"p": patron, "v": venue, "a": cash}),
        )
        .await;
    }
    Cabinets {
        t,
        venue,
        a,
        b,
        patron,
        currency,
    }
}

pub(crate) async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Quotes and starts a rental at `station`: its id and the powerbank it got.
/// A quote for the site's patron at `station`, which must be given.
pub(crate) async fn quote(app: &TestApp, c: &Cabinets, station: Uuid) -> Value {
    let (status, quote) = post(
        app,
        &c.t.access,
        "/api/v1/rentals/quote",
        None,
        json!({"user_id": c.patron, "station_id": station}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    quote
}

pub(crate) async fn rent(app: &TestApp, c: &Cabinets, station: Uuid, key: &str) -> (Uuid, String) {
    let quote = quote(app, c, station).await;
    let (status, started) = post(
        app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some(key),
        json!({"quote_id": quote["quote_id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    (
        started["rental_id"].as_str().unwrap().parse().unwrap(),
        started["powerbank_id"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn wallet(app: &TestApp, c: &Cabinets) -> Value {
    app.gql_ok(
        &c.t.access,
        "query($p: UUID!, $c: String!) { patron(id: $p) { wallet(currency: $c) { balance depositHeld debt } } }",
        json!({"p": c.patron, "c": c.currency}),
    )
    .await["patron"]["wallet"]
        .clone()
}

async fn docked(app: &TestApp, c: &Cabinets, station: Uuid) -> Vec<(String, i64)> {
    let data = app
        .gql_ok(
            &c.t.access,
            "query($s: UUID!) { assets(stationId: $s) { label slot } }",
            json!({"s": station}),
        )
        .await;
    data["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["label"].as_str().unwrap().to_owned(),
                a["slot"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_powerbank_is_quoted_rented_and_returned_to_another_cabinet() {
    let app = spawn_app().await;
    let c = setup(&app, 1_000).await;
    let quote = quote(&app, &c, c.a).await;
    let quote_id = quote["quote_id"].as_str().unwrap().to_owned();
    assert_eq!(
        quote,
        json!({"quote_id": quote_id, "price_per_hour": 60, "free_period_min": 5, "deposit": 500,
               "expires_in_sec": 60, "currency": "EUR"})
    );

    let (status, started) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("rent-1"),
        json!({"quote_id": quote_id}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["powerbank_id"], "pb-001");
    assert_eq!(started["status"], "ACTIVE");
    assert_eq!(started["total_amount"], 0);
    let rental = started["rental_id"].as_str().unwrap().to_owned();
    let (status, replay) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("rent-1"),
        json!({"quote_id": quote_id}),
    )
    .await;
    assert_eq!(
        (status, &replay),
        (StatusCode::OK, &started),
        "a retried start replays"
    );
    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("rent-2"),
        json!({"quote_id": quote_id}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["message"], "this quote was already used");

    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 500, "depositHeld": 500, "debt": 0})
    );
    assert_eq!(docked(&app, &c, c.a).await, [("pb-002".to_owned(), 2)]);
    let (status, got) = app
        .get(&format!("/api/v1/rentals/{rental}"), &c.t.access)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got,
        json!({"rental_id": rental, "status": "ACTIVE", "powerbank_id": "pb-001", "started_at": started["started_at"],
               "total_amount": 0, "current_debt": 0, "duration_minutes": 0})
    );

    let (status, stopped) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop-1"),
        json!({"rental_id": rental, "station_id": c.b}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["status"], "FINISHED");
    assert_eq!(stopped["total_amount"], 0, "inside the free period");
    assert_eq!(stopped["duration_minutes"], 0);
    assert!(stopped["finished_at"].is_string());
    assert_eq!(docked(&app, &c, c.b).await, [("pb-001".to_owned(), 1)]);
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );

    let commands: Vec<(String, String)> = sqlx::query_as(
        "select s.name, d.command from device_command d join station s on s.tenant_id = d.tenant_id and s.id = d.station_id
         where d.tenant_id = $1 order by d.created_at, d.id",
    )
    .bind(c.t.id)
    .fetch_all(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        commands,
        [
            ("Cabinet A".to_owned(), "eject".to_owned()),
            ("Cabinet B".to_owned(), "accept_return".to_owned())
        ]
    );
}

#[tokio::test]
async fn every_seed_004_error_case_answers_in_the_catalogue_shape() {
    let app = spawn_app().await;
    let c = setup(&app, 1_000).await;
    let quote = |station: Uuid| {
        post(
            &app,
            &c.t.access,
            "/api/v1/rentals/quote",
            None,
            json!({"user_id": c.patron, "station_id": station}),
        )
    };

    // An expired quote.
    let (_, q) = quote(c.a).await;
    let quote_id: Uuid = q["quote_id"].as_str().unwrap().parse().unwrap();
    let mut tx = app.tenant_tx(c.t.id).await;
    sqlx::query("update quote set expires_at = now() - interval '1 second' where tenant_id = $1 and id = $2")
        .bind(c.t.id)
        .bind(quote_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("e1"),
        json!({"quote_id": quote_id}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        json!({"error": {"code": "quote_expired", "message": "Quote expired"}})
    );

    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("e2"),
        json!({"quote_id": Uuid::new_v4()}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        None,
        json!({"quote_id": quote_id}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("idempotency_key_required"))
    );
    let (status, body) = quote(c.b).await;
    assert_eq!(status, StatusCode::CONFLICT, "B has no powerbank: {body}");
    let pc = app
        .create_station(&c.t.access, c.venue, "Not a cabinet")
        .await;
    let (status, body) = quote(pc).await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("station_id"))
    );
    let (status, _) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/quote",
        None,
        json!({"user_id": Uuid::new_v4(), "station_id": c.a}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/quote",
        None,
        json!({"station_id": c.a}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user_id"),
        "{body}"
    );

    // A patron who cannot cover the deposit.
    let poor: Uuid = app.create_patron(&c.t.access, "Poor", None).await;
    let (_, q) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/quote",
        None,
        json!({"user_id": poor, "station_id": c.a}),
    )
    .await;
    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("e3"),
        json!({"quote_id": q["quote_id"]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::PAYMENT_REQUIRED, json!("insufficient_funds"))
    );

    // Returning to a full cabinet: B has one slot; fill it first.
    let (_, q1) = quote(c.a).await;
    let (_, r1) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("r1"),
        json!({"quote_id": q1["quote_id"]}),
    )
    .await;
    let (_, q2) = quote(c.a).await;
    let (_, r2) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("r2"),
        json!({"quote_id": q2["quote_id"]}),
    )
    .await;
    assert!(r2["rental_id"].is_string(), "{q2} {r2}");
    let (status, _) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("s1"),
        json!({"rental_id": r1["rental_id"], "station_id": c.b}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("s2"),
        json!({"rental_id": r2["rental_id"], "station_id": c.b}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no free slot"));
    let (_, still) = app
        .get(
            &format!("/api/v1/rentals/{}", r2["rental_id"].as_str().unwrap()),
            &c.t.access,
        )
        .await;
    assert_eq!(
        still["status"], "ACTIVE",
        "a refused return changes nothing"
    );

    // A session that is not a rental is not a rental.
    let (status, _) = app
        .get(&format!("/api/v1/rentals/{}", Uuid::new_v4()), &c.t.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Staff stop a running rental whose powerbank will not come back (lost; no buyout reached): it ends charged to now,
/// the powerbank is written off rather than docked in a slot it is not in, and the deposit is released — before,
/// stopping a rental as a session left its deposit held for good and its powerbank `rented`. Stopped again, it is
/// unchanged.
#[tokio::test]
async fn a_rental_staff_stop_as_a_session_ends_as_lost_with_its_deposit_released() {
    let app = spawn_app().await;
    let c = setup(&app, 1_000).await;
    let (id, label) = rent(&app, &c, c.a, "lost-1").await;
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 500, "depositHeld": 500, "debt": 0})
    );
    // Writing a powerbank off is a manager's call: staff are refused and nothing changes.
    let (_, staff) = app.add_member(&c.t, "STAFF").await;
    let refused = app
        .gql(
            Some(&staff),
            "mutation($id: UUID!) { stopSession(id: $id) { status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 500, "depositHeld": 500, "debt": 0})
    );
    for _ in 0..2 {
        let stopped = app
            .gql_ok(
                &c.t.access,
                "mutation($id: UUID!) { stopSession(id: $id) { status chargedAmount } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(
            stopped["stopSession"],
            json!({"status": "ENDED", "chargedAmount": 0}),
            "within the five free minutes"
        );
    }
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );
    let (status, slot): (String, Option<Uuid>) = sqlx::query_as(
        "select status, connector_id from asset where tenant_id = $1 and label = $2",
    )
    .bind(c.t.id)
    .bind(&label)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((status.as_str(), slot), ("written_off", None));
    let audited: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and object_id = $2 and action = 'rental.ended_as_lost'",
    )
    .bind(c.t.id)
    .bind(id)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn a_long_rental_runs_into_debt_and_is_bought_out_at_the_threshold() {
    let app = spawn_app().await;
    let c = setup(&app, 600).await;
    let q = quote(&app, &c, c.a).await;
    let (_, r) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("long"),
        json!({"quote_id": q["quote_id"]}),
    )
    .await;
    let rental: Uuid = r["rental_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 100, "depositHeld": 500, "debt": 0})
    );

    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let tick = Duration::seconds(30);
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    let started = sessions::get(&mut tx, rental).await.unwrap().started_at;
    // 65 minutes: 60 billable at 1/min.
    assert_eq!(
        sessions::bill_tick(&mut tx, rental, started + Duration::minutes(65), tick)
            .await
            .unwrap(),
        60
    );
    // Three and a half days later the charges would pass 5000: the rental becomes a purchase at exactly 5000.
    assert_eq!(
        sessions::bill_tick(&mut tx, rental, started + Duration::hours(84), tick)
            .await
            .unwrap(),
        4940
    );
    tx.commit().await.unwrap();

    let (_, got) = app
        .get(&format!("/api/v1/rentals/{rental}"), &c.t.access)
        .await;
    assert_eq!(got["status"], "BOUGHT_OUT");
    assert_eq!(got["total_amount"], 5000);
    let (_, session) = app
        .get(&format!("/api/v1/sessions/{rental}"), &c.t.access)
        .await;
    assert_eq!(
        session["total_amount"], 5000,
        "the session view shows the capped cost too"
    );
    let lines = session["cost_lines"].as_array().unwrap();
    assert_eq!(lines.last().unwrap()["kind"], "buyout_cap");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["amount"].as_i64().unwrap())
            .sum::<i64>(),
        5000,
        "the lines explain the total"
    );
    // Wallet 100 paid 100, the rest (4900) became debt; the released deposit (500) paid part of it.
    assert_eq!(got["current_debt"], 4400);
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 4400})
    );
    let status: String =
        sqlx::query_scalar("select status from asset where tenant_id = $1 and label = 'pb-001'")
            .bind(c.t.id)
            .fetch_one(&mut *app.tenant_tx(c.t.id).await)
            .await
            .unwrap();
    assert_eq!(status, "written_off");
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    assert_eq!(
        sessions::bill_tick(&mut tx, rental, started + Duration::hours(90), tick)
            .await
            .unwrap(),
        0,
        "no charge after buyout"
    );
}

#[tokio::test]
async fn another_tenants_quotes_rentals_and_assets_are_not_found() {
    let app = spawn_app().await;
    let a = setup(&app, 1_000).await;
    let b = setup(&app, 1_000).await;
    let q = quote(&app, &a, a.a).await;
    let q2 = quote(&app, &a, a.a).await;
    let (_, r) = post(
        &app,
        &a.t.access,
        "/api/v1/rentals/start",
        Some("a"),
        json!({"quote_id": q["quote_id"]}),
    )
    .await;
    let rental = r["rental_id"].as_str().unwrap();

    let (status, _) = post(
        &app,
        &b.t.access,
        "/api/v1/rentals/start",
        Some("b"),
        json!({"quote_id": q2["quote_id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        &app,
        &b.t.access,
        "/api/v1/rentals/stop",
        Some("b"),
        json!({"rental_id": rental, "station_id": b.b}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .send(
            Method::GET,
            &format!("/api/v1/rentals/{rental}"),
            Some(&b.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        &app,
        &b.t.access,
        "/api/v1/rentals/quote",
        None,
        json!({"user_id": a.patron, "station_id": b.a}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(
        &app,
        &b.t.access,
        "/api/v1/rentals/quote",
        None,
        json!({"user_id": b.patron, "station_id": a.a}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A's rental returned into B's cabinet: not found, and A's powerbank stays rented.
    let (status, _) = post(
        &app,
        &a.t.access,
        "/api/v1/rentals/stop",
        Some("x"),
        json!({"rental_id": rental, "station_id": b.b}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (query, variables) in [
        (
            "query($s: UUID!) { assets(stationId: $s) { id } }",
            json!({"s": a.a}),
        ),
        (
            "mutation($s: UUID!) { dockAsset(stationId: $s, slot: 3, label: \"x\") { id } }",
            json!({"s": a.a}),
        ),
        (
            "mutation($p: UUID!, $s: UUID!) { quote(patronId: $p, stationId: $s) { id } }",
            json!({"p": a.patron, "s": a.a}),
        ),
        (
            "mutation($q: UUID!) { startRental(quoteId: $q, idempotencyKey: \"b-gql\") { id } }",
            json!({"q": q2["quote_id"]}),
        ),
        (
            "mutation($r: UUID!, $s: UUID!) { stopRental(rentalId: $r, stationId: $s) { id } }",
            json!({"r": rental, "s": b.b}),
        ),
        // One of the two ids its own each time: the other alone is not found.
        (
            "mutation($p: UUID!, $s: UUID!) { quote(patronId: $p, stationId: $s) { id } }",
            json!({"p": a.patron, "s": b.a}),
        ),
        (
            "mutation($p: UUID!, $s: UUID!) { quote(patronId: $p, stationId: $s) { id } }",
            json!({"p": b.patron, "s": a.a}),
        ),
    ] {
        let body = app.gql(Some(&b.t.access), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query}: {body}");
    }
    // A's own rental returned into B's cabinet over GraphQL too: not found (it stays rented, checked below).
    let body = app
        .gql(
            Some(&a.t.access),
            "mutation($r: UUID!, $s: UUID!) { stopRental(rentalId: $r, stationId: $s) { id } }",
            json!({"r": rental, "s": b.b}),
        )
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    // A's second quote is still good: B's tries used nothing of it.
    assert_eq!(docked(&app, &a, a.a).await.len(), 1);
    let (_, still) = app
        .get(&format!("/api/v1/rentals/{rental}"), &a.t.access)
        .await;
    assert_eq!(still["status"], "ACTIVE");
}

#[tokio::test]
async fn a_rentals_first_tick_follows_the_tenants_own_interval() {
    let app = spawn_app().await;
    let c = setup(&app, 1_000).await;
    let set = app
        .gql_ok(
            &c.t.access,
            "mutation { setBillingTick(seconds: 7) { billingTickSec } }",
            json!({}),
        )
        .await;
    assert_eq!(set["setBillingTick"]["billingTickSec"], 7);
    let (id, _) = rent(&app, &c, c.a, "rent-tick").await;
    assert_eq!(
        crate::sessions::first_tick_after(&app, c.t.id, id).await,
        Duration::seconds(7)
    );
}

#[tokio::test]
async fn a_member_confined_to_another_venue_cannot_start_a_rental_from_this_ones_quote() {
    let app = spawn_app().await;
    let c = setup(&app, 10_000).await;
    let elsewhere = app.create_venue(&c.t.access, "Elsewhere").await;
    let (_, manager) = crate::staff::add_scoped(&app, &c.t.access, "MANAGER", &[elsewhere]).await;
    let quote = quote(&app, &c, c.a).await;
    let (status, refused) = post(
        &app,
        &manager,
        "/api/v1/rentals/start",
        Some("scoped-start"),
        json!({"quote_id": quote["quote_id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{refused}");
    assert_eq!(refused["error"]["code"], "not_found", "{refused}");
    // Nothing moved: both powerbanks still docked, no deposit held, and the quote is still good for the owner.
    assert_eq!(docked(&app, &c, c.a).await.len(), 2);
    let (status, started) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("owner-start"),
        json!({"quote_id": quote["quote_id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(docked(&app, &c, c.a).await.len(), 1);

    // The owner's key and body, sent by the confined member: refused as a reused key, the rental not shown.
    let (status, replay) = post(
        &app,
        &manager,
        "/api/v1/rentals/start",
        Some("owner-start"),
        json!({"quote_id": quote["quote_id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{replay}");
    assert_eq!(replay["error"]["code"], "idempotency_key_reused");
    assert!(!replay
        .to_string()
        .contains(started["rental_id"].as_str().unwrap()));
    // The owner's own retry still replays.
    let (status, again) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("owner-start"),
        json!({"quote_id": quote["quote_id"]}),
    )
    .await;
    assert_eq!((status, &again), (StatusCode::OK, &started));

    // Likewise over GraphQL: the second powerbank, started by the owner with a key the member then sends.
    let quote = self::quote(&app, &c, c.a).await;
    let start =
        "mutation($q: UUID!) { startRental(quoteId: $q, idempotencyKey: \"gql-owner\") { id } }";
    let owned = app
        .gql_ok(&c.t.access, start, json!({"q": quote["quote_id"]}))
        .await;
    let rental = owned["startRental"]["id"].as_str().unwrap();
    let replay = app
        .gql(Some(&manager), start, json!({"q": quote["quote_id"]}))
        .await;
    assert_eq!(gql_code(&replay), "idempotency_key_reused", "{replay}");
    assert!(!replay.to_string().contains(rental));
    assert_eq!(docked(&app, &c, c.a).await.len(), 0);
}

/// A powerbank returned by several requests at once (a retried app call, staff at the desk, GraphQL): every one is
/// answered with the same ended rental, the deposit is released and the rental charged once.
#[tokio::test]
async fn a_rental_stopped_by_several_requests_at_once_is_charged_once() {
    let app = spawn_app().await;
    let c = setup(&app, 1_000).await;
    let (rental, _) = rent(&app, &c, c.a, "rent-race").await;
    let held = wallet(&app, &c).await;
    assert_eq!(held["depositHeld"], 500, "{held}");
    let rest = (0..4).map(|i| {
        let app = &app;
        let token = c.t.access.clone();
        Box::pin(async move {
            let (status, body) = post(
                app,
                &token,
                "/api/v1/rentals/stop",
                Some(&format!("stop-{}", i % 2)),
                json!({"rental_id": rental, "station_id": c.b}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["total_amount"].clone()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Value> + '_>>
    });
    let graphql = (0..2).map(|_| {
        let app = &app;
        let token = c.t.access.clone();
        Box::pin(async move {
            let body = app
                .gql(
                    Some(&token),
                    "mutation($r: UUID!, $s: UUID!) { stopRental(rentalId: $r, stationId: $s) { chargedAmount } }",
                    json!({"r": rental, "s": c.b}),
                )
                .await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["stopRental"]["chargedAmount"].clone()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Value> + '_>>
    });
    let charged = switchyard_tests::join_all(rest.chain(graphql).collect()).await;
    assert!(charged.iter().all(|a| *a == charged[0]), "{charged:?}");
    let journals: Vec<(String,)> = sqlx::query_as(
        "select idempotency_key from journal where tenant_id = $1 and session_id = $2 order by 1",
    )
    .bind(c.t.id)
    .bind(rental)
    .fetch_all(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    let keys: Vec<String> = journals
        .into_iter()
        .map(|(k,)| k.replace(&rental.to_string(), "R"))
        .collect();
    assert_eq!(
        keys.len(),
        keys.iter().collect::<std::collections::HashSet<_>>().len()
    );
    assert!(
        keys.iter().filter(|k| k.ends_with(":final")).count() <= 1
            && keys
                .iter()
                .filter(|k| k.ends_with(":deposit_release"))
                .count()
                == 1,
        "{keys:?}"
    );
    let after = wallet(&app, &c).await;
    assert_eq!(after["depositHeld"], 0, "{after}");
    let charge = charged[0].as_i64().unwrap_or_default();
    assert_eq!(after["balance"], 1_000 - charge, "{after}");
}

/// A cabinet's return report held up (its bridge's tunnel was down) arrives after the billing ticks ran on: the
/// rental ends when the powerbank went in, as the cabinet stamped it, and what the ticks charged past that goes
/// back (`session:<id>:ended_by_device`). Before, it ended when the report arrived, billing the patron for the
/// outage.
#[tokio::test]
async fn a_return_reported_late_ends_the_rental_when_the_powerbank_went_in() {
    let app = spawn_app().await;
    let c = setup(&app, 1000).await;
    let (rental, label) = rent(&app, &c, c.a, "late-return").await;
    // Rented three hours ago (a report is never stamped later than it arrives).
    sqlx::query("update session set started_at = started_at - interval '3 hours' where tenant_id = $1 and id = $2")
        .bind(c.t.id)
        .bind(rental)
        .execute(&app.owner)
        .await
        .unwrap();
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    let started = sessions::get(&mut tx, rental).await.unwrap().started_at;
    // Two hours billed: 115 minutes after the 5 free ones.
    let billed = sessions::bill_tick(
        &mut tx,
        rental,
        started + Duration::hours(2),
        Duration::seconds(30),
    )
    .await
    .unwrap();
    assert_eq!(billed, 115);
    // It went into cabinet B twenty minutes in; the report says so now.
    let anomalies = switchyard_core::cabinets::apply(
        &mut tx,
        c.venue,
        c.b,
        "cabinet_returned",
        &json!({"slot": 1, "asset": label}),
        started + Duration::minutes(20),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(anomalies.is_empty(), "{anomalies:?}");
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    let ended = sessions::get(&mut tx, rental).await.unwrap();
    assert_eq!(ended.ended_at, Some(started + Duration::minutes(20)));
    assert_eq!(ended.charged_amount, 15, "twenty minutes, five free");
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 985, "depositHeld": 0, "debt": 0})
    );
}

/// A cabinet's return report held up for days (its bridge's tunnel was down) arrives after the billing ticks ran
/// the rental on to its buyout: the patron had given the powerbank back before, so there was no purchase. The
/// rental ends when the powerbank went in, the ticks' charges past that go back (debt first), the powerbank is
/// docked, not written off. A return stamped before the bridge's outage began (a clock gone wrong: the bridge
/// would have reported it live) leaves the buyout as it was. Before, every late return kept the buyout.
#[tokio::test]
async fn a_return_made_before_the_buyout_but_reported_after_it_undoes_the_buyout() {
    let app = spawn_app().await;
    let c = setup(&app, 1_100).await;
    let (early, early_label) = rent(&app, &c, c.a, "early").await;
    let (late, late_label) = rent(&app, &c, c.a, "late").await;
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 100, "depositHeld": 1000, "debt": 0})
    );
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let tick = Duration::seconds(30);
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    let mut started = vec![];
    for rental in [early, late] {
        let at = sessions::get(&mut tx, rental).await.unwrap().started_at;
        assert_eq!(
            sessions::bill_tick(&mut tx, rental, at + Duration::minutes(65), tick)
                .await
                .unwrap(),
            60
        );
        // The report stays away for three and a half days: the ticks reach the buyout.
        assert_eq!(
            sessions::bill_tick(&mut tx, rental, at + Duration::hours(84), tick)
                .await
                .unwrap(),
            4940
        );
        assert_eq!(
            sessions::get(&mut tx, rental).await.unwrap().status,
            sessions::SessionStatus::BoughtOut
        );
        started.push(at);
    }
    tx.commit().await.unwrap();
    // 10,000 charged, 1,100 paid: both deposits paid debt at the buyouts.
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 8900})
    );

    // The venue's bridge lost its tunnel an hour in. The first went into cabinet B sixty-five minutes in; the second,
    // by its stamp, into A's first slot half an hour in, before the outage.
    let bridge: Uuid = app
        .gql_ok(
            &c.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Desk\") { bridge { id } } }",
            json!({"v": c.venue}),
        )
        .await["createBridge"]["bridge"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    sqlx::query("update bridge set tunnel_down_at = $3 where tenant_id = $1 and id = $2")
        .bind(c.t.id)
        .bind(bridge)
        .bind(started[0] + Duration::minutes(60))
        .execute(&app.owner)
        .await
        .unwrap();
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    for _ in 0..2 {
        let anomalies = switchyard_core::cabinets::apply(
            &mut tx,
            c.venue,
            c.b,
            "cabinet_returned",
            &json!({"slot": 1, "asset": early_label}),
            started[0] + Duration::minutes(65),
        )
        .await
        .unwrap();
        assert!(anomalies.is_empty(), "{anomalies:?}");
    }
    let anomalies = switchyard_core::cabinets::apply(
        &mut tx,
        c.venue,
        c.a,
        "cabinet_returned",
        &json!({"slot": 1, "asset": late_label}),
        started[1] + Duration::minutes(30),
    )
    .await
    .unwrap();
    assert_eq!(
        anomalies.iter().map(|a| a.0).collect::<Vec<_>>(),
        ["asset_out_of_place"],
        "{anomalies:?}"
    );
    tx.commit().await.unwrap();

    let (_, got) = app
        .get(&format!("/api/v1/rentals/{early}"), &c.t.access)
        .await;
    assert_eq!(got["status"], "FINISHED", "{got}");
    assert_eq!(got["total_amount"], 60, "{got}");
    let (_, got) = app
        .get(&format!("/api/v1/rentals/{late}"), &c.t.access)
        .await;
    assert_eq!(got["status"], "BOUGHT_OUT", "{got}");
    assert_eq!(got["total_amount"], 5000, "{got}");
    // 5,060 charged, 1,100 paid.
    assert_eq!(
        wallet(&app, &c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 3960})
    );
    let mut tx = db.begin_tenant(TenantId(c.t.id)).await.unwrap();
    let ended = sessions::get(&mut tx, early).await.unwrap();
    assert_eq!(ended.ended_at, Some(started[0] + Duration::minutes(65)));
    assert_eq!(ended.charged_amount, 60);
    assert_eq!(ended.return_station_id, Some(c.b));
    drop(tx);
    assert_eq!(
        docked(&app, &c, c.b).await,
        [(early_label.clone(), 1)],
        "the returned powerbank is docked, not written off"
    );
    assert_eq!(docked(&app, &c, c.a).await, [(late_label.clone(), 1)]);
    let mut owner = app.tenant_tx(c.t.id).await;
    let keys: Vec<String> = sqlx::query_scalar(
        "select idempotency_key from journal where tenant_id = $1 and session_id = $2
           and idempotency_key like '%returned_before_buyout' order by idempotency_key",
    )
    .bind(c.t.id)
    .bind(early)
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    assert_eq!(keys, [format!("session:{early}:returned_before_buyout")]);
    let audited: Vec<Value> = sqlx::query_scalar(
        "select detail from audit_log where tenant_id = $1 and object_id = $2 and action = 'rental.buyout_reversed'",
    )
    .bind(c.t.id)
    .bind(early)
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["given_back"], 4940);
}
