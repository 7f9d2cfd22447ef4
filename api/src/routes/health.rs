//! `/healthz` (the process is up), `/readyz` (its dependencies answer and the database is fully migrated) and
//! `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::app::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `not_ready`.
    status: &'static str,
    /// Why not ready, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Each dependency's state (readiness only): `database` is `ok`, `unreachable` or `not_migrated`; `redis` is
    /// `ok`, `unreachable` or `not_used`.
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Checks {
    database: &'static str,
    redis: &'static str,
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        reason: None,
        checks: None,
    })
}

/// Readiness: the database answers and every migration this binary knows is applied, and Redis (when used)
/// answers. The answer names the dependency that is down.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (database, redis) =
        tokio::join!(state.db.readiness(), state.db.signals().redis_reachable());
    let mut reasons = Vec::new();
    let database = match database {
        Ok(r) if r.is_ready() => "ok",
        Ok(r) => {
            reasons.push(format!(
                "database is at migration {:?}, this build expects {:?}; run `switchyard migrate`",
                r.applied, r.expected
            ));
            "not_migrated"
        }
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check: database unreachable");
            reasons.push("database unreachable".to_owned());
            "unreachable"
        }
    };
    let redis = match redis {
        None => "not_used",
        Some(true) => "ok",
        Some(false) => {
            tracing::warn!("readiness check: Redis unreachable");
            reasons.push("Redis unreachable (REDIS_URL)".to_owned());
            "unreachable"
        }
    };
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Health {
            status: if reasons.is_empty() {
                "ok"
            } else {
                "not_ready"
            },
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            checks: Some(Checks { database, redis }),
        }),
    )
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    if !state.config.metrics_on_api_port() {
        return crate::error::ApiError::new(
            switchyard_core::ErrorCode::NotFound,
            "metrics are served on METRICS_LISTEN_ADDR, not on the API port",
        )
        .into_response();
    }
    render_metrics(&state).into_response()
}

/// The metrics text, for `/metrics` on the API port or on `METRICS_LISTEN_ADDR`.
pub fn render_metrics(state: &AppState) -> String {
    let (size, idle, max) = state.db.pool_usage();
    metrics::gauge!("db_pool_connections", "state" => "open").set(f64::from(size));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "max").set(f64::from(max));
    crate::metrics::handle().render()
}
