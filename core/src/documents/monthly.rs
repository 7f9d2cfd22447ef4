//! The monthly PDF report of a venue: the sessions that ended in a calendar month of the venue's time zone, what
//! they were charged (tax included, with the tax at the venue's current rate taken out once on the total), by
//! station kind, by payment method, and by station. Made on request and stored under
//! `<tenant>/venue-reports/<venue>/<yyyy-mm>.pdf` (asking again overwrites it with the figures of that moment, so a
//! month still running can be looked at).

use chrono::{NaiveDate, TimeZone};
use serde::Serialize;
use uuid::Uuid;

use super::pdf::Doc;
use super::receipts::{issuer, payment_label};
use super::store::Store;
use super::tax::{self, Split};
use super::{legal, venue_tax};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::{money, venues};

/// One row of a breakdown: what, sessions, charged (minor units).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Group {
    pub name: String,
    pub sessions: i64,
    pub charged: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonthlyReport {
    pub venue_id: Uuid,
    pub year: i32,
    pub month: u32,
    pub currency: String,
    pub sessions: i64,
    pub minutes: i64,
    pub energy_wh: i64,
    pub split: Split,
    pub object_key: String,
}

/// Makes and stores the report of `venue` for `year`-`month`. Owners and managers of the venue.
pub async fn generate(
    tx: &mut TenantTx,
    actor: &Actor,
    store: &Store,
    venue_id: Uuid,
    year: i32,
    month: u32,
) -> Result<MonthlyReport> {
    actor.require_manager()?;
    actor.check_venue(venue_id, "venue")?;
    if !(1..=12).contains(&month) {
        return Err(Error::validation("month", "must be 1 to 12"));
    }
    if !(2000..=2100).contains(&year) {
        return Err(Error::validation("year", "must be between 2000 and 2100"));
    }
    let venue = venues::get(tx, venue_id).await?;
    let tz: chrono_tz::Tz = venue.timezone.parse().unwrap_or(chrono_tz::Tz::UTC);
    let local_start = |y: i32, m: u32| {
        month_start(tz, y, m).ok_or_else(|| Error::validation("month", "no such month"))
    };
    let from = local_start(year, month)?;
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let to = local_start(ny, nm)?;

    const ENDED: &str = "tenant_id = $1 and venue_id = $2 and ended_at >= $3 and ended_at < $4
                         and status in ('ended', 'expired', 'bought_out')";
    let (sessions, minutes, energy_wh, charged): (i64, i64, i64, i64) = sqlx::query_as(&format!(
        "select count(*), coalesce(sum(extract(epoch from ended_at - started_at)::bigint / 60), 0)::bigint,
                coalesce(sum(energy_wh), 0)::bigint, coalesce(sum(charged_amount), 0)::bigint
           from session where {ENDED}"
    ))
    .bind(tx.tenant())
    .bind(venue_id)
    .bind(from)
    .bind(to)
    .fetch_one(tx.conn())
    .await?;
    let by = |column: &str| {
        format!(
            "select {column} as name, count(*) as sessions, coalesce(sum(s.charged_amount), 0)::bigint as charged
               from session s join station st on st.tenant_id = s.tenant_id and st.id = s.station_id
              where s.{} group by 1 order by 3 desc, 1 limit 50",
            ENDED.replace(" and ", " and s.")
        )
    };
    let mut groups = Vec::new();
    for column in ["st.kind::text", "s.payment_method", "st.name"] {
        let rows: Vec<Group> = sqlx::query_as(&by(column))
            .bind(tx.tenant())
            .bind(venue_id)
            .bind(from)
            .bind(to)
            .fetch_all(tx.conn())
            .await?;
        groups.push(rows);
    }
    let rate = venue_tax(tx, venue_id).await?;
    let split = tax::split(charged, rate.rate_bp);
    let legal = legal(tx).await?;
    let currency = venue.currency.clone();
    let amount = |a: i64| format!("{} {currency}", money::format(a, &currency));
    let period = format!("{year}-{month:02}");

    let mut doc = Doc::new(&format!("{} {period}", venue.name));
    issuer(&mut doc, &legal);
    doc.gap()
        .heading(&format!("Monthly report {period}: {}", venue.name), 16.0);
    doc.text(&format!(
        "Sessions ended from {} to {} ({})",
        from.with_timezone(&tz).format("%Y-%m-%d"),
        (to.with_timezone(&tz) - chrono::Duration::days(1)).format("%Y-%m-%d"),
        venue.timezone
    ));
    doc.rule();
    doc.row("Sessions", &sessions.to_string(), false);
    doc.row("Minutes in session", &minutes.to_string(), false);
    doc.row(
        "Energy delivered (kWh)",
        &format!("{}.{:03}", energy_wh / 1000, energy_wh % 1000),
        false,
    );
    doc.row("Charged (tax included)", &amount(split.gross), true);
    doc.row(
        &format!(
            "of which {} {}",
            rate.label,
            tax::format_rate(split.rate_bp)
        ),
        &amount(split.tax),
        false,
    );
    doc.row("Net", &amount(split.net), false);
    for (title, rows) in ["By station kind", "By payment method", "By station"]
        .into_iter()
        .zip(&groups)
    {
        doc.gap().heading(title, 12.0);
        if rows.is_empty() {
            doc.text("No sessions.");
        }
        for g in rows {
            let name = if title == "By payment method" {
                payment_label(&g.name).to_owned()
            } else {
                g.name.clone()
            };
            doc.row(
                &format!("{name} ({} sessions)", g.sessions),
                &amount(g.charged),
                false,
            );
        }
    }
    let key = format!(
        "{}/venue-reports/{venue_id}/{year:04}-{month:02}.pdf",
        tx.tenant()
    );
    store.put_pdf(&key, doc.to_pdf()).await?;
    metrics::counter!("documents_generated_total", "kind" => "venue_month").increment(1);
    Ok(MonthlyReport {
        venue_id,
        year,
        month,
        currency: venue.currency,
        sessions,
        minutes,
        energy_wh,
        split,
        object_key: key,
    })
}

