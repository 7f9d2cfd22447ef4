//! The audit log reader (owners; managers read the entries of their venues when scoped to some).

use async_graphql::{Context, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::audit::{self, AuditFilter};
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

/// One audited change.
#[derive(SimpleObject)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_user_id: Option<Uuid>,
    /// `<object>.<verb>`: `venue.create`, `member.set_venues`, `sos.resolve`, ...
    pub action: String,
    pub object_type: String,
    pub object_id: Option<Uuid>,
    /// The venue the change concerns, when it concerns one.
    pub venue_id: Option<Uuid>,
    pub request_id: Option<String>,
    /// The client's address (an IPv6 client's /64), recorded from the staff-tools release on.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Audit entries, newest first, filtered by actor, object, action and time (`from` inclusive, `to`
    /// exclusive). Owners and unscoped managers read every entry; a manager scoped to venues reads the entries
    /// recorded for those venues.
    #[graphql(
        guard = "ManagerGuard",
        complexity = "crate::rows(limit, child_complexity)"
    )]
    #[expect(
        clippy::too_many_arguments,
        reason = "a GraphQL field's arguments are its filters"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        actor_user_id: Option<Uuid>,
        object_type: Option<String>,
        object_id: Option<Uuid>,
        action: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<AuditEntry>> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = AuditFilter {
            actor_user_id,
            object_type,
            object_id,
            action,
            from,
            to,
            limit,
        };
        let rows = audit::list(&mut tx, actor, &filter).await.gql()?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                actor_user_id: r.actor_user_id,
                action: r.action,
                object_type: r.object_type,
                object_id: r.object_id,
                venue_id: r.venue_id,
                request_id: r.request_id,
                ip: r.ip,
                user_agent: r.user_agent,
                detail: Json(r.detail),
                created_at: r.created_at,
            })
            .collect())
    }
}
