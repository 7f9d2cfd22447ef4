//! Documents: PDF receipts (one per ended session, rentals and charges included), invoices over several sessions
//! with gap-free numbers per tenant and year (seed 002), and kiosk reports from per-tenant templates (seed 003).
//! Every PDF is generated here in Rust ([`pdf`]), stored in an S3-compatible bucket under a key that starts with
//! the tenant's id ([`store`]) and read back only through short-lived presigned URLs handed to whoever may see the
//! document. What the documents say about the issuer (legal name, address, tax id) and each venue's tax rate are
//! set here too ([`set_legal`], [`set_venue_tax`]).
//!
//! Delivery by email or SMS belongs to the messaging outbox: [`delivery`] is the hook it calls.

pub mod delivery;
pub mod export;
pub mod invoices;
pub mod monthly;
pub mod pdf;
pub mod receipts;
pub mod reports;
pub mod store;
pub mod tax;

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::{Actor, Role};

pub use store::{Link, Store, StoreSettings};

/// The issuer of a tenant's documents.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Legal {
    /// The organisation's name as signed up (printed when no legal name is set).
    pub name: String,
    pub legal_name: Option<String>,
    pub legal_address: Option<String>,
    pub tax_id: Option<String>,
}

impl Legal {
    /// The name documents print.
    pub fn issuer(&self) -> &str {
        self.legal_name.as_deref().unwrap_or(&self.name)
    }
}

pub async fn legal(tx: &mut TenantTx) -> Result<Legal> {
    let legal: Option<Legal> =
        sqlx::query_as("select name, legal_name, legal_address, tax_id from tenant where id = $1")
            .bind(tx.tenant())
            .fetch_optional(tx.conn())
            .await?;
    legal.ok_or(Error::NotFound("tenant"))
}

fn optional_text(field: &'static str, value: Option<String>, max: usize) -> Result<Option<String>> {
    let Some(value) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(
        crate::validate::text(field, &value, 1, max)?.to_owned(),
    ))
}

/// Sets the legal name, address and tax id printed on receipts and invoices (an empty value clears one). Owners
/// only.
pub async fn set_legal(
    tx: &mut TenantTx,
    actor: &Actor,
    legal_name: Option<String>,
    legal_address: Option<String>,
    tax_id: Option<String>,
) -> Result<Legal> {
    if actor.role != Role::Owner {
        return Err(Error::Forbidden(
            "only an owner can change the legal details",
        ));
    }
    let legal_name = optional_text("legalName", legal_name, 200)?;
    let legal_address = optional_text("legalAddress", legal_address, 500)?;
    let tax_id = optional_text("taxId", tax_id, 50)?;
    sqlx::query("update tenant set legal_name = $2, legal_address = $3, tax_id = $4 where id = $1")
        .bind(tx.tenant())
        .bind(&legal_name)
        .bind(&legal_address)
        .bind(&tax_id)
        .execute(tx.conn())
        .await?;
    let detail = serde_json::json!({
        "legal_name": legal_name, "legal_address": legal_address, "tax_id": tax_id,
    });
    crate::tenants::record_change(tx, actor, "tenant.set_legal", detail).await?;
    legal(tx).await
}

/// A venue's tax: the rate included in its prices and what documents call it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VenueTax {
    pub venue_id: Uuid,
    pub rate_bp: i32,
    pub label: String,
}

pub async fn venue_tax(tx: &mut TenantTx, venue: Uuid) -> Result<VenueTax> {
    let tax: Option<VenueTax> = sqlx::query_as(
        "select id as venue_id, tax_rate_bp as rate_bp, tax_label as label from venue
          where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(venue)
    .fetch_optional(tx.conn())
    .await?;
    tax.ok_or(Error::NotFound("venue"))
}

/// Sets a venue's tax rate (basis points, 0–10000: 1900 is 19 %) and label (`VAT`, `GST` ...). Owners and
/// managers of the venue. Documents made afterwards use it; documents already made keep what they printed.
pub async fn set_venue_tax(
    tx: &mut TenantTx,
    actor: &Actor,
    venue: Uuid,
    rate_bp: i32,
    label: Option<String>,
) -> Result<VenueTax> {
    actor.require_manager()?;
    actor.check_venue(venue, "venue")?;
    if !(0..=tax::MAX_RATE_BP).contains(&rate_bp) {
        return Err(Error::validation(
            "rateBp",
            "must be between 0 and 10000 basis points (1900 is 19 %)",
        ));
    }
    let label = optional_text("label", label, 20)?;
    let before = venue_tax(tx, venue).await?;
    let label = label.unwrap_or(before.label);
    sqlx::query(
        "update venue set tax_rate_bp = $3, tax_label = $4 where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(venue)
    .bind(rate_bp)
    .bind(&label)
    .execute(tx.conn())
    .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "venue.set_tax",
            object_type: "venue",
            object_id: Some(venue),
            detail: serde_json::json!({ "rate_bp": rate_bp, "label": label }),
        },
    )
    .await?;
    venue_tax(tx, venue).await
}

/// A date and time in a venue's time zone, as documents print it.
pub(crate) fn local_time(at: chrono::DateTime<chrono::Utc>, timezone: &str) -> String {
    let tz: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::Tz::UTC);
    at.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}
