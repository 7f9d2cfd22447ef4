//! `GET /edge/v1/tunnel`: the WebSocket each venue's edge bridge holds open (protocol: `switchyard-edge-protocol`).
//!
//! The bridge token is checked before the upgrade (a wrong or revoked token gets `401` and no socket). Then: the
//! bridge says `hello`; the cloud answers `welcome` (with the last event sequence it recorded) and the venue's
//! schedule, and delivers the command outbox. A wake-up for the venue (`switchyard_core::signals`: Postgres
//! `notify` or Redis pub/sub, so it reaches whichever replica holds the tunnel) makes the tunnel send the pending
//! commands and a fresh schedule; so does a heartbeat that finds commands undelivered or the schedule other than
//! the one last sent (a lost wake-up). Events are recorded once per (bridge, seq) and acknowledged; heartbeats are
//! answered with the server time. A frame that cannot be
//! used gets an `error` frame and the connection stays open; an oversized frame closes it (code 1009).
//!
//! Guards ([`EdgeLimits`]): a socket that has not said hello by a deadline is closed, pings or not; one live tunnel
//! per bridge (a new hello replaces the older tunnel, which closes; only the live one takes commands); rotating or
//! revoking the token closes the bridge's tunnels at once (the change wakes them); an event's `seq` may be at most
//! a window above the last recorded one; frames per second and bytes per minute are capped per tunnel (a flood
//! closes it with 1008).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use switchyard_core::bridges::{self, Bridge};
use switchyard_core::{auth, Db, ErrorCode, TenantId};
use switchyard_edge_protocol::Event;
use switchyard_edge_protocol::{decode, encode, Down, StationPlan, Up, MAX_FRAME_BYTES};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The error code that ends a tunnel: its bridge was revoked.
const REVOKED: &str = "revoked";

/// The error code that ends a tunnel: a newer tunnel of the same bridge took over.
const REPLACED: &str = "replaced";

/// Per-tunnel limits (settings `EDGE_*`, see the manual).
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// How long a socket has to say hello, whatever else it sends.
    pub hello_timeout: Duration,
    /// Frames a tunnel may send in one second ...
    pub max_frames_per_sec: u32,
    /// ... and bytes in one minute; past either, the tunnel is closed.
    pub max_bytes_per_min: u64,
    /// How far above the last recorded sequence an event's `seq` may be.
    pub seq_window: i64,
    /// How long a frame may wait for the bridge to take it (`WS_WRITE_TIMEOUT_MS`).
    pub write_timeout: Duration,
}

impl EdgeLimits {
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let number =
            |key: &str, default: u64| -> anyhow::Result<u64> {
                match var(key) {
                    None => Ok(default),
                    Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).with_context(|| {
                        format!("{key} must be a whole number above 0, not {v:?}")
                    }),
                }
            };
        Ok(Self {
            hello_timeout: Duration::from_millis(number("EDGE_HELLO_TIMEOUT_MS", 10_000)?),
            max_frames_per_sec: u32::try_from(number("EDGE_MAX_FRAMES_PER_SEC", 200)?)
                .context("EDGE_MAX_FRAMES_PER_SEC is too large")?,
            max_bytes_per_min: number("EDGE_MAX_BYTES_PER_MIN", 16 * 1024 * 1024)?,
            seq_window: i64::try_from(number("EDGE_SEQ_WINDOW", 1_000_000)?)
                .context("EDGE_SEQ_WINDOW is too large")?,
            write_timeout: crate::ws::write_timeout(&var)?,
        })
    }
}

pub async fn tunnel(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "send the bridge token as `Authorization: Bearer <token>`",
            )
        })?;
    let (tenant, bridge_id) = state
        .db
        .system()
        .bridge_by_token(&auth::token_hash(token))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthenticated,
                "this bridge token is not valid or was revoked; create or rotate it in the console",
            )
        })?;
    let commands = state.commands.subscribe();
    let db = state.db.clone();
    let limits = state.config.edge;
    let ocpp = state.config.ocpp;
    let chargers = state.chargers.clone();
    let token_hash = auth::token_hash(token);
    let drain = state.drain.clone();
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Frames are small: small buffers keep an idle tunnel cheap (they grow for a larger frame).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            metrics::gauge!("edge_tunnels_open").increment(1.0);
            let _held = drain.hold();
            let mut tunnel = None;
            let me = Tunnel {
                db: &db,
                tenant,
                bridge_id,
                token_hash: &token_hash,
                limits,
                ocpp,
                chargers,
                drain: drain.clone(),
            };
            if let Err(e) = serve(socket, &me, commands, &mut tunnel).await {
                tracing::info!(bridge.id = %bridge_id, error = %e, "tunnel ended");
            }
            metrics::gauge!("edge_tunnels_open").decrement(1.0);
            if let (Some(tunnel), Ok(mut tx)) = (tunnel, db.begin_tenant(tenant).await) {
                if bridges::tunnel_closed(&mut tx, bridge_id, tunnel)
                    .await
                    .is_ok()
                {
                    let _ = tx.commit().await;
                }
            }
        }))
}

