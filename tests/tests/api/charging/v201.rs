//! OCPP 2.0.1: TransactionEvent with sequence numbers (repeats answered, not applied), offline events, the running
//! cost on the charger's display, NoCredit, and RequestStart/RequestStop from the cloud.

use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::OcppVersion;
use switchyard_tests::spawn_app;

use super::{boot, charger, session, site, uuid, wallet};

fn energy(wh: i64) -> serde_json::Value {
    json!([{ "timestamp": chrono::Utc::now(), "sampledValue": [
        { "value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": { "unit": "Wh" } },
    ]}])
}

#[tokio::test]
async fn a_v201_transaction_event_stream_is_billed_once_with_its_running_cost() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    let list = cp.next_received("SendLocalList").await;
    assert_eq!(list["updateType"], "Full");
    assert_eq!(
        list["localAuthorizationList"][0]["idToken"]["idToken"],
        s.tag.as_str()
    );

    cp.call(
        "StatusNotification",
        json!({"timestamp": chrono::Utc::now(), "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let auth = cp
        .call(
            "Authorize",
            json!({"idToken": {"idToken": s.tag, "type": "ISO14443"}}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auth["idTokenInfo"]["status"], "Accepted");

    let tx_id = "TX-2001";
    let event = |kind: &str, seq: i64, wh: i64| {
        json!({
            "eventType": kind, "timestamp": chrono::Utc::now(), "triggerReason": "MeterValuePeriodic",
            "seqNo": seq, "transactionInfo": {"transactionId": tx_id},
            "idToken": {"idToken": s.tag, "type": "ISO14443"}, "evse": {"id": 1, "connectorId": 1},
            "meterValue": energy(wh),
        })
    };
    let started = cp
        .call("TransactionEvent", event("Started", 0, 40_000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(started["idTokenInfo"]["status"], "Accepted");
    let c = charger(&app, &s.t, s.charger).await;
    let session_id = uuid(&c["transactions"][0]["sessionId"]);

    // 2 kWh so far: 0.60 EUR on the display.
    let updated = cp
        .call("TransactionEvent", event("Updated", 1, 42_000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(updated["totalCost"], 0.6, "{updated}");
    // The same seqNo again (an answer lost): answered as the first time, not applied — the meter in it is ignored.
    let repeated = cp
        .call("TransactionEvent", event("Updated", 1, 90_000))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(repeated, updated, "the first answer again");
    assert_eq!(session(&app, &s.t, session_id).await["energyWh"], 2000);

    // A standalone MeterValues: the running cost is sent to the display.
    cp.call(
        "MeterValues",
        json!({"evseId": 1, "meterValue": energy(45_000)}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let cost = cp.next_received("CostUpdated").await;
    assert_eq!(cost, json!({"totalCost": 1.5, "transactionId": tx_id}));
    // The main meter (EVSE 0) reports too: answered, no transaction runs on it.
    let main = cp
        .call(
            "MeterValues",
            json!({"evseId": 0, "meterValue": energy(9_000_000)}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(main, json!({}));
    // Readings faster than the display's answers (here it answers none): one cost waits in the queue per
    // transaction, the latest, not one per reading ahead of everything queued after them.
    cp.reply_silent("CostUpdated").await;
    for wh in [46_000, 47_000, 48_000] {
        cp.call(
            "MeterValues",
            json!({"evseId": 1, "meterValue": energy(wh)}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut tx = app.tenant_tx(s.t.id).await;
    let costs: Vec<Value> = sqlx::query_scalar(
        "select payload->'totalCost' from ocpp_call where charger_id = $1 and action = 'CostUpdated'
         order by created_at, id",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    drop(tx);
    assert!(
        costs.len() <= 3 && costs.last() == Some(&json!(2.4)),
        "the first, then one on its way and the latest: {costs:?}"
    );

    let ended = cp
        .call("TransactionEvent", {
            let mut e = event("Ended", 2, 50_000);
            e["transactionInfo"]["stoppedReason"] = json!("EVDisconnected");
            e
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ended["totalCost"], 3.0, "{ended}");
    let done = session(&app, &s.t, session_id).await;
    assert_eq!(
        (done["status"].clone(), done["energyWh"].clone()),
        (json!("ENDED"), json!(10_000))
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (700, 0));
    let t = &charger(&app, &s.t, s.charger).await["transactions"][0];
    assert_eq!(t["stopReason"], "EVDisconnected");

    // An event for a transaction run while offline, with its old timestamps: kept.
    let old = chrono::Utc::now() - chrono::Duration::hours(2);
    let offline = cp
        .call(
            "TransactionEvent",
            json!({
                "eventType": "Started", "timestamp": old, "triggerReason": "Authorized", "seqNo": 3,
                "offline": true, "transactionInfo": {"transactionId": "TX-OFF"},
                "idToken": {"idToken": "UNSEEN77", "type": "ISO14443"}, "evse": {"id": 2},
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(offline["idTokenInfo"]["status"], "Invalid");
    let transactions = charger(&app, &s.t, s.charger).await["transactions"].clone();
    assert!(
        transactions.as_array().is_some_and(|l| l
            .iter()
            .any(|t| t["ocppId"] == "TX-OFF" && t["offline"] == true)),
        "{transactions}"
    );
}

/// A charger not set to send readings at the start: its first reading (the meter's lifetime register) is the
/// baseline, never 0 Wh, whether that reading comes in an update or as the `Transaction.Begin` sample an `Ended`
/// event carries; a free-vend transaction given a token before any reading likewise.
#[tokio::test]
async fn a_v201_transaction_begun_without_a_reading_is_billed_from_its_first_reading() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    let tag = json!({"idToken": s.tag, "type": "ISO14443"});
    let free = json!({"idToken": "", "type": "NoAuthorization"});
    let event = |kind: &str,
                 seq: i64,
                 id: &str,
                 token: &serde_json::Value,
                 meter: Option<serde_json::Value>| {
        let mut e = json!({
            "eventType": kind, "timestamp": chrono::Utc::now(), "triggerReason": "Authorized", "seqNo": seq,
            "transactionInfo": {"transactionId": id}, "idToken": token, "evse": {"id": 1, "connectorId": 1},
        });
        if let Some(m) = meter {
            e["meterValue"] = m;
        }
        e
    };
    // An event carrying a reading of the register.
    let reading = |kind: &str, seq: i64, id: &str, token: &serde_json::Value, wh: i64| {
        event(kind, seq, id, token, Some(energy(wh)))
    };
    let transaction = |c: &serde_json::Value, id: &str| {
        c["transactions"]
            .as_array()
            .and_then(|l| l.iter().find(|t| t["ocppId"] == id).cloned())
            .unwrap_or_else(|| panic!("{c}"))
    };
    let mut send = async |e: serde_json::Value| {
        cp.call("TransactionEvent", e)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };

    // Readings in updates: the first (1,250 kWh on the meter's register) is the baseline.
    let started = send(event("Started", 0, "TX-NOREAD", &tag, None)).await;
    assert_eq!(started["idTokenInfo"]["status"], "Accepted", "{started}");
    // The same start again (its answer was lost): answered as it was the first time, verdict included.
    let again = send(event("Started", 0, "TX-NOREAD", &tag, None)).await;
    assert_eq!(again["idTokenInfo"]["status"], "Accepted", "{again}");
    let t = transaction(&charger(&app, &s.t, s.charger).await, "TX-NOREAD");
    assert_eq!(
        (&t["meterStartWh"], &t["meterLastWh"], &t["energyWh"]),
        (&json!(null), &json!(null), &json!(0)),
        "{t}"
    );
    let session_id = uuid(&t["sessionId"]);
    // A second start on the busy connector is refused, and refused again when repeated (never turned into an
    // acceptance the charger would charge on, billed to no one).
    for _ in 0..2 {
        let busy = send(event("Started", 0, "TX-BUSY", &tag, None)).await;
        assert_eq!(busy["idTokenInfo"]["status"], "ConcurrentTx", "{busy}");
    }
    // Likewise a token given to a free-vend transaction on the busy connector: its repeat is answered as it was.
    send(event("Started", 0, "FREE-BUSY", &free, None)).await;
    for _ in 0..2 {
        let busy = send(event("Updated", 1, "FREE-BUSY", &tag, None)).await;
        assert_eq!(busy["idTokenInfo"]["status"], "ConcurrentTx", "{busy}");
    }
    let first = send(reading("Updated", 1, "TX-NOREAD", &tag, 1_250_000)).await;
    assert_eq!(first["totalCost"], 0.0, "{first}");
    assert_eq!(session(&app, &s.t, session_id).await["energyWh"], 0);
    let updated = send(reading("Updated", 2, "TX-NOREAD", &tag, 1_251_000)).await;
    assert_eq!(updated["totalCost"], 0.3, "{updated}");
    let ended = send(reading("Ended", 3, "TX-NOREAD", &tag, 1_252_000)).await;
    assert_eq!(ended["totalCost"], 0.6, "{ended}");
    let done = session(&app, &s.t, session_id).await;
    assert_eq!(
        (&done["status"], &done["energyWh"]),
        (&json!("ENDED"), &json!(2_000)),
        "{done}"
    );
    let t = transaction(&charger(&app, &s.t, s.charger).await, "TX-NOREAD");
    assert_eq!(
        (&t["meterStartWh"], &t["meterLastWh"], &t["energyWh"]),
        (&json!(1_250_000), &json!(1_252_000), &json!(2_000)),
        "{t}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (940, 0));

    // Readings at the end only: the `Ended` event's `Transaction.Begin` sample is the baseline.
    send(event("Started", 0, "TX-ENDONLY", &tag, None)).await;
    let at_end = json!([
        { "timestamp": chrono::Utc::now(), "sampledValue": [
            { "value": 1_260_000, "context": "Transaction.Begin", "unitOfMeasure": { "unit": "Wh" } },
        ]},
        { "timestamp": chrono::Utc::now(), "sampledValue": [
            { "value": 1_263_000, "context": "Transaction.End", "unitOfMeasure": { "unit": "Wh" } },
        ]},
    ]);
    let ended = send(event("Ended", 1, "TX-ENDONLY", &tag, Some(at_end))).await;
    assert_eq!(ended["totalCost"], 0.9, "{ended}");
    let t = transaction(&charger(&app, &s.t, s.charger).await, "TX-ENDONLY");
    assert_eq!(
        (&t["meterStartWh"], &t["energyWh"]),
        (&json!(1_260_000), &json!(3_000)),
        "{t}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (850, 0));

    // Free vend given a token before any reading: billed from the first reading after.
    send(event("Started", 0, "FREE-NOREAD", &free, None)).await;
    let token = send(event("Updated", 1, "FREE-NOREAD", &tag, None)).await;
    assert_eq!(token["idTokenInfo"]["status"], "Accepted", "{token}");
    send(reading("Updated", 2, "FREE-NOREAD", &free, 1_270_000)).await;
    let ended = send(reading("Ended", 3, "FREE-NOREAD", &free, 1_270_500)).await;
    assert_eq!(ended["totalCost"], 0.15, "{ended}");
    let t = transaction(&charger(&app, &s.t, s.charger).await, "FREE-NOREAD");
    assert_eq!(
        (&t["idTag"], &t["meterStartWh"], &t["energyWh"]),
        (&json!(s.tag), &json!(1_270_000), &json!(500)),
        "{t}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (835, 0));
}

#[tokio::test]
async fn a_v201_transaction_begun_before_its_token_keeps_its_evse_and_is_billed_from_the_token_on()
{
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    let mut send = async |e: Value| {
        cp.call("TransactionEvent", e)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let event = |kind: &str, seq: i64, trigger: &str, wh: i64| {
        json!({
            "eventType": kind, "timestamp": chrono::Utc::now(), "triggerReason": trigger, "seqNo": seq,
            "transactionInfo": {"transactionId": "TX-PLUG"}, "meterValue": energy(wh),
        })
    };
    // The cable plugged in on EVSE 2 starts the transaction; no one has shown a token yet. Later events name no EVSE
    // (the specification asks for it in the first event only).
    let mut started = event("Started", 0, "CablePluggedIn", 5_000);
    started["evse"] = json!({"id": 2, "connectorId": 1});
    assert_eq!(send(started).await, json!({}));
    let pending = charger(&app, &s.t, s.charger).await["transactions"][0].clone();
    assert_eq!(
        (
            &pending["ocppId"],
            &pending["connector"],
            &pending["authStatus"],
            &pending["idTag"],
            &pending["sessionId"],
            &pending["meterStartWh"]
        ),
        (
            &json!("TX-PLUG"),
            &json!(2),
            &json!("Pending"),
            &json!(null),
            &json!(null),
            &json!(5_000)
        ),
        "kept at once, on its EVSE: {pending}"
    );
    assert_eq!(
        send(event("Updated", 1, "MeterValuePeriodic", 5_000)).await,
        json!({})
    );
    // The driver taps: billed from this event's reading on, on EVSE 2.
    let mut tap = event("Updated", 2, "Authorized", 5_100);
    tap["idToken"] = json!({"idToken": s.tag, "type": "ISO14443"});
    let tapped = send(tap).await;
    assert_eq!(tapped["idTokenInfo"]["status"], "Accepted", "{tapped}");
    let updated = send(event("Updated", 3, "MeterValuePeriodic", 7_100)).await;
    assert_eq!(updated["totalCost"], 0.6, "{updated}");
    let ended = send(event("Ended", 4, "EVCommunicationLost", 7_100)).await;
    assert_eq!(ended["totalCost"], 0.6, "{ended}");
    let t = charger(&app, &s.t, s.charger).await["transactions"][0].clone();
    assert_eq!(
        (
            &t["connector"],
            &t["authStatus"],
            &t["idTag"],
            &t["energyWh"]
        ),
        (&json!(2), &json!("Accepted"), &json!(s.tag), &json!(2_100)),
        "{t}"
    );
    assert!(t["stoppedAt"].is_string(), "{t}");
    let billed = session(&app, &s.t, uuid(&t["sessionId"])).await;
    assert_eq!(
        (&billed["status"], &billed["energyWh"]),
        (&json!("ENDED"), &json!(2_000)),
        "{billed}"
    );
    let mut tx = app.tenant_tx(s.t.id).await;
    let connector: Option<i32> = sqlx::query_scalar("select connector from session where id = $1")
        .bind(uuid(&t["sessionId"]))
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connector, Some(2));
    assert_eq!(wallet(&app, &s.t, s.patron).await, (940, 0));

    // A tag refused on a pending transaction leaves it pending (for a later tag), in the audit log with the tag;
    // the patron's tag then takes it even in an event not triggered by a tap (some chargers send it in every one).
    let plug = |kind: &str, seq: i64, trigger: &str, wh: i64, tag: Option<&str>| {
        let mut e = json!({
            "eventType": kind, "timestamp": chrono::Utc::now(), "triggerReason": trigger, "seqNo": seq,
            "transactionInfo": {"transactionId": "TX-PLUG-2"}, "meterValue": energy(wh),
            "evse": {"id": 1, "connectorId": 1},
        });
        if let Some(tag) = tag {
            e["idToken"] = json!({"idToken": tag, "type": "ISO14443"});
        }
        e
    };
    let mut send = async |e: Value| {
        cp.call("TransactionEvent", e)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    send(plug("Started", 0, "CablePluggedIn", 9_000, None)).await;
    let refused = send(plug("Updated", 1, "Authorized", 9_000, Some("NOBODY99"))).await;
    assert_eq!(refused["idTokenInfo"]["status"], "Invalid", "{refused}");
    let c = charger(&app, &s.t, s.charger).await;
    let pending = c["transactions"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["ocppId"] == "TX-PLUG-2").cloned())
        .unwrap_or_else(|| panic!("{c}"));
    assert_eq!(
        (
            &pending["authStatus"],
            &pending["idTag"],
            &pending["sessionId"]
        ),
        (&json!("Pending"), &json!(null), &json!(null)),
        "{pending}"
    );
    let taken = send(plug(
        "Updated",
        2,
        "MeterValuePeriodic",
        9_000,
        Some(&s.tag),
    ))
    .await;
    assert_eq!(taken["idTokenInfo"]["status"], "Accepted", "{taken}");
    let ended = send(plug(
        "Ended",
        3,
        "EVCommunicationLost",
        10_000,
        Some(&s.tag),
    ))
    .await;
    assert_eq!(ended["totalCost"], 0.3, "{ended}");
    let mut tx = app.tenant_tx(s.t.id).await;
    let audited: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "select detail->>'id_tag', detail->>'auth_status' from audit_log
         where action = 'charging.unbilled_transaction' and object_id = $1 and detail->>'transaction' = 'TX-PLUG-2'",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        audited,
        [(Some("NOBODY99".to_owned()), Some("Invalid".to_owned()))]
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (910, 0));
}

#[tokio::test]
async fn v201_chargers_hear_no_credit_and_are_started_and_stopped_by_request() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    cp.next_received("SendLocalList").await;
    let broke = app.create_patron(&s.t.access, "Broke", None).await;
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!) { addRfidTag(patronId: $p, uid: \"NOMONEY1\") { id } }",
        json!({"p": broke}),
    )
    .await;
    // The local list refuses the tag too, for a charger that cannot ask.
    let listed = cp.next_received("SendLocalList").await;
    assert_eq!(
        listed["localAuthorizationList"],
        json!([{"idToken": {"idToken": "NOMONEY1", "type": "ISO14443"}, "idTokenInfo": {"status": "NoCredit"}}]),
        "{listed}"
    );
    let auth = cp
        .call(
            "Authorize",
            json!({"idToken": {"idToken": "NOMONEY1", "type": "ISO14443"}}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auth["idTokenInfo"]["status"], "NoCredit");

    let data = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": s.station, "p": s.patron}),
        )
        .await;
    let session_id = uuid(&data["startSession"]["id"]);
    let request = cp.next_received("RequestStartTransaction").await;
    assert_eq!(request["evseId"], 1);
    assert_eq!(request["idToken"]["type"], "Central");
    let token = request["idToken"]["idToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started = cp
        .call(
            "TransactionEvent",
            json!({
                "eventType": "Started", "timestamp": chrono::Utc::now(), "triggerReason": "RemoteStart",
                "seqNo": 0, "transactionInfo": {"transactionId": "R-1", "remoteStartId": request["remoteStartId"]},
                "idToken": {"idToken": token, "type": "Central"}, "evse": {"id": 1, "connectorId": 1},
                "meterValue": energy(1_000),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(started["idTokenInfo"]["status"], "Accepted");
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(uuid(&c["transactions"][0]["sessionId"]), session_id);
    app.gql_ok(
        &s.t.access,
        "mutation($s: UUID!) { stopSession(id: $s) { status } }",
        json!({"s": session_id}),
    )
    .await;
    assert_eq!(
        cp.next_received("RequestStopTransaction").await,
        json!({"transactionId": "R-1"})
    );
}

#[tokio::test]
async fn v201_chargers_get_every_operator_command_in_their_own_schema() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V201).await;
    cp.next_received("SendLocalList").await;
    let command =
        |kind: serde_json::Value| super::commands::command(&app, &s.t.access, s.charger, kind);
    // Every call below is checked against the 2.0.1 schema by the charge point: a payload that did not fit would
    // come back refused (an error status), not answered.
    let got =
        command(json!({"kind": "GET_CONFIGURATION", "keys": ["OCPPCommCtrlr.HeartbeatInterval"]}))
            .await;
    assert_eq!(
        (got["action"].as_str(), got["status"].as_str()),
        (Some("GetVariables"), Some("answered")),
        "{got}"
    );
    assert_eq!(
        got["response"]["getVariableResult"][0]["attributeStatus"], "Accepted",
        "{got}"
    );
    assert_eq!(
        cp.next_received("GetVariables").await,
        json!({"getVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]})
    );
    let set = command(json!({"kind": "CHANGE_CONFIGURATION", "key": "OCPPCommCtrlr.HeartbeatInterval", "value": "90"})).await;
    assert_eq!(
        (set["action"].as_str(), set["status"].as_str()),
        (Some("SetVariables"), Some("answered")),
        "{set}"
    );
    cp.next_received("SetVariables").await;
    for (kind, action) in [
        (json!({"kind": "SOFT_RESET"}), "Reset"),
        (
            json!({"kind": "UNLOCK_CONNECTOR", "connector": 1}),
            "UnlockConnector",
        ),
        (
            json!({"kind": "CHANGE_AVAILABILITY", "connector": 1, "operative": false}),
            "ChangeAvailability",
        ),
        (
            json!({"kind": "TRIGGER_MESSAGE", "message": "Heartbeat"}),
            "TriggerMessage",
        ),
        (
            json!({"kind": "SET_POWER_LIMIT", "watts": 11000}),
            "SetChargingProfile",
        ),
        (json!({"kind": "SET_POWER_LIMIT"}), "ClearChargingProfile"),
        (
            json!({"kind": "GET_LOCAL_LIST_VERSION"}),
            "GetLocalListVersion",
        ),
    ] {
        let call = command(kind.clone()).await;
        assert_eq!(
            (call["action"].as_str(), call["status"].as_str()),
            (Some(action), Some("answered")),
            "{kind}: {call}"
        );
        let received = cp.next_received_full(action).await;
        assert_eq!(received.refused, None, "{kind}");
    }
    let until = chrono::Utc::now() + chrono::Duration::minutes(20);
    let reserved = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) {
               reserveCharger(id: $c, connector: 1, patronId: $p, expiresAt: $e, waitSeconds: 20) { id call { status } } }",
            json!({"c": s.charger, "p": s.patron, "e": until}),
        )
        .await;
    assert_eq!(
        reserved["reserveCharger"]["call"]["status"], "answered",
        "{reserved}"
    );
    let asked = cp.next_received("ReserveNow").await;
    assert_eq!(asked["id"], reserved["reserveCharger"]["id"]);
    assert_eq!(asked["evseId"], 1);
}
