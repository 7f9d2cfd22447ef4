//! Powerbank cabinets: the open cabinet protocol, JSON over the venue's MQTT broker (see the manual).
//!
//! - bridge → cabinet `cabinet/<id>/cmd/eject` `{"request_id", "slot", "asset", "expires_at"}` (QoS 1): eject the
//!   powerbank in that slot. `request_id` is the cloud's command id; a cabinet answers a request id it has answered
//!   before with the same answer, and ejects nothing again. A request received after `expires_at` (RFC 3339, half
//!   the bridge's wait for the answer) is answered `{"ok": false, "reason": "expired"}` and ejects nothing: it was
//!   held up on the way, the bridge has reported the eject failed and the cloud voided the rental.
//! - cabinet → bridge `cabinet/<id>/evt/ejected` `{"request_id", "ok", "slot", "asset", "reason"}`.
//! - cabinet → bridge `cabinet/<id>/evt/returned` `{"slot", "asset"}`: a powerbank was put into a slot.
//! - cabinet → bridge `cabinet/<id>/state` (retained) `{"slots": [{"slot", "asset", "battery", "charging",
//!   "fault"}]}`: every slot, published on every change.
//! - cabinet → bridge `cabinet/<id>/status` (retained) `{"online": true}` once connected to the broker; the cabinet
//!   sets its MQTT last will to `{"online": false}` (retained) on the same topic, so the broker says so when the
//!   cabinet is gone (power cut, network lost). The bridge reports it as the station's device state (`reachable`).
//!
//! A station with control `cabinet` names its cabinet in `control_settings.cabinet_id`; `eject_timeout_secs`
//! (default 30) is how long the bridge waits for an answer before it reports the eject failed (`timeout`).

use std::time::Duration;

use serde_json::Value;
use switchyard_edge_protocol::{Event, SlotState, StationPlan};

/// The default wait for a cabinet's answer to an eject.
pub const EJECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The cabinet a station's plan names, if it is a cabinet station.
pub fn cabinet_id(plan: &StationPlan) -> Option<&str> {
    (plan.control == "cabinet")
        .then(|| plan.settings.get("cabinet_id").and_then(Value::as_str))
        .flatten()
        .filter(|id| is_valid_id(id))
}

/// How long to wait for the cabinet's answer to an eject.
pub fn eject_timeout(plan: &StationPlan) -> Duration {
    plan.settings
        .get("eject_timeout_secs")
        .and_then(Value::as_u64)
        .map_or(EJECT_TIMEOUT, |s| Duration::from_secs(s.clamp(1, 600)))
}

/// A cabinet id is one MQTT topic level: no `/`, `+` or `#`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.contains(['/', '+', '#'])
}

pub fn eject_topic(cabinet: &str) -> String {
    format!("cabinet/{cabinet}/cmd/eject")
}

pub fn status_topic(cabinet: &str) -> String {
    format!("cabinet/{cabinet}/status")
}

fn slot(body: &Value) -> Option<i32> {
    body.get("slot")
        .and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

fn text(body: &Value, key: &str) -> Option<String> {
    body.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The event a cabinet's `evt/<what>` message reports, if it is one of the protocol's.
pub fn event_of(what: &str, body: &Value) -> Option<Event> {
    match what {
        "evt/ejected" => Some(Event::CabinetEjected {
            request_id: body.get("request_id")?.as_str()?.parse().ok()?,
            ok: body.get("ok")?.as_bool()?,
            slot: slot(body)?,
            asset: text(body, "asset"),
            reason: text(body, "reason"),
        }),
        "evt/returned" => Some(Event::CabinetReturned {
            slot: slot(body)?,
            asset: text(body, "asset")?,
        }),
        _ => None,
    }
}

/// Whether a cabinet's `status` says it is online.
pub fn status_of(body: &Value) -> Option<bool> {
    body.get("online")?.as_bool()
}

/// What the bridge reports of a cabinet's `status`: whether its station's device can be reached.
pub fn status_event(online: bool) -> Event {
    Event::DeviceState {
        reachable: online,
        on: None,
        power_w: None,
        energy_wh: None,
    }
}

/// The event a cabinet's `state` reports.
pub fn state_event(body: &Value) -> Option<Event> {
    let slots = body
        .get("slots")?
        .as_array()?
        .iter()
        .filter_map(|s| {
            Some(SlotState {
                slot: slot(s)?,
                asset: text(s, "asset"),
                battery: s
                    .get("battery")
                    .and_then(Value::as_i64)
                    .map(|b| b.clamp(0, 100) as i32),
                charging: s.get("charging").and_then(Value::as_bool).unwrap_or(false),
                fault: text(s, "fault"),
            })
        })
        .collect();
    Some(Event::CabinetState { slots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cabinet_messages_become_events_and_bad_ones_are_dropped() {
        let id = uuid::Uuid::new_v4();
        let ejected = json!({"request_id": id, "ok": false, "slot": 3, "asset": "pb-003", "reason": "jammed"});
        assert_eq!(
            event_of("evt/ejected", &ejected),
            Some(Event::CabinetEjected {
                request_id: id,
                ok: false,
                slot: 3,
                asset: Some("pb-003".into()),
                reason: Some("jammed".into()),
            })
        );
        assert_eq!(
            event_of("evt/returned", &json!({"slot": 1, "asset": "pb-9"})),
            Some(Event::CabinetReturned {
                slot: 1,
                asset: "pb-9".into()
            })
        );
        assert_eq!(event_of("evt/returned", &json!({"slot": 1})), None);
        assert_eq!(event_of("evt/ejected", &json!({"ok": true})), None);
        assert_eq!(event_of("evt/other", &json!({})), None);
        assert_eq!(status_of(&json!({"online": false})), Some(false));
        assert_eq!(status_of(&json!({"online": "yes"})), None);
        assert_eq!(event_of("status", &json!({"online": true})), None);
        let state = json!({"slots": [{"slot": 1, "asset": "pb-1", "battery": 140, "charging": true},
                                     {"slot": 2, "asset": null, "fault": "jammed"}, {"nonsense": 1}]});
        assert_eq!(
            state_event(&state),
            Some(Event::CabinetState {
                slots: vec![
                    SlotState {
                        slot: 1,
                        asset: Some("pb-1".into()),
                        battery: Some(100),
                        charging: true,
                        fault: None
                    },
                    SlotState {
                        slot: 2,
                        asset: None,
                        battery: None,
                        charging: false,
                        fault: Some("jammed".into())
                    },
                ]
            })
        );
        assert!(!is_valid_id("a/b") && !is_valid_id("+") && is_valid_id("hub-1"));
    }
}
