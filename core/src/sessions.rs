//! Metered sessions: start (walk-in cash or a patron's wallet), extend, stop, and the settlement that billing ticks
//! and stops share. Every charge is `price(start..until) - already charged`, posted once under a per-session key.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::audit::{self, By, Entry};
use crate::db::{self, TenantTx};
use crate::error::{Error, Result};
use crate::ledger::{self, Journal, Owner, Posted, Purpose};
use crate::model::{Actor, StationControl, StationStatus};
use crate::pricing::{self, Price, Terms, Usage};
use crate::{patrons, stations, tariffs, venues};

/// A session's state. `active` → `ended` | `expired` | `bought_out` | `failed`; `bought_out` → `ended` when a
/// return made before the buyout is reported after it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    sqlx::Type,
    async_graphql::Enum,
    utoipa::ToSchema,
)]
#[sqlx(type_name = "session_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Paused,
    Ended,
    Expired,
    BoughtOut,
    Failed,
}

impl SessionStatus {
    /// Its name in Postgres (`session_status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Ended => "ended",
            Self::Expired => "expired",
            Self::BoughtOut => "bought_out",
            Self::Failed => "failed",
        }
    }
}

/// How a session is paid.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Payment {
    /// From the patron's wallet.
    Wallet,
    /// Cash taken by staff for the whole planned time, credited to the (walk-in) patron's wallet first.
    Cash,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Session {
    pub id: Uuid,
    pub station_id: Uuid,
    pub venue_id: Uuid,
    pub patron_id: Uuid,
    pub origin: String,
    pub status: SessionStatus,
    pub tariff_id: Uuid,
    pub tariff_version: i32,
    #[sqlx(json)]
    pub terms: Terms,
    pub timezone: String,
    pub tier: String,
    pub currency: String,
    pub started_at: DateTime<Utc>,
    pub planned_end_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub energy_wh: i64,
    pub charged_amount: i64,
    pub ticks: i32,
    /// Rentals: the powerbank, the quote it started from, where it came back, the deposit held.
    pub asset_id: Option<Uuid>,
    pub quote_id: Option<Uuid>,
    pub return_station_id: Option<Uuid>,
    pub deposit_amount: i64,
    pub warnings_sent: i16,
    /// The open pause, while paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Closed pauses, oldest first: not billed.
    #[sqlx(json)]
    pub pauses: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// When the station was actually switched off at the end, as its edge bridge reported it.
    pub switched_off_at: Option<DateTime<Utc>>,
    /// A charger's connector the session runs on.
    pub connector: Option<i32>,
    /// The power last read (W), where a meter reports it.
    pub power_w: Option<i32>,
}

impl Session {
    fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(Tz::UTC)
    }

    /// Where the usage ends when looked at `now`: the actual end once ended (whatever `now` is), else `now`,
    /// never past the planned end.
    pub fn usage_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let until = self.ended_at.unwrap_or(now);
        self.planned_end_at
            .map_or(until, |planned| until.min(planned))
    }

    /// The pauses up to `now`, the open one included.
    pub fn pauses_at(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut pauses = self.pauses.clone();
        if let Some(from) = self.paused_at {
            pauses.push((from, now.max(from)));
        }
        pauses
    }

    /// Seconds left of a timed session at `now` (frozen while paused).
    pub fn remaining_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        let at = self.paused_at.unwrap_or(now);
        self.planned_end_at
            .map(|end| (end - at).num_seconds().max(0))
    }

    /// The cumulative price of the usage up to `now`, with its explanation.
    pub fn price_at(&self, now: DateTime<Utc>) -> Price {
        let pauses = self.pauses_at(now);
        let usage = Usage {
            started_at: self.started_at,
            until: self.usage_until(now),
            pauses: &pauses,
            energy_wh: self.energy_wh,
            tier: Some(self.tier.as_str()),
        };
        pricing::price(&self.terms, self.tz(), usage)
    }

    /// What the usage up to `now` costs the patron, explained: the price, except that a rental never costs more
    /// than its buyout threshold (reaching it turns the rental into a purchase).
    pub fn cost_at(&self, now: DateTime<Utc>) -> Price {
        let mut price = self.price_at(now);
        if let (Some(_), Some(threshold)) = (self.asset_id, self.terms.buyout_threshold) {
            if price.amount > threshold {
                price.lines.push(pricing::Line {
                    kind: "buyout_cap".into(),
                    description: format!(
                        "a rental costs at most its buyout price, {}",
                        crate::money::format(threshold, &self.currency)
                    ),
                    amount: threshold - price.amount,
                });
                price.amount = threshold;
            }
        }
        price
    }

    /// The amount of [`Session::cost_at`].
    pub fn chargeable_at(&self, now: DateTime<Utc>) -> i64 {
        self.cost_at(now).amount
    }

    pub fn is_running(&self) -> bool {
        matches!(self.status, SessionStatus::Active | SessionStatus::Paused)
    }
}

/// Tells live subscribers about a session's change (`session.<what>`), with what a client needs to tick the
/// cost itself: the tariff's terms, tier, time zone, pauses, and the cost and charges so far.
pub(crate) fn announce(
    tx: &mut TenantTx,
    s: &Session,
    kind: &'static str,
    extra: serde_json::Value,
) {
    let now = Utc::now();
    let mut data = serde_json::json!({
        "status": s.status,
        "rental": s.asset_id.is_some(),
        "startedAt": s.started_at,
        "plannedEndAt": s.planned_end_at,
        "endedAt": s.ended_at,
        "remainingSeconds": if s.is_running() { s.remaining_seconds(now) } else { None },
        "cost": s.chargeable_at(now),
        "chargedAmount": s.charged_amount,
        "currency": s.currency,
        "pricing": {
            "terms": s.terms,
            "tier": s.tier,
            "timezone": s.timezone,
            "pauses": s.pauses,
            "pausedAt": s.paused_at,
            "energyWh": s.energy_wh,
        },
    });
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    tx.emit(
        crate::events::NewEvent::new(kind, data)
            .venue(s.venue_id)
            .station(s.station_id)
            .subject(s.id)
            .patron(Some(s.patron_id)),
    );
}

const COLUMNS: &str = "id, station_id, venue_id, patron_id, origin, status, tariff_id, tariff_version, terms, timezone,
    tier, currency::text as currency, started_at, planned_end_at, ended_at, energy_wh, charged_amount, ticks,
    asset_id, quote_id, return_station_id, deposit_amount, warnings_sent, paused_at, pauses, switched_off_at,
    connector, power_w";

pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Session> {
    let sql = format!("select {COLUMNS} from session where tenant_id = $1 and id = $2");
    let s: Option<Session> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    s.ok_or(Error::NotFound("session"))
}

/// The session, locked for the rest of the transaction.
pub(crate) async fn lock(tx: &mut TenantTx, id: Uuid) -> Result<Session> {
    let sql = format!("select {COLUMNS} from session where tenant_id = $1 and id = $2 for update");
    let s: Option<Session> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    s.ok_or(Error::NotFound("session"))
}

/// Filters for lists; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub status: Option<SessionStatus>,
    pub station_id: Option<Uuid>,
    pub patron_id: Option<Uuid>,
    /// Only these venues' sessions (a scoped member's venues); `None`: every venue.
    pub venues: Option<Vec<Uuid>>,
    /// Only this venue's sessions (a filter the caller chose, on top of `venues`).
    pub venue_id: Option<Uuid>,
    /// Only sessions started at or after this instant ...
    pub started_from: Option<DateTime<Utc>>,
    /// ... and before this one.
    pub started_before: Option<DateTime<Utc>>,
}

