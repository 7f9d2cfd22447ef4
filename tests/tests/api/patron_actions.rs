//! The patron app acting for itself: self-service starts by station id or QR code, its own sessions only, the QR
//! endpoints. Card payments and rentals are in `money`, venue check-in in `checkins`.

mod checkins;
mod money;
mod qr;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{gql_code, unique_email, TestApp};
use uuid::Uuid;

use crate::sessions::{floor, top_up, Floor};

/// A signed-in patron of a tenant.
pub(crate) struct Patron {
    pub id: Uuid,
    pub token: String,
}

/// Signs a new patron up with the operator `tenant` through the patron app.
pub(crate) async fn patron(app: &TestApp, tenant: Uuid, name: &str) -> Patron {
    let (status, body) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": tenant, "display_name": name, "email": unique_email(name),
                   "password": "Blue-Lantern-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let me = app.gql_ok(&token, "{ myProfile { id } }", json!({})).await;
    Patron {
        id: me["myProfile"]["id"].as_str().unwrap().parse().unwrap(),
        token,
    }
}

/// Marks a station self-service (as a manager would).
pub(crate) async fn self_service(app: &TestApp, token: &str, station: Uuid) {
    let data = app
        .gql_ok(
            token,
            "mutation($id: UUID!) { updateStation(id: $id, input: {selfService: true}) { selfService } }",
            json!({"id": station}),
        )
        .await;
    assert_eq!(data["updateStation"]["selfService"], true);
}

/// A QR payload from the members' REST endpoint (`stations` or `venues`).
pub(crate) async fn qr_payload(app: &TestApp, token: &str, what: &str, id: Uuid) -> String {
    let (status, body) = app.get(&format!("/api/v1/{what}/{id}/qr"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id.to_string());
    body["payload"].as_str().unwrap().to_owned()
}

pub(crate) const START: &str =
    "mutation($s: UUID, $qr: String, $m: Int, $pay: PayWith!, $k: String!) {
    startMySession(stationId: $s, qr: $qr, minutes: $m, payWith: $pay, idempotencyKey: $k) {
      id patronId stationId status plannedEndAt chargedAmount } }";

const SESSION: &str =
    "id status plannedEndAt chargedAmount liveCost { amount lines { kind amount } }";

/// Runs a patron mutation on session `id` (`extendMySession` takes `minutes: 10`) and returns the whole body.
async fn on_session(app: &TestApp, token: &str, mutation: &str, id: &Value) -> Value {
    let args = if mutation == "extendMySession" {
        "id: $id, minutes: 10"
    } else {
        "id: $id"
    };
    let query = format!("mutation($id: UUID!) {{ {mutation}({args}) {{ {SESSION} }} }}");
    app.gql(Some(token), &query, json!({"id": id})).await
}

