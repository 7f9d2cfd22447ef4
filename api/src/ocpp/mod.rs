//! `GET /ocpp/{chargePointId}`: the OCPP-J central system (1.6 and 2.0.1), over a WebSocket per charger.
//!
//! Before the upgrade: the subprotocol is negotiated (`ocpp2.0.1` preferred, then `ocpp1.6`; a charger offering
//! neither gets `400` and no socket) and the charger authenticates with HTTP Basic (`chargePointId:password`,
//! security profiles 1 and 2; TLS is terminated in front). An identity nobody registered gets `401`, unless the
//! tenant whose onboarding key it presents takes unknown chargers as pending.
//!
//! After it, a [`run`] loop serves the connection — the same loop serves a charger whose frames an edge bridge
//! relays — over two channels, so the socket's own pump ([`pump`], in the same task) keeps the WebSocket details:
//! pings every `OCPP_PING_SECS`, a charger silent for `OCPP_DEAD_AFTER_SECS` is dead and closed. The loop answers the
//! charger's CALLs in order, each in its own tenant transaction — but an accepted charger's heartbeats (answered
//! from memory) and 1.6 meter values (stored by the group commit of [`meters`]) — and a CALL id seen again is
//! answered again, not applied again; and it sends the central system's calls from the outbox one at a time, each
//! answered or timed out (`OCPP_CALL_TIMEOUT_SECS`) before the next. A wake-up for the charger's venue (the signals the bridges use)
//! makes it look for calls at once; a check every `OCPP_CHECK_SECS` makes up for a lost wake-up, notices a newer
//! connection of the same charger, which replaces this one, and every other time marks the charger seen (the workers
//! take a charger silent for three minutes as one whose process stopped).

pub mod meters;
pub mod rpc;
mod v16;
mod v201;
pub mod wakes;

use std::collections::VecDeque;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use switchyard_core::charging::{self, calls, Charger, Protocol, Registration};
use switchyard_core::{Db, TenantId, TenantTx};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::app::AppState;
use rpc::{ErrorKind, Frame, RpcError};

/// Settings `OCPP_*` (see the manual).
#[derive(Debug, Clone, Copy)]
pub struct OcppSettings {
    /// The heartbeat interval a BootNotification answer asks for.
    pub heartbeat: Duration,
    /// How long a call to a charger waits for its answer.
    pub call_timeout: Duration,
    /// How long a call waits for its charger to be connected before it expires.
    pub call_ttl: Duration,
    /// WebSocket pings to a directly connected charger ...
    pub ping_interval: Duration,
    /// ... and the silence after which it is taken for dead.
    pub dead_after: Duration,
    /// How often a connection looks for calls on its own (making up for a lost wake-up) and whether it was
    /// replaced; every other check marks its charger seen, so that a live connection is never taken for one whose
    /// process stopped (the workers' three minutes).
    pub check_every: Duration,
    /// How long a frame may wait for the charger to take it (`WS_WRITE_TIMEOUT_MS`).
    pub write_timeout: Duration,
    /// How many tenants' meter-value flushes may hold a database connection at once (`None`: half the pool).
    pub meter_flushes: Option<usize>,
}

impl OcppSettings {
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let secs = |key: &str, default: u64, max: u64| -> anyhow::Result<Duration> {
            let value = match var(key) {
                None => default,
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .with_context(|| {
                        format!(
                            "{key} must be a whole number of seconds from 1 to {max}, not {v:?}"
                        )
                    })?,
            };
            Ok(Duration::from_secs(value))
        };
        Ok(Self {
            heartbeat: secs("OCPP_HEARTBEAT_SECS", 300, 86_400)?,
            call_timeout: secs("OCPP_CALL_TIMEOUT_SECS", 30, 3600)?,
            call_ttl: secs("OCPP_CALL_TTL_SECS", 600, 7 * 86_400)?,
            ping_interval: secs("OCPP_PING_SECS", 20, 3600)?,
            dead_after: secs("OCPP_DEAD_AFTER_SECS", 50, 7200)?,
            check_every: secs("OCPP_CHECK_SECS", 30, 30)?,
            write_timeout: crate::ws::write_timeout(&var)?,
            meter_flushes: match var("OCPP_METER_FLUSHES") {
                None => None,
                Some(v) => Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .with_context(|| {
                            format!("OCPP_METER_FLUSHES must be a whole number from 1 to 1000, not {v:?}")
                        })?,
                ),
            },
        })
    }
}

/// The largest frame a charger may send (a long local list answer, a big configuration).
const MAX_FRAME_BYTES: usize = 256 * 1024;