/// A tenant's sessions, newest first; the statement names only the filters given ([`db::filter`]).
pub async fn list(tx: &mut TenantTx, filter: &SessionFilter, limit: i64) -> Result<Vec<Session>> {
    if let (Some(from), Some(before)) = (filter.started_from, filter.started_before) {
        if before <= from {
            return Err(Error::validation("to", "must be later than from"));
        }
    }
    let mut query = QueryBuilder::new(format!("select {COLUMNS} from session where tenant_id = "));
    query.push_bind(tx.tenant());
    db::filter_fixed(
        &mut query,
        "status",
        filter.status.map(SessionStatus::as_str),
    );
    db::filter(&mut query, "station_id = $", filter.station_id);
    db::filter(&mut query, "patron_id = $", filter.patron_id);
    db::filter(&mut query, "venue_id = any($)", filter.venues.as_deref());
    db::filter(&mut query, "venue_id = $", filter.venue_id);
    db::filter(&mut query, "started_at >= $", filter.started_from);
    db::filter(&mut query, "started_at < $", filter.started_before);
    query
        .push(" order by started_at desc, id desc limit ")
        .push_bind(limit.clamp(1, 500));
    Ok(query.build_query_as().fetch_all(tx.conn()).await?)
}

/// A patron's name as sessions show it: `None` for an anonymous walk-in.
pub async fn patron_name(tx: &mut TenantTx, patron: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "select display_name from patron where tenant_id = $1 and id = $2 and not walk_in",
    )
    .bind(tx.tenant())
    .bind(patron)
    .fetch_optional(tx.conn())
    .await?)
}

/// How a session was paid: `wallet`, `cash` (taken by staff for a walk-in) or `card` (the saved card charged at
/// the start).
pub async fn payment_method(tx: &mut TenantTx, id: Uuid) -> Result<String> {
    let method: Option<String> =
        sqlx::query_scalar("select payment_method from session where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
    method.ok_or(Error::NotFound("session"))
}

/// The commands written for a session's station on its behalf (switch on, extend, switch off), oldest first.
pub async fn commands_of(tx: &mut TenantTx, session: Uuid) -> Result<Vec<DeviceCommand>> {
    Ok(sqlx::query_as(
        "select id, session_id, command, payload, created_at, delivered_at, acked_at, result, deadline_at,
                  answered_at, outcome from device_command
         where tenant_id = $1 and session_id = $2 order by created_at, id limit 500",
    )
    .bind(tx.tenant())
    .bind(session)
    .fetch_all(tx.conn())
    .await?)
}

#[derive(Debug, Clone)]
pub struct StartSession {
    pub station_id: Uuid,
    /// Without a patron, a cash session creates an anonymous walk-in patron.
    pub patron_id: Option<Uuid>,
    /// Planned minutes; `None` is open-ended (billed by ticks until stopped).
    pub duration_minutes: Option<i64>,
    pub payment: Payment,
}

/// Paying a start with the patron's saved card: the planned time's price is charged now and credited to the wallet.
#[derive(Clone, Copy)]
pub struct CardPrepay<'a> {
    pub provider: &'a dyn crate::payments::PaymentProvider,
    /// Stable across retries of one request (derived from the client's idempotency key), so that a start retried
    /// after a failure finds the same charge at the provider instead of making a second one.
    pub key: &'a str,
}

/// Longest planned session: a week.
pub const MAX_MINUTES: i64 = 7 * 24 * 60;

/// Starts a session for staff: prices the planned time, takes cash or checks the wallet, switches the station on.
pub async fn start(
    tx: &mut TenantTx,
    actor: &Actor,
    input: StartSession,
    tick: Duration,
) -> Result<Session> {
    start_by(tx, By::Member(actor), input, None, tick).await
}

/// The one way a session starts, for staff and patrons alike: prices the planned time, takes cash (staff) or the
/// planned price from the patron's saved card (`card`, into the wallet first), checks the wallet, switches the
/// station on. A patron starts only its own sessions, only on a self-service station, and pays from its wallet
/// or card.
pub async fn start_by(
    tx: &mut TenantTx,
    by: By<'_>,
    input: StartSession,
    card: Option<CardPrepay<'_>>,
    tick: Duration,
) -> Result<Session> {
    // A card start moves money into the wallet: its lock comes first, before the station's, the order a stop or a
    // billing tick takes them in (the wallet, then the station it switches off).
    if let (Some(_), Some(patron)) = (&card, input.patron_id) {
        let unclaimed = stations::get(tx, input.station_id).await?;
        let currency = venues::get(tx, unclaimed.venue_id).await?.currency;
        let wallet = ledger::account(tx, Owner::Patron(patron), Purpose::Wallet, &currency).await?;
        ledger::lock(tx, &[wallet]).await?;
    }
    // The station is claimed from here: an archiving and other starts of it wait for this one, so nothing is
    // charged for a station archived meanwhile, and the look for a running session below sees the session of a
    // start that went first.
    let station = stations::get_claimed(tx, input.station_id).await?;
    if let By::Patron(me) = by {
        if input.patron_id != Some(me.patron_id) {
            return Err(Error::NotFound("patron"));
        }
        if input.payment == Payment::Cash {
            return Err(Error::validation(
                "payWith",
                "a patron pays from the wallet or the saved card; cash is taken by staff",
            ));
        }
        if !station.self_service {
            return Err(Error::Forbidden(
                "this station is not self-service: ask the staff to start it for you",
            ));
        }
    }
    if station.archived_at.is_some() {
        return Err(Error::Conflict("this station is archived".into()));
    }
    if station.status == StationStatus::Maintenance {
        return Err(Error::Conflict("this station is in maintenance".into()));
    }
    let venue = venues::get(tx, station.venue_id).await?;
    let tariff = tariffs::resolve(tx, &station).await?;
    tariffs::check_currency(&tariff, &venue)?;
    if let Some(m) = input.duration_minutes {
        if !(1..=MAX_MINUTES).contains(&m) {
            return Err(Error::validation(
                "durationMinutes",
                format!("must be between 1 and {MAX_MINUTES}"),
            ));
        }
    }
    let id = Uuid::now_v7();
    let (patron, flag) = match (input.patron_id, input.payment, by) {
        (Some(p), _, _) => patrons::get_with_flag(tx, p).await?,
        (None, Payment::Cash, By::Member(actor)) => {
            let walk_in = patrons::NewPatron {
                display_name: "Walk-in".into(),
                ..Default::default()
            };
            (patrons::create(tx, actor, walk_in, true).await?, None)
        }
        (None, _, _) => {
            return Err(Error::validation(
                "patronId",
                "wallet payment needs a patron",
            ))
        }
    };
    let now = Utc::now();
    let tz: Tz = venue.timezone.parse().unwrap_or(Tz::UTC);
    let planned_end = input.duration_minutes.map(|m| now + Duration::minutes(m));
    let planned_price = planned_end.map(|end| {
        pricing::price(
            &tariff.terms,
            tz,
            Usage {
                started_at: now,
                until: end,
                pauses: &[],
                energy_wh: 0,
                tier: Some(&patron.tier),
            },
        )
    });
    let currency = venue.currency.as_str();

    // Cash moves below before the row that would find the station busy: look first, so that a busy station costs
    // nothing. The claim above makes the look reliable: a start going on at the same time has committed or rolled
    // back. Busy is a running session (rentals apart) that has no connector yet or runs on connector 1, the one a
    // cloud start asks a charger for: a charger's other connectors may charge meanwhile.
    let busy: bool = sqlx::query_scalar(
        "select exists (select 1 from session where tenant_id = $1 and station_id = $2
                          and status in ('active', 'paused') and coalesce(connector, 1) = 1 and asset_id is null)",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_one(tx.conn())
    .await?;
    if busy {
        return Err(Error::Conflict(
            "this station already has a running session".into(),
        ));
    }
    if let (Payment::Cash, By::Member(actor)) = (input.payment, by) {
        let price = planned_price.as_ref().ok_or_else(|| {
            Error::validation(
                "durationMinutes",
                "a cash session is prepaid: give its duration",
            )
        })?;
        if price.amount > 0 {
            patrons::top_up_cash(
                tx,
                actor,
                patron.id,
                venue.id,
                price.amount,
                &format!("session:{id}"),
            )
            .await?;
        }
    }
    // A card pays the planned price itself. It is charged last, once everything else of the start is written and
    // every lock it needs is held, so that nothing after the provider's charge can fail but the commit.
    let card_price = match card {
        Some(_) => Some(
            planned_price
                .as_ref()
                .ok_or_else(|| {
                    Error::validation(
                        "minutes",
                        "a session paid by card is prepaid: give its duration",
                    )
                })?
                .amount,
        ),
        None => None,
    };
    let wallet = ledger::balance(tx, Owner::Patron(patron.id), Purpose::Wallet, currency).await?;
    let needed = planned_price.as_ref().map_or(1, |p| p.amount);
    if card_price.is_none() && wallet < needed {
        let what = match &planned_price {
            Some(p) => format!(
                "{} for the planned time",
                crate::money::format(p.amount, currency)
            ),
            None => "a positive balance for an open-ended session".to_owned(),
        };
        return Err(Error::InsufficientFunds(format!(
            "the wallet holds {} but needs {what}; top it up first",
            crate::money::format(wallet, currency)
        )));
    }

    let row = NewRow {
        id,
        station: &station,
        venue: &venue,
        patron: &patron,
        started_by: by.user_id(),
        origin: if by.patron_id().is_some() {
            "patron"
        } else {
            "staff"
        },
        tariff: &tariff,
        started_at: now,
        planned_end_at: planned_end,
        ticks_from: now,
        tick,
        asset_id: None,
        quote_id: None,
        deposit_amount: 0,
    };
    let session = insert(tx, row).await?;
    // Its receipt says how it was paid (the wallet unless recorded here; migration 0027).
    let paid_by = match (input.payment, card.is_some()) {
        (_, true) => Some("card"),
        (Payment::Cash, false) => Some("cash"),
        (Payment::Wallet, false) => None,
    };
    if let Some(method) = paid_by {
        sqlx::query("update session set payment_method = $3 where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(session.id)
            .bind(method)
            .execute(tx.conn())
            .await?;
    }
    switch(tx, &session, true, "switch_on").await?;
    announce(
        tx,
        &session,
        "session.started",
        serde_json::json!({ "origin": session.origin }),
    );
    crate::staff::safety::warn_of_flag(
        tx,
        flag,
        session.patron_id,
        session.venue_id,
        "safety.flagged_session",
        session.id,
    );
    let detail = serde_json::json!({
        "station_id": station.id, "patron_id": patron.id, "payment": input.payment,
        "planned_end_at": planned_end, "tariff_id": tariff.id, "tariff_version": tariff.version,
        "card": card.is_some(),
    });
    audit::record_by(tx, by, entry("session.start", id, detail)).await?;
    if let (Some(card), Some(amount)) = (card, card_price) {
        let key = format!("session-start:{}", card.key);
        // A start that charged this key committed with its session: the same key again (after the request store
        // forgot it, a day later) is another start under a spent key, and must not take the old charge for paid.
        if crate::payments::cards::charged(tx, &key).await? {
            return Err(Error::IdempotencyKeyReused);
        }
        if amount > 0 {
            // Rounded up to what the provider takes (KWD in tens): the rest stays in the wallet.
            let amount = crate::payments::round_up(card.provider, amount, &venue.currency);
            crate::payments::cards::charge_to_wallet(
                tx,
                by,
                card.provider,
                patron.id,
                venue.id,
                amount,
                &key,
            )
            .await?;
        }
    }
    Ok(session)
}

/// Everything a new session row needs.
pub(crate) struct NewRow<'a> {
    pub id: Uuid,
    pub station: &'a stations::Station,
    pub venue: &'a venues::Venue,
    pub patron: &'a patrons::Patron,
    pub started_by: Option<Uuid>,
    pub origin: &'a str,
    pub tariff: &'a tariffs::Tariff,
    pub started_at: DateTime<Utc>,
    pub planned_end_at: Option<DateTime<Utc>>,
    /// The first tick is due one tick after `ticks_from`: the deployment's billing `tick`, or the tenant's own
    /// (`billing_tick_sec`) where it set one (read by the insert itself).
    pub ticks_from: DateTime<Utc>,
    pub tick: Duration,
    pub asset_id: Option<Uuid>,
    pub quote_id: Option<Uuid>,
    pub deposit_amount: i64,
}

