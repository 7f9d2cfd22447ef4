//! Venue check-in (seed 001): by the venue's QR code, inside its geofence, one venue at a time; staff see the floor.

use serde_json::{json, Value};
use switchyard_tests::{gql_code, TestApp};
use uuid::Uuid;

use super::{patron, qr_payload, Patron};
use crate::sessions::floor;

const CHECK_IN: &str = "mutation($qr: String!, $lat: Float!, $lon: Float!) {
    checkIn(qr: $qr, latitude: $lat, longitude: $lon) { id venueId patronId distanceM checkedOutAt } }";
const CHECK_OUT: &str = "mutation($id: UUID!) { checkOut(id: $id) { id checkedOutAt } }";
const FLOOR: &str = "query($v: UUID!) { venueFloor(venueId: $v) { count checkIns { patronId } } }";

async fn geofence(
    app: &TestApp,
    token: &str,
    venue: Uuid,
    lat: f64,
    lon: f64,
    radius: i32,
) -> Value {
    app.gql(
        Some(token),
        "mutation($v: UUID!, $lat: Float, $lon: Float, $r: Int) {
           setVenueGeofence(venueId: $v, latitude: $lat, longitude: $lon, radiusM: $r) { latitude longitude geofenceM } }",
        json!({"v": venue, "lat": lat, "lon": lon, "r": radius}),
    )
    .await
}

async fn check_in(app: &TestApp, p: &Patron, qr: &str, lat: f64, lon: f64) -> Value {
    app.gql(
        Some(&p.token),
        CHECK_IN,
        json!({"qr": qr, "lat": lat, "lon": lon}),
    )
    .await
}

