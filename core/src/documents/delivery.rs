//! The hook between documents and the messaging outbox (issue 12's notifications half, built separately). Nothing
//! here sends anything: the outbox's workers call these to get what to send and to record what they sent.
//!
//! * A receipt to email after a session, rental or charge ends: [`receipt_attachment`] makes the receipt if it
//!   was not made yet and returns the PDF to attach.
//! * A kiosk report to deliver (seed 003: the PDF attached to an email, a link by SMS): reports created with an
//!   email or phone are `delivery = 'pending'`; [`pending_reports`] lists them (oldest first, claimed with
//!   `for update skip locked` in the caller's transaction), [`report_attachment`] gives the PDF,
//!   [`report_link`] a presigned URL for the SMS, and [`mark_report_delivered`] records the outcome once per
//!   channel and counts it in `reports_delivered_total{method}` / `reports_failed_total{reason}`.

use uuid::Uuid;

use super::receipts;
use super::store::{Link, Store};
use crate::db::TenantTx;
use crate::error::{Error, Result};

/// A PDF to attach: file name and bytes.
pub struct Attachment {
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// The receipt of an ended session as an email attachment (made now if it was not yet; the caller commits).
pub async fn receipt_attachment(
    tx: &mut TenantTx,
    store: &Store,
    session_id: Uuid,
) -> Result<Attachment> {
    let receipt = receipts::for_session(tx, store, session_id).await?;
    Ok(Attachment {
        filename: format!("receipt-{session_id}.pdf"),
        bytes: store.get(tx.tenant(), &receipt.object_key).await?,
    })
}

/// A report waiting for delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingReport {
    pub id: Uuid,
    pub session_id: Uuid,
    pub kind: String,
    pub object_key: String,
    pub sent_to_email: Option<String>,
    pub sent_to_phone: Option<String>,
}

/// Up to `limit` reports of this tenant waiting for delivery, oldest first, locked for the caller's transaction
/// (other workers skip them).
pub async fn pending_reports(tx: &mut TenantTx, limit: i64) -> Result<Vec<PendingReport>> {
    Ok(sqlx::query_as(
        "select r.id, r.session_id, k.key as kind, r.object_key, r.sent_to_email, r.sent_to_phone
           from report r join report_kind k on k.tenant_id = r.tenant_id and k.id = r.kind_id
          where r.tenant_id = $1 and r.delivery = 'pending'
          order by r.created_at, r.id limit $2
          for update of r skip locked",
    )
    .bind(tx.tenant())
    .bind(limit.clamp(1, 1000))
    .fetch_all(tx.conn())
    .await?)
}

async fn key_of(tx: &mut TenantTx, report: Uuid) -> Result<String> {
    let key: Option<String> =
        sqlx::query_scalar("select object_key from report where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(report)
            .fetch_optional(tx.conn())
            .await?;
    key.ok_or(Error::NotFound("report"))
}

/// A report's PDF as an email attachment.
pub async fn report_attachment(
    tx: &mut TenantTx,
    store: &Store,
    report: Uuid,
) -> Result<Attachment> {
    let key = key_of(tx, report).await?;
    Ok(Attachment {
        filename: format!("report-{report}.pdf"),
        bytes: store.get(tx.tenant(), &key).await?,
    })
}

/// A presigned link to a report, for an SMS (valid for `DOCUMENT_URL_TTL_SECS`).
pub async fn report_link(tx: &mut TenantTx, store: &Store, report: Uuid) -> Result<Link> {
    let key = key_of(tx, report).await?;
    store.link(tx.tenant(), &key).await
}

/// Records a delivery attempt's outcome: `sent` (with `sent_at`) or `failed`. `method` is `email` or `sms`.
/// Recording `sent` again for a report already sent changes nothing and counts nothing.
pub async fn mark_report_delivered(
    tx: &mut TenantTx,
    report: Uuid,
    method: &'static str,
    ok: bool,
) -> Result<()> {
    let changed = sqlx::query(
        "update report set delivery = $3, sent_at = case when $3 = 'sent' then now() else sent_at end
          where tenant_id = $1 and id = $2 and delivery <> 'sent'",
    )
    .bind(tx.tenant())
    .bind(report)
    .bind(if ok { "sent" } else { "failed" })
    .execute(tx.conn())
    .await?
    .rows_affected();
    if changed > 0 {
        if ok {
            metrics::counter!("reports_delivered_total", "method" => method).increment(1);
        } else {
            metrics::counter!("reports_failed_total", "reason" => "delivery").increment(1);
        }
    }
    Ok(())
}
