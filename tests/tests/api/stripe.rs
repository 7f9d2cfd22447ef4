//! Wallet top-ups and refunds through the real Stripe provider code, against the local Stripe fake.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::payments::webhook;
use switchyard_tests::stripe_fake::StripeFake;
use switchyard_tests::{gql_code, spawn_app_with, TestApp};
use uuid::Uuid;

use crate::payments::{balance, intent, shop};

const SECRET: &str = "whsec_stripe_fake";

async fn stripe_app(fake: &StripeFake) -> TestApp {
    spawn_app_with(&[
        ("PAYMENT_PROVIDER", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_test_switchyard"),
        ("STRIPE_API_BASE", &fake.url()),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
    ])
    .await
}

const REFUND: &str = "mutation($p: UUID!, $a: Int!, $k: String!) {
    refundPayment(paymentId: $p, amount: $a, idempotencyKey: $k) { id paymentId amount } }";

#[tokio::test]
async fn a_stripe_top_up_is_created_once_confirmed_by_polling_or_webhook_and_refunded_once() {
    let fake = StripeFake::start().await;
    let app = stripe_app(&fake).await;
    let s = shop(&app).await;

    let (status, p) = intent(&app, &s, 1_500, "stripe-topup-1").await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["status"], "pending");
    let id = p["intent_id"].as_str().unwrap().to_owned();
    let (status, again) = intent(&app, &s, 1_500, "stripe-topup-1").await;
    assert_eq!(
        (status, &again["intent_id"]),
        (StatusCode::CREATED, &p["intent_id"])
    );
    let creates = fake.requests_to("POST", "/v1/payment_intents");
    assert_eq!(creates.len(), 1, "a retried create makes one intent");
    let form = &creates[0].form;
    assert_eq!(form["amount"], "1500");
    assert_eq!(form["currency"], "eur");
    assert_eq!(form["metadata[tenant_id]"], s.t.id.to_string());
    assert_eq!(form["metadata[payment_id]"], id);
    assert!(
        !form.contains_key("off_session"),
        "the patron's app confirms a top-up"
    );
    assert_eq!(
        creates[0].idempotency_key.as_deref(),
        Some(format!("{}:stripe-topup-1", s.t.id).as_str())
    );
    let (_, body) = app
        .get(&format!("/api/v1/payments/status/{id}"), &s.t.access)
        .await;
    assert_eq!(body["status"], "pending", "Stripe still waits for the card");
    assert_eq!(balance(&app, &s).await, 0);

    // The patron pays in the app; our status poll asks Stripe and credits the wallet once.
    let pi: String =
        sqlx::query_scalar("select provider_ref from payment where tenant_id = $1 and id = $2")
            .bind(s.t.id)
            .bind(id.parse::<Uuid>().unwrap())
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    let object = fake.pay(&pi);
    let (_, body) = app
        .get(&format!("/api/v1/payments/status/{id}"), &s.t.access)
        .await;
    assert_eq!(body["status"], "confirmed");
    assert_eq!(
        fake.requests_to("GET", &format!("/v1/payment_intents/{pi}"))
            .len(),
        2
    );
    // Stripe's webhook for the same success arrives afterwards: recorded, no second credit.
    let event = serde_json::to_vec(&json!({"id": "evt_paid", "object": "event",
        "type": "payment_intent.succeeded", "data": {"object": object}}))
    .unwrap();
    let signature = webhook::sign(&event, SECRET, chrono::Utc::now().timestamp());
    let response = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(balance(&app, &s).await, 1_500);

    // A refund goes to Stripe with its own idempotency key and takes the money back out of the wallet, once.
    let refund = app
        .gql_ok(
            &s.t.access,
            REFUND,
            json!({"p": id, "a": 400, "k": "refund-1"}),
        )
        .await["refundPayment"]
        .clone();
    assert_eq!(refund["amount"], 400);
    let replay = app
        .gql_ok(
            &s.t.access,
            REFUND,
            json!({"p": id, "a": 400, "k": "refund-1"}),
        )
        .await["refundPayment"]
        .clone();
    assert_eq!(replay, refund, "a retried refund is the same refund");
    let refunds = fake.requests_to("POST", "/v1/refunds");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].form["payment_intent"], pi);
    assert_eq!(refunds[0].form["amount"], "400");
    assert!(refunds[0]
        .idempotency_key
        .as_deref()
        .unwrap()
        .ends_with("refund-1"));
    assert_eq!(balance(&app, &s).await, 1_100);
    let refunded: i64 =
        sqlx::query_scalar("select refunded_amount from payment where tenant_id = $1 and id = $2")
            .bind(s.t.id)
            .bind(id.parse::<Uuid>().unwrap())
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    assert_eq!(refunded, 400);

    // More than is left to refund, the same key for another amount, and a staff member: refused.
    let over = app
        .gql(
            Some(&s.t.access),
            REFUND,
            json!({"p": id, "a": 1_101, "k": "refund-2"}),
        )
        .await;
    assert_eq!(gql_code(&over), "validation_failed", "{over}");
    let reused = app
        .gql(
            Some(&s.t.access),
            REFUND,
            json!({"p": id, "a": 10, "k": "refund-1"}),
        )
        .await;
    assert_eq!(gql_code(&reused), "idempotency_key_reused");
    let (_, staff) = app.add_member(&s.t, "STAFF").await;
    let forbidden = app
        .gql(
            Some(&staff),
            REFUND,
            json!({"p": id, "a": 10, "k": "refund-3"}),
        )
        .await;
    assert_eq!(gql_code(&forbidden), "forbidden");
    // Another tenant's payment is not found, for refunds as for the REST routes.
    let other = shop(&app).await;
    let stranger = app
        .gql(
            Some(&other.t.access),
            REFUND,
            json!({"p": id, "a": 10, "k": "refund-4"}),
        )
        .await;
    assert_eq!(gql_code(&stranger), "not_found");
    assert_eq!(fake.requests_to("POST", "/v1/refunds").len(), 1);
}

