//! Patrons: a tenant's end customers, their RFID tags and their wallets.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::ledger::{self, Journal, Owner, Posted, Purpose};
use crate::model::Actor;
use crate::validate;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Patron {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub tier: String,
    pub walk_in: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct NewPatron {
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub tier: Option<String>,
}

const COLUMNS: &str = "id, display_name, email, phone, tier, walk_in, created_at";

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Patron> {
    let sql = format!("select {COLUMNS} from patron where tenant_id = $1 and id = $2");
    let patron: Option<Patron> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    patron.ok_or(Error::NotFound("patron"))
}

/// [`get`], and the patron's safety flag with it: `Some(reason)` when staff flagged the patron (the reason is
/// optional), `None` when not.
pub async fn get_with_flag(
    tx: &mut TenantTx,
    id: Uuid,
) -> Result<(Patron, Option<Option<String>>)> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        patron: Patron,
        flagged: bool,
        flag_reason: Option<String>,
    }
    let sql = format!(
        "select {COLUMNS}, flagged_at is not null as flagged, flag_reason from patron where tenant_id = $1 and id = $2"
    );
    let row: Option<Row> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let row = row.ok_or(Error::NotFound("patron"))?;
    Ok((row.patron, row.flagged.then_some(row.flag_reason)))
}

pub async fn list(tx: &mut TenantTx, search: Option<&str>, limit: i64) -> Result<Vec<Patron>> {
    let mut query =
        sqlx::QueryBuilder::new(format!("select {COLUMNS} from patron where tenant_id = "));
    query.push_bind(tx.tenant());
    if let Some(search) = search {
        query
            .push(" and (display_name ilike '%' || ")
            .push_bind(search)
            .push(" || '%' or email ilike '%' || ")
            .push_bind(search)
            .push(" || '%')");
    }
    query
        .push(" order by lower(display_name), id limit ")
        .push_bind(limit.clamp(1, 500));
    Ok(query.build_query_as().fetch_all(tx.conn()).await?)
}

/// Staff create patrons: regulars with contact details, or anonymous walk-ins.
pub async fn create(
    tx: &mut TenantTx,
    actor: &Actor,
    input: NewPatron,
    walk_in: bool,
) -> Result<Patron> {
    let name = validate::text("displayName", &input.display_name, 1, 100)?;
    let email = input
        .email
        .as_deref()
        .map(|e| crate::auth::normalize_email("email", e))
        .transpose()?;
    let phone = input
        .phone
        .as_deref()
        .map(|p| validate::text("phone", p, 3, 32))
        .transpose()?;
    let tier = validate::text("tier", input.tier.as_deref().unwrap_or("standard"), 1, 32)?;
    // A tier is a discount: staff create standard patrons, as only a manager may change a tier afterwards.
    if tier != "standard" {
        actor.require_manager()?;
    }
    let sql = format!(
        "insert into patron (tenant_id, id, display_name, email, phone, tier, walk_in) values ($1, $2, $3, $4, $5, $6, $7)
         returning {COLUMNS}"
    );
    let patron: Patron = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(email)
        .bind(phone)
        .bind(tier)
        .bind(walk_in)
        .fetch_one(tx.conn())
        .await?;
    let detail = serde_json::json!({ "walk_in": walk_in, "tier": patron.tier });
    audit::record(
        tx,
        actor,
        Entry {
            action: "patron.create",
            object_type: "patron",
            object_id: Some(patron.id),
            detail,
        },
    )
    .await?;
    Ok(patron)
}

pub async fn set_tier(tx: &mut TenantTx, actor: &Actor, id: Uuid, tier: &str) -> Result<Patron> {
    actor.require_manager()?;
    get(tx, id).await?;
    let tier = validate::text("tier", tier, 1, 32)?;
    sqlx::query("update patron set tier = $3 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(id)
        .bind(tier)
        .execute(tx.conn())
        .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "patron.set_tier",
            object_type: "patron",
            object_id: Some(id),
            detail: serde_json::json!({ "tier": tier }),
        },
    )
    .await?;
    get(tx, id).await
}