/// When month `m` of year `y` begins in `tz`: its first day's midnight, or, where the clocks skip midnight that day
/// (a daylight-saving change at 00:00, as in Paraguay or Chile), the first local time after the gap.
fn month_start(tz: chrono_tz::Tz, y: i32, m: u32) -> Option<chrono::DateTime<chrono::Utc>> {
    let midnight = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
    // Gaps are at most an hour or two; minute steps find the first time past one wherever it ends.
    (0..=180).find_map(|minutes| {
        tz.from_local_datetime(&(midnight + chrono::Duration::minutes(minutes)))
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_whose_first_midnight_the_clocks_skip_begins_when_the_day_does() {
        // Paraguay moved its clocks from 00:00 to 01:00 on 2023-10-01 (UTC-4 to UTC-3).
        let asuncion: chrono_tz::Tz = "America/Asuncion".parse().unwrap_or(chrono_tz::Tz::UTC);
        assert_eq!(
            month_start(asuncion, 2023, 10).map(|t| t.to_rfc3339()),
            Some("2023-10-01T04:00:00+00:00".to_owned())
        );
        // September ends where October begins; an ordinary month begins at midnight.
        assert_eq!(
            month_start(asuncion, 2023, 9).map(|t| t.to_rfc3339()),
            Some("2023-09-01T04:00:00+00:00".to_owned())
        );
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap_or(chrono_tz::Tz::UTC);
        assert_eq!(
            month_start(berlin, 2026, 3).map(|t| t.to_rfc3339()),
            Some("2026-02-28T23:00:00+00:00".to_owned())
        );
        assert_eq!(month_start(berlin, 2026, 13), None);
    }
}
