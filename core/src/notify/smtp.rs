//! Email over SMTP with `lettre` (async, rustls): the email [`Transport`] of the workers. Each message opens its own
//! connection (lettre's connection pool is off: a sequential benchmark run with it stalled, cause not yet found; see
//! the manual's Figures).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use super::deliver::{Outgoing, SendError, Transport};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP (a local relay or a development sink only).
    None,
    /// SMTP, then `STARTTLS` (required: a server that does not offer it is refused).
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// `SMTP_*` settings.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub from_address: String,
    pub from_name: String,
    pub timeout: Duration,
    /// A certificate (PEM) to trust besides the public roots (`SMTP_CA_FILE`: a private relay's own CA).
    pub ca_pem: Option<Vec<u8>>,
}

impl SmtpSettings {
    /// Reads the settings; `None` when `SMTP_HOST` is unset (email is not delivered then). A bad value is an error
    /// naming the variable.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let Some(host) = var("SMTP_HOST") else {
            return Ok(None);
        };
        let security = match var("SMTP_SECURITY").as_deref() {
            None | Some("starttls") => Security::StartTls,
            Some("tls") => Security::Tls,
            Some("none") => Security::None,
            Some(other) => {
                anyhow::bail!("SMTP_SECURITY must be none, starttls or tls, not {other:?}")
            }
        };
        let default_port = match security {
            Security::None => 25,
            Security::StartTls => 587,
            Security::Tls => 465,
        };
        let port = match var("SMTP_PORT") {
            None => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| anyhow::anyhow!("SMTP_PORT must be a port number, not {p:?}"))?,
        };
        let from_address = var("SMTP_FROM_ADDRESS")
            .ok_or_else(|| anyhow::anyhow!("SMTP_FROM_ADDRESS is required with SMTP_HOST"))?;
        from_address
            .parse::<lettre::Address>()
            .map_err(|_| anyhow::anyhow!("SMTP_FROM_ADDRESS is not an email address"))?;
        let username = var("SMTP_USERNAME");
        let password = var("SMTP_PASSWORD").map(SecretString::from);
        if username.is_some() != password.is_some() {
            anyhow::bail!("set both SMTP_USERNAME and SMTP_PASSWORD, or neither");
        }
        let timeout_ms: u64 = match var("SMTP_TIMEOUT_MS") {
            None => 30_000,
            Some(v) => v
                .parse()
                .map_err(|_| anyhow::anyhow!("SMTP_TIMEOUT_MS must be a whole number"))?,
        };
        let ca_pem = match var("SMTP_CA_FILE") {
            None => None,
            Some(file) => {
                let pem = std::fs::read(&file)
                    .map_err(|e| anyhow::anyhow!("SMTP_CA_FILE {file:?}: {e}"))?;
                lettre::transport::smtp::client::Certificate::from_pem(&pem)
                    .map_err(|_| anyhow::anyhow!("SMTP_CA_FILE is not a PEM certificate"))?;
                Some(pem)
            }
        };
        Ok(Some(Self {
            ca_pem,
            host,
            port,
            security,
            username,
            password,
            from_address,
            from_name: var("SMTP_FROM_NAME").unwrap_or_else(|| "Switchyard".into()),
            timeout: Duration::from_millis(timeout_ms.clamp(100, 600_000)),
        }))
    }
}

/// Sends email through one SMTP server.
pub struct SmtpTransport {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from_address: lettre::Address,
    from_name: String,
}

impl SmtpTransport {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let tls = || -> anyhow::Result<TlsParameters> {
            let mut builder = TlsParameters::builder(settings.host.clone());
            if let Some(pem) = &settings.ca_pem {
                builder = builder.add_root_certificate(Certificate::from_pem(pem)?);
            }
            Ok(builder.build_rustls()?)
        };
        let plain = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.clone());
        let builder = match settings.security {
            Security::None => plain,
            Security::StartTls => plain.tls(Tls::Required(tls()?)),
            Security::Tls => plain.tls(Tls::Wrapper(tls()?)),
        };
        let mut builder = builder.port(settings.port).timeout(Some(settings.timeout));
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from_address: settings.from_address.parse()?,
            from_name: settings.from_name.clone(),
        })
    }

    fn message(&self, m: &Outgoing) -> Result<Message, SendError> {
        let permanent = |why: &str| SendError {
            permanent: true,
            safe: why.to_owned(),
        };
        let to: lettre::Address = m
            .recipient
            .parse()
            .map_err(|_| permanent("the recipient is not an email address"))?;
        // The sender's display name says whose message it is: "<tenant> via Switchyard". Header texts are one line:
        // a line break in a name stored before names were checked for them would make the message unwritable.
        let from = Mailbox::new(
            Some(one_line(&format!(
                "{} via {}",
                m.tenant_name, self.from_name
            ))),
            self.from_address.clone(),
        );
        Message::builder()
            .from(from)
            .to(Mailbox::new(None, to))
            .subject(one_line(&m.rendered.subject))
            .message_id(Some(format!("<{}@switchyard>", m.id)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Content-Language"),
                m.locale.as_str().to_owned(),
            ))
            .multipart(body(m))
            .map_err(|_| permanent("the message could not be built"))
    }
}

/// `text` with every control character (line breaks, tabs) made a space: fit for a header.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Plain text and HTML as alternatives; with attachments (a receipt's or report's PDF), that pair and the files in a
/// `multipart/mixed`.
fn body(m: &Outgoing) -> MultiPart {
    let text = MultiPart::alternative_plain_html(m.rendered.text.clone(), m.rendered.html.clone());
    if m.attachments.is_empty() {
        return text;
    }
    let pdf = ContentType::parse("application/pdf").unwrap_or(ContentType::TEXT_PLAIN);
    m.attachments
        .iter()
        .fold(MultiPart::mixed().multipart(text), |mixed, a| {
            mixed.singlepart(Attachment::new(a.filename.clone()).body(a.bytes.clone(), pdf.clone()))
        })
}

#[async_trait::async_trait]
impl Transport for SmtpTransport {
    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let message = self.message(m)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The server's own words may repeat the address or name the infrastructure: log them, show a
                // classified reason.
                tracing::debug!(error = %e, "smtp error");
                Err(classify(&e))
            }
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    if let Some(code) = e.status() {
        let permanent = e.is_permanent();
        return SendError {
            permanent,
            safe: format!(
                "the mail server answered {code} ({})",
                if permanent {
                    "refused"
                } else {
                    "try again later"
                }
            ),
        };
    }
    // A refused certificate arrives as an I/O error around rustls' own; look down the chain for it.
    let mut tls_refused = false;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        tls_refused |= cause.to_string().contains("certificate");
        source = cause.source();
    }
    let safe = if e.is_timeout() {
        "the mail server did not answer in time"
    } else if e.is_tls() || tls_refused {
        "a secure connection to the mail server failed"
    } else {
        "the mail server could not be reached"
    };
    SendError {
        permanent: false,
        safe: safe.into(),
    }
}
