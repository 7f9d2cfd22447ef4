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
            "mutation($e: String!) { inviteMember(email: $e, role: MANAGER) { invitation { email role expiresAt } } }",
            json!({"e": email}),
        )
        .await;
    let invitation = &data["inviteMember"];
    assert_eq!(invitation["invitation"]["email"], email.to_lowercase());
    assert_eq!(invitation["invitation"]["role"], "MANAGER");
    // The inviter never sees the token (the field is gone); it comes from the invitee's mailbox.
    let token = switchyard_tests::mail::wait_for_link(&email, "/invitations/accept", 1)
        .await
        .token();
    let token = token.as_str();
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
            "mutation { inviteMember(email: \"x@example.com\", role: OWNER) { invitation { id } } }",
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

/// Inviting an email again withdraws its pending invitation: a manager may not withdraw (or so downgrade) one it
/// could not have made, an owner's invitation of a new owner.
#[tokio::test]
async fn a_manager_cannot_replace_an_owners_invitation_of_a_new_owner() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let (_, manager) = app.add_member(&t, "MANAGER").await;
    let cfo = switchyard_tests::unique_email("cfo");
    let invite_as = async |token: &str, role: &str| {
        app.gql(
            Some(token),
            &format!("mutation($e: String!) {{ inviteMember(email: $e, role: {role}) {{ invitation {{ id }} }} }}"),
            json!({"e": cfo}),
        )
        .await
    };
    let owners = invite_as(&t.access, "OWNER").await;
    assert!(owners.get("errors").is_none(), "{owners}");
    let replaced = invite_as(&manager, "STAFF").await;
    assert_eq!(gql_code(&replaced), "forbidden", "{replaced}");
    let pending: Vec<(String, bool)> = sqlx::query_as(
        "select role::text, revoked_at is null from invitation where tenant_id = $1 and email = $2 order by id",
    )
    .bind(t.id)
    .bind(&cfo)
    .fetch_all(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pending,
        [("owner".to_owned(), true)],
        "the owner's invitation stands"
    );
    // The owner may replace it; then the manager may replace the staff invitation, as one it could have made.
    let staff = invite_as(&t.access, "STAFF").await;
    assert!(staff.get("errors").is_none(), "{staff}");
    let again = invite_as(&manager, "STAFF").await;
    assert!(again.get("errors").is_none(), "{again}");
    let live: i64 = sqlx::query_scalar(
        "select count(*) from invitation where tenant_id = $1 and email = $2 and revoked_at is null",
    )
    .bind(t.id)
    .bind(&cfo)
    .fetch_one(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(live, 1);
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

const ACCEPT: &str = "mutation($t: String!, $p: String) { acceptInvitation(token: $t, password: $p) { accessToken tenantId } }";

/// Invites `email` as STAFF; the token comes from the invitation email.
async fn invite(app: &switchyard_tests::TestApp, token: &str, email: &str) -> String {
    app.invite_by_email(token, email, "STAFF").await
}

async fn is_member(app: &switchyard_tests::TestApp, tenant: uuid::Uuid, email: &str) -> bool {
    sqlx::query_scalar(
        "select exists (select 1 from membership m join app_user u on u.id = m.user_id
                        where m.tenant_id = $1 and u.email = $2)",
    )
    .bind(tenant)
    .bind(email.to_lowercase())
    .fetch_one(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_invitation_for_an_existing_login_is_accepted_only_by_that_login_signed_in_without_a_password(
) {
    let app = spawn_app().await;
    let victim = app.signup().await;
    let attacker = app.signup().await;
    // A verified login (an unverified one cannot join another tenant at all).
    app.verify_email(&victim.email).await;
    let token = invite(&app, &attacker.access, &victim.email).await;

    // The inviter holds the token; a password guess through it gets no tokens and no membership, right or wrong.
    for guess in [victim.password.as_str(), "wrong-guess-123"] {
        let guessed = app.gql(None, ACCEPT, json!({"t": token, "p": guess})).await;
        assert!(guessed["data"].is_null(), "{guessed}");
        assert_eq!(gql_code(&guessed), "validation_failed", "{guessed}");
        assert_eq!(guessed["errors"][0]["extensions"]["field"], "password");
    }
    let anonymous = app.gql(None, ACCEPT, json!({"t": token})).await;
    assert_eq!(gql_code(&anonymous), "unauthenticated", "{anonymous}");
    let as_inviter = app
        .gql(Some(&attacker.access), ACCEPT, json!({"t": token}))
        .await;
    assert_eq!(gql_code(&as_inviter), "forbidden", "{as_inviter}");
    assert!(!is_member(&app, attacker.id, &victim.email).await);

    // The invited login, signed in, accepts.
    let accepted = app
        .gql(Some(&victim.access), ACCEPT, json!({"t": token}))
        .await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["tenantId"],
        attacker.id.to_string(),
        "{accepted}"
    );
    assert!(is_member(&app, attacker.id, &victim.email).await);
}

#[tokio::test]
async fn a_login_created_from_an_invitation_is_unverified_and_reaches_only_the_inviting_tenant() {
    let app = spawn_app().await;
    let first = app.signup().await;
    let second = app.signup().await;
    let email = unique_email("newcomer");
    let token = invite(&app, &first.access, &email).await;
    let accepted = app
        .gql(None, ACCEPT, json!({"t": token, "p": "newcomer-secret-9"}))
        .await;
    let access = accepted["data"]["acceptInvitation"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{accepted}"))
        .to_owned();
    let confined: Option<uuid::Uuid> =
        sqlx::query_scalar("select unverified_tenant_id from app_user where email = $1")
            .bind(email.to_lowercase())
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(confined, Some(first.id));

    // Another tenant's invitation cannot be accepted by it ...
    let other = invite(&app, &second.access, &email).await;
    let refused = app.gql(Some(&access), ACCEPT, json!({"t": other})).await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
    assert!(!is_member(&app, second.id, &email).await);
    // ... sign-up creates no tenant under it ...
    let (status, _) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Own Org", "email": email, "password": "newcomer-secret-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // ... and login lists the inviting tenant only (even if a membership elsewhere existed).
    let mut tx = app.tenant_tx(second.id).await;
    sqlx::query(
        "insert into membership (tenant_id, user_id, role)
         select $1, id, 'staff' from app_user where email = $2",
    )
    .bind(second.id)
    .bind(email.to_lowercase())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": "newcomer-secret-9"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant_id"], first.id.to_string());
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": "newcomer-secret-9", "tenant_id": second.id}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
