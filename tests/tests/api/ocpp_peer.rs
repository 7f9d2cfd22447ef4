//! The OCPP test peer itself (`switchyard_tests::ocpp_peer`: a charge point played by the Python `ocpp` package),
//! against the central system written with that package and against a scripted WebSocket server. None of these
//! tests involves Switchyard's own central system.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{
    check_default_replies, ocpp_url, CentralSystem, ChargePoint, ErrorOrigin, OcppVersion,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{http, Message};
use tokio_tungstenite::WebSocketStream;

const TAG: &str = "04A1B2C3";

fn frame(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON frame ({e}): {text}"))
}

#[tokio::test]
async fn ocpp_peer_default_replies_fit_the_schemas_of_both_versions() {
    check_default_replies().await;
}

#[tokio::test]
async fn ocpp_peer_v16_against_the_python_central_system() {
    let cs = CentralSystem::start().await;
    let mut cp = ChargePoint::connect(
        &cs.url("CP16"),
        "CP16",
        Some("a-secret-of-16"),
        OcppVersion::V16,
    )
    .await
    .unwrap();
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp1.6"));

    let boot = cp
        .call(
            "BootNotification",
            json!({ "chargePointVendor": "Switchyard", "chargePointModel": "Peer-1" }),
        )
        .await
        .unwrap();
    assert_eq!(boot["status"], "Accepted", "{boot}");
    assert_eq!(boot["interval"], 60, "{boot}");
    assert!(
        boot["currentTime"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{boot}"
    );
    assert_eq!(boot.as_object().map(|o| o.len()), Some(3), "{boot}");

    let heartbeat = cp.call("Heartbeat", json!({})).await.unwrap();
    assert!(heartbeat["currentTime"].is_string(), "{heartbeat}");
    let status = cp
        .call(
            "StatusNotification",
            json!({ "connectorId": 1, "errorCode": "NoError", "status": "Preparing" }),
        )
        .await
        .unwrap();
    assert_eq!(status, json!({}));
    let authorized = cp.call("Authorize", json!({ "idTag": TAG })).await.unwrap();
    assert_eq!(authorized, json!({ "idTagInfo": { "status": "Accepted" } }));

    let start = |connector: u32| json!({ "connectorId": connector, "idTag": TAG, "meterStart": 1000, "timestamp": "2026-12-01T10:00:00Z" });
    let first = cp.call("StartTransaction", start(1)).await.unwrap();
    assert_eq!(
        first["idTagInfo"],
        json!({ "status": "Accepted" }),
        "{first}"
    );
    let second = cp.call("StartTransaction", start(2)).await.unwrap();
    let (first, second) = (
        first["transactionId"].as_i64().unwrap(),
        second["transactionId"].as_i64().unwrap(),
    );
    assert!(second > first, "transaction ids {first} then {second}");
    let meter = cp
        .call(
            "MeterValues",
            json!({ "connectorId": 1, "transactionId": first, "meterValue": [{
                "timestamp": "2026-12-01T10:05:00Z",
                "sampledValue": [{ "value": "1250", "measurand": "Energy.Active.Import.Register", "unit": "Wh" }]
            }] }),
        )
        .await
        .unwrap();
    assert_eq!(meter, json!({}));
    let stop = cp
        .call(
            "StopTransaction",
            json!({ "transactionId": first, "idTag": TAG, "meterStop": 1500,
                    "timestamp": "2026-12-01T10:10:00Z", "reason": "Local" }),
        )
        .await
        .unwrap();
    assert_eq!(stop, json!({ "idTagInfo": { "status": "Accepted" } }));
    let data = cp
        .call(
            "DataTransfer",
            json!({ "vendorId": "switchyard", "data": "hello" }),
        )
        .await
        .unwrap();
    assert_eq!(data, json!({ "status": "Accepted" }));

    // A schema-invalid CALL sent past the library: the central system's library answers with a CALLERROR.
    let answer = frame(
        &cp.raw(r#"[2,"raw-1","BootNotification",{"chargePointVendor":42,"chargePointModel":"Peer-1"}]"#)
            .await,
    );
    assert_eq!(answer[0], 4, "{answer}");
    assert_eq!(answer[1], "raw-1", "{answer}");
    assert_eq!(answer[2], "TypeConstraintViolation", "{answer}");
    // An action that OCPP 1.6 does not have.
    let answer = frame(&cp.raw(r#"[2,"raw-2","TransactionEvent",{}]"#).await);
    assert_eq!(
        (&answer[0], &answer[1], &answer[2]),
        (&json!(4), &json!("raw-2"), &json!("NotSupported")),
        "{answer}"
    );
    // Not JSON at all: the library's central system drops it unanswered and the connection goes on.
    cp.send_raw(r#"[2,"raw-3","Heartbeat""#).await;
    cp.call("Heartbeat", json!({})).await.unwrap();

    // The same invalid payloads through `call`: the charge point's own library refuses to send them.
    let refused = cp
        .call(
            "BootNotification",
            json!({ "chargePointVendor": 42, "chargePointModel": "Peer-1" }),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.origin, ErrorOrigin::Request, "{refused}");
    assert_eq!(refused.code, "TypeConstraintViolation", "{refused}");
    let refused = cp
        .call(
            "StatusNotification",
            json!({ "connectorId": 1, "errorCode": "NoError", "status": "Sideways" }),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (refused.origin, refused.code.as_str()),
        (ErrorOrigin::Request, "FormatViolation"),
        "{refused}"
    );
    assert!(refused.description.contains("Sideways"), "{refused}");
    let refused = cp
        .call("Authorize", json!({ "idTag": TAG, "extra": true }))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.origin, refused.code.as_str()),
        (ErrorOrigin::Request, "FormatViolation"),
        "{refused}"
    );
    let refused = cp.call("Authorize", json!({})).await.unwrap_err();
    assert_eq!(
        (refused.origin, refused.code.as_str()),
        (ErrorOrigin::Request, "ProtocolError"),
        "{refused}"
    );
    cp.close().await;
}

#[tokio::test]
async fn ocpp_peer_v201_against_the_python_central_system() {
    let cs = CentralSystem::start().await;
    let mut cp = ChargePoint::connect(
        &cs.url("CP201"),
        "CP201",
        Some("a-secret-of-201"),
        OcppVersion::V201,
    )
    .await
    .unwrap();
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp2.0.1"));

    let boot = cp
        .call(
            "BootNotification",
            json!({ "chargingStation": { "model": "Peer-1", "vendorName": "Switchyard" }, "reason": "PowerUp" }),
        )
        .await
        .unwrap();
    assert_eq!(
        (&boot["status"], &boot["interval"]),
        (&json!("Accepted"), &json!(60)),
        "{boot}"
    );
    assert!(boot["currentTime"].is_string(), "{boot}");

    let token = json!({ "idToken": TAG, "type": "ISO14443" });
    let authorized = cp
        .call("Authorize", json!({ "idToken": token }))
        .await
        .unwrap();
    assert_eq!(
        authorized,
        json!({ "idTokenInfo": { "status": "Accepted" } })
    );
    let status = cp
        .call(
            "StatusNotification",
            json!({ "timestamp": "2026-12-01T10:00:00Z", "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(status, json!({}));

    let event = |kind: &str, seq: u32, trigger: &str| {
        json!({
            "eventType": kind, "timestamp": "2026-12-01T10:00:00Z", "triggerReason": trigger, "seqNo": seq,
            "transactionInfo": { "transactionId": "tx-201" }, "evse": { "id": 1, "connectorId": 1 },
            "meterValue": [{ "timestamp": "2026-12-01T10:00:00Z", "sampledValue": [{ "value": 1250.5 }] }]
        })
    };
    let mut started = event("Started", 0, "Authorized");
    started["idToken"] = token.clone();
    let answer = cp.call("TransactionEvent", started).await.unwrap();
    assert_eq!(answer, json!({ "idTokenInfo": { "status": "Accepted" } }));
    let answer = cp
        .call(
            "TransactionEvent",
            event("Updated", 1, "MeterValuePeriodic"),
        )
        .await
        .unwrap();
    assert_eq!(answer, json!({}));
    let mut ended = event("Ended", 2, "StopAuthorized");
    ended["transactionInfo"]["stoppedReason"] = json!("Local");
    assert_eq!(cp.call("TransactionEvent", ended).await.unwrap(), json!({}));
    let meter = cp
        .call(
            "MeterValues",
            json!({ "evseId": 1, "meterValue": [{ "timestamp": "2026-12-01T10:05:00Z", "sampledValue": [{ "value": 3.5 }] }] }),
        )
        .await
        .unwrap();
    assert_eq!(meter, json!({}));

    let answer = frame(
        &cp.raw(r#"[2,"raw-201","BootNotification",{"chargingStation":{"model":"M","vendorName":"V"},"reason":"Bored"}]"#)
            .await,
    );
    assert_eq!(
        (&answer[0], &answer[1], &answer[2]),
        (&json!(4), &json!("raw-201"), &json!("FormatViolation")),
        "{answer}"
    );
    let refused = cp
        .call(
            "BootNotification",
            json!({ "chargingStation": { "model": "M", "vendorName": "V" }, "reason": "Bored" }),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (refused.origin, refused.code.as_str()),
        (ErrorOrigin::Request, "FormatViolation"),
        "{refused}"
    );
    // A 1.6 action does not exist in 2.0.1: the peer says so (a panic) rather than sending it; past the library,
    // the central system's library answers NotSupported.
    let answer = frame(&cp.raw(r#"[2,"raw-202","StartTransaction",{}]"#).await);
    assert_eq!(answer[2], "NotSupported", "{answer}");
    cp.close().await;
}

#[expect(
    clippy::result_large_err,
    reason = "the handshake callback's error type is tungstenite's"
)]
#[tokio::test]
async fn ocpp_peer_connect_failures() {
    // The library's central system refuses a subprotocol it does not speak with HTTP 400.
    let cs = CentralSystem::start().await;
    let failure = ChargePoint::connect_offering(
        &cs.url("CP15"),
        "CP15",
        None,
        OcppVersion::V16,
        &["ocpp1.5"],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(failure.status, Some(400), "{failure:?}");

    // A server that refuses the upgrade with 401, and nothing listening at all.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let refused = tokio_tungstenite::accept_hdr_async(tcp, |_: &Request, _: Response| {
            Err::<Response, ErrorResponse>(
                http::Response::builder()
                    .status(401)
                    .body(Some("who are you?".into()))
                    .unwrap(),
            )
        })
        .await;
        assert!(refused.is_err());
    });
    let failure = ChargePoint::connect(
        &ocpp_url(addr, "CP1"),
        "CP1",
        Some("wrong"),
        OcppVersion::V16,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(failure.status, Some(401), "{failure:?}");
    server.await.unwrap();
    let failure = ChargePoint::connect(&ocpp_url(addr, "CP1"), "CP1", None, OcppVersion::V16)
        .await
        .err()
        .unwrap();
    assert_eq!(failure.status, None, "{failure:?}");
}

/// A central system whose every frame the test writes and reads itself: one WebSocket connection, accepted with
/// the first subprotocol the charge point offers.
struct Scripted {
    ws: WebSocketStream<TcpStream>,
    authorization: Option<String>,
    path: String,
}

impl Scripted {
    #[expect(
        clippy::result_large_err,
        reason = "the handshake callback's error type is tungstenite's"
    )]
    async fn pair(
        id: &str,
        password: Option<&str>,
        version: OcppVersion,
    ) -> (ChargePoint, Scripted) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut seen = (None, String::new());
            let ws = tokio_tungstenite::accept_hdr_async(
                tcp,
                |request: &Request, mut response: Response| {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    if let Some(first) = header("sec-websocket-protocol")
                        .and_then(|p| p.split(',').next().map(|s| s.trim().to_owned()))
                    {
                        response
                            .headers_mut()
                            .insert("sec-websocket-protocol", first.parse().unwrap());
                    }
                    seen = (header("authorization"), request.uri().path().to_owned());
                    Ok(response)
                },
            )
            .await
            .unwrap();
            Scripted {
                ws,
                authorization: seen.0,
                path: seen.1,
            }
        });
        let cp = ChargePoint::connect(&ocpp_url(addr, id), id, password, version)
            .await
            .unwrap();
        (cp, server.await.unwrap())
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// The charge point's next text frame.
    async fn next(&mut self) -> Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return frame(&text),
                Ok(Some(Ok(_))) => continue,
                other => panic!("the scripted central system waited for a frame: {other:?}"),
            }
        }
    }

    /// Answers the charge point's next CALL with `answer(unique id)`; returns the CALL.
    async fn answer_next(&mut self, answer: impl FnOnce(&Value) -> Value) -> Value {
        let call = self.next().await;
        self.send(answer(&call[1])).await;
        call
    }
}

