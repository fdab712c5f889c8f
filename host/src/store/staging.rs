//! An import in progress: rows staged as a new generation of a dimension,
//! seen by nobody until it publishes (see [`super::manifest`]).
//!
//! New records get the next ids and are staged as they come; updates in id
//! order too; the others are kept ([`super::spill`]) and staged in id order
//! at the end, so each block is written about once. Blocks go to this
//! generation's file ([`super::blockfiles`]); publishing names them in the
//! dimension's manifest in one write.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::audience::{
    self, Audience, BLOCK, Dimension, KeyIndex, Row, Source, Upserted, columns, key_index,
    read_block,
};
use super::blockfiles::{Location, Writer};
use super::manifest::{self, Draft};
use super::spill::{Spill, Spilled};
use super::{Result, Store, decode, encode, textblock};

/// Updates staged at a time, in id order.
const UPDATES_CHUNK: usize = 4 * BLOCK as usize;

type TextBlock = Vec<Option<String>>;
type LinkBlock = Vec<Option<u64>>;

impl<'a> Audience<'a> {
    /// Starts an import of `file` into a dimension: nothing it writes is
    /// seen before [`Import::publish`]. What an interrupted import staged is
    /// deleted first (see [`Audience::recover`] to hear about it).
    /// `expected` is about how many records the import brings: the id
    /// index is sized for them up front.
    pub fn begin(&self, dimension: &str, file: &str, expected: u64) -> Result<Import<'a>> {
        let dim = audience::dimension(dimension)?;
        let tree = self.tree(dim)?;
        let files = &self.store.blocks;
        self.store.published.start_import(dim.name)?;
        // Ended by the import's drop from here on.
        let started = Started {
            store: self.store,
            dim: dim.name,
        };
        let base = self.store.published.get(dim.name, &tree)?;
        let staging = manifest::begin(&tree, files, dim.name, &base, file)?;
        self.store.reclaim(dim.name, &tree)?;
        let index = key_index(
            &Source {
                files,
                tree: tree.clone(),
                dim: dim.name,
                manifest: &base,
            },
            expected,
        )?;
        let mut import = Import {
            store: self.store,
            _started: started,
            dim,
            columns: columns(dim, &base),
            draft: Draft::new(&base, staging.generation),
            writer: files.create(dim.name, staging.generation)?,
            tree,
            index,
            claimed: Vec::new(),
            base_next: base.next,
            updates: Spill::new(files.scratch(dim.name, staging.generation)),
            last_update: None,
            result: Upserted {
                inserted: 0,
                updated: 0,
            },
            published: false,
        };
        // Blocks still in the layout before generations move to this
        // generation's file, so their sled keys can go.
        let legacy: Vec<(u8, String, u64)> = base
            .each()
            .filter(|(.., at)| *at == Location::Legacy)
            .map(|(tag, name, block, _)| (tag, name.to_string(), block))
            .collect();
        for (tag, name, block) in legacy {
            import.restage(tag, &name, block)?;
        }
        Ok(import)
    }
}

/// An import in progress: rows staged as a new generation of a dimension,
/// seen by nobody until [`Import::publish`]. Dropped unpublished, it leaves
/// a file the next import deletes.
pub struct Import<'a> {
    store: &'a Store,
    /// Ends the import of this dimension when dropped.
    _started: Started<'a>,
    dim: &'static Dimension,
    tree: sled::Tree,
    /// The published manifest, with the blocks staged so far.
    draft: Draft,
    /// This generation's block file.
    writer: Writer,
    /// External ids of the records so far, published and staged.
    index: KeyIndex,
    /// Column names so far, `id` first.
    columns: Vec<String>,
    /// One bit per record: claimed by this import.
    claimed: Vec<u64>,
    /// Records before this import: ids below are updates.
    base_next: u64,
    /// Updates, kept to be staged in id order.
    updates: Spill,
    /// The last update staged as it came, while they came in id order.
    last_update: Option<u64>,
    result: Upserted,
    published: bool,
}

impl Drop for Import<'_> {
    /// An import given up (an error, an interrupt) deletes what it staged,
    /// so the next one has nothing to report; a crash leaves it to the next.
    fn drop(&mut self) {
        if !self.published {
            let _ = manifest::recover(&self.tree, &self.store.blocks, self.dim.name);
        }
    }
}

/// An import of a dimension under way: another of the same dimension is
/// refused until this is dropped.
struct Started<'a> {
    store: &'a Store,
    dim: &'static str,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        self.store.published.end_import(self.dim);
    }
}

