//! The ledger: append-only double entry in integer minor units. Balances are always derived from entries.
//!
//! Sign convention: an entry's amount is added to its account's balance. A patron's `wallet` is positive when the
//! patron has money with us; `debt` is negative when the patron owes; a venue's `revenue` grows positive; money
//! arriving from outside (a venue's `cash_drawer`, card `clearing`) is the negative side of what it funds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::TenantTx;
use crate::error::{Error, Result};

/// Who an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Patron(Uuid),
    Venue(Uuid),
}

/// What an account is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Wallet,
    DepositHold,
    Debt,
    Revenue,
    CashDrawer,
    Clearing,
}

impl Purpose {
    const ALL: [Purpose; 6] = [
        Self::Wallet,
        Self::DepositHold,
        Self::Debt,
        Self::Revenue,
        Self::CashDrawer,
        Self::Clearing,
    ];

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

/// An account's natural key.
pub type AccountKey = (Owner, Purpose, String);

/// The account of (owner, purpose, currency), created on first use.
pub async fn account(
    tx: &mut TenantTx,
    owner: Owner,
    purpose: Purpose,
    currency: &str,
) -> Result<Uuid> {
    let key = (owner, purpose, currency.to_owned());
    let ids = accounts(tx, std::slice::from_ref(&key)).await?;
    ids.get(&key)
        .copied()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("account {key:?} was not created")))
}

/// The accounts of many keys at once, created on first use: one statement when they all exist (the usual case),
/// three when some must be created, whatever their number.
pub async fn accounts(tx: &mut TenantTx, keys: &[AccountKey]) -> Result<HashMap<AccountKey, Uuid>> {
    let kinds: Vec<&str> = keys.iter().map(|(o, _, _)| o.parts().0).collect();
    let owners: Vec<Uuid> = keys.iter().map(|(o, _, _)| o.parts().1).collect();
    let purposes: Vec<&str> = keys.iter().map(|(_, p, _)| p.as_str()).collect();
    let currencies: Vec<&str> = keys.iter().map(|(_, _, c)| c.as_str()).collect();
    let columns = (&kinds[..], &owners[..], &purposes[..], &currencies[..]);
    let found = existing_accounts(tx, columns).await?;
    if keys.iter().all(|k| found.contains_key(k)) {
        return Ok(found);
    }
    sqlx::query(
        "insert into ledger_account (tenant_id, id, owner_kind, owner_id, purpose, currency)
         select $1, gen_random_uuid(), k, o, p, c
         from unnest($2::text[], $3::uuid[], $4::text[], $5::text[]) as t (k, o, p, c)
         order by k, o, p, c
         on conflict (tenant_id, owner_kind, owner_id, purpose, currency) do nothing",
    )
    .bind(tx.tenant())
    .bind(&kinds)
    .bind(&owners)
    .bind(&purposes)
    .bind(&currencies)
    .execute(tx.conn())
    .await?;
    existing_accounts(tx, columns).await
}

/// The accounts that exist of the keys given as columns (owner kinds, owners, purposes, currencies).
async fn existing_accounts(
    tx: &mut TenantTx,
    (kinds, owners, purposes, currencies): (&[&str], &[Uuid], &[&str], &[&str]),
) -> Result<HashMap<AccountKey, Uuid>> {
    let rows: Vec<(Uuid, String, Uuid, String, String)> = sqlx::query_as(
        "select a.id, a.owner_kind, a.owner_id, a.purpose, a.currency::text from ledger_account a
         join unnest($2::text[], $3::uuid[], $4::text[], $5::text[]) as t (k, o, p, c)
           on a.owner_kind = t.k and a.owner_id = t.o and a.purpose = t.p and a.currency = t.c::bpchar
         where a.tenant_id = $1",
    )
    .bind(tx.tenant())
    .bind(kinds)
    .bind(owners)
    .bind(purposes)
    .bind(currencies)
    .fetch_all(tx.conn())
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for (id, kind, owner_id, purpose, currency) in rows {
        let owner = if kind == "patron" {
            Owner::Patron(owner_id)
        } else {
            Owner::Venue(owner_id)
        };
        if let Some(purpose) = Purpose::ALL.into_iter().find(|p| p.as_str() == purpose) {
            out.insert((owner, purpose, currency), id);
        }
    }
    Ok(out)
}

