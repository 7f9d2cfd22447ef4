//! Calls from the central system: operator commands answered by the charger, the local list kept in step with the
//! tenant's tags, reservations, and chargers that join as pending and are adopted.

use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{ocpp_url, ChargePoint, OcppVersion};
use switchyard_tests::spawn_app;
use uuid::Uuid;

use super::{boot, charger, site, top_up, until_call, until_charger, uuid};

pub(super) async fn command(
    app: &switchyard_tests::TestApp,
    token: &str,
    charger: Uuid,
    command: Value,
) -> Value {
    app.gql_ok(
        token,
        "mutation($c: UUID!, $k: ChargerCommandInput!) {
           chargerCommand(id: $c, command: $k, waitSeconds: 20) { id action status payload response error } }",
        json!({"c": charger, "k": command}),
    )
    .await["chargerCommand"]
        .clone()
}

#[tokio::test]
async fn operator_commands_reach_the_charger_and_its_answers_are_kept() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;

    let got = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "GET_CONFIGURATION"}),
    )
    .await;
    assert_eq!(
        (got["action"].as_str(), got["status"].as_str()),
        (Some("GetConfiguration"), Some("answered")),
        "{got}"
    );
    assert!(got["response"]["configurationKey"].is_array(), "{got}");
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["configuration"], got["response"]);

    let changed = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "CHANGE_CONFIGURATION", "key": "HeartbeatInterval", "value": "120"}),
    )
    .await;
    assert_eq!(changed["status"], "answered", "{changed}");
    assert_eq!(
        cp.next_received("GetConfiguration").await,
        json!({}),
        "GetConfiguration came first"
    );
    assert_eq!(
        cp.next_received("ChangeConfiguration").await,
        json!({"key": "HeartbeatInterval", "value": "120"})
    );

    for (input, action, payload) in [
        (
            json!({"kind": "HARD_RESET"}),
            "Reset",
            json!({"type": "Hard"}),
        ),
        (
            json!({"kind": "UNLOCK_CONNECTOR", "connector": 2}),
            "UnlockConnector",
            json!({"connectorId": 2}),
        ),
        (
            json!({"kind": "CHANGE_AVAILABILITY", "connector": 0, "operative": false}),
            "ChangeAvailability",
            json!({"connectorId": 0, "type": "Inoperative"}),
        ),
        (
            json!({"kind": "TRIGGER_MESSAGE", "message": "StatusNotification", "connector": 1}),
            "TriggerMessage",
            json!({"requestedMessage": "StatusNotification", "connectorId": 1}),
        ),
        (
            json!({"kind": "GET_LOCAL_LIST_VERSION"}),
            "GetLocalListVersion",
            json!({}),
        ),
        (
            json!({"kind": "DATA_TRANSFER", "vendorId": "com.acme", "data": "hello"}),
            "DataTransfer",
            json!({"vendorId": "com.acme", "data": "hello"}),
        ),
    ] {
        let call = command(&app, &s.t.access, s.charger, input.clone()).await;
        assert_eq!(call["status"], "answered", "{input}: {call}");
        assert_eq!(cp.next_received(action).await, payload, "{input}");
    }

    let limited = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "SET_POWER_LIMIT", "watts": 7400}),
    )
    .await;
    assert_eq!(limited["status"], "answered", "{limited}");
    let profile = cp.next_received("SetChargingProfile").await;
    assert_eq!(
        profile["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        7400
    );
    assert_eq!(charger(&app, &s.t, s.charger).await["powerLimitW"], 7400);
    command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "SET_POWER_LIMIT"}),
    )
    .await;
    assert_eq!(
        cp.next_received("ClearChargingProfile").await,
        json!({"id": 1})
    );
    assert_eq!(
        charger(&app, &s.t, s.charger).await["powerLimitW"],
        Value::Null
    );

    // A charger that answers with a CALLERROR: kept as the call's error.
    cp.reply_error("Reset", "NotSupported").await;
    let refused = command(&app, &s.t.access, s.charger, json!({"kind": "SOFT_RESET"})).await;
    assert_eq!(refused["status"], "error", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("NotSupported")),
        "{refused}"
    );

    // Vendor data the central system does not know.
    let transfer = cp
        .call(
            "DataTransfer",
            json!({"vendorId": "com.other", "messageId": "x"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(transfer, json!({"status": "UnknownVendorId"}));

    // Bad commands are refused before anything is sent.
    let bad = app
        .gql(
            Some(&s.t.access),
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: TRIGGER_MESSAGE, message: \"Selfdestruct\"}) { id } }",
            json!({"c": s.charger}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&bad),
        "validation_failed",
        "{bad}"
    );
}

#[tokio::test]
async fn a_charger_that_does_not_answer_times_out_and_the_next_call_goes_out() {
    let app = switchyard_tests::spawn_app_with(&[("OCPP_CALL_TIMEOUT_SECS", "1")]).await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    cp.reply_silent("Reset").await;
    let first = command(&app, &s.t.access, s.charger, json!({"kind": "SOFT_RESET"})).await;
    assert_eq!(first["status"], "timeout", "{first}");
    let second = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "GET_LOCAL_LIST_VERSION"}),
    )
    .await;
    assert_eq!(second["status"], "answered", "{second}");
}

#[tokio::test]
async fn the_local_list_follows_the_tenants_tags_by_differential_updates() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let full = cp.next_received("SendLocalList").await;
    assert_eq!(full["updateType"], "Full");
    let v1 = full["listVersion"]
        .as_i64()
        .unwrap_or_else(|| panic!("{full}"));
    until_charger(&app, &s.t, s.charger, "list v1", |c| {
        c["localListVersion"].as_i64() == Some(v1)
    })
    .await;

    let other = app.create_patron(&s.t.access, "Second driver", None).await;
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!) { addRfidTag(patronId: $p, uid: \"NEWTAG01\") { id } }",
        json!({"p": other}),
    )
    .await;
    // The second driver has no money yet: the list refuses the tag (1.6 says `Blocked` for 2.0.1's `NoCredit`),
    // so a charger that cannot ask the cloud refuses it as Authorize would.
    let diff = cp.next_received("SendLocalList").await;
    assert_eq!(diff["updateType"], "Differential");
    assert_eq!(
        diff["localAuthorizationList"],
        json!([{"idTag": "NEWTAG01", "idTagInfo": {"status": "Blocked"}}])
    );
    let v2 = diff["listVersion"].as_i64().unwrap_or_default();
    assert!(v2 > v1);
    until_charger(&app, &s.t, s.charger, "list v2", |c| {
        c["localListVersion"].as_i64() == Some(v2)
    })
    .await;
    let tag_credit = || async {
        let listed = app
            .gql_ok(&s.t.access, "{ rfidTags { uid noCredit } }", json!({}))
            .await;
        listed["rfidTags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["uid"] == "NEWTAG01"))
            .map(|t| t["noCredit"].clone())
    };
    assert_eq!(tag_credit().await, Some(json!(true)));

    // Funded at the counter: the workers' pass over the tenant's tags gives it back as accepted.
    top_up(&app, &s.t, s.venue, other, 500).await;
    assert_eq!(follow_credit(s.t.id).await, 1);
    assert_eq!(follow_credit(s.t.id).await, 0, "nothing changed since");
    let funded = cp.next_received("SendLocalList").await;
    assert_eq!(funded["updateType"], "Differential");
    assert_eq!(
        funded["localAuthorizationList"],
        json!([{"idTag": "NEWTAG01", "idTagInfo": {"status": "Accepted"}}])
    );
    assert_eq!(tag_credit().await, Some(json!(false)));
    let v2 = funded["listVersion"].as_i64().unwrap_or_default();
    until_charger(&app, &s.t, s.charger, "list v3", |c| {
        c["localListVersion"].as_i64() == Some(v2)
    })
    .await;

    app.gql_ok(
        &s.t.access,
        "mutation { updateRfidTag(uid: \"NEWTAG01\", patch: {blocked: true}) { blocked } }",
        json!({}),
    )
    .await;
    let blocked = cp.next_received("SendLocalList").await;
    assert_eq!(
        blocked["localAuthorizationList"],
        json!([{"idTag": "NEWTAG01", "idTagInfo": {"status": "Blocked"}}])
    );

    // A tag longer than a 1.6 idTag (20) is a 2.0.1 charger's only: a 1.6 charger's list leaves it out, where it
    // would have made the charger refuse the whole update. Longer than a 2.0.1 idToken (36), it is refused.
    let too_long = app
        .gql(
            Some(&s.t.access),
            "mutation($p: UUID!) { addRfidTag(patronId: $p, uid: \"TAG4567890123456789012345678901234567\") { id } }",
            json!({"p": other}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&too_long),
        "validation_failed",
        "{too_long}"
    );
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!) { addRfidTag(patronId: $p, uid: \"EMAID0123456789ABCDEF\") { id } }",
        json!({"p": other}),
    )
    .await;
    let long = cp.next_received("SendLocalList").await;
    assert_eq!(long["updateType"], "Differential");
    assert_eq!(long["localAuthorizationList"], json!([]), "{long}");

    // Asked for, the whole list again.
    command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "SYNC_LOCAL_LIST"}),
    )
    .await;
    let again = cp.next_received("SendLocalList").await;
    assert_eq!(again["updateType"], "Full");
    assert_eq!(
        again["localAuthorizationList"].as_array().map(Vec::len),
        Some(2),
        "the site's tag and NEWTAG01, not the 21-character one: {again}"
    );
}

