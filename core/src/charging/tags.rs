//! RFID tags at chargers: judging a tag (Authorize, a transaction's start), managing tags (blocked, expiry,
//! parent), and keeping each charger's local authorization list in step with the tenant's tags.
//!
//! Every change to a tag takes the next number of the tenant's `tag_list_version` and stamps the tag with it, so a
//! charger at version `v` gets exactly the tags stamped above `v` (a differential update); a charger that knows no
//! version gets the whole list.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{calls, Charger};
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::ledger::{self, Owner, Purpose};
use crate::model::Actor;

/// What a tag is judged, in OCPP's words (2.0.1's; 1.6 has no `NoCredit` and hears `Blocked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TagStatus {
    Accepted,
    Blocked,
    Expired,
    Invalid,
    NoCredit,
    ConcurrentTx,
}

impl TagStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Blocked => "Blocked",
            Self::Expired => "Expired",
            Self::Invalid => "Invalid",
            Self::NoCredit => "NoCredit",
            Self::ConcurrentTx => "ConcurrentTx",
        }
    }

    /// A status stored as [`Self::as_str`] wrote it (a free vend's `FreeVend` is none).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Accepted,
            Self::Blocked,
            Self::Expired,
            Self::Invalid,
            Self::NoCredit,
            Self::ConcurrentTx,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The 1.6 word for it.
    pub fn v16(self) -> &'static str {
        match self {
            Self::NoCredit => "Blocked",
            other => other.as_str(),
        }
    }
}

/// A tag's judgement, with what the charger may cache.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: TagStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub parent: Option<String>,
    #[serde(skip)]
    pub patron_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Tag {
    pub uid: String,
    pub patron_id: Option<Uuid>,
    pub blocked: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub parent_uid: Option<String>,
    pub version: i64,
    /// Its patron owed a debt or held no funds when the tag last changed: local lists give it as `NoCredit`.
    pub no_credit: bool,
}

/// The shortest uid a tag may have.
pub const MIN_UID: usize = 4;

/// The longest uid a tag may have: OCPP 2.0.1's `idToken` (36). A 1.6 `idTag` holds 20 (every ISO 14443 card's
/// UID fits, 10 bytes in hex), so longer tags are left out of 1.6 chargers' local lists: none could be presented to
/// one, and a charger that checks the schema would refuse the whole update for it.
pub const MAX_UID: usize = 36;

/// The longest uid a 1.6 charger takes (`idTag`, `parentIdTag`).
pub const MAX_UID_V16: usize = 20;

const TAG_COLUMNS: &str = "uid, patron_id, blocked, expires_at, parent_uid, version, no_credit";

/// Whether the tag's patron lacks credit for the local lists (migration 0063): a debt in any currency, or no wallet
/// with funds in any. A tag without a patron is listed `Blocked` whatever this says.
const LACKS_CREDIT: &str = "coalesce(patron_lacks_credit(tenant_id, patron_id), false)";

async fn find(tx: &mut TenantTx, uid: &str) -> Result<Option<Tag>> {
    let sql =
        format!("select {TAG_COLUMNS} from rfid_tag where tenant_id = $1 and uid = upper($2)");
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(uid)
        .fetch_optional(tx.conn())
        .await?)
}

/// Judges a tag presented at a charger at `now`: unknown `Invalid`; blocked (itself or its parent) `Blocked`;
/// past its expiry `Expired`; its patron in debt or without funds `NoCredit`. A patron's money is read in the
/// currency of `station`'s venue.
pub async fn judge(
    tx: &mut TenantTx,
    uid: &str,
    station: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<Verdict> {
    let Some(tag) = find(tx, uid).await? else {
        return Ok(Verdict {
            status: TagStatus::Invalid,
            expires_at: None,
            parent: None,
            patron_id: None,
        });
    };
    let parent = match &tag.parent_uid {
        Some(p) => find(tx, p).await?,
        None => None,
    };
    let verdict = |status| Verdict {
        status,
        expires_at: tag.expires_at,
        parent: tag.parent_uid.clone(),
        patron_id: tag.patron_id,
    };
    if tag.blocked || parent.as_ref().is_some_and(|p| p.blocked) || tag.patron_id.is_none() {
        return Ok(verdict(TagStatus::Blocked));
    }
    if tag.expires_at.is_some_and(|e| e <= now) {
        return Ok(verdict(TagStatus::Expired));
    }
    if let (Some(patron), Some(station)) = (tag.patron_id, station) {
        let currency: String = sqlx::query_scalar(
            "select v.currency::text from station s join venue v on v.tenant_id = s.tenant_id and v.id = s.venue_id
             where s.tenant_id = $1 and s.id = $2",
        )
        .bind(tx.tenant())
        .bind(station)
        .fetch_one(tx.conn())
        .await?;
        let debt = ledger::balance(tx, Owner::Patron(patron), Purpose::Debt, &currency).await?;
        let wallet = ledger::balance(tx, Owner::Patron(patron), Purpose::Wallet, &currency).await?;
        if debt < 0 || wallet <= 0 {
            return Ok(verdict(TagStatus::NoCredit));
        }
    }
    Ok(verdict(TagStatus::Accepted))
}

/// Keeps a tag first seen in a transaction a charger ran while offline: blocked and without a patron, until an
/// operator gives it to one (the transaction itself is kept, unbilled). A uid shorter than a tag may be (4
/// characters) is not kept: no one could be given it.
pub async fn keep_unknown(tx: &mut TenantTx, uid: &str) -> Result<()> {
    if uid.chars().count() < MIN_UID {
        return Ok(());
    }
    let version = next_version(tx).await?;
    sqlx::query(
        "insert into rfid_tag (tenant_id, uid, patron_id, blocked, version) values ($1, upper($2), null, true, $3)
         on conflict (tenant_id, uid) do nothing",
    )
    .bind(tx.tenant())
    .bind(uid)
    .bind(version)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The tenant's next local-list version, for a tag about to change.
pub(crate) async fn next_version(tx: &mut TenantTx) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "update tenant set tag_list_version = tag_list_version + 1 where id = $1 returning tag_list_version",
    )
    .bind(tx.tenant())
    .fetch_one(tx.conn())
    .await?)
}

