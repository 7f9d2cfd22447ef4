//! Frames written to a WebSocket peer that may have stopped reading. A peer that takes no frame (its receive window
//! full: it hung, or it never reads) would block its connection's task in the write, with the kernel's buffers
//! full, deaf to pings, drains and closes. Every write of the API's WebSockets — bridge tunnels, chargers, GraphQL
//! subscriptions — is bounded by `WS_WRITE_TIMEOUT_MS`: past it the write fails and the connection ends.

use std::time::Duration;

use anyhow::Context;
use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt};

/// `WS_WRITE_TIMEOUT_MS`: how long one frame may wait for the peer to take it (100 ms to 10 minutes; 30 s).
pub fn write_timeout(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Duration> {
    let ms = match var("WS_WRITE_TIMEOUT_MS") {
        None => 30_000,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| (100..=600_000).contains(ms))
            .with_context(|| {
                format!("WS_WRITE_TIMEOUT_MS must be a whole number from 100 to 600000, not {v:?}")
            })?,
    };
    Ok(Duration::from_millis(ms))
}

/// Sends `message` unless the peer takes nothing for `within`; `socket` names the kind of connection in the
/// `ws_writes_stalled_total` metric.
pub async fn send<S>(
    sink: &mut S,
    message: Message,
    within: Duration,
    socket: &'static str,
) -> anyhow::Result<()>
where
    S: Sink<Message> + Unpin,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(within, sink.send(message)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => {
            metrics::counter!("ws_writes_stalled_total", "socket" => socket).increment(1);
            tracing::info!(
                socket,
                ?within,
                "the peer took no frame in time; its connection ends"
            );
            anyhow::bail!("the peer took no frame for {within:?}")
        }
    }
}
