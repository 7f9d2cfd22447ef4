//! The venue's MQTT broker, for Tasmota plugs: commands go to `cmnd/<topic>/POWER` (and `PulseTime`, the plug's own
//! backup timer), state comes back on `stat/<topic>/POWER` and telemetry on `tele/<topic>/SENSOR`. Powerbank
//! cabinets (the open cabinet protocol, [`crate::cabinets`]) talk on `cabinet/<id>/...`: what they say is handed
//! on as [`CabinetMessage`]s, and each cabinet's last `state` is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{broadcast, Notify};

/// Something a cabinet published: `cabinet/<cabinet>/<what>` (`evt/ejected`, `evt/returned`, `state`).
#[derive(Debug, Clone)]
pub struct CabinetMessage {
    pub cabinet: String,
    pub what: String,
    pub payload: serde_json::Value,
}

/// What a Tasmota plug last said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    pub on: Option<bool>,
    pub power_w: Option<f64>,
    pub energy_wh: Option<i64>,
}

/// The most topics (plugs, cabinets) the bridge remembers what they last said, per kind.
const MAX_TOPICS: usize = 4096;

/// What each topic last said, for at most `cap` topics: a new topic past the cap takes the place of the one heard
/// from longest ago (a device that still talks is back at its next report), so something on the venue's broker
/// publishing under ever new names cannot grow the bridge's memory.
struct Recent<V> {
    cap: usize,
    heard: u64,
    entries: HashMap<String, (u64, V)>,
}

impl<V: Default> Recent<V> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            heard: 0,
            entries: HashMap::new(),
        }
    }

    /// The topic's entry, marked as heard now (made, in the place of the stalest, if new).
    fn heard(&mut self, topic: &str) -> &mut V {
        self.heard += 1;
        if !self.entries.contains_key(topic) && self.entries.len() >= self.cap {
            let stalest = self
                .entries
                .iter()
                .min_by_key(|(_, (heard, _))| *heard)
                .map(|(topic, _)| topic.clone());
            if let Some(stalest) = stalest {
                self.entries.remove(&stalest);
            }
        }
        let entry = self
            .entries
            .entry(topic.to_owned())
            .or_insert_with(|| (0, V::default()));
        entry.0 = self.heard;
        &mut entry.1
    }

    fn get(&self, topic: &str) -> Option<&V> {
        self.entries.get(topic).map(|(_, v)| v)
    }
}

