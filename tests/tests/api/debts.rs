//! Debt collection and card deposit holds, with the collector the workers run: on the dev provider, and the same
//! flow through the real Stripe provider code against the local Stripe fake.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_core::payments::collect::{self, Policy, Step};
use switchyard_core::payments::{PaymentProvider, ProviderSettings, ProviderStatus};
use switchyard_core::{sessions, Db, TenantId};
use switchyard_tests::stripe_fake::{Recorded, StripeFake};
use switchyard_tests::{fresh_database, spawn_app_with, TestApp, TestDatabase};
use switchyard_workers::debts::{self, Debts};
use uuid::Uuid;

use crate::rentals::{post, setup, setup_in, wallet, Cabinets};

const POLICY: Policy = Policy {
    step: 100,
    retry_base: Duration::seconds(60),
    max_attempts: 3,
};

fn settings(vars: &[(&str, &str)]) -> Arc<dyn PaymentProvider> {
    let vars: HashMap<&str, &str> = vars.iter().copied().collect();
    ProviderSettings::from_lookup(|k| vars.get(k).map(|v| (*v).to_owned()))
        .unwrap()
        .build()
        .unwrap()
}

pub(crate) struct World {
    pub app: TestApp,
    pub db: Db,
    provider: Arc<dyn PaymentProvider>,
    pub database: TestDatabase,
}

/// A world whose payments go through the Stripe provider, against a fake Stripe.
async fn stripe_world() -> (StripeFake, World) {
    let fake = StripeFake::start().await;
    let w = world_on(&fake).await;
    (fake, w)
}