pub(crate) async fn insert(tx: &mut TenantTx, row: NewRow<'_>) -> Result<Session> {
    let sql = format!(
        "insert into session (tenant_id, id, station_id, venue_id, patron_id, started_by, origin, tariff_id,
            tariff_version, terms, timezone, tier, currency, started_at, planned_end_at, next_tick_at, asset_id,
            quote_id, deposit_amount)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                 $20 + make_interval(secs => coalesce((select billing_tick_sec from tenant where id = $1), $16)),
                 $17, $18, $19)
         returning {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(row.id)
        .bind(row.station.id)
        .bind(row.venue.id)
        .bind(row.patron.id)
        .bind(row.started_by)
        .bind(row.origin)
        .bind(row.tariff.id)
        .bind(row.tariff.version)
        .bind(sqlx::types::Json(&row.tariff.terms))
        .bind(&row.venue.timezone)
        .bind(&row.patron.tier)
        .bind(&row.venue.currency)
        .bind(row.started_at)
        .bind(row.planned_end_at)
        .bind(row.tick.num_seconds() as f64)
        .bind(row.asset_id)
        .bind(row.quote_id)
        .bind(row.deposit_amount)
        .bind(row.ticks_from)
        .fetch_one(tx.conn())
        .await?)
}

/// The oldest start a device's session is billed from: a transaction kept offline longer than any charger keeps
/// one, or a clock that was reset, counts from here.
pub const DEVICE_START_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// A session a device started itself — a charger's transaction on `connector`, for the patron whose tag it
/// was, from `started_at` (the charger's time, no later than now and no earlier than [`DEVICE_START_MAX_AGE`] ago:
/// a charger whose clock was reset says 1970) and meter reading `meter_start_wh` (none: the first reading to come
/// is the baseline): open-ended, billed by the tick, no command sent (the device is already on). A station it cannot
/// bill (no tariff applies, or the tariff's currency is not the venue's) starts nothing and says why: the device's
/// transaction is kept unbilled rather than refused and lost.
pub async fn start_from_device(
    tx: &mut TenantTx,
    station: &stations::Station,
    connector: i32,
    patron_id: Uuid,
    started_at: DateTime<Utc>,
    meter_start_wh: Option<i64>,
) -> Result<DeviceStart> {
    let venue = venues::get(tx, station.venue_id).await?;
    // Nothing is written before these checks: a start that cannot bill leaves the transaction as it was.
    let tariff = match tariffs::resolve(tx, station)
        .await
        .and_then(|t| tariffs::check_currency(&t, &venue).map(|()| t))
    {
        Ok(t) => t,
        Err(Error::Conflict(why)) => return Ok(DeviceStart::Unbillable(why)),
        Err(e) => return Err(e),
    };
    let patron = patrons::get(tx, patron_id).await?;
    let now = Utc::now();
    let started_at = started_at.clamp(now - DEVICE_START_MAX_AGE, now);
    let id = Uuid::now_v7();
    let row = NewRow {
        id,
        station,
        venue: &venue,
        patron: &patron,
        started_by: None,
        origin: "device",
        tariff: &tariff,
        started_at,
        planned_end_at: None,
        ticks_from: now,
        tick: Duration::seconds(30),
        asset_id: None,
        quote_id: None,
        deposit_amount: 0,
    };
    insert(tx, row).await?;
    attach_meter(tx, id, connector, meter_start_wh).await?;
    let session = get(tx, id).await?;
    // (Not once archived: an archiving that committed meanwhile fails this start whole.)
    let status: StationStatus = sqlx::query_scalar(
        "update station set expected_on = true, expected_until = null,
           status = case when status = 'maintenance' then status else 'in_session' end
         where tenant_id = $1 and id = $2 and archived_at is null returning status",
    )
    .bind(tx.tenant())
    .bind(station.id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| Error::Conflict("this station is archived".into()))?;
    tx.emit(
        crate::events::NewEvent::new(
            "station.status",
            serde_json::json!({ "status": status, "expectedOn": true, "sessionId": id }),
        )
        .venue(station.venue_id)
        .station(station.id),
    );
    announce(
        tx,
        &session,
        "session.started",
        serde_json::json!({ "origin": "device", "connector": connector }),
    );
    let detail = serde_json::json!({
        "station_id": station.id, "patron_id": patron.id, "connector": connector,
        "meter_start_wh": meter_start_wh, "tariff_id": tariff.id, "tariff_version": tariff.version,
    });
    audit::record_by(tx, By::System, entry("session.start", id, detail)).await?;
    Ok(DeviceStart::Started(session.id))
}

