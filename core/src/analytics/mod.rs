//! Analytics (issue 12, seed 001's analytics and daily metrics): figures for owners and managers served from
//! rollups, never from a scan of sessions or the ledger per request.
//!
//! * [`rollup`]: the workers' pass that keeps the rollup tables of migration 0029 up to date from two queues the
//!   database fills by trigger in the business transaction (journals that moved revenue or debt, sessions that
//!   ended). A queued row is added and deleted in one transaction, so it is counted exactly once.
//! * [`queries`]: what GraphQL reads — revenue by day, venue, station kind and payment method; utilisation by hour of
//!   week; sessions, durations and energy; top patrons; debts outstanding; daily metrics; a revenue projection.
//! * [`summary`]: the daily summary email to owners who chose a channel for it, once per venue-local day.
//!
//! Days are venue-local calendar days (the venue's time zone); amounts are minor units per currency.

pub mod queries;
pub mod rollup;
pub mod summary;

use chrono::NaiveDate;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;

/// The longest period one request may ask for.
pub const MAX_DAYS: i64 = 366;

/// What a request may see: a tenant's venues (all, or a list) and a period of venue-local days, both ends included.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `None`: every venue of the tenant.
    pub venues: Option<Vec<Uuid>>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl Scope {
    /// The scope of a request by `actor` (owners and managers) for one venue or all it sees, over `[from, to]`.
    /// A venue outside the member's venues, or of another tenant, answers `not_found`.
    pub async fn new(
        tx: &mut TenantTx,
        actor: &Actor,
        venue: Option<Uuid>,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Self> {
        actor.require_manager()?;
        check_day("from", from)?;
        check_day("to", to)?;
        if to < from {
            return Err(Error::validation("to", "must not be before from"));
        }
        if (to - from).num_days() + 1 > MAX_DAYS {
            return Err(Error::validation("to", "a period is at most 366 days"));
        }
        let venues = match venue {
            Some(v) => {
                actor.check_venue(v, "venue")?;
                crate::venues::get(tx, v).await?;
                Some(vec![v])
            }
            None => actor.venue_filter().map(<[Uuid]>::to_vec),
        };
        Ok(Self { venues, from, to })
    }

    /// Whether the scope is every venue of the tenant.
    pub fn all_venues(&self) -> bool {
        self.venues.is_none()
    }

    /// How many days the period has.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }
}

/// A day a period may start or end on: in the years 1970 to 9999 (dates far outside would overflow the calendar
/// arithmetic of a period).
pub(crate) fn check_day(field: &'static str, day: NaiveDate) -> Result<()> {
    use chrono::Datelike;
    if (1970..=9999).contains(&day.year()) {
        Ok(())
    } else {
        Err(Error::validation(
            field,
            "must be a date in the years 1970 to 9999",
        ))
    }
}

/// Rounds `numerator / denominator` half away from zero (integer minor units; `denominator` > 0).
pub(crate) fn div_round(numerator: i64, denominator: i64) -> i64 {
    if denominator <= 0 {
        return 0;
    }
    let half = denominator / 2;
    if numerator >= 0 {
        (numerator + half) / denominator
    } else {
        -((-numerator + half) / denominator)
    }
}

#[cfg(test)]
mod tests {
    use super::{check_day, div_round};
    use chrono::NaiveDate;

    #[test]
    fn a_period_day_far_outside_the_calendar_is_refused() {
        for bad in [
            NaiveDate::MAX,
            NaiveDate::MIN,
            NaiveDate::from_ymd_opt(1969, 12, 31).unwrap_or_default(),
        ] {
            assert!(check_day("from", bad).is_err(), "{bad}");
        }
        for good in [
            NaiveDate::from_ymd_opt(1970, 1, 1),
            NaiveDate::from_ymd_opt(9999, 12, 31),
        ] {
            assert!(good.is_some_and(|d| check_day("to", d).is_ok()), "{good:?}");
        }
    }

    #[test]
    fn division_rounds_half_away_from_zero() {
        assert_eq!(div_round(10, 4), 3);
        assert_eq!(div_round(9, 4), 2);
        assert_eq!(div_round(-10, 4), -3);
        assert_eq!(div_round(0, 4), 0);
        assert_eq!(div_round(7, 0), 0);
    }
}
