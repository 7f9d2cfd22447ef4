//! Input checks shared by every domain module. Each error names the field as the API spells it.

use crate::error::{Error, Result};

/// The most rows any list without its own `limit` argument returns (members, tariffs, venues, stations, bridges):
/// a tenant far beyond the product's scale still gets a bounded answer.
pub const LIST_CAP: i64 = 1000;

/// A character no text input may hold: control characters (NUL, escape, C1 ...), except tab and line breaks.
/// Postgres cannot store NUL in text at all, and the others only ever arrive by mistake or malice.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// The message for a field that holds a forbidden character.
pub const CONTROL_CHARACTER_MESSAGE: &str =
    "must not contain control characters (such as NUL); only tabs and line breaks are allowed";

/// Trims `value` and checks its length in characters is within `min..=max` and that it holds no control
/// characters.
pub fn text<'a>(field: &'static str, value: &'a str, min: usize, max: usize) -> Result<&'a str> {
    if value.chars().any(is_forbidden_char) {
        return Err(Error::validation(field, CONTROL_CHARACTER_MESSAGE));
    }
    let value = value.trim();
    let len = value.chars().count();
    if len < min || len > max {
        let message = if min == 0 {
            format!("must be at most {max} characters")
        } else {
            format!("must be {min} to {max} characters")
        };
        return Err(Error::validation(field, message));
    }
    Ok(value)
}

/// As [`text`], for a value that must be one line: a name that goes into a mail header (an organization's, in every
/// message's sender) is refused with a line break in it.
pub fn line<'a>(field: &'static str, value: &'a str, min: usize, max: usize) -> Result<&'a str> {
    if value.trim().contains(['\n', '\r']) {
        return Err(Error::validation(
            field,
            "must be one line, without line breaks",
        ));
    }
    text(field, value, min, max)
}

/// Replaces every NUL in `value`'s texts and keys with U+FFFD; true when there was one. Postgres cannot store a NUL
/// in `jsonb` (or `text`), and what a device reports is kept with the character marked rather than lost or refused
/// for ever (an event refused for it would be sent again on every tunnel; a charger's answer would end its
/// connection each time).
pub fn without_nul(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |found, v| without_nul(v) | found),
        Value::Object(map) => {
            let mut found = false;
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v))
                    .collect();
                found = true;
            }
            map.values_mut()
                .fold(found, |found, v| without_nul(v) | found)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_counts_characters_not_bytes() {
        assert_eq!(text("name", "  Café  ", 1, 4).ok(), Some("Café"));
        assert!(matches!(
            text("name", "   ", 1, 4),
            Err(Error::Validation { field: "name", .. })
        ));
        assert!(text("name", "abcde", 1, 4).is_err());
        assert_eq!(text("address", "", 0, 4).ok(), Some(""));
        assert!(text("name", "a\0b", 1, 4).is_err());
        assert_eq!(text("note", "a\nb", 1, 4).ok(), Some("a\nb"));
    }
}
