//! Tasks: created, assigned and cancelled by owners and managers, completed by the assignee.

use async_graphql::{Context, InputObject, Object};
use chrono::{DateTime, Utc};
use switchyard_core::staff::tasks::{self, NewTask, Task, TaskFilter, TaskState};
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

#[derive(InputObject)]
pub struct CreateTaskInput {
    pub venue_id: Uuid,
    pub station_id: Option<Uuid>,
    pub title: String,
    pub note: Option<String>,
    /// A member who works at the venue.
    pub assignee_user_id: Option<Uuid>,
    pub due_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct TaskQuery;

#[Object]
impl TaskQuery {
    /// One task; `not_found` for other tenants' and other venues' ones.
    async fn task(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Task> {
        let (actor, mut tx) = begin(ctx).await?;
        tasks::get(&mut tx, actor, id).await.gql()
    }

    /// Tasks within the member's venues, soonest due first: `mine` for the caller's own, `state` OPEN, OVERDUE,
    /// DONE or CANCELLED.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false)] mine: bool,
        venue_id: Option<Uuid>,
        state: Option<TaskState>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<Task>> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = TaskFilter {
            mine,
            venue_id,
            state,
            limit,
        };
        tasks::list(&mut tx, actor, &filter).await.gql()
    }
}

#[derive(Default)]
pub struct TaskMutation;

#[Object]
impl TaskMutation {
    /// Creates a task (owners and managers); `task.created` reaches the venue and the assignee.
    #[graphql(guard = "ManagerGuard")]
    async fn create_task(
        &self,
        ctx: &Context<'_>,
        input: CreateTaskInput,
    ) -> async_graphql::Result<Task> {
        let (actor, mut tx) = begin(ctx).await?;
        let new = NewTask {
            venue_id: input.venue_id,
            station_id: input.station_id,
            title: input.title,
            note: input.note,
            assignee_user_id: input.assignee_user_id,
            due_at: input.due_at,
        };
        let task = tasks::create(&mut tx, actor, new).await.gql()?;
        tx.commit().await.gql()?;
        Ok(task)
    }

    /// Assigns or reassigns an open task (owners and managers).
    #[graphql(guard = "ManagerGuard")]
    async fn assign_task(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        assignee_user_id: Uuid,
    ) -> async_graphql::Result<Task> {
        let (actor, mut tx) = begin(ctx).await?;
        let task = tasks::assign(&mut tx, actor, id, assignee_user_id)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(task)
    }

    /// Completes a task: its assignee, or an owner or manager.
    async fn complete_task(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Task> {
        let (actor, mut tx) = begin(ctx).await?;
        let task = tasks::complete(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(task)
    }

    /// Cancels an open task (owners and managers).
    #[graphql(guard = "ManagerGuard")]
    async fn cancel_task(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Task> {
        let (actor, mut tx) = begin(ctx).await?;
        let task = tasks::cancel(&mut tx, actor, id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(task)
    }
}