/// The subprotocols, in the order the central system prefers them.
const SUBPROTOCOLS: [&str; 2] = ["ocpp2.0.1", "ocpp1.6"];

pub async fn connect(
    State(state): State<AppState>,
    Path(identity): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let offered: Vec<String> = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let Some(chosen) = SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
    else {
        metrics::counter!("ocpp_connections_refused_total", "reason" => "subprotocol").increment(1);
        return (
            StatusCode::BAD_REQUEST,
            "offer the WebSocket subprotocol ocpp1.6 or ocpp2.0.1",
        )
            .into_response();
    };
    let protocol = Protocol::parse(chosen).unwrap_or(Protocol::V16);
    let password = basic_password(&headers, &identity);
    let login = charging::login(
        &state.db.system(),
        &state.db,
        &identity,
        password.as_deref(),
    )
    .await;
    let (tenant, charger_id) = match login {
        Ok(Some(found)) => found,
        Ok(None) => {
            metrics::counter!("ocpp_connections_refused_total", "reason" => "auth").increment(1);
            tracing::info!(charge_point_id = %identity, "charger refused: unknown identity or wrong password");
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Basic realm=\"switchyard-ocpp\"",
                )],
                WRONG_PASSWORD,
            )
                .into_response();
        }
        Err(e) => {
            if let Some(cause) = e.hidden_cause() {
                tracing::error!(error = ?cause, "charger login failed");
            }
            return (StatusCode::SERVICE_UNAVAILABLE, "retry later").into_response();
        }
    };
    let settings = state.config.ocpp;
    let db = state.db.clone();
    let chargers = state.chargers.clone();
    let drain = state.drain.clone();
    upgrade
        .protocols([*chosen])
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .on_upgrade(move |socket| async move {
            let (to_engine, incoming) = mpsc::channel(16);
            let (outgoing, from_engine) = mpsc::channel(16);
            let _held = drain.hold();
            let link = Link {
                db,
                tenant,
                charger_id,
                protocol,
                via_bridge: None,
                settings,
                password: password.as_deref().map(switchyard_core::auth::token_hash),
            };
            // The socket's pump and the connection loop share one task: a frame handed from one to the other wakes
            // no other task.
            tokio::join!(
                pump(socket, to_engine, from_engine, settings, drain.clone()),
                run(link, incoming, outgoing, chargers),
            );
        })
}

/// The password of an HTTP Basic `Authorization` header whose user is the charger's identity.
fn basic_password(headers: &HeaderMap, identity: &str) -> Option<String> {
    use base64::Engine;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == identity).then(|| password.to_owned())
}

