//! Powerbank cabinets on the open cabinet protocol: the real bridge library and the real `cabinet-sim` over the real
//! Mosquitto broker, and raw tunnel frames for replays and reports a cabinet should not make.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_edge_protocol::{decode, encode, Down, Event, SlotState, Up};
use switchyard_tests::{env_url, spawn_app, TestApp};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::rentals::{post, rent, setup, wallet, Cabinets};

/// The two cabinets of [`setup`] (A: four slots with pb-001 and pb-002; B: one empty slot) put on the cabinet
/// protocol under fresh cabinet ids, and a bridge for their venue: the ids and the bridge's token.
struct Site {
    c: Cabinets,
    cabinet_a: String,
    cabinet_b: String,
    bridge: Uuid,
    token: String,
}

async fn site(app: &TestApp) -> Site {
    let c = setup(app, 1_000).await;
    let suffix = Uuid::new_v4().simple().to_string();
    let (cabinet_a, cabinet_b) = (format!("cab-a-{suffix}"), format!("cab-b-{suffix}"));
    for (station, id) in [(c.a, &cabinet_a), (c.b, &cabinet_b)] {
        app.gql_ok(
            &c.t.access,
            "mutation($s: UUID!, $i: UpdateStationInput!) { updateStation(id: $s, input: $i) { control } }",
            json!({"s": station, "i": {"control": "CABINET", "controlSettings": {"cabinet_id": id}}}),
        )
        .await;
    }
    let created = app
        .gql_ok(
            &c.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Mall bridge\") { token bridge { id } } }",
            json!({"v": c.venue}),
        )
        .await["createBridge"]
        .clone();
    Site {
        c,
        cabinet_a,
        cabinet_b,
        bridge: created["bridge"]["id"].as_str().unwrap().parse().unwrap(),
        token: created["token"].as_str().unwrap().to_owned(),
    }
}

/// The simulator for the site: A holds pb-001 (90 %) and pb-002 (80 %), B is empty; ejects fail at `fail_rate`.
async fn simulator(s: &Site, fail_rate: f64) -> edge_bridge::cabinet_sim::Sim {
    let config = edge_bridge::cabinet_sim::SimConfig {
        mqtt_url: env_url("TEST_MQTT_URL"),
        cabinets: vec![
            format!("{}:4:pb-001@90,pb-002@80", s.cabinet_a)
                .parse()
                .unwrap(),
            format!("{}:1", s.cabinet_b).parse().unwrap(),
        ],
        jammed: vec![],
        fail_rate,
        charge_every: None,
    };
    edge_bridge::cabinet_sim::start(config)
        .await
        .unwrap_or_else(|e| panic!("the cabinet simulator did not start: {e:#}"))
}

/// The real bridge (library) for the site, on the test broker; dropping the sender stops it.
fn bridge(app: &TestApp, s: &Site) -> (tokio::sync::watch::Sender<bool>, std::path::PathBuf) {
    bridge_on(app, s, env_url("TEST_MQTT_URL"))
}

/// The real bridge for the site, on the MQTT broker at `mqtt_url`.
fn bridge_on(
    app: &TestApp,
    s: &Site,
    mqtt_url: String,
) -> (tokio::sync::watch::Sender<bool>, std::path::PathBuf) {
    let journal =
        std::env::temp_dir().join(format!("cabinet-test-{}.jsonl", Uuid::new_v4().simple()));
    let config = edge_bridge::Config {
        cloud_url: format!("ws://{}/edge/v1/tunnel", app.addr),
        token: s.token.clone(),
        journal_path: journal.clone(),
        heartbeat: Duration::from_millis(200),
        reconnect_max: Duration::from_millis(300),
        agent_listen: None,
        ocpp_listen: None,
        local_keepalive: Default::default(),
        mqtt_url: Some(mqtt_url),
        credentials_file: None,
        readings: None,
        metrics_listen: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(edge_bridge::run(config, stopped));
    (stop, journal)
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes to the test broker, as a person at the cabinet would (through the simulator's `sim/*` topics).
async fn publish(topic: &str, body: Value) {
    let url = env_url("TEST_MQTT_URL");
    let rest = url.trim_start_matches("mqtt://");
    let (host, port) = rest.rsplit_once(':').unwrap();
    let options = rumqttc::MqttOptions::new(
        format!("cabinet-test-{}", Uuid::new_v4().simple()),
        host,
        port.trim_end_matches('/').parse().unwrap(),
    );
    let (client, mut events) = rumqttc::AsyncClient::new(options, 10);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string())
        .await
        .unwrap();
    // Until the broker acknowledges it (QoS 1).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the broker never took {topic}");
        let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("MQTT: {e}"));
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            break;
        }
    }
    let _ = client.disconnect().await;
}

async fn rental(app: &TestApp, c: &Cabinets, id: Uuid) -> Value {
    let (status, body) = app.get(&format!("/api/v1/rentals/{id}"), &c.t.access).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The cabinet's slots as GraphQL shows them: (number, powerbank, battery, fault).
async fn slots(app: &TestApp, c: &Cabinets, station: Uuid) -> Vec<(i64, Value, Value, Value)> {
    let data = app
        .gql_ok(
            &c.t.access,
            "query($s: UUID!) { station(id: $s) { connectors { number reportedAsset battery charging fault reportedAt } } }",
            json!({"s": station}),
        )
        .await;
    data["station"]["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["number"].as_i64().unwrap(),
                s["reportedAsset"].clone(),
                s["battery"].clone(),
                s["fault"].clone(),
            )
        })
        .collect()
}

