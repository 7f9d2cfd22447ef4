//! Kiosk reports (seed 003) delivered through the messaging outbox: the email the real SMTP sink received carries
//! the report's PDF, the SMS the provider's fake received carries a link that downloads the same PDF from the
//! S3-compatible server; each channel is delivered and recorded once, also across a crashed worker; a patron's
//! channel choice applies; a replayed request hands out a fresh link; other tenants find nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_core::documents::delivery;
use switchyard_core::notify::deliver::{self, Begin, Transports};
use switchyard_core::notify::sms::{SmsSettings, TwilioSms};
use switchyard_core::{Db, Error, TenantId};
use switchyard_tests::{mail, spawn_app_in, unique_email, TestApp};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::documents::{download, pdf_text};
use crate::reports::{diagnostics, kiosk, post_report};
use crate::sessions::{floor, Floor};

/// A fake of the SMS provider's API (Twilio-style) that accepts every message.
async fn sms_provider() -> MockServer {
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC_reports/Messages.json"))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": "SM1", "status": "queued"})),
        )
        .mount(&sms)
        .await;
    sms
}

/// Email to the suite's SMTP sink, SMS to `sms`, documents from the suite's S3-compatible server.
fn transports(sms: &MockServer) -> Transports {
    let settings = SmsSettings {
        api_base: sms.uri(),
        account_sid: "AC_reports".into(),
        auth_token: secrecy::SecretString::from("sms-token".to_owned()),
        from: "+15550001111".into(),
        timeout: Duration::from_secs(10),
    };
    Transports {
        sms: Some(Arc::new(
            TwilioSms::new(settings).unwrap_or_else(|e| panic!("{e}")),
        )),
        ..mail::transports()
    }
}