#[tokio::test]
async fn canceling_a_pending_stripe_top_up_cancels_the_intent_at_stripe() {
    let fake = StripeFake::start().await;
    let app = stripe_app(&fake).await;
    let s = shop(&app).await;
    let (_, p) = intent(&app, &s, 700, "stripe-cancel").await;
    let id = p["intent_id"].as_str().unwrap();
    let (status, body) = app
        .send(
            Method::POST,
            &format!("/api/v1/payments/cancel/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("canceled"))
    );
    let pi = fake.requests_to("POST", "/v1/payment_intents")[0].clone();
    let created = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/cancel"))
        .count();
    assert_eq!(created, 1);
    assert_eq!(pi.form["amount"], "700");
    let canceled: Vec<Value> = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/cancel"))
        .filter_map(|r| fake.intent(r.path.split('/').nth(3).unwrap()))
        .collect();
    assert_eq!(canceled[0]["status"], "canceled");
}

#[tokio::test]
async fn an_unreachable_stripe_answers_502_without_internal_detail_and_stores_nothing() {
    let app = spawn_app_with(&[
        ("PAYMENT_PROVIDER", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_test_switchyard"),
        ("STRIPE_API_BASE", "http://127.0.0.1:9/"),
        ("STRIPE_TIMEOUT_MS", "2000"),
    ])
    .await;
    let s = shop(&app).await;
    let (status, body) = intent(&app, &s, 900, "down").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(
        body["error"],
        json!({"code": "payment_provider_unavailable",
               "message": "the payment provider is unavailable; retry later"})
    );
    let stored: i64 = sqlx::query_scalar("select count(*) from payment where tenant_id = $1")
        .bind(s.t.id)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

/// 32 bytes of base64: the deployment key that seals tenants' secrets in these tests.
const SECRETS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const TENANT_KEY: &str = "sk_test_tenantOwnKey1234";
const TENANT_WEBHOOK: &str = "whsec_tenant_secret_1";
const SET_ACCOUNT: &str = "mutation($s: String!, $p: String, $w: String) {
    setPaymentAccount(secretKey: $s, publishableKey: $p, webhookSecret: $w) {
      provider publishableKey secretKeyHint webhookSecretSet webhookPath } }";

/// Posts a Stripe event about intent `object` to `path`, signed with `secret`; (status, body).
async fn deliver(
    app: &TestApp,
    path: &str,
    secret: &str,
    id: &str,
    object: &Value,
) -> (StatusCode, Value) {
    deliver_event(app, path, secret, id, "payment_intent.succeeded", object).await
}

/// Posts a Stripe event of `kind` about `object` to `path`, signed with `secret`; (status, body).
async fn deliver_event(
    app: &TestApp,
    path: &str,
    secret: &str,
    id: &str,
    kind: &str,
    object: &Value,
) -> (StatusCode, Value) {
    let event = serde_json::to_vec(&json!({"id": id, "object": "event",
        "type": kind, "data": {"object": object}}))
    .unwrap();
    let signature = webhook::sign(&event, secret, chrono::Utc::now().timestamp());
    let response = app
        .client
        .post(app.url(path))
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn provider_of(app: &TestApp, tenant: Uuid, payment: &str) -> (String, String) {
    sqlx::query_as("select provider, provider_ref from payment where tenant_id = $1 and id = $2")
        .bind(tenant)
        .bind(payment.parse::<Uuid>().unwrap())
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenants_own_stripe_keys_are_sealed_take_its_new_payments_and_its_webhook_moves_only_those(
) {
    let fake = StripeFake::start().await;
    let app = spawn_app_with(&[
        ("PAYMENT_PROVIDER", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_test_switchyard"),
        ("STRIPE_API_BASE", &fake.url()),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("SECRETS_KEY", SECRETS_KEY),
    ])
    .await;
    let s = shop(&app).await;
    let other = shop(&app).await;
    let bearer = |key: &str| Some(format!("Bearer {key}"));

    // Before the tenant has keys, its top-ups go through the platform's account.
    let (_, platform) = intent(&app, &s, 700, "before-keys").await;
    let platform_id = platform["intent_id"].as_str().unwrap().to_owned();
    let (provider, platform_pi) = provider_of(&app, s.t.id, &platform_id).await;
    assert_eq!(provider, "stripe");
    assert_eq!(
        fake.requests_to("POST", "/v1/payment_intents")[0].authorization,
        bearer("sk_test_switchyard")
    );

    // Only an owner sees or sets the account; a malformed key is refused by name.
    let (_, manager) = app.add_member(&s.t, "MANAGER").await;
    let body = app
        .gql(Some(&manager), SET_ACCOUNT, json!({"s": TENANT_KEY}))
        .await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let body = app
        .gql(
            Some(&manager),
            "{ paymentAccount { secretKeyHint } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let body = app
        .gql(
            Some(&s.t.access),
            SET_ACCOUNT,
            json!({"s": "pk_test_abc123456789"}),
        )
        .await;
    assert_eq!(gql_code(&body), "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "secretKey");

    // Stored: the answer and the audit log show a hint, never the key; the row holds it sealed.
    let set = app
        .gql_ok(
            &s.t.access,
            SET_ACCOUNT,
            json!({"s": TENANT_KEY, "p": "pk_test_abc123456789", "w": TENANT_WEBHOOK}),
        )
        .await;
    assert_eq!(
        set["setPaymentAccount"],
        json!({"provider": "stripe", "publishableKey": "pk_test_abc123456789", "secretKeyHint": "sk_test_…1234",
               "webhookSecretSet": true, "webhookPath": format!("/webhooks/stripe/{}", s.t.id)})
    );
    let (sealed, audit): (Vec<u8>, String) = sqlx::query_as(
        "select a.secret_key_sealed, (select string_agg(detail::text, ' ') from audit_log
                                      where tenant_id = $1 and action = 'tenant.set_payment_account')
         from payment_account a where a.tenant_id = $1",
    )
    .bind(s.t.id)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert!(!sealed
        .windows(TENANT_KEY.len())
        .any(|w| w == TENANT_KEY.as_bytes()));
    assert!(
        !audit.contains("tenantOwnKey") && audit.contains("sk_test_…1234"),
        "{audit}"
    );
    assert_eq!(
        app.gql_ok(
            &other.t.access,
            "{ paymentAccount { secretKeyHint } }",
            json!({})
        )
        .await["paymentAccount"],
        Value::Null,
        "another tenant's account is not this one's"
    );

    // The next top-up goes through the tenant's own account and is recorded as made there.
    let (_, own) = intent(&app, &s, 1_200, "after-keys").await;
    let own_id = own["intent_id"].as_str().unwrap().to_owned();
    let (provider, own_pi) = provider_of(&app, s.t.id, &own_id).await;
    assert_eq!(provider, "stripe:tenant");
    let creates = fake.requests_to("POST", "/v1/payment_intents");
    assert_eq!(creates.len(), 2);
    assert_eq!(creates[1].authorization, bearer(TENANT_KEY));
    // The other tenant still pays through the platform.
    intent(&app, &other, 300, "other-tenant").await;
    assert_eq!(
        fake.requests_to("POST", "/v1/payment_intents")[2].authorization,
        bearer("sk_test_switchyard")
    );

    // The tenant's webhook, signed with its own secret, confirms its own payment once.
    let own_object = fake.pay(&own_pi);
    let path = format!("/webhooks/stripe/{}", s.t.id);
    let (status, ack) = deliver(&app, &path, TENANT_WEBHOOK, "evt_own", &own_object).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("applied")),
        "{ack}"
    );
    assert_eq!(balance(&app, &s).await, 1_200);
    // Signed with anything else it is refused; the platform's endpoint does not move it.
    let (status, _) = deliver(&app, &path, SECRET, "evt_forged", &own_object).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, ack) = deliver(&app, "/webhooks/stripe", SECRET, "evt_cross", &own_object).await;
    assert_eq!(ack["outcome"], "mismatch", "{ack}");
    // Nor can the tenant's secret confirm the payment the platform's account was to take.
    let platform_object = fake.pay(&platform_pi);
    let (_, ack) = deliver(&app, &path, TENANT_WEBHOOK, "evt_grab", &platform_object).await;
    assert_eq!(ack["outcome"], "mismatch", "{ack}");
    assert_eq!(balance(&app, &s).await, 1_200, "still only the own payment");
    // A tenant without a webhook secret has no endpoint; one naming another tenant is ignored.
    let (status, _) = deliver(
        &app,
        &format!("/webhooks/stripe/{}", other.t.id),
        TENANT_WEBHOOK,
        "evt_other",
        &own_object,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let mut foreign = own_object.clone();
    foreign["metadata"]["tenant_id"] = json!(other.t.id);
    let (_, ack) = deliver(&app, &path, TENANT_WEBHOOK, "evt_foreign", &foreign).await;
    assert_eq!(ack["outcome"], "ignored", "{ack}");

    // The earlier payment is still asked about through the account that made it: the platform's.
    let (_, body) = app
        .get(
            &format!("/api/v1/payments/status/{platform_id}"),
            &s.t.access,
        )
        .await;
    assert_eq!(body["status"], "confirmed", "{body}");
    let polls = fake.requests_to("GET", &format!("/v1/payment_intents/{platform_pi}"));
    assert_eq!(
        polls.last().unwrap().authorization,
        bearer("sk_test_switchyard")
    );
    assert_eq!(balance(&app, &s).await, 1_900);

    // Not while a debt charge (or a card hold) is open on the tenant's account: only that account can settle it.
    let mut tx = app.tenant_tx(s.t.id).await;
    sqlx::query(
        "insert into payment (tenant_id, id, patron_id, venue_id, amount, currency, status, provider, provider_ref,
                              idempotency_key, kind)
         select tenant_id, gen_random_uuid(), patron_id, venue_id, 100, currency, 'pending', provider, 'pi_open',
                'open-debt-charge', 'debt'
         from payment where tenant_id = $1 and provider = 'stripe:tenant' limit 1",
    )
    .bind(s.t.id)
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let refused = app
        .gql(
            Some(&s.t.access),
            "mutation { removePaymentAccount }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&refused), "conflict", "{refused}");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("1 card deposit hold(s) or debt charge(s) are still open"),
        "{refused}"
    );
    assert!(app
        .gql_ok(
            &s.t.access,
            "{ paymentAccount { secretKeyHint } }",
            json!({})
        )
        .await["paymentAccount"]
        .is_object());
    let mut tx = app.tenant_tx(s.t.id).await;
    sqlx::query(
        "update payment set status = 'failed' where tenant_id = $1 and provider_ref = 'pi_open'",
    )
    .bind(s.t.id)
    .execute(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));

    // Removed: payments go through the platform's account again.
    let removed = app
        .gql_ok(&s.t.access, "mutation { removePaymentAccount }", json!({}))
        .await;
    assert_eq!(removed["removePaymentAccount"], true);
    intent(&app, &s, 500, "after-removal").await;
    assert_eq!(
        fake.requests_to("POST", "/v1/payment_intents")
            .last()
            .unwrap()
            .authorization,
        bearer("sk_test_switchyard")
    );
}

/// Stripe's webhooks (the same event delivered several times, and a second event for the same success) and the
/// app's status polls arriving together credit the wallet once; two refunds sent at once with one key refund once.
#[tokio::test]
async fn webhooks_and_polls_arriving_together_credit_once_and_same_key_refunds_refund_once() {
    let fake = StripeFake::start().await;
    let app = stripe_app(&fake).await;
    let s = shop(&app).await;
    let (status, p) = intent(&app, &s, 1_000, "race").await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let id: Uuid = p["intent_id"].as_str().unwrap().parse().unwrap();
    let pi: String =
        sqlx::query_scalar("select provider_ref from payment where tenant_id = $1 and id = $2")
            .bind(s.t.id)
            .bind(id)
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    let object = fake.pay(&pi);

    let webhook = |event_id: &'static str| {
        let app = &app;
        let event = serde_json::to_vec(&json!({"id": event_id, "object": "event",
            "type": "payment_intent.succeeded", "data": {"object": object}}))
        .unwrap();
        async move {
            let signature = webhook::sign(&event, SECRET, chrono::Utc::now().timestamp());
            app.client
                .post(app.url("/webhooks/stripe"))
                .header("stripe-signature", signature)
                .body(event)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let poll = || {
        let app = &app;
        let token = s.t.access.clone();
        async move {
            app.get(&format!("/api/v1/payments/status/{id}"), &token)
                .await
                .1["status"]
                .clone()
        }
    };
    let (hooks, polls) = tokio::join!(
        switchyard_tests::join_all(
            (0..8)
                .map(|i| webhook(if i % 2 == 0 {
                    "evt_race_a"
                } else {
                    "evt_race_b"
                }))
                .collect()
        ),
        switchyard_tests::join_all((0..5).map(|_| poll()).collect()),
    );
    assert!(hooks.iter().all(|s| *s == StatusCode::OK), "{hooks:?}");
    assert!(polls.iter().all(|s| *s == "confirmed"), "{polls:?}");
    assert_eq!(balance(&app, &s).await, 1_000);
    let credits: i64 = sqlx::query_scalar(
        "select count(*) from journal where tenant_id = $1 and idempotency_key = $2",
    )
    .bind(s.t.id)
    .bind(format!("payment:{id}:confirmed"))
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(credits, 1);

    // Two refunds of 300 at once under one key: one refund at Stripe, one in the books, the same answer twice.
    let refund = || {
        let app = &app;
        let token = s.t.access.clone();
        async move {
            app.gql_ok(
                &token,
                REFUND,
                json!({"p": id, "a": 300, "k": "race-refund"}),
            )
            .await["refundPayment"]
                .clone()
        }
    };
    let (first, second) = tokio::join!(refund(), refund());
    assert_eq!(first, second);
    assert_eq!(first["amount"], 300);
    assert_eq!(fake.requests_to("POST", "/v1/refunds").len(), 1);
    assert_eq!(balance(&app, &s).await, 700);
    let refunds: i64 = sqlx::query_scalar("select count(*) from refund where tenant_id = $1")
        .bind(s.t.id)
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap();
    assert_eq!(refunds, 1);
}

/// Stripe writes ISK with two decimals (ISO has none) and MGA in whole ariary (ISO has two decimals): amounts go to
/// Stripe, and come back from its webhooks, in its units, and an amount it cannot take is refused with the step to
/// use. Before, a krona top-up reached Stripe a hundred times too small (and was refused), and an ariary top-up a
/// hundred times too large.
#[tokio::test]
async fn top_ups_and_refunds_reach_stripe_in_its_units_for_krona_and_ariary() {
    let fake = StripeFake::start().await;
    let app = stripe_app(&fake).await;
    let s = shop(&app).await;
    let venue_in = |currency: &'static str| {
        let app = &app;
        let token = s.t.access.clone();
        async move {
            app.gql_ok(
                &token,
                "mutation($i: CreateVenueInput!) { createVenue(input: $i) { id } }",
                json!({"i": {"name": currency, "timezone": "Atlantic/Reykjavik", "currency": currency}}),
            )
            .await["createVenue"]["id"]
                .clone()
        }
    };
    let top_up = |venue: Value, amount: i64, key: &'static str| {
        let app = &app;
        let s = &s;
        async move {
            let response = app
                .client
                .post(app.url("/api/v1/payments/intent"))
                .bearer_auth(&s.t.access)
                .header("idempotency-key", key)
                .json(&json!({"patron_id": s.patron, "venue_id": venue, "amount": amount}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Pays the intent of `payment` at Stripe and delivers Stripe's webhook; the wallet's balance in `currency`.
    let paid = |payment: Value, event: &'static str, currency: &'static str| {
        let (app, s, fake) = (&app, &s, &fake);
        async move {
            let (_, pi) = provider_of(app, s.t.id, payment.as_str().unwrap()).await;
            let object = fake.pay(&pi);
            let (status, body) = deliver(app, "/webhooks/stripe", SECRET, event, &object).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            app.gql_ok(
                &s.t.access,
                "query($p: UUID!, $c: String!) { patron(id: $p) { wallet(currency: $c) { balance } } }",
                json!({"p": s.patron, "c": currency}),
            )
            .await["patron"]["wallet"]["balance"]
                .as_i64()
                .unwrap()
        }
    };
    let sent = |path: &str| -> Vec<(String, String)> {
        fake.requests_to("POST", path)
            .iter()
            .map(|r| {
                let currency = r.form.get("currency").cloned().unwrap_or_default();
                (r.form["amount"].clone(), currency)
            })
            .collect()
    };

    // 1,500 krona: 150000 at Stripe; its webhook credits 1,500; a refund of 400 krona is 40000.
    let isk = venue_in("ISK").await;
    let (status, p) = top_up(isk, 1_500, "isk").await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        sent("/v1/payment_intents"),
        [("150000".into(), "isk".into())]
    );
    assert_eq!(paid(p["intent_id"].clone(), "evt_isk", "ISK").await, 1_500);
    let refund = app
        .gql_ok(
            &s.t.access,
            REFUND,
            json!({"p": p["intent_id"], "a": 400, "k": "isk-refund"}),
        )
        .await;
    assert_eq!(refund["refundPayment"]["amount"], 400);
    assert_eq!(sent("/v1/refunds"), [("40000".into(), String::new())]);
    let (_, pi) = provider_of(&app, s.t.id, p["intent_id"].as_str().unwrap()).await;
    let refunded: i64 = sqlx::query_scalar(
        "select refunded_amount from payment where tenant_id = $1 and provider_ref = $2",
    )
    .bind(s.t.id)
    .bind(&pi)
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(refunded, 400);
    let left = app
        .gql_ok(
            &s.t.access,
            "query($p: UUID!) { patron(id: $p) { wallet(currency: \"ISK\") { balance } } }",
            json!({"p": s.patron}),
        )
        .await;
    assert_eq!(left["patron"]["wallet"]["balance"], 1_100);

    // Ariary: whole ones only, so 1,000.50 is refused with the step; 1,000.00 is 1000 at Stripe.
    let mga = venue_in("MGA").await;
    let (status, body) = top_up(mga.clone(), 100_050, "mga-cents").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("amount: must be a multiple of 1.00 MGA"),
        "{message}"
    );
    assert_eq!(sent("/v1/payment_intents").len(), 1, "nothing sent");
    let (status, p) = top_up(mga, 100_000, "mga").await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        sent("/v1/payment_intents")[1],
        ("1000".into(), "mga".into())
    );
    assert_eq!(
        paid(p["intent_id"].clone(), "evt_mga", "MGA").await,
        100_000
    );
    let cents = app
        .gql(
            Some(&s.t.access),
            REFUND,
            json!({"p": p["intent_id"], "a": 50, "k": "mga-refund-cents"}),
        )
        .await;
    assert_eq!(gql_code(&cents), "validation_failed", "{cents}");
    app.gql_ok(
        &s.t.access,
        REFUND,
        json!({"p": p["intent_id"], "a": 5_000, "k": "mga-refund"}),
    )
    .await;
    assert_eq!(sent("/v1/refunds")[1], ("50".into(), String::new()));
}

/// A refund made in Stripe's dashboard reaches the ledger once, from Stripe's `refund.created` event (found by its
/// intent: a refund carries none of our metadata): the wallet gives back what it holds, and what the patron already
/// spent comes out of the venue's revenue. A refund made through Switchyard, whose event arrives as well, is not
/// booked twice, nor is one whose first try was undone after Stripe made it and whose event booked it meanwhile.
/// Before, a dashboard refund never reached the ledger: the patron kept the money in the wallet and on the card.
#[tokio::test]
async fn a_refund_made_in_stripes_dashboard_reaches_the_ledger_once_and_ours_are_not_booked_twice()
{
    let fake = StripeFake::start().await;
    let app = stripe_app(&fake).await;
    let f = crate::sessions::floor(&app).await;
    let s = crate::payments::Shop {
        t: f.t.clone(),
        venue: f.venue,
        patron: app.create_patron(&f.t.access, "Ines", None).await,
    };
    let (status, p) = intent(&app, &s, 1_000, "to-refund").await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let payment = p["intent_id"].as_str().unwrap().to_owned();
    let (_, pi) = provider_of(&app, s.t.id, &payment).await;
    let paid = fake.pay(&pi);
    deliver(&app, "/webhooks/stripe", SECRET, "evt_paid", &paid).await;
    assert_eq!(balance(&app, &s).await, 1_000);
    let created = |id: &'static str, refund: Value| {
        let app = &app;
        async move {
            deliver_event(
                app,
                "/webhooks/stripe",
                SECRET,
                id,
                "refund.created",
                &refund,
            )
            .await
        }
    };

    // Our refund of 300, then Stripe's event about it: booked once.
    app.gql_ok(
        &s.t.access,
        REFUND,
        json!({"p": payment, "a": 300, "k": "ours"}),
    )
    .await;
    let ours = fake.refunds()[0].clone();
    assert_eq!(ours["metadata"], json!({}));
    let (status, body) = created("evt_ours", ours).await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{body}"
    );
    assert_eq!(balance(&app, &s).await, 700);

    // A refund of 100 whose first try was undone after Stripe made it (the try is played here at the fake, under the
    // key Switchyard sends), booked by its event meanwhile; the retry finds it rather than taking 100 again.
    let undone = app
        .client
        .post(format!("{}v1/refunds", fake.url()))
        .header("idempotency-key", format!("{}:refund:undone", s.t.id))
        .form(&[("amount", "100"), ("payment_intent", pi.as_str())])
        .send()
        .await
        .unwrap();
    assert!(undone.status().is_success());
    let undone: Value = undone.json().await.unwrap();
    created("evt_undone", undone.clone()).await;
    assert_eq!(balance(&app, &s).await, 600);
    let retried = app
        .gql_ok(
            &s.t.access,
            REFUND,
            json!({"p": payment, "a": 100, "k": "undone"}),
        )
        .await;
    assert_eq!(retried["refundPayment"]["amount"], 100);
    assert_eq!(balance(&app, &s).await, 600, "taken once");
    assert_eq!(
        fake.refunds().len(),
        2,
        "Stripe answered the retry with the first refund"
    );

    // All of it spent on an hour's session, 100 in cash since, then 400 refunded in the dashboard: 100 from the
    // wallet, 300 from the venue's revenue.
    let session =
        crate::sessions::wallet_session(&app, &s.t.access, f.station, s.patron, None).await;
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select started_at from session where tenant_id = $1 and id = $2")
            .bind(s.t.id)
            .bind(session)
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    switchyard_tests::bill_tick(s.t.id, session, started + chrono::Duration::minutes(60)).await;
    assert_eq!(balance(&app, &s).await, 0);
    crate::sessions::top_up(&app, &f, s.patron, 100, "cash").await;
    assert_eq!(balance(&app, &s).await, 100);
    let dashboard = fake.refund_in_dashboard(&pi, 400);
    let (status, body) = created("evt_dashboard", dashboard.clone()).await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{body}"
    );
    assert_eq!(balance(&app, &s).await, 0);

    // Delivered again, or told again in another event: nothing more.
    let (_, again) = created("evt_dashboard", dashboard.clone()).await;
    assert_eq!(again["outcome"], "duplicate");
    let (_, told) = created("evt_told_again", dashboard).await;
    assert_eq!(told["outcome"], "applied");

    let mut tx = app.tenant_tx(s.t.id).await;
    let refunds: Vec<(i64, bool)> = sqlx::query_as(
        "select amount, created_by is null from refund where tenant_id = $1 order by created_at",
    )
    .bind(s.t.id)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        refunds,
        [(300, false), (100, true), (400, true)],
        "ours by the owner; the undone one's and the dashboard's by no one"
    );
    let recorded: i64 = sqlx::query_scalar(
        "select refunded_amount from payment where tenant_id = $1 and provider_ref = $2",
    )
    .bind(s.t.id)
    .bind(&pi)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(recorded, 800);
    let mut entries: Vec<(String, i64)> = sqlx::query_as(
        "select a.purpose, e.amount from journal_entry e
           join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where e.tenant_id = $1 and j.kind = 'refund'
           and j.id = (select id from journal where tenant_id = $1 and kind = 'refund' order by created_at desc, id desc limit 1)",
    )
    .bind(s.t.id)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    entries.sort();
    assert_eq!(
        entries,
        [
            ("clearing".into(), 400),
            ("revenue".into(), -300),
            ("wallet".into(), -100)
        ]
    );
    drop(tx);

    // A refund of a payment not confirmed here yet: Stripe is asked to deliver it again later, nothing is booked.
    let (_, pending) = intent(&app, &s, 500, "not-yet").await;
    let (_, pending_pi) = provider_of(&app, s.t.id, pending["intent_id"].as_str().unwrap()).await;
    let early = fake.refund_in_dashboard(&pending_pi, 500);
    let (status, body) = created("evt_early", early).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "retry_later");
}