/// The powerbanks docked at a cabinet: (label, slot).
async fn docked(app: &TestApp, c: &Cabinets, station: Uuid) -> Vec<(String, i64)> {
    let data = app
        .gql_ok(
            &c.t.access,
            "query($s: UUID!) { assets(stationId: $s) { label slot } }",
            json!({"s": station}),
        )
        .await;
    data["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["label"].as_str().unwrap().to_owned(),
                a["slot"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The eject answers recorded for a cabinet.
async fn ejects(app: &TestApp, c: &Cabinets, station: Uuid) -> i64 {
    count(
        app,
        c.t.id,
        "select count(*) from bridge_event where tenant_id = $1 and station_id = $2 and kind = 'cabinet_ejected'",
        station,
    )
    .await
}

async fn count(app: &TestApp, tenant: Uuid, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(tenant)
        .bind(id)
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap()
}

/// The journals of a session, by kind, in order.
async fn journals(app: &TestApp, tenant: Uuid, session: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "select kind from journal where tenant_id = $1 and session_id = $2 order by created_at, idempotency_key",
    )
    .bind(tenant)
    .bind(session)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

async fn anomalies(app: &TestApp, c: &Cabinets, bridge: Uuid) -> Vec<String> {
    let data = app
        .gql_ok(
            &c.t.access,
            "{ bridges { id anomalies { kind } } }",
            json!({}),
        )
        .await;
    data["bridges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["id"] == json!(bridge))
        .flat_map(|b| b["anomalies"].as_array().unwrap().clone())
        .map(|a| a["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_rental_ejects_its_powerbank_through_the_bridge_and_the_cabinet_reports_its_slots() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let _sim = simulator(&s, 0.0).await;
    let (_bridge, journal) = bridge(&app, &s);
    wait_until("cabinet A's slots reach the cloud", || async {
        slots(&app, c, c.a).await[1].2 == json!(80)
    })
    .await;
    assert_eq!(
        slots(&app, c, c.a).await,
        [
            (1, json!("pb-001"), json!(90), Value::Null),
            (2, json!("pb-002"), json!(80), Value::Null),
            (3, Value::Null, Value::Null, Value::Null),
            (4, Value::Null, Value::Null, Value::Null),
        ]
    );

    let (id, powerbank) = rent(&app, c, c.a, "eject-ok").await;
    assert_eq!(powerbank, "pb-001");
    wait_until("the cabinet reports slot 1 empty", || async {
        ejects(&app, c, c.a).await == 1 && slots(&app, c, c.a).await[0].1.is_null()
    })
    .await;
    let ejected: Vec<Value> = sqlx::query_scalar(
        "select body from bridge_event where tenant_id = $1 and station_id = $2 and kind = 'cabinet_ejected'",
    )
    .bind(c.t.id)
    .bind(c.a)
    .fetch_all(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    let command: Uuid = sqlx::query_scalar(
        "select id from device_command where tenant_id = $1 and session_id = $2 and command = 'eject'",
    )
    .bind(c.t.id)
    .bind(id)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        ejected,
        [
            json!({"kind": "cabinet_ejected", "request_id": command, "ok": true, "slot": 1, "asset": "pb-001",
                "reason": null})
        ]
    );
    assert_eq!(rental(&app, c, id).await["status"], "ACTIVE");
    assert_eq!(docked(&app, c, c.a).await, [("pb-002".to_owned(), 2)]);
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 500, "depositHeld": 500, "debt": 0})
    );
    assert!(anomalies(&app, c, s.bridge).await.is_empty());
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_failed_eject_voids_the_rental_releases_its_deposit_and_a_jammed_slot_is_not_rented_from()
{
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    // Every eject fails (`motor_error`).
    let _sim = simulator(&s, 1.0).await;
    let (_bridge, journal) = bridge(&app, &s);
    wait_until("cabinet A's slots reach the cloud", || async {
        slots(&app, c, c.a).await[1].2 == json!(80)
    })
    .await;

    let (id, powerbank) = rent(&app, c, c.a, "eject-fails").await;
    assert_eq!(powerbank, "pb-001");
    wait_until("the rental is voided", || async {
        rental(&app, c, id).await["status"] == "FAILED"
    })
    .await;
    let got = rental(&app, c, id).await;
    assert_eq!(got["total_amount"], 0, "{got}");
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0}),
        "the deposit is back in the wallet, nothing charged"
    );
    assert_eq!(
        journals(&app, c.t.id, id).await,
        ["deposit_hold", "deposit_release"]
    );
    // The powerbank never left its slot.
    assert_eq!(
        docked(&app, c, c.a).await,
        [("pb-001".to_owned(), 1), ("pb-002".to_owned(), 2)]
    );
    assert_eq!(
        slots(&app, c, c.a).await[0],
        (1, json!("pb-001"), json!(90), Value::Null)
    );
    let failed = count(
        &app,
        c.t.id,
        "select count(*) from live_event where tenant_id = $1 and subject_id = $2 and kind = 'session.failed'",
        id,
    )
    .await;
    assert_eq!(failed, 1);

    // Slot 1 jams: once the cabinet says so, the next rental is given the powerbank in slot 2.
    publish(
        &format!("cabinet/{}/sim/jam", s.cabinet_a),
        json!({"slot": 1, "jammed": true}),
    )
    .await;
    wait_until("the jam reaches the cloud", || async {
        slots(&app, c, c.a).await[0].3 == json!("jammed")
    })
    .await;
    let (next, powerbank) = rent(&app, c, c.a, "eject-next").await;
    assert_eq!(powerbank, "pb-002");
    wait_until("that rental is voided too", || async {
        rental(&app, c, next).await["status"] == "FAILED"
    })
    .await;
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_powerbank_put_into_another_cabinet_ends_its_rental_there_with_the_final_bill() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let _sim = simulator(&s, 0.0).await;
    let (_bridge, journal) = bridge(&app, &s);
    wait_until("cabinet A's slots reach the cloud", || async {
        slots(&app, c, c.a).await[1].2 == json!(80)
    })
    .await;
    let (id, _) = rent(&app, c, c.a, "rent-return").await;
    wait_until("the cabinet reports slot 1 empty", || async {
        ejects(&app, c, c.a).await == 1 && slots(&app, c, c.a).await[0].1.is_null()
    })
    .await;
    // Ten minutes out: five free, then 1 a minute.
    let mut tx = app.tenant_tx(c.t.id).await;
    sqlx::query(
        "update session set started_at = started_at - interval '10 minutes' where tenant_id = $1 and id = $2",
    )
    .bind(c.t.id)
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    publish(
        &format!("cabinet/{}/sim/insert", s.cabinet_b),
        json!({"slot": 1, "asset": "pb-001", "battery": 40}),
    )
    .await;
    wait_until("the rental ends", || async {
        rental(&app, c, id).await["status"] == "FINISHED"
    })
    .await;
    let got = rental(&app, c, id).await;
    let total = got["total_amount"].as_i64().unwrap();
    assert!((5..=6).contains(&total), "{got}");
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000 - total, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(docked(&app, c, c.b).await, [("pb-001".to_owned(), 1)]);
    wait_until("cabinet B's slot reaches the cloud", || async {
        slots(&app, c, c.b).await[0].2 == json!(40)
    })
    .await;
    assert_eq!(
        slots(&app, c, c.b).await,
        [(1, json!("pb-001"), json!(40), Value::Null)]
    );
    let (returned_to, next_tick): (Option<Uuid>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "select return_station_id, next_tick_at from session where tenant_id = $1 and id = $2",
        )
        .bind(c.t.id)
        .bind(id)
        .fetch_one(&mut *app.tenant_tx(c.t.id).await)
        .await
        .unwrap();
    assert_eq!(
        (returned_to, next_tick),
        (Some(c.b), None),
        "returned to B, billing over"
    );
    let kinds = journals(&app, c.t.id, id).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.as_str() == "deposit_release")
            .count(),
        1,
        "{kinds:?}"
    );
    // No `accept_return` command: the powerbank is in already.
    let accept = count(
        &app,
        c.t.id,
        "select count(*) from device_command where tenant_id = $1 and session_id = $2 and command = 'accept_return'",
        id,
    )
    .await;
    assert_eq!(accept, 0);
    let _ = std::fs::remove_file(&journal);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw tunnel with the bridge's token, welcomed.
async fn tunnel(app: &TestApp, token: &str) -> Socket {
    let mut request = format!("ws://{}/edge/v1/tunnel", app.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = Up::hello("test");
    ws.send(Message::text(encode(&hello))).await.unwrap();
    loop {
        if let Down::Welcome { .. } = next_down(&mut ws).await {
            return ws;
        }
    }
}

async fn next_down(ws: &mut Socket) -> Down {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            return decode(&text).unwrap();
        }
    }
}

/// Sends an event and waits for its answer: acknowledged (true) or an error frame (false, with its code).
async fn report(
    ws: &mut Socket,
    seq: u64,
    station: Uuid,
    at: chrono::DateTime<chrono::Utc>,
    event: Event,
) -> Result<(), String> {
    let frame = Up::Event {
        seq,
        occurred_at: at,
        station_id: Some(station),
        event,
    };
    ws.send(Message::text(encode(&frame))).await.unwrap();
    loop {
        match next_down(ws).await {
            Down::Ack { seq: acked } if acked >= seq => return Ok(()),
            Down::Error { code, .. } => return Err(code),
            _ => {}
        }
    }
}

