//! Seed 003's reports: a kiosk session (its contact email/phone and metadata on the session) produces PDF reports
//! of kinds each tenant defines with a template — the demo has the seed's `diagnostics` (OBD-II fault codes) and
//! `thickness` (paint thickness measurements). A report is generated from the data posted with it, stored, and
//! queued for delivery (email attachment, SMS link) when the request or the session names a recipient: delivery
//! itself is the messaging outbox's ([`super::delivery`]).
//!
//! A template is a JSON array of blocks, printed in order; `path` is a dotted path into the report's data
//! (`vehicle.vin`, `summary.max`), and a block with `"if": path` is printed only when that value is present and
//! neither `false`, `null`, `0` nor empty:
//!
//! | block | prints |
//! |---|---|
//! | `{"heading": "Vehicle"}` | a heading |
//! | `{"text": "Fault codes were cleared."}` | a paragraph |
//! | `{"field": "VIN", "path": "vehicle.vin", "required": true}` | `VIN: <value>`; a required field missing from the data refuses the report (`422`, field `data`) |
//! | `{"table": "dtc_codes", "columns": [{"label": "Code", "path": "code"}], "empty": "No codes", "required": true}` | one row per element of the array at `table` |
//! | `{"count_by": "measurements", "path": "status", "label": "Measurements"}` | how many elements of the array have each value at `path` |
//! | `{"session": true}` | the session's id, station, start and end |

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::pdf::Doc;
use super::store::{self, Store};
use super::{legal, local_time};
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::{Actor, StationKind};
use crate::{sessions, stations};

