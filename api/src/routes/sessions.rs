//! The seed 000 session contract: `POST /api/v1/sessions/start`, `PUT /api/v1/sessions/{id}/extend`,
//! `DELETE /api/v1/sessions/{id}`, and `GET /api/v1/sessions/{id}` with the live cost.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_core::pricing::Line;
use switchyard_core::sessions::{self, Payment, Session, SessionStatus, StartSession};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, AuthActor};
use crate::idempotent;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    station_id: Uuid,
    /// Omit for a cash walk-in.
    patron_id: Option<Uuid>,
    /// Omit (wallet only) for an open-ended session billed until stopped.
    duration_minutes: Option<i64>,
    payment: Payment,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    minutes: i64,
}

/// A session as REST shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    session_id: Uuid,
    station_id: Uuid,
    venue_id: Uuid,
    patron_id: Uuid,
    status: SessionStatus,
    started_at: DateTime<Utc>,
    planned_end_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    /// When the station was actually switched off at the end, as its edge bridge reported it.
    switched_off_at: Option<DateTime<Utc>>,
    /// Planned length in minutes (timed sessions).
    duration_minutes: Option<i64>,
    remaining_seconds: Option<i64>,
    currency: String,
    /// Charged to the ledger so far.
    charged_amount: i64,
    /// The cost of the usage so far (the final cost once ended).
    total_amount: i64,
    #[schema(value_type = Vec<Object>)]
    cost_lines: Vec<Line>,
    tariff_id: Uuid,
    tariff_version: i32,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        let now = Utc::now();
        let price = s.cost_at(now);
        Self {
            session_id: s.id,
            station_id: s.station_id,
            venue_id: s.venue_id,
            patron_id: s.patron_id,
            status: s.status,
            started_at: s.started_at,
            planned_end_at: s.planned_end_at,
            ended_at: s.ended_at,
            switched_off_at: s.switched_off_at,
            duration_minutes: s.planned_end_at.map(|e| (e - s.started_at).num_minutes()),
            remaining_seconds: s.remaining_seconds(now).filter(|_| s.is_running()),
            currency: s.currency.clone(),
            charged_amount: s.charged_amount,
            total_amount: price.amount,
            cost_lines: price.lines,
            tariff_id: s.tariff_id,
            tariff_version: s.tariff_version,
        }
    }
}

fn to_value(view: SessionView) -> ApiResult<Value> {
    serde_json::to_value(view).map_err(|e| switchyard_core::Error::Internal(e.into()).into())
}

/// Starts a session (staff: walk-in cash or a patron's wallet). Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/sessions/start", tag = "sessions", request_body = StartRequest,
    params(("Idempotency-Key" = String, Header, description = "a fresh UUID per start")),
    security(("bearer" = [])),
    responses((status = 201, body = SessionView), (status = 400, description = "idempotency_key_required"),
              (status = 402, description = "insufficient_funds"), (status = 409, description = "station busy, no tariff"),
              (status = 422, description = "validation_failed or idempotency_key_reused")))]
pub async fn start(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartRequest>,
) -> ApiResult<Response> {
    let value = serde_json::to_value(&body)
        .map_err(|e| ApiError::from(switchyard_core::Error::Internal(e.into())))?;
    let tick = chrono::Duration::seconds(state.config.billing_tick.as_secs() as i64);
    let key = idempotent::key(&headers);
    idempotent::run(
        &state,
        &actor,
        "sessions.start",
        key,
        true,
        &value,
        |mut tx| async {
            switchyard_core::scope::station(&mut tx, &actor, body.station_id).await?;
            let input = StartSession {
                station_id: body.station_id,
                patron_id: body.patron_id,
                duration_minutes: body.duration_minutes,
                payment: body.payment,
            };
            let session = sessions::start(&mut tx, &actor, input, tick).await?;
            Ok((tx, StatusCode::CREATED, to_value(session.into())?))
        },
    )
    .await
}

/// Adds minutes to a timed session. An `Idempotency-Key` makes a retried extension count once.
#[utoipa::path(put, path = "/api/v1/sessions/{id}/extend", tag = "sessions", request_body = ExtendRequest,
    params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header)), security(("bearer" = [])),
    responses((status = 200, body = SessionView), (status = 402), (status = 404), (status = 409)))]
pub async fn extend(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ExtendRequest>,
) -> ApiResult<Response> {
    let value = serde_json::json!({ "session_id": id, "minutes": body.minutes });
    let key = idempotent::key(&headers);
    idempotent::run(
        &state,
        &actor,
        "sessions.extend",
        key,
        false,
        &value,
        |mut tx| async {
            switchyard_core::scope::session(&mut tx, &actor, id).await?;
            let session = sessions::extend(&mut tx, &actor, id, body.minutes).await?;
            Ok((tx, StatusCode::OK, to_value(session.into())?))
        },
    )
    .await
}

/// Stops a session now, settles it and switches the station off. Stopping it again returns it unchanged.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = SessionView), (status = 404)))]
pub async fn stop(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<SessionView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    switchyard_core::scope::session(&mut tx, &actor, id).await?;
    let session = sessions::stop(&mut tx, Some(&actor), id, Utc::now()).await?;
    tx.commit().await?;
    Ok(Json(session.into()))
}

/// One session with its live cost and the lines explaining it.
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = SessionView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<SessionView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let session = sessions::get(&mut tx, id).await?;
    actor.check_venue(session.venue_id, "session")?;
    Ok(Json(session.into()))
}