/// Sends a frame, unless the bridge takes nothing for the write timeout.
async fn send(socket: &mut WebSocket, me: &Tunnel<'_>, message: &Down) -> anyhow::Result<()> {
    let frame = Message::text(encode(message));
    crate::ws::send(socket, frame, me.limits.write_timeout, "tunnel").await
}

fn error(code: &str, message: impl Into<String>) -> Down {
    Down::Error {
        code: code.into(),
        message: message.into(),
        seq: None,
    }
}

/// One tunnel's fixed facts.
struct Tunnel<'a> {
    db: &'a Db,
    tenant: TenantId,
    bridge_id: Uuid,
    /// The hash of the token it connected with: when the bridge's token changes, the tunnel ends.
    token_hash: &'a [u8],
    limits: EdgeLimits,
    /// For the chargers the bridge relays.
    ocpp: crate::ocpp::OcppSettings,
    chargers: std::sync::Arc<crate::ocpp::Shared>,
    /// The process is stopping: the tunnel closes so that the bridge reconnects to another replica.
    drain: crate::drain::Drain,
}

/// Counts what a tunnel receives, in fixed one-second and one-minute windows.
struct Meter {
    second: (tokio::time::Instant, u32),
    minute: (tokio::time::Instant, u64),
}

impl Meter {
    fn new() -> Self {
        let now = tokio::time::Instant::now();
        Self {
            second: (now, 0),
            minute: (now, 0),
        }
    }

    /// Counts one frame of `bytes`; false when a limit is passed.
    fn allow(&mut self, bytes: usize, limits: &EdgeLimits) -> bool {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.second.0) >= Duration::from_secs(1) {
            self.second = (now, 0);
        }
        if now.duration_since(self.minute.0) >= Duration::from_secs(60) {
            self.minute = (now, 0);
        }
        self.second.1 += 1;
        self.minute.1 += bytes as u64;
        self.second.1 <= limits.max_frames_per_sec && self.minute.1 <= limits.max_bytes_per_min
    }
}

async fn close(socket: &mut WebSocket, me: &Tunnel<'_>, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = crate::ws::send(socket, frame, me.limits.write_timeout, "tunnel").await;
}

/// Ends the tunnel if it is no longer its bridge's live one (token rotated, bridge revoked, a newer tunnel):
/// true when it ended.
async fn ended(socket: &mut WebSocket, me: &Tunnel<'_>, tunnel: Uuid) -> anyhow::Result<bool> {
    let mut tx = me.db.begin_tenant(me.tenant).await?;
    let standing = bridges::tunnel_standing(&mut tx, me.bridge_id, me.token_hash, tunnel).await?;
    tx.commit().await?;
    let (code, message, reason) = match standing {
        bridges::TunnelStanding::Live => return Ok(false),
        bridges::TunnelStanding::Revoked => (
            REVOKED,
            "this bridge's token was rotated or the bridge revoked; the tunnel closes",
            "bridge token rotated or revoked",
        ),
        bridges::TunnelStanding::Replaced => (
            REPLACED,
            "another connection of this bridge took over; this tunnel closes",
            "replaced by a newer tunnel",
        ),
    };
    tracing::info!(bridge.id = %me.bridge_id, code, "tunnel closed by the cloud");
    let _ = send(socket, me, &error(code, message)).await;
    close(socket, me, 1008, reason).await;
    Ok(true)
}

