//! Sessions through REST and GraphQL: pricing, the ledger, idempotency, ticks and isolation.

use chrono::Duration;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_core::sessions;
use switchyard_core::{Db, TenantId};
use switchyard_tests::{env_url, gql_code, join_all, spawn_app, Tenant, TestApp};
use uuid::Uuid;

/// A tenant with a venue, a PC and a 10-per-minute tariff (1-minute steps) assigned to the venue.
pub(crate) struct Floor {
    pub t: Tenant,
    pub venue: Uuid,
    pub station: Uuid,
    pub tariff: Uuid,
}

pub(crate) async fn floor(app: &TestApp) -> Floor {
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "Arcade").await;
    let station = app.create_station(&t.access, venue, "PC-1").await;
    let data = app
        .gql_ok(
            &t.access,
            "mutation { createTariff(name: \"Standard\", terms: {currency: \"EUR\", perMinute: 10}) { id version } }",
            json!({}),
        )
        .await;
    let tariff: Uuid = data["createTariff"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(data["createTariff"]["version"], 1);
    app.gql_ok(
        &t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": tariff, "v": venue}),
    )
    .await;
    Floor {
        t,
        venue,
        station,
        tariff,
    }
}

/// How long after its start a session's first billing tick is due (as stored).
pub(crate) async fn first_tick_after(app: &TestApp, tenant: Uuid, session: Uuid) -> Duration {
    let (started, next): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "select started_at, next_tick_at from session where tenant_id = $1 and id = $2",
        )
        .bind(tenant)
        .bind(session)
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap();
    next - started
}

