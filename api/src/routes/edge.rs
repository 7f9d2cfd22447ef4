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

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use switchyard_core::bridges::{self, Bridge};
use switchyard_core::{auth, Db, ErrorCode, TenantId};
use switchyard_edge_protocol::{decode, encode, Down, StationPlan, Up, MAX_FRAME_BYTES};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;

/// The error code that ends a tunnel: its bridge was revoked.
const REVOKED: &str = "revoked";

/// How long a bridge has to say hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        // Frames are small: small buffers keep an idle tunnel cheap (they grow for a larger frame).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            metrics::gauge!("edge_tunnels_open").increment(1.0);
            if let Err(e) = serve(socket, &db, tenant, bridge_id, commands).await {
                tracing::info!(bridge.id = %bridge_id, error = %e, "tunnel ended");
            }
            metrics::gauge!("edge_tunnels_open").decrement(1.0);
            if let Ok(mut tx) = db.begin_tenant(tenant).await {
                if bridges::seen(&mut tx, bridge_id, false, None, None)
                    .await
                    .is_ok()
                {
                    let _ = tx.commit().await;
                }
            }
        }))
}

async fn send(socket: &mut WebSocket, message: &Down) -> anyhow::Result<()> {
    socket.send(Message::text(encode(message))).await?;
    Ok(())
}

fn error(code: &str, message: impl Into<String>) -> Down {
    Down::Error {
        code: code.into(),
        message: message.into(),
    }
}

async fn serve(
    mut socket: WebSocket,
    db: &Db,
    tenant: TenantId,
    bridge_id: Uuid,
    mut commands: broadcast::Receiver<(Uuid, Uuid)>,
) -> anyhow::Result<()> {
    // Hello first.
    let version = loop {
        let frame = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await;
        let Ok(Some(Ok(frame))) = frame else {
            let _ = send(&mut socket, &error("hello_timeout", "say hello first")).await;
            return Ok(());
        };
        let Message::Text(text) = frame else { continue };
        match decode::<Up>(&text) {
            Ok(Up::Hello { version, .. }) => break version,
            Ok(_) => {
                send(
                    &mut socket,
                    &error("hello_expected", "the first frame must be hello"),
                )
                .await?
            }
            Err(e) => send(&mut socket, &error("malformed_frame", e)).await?,
        }
    };
    let bridge = {
        let mut tx = db.begin_tenant(tenant).await?;
        bridges::seen(&mut tx, bridge_id, true, Some(&version), None).await?;
        let bridge = bridges::get(&mut tx, bridge_id).await?;
        tx.commit().await?;
        bridge
    };
    tracing::info!(bridge.id = %bridge.id, venue.id = %bridge.venue_id, version, "bridge connected");
    send(
        &mut socket,
        &Down::Welcome {
            bridge_id: bridge.id,
            venue_id: bridge.venue_id,
            server_time: Utc::now(),
            last_seq: u64::try_from(bridge.last_seq).unwrap_or(0),
        },
    )
    .await?;
    let mut sent = push(&mut socket, db, tenant, &bridge).await?;

    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(frame) = frame else { return Ok(()) };
                let text = match frame {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => {
                        // Oversized frames end up here: close with "message too big".
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: 1009,
                            reason: "frame too large or malformed".into(),
                        }))).await;
                        return Err(e.into());
                    }
                };
                let reply = match decode::<Up>(&text) {
                    Ok(message) => receive(db, tenant, &bridge, message).await,
                    Err(e) => Some(error("malformed_frame", e)),
                };
                if let Some(reply) = reply {
                    send(&mut socket, &reply).await?;
                    if matches!(&reply, Down::Error { code, .. } if code == REVOKED) {
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: "bridge revoked".into(),
                        }))).await;
                        return Ok(());
                    }
                    // A heartbeat is also when a lost wake-up is made good.
                    if matches!(reply, Down::HeartbeatAck { .. }) && stale(db, tenant, &bridge, sent).await? {
                        sent = push(&mut socket, db, tenant, &bridge).await?;
                    }
                }
            }
            changed = commands.recv() => {
                match changed {
                    Ok((t, venue)) if t != tenant.0 || venue != bridge.venue_id => continue,
                    // Our venue, or we fell behind: push what is pending.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => sent = push(&mut socket, db, tenant, &bridge).await?,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
    }
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

/// Sends the venue's schedule and its pending commands; returns the schedule's fingerprint.
async fn push(
    socket: &mut WebSocket,
    db: &Db,
    tenant: TenantId,
    bridge: &Bridge,
) -> anyhow::Result<u64> {
    let mut tx = db.begin_tenant(tenant).await?;
    let commands = bridges::take_commands(&mut tx, bridge.venue_id).await?;
    let stations = schedule(&mut tx, bridge).await?;
    tx.commit().await?;
    // The schedule first: a command's acknowledgement then tells that the bridge has the schedule too.
    let sent = fingerprint(&stations);
    send(socket, &Down::Schedule { stations }).await?;
    for c in commands {
        send(
            socket,
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
    Ok(sent)
}

/// Handles one frame from the bridge; returns the answer, if any.
async fn receive(db: &Db, tenant: TenantId, bridge: &Bridge, message: Up) -> Option<Down> {
    let result: Result<Option<Down>, switchyard_core::Error> = async {
        let mut tx = db.begin_tenant(tenant).await?;
        let reply = match message {
            Up::Hello { .. } => None,
            Up::Heartbeat { sent_at, clock_offset_ms } => {
                // A revoked bridge is cut off at its next heartbeat.
                if bridges::get(&mut tx, bridge.id).await?.revoked_at.is_some() {
                    return Ok(Some(error(REVOKED, "this bridge was revoked; the tunnel closes")));
                }
                bridges::seen(&mut tx, bridge.id, true, None, clock_offset_ms).await?;
                Some(Down::HeartbeatAck {
                    sent_at,
                    server_time: Utc::now(),
                })
            }
            Up::CommandDone { id, ok, detail } => {
                let result = if ok { "ok".to_owned() } else { detail.unwrap_or_else(|| "failed".into()) };
                bridges::command_done(&mut tx, id, &result).await?;
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
                let body = serde_json::to_value(&event).unwrap_or_default();
                let kind = body["kind"].as_str().unwrap_or("event").to_owned();
                let new = bridges::record_event(&mut tx, bridge, seq, station_id, &kind, &body, occurred_at).await?;
                metrics::counter!("edge_events_total", "outcome" => if new { "recorded" } else { "duplicate" })
                    .increment(1);
                Some(Down::Ack { seq: seq as u64 })
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
