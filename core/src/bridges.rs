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
    /// When its live tunnel last went down (a report of something done offline must be later than this).
    pub tunnel_down_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, venue_id, name, online, last_seen_at, version, clock_offset_ms, last_seq, revoked_at,
    tunnel_down_at, created_at";

/// How far a switch-off may come before what the bridge knew, for the bridge's and the cloud's clocks (the bridge
/// stamps events by the cloud's clock as it measures it through heartbeats).
pub const CLOCK_TOLERANCE: chrono::Duration = chrono::Duration::seconds(2);

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
    let mut query =
        sqlx::QueryBuilder::new(format!("select {COLUMNS} from bridge where tenant_id = "));
    query.push_bind(tx.tenant());
    crate::db::filter(&mut query, "venue_id = $", venue);
    query.push(format_args!(
        " order by created_at limit {}",
        crate::validate::LIST_CAP
    ));
    Ok(query.build_query_as().fetch_all(tx.conn()).await?)
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
    // Its open tunnels hear of it and close (they hold the old token).
    tx.wake_venue(bridge.venue_id).await?;
    Ok((get(tx, id).await?, token))
}

pub async fn revoke(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Bridge> {
    actor.require_manager()?;
    let bridge = get(tx, id).await?;
    sqlx::query(
        "update bridge set revoked_at = coalesce(revoked_at, now()), online = false where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .execute(tx.conn())
    .await?;
    record(tx, actor, "bridge.revoke", id).await?;
    if bridge.online {
        announce(tx, id, bridge.venue_id, false).await?;
    } else {
        // (It may have come online since it was read.)
        crate::stations::follow_presence(tx, bridge.venue_id, None).await?;
    }
    // Its open tunnels hear of it and close at once.
    tx.wake_venue(bridge.venue_id).await?;
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

/// The bridge said something: online, seen now, with its version. `tunnel`: the tunnel it came on, once that tunnel
/// is open; then only while it is the bridge's live one, so a heartbeat racing the workers' setting a silent bridge
/// offline ([`silent`]) does not bring back online a bridge whose tunnel the cloud no longer holds (that tunnel
/// closes at its next check and the bridge connects again). Returns whether the bridge was marked seen.
pub async fn seen(
    tx: &mut TenantTx,
    id: Uuid,
    tunnel: Option<Uuid>,
    version: Option<&str>,
    clock_offset_ms: Option<i64>,
) -> Result<bool> {
    let version = version.map(|v| reported_text(v, 64));
    let changed: Option<(Uuid, bool)> = sqlx::query_as(
        "update bridge b set online = true, last_seen_at = now(), version = coalesce($4, b.version),
           clock_offset_ms = coalesce($5, b.clock_offset_ms)
         from (select online from bridge where tenant_id = $1 and id = $2) before
         where b.tenant_id = $1 and b.id = $2 and ($3::uuid is null or b.tunnel_id = $3)
         returning b.venue_id, before.online",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(tunnel)
    .bind(version)
    .bind(clock_offset_ms)
    .fetch_optional(tx.conn())
    .await?;
    let Some((venue, was)) = changed else {
        return Ok(false);
    };
    if !was {
        announce(tx, id, venue, true).await?;
    } else {
        // Each hello and heartbeat also sets right what a race left behind (a bridge that went offline while a
        // session of its venue was stopping); a no-op when nothing is off.
        crate::stations::follow_presence(tx, venue, None).await?;
    }
    Ok(true)
}

/// Tells live subscribers that a bridge went online or offline; the stations of its venue behind a bridge follow.
async fn announce(tx: &mut TenantTx, bridge: Uuid, venue: Uuid, online: bool) -> Result<()> {
    let kind = if online {
        "bridge.online"
    } else {
        "bridge.offline"
    };
    tx.emit(
        crate::events::NewEvent::new(kind, serde_json::json!({ "online": online }))
            .venue(venue)
            .subject(bridge),
    );
    crate::stations::follow_presence(tx, venue, None).await
}

/// A new tunnel of the bridge said hello: it becomes the live one (an older tunnel of the same bridge is woken,
/// finds itself replaced and closes). Returns the tunnel's id.
pub async fn open_tunnel(tx: &mut TenantTx, bridge: &Bridge) -> Result<Uuid> {
    let tunnel = Uuid::now_v7();
    sqlx::query("update bridge set tunnel_id = $3 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(bridge.id)
        .bind(tunnel)
        .execute(tx.conn())
        .await?;
    tx.wake_venue(bridge.venue_id).await?;
    Ok(tunnel)
}

/// May this tunnel go on?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelStanding {
    Live,
    /// Another connection of the same bridge took over.
    Replaced,
    /// The token it connected with was rotated or the bridge revoked.
    Revoked,
}

/// Whether `tunnel` (connected with the token of hash `token_hash`) is still the bridge's live tunnel. Locks the
/// bridge row for the transaction, so a tunnel that takes commands in it cannot be replaced meanwhile.
pub async fn tunnel_standing(
    tx: &mut TenantTx,
    id: Uuid,
    token_hash: &[u8],
    tunnel: Uuid,
) -> Result<TunnelStanding> {
    let row: Option<(bool, Option<Uuid>)> = sqlx::query_as(
        "select token_hash = $3 and revoked_at is null, tunnel_id from bridge
         where tenant_id = $1 and id = $2 for share",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(token_hash)
    .fetch_optional(tx.conn())
    .await?;
    Ok(match row {
        None | Some((false, _)) => TunnelStanding::Revoked,
        Some((true, live)) if live != Some(tunnel) => TunnelStanding::Replaced,
        Some(_) => TunnelStanding::Live,
    })
}

/// The tunnel closed: if it was the live one, the bridge is offline from now, and its reports of what it did
/// offline must be later than this moment.
pub async fn tunnel_closed(tx: &mut TenantTx, id: Uuid, tunnel: Uuid) -> Result<()> {
    let closed: Option<(Uuid, bool)> = sqlx::query_as(
        "update bridge b set online = false, last_seen_at = now(), tunnel_down_at = now(), tunnel_id = null
         from (select online from bridge where tenant_id = $1 and id = $2) before
         where b.tenant_id = $1 and b.id = $2 and b.tunnel_id = $3
         returning b.venue_id, before.online",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(tunnel)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((venue, true)) = closed {
        announce(tx, id, venue, false).await?;
    }
    Ok(())
}

/// The bridge has not been heard from for two minutes (by the database's clock) though still marked online: the
/// API process that held its tunnel stopped without closing it. It is offline from when it was last heard, as a
/// closed tunnel makes it. Returns whether it was. The venue is woken: a tunnel task still running somewhere on a
/// link that died without a close finds itself replaced and closes, ending the chargers it relays. A live tunnel
/// that was merely slow does the same, and the bridge connects again, online.
pub async fn silent(tx: &mut TenantTx, id: Uuid) -> Result<bool> {
    let venue: Option<Uuid> = sqlx::query_scalar(
        "update bridge set online = false, tunnel_down_at = last_seen_at, tunnel_id = null
          where tenant_id = $1 and id = $2 and online and last_seen_at < now() - interval '2 minutes'
          returning venue_id",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    match venue {
        Some(venue) => {
            announce(tx, id, venue, false).await?;
            tx.wake_venue(venue).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The schedule just sent to the bridge, as (session, planned end) pairs: remembers each session's planned end as
/// delivered, when it changed (what
/// the bridge knew is what it may later say it acted on).
pub async fn delivered(
    tx: &mut TenantTx,
    bridge_id: Uuid,
    plans: &[(Uuid, Option<DateTime<Utc>>)],
) -> Result<()> {
    let (sessions, untils): (Vec<Uuid>, Vec<Option<DateTime<Utc>>>) = plans.iter().copied().unzip();
    if sessions.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into bridge_delivery (tenant_id, bridge_id, session_id, until)
         select $1, $2, p.session_id, p.until from unnest($3::uuid[], $4::timestamptz[]) as p (session_id, until)
         where not exists (
           select 1 from (select d.until from bridge_delivery d
                          where d.tenant_id = $1 and d.bridge_id = $2 and d.session_id = p.session_id
                          order by d.delivered_at desc limit 1) last
           where last.until is not distinct from p.until)
         on conflict do nothing",
    )
    .bind(tx.tenant())
    .bind(bridge_id)
    .bind(&sessions)
    .bind(&untils)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Something a bridge sent that was refused, as owners see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Anomaly {
    pub id: Uuid,
    pub bridge_id: Uuid,
    /// `end_refused` (a switch-off the bridge could not have made), `seq_out_of_window`, `flood`, `event_failed` (an
    /// event the cloud failed to apply, with its frame); from cabinets
    /// (see [`crate::cabinets`]): `unknown_asset`, `asset_out_of_place`, `slot_occupied`, `unknown_slot`,
    /// `unknown_eject`, `eject_after_void`, `bad_report`.
    pub kind: String,
    pub station_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub seq: Option<i64>,
    pub detail: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Keeps a refused report as an anomaly and counts it (`edge_anomalies_total{kind}`).
pub async fn anomaly(
    tx: &mut TenantTx,
    bridge_id: Uuid,
    kind: &'static str,
    station_id: Option<Uuid>,
    session_id: Option<Uuid>,
    seq: Option<i64>,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "insert into bridge_anomaly (tenant_id, id, bridge_id, kind, station_id, session_id, seq, detail)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(bridge_id)
    .bind(kind)
    .bind(station_id)
    .bind(session_id)
    .bind(seq)
    .bind(&detail)
    .execute(tx.conn())
    .await?;
    tracing::warn!(bridge.id = %bridge_id, kind, %detail, "bridge report refused");
    metrics::counter!("edge_anomalies_total", "kind" => kind).increment(1);
    Ok(())
}

/// An event of the bridge's that failed inside the cloud, kept as an `event_failed` anomaly with its `frame`: whether
/// to give it up now, which is when this is at least the `attempts`-th failure of the event within a day and the
/// first of them is at least `patience` old (a bridge dials again within seconds, so a count alone would give up an
/// event on a hiccup of the database of a few seconds).
pub async fn event_failed(
    tx: &mut TenantTx,
    bridge_id: Uuid,
    seq: i64,
    frame: &str,
    attempts: i64,
    patience: chrono::Duration,
) -> Result<bool> {
    let (before, first): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "select count(*), min(created_at) from bridge_anomaly
         where tenant_id = $1 and bridge_id = $2 and kind = 'event_failed' and seq = $3
           and created_at > now() - interval '1 day'",
    )
    .bind(tx.tenant())
    .bind(bridge_id)
    .bind(seq)
    .fetch_one(tx.conn())
    .await?;
    let attempt = before + 1;
    let given_up = attempt >= attempts && first.is_some_and(|f| Utc::now() - f >= patience);
    // As JSON, with any NUL marked (jsonb cannot hold one).
    let mut frame =
        serde_json::from_str(frame).unwrap_or_else(|_| serde_json::Value::String(frame.to_owned()));
    crate::validate::without_nul(&mut frame);
    let detail = serde_json::json!({
        "attempt": attempt, "given_up": given_up, "frame": frame,
    });
    anomaly(tx, bridge_id, "event_failed", None, None, Some(seq), detail).await?;
    Ok(given_up)
}

/// The bridge's anomalies, newest first.
pub async fn anomalies(tx: &mut TenantTx, bridge_id: Uuid, limit: i64) -> Result<Vec<Anomaly>> {
    Ok(sqlx::query_as(
        "select id, bridge_id, kind, station_id, session_id, seq, detail, created_at from bridge_anomaly
         where tenant_id = $1 and bridge_id = $2 order by created_at desc, id desc limit $3",
    )
    .bind(tx.tenant())
    .bind(bridge_id)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
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

/// How long a command taken by a tunnel but never acknowledged is sent again to the bridge's next tunnel (seconds).
/// A command is taken before its frame is written; if the API process dies in between, or the write fails, the
/// bridge reconnects within its backoff (30 s at most) and gets it then. A command older than this is not sent
/// again: an eject minutes late would hand a powerbank to nobody.
pub const COMMAND_RESEND_SECS: i64 = 300;

/// The condition, over a command `c`, that it is not past its deadline: only a bridge-driven cabinet's eject has
/// one ([`crate::rentals::EJECT_DEADLINE_SECS`], fixed when it was written). Undelivered past it, it is never
/// taken: it would hand a powerbank to nobody. The workers close it and void its rental (`sys_overdue_ejects`,
/// [`crate::rentals::expire_eject`]).
macro_rules! in_time {
    () => {
        "(c.deadline_at is null or c.deadline_at > now())"
    };
}

/// Takes the venue's undelivered commands, marking them delivered, in the order they were written. With `resend`
/// (a tunnel's first take) it also takes again those a tunnel took in the last [`COMMAND_RESEND_SECS`] that were
/// never acknowledged (an eject only within its [`crate::rentals::EJECT_DEADLINE_SECS`]; one never taken by then is
/// not taken at all, see `in_time!`): sending one again is harmless (switching follows the schedule; a
/// cabinet answers a request id it has seen without ejecting again).
pub async fn take_commands(
    tx: &mut TenantTx,
    venue_id: Uuid,
    resend: bool,
) -> Result<Vec<OutgoingCommand>> {
    let mut commands: Vec<OutgoingCommand> = sqlx::query_as(concat!(
        "update device_command c set delivered_at = now()
         from station s
         where c.tenant_id = $1 and s.tenant_id = c.tenant_id and s.id = c.station_id and s.venue_id = $2
           and c.delivered_at is null and ",
        in_time!(),
        "
         returning c.id, c.station_id, c.command, c.payload"
    ))
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_all(tx.conn())
    .await?;
    if resend {
        let again: Vec<OutgoingCommand> = sqlx::query_as(
            "update device_command c set delivered_at = now()
             from station s
             where c.tenant_id = $1 and s.tenant_id = c.tenant_id and s.id = c.station_id and s.venue_id = $2
               and c.acked_at is null and c.delivered_at is not null
               and c.created_at > now() - make_interval(secs => $3)
               and c.delivered_at < now()
               and not (c.command = 'eject' and c.created_at <= now() - make_interval(secs => $4))
             returning c.id, c.station_id, c.command, c.payload",
        )
        .bind(tx.tenant())
        .bind(venue_id)
        .bind(COMMAND_RESEND_SECS as f64)
        .bind(crate::rentals::EJECT_DEADLINE_SECS as f64)
        .fetch_all(tx.conn())
        .await?;
        if !again.is_empty() {
            metrics::counter!("edge_commands_resent_total").increment(again.len() as u64);
        }
        commands.extend(again);
    }
    // Ids are UUIDv7: their order is the order the commands were written.
    commands.sort_by_key(|c| c.id);
    Ok(commands)
}

/// Is a bridge of the venue connected: online, not revoked, and heard from in the last two minutes (a tunnel whose
/// API process died without saying so stops counting then)?
pub async fn venue_connected(tx: &mut TenantTx, venue_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from bridge where tenant_id = $1 and venue_id = $2 and online and revoked_at is null
                          and last_seen_at > now() - interval '2 minutes')",
    )
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_one(tx.conn())
    .await?)
}

/// Does the venue have commands not yet delivered? (A tunnel asks at each heartbeat, in case a wake-up was lost.)
pub async fn has_pending_commands(tx: &mut TenantTx, venue_id: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar(concat!(
        "select exists (select 1 from device_command c join station s on s.tenant_id = c.tenant_id and s.id = c.station_id
                        where c.tenant_id = $1 and s.venue_id = $2 and c.delivered_at is null and ",
        in_time!(),
        ")"
    ))
    .bind(tx.tenant())
    .bind(venue_id)
    .fetch_one(tx.conn())
    .await?)
}

/// The bridge applied a command (or could not). Only a command for a station of the bridge's own venue; another
/// venue's command is not found.
pub async fn command_done(tx: &mut TenantTx, venue_id: Uuid, id: Uuid, result: &str) -> Result<()> {
    let result = reported_text(result, 500);
    let done = sqlx::query(
        "update device_command c set acked_at = coalesce(c.acked_at, now()), result = coalesce(c.result, $4)
         from station s
         where c.tenant_id = $1 and c.id = $2 and s.tenant_id = c.tenant_id and s.id = c.station_id
           and s.venue_id = $3",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(venue_id)
    .bind(result)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if done == 0 {
        return Err(Error::NotFound("command"));
    }
    Ok(())
}

/// A bridge's free text as kept: at most `max` characters, a NUL (which Postgres cannot store, and which would fail
/// the whole frame) marked as U+FFFD.
fn reported_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c == '\0' { '\u{FFFD}' } else { c })
        .collect()
}

/// What became of an upstream event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// Recorded before (a redelivery): dropped.
    Duplicate,
    /// Its sequence number is beyond the window above the last recorded one: refused, kept as an anomaly, not
    /// recorded (so it cannot move the sequence the bridge is welcomed with).
    OutOfWindow {
        last_seq: i64,
    },
}

/// Records an upstream event once. The station must be the bridge's venue's, and `seq` at most `window` above the
/// last recorded one. A new report that a station was switched off is applied to its session
/// ([`sessions::switched_off`]) when the bridge could have made it ([`judge_switch_off`]); otherwise it is kept
/// as an anomaly and changes nothing.
#[expect(
    clippy::too_many_arguments,
    reason = "an event's parts as the tunnel has them; a struct would only repeat them"
)]
pub async fn record_event(
    tx: &mut TenantTx,
    bridge: &Bridge,
    seq: i64,
    window: i64,
    station_id: Option<Uuid>,
    kind: &str,
    body: &serde_json::Value,
    occurred_at: DateTime<Utc>,
) -> Result<Recorded> {
    let control: Option<String> = match station_id {
        Some(station) => Some(
            sqlx::query_scalar(
                "select control::text from station where tenant_id = $1 and id = $2 and venue_id = $3",
            )
            .bind(tx.tenant())
            .bind(station)
            .bind(bridge.venue_id)
            .fetch_optional(tx.conn())
            .await?
            .ok_or(Error::NotFound("station"))?,
        ),
        None => None,
    };
    // The row is locked: events of one bridge are judged one at a time against its current state.
    let (last_seq, tunnel_down_at): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "select last_seq, tunnel_down_at from bridge where tenant_id = $1 and id = $2 for update",
    )
    .bind(tx.tenant())
    .bind(bridge.id)
    .fetch_one(tx.conn())
    .await?;
    if seq > last_seq.saturating_add(window) {
        anomaly(
            tx,
            bridge.id,
            "seq_out_of_window",
            station_id,
            None,
            Some(seq),
            serde_json::json!({ "last_seq": last_seq, "window": window }),
        )
        .await?;
        return Ok(Recorded::OutOfWindow { last_seq });
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
    if let (true, Some(station)) = (inserted, station_id) {
        // Whether the device answers: the station's status follows.
        let reachable = match kind {
            "device_state" => body.get("reachable").and_then(serde_json::Value::as_bool),
            "agent_state" => body.get("connected").and_then(serde_json::Value::as_bool),
            // A cabinet's slots say nothing of whether it is there now (the broker keeps them): its `status`, reported
            // as `device_state`, does.
            _ => None,
        };
        if let Some(reachable) = reachable {
            crate::stations::device_reachable(tx, station, reachable, occurred_at).await?;
        }
        // Device state and agent liveness, as the bridge saw them.
        tx.emit(
            crate::events::NewEvent::new(
                "station.device",
                serde_json::json!({ "kind": kind, "body": body, "occurredAt": occurred_at }),
            )
            .venue(bridge.venue_id)
            .station(station)
            .subject(bridge.id),
        );
    }
    if let (true, Some(station), "device_state", Some(register)) = (
        inserted,
        station_id,
        kind,
        // A register beyond a terawatt-hour (or below zero) is a broken meter, not a reading: left out. (Taken as
        // 0 it would become the session's baseline, and the next true reading would bill the whole counter.)
        body.get("energy_wh")
            .and_then(serde_json::Value::as_i64)
            .filter(|wh| (0..=crate::sessions::MAX_REGISTER_WH).contains(wh)),
    ) {
        let power = body
            .get("power_w")
            .and_then(serde_json::Value::as_f64)
            .map(|w| w.round().clamp(0.0, f64::from(i32::MAX)) as i32);
        meter_plug(tx, station, register, power, occurred_at).await?;
    }
    if let (true, Some(station), Some("cabinet")) = (inserted, station_id, control.as_deref()) {
        let found =
            crate::cabinets::apply(tx, bridge.venue_id, station, kind, body, occurred_at).await?;
        for (what, session, detail) in found {
            anomaly(
                tx,
                bridge.id,
                what,
                Some(station),
                session,
                Some(seq),
                detail,
            )
            .await?;
        }
    }
    if let (true, Some(station), "switched", Some(false)) = (
        inserted,
        station_id,
        kind,
        body.get("on").and_then(serde_json::Value::as_bool),
    ) {
        let planned_end =
            body.get("reason").and_then(serde_json::Value::as_str) == Some("planned_end");
        let named = body
            .get("session_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|id| id.parse().ok());
        let at = occurred_at.min(Utc::now());
        let report = SwitchOff {
            bridge: bridge.id,
            manual: control.as_deref() == Some("manual"),
            tunnel_down_at,
            at,
            planned_end,
        };
        if let Some(session) = sessions::switched_off_session(tx, station, named, at).await? {
            let locked = sessions::lock(tx, session).await?;
            match judge_switch_off(tx, &report, &locked).await? {
                None => {
                    sessions::switched_off(tx, station, Some(session), at, planned_end).await?;
                }
                Some(why) => {
                    let detail = serde_json::json!({
                        "why": why, "occurred_at": occurred_at, "reason": body.get("reason"),
                    });
                    anomaly(
                        tx,
                        bridge.id,
                        "end_refused",
                        Some(station),
                        Some(session),
                        Some(seq),
                        detail,
                    )
                    .await?;
                }
            }
        }
    }
    Ok(if inserted {
        Recorded::New
    } else {
        Recorded::Duplicate
    })
}

/// A plug's energy counter (Wh) read at `at` meters the session running on its station: the session's baseline is
/// the last reading from before it started (the plug was off then, so nothing is lost between the start and the
/// first reading), and its energy is the counter's rise since — billed where the tariff has energy terms. A
/// reading from before the session, or with no session running, changes nothing.
async fn meter_plug(
    tx: &mut TenantTx,
    station: Uuid,
    register: i64,
    power: Option<i32>,
    at: DateTime<Utc>,
) -> Result<()> {
    let running: Option<(Uuid, DateTime<Utc>, Option<i64>)> = sqlx::query_as(
        "select id, started_at, meter_start_wh from session
         where tenant_id = $1 and station_id = $2 and status in ('active', 'paused') and asset_id is null",
    )
    .bind(tx.tenant())
    .bind(station)
    .fetch_optional(tx.conn())
    .await?;
    let Some((session, started_at, baseline)) = running else {
        return Ok(());
    };
    if at < started_at {
        return Ok(());
    }
    if baseline.is_none() {
        let before: Option<i64> = sqlx::query_scalar(
            "select (body->>'energy_wh')::bigint from bridge_event
             where tenant_id = $1 and station_id = $2 and kind = 'device_state' and occurred_at <= $3
               and body ? 'energy_wh'
             order by occurred_at desc limit 1",
        )
        .bind(tx.tenant())
        .bind(station)
        .bind(started_at)
        .fetch_optional(tx.conn())
        .await?
        .flatten();
        if let Some(before) = before.filter(|b| *b <= register) {
            sessions::meter(tx, session, before, None).await?;
        }
    }
    sessions::meter(tx, session, register, power).await?;
    Ok(())
}

/// A bridge's report that it switched a station off.
struct SwitchOff {
    bridge: Uuid,
    /// The station is manual: no bridge controls it.
    manual: bool,
    tunnel_down_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    planned_end: bool,
}

/// Could the bridge have switched the session's station off as it reports? `None` if so, else why not. A bridge
/// reports only what it could have done: never for a manual station; an end by its own timer (`planned_end`) that
/// would end the session earlier than the cloud has it no earlier than the later of the planned end as last
/// delivered to that bridge (before the switch-off) and the moment its tunnel went down, and never for a session
/// the cloud settled while the tunnel was up; any other switch-off of an ended session no earlier than its end.
async fn judge_switch_off(
    tx: &mut TenantTx,
    report: &SwitchOff,
    session: &sessions::Session,
) -> Result<Option<&'static str>> {
    if report.manual {
        return Ok(Some("the station is manual; no bridge controls it"));
    }
    let at = report.at + CLOCK_TOLERANCE;
    let ends_later = session.is_running() || session.ended_at.is_some_and(|end| end > report.at);
    if !report.planned_end {
        return Ok(match session.ended_at {
            Some(end) if !session.is_running() && at < end => {
                Some("the session had not ended yet at the reported switch-off")
            }
            _ => None,
        });
    }
    if !ends_later {
        return Ok(None);
    }
    if let Some(end) = session.ended_at.filter(|_| !session.is_running()) {
        if report.tunnel_down_at.is_none_or(|down| end <= down) {
            return Ok(Some("the cloud ended the session while the tunnel was up"));
        }
    }
    let delivered: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "select until from bridge_delivery where tenant_id = $1 and bridge_id = $2 and session_id = $3
           and delivered_at <= $4
         order by delivered_at desc limit 1",
    )
    .bind(tx.tenant())
    .bind(report.bridge)
    .bind(session.id)
    .bind(report.at)
    .fetch_optional(tx.conn())
    .await?;
    let Some(Some(until)) = delivered else {
        return Ok(Some(
            "the bridge had been given no planned end for this session",
        ));
    };
    if at < until {
        return Ok(Some("before the planned end the bridge had been given"));
    }
    if report.tunnel_down_at.is_some_and(|down| at < down) {
        return Ok(Some("before the tunnel went down"));
    }
    Ok(None)
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
    let hash = crate::idempotency::hex_sha256(&key);
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
