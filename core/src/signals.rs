//! Wake-ups between processes: "this venue has new device commands", so that whichever API replica holds the
//! venue's bridge tunnel pushes them at once. Two carriers, chosen by `REDIS_URL`:
//!
//! - **Postgres** `notify` (the default): one database is all it needs; the wake-up is sent inside the transaction
//!   that wrote the commands, so it is delivered exactly when they commit.
//! - **Redis** pub/sub: for several API replicas; published right after the commit, which keeps Postgres commits
//!   free of the notify queue's global lock.
//!
//! A lost wake-up (Redis down for a moment) only delays the commands until the bridge's next heartbeat, when the
//! tunnel looks for anything undelivered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, OnceCell};
use uuid::Uuid;

use crate::db::{Db, TenantId};
use crate::error::{Error, Result};

/// The channel (Postgres `listen` / Redis `subscribe`); payload `<tenant id>:<venue id>`.
pub const COMMANDS: &str = "switchyard_commands";

/// What a listener hears: commands for a venue, or a tenant's new live events up to a number.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub commands: broadcast::Sender<(Uuid, Uuid)>,
    pub events: broadcast::Sender<(Uuid, i64)>,
}

/// How wake-ups travel between processes.
#[derive(Clone, Default)]
pub enum Signals {
    #[default]
    Postgres,
    Redis(Arc<Redis>),
}

pub struct Redis {
    client: redis::Client,
    publisher: OnceCell<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres => "postgres",
            Self::Redis(_) => "redis",
        })
    }
}

impl Signals {
    /// Redis pub/sub at `url` (`redis://host:6379`), else Postgres `notify`. The URL is checked now; the
    /// connection is made on first use.
    pub fn from_url(url: Option<&str>) -> anyhow::Result<Self> {
        Ok(match url {
            None => Self::Postgres,
            Some(url) => Self::Redis(Arc::new(Redis {
                client: redis::Client::open(url).map_err(|e| {
                    anyhow::anyhow!("REDIS_URL must be a URL like redis://127.0.0.1:6379 ({e})")
                })?,
                publisher: OnceCell::new(),
            })),
        })
    }

    fn payload(tenant: TenantId, venue: Uuid) -> String {
        format!("{}:{venue}", tenant.0)
    }

    /// Postgres: notifies inside the transaction (delivered at its commit).
    pub(crate) async fn in_transaction(
        &self,
        conn: &mut sqlx::PgConnection,
        tenant: TenantId,
        venue: Uuid,
    ) -> Result<bool> {
        if let Self::Postgres = self {
            sqlx::query("select pg_notify($1, $2)")
                .bind(COMMANDS)
                .bind(Self::payload(tenant, venue))
                .execute(conn)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Postgres: live events are announced by the database itself, at the commit of their numbering
    /// (`sys_number_live_events`); Redis: the numbering's caller publishes them ([`Signals::announce_after_commit`]).
    pub(crate) fn in_database(&self) -> bool {
        matches!(self, Self::Postgres)
    }

    /// Redis: announces a tenant's new live events after the commit (in the background, like wake-ups).
    pub(crate) fn announce_after_commit(&self, tenant: TenantId, last: i64) {
        self.publish(
            crate::events::CHANNEL,
            vec![crate::events::announcement(tenant, last)],
        );
    }

    /// Redis: publishes after the commit, in the background so that a slow or absent Redis never holds up the
    /// request. A failure is logged: the commit has happened, and the bridge's next heartbeat collects the
    /// commands anyway.
    pub(crate) fn after_commit(&self, tenant: TenantId, venues: Vec<Uuid>) {
        let payloads = venues
            .into_iter()
            .map(|venue| Self::payload(tenant, venue))
            .collect();
        self.publish(COMMANDS, payloads);
    }

    fn publish(&self, channel: &'static str, payloads: Vec<String>) {
        let Self::Redis(redis) = self else { return };
        if payloads.is_empty() {
            return;
        }
        let redis = redis.clone();
        tokio::spawn(async move {
            let published = async {
                let mut conn = redis
                    .publisher
                    .get_or_try_init(|| redis.client.get_connection_manager())
                    .await?
                    .clone();
                for payload in payloads {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(payload)
                        .exec_async(&mut conn)
                        .await?;
                }
                Ok::<_, redis::RedisError>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), published).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, channel, "cannot publish to Redis"),
                Err(_) => tracing::warn!(channel, "publishing to Redis timed out"),
            }
        });
    }

    /// For `/readyz`: `None` without Redis, else whether Redis answers a `PING` within two seconds.
    pub async fn redis_reachable(&self) -> Option<bool> {
        let Self::Redis(redis) = self else {
            return None;
        };
        let ping = async {
            let mut conn = redis
                .publisher
                .get_or_try_init(|| redis.client.get_connection_manager())
                .await?
                .clone();
            redis::cmd("PING").exec_async(&mut conn).await
        };
        Some(matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(()))
        ))
    }

    /// Feeds every wake-up, `(tenant, venue)`, and every live-event announcement, `(tenant, last seq)`, to
    /// `listeners` for as long as the process runs, reconnecting after a lost connection.
    pub async fn listen(self, db: Db, listeners: Listeners) {
        loop {
            let result = match &self {
                Self::Postgres => listen_postgres(&db, &listeners).await,
                Self::Redis(redis) => listen_redis(redis, &listeners).await,
            };
            if let Err(e) = result {
                tracing::warn!(carrier = ?self, error = %e, "cannot listen for wake-ups; retrying");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn parse(payload: &str) -> Option<(Uuid, Uuid)> {
    let (tenant, venue) = payload.split_once(':')?;
    Some((tenant.parse().ok()?, venue.parse().ok()?))
}

fn dispatch(listeners: &Listeners, channel: &str, payload: &str) {
    if channel == COMMANDS {
        if let Some(target) = parse(payload) {
            let _ = listeners.commands.send(target);
        }
    } else if let Some(announced) = crate::events::parse_announcement(payload) {
        let _ = listeners.events.send(announced);
    }
}

async fn listen_postgres(db: &Db, listeners: &Listeners) -> Result<()> {
    let mut listener = sqlx::postgres::PgListener::connect_with(db.pool()).await?;
    listener
        .listen_all([COMMANDS, crate::events::CHANNEL])
        .await?;
    tracing::info!("listening for wake-ups and live events on Postgres");
    loop {
        let n = listener.recv().await?;
        dispatch(listeners, n.channel(), n.payload());
    }
}

async fn listen_redis(redis: &Redis, listeners: &Listeners) -> Result<()> {
    use futures_util::StreamExt;
    let internal = |e: redis::RedisError| Error::Internal(e.into());
    let mut pubsub = redis.client.get_async_pubsub().await.map_err(internal)?;
    pubsub
        .subscribe(&[COMMANDS, crate::events::CHANNEL])
        .await
        .map_err(internal)?;
    tracing::info!("listening for wake-ups and live events on Redis");
    // A reconnection may have missed announcements: the hub's periodic look finds their events.
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        if let Ok(payload) = message.get_payload::<String>() {
            dispatch(listeners, message.get_channel_name(), &payload);
        }
    }
    Err(Error::Internal(anyhow::anyhow!(
        "the Redis subscription ended"
    )))
}
