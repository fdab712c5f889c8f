//! `crosscast:plugin/output`: ids an activity sends along its transitions,
//! folded as they arrive (one bit per record, `Emitted`), so a plugin
//! emitting without end costs the host no more memory than the data.

use crate::runtime::bindings::activity::crosscast::plugin::output::Host;
use crate::runtime::{Emitted, HostState};

impl Host for HostState {
    fn emit(
        &mut self,
        transition: String,
        dimension: String,
        ids: Vec<u64>,
    ) -> wasmtime::Result<Result<(), String>> {
        self.host_calls += 1;
        if !self.ctx.outputs.contains(&transition) {
            return Ok(Err(format!(
                "`{transition}` is not an outgoing transition of this activity (it has: {})",
                self.ctx.outputs.join(", ")
            )));
        }
        let count = match self
            .ctx
            .store()
            .and_then(|s| s.audience().count(&dimension).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(bad) = ids.iter().find(|id| **id >= count) {
            return Ok(Err(format!(
                "id {bad} is not a record of dimension `{dimension}`"
            )));
        }
        let out = self
            .emitted
            .entry(transition.clone())
            .or_insert_with(|| Emitted::new(&dimension));
        if out.dimension != dimension {
            return Ok(Err(format!(
                "transition `{transition}` already carries dimension `{}`, not `{dimension}`",
                out.dimension
            )));
        }
        out.insert(&ids);
        Ok(Ok(()))
    }
}
