use jsonwebtoken::{EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{spawn_app, spawn_app_with, unique_email, TEST_JWT_SECRET};
use uuid::Uuid;

#[tokio::test]
async fn signup_creates_a_tenant_with_its_owner_whose_login_returns_a_working_token_pair() {
    let app = spawn_app().await;
    let email = unique_email("Founder");
    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({ "organization": "  Pixel Palace  ", "email": email, "password": "a-long-enough-secret" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "accepted");
    assert!(body.get("access_token").is_none(), "{body}");
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({ "email": email, "password": "a-long-enough-secret" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(body["refresh_token"]
        .as_str()
        .is_some_and(|t| t.len() >= 40));
    let tenant: Uuid = body["tenant_id"].as_str().unwrap().parse().unwrap();

    let me = app
        .gql_ok(
            body["access_token"].as_str().unwrap(),
            "{ me { email role tenant { id name } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["me"]["email"], email.to_lowercase());
    assert_eq!(me["me"]["role"], "OWNER");
    assert_eq!(me["me"]["tenant"]["name"], "Pixel Palace");
    assert_eq!(me["me"]["tenant"]["id"], tenant.to_string());

    let stored: (String, String) = sqlx::query_as(
        "select u.email, m.role::text from app_user u join membership m on m.user_id = u.id where m.tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap();
    assert_eq!(stored, (email.to_lowercase(), "owner".to_string()));
    let hash: String = sqlx::query_scalar("select password_hash from app_user where email = $1")
        .bind(email.to_lowercase())
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

#[tokio::test]
async fn signup_rejects_weak_passwords_malformed_emails_and_bad_bodies_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"organization": "X", "email": unique_email("a"), "password": "short"}),
            422,
            "password",
        ),
        (
            json!({"organization": "X", "email": unique_email("a"), "password": "aaaaaaaaaaaaaaa"}),
            422,
            "password",
        ),
        (
            json!({"organization": "X", "email": "not-an-email", "password": "a-long-enough-secret"}),
            422,
            "email",
        ),
        (
            json!({"organization": "X", "email": "a@b", "password": "a-long-enough-secret"}),
            422,
            "email",
        ),
        (
            json!({"organization": "", "email": unique_email("a"), "password": "a-long-enough-secret"}),
            422,
            "organization",
        ),
    ];
    for (body, status, field) in cases {
        let (got, answer) = app.post("/api/v1/auth/signup", body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "validation_failed", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }

    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "X", "password": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing field `email`"),
        "{body}"
    );

    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": 5, "email": "a", "password": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("organization"),
        "{body}"
    );

    let response = app
        .client
        .post(app.url("/api/v1/auth/signup"))
        .header("content-type", "application/json")
        .body("{\"organization\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_request");

    let response = app
        .client
        .post(app.url("/api/v1/auth/signup"))
        .body("organization=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn signing_up_with_a_taken_email_answers_like_a_new_sign_up_and_creates_nothing() {
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let hash_before: String =
        sqlx::query_scalar("select password_hash from app_user where email = $1")
            .bind(tenant.email.to_lowercase())
            .fetch_one(&app.owner)
            .await
            .unwrap();
    let (taken_status, taken) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Squatter Org", "email": tenant.email.to_uppercase(), "password": "a-long-enough-secret"}),
        )
        .await;
    let (new_status, new) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Honest Org", "email": unique_email("fresh"), "password": "a-long-enough-secret"}),
        )
        .await;
    // The caller cannot tell the two apart.
    assert_eq!(taken_status, StatusCode::ACCEPTED, "{taken}");
    assert_eq!((taken_status, &taken), (new_status, &new));
    // Nothing was created for the taken email: still one login with its own password, in one tenant.
    let logins: Vec<String> =
        sqlx::query_scalar("select password_hash from app_user where email = $1")
            .bind(tenant.email.to_lowercase())
            .fetch_all(&app.owner)
            .await
            .unwrap();
    assert_eq!(logins, vec![hash_before]);
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": tenant.email, "password": tenant.password}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one tenant only, no choice needed: {body}"
    );
    assert_eq!(body["tenant_id"], tenant.id.to_string());
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": tenant.email, "password": "a-long-enough-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_checks_the_password_and_answers_unknown_emails_the_same_way() {
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": tenant.email, "password": tenant.password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant_id"], tenant.id.to_string());
    let (status, _) = app
        .get("/api/v1/stations", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);

    let (wrong_status, wrong) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": tenant.email, "password": "not-the-password"}),
        )
        .await;
    let (unknown_status, unknown) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": unique_email("nobody"), "password": "not-the-password"}),
        )
        .await;
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"]["code"], "invalid_credentials");
}

