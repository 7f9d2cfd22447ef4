//! Chargers behind a venue's edge bridge: a real charge point (the Python `ocpp` package) connects to the real
//! bridge's local OCPP server, which relays it through its tunnel to the real API — and, with the tunnel cut,
//! answers it as a local controller and journals its transaction messages for the cloud.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_tests::ocpp_peer::{ChargePoint, OcppVersion};
use switchyard_tests::proxy::Proxy;
use switchyard_tests::{spawn_app, Tenant, TestApp};
use uuid::Uuid;

use crate::charging::{charger, session, site, until_charger, uuid, wallet};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A bridge registered for `venue`: its id and token.
async fn bridge(app: &TestApp, t: &Tenant, venue: Uuid) -> (Uuid, String) {
    let data = app
        .gql_ok(
            &t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Chargers\") { token bridge { id } } }",
            json!({"v": venue}),
        )
        .await;
    let created = &data["createBridge"];
    (
        uuid(&created["bridge"]["id"]),
        created["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {data}"))
            .to_owned(),
    )
}

/// A running in-process bridge with its OCPP server and `/metrics` on ports of their own; dropping `stop` stops
/// it.
struct RunningBridge {
    stop: tokio::sync::watch::Sender<bool>,
    ocpp_port: u16,
    metrics_port: u16,
}

impl RunningBridge {
    fn start(cloud: &str, token: &str, journal: &std::path::Path, ocpp_port: u16) -> Self {
        Self::start_with(cloud, token, journal, ocpp_port, Default::default())
    }

