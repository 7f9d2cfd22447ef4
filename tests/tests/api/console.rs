//! The web console: its files under `/console`, the refresh cookie it signs in with, signing out everywhere, the
//! price preview and floor tiles it shows — and the whole console end to end in real Chromium
//! (`console/e2e/console.mjs`, driven here).

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{spawn_app, spawn_app_with, unique_email, MEMBER_PASSWORD};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use uuid::Uuid;

/// A console build of its own: an index page and one fingerprinted asset.
fn tiny_console() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-console-{}", Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app-1a2b.js"), "console.log(1)").unwrap();
    dir
}

#[tokio::test]
async fn the_console_is_served_under_console_with_deep_links_security_headers_and_caching() {
    let dir = tiny_console();
    let app = spawn_app_with(&[("CONSOLE_DIR", dir.to_str().unwrap())]).await;
    for path in ["/console/", "/console/floor", "/console/setup/anything"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(
            r.text().await.unwrap(),
            "<!doctype html><title>console</title>",
            "{path}"
        );
    }
    let r = app
        .client
        .get(app.url("/console/assets/app-1a2b.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(r.text().await.unwrap(), "console.log(1)");
    // The API beside it is untouched.
    let r = app
        .client
        .get(app.url("/api/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A server without a console says so on every console path.
    let bare = spawn_app().await;
    let r = bare
        .client
        .get(bare.url("/console/floor"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CONSOLE_DIR"),
        "{body}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `switchyard_refresh` cookie a response sets, as (value, attributes).
fn refresh_cookie(r: &reqwest::Response) -> (String, String) {
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (pair, attributes) = set.split_once(';').unwrap();
    let value = pair.strip_prefix("switchyard_refresh=").unwrap().to_owned();
    (value, attributes.to_owned())
}

async fn cookie_post(
    app: &switchyard_tests::TestApp,
    path: &str,
    cookie: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .header("x-switchyard-refresh", "cookie")
        .json(&body);
    if let Some(c) = cookie {
        request = request.header("cookie", format!("other=1; switchyard_refresh={c}"));
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_browser_keeps_its_refresh_token_in_an_http_only_cookie_that_rotates_and_signs_out() {
    let app = spawn_app().await;
    let owner = app.signup().await;
    let creds = json!({"email": owner.email, "password": owner.password});
    let r = cookie_post(&app, "/api/v1/auth/login", None, creds.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (first, attributes) = refresh_cookie(&r);
    for a in [
        "Path=/api/v1/auth",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=2592000",
    ] {
        assert!(attributes.contains(a), "{attributes}");
    }
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["refresh_token"], "",
        "the token stays out of script's reach: {body}"
    );
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    // The cookie refreshes (and rotates); the spent one is refused and, as a reuse, signs the family out.
    let r = cookie_post(&app, "/api/v1/auth/refresh", Some(&first), json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (second, _) = refresh_cookie(&r);
    assert_ne!(second, first);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = app.gql_ok(&access, "{ me { email } }", json!({})).await;
    assert_eq!(me["me"]["email"], owner.email.as_str());
    let r = cookie_post(&app, "/api/v1/auth/refresh", Some(&first), json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = cookie_post(&app, "/api/v1/auth/refresh", Some(&second), json!({})).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "reuse revoked the family"
    );

    // No cookie and no token: a clear 401.
    let r = cookie_post(&app, "/api/v1/auth/refresh", None, json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");

    // Logout revokes the cookie's token and clears the cookie.
    let r = cookie_post(&app, "/api/v1/auth/login", None, creds).await;
    let (third, _) = refresh_cookie(&r);
    let r = cookie_post(&app, "/api/v1/auth/logout", Some(&third), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (cleared, attributes) = refresh_cookie(&r);
    assert_eq!(cleared, "");
    assert!(attributes.contains("Max-Age=0"), "{attributes}");
    let r = cookie_post(&app, "/api/v1/auth/refresh", Some(&third), json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_refresh_token_of_the_login() {
    let app = spawn_app().await;
    let owner = app.signup().await;
    let creds = json!({"email": owner.email, "password": owner.password});
    let r = cookie_post(&app, "/api/v1/auth/login", None, creds).await;
    let (browser, _) = refresh_cookie(&r);
    let revoked = app
        .gql_ok(&owner.access, "mutation { signOutEverywhere }", json!({}))
        .await;
    assert_eq!(revoked["signOutEverywhere"], 2, "{revoked}");
    let r = cookie_post(&app, "/api/v1/auth/refresh", Some(&browser), json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": owner.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let anonymous = app
        .gql(None, "mutation { signOutEverywhere }", json!({}))
        .await;
    assert_eq!(switchyard_tests::gql_code(&anonymous), "unauthenticated");
}

const PREVIEW: &str = "query($t: TariffTermsInput!, $z: String!, $s: DateTime!, $m: Int!) {
  pricePreview(terms: $t, timezone: $z, startAt: $s, minutes: $m) { amount currency lines { kind description amount } } }";

#[tokio::test]
async fn the_price_preview_prices_terms_as_typed_and_names_what_is_wrong() {
    let app = spawn_app().await;
    let owner = app.signup().await;
    let vars = |terms: Value, zone: &str, minutes: i64| json!({"t": terms, "z": zone, "s": "2026-12-02T18:00:00Z", "m": minutes});
    let data = app
        .gql_ok(
            &owner.access,
            PREVIEW,
            vars(
                json!({"currency": "EUR", "perMinute": 100, "freeMinutes": 30}),
                "Europe/Berlin",
                90,
            ),
        )
        .await;
    let p = &data["pricePreview"];
    assert_eq!(
        (p["amount"].clone(), p["currency"].clone()),
        (json!(6000), json!("EUR"))
    );
    let kinds: Vec<&str> = p["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["free_period", "time"], "{p}");
    let line_sum: i64 = p["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(line_sum, 6000);

    for (terms, zone, minutes, field) in [
        (json!({"currency": "EUR"}), "Mars/Olympus", 10, "timezone"),
        (json!({"currency": "EUR"}), "UTC", 0, "minutes"),
        (json!({"currency": "eur"}), "UTC", 10, "currency"),
        (
            json!({"currency": "EUR", "perMinute": -1}),
            "UTC",
            10,
            "perMinute",
        ),
    ] {
        let body = app
            .gql(Some(&owner.access), PREVIEW, vars(terms, zone, minutes))
            .await;
        assert_eq!(
            switchyard_tests::gql_code(&body),
            "validation_failed",
            "{body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let body = app
        .gql(None, PREVIEW, vars(json!({"currency": "EUR"}), "UTC", 10))
        .await;
    assert_eq!(switchyard_tests::gql_code(&body), "unauthenticated");
}

#[tokio::test]
async fn floor_tiles_name_the_patron_keep_paused_sessions_and_give_the_cost_a_minute_on() {
    let app = spawn_app().await;
    let owner = app.signup().await;
    let venue = app.create_venue(&owner.access, "Floor").await;
    let station = app.create_station(&owner.access, venue, "PC-07").await;
    let tariff = app
        .create_tariff(
            &owner.access,
            "Per minute",
            "currency: \"EUR\", perMinute: 10",
        )
        .await;
    app.gql_ok(
        &owner.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": tariff, "v": venue}),
    )
    .await;
    let data = app
        .gql_ok(
            &owner.access,
            "mutation($s: UUID!) { startSession(input: {stationId: $s, durationMinutes: 30, payment: CASH}) { id patronId } }",
            json!({"s": station}),
        )
        .await;
    let session = data["startSession"]["id"].as_str().unwrap().to_owned();
    let tile = |d: &Value| {
        d["venues"][0]["stations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "PC-07")
            .cloned()
            .unwrap()
    };
    let (_, d) = app.get("/api/v1/dashboard", &owner.access).await;
    let s = &tile(&d)["session"];
    assert_eq!(s["session_id"], session.as_str());
    assert_eq!(s["status"], "active");
    assert!(!s["patron_name"].as_str().unwrap().is_empty(), "{s}");
    assert_eq!(
        s["cost_in_a_minute"].as_i64().unwrap() - s["running_cost"].as_i64().unwrap(),
        10,
        "a minute at 0.10 a minute: {s}"
    );

    app.gql_ok(
        &owner.access,
        "mutation($s: UUID!) { pauseSession(id: $s) { id } }",
        json!({"s": session}),
    )
    .await;
    let (_, d) = app.get("/api/v1/dashboard", &owner.access).await;
    let s = &tile(&d)["session"];
    assert_eq!(
        (s["session_id"].as_str(), s["status"].as_str()),
        (Some(session.as_str()), Some("paused")),
        "{d}"
    );
    assert_eq!(
        s["cost_in_a_minute"], s["running_cost"],
        "a paused session does not cost more: {s}"
    );
}

/// The console's own folder (`TEST_CONSOLE_ROOT`, set by `./infra/dev.sh test` after it built the console).
fn console_root() -> std::path::PathBuf {
    std::env::var("TEST_CONSOLE_ROOT")
        .unwrap_or_else(|_| {
            panic!("TEST_CONSOLE_ROOT is not set: run the suite with ./infra/dev.sh test, which builds the console")
        })
        .into()
}

/// The next JSON line of the browser script, within a generous bound.
async fn next_event(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    waiting_for: &str,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(240), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("the browser script said nothing for 240 s while {waiting_for}"))
        .unwrap()
        .unwrap_or_else(|| {
            panic!("the browser script ended while {waiting_for}; its error is above")
        });
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test]
async fn in_chromium_an_owner_signs_up_sets_up_and_runs_the_floor_while_staff_stop_sessions_and_sos_arrive(
) {
    let root = console_root();
    let dist = root.join("dist");
    let app = spawn_app_with(&[
        ("CONSOLE_DIR", dist.to_str().unwrap()),
        (
            "SECRETS_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
    ])
    .await;
    let email = unique_email("console-owner");
    let password = "Harbour-Arcade-2026";
    let shots = std::env::var("TEST_SCREENSHOT_DIR").unwrap_or_default();
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("e2e/console.mjs"))
        .current_dir(&root)
        .env("CONSOLE_URL", format!("http://{}", app.addr))
        .env("OWNER_ORG", "Harbour Arcade GmbH")
        .env("OWNER_EMAIL", &email)
        .env("OWNER_PASSWORD", password)
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("node could not start ({e}): ./infra/dev.sh test installs it"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut screens = Vec::new();
    let mut bridge_token = None;
    loop {
        let e = next_event(&mut lines, "the owner signed up and set up").await;
        match e["event"].as_str() {
            Some("owner_ready") => break,
            Some("signed_up") => {
                // The verification email's link, for the browser to open.
                let m =
                    switchyard_tests::mail::wait_for_link(&email, "/console/verify-email", 1).await;
                let answer = json!({"verify": m.link_path("/console/verify-email")});
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
            }
            Some("bridge") => bridge_token = e["token"].as_str().map(str::to_owned),
            Some("accessible") => screens.push(e["screen"].as_str().unwrap().to_owned()),
            _ => panic!("unexpected {e}"),
        }
    }

    // What the browser made is in the database: the owner's tenant, its venue, station and tariff.
    let owner = app.login(&email, password).await;
    let venues = app
        .gql_ok(&owner.access, "{ venues { id name timezone currency latitude longitude geofenceM stations { name kind control controlSettings selfService } prices { stationKind stationId tariff { name } } } tariffs { name version terms { perMinute freeMinutes dailyCap } } }", json!({}))
        .await;
    let venue = &venues["venues"][0];
    assert_eq!(
        (
            venue["name"].clone(),
            venue["timezone"].clone(),
            venue["currency"].clone()
        ),
        (
            json!("Harbour Arcade"),
            json!("Europe/Berlin"),
            json!("EUR")
        )
    );
    assert_eq!(
        venue["stations"],
        json!([
            {"name": "PC-01", "kind": "PC", "control": "MANUAL", "controlSettings": {}, "selfService": false},
            {"name": "PS5-01", "kind": "CONSOLE", "control": "SHELLY",
             "controlSettings": {"host": "10.0.0.7", "generation": 2}, "selfService": true},
        ])
    );
    // The third station, taken out of use and back, edited and archived in the browser, is kept archived as edited.
    let venue_id: Uuid = venue["id"].as_str().unwrap().parse().unwrap();
    let (tenant, archived): (Uuid, serde_json::Value) = sqlx::query_as(
        "select tenant_id, jsonb_build_object('name', name, 'kind', kind, 'control', control,
                  'settings', control_settings, 'location', location, 'status', status,
                  'self_service', self_service, 'archived', archived_at is not null)
           from station where venue_id = $1 and archived_at is not null",
    )
    .bind(venue_id)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        archived,
        json!({"name": "Karaoke A", "kind": "karaoke_room", "control": "tasmota",
               "settings": {"topic": "karaoke-a"}, "location": "Upstairs", "status": "offline",
               "self_service": false, "archived": true})
    );
    let actions: Vec<String> = sqlx::query_scalar(
        "select a.action from audit_log a join station s on s.tenant_id = a.tenant_id and s.id = a.object_id
          where a.tenant_id = $1 and s.archived_at is not null order by a.created_at, a.id",
    )
    .bind(tenant)
    .fetch_all(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        actions,
        [
            "station.create",
            "station.update",
            "station.update",
            "station.update",
            "station.archive"
        ]
    );
    assert_eq!(
        (&venue["latitude"], &venue["longitude"], &venue["geofenceM"]),
        (&json!(53.5413), &json!(9.9843), &json!(150))
    );
    // Two tariffs: the evening one for the venue, edited three times (66.00 an hour, at most 40.00 a day; 72.00 an
    // hour with no cap by someone else meanwhile; then 78.00 an hour once the console had refused the save made from
    // version 2, their lifted cap kept), and one for its consoles (90.00 an hour, the first 10 minutes free).
    assert_eq!(
        venues["tariffs"],
        json!([
            {"name": "Consoles", "version": 1, "terms": {"perMinute": 150, "freeMinutes": 10, "dailyCap": null}},
            {"name": "Evening", "version": 4, "terms": {"perMinute": 130, "freeMinutes": 0, "dailyCap": null}},
        ])
    );
    assert_eq!(
        venue["prices"],
        json!([
            {"stationKind": null, "stationId": null, "tariff": {"name": "Evening"}},
            {"stationKind": "CONSOLE", "stationId": null, "tariff": {"name": "Consoles"}},
        ])
    );
    let settings = app
        .gql_ok(
            &owner.access,
            "{ tenant { billingTickSec staffCashTopUpCap chargerMeterSetup } legalDetails { legalName legalAddress taxId } branding { logoUrl color } paymentAccount { publishableKey secretKeyHint webhookSecretSet } bridges { name venueId online } }",
            json!({}),
        )
        .await;
    assert_eq!(
        settings,
        json!({
            "tenant": {"billingTickSec": 15, "staffCashTopUpCap": 15000, "chargerMeterSetup": true},
            "legalDetails": {"legalName": "Harbour Arcade GmbH", "legalAddress": "Quay 1, 20457 Hamburg", "taxId": "DE123456789"},
            // The brand colour is stored as chosen (emails use it); only the console darkens it.
            "branding": {"logoUrl": "https://cdn.example.test/harbour.png", "color": "#ffd700"},
            "paymentAccount": {"publishableKey": "pk_test_harbour12345", "secretKeyHint": "sk_test_…1234", "webhookSecretSet": true},
            "bridges": [{"name": "Front desk", "venueId": venue_id, "online": false}],
        })
    );
    // The token the page showed is the bridge's: the tunnel takes it.
    let token = bridge_token.unwrap();
    let upgrade = |bearer: String| {
        app.client
            .get(app.url("/edge/v1/tunnel"))
            .bearer_auth(bearer)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    let opened = upgrade(token.clone()).await.unwrap();
    assert_eq!(
        opened.status(),
        StatusCode::SWITCHING_PROTOCOLS,
        "the console's bridge token was refused"
    );
    drop(opened);
    let wrong = upgrade(format!("{token}x")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // Staff of this venue, and staff of another venue of the same tenant.
    let other_venue = app.create_venue(&owner.access, "Second Venue").await;
    app.create_station(&owner.access, other_venue, "Counter")
        .await;
    let mut logins = Vec::new();
    let mut staff_ids = Vec::new();
    for scope in [venue_id, other_venue] {
        let (id, member_email, _) = app.add_member_login(&owner, "STAFF").await;
        staff_ids.push(id);
        app.gql_ok(
            &owner.access,
            "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
            json!({"u": id, "v": [scope]}),
        )
        .await;
        logins.push(json!({"email": member_email, "password": MEMBER_PASSWORD}));
    }
    let invitee = unique_email("console-manager");
    let answer =
        json!({"staff": logins[0], "other": logins[1], "venueId": venue_id, "invitee": invitee});
    stdin
        .write_all(format!("{answer}\n").as_bytes())
        .await
        .unwrap();

    let mut figures = Vec::new();
    let mut ticked = None;
    let mut csv = None;
    loop {
        let e = next_event(&mut lines, "the floor, staff and SOS steps ran").await;
        match e["event"].as_str() {
            Some("done") => break,
            Some("accessible") => screens.push(e["screen"].as_str().unwrap().to_owned()),
            Some("figure") => figures.push(e),
            Some("cost_ticked") => ticked = Some(e),
            Some("roll_up") => {
                // The workers' analytics pass, as `switchyard-workers` runs it, then the script goes on.
                let db = switchyard_tests::app_db(2);
                super::analytics::roll_up(&app, &db, owner.id).await;
                stdin.write_all(b"{}\n").await.unwrap();
            }
            Some("csv") => csv = Some(e),
            Some("invited") => {
                // The invitation email's link, for the invitee's browser to open.
                let m = switchyard_tests::mail::wait_for_link(
                    &invitee,
                    "/console/invitations/accept",
                    1,
                )
                .await;
                let answer = json!({"accept": m.link_path("/console/invitations/accept")});
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
            }
            _ => panic!("unexpected {e}"),
        }
    }
    // Nothing more to say: the script's stdin ends, so it can exit.
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    assert_eq!(
        screens,
        [
            "sign-up",
            "verify-email",
            "sign-in",
            "set-up (editing a station, archiving one)",
            "set-up",
            "settings",
            "floor",
            "sessions",
            "patrons",
            "accept-invitation",
            "staff",
            "work (staff)",
            "work",
            "reports"
        ]
    );
    // The owner's address was confirmed from the emailed link: the login is no longer confined to its tenant.
    let (verified, confined): (Option<chrono::DateTime<chrono::Utc>>, Option<Uuid>) =
        sqlx::query_as(
            "select email_verified_at, unverified_tenant_id from app_user where email = $1",
        )
        .bind(&email)
        .fetch_one(&app.owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        verified.is_some() && confined.is_none(),
        "{verified:?} {confined:?}"
    );
    // The task the owner gave in the browser was done by the staff member in theirs; the owner's shift ended.
    let work = app
        .gql_ok(
            &owner.access,
            "query($f: DateTime!, $t: DateTime!) { tasks(state: DONE) { title stationId completedBy } onShift { id } shiftHours(from: $f, to: $t) { email shifts } }",
            json!({"f": chrono::Utc::now() - chrono::Duration::days(1), "t": chrono::Utc::now()}),
        )
        .await;
    assert_eq!(work["tasks"].as_array().unwrap().len(), 1, "{work}");
    assert_eq!(work["tasks"][0]["title"], "Replace the PC-01 headset");
    assert_eq!(work["tasks"][0]["completedBy"], json!(staff_ids[0]));
    assert!(work["tasks"][0]["stationId"].is_string(), "{work}");
    assert_eq!(work["onShift"], json!([]));
    assert_eq!(
        work["shiftHours"],
        json!([{"email": owner.email, "shifts": 1}])
    );
    let ticked = ticked.unwrap();
    assert_ne!(ticked["from"], ticked["to"], "{ticked}");
    println!("console figures: {figures:?}");
    let csv = csv.unwrap();
    assert!(
        csv["name"].as_str().unwrap().starts_with("sessions-"),
        "{csv}"
    );

    // The session the owner started in the browser was stopped by the staff member, and the SOS was resolved.
    let sessions = app
        .gql_ok(&owner.access, "{ sessions(limit: 10) { status stationId } stations { id name } incidents { status note } }", json!({}))
        .await;
    assert_eq!(sessions["sessions"][0]["status"], "ENDED", "{sessions}");
    let pc = sessions["stations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "PC-01")
        .map(|s| s["id"].clone());
    assert_eq!(
        Some(sessions["sessions"][0]["stationId"].clone()),
        pc,
        "{sessions}"
    );
    assert_eq!(sessions["incidents"][0]["status"], "RESOLVED", "{sessions}");

    // The invitation sent from the browser reached the invitee, who joined from its link in a browser with a
    // password of its own, as a manager of that venue only; the owner's address was confirmed from its link.
    let manager = app.login(&invitee, "Manager-of-the-harbour-1").await;
    let me = app
        .gql_ok(
            &manager.access,
            "{ me { role } venues { name } }",
            json!({}),
        )
        .await;
    assert_eq!(
        me,
        json!({"me": {"role": "MANAGER"}, "venues": [{"name": "Harbour Arcade"}]})
    );

    // The patron added in the browser holds the cash taken for it, once.
    let patrons = app
        .gql_ok(
            &owner.access,
            "{ patrons(search: \"Mia\") { displayName email rfidTags flagged flagReason wallet(currency: \"EUR\") { balance statement { amount } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        patrons["patrons"],
        json!([{"displayName": "Mia Jones", "email": "mia@example.com",
                "rfidTags": ["04A1B2C3"], "flagged": true, "flagReason": "Left without paying once",
                "wallet": {"balance": 2000, "statement": [{"amount": 2000}]}}])
    );
}

#[tokio::test]
async fn in_chromium_an_owner_starts_and_stops_a_charger_remotely_and_sees_its_transaction() {
    use switchyard_tests::ocpp_peer::{ChargePoint, OcppVersion};
    let root = console_root();
    // The password call is answered by hand once the browser has shown it pending: its timeout leaves the browser
    // all the time its steps may take.
    let app = spawn_app_with(&[
        ("CONSOLE_DIR", root.join("dist").to_str().unwrap()),
        ("OCPP_CALL_TIMEOUT_SECS", "300"),
    ])
    .await;
    let s = super::charging::site(&app).await;
    let mut cp = super::charging::boot(&app, &s, OcppVersion::V16).await;
    cp.reply_silent("ChangeConfiguration").await;
    // A station with no charger yet, for one that joins with the onboarding key.
    let free = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "Bay 2", "kind": "EV_CHARGER", "control": "MANUAL"}}),
        )
        .await["createStation"]["id"]
        .clone();
    // And one with no charger whose session is paused: a charger is not adopted onto it, so it is not offered.
    let paused = app
        .gql_ok(
            &s.t.access,
            "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
            json!({"i": {"venueId": s.venue, "name": "Bay 3", "kind": "EV_CHARGER", "control": "MANUAL"}}),
        )
        .await["createStation"]["id"]
        .clone();
    let session = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": paused, "p": s.patron}),
        )
        .await["startSession"]["id"]
        .clone();
    let held = app
        .gql_ok(
            &s.t.access,
            "mutation($s: UUID!) { pauseSession(id: $s) { status } }",
            json!({"s": session}),
        )
        .await;
    assert_eq!(held["pauseSession"]["status"], "PAUSED", "{held}");
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    let (newcomer, stranger) = (format!("NEW-{suffix}"), format!("ODD-{suffix}"));
    let (_, staff, _) = app.add_member_login(&s.t, "STAFF").await;
    let shots = std::env::var("TEST_SCREENSHOT_DIR").unwrap_or_default();
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("e2e/chargers.mjs"))
        .current_dir(&root)
        .env("CONSOLE_URL", format!("http://{}", app.addr))
        .env("OWNER_EMAIL", &s.t.email)
        .env("OWNER_PASSWORD", &s.t.password)
        .env("CHARGER", &s.identity)
        .env("PATRON", "Driver")
        .env("STAFF_EMAIL", &staff)
        .env("STAFF_PASSWORD", MEMBER_PASSWORD)
        .env("NEW_CHARGER", &newcomer)
        .env("STRANGER", &stranger)
        .env("FREE_STATION", "Bay 2")
        .env("PAUSED_STATION", "Bay 3")
        .env("SCREENSHOT_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("node could not start ({e}): ./infra/dev.sh test installs it"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let e = next_event(&mut lines, "the owner started charging").await;
    assert_eq!(e["event"], "start_clicked", "{e}");
    // The charger hears the remote start, starts with the handed tag and meters 5 kWh.
    let remote = cp.next_received("RemoteStartTransaction").await;
    let tag = remote["idTag"].as_str().unwrap().to_owned();
    let start = cp
        .call(
            "StartTransaction",
            json!({"connectorId": 1, "idTag": tag, "meterStart": 10000, "timestamp": chrono::Utc::now()}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let transaction = start["transactionId"].as_i64().unwrap();
    cp.call(
        "MeterValues",
        json!({"connectorId": 1, "transactionId": transaction, "meterValue": [{
            "timestamp": chrono::Utc::now(), "sampledValue": [{"value": "15000"}]}]}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stdin.write_all(b"{}\n").await.unwrap();

    let e = next_event(&mut lines, "the owner stopped charging").await;
    assert_eq!(e["event"], "stop_clicked", "{e}");
    assert_eq!(
        cp.next_received("RemoteStopTransaction").await,
        json!({"transactionId": transaction})
    );
    cp.call(
        "StopTransaction",
        json!({"transactionId": transaction, "meterStop": 15000, "timestamp": chrono::Utc::now(), "reason": "Remote"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stdin.write_all(b"{}\n").await.unwrap();

    // A new password, shown once in the browser, reaches the charger; the card shows it pending until the charger
    // answers.
    let e = next_event(&mut lines, "the owner set a new password").await;
    assert_eq!(e["event"], "password_set", "{e}");
    let password = e["password"].as_str().unwrap_or_default().to_owned();
    let sent = cp.next_received_full("ChangeConfiguration").await;
    assert_eq!(
        sent.payload,
        json!({"key": "AuthorizationKey", "value": password})
    );
    cp.send_raw(&format!(
        r#"[3,"{}",{{"status":"Accepted"}}]"#,
        sent.unique_id
    ))
    .await;
    stdin.write_all(b"{}\n").await.unwrap();

    // The owner lets new chargers join with the onboarding key shown in the browser: two join, pending.
    let e = next_event(&mut lines, "the owner made an onboarding key").await;
    assert_eq!(e["event"], "onboarding_key", "{e}");
    let key = e["key"].as_str().unwrap_or_default().to_owned();
    use super::charging::commands::join_pending;
    let wallbox = ("Acme", "Wallbox");
    let (mut new_cp, _) = join_pending(&app, &s.t, &key, &newcomer, wallbox).await;
    let (mut odd_cp, _) = join_pending(&app, &s.t, &key, &stranger, wallbox).await;
    stdin.write_all(b"{}\n").await.unwrap();

    // One is refused in the browser: its connection ends. The other, adopted onto Bay 2, hears the password the
    // browser showed and is asked to boot again.
    let e = next_event(&mut lines, "the owner adopted the new charger").await;
    assert_eq!(e["event"], "adopted", "{e}");
    assert_eq!(odd_cp.closed().await.0, 1000);
    let adopted = e["password"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        new_cp.next_received("ChangeConfiguration").await,
        json!({"key": "AuthorizationKey", "value": adopted})
    );
    assert_eq!(
        new_cp.next_received("TriggerMessage").await,
        json!({"requestedMessage": "BootNotification"})
    );
    let boot = new_cp
        .call(
            "BootNotification",
            json!({"chargePointVendor": "Acme", "chargePointModel": "Wallbox"}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(boot["status"], "Accepted", "{boot}");
    stdin.write_all(b"{}\n").await.unwrap();
    drop(stdin);

    let e = next_event(&mut lines, "the commands and the accessibility check").await;
    assert_eq!(e["event"], "done", "{e}");
    // The charger heard each command as the owner gave it (and the library found each valid).
    let profile = cp.next_received("SetChargingProfile").await;
    assert_eq!(
        profile["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"],
        7400,
        "{profile}"
    );
    let reserve = cp.next_received("ReserveNow").await;
    assert_eq!(reserve["reservationId"], e["reservation"], "{reserve}");
    assert_eq!(
        cp.next_received("CancelReservation").await,
        json!({"reservationId": e["reservation"]})
    );
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    // 5 kWh at 0.30 from the wallet's 10.00.
    assert_eq!(
        super::charging::wallet(&app, &s.t, s.patron).await,
        (850, 0)
    );
    let c = super::charging::charger(&app, &s.t, s.charger).await;
    assert_eq!(
        (
            c["transactions"][0]["energyWh"].clone(),
            c["transactions"][0]["stopReason"].clone()
        ),
        (json!(5000), json!("Remote"))
    );
    assert_eq!(c["powerLimitW"], 7400, "{c}");
    // The charger took the new password: only it opens the charger now.
    let pending = app
        .gql_ok(
            &s.t.access,
            "query($c: UUID!) { charger(id: $c) { passwordPending } }",
            json!({"c": s.charger}),
        )
        .await;
    assert_eq!(pending["charger"]["passwordPending"], false, "{pending}");
    cp.close().await;
    let url = switchyard_tests::ocpp_peer::ocpp_url(app.addr, &s.identity);
    let old = ChargePoint::connect(&url, &s.identity, Some(&s.password), OcppVersion::V16).await;
    assert_eq!(old.err().and_then(|e| e.status), Some(401));
    ChargePoint::connect(&url, &s.identity, Some(&password), OcppVersion::V16)
        .await
        .unwrap_or_else(|e| panic!("the new password does not open the charger: {e:?}"))
        .close()
        .await;

    // What the browser did with the new chargers is what the database holds: the adopted one is Bay 2's and opens
    // with its own password only, the refused one with nothing.
    new_cp.close().await;
    let chargers = app
        .gql_ok(
            &s.t.access,
            "{ chargers { chargePointId registration stationId hasPassword } tenant { acceptPendingChargers hasChargerOnboardingKey } }",
            json!({}),
        )
        .await;
    let of = |id: &str| {
        chargers["chargers"]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["chargePointId"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} is not listed: {chargers}"))
    };
    assert_eq!(
        of(&newcomer),
        json!({"chargePointId": newcomer, "registration": "accepted", "stationId": free, "hasPassword": true})
    );
    assert!(
        !chargers.to_string().contains(&stranger),
        "the refused charger was forgotten: {chargers}"
    );
    assert_eq!(
        chargers["tenant"],
        json!({"acceptPendingChargers": true, "hasChargerOnboardingKey": true})
    );
    for (id, password, status) in [(&newcomer, &key, Some(401)), (&newcomer, &adopted, None)] {
        let url = switchyard_tests::ocpp_peer::ocpp_url(app.addr, id);
        let got = ChargePoint::connect(&url, id, Some(password), OcppVersion::V16).await;
        match got {
            Ok(cp) => {
                assert_eq!(status, None, "{id} opened with {password}");
                cp.close().await;
            }
            Err(e) => assert_eq!(e.status, status, "{id}: {e:?}"),
        }
    }
    // Forgotten, the refused charger's identity joins with the key as a new pending charger.
    join_pending(&app, &s.t, &key, &stranger, wallbox)
        .await
        .0
        .close()
        .await;
}

#[tokio::test]
async fn in_chromium_staff_dock_rent_and_take_back_a_powerbank_at_manual_cabinets() {
    let root = console_root();
    let app = spawn_app_with(&[("CONSOLE_DIR", root.join("dist").to_str().unwrap())]).await;
    let c = super::rentals::setup(&app, 2_000).await;
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("e2e/rentals.mjs"))
        .current_dir(&root)
        .env("CONSOLE_URL", format!("http://{}", app.addr))
        .env("OWNER_EMAIL", &c.t.email)
        .env("OWNER_PASSWORD", &c.t.password)
        .env("PATRON", "Rita")
        .env(
            "SCREENSHOT_DIR",
            std::env::var("TEST_SCREENSHOT_DIR").unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("node could not start ({e}): ./infra/dev.sh test installs it"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let done = next_event(&mut lines, "the rental ran").await;
    assert_eq!(done["event"], "done", "{done}");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");

    // What the browser did is what the database holds: the rental ended at no cost with its deposit released,
    // the powerbank back in cabinet A, the new one docked in B.
    assert_eq!(
        super::rentals::wallet(&app, &c).await,
        json!({"balance": 2_000, "depositHeld": 0, "debt": 0})
    );
    let ended = app
        .gql_ok(
            &c.t.access,
            "query($p: UUID!) { sessions(patronId: $p) { status chargedAmount assetLabel stationId } }",
            json!({"p": c.patron}),
        )
        .await;
    assert_eq!(
        ended["sessions"],
        json!([{"status": "ENDED", "chargedAmount": 0, "assetLabel": done["label"], "stationId": c.a}])
    );
    let docked = |station: Uuid| {
        let app = &app;
        let token = c.t.access.clone();
        async move {
            app.gql_ok(
                &token,
                "query($s: UUID!) { assets(stationId: $s) { label slot status } }",
                json!({"s": station}),
            )
            .await["assets"]
                .clone()
        }
    };
    assert_eq!(
        docked(c.a).await,
        json!([{"label": "pb-001", "slot": 1, "status": "docked"}, {"label": "pb-002", "slot": 2, "status": "docked"}])
    );
    assert_eq!(
        docked(c.b).await,
        json!([{"label": "pb-003", "slot": 1, "status": "docked"}])
    );
}
