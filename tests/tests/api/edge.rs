//! The edge bridge against the real API: registration, the tunnel, a Shelly plug switched by sessions, and the
//! tunnel's refusals.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_edge_protocol::{decode, encode, Down, Event, StationPlan, Up, MAX_FRAME_BYTES};
use switchyard_tests::shelly_fake::ShellyFake;
use switchyard_tests::{gql_code, metric, metrics_page, spawn_app, Tenant, TestApp};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::sessions::{start, top_up, wallet_session};

struct Site {
    t: Tenant,
    venue: Uuid,
    station: Uuid,
    bridge: Uuid,
    token: String,
}

/// A venue with a PC on a Shelly plug at `host` (Gen `generation`), a 10/min tariff, and a registered bridge.
async fn site(app: &TestApp, host: &str, generation: i64) -> Site {
    let f = crate::sessions::floor(app).await;
    let station = app
        .gql_ok(
            &f.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": f.venue, "name": "PC-Plug", "kind": "PC", "control": "SHELLY",
                         "controlSettings": {"host": host, "generation": generation}}}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let created = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Front desk\") { token bridge { id online } } }",
            json!({"v": f.venue}),
        )
        .await["createBridge"]
        .clone();
    assert_eq!(created["bridge"]["online"], false);
    Site {
        venue: f.venue,
        station,
        bridge: created["bridge"]["id"].as_str().unwrap().parse().unwrap(),
        token: created["token"].as_str().unwrap().to_owned(),
        t: f.t,
    }
}

/// A station controlled by `control` (with `settings`) at the floor's venue, and a bridge registered for the venue:
/// the station's id and the bridge's token.
async fn controlled_station(
    app: &TestApp,
    f: &crate::sessions::Floor,
    kind: &str,
    control: &str,
    settings: Value,
) -> (Uuid, String) {
    let station = app
        .gql_ok(
            &f.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": f.venue, "name": format!("{control} station"), "kind": kind,
                         "control": control, "controlSettings": settings}}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"Venue bridge\") { token } }",
            json!({"v": f.venue}),
        )
        .await["createBridge"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (station, token)
}

/// A patron with 1,000 in the wallet: its id.
async fn funded_patron(app: &TestApp, t: &Tenant, venue: Uuid, key: &str) -> Uuid {
    let patron = app.create_patron(&t.access, "Patron", None).await;
    let f = crate::sessions::Floor {
        t: t.clone(),
        venue,
        station: Uuid::nil(),
        tariff: Uuid::nil(),
    };
    top_up(app, &f, patron, 1_000, key).await;
    patron
}

/// A wallet session of `minutes` on `station` for a funded patron, started over REST: the session as it answers.
async fn paid_session(
    app: &TestApp,
    t: &Tenant,
    venue: Uuid,
    station: Uuid,
    minutes: i64,
    key: &str,
) -> Value {
    let patron = funded_patron(app, t, venue, key).await;
    let body = json!({"station_id": station, "patron_id": patron, "duration_minutes": minutes, "payment": "wallet"});
    let (status, session) = start(app, &t.access, Some(key), body).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    session
}

fn tunnel_url(app: &TestApp) -> String {
    format!("ws://{}/edge/v1/tunnel", app.addr)
}

/// A bridge's settings for a test: fast heartbeats and reconnects, no agents, MQTT, readings or metrics.
fn bridge_config(cloud_url: String, token: &str, journal: &std::path::Path) -> edge_bridge::Config {
    edge_bridge::Config {
        cloud_url,
        token: token.to_owned(),
        journal_path: journal.to_owned(),
        heartbeat: Duration::from_millis(200),
        reconnect_max: Duration::from_millis(300),
        agent_listen: None,
        mqtt_url: None,
        credentials_file: None,
        readings: None,
        metrics_listen: None,
        ocpp_listen: None,
        local_keepalive: Default::default(),
    }
}

/// Runs an in-process bridge; dropping the sender stops it.
fn start_bridge(config: edge_bridge::Config) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(edge_bridge::run(config, stopped));
    stop
}

/// A bridge for the app with the test MQTT broker and router logins.
fn run_bridge(
    app: &TestApp,
    token: &str,
    journal: &std::path::Path,
) -> tokio::sync::watch::Sender<bool> {
    start_bridge(edge_bridge::Config {
        mqtt_url: std::env::var("TEST_MQTT_URL").ok(),
        credentials_file: credentials(),
        ..bridge_config(tunnel_url(app), token, journal)
    })
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

/// The bridge's device logins: the MikroTik test router's.
fn credentials() -> Option<std::path::PathBuf> {
    let path =
        std::env::temp_dir().join(format!("edge-credentials-{}.json", Uuid::new_v4().simple()));
    std::fs::write(
        &path,
        r#"{"venue-router": {"username": "switchyard", "password": "router-pass-1"}}"#,
    )
    .ok()?;
    Some(path)
}

fn journal_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("edge-test-{}.jsonl", Uuid::new_v4().simple()))
}

#[tokio::test]
async fn a_session_switches_a_shelly_plug_on_through_the_bridge_and_off_when_it_stops() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let journal = journal_path();
    let _bridge = run_bridge(&app, &s.token, &journal);
    let presence =
        "query($v: UUID!) { bridges(venueId: $v) { online version lastSeenAt clockOffsetMs } }";
    // Online, and its measured clock offset reported with its heartbeats (one clock here: a few ms at most).
    wait_until("the bridge is online with its clock offset", || async {
        let b = app
            .gql_ok(&s.t.access, presence, json!({"v": s.venue}))
            .await["bridges"][0]
            .clone();
        b["online"] == true && b["clockOffsetMs"].as_i64().is_some_and(|o| o.abs() < 100)
    })
    .await;
    let bridges = app
        .gql_ok(&s.t.access, presence, json!({"v": s.venue}))
        .await;
    assert_eq!(bridges["bridges"][0]["version"], env!("CARGO_PKG_VERSION"));

    let patron = funded_patron(&app, &s.t, s.venue, "edge-1").await;
    let session = wallet_session(&app, &s.t.access, s.station, patron, Some(30)).await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    // On connecting, the bridge found the plug off, as planned, and left it; then the session switched it on.
    let switches = plug.switches();
    assert_eq!(switches.iter().map(|s| s.on).collect::<Vec<_>>(), [true]);
    let on = switches[0].clone();
    // The plug's own backup timer ends the session even if the bridge dies: about 30 minutes (+2 s).
    let backup = on.backup_secs.unwrap();
    assert!((1795..=1803).contains(&backup), "{backup}");

    let id = session.to_string();
    let stopped = app
        .gql_ok(
            &s.t.access,
            "mutation($id: UUID!) { stopSession(id: $id) { status } }",
            json!({"id": session}),
        )
        .await;
    assert_eq!(stopped["stopSession"]["status"], "ENDED");
    wait_until("the plug is off", || async { !plug.is_on() }).await;

    // The bridge acknowledged the commands and reported both switches, each recorded once.
    wait_until("both switches are recorded", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from bridge_event where tenant_id = $1")
            .bind(s.t.id)
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
        n == 3
    })
    .await;
    let events: Vec<(i64, Value)> = sqlx::query_as(
        "select seq, body from bridge_event where tenant_id = $1 and bridge_id = $2 order by seq",
    )
    .bind(s.t.id)
    .bind(s.bridge)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    // The session records when the plug actually went off (after the stop: billing keeps the stop's time).
    let off_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "select occurred_at from bridge_event where tenant_id = $1 and bridge_id = $2 and seq = 3",
    )
    .bind(s.t.id)
    .bind(s.bridge)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    let (status, stopped) = app
        .send(
            Method::GET,
            &format!("/api/v1/sessions/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let at = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    // (The event's time is by the cloud's clock as the bridge measured it; one a few milliseconds ahead of the
    // cloud's own clock is taken as now.)
    let switched_off = at(&stopped["switched_off_at"]);
    assert!(
        switched_off <= off_at && off_at - switched_off < chrono::Duration::seconds(1),
        "{stopped} vs {off_at}"
    );
    assert!(at(&stopped["ended_at"]) <= off_at, "{stopped}");
    let seen = json!({"kind": "device_state", "reachable": true, "on": false, "power_w": 0.0, "energy_wh": 10});
    let on = json!({"kind": "switched", "on": true, "reason": "schedule", "session_id": session});
    let off = json!({"kind": "switched", "on": false, "reason": "schedule"});
    assert_eq!(events, [(1, seen), (2, on), (3, off)]);
    wait_until("every command is acknowledged", || async {
        let unacked: i64 = sqlx::query_scalar(
            "select count(*) from device_command where tenant_id = $1 and station_id = $2 and acked_at is null",
        )
        .bind(s.t.id)
        .bind(s.station)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap();
        unacked == 0
    })
    .await;
    let state = app
        .gql_ok(
            &s.t.access,
            "query($s: UUID!) { station(id: $s) { deviceState { kind report } } }",
            json!({"s": s.station}),
        )
        .await;
    assert_eq!(
        state["station"]["deviceState"],
        json!({"kind": "switched", "report": {"kind": "switched", "on": false, "reason": "schedule"}})
    );
    let _ = std::fs::remove_file(&journal);
}

pub(crate) async fn connect(
    app: &TestApp,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut request = tunnel_url(app).into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

async fn next_down<S>(ws: &mut S) -> Down
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
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

/// Skips schedules and commands until a frame of another kind arrives.
pub(crate) async fn next_answer<S>(ws: &mut S) -> Down
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match next_down(ws).await {
            Down::Schedule { .. } | Down::SchedulePart { .. } | Down::Command { .. } => continue,
            other => return other,
        }
    }
}