/// Serialises every movement out of these accounts until the transaction ends: a debit that checks a balance first
/// (a refund, a session charge, a deposit hold) takes the lock, then reads the balance, so two of them cannot both
/// spend the same money. The ledger is append-only (the app role may not update `ledger_account`, so it cannot
/// `select .. for update` it): the lock is a transaction-scoped advisory lock per account, taken in id order so that
/// two transactions locking several accounts cannot deadlock. A hash collision only makes two unrelated
/// transactions wait for each other.
pub async fn lock(tx: &mut TenantTx, accounts: &[Uuid]) -> Result<()> {
    if accounts.is_empty() {
        return Ok(());
    }
    let mut ids = accounts.to_vec();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query(
        "select count(pg_advisory_xact_lock(hashtextextended('ledger_account:' || a::text, 0)))
         from (select a from unnest($1::uuid[]) as t (a) order by a) s",
    )
    .bind(&ids)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// How much of `amount` paid towards a patron's debt the debt takes: what is still owed, at most `amount` (the rest
/// belongs in the wallet). Locks the patron's wallet, then its debt (see [`lock`]), so that two payments of one debt
/// cannot both see it unpaid; always in that order, as a debit of the wallet that then pays debt takes them, so
/// that the two cannot deadlock. Returns the share with the debt and wallet accounts.
pub async fn debt_share(
    tx: &mut TenantTx,
    patron: Uuid,
    currency: &str,
    amount: i64,
) -> Result<(i64, Uuid, Uuid)> {
    let owner = Owner::Patron(patron);
    let debt = account(tx, owner, Purpose::Debt, currency).await?;
    let wallet = account(tx, owner, Purpose::Wallet, currency).await?;
    lock(tx, &[wallet]).await?;
    lock(tx, &[debt]).await?;
    let owed = -balance(tx, owner, Purpose::Debt, currency).await?;
    Ok((amount.min(owed).max(0), debt, wallet))
}

/// The balances of many patron accounts at once (kept per account, migration 0040); an account without a movement
/// yet is missing (zero).
pub async fn patron_balances(tx: &mut TenantTx, accounts: &[Uuid]) -> Result<HashMap<Uuid, i64>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select account_id, balance from ledger_balance where tenant_id = $1 and account_id = any($2)",
    )
    .bind(tx.tenant())
    .bind(accounts)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().collect())
}

/// The balance of (owner, purpose, currency); zero for an account never used. A patron's is kept per account
/// (one probe); a venue's is kept by the rollup pass, plus the entries of the journals still queued for it.
pub async fn balance(
    tx: &mut TenantTx,
    owner: Owner,
    purpose: Purpose,
    currency: &str,
) -> Result<i64> {
    let (kind, owner_id) = owner.parts();
    let sql = match owner {
        Owner::Patron(_) => {
            "select coalesce((select b.balance from ledger_account a
               join ledger_balance b on b.tenant_id = a.tenant_id and b.account_id = a.id
               where a.tenant_id = $1 and a.owner_kind = $2 and a.owner_id = $3 and a.purpose = $4
                 and a.currency = $5), 0)::bigint"
        }
        // Kept by the rollup pass, plus the entries of journals it has not taken yet (migration 0042): one snapshot
        // sees each journal on exactly one side.
        Owner::Venue(_) => {
            "select coalesce((
               select coalesce((select b.balance from ledger_venue_balance b
                                 where b.tenant_id = a.tenant_id and b.account_id = a.id), 0)
                    + coalesce((select sum(e.amount) from analytics_journal_queue q
                                  join journal_entry e on e.tenant_id = q.tenant_id and e.journal_id = q.journal_id
                                 where q.tenant_id = a.tenant_id and e.account_id = a.id), 0)
               from ledger_account a
               where a.tenant_id = $1 and a.owner_kind = $2 and a.owner_id = $3 and a.purpose = $4
                 and a.currency = $5), 0)::bigint"
        }
    };
    Ok(sqlx::query_scalar(sql)
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
    let mut posted = post_many(tx, vec![journal]).await?;
    posted
        .pop()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no journal posted")))
}

