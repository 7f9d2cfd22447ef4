//! Subscriptions: live events over `/graphql/ws`, confined like queries.
//!
//! Every field is one filtered view of the tenant's event stream ([`switchyard_core::events`]). A field taking
//! `after` resumes: the events after that number are replayed first, then the live ones follow, each once, in
//! order. When the events asked for are no longer kept, or the subscriber falls too far behind, it receives one
//! `stream.resync` event and the stream ends: fetch the state with queries, then subscribe again.

use std::collections::VecDeque;
use std::sync::Arc;

use async_graphql::futures_util::stream::{self, Stream, StreamExt};
use async_graphql::{Context, Json, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use switchyard_core::events::{Event, EventHub, Subscription as HubSubscription};
use switchyard_core::{Db, ErrorCode, Principal, Role};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::{coded, GqlResult};

/// The kind of the one event sent before a stream ends because events were missed.
pub const RESYNC: &str = "stream.resync";

/// A `/graphql/ws` connection's subscription slots (`SUBSCRIPTIONS_PER_CONNECTION`), put in the connection's data.
#[derive(Clone)]
pub struct ConnectionSlots(pub Arc<Semaphore>);

/// Something that changed.
pub struct LiveEvent(Arc<Event>);

#[Object]
impl LiveEvent {
    /// The tenant's event number: pass the last one seen as `after` when subscribing again.
    async fn seq(&self) -> i64 {
        self.0.seq
    }

    /// `<topic>.<what>`: `session.started`, `station.status`, `wallet.changed`, ..., or `stream.resync`.
    async fn kind(&self) -> &str {
        &self.0.kind
    }

    async fn venue_id(&self) -> Option<ID> {
        self.0.venue_id.map(id)
    }

    async fn station_id(&self) -> Option<ID> {
        self.0.station_id.map(id)
    }

    /// The session, rental, SOS, task or bridge the event is about.
    async fn subject_id(&self) -> Option<ID> {
        self.0.subject_id.map(id)
    }

    async fn patron_id(&self) -> Option<ID> {
        self.0.patron_id.map(id)
    }

    /// When the change was committed.
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// The kind's details (see the manual's table of event kinds).
    async fn data(&self) -> Json<&serde_json::Value> {
        Json(&self.0.data)
    }
}

/// The venue dashboard after the event `seq` (0 for the first snapshot).
pub struct DashboardUpdate {
    seq: i64,
    dashboard: switchyard_core::dashboard::Dashboard,
}

#[Object]
impl DashboardUpdate {
    /// The last event the snapshot includes.
    async fn seq(&self) -> i64 {
        self.seq
    }

    /// The grid, shaped as `GET /api/v1/dashboard` answers it.
    async fn dashboard(&self) -> Json<&switchyard_core::dashboard::Dashboard> {
        Json(&self.dashboard)
    }
}

async fn snapshot(
    db: &Db,
    principal: &Principal,
    venue: Option<Uuid>,
    seq: i64,
) -> switchyard_core::Result<DashboardUpdate> {
    let Principal::Member(actor) = principal else {
        return Err(switchyard_core::Error::Forbidden(
            "the dashboard is for the operator's staff",
        ));
    };
    let mut tx = db.begin_tenant(actor.tenant).await?;
    let dashboard = switchyard_core::dashboard::build(&mut tx, actor, venue, Utc::now()).await?;
    tx.rollback().await?;
    Ok(DashboardUpdate { seq, dashboard })
}

fn id(u: Uuid) -> ID {
    ID(u.to_string())
}

/// Whether `principal` may hear `event`: the same confinement as queries. The tenant is already the subscriber's
/// (the hub keeps one stream per tenant).
pub fn visible(principal: &Principal, event: &Event) -> bool {
    if event.topic() == "member" {
        // Membership changes steer connections; they are not news.
        return false;
    }
    match principal {
        // A patron hears only what is its own: its sessions, rentals, wallet, payments and alerts.
        Principal::Patron(patron) => event.patron_id == Some(patron.patron_id),
        // A member scoped to some venues hears nothing of the others; events of no venue (bridges of the tenant,
        // a patron flagged without a venue) reach every member, but those of chargers on no station (waiting for
        // adoption, refused, forgotten) only the owners and managers, who alone manage chargers.
        Principal::Member(actor) => match (actor.role, event.venue_id) {
            (Role::Owner, _) => true,
            (Role::Manager, None) => true,
            (Role::Staff, None) => event.topic() != "charger",
            (Role::Manager | Role::Staff, Some(v)) => actor.sees_venue(v),
        },
    }
}

/// The topics of `staffAlerts`: SOS, tasks, safety flags and ejects waiting for staff.
const STAFF_ALERTS: &[&str] = &["sos", "task", "safety", "rental"];

/// Which events a field carries, besides confinement.
struct Filter {
    topics: &'static [&'static str],
    venue: Option<Uuid>,
}

