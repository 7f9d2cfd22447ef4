//! The tunnel protocol between a venue's `edge-bridge` and the cloud (`/edge/v1/tunnel`), one JSON object per
//! WebSocket text frame: `{"v": 1, "type": "...", ...}`.
//!
//! - The bridge opens with [`Up::Hello`]; the cloud answers [`Down::Welcome`] and the venue's [`Down::Schedule`].
//! - Upstream events are numbered by the bridge (`seq`, from 1, never reused) and kept in its on-disk journal until
//!   the cloud acknowledges them ([`Down::Ack`], cumulative); the cloud drops a `(bridge, seq)` it has seen.
//! - Downstream commands carry ids; the bridge applies each once and answers [`Up::CommandDone`].
//! - Both sides send heartbeats; [`Down::HeartbeatAck`] carries the server time, from which the bridge measures
//!   its clock offset (NTP-style: offset = server − (sent + received) / 2).
//! - A frame the other side cannot use gets [`Down::Error`] with a code; the connection stays usable.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// The largest frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// What a bridge of this crate announces in its [`Up::Hello`]: it gathers [`Down::SchedulePart`]s. The cloud sends a
/// schedule larger than a frame only to a bridge that announces this; it refuses an older bridge
/// (`upgrade_required`) rather than leave it on a schedule it cannot have.
pub const FEATURE_SCHEDULE_PARTS: &str = "schedule_parts";
/// What a cloud that numbers its errors announces in its [`Down::Welcome`]: an [`Down::Error`] that answers an
/// event carries that event's `seq`, and one without a `seq` answers no event. A bridge counts its events awaiting an
/// answer by it; with an older cloud it counts every error as an answer.
pub const FEATURE_NUMBERED_ERRORS: &str = "numbered_errors";

/// A frame: the version and one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u16,
    #[serde(flatten)]
    pub message: T,
}

impl<T> Envelope<T> {
    pub fn new(message: T) -> Self {
        Self {
            v: VERSION,
            message,
        }
    }
}

/// Bridge → cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Up {
    Hello {
        /// The bridge's software version.
        version: String,
        sent_at: DateTime<Utc>,
        /// The protocol features the bridge takes beyond version 1's first release ([`FEATURE_SCHEDULE_PARTS`]);
        /// absent from older bridges.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    Event {
        seq: u64,
        occurred_at: DateTime<Utc>,
        station_id: Option<Uuid>,
        event: Event,
    },
    CommandDone {
        id: Uuid,
        ok: bool,
        detail: Option<String>,
    },
    Heartbeat {
        sent_at: DateTime<Utc>,
        /// The bridge's measured clock offset (cloud − bridge), once it has one; its events are stamped by the
        /// cloud's clock.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_offset_ms: Option<i64>,
    },
    /// A charger connected to the bridge's local OCPP server (`/ocpp/{charge_point_id}`): the cloud checks the
    /// identity and password (the bridge does not judge them) and answers [`Down::OcppOpened`] or
    /// [`Down::OcppRefused`]. `conn` names this connection in the frames that follow.
    OcppOpen {
        conn: Uuid,
        charge_point_id: String,
        /// `ocpp1.6` or `ocpp2.0.1`.
        subprotocol: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    /// One OCPP-J text frame from the charger, relayed live (never journaled).
    OcppFrame { conn: Uuid, text: String },
    /// The charger's local socket closed.
    OcppClosed { conn: Uuid },
}

impl Up {
    /// The hello of a bridge of this crate, sent now: `version` and every feature this crate takes.
    pub fn hello(version: impl Into<String>) -> Self {
        Up::Hello {
            version: version.into(),
            sent_at: Utc::now(),
            features: vec![FEATURE_SCHEDULE_PARTS.into()],
        }
    }
}

