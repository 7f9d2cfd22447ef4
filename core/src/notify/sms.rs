//! SMS through a Twilio-style HTTP API: `POST <base>/2010-04-01/Accounts/<sid>/Messages.json` with HTTP Basic
//! (account SID, auth token) and a form of `To`, `From`, `Body`. The base URL is a setting, so any provider (or a
//! local fake) that speaks the same API works.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::deliver::{Outgoing, SendError, Transport};

/// `SMS_*` settings.
#[derive(Debug, Clone)]
pub struct SmsSettings {
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: SecretString,
    pub from: String,
    pub timeout: Duration,
}

impl SmsSettings {
    /// `None` when `SMS_ACCOUNT_SID` is unset (SMS waits in the outbox then).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let Some(account_sid) = var("SMS_ACCOUNT_SID") else {
            return Ok(None);
        };
        let auth_token = var("SMS_AUTH_TOKEN")
            .ok_or_else(|| anyhow::anyhow!("SMS_AUTH_TOKEN is required with SMS_ACCOUNT_SID"))?;
        let from = var("SMS_FROM").ok_or_else(|| {
            anyhow::anyhow!("SMS_FROM (the sending number) is required with SMS_ACCOUNT_SID")
        })?;
        let api_base = var("SMS_API_BASE").unwrap_or_else(|| "https://api.twilio.com".into());
        url_ok("SMS_API_BASE", &api_base)?;
        Ok(Some(Self {
            api_base,
            account_sid,
            auth_token: SecretString::from(auth_token),
            from,
            timeout: http_timeout(&var)?,
        }))
    }
}

/// `NOTIFY_HTTP_TIMEOUT_MS`: the SMS and push providers' request timeout.
pub(crate) fn http_timeout(var: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Duration> {
    let ms: u64 = match var("NOTIFY_HTTP_TIMEOUT_MS") {
        None => 10_000,
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("NOTIFY_HTTP_TIMEOUT_MS must be a whole number"))?,
    };
    Ok(Duration::from_millis(ms.clamp(100, 120_000)))
}

pub(crate) fn url_ok(name: &str, value: &str) -> anyhow::Result<()> {
    if value.starts_with("https://") || value.starts_with("http://") {
        Ok(())
    } else {
        anyhow::bail!("{name} must be an http(s) URL, not {value:?}")
    }
}

/// Classifies a provider's HTTP status: 429 and 5xx may pass, other 4xx will not (a bad number, say), except
/// 401/403, a configuration problem someone can fix while the message waits.
pub(crate) fn http_error(service: &str, status: reqwest::StatusCode) -> SendError {
    let code = status.as_u16();
    let permanent = status.is_client_error() && !matches!(code, 401 | 403 | 408 | 429);
    SendError {
        permanent,
        safe: format!(
            "the {service} answered {code} ({})",
            if permanent {
                "refused"
            } else {
                "try again later"
            }
        ),
    }
}

pub(crate) fn transport_error(service: &str, e: &reqwest::Error) -> SendError {
    tracing::debug!(error = %e, "{service} request failed");
    SendError {
        permanent: false,
        safe: if e.is_timeout() {
            format!("the {service} did not answer in time")
        } else {
            format!("the {service} could not be reached")
        },
    }
}

/// Sends SMS through the Twilio-style API.
pub struct TwilioSms {
    client: reqwest::Client,
    settings: SmsSettings,
}

impl TwilioSms {
    pub fn new(settings: SmsSettings) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(settings.timeout)
                .build()?,
            settings,
        })
    }
}

#[async_trait::async_trait]
impl Transport for TwilioSms {
    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let s = &self.settings;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            s.api_base.trim_end_matches('/'),
            s.account_sid
        );
        // A text message carries the subject line, prefixed with whose message it is, and a document's link.
        let body = match &m.link {
            Some(link) => format!("{}: {} {link}", m.tenant_name, m.rendered.subject),
            None => format!("{}: {}", m.tenant_name, m.rendered.subject),
        };
        let response = self
            .client
            .post(url)
            .basic_auth(&s.account_sid, Some(s.auth_token.expose_secret()))
            .form(&[
                ("To", m.recipient.as_str()),
                ("From", s.from.as_str()),
                ("Body", body.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport_error("SMS service", &e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(http_error("SMS service", response.status()))
        }
    }
}