fn status_of(error: tokio_tungstenite::tungstenite::Error) -> u16 {
    match error {
        tokio_tungstenite::tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Reads one whole schedule, in one frame or in parts (every frame read is checked against the frame limit by
/// `decode`): its plans and the number of frames it came in.
async fn next_schedule<S>(ws: &mut S) -> (Vec<StationPlan>, usize)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut plans = vec![];
    let mut frames = 0;
    loop {
        match next_down(ws).await {
            Down::Schedule { stations } if frames == 0 => return (stations, 1),
            Down::SchedulePart { stations, last } => {
                frames += 1;
                plans.extend(stations);
                if last {
                    return (plans, frames);
                }
            }
            Down::Command { .. } if frames == 0 => continue,
            other => panic!("a schedule's parts come together, got {other:?}"),
        }
    }
}

/// Twenty karaoke rooms on Tasmota at the site's venue, with the largest settings allowed: about 80 KiB of
/// schedule, more than a frame holds. Their ids.
async fn twenty_rooms(app: &TestApp, s: &Site) -> Vec<String> {
    let mut created = vec![];
    for i in 0..20 {
        let id = app
            .gql_ok(
                &s.t.access,
                "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
                json!({"i": {"venueId": s.venue, "name": format!("Karaoke {i}"), "kind": "KARAOKE_ROOM",
                             "control": "TASMOTA",
                             "controlSettings": {"topic": format!("room{i}"), "note": "n".repeat(4000)}}}),
            )
            .await["createStation"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        created.push(id);
    }
    created
}

#[tokio::test]
async fn a_tunnel_whose_bridge_stops_reading_ends_once_a_write_waits_past_the_write_timeout() {
    let app = switchyard_tests::spawn_app_with(&[("WS_WRITE_TIMEOUT_MS", "1000")]).await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let rooms = twenty_rooms(&app, &s).await;
    // A bridge on a socket with a small receive buffer: it says hello, reads the welcome, then reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut request = tunnel_url(&app).into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.token).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    ws.send(Message::text(encode(Up::hello("stalled"))))
        .await
        .unwrap();
    assert!(matches!(next_down(&mut ws).await, Down::Welcome { .. }));
    assert!(bridge_online(&app, s.t.id).await);

    // Every rename sends an 80 KiB schedule the bridge never takes: the buffers fill, a write waits, and after
    // the write timeout the cloud ends the tunnel (the bridge goes offline). Without the timeout the write would
    // wait for ever and the bridge would stay online.
    let mut renames = 0;
    while bridge_online(&app, s.t.id).await {
        assert!(
            renames < 3_000,
            "the tunnel still stands after {renames} schedules"
        );
        app.gql_ok(
            &s.t.access,
            "mutation($s: UUID!, $n: String!) { updateStation(id: $s, input: {name: $n}) { name } }",
            json!({"s": rooms[renames % rooms.len()], "n": format!("Room {renames}")}),
        )
        .await;
        renames += 1;
    }
    let metrics = app.metrics_text().await;
    assert!(
        metric(&metrics, "ws_writes_stalled_total{socket=\"tunnel\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    drop(ws);
}

#[tokio::test]
async fn a_venue_whose_schedule_outgrows_a_frame_gets_it_in_parts_and_keeps_its_tunnel() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let created = twenty_rooms(&app, &s).await;

    let mut ws = connect(&app, &s.token).await.unwrap();
    ws.send(Message::text(encode(Up::hello("test"))))
        .await
        .unwrap();
    assert!(matches!(next_down(&mut ws).await, Down::Welcome { .. }));
    let (plans, frames) = next_schedule(&mut ws).await;
    assert!(frames >= 2, "the schedule came in {frames} frame(s)");
    // The floor's agent PC, the Shelly plug and the twenty rooms, each once, with their settings whole.
    assert_eq!(plans.len(), 22);
    let mut ids: Vec<String> = plans.iter().map(|p| p.station_id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 22);
    let room = plans.iter().find(|p| p.name == "Karaoke 7").unwrap();
    assert_eq!(room.settings["topic"], "room7");
    assert_eq!(room.settings["note"].as_str().unwrap().len(), 4000);
    assert!(MAX_FRAME_BYTES < plans.iter().map(|p| p.settings.to_string().len()).sum());

    // A change reaches the same tunnel as a new schedule, in parts again.
    app.gql_ok(
        &s.t.access,
        "mutation($s: UUID!) { updateStation(id: $s, input: {name: \"Karaoke Seven\"}) { name } }",
        json!({"s": created[7]}),
    )
    .await;
    // (A schedule pushed before the change may come first.)
    let plans = loop {
        let (plans, frames) = next_schedule(&mut ws).await;
        assert!(frames >= 2);
        if plans.iter().any(|p| p.name == "Karaoke Seven") {
            break plans;
        }
    };
    assert_eq!(plans.len(), 22);
    assert!(!plans.iter().any(|p| p.name == "Karaoke 7"));

    // The tunnel stands: a heartbeat is answered.
    ws.send(Message::text(encode(&Up::Heartbeat {
        sent_at: chrono::Utc::now(),
        clock_offset_ms: None,
    })))
    .await
    .unwrap();
    assert!(matches!(
        next_answer(&mut ws).await,
        Down::HeartbeatAck { .. }
    ));
}

#[tokio::test]
async fn a_bridge_that_cannot_take_schedule_parts_is_refused_and_its_commands_wait_for_one_that_can(
) {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    twenty_rooms(&app, &s).await;
    let session = paid_session(&app, &s.t, s.venue, s.station, 30, "old-bridge").await;
    let pending = || async {
        let undelivered: i64 = sqlx::query_scalar(
            "select count(*) from device_command where tenant_id = $1 and station_id = $2 and delivered_at is null",
        )
        .bind(s.t.id)
        .bind(s.station)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap();
        undelivered
    };
    assert_eq!(pending().await, 1);

    // A bridge from before schedule parts says hello without features: it is told to upgrade and closed, not left
    // on a schedule it would never receive.
    let mut old = connect(&app, &s.token).await.unwrap();
    old.send(Message::text(encode(&Up::Hello {
        version: "0.0.9".into(),
        sent_at: chrono::Utc::now(),
        features: vec![],
    })))
    .await
    .unwrap();
    assert!(matches!(next_down(&mut old).await, Down::Welcome { .. }));
    let Down::Error { code, message, .. } = next_down(&mut old).await else {
        panic!("an error frame, not a schedule")
    };
    assert_eq!(code, "upgrade_required");
    assert!(message.contains("upgrade edge-bridge"), "{message}");
    assert_eq!(
        closed_with(&mut old, Duration::from_secs(10)).await,
        Some(1008)
    );
    // Nothing was taken: the plug's command still waits, and the bridge shows offline with its version.
    assert_eq!(pending().await, 1);
    wait_until("the refused bridge shows offline", || async {
        let bridge = app
            .gql_ok(
                &s.t.access,
                "query($b: UUID!) { bridge(id: $b) { online version } }",
                json!({"b": s.bridge}),
            )
            .await;
        bridge["bridge"] == json!({"online": false, "version": "0.0.9"})
    })
    .await;

    // The same bridge upgraded gets the schedule in parts, then the command.
    let mut new = connect(&app, &s.token).await.unwrap();
    new.send(Message::text(encode(Up::hello("test"))))
        .await
        .unwrap();
    assert!(matches!(next_down(&mut new).await, Down::Welcome { .. }));
    let (plans, frames) = next_schedule(&mut new).await;
    assert!(frames >= 2, "{frames}");
    let planned = plans.iter().find(|p| p.station_id == s.station).unwrap();
    assert_eq!(
        planned.session_id.map(|id| id.to_string()),
        session["session_id"].as_str().map(str::to_owned)
    );
    let Down::Command { station_id, .. } = next_down(&mut new).await else {
        panic!("the command after the schedule")
    };
    assert_eq!(station_id, s.station);
    assert_eq!(pending().await, 0);
}

#[tokio::test]
async fn the_tunnel_refuses_bad_tokens_and_frames_clearly_and_drops_duplicate_events() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;

    assert_eq!(
        status_of(connect(&app, "sybr_wrong").await.unwrap_err()),
        401
    );
    let anonymous = tokio_tungstenite::connect_async(tunnel_url(&app))
        .await
        .unwrap_err();
    assert_eq!(status_of(anonymous), 401);

    let mut ws = connect(&app, &s.token).await.unwrap();
    ws.send(Message::text(encode(Up::hello("test"))))
        .await
        .unwrap();
    let Down::Welcome {
        bridge_id,
        last_seq,
        features,
        ..
    } = next_down(&mut ws).await
    else {
        panic!("welcome first");
    };
    assert_eq!((bridge_id, last_seq), (s.bridge, 0));
    assert_eq!(
        features,
        [switchyard_edge_protocol::FEATURE_NUMBERED_ERRORS]
    );
    let Down::Schedule { stations } = next_down(&mut ws).await else {
        panic!("then the schedule");
    };
    // The floor's agent PC and the Shelly plug; manual stations are not the bridge's.
    assert_eq!(stations.len(), 2);
    let plug_plan = stations.iter().find(|p| p.station_id == s.station).unwrap();
    assert_eq!(plug_plan.control, "shelly");
    assert_eq!(plug_plan.settings["generation"], 1);
    assert!(!plug_plan.on);

    // Garbage, another protocol version, an unknown station: clear errors, and the connection goes on.
    ws.send(Message::text("not json")).await.unwrap();
    let Down::Error { code, seq, .. } = next_answer(&mut ws).await else {
        panic!()
    };
    // An error that answers no event names none (the bridge counts the events awaiting an answer by it).
    assert_eq!((code.as_str(), seq), ("malformed_frame", None));
    ws.send(Message::text(
        r#"{"v":9,"type":"heartbeat","sent_at":"2026-01-01T00:00:00Z"}"#,
    ))
    .await
    .unwrap();
    let Down::Error { code, message, .. } = next_answer(&mut ws).await else {
        panic!()
    };
    assert_eq!(code, "malformed_frame");
    assert!(message.contains("version 9"), "{message}");
    // An event this cloud cannot read is still answered by its number.
    ws.send(Message::text(
        r#"{"v":9,"type":"event","seq":5,"occurred_at":"2026-01-01T00:00:00Z","kind":"switched"}"#,
    ))
    .await
    .unwrap();
    let Down::Error { code, seq, .. } = next_answer(&mut ws).await else {
        panic!()
    };
    assert_eq!((code.as_str(), seq), ("malformed_frame", Some(5)));
    let event = |seq: u64, station: Option<Uuid>| Up::Event {
        seq,
        occurred_at: chrono::Utc::now(),
        station_id: station,
        event: Event::Switched {
            on: true,
            reason: "test".into(),
            session_id: None,
        },
    };
    ws.send(Message::text(encode(event(1, Some(Uuid::new_v4())))))
        .await
        .unwrap();
    let Down::Error { code, seq, .. } = next_answer(&mut ws).await else {
        panic!()
    };
    assert_eq!((code.as_str(), seq), ("unknown_station", Some(1)));
    // The same event twice: acknowledged twice, recorded once.
    for _ in 0..2 {
        ws.send(Message::text(encode(event(1, Some(s.station)))))
            .await
            .unwrap();
        assert_eq!(next_answer(&mut ws).await, Down::Ack { seq: 1 });
    }
    let sent_at = chrono::Utc::now();
    ws.send(Message::text(encode(&Up::Heartbeat {
        sent_at,
        clock_offset_ms: None,
    })))
    .await
    .unwrap();
    let Down::HeartbeatAck {
        sent_at: echoed, ..
    } = next_answer(&mut ws).await
    else {
        panic!()
    };
    assert_eq!(echoed, sent_at);
    let recorded: i64 =
        sqlx::query_scalar("select count(*) from bridge_event where tenant_id = $1")
            .bind(s.t.id)
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    assert_eq!(recorded, 1);

    // An oversized frame closes the connection.
    let _ = ws.send(Message::text("x".repeat(70 * 1024))).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));

    // Another tenant can neither rotate nor revoke this bridge, nor list it.
    let other = app.signup().await;
    for query in [
        "mutation($b: UUID!) { rotateBridgeToken(id: $b) { token } }",
        "mutation($b: UUID!) { revokeBridge(id: $b) { id } }",
    ] {
        let body = app
            .gql(Some(&other.access), query, json!({"b": s.bridge}))
            .await;
        assert_eq!(gql_code(&body), "not_found", "{query}: {body}");
    }
    let listed = app
        .gql_ok(&other.access, "{ bridges { id } }", json!({}))
        .await;
    assert_eq!(listed["bridges"], json!([]), "{listed}");
    let filtered = app
        .gql(
            Some(&other.access),
            "query($v: UUID) { bridges(venueId: $v) { id } }",
            json!({"v": s.venue}),
        )
        .await;
    assert_eq!(gql_code(&filtered), "not_found", "{filtered}");
    // The bridge's token was neither rotated nor revoked: it still opens a tunnel.
    let mut again = connect(&app, &s.token).await.unwrap();
    again
        .send(Message::text(encode(Up::hello("test"))))
        .await
        .unwrap();
    assert!(matches!(next_down(&mut again).await, Down::Welcome { .. }));
    // A rotated token replaces the old one; a revoked bridge cannot connect.
    let rotated = app
        .gql_ok(
            &s.t.access,
            "mutation($b: UUID!) { rotateBridgeToken(id: $b) { token } }",
            json!({"b": s.bridge}),
        )
        .await["rotateBridgeToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(status_of(connect(&app, &s.token).await.unwrap_err()), 401);
    let mut open = connect(&app, &rotated).await.unwrap();
    open.send(Message::text(encode(Up::hello("test"))))
        .await
        .unwrap();
    assert!(matches!(next_down(&mut open).await, Down::Welcome { .. }));
    app.gql_ok(
        &s.t.access,
        "mutation($b: UUID!) { revokeBridge(id: $b) { revokedAt } }",
        json!({"b": s.bridge}),
    )
    .await;
    assert_eq!(status_of(connect(&app, &rotated).await.unwrap_err()), 401);
    // A tunnel that was open when the bridge was revoked is cut off at once, without waiting for a heartbeat.
    let Down::Error { code, .. } = next_answer(&mut open).await else {
        panic!("an error frame")
    };
    assert_eq!(code, "revoked");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match open.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));

    // Another tenant's bridge is not found; staff cannot register bridges.
    let body = app
        .gql(
            Some(&other.access),
            "query($b: UUID!) { bridge(id: $b) { id } }",
            json!({"b": s.bridge}),
        )
        .await;
    assert_eq!(gql_code(&body), "not_found");
    let (_, staff) = app.add_member(&s.t, "STAFF").await;
    let body = app
        .gql(
            Some(&staff),
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"x\") { token } }",
            json!({"v": s.venue}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");
}

#[tokio::test]
async fn with_the_tunnel_cut_the_station_still_goes_off_on_time_and_the_events_arrive_once_even_across_a_restart(
) {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let proxy = switchyard_tests::proxy::Proxy::start(app.addr).await;
    let journal = journal_path();
    let config = |journal: &std::path::Path| {
        bridge_config(
            format!("ws://{}/edge/v1/tunnel", proxy.addr),
            &s.token,
            journal,
        )
    };
    let (stop_first, stopped) = tokio::sync::watch::channel(false);
    let first = tokio::spawn(edge_bridge::run(config(&journal), stopped));

    let session = paid_session(&app, &s.t, s.venue, s.station, 30, "offline-1").await;
    let id: Uuid = session["session_id"].as_str().unwrap().parse().unwrap();
    wait_until("the plug is on", || async { plug.is_on() }).await;

    // The session's planned end comes in three seconds (a test cannot wait for a whole minute); the bridge gets
    // the new schedule (a command's acknowledgement proves it), then the link drops.
    let until = chrono::Utc::now() + chrono::Duration::seconds(3);
    let deadline = Instant::now() + Duration::from_secs(3);
    end_soon(&app, s.t.id, s.station, until).await;
    proxy.cut();
    wait_until("the bridge is seen offline", || async {
        !bridge_online(&app, s.t.id).await
    })
    .await;
    // Staff extend the session while the venue is offline: the bridge cannot hear of it.
    let (status, extended) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{id}/extend"),
            Some(&s.t.access),
            Some(json!({"minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{extended}");

    wait_until("the plug goes off without the cloud", || async {
        !plug.is_on()
    })
    .await;
    let off = plug.switches().last().unwrap().clone();
    assert!(!off.on);
    assert!(
        off.at + Duration::from_millis(250) >= deadline && off.at <= deadline + LATE,
        "off {:?} from the planned end",
        off.at.checked_duration_since(deadline).map_or_else(
            || format!("-{:?}", deadline - off.at),
            |late| format!("+{late:?}")
        )
    );
    let switches_at_the_end = plug.switches().len();

    // Meanwhile the cloud's billing, thinking the session runs on, charges as far as five minutes from now.
    let at = chrono::Utc::now() + chrono::Duration::minutes(5);
    assert_eq!(
        switchyard_tests::bill_tick(s.t.id, id, at).await,
        60,
        "six started minutes at 10 a minute"
    );

    // The bridge restarts while still cut off: the off event waits in its journal.
    stop_first.send(true).unwrap();
    first.await.unwrap().unwrap();
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.contains("planned_end"), "{text}");
    proxy.restore();
    let _stop_second = start_bridge(config(&journal));
    let recorded = || async {
        sqlx::query_as::<_, (i64, Value, chrono::DateTime<chrono::Utc>)>(
            "select seq, body, occurred_at from bridge_event where tenant_id = $1 and bridge_id = $2 order by seq",
        )
        .bind(s.t.id)
        .bind(s.bridge)
        .fetch_all(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap()
    };
    wait_until("the off event arrives", || async {
        recorded()
            .await
            .iter()
            .any(|(_, b, _)| b["reason"] == "planned_end")
    })
    .await;
    let events = recorded().await;
    let seqs: Vec<i64> = events.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "no gap"
    );
    let ends: Vec<_> = events
        .iter()
        .filter(|(_, b, _)| b["reason"] == "planned_end")
        .collect();
    assert_eq!(ends.len(), 1, "once: {events:?}");
    let (_, body, switched_off_at) = ends[0];
    assert_eq!(body["session_id"], id.to_string());
    assert!(
        (*switched_off_at - until).num_milliseconds().abs() < 2_000,
        "stamped by the cloud's clock: {switched_off_at} vs {until}"
    );

    // The cloud takes the bridge's end as the session's: it expired then, one started minute is billed, and the
    // five minutes charged past it went back to the wallet.
    let ended = app
        .gql_ok(
            &s.t.access,
            "query($id: UUID!) { session(id: $id) { status endedAt switchedOffAt chargedAmount patronId } }",
            json!({"id": id}),
        )
        .await["session"]
        .clone();
    assert_eq!(ended["status"], "EXPIRED", "{ended}");
    let at = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    assert_eq!(at(&ended["endedAt"]), *switched_off_at);
    assert_eq!(at(&ended["switchedOffAt"]), *switched_off_at);
    assert_eq!(ended["chargedAmount"], 10);
    let patron: Uuid = ended["patronId"].as_str().unwrap().parse().unwrap();
    let wallet = crate::sessions::wallet(&app, &s.t.access, patron).await;
    assert_eq!(wallet["balance"], 990, "{wallet}");
    assert_eq!(
        wallet["statement"][0]["kind"], "session_correction",
        "{wallet}"
    );
    assert_eq!(wallet["statement"][0]["amount"], 50, "{wallet}");
    // The station is not switched on again, not by the restarted bridge nor by the schedule it got before the
    // cloud heard of the end.
    wait_until("the cloud's schedule has the station off", || async {
        let on: bool =
            sqlx::query_scalar("select expected_on from station where tenant_id = $1 and id = $2")
                .bind(s.t.id)
                .bind(s.station)
                .fetch_one(&mut *app.tenant_tx(s.t.id).await)
                .await
                .unwrap();
        !on
    })
    .await;
    assert_eq!(
        plug.switches().len(),
        switches_at_the_end,
        "{:?}",
        plug.switches()
    );
    assert!(!plug.is_on());

    wait_until("the journal is acknowledged", || async {
        std::fs::read_to_string(&journal).unwrap().lines().count() == 1
    })
    .await;
    let _ = std::fs::remove_file(&journal);
}

/// An agent key for the floor's station, and a bridge token for its venue.
async fn agent_station(app: &TestApp, f: &crate::sessions::Floor) -> (String, String) {
    let key = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!) { issueAgentKey(stationId: $s) }",
            json!({"s": f.station}),
        )
        .await["issueAgentKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"PCs\") { token } }",
            json!({"v": f.venue}),
        )
        .await["createBridge"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    (key, token)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Lines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// The real `edge-bridge agent-sim` on `url` with `key`, heartbeating every 100 ms: the process and its output
/// (one JSON line per message it got).
fn agent_sim(url: &str, key: &str) -> (tokio::process::Child, Lines) {
    use tokio::io::AsyncBufReadExt;
    let mut sim = tokio::process::Command::new(crate::binaries::binary("edge-bridge"))
        .args([
            "agent-sim",
            "--url",
            url,
            "--key",
            key,
            "--heartbeat-ms",
            "100",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(sim.stdout.take().unwrap()).lines();
    (sim, lines)
}

/// The agent simulator's next message.
async fn next(lines: &mut Lines) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str::<Value>(&line).unwrap()
}

#[tokio::test]
async fn a_pc_agent_gets_session_start_extend_and_stop_and_a_wrong_key_is_refused() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let (key, token) = agent_station(&app, &f).await;
    let stored = app
        .gql_ok(
            &f.t.access,
            "query($s: UUID!) { station(id: $s) { controlSettings } }",
            json!({"s": f.station}),
        )
        .await;
    let hash = stored["station"]["controlSettings"]["agent_key_sha256"]
        .as_str()
        .unwrap();
    assert_eq!(hash.len(), 64, "only the key's SHA-256 is stored");
    assert!(!stored.to_string().contains(&key));
    let agent_port = free_port();
    let journal = journal_path();
    let config = edge_bridge::Config {
        agent_listen: Some(format!("127.0.0.1:{agent_port}").parse().unwrap()),
        ..bridge_config(tunnel_url(&app), &token, &journal)
    };
    let _stop = start_bridge(config);
    let url = format!("ws://127.0.0.1:{agent_port}/ws/agent/{}", f.station);

    // A wrong key is refused with a reason (once the bridge has the schedule, the reason is about the key).
    let refusal = |key: String| {
        let url = url.clone();
        async move {
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
                return String::new();
            };
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(frame))))) => frame.reason.to_string(),
                _ => String::new(),
            }
        }
    };
    wait_until("the bridge knows the agent station", || async {
        refusal("syag_wrong".into())
            .await
            .contains("key is missing or wrong")
    })
    .await;

    let (_sim, mut lines) = agent_sim(&url, &key);
    let session = paid_session(&app, &f.t, f.venue, f.station, 30, "agent-1").await;
    let started = next(&mut lines).await;
    assert_eq!(started["type"], "session_start");
    assert_eq!(started["session_id"], session["session_id"]);
    let duration = started["duration_seconds"].as_i64().unwrap();
    assert!((1790..=1800).contains(&duration), "{duration}");

    let id = session["session_id"].as_str().unwrap();
    let (status, _) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{id}/extend"),
            Some(&f.t.access),
            Some(json!({"minutes": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let extended = next(&mut lines).await;
    assert_eq!(
        extended,
        json!({"type": "session_extend", "session_id": session["session_id"], "additional_seconds": 600})
    );
    let (status, _) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stopped = next(&mut lines).await;
    assert_eq!(
        stopped,
        json!({"type": "session_stop", "session_id": session["session_id"], "action": "lock"})
    );

    // A key issued again (the old one lost or leaked) ends the agent still connected with the old one, which opens
    // nothing any more; the new key's agent gets the next session.
    let new_key = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!) { issueAgentKey(stationId: $s) }",
            json!({"s": f.station}),
        )
        .await["issueAgentKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        next(&mut lines).await,
        json!({"type": "closed", "reason": "the station's agent key was issued again; connect with the new key"})
    );
    assert!(refusal(key.clone())
        .await
        .contains("key is missing or wrong"));
    let (_new_sim, mut new_lines) = agent_sim(&url, &new_key);
    let session = paid_session(&app, &f.t, f.venue, f.station, 30, "agent-2").await;
    let started = next(&mut new_lines).await;
    assert_eq!(
        (started["type"].clone(), started["session_id"].clone()),
        (json!("session_start"), session["session_id"].clone())
    );
    let _ = std::fs::remove_file(&journal);
}