/// Something that happened at the venue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A station's device was switched: `reason` `schedule` (the cloud's plan) or `planned_end` (the bridge's own
    /// timer ended the session, whether or not the cloud could be reached).
    Switched {
        on: bool,
        reason: String,
        /// The session that was running (as the schedule named it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<Uuid>,
    },
    /// What the device reports (power, energy, reachability): on first sight, and at each reading that differs
    /// from the last one reported.
    DeviceState {
        reachable: bool,
        on: Option<bool>,
        power_w: Option<f64>,
        energy_wh: Option<i64>,
    },
    /// A PC agent's state: connected or not, and its last heartbeat.
    AgentState {
        connected: bool,
        #[serde(default)]
        session_id: Option<Uuid>,
        #[serde(default)]
        remaining_seconds: Option<i64>,
        #[serde(default)]
        cpu_usage: Option<f64>,
        #[serde(default)]
        ram_usage: Option<f64>,
    },
    /// A transaction message a charger sent while the tunnel was down (OCPP `StartTransaction`,
    /// `StopTransaction`, `MeterValues`, `TransactionEvent`), answered by the bridge as a local controller and
    /// kept in the journal, so the cloud applies it once, in order, when the tunnel returns.
    Ocpp {
        charge_point_id: String,
        /// `ocpp1.6` or `ocpp2.0.1`.
        subprotocol: String,
        action: String,
        payload: serde_json::Value,
        /// The transaction id the bridge handed out (1.6 `StartTransaction`): the cloud keeps it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transaction_id: Option<String>,
    },
    /// A powerbank cabinet answered an `eject` command (`request_id` is the command's id): `ok`, or not and why
    /// (`jammed`, `empty`, `mismatch`, `motor_error`, `timeout` ...). The asset is the label the cabinet read.
    CabinetEjected {
        request_id: Uuid,
        ok: bool,
        slot: i32,
        #[serde(default)]
        asset: Option<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A powerbank was put into a slot of a cabinet.
    CabinetReturned { slot: i32, asset: String },
    /// Every slot of a cabinet as it reports them (on a change).
    CabinetState { slots: Vec<SlotState> },
}

/// One slot of a powerbank cabinet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotState {
    pub slot: i32,
    /// The powerbank's label, if the slot holds one.
    #[serde(default)]
    pub asset: Option<String>,
    /// Its charge, 0–100 %.
    #[serde(default)]
    pub battery: Option<i32>,
    #[serde(default)]
    pub charging: bool,
    /// What is wrong with the slot (`jammed` ...), if anything.
    #[serde(default)]
    pub fault: Option<String>,
}

/// Cloud → bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Down {
    Welcome {
        bridge_id: Uuid,
        venue_id: Uuid,
        server_time: DateTime<Utc>,
        /// The highest event sequence the cloud has recorded from this bridge.
        last_seq: u64,
        /// The protocol features the cloud offers beyond version 1's first release ([`FEATURE_NUMBERED_ERRORS`]);
        /// none from an older cloud.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
        /// The most frames a second the cloud takes from this tunnel before it closes it as a flood: the bridge
        /// sends its journal well below it. None from an older cloud.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_frames_per_sec: Option<u32>,
    },
    /// The desired state of every controlled station of the venue.
    Schedule { stations: Vec<StationPlan> },
    /// A schedule too large for one frame, sent in parts (see [`schedule_frames`]): the bridge gathers the parts
    /// and applies them as one schedule at the part marked `last`. A tunnel that drops between parts applies none.
    SchedulePart {
        stations: Vec<StationPlan>,
        last: bool,
    },
    Command {
        id: Uuid,
        station_id: Uuid,
        command: String,
        payload: serde_json::Value,
    },
    /// Every event up to `seq` is recorded.
    Ack { seq: u64 },
    HeartbeatAck {
        sent_at: DateTime<Utc>,
        server_time: DateTime<Utc>,
    },
    Error {
        code: String,
        message: String,
        /// The event this refuses (from a cloud that announces [`FEATURE_NUMBERED_ERRORS`]); none when it answers
        /// another frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The charger of [`Up::OcppOpen`] is this tenant's, at this venue, with that password: its frames flow.
    OcppOpened { conn: Uuid },
    /// It is not (unknown here, wrong password, another venue's): the bridge closes the charger's socket.
    OcppRefused { conn: Uuid, reason: String },
    /// One OCPP-J text frame for the charger.
    OcppFrame { conn: Uuid, text: String },
    /// The central system ended the charger's connection (replaced by a newer one, …).
    OcppClose {
        conn: Uuid,
        code: u16,
        reason: String,
    },
}