async fn eject_command(app: &TestApp, tenant: Uuid, rental: Uuid) -> Uuid {
    sqlx::query_scalar(
        "select id from device_command where tenant_id = $1 and session_id = $2 and command = 'eject'",
    )
    .bind(tenant)
    .bind(rental)
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

/// Counts of the tenant's journals, ended rentals and assets: what a replay must leave as it is.
async fn footprint(app: &TestApp, tenant: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from journal where tenant_id = $1),
                (select count(*) from session where tenant_id = $1 and status not in ('active', 'paused')),
                (select count(*) from asset where tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn replayed_and_repeated_cabinet_reports_change_nothing_twice_and_an_unknown_powerbank_is_docked_as_an_anomaly(
) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let mut ws = tunnel(&app, &s.token).await;
    let now = chrono::Utc::now();

    // A failed eject voids the rental; the same frame again, and the same report under a new number, do nothing.
    let (first, _) = rent(&app, c, c.a, "replay-1").await;
    let request = eject_command(&app, c.t.id, first).await;
    let failed = Event::CabinetEjected {
        request_id: request,
        ok: false,
        slot: 1,
        asset: Some("pb-001".into()),
        reason: Some("jammed".into()),
    };
    report(&mut ws, 1, c.a, now, failed.clone()).await.unwrap();
    assert_eq!(rental(&app, c, first).await["status"], "FAILED");
    let voided = (wallet(&app, c).await, footprint(&app, c.t.id).await);
    assert_eq!(
        voided.0,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );
    report(&mut ws, 1, c.a, now, failed.clone()).await.unwrap();
    report(&mut ws, 2, c.a, now, failed).await.unwrap();
    assert_eq!(
        (wallet(&app, c).await, footprint(&app, c.t.id).await),
        voided
    );
    assert_eq!(
        docked(&app, c, c.a).await,
        [("pb-001".to_owned(), 1), ("pb-002".to_owned(), 2)]
    );

    // A rental whose eject worked ends when its powerbank comes back into B; the same return again does nothing.
    let (second, powerbank) = rent(&app, c, c.a, "replay-2").await;
    assert_eq!(powerbank, "pb-001");
    let request = eject_command(&app, c.t.id, second).await;
    let ejected = Event::CabinetEjected {
        request_id: request,
        ok: true,
        slot: 1,
        asset: Some("pb-001".into()),
        reason: None,
    };
    report(&mut ws, 3, c.a, now, ejected).await.unwrap();
    assert_eq!(rental(&app, c, second).await["status"], "ACTIVE");
    let returned = Event::CabinetReturned {
        slot: 1,
        asset: "pb-001".into(),
    };
    report(&mut ws, 4, c.b, now, returned.clone())
        .await
        .unwrap();
    assert_eq!(rental(&app, c, second).await["status"], "FINISHED");
    let ended = (wallet(&app, c).await, footprint(&app, c.t.id).await);
    report(&mut ws, 4, c.b, now, returned.clone())
        .await
        .unwrap();
    report(&mut ws, 5, c.b, now, returned).await.unwrap();
    assert_eq!(
        (wallet(&app, c).await, footprint(&app, c.t.id).await),
        ended
    );
    assert_eq!(docked(&app, c, c.b).await, [("pb-001".to_owned(), 1)]);
    assert!(anomalies(&app, c, s.bridge).await.is_empty());

    // A powerbank the tenant does not know is docked where it was put, and kept as an anomaly; one put into a slot
    // the cloud has taken changes nothing but is kept too.
    let stranger = Event::CabinetReturned {
        slot: 3,
        asset: "pb-777".into(),
    };
    report(&mut ws, 6, c.a, now, stranger).await.unwrap();
    assert_eq!(
        docked(&app, c, c.a).await,
        [("pb-002".to_owned(), 2), ("pb-777".to_owned(), 3)]
    );
    let crowded = Event::CabinetReturned {
        slot: 2,
        asset: "pb-888".into(),
    };
    report(&mut ws, 7, c.a, now, crowded).await.unwrap();
    assert_eq!(
        anomalies(&app, c, s.bridge).await,
        ["slot_occupied", "unknown_asset"]
    );

    // Slot states: a newer report is kept, an older one that arrives late is not.
    let state = |battery: i32| Event::CabinetState {
        slots: vec![SlotState {
            slot: 2,
            asset: Some("pb-002".into()),
            battery: Some(battery),
            charging: true,
            fault: None,
        }],
    };
    report(&mut ws, 8, c.a, now, state(70)).await.unwrap();
    report(
        &mut ws,
        9,
        c.a,
        now - chrono::Duration::seconds(30),
        state(20),
    )
    .await
    .unwrap();
    assert_eq!(
        slots(&app, c, c.a).await[1],
        (2, json!("pb-002"), json!(70), Value::Null)
    );
    let slot_events = count(
        &app,
        c.t.id,
        "select count(*) from live_event where tenant_id = $1 and station_id = $2 and kind = 'station.slot'",
        c.a,
    )
    .await;
    assert_eq!(slot_events, 1);
}

#[tokio::test]
async fn another_tenants_cabinets_commands_and_powerbanks_are_not_found_through_a_bridge() {
    let app = spawn_app().await;
    let mine = site(&app).await;
    let theirs = site(&app).await;
    // Their cabinet rents only with their bridge connected.
    let _their_tunnel = tunnel(&app, &theirs.token).await;
    let (rented, _) = rent(&app, &theirs.c, theirs.c.a, "theirs-1").await;
    let their_command = eject_command(&app, theirs.c.t.id, rented).await;
    let their_asset: Uuid =
        sqlx::query_scalar("select id from asset where tenant_id = $1 and label = 'pb-002'")
            .bind(theirs.c.t.id)
            .fetch_one(&mut *app.tenant_tx(theirs.c.t.id).await)
            .await
            .unwrap();
    let before = (
        wallet(&app, &theirs.c).await,
        footprint(&app, theirs.c.t.id).await,
    );

    let mut ws = tunnel(&app, &mine.token).await;
    let now = chrono::Utc::now();
    // Their cabinet is not a station of this bridge's venue.
    let returned = Event::CabinetReturned {
        slot: 1,
        asset: "pb-001".into(),
    };
    assert_eq!(
        report(&mut ws, 1, theirs.c.a, now, returned.clone()).await,
        Err("unknown_station".to_owned())
    );
    // Their eject command is unknown here; their powerbank's label names nothing of this tenant's.
    let failed = Event::CabinetEjected {
        request_id: their_command,
        ok: false,
        slot: 1,
        asset: Some("pb-001".into()),
        reason: Some("jammed".into()),
    };
    report(&mut ws, 2, mine.c.a, now, failed).await.unwrap();
    report(&mut ws, 3, mine.c.b, now, returned).await.unwrap();
    assert_eq!(
        anomalies(&app, &mine.c, mine.bridge).await,
        ["asset_out_of_place", "unknown_eject"],
        "the label names this tenant's own pb-001 (docked in A), never the other tenant's rented one"
    );
    assert_eq!(
        docked(&app, &mine.c, mine.c.b).await,
        [("pb-001".to_owned(), 1)]
    );
    assert_eq!(rental(&app, &theirs.c, rented).await["status"], "ACTIVE");
    assert_eq!(
        (
            wallet(&app, &theirs.c).await,
            footprint(&app, theirs.c.t.id).await
        ),
        before
    );
    // Their cabinet and powerbank answer not found to this tenant.
    for (query, id) in [
        ("query($i: UUID!) { station(id: $i) { id } }", theirs.c.a),
        (
            "query($i: UUID!) { assets(stationId: $i) { id } }",
            theirs.c.a,
        ),
    ] {
        let body = app
            .gql(Some(&mine.c.t.access), query, json!({"i": id}))
            .await;
        assert_eq!(switchyard_tests::gql_code(&body), "not_found", "{body}");
    }
    let (status, _) = app
        .get(&format!("/api/v1/rentals/{rented}"), &mine.c.t.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let asset_seen = count(
        &app,
        mine.c.t.id,
        "select count(*) from asset where tenant_id = $1 and id = $2",
        their_asset,
    )
    .await;
    assert_eq!(asset_seen, 0);
}

#[tokio::test]
async fn an_eject_no_cabinet_answers_is_reported_failed_by_the_bridge_and_the_rental_voided() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    // No simulator for this cabinet: nobody answers on its topics.
    app.gql_ok(
        &c.t.access,
        "mutation($s: UUID!, $i: UpdateStationInput!) { updateStation(id: $s, input: $i) { control } }",
        json!({"s": c.a, "i": {"controlSettings": {"cabinet_id": s.cabinet_a, "eject_timeout_secs": 1}}}),
    )
    .await;
    let (_bridge, journal) = bridge(&app, &s);
    wait_until("the bridge is online", || async {
        let data = app
            .gql_ok(&c.t.access, "{ bridges { online } }", json!({}))
            .await;
        data["bridges"][0]["online"] == true
    })
    .await;
    let reason = voided_eject_reason(&app, c, "eject-unanswered").await;
    assert_eq!(reason, "timeout");
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(
        docked(&app, c, c.a).await,
        [("pb-001".to_owned(), 1), ("pb-002".to_owned(), 2)]
    );
    let _ = std::fs::remove_file(&journal);
}

/// An eject asked for while the venue's MQTT broker is away fails at once (`unreachable`), however long the cabinet's
/// wait: it is not left in the bridge's MQTT client to go out whenever the broker is back, maybe after the rental
/// was voided, handing a powerbank to nobody.
#[tokio::test]
async fn an_eject_while_the_broker_is_away_fails_at_once_instead_of_waiting_in_the_client() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    app.gql_ok(
        &c.t.access,
        "mutation($s: UUID!, $i: UpdateStationInput!) { updateStation(id: $s, input: $i) { control } }",
        json!({"s": c.a, "i": {"controlSettings": {"cabinet_id": s.cabinet_a, "eject_timeout_secs": 600}}}),
    )
    .await;
    // A port nothing listens on: the broker is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let (_bridge, journal) = bridge_on(&app, &s, format!("mqtt://127.0.0.1:{port}"));
    wait_until("the bridge is online", || async {
        let data = app
            .gql_ok(&c.t.access, "{ bridges { online } }", json!({}))
            .await;
        data["bridges"][0]["online"] == true
    })
    .await;
    let reason = voided_eject_reason(&app, c, "eject-no-broker").await;
    assert_eq!(reason, "unreachable");
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );
    let _ = std::fs::remove_file(&journal);
}