/// Moves the planned end of the station's running session to `until` and waits until the bridge has the new
/// schedule (the acknowledgement of a command sent with it proves it). Tests use it for planned ends seconds away.
async fn end_soon(
    app: &TestApp,
    tenant: Uuid,
    station: Uuid,
    until: chrono::DateTime<chrono::Utc>,
) {
    let db = switchyard_tests::app_db(1);
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(tenant))
        .await
        .unwrap();
    sqlx::query(
        "update session set planned_end_at = $3 where tenant_id = $1 and station_id = $2 and status = 'active'",
    )
    .bind(tenant)
    .bind(station)
    .bind(until)
    .execute(tx.conn())
    .await
    .unwrap();
    let venue: Uuid = sqlx::query_scalar(
        "update station set expected_until = $3 where tenant_id = $1 and id = $2 returning venue_id",
    )
    .bind(tenant)
    .bind(station)
    .bind(until)
    .fetch_one(tx.conn())
    .await
    .unwrap();
    let command: Uuid = sqlx::query_scalar(
        "insert into device_command (tenant_id, id, station_id, command, payload)
         values ($1, gen_random_uuid(), $2, 'extend', '{}') returning id",
    )
    .bind(tenant)
    .bind(station)
    .fetch_one(tx.conn())
    .await
    .unwrap();
    tx.wake_venue(venue).await.unwrap();
    tx.commit().await.unwrap();
    wait_until("the bridge has the new schedule", || async {
        let acked: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "select acked_at from device_command where tenant_id = $1 and id = $2",
        )
        .bind(tenant)
        .bind(command)
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap();
        acked.is_some()
    })
    .await;
}

async fn bridge_online(app: &TestApp, tenant: Uuid) -> bool {
    sqlx::query_scalar("select bool_or(online) from bridge where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pc_agent_is_warned_on_time_with_the_tunnel_cut_and_its_heartbeats_reach_the_cloud() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let (key, token) = agent_station(&app, &f).await;
    let proxy = switchyard_tests::proxy::Proxy::start(app.addr).await;
    let agent_port = free_port();
    let journal = journal_path();
    let config = edge_bridge::Config {
        agent_listen: Some(format!("127.0.0.1:{agent_port}").parse().unwrap()),
        readings: Some(Duration::from_millis(100)),
        ..bridge_config(
            format!("ws://{}/edge/v1/tunnel", proxy.addr),
            &token,
            &journal,
        )
    };
    let _stop = start_bridge(config);
    let url = format!("ws://127.0.0.1:{agent_port}/ws/agent/{}", f.station);
    wait_until("the bridge is online", || bridge_online(&app, f.t.id)).await;
    let session = paid_session(&app, &f.t, f.venue, f.station, 30, "agent-offline").await;
    // The agent is refused until the bridge has the schedule with its station; then it gets the session.
    let (_sim, mut lines, first) = loop {
        let (sim, mut lines) = agent_sim(&url, &key);
        let first = next(&mut lines).await;
        if first["type"] != "closed" {
            break (sim, lines, first);
        }
    };
    assert_eq!(first["type"], "session_start", "{first}");
    assert_eq!(first["session_id"], session["session_id"]);

    // The agent's heartbeats reach the cloud as the station's device state.
    let state = "query($s: UUID!) { station(id: $s) { deviceState { kind report reportedAt } } }";
    wait_until("the agent's heartbeat is relayed", || async {
        let data = app
            .gql_ok(&f.t.access, state, json!({"s": f.station}))
            .await;
        let d = &data["station"]["deviceState"];
        d["kind"] == "agent_state"
            && d["report"]["connected"] == true
            && d["report"]["cpu_usage"] == 12.5
            && d["report"]["remaining_seconds"]
                .as_i64()
                .is_some_and(|r| r > 1700)
    })
    .await;
    // The floor's tile says the agent is connected.
    let (_, d) = app.get("/api/v1/dashboard", &f.t.access).await;
    let tile = d["venues"][0]["stations"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["station_id"] == json!(f.station)))
        .cloned()
        .unwrap_or_else(|| panic!("no tile for the station: {d}"));
    assert_eq!(
        (&tile["device"]["kind"], &tile["device"]["reachable"]),
        (&json!("agent_state"), &json!(true)),
        "{tile}"
    );

    // The end comes in 62 seconds: the 5-minute warning is due at once (the link is still up).
    let until = chrono::Utc::now() + chrono::Duration::seconds(62);
    let due = Instant::now() + Duration::from_secs(2);
    end_soon(&app, f.t.id, f.station, until).await;
    let warned = loop {
        let m = next(&mut lines).await;
        if m["type"] == "session_warning" {
            break m;
        }
    };
    assert_eq!(warned["minutes_left"], 5, "{warned}");

    // The link drops; the 1-minute warning still comes on time, from the bridge's own clock.
    proxy.cut();
    wait_until("the bridge is seen offline", || async {
        !bridge_online(&app, f.t.id).await
    })
    .await;
    let warned = loop {
        let m = next(&mut lines).await;
        if m["type"] == "session_warning" {
            break m;
        }
    };
    let at = Instant::now();
    assert_eq!(warned["minutes_left"], 1, "{warned}");
    assert!(
        at + Duration::from_millis(250) >= due && at <= due + LATE,
        "warned {:?} after it was due",
        at.checked_duration_since(due)
    );
    assert!(
        !bridge_online(&app, f.t.id).await,
        "the warning came while offline"
    );
    let _ = std::fs::remove_file(&journal);
}

