//! Charging (seed 002): the cloud as an OCPP central system. This module holds what does not depend on the
//! protocol version — chargers and their identities, connections, boots, connector status, tags, transactions
//! billed as metered sessions, and the outbox of calls to chargers; `switchyard-api`'s `ocpp` module speaks
//! OCPP-J 1.6 and 2.0.1 on top of it.
//!
//! A charger belongs to one station (kind `ev_charger`, control `ocpp`, `control_settings.charge_point_id`), or,
//! while an operator has not adopted it yet, to no station (`registration = pending`, or `rejected` once refused,
//! until adopted after all). Its identity is unique across the platform (a directory only listed functions reach),
//! its HTTP Basic password is stored as a SHA-256. Its state lives in the database, never only in the process that
//! holds its connection: `connection_id` names the live connection (a newer one replaces it), and calls to it are
//! rows any replica can write.

pub mod calls;
pub mod tags;
pub mod transactions;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::{RowLock, SystemDb, TenantId, TenantTx};
use crate::error::{Error, Result};
use crate::events::NewEvent;
use crate::model::{Actor, StationControl, StationKind};
use crate::stations::Station;

/// How a charger registration stands (BootNotification's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "charger_registration", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    Pending,
    Accepted,
    Rejected,
}

/// The OCPP version a charger speaks (its WebSocket subprotocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Protocol {
    #[serde(rename = "ocpp1.6")]
    V16,
    #[serde(rename = "ocpp2.0.1")]
    V201,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V16 => "ocpp1.6",
            Self::V201 => "ocpp2.0.1",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ocpp1.6" => Some(Self::V16),
            "ocpp2.0.1" => Some(Self::V201),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Charger {
    pub id: Uuid,
    pub station_id: Option<Uuid>,
    /// The station's venue (none until adopted: pending or refused).
    pub venue_id: Option<Uuid>,
    pub charge_point_id: String,
    pub registration: Registration,
    /// `ocpp1.6` or `ocpp2.0.1`, as last connected.
    pub protocol: Option<String>,
    pub vendor: String,
    pub model: String,
    pub serial_number: String,
    pub firmware_version: String,
    pub boot_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When its current (or last) connection began.
    #[serde(skip)]
    pub connected_at: Option<DateTime<Utc>>,
    /// When it was last heard before that connection (migration 0064).
    #[serde(skip)]
    pub seen_before_connect_at: Option<DateTime<Utc>>,
    pub online: bool,
    #[serde(skip)]
    pub connection_id: Option<Uuid>,
    pub via_bridge: Option<Uuid>,
    pub heartbeat_secs: i32,
    pub local_list_version: i64,
    pub power_limit_w: Option<i32>,
    pub configuration: serde_json::Value,
    /// Whether a password is set (the password itself is shown once, when set).
    pub has_password: bool,
    /// A new password is on its way to the charger (or it refused it): until it is known to use it, the ones it may
    /// be using still let it in.
    pub password_pending: bool,
    /// It accepted a configuration change for after a reboot (`RebootRequired`), and no boot since was taken for a
    /// reboot (see [`boot`]).
    pub reboot_required: bool,
    pub created_at: DateTime<Utc>,
}

impl Charger {
    /// A member scoped to venues reaches a charger of one of them (one not adopted yet, at no venue, any manager).
    pub fn check_scope(&self, actor: &Actor, what: &'static str) -> Result<()> {
        match self.venue_id {
            Some(venue) => actor.check_venue(venue, what),
            None => Ok(()),
        }
    }

    /// The version its calls are written for (1.6 until it has connected).
    pub fn protocol(&self) -> Protocol {
        self.protocol
            .as_deref()
            .and_then(Protocol::parse)
            .unwrap_or(Protocol::V16)
    }
}

const COLUMNS: &str = "c.id, c.station_id, s.venue_id, c.charge_point_id, c.registration, c.protocol, c.vendor,
    c.model, c.serial_number, c.firmware_version, c.boot_at, c.last_seen_at, c.connected_at,
    c.seen_before_connect_at, c.online, c.connection_id,
    c.via_bridge, c.heartbeat_secs, c.local_list_version, c.power_limit_w, c.configuration,
    c.password_hash is not null as has_password, c.reboot_required_on is not null as reboot_required,
    (cardinality(c.previous_password_hashes) > 0
     or exists (select 1 from ocpp_call o where o.tenant_id = c.tenant_id and o.charger_id = c.id
                  and o.password_hash = c.password_hash and o.status in ('pending', 'sent'))) as password_pending,
    c.created_at";

fn select(filter: &str) -> String {
    format!(
        "select {COLUMNS} from charger c left join station s on s.tenant_id = c.tenant_id and s.id = c.station_id
         where c.tenant_id = $1 and {filter}"
    )
}

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Charger> {
    sqlx::query_as(&select("c.id = $2"))
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(Error::NotFound("charger"))
}

/// The charger of a station.
pub async fn of_station(tx: &mut TenantTx, station: Uuid) -> Result<Charger> {
    sqlx::query_as(&select("c.station_id = $2"))
        .bind(tx.tenant())
        .bind(station)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(Error::NotFound("charger"))
}

