//! The tenant itself.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    /// Overrides the deployment's billing tick for this tenant's sessions.
    pub billing_tick_sec: Option<i32>,
    /// The most a STAFF member may top up in cash at once (minor units).
    pub staff_cash_top_up_cap: i64,
    /// Whether each accepted boot of a charger sets it to send the energy readings billing needs.
    pub charger_meter_setup: bool,
    /// Whether a charger nobody registered joins as pending when it presents the onboarding key.
    pub accept_pending_chargers: bool,
    /// Whether the tenant has an onboarding key (only its hash is kept).
    pub has_charger_onboarding_key: bool,
    pub created_at: DateTime<Utc>,
}

pub async fn current(tx: &mut TenantTx) -> Result<Tenant> {
    let tenant: Option<Tenant> = sqlx::query_as(
        "select id, name, billing_tick_sec, staff_cash_top_up_cap, charger_meter_setup,
                unknown_chargers = 'pending' as accept_pending_chargers,
                charger_onboarding_key_hash is not null as has_charger_onboarding_key, created_at
         from tenant where id = $1",
    )
    .bind(tx.tenant())
    .fetch_optional(tx.conn())
    .await?;
    tenant.ok_or(Error::NotFound("tenant"))
}

/// Records a change of the tenant's own settings in its audit log (object `tenant`).
pub(crate) async fn record_change(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    action: &'static str,
    detail: serde_json::Value,
) -> Result<()> {
    let tenant = tx.tenant().0;
    crate::audit::record(
        tx,
        actor,
        crate::audit::Entry {
            action,
            object_type: "tenant",
            object_id: Some(tenant),
            detail,
        },
    )
    .await
}

/// The acting user's email (users are global; the caller has already been checked as a member).
pub async fn user_email(tx: &mut TenantTx, user_id: Uuid) -> Result<String> {
    let email: Option<String> = sqlx::query_scalar("select email from app_user where id = $1")
        .bind(user_id)
        .fetch_optional(tx.conn())
        .await?;
    email.ok_or(Error::NotFound("user"))
}

/// The billing tick for this tenant's sessions: its own override, else `default`.
pub async fn billing_tick(
    tx: &mut TenantTx,
    default: chrono::Duration,
) -> Result<chrono::Duration> {
    let own: Option<i32> = sqlx::query_scalar("select billing_tick_sec from tenant where id = $1")
        .bind(tx.tenant())
        .fetch_optional(tx.conn())
        .await?
        .flatten();
    Ok(own.map_or(default, |s| chrono::Duration::seconds(i64::from(s))))
}

/// Whether the tenant's chargers are set up at each accepted boot to send the readings billing needs.
pub async fn charger_meter_setup(tx: &mut TenantTx) -> Result<bool> {
    let on: Option<bool> =
        sqlx::query_scalar("select charger_meter_setup from tenant where id = $1")
            .bind(tx.tenant())
            .fetch_optional(tx.conn())
            .await?;
    on.ok_or(Error::NotFound("tenant"))
}

/// The most a STAFF member may top up in cash at once (minor units; default 20000).
pub async fn staff_cash_top_up_cap(tx: &mut TenantTx) -> Result<i64> {
    let cap: Option<i64> =
        sqlx::query_scalar("select staff_cash_top_up_cap from tenant where id = $1")
            .bind(tx.tenant())
            .fetch_optional(tx.conn())
            .await?;
    cap.ok_or(Error::NotFound("tenant"))
}

/// Sets the most a STAFF member may top up in cash at once. Owners only.
pub async fn set_staff_cash_top_up_cap(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    amount: i64,
) -> Result<Tenant> {
    if actor.role != crate::Role::Owner {
        return Err(Error::Forbidden("only an owner can change cash settings"));
    }
    if !(0..=crate::pricing::MAX_AMOUNT).contains(&amount) {
        return Err(Error::validation(
            "amount",
            format!(
                "must be between 0 and {} minor units",
                crate::pricing::MAX_AMOUNT
            ),
        ));
    }
    sqlx::query("update tenant set staff_cash_top_up_cap = $2 where id = $1")
        .bind(tx.tenant())
        .bind(amount)
        .execute(tx.conn())
        .await?;
    record_change(
        tx,
        actor,
        "tenant.set_staff_cash_top_up_cap",
        serde_json::json!({ "staff_cash_top_up_cap": amount }),
    )
    .await?;
    current(tx).await
}

/// Whether each accepted boot of the tenant's chargers sets them to send the energy readings billing needs
/// (`charging::calls::set_up_meters`). Owners only.
pub async fn set_charger_meter_setup(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    enabled: bool,
) -> Result<Tenant> {
    if actor.role != crate::Role::Owner {
        return Err(Error::Forbidden(
            "only an owner can change how chargers are set up",
        ));
    }
    sqlx::query("update tenant set charger_meter_setup = $2 where id = $1")
        .bind(tx.tenant())
        .bind(enabled)
        .execute(tx.conn())
        .await?;
    record_change(
        tx,
        actor,
        "tenant.set_charger_meter_setup",
        serde_json::json!({ "charger_meter_setup": enabled }),
    )
    .await?;
    current(tx).await
}

