//! Reading what the real SMTP sink received. `./infra/dev.sh test` starts `tests/mail/smtp_sink.py` (aiosmtpd) on
//! `TEST_SMTP_PORT`, asking for the login `TEST_SMTP_USERNAME`/`TEST_SMTP_PASSWORD`, and it writes every message it
//! accepts to `TEST_MAIL_DIR` as `<n>.eml` and `<n>.json` (envelope and decoded parts). Tests deliver the outbox
//! with the workers' own code ([`deliver_now`]) and wait for a message to a recipient of their own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use switchyard_core::documents::{Store, StoreSettings};
use switchyard_core::notify::deliver::{self, Settings, Transports};
use switchyard_core::notify::smtp::{Security, SmtpSettings, SmtpTransport};
use switchyard_core::Db;

use crate::env_url;

/// One message as the sink received it.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub authenticated_as: Option<String>,
    /// Whether the message came over TLS (STARTTLS).
    pub tls: bool,
    pub subject: String,
    pub from: String,
    pub to: String,
    pub message_id: String,
    pub content_language: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The message's attachments (the sink records them base64-encoded).
    #[serde(default)]
    pub attachments: Vec<MailAttachment>,
}

/// A file attached to a message.
#[derive(Debug, Clone, Deserialize)]
pub struct MailAttachment {
    pub filename: String,
    pub content_type: String,
    /// The file, base64-encoded.
    pub content: String,
}

impl MailAttachment {
    /// The file's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&self.content)
            .unwrap_or_else(|e| panic!("attachment {}: {e}", self.filename))
    }
}

impl Mail {
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or("")
    }

    pub fn html(&self) -> &str {
        self.html.as_deref().unwrap_or("")
    }

    /// The one-time token in the message's link (`…?token=<token>`).
    /// The path and query of the first link in the text part that leads to `path` (`/console/verify-email?token=…`),
    /// without its origin (the test serves the console elsewhere than `NOTIFY_LINK_BASE`).
    pub fn link_path(&self, path: &str) -> String {
        let text = self.text();
        let start = text
            .find(&format!("{path}?token="))
            .unwrap_or_else(|| panic!("no link to {path} in the message: {text}"));
        text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect()
    }

    pub fn token(&self) -> String {
        let text = self.text();
        let start = text
            .find("token=")
            .unwrap_or_else(|| panic!("no token in the message: {text}"))
            + "token=".len();
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

/// The SMTP settings of the suite's sink (plain SMTP with a login, as `SMTP_SECURITY=none`).
pub fn smtp_settings() -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port: env_url("TEST_SMTP_PORT")
            .parse()
            .unwrap_or_else(|e| panic!("TEST_SMTP_PORT: {e}")),
        security: Security::None,
        username: std::env::var("TEST_SMTP_USERNAME").ok(),
        password: std::env::var("TEST_SMTP_PASSWORD")
            .ok()
            .map(secrecy::SecretString::from),
        from_address: "noreply@switchyard.test".into(),
        from_name: "Switchyard Tests".into(),
        timeout: Duration::from_secs(10),
        ca_pem: None,
    }
}

/// The document store of the suite (`S3_*` from `./infra/dev.sh test`), as the workers would build it: receipts
/// and reports to attach or link come from it.
pub fn documents() -> Store {
    let settings = StoreSettings::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|e| panic!("S3 settings: {e}"));
    Store::new(&settings)
}

/// The email transport the workers would build from [`smtp_settings`], with the suite's document store.
pub fn transports() -> Transports {
    let smtp = SmtpTransport::new(&smtp_settings()).unwrap_or_else(|e| panic!("smtp: {e}"));
    Transports {
        email: Some(Arc::new(smtp)),
        documents: documents(),
        ..Transports::default()
    }
}

/// The delivery settings the tests use: the workers' defaults, links under `https://app.switchyard.test`.
pub fn settings() -> Settings {
    Settings {
        link_base: "https://app.switchyard.test".into(),
        ..Settings::default()
    }
}