/// What may change about a tag; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct TagPatch {
    pub blocked: Option<bool>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub parent_uid: Option<Option<String>>,
    /// Gives an unowned tag (kept from an offline transaction) to a patron.
    pub patron_id: Option<Uuid>,
}

/// Changes a tag; every connected charger of the tenant gets the change in its local list.
pub async fn update(tx: &mut TenantTx, actor: &Actor, uid: &str, patch: TagPatch) -> Result<Tag> {
    actor.require_manager()?;
    let tag = find(tx, uid).await?.ok_or(Error::NotFound("RFID tag"))?;
    if let Some(patron) = patch.patron_id {
        crate::patrons::get(tx, patron).await?;
    }
    if let Some(Some(parent)) = &patch.parent_uid {
        if parent == uid {
            return Err(Error::validation(
                "parentUid",
                "a tag cannot be its own parent",
            ));
        }
        find(tx, parent)
            .await?
            .ok_or(Error::NotFound("parent RFID tag"))?;
    }
    let version = next_version(tx).await?;
    let sql = format!(
        "update rfid_tag set blocked = $3, expires_at = $4, parent_uid = $5, patron_id = $6, version = $7,
           no_credit = coalesce($6::uuid is not null and patron_lacks_credit($1, $6), false), updated_at = now()
         where tenant_id = $1 and uid = upper($2) returning {TAG_COLUMNS}"
    );
    let blocked = patch.blocked.unwrap_or(tag.blocked);
    let patron = patch.patron_id.or(tag.patron_id);
    if patron.is_none() && !blocked {
        return Err(Error::validation(
            "patronId",
            "a tag without a patron stays blocked: give it to a patron first",
        ));
    }
    let updated: Tag = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(uid)
        .bind(blocked)
        .bind(patch.expires_at.unwrap_or(tag.expires_at))
        .bind(patch.parent_uid.unwrap_or(tag.parent_uid))
        .bind(patron)
        .bind(version)
        .fetch_one(tx.conn())
        .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "rfid_tag.update",
            object_type: "rfid_tag",
            object_id: None,
            detail: serde_json::json!({
                "uid": uid, "blocked": updated.blocked, "expires_at": updated.expires_at,
                "parent_uid": updated.parent_uid, "patron_id": updated.patron_id,
            }),
        },
    )
    .await?;
    tags_changed(tx).await?;
    Ok(updated)
}

/// A tag was added or changed: every online, accepted charger of the tenant gets its local list brought up to date.
pub async fn tags_changed(tx: &mut TenantTx) -> Result<()> {
    let chargers = super::list(tx, None, None).await?;
    for charger in chargers.iter().filter(|c| c.online) {
        sync_local_list(tx, charger).await?;
    }
    Ok(())
}

