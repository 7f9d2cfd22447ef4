//! Configuration, read from the environment once at start and validated. Every variable is in the manual's table
//! and in `.env.example`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use switchyard_graphql::Limits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

pub use switchyard_core::telemetry::LogFormat;

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub listen_addr: SocketAddr,
    /// Where `/metrics` is served apart from the API (`METRICS_LISTEN_ADDR`). Unset: on the API port in
    /// development, nowhere in production.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// The app role's connection URL (`switchyard_app`).
    pub app_database_url: SecretString,
    pub db_max_connections: u32,
    pub jwt_secret: SecretString,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// The absolute lifetime of a refresh-token family (a login), however often it is refreshed.
    pub refresh_family_ttl: Duration,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub cors_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (a load balancer). Empty: the socket peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests a client address may make to `/api/v1/auth/*` in a burst ...
    pub auth_rate_burst: u32,
    /// ... and the interval after which one more is allowed.
    pub auth_rate_replenish: Duration,
    /// Requests a client address (an IPv6 /64) may make to any route in a burst ...
    pub rate_burst: u32,
    /// ... and the interval after which one more is allowed.
    pub rate_replenish: Duration,
    /// Requests of one tenant served at once; more wait up to `tenant_queue` for a turn, then answer 429.
    pub tenant_max_concurrent: usize,
    pub tenant_queue: Duration,
    /// The password-check throttle and the Argon2 concurrency cap.
    pub auth_limits: switchyard_core::throttle::AuthLimits,
    pub graphql: Limits,
    /// How often running sessions are billed.
    pub billing_tick: Duration,
    /// The payment provider (dev emulator or Stripe) and its settings.
    pub payments: switchyard_core::payments::ProviderSettings,
    /// Tenants' own Stripe accounts: `STRIPE_API_BASE`, `STRIPE_TIMEOUT_MS`, and `SECRETS_KEY` that seals their keys.
    pub payment_accounts: switchyard_core::payments::accounts::AccountSettings,
    /// Signing secret of the Stripe webhook endpoint (`whsec_…`); without it `/webhooks/stripe` answers 404.
    pub stripe_webhook_secret: Option<SecretString>,
    pub log_format: LogFormat,
    /// How replicas wake each other (bridge commands): Redis pub/sub at `REDIS_URL`, else Postgres `notify`.
    pub signals: switchyard_core::signals::Signals,
    /// How long a frame may wait for a WebSocket peer to take it (`WS_WRITE_TIMEOUT_MS`; see [`crate::ws`]).
    pub ws_write_timeout: Duration,
    /// Per-tunnel limits of `/edge/v1/tunnel` (`EDGE_*`).
    pub edge: crate::routes::edge::EdgeLimits,
    /// The OCPP central system's timing (`OCPP_*`).
    pub ocpp: crate::ocpp::OcppSettings,
    /// Live events: queue per tenant, subscriptions per tenant, the resume window (`LIVE_EVENT_*`).
    pub live_events: switchyard_core::events::HubLimits,
    /// Subscriptions one `/graphql/ws` connection may run at once.
    pub subscriptions_per_connection: usize,
    /// Where receipts, invoices and reports are stored (`S3_*`, `DOCUMENT_URL_TTL_SECS`).
    pub documents: switchyard_core::documents::StoreSettings,
    /// The built web console (`CONSOLE_DIR`, a folder holding `index.html`), served under `/console`; unset: no
    /// console on this server.
    pub console_dir: Option<std::path::PathBuf>,
}

/// The most an access token may live.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

