//! Powerbank rentals (seed 004): quotes with a TTL, a start that holds the deposit and ejects a powerbank, a stop
//! that docks it at any cabinet of the tenant, and automatic buyout when charges reach the tariff's threshold.
//! A rental is a session with an asset; billing ticks charge it like any other session.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, By, Entry};
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::ledger::{self, Journal, Owner, Purpose};
use crate::model::{Actor, StationControl, StationKind};
use crate::payments::{self, PaymentProvider};
use crate::sessions::{self, NewRow, Session, SessionStatus};
use crate::{patrons, stations, tariffs, validate, venues};

/// A priced offer, valid until `expires_at`.
#[derive(Debug, Clone, Serialize)]
pub struct Quote {
    pub id: Uuid,
    pub patron_id: Uuid,
    pub station_id: Uuid,
    pub currency: String,
    pub price_per_hour: i64,
    pub free_period_min: u32,
    pub deposit: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct QuoteRow {
    patron_id: Uuid,
    station_id: Uuid,
    tariff_id: Uuid,
    tariff_version: i32,
    expires_at: DateTime<Utc>,
    consumed_at: Option<DateTime<Utc>>,
}

/// A powerbank.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Asset {
    pub id: Uuid,
    pub label: String,
    /// `docked`, `rented`, `written_off`.
    pub status: String,
    pub station_id: Option<Uuid>,
    /// The slot number when docked.
    pub slot: Option<i32>,
    pub patron_id: Option<Uuid>,
}

const ASSET_COLUMNS: &str = "a.id, a.label, a.status, a.station_id,
    (select c.number from connector c where c.tenant_id = a.tenant_id and c.id = a.connector_id) as slot, a.patron_id";

/// The cabinet, held from here (an archiving waits for the rental, or the rental sees it archived).
async fn cabinet(tx: &mut TenantTx, id: Uuid) -> Result<stations::Station> {
    let station = stations::get_held(tx, id).await?;
    if station.kind != StationKind::PowerbankCabinet {
        return Err(Error::validation(
            "station_id",
            "this station is not a powerbank cabinet",
        ));
    }
    if station.archived_at.is_some() {
        return Err(Error::Conflict("this station is archived".into()));
    }
    Ok(station)
}