/// The most rows a report's table prints.
pub const MAX_ROWS: usize = 2000;
/// The most blocks in a template.
pub const MAX_BLOCKS: usize = 200;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ReportKind {
    pub id: Uuid,
    pub key: String,
    pub title: String,
    pub template: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Report {
    pub id: Uuid,
    pub session_id: Uuid,
    /// The kind's key (`diagnostics`).
    pub kind: String,
    pub data: Value,
    pub object_key: String,
    pub byte_size: i32,
    pub sent_to_email: Option<String>,
    pub sent_to_phone: Option<String>,
    /// `none`, `pending`, `sent`, `failed`: the channels below summed up.
    pub delivery: String,
    /// Each channel's delivery: `None` when not asked for, else `pending`, `sent`, `failed`.
    pub email_delivery: Option<String>,
    pub sms_delivery: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const KIND_COLUMNS: &str = "id, key, title, template, created_at";
const COLUMNS: &str =
    "r.id, r.session_id, k.key as kind, r.data, r.object_key, r.byte_size, r.sent_to_email,
    r.sent_to_phone, r.delivery, r.email_delivery, r.sms_delivery, r.sent_at, r.created_at";
const FROM: &str = "report r join report_kind k on k.tenant_id = r.tenant_id and k.id = r.kind_id";

/// Checks a template's shape (see the module's table); the error names what is wrong.
pub fn check_template(template: &Value) -> Result<()> {
    let bad = |message: String| Error::validation("template", message);
    let blocks = template
        .as_array()
        .ok_or_else(|| bad("must be an array of blocks".into()))?;
    if blocks.is_empty() || blocks.len() > MAX_BLOCKS {
        return Err(bad(format!("must have 1 to {MAX_BLOCKS} blocks")));
    }
    for (i, block) in blocks.iter().enumerate() {
        let object = block
            .as_object()
            .ok_or_else(|| bad(format!("block {i} must be an object")))?;
        let kinds: Vec<&str> = ["heading", "text", "field", "table", "count_by", "session"]
            .into_iter()
            .filter(|k| object.contains_key(*k))
            .collect();
        if kinds.len() != 1 {
            return Err(bad(format!(
                "block {i} must have exactly one of heading, text, field, table, count_by, session"
            )));
        }
        let string = |key: &str| object.get(key).and_then(Value::as_str);
        match kinds[0] {
            "heading" | "text" if string(kinds[0]).is_none() => {
                return Err(bad(format!("block {i}: {} must be text", kinds[0])))
            }
            "field" | "count_by" if string(kinds[0]).is_none() || string("path").is_none() => {
                return Err(bad(format!(
                    "block {i}: {} and path must be text",
                    kinds[0]
                )))
            }
            "table" => {
                let columns = object.get("columns").and_then(Value::as_array);
                let ok = string("table").is_some()
                    && columns.is_some_and(|c| {
                        !c.is_empty()
                            && c.len() <= 8
                            && c.iter().all(|c| {
                                c.get("label").and_then(Value::as_str).is_some()
                                    && c.get("path").and_then(Value::as_str).is_some()
                            })
                    });
                if !ok {
                    return Err(bad(format!(
                        "block {i}: a table needs a path in `table` and 1 to 8 columns of {{label, path}}"
                    )));
                }
            }
            _ => {}
        }
        if let Some(cond) = object.get("if") {
            if !cond.is_string() {
                return Err(bad(format!("block {i}: if must be a path")));
            }
        }
    }
    Ok(())
}

/// The value at a dotted path.
fn at<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(data, |v, part| match v {
            Value::Object(map) => map.get(part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Refuses data that lacks what the template requires.
pub fn check_data(template: &Value, data: &Value) -> Result<()> {
    if !data.is_object() {
        return Err(Error::validation("data", "must be a JSON object"));
    }
    for block in template.as_array().into_iter().flatten() {
        if block.get("required").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let path = block
            .get("path")
            .or_else(|| block.get("table"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        match at(data, path) {
            None => {
                return Err(Error::validation(
                    "data",
                    format!("data.{path} is required by this report's template"),
                ))
            }
            Some(v) if block.get("table").is_some() && !v.is_array() => {
                return Err(Error::validation(
                    "data",
                    format!("data.{path} must be an array"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What the session block prints.
pub struct SessionFacts {
    pub id: Uuid,
    pub station: String,
    pub started: String,
    pub ended: Option<String>,
}

/// The report's PDF (pure).
pub fn render(
    issuer: &str,
    title: &str,
    template: &Value,
    data: &Value,
    session: &SessionFacts,
    report_id: Uuid,
) -> Vec<u8> {
    let mut doc = Doc::new(title);
    doc.heading(issuer, 12.0);
    doc.heading(title, 18.0);
    doc.text(&format!("Report {report_id}"));
    doc.rule();
    for block in template.as_array().into_iter().flatten() {
        if let Some(cond) = block.get("if").and_then(Value::as_str) {
            if !truthy(at(data, cond)) {
                continue;
            }
        }
        let string = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or_default();
        if let Some(heading) = block.get("heading").and_then(Value::as_str) {
            doc.gap().heading(heading, 13.0);
        } else if let Some(text) = block.get("text").and_then(Value::as_str) {
            doc.text(text);
        } else if let Some(label) = block.get("field").and_then(Value::as_str) {
            doc.text(&format!("{label}: {}", show(at(data, string("path")))));
        } else if let Some(path) = block.get("table").and_then(Value::as_str) {
            let columns: Vec<(&str, &str)> = block
                .get("columns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c.get("label").and_then(Value::as_str).unwrap_or_default(),
                        c.get("path").and_then(Value::as_str).unwrap_or_default(),
                    )
                })
                .collect();
            let rows = at(data, path).and_then(Value::as_array);
            match rows {
                Some(rows) if !rows.is_empty() => {
                    let header: Vec<String> =
                        columns.iter().map(|(l, _)| (*l).to_owned()).collect();
                    doc.cells(&header, true);
                    for row in rows.iter().take(MAX_ROWS) {
                        let cells: Vec<String> =
                            columns.iter().map(|(_, p)| show(at(row, p))).collect();
                        doc.cells(&cells, false);
                    }
                    if rows.len() > MAX_ROWS {
                        doc.text(&format!("… and {} more", rows.len() - MAX_ROWS));
                    }
                }
                _ => {
                    let empty = string("empty");
                    doc.text(if empty.is_empty() { "None." } else { empty });
                }
            }
        } else if let Some(array) = block.get("count_by").and_then(Value::as_str) {
            let label = block.get("label").and_then(Value::as_str).unwrap_or(array);
            let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
            let rows = at(data, array).and_then(Value::as_array);
            for row in rows.into_iter().flatten() {
                *counts.entry(show(at(row, string("path")))).or_default() += 1;
            }
            let total: usize = counts.values().sum();
            doc.row(&format!("{label}: total"), &total.to_string(), true);
            for (value, n) in counts {
                doc.row(&format!("{label}: {value}"), &n.to_string(), false);
            }
        } else if block.get("session").is_some() {
            doc.text(&format!("Session {}", session.id));
            doc.text(&format!("Station: {}", session.station));
            doc.text(&format!("Started: {}", session.started));
            if let Some(ended) = &session.ended {
                doc.text(&format!("Ended: {ended}"));
            }
        }
    }
    doc.to_pdf()
}

/// Defines (or redefines) a report kind. Owners and managers. Reports already made keep their PDF.
pub async fn define_kind(
    tx: &mut TenantTx,
    actor: &Actor,
    key: &str,
    title: &str,
    template: Value,
) -> Result<ReportKind> {
    actor.require_manager()?;
    let key = key.trim();
    if !is_kind_key(key) {
        return Err(Error::validation(
            "key",
            "must be 1 to 40 lowercase letters, digits, `_` or `-`, starting with a letter",
        ));
    }
    let title = crate::validate::text("title", title, 1, 200)?;
    check_template(&template)?;
    let sql = format!(
        "insert into report_kind (tenant_id, id, key, title, template) values ($1, $2, $3, $4, $5)
         on conflict (tenant_id, key) do update set title = excluded.title, template = excluded.template
         returning {KIND_COLUMNS}"
    );
    let kind: ReportKind = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(key)
        .bind(title)
        .bind(&template)
        .fetch_one(tx.conn())
        .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "report_kind.define",
            object_type: "report_kind",
            object_id: Some(kind.id),
            detail: serde_json::json!({ "key": kind.key, "title": kind.title }),
        },
    )
    .await?;
    Ok(kind)
}

pub async fn kinds(tx: &mut TenantTx) -> Result<Vec<ReportKind>> {
    let sql = format!(
        "select {KIND_COLUMNS} from report_kind where tenant_id = $1 order by key limit 1000"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .fetch_all(tx.conn())
        .await?)
}

/// Whether `key` could name a report kind: 1 to 40 lowercase letters, digits, `_` or `-`, starting with a letter.
fn is_kind_key(key: &str) -> bool {
    (1..=40).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `not_found` for a key no report kind can have (checked before it is used, e.g. in an idempotency scope).
pub fn check_kind_key(key: &str) -> Result<()> {
    if is_kind_key(key) {
        Ok(())
    } else {
        Err(Error::NotFound("report kind"))
    }
}

pub async fn kind(tx: &mut TenantTx, key: &str) -> Result<ReportKind> {
    check_kind_key(key)?;
    let sql = format!("select {KIND_COLUMNS} from report_kind where tenant_id = $1 and key = $2");
    let kind: Option<ReportKind> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(key)
        .fetch_optional(tx.conn())
        .await?;
    kind.ok_or(Error::NotFound("report kind"))
}

/// A kiosk session's contact and metadata (seed 003).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Contact {
    pub contact_email: Option<String>,
    pub contact_phone: Option<String>,
    pub metadata: Value,
}

fn phone(field: &'static str, value: &str) -> Result<String> {
    let v = value.trim();
    let digits = v.chars().filter(char::is_ascii_digit).count();
    let allowed = v
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')'));
    if !allowed || !(5..=20).contains(&digits) || v.len() > 32 {
        return Err(Error::validation(
            field,
            "must be a phone number like +49 170 1234567",
        ));
    }
    Ok(v.to_owned())
}

/// A session the actor may see.
async fn visible_session(
    tx: &mut TenantTx,
    actor: &Actor,
    session_id: Uuid,
) -> Result<sessions::Session> {
    let session = sessions::get(tx, session_id).await.map_err(|e| match e {
        Error::NotFound(_) => Error::NotFound("session"),
        other => other,
    })?;
    actor.check_venue(session.venue_id, "session")?;
    Ok(session)
}

pub async fn contact(tx: &mut TenantTx, actor: &Actor, session_id: Uuid) -> Result<Contact> {
    visible_session(tx, actor, session_id).await?;
    Ok(sqlx::query_as(
        "select contact_email, contact_phone, metadata from session where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(session_id)
    .fetch_one(tx.conn())
    .await?)
}

/// Sets a session's contact email and phone and replaces its metadata (an object, at most 16 KiB). Any member
/// of the venue.
pub async fn set_contact(
    tx: &mut TenantTx,
    actor: &Actor,
    session_id: Uuid,
    email: Option<&str>,
    phone_number: Option<&str>,
    metadata: Option<Value>,
) -> Result<Contact> {
    visible_session(tx, actor, session_id).await?;
    let email = email
        .filter(|e| !e.trim().is_empty())
        .map(|e| crate::auth::normalize_email("contact_email", e))
        .transpose()?;
    let phone_number = phone_number
        .filter(|p| !p.trim().is_empty())
        .map(|p| phone("contact_phone", p))
        .transpose()?;
    let metadata = metadata.unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(Error::validation("metadata", "must be a JSON object"));
    }
    if metadata.to_string().len() > 16 * 1024 {
        return Err(Error::validation("metadata", "must be at most 16 KiB"));
    }
    sqlx::query(
        "update session set contact_email = $3, contact_phone = $4, metadata = $5 where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(session_id)
    .bind(&email)
    .bind(&phone_number)
    .bind(&metadata)
    .execute(tx.conn())
    .await?;
    contact(tx, actor, session_id).await
}

/// What a report is made from (`POST /api/v1/reports/{kind}`).
pub struct NewReport<'a> {
    /// The kind's key.
    pub kind: &'a str,
    pub session_id: Uuid,
    /// Recipients; each defaults to the session's contact.
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub data: Value,
}

/// Generates a report of `kind` for a kiosk session from `data` and stores its PDF; the email and phone given (here
/// or on the session) are recorded as `sent_to_*`. Its delivery is queued by the caller in the same transaction
/// (`notify::flows::report`, the messaging outbox's side). Any member of the session's venue.
pub async fn create(
    tx: &mut TenantTx,
    actor: &Actor,
    store: &Store,
    new: NewReport<'_>,
) -> Result<Report> {
    let NewReport {
        kind: kind_key,
        session_id,
        email,
        phone: phone_number,
        data,
    } = new;
    let kind = kind(tx, kind_key).await?;
    let session = visible_session(tx, actor, session_id).await?;
    let station = stations::get(tx, session.station_id).await?;
    if station.kind != StationKind::Kiosk {
        return Err(Error::validation(
            "session_id",
            "reports are made for sessions on kiosk stations",
        ));
    }
    check_data(&kind.template, &data)?;
    if data.to_string().len() > 256 * 1024 {
        return Err(Error::validation("data", "must be at most 256 KiB"));
    }
    let contact = contact(tx, actor, session_id).await?;
    let email = match email.filter(|e| !e.trim().is_empty()) {
        Some(e) => Some(crate::auth::normalize_email("email", e)?),
        None => contact.contact_email,
    };
    let phone_number = match phone_number.filter(|p| !p.trim().is_empty()) {
        Some(p) => Some(phone("phone", p)?),
        None => contact.contact_phone,
    };
    let id = Uuid::now_v7();
    let facts = SessionFacts {
        id: session.id,
        station: station.name,
        started: local_time(session.started_at, &session.timezone),
        ended: session.ended_at.map(|e| local_time(e, &session.timezone)),
    };
    let legal = legal(tx).await?;
    // Rendered off the async threads: a long report takes its time without holding up other requests.
    let (issuer, title, template, values) = (
        legal.issuer().to_owned(),
        kind.title.clone(),
        kind.template.clone(),
        data.clone(),
    );
    let bytes = tokio::task::spawn_blocking(move || {
        render(&issuer, &title, &template, &values, &facts, id)
    })
    .await
    .map_err(|e| Error::Internal(e.into()))?;
    let key = store::key(tx.tenant(), "reports", id);
    let size = i32::try_from(bytes.len()).map_err(|e| Error::Internal(e.into()))?;
    sqlx::query(
        "insert into report (tenant_id, id, session_id, kind_id, data, object_key, byte_size, sent_to_email,
                             sent_to_phone, delivery)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'none')",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(session_id)
    .bind(kind.id)
    .bind(&data)
    .bind(&key)
    .bind(size)
    .bind(&email)
    .bind(&phone_number)
    .execute(tx.conn())
    .await?;
    store.put_pdf(&key, bytes).await?;
    metrics::counter!("reports_generated_total", "kind" => kind.key.clone()).increment(1);
    audit::record(
        tx,
        actor,
        Entry {
            action: "report.create",
            object_type: "report",
            object_id: Some(id),
            detail: serde_json::json!({ "kind": kind.key, "session_id": session_id,
                                          "email": email.is_some(), "phone": phone_number.is_some() }),
        },
    )
    .await?;
    get(tx, actor, id).await
}

/// A report the actor may see (its session's venue).
pub async fn get(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Report> {
    let sql = format!("select {COLUMNS} from {FROM} where r.tenant_id = $1 and r.id = $2");
    let row: Option<(Uuid,)> = sqlx::query_as(
        "select s.venue_id from report r join session s on s.tenant_id = r.tenant_id and s.id = r.session_id
          where r.tenant_id = $1 and r.id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let (venue,) = row.ok_or(Error::NotFound("report"))?;
    actor.check_venue(venue, "report")?;
    let report: Report = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    Ok(report)
}

/// A session's reports, oldest first.
pub async fn for_session(
    tx: &mut TenantTx,
    actor: &Actor,
    session_id: Uuid,
) -> Result<Vec<Report>> {
    visible_session(tx, actor, session_id).await?;
    let sql = format!(
        "select {COLUMNS} from {FROM} where r.tenant_id = $1 and r.session_id = $2 order by r.created_at, r.id limit 500"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(session_id)
        .fetch_all(tx.conn())
        .await?)
}

/// The seed's two report kinds, as the demo tenant has them (`seed-demo`).
pub fn demo_kinds() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "diagnostics",
            "Vehicle diagnostics report",
            serde_json::json!([
                {"session": true},
                {"heading": "Vehicle"},
                {"field": "VIN", "path": "vehicle.vin", "required": true},
                {"field": "Make", "path": "vehicle.make"},
                {"field": "Model", "path": "vehicle.model"},
                {"field": "Mileage (km)", "path": "vehicle.mileage_km"},
                {"heading": "Fault codes (DTC)"},
                {"table": "dtc_codes", "required": true, "empty": "No fault codes were found.",
                 "columns": [{"label": "Code", "path": "code"}, {"label": "Severity", "path": "severity"},
                             {"label": "Description", "path": "description"}]},
                {"count_by": "dtc_codes", "path": "severity", "label": "Codes by severity"},
                {"text": "The fault codes were cleared after the scan.", "if": "cleared"},
                {"text": "Drive safely. Have codes of high severity checked by a workshop soon."}
            ]),
        ),
        (
            "thickness",
            "Paint thickness report",
            serde_json::json!([
                {"session": true},
                {"heading": "Vehicle"},
                {"field": "Vehicle type", "path": "vehicle_type", "required": true},
                {"heading": "Measurements (micrometres)"},
                {"table": "measurements", "required": true, "empty": "No measurements.",
                 "columns": [{"label": "Zone", "path": "zone"}, {"label": "Value", "path": "value_um"},
                             {"label": "Status", "path": "status"}]},
                {"heading": "Summary"},
                {"count_by": "measurements", "path": "status", "label": "Measurements"},
                {"field": "Recommendation", "path": "recommendation"}
            ]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_templates_are_valid_and_require_their_data() {
        for (_, _, template) in demo_kinds() {
            check_template(&template).unwrap_or_else(|e| panic!("{e}"));
        }
        let diagnostics = &demo_kinds()[0].2;
        let err = check_data(diagnostics, &serde_json::json!({"dtc_codes": []})).unwrap_err();
        assert!(
            err.to_string().contains("data.vehicle.vin is required"),
            "{err}"
        );
        let err = check_data(
            diagnostics,
            &serde_json::json!({"vehicle": {"vin": "X"}, "dtc_codes": "P0300"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be an array"), "{err}");
        assert!(check_data(
            diagnostics,
            &serde_json::json!({"vehicle": {"vin": "X"}, "dtc_codes": []})
        )
        .is_ok());
    }

    #[test]
    fn bad_templates_are_refused_with_the_block_named() {
        for (template, needle) in [
            (serde_json::json!({}), "array"),
            (serde_json::json!([]), "1 to"),
            (
                serde_json::json!([{"heading": "a", "text": "b"}]),
                "block 0",
            ),
            (
                serde_json::json!([{"field": "VIN"}]),
                "block 0: field and path",
            ),
            (
                serde_json::json!([{"text": "ok"}, {"table": "x", "columns": []}]),
                "block 1",
            ),
        ] {
            let err = check_template(&template).unwrap_err().to_string();
            assert!(err.contains(needle), "{template}: {err}");
        }
    }

    #[test]
    fn a_report_prints_fields_tables_counts_and_conditional_text() {
        let facts = SessionFacts {
            id: Uuid::nil(),
            station: "Kiosk 1".into(),
            started: "2026-12-02 10:00 UTC".into(),
            ended: None,
        };
        let data = serde_json::json!({
            "vehicle": {"vin": "WVWZZZ1JZXW000001", "make": "VW"},
            "dtc_codes": [{"code": "P0300", "severity": "high", "description": "Misfire"},
                          {"code": "P0171", "severity": "low", "description": "Lean"}],
            "cleared": true
        });
        let bytes = render(
            "Demo",
            "Vehicle diagnostics report",
            &demo_kinds()[0].2,
            &data,
            &facts,
            Uuid::nil(),
        );
        let text = String::from_utf8_lossy(&bytes);
        for needle in [
            "(VIN: WVWZZZ1JZXW000001)",
            "(P0300)",
            "(Misfire)",
            "(Codes by severity: high)",
            "(The fault codes were cleared after the scan.)",
            "(Model: -)",
        ] {
            assert!(text.contains(needle), "{needle} missing");
        }
    }
}
