//! Device drivers. A station's control settings (from the cloud's schedule) choose one:
//!
//! - `shelly` with `generation` 1: HTTP `GET /relay/0?turn=on|off[&timer=<s>]`, `GET /status`;
//! - `shelly` with `generation` 2: RPC `GET /rpc/Switch.Set?id=0&on=true|false[&toggle_after=<s>]`,
//!   `GET /rpc/Switch.GetStatus?id=0`;
//! - `tasmota` with `topic`: MQTT `cmnd/<topic>/POWER` `ON|OFF` after `cmnd/<topic>/PulseTime` (the backup
//!   timer), state from `stat/<topic>/POWER` and `tele/<topic>/SENSOR` (needs `BRIDGE_MQTT_URL`);
//! - `mikrotik` with `host` and `mac` or `interface`: the RouterOS API (see [`crate::routeros`]); the login comes
//!   from the bridge's credentials file under the station's `credentials_ref`.
//!
//! Switching on for a planned time also arms the device's own backup timer (`timer` / `toggle_after` / `PulseTime`), so the
//! plug switches itself off at the end even if the bridge dies. Other controls are not driven yet: the bridge
//! reports them and leaves them alone.

use std::time::Duration;

use serde_json::Value;
use switchyard_edge_protocol::StationPlan;

use crate::mqtt::Mqtt;

/// What drivers talk through.
pub struct Io {
    pub http: reqwest::Client,
    pub mqtt: Option<Mqtt>,
    /// Device logins by `credentials_ref` (the bridge's `BRIDGE_CREDENTIALS` file), never sent by the cloud.
    pub credentials: std::collections::HashMap<String, Login>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Login {
    pub username: String,
    #[serde(default)]
    pub password: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Driver {
    ShellyGen1 {
        base: String,
    },
    ShellyGen2 {
        base: String,
    },
    Tasmota {
        topic: String,
    },
    Mikrotik {
        host: String,
        /// Block this MAC address with a drop rule ...
        mac: Option<String>,
        /// ... or disable this interface.
        interface: Option<String>,
        credentials_ref: Option<String>,
        /// The rules' comment: `switchyard:<station id>`.
        comment: String,
    },
    /// A control this bridge does not drive (yet).
    Unsupported {
        control: String,
    },
}

/// What a device says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    pub on: bool,
    pub power_w: Option<f64>,
    pub energy_wh: Option<i64>,
}

impl Driver {
    pub fn for_plan(plan: &StationPlan) -> Self {
        let host = plan.settings.get("host").and_then(Value::as_str);
        match (plan.control.as_str(), host) {
            ("shelly", Some(host)) => {
                let base = format!("http://{host}");
                match plan.settings.get("generation").and_then(Value::as_i64) {
                    Some(2) => Self::ShellyGen2 { base },
                    _ => Self::ShellyGen1 { base },
                }
            }
            ("mikrotik", Some(host)) => Self::Mikrotik {
                host: host.to_owned(),
                mac: plan
                    .settings
                    .get("mac")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                interface: plan
                    .settings
                    .get("interface")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                credentials_ref: plan
                    .settings
                    .get("credentials_ref")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                comment: format!("switchyard:{}", plan.station_id),
            },
            ("tasmota", _) => match plan.settings.get("topic").and_then(Value::as_str) {
                Some(topic) => Self::Tasmota {
                    topic: topic.to_owned(),
                },
                None => Self::Unsupported {
                    control: "tasmota".into(),
                },
            },
            (control, _) => Self::Unsupported {
                control: control.to_owned(),
            },
        }
    }

    pub fn drives(&self) -> bool {
        !matches!(self, Self::Unsupported { .. })
    }

    /// Switches the device; `backup` arms its own timer to flip back after that long.
    pub async fn switch(&self, io: &Io, on: bool, backup: Option<Duration>) -> anyhow::Result<()> {
        let http = &io.http;
        let secs = backup.map(|d| d.as_secs().max(1));
        let url = match self {
            Self::ShellyGen1 { base } => {
                let turn = if on { "on" } else { "off" };
                match secs {
                    Some(s) if on => format!("{base}/relay/0?turn={turn}&timer={s}"),
                    _ => format!("{base}/relay/0?turn={turn}"),
                }
            }
            Self::ShellyGen2 { base } => match secs {
                Some(s) if on => format!("{base}/rpc/Switch.Set?id=0&on={on}&toggle_after={s}"),
                _ => format!("{base}/rpc/Switch.Set?id=0&on={on}"),
            },
            Self::Tasmota { topic } => return mqtt(io)?.switch(topic, on, backup).await,
            Self::Mikrotik { .. } => return self.router_switch(io, on).await,
            Self::Unsupported { .. } => return Ok(()),
        };
        http.get(&url).send().await?.error_for_status()?;
        Ok(())
    }

