//! The OCPP central system, driven by a real charge point: the Python `ocpp` package (which checks every message
//! both ways against the official JSON schemas), scripted through `switchyard_tests::ocpp_peer`.

pub(crate) mod commands;
mod meters;
mod replicas;
mod robustness;
mod v201;

use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{ocpp_url, ChargePoint, OcppVersion};
use switchyard_tests::{Tenant, TestApp};
use uuid::Uuid;

/// A tenant with a venue billing energy at 0.30 EUR/kWh, an EV charger station with its charger registered and a
/// password set, and a patron with a tag and 10.00 EUR in the wallet.
pub(crate) struct Site {
    pub t: Tenant,
    pub venue: Uuid,
    pub station: Uuid,
    pub charger: Uuid,
    pub identity: String,
    pub password: String,
    pub patron: Uuid,
    pub tag: String,
}

pub(crate) fn uuid(v: &Value) -> Uuid {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not a uuid: {v}: {e}"))
}

pub(crate) async fn site(app: &TestApp) -> Site {
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "Charging hub").await;
    let tariff = app
        .create_tariff(&t.access, "Energy", "currency: \"EUR\", perKwh: 30")
        .await;
    app.gql_ok(
        &t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": tariff, "v": venue}),
    )
    .await;
    let identity = format!("CP-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let (station, charger, password) = charger_station(app, &t, venue, &identity).await;
    let patron = app.create_patron(&t.access, "Driver", None).await;
    // Funded first: a tag takes its patron's credit when it is added (the workers follow later changes).
    top_up(app, &t, venue, patron, 1000).await;
    let tag = format!("TAG{}", &Uuid::new_v4().simple().to_string()[..8]).to_uppercase();
    app.gql_ok(
        &t.access,
        "mutation($p: UUID!, $u: String!) { addRfidTag(patronId: $p, uid: $u) { id } }",
        json!({"p": patron, "u": tag}),
    )
    .await;
    Site {
        t,
        venue,
        station,
        charger,
        identity,
        password,
        patron,
        tag,
    }
}

/// An EV charger station with control `ocpp` under `identity`: (station, charger, password).
pub(crate) async fn charger_station(
    app: &TestApp,
    t: &Tenant,
    venue: Uuid,
    identity: &str,
) -> (Uuid, Uuid, String) {
    let data = app
        .gql_ok(
            &t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {
                "venueId": venue, "name": format!("Charger {identity}"), "kind": "EV_CHARGER",
                "control": "OCPP", "controlSettings": {"charge_point_id": identity}, "connectorCount": 2,
            }}),
        )
        .await;
    let station = uuid(&data["createStation"]["id"]);
    let data = app
        .gql_ok(
            &t.access,
            "query($s: UUID!) { charger(stationId: $s) { id chargePointId registration online hasPassword } }",
            json!({"s": station}),
        )
        .await;
    assert_eq!(data["charger"]["chargePointId"], identity);
    assert_eq!(data["charger"]["registration"], "accepted");
    assert_eq!(data["charger"]["hasPassword"], false);
    let charger = uuid(&data["charger"]["id"]);
    let data = app
        .gql_ok(
            &t.access,
            "mutation($c: UUID!) { setChargerPassword(id: $c) { password charger { hasPassword } } }",
            json!({"c": charger}),
        )
        .await;
    assert_eq!(data["setChargerPassword"]["charger"]["hasPassword"], true);
    let password = data["setChargerPassword"]["password"]
        .as_str()
        .unwrap_or_else(|| panic!("no password: {data}"))
        .to_owned();
    assert_eq!(password.len(), 32);
    (station, charger, password)
}

pub(crate) async fn top_up(app: &TestApp, t: &Tenant, venue: Uuid, patron: Uuid, amount: i64) {
    app.gql_ok(
        &t.access,
        "mutation($p: UUID!, $v: UUID!, $a: Int!, $k: String!) {
           topUpCash(patronId: $p, venueId: $v, amount: $a, idempotencyKey: $k) { id } }",
        json!({"p": patron, "v": venue, "a": amount, "k": Uuid::new_v4().to_string()}),
    )
    .await;
}

