//! The object store: any S3-compatible service through `aws-sdk-s3`. Keys start with the tenant's id, and objects
//! are read back only through short-lived presigned URLs, which [`Store::link`] hands out only for keys of the
//! tenant asking (the callers check that the asker may see the document first).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::db::TenantId;
use crate::error::{Error, Result};

/// The object store's settings (`S3_*`, `DOCUMENT_URL_TTL_SECS`). Without `S3_BUCKET` documents are off: every
/// request for one answers `503 unavailable` saying so.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `S3_ENDPOINT`: the service's base URL (`http://127.0.0.1:9000`); unset, AWS's own endpoint for the region.
    pub endpoint: Option<String>,
    /// `S3_REGION` (`us-east-1`).
    pub region: String,
    /// `S3_BUCKET`.
    pub bucket: Option<String>,
    /// `S3_FORCE_PATH_STYLE`: `http://host/bucket/key` instead of `http://bucket.host/key` (most self-hosted
    /// S3-compatible servers need it).
    pub path_style: bool,
    /// `S3_ACCESS_KEY_ID` / `S3_SECRET_ACCESS_KEY`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// `DOCUMENT_URL_TTL_SECS`: how long a presigned download URL works (default 300 s, at most a day).
    pub url_ttl: Duration,
    /// `S3_CREATE_BUCKET`: create the bucket at start when it is missing (development; off by default).
    pub create_bucket: bool,
}

impl StoreSettings {
    /// Reads the settings through `var` (a lookup that has already trimmed and dropped empty values).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let flag = |key: &str| -> anyhow::Result<bool> {
            match var(key).as_deref() {
                None | Some("false") | Some("0") => Ok(false),
                Some("true") | Some("1") => Ok(true),
                Some(other) => anyhow::bail!("{key} must be true or false, not {other:?}"),
            }
        };
        let ttl = match var("DOCUMENT_URL_TTL_SECS") {
            None => 300,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .with_context(|| {
                    format!("DOCUMENT_URL_TTL_SECS must be between 1 and 86400 seconds, not {v:?}")
                })?,
        };
        let settings = Self {
            endpoint: var("S3_ENDPOINT"),
            region: var("S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            bucket: var("S3_BUCKET"),
            path_style: flag("S3_FORCE_PATH_STYLE")?,
            access_key_id: var("S3_ACCESS_KEY_ID"),
            secret_access_key: var("S3_SECRET_ACCESS_KEY").map(SecretString::from),
            url_ttl: Duration::from_secs(ttl),
            create_bucket: flag("S3_CREATE_BUCKET")?,
        };
        if let Some(endpoint) = &settings.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                anyhow::bail!("S3_ENDPOINT must be an http:// or https:// URL, not {endpoint:?}");
            }
        }
        if settings.bucket.is_some()
            && (settings.access_key_id.is_none() || settings.secret_access_key.is_none())
        {
            anyhow::bail!("S3_BUCKET is set: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY too");
        }
        Ok(settings)
    }
}

/// A presigned download link.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Link {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    bucket: String,
    url_ttl: Duration,
}

/// The object store, or none (documents off). Cheap to clone.
#[derive(Clone, Default)]
pub struct Store(Option<Arc<Inner>>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Store(off)"),
            Some(inner) => write!(f, "Store(bucket {})", inner.bucket),
        }
    }
}

/// The object key of a document: `<tenant>/<kind>/<id>.pdf`.
pub fn key(tenant: TenantId, kind: &str, id: Uuid) -> String {
    format!("{tenant}/{kind}/{id}.pdf")
}

impl Store {
    /// Documents off.
    pub fn off() -> Self {
        Self(None)
    }

    /// The store the settings describe (off without a bucket). Nothing is contacted until the first use, except
    /// with `create_bucket`, which the caller asks for with [`Store::prepare`].
    pub fn new(settings: &StoreSettings) -> Self {
        let (Some(bucket), Some(id), Some(secret)) = (
            settings.bucket.clone(),
            settings.access_key_id.clone(),
            settings.secret_access_key.as_ref(),
        ) else {
            return Self(None);
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = Credentials::new(
            id,
            secret.expose_secret().to_owned(),
            None,
            None,
            "switchyard-settings",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            .http_client(http);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint.trim_end_matches('/'));
        }
        Self(Some(Arc::new(Inner {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket,
            url_ttl: settings.url_ttl,
        })))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    fn inner(&self) -> Result<&Inner> {
        self.0.as_deref().ok_or_else(|| {
            Error::Unavailable(anyhow::anyhow!(
                "document storage is not configured (S3_BUCKET is unset)"
            ))
        })
    }

    /// Creates the bucket when it is missing (development and tests: `S3_CREATE_BUCKET=true`).
    pub async fn prepare(&self) -> anyhow::Result<()> {
        let Some(inner) = self.0.as_deref() else {
            return Ok(());
        };
        if inner
            .client
            .head_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match inner
            .client
            .create_bucket()
            .bucket(&inner.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = aws_sdk_s3::Error::from(e);
                match e {
                    aws_sdk_s3::Error::BucketAlreadyOwnedByYou(_) => Ok(()),
                    other => Err(anyhow::Error::from(other)
                        .context(format!("while creating the bucket {}", inner.bucket))),
                }
            }
        }
    }

