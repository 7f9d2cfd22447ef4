//! Delivering the outbox (run by `switchyard-workers`; callable from tests).
//!
//! One pass: [`claim`] due messages across tenants (the oldest waiting first; `for update skip locked` and a lease,
//! under a fresh claim id), then for each: [`begin`] counts the attempt in the message's tenant (or postpones it when
//! the tenant has reached its per-minute sending limit), the transport sends it, and [`record`] writes the outcome
//! under the same claim: `sent`, a retry after an exponential backoff, or `dead` after `max_attempts` failures (or
//! at once on a permanent refusal).
//!
//! **At least once.** The attempt is committed before the message goes out and the outcome after, so two workers
//! never send the same message while a lease holds (the lease is longer than the transport's timeout and starts again
//! when an attempt begins, so a long batch does not outrun it), and a worker
//! that dies before sending leaves the message to the next pass after the lease. A worker that dies after the
//! server accepted the message but before the outcome is written leaves it `pending`, and the next pass sends it
//! again: the only window for a duplicate. Each email carries a stable `Message-ID` (`<notification id@switchyard>`)
//! so a mail client can recognise such a duplicate. We chose this over at-most-once because an invitation or a
//! password reset that silently never arrives is worse than one that arrives twice.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use futures_util::{FutureExt, StreamExt};

use super::templates::{self, Rendered};
use super::{Kind, Locale};
use crate::db::{Db, TenantId};
use crate::documents::delivery::{self as documents, Attachment};
use crate::documents::Store;
use crate::error::{Error, Result};

/// Settings of the delivery pass.
#[derive(Debug, Clone)]
pub struct Settings {
    pub batch: i32,
    pub lease_secs: i32,
    /// Attempts after which a message that keeps failing is `dead`.
    pub max_attempts: i32,
    /// The wait after the first failure; it doubles with each further one (at most an hour).
    pub retry_base: Duration,
    /// Messages one tenant may send per minute; more wait.
    pub per_tenant_per_minute: i64,
    /// Where links in messages lead (`<base>/verify-email?token=…`).
    pub link_base: String,
    /// Messages of one claimed batch sent at once (`NOTIFY_CONCURRENCY`); each is begun, sent and recorded on its own.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 100,
            lease_secs: 120,
            max_attempts: 5,
            retry_base: Duration::seconds(30),
            per_tenant_per_minute: 120,
            link_base: "http://127.0.0.1:8080".into(),
            concurrency: 8,
        }
    }
}

/// A message as a transport sends it.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tenant: TenantId,
    pub id: Uuid,
    pub claim: Uuid,
    pub channel: String,
    pub recipient: String,
    pub kind: Kind,
    pub locale: Locale,
    pub tenant_name: String,
    pub attempts: i32,
    pub rendered: Rendered,
    /// The message's data (a receipt's session, a report's id …).
    pub data: Value,
    /// PDFs to attach (email only): a receipt, a report. Filled by [`prepare`].
    pub attachments: Vec<Attachment>,
    /// A document's download link for a channel that cannot attach (a report by SMS). Filled by [`prepare`].
    pub link: Option<String>,
}

/// Why a send failed, in words safe to show an owner (no server text, no addresses, no credentials).
#[derive(Debug, Clone)]
pub struct SendError {
    /// Retrying cannot help (the server refused the recipient for good, say).
    pub permanent: bool,
    pub safe: String,
}

/// Something that delivers one channel's messages (email over SMTP; a fake in a test).
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    async fn send(&self, message: &Outgoing) -> std::result::Result<(), SendError>;
}

/// The transports a worker has, by channel; a channel without one is not claimed (its messages wait). And the
/// document store the attachments and links of receipts and reports come from (off: receipts go without their PDF).
#[derive(Clone, Default)]
pub struct Transports {
    pub email: Option<Arc<dyn Transport>>,
    pub sms: Option<Arc<dyn Transport>>,
    pub push: Option<Arc<dyn Transport>>,
    pub documents: Store,
}

impl Transports {
    fn for_channel(&self, channel: &str) -> Option<&Arc<dyn Transport>> {
        match channel {
            "email" => self.email.as_ref(),
            "sms" => self.sms.as_ref(),
            "push" => self.push.as_ref(),
            _ => None,
        }
    }

    /// The channels this worker can deliver.
    pub fn channels(&self) -> Vec<String> {
        ["email", "sms", "push"]
            .into_iter()
            .filter(|c| self.for_channel(c).is_some())
            .map(str::to_owned)
            .collect()
    }
}

/// A claimed message.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Claimed {
    pub tenant_id: TenantId,
    pub notification_id: Uuid,
    pub claim_id: Uuid,
}