/// An idle PC's station is online while its agent is connected to the venue's bridge, offline once the agent is
/// gone, and online again when it comes back; each change heard live. An agent whose PC was switched off at the wall
/// (its socket answers no ping) is found dead by the bridge's pings.
#[tokio::test]
async fn an_idle_pc_station_is_online_while_its_agent_is_connected() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let (key, token) = agent_station(&app, &f).await;
    let agent_port = free_port();
    let journal = journal_path();
    let config = edge_bridge::Config {
        agent_listen: Some(format!("127.0.0.1:{agent_port}").parse().unwrap()),
        readings: Some(Duration::from_millis(100)),
        local_keepalive: edge_bridge::Keepalive {
            ping: Duration::from_millis(200),
            dead_after: Duration::from_millis(3000),
        },
        ..bridge_config(
            format!("ws://{}/edge/v1/tunnel", app.addr),
            &token,
            &journal,
        )
    };
    let _stop = start_bridge(config);
    wait_until("the bridge is online", || bridge_online(&app, f.t.id)).await;
    let url = format!("ws://127.0.0.1:{agent_port}/ws/agent/{}", f.station);
    let seen = |connected: bool, status: &'static str| {
        let (app, token, station) = (&app, f.t.access.clone(), f.station);
        async move {
            let data = app
                .gql_ok(
                    &token,
                    "query($s: UUID!) { station(id: $s) { status deviceState { kind report } } }",
                    json!({"s": station}),
                )
                .await;
            let s = &data["station"];
            s["status"] == status
                && s["deviceState"]["kind"] == "agent_state"
                && s["deviceState"]["report"]["connected"] == connected
        }
    };
    // The agent is refused until the bridge has the schedule with its station (the simulator then exits); once in,
    // the cloud hears it connected and the station is online.
    let connect = || async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (mut sim, lines) = agent_sim(&url, &key);
            loop {
                if seen(true, "ONLINE").await {
                    return (sim, lines);
                }
                if sim.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the agent never showed as connected"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let (mut sim, _lines) = connect().await;
    // Gone (its PC switched off): offline.
    sim.kill().await.unwrap();
    wait_until("the station is offline without its agent", || {
        seen(false, "OFFLINE")
    })
    .await;
    // Back: online again.
    let (mut sim, _lines) = connect().await;
    sim.kill().await.unwrap();
    wait_until("the station is offline again", || seen(false, "OFFLINE")).await;

    // A PC switched off at the wall: its agent's socket stays open but answers no ping. Connected at first, then
    // closed by the bridge and disconnected.
    let unanswering = || async {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    };
    let silent = unanswering().await;
    wait_until("the unanswering agent is connected", || {
        seen(true, "ONLINE")
    })
    .await;
    wait_until("the unanswering agent is found dead", || {
        seen(false, "OFFLINE")
    })
    .await;
    drop(silent);

    // The PC back on before the bridge noticed the old socket died: the new agent takes the station's place, the old
    // connection ends, and the new one stays (the old one's end does not take the new one with it).
    // The old one keeps reading (so it answers pings, and only a replacement ends it) and tells how it ended.
    let mut old = unanswering().await;
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let reason = loop {
            match old.next().await {
                Some(Ok(Message::Close(frame))) => {
                    break frame.map(|f| f.reason.to_string()).unwrap_or_default()
                }
                None | Some(Err(_)) => break String::new(),
                Some(Ok(_)) => {}
            }
        };
        let _ = ended_tx.send(reason);
    });
    wait_until("the old socket is connected", || seen(true, "ONLINE")).await;
    let (mut sim, mut lines) = agent_sim(&url, &key);
    let reason = tokio::time::timeout(Duration::from_secs(20), ended)
        .await
        .expect("the replaced connection never ended")
        .unwrap();
    assert_eq!(reason, "replaced by a newer connection");
    let heard: Vec<String> = sqlx::query_scalar(
        "select e.data ->> 'status' from (
           select data, created_at from live_event where tenant_id = $1 and station_id = $2 and kind = 'station.status'
           union all
           select data, created_at from live_event_pending where tenant_id = $1 and station_id = $2
             and kind = 'station.status') e
          order by e.created_at",
    )
    .bind(f.t.id)
    .bind(f.station)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert!(
        heard.ends_with(&["offline".to_owned(), "online".to_owned()]),
        "the station's status as heard live: {heard:?}"
    );
    // The new agent is the station's: a session started now reaches it.
    let session = paid_session(&app, &f.t, f.venue, f.station, 30, "after-replace").await;
    let start = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let m = next(&mut lines).await;
            if m["type"] == "session_start" {
                break m;
            }
        }
    })
    .await
    .expect("the new agent never got the session: it was taken with the old connection");
    assert_eq!(start["session_id"], session["session_id"]);
    assert!(
        sim.try_wait().unwrap().is_none(),
        "the new agent's connection was closed"
    );
}

