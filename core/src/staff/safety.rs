//! The safety log: interventions staff record about a patron or a station at a venue, and flagged patrons
//! (staff are warned when a flagged patron starts a session).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{check_limit, check_station, check_venue, optional_text, Severity};
use crate::audit::{self, Entry};
use crate::db::{self, TenantTx};
use crate::error::{Error, Result};
use crate::events::NewEvent;
use crate::model::Actor;
use crate::scope::Named;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct SafetyEntry {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub patron_id: Option<Uuid>,
    pub station_id: Option<Uuid>,
    /// What was done, in snake case: `warning`, `removal`, `first_aid`, `station_check`, ...
    pub kind: String,
    pub note: String,
    pub severity: Severity,
    pub recorded_by: Uuid,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, venue_id, patron_id, station_id, kind, note, severity, recorded_by, created_at";

#[derive(Debug, Clone)]
pub struct NewSafetyEntry {
    pub venue_id: Uuid,
    pub patron_id: Option<Uuid>,
    pub station_id: Option<Uuid>,
    pub kind: String,
    pub note: Option<String>,
    pub severity: Severity,
}

/// Records an intervention about a patron or a station (any member, in their venues).
pub async fn record(
    tx: &mut TenantTx,
    actor: &Actor,
    input: NewSafetyEntry,
) -> Result<SafetyEntry> {
    let kind = input.kind.trim();
    if kind.is_empty()
        || kind.len() > 40
        || !kind.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    {
        return Err(Error::validation(
            "kind",
            "must be 1 to 40 lowercase letters or underscores, like warning or first_aid",
        ));
    }
    let note = optional_text("note", input.note.as_deref(), 2000)?;
    if input.patron_id.is_none() && input.station_id.is_none() {
        return Err(Error::validation(
            "patronId",
            "name the patron or the station the intervention is about",
        ));
    }
    check_venue(tx, actor, input.venue_id).await?;
    check_station(tx, Some(actor), input.venue_id, input.station_id).await?;
    if let Some(patron) = input.patron_id {
        check_patron(tx, patron).await?;
    }
    let sql = format!(
        "insert into safety_entry (tenant_id, id, venue_id, patron_id, station_id, kind, note, severity, recorded_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    );
    let entry: SafetyEntry = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(input.venue_id)
        .bind(input.patron_id)
        .bind(input.station_id)
        .bind(kind)
        .bind(note)
        .bind(input.severity)
        .bind(actor.user_id)
        .fetch_one(tx.conn())
        .await?;
    let audit_entry = Entry {
        action: "safety.record",
        object_type: "safety_entry",
        object_id: Some(entry.id),
        detail: json!({ "kind": entry.kind, "severity": entry.severity, "patron_id": entry.patron_id }),
    };
    audit::record_in(tx, actor, Some(entry.venue_id), audit_entry).await?;
    Ok(entry)
}

async fn check_patron(tx: &mut TenantTx, patron: Uuid) -> Result<()> {
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from patron where tenant_id = $1 and id = $2)")
            .bind(tx.tenant())
            .bind(patron)
            .fetch_one(tx.conn())
            .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::NotFound("patron"))
    }
}

/// One entry the member may see.
pub async fn get(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<SafetyEntry> {
    let sql = format!("select {COLUMNS} from safety_entry where tenant_id = $1 and id = $2");
    let entry: Option<SafetyEntry> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    let entry = entry.ok_or(Error::NotFound("safety entry"))?;
    actor.check_venue(entry.venue_id, "safety entry")?;
    Ok(entry)
}

#[derive(Debug, Clone)]
pub struct SafetyFilter {
    pub venue_id: Option<Uuid>,
    pub patron_id: Option<Uuid>,
    pub station_id: Option<Uuid>,
    pub limit: i64,
}

/// The safety log, newest first, within the member's venues.
pub async fn list(
    tx: &mut TenantTx,
    actor: &Actor,
    filter: &SafetyFilter,
) -> Result<Vec<SafetyEntry>> {
    let limit = check_limit(filter.limit)?;
    let mut query = sqlx::QueryBuilder::new(format!(
        "select {COLUMNS} from safety_entry where tenant_id = "
    ));
    query.push_bind(tx.tenant());
    db::filter(&mut query, "venue_id = $", filter.venue_id);
    db::filter(&mut query, "patron_id = $", filter.patron_id);
    db::filter(&mut query, "station_id = $", filter.station_id);
    db::filter(&mut query, "venue_id = any($)", actor.venue_filter());
    query
        .push(" order by created_at desc, id desc limit ")
        .push_bind(limit);
    let rows = query.build_query_as().fetch_all(tx.conn()).await?;
    let named = [
        Named::Venue(filter.venue_id),
        Named::Patron(filter.patron_id),
        Named::Station(filter.station_id),
    ];
    crate::scope::listed(tx, actor, rows, &named).await
}

/// A patron's flag, when flagged.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct PatronFlag {
    pub patron_id: Uuid,
    pub reason: String,
    pub flagged_at: DateTime<Utc>,
    pub flagged_by: Option<Uuid>,
}

