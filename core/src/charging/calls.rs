//! Calls from the central system to chargers: an outbox (`ocpp_call`) written in the transaction of the change that
//! causes it, so that it exists exactly when that change commits. Whichever API replica holds the charger's
//! connection is woken (the venue wake-up the bridges use) and sends the calls in order, one in flight at a time;
//! the answer, a CALLERROR or a timeout is written back, and what the answer means is applied (a refused remote
//! start fails its session, an accepted local list moves the charger's version, a reported configuration is
//! merged into what was known, an accepted change replaces the value reported).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::tags::ListEntry;
use super::{Charger, Protocol};
use crate::audit::{self, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;

/// A call as written: the OCPP action and its payload, for the charger's version.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub action: &'static str,
    pub payload: Value,
}

impl Request {
    fn new(action: &'static str, payload: Value) -> Self {
        Self { action, payload }
    }

    /// Asks the charger to send a BootNotification again.
    pub fn trigger_boot(protocol: Protocol) -> Self {
        Self::trigger(protocol, "BootNotification", None)
    }

    /// TriggerMessage for `message` (1.6 names: BootNotification, Heartbeat, MeterValues, StatusNotification ...).
    pub fn trigger(protocol: Protocol, message: &str, connector: Option<i32>) -> Self {
        match protocol {
            Protocol::V16 => {
                let mut p = json!({ "requestedMessage": message });
                if let Some(c) = connector {
                    p["connectorId"] = c.into();
                }
                Self::new("TriggerMessage", p)
            }
            Protocol::V201 => {
                let mut p = json!({ "requestedMessage": message });
                if let Some(c) = connector {
                    p["evse"] = json!({ "id": c });
                }
                Self::new("TriggerMessage", p)
            }
        }
    }

    /// 2.0.1 CostUpdated: the running cost (in the currency's major units) on the charger's display.
    pub fn cost_updated(total_cost: Value, transaction: &str) -> Self {
        Self::new(
            "CostUpdated",
            json!({ "totalCost": total_cost, "transactionId": transaction }),
        )
    }

    /// Sends the local authorization list: the whole list or the changes, bringing the charger to `version`.
    pub fn local_list(protocol: Protocol, version: i64, full: bool, entries: &[ListEntry]) -> Self {
        let update = if full { "Full" } else { "Differential" };
        let version = i32::try_from(version).unwrap_or(i32::MAX);
        match protocol {
            Protocol::V16 => {
                let fits = |uid: &str| uid.chars().count() <= super::tags::MAX_UID_V16;
                let list: Vec<Value> = entries
                    .iter()
                    .filter(|e| fits(&e.uid))
                    .map(|e| {
                        let mut info = json!({ "status": e.status.v16() });
                        if let Some(x) = e.expires_at {
                            info["expiryDate"] = json!(x);
                        }
                        if let Some(p) = e.parent.as_deref().filter(|p| fits(p)) {
                            info["parentIdTag"] = json!(p);
                        }
                        json!({ "idTag": e.uid, "idTagInfo": info })
                    })
                    .collect();
                Self::new(
                    "SendLocalList",
                    json!({ "listVersion": version, "updateType": update, "localAuthorizationList": list }),
                )
            }
            Protocol::V201 => {
                // Tags from before uids were held to 36 characters may be longer: no 2.0.1 charger takes them.
                let fits = |uid: &str| uid.chars().count() <= super::tags::MAX_UID;
                let list: Vec<Value> = entries
                    .iter()
                    .filter(|e| fits(&e.uid))
                    .map(|e| {
                        let mut info = json!({ "status": e.status.as_str() });
                        if let Some(x) = e.expires_at {
                            info["cacheExpiryDateTime"] = json!(x);
                        }
                        if let Some(p) = e.parent.as_deref().filter(|p| fits(p)) {
                            info["groupIdToken"] = json!({ "idToken": p, "type": "ISO14443" });
                        }
                        json!({
                            "idToken": { "idToken": e.uid, "type": "ISO14443" },
                            "idTokenInfo": info,
                        })
                    })
                    .collect();
                Self::new(
                    "SendLocalList",
                    json!({ "versionNumber": version, "updateType": update, "localAuthorizationList": list }),
                )
            }
        }
    }
}

/// A call as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Call {
    pub id: Uuid,
    pub charger_id: Uuid,
    pub action: String,
    pub payload: Value,
    /// `pending`, `sent`, `answered`, `error` (a CALLERROR or a lost connection), `timeout`, `expired`.
    pub status: String,
    pub response: Option<Value>,
    pub error: Option<String>,
    pub session_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub answered_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, charger_id, action, payload, status, response, error, session_id, created_at, sent_at,
    answered_at";

/// Writes a call to the outbox and wakes the charger's connection.
pub async fn enqueue(
    tx: &mut TenantTx,
    charger: &Charger,
    request: Request,
    session: Option<Uuid>,
    requested_by: Option<Uuid>,
) -> Result<Call> {
    let sql = format!(
        "insert into ocpp_call (tenant_id, id, charger_id, action, payload, session_id, requested_by)
         values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
    );
    let call: Call = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(Uuid::now_v7())
        .bind(charger.id)
        .bind(request.action)
        .bind(&request.payload)
        .bind(session)
        .bind(requested_by)
        .fetch_one(tx.conn())
        .await?;
    super::wake(tx, charger).await?;
    Ok(call)
}