/// Rents from cabinet A under `key`, waits until the rental is voided by a failed eject, and returns the reason the
/// bridge reported (`cabinet_ejected`).
async fn voided_eject_reason(app: &TestApp, c: &Cabinets, key: &str) -> Value {
    let (id, _) = rent(app, c, c.a, key).await;
    wait_until("the rental is voided", || async {
        rental(app, c, id).await["status"] == "FAILED"
    })
    .await;
    sqlx::query_scalar(
        "select body->'reason' from bridge_event where tenant_id = $1 and station_id = $2 and kind = 'cabinet_ejected'",
    )
    .bind(c.t.id)
    .bind(c.a)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap()
}

/// A rental quoted at cabinet A whose start is refused (`409`, a message saying `why` and to try again) with nothing
/// taken: the start's body, for the same quote to be tried again.
async fn start_refused(app: &TestApp, c: &Cabinets, key: &str, why: &str) -> Value {
    let before = (wallet(app, c).await, footprint(app, c.t.id).await);
    let quote = crate::rentals::quote(app, c, c.a).await;
    let start = json!({"quote_id": quote["quote_id"]});
    let (status, refused) = post(
        app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some(key),
        start.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(why) && message.contains("try again"),
        "{message}"
    );
    assert_eq!((wallet(app, c).await, footprint(app, c.t.id).await), before);
    start
}

/// A cabinet that goes away (its controller killed: the broker publishes its last will) shows offline and rents
/// nothing, a quote kept; back, it is online and the same quote rents.
#[tokio::test]
async fn a_cabinet_that_goes_away_shows_offline_and_rents_nothing_until_it_is_back() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let sim = simulator(&s, 0.0).await;
    let (_bridge, journal) = bridge(&app, &s);
    let presence = |want: (&'static str, Option<bool>)| {
        let app = &app;
        let station = c.a;
        async move {
            let got: (String, Option<bool>) =
                sqlx::query_as("select status::text, device_reachable from station where id = $1")
                    .bind(station)
                    .fetch_one(&app.owner)
                    .await
                    .unwrap();
            (got.0.as_str(), got.1) == want
        }
    };
    wait_until("cabinet A says it is online", || {
        presence(("online", Some(true)))
    })
    .await;

    // Killed without a goodbye: offline, heard as the station's device state.
    drop(sim);
    wait_until("cabinet A is gone", || presence(("offline", Some(false)))).await;
    let status = app
        .gql_ok(
            &c.t.access,
            "query($s: UUID!) { station(id: $s) { status } }",
            json!({"s": c.a}),
        )
        .await;
    assert_eq!(status["station"]["status"], "OFFLINE", "{status}");
    let start = start_refused(&app, c, "gone-1", "cabinet is not answering").await;
    assert_eq!(ejects(&app, c, c.a).await, 0);

    // Back: online, and the same quote rents its powerbank.
    let _sim = simulator(&s, 0.0).await;
    wait_until("cabinet A is back", || presence(("online", Some(true)))).await;
    let (code, started) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("gone-2"),
        start,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{started}");
    wait_until("the cabinet ejects it", || async {
        ejects(&app, c, c.a).await == 1
    })
    .await;
    let _ = std::fs::remove_file(&journal);
}

