use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{gql_code, spawn_app, unique_email};

#[tokio::test]
async fn an_invitation_is_accepted_once_and_the_new_member_is_listed() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let email = unique_email("New.Hire");
    let data = app
        .gql_ok(
            &t.access,
            "mutation($e: String!) { inviteMember(email: $e, role: MANAGER) { token invitation { email role expiresAt } } }",
            json!({"e": email}),
        )
        .await;
    let invitation = &data["inviteMember"];
    assert_eq!(invitation["invitation"]["email"], email.to_lowercase());
    assert_eq!(invitation["invitation"]["role"], "MANAGER");
    let token = invitation["token"].as_str().unwrap();
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from invitation where tenant_id = $1 and token_hash = sha256($2::bytea)",
    )
    .bind(t.id)
    .bind(token.as_bytes())
    .fetch_one(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap();
    assert_eq!(stored, 1, "only the token's hash is stored");

    let accept = "mutation($t: String!, $p: String!) { acceptInvitation(token: $t, password: $p) { accessToken tenantId } }";
    let weak = app
        .gql(None, accept, json!({"t": token, "p": "short"}))
        .await;
    assert_eq!(gql_code(&weak), "validation_failed");
    assert_eq!(weak["errors"][0]["extensions"]["field"], "password");
    let accepted = app
        .gql(None, accept, json!({"t": token, "p": "welcome-aboard-42"}))
        .await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["tenantId"],
        t.id.to_string(),
        "{accepted}"
    );
    let again = app
        .gql(None, accept, json!({"t": token, "p": "welcome-aboard-42"}))
        .await;
    assert_eq!(gql_code(&again), "conflict");
    let unknown = app
        .gql(
            None,
            accept,
            json!({"t": "no-such-token", "p": "welcome-aboard-42"}),
        )
        .await;
    assert_eq!(gql_code(&unknown), "not_found");

    let members = app
        .gql_ok(&t.access, "{ members { email role } }", json!({}))
        .await;
    let mut list: Vec<(String, String)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    list.sort();
    let mut expected = vec![
        (email.to_lowercase(), "MANAGER".to_owned()),
        (t.email.to_lowercase(), "OWNER".to_owned()),
    ];
    expected.sort();
    assert_eq!(list, expected);

    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": "welcome-aboard-42"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_last_owner_stays_and_only_owners_touch_the_owner_role() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let me = app.gql_ok(&t.access, "{ me { userId } }", json!({})).await;
    let owner_id = me["me"]["userId"].as_str().unwrap().to_owned();
    let (manager_id, manager) = app.add_member(&t, "MANAGER").await;

    let body = app
        .gql(
            Some(&t.access),
            "mutation($u: UUID!) { removeMember(userId: $u) { email } }",
            json!({"u": owner_id}),
        )
        .await;
    assert_eq!(gql_code(&body), "conflict", "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("at least one owner"));
    let body = app
        .gql(
            Some(&t.access),
            "mutation($u: UUID!) { changeMemberRole(userId: $u, role: STAFF) { role } }",
            json!({"u": owner_id}),
        )
        .await;
    assert_eq!(gql_code(&body), "conflict");

    let body = app
        .gql(
            Some(&manager),
            "mutation($u: UUID!) { removeMember(userId: $u) { email } }",
            json!({"u": owner_id}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");
    let body = app
        .gql(
            Some(&manager),
            "mutation($u: UUID!) { changeMemberRole(userId: $u, role: OWNER) { role } }",
            json!({"u": manager_id}),
        )
        .await;
    assert_eq!(
        gql_code(&body),
        "forbidden",
        "a manager cannot promote to owner"
    );
    let body = app
        .gql(
            Some(&manager),
            "mutation { inviteMember(email: \"x@example.com\", role: OWNER) { token } }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&body), "forbidden");

    // With a second owner, the first may step down.
    let promoted = app
        .gql_ok(
            &t.access,
            "mutation($u: UUID!) { changeMemberRole(userId: $u, role: OWNER) { role } }",
            json!({"u": manager_id}),
        )
        .await;
    assert_eq!(promoted["changeMemberRole"]["role"], "OWNER");
    let demoted = app
        .gql_ok(
            &manager,
            "mutation($u: UUID!) { changeMemberRole(userId: $u, role: STAFF) { role } }",
            json!({"u": owner_id}),
        )
        .await;
    assert_eq!(demoted["changeMemberRole"]["role"], "STAFF");
    // The role in the database counts at once, whatever the token says.
    let me = app.gql_ok(&t.access, "{ me { role } }", json!({})).await;
    assert_eq!(me["me"]["role"], "STAFF");
}

#[tokio::test]
async fn a_removed_member_loses_access_at_once() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let (staff_id, staff) = app.add_member(&t, "STAFF").await;
    let (status, _) = app.get("/api/v1/stations", &staff).await;
    assert_eq!(status, StatusCode::OK);
    let removed = app
        .gql_ok(
            &t.access,
            "mutation($u: UUID!) { removeMember(userId: $u) { role } }",
            json!({"u": staff_id}),
        )
        .await;
    assert_eq!(removed["removeMember"]["role"], "STAFF");
    let (status, body) = app.get("/api/v1/stations", &staff).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");
    let audit: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and action = 'member.remove' and object_id = $2",
    )
    .bind(t.id)
    .bind(staff_id)
    .fetch_one(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap();
    assert_eq!(audit, 1);
}
