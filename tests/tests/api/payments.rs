//! Card top-ups through the dev provider, the seed 003 routes, and Stripe webhooks.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::payments::webhook;
use switchyard_tests::{join_all, spawn_app_with, Tenant, TestApp};
use uuid::Uuid;

const SECRET: &str = "whsec_test_secret";

pub(crate) struct Shop {
    pub t: Tenant,
    pub venue: Uuid,
    pub patron: Uuid,
}

pub(crate) async fn shop(app: &TestApp) -> Shop {
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "Shop").await;
    let patron: Uuid = app.create_patron(&t.access, "Kim", None).await;
    Shop { t, venue, patron }
}

pub(crate) async fn intent(app: &TestApp, s: &Shop, amount: i64, key: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/payments/intent"))
        .bearer_auth(&s.t.access)
        .header("idempotency-key", key)
        .json(&json!({"patron_id": s.patron, "venue_id": s.venue, "amount": amount}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

pub(crate) async fn balance(app: &TestApp, s: &Shop) -> i64 {
    app.gql_ok(
        &s.t.access,
        "query($p: UUID!) { patron(id: $p) { wallet(currency: \"EUR\") { balance } } }",
        json!({"p": s.patron}),
    )
    .await["patron"]["wallet"]["balance"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_dev_payment_confirms_once_and_credits_the_wallet_once() {
    let app = spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let s = shop(&app).await;
    let answers = join_all(
        (0..10)
            .map(|_| intent(&app, &s, 1_500, "topup-1"))
            .collect(),
    )
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body["intent_id"], answers[0].1["intent_id"]);
    }
    let body = &answers[0].1;
    assert_eq!(body["status"], "confirmed");
    assert_eq!(body["amount"], 1_500);
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["provider"], "dev");
    assert_eq!(
        balance(&app, &s).await,
        1_500,
        "ten concurrent duplicates, one credit"
    );
    let (status, _) = intent(&app, &s, 2_000, "topup-1").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "same key, other amount"
    );
}

#[tokio::test]
async fn pending_dev_payments_are_confirmed_or_canceled_and_test_amounts_decline() {
    let app = spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "3600000")]).await;
    let s = shop(&app).await;
    let (_, p) = intent(&app, &s, 700, "a").await;
    assert_eq!(p["status"], "pending");
    let id = p["intent_id"].as_str().unwrap();
    let (_, status) = app
        .get(&format!("/api/v1/payments/status/{id}"), &s.t.access)
        .await;
    assert_eq!(
        status,
        json!({"intent_id": id, "status": "pending", "failure_reason": null})
    );
    let (code, confirmed) = app
        .send(
            Method::POST,
            &format!("/api/v1/payments/confirm/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(confirmed["status"], "confirmed");
    app.send(
        Method::POST,
        &format!("/api/v1/payments/confirm/{id}"),
        Some(&s.t.access),
        None,
    )
    .await;
    assert_eq!(balance(&app, &s).await, 700);
    let (code, body) = app
        .send(
            Method::POST,
            &format!("/api/v1/payments/cancel/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");

    let (_, p) = intent(&app, &s, 800, "b").await;
    let id = p["intent_id"].as_str().unwrap();
    let (code, canceled) = app
        .send(
            Method::POST,
            &format!("/api/v1/payments/cancel/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(
        (code, canceled["status"].clone()),
        (StatusCode::OK, json!("canceled"))
    );
    let (_, p) = intent(&app, &s, 1_002, "c").await;
    assert_eq!(
        (p["status"].clone(), p["failure_reason"].clone()),
        (json!("failed"), json!("card_declined"))
    );
    let (_, p) = intent(&app, &s, 995, "d").await;
    assert_eq!(p["failure_reason"], "insufficient_funds");
    assert_eq!(
        balance(&app, &s).await,
        700,
        "only the confirmed payment counted"
    );

    let (code, body) = app
        .send(
            Method::POST,
            "/api/v1/payments/intent",
            Some(&s.t.access),
            Some(json!({"patron_id": s.patron, "venue_id": s.venue, "amount": 5})),
        )
        .await;
    assert_eq!(
        (code, body["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("idempotency_key_required"))
    );
    let (code, body) = intent(&app, &s, -5, "neg").await;
    assert_eq!(
        (code, body["error"]["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("amount"))
    );

    let prod = spawn_app_with(&switchyard_tests::PRODUCTION).await;
    let (code, _) = prod
        .send(
            Method::POST,
            &format!("/api/v1/payments/confirm/{id}"),
            Some(&s.t.access),
            None,
        )
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "no manual confirmation in production"
    );
}

/// A payment_intent event about `intent` (the intent's id at the provider and its amount, in EUR).
fn event(id: &str, kind: &str, tenant: Uuid, payment: &str, intent: (&str, i64)) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": kind,
        "data": {"object": {"id": intent.0, "object": "payment_intent", "amount": intent.1, "currency": "eur",
                            "metadata": {"tenant_id": tenant, "payment_id": payment},
                            "last_payment_error": if kind.ends_with("failed") { json!({"code": "card_declined"}) } else { Value::Null }}}
    }))
    .unwrap()
}

async fn deliver(app: &TestApp, body: &[u8], signature: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The payment's reference at its provider (what Stripe events name as the intent's id).
async fn provider_ref(app: &TestApp, s: &Shop, payment: &str) -> String {
    sqlx::query_scalar("select provider_ref from payment where tenant_id = $1 and id = $2")
        .bind(s.t.id)
        .bind(payment.parse::<Uuid>().unwrap())
        .fetch_one(&mut *app.tenant_tx(s.t.id).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn stripe_webhooks_are_verified_recorded_once_and_converge_in_any_order() {
    let app = spawn_app_with(&[
        ("DEV_PAYMENT_CONFIRM_MS", "3600000"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let s = shop(&app).await;
    let (_, p) = intent(&app, &s, 1_000, "w1").await;
    let first = p["intent_id"].as_str().unwrap().to_owned();

    let first_ref = provider_ref(&app, &s, &first).await;
    let body = event(
        "evt_1",
        "payment_intent.succeeded",
        s.t.id,
        &first,
        (&first_ref, 1_000),
    );
    let (code, answer) = deliver(&app, &body, &webhook::sign(&body, "whsec_forged", now())).await;
    assert_eq!(
        (code, answer["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_signature"))
    );
    let (code, answer) = deliver(&app, &body, &webhook::sign(&body, SECRET, now() - 301)).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tolerance"));
    let (code, _) = app
        .send(
            Method::POST,
            "/webhooks/stripe",
            None,
            Some(json!({"id": "evt_x"})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "no signature header");
    assert_eq!(balance(&app, &s).await, 0, "nothing happened yet");

    let (code, answer) = deliver(&app, &body, &webhook::sign(&body, SECRET, now())).await;
    assert_eq!(
        (code, answer),
        (
            StatusCode::OK,
            json!({"received": true, "outcome": "applied"})
        )
    );
    let (_, answer) = deliver(&app, &body, &webhook::sign(&body, SECRET, now())).await;
    assert_eq!(answer["outcome"], "duplicate");
    assert_eq!(balance(&app, &s).await, 1_000);
    // A late failure for an already succeeded intent changes nothing.
    let late = event(
        "evt_0",
        "payment_intent.payment_failed",
        s.t.id,
        &first,
        (&first_ref, 1_000),
    );
    deliver(&app, &late, &webhook::sign(&late, SECRET, now())).await;
    let (_, status) = app
        .get(&format!("/api/v1/payments/status/{first}"), &s.t.access)
        .await;
    assert_eq!(status["status"], "confirmed");

    // Failed first, then the retry succeeded: confirmed.
    let (_, p) = intent(&app, &s, 400, "w2").await;
    let second = p["intent_id"].as_str().unwrap().to_owned();
    let second_ref = provider_ref(&app, &s, &second).await;
    for (id, kind) in [
        ("evt_2", "payment_intent.payment_failed"),
        ("evt_3", "payment_intent.succeeded"),
    ] {
        let body = event(id, kind, s.t.id, &second, (&second_ref, 400));
        let (code, _) = deliver(&app, &body, &webhook::sign(&body, SECRET, now())).await;
        assert_eq!(code, StatusCode::OK);
    }
    let (_, status) = app
        .get(&format!("/api/v1/payments/status/{second}"), &s.t.access)
        .await;
    assert_eq!(
        status,
        json!({"intent_id": second, "status": "confirmed", "failure_reason": null})
    );
    assert_eq!(balance(&app, &s).await, 1_400);

    // Events of other types, or without our metadata, are acknowledged and ignored.
    let other = serde_json::to_vec(
        &json!({"id": "evt_9", "type": "customer.created", "data": {"object": {}}}),
    )
    .unwrap();
    let (_, answer) = deliver(&app, &other, &webhook::sign(&other, SECRET, now())).await;
    assert_eq!(answer["outcome"], "ignored");
    let junk = b"not json".to_vec();
    let (code, _) = deliver(&app, &junk, &webhook::sign(&junk, SECRET, now())).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // An event naming another tenant for this payment changes nothing: the payment is not found there. Its id is
    // recent, so it might be a payment still being written: Stripe is asked to retry (503), nothing is recorded.
    let intruder = app.signup().await;
    let cross = event(
        "evt_4",
        "payment_intent.canceled",
        intruder.id,
        &second,
        (&second_ref, 400),
    );
    let (code, answer) = deliver(&app, &cross, &webhook::sign(&cross, SECRET, now())).await;
    assert_eq!(
        (code, &answer["error"]["code"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("retry_later"))
    );
    let (_, status) = app
        .get(&format!("/api/v1/payments/status/{second}"), &s.t.access)
        .await;
    assert_eq!(status["status"], "confirmed");

    let unconfigured = spawn_app_with(&[]).await;
    let (code, _) = deliver(&unconfigured, &body, &webhook::sign(&body, SECRET, now())).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_tenants_payments_are_not_found() {
    let app = spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "3600000")]).await;
    let a = shop(&app).await;
    let b = shop(&app).await;
    let (_, p) = intent(&app, &a, 600, "x").await;
    let id = p["intent_id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/v1/payments/status/{id}")),
        (Method::GET, format!("/api/v1/payments/intent/{id}")),
        (Method::POST, format!("/api/v1/payments/cancel/{id}")),
        (Method::POST, format!("/api/v1/payments/confirm/{id}")),
    ] {
        let (code, body) = app.send(method, &path, Some(&b.t.access), None).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let stolen = Shop {
        t: b.t.clone(),
        venue: b.venue,
        patron: a.patron,
    };
    let (code, _) = intent(&app, &stolen, 100, "y").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // B's own patron, paying at A's venue.
    let elsewhere = Shop {
        t: b.t.clone(),
        venue: a.venue,
        patron: b.patron,
    };
    let (code, body) = intent(&app, &elsewhere, 100, "z").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    let payments: i64 = sqlx::query_scalar("select count(*) from payment where tenant_id = $1")
        .bind(b.t.id)
        .fetch_one(&mut *app.tenant_tx(b.t.id).await)
        .await
        .unwrap();
    assert_eq!(payments, 0, "B made no payment");
    let (_, still) = app
        .get(&format!("/api/v1/payments/intent/{id}"), &a.t.access)
        .await;
    assert_eq!(still["status"], "pending");
}
