//! Live events: what subscribers hear about.
//!
//! A change that others must hear about calls [`TenantTx::emit`](crate::TenantTx::emit); the events are written
//! as the transaction's last step (an outbox, `live_event_pending`); right after the commit they are numbered per
//! tenant ([`Numbering::number`]: every committed pending event of the tenant, in one batch under a per-tenant lock,
//! so that a tenant's writers never wait for each other's commits) and announced: Postgres `notify` on [`CHANNEL`]
//! (delivered at the numbering's commit) or Redis pub/sub (published right after it). Each API process keeps one
//! [`EventHub`]: on an announcement it reads the tenant's new rows once and hands them to every local subscriber of
//! that tenant through a bounded broadcast queue. A subscriber that falls behind the queue is told to resync; one
//! that reconnects with the last number it saw gets what it missed from the table ([`EventHub::replay`]) for as
//! long as the rows are kept (the resume window). The billing tick numbers its events inside its own transaction
//! instead ([`crate::TenantTx::number_events_before_commit`]).
//!
//! Nothing is announced for a rolled-back transaction (the rows never existed), and a lost announcement only
//! delays delivery until the next announcement or the hub's periodic look ([`EventHub::run`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::db::{Db, TenantId};
use crate::error::{Error, Result};

/// The announcement channel (Postgres `listen` / Redis `subscribe`); payload `<tenant id>:<last seq>`.
pub const CHANNEL: &str = "switchyard_events";

/// An event about to be written. `kind` is `<topic>.<what>`: `session.started`, `station.status`, ...
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub venue: Option<Uuid>,
    pub station: Option<Uuid>,
    pub subject: Option<Uuid>,
    pub patron: Option<Uuid>,
    pub user: Option<Uuid>,
    pub data: serde_json::Value,
}

/// Session metrics from a committed transaction's events (never from one that rolled back): starts, ends by
/// outcome and durations, each labelled `kind` = `session` or `rental` (seeds 000, 003 and 004).
pub(crate) fn count_committed(events: &[NewEvent]) {
    for event in events {
        let kind = if event
            .data
            .get("rental")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            "rental"
        } else {
            "session"
        };
        let outcome = match event.kind {
            "session.started" => {
                metrics::counter!("sessions_created_total", "kind" => kind).increment(1);
                continue;
            }
            "session.stopped" => "stopped",
            "session.expired" => "expired",
            "session.failed" => "failed",
            "session.bought_out" => "bought_out",
            _ => continue,
        };
        metrics::counter!("sessions_completed_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        let at = |key: &str| {
            event
                .data
                .get(key)
                .and_then(serde_json::Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        };
        if let (Some(start), Some(end)) = (at("startedAt"), at("endedAt")) {
            let seconds = (end - start).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("sessions_duration_seconds", "kind" => kind).record(seconds);
        }
    }
}

impl NewEvent {
    pub fn new(kind: &'static str, data: serde_json::Value) -> Self {
        Self {
            kind,
            venue: None,
            station: None,
            subject: None,
            patron: None,
            user: None,
            data,
        }
    }

    /// The venue it happened in: scoped staff of other venues do not hear it.
    pub fn venue(mut self, venue: Uuid) -> Self {
        self.venue = Some(venue);
        self
    }

    pub fn station(mut self, station: Uuid) -> Self {
        self.station = Some(station);
        self
    }

    /// The session, rental, SOS, task or bridge it is about.
    pub fn subject(mut self, subject: Uuid) -> Self {
        self.subject = Some(subject);
        self
    }

    /// The patron it belongs to: that patron hears it (and members do); other patrons never.
    pub fn patron(mut self, patron: Option<Uuid>) -> Self {
        self.patron = patron;
        self
    }

    /// The login it concerns (a task's assignee, a removed member).
    pub fn user(mut self, user: Uuid) -> Self {
        self.user = Some(user);
        self
    }
}

/// A committed event.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Event {
    pub tenant_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub venue_id: Option<Uuid>,
    pub station_id: Option<Uuid>,
    pub subject_id: Option<Uuid>,
    pub patron_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Event {
    /// The topic: the part of `kind` before the dot.
    pub fn topic(&self) -> &str {
        self.kind.split_once('.').map_or(&self.kind, |(t, _)| t)
    }
}