/// A reservation's standing as stored.
async fn reservation_status(app: &switchyard_tests::TestApp, s: &super::Site, id: i64) -> String {
    sqlx::query_scalar("select status from charging_reservation where id = $1")
        .bind(id as i32)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn reservations_are_made_used_and_cancelled() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.next_received("SendLocalList").await;
    // A connector is held a day at most; nothing is sent to the charger for a longer hold.
    let far = app
        .gql(
            Some(&s.t.access),
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) {
               reserveCharger(id: $c, connector: 1, patronId: $p, expiresAt: $e) { id } }",
            json!({"c": s.charger, "p": s.patron, "e": chrono::Utc::now() + chrono::Duration::days(2)}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&far),
        "validation_failed",
        "{far}"
    );
    assert_eq!(
        far["errors"][0]["extensions"]["field"], "expiresAt",
        "{far}"
    );
    // The longest hold the console offers (1,440 minutes) is taken.
    let until = chrono::Utc::now() + chrono::Duration::minutes(1440);
    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) {
               reserveCharger(id: $c, connector: 1, patronId: $p, expiresAt: $e, waitSeconds: 20) { id call { status } } }",
            json!({"c": s.charger, "p": s.patron, "e": until}),
        )
        .await;
    let reservation = data["reserveCharger"]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{data}"));
    assert_eq!(data["reserveCharger"]["call"]["status"], "answered");
    let asked = cp.next_received("ReserveNow").await;
    assert_eq!(
        (asked["reservationId"].as_i64(), asked["idTag"].as_str()),
        (Some(reservation), Some(s.tag.as_str()))
    );
    assert_eq!(reservation_status(&app, &s, reservation).await, "accepted");
    cp.call(
        "StartTransaction",
        json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0, "timestamp": chrono::Utc::now(),
               "reservationId": reservation}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reservation_status(&app, &s, reservation).await, "used");

    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) {
               reserveCharger(id: $c, connector: 2, patronId: $p, expiresAt: $e, waitSeconds: 20) { id } }",
            json!({"c": s.charger, "p": s.patron, "e": until}),
        )
        .await;
    let second = data["reserveCharger"]["id"].as_i64().unwrap_or_default();
    cp.next_received("ReserveNow").await;
    let cancelled = app
        .gql_ok(
            &s.t.access,
            "mutation($r: Int!) { cancelChargerReservation(reservationId: $r, waitSeconds: 20) { status } }",
            json!({"r": second}),
        )
        .await;
    assert_eq!(cancelled["cancelChargerReservation"]["status"], "answered");
    assert_eq!(
        cp.next_received("CancelReservation").await,
        json!({"reservationId": second})
    );
    assert_eq!(reservation_status(&app, &s, second).await, "cancelled");
}

#[tokio::test]
async fn an_unknown_charger_with_the_onboarding_key_waits_as_pending_until_adopted() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let id = format!("NEW-{}", &Uuid::new_v4().simple().to_string()[..10]);
    let url = ocpp_url(app.addr, &id);
    // Refused while the tenant takes no unknown chargers.
    let refused = ChargePoint::connect(&url, &id, Some("anything-at-all"), OcppVersion::V16).await;
    assert_eq!(refused.err().and_then(|e| e.status), Some(401));
    let key = app
        .gql_ok(
            &s.t.access,
            "mutation { setChargerOnboarding(acceptPending: true, newKey: true) }",
            json!({}),
        )
        .await["setChargerOnboarding"]
        .as_str()
        .unwrap_or_else(|| panic!("no key"))
        .to_owned();
    let mut cp = ChargePoint::connect(&url, &id, Some(&key), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let boot = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Acme", "chargePointModel": "Wallbox"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Pending");
    let refused = cp.call("Authorize", json!({"idTag": s.tag})).await;
    assert_eq!(refused.err().map(|e| e.code), Some("SecurityError".into()));

    let pending = app
        .gql_ok(
            &s.t.access,
            "{ chargers { id chargePointId registration stationId } }",
            json!({}),
        )
        .await;
    let listed = pending["chargers"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|c| c["chargePointId"] == id.as_str())
                .cloned()
        })
        .unwrap_or_else(|| panic!("{pending}"));
    assert_eq!(
        (listed["registration"].clone(), listed["stationId"].clone()),
        (json!("pending"), Value::Null)
    );

    // Another tenant: its station is not one to adopt onto, and its charger's identity with this tenant's key is
    // neither that charger nor a new pending one.
    let other = site(&app).await;
    let onto_theirs = app
        .gql(
            Some(&s.t.access),
            "mutation($c: UUID!, $s: UUID!) { adoptCharger(id: $c, stationId: $s) { password } }",
            json!({"c": listed["id"], "s": other.station}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&onto_theirs),
        "not_found",
        "{onto_theirs}"
    );
    let theirs = ChargePoint::connect(
        &ocpp_url(app.addr, &other.identity),
        &other.identity,
        Some(&key),
        OcppVersion::V16,
    )
    .await;
    assert_eq!(theirs.err().and_then(|e| e.status), Some(401));
    let mine = app
        .gql_ok(&s.t.access, "{ chargers { chargePointId } }", json!({}))
        .await;
    assert!(!mine.to_string().contains(&other.identity), "{mine}");
    let still = charger(&app, &other.t, other.charger).await;
    assert_eq!(still["id"], other.charger.to_string(), "{still}");

    let station = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "Bay 9", "kind": "EV_CHARGER", "control": "MANUAL"}}),
        )
        .await;
    let station = uuid(&station["createStation"]["id"]);
    let adopted = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $s: UUID!) { adoptCharger(id: $c, stationId: $s) { password charger { registration stationId } } }",
            json!({"c": listed["id"], "s": station}),
        )
        .await;
    assert_eq!(
        adopted["adoptCharger"]["charger"]["registration"],
        "accepted"
    );
    let password = adopted["adoptCharger"]["password"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The charger is sent its own password, and asked to boot again.
    let change = cp.next_received("ChangeConfiguration").await;
    assert_eq!(
        change,
        json!({"key": "AuthorizationKey", "value": password})
    );
    // Sent, the password is kept nowhere but in the charger: the call shows and stores it hidden.
    let shown = app
        .gql_ok(
            &s.t.access,
            "query($c: UUID!) { charger(id: $c) { calls { action payload } } }",
            json!({"c": listed["id"]}),
        )
        .await;
    let sent: Vec<&Value> = shown["charger"]["calls"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter(|c| c["action"] == "ChangeConfiguration")
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        sent,
        vec![
            &json!({"action": "ChangeConfiguration", "payload": {"key": "AuthorizationKey", "value": "(hidden)"}})
        ]
    );
    let mut tx = app.tenant_tx(s.t.id).await;
    let stored: i64 =
        sqlx::query_scalar("select count(*) from ocpp_call where strpos(payload::text, $1) > 0")
            .bind(&password)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored, 0, "the password is not stored with its call");
    drop(tx);
    let trigger = cp.next_received("TriggerMessage").await;
    assert_eq!(trigger, json!({"requestedMessage": "BootNotification"}));
    let boot = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Acme", "chargePointModel": "Wallbox"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Accepted");
    cp.close().await;
    // From now on it connects with its own password; the onboarding key no longer opens it.
    let old = ChargePoint::connect(&url, &id, Some(&key), OcppVersion::V16).await;
    assert_eq!(old.err().and_then(|e| e.status), Some(401));
    let mut cp = ChargePoint::connect(&url, &id, Some(&password), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(cp.call("Heartbeat", json!({})).await.is_ok());
    let station_row = app
        .gql_ok(
            &s.t.access,
            "query($s: UUID!) { station(id: $s) { control controlSettings } }",
            json!({"s": station}),
        )
        .await;
    assert_eq!(station_row["station"]["control"], "OCPP");
    assert_eq!(
        station_row["station"]["controlSettings"]["charge_point_id"],
        id.as_str()
    );
}

/// A charger with an identity nobody registered joins with the onboarding `key`: connected, its boot (from
/// `vendor`, `model`) answered `Pending`. Returns it and its id as the tenant's charger list shows it.
pub(crate) async fn join_pending(
    app: &switchyard_tests::TestApp,
    t: &switchyard_tests::Tenant,
    key: &str,
    identity: &str,
    (vendor, model): (&str, &str),
) -> (ChargePoint, Uuid) {
    let url = ocpp_url(app.addr, identity);
    let mut cp = ChargePoint::connect(&url, identity, Some(key), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the onboarding key does not let {identity} in: {e:?}"));
    let boot = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": vendor, "chargePointModel": model}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Pending", "{boot}");
    let listed = app
        .gql_ok(&t.access, "{ chargers { id chargePointId } }", json!({}))
        .await;
    let id = listed["chargers"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["chargePointId"] == identity))
        .map(|c| uuid(&c["id"]))
        .unwrap_or_else(|| panic!("{identity} is not listed: {listed}"));
    (cp, id)
}

/// Whether GraphQL shows the charger waiting for a reboot to apply a change it accepted.
async fn reboot_required(
    app: &switchyard_tests::TestApp,
    t: &switchyard_tests::Tenant,
    charger: Uuid,
) -> bool {
    let c = app
        .gql_ok(
            &t.access,
            "query($c: UUID!) { charger(id: $c) { rebootRequired } }",
            json!({"c": charger}),
        )
        .await;
    c["charger"]["rebootRequired"]
        .as_bool()
        .unwrap_or_else(|| panic!("{c}"))
}

/// Whether GraphQL shows a new password on its way to the charger.
async fn password_pending(app: &switchyard_tests::TestApp, s: &super::Site) -> bool {
    let data = app
        .gql_ok(
            &s.t.access,
            "query($c: UUID!) { charger(id: $c) { passwordPending } }",
            json!({"c": s.charger}),
        )
        .await;
    data["charger"]["passwordPending"]
        .as_bool()
        .unwrap_or_else(|| panic!("{data}"))
}

/// Connects the site's charger with `password`: the HTTP status it was refused with, or the charge point.
async fn login(
    app: &switchyard_tests::TestApp,
    s: &super::Site,
    password: &str,
    version: OcppVersion,
) -> Result<ChargePoint, Option<u16>> {
    ChargePoint::connect(
        &ocpp_url(app.addr, &s.identity),
        &s.identity,
        Some(password),
        version,
    )
    .await
    .map_err(|e| e.status)
}

/// Waits until the site's charger shows online (a password set before goes to it by hand, not over the wire).
async fn until_online(app: &switchyard_tests::TestApp, s: &super::Site) {
    until_charger(app, &s.t, s.charger, "the charger to be online", |c| {
        c["online"] == true
    })
    .await;
}

/// Sets a new password for the site's charger (revoking the old one at once, or not) and returns it.
async fn new_password(
    app: &switchyard_tests::TestApp,
    s: &super::Site,
    revoke_old: bool,
) -> String {
    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $r: Boolean!) { setChargerPassword(id: $c, revokeOld: $r) { password } }",
            json!({"c": s.charger, "r": revoke_old}),
        )
        .await;
    data["setChargerPassword"]["password"]
        .as_str()
        .unwrap_or_else(|| panic!("{data}"))
        .to_owned()
}

