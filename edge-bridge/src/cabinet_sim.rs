//! `edge-bridge cabinet-sim`: powerbank cabinets on an MQTT broker, speaking the open cabinet protocol
//! ([`crate::cabinets`]) as a real cabinet would, for the demo and the tests.
//!
//! Each cabinet has numbered slots holding powerbanks (a label and a charge). It answers `cmd/eject`: the slot's
//! powerbank leaves, or the eject fails (`jammed` for a jammed slot, `empty`, `mismatch` when the slot holds another
//! powerbank than the one named, `no_such_slot`, `expired` for a request received past its `expires_at`, or
//! `motor_error` at the configured failure rate); a request id it answered before gets the same answer again and
//! ejects nothing. It publishes its `state` (retained) on every
//! change, and charges its powerbanks by 1 % every `charge_every`. Two more topics stand in for a person at the
//! cabinet: `cabinet/<id>/sim/insert` `{"slot", "asset", "battery"}` puts a powerbank into a slot (reported as
//! `evt/returned`), and `cabinet/<id>/sim/jam` `{"slot", "jammed"}` jams or frees a slot. Every action is printed
//! as a JSON line. Each cabinet holds one connection of its own to the broker, as a real cabinet's controller does,
//! for its commands, its state and its `status`: `{"online": true}` once connected, `{"online": false}` as its last
//! will. When the simulator stops without a goodbye (killed, dropped), the broker tells the bridge every cabinet is
//! gone; a cabinet whose link is down is gone, and not answering, at once.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// One simulated cabinet as configured: `<id>:<slots>[:<label>@<battery>,...]` (powerbanks fill slots from 1; `-`
/// leaves a slot empty; a battery left out is 100).
#[derive(Debug, Clone, PartialEq)]
pub struct CabinetSpec {
    pub id: String,
    pub slots: usize,
    /// By slot from 1: the powerbank's label and charge, or none.
    pub powerbanks: Vec<Option<(String, i32)>>,
}

