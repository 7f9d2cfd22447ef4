//! Venues: the physical sites of a tenant.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::{RowLock, TenantTx};
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::validate;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Venue {
    pub id: Uuid,
    pub name: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// ISO 4217 code; every amount at this venue is in its minor units.
    pub currency: String,
    pub address: String,
    /// Where the venue is (WGS 84 degrees) and how far from there a patron may check in, in metres: all three or
    /// none (then check-in needs no location).
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub geofence_m: Option<i32>,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewVenue {
    pub name: String,
    pub timezone: String,
    pub currency: String,
    pub address: Option<String>,
}

/// Fields left `None` keep their value. The currency cannot change: amounts already recorded are in it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VenuePatch {
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub address: Option<String>,
}

const COLUMNS: &str =
    "id, name, timezone, currency::text as currency, address, latitude, longitude, geofence_m,
    archived_at, created_at, updated_at";

pub async fn list(tx: &mut TenantTx, include_archived: bool) -> Result<Vec<Venue>> {
    let sql = format!(
        "select {COLUMNS} from venue where tenant_id = $1 and ($2 or archived_at is null) order by lower(name), id limit {}",
        crate::validate::LIST_CAP
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(include_archived)
        .fetch_all(tx.conn())
        .await?)
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Venue> {
    let sql = format!("select {COLUMNS} from venue where tenant_id = $1 and id = $2");
    let venue: Option<Venue> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    venue.ok_or(Error::NotFound("venue"))
}

pub async fn get_many(tx: &mut TenantTx, ids: &[Uuid]) -> Result<Vec<Venue>> {
    let sql = format!("select {COLUMNS} from venue where tenant_id = $1 and id = any($2)");
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(ids)
        .fetch_all(tx.conn())
        .await?)
}

pub async fn create(tx: &mut TenantTx, actor: &Actor, input: NewVenue) -> Result<Venue> {
    actor.require_manager()?;
    let name = validate::text("name", &input.name, 1, 100)?;
    let timezone = check_timezone(tx, &input.timezone).await?;
    let currency = input.currency.trim().to_owned();
    if crate::money::minor_units(&currency).is_none() {
        return Err(Error::validation(
            "currency",
            "must be an ISO 4217 code in capitals, like EUR or USD",
        ));
    }
    let address = validate::text("address", input.address.as_deref().unwrap_or(""), 0, 500)?;
    let sql = format!(
        "insert into venue (tenant_id, id, name, timezone, currency, address) values ($1, $2, $3, $4, $5, $6)
         returning {COLUMNS}"
    );
    let venue: Venue = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(timezone)
        .bind(currency)
        .bind(address)
        .fetch_one(tx.conn())
        .await?;
    audit::record(
        tx,
        actor,
        entry(
            "venue.create",
            venue.id,
            serde_json::json!({ "name": venue.name }),
        ),
    )
    .await?;
    Ok(venue)
}

pub async fn update(
    tx: &mut TenantTx,
    actor: &Actor,
    id: Uuid,
    patch: VenuePatch,
) -> Result<Venue> {
    actor.require_manager()?;
    let current = get(tx, id).await?;
    let name = patch
        .name
        .as_deref()
        .map(|n| validate::text("name", n, 1, 100))
        .transpose()?
        .unwrap_or(&current.name)
        .to_owned();
    let timezone = match patch.timezone.as_deref() {
        Some(tz) => check_timezone(tx, tz).await?,
        None => current.timezone.clone(),
    };
    let address = patch
        .address
        .as_deref()
        .map(|a| validate::text("address", a, 0, 500))
        .transpose()?
        .unwrap_or(&current.address)
        .to_owned();
    let sql = format!(
        "update venue set name = $3, timezone = $4, address = $5 where tenant_id = $1 and id = $2 returning {COLUMNS}"
    );
    let venue: Venue = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(name)
        .bind(timezone)
        .bind(address)
        .fetch_one(tx.conn())
        .await?;
    let detail = serde_json::json!({ "name": venue.name, "timezone": venue.timezone, "address": venue.address });
    audit::record(tx, actor, entry("venue.update", id, detail)).await?;
    Ok(venue)
}

/// Archives a venue and its stations (each as [`crate::stations::archive`] does: out of the floor and its bridge's
/// schedule). Refused while a session runs or is paused on one of them.
pub async fn archive(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Venue> {
    actor.require_manager()?;
    // Held: a station being added meanwhile (it holds the venue `for share`) waits, then finds the venue archived.
    // Not `for update`: a session starting at the venue references it (`for key share`) while holding its station,
    // which the archiving then waits for.
    tx.lock_row("venue", id, RowLock::NoKeyUpdate).await?;
    get(tx, id).await?;
    let stations: Vec<Uuid> = sqlx::query_scalar(
        "select id from station where tenant_id = $1 and venue_id = $2 and archived_at is null order by id",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_all(tx.conn())
    .await?;
    for station in stations {
        crate::stations::archive(tx, actor, station)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(
                    "a station here has a session running (or paused): stop it before archiving the venue".into(),
                ),
                other => other,
            })?;
    }
    let sql = format!(
        "update venue set archived_at = coalesce(archived_at, now()) where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    );
    let venue: Venue = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    audit::record(tx, actor, entry("venue.archive", id, serde_json::json!({}))).await?;
    Ok(venue)
}

fn entry(action: &'static str, id: Uuid, detail: serde_json::Value) -> Entry<'static> {
    Entry {
        action,
        object_type: "venue",
        object_id: Some(id),
        detail,
    }
}

/// A zone both zone databases know: pricing's (chrono-tz, built in) and Postgres's (reports and analytics convert
/// times in SQL). Postgres on Debian reads the system's zone files, which also name aliases such as
/// `posix/Europe/Berlin` that chrono-tz does not know: a venue in one would be priced in UTC without a word.
async fn check_timezone(tx: &mut TenantTx, timezone: &str) -> Result<String> {
    let timezone = timezone.trim();
    let known: bool =
        sqlx::query_scalar("select exists (select 1 from pg_timezone_names where name = $1)")
            .bind(timezone)
            .fetch_one(tx.conn())
            .await?;
    let priced = timezone.parse::<chrono_tz::Tz>().is_ok();
    if !known || !priced || !timezone.contains('/') && timezone != "UTC" {
        return Err(Error::validation(
            "timezone",
            "must be an IANA time zone name, like Europe/Berlin or UTC",
        ));
    }
    Ok(timezone.to_owned())
}
