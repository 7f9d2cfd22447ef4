//! Money paths under pressure: concurrent refunds against one wallet, the payment state machine and webhooks that
//! do not match, idempotency keys reused with another request, the staff cash cap, and the ledger's constraints.

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_core::ledger::{self, Journal, Owner, Purpose};
use switchyard_core::payments::webhook;
use switchyard_core::{Db, TenantId};
use switchyard_tests::{env_url, gql_code, spawn_app_with, TestApp};
use uuid::Uuid;

use crate::payments::{balance, intent, shop, Shop};
use crate::sessions::{floor, wallet_session};

const SECRET: &str = "whsec_money_secret";

const REFUND: &str = "mutation($p: UUID!, $a: Int!, $k: String!) {
    refundPayment(paymentId: $p, amount: $a, idempotencyKey: $k) { id paymentId amount } }";

const TOP_UP: &str = "mutation($p: UUID!, $v: UUID!, $a: Int!, $k: String!) {
    topUpCash(patronId: $p, venueId: $v, amount: $a, idempotencyKey: $k) { wallet(currency: \"EUR\") { balance } } }";

/// Takes `amount` out of the patron's wallet as the venue's revenue, the way a session charge does.
async fn spend(s: &Shop, amount: i64, key: &str) {
    post(s, Purpose::Revenue, -amount, "session_charge", key).await;
}

/// Moves `amount` into the patron's wallet from the venue's account of `purpose` (out of it when negative), as a
/// journal of `kind` under `key`.
async fn post(s: &Shop, purpose: Purpose, amount: i64, kind: &'static str, key: &str) {
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(s.t.id)).await.unwrap();
    let wallet = ledger::account(&mut tx, Owner::Patron(s.patron), Purpose::Wallet, "EUR")
        .await
        .unwrap();
    let venue = ledger::account(&mut tx, Owner::Venue(s.venue), purpose, "EUR")
        .await
        .unwrap();
    ledger::post(
        &mut tx,
        Journal {
            key: key.to_owned(),
            kind,
            memo: kind.into(),
            session_id: None,
            currency: "EUR",
            entries: vec![(wallet, amount), (venue, -amount)],
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn scalar_i64(app: &TestApp, tenant: Uuid, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(tenant)
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_concurrent_refunds_of_two_top_ups_take_the_wallet_at_most_once_and_it_never_goes_negative(
) {
    let app = spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let s = shop(&app).await;
    for round in 0..8 {
        // Two confirmed top-ups of 10.00, then 10.00 spent: the wallet covers one refund, not both.
        let (_, a) = intent(&app, &s, 1_000, &format!("a-{round}")).await;
        let (_, b) = intent(&app, &s, 1_000, &format!("b-{round}")).await;
        assert_eq!(
            (&a["status"], &b["status"]),
            (&json!("confirmed"), &json!("confirmed"))
        );
        spend(&s, 1_000, &format!("spend-{round}")).await;
        assert_eq!(balance(&app, &s).await, 1_000);

        let (first, second) = tokio::join!(
            app.gql(
                Some(&s.t.access),
                REFUND,
                json!({"p": a["intent_id"], "a": 1_000, "k": format!("ra-{round}")}),
            ),
            app.gql(
                Some(&s.t.access),
                REFUND,
                json!({"p": b["intent_id"], "a": 1_000, "k": format!("rb-{round}")}),
            ),
        );
        let answers = [&first, &second];
        let done = answers.iter().filter(|r| r.get("errors").is_none()).count();
        assert_eq!(
            done, 1,
            "round {round}: exactly one refund: {first} / {second}"
        );
        let refused = answers.iter().find(|r| r.get("errors").is_some()).unwrap();
        assert_eq!(gql_code(refused), "insufficient_funds", "{refused}");

        assert_eq!(balance(&app, &s).await, 0, "round {round}");
        let refunds = scalar_i64(
            &app,
            s.t.id,
            "select count(*) from refund where tenant_id = $1",
        )
        .await;
        assert_eq!(refunds, round + 1, "one refund row per round");
        let refunded = scalar_i64(
            &app,
            s.t.id,
            "select coalesce(sum(refunded_amount), 0)::bigint from payment where tenant_id = $1",
        )
        .await;
        assert_eq!(refunded, (round + 1) * 1_000);
    }
    // The wallet never went below zero at any point of its history, and the ledger is balanced.
    let lowest = scalar_i64(
        &app,
        s.t.id,
        "select coalesce(min(running), 0)::bigint from (
           select sum(e.amount) over (order by j.created_at, j.id) as running
           from journal_entry e
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
           join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
           where e.tenant_id = $1 and a.purpose = 'wallet') w",
    )
    .await;
    assert!(lowest >= 0, "the wallet went to {lowest}");
    let total = scalar_i64(
        &app,
        s.t.id,
        "select coalesce(sum(amount), 0)::bigint from journal_entry where tenant_id = $1",
    )
    .await;
    assert_eq!(total, 0, "the ledger balances");
}

/// A payment_intent event as Stripe sends it, about `object` (`id`, `amount`, `currency`) of `payment`.
fn event(id: &str, kind: &str, tenant: Uuid, payment: &str, object: (&str, i64, &str)) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": kind,
        "data": {"object": {"id": object.0, "object": "payment_intent", "amount": object.1, "currency": object.2,
                            "metadata": {"tenant_id": tenant, "payment_id": payment},
                            "last_payment_error": if kind.ends_with("failed") { json!({"code": "card_declined"}) } else { Value::Null }}}
    }))
    .unwrap()
}