/// Claims up to `settings.batch` due messages of `channels` at `now` across tenants.
pub async fn claim(
    db: &Db,
    settings: &Settings,
    channels: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<Claimed>> {
    db.system()
        .claim_due_notifications(now, settings.batch, settings.lease_secs, channels)
        .await
}

/// What [`begin`] decided.
#[derive(Debug)]
pub enum Begin {
    Send(Box<Outgoing>),
    /// Already sent or given up, or claimed again by another worker after this claim's lease ran out.
    Skip,
    /// The tenant reached its sending limit; the message waits until the minute has passed.
    Throttled,
    /// The message cannot be rendered (a bug); it is dead.
    Broken,
}

#[derive(sqlx::FromRow)]
struct Row {
    channel: String,
    recipient: String,
    kind: String,
    locale: String,
    data: Value,
    secret: Option<String>,
}

/// Counts the attempt (committed before anything is sent) and renders the message, unless the tenant is over its
/// limit.
pub async fn begin(
    db: &Db,
    claimed: &Claimed,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Begin> {
    let tenant = claimed.tenant_id;
    let mut tx = db.begin_tenant(tenant).await?;
    let row: Option<Row> = sqlx::query_as(
        "select channel, recipient, kind, locale, data, secret from notification
         where tenant_id = $1 and id = $2 and claim_id = $3 and status = 'pending' for update",
    )
    .bind(tenant)
    .bind(claimed.notification_id)
    .bind(claimed.claim_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(Begin::Skip);
    };
    // One tenant's count at a time, so concurrent workers cannot both take the last place in the minute.
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('notify:' || $1::text, 0))")
        .bind(tenant)
        .execute(tx.conn())
        .await?;
    let (recent, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "select count(*), min(last_attempt_at) from notification
         where tenant_id = $1 and last_attempt_at > $2 - interval '1 minute'",
    )
    .bind(tenant)
    .bind(now)
    .fetch_one(tx.conn())
    .await?;
    if recent >= settings.per_tenant_per_minute {
        let at = oldest.unwrap_or(now) + Duration::minutes(1);
        sqlx::query(
            "update notification set next_attempt_at = $3, claim_id = null where tenant_id = $1 and id = $2",
        )
        .bind(tenant)
        .bind(claimed.notification_id)
        .bind(at.max(now + Duration::seconds(1)))
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        metrics::counter!("notifications_sent_total", "channel" => row.channel, "outcome" => "throttled")
            .increment(1);
        return Ok(Begin::Throttled);
    }
    let tenant_name: String = sqlx::query_scalar("select name from tenant where id = $1")
        .bind(tenant)
        .fetch_one(tx.conn())
        .await?;
    let branding = crate::tenants::branding(&mut tx).await?;
    let kind = Kind::parse(&row.kind);
    let locale = Locale::from_stored(&row.locale);
    let link = kind.and_then(|k| k.link_path()).and_then(|path| {
        row.secret.as_ref().map(|t| {
            format!(
                "{}{path}?token={t}",
                settings.link_base.trim_end_matches('/')
            )
        })
    });
    let rendered = kind
        .ok_or_else(|| format!("unknown kind {}", row.kind))
        .and_then(|k| {
            templates::render(
                k,
                locale,
                templates::Sender {
                    name: &tenant_name,
                    branding: &branding,
                },
                &row.data,
                row.secret.as_deref(),
                link.as_deref(),
            )
        });
    let (Some(kind), Ok(rendered)) = (kind, rendered.as_ref()) else {
        tracing::error!(notification = %claimed.notification_id, error = ?rendered.err(), "a message cannot be rendered");
        give_up(&mut tx, claimed, "the message could not be rendered").await?;
        if let (Some(Kind::Report), Some(report)) = (kind, uuid_in(&row.data, "report_id")) {
            let method = if row.channel == "sms" { "sms" } else { "email" };
            documents::mark_report_delivered(&mut tx, report, method, false).await?;
        }
        tx.commit().await?;
        metrics::counter!("notifications_sent_total", "channel" => row.channel, "outcome" => "dead")
            .increment(1);
        return Ok(Begin::Broken);
    };
    // The lease starts again with the attempt (by the database's clock): a batch that has run a while must not let
    // another worker claim a message this one is about to send.
    let attempts: i32 = sqlx::query_scalar(
        "update notification set attempts = attempts + 1, last_attempt_at = $3,
           next_attempt_at = greatest(next_attempt_at, now() + make_interval(secs => $4))
         where tenant_id = $1 and id = $2 returning attempts",
    )
    .bind(tenant)
    .bind(claimed.notification_id)
    .bind(now)
    .bind(f64::from(settings.lease_secs))
    .fetch_one(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(Begin::Send(Box::new(Outgoing {
        tenant,
        id: claimed.notification_id,
        claim: claimed.claim_id,
        channel: row.channel,
        recipient: row.recipient,
        kind,
        locale,
        tenant_name,
        attempts,
        rendered: rendered.clone(),
        data: row.data,
        attachments: Vec::new(),
        link: None,
    })))
}

fn uuid_in(data: &Value, field: &str) -> Option<Uuid> {
    data.get(field)?.as_str()?.parse().ok()
}

/// Fetches what a message carries besides its text, after its attempt began: a receipt email's PDF (made now if the
/// receipt was not made yet), a report email's PDF, a report SMS's fresh download link. A document that cannot be
/// read now fails the attempt like a refused send (retried; a report that no longer exists is given up).
pub async fn prepare(
    db: &Db,
    store: &Store,
    message: &mut Outgoing,
) -> std::result::Result<(), SendError> {
    let wanted = match (message.kind, message.channel.as_str()) {
        // Without a document store a receipt still goes out, without its PDF.
        (Kind::Receipt, "email") if store.is_on() => uuid_in(&message.data, "session_id"),
        (Kind::Report, "email" | "sms") => uuid_in(&message.data, "report_id"),
        _ => None,
    };
    let Some(id) = wanted else {
        return Ok(());
    };
    let fetched = async {
        let mut tx = db.begin_tenant(message.tenant).await?;
        match (message.kind, message.channel.as_str()) {
            (Kind::Receipt, _) => {
                let pdf = documents::receipt_attachment(&mut tx, store, id).await?;
                message.attachments.push(pdf);
            }
            (_, "email") => {
                let pdf = documents::report_attachment(&mut tx, store, id).await?;
                message.attachments.push(pdf);
            }
            _ => message.link = Some(documents::report_link(&mut tx, store, id).await?.url),
        }
        // A receipt made for the email is kept (the same one the API hands out later).
        tx.commit().await
    };
    fetched.await.map_err(|e: Error| {
        tracing::warn!(tenant.id = %message.tenant, notification = %message.id, error = ?e, "a message's document could not be read");
        SendError {
            permanent: matches!(e, Error::NotFound(_)),
            safe: "the document to send could not be read".into(),
        }
    })
}

async fn give_up(tx: &mut crate::TenantTx, claimed: &Claimed, why: &str) -> Result<()> {
    sqlx::query(
        "update notification set status = 'dead', secret = null, last_error = $3, claim_id = null
         where tenant_id = $1 and id = $2",
    )
    .bind(claimed.tenant_id)
    .bind(claimed.notification_id)
    .bind(why)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// What [`record`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Retry,
    Dead,
    /// The claim was no longer this worker's; nothing written.
    Lost,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Sent => "sent",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead",
            Outcome::Lost => "lost",
        }
    }
}

