//! `GET /api/v1/dashboard`: the seed 000 live station grid — each station with its running session's remaining
//! time and running cost.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use switchyard_core::dashboard::{self, Dashboard};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, AuthActor};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DashboardQuery {
    venue_id: Option<Uuid>,
}

/// Every unarchived station of the tenant (or of one venue) with what is running on it.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "sessions", params(DashboardQuery), security(("bearer" = [])),
    responses((status = 200, body = Dashboard)))]
pub async fn get(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiQuery(query): ApiQuery<DashboardQuery>,
) -> ApiResult<Json<Dashboard>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let dashboard = dashboard::build(&mut tx, &actor, query.venue_id, Utc::now()).await?;
    tx.rollback().await?;
    Ok(Json(dashboard))
}
