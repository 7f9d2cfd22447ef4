//! The only two ways into the database.
//!
//! * [`Db::begin_tenant`] → [`TenantTx`]: a transaction whose first statement binds `app.tenant_id`
//!   transaction-locally, so row-level security confines every statement in it to one tenant. All tenant data is
//!   read and written through it.
//! * [`SystemDb`]: the short, reviewed list of lookups that must happen before a tenant is known. Each one calls a
//!   `security definer` function owned by the `switchyard_system` role (migration 0002); the app role can read no
//!   other tenant's row by itself.

use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::Result;
use crate::model::Role;
use crate::signals::Signals;

/// A tenant's id. A distinct type so that a tenant is never confused with another id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The migrations in `migrations/`, embedded in every binary. Apply them with [`migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Before the migrations and before each pending one: the two roles exist (as migration 0001 makes them), and a
/// migrating role that is not a superuser — the owner on a managed Postgres — may hand functions to
/// `switchyard_system` as the migrations do, and replace them. Postgres wants the giver to be a member of the new
/// owner (from 16 on, one allowed to `SET ROLE` to it, and one that inherits its rights to drop a function it owns,
/// as on 15, where every membership inherits), and the new owner to be allowed to create in the schema; migration
/// 0020 takes that right back, so it is given again before each migration. The membership lets the owner's own
/// sessions through the system role's cross-tenant policies, as any membership does on 15; it owns every table and
/// may lift their row-level security anyway.
const BEFORE_MIGRATIONS: &str = "
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'switchyard_app') then
    create role switchyard_app login nobypassrls nosuperuser nocreatedb nocreaterole;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'switchyard_system') then
    create role switchyard_system nologin nobypassrls nosuperuser nocreatedb nocreaterole;
  end if;
  if not (select rolsuper from pg_roles where rolname = current_user) then
    if current_setting('server_version_num')::int >= 160000 then
      if not (pg_has_role(current_user, 'switchyard_system', 'SET')
              and pg_has_role(current_user, 'switchyard_system', 'USAGE')) then
        execute format('grant switchyard_system to %I with set true, inherit true', current_user);
      end if;
    elsif not pg_has_role(current_user, 'switchyard_system', 'member') then
      execute format('grant switchyard_system to %I', current_user);
    end if;
    grant create on schema public to switchyard_system;
  end if;
end
$$";

/// After every run, pending migrations or not: the roles' attributes and the schema's `create` right as migration
/// 0020 first set them (an app role someone made a superuser, gave `BYPASSRLS` or let create objects would quietly
/// lift row-level security). Only a wrong attribute is altered, so an owner that is no superuser can put right what
/// `CREATEROLE` allows, and fails here, loudly, on what only a superuser may change.
const AFTER_MIGRATIONS: &str = "
do $$
declare
  r record;
  fix text;
begin
  for r in select * from pg_roles where rolname in ('switchyard_app', 'switchyard_system') loop
    fix := concat_ws(' ',
      case when r.rolsuper then 'nosuperuser' end,
      case when r.rolbypassrls then 'nobypassrls' end,
      case when r.rolcreatedb then 'nocreatedb' end,
      case when r.rolcreaterole then 'nocreaterole' end,
      case when r.rolname = 'switchyard_app' and not r.rolcanlogin then 'login'
           when r.rolname = 'switchyard_system' and r.rolcanlogin then 'nologin' end);
    if fix <> '' then
      execute format('alter role %I %s', r.rolname, fix);
    end if;
  end loop;
end
$$;
revoke create on schema public from public;
revoke create on schema public from switchyard_app, switchyard_system";

/// Applies the pending migrations as `owner` (the role that owns the tables: a superuser, or on a managed Postgres
/// a role with `CREATEROLE` that owns the database), and puts the roles right, as `switchyard migrate` does. One
/// run at a time per database (sqlx's migration lock); the roles are put right even when a migration fails.
pub async fn migrate(owner: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context;
    use sqlx::migrate::Migrate;
    let mut conn = owner
        .acquire()
        .await
        .context("while connecting as the owner role")?;
    conn.lock()
        .await
        .context("while waiting for another migration run")?;
    let applied = apply_pending(&mut conn).await;
    let put_right = sqlx::raw_sql(AFTER_MIGRATIONS)
        .execute(&mut *conn)
        .await
        .context("while putting the roles' attributes right");
    let unlocked = conn.unlock().await;
    applied?;
    put_right?;
    unlocked?;
    Ok(())
}

