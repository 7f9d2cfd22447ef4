//! Structured logs for every Switchyard service: text for people at a terminal, JSON for production (one object
//! per line, with the fields of the spans it happened in: an API request's `request_id` and `tenant.id`).
//! `RUST_LOG` filters. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the same spans are also exported as OpenTelemetry
//! traces over OTLP/HTTP (JSON) to `<endpoint>/v1/traces`, named by `OTEL_SERVICE_NAME`.

use std::time::Duration;

use anyhow::{bail, Context};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT` (`text` or `json`); unset, JSON in production and text elsewhere.
    pub fn from_setting(value: Option<&str>, production: bool) -> anyhow::Result<Self> {
        Ok(match value {
            None if production => Self::Json,
            None | Some("text") => Self::Text,
            Some("json") => Self::Json,
            Some(other) => bail!("LOG_FORMAT must be text or json, not {other:?}"),
        })
    }
}

/// Where traces go: `OTEL_EXPORTER_OTLP_ENDPOINT` (an `http://` collector, e.g. the OpenTelemetry Collector's
/// `http://otel-collector:4318`) and `OTEL_SERVICE_NAME` (else the binary's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    pub endpoint: String,
    pub service_name: String,
}

impl Tracing {
    /// From the environment; `None` when no endpoint is set.
    pub fn from_env(default_service: &str) -> anyhow::Result<Option<Self>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT") else {
            return Ok(None);
        };
        if !endpoint.starts_with("http://") {
            bail!(
                "OTEL_EXPORTER_OTLP_ENDPOINT must be an http:// address of a collector nearby (e.g. \
                 http://otel-collector:4318), not {endpoint:?}"
            );
        }
        Ok(Some(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()),
        }))
    }
}

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends what is still queued.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes queued spans to the collector (at most a few seconds).
    pub async fn shutdown(self) {
        let Some(provider) = self.traces else {
            return;
        };
        // The provider's shutdown blocks until the batch task has exported; keep it off the runtime's workers.
        let flushed = tokio::task::spawn_blocking(move || {
            provider.shutdown_with_timeout(Duration::from_secs(5))
        })
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not send the last traces"),
            Err(e) => tracing::warn!(error = %e, "could not send the last traces"),
        }
    }
}

/// Installs the process's log subscriber (writing to stderr) and, when configured, the trace exporter (which
/// needs a running tokio runtime). A second call keeps the first subscriber.
pub fn init(format: LogFormat, tracing: Option<Tracing>) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Text => logs.boxed(),
    };
    let (traces, provider) = match tracing {
        None => (None, None),
        Some(settings) => {
            let client = opentelemetry_http::hyper::HyperClient::with_default_connector(
                Duration::from_secs(10),
                None,
            );
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpJson)
                .with_endpoint(format!("{}/v1/traces", settings.endpoint))
                .build()
                .context("while setting up the OTLP trace exporter")?;
            let batch =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(batch)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(settings.service_name)
                        .build(),
                )
                .build();
            let tracer = provider.tracer("switchyard");
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer).boxed()),
                Some(provider),
            )
        }
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    Ok(Telemetry { traces: provider })
}
