//! The OCPP test peer: a charge point played by the Python `ocpp` package, which validates every message it sends
//! and receives against the official OCPP JSON schemas (`tests/ocpp/charge_point.py`, scripted over JSON lines on
//! its stdin and stdout), and the minimal central system written with the same package
//! (`tests/ocpp/central_system.py`). `./infra/dev.sh test` installs their Python environment and sets
//! `SWITCHYARD_OCPP_PYTHON`.
//!
//! Every wait is bounded by [`WAIT`] and panics saying what it waited for, with the tail of the peer's stderr.

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The bound on every wait for the peer (its own bound on an answer from the central system is 25 s).
pub const WAIT: Duration = Duration::from_secs(30);

/// How much of a peer's stderr is kept, and shown in a panic.
const STDERR_KEPT: usize = 64 * 1024;
const STDERR_SHOWN: usize = 6 * 1024;

/// The OCPP version the charge point speaks (and the subprotocol it offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcppVersion {
    V16,
    V201,
}

impl OcppVersion {
    /// `1.6` or `2.0.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            OcppVersion::V16 => "1.6",
            OcppVersion::V201 => "2.0.1",
        }
    }

    /// `ocpp1.6` or `ocpp2.0.1`.
    pub fn subprotocol(self) -> &'static str {
        match self {
            OcppVersion::V16 => "ocpp1.6",
            OcppVersion::V201 => "ocpp2.0.1",
        }
    }
}

/// The WebSocket connection was not opened: `status` is the HTTP status of a refused upgrade (401, 404 ...), `None`
/// when there was no HTTP answer (nothing listening, a reset, a timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    pub status: Option<u16>,
    pub error: String,
}

/// Where a [`CallError`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// The central system answered with a CALLERROR.
    Csms,
    /// The library refused to send the request: its payload fails the action's schema. Nothing was sent.
    Request,
    /// The central system answered with a CALLRESULT the library refused: it fails the response schema, or the
    /// frame is malformed. `frame` holds it.
    Response,
}

/// A CALL that did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub code: String,
    pub description: String,
    pub details: Value,
    pub origin: ErrorOrigin,
    /// The central system's answer as it came, for [`ErrorOrigin::Response`].
    pub frame: Option<String>,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.origin, self.code, self.description)?;
        if let Some(frame) = &self.frame {
            write!(f, " (answer: {frame})")?;
        }
        Ok(())
    }
}

/// A CALL the central system sent to the charge point, as the charge point received and answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub action: String,
    pub unique_id: String,
    pub payload: Value,
    /// The frame the charge point answered with (`[3, id, {..}]` or `[4, id, code, description, details]`); `None`
    /// when told to stay silent ([`ChargePoint::reply_silent`]).
    pub answer: Option<Value>,
    /// `(code, description)` when the library itself refused the CALL: its payload fails the action's schema, or
    /// the action does not exist in this version. The answer is then that CALLERROR.
    pub refused: Option<(String, String)>,
}

/// The Python the peer runs with (`SWITCHYARD_OCPP_PYTHON`, set by `./infra/dev.sh`).
pub fn peer_python() -> String {
    std::env::var("SWITCHYARD_OCPP_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SWITCHYARD_OCPP_PYTHON is not set: run the tests with ./infra/dev.sh test, which prepares the OCPP \
             test peer's Python environment (.data/ocpp-venv)"
        )
    })
}

/// A script of `tests/ocpp/`.
pub fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("ocpp")
        .join(name)
}

/// `ws://{addr}/ocpp/{id}` (the id as given, not percent-encoded).
pub fn ocpp_url(addr: impl fmt::Display, id: &str) -> String {
    format!("ws://{addr}/ocpp/{id}")
}

/// A charger that connects (`ocpp1.6`, HTTP Basic) and then never reads its socket: it answers no ping, as a
/// charger whose power was cut without the connection closing. Dropping it closes the TCP connection.
pub async fn unanswering_socket(
    url: &str,
    id: &str,
    password: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{e}"));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{password}"));
    let headers = request.headers_mut();
    headers.insert(
        "authorization",
        format!("Basic {auth}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    headers.insert(
        "sec-websocket-protocol",
        "ocpp1.6".parse().unwrap_or_else(|e| panic!("{e}")),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("the unanswering charger could not connect: {e}"))
        .0
}