impl std::str::FromStr for CabinetSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut parts = text.splitn(3, ':');
        let id = parts.next().unwrap_or_default().trim().to_owned();
        anyhow::ensure!(
            crate::cabinets::is_valid_id(&id),
            "a cabinet id is 1–64 characters without `/`, `+` or `#`: {text:?}"
        );
        let slots: usize = parts
            .next()
            .context("write a cabinet as <id>:<slots>[:<label>@<battery>,...]")?
            .trim()
            .parse()
            .context("the number of slots must be a whole number")?;
        anyhow::ensure!((1..=64).contains(&slots), "a cabinet has 1 to 64 slots");
        let powerbanks = parts
            .next()
            .map(|list| {
                list.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| {
                        if p.trim() == "-" {
                            return Ok(None);
                        }
                        let (label, battery) = p.split_once('@').unwrap_or((p, "100"));
                        let battery: i32 = battery
                            .trim()
                            .parse()
                            .with_context(|| format!("a battery level must be 0–100: {p:?}"))?;
                        Ok(Some((label.trim().to_owned(), battery.clamp(0, 100))))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        anyhow::ensure!(
            powerbanks.len() <= slots,
            "cabinet {id} has {slots} slots but {} are listed",
            powerbanks.len()
        );
        Ok(Self {
            id,
            slots,
            powerbanks,
        })
    }
}

/// The simulator's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// `mqtt://host:port`
    pub mqtt_url: String,
    pub cabinets: Vec<CabinetSpec>,
    /// Slots jammed from the start: (cabinet id, slot).
    pub jammed: Vec<(String, i32)>,
    /// The share of ejects that fail with `motor_error` (0.0–1.0).
    pub fail_rate: f64,
    /// Every this long, each powerbank below 100 % gains 1 %; none: never.
    pub charge_every: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Slot {
    powerbank: Option<(String, i32)>,
    jammed: bool,
}

struct Cabinet {
    slots: Vec<Slot>,
    /// Answers by request id: a repeated request gets the same answer.
    answered: HashMap<Uuid, Value>,
}

impl Cabinet {
    fn state(&self) -> Value {
        let slots: Vec<Value> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "slot": i + 1,
                    "asset": s.powerbank.as_ref().map(|(label, _)| label),
                    "battery": s.powerbank.as_ref().map(|(_, battery)| battery),
                    "charging": s.powerbank.as_ref().is_some_and(|(_, b)| *b < 100),
                    "fault": s.jammed.then_some("jammed"),
                })
            })
            .collect();
        json!({ "slots": slots })
    }

    fn slot_mut(&mut self, body: &Value) -> Option<(i32, &mut Slot)> {
        let n = body.get("slot").and_then(Value::as_i64)?;
        let index = usize::try_from(n).ok()?.checked_sub(1)?;
        let slot = self.slots.get_mut(index)?;
        Some((i32::try_from(n).ok()?, slot))
    }

    /// Answers an eject request received at `now`.
    fn eject(&mut self, body: &Value, fail_rate: f64, now: chrono::DateTime<chrono::Utc>) -> Value {
        let request = body.get("request_id").cloned().unwrap_or(Value::Null);
        let key: Option<Uuid> = request.as_str().and_then(|s| s.parse().ok());
        if let Some(answer) = key.and_then(|k| self.answered.get(&k)) {
            return answer.clone();
        }
        let named = body.get("asset").and_then(Value::as_str).map(str::to_owned);
        let slot_number = body.get("slot").cloned().unwrap_or(Value::Null);
        let expired = body
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|deadline| now > deadline);
        let answer = match self.slot_mut(body) {
            None => json!({"request_id": request, "ok": false, "slot": slot_number, "asset": named,
                           "reason": "no_such_slot"}),
            // Held up on the way (the broker or the link was down): the bridge has given up on it, and the cloud
            // voided the rental. Ejecting now would hand a powerbank to nobody.
            Some((n, _)) if expired => {
                json!({"request_id": request, "ok": false, "slot": n, "asset": named,
                                               "reason": "expired"})
            }
            Some((n, slot)) => {
                let held = slot.powerbank.as_ref().map(|(label, _)| label.clone());
                let reason = if slot.jammed {
                    Some("jammed")
                } else if held.is_none() {
                    Some("empty")
                } else if named.is_some() && named != held {
                    Some("mismatch")
                } else if fail_rate > 0.0 && rand::random::<f64>() < fail_rate {
                    Some("motor_error")
                } else {
                    None
                };
                if reason.is_none() {
                    slot.powerbank = None;
                }
                json!({"request_id": request, "ok": reason.is_none(), "slot": n, "asset": held, "reason": reason})
            }
        };
        if let Some(key) = key {
            self.answered.insert(key, answer.clone());
        }
        answer
    }

    /// A powerbank put into a slot: the `evt/returned` to publish, or why not.
    fn insert(&mut self, body: &Value) -> Result<Value, &'static str> {
        let asset = body
            .get("asset")
            .and_then(Value::as_str)
            .filter(|a| !a.trim().is_empty())
            .ok_or("an insert needs an asset")?
            .to_owned();
        let battery = body
            .get("battery")
            .and_then(Value::as_i64)
            .map_or(50, |b| b.clamp(0, 100) as i32);
        let (n, slot) = self.slot_mut(body).ok_or("no such slot")?;
        if slot.powerbank.is_some() {
            return Err("the slot is taken");
        }
        slot.powerbank = Some((asset.clone(), battery));
        Ok(json!({ "slot": n, "asset": asset }))
    }

    /// One charging step; true if anything changed.
    fn charge(&mut self) -> bool {
        let mut changed = false;
        for (_, battery) in self.slots.iter_mut().filter_map(|s| s.powerbank.as_mut()) {
            if *battery < 100 {
                *battery += 1;
                changed = true;
            }
        }
        changed
    }
}

fn print(cabinet: &str, what: &str, body: &Value) {
    println!(
        "{}",
        json!({ "cabinet": cabinet, "event": what, "body": body })
    );
}

/// How each cabinet behaves, the same for all of them.
#[derive(Clone, Copy)]
struct Behaviour {
    fail_rate: f64,
    charge_every: Option<Duration>,
}

