//! The local OCPP-J server (`BRIDGE_OCPP_LISTEN`): chargers on the venue's LAN connect to
//! `ws://<bridge>:<port>/ocpp/<chargePointId>` with the subprotocol `ocpp1.6` or `ocpp2.0.1` and HTTP Basic auth, as
//! they would to the cloud, and the bridge relays their frames through its one tunnel, so a charger behind NAT still
//! reaches the central system.
//!
//! The bridge does not judge a charger's password: it forwards the identity, subprotocol and password
//! (`ocpp_open`) and the cloud answers `ocpp_opened` or `ocpp_refused` (then the bridge closes the socket, 1008).
//! While the tunnel is down the bridge keeps the chargers connected and acts as OCPP's local controller: it accepts
//! boots, answers heartbeats and status notifications, authorizes tags from its local copy of the tenant's list
//! (learnt from the `SendLocalList` calls the cloud sends its chargers through it, and the cloud's `Authorize`
//! answers it relayed; anything else is `Invalid`), and answers transaction messages itself — a 1.6
//! `StartTransaction` gets an id of the bridge's own (from 1,500,000,000 up, the counter kept beside the journal).
//! Every transaction message (`StartTransaction`, `StopTransaction`, `MeterValues`, `TransactionEvent`) is written
//! to the journal as an `ocpp` event and reaches the cloud exactly once, in order, when the tunnel returns. A
//! charger may connect while the tunnel is down only with an identity and password the cloud accepted before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard_edge_protocol::{encode, Down, Event, Up, MAX_FRAME_BYTES};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::Shared;

/// The first transaction id the bridge hands out (1.6): far above what the cloud's own sequence reaches.
pub const FIRST_LOCAL_TRANSACTION_ID: u64 = 1_500_000_000;

/// The subprotocols, in the order the bridge prefers them (the cloud's order).
const SUBPROTOCOLS: [&str; 2] = ["ocpp2.0.1", "ocpp1.6"];

/// The largest frame a charger may send through the bridge: once escaped it must fit a tunnel frame.
const MAX_CHARGER_FRAME: usize = MAX_FRAME_BYTES / 2;

/// A tag as the bridge knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalTag {
    /// `Accepted`, `Blocked`, `Expired`, `Invalid` … (the same words in 1.6 and 2.0.1).
    status: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// How many password calls to a charger the bridge watches for their answers at most (the newest).
const PASSWORDS_WATCHED: usize = 4;

/// How the cloud (and the bridge, offline) refuses a charger it does not know by that identity and password.
const WRONG_PASSWORD: &str = "unknown charge point or wrong password";

/// What the local controller keeps on disk, beside the journal.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Store {
    /// Transaction ids handed out so far (1.6).
    issued: u64,
    /// The tenant's tags as last heard from the cloud, by uid.
    tags: HashMap<String, LocalTag>,
    /// The password (SHA-256, hex) the cloud last accepted for each charge point id: what lets a charger connect
    /// while the tunnel is down.
    logins: HashMap<String, String>,
}

/// One charger's connection to the bridge.
struct Conn {
    charge_point_id: String,
    subprotocol: String,
    password: Option<String>,
    to_charger: mpsc::UnboundedSender<Message>,
    /// Opened on the current tunnel: its frames go to the cloud (else the bridge answers them).
    relayed: bool,
    /// Authorize calls relayed and not answered yet (message id → tag): their answers fill the local list.
    authorizing: HashMap<String, String>,
    /// The cloud's calls giving the charger a new password, not answered yet (message id → the password): once
    /// the charger accepts one, it is the password the bridge knows it by — even when the answer comes while the
    /// tunnel is down, since the cloud keeps a password it may have applied. Freed with the connection.
    new_passwords: std::collections::VecDeque<(String, String)>,
}

