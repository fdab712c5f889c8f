//! `crosscast:plugin/attributes`: attribute columns for a batch of ids, and
//! the links between dimensions.

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::attributes::Host;
use crate::runtime::bindings::activity::crosscast::plugin::types::{
    Column, Dictionary, Field, Form,
};
use crate::store::audience::{Values, Want};
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
        guest_error(store.audience().paths(&dimension))
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

/// The columns of `fields` for `ids`, each encoded for the boundary: presence
/// as booleans, values as a dictionary when they repeat a lot.
pub(crate) fn columns_for(
    store: &Store,
    dimension: &str,
    ids: &[u64],
    fields: &[Field],
) -> Result<Vec<Column>, StoreError> {
    let wants: Vec<(String, Want)> = fields
        .iter()
        .map(|f| {
            let want = match f.form {
                Form::Presence => Want::Presence,
                Form::Value => Want::Auto,
            };
            (f.path.clone(), want)
        })
        .collect();
    Ok(store
        .audience()
        .fetch_as(dimension, ids, &wants)?
        .into_iter()
        .map(|v| match v {
            Values::Text(t) => Column::Text(t),
            Values::Dictionary { values, rows } => Column::Dictionary(Dictionary {
                values,
                rows: rows.into_iter().map(|r| r.unwrap_or(u32::MAX)).collect(),
            }),
            Values::Presence(p) => {
                let mut bits = vec![0u8; p.len().div_ceil(8)];
                for (i, _) in p.iter().enumerate().filter(|(_, x)| **x) {
                    bits[i / 8] |= 1 << (i % 8);
                }
                Column::Presence(bits)
            }
        })
        .collect())
}

impl crate::runtime::bindings::activity::crosscast::plugin::types::Host for HostState {}

impl crate::runtime::bindings::activity_v4::crosscast::plugin0_4_0::references::Host for HostState {}