/// Prices a rental at a cabinet for a patron. Refused when the cabinet has no powerbank to give.
pub async fn quote(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    patron_id: Uuid,
    station_id: Uuid,
    ttl_secs: i64,
) -> Result<Quote> {
    let patron = patrons::get(tx, patron_id).await?;
    let station = cabinet(tx, station_id).await?;
    let tariff = tariffs::resolve(tx, &station).await?;
    tariffs::check_currency(&tariff, &venues::get(tx, station.venue_id).await?)?;
    let available: i64 = sqlx::query_scalar(
        "select count(*) from asset a where a.tenant_id = $1 and a.station_id = $2 and a.status = 'docked'
           and not exists (select 1 from connector c where c.tenant_id = a.tenant_id and c.id = a.connector_id
                           and c.fault is not null)",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_one(tx.conn())
    .await?;
    if available == 0 {
        return Err(Error::Conflict(
            "this cabinet has no powerbank to rent right now".into(),
        ));
    }
    let id = Uuid::now_v7();
    let expires_at = Utc::now() + Duration::seconds(ttl_secs);
    sqlx::query(
        "insert into quote (tenant_id, id, patron_id, station_id, tariff_id, tariff_version, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(patron.id)
    .bind(station.id)
    .bind(tariff.id)
    .bind(tariff.version)
    .bind(expires_at)
    .execute(tx.conn())
    .await?;
    let detail = serde_json::json!({ "patron_id": patron.id, "station_id": station.id, "tariff_version": tariff.version });
    audit::record_by(
        tx,
        by.into(),
        Entry {
            action: "rental.quote",
            object_type: "quote",
            object_id: Some(id),
            detail,
        },
    )
    .await?;
    Ok(Quote {
        id,
        patron_id: patron.id,
        station_id: station.id,
        currency: tariff.terms.currency.clone(),
        price_per_hour: tariff.terms.per_minute * 60,
        free_period_min: tariff.terms.free_minutes,
        deposit: tariff.terms.deposit,
        expires_at,
    })
}

/// Starts a rental from a quote: holds the deposit (from the wallet when it covers it, else on the patron's saved
/// card), ejects a powerbank, starts billing. `hold_key`, the caller's idempotency key where the quote is made
/// afresh on each try (the patron app's one-step rental), keys the card hold at the provider, so that a retry after
/// a failure finds the hold the first try placed; without one the quote keys it.
pub async fn start(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    provider: &dyn PaymentProvider,
    quote_id: Uuid,
    tick: Duration,
    hold_key: Option<&str>,
) -> Result<(Session, Asset)> {
    let by: By<'_> = by.into();
    let quote: Option<QuoteRow> = sqlx::query_as(
        "select patron_id, station_id, tariff_id, tariff_version, expires_at, consumed_at from quote
         where tenant_id = $1 and id = $2 for update",
    )
    .bind(tx.tenant())
    .bind(quote_id)
    .fetch_optional(tx.conn())
    .await?;
    let QuoteRow {
        patron_id,
        station_id,
        tariff_id,
        tariff_version: version,
        expires_at,
        consumed_at,
    } = quote.ok_or(Error::NotFound("quote"))?;
    let station = cabinet(tx, station_id).await?;
    // A member confined to other venues than the cabinet's is told the quote does not exist, before anything else
    // is said of it.
    if let By::Member(actor) = &by {
        actor.check_venue(station.venue_id, "quote")?;
    }
    if consumed_at.is_some() {
        return Err(Error::Conflict("this quote was already used".into()));
    }
    let now = Utc::now();
    if expires_at <= now {
        return Err(Error::QuoteExpired);
    }
    // A cabinet the bridge drives ejects only while its venue's bridge is connected: rather than bill a rental whose
    // powerbank would come out whenever the bridge comes back, the start is refused (the quote stays usable).
    if station.control == StationControl::Cabinet
        && !crate::bridges::venue_connected(tx, station.venue_id).await?
    {
        return Err(Error::Conflict(
            "this cabinet is offline (its venue's edge bridge is not connected), so it cannot eject a powerbank now: try again shortly or ask staff".into(),
        ));
    }
    // Nor while the cabinet itself is gone (its status, by the broker's last will): the eject would only time out.
    if station.control == StationControl::Cabinet && stations::unreachable(tx, station.id).await? {
        return Err(Error::Conflict(
            "this cabinet is not answering (switched off or off the network), so it cannot eject a powerbank now: try again shortly or ask staff".into(),
        ));
    }
    let patron = patrons::get(tx, patron_id).await?;
    let venue = venues::get(tx, station.venue_id).await?;
    let tariff = tariffs::version(tx, tariff_id, version).await?;
    tariffs::check_currency(&tariff, &venue)?;
    let deposit = tariff.terms.deposit;
    let currency = venue.currency.as_str();
    let id = Uuid::now_v7();

    let asset: Option<Asset> = sqlx::query_as(&format!(
        "select {ASSET_COLUMNS} from asset a where a.tenant_id = $1 and a.station_id = $2 and a.status = 'docked'
           and not exists (select 1 from connector c where c.tenant_id = a.tenant_id and c.id = a.connector_id
                           and c.fault is not null)
         order by slot, a.id limit 1 for update skip locked"
    ))
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_optional(tx.conn())
    .await?;
    let asset = asset
        .ok_or_else(|| Error::Conflict("this cabinet has no powerbank to rent right now".into()))?;

    // The deposit moves out of the wallet: lock it before reading it, as every debit that checks the balance does.
    let wallet_account =
        ledger::account(tx, Owner::Patron(patron.id), Purpose::Wallet, currency).await?;
    ledger::lock(tx, &[wallet_account]).await?;
    let wallet = ledger::balance(tx, Owner::Patron(patron.id), Purpose::Wallet, currency).await?;
    let card = if wallet < deposit.max(1) {
        let card = payments::cards::get(tx, patron.id, provider.name()).await?;
        if card.is_none() {
            return Err(Error::InsufficientFunds(format!(
                "the wallet holds {} but the deposit is {}; top it up or save a card first",
                crate::money::format(wallet, currency),
                crate::money::format(deposit, currency)
            )));
        }
        card
    } else {
        None
    };
    sqlx::query(
        "update asset set status = 'rented', station_id = null, connector_id = null, patron_id = $3
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(asset.id)
    .bind(patron.id)
    .execute(tx.conn())
    .await?;
    sqlx::query("update quote set consumed_at = now() where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(quote_id)
        .execute(tx.conn())
        .await?;
    let row = NewRow {
        id,
        station: &station,
        venue: &venue,
        patron: &patron,
        started_by: by.user_id(),
        origin: "patron",
        tariff: &tariff,
        started_at: now,
        planned_end_at: None,
        ticks_from: now,
        tick,
        asset_id: Some(asset.id),
        quote_id: Some(quote_id),
        deposit_amount: deposit,
    };
    let session = sessions::insert(tx, row).await?;
    sessions::announce(
        tx,
        &session,
        "session.started",
        serde_json::json!({ "origin": "rental", "assetId": asset.id, "deposit": deposit }),
    );
    // After the session row: the deposit's journal names the session (a foreign key since migration 0019).
    if card.is_none() && deposit > 0 {
        move_deposit(
            tx,
            patron.id,
            currency,
            deposit,
            &format!("rental:{id}:deposit"),
            true,
            id,
        )
        .await?;
    }
    sessions::command(
        tx,
        station.id,
        Some(id),
        "eject",
        serde_json::json!({ "slot": asset.slot, "asset": asset.label }),
    )
    .await?;
    let detail =
        serde_json::json!({ "quote_id": quote_id, "asset_id": asset.id, "deposit": deposit });
    audit::record_by(
        tx,
        by,
        Entry {
            action: "rental.start",
            object_type: "session",
            object_id: Some(id),
            detail,
        },
    )
    .await?;
    // The card last, once everything else of the start is written: the less can fail after the provider placed
    // the hold, the fewer holds a rolled-back start leaves behind.
    if let (Some(card), true) = (&card, deposit > 0) {
        payments::collect::hold_deposit(tx, provider, card, &session, hold_key).await?;
    }
    Ok((session, asset))
}

/// How long an eject may wait for its venue's bridge to take it (seconds). A patron waits at the cabinet for a
/// minute or two; an eject delivered later would hand a powerbank to nobody. A bridge-driven cabinet's eject gets
/// its deadline when it is written (`device_command.deadline_at`); one no tunnel took by then is never taken
/// ([`crate::bridges::take_commands`]): the workers find it ([`crate::db::SystemDb::overdue_ejects`]) and close it
/// with [`expire_eject`].
pub const EJECT_DEADLINE_SECS: i64 = 120;

/// A rental's eject command: (the rental, the cabinet, the slot asked for); none for an unknown command or one that is
/// not a rental's eject.
async fn rental_eject(
    tx: &mut TenantTx,
    command: Uuid,
) -> Result<Option<(Uuid, Uuid, Option<i32>)>> {
    let found: Option<(Option<Uuid>, Uuid, Option<i32>)> = sqlx::query_as(
        "select session_id, station_id, (payload->>'slot')::int from device_command
         where tenant_id = $1 and id = $2 and command = 'eject'",
    )
    .bind(tx.tenant())
    .bind(command)
    .fetch_optional(tx.conn())
    .await?;
    Ok(found.and_then(|(rental, station, slot)| Some((rental?, station, slot))))
}

/// Records an eject's answer (`device_command.answered_at`, `outcome`), replacing any before it. An eject that was
/// announced as waiting for staff ([`alert_unanswered`]) announces its answer too (`rental.eject_answered`), so that
/// the alerts of it go.
pub(crate) async fn answer_eject(tx: &mut TenantTx, command: Uuid, outcome: &str) -> Result<()> {
    let alerted: Option<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "update device_command c set answered_at = now(), outcome = $3
           from session s
          where c.tenant_id = $1 and c.id = $2 and s.tenant_id = c.tenant_id and s.id = c.session_id
         returning s.venue_id, c.station_id, s.id, c.alerted_at is not null",
    )
    .bind(tx.tenant())
    .bind(command)
    .bind(outcome)
    .fetch_optional(tx.conn())
    .await?
    .and_then(
        |(venue, station, rental, alerted): (Uuid, Uuid, Uuid, bool)| {
            alerted.then_some((venue, station, rental))
        },
    );
    if let Some((venue, station, rental)) = alerted {
        tx.emit(
            crate::events::NewEvent::new(
                "rental.eject_answered",
                serde_json::json!({ "command_id": command, "rental_id": rental, "outcome": outcome }),
            )
            .venue(venue)
            .station(station)
            .subject(rental),
        );
    }
    Ok(())
}

/// Closes an overdue eject unsent (`result` `expired`) and voids its rental as for an eject the cabinet refused:
/// the deposit released, whatever was billed given back, the powerbank left docked. The rental is locked first, as a
/// billing tick or a stop locks it. The rental voided, or none when the eject was taken or closed meanwhile, is not
/// past its deadline, or its rental had already ended (the eject is closed then all the same).
pub async fn expire_eject(tx: &mut TenantTx, command: Uuid) -> Result<Option<Uuid>> {
    let Some((rental, station, slot)) = rental_eject(tx, command).await? else {
        return Ok(None);
    };
    let session = sessions::lock(tx, rental).await?;
    let closed = sqlx::query(
        "update device_command set delivered_at = now(), acked_at = now(), result = 'expired',
                answered_at = now(), outcome = 'expired'
         where tenant_id = $1 and id = $2 and delivered_at is null and deadline_at <= now()",
    )
    .bind(tx.tenant())
    .bind(command)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if closed == 0 || !session.is_running() {
        return Ok(None);
    }
    eject_failed(tx, rental, station, slot, "cabinet_unreachable").await?;
    Ok(Some(rental))
}

/// An eject a tunnel took that nothing has answered (no report of its cabinet, nor of the bridge on its behalf),
/// now past its deadline, while its rental still runs. The API process that took it may have died before the frame
/// left it (the bridge never had it), or the bridge may have published it and gone down before the cabinet's answer
/// (the powerbank may be out). A report that comes later still settles it; until then staff look at the cabinet and
/// settle it (`settleEject`, `settle_eject` here).
#[derive(Debug, Clone, sqlx::FromRow, async_graphql::SimpleObject)]
pub struct UnansweredEject {
    /// The eject command (`settleEject`'s `commandId`).
    pub command_id: Uuid,
    pub rental_id: Uuid,
    pub station_id: Uuid,
    pub venue_id: Uuid,
    pub patron_id: Uuid,
    pub slot: Option<i32>,
    /// The powerbank the rental was for.
    pub asset_label: Option<String>,
    /// When the rental asked for the eject.
    pub created_at: DateTime<Utc>,
    /// When a tunnel took it to send it to the bridge.
    pub taken_at: DateTime<Utc>,
    /// When the cabinet's answer was due.
    pub deadline_at: DateTime<Utc>,
}

/// The tenant's unanswered ejects ([`UnansweredEject`]), oldest first, in `venues` (`None`: every venue) and in
/// `venue` if given; at most `limit` (1–500).
pub async fn unanswered_ejects(
    tx: &mut TenantTx,
    venues: Option<&[Uuid]>,
    venue: Option<Uuid>,
    limit: i64,
) -> Result<Vec<UnansweredEject>> {
    Ok(sqlx::query_as(
        "select c.id as command_id, s.id as rental_id, c.station_id, s.venue_id, s.patron_id,
                (c.payload->>'slot')::int as slot, c.payload->>'asset' as asset_label, c.created_at,
                c.delivered_at as taken_at, c.deadline_at
           from device_command c
           join session s on s.tenant_id = c.tenant_id and s.id = c.session_id
          where c.tenant_id = $1 and c.command = 'eject' and c.answered_at is null and c.deadline_at <= now()
            and c.delivered_at is not null and s.status in ('active', 'paused')
            and ($2::uuid[] is null or s.venue_id = any($2)) and ($3::uuid is null or s.venue_id = $3)
          order by c.created_at, c.id limit $4",
    )
    .bind(tx.tenant())
    .bind(venues)
    .bind(venue)
    .bind(limit.clamp(1, 500))
    .fetch_all(tx.conn())
    .await?)
}

/// Announces an eject that has come to wait for staff ([`UnansweredEject`]), once: `alerted_at` is set, the live
/// event `rental.eject_unanswered` goes to the venue's members, and the venue's owners and managers get a message
/// (topic `equipment`). The eject, or none when it was announced already, was answered meanwhile, is not past its
/// deadline, was never taken, or its rental has ended. The rental is locked first, as a stop, a return or a settle
/// locks it, so that one ending it meanwhile is seen; two workers announcing the same eject at once announce it once.
pub async fn alert_unanswered(tx: &mut TenantTx, command: Uuid) -> Result<Option<UnansweredEject>> {
    let Some((rental, _, _)) = rental_eject(tx, command).await? else {
        return Ok(None);
    };
    sessions::lock(tx, rental).await?;
    let eject: Option<UnansweredEject> = sqlx::query_as(
        "update device_command c set alerted_at = now()
           from session s
          where c.tenant_id = $1 and c.id = $2 and c.command = 'eject' and c.answered_at is null
            and c.alerted_at is null and c.delivered_at is not null and c.deadline_at <= now()
            and s.tenant_id = c.tenant_id and s.id = c.session_id and s.status in ('active', 'paused')
         returning c.id as command_id, s.id as rental_id, c.station_id, s.venue_id, s.patron_id,
                   (c.payload->>'slot')::int as slot, c.payload->>'asset' as asset_label, c.created_at,
                   c.delivered_at as taken_at, c.deadline_at",
    )
    .bind(tx.tenant())
    .bind(command)
    .fetch_optional(tx.conn())
    .await?;
    let Some(eject) = eject else {
        return Ok(None);
    };
    let cabinet = stations::get(tx, eject.station_id).await?.name;
    tx.emit(
        crate::events::NewEvent::new(
            "rental.eject_unanswered",
            serde_json::json!({
                "command_id": eject.command_id, "rental_id": eject.rental_id, "cabinet": cabinet,
                "slot": eject.slot, "asset": eject.asset_label, "taken_at": eject.taken_at,
                "deadline_at": eject.deadline_at,
            }),
        )
        .venue(eject.venue_id)
        .station(eject.station_id)
        .subject(eject.rental_id),
    );
    crate::notify::flows::eject_unanswered(tx, &eject, &cabinet).await?;
    Ok(Some(eject))
}

/// What staff found at the cabinet for an unanswered eject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectFinding {
    /// The powerbank is gone from its slot: the patron has it, the rental goes on.
    Ejected,
    /// The powerbank is still in its slot: the rental is voided as for a failed eject (nothing charged, the
    /// deposit released, the powerbank docked).
    NotEjected,
}

impl EjectFinding {
    fn outcome(self) -> &'static str {
        match self {
            Self::Ejected => "staff_ejected",
            Self::NotEjected => "staff_not_ejected",
        }
    }
}

/// An eject's answer (`device_command.outcome`) in words, for a person.
fn outcome_in_words(outcome: &str) -> &'static str {
    match outcome {
        "ejected" => "the cabinet reported the powerbank ejected",
        "not_ejected" => {
            "the cabinet (or its bridge) reported the eject failed, and the rental was voided"
        }
        "expired" => "no bridge took it in time, and the rental was voided",
        "staff_ejected" => "staff found the powerbank gone",
        "staff_not_ejected" => {
            "staff found the powerbank still in its slot, and the rental was voided"
        }
        _ => "it was answered",
    }
}

