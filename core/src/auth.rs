//! Credentials: password hashing and rules, email rules, access tokens (JWT) and refresh tokens.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::Role;
use crate::throttle::Throttle;

const MIN_PASSWORD_LEN: usize = 10;
const MAX_PASSWORD_LEN: usize = 256;

/// Lower-cases and checks an email address: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn normalize_email(field: &'static str, email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let invalid = || Error::validation(field, "must be an email address like name@example.com");
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let domain_ok = !domain.contains('@')
        && domain.contains('.')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if local.is_empty() || local.len() > 64 || !domain_ok {
        return Err(invalid());
    }
    Ok(email)
}

/// Rejects passwords that are short, very long, made of one repeated character, or contain the email's name.
pub fn check_password(password: &str, email: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(Error::validation(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(Error::validation(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} characters"),
        ));
    }
    let distinct: std::collections::HashSet<char> = password.chars().collect();
    if distinct.len() < 4 {
        return Err(Error::validation(
            "password",
            "must use at least 4 different characters",
        ));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if local.len() >= 4 && lower.contains(local) {
        return Err(Error::validation(
            "password",
            "must not contain your email address",
        ));
    }
    const COMMON: [&str; 8] = [
        "password",
        "1234567890",
        "qwertyuiop",
        "letmein",
        "welcome",
        "iloveyou",
        "switchyard",
        "0123456789",
    ];
    let core = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    if COMMON.iter().any(|c| lower == *c || core == *c) {
        return Err(Error::validation(
            "password",
            "is too common; choose another",
        ));
    }
    Ok(())
}

/// Hashes with Argon2id on a blocking thread, under the throttle's concurrency cap: hashing takes tens of
/// milliseconds of CPU and ~19 MiB of memory by design.
pub async fn hash_password(throttle: &Throttle, password: String) -> Result<String> {
    throttle
        .hashing(move || {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(anyhow::anyhow!("hashing password: {e}")))
        })
        .await
}

/// Verifies on a blocking thread under the cap. With no stored hash it still spends the same work on a dummy hash,
/// so a missing account takes as long as a wrong password.
pub async fn verify_password(
    throttle: &Throttle,
    password: String,
    stored: Option<String>,
) -> Result<bool> {
    throttle
        .hashing(move || {
            let known = stored.is_some();
            let stored = stored.unwrap_or_else(dummy_hash);
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(anyhow::anyhow!("stored hash: {e}")))?;
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            Ok(known && matches)
        })
        .await
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(random_token().as_bytes(), &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        })
        .clone()
}

/// 32 random bytes, URL-safe base64: refresh and invitation tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for an opaque token: its SHA-256.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Who a token speaks for: a member with a role, or a patron (`"patron"`). On the wire it is the role's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenRole {
    Member(Role),
    Patron(PatronRole),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatronRole {
    Patron,
}

impl From<PatronRole> for TokenRole {
    fn from(role: PatronRole) -> Self {
        Self::Patron(role)
    }
}

impl From<Role> for TokenRole {
    fn from(role: Role) -> Self {
        Self::Member(role)
    }
}

/// Access-token claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: Uuid,
    /// The tenant the token acts in.
    pub tenant: Uuid,
    /// The role when the token was issued (the database's current role is what counts), or `patron`.
    pub role: TokenRole,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs and checks access tokens: HS256 only, issuer and audience checked.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    /// Access-token lifetime in seconds.
    pub access_ttl_secs: i64,
    /// Refresh-token lifetime in seconds (sliding: each refresh issues a token good for this long) ...
    pub refresh_ttl_secs: i64,
    /// ... within the family's absolute lifetime, counted from the login (30 days unless set).
    pub refresh_family_ttl_secs: i64,
}

impl TokenKeys {
    pub fn new(
        secret: &SecretString,
        issuer: &str,
        audience: &str,
        access_ttl_secs: i64,
        refresh_ttl_secs: i64,
    ) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            access_ttl_secs,
            refresh_ttl_secs,
            refresh_family_ttl_secs: 30 * 24 * 3600,
        }
    }

    pub fn issue(&self, user: Uuid, tenant: Uuid, role: impl Into<TokenRole>) -> Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            tenant,
            role: role.into(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.access_ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(e.into()))
    }

    /// Checks signature, algorithm, expiry, issuer and audience.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        Error::Unauthenticated("the access token has expired; refresh it")
                    }
                    _ => Error::Unauthenticated("the access token is not valid"),
                }
            })
    }
}
