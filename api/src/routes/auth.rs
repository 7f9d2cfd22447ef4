//! `POST /api/v1/auth/{signup,login,refresh,logout}` and the patron app's `POST /api/v1/auth/patron/{signup,login}`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use switchyard_core::accounts::TokenPair;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ClientAddr};

/// The one answer to every accepted sign-up, whether or not the email already had a login: only its owner may
/// learn that (it is not told yet).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignupAccepted {
    /// Always `accepted`.
    status: &'static str,
    message: &'static str,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// The operator's name; becomes the tenant's name.
    organization: String,
    email: String,
    /// At least 10 characters.
    password: String,
    /// The language of the owner's messages: `en` (default) or `de`.
    locale: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
    /// Which tenant to sign in to, when the login belongs to several.
    tenant_id: Option<Uuid>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token; the web console leaves it out and sends its cookie (see `x-switchyard-refresh`).
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The cookie that holds the web console's refresh token: `HttpOnly` (no script reads it), `SameSite=Strict`, sent
/// only to `/api/v1/auth`.
const REFRESH_COOKIE: &str = "switchyard_refresh";

/// A browser client (the web console) asks with `x-switchyard-refresh: cookie` to keep its refresh token in the
/// cookie rather than receive it: the answer's `refresh_token` is then empty.
fn wants_cookie(headers: &HeaderMap) -> bool {
    headers
        .get("x-switchyard-refresh")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cookie"))
}

/// The refresh token of a request: the body's, else (a console request) its cookie's.
fn presented(headers: &HeaderMap, body: RefreshRequest) -> ApiResult<String> {
    if let Some(token) = body.refresh_token {
        return Ok(token);
    }
    let cookie = wants_cookie(headers)
        .then(|| {
            headers
                .get_all(axum::http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| *name == REFRESH_COOKIE)
                .map(|(_, value)| value.to_owned())
        })
        .flatten()
        .filter(|v| !v.is_empty());
    cookie.ok_or_else(|| {
        switchyard_core::Error::Unauthenticated(
            "no refresh token: give refresh_token, or sign in again",
        )
        .into()
    })
}

/// The answer carrying a new pair: as JSON, or (a console request) with the refresh token moved into the cookie.
fn issued(state: &AppState, headers: &HeaderMap, mut pair: TokenPair) -> Response {
    if !wants_cookie(headers) {
        return Json(pair).into_response();
    }
    let cookie = refresh_cookie(
        state,
        &std::mem::take(&mut pair.refresh_token),
        state.config.refresh_token_ttl.as_secs(),
    );
    ([(axum::http::header::SET_COOKIE, cookie)], Json(pair)).into_response()
}

fn refresh_cookie(state: &AppState, value: &str, max_age: u64) -> String {
    let secure = if state.config.environment == crate::config::Environment::Production {
        "; Secure"
    } else {
        ""
    };
    format!("{REFRESH_COOKIE}={value}; Path=/api/v1/auth; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatronSignupRequest {
    /// The operator (tenant) the patron signs up with, from the operator's app or QR code.
    tenant_id: Uuid,
    display_name: String,
    email: String,
    /// At least 10 characters.
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatronLoginRequest {
    tenant_id: Uuid,
    email: String,
    password: String,
}

/// A patron creates an account with an operator and is signed in (role `patron`: only its own sessions, wallet
/// and cards, through GraphQL).
#[utoipa::path(post, path = "/api/v1/auth/patron/signup", tag = "auth", request_body = PatronSignupRequest,
    responses((status = 201, body = TokenPair), (status = 404, description = "unknown operator"),
              (status = 409, description = "a patron with this email exists"),
              (status = 422, description = "weak password or malformed email; `field` names it"),
              (status = 429, description = "rate_limited: this login or address is locked; `Retry-After`")))]
pub async fn patron_signup(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<PatronSignupRequest>,
) -> ApiResult<(StatusCode, Json<TokenPair>)> {
    let pair = state
        .accounts
        .patron_signup(
            body.tenant_id,
            &body.display_name,
            &body.email,
            &body.password,
            client,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(pair)))
}

/// A patron signs in to its account at an operator.
#[utoipa::path(post, path = "/api/v1/auth/patron/login", tag = "auth", request_body = PatronLoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "invalid_credentials"),
              (status = 429, description = "rate_limited: too many failures for this login or address; `Retry-After`")))]
pub async fn patron_login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<PatronLoginRequest>,
) -> ApiResult<Json<TokenPair>> {
    Ok(Json(
        state
            .accounts
            .patron_login(body.tenant_id, &body.email, &body.password, client)
            .await?,
    ))
}

fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-request-id").and_then(|v| v.to_str().ok())
}

/// Creates a tenant and its owner; the owner then signs in with `/api/v1/auth/login`. An email that already has a
/// login creates nothing and answers the same.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 202, body = SignupAccepted),
              (status = 422, description = "weak password or malformed email; `field` names it"),
              (status = 429, description = "rate_limited; `Retry-After`")))]
pub async fn signup(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<SignupRequest>,
) -> ApiResult<(StatusCode, Json<SignupAccepted>)> {
    let locale = switchyard_core::notify::Locale::input("locale", body.locale.as_deref())?;
    state
        .accounts
        .signup(
            &body.organization,
            &body.email,
            &body.password,
            locale,
            client,
            request_id(&headers),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SignupAccepted {
            status: "accepted",
            message: "confirm the email address with the code we sent to it, and sign in with this email \
                      and password at /api/v1/auth/login; if the email already has an account, nothing was created",
        }),
    ))
}

/// Signs in. A login that belongs to several tenants must name one (`409 tenant_choice_required` lists them).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "invalid_credentials"),
              (status = 409, description = "tenant_choice_required, with `details.tenants`"),
              (status = 429, description = "rate_limited: too many failures for this login or address; `Retry-After`")))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let pair = state
        .accounts
        .login(&body.email, &body.password, body.tenant_id, client)
        .await?;
    Ok(issued(&state, &headers, pair))
}

/// Spends a refresh token for a new pair. Presenting a spent token signs out its whole family.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, description = "invalid, spent, revoked or expired")))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Response> {
    let token = presented(&headers, body)?;
    let pair = state.accounts.refresh(&token).await?;
    Ok(issued(&state, &headers, pair))
}

/// Revokes the refresh token and every token refreshed from the same login.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204)))]
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Response> {
    if let Ok(token) = presented(&headers, body) {
        state.accounts.logout(&token).await?;
    }
    let cleared = refresh_cookie(&state, "", 0);
    Ok((
        StatusCode::NO_CONTENT,
        [(axum::http::header::SET_COOKIE, cleared)],
    )
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The code from the email.
    token: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    email: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The code from the password-reset email.
    token: String,
    /// The new password (at least 10 characters).
    password: String,
}

/// What the account-flow routes answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowAnswer {
    /// `verified`, `accepted` or `reset`.
    status: &'static str,
    message: &'static str,
}

/// Confirms a login's email address with the code sent to it (at sign-up, or on accepting an invitation as a new
/// login). Until then the login reaches only the tenant it was created in.
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = FlowAnswer),
              (status = 422, description = "validation_failed: the code is wrong, used or expired")))]
pub async fn verify_email(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> ApiResult<Json<FlowAnswer>> {
    state.accounts.verify_email(&body.token).await?;
    Ok(Json(FlowAnswer {
        status: "verified",
        message: "the email address is confirmed",
    }))
}

/// Asks for a password-reset code by email. The answer is the same whether or not the email has a login.
#[utoipa::path(post, path = "/api/v1/auth/password/forgot", tag = "auth", request_body = ForgotPasswordRequest,
    responses((status = 202, body = FlowAnswer),
              (status = 422, description = "validation_failed: not an email address"),
              (status = 429, description = "rate_limited; `Retry-After`")))]
pub async fn forgot_password(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(body): ApiJson<ForgotPasswordRequest>,
) -> ApiResult<(StatusCode, Json<FlowAnswer>)> {
    state
        .accounts
        .request_password_reset(&body.email, client)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(FlowAnswer {
            status: "accepted",
            message: "if this email has a login, a reset code is on its way; it works once, within 30 minutes",
        }),
    ))
}

/// Sets a new password with the code from the reset email (once, within 30 minutes). Every session of the login,
/// in every tenant, is signed out.
#[utoipa::path(post, path = "/api/v1/auth/password/reset", tag = "auth", request_body = ResetPasswordRequest,
    responses((status = 200, body = FlowAnswer),
              (status = 422, description = "validation_failed: the code is wrong, used or expired (`field` token), or the password is weak (`field` password)")))]
pub async fn reset_password(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResetPasswordRequest>,
) -> ApiResult<Json<FlowAnswer>> {
    state
        .accounts
        .reset_password(&body.token, &body.password)
        .await?;
    Ok(Json(FlowAnswer {
        status: "reset",
        message:
            "the password is changed and every session of this login is signed out; sign in again",
    }))
}