pub(crate) async fn wallet(app: &TestApp, t: &Tenant, patron: Uuid) -> (i64, i64) {
    let data = app
        .gql_ok(
            &t.access,
            "query($p: UUID!) { patron(id: $p) { wallet(currency: \"EUR\") { balance debt } } }",
            json!({"p": patron}),
        )
        .await;
    let w = &data["patron"]["wallet"];
    (
        w["balance"].as_i64().unwrap_or_else(|| panic!("{data}")),
        w["debt"].as_i64().unwrap_or_else(|| panic!("{data}")),
    )
}

/// Connects the site's charger (v1.6 unless told) and boots it; the boot must be accepted.
pub(crate) async fn boot(app: &TestApp, s: &Site, version: OcppVersion) -> ChargePoint {
    let url = ocpp_url(app.addr, &s.identity);
    let mut cp = ChargePoint::connect(&url, &s.identity, Some(&s.password), version)
        .await
        .unwrap_or_else(|e| panic!("charger could not connect: {e:?}"));
    assert_eq!(cp.subprotocol.as_deref(), Some(version.subprotocol()));
    let answer = match version {
        OcppVersion::V16 => cp
            .call(
                "BootNotification",
                json!({"chargePointVendor": "Acme", "chargePointModel": "AC22", "firmwareVersion": "1.2.3"}),
            )
            .await,
        OcppVersion::V201 => cp
            .call(
                "BootNotification",
                json!({"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "DC50"}}),
            )
            .await,
    }
    .unwrap_or_else(|e| panic!("boot refused: {e}"));
    assert_eq!(answer["status"], "Accepted", "{answer}");
    assert_eq!(answer["interval"], 300, "{answer}");
    cp
}

/// A charger as GraphQL shows it.
pub(crate) async fn charger(app: &TestApp, t: &Tenant, id: Uuid) -> Value {
    app.gql_ok(
        &t.access,
        "query($c: UUID!) { charger(id: $c) { id online vendor model firmwareVersion protocol localListVersion
           powerLimitW configuration transactions { ocppId connector idTag authStatus sessionId meterStartWh meterLastWh
           energyWh stoppedAt stopReason offline } } }",
        json!({"c": id}),
    )
    .await["charger"]
        .clone()
}

