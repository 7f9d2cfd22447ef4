//! `Idempotency-Key` for state-changing REST calls: the first request runs and its response is stored in the same
//! transaction; a repeat with the same body replays it; another body with the same key answers `422`; concurrent
//! duplicates wait for the first and replay it.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use switchyard_core::idempotency::{self, Begin};
use switchyard_core::{Actor, ErrorCode, TenantTx};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// The `Idempotency-Key` header, if sent.
pub fn key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Runs `run` in a tenant transaction once per key. Without a key, `required` decides between running plainly and
/// answering `400 idempotency_key_required`.
pub async fn run<F, Fut>(
    state: &AppState,
    actor: &Actor,
    scope: &str,
    key: Option<String>,
    required: bool,
    body: &Value,
    run: F,
) -> ApiResult<Response>
where
    F: FnOnce(TenantTx) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(TenantTx, StatusCode, Value)>>,
{
    let (status, value, replayed) =
        run_value(state, actor, scope, key, required, body, run).await?;
    Ok(respond(status, value, replayed))
}

/// The response of [`run`]'s outcome; a replay is marked `Idempotent-Replayed: true`.
pub fn respond(status: StatusCode, value: Value, replayed: bool) -> Response {
    let mut response = (status, Json(value)).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// As [`run`], answering the status and body (stored, or replayed: the third value) for the caller to finish — a
/// route whose answer holds something that expires (a presigned URL) builds it fresh from the stored body.
pub async fn run_value<F, Fut>(
    state: &AppState,
    actor: &Actor,
    scope: &str,
    key: Option<String>,
    required: bool,
    body: &Value,
    run: F,
) -> ApiResult<(StatusCode, Value, bool)>
where
    F: FnOnce(TenantTx) -> Fut,
    Fut: std::future::Future<Output = ApiResult<(TenantTx, StatusCode, Value)>>,
{
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let Some(key) = key else {
        if required {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyRequired,
                "send an Idempotency-Key header (a fresh UUID per operation) so a retry cannot act twice",
            ));
        }
        let (tx, status, value) = run(tx).await?;
        tx.commit().await?;
        return Ok((status, value, false));
    };
    if let Begin::Replay { status, body } = idempotency::begin(
        &mut tx,
        scope,
        &key,
        &idempotency::fingerprint_by(actor.user_id, body),
    )
    .await?
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        return Ok((status, body, true));
    }
    let (mut tx, status, value) = run(tx).await?;
    idempotency::finish(&mut tx, scope, &key, status.as_u16(), &value).await?;
    tx.commit().await?;
    Ok((status, value, false))
}
