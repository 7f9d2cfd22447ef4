//! The PC-agent server: a local WebSocket endpoint, `ws://<bridge>:<port>/ws/agent/<station id>`, speaking the
//! seed 000 agent protocol. An agent authenticates with its station's key (`Authorization: Bearer <key>` or
//! `?key=<key>`), which the bridge checks against the SHA-256 the cloud's schedule carries; a wrong key or an
//! unknown station gets a close frame (1008) saying so.
//!
//! Bridge → agent (JSON text frames):
//! - `{"type":"session_start","session_id","duration_seconds","timestamp"}` when the station's session starts (or
//!   when the agent connects during one);
//! - `{"type":"session_extend","session_id","additional_seconds"}` when the planned end moves later;
//! - `{"type":"session_warning","session_id","minutes_left"}` 5 and 1 minutes before the end (from the bridge's
//!   own clock, so also while the cloud is unreachable);
//! - `{"type":"session_stop","session_id","action"}` at the end, `action` `lock`, `logoff` or `restart` (the
//!   station's `stop_action` setting; `lock` by default).
//!
//! Agent → bridge: `{"type":"heartbeat","session_id","remaining_seconds","cpu_usage","ram_usage"}`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::Shared;

/// Connected agents by station, and their last heartbeat.
#[derive(Default)]
pub struct Agents {
    /// By station. A new connection of the station's agent replaces the old one (whose loop then ends); an ending
    /// connection removes only its own entry.
    connected: std::sync::Mutex<HashMap<Uuid, Connection>>,
    heartbeats: std::sync::Mutex<HashMap<Uuid, Value>>,
    numbered: std::sync::atomic::AtomicU64,
    /// Connections ended because the schedule no longer admits them (by number): why, for their close frame.
    dismissed: std::sync::Mutex<HashMap<u64, &'static str>>,
}

/// A connected agent.
struct Connection {
    /// Its number among the bridge's agent connections.
    number: u64,
    sender: mpsc::UnboundedSender<String>,
    /// The SHA-256 of the key it presented.
    key_sha256: String,
}

impl Agents {
    /// Sends a message to the station's agent; false when no agent is connected.
    pub fn send(&self, station: Uuid, message: &Value) -> bool {
        let connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        connected
            .get(&station)
            .is_some_and(|c| c.sender.send(message.to_string()).is_ok())
    }

    /// Ends the connections a new schedule no longer admits: `expected` gives each station's agent key (its
    /// SHA-256) as the schedule now has it, none for a station that is gone or no longer agent-controlled. A key
    /// issued again (the old one lost or leaked) so ends the agent still connected with the old one, which would
    /// otherwise keep the station until it disconnected by itself.
    pub fn follow_schedule(&self, expected: impl Fn(Uuid) -> Option<String>) {
        let mut connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        let mut dismissed = self.dismissed.lock().unwrap_or_else(|e| e.into_inner());
        connected.retain(|station, c| {
            let why = match expected(*station) {
                Some(now) if now == c.key_sha256 => return true,
                Some(_) => "the station's agent key was issued again; connect with the new key",
                None => "this station is no longer controlled by a PC agent at this venue",
            };
            tracing::warn!(%station, reason = why, "an agent connection is ended");
            dismissed.insert(c.number, why);
            false
        });
        drop(dismissed);
        // Their heartbeats went with them.
        self.heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|station, _| connected.contains_key(station));
    }

    /// How many agents are connected.
    pub fn connected_count(&self) -> usize {
        self.connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Is the station's agent connected?
    pub fn is_connected(&self, station: Uuid) -> bool {
        self.connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&station)
    }

    /// Keeps a heartbeat of connection `number` of the station's agent, unless a newer connection replaced it.
    fn heard(&self, station: Uuid, number: u64, heartbeat: Value) {
        let connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        if connected.get(&station).is_some_and(|c| c.number == number) {
            self.heartbeats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(station, heartbeat);
        }
    }

    /// The station's agent's last heartbeat (while connected).
    pub fn heartbeat(&self, station: Uuid) -> Option<Value> {
        self.heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&station)
            .cloned()
    }
}

