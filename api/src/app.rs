//! The axum application: state, routes, middleware, and a server that binds before it runs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use switchyard_core::accounts::Accounts;
use switchyard_core::auth::TokenKeys;
use switchyard_core::events::EventHub;
use switchyard_core::signals::Listeners;
use switchyard_core::{Db, ErrorCode};
use switchyard_graphql::AppSchema;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Config, Environment};
use crate::error::ApiError;
use crate::routes;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<App>);

pub struct App {
    pub config: Config,
    pub db: Db,
    pub accounts: Accounts,
    pub schema: AppSchema,
    /// The platform's payment provider and tenants' own accounts.
    pub payments: switchyard_core::payments::accounts::Providers,
    /// Each tenant's turns (`TENANT_MAX_CONCURRENT_REQUESTS`).
    pub tenants: crate::fairness::TenantLimiter,
    /// (tenant, venue) pairs with new device commands (fed by `switchyard_commands` notifications; the edge
    /// tunnels listen).
    pub commands: tokio::sync::broadcast::Sender<(uuid::Uuid, uuid::Uuid)>,
    /// (tenant, last seq) live-event announcements (fed by `switchyard_events`; the hub listens).
    pub announcements: tokio::sync::broadcast::Sender<(uuid::Uuid, i64)>,
    /// This process's fan-out of live events to GraphQL subscriptions.
    pub events: Arc<EventHub>,
    /// Wake-ups for this process's charger connections (fed by the same signals as `commands`).
    /// What this process's charger connections share (wake-ups, the group commit of meter values).
    pub chargers: Arc<crate::ocpp::Shared>,
    /// The object store of receipts, invoices and reports (off without `S3_BUCKET`).
    pub documents: switchyard_core::documents::Store,
    /// Closes this process's WebSockets when it stops (`crate::drain`).
    pub drain: crate::drain::Drain,
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchyard API", description = "REST surface of Switchyard. GraphQL is at /graphql."),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "stations"), (name = "sessions"), (name = "rentals"), (name = "payments"), (name = "reports"), (name = "health"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

impl AppState {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        // Install the metrics recorder before the first request is counted.
        crate::metrics::handle();
        let db = Db::connect_lazy(config.app_database_url(), config.db_max_connections)?
            .with_signals(config.signals.clone());
        let mut keys = TokenKeys::new(
            &config.jwt_secret,
            &config.jwt_issuer,
            &config.jwt_audience,
            config.access_token_ttl.as_secs() as i64,
            config.refresh_token_ttl.as_secs() as i64,
        );
        keys.refresh_family_ttl_secs = config.refresh_family_ttl.as_secs() as i64;
        let accounts = Accounts::with_limits(db.clone(), keys, config.auth_limits);
        let tick = switchyard_graphql::BillingTick(chrono::Duration::seconds(
            config.billing_tick.as_secs() as i64,
        ));
        let payments = switchyard_core::payments::accounts::Providers::new(
            config.payments.build()?,
            config.payment_accounts.clone(),
        );
        let events = EventHub::new(db.clone(), config.live_events);
        let documents = switchyard_core::documents::Store::new(&config.documents);
        let schema = switchyard_graphql::build(
            db.clone(),
            accounts.clone(),
            config.graphql,
            tick,
            payments.clone(),
            events.clone(),
            documents.clone(),
        );
        let commands = tokio::sync::broadcast::channel(1024).0;
        let chargers = crate::ocpp::Shared::new(
            db.clone(),
            commands.clone(),
            config
                .ocpp
                .meter_flushes
                .unwrap_or(config.db_max_connections as usize / 2),
        );
        Ok(Self(Arc::new(App {
            tenants: crate::fairness::TenantLimiter::new(
                config.tenant_max_concurrent,
                config.tenant_queue,
            ),
            config,
            db,
            accounts,
            schema,
            payments,
            chargers,
            commands,
            announcements: tokio::sync::broadcast::channel(4096).0,
            events,
            documents,
            drain: crate::drain::Drain::default(),
        })))
    }
}