/// Binds `events` as the seven arrays `unnest` takes: kinds, venues, stations, subjects, patrons, logins, data.
fn bind_events<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    events: &[NewEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let column = |f: fn(&NewEvent) -> Option<Uuid>| events.iter().map(f).collect::<Vec<_>>();
    query
        .bind(events.iter().map(|e| e.kind).collect::<Vec<_>>())
        .bind(column(|e| e.venue))
        .bind(column(|e| e.station))
        .bind(column(|e| e.subject))
        .bind(column(|e| e.patron))
        .bind(column(|e| e.user))
        .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
}

/// Appends `events` to the tenant's pending events in the transaction; [`Numbering::number`] numbers them after the
/// commit.
pub(crate) async fn write(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    events: &[NewEvent],
) -> Result<()> {
    let query = sqlx::query(
        "insert into live_event_pending (tenant_id, kind, venue_id, station_id, subject_id, patron_id, user_id, data)
         select $1, t.kind, t.venue, t.station, t.subject, t.patron, t.login, t.data
         from unnest($2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[], $7::uuid[], $8::jsonb[])
           with ordinality as t(kind, venue, station, subject, patron, login, data, n)
         order by t.n",
    )
    .bind(tenant.0);
    bind_events(query, events).execute(&mut *conn).await?;
    Ok(())
}

/// The numberings after commits in this process, one at a time per tenant. A commit whose tenant is being numbered
/// joins the tenant's next round instead of calling the database itself: that round starts when the running one
/// ends, numbers every event committed by then (the joiners' among them) in one call, and then lets its joiners go.
/// Without it each commit made its own call, which waited on the tenant's numbering lock while holding a pooled
/// connection: with 50 clients starting and stopping sessions for one tenant, a third of the API's connections
/// stood waiting there.
#[derive(Debug, Default)]
pub(crate) struct Numbering {
    /// A tenant is here while its round runs; what it holds is its next round's joiners.
    tenants: Mutex<HashMap<TenantId, NextRound>>,
}

#[derive(Debug, Default)]
struct NextRound {
    joiners: Vec<tokio::sync::oneshot::Sender<()>>,
    /// Whether a joiner's commit waited for the disk (then the round's own commit does too).
    durable: bool,
}

impl Numbering {
    /// Numbers the tenant's committed pending events (a transaction's own, and any that committed beside it) and
    /// announces the new last number. Called after the commit, outside any transaction: when it returns, the
    /// committing transaction's events are numbered, by this process's round that started after the commit or by
    /// one that held the tenant's numbering before it. The rounds run as a task of their own, so a request dropped
    /// after its commit (its client gone) still numbers its events. A failure (or a wait for the tenant's
    /// numbering longer than [`NUMBERING_WAIT_MS`]) is logged, not returned — the commit has happened — and the
    /// hub's periodic look numbers what is left.
    pub(crate) async fn number(
        self: &Arc<Self>,
        pool: &sqlx::PgPool,
        signals: &crate::signals::Signals,
        tenant: TenantId,
        hot: bool,
    ) {
        let (joined, done) = tokio::sync::oneshot::channel();
        let joined = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            match tenants.get_mut(&tenant) {
                Some(next) => {
                    next.joiners.push(joined);
                    next.durable |= !hot;
                    None
                }
                None => {
                    tenants.insert(tenant, NextRound::default());
                    Some(joined)
                }
            }
        };
        let Some(joined) = joined else {
            // An error: the rounds' task ended early (see `Rounds`); the periodic look numbers what is left.
            let _ = done.await;
            return;
        };
        let rounds = Rounds {
            numbering: self.clone(),
            tenant,
            armed: true.into(),
        };
        let (pool, signals) = (pool.clone(), signals.clone());
        tokio::spawn(async move {
            let mut round = NextRound {
                joiners: vec![joined],
                durable: !hot,
            };
            loop {
                number_once(&pool, &signals, tenant, !round.durable).await;
                for joiner in round.joiners.drain(..) {
                    let _ = joiner.send(());
                }
                let mut tenants = rounds
                    .numbering
                    .tenants
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let next = tenants.entry(tenant).or_default();
                if next.joiners.is_empty() {
                    tenants.remove(&tenant);
                    rounds.disarm();
                    return;
                }
                round = std::mem::take(next);
            }
        });
        // This commit's round is the first; the task goes on with the rounds joined meanwhile without it.
        let _ = done.await;
    }
}

