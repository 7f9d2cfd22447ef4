//! Receipts: one PDF per ended session (a rental or a charge is a session too), made on first request — by the
//! staff or patron app asking for it, or by the messaging outbox when it emails one ([`super::delivery`]) — and
//! stored; asking again returns the same receipt. Concurrent first requests make one: the second waits on the
//! first's row (`receipt_session_key`) and returns it once committed. The object key is derived from the session,
//! so a request that stored the PDF and then rolled back leaves nothing that a retry does not overwrite.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::pdf::Doc;
use super::store::{self, Store};
use super::tax::{self, Split};
use super::{legal, local_time, venue_tax, Legal};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::money;
use crate::pricing::Line;
use crate::sessions::{self, SessionStatus};
use crate::{patrons, stations, venues};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Receipt {
    pub id: Uuid,
    pub session_id: Uuid,
    pub object_key: String,
    pub byte_size: i32,
    pub currency: String,
    /// What the session cost, tax included (minor units).
    pub total: i64,
    /// The tax in `total`.
    pub tax: i64,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, session_id, object_key, byte_size, currency::text as currency, total, tax, created_at";

/// Everything a receipt prints; [`render`] turns it into a PDF (pure, for the benchmark too).
#[derive(Debug, Clone)]
pub struct ReceiptData {
    pub legal: Legal,
    pub venue_name: String,
    pub venue_address: String,
    pub timezone: String,
    pub station_name: String,
    pub patron_name: Option<String>,
    pub session_id: Uuid,
    pub kind: &'static str,
    pub status: SessionStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    pub energy_wh: i64,
    pub currency: String,
    pub lines: Vec<Line>,
    pub split: Split,
    pub tax_label: String,
    pub payment_method: String,
}

/// The receipt of a session, if it was made.
pub async fn find(tx: &mut TenantTx, session_id: Uuid) -> Result<Option<Receipt>> {
    let sql = format!("select {COLUMNS} from receipt where tenant_id = $1 and session_id = $2");
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(session_id)
        .fetch_optional(tx.conn())
        .await?)
}

/// The receipt of an ended session, made and stored now if it was not yet. The caller has checked that the asker
/// may see the session (venue scope, or the patron's own), and commits.
pub async fn for_session(tx: &mut TenantTx, store: &Store, session_id: Uuid) -> Result<Receipt> {
    if let Some(receipt) = find(tx, session_id).await? {
        return Ok(receipt);
    }
    let data = gather(tx, session_id).await?;
    let bytes = render(&data);
    let key = store::key(tx.tenant(), "receipts", session_id);
    let size = i32::try_from(bytes.len()).map_err(|e| Error::Internal(e.into()))?;
    let sql = format!(
        "insert into receipt (tenant_id, id, session_id, object_key, byte_size, currency, total, tax)
         values ($1, $2, $3, $4, $5, $6, $7, $8)
         on conflict (tenant_id, session_id) do nothing
         returning {COLUMNS}"
    );
    let inserted: Option<Receipt> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(session_id)
        .bind(&key)
        .bind(size)
        .bind(&data.currency)
        .bind(data.split.gross)
        .bind(data.split.tax)
        .fetch_optional(tx.conn())
        .await?;
    match inserted {
        Some(receipt) => {
            store.put_pdf(&key, bytes).await?;
            metrics::counter!("documents_generated_total", "kind" => "receipt").increment(1);
            Ok(receipt)
        }
        // Another request made it meanwhile (and committed: the insert waited for it).
        None => find(tx, session_id)
            .await?
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("receipt vanished after a conflict"))),
    }
}

