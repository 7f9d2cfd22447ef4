//! Money in the patron app: sessions paid by the saved card, card top-ups and powerbank rentals, each once per
//! idempotency key under retries and concurrent duplicates.

use serde_json::{json, Value};
use switchyard_tests::{gql_code, TestApp};
use uuid::Uuid;

use switchyard_tests::stripe_fake::StripeFake;

use super::{patron, qr_payload, self_service, shop, START};

const SAVE_CARD: &str = "mutation($pm: String!) { saveMyCard(paymentMethod: $pm) { brand last4 } }";
const TOP_UP: &str = "mutation($v: UUID!, $a: Int!, $k: String!) {
    topUpMyWallet(venueId: $v, amount: $a, idempotencyKey: $k) { id kind status amount currency } }";

/// (kind, amount) of every journal entry on the patron's wallet, oldest first, and the payments' (status, amount).
async fn books(
    app: &TestApp,
    tenant: Uuid,
    patron: Uuid,
) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
    let mut tx = app.tenant_tx(tenant).await;
    let wallet = sqlx::query_as(
        "select j.kind, e.amount from journal_entry e
           join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where e.tenant_id = $1 and a.owner_id = $2 and a.purpose = 'wallet' order by j.created_at, j.id",
    )
    .bind(tenant)
    .bind(patron)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let payments = sqlx::query_as(
        "select status, amount from payment where tenant_id = $1 and patron_id = $2 order by created_at",
    )
    .bind(tenant)
    .bind(patron)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    (wallet, payments)
}