/// A cabinet whose venue's bridge is not connected cannot eject: renting there is refused with a reason a patron can
/// act on, and nothing is taken (the quote stays usable). An eject the bridge never took (it dropped right after
/// the start and came back later) is not sent once its deadline has passed: the rental is voided, the powerbank
/// stays docked and everything the patron paid comes back.
#[tokio::test]
async fn a_cabinet_whose_bridge_is_away_rents_nothing_and_an_eject_past_its_deadline_voids_the_rental_unsent(
) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let start = start_refused(&app, c, "away-1", "cabinet is offline").await;
    assert_eq!(
        docked(&app, c, c.a).await,
        [("pb-001".to_owned(), 1), ("pb-002".to_owned(), 2)]
    );

    // With the bridge connected the same quote rents; the tunnel takes the eject.
    let mut ws = tunnel(&app, &s.token).await;
    let (status, started) = post(
        &app,
        &c.t.access,
        "/api/v1/rentals/start",
        Some("away-2"),
        start,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let rented: Uuid = started["rental_id"].as_str().unwrap().parse().unwrap();
    let eject = eject_command(&app, c.t.id, rented).await;
    loop {
        if let Down::Command { id, .. } = next_down(&mut ws).await {
            assert_eq!(id, eject);
            break;
        }
    }
    drop(ws);
    // Once the server has seen that tunnel end, nothing else can take the eject behind the test's back.
    tunnel_gone(&app, &s).await;
    // Written at a bridge-driven cabinet, the eject has its deadline.
    let deadline = |command: Uuid| {
        let app = &app;
        async move {
            let deadline: Option<f64> = sqlx::query_scalar(
                "select extract(epoch from deadline_at - created_at)::float8 from device_command
                 where tenant_id = $1 and id = $2",
            )
            .bind(c.t.id)
            .bind(command)
            .fetch_one(&mut *app.tenant_tx(c.t.id).await)
            .await
            .unwrap();
            deadline.map(|secs| secs.round() as i64)
        }
    };
    assert_eq!(
        deadline(eject).await,
        Some(switchyard_core::rentals::EJECT_DEADLINE_SECS)
    );
    let age = |delivered: bool| {
        let app = &app;
        async move {
            let mut tx = app.tenant_tx(c.t.id).await;
            sqlx::query(
                "update device_command set delivered_at = case when $4 then delivered_at end,
                        created_at = now() - make_interval(secs => $3),
                        deadline_at = now() - interval '1 second'
                 where tenant_id = $1 and id = $2",
            )
            .bind(c.t.id)
            .bind(eject)
            .bind(switchyard_core::rentals::EJECT_DEADLINE_SECS as f64 + 1.0)
            .bind(delivered)
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    // Taken but never acknowledged, and past the deadline: not sent again (the bridge's own report decides).
    let quiet = |ws: Socket| async move {
        let mut ws = ws;
        let sent = crate::edge::commands_until_heartbeat_ack(&mut ws).await;
        assert_eq!(sent, vec![], "the overdue eject was sent");
        ws
    };
    let db = switchyard_tests::app_db(2);
    let pass = || async {
        switchyard_workers::ejects::run_once(&db, 100)
            .await
            .unwrap()
    };
    age(true).await;
    let ws = quiet(tunnel(&app, &s.token).await).await;
    pass().await;
    assert_eq!(rental(&app, c, rented).await["status"], "ACTIVE");
    drop(ws);
    tunnel_gone(&app, &s).await;
    // As if the bridge had dropped before taking it: past the deadline no tunnel takes it (the rental still
    // running until the workers look) ...
    age(false).await;
    let ws = quiet(tunnel(&app, &s.token).await).await;
    assert_eq!(rental(&app, c, rented).await["status"], "ACTIVE");
    drop(ws);
    tunnel_gone(&app, &s).await;
    // ... and the workers' pass voids the rental, whatever the bridge does.
    pass().await;
    assert_eq!(rental(&app, c, rented).await["status"], "FAILED");
    // Voided once: a second pass (another worker, a retry) finds nothing left to void.
    let voided = (wallet(&app, c).await, footprint(&app, c.t.id).await);
    pass().await;
    assert_eq!(
        (wallet(&app, c).await, footprint(&app, c.t.id).await),
        voided
    );
    let (result, acked): (Option<String>, bool) = sqlx::query_as(
        "select result, acked_at is not null from device_command where tenant_id = $1 and id = $2",
    )
    .bind(c.t.id)
    .bind(eject)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!((result.as_deref(), acked), (Some("expired"), true));
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(
        docked(&app, c, c.a).await,
        [("pb-001".to_owned(), 1), ("pb-002".to_owned(), 2)]
    );

    // A manual cabinet's eject is only a record: it has no deadline, and making the station bridge-driven later
    // does not give it one.
    let control = |to: &'static str| {
        let app = &app;
        async move {
            app.gql_ok(
                &c.t.access,
                "mutation($s: UUID!, $i: UpdateStationInput!) { updateStation(id: $s, input: $i) { control } }",
                json!({"s": c.a, "i": {"control": to}}),
            )
            .await;
        }
    };
    control("MANUAL").await;
    let (manual, _) = rent(&app, c, c.a, "away-manual").await;
    let eject = eject_command(&app, c.t.id, manual).await;
    assert_eq!(deadline(eject).await, None);
    let mut tx = app.tenant_tx(c.t.id).await;
    sqlx::query("update device_command set created_at = now() - interval '1 hour' where tenant_id = $1 and id = $2")
        .bind(c.t.id)
        .bind(eject)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    control("CABINET").await;
    pass().await;
    assert_eq!(rental(&app, c, manual).await["status"], "ACTIVE");
}

const UNANSWERED: &str =
    "query($v: UUID) { unansweredEjects(venueId: $v) { commandId rentalId stationId venueId
    patronId slot assetLabel createdAt takenAt deadlineAt } }";
const SETTLE: &str =
    "mutation($c: UUID!, $f: EjectFinding!) { settleEject(commandId: $c, finding: $f) {
    id status } }";

/// The ejects waiting for staff that `token` sees (of one venue, if given).
async fn unanswered(app: &TestApp, token: &str, venue: Option<Uuid>) -> Vec<Value> {
    app.gql_ok(token, UNANSWERED, json!({ "v": venue })).await["unansweredEjects"]
        .as_array()
        .unwrap()
        .clone()
}

/// `settleEject` as `token`: the whole GraphQL answer.
async fn settle(app: &TestApp, token: &str, command: Uuid, finding: &str) -> Value {
    app.gql(Some(token), SETTLE, json!({"c": command, "f": finding}))
        .await
}

/// A refusal's code and message.
fn refusal(answer: &Value) -> (String, String) {
    assert!(answer["data"].is_null(), "not refused: {answer}");
    (
        switchyard_tests::gql_code(answer).to_owned(),
        answer["errors"][0]["message"].as_str().unwrap().to_owned(),
    )
}

/// An eject's delivery and answer as `Session.deviceCommands` shows it.
async fn eject_shown(app: &TestApp, c: &Cabinets, rental: Uuid) -> Value {
    let commands = app
        .gql_ok(
            &c.t.access,
            "query($s: UUID!) { session(id: $s) { deviceCommands { command deliveredAt acknowledgedAt result
               deadlineAt answeredAt outcome } } }",
            json!({"s": rental}),
        )
        .await["session"]["deviceCommands"]
        .clone();
    commands
        .as_array()
        .unwrap()
        .iter()
        .find(|cmd| cmd["command"] == "eject")
        .cloned()
        .unwrap()
}

