//! Graceful shutdown for long-lived connections. On SIGTERM the server stops accepting and finishes its HTTP
//! requests; WebSockets (bridge tunnels, chargers, GraphQL subscriptions) would otherwise be cut without a word
//! when the process exits. Instead each is closed with `1012 service restart`, so that its peer reconnects at
//! once (through the load balancer, to another replica) — nothing is lost: device commands and calls to chargers
//! wait in the database, and subscribers resume with `after`. The server waits a bounded time for them to close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// The close code sent to WebSocket peers when the process stops.
pub const RESTART: u16 = 1012;
pub const RESTART_REASON: &str = "server restarting; reconnect";

#[derive(Clone)]
pub struct Drain {
    started: Arc<watch::Sender<bool>>,
    open: Arc<AtomicUsize>,
    closed: Arc<Notify>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            started: Arc::new(watch::channel(false).0),
            open: Arc::new(AtomicUsize::new(0)),
            closed: Arc::new(Notify::new()),
        }
    }
}

impl Drain {
    /// Tells every open WebSocket to close.
    pub fn start(&self) {
        self.started.send_replace(true);
    }

    /// Resolves once the drain has started (at once if it has).
    pub async fn started(&self) {
        let mut started = self.started.subscribe();
        let _ = started.wait_for(|s| *s).await;
    }

    /// Counts an open WebSocket until the guard is dropped.
    pub fn hold(&self) -> Held {
        self.open.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    /// Waits until every held WebSocket has closed, or `within` has passed; returns how many are still open.
    pub async fn settled(&self, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let closed = self.closed.notified();
            let open = self.open.load(Ordering::SeqCst);
            if open == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open.load(Ordering::SeqCst);
            }
        }
    }
}

pub struct Held(Drain);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settles_when_the_last_connection_closes() {
        let drain = Drain::default();
        let (a, b) = (drain.hold(), drain.hold());
        drain.start();
        drain.started().await;
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.settled(Duration::from_secs(60)).await }
        });
        drop(a);
        drop(b);
        assert_eq!(waiting.await.unwrap(), 0);
        let _c = drain.hold();
        assert_eq!(drain.settled(Duration::from_millis(10)).await, 1);
    }
}