/// Should the rounds' task end early (a panic), the tenant's entry goes with it: its joiners are let go (their
/// senders dropped; the periodic look numbers their events) and the next commit starts a new round, rather than
/// joining rounds that will never run. Disarmed by a normal end, which removed the entry itself under the lock a
/// commit checks.
struct Rounds {
    numbering: Arc<Numbering>,
    tenant: TenantId,
    armed: std::cell::Cell<bool>,
}

impl Rounds {
    fn disarm(&self) {
        self.armed.set(false);
    }
}

impl Drop for Rounds {
    fn drop(&mut self) {
        if self.armed.get() {
            let mut tenants = self
                .numbering
                .tenants
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tenants.remove(&self.tenant);
            tracing::warn!(tenant.id = %self.tenant.0, "the numbering of live events stopped early");
        }
    }
}

/// One call numbering the tenant's committed pending events; the new last number is announced.
async fn number_once(
    pool: &sqlx::PgPool,
    signals: &crate::signals::Signals,
    tenant: TenantId,
    hot: bool,
) {
    let in_database = signals.in_database();
    // After hot transactions (ones that did not wait for the disk) the numbering does not wait either; the
    // setting counts at this statement's own commit.
    let sql = if hot {
        "select sys_number_live_events($1, $2, p_lock_timeout_ms => $3),
                set_config('synchronous_commit', 'off', true)"
    } else {
        "select sys_number_live_events($1, $2, p_lock_timeout_ms => $3), ''"
    };
    let numbered: std::result::Result<(Option<i64>, String), sqlx::Error> = sqlx::query_as(sql)
        .bind(tenant.0)
        .bind(in_database)
        .bind(NUMBERING_WAIT_MS)
        .fetch_one(pool)
        .await;
    match numbered {
        Ok((Some(last), _)) if !in_database => signals.announce_after_commit(tenant, last),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            tenant.id = %tenant.0, error = %e,
            "live events committed but not numbered yet; the periodic look numbers them"
        ),
    }
}

/// How long a numbering waits for the tenant's numbering held by another (a stalled billing transaction, say):
/// after a commit it then leaves its events to the periodic look; inside a transaction the transaction fails.
pub const NUMBERING_WAIT_MS: i32 = 5_000;

/// Numbers the tenant's committed pending events and then `events` (this transaction's own, not appended) inside
/// the transaction: the tenant's numbering is held until it commits (see
/// [`crate::TenantTx::number_events_before_commit`]). Waits at most [`NUMBERING_WAIT_MS`] for the numbering, then
/// fails the transaction (its writer tries again: the next tick, the charger's next send) rather than hang. Returns
/// the new last number for the caller to publish after the commit when the database does not announce it.
pub(crate) async fn number_in_transaction(
    conn: &mut sqlx::PgConnection,
    signals: &crate::signals::Signals,
    tenant: TenantId,
    events: &[NewEvent],
) -> Result<Option<i64>> {
    let query =
        sqlx::query("select sys_number_live_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(tenant.0)
            .bind(signals.in_database());
    let row = bind_events(query, events)
        .bind(NUMBERING_WAIT_MS)
        .fetch_one(conn)
        .await?;
    Ok(sqlx::Row::try_get(&row, 0)?)
}

/// Numbers the events whose writer committed more than five seconds ago but never numbered them (its process
/// stopped in between), one tenant at a time, and announces them. Returns how many tenants had such events.
pub async fn number_stranded(db: &Db) -> Result<usize> {
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("select sys_stranded_live_event_tenants(interval '5 seconds')")
            .fetch_all(db.pool())
            .await?;
    for tenant in &tenants {
        db.numbering()
            .number(db.pool(), db.signals(), TenantId(*tenant), false)
            .await;
    }
    Ok(tenants.len())
}

/// The payload of an announcement.
pub(crate) fn announcement(tenant: TenantId, last: i64) -> String {
    format!("{}:{last}", tenant.0)
}

pub(crate) fn parse_announcement(payload: &str) -> Option<(Uuid, i64)> {
    let (tenant, last) = payload.split_once(':')?;
    Some((tenant.parse().ok()?, last.parse().ok()?))
}

/// What a subscriber receives from the hub.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<Event>),
    /// Events were missed (the subscriber was too slow, or asked to resume from beyond the window): fetch the
    /// state afresh, then subscribe again without a resume point.
    Resync,
}

