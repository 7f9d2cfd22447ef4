//! Charging transactions: a charger's StartTransaction / TransactionEvent(Started) becomes a metered session of the
//! tag's patron (open-ended, billed by the billing tick from the wallet, energy from the meter values), and its
//! Stop ends the session at the charger's time with the final meter. A session started in the cloud (staff, the
//! patron app) asks the charger to start (RemoteStartTransaction / RequestStartTransaction) with a tag made for the
//! session, and the charger's transaction joins that session.
//!
//! Robustness, as the field learned it: a StartTransaction sent twice (its answer lost) gets the same transaction;
//! a stop for an unknown transaction is answered and recorded; a transaction run offline with a tag nobody knows
//! is kept (the tag stored blocked) rather than lost; 2.0.1 events repeated with a seen `seqNo` are answered, not
//! applied.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::calls::{self, Request};
use super::tags::{self, TagStatus, Verdict};
use super::{Charger, Protocol};
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::sessions::{self, Session};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Transaction {
    pub id: Uuid,
    pub charger_id: Uuid,
    pub station_id: Uuid,
    pub connector: i32,
    pub ocpp_id: String,
    /// None for free vend (no tag was presented).
    pub id_tag: Option<String>,
    /// What the tag was judged at the start, or `FreeVend` / `Pending` (no tag: see [`Untagged`]).
    pub auth_status: String,
    pub session_id: Option<Uuid>,
    /// The energy register (Wh) at the start (the baseline) and at the last reading: None until the charger's
    /// first reading (a 2.0.1 start may carry none), which then becomes the baseline.
    pub meter_start_wh: Option<i64>,
    pub meter_last_wh: Option<i64>,
    pub power_w: Option<i32>,
    pub started_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<String>,
    pub offline: bool,
}

impl Transaction {
    pub fn energy_wh(&self) -> i64 {
        match (self.meter_start_wh, self.meter_last_wh) {
            (Some(start), Some(last)) => (last - start).max(0),
            _ => 0,
        }
    }
}

/// The baseline is the start's reading, else the first one taken (`meter_first_wh`): the start's own column never
/// changes, as it is part of the start's key.
const COLUMNS: &str =
    "id, charger_id, station_id, connector, ocpp_id, id_tag, auth_status, session_id,
    coalesce(meter_start_wh, meter_first_wh) as meter_start_wh, meter_last_wh, power_w, started_at, stopped_at,
    stop_reason, offline";

/// A station's transactions, newest first.
pub async fn list(tx: &mut TenantTx, station: Uuid, limit: i64) -> Result<Vec<Transaction>> {
    let sql = format!(
        "select {COLUMNS} from charging_transaction where tenant_id = $1 and station_id = $2
         order by started_at desc limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(station)
        .bind(limit.clamp(1, 500))
        .fetch_all(tx.conn())
        .await?)
}

pub async fn by_ocpp_id(
    tx: &mut TenantTx,
    charger: Uuid,
    ocpp_id: &str,
) -> Result<Option<Transaction>> {
    let sql = format!(
        "select {COLUMNS} from charging_transaction where tenant_id = $1 and charger_id = $2 and ocpp_id = $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(charger)
        .bind(ocpp_id)
        .fetch_optional(tx.conn())
        .await?)
}

/// The transaction running on a connector of a charger, if any.
pub async fn running_on(
    tx: &mut TenantTx,
    charger: Uuid,
    connector: i32,
) -> Result<Option<Transaction>> {
    let sql = format!(
        "select {COLUMNS} from charging_transaction
         where tenant_id = $1 and charger_id = $2 and connector = $3 and stopped_at is null
         order by started_at desc limit 1"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(charger)
        .bind(connector)
        .fetch_optional(tx.conn())
        .await?)
}

/// The tag a session started in the cloud hands the charger (RemoteStart's idTag): 20 characters (1.6's limit)
/// drawn from the session id's random part.
pub fn session_tag(session: Uuid) -> String {
    let hex = session.simple().to_string();
    format!("SY{}", &hex[14..32])
}

/// Authorize: judges a tag at this charger. A tag that a session started in the cloud handed the charger is
/// accepted there.
pub async fn authorize(tx: &mut TenantTx, charger: &Charger, uid: &str) -> Result<Verdict> {
    if waiting_session(tx, charger, uid, None).await?.is_some() {
        return Ok(Verdict {
            status: TagStatus::Accepted,
            expires_at: None,
            parent: None,
            patron_id: None,
        });
    }
    tags::judge(tx, uid, charger.station_id, Utc::now()).await
}

