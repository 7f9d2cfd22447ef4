//! Each tenant's fair share: at most `TENANT_MAX_CONCURRENT_REQUESTS` of its requests are served at once, the
//! rest wait their turn (up to `TENANT_QUEUE_MS`) and then answer `429 rate_limited`. One busy tenant then slows
//! itself, not everyone: the pool's connections stay available to the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use switchyard_core::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The turns of every tenant seen recently.
pub struct TenantLimiter {
    max: usize,
    wait: Duration,
    turns: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
}

/// Tenants remembered before idle ones are forgotten.
const REMEMBERED: usize = 10_000;

impl TenantLimiter {
    pub fn new(max: usize, wait: Duration) -> Self {
        Self {
            max: max.max(1),
            wait,
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// A turn for `tenant`, or `None` when none came free in time.
    pub async fn turn(&self, tenant: Uuid) -> Option<OwnedSemaphorePermit> {
        let turns = {
            let mut map = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= REMEMBERED && !map.contains_key(&tenant) {
                // Forget tenants with nothing in flight (no permit out: only the map holds the semaphore).
                let max = self.max;
                map.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
            }
            map.entry(tenant)
                .or_insert_with(|| Arc::new(Semaphore::new(self.max)))
                .clone()
        };
        tokio::time::timeout(self.wait, turns.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// Middleware: a request with a valid access token waits for a turn of its tenant. Requests without one (sign-in,
/// webhooks, the edge tunnel, health) pass; the per-address limit covers them.
pub async fn tenant_share(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tenant = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .and_then(|token| state.accounts.keys().verify(token.trim()).ok())
        .map(|claims| claims.tenant);
    let Some(tenant) = tenant else {
        return next.run(request).await;
    };
    match state.tenants.turn(tenant).await {
        Some(_turn) => next.run(request).await,
        None => {
            metrics::counter!("tenant_requests_refused_total").increment(1);
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                "too many requests of this organisation at once; retry in a second",
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_gets_its_turns_and_waits_for_more_while_others_go_on() {
        let limiter = TenantLimiter::new(2, Duration::from_millis(50));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = limiter.turn(a).await.unwrap();
        let _second = limiter.turn(a).await.unwrap();
        assert!(
            limiter.turn(a).await.is_none(),
            "a third at once waits, then is refused"
        );
        assert!(
            limiter.turn(b).await.is_some(),
            "another tenant is not held up"
        );
        drop(first);
        assert!(
            limiter.turn(a).await.is_some(),
            "a finished request gives its turn back"
        );
    }
}
