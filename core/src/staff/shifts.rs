//! Shifts: members clock in at a venue and out again (one open shift per member at a time), who is on shift now,
//! and the hours each member worked in a period.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{check_range, check_venue};
use crate::audit::{self, Entry};
use crate::db::{self, TenantTx};
use crate::error::{Error, Result};
use crate::events::NewEvent;
use crate::model::Actor;
use crate::scope::Named;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct Shift {
    pub id: Uuid,
    pub user_id: Uuid,
    /// The member's login email.
    pub email: String,
    pub venue_id: Uuid,
    pub started_at: DateTime<Utc>,
    /// Unset while on shift.
    pub ended_at: Option<DateTime<Utc>>,
}

const SELECT: &str =
    "select s.id, s.user_id, coalesce(u.email, '') as email, s.venue_id, s.started_at, s.ended_at
    from staff_shift s left join app_user u on u.id = s.user_id";

/// Clocks the member in at `venue`; refused while they have an open shift.
pub async fn clock_in(tx: &mut TenantTx, actor: &Actor, venue: Uuid) -> Result<Shift> {
    check_venue(tx, actor, venue).await?;
    let id: Uuid = sqlx::query_scalar(
        "insert into staff_shift (tenant_id, id, user_id, venue_id) values ($1, $2, $3, $4) returning id",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(actor.user_id)
    .bind(venue)
    .fetch_one(tx.conn())
    .await?;
    let shift = fetch(tx, id, false).await?;
    finish(tx, actor, "shift.started", "shift.clock_in", &shift).await?;
    Ok(shift)
}

/// Clocks out: the member's own open shift, or (owners and managers) the shift `id` of anyone, for a forgotten
/// clock-out. Clocking out a closed shift returns it unchanged.
pub async fn clock_out(tx: &mut TenantTx, actor: &Actor, id: Option<Uuid>) -> Result<Shift> {
    let id = match id {
        Some(id) => id,
        None => sqlx::query_scalar(
            "select id from staff_shift where tenant_id = $1 and user_id = $2 and ended_at is null",
        )
        .bind(tx.tenant())
        .bind(actor.user_id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Error::Conflict("you are not clocked in".into()))?,
    };
    let shift = fetch(tx, id, true).await?;
    actor.check_venue(shift.venue_id, "shift")?;
    if shift.user_id != actor.user_id && !actor.role.can_manage() {
        return Err(Error::NotFound("shift"));
    }
    if shift.ended_at.is_some() {
        return Ok(shift);
    }
    sqlx::query("update staff_shift set ended_at = now() where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(id)
        .execute(tx.conn())
        .await?;
    let shift = fetch(tx, id, false).await?;
    finish(tx, actor, "shift.ended", "shift.clock_out", &shift).await?;
    Ok(shift)
}

/// One shift: the member's own, or any in their venues for owners and managers.
pub async fn get(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Shift> {
    let shift = fetch(tx, id, false).await?;
    actor.check_venue(shift.venue_id, "shift")?;
    if shift.user_id != actor.user_id && !actor.role.can_manage() {
        return Err(Error::NotFound("shift"));
    }
    Ok(shift)
}

async fn fetch(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Shift> {
    let sql = format!(
        "{SELECT} where s.tenant_id = $1 and s.id = $2 {}",
        if lock { "for update of s" } else { "" }
    );
    let shift: Option<Shift> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    shift.ok_or(Error::NotFound("shift"))
}

async fn finish(
    tx: &mut TenantTx,
    actor: &Actor,
    kind: &'static str,
    action: &'static str,
    shift: &Shift,
) -> Result<()> {
    let data = json!({ "user_id": shift.user_id, "started_at": shift.started_at, "ended_at": shift.ended_at });
    tx.emit(
        NewEvent::new(kind, data)
            .venue(shift.venue_id)
            .subject(shift.id)
            .user(shift.user_id),
    );
    let entry = Entry {
        action,
        object_type: "shift",
        object_id: Some(shift.id),
        detail: json!({ "user_id": shift.user_id }),
    };
    audit::record_in(tx, actor, Some(shift.venue_id), entry).await
}

/// Who is on shift now, at one venue or every venue the member sees.
pub async fn on_shift(tx: &mut TenantTx, actor: &Actor, venue: Option<Uuid>) -> Result<Vec<Shift>> {
    let mut query = sqlx::QueryBuilder::new(format!("{SELECT} where s.tenant_id = "));
    query.push_bind(tx.tenant()).push(" and s.ended_at is null");
    db::filter(&mut query, "s.venue_id = $", venue);
    db::filter(&mut query, "s.venue_id = any($)", actor.venue_filter());
    query.push(format_args!(
        " order by s.venue_id, s.started_at limit {}",
        crate::validate::LIST_CAP
    ));
    let rows = query.build_query_as().fetch_all(tx.conn()).await?;
    crate::scope::listed(tx, actor, rows, &[Named::Venue(venue)]).await
}

/// A member's time on shift within a period.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct Hours {
    pub user_id: Uuid,
    pub email: String,
    /// Seconds on shift within the period (an open shift counts until now).
    pub seconds: i64,
    /// `seconds` in hours, rounded to two decimals.
    pub hours: f64,
    /// Shifts that overlap the period.
    pub shifts: i64,
}

/// Hours per member between `from` and `to` (owners and managers: everyone in their venues; staff: themselves),
/// optionally at one venue.
pub async fn hours(
    tx: &mut TenantTx,
    actor: &Actor,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    venue: Option<Uuid>,
) -> Result<Vec<Hours>> {
    check_range(Some(from), Some(to))?;
    if to - from > chrono::Duration::days(400) {
        return Err(Error::validation("to", "a period is at most 400 days"));
    }
    let only = (!actor.role.can_manage()).then_some(actor.user_id);
    let rows = sqlx::query_as(
        "select s.user_id, coalesce(min(u.email), '') as email,
                floor(sum(extract(epoch from least(coalesce(s.ended_at, now()), $3) - greatest(s.started_at, $2))))::bigint
                  as seconds,
                round((sum(extract(epoch from least(coalesce(s.ended_at, now()), $3) - greatest(s.started_at, $2)))
                       / 3600)::numeric, 2)::float8 as hours,
                count(*) as shifts
         from staff_shift s left join app_user u on u.id = s.user_id
         where s.tenant_id = $1 and s.started_at < $3 and coalesce(s.ended_at, now()) > $2
           and ($4::uuid is null or s.venue_id = $4) and ($5::uuid[] is null or s.venue_id = any($5))
           and ($6::uuid is null or s.user_id = $6)
         group by s.user_id order by email",
    )
    .bind(tx.tenant())
    .bind(from)
    .bind(to)
    .bind(venue)
    .bind(actor.venue_filter())
    .bind(only)
    .fetch_all(tx.conn())
    .await?;
    crate::scope::listed(tx, actor, rows, &[Named::Venue(venue)]).await
}