/// One stored column of one session.
async fn session_row(
    app: &TestApp,
    tenant: Uuid,
    id: &Value,
) -> (String, String, Option<Uuid>, i64) {
    sqlx::query_as(
        "select status::text, origin, started_by, charged_amount from session where tenant_id = $1 and id = $2",
    )
    .bind(tenant)
    .bind(id.as_str().unwrap().parse::<Uuid>().unwrap())
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

/// A floor with a self-service PC and a patron of it holding `cash` in the wallet.
async fn shop(app: &TestApp, cash: i64) -> (Floor, Patron) {
    let f = floor(app).await;
    self_service(app, &f.t.access, f.station).await;
    let p = patron(app, f.t.id, "noor").await;
    if cash > 0 {
        top_up(app, &f, p.id, cash, &Uuid::new_v4().to_string()).await;
    }
    (f, p)
}

#[tokio::test]
async fn a_patron_starts_a_session_from_the_station_qr_code_then_extends_pauses_resumes_and_stops_it(
) {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 2_000).await;
    let payload = qr_payload(&app, &f.t.access, "stations", f.station).await;
    assert!(
        payload.starts_with(&format!("switchyard://s/{}/{}/", f.t.id, f.station)),
        "{payload}"
    );

    let vars = json!({"qr": payload, "m": 30, "pay": "WALLET", "k": "start-1"});
    let started = app.gql_ok(&me.token, START, vars).await["startMySession"].clone();
    assert_eq!(started["patronId"], me.id.to_string());
    assert_eq!(started["stationId"], f.station.to_string());
    assert_eq!(started["status"], "ACTIVE");
    let id = started["id"].clone();
    assert_eq!(
        session_row(&app, f.t.id, &id).await,
        ("active".into(), "patron".into(), None, 0),
        "a patron start has no member behind it"
    );
    let audit: Value = sqlx::query_scalar(
        "select detail from audit_log where tenant_id = $1 and action = 'session.start' and object_id = $2",
    )
    .bind(f.t.id)
    .bind(id.as_str().unwrap().parse::<Uuid>().unwrap())
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(audit["by_patron"], me.id.to_string());

    // Extended by 10 minutes once however often the keyed request is retried; the key is not for 20 minutes.
    let extend = "mutation($id: UUID!, $m: Int!) { extendMySession(id: $id, minutes: $m, idempotencyKey: \"ext\") {
        plannedEndAt } }";
    let end = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    for _ in 0..2 {
        let extended = app
            .gql_ok(&me.token, extend, json!({"id": id, "m": 10}))
            .await;
        assert_eq!(
            end(&extended["extendMySession"]["plannedEndAt"]) - end(&started["plannedEndAt"]),
            chrono::Duration::minutes(10)
        );
    }
    let body = app
        .gql(Some(&me.token), extend, json!({"id": id, "m": 20}))
        .await;
    assert_eq!(gql_code(&body), "idempotency_key_reused", "{body}");
    let paused = on_session(&app, &me.token, "pauseMySession", &id).await;
    assert_eq!(
        paused["data"]["pauseMySession"]["status"], "PAUSED",
        "{paused}"
    );
    let resumed = on_session(&app, &me.token, "resumeMySession", &id).await;
    assert_eq!(
        resumed["data"]["resumeMySession"]["status"], "ACTIVE",
        "{resumed}"
    );
    let stopped = on_session(&app, &me.token, "stopMySession", &id).await;
    let stopped = &stopped["data"]["stopMySession"];
    assert_eq!(stopped["status"], "ENDED");
    // Two stretches of use, each under a minute, at 10 a minute in 1-minute steps: the pause charged the first,
    // the stop the second.
    assert_eq!(stopped["chargedAmount"], 20);
    assert_eq!(stopped["liveCost"]["amount"], 20);
    assert_eq!(session_row(&app, f.t.id, &id).await.3, 20);
    let again = on_session(&app, &me.token, "stopMySession", &id).await;
    assert_eq!(
        again["data"]["stopMySession"]["chargedAmount"], 20,
        "stopping twice"
    );

    // History, live cost and the wallet agree with the ledger.
    let data = app
        .gql_ok(
            &me.token,
            &format!(
                "query($id: UUID!) {{ mySession(id: $id) {{ {SESSION} }} mySessions {{ id }}
                   myWallet(currency: \"EUR\") {{ balance statement {{ kind amount sessionId }} }} }}"
            ),
            json!({"id": id}),
        )
        .await;
    let lines = data["mySession"]["liveCost"]["lines"].as_array().unwrap();
    assert_eq!(
        lines
            .iter()
            .map(|l| l["amount"].as_i64().unwrap())
            .sum::<i64>(),
        20,
        "{lines:?}"
    );
    assert_eq!(data["mySessions"], json!([{"id": id}]));
    assert_eq!(data["myWallet"]["balance"], 1_980);
    let charges: Vec<&Value> = data["myWallet"]["statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "session_charge")
        .collect();
    let charge = json!({"kind": "session_charge", "amount": -10, "sessionId": id});
    assert_eq!(
        charges,
        vec![&charge, &charge],
        "one at the pause, one at the stop"
    );
}

#[tokio::test]
async fn a_station_that_is_not_self_service_refuses_patron_starts_but_staff_can_still_start_it() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let me = patron(&app, f.t.id, "sam").await;
    top_up(&app, &f, me.id, 2_000, "cash").await;
    let vars = json!({"s": f.station, "m": 10, "pay": "WALLET", "k": "k1"});
    let body = app.gql(Some(&me.token), START, vars).await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    assert_eq!(
        body["errors"][0]["message"],
        "this station is not self-service: ask the staff to start it for you"
    );
    let count: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = $1")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let staff =
        crate::sessions::wallet_session(&app, &f.t.access, f.station, me.id, Some(10)).await;
    let data = app
        .gql_ok(
            &me.token,
            "query($id: UUID!) { mySession(id: $id) { status } }",
            json!({"id": staff}),
        )
        .await;
    assert_eq!(
        data["mySession"]["status"], "ACTIVE",
        "staff started it for the patron"
    );
}

