//! Published versions of a dimension: which stored blocks make it up.
//!
//! sled has no snapshot reads and holds a batch in memory, so an import
//! cannot be one batch at any size. Instead an import of generation `G`
//! appends every block it changes to a file of its own
//! ([`super::blockfiles`]), then publishes with one small sled write: the
//! dimension's [`Manifest`], which names where every block is. Until then
//! readers, the export and any later import see the previous manifest, and a
//! crash leaves only a file no manifest names, deleted by the next import.
//! A generation's file is deleted once no manifest a reader holds names it.
//!
//! Keys of a dimension tree: `m:head` → the published manifest; `m:staging`
//! → the import in progress ([`Staging`]). The layout before generations
//! kept blocks as sled values (`<tag><name>\0<block>`, with `m:next` and
//! `m:columns`); it reads as a manifest of [`Location::Legacy`] blocks, and
//! the first import moves them into its file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

use super::blockfiles::{Files, Location};
use super::{Result, decode, encode, json_decode};

/// Tag of a text column block.
pub const TEXT: u8 = b'c';
/// Tag of a link block.
pub const LINK: u8 = b'l';

const HEAD: &[u8] = b"m:head";
const STAGING: &[u8] = b"m:staging";
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
    /// By (tag, column or link), where each block is (`None`: no block,
    /// every value absent).
    blocks: BTreeMap<(u8, String), Vec<Option<Location>>>,
}

/// The sled key of a block in the layout before generations.
pub fn legacy_key(tag: u8, name: &str, block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 6);
    k.push(tag);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&(block as u32).to_be_bytes());
    k
}

impl Manifest {
    /// Where block `block` of `name` is, if there is one.
    pub fn location(&self, tag: u8, name: &str, block: u64) -> Option<Location> {
        self.blocks
            .get(&(tag, name.to_string()))?
            .get(block as usize)
            .copied()
            .flatten()
    }

    /// Places a block; returns where it was.
    fn set(&mut self, tag: u8, name: &str, block: u64, at: Location) -> Option<Location> {
        let slots = self.blocks.entry((tag, name.to_string())).or_default();
        if slots.len() <= block as usize {
            slots.resize(block as usize + 1, None);
        }
        slots[block as usize].replace(at)
    }

    /// Every block: (tag, name, block number, location).
    pub fn each(&self) -> impl Iterator<Item = (u8, &str, u64, Location)> {
        self.blocks.iter().flat_map(|((tag, name), slots)| {
            slots
                .iter()
                .enumerate()
                .filter_map(move |(b, at)| Some((*tag, name.as_str(), b as u64, (*at)?)))
        })
    }

    /// Bytes named in each generation's file.
    pub fn live_bytes(&self) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for (.., at) in self.each() {
            if let Location::File {
                generation, len, ..
            } = at
            {
                *out.entry(generation).or_default() += len as u64;
            }
        }
        out
    }

    /// Whether any block is still in the layout before generations.
    pub fn has_legacy(&self) -> bool {
        self.each().any(|(.., at)| at == Location::Legacy)
    }

    /// Reads the published manifest of a dimension tree.
    pub fn load(tree: &sled::Tree) -> Result<Manifest> {
        if let Some(bytes) = tree.get(HEAD)? {
            return decode("audience", &bytes);
        }
        Manifest::legacy(tree)
    }

    /// The layout before generations: every block key there is, `m:next`
    /// and `m:columns`.
    fn legacy(tree: &sled::Tree) -> Result<Manifest> {
        let mut m = Manifest::default();
        let Some(next) = tree.get(b"m:next")? else {
            return Ok(m);
        };
        m.next = u64::from_be_bytes(next.as_ref().try_into().unwrap_or([0; 8]));
        if let Some(v) = tree.get(b"m:columns")? {
            m.extras = json_decode("audience", &v)?;
        }
        for (tag, name, block) in legacy_keys(tree)? {
            m.set(tag, &name, block, Location::Legacy);
        }
        Ok(m)
    }
}

