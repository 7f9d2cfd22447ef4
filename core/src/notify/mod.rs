//! Notifications: the outbox of messages to people, by email ([`smtp`]), SMS ([`sms`]) and push ([`push`]).
//!
//! A message is written with [`enqueue`] in the same [`TenantTx`] as the change that causes it, so it exists
//! exactly when that change commits. It is one row per (event key, channel, recipient): enqueueing the same event
//! again is a no-op. `switchyard-workers` delivers the rows ([`deliver`]): claims across tenants through a
//! security-definer function with `for update skip locked` and a lease, retries with exponential backoff, a
//! dead-letter state, and a per-tenant sending limit. Templates are files ([`templates`]); owners and managers read
//! the delivery status through GraphQL ([`list`], [`get`]).

pub mod deliver;
pub mod flows;
pub mod push;
pub mod sms;
pub mod smtp;
pub mod subjects;
pub mod templates;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};

/// What a message is about: names its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Invitation,
    VerifyEmail,
    PasswordReset,
    Receipt,
    Sos,
    LowBalance,
    Debt,
    SessionWarning,
    /// A venue's figures of one venue-local day, to owners who opted in (see [`crate::analytics::summary`]).
    DailySummary,
    /// A kiosk report (seed 003): the PDF attached to an email, or a link to it by SMS.
    Report,
    /// An eject nobody answered, to the venue's owners and managers (see [`crate::rentals::alert_unanswered`]).
    EjectUnanswered,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Invitation,
        Kind::VerifyEmail,
        Kind::PasswordReset,
        Kind::Receipt,
        Kind::Sos,
        Kind::LowBalance,
        Kind::Debt,
        Kind::SessionWarning,
        Kind::DailySummary,
        Kind::Report,
        Kind::EjectUnanswered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Invitation => "invitation",
            Kind::VerifyEmail => "verify_email",
            Kind::PasswordReset => "password_reset",
            Kind::Receipt => "receipt",
            Kind::Sos => "sos",
            Kind::LowBalance => "low_balance",
            Kind::Debt => "debt",
            Kind::SessionWarning => "session_warning",
            Kind::DailySummary => "daily_summary",
            Kind::Report => "report",
            Kind::EjectUnanswered => "eject_unanswered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Where the message's link leads (under `NOTIFY_LINK_BASE`), for kinds that carry a one-time token: the web
    /// console's pages that complete each flow.
    pub fn link_path(self) -> Option<&'static str> {
        match self {
            Kind::Invitation => Some("/console/invitations/accept"),
            Kind::VerifyEmail => Some("/console/verify-email"),
            Kind::PasswordReset => Some("/console/reset-password"),
            Kind::Receipt
            | Kind::Sos
            | Kind::LowBalance
            | Kind::Debt
            | Kind::SessionWarning
            | Kind::DailySummary
            | Kind::Report
            | Kind::EjectUnanswered => None,
        }
    }
}

/// The languages messages are written in. A login's and a patron's `locale` chooses one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Locale {
    #[default]
    En,
    De,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::De => "de",
        }
    }

    /// Unknown stored values fall back to English (the column's check allows only these two).
    pub fn from_stored(s: &str) -> Self {
        Self::parse(s).unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "en" => Some(Locale::En),
            "de" => Some(Locale::De),
            _ => None,
        }
    }

    /// An optional `locale` input field: absent is English, anything but `en`/`de` is refused.
    pub fn input(field: &'static str, value: Option<&str>) -> Result<Self> {
        match value {
            None => Ok(Locale::En),
            Some(v) => Self::parse(v.trim()).ok_or_else(|| {
                Error::validation(field, "choose a language the messages exist in: en or de")
            }),
        }
    }
}

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A message to write to the outbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// What caused it; with channel and recipient, the message's identity (enqueueing it again is a no-op).
    pub event_key: String,
    pub channel: Channel,
    pub recipient: String,
    pub kind: Kind,
    pub locale: Locale,
    pub data: Value,
    /// A one-time token the message carries; cleared from the row once the message is sent or given up.
    pub secret: Option<String>,
}

