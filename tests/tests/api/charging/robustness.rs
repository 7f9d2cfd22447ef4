//! What the field learned the hard way: refused handshakes, malformed and schema-invalid frames answered with the
//! right CALLERROR, repeated CALL ids and repeated starts applied once, stops for unknown transactions answered,
//! a newer connection replacing the old, a silent charger found dead, and tenants that never meet.

use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{ocpp_url, unanswering_socket, ChargePoint, OcppVersion};
use switchyard_tests::{gql_code, spawn_app, spawn_app_with};
use uuid::Uuid;

use super::{boot, charger, site, until_charger};

#[tokio::test]
async fn handshakes_without_a_known_identity_password_or_subprotocol_are_refused() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let url = ocpp_url(app.addr, &s.identity);
    let wrong = ChargePoint::connect(
        &url,
        &s.identity,
        Some("not-the-password"),
        OcppVersion::V16,
    )
    .await;
    assert_eq!(wrong.err().and_then(|e| e.status), Some(401));
    let none = ChargePoint::connect(&url, &s.identity, None, OcppVersion::V16).await;
    assert_eq!(none.err().and_then(|e| e.status), Some(401));
    let unknown_url = ocpp_url(app.addr, "NO-SUCH-CP");
    let unknown = ChargePoint::connect(
        &unknown_url,
        "NO-SUCH-CP",
        Some(&s.password),
        OcppVersion::V16,
    )
    .await;
    assert_eq!(unknown.err().and_then(|e| e.status), Some(401));
    // An identity no charger may have (here with a NUL) is unknown too, not a failure of the server.
    let nul = ChargePoint::connect(
        &ocpp_url(app.addr, "CP%00"),
        "CP%00",
        Some(&s.password),
        OcppVersion::V16,
    )
    .await;
    assert_eq!(nul.err().and_then(|e| e.status), Some(401));
    let other = ChargePoint::connect_offering(
        &url,
        &s.identity,
        Some(&s.password),
        OcppVersion::V16,
        &["ocpp2.1", "wamp"],
    )
    .await;
    assert_eq!(other.err().and_then(|e| e.status), Some(400));
    // Offered both: the newer one is chosen.
    let both = ChargePoint::connect_offering(
        &url,
        &s.identity,
        Some(&s.password),
        OcppVersion::V201,
        &["ocpp1.6", "ocpp2.0.1"],
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(both.subprotocol.as_deref(), Some("ocpp2.0.1"));
}