/// A running session at the charger's station that waits for the charger to start (it was started in the cloud)
/// and handed it `uid`.
async fn waiting_session(
    tx: &mut TenantTx,
    charger: &Charger,
    uid: &str,
    connector: Option<i32>,
) -> Result<Option<Session>> {
    let Some(station) = charger.station_id else {
        return Ok(None);
    };
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "select s.id from session s where s.tenant_id = $1 and s.station_id = $2 and s.status in ('active', 'paused')
           and ($3::int is null or s.connector is null or s.connector = $3)
           and not exists (select 1 from charging_transaction t where t.tenant_id = s.tenant_id
                             and t.session_id = s.id)",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(connector)
    .fetch_all(tx.conn())
    .await?;
    for id in ids {
        if session_tag(id) == uid {
            return Ok(Some(sessions::get(tx, id).await?));
        }
    }
    Ok(None)
}

/// The transaction `t` known from now on by `ocpp_id` (the id an edge bridge gave its charger for the same start);
/// unchanged when another transaction of the charger has that id.
async fn take_id(tx: &mut TenantTx, t: Transaction, ocpp_id: &str) -> Result<Transaction> {
    let sql = format!(
        "update charging_transaction t set ocpp_id = $3
         where t.tenant_id = $1 and t.id = $2
           and not exists (select 1 from charging_transaction o
                           where o.tenant_id = t.tenant_id and o.charger_id = t.charger_id and o.ocpp_id = $3)
         returning {COLUMNS}"
    );
    let renamed: Option<Transaction> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(t.id)
        .bind(ocpp_id)
        .fetch_optional(tx.conn())
        .await?;
    let Some(renamed) = renamed else {
        tracing::warn!(transaction.id = %t.id, ocpp_id, "a replayed start's id is another transaction's; the transaction keeps its own");
        return Ok(t);
    };
    // A remote stop queued for the charger under the old id (while the tunnel was down) asks by the new one.
    sqlx::query(
        "update ocpp_call set payload = jsonb_set(payload, '{transactionId}', to_jsonb($4::bigint))
         where tenant_id = $1 and charger_id = $2 and status = 'pending' and action = 'RemoteStopTransaction'
           and payload->>'transactionId' = $3",
    )
    .bind(tx.tenant())
    .bind(t.charger_id)
    .bind(&t.ocpp_id)
    .bind(renamed.ocpp_id.parse::<i64>().unwrap_or(-1))
    .execute(tx.conn())
    .await?;
    let detail = json!({ "from": t.ocpp_id, "to": renamed.ocpp_id, "transaction_id": t.id });
    audit::record_as(
        tx,
        None,
        None,
        Entry {
            action: "charging.transaction_id_taken",
            object_type: "charger",
            object_id: Some(t.charger_id),
            detail,
        },
    )
    .await?;
    Ok(renamed)
}

/// A transaction's start as a charger reports it.
#[derive(Debug, Clone)]
pub struct Start {
    pub connector: i32,
    pub id_tag: String,
    /// The energy register at the start (Wh), where the charger reported one.
    pub meter_start_wh: Option<i64>,
    pub at: DateTime<Utc>,
    /// 2.0.1: the charger's transaction id; 1.6: none (the central system hands one out).
    pub ocpp_id: Option<String>,
    pub reservation_id: Option<i32>,
    pub offline: bool,
    /// 1.6, replayed from an edge bridge's journal: `ocpp_id` is the id the bridge gave the charger.
    pub journaled: bool,
}

