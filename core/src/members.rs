//! Members of a tenant and invitations to join it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::auth;
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::{Actor, Role};

/// How long an invitation can be accepted.
pub const INVITATION_TTL_DAYS: i32 = 7;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Member>> {
    Ok(sqlx::query_as(
        "select m.user_id, u.email, m.role, m.created_at
         from membership m join app_user u on u.id = m.user_id
         where m.tenant_id = $1 order by m.role, u.email limit $2",
    )
    .bind(tx.tenant())
    .bind(crate::validate::LIST_CAP)
    .fetch_all(tx.conn())
    .await?)
}

pub async fn get(tx: &mut TenantTx, user_id: Uuid) -> Result<Member> {
    let member: Option<Member> = sqlx::query_as(
        "select m.user_id, u.email, m.role, m.created_at
         from membership m join app_user u on u.id = m.user_id
         where m.tenant_id = $1 and m.user_id = $2",
    )
    .bind(tx.tenant())
    .bind(user_id)
    .fetch_optional(tx.conn())
    .await?;
    member.ok_or(Error::NotFound("member"))
}

/// Invites `email` with `role`. Returns the invitation and its token; only the token's hash is stored, so this
/// is the one time it can be shown. Inviting an email again replaces its pending invitation.
pub async fn invite(
    tx: &mut TenantTx,
    actor: &Actor,
    email: &str,
    role: Role,
) -> Result<(Invitation, String)> {
    actor.require_manager()?;
    if role == Role::Owner && actor.role != Role::Owner {
        return Err(Error::Forbidden("only an owner can invite another owner"));
    }
    let email = auth::normalize_email("email", email)?;
    let already: bool = sqlx::query_scalar(
        "select exists (select 1 from membership m join app_user u on u.id = m.user_id
                        where m.tenant_id = $1 and u.email = $2)",
    )
    .bind(tx.tenant())
    .bind(&email)
    .fetch_one(tx.conn())
    .await?;
    if already {
        return Err(Error::Conflict("this email is already a member".into()));
    }
    sqlx::query(
        "update invitation set revoked_at = now()
         where tenant_id = $1 and email = $2 and accepted_at is null and revoked_at is null",
    )
    .bind(tx.tenant())
    .bind(&email)
    .execute(tx.conn())
    .await?;
    let token = auth::random_token();
    let invitation: Invitation = sqlx::query_as(
        "insert into invitation (tenant_id, id, email, role, token_hash, invited_by, expires_at)
         values ($1, $2, $3, $4, $5, $6, now() + make_interval(days => $7))
         returning id, email, role, expires_at, created_at",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(&email)
    .bind(role)
    .bind(auth::token_hash(&token))
    .bind(actor.user_id)
    .bind(INVITATION_TTL_DAYS)
    .fetch_one(tx.conn())
    .await?;
    let detail = serde_json::json!({ "email": invitation.email, "role": role });
    audit::record(
        tx,
        actor,
        Entry {
            action: "member.invite",
            object_type: "invitation",
            object_id: Some(invitation.id),
            detail,
        },
    )
    .await?;
    Ok((invitation, token))
}

pub async fn change_role(
    tx: &mut TenantTx,
    actor: &Actor,
    user_id: Uuid,
    role: Role,
) -> Result<Member> {
    actor.require_manager()?;
    let target = get(tx, user_id).await?;
    if (target.role == Role::Owner || role == Role::Owner) && actor.role != Role::Owner {
        return Err(Error::Forbidden(
            "only an owner can grant or take away the owner role",
        ));
    }
    if target.role == Role::Owner && role != Role::Owner {
        ensure_another_owner(tx, user_id).await?;
    }
    sqlx::query("update membership set role = $3 where tenant_id = $1 and user_id = $2")
        .bind(tx.tenant())
        .bind(user_id)
        .bind(role)
        .execute(tx.conn())
        .await?;
    let detail = serde_json::json!({ "from": target.role, "to": role });
    audit::record(
        tx,
        actor,
        Entry {
            action: "member.change_role",
            object_type: "member",
            object_id: Some(user_id),
            detail,
        },
    )
    .await?;
    get(tx, user_id).await
}

/// Removes a member; their refresh tokens go with the membership and their access tokens stop working at once.
pub async fn remove(tx: &mut TenantTx, actor: &Actor, user_id: Uuid) -> Result<Member> {
    actor.require_manager()?;
    let target = get(tx, user_id).await?;
    if target.role == Role::Owner {
        if actor.role != Role::Owner {
            return Err(Error::Forbidden("only an owner can remove an owner"));
        }
        ensure_another_owner(tx, user_id).await?;
    }
    sqlx::query("delete from membership where tenant_id = $1 and user_id = $2")
        .bind(tx.tenant())
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    // Ends the removed member's live connections at once.
    tx.emit(
        crate::events::NewEvent::new("member.removed", serde_json::json!({ "role": target.role }))
            .user(user_id),
    );
    let detail = serde_json::json!({ "email": target.email, "role": target.role });
    audit::record(
        tx,
        actor,
        Entry {
            action: "member.remove",
            object_type: "member",
            object_id: Some(user_id),
            detail,
        },
    )
    .await?;
    Ok(target)
}

/// Locks the owners' rows so two concurrent demotions cannot both pass, then checks one would remain.
async fn ensure_another_owner(tx: &mut TenantTx, leaving: Uuid) -> Result<()> {
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "select user_id from membership where tenant_id = $1 and role = 'owner' for update",
    )
    .bind(tx.tenant())
    .fetch_all(tx.conn())
    .await?;
    if owners.iter().all(|o| *o == leaving) {
        return Err(Error::Conflict(
            "a tenant must keep at least one owner; make someone else owner first".into(),
        ));
    }
    Ok(())
}
