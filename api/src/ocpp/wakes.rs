//! Wake-ups for charger connections, one per process: a single task hears every wake-up signal (Postgres
//! `notify` or Redis, payload `<tenant>:<target>`) and wakes only the connections of the charger it names — not
//! every connection of the process, which at thousands of chargers would wake thousands of tasks for each call and
//! each connect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, Weak};

use tokio::sync::{broadcast, Notify};
use uuid::Uuid;

/// One connection's entry: its tenant and its wake-up.
struct Entry {
    connection: Uuid,
    tenant: Uuid,
    notify: Arc<Notify>,
}

pub struct Wakes {
    signals: broadcast::Sender<(Uuid, Uuid)>,
    chargers: Mutex<HashMap<Uuid, Vec<Entry>>>,
    started: Once,
}

impl Wakes {
    /// Wake-ups fed by `signals` (the process's wake-up broadcast).
    pub fn new(signals: broadcast::Sender<(Uuid, Uuid)>) -> Arc<Self> {
        Arc::new(Self {
            signals,
            chargers: Mutex::new(HashMap::new()),
            started: Once::new(),
        })
    }

    /// Registers a connection of `charger`: its wake-up fires for every signal naming the charger in its tenant, and
    /// for every signal when the dispatcher fell behind. Dropping the registration removes it.
    pub fn register(
        self: &Arc<Self>,
        tenant: Uuid,
        charger: Uuid,
        connection: Uuid,
    ) -> Registration {
        self.started.call_once(|| {
            let receiver = self.signals.subscribe();
            tokio::spawn(dispatch(Arc::downgrade(self), receiver));
        });
        let notify = Arc::new(Notify::new());
        self.lock().entry(charger).or_default().push(Entry {
            connection,
            tenant,
            notify: notify.clone(),
        });
        Registration {
            wakes: self.clone(),
            charger,
            connection,
            notify,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Entry>>> {
        // A panic while holding the lock leaves the map usable: take it back.
        self.chargers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn dispatch(wakes: Weak<Wakes>, mut signals: broadcast::Receiver<(Uuid, Uuid)>) {
    loop {
        let signal = signals.recv().await;
        let Some(wakes) = wakes.upgrade() else { return };
        match signal {
            Ok((tenant, target)) => {
                if let Some(entries) = wakes.lock().get(&target) {
                    for entry in entries.iter().filter(|e| e.tenant == tenant) {
                        entry.notify.notify_one();
                    }
                }
            }
            // Fell behind: some wake-up may be lost, so everyone looks.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for entry in wakes.lock().values().flatten() {
                    entry.notify.notify_one();
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A connection's place in the table.
pub struct Registration {
    wakes: Arc<Wakes>,
    charger: Uuid,
    connection: Uuid,
    pub notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut chargers = self.wakes.lock();
        if let Some(entries) = chargers.get_mut(&self.charger) {
            entries.retain(|e| e.connection != self.connection);
            if entries.is_empty() {
                chargers.remove(&self.charger);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_wakes_only_the_named_chargers_connections_in_its_tenant() {
        use futures_util::FutureExt;
        let (signals, _) = broadcast::channel(16);
        let wakes = Wakes::new(signals.clone());
        let (tenant, other_tenant) = (Uuid::new_v4(), Uuid::new_v4());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let first = wakes.register(tenant, a, Uuid::new_v4());
        let second = wakes.register(tenant, a, Uuid::new_v4());
        let other = wakes.register(tenant, b, Uuid::new_v4());
        // Another tenant naming B, then A's own signal: signals are dispatched in order, so once A's connections
        // are woken the first signal was handled too.
        let _ = signals.send((other_tenant, b));
        let _ = signals.send((tenant, a));
        for connection in [&first, &second] {
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                connection.notify.notified(),
            )
            .await
            .unwrap_or_else(|_| panic!("a connection of A was not woken"));
        }
        assert!(
            other.notify.notified().now_or_never().is_none(),
            "B was woken by another tenant's signal"
        );
        drop(first);
        drop(second);
        assert!(
            wakes.lock().get(&a).is_none(),
            "dropped registrations leave the table"
        );
        assert!(wakes.lock().get(&b).is_some());
    }
}
