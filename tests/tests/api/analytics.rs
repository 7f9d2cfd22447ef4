//! Analytics: sessions driven through the real API, the workers' rollup pass run, and every figure compared with
//! what the ledger and the stored sessions say; overlapping passes counting once; venue scope and other tenants;
//! the owners' daily summary email at the real SMTP sink, once.

use chrono::{Duration, NaiveDate, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::analytics::{rollup, summary};
use switchyard_core::{Db, TenantId};
use switchyard_tests::{app_db, gql_code, spawn_app, TestApp};
use uuid::Uuid;

use crate::sessions::{floor, start, top_up, Floor};

/// A fixed-offset zone where it is about noon now: the test venues are put in it, so sessions backdated by minutes
/// never cross the venue's midnight, whatever the hour the suite runs at.
fn zone() -> String {
    // Worked out once per test process, so an hour turning during a test changes nothing.
    static START: std::sync::OnceLock<chrono::DateTime<Utc>> = std::sync::OnceLock::new();
    let offset = 12 - chrono::Timelike::hour(START.get_or_init(Utc::now)) as i32;
    match offset {
        0 => "UTC".into(),
        // The POSIX names: `Etc/GMT-2` is two hours ahead of UTC.
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// The venue-local date now (within an hour of noon there, so the same date for the whole test).
fn today() -> NaiveDate {
    let zone: chrono_tz::Tz = zone().parse().unwrap();
    Utc::now().with_timezone(&zone).date_naive()
}

/// Puts `venue` in the [`zone`] where it is about noon.
async fn at_noon(app: &TestApp, token: &str, venue: Uuid) {
    let zone = zone();
    let updated = app
        .gql_ok(
            token,
            "mutation($v: UUID!, $z: String!) { updateVenue(id: $v, input: {timezone: $z}) { timezone } }",
            json!({"v": venue, "z": zone}),
        )
        .await;
    assert_eq!(updated["updateVenue"]["timezone"], zone);
}

/// The sessions' floor, its venue at noon.
async fn noon_floor(app: &TestApp) -> Floor {
    let f = floor(app).await;
    at_noon(app, &f.t.access, f.venue).await;
    f
}

/// A prepaid session of `minutes` at 0.10/min that lies wholly in the past, then stopped: it costs `minutes × 10`.
/// `patron` None is a walk-in paying cash.
async fn past_session(
    app: &TestApp,
    f: &Floor,
    station: Uuid,
    patron: Option<Uuid>,
    minutes: i64,
) -> Uuid {
    let body = match patron {
        Some(p) => {
            json!({"station_id": station, "patron_id": p, "duration_minutes": minutes, "payment": "wallet"})
        }
        None => json!({"station_id": station, "duration_minutes": minutes, "payment": "cash"}),
    };
    let (status, body) = start(app, &f.t.access, Some(&Uuid::new_v4().to_string()), body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: Uuid = body["session_id"].as_str().unwrap().parse().unwrap();
    let mut tx = app.tenant_tx(f.t.id).await;
    sqlx::query(
        "update session set started_at = started_at - make_interval(mins => $3),
                            planned_end_at = planned_end_at - make_interval(mins => $3)
          where tenant_id = $1 and id = $2",
    )
    .bind(f.t.id)
    .bind(id)
    .bind(minutes as i32 + 1)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total_amount"], minutes * 10, "{body}");
    id
}

/// An open-ended wallet session started 29.5 minutes ago and stopped: 30 started minutes, 3.00, more than the
/// wallet holds, so the rest is booked as debt.
async fn session_into_debt(app: &TestApp, f: &Floor, station: Uuid, patron: Uuid) -> Uuid {
    let (status, body) = start(
        app,
        &f.t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": station, "patron_id": patron, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: Uuid = body["session_id"].as_str().unwrap().parse().unwrap();
    let mut tx = app.tenant_tx(f.t.id).await;
    sqlx::query(
        "update session set started_at = now() - interval '29 minutes 30 seconds'
          where tenant_id = $1 and id = $2",
    )
    .bind(f.t.id)
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

async fn station(app: &TestApp, token: &str, venue: Uuid, name: &str, kind: &str) -> Uuid {
    app.gql_ok(
        token,
        "mutation($i: CreateStationInput!) { createStation(input: $i) { id } }",
        json!({"i": {"venueId": venue, "name": name, "kind": kind, "control": "MANUAL"}}),
    )
    .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Rows of `tenant` still waiting in the rollup queues.
pub(crate) async fn queued(app: &TestApp, tenant: Uuid) -> i64 {
    let mut tx = app.tenant_tx(tenant).await;
    let n: i64 = sqlx::query_scalar(
        "select (select count(*) from analytics_journal_queue where tenant_id = $1)
              + (select count(*) from analytics_session_queue where tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    n
}

/// Runs the workers' rollup pass until `tenant`'s queues are empty (bounded: other tests' tenants share the pass).
pub(crate) async fn roll_up(app: &TestApp, db: &Db, tenant: Uuid) {
    for _ in 0..200 {
        rollup::run_once(db, rollup::Settings::default())
            .await
            .unwrap_or_else(|e| panic!("rollup pass: {e:?}"));
        if queued(app, tenant).await == 0 {
            return;
        }
    }
    panic!("the rollup passes did not empty the queues of {tenant}");
}

/// One number from the tenant's stored state.
async fn stored(app: &TestApp, tenant: Uuid, sql: &str) -> i64 {
    let mut tx = app.tenant_tx(tenant).await;
    let n: i64 = sqlx::query_scalar(sql)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.unwrap();
    n
}

/// What the ledger's revenue entries add up to, optionally of sessions paid by `method`.
async fn ledger_revenue(app: &TestApp, tenant: Uuid, method: Option<&str>) -> i64 {
    let filter = method.map_or(String::new(), |m| format!("and s.payment_method = '{m}'"));
    stored(
        app,
        tenant,
        &format!(
            "select coalesce(sum(e.amount), 0)::bigint from journal_entry e
               join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id and a.purpose = 'revenue'
               join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
               left join session s on s.tenant_id = j.tenant_id and s.id = j.session_id
              where e.tenant_id = $1 {filter}"
        ),
    )
    .await
}

const ANALYTICS: &str = "query($f: NaiveDate!, $t: NaiveDate!, $v: UUID) { analytics(from: $f, to: $t, venueId: $v) {
    from to venueId
    revenueByDay { day currency amount }
    revenueByVenue { venueId venueName currency amount }
    revenueByStationKind { stationKind currency amount }
    revenueByPaymentMethod { paymentMethod currency amount }
    sessions { sessions durationSecs averageDurationSecs energyWh }
    utilisation { dayOfWeek hour busySecs capacitySecs share }
    dailyMetrics { day revenue { currency amount } sessions durationSecs averageDurationSecs energyWh busySecs utilisation }
    topPatrons(limit: 5) { patronId displayName currency spent sessions durationSecs }
} }";

const DEBTS: &str = "query($f: NaiveDate!, $t: NaiveDate!) { analytics(from: $f, to: $t) {
    debtsOutstanding(largest: 5) { currency total patrons largest { patronId displayName owed } } } }";

#[tokio::test]
async fn the_analytics_equal_what_the_ledger_and_the_sessions_say_once_the_workers_rolled_them_up()
{
    let app = spawn_app().await;
    let db = app_db(4);
    let f = noon_floor(&app).await;
    let console = station(&app, &f.t.access, f.venue, "PS5-1", "CONSOLE").await;
    let ada = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, ada, 5_000, &Uuid::new_v4().to_string()).await;
    let bob = app.create_patron(&f.t.access, "Bob", None).await;
    top_up(&app, &f, bob, 100, &Uuid::new_v4().to_string()).await;

    past_session(&app, &f, f.station, Some(ada), 30).await; // 3.00 wallet, PC
    past_session(&app, &f, console, Some(ada), 12).await; // 1.20 wallet, console
    past_session(&app, &f, f.station, None, 20).await; // 2.00 cash, PC
    session_into_debt(&app, &f, console, bob).await; // 3.00: 1.00 wallet, 2.00 debt, console

    // The figures come from the rollups the workers' pass keeps (other tests' passes, which roll up every tenant,
    // may have counted some of these already; the pass below counts what is left, each row once).
    let day = today().to_string();
    let vars = json!({"f": day, "t": day});
    roll_up(&app, &db, f.t.id).await;
    let data = app.gql_ok(&f.t.access, ANALYTICS, vars.clone()).await;
    let a = &data["analytics"];

    let revenue = ledger_revenue(&app, f.t.id, None).await;
    assert_eq!(revenue, 300 + 120 + 200 + 300);
    assert_eq!(a["from"], day);
    assert_eq!(a["to"], day);
    assert_eq!(a["venueId"], Value::Null);
    assert_eq!(
        a["revenueByDay"],
        json!([{"day": day, "currency": "EUR", "amount": revenue}])
    );
    assert_eq!(
        a["revenueByVenue"],
        json!([{"venueId": f.venue, "venueName": "Arcade", "currency": "EUR", "amount": revenue}])
    );
    assert_eq!(
        a["revenueByStationKind"],
        json!([
            {"stationKind": "console", "currency": "EUR", "amount": 420},
            {"stationKind": "pc", "currency": "EUR", "amount": 500},
        ])
    );
    let wallet = ledger_revenue(&app, f.t.id, Some("wallet")).await;
    let cash = ledger_revenue(&app, f.t.id, Some("cash")).await;
    assert_eq!((wallet, cash), (720, 200));
    assert_eq!(
        a["revenueByPaymentMethod"],
        json!([
            {"paymentMethod": "cash", "currency": "EUR", "amount": cash},
            {"paymentMethod": "wallet", "currency": "EUR", "amount": wallet},
        ])
    );

    // Sessions, durations and busy time as the stored sessions say (whole seconds, start to end).
    let durations = stored(
        &app,
        f.t.id,
        "select sum(floor(extract(epoch from ended_at)) - floor(extract(epoch from started_at)))::bigint
           from session where tenant_id = $1",
    )
    .await;
    assert_eq!(
        a["sessions"],
        json!({"sessions": 4, "durationSecs": durations, "averageDurationSecs": (durations + 2) / 4, "energyWh": 0})
    );
    let cells = a["utilisation"].as_array().unwrap();
    assert_eq!(cells.len(), 168);
    let busy: i64 = cells.iter().map(|c| c["busySecs"].as_i64().unwrap()).sum();
    assert_eq!(busy, durations);
    // Two stations, one day: each cell of today's weekday has 2 × 3600 seconds, the other days none.
    let dow = chrono::Datelike::weekday(&today()).number_from_monday() as i64;
    for c in cells {
        let expected = if c["dayOfWeek"] == dow { 7_200 } else { 0 };
        assert_eq!(c["capacitySecs"], expected, "{c}");
        let share = c["busySecs"].as_f64().unwrap() / (expected.max(1) as f64);
        assert!((c["share"].as_f64().unwrap() - share).abs() < 1e-9, "{c}");
    }
    let metrics = a["dailyMetrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["day"], day);
    assert_eq!(
        metrics[0]["revenue"],
        json!([{"currency": "EUR", "amount": revenue}])
    );
    assert_eq!(metrics[0]["sessions"], 4);
    assert_eq!(metrics[0]["busySecs"], durations);
    let utilisation = durations as f64 / (2.0 * 86_400.0);
    assert!((metrics[0]["utilisation"].as_f64().unwrap() - utilisation).abs() < 1e-9);

    // Top patrons: what their sessions earned (walk-ins left out).
    let secs_of = |patron: Uuid| {
        format!(
            "select sum(floor(extract(epoch from ended_at)) - floor(extract(epoch from started_at)))::bigint
               from session where tenant_id = $1 and patron_id = '{patron}'"
        )
    };
    let ada_secs = stored(&app, f.t.id, &secs_of(ada)).await;
    let bob_secs = stored(&app, f.t.id, &secs_of(bob)).await;
    assert_eq!(ada_secs, 42 * 60);
    assert_eq!(
        a["topPatrons"],
        json!([
            {"patronId": ada, "displayName": "Ada", "currency": "EUR", "spent": 420, "sessions": 2, "durationSecs": ada_secs},
            {"patronId": bob, "displayName": "Bob", "currency": "EUR", "spent": 300, "sessions": 1, "durationSecs": bob_secs},
        ])
    );

    // Debts: minus the debt accounts' balance in the ledger.
    let owed = -stored(
        &app,
        f.t.id,
        "select coalesce(sum(e.amount), 0)::bigint from journal_entry e
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id and a.purpose = 'debt'
          where e.tenant_id = $1",
    )
    .await;
    assert_eq!(owed, 200);
    let debts = app.gql_ok(&f.t.access, DEBTS, vars.clone()).await;
    assert_eq!(
        debts["analytics"]["debtsOutstanding"],
        json!([{"currency": "EUR", "total": owed, "patrons": 1,
                "largest": [{"patronId": bob, "displayName": "Bob", "owed": owed}]}])
    );

    // A day without anything, and the period's checks.
    let yesterday = (today() - Duration::days(1)).to_string();
    let empty = app
        .gql_ok(
            &f.t.access,
            ANALYTICS,
            json!({"f": yesterday, "t": yesterday}),
        )
        .await;
    assert_eq!(empty["analytics"]["revenueByDay"], json!([]));
    assert_eq!(
        empty["analytics"]["sessions"],
        json!({"sessions": 0, "durationSecs": 0, "averageDurationSecs": 0, "energyWh": 0})
    );
    for (from, to) in [("2026-03-02", "2026-03-01"), ("2025-01-01", "2026-03-01")] {
        let refused = app
            .gql(Some(&f.t.access), ANALYTICS, json!({"f": from, "t": to}))
            .await;
        assert_eq!(gql_code(&refused), "validation_failed", "{refused}");
    }
    db.pool().close().await;
}

#[tokio::test]
async fn the_projection_is_the_trailing_28_day_average_of_each_weekday() {
    let app = spawn_app().await;
    let db = app_db(2);
    let f = noon_floor(&app).await;
    past_session(&app, &f, f.station, None, 30).await;
    roll_up(&app, &db, f.t.id).await;
    // Seen from a week later, today is one of the four Wednesdays (or whatever today is) of the basis: the same
    // weekday next week is projected at a quarter of today's revenue, every other day at nothing.
    let later = today() + Duration::days(7);
    let data = app
        .gql_ok(
            &f.t.access,
            "query($d: NaiveDate!) { revenueProjection(days: 7, today: $d) {
                method basisFrom basisTo days { day currency amount } totals { currency amount } } }",
            json!({"d": later.to_string()}),
        )
        .await;
    let p = &data["revenueProjection"];
    assert_eq!(p["basisFrom"], (later - Duration::days(28)).to_string());
    assert_eq!(p["basisTo"], (later - Duration::days(1)).to_string());
    assert!(
        p["method"]
            .as_str()
            .unwrap()
            .contains("28-day weekday average"),
        "{p}"
    );
    let days: Vec<Value> = (0..7)
        .map(|i| {
            let day = later + Duration::days(i);
            // 300 / 4 = 75 on today's weekday.
            let amount = if i == 0 { 75 } else { 0 };
            json!({"day": day.to_string(), "currency": "EUR", "amount": amount})
        })
        .collect();
    assert_eq!(p["days"], json!(days));
    assert_eq!(p["totals"], json!([{"currency": "EUR", "amount": 75}]));
    let refused = app
        .gql(
            Some(&f.t.access),
            "{ revenueProjection(days: 0) { totals { amount } } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&refused), "validation_failed", "{refused}");
    db.pool().close().await;
}

#[tokio::test]
async fn overlapping_rollup_passes_count_every_journal_and_session_once() {
    let app = spawn_app().await;
    let db = app_db(8);
    let f = noon_floor(&app).await;
    let ada = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, ada, 50_000, &Uuid::new_v4().to_string()).await;
    for minutes in [5, 6, 7, 8, 9, 10] {
        past_session(&app, &f, f.station, Some(ada), minutes).await;
    }

    // While another worker holds the tenant, a pass skips it and counts nothing.
    let mut holder = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
    let held: bool = sqlx::query_scalar(
        "select pg_try_advisory_xact_lock(hashtextextended('switchyard.analytics:' || $1::text, 0))",
    )
    .bind(f.t.id)
    .fetch_one(holder.conn())
    .await
    .unwrap();
    assert!(held);
    // (Other tests' passes may have counted some rows before the hold; none can while it lasts.)
    let waiting = queued(&app, f.t.id).await;
    assert_eq!(
        rollup::drain_tenant(&db, TenantId(f.t.id), 2)
            .await
            .unwrap(),
        None
    );
    assert_eq!(queued(&app, f.t.id).await, waiting);
    holder.rollback().await.unwrap();

    // Four workers at once, in small batches, and the pass besides.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        let tenant = TenantId(f.t.id);
        workers.push(tokio::spawn(async move {
            rollup::drain_tenant(&db, tenant, 2).await
        }));
    }
    let pass = rollup::run_once(
        &db,
        rollup::Settings {
            batch: 3,
            tenants: 1_000,
        },
    );
    pass.await.unwrap_or_else(|e| panic!("pass: {e}"));
    for w in workers {
        w.await.unwrap().unwrap_or_else(|e| panic!("worker: {e:?}"));
    }
    roll_up(&app, &db, f.t.id).await;

    let revenue = ledger_revenue(&app, f.t.id, None).await;
    assert_eq!(revenue, (5 + 6 + 7 + 8 + 9 + 10) * 10);
    let day = today().to_string();
    let data = app
        .gql_ok(&f.t.access, ANALYTICS, json!({"f": day, "t": day}))
        .await;
    let a = &data["analytics"];
    assert_eq!(
        a["revenueByDay"],
        json!([{"day": day, "currency": "EUR", "amount": revenue}])
    );
    assert_eq!(a["sessions"]["sessions"], 6);
    let durations = stored(
        &app,
        f.t.id,
        "select sum(floor(extract(epoch from ended_at)) - floor(extract(epoch from started_at)))::bigint
           from session where tenant_id = $1",
    )
    .await;
    assert_eq!(a["sessions"]["durationSecs"], durations);
    assert_eq!(a["topPatrons"][0]["spent"], revenue);
    assert_eq!(a["topPatrons"][0]["sessions"], 6);
    // The rollup rows themselves: one revenue row, counted once.
    assert_eq!(
        stored(
            &app,
            f.t.id,
            "select sum(amount)::bigint from analytics_revenue_day where tenant_id = $1"
        )
        .await,
        revenue
    );
    db.pool().close().await;
}

#[tokio::test]
async fn a_venue_scoped_manager_sees_its_venue_only_and_other_tenants_venues_are_not_found() {
    let app = spawn_app().await;
    let db = app_db(2);
    let f = noon_floor(&app).await;
    let hall = app.create_venue(&f.t.access, "Hall B").await;
    at_noon(&app, &f.t.access, hall).await;
    let hall_pc = app.create_station(&f.t.access, hall, "PC-B").await;
    app.gql_ok(
        &f.t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": f.tariff, "v": hall}),
    )
    .await;
    past_session(&app, &f, f.station, None, 10).await;
    past_session(&app, &f, hall_pc, None, 25).await;
    roll_up(&app, &db, f.t.id).await;

    let (manager, manager_token) = app.add_member(&f.t, "MANAGER").await;
    app.gql_ok(
        &f.t.access,
        "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
        json!({"u": manager, "v": [hall]}),
    )
    .await;
    let day = today().to_string();
    let owner = app
        .gql_ok(&f.t.access, ANALYTICS, json!({"f": day, "t": day}))
        .await;
    assert_eq!(
        owner["analytics"]["revenueByVenue"],
        json!([
            {"venueId": hall, "venueName": "Hall B", "currency": "EUR", "amount": 250},
            {"venueId": f.venue, "venueName": "Arcade", "currency": "EUR", "amount": 100},
        ])
    );
    let scoped = app
        .gql_ok(&manager_token, ANALYTICS, json!({"f": day, "t": day}))
        .await;
    let a = &scoped["analytics"];
    assert_eq!(
        a["revenueByVenue"],
        json!([{"venueId": hall, "venueName": "Hall B", "currency": "EUR", "amount": 250}])
    );
    assert_eq!(
        a["revenueByDay"],
        json!([{"day": day, "currency": "EUR", "amount": 250}])
    );
    assert_eq!(a["sessions"]["sessions"], 1);
    // Capacity counts the manager's one station only.
    assert_eq!(
        a["utilisation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["capacitySecs"].as_i64().unwrap())
            .max(),
        Some(3_600)
    );
    let mine = app
        .gql_ok(
            &manager_token,
            ANALYTICS,
            json!({"f": day, "t": day, "v": hall}),
        )
        .await;
    assert_eq!(mine["analytics"]["venueId"], hall.to_string());
    // The other venue, as if it did not exist; debts belong to no venue: forbidden for a scoped member.
    let refused = app
        .gql(
            Some(&manager_token),
            ANALYTICS,
            json!({"f": day, "t": day, "v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&refused), "not_found", "{refused}");
    let refused = app
        .gql(Some(&manager_token), DEBTS, json!({"f": day, "t": day}))
        .await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");

    // Another tenant: our venue is not found, and nothing of ours is in its figures.
    let other = app.signup().await;
    let refused = app
        .gql(
            Some(&other.access),
            ANALYTICS,
            json!({"f": day, "t": day, "v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&refused), "not_found", "{refused}");
    let theirs = app
        .gql_ok(&other.access, ANALYTICS, json!({"f": day, "t": day}))
        .await;
    assert_eq!(theirs["analytics"]["revenueByDay"], json!([]));
    assert_eq!(theirs["analytics"]["topPatrons"], json!([]));

    // Staff see no analytics.
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let refused = app
        .gql(Some(&staff), ANALYTICS, json!({"f": day, "t": day}))
        .await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    db.pool().close().await;
}

#[tokio::test]
async fn an_owner_who_opted_in_gets_the_daily_summary_by_email_once() {
    let app = spawn_app().await;
    let db = app_db(4);
    let f = noon_floor(&app).await;
    // Nobody gets it by default.
    let mine = app
        .gql_ok(
            &f.t.access,
            "{ myNotificationChannels { topic channels } }",
            json!({}),
        )
        .await;
    assert!(
        mine["myNotificationChannels"]
            .as_array()
            .unwrap()
            .contains(&json!({"topic": "DAILY_SUMMARY", "channels": []})),
        "{mine}"
    );
    past_session(&app, &f, f.station, None, 30).await;
    let tomorrow = Utc::now() + Duration::days(1);
    // Not opted in: a pass a day later sends nothing and marks nothing.
    summary::run_once(&db, tomorrow, 5_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stored(
            &app,
            f.t.id,
            "select count(*) from analytics_daily_summary where tenant_id = $1"
        )
        .await,
        0
    );

    app.gql_ok(
        &f.t.access,
        "mutation { setMyNotificationChannels(topic: DAILY_SUMMARY, channels: [EMAIL]) { topic channels } }",
        json!({}),
    )
    .await;
    // Two workers at once, then another pass: one summary (the rollup is drained first, by the pass itself).
    let (a, b) = tokio::join!(
        summary::run_once(&db, tomorrow, 5_000),
        summary::run_once(&db, tomorrow, 5_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.queued + b.queued >= 1, "{a:?} {b:?}");
    summary::run_once(&db, tomorrow, 5_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        stored(
            &app,
            f.t.id,
            "select count(*) from notification where tenant_id = $1 and kind = 'daily_summary'"
        )
        .await,
        1
    );

    let day = today().to_string();
    let is_summary = |m: &switchyard_tests::mail::Mail| m.subject.starts_with("Arcade on ");
    let got = switchyard_tests::mail::wait_matching_in(&db, &f.t.email, 1, is_summary).await;
    let mail = &got[0];
    assert_eq!(
        mail.subject,
        format!("Arcade on {day}: 3.00 EUR from 1 sessions")
    );
    for line in [
        "Revenue: 3.00 EUR",
        "Sessions ended: 1",
        "Average session: 30 min",
        "Energy delivered: 0.000 kWh",
        // 1,800 busy seconds of one station's 86,400.
        "Utilisation: 2.1 % of station time in session",
        &format!("({})", zone()),
    ] {
        assert!(
            mail.text().contains(line),
            "{line:?} missing:\n{}",
            mail.text()
        );
    }
    // Delivering again, and another pass, send nothing more.
    summary::run_once(&db, tomorrow, 5_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    switchyard_tests::mail::deliver_now(&db).await;
    let all: Vec<_> = switchyard_tests::mail::received_by(&f.t.email)
        .into_iter()
        .filter(is_summary)
        .collect();
    assert_eq!(all.len(), 1, "{all:?}");
    db.pool().close().await;
}

/// The venue's books as the books view shows them: revenue, cash drawer, card clearing.
async fn books(app: &TestApp, f: &Floor) -> [i64; 3] {
    let data = app
        .gql_ok(
            &f.t.access,
            "query($v: UUID!) { venue(id: $v) { books { revenue cashDrawer cardClearing } } }",
            json!({"v": f.venue}),
        )
        .await;
    let b = &data["venue"]["books"];
    ["revenue", "cashDrawer", "cardClearing"].map(|k| b[k].as_i64().unwrap())
}

/// The same, summed from the venue's entries.
async fn entries(app: &TestApp, f: &Floor) -> [i64; 3] {
    let mut sums = [0; 3];
    for (sum, purpose) in sums.iter_mut().zip(["revenue", "cash_drawer", "clearing"]) {
        *sum = stored(
            app,
            f.t.id,
            &format!(
                "select coalesce(sum(e.amount), 0)::bigint from journal_entry e
                   join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
                  where e.tenant_id = $1 and a.owner_kind = 'venue' and a.owner_id = '{}'
                    and a.purpose = '{purpose}'",
                f.venue
            ),
        )
        .await;
    }
    sums
}

#[tokio::test]
async fn a_venues_books_equal_its_entries_whether_or_not_the_rollup_pass_has_taken_their_journals()
{
    // A database of its own: no other test's rollup pass takes this tenant's journals before the test does.
    let database = switchyard_tests::fresh_database().await;
    let app =
        switchyard_tests::spawn_app_in_with(&database, &[("DEV_PAYMENT_CONFIRM_MS", "0")]).await;
    let db = switchyard_core::Db::connect_lazy(&database.app_url, 4).unwrap();
    let f = noon_floor(&app).await;
    let ada = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, ada, 5_000, &Uuid::new_v4().to_string()).await;
    past_session(&app, &f, f.station, Some(ada), 30).await;
    past_session(&app, &f, f.station, None, 20).await;
    // A card top-up moves the clearing account only: its journal is queued for the books too.
    let shop = crate::payments::Shop {
        t: f.t.clone(),
        venue: f.venue,
        patron: ada,
    };
    let (status, paid) = crate::payments::intent(&app, &shop, 1_500, "card-1").await;
    assert_eq!(
        (status, paid["status"].as_str()),
        (StatusCode::CREATED, Some("confirmed")),
        "{paid}"
    );
    let expected = [300 + 200, -5_000 - 200, -1_500];
    assert_eq!(entries(&app, &f).await, expected);
    assert_eq!(books(&app, &f).await, expected, "all still queued");

    // Taken off the queue into the kept balances, one journal at a time: the books never move.
    // (Its own database: every one of them is still queued, none taken by another test's pass.)
    let journals = stored(
        &app,
        f.t.id,
        "select count(*) from analytics_journal_queue where tenant_id = $1",
    )
    .await;
    assert!(
        journals >= 4,
        "the cash top-up, two stops and the card top-up are queued: {journals}"
    );
    let mut kept_accounts = 0;
    while queued(&app, f.t.id).await > 0 {
        rollup::roll_up_batch(&db, TenantId(f.t.id), 1)
            .await
            .unwrap_or_else(|e| panic!("rollup: {e:?}"));
        assert_eq!(books(&app, &f).await, expected);
        kept_accounts = kept_accounts.max(
            stored(
                &app,
                f.t.id,
                "select count(*) from ledger_venue_balance where tenant_id = $1",
            )
            .await,
        );
    }
    kept_accounts = kept_accounts.max(
        stored(
            &app,
            f.t.id,
            "select count(*) from ledger_venue_balance where tenant_id = $1",
        )
        .await,
    );
    assert_eq!(
        kept_accounts, 3,
        "revenue, cash drawer and clearing are kept"
    );
    let kept = stored(
        &app,
        f.t.id,
        "select coalesce(sum(balance), 0)::bigint from ledger_venue_balance where tenant_id = $1",
    )
    .await;
    assert_eq!(kept, expected.iter().sum::<i64>());

    // The kept balances move only with the queue (a database trigger): the app role may not write them.
    let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
    let forged =
        sqlx::query("update ledger_venue_balance set balance = balance + 1 where tenant_id = $1")
            .bind(f.t.id)
            .execute(tx.conn())
            .await
            .unwrap_err();
    assert_eq!(
        forged.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{forged}"
    );
    drop(tx);

    // New money after the pass: kept plus queued again.
    past_session(&app, &f, f.station, None, 10).await;
    let expected = [600, -5_300, -1_500];
    assert_eq!(entries(&app, &f).await, expected);
    assert_eq!(books(&app, &f).await, expected);
    roll_up(&app, &db, f.t.id).await;
    assert_eq!(books(&app, &f).await, expected);

    // Another tenant's venue: not found, its books never shown.
    let other = app.signup().await;
    let body = app
        .gql(
            Some(&other.access),
            "query($v: UUID!) { venue(id: $v) { books { revenue } } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
}
