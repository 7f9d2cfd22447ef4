//! Secrets kept in the database (a tenant's payment provider keys), sealed with the deployment's `SECRETS_KEY`:
//! AES-256-GCM with a fresh 96-bit nonce per value, and the owning tenant's id as associated data, so a sealed value
//! copied to another tenant's row does not open. Stored as `nonce ‖ ciphertext ‖ tag`.

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Seals and opens secrets with one 32-byte key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// From `SECRETS_KEY`: 32 random bytes in standard base64 (`openssl rand -base64 32`).
    pub fn from_base64(encoded: &str) -> anyhow::Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| anyhow::anyhow!("SECRETS_KEY must be base64 (openssl rand -base64 32)"))?;
        if bytes.len() != 32 {
            anyhow::bail!(
                "SECRETS_KEY must be 32 bytes in base64 (openssl rand -base64 32), not {} bytes",
                bytes.len()
            );
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| anyhow::anyhow!("SECRETS_KEY is not a usable AES-256 key"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, tenant: Uuid, plain: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| Error::Internal(anyhow::anyhow!("no randomness for a nonce")))?;
        let mut sealed = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(tenant.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| Error::Internal(anyhow::anyhow!("sealing a secret failed")))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, tenant: Uuid, sealed: &[u8]) -> Result<String> {
        let broken = || {
            Error::Internal(anyhow::anyhow!(
                "a stored secret does not open with SECRETS_KEY (another key, or another tenant's value)"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(broken());
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken())?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(tenant.as_bytes()), &mut buffer)
            .map_err(|_| broken())?;
        String::from_utf8(plain.to_vec()).map_err(|_| broken())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn a_sealed_secret_opens_for_its_tenant_only_and_never_reads_as_itself() {
        let sealer = Sealer::from_base64(KEY).unwrap();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = sealer.seal(a, "sk_test_secret").unwrap();
        assert!(!sealed.windows(14).any(|w| w == b"sk_test_secret"));
        assert_eq!(sealer.open(a, &sealed).unwrap(), "sk_test_secret");
        assert!(sealer.open(b, &sealed).is_err(), "another tenant");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(a, &tampered).is_err(), "tampered");
        assert_ne!(
            sealer.seal(a, "sk_test_secret").unwrap(),
            sealed,
            "a fresh nonce each time"
        );
        let other = Sealer::from_base64("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=").unwrap();
        assert!(other.open(a, &sealed).is_err(), "another key");
    }

    #[test]
    fn the_key_must_be_32_bytes_of_base64() {
        assert!(Sealer::from_base64("c2hvcnQ=").is_err());
        assert!(Sealer::from_base64("not base64!").is_err());
    }
}
