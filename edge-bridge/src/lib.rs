//! The venue's edge bridge: one outbound WebSocket tunnel to the cloud, the venue's devices driven to the cloud's
//! schedule, and a local timer that ends sessions on time whether or not the cloud can be reached.
//!
//! Three parts share one state: the **tunnel** (connect with the bridge token, `hello`, then frames both ways;
//! reconnects with exponential back-off and jitter), the **scheduler** (switches a station off when its planned
//! time is up, by the cloud's clock as measured through heartbeats), and the **journal** (every upstream event is
//! written to disk before it is sent and kept until acknowledged).

pub mod agents;
pub mod cabinet_sim;
pub mod cabinets;
pub mod drivers;
pub mod journal;
pub mod metrics;
pub mod mqtt;
pub mod ocpp;
pub mod routeros;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::{SinkExt, StreamExt};
use switchyard_edge_protocol::{decode, encode, Down, Event, StationPlan, Up, MAX_FRAME_BYTES};
use tokio::sync::{watch, Mutex, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use drivers::Driver;
use journal::Journal;

/// Settings, from the environment (see the manual).
#[derive(Debug, Clone)]
pub struct Config {
    /// `ws(s)://…/edge/v1/tunnel`.
    pub cloud_url: String,
    pub token: String,
    pub journal_path: PathBuf,
    pub heartbeat: Duration,
    /// The longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Where PC agents connect (`ws://<this>/ws/agent/<station id>`); none: no agent server.
    pub agent_listen: Option<std::net::SocketAddr>,
    /// The venue's MQTT broker for Tasmota plugs (`mqtt://host:1883`).
    pub mqtt_url: Option<String>,
    /// A JSON file of device logins by `credentials_ref`: `{"<ref>": {"username": "...", "password": "..."}}`.
    pub credentials_file: Option<PathBuf>,
    /// How often devices are read and agents' heartbeats relayed (what changed is reported); none: never.
    pub readings: Option<Duration>,
    /// Where `/metrics` is served; none: nowhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where the venue's chargers connect (`ws://<this>/ocpp/<chargePointId>`); none: no OCPP server.
    pub ocpp_listen: Option<std::net::SocketAddr>,
    /// WebSocket pings to the chargers and PC agents connected to the bridge, and the silence after which one is
    /// taken for dead.
    pub local_keepalive: Keepalive,
}

/// How the bridge finds a charger or a PC agent dead that went away without closing its connection (power cut, cable
/// pulled): the cloud only hears of it through the bridge, so without this it would stay connected for hours (until
/// the operating system gives up on the socket), its commands timing out one by one.
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    /// A WebSocket ping this often (`BRIDGE_LOCAL_PING_MS`) ...
    pub ping: Duration,
    /// ... and a peer that sent nothing, not even a pong, for this long is closed (`BRIDGE_LOCAL_DEAD_AFTER_MS`).
    pub dead_after: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            ping: Duration::from_secs(20),
            dead_after: Duration::from_secs(50),
        }
    }
}

/// One connection's [`Keepalive`]: when it was last heard, and when to ping it next.
pub(crate) struct Liveness {
    interval: tokio::time::Interval,
    heard: tokio::time::Instant,
    dead_after: Duration,
}

impl Liveness {
    pub(crate) fn new(keepalive: Keepalive) -> Self {
        let start = tokio::time::Instant::now();
        let mut interval = tokio::time::interval_at(start + keepalive.ping, keepalive.ping);
        // After a slow write, no burst of late ticks that could judge a peer before its waiting pong is read.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            interval,
            heard: start,
            dead_after: keepalive.dead_after,
        }
    }

    /// The peer sent something (a frame, a pong).
    pub(crate) fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
    }

    /// Waits for the next ping: true when it is to be sent, false when the peer has been silent too long.
    pub(crate) async fn due(&mut self) -> bool {
        self.interval.tick().await;
        self.heard.elapsed() < self.dead_after
    }
}

/// How long the close frame to a peer found dead may wait: it will most likely never be read.
pub(crate) const DEAD_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Config {
    /// The settings from `file` (`KEY=value` lines, the format of systemd's `EnvironmentFile`), each overridden by
    /// the environment variable of the same name.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let from_file = match file {
            Some(path) => parse_settings(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading the settings file {}", path.display()))?,
            )
            .with_context(|| format!("in the settings file {}", path.display()))?,
            None => HashMap::new(),
        };
        Self::from_lookup(|k| std::env::var(k).ok().or_else(|| from_file.get(k).cloned()))
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |k: &str| {
            var(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let millis = |k: &str, default: u64| -> anyhow::Result<Duration> {
            Ok(Duration::from_millis(var(k).map_or(Ok(default), |v| {
                v.parse()
                    .with_context(|| format!("{k} must be a whole number of milliseconds"))
            })?))
        };
        let cloud_url = var("BRIDGE_CLOUD_URL").context(
            "BRIDGE_CLOUD_URL is required (e.g. wss://switchyard.example.com/edge/v1/tunnel)",
        )?;
        if !(cloud_url.starts_with("ws://") || cloud_url.starts_with("wss://")) {
            anyhow::bail!("BRIDGE_CLOUD_URL must be a ws:// or wss:// URL, not {cloud_url:?}");
        }
        // The token and every command travel in the tunnel: in clear text only to this machine, or when a
        // developer says so.
        let allow_insecure = match var("BRIDGE_ALLOW_INSECURE").as_deref() {
            None | Some("false" | "0") => false,
            Some("true" | "1") => true,
            Some(other) => {
                anyhow::bail!("BRIDGE_ALLOW_INSECURE must be true or false, not {other:?}")
            }
        };
        if cloud_url.starts_with("ws://") && !allow_insecure && !is_loopback(&cloud_url) {
            anyhow::bail!(
                "BRIDGE_CLOUD_URL {cloud_url:?} is ws:// (unencrypted) to another machine: use wss://, or set \
                 BRIDGE_ALLOW_INSECURE=true for development"
            );
        }
        Ok(Self {
            cloud_url,
            token: var("BRIDGE_TOKEN")
                .context("BRIDGE_TOKEN is required (shown once by createBridge)")?,
            journal_path: var("BRIDGE_JOURNAL")
                .unwrap_or_else(|| "edge-bridge-journal.jsonl".into())
                .into(),
            // At most a minute: the cloud takes a bridge silent for two minutes as gone.
            heartbeat: millis("BRIDGE_HEARTBEAT_MS", 15_000)?
                .clamp(Duration::from_millis(50), Duration::from_secs(60)),
            reconnect_max: millis("BRIDGE_RECONNECT_MAX_MS", 30_000)?
                .max(Duration::from_millis(100)),
            agent_listen: var("BRIDGE_AGENT_LISTEN")
                .map(|a| {
                    a.parse().with_context(|| {
                        format!(
                            "BRIDGE_AGENT_LISTEN must be an address like 0.0.0.0:8765, not {a:?}"
                        )
                    })
                })
                .transpose()?,
            ocpp_listen: var("BRIDGE_OCPP_LISTEN")
                .map(|a| {
                    a.parse().with_context(|| {
                        format!(
                            "BRIDGE_OCPP_LISTEN must be an address like 0.0.0.0:9000, not {a:?}"
                        )
                    })
                })
                .transpose()?,
            local_keepalive: {
                let ping = millis("BRIDGE_LOCAL_PING_MS", 20_000)?;
                let dead_after = millis("BRIDGE_LOCAL_DEAD_AFTER_MS", 50_000)?;
                // A pong answers the ping before: a peer is heard at most one ping apart.
                anyhow::ensure!(
                    (Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&ping)
                        && (ping * 2..=Duration::from_secs(7200)).contains(&dead_after),
                    "BRIDGE_LOCAL_PING_MS must be from 100 to 3600000 and BRIDGE_LOCAL_DEAD_AFTER_MS from twice it to \
                     7200000 (a peer answers a ping only by the next one), not {} and {}",
                    ping.as_millis(),
                    dead_after.as_millis()
                );
                Keepalive { ping, dead_after }
            },
            mqtt_url: var("BRIDGE_MQTT_URL"),
            credentials_file: var("BRIDGE_CREDENTIALS").map(PathBuf::from),
            readings: Some(millis("BRIDGE_READINGS_MS", 60_000)?)
                .filter(|d| !d.is_zero())
                .map(|d| d.max(Duration::from_millis(100))),
            metrics_listen: match var("BRIDGE_METRICS_LISTEN").as_deref() {
                Some("off") => None,
                listen => Some(
                    listen
                        .unwrap_or("127.0.0.1:9464")
                        .parse()
                        .with_context(|| {
                            "BRIDGE_METRICS_LISTEN must be an address like 127.0.0.1:9464, or off"
                        })?,
                ),
            },
        })
    }
}

/// Does the URL point at this machine (`localhost`, `127.0.0.0/8`, `::1`)?
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<tokio_tungstenite::tungstenite::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Parses `KEY=value` lines: blank lines and `#` comments are skipped, a value may be quoted.
pub fn parse_settings(text: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut settings = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("line {} is not KEY=value: {line:?}", n + 1))?;
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        settings.insert(key.trim().to_owned(), unquoted.to_owned());
    }
    Ok(settings)
}