/// Writes the outcome of sending `message`, under its claim.
pub async fn record(
    db: &Db,
    message: &Outgoing,
    result: std::result::Result<(), SendError>,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let mut tx = db.begin_tenant(message.tenant).await?;
    let (outcome, updated) = match &result {
        Ok(()) => (
            Outcome::Sent,
            sqlx::query(
                "update notification set status = 'sent', sent_at = $4, secret = null, last_error = null,
                   claim_id = null
                 where tenant_id = $1 and id = $2 and claim_id = $3 and status = 'pending'",
            )
            .bind(message.tenant)
            .bind(message.id)
            .bind(message.claim)
            .bind(now)
            .execute(tx.conn())
            .await?,
        ),
        Err(e) if e.permanent || message.attempts >= settings.max_attempts => (
            Outcome::Dead,
            sqlx::query(
                "update notification set status = 'dead', secret = null, last_error = $4, claim_id = null
                 where tenant_id = $1 and id = $2 and claim_id = $3 and status = 'pending'",
            )
            .bind(message.tenant)
            .bind(message.id)
            .bind(message.claim)
            .bind(&e.safe)
            .execute(tx.conn())
            .await?,
        ),
        Err(e) => {
            let doublings = (message.attempts - 1).clamp(0, 20) as u32;
            let wait = (settings.retry_base * 2i32.saturating_pow(doublings)).min(Duration::hours(1));
            (
                Outcome::Retry,
                sqlx::query(
                    "update notification set next_attempt_at = $4, last_error = $5, claim_id = null
                     where tenant_id = $1 and id = $2 and claim_id = $3 and status = 'pending'",
                )
                .bind(message.tenant)
                .bind(message.id)
                .bind(message.claim)
                .bind(now + wait)
                .bind(&e.safe)
                .execute(tx.conn())
                .await?,
            )
        }
    };
    let outcome = if updated.rows_affected() == 1 {
        outcome
    } else {
        Outcome::Lost
    };
    // A report's channel is done once it was sent or given up: recorded on the report in the same transaction, so
    // the report and its outbox row never disagree (and a late, lost claim records nothing).
    if message.kind == Kind::Report && matches!(outcome, Outcome::Sent | Outcome::Dead) {
        if let (Some(report), Some(method)) = (
            uuid_in(&message.data, "report_id"),
            match message.channel.as_str() {
                "email" => Some("email"),
                "sms" => Some("sms"),
                _ => None,
            },
        ) {
            documents::mark_report_delivered(&mut tx, report, method, outcome == Outcome::Sent)
                .await?;
        }
    }
    tx.commit().await?;
    metrics::counter!("notifications_sent_total", "channel" => message.channel.clone(), "outcome" => outcome.as_str())
        .increment(1);
    Ok(outcome)
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub claimed: usize,
    pub sent: usize,
    pub retried: usize,
    pub dead: usize,
    pub throttled: usize,
    pub skipped: usize,
}

