//! `/console`: the web console's built files (`CONSOLE_DIR`), a single-page app. A path that names no file answers
//! the app's `index.html`, so a reload or a shared link of any console page opens that page. The hashed assets are
//! cached for a year; `index.html` is never cached, so a new build is picked up at the next load.

use std::path::Path;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

use switchyard_core::ErrorCode;

use crate::error::ApiError;

/// What a console page may load and talk to: its own origin only (the API and `/graphql/ws` live there), no
/// framing, no inline scripts.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' https: data: blob:; connect-src 'self' ws: wss:; media-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// The routes under `/console`: the files of `dir`, or (no console built) a clear 404 on every console path.
pub fn routes<S: Clone + Send + Sync + 'static>(dir: Option<&Path>) -> Router<S> {
    let Some(dir) = dir else {
        return Router::new()
            .route("/console", axum::routing::get(not_built))
            .route("/console/{*path}", axum::routing::get(not_built));
    };
    let files = ServeDir::new(dir)
        .precompressed_gzip()
        .fallback(ServeFile::new(dir.join("index.html")));
    Router::new()
        .nest_service("/console", files)
        .layer(middleware::from_fn(headers))
}

async fn not_built() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "the web console is not served here: build it (npm run build in console/) and set CONSOLE_DIR",
    )
}

/// Security headers on every console response, and its caching: fingerprinted assets forever, the rest never.
async fn headers(request: Request<axum::body::Body>, next: Next) -> Response {
    let asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    if response.status() == StatusCode::NOT_MODIFIED || response.status().is_success() {
        let cache = if asset {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response.into_response()
}
