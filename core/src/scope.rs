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
