//! Tasks for the floor: created and assigned by owners and managers, completed by the assignee (or a manager),
//! flagged overdue once their due time passes while open.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{check_limit, check_station, check_venue, optional_text};
use crate::audit::{self, Entry};
use crate::db::{self, TenantTx};
use crate::error::{Error, Result};
use crate::events::NewEvent;
use crate::model::{Actor, Role};
use crate::scope::Named;

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, async_graphql::Enum)]
#[sqlx(type_name = "staff_task_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Open,
    Done,
    Cancelled,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct Task {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub station_id: Option<Uuid>,
    pub title: String,
    pub note: String,
    pub assignee_user_id: Option<Uuid>,
    pub due_at: Option<DateTime<Utc>>,
    pub status: TaskStatus,
    /// Open and past its due time.
    pub overdue: bool,
    pub created_by: Uuid,
    pub completed_at: Option<DateTime<Utc>>,
    pub completed_by: Option<Uuid>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancelled_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, venue_id, station_id, title, note, assignee_user_id, due_at, status,
    (status = 'open' and due_at is not null and due_at < now()) as overdue, created_by, completed_at,
    completed_by, cancelled_at, cancelled_by, created_at";

#[derive(Debug, Clone)]
pub struct NewTask {
    pub venue_id: Uuid,
    pub station_id: Option<Uuid>,
    pub title: String,
    pub note: Option<String>,
    pub assignee_user_id: Option<Uuid>,
    pub due_at: Option<DateTime<Utc>>,
}

/// Creates a task (owners and managers); `task.created` goes to the venue and the assignee.
pub async fn create(tx: &mut TenantTx, actor: &Actor, input: NewTask) -> Result<Task> {
    actor.require_manager()?;
    let title = crate::validate::text("title", &input.title, 1, 200)?.to_owned();
    let note = optional_text("note", input.note.as_deref(), 2000)?;
    check_venue(tx, actor, input.venue_id).await?;
    check_station(tx, Some(actor), input.venue_id, input.station_id).await?;
    if let Some(assignee) = input.assignee_user_id {
        check_assignee(tx, input.venue_id, assignee).await?;
    }
    let sql = format!(
        "insert into staff_task (tenant_id, id, venue_id, station_id, title, note, assignee_user_id, due_at,
                                 created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    );
    let task: Task = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(input.venue_id)
        .bind(input.station_id)
        .bind(title)
        .bind(note)
        .bind(input.assignee_user_id)
        .bind(input.due_at)
        .bind(actor.user_id)
        .fetch_one(tx.conn())
        .await?;
    finish(tx, actor, "task.created", "task.create", &task).await?;
    Ok(task)
}

/// The assignee must be a member who works at the task's venue.
async fn check_assignee(tx: &mut TenantTx, venue: Uuid, assignee: Uuid) -> Result<()> {
    let member = match crate::members::get(tx, assignee).await {
        Ok(member) => member,
        Err(Error::NotFound(_)) => {
            return Err(Error::validation(
                "assigneeUserId",
                "is not a member of this operator",
            ))
        }
        Err(e) => return Err(e),
    };
    if member
        .venue_ids
        .as_ref()
        .is_some_and(|v| !v.contains(&venue))
        && member.role != Role::Owner
    {
        return Err(Error::validation(
            "assigneeUserId",
            "does not work at this task's venue",
        ));
    }
    Ok(())
}

/// One task the member may see.
pub async fn get(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Task> {
    let task = fetch(tx, id, false).await?;
    actor.check_venue(task.venue_id, "task")?;
    Ok(task)
}

async fn fetch(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Task> {
    let sql = format!(
        "select {COLUMNS} from staff_task where tenant_id = $1 and id = $2 {}",
        if lock { "for update" } else { "" }
    );
    let task: Option<Task> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    task.ok_or(Error::NotFound("task"))
}

/// Locks an open task the member may see.
async fn open_task(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Task> {
    let task = fetch(tx, id, true).await?;
    actor.check_venue(task.venue_id, "task")?;
    if task.status != TaskStatus::Open {
        return Err(Error::Conflict(format!(
            "this task is already {}",
            if task.status == TaskStatus::Done {
                "done"
            } else {
                "cancelled"
            }
        )));
    }
    Ok(task)
}

/// Assigns or reassigns an open task (owners and managers).
pub async fn assign(tx: &mut TenantTx, actor: &Actor, id: Uuid, assignee: Uuid) -> Result<Task> {
    actor.require_manager()?;
    let task = open_task(tx, actor, id).await?;
    check_assignee(tx, task.venue_id, assignee).await?;
    let task = set(tx, id, "assignee_user_id = $3", assignee).await?;
    finish(tx, actor, "task.assigned", "task.assign", &task).await?;
    Ok(task)
}

/// Completes an open task: its assignee, or an owner or manager. Completing it again changes nothing.
pub async fn complete(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Task> {
    let current = fetch(tx, id, true).await?;
    actor.check_venue(current.venue_id, "task")?;
    if current.status == TaskStatus::Done {
        return Ok(current);
    }
    open_task(tx, actor, id).await?;
    if current.assignee_user_id != Some(actor.user_id) && !actor.role.can_manage() {
        return Err(Error::Forbidden(
            "only the assignee, a manager or an owner completes a task",
        ));
    }
    let task = set(
        tx,
        id,
        "status = 'done', completed_at = now(), completed_by = $3",
        actor.user_id,
    )
    .await?;
    finish(tx, actor, "task.completed", "task.complete", &task).await?;
    Ok(task)
}

/// Cancels an open task (owners and managers).
pub async fn cancel(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Task> {
    actor.require_manager()?;
    open_task(tx, actor, id).await?;
    let task = set(
        tx,
        id,
        "status = 'cancelled', cancelled_at = now(), cancelled_by = $3",
        actor.user_id,
    )
    .await?;
    finish(tx, actor, "task.cancelled", "task.cancel", &task).await?;
    Ok(task)
}

async fn set(tx: &mut TenantTx, id: Uuid, assignments: &str, user: Uuid) -> Result<Task> {
    let sql = format!(
        "update staff_task set {assignments} where tenant_id = $1 and id = $2 returning {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(user)
        .fetch_one(tx.conn())
        .await?)
}

async fn finish(
    tx: &mut TenantTx,
    actor: &Actor,
    kind: &'static str,
    action: &'static str,
    task: &Task,
) -> Result<()> {
    let data = json!({
        "title": task.title, "status": task.status, "due_at": task.due_at,
        "assignee_user_id": task.assignee_user_id, "station_id": task.station_id,
    });
    let mut event = NewEvent::new(kind, data)
        .venue(task.venue_id)
        .subject(task.id);
    if let Some(assignee) = task.assignee_user_id {
        event = event.user(assignee);
    }
    if let Some(station) = task.station_id {
        event = event.station(station);
    }
    tx.emit(event);
    let entry = Entry {
        action,
        object_type: "task",
        object_id: Some(task.id),
        detail: json!({ "title": task.title, "assignee_user_id": task.assignee_user_id }),
    };
    audit::record_in(tx, actor, Some(task.venue_id), entry).await
}

/// Which tasks a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum TaskState {
    /// Open ones (overdue included).
    Open,
    /// Open ones past their due time.
    Overdue,
    Done,
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct TaskFilter {
    /// Only the caller's own tasks.
    pub mine: bool,
    pub venue_id: Option<Uuid>,
    pub state: Option<TaskState>,
    pub limit: i64,
}

/// Tasks the member may see, soonest due first (undated last), then newest.
pub async fn list(tx: &mut TenantTx, actor: &Actor, filter: &TaskFilter) -> Result<Vec<Task>> {
    let limit = check_limit(filter.limit)?;
    let mut query = sqlx::QueryBuilder::new(format!(
        "select {COLUMNS} from staff_task where tenant_id = "
    ));
    query.push_bind(tx.tenant());
    db::filter(
        &mut query,
        "assignee_user_id = $",
        filter.mine.then_some(actor.user_id),
    );
    db::filter(&mut query, "venue_id = $", filter.venue_id);
    db::filter(&mut query, "venue_id = any($)", actor.venue_filter());
    query.push(match filter.state {
        None => "",
        Some(TaskState::Overdue) => " and status = 'open' and due_at < now()",
        Some(TaskState::Open) => " and status = 'open'",
        Some(TaskState::Done) => " and status = 'done'",
        Some(TaskState::Cancelled) => " and status = 'cancelled'",
    });
    query
        .push(" order by due_at nulls last, created_at desc limit ")
        .push_bind(limit);
    let rows = query.build_query_as().fetch_all(tx.conn()).await?;
    crate::scope::listed(tx, actor, rows, &[Named::Venue(filter.venue_id)]).await
}
