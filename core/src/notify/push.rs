//! Push messages: Firebase Cloud Messaging's HTTP v1 API (Android, web) and Apple's APNs provider API (iOS), each at
//! a configurable base URL. A push recipient is `fcm:<token>` or `apns:<token>`, as the device registered it.
//!
//! FCM authenticates with an OAuth 2 access token minted from a service account: a JWT signed with the account's
//! RSA key (RS256) is exchanged at the account's `token_uri`, and the token is reused until shortly before it
//! expires. APNs authenticates each request with a provider JWT signed with the team's `.p8` key (ES256), renewed
//! every 50 minutes. APNs speaks HTTP/2 (negotiated over TLS).

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::deliver::{Outgoing, SendError, Transport};
use super::sms::{http_error, http_timeout, transport_error, url_ok};

/// A Google service account, as its JSON key file has it.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    pub token_uri: String,
}

/// `FCM_*` settings.
#[derive(Debug, Clone)]
pub struct FcmSettings {
    pub api_base: String,
    pub project_id: String,
    pub account: ServiceAccount,
}

/// `APNS_*` settings.
#[derive(Debug, Clone)]
pub struct ApnsSettings {
    pub api_base: String,
    pub team_id: String,
    pub key_id: String,
    pub key_pem: String,
    /// The app's bundle id.
    pub topic: String,
}

/// The push settings; either platform may be missing.
#[derive(Debug, Clone, Default)]
pub struct PushSettings {
    pub fcm: Option<FcmSettings>,
    pub apns: Option<ApnsSettings>,
    pub timeout: Duration,
}

impl PushSettings {
    /// `None` when neither `FCM_PROJECT_ID` nor `APNS_KEY_ID` is set.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Self>> {
        let fcm = match var("FCM_PROJECT_ID") {
            None => None,
            Some(project_id) => {
                let file = var("FCM_SERVICE_ACCOUNT_FILE").ok_or_else(|| {
                    anyhow::anyhow!("FCM_SERVICE_ACCOUNT_FILE is required with FCM_PROJECT_ID")
                })?;
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("FCM_SERVICE_ACCOUNT_FILE {file:?}: {e}"))?;
                let account: ServiceAccount = serde_json::from_str(&text).map_err(|_| {
                    anyhow::anyhow!(
                        "FCM_SERVICE_ACCOUNT_FILE is not a service-account key (client_email, private_key, token_uri)"
                    )
                })?;
                EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|_| {
                    anyhow::anyhow!(
                        "FCM_SERVICE_ACCOUNT_FILE: private_key is not an RSA key in PEM"
                    )
                })?;
                let api_base =
                    var("FCM_API_BASE").unwrap_or_else(|| "https://fcm.googleapis.com".into());
                url_ok("FCM_API_BASE", &api_base)?;
                url_ok("the service account's token_uri", &account.token_uri)?;
                Some(FcmSettings {
                    api_base,
                    project_id,
                    account,
                })
            }
        };
        let apns = match var("APNS_KEY_ID") {
            None => None,
            Some(key_id) => {
                let required = |k: &str| {
                    var(k).ok_or_else(|| anyhow::anyhow!("{k} is required with APNS_KEY_ID"))
                };
                let file = required("APNS_KEY_FILE")?;
                let key_pem = std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("APNS_KEY_FILE {file:?}: {e}"))?;
                EncodingKey::from_ec_pem(key_pem.as_bytes()).map_err(|_| {
                    anyhow::anyhow!("APNS_KEY_FILE is not an EC (P-256) private key in PEM (.p8)")
                })?;
                let api_base =
                    var("APNS_API_BASE").unwrap_or_else(|| "https://api.push.apple.com".into());
                url_ok("APNS_API_BASE", &api_base)?;
                Some(ApnsSettings {
                    api_base,
                    team_id: required("APNS_TEAM_ID")?,
                    key_id,
                    key_pem,
                    topic: required("APNS_TOPIC")?,
                })
            }
        };
        if fcm.is_none() && apns.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            fcm,
            apns,
            timeout: http_timeout(&var)?,
        }))
    }
}

/// A bearer token and when to stop using it.
type Cached = Mutex<Option<(String, Instant)>>;