impl Filter {
    fn passes(&self, event: &Event) -> bool {
        (self.topics.is_empty() || self.topics.contains(&event.topic()))
            && self.venue.is_none_or(|v| event.venue_id == Some(v))
    }
}

fn parse_venue(venue_id: Option<ID>) -> async_graphql::Result<Option<Uuid>> {
    venue_id
        .map(|v| {
            v.parse::<Uuid>()
                .map_err(|_| coded(ErrorCode::NotFound, "venue not found"))
        })
        .transpose()
}

/// A field's venue filter, checked before anything streams: another tenant's venue, an unknown one, or one outside
/// a member's venue scope is `not_found`, as in queries — never a stream that stays silent.
async fn venue_filter(
    ctx: &Context<'_>,
    venue_id: Option<ID>,
) -> async_graphql::Result<Option<Uuid>> {
    let venue = parse_venue(venue_id)?;
    // Without a principal, `open` answers `unauthenticated`.
    if let (Some(v), Some(principal)) = (venue, ctx.data_opt::<Principal>()) {
        if let Principal::Member(actor) = principal {
            actor.check_venue(v, "venue").gql()?;
        }
        let mut tx = ctx
            .data::<Db>()?
            .begin_tenant(principal.tenant())
            .await
            .gql()?;
        switchyard_core::venues::get(&mut tx, v).await.gql()?;
        tx.rollback().await.gql()?;
    }
    Ok(venue)
}

struct State {
    principal: Principal,
    filter: Filter,
    replay: VecDeque<Arc<Event>>,
    last: i64,
    live: HubSubscription,
    resync: bool,
    done: bool,
    _slot: Option<OwnedSemaphorePermit>,
}

/// Opens a confined stream: slots first (connection, then tenant), then the live queue, then the replay, so that
/// nothing committed between the two is missed; live events already replayed are skipped by number.
async fn open(
    ctx: &Context<'_>,
    filter: Filter,
    after: Option<i64>,
) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
    let principal = ctx
        .data_opt::<Principal>()
        .cloned()
        .ok_or_else(|| {
            coded(
                ErrorCode::Unauthenticated,
                "subscriptions need a signed-in connection: send {\"authorization\": \"Bearer <access token>\"} in connection_init",
            )
        })?;
    let slot = match ctx.data_opt::<ConnectionSlots>() {
        None => None,
        Some(slots) => Some(slots.0.clone().try_acquire_owned().map_err(|_| {
            coded(
                ErrorCode::RateLimited,
                "this connection runs as many subscriptions as it may; complete one first",
            )
        })?),
    };
    let hub = ctx.data::<Arc<EventHub>>()?;
    let tenant = principal.tenant();
    let live = hub.subscribe(tenant).await.gql()?;
    let (replay, resync) = match after {
        None => (VecDeque::new(), false),
        Some(after) => match hub.replay(tenant, after).await.gql()? {
            Some(events) => (events.into_iter().map(Arc::new).collect(), false),
            None => (VecDeque::new(), true),
        },
    };
    metrics::counter!("graphql_subscriptions_total").increment(1);
    let state = State {
        principal,
        filter,
        replay,
        last: after.unwrap_or(0),
        live,
        resync,
        done: false,
        _slot: slot,
    };
    Ok(stream::unfold(state, next).boxed())
}

