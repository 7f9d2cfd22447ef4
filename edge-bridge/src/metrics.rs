//! The bridge's `/metrics` (Prometheus text format) on `BRIDGE_METRICS_LISTEN`: whether the tunnel is up, how
//! often it was lost, what waits in the journal, events and commands handled, stations, unreachable devices,
//! connected agents, and the measured clock offset. A tiny HTTP responder: the bridge carries no web framework.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Shared;

/// Counters kept as the bridge works.
#[derive(Default)]
pub struct Counters {
    pub tunnel_up: AtomicBool,
    pub tunnels_lost: AtomicU64,
    /// Tunnels given up because the cloud stopped answering (half-open).
    pub half_open: AtomicU64,
    /// Connections the cloud refused for the bridge's token (revoked, rotated, mistyped).
    pub refused: AtomicU64,
    pub events: AtomicU64,
    pub commands: AtomicU64,
    /// WebSocket pings sent to the chargers and PC agents connected to the bridge.
    pub pings: AtomicU64,
    /// PC agents closed for answering no ping (chargers: `ocpp::Ocpp::dead`).
    pub agents_dead: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Answers `GET /metrics` until the task is dropped; anything else gets `404`.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (mut stream, _) = crate::next_connection(&listener, "metrics").await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let Ok(Ok(n)) =
                tokio::time::timeout(crate::HANDSHAKE_TIMEOUT, stream.read(&mut request)).await
            else {
                return;
            };
            let head = String::from_utf8_lossy(&request[..n]);
            let response = if head.starts_with("GET /metrics ") {
                let body = render(&shared).await;
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

async fn render(shared: &Shared) -> String {
    let c = &shared.counters;
    let (pending, stations, unreachable, offset) = {
        let state = shared.state.lock().await;
        (
            state.journal.pending().len(),
            state.stations.len(),
            state.stations.values().filter(|s| s.unreachable).count(),
            state.offset_ms,
        )
    };
    let metrics: [(&str, &str, &str, String); 16] = [
        (
            "edge_bridge_tunnel_up",
            "gauge",
            "1 while the tunnel to the cloud is open",
            u8::from(c.tunnel_up.load(Ordering::Relaxed)).to_string(),
        ),
        (
            "edge_bridge_tunnels_lost_total",
            "counter",
            "tunnels that ended or could not be opened",
            c.tunnels_lost.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_tunnels_half_open_total",
            "counter",
            "tunnels given up because heartbeats went unanswered",
            c.half_open.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_token_refused_total",
            "counter",
            "connections the cloud refused for the bridge's token",
            c.refused.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_journal_pending",
            "gauge",
            "events written to the journal and not yet acknowledged",
            pending.to_string(),
        ),
        (
            "edge_bridge_events_total",
            "counter",
            "events journaled",
            c.events.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_commands_total",
            "counter",
            "commands received from the cloud",
            c.commands.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_stations",
            "gauge",
            "stations in the schedule",
            stations.to_string(),
        ),
        (
            "edge_bridge_devices_unreachable",
            "gauge",
            "devices that did not answer",
            unreachable.to_string(),
        ),
        (
            "edge_bridge_agents_connected",
            "gauge",
            "PC agents connected",
            shared.agents.connected_count().to_string(),
        ),
        (
            "edge_bridge_ocpp_chargers_connected",
            "gauge",
            "chargers connected to the local OCPP server",
            shared.ocpp.connected().to_string(),
        ),
        (
            "edge_bridge_pings_total",
            "counter",
            "WebSocket pings sent to the chargers and PC agents connected to the bridge",
            shared.counters.pings.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_agents_dead_total",
            "counter",
            "PC agents closed for answering no ping (gone without closing their connection)",
            shared
                .counters
                .agents_dead
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "edge_bridge_ocpp_chargers_dead_total",
            "counter",
            "chargers closed for answering no ping (gone without closing their connection)",
            shared.ocpp.dead.load(Ordering::Relaxed).to_string(),
        ),
        (
            "edge_bridge_ocpp_offline_messages_total",
            "counter",
            "charger messages the bridge answered itself while the tunnel was down",
            shared
                .ocpp
                .offline_messages
                .load(Ordering::Relaxed)
                .to_string(),
        ),
        (
            "edge_bridge_clock_offset_ms",
            "gauge",
            "cloud clock minus bridge clock, as measured",
            offset.to_string(),
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in metrics {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    text
}
