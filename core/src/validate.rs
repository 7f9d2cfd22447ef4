//! Input checks shared by every domain module. Each error names the field as the API spells it.

use crate::error::{Error, Result};

/// Trims `value` and checks its length in characters is within `min..=max`.
pub fn text<'a>(field: &'static str, value: &'a str, min: usize, max: usize) -> Result<&'a str> {
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
    }
}
