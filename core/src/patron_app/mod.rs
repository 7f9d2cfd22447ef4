//! The patron app acting for itself: starting a session on a self-service station (by id or by its QR code),
//! paying from the wallet or the saved card; extending, pausing, resuming and stopping its own sessions; saving a
//! card and topping up by card; renting and returning a powerbank; checking in to a venue ([`checkins`]).
//!
//! Everything here goes through the same code staff use (`sessions`, `rentals`, `payments`): this module only
//! decides what a patron may reach. Another patron's session or check-in answers `not_found`, exactly like an
//! unknown id.

pub mod checkins;
pub mod qr;

use chrono::{Duration, Utc};
use uuid::Uuid;

use crate::audit::By;
use crate::db::TenantTx;
use crate::error::{Error, Result};
use crate::model::PatronActor;
use crate::payments::{self, cards, PaymentProvider};
use crate::rentals::{self, Asset};
use crate::sessions::{self, CardPrepay, Payment, Session, StartSession};
use crate::stations::{self, Station};

/// How long a patron's own rental quote lives: it is used at once.
const QUOTE_TTL_SECS: i64 = 60;

/// How the patron pays for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, async_graphql::Enum)]
#[serde(rename_all = "snake_case")]
pub enum PayWith {
    /// From the wallet: prepaid time must be covered, an open-ended session needs a positive balance.
    Wallet,
    /// The planned time's price is charged to the saved card now (into the wallet), then used like wallet money.
    Card,
}

/// The station a patron names: by id, or by the payload of the QR code printed on it (exactly one).
pub async fn station(
    tx: &mut TenantTx,
    id: Option<Uuid>,
    qr_payload: Option<&str>,
) -> Result<Station> {
    match (id, qr_payload) {
        (Some(id), None) => stations::get(tx, id).await,
        (None, Some(text)) => qr::station(tx, "qr", text).await,
        _ => Err(Error::validation(
            "stationId",
            "give either stationId or qr (the scanned code), not both",
        )),
    }
}

/// The patron's own session; `not_found` for anyone else's.
pub async fn own_session(tx: &mut TenantTx, me: &PatronActor, id: Uuid) -> Result<Session> {
    let session = sessions::get(tx, id).await?;
    if session.patron_id != me.patron_id {
        return Err(Error::NotFound("session"));
    }
    Ok(session)
}

/// What a patron asks to start.
pub struct StartMine<'a> {
    pub station: &'a Station,
    /// Planned minutes; `None` runs until stopped (wallet only).
    pub minutes: Option<i64>,
    pub pay_with: PayWith,
    /// The request's idempotency key: a card charge made for it is found again on a retry, never made twice.
    pub key: &'a str,
}

/// Starts a session for the patron on a self-service station, through the one start staff use too.
pub async fn start(
    tx: &mut TenantTx,
    me: &PatronActor,
    provider: &dyn PaymentProvider,
    mine: StartMine<'_>,
    tick: Duration,
) -> Result<Session> {
    let StartMine {
        station,
        minutes,
        pay_with,
        key,
    } = mine;
    if let Some(m) = minutes {
        if !(1..=sessions::MAX_MINUTES).contains(&m) {
            return Err(Error::validation(
                "minutes",
                format!("must be between 1 and {}", sessions::MAX_MINUTES),
            ));
        }
    }
    let input = StartSession {
        station_id: station.id,
        patron_id: Some(me.patron_id),
        duration_minutes: minutes,
        payment: Payment::Wallet,
    };
    let key = format!("patron:{}:{key}", me.patron_id);
    let card = (pay_with == PayWith::Card).then_some(CardPrepay {
        provider,
        key: &key,
    });
    sessions::start_by(tx, By::Patron(me), input, card, tick).await
}

/// What a patron may do to one of its running sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Extend(i64),
    Pause,
    Resume,
    Stop,
}

/// Extends, pauses, resumes or stops the patron's own session. A rental ends by returning its powerbank.
pub async fn act(
    tx: &mut TenantTx,
    me: &PatronActor,
    id: Uuid,
    act: Act,
    tick: Duration,
) -> Result<Session> {
    let session = own_session(tx, me, id).await?;
    let now = Utc::now();
    match act {
        Act::Extend(minutes) => sessions::extend(tx, me, id, minutes).await,
        Act::Pause if !session.terms.pausable => Err(Error::Forbidden(
            "this tariff does not let sessions be paused from the app; ask the staff",
        )),
        Act::Pause => sessions::pause(tx, me, id, now).await,
        Act::Resume => sessions::resume(tx, me, id, now, tick).await,
        Act::Stop if session.asset_id.is_some() => Err(Error::Conflict(
            "a rental ends when its powerbank is returned to a cabinet (returnMyPowerbank)".into(),
        )),
        Act::Stop => sessions::stop_by(tx, By::Patron(me), id, now).await,
    }
}

/// Rents a powerbank from a self-service cabinet: a quote used at once, then the seed 004 start (deposit from the
/// wallet, or held on the saved card, the hold keyed by the patron's idempotency `key`).
pub async fn rent(
    tx: &mut TenantTx,
    me: &PatronActor,
    provider: &dyn PaymentProvider,
    cabinet: &Station,
    tick: Duration,
    key: &str,
) -> Result<(Session, Asset)> {
    if !cabinet.self_service {
        return Err(Error::Forbidden(
            "this cabinet is not self-service: ask the staff for a powerbank",
        ));
    }
    let quote = rentals::quote(tx, me, me.patron_id, cabinet.id, QUOTE_TTL_SECS).await?;
    rentals::start(tx, me, provider, quote.id, tick, Some(key)).await
}

/// Returns the patron's own rental at a cabinet (any cabinet of the operator).
pub async fn return_powerbank(
    tx: &mut TenantTx,
    me: &PatronActor,
    rental_id: Uuid,
    cabinet: &Station,
) -> Result<Session> {
    let rental = match own_session(tx, me, rental_id).await {
        Err(Error::NotFound(_)) => return Err(Error::NotFound("rental")),
        other => other?,
    };
    if rental.asset_id.is_none() {
        return Err(Error::NotFound("rental"));
    }
    // A cabinet the bridge drives reports each powerbank put into it; the patron's word ends nothing there (it would
    // release the deposit for a powerbank still in the patron's pocket, and send the next renter to an empty slot).
    if cabinet.control == crate::model::StationControl::Cabinet && rental.is_running() {
        return Err(Error::Conflict(
            "this cabinet reports returns itself: put the powerbank into a free slot and the rental ends there".into(),
        ));
    }
    rentals::stop(tx, me, rental_id, cabinet.id).await
}

/// Saves the patron's card (a payment-method token its app got from the provider).
pub async fn save_card(
    tx: &mut TenantTx,
    me: &PatronActor,
    provider: &dyn PaymentProvider,
    payment_method: &str,
) -> Result<cards::Card> {
    cards::save(tx, me, provider, me.patron_id, payment_method).await
}

/// Tops the patron's wallet up at `venue` (its currency) by charging the saved card now.
pub async fn top_up(
    tx: &mut TenantTx,
    me: &PatronActor,
    provider: &dyn PaymentProvider,
    venue: Uuid,
    amount: i64,
    key: &str,
) -> Result<payments::Payment> {
    let key = format!("patron:{}:top-up:{key}", me.patron_id);
    cards::charge_to_wallet(
        tx,
        By::Patron(me),
        provider,
        me.patron_id,
        venue,
        amount,
        &key,
    )
    .await
}
