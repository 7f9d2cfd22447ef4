//! Chargers behind an edge bridge: the tunnel's side of the relay (protocol: `Up::Ocpp*` / `Down::Ocpp*`).
//!
//! A charger on the venue's LAN connects to the bridge, which forwards its identity, subprotocol and password
//! (`ocpp_open`). The tunnel checks them in its own tenant — the charger must be this tenant's, on a station at the
//! bridge's venue, with that password ([`charging::relay_login`]); anything else is refused as an unknown identity
//! would be, and the cross-tenant directory is never asked. An accepted charger gets the same connection loop as a
//! direct one ([`ocpp::run`], `via_bridge` set) over channels: its frames come up the tunnel, the loop's frames go
//! down it. When the tunnel ends, every connection relayed by it ends (the charger is offline in the cloud; the
//! bridge keeps its local socket and answers it as a local controller).
//!
//! What the bridge answered itself while the tunnel was down comes back as journaled events (`Event::Ocpp`), each
//! applied by [`replay`] in the transaction that records the event, so exactly once and in the bridge's order.

use std::collections::HashMap;

use serde_json::Value;
use switchyard_core::bridges::Bridge;
use switchyard_core::charging::{self, Protocol};
use switchyard_core::{Db, TenantId, TenantTx};
use switchyard_edge_protocol::Down;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::ocpp::{self, Fail, Link, OcppSettings, Out};

/// The connections one tunnel relays.
pub(crate) struct Relays {
    db: Db,
    tenant: TenantId,
    bridge: Bridge,
    settings: OcppSettings,
    chargers: std::sync::Arc<crate::ocpp::Shared>,
    /// Each connection's channel into its loop.
    conns: HashMap<Uuid, mpsc::Sender<String>>,
    /// What the loops send out, by connection (`None`: the loop ended). Unbounded, so that a loop waiting to send
    /// never holds up the tunnel that feeds it.
    back: mpsc::UnboundedSender<(Uuid, Option<Out>)>,
}

impl Relays {
    pub fn new(
        db: Db,
        tenant: TenantId,
        bridge: Bridge,
        settings: OcppSettings,
        chargers: std::sync::Arc<crate::ocpp::Shared>,
    ) -> (Self, mpsc::UnboundedReceiver<(Uuid, Option<Out>)>) {
        let (back, from_loops) = mpsc::unbounded_channel();
        (
            Self {
                db,
                tenant,
                bridge,
                settings,
                chargers,
                conns: HashMap::new(),
                back,
            },
            from_loops,
        )
    }

    /// A charger connected to the bridge: checked, and its connection loop started. Returns the answer.
    pub async fn open(
        &mut self,
        conn: Uuid,
        identity: &str,
        subprotocol: &str,
        password: Option<&str>,
    ) -> Down {
        let refused = |reason: &str| {
            metrics::counter!("edge_ocpp_connections_total", "outcome" => "refused").increment(1);
            Down::OcppRefused {
                conn,
                reason: reason.into(),
            }
        };
        if self.conns.contains_key(&conn) {
            return refused("this connection is already open");
        }
        let Some(protocol) = Protocol::parse(subprotocol) else {
            return refused("offer the subprotocol ocpp1.6 or ocpp2.0.1");
        };
        let (db, tenant, bridge) = (&self.db, self.tenant, &self.bridge);
        let login = async {
            let mut tx = db.begin_tenant(tenant).await?;
            let found = charging::relay_login(&mut tx, bridge.venue_id, identity, password).await?;
            tx.commit().await?;
            Ok::<_, switchyard_core::Error>(found)
        }
        .await;
        let charger_id = match login {
            Ok(Some(id)) => id,
            Ok(None) => {
                tracing::info!(bridge.id = %bridge.id, charge_point_id = identity,
                    "relayed charger refused: unknown here or wrong password");
                return refused(crate::ocpp::WRONG_PASSWORD);
            }
            Err(e) => {
                if let Some(cause) = e.hidden_cause() {
                    tracing::error!(error = ?cause, "relayed charger login failed");
                }
                return refused("retry later");
            }
        };
        let (to_loop, incoming) = mpsc::channel(16);
        self.conns.insert(conn, to_loop);
        let link = Link {
            db: db.clone(),
            tenant,
            charger_id,
            protocol,
            via_bridge: Some(bridge.id),
            settings: self.settings,
            password: password.map(switchyard_core::auth::token_hash),
        };
        let back = self.back.clone();
        let chargers = self.chargers.clone();
        tokio::spawn(async move {
            let (outgoing, mut from_loop) = mpsc::channel(16);
            let forward = async {
                while let Some(out) = from_loop.recv().await {
                    if back.send((conn, Some(out))).is_err() {
                        break;
                    }
                }
            };
            tokio::join!(ocpp::run(link, incoming, outgoing, chargers), forward);
            let _ = back.send((conn, None));
        });
        metrics::counter!("edge_ocpp_connections_total", "outcome" => "opened").increment(1);
        metrics::gauge!("edge_ocpp_relayed_open").increment(1.0);
        Down::OcppOpened { conn }
    }

