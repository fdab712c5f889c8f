//! External ids of a dimension's records, mapped to their internal ids, in
//! as little memory as an import at ten million records allows.
//!
//! Internal ids are dense (0, 1, 2, ...), so the keys are kept back to back
//! in id order, and hash tables hold only ids (4 bytes each), comparing a
//! candidate through its key. A map of boxed strings to `u64` took ~80 bytes
//! per key at its peak; this takes the key's bytes plus ~10. The ids are
//! spread over a few tables rather than one because a table's size is a
//! power of two: 15M keys need 2^25 slots in one table (168 MB), 5 × 2^22
//! in five (105 MB).

use std::hash::BuildHasher as _;

use super::{Result, StoreError};

/// External id → internal id, for ids `0..len()`.
#[derive(Default)]
pub struct KeyIndex {
    /// Every key, in id order, back to back.
    bytes: Vec<u8>,
    /// Where the key of each id ends in `bytes`.
    ends: Vec<u32>,
    /// Ids, found by the hash of their key, in the table [`shard`] picks.
    tables: Vec<hashbrown::HashTable<u32>>,
}

/// How many tables hold `keys` keys in the fewest slots: hashbrown keeps a
/// table at most 7/8 full, in a power of two of slots.
fn shards_for(keys: usize) -> usize {
    let slots = |shards: usize| {
        let per = keys.div_ceil(shards).max(1);
        shards * (per * 8).div_ceil(7).next_power_of_two()
    };
    (1..=8).min_by_key(|s| (slots(*s), *s)).unwrap_or(1)
}

/// The table of `hash` among `shards`: from its low 32 bits, which
/// hashbrown uses for the slot only below bit 25 and not at all for its tag.
fn shard(hash: u64, shards: usize) -> usize {
    (((hash & 0xffff_ffff) * shards as u64) >> 32) as usize
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyIndex({} keys)", self.ends.len())
    }
}

// FxHash: ten million short keys hash several times faster than with
// SipHash, and the keys come from the operator's own files.
fn hash(key: &[u8]) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(key)
}

impl KeyIndex {
    /// An empty index with tables sized for `table_keys` keys, and room
    /// for `keys` keys of `bytes` bytes in all. Room not used costs no
    /// memory (its pages are never touched), but tables are filled as they
    /// are sized: growing, a table holds its old and new slots at once.
    pub fn with_capacity(table_keys: usize, keys: usize, bytes: usize) -> KeyIndex {
        let shards = shards_for(table_keys);
        KeyIndex {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(keys),
            tables: (0..shards)
                .map(|_| hashbrown::HashTable::with_capacity(table_keys.div_ceil(shards)))
                .collect(),
        }
    }

    /// How many ids it maps.
    pub fn len(&self) -> u64 {
        self.ends.len() as u64
    }

    /// Whether it maps none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn key(&self, id: u32) -> &[u8] {
        let end = self.ends[id as usize] as usize;
        let start = match id {
            0 => 0,
            _ => self.ends[id as usize - 1] as usize,
        };
        &self.bytes[start..end]
    }

    /// The internal id of an external id.
    pub fn get(&self, key: &str) -> Option<u64> {
        let key = key.as_bytes();
        let h = hash(key);
        self.tables
            .get(shard(h, self.tables.len()))?
            .find(h, |&id| self.key(id) == key)
            .map(|&id| id as u64)
    }

    /// Maps the next id (`len()`) to `key` (`None`: a record without one,
    /// found by no key). The caller makes sure `key` is not mapped yet.
    pub fn push(&mut self, key: Option<&str>) -> Result<u64> {
        let id = self.ends.len();
        let too_large = |what: &str| {
            StoreError::NotFound(format!(
                "the audience is too large: a dimension holds at most 4,294,967,295 records \
                 and 4 GiB of ids ({what})"
            ))
        };
        let id32 = u32::try_from(id).map_err(|_| too_large("records"))?;
        if let Some(key) = key {
            self.bytes.extend_from_slice(key.as_bytes());
        }
        let end = u32::try_from(self.bytes.len()).map_err(|_| too_large("bytes of ids"))?;
        self.ends.push(end);
        if let Some(key) = key {
            if self.tables.is_empty() {
                self.tables.push(hashbrown::HashTable::new());
            }
            let h = hash(key.as_bytes());
            let Self {
                bytes,
                ends,
                tables,
                ..
            } = self;
            let shards = tables.len();
            let key_of = |id: u32| {
                let end = ends[id as usize] as usize;
                let start = if id == 0 {
                    0
                } else {
                    ends[id as usize - 1] as usize
                };
                &bytes[start..end]
            };
            tables[shard(h, shards)].insert_unique(h, id32, |&other| hash(key_of(other)));
        }
        Ok(id as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_spread_over_the_tables_that_take_the_fewest_slots() {
        assert_eq!(shards_for(0), 1);
        assert_eq!(shards_for(10_000_000), 3);
        // 15M keys: one table would need 2^25 slots, five need 5 × 2^22.
        assert_eq!(shards_for(15_000_000), 5);
        let spread = (0..50_000u64).fold([0usize; 5], |mut n, k| {
            n[shard(hash(format!("S{k}").as_bytes()), 5)] += 1;
            n
        });
        assert!(
            spread.iter().all(|n| (9_000..11_000).contains(n)),
            "{spread:?}"
        );
    }

    #[test]
    fn maps_keys_to_dense_ids_through_growth() {
        let mut index = KeyIndex::with_capacity(4, 4, 8);
        for n in 0..10_000u64 {
            let key = format!("K{n}");
            // Every seventh record has no key: found by none.
            let key = (n % 7 != 3).then_some(key);
            assert_eq!(index.push(key.as_deref()).unwrap(), n);
        }
        assert_eq!(index.len(), 10_000);
        assert_eq!(index.get("K0"), Some(0));
        assert_eq!(index.get("K9998"), Some(9998));
        assert_eq!(index.get("K9999"), None);
        assert_eq!(index.get("K3"), None);
        assert_eq!(index.get("K"), None);
        assert_eq!(index.get(""), None);
        assert_eq!(index.get("K10000"), None);
        for n in (0..10_000u64).filter(|n| n % 7 != 3) {
            assert_eq!(index.get(&format!("K{n}")), Some(n));
        }
    }
}