/// The flag of `patron`, if it is flagged.
pub async fn flag_of(tx: &mut TenantTx, patron: Uuid) -> Result<Option<PatronFlag>> {
    Ok(sqlx::query_as(
        "select id as patron_id, coalesce(flag_reason, '') as reason, flagged_at, flagged_by from patron
         where tenant_id = $1 and id = $2 and flagged_at is not null",
    )
    .bind(tx.tenant())
    .bind(patron)
    .fetch_optional(tx.conn())
    .await?)
}

/// Flags a patron (any member): staff are warned when they start a session. Flagging again updates the reason.
/// `patron.flagged` goes to members (never to the patron), of `venue` when given.
pub async fn flag(
    tx: &mut TenantTx,
    actor: &Actor,
    patron: Uuid,
    reason: &str,
    venue: Option<Uuid>,
) -> Result<PatronFlag> {
    let reason = crate::validate::text("reason", reason, 1, 500)?.to_owned();
    if let Some(venue) = venue {
        check_venue(tx, actor, venue).await?;
    }
    check_patron(tx, patron).await?;
    sqlx::query(
        "update patron set flagged_at = coalesce(flagged_at, now()), flag_reason = $3, flagged_by = $4
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(&reason)
    .bind(actor.user_id)
    .execute(tx.conn())
    .await?;
    let mut event = NewEvent::new(
        "patron.flagged",
        json!({ "patron_id": patron, "reason": reason }),
    )
    .subject(patron);
    if let Some(venue) = venue {
        event = event.venue(venue);
    }
    tx.emit(event);
    let entry = Entry {
        action: "patron.flag",
        object_type: "patron",
        object_id: Some(patron),
        detail: json!({ "reason": reason }),
    };
    audit::record_in(tx, actor, venue, entry).await?;
    flag_of(tx, patron).await?.ok_or(Error::NotFound("patron"))
}

/// Takes a patron's flag away (owners and managers). Returns whether it was flagged.
pub async fn unflag(tx: &mut TenantTx, actor: &Actor, patron: Uuid) -> Result<bool> {
    actor.require_manager()?;
    check_patron(tx, patron).await?;
    let was = flag_of(tx, patron).await?.is_some();
    sqlx::query(
        "update patron set flagged_at = null, flag_reason = null, flagged_by = null
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(patron)
    .execute(tx.conn())
    .await?;
    let entry = Entry {
        action: "patron.unflag",
        object_type: "patron",
        object_id: Some(patron),
        detail: json!({ "was_flagged": was }),
    };
    audit::record(tx, actor, entry).await?;
    Ok(was)
}

/// Warns the venue's staff when a flagged patron arrives (`what`: `check_in` or `session`): a
/// `safety.flagged_<what>` live event with the flag's reason, which the patron never hears (it names no patron as
/// its owner). Nothing when the patron is not flagged.
pub async fn warn_if_flagged(
    tx: &mut TenantTx,
    patron: Uuid,
    venue: Uuid,
    kind: &'static str,
    subject: Uuid,
) -> Result<()> {
    let flag: Option<Option<String>> = sqlx::query_scalar(
        "select flag_reason from patron where tenant_id = $1 and id = $2 and flagged_at is not null",
    )
    .bind(tx.tenant())
    .bind(patron)
    .fetch_optional(tx.conn())
    .await?;
    warn_of_flag(tx, flag, patron, venue, kind, subject);
    Ok(())
}

/// [`warn_if_flagged`] for a caller that read the patron's flag itself (`Some(reason)` when flagged, the reason
/// optional; see [`crate::patrons::get_with_flag`]).
pub fn warn_of_flag(
    tx: &mut TenantTx,
    flag: Option<Option<String>>,
    patron: Uuid,
    venue: Uuid,
    kind: &'static str,
    subject: Uuid,
) {
    if let Some(reason) = flag {
        tx.emit(
            NewEvent::new(
                kind,
                json!({ "patron_id": patron, "reason": reason, "about": subject }),
            )
            .venue(venue)
            .subject(subject),
        );
    }
}