async fn serve(
    mut socket: WebSocket,
    me: &Tunnel<'_>,
    mut commands: broadcast::Receiver<(Uuid, Uuid)>,
    tunnel_id: &mut Option<Uuid>,
) -> anyhow::Result<()> {
    let (db, tenant) = (me.db, me.tenant);
    let mut meter = Meter::new();
    // Hello first, by a deadline that nothing else the socket sends (pings, other frames) moves.
    let deadline = tokio::time::Instant::now() + me.limits.hello_timeout;
    let (version, features) = loop {
        let frame = tokio::time::timeout_at(deadline, socket.recv()).await;
        let Ok(Some(Ok(frame))) = frame else {
            let _ = send(&mut socket, me, &error("hello_timeout", "say hello first")).await;
            close(&mut socket, me, 1008, "no hello in time").await;
            return Ok(());
        };
        let Message::Text(text) = frame else { continue };
        if !meter.allow(text.len(), &me.limits) {
            close(&mut socket, me, 1008, "too many frames").await;
            return Ok(());
        }
        match decode::<Up>(&text) {
            Ok(Up::Hello {
                version, features, ..
            }) => break (version, features),
            Ok(_) => {
                send(
                    &mut socket,
                    me,
                    &error("hello_expected", "the first frame must be hello"),
                )
                .await?
            }
            Err(e) => send(&mut socket, me, &error("malformed_frame", e)).await?,
        }
    };
    let (bridge, tunnel) = {
        let mut tx = db.begin_tenant(tenant).await?;
        bridges::seen(&mut tx, me.bridge_id, None, Some(&version), None).await?;
        let bridge = bridges::get(&mut tx, me.bridge_id).await?;
        let tunnel = bridges::open_tunnel(&mut tx, &bridge).await?;
        tx.commit().await?;
        (bridge, tunnel)
    };
    *tunnel_id = Some(tunnel);
    let takes_parts = features
        .iter()
        .any(|f| f == switchyard_edge_protocol::FEATURE_SCHEDULE_PARTS);
    tracing::info!(bridge.id = %bridge.id, venue.id = %bridge.venue_id, version, "bridge connected");
    send(
        &mut socket,
        me,
        &Down::Welcome {
            bridge_id: bridge.id,
            venue_id: bridge.venue_id,
            server_time: Utc::now(),
            last_seq: u64::try_from(bridge.last_seq).unwrap_or(0),
            features: vec![switchyard_edge_protocol::FEATURE_NUMBERED_ERRORS.into()],
            max_frames_per_sec: Some(me.limits.max_frames_per_sec),
        },
    )
    .await?;
    let Some(mut sent) = push(&mut socket, me, &bridge, tunnel, takes_parts, true).await? else {
        return Ok(());
    };
    // Chargers relayed by this tunnel; they end with it.
    let (mut relays, mut from_relays) = super::edge_ocpp::Relays::new(
        db.clone(),
        tenant,
        bridge.clone(),
        me.ocpp,
        me.chargers.clone(),
    );

    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(frame) = frame else { return Ok(()) };
                let text = match frame {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) => return Ok(()),
                    Ok(other) => {
                        // Pings and binary frames count towards the limits too.
                        if !meter.allow(other.into_data().len(), &me.limits) {
                            flood(&mut socket, me).await?;
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => {
                        // Oversized frames end up here: close with "message too big".
                        close(&mut socket, me, 1009, "frame too large or malformed").await;
                        return Err(e.into());
                    }
                };
                if !meter.allow(text.len(), &me.limits) {
                    flood(&mut socket, me).await?;
                    return Ok(());
                }
                let reply = match decode::<Up>(&text) {
                    // A heartbeat also checks that the tunnel may go on (should a wake-up have been lost).
                    Ok(Up::Heartbeat { .. }) if ended(&mut socket, me, tunnel).await? => return Ok(()),
                    Ok(Up::OcppOpen { conn, charge_point_id, subprotocol, password }) => Some(
                        relays.open(conn, &charge_point_id, &subprotocol, password.as_deref()).await,
                    ),
                    Ok(Up::OcppFrame { conn, text }) => {
                        relays.frame(conn, text).await;
                        None
                    }
                    Ok(Up::OcppClosed { conn }) => {
                        relays.closed(conn);
                        None
                    }
                    Ok(message) => receive(me, &bridge, tunnel, message).await,
                    Err(e) => Some(Down::Error {
                        code: "malformed_frame".into(),
                        message: e.to_string(),
                        seq: malformed_event_seq(&text),
                    }),
                };
                let reply = match reply {
                    Some(Down::Error { code, message, seq: Some(seq) }) if code == "internal" => {
                        match event_failed(me, seq, &text).await {
                            Some(ack) => Some(ack),
                            None => {
                                let _ = send(&mut socket, me, &Down::Error { code, message, seq: Some(seq) }).await;
                                close(&mut socket, me, 1011, "an event could not be applied; send it again").await;
                                return Ok(());
                            }
                        }
                    }
                    other => other,
                };
                if let Some(reply) = reply {
                    send(&mut socket, me, &reply).await?;
                    // A heartbeat is also when a lost wake-up is made good.
                    if matches!(reply, Down::HeartbeatAck { .. }) && stale(db, tenant, &bridge, sent).await? {
                        let Some(now_sent) = push(&mut socket, me, &bridge, tunnel, takes_parts, false).await? else { return Ok(()) };
                        sent = now_sent;
                    }
                }
            }
            _ = me.drain.started() => {
                close(&mut socket, me, crate::drain::RESTART, crate::drain::RESTART_REASON).await;
                return Ok(());
            }
            Some((conn, out)) = from_relays.recv() => {
                if let Some(down) = relays.out(conn, out) {
                    send(&mut socket, me, &down).await?;
                }
            }
            changed = commands.recv() => {
                match changed {
                    Ok((t, venue)) if t != tenant.0 || venue != bridge.venue_id => continue,
                    // Our venue, or we fell behind: push what is pending (if this is still the live tunnel).
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let Some(now_sent) = push(&mut socket, me, &bridge, tunnel, takes_parts, false).await? else { return Ok(()) };
                        sent = now_sent;
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
}

/// An event that fails inside the cloud is given up once it failed this often ...
const EVENT_ATTEMPTS: i64 = 5;
/// ... and its first failure is this old (see [`event_failed`]).
const EVENT_PATIENCE_SECS: i64 = 15 * 60;

/// An event failed inside the cloud (the database went away, a replayed charger message could not be applied): it
/// is not acknowledged, and the tunnel closes (1011) rather than reading on, so that no later event is recorded past
/// it; the bridge dials again and sends its journal from the last recorded event, this one first. Each failure is
/// kept as an `event_failed` anomaly with the frame. Once the same event failed [`EVENT_ATTEMPTS`] times and its first
/// failure is [`EVENT_PATIENCE_SECS`] old, it is acknowledged instead (returned), so that one event the cloud cannot
/// apply does not hold the venue's tunnel for ever; its frame stays in the anomalies for an operator. When not even
/// the anomaly can be written (the database is down), the tunnel closes uncounted.
async fn event_failed(me: &Tunnel<'_>, seq: u64, frame: &str) -> Option<Down> {
    metrics::counter!("edge_events_failed_total").increment(1);
    let given_up: anyhow::Result<bool> = async {
        let mut tx = me.db.begin_tenant(me.tenant).await?;
        let given_up = bridges::event_failed(
            &mut tx,
            me.bridge_id,
            i64::try_from(seq)?,
            frame,
            EVENT_ATTEMPTS,
            chrono::Duration::seconds(EVENT_PATIENCE_SECS),
        )
        .await?;
        tx.commit().await?;
        Ok(given_up)
    }
    .await;
    match given_up {
        Ok(true) => {
            tracing::error!(bridge.id = %me.bridge_id, seq, "a bridge event failed every attempt; acknowledged, its frame kept as an anomaly");
            Some(Down::Ack { seq })
        }
        Ok(false) => {
            tracing::warn!(bridge.id = %me.bridge_id, seq, "a bridge event failed; the tunnel closes for the bridge to send it again");
            None
        }
        Err(e) => {
            tracing::warn!(bridge.id = %me.bridge_id, seq, error = %e, "a bridge event failed and its failure could not be kept; the tunnel closes");
            None
        }
    }
}

/// The tunnel sent more than its limits allow: kept as an anomaly, and closed.
async fn flood(socket: &mut WebSocket, me: &Tunnel<'_>) -> anyhow::Result<()> {
    metrics::counter!("edge_tunnels_flooded_total").increment(1);
    let mut tx = me.db.begin_tenant(me.tenant).await?;
    let detail = serde_json::json!({
        "max_frames_per_sec": me.limits.max_frames_per_sec, "max_bytes_per_min": me.limits.max_bytes_per_min,
    });
    bridges::anomaly(&mut tx, me.bridge_id, "flood", None, None, None, detail).await?;
    tx.commit().await?;
    let _ = send(
        socket,
        me,
        &error(
            "rate_limited",
            "this tunnel sent more frames or bytes than allowed; it closes",
        ),
    )
    .await;
    close(socket, me, 1008, "rate limit").await;
    Ok(())
}

/// The venue's schedule as the bridge gets it.
async fn schedule(
    tx: &mut switchyard_core::TenantTx,
    bridge: &Bridge,
) -> anyhow::Result<Vec<StationPlan>> {
    Ok(bridges::schedule(tx, bridge.venue_id)
        .await?
        .into_iter()
        .map(|p| StationPlan {
            station_id: p.station_id,
            name: p.name,
            control: p.control,
            settings: p.settings,
            on: p.on,
            until: p.until,
            session_id: p.session_id,
        })
        .collect())
}

/// A schedule's fingerprint: what a tunnel keeps of the schedule it last sent (a few bytes, however many
/// stations).
fn fingerprint(stations: &[StationPlan]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(stations)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Does the bridge miss something: undelivered commands, or a schedule other than the one last sent? (A heartbeat
/// asks, in case a wake-up was lost.)
async fn stale(db: &Db, tenant: TenantId, bridge: &Bridge, sent: u64) -> anyhow::Result<bool> {
    let mut tx = db.begin_tenant(tenant).await?;
    let pending = bridges::has_pending_commands(&mut tx, bridge.venue_id).await?;
    let current = schedule(&mut tx, bridge).await?;
    tx.commit().await?;
    Ok(pending || fingerprint(&current) != sent)
}

/// Sends the venue's schedule and its pending commands (on a tunnel's first push, `resend`, also the recent ones
/// an earlier tunnel took but never saw acknowledged); returns the schedule's fingerprint. If the tunnel is no
/// longer its bridge's live one, or the schedule needs parts that the bridge does not take (`takes_parts`: it
/// announced [`switchyard_edge_protocol::FEATURE_SCHEDULE_PARTS`]), it takes nothing, ends the tunnel and returns
/// `None`.
async fn push(
    socket: &mut WebSocket,
    me: &Tunnel<'_>,
    bridge: &Bridge,
    tunnel: Uuid,
    takes_parts: bool,
    resend: bool,
) -> anyhow::Result<Option<u64>> {
    let mut tx = me.db.begin_tenant(me.tenant).await?;
    // Checked in the transaction that takes the commands (it locks the bridge row): a replaced tunnel takes none.
    if bridges::tunnel_standing(&mut tx, bridge.id, me.token_hash, tunnel).await?
        != bridges::TunnelStanding::Live
    {
        tx.rollback().await?;
        let _ = ended(socket, me, tunnel).await?;
        return Ok(None);
    }
    // The commands before the schedule (the schedule's read sees all that their transactions wrote).
    let commands = bridges::take_commands(&mut tx, bridge.venue_id, resend).await?;
    let stations = schedule(&mut tx, bridge).await?;
    let sent = fingerprint(&stations);
    let planned: Vec<_> = stations
        .iter()
        .filter_map(|p| p.session_id.map(|s| (s, p.until.filter(|_| p.on))))
        .collect();
    let frames = switchyard_edge_protocol::schedule_frames(stations);
    if frames.len() > 1 && !takes_parts {
        // An older bridge would skip the parts and keep switching to a schedule it no longer has: it is refused, and
        // the commands go back to wait for a bridge that can take the schedule.
        tx.rollback().await?;
        tracing::warn!(bridge.id = %bridge.id, parts = frames.len(), "a bridge too old for its venue's schedule refused");
        send(
            socket,
            me,
            &error(
                "upgrade_required",
                "this venue's schedule is larger than one frame and this bridge cannot take it in parts: upgrade edge-bridge",
            ),
        )
        .await?;
        close(socket, me, 1008, "upgrade required").await;
        return Ok(None);
    }
    bridges::delivered(&mut tx, bridge.id, &planned).await?;
    tx.commit().await?;
    // The schedule first: a command's acknowledgement then tells that the bridge has the schedule too.
    for frame in frames {
        send(socket, me, &frame).await?;
    }
    for c in commands {
        send(
            socket,
            me,
            &Down::Command {
                id: c.id,
                station_id: c.station_id,
                command: c.command,
                payload: c.payload,
            },
        )
        .await?;
        metrics::counter!("edge_commands_delivered_total").increment(1);
    }
    Ok(Some(sent))
}

/// The `seq` of a frame that reads as an event but not as one this cloud takes (a field it does not know, another
/// protocol version): its `malformed_frame` error answers that event.
fn malformed_event_seq(text: &str) -> Option<u64> {
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    (frame["type"] == "event")
        .then(|| frame["seq"].as_u64())
        .flatten()
}

/// Handles one frame from the bridge; returns the answer, if any. An error that answers an event names its `seq`
/// ([`switchyard_edge_protocol::FEATURE_NUMBERED_ERRORS`]): the bridge counts its events awaiting an answer by it.
async fn receive(me: &Tunnel<'_>, bridge: &Bridge, tunnel: Uuid, message: Up) -> Option<Down> {
    let event = match &message {
        Up::Event { seq, .. } => Some(*seq),
        _ => None,
    };
    let mut reply = answer(me, bridge, tunnel, message).await;
    if let Some(Down::Error { seq, .. }) = &mut reply {
        *seq = event;
    }
    reply
}

async fn answer(me: &Tunnel<'_>, bridge: &Bridge, tunnel: Uuid, message: Up) -> Option<Down> {
    let result: Result<Option<Down>, switchyard_core::Error> = async {
        let mut tx = me.db.begin_tenant(me.tenant).await?;
        let reply = match message {
            Up::Hello { .. } | Up::OcppOpen { .. } | Up::OcppFrame { .. } | Up::OcppClosed { .. } => None,
            Up::Heartbeat { sent_at, clock_offset_ms } => {
                bridges::seen(&mut tx, bridge.id, Some(tunnel), None, clock_offset_ms).await?;
                Some(Down::HeartbeatAck {
                    sent_at,
                    server_time: Utc::now(),
                })
            }
            Up::CommandDone { id, ok, detail } => {
                let result = if ok { "ok".to_owned() } else { detail.unwrap_or_else(|| "failed".into()) };
                match bridges::command_done(&mut tx, bridge.venue_id, id, &result).await {
                    Err(switchyard_core::Error::NotFound(_)) => {
                        return Ok(Some(error("unknown_command", "no such command for this bridge's venue")));
                    }
                    other => other?,
                }
                None
            }
            Up::Event {
                seq,
                occurred_at,
                station_id,
                event,
            } => {
                let Ok(seq) = i64::try_from(seq) else {
                    return Ok(Some(error("bad_sequence", "seq is out of range")));
                };
                if seq < 1 {
                    return Ok(Some(error("bad_sequence", "seq starts at 1")));
                }
                let mut body = serde_json::to_value(&event).unwrap_or_default();
                // Everything the event says is taken from its cleaned form, journaled charger messages included.
                let event = if switchyard_core::validate::without_nul(&mut body) {
                    tracing::warn!(seq, "a bridge event held NUL characters; kept with U+FFFD in their place");
                    serde_json::from_value(body.clone()).unwrap_or(event)
                } else {
                    event
                };
                let journaled = match event {
                    Event::Ocpp { charge_point_id, subprotocol, action, payload, transaction_id } => {
                        Some(super::edge_ocpp::Journaled { charge_point_id, subprotocol, action, payload, transaction_id })
                    }
                    _ => None,
                };
                let kind = body["kind"].as_str().unwrap_or("event").to_owned();
                let recorded = bridges::record_event(
                    &mut tx, bridge, seq, me.limits.seq_window, station_id, &kind, &body, occurred_at,
                )
                .await?;
                let outcome = match recorded {
                    bridges::Recorded::New => "recorded",
                    bridges::Recorded::Duplicate => "duplicate",
                    bridges::Recorded::OutOfWindow { .. } => "refused",
                };
                // A charger's message kept while the tunnel was down: applied with its record, so exactly once.
                if let (bridges::Recorded::New, Some(message)) = (&recorded, journaled) {
                    super::edge_ocpp::replay(&mut tx, bridge, &me.ocpp, message).await?;
                }
                metrics::counter!("edge_events_total", "outcome" => outcome).increment(1);
                match recorded {
                    bridges::Recorded::OutOfWindow { last_seq } => {
                        // Kept as an anomaly (committed below), not acknowledged.
                        Some(error(
                            "bad_sequence",
                            format!(
                                "seq {seq} is too far above the last recorded {last_seq} (window {})",
                                me.limits.seq_window
                            ),
                        ))
                    }
                    _ => Some(Down::Ack { seq: seq as u64 }),
                }
            }
        };
        tx.commit().await?;
        Ok(reply)
    }
    .await;
    match result {
        Ok(reply) => reply,
        Err(switchyard_core::Error::NotFound(what)) => Some(error(
            "unknown_station",
            format!("{what} not found at this bridge's venue"),
        )),
        Err(e) => {
            if let Some(cause) = e.hidden_cause() {
                tracing::error!(error = ?cause, "edge frame failed");
            }
            Some(error(
                "internal",
                "the frame could not be handled; send it again",
            ))
        }
    }
}