/// Settings of a hub.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Events queued for one tenant's subscribers in this process; a subscriber further behind is resynced.
    pub queue: usize,
    /// Subscriptions one tenant may hold in this process.
    pub per_tenant: usize,
    /// How long events are kept for resuming.
    pub window: chrono::Duration,
    /// The most events one resume replays; a longer gap is a resync.
    pub max_replay: i64,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            queue: 1024,
            per_tenant: 5000,
            window: chrono::Duration::minutes(15),
            max_replay: 1000,
        }
    }
}

struct Feed {
    sender: broadcast::Sender<Arc<Event>>,
    /// The last number handed to the sender; only the task holding this lock reads new rows.
    last: tokio::sync::Mutex<i64>,
    subscribers: AtomicUsize,
}

/// One API process's fan-out of committed events to its subscribers.
pub struct EventHub {
    db: Db,
    limits: HubLimits,
    feeds: Mutex<HashMap<Uuid, Arc<Feed>>>,
}

/// A live subscription to one tenant's events; counted against the tenant's limit until dropped.
pub struct Subscription {
    pub receiver: broadcast::Receiver<Arc<Event>>,
    feed: Arc<Feed>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feed.subscribers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EventHub {
    pub fn new(db: Db, limits: HubLimits) -> Arc<Self> {
        Arc::new(Self {
            db,
            limits,
            feeds: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> HubLimits {
        self.limits
    }

    /// Subscriptions held in this process, all tenants together (for `/metrics`).
    pub fn subscriptions(&self) -> usize {
        self.feeds
            .lock()
            .map(|f| {
                f.values()
                    .map(|f| f.subscribers.load(Ordering::SeqCst))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Subscribes to `tenant`'s events from now on. Refused with `rate_limited` when the tenant holds its limit.
    pub async fn subscribe(&self, tenant: TenantId) -> Result<Subscription> {
        // A tenant new to this process starts from its current number: everything later is read on announcement.
        let mut tx = self.db.begin_tenant(tenant).await?;
        let start: Option<i64> =
            sqlx::query_scalar("select last_seq from live_event_counter where tenant_id = $1")
                .bind(tenant.0)
                .fetch_optional(tx.conn())
                .await?;
        tx.rollback().await?;
        let start = start.unwrap_or(0);
        // Counted under the map's lock, so that the clean-up in `catch_up` never drops a feed being joined.
        let (feed, before) = {
            let mut feeds = self.lock();
            let feed = feeds
                .entry(tenant.0)
                .or_insert_with(|| {
                    Arc::new(Feed {
                        sender: broadcast::channel(self.limits.queue.max(1)).0,
                        last: tokio::sync::Mutex::new(start),
                        subscribers: AtomicUsize::new(0),
                    })
                })
                .clone();
            let before = feed.subscribers.fetch_add(1, Ordering::SeqCst);
            (feed, before)
        };
        let subscription = Subscription {
            receiver: feed.sender.subscribe(),
            feed,
        };
        if before >= self.limits.per_tenant {
            return Err(Error::TooMany(
                "this account holds as many live subscriptions as it may; close some first",
            ));
        }
        Ok(subscription)
    }

    /// The tenant's events after `after`, oldest first, or `None` when some of them are no longer kept (or more
    /// than the replay limit are missing): the subscriber must resync.
    pub async fn replay(&self, tenant: TenantId, after: i64) -> Result<Option<Vec<Event>>> {
        let mut tx = self.db.begin_tenant(tenant).await?;
        let last: i64 = sqlx::query_scalar(
            "select coalesce((select last_seq from live_event_counter where tenant_id = $1), 0)",
        )
        .bind(tenant.0)
        .fetch_one(tx.conn())
        .await?;
        if after > last || after < 0 {
            return Ok(None);
        }
        if last - after > self.limits.max_replay {
            return Ok(None);
        }
        let events: Vec<Event> = sqlx::query_as(
            "select tenant_id, seq, kind, venue_id, station_id, subject_id, patron_id, user_id, data, created_at
             from live_event where tenant_id = $1 and seq > $2 and seq <= $3 and created_at >= $4 order by seq",
        )
        .bind(tenant.0)
        .bind(after)
        .bind(last)
        .bind(Utc::now() - self.limits.window)
        .fetch_all(tx.conn())
        .await?;
        tx.rollback().await?;
        // Every number in (after, last] must be there: a purged or out-of-window one means a gap.
        if events.len() as i64 != last - after {
            return Ok(None);
        }
        Ok(Some(events))
    }

    /// An announcement: reads `tenant`'s new events (if anyone here listens) and hands them to its subscribers.
    pub async fn announce(&self, tenant: Uuid, last: i64) {
        let Some(feed) = self.feed(tenant) else {
            return;
        };
        let mut seen = feed.last.lock().await;
        if *seen >= last {
            return;
        }
        if let Err(e) = self.deliver(tenant, &feed, &mut seen).await {
            tracing::warn!(tenant.id = %tenant, error = %e, "cannot read new live events");
        }
    }

    /// Reads the new events in pages: bounded, the statement keeps one plan on its connection (without a limit
    /// `seq > $2` was planned again on every call, as the kept plan could not know how few rows follow).
    async fn deliver(&self, tenant: Uuid, feed: &Feed, seen: &mut i64) -> Result<()> {
        const PAGE: usize = 500;
        let mut tx = self.db.begin_tenant(TenantId(tenant)).await?;
        loop {
            let events: Vec<Event> = sqlx::query_as(
                "select tenant_id, seq, kind, venue_id, station_id, subject_id, patron_id, user_id, data, created_at
                 from live_event where tenant_id = $1 and seq > $2 order by seq limit $3",
            )
            .bind(tenant)
            .bind(*seen)
            .bind(PAGE as i64)
            .fetch_all(tx.conn())
            .await?;
            let more = events.len() == PAGE;
            for event in events {
                *seen = event.seq;
                metrics::counter!("live_events_delivered_total").increment(1);
                // No receivers is fine: the last subscriber may just have left.
                let _ = feed.sender.send(Arc::new(event));
            }
            if !more {
                break;
            }
        }
        tx.rollback().await?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Feed>>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn feed(&self, tenant: Uuid) -> Option<Arc<Feed>> {
        self.lock().get(&tenant).cloned()
    }

    /// Runs for as long as the process does: delivers on every announcement, looks for missed ones every
    /// `poll`, and forgets tenants nobody here listens to. The look runs beside the announcements, one at a time:
    /// numbering other tenants' stranded events can wait on their numbering locks, and announcements must not
    /// wait for it.
    pub async fn run(
        self: Arc<Self>,
        mut announcements: broadcast::Receiver<(Uuid, i64)>,
        poll: Duration,
    ) {
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let looking = Arc::new(AtomicBool::new(false));
        loop {
            tokio::select! {
                received = announcements.recv() => match received {
                    Ok((tenant, last)) => {
                        let hub = self.clone();
                        // One slow tenant must not hold up the others.
                        tokio::spawn(async move { hub.announce(tenant, last).await });
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.look(&looking),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick() => self.look(&looking),
            }
        }
    }

    /// Starts a [`Self::catch_up`] unless one is running.
    fn look(self: &Arc<Self>, looking: &Arc<AtomicBool>) {
        if looking.swap(true, Ordering::SeqCst) {
            return;
        }
        /// Lets the next look start when this one ends, however it ends.
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        let (hub, done) = (self.clone(), Done(looking.clone()));
        tokio::spawn(async move {
            let _done = done;
            hub.catch_up().await;
        });
    }

    /// Looks at every tenant with subscribers here for events not yet delivered (a lost announcement), then
    /// numbers any a writer left unnumbered (their numbering announces them).
    async fn catch_up(&self) {
        let tenants: Vec<Uuid> = {
            let mut feeds = self.lock();
            feeds.retain(|_, f| f.subscribers.load(Ordering::SeqCst) > 0);
            feeds.keys().copied().collect()
        };
        for tenant in tenants {
            self.announce(tenant, i64::MAX).await;
        }
        // Events a writer committed but never numbered (it stopped in between), after a grace period in which
        // their writer would have.
        match number_stranded(&self.db).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                tenants = n,
                "numbered live events their writer left unnumbered"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot number stranded live events"),
        }
    }
}
