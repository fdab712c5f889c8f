//! Populations: sorted sets of ids of one dimension, stored as chunked blocks.
//!
//! A population is written once and never changed. Its blocks are written
//! first and its meta record last, so a population exists only once it is
//! whole; a crash in between leaves unreachable blocks, never a partial set.
//!
//! A block holds the gaps between its sorted ids as varints: a query's
//! output is mostly small gaps, one or two bytes an id. Raw `u64`s (the
//! format before, still read) made each block of 16,384 ids 128 KiB, past
//! sled's blob threshold: a file written per block, a fifth of the
//! reference targeting's time (perf, BENCHMARKS.md).

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, decode, encode, json_decode, json_encode};

/// Ids per stored block.
pub const BLOCK_IDS: usize = 16_384;

/// What is known about a stored population.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PopulationMeta {
    /// Its dimension.
    pub dimension: String,
    /// How many ids.
    pub count: u64,
    /// How many blocks.
    pub blocks: u32,
    /// How its blocks are written.
    #[serde(default)]
    pub encoding: BlockEncoding,
}

/// How a population's blocks are written.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum BlockEncoding {
    /// Each id as 8 little-endian bytes (the format before `Gaps`).
    #[default]
    Raw,
    /// The first id, then the gap to each next one, as postcard varints.
    Gaps,
}

fn encode_gaps(ids: &[u64]) -> Vec<u8> {
    let mut previous = 0;
    let gaps: Vec<u64> = ids
        .iter()
        .map(|&id| {
            let gap = id.wrapping_sub(previous);
            previous = id;
            gap
        })
        .collect();
    encode(&gaps)
}

fn decode_gaps(bytes: &[u8]) -> Result<Vec<u64>> {
    let mut id = 0u64;
    Ok(decode::<Vec<u64>>("pop_blocks", bytes)?
        .into_iter()
        .map(|gap| {
            id = id.wrapping_add(gap);
            id
        })
        .collect())
}

fn block_key(pop: u64, block: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&pop.to_be_bytes());
    k[8..].copy_from_slice(&block.to_be_bytes());
    k
}

impl Store {
    /// Stores a population; `ids` must be sorted and distinct. Returns its id.
    pub fn write_population(&self, dimension: &str, ids: &[u64]) -> Result<u64> {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let pop = self.next_id()?;
        let blocks_tree = self.tree("pop_blocks")?;
        let mut batch = sled::Batch::default();
        let mut blocks = 0u32;
        for (i, chunk) in ids.chunks(BLOCK_IDS).enumerate() {
            batch.insert(&block_key(pop, i as u32), encode_gaps(chunk));
            blocks += 1;
        }
        blocks_tree.apply_batch(batch)?;
        let meta = PopulationMeta {
            dimension: dimension.to_string(),
            count: ids.len() as u64,
            blocks,
            encoding: BlockEncoding::Gaps,
        };
        self.tree("pop_meta")?
            .insert(pop.to_be_bytes(), json_encode(&meta))?;
        Ok(pop)
    }

    /// The meta record of a population.
    pub fn population_meta(&self, pop: u64) -> Result<PopulationMeta> {
        match self.tree("pop_meta")?.get(pop.to_be_bytes())? {
            Some(v) => json_decode("pop_meta", &v),
            None => Err(StoreError::NotFound(format!(
                "population {pop} does not exist"
            ))),
        }
    }

    /// One block of a population's ids.
    pub fn population_block(&self, pop: u64, block: u32) -> Result<Vec<u64>> {
        let encoding = self.population_meta(pop)?.encoding;
        match self.tree("pop_blocks")?.get(block_key(pop, block))? {
            Some(v) => match encoding {
                BlockEncoding::Gaps => decode_gaps(&v),
                BlockEncoding::Raw => Ok(v
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()),
            },
            None => Err(StoreError::NotFound(format!(
                "population {pop} block {block} is missing"
            ))),
        }
    }

    /// Every id of a population (for small populations and tests).
    pub fn population_ids(&self, pop: u64) -> Result<Vec<u64>> {
        let meta = self.population_meta(pop)?;
        let mut out = Vec::with_capacity(meta.count as usize);
        for b in 0..meta.blocks {
            out.extend(self.population_block(pop, b)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populations_round_trip_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let ids: Vec<u64> = (0..40_000u64).map(|i| i * 3).collect();
        let pop = store.write_population("recipient", &ids).unwrap();
        let meta = store.population_meta(pop).unwrap();
        assert_eq!(
            meta,
            PopulationMeta {
                dimension: "recipient".into(),
                count: 40_000,
                blocks: 3,
                encoding: BlockEncoding::Gaps,
            }
        );
        // A gap of one takes one byte.
        let dense = store
            .tree("pop_blocks")
            .unwrap()
            .get(block_key(pop, 1))
            .unwrap()
            .unwrap();
        assert!(dense.len() < BLOCK_IDS + 8, "{}", dense.len());
        assert_eq!(store.population_block(pop, 1).unwrap().len(), BLOCK_IDS);
        assert_eq!(store.population_ids(pop).unwrap(), ids);
        let empty = store.write_population("recipient", &[]).unwrap();
        assert_eq!(store.population_meta(empty).unwrap().blocks, 0);
        assert!(store.population_ids(empty).unwrap().is_empty());
        assert!(store.population_meta(pop + 1000).is_err());
    }

    #[test]
    fn populations_written_before_gaps_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let ids: Vec<u64> = vec![3, 5, 1 << 40];
        let raw: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        store
            .tree("pop_blocks")
            .unwrap()
            .insert(block_key(7, 0), raw)
            .unwrap();
        // As written then: no `encoding`.
        store
            .tree("pop_meta")
            .unwrap()
            .insert(
                7u64.to_be_bytes(),
                br#"{"dimension":"recipient","count":3,"blocks":1}"#.as_slice(),
            )
            .unwrap();
        assert_eq!(
            store.population_meta(7).unwrap().encoding,
            BlockEncoding::Raw
        );
        assert_eq!(store.population_ids(7).unwrap(), ids);
    }
}