    /// As [`RunningBridge::start`], pinging its chargers as `keepalive` says.
    fn start_with(
        cloud: &str,
        token: &str,
        journal: &std::path::Path,
        ocpp_port: u16,
        keepalive: edge_bridge::Keepalive,
    ) -> Self {
        let metrics_port = free_port();
        let config = edge_bridge::Config {
            cloud_url: cloud.to_owned(),
            token: token.to_owned(),
            journal_path: journal.to_owned(),
            heartbeat: Duration::from_millis(200),
            reconnect_max: Duration::from_millis(300),
            agent_listen: None,
            mqtt_url: None,
            credentials_file: None,
            readings: None,
            metrics_listen: Some(
                format!("127.0.0.1:{metrics_port}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            ocpp_listen: Some(
                format!("127.0.0.1:{ocpp_port}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
            local_keepalive: keepalive,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(edge_bridge::run(config, stopped));
        Self {
            stop,
            ocpp_port,
            metrics_port,
        }
    }

    fn url(&self, identity: &str) -> String {
        format!("ws://127.0.0.1:{}/ocpp/{identity}", self.ocpp_port)
    }

    /// One of the bridge's metrics (none while it does not answer).
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        switchyard_tests::metric(&text, name)
    }

    async fn until_metric(&self, name: &str, check: impl Fn(f64) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.metric(name).await.is_some_and(&check) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the bridge's {name}: {:?}",
                self.metric(name).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        // Stopped when its server no longer answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .is_ok()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bridge did not stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn connect(url: &str, identity: &str, password: &str) -> ChargePoint {
    ChargePoint::connect(url, identity, Some(password), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the charger could not connect to the bridge: {e:?}"))
}

/// Whether GraphQL shows a new password on its way to the charger.
async fn password_pending(app: &TestApp, t: &Tenant, charger: Uuid) -> bool {
    let data = app
        .gql_ok(
            &t.access,
            "query($c: UUID!) { charger(id: $c) { passwordPending } }",
            json!({"c": charger}),
        )
        .await;
    data["charger"]["passwordPending"]
        .as_bool()
        .unwrap_or_else(|| panic!("{data}"))
}

async fn call(cp: &mut ChargePoint, action: &str, payload: Value) -> Value {
    cp.call(action, payload)
        .await
        .unwrap_or_else(|e| panic!("{action} failed: {e}"))
}

/// The site's 1.6 charger connected at the bridge's `url`, booted (accepted by the cloud) and online.
async fn boot_relayed(app: &TestApp, s: &crate::charging::Site, url: &str) -> ChargePoint {
    let mut cp = connect(url, &s.identity, &s.password).await;
    let boot = call(
        &mut cp,
        "BootNotification",
        json!({"chargePointVendor": "Acme", "chargePointModel": "AC22"}),
    )
    .await;
    assert_eq!(boot["status"], "Accepted", "{boot}");
    until_charger(app, &s.t, s.charger, "the relayed charger online", |c| {
        c["online"] == true
    })
    .await;
    cp
}

fn journal_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("edge-ocpp-test-{}.jsonl", Uuid::new_v4().simple()))
}

#[tokio::test]
async fn a_charger_behind_the_bridge_is_relayed_runs_offline_and_its_offline_transaction_is_billed_once(
) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let (bridge_id, token) = bridge(&app, &s.t, s.venue).await;
    let proxy = Proxy::start(app.addr).await;
    let cloud = format!("ws://{}/edge/v1/tunnel", proxy.addr);
    let journal = journal_path();
    let ocpp_port = free_port();
    let running = RunningBridge::start(&cloud, &token, &journal, ocpp_port);
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;

    // Online through the bridge: the cloud answers the boot and sends the local list, through the tunnel.
    let mut cp = boot_relayed(&app, &s, &running.url(&s.identity)).await;
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp1.6"));
    let list = cp.next_received("SendLocalList").await;
    assert_eq!(list["updateType"], "Full", "{list}");
    let c = until_charger(&app, &s.t, s.charger, "the relayed charger online", |c| {
        c["online"] == true && c["vendor"] == "Acme"
    })
    .await;
    assert_eq!(c["protocol"], "ocpp1.6");
    let via = app
        .gql_ok(
            &s.t.access,
            "query($c: UUID!) { charger(id: $c) { viaBridge } }",
            json!({"c": s.charger}),
        )
        .await;
    assert_eq!(via["charger"]["viaBridge"], bridge_id.to_string());
    running
        .until_metric("edge_bridge_ocpp_chargers_connected", |v| v == 1.0)
        .await;

    // A patron without funds: the list refuses the tag (1.6's `Blocked`), and so will the bridge offline.
    let v1 = list["listVersion"].as_i64();
    until_charger(&app, &s.t, s.charger, "the full list taken", |c| {
        c["localListVersion"].as_i64() == v1
    })
    .await;
    let broke = app.create_patron(&s.t.access, "Broke", None).await;
    app.gql_ok(
        &s.t.access,
        "mutation($p: UUID!) { addRfidTag(patronId: $p, uid: \"BROKE042\") { id } }",
        json!({"p": broke}),
    )
    .await;
    let refused = cp.next_received("SendLocalList").await;
    assert_eq!(
        refused["localAuthorizationList"],
        json!([{"idTag": "BROKE042", "idTagInfo": {"status": "Blocked"}}])
    );

    // A transaction billed from the wallet: 10 kWh at 0.30 EUR.
    let auth = call(&mut cp, "Authorize", json!({"idTag": s.tag})).await;
    assert_eq!(auth, json!({"idTagInfo": {"status": "Accepted"}}));
    let start = call(
        &mut cp,
        "StartTransaction",
        json!({"connectorId": 1, "idTag": s.tag, "meterStart": 1000, "timestamp": chrono::Utc::now()}),
    )
    .await;
    assert_eq!(start["idTagInfo"]["status"], "Accepted", "{start}");
    let online_id = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));
    assert!(online_id < 1_500_000_000, "the cloud's id: {start}");
    let meter = call(
        &mut cp,
        "MeterValues",
        json!({"connectorId": 1, "transactionId": online_id, "meterValue": [{
            "timestamp": chrono::Utc::now(),
            "sampledValue": [{"value": "6000", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
        }]}),
    )
    .await;
    assert_eq!(meter, json!({}));
    call(
        &mut cp,
        "StopTransaction",
        json!({"transactionId": online_id, "meterStop": 11000, "timestamp": chrono::Utc::now(),
               "reason": "EVDisconnected", "idTag": s.tag}),
    )
    .await;
    let c = charger(&app, &s.t, s.charger).await;
    let online_session = uuid(&c["transactions"][0]["sessionId"]);
    let ended = session(&app, &s.t, online_session).await;
    assert_eq!(
        (
            &ended["status"],
            &ended["energyWh"],
            &ended["chargedAmount"]
        ),
        (&json!("ENDED"), &json!(10_000), &json!(300)),
        "{ended}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (700, 0));

    // An operator's command reaches the charger through the tunnel, and its answer comes back.
    let got = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: GET_CONFIGURATION}, waitSeconds: 20) {
               action status response } }",
            json!({"c": s.charger}),
        )
        .await;
    assert_eq!(
        (
            got["chargerCommand"]["action"].as_str(),
            got["chargerCommand"]["status"].as_str()
        ),
        (Some("GetConfiguration"), Some("answered")),
        "{got}"
    );
    // A call too large for the tunnel's frames ends as an error the operator can read; it is never sent, so the
    // bridge does not drop the tunnel (and the venue with it) over it, and the next command goes through.
    let lost = running.metric("edge_bridge_tunnels_lost_total").await;
    let big = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!, $d: String!) { chargerCommand(id: $c,
               command: {kind: DATA_TRANSFER, vendorId: \"acme\", data: $d}, waitSeconds: 20) { action status error } }",
            json!({"c": s.charger, "d": "x".repeat(70_000)}),
        )
        .await;
    assert_eq!(big["chargerCommand"]["status"], "error", "{big}");
    assert!(
        big["chargerCommand"]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("FrameTooLarge:")),
        "{big}"
    );
    let got = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!) { chargerCommand(id: $c, command: {kind: GET_CONFIGURATION}, waitSeconds: 20) {
               status } }",
            json!({"c": s.charger}),
        )
        .await;
    assert_eq!(got["chargerCommand"]["status"], "answered", "{got}");
    assert_eq!(running.metric("edge_bridge_tunnel_up").await, Some(1.0));
    assert_eq!(
        running.metric("edge_bridge_tunnels_lost_total").await,
        lost,
        "the tunnel held"
    );

    // The tunnel is cut: offline in the cloud, still connected to the bridge, which answers it.
    proxy.cut();
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 0.0)
        .await;
    until_charger(
        &app,
        &s.t,
        s.charger,
        "the charger offline in the cloud",
        |c| c["online"] == false,
    )
    .await;
    let hb = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string(), "{hb}");
    let listed = call(&mut cp, "Authorize", json!({"idTag": s.tag})).await;
    assert_eq!(listed, json!({"idTagInfo": {"status": "Accepted"}}));
    let unknown = call(&mut cp, "Authorize", json!({"idTag": "NOBODY42"})).await;
    assert_eq!(unknown, json!({"idTagInfo": {"status": "Invalid"}}));
    let broke = call(&mut cp, "Authorize", json!({"idTag": "BROKE042"})).await;
    assert_eq!(broke, json!({"idTagInfo": {"status": "Blocked"}}));
    // A whole transaction offline: 4 kWh, under the bridge's own transaction id.
    let started_at = chrono::Utc::now();
    let start = call(
        &mut cp,
        "StartTransaction",
        json!({"connectorId": 2, "idTag": s.tag, "meterStart": 20_000, "timestamp": started_at}),
    )
    .await;
    assert_eq!(start["idTagInfo"]["status"], "Accepted", "{start}");
    let offline_id = start["transactionId"]
        .as_i64()
        .unwrap_or_else(|| panic!("{start}"));
    assert!(offline_id > 1_500_000_000, "the bridge's id: {start}");
    call(
        &mut cp,
        "MeterValues",
        json!({"connectorId": 2, "transactionId": offline_id, "meterValue": [{
            "timestamp": chrono::Utc::now(),
            "sampledValue": [{"value": "22000", "measurand": "Energy.Active.Import.Register", "unit": "Wh"}],
        }]}),
    )
    .await;
    let stop = call(
        &mut cp,
        "StopTransaction",
        json!({"transactionId": offline_id, "meterStop": 24_000, "timestamp": chrono::Utc::now(),
               "reason": "Local", "idTag": s.tag}),
    )
    .await;
    assert_eq!(stop["idTagInfo"]["status"], "Accepted", "{stop}");
    running
        .until_metric("edge_bridge_ocpp_offline_messages_total", |v| v == 7.0)
        .await;
    running
        .until_metric("edge_bridge_journal_pending", |v| v == 3.0)
        .await;
    // Nothing of it reached the cloud yet.
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"].as_array().map(Vec::len), Some(1), "{c}");

    // The bridge restarts while the venue is still offline: the journal and the charger's login survive it, so
    // the charger connects again and is answered.
    running.stop().await;
    let running = RunningBridge::start(&cloud, &token, &journal, ocpp_port);
    running
        .until_metric("edge_bridge_journal_pending", |v| v == 3.0)
        .await;
    let mut cp = connect(&running.url(&s.identity), &s.identity, &s.password).await;
    let hb = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string(), "{hb}");
    // A wrong password is not taken offline.
    let wrong = ChargePoint::connect(
        &running.url(&s.identity),
        &s.identity,
        Some("not-the-password"),
        OcppVersion::V16,
    )
    .await;
    assert!(wrong.is_err(), "a wrong password was accepted offline");

    // The tunnel returns: the journal is replayed, applied once, and the charger is relayed again.
    proxy.restore();
    running
        .until_metric("edge_bridge_journal_pending", |v| v == 0.0)
        .await;
    let c = until_charger(
        &app,
        &s.t,
        s.charger,
        "the offline transaction billed",
        |c| {
            c["online"] == true
                && c["transactions"].as_array().is_some_and(|ts| {
                    ts.iter()
                        .any(|t| !t["stoppedAt"].is_null() && t["offline"] == true)
                })
        },
    )
    .await;
    let transactions = c["transactions"].as_array().cloned().unwrap_or_default();
    assert_eq!(transactions.len(), 2, "{c}");
    let offline: Vec<&Value> = transactions
        .iter()
        .filter(|t| t["offline"] == true)
        .collect();
    assert_eq!(offline.len(), 1, "{c}");
    let t = offline[0];
    assert_eq!(t["ocppId"], offline_id.to_string());
    assert_eq!(t["authStatus"], "Accepted");
    assert_eq!(t["energyWh"], 4_000);
    assert_eq!(t["stopReason"], "Local");
    let offline_session = session(&app, &s.t, uuid(&t["sessionId"])).await;
    assert_eq!(
        (
            &offline_session["status"],
            &offline_session["energyWh"],
            &offline_session["chargedAmount"]
        ),
        (&json!("ENDED"), &json!(4_000), &json!(120)),
        "{offline_session}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (580, 0));
    let mut tx = app.tenant_tx(s.t.id).await;
    let recorded: i64 = sqlx::query_scalar(
        "select count(*) from bridge_event where bridge_id = $1 and kind = 'ocpp'",
    )
    .bind(bridge_id)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recorded, 3);
    drop(tx);

    // Relayed again: the cloud answers (a boot now gets the cloud's heartbeat interval and the charger's
    // local-list state), and cutting and restoring once more charges nothing twice.
    let via = until_charger(&app, &s.t, s.charger, "the charger relayed again", |c| {
        c["online"] == true
    })
    .await;
    assert_eq!(via["online"], true);
    proxy.cut();
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 0.0)
        .await;
    proxy.restore();
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;
    until_charger(
        &app,
        &s.t,
        s.charger,
        "the charger relayed once more",
        |c| c["online"] == true,
    )
    .await;
    let auth = call(&mut cp, "Authorize", json!({"idTag": s.tag})).await;
    assert_eq!(auth, json!({"idTagInfo": {"status": "Accepted"}}));
    assert_eq!(wallet(&app, &s.t, s.patron).await, (580, 0));
    let c = charger(&app, &s.t, s.charger).await;
    assert_eq!(c["transactions"].as_array().map(Vec::len), Some(2), "{c}");
    running.stop().await;
}

