//! Live events over `/graphql/ws`: real graphql-transport-ws clients (the graphql-ws-client library) and a raw
//! legacy `graphql-ws` client subscribe, receive, resume; every field is confined to the subscriber's tenant and,
//! for patrons, to their own objects.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchyard_tests::{next_response, unique_email, TestApp};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::sessions::{floor, top_up, wallet_session, Floor};

const FIELDS: &str = "seq kind venueId stationId subjectId patronId at data";

/// The next event of a subscription's field.
async fn next(sub: &mut switchyard_tests::Subscription, field: &str) -> Value {
    let response = next_response(sub).await;
    assert!(response.get("errors").is_none(), "{response}");
    response["data"][field].clone()
}

/// Events of `sub` until one of `kind` (the ones before it are returned too, in order).
pub(crate) async fn until(
    sub: &mut switchyard_tests::Subscription,
    field: &str,
    kind: &str,
) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let event = next(sub, field).await;
        let done = event["kind"] == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

/// The tenant's last event number now: subscribing with `after` set to it hears everything from here on, however
/// long the server takes to open the subscription.
pub(crate) async fn from_now(app: &TestApp, tenant: Uuid) -> i64 {
    sqlx::query_scalar(
        "select coalesce((select last_seq from live_event_counter where tenant_id = $1), 0)",
    )
    .bind(tenant)
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

async fn patron_login(app: &TestApp, tenant: Uuid, name: &str) -> (Uuid, String) {
    let (status, pair) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": tenant, "display_name": name, "email": unique_email(name),
                   "password": "Blue-Lantern-77"}),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{pair}");
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let me = app.gql_ok(&token, "{ myProfile { id } }", json!({})).await;
    (
        me["myProfile"]["id"].as_str().unwrap().parse().unwrap(),
        token,
    )
}

#[tokio::test]
async fn a_member_hears_a_session_start_extend_and_stop_with_the_inputs_of_its_live_cost() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, patron, 5_000, "ada-cash").await;
    let after = from_now(&app, f.t.id).await;
    let query = format!(
        "subscription($v: ID, $after: Int) {{ sessionEvents(venueId: $v, after: $after) {{ {FIELDS} }} }}"
    );
    let mut sub = app
        .subscribe(&f.t.access, &query, json!({"v": f.venue, "after": after}))
        .await
        .unwrap();
    let mut stations = app
        .subscribe(
            &f.t.access,
            &format!(
                "subscription($after: Int) {{ stationChanges(after: $after) {{ {FIELDS} }} }}"
            ),
            json!({"after": after}),
        )
        .await
        .unwrap();

    let session = wallet_session(&app, &f.t.access, f.station, patron, Some(30)).await;
    let started = next(&mut sub, "sessionEvents").await;
    assert_eq!(started["kind"], "session.started", "{started}");
    assert_eq!(started["subjectId"], session.to_string());
    assert_eq!(started["stationId"], f.station.to_string());
    assert_eq!(started["venueId"], f.venue.to_string());
    assert_eq!(started["patronId"], patron.to_string());
    let data = &started["data"];
    assert_eq!(data["status"], "active");
    assert_eq!(data["currency"], "EUR");
    assert!(data["plannedEndAt"].is_string(), "{data}");
    assert!(
        data["remainingSeconds"].as_i64().unwrap() > 29 * 60,
        "{data}"
    );
    // What a client needs to tick the cost itself: the tariff's terms and the patron's tier.
    assert!(data["pricing"]["terms"].is_object(), "{data}");
    assert_eq!(data["pricing"]["tier"], "standard");
    assert_eq!(data["pricing"]["timezone"], "Europe/Berlin");
    let on = next(&mut stations, "stationChanges").await;
    assert_eq!(on["kind"], "station.status");
    assert_eq!(on["data"]["status"], "in_session");
    assert_eq!(on["data"]["sessionId"], session.to_string());

    app.gql_ok(
        &f.t.access,
        "mutation($id: UUID!) { extendSession(id: $id, minutes: 15) { id } }",
        json!({"id": session}),
    )
    .await;
    let extended = next(&mut sub, "sessionEvents").await;
    assert_eq!(extended["kind"], "session.extended");
    assert_eq!(extended["data"]["minutes"], 15);
    assert!(extended["seq"].as_i64() > started["seq"].as_i64());

    app.gql_ok(
        &f.t.access,
        "mutation($id: UUID!) { stopSession(id: $id) { id } }",
        json!({"id": session}),
    )
    .await;
    let stopped = next(&mut sub, "sessionEvents").await;
    assert_eq!(stopped["kind"], "session.stopped", "{stopped}");
    assert_eq!(stopped["data"]["status"], "ended");
    let charged: i64 = sqlx::query_scalar("select charged_amount from session where id = $1")
        .bind(session)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(stopped["data"]["chargedAmount"], charged);
    // The station's own stream saw the extension (a new `until`) and the switch-off.
    let events = until(&mut stations, "stationChanges", "station.status").await;
    let last = events.last().unwrap();
    assert_eq!(last["data"]["expectedOn"], true, "{last}");
    let off = next(&mut stations, "stationChanges").await;
    // Out of its session, offline: no bridge reaches its PC agent.
    assert_eq!(off["data"]["status"], "offline", "{off}");

    // Stored: one event row per change, numbered without gaps.
    let seqs: Vec<i64> = sqlx::query_scalar(
        "select seq from live_event where tenant_id = $1 and subject_id = $2 order by seq",
    )
    .bind(f.t.id)
    .bind(session)
    .fetch_all(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(seqs.len(), 3, "started, extended, stopped: {seqs:?}");
}