pub fn start_message(
    session: Option<Uuid>,
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "type": "session_start",
        "session_id": session,
        "duration_seconds": until.map(|u| (u - now).num_seconds().max(0)),
        "timestamp": now,
    })
}

pub fn stop_message(session: Option<Uuid>, action: &str) -> Value {
    json!({ "type": "session_stop", "session_id": session, "action": action })
}

/// Accepts agents until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, keepalive: crate::Keepalive) {
    loop {
        let (stream, peer) = crate::next_connection(&listener, "agents").await;
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = agent(stream, &shared, keepalive).await {
                tracing::info!(%peer, error = %e, "agent connection ended");
            }
        });
    }
}

pub(crate) fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[expect(
    clippy::result_large_err,
    reason = "the handshake callback's error type is tungstenite's"
)]
async fn agent(
    stream: tokio::net::TcpStream,
    shared: &Shared,
    keepalive: crate::Keepalive,
) -> anyhow::Result<()> {
    let mut seen: Option<(String, Option<String>)> = None;
    let handshake =
        tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
            let key = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
                .or_else(|| {
                    request.uri().query().and_then(|q| {
                        q.split('&')
                            .find_map(|p| p.strip_prefix("key=").map(str::to_owned))
                    })
                });
            seen = Some((request.uri().path().to_owned(), key));
            Ok(response)
        });
    let mut ws = crate::within_handshake(handshake).await??;
    let (path, key) = seen.unwrap_or_default();
    let station = path
        .strip_prefix("/ws/agent/")
        .and_then(|id| id.parse::<Uuid>().ok());
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let number = shared
        .agents
        .numbered
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Under the state lock, which the scheduler holds while it tells agents: either the scheduler already started
    // the session (told no one, the agent was not here) and the start is queued here, or it has not and will send it
    // to the agent registered here. Never both: an agent gets exactly one `session_start`.
    let verdict = {
        let state = shared.state.lock().await;
        match station.and_then(|id| state.stations.get(&id)) {
            // Just started, the tunnel not up yet: no station is known, and saying "no such station" would mislead.
            None if station.is_some() && !state.scheduled => Err(
                "the bridge has no schedule from the cloud yet (it is still connecting); retry in a few seconds",
            ),
            None => Err(
                "no agent station with this id at this venue; the path is /ws/agent/<station id>",
            ),
            Some(s) if s.plan.control != "agent" => {
                Err("this station is not controlled by a PC agent")
            }
            Some(s) => {
                let expected = s
                    .plan
                    .settings
                    .get("agent_key_sha256")
                    .and_then(Value::as_str);
                match (expected, key) {
                    (Some(expected), Some(key)) if sha256_hex(&key) == expected => {
                        let now = state.cloud_now();
                        if s.applied == Some(true) && s.wants_on(now) {
                            let start = start_message(s.plan.session_id, s.plan.until, now);
                            let _ = tx.send(start.to_string());
                        }
                        let replaced = shared
                            .agents
                            .connected
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(
                                s.plan.station_id,
                                Connection {
                                    number,
                                    sender: tx,
                                    key_sha256: expected.to_owned(),
                                },
                            );
                        if replaced.is_some() {
                            // The old connection's last heartbeat is not this agent's.
                            shared
                                .agents
                                .heartbeats
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&s.plan.station_id);
                        }
                        Ok(())
                    }
                    _ => Err("the agent key is missing or wrong for this station"),
                }
            }
        }
    };
    match verdict {
        Ok(()) => {}
        Err(reason) => {
            ws.close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: reason.into(),
            }))
            .await?;
            return Ok(());
        }
    };
    let Some(station) = station else {
        return Ok(());
    };
    tracing::info!(%station, "agent connected");
    // A PC switched off at the wall closes nothing: without pings its agent would stay connected for hours.
    let mut liveness = crate::Liveness::new(keepalive);
    let result = async {
        loop {
            tokio::select! {
                alive = liveness.due() => {
                    if !alive {
                        tracing::info!(%station, "agent answered no ping: taken for dead");
                        crate::metrics::Counters::add(&shared.counters.agents_dead, 1);
                        let close = Message::Close(Some(CloseFrame {
                            code: CloseCode::Away,
                            reason: "no answer to pings".into(),
                        }));
                        let _ = crate::write(&mut ws, close, crate::DEAD_CLOSE_TIMEOUT).await;
                        return Ok(());
                    }
                    crate::write(&mut ws, Message::Ping(Default::default()), crate::LAN_WRITE_TIMEOUT).await?;
                    crate::metrics::Counters::add(&shared.counters.pings, 1);
                }
                outgoing = rx.recv() => {
                    let Some(text) = outgoing else {
                        // A newer connection of the agent took the station's place (dropping this one's sender), or
                        // the schedule no longer admits it (a new key).
                        let dismissed = shared.agents.dismissed.lock().unwrap_or_else(|e| e.into_inner()).remove(&number);
                        let close = Message::Close(Some(match dismissed {
                            Some(why) => CloseFrame { code: CloseCode::Policy, reason: why.into() },
                            None => CloseFrame {
                                code: CloseCode::Normal,
                                reason: "replaced by a newer connection".into(),
                            },
                        }));
                        let _ = crate::write(&mut ws, close, crate::DEAD_CLOSE_TIMEOUT).await;
                        return Ok(());
                    };
                    crate::write(&mut ws, Message::text(text), crate::LAN_WRITE_TIMEOUT).await?;
                }
                incoming = ws.next() => {
                    if matches!(incoming, Some(Ok(_))) {
                        liveness.heard();
                    }
                    match incoming {
                        None | Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Err(e)) => return Err(anyhow::Error::from(e)),
                        Some(Ok(Message::Text(text))) => {
                            match serde_json::from_str::<Value>(&text) {
                                Ok(v) if v["type"] == "heartbeat" => shared.agents.heard(station, number, v),
                                _ => {
                                    let error = json!({"type": "error", "message": "expected a heartbeat"});
                                    let error = Message::text(error.to_string());
                                    crate::write(&mut ws, error, crate::LAN_WRITE_TIMEOUT).await?;
                                }
                            }
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    }
    .await;
    // Unless a newer connection of the agent took the station's place meanwhile.
    let mut connected = shared
        .agents
        .connected
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if connected.get(&station).is_some_and(|c| c.number == number) {
        connected.remove(&station);
        shared
            .agents
            .heartbeats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&station);
        tracing::info!(%station, "agent disconnected");
    } else {
        tracing::info!(%station, "an agent connection replaced by a newer one ended");
    }
    drop(connected);
    shared
        .agents
        .dismissed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&number);
    result
}

/// `edge-bridge agent-sim`: a PC agent simulator speaking the protocol above. It connects to `url`
/// (`ws://<bridge>/ws/agent/<station id>`) with `key`, prints every message it gets as one JSON line on stdout,
/// and sends a heartbeat every `heartbeat` with the remaining time it counts down from `session_start`.
pub async fn simulate(url: &str, key: &str, heartbeat: std::time::Duration) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let mut session: Option<Value> = None;
    let mut ends: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    None => return Ok(()),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        println!("{}", json!({"type": "closed", "reason": reason}));
                        return Ok(());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                };
                println!("{text}");
                let message: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let seconds = |key: &str| message[key].as_u64().map(std::time::Duration::from_secs);
                match message["type"].as_str() {
                    Some("session_start") => {
                        session = Some(message["session_id"].clone());
                        ends = seconds("duration_seconds").map(|d| tokio::time::Instant::now() + d);
                    }
                    Some("session_extend") => {
                        if let (Some(end), Some(more)) = (ends, seconds("additional_seconds")) {
                            ends = Some(end + more);
                        }
                    }
                    Some("session_stop") => {
                        session = None;
                        ends = None;
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let remaining = ends.map(|e| e.saturating_duration_since(tokio::time::Instant::now()).as_secs());
                let beat = json!({
                    "type": "heartbeat", "session_id": session, "remaining_seconds": remaining,
                    "cpu_usage": 12.5, "ram_usage": 41.0,
                });
                ws.send(Message::text(beat.to_string())).await?;
            }
        }
    }
}