    /// A frame from a relayed charger, to its loop (a connection not open here is ignored: it was refused or has
    /// ended, and the bridge heard so).
    pub async fn frame(&mut self, conn: Uuid, text: String) {
        if let Some(to_loop) = self.conns.get(&conn) {
            if to_loop.send(text).await.is_err() {
                self.conns.remove(&conn);
            }
        }
    }

    /// The charger's socket at the bridge closed: its loop ends.
    pub fn closed(&mut self, conn: Uuid) {
        self.conns.remove(&conn);
    }

    /// What a loop sent out, as the frame for the bridge.
    pub fn out(&mut self, conn: Uuid, out: Option<Out>) -> Option<Down> {
        match out {
            Some(Out::Text(text)) => Some(Down::OcppFrame { conn, text }),
            // A password that no longer held as the connection went live: refused, so that the bridge forgets it.
            Some(Out::Close(1008, reason)) if reason == crate::ocpp::WRONG_PASSWORD => {
                self.conns.remove(&conn);
                Some(Down::OcppRefused {
                    conn,
                    reason: reason.into(),
                })
            }
            Some(Out::Close(code, reason)) => {
                self.conns.remove(&conn);
                Some(Down::OcppClose {
                    conn,
                    code,
                    reason: reason.into(),
                })
            }
            None => {
                metrics::gauge!("edge_ocpp_relayed_open").decrement(1.0);
                // A loop that ended on its own (the bridge did not close it) tells the bridge.
                self.conns.remove(&conn).map(|_| Down::OcppClose {
                    conn,
                    code: 1011,
                    reason: "the connection ended".into(),
                })
            }
        }
    }
}

/// A charger message as the bridge journaled it (`Event::Ocpp`).
pub(crate) struct Journaled {
    pub charge_point_id: String,
    pub subprotocol: String,
    pub action: String,
    pub payload: Value,
    pub transaction_id: Option<String>,
}

/// Applies a charger message the bridge journaled while its tunnel was down, in `tx` (which records the event):
/// inside a savepoint, so that a message the central system refuses is recorded and acknowledged (the bridge must
/// not send it for ever) with no effect. An internal failure fails the event (not acknowledged; sent again).
pub(crate) async fn replay(
    tx: &mut TenantTx,
    bridge: &Bridge,
    settings: &OcppSettings,
    message: Journaled,
) -> Result<(), switchyard_core::Error> {
    let Journaled {
        charge_point_id: identity,
        subprotocol,
        action,
        payload,
        transaction_id,
    } = message;
    let (identity, action) = (identity.as_str(), action.as_str());
    let outcome = |o: &'static str| {
        metrics::counter!("edge_ocpp_journaled_total", "outcome" => o).increment(1);
    };
    let (Some(charger_id), Some(protocol)) = (
        charging::at_venue(tx, bridge.venue_id, identity).await?,
        Protocol::parse(&subprotocol),
    ) else {
        tracing::info!(bridge.id = %bridge.id, charge_point_id = identity,
            "journaled OCPP message for no charger of this venue: recorded, not applied");
        outcome("unknown_charger");
        return Ok(());
    };
    let point = tx.savepoint().await?;
    let applied = ocpp::apply_journaled(
        tx,
        charger_id,
        protocol,
        settings,
        action,
        payload,
        transaction_id,
    )
    .await;
    match applied {
        Ok(_) => {
            tx.release(point).await?;
            outcome("applied");
            Ok(())
        }
        Err(fail) => {
            // Its writes, and the live events and wake-ups they emitted, are undone.
            tx.rollback_to(point).await?;
            match fail {
                Fail::Core(e) if e.hidden_cause().is_some() => Err(e),
                other => {
                    let refused = other.into_rpc();
                    tracing::info!(bridge.id = %bridge.id, charge_point_id = identity, action,
                        reason = %refused.description, "journaled OCPP message refused: recorded, not applied");
                    outcome("refused");
                    Ok(())
                }
            }
        }
    }
}