/// Posts many balanced journals with two multi-row statements; each key is written once, whatever the retries.
/// Answers in the order given.
pub async fn post_many(tx: &mut TenantTx, journals: Vec<Journal<'_>>) -> Result<Vec<Posted>> {
    let tenant = tx.tenant();
    for journal in &journals {
        let sum: i128 = journal.entries.iter().map(|(_, a)| i128::from(*a)).sum();
        if sum != 0 {
            return Err(Error::Internal(anyhow::anyhow!(
                "journal {} does not balance ({sum})",
                journal.key
            )));
        }
    }
    let ids: Vec<Uuid> = journals.iter().map(|_| Uuid::now_v7()).collect();
    let keys: Vec<&str> = journals.iter().map(|j| j.key.as_str()).collect();
    let kinds: Vec<&str> = journals.iter().map(|j| j.kind).collect();
    let memos: Vec<&str> = journals.iter().map(|j| j.memo.as_str()).collect();
    let sessions: Vec<Option<Uuid>> = journals.iter().map(|j| j.session_id).collect();
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "insert into journal (tenant_id, id, idempotency_key, kind, memo, session_id)
         select $1, id, k, kind, memo, s
         from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[]) as t (id, k, kind, memo, s)
         on conflict (tenant_id, idempotency_key) do nothing returning id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&keys)
    .bind(&kinds)
    .bind(&memos)
    .bind(&sessions)
    .fetch_all(tx.conn())
    .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();

    let (mut e_journal, mut e_line, mut e_account, mut e_amount, mut e_currency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut replayed = Vec::new();
    for (journal, id) in journals.iter().zip(&ids) {
        if !inserted.contains(id) {
            replayed.push(journal.key.as_str());
            continue;
        }
        let mut line = 0i16;
        for (account, amount) in journal.entries.iter().filter(|(_, a)| *a != 0) {
            line += 1;
            e_journal.push(*id);
            e_line.push(line);
            e_account.push(*account);
            e_amount.push(*amount);
            e_currency.push(journal.currency);
        }
    }
    if !e_journal.is_empty() {
        sqlx::query(
            "insert into journal_entry (tenant_id, journal_id, line, account_id, amount, currency)
             select $1, j, l, a, m, c from unnest($2::uuid[], $3::smallint[], $4::uuid[], $5::bigint[], $6::text[])
               as t (j, l, a, m, c)",
        )
        .bind(tenant)
        .bind(&e_journal)
        .bind(&e_line)
        .bind(&e_account)
        .bind(&e_amount)
        .bind(&e_currency)
        .execute(tx.conn())
        .await?;
    }
    announce_patron_changes(tx, &journals, &ids, &inserted).await?;
    let existing: HashMap<String, Uuid> = if replayed.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as::<_, (String, Uuid)>(
            "select idempotency_key, id from journal where tenant_id = $1 and idempotency_key = any($2)",
        )
        .bind(tenant)
        .bind(&replayed)
        .fetch_all(tx.conn())
        .await?
        .into_iter()
        .collect()
    };
    Ok(journals
        .iter()
        .zip(ids)
        .map(|(journal, id)| {
            if inserted.contains(&id) {
                Posted::New(id)
            } else {
                Posted::Replay(existing.get(&journal.key).copied().unwrap_or(id))
            }
        })
        .collect())
}