/// Chargers, at one venue or all; those not adopted yet (at no venue) with all, for any manager.
pub async fn list(
    tx: &mut TenantTx,
    venue: Option<Uuid>,
    venues: Option<&[Uuid]>,
) -> Result<Vec<Charger>> {
    let sql = select(
        "($2::uuid is null or s.venue_id = $2)
         and ($3::uuid[] is null or s.venue_id = any($3) or ($2::uuid is null and c.station_id is null))
         order by c.charge_point_id limit 1000",
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(venue)
        .bind(venues)
        .fetch_all(tx.conn())
        .await?)
}

/// Checks an identity as OCPP allows it in a URL: 1–48 of letters, digits and `. _ : * + @ -`.
pub fn check_identity(id: &str) -> Result<&str> {
    let ok = (1..=48).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:*+@-".contains(c));
    if ok {
        Ok(id)
    } else {
        Err(Error::validation(
            "chargePointId",
            "must be 1 to 48 letters, digits or . _ : * + @ - (it is the last part of the charger's URL)",
        ))
    }
}

async fn claim(tx: &mut TenantTx, identity: &str, charger: Uuid) -> Result<()> {
    let claimed: bool = sqlx::query_scalar("select sys_claim_charge_point_id($1, $2)")
        .bind(identity)
        .bind(charger)
        .fetch_one(tx.conn())
        .await?;
    if claimed {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "the charge point id {identity:?} is taken; every charger needs an id of its own"
        )))
    }
}