/// Settles an unanswered eject ([`UnansweredEject`]) by what staff found at the cabinet: the eject's answer is
/// recorded (`outcome` `staff_ejected` or `staff_not_ejected`, audit `rental.eject_settled`) and, for the latter, the
/// rental voided. The same finding again (a retry, a second member at the same time: the rental is locked first, as
/// a cabinet's report locks it) returns the rental as it is. A conflict, saying why, for an eject answered otherwise,
/// still within its deadline, never taken by a bridge (the workers void those), of a manual cabinet, or whose rental
/// has ended; not found for an unknown command, one that is not a rental's eject, or one of a venue the member does
/// not see. A cabinet's report that comes later still counts ([`crate::cabinets`]).
pub async fn settle_eject(
    tx: &mut TenantTx,
    actor: &Actor,
    command: Uuid,
    finding: EjectFinding,
) -> Result<Session> {
    let Some((rental, station, slot)) = rental_eject(tx, command).await? else {
        return Err(Error::NotFound("eject"));
    };
    let session = sessions::lock(tx, rental).await?;
    actor.check_venue(session.venue_id, "eject")?;
    // Under the rental's lock: whoever answers it first decides, the other sees the answer.
    let (taken, outcome, deadline): (bool, Option<String>, Option<DateTime<Utc>>) = sqlx::query_as(
        "select delivered_at is not null, outcome, deadline_at from device_command
         where tenant_id = $1 and id = $2 for update",
    )
    .bind(tx.tenant())
    .bind(command)
    .fetch_one(tx.conn())
    .await?;
    if let Some(outcome) = outcome {
        return if outcome == finding.outcome() {
            Ok(session)
        } else {
            Err(Error::Conflict(format!(
                "this eject is already settled: {}",
                outcome_in_words(&outcome)
            )))
        };
    }
    let Some(deadline) = deadline else {
        return Err(Error::Conflict(
            "this eject was made at a cabinet run by hand, where it is only a record: there is nothing to settle"
                .into(),
        ));
    };
    if deadline > Utc::now() {
        return Err(Error::Conflict(format!(
            "the cabinet may still answer this eject: it can be settled by hand once its deadline ({}) has passed",
            deadline.format("%H:%M:%S UTC")
        )));
    }
    if !taken {
        return Err(Error::Conflict(
            "no bridge ever took this eject, so the powerbank is still in its slot: the workers void the rental by \
             themselves"
                .into(),
        ));
    }
    if !session.is_running() {
        return Err(Error::Conflict(
            "this rental has already ended; there is nothing to settle".into(),
        ));
    }
    answer_eject(tx, command, finding.outcome()).await?;
    audit::record(
        tx,
        actor,
        Entry {
            action: "rental.eject_settled",
            object_type: "session",
            object_id: Some(rental),
            detail: serde_json::json!({ "command_id": command, "finding": finding.outcome() }),
        },
    )
    .await?;
    match finding {
        EjectFinding::Ejected => Ok(session),
        EjectFinding::NotEjected => {
            eject_failed(tx, rental, station, slot, "eject_unanswered").await
        }
    }
}