/// Waits (bounded) until `check` holds for the charger as GraphQL shows it.
pub(crate) async fn until_charger(
    app: &TestApp,
    t: &Tenant,
    id: Uuid,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let c = charger(app, t, id).await;
        if check(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; charger: {c}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub(crate) async fn session(app: &TestApp, t: &Tenant, id: Uuid) -> Value {
    app.gql_ok(
        &t.access,
        "query($s: UUID!) { session(id: $s) { id status origin energyWh chargedAmount endedAt liveCost { amount } } }",
        json!({"s": id}),
    )
    .await["session"]
        .clone()
}

/// A charger connected directly (no bridge) loses its link, out of coverage, and the driver unplugs meanwhile: the
/// stop it held comes once it is back, and the session ends at the stop's own time. Before, the reconnection had just
/// set when the charger was last heard, and the session was taken as ended no earlier: the patron paid for the
/// outage. A stop stamped before the connection began still never ends a session before the charger was last heard.
#[tokio::test]
async fn a_stop_a_direct_charger_held_while_offline_ends_the_session_at_its_own_time() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 1000, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction = start["transactionId"].clone();
    let c = charger(&app, &s.t, s.charger).await;
    let session_id = uuid(&c["transactions"][0]["sessionId"]);
    cp.close().await;
    until_charger(&app, &s.t, s.charger, "the charger offline", |c| {
        c["online"] == false
    })
    .await;
    // The outage, moved into the past: the transaction began two hours ago, the charger was last heard 115 minutes
    // ago, and the driver unplugged 110 minutes ago.
    for sql in [
        "update charging_transaction set started_at = started_at - interval '2 hours'
          where tenant_id = $1 and station_id = $2",
        "update session set started_at = started_at - interval '2 hours' where tenant_id = $1 and station_id = $2",
        "update charger set last_seen_at = now() - interval '115 minutes' where tenant_id = $1 and station_id = $2",
    ] {
        sqlx::query(sql)
            .bind(s.t.id)
            .bind(s.station)
            .execute(&app.owner)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let unplugged = chrono::Utc::now() - chrono::Duration::minutes(110);
    let stop = cp
        .call(
            "StopTransaction",
            json!({"transactionId": transaction, "meterStop": 3000, "timestamp": unplugged, "reason": "EVDisconnected"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stop, json!({}), "no tag, no verdict");
    let done = session(&app, &s.t, session_id).await;
    assert_eq!(done["status"], "ENDED", "{done}");
    let ended: chrono::DateTime<chrono::Utc> = done["endedAt"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{done}"));
    assert!(
        (ended - unplugged).num_seconds().abs() <= 1,
        "ended at the unplugging ({unplugged}), not at the reconnection: {done}"
    );
}

#[tokio::test]
async fn a_charger_still_connected_to_an_archived_station_bills_no_one_and_is_told_the_tag_is_blocked(
) {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    app.gql_ok(
        &s.t.access,
        "mutation($s: UUID!) { archiveStation(id: $s) { id } }",
        json!({"s": s.station}),
    )
    .await;
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(start["idTagInfo"]["status"], "Blocked", "{start}");
    let mut tx = app.tenant_tx(s.t.id).await;
    let (transactions, sessions): (i64, i64) = sqlx::query_as(
        "select (select count(*) from charging_transaction where station_id = $1 and session_id is null),
                (select count(*) from session where station_id = $1)",
    )
    .bind(s.station)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((transactions, sessions), (1, 0));
}

#[tokio::test]
async fn a_start_at_a_station_that_cannot_bill_is_kept_unbilled_and_the_tag_told_it_is_blocked() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    // A second venue that no tariff applies to, with a charger of its own: no session can open there.
    let bare = app.create_venue(&s.t.access, "No tariff yet").await;
    let identity = format!("CP-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let (station, charger_id, password) = charger_station(&app, &s.t, bare, &identity).await;
    let s = Site {
        venue: bare,
        station,
        charger: charger_id,
        identity,
        password,
        ..s
    };
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 2, "idTag": s.tag, "meterStart": 1_000, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("a start must be answered, not refused and lost: {e}"));
    assert_eq!(start["idTagInfo"]["status"], "Blocked", "{start}");
    let id = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));
    // The charger stops it; the stop is answered and the transaction ends, billed to no one.
    cp.call(
        "StopTransaction",
        json!({"transactionId": id, "meterStop": 1_400, "timestamp": chrono::Utc::now(), "reason": "DeAuthorized"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let c = charger(&app, &s.t, s.charger).await;
    let t = &c["transactions"][0];
    assert_eq!(
        (
            &t["ocppId"],
            &t["connector"],
            &t["authStatus"],
            &t["sessionId"],
            &t["energyWh"]
        ),
        (
            &json!(id.to_string()),
            &json!(2),
            &json!("Blocked"),
            &json!(null),
            &json!(400)
        ),
        "{c}"
    );
    assert!(t["stoppedAt"].is_string(), "{t}");
    let mut tx = app.tenant_tx(s.t.id).await;
    let (sessions, reason): (i64, Option<String>) = sqlx::query_as(
        "select (select count(*) from session where station_id = $1),
                (select detail->>'reason' from audit_log where action = 'charging.unbilled_transaction'
                   and object_id = $2 and detail->>'transaction' = $3)",
    )
    .bind(s.station)
    .bind(s.charger)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sessions, 0);
    // The operator reads why, in words to act on.
    assert_eq!(
        reason.as_deref(),
        Some("no tariff applies to this station; assign one to it, its kind or its venue")
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (1000, 0));
}

/// A connected charger whose clock runs three hours slow starts a transaction: the session is billed from about now
/// (not before the cloud last heard from it), while the transaction keeps the charger's own time.
#[tokio::test]
async fn a_live_start_from_a_charger_whose_clock_runs_slow_is_not_billed_for_the_hours_before() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    let before = chrono::Utc::now();
    let stamped = before - chrono::Duration::hours(3);
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0, "timestamp": stamped}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(start["idTagInfo"]["status"], "Accepted", "{start}");
    let mut tx = app.tenant_tx(s.t.id).await;
    let (transaction_at, session_at): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "select t.started_at, s.started_at from charging_transaction t join session s on s.id = t.session_id
             where t.station_id = $1",
        )
        .bind(s.station)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        transaction_at.timestamp_millis(),
        stamped.timestamp_millis()
    );
    assert!(
        session_at >= before - chrono::Duration::minutes(2) && session_at <= chrono::Utc::now(),
        "billed from {session_at}, the start came at {before}"
    );
}

