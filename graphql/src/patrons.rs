//! Patrons, RFID tags and wallets.

use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use switchyard_core::ledger::{self, Owner, Purpose};
use switchyard_core::patrons::{self, NewPatron};
use uuid::Uuid;

use crate::{begin, GqlResult, ManagerGuard};

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

#[ComplexObject]
impl Patron {
    async fn rfid_tags(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let (_, mut tx) = begin(ctx).await?;
        patrons::rfid_tags(&mut tx, self.id).await.gql()
    }

    /// The wallet in `currency` (ISO 4217), with its last `limit` movements.
    async fn wallet(
        &self,
        ctx: &Context<'_>,
        currency: String,
        #[graphql(default = 50)] limit: i64,
    ) -> async_graphql::Result<Wallet> {
        let (_, mut tx) = begin(ctx).await?;
        let owner = Owner::Patron(self.id);
        let balance = ledger::balance(&mut tx, owner, Purpose::Wallet, &currency)
            .await
            .gql()?;
        let deposit_held = ledger::balance(&mut tx, owner, Purpose::DepositHold, &currency)
            .await
            .gql()?;
        let debt = -ledger::balance(&mut tx, owner, Purpose::Debt, &currency)
            .await
            .gql()?;
        let statement = ledger::wallet_statement(&mut tx, self.id, &currency, limit.clamp(1, 500))
            .await
            .gql()?;
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

    /// Records cash taken at a venue into the patron's wallet. `idempotencyKey` makes a retried top-up count once.
    async fn top_up_cash(
        &self,
        ctx: &Context<'_>,
        patron_id: Uuid,
        venue_id: Uuid,
        amount: i64,
        idempotency_key: String,
    ) -> async_graphql::Result<Patron> {
        let (actor, mut tx) = begin(ctx).await?;
        let key = switchyard_core::idempotency::check_key(&idempotency_key)
            .gql()?
            .to_owned();
        patrons::top_up_cash(&mut tx, actor, patron_id, venue_id, amount, &key)
            .await
            .gql()?;
        let patron = patrons::get(&mut tx, patron_id).await.gql()?;
        tx.commit().await.gql()?;
        Ok(patron.into())
    }
}