/// The whole router, and the OpenAPI document generated from the same route list.
pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let (api, openapi) = rest(config).split_for_parts();
    let openapi = Arc::new(openapi);

    let graphql = if config.environment == Environment::Production {
        axum::routing::post(routes::graphql::post)
    } else {
        axum::routing::post(routes::graphql::post).get(routes::graphql::graphiql)
    };

    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        ))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderName::from_static("idempotency-key"),
        ]);

    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                request_id = %request_id,
                tenant.id = tracing::field::Empty,
            )
        })
        // One line per request at `info` (status and latency), inside the request's span: in JSON each carries the
        // request id and, once signed in, the tenant id.
        .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO));

    api.route("/graphql", graphql)
        .route("/graphql/ws", get(routes::graphql_ws::upgrade))
        .route("/edge/v1/tunnel", get(routes::edge::tunnel))
        .route("/ocpp/{charge_point_id}", get(crate::ocpp::connect))
        .route(
            "/api/v1/openapi.json",
            get(move || async move { axum::Json(openapi.as_ref().clone()) }),
        )
        .merge(crate::console::routes(config.console_dir.as_deref()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::fairness::tenant_share,
        ))
        .layer(rate_limit(
            config,
            config.rate_burst,
            config.rate_replenish,
            "too many requests from this address",
        ))
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(trace)
                .layer(middleware::from_fn(crate::metrics::track))
                .layer(middleware::from_fn(catalogue_errors))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    config.request_timeout,
                ))
                .layer(cors)
                .layer(CompressionLayer::new())
                .layer(catch_panics()),
        )
        .with_state(state)
}

/// The REST API's OpenAPI document (`switchyard print-openapi`; served at `/api/v1/openapi.json`).
pub fn openapi_document() -> anyhow::Result<utoipa::openapi::OpenApi> {
    // The routes' settings (rate limits) do not show in the document: the defaults build it.
    let config = Config::from_lookup(|key| match key {
        "APP_DATABASE_URL" => Some("postgres://unused/unused".into()),
        "JWT_SECRET" => Some("an-unused-secret-only-to-build-the-routes".into()),
        _ => None,
    })?;
    Ok(rest(&config).split_for_parts().1)
}

/// The REST routes with their OpenAPI description, from one list.
fn rest(config: &Config) -> OpenApiRouter<AppState> {
    let auth = OpenApiRouter::new()
        .routes(routes!(routes::auth::signup))
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::refresh))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::patron_signup))
        .routes(routes!(routes::auth::patron_login))
        .routes(routes!(routes::auth::verify_email))
        .routes(routes!(routes::auth::forgot_password))
        .routes(routes!(routes::auth::reset_password))
        .layer(rate_limit(
            config,
            config.auth_rate_burst,
            config.auth_rate_replenish,
            "too many sign-in requests from this address",
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(auth)
        .routes(routes!(routes::stations::list))
        .routes(routes!(routes::stations::get))
        .routes(routes!(routes::qr::station))
        .routes(routes!(routes::qr::station_svg))
        .routes(routes!(routes::qr::station_png))
        .routes(routes!(routes::qr::venue))
        .routes(routes!(routes::qr::venue_svg))
        .routes(routes!(routes::qr::venue_png))
        .routes(routes!(routes::sessions::start))
        .routes(routes!(routes::dashboard::get))
        .routes(routes!(routes::payments::intent))
        .routes(routes!(routes::payments::status))
        .routes(routes!(routes::payments::details))
        .routes(routes!(routes::payments::cancel))
        .routes(routes!(routes::payments::confirm))
        .routes(routes!(routes::payments::stripe_webhook))
        .routes(routes!(routes::payments::tenant_stripe_webhook))
        .routes(routes!(routes::rentals::quote))
        .routes(routes!(routes::rentals::start))
        .routes(routes!(routes::rentals::stop))
        .routes(routes!(routes::rentals::get))
        .routes(routes!(routes::sessions::extend))
        .routes(routes!(routes::sessions::stop, routes::sessions::get))
        .routes(routes!(routes::reports::create, routes::reports::get))
        .routes(routes!(routes::reports::by_session))
        .routes(routes!(routes::reports::set_contact))
        .routes(routes!(routes::reports::receipt))
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(routes::health::metrics))
}

/// A handler that panics answers `500 internal` in the catalogue's shape, and the panic is logged with the
/// request's span; the connection and the process carry on.
pub(crate) fn catch_panics(
) -> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send + 'static>) -> Response>
{
    fn answer(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        tracing::error!(panic = message, "a request handler panicked");
        metrics::counter!("http_panics_total").increment(1);
        ApiError::new(ErrorCode::Internal, "internal error").into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> Response)
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route; see /api/v1/openapi.json and /graphql",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not accept this method",
    )
}