#[tokio::test]
async fn a_v16_charger_boots_reports_and_bills_a_transaction_by_energy_from_the_wallet() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    // The tenant has a tag, so the accepted charger gets the whole local list at once.
    let list = cp.next_received("SendLocalList").await;
    assert_eq!(list["updateType"], "Full", "{list}");
    assert_eq!(
        list["localAuthorizationList"],
        json!([{"idTag": s.tag, "idTagInfo": {"status": "Accepted"}}])
    );

    let c = until_charger(&app, &s.t, s.charger, "the local list version", |c| {
        c["localListVersion"].as_i64() == list["listVersion"].as_i64()
    })
    .await;
    assert_eq!(c["online"], true);
    assert_eq!(
        (c["vendor"].as_str(), c["model"].as_str()),
        (Some("Acme"), Some("AC22"))
    );
    assert_eq!(c["firmwareVersion"], "1.2.3");
    assert_eq!(c["protocol"], "ocpp1.6");

    let status = cp
        .call(
            "StatusNotification",
            json!({"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, json!({}));
    let mut tx = app.tenant_tx(s.t.id).await;
    let connector: (Option<String>, String) = sqlx::query_as(
        "select ocpp_status, status::text from connector where station_id = $1 and number = 1",
    )
    .bind(s.station)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(connector, (Some("Preparing".into()), "online".into()));
    drop(tx);

    let auth = cp
        .call("Authorize", json!({"idTag": s.tag}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auth, json!({"idTagInfo": {"status": "Accepted"}}));

    let started_at = chrono::Utc::now();
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 1000, "timestamp": started_at}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(start["idTagInfo"]["status"], "Accepted");
    let transaction_id = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));

    let c = charger(&app, &s.t, s.charger).await;
    let t = &c["transactions"][0];
    assert_eq!(t["ocppId"], transaction_id.to_string());
    assert_eq!(t["authStatus"], "Accepted");
    let session_id = uuid(&t["sessionId"]);
    let running = session(&app, &s.t, session_id).await;
    assert_eq!(running["status"], "ACTIVE");
    assert_eq!(running["origin"], "device");

    // 5 kWh delivered so far: the live cost follows the meter (5 kWh x 0.30 = 1.50).
    let meter = cp
        .call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": transaction_id, "meterValue": [{
                "timestamp": chrono::Utc::now(),
                "sampledValue": [
                    {"value": "6.0", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"},
                ],
            }]}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(meter, json!({}));
    let running = session(&app, &s.t, session_id).await;
    assert_eq!(running["energyWh"], 5000);
    assert_eq!(running["liveCost"]["amount"], 150);

    let stop = cp
        .call(
            "StopTransaction",
            json!({"transactionId": transaction_id, "meterStop": 11000, "timestamp": chrono::Utc::now(),
                   "reason": "EVDisconnected", "idTag": s.tag}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stop["idTagInfo"]["status"], "Accepted");
    let ended = session(&app, &s.t, session_id).await;
    assert_eq!(ended["status"], "ENDED");
    assert_eq!(ended["energyWh"], 10_000);
    // 10 kWh x 0.30 EUR = 3.00 EUR, from the wallet.
    assert_eq!(ended["chargedAmount"], 300);
    assert_eq!(wallet(&app, &s.t, s.patron).await, (700, 0));
    let c = charger(&app, &s.t, s.charger).await;
    let t = &c["transactions"][0];
    assert_eq!(t["energyWh"], 10_000);
    assert_eq!(t["stopReason"], "EVDisconnected");

    // The same stop again (its answer lost) changes nothing.
    let again = cp
        .call(
            "StopTransaction",
            json!({"transactionId": transaction_id, "meterStop": 11000, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, json!({}));
    assert_eq!(wallet(&app, &s.t, s.patron).await, (700, 0));
    cp.close().await;
    until_charger(&app, &s.t, s.charger, "offline after close", |c| {
        c["online"] == false
    })
    .await;
}

#[tokio::test]
async fn tags_are_judged_blocked_expired_by_parent_and_by_the_patrons_money() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let status_of = |v: Value| {
        v["idTagInfo"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    let unknown = cp.call("Authorize", json!({"idTag": "NOBODY01"})).await;
    assert_eq!(
        status_of(unknown.unwrap_or_else(|e| panic!("{e}"))),
        "Invalid"
    );

    // A uid is measured as stored, upper-cased: 33 "ß" are 66 characters ("SS" each), more than a tag may have.
    let long = app
        .gql(
            Some(&s.t.access),
            "mutation($p: UUID!, $u: String!) { addRfidTag(patronId: $p, uid: $u) { id } }",
            json!({"p": s.patron, "u": "ß".repeat(33)}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&long),
        "validation_failed",
        "{long}"
    );
    assert_eq!(long["errors"][0]["extensions"]["field"], "uid", "{long}");

    // A second tag of the patron under the first as parent; the parent blocked blocks it.
    let child = format!("{}C", s.tag);
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!, $u: String!) { addRfidTag(patronId: $p, uid: $u) { id } }",
        json!({"p": s.patron, "u": child}),
    )
    .await;
    app.gql_ok(
        &s.t.access,
        "mutation($u: String!, $p: String!) { updateRfidTag(uid: $u, patch: {parentUid: $p}) { parentUid } }",
        json!({"u": child, "p": s.tag}),
    )
    .await;
    let ok = cp.call("Authorize", json!({"idTag": child})).await;
    assert_eq!(
        ok.unwrap_or_else(|e| panic!("{e}")),
        json!({"idTagInfo": {"status": "Accepted", "parentIdTag": s.tag}})
    );
    app.gql_ok(
        &s.t.access,
        "mutation($u: String!) { updateRfidTag(uid: $u, patch: {blocked: true}) { blocked } }",
        json!({"u": s.tag}),
    )
    .await;
    for tag in [&s.tag, &child] {
        let answer = cp.call("Authorize", json!({"idTag": tag})).await;
        assert_eq!(
            status_of(answer.unwrap_or_else(|e| panic!("{e}"))),
            "Blocked",
            "{tag}"
        );
    }
    app.gql_ok(
        &s.t.access,
        "mutation($u: String!) { updateRfidTag(uid: $u, patch: {blocked: false, expiresAt: \"2020-01-01T00:00:00Z\"}) { blocked } }",
        json!({"u": s.tag}),
    )
    .await;
    let expired = cp.call("Authorize", json!({"idTag": s.tag})).await;
    assert_eq!(
        status_of(expired.unwrap_or_else(|e| panic!("{e}"))),
        "Expired"
    );

    // A patron without money: refused (1.6 has no NoCredit: Blocked).
    let broke = app.create_patron(&s.t.access, "Broke", None).await;
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!, $u: String!) { addRfidTag(patronId: $p, uid: $u) { id } }",
        json!({"p": broke, "u": "BROKE001"}),
    )
    .await;
    let answer = cp.call("Authorize", json!({"idTag": "broke001"})).await;
    assert_eq!(
        status_of(answer.unwrap_or_else(|e| panic!("{e}"))),
        "Blocked"
    );
    // And its start is kept but not billed.
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 2, "idTag": "BROKE001", "meterStart": 0, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(start["idTagInfo"]["status"], "Blocked");
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"][0]["authStatus"], "NoCredit");
    assert_eq!(c["transactions"][0]["sessionId"], Value::Null);
}