/// A world whose payments go through the Stripe provider, against `fake`.
async fn world_on(fake: &StripeFake) -> World {
    world(&[
        ("PAYMENT_PROVIDER", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_test_switchyard"),
        ("STRIPE_API_BASE", &fake.url()),
    ])
    .await
}

pub(crate) async fn world(vars: &[(&str, &str)]) -> World {
    let database = fresh_database().await;
    let mut all = vec![("APP_DATABASE_URL", database.app_url.as_str())];
    all.extend_from_slice(vars);
    let mut app = spawn_app_with(&all).await;
    app.owner = sqlx::PgPool::connect_lazy(&database.owner_url).unwrap();
    World {
        db: Db::connect_lazy(&database.app_url, 2).unwrap(),
        provider: settings(vars),
        app,
        database,
    }
}

impl World {
    /// One collector pass at `now`; returns how many debts it claimed.
    async fn collect(&self, now: DateTime<Utc>) -> usize {
        let config = Debts {
            policy: POLICY,
            batch: 10,
            lease_secs: 60,
        };
        let providers = switchyard_core::payments::accounts::Providers::new(
            self.provider.clone(),
            Default::default(),
        );
        debts::run_once(&self.db, &providers, config, now)
            .await
            .unwrap()
    }

    pub(crate) async fn bill(&self, c: &Cabinets, rental: Uuid, after: Duration) {
        let mut tx = self.db.begin_tenant(TenantId(c.t.id)).await.unwrap();
        let started = sessions::get(&mut tx, rental).await.unwrap().started_at;
        sessions::bill_tick(&mut tx, rental, started + after, Duration::seconds(30))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    pub(crate) async fn save_card(&self, c: &Cabinets, token: &str) -> Value {
        self.app
            .gql_ok(
                &c.t.access,
                "mutation($p: UUID!, $m: String!) { savePatronCard(patronId: $p, paymentMethod: $m) {
                   card { provider brand last4 } } }",
                json!({"p": c.patron, "m": token}),
            )
            .await["savePatronCard"]["card"]
            .clone()
    }

    pub(crate) async fn start(&self, c: &Cabinets, key: &str) -> (StatusCode, Value) {
        let (_, q) = post(
            &self.app,
            &c.t.access,
            "/api/v1/rentals/quote",
            None,
            json!({"user_id": c.patron, "station_id": c.a}),
        )
        .await;
        post(
            &self.app,
            &c.t.access,
            "/api/v1/rentals/start",
            Some(key),
            json!({"quote_id": q["quote_id"]}),
        )
        .await
    }

    async fn patron(&self, c: &Cabinets) -> Value {
        self.app
            .gql_ok(
                &c.t.access,
                "query($p: UUID!) { patron(id: $p) {
                   debtCollection { currency status attempts collected lastError }
                   payments { kind status amount capturedAmount failureReason } } }",
                json!({"p": c.patron}),
            )
            .await["patron"]
            .clone()
    }

    async fn unbalanced_journals(&self) -> i64 {
        sqlx::query_scalar(
            "select count(*) from (select 1 from journal_entry group by tenant_id, journal_id, currency
               having sum(amount) <> 0) u",
        )
        .fetch_one(&self.app.owner)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_declined_card_is_retried_with_back_off_until_exhausted_and_the_rental_ends_bought_out() {
    let w = world(&[]).await;
    let c = setup(&w.app, 600).await;
    assert_eq!(
        w.save_card(&c, "pm_card_chargeDeclined").await,
        json!({"provider": "dev", "brand": "visa", "last4": "4242"})
    );
    let (status, r) = w.start(&c, "declined-1").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let rental: Uuid = r["rental_id"].as_str().unwrap().parse().unwrap();
    // The wallet covered the deposit, so it was held from the wallet, not the card.
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": 100, "depositHeld": 500, "debt": 0})
    );

    // Three hours: 175 due, the wallet pays 100, 75 becomes debt and collection is due.
    w.bill(&c, rental, Duration::hours(3)).await;
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": 0, "depositHeld": 500, "debt": 75})
    );
    let now = Utc::now();
    assert_eq!(w.collect(now).await, 1);
    let p = w.patron(&c).await;
    assert_eq!(
        p["debtCollection"],
        json!([{"currency": "EUR", "status": "due", "attempts": 1, "collected": 0, "lastError": "card_declined"}])
    );
    assert_eq!(
        w.collect(now + Duration::seconds(59)).await,
        0,
        "not before the back-off"
    );
    assert_eq!(w.collect(now + Duration::seconds(61)).await, 1);
    assert_eq!(
        w.collect(now + Duration::seconds(61 + 119)).await,
        0,
        "the second wait is twice as long"
    );
    assert_eq!(w.collect(now + Duration::seconds(61 + 121)).await, 1);
    let p = w.patron(&c).await;
    assert_eq!(
        p["debtCollection"],
        json!([{"currency": "EUR", "status": "exhausted", "attempts": 3, "collected": 0, "lastError": "card_declined"}])
    );
    assert_eq!(
        p["payments"],
        json!([
            {"kind": "debt", "status": "failed", "amount": 75, "capturedAmount": 0, "failureReason": "card_declined"},
            {"kind": "debt", "status": "failed", "amount": 75, "capturedAmount": 0, "failureReason": "card_declined"},
            {"kind": "debt", "status": "failed", "amount": 75, "capturedAmount": 0, "failureReason": "card_declined"}
        ])
    );
    assert_eq!(
        w.collect(now + Duration::days(30)).await,
        0,
        "exhausted: no more attempts"
    );

    // The debt keeps growing until the charges reach the buyout threshold: the patron keeps the powerbank and the
    // released deposit pays part of the debt.
    w.bill(&c, rental, Duration::hours(84)).await;
    let (_, got) = w
        .app
        .get(&format!("/api/v1/rentals/{rental}"), &c.t.access)
        .await;
    assert_eq!(got["status"], "BOUGHT_OUT");
    assert_eq!(got["total_amount"], 5000);
    assert_eq!(got["current_debt"], 4400);
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 4400})
    );
    assert_eq!(w.unbalanced_journals().await, 0);

    // A new card starts collection over, and it pays in steps of DEBT_CHARGE_STEP.
    w.save_card(&c, "pm_card_visa").await;
    let later = now + Duration::days(31);
    for _ in 0..44 {
        assert_eq!(w.collect(later).await, 1);
    }
    assert_eq!(
        w.collect(later).await,
        1,
        "the last pass finds nothing owed"
    );
    assert_eq!(w.collect(later).await, 0);
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(w.patron(&c).await["debtCollection"], json!([]));
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// Saved card, deposit held on it, debt collected in steps, the hold captured for what is owed at the end.
async fn card_hold_flow(w: &World, c: &Cabinets) -> Uuid {
    let (status, body) = w.start(c, "no-card").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_funds");

    let card = w.save_card(c, "pm_card_visa").await;
    assert_eq!(card["brand"], "visa");
    assert_eq!(card["last4"], "4242");
    let (status, r) = w.start(c, "with-card").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let rental: Uuid = r["rental_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        w.patron(c).await["payments"],
        json!([{"kind": "deposit", "status": "authorized", "amount": 500, "capturedAmount": 0, "failureReason": null}])
    );
    assert_eq!(
        wallet(&w.app, c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 0}),
        "a card hold is not money in the ledger"
    );

    // 175 due with an empty wallet: debt, collected 100 then 75 from the card while the rental runs.
    w.bill(c, rental, Duration::hours(3)).await;
    let now = Utc::now();
    assert_eq!(w.collect(now).await, 1);
    assert_eq!(wallet(&w.app, c).await["debt"], 75);
    assert_eq!(w.collect(now).await, 1);
    assert_eq!(wallet(&w.app, c).await["debt"], 0);
    assert_eq!(w.collect(now).await, 1, "finds nothing owed and ends");
    assert_eq!(w.collect(now).await, 0);

    // Two more hours (120 more) and the powerbank comes back: the hold is captured for the 120 owed.
    w.bill(c, rental, Duration::hours(5)).await;
    let (status, stopped) = post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop"),
        json!({"rental_id": rental, "station_id": c.a}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(w.collect(Utc::now()).await, 1);
    let p = w.patron(c).await;
    assert_eq!(p["debtCollection"], json!([]));
    assert_eq!(
        p["payments"],
        json!([
            {"kind": "debt", "status": "confirmed", "amount": 75, "capturedAmount": 0, "failureReason": null},
            {"kind": "debt", "status": "confirmed", "amount": 100, "capturedAmount": 0, "failureReason": null},
            {"kind": "deposit", "status": "confirmed", "amount": 500, "capturedAmount": 120, "failureReason": null}
        ])
    );
    assert_eq!(
        wallet(&w.app, c).await,
        json!({"balance": 0, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(w.unbalanced_journals().await, 0);
    rental
}

#[tokio::test]
async fn a_deposit_held_on_the_card_pays_the_debt_and_the_rest_is_released() {
    let w = world(&[]).await;
    let c = setup(&w.app, 0).await;
    card_hold_flow(&w, &c).await;

    // A second rental that ends owing nothing: the hold is released, nothing captured.
    let (_, r) = w.start(&c, "second").await;
    let rental = r["rental_id"].clone();
    post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop-2"),
        json!({"rental_id": rental, "station_id": c.a}),
    )
    .await;
    assert_eq!(w.collect(Utc::now()).await, 1);
    let payments = w.patron(&c).await["payments"].clone();
    assert_eq!(
        payments[0],
        json!({"kind": "deposit", "status": "canceled", "amount": 500, "capturedAmount": 0, "failureReason": null})
    );
}

#[tokio::test]
async fn the_stripe_provider_holds_captures_and_charges_off_session_with_idempotency_keys() {
    let (fake, w) = stripe_world().await;
    let c = setup(&w.app, 0).await;
    card_hold_flow(&w, &c).await;

    let customers = fake.requests_to("POST", "/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(
        customers[0].form["metadata[patron_id]"],
        c.patron.to_string()
    );
    assert_eq!(
        customers[0].authorization.as_deref(),
        Some("Bearer sk_test_switchyard")
    );
    let attach = fake.requests_to("POST", "/v1/payment_methods/pm_card_visa/attach");
    assert_eq!(attach.len(), 1);
    let customer = &attach[0].form["customer"];
    assert!(customer.starts_with("cus_fake"), "{customer}");

    let intents = fake.requests_to("POST", "/v1/payment_intents");
    assert_eq!(intents.len(), 3, "one hold, two debt charges");
    let hold = &intents[0].form;
    assert_eq!(hold["capture_method"], "manual");
    assert_eq!(hold["off_session"], "true");
    assert_eq!(hold["confirm"], "true");
    assert_eq!(hold["amount"], "500");
    assert_eq!(hold["currency"], "eur");
    assert_eq!(&hold["customer"], customer);
    assert_eq!(hold["metadata[tenant_id]"], c.t.id.to_string());
    let charges: Vec<(&str, Option<&String>)> = intents[1..]
        .iter()
        .map(|r| (r.form["amount"].as_str(), r.form.get("capture_method")))
        .collect();
    assert_eq!(charges, [("100", None), ("75", None)]);
    let keys: std::collections::HashSet<_> =
        intents.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 3, "every intent has its own idempotency key");
    assert!(keys.iter().all(Option::is_some));

    let hold_id = fake
        .requests()
        .iter()
        .find_map(|r| {
            r.path
                .strip_prefix("/v1/payment_intents/")
                .and_then(|p| p.strip_suffix("/capture"))
                .map(str::to_owned)
        })
        .unwrap();
    let capture = fake.requests_to("POST", &format!("/v1/payment_intents/{hold_id}/capture"));
    assert_eq!(capture.len(), 1);
    assert_eq!(capture[0].form["amount_to_capture"], "120");
    assert!(capture[0].idempotency_key.is_some());
    assert_eq!(fake.intent(&hold_id).unwrap()["amount_received"], 120);
}

/// A pass that captured a hold at Stripe and was undone before it recorded so (a later statement failed, the worker
/// stopped): Stripe's webhook finds nothing to book, and the next pass, owing a different amount (or nothing), is
/// refused by Stripe (the hold is captured already). It books what Stripe received. Before, that refusal failed every
/// pass for good and the money taken from the card never reached the ledger.
#[tokio::test]
async fn a_hold_captured_by_a_pass_that_was_undone_is_booked_by_the_next_as_stripe_received_it() {
    let (fake, w) = stripe_world().await;
    let base = fake.url();
    let c = setup(&w.app, 0).await;
    w.save_card(&c, "pm_card_visa").await;
    // Captures (`Some(amount)`) or releases (`None`) the newest hold at Stripe, as an undone pass (or Stripe) did.
    let settle_at_stripe = async |amount: Option<i64>| {
        let hold = fake
            .intents()
            .into_iter()
            .rev()
            .find(|i| i["status"] == "requires_capture")
            .unwrap_or_else(|| panic!("no hold: {:?}", fake.intents()));
        let id = hold["id"].as_str().unwrap_or_default().to_owned();
        let (action, form) = match amount {
            Some(a) => ("capture", vec![("amount_to_capture", a.to_string())]),
            None => ("cancel", vec![]),
        };
        let answer = reqwest::Client::new()
            .post(format!("{base}/v1/payment_intents/{id}/{action}"))
            .bearer_auth("sk_test_switchyard")
            .form(&form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(answer.status().is_success(), "{answer:?}");
    };

    // A rental ends owing 295 (five hours, an empty wallet); an undone pass had captured 300 of its 500 hold.
    let (status, r) = w.start(&c, "captured").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let rental: Uuid = r["rental_id"].as_str().unwrap_or_default().parse().unwrap();
    w.bill(&c, rental, Duration::hours(5)).await;
    let (status, stopped) = post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop-captured"),
        json!({"rental_id": rental, "station_id": c.a}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(wallet(&w.app, &c).await["debt"], 295);
    settle_at_stripe(Some(300)).await;
    assert_eq!(w.collect(Utc::now()).await, 1);
    let p = w.patron(&c).await;
    assert_eq!(p["debtCollection"], json!([]), "{p}");
    assert_eq!(
        p["payments"],
        json!([{"kind": "deposit", "status": "confirmed", "amount": 500, "capturedAmount": 300, "failureReason": null}])
    );
    // What the card paid beyond the debt is the patron's.
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": 5, "depositHeld": 0, "debt": 0})
    );

    // A rental that ends owing nothing, its hold captured (50) by an undone pass: the release Stripe refuses; the
    // 50 it received is booked, to the wallet.
    let (_, r) = w.start(&c, "owes-nothing").await;
    post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop-nothing"),
        json!({"rental_id": r["rental_id"], "station_id": c.a}),
    )
    .await;
    settle_at_stripe(Some(50)).await;
    assert_eq!(w.collect(Utc::now()).await, 1);
    let p = w.patron(&c).await;
    assert_eq!(
        p["payments"][0],
        json!({"kind": "deposit", "status": "confirmed", "amount": 500, "capturedAmount": 50, "failureReason": null}),
        "{p}"
    );
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": 55, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(w.collect(Utc::now()).await, 0, "nothing left to do");

    // A hold Stripe released itself (an authorization expires uncaptured) under a rental that ran long: recorded
    // as released, and the debt is charged to the card like any other, rather than every pass failing on it.
    let (_, r) = w.start(&c, "expired").await;
    let rental: Uuid = r["rental_id"].as_str().unwrap_or_default().parse().unwrap();
    w.bill(&c, rental, Duration::hours(5)).await;
    post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop-expired"),
        json!({"rental_id": rental, "station_id": c.a}),
    )
    .await;
    settle_at_stripe(None).await;
    let mut passes = 0;
    while w.collect(Utc::now()).await > 0 {
        passes += 1;
        assert!(passes < 10, "collection goes on: {}", w.patron(&c).await);
    }
    let p = w.patron(&c).await;
    let deposits: Vec<&Value> = p["payments"]
        .as_array()
        .map(|l| l.iter().filter(|x| x["kind"] == "deposit").collect())
        .unwrap_or_default();
    assert_eq!(
        deposits[0],
        &json!({"kind": "deposit", "status": "canceled", "amount": 500, "capturedAmount": 0, "failureReason": null}),
        "{p}"
    );
    assert_eq!(wallet(&w.app, &c).await["debt"], 0, "{p}");
    assert_eq!(w.unbalanced_journals().await, 0);
}

