//! Sessions: start, extend, stop, and their live cost with its explanation.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Duration, Utc};
use switchyard_core::idempotency::{self, Begin};
use switchyard_core::scope::{self, Named};
use switchyard_core::sessions::{self, Payment, SessionFilter, SessionStatus, StartSession};
use switchyard_core::{Actor, TenantTx};
use uuid::Uuid;

use crate::{begin, GqlResult};

/// How often running sessions are billed (the workers' tick), set by the API from `BILLING_TICK_SEC`.
#[derive(Clone, Copy)]
pub struct BillingTick(pub Duration);

pub struct Session(pub sessions::Session);

/// An amount with the lines that explain it.
#[derive(SimpleObject)]
pub struct Cost {
    pub amount: i64,
    pub currency: String,
    pub lines: Vec<CostLine>,
}

#[derive(SimpleObject)]
pub struct CostLine {
    /// `free_period`, `time`, `daily_cap`, `energy`, `minimum_charge`, `tier_discount`, `buyout_cap`.
    pub kind: String,
    pub description: String,
    pub amount: i64,
}

impl From<switchyard_core::pricing::Price> for Cost {
    fn from(price: switchyard_core::pricing::Price) -> Self {
        Cost {
            amount: price.amount,
            currency: price.currency,
            lines: price
                .lines
                .into_iter()
                .map(|l| CostLine {
                    kind: l.kind,
                    description: l.description,
                    amount: l.amount,
                })
                .collect(),
        }
    }
}

/// A paused interval of a session.
#[derive(async_graphql::SimpleObject)]
pub struct Pause {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[Object]
impl Session {
    /// Why the session's patron is flagged (the safety log), so staff starting a session are warned; `null` when
    /// not flagged, and always for the patron itself.
    async fn patron_flag(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        Ok(crate::staff::flag_for_members(ctx, self.0.patron_id)
            .await?
            .flatten()
            .map(|f| f.reason))
    }

    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn station_id(&self) -> Uuid {
        self.0.station_id
    }
    async fn venue_id(&self) -> Uuid {
        self.0.venue_id
    }
    async fn patron_id(&self) -> Uuid {
        self.0.patron_id
    }
    async fn status(&self) -> SessionStatus {
        self.0.status
    }
    async fn tariff_id(&self) -> Uuid {
        self.0.tariff_id
    }
    /// The tariff version this session is priced by, whatever changed since.
    async fn tariff_version(&self) -> i32 {
        self.0.tariff_version
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }
    async fn planned_end_at(&self) -> Option<DateTime<Utc>> {
        self.0.planned_end_at
    }
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.0.ended_at
    }
    /// When the station was actually switched off at the end, as its edge bridge reported it (a bridge that ended
    /// the session on time while offline reports it after reconnecting; billing ends there).
    async fn switched_off_at(&self) -> Option<DateTime<Utc>> {
        self.0.switched_off_at
    }
    /// Seconds until the planned end (timed sessions that are running; frozen while paused).
    async fn remaining_seconds(&self) -> Option<i64> {
        self.0
            .remaining_seconds(Utc::now())
            .filter(|_| self.0.is_running())
    }
    /// When the open pause began (paused sessions).
    async fn paused_at(&self) -> Option<DateTime<Utc>> {
        self.0.paused_at
    }
    /// Closed pauses, oldest first: time that was not billed.
    async fn pauses(&self) -> Vec<Pause> {
        self.0
            .pauses
            .iter()
            .map(|&(from, to)| Pause { from, to })
            .collect()
    }
    /// Who started it: `staff`, `patron`, or `device` (a charger's own transaction).
    async fn origin(&self) -> &str {
        &self.0.origin
    }
    /// Energy metered so far (Wh), where the station's device reports a meter.
    async fn energy_wh(&self) -> i64 {
        self.0.energy_wh
    }
    /// The power last read (W), where the device reports it.
    async fn power_w(&self) -> Option<i32> {
        self.0.power_w
    }
    /// The charger connector it runs on.
    async fn connector(&self) -> Option<i32> {
        self.0.connector
    }
    /// What has been charged to the ledger so far.
    async fn charged_amount(&self) -> i64 {
        self.0.charged_amount
    }
    /// The cost of the usage so far (or of the whole session once ended), with why.
    async fn live_cost(&self) -> Cost {
        self.0.cost_at(Utc::now()).into()
    }

    /// The patron's name (`null` for an anonymous walk-in). Members only.
    async fn patron_name(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let (_, mut tx) = begin(ctx).await?;
        sessions::patron_name(&mut tx, self.0.patron_id).await.gql()
    }

    /// The powerbank a rental took (its label); `null` for other sessions. Members only.
    async fn asset_label(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let Some(asset) = self.0.asset_id else {
            return Ok(None);
        };
        let (_, mut tx) = begin(ctx).await?;
        Ok(Some(
            switchyard_core::rentals::asset_label(&mut tx, asset)
                .await
                .gql()?,
        ))
    }

