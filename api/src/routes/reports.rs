//! Seed 003's reports: `POST /api/v1/reports/{kind}`, `GET /api/v1/reports/{id}`, `GET /api/v1/reports/session/{id}`;
//! a kiosk session's contact and metadata, `PUT /api/v1/sessions/{id}/contact`; and a session's receipt,
//! `GET /api/v1/sessions/{id}/receipt`. Members of the session's venue; every document is answered with a fresh
//! presigned download URL.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_core::documents::{receipts, reports, Store};
use switchyard_core::notify;
use switchyard_core::{Error, TenantId};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, AuthActor};
use crate::idempotent;

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    session_id: Uuid,
    /// Where to email the PDF; defaults to the session's `contact_email`.
    email: Option<String>,
    /// Where to text the link; defaults to the session's `contact_phone`.
    phone: Option<String>,
    /// What the report's template prints (an object; the template names what is required).
    #[schema(value_type = Object)]
    data: Value,
}

/// A report's metadata (seed 003) with a fresh download link.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportView {
    id: Uuid,
    session_id: Uuid,
    /// The kind's key (`diagnostics`, `thickness`).
    r#type: String,
    /// A presigned GET URL for the PDF, valid until `url_expires_at`.
    url: String,
    url_expires_at: DateTime<Utc>,
    byte_size: i32,
    sent_to_email: Option<String>,
    sent_to_phone: Option<String>,
    /// `none` (no recipient), `pending` (queued in the messaging outbox), `sent` (every channel), `failed` (one
    /// was given up).
    delivery: String,
    /// The email's delivery (`pending`, `sent`, `failed`); null when no email goes out.
    email_delivery: Option<String>,
    /// The SMS's delivery; null when no SMS goes out.
    sms_delivery: Option<String>,
    sent_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    /// The data it was made from.
    #[schema(value_type = Object)]
    metadata: Value,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReportList {
    reports: Vec<ReportView>,
}

async fn view(store: &Store, tenant: TenantId, r: reports::Report) -> Result<ReportView, Error> {
    let link = store.link(tenant, &r.object_key).await?;
    Ok(ReportView {
        id: r.id,
        session_id: r.session_id,
        r#type: r.kind,
        url: link.url,
        url_expires_at: link.expires_at,
        byte_size: r.byte_size,
        sent_to_email: r.sent_to_email,
        sent_to_phone: r.sent_to_phone,
        delivery: r.delivery,
        email_delivery: r.email_delivery,
        sms_delivery: r.sms_delivery,
        sent_at: r.sent_at,
        created_at: r.created_at,
        metadata: r.data,
    })
}

fn json<T: Serialize>(value: T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Internal(e.into()))
}

/// Generates a report of kind `{id}` (the kind's key, e.g. `diagnostics`) for a kiosk session, stores the PDF and
/// queues its delivery when an email or phone is known. An optional `Idempotency-Key` makes a retry return the
/// same report.
#[utoipa::path(post, path = "/api/v1/reports/{id}", tag = "reports", request_body = CreateReport,
    params(("id" = String, Path, description = "the report kind's key"),
           ("Idempotency-Key" = Option<String>, Header)),
    security(("bearer" = [])),
    responses((status = 201, body = ReportView), (status = 404, description = "unknown kind or session"),
              (status = 422, description = "not a kiosk session, or data the template needs is missing"),
              (status = 503, description = "document storage unavailable")))]
