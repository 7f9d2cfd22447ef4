//! Patron accounts: sign-up and login with an operator, refresh, and a patron token that sees only the patron's
//! own sessions, wallet and card — never staff data.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_tests::{gql_code, unique_email, TestApp};
use uuid::Uuid;

use crate::sessions::{floor, start, top_up};

const PASSWORD: &str = "Blue-Lantern-77";

async fn patron_signup(
    app: &TestApp,
    tenant: Uuid,
    name: &str,
    email: &str,
) -> (StatusCode, Value) {
    app.post(
        "/api/v1/auth/patron/signup",
        json!({"tenant_id": tenant, "display_name": name, "email": email, "password": PASSWORD}),
    )
    .await
}

const ME: &str = "{ myProfile { id displayName card { last4 } wallet(currency: \"EUR\") { balance statement { kind amount } } }
                  mySessions { id patronId status } }";

#[tokio::test]
async fn a_patron_signs_up_logs_in_and_sees_only_its_own_sessions_wallet_and_card() {
    let app = switchyard_tests::spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let f = floor(&app).await;
    let email = unique_email("noor");
    let (status, pair) = patron_signup(&app, f.t.id, "Noor", &email).await;
    assert_eq!(status, StatusCode::CREATED, "{pair}");
    assert_eq!(pair["tenant_id"], f.t.id.to_string());
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let me = app
        .gql_ok(&token, "{ myProfile { id displayName email } }", json!({}))
        .await;
    let noor: Uuid = me["myProfile"]["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(me["myProfile"]["email"], email);

    // Staff see the new patron like any other, top it up and start a session for it and one for someone else.
    top_up(&app, &f, noor, 2_000, "noor-cash").await;
    let other = app.create_patron(&f.t.access, "Sam", None).await;
    top_up(&app, &f, other, 2_000, "sam-cash").await;
    let (status, mine) = start(
        &app,
        &f.t.access,
        Some("noor-1"),
        json!({"station_id": f.station, "patron_id": noor, "duration_minutes": 30, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{mine}");
    app.send(
        Method::DELETE,
        &format!("/api/v1/sessions/{}", mine["session_id"].as_str().unwrap()),
        Some(&f.t.access),
        None,
    )
    .await;
    let (status, theirs) = start(
        &app,
        &f.t.access,
        Some("sam-1"),
        json!({"station_id": f.station, "patron_id": other, "duration_minutes": 30, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{theirs}");
    app.gql_ok(
        &f.t.access,
        "mutation($p: UUID!) { savePatronCard(patronId: $p, paymentMethod: \"pm_card_visa\") { id } }",
        json!({"p": noor}),
    )
    .await;

    // The patron logs in again (a new device) and sees its own things only.
    let (status, login) = app
        .post(
            "/api/v1/auth/patron/login",
            json!({"tenant_id": f.t.id, "email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    let data = app.gql_ok(&token, ME, json!({})).await;
    assert_eq!(data["myProfile"]["card"], json!({"last4": "4242"}));
    // The stopped session cost its one-minute minimum (10).
    assert_eq!(data["myProfile"]["wallet"]["balance"], 1_990);
    let statement = data["myProfile"]["wallet"]["statement"].as_array().unwrap();
    assert_eq!(
        statement.last().unwrap(),
        &json!({"kind": "top_up_cash", "amount": 2000})
    );
    assert_eq!(
        statement
            .iter()
            .map(|l| l["amount"].as_i64().unwrap())
            .sum::<i64>(),
        1_990
    );
    assert_eq!(
        data["mySessions"],
        json!([{"id": mine["session_id"], "patronId": noor, "status": "ENDED"}])
    );
    let wallet = app
        .gql_ok(
            &token,
            "{ myWallet(currency: \"EUR\") { balance debt } }",
            json!({}),
        )
        .await;
    assert_eq!(wallet["myWallet"], json!({"balance": 1990, "debt": 0}));

    // Staff data and other patrons are not the patron's.
    for (query, variables) in [
        ("{ patrons { id } }", json!({})),
        (
            "query($id: UUID!) { patron(id: $id) { id } }",
            json!({"id": other}),
        ),
        (
            "query($id: UUID!) { session(id: $id) { id } }",
            json!({"id": theirs["session_id"]}),
        ),
        ("{ sessions { id } }", json!({})),
        ("{ venues { id } }", json!({})),
        (
            "mutation { createPatron(input: {displayName: \"X\"}) { id } }",
            json!({}),
        ),
    ] {
        let body = app.gql(Some(&token), query, variables).await;
        assert_eq!(gql_code(&body), "forbidden", "{query}: {body}");
    }
    let (status, body) = app.get("/api/v1/stations", &token).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );
    let (status, _) = app
        .get(
            &format!(
                "/api/v1/sessions/{}",
                theirs["session_id"].as_str().unwrap()
            ),
            &token,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // And the patron app's fields are not staff's.
    let staff_me = app
        .gql(Some(&f.t.access), "{ mySessions { id } }", json!({}))
        .await;
    assert_eq!(gql_code(&staff_me), "forbidden");

    // Refresh keeps the patron a patron; a spent refresh token signs the family out.
    let refresh = login["refresh_token"].as_str().unwrap();
    let (status, renewed) = app
        .post("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let data = app
        .gql_ok(
            renewed["access_token"].as_str().unwrap(),
            "{ myProfile { id } }",
            json!({}),
        )
        .await;
    assert_eq!(data["myProfile"]["id"], noor.to_string());
    let (status, _) = app
        .post("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": renewed["refresh_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the family was revoked");

    // A patron whose login is taken away (its password gone) is refused at its next request, with a token still
    // within its lifetime: each request asks whether the patron still has a login.
    let token = renewed["access_token"].as_str().unwrap();
    sqlx::query("update patron set password_hash = null where tenant_id = $1 and id = $2")
        .bind(f.t.id)
        .bind(noor)
        .execute(&app.owner)
        .await
        .unwrap();
    let (status, refused) = app
        .send(
            Method::POST,
            "/graphql",
            Some(token),
            Some(json!({"query": "{ myProfile { id } }"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(gql_code(&refused), "unauthenticated", "{refused}");
    // The cross-tenant role that asks reads whether a patron has a login, never the password hashes.
    let (hashes, has_login): (bool, bool) = sqlx::query_as(
        "select has_column_privilege('switchyard_system', 'patron', 'password_hash', 'select'),
                has_column_privilege('switchyard_system', 'patron', 'has_login', 'select')",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!((hashes, has_login), (false, true));
}

#[tokio::test]
async fn patron_sign_up_and_login_refuse_bad_input_clearly() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let email = unique_email("lee");
    assert_eq!(
        patron_signup(&app, f.t.id, "Lee", &email).await.0,
        StatusCode::CREATED
    );
    let (status, body) = patron_signup(&app, f.t.id, "Lee again", &email).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("conflict"))
    );
    let (status, body) = patron_signup(&app, Uuid::new_v4(), "Lee", &unique_email("x")).await;
    assert_eq!(
        (status, body["error"]["message"].clone()),
        (StatusCode::NOT_FOUND, json!("operator not found"))
    );
    let (status, body) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": f.t.id, "display_name": "Weak", "email": unique_email("w"), "password": "short"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("password"))
    );

    let login = |tenant: Uuid, email: String, password: &'static str| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/auth/patron/login",
                json!({"tenant_id": tenant, "email": email, "password": password}),
            )
            .await
        }
    };
    let (status, body) = login(f.t.id, email.clone(), "Wrong-Password-1").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("invalid_credentials"))
    );
    let (status, _) = login(Uuid::new_v4(), email.clone(), PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another operator does not know this patron"
    );
    // A patron staff created (no password) cannot be logged in to, nor claimed by signing up with its email.
    let walk_in_email = unique_email("walkin");
    app.gql_ok(
        &f.t.access,
        "mutation($e: String!) { createPatron(input: {displayName: \"Walk\", email: $e}) { id } }",
        json!({"e": walk_in_email}),
    )
    .await;
    let (status, _) = login(f.t.id, walk_in_email.clone(), PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        patron_signup(&app, f.t.id, "Walk", &walk_in_email).await.0,
        StatusCode::CONFLICT
    );
    // A member's login is not a patron's.
    let (status, _) = login(f.t.id, f.t.email.clone(), "x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

const CHANGE: &str =
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";

async fn patron_login(
    app: &TestApp,
    tenant: Uuid,
    email: &str,
    password: &str,
) -> (StatusCode, Value) {
    app.post(
        "/api/v1/auth/patron/login",
        json!({"tenant_id": tenant, "email": email, "password": password}),
    )
    .await
}

/// A patron changes its password (the current one checked, the new one held to the usual rules) and every session
/// of it ends; it signs out everywhere. Before, patrons could do neither: `changePassword` and `signOutEverywhere`
/// were for staff, and a patron's lost phone stayed signed in for the refresh family's lifetime.
#[tokio::test]
async fn a_patron_changes_its_password_and_signs_out_everywhere() {
    let app = switchyard_tests::spawn_app().await;
    let f = floor(&app).await;
    let email = unique_email("patron-password");
    let (status, first) = patron_signup(&app, f.t.id, "Ines", &email).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, second) = patron_login(&app, f.t.id, &email, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let token = first["access_token"].as_str().unwrap();

    let wrong = app
        .gql(
            Some(token),
            CHANGE,
            json!({"c": "not-it-at-all", "n": "Green-Lantern-88"}),
        )
        .await;
    assert_eq!(gql_code(&wrong), "validation_failed", "{wrong}");
    assert_eq!(wrong["errors"][0]["extensions"]["field"], "currentPassword");
    let weak = app
        .gql(Some(token), CHANGE, json!({"c": PASSWORD, "n": "short"}))
        .await;
    assert_eq!(gql_code(&weak), "validation_failed", "{weak}");
    assert_eq!(weak["errors"][0]["extensions"]["field"], "newPassword");

    let ok = app
        .gql_ok(
            token,
            CHANGE,
            json!({"c": PASSWORD, "n": "Green-Lantern-88"}),
        )
        .await;
    assert_eq!(ok["changePassword"], true);
    for pair in [&first, &second] {
        let (status, body) = app
            .post(
                "/api/v1/auth/refresh",
                json!({"refresh_token": pair["refresh_token"]}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "every session ends: {body}"
        );
    }
    let (status, _) = patron_login(&app, f.t.id, &email, PASSWORD).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old password no longer works"
    );
    let (status, third) = patron_login(&app, f.t.id, &email, "Green-Lantern-88").await;
    assert_eq!(status, StatusCode::OK, "{third}");
    let (status, fourth) = patron_login(&app, f.t.id, &email, "Green-Lantern-88").await;
    assert_eq!(status, StatusCode::OK, "{fourth}");

    // Signed out everywhere from the third device: both sessions end, and nobody else's.
    let other = app.signup().await;
    let signed_out = app
        .gql_ok(
            third["access_token"].as_str().unwrap(),
            "mutation { signOutEverywhere }",
            json!({}),
        )
        .await;
    assert_eq!(signed_out["signOutEverywhere"], 2);
    for pair in [&third, &fourth] {
        let (status, _) = app
            .post(
                "/api/v1/auth/refresh",
                json!({"refresh_token": pair["refresh_token"]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": other.refresh}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another tenant's owner stays signed in: {body}"
    );
    let audit: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and action = 'patron.password_changed'",
    )
    .bind(f.t.id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(audit, 1);
}