    /// Stores a PDF under `key` (overwriting: keys are derived from ids, so a retried write writes the same bytes).
    pub async fn put_pdf(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let inner = self.inner()?;
        let started = std::time::Instant::now();
        let outcome = inner
            .client
            .put_object()
            .bucket(&inner.bucket)
            .key(key)
            .content_type("application/pdf")
            .body(ByteStream::from(bytes))
            .send()
            .await;
        metrics::histogram!("documents_store_seconds", "op" => "put")
            .record(started.elapsed().as_secs_f64());
        outcome.map_err(|e| {
            Error::Unavailable(
                anyhow::Error::from(aws_sdk_s3::Error::from(e))
                    .context(format!("while storing {key}")),
            )
        })?;
        Ok(())
    }

    /// Reads an object back (for delivery as an email attachment). `tenant` must own the key.
    pub async fn get(&self, tenant: TenantId, key: &str) -> Result<Vec<u8>> {
        let inner = self.inner()?;
        own(tenant, key)?;
        let object = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| {
                Error::Unavailable(
                    anyhow::Error::from(aws_sdk_s3::Error::from(e))
                        .context(format!("while reading {key}")),
                )
            })?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| Error::Unavailable(anyhow::Error::from(e)))?;
        Ok(bytes.into_bytes().to_vec())
    }

    /// A presigned GET URL for `key`, valid for `DOCUMENT_URL_TTL_SECS`. Only for the tenant the key belongs to.
    pub async fn link(&self, tenant: TenantId, key: &str) -> Result<Link> {
        let inner = self.inner()?;
        own(tenant, key)?;
        let presigning = PresigningConfig::expires_in(inner.url_ttl)
            .map_err(|e| Error::Internal(anyhow::Error::from(e)))?;
        let request = inner
            .client
            .get_object()
            .bucket(&inner.bucket)
            .key(key)
            .response_content_type("application/pdf")
            .presigned(presigning)
            .await
            .map_err(|e| Error::Internal(anyhow::Error::from(aws_sdk_s3::Error::from(e))))?;
        let ttl = chrono::Duration::from_std(inner.url_ttl)
            .map_err(|e| Error::Internal(anyhow::Error::from(e)))?;
        Ok(Link {
            url: request.uri().to_owned(),
            expires_at: Utc::now() + ttl,
        })
    }
}

/// Refuses (as an internal error: a bug, never a client's doing) a key outside the tenant's prefix.
fn own(tenant: TenantId, key: &str) -> Result<()> {
    if key.starts_with(&format!("{tenant}/")) {
        Ok(())
    } else {
        Err(Error::Internal(anyhow::anyhow!(
            "object key {key} is not under tenant {tenant}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> anyhow::Result<StoreSettings> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StoreSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn documents_are_off_without_a_bucket_and_a_bucket_needs_credentials() {
        let s = settings(&[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!Store::new(&s).is_on());
        assert_eq!(s.url_ttl, Duration::from_secs(300));
        let err = settings(&[("S3_BUCKET", "docs")]).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("S3_ACCESS_KEY_ID"), "{err}");
        let err = settings(&[("S3_ENDPOINT", "localhost:9000")])
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("S3_ENDPOINT"), "{err}");
        let err = settings(&[("DOCUMENT_URL_TTL_SECS", "0")])
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("DOCUMENT_URL_TTL_SECS"), "{err}");
    }

    #[test]
    fn keys_start_with_the_tenant_and_other_tenants_keys_are_refused() {
        let a = TenantId(Uuid::new_v4());
        let b = TenantId(Uuid::new_v4());
        let k = key(a, "receipts", Uuid::nil());
        assert!(k.starts_with(&format!("{a}/receipts/")));
        assert!(own(a, &k).is_ok());
        assert!(own(b, &k).is_err());
    }
}