/// Starts a transaction (once: the same start reported again gets the same transaction). Returns it with the tag's
/// verdict as the charger should hear it.
pub async fn start(
    tx: &mut TenantTx,
    charger: &Charger,
    start: Start,
) -> Result<(Transaction, Verdict)> {
    let station_id = charger
        .station_id
        .ok_or(Error::Conflict("this charger is not adopted yet".into()))?;
    let connector = start.connector.clamp(1, 64);
    // Same start again (its answer was lost)?
    let sql = format!(
        "select {COLUMNS} from charging_transaction
         where tenant_id = $1 and charger_id = $2 and connector = $3 and id_tag = $4 and started_at = $5
           and meter_start_wh = $6"
    );
    let again: Option<Transaction> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(charger.id)
        .bind(connector)
        .bind(&start.id_tag)
        .bind(start.at)
        .bind(start.meter_start_wh)
        .fetch_optional(tx.conn())
        .await?;
    let again = match (again, &start.ocpp_id) {
        // The same start, recorded live under the cloud's id, now replayed from a bridge's journal under the
        // bridge's: the answer to the live one was lost with the tunnel, the charger asked again, and the bridge
        // gave it its own id, which is the one its later messages carry. The transaction takes that id (unless
        // another of the charger's has it).
        (Some(t), Some(ocpp_id)) if start.journaled && t.ocpp_id != *ocpp_id => {
            Some(take_id(tx, t, ocpp_id).await?)
        }
        (Some(t), _) => Some(t),
        (None, Some(ocpp_id)) => by_ocpp_id(tx, charger.id, ocpp_id).await?,
        (None, None) => None,
    };
    if let Some(t) = again {
        let verdict = verdict_again(tx, charger, &t, &start.id_tag).await?;
        return Ok((t, verdict));
    }

    let (session, verdict, unbillable) = open_session(
        tx,
        charger,
        station_id,
        connector,
        &start.id_tag,
        billable_from(charger, start.at, start.journaled),
        start.meter_start_wh,
        start.offline,
    )
    .await?;
    let ocpp_id = match start.ocpp_id {
        Some(id) => id,
        None => sqlx::query_scalar::<_, i32>("select nextval('ocpp_transaction_id_seq')::int")
            .fetch_one(tx.conn())
            .await?
            .to_string(),
    };
    let sql = format!(
        "insert into charging_transaction (tenant_id, id, charger_id, station_id, connector, ocpp_id, id_tag,
           auth_status, session_id, meter_start_wh, meter_last_wh, started_at, offline, reservation_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13) returning {COLUMNS}"
    );
    let transaction: Transaction = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(charger.id)
        .bind(station_id)
        .bind(connector)
        .bind(&ocpp_id)
        .bind(&start.id_tag)
        .bind(verdict.status.as_str())
        .bind(session)
        .bind(start.meter_start_wh.map(|m| m.max(0)))
        .bind(start.at)
        .bind(start.offline)
        .bind(start.reservation_id)
        .fetch_one(tx.conn())
        .await?;
    if let Some(reservation) = start.reservation_id {
        sqlx::query(
            "update charging_reservation set status = 'used' where tenant_id = $1 and id = $2
               and charger_id = $3 and status in ('requested', 'accepted')",
        )
        .bind(tx.tenant())
        .bind(reservation)
        .bind(charger.id)
        .execute(tx.conn())
        .await?;
    }
    if transaction.session_id.is_none() {
        audit_unbilled(tx, charger, &transaction, unbillable.as_deref()).await?;
    }
    metrics::counter!("ocpp_transactions_started_total", "auth" => verdict.status.as_str())
        .increment(1);
    Ok((transaction, verdict))
}

/// The verdict on `tag` for a message about transaction `t` that came again (its answer was lost): where the
/// transaction is that tag's, the status it was answered the first time (`Accepted` once it bills a session: a
/// refusal is not turned into an acceptance the charger would act on, nor an acceptance into a refusal), with the
/// tag's expiry and parent as they are now; else the tag judged now.
pub async fn verdict_again(
    tx: &mut TenantTx,
    charger: &Charger,
    t: &Transaction,
    tag: &str,
) -> Result<Verdict> {
    if t.id_tag.as_deref() != Some(tag) {
        return authorize(tx, charger, tag).await;
    }
    let verdict = tags::judge(tx, tag, Some(t.station_id), t.started_at).await?;
    let status = match t.session_id {
        Some(_) => TagStatus::Accepted,
        None => TagStatus::parse(&t.auth_status).unwrap_or(verdict.status),
    };
    Ok(Verdict { status, ..verdict })
}

/// Judges a tag presented at a start and opens the session it bills, if any: the cloud-started session that handed
/// the charger this tag, or a new one for an accepted patron's tag on a free connector. An accepted tag at a station
/// that cannot bill (archived, no tariff) opens none: the charger is told `Blocked` (one that began offline is not
/// told anything new), and the reason comes back for the audit log.
#[allow(clippy::too_many_arguments)]
async fn open_session(
    tx: &mut TenantTx,
    charger: &Charger,
    station_id: Uuid,
    connector: i32,
    tag: &str,
    at: DateTime<Utc>,
    meter_start_wh: Option<i64>,
    offline: bool,
) -> Result<(Option<Uuid>, Verdict, Option<String>)> {
    let waiting = waiting_session(tx, charger, tag, Some(connector)).await?;
    let mut verdict = match &waiting {
        Some(s) => Verdict {
            status: TagStatus::Accepted,
            expires_at: None,
            parent: None,
            patron_id: Some(s.patron_id),
        },
        None => tags::judge(tx, tag, Some(station_id), at).await?,
    };
    if waiting.is_none() && verdict.status == TagStatus::Accepted {
        let busy: bool = sqlx::query_scalar(
            "select exists (select 1 from session where tenant_id = $1 and station_id = $2
                              and coalesce(connector, 0) = $3 and status in ('active', 'paused'))",
        )
        .bind(tx.tenant())
        .bind(station_id)
        .bind(connector)
        .fetch_one(tx.conn())
        .await?;
        if busy {
            verdict.status = TagStatus::ConcurrentTx;
        }
    }
    if verdict.status == TagStatus::Invalid && offline {
        tags::keep_unknown(tx, tag).await?;
    }
    let mut unbillable = None;
    let session = match (waiting, verdict.status, verdict.patron_id) {
        (Some(s), _, _) => {
            sessions::attach_meter(tx, s.id, connector, meter_start_wh).await?;
            Some(s.id)
        }
        (None, TagStatus::Accepted, Some(patron)) => {
            // Held: an archiving waits for this start, or this start sees it archived.
            let station = crate::stations::get_held(tx, station_id).await?;
            // A station that bills nothing (archived, no tariff): a charger asking is told the tag is blocked there;
            // a transaction it began offline is kept, as an unknown tag's is.
            let started = if station.archived_at.is_some() {
                sessions::DeviceStart::Unbillable("the station is archived".into())
            } else {
                sessions::start_from_device(tx, &station, connector, patron, at, meter_start_wh)
                    .await?
            };
            match started {
                sessions::DeviceStart::Started(s) => Some(s),
                sessions::DeviceStart::Unbillable(why) => {
                    if !offline {
                        verdict.status = TagStatus::Blocked;
                    }
                    tracing::warn!(station = %station.id, reason = %why, "charging transaction kept unbilled");
                    unbillable = Some(why);
                    None
                }
            }
        }
        _ => None,
    };
    Ok((session, verdict, unbillable))
}

