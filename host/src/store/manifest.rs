//! Published versions of a dimension: which stored blocks make it up.
//!
//! sled has no snapshot reads and holds a batch in memory, so an import
//! cannot be one batch at any size. Instead an import of generation `G`
//! writes every block it changes under new keys (`g<G>…`) beside the
//! published ones, then publishes with one small write: the dimension's
//! [`Manifest`], which names the generation of every block. Until then
//! readers, the export and any later import see the previous manifest, and a
//! crash leaves only staged keys no manifest names, discarded by the next
//! import (one key range, since the generation leads the key). Blocks a
//! publication replaced are reclaimed once no reader holds a manifest that
//! names them.
//!
//! Keys of a dimension tree: `m:head` → the published manifest; `m:staging`
//! → the import in progress ([`Staging`]); `m:reclaim` → blocks replaced but
//! not yet deleted; `g<generation: u32 BE><tag><name>\0<block: u32 BE>` → a
//! block. Generation 0 is the layout before generations
//! (`<tag><name>\0<block>`, `m:next`, `m:columns`), read as it is and
//! replaced block by block by later imports.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use super::{Result, decode, encode, json_decode};

/// Tag of a text column block.
pub const TEXT: u8 = b'c';
/// Tag of a link block.
pub const LINK: u8 = b'l';

const HEAD: &[u8] = b"m:head";
const STAGING: &[u8] = b"m:staging";
const RECLAIM: &[u8] = b"m:reclaim";
/// The marker of the layout before generations: an import storing chunks.
const LEGACY_IMPORTING: &[u8] = b"m:importing";

/// One published version of a dimension.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Which publication this is (0: none yet, or the layout before
    /// generations).
    pub generation: u32,
    /// Records in this version (internal ids are `0..next`).
    pub next: u64,
    /// Columns beyond the schema's, in the order first imported.
    pub extras: Vec<String>,
    /// By (tag, column or link), the generation holding each block
    /// (`None`: no block, every value absent).
    blocks: BTreeMap<(u8, String), Vec<Option<u32>>>,
}

/// The key of a block of `generation`.
pub fn block_key(generation: u32, tag: u8, name: &str, block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 11);
    if generation > 0 {
        k.push(b'g');
        k.extend_from_slice(&generation.to_be_bytes());
    }
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&(block as u32).to_be_bytes());
    k
}

/// The prefix of every block key of `generation` (> 0).
fn generation_prefix(generation: u32) -> Vec<u8> {
    let mut k = vec![b'g'];
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

impl Manifest {
    /// The key of the stored block `block` of `name`, if there is one.
    pub fn key(&self, tag: u8, name: &str, block: u64) -> Option<Vec<u8>> {
        let generation = self
            .blocks
            .get(&(tag, name.to_string()))?
            .get(block as usize)
            .copied()
            .flatten()?;
        Some(block_key(generation, tag, name, block))
    }

    /// Names `generation` as the holder of a block; returns the key of the
    /// block it replaces, if another generation held it.
    fn set(&mut self, tag: u8, name: &str, block: u64, generation: u32) -> Option<Vec<u8>> {
        let gens = self.blocks.entry((tag, name.to_string())).or_default();
        if gens.len() <= block as usize {
            gens.resize(block as usize + 1, None);
        }
        let old = gens[block as usize].replace(generation)?;
        (old != generation).then(|| block_key(old, tag, name, block))
    }

    /// Reads the published manifest of a dimension tree.
    pub fn load(tree: &sled::Tree) -> Result<Manifest> {
        if let Some(bytes) = tree.get(HEAD)? {
            return decode("audience", &bytes);
        }
        Manifest::legacy(tree)
    }

    /// The layout before generations, read as generation 0: every block
    /// key there is, `m:next` and `m:columns`.
    fn legacy(tree: &sled::Tree) -> Result<Manifest> {
        let mut m = Manifest::default();
        let Some(next) = tree.get(b"m:next")? else {
            return Ok(m);
        };
        m.next = u64::from_be_bytes(next.as_ref().try_into().unwrap_or([0; 8]));
        if let Some(v) = tree.get(b"m:columns")? {
            m.extras = json_decode("audience", &v)?;
        }
        for tag in [TEXT, LINK] {
            for key in tree.scan_prefix([tag]).keys() {
                let key = key?;
                // `<tag><name>\0<block: 4 bytes>`
                let Some(body) = key.get(1..key.len().saturating_sub(4)) else {
                    continue;
                };
                let Some(name) = body.strip_suffix(&[0]) else {
                    continue;
                };
                let block = u32::from_be_bytes(key[key.len() - 4..].try_into().unwrap_or([0; 4]));
                m.set(tag, &String::from_utf8_lossy(name), block as u64, 0);
            }
        }
        Ok(m)
    }
}

/// The import in progress of a dimension, as recorded before its first
/// block is written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Staging {
    /// The generation its blocks are written under.
    pub generation: u32,
    /// The file being imported.
    pub file: String,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
}

