//! Structured logs for every Switchyard service: text for people at a terminal, JSON for production (one object
//! per line, with the fields of the spans it happened in: an API request's `request_id` and `tenant.id`).
//! `RUST_LOG` filters.

use anyhow::bail;
use tracing_subscriber::EnvFilter;

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

/// Installs the process's log subscriber (writing to stderr); a second call keeps the first.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