#[tokio::test]
async fn a_card_stripe_declines_fails_the_hold_and_collection_records_the_decline() {
    let (_fake, w) = stripe_world().await;
    let c = setup(&w.app, 0).await;
    w.save_card(&c, "pm_card_chargeDeclined").await;
    let (status, body) = w.start(&c, "declined").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "card_declined");
    assert_eq!(
        body["error"]["message"],
        "the card was declined (generic_decline)"
    );
    assert_eq!(
        w.patron(&c).await["payments"],
        json!([]),
        "no rental, no payment"
    );
    let docked: i64 =
        sqlx::query_scalar("select count(*) from asset where tenant_id = $1 and status = 'docked'")
            .bind(c.t.id)
            .fetch_one(&mut *w.app.tenant_tx(c.t.id).await)
            .await
            .unwrap();
    assert_eq!(docked, 2, "no powerbank left the cabinet");
}

/// The patron's debt payments are one, of 100, confirmed.
async fn assert_one_debt_payment_of_100(w: &World, c: &Cabinets) {
    let payments = w.patron(c).await["payments"].clone();
    let debts: Vec<&Value> = payments
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "debt")
        .collect();
    assert_eq!(
        debts,
        [
            &json!({"kind": "debt", "status": "confirmed", "amount": 100, "capturedAmount": 0, "failureReason": null})
        ],
        "{payments}"
    );
}