/// A charger behind the bridge that goes away without closing its connection (power cut) is taken for dead by the
/// bridge's pings, and the cloud shows it offline; one that answers them stays connected.
#[tokio::test]
async fn a_charger_behind_the_bridge_that_answers_no_ping_is_found_dead_and_shown_offline() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let (_, token) = bridge(&app, &s.t, s.venue).await;
    let keepalive = edge_bridge::Keepalive {
        ping: Duration::from_millis(200),
        dead_after: Duration::from_millis(3000),
    };
    let running = RunningBridge::start_with(
        &format!("ws://{}/edge/v1/tunnel", app.addr),
        &token,
        &journal_path(),
        free_port(),
        keepalive,
    );
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;
    // One that answers pings (the Python peer's library does) stays connected longer than the silence that ends one.
    let mut cp = boot_relayed(&app, &s, &running.url(&s.identity)).await;
    let pinged = running.metric("edge_bridge_pings_total").await;
    running
        .until_metric("edge_bridge_pings_total", |v| {
            v >= pinged.unwrap_or(0.0) + 20.0
        })
        .await;
    let beat = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(beat["currentTime"].is_string(), "{beat}");
    assert_eq!(charger(&app, &s.t, s.charger).await["online"], true);
    cp.close().await;
    until_charger(&app, &s.t, s.charger, "offline once closed", |c| {
        c["online"] == false
    })
    .await;

    // One that never reads its socket again: the bridge closes it, and the cloud hears so.
    let silent = switchyard_tests::ocpp_peer::unanswering_socket(
        &running.url(&s.identity),
        &s.identity,
        &s.password,
    )
    .await;
    until_charger(
        &app,
        &s.t,
        s.charger,
        "online through the unanswering socket",
        |c| c["online"] == true,
    )
    .await;
    until_charger(&app, &s.t, s.charger, "found dead by the bridge", |c| {
        c["online"] == false
    })
    .await;
    running
        .until_metric("edge_bridge_ocpp_chargers_connected", |v| v == 0.0)
        .await;
    drop(silent);
    running.stop().await;
}