fn error_code(frame: &str) -> (String, String) {
    let v: Value = serde_json::from_str(frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
    assert_eq!(v[0], 4, "not a CALLERROR: {frame}");
    (
        v[1].as_str().unwrap_or_default().to_owned(),
        v[2].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn bad_frames_get_the_matching_callerror_and_the_connection_goes_on() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    assert_eq!(
        error_code(&cp.raw("this is not json").await),
        ("-1".into(), "ProtocolError".into())
    );
    let cases = [
        (
            r#"[2,"m1","StartTransaction",{"connectorId":1}]"#,
            "OccurenceConstraintViolation",
        ),
        (
            r#"[2,"m2","Authorize",{"idTag":5}]"#,
            "TypeConstraintViolation",
        ),
        (
            r#"[2,"m3","Authorize",{"idTag":"ABCDEFGHIJKLMNOPQRSTUVWXYZ"}]"#,
            "PropertyConstraintViolation",
        ),
        (
            r#"[2,"m4","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Exploding"}]"#,
            "PropertyConstraintViolation",
        ),
        (r#"[2,"m5","Explode",{}]"#, "NotImplemented"),
        (r#"[2,"m6","Heartbeat",[1]]"#, "FormationViolation"),
        (
            r#"[2,"m7","RemoteStartTransaction",{"idTag":"X"}]"#,
            "NotSupported",
        ),
        // A tag names someone: never empty, never a control character (NUL cannot even be stored).
        (
            r#"[2,"m8","Authorize",{"idTag":""}]"#,
            "PropertyConstraintViolation",
        ),
        (
            r#"[2,"m9","Authorize",{"idTag":"AB\u0000CD"}]"#,
            "PropertyConstraintViolation",
        ),
        (
            r#"[2,"m10","StartTransaction",{"connectorId":1,"idTag":"","meterStart":0,"timestamp":"2026-01-01T00:00:00Z"}]"#,
            "PropertyConstraintViolation",
        ),
        // A boot's free texts are stored: a NUL (which Postgres cannot hold) or one longer than the schema allows
        // is refused for what it is, where it used to answer `InternalError` at every boot.
        (
            r#"[2,"m11","BootNotification",{"chargePointVendor":"V","chargePointModel":"M","firmwareVersion":"1.0\u0000"}]"#,
            "PropertyConstraintViolation",
        ),
        (
            r#"[2,"m12","BootNotification",{"chargePointVendor":"V","chargePointModel":"M","chargePointSerialNumber":"12345678901234567890123456"}]"#,
            "PropertyConstraintViolation",
        ),
    ];
    for (frame, code) in cases {
        let (id, got) = error_code(&cp.raw(frame).await);
        assert_eq!(got, code, "{frame}");
        let sent: Value = serde_json::from_str(frame).unwrap_or_default();
        assert_eq!(id, sent[1].as_str().unwrap_or_default(), "{frame}");
    }
    // Still answered after all that.
    let beat = cp
        .call("Heartbeat", json!({}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(beat["currentTime"].is_string(), "{beat}");
    // A vendor's free text may hold a tab; a stop is never refused for its tag (an empty one is no tag).
    let booted = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Acme\tCorp", "chargePointModel": "Wallbox"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(booted["status"], "Accepted", "{booted}");
    let now = chrono::Utc::now();
    let started = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0, "timestamp": now}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stop = cp
        .call(
            "StopTransaction",
            json!({"transactionId": started["transactionId"], "idTag": "", "meterStop": 1000, "timestamp": now}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stop, json!({}));
    let c = charger(&app, &s.t, s.charger).await;
    assert!(c["transactions"][0]["stoppedAt"].is_string(), "{c}");
    assert_eq!(c["transactions"][0]["energyWh"], 1000, "{c}");
    // The 2.0.1 spelling of the same errors.
    let s2 = site(&app).await;
    let mut cp2 = boot(&app, &s2, OcppVersion::V201).await;
    assert_eq!(error_code(&cp2.raw("{").await).1, "RpcFrameworkError");
    assert_eq!(
        error_code(&cp2.raw(r#"[2,"n1","Authorize",{}]"#).await).1,
        "OccurrenceConstraintViolation"
    );
    assert_eq!(
        error_code(&cp2.raw(r#"[2,"n2","Heartbeat",7]"#).await).1,
        "FormatViolation"
    );
    let event = |kind: &str, seq: i32, transaction: &str, token: Value| {
        json!({
            "eventType": kind, "timestamp": chrono::Utc::now(), "triggerReason": "Authorized", "seqNo": seq,
            "transactionInfo": {"transactionId": transaction}, "idToken": token, "evse": {"id": 1}
        })
    };
    let empty_id = format!(
        r#"[2,"n3","TransactionEvent",{}]"#,
        event(
            "Started",
            0,
            "",
            json!({"idToken": s2.tag, "type": "ISO14443"})
        )
    );
    assert_eq!(
        error_code(&cp2.raw(&empty_id).await).1,
        "PropertyConstraintViolation"
    );
    let empty_token = format!(
        r#"[2,"n4","TransactionEvent",{}]"#,
        event(
            "Started",
            0,
            "T-1",
            json!({"idToken": "", "type": "ISO14443"})
        )
    );
    assert_eq!(
        error_code(&cp2.raw(&empty_token).await).1,
        "PropertyConstraintViolation"
    );
    // A transaction with a real token: an update naming no one (`NoAuthorization`) is answered, and its end is never
    // refused for a bad token.
    let real = json!({"idToken": s2.tag, "type": "ISO14443"});
    cp2.call("TransactionEvent", event("Started", 0, "T-2", real))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let no_one = json!({"idToken": "", "type": "NoAuthorization"});
    cp2.call("TransactionEvent", event("Updated", 1, "T-2", no_one))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // ... nor for a reason it cannot store (a NUL, which the Python peer would not even send): that counts as no
    // reason.
    let mut end = event(
        "Ended",
        2,
        "T-2",
        json!({"idToken": "", "type": "ISO14443"}),
    );
    end["transactionInfo"]["stoppedReason"] = json!("Local\u{0}");
    let frame = cp2
        .raw(&json!([2, "n5", "TransactionEvent", end]).to_string())
        .await;
    let answer: Value = serde_json::from_str(&frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
    assert_eq!(
        (&answer[0], &answer[1]),
        (&json!(3), &json!("n5")),
        "a CALLRESULT: {frame}"
    );
    let ended = answer[2].clone();
    assert!(
        ended.is_object() && ended.get("idTokenInfo").is_none(),
        "{ended}"
    );
    let c = charger(&app, &s2.t, s2.charger).await;
    let t2 = c["transactions"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["ocppId"] == "T-2").cloned())
        .unwrap_or_else(|| panic!("{c}"));
    assert!(t2["stoppedAt"].is_string(), "{t2}");
    // Free vend: a `NoAuthorization` token is empty by the specification and names no one. Its events are answered,
    // and its transaction kept with its energy, billed to no one.
    let free = json!({"idToken": "", "type": "NoAuthorization"});
    for (kind, seq, wh) in [
        ("Started", 0, 5_000),
        ("Updated", 1, 5_800),
        ("Ended", 2, 6_200),
    ] {
        let mut e = event(kind, seq, "FREE-1", free.clone());
        e["meterValue"] = json!([{ "timestamp": chrono::Utc::now(), "sampledValue": [
            { "value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": { "unit": "Wh" } },
        ]}]);
        let answer = cp2
            .call("TransactionEvent", e)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(answer, json!({}), "{kind}");
    }
    let c = charger(&app, &s2.t, s2.charger).await;
    let free = c["transactions"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["ocppId"] == "FREE-1").cloned())
        .unwrap_or_else(|| panic!("{c}"));
    assert!(free["stoppedAt"].is_string(), "{free}");
    assert_eq!(
        (
            &free["idTag"],
            &free["authStatus"],
            &free["sessionId"],
            &free["energyWh"]
        ),
        (
            &json!(null),
            &json!("FreeVend"),
            &json!(null),
            &json!(1_200)
        ),
        "{free}"
    );
    // Free vend given a token later (a tap, a cloud-started session's tag): billed from that reading on.
    let free = json!({"idToken": "", "type": "NoAuthorization"});
    // A tag that is not accepted first leaves it free vend, for the next one to take.
    let unknown = json!({"idToken": "NOBODY99", "type": "ISO14443"});
    let steps = [
        ("Started", 0, 10_000, free.clone()),
        ("Updated", 1, 10_200, unknown),
        (
            "Updated",
            2,
            10_400,
            json!({"idToken": s2.tag, "type": "ISO14443"}),
        ),
        ("Ended", 3, 11_400, free.clone()),
    ];
    let mut answers = Vec::new();
    for (kind, seq, wh, token) in steps {
        let mut e = event(kind, seq, "FREE-2", token);
        e["meterValue"] = json!([{ "timestamp": chrono::Utc::now(), "sampledValue": [
            { "value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": { "unit": "Wh" } },
        ]}]);
        answers.push(
            cp2.call("TransactionEvent", e)
                .await
                .unwrap_or_else(|e| panic!("{kind}: {e}")),
        );
    }
    assert_eq!(
        answers[2]["idTokenInfo"]["status"], "Accepted",
        "{answers:?}"
    );
    assert_eq!(
        answers[1]["idTokenInfo"]["status"], "Invalid",
        "{answers:?}"
    );
    assert!(answers[3]["totalCost"].is_number(), "{answers:?}");
    let c = charger(&app, &s2.t, s2.charger).await;
    let paid = c["transactions"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["ocppId"] == "FREE-2").cloned())
        .unwrap_or_else(|| panic!("{c}"));
    assert_eq!(
        (&paid["idTag"], &paid["authStatus"], &paid["energyWh"]),
        (&json!(s2.tag), &json!("Accepted"), &json!(1_400)),
        "{paid}"
    );
    let billed = super::session(&app, &s2.t, super::uuid(&paid["sessionId"])).await;
    assert_eq!(
        (&billed["status"], &billed["energyWh"]),
        (&json!("ENDED"), &json!(1_000)),
        "billed from the token's reading: {billed}"
    );

    let mut tx = app.tenant_tx(s2.t.id).await;
    let (sessions, audited): (i64, i64) = sqlx::query_as(
        "select (select count(*) from session where station_id = $1),
                (select count(*) from audit_log where action = 'charging.unbilled_transaction' and object_id = $2
                   and detail->>'transaction' = 'FREE-1' and detail->>'auth_status' = 'FreeVend')",
    )
    .bind(s2.station)
    .bind(s2.charger)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (sessions, audited),
        (2, 1),
        "T-2 and FREE-2 made sessions; the free vend is audited once"
    );
}

/// A message the central system could not store for an internal reason is answered `InternalError` ("send it
/// again"), and sent again under the same message id it is handled afresh, not answered from memory with the same
/// error until the charger gives up (the stop of a session that would then bill on). The database refuses the
/// first start once here (a database of its own, for its trigger).
#[tokio::test]
async fn a_call_refused_for_an_internal_reason_is_handled_afresh_when_sent_again() {
    let database = switchyard_tests::fresh_database().await;
    let app = switchyard_tests::spawn_app_in(&database).await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    for ddl in [
        "create sequence refuse_once_for_test",
        "create function refuse_once_for_test() returns trigger language plpgsql security definer as $$
         begin
           if nextval('refuse_once_for_test') = 1 then
             raise exception 'refused once for the test';
           end if;
           return new;
         end $$",
        "create trigger refuse_once_for_test before insert on charging_transaction
         for each row execute function refuse_once_for_test()",
    ] {
        sqlx::query(ddl)
            .execute(&app.owner)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let frame = format!(
        r#"[2,"again-1","StartTransaction",{{"connectorId":1,"idTag":"{}","meterStart":100,"timestamp":"{at}"}}]"#,
        s.tag
    );
    let refused: Value = serde_json::from_str(&cp.raw(&frame).await).unwrap_or_default();
    assert_eq!(
        (refused[0].clone(), refused[2].clone()),
        (json!(4), json!("InternalError")),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains("refused once"),
        "no internal text: {refused}"
    );
    let answer: Value = serde_json::from_str(&cp.raw(&frame).await).unwrap_or_default();
    assert_eq!(answer[0], 3, "{answer}");
    assert_eq!(answer[2]["idTagInfo"]["status"], "Accepted", "{answer}");
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"].as_array().map(Vec::len), Some(1), "{c}");
}

#[tokio::test]
async fn repeated_call_ids_and_repeated_starts_are_answered_the_same_and_applied_once() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let frame = format!(
        r#"[2,"dup-1","StartTransaction",{{"connectorId":1,"idTag":"{}","meterStart":100,"timestamp":"{at}"}}]"#,
        s.tag
    );
    let first = cp.raw(&frame).await;
    let again = cp.raw(&frame).await;
    assert_eq!(first, again);
    let answer: Value = serde_json::from_str(&first).unwrap_or_default();
    assert_eq!(answer[2]["idTagInfo"]["status"], "Accepted", "{first}");
    // The same start under a new message id (the charger lost the answer and retried): the same transaction.
    let retried = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 100, "timestamp": at}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(retried["transactionId"], answer[2]["transactionId"]);
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"].as_array().map(Vec::len), Some(1), "{c}");
    let mut tx = app.tenant_tx(s.t.id).await;
    let sessions: i64 = sqlx::query_scalar("select count(*) from session where station_id = $1")
        .bind(s.station)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sessions, 1);

    // Stops for transactions nobody knows are answered, and recorded once each, however often they are sent.
    for unknown in [424_242, -1] {
        let at = chrono::Utc::now();
        for _ in 0..2 {
            let stop = cp
                .call(
                    "StopTransaction",
                    json!({"transactionId": unknown, "meterStop": 10, "timestamp": at}),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(stop, json!({}));
        }
    }
    let recorded: Vec<Value> = sqlx::query_scalar(
        "select detail->'transaction' from audit_log where action = 'charging.unknown_transaction_stop'
         and object_id = $1 order by created_at",
    )
    .bind(s.charger)
    .fetch_all(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recorded, vec![json!("424242"), json!("-1")]);
}

/// A charger whose clock was reset says 1970. Its start, live on a connection the cloud has never heard from before,
/// is billed from the connection; before, it was billed from a year ago (the oldest start a device may report).
#[tokio::test]
async fn a_start_stamped_by_a_reset_clock_is_billed_from_when_the_charger_was_heard() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let before = chrono::Utc::now();
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let started = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 0, "timestamp": "1970-01-01T00:00:00Z"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(started["idTagInfo"]["status"], "Accepted", "{started}");
    let after = chrono::Utc::now();
    let mut tx = app.tenant_tx(s.t.id).await;
    let from: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select started_at from session where station_id = $1")
            .bind(s.station)
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        from >= before && from <= after,
        "billed from {from}, not from the connection ({before}..{after})"
    );
}

#[tokio::test]
async fn a_meter_register_beyond_any_meters_is_refused_at_the_start_and_left_out_after() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let refused = cp
        .raw(&format!(
            r#"[2,"big-start","StartTransaction",{{"connectorId":1,"idTag":"{}","meterStart":9000000000000000,"timestamp":"{at}"}}]"#,
            s.tag
        ))
        .await;
    assert_eq!(
        error_code(&refused),
        (
            "big-start".to_owned(),
            "PropertyConstraintViolation".to_owned()
        )
    );
    let started = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 1000, "timestamp": at}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction = started["transactionId"].clone();
    for (register, expected) in [("1500", 1500), ("1e30", 1500), ("2000", 2000)] {
        cp.call(
            "MeterValues",
            json!({"connectorId": 1, "transactionId": transaction, "meterValue": [{"timestamp": chrono::Utc::now(),
                   "sampledValue": [{"value": register, "unit": "Wh"}]}]}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let mut tx = app.tenant_tx(s.t.id).await;
        let last: i64 = sqlx::query_scalar(
            "select meter_last_wh from charging_transaction where charger_id = $1",
        )
        .bind(s.charger)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(last, expected, "after {register}");
    }
    // A stop is never refused: an absurd meterStop is left out and the last reading stands.
    cp.call(
        "StopTransaction",
        json!({"transactionId": transaction, "meterStop": 9_000_000_000_000_000i64, "timestamp": chrono::Utc::now()}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut tx = app.tenant_tx(s.t.id).await;
    let (last, stopped): (i64, bool) = sqlx::query_as(
        "select meter_last_wh, stopped_at is not null from charging_transaction where charger_id = $1",
    )
    .bind(s.charger)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((last, stopped), (2000, true));
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_and_a_silent_charger_is_found_dead() {
    let app = spawn_app_with(&[("OCPP_PING_SECS", "1"), ("OCPP_DEAD_AFTER_SECS", "2")]).await;
    let s = site(&app).await;
    let mut old = boot(&app, &s, OcppVersion::V16).await;
    let mut new = boot(&app, &s, OcppVersion::V16).await;
    let (code, reason) = old.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (1000, "replaced by a newer connection")
    );
    let beat = new.call("Heartbeat", json!({})).await;
    assert!(beat.is_ok(), "{beat:?}");
    let c = until_charger(&app, &s.t, s.charger, "online", |c| c["online"] == true).await;
    assert_eq!(c["online"], true);
    // Its station can be reached while it is connected, and not once it is gone.
    let station_status = || async {
        app.gql_ok(
            &s.t.access,
            "query($s: UUID!) { station(id: $s) { status } }",
            json!({"s": s.station}),
        )
        .await["station"]["status"]
            .clone()
    };
    assert_eq!(station_status().await, "ONLINE");
    new.close().await;
    until_charger(&app, &s.t, s.charger, "offline", |c| c["online"] == false).await;
    assert_eq!(station_status().await, "OFFLINE");

    // A charger that stops answering (power cut: no close, no pongs) is taken for dead within the setting.
    let silent =
        unanswering_socket(&ocpp_url(app.addr, &s.identity), &s.identity, &s.password).await;
    until_charger(
        &app,
        &s.t,
        s.charger,
        "online through the silent socket",
        |c| c["online"] == true,
    )
    .await;
    assert_eq!(station_status().await, "ONLINE");
    // Never read from: pings go unanswered.
    until_charger(&app, &s.t, s.charger, "found dead", |c| {
        c["online"] == false
    })
    .await;
    assert_eq!(station_status().await, "OFFLINE");
    drop(silent);
}

/// The workers set offline a charger silent for three minutes (its API process stopped without closing the
/// connection; `observability` has that side). A live connection is never taken for one: it marks its charger seen
/// on its own checks, though the charger says nothing between heartbeats five minutes apart.
#[tokio::test]
async fn a_connected_charger_that_says_nothing_is_still_marked_seen_and_never_set_offline_as_silent(
) {
    let app = spawn_app_with(&[("OCPP_CHECK_SECS", "1")]).await;
    let s = site(&app).await;
    let mut cp = boot(&app, &s, OcppVersion::V16).await;
    let connection: Option<Uuid> =
        sqlx::query_scalar("select connection_id from charger where id = $1")
            .bind(s.charger)
            .fetch_one(&app.owner)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(connection.is_some());
    // As if last heard ten minutes ago; from now on the charger sends nothing (it only answers pings).
    sqlx::query("update charger set last_seen_at = now() - interval '10 minutes' where id = $1")
        .bind(s.charger)
        .execute(&app.owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let fresh: bool = sqlx::query_scalar(
            "select last_seen_at > now() - interval '1 minute' from charger where id = $1",
        )
        .bind(s.charger)
        .fetch_one(&app.owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        if fresh {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection's checks never marked its charger seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Setting it offline as silent, as the workers do, changes nothing.
    let db = switchyard_tests::app_db(2);
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(s.t.id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let was = switchyard_core::charging::silent(&mut tx, s.charger)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!was);
    let (online, still): (bool, Option<Uuid>) =
        sqlx::query_as("select online, connection_id from charger where id = $1")
            .bind(s.charger)
            .fetch_one(&app.owner)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((online, still), (true, connection));
    // And the charger is still served on that connection.
    let beat = cp.call("Heartbeat", json!({})).await;
    assert!(beat.is_ok(), "{beat:?}");
}

#[tokio::test]
async fn tenants_never_see_each_others_chargers_calls_or_tags() {
    let app = spawn_app().await;
    let a = site(&app).await;
    let b = site(&app).await;
    let mut cp_a = boot(&app, &a, OcppVersion::V16).await;
    let data = app
        .gql_ok(
            &a.t.access,
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: HARD_RESET}) { id } }",
            json!({"c": a.charger}),
        )
        .await;
    let call = data["chargerCommand"]["id"].clone();
    cp_a.next_received("Reset").await;

    for (query, vars) in [
        (
            "query($c: UUID!) { charger(id: $c) { id } }",
            json!({"c": a.charger}),
        ),
        (
            "query($s: UUID!) { charger(stationId: $s) { id } }",
            json!({"s": a.station}),
        ),
        (
            "query($c: UUID!) { chargerCall(id: $c) { id } }",
            json!({"c": call}),
        ),
        (
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: SOFT_RESET}) { id } }",
            json!({"c": a.charger}),
        ),
        (
            "mutation($c: UUID!) { setChargerPassword(id: $c) { password } }",
            json!({"c": a.charger}),
        ),
        (
            "mutation($c: UUID!, $s: UUID!) { adoptCharger(id: $c, stationId: $s) { password } }",
            json!({"c": a.charger, "s": b.station}),
        ),
        (
            "mutation($u: String!) { updateRfidTag(uid: $u, patch: {blocked: true}) { uid } }",
            json!({"u": a.tag}),
        ),
        (
            "mutation($u: String!, $p: UUID!) { updateRfidTag(uid: $u, patch: {patronId: $p}) { uid } }",
            json!({"u": b.tag, "p": a.patron}),
        ),
        (
            "mutation($u: String!, $p: String!) { updateRfidTag(uid: $u, patch: {parentUid: $p}) { uid } }",
            json!({"u": b.tag, "p": a.tag}),
        ),
        (
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) { reserveCharger(id: $c, patronId: $p, expiresAt: $e) { id } }",
            json!({"c": a.charger, "p": b.patron, "e": chrono::Utc::now() + chrono::Duration::hours(1)}),
        ),
        (
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) { reserveCharger(id: $c, patronId: $p, expiresAt: $e) { id } }",
            json!({"c": b.charger, "p": a.patron, "e": chrono::Utc::now() + chrono::Duration::hours(1)}),
        ),
        (
            "query($v: UUID) { chargers(venueId: $v) { id } }",
            json!({"v": a.venue}),
        ),
    ] {
        let body = app.gql(Some(&b.t.access), query, vars).await;
        if body["errors"].is_null() {
            assert_eq!(body["data"]["chargers"], json!([]), "{query}: {body}");
        } else {
            assert_eq!(gql_code(&body), "not_found", "{query}: {body}");
        }
    }
    // Reservation ids are numbers counted per tenant (OCPP's reservationId), so B's call names a number A uses.
    let reserved = app
        .gql_ok(
            &a.t.access,
            "mutation($c: UUID!, $p: UUID!, $e: DateTime!) { reserveCharger(id: $c, patronId: $p, expiresAt: $e) { id } }",
            json!({"c": a.charger, "p": a.patron, "e": chrono::Utc::now() + chrono::Duration::hours(1)}),
        )
        .await["reserveCharger"]["id"]
        .clone();
    cp_a.next_received("ReserveNow").await;
    let cancel = app
        .gql(
            Some(&b.t.access),
            "mutation($r: Int!) { cancelChargerReservation(reservationId: $r) { id } }",
            json!({"r": reserved}),
        )
        .await;
    assert_eq!(gql_code(&cancel), "not_found", "{cancel}");
    let reservations: Vec<String> =
        sqlx::query_scalar("select status from charging_reservation where tenant_id = $1")
            .bind(a.t.id)
            .fetch_all(&mut *app.tenant_tx(a.t.id).await)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reservations.len(), 1);
    assert_ne!(reservations[0], "cancelled", "A's reservation stands");
    let listed = app
        .gql_ok(
            &b.t.access,
            "{ chargers { id } rfidTags { uid } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["chargers"], json!([{"id": b.charger.to_string()}]));
    assert_eq!(listed["rfidTags"], json!([{"uid": b.tag}]));

    // A's tag means nothing at B's charger.
    let mut cp_b = boot(&app, &b, OcppVersion::V16).await;
    let auth = cp_b.call("Authorize", json!({"idTag": a.tag})).await;
    assert_eq!(
        auth.unwrap_or_else(|e| panic!("{e}"))["idTagInfo"]["status"],
        "Invalid"
    );
    // An identity is one charger's on the whole platform.
    let taken = app
        .gql(
            Some(&b.t.access),
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": b.venue, "name": "Copycat", "kind": "EV_CHARGER", "control": "OCPP",
                          "controlSettings": {"charge_point_id": a.identity}}}),
        )
        .await;
    assert_eq!(gql_code(&taken), "conflict", "{taken}");
    // A's charger is untouched and still A's, and its password was not changed by B's try: it still connects.
    let c = charger(&app, &a.t, a.charger).await;
    assert_eq!(c["online"], true);
    let again = ChargePoint::connect(
        &ocpp_url(app.addr, &a.identity),
        &a.identity,
        Some(&a.password),
        OcppVersion::V16,
    )
    .await;
    assert!(again.is_ok(), "A's password still opens A's charger");
}