/// Reads what the receipt of `session_id` prints.
pub async fn gather(tx: &mut TenantTx, session_id: Uuid) -> Result<ReceiptData> {
    let session = sessions::get(tx, session_id).await?;
    let Some(ended_at) = session.ended_at.filter(|_| !session.is_running()) else {
        return Err(Error::Conflict(
            "the session is still running: its receipt is made once it has ended".into(),
        ));
    };
    let venue = venues::get(tx, session.venue_id).await?;
    let station = stations::get(tx, session.station_id).await?;
    let patron = patrons::get(tx, session.patron_id).await?;
    let tax = venue_tax(tx, session.venue_id).await?;
    let payment_method: String =
        sqlx::query_scalar("select payment_method from session where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(session_id)
            .fetch_one(tx.conn())
            .await?;
    let cost = if session.status == SessionStatus::Failed {
        // A failed session (an eject that failed, a charger that refused) costs nothing.
        crate::pricing::Price {
            amount: 0,
            currency: session.currency.clone(),
            lines: Vec::new(),
        }
    } else {
        session.cost_at(ended_at)
    };
    Ok(ReceiptData {
        legal: legal(tx).await?,
        venue_name: venue.name,
        venue_address: venue.address,
        timezone: session.timezone.clone(),
        station_name: station.name,
        patron_name: (!patron.walk_in).then_some(patron.display_name),
        session_id,
        kind: if session.asset_id.is_some() {
            "Rental"
        } else if session.energy_wh > 0 || session.connector.is_some() {
            "Charging session"
        } else {
            "Session"
        },
        status: session.status,
        started_at: session.started_at,
        ended_at,
        energy_wh: session.energy_wh,
        currency: session.currency.clone(),
        split: tax::split(cost.amount, tax.rate_bp),
        lines: cost.lines,
        tax_label: tax.label,
        payment_method,
    })
}

/// How a payment method is printed.
pub fn payment_label(method: &str) -> &'static str {
    match method {
        "cash" => "Cash",
        "card" => "Card (charged at the start)",
        _ => "Wallet",
    }
}

/// Prints the issuer block shared by receipts and invoices.
pub(crate) fn issuer(doc: &mut Doc, legal: &Legal) {
    doc.heading(legal.issuer(), 14.0);
    if let Some(address) = &legal.legal_address {
        doc.text(address);
    }
    if let Some(tax_id) = &legal.tax_id {
        doc.text(&format!("Tax ID: {tax_id}"));
    }
}

/// The receipt's PDF.
pub fn render(d: &ReceiptData) -> Vec<u8> {
    let amount = |a: i64| format!("{} {}", money::format(a, &d.currency), d.currency);
    let mut doc = Doc::new(&format!("Receipt {}", d.session_id));
    issuer(&mut doc, &d.legal);
    doc.gap().heading("Receipt", 18.0);
    doc.text(&format!("{} {}", d.kind, d.session_id));
    let venue = if d.venue_address.is_empty() {
        d.venue_name.clone()
    } else {
        format!("{}, {}", d.venue_name, d.venue_address)
    };
    doc.text(&format!("Venue: {venue}"));
    doc.text(&format!("Station: {}", d.station_name));
    if let Some(patron) = &d.patron_name {
        doc.text(&format!("Customer: {patron}"));
    }
    doc.text(&format!(
        "From {} to {} ({} min)",
        local_time(d.started_at, &d.timezone),
        local_time(d.ended_at, &d.timezone),
        (d.ended_at - d.started_at).num_minutes().max(0)
    ));
    if d.energy_wh > 0 {
        doc.text(&format!(
            "Energy: {}.{:03} kWh",
            d.energy_wh / 1000,
            d.energy_wh % 1000
        ));
    }
    if d.status == SessionStatus::Failed {
        doc.text("The session failed to start: nothing is charged.");
    }
    doc.rule();
    for line in &d.lines {
        doc.row(&line.description, &amount(line.amount), false);
    }
    doc.rule();
    doc.row("Total", &amount(d.split.gross), true);
    doc.row(
        &format!(
            "of which {} {}",
            d.tax_label,
            tax::format_rate(d.split.rate_bp)
        ),
        &amount(d.split.tax),
        false,
    );
    doc.row("Net", &amount(d.split.net), false);
    doc.gap();
    doc.text(&format!("Paid by: {}", payment_label(&d.payment_method)));
    doc.text("Prices include tax.");
    doc.to_pdf()
}