/// The local controller's state, shared by the tunnel and the chargers' connections.
pub struct Ocpp {
    conns: std::sync::Mutex<HashMap<Uuid, Conn>>,
    store: std::sync::Mutex<Store>,
    path: PathBuf,
    /// Frames for the tunnel (drained while it is up).
    up: mpsc::UnboundedSender<Up>,
    pub(crate) up_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Up>>,
    /// Is a tunnel up and welcomed?
    online: std::sync::atomic::AtomicBool,
    /// Messages the bridge answered itself.
    pub offline_messages: AtomicU64,
    /// Chargers closed for answering no ping.
    pub dead: AtomicU64,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the local controller's state lives: beside the journal (`<journal>.ocpp.json`).
pub fn store_path(journal: &Path) -> PathBuf {
    let mut name = journal.file_name().unwrap_or_default().to_os_string();
    name.push(".ocpp.json");
    journal.with_file_name(name)
}

impl Ocpp {
    /// Opens (or starts) the state kept at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let store = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Store::default(),
            Err(e) => return Err(e.into()),
        };
        let (up, up_rx) = mpsc::unbounded_channel();
        Ok(Self {
            conns: Default::default(),
            store: std::sync::Mutex::new(store),
            path: path.to_owned(),
            up,
            up_rx: tokio::sync::Mutex::new(up_rx),
            online: Default::default(),
            offline_messages: AtomicU64::new(0),
            dead: AtomicU64::new(0),
        })
    }

    /// Chargers connected to the bridge.
    pub fn connected(&self) -> usize {
        lock(&self.conns).len()
    }

    fn save(&self, store: &Store) {
        let write = || -> anyhow::Result<()> {
            let tmp = self.path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut file, serde_json::to_string(store)?.as_bytes())?;
            file.sync_data()?;
            std::fs::rename(&tmp, &self.path)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::error!(error = %e, path = %self.path.display(), "cannot save the OCPP state");
        }
    }

    /// The tunnel is up and the journal sent: every connected charger is opened on it.
    pub(crate) fn tunnel_up(&self) {
        self.online.store(true, Ordering::SeqCst);
        let mut conns = lock(&self.conns);
        for (id, conn) in conns.iter_mut() {
            conn.relayed = true;
            conn.authorizing.clear();
            let _ = self.up.send(open_frame(*id, conn));
        }
    }

    /// Whether chargers' frames go live through the tunnel (else to the journal).
    #[cfg(test)]
    pub(crate) fn is_live(&self) -> bool {
        self.online.load(Ordering::SeqCst)
    }

    /// The tunnel is gone: the bridge answers every charger itself until the next one.
    pub(crate) fn tunnel_down(&self) {
        self.online.store(false, Ordering::SeqCst);
        for conn in lock(&self.conns).values_mut() {
            conn.relayed = false;
            conn.authorizing.clear();
        }
    }

    /// May a charger connect (the handshake's answer): the chosen subprotocol, or the refusal.
    #[expect(
        clippy::result_large_err,
        reason = "the handshake callback's error type is tungstenite's"
    )]
    fn admit(&self, request: &Request) -> Result<Hello, ErrorResponse> {
        let refuse = |status: u16, text: &str| {
            let mut response = ErrorResponse::new(Some(text.to_owned()));
            *response.status_mut() =
                tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
                    .unwrap_or_default();
            if status == 401 {
                if let Ok(v) = "Basic realm=\"switchyard-ocpp\"".parse() {
                    response.headers_mut().insert("www-authenticate", v);
                }
            }
            response
        };
        let identity = request
            .uri()
            .path()
            .strip_prefix("/ocpp/")
            .filter(|id| (1..=48).contains(&id.len()) && !id.contains('/'))
            .ok_or_else(|| refuse(404, "connect to /ocpp/<chargePointId>"))?
            .to_owned();
        let offered: Vec<String> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .collect();
        let subprotocol = SUBPROTOCOLS
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .ok_or_else(|| refuse(400, "offer the WebSocket subprotocol ocpp1.6 or ocpp2.0.1"))?;
        let password = basic_password(request, &identity);
        // Offline, only a login the cloud accepted before.
        if !self.online.load(Ordering::SeqCst) {
            let known = lock(&self.store).logins.get(&identity).cloned();
            let given = password.as_deref().map(crate::agents::sha256_hex);
            if known.is_none() || known != given {
                return Err(refuse(401, WRONG_PASSWORD));
            }
        }
        Ok(Hello {
            charge_point_id: identity,
            subprotocol: (*subprotocol).to_owned(),
            password,
        })
    }

    /// A charger connected: it is opened on the tunnel if one is up.
    fn register(&self, id: Uuid, hello: Hello, to_charger: mpsc::UnboundedSender<Message>) {
        let relayed = self.online.load(Ordering::SeqCst);
        let conn = Conn {
            charge_point_id: hello.charge_point_id,
            subprotocol: hello.subprotocol,
            password: hello.password,
            to_charger,
            relayed,
            authorizing: HashMap::new(),
            new_passwords: std::collections::VecDeque::new(),
        };
        if relayed {
            let _ = self.up.send(open_frame(id, &conn));
        }
        lock(&self.conns).insert(id, conn);
    }

    fn unregister(&self, id: Uuid) {
        if let Some(conn) = lock(&self.conns).remove(&id) {
            if conn.relayed {
                let _ = self.up.send(Up::OcppClosed { conn: id });
            }
        }
    }

    /// A frame from the cloud for a relayed charger.
    pub(crate) fn down(&self, message: Down) {
        let mut conns = lock(&self.conns);
        match message {
            Down::OcppOpened { conn } => {
                if let Some(c) = conns.get(&conn) {
                    let hash = c.password.as_deref().map(crate::agents::sha256_hex);
                    let mut store = lock(&self.store);
                    if let Some(hash) = hash {
                        if store.logins.get(&c.charge_point_id) != Some(&hash) {
                            store.logins.insert(c.charge_point_id.clone(), hash);
                            self.save(&store);
                        }
                    }
                    tracing::info!(
                        charge_point_id = c.charge_point_id,
                        "charger relayed to the cloud"
                    );
                }
            }
            Down::OcppRefused { conn, reason } => {
                if let Some(mut c) = conns.remove(&conn) {
                    tracing::info!(
                        charge_point_id = c.charge_point_id,
                        reason,
                        "the cloud refused a charger"
                    );
                    // The password it knew the charger by is no longer good. A wrong one tried by someone else, or
                    // a refusal that is not about the password ("retry later"), leaves it be.
                    let hash = c.password.as_deref().map(crate::agents::sha256_hex);
                    let mut store = lock(&self.store);
                    if reason == WRONG_PASSWORD
                        && hash.is_some()
                        && store.logins.get(&c.charge_point_id) == hash.as_ref()
                    {
                        store.logins.remove(&c.charge_point_id);
                        self.save(&store);
                    }
                    c.relayed = false;
                    let _ = c.to_charger.send(close(1008, reason));
                }
            }
            Down::OcppFrame { conn, text } => {
                if let Some(c) = conns.get_mut(&conn) {
                    self.learn(c, &text);
                    let _ = c.to_charger.send(Message::text(text));
                }
            }
            Down::OcppClose { conn, code, reason } => {
                if let Some(c) = conns.remove(&conn) {
                    let _ = c.to_charger.send(close(code, reason));
                }
            }
            _ => {}
        }
    }

    /// Learns tags from what the cloud tells a charger: `SendLocalList` (1.6 and 2.0.1), and the answers to the
    /// `Authorize` calls it relayed.
    fn learn(&self, conn: &mut Conn, text: &str) {
        let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match (frame.first().and_then(Value::as_i64), frame.get(1)) {
            (Some(2), _) if frame.get(2).and_then(Value::as_str) == Some("SendLocalList") => {
                let payload = frame.get(3).cloned().unwrap_or_default();
                // A `Full` list is not a reason to forget tags: the cloud sends the whole list in chunks (the first
                // `Full`, the rest differential, each after the charger took the last), a 1.6 list leaves out the
                // longer uids of 2.0.1 chargers, and this copy is the whole venue's. The cloud never deletes a tag;
                // one taken away arrives as blocked.
                let entries = payload["localAuthorizationList"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut store = lock(&self.store);
                for entry in entries {
                    let uid = entry["idTag"]
                        .as_str()
                        .or_else(|| entry["idToken"]["idToken"].as_str());
                    let info = entry.get("idTagInfo").or_else(|| entry.get("idTokenInfo"));
                    match (uid, info) {
                        (Some(uid), Some(info)) => {
                            store.tags.insert(uid.to_owned(), local_tag(info));
                        }
                        // A differential entry without its info removes the tag.
                        (Some(uid), None) => {
                            store.tags.remove(uid);
                        }
                        _ => {}
                    }
                }
                self.save(&store);
            }
            (Some(2), Some(Value::String(id))) => {
                let action = frame.get(2).and_then(Value::as_str).unwrap_or_default();
                let payload = frame.get(3).cloned().unwrap_or_default();
                if let Some(password) = password_sent(action, &payload) {
                    conn.new_passwords.push_back((id.clone(), password));
                    // The cloud keeps no more passwords a charger may be using; neither does the bridge.
                    if conn.new_passwords.len() > PASSWORDS_WATCHED {
                        conn.new_passwords.pop_front();
                    }
                }
            }
            (Some(3), Some(Value::String(id))) => {
                let Some(uid) = conn.authorizing.remove(id) else {
                    return;
                };
                let payload = frame.get(2).cloned().unwrap_or_default();
                if let Some(info) = payload
                    .get("idTagInfo")
                    .or_else(|| payload.get("idTokenInfo"))
                {
                    let mut store = lock(&self.store);
                    store.tags.insert(uid, local_tag(info));
                    self.save(&store);
                }
            }
            _ => {}
        }
    }

    /// A frame from a charger: relayed (`None`), or the facts to answer it here.
    fn route(&self, id: Uuid, text: &str) -> Option<(String, String)> {
        let mut conns = lock(&self.conns);
        let conn = conns.get_mut(&id)?;
        self.password_answer(conn, text);
        if !conn.relayed {
            return Some((conn.charge_point_id.clone(), conn.subprotocol.clone()));
        }
        if let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(text) {
            if let (Some(2), Some(msg), Some("Authorize")) = (
                frame.first().and_then(Value::as_i64),
                frame.get(1).and_then(Value::as_str),
                frame.get(2).and_then(Value::as_str),
            ) {
                let payload = frame.get(3).cloned().unwrap_or_default();
                if let Some(uid) = tag_of(&payload) {
                    conn.authorizing.insert(msg.to_owned(), uid);
                }
            }
        }
        let up = Up::OcppFrame {
            conn: id,
            text: text.to_owned(),
        };
        if encode(&up).len() > MAX_FRAME_BYTES {
            tracing::warn!(
                charge_point_id = conn.charge_point_id,
                "a charger frame too large for the tunnel was dropped"
            );
        } else {
            let _ = self.up.send(up);
        }
        None
    }

    /// The charger's answer (CALLRESULT or CALLERROR) to a call that gave it a new password: accepted, that is the
    /// password the cloud knows it by, for the bridge's offline logins and for opening it again on the next tunnel.
    fn password_answer(&self, conn: &mut Conn, text: &str) {
        if conn.new_passwords.is_empty() {
            return;
        }
        let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let (Some(3 | 4), Some(msg)) = (
            frame.first().and_then(Value::as_i64),
            frame.get(1).and_then(Value::as_str),
        ) else {
            return;
        };
        let Some(at) = conn.new_passwords.iter().position(|(id, _)| id == msg) else {
            return;
        };
        let Some((_, password)) = conn.new_passwords.remove(at) else {
            return;
        };
        if frame[0] == 3 && password_accepted(frame.get(2).unwrap_or(&Value::Null)) {
            let mut store = lock(&self.store);
            store.logins.insert(
                conn.charge_point_id.clone(),
                crate::agents::sha256_hex(&password),
            );
            self.save(&store);
            conn.password = Some(password);
        }
    }

    /// The local list's verdict on a tag.
    fn verdict(&self, uid: &str) -> String {
        match lock(&self.store).tags.get(uid) {
            Some(tag)
                if tag.status == "Accepted" && tag.expires_at.is_some_and(|x| x <= Utc::now()) =>
            {
                "Expired".into()
            }
            Some(tag) => tag.status.clone(),
            None => "Invalid".into(),
        }
    }

    /// The next transaction id of the bridge's own, kept on disk before it is handed out.
    fn next_transaction_id(&self) -> u64 {
        let mut store = lock(&self.store);
        store.issued += 1;
        self.save(&store);
        FIRST_LOCAL_TRANSACTION_ID + store.issued
    }
}