/// The debt charges Stripe was asked to make (POST /v1/payment_intents with a debt's idempotency key).
fn debt_charges_sent(fake: &StripeFake) -> Vec<Recorded> {
    fake.requests_to("POST", "/v1/payment_intents")
        .into_iter()
        .filter(|r| {
            r.idempotency_key
                .as_deref()
                .is_some_and(|k| k.contains(" debt "))
        })
        .collect()
}

/// A collection pass undone after Stripe took the charge (the worker crashed, or its connection broke, before the
/// answer was recorded), and meanwhile the patron owes more, saves another card, and a day passes (Stripe forgets
/// idempotency keys after 24 hours): the next pass finds the charge among the customer's intents (the charge was
/// written down first) and records it once; it does not charge the card again.
#[tokio::test]
async fn a_collection_undone_after_stripe_charged_the_card_is_found_and_recorded_by_the_next_pass()
{
    let fake = StripeFake::start().await;
    let (w, c, rental) = owing_on_a_held_rental(&fake).await;
    let now = Utc::now();

    let tenant = TenantId(c.t.id);
    let charge = w.prepare(&c, now).await;
    assert_eq!(charge.amount, 100);
    let taken = collect::send(w.provider.as_ref(), tenant, &charge)
        .await
        .unwrap();
    assert_eq!(taken.status, ProviderStatus::Succeeded);
    // The pass ends here, its answer never recorded.
    assert_eq!(
        wallet(&w.app, &c).await["debt"],
        175,
        "nothing of it was recorded"
    );
    w.bill(&c, rental, Duration::hours(4)).await;
    let owed = wallet(&w.app, &c).await["debt"].as_i64().unwrap();
    assert!(owed > 175, "the patron owes more: {owed}");
    w.save_card(&c, "pm_card_mastercard").await;
    fake.forget_keys();

    // Saving a card makes collection due at once (`now` is earlier).
    assert_eq!(w.collect(Utc::now()).await, 1);
    assert_eq!(wallet(&w.app, &c).await["debt"], owed - 100);
    assert_eq!(
        debt_charges_sent(&fake).len(),
        1,
        "the charge was not made again"
    );
    let searches = fake.requests_to("GET", "/v1/payment_intents");
    assert_eq!(searches.len(), 1, "{searches:?}");
    let first = &debt_charges_sent(&fake)[0];
    assert_eq!(searches[0].form.get("customer"), first.form.get("customer"));
    assert!(
        searches[0].form.contains_key("created[gte]"),
        "{searches:?}"
    );
    assert_one_debt_payment_of_100(&w, &c).await;
    let reference: String =
        sqlx::query_scalar("select provider_ref from payment where kind = 'debt'")
            .fetch_one(&w.app.owner)
            .await
            .unwrap();
    assert_eq!(
        reference, taken.reference,
        "the intent Stripe made is the one recorded"
    );
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// A charge written down by a pass undone before Stripe heard of it: the next pass finds nothing at Stripe and
/// sends the very same request (amount and card as written down), though the patron owes more and saved another
/// card meanwhile.
#[tokio::test]
async fn a_charge_written_down_that_never_reached_stripe_is_sent_as_written_by_the_next_pass() {
    let fake = StripeFake::start().await;
    let (w, c, rental) = owing_on_a_held_rental(&fake).await;
    let charge = w.prepare(&c, Utc::now()).await;
    assert_eq!(charge.amount, 100);
    w.bill(&c, rental, Duration::hours(4)).await;
    let owed = wallet(&w.app, &c).await["debt"].as_i64().unwrap();
    w.save_card(&c, "pm_card_mastercard").await;

    assert_eq!(w.collect(Utc::now()).await, 1);
    assert_eq!(wallet(&w.app, &c).await["debt"], owed - 100);
    assert_eq!(fake.requests_to("GET", "/v1/payment_intents").len(), 1);
    let sent = debt_charges_sent(&fake);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (
            sent[0].form.get("amount").map(String::as_str),
            sent[0].form.get("payment_method").map(String::as_str)
        ),
        (Some("100"), Some("pm_card_visa")),
        "the charge as it was written down"
    );
    assert_one_debt_payment_of_100(&w, &c).await;
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// A debt paid in full (its collection's row goes) and a later one charged to the card: the later charges are keyed
/// apart from the first debt's (each collection has a series of its own), so the new charge is made and recorded.
/// Before, its key repeated the first debt's first charge: Stripe answered with that old intent, which the payment
/// table refused as recorded already, and the debt was never collected.
#[tokio::test]
async fn a_debt_after_one_paid_in_full_is_charged_under_keys_of_its_own() {
    let fake = StripeFake::start().await;
    let (w, c, rental) = owing_on_a_held_rental(&fake).await;
    let now = Utc::now();
    assert_eq!(w.collect(now).await, 1);
    assert_eq!(w.collect(now).await, 1);
    assert_eq!(w.collect(now).await, 1, "finds nothing owed and ends");
    assert_eq!(wallet(&w.app, &c).await["debt"], 0);
    assert_eq!(w.patron(&c).await["debtCollection"], json!([]));

    w.bill(&c, rental, Duration::hours(5)).await;
    assert_eq!(wallet(&w.app, &c).await["debt"], 120);
    assert_eq!(w.collect(Utc::now()).await, 1);
    assert_eq!(wallet(&w.app, &c).await["debt"], 20);
    let sent = debt_charges_sent(&fake);
    let keys: std::collections::BTreeSet<_> =
        sent.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(
        (sent.len(), keys.len()),
        (3, 3),
        "three charges, three keys: {sent:?}"
    );
    let payments = w.patron(&c).await["payments"].clone();
    let mut debts: Vec<(i64, String)> = payments
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "debt")
        .map(|p| {
            (
                p["amount"].as_i64().unwrap(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    debts.sort();
    let confirmed = |amount: i64| (amount, "confirmed".to_owned());
    assert_eq!(
        debts,
        [confirmed(75), confirmed(100), confirmed(100)],
        "{payments}"
    );
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// A Stripe world with a patron owing 175 on a rental whose deposit is held on the card.
async fn owing_on_a_held_rental(fake: &StripeFake) -> (World, Cabinets, Uuid) {
    let w = world_on(fake).await;
    let c = setup(&w.app, 0).await;
    w.save_card(&c, "pm_card_visa").await;
    let (status, r) = w.start(&c, "with-card").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let rental: Uuid = r["rental_id"].as_str().unwrap().parse().unwrap();
    w.bill(&c, rental, Duration::hours(3)).await;
    assert_eq!(wallet(&w.app, &c).await["debt"], 175);
    (w, c, rental)
}

impl World {
    /// The first part of a pass, committed, for a charge to send.
    async fn prepare(&self, c: &Cabinets, now: DateTime<Utc>) -> collect::Charge {
        let mut tx = self.db.begin_tenant(TenantId(c.t.id)).await.unwrap();
        let step = collect::prepare(
            &mut tx,
            self.provider.as_ref(),
            POLICY,
            c.patron,
            "EUR",
            now,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        match step {
            Step::Send(charge) => charge,
            other => panic!("a charge is due: {other:?}"),
        }
    }

    async fn record(
        &self,
        c: &Cabinets,
        charge: &collect::Charge,
        answer: Result<switchyard_core::payments::ProviderIntent, String>,
        now: DateTime<Utc>,
    ) -> collect::Outcome {
        let mut tx = self.db.begin_tenant(TenantId(c.t.id)).await.unwrap();
        let outcome = collect::record(&mut tx, self.provider.as_ref(), POLICY, charge, answer, now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        outcome
    }
}

/// A collector slower than its lease: another claims the debt, sends the written-down charge again (Stripe
/// replays it) and records it; the slow one's answer then changes nothing. One payment, collected once.
#[tokio::test]
async fn a_collector_that_outlives_its_lease_finds_its_charge_recorded_by_the_next() {
    let fake = StripeFake::start().await;
    let (w, c, _) = owing_on_a_held_rental(&fake).await;
    let now = Utc::now();
    let slow = w.prepare(&c, now).await;
    let answer = collect::send(w.provider.as_ref(), TenantId(c.t.id), &slow)
        .await
        .unwrap();

    assert_eq!(w.collect(now + Duration::minutes(5)).await, 1);
    assert_eq!(wallet(&w.app, &c).await["debt"], 75);
    let late = w.record(&c, &slow, Ok(answer), now).await;
    assert_eq!(late, collect::Outcome::Recorded);

    assert_eq!(wallet(&w.app, &c).await["debt"], 75);
    assert_one_debt_payment_of_100(&w, &c).await;
    let row: (i32, i32, Option<i64>) =
        sqlx::query_as("select charges, attempts, sending_amount from debt_collection")
            .fetch_one(&w.app.owner)
            .await
            .unwrap();
    assert_eq!(row, (1, 0, None), "one charge counted, none written down");
    assert_eq!(
        debt_charges_sent(&fake).len(),
        1,
        "sent once, found by the next pass"
    );
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// The rental ends while a charge is out (its card hold now to be settled) and the card declines for the last
/// time: collection is exhausted but stays due, so the next pass settles the hold, which pays the debt.
#[tokio::test]
async fn a_hold_to_settle_that_arrives_while_a_charge_is_out_is_settled_even_if_the_charge_exhausts(
) {
    let fake = StripeFake::start().await;
    let (w, c, rental) = owing_on_a_held_rental(&fake).await;
    sqlx::query("update debt_collection set attempts = $1")
        .bind(POLICY.max_attempts - 1)
        .execute(&w.app.owner)
        .await
        .unwrap();
    let now = Utc::now();
    let charge = w.prepare(&c, now).await;
    let (status, stopped) = post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop-while-charging"),
        json!({"rental_id": rental, "station_id": c.a}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    let owed = wallet(&w.app, &c).await["debt"].as_i64().unwrap();
    let outcome = w
        .record(&c, &charge, Err("card_declined".into()), now)
        .await;
    assert_eq!(outcome, collect::Outcome::Exhausted);
    let debt = &w.patron(&c).await["debtCollection"][0];
    assert_eq!(
        (&debt["status"], &debt["lastError"]),
        (&json!("exhausted"), &json!("card_declined"))
    );

    assert_eq!(w.collect(Utc::now()).await, 1, "still due");
    let payments = w.patron(&c).await["payments"].clone();
    let deposit = payments
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "deposit")
        .unwrap_or_else(|| panic!("{payments}"));
    assert_eq!(
        (&deposit["status"], &deposit["capturedAmount"]),
        (&json!("confirmed"), &json!(owed.min(500))),
        "{payments}"
    );
    assert_eq!(wallet(&w.app, &c).await["debt"], (owed - 500).max(0));
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// A debt charge the card paid after the debt was paid another way (here the deposit of a second rental, released
/// when it came back, paid it while the charge was out): the charge pays what is still owed — nothing — and the
/// rest goes to the wallet. Before, it was credited to the debt whatever it owed, leaving the debt above zero where
/// nothing would ever spend it: the patron had paid twice.
#[tokio::test]
async fn a_debt_charge_confirmed_after_the_debt_was_paid_otherwise_goes_to_the_wallet() {
    let fake = StripeFake::start().await;
    let (w, c, _rental) = owing_on_a_held_rental(&fake).await;
    let now = Utc::now();
    let charge = w.prepare(&c, now).await;
    assert_eq!(charge.amount, 100);
    let taken = collect::send(w.provider.as_ref(), TenantId(c.t.id), &charge)
        .await
        .unwrap();
    assert_eq!(taken.status, ProviderStatus::Succeeded);

    // Meanwhile: 500 in cash, a second rental whose deposit comes from the wallet, and its return to cabinet B.
    w.app
        .gql_ok(
            &c.t.access,
            "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 500, idempotencyKey: \"cash\") { id } }",
            json!({"p": c.patron, "v": c.venue}),
        )
        .await;
    let (status, second) = w.start(&c, "from-the-wallet").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(wallet(&w.app, &c).await["depositHeld"], 500);
    let (status, stopped) = post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("second-back"),
        json!({"rental_id": second["rental_id"], "station_id": c.b}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    let paid = wallet(&w.app, &c).await;
    assert_eq!(
        (&paid["debt"], &paid["balance"]),
        (&json!(0), &json!(325)),
        "the released deposit paid the debt: {paid}"
    );

    let outcome = w.record(&c, &charge, Ok(taken), now).await;
    assert_eq!(outcome, collect::Outcome::Collected(100));
    let after = wallet(&w.app, &c).await;
    assert_eq!(
        (&after["debt"], &after["balance"]),
        (&json!(0), &json!(425)),
        "the charge went to the wallet: {after}"
    );
    assert_eq!(w.unbalanced_journals().await, 0);
}

/// What one currency's card-hold flow holds, charges and captures: (our amount, Stripe's) each.
struct InSteps {
    currency: &'static str,
    hold: (i64, &'static str),
    charges: [(i64, &'static str); 2],
    /// The wallet once the charges paid the debt, and the debt two hours later.
    wallet: i64,
    owed: i64,
    capture: (i64, &'static str),
}

/// A deposit of 505 minor units on the card, 175 owed and charged in steps of 100, 120 more and the hold captured:
/// every amount rounded up to what Stripe takes, sent in Stripe's units, and each step's rest in the wallet.
async fn in_steps(case: InSteps) {
    let (fake, w) = stripe_world().await;
    let c = setup_in(&w.app, 0, case.currency, 505).await;
    w.save_card(&c, "pm_card_visa").await;
    let (status, r) = w.start(&c, "in-steps").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let rental: Uuid = r["rental_id"].as_str().unwrap().parse().unwrap();

    w.bill(&c, rental, Duration::hours(3)).await;
    let now = Utc::now();
    assert_eq!(w.collect(now).await, 1);
    assert_eq!(w.collect(now).await, 1);
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": case.wallet, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(w.collect(now).await, 1, "finds nothing owed and ends");

    // 120 more: the wallet pays first, and the hold is captured for what is still owed, rounded up.
    w.bill(&c, rental, Duration::hours(5)).await;
    assert_eq!(wallet(&w.app, &c).await["debt"], case.owed);
    let (status, stopped) = post(
        &w.app,
        &c.t.access,
        "/api/v1/rentals/stop",
        Some("stop"),
        json!({"rental_id": rental, "station_id": c.a}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(w.collect(Utc::now()).await, 1);
    let p = w.patron(&c).await;
    assert_eq!(p["debtCollection"], json!([]));
    assert_eq!(
        p["payments"],
        json!([
            {"kind": "debt", "status": "confirmed", "amount": case.charges[1].0, "capturedAmount": 0, "failureReason": null},
            {"kind": "debt", "status": "confirmed", "amount": case.charges[0].0, "capturedAmount": 0, "failureReason": null},
            {"kind": "deposit", "status": "confirmed", "amount": case.hold.0, "capturedAmount": case.capture.0,
             "failureReason": null}
        ])
    );
    // 175 + 120 owed in all; what the steps took beyond it is in the wallet.
    let taken = case.charges[0].0 + case.charges[1].0 + case.capture.0;
    assert_eq!(
        wallet(&w.app, &c).await,
        json!({"balance": taken - 295, "depositHeld": 0, "debt": 0})
    );
    assert_eq!(w.unbalanced_journals().await, 0);

    let sent: Vec<(String, String)> = fake
        .requests_to("POST", "/v1/payment_intents")
        .iter()
        .map(|r| (r.form["amount"].clone(), r.form["currency"].clone()))
        .collect();
    let code = case.currency.to_ascii_lowercase();
    let at_stripe = |a: &str| (a.to_owned(), code.clone());
    assert_eq!(
        sent,
        [
            at_stripe(case.hold.1),
            at_stripe(case.charges[0].1),
            at_stripe(case.charges[1].1)
        ]
    );
    let captures: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/capture"))
        .map(|r| r.form["amount_to_capture"].clone())
        .collect();
    assert_eq!(captures, [case.capture.1]);
}

/// Stripe takes Kuwaiti dinars (three decimals) only in tens of fils, and refuses other amounts: a deposit of 0.505
/// is held as 0.510, a debt of 0.075 charged as 0.080, and a hold captured for 0.115 owed takes 0.120. Before,
/// Stripe refused the hold, and a rental could not start.
#[tokio::test]
async fn kuwaiti_dinars_are_held_charged_and_captured_in_tens_and_each_tens_rest_goes_to_the_wallet(
) {
    in_steps(InSteps {
        currency: "KWD",
        hold: (510, "510"),
        charges: [(100, "100"), (80, "80")],
        wallet: 5,
        owed: 115,
        capture: (120, "120"),
    })
    .await;
}

/// Stripe writes Malagasy ariary in whole ariary (ISO gives it two decimals): a deposit of 5.05 is held as 6 (`6`
/// at Stripe), the 1.75 owed is charged as 1 and 1, and the 0.95 still owed captures 1. Before, every amount went to
/// Stripe a hundred times too large.
#[tokio::test]
async fn malagasy_ariary_reach_stripe_whole_and_each_ariarys_rest_goes_to_the_wallet() {
    in_steps(InSteps {
        currency: "MGA",
        hold: (600, "6"),
        charges: [(100, "1"), (100, "1")],
        wallet: 25,
        owed: 95,
        capture: (100, "1"),
    })
    .await;
}
