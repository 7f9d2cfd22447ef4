//! Patrons, RFID tags and wallets.

use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::idempotency::{self, Begin};
use switchyard_core::ledger::{self, Owner, Purpose};
use switchyard_core::patrons::{self, NewPatron};
use switchyard_core::payments::{self, cards};
use uuid::Uuid;

use crate::sessions::Session;
use crate::{begin, begin_for_patron, begin_patron, provider, GqlResult, ManagerGuard};

#[derive(SimpleObject)]
#[graphql(complex)]
pub struct Patron {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub tier: String,
    pub walk_in: bool,
    pub created_at: DateTime<Utc>,
}

impl From<patrons::Patron> for Patron {
    fn from(p: patrons::Patron) -> Self {
        Self {
            id: p.id,
            display_name: p.display_name,
            email: p.email,
            phone: p.phone,
            tier: p.tier,
            walk_in: p.walk_in,
            created_at: p.created_at,
        }
    }
}

/// A patron's money in one currency. Balances are derived from the ledger.
#[derive(SimpleObject)]
pub struct Wallet {
    pub currency: String,
    /// What the patron has with us.
    pub balance: i64,
    /// Held deposits.
    pub deposit_held: i64,
    /// What the patron owes (positive).
    pub debt: i64,
    /// Newest first, with the running balance.
    pub statement: Vec<StatementLine>,
}

#[derive(SimpleObject)]
pub struct StatementLine {
    pub journal_id: Uuid,
    pub kind: String,
    pub memo: String,
    pub session_id: Option<Uuid>,
    pub amount: i64,
    pub balance: i64,
    pub created_at: DateTime<Utc>,
}

/// A saved card (the provider keeps the card; we keep its reference).
#[derive(SimpleObject)]
pub struct Card {
    pub provider: String,
    pub brand: String,
    pub last4: String,
    pub saved_at: DateTime<Utc>,
}

/// A card payment: a top-up, an off-session debt charge or a rental's deposit hold.
#[derive(SimpleObject)]
pub struct CardPayment {
    pub id: Uuid,
    /// `top_up`, `debt` or `deposit`.
    pub kind: String,
    /// `pending`, `authorized` (a hold), `confirmed`, `failed` or `canceled`.
    pub status: String,
    pub amount: i64,
    /// What a deposit hold's capture took.
    pub captured_amount: i64,
    pub refunded_amount: i64,
    pub currency: String,
    pub session_id: Option<Uuid>,
    pub provider: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<payments::Payment> for CardPayment {
    fn from(p: payments::Payment) -> Self {
        Self {
            id: p.id,
            kind: p.kind,
            status: p.status,
            amount: p.amount,
            captured_amount: p.captured_amount,
            refunded_amount: p.refunded_amount,
            currency: p.currency,
            session_id: p.session_id,
            provider: p.provider,
            failure_reason: p.failure_reason,
            created_at: p.created_at,
        }
    }
}

/// Collection of what a patron owes in one currency.
#[derive(SimpleObject)]
pub struct DebtCollection {
    pub currency: String,
    /// `due` (being collected), `no_card` (waiting for a saved card) or `exhausted` (declined too often).
    pub status: String,
    /// Declined charges in a row.
    pub attempts: i32,
    pub collected: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(SimpleObject)]
pub struct Refund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

#[ComplexObject]
impl Patron {
    /// Whether staff flagged this patron (safety log); members only, `null` for the patron itself.
    async fn flagged(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<bool>> {
        Ok(crate::staff::flag_for_members(ctx, self.id)
            .await?
            .map(|f| f.is_some()))
    }

    /// Why staff flagged this patron; members only.
    async fn flag_reason(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(crate::staff::flag_for_members(ctx, self.id)
            .await?
            .flatten()
            .map(|f| f.reason))
    }

    /// The saved card of the configured provider, if any.
    async fn card(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Card>> {
        let mut tx = begin_for_patron(ctx, self.id).await?;
        let provider = provider(ctx, &mut tx).await?;
        let card = cards::get(&mut tx, self.id, provider.name()).await.gql()?;
        Ok(card.map(|c| Card {
            provider: c.provider,
            brand: c.brand,
            last4: c.last4,
            saved_at: c.created_at,
        }))
    }

    /// Card payments, newest first.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn payments(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: i64,
    ) -> async_graphql::Result<Vec<CardPayment>> {
        let mut tx = begin_for_patron(ctx, self.id).await?;
        // A member confined to some venues sees the payments made at those; the patron sees all of its own.
        let venues = match ctx.data_opt::<switchyard_core::model::PatronActor>() {
            Some(_) => None,
            None => crate::actor(ctx)?.venue_filter().map(<[Uuid]>::to_vec),
        };
        Ok(
            payments::list_for_patron(&mut tx, self.id, venues.as_deref(), limit)
                .await
                .gql()?
                .into_iter()
                .map(CardPayment::from)
                .collect(),
        )
    }

    /// Debts being collected (empty when the patron owes nothing).
    async fn debt_collection(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<DebtCollection>> {
        let (_, mut tx) = begin(ctx).await?;
        let rows = payments::collect::status_of(&mut tx, self.id).await.gql()?;
        Ok(rows
            .into_iter()
            .map(|d| DebtCollection {
                currency: d.currency,
                status: d.status,
                attempts: d.attempts,
                collected: d.collected,
                next_attempt_at: d.next_attempt_at,
                last_error: d.last_error,
            })
            .collect())
    }
    async fn rfid_tags(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let mut tx = begin_for_patron(ctx, self.id).await?;
        patrons::rfid_tags(&mut tx, self.id).await.gql()
    }

    /// The wallet in `currency` (ISO 4217), with its last `limit` movements.
    async fn wallet(
        &self,
        ctx: &Context<'_>,
        currency: String,
        #[graphql(default = 50)] limit: i64,
    ) -> async_graphql::Result<Wallet> {
        let mut tx = begin_for_patron(ctx, self.id).await?;
        let limit = statement_rows(ctx, limit);
        wallet_of(&mut tx, self.id, currency, limit).await
    }
}

#[derive(InputObject)]
pub struct CreatePatronInput {
    pub display_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Membership tier (tariffs may discount it); `standard` when omitted.
    pub tier: Option<String>,
}

#[derive(Default)]
pub struct PatronQuery;

#[Object]
impl PatronQuery {
    /// Patrons by name, optionally matching `search` in name or email.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn patrons(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<Patron>> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(patrons::list(&mut tx, search.as_deref(), limit)
            .await
            .gql()?
            .into_iter()
            .map(Patron::from)
            .collect())
    }