/// Queues a transaction's running cost for the charger's display (2.0.1 `CostUpdated`): a cost still waiting to go
/// out for the same transaction takes the new figure instead, so a charger slow to answer (or never answering)
/// gets one update per transaction in the queue, the latest, rather than one per reading, each ahead of the calls
/// queued after it (a stop, say).
pub async fn cost_updated(
    tx: &mut TenantTx,
    charger: &Charger,
    request: Request,
    session: Option<Uuid>,
) -> Result<()> {
    let replaced = sqlx::query(
        "update ocpp_call set payload = $3
         where tenant_id = $1 and charger_id = $2 and action = 'CostUpdated' and status = 'pending'
           and payload->'transactionId' = $3->'transactionId'",
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .bind(&request.payload)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if replaced == 0 {
        enqueue(tx, charger, request, session, None).await?;
    }
    Ok(())
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Call> {
    let sql = format!("select {COLUMNS} from ocpp_call where tenant_id = $1 and id = $2");
    sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(Error::NotFound("charger call"))
}

/// A charger's latest calls, newest first.
pub async fn list(tx: &mut TenantTx, charger: Uuid, limit: i64) -> Result<Vec<Call>> {
    let sql = format!(
        "select {COLUMNS} from ocpp_call where tenant_id = $1 and charger_id = $2 order by created_at desc, id desc
         limit $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(charger)
        .bind(limit.clamp(1, 500))
        .fetch_all(tx.conn())
        .await?)
}

/// Takes the charger's oldest pending call for `connection` (marking it sent), after expiring calls that waited
/// longer than `ttl` for a connection. `None` when nothing waits.
pub async fn take_next(
    tx: &mut TenantTx,
    charger: Uuid,
    connection: Uuid,
    ttl: chrono::Duration,
) -> Result<Option<Call>> {
    expire_unsent(
        tx,
        charger,
        Some(Utc::now() - ttl),
        "the charger was not connected in time",
    )
    .await?;
    let sql = format!(
        "update ocpp_call set status = 'sent', sent_at = now(), connection_id = $3
         where tenant_id = $1 and id = (
           select id from ocpp_call where tenant_id = $1 and charger_id = $2 and status = 'pending'
           order by created_at, id limit 1 for update skip locked)
         returning {COLUMNS}"
    );
    let call: Option<Call> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(charger)
        .bind(connection)
        .fetch_optional(tx.conn())
        .await?;
    // Sent once this commits, never again: a secret in it is not kept.
    if let Some(c) = &call {
        forget_secrets(tx, &[(c.id, c.action.clone(), c.payload.clone())]).await?;
    }
    Ok(call)
}

/// How a call ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The CALLRESULT's payload.
    Answered(Value),
    /// A CALLERROR: code and description.
    Error(String, String),
    TimedOut,
}

/// Writes a call's outcome (once: a late answer to a call already timed out changes nothing) and applies what it
/// means.
pub async fn finished(
    tx: &mut TenantTx,
    charger: &Charger,
    id: Uuid,
    outcome: Outcome,
) -> Result<()> {
    // The charger's row first, as every writer of both takes them (connecting, rotating a password).
    sqlx::query("select 1 from charger where tenant_id = $1 and id = $2 for no key update")
        .bind(tx.tenant())
        .bind(charger.id)
        .execute(tx.conn())
        .await?;
    // What a charger answers is stored as it came, but for a NUL, which Postgres cannot hold (see `without_nul`).
    let (status, response, error) = match &outcome {
        Outcome::Answered(p) => {
            let mut response = reported_without_secrets(p);
            crate::validate::without_nul(&mut response);
            ("answered", Some(response), None)
        }
        Outcome::Error(code, text) => (
            "error",
            None,
            Some(format!("{code}: {text}").replace('\0', "\u{FFFD}")),
        ),
        Outcome::TimedOut => (
            "timeout",
            None,
            Some("the charger did not answer in time".to_owned()),
        ),
    };
    let sql = format!(
        "update ocpp_call set status = $3, response = $4, error = $5, answered_at = now()
         where tenant_id = $1 and id = $2 and status = 'sent' returning {COLUMNS}"
    );
    let Some(call): Option<Call> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(status)
        .bind(&response)
        .bind(&error)
        .fetch_optional(tx.conn())
        .await?
    else {
        return Ok(());
    };
    let accepted = response
        .as_ref()
        .and_then(|r| r.get("status"))
        .and_then(Value::as_str)
        .is_some_and(|s| s == "Accepted");
    match call.action.as_str() {
        "RemoteStartTransaction" | "RequestStartTransaction" if !accepted => {
            if let Some(session) = call.session_id {
                super::transactions::remote_start_refused(tx, session).await?;
            }
        }
        "SendLocalList" if accepted => {
            let version = call
                .payload
                .get("listVersion")
                .or_else(|| call.payload.get("versionNumber"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            sqlx::query(
                "update charger set local_list_version = greatest(local_list_version, $3)
                 where tenant_id = $1 and id = $2",
            )
            .bind(tx.tenant())
            .bind(charger.id)
            .bind(version)
            .execute(tx.conn())
            .await?;
            // More changes may have come meanwhile (or the list was cut): keep going.
            let charger = super::get(tx, charger.id).await?;
            super::tags::sync_local_list(tx, &charger).await?;
        }
        "ChangeConfiguration" | "SetVariables" => {
            let statuses = configuration_statuses(&call);
            configuration_refused(tx, charger, &call, &statuses).await?;
            password_answered(tx, charger, &call, &statuses).await?;
            configuration_changed(tx, charger, &call).await?;
        }
        "GetConfiguration" | "GetVariables" => {
            if let Some(r) = &response {
                configuration_read(tx, charger, &call, r).await?;
            }
        }
        "SetChargingProfile" if accepted => {
            let limit = power_limit_of(&call.payload);
            sqlx::query("update charger set power_limit_w = $3 where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(charger.id)
                .bind(limit)
                .execute(tx.conn())
                .await?;
        }
        "ClearChargingProfile" if accepted => {
            sqlx::query("update charger set power_limit_w = null where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(charger.id)
                .execute(tx.conn())
                .await?;
        }
        "ReserveNow" => {
            if let Some(reservation) = call
                .payload
                .get("reservationId")
                .or_else(|| call.payload.get("id"))
            {
                sqlx::query(
                    "update charging_reservation set status = $3 where tenant_id = $1 and id = $2 and status = 'requested'",
                )
                .bind(tx.tenant())
                .bind(reservation.as_i64().unwrap_or(0) as i32)
                .bind(if accepted { "accepted" } else { "refused" })
                .execute(tx.conn())
                .await?;
            }
        }
        "CancelReservation" if accepted => {
            if let Some(reservation) = call.payload.get("reservationId") {
                sqlx::query(
                    "update charging_reservation set status = 'cancelled' where tenant_id = $1 and id = $2",
                )
                .bind(tx.tenant())
                .bind(reservation.as_i64().unwrap_or(0) as i32)
                .execute(tx.conn())
                .await?;
            }
        }
        _ => {}
    }
    metrics::counter!("ocpp_calls_total", "action" => call.action.clone(), "outcome" => status)
        .increment(1);
    let data = json!({
        "callId": call.id, "chargerId": charger.id, "action": call.action, "status": call.status,
        "response": call.response, "error": call.error,
    });
    tx.emit(super::event("charger.call", charger, data));
    Ok(())
}

/// The power limit (W) a SetChargingProfile payload sets: its first schedule period's limit when the rate unit
/// is W; amperes are converted at 230 V per phase.
fn power_limit_of(payload: &Value) -> Option<i32> {
    let profile = payload
        .get("csChargingProfiles")
        .or_else(|| payload.get("chargingProfile"))?;
    let schedule = profile.get("chargingSchedule")?;
    let schedule = schedule
        .as_array()
        .and_then(|s| s.first())
        .unwrap_or(schedule);
    let unit = schedule.get("chargingRateUnit")?.as_str()?;
    let period = schedule
        .get("chargingSchedulePeriod")?
        .as_array()?
        .first()?;
    let limit = period.get("limit")?.as_f64()?;
    let phases = period
        .get("numberPhases")
        .and_then(Value::as_f64)
        .unwrap_or(3.0);
    let watts = if unit == "A" {
        limit * 230.0 * phases
    } else {
        limit
    };
    Some(watts.round().clamp(1.0, i32::MAX as f64) as i32)
}

/// Why a call sent on a connection that went away failed.
const LOST: &str = "the connection to the charger was lost before it answered";

/// Calls sent on a connection that is gone (all but `keep`) will never be answered: they fail. When the charger has
/// gone (`keep` none), a new password still waiting ends too, and is not kept: the charger comes back with a
/// password it had, which still lets it in, and is sent a fresh one then.
pub async fn lost(tx: &mut TenantTx, charger: Uuid, keep: Option<Uuid>) -> Result<()> {
    let lost: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "update ocpp_call set status = 'error', error = $4, answered_at = now()
         where tenant_id = $1 and charger_id = $2 and status = 'sent' and connection_id is distinct from $3
         returning action, session_id",
    )
    .bind(tx.tenant())
    .bind(charger)
    .bind(keep)
    .bind(LOST)
    .fetch_all(tx.conn())
    .await?;
    unstarted(tx, &lost).await?;
    if keep.is_none() {
        end_unsent_passwords(
            tx,
            charger,
            "the charger went away before its new password was sent",
        )
        .await?;
    }
    Ok(())
}

/// Remote starts that will never be answered (expired, or their connection lost) fail the sessions waiting for
/// them, as a refusal does.
async fn unstarted(tx: &mut TenantTx, calls: &[(String, Option<Uuid>)]) -> Result<()> {
    for (action, session) in calls {
        if let ("RemoteStartTransaction" | "RequestStartTransaction", Some(session)) =
            (action.as_str(), session)
        {
            super::transactions::remote_start_refused(tx, *session).await?;
        }
    }
    Ok(())
}

/// Sends a charger its new Basic auth password (`hash` its SHA-256, kept with the call once the password is not).
pub(super) async fn send_password(
    tx: &mut TenantTx,
    charger: &Charger,
    password: &str,
    hash: &[u8],
    by: Option<Uuid>,
) -> Result<()> {
    let request = match charger.protocol() {
        Protocol::V16 => Request::new(
            "ChangeConfiguration",
            json!({ "key": "AuthorizationKey", "value": password }),
        ),
        Protocol::V201 => Request::new(
            "SetVariables",
            json!({ "setVariableData": [{
                "attributeValue": password,
                "component": { "name": "SecurityCtrlr" },
                "variable": { "name": "BasicAuthPassword" },
            }]}),
        ),
    };
    let call = enqueue(tx, charger, request, None, by).await?;
    sqlx::query("update ocpp_call set password_hash = $3 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(call.id)
        .bind(hash)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Of these password hashes, those the charger may have applied: a call sent it, and no answer says the charger
/// refused it (the call was lost with its connection, timed out, answered by a CALLERROR that may pass, or taken
/// for after a reboot: `RebootRequired`).
pub(super) async fn maybe_applied(
    tx: &mut TenantTx,
    charger: Uuid,
    hashes: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>> {
    if hashes.is_empty() {
        return Ok(vec![]);
    }
    let found: Vec<Vec<u8>> = sqlx::query_scalar(
        "select distinct password_hash from ocpp_call
          where tenant_id = $1 and charger_id = $2 and password_hash = any($3)
            and (status in ('sent', 'timeout')
                 or (status = 'error' and (error = $4 or error like 'InternalError:%'
                                           or error like 'GenericError:%'))
                 or (status = 'answered' and (response->>'status' = 'RebootRequired'
                     or exists (select 1 from jsonb_array_elements(
                                  case when jsonb_typeof(response->'setVariableResult') = 'array'
                                       then response->'setVariableResult' else '[]' end) r
                                 where r->>'attributeStatus' = 'RebootRequired'))))",
    )
    .bind(tx.tenant())
    .bind(charger)
    .bind(hashes)
    .bind(LOST)
    .fetch_all(tx.conn())
    .await?;
    // In the order given.
    Ok(hashes
        .iter()
        .filter(|h| found.contains(h))
        .cloned()
        .collect())
}

/// Whether a call sending this password (its SHA-256) has not been accepted: waiting, sent, unanswered, refused or
/// ended. A password no call sent (set by hand) is not.
pub(super) async fn password_unconfirmed(
    tx: &mut TenantTx,
    charger: Uuid,
    hash: &[u8],
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from ocpp_call
          where tenant_id = $1 and charger_id = $2 and password_hash = $3
            and not (status = 'answered' and (response->>'status' = 'Accepted'
                 or (jsonb_typeof(response->'setVariableResult') = 'array'
                     and jsonb_array_length(response->'setVariableResult') > 0
                     and not exists (select 1 from jsonb_array_elements(response->'setVariableResult') r
                                      where r->>'attributeStatus' is distinct from 'Accepted')))))",
    )
    .bind(tx.tenant())
    .bind(charger)
    .bind(hash)
    .fetch_one(tx.conn())
    .await?)
}

/// Expires a charger's calls not yet sent (those created before `before`, or all), for `why`: a session waiting for
/// a remote start fails, a password is forgotten.
pub(super) async fn expire_unsent(
    tx: &mut TenantTx,
    charger: Uuid,
    before: Option<DateTime<Utc>>,
    why: &str,
) -> Result<()> {
    let expired: Vec<(Uuid, String, Value, Option<Uuid>)> = sqlx::query_as(
        "update ocpp_call set status = 'expired', error = $4
         where tenant_id = $1 and charger_id = $2 and status = 'pending'
           and ($3::timestamptz is null or created_at < $3)
         returning id, action, payload, session_id",
    )
    .bind(tx.tenant())
    .bind(charger)
    .bind(before)
    .bind(why)
    .fetch_all(tx.conn())
    .await?;
    let unsent: Vec<(String, Option<Uuid>)> =
        expired.iter().map(|(_, a, _, s)| (a.clone(), *s)).collect();
    unstarted(tx, &unsent).await?;
    let kept: Vec<(Uuid, String, Value)> =
        expired.into_iter().map(|(i, a, p, _)| (i, a, p)).collect();
    forget_secrets(tx, &kept).await
}

/// Ends a charger's password calls not yet sent (a newer password replaces them), without their passwords.
pub(super) async fn drop_unsent_passwords(tx: &mut TenantTx, charger: Uuid) -> Result<()> {
    end_unsent_passwords(
        tx,
        charger,
        "a newer password replaced it before it was sent",
    )
    .await
}

/// Expires a charger's password calls not yet sent, for `why`, and forgets their passwords.
async fn end_unsent_passwords(tx: &mut TenantTx, charger: Uuid, why: &str) -> Result<()> {
    let ended: Vec<(Uuid, String, Value)> = sqlx::query_as(
        "update ocpp_call set status = 'expired', error = $3
         where tenant_id = $1 and charger_id = $2 and status = 'pending' and password_hash is not null
         returning id, action, payload",
    )
    .bind(tx.tenant())
    .bind(charger)
    .bind(why)
    .fetch_all(tx.conn())
    .await?;
    forget_secrets(tx, &ended).await
}

/// Whether the charger's current password never reached it: no call sending it waits (pending, younger than
/// `ttl`), and the charger refused none — a call lost with its connection, timed out or expired, or answered by a
/// CALLERROR that may pass (`InternalError`, `GenericError`) is no refusal.
pub(super) async fn password_undelivered(
    tx: &mut TenantTx,
    charger: Uuid,
    ttl: chrono::Duration,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select not exists (
           select 1 from ocpp_call o join charger c on c.tenant_id = o.tenant_id and c.id = o.charger_id
            where o.tenant_id = $1 and o.charger_id = $2 and o.password_hash = c.password_hash
              and ((o.status = 'pending' and o.created_at >= $3)
                   or o.status = 'answered'
                   or (o.status = 'error' and o.error is distinct from $4
                       and o.error not like 'InternalError:%' and o.error not like 'GenericError:%')))",
    )
    .bind(tx.tenant())
    .bind(charger)
    .bind(Utc::now() - ttl)
    .bind(LOST)
    .fetch_one(tx.conn())
    .await?)
}

/// A password call answered: once the charger accepted it, the password it sets is the one it uses — the others
/// stop working (when a newer password is on its way, this one stays valid beside it). A refusal or
/// `RebootRequired` changes nothing: the passwords kept stay valid until the charger logs in with the new one. A
/// password the charger can no longer be given (set again by hand, or a new identity) is not brought back.
async fn password_answered(
    tx: &mut TenantTx,
    charger: &Charger,
    call: &Call,
    statuses: &[&str],
) -> Result<()> {
    if statuses.is_empty() || statuses.iter().any(|s| *s != "Accepted") {
        return Ok(());
    }
    sqlx::query(
        "update charger c set previous_password_hashes =
           case when c.password_hash = o.password_hash then '{}' else array[o.password_hash] end
           from ocpp_call o
         where c.tenant_id = $1 and c.id = $2 and o.tenant_id = $1 and o.id = $3 and o.password_hash is not null
           and (c.password_hash = o.password_hash or o.password_hash = any(c.previous_password_hashes))",
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .bind(call.id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

const ENERGY: &str = "Energy.Active.Import.Register";
const ENERGY_AND_POWER: &str = "Energy.Active.Import.Register,Power.Active.Import";

/// Sets a charger to send the energy readings billing needs (the tenant's `charger_meter_setup`, at each boot the
/// central system accepts): 1.6 `MeterValuesSampledData` (its start and stop readings are part of those messages),
/// 2.0.1 the `SampledDataCtrlr` lists — the start reading, which a 2.0.1 charger may leave out unless told, energy
/// and power in every update, and the energy at the end — one variable a call, since a charger may take no more
/// at once. The lists are replaced, not merged. Then the sampling interval is read, and set to
/// [`METER_INTERVAL_SECS`] only if it is 0 (no readings between start and stop): an interval the operator chose is
/// left alone, and one the charger refused to change is not asked for again at every boot (see [`refused_lately`]).
pub(super) async fn set_up_meters(tx: &mut TenantTx, charger: &Charger) -> Result<()> {
    let mut requests = match charger.protocol() {
        Protocol::V16 => vec![Request::new(
            "ChangeConfiguration",
            json!({ "key": "MeterValuesSampledData", "value": ENERGY_AND_POWER }),
        )],
        Protocol::V201 => [
            ("TxStartedMeasurands", ENERGY),
            ("TxUpdatedMeasurands", ENERGY_AND_POWER),
            ("TxEndedMeasurands", ENERGY),
        ]
        .into_iter()
        .map(|(variable, value)| sampled_data(variable, value))
        .collect(),
    };
    requests.push(interval_read(charger.protocol()));
    for request in requests {
        enqueue_unless_waiting(tx, charger, request).await?;
    }
    Ok(())
}

/// The sampling interval (s) the meter set-up gives a charger that samples nothing during a transaction.
pub const METER_INTERVAL_SECS: i64 = 60;
/// The 1.6 key of the sampling interval during a transaction.
const INTERVAL_KEY: &str = "MeterValueSampleInterval";
/// The 2.0.1 variable (of `SampledDataCtrlr`) of the sampling interval during a transaction.
const INTERVAL_VARIABLE: &str = "TxUpdatedInterval";

/// 2.0.1 SetVariables of one `SampledDataCtrlr` variable.
fn sampled_data(variable: &str, value: &str) -> Request {
    Request::new(
        "SetVariables",
        json!({ "setVariableData": [{
            "attributeValue": value,
            "component": { "name": "SampledDataCtrlr" },
            "variable": { "name": variable },
        }]}),
    )
}

/// The meter set-up's read of the sampling interval during a transaction.
fn interval_read(protocol: Protocol) -> Request {
    match protocol {
        Protocol::V16 => Request::new("GetConfiguration", json!({ "key": [INTERVAL_KEY] })),
        Protocol::V201 => Request::new(
            "GetVariables",
            json!({ "getVariableData": [{
                "component": { "name": "SampledDataCtrlr" },
                "variable": { "name": INTERVAL_VARIABLE },
            }]}),
        ),
    }
}

/// Whether a configuration read reports the sampling interval during a transaction as 0, writable: such a charger
/// sends no readings between a transaction's start and its end.
fn samples_nothing(answer: &Value) -> bool {
    let zero = |v: &Value| v.as_str().is_some_and(|v| v.trim().parse::<i64>() == Ok(0));
    let keys = answer["configurationKey"].as_array().into_iter().flatten();
    let variables = answer["getVariableResult"].as_array().into_iter().flatten();
    keys.filter(|k| {
        k["key"]
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case(INTERVAL_KEY))
    })
    .any(|k| k["readonly"] != true && zero(&k["value"]))
        || variables
            .filter(|v| {
                let named = |n: &Value, want: &str| {
                    n.as_str().is_some_and(|n| n.eq_ignore_ascii_case(want))
                };
                named(&v["component"]["name"], "SampledDataCtrlr")
                    && named(&v["variable"]["name"], INTERVAL_VARIABLE)
                    && v["attributeStatus"] == "Accepted"
                    && v["attributeType"].as_str().unwrap_or("Actual") == "Actual"
            })
            .any(|v| zero(&v["attributeValue"]))
}

/// Writes a call of the set-up unless the set-up's same call is still waiting from an earlier boot (within the
/// hour: an older one has long expired or timed out). An operator's call alike does not count: only the set-up's own
/// read sets the interval.
async fn enqueue_unless_waiting(
    tx: &mut TenantTx,
    charger: &Charger,
    request: Request,
) -> Result<()> {
    let waiting: bool = sqlx::query_scalar(
        "select exists (select 1 from ocpp_call where tenant_id = $1 and charger_id = $2
                          and created_at > now() - interval '1 hour'
                          and status in ('pending', 'sent') and action = $3 and payload = $4
                          and requested_by is null)",
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .bind(request.action)
    .bind(&request.payload)
    .fetch_one(tx.conn())
    .await?;
    if !waiting {
        enqueue(tx, charger, request, None, None).await?;
    }
    Ok(())
}

/// A configuration read answered: what it reports is merged into what the charger reported before (the keys or
/// variables read replace theirs; a 1.6 read of every key replaces it all). When the read was the meter set-up's
/// and the charger samples nothing during a transaction, it is set to sample every [`METER_INTERVAL_SECS`].
async fn configuration_read(
    tx: &mut TenantTx,
    charger: &Charger,
    call: &Call,
    answer: &Value,
) -> Result<()> {
    update_configuration(tx, charger.id, |before| {
        merged_configuration(before, &call.payload, answer)
    })
    .await?;
    let protocol = charger.protocol();
    if call.payload != interval_read(protocol).payload || !samples_nothing(answer) {
        return Ok(());
    }
    // The set-up's own read (an operator's read of the same key sets nothing), with the set-up still on, and no
    // change of the interval on its way to the charger (an operator's newer choice wins over the 0 read before it).
    let (by_setup, interval_changing): (bool, bool) = sqlx::query_as(
        &format!(
            "select coalesce((select requested_by is null from ocpp_call where tenant_id = $1 and id = $3), false),
                    exists (select 1 from ocpp_call where tenant_id = $1 and charger_id = $2
                              and status in ('pending', 'sent') and {INTERVAL_CHANGE})"
        ),
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .bind(call.id)
    .bind(INTERVAL_KEY)
    .bind(INTERVAL_VARIABLE)
    .fetch_one(tx.conn())
    .await?;
    if by_setup && !interval_changing && crate::tenants::charger_meter_setup(tx).await? {
        let every = METER_INTERVAL_SECS.to_string();
        let set = match protocol {
            Protocol::V16 => Request::new(
                "ChangeConfiguration",
                json!({ "key": INTERVAL_KEY, "value": every }),
            ),
            Protocol::V201 => sampled_data(INTERVAL_VARIABLE, &every),
        };
        if !refused_lately(tx, charger.id, &set).await? {
            enqueue_unless_waiting(tx, charger, set).await?;
        }
    }
    Ok(())
}

/// A call's condition (SQL, on `ocpp_call`'s columns) that it changes the sampling interval: a 1.6
/// `ChangeConfiguration` of [`INTERVAL_KEY`] (`$4`) or a 2.0.1 `SetVariables` of `SampledDataCtrlr`'s
/// [`INTERVAL_VARIABLE`] (`$5`), by anyone.
const INTERVAL_CHANGE: &str = "(lower(payload->>'key') = lower($4)
     or exists (select 1 from jsonb_array_elements(
                  case when jsonb_typeof(payload->'setVariableData') = 'array'
                       then payload->'setVariableData' else '[]' end) d
                where lower(d->'component'->>'name') = 'sampleddatactrlr'
                  and lower(d->'variable'->>'name') = lower($5)))";

/// How long a charger's refusal of the set-up's interval stands: a charger whose interval is fixed at 0 (read-only,
/// or refused for its own reasons) is not asked again at every boot, but is after this long, when a firmware update
/// may have changed its mind.
const REFUSAL_STANDS: &str = "30 days";

/// Whether the last change of the interval the charger answered (by anyone, within [`REFUSAL_STANDS`]) was this same
/// set-up call, refused: 1.6 `Rejected` or `NotSupported`, 2.0.1 an attribute status that is not `Accepted` or
/// `RebootRequired`, or a CALLERROR saying it is not supported. An operator's change answered since (taken or not),
/// or one the charger never answered, lets the set-up ask again.
async fn refused_lately(tx: &mut TenantTx, charger: Uuid, request: &Request) -> Result<bool> {
    Ok(sqlx::query_scalar(&format!(
        "select coalesce((
           select requested_by is null and payload = $3
                  and ((status = 'answered'
                        and (response->>'status' in ('Rejected', 'NotSupported')
                             or response #>> '{{setVariableResult,0,attributeStatus}}'
                                in ('Rejected', 'UnknownComponent', 'UnknownVariable', 'NotSupportedAttributeType')))
                       or (status = 'error' and (error like 'NotImplemented:%' or error like 'NotSupported:%')))
             from ocpp_call
            where tenant_id = $1 and charger_id = $2 and status in ('answered', 'error', 'timeout')
              and created_at > now() - interval '{REFUSAL_STANDS}' and {INTERVAL_CHANGE}
            order by created_at desc, id desc limit 1), false)"
    ))
    .bind(tx.tenant())
    .bind(charger)
    .bind(&request.payload)
    .bind(INTERVAL_KEY)
    .bind(INTERVAL_VARIABLE)
    .fetch_one(tx.conn())
    .await?)
}

/// A configuration read's answer with any password it reports hidden (a 1.6 charger may report `AuthorizationKey`,
/// which the specification makes write-only; a 2.0.1 charger asked for `SecurityCtrlr.BasicAuthPassword` may answer
/// it): neither the call nor the charger's configuration keeps it. Other answers are returned as they are.
fn reported_without_secrets(answer: &Value) -> Value {
    let mut hidden = answer.clone();
    for k in hidden
        .get_mut("configurationKey")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if k["key"].as_str().is_some_and(is_password_key) && k.get("value").is_some() {
            k["value"] = HIDDEN.into();
        }
    }
    for v in hidden
        .get_mut("getVariableResult")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if v["variable"]["name"]
            .as_str()
            .is_some_and(is_password_variable)
            && v.get("attributeValue").is_some()
        {
            v["attributeValue"] = HIDDEN.into();
        }
    }
    hidden
}