/// One cabinet's controller: its own connection to the broker, as a real cabinet has. With a stable client id, as
/// the protocol asks (a cabinet back before the broker noticed its old connection died takes that connection over,
/// whose will then comes before the new `online`, never after it), `status` `{"online": true}` once connected and
/// `{"online": false}` as its last will, its commands and its state on the same connection. `ready` is told once it
/// has subscribed and published its state.
async fn run_cabinet(
    id: String,
    mut cabinet: Cabinet,
    (host, port): (String, u16),
    behaviour: Behaviour,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let status = crate::cabinets::status_topic(&id);
    let mut options = MqttOptions::new(format!("switchyard-cabinet-{id}"), host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_last_will(LastWill::new(
        status.clone(),
        json!({"online": false}).to_string(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut events) = AsyncClient::new(options, 64);
    let mut ready = Some(ready);
    let mut waiting_subacks = 0usize;
    // Subscriptions to send on this connection: one the client's queue had no room for is tried again next turn.
    let mut to_subscribe: Vec<String> = Vec::new();
    // While the broker is away nothing is queued for it (the client's queue would fill up with stale states); the
    // whole state is published again once subscribed.
    let mut connected = false;
    let mut charging = behaviour.charge_every.map(|every| {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let state_topic = format!("cabinet/{id}/state");
    loop {
        let next = tokio::select! {
            event = events.poll() => Some(event),
            _ = async {
                match charging.as_mut() {
                    Some(tick) => { tick.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        let mut publish: Vec<(String, Value, bool)> = Vec::new();
        let mut subscribed = false;
        match next {
            None => {
                if cabinet.charge() && connected {
                    publish.push((state_topic.clone(), cabinet.state(), true));
                }
            }
            Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                connected = true;
                waiting_subacks = 0;
                to_subscribe = vec![format!("cabinet/{id}/cmd/+"), format!("cabinet/{id}/sim/+")];
            }
            Some(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    // Refused (the broker's access rules): such a cabinet would never hear a command, so it does
                    // not say it is there, and the simulator is not reported ready.
                    tracing::error!(cabinet = %id, "cabinet simulator: the broker refused a subscription");
                    continue;
                }
                waiting_subacks = waiting_subacks.saturating_sub(1);
                if waiting_subacks == 0 && to_subscribe.is_empty() {
                    subscribed = true;
                    // Subscribed (again): the cabinet says how it is, then that it is there.
                    print(&id, "state", &cabinet.state());
                    publish.push((state_topic.clone(), cabinet.state(), true));
                    publish.push((status.clone(), json!({"online": true}), true));
                }
            }
            Some(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let what = p.topic.splitn(3, '/').nth(2).unwrap_or_default();
                let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                match what {
                    "cmd/eject" => {
                        let answer = cabinet.eject(&body, behaviour.fail_rate, chrono::Utc::now());
                        print(&id, "ejected", &answer);
                        publish.push((format!("cabinet/{id}/evt/ejected"), answer, false));
                    }
                    "sim/insert" => match cabinet.insert(&body) {
                        Ok(returned) => {
                            print(&id, "returned", &returned);
                            publish.push((format!("cabinet/{id}/evt/returned"), returned, false));
                        }
                        Err(why) => print(
                            &id,
                            "insert_refused",
                            &json!({ "why": why, "request": body }),
                        ),
                    },
                    "sim/jam" => {
                        let jammed = body.get("jammed").and_then(Value::as_bool).unwrap_or(true);
                        match cabinet.slot_mut(&body) {
                            Some((n, slot)) => {
                                slot.jammed = jammed;
                                print(&id, "jam", &json!({ "slot": n, "jammed": jammed }));
                            }
                            None => print(&id, "jam_refused", &json!({ "why": "no such slot" })),
                        }
                    }
                    _ => continue,
                }
                publish.push((state_topic.clone(), cabinet.state(), true));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                connected = false;
                tracing::warn!(error = %e, cabinet = %id, "cabinet simulator: MQTT connection lost; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if connected {
            to_subscribe.retain(|filter| match client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                Ok(()) => {
                    waiting_subacks += 1;
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, cabinet = %id, "cabinet simulator: cannot subscribe yet");
                    true
                }
            });
        }
        // Never waiting here: this task also drives the connection, which alone empties the client's queue (a full
        // queue, while the broker is away, drops the message; a reconnection publishes the whole state again).
        for (topic, body, retain) in publish {
            if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, retain, body.to_string()) {
                tracing::warn!(error = %e, cabinet = %id, "cabinet simulator: cannot publish");
            }
        }
        if subscribed {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        }
    }
}

/// A running simulator; dropping it stops it.
pub struct Sim {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sim {
    /// Runs until stopped or the process ends; it returns only with the error that ended it (a cabinet that
    /// panicked).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        (&mut self.task)
            .await
            .context("the cabinet simulator died")?;
        anyhow::bail!("the cabinet simulator stopped")
    }
}

/// Starts the simulator; returns once every cabinet has subscribed to its topics and published its state, so a test
/// may publish to it right away.
pub async fn start(config: SimConfig) -> anyhow::Result<Sim> {
    let rest = config.mqtt_url.strip_prefix("mqtt://").with_context(|| {
        format!(
            "the MQTT URL must look like mqtt://host:1883, not {:?}",
            config.mqtt_url
        )
    })?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let port: u16 = port
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("bad port in {:?}", config.mqtt_url))?;
    anyhow::ensure!(!config.cabinets.is_empty(), "simulate at least one cabinet");
    let mut cabinets: HashMap<String, Cabinet> = HashMap::new();
    for spec in &config.cabinets {
        let mut slots = vec![
            Slot {
                powerbank: None,
                jammed: false
            };
            spec.slots
        ];
        for (slot, powerbank) in slots.iter_mut().zip(&spec.powerbanks) {
            slot.powerbank = powerbank.clone();
        }
        cabinets.insert(
            spec.id.clone(),
            Cabinet {
                slots,
                answered: HashMap::new(),
            },
        );
    }
    for (id, n) in &config.jammed {
        let slot = usize::try_from(*n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| cabinets.get_mut(id)?.slots.get_mut(i))
            .with_context(|| format!("--jammed {id}:{n}: no such cabinet or slot"))?;
        slot.jammed = true;
    }
    let behaviour = Behaviour {
        fail_rate: config.fail_rate.clamp(0.0, 1.0),
        charge_every: config.charge_every,
    };
    // Dropped with the task: the cabinets' sockets close without a goodbye, and the broker publishes their wills.
    let mut running = tokio::task::JoinSet::new();
    let mut ready = Vec::new();
    for (id, cabinet) in cabinets {
        let (told, heard) = tokio::sync::oneshot::channel::<()>();
        ready.push(heard);
        running.spawn(run_cabinet(
            id,
            cabinet,
            (host.to_owned(), port),
            behaviour,
            told,
        ));
    }
    // Built before waiting: should the cabinets not get ready, dropping it stops them all.
    let sim = Sim {
        task: tokio::spawn(async move {
            // Each cabinet runs until the simulator stops; one that ends (a panic) ends the simulator, and `wait` says so.
            if let Some(Err(e)) = running.join_next().await {
                if let Ok(reason) = e.try_into_panic() {
                    std::panic::resume_unwind(reason);
                }
            }
        }),
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::future::try_join_all(ready),
    )
    .await
    .context(
        "the cabinet simulator's cabinets did not all subscribe within 20 s: is the MQTT broker reachable, and does it \
         let them subscribe to cabinet/<id>/cmd/+ and cabinet/<id>/sim/+?",
    )?
    .context("the cabinet simulator stopped (a cabinet ended: see its panic above)")?;
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cabinet_spec_lists_its_slots() -> anyhow::Result<()> {
        let spec: CabinetSpec = "hub-1:4:pb-001@80,-,pb-003".parse()?;
        assert_eq!(
            spec,
            CabinetSpec {
                id: "hub-1".into(),
                slots: 4,
                powerbanks: vec![
                    Some(("pb-001".into(), 80)),
                    None,
                    Some(("pb-003".into(), 100))
                ],
            }
        );
        assert_eq!("hub-2:2".parse::<CabinetSpec>()?.powerbanks, vec![]);
        for bad in ["a/b:2", "hub:0", "hub:1:x,y", "hub", "hub:2:pb@lots"] {
            assert!(bad.parse::<CabinetSpec>().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn an_eject_is_answered_once_per_request_and_a_jammed_slot_fails() {
        let mut cabinet = Cabinet {
            slots: vec![
                Slot {
                    powerbank: Some(("pb-1".into(), 90)),
                    jammed: false,
                },
                Slot {
                    powerbank: Some(("pb-2".into(), 90)),
                    jammed: true,
                },
            ],
            answered: HashMap::new(),
        };
        let now = chrono::Utc::now();
        // Received after its deadline: nothing leaves the slot, and the answer says why.
        let late = Uuid::new_v4();
        let past = (now - chrono::Duration::seconds(1)).to_rfc3339();
        let expired = cabinet.eject(
            &json!({"request_id": late, "slot": 1, "asset": "pb-1", "expires_at": past}),
            0.0,
            now,
        );
        assert_eq!(
            expired,
            json!({"request_id": late, "ok": false, "slot": 1, "asset": "pb-1", "reason": "expired"})
        );
        assert!(cabinet.slots[0].powerbank.is_some());
        let request = Uuid::new_v4();
        let soon = (now + chrono::Duration::seconds(15)).to_rfc3339();
        let first = cabinet.eject(
            &json!({"request_id": request, "slot": 1, "asset": "pb-1", "expires_at": soon}),
            0.0,
            now,
        );
        assert_eq!(first["ok"], true);
        assert!(cabinet.slots[0].powerbank.is_none());
        // Retried: the same answer, nothing ejected again (the slot is empty now, which would fail).
        assert_eq!(
            cabinet.eject(&json!({"request_id": request, "slot": 1}), 0.0, now),
            first
        );
        let jammed = cabinet.eject(&json!({"request_id": Uuid::new_v4(), "slot": 2}), 0.0, now);
        assert_eq!(
            (jammed["ok"].clone(), jammed["reason"].clone()),
            (json!(false), json!("jammed"))
        );
        assert!(cabinet.slots[1].powerbank.is_some());
        assert_eq!(
            cabinet.insert(&json!({"slot": 1, "asset": "pb-9"})),
            Ok(json!({"slot": 1, "asset": "pb-9"}))
        );
        assert!(cabinet
            .insert(&json!({"slot": 1, "asset": "pb-8"}))
            .is_err());
    }
}
