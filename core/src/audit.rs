//! The audit log: one row per mutation, written in the mutation's own transaction.

use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::Result;
use crate::model::{Actor, PatronActor};

/// Who did something: a member, a patron in its own app, or the system (workers, bridges).
#[derive(Debug, Clone, Copy)]
pub enum By<'a> {
    Member(&'a Actor),
    Patron(&'a PatronActor),
    System,
}

impl By<'_> {
    /// The member's login, if a member acted.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            By::Member(a) => Some(a.user_id),
            _ => None,
        }
    }

    /// The patron, if a patron acted.
    pub fn patron_id(&self) -> Option<Uuid> {
        match self {
            By::Patron(p) => Some(p.patron_id),
            _ => None,
        }
    }
}

impl<'a> From<&'a Actor> for By<'a> {
    fn from(actor: &'a Actor) -> Self {
        By::Member(actor)
    }
}

impl<'a> From<&'a PatronActor> for By<'a> {
    fn from(patron: &'a PatronActor) -> Self {
        By::Patron(patron)
    }
}

/// What happened, to which object.
pub struct Entry<'a> {
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: Option<Uuid>,
    pub detail: serde_json::Value,
}

/// Records `entry` as done by `actor` (user and request id).
pub async fn record(tx: &mut TenantTx, actor: &Actor, entry: Entry<'_>) -> Result<()> {
    record_as(tx, Some(actor.user_id), actor.request_id.as_deref(), entry).await
}

/// Records `entry` as done by `by`. A patron has no login row to point at, so its id goes into the detail
/// (`by_patron`) with its request id.
pub async fn record_by(tx: &mut TenantTx, by: By<'_>, mut entry: Entry<'_>) -> Result<()> {
    match by {
        By::Member(actor) => record(tx, actor, entry).await,
        By::Patron(patron) => {
            if let Some(detail) = entry.detail.as_object_mut() {
                detail.insert("by_patron".into(), serde_json::json!(patron.patron_id));
            }
            record_as(tx, None, patron.request_id.as_deref(), entry).await
        }
        By::System => record_as(tx, None, None, entry).await,
    }
}

/// Records `entry` for a user who is not yet an [`Actor`] (sign-up, invitation acceptance).
pub async fn record_as(
    tx: &mut TenantTx,
    user_id: Option<Uuid>,
    request_id: Option<&str>,
    entry: Entry<'_>,
) -> Result<()> {
    let tenant = tx.tenant();
    sqlx::query(
        "insert into audit_log (tenant_id, id, actor_user_id, action, object_type, object_id, request_id, detail)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(entry.action)
    .bind(entry.object_type)
    .bind(entry.object_id)
    .bind(request_id)
    .bind(entry.detail)
    .execute(tx.conn())
    .await?;
    Ok(())
}