/// Tells live subscribers whose money moved: one `wallet.changed` event per patron, kind of journal and currency
/// among the new journals, with the change of each of the patron's accounts (wallet, debt, deposit hold) summed over
/// them, their ids (`journalIds`) and sessions (`sessionIds`); `journalId`, `memo` and `sessionId` are those of the
/// journal when there is one (a billing tick of a patron paying for several sessions posts several at once).
/// Subscribers add the changes to the balances they read, or read them again.
async fn announce_patron_changes(
    tx: &mut TenantTx,
    journals: &[Journal<'_>],
    ids: &[Uuid],
    inserted: &std::collections::HashSet<Uuid>,
) -> Result<()> {
    let accounts: Vec<Uuid> = journals
        .iter()
        .zip(ids)
        .filter(|(_, id)| inserted.contains(id))
        .flat_map(|(j, _)| {
            j.entries
                .iter()
                .filter(|(_, a)| *a != 0)
                .map(|(acc, _)| *acc)
        })
        .collect();
    if accounts.is_empty() {
        return Ok(());
    }
    let owners: HashMap<Uuid, (Uuid, String)> = sqlx::query_as::<_, (Uuid, Uuid, String)>(
        "select id, owner_id, purpose from ledger_account
         where tenant_id = $1 and id = any($2) and owner_kind = 'patron'",
    )
    .bind(tx.tenant())
    .bind(&accounts)
    .fetch_all(tx.conn())
    .await?
    .into_iter()
    .map(|(id, owner, purpose)| (id, (owner, purpose)))
    .collect();
    /// One event's worth: a patron's changes from journals of one kind and currency.
    #[derive(Default)]
    struct Moved<'a> {
        journals: Vec<(Uuid, &'a Journal<'a>)>,
        changes: serde_json::Map<String, serde_json::Value>,
    }
    let mut moved: Vec<((Uuid, &str, &str), Moved<'_>)> = Vec::new();
    let mut position: HashMap<(Uuid, &str, &str), usize> = HashMap::new();
    for (journal, id) in journals.iter().zip(ids) {
        if !inserted.contains(id) {
            continue;
        }
        for (account, amount) in &journal.entries {
            let (Some((patron, purpose)), true) = (owners.get(account), *amount != 0) else {
                continue;
            };
            let group = (*patron, journal.kind, journal.currency);
            let at = *position.entry(group).or_insert_with(|| {
                moved.push((group, Moved::default()));
                moved.len() - 1
            });
            let m = &mut moved[at].1;
            if m.journals.last().map(|(j, _)| j) != Some(id) {
                m.journals.push((*id, journal));
            }
            let sum = m.changes.get(purpose).and_then(|v| v.as_i64()).unwrap_or(0) + amount;
            m.changes.insert(purpose.clone(), sum.into());
        }
    }
    for ((patron, kind, currency), m) in moved {
        let single = match m.journals.as_slice() {
            [(id, journal)] => Some((*id, *journal)),
            _ => None,
        };
        let mut sessions: Vec<Uuid> = m
            .journals
            .iter()
            .filter_map(|(_, j)| j.session_id)
            .collect();
        sessions.sort_unstable();
        sessions.dedup();
        let mut event = crate::events::NewEvent::new(
            "wallet.changed",
            serde_json::json!({
                "journalId": single.map(|(id, _)| id),
                "memo": single.map(|(_, j)| j.memo.as_str()),
                "sessionId": single.and_then(|(_, j)| j.session_id),
                "journalIds": m.journals.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                "sessionIds": sessions,
                "kind": kind, "currency": currency, "changes": m.changes,
            }),
        )
        .patron(Some(patron));
        if let Some((id, _)) = single {
            event = event.subject(id);
        }
        tx.emit(event);
    }
    Ok(())
}

/// One ledger entry of a session's money: which journal, which account (whose, what for), how much.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SessionEntry {
    pub journal_id: Uuid,
    pub kind: String,
    pub memo: String,
    /// `patron` or `venue`.
    pub owner_kind: String,
    /// `wallet`, `deposit_hold`, `debt`, `revenue`, `cash_drawer` or `clearing`.
    pub purpose: String,
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

/// Every ledger entry written for `session`, oldest first (at most 500): where its money came from and went.
pub async fn session_entries(tx: &mut TenantTx, session: Uuid) -> Result<Vec<SessionEntry>> {
    Ok(sqlx::query_as(
        "select j.id as journal_id, j.kind, j.memo, a.owner_kind, a.purpose, e.amount, a.currency::text as currency,
                j.created_at
         from journal j
         join journal_entry e on e.tenant_id = j.tenant_id and e.journal_id = j.id
         join ledger_account a on a.tenant_id = e.tenant_id and a.id = e.account_id
         where j.tenant_id = $1 and j.session_id = $2
         order by j.created_at, j.id, e.line limit 500",
    )
    .bind(tx.tenant())
    .bind(session)
    .fetch_all(tx.conn())
    .await?)
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

/// The wallet's last `limit` movements, newest first (in the order they were posted), with the balance after each:
/// the kept balance less the movements after it. It reads those movements only (from the account's index), never
/// the wallet's whole history; one statement, so the balance and the movements are of one moment.
pub async fn wallet_statement(
    tx: &mut TenantTx,
    patron: Uuid,
    currency: &str,
    limit: i64,
) -> Result<Vec<StatementLine>> {
    Ok(sqlx::query_as(
        "with wallet as (
           select id from ledger_account
           where tenant_id = $1 and owner_kind = 'patron' and owner_id = $2 and purpose = 'wallet' and currency = $3
         ), last as (
           select e.journal_id, e.line, e.amount from journal_entry e
           where e.tenant_id = $1 and e.account_id = (select id from wallet)
           order by e.journal_id desc, e.line desc limit $4
         )
         select l.journal_id, j.kind, j.memo, j.session_id, l.amount,
                (coalesce((select b.balance from ledger_balance b
                           where b.tenant_id = $1 and b.account_id = (select id from wallet)), 0)
                 - coalesce(sum(l.amount) over (order by l.journal_id desc, l.line desc
                                                rows between unbounded preceding and 1 preceding), 0))::bigint
                  as balance,
                j.created_at
         from last l join journal j on j.tenant_id = $1 and j.id = l.journal_id
         order by l.journal_id desc, l.line desc",
    )
    .bind(tx.tenant())
    .bind(patron)
    .bind(currency)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