/// What a charger said in its handshake.
#[derive(Debug, Clone)]
struct Hello {
    charge_point_id: String,
    subprotocol: String,
    password: Option<String>,
}

fn open_frame(id: Uuid, conn: &Conn) -> Up {
    Up::OcppOpen {
        conn: id,
        charge_point_id: conn.charge_point_id.clone(),
        subprotocol: conn.subprotocol.clone(),
        password: conn.password.clone(),
    }
}

fn close(code: u16, reason: String) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

fn local_tag(info: &Value) -> LocalTag {
    LocalTag {
        status: info["status"].as_str().unwrap_or("Invalid").to_owned(),
        expires_at: info
            .get("expiryDate")
            .or_else(|| info.get("cacheExpiryDateTime"))
            .and_then(|v| serde_json::from_value(v.clone()).ok()),
    }
}

/// The password a call from the cloud gives the charger (1.6 `ChangeConfiguration AuthorizationKey`, 2.0.1
/// `SetVariables SecurityCtrlr.BasicAuthPassword`; names are not case-sensitive), if any.
fn password_sent(action: &str, payload: &Value) -> Option<String> {
    match action {
        "ChangeConfiguration"
            if payload["key"]
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("AuthorizationKey")) =>
        {
            payload["value"].as_str().map(str::to_owned)
        }
        "SetVariables" => payload["setVariableData"]
            .as_array()?
            .iter()
            .find(|d| {
                d["variable"]["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("BasicAuthPassword"))
            })
            .and_then(|d| d["attributeValue"].as_str())
            .map(str::to_owned),
        _ => None,
    }
}