/// A station as the bridge holds it: the cloud's plan, the driver, and what was last applied.
struct Station {
    plan: StationPlan,
    driver: Driver,
    applied: Option<bool>,
    /// Agents: the planned end the agent was last told, and the warnings sent for it (bits: 5 min, 1 min).
    told_until: Option<DateTime<Utc>>,
    told_session: Option<Uuid>,
    warned: u8,
    /// The device's unreachability was reported (once, until it answers again).
    unreachable: bool,
    /// The last reading reported (device or agent state).
    reported: Option<Event>,
    /// A cabinet's last `status` reported (online or not); forgotten when the station's control settings change, as
    /// the cloud then forgets what the device answered.
    status_reported: Option<bool>,
    /// The session this bridge ended at its planned end: never switched on again, even by a schedule that still
    /// has it running (one sent before the cloud learnt of the end, or an extension that came too late).
    ended: Option<Uuid>,
}

impl Station {
    /// Should the station be on at `now` (the cloud's clock)?
    fn wants_on(&self, now: DateTime<Utc>) -> bool {
        let plan = &self.plan;
        plan.on
            && plan.until.is_none_or(|until| until > now)
            && (plan.session_id.is_none() || plan.session_id != self.ended)
    }
}

struct State {
    journal: Journal,
    stations: HashMap<Uuid, Station>,
    /// Cloud clock − local clock, in milliseconds.
    offset_ms: i64,
    /// Cabinets: the eject commands sent (each is sent once), those answered, and cabinet events that came before
    /// the schedule named their cabinet (by cabinet id).
    ejects_sent: std::collections::HashSet<Uuid>,
    ejects_answered: std::collections::HashSet<Uuid>,
    unrouted: Vec<(String, DateTime<Utc>, Event)>,
    /// Whether a schedule has come from the cloud since the bridge started (until then it knows no station).
    scheduled: bool,
}

/// How long a peer on the LAN (a charger, an agent, a scraper) has to finish its WebSocket or HTTP request.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `handshake` (a LAN peer's WebSocket handshake), given up after [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn within_handshake<T>(
    handshake: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("no WebSocket handshake within {HANDSHAKE_TIMEOUT:?}"))
}

/// The next connection to one of the bridge's local servers. An accept that fails (out of file descriptors, say) is
/// logged and tried again after a moment: it never ends the server.
pub(crate) async fn next_connection(
    listener: &tokio::net::TcpListener,
    server: &'static str,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(connection) => return connection,
            Err(e) => {
                tracing::warn!(server, error = %e, "cannot accept a connection; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The largest difference from the cloud's clock the bridge takes: a day.
const MAX_CLOCK_OFFSET_MS: u64 = 86_400_000;

impl State {
    fn cloud_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms)
    }
}

struct Shared {
    state: Mutex<State>,
    counters: metrics::Counters,
    agents: agents::Agents,
    /// Chargers connected to the local OCPP server.
    ocpp: ocpp::Ocpp,
    /// A new event to send.
    outbox: Notify,
    /// The schedule changed.
    replan: Notify,
    io: drivers::Io,
}

/// Runs the bridge until `stop` turns true.
pub async fn run(config: Config, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let journal = Journal::open(&config.journal_path)
        .with_context(|| format!("opening the journal {}", config.journal_path.display()))?;
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            journal,
            stations: HashMap::new(),
            offset_ms: 0,
            ejects_sent: Default::default(),
            ejects_answered: Default::default(),
            unrouted: Vec::new(),
            scheduled: false,
        }),
        agents: agents::Agents::default(),
        ocpp: {
            let path = ocpp::store_path(&config.journal_path);
            ocpp::Ocpp::open(&path)
                .with_context(|| format!("opening the OCPP state {}", path.display()))?
        },
        counters: metrics::Counters::default(),
        outbox: Notify::new(),
        replan: Notify::new(),
        io: drivers::Io {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            mqtt: config
                .mqtt_url
                .as_deref()
                .map(mqtt::Mqtt::connect)
                .transpose()?,
            credentials: match &config.credentials_file {
                Some(path) => {
                    serde_json::from_str(&std::fs::read_to_string(path).with_context(|| {
                        format!("reading BRIDGE_CREDENTIALS {}", path.display())
                    })?)
                    .with_context(|| {
                        format!(
                            "BRIDGE_CREDENTIALS {} is not a JSON map of logins",
                            path.display()
                        )
                    })?
                }
                None => Default::default(),
            },
        },
    });
    let cabinet_listener = shared
        .io
        .mqtt
        .as_ref()
        .map(|mqtt| tokio::spawn(cabinet_loop(shared.clone(), mqtt.cabinet_messages())));
    let scheduler = tokio::spawn(schedule_loop(shared.clone()));
    let readings = config
        .readings
        .map(|every| tokio::spawn(readings_loop(shared.clone(), every)));
    let metrics_server = bind(config.metrics_listen, "the /metrics server")
        .await?
        .map(|listener| tokio::spawn(metrics::serve(listener, shared.clone())));
    let agent_server = bind(config.agent_listen, "the agent server")
        .await?
        .map(|listener| {
            tokio::spawn(agents::serve(
                listener,
                shared.clone(),
                config.local_keepalive,
            ))
        });
    let ocpp_server = bind(config.ocpp_listen, "the OCPP server")
        .await?
        .map(|listener| {
            tokio::spawn(ocpp::serve(
                listener,
                shared.clone(),
                config.local_keepalive,
            ))
        });
    let mut backoff = Duration::from_millis(250);
    loop {
        let began = tokio::time::Instant::now();
        let outcome = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            outcome = tunnel(&config, &shared) => outcome,
        };
        shared.ocpp.tunnel_down();
        shared
            .counters
            .tunnel_up
            .store(false, std::sync::atomic::Ordering::Relaxed);
        metrics::Counters::add(&shared.counters.tunnels_lost, 1);
        match outcome {
            // A tunnel the cloud closes at once (it refused this bridge, say) backs off like a failure, so that
            // a refused bridge does not knock several times a second.
            Ok(()) if began.elapsed() >= TUNNEL_SETTLED => {
                tracing::info!("tunnel closed by the cloud");
                backoff = Duration::from_millis(250);
            }
            Ok(()) => tracing::warn!("tunnel closed by the cloud right after it opened"),
            Err(e) if refused_token(&e) => {
                // Not a passing fault: it holds until an operator gives the bridge a new token. Said loudly, and
                // asked again only at the slowest pace.
                metrics::Counters::add(&shared.counters.refused, 1);
                tracing::error!(error = %e, "the cloud refused this bridge's token (revoked or rotated?): set BRIDGE_TOKEN to the bridge's current token");
                backoff = config.reconnect_max;
            }
            // A tunnel that ran for a while and then failed is dialled again at once, as one the cloud closed.
            Err(e) if began.elapsed() >= TUNNEL_SETTLED => {
                tracing::warn!(error = %e, "tunnel down");
                backoff = Duration::from_millis(250);
            }
            Err(e) => tracing::warn!(error = %e, "tunnel down"),
        }
        let jitter = rand::random::<f64>() * backoff.as_secs_f64() / 2.0;
        let wait = backoff + Duration::from_secs_f64(jitter);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(wait) => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max);
    }
    scheduler.abort();
    for task in [
        agent_server,
        ocpp_server,
        readings,
        metrics_server,
        cabinet_listener,
    ]
    .into_iter()
    .flatten()
    {
        task.abort();
    }
    tracing::info!("bridge stopped");
    Ok(())
}

/// The listener of one of the bridge's local servers, when it has an address.
async fn bind(
    addr: Option<std::net::SocketAddr>,
    what: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "{what} listening");
    Ok(Some(listener))
}

/// Heartbeats without any answer after which the tunnel counts as half-open and is dialled again.
pub const HALF_OPEN_HEARTBEATS: u32 = 3;

/// One connection: hello, then frames both ways until either side closes.
/// Whether the cloud refused the tunnel's opening for the token (HTTP 401 or 403).
fn refused_token(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        .is_some_and(|e| {
            matches!(e, tokio_tungstenite::tungstenite::Error::Http(r)
                if matches!(r.status().as_u16(), 401 | 403))
        })
}