#[tokio::test]
async fn sessions_started_through_graphql_end_at_their_planned_end_on_the_plug_and_the_agent() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let pc: Uuid = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "PC-Agent", "kind": "PC", "control": "AGENT"}}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let key = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!) { issueAgentKey(stationId: $s) }",
            json!({"s": pc}),
        )
        .await["issueAgentKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent_port = free_port();
    let journal = journal_path();
    let config = edge_bridge::Config {
        agent_listen: Some(format!("127.0.0.1:{agent_port}").parse().unwrap()),
        ..bridge_config(tunnel_url(&app), &s.token, &journal)
    };
    let _stop = start_bridge(config);

    let patron = funded_patron(&app, &s.t, s.venue, "expiry").await;
    let on_plug = wallet_session(&app, &s.t.access, s.station, patron, Some(30)).await;
    let on_pc = wallet_session(&app, &s.t.access, pc, patron, Some(30)).await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    let url = format!("ws://127.0.0.1:{agent_port}/ws/agent/{pc}");
    let (_sim, mut lines, first) = loop {
        let (sim, mut lines) = agent_sim(&url, &key);
        let first = next(&mut lines).await;
        if first["type"] != "closed" {
            break (sim, lines, first);
        }
    };
    assert_eq!(first["type"], "session_start", "{first}");
    assert_eq!(first["session_id"], on_pc.to_string());

    // Both planned ends come in two seconds (a test cannot wait for a whole minute).
    let until = chrono::Utc::now() + chrono::Duration::seconds(2);
    let deadline = Instant::now() + Duration::from_secs(2);
    end_soon(&app, s.t.id, s.station, until).await;
    end_soon(&app, s.t.id, pc, until).await;
    let stop = loop {
        let m = next(&mut lines).await;
        if m["type"] == "session_stop" {
            break m;
        }
        assert_eq!(m["type"], "session_warning", "{m}");
    };
    let agent_stopped = Instant::now();
    assert_eq!(stop["session_id"], on_pc.to_string());
    assert_eq!(stop["action"], "lock");
    wait_until("the plug is off", || async { !plug.is_on() }).await;
    let off = plug.switches().last().unwrap().clone();
    for (what, at) in [("plug", off.at), ("agent", agent_stopped)] {
        assert!(
            at + Duration::from_millis(250) >= deadline && at <= deadline + LATE,
            "{what} stopped {:?} after the planned end",
            at.checked_duration_since(deadline)
        );
    }
    // The cloud takes the bridge's reports: both sessions expired, and record when they were switched off.
    for id in [on_plug, on_pc] {
        let query = "query($id: UUID!) { session(id: $id) { status endedAt switchedOffAt } }";
        wait_until("the session is expired", || async {
            app.gql_ok(&s.t.access, query, json!({"id": id})).await["session"]["status"]
                == "EXPIRED"
        })
        .await;
        let ended = app.gql_ok(&s.t.access, query, json!({"id": id})).await["session"].clone();
        let at = |v: &Value| {
            v.as_str()
                .unwrap()
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        };
        // Billing ends at the planned end (never after it), or at the switch-off if that came first.
        let (end, off) = (at(&ended["endedAt"]), at(&ended["switchedOffAt"]));
        assert!(end <= off && end <= until, "{ended}");
        assert!((off - until).num_milliseconds().abs() < 2_000, "{ended}");
    }
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_station_is_online_while_its_device_answers_through_an_online_bridge() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let status = |station: Uuid| {
        let app = &app;
        let token = s.t.access.clone();
        async move {
            app.gql_ok(
                &token,
                "query($s: UUID!) { station(id: $s) { status } }",
                json!({"s": station}),
            )
            .await["station"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    // No bridge yet: the plug's station cannot be reached. A manual station always can.
    assert_eq!(status(s.station).await, "OFFLINE");
    let manual = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { status } }",
            json!({"i": {"venueId": s.venue, "name": "Desk", "kind": "KIOSK", "control": "MANUAL"}}),
        )
        .await;
    assert_eq!(manual["createStation"]["status"], "ONLINE", "{manual}");

    let proxy = switchyard_tests::proxy::Proxy::start(app.addr).await;
    let journal = journal_path();
    let _bridge = start_bridge(edge_bridge::Config {
        readings: Some(Duration::from_millis(100)),
        ..bridge_config(
            format!("ws://{}/edge/v1/tunnel", proxy.addr),
            &s.token,
            &journal,
        )
    });
    let until_status = |want: &'static str, what: &'static str| {
        let status = &status;
        let station = s.station;
        async move {
            wait_until(what, || async { status(station).await == want }).await;
        }
    };
    // (Each step waits until the plug's reading shows it.)
    let last_report = || async {
        sqlx::query_scalar::<_, Option<Value>>(
            "select body from bridge_event where tenant_id = $1 and station_id = $2
               and kind = 'device_state' order by seq desc limit 1",
        )
        .bind(s.t.id)
        .bind(s.station)
        .fetch_optional(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .unwrap_or_default()
    };
    wait_until("the plug is read", || async {
        last_report().await["reachable"] == true
    })
    .await;
    until_status("ONLINE", "the plug answers through the bridge").await;
    plug.unplug(true);
    until_status("OFFLINE", "the unplugged plug is offline").await;
    plug.unplug(false);
    until_status("ONLINE", "the plug is back").await;
    // Each change was heard live, said to come from the station's presence.
    let heard: Vec<Value> = sqlx::query_scalar(
        "select data->'status' from live_event where tenant_id = $1 and station_id = $2 and kind = 'station.status'
          and data->>'by' = 'presence' order by seq",
    )
    .bind(s.t.id)
    .bind(s.station)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(heard, [json!("online"), json!("offline"), json!("online")]);

    // In a session it is in session.
    let session = paid_session(&app, &s.t, s.venue, s.station, 30, "presence").await;
    assert_eq!(status(s.station).await, "IN_SESSION");
    wait_until("the plug is read on", || async {
        last_report().await["on"] == true
    })
    .await;
    // Pulled out during the session: when the session stops, the station cannot be reached.
    plug.unplug(true);
    wait_until("the unplugged plug is read", || async {
        last_report().await["reachable"] == false
    })
    .await;
    assert_eq!(status(s.station).await, "IN_SESSION");
    let stopped = app
        .gql_ok(
            &s.t.access,
            "mutation($id: UUID!) { stopSession(id: $id) { status } }",
            json!({"id": session["session_id"]}),
        )
        .await;
    assert_eq!(stopped["stopSession"]["status"], "ENDED", "{stopped}");
    assert_eq!(status(s.station).await, "OFFLINE");
    // Back in: online, and switched off as the session's end asked.
    plug.unplug(false);
    until_status("ONLINE", "the plug is back after the session").await;
    wait_until("the plug is read off", || async {
        let report = last_report().await;
        report["reachable"] == true && report["on"] == false
    })
    .await;

    // The tunnel cut: with the bridge offline the plug cannot be reached. Back, the station is online again from
    // what the plug said last, though it says nothing new.
    let reports = || async {
        sqlx::query_scalar::<_, i64>(
            "select count(*) from bridge_event where tenant_id = $1 and station_id = $2 and kind = 'device_state'",
        )
        .bind(s.t.id)
        .bind(s.station)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let before = reports().await;
    proxy.cut();
    wait_until("the bridge is seen offline", || async {
        !bridge_online(&app, s.t.id).await
    })
    .await;
    assert_eq!(status(s.station).await, "OFFLINE");
    proxy.restore();
    wait_until("the bridge is back", || async {
        bridge_online(&app, s.t.id).await
    })
    .await;
    assert_eq!(status(s.station).await, "ONLINE");
    assert_eq!(reports().await, before);
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_plug_switched_by_hand_during_a_session_is_reported_and_set_right() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let journal = journal_path();
    let metrics_port = free_port();
    let config = edge_bridge::Config {
        readings: Some(Duration::from_millis(100)),
        metrics_listen: Some(format!("127.0.0.1:{metrics_port}").parse().unwrap()),
        ..bridge_config(tunnel_url(&app), &s.token, &journal)
    };
    let _stop = start_bridge(config);
    paid_session(&app, &s.t, s.venue, s.station, 30, "by-hand").await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    let state = "query($s: UUID!) { station(id: $s) { deviceState { kind report } } }";
    let reading = || async {
        app.gql_ok(&s.t.access, state, json!({"s": s.station}))
            .await["station"]["deviceState"]
            .clone()
    };
    wait_until("the plug's power reading reaches the cloud", || async {
        let d = reading().await;
        d["kind"] == "device_state" && d["report"]["on"] == true && d["report"]["power_w"] == 120.5
    })
    .await;
    // The floor's tile shows the same reading.
    let (_, d) = app.get("/api/v1/dashboard", &s.t.access).await;
    let tile = d["venues"][0]["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["station_id"] == json!(s.station))
        .cloned()
        .unwrap_or_else(|| panic!("no tile for the station: {d}"));
    let device = &tile["device"];
    assert_eq!(
        (
            &device["kind"],
            &device["reachable"],
            &device["on"],
            &device["power_w"]
        ),
        (
            &json!("device_state"),
            &json!(true),
            &json!(true),
            &json!(120.5)
        ),
        "{d}"
    );

    // Someone switches the plug off at its button: the bridge sees it, reports it, and switches it back on.
    plug.press(false);
    wait_until("the plug is on again", || async {
        plug.switches().len() == 2
    })
    .await;
    assert!(plug.is_on());
    assert_eq!(
        plug.switches().iter().map(|s| s.on).collect::<Vec<_>>(),
        [true, true]
    );
    let reports: Vec<Value> = sqlx::query_scalar(
        "select body from bridge_event where tenant_id = $1 and bridge_id = $2 and kind = 'device_state' order by seq",
    )
    .bind(s.t.id)
    .bind(s.bridge)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert!(
        reports
            .iter()
            .any(|r| r["on"] == false && r["power_w"] == 0.0),
        "the hand switch is reported: {reports:?}"
    );
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_session_switches_a_tasmota_plug_over_real_mqtt_with_its_pulse_time_backup() {
    let mqtt = switchyard_tests::env_url("TEST_MQTT_URL");
    let app = spawn_app().await;
    let topic = format!("tasmota_{}", Uuid::new_v4().simple());
    let plug = switchyard_tests::tasmota_sim::TasmotaSim::start(&mqtt, &topic).await;
    let f = crate::sessions::floor(&app).await;
    let (station, token) =
        controlled_station(&app, &f, "KARAOKE_ROOM", "TASMOTA", json!({"topic": topic})).await;
    let journal = journal_path();
    let _bridge = run_bridge(&app, &token, &journal);
    // On first sight the bridge asks the plug for its state (an empty POWER) and reports it.
    wait_until("the plug's state is reported", || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from bridge_event where tenant_id = $1 and station_id = $2 and kind = 'device_state'",
        )
        .bind(f.t.id)
        .bind(station)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
        n == 1
    })
    .await;

    let session = paid_session(&app, &f.t, f.venue, station, 20, "tasmota-1").await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    // PulseTime is seconds + 100: about 20 minutes (+2 s) as the plug's own backup.
    let pulse = plug.pulse_times()[0];
    assert!((1295..=1303).contains(&pulse), "{pulse}");
    let id = session["session_id"].as_str().unwrap();
    app.send(
        Method::DELETE,
        &format!("/api/v1/sessions/{id}"),
        Some(&f.t.access),
        None,
    )
    .await;
    wait_until("the plug is off", || async { !plug.is_on() }).await;
    assert_eq!(plug.powers(), ["ON", "OFF"]);
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_session_opens_and_closes_a_mikrotik_firewall_rule_through_the_routeros_api() {
    let router = switchyard_tests::routeros_fake::RouterOsFake::start(
        "switchyard",
        "router-pass-1",
        &["ether5"],
    )
    .await;
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let settings = json!({"host": router.addr.to_string(), "mac": "AA:BB:CC:DD:EE:01",
                          "credentials_ref": "venue-router"});
    let (station, token) = controlled_station(&app, &f, "CONSOLE", "MIKROTIK", settings).await;
    let journal = journal_path();
    let _bridge = run_bridge(&app, &token, &journal);
    let comment = format!("switchyard:{station}");
    // No session: the bridge blocks the console's MAC with a drop rule.
    wait_until("the console is blocked", || async {
        router.rules().len() == 1
    })
    .await;
    let rule = &router.rules()[0];
    assert_eq!(rule.attributes["src-mac-address"], "AA:BB:CC:DD:EE:01");
    assert_eq!(rule.attributes["action"], "drop");
    assert_eq!(rule.attributes["chain"], "forward");
    assert_eq!(rule.attributes["comment"], comment);
    assert!(router
        .logins()
        .iter()
        .all(|(name, ok)| name == "switchyard" && *ok));

    let session = paid_session(&app, &f.t, f.venue, station, 15, "router-1").await;
    wait_until("the console is let through", || async {
        router.rules().is_empty()
    })
    .await;
    let id = session["session_id"].as_str().unwrap();
    app.send(
        Method::DELETE,
        &format!("/api/v1/sessions/{id}"),
        Some(&f.t.access),
        None,
    )
    .await;
    wait_until("the console is blocked again", || async {
        router.rules().len() == 1
    })
    .await;
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_session_started_on_one_api_process_reaches_a_bridge_connected_to_another_through_redis()
{
    let redis = switchyard_tests::env_url("TEST_REDIS_URL");
    across_replicas(&redis).await;
}

#[tokio::test]
async fn a_session_started_on_one_api_process_reaches_a_bridge_connected_to_another_through_postgres(
) {
    across_replicas("").await;
}

/// Two real API processes on the same database, waking each other through `redis_url` (empty: Postgres
/// `notify`): the bridge holds its tunnel to B; the session starts on A, and its command reaches the plug long
/// before the bridge's next heartbeat (which would also collect it).
async fn across_replicas(redis_url: &str) {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let (_a, a_url) = crate::binaries::api_replica(redis_url).await;
    let (_b, b_url) = crate::binaries::api_replica(redis_url).await;
    assert_ne!(a_url, b_url);
    let journal = journal_path();
    let config = edge_bridge::Config {
        heartbeat: Duration::from_secs(600),
        ..bridge_config(
            format!(
                "{}/edge/v1/tunnel",
                b_url.trim().replacen("http://", "ws://", 1)
            ),
            &s.token,
            &journal,
        )
    };
    let _stop = start_bridge(config);
    wait_until("the bridge is online through B", || async {
        app.gql_ok(
            &s.t.access,
            "query($b: UUID!) { bridge(id: $b) { online } }",
            json!({"b": s.bridge}),
        )
        .await["bridge"]["online"]
            == true
    })
    .await;
    // It is B's tunnel: B's metrics count it, A's do not.
    let open = |url: String| async move {
        metric(
            &metrics_page(&format!("{}/metrics", url.trim())).await,
            "edge_tunnels_open",
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        (open(a_url.clone()).await, open(b_url.clone()).await),
        (0.0, 1.0)
    );

    let patron = funded_patron(&app, &s.t, s.venue, "replica-cash").await;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/sessions/start", a_url.trim()))
        .bearer_auth(&s.t.access)
        .header("idempotency-key", "replica-1")
        .json(&json!({"station_id": s.station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    wait_until("the plug is on", || async { plug.is_on() }).await;
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn with_wake_ups_lost_commands_and_schedule_changes_reach_the_bridge_at_its_next_heartbeat() {
    // Nothing listens at this Redis: every wake-up is lost.
    let app = switchyard_tests::spawn_app_with(&[("REDIS_URL", "redis://127.0.0.1:9")]).await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let journal = journal_path();
    let metrics_port = free_port();
    let config = edge_bridge::Config {
        heartbeat: Duration::from_millis(300),
        metrics_listen: Some(format!("127.0.0.1:{metrics_port}").parse().unwrap()),
        ..bridge_config(tunnel_url(&app), &s.token, &journal)
    };
    let _stop = start_bridge(config);
    wait_until("the bridge is online", || bridge_online(&app, s.t.id)).await;
    paid_session(&app, &s.t, s.venue, s.station, 30, "lost-wake").await;
    wait_until("the plug is on", || async { plug.is_on() }).await;

    // A new station is a schedule change without a command: the next heartbeat brings it too.
    let stations = || async {
        metric(
            &metrics_page(&format!("http://127.0.0.1:{metrics_port}/metrics")).await,
            "edge_bridge_stations",
        )
    };
    let before = stations().await.unwrap();
    app.gql_ok(
        &s.t.access,
        "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
        json!({"i": {"venueId": s.venue, "name": "Second plug", "kind": "CONSOLE", "control": "SHELLY",
                     "controlSettings": {"host": plug.host(), "generation": 1}}}),
    )
    .await;
    wait_until("the bridge has the new station", || async {
        stations().await == Some(before + 1.0)
    })
    .await;
    let _ = std::fs::remove_file(&journal);
}

/// Says hello on a raw tunnel and reads the welcome and the first schedule: the welcome's `last_seq`.
pub(crate) async fn hello<S>(ws: &mut S) -> u64
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    ws.send(Message::text(encode(Up::hello("attacker"))))
        .await
        .unwrap();
    let Down::Welcome { last_seq, .. } = next_down(ws).await else {
        panic!("welcome first");
    };
    assert!(matches!(next_down(ws).await, Down::Schedule { .. }));
    last_seq
}

/// Reads until the socket closes: the close frame's code, if any (a bounded wait).
async fn closed_with<S>(ws: &mut S, within: Duration) -> Option<u16>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the tunnel did not close in time"))
}

/// A bridge's switch-off report as a frame.
fn switched_off(
    seq: u64,
    station: Uuid,
    session: Uuid,
    at: chrono::DateTime<chrono::Utc>,
) -> Message {
    Message::text(encode(&Up::Event {
        seq,
        occurred_at: at,
        station_id: Some(station),
        event: Event::Switched {
            on: false,
            reason: "planned_end".into(),
            session_id: Some(session),
        },
    }))
}

const ANOMALIES: &str =
    "query($b: UUID!) { bridge(id: $b) { lastSeq anomalies { kind stationId sessionId seq detail } } }";

#[tokio::test]
async fn a_bridge_token_cannot_end_sessions_in_the_past_ended_ones_or_manual_ones_and_each_try_is_an_anomaly(
) {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let session = paid_session(&app, &s.t, s.venue, s.station, 30, "past-end").await;
    let id: Uuid = session["session_id"].as_str().unwrap().parse().unwrap();
    let manual: Uuid = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "Karaoke", "kind": "KARAOKE_ROOM", "control": "MANUAL"}}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let second_plug: Uuid = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "PC-Plug-2", "kind": "PC", "control": "SHELLY",
                         "controlSettings": {"host": plug.host(), "generation": 1}}}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let patron = funded_patron(&app, &s.t, s.venue, "past-end-2").await;
    let on_manual = wallet_session(&app, &s.t.access, manual, patron, Some(30)).await;
    // A third session that the cloud ends itself, with the tunnel up.
    let stopped = wallet_session(&app, &s.t.access, second_plug, patron, Some(30)).await;
    let query = "query($id: UUID!) { session(id: $id) { status startedAt endedAt switchedOffAt chargedAmount patronId } }";
    let state = |id: Uuid| {
        let app = &app;
        let token = s.t.access.clone();
        async move { app.gql_ok(&token, query, json!({"id": id})).await["session"].clone() }
    };
    let started = |v: &Value| {
        v["startedAt"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };

    let mut ws = connect(&app, &s.token).await.unwrap();
    hello(&mut ws).await;
    app.gql_ok(
        &s.t.access,
        "mutation($id: UUID!) { stopSession(id: $id) { status } }",
        json!({"id": stopped}),
    )
    .await;
    let before: Vec<Value> =
        futures_util::future::join_all([id, on_manual, stopped].map(state)).await;
    let wallets_before = crate::sessions::wallet(&app, &s.t.access, patron).await;
    let first_wallet = crate::sessions::wallet(
        &app,
        &s.t.access,
        before[0]["patronId"].as_str().unwrap().parse().unwrap(),
    )
    .await;

    // One second after each start (for the stopped session: halfway through it), "the planned end came".
    for (seq, (station, session, snapshot)) in [
        (s.station, id, &before[0]),
        (manual, on_manual, &before[1]),
        (second_plug, stopped, &before[2]),
    ]
    .into_iter()
    .enumerate()
    {
        let seq = seq as u64 + 1;
        let at = match snapshot["endedAt"].as_str() {
            Some(ended) => {
                let ended = ended.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
                started(snapshot) + (ended - started(snapshot)) / 2
            }
            None => started(snapshot) + chrono::Duration::seconds(1),
        };
        ws.send(switched_off(seq, station, session, at))
            .await
            .unwrap();
        // Acknowledged (the bridge must not send it for ever), recorded, and refused.
        assert_eq!(next_answer(&mut ws).await, Down::Ack { seq });
    }

    // Nothing changed: not the sessions, not the money.
    let after: Vec<Value> =
        futures_util::future::join_all([id, on_manual, stopped].map(state)).await;
    assert_eq!(after, before);
    assert_eq!(after[0]["status"], "ACTIVE");
    assert_eq!(after[1]["status"], "ACTIVE");
    assert_eq!(after[0]["switchedOffAt"], Value::Null);
    assert_eq!(after[2]["switchedOffAt"], Value::Null);
    assert_eq!(
        crate::sessions::wallet(&app, &s.t.access, patron).await,
        wallets_before
    );
    assert_eq!(
        crate::sessions::wallet(
            &app,
            &s.t.access,
            after[0]["patronId"].as_str().unwrap().parse().unwrap()
        )
        .await,
        first_wallet
    );

    // Owners see each refusal.
    let bridge = app
        .gql_ok(&s.t.access, ANOMALIES, json!({"b": s.bridge}))
        .await["bridge"]
        .clone();
    let anomalies = bridge["anomalies"].as_array().unwrap();
    assert_eq!(anomalies.len(), 3, "{bridge}");
    for (anomaly, (station, session, why)) in anomalies.iter().rev().zip([
        (
            s.station,
            id,
            "before the planned end the bridge had been given",
        ),
        (
            manual,
            on_manual,
            "the station is manual; no bridge controls it",
        ),
        (
            second_plug,
            stopped,
            "the cloud ended the session while the tunnel was up",
        ),
    ]) {
        assert_eq!(anomaly["kind"], "end_refused", "{anomaly}");
        assert_eq!(anomaly["stationId"], station.to_string());
        assert_eq!(anomaly["sessionId"], session.to_string());
        assert_eq!(anomaly["detail"]["why"], why, "{anomaly}");
    }
    // Staff do not see them; another tenant does not find the bridge.
    let (_, staff) = app.add_member(&s.t, "STAFF").await;
    let body = app
        .gql(Some(&staff), ANOMALIES, json!({"b": s.bridge}))
        .await;
    assert_eq!(gql_code(&body), "forbidden");
    let other = app.signup().await;
    let body = app
        .gql(Some(&other.access), ANOMALIES, json!({"b": s.bridge}))
        .await;
    assert_eq!(gql_code(&body), "not_found");
}

#[tokio::test]
async fn rotating_or_revoking_a_token_closes_its_tunnels_at_once_and_a_second_connection_replaces_the_first(
) {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;

    // A second connection with the same token: the first is told and closed, the second takes the commands.
    let mut first = connect(&app, &s.token).await.unwrap();
    hello(&mut first).await;
    let mut second = connect(&app, &s.token).await.unwrap();
    hello(&mut second).await;
    let Down::Error { code, .. } = next_answer(&mut first).await else {
        panic!("an error frame")
    };
    assert_eq!(code, "replaced");
    assert_eq!(
        closed_with(&mut first, Duration::from_secs(10)).await,
        Some(1008)
    );
    paid_session(&app, &s.t, s.venue, s.station, 30, "replaced").await;
    let command = loop {
        if let Down::Command { id, station_id, .. } = next_down(&mut second).await {
            assert_eq!(station_id, s.station);
            break id;
        }
    };
    let delivered: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "select delivered_at from device_command where tenant_id = $1 and id = $2",
    )
    .bind(s.t.id)
    .bind(command)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert!(delivered.is_some());

    // Rotating the token closes the live tunnel without waiting for its heartbeat.
    let rotated = app
        .gql_ok(
            &s.t.access,
            "mutation($b: UUID!) { rotateBridgeToken(id: $b) { token } }",
            json!({"b": s.bridge}),
        )
        .await["rotateBridgeToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let Down::Error { code, .. } = next_answer(&mut second).await else {
        panic!("an error frame")
    };
    assert_eq!(code, "revoked");
    assert_eq!(
        closed_with(&mut second, Duration::from_secs(10)).await,
        Some(1008)
    );
    wait_until("the bridge is seen offline", || async {
        !bridge_online(&app, s.t.id).await
    })
    .await;

    // So does revoking the bridge.
    let mut third = connect(&app, &rotated).await.unwrap();
    hello(&mut third).await;
    wait_until("the bridge is online", || bridge_online(&app, s.t.id)).await;
    app.gql_ok(
        &s.t.access,
        "mutation($b: UUID!) { revokeBridge(id: $b) { revokedAt } }",
        json!({"b": s.bridge}),
    )
    .await;
    let Down::Error { code, .. } = next_answer(&mut third).await else {
        panic!("an error frame")
    };
    assert_eq!(code, "revoked");
    assert_eq!(
        closed_with(&mut third, Duration::from_secs(10)).await,
        Some(1008)
    );
}

#[tokio::test]
async fn a_sequence_jump_is_refused_and_cannot_make_the_real_bridge_drop_its_journal() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let mut ws = connect(&app, &s.token).await.unwrap();
    assert_eq!(hello(&mut ws).await, 0);
    let jump = 1u64 << 62;
    ws.send(Message::text(encode(&Up::Event {
        seq: jump,
        occurred_at: chrono::Utc::now(),
        station_id: Some(s.station),
        event: Event::Switched {
            on: true,
            reason: "test".into(),
            session_id: None,
        },
    })))
    .await
    .unwrap();
    let Down::Error { code, message, seq } = next_answer(&mut ws).await else {
        panic!("an error frame")
    };
    assert_eq!((code.as_str(), seq), ("bad_sequence", Some(jump)));
    assert!(message.contains("too far above"), "{message}");
    let bridge = app
        .gql_ok(&s.t.access, ANOMALIES, json!({"b": s.bridge}))
        .await["bridge"]
        .clone();
    assert_eq!(bridge["lastSeq"], 0, "{bridge}");
    assert_eq!(
        bridge["anomalies"][0]["kind"], "seq_out_of_window",
        "{bridge}"
    );
    assert_eq!(bridge["anomalies"][0]["seq"], jump as i64, "{bridge}");
    drop(ws);

    // The real bridge's events (the plug switched on for a session) are journaled from 1 and all arrive.
    let journal = journal_path();
    let _stop = start_bridge(bridge_config(tunnel_url(&app), &s.token, &journal));
    paid_session(&app, &s.t, s.venue, s.station, 30, "jump").await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    wait_until("the journal is acknowledged", || async {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .count()
            <= 1
            && !sqlx::query_scalar::<_, Vec<i64>>(
                "select coalesce(array_agg(seq order by seq), '{}') from bridge_event where tenant_id = $1",
            )
            .bind(s.t.id)
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let seqs: Vec<i64> = sqlx::query_scalar(
        "select seq from bridge_event where tenant_id = $1 and bridge_id = $2 order by seq",
    )
    .bind(s.t.id)
    .bind(s.bridge)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "from 1, no gap"
    );
    let _ = std::fs::remove_file(&journal);
}

/// How late after its planned time a bridge may act offline and still count as on time: the machine running the
/// tests may be loaded, and what these tests tell apart is the planned end from one minutes later (an extension
/// the bridge never heard of), not milliseconds.
const LATE: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_socket_that_never_says_hello_is_closed_by_the_deadline_even_while_it_pings() {
    let app = switchyard_tests::spawn_app_with(&[("EDGE_HELLO_TIMEOUT_MS", "500")]).await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let mut ws = connect(&app, &s.token).await.unwrap();
    let opened = Instant::now();
    // Pings keep coming (every 100 ms) until the cloud closes the socket; the deadline is not moved by them.
    let mut pings = tokio::time::interval(Duration::from_millis(100));
    let closed = loop {
        tokio::select! {
            _ = pings.tick() => {
                if ws.send(Message::Ping(vec![1].into())).await.is_err() {
                    break true;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
                Some(Ok(_)) => {}
            },
        }
        assert!(
            opened.elapsed() < Duration::from_secs(15),
            "still open after 15 s of pings"
        );
    };
    // (Closed while pings flowed every 100 ms: the pings did not move the 500 ms deadline, or the loop's bound would
    // have failed first.)
    assert!(closed);
}

#[tokio::test]
async fn a_tunnel_that_floods_frames_or_bytes_is_closed_and_the_flood_is_an_anomaly() {
    let app = switchyard_tests::spawn_app_with(&[
        ("EDGE_MAX_FRAMES_PER_SEC", "20"),
        ("EDGE_MAX_BYTES_PER_MIN", "20000"),
    ])
    .await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let heartbeat = || {
        Message::text(encode(&Up::Heartbeat {
            sent_at: chrono::Utc::now(),
            clock_offset_ms: None,
        }))
    };

    // Frames: 40 heartbeats at once. (The close frame may be lost to a reset while frames still arrive: the
    // socket closes either way, and the anomaly below tells why.)
    let mut ws = connect(&app, &s.token).await.unwrap();
    hello(&mut ws).await;
    for _ in 0..40 {
        if ws.send(heartbeat()).await.is_err() {
            break;
        }
    }
    let code = closed_with(&mut ws, Duration::from_secs(10)).await;
    assert!(matches!(code, Some(1008) | None), "{code:?}");

    // Bytes: a few frames, each 4 KB of malformed text.
    let mut ws = connect(&app, &s.token).await.unwrap();
    hello(&mut ws).await;
    for _ in 0..8 {
        if ws.send(Message::text("x".repeat(4 * 1024))).await.is_err() {
            break;
        }
    }
    let code = closed_with(&mut ws, Duration::from_secs(10)).await;
    assert!(matches!(code, Some(1008) | None), "{code:?}");

    let bridge = app
        .gql_ok(&s.t.access, ANOMALIES, json!({"b": s.bridge}))
        .await["bridge"]
        .clone();
    let kinds: Vec<&str> = bridge["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["flood", "flood"], "{bridge}");
    // Within the limits, a tunnel is served as before.
    let mut ws = connect(&app, &s.token).await.unwrap();
    hello(&mut ws).await;
    ws.send(heartbeat()).await.unwrap();
    assert!(matches!(
        next_answer(&mut ws).await,
        Down::HeartbeatAck { .. }
    ));
}

#[tokio::test]
async fn a_bridge_can_acknowledge_only_its_own_venues_commands() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    // Another venue of the same tenant, with a plug, a session, and so a command waiting there.
    let other_venue = app.create_venue(&s.t.access, "Second venue").await;
    let f = crate::sessions::Floor {
        t: s.t.clone(),
        venue: other_venue,
        station: Uuid::nil(),
        tariff: Uuid::nil(),
    };
    let (elsewhere, _) = controlled_station(
        &app,
        &f,
        "PC",
        "SHELLY",
        json!({"host": plug.host(), "generation": 1}),
    )
    .await;
    let mut tx = app.tenant_tx(s.t.id).await;
    let command: Uuid = sqlx::query_scalar(
        "insert into device_command (tenant_id, id, station_id, command, payload)
         values ($1, gen_random_uuid(), $2, 'switch_on', '{}') returning id",
    )
    .bind(s.t.id)
    .bind(elsewhere)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut ws = connect(&app, &s.token).await.unwrap();
    hello(&mut ws).await;
    ws.send(Message::text(encode(&Up::CommandDone {
        id: command,
        ok: false,
        detail: Some("forged".into()),
    })))
    .await
    .unwrap();
    let Down::Error { code, seq, .. } = next_answer(&mut ws).await else {
        panic!("an error frame")
    };
    // It answers no event, so it names none.
    assert_eq!((code.as_str(), seq), ("unknown_command", None));
    // Nor can another tenant's bridge.
    let o = site(&app, &plug.host(), 1).await;
    let mut theirs = connect(&app, &o.token).await.unwrap();
    hello(&mut theirs).await;
    theirs
        .send(Message::text(encode(&Up::CommandDone {
            id: command,
            ok: true,
            detail: None,
        })))
        .await
        .unwrap();
    let Down::Error { code, .. } = next_answer(&mut theirs).await else {
        panic!("an error frame")
    };
    assert_eq!(code, "unknown_command");
    let (acked, result): (Option<chrono::DateTime<chrono::Utc>>, Option<String>) = sqlx::query_as(
        "select acked_at, result from device_command where tenant_id = $1 and id = $2",
    )
    .bind(s.t.id)
    .bind(command)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!((acked, result), (None, None));

    // Nor can another tenant's bridge end this tenant's session: naming the station is `unknown_station`, and naming
    // the session on its own station ends nothing.
    let started = paid_session(&app, &s.t, s.venue, s.station, 30, "theirs-off").await;
    let session: Uuid = started["session_id"].as_str().unwrap().parse().unwrap();
    let off = |seq: u64, station: Uuid| Up::Event {
        seq,
        occurred_at: chrono::Utc::now(),
        station_id: Some(station),
        event: Event::Switched {
            on: false,
            reason: "planned_end".into(),
            session_id: Some(session),
        },
    };
    theirs
        .send(Message::text(encode(off(1, s.station))))
        .await
        .unwrap();
    let Down::Error { code, seq, .. } = next_answer(&mut theirs).await else {
        panic!("an error frame")
    };
    assert_eq!((code.as_str(), seq), ("unknown_station", Some(1)));
    theirs
        .send(Message::text(encode(off(2, o.station))))
        .await
        .unwrap();
    assert_eq!(next_answer(&mut theirs).await, Down::Ack { seq: 2 });
    let (status, ended): (String, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "select status::text, ended_at from session where tenant_id = $1 and id = $2",
    )
    .bind(s.t.id)
    .bind(session)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!((status.as_str(), ended), ("active", None));
}

/// The commands a tunnel sends before the first heartbeat is answered (a tunnel's commands follow its hello).
pub(crate) async fn commands_until_heartbeat_ack<S>(ws: &mut S) -> Vec<(Uuid, String)>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    ws.send(Message::text(encode(&Up::Heartbeat {
        sent_at: chrono::Utc::now(),
        clock_offset_ms: None,
    })))
    .await
    .unwrap();
    let mut commands = vec![];
    loop {
        match next_down(ws).await {
            Down::Command { id, command, .. } => commands.push((id, command)),
            Down::HeartbeatAck { .. } => return commands,
            Down::Schedule { .. } | Down::SchedulePart { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A command is marked delivered before its frame is written, so an API process that dies in between (or a write
/// that fails) would lose it. The bridge's next tunnel gets again every recent command that was never acknowledged,
/// until it is; an acknowledged one, or one older than the resend window, is not sent again.
#[tokio::test]
async fn a_command_taken_but_never_acknowledged_is_sent_again_to_the_next_tunnel_until_it_is() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let session = paid_session(&app, &s.t, s.venue, s.station, 30, "resend").await;
    let row = |id: Uuid| {
        let app = &app;
        let tenant = s.t.id;
        async move {
            let row: (Option<chrono::DateTime<chrono::Utc>>, Option<chrono::DateTime<chrono::Utc>>) =
                sqlx::query_as("select delivered_at, acked_at from device_command where tenant_id = $1 and id = $2")
                    .bind(tenant)
                    .bind(id)
                    .fetch_one(&mut *app.tenant_tx(tenant).await)
                    .await
                    .unwrap();
            row
        }
    };

    // The first tunnel takes the switch-on and dies before acknowledging it.
    let mut first = connect(&app, &s.token).await.unwrap();
    hello(&mut first).await;
    let taken = commands_until_heartbeat_ack(&mut first).await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    let (on, ref command) = taken[0];
    assert_eq!(command, "switch_on");
    drop(first);
    let (delivered, acked) = row(on).await;
    assert!(delivered.is_some() && acked.is_none());

    // The next tunnel gets it again, and acknowledges it.
    let mut second = connect(&app, &s.token).await.unwrap();
    hello(&mut second).await;
    assert_eq!(
        commands_until_heartbeat_ack(&mut second).await,
        vec![(on, "switch_on".to_owned())]
    );
    second
        .send(Message::text(encode(&Up::CommandDone {
            id: on,
            ok: true,
            detail: None,
        })))
        .await
        .unwrap();
    wait_until("the switch-on is acknowledged", || async {
        row(on).await.1.is_some()
    })
    .await;
    second.close(None).await.unwrap();

    // Stopping writes the switch-off; a tunnel takes it (not the acknowledged switch-on) and dies.
    let id = session["session_id"].as_str().unwrap();
    let (status, stopped) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    let mut third = connect(&app, &s.token).await.unwrap();
    hello(&mut third).await;
    let taken = commands_until_heartbeat_ack(&mut third).await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    let (off, ref command) = taken[0];
    assert_eq!(command, "switch_off");
    drop(third);

    // Once older than the resend window it is not sent again (the schedule has switched the plug off by then).
    let mut tx = app.tenant_tx(s.t.id).await;
    sqlx::query(
        "update device_command set created_at = now() - make_interval(secs => $3) where tenant_id = $1 and id = $2",
    )
    .bind(s.t.id)
    .bind(off)
    .bind(switchyard_core::bridges::COMMAND_RESEND_SECS as f64 + 1.0)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut fourth = connect(&app, &s.token).await.unwrap();
    hello(&mut fourth).await;
    assert_eq!(commands_until_heartbeat_ack(&mut fourth).await, vec![]);
    assert_eq!(
        row(off).await.1,
        None,
        "still unacknowledged, for staff to see"
    );
}

#[tokio::test]
async fn a_bridge_whose_link_dies_silently_notices_and_dials_again() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let proxy = switchyard_tests::proxy::Proxy::start(app.addr).await;
    let journal = journal_path();
    let _stop = start_bridge(bridge_config(
        format!("ws://{}/edge/v1/tunnel", proxy.addr),
        &s.token,
        &journal,
    ));
    wait_until("the bridge is online", || bridge_online(&app, s.t.id)).await;
    let dialled = proxy.accepted();

    // The link goes silent: no reset, no close, nothing answers.
    proxy.stall();
    wait_until("the bridge dials again", || async {
        proxy.accepted() > dialled
    })
    .await;
    proxy.restore();
    // Through a fresh tunnel, a new session reaches the plug.
    paid_session(&app, &s.t, s.venue, s.station, 30, "half-open").await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn a_plug_pressed_on_by_hand_right_after_the_bridge_switched_it_off_is_set_right() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let journal = journal_path();
    let config = edge_bridge::Config {
        readings: Some(Duration::from_millis(100)),
        ..bridge_config(tunnel_url(&app), &s.token, &journal)
    };
    let _stop = start_bridge(config);
    let session = paid_session(&app, &s.t, s.venue, s.station, 30, "pressed-on").await;
    let id: Uuid = session["session_id"].as_str().unwrap().parse().unwrap();
    wait_until("the plug is on", || async { plug.is_on() }).await;
    let state = "query($s: UUID!) { station(id: $s) { deviceState { kind report } } }";
    wait_until("the plug's ON reading reaches the cloud", || async {
        let d = app
            .gql_ok(&s.t.access, state, json!({"s": s.station}))
            .await["station"]["deviceState"]
            .clone();
        d["kind"] == "device_state" && d["report"]["on"] == true
    })
    .await;

    // The session stops; someone presses the plug ON before the bridge reads it again. Every reading from then on
    // equals the last one reported (ON, same load), but it is not what was set.
    plug.press_after_next_switch(true);
    let stopped = app
        .gql_ok(
            &s.t.access,
            "mutation($id: UUID!) { stopSession(id: $id) { status } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(stopped["stopSession"]["status"], "ENDED", "{stopped}");
    wait_until("the bridge switched the plug off", || async {
        plug.switches().iter().any(|s| !s.on)
    })
    .await;
    wait_until("the plug is set right", || async {
        !plug.is_on() && plug.switches().iter().filter(|s| !s.on).count() == 2
    })
    .await;
    assert_eq!(
        plug.switches().iter().map(|s| s.on).collect::<Vec<_>>(),
        [true, false, false]
    );
    let _ = std::fs::remove_file(&journal);
}

#[tokio::test]
async fn bridge_events_past_the_retention_period_are_purged_and_anomalies_kept() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let mut ws = connect(&app, &s.token).await.unwrap();
    hello(&mut ws).await;
    for seq in 1..=3u64 {
        ws.send(Message::text(encode(&Up::Event {
            seq,
            occurred_at: chrono::Utc::now(),
            station_id: Some(s.station),
            event: Event::Switched {
                on: true,
                reason: "test".into(),
                session_id: None,
            },
        })))
        .await
        .unwrap();
        assert_eq!(next_answer(&mut ws).await, Down::Ack { seq });
    }
    ws.send(Message::text(encode(&Up::Event {
        seq: u64::MAX >> 2,
        occurred_at: chrono::Utc::now(),
        station_id: None,
        event: Event::Switched {
            on: true,
            reason: "test".into(),
            session_id: None,
        },
    })))
    .await
    .unwrap();
    assert!(matches!(next_answer(&mut ws).await, Down::Error { .. }));
    // Two of the three were received 40 days ago.
    let mut tx = app.tenant_tx(s.t.id).await;
    sqlx::query(
        "update bridge_event set received_at = now() - interval '40 days' where tenant_id = $1 and seq <= 2",
    )
    .bind(s.t.id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let db = switchyard_tests::app_db(1);
    let before = chrono::Utc::now() - chrono::Duration::days(30);
    let (events, _) = db.system().purge_bridge_events(before).await.unwrap();
    assert!(events >= 2, "{events}");
    // A cutoff later than a day ago is clamped to it: the event received now stays.
    let far = chrono::Utc::now() + chrono::Duration::days(365);
    db.system().purge_bridge_events(far).await.unwrap();
    let kept: Vec<i64> =
        sqlx::query_scalar("select seq from bridge_event where tenant_id = $1 order by seq")
            .bind(s.t.id)
            .fetch_all(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    assert_eq!(kept, [3]);
    let bridge = app
        .gql_ok(&s.t.access, ANOMALIES, json!({"b": s.bridge}))
        .await["bridge"]
        .clone();
    assert_eq!(bridge["anomalies"].as_array().unwrap().len(), 1, "{bridge}");
    assert_eq!(bridge["lastSeq"], 3);
}

#[tokio::test]
async fn a_plugs_energy_counter_bills_the_session_on_its_station_by_the_kwh() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    // 1.00 EUR per kWh on this station, no time charge.
    let tariff = app
        .create_tariff(&s.t.access, "Metered", "currency: \"EUR\", perKwh: 100")
        .await;
    app.gql_ok(
        &s.t.access,
        "mutation($t: UUID!, $v: UUID!, $s: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v, stationId: $s}) { id } }",
        json!({"t": tariff, "v": s.venue, "s": s.station}),
    )
    .await;
    let patron = funded_patron(&app, &s.t, s.venue, "energy-plug").await;
    let mut ws = connect(&app, &s.token).await.unwrap();
    ws.send(Message::text(encode(Up::hello("test"))))
        .await
        .unwrap();
    let reading = |seq: u64, wh: i64, at: chrono::DateTime<chrono::Utc>| {
        Message::text(encode(&Up::Event {
            seq,
            occurred_at: at,
            station_id: Some(s.station),
            event: Event::DeviceState {
                reachable: true,
                on: Some(true),
                power_w: Some(800.0),
                energy_wh: Some(wh),
            },
        }))
    };
    assert!(matches!(next_down(&mut ws).await, Down::Welcome { .. }));
    let acked = |down: Down, want: u64| matches!(down, Down::Ack { seq } if seq == want);
    // The plug's counter before the session: the baseline.
    ws.send(reading(1, 5_000, chrono::Utc::now()))
        .await
        .unwrap();
    assert!(acked(next_answer(&mut ws).await, 1));
    let session = wallet_session(&app, &s.t.access, s.station, patron, None).await;
    ws.send(reading(2, 5_500, chrono::Utc::now()))
        .await
        .unwrap();
    assert!(acked(next_answer(&mut ws).await, 2));
    let live = app
        .gql_ok(
            &s.t.access,
            "query($s: UUID!) { session(id: $s) { energyWh powerW liveCost { amount lines { kind description } } } }",
            json!({"s": session}),
        )
        .await;
    assert_eq!(live["session"]["energyWh"], 500, "{live}");
    assert_eq!(live["session"]["powerW"], 800);
    assert_eq!(live["session"]["liveCost"]["amount"], 50);
    assert_eq!(live["session"]["liveCost"]["lines"][0]["kind"], "energy");
    // The same reading again (the bridge resent it) changes nothing; a later one adds up.
    ws.send(reading(2, 9_999, chrono::Utc::now()))
        .await
        .unwrap();
    assert!(acked(next_answer(&mut ws).await, 2));
    ws.send(reading(3, 7_000, chrono::Utc::now()))
        .await
        .unwrap();
    assert!(acked(next_answer(&mut ws).await, 3));
    // A counter beyond a terawatt-hour is a broken meter: the event is kept, the reading is not taken.
    ws.send(reading(4, 5_000_000_000_000_000_000, chrono::Utc::now()))
        .await
        .unwrap();
    assert!(acked(next_answer(&mut ws).await, 4));
    let stopped = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!) { stopSession(id: $s) { status energyWh chargedAmount } }",
            json!({"s": session}),
        )
        .await;
    assert_eq!(
        stopped["stopSession"],
        json!({"status": "ENDED", "energyWh": 2000, "chargedAmount": 200})
    );
    let wallet = crate::sessions::wallet(&app, &s.t.access, patron).await;
    assert_eq!(wallet["balance"], 800);

    // A report with a NUL in its text (Postgres stores none) is kept with U+FFFD in its place and acknowledged,
    // not refused and sent again on every tunnel.
    ws.send(Message::text(encode(&Up::Event {
        seq: 5,
        occurred_at: chrono::Utc::now(),
        station_id: Some(s.station),
        event: Event::Switched {
            on: false,
            reason: "button\0pressed".into(),
            session_id: None,
        },
    })))
    .await
    .unwrap();
    assert!(acked(next_answer(&mut ws).await, 5));
    let reason: String = sqlx::query_scalar(
        "select body->>'reason' from bridge_event where tenant_id = $1 and seq = 5",
    )
    .bind(s.t.id)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(reason, "button\u{FFFD}pressed");
}

/// A load balancer in front of two replicas, reduced to what matters here: each new connection goes to the first
/// upstream that accepts it.
pub(crate) async fn failover(upstreams: Vec<std::net::SocketAddr>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstreams = upstreams.clone();
            tokio::spawn(async move {
                for upstream in upstreams {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A rolling update: the replica holding the bridge's tunnel and a subscriber's socket is stopped (SIGTERM). It
/// closes both with `1012` and exits cleanly; the bridge reconnects through the balancer to the other replica, and
/// a session started meanwhile still switches its plug — no command is lost.
#[tokio::test]
async fn a_stopping_replica_closes_its_websockets_and_the_bridge_carries_on_with_another() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 2).await;
    let redis = switchyard_tests::env_url("TEST_REDIS_URL");
    let (_a, a_url) = crate::binaries::api_replica(&redis).await;
    let (mut b, b_url) = crate::binaries::api_replica(&redis).await;
    let address =
        |url: &str| -> std::net::SocketAddr { url.trim_start_matches("http://").parse().unwrap() };
    // B first while it is up, then A.
    let balancer = failover(vec![address(&b_url), address(&a_url)]).await;
    let journal = journal_path();
    let config = edge_bridge::Config {
        heartbeat: Duration::from_secs(600),
        ..bridge_config(
            format!("ws://{balancer}/edge/v1/tunnel"),
            &s.token,
            &journal,
        )
    };
    let _stop = start_bridge(config);
    let tunnels = |url: String| async move {
        metric(
            &metrics_page(&format!("{}/metrics", url.trim())).await,
            "edge_tunnels_open",
        )
        .unwrap_or(0.0)
    };
    wait_until("the bridge's tunnel is on B", || async {
        tunnels(b_url.clone()).await == 1.0
    })
    .await;

    // A subscriber on B, signed in.
    let mut request = format!("ws://{}/graphql/ws", address(&b_url))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", s.t.access)}})
                .to_string(),
        ))
        .await
        .unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(60), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ack.to_text().unwrap().contains("connection_ack"), "{ack:?}");

    crate::binaries::sigterm(&b);
    // A session started while B stops: its command waits in the database for the bridge's next tunnel.
    let patron = funded_patron(&app, &s.t, s.venue, "rolling-cash").await;
    let response = reqwest::Client::new()
        .post(format!("{a_url}/api/v1/sessions/start"))
        .bearer_auth(&s.t.access)
        .header("idempotency-key", "rolling-1")
        .json(&json!({"station_id": s.station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // The subscriber is told to reconnect: 1012 service restart.
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("B closes the subscriber's socket")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("the socket ended without a close frame: {other:?}"),
        }
    };
    let frame = closed.expect("a close frame with a code");
    assert_eq!(u16::from(frame.code), 1012);
    assert!(frame.reason.contains("reconnect"), "{}", frame.reason);
    let status = tokio::time::timeout(Duration::from_secs(60), b.wait())
        .await
        .expect("B exits once its sockets are closed")
        .unwrap();
    assert!(status.success(), "{status:?}");

    wait_until("the bridge's tunnel is on A", || async {
        tunnels(a_url.clone()).await == 1.0
    })
    .await;
    wait_until("the plug is on", || async { plug.is_on() }).await;
    let _ = std::fs::remove_file(&journal);
}

/// A bridge's free texts — its version in hello, a command's failure detail — are kept with a NUL marked (U+FFFD)
/// and cut to size, where a NUL used to fail the tunnel's opening, or the frame with `internal`.
#[tokio::test]
async fn a_bridges_version_and_command_details_are_kept_whatever_characters_they_hold() {
    let app = spawn_app().await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let mut tx = app.tenant_tx(s.t.id).await;
    let command: Uuid = sqlx::query_scalar(
        "insert into device_command (tenant_id, id, station_id, command, payload)
         values ($1, gen_random_uuid(), $2, 'switch_on', '{}') returning id",
    )
    .bind(s.t.id)
    .bind(s.station)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut ws = connect(&app, &s.token).await.unwrap();
    ws.send(Message::text(encode(Up::hello("1.0\u{0}-rc"))))
        .await
        .unwrap();
    let Down::Welcome { .. } = next_down(&mut ws).await else {
        panic!("welcome first");
    };
    let detail = format!("jam\u{0}med{}", "!".repeat(600));
    ws.send(Message::text(encode(&Up::CommandDone {
        id: command,
        ok: false,
        detail: Some(detail),
    })))
    .await
    .unwrap();
    let stored = || async {
        sqlx::query_as::<_, (Option<String>, Option<String>)>(
            "select b.version, c.result from bridge b, device_command c
              where b.tenant_id = $1 and b.id = $2 and c.tenant_id = $1 and c.id = $3",
        )
        .bind(s.t.id)
        .bind(s.bridge)
        .bind(command)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap()
    };
    wait_until("the command's result is kept", || async {
        stored().await.1.is_some()
    })
    .await;
    let (version, result) = stored().await;
    assert_eq!(version.as_deref(), Some("1.0\u{FFFD}-rc"));
    let result = result.unwrap();
    assert!(result.starts_with("jam\u{FFFD}med!"), "{result}");
    assert_eq!(result.chars().count(), 500);
}

/// A switch-on report of the plug, numbered `seq`.
fn switched_on(seq: u64, station: Uuid) -> Message {
    Message::text(encode(&Up::Event {
        seq,
        occurred_at: chrono::Utc::now(),
        station_id: Some(station),
        event: Event::Switched {
            on: true,
            reason: "test".into(),
            session_id: None,
        },
    }))
}

/// An event the cloud fails to apply (here the database refuses it) is not acknowledged, and the tunnel closes rather
/// than reading on, so that no later event is recorded past it: the bridge dials again and sends its journal from the
/// last recorded event, this one first. Each failure is an `event_failed` anomaly holding the frame; an event that
/// failed five times, the first a quarter of an hour before, is acknowledged, so that an event the cloud can never
/// apply does not hold the venue's tunnel for ever.
/// Before, the error answered the event and the tunnel read on: the next event's acknowledgement dropped the failed
/// one from the bridge's journal.
#[tokio::test]
async fn an_event_the_cloud_fails_to_apply_is_sent_again_and_one_that_always_fails_is_kept_as_an_anomaly(
) {
    let database = switchyard_tests::fresh_database().await;
    let app = switchyard_tests::spawn_app_in(&database).await;
    let plug = ShellyFake::start().await;
    let s = site(&app, &plug.host(), 1).await;
    let fail = |seq: i64| {
        let owner = app.owner.clone();
        async move {
            sqlx::query(&format!(
                "create or replace function refuse_event_for_test() returns trigger language plpgsql as $$
                 begin
                   if new.seq = {seq} then raise exception 'refused for the test'; end if;
                   return new;
                 end $$"
            ))
            .execute(&owner)
            .await
            .unwrap();
        }
    };
    sqlx::query("create or replace function refuse_event_for_test() returns trigger language plpgsql as $$ begin return new; end $$")
        .execute(&app.owner)
        .await
        .unwrap();
    sqlx::query(
        "create trigger refuse_event_for_test before insert on bridge_event
         for each row execute function refuse_event_for_test()",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let mut ws = connect(&app, &s.token).await.unwrap();
    assert_eq!(hello(&mut ws).await, 0);
    ws.send(switched_on(1, s.station)).await.unwrap();
    assert_eq!(next_answer(&mut ws).await, Down::Ack { seq: 1 });

    // Seq 2 fails twice, then goes through.
    fail(2).await;
    for _ in 0..2 {
        ws.send(switched_on(2, s.station)).await.unwrap();
        let Down::Error { code, seq, .. } = next_answer(&mut ws).await else {
            panic!("an error frame")
        };
        assert_eq!((code.as_str(), seq), ("internal", Some(2)));
        assert_eq!(
            closed_with(&mut ws, Duration::from_secs(10)).await,
            Some(1011)
        );
        ws = connect(&app, &s.token).await.unwrap();
        assert_eq!(hello(&mut ws).await, 1, "seq 2 was not recorded");
    }
    fail(0).await;
    ws.send(switched_on(2, s.station)).await.unwrap();
    assert_eq!(next_answer(&mut ws).await, Down::Ack { seq: 2 });

    // Seq 3 always fails: five failures within minutes are not enough (a hiccup of the database can last that
    // long), but once it failed five times, the first a quarter of an hour ago, it is acknowledged, and seq 4 goes on.
    fail(3).await;
    for attempt in 1..=6 {
        if attempt == 6 {
            sqlx::query(
                "update bridge_anomaly set created_at = created_at - interval '16 minutes'
                 where bridge_id = $1 and kind = 'event_failed' and seq = 3",
            )
            .bind(s.bridge)
            .execute(&app.owner)
            .await
            .unwrap();
        }
        ws.send(switched_on(3, s.station)).await.unwrap();
        if attempt == 6 {
            assert_eq!(next_answer(&mut ws).await, Down::Ack { seq: 3 });
            break;
        }
        assert!(matches!(
            next_answer(&mut ws).await,
            Down::Error { seq: Some(3), .. }
        ));
        assert_eq!(
            closed_with(&mut ws, Duration::from_secs(10)).await,
            Some(1011)
        );
        ws = connect(&app, &s.token).await.unwrap();
        assert_eq!(hello(&mut ws).await, 2);
    }
    ws.send(switched_on(4, s.station)).await.unwrap();
    assert_eq!(next_answer(&mut ws).await, Down::Ack { seq: 4 });

    let seqs: Vec<i64> = sqlx::query_scalar(
        "select seq from bridge_event where tenant_id = $1 and bridge_id = $2 order by seq",
    )
    .bind(s.t.id)
    .bind(s.bridge)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(seqs, [1, 2, 4]);
    let failed: Vec<(i64, Value)> = sqlx::query_as(
        "select seq, detail from bridge_anomaly where tenant_id = $1 and bridge_id = $2 and kind = 'event_failed'
         order by seq, (detail->>'attempt')::int",
    )
    .bind(s.t.id)
    .bind(s.bridge)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|(seq, d)| (
                *seq,
                d["attempt"].as_i64().unwrap(),
                d["given_up"].as_bool().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            (2, 1, false),
            (2, 2, false),
            (3, 1, false),
            (3, 2, false),
            (3, 3, false),
            (3, 4, false),
            (3, 5, false),
            (3, 6, true)
        ]
    );
    assert_eq!(failed[7].1["frame"]["seq"], 3, "the frame is kept");
    assert_eq!(failed[7].1["frame"]["event"]["on"], true, "{}", failed[7].1);
    let bridge = app
        .gql_ok(&s.t.access, ANOMALIES, json!({"b": s.bridge}))
        .await["bridge"]
        .clone();
    assert_eq!(bridge["lastSeq"], 4, "{bridge}");
}
