//! SOS alerts: raised by a member or a patron at a venue, then acknowledged, answered and resolved. The
//! timestamps give the response times; the incident log lists them for managers and owners, and exports CSV.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::{check_limit, check_range, check_station, check_venue, optional_text, Severity};
use crate::audit::{self, Entry};
use crate::db::{self, TenantTx};
use crate::error::{Error, Result};
use crate::events::NewEvent;
use crate::model::{Actor, PatronActor};
use crate::scope::Named;

/// Where an SOS stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, async_graphql::Enum)]
#[sqlx(type_name = "sos_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SosStatus {
    Raised,
    Acknowledged,
    Resolved,
}

/// An SOS, with its response times in seconds (raised → acknowledged, raised → resolved) once known.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct Sos {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub station_id: Option<Uuid>,
    pub location: String,
    pub severity: Severity,
    pub note: String,
    pub status: SosStatus,
    /// The member who raised it (or none: a patron did).
    pub raised_by_user: Option<Uuid>,
    pub raised_by_patron: Option<Uuid>,
    pub raised_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<Uuid>,
    /// The latest response.
    pub responded_at: Option<DateTime<Utc>>,
    pub responded_by: Option<Uuid>,
    pub response_note: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<Uuid>,
    pub resolution_note: Option<String>,
    pub seconds_to_acknowledge: Option<i64>,
    pub seconds_to_resolve: Option<i64>,
}

const COLUMNS: &str = "id, venue_id, station_id, location, severity, note, status, raised_by_user,
    raised_by_patron, raised_at, acknowledged_at, acknowledged_by, responded_at, responded_by, response_note,
    resolved_at, resolved_by, resolution_note,
    floor(extract(epoch from acknowledged_at - raised_at))::bigint as seconds_to_acknowledge,
    floor(extract(epoch from resolved_at - raised_at))::bigint as seconds_to_resolve";

/// What the one raising an SOS says.
#[derive(Debug, Clone)]
pub struct NewSos {
    pub venue_id: Uuid,
    pub station_id: Option<Uuid>,
    pub location: Option<String>,
    pub severity: Severity,
    pub note: Option<String>,
}

/// Who raises an SOS.
#[derive(Debug, Clone, Copy)]
pub enum Raiser<'a> {
    Member(&'a Actor),
    Patron(&'a PatronActor),
}

/// Raises an SOS; `sos.raised` goes out with the commit.
pub async fn raise(tx: &mut TenantTx, raiser: Raiser<'_>, input: NewSos) -> Result<Sos> {
    let location = optional_text("location", input.location.as_deref(), 200)?;
    let note = optional_text("note", input.note.as_deref(), 2000)?;
    match raiser {
        Raiser::Member(actor) => check_venue(tx, actor, input.venue_id).await?,
        Raiser::Patron(_) => {
            crate::venues::get(tx, input.venue_id).await?;
        }
    }
    let member = match raiser {
        Raiser::Member(actor) => Some(actor),
        Raiser::Patron(_) => None,
    };
    check_station(tx, member, input.venue_id, input.station_id).await?;
    let (user, patron) = match raiser {
        Raiser::Member(a) => (Some(a.user_id), None),
        Raiser::Patron(p) => (None, Some(p.patron_id)),
    };
    let sql = format!(
        "insert into sos (tenant_id, id, venue_id, station_id, location, severity, note, raised_by_user,
                          raised_by_patron)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    );
    let sos: Sos = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(input.venue_id)
        .bind(input.station_id)
        .bind(&location)
        .bind(input.severity)
        .bind(&note)
        .bind(user)
        .bind(patron)
        .fetch_one(tx.conn())
        .await?;
    emit(tx, "sos.raised", &sos);
    // Owners and the managers of the venue hear of it by email too, queued with the SOS itself.
    crate::notify::flows::sos(tx, &sos).await?;
    let entry = entry("sos.raise", &sos);
    match raiser {
        Raiser::Member(actor) => audit::record_in(tx, actor, Some(sos.venue_id), entry).await?,
        Raiser::Patron(p) => audit::record_as(tx, None, p.request_id.as_deref(), entry).await?,
    }
    Ok(sos)
}