/// An import found interrupted, and what was done about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// It never published: its staged blocks were discarded, and the
    /// audience was as it was before it.
    Discarded {
        /// The file it imported.
        file: String,
        /// When it started, in seconds since the Unix epoch.
        started: u64,
        /// Staged blocks deleted.
        blocks: u64,
    },
    /// An import by a version before generations, which stored chunks as it
    /// went: part of its file was stored.
    Partial {
        /// The file it imported.
        file: String,
    },
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interrupted::Discarded {
                file,
                started,
                blocks,
            } => {
                let when = chrono::DateTime::from_timestamp(*started as i64, 0).map_or_else(
                    || "?".into(),
                    |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                );
                write!(
                    f,
                    "an earlier import of {file} (started {when}) was interrupted before it \
                     took effect: the audience was as it was before it, and its {blocks} staged \
                     block(s) were discarded"
                )
            }
            Interrupted::Partial { file } => write!(
                f,
                "an earlier import of {file}, by a version of crosscast that stored imports \
                 in parts, was interrupted with part of it stored; importing that file again \
                 completes it"
            ),
        }
    }
}

/// Discards what an interrupted import staged, if there is one, and says
/// what it was.
pub fn recover(tree: &sled::Tree) -> Result<Option<Interrupted>> {
    if let Some(bytes) = tree.get(STAGING)? {
        let old: Staging = decode("audience", &bytes)?;
        let mut blocks = 0u64;
        let mut batch = sled::Batch::default();
        for key in tree.scan_prefix(generation_prefix(old.generation)).keys() {
            batch.remove(key?);
            blocks += 1;
        }
        batch.remove(STAGING);
        tree.apply_batch(batch)?;
        tree.flush()?;
        return Ok(Some(Interrupted::Discarded {
            file: old.file,
            started: old.started,
            blocks,
        }));
    }
    Ok(tree
        .get(LEGACY_IMPORTING)?
        .map(|bytes| Interrupted::Partial {
            file: String::from_utf8_lossy(&bytes).into_owned(),
        }))
}

/// Starts the import of `file` as the next generation after `base`,
/// recorded before anything is staged (after discarding what an
/// interrupted import staged).
pub fn begin(tree: &sled::Tree, base: &Manifest, file: &str) -> Result<Staging> {
    recover(tree)?;
    let staging = Staging {
        generation: base.generation + 1,
        file: file.to_string(),
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    tree.insert(STAGING, encode(&staging))?;
    tree.flush()?;
    Ok(staging)
}

/// The import in progress, if one was interrupted (or is running).
pub fn staging(tree: &sled::Tree) -> Result<Option<Staging>> {
    tree.get(STAGING)?
        .map(|b| decode("audience", &b))
        .transpose()
}

/// A manifest being built by an import: the published one, with the blocks
/// staged so far.
#[derive(Debug)]
pub struct Draft {
    /// The manifest as it will be published.
    pub manifest: Manifest,
    /// Keys of the blocks it replaces.
    replaced: Vec<Vec<u8>>,
}

impl Draft {
    /// A draft of `generation` on top of `base`.
    pub fn new(base: &Manifest, generation: u32) -> Draft {
        let mut manifest = base.clone();
        manifest.generation = generation;
        Draft {
            manifest,
            replaced: Vec::new(),
        }
    }

    /// The key to write a block of this generation under.
    pub fn stage(&mut self, tag: u8, name: &str, block: u64) -> Vec<u8> {
        let generation = self.manifest.generation;
        if let Some(old) = self.manifest.set(tag, name, block, generation) {
            self.replaced.push(old);
        }
        block_key(generation, tag, name, block)
    }
}

/// Blocks replaced by a publication, kept until no reader can need them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reclaim {
    /// (the generation that replaced them, their keys).
    pending: Vec<(u32, Vec<Vec<u8>>)>,
}