/// Tenant A acts; everyone subscribed in tenant B, and A's other patron, hears nothing of it: the first event each
/// receives is the marker made for it afterwards.
#[tokio::test]
async fn every_subscription_field_is_confined_to_the_tenant_and_a_patron_hears_only_its_own() {
    let app = switchyard_tests::spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let a = floor(&app).await;
    let b = floor(&app).await;
    let (pa, pa_token) = patron_login(&app, a.t.id, "pa").await;
    let (pa2, pa2_token) = patron_login(&app, a.t.id, "pa2").await;
    let (pb, pb_token) = patron_login(&app, b.t.id, "pb").await;

    let member_fields = [
        "liveEvents",
        "sessionEvents",
        "stationChanges",
        "bridgeChanges",
        "staffAlerts",
    ];
    let (a_after, b_after) = (from_now(&app, a.t.id).await, from_now(&app, b.t.id).await);
    let mut b_subs = Vec::new();
    for field in member_fields {
        let q = format!("subscription($after: Int) {{ {field}(after: $after) {{ {FIELDS} }} }}");
        let sub = app
            .subscribe(&b.t.access, &q, json!({"after": b_after}))
            .await
            .unwrap();
        b_subs.push((field, sub));
    }
    let mine = format!("subscription($after: Int) {{ myEvents(after: $after) {{ {FIELDS} }} }}");
    let mut pa_sub = app
        .subscribe(&pa_token, &mine, json!({"after": a_after}))
        .await
        .unwrap();
    let mut pa2_sub = app
        .subscribe(&pa2_token, &mine, json!({"after": a_after}))
        .await
        .unwrap();
    let mut pb_sub = app
        .subscribe(&pb_token, &mine, json!({"after": b_after}))
        .await
        .unwrap();
    // Patrons may not use the staff's fields.
    let mut staff_only = app
        .subscribe(
            &pa_token,
            &format!("subscription {{ stationChanges {{ {FIELDS} }} }}"),
            json!({}),
        )
        .await
        .unwrap();
    let response = next_response(&mut staff_only).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "forbidden",
        "{response}"
    );

    // In A: an SOS and a bridge online; pa's wallet is topped up and a session runs and stops.
    raise_sos(&app, &a).await;
    set_bridge_online(&app, &a).await;
    top_up(&app, &a, pa, 3_000, "pa-cash").await;
    let session = wallet_session(&app, &a.t.access, a.station, pa, Some(20)).await;
    app.gql_ok(
        &a.t.access,
        "mutation($id: UUID!) { stopSession(id: $id) { id } }",
        json!({"id": session}),
    )
    .await;
    let seen = until(&mut pa_sub, "myEvents", "session.stopped").await;
    let kinds: Vec<&str> = seen.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"wallet.changed"), "{kinds:?}");
    assert!(kinds.contains(&"session.started"), "{kinds:?}");
    assert!(
        seen.iter().all(|e| e["patronId"] == pa.to_string()),
        "a patron hears only its own: {seen:?}"
    );
    assert!(
        !kinds.contains(&"station.status"),
        "stations are not a patron's: {kinds:?}"
    );

    // Markers: pa2's own top-up in A; in B a session for pb (wallet, session, station events).
    top_up(&app, &a, pa2, 100, "pa2-cash").await;
    let first = next(&mut pa2_sub, "myEvents").await;
    assert_eq!(first["kind"], "wallet.changed", "{first}");
    assert_eq!(
        first["patronId"],
        pa2.to_string(),
        "pa2 heard someone else's event first: {first}"
    );

    top_up(&app, &b, pb, 3_000, "pb-cash").await;
    let b_session = wallet_session(&app, &b.t.access, b.station, pb, Some(20)).await;
    set_bridge_online(&app, &b).await;
    let b_sos = raise_sos(&app, &b).await;
    let first = next(&mut pb_sub, "myEvents").await;
    assert_eq!(first["patronId"], pb.to_string(), "{first}");
    for (field, sub) in &mut b_subs {
        let first = next(sub, field).await;
        assert_ne!(
            first["venueId"],
            a.venue.to_string(),
            "{field} leaked A: {first}"
        );
        match *field {
            "sessionEvents" => assert_eq!(first["subjectId"], b_session.to_string(), "{first}"),
            "stationChanges" => assert_eq!(first["stationId"], b.station.to_string(), "{first}"),
            "bridgeChanges" => assert_eq!(first["kind"], "bridge.online", "{first}"),
            "staffAlerts" => assert_eq!(first["subjectId"], b_sos, "{first}"),
            _ => assert_eq!(first["patronId"], pb.to_string(), "{field}: {first}"),
        }
    }
}

