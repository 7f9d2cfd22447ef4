//! Staff tools (seed 001): SOS and the incident log, tasks, shifts, the safety log and flagged patrons, and the
//! audit log reader. Every object answers `not_found` outside the member's venue scope, as another tenant's would.

mod audit;
mod floor;
mod sos;
mod tasks;

use async_graphql::{Context, MergedObject};
use switchyard_core::staff::safety::{self, PatronFlag};
use switchyard_core::{Db, PatronActor};
use uuid::Uuid;

use crate::GqlResult;

#[derive(MergedObject, Default)]
pub struct StaffQuery(
    sos::SosQuery,
    tasks::TaskQuery,
    floor::FloorQuery,
    audit::AuditQuery,
);

#[derive(MergedObject, Default)]
pub struct StaffMutation(sos::SosMutation, tasks::TaskMutation, floor::FloorMutation);

/// A patron's flag for a member (`Some(None)`: not flagged); `None` for the patron itself, which never learns it.
pub(crate) async fn flag_for_members(
    ctx: &Context<'_>,
    patron: Uuid,
) -> async_graphql::Result<Option<Option<PatronFlag>>> {
    if ctx.data_opt::<PatronActor>().is_some() {
        return Ok(None);
    }
    let actor = crate::actor(ctx)?;
    let mut tx = ctx.data::<Db>()?.begin_tenant(actor.tenant).await.gql()?;
    Ok(Some(safety::flag_of(&mut tx, patron).await.gql()?))
}
