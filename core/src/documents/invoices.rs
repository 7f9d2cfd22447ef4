//! Invoices (seed 002): several of a patron's ended sessions on one document. `draft` → `issued` → `paid`, and
//! `draft` | `issued` → `void`.
//!
//! Numbers are gap-free per tenant and calendar year (UTC): issuing takes `invoice_counter.last + 1` for the
//! year in the issuing transaction. The counter row stays locked until that transaction ends, so concurrent issues
//! take turns and get consecutive numbers, and an issue that rolls back (the PDF could not be stored, say) gives
//! its number back with everything else. A voided invoice keeps its number (it was issued), so the sequence has no
//! holes either way. Drafts have no number.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::pdf::Doc;
use super::receipts::issuer;
use super::store::{self, Store};
use super::tax::{self, Split};
use super::{legal, local_time, venue_tax};
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::scope::Named;
use crate::sessions::{self, SessionStatus};
use crate::{money, patrons};

/// The most sessions on one invoice.
pub const MAX_SESSIONS: usize = 500;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Invoice {
    pub id: Uuid,
    pub patron_id: Uuid,
    /// `draft`, `issued`, `paid`, `void`.
    pub status: String,
    pub currency: String,
    pub year: Option<i32>,
    pub number: Option<i32>,
    pub total: i64,
    pub tax: i64,
    pub object_key: Option<String>,
    pub issued_at: Option<DateTime<Utc>>,
    pub paid_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Invoice {
    /// The printed number: `2026-000042`.
    pub fn display_number(&self) -> Option<String> {
        Some(format!("{}-{:06}", self.year?, self.number?))
    }
}

const COLUMNS: &str =
    "id, patron_id, status, currency::text as currency, year, number, total, tax, object_key,
    issued_at, paid_at, voided_at, created_at";

/// An invoice, if every session on it is within the actor's venues (else `not_found`, as for another tenant's).
pub async fn get(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Invoice> {
    let sql = format!("select {COLUMNS} from invoice where tenant_id = $1 and id = $2");
    let invoice: Option<Invoice> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let invoice = invoice.ok_or(Error::NotFound("invoice"))?;
    if actor.venues.is_some() {
        let venues: Vec<Uuid> = sqlx::query_scalar(
            "select distinct s.venue_id from session s
               join invoice_session i on i.tenant_id = s.tenant_id and i.session_id = s.id
              where i.tenant_id = $1 and i.invoice_id = $2",
        )
        .bind(tx.tenant())
        .bind(id)
        .fetch_all(tx.conn())
        .await?;
        if venues.iter().any(|v| !actor.sees_venue(*v)) {
            return Err(Error::NotFound("invoice"));
        }
    }
    Ok(invoice)
}

async fn lock(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Invoice> {
    get(tx, actor, id).await?;
    let sql = format!("select {COLUMNS} from invoice where tenant_id = $1 and id = $2 for update");
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_one(tx.conn())
        .await?)
}

/// Invoices, newest first, of one patron or all; by status.
pub async fn list(
    tx: &mut TenantTx,
    actor: &Actor,
    patron: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<Invoice>> {
    let sql = format!(
        "select {COLUMNS} from invoice v
          where tenant_id = $1 and ($2::uuid is null or patron_id = $2) and ($3::text is null or status = $3)
            and ($5::uuid[] is null or not exists (
                  select 1 from invoice_session i join session s on s.tenant_id = i.tenant_id and s.id = i.session_id
                   where i.tenant_id = v.tenant_id and i.invoice_id = v.id and s.venue_id <> all($5)))
          order by created_at desc limit $4"
    );
    let rows = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(patron)
        .bind(status)
        .bind(limit.clamp(1, 500))
        .bind(actor.venues.as_deref())
        .fetch_all(tx.conn())
        .await?;
    crate::scope::listed(tx, actor, rows, &[Named::Patron(patron)]).await
}

/// The sessions on an invoice.
pub async fn session_ids(tx: &mut TenantTx, id: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "select i.session_id from invoice_session i join session s on s.tenant_id = i.tenant_id and s.id = i.session_id
          where i.tenant_id = $1 and i.invoice_id = $2 order by s.started_at, s.id",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_all(tx.conn())
    .await?)
}

/// One priced session of an invoice.
struct Item {
    session: sessions::Session,
    amount: i64,
    rate_bp: i32,
    label: String,
    station: String,
}

async fn items(tx: &mut TenantTx, ids: &[Uuid]) -> Result<Vec<Item>> {
    let mut items = Vec::with_capacity(ids.len());
    for id in ids {
        let session = sessions::get(tx, *id).await?;
        let amount = match (session.status, session.ended_at) {
            (SessionStatus::Failed, _) => 0,
            (_, Some(end)) => session.cost_at(end).amount,
            (_, None) => 0,
        };
        let tax = venue_tax(tx, session.venue_id).await?;
        let station = crate::stations::get(tx, session.station_id).await?.name;
        items.push(Item {
            session,
            amount,
            rate_bp: tax.rate_bp,
            label: tax.label,
            station,
        });
    }
    Ok(items)
}

/// The tax per (label, rate), each computed on that rate's total (see [`tax`]).
fn splits(items: &[Item]) -> Vec<(String, Split)> {
    let mut by_rate: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for item in items {
        *by_rate
            .entry((item.label.clone(), item.rate_bp))
            .or_default() += item.amount;
    }
    by_rate
        .into_iter()
        .map(|((label, rate), gross)| (label, tax::split(gross, rate)))
        .collect()
}

/// A draft invoice for `patron` over `session_ids`: ended sessions of that patron, in one currency, on no other
/// invoice that is not void. Owners and managers.
pub async fn create(
    tx: &mut TenantTx,
    actor: &Actor,
    patron: Uuid,
    session_ids: &[Uuid],
) -> Result<Invoice> {
    actor.require_manager()?;
    patrons::get(tx, patron).await?;
    let mut ids: Vec<Uuid> = session_ids.to_vec();
    ids.sort();
    ids.dedup();
    if ids.is_empty() || ids.len() > MAX_SESSIONS {
        return Err(Error::validation(
            "sessionIds",
            format!("give 1 to {MAX_SESSIONS} sessions"),
        ));
    }
    let items = items(tx, &ids).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound("session"),
        other => other,
    })?;
    let mut currency = None;
    for item in &items {
        let s = &item.session;
        actor.check_venue(s.venue_id, "session")?;
        if s.patron_id != patron {
            return Err(Error::validation(
                "sessionIds",
                format!("session {} is not this patron's", s.id),
            ));
        }
        if s.is_running() {
            return Err(Error::validation(
                "sessionIds",
                format!("session {} is still running", s.id),
            ));
        }
        if *currency.get_or_insert(s.currency.clone()) != s.currency {
            return Err(Error::validation(
                "sessionIds",
                "all sessions of an invoice must be in one currency",
            ));
        }
    }
    let currency = currency.unwrap_or_default();
    let total: i64 = items.iter().map(|i| i.amount).sum();
    let tax: i64 = splits(&items).iter().map(|(_, s)| s.tax).sum();
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into invoice (tenant_id, id, patron_id, currency, total, tax) values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(patron)
    .bind(&currency)
    .bind(total)
    .bind(tax)
    .execute(tx.conn())
    .await?;
    let taken = sqlx::query(
        "insert into invoice_session (tenant_id, invoice_id, session_id) select $1, $2, unnest($3::uuid[])",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(&ids)
    .execute(tx.conn())
    .await;
    if let Err(sqlx::Error::Database(db)) = &taken {
        if db.constraint() == Some("invoice_session_once") {
            return Err(Error::Conflict(
                "a session is already on another invoice (void that one first)".into(),
            ));
        }
    }
    taken?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "invoice.create",
            object_type: "invoice",
            object_id: Some(id),
            detail: serde_json::json!({ "patron_id": patron, "sessions": ids, "total": total }),
        },
    )
    .await?;
    get(tx, actor, id).await
}