/// A configuration change answered: the values the charger accepted replace those of the configuration it reported
/// (a key or variable it never reported is left for the next read; a password is never kept).
async fn configuration_changed(tx: &mut TenantTx, charger: &Charger, call: &Call) -> Result<()> {
    let Some(answer) = &call.response else {
        return Ok(());
    };
    update_configuration(tx, charger.id, |before| {
        changed_configuration(before, &call.payload, answer)
    })
    .await
}

/// Replaces the charger's known configuration by `next` of it (written only when it changes).
async fn update_configuration(
    tx: &mut TenantTx,
    charger: Uuid,
    next: impl FnOnce(&Value) -> Value,
) -> Result<()> {
    let before: Value =
        sqlx::query_scalar("select configuration from charger where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(charger)
            .fetch_one(tx.conn())
            .await?;
    let after = next(&before);
    if after != before {
        sqlx::query("update charger set configuration = $3 where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(charger)
            .bind(after)
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}

/// A 2.0.1 variable's identity in reads and changes: component, variable, their instances (names are not
/// case-sensitive), the EVSE, the attribute type (`Actual` when left out).
fn variable_id(r: &Value) -> (String, String, Value, String, String, String) {
    let name = |v: &Value| v.as_str().unwrap_or("").to_ascii_lowercase();
    (
        name(&r["component"]["name"]),
        name(&r["component"]["instance"]),
        r["component"]["evse"].clone(),
        name(&r["variable"]["name"]),
        name(&r["variable"]["instance"]),
        r["attributeType"].as_str().unwrap_or("Actual").to_owned(),
    )
}

/// The configuration known after a change (`asked` the ChangeConfiguration or SetVariables payload) was answered
/// `answer`, given what was known `before`: each value accepted replaces the one reported, if one was.
fn changed_configuration(before: &Value, asked: &Value, answer: &Value) -> Value {
    let mut after = before.clone();
    if let Some(data) = asked["setVariableData"].as_array() {
        let results = answer["setVariableResult"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for item in data {
            let name = item["variable"]["name"].as_str().unwrap_or("");
            // Each result names its variable; the specification promises no order.
            let accepted = results
                .iter()
                .any(|r| variable_id(r) == variable_id(item) && r["attributeStatus"] == "Accepted");
            if !accepted || is_password_variable(name) {
                continue;
            }
            let reported = after
                .get_mut("getVariableResult")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten();
            for r in reported.filter(|r| r["attributeStatus"] == "Accepted") {
                if variable_id(r) == variable_id(item) {
                    r["attributeValue"] = item["attributeValue"].clone();
                }
            }
        }
    } else if answer["status"] == "Accepted" {
        let key = asked["key"].as_str().unwrap_or("");
        if is_password_key(key) {
            return after;
        }
        let reported = after
            .get_mut("configurationKey")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for k in reported.filter(|k| {
            k["key"]
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        }) {
            k["value"] = asked["value"].clone();
        }
    }
    after
}

/// The configuration known after a read (`asked` the read's payload) answered `answer`, given what was known
/// `before`. 1.6: a read of every key (no `key`) replaces it all; a read of some keys replaces those keys (keys
/// are not case-sensitive), and a key the charger now calls unknown leaves the known ones. 2.0.1: each variable
/// read (component, variable, their instances, the EVSE, the attribute type) replaces its earlier result.
fn merged_configuration(before: &Value, asked: &Value, answer: &Value) -> Value {
    let listed = |v: &Value, field: &str| v[field].as_array().cloned().unwrap_or_default();
    if let Some(results) = answer.get("getVariableResult") {
        let new = results.as_array().cloned().unwrap_or_default();
        let merged = merged_in_place(
            listed(before, "getVariableResult"),
            new,
            |a, b| variable_id(a) == variable_id(b),
            |_| false,
        );
        return json!({ "getVariableResult": merged });
    }
    if asked["key"].as_array().is_none_or(Vec::is_empty) {
        return answer.clone();
    }
    let lower = |v: &Value| v.as_str().unwrap_or("").to_ascii_lowercase();
    let unknown = listed(answer, "unknownKey");
    let now_unknown: Vec<String> = unknown.iter().map(lower).collect();
    let keys = merged_in_place(
        listed(before, "configurationKey"),
        listed(answer, "configurationKey"),
        |a, b| lower(&a["key"]) == lower(&b["key"]),
        |old| now_unknown.contains(&lower(&old["key"])),
    );
    let unknowns = merged_in_place(
        listed(before, "unknownKey"),
        unknown,
        |a, b| lower(a) == lower(b),
        |old| keys.iter().any(|k| lower(&k["key"]) == lower(old)),
    );
    let mut merged = json!({ "configurationKey": keys });
    if !unknowns.is_empty() {
        merged["unknownKey"] = json!(unknowns);
    }
    merged
}

/// `before` with each entry `same` as a `new` one replaced by it where it stands, those `gone` left out, and the
/// new entries that replaced none appended in their order.
fn merged_in_place(
    before: Vec<Value>,
    new: Vec<Value>,
    same: impl Fn(&Value, &Value) -> bool,
    gone: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut merged: Vec<Value> = before
        .into_iter()
        .filter_map(|old| match new.iter().find(|n| same(n, &old)) {
            Some(n) => Some(n.clone()),
            None if gone(&old) => None,
            None => Some(old),
        })
        .collect();
    for n in new {
        if !merged.iter().any(|m| same(m, &n)) {
            merged.push(n);
        }
    }
    merged
}

/// The statuses a ChangeConfiguration (one) or SetVariables (one a variable) was answered with; none for a
/// CALLERROR or no answer.
fn configuration_statuses(call: &Call) -> Vec<&str> {
    let Some(r) = &call.response else {
        return vec![];
    };
    if call.action == "SetVariables" {
        r.get("setVariableResult")
            .and_then(Value::as_array)
            .map(|results| {
                results
                    .iter()
                    .map(|x| {
                        x.get("attributeStatus")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![r.get("status").and_then(Value::as_str).unwrap_or("")]
    }
}

/// A configuration change the charger did not accept (answered other than `Accepted`, or not in time): in the
/// audit log for operators, since a setting the charger kept (a password, the readings it sends) may matter; one
/// it accepted for after a reboot (`RebootRequired`) is audited as such, and the charger shows it until a boot taken
/// for a reboot (`reboot_required`; see [`super::boot`]). The entry names the setting, never its value. With the
/// tenant's meter set-up on, a 1.6 charger that rejected energy and power together (a list of one measurand at most)
/// is asked for energy alone.
async fn configuration_refused(
    tx: &mut TenantTx,
    charger: &Charger,
    call: &Call,
    statuses: &[&str],
) -> Result<()> {
    let action = if statuses.is_empty() {
        "charging.configuration_refused"
    } else if statuses.iter().all(|s| *s == "Accepted") {
        return Ok(());
    } else if statuses
        .iter()
        .all(|s| *s == "Accepted" || *s == "RebootRequired")
    {
        "charging.configuration_needs_reboot"
    } else {
        "charging.configuration_refused"
    };
    let setting = match call.payload.get("setVariableData") {
        Some(data) => data
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|x| {
                        format!(
                            "{}.{}",
                            x["component"]["name"].as_str().unwrap_or(""),
                            x["variable"]["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default(),
        None => call.payload["key"].as_str().unwrap_or("").to_owned(),
    };
    audit::record_system_in(
        tx,
        charger.venue_id,
        Entry {
            action,
            object_type: "charger",
            object_id: Some(charger.id),
            detail: json!({
                "call": call.id, "action": call.action, "setting": setting,
                "status": call.status, "answer": call.response, "error": call.error,
            }),
        },
    )
    .await?;
    if statuses.contains(&"RebootRequired") {
        // On the connection it answered on (its live one): a boot on it is no reboot.
        sqlx::query(
            "update charger set reboot_required_on = coalesce(connection_id, gen_random_uuid())
              where tenant_id = $1 and id = $2",
        )
        .bind(tx.tenant())
        .bind(charger.id)
        .execute(tx.conn())
        .await?;
    }
    let rejected = statuses == ["Rejected"];
    if call.action == "ChangeConfiguration"
        && rejected
        && call.payload["key"] == "MeterValuesSampledData"
        && call.payload["value"] == ENERGY_AND_POWER
        && crate::tenants::charger_meter_setup(tx).await?
    {
        enqueue(
            tx,
            charger,
            Request::new(
                "ChangeConfiguration",
                json!({ "key": "MeterValuesSampledData", "value": ENERGY }),
            ),
            None,
            None,
        )
        .await?;
    }
    Ok(())
}

/// What stands in for a secret in a call as stored once sent, and as shown.
const HIDDEN: &str = "(hidden)";

/// The payload with the secret a call may carry hidden (a charger's password: 1.6 `AuthorizationKey`, 2.0.1
/// `SecurityCtrlr.BasicAuthPassword`); `None` when it carries none. Only a password's hash is kept: the call keeps
/// the password only until it is sent, and shows it to no one.
pub fn without_secrets(action: &str, payload: &Value) -> Option<Value> {
    match action {
        "ChangeConfiguration" if is_password_key(payload["key"].as_str().unwrap_or("")) => {
            let mut hidden = payload.clone();
            hidden["value"] = HIDDEN.into();
            Some(hidden)
        }
        "SetVariables" => {
            let data = payload.get("setVariableData")?.as_array()?;
            let secret: Vec<usize> = data
                .iter()
                .enumerate()
                .filter(|(_, item)| {
                    is_password_variable(item["variable"]["name"].as_str().unwrap_or(""))
                })
                .map(|(i, _)| i)
                .collect();
            if secret.is_empty() {
                return None;
            }
            let mut hidden = payload.clone();
            for i in secret {
                hidden["setVariableData"][i]["attributeValue"] = HIDDEN.into();
            }
            Some(hidden)
        }
        _ => None,
    }
}

/// A 1.6 configuration key that is the charger's password (keys are not case-sensitive).
fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("AuthorizationKey")
}

/// A 2.0.1 variable that is the charger's password (names are not case-sensitive).
fn is_password_variable(variable: &str) -> bool {
    variable.eq_ignore_ascii_case("BasicAuthPassword")
}

/// Replaces the stored payload of calls that carry a secret by the payload without it.
async fn forget_secrets(tx: &mut TenantTx, calls: &[(Uuid, String, Value)]) -> Result<()> {
    for (id, action, payload) in calls {
        if let Some(hidden) = without_secrets(action, payload) {
            sqlx::query("update ocpp_call set payload = $3 where tenant_id = $1 and id = $2")
                .bind(tx.tenant())
                .bind(id)
                .bind(hidden)
                .execute(tx.conn())
                .await?;
        }
    }
    Ok(())
}

/// What an operator can ask of a charger (GraphQL `chargerCommand`, REST); each becomes the call of the charger's
/// version.
#[derive(Debug, Clone)]
pub enum Command {
    /// `Soft` or `Hard` (2.0.1: `OnIdle` / `Immediate`).
    Reset {
        hard: bool,
    },
    UnlockConnector {
        connector: i32,
    },
    /// Connector 0 is the whole charger.
    ChangeAvailability {
        connector: i32,
        operative: bool,
    },
    Trigger {
        message: String,
        connector: Option<i32>,
    },
    GetConfiguration {
        keys: Vec<String>,
    },
    ChangeConfiguration {
        key: String,
        value: String,
    },
    /// A power limit for the whole charger (W), or none to clear it.
    PowerLimit {
        watts: Option<i32>,
    },
    SyncLocalList,
    GetLocalListVersion,
    DataTransfer {
        vendor_id: String,
        message_id: Option<String>,
        data: Option<String>,
    },
}

/// Writes an operator's command to the outbox; returns the call (follow it with [`get`]).
pub async fn command(tx: &mut TenantTx, actor: &Actor, id: Uuid, command: Command) -> Result<Call> {
    actor.require_manager()?;
    let charger = super::get(tx, id).await?;
    charger.check_scope(actor, "charger")?;
    if charger.registration == super::Registration::Rejected {
        return Err(Error::Conflict(
            "this charger was refused: it is sent nothing unless adopted".into(),
        ));
    }
    let v16 = charger.protocol() == Protocol::V16;
    let request = match &command {
        Command::Reset { hard } => {
            if v16 {
                Request::new(
                    "Reset",
                    json!({ "type": if *hard { "Hard" } else { "Soft" } }),
                )
            } else {
                Request::new(
                    "Reset",
                    json!({ "type": if *hard { "Immediate" } else { "OnIdle" } }),
                )
            }
        }
        Command::UnlockConnector { connector } => {
            connector_in_range(*connector, 1)?;
            if v16 {
                Request::new("UnlockConnector", json!({ "connectorId": connector }))
            } else {
                Request::new(
                    "UnlockConnector",
                    json!({ "evseId": connector, "connectorId": 1 }),
                )
            }
        }
        Command::ChangeAvailability {
            connector,
            operative,
        } => {
            connector_in_range(*connector, 0)?;
            if v16 {
                let kind = if *operative {
                    "Operative"
                } else {
                    "Inoperative"
                };
                Request::new(
                    "ChangeAvailability",
                    json!({ "connectorId": connector, "type": kind }),
                )
            } else {
                let status = if *operative {
                    "Operative"
                } else {
                    "Inoperative"
                };
                let mut p = json!({ "operationalStatus": status });
                if *connector > 0 {
                    p["evse"] = json!({ "id": connector });
                }
                Request::new("ChangeAvailability", p)
            }
        }
        Command::Trigger { message, connector } => {
            let known_v16 = [
                "BootNotification",
                "DiagnosticsStatusNotification",
                "FirmwareStatusNotification",
                "Heartbeat",
                "MeterValues",
                "StatusNotification",
            ];
            let known_v201 = [
                "BootNotification",
                "LogStatusNotification",
                "FirmwareStatusNotification",
                "Heartbeat",
                "MeterValues",
                "SignChargingStationCertificate",
                "SignV2GCertificate",
                "StatusNotification",
                "TransactionEvent",
                "SignCombinedCertificate",
                "PublishFirmwareStatusNotification",
            ];
            let known: &[&str] = if v16 { &known_v16 } else { &known_v201 };
            if !known.contains(&message.as_str()) {
                return Err(Error::validation(
                    "message",
                    format!("this charger can be asked for one of {}", known.join(", ")),
                ));
            }
            Request::trigger(charger.protocol(), message, *connector)
        }
        Command::GetConfiguration { keys } => {
            if v16 {
                let mut p = json!({});
                if !keys.is_empty() {
                    p["key"] = json!(keys);
                }
                Request::new("GetConfiguration", p)
            } else {
                if keys.is_empty() {
                    return Err(Error::validation(
                        "keys",
                        "an OCPP 2.0.1 charger is asked for named variables: give them as Component.Variable",
                    ));
                }
                let data: Vec<Value> = keys
                    .iter()
                    .map(|k| {
                        let (component, variable) = k.split_once('.').unwrap_or(("OCPPCommCtrlr", k));
                        json!({ "component": { "name": component }, "variable": { "name": variable } })
                    })
                    .collect();
                Request::new("GetVariables", json!({ "getVariableData": data }))
            }
        }
        Command::ChangeConfiguration { key, value } => {
            if key.is_empty() || key.len() > 50 || value.len() > 500 {
                return Err(Error::validation(
                    "key",
                    "a key of 1 to 50 characters and a value of at most 500",
                ));
            }
            let variable = key.rsplit_once('.').map_or(key.as_str(), |(_, v)| v);
            if is_password_key(key) || is_password_variable(variable) {
                return Err(Error::validation(
                    "key",
                    "a charger's password is set with setChargerPassword, which keeps its hash for the charger's login",
                ));
            }
            if v16 {
                Request::new("ChangeConfiguration", json!({ "key": key, "value": value }))
            } else {
                let (component, variable) = key.split_once('.').unwrap_or(("OCPPCommCtrlr", key));
                Request::new(
                    "SetVariables",
                    json!({ "setVariableData": [{
                        "attributeValue": value, "component": { "name": component },
                        "variable": { "name": variable },
                    }]}),
                )
            }
        }
        Command::PowerLimit { watts: Some(w) } => {
            if !(100..=1_000_000).contains(w) {
                return Err(Error::validation(
                    "watts",
                    "must be between 100 and 1000000",
                ));
            }
            let schedule = json!({
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{ "startPeriod": 0, "limit": w }],
            });
            if v16 {
                Request::new(
                    "SetChargingProfile",
                    json!({ "connectorId": 0, "csChargingProfiles": {
                        "chargingProfileId": 1, "stackLevel": 0,
                        "chargingProfilePurpose": "ChargePointMaxProfile",
                        "chargingProfileKind": "Absolute", "chargingSchedule": schedule,
                    }}),
                )
            } else {
                let mut schedule = schedule;
                schedule["id"] = json!(1);
                Request::new(
                    "SetChargingProfile",
                    json!({ "evseId": 0, "chargingProfile": {
                        "id": 1, "stackLevel": 0, "chargingProfilePurpose": "ChargingStationMaxProfile",
                        "chargingProfileKind": "Absolute", "chargingSchedule": [schedule],
                    }}),
                )
            }
        }
        Command::PowerLimit { watts: None } => {
            if v16 {
                Request::new("ClearChargingProfile", json!({ "id": 1 }))
            } else {
                Request::new("ClearChargingProfile", json!({ "chargingProfileId": 1 }))
            }
        }
        Command::SyncLocalList => {
            let call = super::tags::send_full_list(tx, &charger)
                .await?
                .ok_or(Error::Conflict(
                    "this charger cannot take a local list now (it is not accepted)".into(),
                ))?;
            record(tx, actor, &charger, "SendLocalList").await?;
            return Ok(call);
        }
        Command::GetLocalListVersion => Request::new("GetLocalListVersion", json!({})),
        Command::DataTransfer {
            vendor_id,
            message_id,
            data,
        } => {
            let mut p = json!({ "vendorId": vendor_id });
            if let Some(m) = message_id {
                p["messageId"] = json!(m);
            }
            if let Some(d) = data {
                p["data"] = json!(d);
            }
            Request::new("DataTransfer", p)
        }
    };
    let action = request.action;
    let call = enqueue(tx, &charger, request, None, Some(actor.user_id)).await?;
    record(tx, actor, &charger, action).await?;
    Ok(call)
}

fn connector_in_range(connector: i32, min: i32) -> Result<()> {
    if (min..=64).contains(&connector) {
        Ok(())
    } else {
        Err(Error::validation(
            "connector",
            format!("must be between {min} and 64"),
        ))
    }
}

async fn record(tx: &mut TenantTx, actor: &Actor, charger: &Charger, action: &str) -> Result<()> {
    audit::record_in(
        tx,
        actor,
        charger.venue_id,
        Entry {
            action: "charger.command",
            object_type: "charger",
            object_id: Some(charger.id),
            detail: json!({ "action": action }),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, v: &str) -> Value {
        json!({ "key": k, "readonly": false, "value": v })
    }

    #[test]
    fn a_read_of_some_keys_replaces_those_and_keeps_the_rest() {
        let before = json!({
            "configurationKey": [key("HeartbeatInterval", "60"), key("MeterValueSampleInterval", "0")],
            "unknownKey": ["Gone"],
        });
        let asked = json!({ "key": ["metervaluesampleinterval", "gone", "NoSuchKey"] });
        let answer = json!({
            "configurationKey": [key("MeterValueSampleInterval", "60"), key("Gone", "1")],
            "unknownKey": ["NoSuchKey"],
        });
        assert_eq!(
            merged_configuration(&before, &asked, &answer),
            json!({
                "configurationKey": [
                    key("HeartbeatInterval", "60"), key("MeterValueSampleInterval", "60"), key("Gone", "1"),
                ],
                "unknownKey": ["NoSuchKey"],
            })
        );
        // A read of every key replaces it all.
        let all = json!({ "configurationKey": [key("HeartbeatInterval", "30")] });
        assert_eq!(merged_configuration(&before, &json!({}), &all), all);
        assert_eq!(
            merged_configuration(&before, &json!({ "key": [] }), &all),
            all
        );
    }

    #[test]
    fn a_variable_read_replaces_that_variable_only() {
        let result = |c: &str, v: &str, value: &str| {
            json!({ "attributeStatus": "Accepted", "component": { "name": c }, "variable": { "name": v },
                    "attributeValue": value })
        };
        let before = json!({ "getVariableResult": [
            result("OCPPCommCtrlr", "HeartbeatInterval", "60"),
            result("SampledDataCtrlr", "TxUpdatedInterval", "0"),
        ]});
        let mut target = result("SampledDataCtrlr", "TxUpdatedInterval", "1");
        target["attributeType"] = json!("Target");
        let answer = json!({ "getVariableResult": [result("sampleddatactrlr", "TxUpdatedInterval", "30"), target] });
        assert_eq!(
            merged_configuration(&before, &json!({}), &answer),
            json!({ "getVariableResult": [
                result("OCPPCommCtrlr", "HeartbeatInterval", "60"),
                result("sampleddatactrlr", "TxUpdatedInterval", "30"),
                target,
            ]})
        );
    }

    #[test]
    fn an_accepted_change_replaces_the_value_reported() {
        let before = json!({ "configurationKey": [key("HeartbeatInterval", "60")] });
        let changed = |asked: Value, status: &str| {
            changed_configuration(&before, &asked, &json!({ "status": status }))
        };
        assert_eq!(
            changed(
                json!({ "key": "heartbeatinterval", "value": "90" }),
                "Accepted"
            ),
            json!({ "configurationKey": [key("HeartbeatInterval", "90")] })
        );
        for (asked, status) in [
            (
                json!({ "key": "HeartbeatInterval", "value": "90" }),
                "Rejected",
            ),
            (
                json!({ "key": "HeartbeatInterval", "value": "90" }),
                "RebootRequired",
            ),
            (json!({ "key": "Unreported", "value": "1" }), "Accepted"),
        ] {
            assert_eq!(changed(asked, status), before);
        }
        let variable = |v: &str, value: &str| json!({ "attributeValue": value, "component": { "name": "SecurityCtrlr" }, "variable": { "name": v } });
        let mut reported = variable("BasicAuthPassword", "old");
        reported["attributeStatus"] = json!("Accepted");
        let mut level = variable("SecurityProfile", "1");
        level["attributeStatus"] = json!("Accepted");
        let before = json!({ "getVariableResult": [reported, level] });
        let asked = json!({ "setVariableData": [variable("BasicAuthPassword", "new"), variable("SecurityProfile", "2")] });
        // Results name their variables, in any order.
        let result = |v: &str| json!({ "attributeStatus": "Accepted", "component": { "name": "securityctrlr" }, "variable": { "name": v } });
        let answer = json!({ "setVariableResult": [result("SecurityProfile"), result("BasicAuthPassword")] });
        let after = changed_configuration(&before, &asked, &answer);
        assert_eq!(
            after["getVariableResult"][0]["attributeValue"], "old",
            "a password is never kept"
        );
        assert_eq!(after["getVariableResult"][1]["attributeValue"], "2");
    }

    #[test]
    fn a_password_a_charger_reports_is_hidden() {
        let read = json!({
            "configurationKey": [key("authorizationkey", "s3cret"), key("HeartbeatInterval", "60")],
            "unknownKey": ["AuthorizationKey"],
        });
        let hidden = reported_without_secrets(&read);
        assert_eq!(hidden["configurationKey"][0]["value"], HIDDEN);
        assert_eq!(
            hidden["configurationKey"][1],
            key("HeartbeatInterval", "60")
        );
        assert_eq!(hidden["unknownKey"], read["unknownKey"]);
        let variables = json!({ "getVariableResult": [
            { "attributeStatus": "Accepted", "attributeValue": "s3cret", "component": { "name": "SecurityCtrlr" },
              "variable": { "name": "BasicAuthPassword" } },
            { "attributeStatus": "UnknownVariable", "component": { "name": "SecurityCtrlr" },
              "variable": { "name": "basicauthpassword" } },
        ]});
        let hidden = reported_without_secrets(&variables);
        assert_eq!(hidden["getVariableResult"][0]["attributeValue"], HIDDEN);
        assert_eq!(
            hidden["getVariableResult"][1],
            variables["getVariableResult"][1]
        );
        let other = json!({ "status": "Accepted" });
        assert_eq!(reported_without_secrets(&other), other);
    }

    #[test]
    fn only_a_writable_interval_of_0_samples_nothing() {
        let read = |k: Value| json!({ "configurationKey": [k] });
        assert!(samples_nothing(&read(key("MeterValueSampleInterval", "0"))));
        assert!(samples_nothing(&read(key(
            "metervaluesampleinterval",
            " 0"
        ))));
        assert!(!samples_nothing(&read(key(
            "MeterValueSampleInterval",
            "30"
        ))));
        assert!(!samples_nothing(&read(key(
            "MeterValueSampleInterval",
            "off"
        ))));
        assert!(!samples_nothing(&read(
            json!({ "key": "MeterValueSampleInterval", "readonly": true, "value": "0" })
        )));
        assert!(!samples_nothing(&read(key(
            "ClockAlignedDataInterval",
            "0"
        ))));
        assert!(!samples_nothing(
            &json!({ "unknownKey": ["MeterValueSampleInterval"] })
        ));
        let variable = |status: &str, value: &str| {
            json!({ "getVariableResult": [{ "attributeStatus": status, "attributeValue": value,
                    "component": { "name": "SampledDataCtrlr" }, "variable": { "name": "TxUpdatedInterval" } }] })
        };
        assert!(samples_nothing(&variable("Accepted", "0")));
        let mut lower = variable("Accepted", "0");
        lower["getVariableResult"][0]["variable"]["name"] = json!("txupdatedinterval");
        assert!(samples_nothing(&lower), "names are not case-sensitive");
        assert!(!samples_nothing(&variable("Accepted", "60")));
        assert!(!samples_nothing(&variable("UnknownVariable", "0")));
    }
}