/// Links an RFID tag to a patron. A tag belongs to one patron per tenant.
pub async fn add_rfid_tag(tx: &mut TenantTx, actor: &Actor, id: Uuid, uid: &str) -> Result<()> {
    get(tx, id).await?;
    // Upper-cased before it is measured: some letters grow ("ß" is "SS").
    let upper = uid.to_uppercase();
    let uid = validate::text(
        "uid",
        &upper,
        crate::charging::tags::MIN_UID,
        crate::charging::tags::MAX_UID,
    )?;
    if uid.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::validation(
            "uid",
            "a tag's uid holds no spaces or control characters",
        ));
    }
    let version = crate::charging::tags::next_version(tx).await?;
    // A tag kept blocked and unowned (first seen in a charger's offline transaction) can be given to a patron.
    let linked = sqlx::query(
        "insert into rfid_tag (tenant_id, uid, patron_id, version, no_credit)
         values ($1, $2, $3, $4, coalesce(patron_lacks_credit($1, $3), false))
         on conflict (tenant_id, uid) do update set patron_id = excluded.patron_id, blocked = false,
           version = excluded.version, no_credit = excluded.no_credit, updated_at = now()
         where rfid_tag.patron_id is null",
    )
    .bind(tx.tenant())
    .bind(uid)
    .bind(id)
    .bind(version)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if linked == 0 {
        return Err(Error::Conflict(
            "this RFID tag already belongs to a patron".into(),
        ));
    }
    crate::charging::tags::tags_changed(tx).await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "patron.add_rfid_tag",
            object_type: "patron",
            object_id: Some(id),
            detail: serde_json::json!({ "uid": uid }),
        },
    )
    .await
}

pub async fn rfid_tags(tx: &mut TenantTx, id: Uuid) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select uid from rfid_tag where tenant_id = $1 and patron_id = $2 order by uid limit $3",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(crate::validate::LIST_CAP)
    .fetch_all(tx.conn())
    .await?)
}

/// Staff took `amount` in cash at `venue` and credit it to the patron's wallet. `key` makes the top-up happen once
/// however often it is retried.
pub async fn top_up_cash(
    tx: &mut TenantTx,
    actor: &Actor,
    patron: Uuid,
    venue: Uuid,
    amount: i64,
    key: &str,
) -> Result<(Posted, i64)> {
    get(tx, patron).await?;
    let venue = crate::venues::get(tx, venue).await?;
    if !(1..=crate::pricing::MAX_AMOUNT).contains(&amount) {
        return Err(Error::validation(
            "amount",
            "must be a positive amount in minor units",
        ));
    }
    let currency = venue.currency.as_str();
    if !actor.role.can_manage() {
        // Cash is the easiest money to get wrong or to take: a large amount needs someone who answers for the till.
        let cap = crate::tenants::staff_cash_top_up_cap(tx).await?;
        if amount > cap {
            return Err(Error::ForbiddenOver(format!(
                "staff may top up at most {} {currency} in cash at once; a manager or owner can take more",
                crate::money::format(cap, currency)
            )));
        }
    }
    let wallet = ledger::account(tx, Owner::Patron(patron), Purpose::Wallet, currency).await?;
    let drawer = ledger::account(tx, Owner::Venue(venue.id), Purpose::CashDrawer, currency).await?;
    // The journal's key holds 200 characters, as a request's key does: a key too long to carry whole is hashed.
    let journal_key = if key.len() <= 189 {
        format!("topup:cash:{key}")
    } else {
        format!("topup:cash:sha256:{}", crate::idempotency::hex_sha256(key))
    };
    let posted = ledger::post(
        tx,
        Journal {
            key: journal_key,
            kind: "top_up_cash",
            memo: format!("cash top-up at {}", venue.name),
            session_id: None,
            currency,
            entries: vec![(wallet, amount), (drawer, -amount)],
        },
    )
    .await?;
    if let Posted::Replay(journal) = posted {
        // The key was used before: only the same top-up may replay it (the journal outlives any request store).
        let entries: Vec<(Uuid, i64)> = sqlx::query_as(
            "select account_id, amount from journal_entry where tenant_id = $1 and journal_id = $2 order by line",
        )
        .bind(tx.tenant())
        .bind(journal)
        .fetch_all(tx.conn())
        .await?;
        if entries != [(wallet, amount), (drawer, -amount)] {
            return Err(Error::IdempotencyKeyReused);
        }
    }
    if let Posted::New(journal) = posted {
        let detail = serde_json::json!({ "amount": amount, "currency": currency, "venue_id": venue.id, "journal_id": journal });
        audit::record(
            tx,
            actor,
            Entry {
                action: "patron.top_up_cash",
                object_type: "patron",
                object_id: Some(patron),
                detail,
            },
        )
        .await?;
    }
    let balance = ledger::balance(tx, Owner::Patron(patron), Purpose::Wallet, currency).await?;
    Ok((posted, balance))
}
