//! Several API replicas: a charger's connection lives in one process; a call asked of any other reaches it (the
//! outbox and the venue wake-up, through Redis or Postgres `notify`), and its answer is seen everywhere.

use serde_json::json;
use switchyard_tests::ocpp_peer::{ChargePoint, OcppVersion};
use switchyard_tests::spawn_app;

use super::site;

async fn across_replicas(redis_url: &str) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let (_a, a_url) = crate::binaries::api_replica(redis_url).await;
    let (_b, b_url) = crate::binaries::api_replica(redis_url).await;
    let ws = format!(
        "{}/ocpp/{}",
        a_url.replacen("http://", "ws://", 1),
        s.identity
    );
    let mut cp = ChargePoint::connect(&ws, &s.identity, Some(&s.password), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let boot = cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Acme", "chargePointModel": "AC22"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Accepted");
    cp.next_received("SendLocalList").await;

    // Asked of B, answered by the charger on A, awaited on B.
    let answer: serde_json::Value = app
        .client
        .post(format!("{b_url}/graphql"))
        .bearer_auth(&s.t.access)
        .json(&json!({
            "query": "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: GET_LOCAL_LIST_VERSION}, waitSeconds: 20) { status response } }",
            "variables": {"c": s.charger},
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        answer["data"]["chargerCommand"]["status"], "answered",
        "{answer}"
    );
    assert!(
        answer["data"]["chargerCommand"]["response"]["listVersion"].is_i64(),
        "{answer}"
    );
    assert_eq!(cp.next_received("GetLocalListVersion").await, json!({}));

    // A session started on B starts the charger on A.
    let started: serde_json::Value = app
        .client
        .post(format!("{b_url}/graphql"))
        .bearer_auth(&s.t.access)
        .json(&json!({
            "query": "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            "variables": {"s": s.station, "p": s.patron},
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started["data"]["startSession"]["id"].is_string(),
        "{started}"
    );
    let remote = cp.next_received("RemoteStartTransaction").await;
    assert_eq!(remote["connectorId"], 1);
}

#[tokio::test]
async fn a_call_asked_of_one_api_process_reaches_a_charger_on_another_through_redis() {
    across_replicas(&switchyard_tests::env_url("TEST_REDIS_URL")).await;
}

#[tokio::test]
async fn a_call_asked_of_one_api_process_reaches_a_charger_on_another_through_postgres() {
    across_replicas("").await;
}
