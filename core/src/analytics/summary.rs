//! The daily summary email: after a venue's local day ends, each owner who chose a channel for the topic
//! `daily_summary` (nobody gets it by default) receives that day's figures — revenue, sessions, average duration,
//! energy, utilisation — through the notification outbox.
//!
//! Once per owner per venue-local day, however many workers run: the pass that inserts the day's row into
//! `analytics_daily_summary` (primary key tenant, venue, day) queues the messages in the same transaction, and the
//! outbox's own key (`daily_summary:<venue>:<day>` per channel and recipient) would refuse a second copy anyway. The
//! tenant's rollup queues are drained first, so the figures include everything committed before the summary.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use uuid::Uuid;

use super::{div_round, queries, rollup, Scope};
use crate::db::{Db, TenantId, TenantTx};
use crate::error::Result;
use crate::notify::flows::money;
use crate::notify::subjects::{self, Subject, Topic};
use crate::notify::Kind;

/// Venue-days looked at in one pass.
const DUE_PER_PASS: i32 = 200;

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SummaryPass {
    /// Venue-days summarised by this pass.
    pub days: usize,
    /// Messages queued.
    pub queued: usize,
}

/// Summarises every venue whose local yesterday (as of `now`) has no summary yet and has an owner who opted in.
pub async fn run_once(db: &Db, now: DateTime<Utc>, batch: i64) -> Result<SummaryPass> {
    let due = db.system().daily_summaries_due(now, DUE_PER_PASS).await?;
    let mut pass = SummaryPass::default();
    for (tenant, venue, day) in due {
        // The figures must include everything already committed: roll the tenant up first. Another worker rolling
        // it up now: try again next pass.
        if rollup::drain_tenant(db, tenant, batch).await.is_err() {
            continue;
        }
        let pending: bool = {
            let mut tx = db.begin_tenant(tenant).await?;
            let pending = sqlx::query_scalar(
                "select exists (select 1 from analytics_journal_queue where tenant_id = $1)
                     or exists (select 1 from analytics_session_queue where tenant_id = $1)",
            )
            .bind(tenant)
            .fetch_one(tx.conn())
            .await?;
            tx.rollback().await?;
            pending
        };
        if pending {
            continue;
        }
        match summarise(db, tenant, venue, day).await {
            Ok(Some(queued)) => {
                pass.days += 1;
                pass.queued += queued;
                metrics::counter!("analytics_daily_summaries_total").increment(1);
                tracing::info!(tenant.id = %tenant, venue.id = %venue, %day, queued, "daily summary queued");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(tenant.id = %tenant, venue.id = %venue, error = ?e, "daily summary failed")
            }
        }
    }
    Ok(pass)
}

/// Queues the summary of `venue`'s `day` to its owners, once: `None` if it was done already.
pub async fn summarise(
    db: &Db,
    tenant: TenantId,
    venue: Uuid,
    day: NaiveDate,
) -> Result<Option<usize>> {
    let mut tx = db.begin_tenant(tenant).await?;
    let first: Option<NaiveDate> = sqlx::query_scalar(
        "insert into analytics_daily_summary (tenant_id, venue_id, day) values ($1, $2, $3)
         on conflict do nothing returning day",
    )
    .bind(tenant)
    .bind(venue)
    .bind(day)
    .fetch_optional(tx.conn())
    .await?;
    if first.is_none() {
        tx.rollback().await?;
        return Ok(None);
    }
    let data = figures(&mut tx, venue, day).await?;
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "select user_id from membership where tenant_id = $1 and role = 'owner' order by user_id",
    )
    .bind(tenant)
    .fetch_all(tx.conn())
    .await?;
    let mut queued = 0;
    for owner in owners {
        queued += subjects::to_subject(
            &mut tx,
            Subject::Member(owner),
            Topic::DailySummary,
            Kind::DailySummary,
            &format!("daily_summary:{venue}:{day}"),
            data.clone(),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(queued))
}

/// The message's data: the venue's figures of `day`, formatted.
async fn figures(tx: &mut TenantTx, venue: Uuid, day: NaiveDate) -> Result<serde_json::Value> {
    let (name, timezone, currency): (String, String, String) = sqlx::query_as(
        "select name, timezone, currency::text from venue where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(venue)
    .fetch_one(tx.conn())
    .await?;
    let scope = Scope {
        venues: Some(vec![venue]),
        from: day,
        to: day,
    };
    let metrics = queries::daily_metrics(tx, &scope).await?;
    let m = metrics.into_iter().next();
    let revenue: i64 = m
        .as_ref()
        .map(|m| {
            m.revenue
                .iter()
                .filter(|a| a.currency == currency)
                .map(|a| a.amount)
                .sum()
        })
        .unwrap_or(0);
    let (sessions, average, energy, utilisation) = m
        .map(|m| {
            (
                m.sessions,
                m.average_duration_secs,
                m.energy_wh,
                m.utilisation,
            )
        })
        .unwrap_or_default();
    // Tenths of a per cent, rounded.
    let permille = (utilisation * 1000.0).round() as i64;
    Ok(json!({
        "venue": name,
        "day": day.to_string(),
        "timezone": timezone,
        "revenue": money(revenue, &currency),
        "sessions": sessions,
        "average_minutes": div_round(average, 60),
        "energy_kwh": format!("{}.{:03}", energy / 1000, energy % 1000),
        "utilisation": format!("{}.{} %", permille / 10, permille % 10),
    }))
}