/// Sends push messages to FCM and APNs.
pub struct PushTransport {
    client: reqwest::Client,
    settings: PushSettings,
    fcm_token: Cached,
    apns_token: Cached,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn broken(why: &str) -> SendError {
    SendError {
        permanent: false,
        safe: why.to_owned(),
    }
}

impl PushTransport {
    pub fn new(settings: PushSettings) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(settings.timeout)
                .build()?,
            settings,
            fcm_token: Mutex::new(None),
            apns_token: Mutex::new(None),
        })
    }

    async fn fcm_access_token(&self, fcm: &FcmSettings) -> Result<String, SendError> {
        let mut cached = self.fcm_token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let iat = now_secs();
        let claims = json!({
            "iss": fcm.account.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": fcm.account.token_uri,
            "iat": iat,
            "exp": iat + 3600,
        });
        let key = EncodingKey::from_rsa_pem(fcm.account.private_key.as_bytes())
            .map_err(|_| broken("the FCM service account's key is unusable"))?;
        let assertion = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
            .map_err(|_| broken("the FCM service account's key is unusable"))?;
        let response = self
            .client
            .post(&fcm.account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| transport_error("FCM token service", &e))?;
        if !response.status().is_success() {
            let mut e = http_error("FCM token service", response.status());
            e.permanent = false;
            return Err(e);
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|_| broken("the FCM token service answered something unexpected"))?;
        // Renewed a minute before it expires.
        let life = answer.expires_in.unwrap_or(3600).saturating_sub(60).max(1);
        *cached = Some((
            answer.access_token.clone(),
            Instant::now() + Duration::from_secs(life),
        ));
        Ok(answer.access_token)
    }

    async fn apns_jwt(&self, apns: &ApnsSettings) -> Result<String, SendError> {
        let mut cached = self.apns_token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let key = EncodingKey::from_ec_pem(apns.key_pem.as_bytes())
            .map_err(|_| broken("the APNs key is unusable"))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(apns.key_id.clone());
        let token = jsonwebtoken::encode(
            &header,
            &json!({ "iss": apns.team_id, "iat": now_secs() }),
            &key,
        )
        .map_err(|_| broken("the APNs key is unusable"))?;
        // Apple refuses provider tokens older than an hour and renewed more often than every 20 minutes.
        *cached = Some((token.clone(), Instant::now() + Duration::from_secs(50 * 60)));
        Ok(token)
    }

    async fn fcm(&self, fcm: &FcmSettings, device: &str, m: &Outgoing) -> Result<(), SendError> {
        let access = self.fcm_access_token(fcm).await?;
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            fcm.api_base.trim_end_matches('/'),
            fcm.project_id
        );
        let body = json!({
            "message": {
                "token": device,
                "notification": { "title": m.tenant_name, "body": m.rendered.subject },
                "data": { "kind": m.kind.as_str(), "notification_id": m.id.to_string() },
            }
        });
        let response = self
            .client
            .post(url)
            .bearer_auth(access)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error("push service", &e))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // A revoked or expired access token: mint a new one next time.
            *self.fcm_token.lock().await = None;
        }
        if response.status().is_success() {
            Ok(())
        } else {
            Err(http_error("push service", response.status()))
        }
    }

    async fn apns(&self, apns: &ApnsSettings, device: &str, m: &Outgoing) -> Result<(), SendError> {
        let jwt = self.apns_jwt(apns).await?;
        let url = format!("{}/3/device/{device}", apns.api_base.trim_end_matches('/'));
        let body = json!({
            "aps": { "alert": { "title": m.tenant_name, "body": m.rendered.subject }, "sound": "default" },
            "kind": m.kind.as_str(),
            "notification_id": m.id.to_string(),
        });
        let response = self
            .client
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &apns.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-id", m.id.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error("push service", &e))?;
        if response.status() == reqwest::StatusCode::FORBIDDEN {
            *self.apns_token.lock().await = None;
        }
        if response.status().is_success() {
            Ok(())
        } else {
            Err(http_error("push service", response.status()))
        }
    }
}

#[async_trait::async_trait]
impl Transport for PushTransport {
    async fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let unconfigured = |platform: &str| SendError {
            permanent: true,
            safe: format!("no {platform} push service is configured"),
        };
        match m.recipient.split_once(':') {
            Some(("fcm", device)) => match &self.settings.fcm {
                Some(fcm) => self.fcm(fcm, device, m).await,
                None => Err(unconfigured("FCM")),
            },
            Some(("apns", device)) => match &self.settings.apns {
                Some(apns) => self.apns(apns, device, m).await,
                None => Err(unconfigured("APNs")),
            },
            _ => Err(SendError {
                permanent: true,
                safe: "not a push recipient".into(),
            }),
        }
    }
}