/// A running peer script: its stdin for commands, its stdout's JSON lines, its stderr kept for panics.
struct PeerProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Events read while waiting for others, oldest first.
    pending: VecDeque<Value>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_task: Option<JoinHandle<()>>,
    next_tag: u64,
}

impl PeerProcess {
    fn spawn(name: String, script: &str, args: &[String]) -> PeerProcess {
        let python = peer_python();
        let script = peer_script(script);
        let mut child = Command::new(&python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} {}: {e}", script.display()));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{name}: no stdout"));
        let stderr_pipe = child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("{name}: no stderr"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_task = tokio::spawn(keep_stderr(stderr_pipe, stderr.clone()));
        PeerProcess {
            name,
            stdin: child.stdin.take(),
            child,
            lines: BufReader::new(stdout).lines(),
            pending: VecDeque::new(),
            stderr,
            stderr_task: Some(stderr_task),
            next_tag: 0,
        }
    }

    /// The last part of the peer's stderr.
    fn stderr_tail(&self) -> String {
        let kept = self.stderr.lock().map(|b| b.clone()).unwrap_or_default();
        let start = kept.len().saturating_sub(STDERR_SHOWN);
        String::from_utf8_lossy(&kept[start..]).into_owned()
    }

    fn fail(&self, message: &str) -> ! {
        panic!(
            "{}: {message}\n--- its stderr (last part) ---\n{}",
            self.name,
            self.stderr_tail()
        )
    }

    /// Sends a command with a fresh tag and returns the tag.
    async fn command(&mut self, mut command: Value) -> String {
        self.next_tag += 1;
        let tag = format!("t{}", self.next_tag);
        command["tag"] = json!(tag);
        let mut line = command.to_string();
        line.push('\n');
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail(&format!("its stdin is closed; cannot send {command}"))
        };
        let written = match tokio::time::timeout(WAIT, async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        })
        .await
        {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("not written within {} s", WAIT.as_secs())),
        };
        if let Err(e) = written {
            self.fail(&format!("cannot send {command}: {e}"))
        }
        tag
    }

    /// The next event on stdout, by `deadline`; panics on a timeout, the end of stdout or a line that is not JSON.
    async fn read_event(&mut self, deadline: Instant, what: &str) -> Value {
        match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
            Err(_) => self.fail(&format!(
                "nothing within {} s while waiting for {what}",
                WAIT.as_secs()
            )),
            Ok(Err(e)) => self.fail(&format!("reading its output while waiting for {what}: {e}")),
            Ok(Ok(None)) => {
                // Exited: let the stderr reader take what is left before showing it.
                if let Some(task) = self.stderr_task.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                }
                let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
                    .await
                    .map(|s| s.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))
                    .unwrap_or_else(|_| "still running".into());
                self.fail(&format!(
                    "it ended its output ({status}) while waiting for {what}"
                ))
            }
            Ok(Ok(Some(line))) => serde_json::from_str(&line).unwrap_or_else(|e| {
                self.fail(&format!("it printed a line that is not JSON ({e}): {line}"))
            }),
        }
    }

    /// The first event, queued or to come, that `matches`; the others stay queued, in order. An untagged error event
    /// and the central system closing the connection end the wait with a panic unless they are what is waited for.
    async fn wait_for(&mut self, what: &str, mut matches: impl FnMut(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&mut matches) {
            if let Some(event) = self.pending.remove(i) {
                return event;
            }
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let event = self.read_event(deadline, what).await;
            if matches(&event) {
                return event;
            }
            match event["event"].as_str() {
                Some("error") if event.get("tag").is_none() => {
                    self.fail(&format!("it reported {event} while waiting for {what}"))
                }
                Some("closed") => self.fail(&format!(
                    "the connection was closed (code {}, reason {}) while waiting for {what}",
                    event["code"], event["reason"]
                )),
                _ => self.pending.push_back(event),
            }
        }
    }

    /// The first event answering the command tagged `tag`, of one of `kinds` or an error.
    async fn answer(&mut self, tag: &str, kinds: &[&str], what: &str) -> Value {
        let event = self
            .wait_for(what, |e| {
                e["tag"] == tag
                    && e["event"]
                        .as_str()
                        .is_some_and(|k| k == "error" || kinds.contains(&k))
            })
            .await;
        if event["event"] == "error" {
            self.fail(&format!(
                "it could not carry out the command for {what}: {}",
                event["message"]
            ))
        }
        event
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Keeps the last [`STDERR_KEPT`] bytes of a peer's stderr (and so never lets the pipe fill up).
async fn keep_stderr(mut pipe: ChildStderr, kept: Arc<Mutex<Vec<u8>>>) {
    let mut buffer = vec![0u8; 8192];
    while let Ok(n) = pipe.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if let Ok(mut kept) = kept.lock() {
            kept.extend_from_slice(&buffer[..n]);
            if kept.len() > 2 * STDERR_KEPT {
                let excess = kept.len() - STDERR_KEPT;
                kept.drain(..excess);
            }
        }
    }
}

