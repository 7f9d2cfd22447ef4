//! Meter values from many chargers at once go through the group commit (`api/src/ocpp/meters.rs`): each is stored
//! by the time it is answered, whatever batch took it, by transaction id or by connector; a stopped transaction
//! takes none; a malformed one is refused alone.

use futures_util::future::join_all;
use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{ocpp_url, ChargePoint, OcppVersion};
use switchyard_tests::spawn_app;
use uuid::Uuid;

use super::{boot, charger, charger_station, session, site, uuid};

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

#[tokio::test]
async fn meter_values_from_many_chargers_at_once_are_each_stored_when_answered() {
    let app = spawn_app().await;
    let s = site(&app).await;
    // The site's charger bills its patron; five more of the tenant's chargers run transactions with tags nobody
    // registered (kept, not billed).
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
        chargers.push((id, cp, format!("STRANGER{i}")));
    }
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
        let billed = charger(&app, &s.t, s.charger).await;
        let running = session(&app, &s.t, uuid(&billed["transactions"][0]["sessionId"])).await;
        assert_eq!(running["energyWh"], round * 1000, "{running}");
        // 0.30 EUR per kWh.
        assert_eq!(running["liveCost"]["amount"], round * 30, "{running}");
    }

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
