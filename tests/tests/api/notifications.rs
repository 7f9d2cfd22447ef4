//! Notifications: the outbox delivered through the real SMTP sink (`tests/mail/smtp_sink.py`, started by
//! `./infra/dev.sh test`), read back from what the sink received: invitations, email verification, password reset
//! and change, receipts and SOS, in English and German; exactly-once delivery with overlapping and crashing
//! workers, retries, the dead letter and the per-tenant limit; the GraphQL status log and its isolation.

use std::process::Stdio;

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_core::notify::deliver::{self, Begin, Settings};
use switchyard_core::Db;
use switchyard_tests::mail::{self, Mail};
use switchyard_tests::{gql_code, spawn_app, spawn_app_in, unique_email, TestApp};
use uuid::Uuid;

const ACCEPT: &str = "mutation($t: String!, $p: String) { acceptInvitation(token: $t, password: $p) { accessToken tenantId } }";
const LIST: &str = "query($s: String, $f: Int, $a: UUID) { notifications(status: $s, first: $f, after: $a) { items { id eventKey channel recipient kind locale status attempts lastError sentAt } endCursor hasMore } }";

async fn invite(app: &TestApp, token: &str, email: &str, locale: Option<&str>) -> Value {
    app.gql(
        Some(token),
        "mutation($e: String!, $l: String) { inviteMember(email: $e, role: STAFF, locale: $l) { invitation { id email } } }",
        json!({"e": email, "l": locale}),
    )
    .await
}

/// The outbox rows for `recipient`, as the owner role reads them.
async fn rows(
    app: &TestApp,
    tenant: Uuid,
    recipient: &str,
) -> Vec<(String, String, i32, Option<String>, Option<String>)> {
    sqlx::query_as(
        "select kind, status, attempts, last_error, secret from notification
         where tenant_id = $1 and recipient = $2 order by id",
    )
    .bind(tenant)
    .bind(recipient)
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_line_break_in_an_organizations_name_is_refused_and_never_breaks_its_messages() {
    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Acme\r\nBcc: x@evil.test", "email": unique_email("nl"),
                   "password": "a-long-enough-secret"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        (&body["error"]["field"], &body["error"]["message"]),
        (
            &json!("organization"),
            &json!("organization: must be one line, without line breaks")
        ),
        "{body}"
    );
    // A name stored before names were checked (an older release): its messages still go out, to their recipient
    // only, the name on one line. It used to panic the worker that wrote the message, on every replica in turn.
    let t = app.signup_named("Acme Arcade").await;
    let mut tx = app.tenant_tx(t.id).await;
    sqlx::query("update tenant set name = $2 where id = $1")
        .bind(t.id)
        .bind("Acme\r\nBcc: x@evil.test")
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let email = unique_email("nl");
    let body = invite(&app, &t.access, &email, None).await;
    assert!(body.get("errors").is_none(), "{body}");
    let m = mail::wait_for_link(&email, "/invitations/accept", 1).await;
    assert_eq!(m.rcpt_tos, vec![email.clone()]);
    // The name stays inside the sender's display name (no header of its own), and so in the subject.
    assert!(
        m.from.starts_with("\"Acme")
            && m.from.contains("Bcc: x@evil.test via")
            && m.from.ends_with("<noreply@switchyard.test>"),
        "{}",
        m.from
    );
    assert!(m.subject.contains("Bcc: x@evil.test"), "{}", m.subject);
    assert_eq!(rows(&app, t.id, &email).await[0].1, "sent");
}

#[tokio::test]
async fn an_invitation_is_emailed_in_the_invitees_language_only_to_the_invitee_and_its_token_works()
{
    let app = spawn_app().await;
    let t = app.signup_named("Bob's <Bar> & Grill").await;
    let email = unique_email("neu");

    // A language the messages do not exist in is refused, nothing queued.
    let refused = invite(&app, &t.access, &email, Some("fr")).await;
    assert_eq!(gql_code(&refused), "validation_failed", "{refused}");
    assert_eq!(refused["errors"][0]["extensions"]["field"], "locale");
    assert!(rows(&app, t.id, &email).await.is_empty());

    // The inviter gets the invitation, never its token.
    let body = invite(&app, &t.access, &email, Some("de")).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert!(!body.to_string().contains("token"), "{body}");
    let token_field = app
        .gql(
            Some(&t.access),
            "mutation($e: String!) { inviteMember(email: $e, role: STAFF) { token } }",
            json!({"e": unique_email("x")}),
        )
        .await;
    assert_eq!(gql_code(&token_field), "invalid_query", "{token_field}");

    let m = mail::wait_for_link(&email, "/invitations/accept", 1).await;
    assert_eq!(m.rcpt_tos, vec![email.clone()]);
    assert_eq!(m.mail_from, "noreply@switchyard.test");
    assert_eq!(
        m.authenticated_as.as_deref(),
        Some("switchyard-tests"),
        "the worker logged in to the server"
    );
    assert_eq!(m.content_language, "de");
    assert_eq!(m.subject, "Einladung zu Bob's <Bar> & Grill auf Switchyard");
    assert!(
        m.from.contains("Bob's <Bar> & Grill via Switchyard Tests") || m.from.contains("Bob's"),
        "{}",
        m.from
    );
    assert!(
        m.text()
            .contains("lädt Sie ein, dem Team auf Switchyard als staff beizutreten"),
        "{}",
        m.text()
    );
    assert!(
        m.text().contains("Die Einladung gilt 7 Tage"),
        "{}",
        m.text()
    );
    // The HTML part carries the same message, the tenant's name escaped.
    assert!(m.html().contains("<html lang=\"de\">"), "{}", m.html());
    assert!(
        m.html().contains("Bob&#x27;s &lt;Bar&gt; &amp; Grill"),
        "{}",
        m.html()
    );
    assert!(!m.html().contains("<Bar>"));
    let token = m.token();
    assert!(m.html().contains(&token));
    assert!(m.message_id.ends_with("@switchyard>"), "{}", m.message_id);

    // Once sent, the database no longer holds the token.
    let stored = rows(&app, t.id, &email).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].0.as_str(), stored[0].1.as_str(), stored[0].2),
        ("invitation", "sent", 1)
    );
    assert_eq!(
        stored[0].4, None,
        "the one-time token is cleared after delivery"
    );

    // The emailed token works; the new login is German and is sent a verification code, in German.
    let accepted = app
        .gql(
            None,
            ACCEPT,
            json!({"t": token, "p": "willkommen-an-bord-7"}),
        )
        .await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["tenantId"],
        t.id.to_string(),
        "{accepted}"
    );
    let verify = mail::wait_for_link(&email, "/verify-email", 1).await;
    assert_eq!(
        verify.subject,
        "Bestätigen Sie Ihre E-Mail-Adresse für Bob's <Bar> & Grill"
    );
    assert_eq!(verify.content_language, "de");
}

