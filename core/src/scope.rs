//! Venue scope: a staff member or manager may be confined to some venues (`Actor::venues`). An object of a venue
//! outside the scope answers `not_found`, exactly as another tenant's would. These look-ups find the venue of an
//! object named by id so that resolvers and handlers check it before doing anything else.

use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;

async fn venue_of(tx: &mut TenantTx, table: &str, id: Uuid) -> Result<Option<Uuid>> {
    // `table` is one of the fixed names below, never input.
    let sql = format!("select venue_id from {table} where tenant_id = $1 and id = $2");
    Ok(sqlx::query_scalar(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?)
}

async fn check(
    tx: &mut TenantTx,
    actor: &Actor,
    table: &str,
    id: Uuid,
    what: &'static str,
) -> Result<()> {
    if actor.venues.is_none() {
        return Ok(());
    }
    match venue_of(tx, table, id).await? {
        Some(venue) => actor.check_venue(venue, what),
        None => Err(Error::NotFound(what)),
    }
}

/// `not_found` unless the station is at a venue the actor sees.
pub async fn station(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<()> {
    check(tx, actor, "station", id, "station").await
}

/// `not_found` unless the session (or rental) is at a venue the actor sees.
pub async fn session(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<()> {
    check(tx, actor, "session", id, "session").await
}

/// `not_found` unless the bridge is at a venue the actor sees.
pub async fn bridge(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<()> {
    check(tx, actor, "bridge", id, "bridge").await
}

/// Only members who see every venue create venues (a scoped one could not see what it made).
pub fn require_all_venues(actor: &Actor) -> Result<()> {
    if actor.venues.is_some() {
        return Err(Error::Forbidden(
            "this needs a member who works in every venue",
        ));
    }
    Ok(())
}

/// An object a list is filtered by, when the filter was given.
#[derive(Clone, Copy, Debug)]
pub enum Named {
    Venue(Option<Uuid>),
    Station(Option<Uuid>),
    Patron(Option<Uuid>),
}

/// A list's rows; when there are none, `not_found` if one of the objects it was filtered by is not one the actor
/// sees (another tenant's, a venue outside the actor's scope, a mistyped id), so that such a filter is told apart
/// from an object with nothing to list, as an id passed anywhere else is. A list with rows has matched its filters
/// against the tenant's own objects already and pays nothing.
pub async fn listed<T>(
    tx: &mut TenantTx,
    actor: &Actor,
    rows: Vec<T>,
    filters: &[Named],
) -> Result<Vec<T>> {
    if !rows.is_empty() {
        return Ok(rows);
    }
    for filter in filters {
        match *filter {
            Named::Venue(Some(id)) => {
                crate::venues::get(tx, id).await?;
                actor.check_venue(id, "venue")?;
            }
            Named::Station(Some(id)) => {
                let station = crate::stations::get(tx, id).await?;
                actor.check_venue(station.venue_id, "station")?;
            }
            Named::Patron(Some(id)) => {
                crate::patrons::get(tx, id).await?;
            }
            Named::Venue(None) | Named::Station(None) | Named::Patron(None) => {}
        }
    }
    Ok(rows)
}