/// One SOS the member may see.
pub async fn get(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Sos> {
    let sos = fetch(tx, id, false).await?;
    actor.check_venue(sos.venue_id, "sos")?;
    Ok(sos)
}

async fn fetch(tx: &mut TenantTx, id: Uuid, lock: bool) -> Result<Sos> {
    let sql = format!(
        "select {COLUMNS} from sos where tenant_id = $1 and id = $2 {}",
        if lock { "for update" } else { "" }
    );
    let sos: Option<Sos> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    sos.ok_or(Error::NotFound("sos"))
}

/// Locks an SOS the member may see, refusing a resolved one.
async fn open_for_change(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Sos> {
    let sos = fetch(tx, id, true).await?;
    actor.check_venue(sos.venue_id, "sos")?;
    if sos.status == SosStatus::Resolved {
        return Err(Error::Conflict("this SOS is already resolved".into()));
    }
    Ok(sos)
}

/// Acknowledges an SOS ("I'm on it"). Acknowledging again changes nothing.
pub async fn acknowledge(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Sos> {
    let sos = open_for_change(tx, actor, id).await?;
    if sos.acknowledged_at.is_some() {
        return Ok(sos);
    }
    let sos = update(
        tx,
        id,
        "status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $3",
        actor.user_id,
        None,
    )
    .await?;
    emit(tx, "sos.acknowledged", &sos);
    audit::record_in(
        tx,
        actor,
        Some(sos.venue_id),
        entry("sos.acknowledge", &sos),
    )
    .await?;
    Ok(sos)
}

/// Records a response (what was done); it acknowledges the SOS too if nobody had.
pub async fn respond(tx: &mut TenantTx, actor: &Actor, id: Uuid, note: &str) -> Result<Sos> {
    let note = crate::validate::text("note", note, 1, 2000)?.to_owned();
    open_for_change(tx, actor, id).await?;
    let sos = update(
        tx,
        id,
        "status = 'acknowledged', acknowledged_at = coalesce(acknowledged_at, now()),
         acknowledged_by = coalesce(acknowledged_by, $3), responded_at = now(), responded_by = $3,
         response_note = $4",
        actor.user_id,
        Some(note),
    )
    .await?;
    emit(tx, "sos.responded", &sos);
    audit::record_in(tx, actor, Some(sos.venue_id), entry("sos.respond", &sos)).await?;
    Ok(sos)
}

/// Resolves an SOS. Resolving it again returns it unchanged.
pub async fn resolve(
    tx: &mut TenantTx,
    actor: &Actor,
    id: Uuid,
    note: Option<&str>,
) -> Result<Sos> {
    let note = optional_text("note", note, 2000)?;
    let current = fetch(tx, id, true).await?;
    actor.check_venue(current.venue_id, "sos")?;
    if current.status == SosStatus::Resolved {
        return Ok(current);
    }
    let sos = update(
        tx,
        id,
        "status = 'resolved', acknowledged_at = coalesce(acknowledged_at, now()),
         acknowledged_by = coalesce(acknowledged_by, $3), resolved_at = now(), resolved_by = $3,
         resolution_note = nullif($4, '')",
        actor.user_id,
        Some(note),
    )
    .await?;
    emit(tx, "sos.resolved", &sos);
    audit::record_in(tx, actor, Some(sos.venue_id), entry("sos.resolve", &sos)).await?;
    Ok(sos)
}

async fn update(
    tx: &mut TenantTx,
    id: Uuid,
    set: &str,
    by: Uuid,
    note: Option<String>,
) -> Result<Sos> {
    let sql = format!(
        "update sos set {set} where tenant_id = $1 and id = $2 and ($4::text is null or true) returning {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(by)
        .bind(note)
        .fetch_one(tx.conn())
        .await?)
}

fn emit(tx: &mut TenantTx, kind: &'static str, sos: &Sos) {
    let data = json!({
        "severity": sos.severity, "status": sos.status, "location": sos.location, "note": sos.note,
        "raised_by_user": sos.raised_by_user, "raised_at": sos.raised_at,
        "seconds_to_acknowledge": sos.seconds_to_acknowledge, "seconds_to_resolve": sos.seconds_to_resolve,
        "response_note": sos.response_note,
    });
    let mut event = NewEvent::new(kind, data)
        .venue(sos.venue_id)
        .subject(sos.id)
        .patron(sos.raised_by_patron);
    if let Some(station) = sos.station_id {
        event = event.station(station);
    }
    tx.emit(event);
}

fn entry<'a>(action: &'a str, sos: &Sos) -> Entry<'a> {
    Entry {
        action,
        object_type: "sos",
        object_id: Some(sos.id),
        detail: json!({ "severity": sos.severity, "status": sos.status }),
    }
}

/// The incident log's filters.
#[derive(Debug, Clone)]
pub struct IncidentFilter {
    pub venue_id: Option<Uuid>,
    pub status: Option<SosStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// The incident log, newest first (owners and managers, within their venues).
pub async fn incidents(
    tx: &mut TenantTx,
    actor: &Actor,
    filter: &IncidentFilter,
) -> Result<Vec<Sos>> {
    actor.require_manager()?;
    check_range(filter.from, filter.to)?;
    let limit = check_limit(filter.limit)?;
    let mut query =
        sqlx::QueryBuilder::new(format!("select {COLUMNS} from sos where tenant_id = "));
    query.push_bind(tx.tenant());
    db::filter(&mut query, "venue_id = $", filter.venue_id);
    db::filter(&mut query, "status = $", filter.status);
    db::filter(&mut query, "raised_at >= $", filter.from);
    db::filter(&mut query, "raised_at < $", filter.to);
    db::filter(&mut query, "venue_id = any($)", actor.venue_filter());
    query
        .push(" order by raised_at desc, id desc limit ")
        .push_bind(limit);
    let rows = query.build_query_as().fetch_all(tx.conn()).await?;
    crate::scope::listed(tx, actor, rows, &[Named::Venue(filter.venue_id)]).await
}

/// The incident log as CSV (RFC 4180; a header line, then one line per SOS). Text that a spreadsheet would take
/// for a formula is prefixed with `'`.
pub fn csv(rows: &[Sos]) -> String {
    let mut out = String::from(
        "id,venue_id,station_id,severity,status,location,note,raised_by_user,raised_by_patron,raised_at,\
         acknowledged_at,responded_at,response_note,resolved_at,resolution_note,seconds_to_acknowledge,\
         seconds_to_resolve\r\n",
    );
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    let id = |u: Option<Uuid>| u.map(|u| u.to_string()).unwrap_or_default();
    let num = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    for s in rows {
        let fields = [
            s.id.to_string(),
            s.venue_id.to_string(),
            id(s.station_id),
            s.severity.as_str().to_owned(),
            format!("{:?}", s.status).to_lowercase(),
            cell(&s.location),
            cell(&s.note),
            id(s.raised_by_user),
            id(s.raised_by_patron),
            s.raised_at.to_rfc3339(),
            time(s.acknowledged_at),
            time(s.responded_at),
            cell(s.response_note.as_deref().unwrap_or("")),
            time(s.resolved_at),
            cell(s.resolution_note.as_deref().unwrap_or("")),
            num(s.seconds_to_acknowledge),
            num(s.seconds_to_resolve),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV cell of free text: quoted when needed, formula-looking text defused.
fn cell(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
    }
}