/// The charger's password calls as stored: (status, payload), oldest first.
async fn password_calls(app: &switchyard_tests::TestApp, s: &super::Site) -> Vec<(String, Value)> {
    let mut tx = app.tenant_tx(s.t.id).await;
    sqlx::query_as(
        "select status, payload from ocpp_call where charger_id = $1 and password_hash is not null
         order by created_at, id",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_charger_keeps_its_previous_password_until_it_is_known_to_use_the_new_one() {
    let app = spawn_app().await;
    let mut s = site(&app).await;
    let first = s.password.clone();
    // Offline, a new password is given by hand: the old one stops working at once.
    s.password = new_password(&app, &s, false).await;
    assert!(!password_pending(&app, &s).await);
    assert_eq!(
        login(&app, &s, &first, OcppVersion::V16).await.err(),
        Some(Some(401))
    );

    // Two new passwords while an unanswered Reset holds the line: the second replaces the first, unsent. The
    // charger drops before either goes out; the waiting one ends with the connection, kept by no one, and the
    // charger comes back with its old password, which still lets it in, and is sent a fresh one.
    let p0 = s.password.clone();
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.reply_silent("Reset").await;
    app.gql_ok(
        &s.t.access,
        "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: SOFT_RESET}) { id } }",
        json!({"c": s.charger}),
    )
    .await;
    let _ = cp.next_received("Reset").await;
    let replaced = new_password(&app, &s, false).await;
    let p1 = new_password(&app, &s, false).await;
    assert!(password_pending(&app, &s).await);
    let calls = password_calls(&app, &s).await;
    assert_eq!(
        calls,
        vec![
            (
                "expired".to_owned(),
                json!({"key": "AuthorizationKey", "value": "(hidden)"})
            ),
            (
                "pending".to_owned(),
                json!({"key": "AuthorizationKey", "value": p1})
            ),
        ]
    );
    gone(&app, &s, cp).await;
    until_charger(&app, &s.t, s.charger, "the charger to go offline", |c| {
        c["online"] == false
    })
    .await;
    let calls = password_calls(&app, &s).await;
    assert_eq!(
        calls[1],
        (
            "expired".to_owned(),
            json!({"key": "AuthorizationKey", "value": "(hidden)"})
        )
    );
    // The replaced password was never sent: nothing can log in with it. (The current one, p1, would let in a
    // charger it was configured on by hand.)
    assert_eq!(
        login(&app, &s, &replaced, OcppVersion::V16).await.err(),
        Some(Some(401))
    );
    let mut cp = login(&app, &s, &p0, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the previous password is refused: {e:?}"));
    let sent = cp.next_received("ChangeConfiguration").await;
    let p2 = sent["value"].as_str().unwrap_or_default().to_owned();
    assert_eq!(p2.len(), 32, "{sent}");
    assert_ne!(p2, p1);
    // Accepted (the peer's default answer): the previous password stops working.
    until_settled(&app, &s).await;
    gone(&app, &s, cp).await;
    assert_eq!(
        login(&app, &s, &p0, OcppVersion::V16).await.err(),
        Some(Some(401))
    );
    let mut tx = app.tenant_tx(s.t.id).await;
    let (reissued, venue): (i64, Option<Uuid>) = sqlx::query_as(
        "select count(*), max(venue_id::text)::uuid from audit_log
          where action = 'charger.password_reissued' and object_id = $1",
    )
    .bind(s.charger)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((reissued, venue), (1, Some(s.venue)));
    drop(tx);

    // A new password sent and applied, its answer lost, and another sent behind it: the charger drops and comes back
    // with the first, which lets it in (it may be using either), and is sent a fresh one.
    let mut cp = login(&app, &s, &p2, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the accepted password is refused: {e:?}"));
    until_online(&app, &s).await;
    cp.reply_silent("ChangeConfiguration").await;
    let p3 = new_password(&app, &s, false).await;
    let sent = cp.next_received("ChangeConfiguration").await;
    assert_eq!(sent, json!({"key": "AuthorizationKey", "value": p3}));
    let p4 = new_password(&app, &s, false).await;
    gone(&app, &s, cp).await;
    // Gone (p4, still waiting behind p3, ends with the connection) before it comes back.
    until_charger(&app, &s.t, s.charger, "the charger to go offline", |c| {
        c["online"] == false
    })
    .await;
    let mut cp = login(&app, &s, &p3, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("a password sent and unconfirmed is refused: {e:?}"));
    let sent = cp.next_received("ChangeConfiguration").await;
    let p5 = sent["value"].as_str().unwrap_or_default().to_owned();
    assert_eq!(p5.len(), 32, "{sent}");
    assert_ne!(p5, p4);
    until_settled(&app, &s).await;
    gone(&app, &s, cp).await;
    for refused in [&p2, &p3, &p4] {
        assert_eq!(
            login(&app, &s, refused, OcppVersion::V16).await.err(),
            Some(Some(401))
        );
    }
    // Every password call is kept without its password.
    for (_, payload) in password_calls(&app, &s).await {
        assert_eq!(payload["value"], "(hidden)");
    }

    // A charger that refuses its new password keeps the one it has, and nothing is sent again at its next login:
    // both stay valid until it uses the new one.
    let mut cp = login(&app, &s, &p5, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the reissued password is refused: {e:?}"));
    until_online(&app, &s).await;
    cp.reply("ChangeConfiguration", json!({"status": "Rejected"}))
        .await;
    let p6 = new_password(&app, &s, false).await;
    let _ = cp.next_received("ChangeConfiguration").await;
    super::until_call(&app, &s.t, s.charger, "ChangeConfiguration", |c| {
        c["status"] == "answered"
    })
    .await;
    assert!(password_pending(&app, &s).await);
    gone(&app, &s, cp).await;
    let before = password_calls(&app, &s).await.len();
    let cp = login(&app, &s, &p5, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the kept password is refused: {e:?}"));
    // Live (and what the login meant settled, in the same transaction): nothing more was sent.
    until_online(&app, &s).await;
    assert_eq!(password_calls(&app, &s).await.len(), before);
    gone(&app, &s, cp).await;
    let cp = login(&app, &s, &p6, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the password set by hand is refused: {e:?}"));
    until_online(&app, &s).await;
    assert!(!password_pending(&app, &s).await);
    gone(&app, &s, cp).await;
    assert_eq!(
        login(&app, &s, &p5, OcppVersion::V16).await.err(),
        Some(Some(401))
    );

    // A new password sent and not answered, another waiting behind it, and the charger drops: it comes back with
    // the one it had before both, and the first stays valid beside it (the charger may yet apply it) while a fresh
    // one goes out — here unanswered too. Then it comes back with that first one, which still lets it in.
    let mut cp = login(&app, &s, &p6, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    until_online(&app, &s).await;
    cp.reply_silent("ChangeConfiguration").await;
    let maybe = new_password(&app, &s, false).await;
    let sent = cp.next_received("ChangeConfiguration").await;
    assert_eq!(sent, json!({"key": "AuthorizationKey", "value": maybe}));
    let waiting = new_password(&app, &s, false).await;
    gone(&app, &s, cp).await;
    let mut cp = ChargePoint::connect_silent_to(
        &ocpp_url(app.addr, &s.identity),
        &s.identity,
        Some(&p6),
        OcppVersion::V16,
        &["ChangeConfiguration"],
    )
    .await
    .unwrap_or_else(|e| panic!("the known password is refused: {e:?}"));
    let sent = cp.next_received("ChangeConfiguration").await;
    assert_ne!(sent["value"], json!(waiting), "{sent}");
    gone(&app, &s, cp).await;
    let mut cp = login(&app, &s, &maybe, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("a password sent and maybe applied is refused: {e:?}"));
    // The fresh one it never answered is sent again, freshly, and accepted this time.
    let sent = cp.next_received("ChangeConfiguration").await;
    let p6b = sent["value"].as_str().unwrap_or_default().to_owned();
    assert_eq!(p6b.len(), 32, "{sent}");
    until_settled(&app, &s).await;
    gone(&app, &s, cp).await;
    for refused in [&p6, &waiting, &maybe] {
        assert_eq!(
            login(&app, &s, refused, OcppVersion::V16).await.err(),
            Some(Some(401))
        );
    }

    // A password that leaked is changed with revokeOld: the old one stops working at once, and the connection it
    // opened (maybe an impostor's) is closed, not sent the new password.
    let mut cp = login(&app, &s, &p6b, OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    until_online(&app, &s).await;
    let before = password_calls(&app, &s).await.len();
    let p7 = new_password(&app, &s, true).await;
    // Closed by the central system (the connection is no longer the charger's).
    let (code, _) = cp.closed().await;
    assert_eq!(code, 1000);
    let c = until_charger(&app, &s.t, s.charger, "the charger to go offline", |c| {
        c["online"] == false
    })
    .await;
    assert_eq!(c["online"], false);
    assert!(!password_pending(&app, &s).await);
    assert_eq!(password_calls(&app, &s).await.len(), before);
    assert_eq!(
        login(&app, &s, &p6b, OcppVersion::V16).await.err(),
        Some(Some(401))
    );

    // 2.0.1: the password goes in SetVariables; once accepted, only the new one lets the charger in.
    s.password = p7.clone();
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    let p8 = new_password(&app, &s, false).await;
    let sent = cp.next_received("SetVariables").await;
    assert_eq!(sent["setVariableData"][0]["attributeValue"], p8, "{sent}");
    until_settled(&app, &s).await;
    gone(&app, &s, cp).await;
    assert_eq!(
        login(&app, &s, &p7, OcppVersion::V201).await.err(),
        Some(Some(401))
    );
    let cp = login(&app, &s, &p8, OcppVersion::V201)
        .await
        .unwrap_or_else(|e| panic!("the new password is refused: {e:?}"));
    gone(&app, &s, cp).await;
}

/// Closes the site's charger's connection once the central system has it online, and waits (bounded) until it has
/// seen it go.
async fn gone(app: &switchyard_tests::TestApp, s: &super::Site, cp: ChargePoint) {
    until_online(app, s).await;
    cp.close().await;
    until_charger(app, &s.t, s.charger, "the charger to go offline", |c| {
        c["online"] == false
    })
    .await;
}

/// Waits (bounded) until no new password is on its way to the site's charger.
async fn until_settled(app: &switchyard_tests::TestApp, s: &super::Site) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while password_pending(app, s).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accepted password still shows as pending"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_adopted_charger_is_no_longer_let_in_with_the_onboarding_key_even_before_its_password_reaches_it(
) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let key = app
        .gql_ok(
            &s.t.access,
            "mutation { setChargerOnboarding(acceptPending: true, newKey: true) }",
            json!({}),
        )
        .await["setChargerOnboarding"]
        .as_str()
        .unwrap_or_else(|| panic!("no key"))
        .to_owned();
    let id = format!("NEW-{}", &Uuid::new_v4().simple().to_string()[..10]);
    let url = ocpp_url(app.addr, &id);
    let mut cp = ChargePoint::connect(&url, &id, Some(&key), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let boot = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Acme", "chargePointModel": "Wallbox"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Pending");
    let pending = app
        .gql_ok(&s.t.access, "{ chargers { id chargePointId } }", json!({}))
        .await;
    let charger = pending["chargers"]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["chargePointId"] == id.as_str()))
        .map(|c| c["id"].clone())
        .unwrap_or_else(|| panic!("{pending}"));
    let station = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "Bay 7", "kind": "EV_CHARGER", "control": "MANUAL"}}),
        )
        .await;
    // Its password is sent, and the charger drops before answering.
    cp.reply_silent("ChangeConfiguration").await;
    app.gql_ok(
        &s.t.access,
        "mutation($c: UUID!, $s: UUID!) { adoptCharger(id: $c, stationId: $s) { password } }",
        json!({"c": charger, "s": station["createStation"]["id"]}),
    )
    .await;
    let _ = cp.next_received("ChangeConfiguration").await;
    cp.close().await;
    let charger = super::uuid(&charger);
    until_charger(&app, &s.t, charger, "the charger to go offline", |c| {
        c["online"] == false
    })
    .await;
    // The key is the tenant's: it no longer opens this charger, whose own password is kept alone.
    let mut tx = app.tenant_tx(s.t.id).await;
    let kept: Vec<Vec<u8>> =
        sqlx::query_scalar("select previous_password_hashes from charger where id = $1")
            .bind(charger)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kept, Vec::<Vec<u8>>::new());
    drop(tx);
    let refused = ChargePoint::connect(&url, &id, Some(&key), OcppVersion::V16).await;
    assert_eq!(refused.err().and_then(|e| e.status), Some(401));
}