/// Whether a charger's answer accepts the configuration it was sent: 1.6 `status`, 2.0.1 every
/// `setVariableResult`.
fn password_accepted(answer: &Value) -> bool {
    match answer["setVariableResult"].as_array() {
        Some(results) => {
            !results.is_empty() && results.iter().all(|r| r["attributeStatus"] == "Accepted")
        }
        None => answer["status"] == "Accepted",
    }
}

/// A verdict in 1.6's words. The venue's copy of the list is learned from 1.6 and 2.0.1 chargers alike, so it may
/// hold 2.0.1's statuses (`NoCredit`, `Unknown`, ...), which a 1.6 charger would take as a malformed answer.
fn v16_status(status: String) -> String {
    match status.as_str() {
        "Accepted" | "Blocked" | "Expired" | "Invalid" | "ConcurrentTx" => status,
        "Unknown" => "Invalid".into(),
        _ => "Blocked".into(),
    }
}

/// The tag of an Authorize (1.6 `idTag`, 2.0.1 `idToken.idToken`).
fn tag_of(payload: &Value) -> Option<String> {
    payload["idTag"]
        .as_str()
        .or_else(|| payload["idToken"]["idToken"].as_str())
        .map(str::to_owned)
}

/// The password of an HTTP Basic `Authorization` header whose user is the charger's identity.
fn basic_password(request: &Request, identity: &str) -> Option<String> {
    use base64::Engine;
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (user == identity).then(|| password.to_owned())
}

