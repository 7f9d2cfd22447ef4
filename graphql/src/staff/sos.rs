//! SOS: raise (members and patrons), acknowledge, respond, resolve; the incident log and its CSV export.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};
use switchyard_core::staff::sos::{self, IncidentFilter, NewSos, Raiser, Sos, SosStatus};
use switchyard_core::staff::Severity;
use switchyard_core::{Db, PatronActor};
use uuid::Uuid;

use crate::{actor, begin, GqlResult, ManagerGuard};

#[derive(InputObject)]
pub struct RaiseSosInput {
    pub venue_id: Uuid,
    pub station_id: Option<Uuid>,
    /// Where in the venue, in words ("by the karaoke rooms").
    pub location: Option<String>,
    pub severity: Severity,
    pub note: Option<String>,
}

#[derive(Default)]
pub struct SosQuery;

#[Object]
impl SosQuery {
    /// One SOS; `not_found` for other tenants' and other venues' ones.
    async fn sos(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Sos> {
        let (actor, mut tx) = begin(ctx).await?;
        sos::get(&mut tx, actor, id).await.gql()
    }

    /// The incident log, newest first (owners and managers, within their venues): `from` inclusive, `to`
    /// exclusive, on the time raised.
    #[graphql(
        guard = "ManagerGuard",
        complexity = "crate::rows(limit, child_complexity)"
    )]
    async fn incidents(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
        status: Option<SosStatus>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<Sos>> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = IncidentFilter {
            venue_id,
            status,
            from,
            to,
            limit,
        };
        sos::incidents(&mut tx, actor, &filter).await.gql()
    }

    /// The incident log as CSV text (a header line, then one line per SOS, with the response times in seconds);
    /// same filters as `incidents`.
    #[graphql(guard = "ManagerGuard")]
    async fn incidents_csv(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
        status: Option<SosStatus>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 500)] limit: i64,
    ) -> async_graphql::Result<String> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = IncidentFilter {
            venue_id,
            status,
            from,
            to,
            limit,
        };
        let rows = sos::incidents(&mut tx, actor, &filter).await.gql()?;
        Ok(sos::csv(&rows))
    }
}

#[derive(Default)]
pub struct SosMutation;

#[Object]
impl SosMutation {
    /// Raises an SOS: any member (in their venues) or a signed-in patron. `sos.raised` reaches the venue's members
    /// (`staffAlerts`) and the owners at once.
    async fn raise_sos(
        &self,
        ctx: &Context<'_>,
        input: RaiseSosInput,
    ) -> async_graphql::Result<Sos> {
        let new = NewSos {
            venue_id: input.venue_id,
            station_id: input.station_id,
            location: input.location,
            severity: input.severity,
            note: input.note,
        };
        if let Some(patron) = ctx.data_opt::<PatronActor>() {
            let mut tx = ctx.data::<Db>()?.begin_tenant(patron.tenant).await.gql()?;
            let sos = sos::raise(&mut tx, Raiser::Patron(patron), new)
                .await
                .gql()?;
            tx.commit().await.gql()?;
            return Ok(sos);
        }
        let actor = actor(ctx)?;
        let mut tx = ctx.data::<Db>()?.begin_tenant(actor.tenant).await.gql()?;
        let sos = sos::raise(&mut tx, Raiser::Member(actor), new)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(sos)
    }

    /// "I'm on it." Acknowledging again changes nothing.
    async fn acknowledge_sos(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Sos> {
        let (actor, mut tx) = begin(ctx).await?;
        let sos = sos::acknowledge(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(sos)
    }

    /// Records what was done (the latest response is kept); acknowledges it too if nobody had.
    async fn respond_to_sos(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        note: String,
    ) -> async_graphql::Result<Sos> {
        let (actor, mut tx) = begin(ctx).await?;
        let sos = sos::respond(&mut tx, actor, id, &note).await.gql()?;
        tx.commit().await.gql()?;
        Ok(sos)
    }

    /// Resolves it. Resolving again returns it unchanged.
    async fn resolve_sos(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        note: Option<String>,
    ) -> async_graphql::Result<Sos> {
        let (actor, mut tx) = begin(ctx).await?;
        let sos = sos::resolve(&mut tx, actor, id, note.as_deref())
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(sos)
    }
}