/// A charge point played by the Python `ocpp` package over a real WebSocket, scripted by the test. It sends only
/// what it is told to (no boot, heartbeat or ping of its own) and answers the central system's CALLs with defaults
/// valid for every central-system action of both versions, or as set with [`ChargePoint::reply`].
pub struct ChargePoint {
    process: PeerProcess,
    /// The subprotocol the central system chose (`None`: none).
    pub subprotocol: Option<String>,
    pub version: OcppVersion,
}

impl ChargePoint {
    /// Connects to `url` (the whole WebSocket URL, `ws://HOST:PORT/ocpp/ID`; see [`ocpp_url`]) offering the
    /// version's subprotocol, with HTTP Basic auth `id:password` when there is a password.
    pub async fn connect(
        url: &str,
        id: &str,
        password: Option<&str>,
        version: OcppVersion,
    ) -> Result<ChargePoint, ConnectFailure> {
        ChargePoint::connect_offering(url, id, password, version, &[version.subprotocol()]).await
    }

    /// As [`ChargePoint::connect`], offering these subprotocols instead (none, several, unknown ones).
    pub async fn connect_offering(
        url: &str,
        id: &str,
        password: Option<&str>,
        version: OcppVersion,
        subprotocols: &[&str],
    ) -> Result<ChargePoint, ConnectFailure> {
        ChargePoint::spawn(url, id, password, version, subprotocols, &[]).await
    }

    /// As [`ChargePoint::connect`], leaving the central system's CALLs of these actions unanswered from its first
    /// frame on (a call sent at once on connecting, before [`ChargePoint::reply_silent`] could be set).
    pub async fn connect_silent_to(
        url: &str,
        id: &str,
        password: Option<&str>,
        version: OcppVersion,
        silent: &[&str],
    ) -> Result<ChargePoint, ConnectFailure> {
        ChargePoint::spawn(url, id, password, version, &[version.subprotocol()], silent).await
    }