/// A token presented during a transaction without a tag (a 2.0.1 charger that began without asking, or before
/// anyone was authorized, then was given one: a cloud-started session's, or a patron's tap): when it opens a
/// session, the transaction becomes that tag's and is billed from the register `meter_wh` (else the last reading;
/// with none yet, from the first to come) on, and from `at` (see [`billable_from`]); what ran before was free.
/// Returns the tag's verdict.
pub async fn present_token(
    tx: &mut TenantTx,
    charger: &Charger,
    transaction: &Transaction,
    tag: &str,
    at: DateTime<Utc>,
    meter_wh: Option<i64>,
    offline: bool,
) -> Result<Verdict> {
    let meter = match (meter_wh, transaction.meter_last_wh) {
        (Some(m), last) => Some(m.max(last.unwrap_or(0))),
        (None, last) => last,
    };
    let (session, verdict, unbillable) = open_session(
        tx,
        charger,
        transaction.station_id,
        transaction.connector,
        tag,
        billable_from(charger, at, false),
        meter,
        offline,
    )
    .await?;
    if session.is_none() {
        // Not one to bill (an unknown tag, no funds, a station that cannot bill ...): the transaction stays without
        // a tag (free vend, or pending), and a later token (after a top-up, a session started in the cloud) may
        // still take it. The refusal is in the audit log, with its tag.
        let refused = Transaction {
            id_tag: Some(tag.to_owned()),
            auth_status: verdict.status.as_str().to_owned(),
            ..transaction.clone()
        };
        audit_unbilled(tx, charger, &refused, unbillable.as_deref()).await?;
        return Ok(verdict);
    }
    sqlx::query(
        "update charging_transaction set id_tag = $3, auth_status = $4, session_id = $5
         where tenant_id = $1 and id = $2 and id_tag is null",
    )
    .bind(tx.tenant())
    .bind(transaction.id)
    .bind(tag)
    .bind(verdict.status.as_str())
    .bind(session)
    .execute(tx.conn())
    .await?;
    Ok(verdict)
}

/// How a 2.0.1 transaction that began without a tag to bill began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untagged {
    /// `NoAuthorization`: the charger charges without asking anyone; billed to no one, and audited like every
    /// unbilled transaction.
    FreeVend,
    /// No token yet (the cable was plugged in first): a token in a later event starts billing it.
    Pending,
}

impl Untagged {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FreeVend => "FreeVend",
            Self::Pending => "Pending",
        }
    }
}

/// Starts a 2.0.1 transaction without a tag (free vend, or waiting for a token), once per transaction id: kept with
/// its connector, energy and time, and no session. A token given later may still open one (`present_token`).
#[allow(clippy::too_many_arguments)]
pub async fn start_untagged(
    tx: &mut TenantTx,
    charger: &Charger,
    kind: Untagged,
    connector: i32,
    ocpp_id: &str,
    meter_start_wh: Option<i64>,
    at: DateTime<Utc>,
    offline: bool,
) -> Result<Transaction> {
    let station_id = charger
        .station_id
        .ok_or(Error::Conflict("this charger is not adopted yet".into()))?;
    if let Some(t) = by_ocpp_id(tx, charger.id, ocpp_id).await? {
        return Ok(t);
    }
    let sql = format!(
        "insert into charging_transaction (tenant_id, id, charger_id, station_id, connector, ocpp_id, auth_status,
           meter_start_wh, meter_last_wh, started_at, offline)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10) returning {COLUMNS}"
    );
    let transaction: Transaction = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(charger.id)
        .bind(station_id)
        .bind(connector.clamp(1, 64))
        .bind(ocpp_id)
        .bind(kind.as_str())
        .bind(meter_start_wh.map(|m| m.max(0)))
        .bind(at)
        .bind(offline)
        .fetch_one(tx.conn())
        .await?;
    if kind == Untagged::FreeVend {
        audit_unbilled(tx, charger, &transaction, None).await?;
    }
    metrics::counter!("ocpp_transactions_started_total", "auth" => kind.as_str()).increment(1);
    Ok(transaction)
}