    async fn patron(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Patron> {
        let (_, mut tx) = begin(ctx).await?;
        Ok(patrons::get(&mut tx, id).await.gql()?.into())
    }

    /// The signed-in patron (patron app): its profile, and through it its wallet, card and payments.
    async fn my_profile(&self, ctx: &Context<'_>) -> async_graphql::Result<Patron> {
        let (me, mut tx) = begin_patron(ctx).await?;
        Ok(patrons::get(&mut tx, me.patron_id).await.gql()?.into())
    }

    /// The signed-in patron's sessions and rentals, newest first.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn my_sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: i64,
    ) -> async_graphql::Result<Vec<Session>> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let filter = switchyard_core::sessions::SessionFilter {
            status: None,
            station_id: None,
            patron_id: Some(me.patron_id),
            ..Default::default()
        };
        Ok(switchyard_core::sessions::list(&mut tx, &filter, limit)
            .await
            .gql()?
            .into_iter()
            .map(Session)
            .collect())
    }

    /// The signed-in patron's wallet in `currency`, with its statement.
    async fn my_wallet(
        &self,
        ctx: &Context<'_>,
        currency: String,
        #[graphql(default = 50)] limit: i64,
    ) -> async_graphql::Result<Wallet> {
        let (me, mut tx) = begin_patron(ctx).await?;
        let limit = statement_rows(ctx, limit);
        wallet_of(&mut tx, me.patron_id, currency, limit).await
    }
}

#[derive(Default)]
pub struct PatronMutation;

#[Object]
impl PatronMutation {
    /// Staff register a patron.
    async fn create_patron(
        &self,
        ctx: &Context<'_>,
        input: CreatePatronInput,
    ) -> async_graphql::Result<Patron> {
        let (actor, mut tx) = begin(ctx).await?;
        let input = NewPatron {
            display_name: input.display_name,
            email: input.email,
            phone: input.phone,
            tier: input.tier,
        };
        let patron = patrons::create(&mut tx, actor, input, false).await.gql()?;
        tx.commit().await.gql()?;
        Ok(patron.into())
    }

    #[graphql(guard = "ManagerGuard")]
    async fn set_patron_tier(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        tier: String,
    ) -> async_graphql::Result<Patron> {
        let (actor, mut tx) = begin(ctx).await?;
        let patron = patrons::set_tier(&mut tx, actor, id, &tier).await.gql()?;
        tx.commit().await.gql()?;
        Ok(patron.into())
    }

