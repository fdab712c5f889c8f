//! `crosscast:plugin/attributes`: attribute columns for a batch of ids.

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::attributes::Host;
use crate::runtime::bindings::activity::crosscast::plugin::types::Column;
use crate::store::StoreError;

/// Most ids one `fetch` serves: bounds host memory per call.
const MAX_IDS: usize = 65_536;

impl Host for HostState {
    fn fetch(
        &mut self,
        dimension: String,
        ids: Vec<u64>,
        paths: Vec<String>,
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
        match store.audience().fetch(&dimension, &ids, &paths) {
            Ok(cols) => Ok(Ok(cols.into_iter().map(Column::Text).collect())),
            Err(StoreError::NotFound(m)) => Ok(Err(m)),
            Err(e) => Err(e.into()),
        }
    }

    fn columns(&mut self, dimension: String) -> wasmtime::Result<Result<Vec<String>, String>> {
        self.host_calls += 1;
        let store = match self.ctx.store() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        match paths(store, &dimension) {
            Ok(c) => Ok(Ok(c)),
            Err(StoreError::NotFound(m)) => Ok(Err(m)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Every attribute path of a dimension: its columns, then each linked
/// dimension's columns behind the link (`recipient.email`).
fn paths(store: &crate::store::Store, dimension: &str) -> Result<Vec<String>, StoreError> {
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
