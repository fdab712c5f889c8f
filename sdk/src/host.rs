//! Calls into the host shared by both worlds: log, clock, attributes.

use crate::bindings::crosscast::plugin::{attributes, clock, log, types};
use crate::filter::{Column, Columns};

/// The run's clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    clock::now()
}

/// Logs an informational line in the host's log.
pub fn log_info(message: &str) {
    log::log(log::Level::Info, message);
}

/// Logs a warning in the host's log.
pub fn log_warn(message: &str) {
    log::log(log::Level::Warn, message);
}

/// Fetches attribute columns for a batch of ids, keyed by path.
pub fn fetch(dimension: &str, ids: &[u64], paths: &[String]) -> Result<Columns, String> {
    let cols = attributes::fetch(dimension, ids, paths)?;
    Ok(paths
        .iter()
        .cloned()
        .zip(cols.into_iter().map(column))
        .collect())
}

/// The attribute names of a dimension.
pub fn columns(dimension: &str) -> Result<Vec<String>, String> {
    attributes::columns(dimension)
}

fn column(c: types::Column) -> Column {
    match c {
        types::Column::Text(v) => Column::Text(v),
        types::Column::Integer(v) => Column::Integer(v),
        types::Column::Float(v) => Column::Float(v),
        types::Column::Boolean(v) => Column::Boolean(v),
        types::Column::Timestamp(v) => Column::Timestamp(v),
    }
}

impl From<crate::config::ConfigError> for types::ConfigError {
    fn from(e: crate::config::ConfigError) -> Self {
        types::ConfigError {
            field: e.field,
            message: e.message,
        }
    }
}
