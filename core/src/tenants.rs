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
    /// Overrides the deployment's billing tick for this tenant's sessions.
    pub billing_tick_sec: Option<i32>,
    /// The most a STAFF member may top up in cash at once (minor units).
    pub staff_cash_top_up_cap: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn current(tx: &mut TenantTx) -> Result<Tenant> {
    let tenant: Option<Tenant> =
        sqlx::query_as("select id, name, billing_tick_sec, staff_cash_top_up_cap, created_at from tenant where id = $1")
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

/// The billing tick for this tenant's sessions: its own override, else `default`.
pub async fn billing_tick(
    tx: &mut TenantTx,
    default: chrono::Duration,
) -> Result<chrono::Duration> {
    let own: Option<i32> = sqlx::query_scalar("select billing_tick_sec from tenant where id = $1")
        .bind(tx.tenant())
        .fetch_optional(tx.conn())
        .await?
        .flatten();
    Ok(own.map_or(default, |s| chrono::Duration::seconds(i64::from(s))))
}

/// The most a STAFF member may top up in cash at once (minor units; default 20000).
pub async fn staff_cash_top_up_cap(tx: &mut TenantTx) -> Result<i64> {
    let cap: Option<i64> =
        sqlx::query_scalar("select staff_cash_top_up_cap from tenant where id = $1")
            .bind(tx.tenant())
            .fetch_optional(tx.conn())
            .await?;
    cap.ok_or(Error::NotFound("tenant"))
}

/// Sets the most a STAFF member may top up in cash at once. Owners only.
pub async fn set_staff_cash_top_up_cap(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    amount: i64,
) -> Result<Tenant> {
    if actor.role != crate::Role::Owner {
        return Err(Error::Forbidden("only an owner can change cash settings"));
    }
    if !(0..=crate::pricing::MAX_AMOUNT).contains(&amount) {
        return Err(Error::validation(
            "amount",
            format!(
                "must be between 0 and {} minor units",
                crate::pricing::MAX_AMOUNT
            ),
        ));
    }
    sqlx::query("update tenant set staff_cash_top_up_cap = $2 where id = $1")
        .bind(tx.tenant())
        .bind(amount)
        .execute(tx.conn())
        .await?;
    crate::audit::record(
        tx,
        actor,
        crate::audit::Entry {
            action: "tenant.set_staff_cash_top_up_cap",
            object_type: "tenant",
            object_id: Some(tx.tenant().0),
            detail: serde_json::json!({ "staff_cash_top_up_cap": amount }),
        },
    )
    .await?;
    current(tx).await
}

/// Sets (or, with `None`, clears) the tenant's billing tick. Owners only.
pub async fn set_billing_tick(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    seconds: Option<i32>,
) -> Result<Tenant> {
    if actor.role != crate::Role::Owner {
        return Err(Error::Forbidden(
            "only an owner can change billing settings",
        ));
    }
    if seconds.is_some_and(|s| !(1..=3600).contains(&s)) {
        return Err(Error::validation("seconds", "must be between 1 and 3600"));
    }
    sqlx::query("update tenant set billing_tick_sec = $2 where id = $1")
        .bind(tx.tenant())
        .bind(seconds)
        .execute(tx.conn())
        .await?;
    let detail = serde_json::json!({ "billing_tick_sec": seconds });
    crate::audit::record(
        tx,
        actor,
        crate::audit::Entry {
            action: "tenant.set_billing_tick",
            object_type: "tenant",
            object_id: Some(tx.tenant().0),
            detail,
        },
    )
    .await?;
    current(tx).await
}
