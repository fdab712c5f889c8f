//! All state, in one sled database under the data directory.
//!
//! sled allows one process per database; [`Store::open`] records the holder
//! in `crosscast.pid` so a second process gets an error naming it.
//! Writes that belong together go in one `apply_batch` or transaction, and
//! [`Store::flush`] runs before anything is reported as durable.

pub mod audience;
pub mod deliveries;
pub mod plugins;
pub mod population;
pub mod runs;
pub mod settings;
pub mod suppression;
pub mod textblock;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the data directory.
    #[error(
        "the data directory {dir} is in use by {holder}; stop it or use another --data directory"
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// Who holds it, from the pid file.
        holder: String,
    },
    /// sled failed.
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A transaction failed.
    #[error("storage transaction failed: {0}")]
    Transaction(String),
    /// A stored value does not decode (a bug or a damaged store).
    #[error("corrupt stored value in {tree}: {message}")]
    Corrupt {
        /// Which tree.
        tree: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Something looked up does not exist.
    #[error("{0}")]
    NotFound(String),
    /// File-system error around the database.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result alias for storage operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The open database and its trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `dir`, failing clearly if another
    /// process holds it.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let pid_file = dir.join("crosscast.pid");
        let db = sled::Config::new()
            .path(dir.join("db"))
            // Bounded cache: the page cache serves repeated column blocks; the
            // OS cache serves the rest.
            .cache_capacity(128 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                // sled wraps the failed file lock in an error of its own kind.
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    let holder = std::fs::read_to_string(&pid_file)
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "another process".into());
                    StoreError::Locked {
                        dir: dir.to_path_buf(),
                        holder,
                    }
                }
                other => StoreError::Sled(other),
            })?;
        let me = format!(
            "process {} ({})",
            std::process::id(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        std::fs::write(&pid_file, me)?;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens a named tree.
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// A fresh, never reused id (monotonic across restarts).
    pub fn next_id(&self) -> Result<u64> {
        // Start at 1: people read run numbers, and 0 looks like "none".
        Ok(self.db.generate_id()? + 1)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // postcard cannot fail on our own types (no maps with non-string keys
    // issue, no unsupported types), so a failure is a bug.
    postcard::to_allocvec(value).expect("encodable value")
}

pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        message: e.to_string(),
    })
}

pub(crate) fn json_encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializable value")
}

pub(crate) fn json_decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        message: e.to_string(),
    })
}
