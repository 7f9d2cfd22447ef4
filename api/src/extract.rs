//! Extractors that turn bad input into catalogue errors, and the authenticated actor.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use switchyard_core::validate::{is_forbidden_char, CONTROL_CHARACTER_MESSAGE};
use switchyard_core::{Actor, ErrorCode, Principal};

use crate::app::AppState;
use crate::error::ApiError;

/// `Json<T>` whose rejections are catalogue errors: 400 for malformed JSON, 415 for a wrong content type, 413 for
/// an oversized body, 422 naming the missing or mistyped field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        // Every text input of every route passes here, so one check covers them all.
        if let Some(field) = control_character(&value, String::new()) {
            let mut e = ApiError::new(
                ErrorCode::ValidationFailed,
                format!("{field}: {CONTROL_CHARACTER_MESSAGE}"),
            );
            e.field = Some(field);
            return Err(e);
        }
        serde_path_to_error::deserialize::<_, T>(value)
            .map(Self)
            .map_err(|e| {
                // serde's text names the field and the expected type ("organization: invalid type ...",
                // "missing field `email`"), which is what a person needs; it carries nothing internal.
                let path = e.path().to_string();
                let inner = e.into_inner();
                let text = if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                };
                ApiError::new(
                    ErrorCode::ValidationFailed,
                    format!("the body does not fit: {text}"),
                )
            })
    }
}

/// The path (`name`, `input.items[2].label`) of the first string or key holding a control character, if any.
pub fn control_character(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    let field = |path: String| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path
        }
    };
    match value {
        Value::String(text) => text.chars().any(is_forbidden_char).then(|| field(path)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| control_character(item, format!("{}[{i}]", field(path.clone())))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.chars().any(is_forbidden_char) {
                return Some(field(path.clone()));
            }
            control_character(item, inner)
        }),
        _ => None,
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            // serde's text names the field and the expected type ("missing field `email`"), which is what a
            // person needs; it carries nothing internal.
            ApiError::new(
                ErrorCode::ValidationFailed,
                format!("the body does not fit: {}", e.body_text_inner()),
            )
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(ErrorCode::MalformedRequest, "the body is not valid JSON")
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the body is larger than this server accepts",
            )
        }
        _ => ApiError::new(ErrorCode::MalformedRequest, "the body could not be read"),
    }
}

trait BodyTextInner {
    fn body_text_inner(&self) -> String;
}

impl BodyTextInner for axum::extract::rejection::JsonDataError {
    fn body_text_inner(&self) -> String {
        // axum prefixes "Failed to deserialize the JSON body into the target type: "; keep serde's part.
        let text = self.body_text();
        text.split_once(": ")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or(text)
    }
}

/// `Query<T>` answering 422 with serde's description of the bad parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| {
                let text = e.body_text();
                let text = text
                    .split_once(": ")
                    .map(|(_, rest)| rest.to_owned())
                    .unwrap_or(text);
                ApiError::new(
                    ErrorCode::ValidationFailed,
                    format!("bad query parameter: {text}"),
                )
            })
    }
}

/// `Path<T>` answering 422 when an id is not a UUID.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|_: PathRejection| {
                let mut e = ApiError::new(
                    ErrorCode::ValidationFailed,
                    "the id in the path must be a UUID",
                );
                e.field = Some("id".to_owned());
                e
            })
    }
}

/// The client's address for the password-check throttle: the socket peer, or what a trusted proxy forwarded (the
/// rule the auth rate limiter uses).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Self(peer.map(|peer| {
            crate::app::client_ip(&state.config.trusted_proxies, peer, &parts.headers)
        })))
    }
}

/// The request id set by the request-id middleware.
/// The client's address and user agent, for the audit log.
pub fn request_client(parts: &Parts, state: &AppState) -> switchyard_core::RequestClient {
    let ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| crate::app::client_ip(&state.config.trusted_proxies, c.0.ip(), &parts.headers));
    let user_agent = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    switchyard_core::RequestClient { ip, user_agent }
}

pub fn request_id(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The bearer token, if the request sent one.
pub fn bearer(parts: &Parts) -> Option<Result<&str, ApiError>> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Some(token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthenticated,
            "the Authorization header must be `Bearer <access token>`",
        )
    }))
}

/// The authenticated member. Missing or invalid credentials answer 401.
pub struct AuthActor(pub Actor);

impl FromRequestParts<AppState> for AuthActor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).unwrap_or_else(|| {
            Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "sign in first: send `Authorization: Bearer <access token>`",
            ))
        })?;
        let principal = state
            .accounts
            .authenticate(token, request_id(parts))
            .await?;
        tracing::Span::current().record("tenant.id", tracing::field::display(principal.tenant()));
        match principal {
            Principal::Member(mut actor) => {
                actor.client = request_client(parts, state);
                Ok(Self(actor))
            }
            Principal::Patron(_) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this route is for the operator's staff; patrons use GraphQL (myProfile, mySessions, myWallet)",
            )),
        }
    }
}