async fn tunnel(config: &Config, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let mut request = config.cloud_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", config.token).parse()?);
    let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    // A handshake into a dead link would wait for ever: it gets as long as an answer to heartbeats does.
    let (ws, _) = tokio::time::timeout(
        config.heartbeat * HALF_OPEN_HEARTBEATS,
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config), false),
    )
    .await
    .context("the cloud did not answer the connection in time")??;
    let (mut sink, mut stream) = ws.split();
    let hello = Up::hello(env!("CARGO_PKG_VERSION"));
    // A link that died with frames still to send fills the socket's buffers: a frame the cloud takes nothing of
    // for as long as a heartbeat may go unanswered gives the tunnel up too, instead of waiting in the write.
    let silence_limit = config.heartbeat * HALF_OPEN_HEARTBEATS;
    write(&mut sink, Message::text(encode(&hello)), silence_limit).await?;
    tracing::info!(url = %config.cloud_url, "tunnel up");
    let mut link = Link::default();
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    // A link that drops without a reset (a dead NAT entry, a pulled cable upstream) leaves the socket open and
    // silent: when nothing at all comes back for a few heartbeats, the tunnel is given up and dialled again.
    let mut last_heard = tokio::time::Instant::now();
    // Frames of relayed chargers; what a former tunnel left unsent is stale.
    let mut relayed = shared.ocpp.up_rx.lock().await;
    while relayed.try_recv().is_ok() {}
    // Journaled events still to send on this connection after the last batch.
    let mut more = false;
    let mut chargers_live = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else { return Ok(()) };
                last_heard = tokio::time::Instant::now();
                let text = match frame? {
                    Message::Text(text) => text,
                    Message::Close(_) => return Ok(()),
                    _ => continue,
                };
                let message: Down = match decode(&text) {
                    Ok(m) => m,
                    Err(e) => { tracing::warn!(error = %e, "unusable frame from the cloud"); continue }
                };
                let was_welcomed = link.welcomed;
                for reply in handle(shared, message, &mut link).await? {
                    write(&mut sink, Message::text(encode(&reply)), silence_limit).await?;
                }
                if link.welcomed {
                    more = send_pending(shared, &mut sink, &mut link, silence_limit).await?;
                }
                if link.welcomed && !was_welcomed {
                    // Up once the cloud welcomed it.
                    shared
                        .counters
                        .tunnel_up
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Some(up) = relayed.recv(), if link.welcomed => {
                write(&mut sink, Message::text(encode(&up)), silence_limit).await?;
            }
            _ = shared.outbox.notified(), if link.welcomed => {
                more = send_pending(shared, &mut sink, &mut link, silence_limit).await?;
            }
            // A backlog goes a batch at a time, at most [`EVENTS_PER_SEC`], with the cloud's frames read between
            // batches; with [`IN_FLIGHT`] events unanswered it waits for the cloud's answers (read above) instead.
            _ = tokio::time::sleep_until(link.paced_until.unwrap_or_else(tokio::time::Instant::now)),
                if more && link.welcomed && link.in_flight < IN_FLIGHT => {
                more = send_pending(shared, &mut sink, &mut link, silence_limit).await?;
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > silence_limit {
                    metrics::Counters::add(&shared.counters.half_open, 1);
                    anyhow::bail!("no answer from the cloud for {silence_limit:?}; the tunnel is half-open");
                }
                let clock_offset_ms = Some(shared.state.lock().await.offset_ms).filter(|_| link.welcomed);
                let beat = Up::Heartbeat { sent_at: Utc::now(), clock_offset_ms };
                write(&mut sink, Message::text(encode(&beat)), silence_limit).await?;
            }
        }
        // The whole journal first (a charger's offline messages, in order), then its live connection: chargers'
        // frames go live only once the backlog has gone, so a live one never overtakes a journaled one.
        if link.welcomed && !more && !chargers_live {
            shared.ocpp.tunnel_up();
            chargers_live = true;
        }
    }
}

/// How long a tunnel must have lasted for its close to start the next one without backing off.
const TUNNEL_SETTLED: Duration = Duration::from_secs(30);

/// How long a LAN peer (a charger, an agent) may take nothing of a frame sent to it before it is dropped.
pub(crate) const LAN_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a frame to the cloud or a LAN peer, unless the peer takes nothing of it for `within`.
pub(crate) async fn write<S>(sink: &mut S, frame: Message, within: Duration) -> anyhow::Result<()>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    match tokio::time::timeout(within, sink.send(frame)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => anyhow::bail!("the peer took no frame for {within:?}"),
    }
}

/// The most journaled events sent in one go: between batches the tunnel reads what the cloud sent (its
/// acknowledgements, a schedule), so that a long backlog never has both sides writing into full buffers at once.
const SEND_BATCH: usize = 64;

/// The most journaled events a tunnel has sent that the cloud has not answered yet (it answers each with an `ack`,
/// or an `error` when it refuses one). A longer backlog goes on as the answers come back, so the answers never pile
/// up unread in the buffers of a link that is slower than the cloud.
const IN_FLIGHT: u64 = 256;

/// Journaled events sent per second at most, when the cloud does not say its flood limit (an older cloud; its
/// default `EDGE_MAX_FRAMES_PER_SEC` is 200). A cloud that says it is sent half of it, leaving room for heartbeats,
/// relayed chargers' frames and commands' answers. A long backlog sent as fast as a nearby cloud answered it was
/// closed as a flood, again at every reconnection.
const EVENTS_PER_SEC: u32 = 100;

/// Sends the next journaled events this connection has not sent: at most [`SEND_BATCH`], and no more than leaves
/// [`IN_FLIGHT`] unanswered. True when more remain to send.
async fn send_pending<S>(
    shared: &Shared,
    sink: &mut S,
    link: &mut Link,
    within: Duration,
) -> anyhow::Result<bool>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let now = tokio::time::Instant::now();
    if link.paced_until.is_some_and(|until| until > now) {
        // Sent by the paced branch of the tunnel's loop when the time comes.
        return Ok(true);
    }
    let rate = link.events_per_sec.unwrap_or(EVENTS_PER_SEC).max(1);
    let room = usize::try_from(IN_FLIGHT.saturating_sub(link.in_flight))
        .unwrap_or(0)
        .min(SEND_BATCH)
        // A quarter of a second's worth at a time: two batches meeting after a hiccup stay well below the limit.
        .min((rate / 4).max(1) as usize);
    let frames: Vec<(u64, Up)> = {
        let state = shared.state.lock().await;
        // Pending events are in sequence order: skip what this connection sent without looking at it.
        let pending = state.journal.pending();
        let unsent = pending.partition_point(|e| e.seq <= link.sent_up_to);
        pending[unsent..]
            .iter()
            .take(room + 1)
            .map(|e| (e.seq, e.frame()))
            .collect()
    };
    let more = frames.len() > room;
    let mut sent = 0u32;
    for (seq, frame) in frames.into_iter().take(room) {
        write(sink, Message::text(encode(&frame)), within).await?;
        link.sent_up_to = seq;
        link.in_flight += 1;
        sent += 1;
    }
    if sent > 0 {
        link.paced_until = Some(now + Duration::from_secs(1) * sent / rate);
    }
    Ok(more)
}

/// What one tunnel connection knows of its own: whether the cloud welcomed it, the parts of a schedule sent in
/// several frames so far, and the journaled events it sent.
#[derive(Default)]
struct Link {
    welcomed: bool,
    schedule_parts: Vec<StationPlan>,
    /// The last journaled event sent on this connection.
    sent_up_to: u64,
    /// Events sent on this connection that the cloud has not answered yet.
    in_flight: u64,
    /// No journaled event goes before this ([`EVENTS_PER_SEC`]).
    paced_until: Option<tokio::time::Instant>,
    /// Journaled events a second on this connection: half the cloud's flood limit, as its welcome said.
    events_per_sec: Option<u32>,
    /// The cloud names the event an error answers ([`switchyard_edge_protocol::FEATURE_NUMBERED_ERRORS`]), so an
    /// error without one answers no event.
    numbered_errors: bool,
}

