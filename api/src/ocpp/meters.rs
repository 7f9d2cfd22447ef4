//! Group commit for what chargers send most: 1.6 MeterValues, and the "seen" mark of heartbeats (and of any
//! message that takes this way); and, in the same transactions, the check every connection makes when it has
//! nothing in flight (whether it is still the charger's live one and whether a call waits for it). A connection
//! hands its message or check here and waits; the answer goes to the charger only once the reading is committed,
//! so a MeterValues answered is a MeterValues stored. The commit does not wait
//! for the disk ([`switchyard_core::Db::begin_tenant_hot`]): a reading is an energy register the charger's next
//! reading states again, so a crash of Postgres that forgets the last fraction of a second of them loses nothing
//! that lasts, and waiting for the disk (3 ms a flush on the benchmark machine) would bound the rate instead.
//!
//! Each tenant has a queue. The first message into an idle queue starts a flush for that tenant: it waits for one
//! of a few database slots, takes everything queued by then (up to [`MAX_BATCH`]) and writes it in one tenant
//! transaction — one statement for all the readings, one for the sessions they bill, one for the seen marks, and
//! the billed sessions' live events numbered as its last statement — then goes again while the queue is not empty.
//! Under light load a batch is one message (no added wait); under heavy load the messages that arrive while a flush
//! runs share the next one, so the transactions per second stay near what the database does best and the messages
//! per second grow with the batch. A batch that fails is retried one message at a time, so one bad message fails
//! alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_core::charging::{self, transactions::Reading};
use switchyard_core::{Db, TenantId};
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;

/// The most messages one transaction takes.
const MAX_BATCH: usize = 500;

pub struct Meters {
    db: Db,
    slots: Semaphore,
    queues: Mutex<HashMap<TenantId, Vec<Item>>>,
}

struct Item {
    reading: Option<Reading>,
    seen: Option<Uuid>,
    /// A connection's check: (charger, connection).
    check: Option<(Uuid, Uuid)>,
    done: oneshot::Sender<Answer>,
}

/// What a flush tells each waiting item: `None` when its transaction failed, else the check's standing (as
/// [`charging::standing`] gives it; `None` for an item without a check).
type Answer = Option<Option<bool>>;

impl Meters {
    /// `slots`: how many tenants' flushes may hold a database connection at once.
    pub fn new(db: Db, slots: usize) -> Arc<Self> {
        Arc::new(Self {
            db,
            slots: Semaphore::new(slots.max(1)),
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Stores a reading and/or a charger's seen mark of this tenant; true once committed, false when it could not
    /// be (the charger is told to send it again).
    pub async fn record(
        self: &Arc<Self>,
        tenant: TenantId,
        reading: Option<Reading>,
        seen: Option<Uuid>,
    ) -> bool {
        self.queue(tenant, reading, seen, None).await.is_some()
    }

    /// A connection's check ([`charging::standing`]), with the charger's seen mark when it is due: `None` when it
    /// is no longer the charger's live connection, else whether a call waits for it; an error when the database
    /// could not answer.
    pub async fn standing(
        self: &Arc<Self>,
        tenant: TenantId,
        charger: Uuid,
        connection: Uuid,
        seen: Option<Uuid>,
    ) -> anyhow::Result<Option<bool>> {
        self.queue(tenant, None, seen, Some((charger, connection)))
            .await
            .ok_or_else(|| anyhow::anyhow!("the charger's check could not be read"))
    }

    async fn queue(
        self: &Arc<Self>,
        tenant: TenantId,
        reading: Option<Reading>,
        seen: Option<Uuid>,
        check: Option<(Uuid, Uuid)>,
    ) -> Answer {
        let (done, answer) = oneshot::channel();
        let start = {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let idle = !queues.contains_key(&tenant);
            queues.entry(tenant).or_default().push(Item {
                reading,
                seen,
                check,
                done,
            });
            idle
        };
        if start {
            tokio::spawn(self.clone().flush(tenant));
        }
        answer.await.unwrap_or(None)
    }

    /// Writes a tenant's queue until it is empty; then the queue goes (under the same lock a new message checks, so
    /// no message is left without a flush).
    async fn flush(self: Arc<Self>, tenant: TenantId) {
        // Should this task end early (a panic), the tenant's queue goes with it: the waiting messages are answered
        // "send it again" (their senders dropped) and the next message starts a new flush, rather than waiting on a
        // flush that is gone.
        let mut gone = Gone {
            meters: &self,
            tenant,
            armed: true,
        };
        loop {
            let Ok(_slot) = self.slots.acquire().await else {
                return;
            };
            let items: Vec<Item> = {
                let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                let Some(queue) = queues.get_mut(&tenant) else {
                    gone.armed = false;
                    return;
                };
                if queue.is_empty() {
                    queues.remove(&tenant);
                    gone.armed = false;
                    return;
                }
                let take = queue.len().min(MAX_BATCH);
                queue.drain(..take).collect()
            };
            metrics::histogram!("ocpp_meter_batch_size").record(items.len() as f64);
            let answers = match self.write(tenant, &items).await {
                Ok(answers) => answers,
                Err(_) if items.len() > 1 => {
                    // One at a time, so that what fails fails alone.
                    for item in items {
                        let answer = self
                            .write(tenant, std::slice::from_ref(&item))
                            .await
                            .ok()
                            .and_then(|mut a| a.pop())
                            .flatten();
                        let _ = item.done.send(answer);
                    }
                    continue;
                }
                Err(_) => vec![None; items.len()],
            };
            for (item, answer) in items.into_iter().zip(answers) {
                let _ = item.done.send(answer);
            }
        }
    }

    /// One transaction for the items; each item's answer, in order.
    async fn write(
        &self,
        tenant: TenantId,
        items: &[Item],
    ) -> switchyard_core::Result<Vec<Answer>> {
        let readings: Vec<Reading> = items.iter().filter_map(|i| i.reading.clone()).collect();
        let seen: Vec<Uuid> = items.iter().filter_map(|i| i.seen).collect();
        let checks: Vec<(Uuid, Uuid)> = items.iter().filter_map(|i| i.check).collect();
        let result: switchyard_core::Result<Vec<Answer>> = async {
            // Kept plans, and a commit that does not wait for the disk: each reading is a register the next one
            // states again, and a check reads (and marks its charger seen). The live events of billed readings (`session.metered`) are
            // numbered in this transaction rather than in one of their own after it: this flush is its tenant's only
            // one in this process, and what it holds the numbering for is its last statement and a commit that does
            // not wait for the disk.
            let mut tx = self.db.begin_tenant_hot(tenant).await?;
            tx.number_events_before_commit();
            charging::transactions::record(&mut tx, &readings).await?;
            charging::seen(&mut tx, &seen).await?;
            let mut standing = charging::standing(&mut tx, &checks).await?.into_iter();
            tx.commit().await?;
            Ok(items
                .iter()
                .map(|i| {
                    Some(if i.check.is_some() {
                        standing.next().flatten()
                    } else {
                        None
                    })
                })
                .collect())
        }
        .await;
        if let Err(e) = &result {
            if let Some(cause) = e.hidden_cause() {
                tracing::error!(tenant.id = %tenant, messages = items.len(), error = ?cause, "storing meter values failed");
            }
        }
        result
    }
}

/// Drops a tenant's queue when its flush ends early; disarmed by a normal end (which removed the queue itself, under
/// the lock a new message checks).
struct Gone<'a> {
    meters: &'a Meters,
    tenant: TenantId,
    armed: bool,
}

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut queues = self.meters.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.remove(&self.tenant);
    }
}
