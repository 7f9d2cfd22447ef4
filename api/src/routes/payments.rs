//! The seed 003 payment routes (under `/api/v1/payments`) and the Stripe webhook.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use switchyard_core::payments::{self, webhook, Payment, ProviderStatus};
use switchyard_core::{Error, ErrorCode};
use uuid::Uuid;

use crate::app::AppState;
use crate::config::Environment;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, AuthActor};
use crate::idempotent;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntentRequest {
    /// Whose wallet the payment tops up.
    patron_id: Uuid,
    /// Where it is paid; the amount is in this venue's currency.
    venue_id: Uuid,
    /// Minor units.
    amount: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    intent_id: Uuid,
    /// `pending`, `confirmed`, `failed`, `canceled`.
    status: String,
    amount: i64,
    currency: String,
    patron_id: Uuid,
    venue_id: Uuid,
    provider: String,
    provider_ref: String,
    failure_reason: Option<String>,
    created_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        Self {
            intent_id: p.id,
            status: p.status,
            amount: p.amount,
            currency: p.currency,
            patron_id: p.patron_id,
            venue_id: p.venue_id,
            provider: p.provider,
            provider_ref: p.provider_ref,
            failure_reason: p.failure_reason,
            created_at: p.created_at,
            confirmed_at: p.confirmed_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusView {
    intent_id: Uuid,
    status: String,
    failure_reason: Option<String>,
}

/// Creates a payment that tops up a patron's wallet once confirmed. Requires `Idempotency-Key`.
#[utoipa::path(post, path = "/api/v1/payments/intent", tag = "payments", request_body = IntentRequest,
    params(("Idempotency-Key" = String, Header)), security(("bearer" = [])),
    responses((status = 201, body = PaymentView), (status = 404), (status = 422)))]
pub async fn intent(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    headers: HeaderMap,
    ApiJson(body): ApiJson<IntentRequest>,
) -> ApiResult<Response> {
    let value =
        serde_json::to_value(&body).map_err(|e| ApiError::from(Error::Internal(e.into())))?;
    let key = idempotent::key(&headers);
    let provider_key = key.clone().unwrap_or_default();
    idempotent::run(
        &state,
        &actor,
        "payments.intent",
        key,
        true,
        &value,
        |mut tx| async {
            actor.check_venue(body.venue_id, "venue")?;
            let provider = state.payments.current(&mut tx).await?;
            let payment = payments::create_intent(
                &mut tx,
                &actor,
                provider.as_ref(),
                body.patron_id,
                body.venue_id,
                body.amount,
                &provider_key,
            )
            .await?;
            let view = serde_json::to_value(PaymentView::from(payment))
                .map_err(|e| Error::Internal(e.into()))?;
            Ok((tx, StatusCode::CREATED, view))
        },
    )
    .await
}

/// The payment's status, asking the provider first while it is pending.
#[utoipa::path(get, path = "/api/v1/payments/status/{id}", tag = "payments", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = StatusView), (status = 404)))]
pub async fn status(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<StatusView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let provider = state.payments.for_payment(&mut tx, id).await?;
    let p = payments::refresh_for(&mut tx, &actor, provider.as_ref(), id).await?;
    tx.commit().await?;
    Ok(Json(StatusView {
        intent_id: p.id,
        status: p.status,
        failure_reason: p.failure_reason,
    }))
}

/// The payment's details.
#[utoipa::path(get, path = "/api/v1/payments/intent/{id}", tag = "payments", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = PaymentView), (status = 404)))]
pub async fn details(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<PaymentView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let provider = state.payments.for_payment(&mut tx, id).await?;
    let p = payments::refresh_for(&mut tx, &actor, provider.as_ref(), id).await?;
    tx.commit().await?;
    Ok(Json(p.into()))
}