/// The outbox rows of a report: (channel, recipient, status, attempts), email first.
async fn rows(app: &TestApp, tenant: Uuid, report: &str) -> Vec<(String, String, String, i32)> {
    sqlx::query_as(
        "select channel, recipient, status, attempts from notification
          where tenant_id = $1 and event_key = $2 order by channel",
    )
    .bind(tenant)
    .bind(format!("report:{report}"))
    .fetch_all(&mut *app.tenant_tx(tenant).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (bounded, generously) until the sink holds `count` messages for `to`.
async fn mail_for(to: &str, count: usize) -> Vec<mail::Mail> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = mail::received_by(to);
        if got.len() >= count {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message for {to} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup() -> (TestApp, Db, Floor, Uuid) {
    // Its own database: the passes below must deliver this test's messages only.
    let database = switchyard_tests::fresh_database().await;
    let app = spawn_app_in(&database).await;
    let db = Db::connect_lazy(&database.app_url, 8).unwrap_or_else(|e| panic!("{e}"));
    let f = floor(&app).await;
    let session = kiosk(&app, &f).await;
    // What sign-up queued (the owner's verification code) goes first: the outbox then holds only what a test adds.
    mail::deliver_now(&db).await;
    (app, db, f, session)
}

#[tokio::test]
async fn a_report_is_emailed_with_its_pdf_and_texted_a_link_to_the_same_pdf_once_each_even_after_a_crash(
) {
    let (app, db, f, session) = setup().await;
    let email = unique_email("driver");
    let (status, report) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        None,
        json!({"session_id": session, "email": email, "phone": "+49 170 555-0101", "data": diagnostics()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            report["delivery"].clone(),
            report["email_delivery"].clone(),
            report["sms_delivery"].clone()
        ),
        (json!("pending"), json!("pending"), json!("pending")),
        "{report}"
    );
    // One outbox row per channel and recipient, written with the report; the number without its punctuation.
    let queued = rows(&app, f.t.id, &id).await;
    assert_eq!(
        queued,
        vec![
            ("email".into(), email.clone(), "pending".into(), 0),
            ("sms".into(), "+491705550101".into(), "pending".into(), 0),
        ]
    );

    // A worker claims and begins both messages, then dies before sending anything.
    let sms = sms_provider().await;
    let transports = transports(&sms);
    let settings = mail::settings();
    let now = Utc::now();
    let claimed = deliver::claim(&db, &settings, &transports.channels(), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        let begun = deliver::begin(&db, c, &settings, now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(begun, Begin::Send(_)), "{begun:?}");
    }
    // While the lease holds, no other worker sends them.
    let pass = deliver::run_once(&db, &transports, &settings, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.claimed, 0);
    assert!(mail::received_by(&email).is_empty());
    // After the lease, the next pass sends each once; later passes find nothing to send.
    let later = now + chrono::Duration::seconds(i64::from(settings.lease_secs) + 1);
    let pass = deliver::run_once(&db, &transports, &settings, later)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pass.claimed, pass.sent), (2, 2), "{pass:?}");
    let again = deliver::run_once(
        &db,
        &transports,
        &settings,
        later + chrono::Duration::hours(1),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.claimed, 0);
    let sent = rows(&app, f.t.id, &id).await;
    assert!(
        sent.iter()
            .all(|(_, _, status, attempts)| status == "sent" && *attempts == 2),
        "{sent:?}"
    );

    // The email: the report's own PDF attached, exactly one message.
    let got = mail_for(&email, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert!(
        m.subject.starts_with("Vehicle diagnostics report from "),
        "{}",
        m.subject
    );
    assert!(m.text().contains("attached"), "{}", m.text());
    assert_eq!(m.attachments.len(), 1, "{:?}", m.attachments);
    assert_eq!(m.attachments[0].filename, format!("report-{id}.pdf"));
    assert_eq!(m.attachments[0].content_type, "application/pdf");
    let attached = m.attachments[0].bytes();
    let text = pdf_text(&attached).await;
    for needle in ["WVWZZZ1JZXW000001", "P0300", "Random misfire detected"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let (_, fresh) = app.get(&format!("/api/v1/reports/{id}"), &f.t.access).await;
    assert_eq!(
        download(&app, fresh["url"].as_str().unwrap()).await,
        attached
    );

    // The SMS: one request, to the number, with a link that downloads the same PDF.
    let requests = sms.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1);
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&requests[0].body)
            .into_owned()
            .collect();
    assert_eq!(form["To"], "+491705550101");
    let link = form["Body"]
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .unwrap_or_else(|| panic!("no link in {:?}", form["Body"]));
    assert!(link.contains(&format!("/reports/{id}.pdf")), "{link}");
    assert!(link.contains("X-Amz-Signature="), "{link}");
    assert_eq!(download(&app, link).await, attached);

    // The report records both channels as sent.
    assert_eq!(
        (
            fresh["delivery"].clone(),
            fresh["email_delivery"].clone(),
            fresh["sms_delivery"].clone()
        ),
        (json!("sent"), json!("sent"), json!("sent")),
        "{fresh}"
    );
    assert!(fresh["sent_at"].is_string());
}

#[tokio::test]
async fn a_patrons_report_channel_choice_applies_a_failed_channel_is_recorded_and_other_tenants_find_nothing(
) {
    let (app, db, f, session) = setup().await;
    // The session's patron chose SMS only for reports.
    {
        let mut tx = app.tenant_tx(f.t.id).await;
        sqlx::query(
            "insert into notification_preference (tenant_id, subject_id, topic, channels)
             select tenant_id, patron_id, 'reports', array['sms'] from session where tenant_id = $1 and id = $2",
        )
        .bind(f.t.id)
        .bind(session)
        .execute(&mut *tx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let email = unique_email("no-mail");
    let (status, report) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        None,
        json!({"session_id": session, "email": email, "phone": "+4917055501", "data": diagnostics()}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    assert_eq!(report["sent_to_email"], json!(email));
    assert_eq!(
        (
            report["email_delivery"].clone(),
            report["sms_delivery"].clone()
        ),
        (Value::Null, json!("pending"))
    );
    let queued = rows(&app, f.t.id, &id).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].0, "sms");

    // The provider refuses the number for good: the channel, and so the report, failed.
    let sms = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"code": 21211})))
        .mount(&sms)
        .await;
    let transports = Transports {
        sms: Some(Arc::new(
            TwilioSms::new(SmsSettings {
                api_base: sms.uri(),
                account_sid: "AC_reports".into(),
                auth_token: secrecy::SecretString::from("sms-token".to_owned()),
                from: "+15550001111".into(),
                timeout: Duration::from_secs(10),
            })
            .unwrap_or_else(|e| panic!("{e}")),
        )),
        ..mail::transports()
    };
    let pass = deliver::run_once(&db, &transports, &mail::settings(), Utc::now())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pass.dead, 1, "{pass:?}");
    let (_, got) = app.get(&format!("/api/v1/reports/{id}"), &f.t.access).await;
    assert_eq!(
        (
            got["delivery"].clone(),
            got["sms_delivery"].clone(),
            got["sent_at"].clone()
        ),
        (json!("failed"), json!("failed"), Value::Null),
        "{got}"
    );
    assert!(mail::received_by(&email).is_empty());

    // Another tenant: the report is not found over REST, and the hooks find nothing in its tenant.
    let other = app.signup().await;
    let (status, theirs) = app
        .get(&format!("/api/v1/reports/{id}"), &other.access)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{theirs}");
    assert_eq!(theirs["error"]["code"], "not_found");
    assert!(!theirs.to_string().contains("X-Amz"));
    let report_id: Uuid = id.parse().unwrap();
    let mut tx = db
        .begin_tenant(TenantId(other.id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = mail::documents();
    assert!(matches!(
        delivery::report_attachment(&mut tx, &store, report_id).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        delivery::report_link(&mut tx, &store, report_id).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn a_replayed_report_request_answers_a_fresh_link_and_the_current_delivery() {
    let (app, db, f, session) = setup().await;
    let email = unique_email("replay");
    let body = json!({"session_id": session, "email": email, "data": diagnostics()});
    let (status, first) = post_report(
        &app,
        &f.t.access,
        "diagnostics",
        Some("kiosk-replay"),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["delivery"], "pending");
    // What is kept for a replay holds no link (it would expire).
    let stored: Value = sqlx::query_scalar(
        "select response from idempotency_key where tenant_id = $1 and key = 'kiosk-replay'",
    )
    .bind(f.t.id)
    .fetch_one(&mut *app.tenant_tx(f.t.id).await)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored, json!({"id": first["id"]}));

    mail::wait_for_in(&db, &email, 1).await;
    let replay = app
        .client
        .post(app.url("/api/v1/reports/diagnostics"))
        .bearer_auth(&f.t.access)
        .header("idempotency-key", "kiosk-replay")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(
        replay
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let second: Value = replay.json().await.unwrap();
    assert_eq!(second["id"], first["id"]);
    // The answer is made now: the delivery as it stands, a link that works.
    assert_eq!(second["delivery"], "sent", "{second}");
    assert!(
        second["url_expires_at"].as_str() >= first["url_expires_at"].as_str(),
        "{first} {second}"
    );
    let bytes = download(&app, second["url"].as_str().unwrap()).await;
    assert!(pdf_text(&bytes).await.contains("WVWZZZ1JZXW000001"));
    let (_, list) = app
        .get(&format!("/api/v1/reports/session/{session}"), &f.t.access)
        .await;
    assert_eq!(list["reports"].as_array().map(Vec::len), Some(1));
}
