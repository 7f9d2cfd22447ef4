//! The REST edge of the error catalogue: `{"error":{"code","message"}}` with the code's HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use switchyard_core::ErrorCode;

/// Seconds a client should wait after `unavailable` (a database outage) before retrying.
pub const RETRY_AFTER_UNAVAILABLE: u64 = 5;

/// An error answered to a REST client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The offending input field, for `validation_failed` (a JSON path like `input.name` for nested fields).
    pub field: Option<String>,
    /// Seconds for the `Retry-After` header, for `rate_limited`.
    pub retry_after: Option<u64>,
    /// Extra, code-specific data (the tenants to choose from for `tenant_choice_required`).
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            details: None,
            retry_after: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        if let Some(details) = &self.details {
            error["details"] = details.clone();
        }
        json!({ "error": error })
    }
}

impl From<switchyard_core::Error> for ApiError {
    fn from(e: switchyard_core::Error) -> Self {
        if let Some(cause) = e.hidden_cause() {
            // Logged once, here; the client sees only the opaque message.
            tracing::error!(error = ?cause, code = e.code().as_str(), "request failed");
        }
        let details = match &e {
            switchyard_core::Error::TenantChoiceRequired(tenants) => {
                Some(json!({ "tenants": tenants }))
            }
            _ => None,
        };
        Self {
            code: e.code(),
            message: e.to_string(),
            field: e.field().map(str::to_owned),
            details,
            retry_after: e.retry_after(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        let retry_after = self
            .retry_after
            .or_else(|| (self.code == ErrorCode::Unavailable).then_some(RETRY_AFTER_UNAVAILABLE));
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