/// The time a session opened by a start the charger stamped `at` is billed from: `at`, but not before the cloud last
/// heard from the charger (before this message), with a minute's grace for the messages that come just before a
/// start. A charger whose clock runs slow (or was reset) is not billed for hours before the start; a start held up
/// offline, or in a bridge's journal, counts from when it happened. A start stamped before the charger's connection
/// began was held up offline: the charger was last heard before its outage (never heard before: from the
/// connection, as no start could have been authorized for a patron before it).
fn billable_from(charger: &Charger, at: DateTime<Utc>, journaled: bool) -> DateTime<Utc> {
    if journaled {
        return at;
    }
    let heard = if let Some(connected) = charger.connected_at.filter(|c| at < *c) {
        Some(charger.seen_before_connect_at.unwrap_or(connected))
    } else {
        let grace = Utc::now() - chrono::Duration::minutes(1);
        Some(charger.last_seen_at.map_or(grace, |l| l.min(grace)))
    };
    heard.map_or(at, |h| at.max(h))
}

/// A transaction kept without a session to bill (a tag not accepted, free vend, a station that cannot bill — then
/// `reason` says why): in the audit log for operators.
async fn audit_unbilled(
    tx: &mut TenantTx,
    charger: &Charger,
    t: &Transaction,
    reason: Option<&str>,
) -> Result<()> {
    audit::record_as(
        tx,
        None,
        None,
        Entry {
            action: "charging.unbilled_transaction",
            object_type: "charger",
            object_id: Some(charger.id),
            detail: json!({
                "transaction": t.ocpp_id, "id_tag": t.id_tag,
                "auth_status": t.auth_status, "offline": t.offline, "reason": reason,
            }),
        },
    )
    .await
}

/// A meter reading a charger sent: for a transaction by its OCPP id, or (none given) for whatever runs on the
/// connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub charger: Uuid,
    pub transaction: Option<String>,
    pub connector: i32,
    /// The energy register in Wh.
    pub energy_wh: Option<i64>,
    pub power_w: Option<i32>,
}

/// Records readings of this tenant's chargers: the running transactions they name take them in one statement
/// (a stopped or unknown transaction takes nothing), and the sessions of billed ones are metered (live energy and
/// cost, `session.metered`). Many chargers' readings in one call is how a busy process keeps up (group commit,
/// `switchyard-api`'s `ocpp::meters`).
pub async fn record(tx: &mut TenantTx, readings: &[Reading]) -> Result<()> {
    if readings.is_empty() {
        return Ok(());
    }
    let chargers: Vec<Uuid> = readings.iter().map(|r| r.charger).collect();
    let ids: Vec<Option<&str>> = readings.iter().map(|r| r.transaction.as_deref()).collect();
    let connectors: Vec<i32> = readings.iter().map(|r| r.connector).collect();
    let energy: Vec<Option<i64>> = readings
        .iter()
        .map(|r| r.energy_wh.map(|e| e.max(0)))
        .collect();
    let power: Vec<Option<i32>> = readings.iter().map(|r| r.power_w).collect();
    let metered: Vec<(Option<Uuid>, Option<i64>, Option<i32>)> = sqlx::query_as(
        "with r as (
           select * from unnest($2::uuid[], $3::text[], $4::int4[], $5::int8[], $6::int4[])
             as r(charger_id, ocpp_id, connector, energy, power)
         ), m as (
           select distinct on (t.id) t.id, r.energy, r.power from r
           join lateral (
             select t.id from charging_transaction t
             where t.tenant_id = $1 and t.charger_id = r.charger_id and t.stopped_at is null
               and (t.ocpp_id = r.ocpp_id or r.ocpp_id is null and t.connector = r.connector)
             order by t.started_at desc limit 1
           ) t on true
         )
         update charging_transaction t
           set meter_first_wh = coalesce(t.meter_first_wh, m.energy),
               meter_last_wh = greatest(t.meter_last_wh, m.energy),
               power_w = coalesce(m.power, t.power_w)
         from m where t.tenant_id = $1 and t.id = m.id
         returning t.session_id, m.energy, m.power",
    )
    .bind(tx.tenant())
    .bind(&chargers)
    .bind(&ids)
    .bind(&connectors)
    .bind(&energy)
    .bind(&power)
    .fetch_all(tx.conn())
    .await?;
    let billed: Vec<(Uuid, i64, Option<i32>)> = metered
        .into_iter()
        .filter_map(|(session, energy, power)| Some((session?, energy?, power)))
        .collect();
    sessions::meter_many(tx, &billed).await?;
    Ok(())
}