#[tokio::test]
async fn a_pending_charger_nobody_wants_is_refused_and_cannot_join_again_until_adopted() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let settings = "{ tenant { acceptPendingChargers hasChargerOnboardingKey } }";
    assert_eq!(
        app.gql_ok(&s.t.access, settings, json!({})).await,
        json!({"tenant": {"acceptPendingChargers": false, "hasChargerOnboardingKey": false}})
    );
    let key = app
        .gql_ok(
            &s.t.access,
            "mutation { setChargerOnboarding(acceptPending: true, newKey: true) }",
            json!({}),
        )
        .await["setChargerOnboarding"]
        .as_str()
        .unwrap_or_else(|| panic!("no key"))
        .to_owned();
    assert_eq!(
        app.gql_ok(&s.t.access, settings, json!({})).await,
        json!({"tenant": {"acceptPendingChargers": true, "hasChargerOnboardingKey": true}})
    );
    let id = format!("NEW-{}", &Uuid::new_v4().simple().to_string()[..10]);
    let url = ocpp_url(app.addr, &id);
    let (mut cp, charger) = join_pending(&app, &s.t, &key, &id, ("Stranger", "X")).await;
    until_charger(&app, &s.t, charger, "the pending charger online", |c| {
        c["online"] == true
    })
    .await;
    // A manager of another venue sees it too (it has no venue yet), but not the venue's own charger.
    let hall = app.create_venue(&s.t.access, "Hall").await;
    let (scoped, elsewhere) = app.add_member(&s.t, "MANAGER").await;
    app.gql_ok(
        &s.t.access,
        "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
        json!({"u": scoped, "v": [hall]}),
    )
    .await;
    assert_eq!(
        app.gql_ok(&elsewhere, "{ chargers { id } }", json!({}))
            .await,
        json!({"chargers": [{"id": charger}]})
    );
    // That manager hears the chargers with no venue joining, refused and forgotten, not those adopted elsewhere;
    // staff of the tenant's first venue hear none of it.
    let (_, staff) = app.add_member(&s.t, "STAFF").await;
    let listen = |token: String| {
        let app = &app;
        async move {
            app.subscribe(
                &token,
                "subscription($a: Int) { liveEvents(after: $a) { kind venueId stationId subjectId data } }",
                json!({"a": crate::live::from_now(app, s.t.id).await}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let mut heard = listen(elsewhere.clone()).await;
    let mut staff_heard = listen(staff).await;

    let reject = "mutation($c: UUID!) { rejectCharger(id: $c) { id registration online hasPassword stationId } }";
    // Another tenant cannot refuse it (nor can this one refuse the other's), and an accepted charger is not one to
    // refuse.
    let other = site(&app).await;
    for (token, c) in [(&other.t.access, charger), (&s.t.access, other.charger)] {
        let body = app.gql(Some(token), reject, json!({"c": c})).await;
        assert_eq!(switchyard_tests::gql_code(&body), "not_found", "{body}");
    }
    let body = app
        .gql(Some(&s.t.access), reject, json!({"c": s.charger}))
        .await;
    assert_eq!(switchyard_tests::gql_code(&body), "conflict", "{body}");

    // An operator's command is in flight (the charger does not answer) and a second waits behind it.
    cp.reply_silent("Reset").await;
    for _ in 0..2 {
        app.gql_ok(
            &s.t.access,
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: SOFT_RESET}) { id } }",
            json!({"c": charger}),
        )
        .await;
    }
    cp.next_received("Reset").await;

    let refused = app.gql_ok(&s.t.access, reject, json!({"c": charger})).await;
    assert_eq!(
        refused["rejectCharger"],
        json!({"id": charger, "registration": "rejected", "online": false, "hasPassword": false, "stationId": null})
    );
    // Its connection is closed, and the key opens neither it nor a new pending charger under its identity.
    let (code, _) = cp.closed().await;
    assert_eq!(code, 1000);
    let again = ChargePoint::connect(&url, &id, Some(&key), OcppVersion::V16).await;
    assert_eq!(again.err().and_then(|e| e.status), Some(401));
    let mut tx = app.tenant_tx(s.t.id).await;
    let (chargers, audited): (i64, i64) = sqlx::query_as(
        "select (select count(*) from charger where charge_point_id = $1),
                (select count(*) from audit_log where action = 'charger.reject' and object_id = $2)",
    )
    .bind(&id)
    .bind(charger)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((chargers, audited), (1, 1));
    drop(tx);
    let events = crate::live::until(&mut heard, "liveEvents", "charger.rejected").await;
    assert_eq!(
        events.last().cloned().unwrap_or_default(),
        json!({"kind": "charger.rejected", "venueId": null, "stationId": null, "subjectId": charger,
               "data": {"chargerId": charger, "chargePointId": id}})
    );
    // The command in flight failed with the connection; the one waiting is never sent, should it be adopted.
    let calls = app
        .gql_ok(
            &s.t.access,
            "query($c: UUID!) { charger(id: $c) { calls { action status error } } }",
            json!({"c": charger}),
        )
        .await;
    let resets: Vec<(Value, Value)> = calls["charger"]["calls"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|c| c["action"] == "Reset")
                .map(|c| (c["status"].clone(), c["error"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(resets.len(), 2, "{calls}");
    assert_eq!(
        resets[0],
        (json!("expired"), json!("the charger was refused")),
        "newest first: {calls}"
    );
    assert_eq!(resets[1].0, "error", "{calls}");
    // A refused charger gets no password but by adoption.
    let body = app
        .gql(
            Some(&s.t.access),
            "mutation($c: UUID!) { setChargerPassword(id: $c) { password } }",
            json!({"c": charger}),
        )
        .await;
    assert_eq!(switchyard_tests::gql_code(&body), "conflict", "{body}");
    let body = app
        .gql(
            Some(&s.t.access),
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: SOFT_RESET}) { id } }",
            json!({"c": charger}),
        )
        .await;
    assert_eq!(switchyard_tests::gql_code(&body), "conflict", "{body}");
    let twice = app
        .gql(Some(&s.t.access), reject, json!({"c": charger}))
        .await;
    assert_eq!(switchyard_tests::gql_code(&twice), "conflict", "{twice}");

    // Adopted later after all (not onto an archived station), it gets a password to set on it by hand, and boots
    // accepted with it.
    let create = "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }";
    let archived = app
        .gql_ok(
            &s.t.access,
            create,
            json!({"i": {"venueId": s.venue, "name": "Bay 0", "kind": "EV_CHARGER", "control": "MANUAL"}}),
        )
        .await["createStation"]["id"]
        .clone();
    app.gql_ok(
        &s.t.access,
        "mutation($s: UUID!) { archiveStation(id: $s) { id } }",
        json!({"s": archived}),
    )
    .await;
    let adopt =
        "mutation($c: UUID!, $s: UUID!) { adoptCharger(id: $c, stationId: $s) { password } }";
    let body = app
        .gql(
            Some(&s.t.access),
            adopt,
            json!({"c": charger, "s": archived}),
        )
        .await;
    assert_eq!(switchyard_tests::gql_code(&body), "conflict", "{body}");
    let station = app
        .gql_ok(
            &s.t.access,
            create,
            json!({"i": {"venueId": s.venue, "name": "Bay 8", "kind": "EV_CHARGER", "control": "MANUAL"}}),
        )
        .await;
    let adopted = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $s: UUID!) { adoptCharger(id: $c, stationId: $s) { password charger { registration passwordPending } } }",
            json!({"c": charger, "s": station["createStation"]["id"]}),
        )
        .await;
    assert_eq!(
        adopted["adoptCharger"]["charger"],
        json!({"registration": "accepted", "passwordPending": false})
    );
    let password = adopted["adoptCharger"]["password"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut cp = ChargePoint::connect(&url, &id, Some(&password), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let boot = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Stranger", "chargePointModel": "X"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Accepted");
    cp.close().await;

    // Another is refused and then forgotten: it and its calls are gone, and its identity joins anew as pending.
    let odd = format!("ODD-{}", &Uuid::new_v4().simple().to_string()[..10]);
    let (mut cp, first) = join_pending(&app, &s.t, &key, &odd, ("Stranger", "Y")).await;
    // Waiting, it boots again as told; saying nothing new, that is no news to the consoles (heard below).
    let again = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Stranger", "chargePointModel": "Y"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again["status"], "Pending", "{again}");
    let forget = "mutation($c: UUID!) { forgetCharger(id: $c) }";
    // Only a refused charger is forgotten; another tenant's is not found.
    for (token, c, code) in [
        (&s.t.access, first, "conflict"),
        (&s.t.access, charger, "conflict"),
        (&other.t.access, first, "not_found"),
    ] {
        let body = app.gql(Some(token), forget, json!({"c": c})).await;
        assert_eq!(switchyard_tests::gql_code(&body), code, "{body}");
    }
    // A call made to it, answered, is kept until it is forgotten.
    let answered = command(&app, &s.t.access, first, json!({"kind": "SOFT_RESET"})).await;
    assert_eq!(answered["status"], "answered", "{answered}");
    app.gql_ok(&s.t.access, reject, json!({"c": first})).await;
    assert_eq!(cp.closed().await.0, 1000);
    let forgotten = app.gql_ok(&s.t.access, forget, json!({"c": first})).await;
    assert_eq!(forgotten["forgetCharger"], odd.as_str());
    let listed = app
        .gql_ok(&s.t.access, "{ chargers { chargePointId } }", json!({}))
        .await;
    assert!(!listed.to_string().contains(&odd), "{listed}");
    let mut tx = app.tenant_tx(s.t.id).await;
    let (rows, calls, audited): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from charger where id = $1),
                (select count(*) from ocpp_call where charger_id = $1),
                (select count(*) from audit_log where action = 'charger.forget' and object_id = $1)",
    )
    .bind(first)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((rows, calls, audited), (0, 0, 1));
    drop(tx);
    let events = crate::live::until(&mut heard, "liveEvents", "charger.forgotten").await;
    let of = |c: Uuid| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["subjectId"] == json!(c) && e["kind"] != "charger.call")
            .map(|e| &e["kind"])
            .collect()
    };
    assert_eq!(
        of(first),
        [
            "charger.pending",
            "charger.online",
            "charger.boot",
            "charger.offline",
            "charger.rejected",
            "charger.forgotten"
        ],
        "{events:?}"
    );
    // Of the one adopted onto this venue's station, the other venue's manager hears the adoption (it leaves the
    // chargers waiting) and nothing after it.
    assert_eq!(of(charger), ["charger.adopted"], "{events:?}");
    // Staff, who manage no chargers, heard none of it (up to a patron flagged after it), only what the adopted
    // charger did on its station at their venue.
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!) { flagPatron(patronId: $p, reason: \"left without paying\") { reason } }",
        json!({"p": s.patron}),
    )
    .await;
    let told = crate::live::until(&mut staff_heard, "liveEvents", "patron.flagged").await;
    let chargers: Vec<(&Value, &Value, &Value)> = told
        .iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("charger."))
        })
        .map(|e| (&e["kind"], &e["subjectId"], &e["venueId"]))
        .collect();
    assert!(
        chargers
            .iter()
            .all(|(_, subject, venue)| **subject == json!(charger) && **venue == json!(s.venue))
            && chargers.iter().any(|(kind, _, _)| **kind == "charger.boot"),
        "{told:?}"
    );
    // The forgotten identity joins again, as a new charger.
    let (cp, again) = join_pending(&app, &s.t, &key, &odd, ("Stranger", "Y")).await;
    assert_ne!(again, first);
    cp.close().await;
}

