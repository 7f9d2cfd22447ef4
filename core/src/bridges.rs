//! Edge bridges: registration (the token is shown once, only its hash kept), presence, the venue's schedule (the
//! desired state of its stations), the command outbox as the tunnel delivers it, and upstream events recorded
//! once per (bridge, seq).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::auth;
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::Actor;
use crate::{sessions, validate, venues};

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Bridge {
    pub id: Uuid,
    pub venue_id: Uuid,
    pub name: String,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub version: Option<String>,
    pub clock_offset_ms: Option<i64>,
    pub last_seq: i64,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, venue_id, name, online, last_seen_at, version, clock_offset_ms, last_seq, revoked_at,
    created_at";

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Bridge> {
    let sql = format!("select {COLUMNS} from bridge where tenant_id = $1 and id = $2");
    let bridge: Option<Bridge> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    bridge.ok_or(Error::NotFound("bridge"))
}

pub async fn list(tx: &mut TenantTx, venue: Option<Uuid>) -> Result<Vec<Bridge>> {
    let sql = format!(
        "select {COLUMNS} from bridge where tenant_id = $1 and ($2::uuid is null or venue_id = $2)
         order by created_at limit {}",
        crate::validate::LIST_CAP
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(venue)
        .fetch_all(tx.conn())
        .await?)
}

/// Registers a bridge for a venue; returns it and its token (shown this once).
pub async fn create(
    tx: &mut TenantTx,
    actor: &Actor,
    venue_id: Uuid,
    name: &str,
) -> Result<(Bridge, String)> {
    actor.require_manager()?;
    let name = validate::text("name", name, 1, 100)?;
    venues::get(tx, venue_id).await?;
    let id = Uuid::now_v7();
    let token = format!("sybr_{}", auth::random_token());
    sqlx::query(
        "insert into bridge (tenant_id, id, venue_id, name, token_hash) values ($1, $2, $3, $4, $5)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(venue_id)
    .bind(name)
    .bind(auth::token_hash(&token))
    .execute(tx.conn())
    .await?;
    record(tx, actor, "bridge.create", id).await?;
    Ok((get(tx, id).await?, token))
}

/// A new token for the bridge; the old one stops working at once.
pub async fn rotate(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<(Bridge, String)> {
    actor.require_manager()?;
    let bridge = get(tx, id).await?;
    if bridge.revoked_at.is_some() {
        return Err(Error::Conflict(
            "this bridge is revoked; register a new one".into(),
        ));
    }
    let token = format!("sybr_{}", auth::random_token());
    sqlx::query("update bridge set token_hash = $3 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(id)
        .bind(auth::token_hash(&token))
        .execute(tx.conn())
        .await?;
    record(tx, actor, "bridge.rotate", id).await?;
    Ok((get(tx, id).await?, token))
}

pub async fn revoke(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Bridge> {
    actor.require_manager()?;
    get(tx, id).await?;
    sqlx::query(
        "update bridge set revoked_at = coalesce(revoked_at, now()), online = false where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .execute(tx.conn())
    .await?;
    record(tx, actor, "bridge.revoke", id).await?;
    get(tx, id).await
}

async fn record(tx: &mut TenantTx, actor: &Actor, action: &'static str, id: Uuid) -> Result<()> {
    let object_type = action.split('.').next().unwrap_or("bridge");
    audit::record(
        tx,
        actor,
        Entry {
            action,
            object_type,
            object_id: Some(id),
            detail: serde_json::json!({}),
        },
    )
    .await
}

/// The bridge connected (or said something): online, seen now, with its version.
pub async fn seen(
    tx: &mut TenantTx,
    id: Uuid,
    online: bool,
    version: Option<&str>,
    clock_offset_ms: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "update bridge set online = $3, last_seen_at = now(), version = coalesce($4, version),
           clock_offset_ms = coalesce($5, clock_offset_ms)
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(online)
    .bind(version)
    .bind(clock_offset_ms)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// One station's desired state, as the bridge gets it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StationPlan {
    pub station_id: Uuid,
    pub name: String,
    pub control: String,
    pub settings: serde_json::Value,
    pub on: bool,
    pub until: Option<DateTime<Utc>>,
    pub session_id: Option<Uuid>,
}

/// The desired state of the venue's controlled stations.
pub async fn schedule(tx: &mut TenantTx, venue_id: Uuid) -> Result<Vec<StationPlan>> {
    Ok(sqlx::query_as(
        "select s.id as station_id, s.name, s.control::text as control, s.control_settings as settings,
                s.expected_on as on, s.expected_until as until,
                (select x.id from session x where x.tenant_id = s.tenant_id and x.station_id = s.id
                   and x.status = 'active' and x.asset_id is null limit 1) as session_id
         from station s where s.tenant_id = $1 and s.venue_id = $2 and s.archived_at is null and s.control <> 'manual'
         order by s.name",
    )
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_all(tx.conn())
    .await?)
}

/// A command from the outbox, on its way to a bridge.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutgoingCommand {
    pub id: Uuid,
    pub station_id: Uuid,
    pub command: String,
    pub payload: serde_json::Value,
}

/// Takes the venue's undelivered commands, oldest first, marking them delivered.
pub async fn take_commands(tx: &mut TenantTx, venue_id: Uuid) -> Result<Vec<OutgoingCommand>> {
    Ok(sqlx::query_as(
        "update device_command c set delivered_at = now()
         from station s
         where c.tenant_id = $1 and s.tenant_id = c.tenant_id and s.id = c.station_id and s.venue_id = $2
           and c.delivered_at is null
         returning c.id, c.station_id, c.command, c.payload",
    )
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_all(tx.conn())
    .await?)
}

/// Does the venue have commands not yet delivered? (A tunnel asks at each heartbeat, in case a wake-up was lost.)
pub async fn has_pending_commands(tx: &mut TenantTx, venue_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from device_command c join station s on s.tenant_id = c.tenant_id and s.id = c.station_id
                        where c.tenant_id = $1 and s.venue_id = $2 and c.delivered_at is null)",
    )
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_one(tx.conn())
    .await?)
}

/// The bridge applied a command (or could not).
pub async fn command_done(tx: &mut TenantTx, id: Uuid, result: &str) -> Result<()> {
    sqlx::query(
        "update device_command set acked_at = coalesce(acked_at, now()), result = coalesce(result, $3)
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(result)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Records an upstream event once; returns whether it was new. The station must be the bridge's venue's. A new
/// report that a station was switched off is applied to its session ([`sessions::switched_off`]).
pub async fn record_event(
    tx: &mut TenantTx,
    bridge: &Bridge,
    seq: i64,
    station_id: Option<Uuid>,
    kind: &str,
    body: &serde_json::Value,
    occurred_at: DateTime<Utc>,
) -> Result<bool> {
    if let Some(station) = station_id {
        let known: bool = sqlx::query_scalar(
            "select exists (select 1 from station where tenant_id = $1 and id = $2 and venue_id = $3)",
        )
        .bind(tx.tenant())
        .bind(station)
        .bind(bridge.venue_id)
        .fetch_one(tx.conn())
        .await?;
        if !known {
            return Err(Error::NotFound("station"));
        }
    }
    let inserted = sqlx::query(
        "insert into bridge_event (tenant_id, bridge_id, seq, station_id, kind, body, occurred_at)
         values ($1, $2, $3, $4, $5, $6, $7) on conflict do nothing",
    )
    .bind(tx.tenant())
    .bind(bridge.id)
    .bind(seq)
    .bind(station_id)
    .bind(kind)
    .bind(body)
    .bind(occurred_at)
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "update bridge set last_seq = greatest(last_seq, $3) where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(bridge.id)
    .bind(seq)
    .execute(tx.conn())
    .await?;
    if let (true, Some(station), "switched", Some(false)) = (
        inserted,
        station_id,
        kind,
        body.get("on").and_then(serde_json::Value::as_bool),
    ) {
        let planned_end =
            body.get("reason").and_then(serde_json::Value::as_str) == Some("planned_end");
        let session = body
            .get("session_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|id| id.parse().ok());
        sessions::switched_off(tx, station, session, occurred_at, planned_end).await?;
    }
    Ok(inserted)
}

/// What the station's device last reported (the newest event about it), if anything.
pub async fn device_state(
    tx: &mut TenantTx,
    station_id: Uuid,
) -> Result<Option<(String, serde_json::Value, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "select kind, body, occurred_at from bridge_event where tenant_id = $1 and station_id = $2
         order by occurred_at desc, seq desc limit 1",
    )
    .bind(tx.tenant())
    .bind(station_id)
    .fetch_optional(tx.conn())
    .await?)
}

/// Issues a new key for the PC agent of an `agent` station: shown once; the station keeps only its SHA-256 (in
/// `control_settings.agent_key_sha256`), which the bridge receives with the schedule and checks agents against.
pub async fn issue_agent_key(tx: &mut TenantTx, actor: &Actor, station_id: Uuid) -> Result<String> {
    actor.require_manager()?;
    let station = crate::stations::get(tx, station_id).await?;
    if station.control != crate::model::StationControl::Agent {
        return Err(Error::Conflict(
            "only a station controlled by a PC agent has an agent key".into(),
        ));
    }
    let key = format!("syag_{}", auth::random_token());
    let hash = hex_sha256(&key);
    sqlx::query(
        "update station set control_settings = control_settings || jsonb_build_object('agent_key_sha256', $3::text)
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(station_id)
    .bind(&hash)
    .execute(tx.conn())
    .await?;
    record(tx, actor, "station.issue_agent_key", station_id).await?;
    tx.wake_venue(station.venue_id).await?;
    Ok(key)
}

fn hex_sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}