/// Makes `stations` the schedule: what the bridge knew of a station that stays is kept, a station that left is
/// forgotten, and the scheduler looks again.
async fn apply_schedule(shared: &Arc<Shared>, stations: Vec<StationPlan>) {
    let mut state = shared.state.lock().await;
    state.scheduled = true;
    let mut next = HashMap::new();
    for plan in stations {
        let known = state.stations.get(&plan.station_id);
        // A new device (control or settings changed) has not been switched yet: it is brought to the plan. An agent
        // keeps what it was told (its key is among its settings).
        let applied = known
            .filter(|s| {
                plan.control == "agent"
                    || (s.plan.control == plan.control && s.plan.settings == plan.settings)
            })
            .and_then(|s| s.applied);
        let told_until = known.and_then(|s| s.told_until);
        let told_session = known.and_then(|s| s.told_session);
        let warned = known.map_or(0, |s| s.warned);
        let ended = known
            .and_then(|s| s.ended)
            .or_else(|| state.journal.ended_unacknowledged(plan.station_id))
            .filter(|ended| plan.session_id == Some(*ended));
        let driver = Driver::for_plan(&plan);
        // What was reported of the device stands only while it is the same device: with a new control or new
        // settings the cloud forgets what the old one answered, so the new one's first answer is reported.
        let same_device =
            known.filter(|s| s.plan.control == plan.control && s.plan.settings == plan.settings);
        let status_reported = same_device.and_then(|s| s.status_reported);
        next.insert(
            plan.station_id,
            Station {
                plan,
                driver,
                applied,
                told_until,
                told_session,
                warned,
                unreachable: same_device.is_some_and(|s| s.unreachable),
                reported: same_device.and_then(|s| s.reported.clone()),
                status_reported,
                ended,
            },
        );
    }
    shared.agents.follow_schedule(|station| {
        next.get(&station)
            .filter(|s| s.plan.control == "agent")
            .and_then(|s| s.plan.settings.get("agent_key_sha256"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    });
    state.stations = next;
    drop(state);
    shared.replan.notify_one();
}

/// Handles one message from the cloud; returns the frames to answer with.
async fn handle(shared: &Arc<Shared>, message: Down, link: &mut Link) -> anyhow::Result<Vec<Up>> {
    match message {
        Down::Welcome {
            last_seq,
            features,
            max_frames_per_sec,
            ..
        } => {
            link.events_per_sec = max_frames_per_sec.map(|m| (m / 2).max(1));
            let mut state = shared.state.lock().await;
            // What the cloud has is acknowledged; numbering continues above it. A journal made here and never
            // welcomed (a box re-imaged with the same token) has sent nothing: it is numbered above, not
            // acknowledged away (see `Journal::welcome`).
            state.journal.welcome(last_seq)?;
            link.welcomed = true;
            link.numbered_errors = features
                .iter()
                .any(|f| f == switchyard_edge_protocol::FEATURE_NUMBERED_ERRORS);
            Ok(vec![])
        }
        Down::Schedule { stations } => {
            link.schedule_parts.clear();
            apply_schedule(shared, stations).await;
            Ok(vec![])
        }
        Down::SchedulePart { stations, last } => {
            link.schedule_parts.extend(stations);
            if last {
                let stations = std::mem::take(&mut link.schedule_parts);
                apply_schedule(shared, stations).await;
            }
            Ok(vec![])
        }
        Down::Command {
            id,
            station_id,
            command,
            payload,
        } if command == "eject" && shared.state.lock().await.is_cabinet(station_id) => {
            metrics::Counters::add(&shared.counters.commands, 1);
            Ok(vec![eject(shared, id, station_id, &payload).await])
        }
        Down::Command { id, .. } => {
            metrics::Counters::add(&shared.counters.commands, 1);
            // Switching follows the schedule that comes with every change; the command is acknowledged.
            shared.replan.notify_one();
            Ok(vec![Up::CommandDone {
                id,
                ok: true,
                detail: None,
            }])
        }
        Down::Ack { seq } => {
            link.in_flight = link.in_flight.saturating_sub(1);
            shared.state.lock().await.journal.ack(seq)?;
            Ok(vec![])
        }
        Down::HeartbeatAck {
            sent_at,
            server_time,
        } => {
            let now = Utc::now();
            let midpoint = sent_at + (now - sent_at) / 2;
            let offset_ms = (server_time - midpoint).num_milliseconds();
            // A clock a day off is broken, not skewed: times shifted by it could leave the calendar.
            if offset_ms.unsigned_abs() <= MAX_CLOCK_OFFSET_MS {
                shared.state.lock().await.offset_ms = offset_ms;
            } else {
                tracing::warn!(
                    offset_ms,
                    "the cloud's clock is more than a day from ours; its time is ignored"
                );
            }
            Ok(vec![])
        }
        Down::Error { code, message, seq } => {
            // The answer to an event it refused (the event stays in the journal for the next tunnel) when it names
            // one; from an older cloud, which names none, most likely so.
            if seq.is_some() || !link.numbered_errors {
                link.in_flight = link.in_flight.saturating_sub(1);
            }
            tracing::warn!(code, message, seq, "the cloud refused a frame");
            Ok(vec![])
        }
        relayed @ (Down::OcppOpened { .. }
        | Down::OcppRefused { .. }
        | Down::OcppFrame { .. }
        | Down::OcppClose { .. }) => {
            shared.ocpp.down(relayed);
            Ok(vec![])
        }
    }
}

/// Brings every driven station to its desired state, and sleeps until the next planned end (or a new schedule).
async fn schedule_loop(shared: Arc<Shared>) {
    loop {
        let next_end = reconcile(&shared).await;
        let wait = next_end
            .map(|end| (end - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600));
        tokio::select! {
            _ = shared.replan.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Device work found under the lock and done without it.
struct Work {
    station: Uuid,
    driver: Driver,
    /// The last known state; none: read the device first.
    applied: Option<bool>,
    want: bool,
    backup: Option<Duration>,
    reason: &'static str,
    session: Option<Uuid>,
    unreachable: bool,
}

/// One pass; returns the soonest local time at which a station must switch off. Device I/O happens without the
/// state lock, so a slow or unreachable device never holds up the tunnel.
async fn reconcile(shared: &Shared) -> Option<DateTime<Utc>> {
    let mut soonest: Option<DateTime<Utc>> = None;
    // (station, when by the cloud's clock, what)
    let mut events: Vec<(Uuid, DateTime<Utc>, Event)> = Vec::new();
    let mut work = Vec::new();
    let mut appended = false;
    let offset = {
        let mut state = shared.state.lock().await;
        appended |= route_cabinets(&mut state, shared.io.mqtt.as_ref(), &shared.counters);
        let now = state.cloud_now();
        let offset = chrono::Duration::milliseconds(state.offset_ms);
        for station in state.stations.values_mut() {
            if station.plan.control == "agent" {
                if let Some(at) = tell_agent(&shared.agents, station, now, &mut events) {
                    let local = at - offset;
                    soonest = Some(soonest.map_or(local, |s| s.min(local)));
                }
                continue;
            }
            if !station.driver.drives() {
                continue;
            }
            let want = station.wants_on(now);
            if !want && station.plan.on {
                station.ended = station.plan.session_id;
            }
            if let (true, Some(until)) = (want, station.plan.until) {
                let local = until - offset;
                soonest = Some(soonest.map_or(local, |s| s.min(local)));
            }
            if station.applied == Some(want) {
                continue;
            }
            // The device's own timer ends the session a little after the bridge would, as a backup.
            let backup = station
                .plan
                .until
                .filter(|_| want)
                .and_then(|until| (until - now + chrono::Duration::seconds(2)).to_std().ok());
            work.push(Work {
                station: station.plan.station_id,
                driver: station.driver.clone(),
                applied: station.applied,
                want,
                backup,
                reason: if !want && station.plan.on {
                    "planned_end"
                } else {
                    "schedule"
                },
                session: station.plan.session_id,
                unreachable: station.unreachable,
            });
        }
        offset
    };
    let cloud_now = || Utc::now() + offset;

    let mut applied = Vec::new();
    let mut unreachable = Vec::new();
    for item in work {
        let mut known = item.applied;
        if known.is_none() {
            // First sight of this device (a new schedule, a restart): report what it actually is, and switch only
            // if that differs from the plan. An unreachable device is reported once, then retried quietly.
            match item.driver.status(&shared.io).await {
                Ok(Some(status)) => {
                    known = Some(status.on);
                    unreachable.push((item.station, false));
                    events.push((
                        item.station,
                        cloud_now(),
                        Event::DeviceState {
                            reachable: true,
                            on: Some(status.on),
                            power_w: status.power_w,
                            energy_wh: status.energy_wh,
                        },
                    ));
                }
                Ok(None) => continue,
                Err(e) => {
                    if !item.unreachable {
                        tracing::warn!(station = %item.station, error = %e, "device unreachable");
                        unreachable.push((item.station, true));
                        events.push((
                            item.station,
                            cloud_now(),
                            Event::DeviceState {
                                reachable: false,
                                on: None,
                                power_w: None,
                                energy_wh: None,
                            },
                        ));
                    }
                }
            }
        }
        if known == Some(item.want) {
            applied.push((item.station, item.want));
            continue;
        }
        match item.driver.switch(&shared.io, item.want, item.backup).await {
            Ok(()) => {
                applied.push((item.station, item.want));
                events.push((
                    item.station,
                    cloud_now(),
                    Event::Switched {
                        on: item.want,
                        reason: item.reason.into(),
                        session_id: item.session,
                    },
                ));
            }
            Err(e) => {
                tracing::warn!(station = %item.station, error = %e, "switching failed; retrying");
                if let Some(known) = known {
                    applied.push((item.station, known));
                }
                let retry = Utc::now() + chrono::Duration::seconds(1);
                soonest = Some(soonest.map_or(retry, |s| s.min(retry)));
            }
        }
    }

    let mut state = shared.state.lock().await;
    for (id, on) in applied {
        if let Some(station) = state.stations.get_mut(&id) {
            station.applied = Some(on);
        }
    }
    for (id, flag) in unreachable {
        if let Some(station) = state.stations.get_mut(&id) {
            station.unreachable = flag;
        }
    }
    for (station, at, event) in events {
        appended |= journal_event(&mut state.journal, &shared.counters, station, at, event);
    }
    drop(state);
    if appended {
        shared.outbox.notify_one();
    }
    soonest
}

/// Every `every`: reads each device and each agent's last heartbeat, and reports what differs from the last
/// report. A device found other than as it was set (switched by hand, say) is set right by the next pass.
async fn readings_loop(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        read_devices(&shared).await;
    }
}

async fn read_devices(shared: &Shared) {
    let (targets, offset) = {
        let state = shared.state.lock().await;
        let targets: Vec<(Uuid, Driver, bool)> = state
            .stations
            .values()
            .filter(|s| s.plan.control == "agent" || s.driver.drives())
            .map(|s| {
                (
                    s.plan.station_id,
                    s.driver.clone(),
                    s.plan.control == "agent",
                )
            })
            .collect();
        (targets, chrono::Duration::milliseconds(state.offset_ms))
    };
    let mut readings = Vec::with_capacity(targets.len());
    for (id, driver, agent) in targets {
        let event = if agent {
            let beat = shared.agents.heartbeat(id).unwrap_or_default();
            Event::AgentState {
                connected: shared.agents.is_connected(id),
                session_id: beat["session_id"].as_str().and_then(|s| s.parse().ok()),
                remaining_seconds: beat["remaining_seconds"].as_i64(),
                cpu_usage: beat["cpu_usage"].as_f64(),
                ram_usage: beat["ram_usage"].as_f64(),
            }
        } else {
            match driver.status(&shared.io).await {
                Ok(Some(status)) => Event::DeviceState {
                    reachable: true,
                    on: Some(status.on),
                    power_w: status.power_w,
                    energy_wh: status.energy_wh,
                },
                Ok(None) => continue,
                Err(_) => Event::DeviceState {
                    reachable: false,
                    on: None,
                    power_w: None,
                    energy_wh: None,
                },
            }
        };
        readings.push((id, Utc::now() + offset, event));
    }
    let (mut drifted, mut appended) = (false, false);
    {
        let mut state = shared.state.lock().await;
        let State {
            journal, stations, ..
        } = &mut *state;
        for (id, at, event) in readings {
            let Some(station) = stations.get_mut(&id) else {
                continue;
            };
            // Compared with what was applied before anything else: a device pressed back to the state it was last
            // reported in (ON by hand just after the bridge switched it off) reads the same as that report, and must
            // still be set right.
            if let Event::DeviceState { reachable, on, .. } = &event {
                station.unreachable = !reachable;
                if let (Some(on), Some(applied)) = (*on, station.applied) {
                    if on != applied {
                        tracing::warn!(station = %id, on, "the device is not as it was set; setting it right");
                        station.applied = Some(on);
                        drifted = true;
                    }
                }
            }
            if station.reported.as_ref() == Some(&event) {
                continue;
            }
            station.reported = Some(event.clone());
            appended |= journal_event(journal, &shared.counters, id, at, event);
        }
    }
    if drifted {
        shared.replan.notify_one();
    }
    if appended {
        shared.outbox.notify_one();
    }
}

impl State {
    fn is_cabinet(&self, station: Uuid) -> bool {
        self.stations
            .get(&station)
            .is_some_and(|s| cabinets::cabinet_id(&s.plan).is_some())
    }
}

/// Asks a cabinet to eject (each command once: a command seen again is only acknowledged again). If the cabinet
/// cannot be asked, or does not answer within its `eject_timeout_secs`, the bridge reports the eject failed itself,
/// so the cloud voids the rental instead of billing a powerbank nobody got.
async fn eject(shared: &Arc<Shared>, id: Uuid, station: Uuid, payload: &serde_json::Value) -> Up {
    let done = |ok: bool, detail: &str| Up::CommandDone {
        id,
        ok,
        detail: Some(detail.to_owned()),
    };
    let (cabinet, timeout) = {
        let mut state = shared.state.lock().await;
        let Some(plan) = state.stations.get(&station).map(|s| s.plan.clone()) else {
            return done(false, "not a cabinet");
        };
        if !state.ejects_sent.insert(id) {
            return done(true, "already sent to the cabinet");
        }
        (
            cabinets::cabinet_id(&plan).unwrap_or_default().to_owned(),
            cabinets::eject_timeout(&plan),
        )
    };
    let slot = payload
        .get("slot")
        .and_then(serde_json::Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or(0);
    let asset = payload
        .get("asset")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    // Half the wait: a cabinet whose clock is a little off still cannot eject after the bridge has given up.
    let expires_at = shared.state.lock().await.cloud_now()
        + chrono::Duration::from_std(timeout / 2).unwrap_or_default();
    let body = serde_json::json!({
        "request_id": id, "slot": slot, "asset": asset,
        "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let sent = match &shared.io.mqtt {
        // Not queued in the client while the broker is away: it would go out whenever the broker is back, maybe
        // after the rental was voided.
        Some(mqtt) if !mqtt.is_connected() => {
            Err(anyhow::anyhow!("the venue's MQTT broker is not connected"))
        }
        Some(mqtt) => {
            mqtt.publish_json(cabinets::eject_topic(&cabinet), &body)
                .await
        }
        None => Err(anyhow::anyhow!(
            "a cabinet needs BRIDGE_MQTT_URL (the venue's MQTT broker)"
        )),
    };
    let failed = |reason: &str| Event::CabinetEjected {
        request_id: id,
        ok: false,
        slot,
        asset: asset.clone(),
        reason: Some(reason.to_owned()),
    };
    if let Err(e) = sent {
        tracing::warn!(%station, error = %e, "cannot ask the cabinet to eject");
        report_eject(shared, station, failed("unreachable")).await;
        return done(false, &e.to_string());
    }
    let (waiting, timed_out) = (shared.clone(), failed("timeout"));
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        if !waiting.state.lock().await.ejects_answered.contains(&id) {
            tracing::warn!(%station, "the cabinet did not answer the eject in time");
            report_eject(&waiting, station, timed_out).await;
        }
    });
    done(true, "sent to the cabinet")
}

/// Journals an eject's outcome the bridge decided itself (the cabinet could not be asked, or did not answer).
async fn report_eject(shared: &Shared, station: Uuid, event: Event) {
    let appended = {
        let mut state = shared.state.lock().await;
        if let Event::CabinetEjected { request_id, .. } = &event {
            state.ejects_answered.insert(*request_id);
        }
        let now = state.cloud_now();
        journal_event(&mut state.journal, &shared.counters, station, now, event)
    };
    if appended {
        shared.outbox.notify_one();
    }
}

/// Relays what the venue's cabinets publish: events as they come, each cabinet's state when it changed.
async fn cabinet_loop(
    shared: Arc<Shared>,
    mut messages: tokio::sync::broadcast::Receiver<mqtt::CabinetMessage>,
) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "cabinet messages were dropped");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let appended = {
            let mut state = shared.state.lock().await;
            // A state or status is read from the broker's last word when routed (below), not from this message.
            if message.what != "state" && message.what != "status" {
                match cabinets::event_of(&message.what, &message.payload) {
                    Some(event) => {
                        if let Event::CabinetEjected { request_id, .. } = &event {
                            // A late answer (after the bridge's timeout) is still reported: the cloud tells.
                            state.ejects_answered.insert(*request_id);
                        }
                        let now = state.cloud_now();
                        state.unrouted.push((message.cabinet.clone(), now, event));
                    }
                    None => tracing::warn!(
                        cabinet = %message.cabinet, what = %message.what,
                        "a cabinet message that is not the protocol's"
                    ),
                }
            }
            route_cabinets(&mut state, shared.io.mqtt.as_ref(), &shared.counters)
        };
        if appended {
            shared.outbox.notify_one();
        }
    }
}

/// The most cabinet events kept while their cabinet is not in the schedule.
const UNROUTED_MAX: usize = 1000;

/// Journals the cabinet events whose cabinet the schedule names, and each cabinet's state where it differs from the
/// last one reported. True if something was journaled.
fn route_cabinets(
    state: &mut State,
    mqtt: Option<&mqtt::Mqtt>,
    counters: &metrics::Counters,
) -> bool {
    let now = state.cloud_now();
    let State {
        journal,
        stations,
        unrouted,
        ..
    } = state;
    let by_cabinet: HashMap<String, Uuid> = stations
        .values()
        .filter_map(|s| cabinets::cabinet_id(&s.plan).map(|c| (c.to_owned(), s.plan.station_id)))
        .collect();
    let mut appended = false;
    let mut kept = Vec::new();
    for (cabinet, at, event) in unrouted.drain(..) {
        match by_cabinet.get(&cabinet) {
            Some(station) => appended |= journal_event(journal, counters, *station, at, event),
            None => kept.push((cabinet, at, event)),
        }
    }
    let excess = kept.len().saturating_sub(UNROUTED_MAX);
    kept.drain(..excess);
    *unrouted = kept;
    let Some(mqtt) = mqtt else { return appended };
    for (cabinet, id) in by_cabinet {
        // Whether it is there: reported when it differs from what was last reported for the station, stamped now (a
        // status waiting for the schedule is no older than the slots it said).
        if let (Some(online), Some(station)) =
            (mqtt.cabinet_status(&cabinet), stations.get_mut(&id))
        {
            if station.status_reported != Some(online) {
                station.status_reported = Some(online);
                station.unreachable = !online;
                appended |=
                    journal_event(journal, counters, id, now, cabinets::status_event(online));
            }
        }
        let Some(event) = mqtt
            .cabinet_state(&cabinet)
            .and_then(|body| cabinets::state_event(&body))
        else {
            continue;
        };
        let Some(station) = stations.get_mut(&id) else {
            continue;
        };
        if station.reported.as_ref() == Some(&event) {
            continue;
        }
        station.reported = Some(event.clone());
        appended |= journal_event(journal, counters, id, now, event);
    }
    appended
}

/// Writes an event about `station` to the journal (to be sent); false if the disk refused it.
fn journal_event(
    journal: &mut Journal,
    counters: &metrics::Counters,
    station: Uuid,
    at: DateTime<Utc>,
    event: Event,
) -> bool {
    match journal.append(Some(station), at, event) {
        Ok(_) => {
            metrics::Counters::add(&counters.events, 1);
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot write the journal");
            false
        }
    }
}

/// Brings a PC agent's station to its plan: start, extend, warn, stop. Returns when it next needs a look (the next
/// warning or the end), by the cloud's clock.
fn tell_agent(
    agents: &agents::Agents,
    station: &mut Station,
    now: DateTime<Utc>,
    events: &mut Vec<(Uuid, DateTime<Utc>, Event)>,
) -> Option<DateTime<Utc>> {
    let want = station.wants_on(now);
    if !want && station.plan.on {
        station.ended = station.plan.session_id;
    }
    let plan = &station.plan;
    let id = plan.station_id;
    match (station.applied, want) {
        (Some(true), true) => {
            if let (Some(old), Some(new)) = (station.told_until, plan.until) {
                if new > old {
                    let extend = serde_json::json!({
                        "type": "session_extend", "session_id": plan.session_id,
                        "additional_seconds": (new - old).num_seconds(),
                    });
                    agents.send(id, &extend);
                    station.told_until = Some(new);
                    station.warned = 0;
                }
            }
        }
        (_, true) => {
            agents.send(id, &agents::start_message(plan.session_id, plan.until, now));
            station.applied = Some(true);
            station.told_until = plan.until;
            station.told_session = plan.session_id;
            station.warned = 0;
            events.push((
                id,
                now,
                Event::Switched {
                    on: true,
                    reason: "schedule".into(),
                    session_id: plan.session_id,
                },
            ));
        }
        (Some(true), false) => {
            let action = plan
                .settings
                .get("stop_action")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("lock");
            let session = plan.session_id.or(station.told_session);
            agents.send(id, &agents::stop_message(session, action));
            station.applied = Some(false);
            let reason = if plan.on { "planned_end" } else { "schedule" };
            events.push((
                id,
                now,
                Event::Switched {
                    on: false,
                    reason: reason.into(),
                    session_id: session,
                },
            ));
        }
        (_, false) => station.applied = Some(false),
    }
    let until = plan.until.filter(|_| want)?;
    let mut next = until;
    for (minutes, bit) in [(5, 1u8), (1, 2u8)] {
        let due = until - chrono::Duration::minutes(minutes);
        if station.warned & bit != 0 {
            continue;
        }
        if due <= now {
            let warning = serde_json::json!({
                "type": "session_warning", "session_id": plan.session_id, "minutes_left": minutes,
            });
            agents.send(id, &warning);
            station.warned |= bit;
        } else {
            next = next.min(due);
        }
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ws_cloud_url_is_refused_unless_it_is_loopback_or_allowed_for_development() {
        let config = |url: &str, insecure: Option<&str>| {
            let env = HashMap::from([
                ("BRIDGE_CLOUD_URL", url.to_owned()),
                ("BRIDGE_TOKEN", "sybr_x".to_owned()),
            ]);
            Config::from_lookup(|k| {
                if k == "BRIDGE_ALLOW_INSECURE" {
                    insecure.map(str::to_owned)
                } else {
                    env.get(k).cloned()
                }
            })
        };
        let refused = config("ws://cloud.example/edge/v1/tunnel", None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("wss://") && refused.contains("BRIDGE_ALLOW_INSECURE"),
            "{refused}"
        );
        assert!(config("ws://10.0.0.5:8080/edge/v1/tunnel", Some("false")).is_err());
        for url in [
            "ws://127.0.0.1:8080/edge/v1/tunnel",
            "ws://localhost:8080/edge/v1/tunnel",
            "ws://[::1]:8080/edge/v1/tunnel",
            "wss://cloud.example/edge/v1/tunnel",
        ] {
            assert!(config(url, None).is_ok(), "{url}");
        }
        assert!(config("ws://cloud.example/edge/v1/tunnel", Some("true")).is_ok());
        assert!(config("ws://cloud.example/edge/v1/tunnel", Some("maybe")).is_err());
    }

    #[tokio::test]
    async fn a_cloud_that_takes_no_frames_gives_the_tunnel_up_instead_of_holding_it_in_a_write(
    ) -> anyhow::Result<()> {
        let journal =
            std::env::temp_dir().join(format!("bridge-stalled-{}.jsonl", Uuid::new_v4().simple()));
        let (shared, _, _) = agent_bridge(&journal)?;
        // A backlog of about 9 MB: more than the socket's buffers hold.
        {
            let mut state = shared.state.lock().await;
            for _ in 0..300 {
                let event = Event::Ocpp {
                    charge_point_id: "CP-1".into(),
                    subprotocol: "ocpp1.6".into(),
                    action: "MeterValues".into(),
                    payload: serde_json::json!({ "data": "x".repeat(30_000) }),
                    transaction_id: None,
                };
                state.journal.append(None, Utc::now(), event)?;
            }
        }
        // A cloud that welcomes the bridge and then reads nothing, on a socket with a small receive buffer.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener = socket.listen(8)?;
        let addr = listener.local_addr()?;
        let cloud = tokio::spawn(async move {
            let (stream, _) = listener.accept().await?;
            let mut ws = tokio_tungstenite::accept_async(stream).await?;
            // Unpaced, so that the backlog fills the socket at once.
            let welcome = test_welcome(vec![], Some(100_000));
            ws.send(Message::text(encode(&welcome))).await?;
            std::future::pending::<()>().await;
            drop(ws);
            anyhow::Ok(())
        });
        let config = cloud_at(addr, 200)?;
        // Without a bound on the write, the tunnel would wait in it for ever (heartbeats and their silence check
        // included) and this would time out.
        let ended = tokio::time::timeout(Duration::from_secs(60), tunnel(&config, &shared)).await;
        let Ok(Err(e)) = ended else {
            panic!("the tunnel should end with an error, not {ended:?}");
        };
        assert!(e.to_string().contains("took no frame"), "{e}");
        cloud.abort();
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    #[tokio::test]
    async fn a_long_backlog_goes_in_batches_with_the_clouds_frames_read_between_them_and_waits_for_its_answers(
    ) -> anyhow::Result<()> {
        const BACKLOG: u64 = 4_000;
        let journal = journal_of("backlog", BACKLOG)?;
        let (shared, _, _) = agent_bridge(&journal)?;
        assert_eq!(
            shared.state.lock().await.journal.pending().len(),
            BACKLOG as usize
        );
        // A cloud that welcomes the bridge, sends a command at once and reads. The command's answer comes between
        // the backlog's batches, not after all of it (sending everything first is what lets both sides end up
        // writing into full buffers when the cloud answers every event). The cloud holds its answers at first: the
        // bridge stops at IN_FLIGHT unanswered events (two heartbeats later it still has), and goes on once they
        // come; from then on each event is answered as it arrives, like the real cloud does.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen_by_cloud = shared.clone();
        let cloud = tokio::spawn(async move {
            let shared = seen_by_cloud;
            let (stream, _) = listener.accept().await?;
            let mut ws = tokio_tungstenite::accept_async(stream).await?;
            let welcome = test_welcome(vec![], Some(100_000));
            ws.send(Message::text(encode(&welcome))).await?;
            let command = Uuid::new_v4();
            ws.send(Message::text(encode(&Down::Command {
                id: command,
                station_id: Uuid::new_v4(),
                command: "switch_on".into(),
                payload: serde_json::json!({}),
            })))
            .await?;
            let mut events = 0u64;
            let mut answered_after = None;
            let mut holding = true;
            let mut beats_while_full = 0;
            while let Some(frame) = ws.next().await {
                let Message::Text(text) = frame? else {
                    continue;
                };
                match decode::<Up>(&text) {
                    Ok(Up::Event { seq, .. }) => {
                        events += 1;
                        anyhow::ensure!(
                            !holding || events <= IN_FLIGHT,
                            "the bridge sent {events} events with none answered"
                        );
                        if !holding {
                            ws.send(Message::text(encode(&Down::Ack { seq }))).await?;
                        }
                    }
                    Ok(Up::CommandDone { id, .. }) if id == command => {
                        answered_after = Some(events)
                    }
                    Ok(Up::Heartbeat { sent_at, .. }) => {
                        let ack = Down::HeartbeatAck {
                            sent_at,
                            server_time: Utc::now(),
                        };
                        ws.send(Message::text(encode(&ack))).await?;
                        if holding && events == IN_FLIGHT {
                            beats_while_full += 1;
                            if beats_while_full == 2 {
                                holding = false;
                                for seq in 1..=events {
                                    ws.send(Message::text(encode(&Down::Ack { seq }))).await?;
                                }
                            }
                        }
                    }
                    _ => {}
                }
                if events == BACKLOG {
                    anyhow::ensure!(!holding, "the whole backlog came with none answered");
                    if let Some(before) = answered_after {
                        // Chargers go live once the backlog has gone (so a live frame never overtakes it).
                        for _ in 0..600 {
                            if shared.ocpp.is_live() {
                                return anyhow::Ok(before);
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        anyhow::bail!("chargers never went live after the backlog");
                    }
                }
            }
            anyhow::bail!("the tunnel ended before the command was answered and the backlog sent")
        });
        let config = cloud_at(addr, 1000)?;
        let bridge = tokio::spawn({
            let shared = shared.clone();
            async move { tunnel(&config, &shared).await }
        });
        let before = tokio::time::timeout(Duration::from_secs(120), cloud).await???;
        // Each batch is followed by a read with even odds: half the backlog is 31 batches.
        assert!(
            before < BACKLOG / 2,
            "the command was answered after {before} of {BACKLOG} events"
        );
        // Every event was answered: the journal is left with none of them.
        let mut left = BACKLOG as usize;
        for _ in 0..600 {
            left = shared.state.lock().await.journal.pending().len();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "events never acknowledged");
        bridge.abort();
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    /// A cloud that says it closes a tunnel sending more than 100 frames a second, and answers every event at once:
    /// the bridge's backlog comes at half that, never more than the limit in any second, and all of it arrives.
    /// Before, a backlog went as fast as the cloud answered, and a nearby cloud closed it as a flood.
    #[tokio::test]
    async fn a_backlog_goes_below_the_flood_limit_the_cloud_states() -> anyhow::Result<()> {
        const BACKLOG: u64 = 150;
        let journal = journal_of("paced", BACKLOG)?;
        let (shared, _, _) = agent_bridge(&journal)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cloud = tokio::spawn(async move {
            let (stream, _) = listener.accept().await?;
            let mut ws = tokio_tungstenite::accept_async(stream).await?;
            let welcome = test_welcome(vec![], Some(100));
            ws.send(Message::text(encode(&welcome))).await?;
            let start = tokio::time::Instant::now();
            let mut per_second: Vec<u64> = vec![];
            let mut events = 0;
            while let Some(frame) = ws.next().await {
                let Message::Text(text) = frame? else {
                    continue;
                };
                if let Ok(Up::Event { seq, .. }) = decode::<Up>(&text) {
                    let second = start.elapsed().as_secs() as usize;
                    if per_second.len() <= second {
                        per_second.resize(second + 1, 0);
                    }
                    per_second[second] += 1;
                    events += 1;
                    ws.send(Message::text(encode(&Down::Ack { seq }))).await?;
                    if events == BACKLOG {
                        return anyhow::Ok(per_second);
                    }
                }
            }
            anyhow::bail!("the tunnel ended before the backlog arrived")
        });
        let config = cloud_at(addr, 1000)?;
        let bridge = tokio::spawn({
            let shared = shared.clone();
            async move { tunnel(&config, &shared).await }
        });
        let per_second = tokio::time::timeout(Duration::from_secs(120), cloud).await???;
        assert!(
            per_second.iter().all(|n| *n <= 100),
            "events in each second: {per_second:?}"
        );
        assert!(per_second.len() >= 2, "paced: {per_second:?}");
        bridge.abort();
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    /// A stand-in cloud's welcome: nothing recorded yet, with these features and this flood limit.
    fn test_welcome(features: Vec<String>, max_frames_per_sec: Option<u32>) -> Down {
        Down::Welcome {
            bridge_id: Uuid::nil(),
            venue_id: Uuid::nil(),
            server_time: Utc::now(),
            last_seq: 0,
            features,
            max_frames_per_sec,
        }
    }

    /// A bridge's settings for a stand-in cloud listening at `addr`, heartbeats every `heartbeat_ms`.
    fn cloud_at(addr: std::net::SocketAddr, heartbeat_ms: u64) -> anyhow::Result<Config> {
        Config::from_lookup(|key| match key {
            "BRIDGE_CLOUD_URL" => Some(format!("ws://{addr}/edge/v1/tunnel")),
            "BRIDGE_TOKEN" => Some("sybr_test".into()),
            "BRIDGE_HEARTBEAT_MS" => Some(heartbeat_ms.to_string()),
            _ => None,
        })
    }

    /// A journal file holding `count` switch events, numbered from 1.
    fn journal_of(name: &str, count: u64) -> anyhow::Result<std::path::PathBuf> {
        use std::io::Write;
        let journal =
            std::env::temp_dir().join(format!("bridge-{name}-{}.jsonl", Uuid::new_v4().simple()));
        drop(Journal::open(&journal)?);
        let mut file = std::fs::OpenOptions::new().append(true).open(&journal)?;
        for seq in 1..=count {
            let entry = journal::Entry {
                seq,
                occurred_at: Utc::now(),
                station_id: None,
                event: Event::Switched {
                    on: false,
                    reason: "schedule".into(),
                    session_id: None,
                },
            };
            writeln!(file, "{}", serde_json::to_string(&entry)?)?;
        }
        Ok(journal)
    }

    /// A cloud that numbers its errors: one that answers no event (an unknown command's) frees no room in the window,
    /// so the bridge stays at [`IN_FLIGHT`] unanswered events; one naming an event does, and that event stays in the
    /// journal. From a cloud that does not number them, any error counts as an answer, as before.
    #[tokio::test]
    async fn only_an_error_that_answers_an_event_frees_room_for_the_next_one() -> anyhow::Result<()>
    {
        for numbered in [true, false] {
            let journal = journal_of("errors", IN_FLIGHT + 4)?;
            let (shared, _, _) = agent_bridge(&journal)?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let cloud = tokio::spawn(async move {
                let (stream, _) = listener.accept().await?;
                let mut ws = tokio_tungstenite::accept_async(stream).await?;
                let features = if numbered {
                    vec![switchyard_edge_protocol::FEATURE_NUMBERED_ERRORS.into()]
                } else {
                    vec![]
                };
                let welcome = test_welcome(features, None);
                ws.send(Message::text(encode(&welcome))).await?;
                let error = |seq| {
                    Message::text(encode(&Down::Error {
                        code: "unknown_command".into(),
                        message: "no such command".into(),
                        seq,
                    }))
                };
                let mut events = 0u64;
                let mut beats = 0;
                let mut released = false;
                while let Some(frame) = ws.next().await {
                    let Message::Text(text) = frame? else {
                        continue;
                    };
                    match decode::<Up>(&text) {
                        Ok(Up::Event { .. }) => {
                            events += 1;
                            if events == IN_FLIGHT {
                                // Full: errors that answer no event.
                                for _ in 0..3 {
                                    ws.send(error(None)).await?;
                                }
                            } else if events > IN_FLIGHT {
                                anyhow::ensure!(
                                    !numbered || released,
                                    "an error naming no event freed room"
                                );
                                return anyhow::Ok(());
                            }
                        }
                        Ok(Up::Heartbeat { sent_at, .. }) => {
                            let ack = Down::HeartbeatAck {
                                sent_at,
                                server_time: Utc::now(),
                            };
                            ws.send(Message::text(encode(&ack))).await?;
                            if events == IN_FLIGHT && !released {
                                beats += 1;
                                if beats == 2 {
                                    // Still full two heartbeats later: an error naming the first event makes room.
                                    anyhow::ensure!(
                                        numbered,
                                        "an older cloud's errors freed no room"
                                    );
                                    ws.send(error(Some(1))).await?;
                                    released = true;
                                }
                            }
                        }
                        _ => {}
                    }
                }
                anyhow::bail!("the tunnel ended")
            });
            let config = cloud_at(addr, 1000)?;
            let bridge = tokio::spawn({
                let shared = shared.clone();
                async move { tunnel(&config, &shared).await }
            });
            tokio::time::timeout(Duration::from_secs(120), cloud).await???;
            bridge.abort();
            // Nothing was acknowledged: the refused event and the rest wait for the next tunnel.
            assert_eq!(
                shared.state.lock().await.journal.pending().len(),
                (IN_FLIGHT + 4) as usize
            );
            let _ = std::fs::remove_file(&journal);
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_schedule_in_parts_is_applied_whole_at_its_last_part_and_never_half(
    ) -> anyhow::Result<()> {
        let journal =
            std::env::temp_dir().join(format!("bridge-parts-{}.jsonl", Uuid::new_v4().simple()));
        let (shared, first, _) = agent_bridge(&journal)?;
        let plan = |name: &str| StationPlan {
            station_id: Uuid::new_v4(),
            name: name.into(),
            control: "manual".into(),
            settings: serde_json::json!({}),
            on: false,
            until: None,
            session_id: None,
        };
        let planned = |shared: Arc<Shared>| async move {
            let state = shared.state.lock().await;
            let mut names: Vec<String> = state
                .stations
                .values()
                .map(|s| s.plan.name.clone())
                .collect();
            names.sort();
            names
        };
        let (a, b, c) = (plan("A"), plan("B"), plan("C"));

        // Until the last part, the schedule the bridge had stands.
        let mut link = Link::default();
        let part = |stations: Vec<StationPlan>, last| Down::SchedulePart { stations, last };
        handle(&shared, part(vec![a.clone()], false), &mut link).await?;
        assert_eq!(planned(shared.clone()).await, ["PC-1"]);
        assert!(shared.state.lock().await.stations.contains_key(&first));
        handle(&shared, part(vec![b.clone()], true), &mut link).await?;
        assert_eq!(planned(shared.clone()).await, ["A", "B"]);

        // A tunnel that drops between parts applies none of them; the next connection starts afresh.
        let mut dropped = Link::default();
        handle(&shared, part(vec![c.clone()], false), &mut dropped).await?;
        let mut next = Link::default();
        handle(&shared, part(vec![b.clone()], true), &mut next).await?;
        assert_eq!(planned(shared.clone()).await, ["B"]);

        // A whole schedule replaces parts gathered so far.
        handle(&shared, part(vec![c], false), &mut next).await?;
        handle(&shared, Down::Schedule { stations: vec![a] }, &mut next).await?;
        assert!(next.schedule_parts.is_empty());
        assert_eq!(planned(shared.clone()).await, ["A"]);
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    #[tokio::test]
    async fn a_cloud_clock_a_day_off_is_ignored_and_a_skewed_one_is_followed() -> anyhow::Result<()>
    {
        let journal =
            std::env::temp_dir().join(format!("bridge-clock-{}.jsonl", Uuid::new_v4().simple()));
        let (shared, _, _) = agent_bridge(&journal)?;
        // The server time the cloud gives for the moment a heartbeat was sent.
        type Clock = fn(DateTime<Utc>) -> DateTime<Utc>;
        // The cloud's answer to a heartbeat sent just now.
        let ack = |server_time: Clock| {
            let shared = shared.clone();
            async move {
                let sent_at = Utc::now();
                let ack = Down::HeartbeatAck {
                    sent_at,
                    server_time: server_time(sent_at),
                };
                handle(
                    &shared,
                    ack,
                    &mut Link {
                        welcomed: true,
                        ..Link::default()
                    },
                )
                .await
            }
        };
        let far: [(&str, Clock); 3] = [
            ("the last time there is", |_| DateTime::<Utc>::MAX_UTC),
            ("the first time there is", |_| DateTime::<Utc>::MIN_UTC),
            ("two days ahead", |t| t + chrono::Duration::days(2)),
        ];
        for (server_time, at) in far {
            ack(at).await?;
            let state = shared.state.lock().await;
            assert_eq!(state.offset_ms, 0, "{server_time}");
            // Scheduling reads the cloud's time; it must not overflow.
            assert!((state.cloud_now() - Utc::now()).num_seconds().abs() < 60);
        }
        ack(|t| t + chrono::Duration::minutes(5)).await?;
        let offset = shared.state.lock().await.offset_ms;
        assert!((240_000..=300_000).contains(&offset), "{offset}");
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    #[tokio::test]
    async fn a_lan_peer_that_never_finishes_its_request_is_let_go() -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt;
        let journal =
            std::env::temp_dir().join(format!("bridge-idle-{}.jsonl", Uuid::new_v4().simple()));
        let (shared, _, _) = agent_bridge(&journal)?;
        let mut servers = Vec::new();
        let mut silent = Vec::new();
        for serve in [0, 1, 2] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            servers.push(match serve {
                0 => tokio::spawn(agents::serve(
                    listener,
                    shared.clone(),
                    Keepalive::default(),
                )),
                1 => tokio::spawn(ocpp::serve(listener, shared.clone(), Keepalive::default())),
                _ => tokio::spawn(metrics::serve(listener, shared.clone())),
            });
            silent.push((addr, tokio::net::TcpStream::connect(addr).await?));
        }
        for (addr, stream) in &mut silent {
            // Connected and silent: the bridge closes its end after the handshake timeout (bounded generously here).
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut byte)).await;
            assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{addr}: {read:?}");
        }
        // The scrape endpoint still answers after it.
        let mut again = tokio::net::TcpStream::connect(silent[2].0).await?;
        tokio::io::AsyncWriteExt::write_all(&mut again, b"GET /nothing HTTP/1.1\r\n\r\n").await?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), again.read_to_end(&mut answer)).await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 404"),
            "{answer:?}"
        );
        for server in servers {
            server.abort();
        }
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    /// A bridge state with one agent station running a session until ten minutes from now; the agent's key.
    fn agent_bridge(
        journal: &std::path::Path,
    ) -> anyhow::Result<(Arc<Shared>, Uuid, &'static str)> {
        let key = "syag_test-key";
        let plan = StationPlan {
            station_id: Uuid::new_v4(),
            name: "PC-1".into(),
            control: "agent".into(),
            settings: serde_json::json!({ "agent_key_sha256": agents::sha256_hex(key) }),
            on: true,
            until: Some(Utc::now() + chrono::Duration::minutes(10)),
            session_id: Some(Uuid::new_v4()),
        };
        let id = plan.station_id;
        let station = Station {
            driver: Driver::for_plan(&plan),
            plan,
            applied: None,
            told_until: None,
            told_session: None,
            warned: 0,
            unreachable: false,
            reported: None,
            status_reported: None,
            ended: None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                journal: Journal::open(journal)?,
                stations: HashMap::from([(id, station)]),
                offset_ms: 0,
                ejects_sent: Default::default(),
                ejects_answered: Default::default(),
                unrouted: Vec::new(),
                scheduled: true,
            }),
            counters: metrics::Counters::default(),
            agents: agents::Agents::default(),
            ocpp: ocpp::Ocpp::open(&ocpp::store_path(journal))?,
            outbox: Notify::new(),
            replan: Notify::new(),
            io: drivers::Io {
                http: reqwest::Client::new(),
                mqtt: None,
                credentials: HashMap::new(),
            },
        });
        Ok((shared, id, key))
    }

    type AgentSocket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn connect_agent(
        shared: &Shared,
        addr: std::net::SocketAddr,
        station: Uuid,
        key: &str,
    ) -> anyhow::Result<AgentSocket> {
        let mut request = format!("ws://{addr}/ws/agent/{station}").into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !shared.agents.is_connected(station) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the agent never registered"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(ws)
    }

    /// The types of the messages the agent gets up to a marker the bridge sends after everything else.
    async fn received_until_marker(
        shared: &Shared,
        station: Uuid,
        ws: &mut AgentSocket,
    ) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(shared
            .agents
            .send(station, &serde_json::json!({"type": "marker"})));
        let mut types = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await?
                .context("the agent socket closed")??;
            let Message::Text(text) = frame else { continue };
            let message: serde_json::Value = serde_json::from_str(&text)?;
            let kind = message["type"].as_str().unwrap_or_default().to_owned();
            if kind == "marker" {
                return Ok(types);
            }
            types.push(kind);
        }
    }

    /// The interleaving behind the once-flaky
    /// `edge::sessions_started_through_graphql_end_at_their_planned_end_on_the_plug_and_the_agent`: the agent
    /// connects after the schedule arrived but before the scheduler's pass. The connection used to send its own
    /// `session_start` and the scheduler then another.
    #[tokio::test]
    async fn an_agent_connecting_around_the_schedulers_pass_gets_exactly_one_session_start(
    ) -> anyhow::Result<()> {
        let journal =
            std::env::temp_dir().join(format!("bridge-agent-{}.jsonl", Uuid::new_v4().simple()));
        let (shared, station, key) = agent_bridge(&journal)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(agents::serve(
            listener,
            shared.clone(),
            Keepalive::default(),
        ));

        // Connected before the scheduler looks: the scheduler's pass starts the session, once.
        let mut ws = connect_agent(&shared, addr, station, key).await?;
        reconcile(&shared).await;
        assert_eq!(
            received_until_marker(&shared, station, &mut ws).await?,
            ["session_start"]
        );

        // Connecting again in the middle of the session: the connection starts it, once; a pass changes nothing.
        ws.close(None).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.agents.is_connected(station) {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the agent never left"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut ws = connect_agent(&shared, addr, station, key).await?;
        reconcile(&shared).await;
        assert_eq!(
            received_until_marker(&shared, station, &mut ws).await?,
            ["session_start"]
        );
        server.abort();
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    /// A bridge that has just started knows no station until the cloud's schedule comes: an agent connecting then is
    /// told to retry, not that its station does not exist; once the schedule has come, an unknown station is named as
    /// such and the agent's own station is served.
    #[tokio::test]
    async fn an_agent_connecting_before_the_first_schedule_is_told_to_retry() -> anyhow::Result<()>
    {
        let journal =
            std::env::temp_dir().join(format!("bridge-agent-{}.jsonl", Uuid::new_v4().simple()));
        let (shared, station, key) = agent_bridge(&journal)?;
        let plan = {
            let mut state = shared.state.lock().await;
            state.scheduled = false;
            state.stations.remove(&station).context("the station")?.plan
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(agents::serve(
            listener,
            shared.clone(),
            Keepalive::default(),
        ));
        let refusal = |id: Uuid| async move {
            let mut request = format!("ws://{addr}/ws/agent/{id}").into_client_request()?;
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {key}").parse()?);
            let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await?
                    .context("the agent socket ended without a close frame")??;
                if let Message::Close(Some(close)) = frame {
                    return anyhow::Ok(close.reason.to_string());
                }
            }
        };
        let early = refusal(station).await?;
        assert!(early.contains("no schedule from the cloud yet"), "{early}");
        apply_schedule(&shared, vec![plan]).await;
        let unknown = refusal(Uuid::new_v4()).await?;
        assert!(
            unknown.contains("no agent station with this id"),
            "{unknown}"
        );
        connect_agent(&shared, addr, station, key).await?;
        server.abort();
        let _ = std::fs::remove_file(&journal);
        Ok(())
    }

    #[test]
    fn a_settings_file_is_read_and_the_environment_wins() -> anyhow::Result<()> {
        let text = "# the venue's bridge\nBRIDGE_CLOUD_URL=wss://cloud.example/edge/v1/tunnel\n\nBRIDGE_TOKEN=\"sybr_file\"\nBRIDGE_READINGS_MS = 0\n";
        let file = parse_settings(text)?;
        assert_eq!(file["BRIDGE_TOKEN"], "sybr_file");
        let env = HashMap::from([("BRIDGE_TOKEN", "sybr_env")]);
        let config = Config::from_lookup(|k| {
            env.get(k)
                .map(|v| (*v).to_owned())
                .or_else(|| file.get(k).cloned())
        })?;
        assert_eq!(config.cloud_url, "wss://cloud.example/edge/v1/tunnel");
        assert_eq!(config.token, "sybr_env");
        assert_eq!(config.readings, None, "0 turns readings off");
        let error = parse_settings("BRIDGE_TOKEN=x\nnonsense\n").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");

        // Through a real file (the suite's environment sets no BRIDGE_* variable).
        let path =
            std::env::temp_dir().join(format!("bridge-settings-{}.env", Uuid::new_v4().simple()));
        std::fs::write(&path, text)?;
        let loaded = Config::load(Some(&path));
        std::fs::remove_file(&path)?;
        let loaded = loaded?;
        assert_eq!(
            (loaded.token.as_str(), loaded.readings),
            ("sybr_file", None)
        );
        let missing = Config::load(Some(&path)).err().map(|e| format!("{e:#}"));
        assert!(missing.is_some_and(|e| e.contains("reading the settings file")));
        Ok(())
    }
}