pub async fn create(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    headers: HeaderMap,
    ApiPath(kind): ApiPath<String>,
    ApiJson(body): ApiJson<CreateReport>,
) -> ApiResult<Response> {
    reports::check_kind_key(&kind)?;
    let value = json(&body)?;
    let store = state.documents.clone();
    let outcome = idempotent::run_value(
        &state,
        &actor,
        &format!("reports.create:{kind}"),
        idempotent::key(&headers),
        false,
        &value,
        |mut tx| async {
            let report = reports::create(
                &mut tx,
                &actor,
                &store,
                reports::NewReport {
                    kind: &kind,
                    session_id: body.session_id,
                    email: body.email.as_deref(),
                    phone: body.phone.as_deref(),
                    data: body.data,
                },
            )
            .await?;
            // Its delivery rides on outbox rows written in this same transaction.
            notify::flows::report(&mut tx, &report).await?;
            // Only the id is stored for a replay: the answer's link expires, so every answer is made fresh.
            Ok((
                tx,
                StatusCode::CREATED,
                serde_json::json!({ "id": report.id }),
            ))
        },
    )
    .await;
    let answer = async {
        let (status, stored, replayed) = outcome?;
        let id: Uuid = stored
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| {
                Error::Internal(anyhow::anyhow!("a stored report answer without its id"))
            })?;
        let mut tx = state.db.begin_tenant(actor.tenant).await?;
        let report = reports::get(&mut tx, &actor, id).await?;
        tx.commit().await?;
        let view = view(&store, actor.tenant, report).await?;
        Ok(idempotent::respond(status, json(view)?, replayed))
    };
    let answer: ApiResult<Response> = answer.await;
    if let Err(e) = &answer {
        metrics::counter!("reports_failed_total", "reason" => e.code.as_str()).increment(1);
    }
    answer
}

/// A report's metadata and a fresh download URL. Another tenant's or another venue's → 404.
#[utoipa::path(get, path = "/api/v1/reports/{id}", tag = "reports", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = ReportView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ReportView>> {
    // One path for both methods (`{id}` is the kind's key for POST): an id that is not a UUID is no report.
    let id: Uuid = id.parse().map_err(|_| Error::NotFound("report"))?;
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let report = reports::get(&mut tx, &actor, id).await?;
    Ok(Json(view(&state.documents, actor.tenant, report).await?))
}

/// A session's reports, oldest first.
#[utoipa::path(get, path = "/api/v1/reports/session/{id}", tag = "reports", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = ReportList), (status = 404)))]
pub async fn by_session(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ReportList>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let list = reports::for_session(&mut tx, &actor, id).await?;
    let mut out = Vec::with_capacity(list.len());
    for r in list {
        out.push(view(&state.documents, actor.tenant, r).await?);
    }
    Ok(Json(ReportList { reports: out }))
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactRequest {
    contact_email: Option<String>,
    contact_phone: Option<String>,
    /// Free-form (a JSON object, at most 16 KiB); replaces what the session had.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ContactView {
    session_id: Uuid,
    contact_email: Option<String>,
    contact_phone: Option<String>,
    #[schema(value_type = Object)]
    metadata: Value,
}

/// Sets a (kiosk) session's contact email and phone and its metadata (seed 003).
#[utoipa::path(put, path = "/api/v1/sessions/{id}/contact", tag = "reports", request_body = ContactRequest,
    params(("id" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, body = ContactView), (status = 404), (status = 422)))]
pub async fn set_contact(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ContactRequest>,
) -> ApiResult<Json<ContactView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    let c = reports::set_contact(
        &mut tx,
        &actor,
        id,
        body.contact_email.as_deref(),
        body.contact_phone.as_deref(),
        body.metadata,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(ContactView {
        session_id: id,
        contact_email: c.contact_email,
        contact_phone: c.contact_phone,
        metadata: c.metadata,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReceiptView {
    receipt_id: Uuid,
    session_id: Uuid,
    currency: String,
    /// Tax included (minor units).
    total: i64,
    tax: i64,
    url: String,
    url_expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

/// An ended session's receipt, made on the first request and the same afterwards. A running session → 409.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/receipt", tag = "reports", params(("id" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, body = ReceiptView), (status = 404), (status = 409, description = "still running")))]
pub async fn receipt(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<ReceiptView>> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    switchyard_core::scope::session(&mut tx, &actor, id).await?;
    let r = receipts::for_session(&mut tx, &state.documents, id).await?;
    tx.commit().await?;
    let link = state.documents.link(actor.tenant, &r.object_key).await?;
    Ok(Json(ReceiptView {
        receipt_id: r.id,
        session_id: r.session_id,
        currency: r.currency,
        total: r.total,
        tax: r.tax,
        url: link.url,
        url_expires_at: link.expires_at,
        created_at: r.created_at,
    }))
}