/// The block keys of the layout before generations: (tag, name, block).
fn legacy_keys(tree: &sled::Tree) -> Result<Vec<(u8, String, u64)>> {
    let mut out = Vec::new();
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
            out.push((
                tag,
                String::from_utf8_lossy(name).into_owned(),
                block as u64,
            ));
        }
    }
    Ok(out)
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
        /// Bytes of staged blocks deleted.
        bytes: u64,
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
                bytes,
            } => {
                let when = chrono::DateTime::from_timestamp(*started as i64, 0).map_or_else(
                    || "?".into(),
                    |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                );
                write!(
                    f,
                    "an earlier import of {file} (started {when}) was interrupted before it \
                     took effect: the audience was as it was before it, and the {:.1} MB it \
                     had staged were discarded",
                    *bytes as f64 / 1e6
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

/// Deletes what an interrupted import of `dim` staged, if there is one,
/// and says what it was.
pub fn recover(tree: &sled::Tree, files: &Files, dim: &str) -> Result<Option<Interrupted>> {
    if let Some(bytes) = tree.get(STAGING)? {
        let old: Staging = decode("audience", &bytes)?;
        let deleted = files.delete(dim, old.generation)?;
        tree.remove(STAGING)?;
        tree.flush()?;
        return Ok(Some(Interrupted::Discarded {
            file: old.file,
            started: old.started,
            bytes: deleted,
        }));
    }
    Ok(tree
        .get(LEGACY_IMPORTING)?
        .map(|bytes| Interrupted::Partial {
            file: String::from_utf8_lossy(&bytes).into_owned(),
        }))
}

/// Starts the import of `file` as the next generation after `base`,
/// recorded before anything is staged (after deleting what an interrupted
/// one staged).
pub fn begin(
    tree: &sled::Tree,
    files: &Files,
    dim: &str,
    base: &Manifest,
    file: &str,
) -> Result<Staging> {
    recover(tree, files, dim)?;
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
}

impl Draft {
    /// A draft of `generation` on top of `base`.
    pub fn new(base: &Manifest, generation: u32) -> Draft {
        let mut manifest = base.clone();
        manifest.generation = generation;
        Draft { manifest }
    }

    /// Names where a block of this generation now is.
    pub fn place(&mut self, tag: u8, name: &str, block: u64, at: Location) {
        self.manifest.set(tag, name, block, at);
    }
}

/// Publishes a manifest in one small durable write, which is the moment
/// the import takes effect (its blocks are durable already).
pub fn publish(tree: &sled::Tree, manifest: &Manifest) -> Result<()> {
    let mut batch = sled::Batch::default();
    batch.insert(HEAD, encode(manifest));
    batch.remove(STAGING);
    batch.remove(LEGACY_IMPORTING);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

/// Deletes what no manifest in `in_use` names: generation files (but the
/// one being staged) and blocks of the layout before generations. Returns
/// the bytes deleted from files.
pub fn reclaim(
    tree: &sled::Tree,
    files: &Files,
    dim: &str,
    in_use: &[Arc<Manifest>],
) -> Result<u64> {
    let named: BTreeSet<u32> = in_use
        .iter()
        .flat_map(|m| m.live_bytes().into_keys())
        .collect();
    let staging = staging(tree)?.map(|s| s.generation);
    let mut deleted = 0;
    for g in files.generations(dim)? {
        if !named.contains(&g) && Some(g) != staging {
            deleted += files.delete(dim, g)?;
        }
    }
    if !in_use.iter().any(|m| m.has_legacy()) {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for (tag, name, block) in legacy_keys(tree)? {
            batch.remove(legacy_key(tag, &name, block));
            any = true;
        }
        if any {
            batch.remove(b"m:next".as_slice());
            batch.remove(b"m:columns".as_slice());
            tree.apply_batch(batch)?;
        }
    }
    Ok(deleted)
}

/// The published manifests of every dimension, shared by the clones of a
/// store, and the manifests readers still hold.
#[derive(Debug, Default)]
pub struct Published {
    current: Mutex<BTreeMap<&'static str, Arc<Manifest>>>,
    held: Mutex<Vec<(&'static str, Weak<Manifest>)>>,
    /// Dimensions an import is staging: one at a time each.
    importing: Mutex<BTreeSet<&'static str>>,
}

impl Published {
    /// Marks `dim` as being imported; refused while another import of it
    /// runs (both would stage the same generation).
    pub fn start_import(&self, dim: &'static str) -> Result<()> {
        let mut importing = self.importing.lock().unwrap_or_else(|e| e.into_inner());
        if !importing.insert(dim) {
            return Err(super::StoreError::ImportUnderWay(dim.to_string()));
        }
        Ok(())
    }

    /// Marks the import of `dim` as ended.
    pub fn end_import(&self, dim: &'static str) {
        self.importing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(dim);
    }

    /// The published manifest of `dim`, loaded on first use; the reader
    /// holds it for as long as it keeps the `Arc`.
    pub fn get(&self, dim: &'static str, tree: &sled::Tree) -> Result<Arc<Manifest>> {
        Ok(self.get_all(&[(dim, tree.clone())])?[dim].clone())
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
    pub fn set(&self, dim: &'static str, manifest: Manifest) {
        let old = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dim, Arc::new(manifest));
        if let Some(old) = old {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.retain(|(_, w)| w.strong_count() > 0);
            held.push((dim, Arc::downgrade(&old)));
        }
    }

    /// The manifests of `dim` in use: the published one and those readers
    /// still hold.
    pub fn in_use(&self, dim: &'static str, tree: &sled::Tree) -> Result<Vec<Arc<Manifest>>> {
        let mut out = vec![self.get(dim, tree)?];
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(
            held.iter()
                .filter(|(d, _)| *d == dim)
                .filter_map(|(_, w)| w.upgrade()),
        );
        Ok(out)
    }
}
