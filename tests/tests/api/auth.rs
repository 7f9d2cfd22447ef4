use jsonwebtoken::{EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{spawn_app, spawn_app_with, unique_email, TEST_JWT_SECRET};
use uuid::Uuid;

#[tokio::test]
async fn signup_creates_a_tenant_with_its_owner_and_returns_a_working_token_pair() {
    let app = spawn_app().await;
    let email = unique_email("Founder");
    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({ "organization": "  Pixel Palace  ", "email": email, "password": "a-long-enough-secret" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
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
async fn signing_up_twice_with_one_email_is_a_conflict() {
    let app = spawn_app().await;
    let tenant = app.signup().await;
    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Other", "email": tenant.email.to_uppercase(), "password": "a-long-enough-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(
        body["error"]["message"],
        "an account with this email already exists"
    );
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
    // Invite the first owner into the second tenant; they accept with their existing password.
    let data = app
        .gql_ok(
            &second.access,
            "mutation($e: String!) { inviteMember(email: $e, role: STAFF) { token } }",
            json!({"e": first.email}),
        )
        .await;
    let accepted = app
        .gql(
            None,
            "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, password: $p) { tenantId } }",
            json!({"t": data["inviteMember"]["token"], "p": first.password}),
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