#[tokio::test]
async fn a_transaction_run_offline_with_an_unknown_tag_is_kept_and_the_tag_stored_blocked() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": "STRANGER", "meterStart": 500, "timestamp": an_hour_ago}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(start["idTagInfo"]["status"], "Invalid");
    let id = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));
    let stop = cp
        .call(
            "StopTransaction",
            json!({"transactionId": id, "meterStop": 4500, "timestamp": an_hour_ago + chrono::Duration::minutes(30)}),
        )
        .await;
    assert_eq!(stop.unwrap_or_else(|e| panic!("{e}")), json!({}));
    let c = charger(&app, &s.t, s.charger).await;
    let t = &c["transactions"][0];
    assert_eq!(
        (t["offline"].clone(), t["energyWh"].clone()),
        (json!(true), json!(4000))
    );
    assert_eq!(t["sessionId"], Value::Null);
    let tags = app
        .gql_ok(
            &s.t.access,
            "{ rfidTags { uid patronId blocked } }",
            json!({}),
        )
        .await;
    assert!(
        tags["rfidTags"].as_array().is_some_and(
            |l| l.contains(&json!({"uid": "STRANGER", "patronId": null, "blocked": true}))
        ),
        "{tags}"
    );
    // Given to a patron, it works.
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!) { addRfidTag(patronId: $p, uid: \"STRANGER\") { id } }",
        json!({"p": s.patron}),
    )
    .await;
    let auth = cp.call("Authorize", json!({"idTag": "STRANGER"})).await;
    assert_eq!(
        auth.unwrap_or_else(|e| panic!("{e}"))["idTagInfo"]["status"],
        "Accepted"
    );
    // A tag too short to be one of the tenant's (under 4 characters) is not kept, but its transaction is: answered
    // at once, not refused and sent again for ever.
    let short = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 2, "idTag": "AB", "meterStart": 0, "timestamp": an_hour_ago}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(short["idTagInfo"]["status"], "Invalid", "{short}");
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"].as_array().map(Vec::len), Some(2), "{c}");
    let tags = app
        .gql_ok(&s.t.access, "{ rfidTags { uid } }", json!({}))
        .await;
    assert!(!tags.to_string().contains("\"AB\""), "{tags}");
}

