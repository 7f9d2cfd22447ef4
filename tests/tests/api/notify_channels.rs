//! SMS and push through their providers' HTTP APIs, against local fakes at the network boundary (wiremock): the
//! requests actually sent are asserted — a Twilio-style SMS, an FCM HTTP v1 message with its OAuth 2 token minted
//! from a service-account key, an APNs request with its ES256 provider token — and each person's channels per
//! topic, push devices and phone number, with their validation and isolation.
//!
//! One test function on purpose: the delivery passes here claim every SMS and push message of the shared test
//! database, which only these scenarios create, so they run one after another.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_core::notify::deliver::{self, Transports};
use switchyard_core::notify::push::{PushSettings, PushTransport};
use switchyard_core::notify::sms::{SmsSettings, TwilioSms};
use switchyard_tests::{gql_code, mail, spawn_app, unique_email};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A key pair made with Debian's openssl: (private PEM, public PEM).
fn keypair(dir: &std::path::Path, name: &str, algorithm: &[&str]) -> (String, String) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algorithm);
    args.extend_from_slice(&["-out", private.to_str().unwrap_or_default()]);
    run(&args);
    run(&[
        "pkey",
        "-in",
        private.to_str().unwrap_or_default(),
        "-pubout",
        "-out",
        public.to_str().unwrap_or_default(),
    ]);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{e}"));
    (read(&private), read(&public))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn claims(
    token: &str,
    key: jsonwebtoken::DecodingKey,
    alg: jsonwebtoken::Algorithm,
) -> (jsonwebtoken::Header, Value) {
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("the provider token does not verify with the public key: {e}"));
    (data.header, data.claims)
}

async fn gql_ok(app: &switchyard_tests::TestApp, token: &str, query: &str, vars: Value) -> Value {
    app.gql_ok(token, query, vars).await
}