/// The live events of a kind, as (patron, subject, venue).
async fn events(
    app: &TestApp,
    tenant: Uuid,
    kind: &str,
) -> Vec<(Option<Uuid>, Option<Uuid>, Option<Uuid>)> {
    sqlx::query_as(
        "select patron_id, subject_id, venue_id from live_event where tenant_id = $1 and kind = $2 order by seq",
    )
    .bind(tenant)
    .bind(kind)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_patron_checks_in_inside_the_geofence_one_venue_at_a_time_and_staff_see_the_floor() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let harbour = app.create_venue(&f.t.access, "Harbour").await;
    // The arcade at Alexanderplatz (100 m fence), the harbour 2.4 km west.
    let set = geofence(&app, &f.t.access, f.venue, 52.5219, 13.4132, 100).await;
    assert_eq!(
        set["data"]["setVenueGeofence"],
        json!({"latitude": 52.5219, "longitude": 13.4132, "geofenceM": 100}),
        "{set}"
    );
    assert_eq!(
        geofence(&app, &f.t.access, harbour, 52.5163, 13.3777, 150).await["errors"],
        Value::Null
    );
    let arcade_qr = qr_payload(&app, &f.t.access, "venues", f.venue).await;
    let harbour_qr = qr_payload(&app, &f.t.access, "venues", harbour).await;
    let me = patron(&app, f.t.id, "mia").await;

    // 1.1 km away is outside; the door itself is inside (50 m north).
    let far = check_in(&app, &me, &arcade_qr, 52.5319, 13.4132).await;
    assert_eq!(gql_code(&far), "forbidden", "{far}");
    assert!(
        far["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("check in within 100 m"),
        "{far}"
    );
    let body = check_in(&app, &me, &arcade_qr, 52.52235, 13.4132).await;
    let inside = body["data"]["checkIn"].clone();
    assert_eq!(inside["venueId"], f.venue.to_string(), "{body}");
    assert_eq!(inside["patronId"], me.id.to_string());
    assert_eq!(inside["distanceM"], 50);
    let again = check_in(&app, &me, &arcade_qr, 52.5219, 13.4132).await;
    assert_eq!(
        again["data"]["checkIn"]["id"], inside["id"],
        "checking in twice keeps one check-in"
    );
    let elsewhere = check_in(&app, &me, &harbour_qr, 52.5163, 13.3777).await;
    assert_eq!(gql_code(&elsewhere), "conflict", "{elsewhere}");
    assert_eq!(
        elsewhere["errors"][0]["message"],
        "you are still checked in at Arcade; check out there first"
    );

    let seen = app.gql_ok(&f.t.access, FLOOR, json!({"v": f.venue})).await;
    assert_eq!(
        seen["venueFloor"],
        json!({"count": 1, "checkIns": [{"patronId": me.id}]})
    );
    let id: Uuid = inside["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        events(&app, f.t.id, "checkin.opened").await,
        vec![(Some(me.id), Some(id), Some(f.venue))]
    );

    // Only the patron itself checks out, once.
    let other = patron(&app, f.t.id, "ola").await;
    let body = app
        .gql(Some(&other.token), CHECK_OUT, json!({"id": id}))
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let g = floor(&app).await;
    let stranger = patron(&app, g.t.id, "sol").await;
    let body = app
        .gql(Some(&stranger.token), CHECK_OUT, json!({"id": id}))
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let body = check_in(&app, &stranger, &arcade_qr, 52.5219, 13.4132).await;
    assert_eq!(
        gql_code(&body),
        "not_found",
        "another operator's code: {body}"
    );
    let body = app
        .gql(Some(&g.t.access), FLOOR, json!({"v": f.venue}))
        .await;
    assert_eq!(
        gql_code(&body),
        "not_found",
        "another operator's floor: {body}"
    );

    let out = app.gql_ok(&me.token, CHECK_OUT, json!({"id": id})).await;
    assert!(out["checkOut"]["checkedOutAt"].is_string());
    let twice = app.gql_ok(&me.token, CHECK_OUT, json!({"id": id})).await;
    assert_eq!(
        twice["checkOut"]["checkedOutAt"],
        out["checkOut"]["checkedOutAt"]
    );
    assert_eq!(
        events(&app, f.t.id, "checkin.closed").await,
        vec![(Some(me.id), Some(id), Some(f.venue))],
        "one event for one check-out"
    );
    let seen = app.gql_ok(&f.t.access, FLOOR, json!({"v": f.venue})).await;
    assert_eq!(seen["venueFloor"], json!({"count": 0, "checkIns": []}));
    let stored: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "select checked_out_at from venue_checkin where tenant_id = $1 and id = $2",
    )
    .bind(f.t.id)
    .bind(id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert!(stored.is_some());

    // Now the harbour takes the patron.
    let body = check_in(&app, &me, &harbour_qr, 52.5163, 13.3777).await;
    assert_eq!(body["data"]["checkIn"]["distanceM"], 0, "{body}");
}

#[tokio::test]
async fn check_in_input_and_geofence_settings_are_checked_and_a_venue_without_a_fence_needs_no_location(
) {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let me = patron(&app, f.t.id, "kai").await;
    let qr = qr_payload(&app, &f.t.access, "venues", f.venue).await;
    for (lat, lon, field) in [(91.0, 0.0, "latitude"), (0.0, -181.0, "longitude")] {
        let body = check_in(&app, &me, &qr, lat, lon).await;
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    for (lat, lon, radius, field) in [(95.0, 0.0, 100, "latitude"), (0.0, 0.0, 5, "radiusM")] {
        let body = geofence(&app, &f.t.access, f.venue, lat, lon, radius).await;
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let partial = app
        .gql(
            Some(&f.t.access),
            "mutation($v: UUID!) { setVenueGeofence(venueId: $v, latitude: 1.0) { id } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&partial), "validation_failed", "{partial}");
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let body = geofence(&app, &staff, f.venue, 52.0, 13.0, 100).await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let body = check_in(&app, &me, "switchyard://v/nonsense", 0.0, 0.0).await;
    assert_eq!(gql_code(&body), "validation_failed", "{body}");
    let station_code = qr_payload(&app, &f.t.access, "stations", f.station).await;
    let body = check_in(&app, &me, &station_code, 0.0, 0.0).await;
    assert_eq!(
        gql_code(&body),
        "not_found",
        "a station's code is not a venue's: {body}"
    );

    // No fence set: the code alone checks in, wherever the patron is.
    let body = check_in(&app, &me, &qr, -33.86, 151.21).await;
    assert_eq!(body["data"]["checkIn"]["distanceM"], Value::Null, "{body}");
    let count: i64 = sqlx::query_scalar(
        "select count(*) from venue_checkin where tenant_id = $1 and checked_out_at is null",
    )
    .bind(f.t.id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(count, 1);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws client subscribed to `myEvents` from the first kept event on, as `token`.
async fn my_events(app: &TestApp, token: &str) -> Socket {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init =
        json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into()))
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "connection_ack");
    let query = "subscription { myEvents(after: 0) { kind subjectId patronId venueId } }";
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::Text(subscribe.to_string().into()))
        .await
        .unwrap();
    ws
}

async fn next_message(ws: &mut Socket) -> Value {
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["type"] != "ping" {
                return message;
            }
        }
    }
}

#[tokio::test]
async fn check_in_events_reach_the_patron_over_a_subscription_and_no_other_patron() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let qr = qr_payload(&app, &f.t.access, "venues", f.venue).await;
    let me = patron(&app, f.t.id, "ivy").await;
    let other = patron(&app, f.t.id, "zed").await;
    let mut mine = my_events(&app, &me.token).await;

    let body = check_in(&app, &me, &qr, 52.0, 13.0).await;
    let id = body["data"]["checkIn"]["id"].clone();
    app.gql_ok(&me.token, CHECK_OUT, json!({"id": id})).await;
    let theirs = check_in(&app, &other, &qr, 52.0, 13.0).await;
    let their_id = theirs["data"]["checkIn"]["id"].clone();

    for kind in ["checkin.opened", "checkin.closed"] {
        let message = next_message(&mut mine).await;
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(
            message["payload"]["data"]["myEvents"],
            json!({"kind": kind, "subjectId": id, "patronId": me.id, "venueId": f.venue}),
        );
    }
    // The other patron's stream starts at the same first event number and yet holds only its own check-in.
    let mut theirs = my_events(&app, &other.token).await;
    let message = next_message(&mut theirs).await;
    assert_eq!(
        message["payload"]["data"]["myEvents"],
        json!({"kind": "checkin.opened", "subjectId": their_id, "patronId": other.id, "venueId": f.venue}),
        "{message}"
    );
}