/// A card dispute: Stripe withdraws the disputed amount and, if the venue wins, reinstates it. Its events carry
/// none of our metadata; the payment is found by its intent. The withdrawal takes what the wallet still holds and the
/// rest out of the venue's revenue (the patron is not put in debt: collecting it would charge the disputed card);
/// reinstated funds go back where they came from; each once. Before, disputes never reached the ledger.
#[tokio::test]
async fn a_card_dispute_takes_its_amount_back_once_and_a_won_one_returns_it_where_it_came_from() {
    let fake = StripeFake::start().await;
    let app = stripe_app(&fake).await;
    let f = crate::sessions::floor(&app).await;
    let s = crate::payments::Shop {
        t: f.t.clone(),
        venue: f.venue,
        patron: app.create_patron(&f.t.access, "Ines", None).await,
    };
    let (_, p) = intent(&app, &s, 1_000, "disputed").await;
    let payment: Uuid = p["intent_id"].as_str().unwrap().parse().unwrap();
    let (_, pi) = provider_of(&app, s.t.id, &payment.to_string()).await;
    let paid = fake.pay(&pi);
    deliver(&app, "/webhooks/stripe", SECRET, "evt_paid", &paid).await;
    let session =
        crate::sessions::wallet_session(&app, &s.t.access, f.station, s.patron, None).await;
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select started_at from session where tenant_id = $1 and id = $2")
            .bind(s.t.id)
            .bind(session)
            .fetch_one(&mut *app.tenant_tx(s.t.id).await)
            .await
            .unwrap();
    switchyard_tests::bill_tick(s.t.id, session, started + chrono::Duration::minutes(60)).await;
    assert_eq!(balance(&app, &s).await, 400);
    let event = |kind: &'static str, id: &'static str, object: Value| {
        let app = &app;
        async move { deliver_event(app, "/webhooks/stripe", SECRET, id, kind, &object).await }
    };
    let books = || {
        let app = &app;
        let tenant = s.t.id;
        async move {
            let mut tx = app.tenant_tx(tenant).await;
            let mut sums: Vec<(String, i64)> = sqlx::query_as(
                "select a.purpose, sum(e.amount)::bigint from journal_entry e
                   join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
                   join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
                 where e.tenant_id = $1 and j.kind = 'dispute' group by a.purpose",
            )
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            sums.sort();
            let disputes: Vec<(i64, i64, String, bool)> = sqlx::query_as(
                "select amount, from_wallet, reason, reinstated_at is not null from payment_dispute
                 where tenant_id = $1",
            )
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            (sums, disputes)
        }
    };

    let dispute = fake.dispute(&pi, 1_000, "fraudulent");
    assert!(dispute.get("metadata").is_some_and(|m| m == &json!({})));
    // Reinstated before it was withdrawn (events can arrive in any order): asked again later, nothing booked.
    let (status, body) = event(
        "charge.dispute.funds_reinstated",
        "evt_du_0",
        dispute.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(books().await, (vec![], vec![]));
    let (status, body) = event(
        "charge.dispute.funds_withdrawn",
        "evt_du_1",
        dispute.clone(),
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{body}"
    );
    assert_eq!(balance(&app, &s).await, 0);
    let taken = (
        vec![
            ("clearing".to_owned(), 1_000),
            ("revenue".to_owned(), -600),
            ("wallet".to_owned(), -400),
        ],
        vec![(1_000, 400, "fraudulent".to_owned(), false)],
    );
    assert_eq!(books().await, taken);
    // Delivered again, or withdrawn again in another event: nothing more.
    let (_, again) = event(
        "charge.dispute.funds_withdrawn",
        "evt_du_1",
        dispute.clone(),
    )
    .await;
    assert_eq!(again["outcome"], "duplicate");
    event(
        "charge.dispute.funds_withdrawn",
        "evt_du_1b",
        dispute.clone(),
    )
    .await;
    assert_eq!(books().await, taken);
    // A disputed payment is not refunded as well: the card network returns the money.
    let refund = app
        .gql(
            Some(&s.t.access),
            REFUND,
            json!({"p": payment, "a": 100, "k": "while-disputed"}),
        )
        .await;
    assert_eq!(gql_code(&refund), "conflict", "{refund}");
    assert!(fake.refunds().is_empty());

    // Won: the 400 go back to the wallet, the 600 to revenue; once.
    let (status, body) = event(
        "charge.dispute.funds_reinstated",
        "evt_du_2",
        dispute.clone(),
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{body}"
    );
    event("charge.dispute.funds_reinstated", "evt_du_2b", dispute).await;
    assert_eq!(balance(&app, &s).await, 400);
    assert_eq!(
        books().await,
        (
            vec![
                ("clearing".to_owned(), 0),
                ("revenue".to_owned(), 0),
                ("wallet".to_owned(), 0)
            ],
            vec![(1_000, 400, "fraudulent".to_owned(), true)],
        )
    );
    let audit: Vec<String> = sqlx::query_scalar(
        "select action from audit_log where tenant_id = $1 and action like 'payment.dispute%' order by created_at",
    )
    .bind(s.t.id)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        audit,
        ["payment.dispute_withdrawn", "payment.dispute_reinstated"]
    );

    // A dispute of an intent that is not ours is acknowledged and moves nothing.
    let mut stranger = fake.dispute(&pi, 1_000, "fraudulent");
    stranger["payment_intent"] = json!("pi_not_ours");
    let (status, body) = event("charge.dispute.funds_withdrawn", "evt_du_3", stranger).await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("ignored")),
        "{body}"
    );
    assert_eq!(balance(&app, &s).await, 400);

    // A dispute of a payment not confirmed here yet: asked again later, nothing booked.
    let (_, pending) = intent(&app, &s, 500, "not-yet").await;
    let (_, pending_pi) = provider_of(&app, s.t.id, pending["intent_id"].as_str().unwrap()).await;
    let early = fake.dispute(&pending_pi, 500, "fraudulent");
    let (status, body) = event("charge.dispute.funds_withdrawn", "evt_du_4", early).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(balance(&app, &s).await, 400);
}