#[tokio::test]
async fn a_login_in_several_tenants_must_choose_one() {
    let app = spawn_app().await;
    let first = app.signup_named("Alpha Arcade").await;
    let second = app.signup_named("Beta Bowling").await;
    // Invite the first owner (its email verified) into the second tenant; they accept signed in, with no password,
    // with the token from the invitation email.
    app.verify_email(&first.email).await;
    let token = app
        .invite_by_email(&second.access, &first.email, "STAFF")
        .await;
    let accepted = app
        .gql(
            Some(&first.access),
            "mutation($t: String!) { acceptInvitation(token: $t) { tenantId } }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["tenantId"],
        second.id.to_string(),
        "{accepted}"
    );

    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": first.email, "password": first.password}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "tenant_choice_required");
    let mut tenants: Vec<(String, String)> = body["error"]["details"]["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tenants.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        tenants,
        vec![
            (first.id.to_string(), "Alpha Arcade".into()),
            (second.id.to_string(), "Beta Bowling".into())
        ]
    );

    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": first.email, "password": first.password, "tenant_id": second.id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let me = app
        .gql_ok(
            body["access_token"].as_str().unwrap(),
            "{ me { role tenant { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(me["me"]["role"], "STAFF");
    assert_eq!(me["me"]["tenant"]["name"], "Beta Bowling");

    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": first.email, "password": first.password, "tenant_id": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refresh_spends_the_old_token_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let (status, second) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tenant.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], tenant.refresh.as_str());
    assert_eq!(second["tenant_id"], tenant.id.to_string());
    let (status, _) = app
        .get("/api/v1/stations", second["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);

    // The first token again: someone holds a copy. Everything in the family is revoked, including the new one.
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tenant.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    let (status, _) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let live: i64 = sqlx::query_scalar(
        "select count(*) from refresh_token where tenant_id = $1 and revoked_at is null",
    )
    .bind(tenant.id)
    .fetch_one(&mut *app.tenant_tx(tenant.id).await)
    .await
    .unwrap();
    assert_eq!(live, 0);

    // A fresh login starts a new family that works.
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": tenant.email, "password": tenant.password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn logout_revokes_the_refresh_token_and_is_repeatable() {
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let (status, body) = app
        .post(
            "/api/v1/auth/logout",
            json!({"refresh_token": tenant.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app
        .post(
            "/api/v1/auth/logout",
            json!({"refresh_token": tenant.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tenant.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
}

#[derive(serde::Serialize)]
struct ForgedClaims {
    sub: Uuid,
    tenant: Uuid,
    role: &'static str,
    iss: &'static str,
    aud: &'static str,
    iat: i64,
    exp: i64,
}

fn forge(sub: Uuid, tenant: Uuid, aud: &'static str, exp_offset: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = ForgedClaims {
        sub,
        tenant,
        role: "owner",
        iss: "switchyard",
        aud,
        iat: now,
        exp: now + exp_offset,
    };
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn expired_tampered_unsigned_wrong_audience_and_refresh_tokens_are_not_access_tokens() {
    use base64::Engine;
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let me = app
        .gql_ok(&tenant.access, "{ me { userId } }", json!({}))
        .await;
    let user: Uuid = me["me"]["userId"].as_str().unwrap().parse().unwrap();

    // Sanity: a token forged with the right secret and claims works, so the rejections below are for the reason
    // each case names.
    let (status, _) = app
        .get(
            "/api/v1/stations",
            &forge(user, tenant.id, "switchyard-api", 60),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = tenant.access.split('.').map(str::to_owned).collect();
    let unsigned = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let last = parts[2].pop().unwrap();
    parts[2].push(if last == 'A' { 'B' } else { 'A' });
    let tampered = parts.join(".");

    let cases = [
        ("expired", forge(user, tenant.id, "switchyard-api", -3600)),
        ("tampered", tampered),
        ("alg none", unsigned),
        ("wrong audience", forge(user, tenant.id, "someone-else", 60)),
        ("refresh token", tenant.refresh.clone()),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (name, token) in cases {
        let (status, body) = app.get("/api/v1/stations", &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{name}: {body}");
        let gql = app
            .send(
                reqwest::Method::POST,
                "/graphql",
                Some(&token),
                Some(json!({"query": "{ me { email } }"})),
            )
            .await;
        assert_eq!(gql.0, StatusCode::UNAUTHORIZED, "{name}: {}", gql.1);
        assert_eq!(
            gql.1["errors"][0]["extensions"]["code"], "unauthenticated",
            "{name}"
        );
    }
    let (_, body) = app
        .get(
            "/api/v1/stations",
            &forge(user, tenant.id, "switchyard-api", -3600),
        )
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn auth_routes_are_rate_limited_per_client_address_with_a_catalogue_error() {
    let app = spawn_app_with(&[
        ("AUTH_RATE_BURST", "3"),
        ("AUTH_RATE_REPLENISH_MS", "60000"),
    ])
    .await;
    let body = json!({"email": unique_email("x"), "password": "whatever-password"});
    for _ in 0..3 {
        let (status, _) = app.post("/api/v1/auth/login", body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().get("retry-after").is_some());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "rate_limited");
    // Other routes are not limited.
    let (status, _) = app.send(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Logs in and returns (status, Retry-After, body).
async fn login_attempt(
    app: &switchyard_tests::TestApp,
    path: &str,
    body: Value,
    forwarded_for: Option<&str>,
) -> (StatusCode, Option<u64>, Value) {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(ip) = forwarded_for {
        request = request.header("x-forwarded-for", ip);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// The message with its digits taken out (the seconds to wait can differ by one between two answers).
fn without_digits(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

#[tokio::test]
async fn failed_passwords_lock_an_account_with_retry_after_the_same_for_unknown_emails() {
    let app = spawn_app_with(&[
        ("AUTH_FAILURES_BEFORE_LOCK", "3"),
        ("AUTH_LOCK_SECS", "600"),
    ])
    .await;
    let tenant = app.signup().await;
    let nobody = unique_email("nobody");
    for _ in 0..3 {
        for email in [&tenant.email, &nobody] {
            let (status, _, body) = login_attempt(
                &app,
                "/api/v1/auth/login",
                json!({"email": email, "password": "wrong-password-1"}),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        }
    }
    // Locked now: even the right password waits, and an unknown email answers exactly alike.
    let (known_status, known_retry, known) = login_attempt(
        &app,
        "/api/v1/auth/login",
        json!({"email": tenant.email, "password": tenant.password}),
        None,
    )
    .await;
    let (unknown_status, unknown_retry, unknown) = login_attempt(
        &app,
        "/api/v1/auth/login",
        json!({"email": nobody, "password": tenant.password}),
        None,
    )
    .await;
    assert_eq!(known_status, StatusCode::TOO_MANY_REQUESTS, "{known}");
    assert_eq!(unknown_status, StatusCode::TOO_MANY_REQUESTS, "{unknown}");
    assert_eq!(known["error"]["code"], "rate_limited");
    assert_eq!(unknown["error"]["code"], "rate_limited");
    assert_eq!(without_digits(&known), without_digits(&unknown));
    let (known_retry, unknown_retry) = (known_retry.unwrap(), unknown_retry.unwrap());
    assert!((590..=600).contains(&known_retry), "{known_retry}");
    assert!(known_retry.abs_diff(unknown_retry) <= 1);
    assert!(
        known["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("retry in {known_retry} s")),
        "{known}"
    );
    // Another login from the same address is not affected (the address allows many more failures).
    let other = app.signup().await;
    let (status, _, body) = login_attempt(
        &app,
        "/api/v1/auth/login",
        json!({"email": other.email, "password": other.password}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Patron logins go through the same throttle, per operator and email.
    let patron_email = unique_email("patron");
    let (status, body) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": tenant.id, "display_name": "Pat", "email": patron_email, "password": "patron-secret-77"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..3 {
        let (status, _, _) = login_attempt(
            &app,
            "/api/v1/auth/patron/login",
            json!({"tenant_id": tenant.id, "email": patron_email, "password": "wrong-password-1"}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, retry, body) = login_attempt(
        &app,
        "/api/v1/auth/patron/login",
        json!({"tenant_id": tenant.id, "email": patron_email, "password": "patron-secret-77"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(retry.is_some());
    // A patron sign-up asks the same throttle: a locked login cannot probe whether the email has an account (it
    // answered 409 "exists").
    let (status, body) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": tenant.id, "display_name": "Pat", "email": patron_email, "password": "patron-secret-78"}),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn failed_passwords_lock_the_client_address_behind_a_trusted_proxy() {
    let app = spawn_app_with(&[
        ("AUTH_FAILURES_BEFORE_LOCK", "100"),
        ("AUTH_IP_FAILURES_BEFORE_LOCK", "4"),
        ("AUTH_LOCK_SECS", "600"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let tenant = app.signup().await;
    // Four different accounts guessed from one client address.
    for _ in 0..4 {
        let (status, _, body) = login_attempt(
            &app,
            "/api/v1/auth/login",
            json!({"email": unique_email("spray"), "password": "wrong-password-1"}),
            Some("198.51.100.7"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // That address is locked out for every account, the right password included ...
    let (status, retry, body) = login_attempt(
        &app,
        "/api/v1/auth/login",
        json!({"email": tenant.email, "password": tenant.password}),
        Some("198.51.100.7"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(retry.is_some_and(|r| r > 500), "{retry:?}");
    // ... sign-up too ...
    let (status, _, body) = login_attempt(
        &app,
        "/api/v1/auth/signup",
        json!({"organization": "Later", "email": unique_email("later"), "password": "a-long-enough-secret"}),
        Some("198.51.100.7"),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // ... while another client behind the same proxy signs in.
    let (status, _, body) = login_attempt(
        &app,
        "/api/v1/auth/login",
        json!({"email": tenant.email, "password": tenant.password}),
        Some("198.51.100.8"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn password_hashing_runs_under_a_concurrency_cap_and_the_excess_is_refused_with_429() {
    let app = spawn_app_with(&[("AUTH_HASH_CONCURRENCY", "1"), ("AUTH_HASH_WAIT_MS", "0")]).await;
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            login_attempt(
                &app,
                "/api/v1/auth/login",
                json!({"email": unique_email("flood"), "password": "wrong-password-1"}),
                None,
            )
        })
        .collect();
    let answers = switchyard_tests::join_all(attempts).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let checked = answers
        .iter()
        .filter(|(status, _, _)| *status == StatusCode::UNAUTHORIZED)
        .count();
    assert!(!refused.is_empty(), "all 16 ran at once: {answers:?}");
    assert!(checked >= 1, "{answers:?}");
    assert_eq!(refused.len() + checked, 16, "{answers:?}");
    for (_, retry, body) in refused {
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        assert_eq!(*retry, Some(1));
    }
}

#[tokio::test]
async fn a_refresh_token_family_ends_at_its_absolute_lifetime_however_often_it_is_refreshed() {
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let deadline = |token: String| {
        let app = &app;
        async move {
            let row: (
                chrono::DateTime<chrono::Utc>,
                chrono::DateTime<chrono::Utc>,
                Uuid,
            ) = sqlx::query_as(
                "select family_expires_at, expires_at, family_id from refresh_token
                     where tenant_id = $1 and token_hash = sha256($2::bytea)",
            )
            .bind(tenant.id)
            .bind(token.as_bytes())
            .fetch_one(&mut *app.tenant_tx(tenant.id).await)
            .await
            .unwrap();
            row
        }
    };
    let (first_family_end, first_end, family) = deadline(tenant.refresh.clone()).await;
    let days = (first_family_end - chrono::Utc::now()).num_hours();
    assert!((30 * 24 - 1..=30 * 24).contains(&days), "{days} h");
    assert!(first_end <= first_family_end);

    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": tenant.refresh}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    let (second_family_end, _, second_family) = deadline(second.clone()).await;
    assert_eq!(second_family, family);
    assert_eq!(
        second_family_end, first_family_end,
        "refreshing never moves the family's deadline"
    );

    // The family reaches its deadline while the token itself would still slide for weeks.
    let mut tx = app.tenant_tx(tenant.id).await;
    sqlx::query(
        "update refresh_token set family_expires_at = now() - interval '1 second'
         where tenant_id = $1 and family_id = $2",
    )
    .bind(tenant.id)
    .bind(family)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = app
        .post("/api/v1/auth/refresh", json!({"refresh_token": second}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert_eq!(
        body["error"]["message"],
        "this sign-in has reached its longest allowed lifetime; log in again"
    );
    // A fresh login starts a new family with a new deadline.
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": tenant.email, "password": tenant.password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, new_family) = deadline(body["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_ne!(new_family, family);
}

/// Waits (bounded) until `n` backends of the test database wait for a lock.
async fn lock_waiters(owner: &sqlx::PgPool, n: i64) {
    for _ in 0..600 {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(owner)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{n} backends never came to wait for a lock");
}

/// A fresh database with an app on it and one signed-up owner: the app, the owner, a pool as the database owner,
/// and the owner's login id.
async fn signed_up_alone() -> (
    switchyard_tests::TestDatabase,
    switchyard_tests::TestApp,
    switchyard_tests::Tenant,
    sqlx::PgPool,
    Uuid,
) {
    let database = switchyard_tests::fresh_database().await;
    let app = switchyard_tests::spawn_app_in(&database).await;
    let t = app.signup().await;
    let owner = sqlx::PgPool::connect(&database.owner_url).await.unwrap();
    let user: Uuid = sqlx::query_scalar("select id from app_user where email = $1")
        .bind(&t.email)
        .fetch_one(&owner)
        .await
        .unwrap();
    (database, app, t, owner, user)
}

/// A transaction holding the memberships table locked: a sign-in or refresh waits at its next read of it.
async fn hold_memberships(owner: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut hold = owner.begin().await.unwrap();
    sqlx::query("lock table membership in access exclusive mode")
        .execute(&mut *hold)
        .await
        .unwrap();
    hold
}

async fn live_refresh_tokens(owner: &sqlx::PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar(
        "select count(*) from refresh_token where user_id = $1 and revoked_at is null",
    )
    .bind(user)
    .fetch_one(owner)
    .await
    .unwrap()
}

/// A sign-in that checked the old password while the password changed (a reset, a change) must not get a session
/// that outlives the change. The sign-in is held (by a lock on the memberships it reads next) right after its
/// password check; the password changes and every session is revoked; then it goes on. Before, it issued a refresh
/// token after the revocation, and the old password kept a session.
#[tokio::test]
async fn a_login_whose_password_changed_while_it_signed_in_gets_no_session() {
    let (database, app, t, owner, user) = signed_up_alone().await;
    let hold = hold_memberships(&owner).await;
    let login = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/api/v1/auth/login"));
        let body = json!({"email": t.email, "password": t.password});
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    lock_waiters(&owner, 1).await;
    let db = switchyard_core::Db::connect_lazy(&database.app_url, 2).unwrap();
    let revoked = db
        .system()
        .change_password(user, "$argon2id$v=19$m=19456,t=2,p=1$changed$changed")
        .await
        .unwrap();
    assert_eq!(revoked, 1, "the sign-up's session");
    hold.commit().await.unwrap();

    let (status, body) = login.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_credentials");
    assert_eq!(live_refresh_tokens(&owner, user).await, 0);
}

/// A refresh under way when the login signs out everywhere: it finishes first and its new token is revoked with
/// the rest (or it waits and finds its token revoked). The refresh is held, with its token row, by a lock on the
/// memberships it reads; the sign-out starts and waits too; then both go on. Before, the sign-out revoked only the
/// tokens it saw when it began, and the refresh's new one kept working.
#[tokio::test]
async fn a_refresh_under_way_when_the_login_signs_out_everywhere_is_signed_out_too() {
    let (database, app, t, owner, user) = signed_up_alone().await;
    let hold = hold_memberships(&owner).await;
    let refresh = tokio::spawn({
        let (client, url) = (app.client.clone(), app.url("/api/v1/auth/refresh"));
        let body = json!({"refresh_token": t.refresh});
        async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    lock_waiters(&owner, 1).await;
    let db = switchyard_core::Db::connect_lazy(&database.app_url, 2).unwrap();
    let sign_out = tokio::spawn(async move { db.system().revoke_refresh_tokens(user).await });
    lock_waiters(&owner, 2).await;
    hold.commit().await.unwrap();

    let (status, second) = refresh.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{second}");
    sign_out.await.unwrap().unwrap();
    assert_eq!(live_refresh_tokens(&owner, user).await, 0);
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": second["refresh_token"]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

/// A spent refresh token shown again revokes its family, even while a refresh of the family's live token is under
/// way: the revocation waits for that refresh and then revokes the token it issued too. The live refresh is held (with
/// its token) by a lock on the memberships it reads next; the spent token is shown and its revocation waits; then
/// both go on. Before, the revocation saw only the tokens there when it began, and the new one kept working.
#[tokio::test]
async fn a_spent_token_shown_during_a_refresh_of_its_family_revokes_the_new_token_too() {
    let (_database, app, t, owner, _) = signed_up_alone().await;
    let (status, second) = app
        .post("/api/v1/auth/refresh", json!({"refresh_token": t.refresh}))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");

    let hold = hold_memberships(&owner).await;
    let post = |token: Value| {
        let (client, url) = (app.client.clone(), app.url("/api/v1/auth/refresh"));
        tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let live = post(second["refresh_token"].clone());
    lock_waiters(&owner, 1).await;
    let reused = post(json!(t.refresh));
    lock_waiters(&owner, 2).await;
    hold.commit().await.unwrap();

    let (status, third) = live.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{third}");
    let (status, body) = reused.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = app
        .post(
            "/api/v1/auth/refresh",
            json!({"refresh_token": third["refresh_token"]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the family is revoked, the new token too: {body}"
    );
    let live: i64 = sqlx::query_scalar(
        "select count(*) from refresh_token where tenant_id = $1 and revoked_at is null",
    )
    .bind(t.id)
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(live, 0);
}
