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
        return Ok((status, Json(value)).into_response());
    };
    if let Begin::Replay { status, body } =
        idempotency::begin(&mut tx, scope, &key, &idempotency::fingerprint(body)).await?
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut response = (status, Json(body)).into_response();
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
        return Ok(response);
    }
    let (mut tx, status, value) = run(tx).await?;
    idempotency::finish(&mut tx, scope, &key, status.as_u16(), &value).await?;
    tx.commit().await?;
    Ok((status, Json(value)).into_response())
}
