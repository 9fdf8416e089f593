//! Checks of single fields a decision makes before it looks at the cart.

use crate::error::DomainError;

pub(super) fn check_quantity(field: &'static str, got: u64, max: u32) -> Result<(), DomainError> {
    if got == 0 || got > u64::from(max) {
        return Err(DomainError::QuantityOutOfRange { field, got, max });
    }
    Ok(())
}

pub(super) fn non_empty<T>(items: &[T], field: &'static str) -> Result<(), DomainError> {
    if items.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// An ISO 3166-1 alpha-2 country code, normalised to lower case (`se`, `no`, `dk`).
pub fn country(c: &str) -> Result<String, DomainError> {
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(c.to_ascii_lowercase())
    } else {
        Err(DomainError::invalid(
            "country",
            format!("must be a two-letter country code such as \"se\", got {c:?}"),
        ))
    }
}

/// The deepest nesting of objects and arrays subscription data may have.
pub const MAX_SUBSCRIPTION_DATA_DEPTH: usize = 16;

/// Levels of objects and arrays in `v` (a scalar is 0, `{}` is 1).
pub(super) fn json_depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}
