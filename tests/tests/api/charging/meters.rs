//! Meter values from many chargers at once go through the group commit (`api/src/ocpp/meters.rs`): each is stored
//! by the time it is answered, whatever batch took it, by transaction id or by connector; a stopped transaction
//! takes none; a malformed one is refused alone.

use futures_util::future::join_all;
use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{ocpp_url, ChargePoint, OcppVersion};
use switchyard_tests::{spawn_app, TestApp};
use uuid::Uuid;

use super::{boot, charger, charger_station, session, site, top_up, uuid};

fn meter_values(transaction: Option<i64>, wh: i64) -> Value {
    let mut payload = json!({"connectorId": 1, "meterValue": [{
        "timestamp": chrono::Utc::now(),
        "sampledValue": [
            {"value": wh.to_string(), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
        ],
    }]});
    if let Some(id) = transaction {
        payload["transactionId"] = json!(id);
    }
    payload
}

/// The data of the session's numbered `session.metered` live events, in order.
async fn metered_events(app: &TestApp, tenant: Uuid, session: Uuid) -> Vec<Value> {
    sqlx::query_scalar(
        "select data from live_event where tenant_id = $1 and subject_id = $2 and kind = 'session.metered'
         order by seq",
    )
    .bind(tenant)
    .bind(session)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn meter_values_from_many_chargers_at_once_are_each_stored_when_answered() {
    let app = spawn_app().await;
    let s = site(&app).await;
    // The site's charger bills its patron; five more of the tenant's chargers run transactions: two of them bill
    // patrons of their own, three have tags nobody registered (kept, not billed).
    let mut chargers: Vec<(Uuid, ChargePoint, String)> = vec![(
        s.charger,
        boot(&app, &s, OcppVersion::V16).await,
        s.tag.clone(),
    )];
    for i in 0..5 {
        let identity = format!("{}-{i}", s.identity);
        let (_, id, password) = charger_station(&app, &s.t, s.venue, &identity).await;
        let mut cp = ChargePoint::connect(
            &ocpp_url(app.addr, &identity),
            &identity,
            Some(&password),
            OcppVersion::V16,
        )
        .await
        .unwrap_or_else(|e| panic!("charger could not connect: {e:?}"));
        let answer = cp
            .call(
                "BootNotification",
                json!({"chargePointVendor": "Acme", "chargePointModel": "AC22"}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["status"], "Accepted", "{answer}");
        let tag = if i == 0 || i == 4 {
            let tag = format!("DRIVER{i}{}", &s.tag[3..]);
            let patron = app
                .create_patron(&s.t.access, &format!("Driver {i}"), None)
                .await;
            app.gql_ok(
                &s.t.access,
                "mutation($p: UUID!, $u: String!) { addRfidTag(patronId: $p, uid: $u) { id } }",
                json!({"p": patron, "u": tag}),
            )
            .await;
            top_up(&app, &s.t, s.venue, patron, 1000).await;
            tag
        } else {
            format!("STRANGER{i}")
        };
        chargers.push((id, cp, tag));
    }
    // The chargers whose readings bill a session: the site's, and the first and last of the five.
    let billed = [0, 1, 5];
    let mut transactions = Vec::new();
    for (_, cp, tag) in chargers.iter_mut() {
        let start = cp
            .call(
                "StartTransaction",
                json!({"connectorId": 1, "idTag": tag, "meterStart": 0, "timestamp": chrono::Utc::now()}),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        transactions.push(
            start["transactionId"]
                .as_i64()
                .unwrap_or_else(|| panic!("{start}")),
        );
    }

    // Each billed charger's session, and how many `session.metered` events it has had.
    let mut sessions = [None; 6];
    let mut heard_before = [0usize; 6];
    for &i in &billed {
        let c = charger(&app, &s.t, chargers[i].0).await;
        let id = uuid(&c["transactions"][0]["sessionId"]);
        sessions[i] = Some(id);
        heard_before[i] = metered_events(&app, s.t.id, id).await.len();
    }
    for round in 1..=4i64 {
        // All at once; the second charger names no transaction (the one on its connector takes the reading).
        let answers = join_all(chargers.iter_mut().enumerate().map(|(i, (_, cp, _))| {
            let transaction = (i != 1).then_some(transactions[i]);
            cp.call(
                "MeterValues",
                meter_values(transaction, round * 1000 + i as i64 * 10),
            )
        }))
        .await;
        for answer in answers {
            assert_eq!(answer.unwrap_or_else(|e| panic!("{e}")), json!({}));
        }
        // Answered means stored: no waiting here.
        for (i, (id, _, _)) in chargers.iter().enumerate() {
            let c = charger(&app, &s.t, *id).await;
            let t = &c["transactions"][0];
            assert_eq!(
                t["meterLastWh"],
                json!(round * 1000 + i as i64 * 10),
                "round {round}, charger {i}: {c}"
            );
        }
        for &i in &billed {
            let id = sessions[i].unwrap_or_else(|| panic!("charger {i} has no session"));
            let running = session(&app, &s.t, id).await;
            let energy = round * 1000 + i as i64 * 10;
            assert_eq!(
                running["energyWh"], energy,
                "round {round}, charger {i}: {running}"
            );
            // 0.30 EUR per kWh (to within the pricing's rounding of a part of a cent).
            let cost = running["liveCost"]["amount"].as_i64().unwrap_or_default();
            let exact = energy * 30;
            assert!(
                (exact / 1000..=(exact + 999) / 1000).contains(&cost),
                "round {round}, charger {i}: {running}"
            );
            // Answered means announced: the reading's live event is numbered by then.
            let heard = metered_events(&app, s.t.id, id).await;
            assert_eq!(
                heard.len(),
                heard_before[i] + 1,
                "round {round}, charger {i}: {heard:?}"
            );
            heard_before[i] = heard.len();
            assert_eq!(
                heard.last().map(|d| d["energyWh"].clone()),
                Some(json!(energy))
            );
        }
    }
    // Numbered without gaps, whatever batches the readings shared.
    let seqs: Vec<i64> =
        sqlx::query_scalar("select seq from live_event where tenant_id = $1 order by seq")
            .bind(s.t.id)
            .fetch_all(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());

    // A stopped transaction takes no more readings.
    let (id, cp, _) = &mut chargers[2];
    let stop = cp
        .call(
            "StopTransaction",
            json!({"transactionId": transactions[2], "meterStop": 4100, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stop, json!({}));
    let late = cp
        .call("MeterValues", meter_values(Some(transactions[2]), 9000))
        .await;
    assert_eq!(late.unwrap_or_else(|e| panic!("{e}")), json!({}));
    let c = charger(&app, &s.t, *id).await;
    assert_eq!(c["transactions"][0]["meterLastWh"], 4100, "{c}");

    // A malformed one is refused with the CALLERROR its fault calls for (1.6 spells it so), and the charger goes on.
    let (id, cp, _) = &mut chargers[3];
    let answer = cp
        .raw(r#"[2,"bad-1","MeterValues",{"meterValue":[]}]"#)
        .await;
    let frame: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer}: {e}"));
    assert_eq!(
        (frame[0].clone(), frame[1].clone(), frame[2].clone()),
        (
            json!(4),
            json!("bad-1"),
            json!("OccurenceConstraintViolation")
        ),
        "{answer}"
    );
    let next = cp
        .call("MeterValues", meter_values(Some(transactions[3]), 5000))
        .await;
    assert_eq!(next.unwrap_or_else(|e| panic!("{e}")), json!({}));
    let c = charger(&app, &s.t, *id).await;
    assert_eq!(c["transactions"][0]["meterLastWh"], 5000, "{c}");
}

/// A reading whose live event cannot be numbered (another transaction holds the tenant's numbering and does not let
/// go) is refused after the numbering's bounded wait, not left hanging; stored nothing, it is stored when sent again.
#[tokio::test]
async fn a_reading_whose_event_cannot_be_numbered_is_refused_in_bounded_time_and_stored_when_sent_again(
) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));
    assert_eq!(start["idTagInfo"]["status"], "Accepted", "{start}");

    // Another transaction takes the tenant's numbering and holds it.
    let mut holder = app.tenant_tx(s.t.id).await;
    sqlx::query(
        "select pg_advisory_xact_lock(hashtextextended('switchyard.live_event:' || $1::text, 0))",
    )
    .bind(s.t.id)
    .execute(&mut *holder)
    .await
    .unwrap();
    let refused = cp
        .call("MeterValues", meter_values(Some(transaction), 2000))
        .await;
    assert_eq!(
        refused.err().map(|e| e.code),
        Some("InternalError".into()),
        "the charger is told to send it again"
    );
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"][0]["meterLastWh"], 0, "{c}");

    holder.rollback().await.unwrap();
    let stored = cp
        .call("MeterValues", meter_values(Some(transaction), 2000))
        .await;
    assert_eq!(stored.unwrap_or_else(|e| panic!("{e}")), json!({}));
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"][0]["meterLastWh"], 2000, "{c}");
    let running = session(&app, &s.t, uuid(&c["transactions"][0]["sessionId"])).await;
    assert_eq!(running["energyWh"], 2000, "{running}");
}