    /// Saves a card for off-session charges (debts) and deposit holds: `paymentMethod` is the token the patron's
    /// app got from the provider (Stripe: a `pm_…` id). Replaces any saved card and restarts debt collection.
    async fn save_patron_card(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        payment_method: String,
    ) -> async_graphql::Result<Patron> {
        let (actor, mut tx) = begin(ctx).await?;
        let provider = provider(ctx, &mut tx).await?;
        cards::save(
            &mut tx,
            actor,
            provider.as_ref(),
            patron_id,
            &payment_method,
        )
        .await
        .gql()?;
        let patron = patrons::get(&mut tx, patron_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(patron.into())
    }

    /// Refunds `amount` of a confirmed card top-up to the card (taking it out of the wallet). Managers and owners.
    #[graphql(guard = "ManagerGuard")]
    async fn refund_payment(
        &self,
        ctx: &Context<'_>,
        payment_id: Uuid,
        amount: i64,
        idempotency_key: String,
    ) -> async_graphql::Result<Refund> {
        let (actor, mut tx) = begin(ctx).await?;
        // The account that took the payment gives it back.
        let provider = ctx
            .data::<switchyard_core::payments::accounts::Providers>()?
            .for_payment(&mut tx, payment_id)
            .await
            .gql()?;
        let refund = payments::refund(
            &mut tx,
            actor,
            provider.as_ref(),
            payment_id,
            amount,
            &idempotency_key,
        )
        .await
        .gql()?;
        tx.commit().await.gql()?;
        Ok(Refund {
            id: refund.id,
            payment_id: refund.payment_id,
            amount: refund.amount,
            created_at: refund.created_at,
        })
    }

    /// Links an RFID tag (unique per tenant) to a patron.
    async fn add_rfid_tag(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        uid: String,
    ) -> async_graphql::Result<Patron> {
        let (actor, mut tx) = begin(ctx).await?;
        patrons::add_rfid_tag(&mut tx, actor, patron_id, &uid)
            .await
            .gql()?;
        let patron = patrons::get(&mut tx, patron_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(patron.into())
    }

    /// Records cash taken at a venue into the patron's wallet. `idempotencyKey` makes a retried top-up count once;
    /// the same key with another patron, venue or amount is refused (`idempotency_key_reused`). STAFF may take at
    /// most the tenant's `staffCashTopUpCap` at once.
    async fn top_up_cash(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        venue_id: Uuid,
        amount: i64,
        idempotency_key: String,
    ) -> async_graphql::Result<Patron> {
        let (actor, mut tx) = begin(ctx).await?;
        actor.check_venue(venue_id, "venue").gql()?;
        let key = idempotency::check_key(&idempotency_key).gql()?.to_owned();
        // The request store REST uses: the same key replays only the same request.
        let scope = "graphql.topUpCash";
        let request =
            serde_json::json!({ "patron_id": patron_id, "venue_id": venue_id, "amount": amount });
        let fingerprint = idempotency::fingerprint_by(actor.user_id, &request);
        if let Begin::Replay { .. } = idempotency::begin(&mut tx, scope, &key, &fingerprint)
            .await
            .gql()?
        {
            return Ok(patrons::get(&mut tx, patron_id).await.gql()?.into());
        }
        patrons::top_up_cash(&mut tx, actor, patron_id, venue_id, amount, &key)
            .await
            .gql()?;
        idempotency::finish(&mut tx, scope, &key, 200, &request)
            .await
            .gql()?;
        let patron = patrons::get(&mut tx, patron_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(patron.into())
    }
}

/// How many statement lines a wallet reads: none unless `statement` is selected, else `limit` (1 to 500).
fn statement_rows(ctx: &Context<'_>, limit: i64) -> i64 {
    if ctx.look_ahead().field("statement").exists() {
        limit.clamp(1, 500)
    } else {
        0
    }
}

/// A patron's wallet in `currency` with its last `limit` movements (none for 0), from the ledger.
async fn wallet_of(
    tx: &mut switchyard_core::TenantTx,
    patron: Uuid,
    currency: String,
    limit: i64,
) -> async_graphql::Result<Wallet> {
    let owner = Owner::Patron(patron);
    let balance = ledger::balance(tx, owner, Purpose::Wallet, &currency)
        .await
        .gql()?;
    let deposit_held = ledger::balance(tx, owner, Purpose::DepositHold, &currency)
        .await
        .gql()?;
    let debt = -ledger::balance(tx, owner, Purpose::Debt, &currency)
        .await
        .gql()?;
    let statement = match limit {
        0 => Vec::new(),
        limit => ledger::wallet_statement(tx, patron, &currency, limit)
            .await
            .gql()?,
    };
    Ok(Wallet {
        currency,
        balance,
        deposit_held,
        debt,
        statement: statement
            .into_iter()
            .map(|l| StatementLine {
                journal_id: l.journal_id,
                kind: l.kind,
                memo: l.memo,
                session_id: l.session_id,
                amount: l.amount,
                balance: l.balance,
                created_at: l.created_at,
            })
            .collect(),
    })
}