/// Accepts chargers until the task is dropped (which closes their connections too).
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, keepalive: crate::Keepalive) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = crate::next_connection(&listener, "ocpp").await;
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        connections.spawn(async move {
            if let Err(e) = charger(stream, &shared, keepalive).await {
                tracing::info!(%peer, error = %e, "charger connection ended");
            }
        });
    }
}

#[expect(
    clippy::result_large_err,
    reason = "the handshake callback's error type is tungstenite's"
)]
async fn charger(
    stream: tokio::net::TcpStream,
    shared: &Shared,
    keepalive: crate::Keepalive,
) -> anyhow::Result<()> {
    let mut hello = None;
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_CHARGER_FRAME))
        .max_frame_size(Some(MAX_CHARGER_FRAME));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, mut response: Response| {
            let admitted = shared.ocpp.admit(request)?;
            if let Ok(v) = admitted.subprotocol.parse() {
                response.headers_mut().insert("sec-websocket-protocol", v);
            }
            hello = Some(admitted);
            Ok(response)
        },
        Some(config),
    );
    let ws = crate::within_handshake(handshake).await??;
    let Some(hello) = hello else { return Ok(()) };
    let id = Uuid::now_v7();
    tracing::info!(
        charge_point_id = hello.charge_point_id,
        subprotocol = hello.subprotocol,
        "charger connected"
    );
    let (to_charger, mut outbox) = mpsc::unbounded_channel::<Message>();
    shared.ocpp.register(id, hello, to_charger);
    let (mut sink, mut stream) = ws.split();
    let mut liveness = crate::Liveness::new(keepalive);
    let ended: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                alive = liveness.due() => {
                    if !alive {
                        tracing::info!(connection = %id, "charger answered no ping: taken for dead");
                        shared.ocpp.dead.fetch_add(1, Ordering::Relaxed);
                        // The cloud hears at once; the close frame is a courtesy a dead charger will not read.
                        shared.ocpp.unregister(id);
                        let _ = crate::write(&mut sink, close(1001, "no answer to pings".into()), crate::DEAD_CLOSE_TIMEOUT)
                            .await;
                        return Ok(());
                    }
                    crate::write(&mut sink, Message::Ping(Default::default()), crate::LAN_WRITE_TIMEOUT).await?;
                    crate::metrics::Counters::add(&shared.counters.pings, 1);
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        liveness.heard();
                        if let Some(answer) = from_charger(shared, id, text.as_str()).await {
                            crate::write(&mut sink, Message::text(answer), crate::LAN_WRITE_TIMEOUT).await?;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => liveness.heard(),
                    Some(Err(e)) => return Err(e.into()),
                },
                out = outbox.recv() => match out {
                    Some(close @ Message::Close(_)) => {
                        let _ = crate::write(&mut sink, close, crate::LAN_WRITE_TIMEOUT).await;
                        return Ok(());
                    }
                    Some(message) => crate::write(&mut sink, message, crate::LAN_WRITE_TIMEOUT).await?,
                    None => return Ok(()),
                },
            }
        }
    }
    .await;
    shared.ocpp.unregister(id);
    ended
}

