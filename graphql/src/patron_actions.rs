//! What a signed-in patron does in its app: start a session on a self-service station (by id or QR code), extend,
//! pause, resume and stop its own sessions, save a card and top up by card, rent and return a powerbank. Every
//! money-moving mutation takes an idempotency key: a retry or a concurrent duplicate replays the first answer.

use async_graphql::{Context, Object};
use serde_json::{json, Value};
use switchyard_core::idempotency::{self, Begin};
use switchyard_core::patron_app::{self, Act, PayWith};
use switchyard_core::{payments, sessions, PatronActor, TenantTx};
use uuid::Uuid;

use crate::patrons::{Card, CardPayment};
use crate::sessions::{BillingTick, Session};
use crate::{begin_patron, provider, GqlResult};

/// The idempotency scope of one patron's operation: keys of different patrons never meet.
fn scope(me: &PatronActor, operation: &str) -> String {
    format!("graphql.patron.{operation}:{}", me.patron_id)
}

/// `Some(id)` of what the first request with `key` made (a replay), or `None`: run it, then [`remember`]. A
/// concurrent duplicate waits here for the first to commit. The same key with another request is refused.
async fn replayed(
    tx: &mut TenantTx,
    scope: &str,
    key: &str,
    request: &Value,
) -> async_graphql::Result<Option<Uuid>> {
    let fingerprint = idempotency::fingerprint(request);
    match idempotency::begin(tx, scope, key, &fingerprint)
        .await
        .gql()?
    {
        Begin::Fresh => Ok(None),
        Begin::Replay { body, .. } => Ok(Some(
            body["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_default(),
        )),
    }
}

async fn remember(
    tx: &mut TenantTx,
    scope: &str,
    key: &str,
    id: Uuid,
) -> async_graphql::Result<()> {
    idempotency::finish(tx, scope, key, 200, &json!({ "id": id }))
        .await
        .gql()
}

#[derive(Default)]
pub struct PatronActionQuery;

#[Object]
impl PatronActionQuery {
    /// One of the signed-in patron's sessions or rentals, with its live cost (`not_found` for anyone else's).
    async fn my_session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Session> {
        let (me, mut tx) = begin_patron(ctx).await?;
        Ok(Session(
            patron_app::own_session(&mut tx, me, id).await.gql()?,
        ))
    }
}

#[derive(Default)]
pub struct PatronActionMutation;

#[Object]
impl PatronActionMutation {
    /// Starts a session on a self-service station, named by `stationId` or by `qr` (the payload of the code on
    /// the station). `minutes` plans a prepaid session (required with `CARD`); without it the session runs until
    /// stopped and is billed from the wallet as it goes. A retry or a concurrent duplicate with the same
    /// `idempotencyKey` returns the same session and charges once.
    async fn start_my_session(
        &self,
        ctx: &Context<'_>,
        station_id: Option<Uuid>,
        qr: Option<String>,
        minutes: Option<i64>,
        pay_with: PayWith,
        idempotency_key: String,
    ) -> async_graphql::Result<Session> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let tick = ctx.data::<BillingTick>()?.0;
        let key = idempotency::check_key(&idempotency_key).gql()?;
        let station = patron_app::station(&mut tx, station_id, qr.as_deref())
            .await
            .gql()?;
        let request = json!({ "station_id": station.id, "minutes": minutes, "pay_with": pay_with });
        let scope = scope(me, "startMySession");
        if let Some(id) = replayed(&mut tx, &scope, key, &request).await? {
            return Ok(Session(sessions::get(&mut tx, id).await.gql()?));
        }
        let mine = patron_app::StartMine {
            station: &station,
            minutes,
            pay_with,
            key,
        };
        let provider = provider(ctx, &mut tx).await?;
        let session = patron_app::start(&mut tx, me, provider.as_ref(), mine, tick)
            .await
            .gql()?;
        remember(&mut tx, &scope, key, session.id).await?;
        tx.commit().await.gql()?;
        Ok(Session(session))
    }

    /// Adds minutes to one of the patron's timed sessions, if the wallet covers the longer plan. With
    /// `idempotencyKey`, a retry extends once.
    async fn extend_my_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        minutes: i64,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Session> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let tick = ctx.data::<BillingTick>()?.0;
        let scope = scope(me, "extendMySession");
        let key = idempotency_key
            .as_deref()
            .map(idempotency::check_key)
            .transpose()
            .gql()?;
        if let Some(key) = key {
            let request = json!({ "id": id, "minutes": minutes });
            if replayed(&mut tx, &scope, key, &request).await?.is_some() {
                return Ok(Session(
                    patron_app::own_session(&mut tx, me, id).await.gql()?,
                ));
            }
        }
        let session = patron_app::act(&mut tx, me, id, Act::Extend(minutes), tick)
            .await
            .gql()?;
        if let Some(key) = key {
            remember(&mut tx, &scope, key, id).await?;
        }
        tx.commit().await.gql()?;
        Ok(Session(session))
    }

    /// Pauses one of the patron's running sessions (not a rental): the station switches off and the time is not
    /// billed. Pausing a paused session returns it unchanged.
    async fn pause_my_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Session> {
        act(ctx, id, Act::Pause).await
    }

    /// Resumes one of the patron's paused sessions; its planned end moves later by the pause.
    async fn resume_my_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Session> {
        act(ctx, id, Act::Resume).await
    }

    /// Stops one of the patron's sessions now and settles it (a rental ends by returning its powerbank). Stopping
    /// it again returns it unchanged.
    async fn stop_my_session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Session> {
        act(ctx, id, Act::Stop).await
    }

    /// Saves the patron's card: `paymentMethod` is the token the app got from the payment provider (Stripe: a
    /// `pm_…` id). Replaces any saved card.
    async fn save_my_card(
        &self,
        ctx: &Context<'_>,
        payment_method: String,
    ) -> async_graphql::Result<Card> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let provider = provider(ctx, &mut tx).await?;
        let card = patron_app::save_card(&mut tx, me, provider.as_ref(), &payment_method)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Card {
            provider: card.provider,
            brand: card.brand,
            last4: card.last4,
            saved_at: card.created_at,
        })
    }

    /// Tops the wallet up by `amount` (minor units of `venueId`'s currency), charged to the saved card now. A
    /// retry with the same `idempotencyKey` returns the same payment and charges once; a declined card answers
    /// `card_declined` and credits nothing.
    async fn top_up_my_wallet(
        &self,
        ctx: &Context<'_>,
        venue_id: Uuid,
        amount: i64,
        idempotency_key: String,
    ) -> async_graphql::Result<CardPayment> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let key = idempotency::check_key(&idempotency_key).gql()?;
        let request = json!({ "venue_id": venue_id, "amount": amount });
        let scope = scope(me, "topUpMyWallet");
        if let Some(id) = replayed(&mut tx, &scope, key, &request).await? {
            return Ok(payments::get(&mut tx, id).await.gql()?.into());
        }
        let provider = provider(ctx, &mut tx).await?;
        let payment = patron_app::top_up(&mut tx, me, provider.as_ref(), venue_id, amount, key)
            .await
            .gql()?;
        remember(&mut tx, &scope, key, payment.id).await?;
        tx.commit().await.gql()?;
        Ok(payment.into())
    }

    /// Rents a powerbank from a self-service cabinet (by `stationId` or its `qr`): the deposit comes from the
    /// wallet, or is held on the saved card when the wallet does not cover it; billing runs until it is returned.
    /// A retry with the same `idempotencyKey` returns the same rental.
    async fn rent_my_powerbank(
        &self,
        ctx: &Context<'_>,
        station_id: Option<Uuid>,
        qr: Option<String>,
        idempotency_key: String,
    ) -> async_graphql::Result<Session> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let tick = ctx.data::<BillingTick>()?.0;
        let key = idempotency::check_key(&idempotency_key).gql()?;
        let cabinet = patron_app::station(&mut tx, station_id, qr.as_deref())
            .await
            .gql()?;
        let request = json!({ "station_id": cabinet.id });
        let scope = scope(me, "rentMyPowerbank");
        if let Some(id) = replayed(&mut tx, &scope, key, &request).await? {
            return Ok(Session(sessions::get(&mut tx, id).await.gql()?));
        }
        let provider = provider(ctx, &mut tx).await?;
        let (rental, _) = patron_app::rent(&mut tx, me, provider.as_ref(), &cabinet, tick, key)
            .await
            .gql()?;
        remember(&mut tx, &scope, key, rental.id).await?;
        tx.commit().await.gql()?;
        Ok(Session(rental))
    }

    /// Returns the patron's powerbank to a cabinet (by `stationId` or its `qr`; any cabinet of the operator): the
    /// rental ends, is charged, and the deposit is released. Returning it again returns the ended rental.
    async fn return_my_powerbank(
        &self,
        ctx: &Context<'_>,
        rental_id: Uuid,
        station_id: Option<Uuid>,
        qr: Option<String>,
    ) -> async_graphql::Result<Session> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let cabinet = patron_app::station(&mut tx, station_id, qr.as_deref())
            .await
            .gql()?;
        let rental = patron_app::return_powerbank(&mut tx, me, rental_id, &cabinet)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Session(rental))
    }
}

async fn act(ctx: &Context<'_>, id: Uuid, act: Act) -> async_graphql::Result<Session> {
    let (me, mut tx) = begin_patron(ctx).await?;
    let tick = ctx.data::<BillingTick>()?.0;
    let session = patron_app::act(&mut tx, me, id, act, tick).await.gql()?;
    tx.commit().await.gql()?;
    Ok(Session(session))
}