#[tokio::test]
async fn a_bridge_of_another_tenant_cannot_open_a_chargers_connection() {
    let app = spawn_app().await;
    let a = site(&app).await;
    let b = app.signup().await;
    let b_venue = app.create_venue(&b.access, "Elsewhere").await;
    let (_, b_token) = bridge(&app, &b, b_venue).await;
    let journal = journal_path();
    let running = RunningBridge::start(
        &format!("ws://{}/edge/v1/tunnel", app.addr),
        &b_token,
        &journal,
        free_port(),
    );
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;
    // Tenant A's charger, with its right password, at tenant B's bridge: refused as an unknown identity.
    let mut cp = connect(&running.url(&a.identity), &a.identity, &a.password).await;
    let (code, reason) = cp.closed().await;
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(reason, "unknown charge point or wrong password");
    let c = charger(&app, &a.t, a.charger).await;
    assert_eq!(c["online"], false, "{c}");
    // And A's own bridge, at another venue of A, cannot open it either.
    let other_venue = app.create_venue(&a.t.access, "Annex").await;
    let (_, a_token) = bridge(&app, &a.t, other_venue).await;
    let annex = RunningBridge::start(
        &format!("ws://{}/edge/v1/tunnel", app.addr),
        &a_token,
        &journal_path(),
        free_port(),
    );
    annex
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;
    let mut cp = connect(&annex.url(&a.identity), &a.identity, &a.password).await;
    let (code, _) = cp.closed().await;
    assert_eq!(code, 1008);
    assert_eq!(charger(&app, &a.t, a.charger).await["online"], false);
    running.stop().await;
    annex.stop().await;
}