/// Writes `message` to the outbox in the caller's transaction. Returns whether it is new (false: this event's
/// message to this recipient was already queued).
pub async fn enqueue(tx: &mut TenantTx, message: NewMessage) -> Result<bool> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into notification (tenant_id, id, event_key, channel, recipient, kind, locale, data, secret)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         on conflict on constraint notification_once_key do nothing returning id",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(&message.event_key)
    .bind(message.channel.as_str())
    .bind(&message.recipient)
    .bind(message.kind.as_str())
    .bind(message.locale.as_str())
    .bind(&message.data)
    .bind(&message.secret)
    .fetch_optional(tx.conn())
    .await?;
    if inserted.is_some() {
        metrics::counter!("notifications_enqueued_total", "kind" => message.kind.as_str())
            .increment(1);
    }
    Ok(inserted.is_some())
}

/// One message in the outbox, as owners and managers see it (the GraphQL `Notification` is this type). Its text
/// and any one-time token it carried are never shown; a push recipient shows only its platform and the device
/// token's last six characters.
#[derive(Debug, Clone, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct Notification {
    pub id: Uuid,
    /// What caused it (`invitation:<id>`, `session:<id>:receipt`, `sos:<id>`, `report:<id>` …).
    pub event_key: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    /// The email address or phone number; for push, the platform and the device token's last six characters.
    pub recipient: String,
    /// The template: `invitation`, `verify_email`, `password_reset`, `receipt`, `sos`, `low_balance`, `debt`,
    /// `session_warning`, `report`.
    pub kind: String,
    pub locale: String,
    /// `pending` (waiting or retrying), `sent`, `dead` (given up).
    pub status: String,
    pub attempts: i32,
    /// Why the last attempt failed, in general words (`the mail server answered 550 (refused)`), never the server's
    /// own text.
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Notification {
    /// The row as it may be shown: a push device token cut to its platform and last six characters.
    fn shown(mut self) -> Self {
        if let Some((platform @ ("fcm" | "apns"), token)) = self.recipient.split_once(':') {
            let skip = token.chars().count().saturating_sub(6);
            let tail: String = token.chars().skip(skip).collect();
            self.recipient = format!("{platform}:…{tail}");
        }
        self
    }
}

const COLUMNS: &str =
    "id, event_key, channel, recipient, kind, locale, status, attempts, last_error, \
                       next_attempt_at, last_attempt_at, sent_at, created_at";

/// The tenant's messages, newest first, `limit` at a time after the cursor `after` (the last id of the previous
/// page; messages are never deleted, so a cursor stays good, and an id that is not one of the tenant's messages —
/// another tenant's — answers `not_found`), optionally of one status (`pending`, `sent`, `dead`).
pub async fn list(
    tx: &mut TenantTx,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Notification>> {
    if let Some(s) = status {
        if !["pending", "sent", "dead"].contains(&s) {
            return Err(Error::validation("status", "one of pending, sent, dead"));
        }
    }
    if let Some(cursor) = after {
        get(tx, cursor).await?;
    }
    let mut query = sqlx::QueryBuilder::new(format!(
        "select {COLUMNS} from notification where tenant_id = "
    ));
    query.push_bind(tx.tenant());
    crate::db::filter(&mut query, "status = $", status);
    crate::db::filter(&mut query, "id < $", after);
    query
        .push(" order by id desc limit ")
        // A page holds at most 500; one more row tells the caller whether another page follows.
        .push_bind(limit.clamp(1, 501));
    let rows: Vec<Notification> = query.build_query_as().fetch_all(tx.conn()).await?;
    Ok(rows.into_iter().map(Notification::shown).collect())
}

/// One message; another tenant's id answers `not_found`.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Notification> {
    let sql = format!("select {COLUMNS} from notification where tenant_id = $1 and id = $2");
    let row: Option<Notification> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(Notification::shown)
        .ok_or(Error::NotFound("notification"))
}

/// The language of a member's messages.
pub async fn set_member_locale(tx: &mut TenantTx, user: Uuid, locale: Locale) -> Result<()> {
    sqlx::query("update app_user set locale = $2 where id = $1")
        .bind(user)
        .bind(locale.as_str())
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// A patron's message language (`None` leaves it as it is).
pub async fn set_patron_preferences(
    tx: &mut TenantTx,
    patron: Uuid,
    locale: Option<Locale>,
) -> Result<()> {
    sqlx::query("update patron set locale = coalesce($3, locale) where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(patron)
        .bind(locale.map(Locale::as_str))
        .execute(tx.conn())
        .await?;
    Ok(())
}