/// Brings the tenant's tags' credit up to date in its chargers' local lists: a tag whose patron fell into debt or
/// ran out of funds is given as `NoCredit` (`Blocked` to a 1.6 charger), and back as `Accepted` once the patron has
/// credit again, in a differential update to every online charger. Each changed tag takes a version of its own, as
/// any change of a tag does, so a list cut into chunks of [`LIST_CHUNK`] still carries them all. The workers run
/// this for the tenants `sys_tag_credit_stale` names; a worker that finds another on the same tenant leaves it.
/// Returns how many tags changed.
pub async fn follow_credit(tx: &mut TenantTx) -> Result<u64> {
    let ours: bool = sqlx::query_scalar(
        "select pg_try_advisory_xact_lock(hashtextextended('tag_credit:' || $1::text, 0))",
    )
    .bind(tx.tenant())
    .fetch_one(tx.conn())
    .await?;
    if !ours {
        return Ok(0);
    }
    let stale_sql = format!(
        "select uid from rfid_tag where tenant_id = $1 and patron_id is not null and not blocked
           and no_credit <> {LACKS_CREDIT} order by uid"
    );
    let stale: Vec<String> = sqlx::query_scalar(&stale_sql)
        .bind(tx.tenant())
        .fetch_all(tx.conn())
        .await?;
    if stale.is_empty() {
        return Ok(0);
    }
    // The versions first, as every change of a tag takes them: the tenant's row, then the tags.
    let last: i64 = sqlx::query_scalar(
        "update tenant set tag_list_version = tag_list_version + $2 where id = $1 returning tag_list_version",
    )
    .bind(tx.tenant())
    .bind(stale.len() as i64)
    .fetch_one(tx.conn())
    .await?;
    let sql = format!(
        "update rfid_tag t set no_credit = {LACKS_CREDIT}, version = $2 - $3 + u.n, updated_at = now()
         from unnest($4::text[]) with ordinality u(uid, n)
         where t.tenant_id = $1 and t.uid = u.uid"
    );
    let changed = sqlx::query(&sql)
        .bind(tx.tenant())
        .bind(last)
        .bind(stale.len() as i64)
        .bind(&stale)
        .execute(tx.conn())
        .await?
        .rows_affected();
    tags_changed(tx).await?;
    Ok(changed)
}

/// Tags of the tenant, for the console.
pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<Tag>> {
    let sql =
        format!("select {TAG_COLUMNS} from rfid_tag where tenant_id = $1 order by uid limit $2");
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(limit.clamp(1, 1000))
        .fetch_all(tx.conn())
        .await?)
}

/// The most entries one SendLocalList carries; a larger list goes in several differential updates. A hundred
/// entries of the longest tags and parents (about 250 bytes each in 2.0.1, escaped) fit the 64 KiB frame of an edge
/// bridge's tunnel with room to spare; 500 did not, and a call too large for the tunnel is never sent.
pub const LIST_CHUNK: i64 = 100;

/// Queues the local list update a charger needs, if it is behind the tenant's version and no update is already
/// waiting: the whole list (`Full`) for a charger that has none, else the tags changed since its version
/// (`Differential`).
pub async fn sync_local_list(tx: &mut TenantTx, charger: &Charger) -> Result<()> {
    queue_list(tx, charger, false).await.map(|_| ())
}

/// Queues the whole local list for a charger (an operator's `SYNC_LOCAL_LIST`), even while another update is under
/// way; returns the call, `None` for a charger that is not accepted.
pub async fn send_full_list(tx: &mut TenantTx, charger: &Charger) -> Result<Option<calls::Call>> {
    queue_list(tx, charger, true).await
}

async fn queue_list(
    tx: &mut TenantTx,
    charger: &Charger,
    force_full: bool,
) -> Result<Option<calls::Call>> {
    if charger.registration != super::Registration::Accepted {
        return Ok(None);
    }
    // Shared-locked: a tag change holds this row (it bumps the version) until it commits, so an update decided here
    // waits for a change under way and reads its version. Without the lock a charger's answer to the last update
    // could read the old version while the change, seeing that update still in flight, left the new one to it —
    // and neither would send it.
    let current: i64 =
        sqlx::query_scalar("select tag_list_version from tenant where id = $1 for share")
            .bind(tx.tenant())
            .fetch_one(tx.conn())
            .await?;
    if charger.local_list_version >= current && !force_full {
        return Ok(None);
    }
    let waiting: bool = sqlx::query_scalar(
        "select exists (select 1 from ocpp_call where tenant_id = $1 and charger_id = $2
                          and action in ('SendLocalList') and status in ('pending', 'sent'))",
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .fetch_one(tx.conn())
    .await?;
    if waiting && !force_full {
        return Ok(None);
    }
    let full = force_full || charger.local_list_version == 0;
    let sql = format!(
        "select {TAG_COLUMNS} from rfid_tag where tenant_id = $1 and version > $2 order by version limit $3"
    );
    let changed: Vec<Tag> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(if full { -1 } else { charger.local_list_version })
        .bind(LIST_CHUNK)
        .fetch_all(tx.conn())
        .await?;
    // The version this update brings the charger to: the last tag's when the list is cut, else the tenant's.
    let version = if changed.len() as i64 == LIST_CHUNK {
        changed.last().map_or(current, |t| t.version)
    } else {
        current
    };
    let entries: Vec<ListEntry> = changed
        .into_iter()
        .map(|t| ListEntry {
            status: if t.blocked || t.patron_id.is_none() {
                TagStatus::Blocked
            } else if t.no_credit {
                TagStatus::NoCredit
            } else {
                TagStatus::Accepted
            },
            uid: t.uid,
            expires_at: t.expires_at,
            parent: t.parent_uid,
        })
        .collect();
    let request = calls::Request::local_list(charger.protocol(), version, full, &entries);
    Ok(Some(
        calls::enqueue(tx, charger, request, None, None).await?,
    ))
}

/// One entry of a local authorization list.
#[derive(Debug, Clone)]
pub struct ListEntry {
    pub uid: String,
    pub status: TagStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub parent: Option<String>,
}
