//! The hook between documents and the messaging outbox. Nothing here sends anything: the outbox's workers call
//! these to get what to send and to record what they sent.
//!
//! * A receipt to email after a session, rental or charge ends: [`receipt_attachment`] makes the receipt if it
//!   was not made yet and returns the PDF to attach.
//! * A kiosk report to deliver (seed 003: the PDF attached to an email, a link by SMS) rides on outbox rows
//!   written in the report's own transaction (`notify::flows::report`), which calls [`queue_report`] to mark the
//!   channels pending; at send time [`report_attachment`] gives the PDF, [`report_link`] a fresh presigned URL for
//!   the SMS, and [`mark_report_delivered`] records each channel's final outcome once and counts it in
//!   `reports_delivered_total{method}` / `reports_failed_total{reason}`.

use uuid::Uuid;

use super::receipts;
use super::store::{Link, Store};
use crate::db::TenantTx;
use crate::error::{Error, Result};

/// A PDF to attach: file name and bytes.
#[derive(Clone)]
pub struct Attachment {
    pub filename: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Attachment({}, {} bytes)",
            self.filename,
            self.bytes.len()
        )
    }
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

/// Records that `report` is to be delivered on the channels given (an address each; `None`: not on that channel),
/// in the transaction that writes the outbox rows for them. Without any, the report's delivery stays `none`.
pub async fn queue_report(
    tx: &mut TenantTx,
    report: Uuid,
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "update report set email_delivery = case when $3 then 'pending' end,
                           sms_delivery = case when $4 then 'pending' end,
                           delivery = case when $3 or $4 then 'pending' else 'none' end
          where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(report)
    .bind(email.is_some())
    .bind(phone.is_some())
    .execute(tx.conn())
    .await?;
    Ok(())
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

/// Records the final outcome of one channel's delivery (`method` is `email` or `sms`): `sent` or `failed`, once per
/// channel — recording a channel again changes nothing and counts nothing — and counts it in
/// `reports_delivered_total{method}` or `reports_failed_total{reason="delivery"}`. The report's `delivery` then sums
/// its channels up: `pending` while one is, else `sent` when every channel asked for was sent, else `failed`;
/// `sent_at` is when the first channel was sent.
pub async fn mark_report_delivered(
    tx: &mut TenantTx,
    report: Uuid,
    method: &'static str,
    ok: bool,
) -> Result<()> {
    let column = match method {
        "email" => "email_delivery",
        "sms" => "sms_delivery",
        _ => return Err(Error::validation("method", "email or sms")),
    };
    // `column` is one of two fixed names, never input.
    let sql = format!(
        "update report set {column} = $3,
                sent_at = case when $3 = 'sent' then coalesce(sent_at, now()) else sent_at end
          where tenant_id = $1 and id = $2 and {column} = 'pending'"
    );
    let changed = sqlx::query(&sql)
        .bind(tx.tenant())
        .bind(report)
        .bind(if ok { "sent" } else { "failed" })
        .execute(tx.conn())
        .await?
        .rows_affected();
    if changed == 0 {
        return Ok(());
    }
    sqlx::query(
        "update report set delivery = case
             when 'pending' in (coalesce(email_delivery, ''), coalesce(sms_delivery, '')) then 'pending'
             when 'failed' in (coalesce(email_delivery, ''), coalesce(sms_delivery, '')) then 'failed'
             else 'sent' end
          where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(report)
    .execute(tx.conn())
    .await?;
    if ok {
        metrics::counter!("reports_delivered_total", "method" => method).increment(1);
    } else {
        metrics::counter!("reports_failed_total", "reason" => "delivery").increment(1);
    }
    Ok(())
}
