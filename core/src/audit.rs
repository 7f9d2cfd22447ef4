//! The audit log: one row per mutation, written in the mutation's own transaction.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{self, TenantTx};
use crate::error::{Error, Result};
use crate::model::{Actor, PatronActor, RequestClient};

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

/// Records `entry` as done by `actor` (user, request id, client address and user agent).
pub async fn record(tx: &mut TenantTx, actor: &Actor, entry: Entry<'_>) -> Result<()> {
    record_in(tx, actor, None, entry).await
}

/// As [`record`], for an entry about something in `venue`: managers scoped to venues read the entries of theirs.
pub async fn record_in(
    tx: &mut TenantTx,
    actor: &Actor,
    venue: Option<Uuid>,
    entry: Entry<'_>,
) -> Result<()> {
    let source = Source {
        request_id: actor.request_id.as_deref(),
        client: &actor.client,
        venue,
    };
    insert(tx, Some(actor.user_id), source, entry).await
}

/// Records `entry` as done by the system (no user, no request) about something in `venue`: managers scoped to
/// venues read the entries of theirs.
pub async fn record_system_in(
    tx: &mut TenantTx,
    venue: Option<Uuid>,
    entry: Entry<'_>,
) -> Result<()> {
    let client = RequestClient::default();
    let source = Source {
        request_id: None,
        client: &client,
        venue,
    };
    insert(tx, None, source, entry).await
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
    let client = RequestClient::default();
    let source = Source {
        request_id,
        client: &client,
        venue: None,
    };
    insert(tx, user_id, source, entry).await
}

struct Source<'a> {
    request_id: Option<&'a str>,
    client: &'a RequestClient,
    venue: Option<Uuid>,
}

async fn insert(
    tx: &mut TenantTx,
    user_id: Option<Uuid>,
    source: Source<'_>,
    entry: Entry<'_>,
) -> Result<()> {
    let tenant = tx.tenant();
    // A user agent is the client's own text: kept short and printable.
    let user_agent = source.client.user_agent.as_deref().map(|ua| {
        ua.chars()
            .filter(|c| !crate::validate::is_forbidden_char(*c))
            .take(500)
            .collect::<String>()
    });
    sqlx::query(
        "insert into audit_log (tenant_id, id, actor_user_id, action, object_type, object_id, request_id, detail,
                                ip, user_agent, venue_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9::inet, $10, $11)",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(entry.action)
    .bind(entry.object_type)
    .bind(entry.object_id)
    .bind(source.request_id)
    .bind(entry.detail)
    .bind(source.client.ip.map(|ip| ip.to_string()))
    .bind(user_agent)
    .bind(source.venue)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// What the audit log reader asks for; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_user_id: Option<Uuid>,
    pub object_type: Option<String>,
    pub object_id: Option<Uuid>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// One audit entry as read back.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub object_type: String,
    pub object_id: Option<Uuid>,
    pub venue_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The newest entries matching `filter`. Owners and managers only; a manager scoped to venues reads the entries
/// recorded for those venues (entries about no venue — members, tariffs, the tenant — are for owners and unscoped
/// managers).
pub async fn list(tx: &mut TenantTx, actor: &Actor, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
    actor.require_manager()?;
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if to < from {
            return Err(Error::validation("to", "must not be before `from`"));
        }
    }
    if !(1..=500).contains(&filter.limit) {
        return Err(Error::validation("limit", "must be between 1 and 500"));
    }
    let mut query = sqlx::QueryBuilder::new(
        "select id, actor_user_id, action, object_type, object_id, venue_id, request_id, host(ip) as ip,
                user_agent, detail, created_at
         from audit_log where tenant_id = ",
    );
    query.push_bind(tx.tenant());
    db::filter(&mut query, "actor_user_id = $", filter.actor_user_id);
    db::filter(&mut query, "object_type = $", filter.object_type.as_deref());
    db::filter(&mut query, "object_id = $", filter.object_id);
    db::filter(&mut query, "action = $", filter.action.as_deref());
    db::filter(&mut query, "created_at >= $", filter.from);
    db::filter(&mut query, "created_at < $", filter.to);
    db::filter(&mut query, "venue_id = any($)", actor.venue_filter());
    query
        .push(" order by created_at desc, id desc limit ")
        .push_bind(filter.limit);
    Ok(query.build_query_as().fetch_all(tx.conn()).await?)
}