    /// How it was paid: `wallet`, `cash` (taken by staff for a walk-in) or `card` (the saved card charged at the
    /// start). Members only.
    async fn payment_method(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let (_, mut tx) = begin(ctx).await?;
        sessions::payment_method(&mut tx, self.0.id).await.gql()
    }

    /// Every ledger entry written for it, oldest first: what each journal took from whose account and put where.
    /// Members only.
    async fn ledger_entries(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<SessionLedgerEntry>> {
        let (_, mut tx) = begin(ctx).await?;
        let entries = switchyard_core::ledger::session_entries(&mut tx, self.0.id)
            .await
            .gql()?;
        Ok(entries
            .into_iter()
            .map(|e| SessionLedgerEntry {
                journal_id: e.journal_id,
                kind: e.kind,
                memo: e.memo,
                owner_kind: e.owner_kind,
                purpose: e.purpose,
                amount: e.amount,
                currency: e.currency,
                created_at: e.created_at,
            })
            .collect())
    }

    /// The commands its station's control was sent for it (switch on, extend, switch off), oldest first. Members
    /// only.
    async fn device_commands(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<DeviceCommand>> {
        let (_, mut tx) = begin(ctx).await?;
        let commands = sessions::commands_of(&mut tx, self.0.id).await.gql()?;
        Ok(commands.into_iter().map(DeviceCommand::from).collect())
    }
}

/// One ledger entry of a session: an amount moved on one account by one journal.
#[derive(SimpleObject)]
pub struct SessionLedgerEntry {
    pub journal_id: Uuid,
    /// What the journal was: `session_charge`, `cash_top_up`, `deposit_hold`, ...
    pub kind: String,
    pub memo: String,
    /// Whose account: `patron` or `venue`.
    pub owner_kind: String,
    /// What the account is for: `wallet`, `deposit_hold`, `debt`, `revenue`, `cash_drawer`, `clearing`.
    pub purpose: String,
    /// Minor units; the entries of one journal sum to zero.
    pub amount: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

#[derive(InputObject)]
pub struct StartSessionInput {
    pub station_id: Uuid,
    /// Omit for a cash walk-in: an anonymous patron is created.
    pub patron_id: Option<Uuid>,
    /// Omit for an open-ended session billed until stopped (wallet only).
    pub duration_minutes: Option<i64>,
    pub payment: Payment,
}

#[derive(Default)]
pub struct SessionQuery;

#[Object]
impl SessionQuery {
    async fn session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        let session = sessions::get(&mut tx, id).await.gql()?;
        actor.check_venue(session.venue_id, "session").gql()?;
        Ok(Session(session))
    }

    /// Sessions, newest first (`limit` at most 500): of one status, station, patron or venue, started in
    /// `[from, to)`; a venue-scoped member sees its venues' only.
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    #[expect(
        clippy::too_many_arguments,
        reason = "each argument is one optional filter of the query"
    )]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        status: Option<SessionStatus>,
        station_id: Option<Uuid>,
        patron_id: Option<Uuid>,
        venue_id: Option<Uuid>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<Session>> {
        let (actor, mut tx) = begin(ctx).await?;
        let filter = SessionFilter {
            status,
            station_id,
            patron_id,
            venues: actor.venues.clone(),
            venue_id,
            started_from: from,
            started_before: to,
        };
        let rows = sessions::list(&mut tx, &filter, limit)
            .await
            .gql()?
            .into_iter()
            .map(Session)
            .collect();
        let named = [
            Named::Station(station_id),
            Named::Patron(patron_id),
            Named::Venue(venue_id),
        ];
        scope::listed(&mut tx, actor, rows, &named).await.gql()
    }

    /// The latest `limit` (at most 500) commands written for a station's control, oldest first (the edge bridge
    /// consumes them).
    #[graphql(complexity = "crate::rows(limit, child_complexity)")]
    async fn device_commands(
        &self,
        ctx: &Context<'_>,
        station_id: Uuid,
        #[graphql(default = 100)] limit: i64,
    ) -> async_graphql::Result<Vec<DeviceCommand>> {
        let (actor, mut tx) = begin(ctx).await?;
        switchyard_core::stations::get(&mut tx, station_id)
            .await
            .gql()?;
        scope::station(&mut tx, actor, station_id).await.gql()?;
        let commands = sessions::device_commands(&mut tx, station_id, limit)
            .await
            .gql()?;
        Ok(commands.into_iter().map(DeviceCommand::from).collect())
    }
}

#[derive(SimpleObject)]
pub struct DeviceCommand {
    pub id: Uuid,
    pub session_id: Option<Uuid>,
    /// `switch_on`, `extend`, `switch_off`, `warn`, `pause`, `resume`, `eject`, `accept_return`.
    pub command: String,
    pub payload: async_graphql::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// When a tunnel took it to send it to the venue's bridge (or the workers closed it unsent); none while it
    /// waits.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the bridge acknowledged it (an eject: when it passed it on to the cabinet), or the workers closed it.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// `ok`, the bridge's error text, or `expired` (closed unsent past its deadline).
    pub result: Option<String>,
    /// A bridge-driven cabinet's eject: when the cabinet's answer is due.
    pub deadline_at: Option<DateTime<Utc>>,
    /// An eject's answer: when it came ...
    pub answered_at: Option<DateTime<Utc>>,
    /// ... and what became of the powerbank: `ejected` or `not_ejected` (the cabinet's report, or the bridge's after
    /// its timeout), `expired` (no bridge took it in time), `staff_ejected` or `staff_not_ejected` (settled by hand).
    pub outcome: Option<String>,
}