/// What the connection loop sends out.
#[derive(Debug)]
pub enum Out {
    Text(String),
    Close(u16, &'static str),
}

/// Moves frames between a charger's WebSocket and the connection loop, and keeps the socket alive: a ping every
/// `ping_interval`, and a charger that sent nothing (not even a pong) for `dead_after` is closed. When the process
/// stops, the socket closes with `1012` and the charger reconnects to another replica.
async fn pump(
    mut socket: WebSocket,
    to_engine: mpsc::Sender<String>,
    mut from_engine: mpsc::Receiver<Out>,
    settings: OcppSettings,
    drain: crate::drain::Drain,
) {
    let within = settings.write_timeout;
    let mut heard = tokio::time::Instant::now();
    let mut ping = tokio::time::interval(settings.ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => {
                    heard = tokio::time::Instant::now();
                    if to_engine.send(text.to_string()).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
                Some(Err(e)) => {
                    tracing::info!(error = %e, "charger socket failed");
                    let _ = write(&mut socket, close_frame(1009, "frame too large or malformed"), within).await;
                    break;
                }
            },
            out = from_engine.recv() => match out {
                Some(Out::Text(text)) => {
                    if write(&mut socket, Message::text(text), within).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    let _ = write(&mut socket, close_frame(code, reason), within).await;
                    break;
                }
                None => {
                    let _ = write(&mut socket, close_frame(1000, "closing"), within).await;
                    break;
                }
            },
            _ = drain.started() => {
                let _ = write(&mut socket, close_frame(crate::drain::RESTART, crate::drain::RESTART_REASON), within).await;
                break;
            }
            _ = ping.tick() => {
                if heard.elapsed() >= settings.dead_after {
                    metrics::counter!("ocpp_connections_dead_total").increment(1);
                    tracing::info!("charger silent too long; closing its connection");
                    let _ = write(&mut socket, close_frame(1001, "no answer to pings"), within).await;
                    break;
                }
                if write(&mut socket, Message::Ping(Default::default()), within).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Sends a frame to the charger, unless it takes nothing for `within`.
async fn write(socket: &mut WebSocket, frame: Message, within: Duration) -> anyhow::Result<()> {
    crate::ws::send(socket, frame, within, "charger").await
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// What every charger connection of this process shares.
pub struct Shared {
    /// Wake-ups, handed to the charger's connections only.
    pub wakes: std::sync::Arc<wakes::Wakes>,
    /// The group commit of meter values and seen marks.
    pub meters: std::sync::Arc<meters::Meters>,
}

impl Shared {
    /// `meter_slots`: how many tenants' meter flushes may hold a database connection at once.
    pub fn new(
        db: Db,
        signals: tokio::sync::broadcast::Sender<(Uuid, Uuid)>,
        meter_slots: usize,
    ) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            wakes: wakes::Wakes::new(signals),
            meters: meters::Meters::new(db, meter_slots),
        })
    }
}

/// How a charger with an unknown identity or a wrong password is refused (HTTP 401's body, the close reason of a
/// connection whose password changed as it went live, a relayed charger's refusal).
pub const WRONG_PASSWORD: &str = "unknown charge point or wrong password";

/// One charger connection's fixed facts.
pub struct Link {
    pub db: Db,
    pub tenant: TenantId,
    pub charger_id: Uuid,
    pub protocol: Protocol,
    pub via_bridge: Option<Uuid>,
    pub settings: OcppSettings,
    /// The SHA-256 of the password the charger logged in with, checked again when the connection goes live.
    pub password: Option<Vec<u8>>,
}

/// A call of ours waiting for the charger's answer.
struct InFlight {
    call: Uuid,
    deadline: tokio::time::Instant,
}

/// The connection loop (see the module's documentation). Ends when `incoming` closes, or when a newer connection of
/// the charger replaced this one (then it asks the pump to close).
pub async fn run(
    link: Link,
    mut incoming: mpsc::Receiver<String>,
    outgoing: mpsc::Sender<Out>,
    shared: std::sync::Arc<Shared>,
) {
    let connection = Uuid::now_v7();
    // Registered before the connection is marked live, so that no wake-up for it can come in between.
    let wake = shared
        .wakes
        .register(link.tenant.0, link.charger_id, connection);
    let registration = match opened(&link, connection).await {
        Ok(Some(registration)) => registration,
        Ok(None) => {
            metrics::counter!("ocpp_connections_refused_total", "reason" => "auth").increment(1);
            tracing::info!(charger.id = %link.charger_id, "charger refused: its password changed as it connected");
            let _ = outgoing.send(Out::Close(1008, WRONG_PASSWORD)).await;
            return;
        }
        Err(e) => {
            tracing::warn!(charger.id = %link.charger_id, error = %e, "charger connection could not start");
            let _ = outgoing.send(Out::Close(1011, "try again")).await;
            return;
        }
    };
    metrics::gauge!("ocpp_connections_open").increment(1.0);
    tracing::info!(charger.id = %link.charger_id, protocol = link.protocol.as_str(), "charger connected");
    let mut conn = Conn {
        link: &link,
        shared: &shared,
        connection,
        accepted: registration == Registration::Accepted,
        seen_at: tokio::time::Instant::now(),
        in_flight: None,
        answered: VecDeque::new(),
        outgoing: &outgoing,
    };
    // Each connection's check at its own moment in the interval (from its id's random bits), so that thousands of
    // chargers connecting at once do not check at once ever after.
    let every = link.settings.check_every;
    let offset = every * u32::from(connection.as_bytes()[15]) / 256;
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + every + offset, every);
    let ended: anyhow::Result<()> = async {
        if !conn.send_next().await? {
            return Ok(());
        }
        loop {
            let deadline = conn.in_flight.as_ref().map(|f| f.deadline);
            tokio::select! {
                text = incoming.recv() => {
                    let Some(text) = text else { return Ok(()) };
                    if !conn.receive(&text).await? {
                        return Ok(());
                    }
                }
                _ = wake.notify.notified() => {
                    if !conn.send_next().await? {
                        return Ok(());
                    }
                }
                _ = sleep_until(deadline) => {
                    if let Some(flight) = conn.in_flight.take() {
                        conn.finish(flight.call, calls::Outcome::TimedOut).await?;
                    }
                    if !conn.send_next().await? {
                        return Ok(());
                    }
                }
                _ = check.tick() => {
                    if !conn.send_next().await? {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = ended {
        tracing::warn!(charger.id = %link.charger_id, error = %e, "charger connection failed");
    }
    metrics::gauge!("ocpp_connections_open").decrement(1.0);
    if let Ok(mut tx) = link.db.begin_tenant(link.tenant).await {
        if charging::disconnected(&mut tx, link.charger_id, connection)
            .await
            .is_ok()
        {
            let _ = tx.commit().await;
        }
    }
    tracing::info!(charger.id = %link.charger_id, "charger disconnected");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Marks the connection live; the charger's registration (`None`: its password no longer holds).
async fn opened(link: &Link, connection: Uuid) -> anyhow::Result<Option<Registration>> {
    let mut tx = link.db.begin_tenant(link.tenant).await?;
    let charger = charging::connected(
        &mut tx,
        link.charger_id,
        connection,
        link.protocol,
        link.via_bridge,
        link.password.as_deref(),
        link.settings.call_ttl,
    )
    .await?;
    tx.commit().await?;
    Ok(charger.map(|c| c.registration))
}

/// How many answers to the charger's CALLs are kept to answer a repeated CALL id (a charger repeats the one it
/// had no answer to).
const ANSWERS_KEPT: usize = 8;

/// The largest call, escaped as a JSON string, sent to a charger behind an edge bridge: the bridge takes frames of
/// at most 64 KiB through its tunnel, and a call travels escaped inside one, with the envelope's few fields.
const RELAYED_CALL_BYTES: usize = 63 * 1024;

struct Conn<'a> {
    link: &'a Link,
    shared: &'a Shared,
    connection: Uuid,
    /// Whether the charger is accepted (it never goes back): then heartbeats and 1.6 meter values take the short
    /// way ([`Conn::handle`]).
    accepted: bool,
    /// When the charger's seen mark was last asked for through the group commit (CALLs applied on their own also
    /// mark it, but may find it fresh and write nothing, so they leave this as it is).
    seen_at: tokio::time::Instant,
    in_flight: Option<InFlight>,
    answered: VecDeque<(String, String)>,
    outgoing: &'a mpsc::Sender<Out>,
}

impl Conn<'_> {
    /// Whether the charger's seen mark is due (every other check, see [`charging::seen`]): the connection is alive
    /// (the socket's pump, or the bridge relaying it, closes a charger that answers nothing, not even pings), so it
    /// is written even when the charger says nothing.
    fn seen_due(&self) -> bool {
        self.seen_at.elapsed() >= self.link.settings.check_every * 3 / 2
    }

    async fn send(&self, text: String) -> anyhow::Result<()> {
        self.outgoing
            .send(Out::Text(text))
            .await
            .map_err(|_| anyhow::anyhow!("the socket is gone"))
    }

    /// Sends the next call from the outbox unless one is in flight. False when this connection is no longer the
    /// charger's (a newer one took over, or its password was revoked), checked even with a call in flight.
    async fn send_next(&mut self) -> anyhow::Result<bool> {
        // A hot path: every connection runs it every `OCPP_CHECK_SECS`, so it shares the group commit's
        // transactions with the tenant's other chargers (one query for all of them).
        let seen = self.seen_due().then_some(self.link.charger_id);
        let standing = self
            .shared
            .meters
            .standing(
                self.link.tenant,
                self.link.charger_id,
                self.connection,
                seen,
            )
            .await?;
        if seen.is_some() {
            self.seen_at = tokio::time::Instant::now();
        }
        let Some(pending) = standing else {
            tracing::info!(charger.id = %self.link.charger_id,
                "this connection is no longer the charger's: a newer one took over, or its password was revoked");
            let _ = self
                .outgoing
                .send(Out::Close(1000, "replaced by a newer connection"))
                .await;
            return Ok(false);
        };
        if !pending || self.in_flight.is_some() {
            return Ok(true);
        }
        // Taking a call is written durably: a call taken is a call sent, never sent twice.
        let ttl = chrono::Duration::from_std(self.link.settings.call_ttl)
            .unwrap_or(chrono::Duration::minutes(10));
        loop {
            let mut tx = self.link.db.begin_tenant(self.link.tenant).await?;
            let call =
                calls::take_next(&mut tx, self.link.charger_id, self.connection, ttl).await?;
            tx.commit().await?;
            let Some(call) = call else {
                return Ok(true);
            };
            let text = rpc::call(&call.id.to_string(), &call.action, &call.payload);
            if self.link.via_bridge.is_some() {
                // The frame travels escaped inside the tunnel's envelope, which the bridge refuses past 64 KiB (and
                // redials, taking the whole venue offline each time): a call that would not fit ends here as an
                // error its caller can read, and the next call goes.
                let escaped = serde_json::to_string(&text).map_or(usize::MAX, |t| t.len());
                if escaped > RELAYED_CALL_BYTES {
                    let why = format!(
                        "the call is {escaped} bytes as the tunnel carries it; a charger behind an edge bridge takes \
                         at most {RELAYED_CALL_BYTES}: send less at once"
                    );
                    self.finish(call.id, calls::Outcome::Error("FrameTooLarge".into(), why))
                        .await?;
                    continue;
                }
            }
            self.send(text).await?;
            self.in_flight = Some(InFlight {
                call: call.id,
                deadline: tokio::time::Instant::now() + self.link.settings.call_timeout,
            });
            return Ok(true);
        }
    }

    async fn finish(&mut self, call: Uuid, outcome: calls::Outcome) -> anyhow::Result<()> {
        let mut tx = self.link.db.begin_tenant(self.link.tenant).await?;
        let charger = charging::get(&mut tx, self.link.charger_id).await?;
        calls::finished(&mut tx, &charger, call, outcome).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Handles one text frame; false when the connection must end.
    async fn receive(&mut self, text: &str) -> anyhow::Result<bool> {
        let protocol = self.link.protocol;
        let frame = match rpc::parse(text) {
            Ok(frame) => frame,
            Err((id, error)) => {
                metrics::counter!("ocpp_messages_total", "action" => "unparsed", "outcome" => "error").increment(1);
                self.send(rpc::error(&id, protocol, &error)).await?;
                return Ok(true);
            }
        };
        match frame {
            Frame::Call {
                id,
                action,
                payload,
            } => {
                if let Some((_, answer)) = self.answered.iter().find(|(seen, _)| *seen == id) {
                    metrics::counter!("ocpp_messages_total", "action" => known_action(&action), "outcome" => "repeated").increment(1);
                    let answer = answer.clone();
                    self.send(answer).await?;
                    return Ok(true);
                }
                let started = std::time::Instant::now();
                let (answer, outcome, kept) = match self.handle(&action, payload).await {
                    Ok(result) => (rpc::result(&id, &result), "ok", true),
                    // "Send it again" must mean it: a message not stored for an internal reason (the database
                    // away a moment) is handled afresh when it comes again under the same id, not answered from
                    // memory with the same error until the charger gives up on it.
                    Err(error) => {
                        let kept = error.kind != rpc::ErrorKind::InternalError;
                        (rpc::error(&id, protocol, &error), "error", kept)
                    }
                };
                metrics::histogram!("ocpp_message_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("ocpp_messages_total", "action" => known_action(&action), "outcome" => outcome)
                    .increment(1);
                if kept {
                    if self.answered.len() == ANSWERS_KEPT {
                        self.answered.pop_front();
                    }
                    self.answered.push_back((id, answer.clone()));
                }
                self.send(answer).await?;
            }
            Frame::Result { id, payload } => {
                self.answer(&id, calls::Outcome::Answered(payload)).await?
            }
            Frame::Error {
                id,
                code,
                description,
            } => {
                self.answer(&id, calls::Outcome::Error(code, description))
                    .await?
            }
        }
        Ok(true)
    }

    /// The charger answered a call of ours: an answer to anything but the call in flight is dropped.
    async fn answer(&mut self, id: &str, outcome: calls::Outcome) -> anyhow::Result<()> {
        let ours = self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.call.to_string() == id);
        if !ours {
            tracing::info!(charger.id = %self.link.charger_id, message.id = id, "answer to no call in flight; dropped");
            return Ok(());
        }
        if let Some(flight) = self.in_flight.take() {
            self.finish(flight.call, outcome).await?;
        }
        self.send_next().await?;
        Ok(())
    }

    /// Answers one CALL. An accepted charger's heartbeat is answered at once (its seen mark, due once a minute,
    /// goes to the group commit) and its 1.6 meter values are stored by the group commit ([`meters`]); every other
    /// CALL runs in its own transaction: committed with a result, rolled back with an error.
    async fn handle(&mut self, action: &str, payload: Value) -> Result<Value, RpcError> {
        let seen_due = self.seen_due();
        if self.accepted {
            let reading = match (self.link.protocol, action) {
                (_, "Heartbeat") if !seen_due => {
                    return Ok(serde_json::json!({ "currentTime": chrono::Utc::now() }))
                }
                (_, "Heartbeat") => None,
                (Protocol::V16, "MeterValues") => {
                    Some(v16::meter_reading(self.link.charger_id, payload)?)
                }
                _ => return self.apply(action, payload).await,
            };
            let seen = seen_due.then_some(self.link.charger_id);
            if !self
                .shared
                .meters
                .record(self.link.tenant, reading, seen)
                .await
            {
                return Err(retry_later());
            }
            if seen_due {
                self.seen_at = tokio::time::Instant::now();
            }
            return Ok(match action {
                "Heartbeat" => serde_json::json!({ "currentTime": chrono::Utc::now() }),
                _ => serde_json::json!({}),
            });
        }
        self.apply(action, payload).await
    }

    /// Answers one CALL in its own transaction (see [`apply`]).
    async fn apply(&mut self, action: &str, payload: Value) -> Result<Value, RpcError> {
        let result: Result<(Value, Registration), Fail> = async {
            let mut tx = self.link.db.begin_tenant(self.link.tenant).await?;
            let answer = apply_with(
                &mut tx,
                self.link.charger_id,
                self.link.protocol,
                &self.link.settings,
                action,
                payload,
                Source::Connection(self.connection),
            )
            .await?;
            tx.commit().await?;
            Ok(answer)
        }
        .await;
        let (answer, registration) = result.map_err(Fail::into_rpc)?;
        self.accepted = registration == Registration::Accepted;
        Ok(answer)
    }
}

/// Applies a message an edge bridge answered itself while its tunnel was down and kept in its journal (in `tx`,
/// which records the journal event, so exactly once; the caller commits), and returns its CALLRESULT payload:
/// a transaction it reports started offline, and a 1.6 start keeps the transaction id the bridge handed out
/// (`transaction_id`; the charger knows the transaction by it).
pub async fn apply_journaled(
    tx: &mut TenantTx,
    charger_id: Uuid,
    protocol: Protocol,
    settings: &OcppSettings,
    action: &str,
    payload: Value,
    transaction_id: Option<String>,
) -> Result<Value, Fail> {
    let replay = Replay { transaction_id };
    let (answer, _) = apply_with(
        tx,
        charger_id,
        protocol,
        settings,
        action,
        payload,
        Source::Journal(replay),
    )
    .await?;
    Ok(answer)
}

async fn apply_with(
    tx: &mut TenantTx,
    charger_id: Uuid,
    protocol: Protocol,
    settings: &OcppSettings,
    action: &str,
    payload: Value,
    source: Source,
) -> Result<(Value, Registration), Fail> {
    let (connection, replay) = match source {
        Source::Connection(c) => (Some(c), None),
        Source::Journal(r) => (None, Some(r)),
    };
    let charger = charging::get(tx, charger_id).await?;
    if charger.registration != Registration::Accepted
        && !matches!(action, "BootNotification" | "Heartbeat")
    {
        return Err(Fail::Rpc(RpcError::new(
            ErrorKind::SecurityError,
            "this charger is not accepted yet: only BootNotification and Heartbeat are answered",
        )));
    }
    charging::seen(tx, &[charger.id]).await?;
    let mut cx = Cx {
        tx,
        charger: &charger,
        settings,
        connection,
        replay,
    };
    let answer = match protocol {
        Protocol::V16 => v16::handle(&mut cx, action, payload).await,
        Protocol::V201 => v201::handle(&mut cx, action, payload).await,
    }?;
    Ok((answer, charger.registration))
}

/// The action as a metric label: known OCPP names only (a charger cannot mint labels).
fn known_action(action: &str) -> &'static str {
    const KNOWN: [&str; 22] = [
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "MeterValues",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
        "TransactionEvent",
        "NotifyEvent",
        "NotifyReport",
        "SecurityEventNotification",
        "LogStatusNotification",
        "ReservationStatusUpdate",
        "NotifyChargingLimit",
        "NotifyEVChargingNeeds",
        "ClearedChargingLimit",
        "NotifyMonitoringReport",
        "ReportChargingProfiles",
        "NotifyCustomerInformation",
    ];
    KNOWN
        .iter()
        .find(|k| **k == action)
        .copied()
        .unwrap_or("other")
}

/// Why a handler did not produce an answer.
#[derive(Debug)]
pub enum Fail {
    Rpc(RpcError),
    Core(switchyard_core::Error),
}

impl Fail {
    /// The CALLERROR to answer with (internal causes are logged, never sent).
    pub fn into_rpc(self) -> RpcError {
        match self {
            Fail::Rpc(e) => e,
            Fail::Core(e) => match e {
                switchyard_core::Error::Validation { .. }
                | switchyard_core::Error::NotFound(_)
                | switchyard_core::Error::Conflict(_) => {
                    RpcError::new(ErrorKind::GenericError, e.to_string())
                }
                other => {
                    if let Some(cause) = other.hidden_cause() {
                        tracing::error!(error = ?cause, "OCPP message failed");
                    }
                    retry_later()
                }
            },
        }
    }
}

/// The CALLERROR for a message not stored now for an internal reason (the charger sends it again).
fn retry_later() -> RpcError {
    RpcError::new(
        ErrorKind::InternalError,
        "the central system could not handle this message now; send it again",
    )
}

impl From<RpcError> for Fail {
    fn from(e: RpcError) -> Self {
        Self::Rpc(e)
    }
}

impl From<switchyard_core::Error> for Fail {
    fn from(e: switchyard_core::Error) -> Self {
        Self::Core(e)
    }
}

/// What a handler works with.
pub(crate) struct Cx<'a> {
    pub tx: &'a mut TenantTx,
    pub charger: &'a Charger,
    pub settings: &'a OcppSettings,
    /// The connection the message came on (none from a bridge's journal).
    pub connection: Option<Uuid>,
    /// Set when the message comes from a bridge's journal (see [`apply_journaled`]).
    pub replay: Option<Replay>,
}

/// Where a message to apply comes from.
enum Source {
    /// A live connection (its id).
    Connection(Uuid),
    /// An edge bridge's journal.
    Journal(Replay),
}

/// A journaled message's facts beyond its payload.
pub(crate) struct Replay {
    /// The transaction id the bridge answered a 1.6 `StartTransaction` with.
    pub transaction_id: Option<String>,
}

/// A BootNotification's answer (both versions): the registration, the time, and the interval — the heartbeat for
/// an accepted charger, when to boot again otherwise.
pub(crate) fn boot_answer(
    registration: Registration,
    settings: &OcppSettings,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let (status, interval) = match registration {
        Registration::Accepted => ("Accepted", settings.heartbeat.as_secs()),
        Registration::Pending => ("Pending", 60),
        Registration::Rejected => ("Rejected", 300),
    };
    serde_json::json!({ "status": status, "currentTime": now, "interval": interval })
}

/// The transaction running on a connector of this charger, if any.
pub(crate) async fn running_on(
    cx: &mut Cx<'_>,
    connector: i32,
) -> Result<Option<charging::transactions::Transaction>, Fail> {
    Ok(charging::transactions::running_on(cx.tx, cx.charger.id, connector).await?)
}

/// What OCPP sampled values read: the energy register in Wh (the highest given: a register only climbs, and a
/// transaction's samples may come in any order) and the lowest, the power in W (the last given), and the register
/// sampled at the transaction's start (context `Transaction.Begin`: an `Ended` event carries it when the charger
/// sends its transaction's readings at the end only).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Readings {
    pub energy: Option<i64>,
    pub lowest: Option<i64>,
    pub power: Option<i32>,
    pub begin: Option<i64>,
}

impl Readings {
    /// The register to take as a transaction's baseline when it has none: the one sampled at its begin, else the
    /// lowest given.
    pub fn baseline(&self) -> Option<i64> {
        self.begin.or(self.lowest)
    }
}

/// Energy and power read from OCPP sampled values (1.6 `sampledValue`, 2.0.1 `sampledValue` with
/// `unitOfMeasure`), where present. Phase values are skipped (only totals count); a measurand left out is the
/// energy register, as both versions define. The outlet's energy (the default location: what the vehicle took) is
/// taken where the message has it, else the charger's body's, else its inlet's (a charger with one meter there),
/// never two mixed: they are different meters. The EV's and the cable's are not the charger's meters.
pub(crate) fn readings(meter_values: &[Value]) -> Readings {
    // At the outlet, the body, the inlet.
    let mut at = [Readings::default(); 3];
    for meter_value in meter_values {
        let Some(samples) = meter_value.get("sampledValue").and_then(Value::as_array) else {
            continue;
        };
        for sample in samples {
            if sample.get("phase").is_some() {
                continue;
            }
            let read = match sample.get("location").and_then(Value::as_str) {
                None | Some("Outlet") => &mut at[0],
                Some("Body") => &mut at[1],
                Some("Inlet") => &mut at[2],
                Some(_) => continue,
            };
            let measurand = sample
                .get("measurand")
                .and_then(Value::as_str)
                .unwrap_or("Energy.Active.Import.Register");
            let value = match sample.get("value") {
                Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
                Some(Value::Number(n)) => n.as_f64(),
                _ => None,
            };
            let Some(value) = value.filter(|v| v.is_finite()) else {
                continue;
            };
            let (unit, multiplier) = match sample.get("unitOfMeasure") {
                Some(u) => (
                    u.get("unit").and_then(Value::as_str).unwrap_or(""),
                    u.get("multiplier").and_then(Value::as_i64).unwrap_or(0),
                ),
                None => (sample.get("unit").and_then(Value::as_str).unwrap_or(""), 0),
            };
            let scale = 10f64.powi(multiplier.clamp(-9, 9) as i32)
                * if unit.starts_with('k') { 1000.0 } else { 1.0 };
            match measurand {
                // A register beyond a terawatt-hour is not a reading (`rpc::MAX_REGISTER_WH`): left out.
                "Energy.Active.Import.Register" => {
                    let wh = (value * scale).round();
                    if (0.0..=rpc::MAX_REGISTER_WH as f64).contains(&wh) {
                        let wh = wh as i64;
                        read.energy = read.energy.max(Some(wh));
                        read.lowest = Some(read.lowest.map_or(wh, |l| l.min(wh)));
                        if sample.get("context").and_then(Value::as_str)
                            == Some("Transaction.Begin")
                        {
                            read.begin = read.begin.or(Some(wh));
                        }
                    }
                }
                "Power.Active.Import" => {
                    read.power = Some((value * scale).round().clamp(0.0, i32::MAX as f64) as i32)
                }
                _ => {}
            }
        }
    }
    let energy = at
        .iter()
        .find(|r| r.energy.is_some())
        .copied()
        .unwrap_or_default();
    Readings {
        power: at.iter().find_map(|r| r.power),
        ..energy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn readings_take_totals_in_wh_and_w() {
        let v16 = json!([{ "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
            { "value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh" },
            { "value": "7200", "measurand": "Power.Active.Import", "unit": "W" },
            { "value": "2400", "measurand": "Power.Active.Import", "unit": "W", "phase": "L1" },
        ]}]);
        assert_eq!(
            readings(v16.as_array().map(Vec::as_slice).unwrap_or_default()),
            Readings {
                energy: Some(12_500),
                lowest: Some(12_500),
                power: Some(7_200),
                begin: None
            }
        );
        let v201 = json!([{ "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
            { "value": 3.2, "unitOfMeasure": { "unit": "Wh", "multiplier": 3 } },
        ]}]);
        assert_eq!(
            readings(v201.as_array().map(Vec::as_slice).unwrap_or_default()),
            Readings {
                energy: Some(3_200),
                lowest: Some(3_200),
                power: None,
                begin: None
            }
        );
    }

    #[test]
    fn a_register_beyond_any_meters_is_not_a_reading() {
        let absurd = json!([{ "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
            { "value": "1e30", "measurand": "Energy.Active.Import.Register", "unit": "Wh" },
            { "value": "7200", "measurand": "Power.Active.Import", "unit": "W" },
        ]}]);
        assert_eq!(
            readings(absurd.as_array().map(Vec::as_slice).unwrap_or_default()),
            Readings {
                energy: None,
                lowest: None,
                power: Some(7_200),
                begin: None
            }
        );
        let largest = json!([{ "sampledValue": [{ "value": "1000000000", "unit": "kWh" }] }]);
        assert_eq!(
            readings(largest.as_array().map(Vec::as_slice).unwrap_or_default()),
            Readings {
                energy: Some(rpc::MAX_REGISTER_WH),
                lowest: Some(rpc::MAX_REGISTER_WH),
                power: None,
                begin: None
            }
        );
    }

    #[test]
    fn an_ended_events_readings_give_the_register_at_the_transactions_begin() {
        // In any order: the end's register is the highest.
        let ended = json!([
            { "timestamp": "2026-01-01T01:00:00Z", "sampledValue": [
                { "value": 59_500, "context": "Transaction.End" },
            ]},
            { "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
                { "value": 52_000, "context": "Transaction.Begin" },
            ]},
        ]);
        assert_eq!(
            readings(ended.as_array().map(Vec::as_slice).unwrap_or_default()),
            Readings {
                energy: Some(59_500),
                lowest: Some(52_000),
                power: None,
                begin: Some(52_000)
            }
        );
    }

    #[test]
    fn the_outlets_totals_count_before_another_meters_and_the_lowest_is_the_baseline_without_a_begin(
    ) {
        let values = json!([{ "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
            { "value": 9_000_000, "location": "Inlet" },
            { "value": 41_000, "location": "Outlet" },
            { "value": 40_000 },
            { "value": 41_500, "phase": "L1" },
        ]}]);
        let read = readings(values.as_array().map(Vec::as_slice).unwrap_or_default());
        assert_eq!(
            (read.energy, read.lowest, read.baseline()),
            (Some(41_000), Some(40_000), Some(40_000))
        );
        // A charger that meters only at its inlet: that meter's register, not none.
        let inlet = json!([{ "timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
            { "value": 9_000_000, "location": "Inlet" },
            { "value": 9_500_000, "location": "EV" },
            { "value": 7_200, "measurand": "Power.Active.Import", "location": "Outlet" },
        ]}]);
        let read = readings(inlet.as_array().map(Vec::as_slice).unwrap_or_default());
        assert_eq!((read.energy, read.power), (Some(9_000_000), Some(7_200)));
    }
}