pub(crate) async fn start(
    app: &TestApp,
    token: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url("/api/v1/sessions/start"))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn patron_with_cash(app: &TestApp, f: &Floor, amount: i64) -> Uuid {
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation { createPatron(input: {displayName: \"Ada\", tier: \"gold\"}) { id } }",
            json!({}),
        )
        .await;
    let patron: Uuid = data["createPatron"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    top_up(app, f, patron, amount, &Uuid::new_v4().to_string()).await;
    patron
}

pub(crate) async fn top_up(
    app: &TestApp,
    f: &Floor,
    patron: Uuid,
    amount: i64,
    key: &str,
) -> Value {
    app.gql_ok(
        &f.t.access,
        "mutation($p: UUID!, $v: UUID!, $a: Int!, $k: String!) {
           topUpCash(patronId: $p, venueId: $v, amount: $a, idempotencyKey: $k) { wallet(currency: \"EUR\") { balance } } }",
        json!({"p": patron, "v": f.venue, "a": amount, "k": key}),
    )
    .await
}

/// A wallet session on `station` for `patron`, started through GraphQL (open-ended without `minutes`): its id.
pub(crate) async fn wallet_session(
    app: &TestApp,
    token: &str,
    station: Uuid,
    patron: Uuid,
    minutes: Option<i64>,
) -> Uuid {
    app.gql_ok(
        token,
        "mutation($s: UUID!, $p: UUID!, $m: Int) {
           startSession(input: {stationId: $s, patronId: $p, durationMinutes: $m, payment: WALLET}) { id } }",
        json!({"s": station, "p": patron, "m": minutes}),
    )
    .await["startSession"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

pub(crate) async fn wallet(app: &TestApp, token: &str, patron: Uuid) -> Value {
    let data = app
        .gql_ok(
            token,
            "query($p: UUID!) { patron(id: $p) { wallet(currency: \"EUR\") { balance debt statement { kind amount balance } } } }",
            json!({"p": patron}),
        )
        .await;
    data["patron"]["wallet"].clone()
}

/// Every journal of the tenant sums to zero, and the sum of all entries is zero.
async fn assert_ledger_balances(app: &TestApp, tenant: Uuid) {
    let unbalanced: i64 = sqlx::query_scalar(
        "select count(*) from (select journal_id from journal_entry where tenant_id = $1
                               group by journal_id, currency having sum(amount) <> 0) j",
    )
    .bind(tenant)
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap();
    assert_eq!(unbalanced, 0);
}

#[tokio::test]
async fn a_station_with_a_session_running_or_paused_is_not_archived_and_an_archived_one_starts_none(
) {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;
    top_up(&app, &f, patron, 5_000, "archive-1").await;
    let archive = "mutation($s: UUID!) { archiveStation(id: $s) { id archivedAt } }";
    let session = wallet_session(&app, &f.t.access, f.station, patron, Some(30)).await;
    let refused = app
        .gql(Some(&f.t.access), archive, json!({"s": f.station}))
        .await;
    assert_eq!(gql_code(&refused), "conflict", "{refused}");
    // Nor its venue.
    let refused = app
        .gql(
            Some(&f.t.access),
            "mutation($v: UUID!) { archiveVenue(id: $v) { id } }",
            json!({"v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&refused), "conflict", "{refused}");
    // Out of use while the session runs (no new one may start), and back in use: in session again, asked twice.
    let set = "mutation($s: UUID!, $st: StationStatus!) { updateStation(id: $s, input: {status: $st}) { status } }";
    for (to, shown) in [
        ("MAINTENANCE", "MAINTENANCE"),
        ("OFFLINE", "IN_SESSION"),
        ("OFFLINE", "IN_SESSION"),
    ] {
        let changed = app
            .gql_ok(&f.t.access, set, json!({"s": f.station, "st": to}))
            .await;
        assert_eq!(changed["updateStation"]["status"], shown, "{to}: {changed}");
    }
    app.gql_ok(
        &f.t.access,
        "mutation($s: UUID!) { pauseSession(id: $s) { status } }",
        json!({"s": session}),
    )
    .await;
    let refused = app
        .gql(Some(&f.t.access), archive, json!({"s": f.station}))
        .await;
    assert_eq!(gql_code(&refused), "conflict", "paused: {refused}");
    app.gql_ok(
        &f.t.access,
        "mutation($s: UUID!) { stopSession(id: $s) { status } }",
        json!({"s": session}),
    )
    .await;
    let archived = app
        .gql_ok(&f.t.access, archive, json!({"s": f.station}))
        .await;
    assert!(
        archived["archiveStation"]["archivedAt"].is_string(),
        "{archived}"
    );
    // Again: the same answer, archived once.
    let again = app
        .gql_ok(&f.t.access, archive, json!({"s": f.station}))
        .await;
    assert_eq!(again, archived);
    let mut tx = app.tenant_tx(f.t.id).await;
    let (audited, heard): (i64, i64) = sqlx::query_as(
        "select (select count(*) from audit_log where action = 'station.archive' and object_id = $1),
                (select count(*) from live_event where kind = 'station.archived' and station_id = $1)",
    )
    .bind(f.station)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((audited, heard), (1, 1));
    drop(tx);
    // No session starts on it, and its floor drops it.
    let body = app
        .gql(
            Some(&f.t.access),
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    assert_eq!(gql_code(&body), "conflict", "{body}");
    let (_, dashboard) = app.get("/api/v1/dashboard", &f.t.access).await;
    assert_eq!(dashboard["venues"][0]["stations"], json!([]), "{dashboard}");
    // A venue archived archives its stations each as one is archived: heard, audited.
    let other = app.create_station(&f.t.access, f.venue, "PC-2").await;
    app.gql_ok(
        &f.t.access,
        "mutation($v: UUID!) { archiveVenue(id: $v) { id } }",
        json!({"v": f.venue}),
    )
    .await;
    let mut tx = app.tenant_tx(f.t.id).await;
    let (archived, audited, heard): (bool, i64, i64) = sqlx::query_as(
        "select (select archived_at is not null from station where id = $1),
                (select count(*) from audit_log where action = 'station.archive' and object_id = $1),
                (select count(*) from live_event where kind = 'station.archived' and station_id = $1)",
    )
    .bind(other)
    .fetch_one(&mut *tx)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((archived, audited, heard), (true, 1, 1));
}

#[tokio::test]
async fn a_walk_in_cash_session_is_prepaid_extended_stopped_and_leaves_a_balanced_ledger() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (status, started) = start(
        &app,
        &f.t.access,
        Some("walk-in-1"),
        json!({"station_id": f.station, "duration_minutes": 60, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["status"], "active");
    assert_eq!(started["duration_minutes"], 60);
    assert_eq!(started["currency"], "EUR");
    assert_eq!(started["tariff_version"], 1);
    assert!(started["remaining_seconds"].as_i64().unwrap() > 3590);
    let id = started["session_id"].as_str().unwrap().to_owned();
    let patron: Uuid = started["patron_id"].as_str().unwrap().parse().unwrap();

    // The cash for 60 minutes at 10 went into the walk-in's wallet.
    let w = wallet(&app, &f.t.access, patron).await;
    assert_eq!(w["balance"], 600);
    assert_eq!(
        w["statement"],
        json!([{"kind": "top_up_cash", "amount": 600, "balance": 600}])
    );
    let station = app
        .gql_ok(
            &f.t.access,
            "query($s: UUID!) { station(id: $s) { status } }",
            json!({"s": f.station}),
        )
        .await;
    assert_eq!(station["station"]["status"], "IN_SESSION");

    // Extending needs money for the longer plan.
    let (status, body) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{id}/extend"),
            Some(&f.t.access),
            Some(json!({"minutes": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_funds");
    top_up(&app, &f, patron, 300, "more-cash").await;
    let (status, extended) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{id}/extend"),
            Some(&f.t.access),
            Some(json!({"minutes": 30})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{extended}");
    assert_eq!(extended["duration_minutes"], 90);

    // The dashboard shows the station busy with its remaining time and running cost.
    let (status, dash) = app
        .get(
            &format!("/api/v1/dashboard?venue_id={}", f.venue),
            &f.t.access,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let venue = &dash["venues"][0];
    assert_eq!(venue["busy"], 1);
    let tile = &venue["stations"][0];
    assert_eq!(tile["station_id"], f.station.to_string());
    assert_eq!(tile["status"], "in_session");
    assert_eq!(tile["session"]["session_id"], id.as_str());
    assert_eq!(
        tile["session"]["running_cost"], 10,
        "the first started minute"
    );
    assert!(
        tile["session"]["remaining_seconds"].as_i64().unwrap() > 5_300,
        "90 planned minutes"
    );

    // A second session on the same station is refused.
    let (status, body) = start(
        &app,
        &f.t.access,
        Some("walk-in-2"),
        json!({"station_id": f.station, "duration_minutes": 5, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"]["message"],
        "this station already has a running session"
    );

    // Stopping after a moment bills one started minute: 10.
    let (status, stopped) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    assert_eq!(stopped["status"], "ended");
    assert_eq!(stopped["charged_amount"], 10);
    assert_eq!(stopped["total_amount"], 10);
    assert_eq!(stopped["cost_lines"][0]["kind"], "time");
    let (_, again) = app
        .send(
            Method::DELETE,
            &format!("/api/v1/sessions/{id}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(again["charged_amount"], 10, "stopping twice charges once");
    assert_eq!(again["ended_at"], stopped["ended_at"]);

    let w = wallet(&app, &f.t.access, patron).await;
    assert_eq!(w["balance"], 890);
    assert_eq!(w["debt"], 0);
    let revenue: i64 = sqlx::query_scalar(
        "select coalesce(sum(e.amount), 0)::bigint from journal_entry e join ledger_account a
           on a.tenant_id = e.tenant_id and a.id = e.account_id
         where a.tenant_id = $1 and a.owner_id = $2 and a.purpose = 'revenue'",
    )
    .bind(f.t.id)
    .bind(f.venue)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(revenue, 10);
    assert_ledger_balances(&app, f.t.id).await;

    let commands = app
        .gql_ok(
            &f.t.access,
            "query($s: UUID!) { deviceCommands(stationId: $s) { command } }",
            json!({"s": f.station}),
        )
        .await;
    let commands: Vec<&str> = commands["deviceCommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["switch_on", "extend", "switch_off"]);
    let station = app
        .gql_ok(
            &f.t.access,
            "query($s: UUID!) { station(id: $s) { status } }",
            json!({"s": f.station}),
        )
        .await;
    // Out of its session it is offline: no bridge reaches its PC agent.
    assert_eq!(station["station"]["status"], "OFFLINE");
}

#[tokio::test]
async fn twenty_concurrent_duplicate_starts_make_one_session_and_twenty_identical_answers() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 10_000).await;
    let body = json!({"station_id": f.station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"});
    let answers = join_all(
        (0..20)
            .map(|_| start(&app, &f.t.access, Some("same-key"), body.clone()))
            .collect(),
    )
    .await;
    let first = &answers[0];
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::CREATED);
        assert_eq!(answer["session_id"], first.1["session_id"]);
        assert_eq!(answer["started_at"], first.1["started_at"]);
    }
    let count: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = $1")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let commands: i64 =
        sqlx::query_scalar("select count(*) from device_command where tenant_id = $1")
            .bind(f.t.id)
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_eq!(commands, 1, "one switch_on");

    let mut other = body.clone();
    other["duration_minutes"] = json!(45);
    let (status, answer) = start(&app, &f.t.access, Some("same-key"), other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["error"]["code"], "idempotency_key_reused");
    let (status, answer) = start(&app, &f.t.access, None, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "idempotency_key_required");
}

#[tokio::test]
async fn ticks_charge_the_running_price_and_add_up_to_the_final_price() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 1_000).await;
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id status plannedEndAt } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    assert_eq!(
        data["startSession"]["plannedEndAt"],
        Value::Null,
        "open-ended"
    );
    let id: Uuid = data["startSession"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 2).unwrap();
    let tick = Duration::seconds(30);
    let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
    let started = sessions::get(&mut tx, id).await.unwrap().started_at;
    drop(tx);
    let mut charged = 0;
    // Ticks at irregular times, as workers that were late or restarted would run them.
    for minutes in [0.4, 1.2, 5.0, 5.1, 29.9, 61.0] {
        let at = started + Duration::milliseconds((minutes * 60_000.0) as i64);
        let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
        charged += sessions::bill_tick(&mut tx, id, at, tick).await.unwrap();
        tx.commit().await.unwrap();
    }
    // 61 minutes at 10 (gold tier has no discount in this tariff).
    assert_eq!(charged, 610);
    let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
    let stopped = sessions::stop(&mut tx, None, id, started + Duration::seconds(61 * 60 + 50))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        stopped.charged_amount, 620,
        "the stop settles the last started minute"
    );
    assert_eq!(stopped.ticks, 6);
    let journals: Vec<(String, i64)> = sqlx::query_as(
        "select j.idempotency_key, sum(e.amount) filter (where e.amount > 0)::bigint from journal j
         join journal_entry e on e.tenant_id = j.tenant_id and e.journal_id = j.id
         where j.tenant_id = $1 and j.session_id = $2 group by j.idempotency_key, j.created_at order by j.created_at",
    )
    .bind(f.t.id)
    .bind(id)
    .fetch_all(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    let labels: Vec<&str> = journals
        .iter()
        .map(|(k, _)| k.rsplit_once(':').map_or("", |(_, l)| l))
        .collect();
    assert_eq!(journals.iter().map(|(_, a)| a).sum::<i64>(), 620);
    assert_eq!(
        labels,
        ["1", "2", "3", "4", "5", "6", "final"],
        "one journal per tick, then the final settlement"
    );
    assert_eq!(
        wallet(&app, &f.t.access, patron).await["balance"],
        1_000 - 620
    );
    assert_ledger_balances(&app, f.t.id).await;
}

#[tokio::test]
async fn a_session_keeps_its_tariff_version_and_charges_beyond_the_wallet_become_debt() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 50).await;
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id tariffVersion } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    let id: Uuid = data["startSession"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let updated = app
        .gql_ok(
            &f.t.access,
            "mutation($t: UUID!) { updateTariff(id: $t, terms: {currency: \"EUR\", perMinute: 99}) { version terms { perMinute } } }",
            json!({"t": f.tariff}),
        )
        .await;
    assert_eq!(
        updated["updateTariff"],
        json!({"version": 2, "terms": {"perMinute": 99}})
    );

    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
    let started = sessions::get(&mut tx, id).await.unwrap().started_at;
    let stopped = sessions::stop(&mut tx, None, id, started + Duration::minutes(8))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stopped.tariff_version, 1);
    assert_eq!(
        stopped.charged_amount, 80,
        "8 minutes at version 1's 10, not 99"
    );
    let w = wallet(&app, &f.t.access, patron).await;
    assert_eq!(w["balance"], 0);
    assert_eq!(w["debt"], 30);
    assert_ledger_balances(&app, f.t.id).await;
}

/// Two managers edit the same tariff from what their forms showed: the second, made from a version that is no longer
/// current, is refused and changes nothing, so the first one's terms are not lost; at once, exactly one wins.
#[tokio::test]
async fn an_edit_made_from_an_older_version_of_a_tariff_is_refused_and_loses_no_change() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let update = "mutation($t: UUID!, $m: Int!, $v: Int) {
        updateTariff(id: $t, terms: {currency: \"EUR\", perMinute: $m}, expectedVersion: $v) { version terms { perMinute } } }";
    let first = app
        .gql_ok(&f.t.access, update, json!({"t": f.tariff, "m": 12, "v": 1}))
        .await;
    assert_eq!(
        first["updateTariff"],
        json!({"version": 2, "terms": {"perMinute": 12}})
    );
    let late = app
        .gql(
            Some(&f.t.access),
            update,
            json!({"t": f.tariff, "m": 15, "v": 1}),
        )
        .await;
    assert_eq!(gql_code(&late), "conflict", "{late}");
    let message = late["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("changed meanwhile") && message.contains("version 2"),
        "{message}"
    );
    // A rename made from the old version is refused too; nothing was written by either.
    let renamed = app
        .gql(
            Some(&f.t.access),
            "mutation($t: UUID!) { updateTariff(id: $t, name: \"Late\", expectedVersion: 1) { name } }",
            json!({"t": f.tariff}),
        )
        .await;
    assert_eq!(gql_code(&renamed), "conflict", "{renamed}");
    let (name, version, versions, audited): (String, i32, i64, i64) = sqlx::query_as(
        "select t.name, t.current_version,
                (select count(*) from tariff_version v where v.tenant_id = t.tenant_id and v.tariff_id = t.id),
                (select count(*) from audit_log a where a.tenant_id = t.tenant_id and a.object_id = t.id
                   and a.action = 'tariff.update')
           from tariff t where t.tenant_id = $1 and t.id = $2",
    )
    .bind(f.t.id)
    .bind(f.tariff)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), version, versions, audited),
        ("Standard", 2, 2, 1)
    );

    // Made from the current version, it goes through; without an expected version, as before, it always does.
    let current = app
        .gql_ok(&f.t.access, update, json!({"t": f.tariff, "m": 15, "v": 2}))
        .await;
    assert_eq!(current["updateTariff"]["version"], 3);
    let blind = app
        .gql_ok(
            &f.t.access,
            update,
            json!({"t": f.tariff, "m": 16, "v": null}),
        )
        .await;
    assert_eq!(blind["updateTariff"]["version"], 4);

    // Two edits from version 4 at once: one is version 5, the other refused.
    let (a, b) = tokio::join!(
        app.gql(
            Some(&f.t.access),
            update,
            json!({"t": f.tariff, "m": 20, "v": 4})
        ),
        app.gql(
            Some(&f.t.access),
            update,
            json!({"t": f.tariff, "m": 21, "v": 4})
        ),
    );
    let mut outcomes = [a, b]
        .iter()
        .map(|r| match r["data"]["updateTariff"]["version"].as_i64() {
            Some(v) => format!("version {v}"),
            None => gql_code(r).to_owned(),
        })
        .collect::<Vec<_>>();
    outcomes.sort();
    assert_eq!(outcomes, ["conflict", "version 5"]);
    let versions: i64 = sqlx::query_scalar(
        "select count(*) from tariff_version where tenant_id = $1 and tariff_id = $2",
    )
    .bind(f.t.id)
    .bind(f.tariff)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(versions, 5);
}

/// A venue bills in its own currency: a tariff in another is not assigned to it, and an assigned tariff keeps the
/// venue's currency. Before, both were taken and every start at the venue failed ("fix the tariff"); a rental was
/// even priced in the tariff's currency and booked in the venue's.
#[tokio::test]
async fn a_tariff_in_another_currency_than_its_venues_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let usd = app
        .create_tariff(&f.t.access, "Dollars", "currency: \"USD\", perMinute: 10")
        .await;
    let assign = app
        .gql(
            Some(&f.t.access),
            "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
            json!({"t": usd, "v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&assign), "validation_failed", "{assign}");
    assert_eq!(
        (
            &assign["errors"][0]["extensions"]["field"],
            &assign["errors"][0]["message"]
        ),
        (
            &json!("tariffId"),
            &json!("tariffId: this tariff bills in USD but the venue bills in EUR: assign a tariff in EUR")
        ),
        "{assign}"
    );
    let changed = app
        .gql(
            Some(&f.t.access),
            "mutation($t: UUID!) { updateTariff(id: $t, terms: {currency: \"USD\", perMinute: 10}) { version } }",
            json!({"t": f.tariff}),
        )
        .await;
    assert_eq!(gql_code(&changed), "validation_failed", "{changed}");
    assert_eq!(
        changed["errors"][0]["extensions"]["field"], "currency",
        "{changed}"
    );
    let (assigned, version, currency): (i64, i32, String) = sqlx::query_as(
        "select (select count(*) from tariff_assignment where tenant_id = $1 and tariff_id = $2),
                t.current_version, v.terms->>'currency'
           from tariff t join tariff_version v on v.tenant_id = t.tenant_id and v.tariff_id = t.id
                and v.version = t.current_version
          where t.tenant_id = $1 and t.id = $3",
    )
    .bind(f.t.id)
    .bind(usd)
    .bind(f.tariff)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((assigned, version, currency.as_str()), (0, 1, "EUR"));
    // The same tariff's other terms still change.
    let fine = app
        .gql_ok(
            &f.t.access,
            "mutation($t: UUID!) { updateTariff(id: $t, terms: {currency: \"EUR\", perMinute: 11}) { version } }",
            json!({"t": f.tariff}),
        )
        .await;
    assert_eq!(fine["updateTariff"]["version"], 2);
}

#[tokio::test]
async fn a_manager_of_one_venue_changes_only_a_tariff_that_prices_no_other_venue() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let hall = app.create_venue(&f.t.access, "Hall").await;
    let (user, manager) = app.add_member(&f.t, "MANAGER").await;
    app.gql_ok(
        &f.t.access,
        "mutation($u: UUID!, $v: [UUID!]) { setMemberVenues(userId: $u, venueIds: $v) { userId } }",
        json!({"u": user, "v": [hall]}),
    )
    .await;
    let update = "mutation($t: UUID!) { updateTariff(id: $t, terms: {currency: \"EUR\", perMinute: 12}) { version } }";
    // The floor's tariff prices the Arcade, which this manager does not manage, even once it prices the Hall too.
    app.gql_ok(
        &f.t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": f.tariff, "v": hall}),
    )
    .await;
    let refused = app
        .gql(Some(&manager), update, json!({"t": f.tariff}))
        .await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    let kept = app
        .gql_ok(
            &f.t.access,
            "query($t: UUID!) { tariff(id: $t) { version } }",
            json!({"t": f.tariff}),
        )
        .await;
    assert_eq!(kept["tariff"]["version"], 1);
    // A tariff of the Hall's alone is the manager's to change; the owner changes any.
    let own = app
        .gql_ok(
            &manager,
            "mutation { createTariff(name: \"Hall\", terms: {currency: \"EUR\", perMinute: 10}) { id } }",
            json!({}),
        )
        .await["createTariff"]["id"]
        .clone();
    app.gql_ok(
        &manager,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": own, "v": hall}),
    )
    .await;
    let changed = app.gql_ok(&manager, update, json!({"t": own})).await;
    assert_eq!(changed["updateTariff"]["version"], 2);
    // A tariff created and applied in one request: applied to a venue the manager does not manage, nothing is
    // created; applied to the Hall's PCs, it prices them.
    let create = "mutation($v: UUID!) { createTariff(name: \"PCs\", terms: {currency: \"EUR\", perMinute: 7},
                    applyTo: {venueId: $v, stationKind: PC}) { id } }";
    let refused = app.gql(Some(&manager), create, json!({"v": f.venue})).await;
    assert_eq!(gql_code(&refused), "not_found", "{refused}");
    let names = app
        .gql_ok(&f.t.access, "{ tariffs { name } }", json!({}))
        .await;
    assert!(!names.to_string().contains("\"PCs\""), "{names}");
    app.gql_ok(&manager, create, json!({"v": hall})).await;
    let prices = app
        .gql_ok(
            &manager,
            "query($v: UUID!) { venue(id: $v) { prices { stationKind tariff { name } } } }",
            json!({"v": hall}),
        )
        .await;
    assert_eq!(
        prices["venue"]["prices"],
        json!([
            {"stationKind": null, "tariff": {"name": "Hall"}},
            {"stationKind": "PC", "tariff": {"name": "PCs"}},
        ]),
        "{prices}"
    );
    let changed = app
        .gql_ok(&f.t.access, update, json!({"t": f.tariff}))
        .await;
    assert_eq!(changed["updateTariff"]["version"], 2);
}

#[tokio::test]
async fn a_bridge_reported_end_gives_back_what_was_charged_past_it_once_under_retries_and_concurrency(
) {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 30).await;
    let id = wallet_session(&app, &f.t.access, f.station, patron, None).await;
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 6).unwrap();
    let tenant = TenantId(f.t.id);
    // The cloud bills ten minutes (30 from the wallet, 70 as debt) while the bridge had already switched the
    // station off, by its own timer, right at the start.
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    let started = sessions::get(&mut tx, id).await.unwrap().started_at;
    let billed = sessions::bill_tick(
        &mut tx,
        id,
        started + Duration::minutes(10),
        Duration::seconds(30),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(billed, 100);
    let w = wallet(&app, &f.t.access, patron).await;
    assert_eq!(
        (w["balance"].as_i64(), w["debt"].as_i64()),
        (Some(0), Some(70))
    );
    // (A moment after the start, already past: a report from the future is taken as now.)
    let off_at = started + Duration::milliseconds(1);

    // The report arrives five times at once, and once more later.
    let report = || {
        let db = db.clone();
        async move {
            let mut tx = db.begin_tenant(tenant).await.unwrap();
            let s = sessions::switched_off(&mut tx, f.station, Some(id), off_at, true)
                .await
                .unwrap()
                .unwrap();
            tx.commit().await.unwrap();
            s
        }
    };
    let answers = futures_util::future::join_all((0..5).map(|_| report())).await;
    let again = report().await;
    for s in answers.iter().chain([&again]) {
        assert_eq!(s.status, sessions::SessionStatus::Expired);
        assert_eq!(
            (s.ended_at, s.switched_off_at),
            (Some(off_at), Some(off_at))
        );
        assert_eq!(s.charged_amount, 10, "one started minute");
    }
    // 90 charged past the end goes back: the 70 of debt first, then 20 to the wallet; once.
    let w = wallet(&app, &f.t.access, patron).await;
    assert_eq!(
        (w["balance"].as_i64(), w["debt"].as_i64()),
        (Some(20), Some(0)),
        "{w}"
    );
    let corrections: i64 = sqlx::query_scalar(
        "select count(*) from journal where tenant_id = $1 and session_id = $2 and kind = 'session_correction'",
    )
    .bind(f.t.id)
    .bind(id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(corrections, 1);
    assert_ledger_balances(&app, f.t.id).await;

    // A later switch-off that is not the bridge's timer (the cloud's own stop, a pause) changes no bill.
    let f2 = floor(&app).await;
    let other = patron_with_cash(&app, &f2, 100).await;
    let running = wallet_session(&app, &f2.t.access, f2.station, other, None).await;
    let mut tx = db.begin_tenant(TenantId(f2.t.id)).await.unwrap();
    let s = sessions::switched_off(
        &mut tx,
        f2.station,
        Some(running),
        chrono::Utc::now(),
        false,
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (s.status, s.ended_at, s.switched_off_at),
        (sessions::SessionStatus::Active, None, None)
    );
    // Another tenant's station and session are not found by a report.
    let mut tx = db.begin_tenant(TenantId(f2.t.id)).await.unwrap();
    let none = sessions::switched_off(&mut tx, f.station, Some(id), off_at, true)
        .await
        .unwrap();
    assert!(none.is_none());
}

#[tokio::test]
async fn starting_needs_a_tariff_money_and_a_free_station() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let venue = app.create_venue(&t.access, "No tariff yet").await;
    let station = app.create_station(&t.access, venue, "PC").await;
    let (status, body) = start(
        &app,
        &t.access,
        Some("k1"),
        json!({"station_id": station, "duration_minutes": 10, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no tariff applies"),
        "{body}"
    );

    let f = floor(&app).await;
    let broke = patron_with_cash(&app, &f, 5).await;
    let (status, body) = start(
        &app,
        &f.t.access,
        Some("k2"),
        json!({"station_id": f.station, "patron_id": broke, "duration_minutes": 10, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(
        body["error"]["message"],
        "the wallet holds 0.05 but needs 1.00 for the planned time; top it up first"
    );
    let (status, body) = start(
        &app,
        &f.t.access,
        Some("k3"),
        json!({"station_id": f.station, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "patronId");
    let (status, body) = start(
        &app,
        &f.t.access,
        Some("k4"),
        json!({"station_id": f.station, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "durationMinutes");
    let (status, body) = start(
        &app,
        &f.t.access,
        Some("k5"),
        json!({"station_id": f.station, "payment": "bitcoin"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown variant `bitcoin`"),
        "{body}"
    );
    let count: i64 = sqlx::query_scalar("select count(*) from session where tenant_id = $1")
        .bind(f.t.id)
        .fetch_one(&mut *app.tenant_tx(f.t.id).await)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing started");
}

/// The tariff a start applies: the station's own, else its kind's at the venue, else the venue's; an archived one
/// gives way to the next.
#[tokio::test]
async fn the_most_specific_tariff_applies_and_an_archived_one_gives_way() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let pc2 = app.create_station(&f.t.access, f.venue, "PC-2").await;
    let console = app
        .gql_ok(
            &f.t.access,
            "mutation($v: UUID!) { createStation(input: {venueId: $v, name: \"PS5\", kind: CONSOLE, control: AGENT}) { id } }",
            json!({"v": f.venue}),
        )
        .await["createStation"]["id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let pcs = app
        .create_tariff(&f.t.access, "PCs", "currency: \"EUR\", perMinute: 20")
        .await;
    let own = app
        .create_tariff(
            &f.t.access,
            "PC-1 alone",
            "currency: \"EUR\", perMinute: 30",
        )
        .await;
    for input in [
        json!({"tariffId": pcs, "venueId": f.venue, "stationKind": "PC"}),
        json!({"tariffId": own, "venueId": f.venue, "stationId": f.station}),
    ] {
        app.gql_ok(
            &f.t.access,
            "mutation($i: AssignTariffInput!) { assignTariff(input: $i) { id } }",
            json!({"i": input}),
        )
        .await;
    }
    let patron = patron_with_cash(&app, &f, 10_000).await;
    // Each start's tariff, and what its stop a moment later charged (the first minute, by that tariff).
    let started = |station: Uuid| {
        let (app, token) = (&app, f.t.access.clone());
        async move {
            let id = wallet_session(app, &token, station, patron, Some(10)).await;
            let stopped = app
                .gql_ok(
                    &token,
                    "mutation($id: UUID!) { stopSession(id: $id) { tariffId chargedAmount } }",
                    json!({"id": id}),
                )
                .await;
            (
                stopped["stopSession"]["tariffId"]
                    .as_str()
                    .unwrap()
                    .parse::<Uuid>()
                    .unwrap(),
                stopped["stopSession"]["chargedAmount"].clone(),
            )
        }
    };
    assert_eq!(
        started(f.station).await,
        (own, json!(30)),
        "the station's own"
    );
    assert_eq!(
        started(pc2).await,
        (pcs, json!(20)),
        "its kind's at the venue"
    );
    assert_eq!(started(console).await, (f.tariff, json!(10)), "the venue's");
    // Archived (no API archives a tariff yet; its column is what the rule reads): the next one applies.
    let mut tx = app.tenant_tx(f.t.id).await;
    sqlx::query("update tariff set archived_at = now() where tenant_id = $1 and id = $2")
        .bind(f.t.id)
        .bind(own)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        started(f.station).await,
        (pcs, json!(20)),
        "the kind's, once the station's own is archived"
    );
}

#[tokio::test]
async fn cash_top_ups_count_once_per_key() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 100).await;
    for _ in 0..3 {
        top_up(&app, &f, patron, 250, "drawer-receipt-17").await;
    }
    assert_eq!(wallet(&app, &f.t.access, patron).await["balance"], 350);
    let bad = app
        .gql(
            Some(&f.t.access),
            "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: -5, idempotencyKey: \"x\") { id } }",
            json!({"p": patron, "v": f.venue}),
        )
        .await;
    assert_eq!(gql_code(&bad), "validation_failed");
    assert_eq!(bad["errors"][0]["extensions"]["field"], "amount");
}

#[tokio::test]
async fn another_tenants_tariffs_patrons_and_sessions_are_not_found() {
    let app = spawn_app().await;
    let a = floor(&app).await;
    let b = floor(&app).await;
    let a_patron = patron_with_cash(&app, &a, 1_000).await;
    let (_, started) = start(
        &app,
        &a.t.access,
        Some("a-start"),
        json!({"station_id": a.station, "patron_id": a_patron, "duration_minutes": 10, "payment": "wallet"}),
    )
    .await;
    let a_session = started["session_id"].as_str().unwrap().to_owned();
    let before = wallet(&app, &a.t.access, a_patron).await;

    let cases: Vec<(&str, Value)> = vec![
        ("query($id: UUID!) { session(id: $id) { id } }", json!({"id": a_session})),
        ("mutation($id: UUID!) { stopSession(id: $id) { id } }", json!({"id": a_session})),
        ("mutation($id: UUID!) { extendSession(id: $id, minutes: 5) { id } }", json!({"id": a_session})),
        ("query($id: UUID!) { patron(id: $id) { id } }", json!({"id": a_patron})),
        ("query($id: UUID!) { tariff(id: $id) { id } }", json!({"id": a.tariff})),
        ("mutation($id: UUID!) { updateTariff(id: $id, name: \"x\") { id } }", json!({"id": a.tariff})),
        ("mutation($id: UUID!) { setPatronTier(id: $id, tier: \"vip\") { id } }", json!({"id": a_patron})),
        ("mutation($id: UUID!) { addRfidTag(patronId: $id, uid: \"ABCD1234\") { id } }", json!({"id": a_patron})),
        ("query($id: UUID!) { deviceCommands(stationId: $id) { id } }", json!({"id": a.station})),
        (
            "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 5, idempotencyKey: \"b\") { id } }",
            json!({"p": a_patron, "v": b.venue}),
        ),
        (
            "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
            json!({"t": a.tariff, "v": b.venue}),
        ),
        (
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id } }",
            json!({"s": b.station, "p": a_patron}),
        ),
    ];
    for (query, variables) in cases {
        let body = app.gql(Some(&b.t.access), query, variables).await;
        assert_eq!(gql_code(&body), "not_found", "{query} -> {body}");
    }
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = app
            .send(
                method,
                &format!("/api/v1/sessions/{a_session}"),
                Some(&b.t.access),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, _) = app
        .send(
            Method::PUT,
            &format!("/api/v1/sessions/{a_session}/extend"),
            Some(&b.t.access),
            Some(json!({"minutes": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = start(
        &app,
        &b.t.access,
        Some("b-start"),
        json!({"station_id": a.station, "duration_minutes": 5, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let lists = app
        .gql_ok(
            &b.t.access,
            "{ sessions { id } patrons { id } tariffs { id } }",
            json!({}),
        )
        .await;
    assert_eq!(lists["sessions"], json!([]));
    assert_eq!(lists["patrons"], json!([]));
    assert_eq!(
        lists["tariffs"].as_array().unwrap().len(),
        1,
        "only B's own tariff"
    );
    assert_eq!(
        wallet(&app, &a.t.access, a_patron).await,
        before,
        "A's wallet unchanged"
    );
    let (_, still) = app
        .get(&format!("/api/v1/sessions/{a_session}"), &a.t.access)
        .await;
    assert_eq!(still["status"], "active");
    // A's tariff, tier and tags are as A left them.
    let a_view = app
        .gql_ok(
            &a.t.access,
            "query($t: UUID!, $p: UUID!) { tariff(id: $t) { name } patron(id: $p) { tier rfidTags } }",
            json!({"t": a.tariff, "p": a_patron}),
        )
        .await;
    assert_eq!(
        a_view,
        json!({"tariff": {"name": "Standard"}, "patron": {"tier": "gold", "rfidTags": []}})
    );
}

#[tokio::test]
async fn timed_sessions_are_warned_at_five_and_one_minute_and_end_on_time() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 1_000).await;
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, durationMinutes: 10, payment: WALLET}) { id } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    let id: Uuid = data["startSession"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 1).unwrap();
    let tick = Duration::seconds(30);
    let tenant = TenantId(f.t.id);
    let next_tick = |db: Db| async move {
        let mut tx = db.begin_tenant(tenant).await.unwrap();
        let next: Option<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar("select next_tick_at from session where id = $1")
                .bind(id)
                .fetch_one(tx.conn())
                .await
                .unwrap();
        next
    };
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    let started = sessions::get(&mut tx, id).await.unwrap().started_at;
    let end = started + Duration::minutes(10);
    tx.commit().await.unwrap();
    // Ticking at 4:45, the next tick is due exactly at the 5-minute warning.
    let mut tx = db.begin_tenant(tenant).await.unwrap();
    sessions::bill_tick(&mut tx, id, started + Duration::seconds(285), tick)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        next_tick(db.clone()).await,
        Some(end - Duration::minutes(5))
    );
    for at in [
        end - Duration::minutes(5),
        end - Duration::seconds(90),
        end - Duration::minutes(1),
        end,
    ] {
        let mut tx = db.begin_tenant(tenant).await.unwrap();
        sessions::bill_tick(&mut tx, id, at, tick).await.unwrap();
        tx.commit().await.unwrap();
    }
    let commands = app
        .gql_ok(
            &f.t.access,
            "query($s: UUID!) { deviceCommands(stationId: $s) { command payload } }",
            json!({"s": f.station}),
        )
        .await;
    let seen: Vec<(String, Value)> = commands["deviceCommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["command"].as_str().unwrap().to_owned(),
                c["payload"]["minutes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("switch_on".to_owned(), Value::Null),
            ("warn".to_owned(), json!(5)),
            ("warn".to_owned(), json!(1)),
            ("switch_off".to_owned(), Value::Null)
        ]
    );
    let (_, ended) = app
        .get(&format!("/api/v1/sessions/{id}"), &f.t.access)
        .await;
    assert_eq!(ended["status"], "expired");
    assert_eq!(
        ended["ended_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        end
    );
    assert_eq!(
        ended["charged_amount"], 100,
        "exactly the 10 planned minutes"
    );
}

#[tokio::test]
async fn an_owner_can_override_the_billing_tick_for_the_tenant() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (_, manager) = app.add_member(&f.t, "MANAGER").await;
    let body = app
        .gql(
            Some(&manager),
            "mutation { setBillingTick(seconds: 5) { billingTickSec } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");
    let body = app
        .gql(
            Some(&f.t.access),
            "mutation { setBillingTick(seconds: 0) { billingTickSec } }",
            json!({}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "seconds");
    let set = app
        .gql_ok(
            &f.t.access,
            "mutation { setBillingTick(seconds: 5) { billingTickSec } }",
            json!({}),
        )
        .await;
    assert_eq!(set["setBillingTick"]["billingTickSec"], 5);

    let patron = patron_with_cash(&app, &f, 1_000).await;
    let data = app
        .gql_ok(
            &f.t.access,
            "mutation($s: UUID!, $p: UUID!) { startSession(input: {stationId: $s, patronId: $p, payment: WALLET}) { id startedAt } }",
            json!({"s": f.station, "p": patron}),
        )
        .await;
    let id: Uuid = data["startSession"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        first_tick_after(&app, f.t.id, id).await,
        Duration::seconds(5),
        "the first tick follows the tenant's own interval"
    );
    let cleared = app
        .gql_ok(
            &f.t.access,
            "mutation { setBillingTick(seconds: null) { billingTickSec } }",
            json!({}),
        )
        .await;
    assert_eq!(cleared["setBillingTick"]["billingTickSec"], Value::Null);
}

#[tokio::test]
async fn a_paused_session_is_not_billed_its_end_moves_and_its_station_switches_off_and_on() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 1_000).await;
    let (status, s) = start(
        &app,
        &f.t.access,
        Some("pause-1"),
        json!({"station_id": f.station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id: Uuid = s["session_id"].as_str().unwrap().parse().unwrap();

    // Through GraphQL, now: pause freezes the remaining time and switches the station off; resume switches it on.
    const PAUSE: &str =
        "mutation($id: UUID!) { pauseSession(id: $id) { status pausedAt remainingSeconds } }";
    const RESUME: &str =
        "mutation($id: UUID!) { resumeSession(id: $id) { status pausedAt pauses { from to } } }";
    let paused = app.gql_ok(&f.t.access, PAUSE, json!({"id": id})).await["pauseSession"].clone();
    assert_eq!(paused["status"], "PAUSED");
    assert!(paused["pausedAt"].is_string());
    let remaining = paused["remainingSeconds"].as_i64().unwrap();
    assert!((1790..=1800).contains(&remaining), "{remaining}");
    let again = app.gql_ok(&f.t.access, PAUSE, json!({"id": id})).await["pauseSession"].clone();
    assert_eq!(again, paused, "pausing twice changes nothing");
    let resumed = app.gql_ok(&f.t.access, RESUME, json!({"id": id})).await["resumeSession"].clone();
    assert_eq!(resumed["status"], "ACTIVE");
    assert_eq!(resumed["pauses"].as_array().unwrap().len(), 1);
    let commands = app
        .gql_ok(
            &f.t.access,
            "query($s: UUID!) { deviceCommands(stationId: $s) { command } }",
            json!({"s": f.station}),
        )
        .await["deviceCommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(commands, ["switch_on", "pause", "resume"]);
    // Another tenant cannot pause it.
    let other = app.signup().await;
    let body = app.gql(Some(&other.access), PAUSE, json!({"id": id})).await;
    assert_eq!(gql_code(&body), "not_found");

    // With explicit times: paused from minute 5 to minute 15, the ten paused minutes are not billed and the
    // planned end moves from minute 30 to minute 40.
    let db = Db::connect_lazy(&env_url("TEST_APP_DATABASE_URL"), 2).unwrap();
    let actor = switchyard_core::Actor {
        tenant: TenantId(f.t.id),
        user_id: Uuid::nil(),
        role: switchyard_core::Role::Owner,
        request_id: None,
        venues: None,
        client: Default::default(),
    };
    let tick = Duration::seconds(30);
    let mut tx = db.begin_tenant(TenantId(f.t.id)).await.unwrap();
    let session = sessions::get(&mut tx, id).await.unwrap();
    let (started, end) = (session.started_at, session.planned_end_at.unwrap());
    let p = sessions::pause(&mut tx, &actor, id, started + Duration::minutes(5))
        .await
        .unwrap();
    // Billing steps round up per active interval: the first (real, milliseconds-long) interval before the GraphQL
    // pause started a minute (10); minutes 0 to 5 after it are five more (50); both are charged at the pause.
    assert_eq!(p.charged_amount, 60);
    assert_eq!(
        sessions::bill_tick(&mut tx, id, started + Duration::minutes(12), tick)
            .await
            .unwrap(),
        0,
        "a paused session is not billed"
    );
    let r = sessions::resume(&mut tx, &actor, id, started + Duration::minutes(15), tick)
        .await
        .unwrap();
    assert_eq!(r.planned_end_at, Some(end + Duration::minutes(10)));
    assert_eq!(r.pauses.len(), 2);
    assert_eq!(
        sessions::bill_tick(&mut tx, id, started + Duration::minutes(20), tick)
            .await
            .unwrap(),
        50,
        "minutes 15 to 20 are billed, 5 to 15 are not"
    );
    let stopped = sessions::stop(&mut tx, None, id, started + Duration::minutes(25))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The started minute, five minutes, then minutes 15 to 25; neither pause is billed.
    assert_eq!(stopped.charged_amount, 160);
    assert_eq!(stopped.pauses.len(), 2);
    assert_eq!(
        wallet(&app, &f.t.access, patron).await["balance"],
        1_000 - 160
    );
    let body = app.gql(Some(&f.t.access), PAUSE, json!({"id": id})).await;
    assert_eq!(gql_code(&body), "conflict", "an ended session cannot pause");

    // The venue's books: the revenue earned, the cash taken in.
    const BOOKS: &str =
        "query($v: UUID!) { venue(id: $v) { books { currency revenue cashDrawer cardClearing } } }";
    let books = app.gql_ok(&f.t.access, BOOKS, json!({"v": f.venue})).await;
    assert_eq!(
        books["venue"]["books"],
        json!({"currency": "EUR", "revenue": 160, "cashDrawer": -1000, "cardClearing": 0})
    );
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let body = app.gql(Some(&staff), BOOKS, json!({"v": f.venue})).await;
    assert_eq!(
        gql_code(&body),
        "forbidden",
        "the books are for owners and managers"
    );
}

#[tokio::test]
async fn a_sessions_detail_shows_its_payment_ledger_and_device_commands_and_lists_filter_by_venue_and_period(
) {
    const DETAIL: &str = "query($id: UUID!) { session(id: $id) { paymentMethod chargedAmount
        ledgerEntries { journalId kind ownerKind purpose amount currency } deviceCommands { command sessionId } } }";
    const LIST: &str = "query($v: UUID, $f: DateTime, $t: DateTime) { sessions(venueId: $v, from: $f, to: $t) { id } }";
    let app = spawn_app().await;
    let f = floor(&app).await;
    let second = app.create_venue(&f.t.access, "Annex").await;
    let annex_pc = app.create_station(&f.t.access, second, "PC-9").await;
    app.gql_ok(
        &f.t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": f.tariff, "v": second}),
    )
    .await;
    let before = chrono::Utc::now() - Duration::seconds(1);
    let mut ids = Vec::new();
    for (station, key) in [(f.station, "detail-1"), (annex_pc, "detail-2")] {
        let (status, started) = start(
            &app,
            &f.t.access,
            Some(key),
            json!({"station_id": station, "duration_minutes": 30, "payment": "cash"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{started}");
        ids.push(started["session_id"].as_str().unwrap().to_owned());
    }
    let after = chrono::Utc::now() + Duration::seconds(1);
    app.gql_ok(
        &f.t.access,
        "mutation($s: UUID!) { stopSession(id: $s) { status } }",
        json!({"s": ids[0]}),
    )
    .await;

    // Lists: by venue, and by when they started.
    let list = |v: Option<Uuid>,
                from: Option<chrono::DateTime<chrono::Utc>>,
                to: Option<chrono::DateTime<chrono::Utc>>| {
        let app = &app;
        let token = f.t.access.clone();
        async move {
            let body = app
                .gql_ok(&token, LIST, json!({"v": v, "f": from, "t": to}))
                .await;
            body["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some(f.venue), None, None).await, vec![ids[0].clone()]);
    assert_eq!(list(Some(second), None, None).await, vec![ids[1].clone()]);
    assert_eq!(
        list(None, Some(before), Some(after)).await,
        vec![ids[1].clone(), ids[0].clone()],
        "newest first"
    );
    assert!(list(None, Some(after), None).await.is_empty());
    assert!(list(None, None, Some(before)).await.is_empty());
    let backwards = app
        .gql(Some(&f.t.access), LIST, json!({"f": after, "t": before}))
        .await;
    assert_eq!(gql_code(&backwards), "validation_failed", "{backwards}");
    assert_eq!(backwards["errors"][0]["extensions"]["field"], "to");

    // The stopped session's detail: paid in cash, its money in balanced journals, its switch on and off.
    let detail = app.gql_ok(&f.t.access, DETAIL, json!({"id": ids[0]})).await["session"].clone();
    assert_eq!(detail["paymentMethod"], "cash");
    let entries = detail["ledgerEntries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{detail}");
    let mut journals: std::collections::BTreeMap<&str, i64> = Default::default();
    for e in entries {
        *journals
            .entry(e["journalId"].as_str().unwrap())
            .or_default() += e["amount"].as_i64().unwrap();
        assert_eq!(e["currency"], "EUR");
    }
    assert!(
        journals.values().all(|sum| *sum == 0),
        "every journal balances: {detail}"
    );
    let revenue: i64 = entries
        .iter()
        .filter(|e| e["ownerKind"] == "venue" && e["purpose"] == "revenue")
        .map(|e| e["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(
        revenue,
        detail["chargedAmount"].as_i64().unwrap(),
        "the venue's revenue entries are what the session charged: {detail}"
    );
    let commands: Vec<&str> = detail["deviceCommands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, vec!["switch_on", "switch_off"], "{detail}");

    // Another tenant's session is not found, and the other tenant's lists hold none of these.
    let other = app.signup().await;
    let body = app
        .gql(Some(&other.access), DETAIL, json!({"id": ids[0]}))
        .await;
    assert_eq!(gql_code(&body), "not_found", "{body}");
    let theirs = app.gql_ok(&other.access, LIST, json!({})).await;
    assert_eq!(theirs["sessions"], json!([]));
    let filtered = app
        .gql(Some(&other.access), LIST, json!({"v": f.venue}))
        .await;
    assert_eq!(gql_code(&filtered), "not_found", "{filtered}");
}

/// The count of the tenant's journals of `kind`.
async fn journals_of(app: &TestApp, tenant: Uuid, kind: &str) -> i64 {
    sqlx::query_scalar("select count(*) from journal where tenant_id = $1 and kind = $2")
        .bind(tenant)
        .bind(kind)
        .fetch_one(&mut *app.tenant_tx(tenant).await)
        .await
        .unwrap()
}

/// Money moved by requests that arrive together: a cash top-up sent ten times at once with one key, a cash start
/// sent ten times at once with one key, and a session stopped over REST and GraphQL at once, five times each. Each
/// moves its money once, every request gets an answer that says so, and the ledger balances.
#[tokio::test]
async fn top_ups_cash_starts_and_stops_sent_together_move_money_once() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = app.create_patron(&f.t.access, "Ada", None).await;

    // Ten cash top-ups of 500 with one key: one journal, 500 in the wallet, ten answers of 500.
    let answers = join_all(
        (0..10)
            .map(|_| top_up(&app, &f, patron, 500, "drawer-1"))
            .collect(),
    )
    .await;
    for answer in &answers {
        assert_eq!(answer["topUpCash"]["wallet"]["balance"], 500, "{answer}");
    }
    assert_eq!(journals_of(&app, f.t.id, "top_up_cash").await, 1);

    // Ten cash starts of 10 minutes (100) with one key for a walk-in: one session, one cash journal.
    let second = app.create_station(&f.t.access, f.venue, "PC-2").await;
    let body = json!({"station_id": second, "duration_minutes": 10, "payment": "cash"});
    let starts = join_all(
        (0..10)
            .map(|_| start(&app, &f.t.access, Some("walk-in"), body.clone()))
            .collect(),
    )
    .await;
    let first = starts[0].1["session_id"].clone();
    for (status, answer) in &starts {
        assert_eq!(*status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["session_id"], first, "{answer}");
    }
    assert_eq!(journals_of(&app, f.t.id, "top_up_cash").await, 2);
    let sessions: i64 =
        sqlx::query_scalar("select count(*) from session where tenant_id = $1 and station_id = $2")
            .bind(f.t.id)
            .bind(second)
            .fetch_one(&mut *app.tenant_tx(f.t.id).await)
            .await
            .unwrap();
    assert_eq!(sessions, 1);

    // A wallet session that ran 4.5 minutes (five 1-minute steps), stopped ten times at once: one charge of 50.
    let session = wallet_session(&app, &f.t.access, f.station, patron, Some(30)).await;
    let mut tx = app.tenant_tx(f.t.id).await;
    sqlx::query(
        "update session set started_at = started_at - interval '4 minutes 30 seconds' where tenant_id = $1 and id = $2",
    )
    .bind(f.t.id)
    .bind(session)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let rest = (0..5).map(|_| {
        let app = &app;
        let token = f.t.access.clone();
        Box::pin(async move {
            let (status, body) = app
                .send(
                    Method::DELETE,
                    &format!("/api/v1/sessions/{session}"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["charged_amount"].clone()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Value> + '_>>
    });
    let graphql = (0..5).map(|_| {
        let app = &app;
        let token = f.t.access.clone();
        Box::pin(async move {
            let body = app
                .gql(
                    Some(&token),
                    "mutation($s: UUID!) { stopSession(id: $s) { chargedAmount } }",
                    json!({"s": session}),
                )
                .await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["stopSession"]["chargedAmount"].clone()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = Value> + '_>>
    });
    let charged = join_all(rest.chain(graphql).collect()).await;
    for amount in &charged {
        assert_eq!(*amount, json!(50), "{charged:?}");
    }
    let finals: i64 = sqlx::query_scalar(
        "select count(*) from journal where tenant_id = $1 and session_id = $2 and idempotency_key like '%:final'",
    )
    .bind(f.t.id)
    .bind(session)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap();
    assert_eq!(finals, 1);
    assert_eq!(wallet(&app, &f.t.access, patron).await["balance"], 450);
    assert_ledger_balances(&app, f.t.id).await;
}

/// An extension retried with its key (its answer lost, or sent twice at once) adds its minutes once; without a key,
/// the same call again is a second extension.
#[tokio::test]
async fn an_extension_retried_with_its_key_adds_its_minutes_once() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let (status, started) = start(
        &app,
        &f.t.access,
        Some("extend-me"),
        json!({"station_id": f.station, "duration_minutes": 60, "payment": "cash"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let id = started["session_id"].as_str().unwrap().to_owned();
    let patron: Uuid = started["patron_id"].as_str().unwrap().parse().unwrap();
    top_up(&app, &f, patron, 600, "for-an-hour-more").await;
    let extend = "mutation($id: UUID!, $k: String) {
        extendSession(id: $id, minutes: 30, idempotencyKey: $k) { plannedEndAt } }";
    let keyed = json!({"id": id, "k": "thirty-more"});
    let (a, b) = tokio::join!(
        app.gql(Some(&f.t.access), extend, keyed.clone()),
        app.gql(Some(&f.t.access), extend, keyed.clone())
    );
    let retry = app.gql(Some(&f.t.access), extend, keyed).await;
    let end = &a["data"]["extendSession"]["plannedEndAt"];
    assert!(end.is_string(), "{a}");
    assert_eq!(&b["data"]["extendSession"]["plannedEndAt"], end, "{b}");
    assert_eq!(
        &retry["data"]["extendSession"]["plannedEndAt"], end,
        "{retry}"
    );
    let minutes = || async {
        let (status, body) = app
            .get(&format!("/api/v1/sessions/{id}"), &f.t.access)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["duration_minutes"].clone()
    };
    assert_eq!(minutes().await, 90);
    app.gql_ok(&f.t.access, extend, json!({"id": id})).await;
    assert_eq!(minutes().await, 120, "no key: a second extension");
}

/// A tariff's tier discounts name tiers as patrons' tiers are named: a tier named twice (one discount would have
/// been dropped without a word), an empty name or one with spaces around it (it could never match a patron's) is
/// refused with the field named, and nothing is created.
#[tokio::test]
async fn tier_discounts_name_each_tier_once_as_patrons_tiers_are_named() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let create = "mutation($d: [TierDiscountInput!]!) { createTariff(name: \"Tiers\",
        terms: {currency: \"EUR\", perMinute: 10, tierDiscounts: $d}) { id terms { tierDiscounts { tier basisPoints } } } }";
    for discounts in [
        json!([{"tier": "gold", "basisPoints": 1000}, {"tier": "gold", "basisPoints": 2000}]),
        json!([{"tier": "", "basisPoints": 1000}]),
        json!([{"tier": " gold ", "basisPoints": 1000}]),
    ] {
        let body = app
            .gql(Some(&t.access), create, json!({"d": discounts}))
            .await;
        assert_eq!(gql_code(&body), "validation_failed", "{discounts}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "tierDiscounts");
    }
    let tariffs = app.gql_ok(&t.access, "{ tariffs { id } }", json!({})).await;
    assert_eq!(tariffs["tariffs"], json!([]));
    let made = app
        .gql_ok(
            &t.access,
            create,
            json!({"d": [{"tier": "gold", "basisPoints": 1000}, {"tier": "silver", "basisPoints": 500}]}),
        )
        .await;
    assert_eq!(
        made["createTariff"]["terms"]["tierDiscounts"],
        json!([{"tier": "gold", "basisPoints": 1000}, {"tier": "silver", "basisPoints": 500}])
    );
}

/// A statement of the last movements only: each line's balance is the wallet's after it, worked back from the kept
/// balance, so reading the last two of a long history reads two movements, not the history.
#[tokio::test]
async fn a_wallet_statement_of_the_last_movements_carries_the_balance_after_each() {
    let app = spawn_app().await;
    let f = floor(&app).await;
    let patron = patron_with_cash(&app, &f, 100).await;
    for (amount, key) in [(200, "two"), (300, "three"), (400, "four")] {
        top_up(&app, &f, patron, amount, key).await;
    }
    let statement = |limit: i64| {
        let (app, token) = (&app, f.t.access.clone());
        async move {
            app.gql_ok(
                &token,
                "query($p: UUID!, $l: Int!) { patron(id: $p) { wallet(currency: \"EUR\", limit: $l) {
                   balance statement { amount balance } } } }",
                json!({"p": patron, "l": limit}),
            )
            .await["patron"]["wallet"]
                .clone()
        }
    };
    assert_eq!(
        statement(2).await,
        json!({"balance": 1000, "statement": [{"amount": 400, "balance": 1000}, {"amount": 300, "balance": 600}]})
    );
    assert_eq!(
        statement(10).await["statement"],
        json!([
            {"amount": 400, "balance": 1000}, {"amount": 300, "balance": 600},
            {"amount": 200, "balance": 300}, {"amount": 100, "balance": 100}
        ])
    );
}
