//! The tenant itself.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub async fn current(tx: &mut TenantTx) -> Result<Tenant> {
    let tenant: Option<Tenant> =
        sqlx::query_as("select id, name, created_at from tenant where id = $1")
            .bind(tx.tenant())
            .fetch_optional(tx.conn())
            .await?;
    tenant.ok_or(Error::NotFound("tenant"))
}

/// The acting user's email (users are global; the caller has already been checked as a member).
pub async fn user_email(tx: &mut TenantTx, user_id: Uuid) -> Result<String> {
    let email: Option<String> = sqlx::query_scalar("select email from app_user where id = $1")
        .bind(user_id)
        .fetch_optional(tx.conn())
        .await?;
    email.ok_or(Error::NotFound("user"))
}
