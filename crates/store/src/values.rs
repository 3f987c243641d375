//! How stored values become domain values and back: ids and numbers parsed with a
//! [`StoreError::Corrupt`] naming the value when a row holds something this version cannot read.
//! A leaf of the store: the SQL store and both backends use it.

use etter_core::ids::InvalidId;
use etter_core::lifecycle::RunState;

use super::StoreError;

/// A stored `value` of `what` that is not readable, for the reason `why`.
pub(super) fn corrupt(what: &str, value: &str, why: &str) -> StoreError {
    StoreError::Corrupt { what: format!("{what} {value:?}: {why}"), source: None }
}

/// A stored `value` of `what` that a parser refused, with the parser's error as the source.
pub(super) fn unparsable(
    what: &str,
    value: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Corrupt { what: format!("{what} {value:?}"), source: Some(Box::new(source)) }
}

/// Parses a stored identifier.
pub(super) fn id<T>(value: String, parse: fn(&str) -> Result<T, InvalidId>) -> Result<T, StoreError> {
    parse(&value).map_err(|e| unparsable("stored id", &value, e))
}

pub(super) fn opt_id<T>(
    value: Option<String>,
    parse: fn(&str) -> Result<T, InvalidId>,
) -> Result<Option<T>, StoreError> {
    value.map(|v| id(v, parse)).transpose()
}

pub(super) fn number<T: TryFrom<i64>>(what: &str, value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(what, &value.to_string(), "out of range"))
}

pub(super) fn run_state(value: &str) -> Result<RunState, StoreError> {
    RunState::parse(value).ok_or_else(|| corrupt("run state", value, "unknown"))
}

/// Converts an unsigned count to what the databases store.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