/// What [`start_from_device`] did.
#[derive(Debug)]
pub enum DeviceStart {
    /// The session opened.
    Started(Uuid),
    /// Nothing: the station cannot bill now, for this reason (one an operator can act on).
    Unbillable(String),
}

/// A session's device started metering on `connector` at reading `meter_start_wh` (none: its first reading to come
/// is the baseline, never 0 Wh, which would bill a meter's lifetime register).
pub async fn attach_meter(
    tx: &mut TenantTx,
    id: Uuid,
    connector: i32,
    meter_start_wh: Option<i64>,
) -> Result<()> {
    sqlx::query(
        "update session set connector = $3, meter_start_wh = $4, meter_last_wh = $4
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(connector)
    .bind(meter_start_wh.map(|m| m.max(0)))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The largest energy register taken, in Wh: a terawatt-hour, more than a 350 kW charger delivers in 300 years. A
/// larger one is a broken meter or a made-up number, and would price a session at the limit of the money type.
pub const MAX_REGISTER_WH: i64 = 1_000_000_000_000;

/// A meter reading for a running session: `register_wh` is the meter's energy register (a charger's
/// `Energy.Active.Import.Register`, a plug's total), `power_w` the power now. The first reading is the session's
/// baseline; its energy is the register's rise since then (a register that goes back — a meter reset — is not
/// taken). The live cost follows (`session.metered`).
pub async fn meter(
    tx: &mut TenantTx,
    id: Uuid,
    register_wh: i64,
    power_w: Option<i32>,
) -> Result<Session> {
    match meter_many(tx, &[(id, register_wh, power_w)]).await?.pop() {
        Some(session) => Ok(session),
        // Not running: the reading is not taken.
        None => get(tx, id).await,
    }
}

/// Readings for several sessions in one statement (a batch of chargers' MeterValues), each as [`meter`] takes it:
/// (session, register in Wh, power in W). Returns the running sessions that took theirs; a session named twice
/// takes the higher register and the last power given.
pub async fn meter_many(
    tx: &mut TenantTx,
    readings: &[(Uuid, i64, Option<i32>)],
) -> Result<Vec<Session>> {
    // One row a session (a batch holds up to hundreds of readings): the higher register, the last power given.
    let mut by_session: std::collections::HashMap<Uuid, (i64, Option<i32>)> =
        std::collections::HashMap::with_capacity(readings.len());
    for &(id, register_wh, power_w) in readings {
        let register_wh = register_wh.max(0);
        by_session
            .entry(id)
            .and_modify(|m| *m = (m.0.max(register_wh), power_w.or(m.1)))
            .or_insert((register_wh, power_w));
    }
    let merged: Vec<(Uuid, i64, Option<i32>)> = by_session
        .into_iter()
        .map(|(id, (register_wh, power_w))| (id, register_wh, power_w))
        .collect();
    if merged.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = merged.iter().map(|m| m.0).collect();
    let registers: Vec<i64> = merged.iter().map(|m| m.1).collect();
    let powers: Vec<Option<i32>> = merged.iter().map(|m| m.2).collect();
    let sql = format!(
        "update session set
           meter_start_wh = coalesce(meter_start_wh, m.wh),
           meter_last_wh = greatest(coalesce(meter_last_wh, m.wh), m.wh),
           energy_wh = greatest(energy_wh, m.wh - coalesce(meter_start_wh, m.wh)),
           power_w = coalesce(m.pw, power_w)
         from unnest($2::uuid[], $3::int8[], $4::int4[]) as m(sid, wh, pw)
         where tenant_id = $1 and id = m.sid and status in ('active', 'paused')
         returning {COLUMNS}"
    );
    let sessions: Vec<Session> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(&ids)
        .bind(&registers)
        .bind(&powers)
        .fetch_all(tx.conn())
        .await?;
    for session in &sessions {
        announce(
            tx,
            session,
            "session.metered",
            serde_json::json!({ "energyWh": session.energy_wh, "powerW": session.power_w }),
        );
    }
    Ok(sessions)
}

/// Fails a session whose device never started (a charger refused the remote start): it is voided ([`void`]:
/// `failed`, everything charged given back) and its station no longer expected on.
pub async fn fail_unstarted(tx: &mut TenantTx, id: Uuid, reason: &str) -> Result<Session> {
    if !lock(tx, id).await?.is_running() {
        return get(tx, id).await;
    }
    let session = void(tx, id, reason).await?;
    let sql = format!(
        "update station set expected_on = false, expected_until = null,
           status = case when status = 'in_session' then {} else status end
         where tenant_id = $1 and id = $2",
        crate::stations::IDLE_STATUS
    );
    sqlx::query(&sql)
        .bind(tx.tenant())
        .bind(session.station_id)
        .execute(tx.conn())
        .await?;
    Ok(session)
}

/// Adds minutes to a timed session, if the wallet covers the longer plan.
pub async fn extend(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    id: Uuid,
    minutes: i64,
) -> Result<Session> {
    let session = lock(tx, id).await?;
    if !session.is_running() {
        return Err(Error::Conflict("this session has already ended".into()));
    }
    let Some(planned_end) = session.planned_end_at else {
        return Err(Error::Conflict(
            "an open-ended session runs until stopped; there is nothing to extend".into(),
        ));
    };
    // `minutes` is range-checked before any arithmetic: a huge value would overflow the sum and `Duration`.
    let planned = (planned_end - session.started_at).num_minutes();
    if !(1..=MAX_MINUTES).contains(&minutes) || planned.saturating_add(minutes) > MAX_MINUTES {
        return Err(Error::validation(
            "minutes",
            format!("must be at least 1, and a session at most {MAX_MINUTES} minutes"),
        ));
    }
    let new_end = planned_end + Duration::minutes(minutes);
    let longer = Session {
        planned_end_at: Some(new_end),
        ..session.clone()
    };
    let needed = longer.price_at(new_end).amount - session.charged_amount;
    let wallet = ledger::balance(
        tx,
        Owner::Patron(session.patron_id),
        Purpose::Wallet,
        &session.currency,
    )
    .await?;
    if wallet < needed {
        return Err(Error::InsufficientFunds(format!(
            "the wallet holds {} but the longer session needs {}; top it up first",
            crate::money::format(wallet, &session.currency),
            crate::money::format(needed, &session.currency)
        )));
    }
    // A new planned end: its warnings are still to come.
    sqlx::query("update session set planned_end_at = $3, warnings_sent = 0 where tenant_id = $1 and id = $2")
        .bind(tx.tenant())
        .bind(id)
        .bind(new_end)
        .execute(tx.conn())
        .await?;
    let session = get(tx, id).await?;
    switch(tx, &session, true, "extend").await?;
    announce(
        tx,
        &session,
        "session.extended",
        serde_json::json!({ "minutes": minutes }),
    );
    audit::record_by(
        tx,
        by.into(),
        entry(
            "session.extend",
            id,
            serde_json::json!({ "minutes": minutes, "planned_end_at": new_end }),
        ),
    )
    .await?;
    Ok(session)
}

/// Pauses a running session: the station is switched off, the time is not billed, and the remaining time is
/// frozen. Pausing a paused session returns it unchanged. Rentals cannot pause (the powerbank is out).
pub async fn pause(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Session> {
    let session = lock(tx, id).await?;
    match session.status {
        SessionStatus::Paused => return Ok(session),
        SessionStatus::Active => {}
        _ => return Err(Error::Conflict("this session has already ended".into())),
    }
    if session.asset_id.is_some() {
        return Err(Error::Conflict(
            "a rental cannot be paused: the powerbank is with the patron".into(),
        ));
    }
    if session.planned_end_at.is_some_and(|end| end <= now) {
        return Err(Error::Conflict("this session's time is up".into()));
    }
    // Charge what was used so far, so the wallet shows it while the station waits.
    settle(
        tx,
        &session,
        now,
        &format!("pause:{}", session.pauses.len() + 1),
    )
    .await?;
    sqlx::query(
        "update session set status = 'paused', paused_at = $3, next_tick_at = null where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    let session = get(tx, id).await?;
    switch(tx, &session, false, "pause").await?;
    announce(tx, &session, "session.paused", serde_json::json!({}));
    audit::record_by(
        tx,
        by.into(),
        entry("session.pause", id, serde_json::json!({ "paused_at": now })),
    )
    .await?;
    Ok(session)
}

/// Resumes a paused session: the station is switched on again and a timed session's planned end moves later by
/// the pause. Resuming an active session returns it unchanged.
pub async fn resume(
    tx: &mut TenantTx,
    by: impl Into<By<'_>>,
    id: Uuid,
    now: DateTime<Utc>,
    tick: Duration,
) -> Result<Session> {
    let session = lock(tx, id).await?;
    let Some(paused_at) = session.paused_at else {
        return match session.status {
            SessionStatus::Active => Ok(session),
            _ => Err(Error::Conflict("this session has already ended".into())),
        };
    };
    let paused = now.max(paused_at) - paused_at;
    let planned_end = session.planned_end_at.map(|end| end + paused);
    // Warnings already sent stay sent only if they are still due at the new end.
    let mut sent = session.warnings_sent;
    if let Some(end) = planned_end {
        for (minutes, bit) in WARNINGS {
            if end - Duration::minutes(minutes) > now {
                sent &= !bit;
            }
        }
    }
    let tick = crate::tenants::billing_tick(tx, tick).await?;
    let mut next = now + tick;
    if let Some(end) = planned_end {
        next = next.min(end);
        for (minutes, bit) in WARNINGS {
            let due = end - Duration::minutes(minutes);
            if sent & bit == 0 && due > now {
                next = next.min(due);
            }
        }
    }
    let pauses = session.pauses_at(now);
    sqlx::query(
        "update session set status = 'active', paused_at = null, pauses = $3, planned_end_at = $4,
           warnings_sent = $5, next_tick_at = $6
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(sqlx::types::Json(&pauses))
    .bind(planned_end)
    .bind(sent)
    .bind(next)
    .execute(tx.conn())
    .await?;
    let session = get(tx, id).await?;
    switch(tx, &session, true, "resume").await?;
    announce(
        tx,
        &session,
        "session.resumed",
        serde_json::json!({ "pausedSeconds": paused.num_seconds() }),
    );
    let detail = serde_json::json!({ "paused_seconds": paused.num_seconds(), "planned_end_at": planned_end });
    audit::record_by(tx, by.into(), entry("session.resume", id, detail)).await?;
    Ok(session)
}

/// Ends a session now (or at its planned end if that has passed), settles what is due and switches the station
/// off. Stopping an ended session returns it unchanged.
pub async fn stop(
    tx: &mut TenantTx,
    actor: Option<&Actor>,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Session> {
    // A running rental stopped by a member is a powerbank that will not come back (`stopRental` docks one that
    // does): it ends as lost, the powerbank written off and the deposit released as a stop would release it.
    let session = lock(tx, id).await?;
    if let Some(actor) = actor {
        if session.asset_id.is_some() && session.is_running() {
            return crate::rentals::end_as_lost(tx, actor, &session, now).await;
        }
    }
    stop_locked(tx, actor.map_or(By::System, By::Member), session, now).await
}

/// [`stop`], by anyone (a patron stopping its own session, say).
pub async fn stop_by(
    tx: &mut TenantTx,
    by: By<'_>,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Session> {
    let session = lock(tx, id).await?;
    stop_locked(tx, by, session, now).await
}

/// [`stop_by`] for a session its caller has locked.
async fn stop_locked(
    tx: &mut TenantTx,
    by: By<'_>,
    session: Session,
    now: DateTime<Utc>,
) -> Result<Session> {
    if !session.is_running() {
        return Ok(session);
    }
    let status = if session.planned_end_at.is_some_and(|p| p <= now) {
        SessionStatus::Expired
    } else {
        SessionStatus::Ended
    };
    finish(tx, by, &session, session.usage_until(now), status).await
}

/// A device reports the end of its session itself, at its own time `at` (by the cloud's clock), with its final
/// meter register when it has one: a charger's `StopTransaction` or 2.0.1 `Ended`. Returns the session.
///
/// - Running: the reading is taken, the session ends at `at`, and what the billing ticks charged past `at` (the
///   report came late: the charger stopped while its bridge's tunnel was down) goes back under
///   `session:<id>:ended_by_device`, to the patron's debt first, then the wallet.
/// - Ended or expired already (the cloud stopped it first, and the charger's stop follows; a voided one is left
///   alone): energy the final register shows beyond the last reading was delivered before the charger stopped, and
///   is charged under `session:<id>:meter_stop` (once: a stop is applied once per transaction).
pub(crate) async fn end_reported(
    tx: &mut TenantTx,
    id: Uuid,
    at: DateTime<Utc>,
    register_wh: Option<i64>,
) -> Result<Session> {
    let session = lock(tx, id).await?;
    if session.is_running() {
        if let Some(register) = register_wh {
            meter(tx, id, register, Some(0)).await?;
        }
        let ended = stop_by(tx, By::System, id, at).await?;
        let over = ended.charged_amount - ended.chargeable_at(at);
        if over > 0 {
            give_back(
                tx,
                &ended,
                over,
                "ended_by_device",
                "charged past the device's own stop, given back",
            )
            .await?;
            return get(tx, id).await;
        }
        return Ok(ended);
    }
    let (Some(register), Some(end)) = (register_wh, session.ended_at) else {
        return Ok(session);
    };
    // Only a rise over the session's baseline beyond the energy taken so far (a register that went back, or a
    // session with no baseline, changes nothing).
    let register = register.clamp(0, MAX_REGISTER_WH);
    let sql = format!(
        "update session set energy_wh = $3 - meter_start_wh, meter_last_wh = greatest(meter_last_wh, $3)
         where tenant_id = $1 and id = $2 and status in ('ended', 'expired') and meter_start_wh is not null
           and $3 - meter_start_wh > energy_wh
         returning {COLUMNS}"
    );
    let metered: Option<Session> = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(register)
        .fetch_optional(tx.conn())
        .await?;
    let Some(metered) = metered else {
        return Ok(session);
    };
    let energy = metered.energy_wh;
    let due = metered.chargeable_at(end) - metered.charged_amount;
    let charge = Charge {
        session: &metered,
        due,
        label: "meter_stop".to_owned(),
    };
    charge_many(tx, &[charge]).await?;
    let detail =
        serde_json::json!({ "energy_wh": energy, "register_wh": register, "charged": due.max(0) });
    audit::record_as(tx, None, None, entry("session.final_meter", id, detail)).await?;
    let session = get(tx, id).await?;
    announce(
        tx,
        &session,
        "session.metered",
        serde_json::json!({ "energyWh": session.energy_wh, "powerW": session.power_w }),
    );
    Ok(session)
}

/// Ends a running session at `end` with `status`: settles, switches the station off, audits.
async fn finish(
    tx: &mut TenantTx,
    by: By<'_>,
    session: &Session,
    end: DateTime<Utc>,
    status: SessionStatus,
) -> Result<Session> {
    let id = session.id;
    let due = session.chargeable_at(end) - session.charged_amount;
    let final_charge = Charge {
        session,
        due,
        label: "final".to_owned(),
    };
    let taken: i64 = post_charges(tx, &[final_charge]).await?.into_iter().sum();
    let pauses = session.pauses_at(end);
    // What the final charge took goes onto the session in the same update that ends it.
    let sql = format!(
        "update session set status = $3, ended_at = $4, next_tick_at = null, paused_at = null, pauses = $5,
           charged_amount = charged_amount + $6
         where tenant_id = $1 and id = $2 returning {COLUMNS}"
    );
    let session: Session = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(id)
        .bind(status)
        .bind(end)
        .bind(sqlx::types::Json(&pauses))
        .bind(taken)
        .fetch_one(tx.conn())
        .await?;
    if session.asset_id.is_none() {
        switch(tx, &session, false, "switch_off").await?;
    }
    let kind = if status == SessionStatus::Expired {
        "session.expired"
    } else {
        "session.stopped"
    };
    announce(tx, &session, kind, serde_json::json!({}));
    let detail = serde_json::json!({ "status": status, "ended_at": end, "charged_amount": session.charged_amount });
    audit::record_by(tx, by, entry("session.stop", id, detail)).await?;
    // The patron's receipt, queued with the end itself (once per session).
    crate::notify::flows::receipt(tx, &session).await?;
    Ok(session)
}

/// The station's edge bridge reports that it switched the station off at `at` (by the cloud's clock). The session
/// the station last ran records it as its real end. When the bridge ended the session by its own timer
/// (`planned_end`) earlier than the cloud did — the link was down while the session was extended, say — the
/// session ends at `at` as `expired`, and what was charged past that moment goes back, to the patron's debt first
/// and then the wallet. Any other switch-off (a pause, the cloud's own stop) only records the time. Applying the
/// same report again changes nothing. Returns the session it concerned, if any.
pub async fn switched_off(
    tx: &mut TenantTx,
    station: Uuid,
    session: Option<Uuid>,
    at: DateTime<Utc>,
    planned_end: bool,
) -> Result<Option<Session>> {
    let at = at.min(Utc::now());
    let Some(id) = switched_off_session(tx, station, session, at).await? else {
        return Ok(None);
    };
    let mut session = lock(tx, id).await?;
    if session.switched_off_at.is_some() || session.started_at > at {
        return Ok(Some(session));
    }
    let ends_later = session.is_running() || session.ended_at.is_some_and(|end| end > at);
    if planned_end && ends_later {
        let charged = session.charged_amount;
        session = if session.is_running() {
            finish(
                tx,
                By::System,
                &session,
                session.usage_until(at),
                SessionStatus::Expired,
            )
            .await?
        } else {
            let pauses: Vec<_> = session
                .pauses
                .iter()
                .filter(|(from, _)| *from < at)
                .map(|&(from, to)| (from, to.min(at)))
                .collect();
            sqlx::query(
                "update session set ended_at = $3, pauses = $4 where tenant_id = $1 and id = $2",
            )
            .bind(tx.tenant())
            .bind(id)
            .bind(at)
            .bind(sqlx::types::Json(&pauses))
            .execute(tx.conn())
            .await?;
            get(tx, id).await?
        };
        let over = session.charged_amount - session.chargeable_at(at);
        if over > 0 {
            give_back(
                tx,
                &session,
                over,
                "ended_by_bridge",
                "charged past the station's real end, given back",
            )
            .await?;
        }
        let detail = serde_json::json!({
            "ended_at": session.usage_until(at), "charged_before": charged, "returned": over.max(0),
        });
        audit::record_as(tx, None, None, entry("session.ended_by_bridge", id, detail)).await?;
    }
    if !session.is_running() {
        sqlx::query("update session set switched_off_at = $3 where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(id)
            .bind(at)
            .execute(tx.conn())
            .await?;
    }
    Ok(Some(get(tx, id).await?))
}

/// Voids a running session that never really began (a powerbank its cabinet could not eject): it ends as `failed`
/// now, nothing is due, and whatever a billing tick charged meanwhile goes back (journal `session:<id>:voided`).
/// Voiding a session that is no longer running returns it unchanged.
pub(crate) async fn void(tx: &mut TenantTx, id: Uuid, reason: &str) -> Result<Session> {
    let session = lock(tx, id).await?;
    if !session.is_running() {
        return Ok(session);
    }
    sqlx::query(
        "update session set status = $3, ended_at = now(), next_tick_at = null, paused_at = null
         where tenant_id = $1 and id = $2",
    )
    .bind(tx.tenant())
    .bind(id)
    .bind(SessionStatus::Failed)
    .execute(tx.conn())
    .await?;
    let voided = get(tx, id).await?;
    if voided.charged_amount > 0 {
        give_back(
            tx,
            &voided,
            voided.charged_amount,
            "voided",
            "the session was voided, its charges given back",
        )
        .await?;
    }
    let voided = get(tx, id).await?;
    announce(
        tx,
        &voided,
        "session.failed",
        serde_json::json!({ "reason": reason }),
    );
    let detail = serde_json::json!({ "reason": reason });
    audit::record_as(tx, None, None, entry("session.void", id, detail)).await?;
    Ok(voided)
}

/// The session a switch-off report at `at` concerns: the one the bridge names (if it ran on `station`), else the
/// one the station was running at `at`.
pub async fn switched_off_session(
    tx: &mut TenantTx,
    station: Uuid,
    session: Option<Uuid>,
    at: DateTime<Utc>,
) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "select id from session where tenant_id = $1 and station_id = $2 and asset_id is null
           and (id = $4 or $4 is null and started_at <= $3)
         order by started_at desc limit 1",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(at)
    .bind(session)
    .fetch_optional(tx.conn())
    .await?)
}

/// Returns `amount` charged to a session beyond its real end (or to a voided one) under the key
/// `session:<id>:<label>`: the venue's revenue gives it back, to the patron's debt as far as there is debt, the rest
/// to the wallet. Posted once per (session, label).
pub(crate) async fn give_back(
    tx: &mut TenantTx,
    session: &Session,
    amount: i64,
    label: &str,
    memo: &str,
) -> Result<()> {
    let currency = session.currency.as_str();
    let (to_debt, debt, wallet) =
        ledger::debt_share(tx, session.patron_id, currency, amount).await?;
    let journal = Journal {
        key: format!("session:{}:{label}", session.id),
        kind: "session_correction",
        memo: memo.into(),
        session_id: Some(session.id),
        currency,
        entries: vec![
            (debt, to_debt),
            (wallet, amount - to_debt),
            (
                ledger::account(
                    tx,
                    Owner::Venue(session.venue_id),
                    Purpose::Revenue,
                    currency,
                )
                .await?,
                -amount,
            ),
        ],
    };
    if let Posted::New(_) = ledger::post(tx, journal).await? {
        sqlx::query(
            "update session set charged_amount = charged_amount - $3 where tenant_id = $1 and id = $2",
        )
        .bind(tx.tenant())
        .bind(session.id)
        .bind(amount)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Charges what is due up to `until` under the key `session:<id>:<label>`: from the wallet as far as it goes, the
/// rest as debt; the venue earns all of it. Returns the amount charged now (zero on a replay or nothing due).
pub async fn settle(
    tx: &mut TenantTx,
    session: &Session,
    until: DateTime<Utc>,
    label: &str,
) -> Result<i64> {
    let due = session.chargeable_at(until) - session.charged_amount;
    let charged = charge_many(
        tx,
        &[Charge {
            session,
            due,
            label: label.to_owned(),
        }],
    )
    .await?;
    Ok(charged.into_iter().sum())
}

/// One amount to charge to one session.
pub(crate) struct Charge<'a> {
    pub session: &'a Session,
    pub due: i64,
    pub label: String,
}

/// Charges many sessions with a fixed number of statements: accounts and wallet balances are read in bulk, each
/// charge takes what its patron's wallet still holds (several sessions of one patron share it, in order) and
/// books the rest as debt, and all journals go in one multi-row insert. Returns what each charge took (zero where
/// nothing was due or the journal already existed).
pub(crate) async fn charge_many(tx: &mut TenantTx, charges: &[Charge<'_>]) -> Result<Vec<i64>> {
    let taken = post_charges(tx, charges).await?;
    let (ids, amounts): (Vec<Uuid>, Vec<i64>) = charges
        .iter()
        .zip(&taken)
        .filter(|(_, t)| **t > 0)
        .map(|(c, t)| (c.session.id, *t))
        .unzip();
    if !ids.is_empty() {
        sqlx::query(
            "update session s set charged_amount = s.charged_amount + t.amount
             from unnest($2::uuid[], $3::bigint[]) as t (id, amount) where s.tenant_id = $1 and s.id = t.id",
        )
        .bind(tx.tenant())
        .bind(&ids)
        .bind(&amounts)
        .execute(tx.conn())
        .await?;
    }
    Ok(taken)
}

/// [`charge_many`] without adding what each charge took to its session's charged amount: the caller does, in
/// the update it makes to those sessions anyway.
async fn post_charges(tx: &mut TenantTx, charges: &[Charge<'_>]) -> Result<Vec<i64>> {
    let due: Vec<&Charge<'_>> = charges.iter().filter(|c| c.due > 0).collect();
    if due.is_empty() {
        return Ok(vec![0; charges.len()]);
    }
    let mut keys: Vec<ledger::AccountKey> = Vec::with_capacity(due.len() * 3);
    for c in &due {
        let currency = c.session.currency.clone();
        keys.push((
            Owner::Patron(c.session.patron_id),
            Purpose::Wallet,
            currency.clone(),
        ));
        keys.push((
            Owner::Patron(c.session.patron_id),
            Purpose::Debt,
            currency.clone(),
        ));
        keys.push((Owner::Venue(c.session.venue_id), Purpose::Revenue, currency));
    }
    let keys: Vec<ledger::AccountKey> = keys
        .into_iter()
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    let accounts = ledger::accounts(tx, &keys).await?;
    let account = |owner: Owner, purpose: Purpose, currency: &str| {
        accounts
            .get(&(owner, purpose, currency.to_owned()))
            .copied()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("missing ledger account")))
    };
    let wallets: Vec<Uuid> = keys
        .iter()
        .filter(|(_, p, _)| *p == Purpose::Wallet)
        .filter_map(|k| accounts.get(k).copied())
        .collect();
    // A refund or a deposit hold may be taking from the same wallets: lock them before reading what they hold.
    ledger::lock(tx, &wallets).await?;
    let mut available = ledger::patron_balances(tx, &wallets).await?;
    let before = available.clone();

    let mut journals = Vec::with_capacity(due.len());
    let mut debts = Vec::with_capacity(due.len());
    for c in &due {
        let s = c.session;
        let wallet = account(Owner::Patron(s.patron_id), Purpose::Wallet, &s.currency)?;
        let debt = account(Owner::Patron(s.patron_id), Purpose::Debt, &s.currency)?;
        let revenue = account(Owner::Venue(s.venue_id), Purpose::Revenue, &s.currency)?;
        let left = available.entry(wallet).or_insert(0);
        let from_wallet = c.due.min((*left).max(0));
        *left -= from_wallet;
        debts.push(c.due - from_wallet);
        journals.push(Journal {
            key: format!("session:{}:{}", s.id, c.label),
            kind: "session_charge",
            memo: format!("session charge ({})", c.label),
            session_id: Some(s.id),
            currency: &s.currency,
            entries: vec![
                (wallet, -from_wallet),
                (debt, -(c.due - from_wallet)),
                (revenue, c.due),
            ],
        });
    }
    let posted = ledger::post_many(tx, journals).await?;
    let mut taken: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
    let mut owing = Vec::new();
    for ((c, p), debt) in due.iter().zip(&posted).zip(debts) {
        if matches!(p, Posted::New(_)) {
            taken.insert(c.session.id, c.due);
            if debt > 0 {
                let s = c.session;
                owing.push((s.patron_id, s.venue_id, s.currency.clone()));
            }
        }
    }
    crate::payments::collect::arm(tx, &owing).await?;
    // Notices: a wallet that fell below the low-balance mark, and a charge that left a debt (rare; a few
    // queries each).
    for c in &due {
        let s = c.session;
        if !taken.contains_key(&s.id) {
            continue;
        }
        let wallet = account(Owner::Patron(s.patron_id), Purpose::Wallet, &s.currency)?;
        let (was, now) = (
            before.get(&wallet).copied().unwrap_or(0),
            available.get(&wallet).copied().unwrap_or(0),
        );
        if was >= crate::notify::flows::LOW_BALANCE_MINOR
            && now < crate::notify::flows::LOW_BALANCE_MINOR
        {
            crate::notify::flows::low_balance(tx, s.patron_id, &s.currency, now.max(0)).await?;
        }
    }
    for (patron, _, currency) in &owing {
        crate::notify::flows::debt(tx, *patron, currency).await?;
    }
    Ok(charges
        .iter()
        .map(|c| taken.get(&c.session.id).copied().unwrap_or(0))
        .collect())
}

/// The station's expected state follows the session, and a command for its control goes to the outbox.
async fn switch(tx: &mut TenantTx, session: &Session, on: bool, command_name: &str) -> Result<()> {
    let until = if on { session.planned_end_at } else { None };
    // Switched off, it is online or offline as it can be reached. Never switched on once archived (an archiving
    // that committed while this session was starting: the start fails whole).
    let sql = format!(
        "update station set expected_on = $3, expected_until = $4,
           status = case when status = 'maintenance' then status when $3 then 'in_session'
                         else {} end
         where tenant_id = $1 and id = $2 and (not $3 or archived_at is null)
         returning status, control, venue_id",
        crate::stations::IDLE_STATUS
    );
    let (status, control, venue): (StationStatus, StationControl, Uuid) = sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(session.station_id)
        .bind(on)
        .bind(until)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| Error::Conflict("this station is archived".into()))?;
    tx.emit(
        crate::events::NewEvent::new(
            "station.status",
            serde_json::json!({ "status": status, "expectedOn": on, "until": until, "sessionId": session.id }),
        )
        .venue(session.venue_id)
        .station(session.station_id),
    );
    // The station's venue as it is now (its bridge gets the command), which may not be the session's.
    let target = Target {
        station: session.station_id,
        venue,
        control,
    };
    command_to(
        tx,
        target,
        Some(session.id),
        command_name,
        serde_json::json!({ "on": on, "until": until }),
    )
    .await
}

/// Where a device command goes: the station, its venue (whose bridge is woken) and how it is controlled.
struct Target {
    station: Uuid,
    venue: Uuid,
    control: StationControl,
}

/// Writes a command for a station's control to the outbox (the edge bridge consumes it), in the caller's
/// transaction: it exists exactly when the change that caused it commits, and the venue's tunnel is woken then.
pub(crate) async fn command(
    tx: &mut TenantTx,
    station: Uuid,
    session: Option<Uuid>,
    command: &str,
    payload: serde_json::Value,
) -> Result<()> {
    let found: Option<(Uuid, StationControl)> =
        sqlx::query_as("select venue_id, control from station where tenant_id = $1 and id = $2")
            .bind(tx.tenant())
            .bind(station)
            .fetch_optional(tx.conn())
            .await?;
    let (venue, control) = found.ok_or(Error::NotFound("station"))?;
    let target = Target {
        station,
        venue,
        control,
    };
    command_to(tx, target, session, command, payload).await
}

/// [`command`] to a station whose venue and control the caller already read.
async fn command_to(
    tx: &mut TenantTx,
    target: Target,
    session: Option<Uuid>,
    command: &str,
    payload: serde_json::Value,
) -> Result<()> {
    if target.control == StationControl::Ocpp {
        // A charger is driven by the central system itself, not by the venue's bridge.
        return crate::charging::transactions::session_command(
            tx,
            target.station,
            session,
            command,
        )
        .await;
    }
    // A bridge-driven cabinet's eject for a rental has a deadline: past it, it is never sent (see
    // `crate::rentals::EJECT_DEADLINE_SECS`).
    let deadline =
        (target.control == StationControl::Cabinet && command == "eject" && session.is_some())
            .then_some(crate::rentals::EJECT_DEADLINE_SECS as f64);
    sqlx::query(
        "insert into device_command (tenant_id, id, station_id, session_id, command, payload, deadline_at)
         values ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
    )
    .bind(tx.tenant())
    .bind(Uuid::now_v7())
    .bind(target.station)
    .bind(session)
    .bind(command)
    .bind(payload)
    .bind(deadline)
    .execute(tx.conn())
    .await?;
    tx.wake_venue(target.venue).await
}

/// One billing tick of one session (see [`bill_batch`]).
pub async fn bill_tick(
    tx: &mut TenantTx,
    id: Uuid,
    now: DateTime<Utc>,
    tick: Duration,
) -> Result<i64> {
    Ok(bill_batch(tx, &[id], now, tick).await?.charged)
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Billed {
    pub sessions: usize,
    /// Sessions that were charged something (one journal each).
    pub charges: usize,
    pub charged: i64,
}

/// One billing tick of many sessions of this tenant: each active one is charged the delta up to `now` as its tick
/// `n`, gets its warnings, and its next tick is scheduled (at the next warning or the planned end when sooner than
/// `tick`); sessions past their planned end are ended; rentals that reach their buyout threshold are bought out.
/// Set-based: a fixed number of statements for the whole batch.
pub async fn bill_batch(
    tx: &mut TenantTx,
    ids: &[Uuid],
    now: DateTime<Utc>,
    tick: Duration,
) -> Result<Billed> {
    let locked = lock_active(tx, ids, None).await?;
    bill_locked(tx, locked, now, tick).await
}

/// [`bill_batch`] of those of `ids` that are still due at `now` (the workers' tick): a session another worker
/// billed since it was found due is passed over once its tick commits, so no tick is billed twice.
pub async fn bill_due(
    tx: &mut TenantTx,
    ids: &[Uuid],
    now: DateTime<Utc>,
    tick: Duration,
) -> Result<Billed> {
    let locked = lock_active(tx, ids, Some(now)).await?;
    bill_locked(tx, locked, now, tick).await
}

/// Locks the active sessions of `ids` (in id order), those due by `due_at` when given.
async fn lock_active(
    tx: &mut TenantTx,
    ids: &[Uuid],
    due_at: Option<DateTime<Utc>>,
) -> Result<Vec<Session>> {
    let sql = format!(
        "select {COLUMNS} from session
         where tenant_id = $1 and id = any($2) and status = 'active' and ($3::timestamptz is null or next_tick_at <= $3)
         order by id for update"
    );
    Ok(sqlx::query_as(&sql)
        .bind(tx.tenant())
        .bind(ids)
        .bind(due_at)
        .fetch_all(tx.conn())
        .await?)
}

async fn bill_locked(
    tx: &mut TenantTx,
    locked: Vec<Session>,
    now: DateTime<Utc>,
    tick: Duration,
) -> Result<Billed> {
    let tick = crate::tenants::billing_tick(tx, tick).await?;
    let mut billed = Billed::default();
    let (ending, running): (Vec<Session>, Vec<Session>) = locked
        .into_iter()
        .partition(|s| s.planned_end_at.is_some_and(|end| end <= now));
    for s in ending {
        let ended = stop(tx, None, s.id, now).await?;
        billed.sessions += 1;
        billed.charges += usize::from(ended.charged_amount > s.charged_amount);
        billed.charged += ended.charged_amount - s.charged_amount;
    }
    if running.is_empty() {
        return Ok(billed);
    }

    let charges: Vec<Charge<'_>> = running
        .iter()
        .map(|s| Charge {
            session: s,
            due: s.chargeable_at(now) - s.charged_amount,
            label: format!("tick:{}", s.ticks + 1),
        })
        .collect();
    let taken = post_charges(tx, &charges).await?;

    // One update per session and tick: what it was charged, its tick number and when it is next due. A session
    // bought out now gets its charge on its own; `buy_out` then ends it.
    let (mut ids, mut ticks, mut nexts, mut sents, mut amounts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut buyouts = Vec::new();
    for (s, charged) in running.iter().zip(taken) {
        billed.sessions += 1;
        billed.charges += usize::from(charged > 0);
        billed.charged += charged;
        if let (Some(_), Some(threshold)) = (s.asset_id, s.terms.buyout_threshold) {
            if s.charged_amount + charged >= threshold {
                buyouts.push((s.id, charged));
                continue;
            }
        }
        let mut sent = s.warnings_sent;
        let mut next = now + tick;
        if let Some(end) = s.planned_end_at {
            for (minutes, bit) in WARNINGS {
                let due = end - Duration::minutes(minutes);
                if sent & bit != 0 {
                    continue;
                }
                if due <= now {
                    warn(tx, s, minutes).await?;
                    sent |= bit;
                } else {
                    next = next.min(due);
                }
            }
            next = next.min(end);
        }
        ids.push(s.id);
        ticks.push(s.ticks + 1);
        nexts.push(next);
        sents.push(sent);
        amounts.push(charged);
    }
    sqlx::query(
        "update session s set charged_amount = s.charged_amount + t.amount, ticks = t.ticks, next_tick_at = t.next,
           warnings_sent = t.sent
         from unnest($2::uuid[], $3::bigint[], $4::int[], $5::timestamptz[], $6::smallint[])
           as t (id, amount, ticks, next, sent)
         where s.tenant_id = $1 and s.id = t.id",
    )
    .bind(tx.tenant())
    .bind(&ids)
    .bind(&amounts)
    .bind(&ticks)
    .bind(&nexts)
    .bind(&sents)
    .execute(tx.conn())
    .await?;
    for (id, charged) in buyouts {
        sqlx::query(
            "update session set charged_amount = charged_amount + $3 where tenant_id = $1 and id = $2",
        )
        .bind(tx.tenant())
        .bind(id)
        .bind(charged)
        .execute(tx.conn())
        .await?;
        crate::rentals::buy_out(tx, id, now).await?;
    }
    Ok(billed)
}

/// Warnings before a planned end: (minutes before, bit in `warnings_sent`).
const WARNINGS: [(i64, i16); 2] = [(5, 1), (1, 2)];

/// Tells the station's control (a PC agent shows it) that the session ends in `minutes`.
async fn warn(tx: &mut TenantTx, session: &Session, minutes: i64) -> Result<()> {
    announce(
        tx,
        session,
        "session.warned",
        serde_json::json!({ "minutes": minutes }),
    );
    let payload =
        serde_json::json!({ "minutes": minutes, "planned_end_at": session.planned_end_at });
    crate::notify::flows::session_warning(tx, session, minutes).await?;
    command(tx, session.station_id, Some(session.id), "warn", payload).await
}

/// Device commands written for a station, oldest first (what the edge bridge will consume).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeviceCommand {
    pub id: Uuid,
    pub session_id: Option<Uuid>,
    pub command: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// When a tunnel took it to send it to the venue's bridge (or when the workers closed it unsent).
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the bridge acknowledged it (an eject: when it passed it on to the cabinet), or the workers closed it.
    pub acked_at: Option<DateTime<Utc>>,
    /// `ok`, the bridge's error, or `expired` (closed unsent past its deadline).
    pub result: Option<String>,
    /// For a bridge-driven cabinet's eject: when its answer is due.
    pub deadline_at: Option<DateTime<Utc>>,
    /// An eject's answer: when, and what became of the powerbank — `ejected` / `not_ejected` (the cabinet's report,
    /// or the bridge's after a timeout), `expired` (never taken in time), `staff_ejected` / `staff_not_ejected`.
    pub answered_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// The station's latest `limit` (1–500) commands, oldest first.
pub async fn device_commands(
    tx: &mut TenantTx,
    station: Uuid,
    limit: i64,
) -> Result<Vec<DeviceCommand>> {
    Ok(sqlx::query_as(
        "select * from (
           select id, session_id, command, payload, created_at, delivered_at, acked_at, result, deadline_at,
                  answered_at, outcome from device_command
           where tenant_id = $1 and station_id = $2 order by created_at desc, id desc limit $3
         ) latest order by created_at, id",
    )
    .bind(tx.tenant())
    .bind(station)
    .bind(limit.clamp(1, 500))
    .fetch_all(tx.conn())
    .await?)
}

fn entry(action: &'static str, id: Uuid, detail: serde_json::Value) -> Entry<'static> {
    Entry {
        action,
        object_type: "session",
        object_id: Some(id),
        detail,
    }
}