/// The outbox rows of `tenant` on `channel`: (recipient, kind, status, attempts, last error).
async fn outbox(
    app: &switchyard_tests::TestApp,
    tenant: Uuid,
    channel: &str,
) -> Vec<(String, String, String, i32, Option<String>)> {
    sqlx::query_as(
        "select recipient, kind, status, attempts, last_error from notification
         where tenant_id = $1 and channel = $2 order by id",
    )
    .bind(tenant)
    .bind(channel)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn sms_and_push_go_through_the_providers_http_apis_on_each_persons_chosen_channels() {
    let app = spawn_app().await;
    let db = switchyard_tests::app_db(2);
    let f = crate::sessions::floor(&app).await;
    let (_, manager) = app.add_member(&f.t, "MANAGER").await;
    let (_, staff) = app.add_member(&f.t, "STAFF").await;

    // Each person's phone, devices and channels, with their validation.
    let phone = "mutation($p: String) { setMyPhone(phone: $p) }";
    let bad = app
        .gql(Some(&manager), phone, json!({"p": "0151 123"}))
        .await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "phone");
    gql_ok(&app, &manager, phone, json!({"p": "+4915112345678"})).await;
    let register = "mutation($p: PushPlatform!, $t: String!) { registerPushDevice(platform: $p, token: $t) { id platform } }";
    let bad = app
        .gql(Some(&manager), register, json!({"p": "APNS", "t": "short"}))
        .await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    // A token is at most 300 characters: its messages' recipient (the platform and the token) must fit the outbox.
    // The owner's first device below has the longest, and its SOS is stored and pushed like any other.
    let owner_token = format!("fcm-owner-{}", "t".repeat(290));
    let too_long = app
        .gql(
            Some(&manager),
            register,
            json!({"p": "FCM", "t": format!("{owner_token}x")}),
        )
        .await;
    assert_eq!(gql_code(&too_long), "validation_failed", "{too_long}");
    let apns_device = gql_ok(
        &app,
        &manager,
        register,
        json!({"p": "APNS", "t": "a1b2c3d4e5f60718"}),
    )
    .await;
    assert_eq!(apns_device["registerPushDevice"]["platform"], "apns");
    let apns_id = apns_device["registerPushDevice"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    gql_ok(
        &app,
        &f.t.access,
        register,
        json!({"p": "FCM", "t": owner_token}),
    )
    .await;
    gql_ok(
        &app,
        &f.t.access,
        register,
        json!({"p": "FCM", "t": "fcm-gone-token-2"}),
    )
    .await;
    let choose = "mutation($t: NotificationTopic!, $c: [NotificationChannel!]!) { setMyNotificationChannels(topic: $t, channels: $c) { topic channels } }";
    let chosen = gql_ok(
        &app,
        &f.t.access,
        choose,
        json!({"t": "SOS", "c": ["PUSH", "PUSH"]}),
    )
    .await;
    assert_eq!(
        chosen["setMyNotificationChannels"],
        json!({"topic": "SOS", "channels": ["PUSH"]})
    );
    let bad = app
        .gql(
            Some(&f.t.access),
            choose,
            json!({"t": "SOS", "c": ["PIGEON"]}),
        )
        .await;
    assert_eq!(gql_code(&bad), "invalid_query", "{bad}");
    let mine = gql_ok(
        &app,
        &f.t.access,
        "{ myNotificationChannels { topic channels } }",
        json!({}),
    )
    .await;
    let mine = mine["myNotificationChannels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        mine.contains(&json!({"topic": "SOS", "channels": ["PUSH"]})),
        "{mine:?}"
    );
    assert!(
        mine.contains(&json!({"topic": "RECEIPTS", "channels": ["EMAIL"]})),
        "{mine:?}"
    );

    // Someone else's device id answers not_found, in this tenant and from another.
    let remove = "mutation($i: UUID!) { removePushDevice(id: $i) }";
    let other = app.signup().await;
    for token in [&f.t.access, &other.access] {
        let refused = app.gql(Some(token), remove, json!({"i": apns_id})).await;
        assert_eq!(gql_code(&refused), "not_found", "{refused}");
    }
    let devices = gql_ok(
        &app,
        &manager,
        "{ myPushDevices { id platform } }",
        json!({}),
    )
    .await;
    assert_eq!(devices["myPushDevices"].as_array().map(Vec::len), Some(1));

    // The providers, faked at the network boundary.
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC_test/Messages.json"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": "SM1", "status": "queued"})),
        )
        .up_to_n_times(1)
        .mount(&sms)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&sms)
        .await;
    let fcm = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "ya29.test-access", "expires_in": 3600, "token_type": "Bearer"}),
        ))
        .mount(&fcm)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/switchyard-test/messages:send"))
        .and(wiremock::matchers::body_partial_json(
            json!({"message": {"token": "fcm-gone-token-2"}}),
        ))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(
                json!({"error": {"status": "NOT_FOUND", "message": "UNREGISTERED"}}),
            ),
        )
        .mount(&fcm)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/switchyard-test/messages:send"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "projects/switchyard-test/messages/1"})),
        )
        .mount(&fcm)
        .await;
    let apns = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/3/device/a1b2c3d4e5f60718"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&apns)
        .await;

    let dir = std::env::temp_dir().join(format!("switchyard-keys-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let (rsa_private, rsa_public) = keypair(
        &dir,
        "fcm",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec_private, ec_public) = keypair(
        &dir,
        "apns",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let account = dir.join("service-account.json");
    std::fs::write(
        &account,
        json!({
            "type": "service_account",
            "client_email": "push@switchyard-test.iam.gserviceaccount.com",
            "private_key": rsa_private,
            "token_uri": format!("{}/token", fcm.uri()),
        })
        .to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p8 = dir.join("AuthKey_KEY123.p8");
    std::fs::write(&p8, &ec_private).unwrap_or_else(|e| panic!("{e}"));
    // The workers' own settings parsing, from the variables a deployment sets.
    let vars: HashMap<&str, String> = HashMap::from([
        ("SMS_API_BASE", sms.uri()),
        ("SMS_ACCOUNT_SID", "AC_test".into()),
        ("SMS_AUTH_TOKEN", "sms-secret".into()),
        ("SMS_FROM", "+15550001111".into()),
        ("FCM_API_BASE", fcm.uri()),
        ("FCM_PROJECT_ID", "switchyard-test".into()),
        ("FCM_SERVICE_ACCOUNT_FILE", account.display().to_string()),
        ("APNS_API_BASE", apns.uri()),
        ("APNS_KEY_ID", "KEY123".into()),
        ("APNS_TEAM_ID", "TEAM456".into()),
        ("APNS_KEY_FILE", p8.display().to_string()),
        ("APNS_TOPIC", "com.example.switchyard".into()),
    ]);
    let var = |k: &str| vars.get(k).cloned();
    let sms_settings = SmsSettings::from_lookup(var)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("sms"));
    let push_settings = PushSettings::from_lookup(var)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("push"));
    let transports = Transports {
        email: None,
        sms: Some(Arc::new(
            TwilioSms::new(sms_settings).unwrap_or_else(|e| panic!("{e}")),
        )),
        push: Some(Arc::new(
            PushTransport::new(push_settings).unwrap_or_else(|e| panic!("{e}")),
        )),
        documents: mail::documents(),
    };
    let deliver_all = || async {
        loop {
            let pass = deliver::run_once(&db, &transports, &mail::settings(), Utc::now())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            if pass.claimed == 0 {
                break;
            }
        }
    };

    // An SOS: the owner by push only (its choice, both its devices), the manager by email, SMS and push.
    gql_ok(
        &app,
        &staff,
        "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: HIGH}) { id } }",
        json!({"v": f.venue}),
    )
    .await;
    deliver_all().await;

    let sent = sms.received_requests().await.unwrap_or_default();
    assert_eq!(sent.len(), 1);
    let basic = base64::engine::general_purpose::STANDARD.encode("AC_test:sms-secret");
    assert_eq!(
        sent[0]
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Basic {basic}").as_str())
    );
    let body = form(&sent[0].body);
    assert_eq!(body.get("To").map(String::as_str), Some("+4915112345678"));
    assert_eq!(body.get("From").map(String::as_str), Some("+15550001111"));
    assert!(
        body.get("Body")
            .is_some_and(|b| b.ends_with("SOS (high) at Arcade")),
        "{body:?}"
    );

    let to_fcm = fcm.received_requests().await.unwrap_or_default();
    let token_requests: Vec<_> = to_fcm.iter().filter(|r| r.url.path() == "/token").collect();
    assert_eq!(
        token_requests.len(),
        1,
        "one access token, reused for both messages"
    );
    let grant = form(&token_requests[0].body);
    assert_eq!(
        grant.get("grant_type").map(String::as_str),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let (_, assertion) = claims(
        grant
            .get("assertion")
            .map(String::as_str)
            .unwrap_or_default(),
        jsonwebtoken::DecodingKey::from_rsa_pem(rsa_public.as_bytes())
            .unwrap_or_else(|e| panic!("{e}")),
        jsonwebtoken::Algorithm::RS256,
    );
    assert_eq!(
        assertion["iss"],
        "push@switchyard-test.iam.gserviceaccount.com"
    );
    assert_eq!(assertion["aud"], format!("{}/token", fcm.uri()));
    assert_eq!(
        assertion["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    let messages: Vec<Value> = to_fcm
        .iter()
        .filter(|r| r.url.path().ends_with("messages:send"))
        .map(|r| {
            assert_eq!(
                r.headers.get("authorization").and_then(|v| v.to_str().ok()),
                Some("Bearer ya29.test-access")
            );
            serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    assert_eq!(messages.len(), 2);
    let tokens: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["message"]["token"].as_str())
        .collect();
    assert!(
        tokens.contains(&owner_token.as_str()) && tokens.contains(&"fcm-gone-token-2"),
        "{tokens:?}"
    );
    assert_eq!(
        messages[0]["message"]["notification"]["body"],
        "SOS (high) at Arcade"
    );
    assert_eq!(messages[0]["message"]["data"]["kind"], "sos");

    let to_apns = apns.received_requests().await.unwrap_or_default();
    assert_eq!(to_apns.len(), 1);
    let header = |name: &str| {
        to_apns[0]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("apns-topic"), "com.example.switchyard");
    assert_eq!(header("apns-push-type"), "alert");
    let bearer = header("authorization");
    let (jwt_header, jwt) = claims(
        bearer.strip_prefix("bearer ").unwrap_or_default(),
        jsonwebtoken::DecodingKey::from_ec_pem(ec_public.as_bytes())
            .unwrap_or_else(|e| panic!("{e}")),
        jsonwebtoken::Algorithm::ES256,
    );
    assert_eq!(jwt_header.kid.as_deref(), Some("KEY123"));
    assert_eq!(jwt["iss"], "TEAM456");
    let apns_body: Value =
        serde_json::from_slice(&to_apns[0].body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(apns_body["aps"]["alert"]["body"], "SOS (high) at Arcade");

    // The outbox: the unregistered FCM token is dead with a plain reason; everything else sent once. The
    // manager's email waits for an email worker (these passes deliver SMS and push only).
    let pushes = outbox(&app, f.t.id, "push").await;
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    for (recipient, kind, status, attempts, error) in &pushes {
        assert_eq!(kind, "sos");
        if recipient == "fcm:fcm-gone-token-2" {
            assert_eq!((status.as_str(), *attempts), ("dead", 1));
            assert_eq!(
                error.as_deref(),
                Some("the push service answered 404 (refused)")
            );
        } else {
            assert_eq!(
                (status.as_str(), *attempts, error.clone()),
                ("sent", 1, None),
                "{recipient}"
            );
        }
    }
    let texts = outbox(&app, f.t.id, "sms").await;
    assert_eq!(texts.len(), 1);
    assert_eq!(
        (texts[0].0.as_str(), texts[0].2.as_str()),
        ("+4915112345678", "sent")
    );
    let emails = outbox(&app, f.t.id, "email").await;
    assert_eq!(
        emails.iter().filter(|e| e.1 == "sos").count(),
        1,
        "the manager's; the owner chose push only"
    );

    // The owner's log shows a push recipient's platform and the token's last characters only.
    let log = gql_ok(
        &app,
        &f.t.access,
        "{ notifications(first: 50) { items { channel recipient } } }",
        json!({}),
    )
    .await;
    let text = log.to_string();
    assert!(text.contains("fcm:…tttt"), "{text}");
    assert!(!text.contains(&owner_token), "{text}");

    // A second SOS: the SMS service is down now (503): a retry later, not a loss.
    gql_ok(
        &app,
        &staff,
        "mutation($v: UUID!) { raiseSos(input: {venueId: $v, severity: LOW}) { id } }",
        json!({"v": f.venue}),
    )
    .await;
    deliver_all().await;
    let texts = outbox(&app, f.t.id, "sms").await;
    assert_eq!(texts.len(), 2);
    assert_eq!((texts[1].2.as_str(), texts[1].3), ("pending", 1));
    assert_eq!(
        texts[1].4.as_deref(),
        Some("the SMS service answered 503 (try again later)")
    );

    // A patron who wants receipts by push only: its session's receipt goes to its device, no email.
    let email = unique_email("pushy");
    let (status, pair) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": f.t.id, "display_name": "Pia", "email": email, "password": "pia-plays-pinball"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pair}");
    let patron = pair["access_token"].as_str().unwrap_or_default().to_owned();
    gql_ok(
        &app,
        &patron,
        register,
        json!({"p": "FCM", "t": "fcm-patron-token-3"}),
    )
    .await;
    gql_ok(
        &app,
        &patron,
        choose,
        json!({"t": "RECEIPTS", "c": ["PUSH"]}),
    )
    .await;
    let refused = app
        .gql(Some(&patron), phone, json!({"p": "+4915112345678"}))
        .await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    let me = gql_ok(&app, &patron, "{ myProfile { id } }", json!({})).await;
    let patron_id = me["myProfile"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    gql_ok(
        &app,
        &f.t.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 2000, idempotencyKey: \"pia\") { id } }",
        json!({"p": patron_id, "v": f.venue}),
    )
    .await;
    let (status, started) = crate::sessions::start(
        &app,
        &f.t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": f.station, "patron_id": patron_id, "duration_minutes": 10, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let session = started["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    app.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/sessions/{session}"),
        Some(&f.t.access),
        None,
    )
    .await;
    deliver_all().await;
    let receipts: Vec<Value> = fcm
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|m| m["message"]["token"] == "fcm-patron-token-3")
        .collect();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["message"]["data"]["kind"], "receipt");
    assert!(receipts[0]["message"]["notification"]["body"]
        .as_str()
        .is_some_and(|b| b.starts_with("Your receipt from ")));
    let patron_rows: Vec<(String, String)> = outbox(&app, f.t.id, "email")
        .await
        .into_iter()
        .map(|r| (r.0, r.1))
        .filter(|r| r.0 == email)
        .collect();
    assert!(patron_rows.is_empty(), "no receipt email: {patron_rows:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