impl From<sessions::DeviceCommand> for DeviceCommand {
    fn from(c: sessions::DeviceCommand) -> Self {
        Self {
            id: c.id,
            session_id: c.session_id,
            command: c.command,
            payload: async_graphql::Json(c.payload),
            created_at: c.created_at,
            delivered_at: c.delivered_at,
            acknowledged_at: c.acked_at,
            result: c.result,
            deadline_at: c.deadline_at,
            answered_at: c.answered_at,
            outcome: c.outcome,
        }
    }
}

/// Runs a session-creating `run` once per idempotency key: a repeat with the same request returns the session the
/// first one made; another request with the key is refused. Without a key, `run` simply runs.
pub(crate) async fn once<F, Fut>(
    mut tx: TenantTx,
    actor: &Actor,
    scope: &str,
    key: Option<String>,
    request: &serde_json::Value,
    run: F,
) -> async_graphql::Result<Session>
where
    F: FnOnce(TenantTx) -> Fut,
    Fut: std::future::Future<Output = switchyard_core::Result<(TenantTx, sessions::Session)>>,
{
    if let Some(key) = &key {
        let fingerprint = idempotency::fingerprint_by(actor.user_id, request);
        if let Begin::Replay { body, .. } = idempotency::begin(&mut tx, scope, key, &fingerprint)
            .await
            .gql()?
        {
            let id = body["session_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_default();
            return Ok(Session(sessions::get(&mut tx, id).await.gql()?));
        }
    }
    let (mut tx, session) = run(tx).await.gql()?;
    if let Some(key) = &key {
        let body = serde_json::json!({ "session_id": session.id });
        idempotency::finish(&mut tx, scope, key, 201, &body)
            .await
            .gql()?;
    }
    tx.commit().await.gql()?;
    Ok(Session(session))
}

#[derive(Default)]
pub struct SessionMutation;

#[Object]
impl SessionMutation {
    /// Starts a session. With `idempotencyKey`, a retried start returns the same session instead of a second one.
    async fn start_session(
        &self,
        ctx: &Context<'_>,
        input: StartSessionInput,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::station(&mut tx, actor, input.station_id)
            .await
            .gql()?;
        let tick = ctx.data::<BillingTick>()?.0;
        let request = serde_json::json!({
            "station_id": input.station_id, "patron_id": input.patron_id,
            "duration_minutes": input.duration_minutes, "payment": input.payment,
        });
        let start = StartSession {
            station_id: input.station_id,
            patron_id: input.patron_id,
            duration_minutes: input.duration_minutes,
            payment: input.payment,
        };
        once(
            tx,
            actor,
            "graphql.startSession",
            idempotency_key,
            &request,
            |mut tx| async move {
                let session = sessions::start(&mut tx, actor, start, tick).await?;
                Ok((tx, session))
            },
        )
        .await
    }

    /// Adds minutes to a timed session (the wallet must cover the longer plan). With `idempotencyKey`, a retried
    /// extension (its answer lost) returns the session instead of adding the minutes again.
    async fn extend_session(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        minutes: i64,
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::session(&mut tx, actor, id).await.gql()?;
        let request = serde_json::json!({ "session_id": id, "minutes": minutes });
        once(
            tx,
            actor,
            "graphql.extendSession",
            idempotency_key,
            &request,
            |mut tx| async move {
                let session = sessions::extend(&mut tx, actor, id, minutes).await?;
                Ok((tx, session))
            },
        )
        .await
    }

    /// Pauses a running session: the station switches off, the time is not billed and the remaining time freezes.
    async fn pause_session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::session(&mut tx, actor, id).await.gql()?;
        let session = sessions::pause(&mut tx, actor, id, Utc::now())
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Session(session))
    }

    /// Resumes a paused session: the station switches on and the planned end moves later by the pause.
    async fn resume_session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::session(&mut tx, actor, id).await.gql()?;
        let tick = ctx.data::<BillingTick>()?.0;
        let session = sessions::resume(&mut tx, actor, id, Utc::now(), tick)
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Session(session))
    }

    /// Stops a session now and settles it. Stopping it again returns it unchanged.
    async fn stop_session(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Session> {
        let (actor, mut tx) = begin(ctx).await?;
        scope::session(&mut tx, actor, id).await.gql()?;
        let session = sessions::stop(&mut tx, Some(actor), id, Utc::now())
            .await
            .gql()?;
        tx.commit().await.gql()?;
        Ok(Session(session))
    }
}