#[tokio::test]
async fn a_remote_start_that_waits_past_its_time_to_live_expires_and_fails_its_session() {
    let app = switchyard_tests::spawn_app_with(&[("OCPP_CALL_TTL_SECS", "1")]).await;
    let s = site(&app).await;
    // The charger is not connected: the remote start waits in the outbox.
    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": s.station, "p": s.patron}),
        )
        .await;
    let session = uuid(&data["startSession"]["id"]);
    // Until the database's clock has the call older than its time to live.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let old: bool = sqlx::query_scalar(
            "select bool_and(now() - created_at > interval '1 second') from ocpp_call where charger_id = $1",
        )
        .bind(s.charger)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        if old {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never aged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    // The stale remote start is not sent; the session that waited for it fails at no cost.
    let calls = super::until_call(&app, &s.t, s.charger, "RemoteStartTransaction", |c| {
        c["status"] == "expired"
    })
    .await;
    assert_eq!(calls["error"], "the charger was not connected in time");
    let failed = super::session(&app, &s.t, session).await;
    assert_eq!(
        (failed["status"].clone(), failed["chargedAmount"].clone()),
        (json!("FAILED"), json!(0))
    );
    assert_eq!(super::wallet(&app, &s.t, s.patron).await, (1000, 0));
    // What it is sent instead is the local list.
    assert_eq!(
        cp.next_received("SendLocalList").await["updateType"],
        "Full"
    );
}