enum Step {
    Sent,
    Retried,
    Dead,
    Throttled,
    Skipped,
    /// A database error; the message stays leased and is tried again after the lease.
    Failed,
}

async fn deliver_one(
    db: &Db,
    transports: &Transports,
    settings: &Settings,
    now: DateTime<Utc>,
    c: &Claimed,
) -> Step {
    match begin(db, c, settings, now).await {
        Ok(Begin::Send(mut message)) => {
            let result = match transports.for_channel(&message.channel) {
                Some(transport) => match prepare(db, &transports.documents, &mut message).await {
                    // A transport that panics on a message (a library's bug met by odd content) fails that
                    // message for good; it does not end the process, which every replica's next claim would repeat.
                    Ok(()) => std::panic::AssertUnwindSafe(transport.send(&message))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            Err(SendError {
                                permanent: true,
                                safe: "the message could not be written".into(),
                            })
                        }),
                    Err(e) => Err(e),
                },
                None => Err(SendError {
                    permanent: false,
                    safe: "no transport for this channel".into(),
                }),
            };
            if let Err(e) = &result {
                tracing::warn!(tenant.id = %message.tenant, notification = %message.id, attempts = message.attempts, error = %e.safe, "a message was not delivered");
            }
            match record(db, &message, result, settings, now).await {
                Ok(Outcome::Sent) => Step::Sent,
                Ok(Outcome::Retry) => Step::Retried,
                Ok(Outcome::Dead) => Step::Dead,
                Ok(Outcome::Lost) => Step::Skipped,
                Err(e) => {
                    tracing::error!(notification = %message.id, error = ?e, "recording a delivery failed");
                    Step::Failed
                }
            }
        }
        Ok(Begin::Skip) => Step::Skipped,
        Ok(Begin::Throttled) => Step::Throttled,
        Ok(Begin::Broken) => Step::Dead,
        Err(e) => {
            tracing::error!(notification = %c.notification_id, error = ?e, "starting a delivery failed");
            Step::Failed
        }
    }
}

/// Claims and delivers one batch of messages due at `now`. A channel without a transport is not claimed at all.
pub async fn run_once(
    db: &Db,
    transports: &Transports,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Pass> {
    let channels = transports.channels();
    if channels.is_empty() {
        return Ok(Pass::default());
    }
    let claimed = claim(db, settings, &channels, now).await?;
    let mut pass = Pass {
        claimed: claimed.len(),
        ..Pass::default()
    };
    // Each message is begun, sent and recorded on its own, several at once: a slow server answers one message
    // late, not the whole batch.
    // Owned claims (not references into the batch), so the pass stays a `Send` future that can be spawned.
    let mut results = futures_util::stream::iter(claimed)
        .map(|c| async move { deliver_one(db, transports, settings, now, &c).await })
        .buffer_unordered(settings.concurrency.max(1));
    while let Some(step) = results.next().await {
        match step {
            Step::Sent => pass.sent += 1,
            Step::Retried => pass.retried += 1,
            Step::Dead => pass.dead += 1,
            Step::Throttled => pass.throttled += 1,
            Step::Skipped => pass.skipped += 1,
            Step::Failed => {}
        }
    }
    if pass.claimed > 0 {
        tracing::info!(
            claimed = pass.claimed,
            sent = pass.sent,
            retried = pass.retried,
            dead = pass.dead,
            throttled = pass.throttled,
            "notification pass"
        );
    }
    Ok(pass)
}
