//! `POST /graphql` (single requests and batches) and GraphiQL on `GET /graphql` outside production.

use async_graphql::http::GraphiQLSource;
use async_graphql::{BatchRequest, BatchResponse};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use switchyard_core::ErrorCode;
use switchyard_graphql::{request_error, RequestId};

use crate::app::AppState;
use crate::error::RETRY_AFTER_UNAVAILABLE;
use crate::extract::{bearer, request_id};

fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (
        status,
        Json(BatchResponse::Single(request_error(code, message))),
    )
        .into_response()
}

/// Executes a GraphQL request. The body is read under the body limit and parsed here so that oversized bodies,
/// malformed JSON and oversized batches are refused before anything is executed.
pub async fn post(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("application/graphql-response+json")
        });
    if !json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the query as JSON with Content-Type: application/json",
        );
    }
    let bytes = match axum::body::to_bytes(body, state.config.body_limit_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                &format!(
                    "the body is larger than {} bytes",
                    state.config.body_limit_bytes
                ),
            )
        }
    };
    let batch = match parse(&bytes) {
        Ok(batch) => batch,
        Err(message) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedRequest,
                &message,
            )
        }
    };
    if let BatchRequest::Batch(requests) = &batch {
        let max = state.config.graphql.max_batch;
        if requests.len() > max {
            let message = format!(
                "the batch has {} operations; at most {max} are allowed",
                requests.len()
            );
            return error_response(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, &message);
        }
    }
    let actor = match bearer(&parts) {
        None => None,
        Some(token) => {
            let authenticated = match token {
                Ok(token) => state
                    .accounts
                    .authenticate(token, request_id(&parts))
                    .await
                    .map_err(Into::into),
                Err(e) => Err(e),
            };
            match authenticated {
                Ok(mut principal) => {
                    tracing::Span::current()
                        .record("tenant.id", tracing::field::display(principal.tenant()));
                    match &mut principal {
                        switchyard_core::Principal::Member(actor) => {
                            actor.client = crate::extract::request_client(&parts, &state);
                        }
                        switchyard_core::Principal::Patron(patron) => {
                            patron.client = crate::extract::request_client(&parts, &state);
                        }
                    }
                    Some(principal)
                }
                Err(e) => {
                    // Invalid tokens answer 401; an outage while checking one answers 503 (never a sign-out).
                    let e: crate::error::ApiError = e;
                    let status = StatusCode::from_u16(e.code.http_status())
                        .unwrap_or(StatusCode::UNAUTHORIZED);
                    let mut response = error_response(status, e.code, &e.message);
                    if e.code == ErrorCode::Unavailable {
                        response.headers_mut().insert(
                            header::RETRY_AFTER,
                            header::HeaderValue::from(RETRY_AFTER_UNAVAILABLE),
                        );
                    }
                    return response;
                }
            }
        }
    };
    let request_id = request_id(&parts).map(RequestId);
    let batch = match request_id {
        Some(id) => batch.data(id),
        None => batch,
    };
    let db = state.db.limited(state.config.graphql.max_connections);
    let response = switchyard_graphql::execute(&state.schema, batch, actor, &db).await;
    // A field that failed because the database is down makes the whole answer a 503 with `Retry-After`, as REST
    // does, so clients back off instead of treating it as data.
    let unavailable = match &response {
        BatchResponse::Single(r) => has_code(r, ErrorCode::Unavailable),
        BatchResponse::Batch(rs) => rs.iter().any(|r| has_code(r, ErrorCode::Unavailable)),
    };
    let mut response = Json(response).into_response();
    if unavailable {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(RETRY_AFTER_UNAVAILABLE),
        );
    }
    response
}

fn has_code(response: &async_graphql::Response, code: ErrorCode) -> bool {
    response.errors.iter().any(|e| {
        e.extensions
            .as_ref()
            .and_then(|x| x.get("code"))
            .is_some_and(|v| *v == async_graphql::Value::from(code.as_str()))
    })
}

fn parse(bytes: &Bytes) -> Result<BatchRequest, String> {
    serde_json::from_slice::<BatchRequest>(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON".to_owned()
        } else {
            format!("the body is not a GraphQL request: {e}")
        }
    })
}

/// GraphiQL, an in-browser IDE (not served in production).
pub async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").finish())
}
