//! Edge bridges: register one per venue (the token is shown once), rotate or revoke its token, see its presence.

use async_graphql::{ComplexObject, Context, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::bridges;
use switchyard_core::scope::{self, Named};
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Bridge {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub name: String,
    /// Connected now.
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The bridge software's version, as it said at its last hello.
    pub version: Option<String>,
    /// The bridge's clock offset from the cloud's, measured through heartbeats (ms).
    pub clock_offset_ms: Option<i64>,
    /// The highest event sequence recorded from it.
    pub last_seq: i64,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When its tunnel last went down.
    pub tunnel_down_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Something the bridge sent that the cloud refused: a switch-off it could not have made (`end_refused`), an event
/// sequence beyond the window (`seq_out_of_window`), a flood of frames (`flood`), an event the cloud failed to apply
/// (`event_failed`, with its frame in `detail`; `detail.given_up` once it was acknowledged without being applied);
/// and a cabinet's reports it could not take.
#[derive(SimpleObject)]
pub struct BridgeAnomaly {
    pub id: Uuid,
    pub kind: String,
    pub station_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub seq: Option<i64>,
    /// Why it was refused, and what was reported.
    pub detail: async_graphql::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

#[ComplexObject]
impl Bridge {
    /// What this bridge sent that was refused, newest first (at most `limit`, 100 by default).
    #[graphql(
        guard = "ManagerGuard",
        complexity = "crate::rows(limit, child_complexity)"
    )]
    async fn anomalies(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100, validator(minimum = 1, maximum = 500))] limit: i64,
    ) -> async_graphql::Result<Vec<BridgeAnomaly>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(bridges::anomalies(&mut tx, self.id, limit)
            .await
            .gql()?
            .into_iter()
            .map(|a| BridgeAnomaly {
                id: a.id,
                kind: a.kind,
                station_id: a.station_id,
                session_id: a.session_id,
                seq: a.seq,
                detail: async_graphql::Json(a.detail),
                created_at: a.created_at,
            })
            .collect())
    }
}

impl From<bridges::Bridge> for Bridge {
    fn from(b: bridges::Bridge) -> Self {
        Self {
            id: b.id,
            venue_id: b.venue_id,
            name: b.name,
            online: b.online,
            last_seen_at: b.last_seen_at,
            version: b.version,
            clock_offset_ms: b.clock_offset_ms,
            last_seq: b.last_seq,
            revoked_at: b.revoked_at,
            tunnel_down_at: b.tunnel_down_at,
            created_at: b.created_at,
        }
    }
}

/// A bridge and its token: shown this once (only a hash is kept). Put it in the bridge's `BRIDGE_TOKEN`.
#[derive(SimpleObject)]
pub struct BridgeWithToken {
    pub bridge: Bridge,
    pub token: String,
}

#[derive(Default)]
pub struct BridgeQuery;

#[Object]
impl BridgeQuery {
    /// The tenant's bridges (of one venue when `venueId` is given).
    async fn bridges(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<Uuid>,
    ) -> async_graphql::Result<Vec<Bridge>> {
        let (actor, mut tx) = begin(ctx).await?;
        let rows = bridges::list(&mut tx, venue_id)
            .await
            .gql()?
            .into_iter()
            .filter(|b| actor.sees_venue(b.venue_id))
            .map(Bridge::from)
            .collect();
        scope::listed(&mut tx, actor, rows, &[Named::Venue(venue_id)])
            .await
            .gql()
    }

    async fn bridge(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Bridge> {
        let (actor, mut tx) = begin(ctx).await?;
        let bridge = bridges::get(&mut tx, id).await.gql()?;
        actor.check_venue(bridge.venue_id, "bridge").gql()?;
        Ok(bridge.into())
    }
}

#[derive(Default)]
pub struct BridgeMutation;

#[Object]
impl BridgeMutation {
    #[graphql(guard = "ManagerGuard")]
    async fn create_bridge(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
        name: String,
    ) -> async_graphql::Result<BridgeWithToken> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(venue_id, "venue").gql()?;
        let (bridge, token) = bridges::create(&mut tx, actor, venue_id, &name)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(BridgeWithToken {
            bridge: bridge.into(),
            token,
        })
    }

    /// A new token; the old one stops working at once, and the bridge's open tunnels close.
    #[graphql(guard = "ManagerGuard")]
    async fn rotate_bridge_token(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<BridgeWithToken> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::bridge(&mut tx, actor, id).await.gql()?;
        let (bridge, token) = bridges::rotate(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(BridgeWithToken {
            bridge: bridge.into(),
            token,
        })
    }

    /// A new key for the PC agent of an `AGENT` station (shown once; the station keeps its SHA-256, and the bridge
    /// checks agents against it). Put it in the agent's configuration.
    #[graphql(guard = "ManagerGuard")]
    async fn issue_agent_key(
        &self,
        ctx: &Context<'_>,
        station_id: Uuid,
    ) -> async_graphql::Result<String> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::station(&mut tx, actor, station_id).await.gql()?;
        let key = bridges::issue_agent_key(&mut tx, actor, station_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(key)
    }

    #[graphql(guard = "ManagerGuard")]
    async fn revoke_bridge(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Bridge> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::bridge(&mut tx, actor, id).await.gql()?;
        let bridge = bridges::revoke(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(bridge.into())
    }
}
