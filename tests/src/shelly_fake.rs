//! A local HTTP fake that behaves like a Shelly plug, Gen1 (`/relay/0?turn=…&timer=…`, `/status`) or Gen2
//! (`/rpc/Switch.Set?id=0&on=…&toggle_after=…`, `/rpc/Switch.GetStatus?id=0`). It keeps the relay state, runs the
//! backup timer (`timer` / `toggle_after` flips the relay back when it expires), and records every switch.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One switching request the plug received.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub on: bool,
    /// The backup timer asked for, in seconds.
    pub backup_secs: Option<u64>,
    pub at: Instant,
}

#[derive(Default)]
struct State {
    on: bool,
    flip_at: Option<Instant>,
    switches: Vec<Switch>,
    /// Someone presses the button right after the next switching request: the relay ends up so.
    pressed_after_next_switch: Option<bool>,
    /// Pulled out of the wall: every request fails (503) until it is plugged in again.
    unplugged: bool,
}

impl State {
    fn settle(&mut self) {
        if self.flip_at.is_some_and(|t| Instant::now() >= t) {
            self.on = !self.on;
            self.flip_at = None;
        }
    }
}

pub struct ShellyFake {
    pub server: MockServer,
    state: Arc<Mutex<State>>,
}

struct Handler(Arc<Mutex<State>>);

impl ShellyFake {
    pub async fn start() -> Self {
        Self::serve(MockServer::start().await).await
    }

    /// A plug listening on `listener` (a fixed address, for the demo).
    pub async fn start_on(listener: std::net::TcpListener) -> Self {
        Self::serve(MockServer::builder().listener(listener).start().await).await
    }

    async fn serve(server: MockServer) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler(state.clone()))
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// `host:port`, as a station's `host` setting.
    pub fn host(&self) -> String {
        self.server.address().to_string()
    }

    pub fn switches(&self) -> Vec<Switch> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .switches
            .clone()
    }

    /// Someone presses the plug's button: the relay changes, no request is recorded.
    pub fn press(&self, on: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.on = on;
        state.flip_at = None;
    }

    /// Someone will press the button to `on` right after the next switching request (before anyone can look).
    pub fn press_after_next_switch(&self, on: bool) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pressed_after_next_switch = Some(on);
    }

    /// Pulls the plug out of the wall (`true`) or puts it back: meanwhile it answers nothing but 503.
    pub fn unplug(&self, out: bool) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unplugged = out;
    }

    pub fn is_on(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.settle();
        state.on
    }
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.unplugged {
            return ResponseTemplate::new(503);
        }
        state.settle();
        let query: std::collections::HashMap<String, String> =
            request.url.query_pairs().into_owned().collect();
        let number = |key: &str| query.get(key).and_then(|v| v.parse::<f64>().ok());
        let switch = |state: &mut State, on: bool, backup: Option<f64>| {
            let was = state.on;
            state.on = on;
            let backup_secs = backup.filter(|s| *s > 0.0).map(|s| s.ceil() as u64);
            state.flip_at = backup_secs.map(|s| Instant::now() + Duration::from_secs(s));
            state.switches.push(Switch {
                on,
                backup_secs,
                at: Instant::now(),
            });
            if let Some(pressed) = state.pressed_after_next_switch.take() {
                state.on = pressed;
                state.flip_at = None;
            }
            was
        };
        match request.url.path() {
            "/relay/0" => {
                let Some(turn) = query.get("turn") else {
                    return ResponseTemplate::new(400);
                };
                let on = match turn.as_str() {
                    "on" => true,
                    "off" => false,
                    "toggle" => !state.on,
                    _ => return ResponseTemplate::new(400),
                };
                switch(&mut state, on, number("timer"));
                ResponseTemplate::new(200).set_body_json(json!({
                    "ison": state.on, "has_timer": state.flip_at.is_some(), "source": "http"
                }))
            }
            "/status" => ResponseTemplate::new(200).set_body_json(json!({
                "relays": [{"ison": state.on}], "meters": [{"power": if state.on { 120.5 } else { 0.0 }, "total": 600}]
            })),
            "/rpc/Switch.Set" => {
                let on = query.get("on").map(String::as_str) == Some("true");
                let was = switch(&mut state, on, number("toggle_after"));
                ResponseTemplate::new(200).set_body_json(json!({ "was_on": was }))
            }
            "/rpc/Switch.GetStatus" => ResponseTemplate::new(200).set_body_json(json!({
                "id": 0, "output": state.on, "apower": if state.on { 120.5 } else { 0.0 },
                "aenergy": {"total": 10.0}
            })),
            _ => ResponseTemplate::new(404),
        }
    }
}