/// sqlx's own loop (`Migrator::run`), with the roles prepared first and again before each pending migration.
async fn apply_pending(conn: &mut PgConnection) -> anyhow::Result<()> {
    use anyhow::Context;
    use sqlx::migrate::{Migrate, MigrateError};
    conn.ensure_migrations_table().await?;
    // The roles, even with nothing pending (a database restored into a new cluster has none).
    sqlx::raw_sql(BEFORE_MIGRATIONS)
        .execute(&mut *conn)
        .await
        .context("while preparing the roles")?;
    if let Some(version) = conn.dirty_version().await? {
        return Err(MigrateError::Dirty(version).into());
    }
    let applied: std::collections::HashMap<i64, _> = conn
        .list_applied_migrations()
        .await?
        .into_iter()
        .map(|m| (m.version, m.checksum))
        .collect();
    if let Some(unknown) = applied.keys().find(|v| !MIGRATOR.version_exists(**v)) {
        return Err(MigrateError::VersionMissing(*unknown).into());
    }
    for migration in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        match applied.get(&migration.version) {
            Some(checksum) if *checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version).into())
            }
            Some(_) => {}
            None => {
                sqlx::raw_sql(BEFORE_MIGRATIONS)
                    .execute(&mut *conn)
                    .await
                    .context("while preparing the roles")?;
                conn.apply(migration)
                    .await
                    .with_context(|| format!("while applying migration {}", migration.version))?;
            }
        }
    }
    Ok(())
}

/// The app-role connection pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    signals: Signals,
    /// The numberings of live events after commits, shared by every handle on this pool.
    numbering: std::sync::Arc<crate::events::Numbering>,
    /// A request-scoped handle's share of the pool (see [`Db::limited`]); `None`: unbounded.
    permits: Option<std::sync::Arc<Share>>,
}

/// The transactions a request-scoped handle may hold at once, and how many it held at most.
#[derive(Debug)]
struct Share {
    turns: std::sync::Arc<tokio::sync::Semaphore>,
    in_use: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

/// One transaction's turn in its request's share; given back when the transaction ends.
struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    share: std::sync::Arc<Share>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.share
            .in_use
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a pooled connection may sit idle before it is pinged on its way out ([`Db::connect_lazy`]).
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(5);

impl Db {
    /// Connects lazily: the first query opens the first connection, so a service can start (and answer `/readyz`
    /// with "not ready") while the database is still coming up.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(anyhow::Error::from)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            // A connection used within the last few seconds is handed out as it is; one idle for longer is pinged
            // first (a round trip), so one the database dropped while it sat idle is caught before use, while a
            // busy pool does not pay a round trip per transaction.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.application_name("switchyard"));
        Ok(Self {
            pool,
            signals: Signals::default(),
            numbering: Default::default(),
            permits: None,
        })
    }

    /// A handle for one request that holds at most `connections` transactions at once; further ones wait for one
    /// of them to end. A GraphQL request resolves list items concurrently, so without this one request could take
    /// every pooled connection and make everyone else's requests time out.
    pub fn limited(&self, connections: usize) -> Self {
        Self {
            pool: self.pool.clone(),
            signals: self.signals.clone(),
            numbering: self.numbering.clone(),
            permits: Some(std::sync::Arc::new(Share {
                turns: std::sync::Arc::new(tokio::sync::Semaphore::new(connections.max(1))),
                in_use: 0.into(),
                peak: 0.into(),
            })),
        }
    }