async fn next(mut s: State) -> Option<(LiveEvent, State)> {
    loop {
        if s.done {
            return None;
        }
        if s.resync {
            s.done = true;
            return Some((resync(&s), s));
        }
        let event = match s.replay.pop_front() {
            Some(event) => event,
            None => match s.live.receiver.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => {
                    metrics::counter!("graphql_subscriptions_resynced_total").increment(1);
                    s.resync = true;
                    continue;
                }
                Err(RecvError::Closed) => return None,
            },
        };
        if event.seq <= s.last {
            continue;
        }
        s.last = event.seq;
        if visible(&s.principal, &event) && s.filter.passes(&event) {
            return Some((LiveEvent(event), s));
        }
    }
}

fn resync(s: &State) -> LiveEvent {
    LiveEvent(Arc::new(Event {
        tenant_id: s.principal.tenant().0,
        seq: s.last,
        kind: RESYNC.to_owned(),
        venue_id: None,
        station_id: None,
        subject_id: None,
        patron_id: None,
        user_id: None,
        data: serde_json::json!({
            "reason": "events were missed; read the current state, then subscribe again without `after`"
        }),
        created_at: Utc::now(),
    }))
}

fn members_only(ctx: &Context<'_>) -> async_graphql::Result<()> {
    match ctx.data_opt::<Principal>() {
        Some(Principal::Patron(_)) => Err(coded(
            ErrorCode::Forbidden,
            "this is for the operator's staff; patrons subscribe to myEvents",
        )),
        _ => Ok(()),
    }
}

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Everything the subscriber may hear, optionally of one venue; `after` resumes after that event number.
    async fn live_events(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<ID>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
        let filter = Filter {
            topics: &[],
            venue: venue_filter(ctx, venue_id).await?,
        };
        open(ctx, filter, after).await
    }

    /// Stations and their devices: status, online/offline (bridge and agent liveness), device state; and the
    /// venue's bridges going online or offline.
    async fn station_changes(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<ID>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
        members_only(ctx)?;
        let filter = Filter {
            topics: &["station", "bridge"],
            venue: venue_filter(ctx, venue_id).await?,
        };
        open(ctx, filter, after).await
    }

    /// Session lifecycle: started, extended, paused, resumed, warned (5 and 1 minutes), stopped, expired — each
    /// with the inputs of the live cost (`data.pricing`), so a client can tick the cost itself.
    async fn session_events(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<ID>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
        let filter = Filter {
            topics: &["session", "rental"],
            venue: venue_filter(ctx, venue_id).await?,
        };
        open(ctx, filter, after).await
    }

    /// Bridges going online and offline.
    async fn bridge_changes(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
        members_only(ctx)?;
        let filter = Filter {
            topics: &["bridge"],
            venue: None,
        };
        open(ctx, filter, after).await
    }

    /// The venue dashboard as a stream: the whole grid (stations, running sessions with their remaining time and
    /// cost) at once, then again after every change of a station, session or bridge of the venue (changes that
    /// arrive together give one snapshot). Ends after a `stream.resync`; subscribe again.
    async fn dashboard(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = DashboardUpdate>> {
        members_only(ctx)?;
        let venue = parse_venue(venue_id)?;
        let principal = ctx
            .data_opt::<Principal>()
            .cloned()
            .ok_or_else(|| coded(ErrorCode::Unauthenticated, "sign in first"))?;
        let db = ctx.data::<Db>()?.clone();
        // The venue is checked (and the first snapshot taken) before anything streams: another tenant's or an
        // unknown venue is `not_found`.
        let first = snapshot(&db, &principal, venue, 0).await.gql()?;
        let filter = Filter {
            topics: &["station", "session", "bridge"],
            venue,
        };
        let changes = open(ctx, filter, None).await?;
        let updates = changes.ready_chunks(256).then(move |batch| {
            let (db, principal) = (db.clone(), principal.clone());
            async move {
                let seq = batch.last().map_or(0, |e| e.0.seq);
                snapshot(&db, &principal, venue, seq).await
            }
        });
        Ok(stream::once(async move { first })
            .chain(
                updates
                    .take_while(|r| std::future::ready(r.is_ok()))
                    .filter_map(|r| std::future::ready(r.ok())),
            )
            .boxed())
    }

    /// Staff alerts: SOS (`sos.raised`, `sos.acknowledged`, `sos.responded`, `sos.resolved`), tasks
    /// (`task.created`, `task.assigned`, `task.completed`, `task.cancelled`), safety flags (`safety.*`) and ejects
    /// that came to wait for staff (`rental.eject_unanswered`), optionally of one venue, within the member's venue
    /// scope. Every member of the venue hears them (on shift or not: a client that wants only its
    /// shift's alerts filters on its own clock-in).
    async fn staff_alerts(
        &self,
        ctx: &Context<'_>,
        venue_id: Option<ID>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
        members_only(ctx)?;
        let filter = Filter {
            topics: STAFF_ALERTS,
            venue: venue_filter(ctx, venue_id).await?,
        };
        open(ctx, filter, after).await
    }

    /// The signed-in patron's own sessions, rentals, wallet, payments and alerts.
    async fn my_events(
        &self,
        ctx: &Context<'_>,
        after: Option<i64>,
    ) -> async_graphql::Result<impl Stream<Item = LiveEvent>> {
        if !matches!(ctx.data_opt::<Principal>(), Some(Principal::Patron(_))) {
            return Err(coded(
                ErrorCode::Forbidden,
                "this is for a signed-in patron; members subscribe to liveEvents",
            ));
        }
        let filter = Filter {
            topics: &[],
            venue: None,
        };
        open(ctx, filter, after).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{Actor, TenantId};

    fn event(kind: &str, venue: Option<Uuid>) -> Event {
        Event {
            tenant_id: Uuid::nil(),
            seq: 1,
            kind: kind.to_owned(),
            venue_id: venue,
            station_id: None,
            subject_id: None,
            patron_id: None,
            user_id: None,
            data: serde_json::json!({}),
            created_at: Utc::now(),
        }
    }

    fn member(role: Role, venues: Option<Vec<Uuid>>) -> Principal {
        Principal::Member(Actor {
            tenant: TenantId(Uuid::nil()),
            user_id: Uuid::now_v7(),
            role,
            request_id: None,
            venues,
            client: Default::default(),
        })
    }

    #[test]
    fn a_scoped_member_hears_only_its_venues_and_an_owner_hears_all() {
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let staff = member(Role::Staff, Some(vec![mine]));
        let manager = member(Role::Manager, Some(vec![mine]));
        let everywhere = member(Role::Staff, None);
        let owner = member(Role::Owner, Some(vec![mine]));
        for kind in [
            "sos.raised",
            "task.created",
            "session.started",
            "station.status",
        ] {
            assert!(visible(&staff, &event(kind, Some(mine))), "{kind}");
            assert!(!visible(&staff, &event(kind, Some(other))), "{kind}");
            assert!(!visible(&manager, &event(kind, Some(other))), "{kind}");
            assert!(visible(&everywhere, &event(kind, Some(other))), "{kind}");
            assert!(visible(&owner, &event(kind, Some(other))), "{kind}");
        }
        assert!(visible(&staff, &event("patron.flagged", None)));
        assert!(!visible(&staff, &event("member.removed", None)));
    }

    #[test]
    fn staff_alerts_carry_sos_task_and_eject_events_of_the_chosen_venue() {
        let venue = Uuid::now_v7();
        let filter = Filter {
            topics: STAFF_ALERTS,
            venue: Some(venue),
        };
        assert!(filter.passes(&event("sos.raised", Some(venue))));
        assert!(filter.passes(&event("task.assigned", Some(venue))));
        assert!(filter.passes(&event("rental.eject_unanswered", Some(venue))));
        assert!(!filter.passes(&event("session.started", Some(venue))));
        assert!(!filter.passes(&event("sos.raised", Some(Uuid::now_v7()))));
    }
}