#[tokio::test]
async fn sessions_started_and_stopped_in_the_cloud_drive_the_charger_remotely() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id status } }",
            json!({"s": s.station, "p": s.patron}),
        )
        .await;
    let session_id = uuid(&data["startSession"]["id"]);
    let remote = cp.next_received("RemoteStartTransaction").await;
    assert_eq!(remote["connectorId"], 1);
    let tag = remote["idTag"]
        .as_str()
        .unwrap_or_else(|| panic!("{remote}"))
        .to_owned();
    assert_eq!(tag.len(), 20);
    // The charger authorizes the handed tag and starts: the transaction joins the cloud's session.
    let auth = cp.call("Authorize", json!({"idTag": tag})).await;
    assert_eq!(
        auth.unwrap_or_else(|e| panic!("{e}"))["idTagInfo"]["status"],
        "Accepted"
    );
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": tag, "meterStart": 20000, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction_id = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(uuid(&c["transactions"][0]["sessionId"]), session_id);
    cp.call(
        "MeterValues",
        json!({"connectorId": 1, "transactionId": transaction_id, "meterValue": [{
            "timestamp": chrono::Utc::now(), "sampledValue": [{"value": "22000"}]}]}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    app.gql_ok(
        &s.t.access,
        "mutation($s: UUID!) { stopSession(id: $s) { status } }",
        json!({"s": session_id}),
    )
    .await;
    let stop = cp.next_received("RemoteStopTransaction").await;
    assert_eq!(stop, json!({"transactionId": transaction_id}));
    let ended = session(&app, &s.t, session_id).await;
    assert_eq!(
        (ended["status"].clone(), ended["energyWh"].clone()),
        (json!("ENDED"), json!(2000))
    );
    assert_eq!(ended["chargedAmount"], 60);
    assert_eq!(wallet(&app, &s.t, s.patron).await, (940, 0));
    until_call(&app, &s.t, s.charger, "RemoteStopTransaction", |c| {
        c["status"] == "answered" && c["response"] == json!({"status": "Accepted"})
    })
    .await;
    // The charger's own stop follows with its final register: the energy delivered since the last reading, up to
    // its stop, is billed too (1 kWh more at 30), once however often the stop is sent.
    for _ in 0..2 {
        let stopped = cp
            .call(
                "StopTransaction",
                json!({"transactionId": transaction_id, "meterStop": 23000, "timestamp": chrono::Utc::now()}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped, json!({}));
    }
    let settled = session(&app, &s.t, session_id).await;
    assert_eq!(
        (
            &settled["status"],
            &settled["energyWh"],
            &settled["chargedAmount"]
        ),
        (&json!("ENDED"), &json!(3000), &json!(90)),
        "{settled}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (910, 0));
}

/// A charger that stopped while its reports were held up (its bridge's tunnel down, say) reports the stop late,
/// stamped with its own time: the session ends then, and what the billing ticks charged past that moment goes back
/// (journal `session:<id>:ended_by_device`), once however often the stop is sent.
#[tokio::test]
async fn a_stop_reported_late_gives_back_what_ticks_charged_past_the_chargers_own_stop() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let by_time = app
        .create_tariff(&s.t.access, "By time", "currency: \"EUR\", perMinute: 10")
        .await;
    app.gql_ok(
        &s.t.access,
        "mutation($t: UUID!, $v: UUID!, $s: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v, stationId: $s}) { id } }",
        json!({"t": by_time, "v": s.venue, "s": s.station}),
    )
    .await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let stopped_at = chrono::Utc::now();
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0,
                   "timestamp": stopped_at - chrono::Duration::seconds(30)}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction_id = start["transactionId"].clone();
    let c = charger(&app, &s.t, s.charger).await;
    let session_id = uuid(&c["transactions"][0]["sessionId"]);
    // The cloud, not hearing of the stop, bills on: six started minutes.
    let at = chrono::Utc::now() + chrono::Duration::minutes(5);
    assert_eq!(
        switchyard_tests::bill_tick(s.t.id, session_id, at).await,
        60
    );
    for _ in 0..2 {
        let stopped = cp
            .call(
                "StopTransaction",
                json!({"transactionId": transaction_id, "meterStop": 0, "timestamp": stopped_at}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stopped, json!({}));
    }
    let ended = session(&app, &s.t, session_id).await;
    assert_eq!(
        (&ended["status"], &ended["chargedAmount"]),
        (&json!("ENDED"), &json!(10)),
        "the one started minute: {ended}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (990, 0));
    let given_back: i64 = sqlx::query_scalar(
        "select count(*) from journal where tenant_id = $1 and idempotency_key = $2",
    )
    .bind(s.t.id)
    .bind(format!("session:{session_id}:ended_by_device"))
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(given_back, 1);
}

/// Waits (bounded) until the charger's latest call of `action` satisfies `check`; returns it.
pub(crate) async fn until_call(
    app: &TestApp,
    t: &Tenant,
    charger: Uuid,
    action: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let data = app
            .gql_ok(
                &t.access,
                "query($c: UUID!) { charger(id: $c) { calls { id action status payload response error } } }",
                json!({"c": charger}),
            )
            .await;
        let calls = data["charger"]["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(call) = calls.iter().find(|c| c["action"] == action) {
            if check(call) {
                return call.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the {action} call; calls: {calls:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_refused_remote_start_fails_its_session_and_costs_nothing() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.reply("RemoteStartTransaction", json!({"status": "Rejected"}))
        .await;
    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": s.station, "p": s.patron}),
        )
        .await;
    let session_id = uuid(&data["startSession"]["id"]);
    cp.next_received("RemoteStartTransaction").await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s2 = session(&app, &s.t, session_id).await;
        if s2["status"] == "FAILED" {
            assert_eq!(s2["chargedAmount"], 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never failed: {s2}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(wallet(&app, &s.t, s.patron).await, (1000, 0));
}

#[tokio::test]
async fn the_patron_app_and_rest_start_and_stop_charging_remotely_too() {
    let app = switchyard_tests::spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    crate::patron_actions::self_service(&app, &s.t.access, s.station).await;
    let me = crate::patron_actions::patron(&app, s.t.id, "Eve").await;
    top_up(&app, &s.t, s.venue, me.id, 500).await;
    let started = app
        .gql_ok(
            &me.token,
            crate::patron_actions::START,
            json!({"s": s.station, "m": null, "pay": "WALLET", "k": Uuid::new_v4().to_string()}),
        )
        .await;
    let session_id = uuid(&started["startMySession"]["id"]);
    let remote = cp.next_received("RemoteStartTransaction").await;
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": remote["idTag"], "meterStart": 0, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction_id = start["transactionId"].clone();
    assert_eq!(
        uuid(&charger(&app, &s.t, s.charger).await["transactions"][0]["sessionId"]),
        session_id
    );
    let stopped = app
        .gql_ok(
            &me.token,
            "mutation($id: UUID!) { stopMySession(id: $id) { status } }",
            json!({"id": session_id}),
        )
        .await;
    assert_eq!(stopped["stopMySession"]["status"], "ENDED");
    assert_eq!(
        cp.next_received("RemoteStopTransaction").await,
        json!({"transactionId": transaction_id})
    );

    // Staff over REST.
    let (status, body) = crate::sessions::start(
        &app,
        &s.t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": s.station, "patron_id": s.patron, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let remote = cp.next_received("RemoteStartTransaction").await;
    assert_eq!(remote["idTag"].as_str().map(str::len), Some(20));
}
