//! Staff tools (seed 001): what the floor staff and their managers do during a shift.
//!
//! * [`sos`]: SOS alerts raised by members or patrons, acknowledged, answered and resolved, and the incident log.
//! * [`tasks`]: tasks for the floor, assigned to a member, with a due time (overdue ones are flagged).
//! * [`shifts`]: clock in and out, who is on shift, hours worked.
//! * [`safety`]: the safety log of interventions, and flagged patrons.
//!
//! Every object here belongs to one venue: a member scoped to other venues gets `not_found` for it, as for another
//! tenant's object. Every change emits its live event (`sos.*`, `task.*`, `shift.*`, `patron.flagged`) in its own
//! transaction. The row types derive their GraphQL shape here (as the domain enums do) so that the API and the
//! CSV export read the same fields.

pub mod safety;
pub mod shifts;
pub mod sos;
pub mod tasks;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;

/// How serious an SOS or a safety intervention is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, async_graphql::Enum,
)]
#[sqlx(type_name = "staff_severity", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Checks `venue` exists and the actor may see it (`not_found` otherwise).
pub(crate) async fn check_venue(tx: &mut TenantTx, actor: &Actor, venue: Uuid) -> Result<()> {
    actor.check_venue(venue, "venue")?;
    crate::venues::get(tx, venue).await?;
    Ok(())
}

/// Checks an optional station exists and stands at `venue`. A station at a venue the member may not see does not
/// exist for it (`not_found`, as any other of its ids).
pub(crate) async fn check_station(
    tx: &mut TenantTx,
    member: Option<&Actor>,
    venue: Uuid,
    station: Option<Uuid>,
) -> Result<()> {
    let Some(station) = station else {
        return Ok(());
    };
    let at: Uuid = crate::stations::get(tx, station).await?.venue_id;
    if let Some(actor) = member {
        actor.check_venue(at, "station")?;
    }
    if at != venue {
        return Err(Error::validation(
            "stationId",
            "this station is at another venue",
        ));
    }
    Ok(())
}

/// A text input: trimmed, at most `max` characters, `None` when empty.
pub(crate) fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<String> {
    Ok(crate::validate::text(field, value.unwrap_or(""), 0, max)?.to_owned())
}

/// A limit argument between 1 and 500.
pub(crate) fn check_limit(limit: i64) -> Result<i64> {
    if !(1..=500).contains(&limit) {
        return Err(Error::validation("limit", "must be between 1 and 500"));
    }
    Ok(limit)
}

/// Checks a time range `from`..`to`.
pub(crate) fn check_range(
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(Error::validation("to", "must not be before `from`"));
        }
    }
    Ok(())
}