    /// For a [`Db::limited`] handle: the most transactions it held at once so far.
    pub fn peak_transactions(&self) -> Option<usize> {
        self.permits
            .as_ref()
            .map(|s| s.peak.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Wake-ups travel by `signals` (Postgres `notify` unless set).
    pub fn with_signals(mut self, signals: Signals) -> Self {
        self.signals = signals;
        self
    }

    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    pub(crate) fn numbering(&self) -> &std::sync::Arc<crate::events::Numbering> {
        &self.numbering
    }

    /// Begins a transaction confined to `tenant`.
    pub async fn begin_tenant(&self, tenant: TenantId) -> Result<TenantTx> {
        self.begin_tenant_as(tenant, Pace::Normal).await
    }

    /// Begins a transaction confined to `tenant` for the hottest paths, which run a few small statements over and
    /// over (a charger's meter readings and seen marks, its connection's periodic check). Two settings, for this
    /// transaction only and set in the statement that confines it: statements run on their connection's kept plan
    /// instead of being planned again each time (`plan_cache_mode = force_generic_plan`; planning was 40 % of
    /// Postgres' time on that path), and the commit does not wait for the disk (`synchronous_commit = off`). A crash
    /// of Postgres itself (not of this process) may then forget the last fraction of a second of such commits —
    /// each whole, never a part of one, and never one that a later durable commit read, since the log is flushed
    /// in order. So only for what reads nothing or writes what the next message states again (a register, a seen
    /// mark).
    pub async fn begin_tenant_hot(&self, tenant: TenantId) -> Result<TenantTx> {
        self.begin_tenant_as(tenant, Pace::Hot).await
    }

    async fn begin_tenant_as(&self, tenant: TenantId, pace: Pace) -> Result<TenantTx> {
        let turn = match &self.permits {
            None => None,
            // Bounded: a turn stuck for this long means the request is deadlocked on itself; answer rather than
            // hang.
            Some(share) => {
                let permit = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    share.turns.clone().acquire_owned(),
                )
                .await
                .map_err(|_| {
                    crate::Error::Unavailable(anyhow::anyhow!(
                        "no turn in the request's share of connections within 30 s"
                    ))
                })?
                .map_err(|e| crate::Error::Internal(e.into()))?;
                let now = share
                    .in_use
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    + 1;
                share
                    .peak
                    .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                Some(Turn {
                    _permit: permit,
                    share: share.clone(),
                })
            }
        };
        // The tenant is bound, never written into the statement's text (DESIGN.md, tenancy rule 4). The hot pace's
        // settings ride the same statement.
        let confine = match pace {
            Pace::Normal => "select set_config('app.tenant_id', $1, true)",
            Pace::Hot => {
                "select set_config('app.tenant_id', $1, true), \
                 set_config('synchronous_commit', 'off', true), \
                 set_config('plan_cache_mode', 'force_generic_plan', true)"
            }
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(confine)
            .bind(tenant.0.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(TenantTx {
            tx,
            pace,
            pool: self.pool.clone(),
            number_before_commit: false,
            tenant,
            signals: self.signals.clone(),
            numbering: self.numbering.clone(),
            wake: Vec::new(),
            events: Vec::new(),
            _turn: turn,
        })
    }

    /// The cross-tenant lookups.
    pub fn system(&self) -> SystemDb {
        SystemDb {
            pool: self.pool.clone(),
        }
    }

    /// Pool figures for `/metrics`: (open connections, idle connections, maximum).
    pub fn pool_usage(&self) -> (u32, usize, u32) {
        (
            self.pool.size(),
            self.pool.num_idle(),
            self.pool.options().get_max_connections(),
        )
    }

    /// `select 1` and the latest migration applied equals the latest this binary knows.
    pub async fn readiness(&self) -> Result<Readiness> {
        let table: Option<String> =
            sqlx::query_scalar("select to_regclass('public._sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await?;
        let applied: Option<i64> = match table {
            None => None,
            Some(_) => {
                sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        let expected = MIGRATOR.iter().map(|m| m.version).max();
        Ok(Readiness { applied, expected })
    }

    /// Refuses, with a message naming what is wrong, a login role that would make row-level security moot: a
    /// superuser, a role with `BYPASSRLS`, or one that owns tables (owners may alter policies). Production
    /// services call this at start; the app role `switchyard_app` passes.
    pub async fn check_app_role(&self) -> anyhow::Result<()> {
        let (name, superuser, bypass, owns): (String, bool, bool, bool) = sqlx::query_as(
            "select r.rolname::text, r.rolsuper, r.rolbypassrls,
                    exists (select 1 from pg_class c join pg_namespace n on n.oid = c.relnamespace
                            where n.nspname = 'public' and c.relowner = r.oid)
             from pg_roles r where r.rolname = current_user",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot check the database role of APP_DATABASE_URL: {e}"))?;
        let problems: Vec<&str> = [
            (superuser, "is a superuser"),
            (bypass, "has BYPASSRLS"),
            (owns, "owns tables"),
        ]
        .into_iter()
        .filter_map(|(bad, what)| bad.then_some(what))
        .collect();
        if !problems.is_empty() {
            anyhow::bail!(
                "APP_DATABASE_URL logs in as {name:?}, which {}; production needs the app role \
                 (switchyard_app: no superuser, no BYPASSRLS, owns nothing), or tenants are not kept apart",
                problems.join(" and ")
            );
        }
        Ok(())
    }

    /// The raw pool, for the tests that inspect the catalogue and for `migrate`. Not for tenant data.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Migration state as seen by `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub applied: Option<i64>,
    pub expected: Option<i64>,
}

impl Readiness {
    /// At this build's migration or a later one: migrations are additive, so a release keeps serving while the
    /// next one's migrations run before its rollout. Behind it, this build would find tables it needs missing.
    pub fn is_ready(&self) -> bool {
        self.applied >= self.expected
    }
}

/// Adds ` and {condition}` to a list's statement when the filter `value` is given, `$` in `condition` standing for
/// the bound value (at the end when there is none): `filter(&mut query, "venue_id = $", venue)`. A list then names
/// only the filters it was given, and each shape of it keeps one plan on its connection; a statement with
/// `($2 is null or venue_id = $2)` is planned again on every call, since the plan that fits every value cannot use
/// the column's index (for a station list of 30, planning took longer than running it). A status, a column of a
/// few values spread unevenly, is written into the statement instead ([`filter_fixed`]): a kept plan for
/// `status = $2` would have to suit `ended` as well as `active`, and could not use an index made for
/// `status = 'active'`.
pub fn filter<'a, T>(
    query: &mut sqlx::QueryBuilder<'a, Postgres>,
    condition: &str,
    value: Option<T>,
) where
    T: 'a + sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres>,
{
    if let Some(value) = value {
        let (before, after) = condition.split_once('$').unwrap_or((condition, ""));
        query
            .push(" and ")
            .push(before)
            .push_bind(value)
            .push(after);
    }
}

/// Adds ` and {column} = '{value}'` to a list's statement when `value` is given: an enum's fixed text (`'static`,
/// never a caller's), written into the statement so that each value keeps its own plan ([`filter`]).
pub fn filter_fixed(
    query: &mut sqlx::QueryBuilder<'_, Postgres>,
    column: &str,
    value: Option<&'static str>,
) {
    if let Some(value) = value {
        query.push(format_args!(" and {column} = '{value}'"));
    }
}

/// How strongly a row is held to the end of its transaction.
#[derive(Debug, Clone, Copy)]
pub enum RowLock {
    /// Only against the row being deleted or taken `for update` (an archiving): what a reference to it takes.
    KeyShare,
    /// Against any writer of the row (`for no key update` too), not against rows referencing it.
    Share,
    /// Against other writers of the row; rows referencing it may still be written.
    NoKeyUpdate,
    /// Also against rows being written that reference it (their foreign-key check waits).
    Update,
}

impl RowLock {
    pub fn clause(self) -> &'static str {
        match self {
            RowLock::KeyShare => "for key share",
            RowLock::Share => "for share",
            RowLock::NoKeyUpdate => "for no key update",
            RowLock::Update => "for update",
        }
    }
}

/// A transaction confined to one tenant. Dropping it without [`TenantTx::commit`] rolls back.
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    /// Where the events are numbered after the commit (at the transaction's pace).
    pool: PgPool,
    pace: Pace,
    number_before_commit: bool,
    tenant: TenantId,
    signals: Signals,
    numbering: std::sync::Arc<crate::events::Numbering>,
    /// Venues to wake after the commit (Redis).
    wake: Vec<Uuid>,
    /// Live events to write as the last step before the commit.
    events: Vec<crate::events::NewEvent>,
    /// The request's share of the pool this transaction uses, given back when it ends.
    _turn: Option<Turn>,
}

impl TenantTx {
    /// The tenant this transaction is confined to. Queries bind it too: RLS is the backstop, not the only check.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Holds the row `id` of `table` (a table keyed by tenant and id) to the end of the transaction; `NotFound`
    /// (named after the table) when the tenant has no such row.
    pub async fn lock_row(&mut self, table: &'static str, id: Uuid, how: RowLock) -> Result<()> {
        let sql = format!(
            "select 1 from {table} where tenant_id = $1 and id = $2 {}",
            how.clause()
        );
        sqlx::query(&sql)
            .bind(self.tenant)
            .bind(id)
            .fetch_optional(self.conn())
            .await?
            .ok_or(crate::error::Error::NotFound(table))?;
        Ok(())
    }

    /// The connection, to run queries on.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits, writing the transaction's live events first and announcing them (see [`crate::events`]).
    pub async fn commit(mut self) -> Result<()> {
        let mut numbered = None;
        if self.number_before_commit && !self.events.is_empty() {
            numbered = Some(
                crate::events::number_in_transaction(
                    &mut self.tx,
                    &self.signals,
                    self.tenant,
                    &self.events,
                )
                .await?,
            );
        } else if !self.events.is_empty() {
            crate::events::write(&mut self.tx, self.tenant, &self.events).await?;
        }
        self.tx.commit().await?;
        crate::events::count_committed(&self.events);
        self.signals.after_commit(self.tenant, self.wake);
        match numbered {
            Some(Some(last)) if !self.signals.in_database() => {
                self.signals.announce_after_commit(self.tenant, last)
            }
            Some(_) => {}
            None if self.events.is_empty() => {}
            None => {
                self.numbering
                    .number(
                        &self.pool,
                        &self.signals,
                        self.tenant,
                        self.pace == Pace::Hot,
                    )
                    .await
            }
        }
        Ok(())
    }

    /// Numbers this transaction's events as its last step before the commit, holding the tenant's numbering until
    /// then, instead of right after it. For a batch that is its tenant's only writer of its kind for the moment (the
    /// billing tick, under its tenant's billing lock; a flush of chargers' meter values): it saves a transaction of
    /// its own per batch, but any other writer of the tenant that commits meanwhile waits for this one's commit
    /// before its events are numbered.
    pub fn number_events_before_commit(&mut self) {
        self.number_before_commit = true;
    }

    /// Others hear of this change once the transaction commits (and never if it rolls back).
    pub fn emit(&mut self, event: crate::events::NewEvent) {
        self.events.push(event);
    }

    /// Marks a point to roll back to without losing the whole transaction (a part that may fail on its own).
    pub async fn savepoint(&mut self) -> Result<Savepoint> {
        sqlx::query("savepoint switchyard_part")
            .execute(&mut *self.tx)
            .await?;
        Ok(Savepoint {
            events: self.events.len(),
            wake: self.wake.len(),
        })
    }

    /// Undoes everything since `point`: its writes, and the events and wake-ups it emitted (a Postgres `notify`
    /// inside it is undone by Postgres itself).
    pub async fn rollback_to(&mut self, point: Savepoint) -> Result<()> {
        sqlx::query("rollback to savepoint switchyard_part")
            .execute(&mut *self.tx)
            .await?;
        self.events.truncate(point.events);
        self.wake.truncate(point.wake);
        Ok(())
    }

    /// Keeps what was done since `point`.
    pub async fn release(&mut self, _point: Savepoint) -> Result<()> {
        sqlx::query("release savepoint switchyard_part")
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The venue's bridge should look at its commands and schedule again once this transaction commits.
    pub async fn wake_venue(&mut self, venue: Uuid) -> Result<()> {
        let sent = self
            .signals
            .in_transaction(&mut self.tx, self.tenant, venue)
            .await?;
        if !sent && !self.wake.contains(&venue) {
            self.wake.push(venue);
        }
        Ok(())
    }

    /// Rolls back now (dropping also rolls back, but only when the connection is next used).
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// A tenant a login belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MembershipRow {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub role: Role,
}

/// The cross-tenant lookups. Each method is one reviewed `security definer` function; nothing else is reachable
/// from here.
#[derive(Clone, Debug)]
pub struct SystemDb {
    pool: PgPool,
}

impl SystemDb {
    /// What a verified token's subject is in its tenant now: a member's role and venue scope (`None`: every
    /// venue), or for a patron no role; `None` when the subject no longer belongs to the tenant. One statement,
    /// outside any transaction (`sys_token_principal`, confined to `tenant`).
    pub async fn token_principal(
        &self,
        tenant: TenantId,
        subject: Uuid,
        patron: bool,
    ) -> Result<Option<(Option<crate::model::Role>, Option<Vec<Uuid>>)>> {
        Ok(
            sqlx::query_as("select role, venues from sys_token_principal($1, $2, $3)")
                .bind(tenant.0)
                .bind(subject)
                .bind(patron)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

impl SystemDb {
    /// Login: every tenant a user is a member of, with its name and the user's role there.
    pub async fn user_memberships(&self, user_id: Uuid) -> Result<Vec<MembershipRow>> {
        Ok(
            sqlx::query_as("select tenant_id, tenant_name, role from sys_user_memberships($1)")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A card dispute's webhook: the (tenant, payment) a provider's reference (an intent) names, made through
    /// `provider`. Disputes carry none of the metadata set on the intent.
    pub async fn payment_by_reference(
        &self,
        provider: &str,
        reference: &str,
    ) -> Result<Option<(TenantId, Uuid)>> {
        let found: Option<(Uuid, Uuid)> =
            sqlx::query_as("select tenant_id, payment_id from sys_payment_by_reference($1, $2)")
                .bind(provider)
                .bind(reference)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.map(|(tenant, payment)| (TenantId(tenant), payment)))
    }

    /// Refresh and logout: the tenant a refresh token (by its SHA-256) was issued in.
    pub async fn refresh_token_tenant(&self, token_hash: &[u8]) -> Result<Option<TenantId>> {
        Ok(sqlx::query_scalar("select sys_refresh_token_tenant($1)")
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?)
    }

    /// The edge tunnel: the (tenant, bridge) an unrevoked bridge token (by its SHA-256) belongs to.
    pub async fn bridge_by_token(&self, token_hash: &[u8]) -> Result<Option<(TenantId, Uuid)>> {
        Ok(
            sqlx::query_as("select tenant_id, bridge_id from sys_bridge_by_token($1)")
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Account mail (a password reset): the login's home tenant — the one it is confined to while unverified, else
    /// the one it joined first; `None` for a login in no tenant.
    pub async fn user_home_tenant(&self, user_id: Uuid) -> Result<Option<TenantId>> {
        Ok(sqlx::query_scalar("select sys_user_home_tenant($1)")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?)
    }

    /// Invitation acceptance: the tenant an invitation token (by its SHA-256) belongs to.
    pub async fn invitation_tenant(&self, token_hash: &[u8]) -> Result<Option<TenantId>> {
        Ok(sqlx::query_scalar("select sys_invitation_tenant($1)")
            .bind(token_hash)
            .fetch_one(&self.pool)
            .await?)
    }
}

impl SystemDb {
    /// Billing: up to `limit` active sessions whose next tick is due at `now`, across tenants, longest-waiting
    /// first. Nothing is locked or written: the worker bills each tenant's share under a lock of its own and
    /// re-checks what is still due (see `sessions::bill_due`).
    pub async fn due_sessions(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: i32,
    ) -> Result<Vec<(TenantId, Uuid)>> {
        Ok(
            sqlx::query_as("select tenant_id, session_id from sys_due_sessions($1, $2)")
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

impl SystemDb {
    /// Claims up to `limit` debts due for collection (patron, currency) across tenants, leasing each for
    /// `lease_secs` (a collector that dies leaves them to another after the lease).
    pub async fn claim_due_debts(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: i32,
        lease_secs: i32,
    ) -> Result<Vec<(TenantId, Uuid, String)>> {
        Ok(sqlx::query_as(
            "select tenant_id, patron_id, currency from sys_claim_due_debts($1, $2, $3)",
        )
        .bind(now)
        .bind(limit)
        .bind(lease_secs)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Housekeeping: deletes idempotency keys past their window and quotes that expired unused a day before `now`.
    /// Returns (keys, quotes) deleted.
    pub async fn purge_expired(&self, now: chrono::DateTime<chrono::Utc>) -> Result<(i64, i64)> {
        Ok(
            sqlx::query_as("select keys, quotes from sys_purge_expired($1)")
                .bind(now)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

impl SystemDb {
    /// Ejects at bridge-driven cabinets that no tunnel took by their deadline, the longest overdue first, at most
    /// `limit`, none of `skip`, as (tenant, command); each goes to [`crate::rentals::expire_eject`] in a
    /// transaction of its own tenant.
    pub async fn overdue_ejects(&self, limit: i32, skip: &[Uuid]) -> Result<Vec<(TenantId, Uuid)>> {
        Ok(
            sqlx::query_as("select tenant_id, command_id from sys_overdue_ejects($1, $2)")
                .bind(limit)
                .bind(skip)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Ejects that have come to wait for staff (taken, unanswered, past their deadline, the rental still running)
    /// and were not announced yet, the longest overdue first, at most `limit`, none of `skip`, as (tenant, command);
    /// each goes to [`crate::rentals::alert_unanswered`] in a transaction of its own tenant.
    pub async fn unalerted_ejects(
        &self,
        limit: i32,
        skip: &[Uuid],
    ) -> Result<Vec<(TenantId, Uuid)>> {
        Ok(
            sqlx::query_as("select tenant_id, command_id from sys_unalerted_ejects($1, $2)")
                .bind(limit)
                .bind(skip)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Housekeeping: deletes bridge events received, and planned ends delivered to bridges, before `before` (the
    /// retention period). Anomalies are kept. Returns (events, deliveries) deleted.
    pub async fn purge_bridge_events(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<(i64, i64)> {
        Ok(
            sqlx::query_as("select events, deliveries from sys_purge_bridge_events($1)")
                .bind(before)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// Platform-wide figures for `/metrics` (counts and ages across tenants, no tenant's rows).
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct PlatformGauges {
    pub sessions_active: i64,
    pub rentals_active: i64,
    /// How long the oldest session due for billing has waited unclaimed (0: none is waiting).
    pub billing_oldest_due_seconds: f64,
    /// Bridges, chargers and PC agents silent or disconnected for five minutes or more.
    pub bridges_offline: i64,
    pub chargers_offline: i64,
    pub agents_offline: i64,
    /// Powerbank ejects a bridge took that nothing answered, past their deadline: they wait for staff.
    pub ejects_unanswered: i64,
}

impl SystemDb {
    pub async fn platform_gauges(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PlatformGauges> {
        Ok(sqlx::query_as("select * from sys_platform_gauges($1)")
            .bind(now)
            .fetch_one(&self.pool)
            .await?)
    }
}

impl SystemDb {
    /// Bridges still marked online but silent for two minutes (their API process stopped without closing the
    /// tunnel), oldest first, at most `limit`: (tenant, bridge) ids, for [`crate::bridges::silent`].
    pub async fn silent_bridges(&self, limit: i32) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(
            sqlx::query_as("select tenant_id, bridge_id from sys_silent_bridges($1)")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Chargers still marked online but silent for three minutes (their API process stopped without closing the
    /// connection), oldest first, at most `limit`: (tenant, charger) ids, for [`crate::charging::silent`].
    pub async fn silent_chargers(&self, limit: i32) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(
            sqlx::query_as("select tenant_id, charger_id from sys_silent_chargers($1)")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Tenants with chargers where some unblocked tag's credit is not what their local lists last said (migration
    /// 0063): at most `limit` tenant ids.
    pub async fn tag_credit_stale(&self, limit: i32) -> Result<Vec<Uuid>> {
        Ok(
            sqlx::query_scalar("select tenant_id from sys_tag_credit_stale($1)")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Housekeeping: deletes live events created before `before` (past the resume window). Returns how many.
    pub async fn purge_live_events(&self, before: chrono::DateTime<chrono::Utc>) -> Result<i64> {
        Ok(sqlx::query_scalar("select sys_purge_live_events($1)")
            .bind(before)
            .fetch_one(&self.pool)
            .await?)
    }
}

impl SystemDb {
    /// A connecting charger: the tenant and charger holding an OCPP identity, and its passwords' hashes.
    pub async fn charger_identity(&self, charge_point_id: &str) -> Result<Option<ChargerIdentity>> {
        Ok(sqlx::query_as(
            "select tenant_id, charger_id, password_hash, previous_password_hashes from sys_charger_identity($1)",
        )
        .bind(charge_point_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A charger with an unknown identity: the tenant that takes such chargers as pending with this onboarding
    /// key (by its SHA-256).
    pub async fn tenant_by_onboarding_key(&self, key_hash: &[u8]) -> Result<Option<TenantId>> {
        Ok(
            sqlx::query_scalar("select sys_tenant_by_onboarding_key($1)")
                .bind(key_hash)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// The charger holding an OCPP identity, as its login sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChargerIdentity {
    pub tenant_id: TenantId,
    pub charger_id: Uuid,
    /// The SHA-256 of its password.
    pub password_hash: Option<Vec<u8>>,
    /// The SHA-256s of the passwords it may still be using, valid while the current one is on its way to it.
    pub previous_password_hashes: Vec<Vec<u8>>,
}

/// A point inside a [`TenantTx`] (see [`TenantTx::savepoint`]).
#[derive(Debug)]
pub struct Savepoint {
    events: usize,
    wake: usize,
}

/// A login as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    /// Set for a login created by an invitation whose email is not verified: the only tenant it reaches.
    pub unverified_tenant_id: Option<Uuid>,
}

impl SystemDb {
    /// Login: the user with this (lower-cased) email. Users are not tenant-owned; one login may belong to several
    /// tenants.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(
            "select id, email, password_hash, unverified_tenant_id from app_user where email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }
}

impl SystemDb {
    /// A login by id (changing a password).
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(
            "select id, email, password_hash, unverified_tenant_id from app_user where id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A member's new password, in one transaction with what must end with the old one: every refresh-token family
    /// of the login (in every tenant) is revoked, and every reset code not used yet is void. Returns how many
    /// refresh tokens were revoked.
    pub async fn change_password(&self, id: Uuid, password_hash: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("update app_user set password_hash = $2 where id = $1")
            .bind(id)
            .bind(password_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "update login_token set used_at = now()
             where user_id = $1 and purpose = 'password_reset' and used_at is null",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let revoked: i64 = sqlx::query_scalar("select sys_revoke_user_refresh_tokens($1)")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Signs a login out everywhere: every refresh-token family of it, in every tenant, is revoked (the reviewed
    /// function a password reset uses). Returns how many refresh tokens were revoked. The login's row is locked
    /// first, as a password change does by changing it: a refresh under way (which holds it shared, see
    /// [`crate::accounts`]) finishes first, and its new token is revoked with the rest.
    pub async fn revoke_refresh_tokens(&self, user: Uuid) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("select 1 from app_user where id = $1 for no key update")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let revoked = sqlx::query_scalar("select sys_revoke_user_refresh_tokens($1)")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Spends a verification code (by its SHA-256): the login's email is verified and it is no longer confined to
    /// one tenant. `None` for a wrong, used or expired code.
    pub async fn verify_email(&self, token_hash: &[u8]) -> Result<Option<Uuid>> {
        let mut tx = self.pool.begin().await?;
        let user: Option<Uuid> = sqlx::query_scalar(
            "update login_token set used_at = now()
             where token_hash = $1 and purpose = 'verify_email' and used_at is null and expires_at > now()
             returning user_id",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(user) = user {
            sqlx::query(
                "update app_user set email_verified_at = coalesce(email_verified_at, now()), unverified_tenant_id = null
                 where id = $1",
            )
            .bind(user)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    /// The login (id, email) a live password-reset code (by its SHA-256) belongs to, without spending it.
    pub async fn password_reset_user(&self, token_hash: &[u8]) -> Result<Option<(Uuid, String)>> {
        Ok(sqlx::query_as(
            "select u.id, u.email from login_token t join app_user u on u.id = t.user_id
             where t.token_hash = $1 and t.purpose = 'password_reset' and t.used_at is null and t.expires_at > now()",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Spends a password-reset code and sets the new password hash; in the same transaction the email counts as
    /// verified and every refresh-token family of the login, in every tenant, is revoked (a reviewed
    /// security-definer function). Returns (user, refresh tokens revoked); `None` if the code was spent meanwhile.
    pub async fn complete_password_reset(
        &self,
        token_hash: &[u8],
        password_hash: &str,
    ) -> Result<Option<(Uuid, i64)>> {
        let mut tx = self.pool.begin().await?;
        // The login's row first, as a password change and a sign-out-everywhere lock it, so that they cannot wait
        // on each other; then the code, spent once.
        let owner: Option<Uuid> =
            sqlx::query_scalar("select user_id from login_token where token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(owner) = owner else {
            return Ok(None);
        };
        sqlx::query("select 1 from app_user where id = $1 for no key update")
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        let user: Option<Uuid> = sqlx::query_scalar(
            "update login_token set used_at = now()
             where token_hash = $1 and purpose = 'password_reset' and used_at is null and expires_at > now()
             returning user_id",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(user) = user else {
            return Ok(None);
        };
        sqlx::query(
            "update app_user set password_hash = $2, email_verified_at = coalesce(email_verified_at, now()),
               unverified_tenant_id = null
             where id = $1",
        )
        .bind(user)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        let revoked: i64 = sqlx::query_scalar("select sys_revoke_user_refresh_tokens($1)")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((user, revoked)))
    }

    /// Notifications: claims up to `limit` due messages of `channels` across tenants, leasing each for `lease_secs`
    /// under a fresh claim id (see [`crate::notify::deliver`]).
    pub async fn claim_due_notifications(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: i32,
        lease_secs: i32,
        channels: &[String],
    ) -> Result<Vec<crate::notify::deliver::Claimed>> {
        Ok(sqlx::query_as(
            "select tenant_id, notification_id, claim_id from sys_claim_due_notifications($1, $2, $3, $4)",
        )
        .bind(now)
        .bind(limit)
        .bind(lease_secs)
        .bind(channels)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl SystemDb {
    /// Analytics: up to `limit` tenants with rows waiting in the rollup queues, the longest-waiting first (see
    /// [`crate::analytics::rollup`]).
    pub async fn analytics_pending_tenants(&self, limit: i32) -> Result<Vec<TenantId>> {
        Ok(
            sqlx::query_scalar("select tenant_id from sys_analytics_pending_tenants($1)")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The daily summary: up to `limit` (tenant, venue, venue-local day) whose day before `now`'s has no summary
    /// yet, at venues with an owner who chose a channel for it (see [`crate::analytics::summary`]).
    pub async fn daily_summaries_due(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: i32,
    ) -> Result<Vec<(TenantId, Uuid, chrono::NaiveDate)>> {
        Ok(
            sqlx::query_as("select tenant_id, venue_id, day from sys_daily_summaries_due($1, $2)")
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// How a tenant transaction is run ([`Db::begin_tenant_hot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Normal,
    Hot,
}
