//! QR codes: printed as SVG and PNG by members, refused when rotated, forged, another object's or not a code.

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::gql_code;

use super::{qr_payload, shop, START};

#[tokio::test]
async fn qr_codes_print_as_svg_and_png_and_a_rotated_or_wrong_payload_is_refused() {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 2_000).await;
    let old = qr_payload(&app, &f.t.access, "stations", f.station).await;
    let response = app
        .client
        .get(app.url(&format!("/api/v1/stations/{}/qr.svg", f.station)))
        .bearer_auth(&f.t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    assert!(response.text().await.unwrap().contains("<svg"));
    let response = app
        .client
        .get(app.url(&format!("/api/v1/venues/{}/qr.png", f.venue)))
        .bearer_auth(&f.t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "image/png");
    let png = response.bytes().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A patron does not print codes.
    let (status, _) = app
        .get(&format!("/api/v1/stations/{}/qr", f.station), &me.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let rotated = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!) { rotateStationQr(stationId: $s) { payload } }",
            json!({"s": f.station}),
        )
        .await["rotateStationQr"]["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(rotated, old);
    assert_eq!(
        qr_payload(&app, &f.t.access, "stations", f.station).await,
        rotated
    );
    let venue_code = qr_payload(&app, &f.t.access, "venues", f.venue).await;
    let forged = format!("{}{}", &rotated[..rotated.len() - 4], "0000");
    for (payload, code) in [
        (old.as_str(), "not_found"),
        (venue_code.as_str(), "not_found"),
        (forged.as_str(), "not_found"),
        ("https://example.com/pc-1", "validation_failed"),
    ] {
        let vars = json!({"qr": payload, "m": 10, "pay": "WALLET", "k": payload});
        let body = app.gql(Some(&me.token), START, vars).await;
        assert_eq!(gql_code(&body), code, "{payload}: {body}");
    }
    let vars = json!({"s": f.station, "qr": rotated, "m": 10, "pay": "WALLET", "k": "both"});
    let body = app.gql(Some(&me.token), START, vars).await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "stationId",
        "{body}"
    );
    let vars = json!({"qr": rotated, "m": 10, "pay": "WALLET", "k": "new"});
    let started = app.gql_ok(&me.token, START, vars).await;
    assert_eq!(started["startMySession"]["status"], "ACTIVE");
}