#[derive(Clone)]
pub struct Mqtt {
    client: AsyncClient,
    seen: Arc<Mutex<Recent<Seen>>>,
    changed: Arc<Notify>,
    cabinets: broadcast::Sender<CabinetMessage>,
    /// Each cabinet's last `state` (retained on the broker, so known soon after connecting).
    cabinet_states: Arc<Mutex<Recent<serde_json::Value>>>,
    /// Each cabinet's last `status`: online or not.
    cabinet_statuses: Arc<Mutex<Recent<bool>>>,
    /// Whether the broker has taken the connection (its `CONNACK`) and it has not failed since.
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl Mqtt {
    /// Connects to `mqtt://host:port` and keeps the connection (and its subscriptions) up in the background.
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
            anyhow::anyhow!("BRIDGE_MQTT_URL must look like mqtt://host:1883, not {url:?}")
        })?;
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
        let port: u16 = port
            .trim_end_matches('/')
            .parse()
            .map_err(|_| anyhow::anyhow!("BRIDGE_MQTT_URL has a bad port: {url:?}"))?;
        let id = format!("switchyard-bridge-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(id, host, port);
        options.set_keep_alive(Duration::from_secs(15));
        let (client, mut events) = AsyncClient::new(options, 64);
        let seen = Arc::new(Mutex::new(Recent::<Seen>::new(MAX_TOPICS)));
        let changed = Arc::new(Notify::new());
        let (subscriber, store, notify) = (client.clone(), seen.clone(), changed.clone());
        let (cabinets, _) = broadcast::channel(1024);
        let cabinet_states = Arc::new(Mutex::new(Recent::<serde_json::Value>::new(MAX_TOPICS)));
        let cabinet_statuses = Arc::new(Mutex::new(Recent::<bool>::new(MAX_TOPICS)));
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (to_cabinets, states, statuses, up) = (
            cabinets.clone(),
            cabinet_states.clone(),
            cabinet_statuses.clone(),
            connected.clone(),
        );
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        up.store(true, std::sync::atomic::Ordering::SeqCst);
                        for filter in [
                            "stat/+/POWER",
                            "tele/+/SENSOR",
                            "tele/+/STATE",
                            "cabinet/+/evt/+",
                            "cabinet/+/state",
                            "cabinet/+/status",
                        ] {
                            let _ = subscriber.subscribe(filter, QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with("cabinet/") => {
                        let mut parts = p.topic.splitn(3, '/').skip(1);
                        let (Some(cabinet), Some(what)) = (parts.next(), parts.next()) else {
                            continue;
                        };
                        let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        else {
                            tracing::warn!(topic = %p.topic, "a cabinet sent something that is not JSON");
                            continue;
                        };
                        if what == "state" {
                            *states
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .heard(cabinet) = payload.clone();
                        }
                        if what == "status" {
                            let Some(online) = crate::cabinets::status_of(&payload) else {
                                tracing::warn!(topic = %p.topic, "a cabinet status without a true or false `online`");
                                continue;
                            };
                            *statuses
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .heard(cabinet) = online;
                        }
                        let _ = to_cabinets.send(CabinetMessage {
                            cabinet: cabinet.to_owned(),
                            what: what.to_owned(),
                            payload,
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut parts = p.topic.split('/');
                        let (Some(prefix), Some(topic), Some(kind)) =
                            (parts.next(), parts.next(), parts.next())
                        else {
                            continue;
                        };
                        let text = String::from_utf8_lossy(&p.payload).to_string();
                        let mut seen = store.lock().unwrap_or_else(|e| e.into_inner());
                        let entry = seen.heard(topic);
                        match (prefix, kind) {
                            ("stat", "POWER") => entry.on = Some(text.eq_ignore_ascii_case("ON")),
                            ("tele", "STATE") => {
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                                    entry.on = v["POWER"]
                                        .as_str()
                                        .map(|s| s.eq_ignore_ascii_case("ON"))
                                        .or(entry.on);
                                }
                            }
                            ("tele", "SENSOR") => {
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                                    entry.power_w = v["ENERGY"]["Power"].as_f64().or(entry.power_w);
                                    entry.energy_wh = v["ENERGY"]["Total"]
                                        .as_f64()
                                        .map(|kwh| (kwh * 1000.0).round() as i64)
                                        .or(entry.energy_wh);
                                }
                            }
                            _ => {}
                        }
                        drop(seen);
                        notify.notify_waiters();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        up.store(false, std::sync::atomic::Ordering::SeqCst);
                        tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self {
            client,
            seen,
            changed,
            cabinets,
            cabinet_states,
            cabinet_statuses,
            connected,
        })
    }

    /// Whether the broker connection is up. A message published while it is down waits in the client and goes out
    /// when it is back, which a command with a deadline must not count on.
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What cabinets publish from now on.
    pub fn cabinet_messages(&self) -> broadcast::Receiver<CabinetMessage> {
        self.cabinets.subscribe()
    }

    /// The cabinet's last `state`, if it has published one.
    pub fn cabinet_state(&self, cabinet: &str) -> Option<serde_json::Value> {
        self.cabinet_states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cabinet)
            .cloned()
    }

    /// Whether the cabinet last said it is online (its `status`), if it has said.
    pub fn cabinet_status(&self, cabinet: &str) -> Option<bool> {
        self.cabinet_statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(cabinet)
            .copied()
    }

    /// Publishes a JSON message (QoS 1, not retained).
    pub async fn publish_json(
        &self,
        topic: String,
        body: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, body.to_string())
            .await?;
        Ok(())
    }

    /// Switches the plug; `backup` sets its `PulseTime` first, so it flips back by itself after that long.
    pub async fn switch(
        &self,
        topic: &str,
        on: bool,
        backup: Option<Duration>,
    ) -> anyhow::Result<()> {
        // PulseTime: 1–111 are tenths of a second, 112–64900 are seconds + 100.
        let pulse = match backup {
            Some(d) if on => (d.as_secs().clamp(12, 64_800) + 100).to_string(),
            _ => "0".to_owned(),
        };
        self.client
            .publish(
                format!("cmnd/{topic}/PulseTime"),
                QoS::AtLeastOnce,
                false,
                pulse,
            )
            .await?;
        let power = if on { "ON" } else { "OFF" };
        self.client
            .publish(
                format!("cmnd/{topic}/POWER"),
                QoS::AtLeastOnce,
                false,
                power,
            )
            .await?;
        Ok(())
    }

    /// The plug's state: asks it (an empty `POWER` command makes Tasmota report) and waits up to 3 s.
    pub async fn status(&self, topic: &str) -> anyhow::Result<Seen> {
        let waiting = self.changed.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        self.client
            .publish(format!("cmnd/{topic}/POWER"), QoS::AtLeastOnce, false, "")
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(seen) = self
                .seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(topic)
                .filter(|s| s.on.is_some())
                .cloned()
            {
                return Ok(seen);
            }
            tokio::select! {
                _ = &mut waiting => {
                    waiting.set(self.changed.notified());
                    waiting.as_mut().enable();
                }
                _ = tokio::time::sleep_until(deadline) => anyhow::bail!("the plug {topic} did not answer over MQTT"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_past_the_cap_take_the_place_of_the_stalest_and_a_talking_plug_stays() {
        let mut seen = Recent::<Seen>::new(3);
        seen.heard("plug1").on = Some(true);
        seen.heard("plug2").on = Some(false);
        // A flood of made-up names, while plug1 keeps reporting.
        for i in 0..1000 {
            seen.heard(&format!("noise{i}"));
            seen.heard("plug1").power_w = Some(f64::from(i));
        }
        assert_eq!(seen.entries.len(), 3);
        let plug1 = seen.get("plug1").cloned().unwrap_or_default();
        assert_eq!((plug1.on, plug1.power_w), (Some(true), Some(999.0)));
        // plug2 went quiet and gave its place up; it is back at its next report.
        assert!(seen.get("plug2").is_none());
        seen.heard("plug2").on = Some(true);
        assert_eq!(seen.get("plug2").and_then(|s| s.on), Some(true));
        assert_eq!(seen.entries.len(), 3);
    }
}
