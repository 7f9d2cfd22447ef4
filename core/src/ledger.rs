//! The ledger: append-only double entry in integer minor units. Balances are always derived from entries.
//!
//! Sign convention: an entry's amount is added to its account's balance. A patron's `wallet` is positive when the
//! patron has money with us; `debt` is negative when the patron owes; a venue's `revenue` grows positive; money
//! arriving from outside (a venue's `cash_drawer`, card `clearing`) is the negative side of what it funds.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};

/// Who an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Patron(Uuid),
    Venue(Uuid),
}

/// What an account is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Wallet,
    DepositHold,
    Debt,
    Revenue,
    CashDrawer,
    Clearing,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Wallet => "wallet",
            Self::DepositHold => "deposit_hold",
            Self::Debt => "debt",
            Self::Revenue => "revenue",
            Self::CashDrawer => "cash_drawer",
            Self::Clearing => "clearing",
        }
    }
}

impl Owner {
    fn parts(self) -> (&'static str, Uuid) {
        match self {
            Self::Patron(id) => ("patron", id),
            Self::Venue(id) => ("venue", id),
        }
    }
}

/// The account of (owner, purpose, currency), created on first use.
pub async fn account(
    tx: &mut TenantTx,
    owner: Owner,
    purpose: Purpose,
    currency: &str,
) -> Result<Uuid> {
    let (kind, owner_id) = owner.parts();
    let tenant = tx.tenant();
    sqlx::query(
        "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
         values ($1, $2, $3, $4, $5, $6) on conflict (tenant_id, owner_kind, owner_id, purpose, currency) do nothing",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(kind)
    .bind(owner_id)
    .bind(purpose.as_str())
    .bind(currency)
    .execute(tx.conn())
    .await?;
    Ok(sqlx::query_scalar(
        "select id from ledger_account
         where tenant_id = $1 and owner_kind = $2 and owner_id = $3 and purpose = $4 and currency = $5",
    )
    .bind(tenant)
    .bind(kind)
    .bind(owner_id)
    .bind(purpose.as_str())
    .bind(currency)
    .fetch_one(tx.conn())
    .await?)
}

/// The balance of (owner, purpose, currency); zero for an account never used.
pub async fn balance(
    tx: &mut TenantTx,
    owner: Owner,
    purpose: Purpose,
    currency: &str,
) -> Result<i64> {
    let (kind, owner_id) = owner.parts();
    Ok(sqlx::query_scalar(
        "select coalesce(sum(e.amount), 0)::bigint from journal_entry e
         join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where a.tenant_id = $1 and a.owner_kind = $2 and a.owner_id = $3 and a.purpose = $4 and a.currency = $5",
    )
    .bind(tx.tenant())
    .bind(kind)
    .bind(owner_id)
    .bind(purpose.as_str())
    .bind(currency)
    .fetch_one(tx.conn())
    .await?)
}

/// A journal to post.
pub struct Journal<'a> {
    /// Unique per tenant: `session:<id>:tick:<n>`, `topup:<key>` ...
    pub key: String,
    pub kind: &'a str,
    pub memo: String,
    pub session_id: Option<Uuid>,
    pub currency: &'a str,
    /// (account, amount); zero amounts are dropped; the rest must sum to zero.
    pub entries: Vec<(Uuid, i64)>,
}

/// The outcome of [`post`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Written now.
    New(Uuid),
    /// A journal with this key already exists; nothing was written.
    Replay(Uuid),
}

/// Posts a balanced journal once. A second post with the same key writes nothing and answers `Replay`.
pub async fn post(tx: &mut TenantTx, journal: Journal<'_>) -> Result<Posted> {
    let entries: Vec<(Uuid, i64)> = journal
        .entries
        .into_iter()
        .filter(|(_, a)| *a != 0)
        .collect();
    let sum: i128 = entries.iter().map(|(_, a)| i128::from(*a)).sum();
    if sum != 0 {
        return Err(Error::Internal(anyhow::anyhow!(
            "journal {} does not balance ({sum})",
            journal.key
        )));
    }
    let tenant = tx.tenant();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into journal (tenant_id, id, idempotency_key, kind, memo, session_id) values ($1, $2, $3, $4, $5, $6)
         on conflict (tenant_id, idempotency_key) do nothing returning id",
    )
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(&journal.key)
    .bind(journal.kind)
    .bind(&journal.memo)
    .bind(journal.session_id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(id) = inserted else {
        let existing: Uuid = sqlx::query_scalar(
            "select id from journal where tenant_id = $1 and idempotency_key = $2",
        )
        .bind(tenant)
        .bind(&journal.key)
        .fetch_one(tx.conn())
        .await?;
        return Ok(Posted::Replay(existing));
    };
    if !entries.is_empty() {
        let lines: Vec<i16> = (1..=entries.len()).map(|n| n as i16).collect();
        let accounts: Vec<Uuid> = entries.iter().map(|(a, _)| *a).collect();
        let amounts: Vec<i64> = entries.iter().map(|(_, a)| *a).collect();
        sqlx::query(
            "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
             select $1, $2, line, account_id, amount, $6
             from unnest($3::smallint[], $4::uuid[], $5::bigint[]) as t (line, account_id, amount)",
        )
        .bind(tenant)
        .bind(id)
        .bind(&lines)
        .bind(&accounts)
        .bind(&amounts)
        .bind(journal.currency)
        .execute(tx.conn())
        .await?;
    }
    Ok(Posted::New(id))
}

/// One line of a patron's wallet statement.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StatementLine {
    pub journal_id: Uuid,
    pub kind: String,
    pub memo: String,
    pub session_id: Option<Uuid>,
    pub amount: i64,
    /// The wallet balance after this line.
    pub balance: i64,
    pub created_at: DateTime<Utc>,
}

/// The wallet's movements, newest first, with the running balance.
pub async fn wallet_statement(
    tx: &mut TenantTx,
    patron: Uuid,
    currency: &str,
    limit: i64,
) -> Result<Vec<StatementLine>> {
    Ok(sqlx::query_as(
        "select * from (
           select j.id as journal_id, j.kind, j.memo, j.session_id, e.amount,
                  sum(e.amount) over (order by j.created_at, j.id)::bigint as balance, j.created_at
           from journal_entry e
           join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
           join journal j on j.tenant_id = e.tenant_id and j.id = e.journal_id
           where a.tenant_id = $1 and a.owner_kind = 'patron' and a.owner_id = $2 and a.purpose = 'wallet'
             and a.currency = $3
         ) s order by created_at desc, journal_id desc limit $4",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