#[tokio::test]
async fn a_signup_reaches_only_its_own_tenant_until_the_emailed_code_verifies_it() {
    let app = spawn_app().await;
    let email = unique_email("founder");
    let password = "a-long-secret-phrase";
    let (status, body) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Volt Lounge", "email": email, "password": password, "locale": "xx"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "locale");
    let (status, _) = app
        .post(
            "/api/v1/auth/signup",
            json!({"organization": "Volt Lounge", "email": email, "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, login) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    let own = login["tenant_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{login}"))
        .to_owned();
    let access = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let m = mail::wait_for_link(&email, "/verify-email", 1).await;
    assert_eq!(m.subject, "Confirm your email address for Volt Lounge");
    assert_eq!(m.content_language, "en");
    assert!(
        m.text()
            .contains("belongs to your Switchyard login at Volt Lounge"),
        "{}",
        m.text()
    );

    // Unverified: another tenant's invitation is refused.
    let other = app.signup().await;
    let invitation = app.invite_by_email(&other.access, &email, "STAFF").await;
    let refused = app
        .gql(Some(&access), ACCEPT, json!({"t": invitation}))
        .await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");

    // A wrong code is refused without saying more; the right one verifies, once.
    for wrong in ["not-a-code", ""] {
        let (status, body) = app
            .post("/api/v1/auth/verify-email", json!({"token": wrong}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["field"], "token");
    }
    let (status, body) = app
        .post("/api/v1/auth/verify-email", json!({"token": m.token()}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "verified");
    let (status, _) = app
        .post("/api/v1/auth/verify-email", json!({"token": m.token()}))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a code works once"
    );
    let (verified, confined): (Option<chrono::DateTime<Utc>>, Option<Uuid>) = sqlx::query_as(
        "select email_verified_at, unverified_tenant_id from app_user where email = $1",
    )
    .bind(&email)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(verified.is_some());
    assert_eq!(confined, None);

    // Verified: the same invitation is accepted, and login now offers both tenants.
    let accepted = app
        .gql(Some(&access), ACCEPT, json!({"t": invitation}))
        .await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["tenantId"],
        other.id.to_string(),
        "{accepted}"
    );
    let (status, body) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let tenants: Vec<String> = body["error"]["details"]["tenants"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|t| t["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        tenants.contains(&own) && tenants.contains(&other.id.to_string()),
        "{body}"
    );
}

#[tokio::test]
async fn a_password_reset_answers_alike_for_unknown_emails_works_once_within_30_minutes_and_signs_out_everywhere(
) {
    let app = spawn_app().await;
    let t = app.signup_named("Reset Arcade").await;
    // A second session (another refresh family) of the same login.
    let (_, second) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": t.email, "password": t.password}),
        )
        .await;
    let second_refresh = second["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let unknown = unique_email("nobody");
    let (s1, b1) = app
        .post("/api/v1/auth/password/forgot", json!({"email": unknown}))
        .await;
    let (s2, b2) = app
        .post(
            "/api/v1/auth/password/forgot",
            json!({"email": t.email.to_uppercase()}),
        )
        .await;
    assert_eq!(s1, StatusCode::ACCEPTED);
    assert_eq!((s1, &b1), (s2, &b2), "the same answer either way");
    let (status, body) = app
        .post(
            "/api/v1/auth/password/forgot",
            json!({"email": "not an email"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let m = mail::wait_for_link(&t.email, "/reset-password", 1).await;
    assert_eq!(m.subject, "Reset your Switchyard password");
    assert!(m.text().contains("(Reset Arcade)"), "{}", m.text());
    assert!(m.text().contains("within 30 minutes"));
    // Nothing went to the unknown address (the known one's message, queued after it, has arrived).
    assert!(mail::received_by(&unknown).is_empty());
    let token = m.token();
    // Only its hash is kept.
    let kept: (i64, i64) = sqlx::query_as(
        "select count(*) filter (where token_hash = sha256($1::bytea)),
                count(*) filter (where expires_at between now() + interval '29 minutes' and now() + interval '30 minutes')
         from login_token where purpose = 'password_reset' and user_id = (select id from app_user where email = $2)",
    )
    .bind(token.as_bytes())
    .bind(&t.email)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kept, (1, 1));

    // A weak password is refused and the code is not spent.
    let (status, body) = app
        .post(
            "/api/v1/auth/password/reset",
            json!({"token": token, "password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "password");
    let new_password = "a-brand-new-passphrase";
    let (status, body) = app
        .post(
            "/api/v1/auth/password/reset",
            json!({"token": token, "password": new_password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "reset");

    // Every refresh family of the login is revoked; the old password is gone, the new one works.
    for refresh in [&t.refresh, &second_refresh] {
        let (status, body) = app
            .post("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": t.email, "password": t.password}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": t.email, "password": new_password}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Single use.
    let (status, body) = app
        .post(
            "/api/v1/auth/password/reset",
            json!({"token": token, "password": "yet-another-passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "token");

    // Asking again at once while a fresh code is unused sends nothing more (no flooding a mailbox). The code is
    // issued after the answer (so that an unknown email's answer takes as long): the second message arriving says
    // the first request's code is in. The guard itself, and requests at once, are the next test's.
    let (_, _) = app
        .post("/api/v1/auth/password/forgot", json!({"email": t.email}))
        .await;
    let late = mail::wait_for_link(&t.email, "/reset-password", 2)
        .await
        .token();
    let (_, _) = app
        .post("/api/v1/auth/password/forgot", json!({"email": t.email}))
        .await;
    let issued: i64 = sqlx::query_scalar(
        "select count(*) from login_token where purpose = 'password_reset' and user_id = (select id from app_user where email = $1)",
    )
    .bind(&t.email)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(issued, 2, "the used code and one new one");

    // A code past its 30 minutes is refused like a wrong one.
    sqlx::query("update login_token set expires_at = now() - interval '1 second' where token_hash = sha256($1::bytea)")
        .bind(late.as_bytes())
        .execute(&app.owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = app
        .post(
            "/api/v1/auth/password/reset",
            json!({"token": late, "password": "yet-another-passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "token");
}

/// Password-reset requests for one login that run at once (the code is issued after the answer, in a task of its
/// own), or one after another within the minute: one code is issued and one message queued.
#[tokio::test]
async fn password_reset_requests_at_once_issue_one_code() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let user: Uuid = sqlx::query_scalar("select id from app_user where email = $1")
        .bind(&t.email)
        .fetch_one(&app.owner)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let db = switchyard_tests::app_db(8);
    let request = || async {
        let mut tx = db
            .begin_tenant(switchyard_core::TenantId(t.id))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        switchyard_core::notify::flows::password_reset(
            &mut tx,
            user,
            &t.email,
            switchyard_core::notify::Locale::En,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    };
    switchyard_tests::join_all((0..6).map(|_| request()).collect()).await;
    // And again one after another: a code issued within the minute is left alone.
    request().await;
    request().await;
    let issued: i64 = sqlx::query_scalar(
        "select count(*) from login_token where purpose = 'password_reset' and user_id = $1",
    )
    .bind(user)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(issued, 1);
    let queued: i64 = sqlx::query_scalar(
        "select count(*) from notification where tenant_id = $1 and recipient = $2 and kind = 'password_reset'",
    )
    .bind(t.id)
    .bind(&t.email)
    .fetch_one(&app.owner)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(queued, 1);
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one() {
    let app = spawn_app().await;
    let t = app.signup().await;
    let change = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";
    let wrong = app
        .gql(
            Some(&t.access),
            change,
            json!({"c": "not-my-password", "n": "a-fine-new-passphrase"}),
        )
        .await;
    assert_eq!(gql_code(&wrong), "validation_failed", "{wrong}");
    assert_eq!(wrong["errors"][0]["extensions"]["field"], "currentPassword");
    let weak = app
        .gql(
            Some(&t.access),
            change,
            json!({"c": t.password, "n": "short"}),
        )
        .await;
    assert_eq!(gql_code(&weak), "validation_failed", "{weak}");
    assert_eq!(weak["errors"][0]["extensions"]["field"], "newPassword");
    let anonymous = app
        .gql(
            None,
            change,
            json!({"c": t.password, "n": "a-fine-new-passphrase"}),
        )
        .await;
    assert_eq!(gql_code(&anonymous), "unauthenticated", "{anonymous}");
    // A second device signed in, and a reset code asked for, before the change.
    let other = app.login(&t.email, &t.password).await;
    let (status, _) = app
        .post("/api/v1/auth/password/forgot", json!({"email": t.email}))
        .await;
    assert!(status.is_success(), "{status}");
    let reset = mail::wait_for_link(&t.email, "/reset-password", 1)
        .await
        .token();
    let ok = app
        .gql_ok(
            &t.access,
            change,
            json!({"c": t.password, "n": "a-fine-new-passphrase"}),
        )
        .await;
    assert_eq!(ok["changePassword"], true);
    // Every session ends (someone who knew the old password may hold one), this device's too; the code is void.
    for refresh in [&t.refresh, &other.refresh] {
        let (status, body) = app
            .post("/api/v1/auth/refresh", json!({"refresh_token": refresh}))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = app
        .post(
            "/api/v1/auth/password/reset",
            json!({"token": reset, "password": "an-attackers-passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": t.email, "password": t.password}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .post(
            "/api/v1/auth/login",
            json!({"email": t.email, "password": "a-fine-new-passphrase"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_receipt_with_the_cost_lines_is_emailed_in_the_patrons_language_when_its_session_ends() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    let email = unique_email("dana");
    let (status, pair) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": f.t.id, "display_name": "Dana", "email": email, "password": "dana-plays-pinball"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pair}");
    let patron_token = pair["access_token"].as_str().unwrap_or_default().to_owned();
    let bad = app
        .gql(
            Some(&patron_token),
            "mutation { setMyLocale(locale: \"xx\") }",
            json!({}),
        )
        .await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    app.gql_ok(
        &patron_token,
        "mutation { setMyLocale(locale: \"de\") }",
        json!({}),
    )
    .await;
    let me = app
        .gql_ok(&patron_token, "{ myProfile { id } }", json!({}))
        .await;
    let patron = me["myProfile"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    app.gql_ok(
        &f.t.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 5000, idempotencyKey: \"k1\") { id } }",
        json!({"p": patron, "v": f.venue}),
    )
    .await;
    let (status, started) = crate::sessions::start(
        &app,
        &f.t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": f.station, "patron_id": patron, "duration_minutes": 30, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let session = started["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, stopped) = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{session}"),
            Some(&f.t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{stopped}");
    let total = stopped["total_amount"].as_i64().unwrap_or(-1);

    let m = mail::wait_for(&email, 1).await;
    let money = format!("{}.{:02} EUR", total / 100, total % 100);
    assert_eq!(m.content_language, "de");
    assert!(m.subject.starts_with("Ihre Quittung von "), "{}", m.subject);
    assert!(m.subject.ends_with(&money), "{} / {money}", m.subject);
    assert!(m.text().contains("Hallo Dana,"), "{}", m.text());
    assert!(
        m.text().contains("Ihre Sitzung an PC-1 ist beendet"),
        "{}",
        m.text()
    );
    assert!(
        m.text().contains(&format!("Gesamt: {money}")),
        "{}",
        m.text()
    );
    assert!(
        m.text().contains(&format!("Sitzung {session}")),
        "{}",
        m.text()
    );
    for line in stopped["cost_lines"].as_array().unwrap_or(&vec![]) {
        let amount = line["amount"].as_i64().unwrap_or_default();
        let expected = format!(
            "{}: {}{}.{:02} EUR",
            line["description"].as_str().unwrap_or_default(),
            if amount < 0 { "-" } else { "" },
            amount.abs() / 100,
            amount.abs() % 100
        );
        assert!(m.text().contains(&expected), "{expected} in {}", m.text());
    }
    assert!(m.html().contains("Ihre Sitzung an PC-1 ist beendet"));

    // The receipt's PDF rides along (text and HTML stay the alternative body): the session's own receipt, the same
    // document the API hands out afterwards, with its total.
    assert_eq!(m.attachments.len(), 1, "{:?}", m.attachments);
    let pdf = &m.attachments[0];
    assert_eq!(
        (pdf.filename.as_str(), pdf.content_type.as_str()),
        (format!("receipt-{session}.pdf").as_str(), "application/pdf")
    );
    let bytes = pdf.bytes();
    assert!(bytes.starts_with(b"%PDF-"));
    let text = crate::documents::pdf_text(&bytes).await;
    for needle in [
        format!("Session {session}"),
        "Station: PC-1".to_owned(),
        "Customer: Dana".to_owned(),
        money.clone(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from:\n{text}");
    }
    let (status, receipt) = app
        .get(&format!("/api/v1/sessions/{session}/receipt"), &f.t.access)
        .await;
    assert_eq!(status, StatusCode::OK, "{receipt}");
    assert_eq!(receipt["total"].as_i64(), Some(total));
    let served =
        crate::documents::download(&app, receipt["url"].as_str().unwrap_or_default()).await;
    assert_eq!(served, bytes, "the emailed receipt is the stored one");

    // Stopping again changes nothing and queues no second receipt.
    app.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/sessions/{session}"),
        Some(&f.t.access),
        None,
    )
    .await;
    let stored = rows(&app, f.t.id, &email).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].0, "receipt");
}

#[tokio::test]
async fn an_sos_is_emailed_to_the_owners_and_managers_not_to_staff() {
    let app = spawn_app().await;
    let f = crate::sessions::floor(&app).await;
    app.add_member(&f.t, "MANAGER").await;
    let (_, staff) = app.add_member(&f.t, "STAFF").await;
    let members = app
        .gql_ok(&f.t.access, "{ members { email role } }", json!({}))
        .await;
    let email_of = |role: &str| {
        members["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == role))
            .and_then(|m| m["email"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (owner, manager, staff_email) = (email_of("OWNER"), email_of("MANAGER"), email_of("STAFF"));
    let raised = app
        .gql_ok(
            &staff,
            "mutation($v: UUID!, $s: UUID!) { raiseSos(input: {venueId: $v, stationId: $s, severity: HIGH, note: \"smoke near PC-1\"}) { id } }",
            json!({"v": f.venue, "s": f.station}),
        )
        .await;
    let sos = raised["raiseSos"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let db = switchyard_tests::app_db(2);
    for to in [&owner, &manager] {
        let got = mail::wait_matching_in(&db, to, 1, |m| m.subject.starts_with("SOS")).await;
        let m: &Mail = &got[0];
        assert_eq!(m.subject, "SOS (high) at Arcade");
        assert!(m.text().contains("Station: PC-1"), "{}", m.text());
        assert!(m.text().contains("Note: smoke near PC-1"), "{}", m.text());
        assert!(m.text().contains(&format!("SOS {sos}")), "{}", m.text());
    }
    let to_staff = rows(&app, f.t.id, &staff_email).await;
    assert!(to_staff.iter().all(|r| r.0 != "sos"), "{to_staff:?}");
}

/// Counts the messages of each recipient the sink received.
fn copies(to: &str) -> Vec<Mail> {
    mail::received_by(to)
}

#[tokio::test]
async fn each_message_is_delivered_once_by_two_overlapping_workers_and_after_a_crash_before_sending(
) {
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let db = Db::connect_lazy(&database.app_url, 4).unwrap_or_else(|e| panic!("{e}"));
    let t = app.signup().await;
    let emails: Vec<String> = (0..12).map(|_| unique_email("once")).collect();
    for e in &emails {
        let body = invite(&app, &t.access, e, None).await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    // Two workers' passes at once, each claiming small batches until nothing is left.
    let settings = Settings {
        batch: 3,
        ..mail::settings()
    };
    let transports = mail::transports();
    let worker = || async {
        let mut sent = 0;
        loop {
            let pass = deliver::run_once(&db, &transports, &settings, Utc::now())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sent += pass.sent;
            if pass.claimed == 0 {
                return sent;
            }
        }
    };
    let (a, b) = tokio::join!(worker(), worker());
    assert_eq!(
        a + b,
        emails.len() + 1,
        "every invitation and the owner's verification, once ({a} + {b})"
    );
    for e in &emails {
        assert_eq!(copies(e).len(), 1, "{e}");
    }

    // A worker dies after claiming, before sending: the message waits for the lease, then goes out once.
    let late = unique_email("crash");
    invite(&app, &t.access, &late, None).await;
    let now = Utc::now();
    let claimed = deliver::claim(&db, &settings, &["email".to_owned()], now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed.len(), 1);
    drop(claimed);
    let pass = deliver::run_once(&db, &transports, &settings, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.claimed, 0, "leased to the dead worker");
    let after_lease = now + Duration::seconds(i64::from(settings.lease_secs) + 1);
    let pass = deliver::run_once(&db, &transports, &settings, after_lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.sent, 1);
    assert_eq!(copies(&late).len(), 1);

    // A worker dies after the server took the message but before recording it: the documented at-least-once
    // window. The next pass sends it again with the same Message-ID, and the row ends sent after two attempts.
    let twice = unique_email("twice");
    invite(&app, &t.access, &twice, None).await;
    let now = Utc::now();
    let claimed = deliver::claim(&db, &settings, &["email".to_owned()], now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let Ok(Begin::Send(message)) = deliver::begin(&db, &claimed[0], &settings, now).await else {
        panic!("the claimed message should be sent");
    };
    let first = transports.email.as_ref().map(|t| t.send(&message));
    if let Some(first) = first {
        first.await.unwrap_or_else(|e| panic!("{}", e.safe));
    }
    // (Well after: the lease started again when the attempt began, by the database's clock.)
    let after_lease = now + Duration::seconds(i64::from(settings.lease_secs) + 60);
    deliver::run_once(&db, &transports, &settings, after_lease)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let got = copies(&twice);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].message_id, got[1].message_id,
        "a duplicate a client can recognise"
    );
    let stored = rows(&app, t.id, &twice).await;
    assert_eq!((stored[0].1.as_str(), stored[0].2), ("sent", 2));
    // The late record of the dead worker's attempt changes nothing (its claim is gone).
    let late_record = deliver::record(&db, &message, Ok(()), &settings, Utc::now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(late_record, deliver::Outcome::Lost);

    // A batch that has run a while: its claim's lease is nearly over when a message's attempt begins. The lease
    // starts again with the attempt, so no other worker claims the message while it is being sent.
    let slow = unique_email("slow");
    invite(&app, &t.access, &slow, None).await;
    let claimed = deliver::claim(&db, &settings, &["email".to_owned()], Utc::now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed.len(), 1);
    let mut tx = app.tenant_tx(t.id).await;
    sqlx::query("update notification set next_attempt_at = now() + interval '5 seconds' where recipient = $1")
        .bind(&slow)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let Ok(Begin::Send(_)) = deliver::begin(&db, &claimed[0], &settings, Utc::now()).await else {
        panic!("the claimed message should be sent");
    };
    let other = deliver::claim(
        &db,
        &settings,
        &["email".to_owned()],
        Utc::now() + Duration::seconds(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        other.is_empty(),
        "claimed again while its attempt runs: {other:?}"
    );
    deliver::run_once(&db, &transports, &settings, Utc::now() + Duration::hours(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(copies(&slow).len(), 1);

    // A pass after everything was sent sends nothing more.
    let pass = deliver::run_once(&db, &transports, &settings, Utc::now() + Duration::hours(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.claimed, 0);
    for e in emails.iter().chain([&late, &slow]) {
        assert_eq!(copies(e).len(), 1, "{e}");
    }
}

#[tokio::test]
async fn a_refused_message_is_dead_at_once_and_a_deferred_one_after_its_attempts_with_backoff() {
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let db = Db::connect_lazy(&database.app_url, 4).unwrap_or_else(|e| panic!("{e}"));
    let t = app.signup().await;
    let settings = Settings {
        max_attempts: 3,
        ..mail::settings()
    };
    let transports = mail::transports();
    mail::deliver_now(&db).await;

    let refused = format!("{}@refused.test", Uuid::new_v4().simple());
    let deferred = format!("{}@tempfail.test", Uuid::new_v4().simple());
    invite(&app, &t.access, &refused, None).await;
    invite(&app, &t.access, &deferred, None).await;
    let t0 = Utc::now();
    let pass = deliver::run_once(&db, &transports, &settings, t0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pass.dead, pass.retried), (1, 1), "{pass:?}");
    let r = rows(&app, t.id, &refused).await;
    assert_eq!((r[0].1.as_str(), r[0].2), ("dead", 1));
    assert_eq!(
        r[0].3.as_deref(),
        Some("the mail server answered 550 (refused)")
    );
    assert_eq!(r[0].4, None, "a dead message keeps no token");

    // Backoff: 30 s after the first failure, then 60 s; the third failure is the last.
    let d = rows(&app, t.id, &deferred).await;
    assert_eq!((d[0].1.as_str(), d[0].2), ("pending", 1));
    assert_eq!(
        d[0].3.as_deref(),
        Some("the mail server answered 451 (try again later)")
    );
    let early = deliver::run_once(&db, &transports, &settings, t0 + Duration::seconds(29))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.claimed, 0);
    let second = deliver::run_once(&db, &transports, &settings, t0 + Duration::seconds(31))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.retried, 1);
    let early = deliver::run_once(&db, &transports, &settings, t0 + Duration::seconds(31 + 59))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(early.claimed, 0);
    let third = deliver::run_once(&db, &transports, &settings, t0 + Duration::seconds(31 + 61))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(third.dead, 1);
    let d = rows(&app, t.id, &deferred).await;
    assert_eq!((d[0].1.as_str(), d[0].2, d[0].4.clone()), ("dead", 3, None));
    assert!(mail::received_by(&refused).is_empty() && mail::received_by(&deferred).is_empty());

    // Owners see both in the log, with the classified reason and nothing of the server's own words.
    let dead = app.gql_ok(&t.access, LIST, json!({"s": "dead"})).await;
    let items = dead["notifications"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items.len(), 2, "{dead}");
    assert!(!dead.to_string().contains("mailbox unavailable"));
    assert!(!dead.to_string().contains("4.3.0"));

    // A server that cannot be reached is a retry, not a loss.
    let unreachable = {
        let mut s = mail::smtp_settings();
        s.port = 9; // discard: nothing listens
        s
    };
    let nowhere = deliver::Transports {
        sms: None,
        push: None,
        email: Some(std::sync::Arc::new(
            switchyard_core::notify::smtp::SmtpTransport::new(&unreachable)
                .unwrap_or_else(|e| panic!("{e}")),
        )),
        documents: mail::documents(),
    };
    let someone = unique_email("later");
    invite(&app, &t.access, &someone, None).await;
    let pass = deliver::run_once(&db, &nowhere, &settings, Utc::now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.retried, 1, "{pass:?}");
    let s = rows(&app, t.id, &someone).await;
    assert_eq!((s[0].1.as_str(), s[0].2), ("pending", 1));
    assert_eq!(
        s[0].3.as_deref(),
        Some("the mail server could not be reached")
    );
    assert!(s[0].4.is_some(), "kept for the next attempt");
}

#[tokio::test]
async fn a_tenant_over_its_sending_limit_waits_for_the_next_minute() {
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let db = Db::connect_lazy(&database.app_url, 4).unwrap_or_else(|e| panic!("{e}"));
    let t = app.signup().await;
    let settings = Settings {
        per_tenant_per_minute: 3,
        ..mail::settings()
    };
    let transports = mail::transports();
    let emails: Vec<String> = (0..4).map(|_| unique_email("limit")).collect();
    for e in &emails {
        invite(&app, &t.access, e, None).await;
    }
    let t0 = Utc::now();
    let pass = deliver::run_once(&db, &transports, &settings, t0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Five messages (four invitations and the owner's verification): three go, two wait.
    assert_eq!((pass.sent, pass.throttled), (3, 2), "{pass:?}");
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from notification where status = 'pending' and attempts = 0",
    )
    .fetch_one(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(waiting, 2, "a throttled message is not a failed attempt");
    let pass = deliver::run_once(&db, &transports, &settings, t0 + Duration::seconds(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.sent, 0);
    let pass = deliver::run_once(&db, &transports, &settings, t0 + Duration::seconds(61))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.sent, 2, "{pass:?}");
    for e in &emails {
        assert_eq!(copies(e).len(), 1, "{e}");
    }
}

#[tokio::test]
async fn the_message_log_is_paginated_for_owners_and_managers_and_another_tenants_message_is_not_found(
) {
    let app = spawn_app().await;
    let a = app.signup().await;
    let b = app.signup().await;
    for _ in 0..3 {
        invite(&app, &a.access, &unique_email("page"), None).await;
    }
    let page = app.gql_ok(&a.access, LIST, json!({"f": 2})).await;
    let first = page["notifications"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(first.len(), 2, "{page}");
    assert_eq!(page["notifications"]["hasMore"], true);
    assert_eq!(first[0]["kind"], "invitation");
    assert_eq!(first[0]["channel"], "email");
    let next = app
        .gql_ok(
            &a.access,
            LIST,
            json!({"f": 2, "a": page["notifications"]["endCursor"]}),
        )
        .await;
    let second = next["notifications"]["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        second.len(),
        2,
        "three invitations and the owner's verification: {next}"
    );
    assert_eq!(next["notifications"]["hasMore"], false);
    assert_eq!(next["notifications"]["endCursor"], Value::Null);
    assert_eq!(second[1]["kind"], "verify_email");
    let all: Vec<&Value> = first.iter().chain(second.iter()).collect();
    let ids: std::collections::HashSet<&str> =
        all.iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(ids.len(), 4);

    // One message by id; another tenant's id answers not_found, as an unknown one does.
    let one = "query($i: UUID!) { notification(id: $i) { id kind status } }";
    let id = first[0]["id"].as_str().unwrap_or_default();
    let mine = app.gql_ok(&a.access, one, json!({"i": id})).await;
    assert_eq!(mine["notification"]["id"], id);
    let theirs = app.gql(Some(&b.access), one, json!({"i": id})).await;
    assert_eq!(gql_code(&theirs), "not_found", "{theirs}");
    let unknown = app
        .gql(Some(&b.access), one, json!({"i": Uuid::now_v7()}))
        .await;
    assert_eq!(
        theirs["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    let listed = app.gql_ok(&b.access, LIST, json!({})).await;
    assert!(!listed.to_string().contains(id));
    // A's message as B's cursor: not found, as an id never shown is (not a page of B's messages after it).
    for cursor in [json!(id), json!(Uuid::now_v7())] {
        let paged = app.gql(Some(&b.access), LIST, json!({"a": cursor})).await;
        assert_eq!(gql_code(&paged), "not_found", "{paged}");
        assert_eq!(
            paged["errors"][0]["message"],
            theirs["errors"][0]["message"]
        );
    }

    // A page of the most a page holds (500) still says whether more follow: B has its verification and 500 more.
    sqlx::query(
        "insert into notification (tenant_id, id, event_key, channel, recipient, kind, status)
         select $1, gen_random_uuid(), 'filler:' || n, 'email', 'filler@example.com', 'invitation', 'dead'
           from generate_series(1, 500) n",
    )
    .bind(b.id)
    .execute(&app.owner)
    .await
    .unwrap();
    // (Only the ids: 500 messages of every field is more than the query complexity allows.)
    const IDS: &str = "query($f: Int, $a: UUID) { notifications(first: $f, after: $a) { items { id } endCursor hasMore } }";
    let full = app.gql_ok(&b.access, IDS, json!({"f": 500})).await;
    assert_eq!(
        full["notifications"]["items"].as_array().map(Vec::len),
        Some(500)
    );
    assert_eq!(
        full["notifications"]["hasMore"], true,
        "a 501st message follows"
    );
    let rest = app
        .gql_ok(
            &b.access,
            IDS,
            json!({"f": 500, "a": full["notifications"]["endCursor"]}),
        )
        .await;
    assert_eq!(
        rest["notifications"]["items"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(rest["notifications"]["hasMore"], false);

    // Bad input, and staff, are refused.
    let bad = app.gql(Some(&a.access), LIST, json!({"f": 0})).await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    let bad = app.gql(Some(&a.access), LIST, json!({"s": "lost"})).await;
    assert_eq!(gql_code(&bad), "validation_failed", "{bad}");
    let (_, staff) = app.add_member(&a, "STAFF").await;
    let refused = app.gql(Some(&staff), LIST, json!({})).await;
    assert_eq!(gql_code(&refused), "forbidden", "{refused}");
}

#[tokio::test]
async fn the_workers_binary_delivers_email_over_smtp_and_counts_it() {
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let t = app.signup().await;
    let email = unique_email("binary");
    invite(&app, &t.access, &email, Some("de")).await;
    let mut workers = tokio::process::Command::new(crate::binaries::binary("switchyard-workers"))
        .env("APP_DATABASE_URL", &database.app_url)
        .env("WORKER_METRICS_ADDR", "127.0.0.1:0")
        .env("WORKER_POLL_MS", "50")
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", switchyard_tests::env_url("TEST_SMTP_PORT"))
        .env("SMTP_SECURITY", "none")
        .env(
            "SMTP_USERNAME",
            switchyard_tests::env_url("TEST_SMTP_USERNAME"),
        )
        .env(
            "SMTP_PASSWORD",
            switchyard_tests::env_url("TEST_SMTP_PASSWORD"),
        )
        .env("SMTP_FROM_ADDRESS", "mailer@switchyard.test")
        .env("SMTP_FROM_NAME", "Switchyard Mailer")
        .env("NOTIFY_LINK_BASE", "https://console.example")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = crate::binaries::wait_for_line(&mut workers, "metrics on ").await;
    // The workers deliver by themselves: wait for the message without running a pass here.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let m = loop {
        if let Some(m) = mail::received_by(&email).into_iter().next() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workers did not deliver within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(m.mail_from, "mailer@switchyard.test");
    assert!(m.from.contains("via Switchyard Mailer"), "{}", m.from);
    assert!(
        m.text()
            .contains("https://console.example/console/invitations/accept?token="),
        "{}",
        m.text()
    );
    assert!(m.subject.starts_with("Einladung zu "));
    let text = switchyard_tests::metrics_page(&metrics).await;
    let sent = switchyard_tests::metric(
        &text,
        "notifications_sent_total{channel=\"email\",outcome=\"sent\"}",
    )
    .unwrap_or(0.0);
    assert!(sent >= 1.0, "{text}");
    let _ = workers.kill().await;
}

#[tokio::test]
async fn a_patron_hears_of_a_low_balance_and_a_debt_by_email_and_of_a_session_warning_on_its_chosen_channel(
) {
    // Its own database: the billing pass below must not bill other tests' sessions.
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let db = Db::connect_lazy(&database.app_url, 4).unwrap_or_else(|e| panic!("{e}"));
    let t = app.signup_named("Neon Lanes").await;
    let venue = app.create_venue(&t.access, "Lanes").await;
    let station = app.create_station(&t.access, venue, "PC-7").await;
    let tariff = app
        .create_tariff(&t.access, "Pricey", "currency: \"EUR\", perMinute: 500")
        .await;
    app.gql_ok(
        &t.access,
        "mutation($t: UUID!, $v: UUID!) { assignTariff(input: {tariffId: $t, venueId: $v}) { id } }",
        json!({"t": tariff, "v": venue}),
    )
    .await;
    let email = unique_email("spender");
    let (status, pair) = app
        .post(
            "/api/v1/auth/patron/signup",
            json!({"tenant_id": t.id, "display_name": "Sam", "email": email, "password": "sam-spends-a-lot"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{pair}");
    let patron_token = pair["access_token"].as_str().unwrap_or_default().to_owned();
    let me = app
        .gql_ok(&patron_token, "{ myProfile { id } }", json!({}))
        .await;
    let patron = me["myProfile"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Warnings by email rather than push (the default), so the sink shows them.
    app.gql_ok(
        &patron_token,
        "mutation { setMyNotificationChannels(topic: SESSION_WARNINGS, channels: [EMAIL]) { topic } }",
        json!({}),
    )
    .await;
    app.gql_ok(
        &t.access,
        "mutation($p: UUID!, $v: UUID!) { topUpCash(patronId: $p, venueId: $v, amount: 6000, idempotencyKey: \"sam\") { id } }",
        json!({"p": patron, "v": venue}),
    )
    .await;

    // A 10-minute session at 5.00/min: 5.5 minutes in, the billing tick warns (5 minutes left) and has charged
    // 30.00 of the 60.00.
    let (status, started) = crate::sessions::start(
        &app,
        &t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": station, "patron_id": patron, "duration_minutes": 10, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let session = started["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let started_at: chrono::DateTime<Utc> = started["started_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{started}"));
    let billing = switchyard_workers::billing::Billing {
        tick: Duration::seconds(30),
        batch: 100,
        concurrency: 2,
    };
    let at = started_at + Duration::seconds(330);
    switchyard_workers::billing::run_once(&db, billing, at)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let warned = mail::wait_matching_in(&db, &email, 1, |m| m.subject.contains("min left")).await;
    assert_eq!(warned[0].subject, "5 min left on PC-7");
    assert!(
        warned[0].text().contains("Hello Sam,"),
        "{}",
        warned[0].text()
    );
    assert!(
        warned[0].text().contains("ends in 5 minutes"),
        "{}",
        warned[0].text()
    );

    // Stopped now, the session keeps what the tick charged (30.00 of the 60.00); the wallet holds 30.00.
    let (status, _) = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/sessions/{session}"),
            Some(&t.access),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // An open-ended session on another PC, billed 6.5 minutes in: 35.00 due, 30.00 from the wallet (which falls
    // below 5.00) and 5.00 as debt. One notice of each, in the patron's language (English).
    let other = app.create_station(&t.access, venue, "PC-8").await;
    let (status, started) = crate::sessions::start(
        &app,
        &t.access,
        Some(&Uuid::new_v4().to_string()),
        json!({"station_id": other, "patron_id": patron, "payment": "wallet"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let started_at: chrono::DateTime<Utc> = started["started_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{started}"));
    switchyard_workers::billing::run_once(&db, billing, started_at + Duration::seconds(390))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let low = mail::wait_matching_in(&db, &email, 1, |m| m.subject.contains("is low")).await;
    assert_eq!(
        low[0].subject,
        "Your balance at Neon Lanes is low: 0.00 EUR"
    );
    assert!(
        low[0].text().contains("below 5.00 EUR"),
        "{}",
        low[0].text()
    );
    let owed = mail::wait_matching_in(&db, &email, 1, |m| m.subject.starts_with("You owe")).await;
    assert_eq!(owed[0].subject, "You owe Neon Lanes 5.00 EUR");
    assert!(
        owed[0].text().contains("you owe 5.00 EUR"),
        "{}",
        owed[0].text()
    );

    // Another tick the same day books more debt: no second notice of either.
    switchyard_workers::billing::run_once(&db, billing, started_at + Duration::seconds(450))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<String> = sqlx::query_scalar(
        "select kind from notification where recipient = $1 and kind in ('low_balance', 'debt', 'session_warning')
         order by kind",
    )
    .bind(&email)
    .fetch_all(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kinds, vec!["debt", "low_balance", "session_warning"]);
}

#[tokio::test]
async fn email_goes_over_starttls_to_a_server_whose_certificate_is_trusted_and_waits_for_one_that_is_not(
) {
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let db = Db::connect_lazy(&database.app_url, 4).unwrap_or_else(|e| panic!("{e}"));
    let t = app.signup().await;
    mail::deliver_now(&db).await;
    let transport = |ca: Option<Vec<u8>>| {
        let settings = switchyard_core::notify::smtp::SmtpSettings {
            security: switchyard_core::notify::smtp::Security::StartTls,
            ca_pem: ca,
            ..mail::smtp_settings()
        };
        deliver::Transports {
            email: Some(std::sync::Arc::new(
                switchyard_core::notify::smtp::SmtpTransport::new(&settings)
                    .unwrap_or_else(|e| panic!("{e}")),
            )),
            sms: None,
            push: None,
            documents: mail::documents(),
        }
    };
    let ca =
        std::fs::read(switchyard_tests::env_url("TEST_SMTP_CA")).unwrap_or_else(|e| panic!("{e}"));

    // The sink's self-signed certificate is not trusted by default: the message waits, with a plain reason.
    let email = unique_email("tls");
    invite(&app, &t.access, &email, None).await;
    let now = Utc::now();
    let pass = deliver::run_once(&db, &transport(None), &mail::settings(), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.retried, 1, "{pass:?}");
    let r = rows(&app, t.id, &email).await;
    assert_eq!((r[0].1.as_str(), r[0].2), ("pending", 1));
    assert_eq!(
        r[0].3.as_deref(),
        Some("a secure connection to the mail server failed")
    );

    // Trusted through SMTP_CA_FILE's certificate, it goes over STARTTLS, with the login.
    let pass = deliver::run_once(
        &db,
        &transport(Some(ca)),
        &mail::settings(),
        now + Duration::seconds(31),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.sent, 1, "{pass:?}");
    let got = mail::received_by(&email);
    assert_eq!(got.len(), 1);
    assert!(got[0].tls, "delivered over STARTTLS");
    assert_eq!(got[0].authenticated_as.as_deref(), Some("switchyard-tests"));
    assert!(
        !mail::received_by(&t.email).iter().any(|m| m.tls),
        "plain SMTP stays plain"
    );
}

#[tokio::test]
async fn a_password_reset_for_a_login_in_two_tenants_goes_through_its_home_tenant_not_the_first_by_name(
) {
    let app = spawn_app().await;
    // The login signs up "Zephyr Home" first, then joins "Aardvark Annex" (first by name) by invitation.
    let home = app.signup_named("Zephyr Home").await;
    let other = app.signup_named("Aardvark Annex").await;
    app.verify_email(&home.email).await;
    let token = app
        .invite_by_email(&other.access, &home.email, "STAFF")
        .await;
    let accepted = app
        .gql(
            Some(&home.access),
            "mutation($t: String!) { acceptInvitation(token: $t) { tenantId } }",
            json!({"t": token}),
        )
        .await;
    assert_eq!(
        accepted["data"]["acceptInvitation"]["tenantId"],
        other.id.to_string(),
        "{accepted}"
    );

    let (status, _) = app
        .post("/api/v1/auth/password/forgot", json!({"email": home.email}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let m = mail::wait_for_link(&home.email, "/reset-password", 1).await;
    assert!(m.text().contains("(Zephyr Home)"), "{}", m.text());
    assert!(m.from.contains("Zephyr Home via"), "{}", m.from);
    // The row is in the home tenant's outbox (its owners' delivery status), none in the other's.
    let at_home = rows(&app, home.id, &home.email).await;
    let elsewhere = rows(&app, other.id, &home.email).await;
    assert!(
        at_home.iter().any(|r| r.0 == "password_reset"),
        "{at_home:?}"
    );
    assert!(
        !elsewhere.iter().any(|r| r.0 == "password_reset"),
        "{elsewhere:?}"
    );
}

#[tokio::test]
async fn a_tenants_logo_and_colour_head_its_emails_and_only_an_owner_sets_them() {
    const SET: &str = "mutation($l: String, $c: String) { setBranding(logoUrl: $l, color: $c) { logoUrl color } }";
    let app = spawn_app().await;
    let t = app.signup_named("Pixel Palace").await;
    let other = app.signup_named("Elsewhere").await;

    // Bad values are refused naming the field; nothing is stored.
    for (logo, color, field) in [
        ("http://cdn.example.com/logo.png", "#112233", "logoUrl"),
        ("javascript:alert(1)", "#112233", "logoUrl"),
        ("https://cdn.example.com/logo.png", "red", "color"),
    ] {
        let body = app
            .gql(Some(&t.access), SET, json!({"l": logo, "c": color}))
            .await;
        assert_eq!(gql_code(&body), "validation_failed", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    let (_, staff) = app.add_member(&t, "MANAGER").await;
    let body = app
        .gql(Some(&staff), SET, json!({"l": null, "c": "#112233"}))
        .await;
    assert_eq!(gql_code(&body), "forbidden", "{body}");
    let read = "query { branding { logoUrl color } }";
    assert_eq!(
        app.gql_ok(&staff, read, json!({})).await["branding"],
        json!({"logoUrl": null, "color": null})
    );

    let set = app
        .gql_ok(
            &t.access,
            SET,
            json!({"l": " https://cdn.example.com/pixel.png ", "c": "#AA3300"}),
        )
        .await;
    assert_eq!(
        set["setBranding"],
        json!({"logoUrl": "https://cdn.example.com/pixel.png", "color": "#aa3300"})
    );
    // Every member reads it; another tenant keeps its own (none).
    assert_eq!(
        app.gql_ok(&staff, read, json!({})).await["branding"],
        set["setBranding"]
    );
    assert_eq!(
        app.gql_ok(&other.access, read, json!({})).await["branding"],
        json!({"logoUrl": null, "color": null})
    );

    // The next email of this tenant carries the logo and colour in its HTML part, not in its text.
    let email = unique_email("branded");
    let body = invite(&app, &t.access, &email, None).await;
    assert!(body.get("errors").is_none(), "{body}");
    let m = mail::wait_for_link(&email, "/invitations/accept", 1).await;
    assert!(
        m.html().contains(
            r#"<img src="https:&#x2f;&#x2f;cdn.example.com&#x2f;pixel.png" alt="Pixel Palace""#
        ),
        "{}",
        m.html()
    );
    assert!(
        m.html().contains("border-bottom: 2px solid #aa3300"),
        "{}",
        m.html()
    );
    assert!(!m.text().contains("pixel.png"), "{}", m.text());

    // Empty values clear both; the change is in the audit log.
    let cleared = app
        .gql_ok(&t.access, SET, json!({"l": "", "c": null}))
        .await;
    assert_eq!(
        cleared["setBranding"],
        json!({"logoUrl": null, "color": null})
    );
    let audit: i64 = sqlx::query_scalar(
        "select count(*) from audit_log where tenant_id = $1 and action = 'tenant.set_branding'",
    )
    .bind(t.id)
    .fetch_one(&mut *app.tenant_tx(t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(audit, 2);
}