/// A meter reading for a transaction: the energy register (Wh) and the power (W) at `at`. The session's energy and
/// so its live cost follow. Returns the session's cost so far (for the charger's display), if it is billed.
pub async fn meter(
    tx: &mut TenantTx,
    transaction: &Transaction,
    register_wh: Option<i64>,
    power_w: Option<i32>,
) -> Result<Option<i64>> {
    sqlx::query(
        "update charging_transaction set meter_first_wh = coalesce(meter_first_wh, $3),
           meter_last_wh = greatest(meter_last_wh, $3), power_w = coalesce($4, power_w)
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(transaction.id)
    .bind(register_wh.map(|r| r.max(0)))
    .bind(power_w)
    .execute(tx.conn())
    .await?;
    let Some(session) = transaction.session_id else {
        return Ok(None);
    };
    let session = match register_wh {
        Some(r) => sessions::meter(tx, session, r, power_w).await?,
        None => sessions::get(tx, session).await?,
    };
    Ok(Some(session.chargeable_at(Utc::now())))
}

/// A transaction's stop as a charger reports it.
#[derive(Debug, Clone)]
pub struct Stop {
    pub meter_stop_wh: Option<i64>,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    /// Replayed from a bridge's journal: held up while its tunnel was down, so `at` is when it happened.
    pub journaled: bool,
}

/// What a stop found.
#[derive(Debug)]
pub enum Stopped {
    /// The transaction, stopped now or before (a repeated stop changes nothing); the session's final cost.
    Known(Box<Transaction>, Option<i64>),
    /// No such transaction (or `-1`): answered and recorded, nothing else.
    Unknown,
}

/// Stops a transaction at the charger's time with its final meter; its session ends there and is settled.
pub async fn stop(
    tx: &mut TenantTx,
    charger: &Charger,
    ocpp_id: &str,
    stop: Stop,
) -> Result<Stopped> {
    let Some(transaction) = by_ocpp_id(tx, charger.id, ocpp_id).await? else {
        // Recorded once: a charger that lost the answer sends the same stop again.
        let detail =
            json!({ "transaction": ocpp_id, "meter_stop_wh": stop.meter_stop_wh, "at": stop.at });
        let recorded: bool = sqlx::query_scalar(
            "select exists (select 1 from audit_log where tenant_id = $1 and object_type = 'charger'
                              and object_id = $2 and action = 'charging.unknown_transaction_stop'
                              and detail = $3)",
        )
        .bind(tx.tenant())
        .bind(charger.id)
        .bind(&detail)
        .fetch_one(tx.conn())
        .await?;
        if !recorded {
            audit::record_system_in(
                tx,
                charger.venue_id,
                Entry {
                    action: "charging.unknown_transaction_stop",
                    object_type: "charger",
                    object_id: Some(charger.id),
                    detail,
                },
            )
            .await?;
            metrics::counter!("ocpp_unknown_transaction_stops_total").increment(1);
        }
        return Ok(Stopped::Unknown);
    };
    if transaction.stopped_at.is_some() {
        let cost = match transaction.session_id {
            Some(s) => Some(sessions::get(tx, s).await?.charged_amount),
            None => None,
        };
        return Ok(Stopped::Known(Box::new(transaction), cost));
    }
    let at = stop.at.min(Utc::now()).max(transaction.started_at);
    let sql = format!(
        "update charging_transaction set stopped_at = $3, stop_reason = $4,
           meter_first_wh = coalesce(meter_first_wh, $5), meter_last_wh = greatest(meter_last_wh, $5)
         where tenant_id = $1 and id = $2 returning {COLUMNS}"
    );
    let transaction: Transaction = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(transaction.id)
        .bind(at)
        .bind(
            stop.reason
                .as_deref()
                .map(|r| r.chars().take(50).collect::<String>()),
        )
        .bind(stop.meter_stop_wh.map(|m| m.max(0)))
        .fetch_one(tx.conn())
        .await?;
    let cost = match transaction.session_id {
        Some(session) => {
            // The session ends at the charger's time, but not before the cloud last heard from the charger (before
            // this message): a live stop from a charger whose clock runs slow gives back nothing it owed, while a
            // stop held up offline, or in a bridge's journal, counts from when it happened. A stop stamped before
            // the charger's connection began was held up offline: the charger was last heard before its outage.
            let heard = if stop.journaled {
                at
            } else if charger.connected_at.is_some_and(|connected| at < connected) {
                charger.seen_before_connect_at.unwrap_or(at)
            } else {
                charger.last_seen_at.unwrap_or(at)
            }
            .min(Utc::now());
            let ended =
                sessions::end_reported(tx, session, at.max(heard), stop.meter_stop_wh).await?;
            Some(ended.charged_amount)
        }
        None => None,
    };
    metrics::counter!("ocpp_transactions_stopped_total").increment(1);
    // Staff screens hear it (a cloud stop ended the session already; the charger's stop comes later).
    let data = json!({
        "chargerId": charger.id, "transactionId": transaction.ocpp_id,
        "energyWh": transaction.energy_wh(), "reason": transaction.stop_reason,
    });
    tx.emit(super::event("charger.transaction_stopped", charger, data));
    Ok(Stopped::Known(Box::new(transaction), cost))
}