/// Runs delivery passes over the outbox of `db` until one claims nothing.
pub async fn deliver_now(db: &Db) {
    let transports = transports();
    let settings = settings();
    for _ in 0..100 {
        let pass = deliver::run_once(db, &transports, &settings, chrono::Utc::now())
            .await
            .unwrap_or_else(|e| panic!("delivery pass: {e}"));
        if pass.claimed == 0 {
            return;
        }
    }
}

fn folder() -> PathBuf {
    PathBuf::from(env_url("TEST_MAIL_DIR"))
}

/// Every message the sink received so far, oldest first.
pub fn received() -> Vec<Mail> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(folder())
        .unwrap_or_else(|e| panic!("TEST_MAIL_DIR: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok())
        .map(|bytes| {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("a sink record: {e}"))
        })
        .collect()
}

/// The messages received for `to`.
pub fn received_by(to: &str) -> Vec<Mail> {
    received()
        .into_iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r.eq_ignore_ascii_case(to)))
        .collect()
}

/// Delivers the outbox of `db` and waits (polling the sink's folder, at most a generous 60 s) until `count`
/// messages for `to` have arrived; returns them, oldest first.
pub async fn wait_for_in(db: &Db, to: &str, count: usize) -> Vec<Mail> {
    wait_matching_in(db, to, count, |_| true).await
}

/// As [`wait_for_in`], counting only the messages for `to` that `matches` accepts.
pub async fn wait_matching_in(
    db: &Db,
    to: &str,
    count: usize,
    matches: impl Fn(&Mail) -> bool,
) -> Vec<Mail> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        deliver_now(db).await;
        let got: Vec<Mail> = received_by(to).into_iter().filter(&matches).collect();
        if got.len() >= count {
            return got;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{count} message(s) for {to} did not arrive within 60 s; got {got:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// As [`wait_for_in`], on the shared test database: the `count`-th message for `to` (1 is the first).
pub async fn wait_for(to: &str, count: usize) -> Mail {
    let db = crate::app_db(2);
    let mut got = wait_for_in(&db, to, count).await;
    db.pool().close().await;
    got.swap_remove(count - 1)
}

/// The `count`-th message for `to` whose text links to `path` (`/invitations/accept`, `/verify-email`,
/// `/reset-password`), on the shared test database.
pub async fn wait_for_link(to: &str, path: &str, count: usize) -> Mail {
    let db = crate::app_db(2);
    let link = format!("{path}?token=");
    let mut got = wait_matching_in(&db, to, count, |m| m.text().contains(&link)).await;
    db.pool().close().await;
    got.swap_remove(count - 1)
}

/// How many messages for `to` link to `path` so far.
pub fn links_received(to: &str, path: &str) -> usize {
    let link = format!("{path}?token=");
    received_by(to)
        .iter()
        .filter(|m| m.text().contains(&link))
        .count()
}

impl crate::TestApp {
    /// Confirms `email`'s login with the code from its verification email (the first one it got).
    pub async fn verify_email(&self, email: &str) {
        let token = wait_for_link(email, "/verify-email", 1).await.token();
        let (status, body) = self
            .post(
                "/api/v1/auth/verify-email",
                serde_json::json!({ "token": token }),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    }

    /// Invites `email` with `role` as `token`'s member and returns the invitation token from the email it gets.
    pub async fn invite_by_email(&self, token: &str, email: &str, role: &str) -> String {
        let before = links_received(email, "/invitations/accept");
        let body = self
            .gql(
                Some(token),
                "mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { invitation { id } } }",
                serde_json::json!({ "e": email, "r": role }),
            )
            .await;
        assert!(body.get("errors").is_none(), "{body}");
        wait_for_link(email, "/invitations/accept", before + 1)
            .await
            .token()
    }
}