/// An SOS raised by `f`'s owner in its venue: its id.
async fn raise_sos(app: &TestApp, f: &Floor) -> String {
    app.gql_ok(
        &f.t.access,
        "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: CRITICAL}) { id } }",
        json!({"v": f.venue}),
    )
    .await["raiseSos"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A bridge of `f`'s venue reported online (as its tunnel does on hello).
async fn set_bridge_online(app: &TestApp, f: &Floor) {
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { createBridge(venueId: $v, name: \"edge\") { token } }",
            json!({"v": f.venue}),
        )
        .await;
    let token = data["createBridge"]["token"].as_str().unwrap().to_owned();
    let mut request = format!("ws://{}/edge/v1/tunnel", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let (mut tunnel, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let hello = switchyard_edge_protocol::Up::hello("test");
    tunnel
        .send(Message::text(switchyard_edge_protocol::encode(&hello)))
        .await
        .unwrap();
    // The hello is welcomed once the bridge is recorded online.
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), tunnel.next())
        .await
        .unwrap_or_else(|_| panic!("the tunnel answers its hello"));
    let Some(Ok(Message::Text(welcome))) = answer else {
        panic!("{answer:?}")
    };
    assert!(welcome.contains("welcome"), "{welcome}");
    std::mem::forget(tunnel);
}

#[tokio::test]
async fn a_client_that_reconnects_with_the_last_number_it_saw_receives_what_it_missed_in_order() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    let q = format!("subscription($after: Int) {{ liveEvents(after: $after) {{ {FIELDS} }} }}");
    let after = from_now(&app, f.t.id).await;
    let mut sub = app
        .subscribe(&f.t.access, &q, json!({"after": after}))
        .await
        .unwrap();
    top_up(&app, &f, patron, 1_000, "first").await;
    let seen = next(&mut sub, "liveEvents").await;
    let last = seen["seq"].as_i64().unwrap();
    drop(sub);

    // While away: two more top-ups.
    top_up(&app, &f, patron, 200, "second").await;
    top_up(&app, &f, patron, 300, "third").await;
    let mut sub = app
        .subscribe(&f.t.access, &q, json!({"after": last}))
        .await
        .unwrap();
    let missed = [
        next(&mut sub, "liveEvents").await,
        next(&mut sub, "liveEvents").await,
    ];
    assert_eq!(missed[0]["seq"].as_i64(), Some(last + 1), "{missed:?}");
    assert_eq!(missed[1]["seq"].as_i64(), Some(last + 2), "{missed:?}");
    assert_eq!(missed[0]["data"]["changes"]["wallet"], 200);
    assert_eq!(missed[1]["data"]["changes"]["wallet"], 300);
    // Then the live ones follow, each once.
    top_up(&app, &f, patron, 400, "fourth").await;
    let live = next(&mut sub, "liveEvents").await;
    assert_eq!(live["seq"].as_i64(), Some(last + 3), "{live}");
    assert_eq!(live["data"]["changes"]["wallet"], 400);

    // Resuming from a number the tenant never reached, or from events no longer kept, is a resync.
    let mut bogus = app
        .subscribe(&f.t.access, &q, json!({"after": last + 1000}))
        .await
        .unwrap();
    assert_eq!(
        next(&mut bogus, "liveEvents").await["kind"],
        "stream.resync"
    );
    // The events are an hour old; the purge's cutoff is clamped to a minute ago, so a caller asking for more
    // (here: everything) purges them and keeps what is newer.
    let app_db = switchyard_tests::app_db(1);
    sqlx::query(
        "update live_event set created_at = created_at - interval '1 hour' where tenant_id = $1",
    )
    .bind(f.t.id)
    .execute(&app.owner)
    .await
    .unwrap();
    let kept = |app: &switchyard_tests::TestApp| {
        let owner = app.owner.clone();
        let tenant = f.t.id;
        async move {
            sqlx::query_scalar::<_, i64>("select count(*) from live_event where tenant_id = $1")
                .bind(tenant)
                .fetch_one(&owner)
                .await
                .unwrap()
        }
    };
    let far = chrono::Utc::now() + chrono::Duration::days(365);
    app_db.system().purge_live_events(far).await.unwrap();
    assert_eq!(kept(&app).await, 0);
    top_up(&app, &f, patron, 500, "fifth").await;
    assert_eq!(
        next(&mut sub, "liveEvents").await["seq"].as_i64(),
        Some(last + 4)
    );
    app_db.system().purge_live_events(far).await.unwrap();
    assert_eq!(kept(&app).await, 1);
    let mut purged = app
        .subscribe(&f.t.access, &q, json!({"after": last}))
        .await
        .unwrap();
    let resync = next(&mut purged, "liveEvents").await;
    assert_eq!(resync["kind"], "stream.resync", "{resync}");
    let response = tokio::time::timeout(std::time::Duration::from_secs(60), purged.next())
        .await
        .unwrap_or_else(|_| panic!("the stream ends after a resync"));
    assert!(response.is_none(), "{response:?}");
}

#[tokio::test]
async fn events_of_a_rolled_back_change_are_never_heard_and_a_committed_one_always_is() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    let q = format!("subscription($after: Int) {{ liveEvents(after: $after) {{ {FIELDS} }} }}");
    let after = from_now(&app, f.t.id).await;
    let mut sub = app
        .subscribe(&f.t.access, &q, json!({"after": after}))
        .await
        .unwrap();
    // A session the wallet cannot cover fails after pricing: nothing of it is heard.
    let body = app
        .gql(
            Some(&f.t.access),
            "mutation($s: UUID!, $p: UUID!) {
               startSession(input: {stationId: $s, patronId: $p, durationMinutes: 60, payment: WALLET}) { id } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    assert_eq!(
        switchyard_tests::gql_code(&body),
        "insufficient_funds",
        "{body}"
    );
    // Directly: a transaction that emits and rolls back writes and announces nothing.
    let db = switchyard_tests::app_db(2);
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(f.t.id))
        .await
        .unwrap();
    tx.emit(switchyard_core::events::NewEvent::new(
        "test.rolled_back",
        json!({}),
    ));
    tx.rollback().await.unwrap();
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(f.t.id))
        .await
        .unwrap();
    tx.emit(switchyard_core::events::NewEvent::new(
        "test.committed",
        json!({"n": 1}),
    ));
    tx.commit().await.unwrap();
    let first = next(&mut sub, "liveEvents").await;
    assert_eq!(first["kind"], "test.committed", "{first}");
    let stored: Vec<String> =
        sqlx::query_scalar("select kind from live_event where tenant_id = $1 order by seq")
            .bind(f.t.id)
            .fetch_all(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert!(
        !stored.iter().any(|k| k == "test.rolled_back"),
        "{stored:?}"
    );
}

/// A raw connection that has been acknowledged after `connection_init` with `token`, or `None` when refused.
async fn signed_in(
    app: &TestApp,
    token: &str,
) -> Option<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    match read(&mut ws).await {
        Read::Text(v) if v["type"] == "connection_ack" => Some(ws),
        _ => None,
    }
}

enum Read {
    Text(Value),
    Closed(u16, String),
}