/// Ends a rental by docking its powerbank in a free slot of `station_id` (any cabinet of the tenant), releasing
/// the deposit and settling the charge. Stopping an ended rental returns it unchanged.
pub async fn stop(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    rental_id: Uuid,
    station_id: Uuid,
) -> Result<Session> {
    // Locked first: a concurrent stop waits here and then finds the rental ended.
    let session = sessions::lock(tx, rental_id).await?;
    let Some(asset_id) = session.asset_id else {
        return Err(Error::NotFound("rental"));
    };
    if !session.is_running() {
        return Ok(session);
    }
    let station = cabinet(tx, station_id).await?;
    let slot: Option<(Uuid, i32)> = sqlx::query_as(
        "select c.id, c.number from connector c
         where c.tenant_id = $1 and c.station_id = $2
           and not exists (select 1 from asset a where a.tenant_id = c.tenant_id and a.connector_id = c.id)
         order by c.number limit 1 for update skip locked",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_optional(tx.conn())
    .await?;
    let (slot_id, slot) = slot.ok_or_else(|| {
        Error::Conflict("this cabinet has no free slot; return it to another".into())
    })?;
    let ended = end_in_slot(tx, by.into(), &session, asset_id, station.id, slot_id, None).await?;
    sessions::command(
        tx,
        station.id,
        Some(rental_id),
        "accept_return",
        serde_json::json!({ "slot": slot }),
    )
    .await?;
    Ok(ended)
}

/// Docks the rental's powerbank in the slot `slot_id` of cabinet `station`, releases the deposit and settles: now,
/// or at `returned_at` as the cabinet reported it (see [`sessions::end_reported`]).
async fn end_in_slot(
    tx: &mut TenantTx,
    by: By<'_>,
    session: &Session,
    asset_id: Uuid,
    station: Uuid,
    slot_id: Uuid,
    returned_at: Option<DateTime<Utc>>,
) -> Result<Session> {
    dock_asset(tx, asset_id, station, slot_id).await?;
    sqlx::query("update session set return_station_id = $3 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(session.id)
        .bind(station)
        .execute(tx.conn())
        .await?;
    release_deposit(tx, session).await?;
    match returned_at {
        None => sessions::stop_by(tx, by, session.id, Utc::now()).await,
        Some(at) => sessions::end_reported(tx, session.id, at, None).await,
    }
}

async fn dock_asset(tx: &mut TenantTx, asset_id: Uuid, station: Uuid, slot_id: Uuid) -> Result<()> {
    sqlx::query(
        "update asset set status = 'docked', station_id = $3, connector_id = $4, patron_id = null
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(asset_id)
    .bind(station)
    .bind(slot_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A cabinet reports the rental's powerbank put into its slot `slot_id` (any cabinet of the tenant): the rental
/// ends there, as a stop would end it (no `accept_return` command: the powerbank is in already). A rental that is
/// no longer running is returned unchanged.
pub(crate) async fn returned_in_slot(
    tx: &mut TenantTx,
    rental_id: Uuid,
    station: Uuid,
    slot_id: Uuid,
    returned_at: DateTime<Utc>,
) -> Result<Session> {
    let session = sessions::lock(tx, rental_id).await?;
    let Some(asset_id) = session.asset_id.filter(|_| session.is_running()) else {
        return Ok(session);
    };
    // The rental ends when the powerbank went in, as the cabinet reported it (a report held up while the bridge's
    // tunnel was down comes late): not billed for the outage.
    let at = returned_at.min(Utc::now()).max(session.started_at);
    let ended = end_in_slot(
        tx,
        By::System,
        &session,
        asset_id,
        station,
        slot_id,
        Some(at),
    )
    .await?;
    let detail =
        serde_json::json!({ "asset_id": asset_id, "station_id": station, "by": "cabinet" });
    audit::record_as(
        tx,
        None,
        None,
        Entry {
            action: "rental.returned",
            object_type: "session",
            object_id: Some(rental_id),
            detail,
        },
    )
    .await?;
    Ok(ended)
}

/// A cabinet reports a bought-out rental's powerbank put into its slot `slot_id` at `returned_at`, before the buyout
/// (the report came late: the bridge's tunnel was down while the billing ticks ran on to the threshold). The patron
/// gave the powerbank back, so there was no purchase: the rental ends when it went in, as `ended`, what the ticks
/// charged past that goes back under `session:<id>:returned_before_buyout` (to the patron's debt first, then the
/// wallet; money a card paid towards the buyout comes back as wallet credit, not to the card), the powerbank is
/// docked and the receipt queued. The time is the bridge's word, so it is taken only for a report an outage held
/// up: the last time a bridge of the return cabinet's venue lost its tunnel is before the reported return (give or take
/// the clock tolerance), so the bridge could not have reported it until now. Otherwise (a return at or after the
/// buyout, one stamped before the bridge's last outage, a rental not bought out) the buyout stands (false).
pub(crate) async fn returned_before_buyout(
    tx: &mut TenantTx,
    rental_id: Uuid,
    station: Uuid,
    slot_id: Uuid,
    returned_at: DateTime<Utc>,
) -> Result<bool> {
    let session = sessions::lock(tx, rental_id).await?;
    let at = returned_at.max(session.started_at);
    let (Some(asset_id), Some(bought_at)) = (
        session.asset_id,
        session
            .ended_at
            .filter(|_| session.status == SessionStatus::BoughtOut),
    ) else {
        return Ok(false);
    };
    if at >= bought_at {
        return Ok(false);
    }
    // The latest outage of one of the bridges of the cabinet it went into (any venue of the tenant's) began before
    // the return: the report was held up by it.
    let held_up: bool = sqlx::query_scalar(
        "select exists (select 1 from bridge b join station s on s.tenant_id = b.tenant_id and s.venue_id = b.venue_id
                        where b.tenant_id = $1 and s.id = $2
                          and b.tunnel_down_at is not null and b.tunnel_down_at <= $3)",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(at + crate::bridges::CLOCK_TOLERANCE)
    .fetch_one(tx.conn())
    .await?;
    if !held_up {
        return Ok(false);
    }
    dock_asset(tx, asset_id, station, slot_id).await?;
    sqlx::query(
        "update session set status = 'ended', ended_at = $3, return_station_id = $4
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(rental_id)
    .bind(at)
    .bind(station)
    .execute(tx.conn())
    .await?;
    let ended = sessions::get(tx, rental_id).await?;
    let over = ended.charged_amount - ended.chargeable_at(at);
    if over > 0 {
        sessions::give_back(
            tx,
            &ended,
            over,
            "returned_before_buyout",
            "charged past the powerbank's return, reported after its buyout; given back",
        )
        .await?;
    }
    let ended = sessions::get(tx, rental_id).await?;
    sessions::announce(tx, &ended, "session.buyout_undone", serde_json::json!({}));
    let detail = serde_json::json!({
        "asset_id": asset_id, "station_id": station, "returned_at": at, "bought_out_at": bought_at,
        "given_back": over.max(0), "charged_amount": ended.charged_amount,
    });
    audit::record_as(
        tx,
        None,
        None,
        Entry {
            action: "rental.buyout_reversed",
            object_type: "session",
            object_id: Some(rental_id),
            detail,
        },
    )
    .await?;
    crate::notify::flows::receipt(tx, &ended).await?;
    Ok(true)
}

/// The cabinet could not eject the rental's powerbank: the rental is voided (`failed`, nothing charged, the deposit
/// released) and the powerbank stays docked in slot `slot` of `station` (or the first free slot, should another
/// powerbank have been docked there meanwhile). Idempotent: a rental that is no longer running is returned unchanged.
pub(crate) async fn eject_failed(
    tx: &mut TenantTx,
    rental_id: Uuid,
    station: Uuid,
    slot: Option<i32>,
    reason: &str,
) -> Result<Session> {
    let session = sessions::lock(tx, rental_id).await?;
    let Some(asset_id) = session.asset_id.filter(|_| session.is_running()) else {
        return Ok(session);
    };
    let slot_id: Option<Uuid> = sqlx::query_scalar(
        "select c.id from connector c
         where c.tenant_id = $1 and c.station_id = $2
           and not exists (select 1 from asset a where a.tenant_id = c.tenant_id and a.connector_id = c.id)
         order by c.number = $3 desc nulls last, c.number limit 1 for update",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(slot)
    .fetch_optional(tx.conn())
    .await?;
    let still_out: bool =
        sqlx::query_scalar("select status = 'rented' from asset where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(asset_id)
            .fetch_one(tx.conn())
            .await?;
    if let (Some(slot_id), true) = (slot_id, still_out) {
        dock_asset(tx, asset_id, station, slot_id).await?;
    }
    release_deposit(tx, &session).await?;
    let voided = sessions::void(tx, rental_id, reason).await?;
    let detail = serde_json::json!({ "asset_id": asset_id, "station_id": station, "slot": slot, "reason": reason });
    audit::record_as(
        tx,
        None,
        None,
        Entry {
            action: "rental.eject_failed",
            object_type: "session",
            object_id: Some(rental_id),
            detail,
        },
    )
    .await?;
    Ok(voided)
}

/// Ends a running rental whose powerbank will not come back (lost, or kept by the patron where the tariff has no
/// buyout price): staff stop it. It is charged to `now`, the powerbank is written off, and the deposit is released
/// as a stop releases it (the patron's debt first). A tariff whose buyout threshold should be the price of a lost
/// powerbank charges it through the billing ticks instead. Writing a powerbank off is an owner's or manager's call.
pub(crate) async fn end_as_lost(
    tx: &mut TenantTx,
    actor: &crate::model::Actor,
    session: &Session,
    now: DateTime<Utc>,
) -> Result<Session> {
    actor.require_manager().map_err(|_| {
        Error::Forbidden(
            "ending a running rental writes its powerbank off, which needs the owner or manager role; a powerbank that came back is returned with stopRental",
        )
    })?;
    if let Some(asset) = session.asset_id {
        write_off(tx, asset).await?;
    }
    release_deposit(tx, session).await?;
    let ended = sessions::stop_by(tx, By::Member(actor), session.id, now).await?;
    let detail =
        serde_json::json!({ "charged_amount": ended.charged_amount, "asset_id": session.asset_id });
    audit::record(
        tx,
        actor,
        Entry {
            action: "rental.ended_as_lost",
            object_type: "session",
            object_id: Some(session.id),
            detail,
        },
    )
    .await?;
    Ok(ended)
}

/// A powerbank that will not come back to a cabinet (bought out, or lost).
async fn write_off(tx: &mut TenantTx, asset: Uuid) -> Result<()> {
    sqlx::query("update asset set status = 'written_off' where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(asset)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Charges reached the buyout threshold: the patron keeps the powerbank, the rental ends as `bought_out`, and the
/// deposit goes back to the wallet (the threshold was the price).
pub async fn buy_out(tx: &mut TenantTx, id: Uuid, now: DateTime<Utc>) -> Result<Session> {
    let session = sessions::get(tx, id).await?;
    sqlx::query(
        "update session set status = $3, ended_at = $4, next_tick_at = null where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(SessionStatus::BoughtOut)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if let Some(asset) = session.asset_id {
        write_off(tx, asset).await?;
    }
    release_deposit(tx, &session).await?;
    let bought = sessions::get(tx, id).await?;
    sessions::announce(tx, &bought, "session.bought_out", serde_json::json!({}));
    let detail = serde_json::json!({ "charged_amount": session.charged_amount, "asset_id": session.asset_id });
    audit::record_as(
        tx,
        None,
        None,
        Entry {
            action: "rental.buy_out",
            object_type: "session",
            object_id: Some(id),
            detail,
        },
    )
    .await?;
    sessions::get(tx, id).await
}

/// Returns the deposit to the wallet; if the patron owes money, the released deposit pays that debt first. A
/// deposit held on a card is settled by the collector (capture what is owed, release the rest).
async fn release_deposit(tx: &mut TenantTx, session: &Session) -> Result<()> {
    if session.deposit_amount == 0 {
        return Ok(());
    }
    if payments::collect::deposit_hold(tx, session.id)
        .await?
        .is_some()
    {
        return payments::collect::arm_settlement(
            tx,
            session.patron_id,
            session.venue_id,
            &session.currency,
        )
        .await;
    }
    // The patron's wallet and debt locks first, as every movement of the wallet takes them before it writes.
    let (pay, debt, wallet) = ledger::debt_share(
        tx,
        session.patron_id,
        &session.currency,
        session.deposit_amount,
    )
    .await?;
    let key = format!("rental:{}:deposit_release", session.id);
    move_deposit(
        tx,
        session.patron_id,
        &session.currency,
        session.deposit_amount,
        &key,
        false,
        session.id,
    )
    .await?;
    if pay > 0 {
        ledger::post(
            tx,
            Journal {
                key: format!("rental:{}:debt_from_deposit", session.id),
                kind: "debt_payment",
                memo: "debt paid from the released deposit".into(),
                session_id: Some(session.id),
                currency: &session.currency,
                entries: vec![(wallet, -pay), (debt, pay)],
            },
        )
        .await?;
    }
    Ok(())
}

/// Wallet → deposit hold (`hold`), or back.
async fn move_deposit(
    tx: &mut TenantTx,
    patron: Uuid,
    currency: &str,
    amount: i64,
    key: &str,
    hold: bool,
    session: Uuid,
) -> Result<()> {
    let wallet = ledger::account(tx, Owner::Patron(patron), Purpose::Wallet, currency).await?;
    let held = ledger::account(tx, Owner::Patron(patron), Purpose::DepositHold, currency).await?;
    let sign = if hold { 1 } else { -1 };
    ledger::post(
        tx,
        Journal {
            key: key.to_owned(),
            kind: if hold {
                "deposit_hold"
            } else {
                "deposit_release"
            },
            memo: if hold {
                "deposit held".into()
            } else {
                "deposit released".into()
            },
            session_id: Some(session),
            currency,
            entries: vec![(wallet, -sign * amount), (held, sign * amount)],
        },
    )
    .await?;
    Ok(())
}

/// Docks a new powerbank in a slot of a cabinet.
pub async fn dock(
    tx: &mut TenantTx,
    actor: &Actor,
    station_id: Uuid,
    slot: i32,
    label: &str,
) -> Result<Asset> {
    actor.require_manager()?;
    let station = cabinet(tx, station_id).await?;
    let label = validate::text("label", label, 1, 64)?;
    let connector: Option<Uuid> = sqlx::query_scalar(
        "select id from connector where tenant_id = $1 and station_id = $2 and number = $3",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .bind(slot)
    .fetch_optional(tx.conn())
    .await?;
    let connector =
        connector.ok_or_else(|| Error::validation("slot", "this cabinet has no such slot"))?;
    let id = Uuid::now_v7();
    sqlx::query("insert into asset (tenant_id, id, label, station_id, connector_id) values ($1, $2, $3, $4, $5)")
        .bind(tx.tenant())
        .bind(id)
        .bind(label)
        .bind(station.id)
        .bind(connector)
        .execute(tx.conn())
        .await?;
    let detail = serde_json::json!({ "station_id": station.id, "slot": slot, "label": label });
    audit::record(
        tx,
        actor,
        Entry {
            action: "asset.dock",
            object_type: "asset",
            object_id: Some(id),
            detail,
        },
    )
    .await?;
    asset(tx, id).await
}

pub async fn asset(tx: &mut TenantTx, id: Uuid) -> Result<Asset> {
    let sql = format!("select {ASSET_COLUMNS} from asset a where a.tenant_id = $1 and a.id = $2");
    let asset: Option<Asset> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    asset.ok_or(Error::NotFound("asset"))
}

/// The powerbanks docked at a cabinet, by slot.
pub async fn docked(tx: &mut TenantTx, station_id: Uuid) -> Result<Vec<Asset>> {
    let sql = format!(
        "select {ASSET_COLUMNS} from asset a where a.tenant_id = $1 and a.station_id = $2 and a.status = 'docked'
         order by slot"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(station_id)
        .fetch_all(tx.conn())
        .await?)
}

/// A powerbank's label.
pub async fn asset_label(tx: &mut TenantTx, asset: Uuid) -> Result<String> {
    let label: Option<String> =
        sqlx::query_scalar("select label from asset where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(asset)
            .fetch_optional(tx.conn())
            .await?;
    label.ok_or(Error::NotFound("asset"))
}
