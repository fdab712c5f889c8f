//! `crosscast:plugin/attributes`: attribute columns for a batch of ids, and
//! the links between dimensions.

use std::collections::HashMap;

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::attributes::Host;
use crate::runtime::bindings::activity::crosscast::plugin::types::{
    Column, Dictionary, Field, Form,
};
use crate::store::{Store, StoreError};

/// Most ids one `fetch` serves: bounds host memory per call.
const MAX_IDS: usize = 65_536;

impl Host for HostState {
    fn fetch(
        &mut self,
        dimension: String,
        ids: Vec<u64>,
        fields: Vec<Field>,
    ) -> wasmtime::Result<Result<Vec<Column>, String>> {
        self.host_calls += 1;
        if ids.len() > MAX_IDS {
            return Ok(Err(format!(
                "fetch takes at most {MAX_IDS} ids per call, got {}",
                ids.len()
            )));
        }
        let store = match self.ctx.store() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        guest_error(columns_for(store, &dimension, &ids, &fields))
    }

    fn columns(&mut self, dimension: String) -> wasmtime::Result<Result<Vec<String>, String>> {
        self.host_calls += 1;
        let store = match self.ctx.store() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        guest_error(paths(store, &dimension))
    }

    fn links(
        &mut self,
        dimension: String,
    ) -> wasmtime::Result<Result<Vec<(String, String)>, String>> {
        self.host_calls += 1;
        guest_error(crate::store::audience::dimension(&dimension).map(|d| {
            d.links
                .iter()
                .map(|l| (l.name.to_string(), l.target.to_string()))
                .collect()
        }))
    }

    fn follow(
        &mut self,
        dimension: String,
        link: String,
        ids: Vec<u64>,
    ) -> wasmtime::Result<Result<Vec<Option<u64>>, String>> {
        self.host_calls += 1;
        if ids.len() > MAX_IDS {
            return Ok(Err(format!(
                "follow takes at most {MAX_IDS} ids per call, got {}",
                ids.len()
            )));
        }
        let store = match self.ctx.store() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        guest_error(store.audience().follow(&dimension, &link, &ids))
    }
}

/// A store result for the guest: a lookup it got wrong is its error, any
/// other storage failure is the host's (a trap).
pub(crate) fn guest_error<T>(r: Result<T, StoreError>) -> wasmtime::Result<Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(StoreError::NotFound(m)) => Ok(Err(m)),
        Err(e) => Err(e.into()),
    }
}

/// The columns of `fields` for `ids`, each encoded for the boundary.
pub(crate) fn columns_for(
    store: &Store,
    dimension: &str,
    ids: &[u64],
    fields: &[Field],
) -> Result<Vec<Column>, StoreError> {
    let paths: Vec<String> = fields.iter().map(|f| f.path.clone()).collect();
    let values = store.audience().fetch(dimension, ids, &paths)?;
    Ok(values
        .into_iter()
        .zip(fields)
        .map(|(v, f)| match f.form {
            Form::Presence => Column::Presence(
                v.iter()
                    .map(|x| x.as_deref().is_some_and(|s| !s.is_empty()))
                    .collect(),
            ),
            Form::Value => encode(v),
        })
        .collect())
}

/// Sends a text column as a dictionary when it has few distinct values (an
/// app id, a platform): each distinct string crosses the boundary once.
fn encode(values: Vec<Option<String>>) -> Column {
    // Give up early on columns that are mostly distinct (emails, tokens).
    let limit = (values.len() / 16).max(16);
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut rows = Vec::with_capacity(values.len());
    for v in &values {
        match v.as_deref() {
            None => rows.push(None),
            Some(s) => {
                let next = index.len() as u32;
                let k = *index.entry(s).or_insert(next);
                if index.len() > limit {
                    return Column::Text(values);
                }
                rows.push(Some(k));
            }
        }
    }
    let mut dict = vec![String::new(); index.len()];
    for (s, k) in index {
        dict[k as usize] = s.to_string();
    }
    Column::Dictionary(Dictionary { values: dict, rows })
}

/// Every attribute path of a dimension: its columns, then each linked
/// dimension's columns behind the link (`recipient.email`).
fn paths(store: &Store, dimension: &str) -> Result<Vec<String>, StoreError> {
    let audience = store.audience();
    let mut out = audience.columns(dimension)?;
    for link in crate::store::audience::dimension(dimension)?.links {
        for c in audience.columns(link.target)? {
            out.push(format!("{}.{c}", link.name));
        }
    }
    Ok(out)
}

impl crate::runtime::bindings::activity::crosscast::plugin::types::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_become_a_dictionary() {
        let v: Vec<Option<String>> = (0..100)
            .map(|i| (i % 10 != 0).then(|| ["ios", "android"][i % 2].to_string()))
            .collect();
        let Column::Dictionary(d) = encode(v.clone()) else {
            panic!("expected a dictionary")
        };
        let back: Vec<Option<String>> = d
            .rows
            .iter()
            .map(|r| r.map(|k| d.values[k as usize].clone()))
            .collect();
        assert_eq!(back, v);
        let distinct: Vec<Option<String>> = (0..100).map(|i| Some(format!("u{i}@x"))).collect();
        assert!(matches!(encode(distinct), Column::Text(_)));
    }
}
