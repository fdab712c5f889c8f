//! `crosscast:plugin/population`: populations read in batches.
//!
//! A [`Cursor`] walks a stored population block by block, or a whole
//! dimension (`scan`) as the id range `0..count` without storing anything.

use wasmtime::component::Resource;

use super::MAX_BATCH;
use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::population::{
    Batch, Host, HostPopulation,
};
use crate::runtime::bindings::activity::crosscast::plugin::types::Field;

/// Where a population's ids come from.
enum Source {
    /// A stored population.
    Stored { population: u64, blocks: u32 },
    /// Every record of a dimension: ids `0..end`.
    Range { end: u64 },
}

/// A population being read by a guest.
pub struct Cursor {
    dimension: String,
    count: u64,
    source: Source,
    /// Next block (stored) or next id (range).
    next: u64,
    /// Ids of the current block not yet handed out.
    buffer: Vec<u64>,
    pos: usize,
}

impl Cursor {
    /// A cursor over a stored population.
    pub fn stored(dimension: String, population: u64, count: u64, blocks: u32) -> Cursor {
        Cursor {
            dimension,
            count,
            source: Source::Stored { population, blocks },
            next: 0,
            buffer: Vec::new(),
            pos: 0,
        }
    }

    /// A cursor over every record of a dimension.
    pub fn range(dimension: String, end: u64) -> Cursor {
        Cursor {
            dimension,
            count: end,
            source: Source::Range { end },
            next: 0,
            buffer: Vec::new(),
            pos: 0,
        }
    }

    /// The next ids, at most `max`.
    pub fn read(
        &mut self,
        store: &crate::store::Store,
        max: usize,
    ) -> Result<Vec<u64>, crate::store::StoreError> {
        let mut out = Vec::with_capacity(max.min(self.count as usize));
        while out.len() < max {
            if self.pos < self.buffer.len() {
                let take = (max - out.len()).min(self.buffer.len() - self.pos);
                out.extend_from_slice(&self.buffer[self.pos..self.pos + take]);
                self.pos += take;
                continue;
            }
            match self.source {
                Source::Range { end } => {
                    let take = ((max - out.len()) as u64).min(end - self.next);
                    out.extend(self.next..self.next + take);
                    self.next += take;
                    break;
                }
                Source::Stored { population, blocks } => {
                    if self.next >= blocks as u64 {
                        break;
                    }
                    self.buffer = store.population_block(population, self.next as u32)?;
                    self.pos = 0;
                    self.next += 1;
                }
            }
        }
        Ok(out)
    }

    fn rewind(&mut self) {
        self.next = 0;
        self.buffer.clear();
        self.pos = 0;
    }
}

impl HostPopulation for HostState {
    fn dimension(&mut self, this: Resource<Cursor>) -> wasmtime::Result<String> {
        self.host_calls += 1;
        Ok(self.table.get(&this)?.dimension.clone())
    }

    fn count(&mut self, this: Resource<Cursor>) -> wasmtime::Result<u64> {
        self.host_calls += 1;
        Ok(self.table.get(&this)?.count)
    }

    fn read(&mut self, this: Resource<Cursor>, max: u32) -> wasmtime::Result<Vec<u64>> {
        self.host_calls += 1;
        let store = self.ctx.store().map_err(wasmtime::Error::msg)?.clone();
        let cursor = self.table.get_mut(&this)?;
        Ok(cursor.read(&store, max.clamp(1, MAX_BATCH) as usize)?)
    }

    fn read_with(
        &mut self,
        this: Resource<Cursor>,
        max: u32,
        fields: Vec<Field>,
    ) -> wasmtime::Result<Result<Batch, String>> {
        self.host_calls += 1;
        let store = self.ctx.store().map_err(wasmtime::Error::msg)?.clone();
        let cursor = self.table.get_mut(&this)?;
        let ids = cursor.read(&store, max.clamp(1, MAX_BATCH) as usize)?;
        let dimension = cursor.dimension.clone();
        // Fetched even for an empty batch, so a misspelt path is reported
        // on an empty population too.
        let columns = super::attributes::columns_for(&store, &dimension, &ids, &fields);
        super::attributes::guest_error(columns.map(|columns| Batch { ids, columns }))
    }

    fn rewind(&mut self, this: Resource<Cursor>) -> wasmtime::Result<()> {
        self.host_calls += 1;
        self.table.get_mut(&this)?.rewind();
        Ok(())
    }

    fn drop(&mut self, this: Resource<Cursor>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl Host for HostState {
    fn scan(&mut self, dimension: String) -> wasmtime::Result<Result<Resource<Cursor>, String>> {
        self.host_calls += 1;
        let store = match self.ctx.store() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let count = match store.audience().count(&dimension) {
            Ok(c) => c,
            Err(crate::store::StoreError::NotFound(m)) => return Ok(Err(m)),
            Err(e) => return Err(e.into()),
        };
        Ok(Ok(self.table.push(Cursor::range(dimension, count))?))
    }
}