/// Middleware that answers without a body (timeouts) get the catalogue shape here, so every error a client sees
/// looks the same.
async fn catalogue_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (code, message) = match response.status() {
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "the request took too long; try again"),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorCode::PayloadTooLarge,
            "the body is larger than this server accepts",
        ),
        StatusCode::TOO_MANY_REQUESTS => {
            (ErrorCode::RateLimited, "too many requests; wait and retry")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedMediaType, "unsupported content type")
        }
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this route does not accept this method",
        ),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "not found"),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error"),
        _ => (
            ErrorCode::MalformedRequest,
            "the request could not be handled",
        ),
    };
    let mut replaced = ApiError::new(code, message).into_response();
    *replaced.status_mut() = response.status();
    for name in [
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderName::from_static("x-request-id"),
    ] {
        if let Some(value) = response.headers().get(&name) {
            replaced.headers_mut().insert(name, value.clone());
        }
    }
    replaced
}

/// Keys rate limits by client address. `X-Forwarded-For` is believed only from a configured trusted proxy, and
/// then its right-most address that is not itself a trusted proxy is the client.
#[derive(Clone)]
struct ClientIp {
    trusted: Arc<Vec<ipnet::IpNet>>,
}

/// The client's key from the connection's peer and the headers (its address; an IPv6 client's /64): the one rule
/// for the rate limiters and the password-check throttle.
pub(crate) fn client_ip(
    trusted: &[ipnet::IpNet],
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
) -> IpAddr {
    // An IPv4 peer may arrive mapped into IPv6 (`::ffff:10.0.0.2`) on a dual-stack socket.
    let is_proxy = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&ip.to_canonical()));
    if !is_proxy(&peer) {
        return limit_key(peer);
    }
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let client = forwarded
        .split(',')
        .rev()
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .find(|ip| !is_proxy(ip))
        .unwrap_or(peer);
    limit_key(client)
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &http::Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        Ok(client_ip(&self.trusted, peer, req.headers()))
    }
}

/// What a rate limit counts by: an IPv4 address, or an IPv6 /64 (one subscriber's whole block: an attacker gets
/// 2^64 addresses from it, so counting single IPv6 addresses would limit nothing).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A per-address limit: `burst` requests at once, one more every `period`.
fn rate_limit(
    config: &Config,
    burst: u32,
    period: std::time::Duration,
    what: &'static str,
) -> GovernorLayer<
    ClientIp,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    axum::body::Body,
> {
    let mut builder = GovernorConfigBuilder::default().key_extractor(ClientIp {
        trusted: Arc::new(config.trusted_proxies.clone()),
    });
    builder.period(period).burst_size(burst);
    let governor = builder.finish().unwrap_or_else(unreachable_config);
    GovernorLayer::new(governor).error_handler(move |e| match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                format!("{what}; retry in {wait_time} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&wait_time.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        _ => ApiError::new(ErrorCode::Internal, "internal error").into_response(),
    })
}

#[expect(
    clippy::panic,
    reason = "Config::from_env guarantees a non-zero burst and period"
)]
fn unreachable_config<T>() -> T {
    panic!("rate limit configuration rejected despite validation")
}

/// A bound, not yet running, server: tests bind to port 0 and read the address before starting it.
pub struct Server {
    listener: TcpListener,
    router: Router,
    drain: crate::drain::Drain,
    /// `/metrics` on a listener of its own (`METRICS_LISTEN_ADDR`).
    metrics: Option<(TcpListener, Router)>,
}