#[tokio::test]
async fn a_charger_behind_the_bridge_keeps_its_previous_password_until_the_new_one_reaches_it() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let (_, token) = bridge(&app, &s.t, s.venue).await;
    let proxy = Proxy::start(app.addr).await;
    let running = RunningBridge::start(
        &format!("ws://{}/edge/v1/tunnel", proxy.addr),
        &token,
        &journal_path(),
        free_port(),
    );
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;
    let url = running.url(&s.identity);
    let mut cp = boot_relayed(&app, &s, &url).await;
    // A new password reaches the charger through the tunnel, and the charger drops before it answers.
    cp.reply_silent("ChangeConfiguration").await;
    let lost = app
        .gql_ok(
            &s.t.access,
            "mutation($c: UUID!) { setChargerPassword(id: $c) { password } }",
            json!({"c": s.charger}),
        )
        .await["setChargerPassword"]["password"]
        .clone();
    let sent = cp.next_received("ChangeConfiguration").await;
    assert_eq!(sent, json!({"key": "AuthorizationKey", "value": lost}));
    assert!(password_pending(&app, &s.t, s.charger).await);
    cp.close().await;
    // It comes back with its old password, which still opens it through the bridge, and is sent a fresh one.
    let mut cp = connect(&url, &s.identity, &s.password).await;
    let hb = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string(), "{hb}");
    let sent = cp.next_received("ChangeConfiguration").await;
    let fresh = sent["value"].as_str().unwrap_or_default().to_owned();
    assert_eq!(fresh.len(), 32, "{sent}");
    assert_ne!(json!(fresh), lost);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while password_pending(&app, &s.t, s.charger).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the accepted password still shows as pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The bridge saw the charger accept it: when the tunnel comes back, the charger (still on the connection it
    // opened with its old password) is opened again with the fresh one, which the cloud takes.
    proxy.cut();
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 0.0)
        .await;
    until_charger(
        &app,
        &s.t,
        s.charger,
        "the charger offline with the tunnel",
        |c| c["online"] == false,
    )
    .await;
    proxy.restore();
    until_charger(&app, &s.t, s.charger, "the charger opened again", |c| {
        c["online"] == true
    })
    .await;
    let hb = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string(), "{hb}");
    cp.close().await;
    // Online, the old password no longer opens it, the fresh one does.
    let mut old = connect(&url, &s.identity, &s.password).await;
    let (code, reason) = old.closed().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "unknown charge point or wrong password")
    );
    let mut cp = connect(&url, &s.identity, &fresh).await;
    let hb = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string(), "{hb}");
    cp.close().await;
    // Offline, the bridge knows it by the fresh one (a wrong password tried online did not make it forget).
    proxy.cut();
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 0.0)
        .await;
    let old = ChargePoint::connect(&url, &s.identity, Some(&s.password), OcppVersion::V16).await;
    assert_eq!(old.err().and_then(|e| e.status), Some(401));
    let mut cp = connect(&url, &s.identity, &fresh).await;
    let hb = call(&mut cp, "Heartbeat", json!({})).await;
    assert!(hb["currentTime"].is_string(), "{hb}");
    cp.close().await;
    running.stop().await;
}

