//! Tariffs: versioned pricing terms, assigned to a venue, a station kind at a venue, or one station.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::{RowLock, TenantTx};
use crate::error::{Error, Result};
use crate::model::{Actor, StationKind};
use crate::pricing::Terms;
use crate::validate;

#[derive(Debug, Clone, Serialize)]
pub struct Tariff {
    pub id: Uuid,
    pub name: String,
    pub version: i32,
    pub terms: Terms,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    version: i32,
    terms: sqlx::types::Json<Terms>,
    archived_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<Row> for Tariff {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            name: r.name,
            version: r.version,
            terms: r.terms.0,
            archived_at: r.archived_at,
            created_at: r.created_at,
        }
    }
}

const SELECT: &str =
    "select t.id, t.name, t.current_version as version, v.terms, t.archived_at, t.created_at
     from tariff t join tariff_version v
       on v.tenant_id = t.tenant_id and v.tariff_id = t.id and v.version = t.current_version";

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Tariff>> {
    let sql = format!(
        "{SELECT} where t.tenant_id = $1 and t.archived_at is null order by lower(t.name), t.id limit {}",
        crate::validate::LIST_CAP
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .fetch_all(tx.conn())
        .await?;
    Ok(rows.into_iter().map(Tariff::from).collect())
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Tariff> {
    let sql = format!("{SELECT} where t.tenant_id = $1 and t.id = $2");
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(Tariff::from).ok_or(Error::NotFound("tariff"))
}

/// One version of a tariff (a quote pins the version it priced).
pub async fn version(tx: &mut TenantTx, id: Uuid, version: i32) -> Result<Tariff> {
    let row: Option<Row> = sqlx::query_as(
        "select t.id, t.name, v.version, v.terms, t.archived_at, t.created_at
         from tariff t join tariff_version v on v.tenant_id = t.tenant_id and v.tariff_id = t.id
         where t.tenant_id = $1 and t.id = $2 and v.version = $3",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(version)
    .fetch_optional(tx.conn())
    .await?;
    row.map(Tariff::from).ok_or(Error::NotFound("tariff"))
}

pub async fn create(tx: &mut TenantTx, actor: &Actor, name: &str, terms: Terms) -> Result<Tariff> {
    actor.require_manager()?;
    let name = validate::text("name", name, 1, 100)?;
    terms.validate()?;
    let id = Uuid::now_v7();
    sqlx::query("insert into tariff (tenant_id, id, name) values ($1, $2, $3)")
        .bind(tx.tenant())
        .bind(id)
        .bind(name)
        .execute(tx.conn())
        .await?;
    insert_version(tx, id, 1, &terms).await?;
    audit::record(
        tx,
        actor,
        entry(
            "tariff.create",
            id,
            serde_json::json!({ "name": name, "terms": terms }),
        ),
    )
    .await?;
    get(tx, id).await
}

/// Renames and/or adds a new version of the terms. Running sessions keep the version they started with.
pub async fn update(
    tx: &mut TenantTx,
    actor: &Actor,
    id: Uuid,
    name: Option<&str>,
    terms: Option<Terms>,
    expected_version: Option<i32>,
) -> Result<Tariff> {
    actor.require_manager()?;
    // Held: an assignment made meanwhile (its reference to the tariff waits) is seen below, and two edits take turns.
    tx.lock_row("tariff", id, RowLock::Update).await?;
    let current = get(tx, id).await?;
    // An edit made from what a form showed: terms it did not show (changed by someone else meanwhile) would be lost.
    if let Some(expected) = expected_version.filter(|v| *v != current.version) {
        return Err(Error::Conflict(format!(
            "this tariff was changed meanwhile: it is at version {}, not {expected}; reload it and make your change \
             again",
            current.version
        )));
    }
    if actor.venues.is_some() {
        // A tariff is the tenant's and may price several venues: a manager of some venues changes only one that
        // prices none of the others.
        let elsewhere: bool = sqlx::query_scalar(
            "select exists (select 1 from tariff_assignment where tenant_id = $1 and tariff_id = $2
                              and not (venue_id = any($3)))",
        )
        .bind(tx.tenant())
        .bind(id)
        .bind(actor.venues.as_deref().unwrap_or_default())
        .fetch_one(tx.conn())
        .await?;
        if elsewhere {
            return Err(Error::Forbidden(
                "this tariff also prices venues you do not manage: create a tariff for your venue instead",
            ));
        }
    }
    if let Some(name) = name {
        let name = validate::text("name", name, 1, 100)?;
        sqlx::query("update tariff set name = $3 where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(id)
            .bind(name)
            .execute(tx.conn())
            .await?;
    }
    if let Some(terms) = terms.filter(|t| *t != current.terms) {
        terms.validate()?;
        // A venue bills in its own currency: a tariff that prices one keeps it.
        let other: Option<String> = sqlx::query_scalar(
            "select v.currency::text from tariff_assignment a
             join venue v on v.tenant_id = a.tenant_id and v.id = a.venue_id
             where a.tenant_id = $1 and a.tariff_id = $2 and v.currency::text <> $3 limit 1",
        )
        .bind(tx.tenant())
        .bind(id)
        .bind(&terms.currency)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(other) = other {
            return Err(Error::validation(
                "currency",
                format!("this tariff prices a venue that bills in {other}: keep {other}, or create a tariff"),
            ));
        }
        let version = current.version + 1;
        insert_version(tx, id, version, &terms).await?;
        sqlx::query("update tariff set current_version = $3 where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(id)
            .bind(version)
            .execute(tx.conn())
            .await?;
    }
    let updated = get(tx, id).await?;
    let detail = serde_json::json!({ "name": updated.name, "version": updated.version });
    audit::record(tx, actor, entry("tariff.update", id, detail)).await?;
    Ok(updated)
}

async fn insert_version(tx: &mut TenantTx, id: Uuid, version: i32, terms: &Terms) -> Result<()> {
    sqlx::query(
        "insert into tariff_version (tenant_id, tariff_id, version, terms) values ($1, $2, $3, $4)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(version)
    .bind(sqlx::types::Json(terms))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Where a tariff applies. `station_id` alone, or `venue_id` with an optional `station_kind`.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub venue_id: Uuid,
    pub station_kind: Option<StationKind>,
    pub station_id: Option<Uuid>,
}

/// Assigns `tariff` to `scope`, replacing whatever was assigned to exactly that scope.
pub async fn assign(tx: &mut TenantTx, actor: &Actor, tariff: Uuid, scope: Scope) -> Result<()> {
    actor.require_manager()?;
    // Held against an edit of its terms: the currency read here is the one it keeps until this commits.
    tx.lock_row("tariff", tariff, RowLock::Share).await?;
    let priced = get(tx, tariff).await?;
    let venue = crate::venues::get(tx, scope.venue_id).await?;
    if priced.terms.currency != venue.currency {
        return Err(Error::validation(
            "tariffId",
            format!(
                "this tariff bills in {} but the venue bills in {}: assign a tariff in {}",
                priced.terms.currency, venue.currency, venue.currency
            ),
        ));
    }
    if let Some(station) = scope.station_id {
        let station = crate::stations::get(tx, station).await?;
        // At a venue the member may not see: no such station, as for any other of its ids.
        actor.check_venue(station.venue_id, "station")?;
        if station.venue_id != scope.venue_id {
            return Err(Error::validation(
                "stationId",
                "the station is not at this venue",
            ));
        }
    }
    sqlx::query(
        "delete from tariff_assignment where tenant_id = $1 and venue_id = $2
           and station_kind is not distinct from $3 and station_id is not distinct from $4",
    )
    .bind(tx.tenant())
    .bind(scope.venue_id)
    .bind(scope.station_kind)
    .bind(scope.station_id)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "insert into tariff_assignment (tenant_id, id, tariff_id, venue_id, station_kind, station_id)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(tariff)
    .bind(scope.venue_id)
    .bind(scope.station_kind)
    .bind(scope.station_id)
    .execute(tx.conn())
    .await?;
    let detail = serde_json::json!({ "venue_id": scope.venue_id, "station_kind": scope.station_kind, "station_id": scope.station_id });
    audit::record(tx, actor, entry("tariff.assign", tariff, detail)).await
}

/// One place a tariff applies at a venue: the whole venue, one kind of station, or one station.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub tariff: Tariff,
    pub station_kind: Option<StationKind>,
    pub station_id: Option<Uuid>,
}

/// The tariffs assigned at `venue` (archived tariffs left out: they no longer price anything), the whole venue's
/// first, then each kind's, then each station's.
pub async fn assignments(tx: &mut TenantTx, venue: Uuid) -> Result<Vec<Assignment>> {
    #[derive(sqlx::FromRow)]
    struct Assigned {
        #[sqlx(flatten)]
        tariff: Row,
        station_kind: Option<StationKind>,
        station_id: Option<Uuid>,
    }
    let rows: Vec<Assigned> = sqlx::query_as(
        "select t.id, t.name, t.current_version as version, v.terms, t.archived_at, t.created_at,
                a.station_kind, a.station_id
         from tariff_assignment a
         join tariff t on t.tenant_id = a.tenant_id and t.id = a.tariff_id
         join tariff_version v
           on v.tenant_id = t.tenant_id and v.tariff_id = t.id and v.version = t.current_version
         where a.tenant_id = $1 and a.venue_id = $2 and t.archived_at is null
         order by (a.station_id is not null), (a.station_kind is not null), a.station_kind, a.created_at",
    )
    .bind(tx.tenant())
    .bind(venue)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Assignment {
            tariff: r.tariff.into(),
            station_kind: r.station_kind,
            station_id: r.station_id,
        })
        .collect())
}

/// The tariff in force for a station: its own assignment, else its kind's at the venue, else the venue's.
pub async fn resolve(tx: &mut TenantTx, station: &crate::stations::Station) -> Result<Tariff> {
    // The most specific assignment with its tariff's current terms, in one statement (every start reads it).
    let row: Option<Row> = sqlx::query_as(
        "select t.id, t.name, t.current_version as version, v.terms, t.archived_at, t.created_at
         from tariff_assignment a
         join tariff t on t.tenant_id = a.tenant_id and t.id = a.tariff_id
         join tariff_version v
           on v.tenant_id = t.tenant_id and v.tariff_id = t.id and v.version = t.current_version
         where a.tenant_id = $1 and a.venue_id = $2 and t.archived_at is null
           and (a.station_id = $3 or (a.station_id is null and (a.station_kind = $4 or a.station_kind is null)))
         order by (a.station_id is not null) desc, (a.station_kind is not null) desc limit 1",
    )
    .bind(tx.tenant())
    .bind(station.venue_id)
    .bind(station.id)
    .bind(station.kind)
    .fetch_optional(tx.conn())
    .await?;
    row.map(Tariff::from).ok_or_else(|| {
        Error::Conflict(
            "no tariff applies to this station; assign one to it, its kind or its venue".into(),
        )
    })
}

/// Refused unless `tariff` bills in the venue's currency (a tariff changed since it was assigned, by a release
/// before assignments were checked): every amount a venue records is in its currency.
pub fn check_currency(tariff: &Tariff, venue: &crate::venues::Venue) -> Result<()> {
    if tariff.terms.currency != venue.currency {
        return Err(Error::Conflict(format!(
            "the tariff is in {} but the venue bills in {}; fix the tariff",
            tariff.terms.currency, venue.currency
        )));
    }
    Ok(())
}

fn entry(action: &'static str, id: Uuid, detail: serde_json::Value) -> Entry<'static> {
    Entry {
        action,
        object_type: "tariff",
        object_id: Some(id),
        detail,
    }
}
