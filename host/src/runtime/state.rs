//! What one wasmtime `Store` holds: WASI with nothing granted, the resource
//! table, memory limits and the capabilities' context.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::caps::Context;

/// Ids emitted on one transition during an execution.
#[derive(Debug, Default)]
pub struct Emitted {
    /// Their dimension (all batches of a transition share one).
    pub dimension: String,
    /// The ids, in arrival order, possibly repeated.
    pub ids: Vec<u64>,
}

/// The data of one `Store`: thrown away after each execution.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// What the capabilities may touch for this execution.
    pub ctx: Arc<Context>,
    /// What the activity emitted, by transition.
    pub emitted: BTreeMap<String, Emitted>,
    /// What the guest wrote to stderr (kept for failure messages).
    pub stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    /// How many calls the guest made into the host (for benchmarks).
    pub host_calls: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