/// One station's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StationPlan {
    pub station_id: Uuid,
    pub name: String,
    /// `shelly`, `tasmota`, `mikrotik`, `agent`, `ocpp`, `cabinet`, `manual`.
    pub control: String,
    /// The control's settings (host, generation, topic …; never a secret).
    pub settings: serde_json::Value,
    /// On now?
    pub on: bool,
    /// Switch off at this time, whether or not the cloud can be reached then.
    pub until: Option<DateTime<Utc>>,
    /// The running session (a PC agent shows it).
    #[serde(default)]
    pub session_id: Option<Uuid>,
}

/// The frames that carry a venue's schedule: one [`Down::Schedule`] when it fits in a frame, otherwise
/// [`Down::SchedulePart`]s, each within [`MAX_FRAME_BYTES`]. (A station's plan is far smaller than a frame: its
/// settings are at most 4 KiB.)
pub fn schedule_frames(stations: Vec<StationPlan>) -> Vec<Down> {
    // Room for the envelope (`{"v":1,"type":"schedule_part","last":false,"stations":[]}`) and the commas.
    const BUDGET: usize = MAX_FRAME_BYTES - 256;
    let sizes: Vec<usize> = stations
        .iter()
        .map(|plan| serde_json::to_string(plan).map_or(0, |s| s.len()) + 1)
        .collect();
    if sizes.iter().sum::<usize>() <= BUDGET {
        return vec![Down::Schedule { stations }];
    }
    let mut parts = vec![];
    let (mut part, mut size) = (vec![], 0);
    for (plan, len) in stations.into_iter().zip(sizes) {
        if size + len > BUDGET && !part.is_empty() {
            parts.push(std::mem::take(&mut part));
            size = 0;
        }
        size += len;
        part.push(plan);
    }
    parts.push(part);
    let count = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, stations)| Down::SchedulePart {
            stations,
            last: i + 1 == count,
        })
        .collect()
}

/// Parses a frame, checking its version.
pub fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(format!("the frame is larger than {MAX_FRAME_BYTES} bytes"));
    }
    let envelope: Envelope<T> =
        serde_json::from_str(text).map_err(|e| format!("not a valid frame: {e}"))?;
    if envelope.v != VERSION {
        return Err(format!(
            "protocol version {} is not supported; this side speaks {VERSION}",
            envelope.v
        ));
    }
    Ok(envelope.message)
}