impl Server {
    /// Binds the API (and the metrics listener, when configured). In production it first refuses a database login
    /// that would bypass row-level security.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen_addr).await?;
        let metrics_addr = config.metrics_listen_addr;
        let production = config.environment == Environment::Production;
        let state = AppState::new(config)?;
        if production {
            state.db.check_app_role().await?;
        }
        if state.config.documents.create_bucket {
            state.documents.prepare().await?;
        }
        let metrics = match metrics_addr {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen on METRICS_LISTEN_ADDR {addr}: {e}")
                })?;
                let metrics_state = state.clone();
                let router = Router::new().route(
                    "/metrics",
                    get(move || {
                        let state = metrics_state.clone();
                        async move { routes::health::render_metrics(&state) }
                    }),
                );
                Some((listener, router))
            }
        };
        // Subscribe to announcements before listening, so that none is sent to nobody.
        let announcements = state.announcements.subscribe();
        tokio::spawn(state.db.signals().clone().listen(
            state.db.clone(),
            Listeners {
                commands: state.commands.clone(),
                events: state.announcements.clone(),
            },
        ));
        tokio::spawn(
            state
                .events
                .clone()
                .run(announcements, std::time::Duration::from_secs(2)),
        );
        Ok(Self {
            listener,
            drain: state.drain.clone(),
            router: router(state),
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` listens apart from the API, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes in-flight requests and closes its
    /// WebSockets with `1012 service restart` (waiting up to 10 s for them to go).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if let Some((listener, router)) = self.metrics {
            // Scrapes stop with the process; they hold no work that a graceful stop must finish.
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown({
            let drain = self.drain.clone();
            async move {
                shutdown.await;
                tracing::info!(
                    "stopping: closing WebSockets so that their peers reconnect elsewhere"
                );
                drain.start();
            }
        })
        .await?;
        let left = self.drain.settled(std::time::Duration::from_secs(10)).await;
        if left > 0 {
            tracing::warn!(left, "WebSockets still open at exit");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> http::Request<()> {
        let mut request = http::Request::new(());
        let peer: SocketAddr = format!("{peer}:4000").parse().unwrap();
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        if let Some(f) = forwarded {
            request
                .headers_mut()
                .insert("x-forwarded-for", f.parse().unwrap());
        }
        request
    }

    fn handler_bug() -> &'static str {
        std::panic::panic_any("handler bug with secret detail")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_the_error_shape_and_the_server_goes_on() {
        use tower::ServiceExt;
        let app = Router::new()
            .route("/boom", get(|| async { handler_bug() }))
            .route("/fine", get(|| async { "fine" }))
            .layer(catch_panics());
        let response = app
            .clone()
            .oneshot(
                http::Request::get("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "internal", "message": "internal error"}})
        );
        let response = app
            .oneshot(
                http::Request::get("/fine")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let none = ClientIp {
            trusted: Arc::new(vec![]),
        };
        let one = none.extract(&request("[2001:db8:1:2::9]", None)).unwrap();
        let other = none
            .extract(&request("[2001:db8:1:2:ffff:1:2:3]", None))
            .unwrap();
        assert_eq!(one, other, "two addresses of one /64 share a limit");
        assert_eq!(one, ip("2001:db8:1:2::"));
        let next = none.extract(&request("[2001:db8:1:3::9]", None)).unwrap();
        assert_ne!(one, next, "the next /64 is another client");
        assert_eq!(
            none.extract(&request("[::ffff:198.51.100.7]", None))
                .unwrap(),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let none = ClientIp {
            trusted: Arc::new(vec![]),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            none.extract(&request("203.0.113.9", Some("198.51.100.1")))
                .unwrap(),
            ip("203.0.113.9")
        );

        let lb = ClientIp {
            trusted: Arc::new(vec![
                "10.0.0.2/32".parse().unwrap(),
                "10.0.0.3/32".parse().unwrap(),
            ]),
        };
        // From the load balancer: the right-most address that is not itself a proxy. A client cannot spoof its way
        // past that by prepending addresses.
        let spoofed = request("10.0.0.2", Some("1.2.3.4, 198.51.100.7, 10.0.0.3"));
        assert_eq!(lb.extract(&spoofed).unwrap(), ip("198.51.100.7"));
        assert_eq!(
            lb.extract(&request("10.0.0.2", None)).unwrap(),
            ip("10.0.0.2")
        );
        // Not from the load balancer: the header is ignored.
        assert_eq!(
            lb.extract(&request("203.0.113.9", Some("1.2.3.4")))
                .unwrap(),
            ip("203.0.113.9")
        );

        // A range: an ingress controller whose pods come and go within the cluster's pod network, reached over a
        // dual-stack socket as a mapped address.
        let ingress = ClientIp {
            trusted: Arc::new(vec!["10.42.0.0/16".parse().unwrap()]),
        };
        for peer in ["10.42.7.19", "[::ffff:10.42.3.4]"] {
            assert_eq!(
                ingress
                    .extract(&request(peer, Some("198.51.100.7, 10.42.0.5")))
                    .unwrap(),
                ip("198.51.100.7"),
                "{peer}"
            );
        }
        assert_eq!(
            ingress
                .extract(&request("10.43.0.1", Some("198.51.100.7")))
                .unwrap(),
            ip("10.43.0.1"),
            "outside the range"
        );
    }
}