/// Publishes a draft: makes its staged blocks durable, then names them in
/// one write, which is the moment the import takes effect.
pub fn publish(tree: &sled::Tree, draft: Draft) -> Result<Manifest> {
    tree.flush()?;
    let mut reclaim: Reclaim = match tree.get(RECLAIM)? {
        Some(b) => decode("audience", &b)?,
        None => Reclaim::default(),
    };
    if !draft.replaced.is_empty() {
        reclaim
            .pending
            .push((draft.manifest.generation, draft.replaced));
    }
    let mut batch = sled::Batch::default();
    batch.insert(HEAD, encode(&draft.manifest));
    batch.insert(RECLAIM, encode(&reclaim));
    batch.remove(STAGING);
    for legacy in [LEGACY_IMPORTING, b"m:next".as_slice(), b"m:columns"] {
        batch.remove(legacy);
    }
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(draft.manifest)
}

/// Deletes replaced blocks that no manifest older than `oldest` (the
/// oldest one a reader holds) still names. Returns how many.
pub fn reclaim(tree: &sled::Tree, oldest: u32) -> Result<u64> {
    let Some(bytes) = tree.get(RECLAIM)? else {
        return Ok(0);
    };
    let mut reclaim: Reclaim = decode("audience", &bytes)?;
    let mut batch = sled::Batch::default();
    let mut deleted = 0;
    // Replaced by generation `g`: only manifests older than `g` name them.
    reclaim.pending.retain(|(g, keys)| {
        if *g > oldest {
            return true;
        }
        for k in keys {
            batch.remove(k.as_slice());
            deleted += 1;
        }
        false
    });
    if deleted == 0 {
        return Ok(0);
    }
    batch.insert(RECLAIM, encode(&reclaim));
    tree.apply_batch(batch)?;
    Ok(deleted)
}

/// The published manifests of every dimension, shared by the clones of a
/// store, and the manifests readers still hold.
#[derive(Debug, Default)]
pub struct Published {
    current: Mutex<BTreeMap<&'static str, Arc<Manifest>>>,
    held: Mutex<Vec<(&'static str, Weak<Manifest>)>>,
}

impl Published {
    /// The published manifest of `dim`, loaded on first use; the reader
    /// holds it for as long as it keeps the `Arc`.
    pub fn get(&self, dim: &'static str, tree: &sled::Tree) -> Result<Arc<Manifest>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = current.get(dim) {
            return Ok(m.clone());
        }
        let m = Arc::new(Manifest::load(tree)?);
        current.insert(dim, m.clone());
        Ok(m)
    }

    /// The published manifests of every dimension, taken together so that
    /// no publication falls between them.
    pub fn get_all(
        &self,
        trees: &[(&'static str, sled::Tree)],
    ) -> Result<BTreeMap<&'static str, Arc<Manifest>>> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for (dim, tree) in trees {
            let m = match current.get(dim) {
                Some(m) => m.clone(),
                None => {
                    let m = Arc::new(Manifest::load(tree)?);
                    current.insert(dim, m.clone());
                    m
                }
            };
            out.insert(*dim, m);
        }
        Ok(out)
    }

    /// Replaces the published manifest of `dim`; the old one stays with
    /// whoever holds it.
    pub fn set(&self, dim: &'static str, manifest: Manifest) -> Arc<Manifest> {
        let m = Arc::new(manifest);
        let old = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dim, m.clone());
        if let Some(old) = old {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.retain(|(_, w)| w.strong_count() > 0);
            held.push((dim, Arc::downgrade(&old)));
        }
        m
    }

    /// The oldest generation of `dim` a reader still holds (the published
    /// one when none holds an older).
    pub fn oldest_held(&self, dim: &'static str, published: u32) -> u32 {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.iter()
            .filter(|(d, _)| *d == dim)
            .filter_map(|(_, w)| w.upgrade())
            .map(|m| m.generation)
            .min()
            .unwrap_or(published)
            .min(published)
    }
}