/// Puts the ejects past their deadline, as the clock would two minutes on.
async fn overdue(app: &TestApp, tenant: Uuid, ejects: &[Uuid]) {
    let mut tx = app.tenant_tx(tenant).await;
    sqlx::query(
        "update device_command set deadline_at = now() - interval '1 second' where tenant_id = $1 and id = any($2)",
    )
    .bind(tenant)
    .bind(ejects)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Waits until the server has seen the site's tunnel go.
async fn tunnel_gone(app: &TestApp, s: &Site) {
    wait_until("the tunnel is seen gone", || async {
        let online: bool =
            sqlx::query_scalar("select online from bridge where tenant_id = $1 and id = $2")
                .bind(s.c.t.id)
                .bind(s.bridge)
                .fetch_one(&mut *app.tenant_tx(s.c.t.id).await)
                .await
                .unwrap();
        !online
    })
    .await;
}

/// Takes commands from a tunnel until it has as many as `expected`, and checks they are those (in any order).
async fn assert_taken(ws: &mut Socket, expected: &[Uuid]) {
    let mut taken = vec![];
    while taken.len() < expected.len() {
        if let Down::Command { id, .. } = next_down(ws).await {
            taken.push(id);
        }
    }
    taken.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(taken, expected);
}

/// An eject a tunnel took that nothing answered — the API process died with it, or the bridge passed it on and went
/// down before the cabinet's answer — is not guessed at: past its deadline it waits for staff, who look at the
/// cabinet and settle it: the powerbank still in its slot voids the rental (everything given back), gone keeps it
/// running. A retry, two managers at once, staff without the manager role, a manager of another venue and another
/// tenant each get what they should; the cabinet's report, should it come later, still counts.
#[tokio::test]
async fn an_eject_taken_and_never_answered_waits_for_staff_who_settle_it_by_what_the_cabinet_shows()
{
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let before = wallet(&app, c).await;
    let mut ws = tunnel(&app, &s.token).await;
    let (kept, kept_powerbank) = rent(&app, c, c.a, "unanswered-1").await;
    let (voided, voided_powerbank) = rent(&app, c, c.a, "unanswered-2").await;
    assert_eq!(
        (kept_powerbank.as_str(), voided_powerbank.as_str()),
        ("pb-001", "pb-002")
    );
    let ejects = [
        eject_command(&app, c.t.id, kept).await,
        eject_command(&app, c.t.id, voided).await,
    ];
    assert_taken(&mut ws, &ejects).await;
    // The bridge passes the first on to its cabinet (and says so); then the tunnel goes, no answer having come.
    ws.send(Message::text(encode(&Up::CommandDone {
        id: ejects[0],
        ok: true,
        detail: None,
    })))
    .await
    .unwrap();
    wait_until("the eject is acknowledged", || async {
        eject_shown(&app, c, kept).await["acknowledgedAt"].is_string()
    })
    .await;
    drop(ws);
    tunnel_gone(&app, &s).await;

    // Within the deadline the cabinet may still answer: nothing waits for staff, and nothing can be settled.
    assert_eq!(
        unanswered(&app, &c.t.access, None).await,
        Vec::<Value>::new()
    );
    let (code, message) = refusal(&settle(&app, &c.t.access, ejects[1], "NOT_EJECTED").await);
    assert_eq!(code, "conflict");
    assert!(message.contains("once its deadline"), "{message}");
    assert_eq!(rental(&app, c, voided).await["status"], "ACTIVE");

    overdue(&app, c.t.id, &ejects).await;
    let waiting = unanswered(&app, &c.t.access, None).await;
    assert_eq!(
        waiting
            .iter()
            .map(|e| e["commandId"].clone())
            .collect::<Vec<_>>(),
        [json!(ejects[0]), json!(ejects[1])],
        "{waiting:?}"
    );
    let second = &waiting[1];
    assert_eq!(second["rentalId"], json!(voided));
    assert_eq!(second["stationId"], json!(c.a));
    assert_eq!(second["venueId"], json!(c.venue));
    assert_eq!(second["patronId"], json!(c.patron));
    assert_eq!(
        (second["slot"].clone(), second["assetLabel"].clone()),
        (json!(2), json!("pb-002"))
    );
    for at in ["createdAt", "takenAt", "deadlineAt"] {
        assert!(second[at].is_string(), "{at}: {second}");
    }
    assert_eq!(unanswered(&app, &c.t.access, Some(c.venue)).await, waiting);
    let unknown = app
        .gql(
            Some(&c.t.access),
            UNANSWERED,
            json!({ "v": Uuid::new_v4() }),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&unknown),
        "not_found",
        "{unknown}"
    );

    // Another tenant sees none of it, and its settle is answered as for an id nobody has.
    let other = app.signup().await;
    assert_eq!(
        unanswered(&app, &other.access, None).await,
        Vec::<Value>::new()
    );
    let unknown = refusal(&settle(&app, &other.access, Uuid::new_v4(), "NOT_EJECTED").await);
    assert_eq!(unknown.0, "not_found");
    assert_eq!(
        refusal(&settle(&app, &other.access, ejects[1], "NOT_EJECTED").await),
        unknown
    );
    // Staff without the manager role see them but cannot settle; a manager of another venue neither sees nor settles.
    let (_, staff) = app.add_member(&c.t, "STAFF").await;
    assert_eq!(unanswered(&app, &staff, None).await.len(), 2);
    let (code, _) = refusal(&settle(&app, &staff, ejects[1], "NOT_EJECTED").await);
    assert_eq!(code, "forbidden");
    let hall = app.create_venue(&c.t.access, "Hall").await;
    let (scoped, elsewhere) = app.add_member(&c.t, "MANAGER").await;
    app.gql_ok(
        &c.t.access,
        "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
        json!({"u": scoped, "v": [hall]}),
    )
    .await;
    assert_eq!(
        unanswered(&app, &elsewhere, None).await,
        Vec::<Value>::new()
    );
    assert_eq!(
        refusal(&settle(&app, &elsewhere, ejects[1], "NOT_EJECTED").await),
        unknown
    );
    assert_eq!(rental(&app, c, voided).await["status"], "ACTIVE");

    // Still in its slot: the owner and a manager settle it at once; the rental is voided once and both see it so.
    let (_, manager) = app.add_member(&c.t, "MANAGER").await;
    let (a, b) = tokio::join!(
        settle(&app, &c.t.access, ejects[1], "NOT_EJECTED"),
        settle(&app, &manager, ejects[1], "NOT_EJECTED")
    );
    for answer in [&a, &b] {
        assert_eq!(
            answer["data"]["settleEject"],
            json!({"id": voided, "status": "FAILED"}),
            "{answer}"
        );
    }
    let after_void = (wallet(&app, c).await, footprint(&app, c.t.id).await);
    let retried = settle(&app, &c.t.access, ejects[1], "NOT_EJECTED").await;
    assert_eq!(
        retried["data"]["settleEject"]["status"], "FAILED",
        "{retried}"
    );
    assert_eq!(
        (wallet(&app, c).await, footprint(&app, c.t.id).await),
        after_void
    );
    let (code, message) = refusal(&settle(&app, &c.t.access, ejects[1], "EJECTED").await);
    assert_eq!(code, "conflict");
    assert!(
        message.contains("already settled: staff found the powerbank still in its slot"),
        "{message}"
    );
    // The powerbank is docked where it was and that rental's deposit is back; the other rental still holds one.
    assert_eq!(docked(&app, c, c.a).await, [("pb-002".to_owned(), 2)]);
    assert_eq!(
        wallet(&app, c).await,
        json!({"balance": 1_000 - 500, "depositHeld": 500, "debt": 0})
    );
    let settled = count(
        &app,
        c.t.id,
        "select count(*) from audit_log where tenant_id = $1 and action = 'rental.eject_settled' and object_id = $2",
        voided,
    )
    .await;
    assert_eq!(settled, 1);

    // Gone from its slot: the rental goes on, and the eject shows how it was answered.
    let answer = settle(&app, &c.t.access, ejects[0], "EJECTED").await;
    assert_eq!(
        answer["data"]["settleEject"],
        json!({"id": kept, "status": "ACTIVE"}),
        "{answer}"
    );
    assert_eq!(
        unanswered(&app, &c.t.access, None).await,
        Vec::<Value>::new()
    );
    let shown = eject_shown(&app, c, kept).await;
    assert_eq!(
        (shown["result"].clone(), shown["outcome"].clone()),
        (json!("ok"), json!("staff_ejected"))
    );
    for at in ["deliveredAt", "acknowledgedAt", "deadlineAt", "answeredAt"] {
        assert!(shown[at].is_string(), "{at}: {shown}");
    }

    // The bridge comes back with its journal, and the cabinets' word counts over staff's: the eject thought made
    // had failed (that rental is voided too), and the one thought not made was made after all (a powerbank out with
    // nobody paying: an anomaly for staff to follow up). Both ejects now show the cabinet's answer.
    let mut ws = tunnel(&app, &s.token).await;
    let now = chrono::Utc::now();
    for (seq, request_id, ok, slot, asset) in [
        (1, ejects[0], false, 1, "pb-001"),
        (2, ejects[1], true, 2, "pb-002"),
    ] {
        let says = Event::CabinetEjected {
            request_id,
            ok,
            slot,
            asset: Some(asset.to_owned()),
            reason: (!ok).then(|| "jammed".to_owned()),
        };
        assert_eq!(report(&mut ws, seq, c.a, now, says).await, Ok(()));
    }
    assert_eq!(rental(&app, c, kept).await["status"], "FAILED");
    assert_eq!(rental(&app, c, voided).await["status"], "FAILED");
    assert_eq!(eject_shown(&app, c, kept).await["outcome"], "not_ejected");
    assert_eq!(eject_shown(&app, c, voided).await["outcome"], "ejected");
    assert_eq!(anomalies(&app, c, s.bridge).await, ["eject_after_void"]);
    assert_eq!(wallet(&app, c).await, before);
}