/// The calls that set a charger's meter readings up, as written to its outbox: (action, payload, status, answer).
async fn meter_setup_calls(
    app: &switchyard_tests::TestApp,
    tenant: Uuid,
    charger: Uuid,
) -> Vec<(String, Value, String, Option<Value>)> {
    let mut tx = app.tenant_tx(tenant).await;
    sqlx::query_as(
        "select action, payload, status, response from ocpp_call
         where charger_id = $1 and action in ('ChangeConfiguration', 'SetVariables') order by created_at",
    )
    .bind(charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (bounded) until the charger has answered its meter set-up calls.
async fn meter_setup_answered(
    app: &switchyard_tests::TestApp,
    tenant: Uuid,
    charger: Uuid,
) -> Vec<(String, Value, String, Option<Value>)> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let calls = meter_setup_calls(app, tenant, charger).await;
        if !calls.is_empty() && calls.iter().all(|c| c.2 == "answered") {
            return calls;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the meter set-up to be answered: {calls:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// With the tenant's `chargerMeterSetup` on, each accepted boot sets the charger to send the readings billing
/// needs (a 2.0.1 charger may send no start reading unless told); off, the default, a boot asks nothing of the
/// kind. Only an owner changes it (audited), and it is the tenant's own. A call still out is not written again on
/// the next boot; a refusal is audited, and a 1.6 charger that refuses energy and power together is asked for
/// energy alone.
#[tokio::test]
async fn an_owner_has_chargers_set_up_at_boot_to_send_the_readings_billing_needs() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let setting = "{ me { tenant { chargerMeterSetup } } }";
    assert_eq!(
        app.gql_ok(&s.t.access, setting, json!({})).await["me"]["tenant"]["chargerMeterSetup"],
        false
    );
    // Off: the boot (its calls are written with it, before it is answered) asks for no meter set-up.
    let cp = boot(&app, &s, OcppVersion::V16).await;
    assert_eq!(meter_setup_calls(&app, s.t.id, s.charger).await, vec![]);
    cp.close().await;

    let (_, manager) = app.add_member(&s.t, "MANAGER").await;
    let turn_on = "mutation { setChargerMeterSetup(enabled: true) { chargerMeterSetup } }";
    let refused = app.gql(Some(&manager), turn_on, json!({})).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "forbidden",
        "{refused}"
    );
    let on = app.gql_ok(&s.t.access, turn_on, json!({})).await;
    assert_eq!(on["setChargerMeterSetup"]["chargerMeterSetup"], true);

    // On, 1.6: energy and power in every MeterValues (start and stop readings are in their own messages).
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let asked = cp.next_received("ChangeConfiguration").await;
    let wanted = json!({"key": "MeterValuesSampledData", "value": "Energy.Active.Import.Register,Power.Active.Import"});
    assert_eq!(asked, wanted);
    let calls = meter_setup_answered(&app, s.t.id, s.charger).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, wanted);
    assert_eq!(calls[0].3, Some(json!({"status": "Accepted"})));
    let mut tx = app.tenant_tx(s.t.id).await;
    let audited: Vec<Value> = sqlx::query_scalar(
        "select detail from audit_log where action = 'tenant.set_charger_meter_setup' and object_id = $1",
    )
    .bind(s.t.id)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(audited, vec![json!({"charger_meter_setup": true})]);

    // Booted again while the call is out: it is not written twice. The charger then refuses energy and power
    // together (its list takes one measurand): refused calls are audited, and it is asked for energy alone.
    let boot_again = json!({"chargePointVendor": "Acme", "chargePointModel": "AC22"});
    cp.reply_silent("ChangeConfiguration").await;
    cp.call("BootNotification", boot_again.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let out = cp.next_received_full("ChangeConfiguration").await;
    assert_eq!(out.payload, wanted);
    cp.call("BootNotification", boot_again)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(meter_setup_calls(&app, s.t.id, s.charger).await.len(), 2);
    cp.reply_default("ChangeConfiguration").await;
    cp.send_raw(&format!(
        r#"[3,"{}",{{"status":"Rejected"}}]"#,
        out.unique_id
    ))
    .await;
    let energy_alone =
        json!({"key": "MeterValuesSampledData", "value": "Energy.Active.Import.Register"});
    assert_eq!(cp.next_received("ChangeConfiguration").await, energy_alone);
    let calls = meter_setup_answered(&app, s.t.id, s.charger).await;
    let answers: Vec<(Value, Option<Value>)> = calls.into_iter().map(|c| (c.1, c.3)).collect();
    assert_eq!(
        answers,
        vec![
            (wanted.clone(), Some(json!({"status": "Accepted"}))),
            (wanted.clone(), Some(json!({"status": "Rejected"}))),
            (energy_alone, Some(json!({"status": "Accepted"}))),
        ]
    );
    let refused: Vec<(Value, Option<Uuid>)> = sqlx::query_as(
        "select detail->'setting', venue_id from audit_log where action = 'charging.configuration_refused'
         and object_id = $1",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        refused,
        vec![(json!("MeterValuesSampledData"), Some(s.venue))],
        "the venue's managers see it"
    );
    drop(tx);
    cp.close().await;

    // Another tenant's setting is its own (off), and its boot asks nothing.
    let other = site(&app).await;
    assert_eq!(
        app.gql_ok(&other.t.access, setting, json!({})).await["me"]["tenant"]["chargerMeterSetup"],
        false
    );
    let other_cp = boot(&app, &other, OcppVersion::V201).await;
    assert_eq!(
        meter_setup_calls(&app, other.t.id, other.charger).await,
        vec![]
    );
    other_cp.close().await;

    // On, 2.0.1: the start reading, energy and power in updates, the energy at the end. This charger takes each
    // after a reboot, which is audited as such.
    app.gql_ok(&other.t.access, turn_on, json!({})).await;
    let mut cp = ChargePoint::connect(
        &ocpp_url(app.addr, &other.identity),
        &other.identity,
        Some(&other.password),
        OcppVersion::V201,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let after_reboot = json!({"setVariableResult": [{
        "attributeStatus": "RebootRequired",
        "component": {"name": "SampledDataCtrlr"},
        "variable": {"name": "TxStartedMeasurands"},
    }]});
    cp.reply("SetVariables", after_reboot.clone()).await;
    let booted = cp
        .call(
            "BootNotification",
            json!({"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "DC50"}}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booted["status"], "Accepted");
    let mut variables = Vec::new();
    for _ in 0..3 {
        let asked = cp.next_received("SetVariables").await;
        let data = asked["setVariableData"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{asked}"));
        assert_eq!(data.len(), 1, "one variable a call: {asked}");
        let v = &data[0];
        variables.push((
            v["component"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            v["variable"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            v["attributeValue"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let energy = "Energy.Active.Import.Register".to_owned();
    let sampled = |variable: &str, value: &str| {
        (
            "SampledDataCtrlr".to_owned(),
            variable.to_owned(),
            value.to_owned(),
        )
    };
    assert_eq!(
        variables,
        vec![
            sampled("TxStartedMeasurands", &energy),
            sampled(
                "TxUpdatedMeasurands",
                "Energy.Active.Import.Register,Power.Active.Import"
            ),
            sampled("TxEndedMeasurands", &energy),
        ]
    );
    let calls = meter_setup_answered(&app, other.t.id, other.charger).await;
    let answers: Vec<Option<Value>> = calls.iter().map(|c| c.3.clone()).collect();
    assert_eq!(answers, vec![Some(after_reboot); 3]);
    let mut tx = app.tenant_tx(other.t.id).await;
    let audited: Vec<(String, Value)> = sqlx::query_as(
        "select action, detail->'setting' from audit_log where object_id = $1
         and action like 'charging.configuration%' order by created_at",
    )
    .bind(other.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let needs_reboot = |variable: &str| {
        (
            "charging.configuration_needs_reboot".to_owned(),
            json!(format!("SampledDataCtrlr.{variable}")),
        )
    };
    assert_eq!(
        audited,
        vec![
            needs_reboot("TxStartedMeasurands"),
            needs_reboot("TxUpdatedMeasurands"),
            needs_reboot("TxEndedMeasurands"),
        ]
    );
    drop(tx);
    // The charger shows that its settings wait for a reboot. A boot it says the central system triggered is none,
    // even on a new connection and with the set-up now accepted at once; another boot on a new connection is, after
    // which nothing waits.
    let reboot_required = || reboot_required(&app, &other.t, other.charger);
    // Waits (bounded) until the set-up's calls of `boots` boots are all answered.
    let (app, other) = (&app, &other);
    let answered = |boots: usize| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let calls = meter_setup_answered(app, other.t.id, other.charger).await;
            if calls.len() == 3 * boots {
                return calls;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the set-up of boot {boots} was not answered: {calls:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let accepted = json!({"setVariableResult": [{
        "attributeStatus": "Accepted",
        "component": {"name": "SampledDataCtrlr"},
        "variable": {"name": "TxStartedMeasurands"},
    }]});
    let boot_again = |reason: &'static str| json!({"reason": reason, "chargingStation": {"vendorName": "Acme", "model": "DC50"}});
    assert!(reboot_required().await);
    cp.close().await;
    let mut cp = ChargePoint::connect(
        &ocpp_url(app.addr, &other.identity),
        &other.identity,
        Some(&other.password),
        OcppVersion::V201,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    cp.reply("SetVariables", accepted.clone()).await;
    let booted = cp
        .call("BootNotification", boot_again("Triggered"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booted["status"], "Accepted");
    let calls = answered(2).await;
    assert_eq!(calls[5].3, Some(accepted.clone()), "{calls:?}");
    assert!(reboot_required().await);
    let booted = cp
        .call("BootNotification", boot_again("RemoteReset"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booted["status"], "Accepted");
    answered(3).await;
    assert!(!reboot_required().await);
    cp.close().await;
}

/// A 1.6 charger does not say why it booted: a boot on the connection that answered `RebootRequired` is no reboot,
/// one on a new connection is. Until then the charger shows `rebootRequired`.
#[tokio::test]
async fn a_change_a_charger_takes_for_after_a_reboot_shows_until_it_boots_on_a_new_connection() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let reboot_required = || reboot_required(&app, &s.t, s.charger);
    assert!(!reboot_required().await);
    cp.reply("ChangeConfiguration", json!({"status": "RebootRequired"}))
        .await;
    let changed = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "CHANGE_CONFIGURATION", "key": "HeartbeatInterval", "value": "120"}),
    )
    .await;
    assert_eq!(
        changed["response"],
        json!({"status": "RebootRequired"}),
        "{changed}"
    );
    assert!(reboot_required().await);
    let boot_again = json!({"chargePointVendor": "Acme", "chargePointModel": "AC22"});
    let booted = cp
        .call("BootNotification", boot_again.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booted["status"], "Accepted");
    assert!(reboot_required().await, "a boot on the same connection");
    cp.close().await;
    let mut cp = ChargePoint::connect(
        &ocpp_url(app.addr, &s.identity),
        &s.identity,
        Some(&s.password),
        OcppVersion::V16,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let booted = cp
        .call("BootNotification", boot_again)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booted["status"], "Accepted");
    assert!(!reboot_required().await, "a boot on a new connection");
    cp.close().await;
}

/// With the meter set-up on, a charger that samples nothing during a transaction (an interval of 0: no readings
/// between start and stop, so no live energy or cost) is set at its boot to sample every minute; an interval it
/// already has is left alone. What a read reports is merged into the charger's configuration, and a value the
/// charger accepts replaces the one it reported.
#[tokio::test]
async fn the_meter_set_up_gives_a_charger_that_samples_nothing_an_interval_and_leaves_others_alone()
{
    let app = spawn_app().await;
    let s = site(&app).await;
    let turn_on = "mutation { setChargerMeterSetup(enabled: true) { chargerMeterSetup } }";
    app.gql_ok(&s.t.access, turn_on, json!({})).await;
    let key = |k: &str, v: &str| json!({"key": k, "readonly": false, "value": v});
    let interval = |v: &str| key("MeterValueSampleInterval", v);

    // 1.6: the set-up reads the interval; the charger's 60 is left alone.
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let read = until_call(&app, &s.t, s.charger, "GetConfiguration", |c| {
        c["status"] == "answered"
    })
    .await;
    assert_eq!(
        read["payload"],
        json!({"key": ["MeterValueSampleInterval"]})
    );
    assert_eq!(
        read["response"],
        json!({"configurationKey": [interval("60")]})
    );
    assert_eq!(
        charger(&app, &s.t, s.charger).await["configuration"],
        json!({"configurationKey": [interval("60")]})
    );
    // An operator reads every key, then sets the interval to 0: the configuration follows.
    let all = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "GET_CONFIGURATION"}),
    )
    .await;
    let every_key = json!({"configurationKey": [
        key("HeartbeatInterval", "60"), interval("60"),
        {"key": "NumberOfConnectors", "readonly": true, "value": "2"},
        key("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import"),
    ]});
    assert_eq!(
        all["response"], every_key,
        "with the readings the set-up chose"
    );
    let zero =
        json!({"kind": "CHANGE_CONFIGURATION", "key": "MeterValueSampleInterval", "value": "0"});
    let changed = command(&app, &s.t.access, s.charger, zero).await;
    assert_eq!(
        changed["response"],
        json!({"status": "Accepted"}),
        "{changed}"
    );
    let mut known = every_key.clone();
    known["configurationKey"][1] = interval("0");
    assert_eq!(charger(&app, &s.t, s.charger).await["configuration"], known);
    // The operator's own read of that key reports the 0 and sets nothing: only the set-up's read at a boot does.
    let asked = json!({"kind": "GET_CONFIGURATION", "keys": ["MeterValueSampleInterval"]});
    let read = command(&app, &s.t.access, s.charger, asked.clone()).await;
    assert_eq!(
        read["response"],
        json!({"configurationKey": [interval("0")]})
    );
    let mut tx = app.tenant_tx(s.t.id).await;
    let written: i64 = sqlx::query_scalar(
        "select count(*) from ocpp_call where charger_id = $1 and payload->>'value' = '60'",
    )
    .bind(s.charger)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(tx);
    assert_eq!(written, 0);

    // Booted again, the charger reports 0 and is set to 60, which it accepts; the configuration keeps every key.
    let boot_again = json!({"chargePointVendor": "Acme", "chargePointModel": "AC22"});
    cp.call("BootNotification", boot_again.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let every_minute = json!({"key": "MeterValueSampleInterval", "value": "60"});
    let set = until_call(&app, &s.t, s.charger, "ChangeConfiguration", |c| {
        c["payload"] == every_minute && c["status"] != "pending" && c["status"] != "sent"
    })
    .await;
    assert_eq!(set["response"], json!({"status": "Accepted"}), "{set}");
    assert_eq!(
        charger(&app, &s.t, s.charger).await["configuration"],
        every_key
    );
    let read = command(&app, &s.t.access, s.charger, asked).await;
    assert_eq!(
        read["response"],
        json!({"configurationKey": [interval("60")]}),
        "the charger itself holds the new interval"
    );

    // Booted a third time, it reports 60: nothing more is sent.
    cp.call("BootNotification", boot_again.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let setup_reads = "select count(*) from ocpp_call where charger_id = $1 and action = 'GetConfiguration'
                         and payload = '{\"key\": [\"MeterValueSampleInterval\"]}' and status = 'answered'
                         and requested_by is null";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut tx = app.tenant_tx(s.t.id).await;
        let n: i64 = sqlx::query_scalar(setup_reads)
            .bind(s.charger)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if n == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the third boot's read ({n} answered)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut tx = app.tenant_tx(s.t.id).await;
    let sets: Vec<(Value, Option<Uuid>)> = sqlx::query_as(
        "select payload, requested_by from ocpp_call where charger_id = $1 and action = 'ChangeConfiguration'
           and payload->>'key' = 'MeterValueSampleInterval' order by created_at",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(tx);
    assert_eq!(
        sets.iter()
            .map(|(p, by)| (p["value"].clone(), by.is_some()))
            .collect::<Vec<_>>(),
        vec![(json!("0"), true), (json!("60"), false)],
        "the operator's 0, then the set-up's 60 once"
    );

    // A boot's read that answers 0 while an operator's change of the interval waits behind it: the operator's newer
    // choice wins, and no 60 is written after it. (A call's OCPP message id is its id.)
    cp.reply_silent("GetConfiguration").await;
    cp.call("BootNotification", boot_again)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sent_read = "select id from ocpp_call where charger_id = $1 and action = 'GetConfiguration'
                       and requested_by is null and status = 'sent'";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let read_id: Uuid = loop {
        let mut tx = app.tenant_tx(s.t.id).await;
        let id: Option<Uuid> = sqlx::query_scalar(sent_read)
            .bind(s.charger)
            .fetch_optional(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(id) = id {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the fourth boot's read to be sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let thirty = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $k: ChargerCommandInput!) { chargerCommand(id: $c, command: $k) { status } }",
            json!({"c": s.charger, "k": {"kind": "CHANGE_CONFIGURATION", "key": "MeterValueSampleInterval", "value": "30"}}),
        )
        .await;
    assert_eq!(thirty["chargerCommand"]["status"], "pending", "{thirty}");
    cp.send_raw(&format!(
        r#"[3,"{read_id}",{{"configurationKey":[{{"key":"MeterValueSampleInterval","readonly":false,"value":"0"}}]}}]"#
    ))
    .await;
    until_call(&app, &s.t, s.charger, "ChangeConfiguration", |c| {
        c["payload"]["value"] == "30" && c["status"] == "answered"
    })
    .await;
    let mut tx = app.tenant_tx(s.t.id).await;
    let values: Vec<Value> = sqlx::query_scalar(
        "select payload->'value' from ocpp_call where charger_id = $1 and action = 'ChangeConfiguration'
           and payload->>'key' = 'MeterValueSampleInterval' order by created_at",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(tx);
    assert_eq!(values, vec![json!("0"), json!("60"), json!("30")]);
    cp.close().await;

    // 2.0.1 (another tenant's charger): the update interval, read with the set-up and merged with what an operator
    // reads; set to 0, it is set to 60 at the next boot.
    let other = site(&app).await;
    app.gql_ok(&other.t.access, turn_on, json!({})).await;
    let mut cp = boot(&app, &other, OcppVersion::V201).await;
    let variable = |c: &str, v: &str, value: &str| {
        json!({"attributeStatus": "Accepted", "attributeValue": value, "component": {"name": c},
               "variable": {"name": v}})
    };
    let read = until_call(&app, &other.t, other.charger, "GetVariables", |c| {
        c["status"] == "answered"
    })
    .await;
    assert_eq!(
        read["response"],
        json!({"getVariableResult": [variable("SampledDataCtrlr", "TxUpdatedInterval", "60")]})
    );
    let heartbeat =
        json!({"kind": "GET_CONFIGURATION", "keys": ["OCPPCommCtrlr.HeartbeatInterval"]});
    command(&app, &other.t.access, other.charger, heartbeat).await;
    let zero = json!({"kind": "CHANGE_CONFIGURATION", "key": "SampledDataCtrlr.TxUpdatedInterval", "value": "0"});
    let changed = command(&app, &other.t.access, other.charger, zero).await;
    assert_eq!(changed["status"], "answered", "{changed}");
    let known = |v: &str| {
        json!({"getVariableResult": [
            variable("SampledDataCtrlr", "TxUpdatedInterval", v),
            variable("OCPPCommCtrlr", "HeartbeatInterval", "60"),
        ]})
    };
    assert_eq!(
        charger(&app, &other.t, other.charger).await["configuration"],
        known("0")
    );
    cp.call(
        "BootNotification",
        json!({"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "DC50"}}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let every_minute = json!({"setVariableData": [{"attributeValue": "60",
        "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}}]});
    let set = until_call(&app, &other.t, other.charger, "SetVariables", |c| {
        c["payload"] == every_minute && c["status"] == "answered"
    })
    .await;
    assert_eq!(
        set["response"]["setVariableResult"][0]["attributeStatus"],
        "Accepted"
    );
    assert_eq!(
        charger(&app, &other.t, other.charger).await["configuration"],
        known("60")
    );
    let asked =
        json!({"kind": "GET_CONFIGURATION", "keys": ["SampledDataCtrlr.TxUpdatedInterval"]});
    let read = command(&app, &other.t.access, other.charger, asked).await;
    assert_eq!(
        read["response"]["getVariableResult"][0]["attributeValue"], "60",
        "{read}"
    );
    cp.close().await;
}

/// A 2.0.1 charger whose update interval is 0 and that refuses to change it is asked once, not at every boot.
#[tokio::test]
async fn a_charger_that_refuses_the_meter_set_ups_interval_is_not_asked_again_at_its_next_boot() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let turn_on = "mutation { setChargerMeterSetup(enabled: true) { chargerMeterSetup } }";
    app.gql_ok(&s.t.access, turn_on, json!({})).await;
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    let first = until_call(&app, &s.t, s.charger, "GetVariables", |c| {
        c["status"] == "answered"
    })
    .await;
    let zero = json!({"kind": "CHANGE_CONFIGURATION", "key": "SampledDataCtrlr.TxUpdatedInterval", "value": "0"});
    let changed = command(&app, &s.t.access, s.charger, zero).await;
    assert_eq!(changed["status"], "answered", "{changed}");
    let refusal = json!({"setVariableResult": [{"attributeStatus": "Rejected",
        "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}}]});
    cp.reply("SetVariables", refusal.clone()).await;
    let every_minute = json!({"setVariableData": [{"attributeValue": "60",
        "component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}}]});
    let boot_again =
        json!({"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "DC50"}});
    let mut reads = vec![first["id"].clone()];
    for _ in 0..2 {
        cp.call("BootNotification", boot_again.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The boot's read of the interval, answered: what it sets follows in the same transaction.
        let read = until_call(&app, &s.t, s.charger, "GetVariables", |c| {
            c["status"] == "answered" && !reads.contains(&c["id"])
        })
        .await;
        reads.push(read["id"].clone());
        if reads.len() == 2 {
            let set = until_call(&app, &s.t, s.charger, "SetVariables", |c| {
                c["payload"] == every_minute && c["status"] == "answered"
            })
            .await;
            assert_eq!(set["response"], refusal);
        }
    }
    let mut tx = app.tenant_tx(s.t.id).await;
    let asked: i64 = sqlx::query_scalar(
        "select count(*) from ocpp_call where tenant_id = $1 and charger_id = $2 and action = 'SetVariables'
           and payload = $3",
    )
    .bind(s.t.id)
    .bind(s.charger)
    .bind(&every_minute)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        asked, 1,
        "asked once, at the boot after the interval became 0"
    );
    drop(tx);

    // A change of the interval the charger took since (an operator's) lets the set-up ask again at the next boot.
    cp.reply_default("SetVariables").await;
    let zero = json!({"kind": "CHANGE_CONFIGURATION", "key": "SampledDataCtrlr.TxUpdatedInterval", "value": "0"});
    let changed = command(&app, &s.t.access, s.charger, zero).await;
    assert_eq!(changed["status"], "answered", "{changed}");
    cp.call("BootNotification", boot_again)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let set = until_call(&app, &s.t, s.charger, "SetVariables", |c| {
        c["payload"] == every_minute && c["status"] == "answered"
    })
    .await;
    assert_eq!(
        set["response"]["setVariableResult"][0]["attributeStatus"],
        "Accepted"
    );
    cp.close().await;
}

/// The workers' pass over one tenant's tags' credit, committed: how many tags changed.
async fn follow_credit(tenant: Uuid) -> u64 {
    let db = switchyard_tests::app_db(1);
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(tenant))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let changed = switchyard_core::charging::tags::follow_credit(&mut tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    changed
}

/// Tags whose credit changes together (a patron with many cards, or tags written before migration 0063, all listed
/// with credit) each take a list version of their own: a list cut into chunks of 100 at a version would otherwise
/// leave out the rest of those sharing it.
#[tokio::test]
async fn tags_whose_credit_changes_together_take_a_list_version_each() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let broke = app.create_patron(&s.t.access, "Many cards", None).await;
    sqlx::query(
        "insert into rfid_tag (tenant_id, uid, patron_id, version)
         select $1, 'BULK' || lpad(g::text, 4, '0'), $2, 0 from generate_series(1, 120) g",
    )
    .bind(s.t.id)
    .bind(broke)
    .execute(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(follow_credit(s.t.id).await, 120);
    assert_eq!(follow_credit(s.t.id).await, 0);
    let tags: Vec<(i64, bool)> = sqlx::query_as(
        "select version, no_credit from rfid_tag where tenant_id = $1 and uid like 'BULK%' order by version",
    )
    .bind(s.t.id)
    .fetch_all(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let top: i64 = sqlx::query_scalar("select tag_list_version from tenant where id = $1")
        .bind(s.t.id)
        .fetch_one(&app.owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let versions: Vec<i64> = tags.iter().map(|t| t.0).collect();
    assert_eq!(versions, ((top - 119)..=top).collect::<Vec<i64>>());
    assert!(tags.iter().all(|t| t.1), "all listed without credit");
    // The site's funded driver keeps its credit.
    let funded: bool =
        sqlx::query_scalar("select no_credit from rfid_tag where tenant_id = $1 and uid = $2")
            .bind(s.t.id)
            .bind(&s.tag)
            .fetch_one(&app.owner)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(!funded);
}

/// The workers find the tenants whose patrons' money moved across zero since their tags last changed, each in its
/// own tenant transaction, and bring their chargers' local lists up to date; a pass with nothing changed finds none.
#[tokio::test]
async fn the_workers_follow_patrons_money_into_every_tenants_local_lists() {
    let database = switchyard_tests::fresh_database().await;
    let app = switchyard_tests::spawn_app_in(&database).await;
    let (a, b) = (site(&app).await, site(&app).await);
    let mut cp = boot(&app, &a, OcppVersion::V16).await;
    let full = cp.next_received("SendLocalList").await;
    assert_eq!(
        full["localAuthorizationList"],
        json!([{"idTag": a.tag, "idTagInfo": {"status": "Accepted"}}])
    );
    let v1 = full["listVersion"].as_i64();
    until_charger(&app, &a.t, a.charger, "the full list taken", |c| {
        c["localListVersion"].as_i64() == v1
    })
    .await;
    for (s, uid) in [(&a, "LATEPAY1"), (&b, "LATEPAY2")] {
        let patron = app.create_patron(&s.t.access, "Pays later", None).await;
        app.gql_ok(
            &s.t.access,
            "mutation($p: UUID!, $u: String!) { addRfidTag(patronId: $p, uid: $u) { id } }",
            json!({"p": patron, "u": uid}),
        )
        .await;
        top_up(&app, &s.t, s.venue, patron, 100).await;
    }
    let refused = cp.next_received("SendLocalList").await;
    assert_eq!(
        refused["localAuthorizationList"],
        json!([{"idTag": "LATEPAY1", "idTagInfo": {"status": "Blocked"}}])
    );
    let v2 = refused["listVersion"].as_i64();
    until_charger(&app, &a.t, a.charger, "the refusal taken", |c| {
        c["localListVersion"].as_i64() == v2
    })
    .await;

    // Woken as the test apps wake their chargers' connections (the suite's Redis).
    let signals = switchyard_core::signals::Signals::from_url(
        std::env::var("TEST_REDIS_URL").ok().as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let db = switchyard_core::Db::connect_lazy(&database.app_url, 2)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_signals(signals);
    let mut stale = db
        .system()
        .tag_credit_stale(100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stale.sort();
    let mut both = vec![a.t.id, b.t.id];
    both.sort();
    assert_eq!(stale, both);
    switchyard_workers::follow_tag_credit(&db).await;
    let accepted = cp.next_received("SendLocalList").await;
    assert_eq!(
        accepted["localAuthorizationList"],
        json!([{"idTag": "LATEPAY1", "idTagInfo": {"status": "Accepted"}}])
    );
    for (s, uid) in [(&a, "LATEPAY1"), (&b, "LATEPAY2")] {
        let listed = app
            .gql_ok(&s.t.access, "{ rfidTags { uid noCredit } }", json!({}))
            .await;
        let tag = listed["rfidTags"]
            .as_array()
            .and_then(|tags| tags.iter().find(|t| t["uid"] == uid).cloned());
        assert_eq!(
            tag.map(|t| t["noCredit"].clone()),
            Some(json!(false)),
            "{listed}"
        );
    }
    let none = db
        .system()
        .tag_credit_stale(100)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty(), "{none:?}");
}

/// A password a charger reports in a configuration read (a 1.6 charger may answer `AuthorizationKey`, which the
/// specification makes write-only) is kept hidden, in the call's answer and in the charger's configuration; migration
/// 0057 hides those kept before it (run again here over rows written as they were then), and leaves the rest.
#[tokio::test]
async fn a_password_a_charger_reports_is_kept_hidden_and_migration_0057_hides_those_kept_before() {
    let database = switchyard_tests::fresh_database().await;
    let app = switchyard_tests::spawn_app_in(&database).await;
    let s = site(&app).await;
    let secret = "r3ported-r3ported-r3ported-r3po";
    let key = |k: &str, v: &str| json!({"key": k, "readonly": false, "value": v});
    let reported = json!({"configurationKey": [key("AuthorizationKey", secret), key("HeartbeatInterval", "60")]});
    let hidden = json!({"configurationKey": [key("AuthorizationKey", "(hidden)"), key("HeartbeatInterval", "60")]});
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    cp.reply("GetConfiguration", reported.clone()).await;
    let read = command(
        &app,
        &s.t.access,
        s.charger,
        json!({"kind": "GET_CONFIGURATION"}),
    )
    .await;
    assert_eq!(read["response"], hidden, "{read}");
    assert_eq!(
        charger(&app, &s.t, s.charger).await["configuration"],
        hidden
    );
    cp.close().await;
    let stored = "select (select count(*) from ocpp_call where response::text like '%' || $1 || '%')
                       + (select count(*) from charger where configuration::text like '%' || $1 || '%')";
    let mut tx = app.tenant_tx(s.t.id).await;
    let found: i64 = sqlx::query_scalar(stored)
        .bind(secret)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found, 0, "the password is stored nowhere");

    // As kept before 0057: the 1.6 answer and configuration as reported, and a 2.0.1 answer with the password.
    let variable = |c: &str, v: &str, value: &str| {
        json!({"attributeStatus": "Accepted", "attributeValue": value, "component": {"name": c},
               "variable": {"name": v}})
    };
    let v201 = json!({"getVariableResult": [
        variable("SecurityCtrlr", "basicAuthPassword", secret),
        variable("OCPPCommCtrlr", "HeartbeatInterval", "60"),
    ]});
    let read_id = uuid(&read["id"]);
    sqlx::query("update ocpp_call set response = $2 where id = $1")
        .bind(read_id)
        .bind(&reported)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A configuration holding both shapes, a key in another case, one reported without a value and an entry that
    // is not an object: each shape's password hidden, the rest as it was.
    let configuration = json!({
        "configurationKey": [
            key("authorizationKEY", secret), {"key": "AuthorizationKey", "readonly": false}, "odd",
            key("HeartbeatInterval", "60"),
        ],
        "getVariableResult": v201["getVariableResult"],
    });
    sqlx::query("update charger set configuration = $2 where id = $1")
        .bind(s.charger)
        .bind(&configuration)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A read never answered stays as it is.
    let unanswered = Uuid::now_v7();
    sqlx::query(
        "insert into ocpp_call (tenant_id, id, charger_id, action, payload, status, error)
         values ($1, $2, $3, 'GetConfiguration', '{}', 'timeout', 'the charger did not answer in time')",
    )
    .bind(s.t.id)
    .bind(unanswered)
    .bind(s.charger)
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let v201_id = Uuid::now_v7();
    sqlx::query(
        "insert into ocpp_call (tenant_id, id, charger_id, action, payload, status, response)
         values ($1, $2, $3, 'GetVariables', '{}', 'answered', $4)",
    )
    .bind(s.t.id)
    .bind(v201_id)
    .bind(s.charger)
    .bind(&v201)
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let owner = rerun_migration(
        &database,
        include_str!("../../../../migrations/0057_charger_reported_secrets_hidden.sql"),
    )
    .await;
    let mut tx = app.tenant_tx(s.t.id).await;
    let answers: Vec<(Uuid, Option<Value>)> =
        sqlx::query_as("select id, response from ocpp_call where id = any($1) order by id")
            .bind(vec![read_id, v201_id, unanswered])
            .fetch_all(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let mut v201_hidden = v201;
    v201_hidden["getVariableResult"][0]["attributeValue"] = json!("(hidden)");
    let mut expected = vec![
        (read_id, Some(hidden.clone())),
        (v201_id, Some(v201_hidden.clone())),
        (unanswered, None),
    ];
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(answers, expected);
    let found: i64 = sqlx::query_scalar(stored)
        .bind(secret)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found, 0, "the password is stored nowhere");
    drop(tx);
    assert_eq!(
        charger(&app, &s.t, s.charger).await["configuration"],
        json!({
            "configurationKey": [
                key("authorizationKEY", "(hidden)"), {"key": "AuthorizationKey", "readonly": false}, "odd",
                key("HeartbeatInterval", "60"),
            ],
            "getVariableResult": v201_hidden["getVariableResult"],
        })
    );
    for table in ["ocpp_call", "charger"] {
        assert!(
            rls_forced(&owner, table).await,
            "row-level security is forced again on {table}"
        );
    }
}

/// Migration 0055 hides the passwords that calls sent before it kept (run again here over calls written as they
/// were then; it changes nothing else): a sent 1.6 `AuthorizationKey` (in any case), a sent 2.0.1
/// `BasicAuthPassword` among other variables; a pending call keeps its password until it is sent (shown hidden),
/// and other calls are left as they are. A password typed into a command is refused.
#[tokio::test]
async fn migration_0055_hides_the_passwords_calls_kept_after_sending_them() {
    let database = switchyard_tests::fresh_database().await;
    let app = switchyard_tests::spawn_app_in(&database).await;
    let s = site(&app).await;
    let secret = "s3cret-s3cret-s3cret-s3cret-s3cr";
    let mixed = json!({"setVariableData": [
        {"attributeValue": "60", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
        {"attributeValue": secret, "component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}},
    ]});
    let rows = [
        (
            "ChangeConfiguration",
            json!({"key": "AuthorizationKey", "value": secret}),
            "answered",
        ),
        ("SetVariables", mixed.clone(), "timeout"),
        (
            "ChangeConfiguration",
            json!({"key": "AuthorizationKey", "value": secret}),
            "pending",
        ),
        (
            "ChangeConfiguration",
            json!({"key": "HeartbeatInterval", "value": "60"}),
            "answered",
        ),
        (
            "ChangeConfiguration",
            json!({"key": "authorizationKEY", "value": secret}),
            "error",
        ),
    ];
    let mut tx = app.tenant_tx(s.t.id).await;
    let mut ids = Vec::new();
    for (action, payload, status) in &rows {
        let id = Uuid::now_v7();
        sqlx::query(
            "insert into ocpp_call (tenant_id, id, charger_id, action, payload, status)
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.t.id)
        .bind(id)
        .bind(s.charger)
        .bind(action)
        .bind(payload)
        .bind(status)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        ids.push(id);
    }
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let owner = rerun_migration(
        &database,
        include_str!("../../../../migrations/0055_charger_call_secrets_hidden.sql"),
    )
    .await;
    let mut tx = app.tenant_tx(s.t.id).await;
    let mut after = Vec::new();
    for id in &ids {
        let payload: Value = sqlx::query_scalar("select payload from ocpp_call where id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        after.push(payload);
    }
    let mut mixed_hidden = mixed;
    mixed_hidden["setVariableData"][1]["attributeValue"] = json!("(hidden)");
    assert_eq!(
        after,
        vec![
            json!({"key": "AuthorizationKey", "value": "(hidden)"}),
            mixed_hidden,
            json!({"key": "AuthorizationKey", "value": secret}),
            json!({"key": "HeartbeatInterval", "value": "60"}),
            json!({"key": "authorizationKEY", "value": "(hidden)"}),
        ]
    );
    // The pending call keeps its password for the charger, but shows it to no one.
    let shown = app
        .gql_ok(
            &s.t.access,
            "query($c: UUID!) { charger(id: $c) { calls { id payload } } }",
            json!({"c": s.charger}),
        )
        .await;
    let pending = shown["charger"]["calls"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == json!(ids[2])))
        .map(|c| c["payload"].clone());
    assert_eq!(
        pending,
        Some(json!({"key": "AuthorizationKey", "value": "(hidden)"}))
    );
    drop(tx);

    // A password typed into a command is refused, whatever its case: it is set with setChargerPassword.
    for key in ["authorizationkey", "SecurityCtrlr.basicAuthPassword"] {
        let typed = app
            .gql(
                Some(&s.t.access),
                "mutation($c: UUID!, $k: ChargerCommandInput!) { chargerCommand(id: $c, command: $k) { id } }",
                json!({"c": s.charger, "k": {"kind": "CHANGE_CONFIGURATION", "key": key, "value": secret}}),
            )
            .await;
        assert_eq!(
            typed["errors"][0]["extensions"]["code"], "validation_failed",
            "{typed}"
        );
    }

    assert!(
        rls_forced(&owner, "ocpp_call").await,
        "row-level security is forced again"
    );
}

/// Runs a migration's SQL again as the database's owner (the role migrations run as); returns the owner's pool.
async fn rerun_migration(database: &switchyard_tests::TestDatabase, sql: &str) -> sqlx::PgPool {
    let owner = sqlx::PgPool::connect(&database.owner_url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sqlx::raw_sql(sql)
        .execute(&owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    owner
}

/// Whether row-level security is forced on `table` (its owner confined too).
async fn rls_forced(owner: &sqlx::PgPool, table: &str) -> bool {
    sqlx::query_scalar("select relforcerowsecurity from pg_class where relname = $1")
        .bind(table)
        .fetch_one(owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
