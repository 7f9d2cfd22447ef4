//! One request, one address or one tenant cannot starve the others: a per-address limit on every route, a
//! bounded number of connections per GraphQL request, and each tenant's fair share of requests at once.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_tests::spawn_app_with;

#[tokio::test]
async fn every_route_is_limited_per_client_address() {
    let app = spawn_app_with(&[("RATE_BURST", "3"), ("RATE_REPLENISH_MS", "600000")]).await;
    for _ in 0..3 {
        let (status, _) = app.send(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    for (method, path) in [
        (Method::GET, "/api/v1/stations"),
        (Method::POST, "/graphql"),
    ] {
        let response = app
            .client
            .request(method, app.url(path))
            .json(&json!({"query": "{ venues { id } }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{path}");
        let wait: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait > 0, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{path}: {body}");
    }
}

#[tokio::test]
async fn a_request_scoped_handle_holds_at_most_its_share_of_transactions() {
    let app = switchyard_tests::spawn_app().await;
    let t = app.signup().await;
    let db = switchyard_tests::app_db(20).limited(2);
    // Fifty transactions wanted at once, each kept open a moment: they take turns, two at a time.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db
                    .begin_tenant(switchyard_core::TenantId(t.id))
                    .await
                    .unwrap();
                let n: i64 = sqlx::query_scalar("select count(*) from venue, pg_sleep(0.005)")
                    .fetch_one(tx.conn())
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                n
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 0);
    }
    assert_eq!(db.peak_transactions(), Some(2));
}

#[tokio::test]
async fn a_wide_graphql_request_works_within_a_share_of_one_connection() {
    let app = spawn_app_with(&[("GRAPHQL_MAX_CONNECTIONS", "1")]).await;
    let t = app.signup().await;
    for n in 0..20 {
        app.create_patron(&t.access, &format!("P{n}"), None).await;
    }
    // 5 aliases × 20 patrons, each with nested fields that read in transactions of their own: with a share of
    // one they run one after another, and nothing waits on itself.
    let query = (0..5)
        .map(|a| {
            format!(
                "a{a}: patrons(limit: 20) {{ displayName wallet(currency: \"EUR\") {{ balance }} rfidTags }}"
            )
        })
        .collect::<Vec<_>>()
        .join(" ");
    let data = app
        .gql_ok(&t.access, &format!("{{ {query} }}"), json!({}))
        .await;
    for a in 0..5 {
        let patrons = data[format!("a{a}")].as_array().unwrap();
        assert_eq!(patrons.len(), 20);
        assert!(
            patrons
                .iter()
                .all(|p| p["wallet"]["balance"] == 0 && p["rfidTags"] == json!([])),
            "{data}"
        );
    }
}

#[tokio::test]
async fn a_tenant_with_too_many_requests_at_once_waits_its_turn_while_others_go_on() {
    let app = spawn_app_with(&[
        ("TENANT_MAX_CONCURRENT_REQUESTS", "1"),
        ("TENANT_QUEUE_MS", "200"),
    ])
    .await;
    let busy = app.signup().await;
    let other = app.signup().await;
    let venue = app.create_venue(&busy.access, "Hall").await;

    // Busy's one request in flight: a rename that waits for a row lock held here.
    let mut lock = app.owner.begin().await.unwrap();
    let holder: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *lock)
        .await
        .unwrap();
    sqlx::query("select 1 from venue where tenant_id = $1 and id = $2 for update")
        .bind(busy.id)
        .bind(venue)
        .execute(&mut *lock)
        .await
        .unwrap();
    let rename = {
        let client = app.client.clone();
        let url = app.url("/graphql");
        let token = busy.access.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({
                    "query": "mutation($id: UUID!) { updateVenue(id: $id, input: {name: \"Main hall\"}) { name } }",
                    "variables": {"id": venue},
                }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid)))",
        )
        .bind(holder)
        .fetch_one(&app.owner)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rename never reached the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Busy's next request finds no turn free: 429, retry in a second.
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(&busy.access)
        .json(&json!({"query": "{ venues { name } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Another tenant is served meanwhile.
    let data = app
        .gql_ok(&other.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(data["venues"], json!([]));

    lock.commit().await.unwrap();
    let renamed = rename.await.unwrap();
    assert_eq!(
        renamed["data"]["updateVenue"]["name"], "Main hall",
        "{renamed}"
    );
    let data = app
        .gql_ok(&busy.access, "{ venues { name } }", json!({}))
        .await;
    assert_eq!(data["venues"], json!([{"name": "Main hall"}]));
}

#[tokio::test]
async fn list_fields_count_every_row_they_may_return_in_the_complexity() {
    let app = switchyard_tests::spawn_app().await;
    let t = app.signup().await;
    app.create_patron(&t.access, "P", None).await;
    let wide = |limit: u32| {
        (0..10)
            .map(|a| {
                format!(
                    "a{a}: patrons(limit: {limit}) {{ id displayName tier wallet(currency: \"EUR\") {{ balance debt }} }}"
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Ten aliases of 500 patrons with their wallets: refused before anything runs.
    let body = app
        .gql(Some(&t.access), &format!("{{ {} }}", wide(500)), json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "invalid_query",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("complex"),
        "{body}"
    );
    assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    // The same shape over ten rows each is fine.
    let data = app
        .gql_ok(&t.access, &format!("{{ {} }}", wide(10)), json!({}))
        .await;
    assert_eq!(data["a9"][0]["displayName"], "P");
}
