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
    /// The venues the member is scoped to; `None`: every venue (always for owners).
    pub venue_ids: Option<Vec<Uuid>>,
    pub created_at: DateTime<Utc>,
}

/// The member columns, with the venue scope (`m` is the membership).
const MEMBER_COLUMNS: &str = "m.user_id, u.email, m.role,
    case when m.all_venues or m.role = 'owner' then null
         else array(select mv.venue_id from member_venue mv
                    where mv.tenant_id = m.tenant_id and mv.user_id = m.user_id order by mv.venue_id) end as venue_ids,
    m.created_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Invitation {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    /// The venues the invitation grants; `None`: every venue.
    pub venue_ids: Option<Vec<Uuid>>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

pub async fn list(tx: &mut TenantTx) -> Result<Vec<Member>> {
    let sql = format!(
        "select {MEMBER_COLUMNS}
         from membership m join app_user u on u.id = m.user_id
         where m.tenant_id = $1 order by m.role, u.email limit $2"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(crate::validate::LIST_CAP)
        .fetch_all(tx.conn())
        .await?)
}

pub async fn get(tx: &mut TenantTx, user_id: Uuid) -> Result<Member> {
    let sql = format!(
        "select {MEMBER_COLUMNS}
         from membership m join app_user u on u.id = m.user_id
         where m.tenant_id = $1 and m.user_id = $2"
    );
    let member: Option<Member> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(user_id)
        .fetch_optional(tx.conn())
        .await?;
    member.ok_or(Error::NotFound("member"))
}

/// Invites `email` with `role` and queues the invitation's email (in English). Returns the invitation and its
/// token, for in-process callers only (the demo seed): only the token's hash is stored, and the API never shows the
/// token to the inviter: it reaches the invitee by email. Inviting an email again replaces its pending invitation.
pub async fn invite(
    tx: &mut TenantTx,
    actor: &Actor,
    email: &str,
    role: Role,
) -> Result<(Invitation, String)> {
    invite_scoped(tx, actor, email, role, None, crate::notify::Locale::En).await
}

/// As [`invite`], for some venues only (`None`: every venue the inviter sees). Owners are never scoped.
pub async fn invite_scoped(
    tx: &mut TenantTx,
    actor: &Actor,
    email: &str,
    role: Role,
    venues: Option<Vec<Uuid>>,
    locale: crate::notify::Locale,
) -> Result<(Invitation, String)> {
    actor.require_manager()?;
    // The inviter's membership as it stands, share-locked: a removal or a role change under way is waited for, so an
    // invitation is never sent on authority its sender has just lost (the withdrawal of its invitations could not
    // see one not committed yet).
    let standing: Option<Role> = sqlx::query_scalar(
        "select role from membership where tenant_id = $1 and user_id = $2 for share",
    )
    .bind(tx.tenant())
    .bind(actor.user_id)
    .fetch_optional(tx.conn())
    .await?;
    let sorted = |v: Option<Vec<Uuid>>| {
        v.map(|mut v| {
            v.sort();
            v
        })
    };
    if standing != Some(actor.role)
        || sorted(venue_scope(tx, actor.user_id, actor.role).await?) != sorted(actor.venues.clone())
    {
        return Err(Error::Forbidden(
            "your membership changed while you invited; sign in again",
        ));
    }
    if role == Role::Owner && actor.role != Role::Owner {
        return Err(Error::Forbidden("only an owner can invite another owner"));
    }
    let venues = if role == Role::Owner {
        None
    } else {
        grantable_scope(tx, actor, venues).await?
    };
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
    // Inviting again replaces the email's pending invitation: only one the inviter could have made itself. A
    // manager does not withdraw an owner's invitation of a new owner, nor one to venues the manager does not manage.
    if actor.role != Role::Owner {
        let above: bool = sqlx::query_scalar(
            "select exists (select 1 from invitation where tenant_id = $1 and email = $2 and accepted_at is null
                              and revoked_at is null and expires_at > now()
                              and (role = 'owner' or ($3::uuid[] is not null
                                                      and (venue_ids is null or not venue_ids <@ $3))))",
        )
        .bind(tx.tenant())
        .bind(&email)
        .bind(actor.venues.as_deref())
        .fetch_one(tx.conn())
        .await?;
        if above {
            return Err(Error::Forbidden(
                "this email has a pending invitation that you could not have made (an owner's, or to venues you \
                 do not manage); ask an owner to change it",
            ));
        }
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
        "insert into invitation (tenant_id, id, email, role, token_hash, invited_by, expires_at, venue_ids, locale)
         values ($1, $2, $3, $4, $5, $6, now() + make_interval(days => $7), $8, $9)
         returning id, email, role, venue_ids, expires_at, created_at",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(&email)
    .bind(role)
    .bind(auth::token_hash(&token))
    .bind(actor.user_id)
    .bind(INVITATION_TTL_DAYS)
    .bind(&venues)
    .bind(locale.as_str())
    .fetch_one(tx.conn())
    .await?;
    crate::notify::flows::invitation(
        tx,
        invitation.id,
        &invitation.email,
        role,
        locale,
        &token,
        i64::from(INVITATION_TTL_DAYS),
    )
    .await?;
    let detail =
        serde_json::json!({ "email": invitation.email, "role": role, "venue_ids": venues });
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
    if actor.venues.is_some() && !within(&target.venue_ids, actor) {
        return Err(Error::Forbidden(
            "this member works in venues outside yours; ask an owner",
        ));
    }
    sqlx::query("update membership set role = $3 where tenant_id = $1 and user_id = $2")
        .bind(tx.tenant())
        .bind(user_id)
        .bind(role)
        .execute(tx.conn())
        .await?;
    let mut withdrawn = 0;
    if target.role != role {
        changed(tx, user_id);
        withdrawn = withdraw_invitations(tx, user_id).await?;
    }
    let detail =
        serde_json::json!({ "from": target.role, "to": role, "invitations_withdrawn": withdrawn });
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

/// Tells the member's live connections that what they were signed in with no longer holds (they close, and the
/// member connects again with the new role or venues). Membership events are not news: no subscriber hears them.
fn changed(tx: &mut TenantTx, user_id: Uuid) {
    tx.emit(crate::events::NewEvent::new("member.changed", serde_json::json!({})).user(user_id));
}

/// Withdraws the invitations `user_id` sent that are still pending: its role or venues changed, or it left, and what
/// it granted then may be more than it may grant now (a dismissed manager's invitation would bring a manager back).
/// Returns how many.
async fn withdraw_invitations(tx: &mut TenantTx, user_id: Uuid) -> Result<u64> {
    Ok(sqlx::query(
        "update invitation set revoked_at = now(), updated_at = now()
         where tenant_id = $1 and invited_by = $2 and accepted_at is null and revoked_at is null",
    )
    .bind(tx.tenant())
    .bind(user_id)
    .execute(tx.conn())
    .await?
    .rows_affected())
}

/// Removes a member; their refresh tokens go with the membership and their access tokens stop working at once.
pub async fn remove(tx: &mut TenantTx, actor: &Actor, user_id: Uuid) -> Result<Member> {
    actor.require_manager()?;
    let target = get(tx, user_id).await?;
    if actor.venues.is_some() && !within(&target.venue_ids, actor) {
        return Err(Error::Forbidden(
            "this member works in venues outside yours; ask an owner",
        ));
    }
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
    let withdrawn = withdraw_invitations(tx, user_id).await?;
    let detail = serde_json::json!({
        "email": target.email, "role": target.role, "invitations_withdrawn": withdrawn,
    });
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

/// The venues a member of `role` may see now (`None`: every venue). Read on every request with the role, so a
/// change of scope takes effect at once (for subscriptions, at the next authentication).
pub async fn venue_scope(
    tx: &mut TenantTx,
    user_id: Uuid,
    role: Role,
) -> Result<Option<Vec<Uuid>>> {
    if role == Role::Owner {
        return Ok(None);
    }
    let scope: Option<Option<Vec<Uuid>>> = sqlx::query_scalar(
        "select case when m.all_venues then null
                     else array(select mv.venue_id from member_venue mv
                                where mv.tenant_id = m.tenant_id and mv.user_id = m.user_id) end
         from membership m where m.tenant_id = $1 and m.user_id = $2",
    )
    .bind(tx.tenant())
    .bind(user_id)
    .fetch_optional(tx.conn())
    .await?;
    Ok(scope.flatten())
}

/// Whether every venue of a member's scope (`None`: all) is within `actor`'s.
fn within(scope: &Option<Vec<Uuid>>, actor: &Actor) -> bool {
    match (scope, &actor.venues) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(theirs), Some(_)) => theirs.iter().all(|v| actor.sees_venue(*v)),
    }
}

/// Checks a scope `actor` wants to grant: every venue must exist and be one the actor sees (`not_found`
/// otherwise, as for any venue out of sight). A scoped actor asking for every venue grants its own venues.
async fn grantable_scope(
    tx: &mut TenantTx,
    actor: &Actor,
    venues: Option<Vec<Uuid>>,
) -> Result<Option<Vec<Uuid>>> {
    let Some(mut venues) = venues.or_else(|| actor.venues.clone()) else {
        return Ok(None);
    };
    venues.sort();
    venues.dedup();
    if venues.is_empty() {
        return Err(Error::validation(
            "venueIds",
            "list at least one venue, or leave it out for every venue",
        ));
    }
    if venues.len() > 200 {
        return Err(Error::validation("venueIds", "at most 200 venues"));
    }
    let known: i64 =
        sqlx::query_scalar("select count(*) from venue where tenant_id = $1 and id = any($2)")
            .bind(tx.tenant())
            .bind(&venues)
            .fetch_one(tx.conn())
            .await?;
    if known != venues.len() as i64 || !venues.iter().all(|v| actor.sees_venue(*v)) {
        return Err(Error::NotFound("venue"));
    }
    Ok(Some(venues))
}

/// Writes a member's scope (`None`: every venue).
async fn write_scope(tx: &mut TenantTx, user_id: Uuid, venues: Option<&[Uuid]>) -> Result<()> {
    sqlx::query("delete from member_venue where tenant_id = $1 and user_id = $2")
        .bind(tx.tenant())
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    sqlx::query("update membership set all_venues = $3 where tenant_id = $1 and user_id = $2")
        .bind(tx.tenant())
        .bind(user_id)
        .bind(venues.is_none())
        .execute(tx.conn())
        .await?;
    if let Some(venues) = venues {
        sqlx::query(
            "insert into member_venue (tenant_id, user_id, venue_id) select $1, $2, unnest($3::uuid[])",
        )
        .bind(tx.tenant())
        .bind(user_id)
        .bind(venues)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// On acceptance: the new membership gets the invitation's venues.
pub async fn apply_invited_scope(
    tx: &mut TenantTx,
    invitation_id: Uuid,
    user_id: Uuid,
) -> Result<()> {
    let venues: Option<Option<Vec<Uuid>>> =
        sqlx::query_scalar("select venue_ids from invitation where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(invitation_id)
            .fetch_optional(tx.conn())
            .await?;
    if let Some(Some(venues)) = venues {
        write_scope(tx, user_id, Some(&venues)).await?;
    }
    Ok(())
}

/// Changes the venues a staff member or manager works in (`None`: every venue). Owners and managers only; a
/// scoped manager grants only its own venues, to members within them.
pub async fn set_venues(
    tx: &mut TenantTx,
    actor: &Actor,
    user_id: Uuid,
    venues: Option<Vec<Uuid>>,
) -> Result<Member> {
    actor.require_manager()?;
    let target = get(tx, user_id).await?;
    if target.role == Role::Owner {
        return Err(Error::validation(
            "userId",
            "owners see every venue; change the role first",
        ));
    }
    if !within(&target.venue_ids, actor) {
        return Err(Error::Forbidden(
            "this member works in venues outside yours; ask an owner",
        ));
    }
    if venues.is_none() && actor.venues.is_some() {
        return Err(Error::Forbidden(
            "only a member who sees every venue can grant every venue",
        ));
    }
    let venues = grantable_scope(tx, actor, venues).await?;
    write_scope(tx, user_id, venues.as_deref()).await?;
    changed(tx, user_id);
    let withdrawn = if venues != target.venue_ids {
        withdraw_invitations(tx, user_id).await?
    } else {
        0
    };
    audit::record(
        tx,
        actor,
        Entry {
            action: "member.set_venues",
            object_type: "member",
            object_id: Some(user_id),
            detail: serde_json::json!({
                "from": target.venue_ids, "to": venues, "invitations_withdrawn": withdrawn,
            }),
        },
    )
    .await?;
    get(tx, user_id).await
}