#[tokio::test]
async fn another_patrons_or_tenants_sessions_answer_not_found_and_stay_unchanged() {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 2_000).await;
    let vars = json!({"s": f.station, "m": 30, "pay": "WALLET", "k": "mine"});
    let mine = app.gql_ok(&me.token, START, vars).await["startMySession"].clone();
    let id = mine["id"].clone();
    let neighbour = patron(&app, f.t.id, "ada").await;
    let (g, stranger) = shop(&app, 2_000).await;

    for intruder in [&neighbour, &stranger] {
        for mutation in [
            "extendMySession",
            "pauseMySession",
            "resumeMySession",
            "stopMySession",
        ] {
            let body = on_session(&app, &intruder.token, mutation, &id).await;
            assert_eq!(gql_code(&body), "not_found", "{mutation}: {body}");
            assert_eq!(body["errors"][0]["message"], "session not found");
        }
        let body = app
            .gql(
                Some(&intruder.token),
                "query($id: UUID!) { mySession(id: $id) { id } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(gql_code(&body), "not_found");
    }
    let data = app
        .gql_ok(
            &me.token,
            &format!("query($id: UUID!) {{ mySession(id: $id) {{ {SESSION} }} }}"),
            json!({"id": id}),
        )
        .await;
    assert_eq!(data["mySession"]["status"], "ACTIVE");
    assert_eq!(data["mySession"]["plannedEndAt"], mine["plannedEndAt"]);
    assert_eq!(
        session_row(&app, f.t.id, &id).await,
        ("active".into(), "patron".into(), None, 0)
    );

    // Another tenant's station, by id or by its code, and its QR endpoints.
    let payload = qr_payload(&app, &f.t.access, "stations", f.station).await;
    for vars in [
        json!({"s": f.station, "m": 10, "pay": "WALLET", "k": "x1"}),
        json!({"qr": payload, "m": 10, "pay": "WALLET", "k": "x2"}),
    ] {
        let body = app.gql(Some(&stranger.token), START, vars).await;
        assert_eq!(gql_code(&body), "not_found", "{body}");
    }
    for suffix in ["qr", "qr.svg", "qr.png"] {
        let (status, body) = app
            .get(
                &format!("/api/v1/stations/{}/{suffix}", f.station),
                &g.t.access,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{suffix}: {body}");
        let (status, body) = app
            .get(&format!("/api/v1/venues/{}/{suffix}", f.venue), &g.t.access)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{suffix}: {body}");
    }
}

#[tokio::test]
async fn bad_input_to_patron_mutations_answers_a_clear_4xx_code() {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 50).await;
    for (vars, code, field) in [
        (
            json!({"s": f.station, "m": 0, "pay": "WALLET", "k": "a"}),
            "validation_failed",
            Some("minutes"),
        ),
        (
            json!({"s": f.station, "m": 10, "pay": "WALLET", "k": " "}),
            "validation_failed",
            Some("Idempotency-Key"),
        ),
        (
            json!({"s": f.station, "m": 10, "pay": "WALLET", "k": "b"}),
            "insufficient_funds",
            None,
        ),
        (
            json!({"s": f.station, "pay": "CARD", "k": "c"}),
            "validation_failed",
            Some("minutes"),
        ),
        (
            json!({"s": f.station, "m": 10, "pay": "CARD", "k": "d"}),
            "validation_failed",
            Some("payWith"),
        ),
        (
            json!({"m": 10, "pay": "WALLET", "k": "e"}),
            "validation_failed",
            Some("stationId"),
        ),
    ] {
        let body = app.gql(Some(&me.token), START, vars.clone()).await;
        assert_eq!(gql_code(&body), code, "{vars}: {body}");
        assert_eq!(
            body["errors"][0]["extensions"]["field"].as_str(),
            field,
            "{body}"
        );
    }
    // Staff use startSession; the patron mutations are the patron's.
    let body = app
        .gql(
            Some(&f.t.access),
            START,
            json!({"s": f.station, "m": 10, "pay": "WALLET", "k": "f"}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");
    let count: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = $1")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing started");
}

#[tokio::test]
async fn a_tariff_that_is_not_pausable_refuses_a_patrons_pause_but_staff_may_still_pause() {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 2_000).await;
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($id: UUID!) { updateTariff(id: $id, terms: {currency: \"EUR\", perMinute: 10, pausable: false}) {
               version terms { pausable } } }",
            json!({"id": f.tariff}),
        )
        .await;
    assert_eq!(data["updateTariff"]["terms"]["pausable"], false, "{data}");
    let vars = json!({"s": f.station, "m": 20, "pay": "WALLET", "k": "no-pause"});
    let body = app.gql(Some(&me.token), START, vars).await;
    let id = body["data"]["startMySession"]["id"].clone();
    assert!(id.is_string(), "{body}");
    let refused = on_session(&app, &me.token, "pauseMySession", &id).await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("paused"),
        "{refused}"
    );
    assert_eq!(session_row(&app, f.t.id, &id).await.0, "active");
    let paused = app
        .gql_ok(
            &f.t.access,
            "mutation($id: UUID!) { pauseSession(id: $id) { status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(paused["pauseSession"]["status"], "PAUSED");
}