#[tokio::test]
async fn a_v201_charger_behind_the_bridge_runs_a_transaction_offline_that_is_billed_once_when_the_tunnel_returns(
) {
    let app = spawn_app().await;
    let s = site(&app).await;
    let (_, token) = bridge(&app, &s.t, s.venue).await;
    let proxy = Proxy::start(app.addr).await;
    let running = RunningBridge::start(
        &format!("ws://{}/edge/v1/tunnel", proxy.addr),
        &token,
        &journal_path(),
        free_port(),
    );
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 1.0)
        .await;
    let mut cp = ChargePoint::connect(
        &running.url(&s.identity),
        &s.identity,
        Some(&s.password),
        OcppVersion::V201,
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(cp.subprotocol.as_deref(), Some("ocpp2.0.1"));
    let boot = call(
        &mut cp,
        "BootNotification",
        json!({"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "DC50"}}),
    )
    .await;
    assert_eq!(boot["status"], "Accepted", "{boot}");
    let list = cp.next_received("SendLocalList").await;
    assert_eq!(list["updateType"], "Full", "{list}");

    proxy.cut();
    running
        .until_metric("edge_bridge_tunnel_up", |v| v == 0.0)
        .await;
    let token_of = |uid: &str| json!({"idToken": uid, "type": "ISO14443"});
    let auth = call(&mut cp, "Authorize", json!({"idToken": token_of(&s.tag)})).await;
    assert_eq!(auth["idTokenInfo"]["status"], "Accepted", "{auth}");
    let unknown = call(
        &mut cp,
        "Authorize",
        json!({"idToken": token_of("NOBODY42")}),
    )
    .await;
    assert_eq!(unknown["idTokenInfo"]["status"], "Invalid", "{unknown}");
    let event = |kind: &str, seq: i64, wh: i64| {
        json!({
            "eventType": kind, "timestamp": chrono::Utc::now(), "triggerReason": "Authorized",
            "seqNo": seq, "transactionInfo": {"transactionId": "TX-OFF-1"},
            "idToken": token_of(&s.tag), "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{ "timestamp": chrono::Utc::now(), "sampledValue": [
                { "value": wh, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": { "unit": "Wh" } },
            ]}],
        })
    };
    let started = call(&mut cp, "TransactionEvent", event("Started", 0, 40_000)).await;
    assert_eq!(started["idTokenInfo"]["status"], "Accepted", "{started}");
    call(&mut cp, "TransactionEvent", event("Ended", 1, 50_000)).await;
    // Free vend on the other connector: its token names no one, so there is nothing to judge (the cloud's answer).
    for (kind, seq, wh) in [("Started", 0, 7_000), ("Ended", 1, 7_500)] {
        let mut free = event(kind, seq, wh);
        free["transactionInfo"]["transactionId"] = json!("FREE-OFF-1");
        free["idToken"] = json!({"idToken": "", "type": "NoAuthorization"});
        free["evse"] = json!({"id": 2, "connectorId": 1});
        let answer = call(&mut cp, "TransactionEvent", free).await;
        assert_eq!(answer, json!({}), "{kind}");
    }
    running
        .until_metric("edge_bridge_journal_pending", |v| v == 4.0)
        .await;

    proxy.restore();
    let c = until_charger(
        &app,
        &s.t,
        s.charger,
        "the offline transactions replayed",
        |c| {
            c["transactions"]
                .as_array()
                .is_some_and(|ts| ts.len() == 2 && ts.iter().all(|t| !t["stoppedAt"].is_null()))
        },
    )
    .await;
    let of = |id: &str| {
        c["transactions"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["ocppId"] == id).cloned())
            .unwrap_or_else(|| panic!("{id}: {c}"))
    };
    let free = of("FREE-OFF-1");
    assert_eq!(
        (
            &free["authStatus"],
            &free["idTag"],
            &free["sessionId"],
            &free["energyWh"],
            &free["offline"]
        ),
        (
            &json!("FreeVend"),
            &json!(null),
            &json!(null),
            &json!(500),
            &json!(true)
        ),
        "{c}"
    );
    let t = &of("TX-OFF-1");
    assert_eq!(
        (&t["ocppId"], &t["offline"], &t["energyWh"]),
        (&json!("TX-OFF-1"), &json!(true), &json!(10_000)),
        "{c}"
    );
    let done = session(&app, &s.t, uuid(&t["sessionId"])).await;
    assert_eq!(
        (&done["status"], &done["chargedAmount"]),
        (&json!("ENDED"), &json!(300)),
        "{done}"
    );
    assert_eq!(wallet(&app, &s.t, s.patron).await, (700, 0));
    running.stop().await;
}

