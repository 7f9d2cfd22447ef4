//! The idempotency store behind every state-changing `POST`: the first request with a key runs and its response is
//! stored in the same transaction; a repeat with the same body replays it; a repeat with another body is refused.
//! A concurrent duplicate waits on the first one's row and then replays, so duplicates have one effect.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::db::TenantTx;
use crate::error::{Error, Result};

/// How long a key is remembered.
pub const TTL_HOURS: i32 = 24;

/// What to do with a request.
pub enum Begin {
    /// First time: run it, then call [`finish`] in the same transaction.
    Fresh,
    /// Seen before: answer this.
    Replay { status: u16, body: Value },
}

/// The fingerprint of a request body (canonical JSON: serde_json sorts object keys).
pub fn fingerprint(body: &Value) -> Vec<u8> {
    Sha256::digest(body.to_string().as_bytes()).to_vec()
}

/// The fingerprint of a member's request: a key replays only to the member who first sent it, who was allowed to
/// see its answer. Another member sending the same key and body is refused as a reused key, never shown the answer
/// (the scope check of a route runs after the replay would have been answered).
pub fn fingerprint_by(user: uuid::Uuid, body: &Value) -> Vec<u8> {
    fingerprint(&serde_json::json!({ "by": user, "request": body }))
}

pub fn check_key(key: &str) -> Result<&str> {
    let key = key.trim();
    if key.is_empty() || key.len() > 200 || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::validation(
            "Idempotency-Key",
            "must be 1 to 200 visible ASCII characters, e.g. a UUID",
        ));
    }
    Ok(key)
}

pub async fn begin(tx: &mut TenantTx, scope: &str, key: &str, fingerprint: &[u8]) -> Result<Begin> {
    let key = check_key(key)?;
    let tenant = tx.tenant();
    // A key whose record expired starts afresh, in the same statement that claims a new one.
    let fresh: Option<String> = sqlx::query_scalar(
        "insert into idempotency_key (tenant_id, key, scope, request_hash, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(hours => $5))
         on conflict (tenant_id, scope, key) do update
           set request_hash = excluded.request_hash, status = null, response = null, created_at = now(),
               expires_at = excluded.expires_at
           where idempotency_key.expires_at < now()
         returning key",
    )
    .bind(tenant)
    .bind(key)
    .bind(scope)
    .bind(fingerprint)
    .bind(TTL_HOURS)
    .fetch_optional(tx.conn())
    .await?;
    if fresh.is_some() {
        return Ok(Begin::Fresh);
    }
    let (hash, status, response): (Vec<u8>, Option<i16>, Option<Value>) = sqlx::query_as(
        "select request_hash, status, response from idempotency_key where tenant_id = $1 and scope = $2 and key = $3",
    )
    .bind(tenant)
    .bind(scope)
    .bind(key)
    .fetch_one(tx.conn())
    .await?;
    if hash != fingerprint {
        return Err(Error::IdempotencyKeyReused);
    }
    match (status, response) {
        (Some(status), Some(body)) => Ok(Begin::Replay {
            status: status as u16,
            body,
        }),
        _ => Err(Error::Conflict(
            "a request with this Idempotency-Key is still being processed; retry shortly".into(),
        )),
    }
}

pub async fn finish(
    tx: &mut TenantTx,
    scope: &str,
    key: &str,
    status: u16,
    body: &Value,
) -> Result<()> {
    sqlx::query("update idempotency_key set status = $4, response = $5 where tenant_id = $1 and scope = $2 and key = $3")
        .bind(tx.tenant())
        .bind(scope)
        .bind(key.trim())
        .bind(status as i16)
        .bind(body)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// The SHA-256 of `text`, in hex: how a key too long for where it goes (a provider's idempotency key, a journal's
/// key) is carried, fixed by the key it stands for.
pub fn hex_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
