//! Calls into the host shared by both worlds: log, clock, attributes.

use crate::bindings::imported::{attributes, clock, log, types};
use crate::filter::{Column, Columns, Field};

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

/// Fetches attribute columns (values) for a batch of ids, keyed by path.
pub fn fetch(dimension: &str, ids: &[u64], paths: &[String]) -> Result<Columns, String> {
    let fields: Vec<Field> = paths
        .iter()
        .map(|p| Field {
            path: p.clone(),
            presence_only: false,
        })
        .collect();
    fetch_fields(dimension, ids, &fields)
}

/// Fetches fields (values or presence only) for a batch of ids, keyed by path.
pub fn fetch_fields(dimension: &str, ids: &[u64], fields: &[Field]) -> Result<Columns, String> {
    let cols = attributes::fetch(dimension, ids, &wit_fields(fields))?;
    Ok(keyed(fields, cols, ids.len()))
}

/// The links of a dimension: (link name, target dimension).
pub fn links(dimension: &str) -> Result<Vec<(String, String)>, String> {
    attributes::links(dimension)
}

/// Follows a link from a batch of ids: the target id of each, in order.
pub fn follow(dimension: &str, link: &str, ids: &[u64]) -> Result<Vec<Option<u64>>, String> {
    attributes::follow(dimension, link, ids)
}

pub(crate) fn wit_fields(fields: &[Field]) -> Vec<types::Field> {
    fields
        .iter()
        .map(|f| types::Field {
            path: f.path.clone(),
            form: if f.presence_only {
                types::Form::Presence
            } else {
                types::Form::Value
            },
        })
        .collect()
}

pub(crate) fn keyed(fields: &[Field], cols: Vec<types::Column>, len: usize) -> Columns {
    fields
        .iter()
        .map(|f| f.path.clone())
        .zip(cols.into_iter().map(|c| column(c, len)))
        .collect()
}

/// The attribute names of a dimension.
pub fn columns(dimension: &str) -> Result<Vec<String>, String> {
    attributes::columns(dimension)
}

/// A column of `len` rows from its boundary form.
fn column(c: types::Column, len: usize) -> Column {
    match c {
        types::Column::Text(v) => Column::Text(v),
        types::Column::Integer(v) => Column::Integer(v),
        types::Column::Float(v) => Column::Float(v),
        types::Column::Boolean(v) => Column::Boolean(v),
        types::Column::Timestamp(v) => Column::Timestamp(v),
        types::Column::Dictionary(d) => Column::Dictionary {
            values: d.values,
            rows: d
                .rows
                .into_iter()
                .map(|r| (r != u32::MAX).then_some(r))
                .collect(),
        },
        types::Column::Presence(bits) => Column::Presence(
            (0..len.min(bits.len() * 8))
                .map(|i| bits[i / 8] & (1 << (i % 8)) != 0)
                .collect(),
        ),
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
