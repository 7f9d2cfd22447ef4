//! OCPP-J's RPC framing: `[2, id, action, payload]` (CALL), `[3, id, payload]` (CALLRESULT), `[4, id, code,
//! description, details]` (CALLERROR), and the error codes of both versions.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use switchyard_core::charging::Protocol;

/// A frame as received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call {
        id: String,
        action: String,
        payload: Value,
    },
    Result {
        id: String,
        payload: Value,
    },
    Error {
        id: String,
        code: String,
        description: String,
    },
}

/// Why a CALL could not be answered with a result: its CALLERROR.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub kind: ErrorKind,
    pub description: String,
}

impl RpcError {
    pub fn new(kind: ErrorKind, description: impl Into<String>) -> Self {
        Self {
            kind,
            description: description.into(),
        }
    }
}

/// The error codes, named once; each version spells some of them its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotImplemented,
    NotSupported,
    InternalError,
    ProtocolError,
    SecurityError,
    /// 1.6 `FormationViolation`, 2.0.1 `FormatViolation`.
    Formation,
    PropertyConstraintViolation,
    /// 1.6 `OccurenceConstraintViolation` (sic), 2.0.1 `OccurrenceConstraintViolation`.
    Occurrence,
    TypeConstraintViolation,
    GenericError,
    /// 2.0.1 only (1.6: `ProtocolError`): the message could not be parsed at all.
    RpcFramework,
}

impl ErrorKind {
    pub fn code(self, protocol: Protocol) -> &'static str {
        let v16 = protocol == Protocol::V16;
        match self {
            Self::NotImplemented => "NotImplemented",
            Self::NotSupported => "NotSupported",
            Self::InternalError => "InternalError",
            Self::ProtocolError => "ProtocolError",
            Self::SecurityError => "SecurityError",
            Self::Formation if v16 => "FormationViolation",
            Self::Formation => "FormatViolation",
            Self::PropertyConstraintViolation => "PropertyConstraintViolation",
            Self::Occurrence if v16 => "OccurenceConstraintViolation",
            Self::Occurrence => "OccurrenceConstraintViolation",
            Self::TypeConstraintViolation => "TypeConstraintViolation",
            Self::GenericError => "GenericError",
            Self::RpcFramework if v16 => "ProtocolError",
            Self::RpcFramework => "RpcFrameworkError",
        }
    }
}

/// Parses a text frame. A frame that is not an OCPP-J message gets the error to answer with, and the message id
/// when one could be read (else `-1`).
pub fn parse(text: &str) -> Result<Frame, (String, RpcError)> {
    let value: Value = serde_json::from_str(text).map_err(|_| {
        (
            "-1".to_owned(),
            RpcError::new(ErrorKind::RpcFramework, "the message is not valid JSON"),
        )
    })?;
    let Value::Array(mut items) = value else {
        return Err((
            "-1".into(),
            RpcError::new(ErrorKind::RpcFramework, "an OCPP-J message is a JSON array"),
        ));
    };
    let id = match items.get(1) {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 36 => id.clone(),
        _ => {
            return Err((
                "-1".into(),
                RpcError::new(
                    ErrorKind::RpcFramework,
                    "the message id (second element) must be a string of 1 to 36 characters",
                ),
            ))
        }
    };
    let bad = |what: &str| {
        Err((
            id.clone(),
            RpcError::new(ErrorKind::RpcFramework, what.to_owned()),
        ))
    };
    // The payload is moved out of the message, not copied.
    match items.first().and_then(Value::as_u64) {
        Some(2) if items.len() == 4 => match (items.pop(), items.pop()) {
            (Some(payload @ Value::Object(_)), Some(Value::String(action))) => Ok(Frame::Call {
                id,
                action,
                payload,
            }),
            (Some(_), Some(Value::String(_))) => Err((
                id.clone(),
                RpcError::new(
                    ErrorKind::Formation,
                    "a CALL's payload must be a JSON object",
                ),
            )),
            _ => bad("a CALL is [2, id, action, payload]"),
        },
        Some(2) => bad("a CALL is [2, id, action, payload]"),
        Some(3) if items.len() == 3 => Ok(Frame::Result {
            payload: items.pop().unwrap_or(Value::Null),
            id,
        }),
        Some(3) => bad("a CALLRESULT is [3, id, payload]"),
        Some(4) => Ok(Frame::Error {
            id,
            code: items
                .get(2)
                .and_then(Value::as_str)
                .unwrap_or("GenericError")
                .to_owned(),
            description: items
                .get(3)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }),
        _ => bad("the message type (first element) must be 2, 3 or 4"),
    }
}