/// A fresh database and an app whose payments go to a local Stripe fake.
async fn stripe_world() -> (StripeFake, crate::debts::World) {
    let fake = StripeFake::start().await;
    let base = fake.url();
    let w = crate::debts::world(&[
        ("PAYMENT_PROVIDER", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_test_switchyard"),
        ("STRIPE_API_BASE", &base),
    ])
    .await;
    (fake, w)
}

#[tokio::test]
async fn paying_by_card_charges_the_saved_card_once_under_retries_and_concurrent_duplicates() {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 0).await;
    let saved = app
        .gql_ok(&me.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
        .await;
    assert_eq!(
        saved["saveMyCard"],
        json!({"brand": "visa", "last4": "4242"})
    );

    let vars = json!({"s": f.station, "m": 30, "pay": "CARD", "k": "card-1"});
    let first = vars.clone();
    let (a, b) = tokio::join!(
        app.gql(Some(&me.token), START, vars.clone()),
        app.gql(Some(&me.token), START, vars.clone())
    );
    let retry = app.gql(Some(&me.token), START, vars.clone()).await;
    let id = a["data"]["startMySession"]["id"].clone();
    assert!(id.is_string(), "{a}");
    assert_eq!(b["data"]["startMySession"]["id"], id, "{b}");
    assert_eq!(retry["data"]["startMySession"]["id"], id, "{retry}");
    let sessions: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = $1")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
    // Thirty minutes at 10 a minute, charged to the card once and credited to the wallet the session draws on.
    assert_eq!(
        books(&app, f.t.id, me.id).await,
        (
            vec![("top_up_card".into(), 300)],
            vec![("confirmed".into(), 300)]
        )
    );
    let reused = json!({"s": f.station, "m": 45, "pay": "CARD", "k": "card-1"});
    let body = app.gql(Some(&me.token), START, reused).await;
    assert_eq!(gql_code(&body), "idempotency_key_reused", "{body}");

    // A busy station costs the next patron nothing.
    let next = patron(&app, f.t.id, "bea").await;
    app.gql_ok(&next.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
        .await;
    let vars = json!({"s": f.station, "m": 30, "pay": "CARD", "k": "card-1"});
    let body = app.gql(Some(&next.token), START, vars).await;
    assert_eq!(gql_code(&body), "conflict", "{body}");
    assert_eq!(books(&app, f.t.id, next.id).await, (vec![], vec![]));
    // A day later the request store has forgotten the key, and the session has ended: the same start again must not
    // take the first start's charge for its own payment (it would start unpaid, its cost becoming debt).
    app.gql_ok(
        &f.t.access,
        "mutation($id: UUID!) { stopSession(id: $id) { id } }",
        json!({"id": id}),
    )
    .await;
    sqlx::query(
        "update idempotency_key set expires_at = now() - interval '1 second' where tenant_id = $1",
    )
    .bind(f.t.id)
    .execute(&app.owner)
    .await
    .unwrap();
    let body = app.gql(Some(&me.token), START, first.clone()).await;
    assert_eq!(gql_code(&body), "idempotency_key_reused", "{body}");
    let sessions: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = $1")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(sessions, 1, "no second session");
    assert_eq!(
        books(&app, f.t.id, me.id).await.1,
        vec![("confirmed".to_owned(), 300)],
        "one charge"
    );

    // A declined card starts nothing and books nothing.
    let declined = patron(&app, f.t.id, "dee").await;
    app.gql_ok(
        &declined.token,
        SAVE_CARD,
        json!({"pm": "pm_card_chargeDeclined"}),
    )
    .await;
    let vars = json!({"s": f.station, "m": 30, "pay": "CARD", "k": "card-2"});
    let body = app.gql(Some(&declined.token), START, vars).await;
    assert_eq!(gql_code(&body), "card_declined", "{body}");
    assert_eq!(books(&app, f.t.id, declined.id).await, (vec![], vec![]));
}

/// Two patrons start card-paid sessions on one station at the same moment, each under a key of its own: one
/// starts and pays; the other is told the station is busy before its card is charged (before, both cards were
/// charged, and the loser's charge was recorded nowhere: its start rolled back on the running-session index). The
/// test holds new sessions back with a table lock until both starts wait on a lock, so the two meet whatever the
/// machine's speed, and Stripe is a local fake that counts the charges made.
#[tokio::test]
async fn two_card_starts_on_one_station_at_once_charge_only_the_card_of_the_one_that_starts() {
    let (fake, w) = stripe_world().await;
    let app = &w.app;
    let (f, ana) = shop(app, 0).await;
    let bea = patron(app, f.t.id, "bea").await;
    for p in [&ana, &bea] {
        app.gql_ok(&p.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
            .await;
    }
    let mut hold = app.owner.begin().await.unwrap();
    sqlx::query("lock table session in share mode")
        .execute(&mut *hold)
        .await
        .unwrap();
    let start = |token: String, key: &'static str| {
        let vars = json!({"s": f.station, "m": 30, "pay": "CARD", "k": key});
        async move { app.gql(Some(&token), START, vars).await }
    };
    let release = async {
        let waiting = || async {
            sqlx::query_scalar::<_, i64>(
                "select count(*) from pg_stat_activity
                  where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()",
            )
            .fetch_one(&app.owner)
            .await
            .unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while waiting().await < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the two starts never both waited"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        hold.rollback().await.unwrap();
    };
    let ((a, b), ()) = tokio::join!(
        async {
            tokio::join!(
                start(ana.token.clone(), "ana"),
                start(bea.token.clone(), "bea")
            )
        },
        release
    );
    let mut answers = [(&ana, a), (&bea, b)];
    answers.sort_by_key(|(_, body)| body["errors"].is_null());
    let [(loser, busy), (winner, started)] = answers;
    assert!(
        started["data"]["startMySession"]["id"].is_string(),
        "{started}"
    );
    assert_eq!(gql_code(&busy), "conflict", "{busy}");
    assert_eq!(
        fake.requests_to("POST", "/v1/payment_intents").len(),
        1,
        "one card charged"
    );
    assert_eq!(
        books(app, f.t.id, winner.id).await,
        (
            vec![("top_up_card".into(), 300)],
            vec![("confirmed".into(), 300)]
        )
    );
    assert_eq!(books(app, f.t.id, loser.id).await, (vec![], vec![]));
}

#[tokio::test]
async fn a_patron_tops_up_by_card_once_per_key_and_a_declined_card_credits_nothing() {
    let app = switchyard_tests::spawn_app().await;
    let (f, me) = shop(&app, 0).await;
    let vars = json!({"v": f.venue, "a": 1_500, "k": "top-1"});
    let body = app.gql(Some(&me.token), TOP_UP, vars.clone()).await;
    assert_eq!(
        gql_code(&body),
        "validation_failed",
        "no card saved yet: {body}"
    );
    app.gql_ok(&me.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
        .await;

    let (a, b) = tokio::join!(
        app.gql(Some(&me.token), TOP_UP, vars.clone()),
        app.gql(Some(&me.token), TOP_UP, vars.clone())
    );
    let paid = &a["data"]["topUpMyWallet"];
    assert_eq!(paid["status"], "confirmed", "{a}");
    assert_eq!(paid["kind"], "top_up");
    assert_eq!(
        (paid["amount"].clone(), paid["currency"].clone()),
        (json!(1500), json!("EUR"))
    );
    assert_eq!(b["data"]["topUpMyWallet"]["id"], paid["id"], "{b}");
    let retry = app.gql_ok(&me.token, TOP_UP, vars).await;
    assert_eq!(retry["topUpMyWallet"]["id"], paid["id"]);

    let body = app
        .gql(
            Some(&me.token),
            TOP_UP,
            json!({"v": f.venue, "a": 900, "k": "top-1"}),
        )
        .await;
    assert_eq!(gql_code(&body), "idempotency_key_reused", "{body}");
    // The dev provider declines amounts ending in 02.
    let body = app
        .gql(
            Some(&me.token),
            TOP_UP,
            json!({"v": f.venue, "a": 1_002, "k": "top-2"}),
        )
        .await;
    assert_eq!(gql_code(&body), "card_declined", "{body}");
    let body = app
        .gql(
            Some(&me.token),
            TOP_UP,
            json!({"v": f.venue, "a": 0, "k": "top-3"}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "amount", "{body}");
    let (g, _) = shop(&app, 0).await;
    let body = app
        .gql(
            Some(&me.token),
            TOP_UP,
            json!({"v": g.venue, "a": 100, "k": "top-4"}),
        )
        .await;
    assert_eq!(
        gql_code(&body),
        "not_found",
        "another tenant's venue: {body}"
    );

    assert_eq!(
        books(&app, f.t.id, me.id).await,
        (
            vec![("top_up_card".into(), 1_500)],
            vec![("confirmed".into(), 1_500)]
        )
    );
    let wallet = app
        .gql_ok(
            &me.token,
            "{ myWallet(currency: \"EUR\") { balance } }",
            json!({}),
        )
        .await;
    assert_eq!(wallet["myWallet"]["balance"], 1_500);
}

const RENT: &str = "mutation($s: UUID, $qr: String, $k: String!) {
    rentMyPowerbank(stationId: $s, qr: $qr, idempotencyKey: $k) { id status } }";
const RETURN: &str = "mutation($r: UUID!, $s: UUID!) {
    returnMyPowerbank(rentalId: $r, stationId: $s) { id status chargedAmount } }";

#[tokio::test]
async fn a_patron_rents_a_powerbank_from_a_self_service_cabinet_by_qr_and_returns_it_to_another() {
    let app = switchyard_tests::spawn_app().await;
    let c = crate::rentals::setup(&app, 0).await;
    let me = patron(&app, c.t.id, "rita").await;
    app.gql_ok(
        &c.t.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 1000, idempotencyKey: \"rita\") { id } }",
        json!({"p": me.id, "v": c.venue}),
    )
    .await;
    let body = app
        .gql(Some(&me.token), RENT, json!({"s": c.a, "k": "r0"}))
        .await;
    assert_eq!(gql_code(&body), "forbidden", "not self-service yet: {body}");
    self_service(&app, &c.t.access, c.a).await;
    let code = qr_payload(&app, &c.t.access, "stations", c.a).await;

    let vars = json!({"qr": code, "k": "r1"});
    let (a, b) = tokio::join!(
        app.gql(Some(&me.token), RENT, vars.clone()),
        app.gql(Some(&me.token), RENT, vars.clone())
    );
    let rental = a["data"]["rentMyPowerbank"]["id"].clone();
    assert_eq!(a["data"]["rentMyPowerbank"]["status"], "ACTIVE", "{a}");
    assert_eq!(b["data"]["rentMyPowerbank"]["id"], rental, "{b}");
    let other = app
        .gql(Some(&me.token), RENT, json!({"s": c.b, "k": "r1"}))
        .await;
    assert_eq!(gql_code(&other), "idempotency_key_reused", "{other}");
    let rental_id: Uuid = rental.as_str().unwrap().parse().unwrap();
    let (label, holder): (String, Option<Uuid>) = sqlx::query_as(
        "select label, patron_id from asset where tenant_id = $1 and status = 'rented'",
    )
    .bind(c.t.id)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!(
        (label.as_str(), holder),
        ("pb-001", Some(me.id)),
        "one powerbank out"
    );
    let wallet = |token: &str| {
        let token = token.to_owned();
        let app = &app;
        async move {
            app.gql_ok(
                &token,
                "{ myWallet(currency: \"EUR\") { balance depositHeld } }",
                json!({}),
            )
            .await["myWallet"]
                .clone()
        }
    };
    assert_eq!(
        wallet(&me.token).await,
        json!({"balance": 500, "depositHeld": 500})
    );

    // A rental is neither paused nor stopped from the app: it ends where the powerbank is docked.
    for mutation in ["pauseMySession", "stopMySession"] {
        let body = super::on_session(&app, &me.token, mutation, &rental).await;
        assert_eq!(gql_code(&body), "conflict", "{mutation}: {body}");
    }
    let neighbour = patron(&app, c.t.id, "sly").await;
    let body = app
        .gql(
            Some(&neighbour.token),
            RETURN,
            json!({"r": rental, "s": c.b}),
        )
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    assert_eq!(body["errors"][0]["message"], "rental not found");
    // Another operator's patron reaches neither the rental nor the cabinet, by id or by its code.
    let (_, outsider) = shop(&app, 1_000).await;
    for (query, vars) in [
        (RETURN, json!({"r": rental, "s": c.b})),
        (RENT, json!({"s": c.a, "k": "o1"})),
        (RENT, json!({"qr": code, "k": "o2"})),
    ] {
        let body = app.gql(Some(&outsider.token), query, vars).await;
        assert_eq!(gql_code(&body), "not_found", "{body}");
    }
    // This patron's own rental put into another operator's cabinet, named by id or by its code: not found, and the
    // powerbank stays rented (it is returned below).
    let other = crate::rentals::setup(&app, 0).await;
    let other_code = qr_payload(&app, &other.t.access, "stations", other.b).await;
    for (query, vars) in [
        (RETURN, json!({"r": rental, "s": other.b})),
        (
            "mutation($r: UUID!, $qr: String!) { returnMyPowerbank(rentalId: $r, qr: $qr) { id } }",
            json!({"r": rental, "qr": other_code}),
        ),
    ] {
        let body = app.gql(Some(&me.token), query, vars).await;
        assert_eq!(gql_code(&body), "not_found", "{body}");
    }

    // A cabinet the bridge drives reports the powerbanks put into it: the patron's word ends nothing there, and the
    // deposit stays held.
    app.gql_ok(
        &c.t.access,
        "mutation($s: UUID!, $i: UpdateStationInput!) { updateStation(id: $s, input: $i) { control } }",
        json!({"s": c.a, "i": {"control": "CABINET", "controlSettings": {"cabinet_id": format!("cab-{}", c.t.id)}}}),
    )
    .await;
    let body = app
        .gql(Some(&me.token), RETURN, json!({"r": rental, "s": c.a}))
        .await;
    assert_eq!(gql_code(&body), "conflict", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("reports returns itself")),
        "{body}"
    );
    assert_eq!(
        wallet(&me.token).await,
        json!({"balance": 500, "depositHeld": 500})
    );

    let returned = app
        .gql_ok(&me.token, RETURN, json!({"r": rental, "s": c.b}))
        .await;
    assert_eq!(
        returned["returnMyPowerbank"],
        json!({"id": rental, "status": "ENDED", "chargedAmount": 0}),
        "within the five free minutes"
    );
    let back: (Option<Uuid>, String) = sqlx::query_as(
        "select s.return_station_id, a.status from session s join asset a on a.tenant_id = s.tenant_id and a.id = s.asset_id
         where s.tenant_id = $1 and s.id = $2",
    )
    .bind(c.t.id)
    .bind(rental_id)
    .fetch_one(&mut *app.tenant_tx(c.t.id).await)
    .await
    .unwrap();
    assert_eq!(back, (Some(c.b), "docked".to_owned()));
    assert_eq!(
        wallet(&me.token).await,
        json!({"balance": 1000, "depositHeld": 0})
    );
    // Asked again, even at the cabinet the bridge drives: the rental has ended, and is returned unchanged.
    let again: Value = app
        .gql_ok(&me.token, RETURN, json!({"r": rental, "s": c.a}))
        .await;
    assert_eq!(
        again["returnMyPowerbank"]["status"], "ENDED",
        "returning twice changes nothing"
    );
}

/// A patron's rental whose deposit is held on the saved card, retried under its key after a failure that came after
/// the provider placed the hold (here the database refuses the deposit's payment row once): the retry finds the hold
/// the first try placed, and one hold is recorded. Before, each try made a quote of its own and so a hold of its
/// own at the provider: the first try's hold was recorded nowhere and kept the patron's money blocked.
#[tokio::test]
async fn a_rental_retried_after_a_failure_past_its_card_hold_holds_the_deposit_once() {
    let (fake, w) = stripe_world().await;
    let app = &w.app;
    let c = crate::rentals::setup(app, 0).await;
    self_service(app, &c.t.access, c.a).await;
    let me = patron(app, c.t.id, "rita").await;
    app.gql_ok(&me.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
        .await;
    for ddl in [
        "create sequence refuse_once_for_test",
        "create function refuse_once_for_test() returns trigger language plpgsql security definer as $$
         begin
           if new.kind = 'deposit' and nextval('refuse_once_for_test') = 1 then
             raise exception 'refused once for the test';
           end if;
           return new;
         end $$",
        "create trigger refuse_once_for_test before insert on payment
         for each row execute function refuse_once_for_test()",
    ] {
        sqlx::query(ddl).execute(&app.owner).await.unwrap();
    }
    let vars = json!({"s": c.a, "k": "r1"});
    let first = app.gql(Some(&me.token), RENT, vars.clone()).await;
    assert_eq!(gql_code(&first), "internal", "{first}");
    let second = app.gql(Some(&me.token), RENT, vars).await;
    assert_eq!(
        second["data"]["rentMyPowerbank"]["status"], "ACTIVE",
        "{second}"
    );
    let asked = fake.requests_to("POST", "/v1/payment_intents");
    assert_eq!(asked.len(), 2, "each try asked for the hold");
    assert_eq!(
        asked
            .iter()
            .map(|r| r.idempotency_key.clone())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "under one key: {asked:?}"
    );
    assert_eq!(fake.intents().len(), 1, "one hold at the provider");
    let holds: Vec<(String, i64)> = sqlx::query_as(
        "select status, amount from payment where tenant_id = $1 and patron_id = $2 and kind = 'deposit'",
    )
    .bind(c.t.id)
    .bind(me.id)
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(holds[0].1, 500, "{holds:?}");
}

/// A declined card top-up tried again with the same key after the patron saved another card: Stripe keeps the key
/// with its first answer and refuses it for the new card (`idempotency_error`), so the app is told to use a new key
/// (`idempotency_key_reused`, 422) rather than that the provider is down (it was told 502
/// `payment_provider_unavailable`, which reads as "try again later", and trying again never helped).
#[tokio::test]
async fn a_declined_top_up_retried_with_its_key_on_another_card_is_told_to_use_a_new_key() {
    let (_fake, w) = stripe_world().await;
    let app = &w.app;
    let (f, me) = shop(app, 0).await;
    app.gql_ok(
        &me.token,
        SAVE_CARD,
        json!({"pm": "pm_card_chargeDeclined"}),
    )
    .await;
    let vars = json!({"v": f.venue, "a": 1_500, "k": "top-1"});
    let body = app.gql(Some(&me.token), TOP_UP, vars.clone()).await;
    assert_eq!(gql_code(&body), "card_declined", "{body}");
    app.gql_ok(&me.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
        .await;
    let body = app.gql(Some(&me.token), TOP_UP, vars).await;
    assert_eq!(gql_code(&body), "idempotency_key_reused", "{body}");
    let body = app
        .gql_ok(
            &me.token,
            TOP_UP,
            json!({"v": f.venue, "a": 1_500, "k": "top-2"}),
        )
        .await;
    assert_eq!(body["topUpMyWallet"]["status"], "confirmed", "{body}");
    assert_eq!(
        books(app, f.t.id, me.id).await,
        (
            vec![("top_up_card".into(), 1_500)],
            vec![("confirmed".into(), 1_500)]
        )
    );
}

/// A session paid by card in Kuwaiti dinars: Stripe takes them only in tens of fils, so five minutes at 7 fils (35)
/// are charged as 40, and the 5 over stay in the wallet. Before, the start asked Stripe for 35 and was refused.
#[tokio::test]
async fn a_card_paid_session_in_dinars_is_charged_in_tens_and_the_rest_stays_in_the_wallet() {
    let (fake, w) = stripe_world().await;
    let app = &w.app;
    let t = app.signup().await;
    let venue = app
        .gql_ok(
            &t.access,
            "mutation { createVenue(input: {name: \"Diwan\", timezone: \"Asia/Kuwait\", currency: \"KWD\"}) { id } }",
            json!({}),
        )
        .await["createVenue"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let station = app.create_station(&t.access, venue, "PC-1").await;
    let tariff = app
        .gql_ok(
            &t.access,
            "mutation { createTariff(name: \"Dinar\", terms: {currency: \"KWD\", perMinute: 7}) { id } }",
            json!({}),
        )
        .await["createTariff"]["id"]
        .clone();
    app.gql_ok(
        &t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": tariff, "v": venue}),
    )
    .await;
    self_service(app, &t.access, station).await;
    let me = patron(app, t.id, "noor").await;
    app.gql_ok(&me.token, SAVE_CARD, json!({"pm": "pm_card_visa"}))
        .await;

    let started = app
        .gql(
            Some(&me.token),
            START,
            json!({"s": station, "m": 5, "pay": "CARD", "k": "kwd"}),
        )
        .await;
    assert!(
        started["data"]["startMySession"]["id"].is_string(),
        "{started}"
    );
    assert_eq!(
        books(app, t.id, me.id).await,
        (
            vec![("top_up_card".into(), 40)],
            vec![("confirmed".into(), 40)]
        )
    );
    let sent: Vec<(String, String)> = fake
        .requests_to("POST", "/v1/payment_intents")
        .iter()
        .map(|r| (r.form["amount"].clone(), r.form["currency"].clone()))
        .collect();
    assert_eq!(sent, [("40".to_owned(), "kwd".to_owned())]);
}