/// The next text message or the close frame, within a generous bound.
async fn read(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Read {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .unwrap_or_else(|_| panic!("the server answers in time"));
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return Read::Closed(frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] != "ka" && v["type"] != "ping" {
                    return Read::Text(v);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Reads until the server closes; the close code and reason.
async fn closed(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (u16, String) {
    loop {
        if let Read::Closed(code, reason) = read(ws).await {
            return (code, reason);
        }
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_with_4401_and_an_expiring_one_ends_the_connection_with_4403() {
    let app = switchyard_tests::spawn_app_with(&[("ACCESS_TOKEN_TTL_SECS", "3")]).await;
    let t = app.signup().await;
    let (code, _) = closed(
        &mut raw(
            &app,
            json!({"type": "connection_init",
        "payload": {"authorization": "Bearer not-a-token"}}),
        )
        .await,
    )
    .await;
    assert_eq!(code, 4401);
    let (code, reason) = closed(&mut raw(&app, json!({"type": "connection_init"})).await).await;
    assert_eq!(code, 4401);
    assert!(reason.contains("authorization"), "{reason}");

    // A signed-in connection with a subscription: the server closes it when the token expires. (A token that
    // expired before the connection was acknowledged on a slow machine is refused instead: log in again.)
    let mut ws = loop {
        let (status, pair) = app
            .post(
                "/api/v1/auth/login",
                json!({"email": t.email, "password": t.password}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{pair}");
        if let Some(ws) = signed_in(&app, pair["access_token"].as_str().unwrap()).await {
            break ws;
        }
    };
    let subscribe = json!({"id": "1", "type": "subscribe",
                           "payload": {"query": format!("subscription {{ liveEvents {{ {FIELDS} }} }}")}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("expired"), "{reason}");

    // No subprotocol: a clear 400 before any upgrade.
    let response = app
        .client
        .get(app.url("/graphql/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("graphql-transport-ws"));
}

/// A raw graphql-transport-ws connection that has sent `first`.
async fn raw(
    app: &TestApp,
    first: Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    ws.send(Message::text(first.to_string())).await.unwrap();
    ws
}

#[tokio::test]
async fn a_member_removed_from_the_tenant_stops_hearing_at_once() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let (member, token) = app.add_member(&f.t, "STAFF").await;
    let after = from_now(&app, f.t.id).await;
    // Acknowledged: from here the server watches for the member's removal.
    let mut ws = signed_in(&app, &token)
        .await
        .unwrap_or_else(|| panic!("the staff member signs in"));
    let subscribe = json!({"id": "1", "type": "subscribe",
                           "payload": {"query": format!("subscription {{ liveEvents {{ {FIELDS} }} }}")}});
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    let q = format!("subscription($after: Int) {{ liveEvents(after: $after) {{ {FIELDS} }} }}");
    let mut owner_sub = app
        .subscribe(&f.t.access, &q, json!({"after": after}))
        .await
        .unwrap();
    app.gql_ok(
        &f.t.access,
        "mutation($u: UUID!) { removeMember(userId: $u) { role } }",
        json!({"u": member}),
    )
    .await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4403, "{reason}");
    assert!(reason.contains("no longer belongs"), "{reason}");
    // Membership changes steer connections; they are not news for the others.
    let patron = app.create_patron(&f.t.access, "marker", None).await;
    top_up(&app, &f, patron, 100, "marker").await;
    let first = next(&mut owner_sub, "liveEvents").await;
    assert_eq!(first["kind"], "wallet.changed", "{first}");
}

#[tokio::test]
async fn a_member_whose_role_or_venues_change_is_asked_to_connect_again_and_can() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let (member, token) = app.add_member(&f.t, "MANAGER").await;
    let changes = [
        (
            "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
            json!({"u": member, "v": [f.venue]}),
        ),
        (
            "mutation($u: UUID!) { changeMemberRole(userId: $u, role: STAFF) { role } }",
            json!({"u": member}),
        ),
    ];
    for (mutation, variables) in changes {
        // Acknowledged: from here the server watches the member's membership.
        let mut ws = signed_in(&app, &token)
            .await
            .unwrap_or_else(|| panic!("the member signs in"));
        app.gql_ok(&f.t.access, mutation, variables).await;
        let (code, reason) = closed(&mut ws).await;
        assert_eq!(code, 1012, "{mutation}: {reason}");
        assert!(reason.contains("role or venues changed"), "{reason}");
    }
    // The same token signs in again, now as what the member has become.
    let mut ws = signed_in(&app, &token)
        .await
        .unwrap_or_else(|| panic!("the member signs in again"));
    let me = json!({"id": "1", "type": "subscribe", "payload": {"query": "{ me { role } }"}});
    ws.send(Message::text(me.to_string())).await.unwrap();
    let answer = loop {
        match read(&mut ws).await {
            Read::Text(v) if v["type"] == "next" => break v,
            Read::Text(_) => continue,
            Read::Closed(code, reason) => panic!("closed {code}: {reason}"),
        }
    };
    assert_eq!(
        answer["payload"]["data"]["me"],
        json!({"role": "STAFF"}),
        "{answer}"
    );
}

#[tokio::test]
async fn older_clients_speaking_the_legacy_graphql_ws_protocol_subscribe_too() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", f.t.access)}})))
        .await
        .unwrap();
    let ack = loop {
        if let Read::Text(v) = read(&mut ws).await {
            break v;
        }
    };
    assert_eq!(ack["type"], "connection_ack");
    let after = from_now(&app, f.t.id).await;
    ws.send(send(json!({"id": "7", "type": "start",
                        "payload": {"query": format!("subscription {{ liveEvents(after: {after}) {{ {FIELDS} }} }}")}})))
        .await
        .unwrap();
    // Resumed from `after`: the top-up is heard however long the start takes.
    top_up(&app, &f, patron, 250, "legacy").await;
    let data = loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "data" {
                break v;
            }
        }
    };
    assert_eq!(data["id"], "7");
    assert_eq!(
        data["payload"]["data"]["liveEvents"]["kind"],
        "wallet.changed"
    );
    assert_eq!(
        data["payload"]["data"]["liveEvents"]["data"]["changes"]["wallet"],
        250
    );
}

#[tokio::test]
async fn an_event_committed_on_one_api_process_reaches_subscribers_on_another_through_redis() {
    across_replicas(&switchyard_tests::env_url("TEST_REDIS_URL")).await;
}

#[tokio::test]
async fn an_event_committed_on_one_api_process_reaches_subscribers_on_another_through_postgres() {
    across_replicas("").await;
}

/// Two real API processes on one database, announcing through `redis_url` (empty: Postgres `notify`): a patron
/// and its operator subscribe on B, the operator tops the wallet up through A, both hear it on B.
async fn across_replicas(redis_url: &str) {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let (patron, patron_token) = patron_login(&app, f.t.id, "replica").await;
    let (_a, a_url) = crate::binaries::api_replica(redis_url).await;
    let (_b, b_url) = crate::binaries::api_replica(redis_url).await;
    let b_ws = format!(
        "{}/graphql/ws",
        b_url.trim().replacen("http://", "ws://", 1)
    );
    let after = from_now(&app, f.t.id).await;
    let q = |field: &str| {
        format!("subscription($after: Int) {{ {field}(after: $after) {{ {FIELDS} }} }}")
    };
    let mut owner = switchyard_tests::subscribe_at(
        &b_ws,
        &f.t.access,
        &q("liveEvents"),
        json!({"after": after}),
    )
    .await
    .unwrap();
    let mut mine = switchyard_tests::subscribe_at(
        &b_ws,
        &patron_token,
        &q("myEvents"),
        json!({"after": after}),
    )
    .await
    .unwrap();
    let response = app
        .client
        .post(format!("{}/graphql", a_url.trim()))
        .bearer_auth(&f.t.access)
        .json(&json!({
            "query": "mutation($p: UUID!, $v: UUID!) {
                topUpCash(patronId: $p, venueId: $v, amount: 700, idempotencyKey: \"replica\") { id } }",
            "variables": {"p": patron, "v": f.venue},
        }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(body.get("errors").is_none(), "{body}");
    for (sub, field) in [(&mut owner, "liveEvents"), (&mut mine, "myEvents")] {
        let event = next(sub, field).await;
        assert_eq!(event["kind"], "wallet.changed", "{event}");
        assert_eq!(event["seq"].as_i64(), Some(after + 1));
        assert_eq!(event["data"]["changes"]["wallet"], 700);
        assert_eq!(event["patronId"], patron.to_string());
    }
}

#[tokio::test]
async fn a_connection_runs_at_most_its_share_of_subscriptions() {
    let app = switchyard_tests::spawn_app_with(&[("SUBSCRIPTIONS_PER_CONNECTION", "2")]).await;
    let t = app.signup().await;
    let mut ws = signed_in(&app, &t.access)
        .await
        .unwrap_or_else(|| panic!("signed in"));
    let after = from_now(&app, t.id).await;
    for id in ["1", "2", "3"] {
        let query = format!("subscription {{ liveEvents(after: {after}) {{ {FIELDS} }} }}");
        let subscribe = json!({"id": id, "type": "subscribe", "payload": {"query": query}});
        ws.send(Message::text(subscribe.to_string())).await.unwrap();
    }
    // One of the three (whichever the server opens last) is refused with a code and completed; the other two
    // stay open.
    let refused = loop {
        if let Read::Text(v) = read(&mut ws).await {
            break v;
        }
    };
    assert_eq!(refused["type"], "next");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "rate_limited",
        "{refused}"
    );
    let Read::Text(done) = read(&mut ws).await else {
        panic!("closed")
    };
    assert_eq!(done, json!({"id": refused["id"], "type": "complete"}));
    // The two open ones hear the next event, each once.
    let patron = app.create_patron(&t.access, "P", None).await;
    let venue = app.create_venue(&t.access, "V").await;
    app.gql_ok(
        &t.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 5, idempotencyKey: \"k\") { id } }",
        json!({"p": patron, "v": venue}),
    )
    .await;
    let mut heard = Vec::new();
    while heard.len() < 2 {
        if let Read::Text(v) = read(&mut ws).await {
            assert_eq!(
                v["payload"]["data"]["liveEvents"]["kind"], "wallet.changed",
                "{v}"
            );
            heard.push(v["id"].as_str().unwrap().to_owned());
        }
    }
    heard.sort();
    assert!(
        !heard.contains(&refused["id"].as_str().unwrap().to_owned()),
        "{heard:?}"
    );
    heard.dedup();
    assert_eq!(heard.len(), 2);
}

/// A hub whose subscribers' queues hold `queue` events, one subscriber of a new tenant, and `count` events
/// (`{"n": 0..count}`) of one commit announced to it once, before it reads any. The app and the hub are returned to
/// keep them alive.
async fn one_burst(
    queue: usize,
    count: usize,
) -> (
    TestApp,
    std::sync::Arc<switchyard_core::events::EventHub>,
    switchyard_core::events::Subscription,
    switchyard_core::TenantId,
) {
    let app = switchyard_tests::spawn_app().await;
    let t = app.signup().await;
    let db = switchyard_tests::app_db(2);
    let limits = switchyard_core::events::HubLimits {
        queue,
        ..Default::default()
    };
    let hub = switchyard_core::events::EventHub::new(db.clone(), limits);
    let tenant = switchyard_core::TenantId(t.id);
    let subscription = hub.subscribe(tenant).await.unwrap();
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    for n in 0..count {
        tx.emit(switchyard_core::events::NewEvent::new(
            "test.burst",
            json!({ "n": n }),
        ));
    }
    tx.commit().await.unwrap();
    hub.announce(t.id, i64::MAX).await;
    (app, hub, subscription, tenant)
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_its_queue_is_told_to_resync() {
    // Delivered to the queue before the subscriber reads anything: it is 24 behind a queue of 16.
    let (_app, _hub, mut slow, _) = one_burst(16, 40).await;
    let lagged = slow.receiver.recv().await;
    assert!(
        matches!(
            lagged,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(24))
        ),
        "{lagged:?}"
    );
    // The GraphQL stream turns this into one `stream.resync` and ends (graphql/src/live.rs); a subscriber that
    // keeps up gets every event: the newest 16 are still queued, in order.
    let next = slow.receiver.recv().await.unwrap();
    assert_eq!(next.data["n"], 24);
}

#[tokio::test]
async fn the_venue_dashboard_streams_a_fresh_grid_after_every_change_and_is_confined() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let other = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, patron, 5_000, "dash-cash").await;
    let q = "subscription($v: ID) { dashboard(venueId: $v) { seq dashboard } }";
    let mut sub = app
        .subscribe(&f.t.access, q, json!({"v": f.venue}))
        .await
        .unwrap();
    let first = next(&mut sub, "dashboard").await;
    assert_eq!(first["seq"], 0);
    let tile = &first["dashboard"]["venues"][0]["stations"][0];
    assert_eq!(tile["station_id"], f.station.to_string(), "{first}");
    assert_eq!(tile["session"], Value::Null);

    // The first snapshot is taken after the stream opened: a session started now shows in a later one.
    let session = wallet_session(&app, &f.t.access, f.station, patron, Some(30)).await;
    let busy = loop {
        let update = next(&mut sub, "dashboard").await;
        let tile = update["dashboard"]["venues"][0]["stations"][0].clone();
        if tile["session"] != Value::Null {
            break update;
        }
    };
    let tile = &busy["dashboard"]["venues"][0]["stations"][0];
    assert_eq!(tile["session"]["session_id"], session.to_string(), "{busy}");
    assert_eq!(tile["status"], "in_session");
    assert_eq!(busy["dashboard"]["venues"][0]["busy"], 1);
    assert!(busy["seq"].as_i64().unwrap() > 0);

    // Another tenant's venue is not found; patrons are refused.
    let mut theirs = app
        .subscribe(&f.t.access, q, json!({"v": other.venue}))
        .await
        .unwrap();
    let refused = next_response(&mut theirs).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "not_found",
        "{refused}"
    );
    // So is it for every field that takes a venue: an answer, not a stream that stays silent.
    for field in [
        "liveEvents",
        "stationChanges",
        "sessionEvents",
        "staffAlerts",
    ] {
        let q = format!("subscription($v: ID) {{ {field}(venueId: $v) {{ seq }} }}");
        let mut theirs = app
            .subscribe(&f.t.access, &q, json!({"v": other.venue}))
            .await
            .unwrap();
        let refused = next_response(&mut theirs).await;
        assert_eq!(
            refused["errors"][0]["extensions"]["code"], "not_found",
            "{field}: {refused}"
        );
        assert_eq!(
            refused["errors"][0]["message"], "venue not found",
            "{field}"
        );
    }
}

#[tokio::test]
async fn an_sos_reaches_the_staff_of_its_venue_at_once_and_no_one_scoped_elsewhere() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let hall = app.create_venue(&f.t.access, "Hall B").await;
    let (staff, staff_token) = app.add_member(&f.t, "STAFF").await;
    app.gql_ok(
        &f.t.access,
        "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
        json!({"u": staff, "v": [hall]}),
    )
    .await;
    let after = from_now(&app, f.t.id).await;
    let q = format!("subscription($after: Int) {{ staffAlerts(after: $after) {{ {FIELDS} }} }}");
    let mut owner = app
        .subscribe(&f.t.access, &q, json!({"after": after}))
        .await
        .unwrap();
    let mut scoped = app
        .subscribe(&staff_token, &q, json!({"after": after}))
        .await
        .unwrap();
    let raise = |venue: Uuid, note: &'static str| {
        let token = f.t.access.clone();
        let app = &app;
        async move {
            app.gql_ok(
                &token,
                "mutation($v: UUID!, $n: String) { raiseSos(input: {venueId: $v, severity: HIGH, note: $n}) { id } }",
                json!({"v": venue, "n": note}),
            )
            .await["raiseSos"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // A venue outside the member's scope is not found, as in queries.
    let mut outside = app
        .subscribe(
            &staff_token,
            "subscription($v: ID) { staffAlerts(venueId: $v) { seq } }",
            json!({"v": f.venue}),
        )
        .await
        .unwrap();
    let refused = next_response(&mut outside).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "not_found",
        "{refused}"
    );
    let in_arcade = raise(f.venue, "a fall by PC-1").await;
    let heard = next(&mut owner, "staffAlerts").await;
    assert_eq!(heard["kind"], "sos.raised", "{heard}");
    assert_eq!(heard["subjectId"], in_arcade);
    assert_eq!(heard["venueId"], f.venue.to_string());
    // The member scoped to Hall B hears Hall B's SOS first: the arcade's never reached it.
    let in_hall = raise(hall, "smoke").await;
    let first = next(&mut scoped, "staffAlerts").await;
    assert_eq!(first["subjectId"], in_hall, "{first}");
    assert_eq!(first["venueId"], hall.to_string());
    assert_eq!(next(&mut owner, "staffAlerts").await["subjectId"], in_hall);
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_share_of_subscriptions_on_a_process() {
    // Three: each signed-in member connection holds one (it watches for the member's removal) besides its
    // subscriptions.
    let app = switchyard_tests::spawn_app_with(&[("SUBSCRIPTIONS_PER_TENANT", "3")]).await;
    let t = app.signup().await;
    let other = app.signup().await;
    let q = format!("subscription {{ liveEvents {{ {FIELDS} }} }}");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": q}});
    let mut first = signed_in(&app, &t.access)
        .await
        .unwrap_or_else(|| panic!("signed in"));
    first
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let mut second = signed_in(&app, &t.access)
        .await
        .unwrap_or_else(|| panic!("signed in"));
    second
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let Read::Text(refused) = read(&mut second).await else {
        panic!("closed")
    };
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "rate_limited",
        "{refused}"
    );
    assert!(refused["payload"]["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("live subscriptions"));
    // Another tenant is not affected.
    let after = from_now(&app, other.id).await;
    let resumed = format!("subscription {{ liveEvents(after: {after}) {{ {FIELDS} }} }}");
    let mut theirs = app
        .subscribe(&other.access, &resumed, json!({}))
        .await
        .unwrap();
    let patron = app.create_patron(&other.access, "P", None).await;
    let venue = app.create_venue(&other.access, "V").await;
    app.gql_ok(
        &other.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 5, idempotencyKey: \"k\") { id } }",
        json!({"p": patron, "v": venue}),
    )
    .await;
    assert_eq!(
        next(&mut theirs, "liveEvents").await["kind"],
        "wallet.changed"
    );
}

#[tokio::test]
async fn a_legacy_client_with_a_bad_token_is_told_why_and_closed_with_4401() {
    let app = switchyard_tests::spawn_app().await;
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({"type": "connection_init", "payload": {"authorization": "Bearer expired-or-forged"}});
    ws.send(Message::text(init.to_string())).await.unwrap();
    let Read::Text(error) = read(&mut ws).await else {
        panic!("no connection_error")
    };
    assert_eq!(error["type"], "connection_error", "{error}");
    let (code, _) = closed(&mut ws).await;
    assert_eq!(code, 4401);
}

#[tokio::test]
async fn staff_hear_at_once_when_a_flagged_patron_starts_a_session_and_the_patron_never_does() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let (patron, patron_token) = patron_login(&app, f.t.id, "flagged").await;
    top_up(&app, &f, patron, 5_000, "flag-cash").await;
    app.gql_ok(
        &f.t.access,
        "mutation($p: UUID!) { flagPatron(patronId: $p, reason: \"aggressive last visit\") { patronId } }",
        json!({"p": patron}),
    )
    .await;
    let after = from_now(&app, f.t.id).await;
    let alerts =
        format!("subscription($after: Int) {{ staffAlerts(after: $after) {{ {FIELDS} }} }}");
    let mine = format!("subscription($after: Int) {{ myEvents(after: $after) {{ {FIELDS} }} }}");
    let mut staff = app
        .subscribe(&f.t.access, &alerts, json!({"after": after}))
        .await
        .unwrap();
    let mut own = app
        .subscribe(&patron_token, &mine, json!({"after": after}))
        .await
        .unwrap();
    let session = wallet_session(&app, &f.t.access, f.station, patron, Some(15)).await;
    let warned = next(&mut staff, "staffAlerts").await;
    assert_eq!(warned["kind"], "safety.flagged_session", "{warned}");
    assert_eq!(warned["subjectId"], session.to_string());
    assert_eq!(warned["venueId"], f.venue.to_string());
    assert_eq!(warned["data"]["reason"], "aggressive last visit");
    assert_eq!(
        warned["patronId"],
        Value::Null,
        "the event is not the patron's"
    );
    // The patron hears its session and wallet, never the warning (a top-up marks the end).
    top_up(&app, &f, patron, 100, "flag-marker").await;
    let seen = until(&mut own, "myEvents", "wallet.changed").await;
    assert!(
        seen.iter()
            .all(|e| !e["kind"].as_str().unwrap().starts_with("safety.")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|e| e["kind"] == "session.started"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_socket_that_never_signs_in_is_closed_with_4408() {
    let app = switchyard_tests::spawn_app().await;
    let mut request = app.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 4408, "{reason}");
    assert!(reason.contains("connection_init"), "{reason}");
}

#[tokio::test]
async fn what_a_part_rolled_back_to_its_savepoint_emitted_is_never_heard() {
    let app = switchyard_tests::spawn_app().await;
    let t = app.signup().await;
    let db = switchyard_tests::app_db(1);
    let mut tx = db
        .begin_tenant(switchyard_core::TenantId(t.id))
        .await
        .unwrap();
    tx.emit(switchyard_core::events::NewEvent::new(
        "test.kept",
        json!({}),
    ));
    let point = tx.savepoint().await.unwrap();
    tx.emit(switchyard_core::events::NewEvent::new(
        "test.undone",
        json!({}),
    ));
    tx.rollback_to(point).await.unwrap();
    let point = tx.savepoint().await.unwrap();
    tx.emit(switchyard_core::events::NewEvent::new(
        "test.released",
        json!({}),
    ));
    tx.release(point).await.unwrap();
    tx.commit().await.unwrap();
    let kinds: Vec<String> = sqlx::query_scalar(
        "select kind from live_event where tenant_id = $1 and kind like 'test.%' order by seq",
    )
    .bind(t.id)
    .fetch_all(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap();
    assert_eq!(kinds, ["test.kept", "test.released"]);
}

/// The tenant's last event number now and a `liveEvents` subscription of `t`'s owner that hears everything after it.
async fn all_events_from_now(
    app: &TestApp,
    t: &switchyard_tests::Tenant,
) -> (i64, switchyard_tests::Subscription) {
    let q = format!("subscription($after: Int) {{ liveEvents(after: $after) {{ {FIELDS} }} }}");
    let after = from_now(app, t.id).await;
    let sub = app
        .subscribe(&t.access, &q, json!({"after": after}))
        .await
        .unwrap();
    (after, sub)
}

/// Events of the tenant appended but not yet numbered.
async fn pending(app: &TestApp, tenant: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from live_event_pending where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn one_announcement_of_more_events_than_a_page_delivers_them_all_in_order() {
    // The hub reads new events 500 at a time: 1,234 are three pages, the last one short.
    let (_app, hub, mut sub, tenant) = one_burst(2_000, 1_234).await;
    let mut seq = None;
    for n in 0..1_234 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(60), sub.receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("event {n} was not delivered"))
            .unwrap();
        assert_eq!(event.data["n"], n);
        if let Some(before) = seq {
            assert_eq!(event.seq, before + 1, "numbers follow each other");
        }
        seq = Some(event.seq);
    }
    // Each event is delivered once: a marker committed after them is the very next one delivered.
    let db = switchyard_tests::app_db(1);
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    tx.emit(switchyard_core::events::NewEvent::new(
        "test.marker",
        json!({}),
    ));
    tx.commit().await.unwrap();
    hub.announce(tenant.0, i64::MAX).await;
    let marker = tokio::time::timeout(std::time::Duration::from_secs(60), sub.receiver.recv())
        .await
        .unwrap_or_else(|_| panic!("the marker was not delivered"))
        .unwrap();
    assert_eq!(marker.kind, "test.marker", "each event is delivered once");
    assert_eq!(Some(marker.seq), seq.map(|s| s + 1));
}

#[tokio::test]
async fn events_committed_side_by_side_are_numbered_without_gaps_by_the_time_each_commit_returns() {
    let app = switchyard_tests::spawn_app().await;
    let t = app.signup().await;
    let (after, mut sub) = all_events_from_now(&app, &t).await;
    // 24 transactions of one tenant commit at once, two events each; each checks, once its commit returned, that
    // its own events are numbered (by its own numbering or by one that ran beside it).
    let db = switchyard_tests::app_db(12);
    let writers = (0..24).map(|n| {
        let db = db.clone();
        let owner = app.owner.clone();
        async move {
            let mut tx = db
                .begin_tenant(switchyard_core::TenantId(t.id))
                .await
                .unwrap();
            for part in ["first", "second"] {
                tx.emit(switchyard_core::events::NewEvent::new(
                    "test.side_by_side",
                    json!({"writer": n, "part": part}),
                ));
            }
            tx.commit().await.unwrap();
            let seqs: Vec<i64> = sqlx::query_scalar(
                "select seq from live_event where tenant_id = $1 and data->>'writer' = $2 order by seq",
            )
            .bind(t.id)
            .bind(n.to_string())
            .fetch_all(&owner)
            .await
            .unwrap();
            assert_eq!(seqs.len(), 2, "writer {n}'s events are numbered once its commit returns: {seqs:?}");
        }
    });
    futures_util::future::join_all(writers).await;
    let stored: Vec<(i64, Value)> = sqlx::query_as(
        "select seq, data from live_event where tenant_id = $1 and seq > $2 order by seq",
    )
    .bind(t.id)
    .bind(after)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    let seqs: Vec<i64> = stored.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (after + 1..=after + 48).collect::<Vec<_>>(),
        "no gaps, no repeats"
    );
    // Within a transaction, its events keep the order they were emitted in.
    for n in 0..24 {
        let parts: Vec<&str> = stored
            .iter()
            .filter(|(_, d)| d["writer"] == n)
            .map(|(_, d)| d["part"].as_str().unwrap())
            .collect();
        assert_eq!(parts, ["first", "second"], "writer {n}");
    }
    assert_eq!(pending(&app, t.id).await, 0);
    // A subscriber hears all 48, in number order.
    for expected in after + 1..=after + 48 {
        let event = next(&mut sub, "liveEvents").await;
        assert_eq!(event["seq"].as_i64(), Some(expected), "{event}");
        assert_eq!(event["kind"], "test.side_by_side");
    }
}

#[tokio::test]
async fn events_whose_writer_stopped_before_numbering_them_are_numbered_and_heard_all_the_same() {
    let app = switchyard_tests::spawn_app().await;
    let t = app.signup().await;
    let (after, mut sub) = all_events_from_now(&app, &t).await;
    // What a writer that committed and then stopped leaves behind: its events appended, never numbered.
    sqlx::query(
        "insert into live_event_pending (tenant_id, kind, data, created_at)
         values ($1, 'test.stranded', '{\"n\": 1}', now() - interval '1 minute'),
                ($1, 'test.stranded', '{\"n\": 2}', now() - interval '1 minute')",
    )
    .bind(t.id)
    .execute(&app.owner)
    .await
    .unwrap();
    // The API's periodic look numbers and announces them.
    for n in 1..=2 {
        let event = next(&mut sub, "liveEvents").await;
        assert_eq!(event["kind"], "test.stranded", "{event}");
        assert_eq!(event["seq"].as_i64(), Some(after + n), "{event}");
        assert_eq!(event["data"]["n"], n, "{event}");
    }
    assert_eq!(from_now(&app, t.id).await, after + 2);
    assert_eq!(pending(&app, t.id).await, 0);
}

#[tokio::test]
async fn a_transaction_can_number_events_only_of_the_tenant_it_is_confined_to_and_never_write_them_itself(
) {
    let app = switchyard_tests::spawn_app().await;
    let a = app.signup().await;
    let b = app.signup().await;
    let db = switchyard_tests::app_db(1);
    /// What a transaction confined to `tenant` is told when it runs `sql` with `bind`.
    async fn refused(db: &switchyard_core::Db, tenant: Uuid, sql: &str, bind: Uuid) -> sqlx::Error {
        let mut tx = db
            .begin_tenant(switchyard_core::TenantId(tenant))
            .await
            .unwrap();
        sqlx::query(sql)
            .bind(bind)
            .execute(tx.conn())
            .await
            .unwrap_err()
    }
    let numbering = refused(
        &db,
        a.id,
        "select sys_number_live_events($1, true, array['test.forged'], array[null::uuid], array[null::uuid],
                array[null::uuid], array[null::uuid], array[null::uuid], array['{}'::jsonb])",
        b.id,
    )
    .await;
    assert!(
        numbering
            .to_string()
            .contains("live events of another tenant"),
        "{numbering}"
    );
    // Nor number another tenant's pending events without events of its own.
    let numbering = refused(&db, a.id, "select sys_number_live_events($1, true)", b.id).await;
    assert_eq!(
        numbering
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501"),
        "{numbering}"
    );
    // Nor can it write a number of its own: only the numbering writes the events and the counter.
    for forge in [
        "insert into live_event (tenant_id, seq, kind) values ($1, 1000000, 'test.forged')",
        "update live_event_counter set last_seq = last_seq + 1 where tenant_id = $1",
        "insert into live_event_counter (tenant_id, last_seq) values ($1, 1000000)",
    ] {
        let error = refused(&db, a.id, forge, a.id).await;
        assert_eq!(
            error.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{forge}: {error}"
        );
    }
    let forged: i64 =
        sqlx::query_scalar("select count(*) from live_event where kind = 'test.forged'")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(forged, 0);
}
