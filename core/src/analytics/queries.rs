//! The analytics figures, each read from the rollups of [`super::rollup`] within a [`Scope`] (the member's venues and
//! a period of venue-local days). Amounts are minor units per currency; a tenant whose venues use several currencies
//! gets one row per currency, never a sum across them. The row types are the GraphQL objects as they are.

use std::collections::BTreeMap;

use async_graphql::SimpleObject;
use chrono::{Datelike, Duration, NaiveDate};
use uuid::Uuid;

use super::{div_round, Scope};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;

/// An amount of one currency.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct Amount {
    pub currency: String,
    /// Minor units.
    pub amount: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct RevenueByDay {
    /// A venue-local calendar day.
    pub day: NaiveDate,
    pub currency: String,
    pub amount: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct RevenueByVenue {
    pub venue_id: Uuid,
    pub venue_name: String,
    pub currency: String,
    pub amount: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct RevenueByStationKind {
    /// `pc`, `console`, `ev_charger` … (`other` for revenue not tied to a session).
    pub station_kind: String,
    pub currency: String,
    pub amount: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct RevenueByPaymentMethod {
    /// `wallet`, `cash`, `card` (`other` for revenue not tied to a session).
    pub payment_method: String,
    pub currency: String,
    pub amount: i64,
}

/// Sessions that ended in the period.
#[derive(Debug, Clone, Default, PartialEq, Eq, SimpleObject)]
pub struct SessionStats {
    pub sessions: i64,
    /// Whole seconds from start to end, pauses included.
    pub duration_secs: i64,
    /// `duration_secs / sessions`, rounded; 0 without sessions.
    pub average_duration_secs: i64,
    /// Energy delivered (EV charging), watt-hours.
    pub energy_wh: i64,
}

/// One cell of the utilisation heatmap: an hour of the week over the period.
#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct UtilisationCell {
    /// ISO day of the week: 1 is Monday, 7 Sunday.
    pub day_of_week: i32,
    /// Venue-local hour, 0–23.
    pub hour: i32,
    /// Station seconds in session in this hour of the week, over the period.
    pub busy_secs: i64,
    /// Station seconds there were: the stations in scope × 3600 × how often this hour of the week occurs in the
    /// period.
    pub capacity_secs: i64,
    /// `busy_secs / capacity_secs` (0 to 1; 0 without capacity).
    pub share: f64,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct TopPatron {
    pub patron_id: Uuid,
    pub display_name: String,
    pub currency: String,
    /// What the patron's sessions earned the venues in scope, all time.
    pub spent: i64,
    pub sessions: i64,
    pub duration_secs: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct Debtor {
    pub patron_id: Uuid,
    pub display_name: String,
    pub owed: i64,
}

/// What patrons owe in one currency, now.
#[derive(Debug, Clone, SimpleObject)]
pub struct DebtsOutstanding {
    pub currency: String,
    /// The sum of every patron's debt.
    pub total: i64,
    /// Patrons owing anything.
    pub patrons: i64,
    /// The largest debts first.
    pub largest: Vec<Debtor>,
}

/// Seed 001's `daily_metrics`: one venue-local day.
#[derive(Debug, Clone, SimpleObject)]
pub struct DailyMetric {
    pub day: NaiveDate,
    pub revenue: Vec<Amount>,
    pub sessions: i64,
    pub duration_secs: i64,
    pub average_duration_secs: i64,
    pub energy_wh: i64,
    pub busy_secs: i64,
    /// Busy station seconds over the stations in scope × 86,400.
    pub utilisation: f64,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct ProjectedDay {
    pub day: NaiveDate,
    pub currency: String,
    pub amount: i64,
}

/// A simple revenue projection (seed 001's `revenue_projections`).
#[derive(Debug, Clone, SimpleObject)]
pub struct Projection {
    /// How it was made, in words.
    pub method: String,
    /// The days it learnt from (both included).
    pub basis_from: NaiveDate,
    pub basis_to: NaiveDate,
    pub days: Vec<ProjectedDay>,
    pub totals: Vec<Amount>,
}

/// A revenue breakdown: `key` is a column of `analytics_revenue_day` (never input).
async fn revenue_by<T>(tx: &mut TenantTx, scope: &Scope, key: &str) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let sql = format!(
        "select {key}, currency::text as currency, sum(amount)::bigint as amount
           from analytics_revenue_day
          where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and day between $3 and $4
          group by 1, 2 order by 1, 2"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(scope.venues.as_deref())
        .bind(scope.from)
        .bind(scope.to)
        .fetch_all(tx.conn())
        .await?)
}

pub async fn revenue_by_day(tx: &mut TenantTx, scope: &Scope) -> Result<Vec<RevenueByDay>> {
    revenue_by(tx, scope, "day").await
}

pub async fn revenue_by_station_kind(
    tx: &mut TenantTx,
    scope: &Scope,
) -> Result<Vec<RevenueByStationKind>> {
    revenue_by(tx, scope, "station_kind").await
}

pub async fn revenue_by_payment_method(
    tx: &mut TenantTx,
    scope: &Scope,
) -> Result<Vec<RevenueByPaymentMethod>> {
    revenue_by(tx, scope, "payment_method").await
}

pub async fn revenue_by_venue(tx: &mut TenantTx, scope: &Scope) -> Result<Vec<RevenueByVenue>> {
    Ok(sqlx::query_as(
        "select r.venue_id, v.name as venue_name, r.currency, r.amount
           from (select venue_id, currency::text as currency, sum(amount)::bigint as amount
                   from analytics_revenue_day
                  where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and day between $3 and $4
                  group by 1, 2) r
           join venue v on v.tenant_id = $1 and v.id = r.venue_id
          order by r.amount desc, v.name, r.currency",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .bind(scope.from)
    .bind(scope.to)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn session_stats(tx: &mut TenantTx, scope: &Scope) -> Result<SessionStats> {
    let (sessions, duration_secs, energy_wh): (i64, i64, i64) = sqlx::query_as(
        "select coalesce(sum(sessions), 0)::bigint, coalesce(sum(duration_secs), 0)::bigint,
                coalesce(sum(energy_wh), 0)::bigint
           from analytics_session_day
          where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and day between $3 and $4",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .bind(scope.from)
    .bind(scope.to)
    .fetch_one(tx.conn())
    .await?;
    Ok(SessionStats {
        sessions,
        duration_secs,
        average_duration_secs: div_round(duration_secs, sessions),
        energy_wh,
    })
}

/// The stations that make up the capacity: those of the venues in scope that are not archived.
async fn stations(tx: &mut TenantTx, scope: &Scope) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "select count(*) from station
          where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and archived_at is null",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .fetch_one(tx.conn())
    .await?)
}

fn share(busy: i64, capacity: i64) -> f64 {
    if capacity <= 0 {
        0.0
    } else {
        busy as f64 / capacity as f64
    }
}

/// Utilisation by hour of the week: 168 cells, Monday 00:00 first.
pub async fn utilisation(tx: &mut TenantTx, scope: &Scope) -> Result<Vec<UtilisationCell>> {
    let busy: Vec<(i32, i32, i64)> = sqlx::query_as(
        "select extract(isodow from day)::int, hour::int, sum(busy_secs)::bigint
           from analytics_busy_hour
          where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and day between $3 and $4
          group by 1, 2",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .bind(scope.from)
    .bind(scope.to)
    .fetch_all(tx.conn())
    .await?;
    let stations = stations(tx, scope).await?;
    let busy: BTreeMap<(i32, i32), i64> = busy.into_iter().map(|(d, h, s)| ((d, h), s)).collect();
    let mut occurrences = [0i64; 8];
    let mut day = scope.from;
    while day <= scope.to {
        occurrences[day.weekday().number_from_monday() as usize] += 1;
        day += Duration::days(1);
    }
    let mut cells = Vec::with_capacity(168);
    for dow in 1..=7 {
        for hour in 0..24 {
            let busy_secs = busy.get(&(dow, hour)).copied().unwrap_or(0);
            let capacity_secs = stations * 3600 * occurrences[dow as usize];
            cells.push(UtilisationCell {
                day_of_week: dow,
                hour,
                busy_secs,
                capacity_secs,
                share: share(busy_secs, capacity_secs),
            });
        }
    }
    Ok(cells)
}

/// The patrons whose sessions earned the venues in scope most, all time (the period does not apply) (walk-ins, who are nobody in particular,
/// left out). `limit` 1–100.
pub async fn top_patrons(tx: &mut TenantTx, scope: &Scope, limit: i64) -> Result<Vec<TopPatron>> {
    if !(1..=100).contains(&limit) {
        return Err(Error::validation("limit", "must be 1 to 100"));
    }
    Ok(sqlx::query_as(
        "select t.patron_id, p.display_name, t.currency, t.spent, t.sessions, t.duration_secs
           from (select patron_id, currency::text as currency, sum(spent)::bigint as spent,
                        sum(sessions)::bigint as sessions, sum(duration_secs)::bigint as duration_secs
                   from analytics_patron
                  where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2))
                  group by 1, 2) t
           join patron p on p.tenant_id = $1 and p.id = t.patron_id and not p.walk_in
          order by t.spent desc, t.sessions desc, t.patron_id
          limit $3",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// What patrons owe now, per currency, with the `largest` debts (0–100). A debt belongs to a patron, not to a
/// venue, so only members who see every venue read it (as with the ledger export).
pub async fn debts_outstanding(
    tx: &mut TenantTx,
    actor: &Actor,
    largest: i64,
) -> Result<Vec<DebtsOutstanding>> {
    actor.require_manager()?;
    crate::scope::require_all_venues(actor)?;
    if !(0..=100).contains(&largest) {
        return Err(Error::validation("largest", "must be 0 to 100"));
    }
    let totals: Vec<(String, i64, i64)> = sqlx::query_as(
        "select currency::text, sum(owed)::bigint, count(*) from analytics_debt
          where tenant_id = $1 and owed > 0 group by 1 order by 1",
    )
    .bind(tx.tenant())
    .fetch_all(tx.conn())
    .await?;
    let mut out = Vec::with_capacity(totals.len());
    for (currency, total, patrons) in totals {
        let largest: Vec<Debtor> = sqlx::query_as(
            "select d.patron_id, p.display_name, d.owed from analytics_debt d
               join patron p on p.tenant_id = d.tenant_id and p.id = d.patron_id
              where d.tenant_id = $1 and d.owed > 0 and d.currency = $2
              order by d.owed desc, d.patron_id limit $3",
        )
        .bind(tx.tenant())
        .bind(&currency)
        .bind(largest)
        .fetch_all(tx.conn())
        .await?;
        out.push(DebtsOutstanding {
            currency,
            total,
            patrons,
            largest,
        });
    }
    Ok(out)
}

/// One row per day of the period (days without anything included, with zeros).
pub async fn daily_metrics(tx: &mut TenantTx, scope: &Scope) -> Result<Vec<DailyMetric>> {
    let revenue = revenue_by_day(tx, scope).await?;
    let sessions: Vec<(NaiveDate, i64, i64, i64)> = sqlx::query_as(
        "select day, sum(sessions)::bigint, sum(duration_secs)::bigint, sum(energy_wh)::bigint
           from analytics_session_day
          where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and day between $3 and $4
          group by 1",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .bind(scope.from)
    .bind(scope.to)
    .fetch_all(tx.conn())
    .await?;
    let busy: Vec<(NaiveDate, i64)> = sqlx::query_as(
        "select day, sum(busy_secs)::bigint from analytics_busy_hour
          where tenant_id = $1 and ($2::uuid[] is null or venue_id = any($2)) and day between $3 and $4
          group by 1",
    )
    .bind(tx.tenant())
    .bind(scope.venues.as_deref())
    .bind(scope.from)
    .bind(scope.to)
    .fetch_all(tx.conn())
    .await?;
    let stations = stations(tx, scope).await?;
    let sessions: BTreeMap<NaiveDate, (i64, i64, i64)> = sessions
        .into_iter()
        .map(|(d, n, s, e)| (d, (n, s, e)))
        .collect();
    let busy: BTreeMap<NaiveDate, i64> = busy.into_iter().collect();
    let mut out = Vec::with_capacity(scope.days() as usize);
    let mut day = scope.from;
    while day <= scope.to {
        let (n, secs, energy) = sessions.get(&day).copied().unwrap_or_default();
        let busy_secs = busy.get(&day).copied().unwrap_or(0);
        out.push(DailyMetric {
            day,
            revenue: revenue
                .iter()
                .filter(|r| r.day == day)
                .map(|r| Amount {
                    currency: r.currency.clone(),
                    amount: r.amount,
                })
                .collect(),
            sessions: n,
            duration_secs: secs,
            average_duration_secs: div_round(secs, n),
            energy_wh: energy,
            busy_secs,
            utilisation: share(busy_secs, stations * 86_400),
        });
        day += Duration::days(1);
    }
    Ok(out)
}

/// The trailing window a projection learns from.
pub const PROJECTION_BASIS_DAYS: i64 = 28;

/// Projects revenue for `days` days (1–90) from `today` on: each day gets the average revenue of the same weekday in
/// the 28 days before `today` (four of each weekday; rounded half away from zero), per currency.
pub async fn projection(
    tx: &mut TenantTx,
    actor: &Actor,
    venue: Option<Uuid>,
    today: NaiveDate,
    days: i64,
) -> Result<Projection> {
    if !(1..=90).contains(&days) {
        return Err(Error::validation("days", "must be 1 to 90"));
    }
    super::check_day("today", today)?;
    let basis_from = today - Duration::days(PROJECTION_BASIS_DAYS);
    let basis_to = today - Duration::days(1);
    let scope = Scope::new(tx, actor, venue, basis_from, basis_to).await?;
    let basis = revenue_by_day(tx, &scope).await?;
    let weeks = PROJECTION_BASIS_DAYS / 7;
    let mut by_weekday: BTreeMap<(String, u32), i64> = BTreeMap::new();
    for r in &basis {
        *by_weekday
            .entry((r.currency.clone(), r.day.weekday().num_days_from_monday()))
            .or_default() += r.amount;
    }
    let currencies: Vec<String> = {
        let mut c: Vec<String> = basis.iter().map(|r| r.currency.clone()).collect();
        c.sort();
        c.dedup();
        c
    };
    let mut out = Vec::new();
    let mut totals = Vec::new();
    for currency in currencies {
        let mut total = 0;
        for i in 0..days {
            let day = today + Duration::days(i);
            let sum = by_weekday
                .get(&(currency.clone(), day.weekday().num_days_from_monday()))
                .copied()
                .unwrap_or(0);
            let amount = div_round(sum, weeks);
            total += amount;
            out.push(ProjectedDay {
                day,
                currency: currency.clone(),
                amount,
            });
        }
        totals.push(Amount {
            currency,
            amount: total,
        });
    }
    out.sort_by(|a, b| a.day.cmp(&b.day).then_with(|| a.currency.cmp(&b.currency)));
    Ok(Projection {
        method: "trailing 28-day weekday average: each day is projected at the mean revenue of the same weekday in \
                 the 28 days before today (four of each), per currency"
            .into(),
        basis_from,
        basis_to,
        days: out,
        totals,
    })
}