#[tokio::test]
async fn ocpp_peer_v16_answers_and_reports_the_central_systems_calls() {
    let (mut cp, mut csms) = Scripted::pair("CP7", Some("a-secret-of-7"), OcppVersion::V16).await;
    assert_eq!(csms.path, "/ocpp/CP7");
    let basic = base64::engine::general_purpose::STANDARD.encode("CP7:a-secret-of-7");
    assert_eq!(csms.authorization, Some(format!("Basic {basic}")));
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp1.6"));

    // Default answers, and the CALLs reported with their payload.
    csms.send(json!([2, "c1", "RemoteStartTransaction", { "idTag": TAG, "connectorId": 1 }]))
        .await;
    assert_eq!(
        csms.next().await,
        json!([3, "c1", { "status": "Accepted" }])
    );
    assert_eq!(
        cp.next_received("RemoteStartTransaction").await,
        json!({ "idTag": TAG, "connectorId": 1 })
    );
    csms.send(json!([2, "c2", "GetConfiguration", { "key": ["HeartbeatInterval", "Nope"] }]))
        .await;
    assert_eq!(
        csms.next().await,
        json!([3, "c2", { "configurationKey": [{ "key": "HeartbeatInterval", "readonly": false, "value": "60" }],
                          "unknownKey": ["Nope"] }])
    );
    csms.send(json!([2, "c3", "SendLocalList", { "listVersion": 5, "updateType": "Full" }]))
        .await;
    assert_eq!(
        csms.next().await,
        json!([3, "c3", { "status": "Accepted" }])
    );
    csms.send(json!([2, "c4", "GetLocalListVersion", {}])).await;
    assert_eq!(csms.next().await, json!([3, "c4", { "listVersion": 5 }]));
    // Taken out of order: the others stay queued.
    let version = cp.next_received_full("GetLocalListVersion").await;
    assert_eq!(
        (version.unique_id.as_str(), version.answer, version.refused),
        ("c4", Some(json!([3, "c4", { "listVersion": 5 }])), None)
    );
    assert_eq!(
        cp.next_received("GetConfiguration").await,
        json!({ "key": ["HeartbeatInterval", "Nope"] })
    );
    assert_eq!(cp.next_received("SendLocalList").await["listVersion"], 5);

    // Answers set by the test: a payload, a CALLERROR, none at all.
    cp.reply("RemoteStartTransaction", json!({ "status": "Rejected" }))
        .await;
    csms.send(json!([2, "c5", "RemoteStartTransaction", { "idTag": TAG }]))
        .await;
    assert_eq!(
        csms.next().await,
        json!([3, "c5", { "status": "Rejected" }])
    );
    cp.reply_error("Reset", "NotSupported").await;
    csms.send(json!([2, "c6", "Reset", { "type": "Soft" }]))
        .await;
    let error = csms.next().await;
    assert_eq!(
        (&error[0], &error[1], &error[2]),
        (&json!(4), &json!("c6"), &json!("NotSupported"))
    );
    cp.reply_silent("UnlockConnector").await;
    csms.send(json!([2, "c7", "UnlockConnector", { "connectorId": 1 }]))
        .await;
    let unlock = cp.next_received_full("UnlockConnector").await;
    assert_eq!((unlock.unique_id.as_str(), unlock.answer), ("c7", None));
    cp.send_raw(r#"[3,"c7",{"status":"UnlockFailed"}]"#).await;
    assert_eq!(
        csms.next().await,
        json!([3, "c7", { "status": "UnlockFailed" }])
    );
    cp.reply_default("RemoteStartTransaction").await;
    csms.send(json!([2, "c8", "RemoteStartTransaction", { "idTag": TAG }]))
        .await;
    assert_eq!(
        csms.next().await,
        json!([3, "c8", { "status": "Accepted" }])
    );

    // A schema-invalid CALL from the central system: the library refuses it with a CALLERROR, and says so.
    csms.send(
        json!([2, "c9", "ChangeAvailability", { "connectorId": "one", "type": "Operative" }]),
    )
    .await;
    let error = csms.next().await;
    assert_eq!(
        (&error[0], &error[2]),
        (&json!(4), &json!("TypeConstraintViolation")),
        "{error}"
    );
    let invalid = cp.next_received_full("ChangeAvailability").await;
    assert_eq!(
        invalid.refused.as_ref().map(|r| r.0.as_str()),
        Some("TypeConstraintViolation"),
        "{invalid:?}"
    );

    // The charge point's CALLs: a valid answer, a CALLERROR, an answer that fails its schema, a malformed one.
    let (answer, call) = tokio::join!(
        cp.call("Heartbeat", json!({})),
        csms.answer_next(|id| json!([3, id, { "currentTime": "2026-12-01T10:00:00Z" }]))
    );
    assert_eq!(call[2], "Heartbeat");
    assert_eq!(
        answer.unwrap(),
        json!({ "currentTime": "2026-12-01T10:00:00Z" })
    );
    let (answer, _) = tokio::join!(
        cp.call("Heartbeat", json!({})),
        csms.answer_next(|id| json!([4, id, "InternalError", "out of coffee", { "why": "tests" }]))
    );
    let error = answer.unwrap_err();
    assert_eq!(
        (
            error.origin,
            error.code.as_str(),
            error.description.as_str(),
            &error.details
        ),
        (
            ErrorOrigin::Csms,
            "InternalError",
            "out of coffee",
            &json!({ "why": "tests" })
        )
    );
    let (answer, _) = tokio::join!(
        cp.call("Heartbeat", json!({})),
        csms.answer_next(|id| json!([3, id, { "currentTime": 5 }]))
    );
    let error = answer.unwrap_err();
    assert_eq!(
        (error.origin, error.code.as_str()),
        (ErrorOrigin::Response, "TypeConstraintViolation"),
        "{error}"
    );
    assert!(
        error
            .frame
            .as_deref()
            .is_some_and(|f| f.contains("\"currentTime\":5")),
        "{error}"
    );
    let (answer, _) = tokio::join!(
        cp.call("Heartbeat", json!({})),
        csms.answer_next(|id| json!([4, id]))
    );
    let error = answer.unwrap_err();
    assert_eq!(
        (error.origin, error.code.as_str()),
        (ErrorOrigin::Response, "ProtocolError"),
        "{error}"
    );

    // Raw frames: the answer to the frame's id comes back as it is.
    let (answer, call) = tokio::join!(
        cp.raw(r#"[2,"dup","Heartbeat",{}]"#),
        csms.answer_next(|id| json!([4, id, "OccurrenceConstraintViolation", "seen before", {}]))
    );
    assert_eq!(call, json!([2, "dup", "Heartbeat", {}]));
    assert_eq!(
        frame(&answer),
        json!([4, "dup", "OccurrenceConstraintViolation", "seen before", {}])
    );

    // The central system closes the connection (and then its TCP connection, which the peer waits for).
    let closing = async move {
        let close = CloseFrame {
            code: CloseCode::from(4000),
            reason: "bye".into(),
        };
        csms.ws.close(Some(close)).await.unwrap();
        while let Some(Ok(_)) = csms.ws.next().await {}
    };
    let (closed, ()) = tokio::join!(cp.closed(), closing);
    assert_eq!(closed, (4000, "bye".to_owned()));
}

#[tokio::test]
async fn ocpp_peer_v201_answers_the_central_systems_calls() {
    let (mut cp, mut csms) = Scripted::pair("CP8", None, OcppVersion::V201).await;
    assert_eq!(csms.authorization, None);
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp2.0.1"));

    let component = json!({ "name": "OCPPCommCtrlr" });
    let variable = json!({ "name": "HeartbeatInterval" });
    csms.send(json!([2, "v1", "SetVariables", { "setVariableData": [
        { "attributeValue": "15", "component": component, "variable": variable }
    ] }]))
    .await;
    assert_eq!(
        csms.next().await,
        json!([3, "v1", { "setVariableResult": [
            { "attributeStatus": "Accepted", "component": component, "variable": variable }
        ] }])
    );
    csms.send(json!([2, "v2", "GetVariables", { "getVariableData": [
        { "component": component, "variable": variable },
        { "component": { "name": "NoSuchCtrlr" }, "variable": { "name": "Nothing" } }
    ] }]))
    .await;
    assert_eq!(
        csms.next().await,
        json!([3, "v2", { "getVariableResult": [
            { "attributeStatus": "Accepted", "attributeValue": "15", "component": component, "variable": variable },
            { "attributeStatus": "UnknownVariable", "component": { "name": "NoSuchCtrlr" },
              "variable": { "name": "Nothing" } }
        ] }])
    );
    csms.send(json!([2, "v3", "RequestStartTransaction", { "idToken": { "idToken": TAG, "type": "ISO14443" },
                                                            "remoteStartId": 7, "evseId": 1 }]))
    .await;
    assert_eq!(
        csms.next().await,
        json!([3, "v3", { "status": "Accepted" }])
    );
    assert_eq!(
        cp.next_received("RequestStartTransaction").await["remoteStartId"],
        7
    );
    cp.reply("RequestStopTransaction", json!({ "status": "Rejected" }))
        .await;
    csms.send(json!([2, "v4", "RequestStopTransaction", { "transactionId": "tx-1" }]))
        .await;
    assert_eq!(
        csms.next().await,
        json!([3, "v4", { "status": "Rejected" }])
    );
    // A 1.6 action is unknown to 2.0.1.
    csms.send(json!([2, "v5", "RemoteStartTransaction", { "idTag": TAG }]))
        .await;
    assert_eq!(csms.next().await[2], "NotSupported");
    assert!(cp
        .next_received_full("RemoteStartTransaction")
        .await
        .refused
        .is_some());
    // The charge point closes with 1000 (the server answers the close while the peer waits for it).
    let server_side = async move {
        let first = csms.ws.next().await;
        while let Some(Ok(_)) = csms.ws.next().await {}
        first
    };
    let ((), first) = tokio::join!(cp.close(), server_side);
    assert!(
        matches!(first, Some(Ok(Message::Close(Some(ref f)))) if f.code == CloseCode::Normal),
        "{first:?}"
    );
}