/// Cancels a pending payment; a confirmed one answers `409`.
#[utoipa::path(post, path = "/api/v1/payments/cancel/{id}", tag = "payments", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = PaymentView), (status = 404), (status = 409)))]
pub async fn cancel(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<PaymentView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let provider = state.payments.for_payment(&mut tx, id).await?;
    let p = payments::cancel(&mut tx, &actor, provider.as_ref(), id).await?;
    tx.commit().await?;
    Ok(Json(p.into()))
}

/// Confirms a dev payment at once (development mode and the dev provider only; `404` otherwise).
#[utoipa::path(post, path = "/api/v1/payments/confirm/{id}", tag = "payments", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = PaymentView), (status = 404)))]
pub async fn confirm(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<PaymentView>> {
    if state.config.environment != Environment::Development
        || state.payments.platform().name() != "dev"
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "manual confirmation exists only in development",
        ));
    }
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let payment = payments::get(&mut tx, id).await?;
    if payment.provider != "dev" {
        return Err(ApiError::new(ErrorCode::NotFound, "payment not found"));
    }
    let p = payments::apply(&mut tx, id, ProviderStatus::Succeeded).await?;
    tx.commit().await?;
    Ok(Json(p.into()))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookAck {
    received: bool,
    /// `applied`, `duplicate`, `ignored` or `mismatch` (the event's intent, amount or currency is not the stored
    /// payment's; nothing changed).
    outcome: &'static str,
}

/// Stripe events. The signature (`Stripe-Signature`, 300 s tolerance) is checked over the raw body first. An event
/// that names a payment of ours not recorded yet answers `503 retry_later`, so that Stripe delivers it again.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "payments",
    params(("Stripe-Signature" = String, Header)),
    responses((status = 200, body = WebhookAck), (status = 400, description = "invalid_signature or malformed_request"),
              (status = 404, description = "no webhook secret configured"),
              (status = 503, description = "retry_later: the payment is not recorded yet")))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    let Some(secret) = &state.config.stripe_webhook_secret else {
        // Without a signing secret nothing can be verified: the endpoint does not exist here.
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the Stripe webhook is not configured here",
        ));
    };
    accept(
        &state,
        &headers,
        &body,
        secret.expose_secret(),
        webhook::Sender::Platform,
    )
    .await
}

/// Verifies a Stripe event's signature over the raw body with `secret`, then handles it as sent by `sender`.
async fn accept(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
    sender: webhook::Sender,
) -> ApiResult<Json<WebhookAck>> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::from(Error::InvalidSignature(
                "the Stripe-Signature header is missing",
            ))
        })?;
    webhook::verify(body, signature, secret, Utc::now().timestamp())?;
    let event: webhook::Event = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            ErrorCode::MalformedRequest,
            "the body is not a Stripe event",
        )
    })?;
    let outcome = webhook::handle(&state.db, event, sender).await?;
    Ok(Json(WebhookAck {
        received: true,
        outcome: outcome.as_str(),
    }))
}

/// Stripe events from a tenant's own Stripe account (see `setPaymentAccount`), verified with the signing secret
/// that tenant stored; they move only payments made through that account. `404` for a tenant without one.
#[utoipa::path(post, path = "/webhooks/stripe/{tenant_id}", tag = "payments",
    params(("tenant_id" = Uuid, Path), ("Stripe-Signature" = String, Header)),
    responses((status = 200, body = WebhookAck), (status = 400, description = "invalid_signature or malformed_request"),
              (status = 404, description = "this tenant has no webhook signing secret"),
              (status = 503, description = "retry_later: the payment is not recorded yet")))]
pub async fn tenant_stripe_webhook(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<WebhookAck>> {
    let not_here = || {
        ApiError::new(
            ErrorCode::NotFound,
            "no Stripe webhook is configured for this tenant",
        )
    };
    let mut tx = state
        .db
        .begin_tenant(switchyard_core::TenantId(tenant_id))
        .await?;
    let secret = state
        .payments
        .webhook_secret(&mut tx)
        .await?
        .ok_or_else(not_here)?;
    tx.commit().await?;
    accept(
        &state,
        &headers,
        &body,
        &secret,
        webhook::Sender::Tenant(tenant_id),
    )
    .await
}