async fn deliver(app: &TestApp, body: &[u8]) -> (StatusCode, Value) {
    let signature = webhook::sign(body, SECRET, chrono::Utc::now().timestamp());
    let response = app
        .client
        .post(app.url("/webhooks/stripe"))
        .header("stripe-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn payment_row(app: &TestApp, s: &Shop, id: &str) -> (String, Option<String>, String) {
    sqlx::query_as(
        "select status, failure_reason, provider_ref from payment where tenant_id = $1 and id = $2",
    )
    .bind(s.t.id)
    .bind(id.parse::<Uuid>().unwrap())
    .fetch_one(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap()
}

async fn recorded_events(app: &TestApp, s: &Shop) -> Vec<String> {
    sqlx::query_scalar(
        "select event_id from webhook_event where tenant_id = $1 order by received_at, event_id",
    )
    .bind(s.t.id)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_late_payment_failed_cannot_downgrade_an_authorized_or_confirmed_payment() {
    let app = spawn_app_with(&[
        ("DEV_PAYMENT_CONFIRM_MS", "3600000"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let s = shop(&app).await;
    let (_, p) = intent(&app, &s, 1_200, "held").await;
    let id = p["intent_id"].as_str().unwrap().to_owned();
    let (_, _, pi) = payment_row(&app, &s, &id).await;
    let object = (pi.as_str(), 1_200, "eur");

    let held = event(
        "evt_h1",
        "payment_intent.amount_capturable_updated",
        s.t.id,
        &id,
        object,
    );
    assert_eq!(deliver(&app, &held).await.1["outcome"], "applied");
    assert_eq!(payment_row(&app, &s, &id).await.0, "authorized");

    let late = event(
        "evt_h2",
        "payment_intent.payment_failed",
        s.t.id,
        &id,
        object,
    );
    let (code, answer) = deliver(&app, &late).await;
    assert_eq!(
        (code, &answer["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    let (status, reason, _) = payment_row(&app, &s, &id).await;
    assert_eq!(
        (status.as_str(), reason),
        ("authorized", None),
        "the hold stands"
    );

    let paid = event("evt_h3", "payment_intent.succeeded", s.t.id, &id, object);
    deliver(&app, &paid).await;
    let later = event(
        "evt_h4",
        "payment_intent.payment_failed",
        s.t.id,
        &id,
        object,
    );
    deliver(&app, &later).await;
    let (status, reason, _) = payment_row(&app, &s, &id).await;
    assert_eq!((status.as_str(), reason), ("confirmed", None));
    assert_eq!(balance(&app, &s).await, 1_200, "credited once");
}

#[tokio::test]
async fn a_webhook_whose_intent_amount_or_currency_differs_changes_nothing_and_is_counted() {
    let app = spawn_app_with(&[
        ("DEV_PAYMENT_CONFIRM_MS", "3600000"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let s = shop(&app).await;
    let (_, p) = intent(&app, &s, 1_000, "checked").await;
    let id = p["intent_id"].as_str().unwrap().to_owned();
    let (_, _, pi) = payment_row(&app, &s, &id).await;

    for (n, object) in [
        ("pi_someone_else", 1_000, "eur"),
        (pi.as_str(), 100_000, "eur"),
        (pi.as_str(), 1_000, "usd"),
    ]
    .into_iter()
    .enumerate()
    {
        let body = event(
            &format!("evt_m{n}"),
            "payment_intent.succeeded",
            s.t.id,
            &id,
            object,
        );
        let (code, answer) = deliver(&app, &body).await;
        assert_eq!(
            (code, answer),
            (
                StatusCode::OK,
                json!({"received": true, "outcome": "mismatch"})
            ),
            "{object:?}"
        );
    }
    assert_eq!(payment_row(&app, &s, &id).await.0, "pending");
    assert_eq!(balance(&app, &s).await, 0, "nothing credited");
    assert!(
        recorded_events(&app, &s).await.is_empty(),
        "nothing recorded"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("payments_webhook_mismatch_total"),
        "the mismatch is counted"
    );

    // The matching event still applies.
    let good = event(
        "evt_m9",
        "payment_intent.succeeded",
        s.t.id,
        &id,
        (&pi, 1_000, "eur"),
    );
    assert_eq!(deliver(&app, &good).await.1["outcome"], "applied");
    assert_eq!(balance(&app, &s).await, 1_000);
}

#[tokio::test]
async fn a_webhook_for_a_payment_not_recorded_yet_answers_503_so_stripe_retries_and_a_stale_one_is_ignored(
) {
    let app = spawn_app_with(&[
        ("DEV_PAYMENT_CONFIRM_MS", "3600000"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let s = shop(&app).await;
    // A payment id made just now (our own insert may not have committed yet): retry.
    let fresh = Uuid::now_v7().to_string();
    let body = event(
        "evt_r1",
        "payment_intent.succeeded",
        s.t.id,
        &fresh,
        ("pi_r1", 500, "eur"),
    );
    let (code, answer) = deliver(&app, &body).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"]["code"], "retry_later");
    assert!(
        recorded_events(&app, &s).await.is_empty(),
        "not recorded: the retry must apply"
    );

    // A payment id made two hours ago that never appeared belongs to a rolled-back transaction: acknowledged.
    let two_hours_ago = chrono::Utc::now().timestamp() as u64 - 7_200;
    let stale = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        two_hours_ago,
        0,
    ))
    .to_string();
    let body = event(
        "evt_r2",
        "payment_intent.succeeded",
        s.t.id,
        &stale,
        ("pi_r2", 500, "eur"),
    );
    assert_eq!(
        deliver(&app, &body).await,
        (
            StatusCode::OK,
            json!({"received": true, "outcome": "ignored"})
        )
    );
    // So is an event for a tenant that does not exist, and one of a type we never handle.
    let body = event(
        "evt_r3",
        "payment_intent.succeeded",
        Uuid::now_v7(),
        &fresh,
        ("pi_r3", 500, "eur"),
    );
    assert_eq!(deliver(&app, &body).await.1["outcome"], "ignored");
    let other = serde_json::to_vec(
        &json!({"id": "evt_r4", "type": "charge.refunded", "data": {"object": {}}}),
    )
    .unwrap();
    assert_eq!(deliver(&app, &other).await.1["outcome"], "ignored");
    assert!(recorded_events(&app, &s).await.is_empty());
}

#[tokio::test]
async fn every_graphql_mutation_with_an_idempotency_key_refuses_the_key_with_another_request() {
    let app = spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Kim", None).await;
    let other = app.create_patron(&f.t.access, "Lee", None).await;
    let top_up = |patron: Uuid, amount: i64, key: &'static str| {
        app.gql(
            Some(&f.t.access),
            TOP_UP,
            json!({"p": patron, "v": f.venue, "a": amount, "k": key}),
        )
    };

    // topUpCash: the same request replays (one credit); another amount or patron with the key is refused.
    let first = top_up(patron, 1_000, "cash-1").await;
    assert_eq!(
        first["data"]["topUpCash"]["wallet"]["balance"], 1_000,
        "{first}"
    );
    let again = top_up(patron, 1_000, "cash-1").await;
    assert_eq!(
        again["data"]["topUpCash"]["wallet"]["balance"], 1_000,
        "{again}"
    );
    let more = top_up(patron, 5_000, "cash-1").await;
    assert_eq!(gql_code(&more), "idempotency_key_reused", "{more}");
    let elsewhere = top_up(other, 1_000, "cash-1").await;
    assert_eq!(
        gql_code(&elsewhere),
        "idempotency_key_reused",
        "{elsewhere}"
    );
    // Also once the request store has forgotten the key (24 h): the journal still knows it.
    sqlx::query(
        "update idempotency_key set expires_at = now() - interval '1 second' where tenant_id = $1",
    )
    .bind(f.t.id)
    .execute(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    let late = top_up(patron, 5_000, "cash-1").await;
    assert_eq!(gql_code(&late), "idempotency_key_reused", "{late}");
    let journals = scalar_i64(
        &app,
        f.t.id,
        "select count(*) from journal where tenant_id = $1 and kind = 'top_up_cash'",
    )
    .await;
    assert_eq!(journals, 1);
    // The longest key a request may carry (200 characters) works too, once (its journal key was 211 characters
    // long, past the journal's 200, and the top-up failed as an internal error).
    let long: &'static str = Box::leak("k".repeat(200).into_boxed_str());
    let third = app.create_patron(&f.t.access, "Max", None).await;
    for _ in 0..2 {
        let body = top_up(third, 100, long).await;
        assert_eq!(
            body["data"]["topUpCash"]["wallet"]["balance"], 100,
            "{body}"
        );
    }
    let body = top_up(third, 200, long).await;
    assert_eq!(gql_code(&body), "idempotency_key_reused", "{body}");
    let wallets = app
        .gql_ok(
            &f.t.access,
            "query($a: UUID!, $b: UUID!) { a: patron(id: $a) { wallet(currency: \"EUR\") { balance } }
                                           b: patron(id: $b) { wallet(currency: \"EUR\") { balance } } }",
            json!({"a": patron, "b": other}),
        )
        .await;
    assert_eq!(
        (
            &wallets["a"]["wallet"]["balance"],
            &wallets["b"]["wallet"]["balance"]
        ),
        (&json!(1_000), &json!(0))
    );

    // startSession: another station or patron with the key is refused, nothing started.
    const START: &str = "mutation($s: UUID!, $p: UUID!, $k: String) {
        startSession(input: {stationId: $s, patronId: $p, durationMinutes: 5, payment: WALLET}, idempotencyKey: $k) { id } }";
    let started = app
        .gql_ok(
            &f.t.access,
            START,
            json!({"s": f.station, "p": patron, "k": "start-1"}),
        )
        .await;
    let reused = app
        .gql(
            Some(&f.t.access),
            START,
            json!({"s": f.station, "p": other, "k": "start-1"}),
        )
        .await;
    assert_eq!(gql_code(&reused), "idempotency_key_reused", "{reused}");
    let replay = app
        .gql_ok(
            &f.t.access,
            START,
            json!({"s": f.station, "p": patron, "k": "start-1"}),
        )
        .await;
    assert_eq!(replay, started);

    // refundPayment: another amount with the key is refused.
    let s = Shop {
        t: f.t.clone(),
        venue: f.venue,
        patron: other,
    };
    let (_, paid) = intent(&app, &s, 800, "card-1").await;
    app.gql_ok(
        &f.t.access,
        REFUND,
        json!({"p": paid["intent_id"], "a": 100, "k": "refund-1"}),
    )
    .await;
    let reused = app
        .gql(
            Some(&f.t.access),
            REFUND,
            json!({"p": paid["intent_id"], "a": 200, "k": "refund-1"}),
        )
        .await;
    assert_eq!(gql_code(&reused), "idempotency_key_reused", "{reused}");
    let refunded = scalar_i64(
        &app,
        f.t.id,
        "select coalesce(sum(amount), 0)::bigint from refund where tenant_id = $1",
    )
    .await;
    assert_eq!(refunded, 100);
}

#[tokio::test]
async fn staff_cash_top_ups_are_capped_by_a_tenant_setting_the_owner_changes() {
    let app = spawn_app_with(&[]).await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Kim", None).await;
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let (_, manager) = app.add_member(&f.t, "MANAGER").await;
    let top_up = |token: String, amount: i64, key: String| {
        let app = &app;
        let venue = f.venue;
        async move {
            app.gql(
                Some(&token),
                TOP_UP,
                json!({"p": patron, "v": venue, "a": amount, "k": key}),
            )
            .await
        }
    };
    let cap = app
        .gql_ok(&f.t.access, "{ tenant { staffCashTopUpCap } }", json!({}))
        .await;
    assert_eq!(cap["tenant"]["staffCashTopUpCap"], 20_000, "default 200.00");

    let at_cap = top_up(staff.clone(), 20_000, "s-1".into()).await;
    assert_eq!(
        at_cap["data"]["topUpCash"]["wallet"]["balance"], 20_000,
        "{at_cap}"
    );
    let over = top_up(staff.clone(), 20_001, "s-2".into()).await;
    assert_eq!(gql_code(&over), "forbidden", "{over}");
    assert_eq!(
        over["errors"][0]["message"],
        "staff may top up at most 200.00 EUR in cash at once; a manager or owner can take more"
    );
    let big = top_up(manager.clone(), 50_000, "m-1".into()).await;
    assert_eq!(
        big["data"]["topUpCash"]["wallet"]["balance"], 70_000,
        "{big}"
    );

    // Only the owner changes the cap.
    const SET: &str =
        "mutation($a: Int!) { setStaffCashTopUpCap(amount: $a) { staffCashTopUpCap } }";
    for token in [&staff, &manager] {
        let refused = app.gql(Some(token), SET, json!({"a": 1_000_000})).await;
        assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    }
    let negative = app.gql(Some(&f.t.access), SET, json!({"a": -1})).await;
    assert_eq!(gql_code(&negative), "validation_failed", "{negative}");
    let set = app.gql_ok(&f.t.access, SET, json!({"a": 5_000})).await;
    assert_eq!(set["setStaffCashTopUpCap"]["staffCashTopUpCap"], 5_000);
    let stored = scalar_i64(
        &app,
        f.t.id,
        "select staff_cash_top_up_cap from tenant where id = $1",
    )
    .await;
    assert_eq!(stored, 5_000);
    let over = top_up(staff.clone(), 5_001, "s-3".into()).await;
    assert_eq!(gql_code(&over), "forbidden", "{over}");
    assert!(over["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("50.00 EUR"));
    let under = top_up(staff.clone(), 5_000, "s-4".into()).await;
    assert_eq!(
        under["data"]["topUpCash"]["wallet"]["balance"], 75_000,
        "{under}"
    );
    let journals = scalar_i64(
        &app,
        f.t.id,
        "select count(*) from journal where tenant_id = $1 and kind = 'top_up_cash'",
    )
    .await;
    assert_eq!(journals, 3, "the refused top-ups wrote nothing");
}

#[tokio::test]
async fn the_database_keeps_entries_in_their_accounts_currency_and_every_reference_to_a_real_row() {
    let app = spawn_app_with(&[]).await;
    let f = floor(&app).await;
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let tenant = f.t.id;

    async fn fails(db: &Db, tenant: Uuid, sql: &str, binds: &[Uuid]) -> String {
        let mut tx = db.begin_tenant(TenantId(tenant)).await.unwrap();
        let mut query = sqlx::query(sql).bind(tenant);
        for b in binds {
            query = query.bind(*b);
        }
        let err = query.execute(tx.conn()).await.unwrap_err();
        err.as_database_error()
            .and_then(|e| e.constraint())
            .unwrap_or_default()
            .to_owned()
    }

    // Two EUR accounts, a journal in USD between them: refused though it balances.
    let mut tx = db.begin_tenant(TenantId(tenant)).await.unwrap();
    let drawer = ledger::account(&mut tx, Owner::Venue(f.venue), Purpose::CashDrawer, "EUR")
        .await
        .unwrap();
    let revenue = ledger::account(&mut tx, Owner::Venue(f.venue), Purpose::Revenue, "EUR")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let journal = Uuid::now_v7();
    let constraint = fails(
        &db,
        tenant,
        "with j as (insert into journal (tenant_id, id, idempotency_key, kind) values ($1, $2, 'usd', 'test'))
         insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
         values ($1, $2, 1, $3, 100, 'USD'), ($1, $2, 2, $4, -100, 'USD')",
        &[journal, drawer, revenue],
    )
    .await;
    assert_eq!(constraint, "journal_entry_account_currency_fk");

    let nowhere = Uuid::now_v7();
    let constraint = fails(
        &db,
        tenant,
        "insert into journal (tenant_id, id, idempotency_key, kind, session_id) values ($1, gen_random_uuid(), 'x', 'test', $2)",
        &[nowhere],
    )
    .await;
    assert_eq!(constraint, "journal_session_fk");
    let constraint = fails(
        &db,
        tenant,
        "insert into device_command (tenant_id, id, station_id, session_id, command) values ($1, gen_random_uuid(), $2, $3, 'switch_on')",
        &[f.station, nowhere],
    )
    .await;
    assert_eq!(constraint, "device_command_session_fk");
    let constraint = fails(
        &db,
        tenant,
        "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
         values ($1, gen_random_uuid(), 'patron', $2, 'wallet', 'EUR')",
        &[nowhere],
    )
    .await;
    assert_eq!(constraint, "ledger_account_patron_fk");
    // A venue's id is not a patron's: the owner must exist as its kind.
    let constraint = fails(
        &db,
        tenant,
        "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
         values ($1, gen_random_uuid(), 'venue', $2, 'revenue', 'USD')",
        &[nowhere],
    )
    .await;
    assert_eq!(constraint, "ledger_account_venue_fk");

    // The bridge event's station key, and every new key leads with tenant_id (tenancy rule 2). The ledger's own
    // references are checked once per statement under the same names (see billing.rs).
    let keys: Vec<(String, String)> = sqlx::query_as(
        "select conname::text, pg_get_constraintdef(oid) from pg_constraint
         where conname = any($1) order by conname",
    )
    .bind(vec![
        "bridge_event_station_fk",
        "device_command_session_fk",
        "ledger_account_patron_fk",
        "ledger_account_venue_fk",
    ])
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    for (name, definition) in keys {
        assert!(
            definition.starts_with("FOREIGN KEY (tenant_id, "),
            "{name}: {definition}"
        );
    }

    // A session started through the API writes journals and commands that satisfy all of them.
    let patron = app.create_patron(&f.t.access, "Kim", None).await;
    crate::sessions::top_up(&app, &f, patron, 1_000, "fk-cash").await;
    let session = wallet_session(&app, &f.t.access, f.station, patron, Some(5)).await;
    let commands = scalar_i64(
        &app,
        tenant,
        "select count(*) from device_command where tenant_id = $1 and session_id is not null",
    )
    .await;
    assert!(commands >= 1, "session {session} wrote its switch-on");
}

/// Moves `amount` into the patron's wallet from the venue's cash drawer, the way a staff cash top-up does.
async fn top_up(s: &Shop, amount: i64, key: &str) {
    post(s, Purpose::CashDrawer, amount, "top_up_cash", key).await;
}

#[tokio::test]
async fn a_patron_accounts_kept_balance_follows_its_entries_under_concurrent_and_retried_postings()
{
    let app = spawn_app_with(&[]).await;
    let s = shop(&app).await;
    let other = shop(&app).await;
    top_up(&s, 10_000, "first").await;
    // 12 charges and 12 top-ups at once, each sent twice (a retry): each key moves the money once.
    let keys: Vec<(i64, String, String)> = (0..24)
        .map(|i| {
            (
                i / 2,
                format!("spend-{}", i / 2),
                format!("top-up-{}", i / 2),
            )
        })
        .collect();
    let mut postings: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = Vec::new();
    for (n, spent, topped) in &keys {
        postings.push(Box::pin(spend(&s, 100 + n, spent)));
        postings.push(Box::pin(top_up(&s, 10 + n, topped)));
    }
    switchyard_tests::join_all(postings).await;
    let expected =
        10_000 - (0..12).map(|n| 100 + n).sum::<i64>() + (0..12).map(|n| 10 + n).sum::<i64>();

    // What the patron sees, what the ledger reads, and the sum of the entries agree.
    assert_eq!(balance(&app, &s).await, expected);
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(s.t.id)).await.unwrap();
    let read = ledger::balance(&mut tx, Owner::Patron(s.patron), Purpose::Wallet, "EUR")
        .await
        .unwrap();
    assert_eq!(read, expected);
    drop(tx);
    let kept: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select a.id, b.balance,
                (select sum(e.amount)::bigint from journal_entry e where e.tenant_id = a.tenant_id and e.account_id = a.id)
         from ledger_account a join ledger_balance b on b.tenant_id = a.tenant_id and b.account_id = a.id
         where a.tenant_id = $1",
    )
    .bind(s.t.id)
    .fetch_all(&mut *app.tenant_tx(s.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        kept.len(),
        1,
        "one kept balance, the wallet's (venue accounts are summed): {kept:?}"
    );
    assert_eq!((kept[0].1, kept[0].2), (expected, expected));

    // The app role reads kept balances, never writes them; another tenant sees none of them.
    let mut tx = db.begin_tenant(TenantId(s.t.id)).await.unwrap();
    let refused =
        sqlx::query("update ledger_balance set balance = balance + 1 where tenant_id = $1")
            .bind(s.t.id)
            .execute(tx.conn())
            .await
            .unwrap_err();
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501"),
        "{refused}"
    );
    drop(tx);
    let mut tx = db.begin_tenant(TenantId(other.t.id)).await.unwrap();
    let seen: i64 = sqlx::query_scalar("select count(*) from ledger_balance where account_id = $1")
        .bind(kept[0].0)
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(seen, 0, "another tenant does not see the kept balance");
    drop(tx);
    assert_eq!(balance(&app, &other).await, 0);
}

#[tokio::test]
async fn a_manager_confined_to_another_venue_finds_no_payment_of_this_one_to_read_cancel_or_refund()
{
    let app = spawn_app_with(&[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let s = shop(&app).await;
    let elsewhere = app.create_venue(&s.t.access, "Elsewhere").await;
    let (_, manager) = crate::staff::add_scoped(&app, &s.t.access, "MANAGER", &[elsewhere]).await;
    let (status, paid) = intent(&app, &s, 1_000, "scoped-top-up").await;
    assert_eq!(
        (status, &paid["status"]),
        (StatusCode::CREATED, &json!("confirmed")),
        "{paid}"
    );
    let id = paid["intent_id"].as_str().unwrap();
    // The patron's payments list leaves out what was paid at venues the member cannot see (it listed them all).
    let listed = |token: String| {
        let app = &app;
        let patron = s.patron;
        async move {
            app.gql_ok(
                &token,
                "query($p: UUID!) { patron(id: $p) { payments { amount } } }",
                json!({"p": patron}),
            )
            .await["patron"]["payments"]
                .clone()
        }
    };
    assert_eq!(listed(manager.clone()).await, json!([]));
    assert_eq!(listed(s.t.access.clone()).await, json!([{"amount": 1_000}]));

    for path in [
        format!("/api/v1/payments/status/{id}"),
        format!("/api/v1/payments/intent/{id}"),
    ] {
        let seen = app
            .client
            .get(app.url(&path))
            .bearer_auth(&manager)
            .send()
            .await
            .unwrap();
        assert_eq!(seen.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = seen.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        let owner = app
            .client
            .get(app.url(&path))
            .bearer_auth(&s.t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(owner.status(), StatusCode::OK, "{path}");
    }
    // Not found before anything else is said of it (a confirmed payment answers the owner 409).
    let cancel = format!("/api/v1/payments/cancel/{id}");
    let refused = app
        .client
        .post(app.url(&cancel))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let owner = app
        .client
        .post(app.url(&cancel))
        .bearer_auth(&s.t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(owner.status(), StatusCode::CONFLICT);

    let refund = app
        .gql(
            Some(&manager),
            REFUND,
            json!({"p": id, "a": 500, "k": "scoped-refund"}),
        )
        .await;
    assert_eq!(gql_code(&refund), "not_found", "{refund}");
    assert_eq!(balance(&app, &s).await, 1_000, "nothing left the wallet");
    let refunds = scalar_i64(
        &app,
        s.t.id,
        "select count(*) from refund where tenant_id = $1",
    )
    .await;
    assert_eq!(refunds, 0);
    // The owner, who sees every venue, can.
    let done = app
        .gql(
            Some(&s.t.access),
            REFUND,
            json!({"p": id, "a": 500, "k": "owner-refund"}),
        )
        .await;
    assert_eq!(done["data"]["refundPayment"]["amount"], 500, "{done}");
    assert_eq!(balance(&app, &s).await, 500);
}