/// 2.0.1: records a TransactionEvent's `seqNo` for a transaction; false when it was seen before (answer it, do not
/// apply it again).
pub async fn first_seen(
    tx: &mut TenantTx,
    transaction: Uuid,
    seq_no: i32,
    event: &str,
) -> Result<bool> {
    let inserted = sqlx::query(
        "insert into charging_transaction_event (tenant_id, transaction_id, seq_no, event_type)
         values ($1, $2, $3, $4) on conflict do nothing",
    )
    .bind(tx.tenant())
    .bind(transaction)
    .bind(seq_no)
    .bind(event)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// 2.0.1: keeps the answer given to event `seq_no` of a transaction, for a repeat of it.
pub async fn answered(
    tx: &mut TenantTx,
    transaction: Uuid,
    seq_no: i32,
    answer: &serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "update charging_transaction_event set answer = $4
         where tenant_id = $1 and transaction_id = $2 and seq_no = $3",
    )
    .bind(tx.tenant())
    .bind(transaction)
    .bind(seq_no)
    .bind(answer)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// 2.0.1: the answer event `seq_no` of a transaction got the first time (none for one kept before answers were).
pub async fn answer_of(
    tx: &mut TenantTx,
    transaction: Uuid,
    seq_no: i32,
) -> Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar(
        "select answer from charging_transaction_event
         where tenant_id = $1 and transaction_id = $2 and seq_no = $3",
    )
    .bind(tx.tenant())
    .bind(transaction)
    .bind(seq_no)
    .fetch_optional(tx.conn())
    .await?
    .flatten())
}

/// A session's command for its station's charger (from `sessions`): switching on asks the charger to start with
/// the session's tag, switching off asks it to stop the session's running transaction. Other commands (warnings,
/// extensions) mean nothing to a charger.
pub(crate) async fn session_command(
    tx: &mut TenantTx,
    station: Uuid,
    session: Option<Uuid>,
    command: &str,
) -> Result<()> {
    let Some(session) = session else {
        return Ok(());
    };
    let Ok(charger) = super::of_station(tx, station).await else {
        return Ok(());
    };
    let request = match command {
        "switch_on" => {
            let s = sessions::get(tx, session).await?;
            if s.origin == "device" {
                return Ok(());
            }
            let tag = session_tag(session);
            let connector = s.connector.unwrap_or(1);
            match charger.protocol() {
                Protocol::V16 => Request {
                    action: "RemoteStartTransaction",
                    payload: json!({ "connectorId": connector, "idTag": tag }),
                },
                Protocol::V201 => Request {
                    action: "RequestStartTransaction",
                    payload: json!({
                        "evseId": connector,
                        "remoteStartId": remote_start_id(session),
                        "idToken": { "idToken": tag, "type": "Central" },
                    }),
                },
            }
        }
        "switch_off" => {
            let running: Option<String> = sqlx::query_scalar(
                "select ocpp_id from charging_transaction where tenant_id = $1 and session_id = $2
                   and stopped_at is null",
            )
            .bind(tx.tenant())
            .bind(session)
            .fetch_optional(tx.conn())
            .await?;
            let Some(ocpp_id) = running else {
                return Ok(());
            };
            match charger.protocol() {
                Protocol::V16 => Request {
                    action: "RemoteStopTransaction",
                    payload: json!({ "transactionId": ocpp_id.parse::<i64>().unwrap_or(-1) }),
                },
                Protocol::V201 => Request {
                    action: "RequestStopTransaction",
                    payload: json!({ "transactionId": ocpp_id }),
                },
            }
        }
        _ => return Ok(()),
    };
    calls::enqueue(tx, &charger, request, Some(session), None).await?;
    Ok(())
}

