//! QR codes printed on stations and at venue entrances. A payload names what it is for and carries a random
//! token: `switchyard://s/<tenant>/<station>/<token>` (a station), `switchyard://v/<tenant>/<venue>/<token>` (a
//! venue). The token is 244 random bits drawn by Postgres; rotating it (managers) makes every printed code of
//! that object answer `not_found`, so a code that was copied elsewhere can be withdrawn.

use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::stations::{self, Station};
use crate::venues::{self, Venue};

const SCHEME: &str = "switchyard://";

/// What a code is printed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Station,
    Venue,
}

impl Target {
    fn letter(self) -> &'static str {
        match self {
            Target::Station => "s",
            Target::Venue => "v",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Target::Station => "station",
            Target::Venue => "venue",
        }
    }

    /// The column that holds the venue a code belongs to (for the member's venue scope).
    fn venue_column(self) -> &'static str {
        match self {
            Target::Station => "venue_id",
            Target::Venue => "id",
        }
    }
}

/// A parsed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub target: Target,
    pub tenant: Uuid,
    pub id: Uuid,
    pub token: String,
}

/// The payload text for an object.
pub fn format(target: Target, tenant: Uuid, id: Uuid, token: &str) -> String {
    format!("{SCHEME}{}/{tenant}/{id}/{token}", target.letter())
}

/// Reads a payload; anything that is not one answers `validation_failed` on `field`.
pub fn parse(field: &'static str, text: &str) -> Result<Payload> {
    let bad = || {
        Error::validation(
            field,
            "this is not a Switchyard QR code; scan the code on the station or at the door",
        )
    };
    let rest = text.trim().strip_prefix(SCHEME).ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [letter, tenant, id, token] = parts.as_slice() else {
        return Err(bad());
    };
    let target = match *letter {
        "s" => Target::Station,
        "v" => Target::Venue,
        _ => return Err(bad()),
    };
    let token_ok =
        (32..=128).contains(&token.len()) && token.chars().all(|c| c.is_ascii_alphanumeric());
    if !token_ok {
        return Err(bad());
    }
    Ok(Payload {
        target,
        tenant: tenant.parse().map_err(|_| bad())?,
        id: id.parse().map_err(|_| bad())?,
        token: (*token).to_owned(),
    })
}

/// The current payload of a station or venue of this tenant in `actor`'s venues (`not_found` for others).
pub async fn payload(tx: &mut TenantTx, actor: &Actor, target: Target, id: Uuid) -> Result<String> {
    let sql = format!(
        "select qr_token, {} from {} where tenant_id = $1 and id = $2",
        target.venue_column(),
        target.table()
    );
    let row: Option<(String, Uuid)> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let (token, venue) = row.ok_or(Error::NotFound(target.table()))?;
    actor.check_venue(venue, target.table())?;
    Ok(format(target, tx.tenant().0, id, &token))
}

/// Draws a new token for a station's or venue's code: the old payload stops working at once. Managers.
pub async fn rotate(tx: &mut TenantTx, actor: &Actor, target: Target, id: Uuid) -> Result<String> {
    actor.require_manager()?;
    // The member's venue scope first: another venue's code is not found, and is not rotated.
    payload(tx, actor, target, id).await?;
    let sql = format!(
        "update {} set qr_token = default where tenant_id = $1 and id = $2 returning qr_token",
        target.table()
    );
    let token: Option<String> = sqlx::query_scalar(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let token = token.ok_or(Error::NotFound(target.table()))?;
    let entry = Entry {
        action: match target {
            Target::Station => "station.rotate_qr",
            Target::Venue => "venue.rotate_qr",
        },
        object_type: target.table(),
        object_id: Some(id),
        detail: serde_json::json!({}),
    };
    audit::record(tx, actor, entry).await?;
    Ok(format(target, tx.tenant().0, id, &token))
}

/// The id a scanned payload names, if it is a current code of this tenant for `target`; `not_found` otherwise
/// (another tenant's code, a rotated one, a venue's code where a station's is wanted).
async fn resolve(
    tx: &mut TenantTx,
    target: Target,
    field: &'static str,
    text: &str,
) -> Result<Uuid> {
    let payload = parse(field, text)?;
    if payload.target != target || payload.tenant != tx.tenant().0 {
        return Err(Error::NotFound(target.table()));
    }
    let sql = format!(
        "select id from {} where tenant_id = $1 and id = $2 and qr_token = $3",
        target.table()
    );
    let found: Option<Uuid> = sqlx::query_scalar(&sql)
        .bind(tx.tenant())
        .bind(payload.id)
        .bind(&payload.token)
        .fetch_optional(tx.conn())
        .await?;
    found.ok_or(Error::NotFound(target.table()))
}

/// The station a scanned payload names.
pub async fn station(tx: &mut TenantTx, field: &'static str, text: &str) -> Result<Station> {
    let id = resolve(tx, Target::Station, field, text).await?;
    stations::get(tx, id).await
}

/// The venue a scanned payload names.
pub async fn venue(tx: &mut TenantTx, field: &'static str, text: &str) -> Result<Venue> {
    let id = resolve(tx, Target::Venue, field, text).await?;
    venues::get(tx, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_back_what_was_formatted_and_nothing_else_reads() {
        let (tenant, id) = (Uuid::new_v4(), Uuid::new_v4());
        let token = "a".repeat(64);
        let text = format(Target::Station, tenant, id, &token);
        assert_eq!(
            parse("qr", &text).ok(),
            Some(Payload {
                target: Target::Station,
                tenant,
                id,
                token
            })
        );
        let bad_ones: Vec<String> = vec![
            String::new(),
            "https://example.com".into(),
            text.replace("://s/", "://x/"),
            format!("{text}/extra"),
            format(Target::Venue, tenant, id, "short"),
            format(Target::Venue, tenant, id, &"é".repeat(40)),
            text.replace(&tenant.to_string(), "not-a-uuid"),
        ];
        for bad in &bad_ones {
            assert!(
                matches!(parse("qr", bad), Err(Error::Validation { field: "qr", .. })),
                "{bad}"
            );
        }
    }
}