async fn release(tx: &mut TenantTx, identity: &str) -> Result<()> {
    sqlx::query("select sys_release_charge_point_id($1)")
        .bind(identity)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Keeps a station's charger in step with its control settings (called by station create and update): an `ocpp`
/// station has a charger under `control_settings.charge_point_id`; another control releases its identity.
pub async fn follow_station(tx: &mut TenantTx, station: &Station) -> Result<()> {
    let current: Option<(Uuid, String)> = sqlx::query_as(
        "select id, charge_point_id from charger where tenant_id = $1 and station_id = $2",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_optional(tx.conn())
    .await?;
    let wanted = (station.control == StationControl::Ocpp && station.archived_at.is_none())
        .then(|| {
            station
                .control_settings
                .get("charge_point_id")
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
        })
        .flatten();
    match (current, wanted) {
        (None, None) => {}
        // Claimed again (a no-op when it is still this charger's): the identity may have been released while the
        // station had another control.
        (Some((id, old)), Some(new)) if old == new => claim(tx, new, id).await?,
        (None, Some(new)) => {
            if station.kind != StationKind::EvCharger {
                return Err(Error::validation(
                    "control",
                    "the ocpp control is for ev_charger stations",
                ));
            }
            let new = check_identity(new)?;
            let id = Uuid::now_v7();
            sqlx::query(
                "insert into charger (tenant_id, id, station_id, charge_point_id) values ($1, $2, $3, $4)",
            )
            .bind(tx.tenant())
            .bind(id)
            .bind(station.id)
            .bind(new)
            .execute(tx.conn())
            .await?;
            claim(tx, new, id).await?;
        }
        (Some((id, old)), Some(new)) => {
            let new = check_identity(new)?;
            release(tx, &old).await?;
            claim(tx, new, id).await?;
            // A new identity is a new charger as far as the wire goes: it needs a new password too, and no password
            // still on its way to the old one may open it.
            sqlx::query(
                "update charger set charge_point_id = $3, password_hash = null, previous_password_hashes = '{}',
                   reboot_required_on = null
                 where tenant_id = $1 and id = $2",
            )
            .bind(tx.tenant())
            .bind(id)
            .bind(new)
            .execute(tx.conn())
            .await?;
            calls::drop_unsent_passwords(tx, id).await?;
        }
        (Some((_, old)), None) => release(tx, &old).await?,
    }
    Ok(())
}

/// A new random charger password: 32 characters (OCPP allows 16–40), letters, digits, `-` and `_`.
fn new_password() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Sets a new HTTP Basic password for a charger and returns it (shown once; only its hash is kept). A connected
/// charger is sent the new password at once (1.6 `ChangeConfiguration AuthorizationKey`, 2.0.1 `SetVariables
/// SecurityCtrlr.BasicAuthPassword`), so that it uses it when it next connects; its current connection goes on.
/// With `revoke_old` (a password that leaked) the old one stops working at once, and a connected charger is
/// disconnected rather than sent the new one, which is configured on it by hand.
pub async fn set_password(
    tx: &mut TenantTx,
    actor: &Actor,
    id: Uuid,
    revoke_old: bool,
) -> Result<(Charger, String)> {
    actor.require_manager()?;
    // Held before it is read: a refusal landing meanwhile is seen.
    lock(tx, id, RowLock::NoKeyUpdate).await?;
    let charger = get(tx, id).await?;
    charger.check_scope(actor, "charger")?;
    if charger.registration == Registration::Rejected {
        return Err(Error::Conflict(
            "this charger was refused: adopt it to give it a password".into(),
        ));
    }
    let keep = if revoke_old {
        Keep::Nothing { send: false }
    } else {
        Keep::WhileOnline
    };
    let password = give_password(tx, charger.id, Some(actor.user_id), keep).await?;
    record(
        tx,
        actor,
        "charger.set_password",
        &charger,
        serde_json::json!({ "revoke_old": revoke_old }),
    )
    .await?;
    Ok((get(tx, id).await?, password))
}

/// Which passwords a charger keeps while a new one is on its way to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Online, the ones it may be using stay valid until it is known to use the new one; offline, none.
    WhileOnline,
    /// It is connecting now with one of them (the ones kept are already those it may be using); the new one goes
    /// out on this connection.
    Connecting,
    /// None: the old passwords stop working at once. A connected charger is sent the new one (adoption), or not and
    /// disconnected (`revoke`: a password that leaked, whose connection may be an impostor's).
    Nothing { send: bool },
}

/// How many passwords a charger may still be using are kept valid at most: the one it is known to use, and those
/// sent to it since that it may have applied.
const PASSWORDS_KEPT: usize = 4;

/// Stores a new password's hash for a charger and returns the password. A connected charger is sent it at once, and
/// the passwords it may be using stay valid until it is known to have the new one (it accepts the call, or logs in
/// with it): the one it is known to use, and any sent since that it may have applied (no answer said it refused).
/// A charger that drops before the call reaches it, or whose answer is lost, is not locked out. An offline charger
/// is given the password by hand, and its old one stops working at once. A new password still waiting to be sent is
/// replaced by this one, never sent after it, and never valid.
async fn give_password(
    tx: &mut TenantTx,
    id: Uuid,
    by: Option<Uuid>,
    keep: Keep,
) -> Result<String> {
    // The charger's row is held to the end of the transaction: rotations and logins of one charger take turns.
    let (online, connection, current, mut previous): (bool, Option<Uuid>, Option<Hash>, Vec<Hash>) =
        sqlx::query_as(
            "select online, connection_id, password_hash, previous_password_hashes from charger
              where tenant_id = $1 and id = $2 for no key update",
        )
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(Error::NotFound("charger"))?;
    let send = match keep {
        Keep::WhileOnline | Keep::Nothing { send: true } => online,
        Keep::Connecting => true,
        Keep::Nothing { send: false } => false,
    };
    match (keep, current) {
        (Keep::WhileOnline | Keep::Connecting, Some(current)) if send => {
            // Online with nothing kept, the charger is known to use its current password unless a call sending it
            // is still unconfirmed (just after adoption); else the current one is kept if the charger may have
            // applied it.
            let known = previous.is_empty()
                && keep == Keep::WhileOnline
                && !calls::password_unconfirmed(tx, id, &current).await?;
            if !previous.contains(&current)
                && (known
                    || !calls::maybe_applied(tx, id, std::slice::from_ref(&current))
                        .await?
                        .is_empty())
            {
                previous.push(current);
                if previous.len() > PASSWORDS_KEPT {
                    // The oldest of those it may have applied goes; never the one it is known to use.
                    previous.remove(1);
                }
            }
        }
        (Keep::Connecting, None) => {}
        _ => previous.clear(),
    }
    calls::drop_unsent_passwords(tx, id).await?;
    let password = new_password();
    let hash = crate::auth::token_hash(&password);
    sqlx::query(
        "update charger set password_hash = $3, previous_password_hashes = $4 where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(&hash)
    .bind(&previous)
    .execute(tx.conn())
    .await?;
    if send {
        let charger = get(tx, id).await?;
        calls::send_password(tx, &charger, &password, &hash, by).await?;
    } else if let (Keep::Nothing { send: false }, true, Some(connection)) =
        (keep, online, connection)
    {
        // Its connection opened with a password that no longer holds: it ends (its loop sees it replaced).
        disconnected(tx, id, connection).await?;
        let charger = get(tx, id).await?;
        wake(tx, &charger).await?;
    }
    Ok(password)
}

/// A charger's connection goes live while passwords it may still be using are kept (a new one on its way to it):
/// `presented` (the SHA-256 it logged in with) is one of them, checked with the charger's row held. With the new
/// one, the others stop working. With an older one, the charger has that one: the others stop working but those it
/// may still apply (sent after it, no refusal heard). If the new one's call still waits, it goes out on this
/// connection; if the charger answered it (a refusal, audited as `charging.configuration_refused`), the two stay
/// valid until the charger uses the new one or an operator sets another; otherwise (the call was lost with a
/// connection, timed out or expired) a fresh password is sent in its place, audited as `charger.password_reissued`.
async fn settle_passwords(
    tx: &mut TenantTx,
    id: Uuid,
    presented_is_current: bool,
    presented: &[u8],
    previous: &[Hash],
    call_ttl: std::time::Duration,
) -> Result<()> {
    let kept = if presented_is_current {
        vec![]
    } else {
        // The list is in the order the passwords were sent: the charger may still apply only those sent after the
        // one it presents.
        let after: Vec<Hash> = previous
            .iter()
            .skip_while(|p| p.as_slice() != presented)
            .skip(1)
            .cloned()
            .collect();
        let mut kept = vec![presented.to_vec()];
        kept.extend(calls::maybe_applied(tx, id, &after).await?);
        kept
    };
    sqlx::query(
        "update charger set previous_password_hashes = $3 where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(&kept)
    .execute(tx.conn())
    .await?;
    if kept.is_empty() {
        return Ok(());
    }
    let ttl = chrono::Duration::from_std(call_ttl).unwrap_or(chrono::Duration::minutes(10));
    if !calls::password_undelivered(tx, id, ttl).await? {
        return Ok(());
    }
    give_password(tx, id, None, Keep::Connecting).await?;
    let charger = get(tx, id).await?;
    audit::record_system_in(
        tx,
        charger.venue_id,
        Entry {
            action: "charger.password_reissued",
            object_type: "charger",
            object_id: Some(id),
            detail: serde_json::json!({
                "reason": "the charger came back with its previous password: the new one never reached it",
            }),
        },
    )
    .await?;
    Ok(())
}

/// A password's SHA-256, as stored.
type Hash = Vec<u8>;

/// Which of a charger's stored passwords `presented` is: `Some(true)` the current one, `Some(false)` one it may
/// still be using while the current one is on its way (only while there is a current one), `None` neither.
fn password_matches(
    current: Option<&[u8]>,
    previous: &[Hash],
    presented: Option<&[u8]>,
) -> Option<bool> {
    let (current, presented) = (current?, presented?);
    if constant_time_eq(current, presented) {
        Some(true)
    } else if previous.iter().any(|p| constant_time_eq(p, presented)) {
        Some(false)
    } else {
        None
    }
}

/// What happens to a charger whose identity nobody registered: `refuse` (the default), or `pending` — a charger
/// that presents the tenant's onboarding key as its password is kept as pending for an operator to adopt. Returns
/// a new onboarding key when `new_key` (shown once).
pub async fn set_onboarding(
    tx: &mut TenantTx,
    actor: &Actor,
    accept_pending: bool,
    new_key: bool,
) -> Result<Option<String>> {
    if actor.role != crate::model::Role::Owner {
        return Err(Error::Forbidden(
            "only an owner decides which chargers may join",
        ));
    }
    let key = new_key.then(new_password);
    sqlx::query(
        "update tenant set unknown_chargers = $2,
           charger_onboarding_key_hash = coalesce($3, charger_onboarding_key_hash)
         where id = $1",
    )
    .bind(tx.tenant())
    .bind(if accept_pending { "pending" } else { "refuse" })
    .bind(key.as_deref().map(crate::auth::token_hash))
    .execute(tx.conn())
    .await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "charging.onboarding",
            object_type: "tenant",
            object_id: Some(tx.tenant().0),
            detail: serde_json::json!({ "pending": accept_pending, "new_key": new_key }),
        },
    )
    .await?;
    Ok(key)
}

/// A connecting charger's identity, checked across tenants: the tenant and charger whose identity and password
/// match. An unknown identity presenting a tenant's onboarding key is registered there as pending.
pub async fn login(
    system: &SystemDb,
    db: &crate::Db,
    identity: &str,
    password: Option<&str>,
) -> Result<Option<(TenantId, Uuid)>> {
    // An identity no charger can have is unknown, before it reaches a query.
    let Ok(identity) = check_identity(identity) else {
        return Ok(None);
    };
    let presented = password.map(crate::auth::token_hash);
    if let Some(found) = system.charger_identity(identity).await? {
        let matched = password_matches(
            found.password_hash.as_deref(),
            &found.previous_password_hashes,
            presented.as_deref(),
        );
        // Checked again, and what it means for a new password settled, when the connection goes live
        // ([`connected`]).
        return Ok(matched.map(|_| (found.tenant_id, found.charger_id)));
    }
    let Some(given) = presented else {
        return Ok(None);
    };
    let Some(tenant) = system.tenant_by_onboarding_key(&given).await? else {
        return Ok(None);
    };
    let mut tx = db.begin_tenant(tenant).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "insert into charger (tenant_id, id, charge_point_id, registration, password_hash)
         values ($1, $2, $3, 'pending', $4)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(identity)
    .bind(&given)
    .execute(tx.conn())
    .await?;
    claim(&mut tx, identity, id).await?;
    let joined = get(&mut tx, id).await?;
    announce(&mut tx, "charger.pending", &joined);
    audit::record_as(
        &mut tx,
        None,
        None,
        Entry {
            action: "charger.pending",
            object_type: "charger",
            object_id: Some(id),
            detail: serde_json::json!({ "charge_point_id": identity }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Some((tenant, id)))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Adopts a pending (or refused) charger onto a station (kind `ev_charger`, without a charger): it becomes
/// accepted, gets the station's control and a new password, which it is sent at once when connected (a refused one
/// is not: it is set on the charger by hand); then it is asked to boot again. Returns the password (shown once).
pub async fn adopt(
    tx: &mut TenantTx,
    actor: &Actor,
    id: Uuid,
    station_id: Uuid,
) -> Result<(Charger, String)> {
    actor.require_manager()?;
    // The row is held first: two operators adopting it at once take turns, the second finding it accepted.
    lock(tx, id, RowLock::NoKeyUpdate).await?;
    let charger = get(tx, id).await?;
    if charger.registration == Registration::Accepted {
        return Err(Error::Conflict(
            "this charger is not waiting to be adopted".into(),
        ));
    }
    // The station's row is held too, and read under the lock: an edit, an archiving or another adoption of it waits.
    // So does a session starting on it meanwhile (a start holds the station from its first read): one that began
    // first is found here and the adoption refused; one that begins after goes ahead on the adopted charger.
    tx.lock_row("station", station_id, RowLock::Update).await?;
    let station = crate::stations::get(tx, station_id).await?;
    actor.check_venue(station.venue_id, "station")?;
    if station.kind != StationKind::EvCharger {
        return Err(Error::validation(
            "stationId",
            "a charger goes on an ev_charger station",
        ));
    }
    if station.archived_at.is_some() {
        return Err(Error::Conflict("this station is archived".into()));
    }
    let (taken, running): (bool, bool) = sqlx::query_as(
        "select exists (select 1 from charger where tenant_id = $1 and station_id = $2),
                exists (select 1 from session where tenant_id = $1 and station_id = $2
                          and status in ('active', 'paused'))",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_one(tx.conn())
    .await?;
    if taken {
        return Err(Error::Conflict("this station already has a charger".into()));
    }
    if running {
        return Err(Error::Conflict(
            "this station has a session running (or paused): adopt the charger once it ends".into(),
        ));
    }
    let mut settings = station.control_settings.clone();
    if let Some(map) = settings.as_object_mut() {
        map.insert(
            "charge_point_id".into(),
            charger.charge_point_id.clone().into(),
        );
    }
    sqlx::query(
        "update station set control = 'ocpp', control_settings = $3 where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .bind(&settings)
    .execute(tx.conn())
    .await?;
    if charger.registration == Registration::Rejected {
        // Nothing asked of it while refused goes out now.
        calls::expire_unsent(tx, id, None, "the charger was refused").await?;
    }
    sqlx::query(
        "update charger set station_id = $3, registration = 'accepted' where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(station.id)
    .execute(tx.conn())
    .await?;
    let adopted = get(tx, id).await?;
    // Its station is online while it is connected.
    crate::stations::follow_presence(tx, station.venue_id, Some(station.id)).await?;
    // The onboarding key is the tenant's, not this charger's: it stops opening it at once.
    let password = give_password(
        tx,
        adopted.id,
        Some(actor.user_id),
        Keep::Nothing { send: true },
    )
    .await?;
    if adopted.online {
        calls::enqueue(
            tx,
            &adopted,
            calls::Request::trigger_boot(adopted.protocol()),
            None,
            Some(actor.user_id),
        )
        .await?;
    }
    wake(tx, &adopted).await?;
    announce(tx, "charger.adopted", &adopted);
    record(
        tx,
        actor,
        "charger.adopt",
        &adopted,
        serde_json::json!({ "station_id": station.id }),
    )
    .await?;
    Ok((get(tx, id).await?, password))
}

/// An event about `charger`: heard by the members of its station's venue, or by every member while it has no
/// station (waiting to be adopted, refused, forgotten).
pub(crate) fn event(kind: &'static str, charger: &Charger, data: serde_json::Value) -> NewEvent {
    let event = NewEvent::new(kind, data).subject(charger.id);
    match (charger.venue_id, charger.station_id) {
        (Some(venue), Some(station)) => event.venue(venue).station(station),
        _ => event,
    }
}

/// Tells the owners and managers that a charger joined, was adopted, refused or forgotten (`kind`): every one of
/// them lists the chargers waiting for adoption, so the event names no venue (nor the station it was adopted onto).
fn announce(tx: &mut TenantTx, kind: &'static str, charger: &Charger) {
    let data =
        serde_json::json!({ "chargerId": charger.id, "chargePointId": charger.charge_point_id });
    tx.emit(NewEvent::new(kind, data).subject(charger.id));
}

/// Holds the charger's row to the end of the transaction: its adoption, refusal, forgetting, new passwords and
/// connections going live take turns.
async fn lock(tx: &mut TenantTx, id: Uuid, how: RowLock) -> Result<()> {
    tx.lock_row("charger", id, how).await
}

/// Refuses a pending charger (one that joined with the onboarding key and is not wanted): it is rejected, the
/// onboarding key no longer opens it (it has no password at all), and a connected one is disconnected. Its identity
/// stays taken, so it cannot join again as pending; an operator may still adopt it later, then sets the password on
/// it by hand.
pub async fn reject(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<Charger> {
    actor.require_manager()?;
    // The row is held as a connection going live holds it: one going live after this sees the password gone.
    let (registration, online, connection): (Registration, bool, Option<Uuid>) = sqlx::query_as(
        "select registration, online, connection_id from charger
          where tenant_id = $1 and id = $2 for no key update",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(Error::NotFound("charger"))?;
    if registration != Registration::Pending {
        return Err(Error::Conflict(
            "this charger is not waiting to be adopted".into(),
        ));
    }
    // Nothing waiting for it goes out, should it be adopted later.
    calls::expire_unsent(tx, id, None, "the charger was refused").await?;
    sqlx::query(
        "update charger set registration = 'rejected', password_hash = null, previous_password_hashes = '{}'
          where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .execute(tx.conn())
    .await?;
    if let (true, Some(connection)) = (online, connection) {
        disconnected(tx, id, connection).await?;
    }
    let rejected = get(tx, id).await?;
    wake(tx, &rejected).await?;
    announce(tx, "charger.rejected", &rejected);
    record(
        tx,
        actor,
        "charger.reject",
        &rejected,
        serde_json::json!({}),
    )
    .await?;
    Ok(rejected)
}

/// Forgets a refused charger: its row and the calls made to it go, and its identity is free again (a charger
/// presenting it with the onboarding key joins as pending anew). Only a refused charger is forgotten: refuse a
/// pending one first. Returns its identity.
pub async fn forget(tx: &mut TenantTx, actor: &Actor, id: Uuid) -> Result<String> {
    actor.require_manager()?;
    // Held `for update`: a call being written for it (whose row references the charger's) waits, then fails.
    lock(tx, id, RowLock::Update).await?;
    let charger = get(tx, id).await?;
    if charger.registration != Registration::Rejected {
        return Err(Error::Conflict(
            "only a refused charger is forgotten: refuse it first".into(),
        ));
    }
    sqlx::query("delete from ocpp_call where tenant_id = $1 and charger_id = $2")
        .bind(tx.tenant())
        .bind(id)
        .execute(tx.conn())
        .await?;
    sqlx::query("delete from charger where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(id)
        .execute(tx.conn())
        .await?;
    release(tx, &charger.charge_point_id).await?;
    announce(tx, "charger.forgotten", &charger);
    record(
        tx,
        actor,
        "charger.forget",
        &charger,
        serde_json::json!({ "charge_point_id": charger.charge_point_id }),
    )
    .await?;
    Ok(charger.charge_point_id)
}

/// A connection of the charger opened (directly, or through a bridge) with the password whose SHA-256 is
/// `presented`: it becomes the live one (an older one sees that it was replaced and closes), and the charger is
/// online. `None` when that password no longer lets the charger in (changed or revoked since the login): the
/// connection is refused. With passwords kept while a new one is on its way, what the one presented says is settled
/// here, with the charger's row held (see [`settle_passwords`]).
pub async fn connected(
    tx: &mut TenantTx,
    id: Uuid,
    connection: Uuid,
    protocol: Protocol,
    via_bridge: Option<Uuid>,
    presented: Option<&[u8]>,
    call_ttl: std::time::Duration,
) -> Result<Option<Charger>> {
    let Some((current, previous)): Option<(Option<Hash>, Vec<Hash>)> = sqlx::query_as(
        "select password_hash, previous_password_hashes from charger
          where tenant_id = $1 and id = $2 for no key update",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    else {
        return Ok(None);
    };
    let (Some(is_current), Some(presented)) = (
        password_matches(current.as_deref(), &previous, presented),
        presented,
    ) else {
        return Ok(None);
    };
    sqlx::query(
        "update charger set online = true, connection_id = $3, protocol = $4, via_bridge = $5,
           seen_before_connect_at = last_seen_at, connected_at = now(), last_seen_at = now()
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(connection)
    .bind(protocol.as_str())
    .bind(via_bridge)
    .execute(tx.conn())
    .await?;
    // Calls sent on an older connection and never answered will not be answered now.
    calls::lost(tx, id, Some(connection)).await?;
    if !previous.is_empty() {
        settle_passwords(tx, id, is_current, presented, &previous, call_ttl).await?;
    }
    let charger = get(tx, id).await?;
    station_presence(tx, &charger, true).await?;
    wake(tx, &charger).await?;
    Ok(Some(charger))
}

/// What connections look up when they have nothing in flight, for several of a tenant's chargers in one query: for
/// each (charger, connection) in order, `None` when it is no longer the charger's live connection, else whether a
/// call waits for it.
pub async fn standing(
    tx: &mut TenantTx,
    connections: &[(Uuid, Uuid)],
) -> Result<Vec<Option<bool>>> {
    let mut answers = vec![None; connections.len()];
    if connections.is_empty() {
        return Ok(answers);
    }
    let (chargers, ids): (Vec<Uuid>, Vec<Uuid>) = connections.iter().copied().unzip();
    let rows: Vec<(i64, bool)> = sqlx::query_as(
        "select x.i, exists (select 1 from ocpp_call o where o.tenant_id = c.tenant_id and o.charger_id = c.id
                               and o.status = 'pending')
           from unnest($2::uuid[], $3::uuid[]) with ordinality as x(charger_id, connection_id, i)
           -- lateral: one index lookup per charger, whatever the plan thinks of the array's length
           cross join lateral (
             select c.id, c.tenant_id from charger c
              where c.tenant_id = $1 and c.id = x.charger_id and c.connection_id = x.connection_id
           ) c",
    )
    .bind(tx.tenant())
    .bind(&chargers)
    .bind(&ids)
    .fetch_all(tx.conn())
    .await?;
    for (i, pending) in rows {
        if let Some(answer) = usize::try_from(i - 1).ok().and_then(|i| answers.get_mut(i)) {
            *answer = Some(pending);
        }
    }
    Ok(answers)
}

/// The connection ended: if it was the live one, the charger is offline and calls it left unanswered fail.
pub async fn disconnected(tx: &mut TenantTx, id: Uuid, connection: Uuid) -> Result<()> {
    let was_live: bool = sqlx::query_scalar(
        "update charger set online = false, connection_id = null
         where tenant_id = $1 and id = $2 and connection_id = $3 returning true",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(connection)
    .fetch_optional(tx.conn())
    .await?
    .unwrap_or(false);
    if was_live {
        went_offline(tx, id).await?;
    }
    Ok(())
}

/// The charger has not been heard from for three minutes (by the database's clock) though still marked online: the
/// API process that held its connection stopped without closing it (a live connection keeps its charger's seen mark
/// at most about 105 seconds old, see [`seen`]). It is offline as a closed connection makes it, its last heard
/// time kept. Returns whether it was. A live connection that was merely slow finds itself replaced at its next
/// check and closes; the charger connects again, online.
pub async fn silent(tx: &mut TenantTx, id: Uuid) -> Result<bool> {
    let was_live: bool = sqlx::query_scalar(
        "update charger set online = false, connection_id = null
         where tenant_id = $1 and id = $2 and online and last_seen_at < now() - interval '3 minutes'
         returning true",
    )
    .bind(tx.tenant())
    .bind(id)
    .fetch_optional(tx.conn())
    .await?
    .unwrap_or(false);
    if was_live {
        went_offline(tx, id).await?;
    }
    Ok(was_live)
}

/// Calls left unanswered fail, and the charger's station follows.
async fn went_offline(tx: &mut TenantTx, id: Uuid) -> Result<()> {
    calls::lost(tx, id, None).await?;
    let charger = get(tx, id).await?;
    station_presence(tx, &charger, false).await
}

/// The station of a charger that came online or went offline follows (a station in a session or in maintenance
/// keeps that status), and the change is heard live.
async fn station_presence(tx: &mut TenantTx, charger: &Charger, online: bool) -> Result<()> {
    if let (Some(station), Some(venue)) = (charger.station_id, charger.venue_id) {
        crate::stations::follow_presence(tx, venue, Some(station)).await?;
    }
    let kind = if online {
        "charger.online"
    } else {
        "charger.offline"
    };
    let data =
        serde_json::json!({ "chargerId": charger.id, "chargePointId": charger.charge_point_id });
    tx.emit(event(kind, charger, data));
    Ok(())
}

/// Wakes whichever process holds the charger's connection: the wake-up signal names the charger itself (bridge
/// tunnels listen for their venue's id, so they are not disturbed).
pub(crate) async fn wake(tx: &mut TenantTx, charger: &Charger) -> Result<()> {
    tx.wake_venue(charger.id).await
}

/// These chargers said something, or their live connection is checked: they are alive. Written only when the mark
/// is 30 seconds old or more, to spare writes. A connection asks for it once 1.5 checks have passed since it last
/// asked (checks at most 30 seconds apart), so the next ask comes within 75 seconds, and after each ask the mark is
/// at most 30 seconds old: a live charger's mark is never more than about 105 seconds old, well within the workers'
/// three minutes ([`silent`]).
pub async fn seen(tx: &mut TenantTx, ids: &[Uuid]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update charger set last_seen_at = now()
         where tenant_id = $1 and id = any($2)
           and (last_seen_at is null or last_seen_at < now() - interval '30 seconds')",
    )
    .bind(tx.tenant())
    .bind(ids)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// What a BootNotification says about the charger.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    pub vendor: String,
    pub model: String,
    pub serial_number: Option<String>,
    pub firmware_version: Option<String>,
    /// Sent because the central system asked for it (2.0.1 reason `Triggered`): no reboot.
    pub triggered: bool,
    /// The connection it came on (none when replayed from an edge bridge's journal).
    pub connection: Option<Uuid>,
}

/// A BootNotification: the charger's facts are kept; the answer is its registration. An accepted charger whose
/// local authorization list is behind gets the list. A boot is taken for a reboot, after which changes that waited
/// for one (`RebootRequired`) are in effect, unless a 2.0.1 charger says the central system triggered it or it came
/// on the connection that answered `RebootRequired` (a reboot drops the connection). A 1.6 charger does not say why
/// it booted, so one that sends a boot again after a mere reconnection is taken as rebooted.
pub async fn boot(tx: &mut TenantTx, charger: &Charger, boot: Boot) -> Result<Registration> {
    let cut = |s: &str| s.chars().take(50).collect::<String>();
    sqlx::query(
        "update charger set vendor = $3, model = $4, serial_number = $5, firmware_version = $6, boot_at = now(),
           last_seen_at = now(),
           reboot_required_on = case when $7 or reboot_required_on = $8 then reboot_required_on end
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(charger.id)
    .bind(cut(&boot.vendor))
    .bind(cut(&boot.model))
    .bind(cut(boot.serial_number.as_deref().unwrap_or("")))
    .bind(cut(boot.firmware_version.as_deref().unwrap_or("")))
    .bind(boot.triggered)
    .bind(boot.connection)
    .execute(tx.conn())
    .await?;
    if charger.registration == Registration::Accepted {
        tags::sync_local_list(tx, charger).await?;
        if crate::tenants::charger_meter_setup(tx).await? {
            calls::set_up_meters(tx, charger).await?;
        }
    }
    // A charger waiting to be adopted boots again every minute: only a first boot, or one saying something new, is
    // news to every console.
    let said = [
        cut(&boot.vendor),
        cut(&boot.model),
        cut(boot.serial_number.as_deref().unwrap_or("")),
        cut(boot.firmware_version.as_deref().unwrap_or("")),
    ];
    let known = [
        &charger.vendor,
        &charger.model,
        &charger.serial_number,
        &charger.firmware_version,
    ];
    if charger.station_id.is_some() || charger.boot_at.is_none() || said.iter().ne(known) {
        let data = serde_json::json!({
            "chargerId": charger.id, "vendor": boot.vendor, "model": boot.model,
            "firmwareVersion": boot.firmware_version,
        });
        tx.emit(event("charger.boot", charger, data));
    }
    Ok(charger.registration)
}

/// A StatusNotification: connector `number` (0 is the charger as a whole) reports an OCPP status (`Available`,
/// `Charging`, `Faulted` ...). A connector the station did not list yet is added (up to 64).
pub async fn connector_status(
    tx: &mut TenantTx,
    charger: &Charger,
    number: i32,
    status: &str,
    error_code: Option<&str>,
    at: DateTime<Utc>,
) -> Result<()> {
    let (Some(station), Some(venue)) = (charger.station_id, charger.venue_id) else {
        return Ok(());
    };
    if (1..=64).contains(&number) {
        sqlx::query(
            "insert into connector (tenant_id, id, station_id, number, status, ocpp_status, error_code, status_at)
             values ($1, gen_random_uuid(), $2, $3, 'online', $4, $5, $6)
             on conflict (tenant_id, station_id, number) do update
               set ocpp_status = excluded.ocpp_status, error_code = excluded.error_code,
                   status_at = excluded.status_at,
                   status = case when excluded.ocpp_status in ('Unavailable', 'Faulted') then 'maintenance'
                                 when excluded.ocpp_status in ('Charging', 'SuspendedEV', 'SuspendedEVSE', 'Occupied')
                                   then 'in_session'
                                 else 'online' end::station_status
               where connector.status_at is null or connector.status_at <= excluded.status_at",
        )
        .bind(tx.tenant())
        .bind(station)
        .bind(number)
        .bind(status.chars().take(30).collect::<String>())
        .bind(error_code.map(|e| e.chars().take(50).collect::<String>()))
        .bind(at)
        .execute(tx.conn())
        .await?;
    }
    tx.emit(
        NewEvent::new(
            "station.connector",
            serde_json::json!({
                "chargerId": charger.id, "connector": number, "status": status, "errorCode": error_code,
                "at": at,
            }),
        )
        .venue(venue)
        .station(station),
    );
    Ok(())
}

async fn record(
    tx: &mut TenantTx,
    actor: &Actor,
    action: &'static str,
    charger: &Charger,
    detail: serde_json::Value,
) -> Result<()> {
    audit::record_in(
        tx,
        actor,
        charger.venue_id,
        Entry {
            action,
            object_type: "charger",
            object_id: Some(charger.id),
            detail,
        },
    )
    .await
}

/// A charger that connected to an edge bridge, checked in the bridge's own tenant: the charger under `identity`
/// whose station is at `venue` (the bridge's) and whose password matches. Never the cross-tenant directory — a
/// bridge reaches only its own tenant's chargers at its own venue, and anything else (another tenant's identity,
/// another venue's charger, a pending one, a wrong password) answers `None`, as an unknown identity does.
pub async fn relay_login(
    tx: &mut TenantTx,
    venue: Uuid,
    identity: &str,
    password: Option<&str>,
) -> Result<Option<Uuid>> {
    // An identity no charger can have is unknown, before it reaches a query.
    if check_identity(identity).is_err() {
        return Ok(None);
    }
    let found: Option<(Uuid, Option<Hash>, Vec<Hash>)> = sqlx::query_as(
        "select c.id, c.password_hash, c.previous_password_hashes from charger c
           join station s on s.tenant_id = c.tenant_id and s.id = c.station_id
         where c.tenant_id = $1 and c.charge_point_id = $2 and s.venue_id = $3 and s.control = 'ocpp'
           and s.archived_at is null",
    )
    .bind(tx.tenant())
    .bind(identity)
    .bind(venue)
    .fetch_optional(tx.conn())
    .await?;
    let Some((id, current, previous)) = found else {
        return Ok(None);
    };
    let presented = password.map(crate::auth::token_hash);
    // Checked again, and what it means for a new password settled, when the connection goes live ([`connected`]).
    let matched = password_matches(current.as_deref(), &previous, presented.as_deref());
    Ok(matched.map(|_| id))
}

/// The charger under `identity` at `venue` in this tenant, if any (for messages a bridge journaled for it).
pub async fn at_venue(tx: &mut TenantTx, venue: Uuid, identity: &str) -> Result<Option<Uuid>> {
    if check_identity(identity).is_err() {
        return Ok(None);
    }
    Ok(sqlx::query_scalar(
        "select c.id from charger c
           join station s on s.tenant_id = c.tenant_id and s.id = c.station_id
         where c.tenant_id = $1 and c.charge_point_id = $2 and s.venue_id = $3 and s.control = 'ocpp'
           and s.archived_at is null",
    )
    .bind(tx.tenant())
    .bind(identity)
    .bind(venue)
    .fetch_optional(tx.conn())
    .await?)
}