impl Config {
    /// Reads and validates every setting; the error names the variable and what is wrong.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// As [`Config::from_env`], from any lookup (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |key: &str| {
            get(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let parse = |key: &str, default: u64| -> anyhow::Result<u64> {
            match var(key) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .with_context(|| format!("{key} must be a whole number, not {v:?}")),
            }
        };
        let environment = match var("APP_ENV").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => bail!("APP_ENV must be development or production, not {other:?}"),
        };
        let listen_addr = var("LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:8080".into())
            .parse()
            .context("LISTEN_ADDR must be an address like 127.0.0.1:8080")?;
        let app_database_url =
            var("APP_DATABASE_URL").context("APP_DATABASE_URL is required (the app role's URL)")?;
        let jwt_secret =
            var("JWT_SECRET").context("JWT_SECRET is required (at least 32 characters)")?;
        if jwt_secret.len() < 32 {
            bail!("JWT_SECRET must be at least 32 characters");
        }
        let access_token_ttl = Duration::from_secs(parse("ACCESS_TOKEN_TTL_SECS", 900)?);
        if access_token_ttl.is_zero() || access_token_ttl > MAX_ACCESS_TOKEN_TTL {
            bail!("ACCESS_TOKEN_TTL_SECS must be between 1 and 900");
        }
        let refresh_token_ttl =
            Duration::from_secs(parse("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?);
        if refresh_token_ttl < access_token_ttl {
            bail!("REFRESH_TOKEN_TTL_SECS must be at least ACCESS_TOKEN_TTL_SECS");
        }
        let refresh_family_ttl =
            Duration::from_secs(parse("REFRESH_FAMILY_TTL_SECS", 30 * 24 * 3600)?);
        if refresh_family_ttl < access_token_ttl {
            bail!("REFRESH_FAMILY_TTL_SECS must be at least ACCESS_TOKEN_TTL_SECS");
        }
        let list = |key: &str| -> Vec<String> {
            var(key)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        // An address (`10.0.0.2`) or a range (`10.42.0.0/16`): an ingress controller's pods change address.
        let trusted_proxies = list("TRUSTED_PROXIES")
            .iter()
            .map(|p| {
                let net = p
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .with_context(|| {
                        format!("TRUSTED_PROXIES: {p:?} is not an IP address or a range like 10.0.0.0/8")
                    })?;
                // `10.0.0.5/8` is an interface's address pasted from `ip addr`, most likely meant as one host, and
                // would trust the whole /8; `0.0.0.0/0` would let anyone name any client address.
                if net != net.trunc() {
                    bail!("TRUSTED_PROXIES: {p:?} has host bits set: write the address alone, or the range as {}", net.trunc());
                }
                if net.prefix_len() == 0 {
                    bail!("TRUSTED_PROXIES: {p:?} trusts every address");
                }
                Ok(net)
            })
            .collect::<anyhow::Result<_>>()?;
        if environment == Environment::Production {
            switchyard_core::payments::ProviderSettings::check_production(var)?;
        }
        let payments = switchyard_core::payments::ProviderSettings::from_lookup(var)?;
        let payment_accounts =
            switchyard_core::payments::accounts::AccountSettings::from_lookup(var)?;
        let metrics_listen_addr = var("METRICS_LISTEN_ADDR")
            .map(|v| {
                v.parse().with_context(|| {
                    format!("METRICS_LISTEN_ADDR must be an address like 0.0.0.0:9090, not {v:?}")
                })
            })
            .transpose()?;
        let log_format = LogFormat::from_setting(
            var("LOG_FORMAT").as_deref(),
            environment == Environment::Production,
        )?;
        let defaults = Limits::default();
        let graphql = Limits {
            max_depth: parse("GRAPHQL_MAX_DEPTH", defaults.max_depth as u64)? as usize,
            max_complexity: parse("GRAPHQL_MAX_COMPLEXITY", defaults.max_complexity as u64)?
                as usize,
            max_aliases: parse("GRAPHQL_MAX_ALIASES", defaults.max_aliases as u64)? as usize,
            max_directives: defaults.max_directives,
            max_batch: parse("GRAPHQL_MAX_BATCH", defaults.max_batch as u64)? as usize,
            max_connections: parse("GRAPHQL_MAX_CONNECTIONS", defaults.max_connections as u64)?
                .clamp(1, 100) as usize,
            introspection: environment == Environment::Development,
        };
        let auth_rate_burst = parse("AUTH_RATE_BURST", 10)?;
        let auth_rate_replenish_ms = parse("AUTH_RATE_REPLENISH_MS", 1000)?;
        if auth_rate_burst == 0 || auth_rate_replenish_ms == 0 {
            bail!("AUTH_RATE_BURST and AUTH_RATE_REPLENISH_MS must be above 0");
        }
        let rate_burst = parse("RATE_BURST", 200)?;
        let rate_replenish_ms = parse("RATE_REPLENISH_MS", 10)?;
        if rate_burst == 0 || rate_replenish_ms == 0 {
            bail!("RATE_BURST and RATE_REPLENISH_MS must be above 0");
        }
        let db_max_connections = parse("DB_MAX_CONNECTIONS", 20)?.clamp(1, 1000) as u32;
        let auth_defaults = switchyard_core::throttle::AuthLimits::default();
        let at_least_one = |key: &str, default: u64| -> anyhow::Result<u64> {
            let v = parse(key, default)?;
            if v == 0 {
                bail!("{key} must be above 0");
            }
            Ok(v)
        };
        let auth_limits = switchyard_core::throttle::AuthLimits {
            failures_before_lock: u32::try_from(at_least_one(
                "AUTH_FAILURES_BEFORE_LOCK",
                u64::from(auth_defaults.failures_before_lock),
            )?)
            .context("AUTH_FAILURES_BEFORE_LOCK is too large")?,
            ip_failures_before_lock: u32::try_from(at_least_one(
                "AUTH_IP_FAILURES_BEFORE_LOCK",
                u64::from(auth_defaults.ip_failures_before_lock),
            )?)
            .context("AUTH_IP_FAILURES_BEFORE_LOCK is too large")?,
            lock: Duration::from_secs(
                at_least_one("AUTH_LOCK_SECS", auth_defaults.lock.as_secs())?.min(86_400),
            ),
            backoff_base: Duration::from_millis(
                parse(
                    "AUTH_BACKOFF_BASE_MS",
                    auth_defaults.backoff_base.as_millis() as u64,
                )?
                .min(3_600_000),
            ),
            max_keys: auth_defaults.max_keys,
            hash_concurrency: at_least_one(
                "AUTH_HASH_CONCURRENCY",
                auth_defaults.hash_concurrency as u64,
            )?
            .min(1024) as usize,
            hash_wait: Duration::from_millis(
                parse(
                    "AUTH_HASH_WAIT_MS",
                    auth_defaults.hash_wait.as_millis() as u64,
                )?
                .min(60_000),
            ),
        };
        Ok(Self {
            environment,
            listen_addr,
            metrics_listen_addr,
            app_database_url: app_database_url.into(),
            db_max_connections,
            jwt_secret: jwt_secret.into(),
            jwt_issuer: var("JWT_ISSUER").unwrap_or_else(|| "switchyard".into()),
            jwt_audience: var("JWT_AUDIENCE").unwrap_or_else(|| "switchyard-api".into()),
            access_token_ttl,
            refresh_token_ttl,
            refresh_family_ttl,
            request_timeout: Duration::from_secs(parse("REQUEST_TIMEOUT_SECS", 30)?.max(1)),
            body_limit_bytes: parse("BODY_LIMIT_BYTES", 1024 * 1024)?.max(1024) as usize,
            cors_origins: list("CORS_ORIGINS"),
            trusted_proxies,
            auth_rate_burst: u32::try_from(auth_rate_burst)
                .context("AUTH_RATE_BURST is too large")?,
            auth_rate_replenish: Duration::from_millis(auth_rate_replenish_ms),
            rate_burst: u32::try_from(rate_burst).context("RATE_BURST is too large")?,
            rate_replenish: Duration::from_millis(rate_replenish_ms),
            // By default a quarter of the pool: a tenant's requests (each holding few connections) never take
            // all of it.
            tenant_max_concurrent: parse(
                "TENANT_MAX_CONCURRENT_REQUESTS",
                u64::from(db_max_connections / 4).max(1),
            )?
            .clamp(1, 100_000) as usize,
            tenant_queue: Duration::from_millis(parse("TENANT_QUEUE_MS", 5000)?),
            auth_limits,
            graphql,
            billing_tick: Duration::from_secs(parse("BILLING_TICK_SEC", 30)?.clamp(1, 3600)),
            payments,
            payment_accounts,
            stripe_webhook_secret: var("STRIPE_WEBHOOK_SECRET").map(SecretString::from),
            log_format,
            signals: switchyard_core::signals::Signals::from_url(var("REDIS_URL").as_deref())?,
            ws_write_timeout: crate::ws::write_timeout(var)?,
            edge: crate::routes::edge::EdgeLimits::from_lookup(var)?,
            ocpp: crate::ocpp::OcppSettings::from_lookup(var)?,
            live_events: switchyard_core::events::HubLimits {
                queue: parse("LIVE_EVENT_QUEUE", 1024)?.clamp(16, 1_000_000) as usize,
                per_tenant: parse("SUBSCRIPTIONS_PER_TENANT", 5000)?.clamp(1, 10_000_000) as usize,
                window: chrono::Duration::seconds(
                    parse("LIVE_EVENT_WINDOW_SECS", 900)?.clamp(10, 7 * 86_400) as i64,
                ),
                max_replay: parse("LIVE_EVENT_MAX_REPLAY", 1000)?.clamp(1, 100_000) as i64,
            },
            subscriptions_per_connection: parse("SUBSCRIPTIONS_PER_CONNECTION", 20)?.clamp(1, 1000)
                as usize,
            documents: switchyard_core::documents::StoreSettings::from_lookup(var)?,
            console_dir: match var("CONSOLE_DIR") {
                None => None,
                Some(dir) => {
                    let dir = std::path::PathBuf::from(dir);
                    if !dir.join("index.html").is_file() {
                        bail!(
                            "CONSOLE_DIR must be the built console, a folder holding index.html (npm run build in \
                             console/ makes console/dist); {} has none",
                            dir.display()
                        );
                    }
                    Some(dir)
                }
            },
        })
    }

    pub fn app_database_url(&self) -> &str {
        self.app_database_url.expose_secret()
    }

    /// Whether `/metrics` answers on the API port: in development unless it has a listener of its own.
    pub fn metrics_on_api_port(&self) -> bool {
        self.metrics_listen_addr.is_none() && self.environment == Environment::Development
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("APP_DATABASE_URL", "postgres://app@localhost/db"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn defaults_are_development_with_fifteen_minute_tokens() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert!(c.graphql.introspection);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    const STRIPE: [(&str, &str); 2] = [
        ("PAYMENT_PROVIDER", "stripe"),
        ("STRIPE_SECRET_KEY", "sk_test_x"),
    ];

    #[test]
    fn production_refuses_the_dev_payment_provider_and_an_implicit_one() {
        let err = config(&[BASE[0], BASE[1], ("APP_ENV", "production")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PAYMENT_PROVIDER set explicitly"), "{err}");
        let err = config(&[
            BASE[0],
            BASE[1],
            ("APP_ENV", "production"),
            ("PAYMENT_PROVIDER", "dev"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("PAYMENT_PROVIDER=dev"), "{err}");
        assert!(config(&[BASE[0], BASE[1], ("PAYMENT_PROVIDER", "dev")]).is_ok());
    }

    #[test]
    fn metrics_leave_the_api_port_in_production_or_when_given_their_own() {
        let dev = config(&BASE).unwrap();
        assert!(dev.metrics_on_api_port());
        let own = config(&[BASE[0], BASE[1], ("METRICS_LISTEN_ADDR", "127.0.0.1:9090")]).unwrap();
        assert!(!own.metrics_on_api_port());
        let prod = config(&[
            BASE[0],
            BASE[1],
            ("APP_ENV", "production"),
            STRIPE[0],
            STRIPE[1],
        ])
        .unwrap();
        assert!(!prod.metrics_on_api_port());
        let err = config(&[BASE[0], BASE[1], ("METRICS_LISTEN_ADDR", "nine")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("METRICS_LISTEN_ADDR"), "{err}");
    }

    #[test]
    fn production_turns_off_introspection_and_logs_json() {
        let c = config(&[
            BASE[0],
            BASE[1],
            ("APP_ENV", "production"),
            STRIPE[0],
            STRIPE[1],
        ])
        .unwrap();
        assert!(!c.graphql.introspection);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn the_password_throttle_has_safe_defaults_and_refuses_zero_thresholds() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.auth_limits.failures_before_lock, 5);
        assert_eq!(c.auth_limits.lock, Duration::from_secs(900));
        assert!(c.auth_limits.hash_concurrency >= 1);
        assert_eq!(c.refresh_family_ttl, Duration::from_secs(30 * 24 * 3600));
        let c = config(&[
            BASE[0],
            BASE[1],
            ("AUTH_FAILURES_BEFORE_LOCK", "3"),
            ("AUTH_LOCK_SECS", "60"),
        ])
        .unwrap();
        assert_eq!(c.auth_limits.failures_before_lock, 3);
        assert_eq!(c.auth_limits.lock, Duration::from_secs(60));
        for key in [
            "AUTH_FAILURES_BEFORE_LOCK",
            "AUTH_LOCK_SECS",
            "AUTH_HASH_CONCURRENCY",
        ] {
            let err = config(&[BASE[0], BASE[1], (key, "0")])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = config(&[BASE[0], BASE[1], ("REFRESH_FAMILY_TTL_SECS", "10")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("REFRESH_FAMILY_TTL_SECS"), "{err}");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let err = config(&[BASE[0], ("JWT_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("JWT_SECRET"), "{err}");
        let err = config(&[BASE[0], BASE[1], ("ACCESS_TOKEN_TTL_SECS", "3600")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ACCESS_TOKEN_TTL_SECS"), "{err}");
        let err = config(&[BASE[0], BASE[1], ("TRUSTED_PROXIES", "nope")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRUSTED_PROXIES"), "{err}");
        // An address with its interface's prefix, and a range of everything, are refused; ranges and addresses
        // are taken.
        for (value, says) in [("10.0.0.5/8", "10.0.0.0/8"), ("0.0.0.0/0", "every address")] {
            let err = config(&[BASE[0], BASE[1], ("TRUSTED_PROXIES", value)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("TRUSTED_PROXIES") && err.contains(says),
                "{err}"
            );
        }
        let c = config(&[
            BASE[0],
            BASE[1],
            ("TRUSTED_PROXIES", "10.42.0.0/16, 172.28.0.10, fd00::/8"),
        ])
        .unwrap();
        let listed: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(listed, ["10.42.0.0/16", "172.28.0.10/32", "fd00::/8"]);
        let err = config(&[BASE[1]]).unwrap_err().to_string();
        assert!(err.contains("APP_DATABASE_URL"), "{err}");
    }
}
