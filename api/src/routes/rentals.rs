//! The seed 004 rental contract: `POST /api/v1/rentals/quote`, `POST /api/v1/rentals/start`,
//! `POST /api/v1/rentals/stop`, `GET /api/v1/rentals/{id}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_core::ledger::{self, Owner, Purpose};
use switchyard_core::rentals;
use switchyard_core::sessions::{self, Session, SessionStatus};
use switchyard_core::{Error, TenantTx};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, AuthActor};
use crate::idempotent;

/// How long a quote can be started.
pub const QUOTE_TTL_SECS: i64 = 60;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// The patron.
    user_id: Uuid,
    /// The cabinet.
    station_id: Uuid,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct QuoteResponse {
    quote_id: Uuid,
    /// Minor units per hour.
    price_per_hour: i64,
    free_period_min: u32,
    /// Held at start, released at the end.
    deposit: i64,
    expires_in_sec: i64,
    currency: String,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    quote_id: Uuid,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StartResponse {
    rental_id: Uuid,
    powerbank_id: String,
    /// `ACTIVE`.
    status: &'static str,
    started_at: DateTime<Utc>,
    total_amount: i64,
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    rental_id: Uuid,
    /// Where the powerbank is returned: any cabinet of the operator.
    station_id: Uuid,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StopResponse {
    rental_id: Uuid,
    /// `FINISHED`, or `EXPIRED` / `BOUGHT_OUT` when it had already ended that way.
    status: &'static str,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    total_amount: i64,
    duration_minutes: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RentalResponse {
    rental_id: Uuid,
    status: &'static str,
    powerbank_id: String,
    started_at: DateTime<Utc>,
    total_amount: i64,
    /// What the patron owes (in this venue's currency).
    current_debt: i64,
    duration_minutes: i64,
}

fn status(s: SessionStatus) -> &'static str {
    match s {
        SessionStatus::Active => "ACTIVE",
        SessionStatus::Paused => "PAUSED",
        SessionStatus::Ended => "FINISHED",
        SessionStatus::Expired => "EXPIRED",
        SessionStatus::BoughtOut => "BOUGHT_OUT",
        SessionStatus::Failed => "FAILED",
    }
}

fn total(s: &Session) -> i64 {
    if s.is_running() {
        s.chargeable_at(Utc::now())
    } else {
        s.charged_amount
    }
}

fn duration_minutes(s: &Session) -> i64 {
    (s.ended_at.unwrap_or_else(Utc::now) - s.started_at)
        .num_minutes()
        .max(0)
}

fn json<T: Serialize>(value: T) -> ApiResult<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(e.into()).into())
}

/// A rental is a session with a powerbank; other sessions are not rentals.
async fn rental(tx: &mut TenantTx, id: Uuid) -> Result<(Session, rentals::Asset), Error> {
    let session = sessions::get(tx, id).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound("rental"),
        other => other,
    })?;
    let asset = session.asset_id.ok_or(Error::NotFound("rental"))?;
    Ok((session, rentals::asset(tx, asset).await?))
}

/// Prices a rental at a cabinet for a patron; the quote can be started for 60 seconds.
#[utoipa::path(post, path = "/api/v1/rentals/quote", tag = "rentals", request_body = QuoteRequest,
    security(("bearer" = [])),
    responses((status = 200, body = QuoteResponse), (status = 404, description = "unknown patron or station"),
              (status = 409, description = "no powerbank available, or no tariff")))]
pub async fn quote(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiJson(body): ApiJson<QuoteRequest>,
) -> ApiResult<Json<QuoteResponse>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    switchyard_core::scope::station(&mut tx, &actor, body.station_id).await?;
    let quote = rentals::quote(
        &mut tx,
        &actor,
        body.user_id,
        body.station_id,
        QUOTE_TTL_SECS,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(QuoteResponse {
        quote_id: quote.id,
        price_per_hour: quote.price_per_hour,
        free_period_min: quote.free_period_min,
        deposit: quote.deposit,
        expires_in_sec: QUOTE_TTL_SECS,
        currency: quote.currency,
    }))
}

/// Starts a rental from a quote: holds the deposit, ejects a powerbank. Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/rentals/start", tag = "rentals", request_body = StartRequest,
    params(("Idempotency-Key" = String, Header)), security(("bearer" = [])),
    responses((status = 200, body = StartResponse), (status = 400, description = "quote_expired"),
              (status = 402, description = "insufficient_funds for the deposit"),
              (status = 404, description = "unknown quote"), (status = 409, description = "quote already used")))]
pub async fn start(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartRequest>,
) -> ApiResult<Response> {
    let value = json(&body)?;
    let tick = chrono::Duration::seconds(state.config.billing_tick.as_secs() as i64);
    let providers = state.payments.clone();
    idempotent::run(
        &state,
        &actor,
        "rentals.start",
        idempotent::key(&headers),
        true,
        &value,
        |mut tx| async {
            let provider = providers.current(&mut tx).await?;
            let (session, asset) = rentals::start(
                &mut tx,
                &actor,
                provider.as_ref(),
                body.quote_id,
                tick,
                None,
            )
            .await?;
            let response = StartResponse {
                rental_id: session.id,
                powerbank_id: asset.label,
                status: status(session.status),
                started_at: session.started_at,
                total_amount: 0,
            };
            Ok((tx, StatusCode::OK, json(response)?))
        },
    )
    .await
}

/// Ends a rental where the powerbank was returned (the start cabinet or any other). Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/rentals/stop", tag = "rentals", request_body = StopRequest,
    params(("Idempotency-Key" = String, Header)), security(("bearer" = [])),
    responses((status = 200, body = StopResponse), (status = 404), (status = 409, description = "no free slot")))]
pub async fn stop(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StopRequest>,
) -> ApiResult<Response> {
    let value = json(&body)?;
    idempotent::run(
        &state,
        &actor,
        "rentals.stop",
        idempotent::key(&headers),
        true,
        &value,
        |mut tx| async {
            rental(&mut tx, body.rental_id).await?;
            switchyard_core::scope::station(&mut tx, &actor, body.station_id).await?;
            let s = rentals::stop(&mut tx, &actor, body.rental_id, body.station_id).await?;
            let response = StopResponse {
                rental_id: s.id,
                status: status(s.status),
                started_at: s.started_at,
                finished_at: s.ended_at,
                total_amount: total(&s),
                duration_minutes: duration_minutes(&s),
            };
            Ok((tx, StatusCode::OK, json(response)?))
        },
    )
    .await
}

/// A rental's state, cost so far and the patron's debt.
#[utoipa::path(get, path = "/api/v1/rentals/{id}", tag = "rentals", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = RentalResponse), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<RentalResponse>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let (s, asset) = rental(&mut tx, id).await.map_err(ApiError::from)?;
    actor.check_venue(s.venue_id, "rental")?;
    let debt = -ledger::balance(
        &mut tx,
        Owner::Patron(s.patron_id),
        Purpose::Debt,
        &s.currency,
    )
    .await?;
    Ok(Json(RentalResponse {
        rental_id: s.id,
        status: status(s.status),
        powerbank_id: asset.label,
        started_at: s.started_at,
        total_amount: total(&s),
        current_debt: debt,
        duration_minutes: duration_minutes(&s),
    }))
}