    async fn spawn(
        url: &str,
        id: &str,
        password: Option<&str>,
        version: OcppVersion,
        subprotocols: &[&str],
        silent: &[&str],
    ) -> Result<ChargePoint, ConnectFailure> {
        let mut args = vec![
            "--url".to_owned(),
            url.to_owned(),
            "--version".to_owned(),
            version.as_str().to_owned(),
            // `=`-joined: a value may begin with `-` (random passwords do).
            format!("--user={id}"),
            format!("--subprotocols={}", subprotocols.join(",")),
        ];
        if let Some(password) = password {
            args.push(format!("--password={password}"));
        }
        for action in silent {
            args.push(format!("--silent={action}"));
        }
        let mut process = PeerProcess::spawn(
            format!("the OCPP charge point {id}"),
            "charge_point.py",
            &args,
        );
        let what = format!("the connection to {url}");
        let event = process
            .wait_for(&what, |e| {
                matches!(e["event"].as_str(), Some("connected" | "connect_failed"))
            })
            .await;
        if event["event"] == "connect_failed" {
            return Err(ConnectFailure {
                status: event["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
                error: event["error"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(ChargePoint {
            subprotocol: event["subprotocol"].as_str().map(str::to_owned),
            process,
            version,
        })
    }

    /// Sends a CALL through the library (`payload` in camelCase, as on the wire) and returns the central system's
    /// CALLRESULT payload as it came. A payload the library refuses to send, a CALLERROR and a CALLRESULT that
    /// fails its schema are a [`CallError`]; no answer within the library's 25 s is a panic.
    pub async fn call(&mut self, action: &str, payload: Value) -> Result<Value, CallError> {
        let tag = self
            .process
            .command(json!({ "op": "call", "action": action, "payload": payload }))
            .await;
        let what = format!("the answer to {action}");
        let event = self
            .process
            .answer(&tag, &["result", "call_error", "timeout"], &what)
            .await;
        match event["event"].as_str() {
            Some("result") => Ok(event["payload"].clone()),
            Some("call_error") => Err(CallError {
                code: event["code"].as_str().unwrap_or_default().to_owned(),
                description: event["description"].as_str().unwrap_or_default().to_owned(),
                details: event["details"].clone(),
                origin: match event["origin"].as_str() {
                    Some("csms") => ErrorOrigin::Csms,
                    Some("request") => ErrorOrigin::Request,
                    _ => ErrorOrigin::Response,
                },
                frame: event["frame"].as_str().map(str::to_owned),
            }),
            _ => self.process.fail(&format!(
                "the central system did not answer {action} within {} s",
                event["seconds"]
            )),
        }
    }

    /// From now on, CALLs of `action` from the central system are answered with this payload (camelCase). The
    /// payload must fit the library's response type; it is validated against the schema when sent.
    pub async fn reply(&mut self, action: &str, payload: Value) {
        self.set_reply(action, json!({ "payload": payload })).await;
    }

    /// From now on, CALLs of `action` are answered with a CALLERROR of this code (any string).
    pub async fn reply_error(&mut self, action: &str, code: &str) {
        self.set_reply(action, json!({ "call_error": code })).await;
    }

    /// From now on, CALLs of `action` get no answer at all (a test may answer with [`ChargePoint::send_raw`], using
    /// the [`Received::unique_id`]).
    pub async fn reply_silent(&mut self, action: &str) {
        self.set_reply(action, json!({ "silent": true })).await;
    }

    /// CALLs of `action` get the default answer again.
    pub async fn reply_default(&mut self, action: &str) {
        self.set_reply(action, json!({})).await;
    }

    async fn set_reply(&mut self, action: &str, mut how: Value) {
        how["op"] = json!("reply");
        how["action"] = json!(action);
        let tag = self.process.command(how).await;
        self.process
            .answer(
                &tag,
                &["reply_set"],
                &format!("the reply to {action} to be set"),
            )
            .await;
    }

    /// The payload of the next CALL of `action` from the central system (waiting for it if need be; CALLs of other
    /// actions stay queued). Panics if the library refused it (a schema-invalid CALL).
    pub async fn next_received(&mut self, action: &str) -> Value {
        let received = self.next_received_full(action).await;
        if let Some((code, description)) = &received.refused {
            self.process.fail(&format!(
                "the central system's {action} was refused by the library ({code}: {description}); its payload: {}",
                received.payload
            ))
        }
        received.payload
    }

    /// As [`ChargePoint::next_received`], with the unique id, the answer sent and the library's refusal if any.
    pub async fn next_received_full(&mut self, action: &str) -> Received {
        let what = format!("a {action} CALL from the central system");
        let event = self
            .process
            .wait_for(&what, |e| e["event"] == "received" && e["action"] == action)
            .await;
        Received {
            action: action.to_owned(),
            unique_id: event["unique_id"].as_str().unwrap_or_default().to_owned(),
            payload: event["payload"].clone(),
            answer: Some(event["answer"].clone()).filter(|a| !a.is_null()),
            refused: event.get("refused").map(|r| {
                (
                    r["code"].as_str().unwrap_or_default().to_owned(),
                    r["description"].as_str().unwrap_or_default().to_owned(),
                )
            }),
        }
    }

    /// Sends a text frame as is, past the library, and returns the central system's answer frame to it (the next
    /// CALLRESULT or CALLERROR whose id the library did not send, preferably the frame's own id).
    pub async fn raw(&mut self, frame: &str) -> String {
        let tag = self.send_raw_tagged(frame).await;
        let what = format!("the central system's answer to the raw frame {frame}");
        let event = self.process.answer(&tag, &["raw_answer"], &what).await;
        event["frame"].as_str().unwrap_or_default().to_owned()
    }

    /// Sends a text frame as is and returns once it is sent, waiting for no answer.
    pub async fn send_raw(&mut self, frame: &str) {
        self.send_raw_tagged(frame).await;
    }

    async fn send_raw_tagged(&mut self, frame: &str) -> String {
        let tag = self
            .process
            .command(json!({ "op": "raw", "frame": frame }))
            .await;
        self.process
            .answer(
                &tag,
                &["sent"],
                &format!("the raw frame {frame} to be sent"),
            )
            .await;
        tag
    }

    /// Waits for the central system to close the connection; its close code (1006 when the connection ended
    /// without a close frame) and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        let event = self
            .process
            .wait_for("the central system to close the connection", |e| {
                e["event"] == "closed"
            })
            .await;
        (
            event["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(1006),
            event["reason"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Closes the connection cleanly (1000) and waits for the peer to exit.
    pub async fn close(mut self) {
        let tag = self.process.command(json!({ "op": "close" })).await;
        self.process
            .answer(
                &tag,
                &["closed"],
                "the charge point to close its connection",
            )
            .await;
        if tokio::time::timeout(WAIT, self.process.child.wait())
            .await
            .is_err()
        {
            self.process.fail("it did not exit after closing")
        }
    }

    /// What the peer wrote on stderr lately (the library's warnings and tracebacks).
    pub fn stderr(&self) -> String {
        self.process.stderr_tail()
    }
}

/// Runs `charge_point.py --check-defaults`: builds the default answer to every central-system action of both
/// versions and validates it against its schema. Panics unless all are valid.
pub async fn check_default_replies() {
    let mut process = PeerProcess::spawn(
        "the OCPP charge point's default replies".into(),
        "charge_point.py",
        &["--check-defaults".to_owned()],
    );
    for version in ["1.6", "2.0.1"] {
        let event = process
            .wait_for(&format!("the check of the {version} defaults"), |e| {
                e["version"] == version
            })
            .await;
        if event["event"] != "defaults_ok" {
            let errors: Vec<String> = process.pending.iter().map(Value::to_string).collect();
            process.fail(&format!("{event}: {}", errors.join("\n")))
        }
    }
}

/// The minimal central system written with the Python `ocpp` package (`tests/ocpp/central_system.py`), both
/// versions by subprotocol, no authentication; the baseline of the OCPP benchmark.
pub struct CentralSystem {
    process: PeerProcess,
    pub port: u16,
}

impl CentralSystem {
    /// Starts it on a free port of 127.0.0.1, logging every message at INFO as the library's example does.
    pub async fn start() -> CentralSystem {
        CentralSystem::start_with(&[]).await
    }

    /// Starts it with more arguments (`["--log-level", "WARNING"]`).
    pub async fn start_with(args: &[&str]) -> CentralSystem {
        let mut all = vec!["--port".to_owned(), "0".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let mut process = PeerProcess::spawn(
            "the Python OCPP central system".into(),
            "central_system.py",
            &all,
        );
        let event = process
            .wait_for("the central system to listen", |e| {
                e["event"] == "listening"
            })
            .await;
        let port = event["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| process.fail(&format!("no port in {event}")));
        CentralSystem { process, port }
    }

    /// `ws://127.0.0.1:{port}/ocpp/{id}`.
    pub fn url(&self, id: &str) -> String {
        ocpp_url(format!("127.0.0.1:{}", self.port), id)
    }

    /// Its process id (for measuring its memory and CPU).
    pub fn pid(&self) -> Option<u32> {
        self.process.child.id()
    }

    /// What it logged lately.
    pub fn stderr(&self) -> String {
        self.process.stderr_tail()
    }
}