    pub async fn status(&self, io: &Io) -> anyhow::Result<Option<DeviceStatus>> {
        let http = &io.http;
        Ok(match self {
            Self::Mikrotik { .. } => Some(DeviceStatus {
                on: self.router_allows(io).await?,
                power_w: None,
                energy_wh: None,
            }),
            Self::Tasmota { topic } => {
                let seen = mqtt(io)?.status(topic).await?;
                Some(DeviceStatus {
                    on: seen.on.unwrap_or(false),
                    power_w: seen.power_w,
                    energy_wh: seen.energy_wh,
                })
            }
            Self::ShellyGen1 { base } => {
                let body: Value = http
                    .get(format!("{base}/status"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Some(DeviceStatus {
                    on: body["relays"][0]["ison"].as_bool().unwrap_or(false),
                    power_w: body["meters"][0]["power"].as_f64(),
                    // Gen1 counts watt-minutes.
                    energy_wh: body["meters"][0]["total"].as_i64().map(|wmin| wmin / 60),
                })
            }
            Self::ShellyGen2 { base } => {
                let body: Value = http
                    .get(format!("{base}/rpc/Switch.GetStatus?id=0"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                Some(DeviceStatus {
                    on: body["output"].as_bool().unwrap_or(false),
                    power_w: body["apower"].as_f64(),
                    energy_wh: body["aenergy"]["total"]
                        .as_f64()
                        .map(|wh| wh.round() as i64),
                })
            }
            Self::Unsupported { .. } => None,
        })
    }
}

fn mqtt(io: &Io) -> anyhow::Result<&Mqtt> {
    io.mqtt.as_ref().ok_or_else(|| {
        anyhow::anyhow!("a Tasmota plug needs BRIDGE_MQTT_URL (the venue's MQTT broker)")
    })
}

impl Driver {
    async fn router(&self, io: &Io) -> anyhow::Result<crate::routeros::RouterOs> {
        let Self::Mikrotik {
            host,
            credentials_ref,
            ..
        } = self
        else {
            anyhow::bail!("not a MikroTik station");
        };
        let login = credentials_ref
            .as_ref()
            .and_then(|r| io.credentials.get(r))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no login for credentials_ref {credentials_ref:?} in the bridge's BRIDGE_CREDENTIALS file"
                )
            })?;
        crate::routeros::RouterOs::connect(host, &login.username, &login.password).await
    }

    /// Whether the router lets the station's traffic through now.
    async fn router_allows(&self, io: &Io) -> anyhow::Result<bool> {
        let Self::Mikrotik {
            mac,
            interface,
            comment,
            ..
        } = self
        else {
            return Ok(false);
        };
        let mut router = self.router(io).await?;
        if let Some(interface) = interface {
            let rows = router
                .call(&["/interface/print", &format!("?name={interface}")])
                .await?;
            return Ok(rows
                .first()
                .is_some_and(|r| r.get("disabled").map(String::as_str) != Some("true")));
        }
        let _ = mac;
        let rules = router
            .call(&["/ip/firewall/filter/print", &format!("?comment={comment}")])
            .await?;
        Ok(rules.is_empty())
    }

    async fn router_switch(&self, io: &Io, on: bool) -> anyhow::Result<()> {
        let Self::Mikrotik {
            mac,
            interface,
            comment,
            ..
        } = self
        else {
            return Ok(());
        };
        let mut router = self.router(io).await?;
        if let Some(interface) = interface {
            let disabled = if on { "no" } else { "yes" };
            router
                .call(&[
                    "/interface/set",
                    &format!("=numbers={interface}"),
                    &format!("=disabled={disabled}"),
                ])
                .await?;
            return Ok(());
        }
        let mac = mac
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("a MikroTik station needs `mac` or `interface`"))?;
        let rules = router
            .call(&["/ip/firewall/filter/print", &format!("?comment={comment}")])
            .await?;
        if on {
            for rule in rules {
                if let Some(id) = rule.get(".id") {
                    router
                        .call(&["/ip/firewall/filter/remove", &format!("=.id={id}")])
                        .await?;
                }
            }
        } else if rules.is_empty() {
            router
                .call(&[
                    "/ip/firewall/filter/add",
                    "=chain=forward",
                    &format!("=src-mac-address={mac}"),
                    "=action=drop",
                    &format!("=comment={comment}"),
                ])
                .await?;
        }
        Ok(())
    }
}
