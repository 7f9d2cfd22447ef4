//! QR codes for members to print: a station's code (patrons scan it to start a session) and a venue's entrance
//! code (patrons scan it to check in). The payload as JSON, and the code as SVG or PNG. Rotating a code is a
//! GraphQL mutation (`rotateStationQr`, `rotateVenueQr`); after it the old payload answers `not_found`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use qrcode::{Color, EcLevel, QrCode};
use serde::Serialize;
use switchyard_core::patron_app::qr::{self, Target};
use switchyard_core::{Actor, Error};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiResult;
use crate::extract::{ApiPath, AuthActor};

/// A QR code's payload.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QrView {
    /// The station's or venue's id.
    id: Uuid,
    /// `switchyard://s/<tenant>/<station>/<token>` or `switchyard://v/<tenant>/<venue>/<token>`.
    payload: String,
}

/// Modules per side of the white border a scanner needs around the code.
const QUIET_ZONE: usize = 4;
/// Pixels per module in the PNG: a 300-dpi print of a typical code is a few centimetres wide.
const PNG_SCALE: usize = 10;

async fn payload(state: &AppState, actor: &Actor, target: Target, id: Uuid) -> ApiResult<String> {
    let mut tx = state.db.begin_tenant(actor.tenant).await?;
    Ok(qr::payload(&mut tx, actor, target, id).await?)
}

fn encode(payload: &str) -> ApiResult<QrCode> {
    QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .map_err(|e| Error::Internal(anyhow::anyhow!("QR encoding failed: {e}")).into())
}

fn render_svg(payload: &str) -> ApiResult<Response> {
    let image = encode(payload)?
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], image).into_response())
}

/// The code as an 8-bit greyscale PNG, black modules on white with the quiet zone.
fn render_png(payload: &str) -> ApiResult<Response> {
    let code = encode(payload)?;
    let width = code.width();
    let side = (width + 2 * QUIET_ZONE) * PNG_SCALE;
    let mut pixels = vec![255u8; side * side];
    for (i, color) in code.to_colors().into_iter().enumerate() {
        if color != Color::Dark {
            continue;
        }
        let (x, y) = (i % width + QUIET_ZONE, i / width + QUIET_ZONE);
        for row in y * PNG_SCALE..(y + 1) * PNG_SCALE {
            pixels[row * side + x * PNG_SCALE..row * side + (x + 1) * PNG_SCALE].fill(0);
        }
    }
    let failed =
        |e: png::EncodingError| Error::Internal(anyhow::anyhow!("PNG encoding failed: {e}"));
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side as u32, side as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(&pixels).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(([(header::CONTENT_TYPE, "image/png")], out).into_response())
}

/// A station's QR code payload (members); `404 not_found` for unknown ids and other tenants' stations.
#[utoipa::path(get, path = "/api/v1/stations/{id}/qr", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = QrView), (status = 404), (status = 401)))]
pub async fn station(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<QrView>> {
    let payload = payload(&state, &actor, Target::Station, id).await?;
    Ok(Json(QrView { id, payload }))
}

/// A station's QR code as SVG, for printing.
#[utoipa::path(get, path = "/api/v1/stations/{id}/qr.svg", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, content_type = "image/svg+xml", body = String),
    (status = 404), (status = 401)))]
pub async fn station_svg(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    render_svg(&payload(&state, &actor, Target::Station, id).await?)
}

/// A station's QR code as PNG, for printing.
#[utoipa::path(get, path = "/api/v1/stations/{id}/qr.png", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, content_type = "image/png", body = Vec<u8>),
    (status = 404), (status = 401)))]
pub async fn station_png(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    render_png(&payload(&state, &actor, Target::Station, id).await?)
}

/// A venue's entrance QR code payload (members; patrons scan it to check in).
#[utoipa::path(get, path = "/api/v1/venues/{id}/qr", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = QrView), (status = 404), (status = 401)))]
pub async fn venue(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<QrView>> {
    let payload = payload(&state, &actor, Target::Venue, id).await?;
    Ok(Json(QrView { id, payload }))
}

/// A venue's entrance QR code as SVG.
#[utoipa::path(get, path = "/api/v1/venues/{id}/qr.svg", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, content_type = "image/svg+xml", body = String),
    (status = 404), (status = 401)))]
pub async fn venue_svg(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    render_svg(&payload(&state, &actor, Target::Venue, id).await?)
}

/// A venue's entrance QR code as PNG.
#[utoipa::path(get, path = "/api/v1/venues/{id}/qr.png", tag = "stations", params(("id" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, content_type = "image/png", body = Vec<u8>),
    (status = 404), (status = 401)))]
pub async fn venue_png(
    State(state): State<AppState>,
    AuthActor(actor): AuthActor,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    render_png(&payload(&state, &actor, Target::Venue, id).await?)
}