/// What the tenant's announcements of unanswered ejects left: the live events as (subject, command, cabinet, slot,
/// powerbank) in order, and the messages as (event key, channel, recipient, cabinet, slot, powerbank) by recipient.
#[allow(clippy::type_complexity)]
async fn announcements(
    app: &TestApp,
    tenant: Uuid,
) -> (
    Vec<(Uuid, Value, Value, Value, Value)>,
    Vec<(String, String, String, Value, Value, Value)>,
) {
    let mut tx = app.tenant_tx(tenant).await;
    let events: Vec<(Uuid, Value)> = sqlx::query_as(
        "select subject_id, data from live_event where tenant_id = $1 and kind = 'rental.eject_unanswered'
          order by seq",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let mut messages: Vec<(String, String, String, Value)> = sqlx::query_as(
        "select event_key, channel, recipient, data from notification
          where tenant_id = $1 and kind = 'eject_unanswered'",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    messages.sort_by(|a, b| (&a.2, &a.1).cmp(&(&b.2, &b.1)));
    (
        events
            .into_iter()
            .map(|(s, d)| {
                (
                    s,
                    d["command_id"].clone(),
                    d["cabinet"].clone(),
                    d["slot"].clone(),
                    d["asset"].clone(),
                )
            })
            .collect(),
        messages
            .into_iter()
            .map(|(k, c, r, d)| {
                (
                    k,
                    c,
                    r,
                    d["cabinet"].clone(),
                    d["slot"].clone(),
                    d["powerbank"].clone(),
                )
            })
            .collect(),
    )
}

/// An eject that comes to wait for staff is announced by the workers once its deadline passes: a live event for the
/// venue's members (the console's rentals screen reloads on it, staff apps hear it on `staffAlerts`; its answer is
/// announced when it comes) and a message to the venue's owners and managers —
/// not to staff, nor to a manager of another venue. Once: two workers at once, a later pass and a pass after staff
/// settled it add nothing; an eject the cabinet answered and one still within its deadline are not announced (nor, in
/// the test after this one, those nothing else may settle); each tenant's announcement stays in that tenant.
#[tokio::test]
async fn an_eject_that_comes_to_wait_for_staff_is_announced_once_to_the_venues_owners_and_managers()
{
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let (_, manager, _) = app.add_member_login(&c.t, "MANAGER").await;
    app.add_member(&c.t, "STAFF").await;
    let hall = app.create_venue(&c.t.access, "Hall").await;
    let (elsewhere, _, _) = app.add_member_login(&c.t, "MANAGER").await;
    app.gql_ok(
        &c.t.access,
        "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
        json!({"u": elsewhere, "v": [hall]}),
    )
    .await;
    // Two ejects taken: the cabinet answers the second (the powerbank came out), then the tunnel goes.
    let mut ws = tunnel(&app, &s.token).await;
    let (waiting, _) = rent(&app, c, c.a, "alert-1").await;
    let (answered, _) = rent(&app, c, c.a, "alert-2").await;
    let (eject, answered_eject) = (
        eject_command(&app, c.t.id, waiting).await,
        eject_command(&app, c.t.id, answered).await,
    );
    assert_taken(&mut ws, &[eject, answered_eject]).await;
    let says = Event::CabinetEjected {
        request_id: answered_eject,
        ok: true,
        slot: 2,
        asset: Some("pb-002".to_owned()),
        reason: None,
    };
    assert_eq!(
        report(&mut ws, 1, c.a, chrono::Utc::now(), says).await,
        Ok(())
    );
    drop(ws);
    tunnel_gone(&app, &s).await;
    // Another tenant has one waiting too.
    let other = site(&app).await;
    let mut ws = tunnel(&app, &other.token).await;
    let (other_rental, _) = rent(&app, &other.c, other.c.a, "alert-other").await;
    let other_eject = eject_command(&app, other.c.t.id, other_rental).await;
    assert_taken(&mut ws, &[other_eject]).await;
    drop(ws);
    tunnel_gone(&app, &other).await;

    let db = switchyard_tests::app_db(4);
    let pass = || async {
        switchyard_workers::ejects::alert_once(&db, 100)
            .await
            .unwrap()
    };
    pass().await;
    let nothing = (vec![], vec![]);
    assert_eq!(announcements(&app, c.t.id).await, nothing);

    overdue(&app, c.t.id, &[eject, answered_eject]).await;
    overdue(&app, other.c.t.id, &[other_eject]).await;
    tokio::join!(pass(), pass());
    pass().await;

    let key = format!("eject:{eject}:unanswered");
    let mut told = vec![
        (
            key.clone(),
            "email".to_owned(),
            c.t.email.clone(),
            json!("Cabinet A"),
            json!(1),
            json!("pb-001"),
        ),
        (
            key.clone(),
            "email".to_owned(),
            // Logins' emails are kept in lower case.
            manager.to_lowercase(),
            json!("Cabinet A"),
            json!(1),
            json!("pb-001"),
        ),
    ];
    told.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(
        announcements(&app, c.t.id).await,
        (
            vec![(
                waiting,
                json!(eject),
                json!("Cabinet A"),
                json!(1),
                json!("pb-001")
            )],
            told.clone()
        )
    );
    let alerted: Vec<(Uuid, bool)> = sqlx::query_as(
        "select id, alerted_at is not null from device_command where tenant_id = $1 and id = any($2) order by id",
    )
    .bind(c.t.id)
    .bind([eject, answered_eject])
    .fetch_all(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    let mut expected = vec![(eject, true), (answered_eject, false)];
    expected.sort();
    assert_eq!(alerted, expected);
    // The other tenant's eject was announced in that tenant, to its owner alone.
    let other_key = format!("eject:{other_eject}:unanswered");
    assert_eq!(
        announcements(&app, other.c.t.id).await,
        (
            vec![(
                other_rental,
                json!(other_eject),
                json!("Cabinet A"),
                json!(1),
                json!("pb-001")
            )],
            vec![(
                other_key,
                "email".to_owned(),
                other.c.t.email.clone(),
                json!("Cabinet A"),
                json!(1),
                json!("pb-001")
            )]
        )
    );
    // Settled by staff, it is no longer waiting: its answer is announced (the alerts of it go), and passes after it
    // add nothing. The eject the cabinet answered before any alert announced no answer.
    let answer = settle(&app, &c.t.access, eject, "EJECTED").await;
    assert_eq!(
        answer["data"]["settleEject"]["status"], "ACTIVE",
        "{answer}"
    );
    let answers: Vec<(Uuid, Value)> = sqlx::query_as(
        "select subject_id, data from live_event where tenant_id = $1 and kind = 'rental.eject_answered'",
    )
    .bind(c.t.id)
    .fetch_all(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        answers,
        [(
            waiting,
            json!({"command_id": eject, "rental_id": waiting, "outcome": "staff_ejected"})
        )]
    );
    pass().await;
    assert_eq!(
        announcements(&app, c.t.id).await,
        (
            vec![(
                waiting,
                json!(eject),
                json!("Cabinet A"),
                json!(1),
                json!("pb-001")
            )],
            told
        )
    );
}

/// Only an eject nothing else can settle is settled by hand: one the cabinet answered, one no bridge took (the
/// workers void those), one of a manual cabinet and one whose rental has ended are neither listed, settled nor
/// announced, each refusal saying why.
#[tokio::test]
async fn an_eject_is_settled_by_hand_only_when_nothing_else_can_settle_it() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    // Two more powerbanks for the two rentals after the first two, and the deposits for all four.
    for (slot, label) in [(3, "pb-003"), (4, "pb-004")] {
        app.gql_ok(
            &c.t.access,
            "mutation($s: UUID!, $n: Int!, $l: String!) { dockAsset(stationId: $s, slot: $n, label: $l) { label } }",
            json!({"s": c.a, "n": slot, "l": label}),
        )
        .await;
    }
    app.gql_ok(
        &c.t.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 1000, idempotencyKey: \"more\") { id } }",
        json!({"p": c.patron, "v": c.venue}),
    )
    .await;
    let mut ws = tunnel(&app, &s.token).await;
    let (answered, _) = rent(&app, c, c.a, "by-hand-1").await;
    let (returned, _) = rent(&app, c, c.a, "by-hand-2").await;
    let ejects = [
        eject_command(&app, c.t.id, answered).await,
        eject_command(&app, c.t.id, returned).await,
    ];
    assert_taken(&mut ws, &ejects).await;
    // The cabinet answers the first; the second's powerbank comes back to cabinet B while nobody answered its eject.
    let now = chrono::Utc::now();
    let ejected = Event::CabinetEjected {
        request_id: ejects[0],
        ok: true,
        slot: 1,
        asset: Some("pb-001".into()),
        reason: None,
    };
    assert_eq!(report(&mut ws, 1, c.a, now, ejected).await, Ok(()));
    let back = Event::CabinetReturned {
        slot: 1,
        asset: "pb-002".into(),
    };
    assert_eq!(report(&mut ws, 2, c.b, now, back).await, Ok(()));
    assert_eq!(rental(&app, c, returned).await["status"], "FINISHED");
    drop(ws);
    tunnel_gone(&app, &s).await;

    // Then one no bridge takes: the tunnel that was there when it started went before taking it.
    let ws = tunnel(&app, &s.token).await;
    let (untaken, _) = rent(&app, c, c.a, "by-hand-3").await;
    drop(ws);
    tunnel_gone(&app, &s).await;
    let untaken_eject = eject_command(&app, c.t.id, untaken).await;
    let mut tx = app.tenant_tx(c.t.id).await;
    sqlx::query("update device_command set delivered_at = null where tenant_id = $1 and id = $2")
        .bind(c.t.id)
        .bind(untaken_eject)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    overdue(&app, c.t.id, &[ejects[0], ejects[1], untaken_eject]).await;
    assert_eq!(
        unanswered(&app, &c.t.access, None).await,
        Vec::<Value>::new()
    );

    let refused = |command: Uuid| {
        let app = &app;
        async move { refusal(&settle(app, &c.t.access, command, "NOT_EJECTED").await) }
    };
    let (code, message) = refused(ejects[0]).await;
    assert_eq!(code, "conflict");
    assert!(
        message.contains("already settled: the cabinet reported the powerbank ejected"),
        "{message}"
    );
    assert_eq!(rental(&app, c, answered).await["status"], "ACTIVE");
    let (code, message) = refused(ejects[1]).await;
    assert_eq!(code, "conflict");
    assert!(message.contains("already ended"), "{message}");
    let (code, message) = refused(untaken_eject).await;
    assert_eq!(code, "conflict");
    assert!(message.contains("the workers void the rental"), "{message}");
    assert_eq!(rental(&app, c, untaken).await["status"], "ACTIVE");

    // A manual cabinet's eject is only a record.
    app.gql_ok(
        &c.t.access,
        "mutation($s: UUID!, $i: UpdateStationInput!) { updateStation(id: $s, input: $i) { control } }",
        json!({"s": c.a, "i": {"control": "MANUAL"}}),
    )
    .await;
    let (manual, _) = rent(&app, c, c.a, "by-hand-manual").await;
    let (code, message) = refused(eject_command(&app, c.t.id, manual).await).await;
    assert_eq!(code, "conflict");
    assert!(message.contains("run by hand"), "{message}");
    assert_eq!(rental(&app, c, manual).await["status"], "ACTIVE");

    // Nor is any of them announced as waiting for staff.
    let db = switchyard_tests::app_db(2);
    switchyard_workers::ejects::alert_once(&db, 100)
        .await
        .unwrap();
    assert_eq!(announcements(&app, c.t.id).await, (vec![], vec![]));
}

/// A return reported while something else holds the rental (a staff settle or stop in progress, which go on to take
/// a slot) waits for it rather than taking the slot first: the other transaction gets the slot, and the return goes
/// through after it. Taking the slot first deadlocked the two, and Postgres undid one of them.
#[tokio::test]
async fn a_return_reported_while_the_rental_is_held_waits_instead_of_deadlocking() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let c = &s.c;
    let mut ws = tunnel(&app, &s.token).await;
    let (rented, powerbank) = rent(&app, c, c.a, "held-1").await;
    assert_eq!(powerbank, "pb-001");

    // Another transaction holds the rental, as a settle or a stop does before it takes a slot.
    let mut holder = app.tenant_tx(c.t.id).await;
    let holder_pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    sqlx::query("select id from session where tenant_id = $1 and id = $2 for update")
        .bind(c.t.id)
        .bind(rented)
        .execute(&mut *holder)
        .await
        .unwrap();
    // The powerbank is reported put into cabinet B's slot 1 meanwhile; that report waits for the holder.
    let station_b = c.b;
    let returned = tokio::spawn(async move {
        let back = Event::CabinetReturned {
            slot: 1,
            asset: "pb-001".into(),
        };
        let answer = report(&mut ws, 1, station_b, chrono::Utc::now(), back).await;
        (answer, ws)
    });
    wait_until("the return report waits for the holder", || async {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid)))",
        )
        .bind(holder_pid)
        .fetch_one(&app.owner)
        .await
        .unwrap()
    })
    .await;
    // The holder now takes that slot, as a failed eject or a stop would: it is free to take.
    let slot: Uuid = sqlx::query_scalar(
        "select id from connector where tenant_id = $1 and station_id = $2 and number = 1 for update",
    )
    .bind(c.t.id)
    .bind(c.b)
    .fetch_one(&mut *holder)
    .await
    .unwrap();
    holder.commit().await.unwrap();
    let (answer, _ws) = returned.await.unwrap();
    assert_eq!(answer, Ok(()));
    assert_eq!(rental(&app, c, rented).await["status"], "FINISHED");
    let docked_at: Option<Uuid> = sqlx::query_scalar(
        "select connector_id from asset where tenant_id = $1 and lower(label) = 'pb-001'",
    )
    .bind(c.t.id)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!(docked_at, Some(slot));
}
