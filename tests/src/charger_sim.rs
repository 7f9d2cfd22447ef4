//! A simulated OCPP 1.6J charger for the demo (`demo-devices --charger-url ...`): it connects to the central
//! system with its identity and password, boots, reports its two connectors, heartbeats, and answers the central
//! system's calls — a RemoteStartTransaction starts a transaction drawing 7.4 kW (MeterValues every 10 s), a
//! RemoteStopTransaction stops it. It reconnects after a lost connection. Every step is printed as one line.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Power drawn while charging, W.
const POWER_W: f64 = 7_400.0;
const METER_EVERY: Duration = Duration::from_secs(10);

/// Runs the charger for as long as the process does.
pub async fn run(url: String, id: String, password: String) {
    let mut meter_wh: f64 = 120_000.0;
    loop {
        if let Err(e) = session(&url, &id, &password, &mut meter_wh).await {
            println!("charger {id}: connection ended ({e}); reconnecting in 5 s");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

struct Running {
    connector: i64,
    transaction: Option<i64>,
}

async fn session(url: &str, id: &str, password: &str, meter_wh: &mut f64) -> anyhow::Result<()> {
    let mut request = url.into_client_request()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{password}"));
    request
        .headers_mut()
        .insert("authorization", format!("Basic {auth}").parse()?);
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "ocpp1.6".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    println!("charger {id}: connected to {url}");
    let mut next_id = 0u64;
    let mut waiting: HashMap<String, &'static str> = HashMap::new();
    let mut call =
        |action: &'static str, payload: Value, waiting: &mut HashMap<String, &'static str>| {
            next_id += 1;
            let message_id = format!("sim-{next_id}");
            waiting.insert(message_id.clone(), action);
            Message::text(json!([2, message_id, action, payload]).to_string())
        };
    ws.send(call(
        "BootNotification",
        json!({"chargePointVendor": "Switchyard", "chargePointModel": "DemoCharger", "firmwareVersion": "1.0"}),
        &mut waiting,
    ))
    .await?;
    for connector in [1, 2] {
        ws.send(call(
            "StatusNotification",
            json!({"connectorId": connector, "errorCode": "NoError", "status": "Available"}),
            &mut waiting,
        ))
        .await?;
    }
    let mut heartbeat = tokio::time::interval(Duration::from_secs(60));
    let mut meter = tokio::time::interval(METER_EVERY);
    let mut running: Option<Running> = None;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let Some(frame) = frame else { return Ok(()) };
                let Message::Text(text) = frame? else { continue };
                let value: Value = serde_json::from_str(&text)?;
                match value[0].as_u64() {
                    Some(2) => {
                        let (message_id, action, payload) = (value[1].clone(), value[2].as_str().unwrap_or(""), &value[3]);
                        let (answer, then) = answer_to(action, payload, &running);
                        ws.send(Message::text(json!([3, message_id, answer]).to_string())).await?;
                        println!("charger {id}: {action} answered {answer}");
                        match then {
                            Then::Start(connector, tag) => {
                                ws.send(call("StartTransaction", json!({
                                    "connectorId": connector, "idTag": tag, "meterStart": *meter_wh as i64,
                                    "timestamp": chrono::Utc::now(),
                                }), &mut waiting)).await?;
                                ws.send(call("StatusNotification", json!({
                                    "connectorId": connector, "errorCode": "NoError", "status": "Charging",
                                }), &mut waiting)).await?;
                                running = Some(Running { connector, transaction: None });
                            }
                            Then::Stop => {
                                if let Some(r) = running.take() {
                                    ws.send(call("StopTransaction", json!({
                                        "transactionId": r.transaction.unwrap_or(-1), "meterStop": *meter_wh as i64,
                                        "timestamp": chrono::Utc::now(), "reason": "Remote",
                                    }), &mut waiting)).await?;
                                    ws.send(call("StatusNotification", json!({
                                        "connectorId": r.connector, "errorCode": "NoError", "status": "Available",
                                    }), &mut waiting)).await?;
                                }
                            }
                            Then::Nothing => {}
                        }
                    }
                    Some(3) => {
                        let message_id = value[1].as_str().unwrap_or_default().to_owned();
                        match waiting.remove(&message_id) {
                            Some("BootNotification") => {
                                let interval = value[2]["interval"].as_u64().unwrap_or(60).clamp(10, 3600);
                                heartbeat = tokio::time::interval(Duration::from_secs(interval));
                                println!("charger {id}: boot {}", value[2]["status"]);
                            }
                            Some("StartTransaction") => {
                                let transaction = value[2]["transactionId"].as_i64();
                                println!("charger {id}: transaction {transaction:?} started ({})", value[2]["idTagInfo"]["status"]);
                                if let Some(r) = running.as_mut() {
                                    r.transaction = transaction;
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(4) => println!("charger {id}: the central system refused a message: {text}"),
                    _ => {}
                }
            }
            _ = heartbeat.tick() => {
                ws.send(call("Heartbeat", json!({}), &mut waiting)).await?;
            }
            _ = meter.tick() => {
                if let Some(Running { connector, transaction: Some(transaction) }) = &running {
                    *meter_wh += POWER_W * METER_EVERY.as_secs_f64() / 3600.0;
                    ws.send(call("MeterValues", json!({
                        "connectorId": connector, "transactionId": transaction,
                        "meterValue": [{"timestamp": chrono::Utc::now(), "sampledValue": [
                            {"value": format!("{:.0}", *meter_wh), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                            {"value": format!("{POWER_W:.0}"), "measurand": "Power.Active.Import", "unit": "W"},
                        ]}],
                    }), &mut waiting)).await?;
                }
            }
        }
        // Answers never waited for stay out of the map.
        if waiting.len() > 1000 {
            waiting.clear();
        }
    }
}

enum Then {
    Start(i64, String),
    Stop,
    Nothing,
}

fn answer_to(action: &str, payload: &Value, running: &Option<Running>) -> (Value, Then) {
    match action {
        "RemoteStartTransaction" if running.is_none() => (
            json!({"status": "Accepted"}),
            Then::Start(
                payload["connectorId"].as_i64().unwrap_or(1),
                payload["idTag"].as_str().unwrap_or_default().to_owned(),
            ),
        ),
        "RemoteStartTransaction" => (json!({"status": "Rejected"}), Then::Nothing),
        "RemoteStopTransaction" => {
            let ours = running
                .as_ref()
                .and_then(|r| r.transaction)
                .is_some_and(|t| Some(t) == payload["transactionId"].as_i64());
            if ours {
                (json!({"status": "Accepted"}), Then::Stop)
            } else {
                (json!({"status": "Rejected"}), Then::Nothing)
            }
        }
        "GetConfiguration" => (
            json!({"configurationKey": [
                {"key": "HeartbeatInterval", "readonly": false, "value": "60"},
                {"key": "NumberOfConnectors", "readonly": true, "value": "2"},
            ]}),
            Then::Nothing,
        ),
        "GetLocalListVersion" => (json!({"listVersion": 0}), Then::Nothing),
        "UnlockConnector" => (json!({"status": "Unlocked"}), Then::Nothing),
        "DataTransfer" => (json!({"status": "UnknownVendorId"}), Then::Nothing),
        "ClearCache"
        | "ChangeAvailability"
        | "ChangeConfiguration"
        | "Reset"
        | "SendLocalList"
        | "TriggerMessage"
        | "ReserveNow"
        | "CancelReservation"
        | "SetChargingProfile"
        | "ClearChargingProfile" => (json!({"status": "Accepted"}), Then::Nothing),
        _ => (json!({}), Then::Nothing),
    }
}