/// Serialises a message as a frame.
pub fn encode<T: Serialize>(message: T) -> String {
    serde_json::to_string(&Envelope::new(message)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_other_versions_are_refused() {
        let up = Up::Event {
            seq: 7,
            occurred_at: "2026-01-01T00:00:00Z".parse().unwrap_or_default(),
            station_id: None,
            event: Event::Switched {
                on: false,
                reason: "schedule".into(),
                session_id: None,
            },
        };
        let text = encode(&up);
        assert!(
            text.contains(r#""v":1"#) && text.contains(r#""type":"event""#),
            "{text}"
        );
        assert_eq!(decode::<Up>(&text), Ok(up));
        let other = text.replace(r#""v":1"#, r#""v":9"#);
        assert!(decode::<Up>(&other).is_err());
        assert!(decode::<Up>("{").is_err());
        assert!(decode::<Up>(&"x".repeat(MAX_FRAME_BYTES + 1)).is_err());
    }

    #[test]
    fn a_hello_announces_schedule_parts_and_an_older_one_without_features_still_reads() {
        let text = encode(Up::hello("1.2.3"));
        assert!(text.contains(r#""features":["schedule_parts"]"#), "{text}");
        let older = r#"{"v":1,"type":"hello","version":"0.0.9","sent_at":"2026-01-01T00:00:00Z"}"#;
        match decode::<Up>(older) {
            Ok(Up::Hello {
                version, features, ..
            }) => assert_eq!((version.as_str(), features.len()), ("0.0.9", 0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_older_clouds_welcome_and_errors_read_without_features_or_seq() {
        let welcome = r#"{"v":1,"type":"welcome","bridge_id":"00000000-0000-0000-0000-000000000000","venue_id":"00000000-0000-0000-0000-000000000000","server_time":"2026-01-01T00:00:00Z","last_seq":7}"#;
        match decode::<Down>(welcome) {
            Ok(Down::Welcome {
                last_seq, features, ..
            }) => assert_eq!((last_seq, features.len()), (7, 0)),
            other => panic!("{other:?}"),
        }
        let error = r#"{"v":1,"type":"error","code":"bad_sequence","message":"seq starts at 1"}"#;
        match decode::<Down>(error) {
            Ok(Down::Error { code, seq, .. }) => {
                assert_eq!((code.as_str(), seq), ("bad_sequence", None))
            }
            other => panic!("{other:?}"),
        }
        let numbered = encode(Down::Error {
            code: "internal".into(),
            message: "send it again".into(),
            seq: Some(12),
        });
        assert!(numbered.contains(r#""seq":12"#), "{numbered}");
        let unnumbered = encode(Down::Error {
            code: "unknown_command".into(),
            message: "no such command".into(),
            seq: None,
        });
        assert!(!unnumbered.contains("seq"), "{unnumbered}");
    }

    #[test]
    fn relayed_charger_frames_and_journaled_charger_messages_round_trip() {
        let conn = Uuid::nil();
        let open = Up::OcppOpen {
            conn,
            charge_point_id: "CP-1".into(),
            subprotocol: "ocpp1.6".into(),
            password: None,
        };
        let text = encode(&open);
        assert!(
            text.contains(r#""type":"ocpp_open""#) && !text.contains("password"),
            "{text}"
        );
        assert_eq!(decode::<Up>(&text), Ok(open));
        let down = Down::OcppClose {
            conn,
            code: 1000,
            reason: "replaced".into(),
        };
        assert_eq!(decode::<Down>(&encode(&down)), Ok(down));
        let event = Up::Event {
            seq: 3,
            occurred_at: "2026-01-01T00:00:00Z".parse().unwrap_or_default(),
            station_id: None,
            event: Event::Ocpp {
                charge_point_id: "CP-1".into(),
                subprotocol: "ocpp1.6".into(),
                action: "StartTransaction".into(),
                payload: serde_json::json!({"connectorId": 1}),
                transaction_id: Some("1500000001".into()),
            },
        };
        let text = encode(&event);
        assert!(text.contains(r#""kind":"ocpp""#), "{text}");
        assert_eq!(decode::<Up>(&text), Ok(event));
    }

    #[test]
    fn a_schedule_too_large_for_a_frame_goes_in_parts_that_each_fit() {
        let plan = |i: u128| StationPlan {
            station_id: Uuid::from_u128(i),
            name: format!("PC-{i}"),
            control: "tasmota".into(),
            settings: serde_json::json!({"topic": format!("plug{i}"), "note": "x".repeat(4000)}),
            on: i.is_multiple_of(2),
            until: None,
            session_id: None,
        };
        let small: Vec<_> = (0..3).map(plan).collect();
        assert_eq!(
            schedule_frames(small.clone()),
            vec![Down::Schedule { stations: small }]
        );

        let large: Vec<_> = (0..40).map(plan).collect();
        let frames = schedule_frames(large.clone());
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let mut gathered = vec![];
        for (i, frame) in frames.iter().enumerate() {
            let text = encode(frame);
            assert!(
                text.len() <= MAX_FRAME_BYTES,
                "part {i}: {} bytes",
                text.len()
            );
            let Ok(Down::SchedulePart { stations, last }) = decode::<Down>(&text) else {
                panic!("part {i} is a schedule part");
            };
            assert_eq!(last, i + 1 == frames.len());
            gathered.extend(stations);
        }
        assert_eq!(gathered, large);
    }
}
