//! What one wasmtime `Store` holds: WASI with nothing granted, the resource
//! table, the limiter, the guest's time and words, and the capabilities'
//! context.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{CallTime, Hit, Limiter};
use crate::caps::Context;
use crate::caps::clock::GuestTime;
use crate::caps::log::Chatter;

/// Ids emitted on one transition during an execution, folded as they
/// arrive: one bit per record of the dimension, so repeats cost nothing and
/// host memory is bounded by the data, not by how much the plugin emits.
#[derive(Debug, Default)]
pub struct Emitted {
    /// Their dimension (all batches of a transition share one).
    pub dimension: String,
    bits: Vec<u64>,
}

impl Emitted {
    /// Nothing emitted yet on a transition carrying `dimension`.
    pub fn new(dimension: &str) -> Emitted {
        Emitted {
            dimension: dimension.to_string(),
            bits: Vec::new(),
        }
    }

    /// Adds ids (each checked by the caller to be a record).
    pub fn insert(&mut self, ids: &[u64]) {
        let Some(max) = ids.iter().max() else {
            return;
        };
        let words = (*max / 64 + 1) as usize;
        if self.bits.len() < words {
            self.bits.resize(words, 0);
        }
        for id in ids {
            self.bits[(id / 64) as usize] |= 1 << (id % 64);
        }
    }

    /// The distinct ids, in order.
    pub fn ids(&self) -> Vec<u64> {
        let count = self.bits.iter().map(|w| w.count_ones() as usize).sum();
        let mut out = Vec::with_capacity(count);
        for (i, word) in self.bits.iter().enumerate() {
            let mut w = *word;
            while w != 0 {
                let bit = w.trailing_zeros() as u64;
                out.push(i as u64 * 64 + bit);
                w &= w - 1;
            }
        }
        out
    }
}

/// The data of one `Store`: thrown away after each execution.
pub struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// What the capabilities may touch for this execution.
    pub ctx: Arc<Context>,
    /// What the activity emitted, by transition.
    pub emitted: BTreeMap<String, Emitted>,
    /// What the guest says, capped; the end of its stderr.
    pub chatter: Chatter,
    /// The guest's clocks: the run's instant, moved by its sleeps.
    pub time: GuestTime,
    /// The guest call under way, timed.
    pub(crate) call: CallTime,
    /// A host call that ended past the call's time.
    pub(crate) late: Option<Hit>,
    /// How many calls the guest made into the host (for benchmarks).
    pub host_calls: u64,
}

impl HostState {
    /// The limit the guest hit, as recorded by the limiter or the call
    /// hook, if any.
    pub fn hit(&self) -> Option<Hit> {
        self.limiter.hit.or(self.late)
    }

    /// Time in host calls during the guest call under way, and in all.
    pub fn spent(&self) -> (std::time::Duration, std::time::Duration) {
        self.call.spent()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Emitted;

    #[test]
    fn emits_fold_into_sorted_distinct_ids() {
        let mut e = Emitted::new("recipient");
        e.insert(&[5, 3, 5, 64, 3]);
        e.insert(&[]);
        e.insert(&[200, 0]);
        assert_eq!(e.ids(), [0, 3, 5, 64, 200]);
        // Repeats take no room.
        for _ in 0..1_000 {
            e.insert(&[1, 2, 3]);
        }
        assert_eq!(e.ids().len(), 7);
        assert_eq!(e.bits.len(), 4);
    }
}
