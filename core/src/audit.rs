//! The audit log: one row per mutation, written in the mutation's own transaction.

use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::Result;
use crate::model::Actor;

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