/// A 1.6 StartTransaction the cloud recorded live under its own id, whose answer was lost with the tunnel: the
/// charger asked again, the bridge (offline by then) gave it an id of its own, and that is the id the charger's
/// later messages carry. The journaled start makes the transaction take the bridge's id, so the journaled stop
/// ends it. Before, the stop named an id the cloud did not know, and the session ran on.
#[tokio::test]
async fn a_start_recorded_live_and_repeated_offline_takes_the_bridges_id_so_its_offline_stop_ends_it(
) {
    use futures_util::SinkExt;
    use switchyard_core::charging::{self, transactions};
    use switchyard_edge_protocol::{encode, Down, Event, Up};
    use tokio_tungstenite::tungstenite::Message;

    let app = spawn_app().await;
    let s = site(&app).await;
    let (_, token) = bridge(&app, &s.t, s.venue).await;
    // Whole seconds, as a charger's clock writes them.
    let at: chrono::DateTime<chrono::Utc> = (chrono::Utc::now() - chrono::Duration::minutes(5))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
        .parse()
        .unwrap();
    let db =
        switchyard_core::Db::connect_lazy(&switchyard_tests::env_url("TEST_APP_DATABASE_URL"), 1)
            .unwrap();
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(s.t.id))
        .await
        .unwrap();
    let point = charging::get(&mut tx, s.charger).await.unwrap();
    let (live, _) = transactions::start(
        &mut tx,
        &point,
        transactions::Start {
            connector: 1,
            id_tag: s.tag.clone(),
            meter_start_wh: Some(1_000),
            at,
            ocpp_id: None,
            reservation_id: None,
            offline: false,
            journaled: false,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let session_id = live.session_id.expect("a billed session");
    assert!(live.ocpp_id.parse::<i64>().unwrap() < 1_500_000_000);

    let mut ws = crate::edge::connect(&app, &token).await.unwrap();
    crate::edge::hello(&mut ws).await;
    let journaled = [
        (
            "StartTransaction",
            json!({"connectorId": 1, "idTag": s.tag, "meterStart": 1000, "timestamp": at}),
            Some("1500000001".to_owned()),
        ),
        (
            "StopTransaction",
            json!({"transactionId": 1_500_000_001i64, "meterStop": 6000, "timestamp": at + chrono::Duration::minutes(4),
                   "reason": "EVDisconnected"}),
            None,
        ),
    ];
    for (seq, (action, payload, transaction_id)) in (1u64..).zip(journaled) {
        ws.send(Message::text(encode(&Up::Event {
            seq,
            occurred_at: at,
            station_id: None,
            event: Event::Ocpp {
                charge_point_id: s.identity.clone(),
                subprotocol: "ocpp1.6".into(),
                action: action.into(),
                payload,
                transaction_id,
            },
        })))
        .await
        .unwrap();
        assert_eq!(crate::edge::next_answer(&mut ws).await, Down::Ack { seq });
    }
    let ended = session(&app, &s.t, session_id).await;
    assert_eq!(
        (&ended["status"], &ended["energyWh"]),
        (&json!("ENDED"), &json!(5_000)),
        "{ended}"
    );
    let c = charger(&app, &s.t, s.charger).await;
    let transactions = c["transactions"].as_array().unwrap();
    assert_eq!(transactions.len(), 1, "one transaction: {c}");
    let ids: Vec<(String, Value)> = sqlx::query_as(
        "select action, detail from audit_log where tenant_id = $1 and action = 'charging.transaction_id_taken'",
    )
    .bind(s.t.id)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0].1["to"], "1500000001");
}

/// A bridge whose token the cloud refuses (revoked, rotated, mistyped) says so in its metrics and its log, and asks
/// again only at its slowest pace; before, it was an ordinary "tunnel down", retried as any passing fault.
#[tokio::test]
async fn a_bridge_whose_token_is_refused_counts_it() {
    let app = spawn_app().await;
    let s = site(&app).await;
    let (_, token) = bridge(&app, &s.t, s.venue).await;
    let cloud = format!("ws://{}/edge/v1/tunnel", app.addr);
    let journal = journal_path();
    let running = RunningBridge::start(&cloud, &format!("{token}x"), &journal, free_port());
    running
        .until_metric("edge_bridge_token_refused_total", |v| v >= 1.0)
        .await;
    assert_eq!(running.metric("edge_bridge_tunnel_up").await, Some(0.0));
    drop(running);
    let _ = std::fs::remove_file(&journal);
}