/// Sets (or, with `None`, clears) the tenant's billing tick. Owners only.
pub async fn set_billing_tick(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    seconds: Option<i32>,
) -> Result<Tenant> {
    if actor.role != crate::Role::Owner {
        return Err(Error::Forbidden(
            "only an owner can change billing settings",
        ));
    }
    if seconds.is_some_and(|s| !(1..=3600).contains(&s)) {
        return Err(Error::validation("seconds", "must be between 1 and 3600"));
    }
    sqlx::query("update tenant set billing_tick_sec = $2 where id = $1")
        .bind(tx.tenant())
        .bind(seconds)
        .execute(tx.conn())
        .await?;
    let detail = serde_json::json!({ "billing_tick_sec": seconds });
    record_change(tx, actor, "tenant.set_billing_tick", detail).await?;
    current(tx).await
}

/// How the tenant's messages and console look: its logo (an https URL it hosts) and its accent colour (`#rrggbb`).
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub struct Branding {
    pub logo_url: Option<String>,
    pub color: Option<String>,
}

/// The accent colour of messages and the console when a tenant has not chosen one.
pub const DEFAULT_BRAND_COLOR: &str = "#2b6cb0";

pub async fn branding(tx: &mut TenantTx) -> Result<Branding> {
    let branding: Option<Branding> = sqlx::query_as(
        "select brand_logo_url as logo_url, brand_color as color from tenant where id = $1",
    )
    .bind(tx.tenant())
    .fetch_optional(tx.conn())
    .await?;
    branding.ok_or(Error::NotFound("tenant"))
}

/// Checks a logo URL: absolute `https`, with a host, at most 500 characters, nothing a mail client or an HTML
/// attribute could read differently.
fn logo_url(value: &str) -> Result<String> {
    let bad = |why: &str| Error::validation("logoUrl", why.to_owned());
    if value.len() > 500 {
        return Err(bad("must be at most 500 characters"));
    }
    let url = reqwest::Url::parse(value)
        .map_err(|_| bad("must be a full address such as https://example.com/logo.png"))?;
    if url.scheme() != "https" || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(
            "must be an https address (mail clients refuse to load plain http images)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    let url = url.to_string();
    if url.len() > 500 || url.contains(['"', '<', '>', ' ']) {
        return Err(bad("must be at most 500 characters of a plain address"));
    }
    Ok(url)
}

fn brand_color(value: &str) -> Result<String> {
    let color = value.to_ascii_lowercase();
    let hex = color.strip_prefix('#').unwrap_or("");
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::validation(
            "color",
            "must be a colour as #rrggbb, for example #2b6cb0",
        ));
    }
    Ok(color)
}

fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Sets (an empty or missing value clears) the tenant's logo and accent colour. Owners only.
pub async fn set_branding(
    tx: &mut TenantTx,
    actor: &crate::Actor,
    logo_url: Option<&str>,
    color: Option<&str>,
) -> Result<Branding> {
    if actor.role != crate::Role::Owner {
        return Err(Error::Forbidden("only an owner can change the branding"));
    }
    let logo = given(logo_url).map(self::logo_url).transpose()?;
    let color = given(color).map(brand_color).transpose()?;
    sqlx::query("update tenant set brand_logo_url = $2, brand_color = $3 where id = $1")
        .bind(tx.tenant())
        .bind(&logo)
        .bind(&color)
        .execute(tx.conn())
        .await?;
    record_change(
        tx,
        actor,
        "tenant.set_branding",
        serde_json::json!({ "logo_url": logo, "color": color }),
    )
    .await?;
    branding(tx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logo_must_be_a_plain_https_address() {
        assert_eq!(
            logo_url("https://cdn.example.com/logo.png").unwrap(),
            "https://cdn.example.com/logo.png"
        );
        for bad in [
            "http://example.com/logo.png",
            "javascript:alert(1)",
            "logo.png",
            "https://user:pw@example.com/l.png",
            "data:image/png;base64,AAAA",
        ] {
            assert!(logo_url(bad).is_err(), "{bad}");
        }
        assert!(logo_url(&format!("https://e.com/{}", "a".repeat(500))).is_err());
        // Quotes and angle brackets come back percent-encoded, so the stored address is attribute-safe.
        assert_eq!(
            logo_url("https://e.com/a\"b<c>.png").unwrap(),
            "https://e.com/a%22b%3Cc%3E.png"
        );
    }

    #[test]
    fn a_colour_is_six_hex_digits() {
        assert_eq!(brand_color("#2B6CB0").unwrap(), "#2b6cb0");
        for bad in ["2b6cb0", "#fff", "#12345g", "red", "#1234567"] {
            assert!(brand_color(bad).is_err(), "{bad}");
        }
    }
}