/// 2.0.1's `remoteStartId`: a positive integer from the session id.
fn remote_start_id(session: Uuid) -> i64 {
    let bytes = session.as_bytes();
    i64::from(u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) >> 1)
}

/// The charger refused a remote start: the session that waited for it fails, and what it charged goes back.
pub(crate) async fn remote_start_refused(tx: &mut TenantTx, session: Uuid) -> Result<()> {
    let started: bool = sqlx::query_scalar(
        "select exists (select 1 from charging_transaction where tenant_id = $1 and session_id = $2)",
    )
    .bind(tx.tenant())
    .bind(session)
    .fetch_one(tx.conn())
    .await?;
    if !started {
        sessions::fail_unstarted(tx, session, "the charger refused to start").await?;
    }
    Ok(())
}

/// Reserves a connector (0: any) of a charger for a patron until `expires_at` (ReserveNow); the reservation's
/// standing follows the charger's answer.
pub async fn reserve(
    tx: &mut TenantTx,
    actor: &Actor,
    charger_id: Uuid,
    connector: i32,
    patron_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<(i32, calls::Call)> {
    actor.require_manager()?;
    let charger = super::get(tx, charger_id).await?;
    let station = charger
        .station_id
        .ok_or(Error::Conflict("this charger is not adopted yet".into()))?;
    charger.check_scope(actor, "charger")?;
    if !(0..=64).contains(&connector) {
        return Err(Error::validation("connector", "must be between 0 and 64"));
    }
    let now = Utc::now();
    if expires_at <= now {
        return Err(Error::validation("expiresAt", "must be in the future"));
    }
    // A reservation holds a connector others could charge at: a day at most (the console offers up to 1,440
    // minutes from the browser's clock; ten minutes more for that clock running ahead of this server's).
    if expires_at > now + chrono::Duration::minutes(24 * 60 + 10) {
        return Err(Error::validation(
            "expiresAt",
            "must be within 24 hours from now",
        ));
    }
    crate::patrons::get(tx, patron_id).await?;
    let tag: String = sqlx::query_scalar(
        "select uid from rfid_tag where tenant_id = $1 and patron_id = $2 and not blocked order by uid limit 1",
    )
    .bind(tx.tenant())
    .bind(patron_id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Error::validation("patronId", "this patron has no usable RFID tag to reserve with"))?;
    let id: i32 = sqlx::query_scalar(
        "insert into charging_reservation (tenant_id, charger_id, station_id, connector, patron_id, id_tag,
           expires_at) values ($1, $2, $3, $4, $5, $6, $7) returning id",
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .bind(station)
    .bind(connector)
    .bind(patron_id)
    .bind(&tag)
    .bind(expires_at)
    .fetch_one(tx.conn())
    .await?;
    let request = match charger.protocol() {
        Protocol::V16 => Request {
            action: "ReserveNow",
            payload: json!({
                "connectorId": connector, "expiryDate": expires_at, "idTag": tag, "reservationId": id,
            }),
        },
        Protocol::V201 => {
            let mut p = json!({
                "id": id, "expiryDateTime": expires_at, "idToken": { "idToken": tag, "type": "ISO14443" },
            });
            if connector > 0 {
                p["evseId"] = json!(connector);
            }
            Request {
                action: "ReserveNow",
                payload: p,
            }
        }
    };
    let call = calls::enqueue(tx, &charger, request, None, Some(actor.user_id)).await?;
    audit::record_in(
        tx,
        actor,
        charger.venue_id,
        Entry {
            action: "charger.reserve",
            object_type: "charger",
            object_id: Some(charger.id),
            detail: json!({ "reservation": id, "patron_id": patron_id, "expires_at": expires_at }),
        },
    )
    .await?;
    Ok((id, call))
}

/// Cancels a reservation (CancelReservation).
pub async fn cancel_reservation(
    tx: &mut TenantTx,
    actor: &Actor,
    reservation: i32,
) -> Result<calls::Call> {
    actor.require_manager()?;
    let charger_id: Uuid = sqlx::query_scalar(
        "select charger_id from charging_reservation where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(reservation)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(Error::NotFound("reservation"))?;
    let charger = super::get(tx, charger_id).await?;
    charger.check_scope(actor, "reservation")?;
    let request = Request {
        action: "CancelReservation",
        payload: json!({ "reservationId": reservation }),
    };
    calls::enqueue(tx, &charger, request, None, Some(actor.user_id)).await
}

/// The reservation of a patron's tag at this charger (a reservation's idTag may start there).
pub async fn reservation_of(
    tx: &mut TenantTx,
    reservation: i32,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "select id_tag, status from charging_reservation where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(reservation)
    .fetch_optional(tx.conn())
    .await?)
}