/// Issues a draft: gives it the next number of the tenant's year, prints and stores its PDF. Issuing an issued
/// (or paid) invoice again returns it unchanged.
pub async fn issue(tx: &mut TenantTx, actor: &Actor, store: &Store, id: Uuid) -> Result<Invoice> {
    actor.require_manager()?;
    let invoice = lock(tx, actor, id).await?;
    match invoice.status.as_str() {
        "draft" => {}
        "issued" | "paid" => return Ok(invoice),
        _ => return Err(Error::Conflict("a void invoice cannot be issued".into())),
    }
    let now = Utc::now();
    let year = now.year();
    let number: i32 = sqlx::query_scalar(
        "insert into invoice_counter (tenant_id, year, last) values ($1, $2, 1)
         on conflict (tenant_id, year) do update set last = invoice_counter.last + 1
         returning last",
    )
    .bind(tx.tenant())
    .bind(year)
    .fetch_one(tx.conn())
    .await?;
    let key = store::key(tx.tenant(), "invoices", id);
    let numbered = Invoice {
        status: "issued".into(),
        year: Some(year),
        number: Some(number),
        issued_at: Some(now),
        object_key: Some(key.clone()),
        ..invoice
    };
    // Priced again at the venues' tax rates of the issue date: what is printed is what is stored.
    let (bytes, total, tax) = render(tx, &numbered).await?;
    let size = i32::try_from(bytes.len()).map_err(|e| Error::Internal(e.into()))?;
    sqlx::query(
        "update invoice set status = 'issued', year = $3, number = $4, issued_at = $5, object_key = $6, byte_size = $7,
                total = $8, tax = $9
          where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(year)
    .bind(number)
    .bind(now)
    .bind(&key)
    .bind(size)
    .bind(total)
    .bind(tax)
    .execute(tx.conn())
    .await?;
    store.put_pdf(&key, bytes).await?;
    metrics::counter!("documents_generated_total", "kind" => "invoice").increment(1);
    audit::record(
        tx,
        actor,
        Entry {
            action: "invoice.issue",
            object_type: "invoice",
            object_id: Some(id),
            detail: serde_json::json!({ "year": year, "number": number }),
        },
    )
    .await?;
    get(tx, actor, id).await
}

/// Marks an issued invoice paid (now). Marking a paid invoice again changes nothing.
pub async fn mark_paid(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Invoice> {
    actor.require_manager()?;
    let invoice = lock(tx, actor, id).await?;
    match invoice.status.as_str() {
        "issued" => {}
        "paid" => return Ok(invoice),
        "draft" => {
            return Err(Error::Conflict(
                "issue the invoice before marking it paid".into(),
            ))
        }
        _ => return Err(Error::Conflict("a void invoice cannot be paid".into())),
    }
    sqlx::query(
        "update invoice set status = 'paid', paid_at = now() where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .execute(tx.conn())
    .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "invoice.paid",
            object_type: "invoice",
            object_id: Some(id),
            detail: serde_json::json!({}),
        },
    )
    .await?;
    get(tx, actor, id).await
}

/// Voids a draft or issued invoice: it keeps its number (if issued) and PDF, and its sessions can be invoiced
/// again. A paid invoice cannot be voided; voiding again changes nothing.
pub async fn void(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Invoice> {
    actor.require_manager()?;
    let invoice = lock(tx, actor, id).await?;
    match invoice.status.as_str() {
        "draft" | "issued" => {}
        "void" => return Ok(invoice),
        _ => return Err(Error::Conflict("a paid invoice cannot be voided".into())),
    }
    // The links stay (they are the invoice's venue scope), marked void, which frees the sessions for another invoice.
    sqlx::query(
        "update invoice_session set voided = true where tenant_id = $1 and invoice_id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "update invoice set status = 'void', voided_at = now() where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .execute(tx.conn())
    .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "invoice.void",
            object_type: "invoice",
            object_id: Some(id),
            detail: serde_json::json!({}),
        },
    )
    .await?;
    get(tx, actor, id).await
}

/// The invoice's PDF (issuer, number, patron, one row per session, tax per rate, total), its total and its tax.
async fn render(tx: &mut TenantTx, invoice: &Invoice) -> Result<(Vec<u8>, i64, i64)> {
    let legal = legal(tx).await?;
    let patron = patrons::get(tx, invoice.patron_id).await?;
    let ids = session_ids(tx, invoice.id).await?;
    let items = items(tx, &ids).await?;
    let splits = splits(&items);
    let total: i64 = items.iter().map(|i| i.amount).sum();
    let tax: i64 = splits.iter().map(|(_, s)| s.tax).sum();
    let currency = invoice.currency.as_str();
    let amount = |a: i64| format!("{} {currency}", money::format(a, currency));
    let number = invoice.display_number().unwrap_or_default();
    let mut doc = Doc::new(&format!("Invoice {number}"));
    issuer(&mut doc, &legal);
    doc.gap().heading(&format!("Invoice {number}"), 18.0);
    if let Some(issued) = invoice.issued_at {
        doc.text(&format!("Issued: {}", issued.format("%Y-%m-%d")));
    }
    doc.text(&format!("Billed to: {}", patron.display_name));
    if let Some(email) = &patron.email {
        doc.text(email);
    }
    doc.rule();
    for item in &items {
        let s = &item.session;
        let end = s.ended_at.unwrap_or(s.started_at);
        doc.row(
            &format!(
                "{} - {} ({} min)",
                local_time(s.started_at, &s.timezone),
                item.station,
                (end - s.started_at).num_minutes().max(0)
            ),
            &amount(item.amount),
            false,
        );
    }
    doc.rule();
    doc.row("Total", &amount(total), true);
    for (label, split) in splits {
        doc.row(
            &format!(
                "of which {label} {} on {}",
                tax::format_rate(split.rate_bp),
                amount(split.gross)
            ),
            &amount(split.tax),
            false,
        );
    }
    doc.row("Net", &amount(total - tax), false);
    doc.gap();
    doc.text("Prices include tax.");
    Ok((doc.to_pdf(), total, tax))
}