/// A charger's frame: relayed while the tunnel is up, else answered here.
async fn from_charger(shared: &Shared, id: Uuid, text: &str) -> Option<String> {
    let (identity, subprotocol) = shared.ocpp.route(id, text)?;
    let Ok(Value::Array(frame)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    // Only CALLs get an answer; answers to the cloud's calls cannot reach it now.
    let (Some(2), Some(msg), Some(action)) = (
        frame.first().and_then(Value::as_i64),
        frame.get(1).and_then(Value::as_str),
        frame.get(2).and_then(Value::as_str),
    ) else {
        return None;
    };
    let payload = frame.get(3).cloned().unwrap_or(json!({}));
    shared.ocpp.offline_messages.fetch_add(1, Ordering::Relaxed);
    let v16 = subprotocol == "ocpp1.6";
    let answer = local_answer(shared, &identity, &subprotocol, action, payload, v16).await;
    Some(match answer {
        Ok(result) => json!([3, msg, result]).to_string(),
        Err((code, description)) => json!([4, msg, code, description, {}]).to_string(),
    })
}

/// The local controller's answer to one CALL (and the journal entry of a transaction message).
async fn local_answer(
    shared: &Shared,
    identity: &str,
    subprotocol: &str,
    action: &str,
    payload: Value,
    v16: bool,
) -> Result<Value, (&'static str, String)> {
    let now = Utc::now();
    let info = |status: String| {
        if v16 {
            json!({ "idTagInfo": { "status": v16_status(status) } })
        } else {
            json!({ "idTokenInfo": { "status": status } })
        }
    };
    let mut transaction_id = None;
    let answer = match action {
        "BootNotification" => json!({ "status": "Accepted", "currentTime": now, "interval": 300 }),
        "Heartbeat" => json!({ "currentTime": now }),
        "Authorize" => {
            let uid = tag_of(&payload).ok_or(("FormationViolation", "no tag".to_owned()))?;
            info(shared.ocpp.verdict(&uid))
        }
        "StartTransaction" if v16 => {
            let uid = tag_of(&payload).ok_or(("FormationViolation", "no idTag".to_owned()))?;
            let id = shared.ocpp.next_transaction_id();
            transaction_id = Some(id.to_string());
            json!({ "idTagInfo": { "status": v16_status(shared.ocpp.verdict(&uid)) }, "transactionId": id })
        }
        // A free-vend token (2.0.1 `NoAuthorization`) names no one: nothing to judge, as the cloud answers it.
        "StopTransaction" | "TransactionEvent" => match tag_of(&payload) {
            Some(uid) if payload["idToken"]["type"] != "NoAuthorization" => {
                info(shared.ocpp.verdict(&uid))
            }
            _ => json!({}),
        },
        "MeterValues"
        | "StatusNotification"
        | "DiagnosticsStatusNotification"
        | "FirmwareStatusNotification"
        | "SecurityEventNotification"
        | "NotifyEvent"
        | "NotifyReport"
        | "LogStatusNotification" => json!({}),
        "DataTransfer" => json!({ "status": "UnknownVendorId" }),
        other => {
            return Err((
                "NotImplemented",
                format!("{other} is not answered while the venue is offline"),
            ))
        }
    };
    if matches!(
        action,
        "StartTransaction" | "StopTransaction" | "MeterValues" | "TransactionEvent"
    ) {
        let event = Event::Ocpp {
            charge_point_id: identity.to_owned(),
            subprotocol: subprotocol.to_owned(),
            action: action.to_owned(),
            payload,
            transaction_id,
        };
        let mut state = shared.state.lock().await;
        let at = state.cloud_now();
        match state.journal.append(None, at, event) {
            Ok(_) => crate::metrics::Counters::add(&shared.counters.events, 1),
            Err(e) => {
                tracing::error!(error = %e, "cannot write the journal");
                return Err((
                    "InternalError",
                    "the bridge could not keep this message; send it again".into(),
                ));
            }
        }
        drop(state);
        shared.outbox.notify_one();
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        let (to_charger, _) = mpsc::unbounded_channel();
        Conn {
            charge_point_id: "CP-1".into(),
            subprotocol: "ocpp1.6".into(),
            password: None,
            to_charger,
            relayed: true,
            authorizing: HashMap::new(),
            new_passwords: Default::default(),
        }
    }

    /// The second chunk of a list never reaching the charger (it refused the first, or the tunnel fell) leaves the
    /// bridge with every tag it knew, not only the first chunk's: a `Full` list used to empty the venue's copy.
    #[test]
    fn a_full_list_adds_to_the_venues_tags_and_forgets_none() -> anyhow::Result<()> {
        let path = std::env::temp_dir().join(format!("edge-ocpp-{}.json", Uuid::new_v4().simple()));
        let ocpp = Ocpp::open(&path)?;
        let mut c = conn();
        let list = |kind: &str, tags: &[&str]| {
            let entries: Vec<Value> = tags
                .iter()
                .map(|t| serde_json::json!({"idTag": t, "idTagInfo": {"status": "Accepted"}}))
                .collect();
            serde_json::json!([2, "m1", "SendLocalList",
                {"listVersion": 1, "updateType": kind, "localAuthorizationList": entries}])
            .to_string()
        };
        ocpp.learn(
            &mut c,
            &list("Differential", &["AAAA0001", "LONG-2.0.1-TAG-0000000001"]),
        );
        ocpp.learn(&mut c, &list("Full", &["AAAA0002"]));
        let mut known: Vec<String> = lock(&ocpp.store).tags.keys().cloned().collect();
        known.sort();
        assert_eq!(known, ["AAAA0001", "AAAA0002", "LONG-2.0.1-TAG-0000000001"]);
        // Kept on disk as well.
        drop(ocpp);
        let again = Ocpp::open(&path)?;
        assert_eq!(lock(&again.store).tags.len(), 3);
        std::fs::remove_file(&path)?;
        Ok(())
    }

    /// A tag a 2.0.1 charger's list gave as `NoCredit` (its patron in debt) is refused offline to a 1.6 charger of
    /// the same venue too, in 1.6's words (`Blocked`), not with a status its schema lacks.
    #[test]
    fn a_tag_without_credit_is_refused_in_each_protocols_words() -> anyhow::Result<()> {
        let path = std::env::temp_dir().join(format!("edge-ocpp-{}.json", Uuid::new_v4().simple()));
        let ocpp = Ocpp::open(&path)?;
        let mut c = conn();
        c.subprotocol = "ocpp2.0.1".into();
        let entry = |uid: &str, status: &str| serde_json::json!({"idToken": {"idToken": uid, "type": "ISO14443"}, "idTokenInfo": {"status": status}});
        let list = serde_json::json!([2, "m1", "SendLocalList", {"versionNumber": 3, "updateType": "Differential",
            "localAuthorizationList": [entry("BROKE001", "NoCredit"), entry("FUNDED01", "Accepted")]}]);
        ocpp.learn(&mut c, &list.to_string());
        assert_eq!(ocpp.verdict("BROKE001"), "NoCredit");
        assert_eq!(v16_status(ocpp.verdict("BROKE001")), "Blocked");
        assert_eq!(v16_status(ocpp.verdict("FUNDED01")), "Accepted");
        assert_eq!(v16_status(ocpp.verdict("NOBODY01")), "Invalid");
        assert_eq!(v16_status("Unknown".into()), "Invalid");
        std::fs::remove_file(&path)?;
        Ok(())
    }
}
