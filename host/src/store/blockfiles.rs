//! Column blocks in append-only files, one per generation of a dimension,
//! under `<data>/audience/<dimension>/<generation>.blocks`.
//!
//! Why not sled values: sled keeps what it writes in memory until its page
//! cache evicts it, and its cache neither counts values past its blob
//! threshold (a block of 4,096 tokens is one) nor checks a shard until 64
//! pages of it were touched, which a few thousand large blocks never reach:
//! importing 3M recipients held 266 MB of written blocks whatever the cache
//! size (heaptrack, BENCHMARKS.md). Files written once and read with `pread`
//! leave the caching to the operating system, outside the process. sled
//! keeps what must be atomic: the manifests that say which bytes of which
//! file make up the published audience.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{Result, StoreError};

/// Where a block's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Location {
    /// A sled key of the layout before generations.
    Legacy,
    /// `len` bytes at `offset` of the file of `generation`.
    File {
        /// The generation whose file holds it.
        generation: u32,
        /// Byte offset in that file.
        offset: u64,
        /// Byte length.
        len: u32,
    },
}

/// The block files of every dimension, and the ones open for reading.
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    open: Mutex<HashMap<(String, u32), Arc<File>>>,
}

impl Files {
    /// The block files under `<data>/audience`.
    pub fn new(data: &Path) -> Files {
        Files {
            dir: data.join("audience"),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, dim: &str, generation: u32) -> PathBuf {
        self.dir.join(dim).join(format!("{generation:010}.blocks"))
    }

    /// Reads `len` bytes at `offset` of a generation's file.
    pub fn read(&self, dim: &str, generation: u32, offset: u64, len: u32) -> Result<Vec<u8>> {
        let file = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            match open.get(&(dim.to_string(), generation)) {
                Some(f) => f.clone(),
                None => {
                    let path = self.path(dim, generation);
                    let f = Arc::new(File::open(&path).map_err(|e| StoreError::Corrupt {
                        tree: "audience",
                        message: format!("block file {} cannot be read: {e}", path.display()),
                    })?);
                    open.insert((dim.to_string(), generation), f.clone());
                    f
                }
            }
        };
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Starts the file of a new generation (replacing any left by a crash).
    pub fn create(&self, dim: &str, generation: u32) -> Result<Writer> {
        let path = self.path(dim, generation);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        self.forget(dim, generation);
        let file = File::create(&path)?;
        Ok(Writer {
            file,
            path,
            offset: 0,
        })
    }

    /// Bytes in a generation's file (0 if it has none).
    pub fn size(&self, dim: &str, generation: u32) -> u64 {
        std::fs::metadata(self.path(dim, generation)).map_or(0, |m| m.len())
    }

    /// Where an import of a generation keeps its scratch files (the runs
    /// of its sorted updates).
    pub fn scratch(&self, dim: &str, generation: u32) -> PathBuf {
        self.dir.join(dim).join(format!("{generation:010}.scratch"))
    }

    /// Deletes a generation's scratch files.
    pub fn delete_scratch(&self, dim: &str, generation: u32) -> Result<()> {
        match std::fs::remove_dir_all(self.scratch(dim, generation)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Deletes a generation's file (and scratch files); returns its size.
    pub fn delete(&self, dim: &str, generation: u32) -> Result<u64> {
        self.delete_scratch(dim, generation)?;
        let size = self.size(dim, generation);
        self.forget(dim, generation);
        match std::fs::remove_file(self.path(dim, generation)) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The generations that have a file.
    pub fn generations(&self, dim: &str) -> Result<Vec<u32>> {
        let dir = self.dir.join(dim);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if let Some(g) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".blocks"))
                .and_then(|n| n.parse().ok())
            {
                out.push(g);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn forget(&self, dim: &str, generation: u32) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(dim.to_string(), generation));
    }
}

/// The file of a generation being written.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
    offset: u64,
}

impl Writer {
    /// Appends a block; returns where it is.
    pub fn append(&mut self, generation: u32, bytes: &[u8]) -> Result<Location> {
        let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Corrupt {
            tree: "audience",
            message: format!("a block of {} bytes is too large", bytes.len()),
        })?;
        self.file.write_all(bytes)?;
        let at = Location::File {
            generation,
            offset: self.offset,
            len,
        };
        self.offset += bytes.len() as u64;
        Ok(at)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Makes the file and its directory entry durable: before a manifest
    /// names anything in it.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
