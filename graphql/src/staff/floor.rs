//! Shifts (clock in and out, who is on shift, hours) and the safety log (interventions, flagged patrons).

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};
use switchyard_core::staff::safety::{self, NewSafetyEntry, PatronFlag, SafetyEntry, SafetyFilter};
use switchyard_core::staff::shifts::{self, Hours, Shift};
use switchyard_core::staff::Severity;
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

#[derive(InputObject)]
pub struct SafetyEntryInput {
    pub venue_id: Uuid,
    /// The patron it is about (or a station, or both).
    pub patron_id: Option<Uuid>,
    pub station_id: Option<Uuid>,
    /// What was done, in snake case: `warning`, `removal`, `first_aid`, `station_check`, ...
    pub kind: String,
    pub note: Option<String>,
    pub severity: Severity,
}

#[derive(Default)]
pub struct FloorQuery;

#[Object]
impl FloorQuery {
    /// One shift: the caller's own, or (owners and managers) any in their venues.
    async fn shift(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Shift> {
        let (actor, mut tx) = begin(ctx).await?;
        shifts::get(&mut tx, actor, id).await.gql()
    }

    /// Who is on shift now, at one venue or all the member's venues.
    async fn on_shift(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<Vec<Shift>> {
        let (actor, mut tx) = begin(ctx).await?;
        shifts::on_shift(&mut tx, actor, venue_id).await.gql()
    }

    /// Time on shift per member between `from` and `to` (shifts cut to the period; an open one counts until
    /// now). Owners and managers see everyone in their venues; staff see themselves.
    async fn shift_hours(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<Vec<Hours>> {
        let (actor, mut tx) = begin(ctx).await?;
        shifts::hours(&mut tx, actor, from, to, venue_id)
            .await
            .gql()
    }

    /// One safety log entry; `not_found` outside the member's venues.
    async fn safety_entry(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<SafetyEntry> {
        let (actor, mut tx) = begin(ctx).await?;
        safety::get(&mut tx, actor, id).await.gql()
    }

    /// The safety log, newest first, within the member's venues.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn safety_log(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
        patron_id: Option<Uuid>,
        station_id: Option<Uuid>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<SafetyEntry>> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = SafetyFilter {
            venue_id,
            patron_id,
            station_id,
            limit,
        };
        safety::list(&mut tx, actor, &filter).await.gql()
    }
}

#[derive(Default)]
pub struct FloorMutation;

#[Object]
impl FloorMutation {
    /// Clocks the caller in at a venue (one open shift at a time); `shift.started`.
    async fn clock_in(&self, ctx: &Context<'_>, venue_id: Uuid) -> async_graphql::Result<Shift> {
        let (actor, mut tx) = begin(ctx).await?;
        let shift = shifts::clock_in(&mut tx, actor, venue_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(shift)
    }

    /// Clocks out: the caller's open shift, or with `shiftId` (owners and managers) someone's forgotten one;
    /// `shift.ended`.
    async fn clock_out(
        &self,
        ctx: &Context<'_>,
        shift_id: Option<Uuid>,
    ) -> async_graphql::Result<Shift> {
        let (actor, mut tx) = begin(ctx).await?;
        let shift = shifts::clock_out(&mut tx, actor, shift_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(shift)
    }

    /// Records an intervention about a patron or a station.
    async fn record_safety_entry(
        &self,
        ctx: &Context<'_>,
        input: SafetyEntryInput,
    ) -> async_graphql::Result<SafetyEntry> {
        let (actor, mut tx) = begin(ctx).await?;
        let new = NewSafetyEntry {
            venue_id: input.venue_id,
            patron_id: input.patron_id,
            station_id: input.station_id,
            kind: input.kind,
            note: input.note,
            severity: input.severity,
        };
        let entry = safety::record(&mut tx, actor, new).await.gql()?;
        tx.commit().await.gql()?;
        Ok(entry)
    }

    /// Flags a patron (any member); staff see `Patron.flagged` and `Session.patronFlag`. `patron.flagged` goes to
    /// members (of `venueId` when given), never to the patron.
    async fn flag_patron(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        reason: String,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<PatronFlag> {
        let (actor, mut tx) = begin(ctx).await?;
        let flag = safety::flag(&mut tx, actor, patron_id, &reason, venue_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(flag)
    }

    /// Takes a patron's flag away (owners and managers); answers whether it was flagged.
    #[graphql(guard = "ManagerGuard")]
    async fn unflag_patron(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
    ) -> async_graphql::Result<bool> {
        let (actor, mut tx) = begin(ctx).await?;
        let was = safety::unflag(&mut tx, actor, patron_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(was)
    }
}