pub fn call(id: &str, action: &str, payload: &Value) -> String {
    json!([2, id, action, payload]).to_string()
}

pub fn result(id: &str, payload: &Value) -> String {
    json!([3, id, payload]).to_string()
}

pub fn error(id: &str, protocol: Protocol, error: &RpcError) -> String {
    json!([4, id, error.kind.code(protocol), error.description, {}]).to_string()
}

/// Reads a CALL's payload into its type; a payload that does not fit gets the matching constraint error.
pub fn decode<T: DeserializeOwned>(payload: Value) -> Result<T, RpcError> {
    serde_json::from_value(payload).map_err(|e| {
        let text = e.to_string();
        let kind = if text.starts_with("missing field") {
            ErrorKind::Occurrence
        } else if text.starts_with("invalid type") {
            ErrorKind::TypeConstraintViolation
        } else if text.starts_with("unknown variant")
            || text.starts_with("invalid value")
            || text.starts_with("premature end")
            || text.contains("input contains invalid characters")
            || text.contains("trailing input")
        {
            ErrorKind::PropertyConstraintViolation
        } else {
            ErrorKind::Formation
        };
        RpcError::new(kind, text)
    })
}

pub use switchyard_core::sessions::MAX_REGISTER_WH;

/// A starting meter register (`meterStart`): at most [`MAX_REGISTER_WH`]; a negative one counts as 0.
pub fn register(field: &str, wh: i64) -> Result<i64, RpcError> {
    if wh <= MAX_REGISTER_WH {
        Ok(wh.max(0))
    } else {
        Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            format!("{field} must be at most {MAX_REGISTER_WH} Wh"),
        ))
    }
}

/// A string property of at most `max` characters (OCPP's CiString limits) and no control characters but tabs and line
/// breaks (which a vendor's free text may hold; NUL cannot even be stored).
pub fn limit(field: &str, value: &str, max: usize) -> Result<(), RpcError> {
    if value.chars().count() > max {
        Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            format!("{field} is longer than {max} characters"),
        ))
    } else if value
        .chars()
        .any(switchyard_core::validate::is_forbidden_char)
    {
        Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            format!("{field} holds a control character"),
        ))
    } else {
        Ok(())
    }
}

/// A string that names something (a tag, a transaction): as [`limit`], not empty, and no control character at all.
pub fn identifier(field: &str, value: &str, max: usize) -> Result<(), RpcError> {
    if value.is_empty() {
        return Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(RpcError::new(
            ErrorKind::PropertyConstraintViolation,
            format!("{field} holds a control character"),
        ));
    }
    limit(field, value, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_and_bad_frames_say_why() {
        assert_eq!(
            parse(r#"[2,"a1","Heartbeat",{}]"#),
            Ok(Frame::Call {
                id: "a1".into(),
                action: "Heartbeat".into(),
                payload: json!({})
            })
        );
        assert_eq!(
            parse(r#"[3,"a1",{"status":"Accepted"}]"#),
            Ok(Frame::Result {
                id: "a1".into(),
                payload: json!({"status": "Accepted"})
            })
        );
        let Err((id, e)) = parse("not json") else {
            panic!("parsed garbage")
        };
        assert_eq!((id.as_str(), e.kind), ("-1", ErrorKind::RpcFramework));
        let Err((id, e)) = parse(r#"[2,"x","Heartbeat",[]]"#) else {
            panic!("parsed an array payload")
        };
        assert_eq!((id.as_str(), e.kind), ("x", ErrorKind::Formation));
        let Err((id, _)) = parse(r#"[7,"y"]"#) else {
            panic!("parsed type 7")
        };
        assert_eq!(id, "y");
    }

    #[test]
    fn codes_follow_the_version() {
        assert_eq!(
            ErrorKind::Formation.code(Protocol::V16),
            "FormationViolation"
        );
        assert_eq!(ErrorKind::Formation.code(Protocol::V201), "FormatViolation");
        assert_eq!(
            ErrorKind::Occurrence.code(Protocol::V16),
            "OccurenceConstraintViolation"
        );
    }

    #[test]
    fn decode_errors_name_the_constraint() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            n: i32,
        }
        assert_eq!(
            decode::<P>(json!({})).map_err(|e| e.kind).err(),
            Some(ErrorKind::Occurrence)
        );
        assert_eq!(
            decode::<P>(json!({"n": "x"})).map_err(|e| e.kind).err(),
            Some(ErrorKind::TypeConstraintViolation)
        );
    }
}