/// The id an import gives a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// A new record.
    New(u64),
    /// A record that exists.
    Existing(u64),
    /// A record this import already claimed: the id appears twice.
    Again(u64),
}

impl Import<'_> {
    /// Gives the record with external id `key` its internal id, new or
    /// existing, once per import.
    pub fn claim(&mut self, key: &str) -> Result<Claim> {
        let claim = match self.index.get(key) {
            Some(id) if self.is_claimed(id) => return Ok(Claim::Again(id)),
            Some(id) => {
                self.result.updated += 1;
                Claim::Existing(id)
            }
            None => {
                let id = self.index.push(Some(key))?;
                self.draft.manifest.next = id + 1;
                self.result.inserted += 1;
                Claim::New(id)
            }
        };
        let (Claim::New(id) | Claim::Existing(id)) = claim else {
            unreachable!("returned above")
        };
        let word = (id / 64) as usize;
        if self.claimed.len() <= word {
            self.claimed.resize(word + 1, 0);
        }
        self.claimed[word] |= 1 << (id % 64);
        Ok(claim)
    }

    fn is_claimed(&self, id: u64) -> bool {
        self.claimed
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The stored bytes of a block as staged so far.
    fn read(&self, tag: u8, name: &str, block: u64) -> Result<Option<Vec<u8>>> {
        let files = &self.store.blocks;
        read_block(
            files,
            &self.tree,
            self.dim.name,
            &self.draft.manifest,
            tag,
            name,
            block,
        )
    }

    /// Appends a block to this generation's file and names it there.
    fn stage(&mut self, tag: u8, name: &str, block: u64, bytes: &[u8]) -> Result<()> {
        let at = self.writer.append(self.draft.manifest.generation, bytes)?;
        self.draft.place(tag, name, block, at);
        Ok(())
    }

    /// Copies a block, unchanged, into this generation's file.
    fn restage(&mut self, tag: u8, name: &str, block: u64) -> Result<()> {
        if let Some(bytes) = self.read(tag, name, block)? {
            self.stage(tag, name, block, &bytes)?;
        }
        Ok(())
    }

    /// Stages rows, claiming those not claimed yet (a row claimed twice
    /// overwrites the first). New records are staged now, and so are
    /// updates while they come in id order; the others are kept and staged
    /// in id order when the import publishes ([`super::spill`]), so each
    /// block is written about once.
    pub fn write(&mut self, rows: Vec<Row>) -> Result<()> {
        let mut fresh = Vec::with_capacity(rows.len());
        for mut row in rows {
            let id = match row.id {
                Some(id) => id,
                None => match self.claim(&row.key)? {
                    Claim::New(id) | Claim::Existing(id) | Claim::Again(id) => id,
                },
            };
            row.id = Some(id);
            // New records, and updates while they come in id order (a file
            // exported from here), are staged as they come.
            let in_order = self.updates.is_empty() && self.last_update.is_none_or(|l| id > l);
            if id >= self.base_next || in_order {
                if id < self.base_next {
                    self.last_update = Some(id);
                }
                fresh.push(row);
                continue;
            }
            let dim = self.dim;
            self.updates.push(Spilled {
                id,
                key: row.key,
                values: row
                    .values
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                links: row
                    .links
                    .into_iter()
                    .filter_map(|(name, target)| {
                        let i = dim.links.iter().position(|l| l.name == name)?;
                        Some((i as u16, target))
                    })
                    .collect(),
            })?;
        }
        self.apply(fresh)
    }

    /// Stages the updates kept by [`Import::write`], in id order.
    fn apply_updates(&mut self) -> Result<()> {
        let updates = std::mem::replace(
            &mut self.updates,
            Spill::new(self.store.blocks.scratch(self.dim.name, 0)),
        );
        if updates.is_empty() {
            return Ok(());
        }
        let dim = self.dim;
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        let mut chunk = Vec::with_capacity(UPDATES_CHUNK);
        for row in updates.drain()? {
            let row = row?;
            let values = row
                .values
                .into_iter()
                .map(|(k, v)| {
                    let name = names.entry(k).or_insert_with_key(|k| Arc::from(k.as_str()));
                    (name.clone(), v)
                })
                .collect();
            let links = row
                .links
                .into_iter()
                .filter_map(|(i, target)| Some((dim.links.get(i as usize)?.name, target)))
                .collect();
            chunk.push(Row {
                key: row.key,
                id: Some(row.id),
                values,
                links,
            });
            if chunk.len() >= UPDATES_CHUNK {
                self.apply(std::mem::take(&mut chunk))?;
            }
        }
        self.apply(chunk)
    }

    /// Stages rows that have their ids: blocks they touch are read as
    /// staged so far, changed, and appended to this generation's file.
    fn apply(&mut self, rows: Vec<Row>) -> Result<()> {
        // Blocks touched by these rows, by (column index, block).
        let mut text: BTreeMap<(usize, u64), TextBlock> = BTreeMap::new();
        let mut links: BTreeMap<(&'static str, u64), LinkBlock> = BTreeMap::new();
        let id_column: Arc<str> = Arc::from("id");
        for row in rows {
            let Some(id) = row.id else {
                continue;
            };
            let (block, slot) = (id / BLOCK, (id % BLOCK) as usize);
            // The external id is an attribute too, so it can be filtered on.
            let id_value: (Arc<str>, Option<String>) = (id_column.clone(), Some(row.key));
            for (col, value) in std::iter::once(id_value).chain(row.values) {
                let ci = match self.columns.iter().position(|c| **c == *col) {
                    Some(i) => i,
                    None => {
                        self.columns.push(col.to_string());
                        self.columns.len() - 1
                    }
                };
                let blk = match text.entry((ci, block)) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        let existing = match self.read(manifest::TEXT, &col, block)? {
                            Some(bytes) => textblock::View::parse(&bytes)?.to_vec(),
                            None => Vec::new(),
                        };
                        v.insert(existing)
                    }
                };
                if blk.len() <= slot {
                    blk.resize(slot + 1, None);
                }
                blk[slot] = value;
            }
            for (link, target) in &row.links {
                let blk = match links.entry((link, block)) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        let existing = match self.read(manifest::LINK, link, block)? {
                            Some(bytes) => decode::<LinkBlock>("audience", &bytes)?,
                            None => Vec::new(),
                        };
                        v.insert(existing)
                    }
                };
                if blk.len() <= slot {
                    blk.resize(slot + 1, None);
                }
                blk[slot] = Some(*target);
            }
        }
        for ((ci, block), blk) in &text {
            let name = self.columns[*ci].clone();
            self.stage(manifest::TEXT, &name, *block, &textblock::encode(blk))?;
        }
        for ((link, block), blk) in &links {
            self.stage(manifest::LINK, link, *block, &encode(blk))?;
        }
        let dim = self.dim;
        self.draft.manifest.extras = self
            .columns
            .iter()
            .filter(|c| *c != "id" && !dim.columns.contains(&c.as_str()))
            .cloned()
            .collect();
        Ok(())
    }

    /// Rows staged so far.
    pub fn staged(&self) -> u64 {
        self.result.inserted + self.result.updated
    }

    /// Publishes everything staged in one small durable write; returns what
    /// changed. Files no manifest in use names any more are deleted.
    pub fn publish(mut self) -> Result<Upserted> {
        self.apply_updates()?;
        let generation = self.draft.manifest.generation;
        self.store
            .blocks
            .delete_scratch(self.dim.name, generation)?;
        self.compact()?;
        self.writer.sync()?;
        manifest::publish(&self.tree, &self.draft.manifest)?;
        self.published = true;
        let dim = self.dim.name;
        self.store
            .published
            .set(dim, std::mem::take(&mut self.draft.manifest));
        self.store.reclaim(dim, &self.tree)?;
        Ok(self.result)
    }

    /// Moves into this generation's file the blocks still named in older
    /// files that are mostly replaced, so those files can go: what the
    /// files hold stays under about twice what the audience needs.
    fn compact(&mut self) -> Result<()> {
        let generation = self.draft.manifest.generation;
        let live = self.draft.manifest.live_bytes();
        let sparse: Vec<u32> = live
            .iter()
            .filter(|(g, bytes)| {
                **g != generation && **bytes * 2 < self.store.blocks.size(self.dim.name, **g)
            })
            .map(|(g, _)| *g)
            .collect();
        if sparse.is_empty() {
            return Ok(());
        }
        let moving: Vec<(u8, String, u64)> = self
            .draft
            .manifest
            .each()
            .filter(|(.., at)| {
                matches!(at, Location::File { generation, .. } if sparse.contains(generation))
            })
            .map(|(tag, name, block, _)| (tag, name.to_string(), block))
            .collect();
        for (tag, name, block) in moving {
            self.restage(tag, &name, block)?;
        }
        Ok(())
    }
}

impl Store {
    /// Deletes the block files (and blocks of the layout before
    /// generations) of `dim` that no manifest in use names.
    fn reclaim(&self, dim: &'static str, tree: &sled::Tree) -> Result<u64> {
        let in_use = self.published.in_use(dim, tree)?;
        manifest::reclaim(tree, &self.blocks, dim, &in_use)
    }
}
