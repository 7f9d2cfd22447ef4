//! A Tasmota plug simulated over a real MQTT broker: it answers `cmnd/<topic>/POWER` (`ON`, `OFF`, or empty for a
//! status report) on `stat/<topic>/POWER`, and records `cmnd/<topic>/PulseTime`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Default)]
struct State {
    on: bool,
    pulse_times: Vec<u64>,
    powers: Vec<String>,
}

pub struct TasmotaSim {
    pub topic: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TasmotaSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TasmotaSim {
    /// Connects to `mqtt://host:port` as plug `topic`; returns once it listens.
    pub async fn start(url: &str, topic: &str) -> Self {
        let rest = url.trim_start_matches("mqtt://");
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
        let port: u16 = port.parse().unwrap_or(1883);
        let mut options = MqttOptions::new(format!("sim-{topic}"), host, port);
        options.set_keep_alive(Duration::from_secs(15));
        let (client, mut events) = AsyncClient::new(options, 64);
        let state: Arc<Mutex<State>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let (store, topic_owned) = (state.clone(), topic.to_owned());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client
                            .subscribe(format!("cmnd/{topic_owned}/+"), QoS::AtLeastOnce)
                            .await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let command = p.topic.rsplit('/').next().unwrap_or_default().to_owned();
                        let payload = String::from_utf8_lossy(&p.payload).to_string();
                        let report = {
                            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                            match command.as_str() {
                                "POWER" => {
                                    match payload.to_ascii_uppercase().as_str() {
                                        "ON" | "1" => s.on = true,
                                        "OFF" | "0" => s.on = false,
                                        _ => {}
                                    }
                                    if !payload.is_empty() {
                                        s.powers.push(payload.to_ascii_uppercase());
                                    }
                                    Some(if s.on { "ON" } else { "OFF" })
                                }
                                "PulseTime" => {
                                    if let Ok(v) = payload.parse() {
                                        s.pulse_times.push(v);
                                    }
                                    None
                                }
                                _ => None,
                            }
                        };
                        if let Some(power) = report {
                            let _ = client
                                .publish(
                                    format!("stat/{topic_owned}/POWER"),
                                    QoS::AtLeastOnce,
                                    false,
                                    power,
                                )
                                .await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        Self {
            topic: topic.to_owned(),
            state,
            task,
        }
    }

    pub fn is_on(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).on
    }

    /// Every `ON`/`OFF` command received, in order.
    pub fn powers(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .powers
            .clone()
    }

    pub fn pulse_times(&self) -> Vec<u64> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pulse_times
            .clone()
    }
}
