//! All state, in one sled database under the data directory.
//!
//! sled allows one process per database; [`Store::open`] records the holder
//! in `crosscast.pid` so a second process gets an error naming it.
//! Writes that belong together go in one `apply_batch` or transaction, and
//! [`Store::flush`] runs before anything is reported as durable.
//!
//! The data directory is its owner's alone: mode 0700, everything in it
//! 0600 (tightened on open); secrets are sealed under a key kept outside it
//! (`sealed`).

pub mod audience;
pub mod blockfiles;
pub mod deliveries;
pub mod keyindex;
pub mod manifest;
pub mod plugins;
pub mod population;
pub mod runs;
pub mod schedules;
pub mod sealed;
pub mod settings;
pub mod signals;
pub mod spill;
pub mod staging;
pub mod suppression;
pub mod tally;
pub mod textblock;
pub mod tokens;

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
    /// The path is not a Crosscast data directory.
    #[error("{0}")]
    NotADataDirectory(String),
    /// A sealed value cannot be sealed or opened (its key is missing or
    /// another).
    #[error("{0}")]
    Sealed(String),
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
    /// An import of this dimension is under way in this process already.
    #[error("an import of {0}s is under way already; wait for it to end")]
    ImportUnderWay(String),
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
    /// What seals secrets.
    keys: std::sync::Arc<sealed::KeyFile>,
    /// The audience as published, and the versions readers still hold.
    published: std::sync::Arc<manifest::Published>,
    /// The files holding the audience's column blocks.
    blocks: std::sync::Arc<blockfiles::Files>,
    /// The data directory's lock (its pid file), held while any clone lives.
    _lock: std::sync::Arc<std::fs::File>,
    /// The audience this handle reads ([`Store::pinned_now`]); none: as
    /// published when each read begins.
    pinned: Option<audience::Pinned>,
    /// Delivery counts of the runs looked at last, folded incrementally.
    tallies: std::sync::Arc<tally::Tallies>,
}

/// How a data directory is opened.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create it if it does not exist (`crosscast init`); otherwise a path
    /// that is not a data directory is refused.
    pub create: bool,
    /// The key file sealing its secrets.
    pub key_file: PathBuf,
    /// Who opens it, as the pid file shows it (`crosscast worker`).
    pub holder: String,
    /// sled's page cache, in MiB ([`cache_mb_from_env`]).
    pub cache_mb: u64,
}

/// sled's page cache by default, in MiB: enough for the column blocks a
/// targeting pass reads again; the operating system caches the rest.
pub const DEFAULT_CACHE_MB: u64 = 128;

/// The page cache size `CROSSCAST_CACHE_MB` asks for, else
/// [`DEFAULT_CACHE_MB`]; a value that is not a whole number of at least 8
/// is an error.
pub fn cache_mb_from_env() -> std::result::Result<u64, String> {
    match std::env::var("CROSSCAST_CACHE_MB") {
        Err(_) => Ok(DEFAULT_CACHE_MB),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(mb) if mb >= 8 => Ok(mb),
            _ => Err(format!(
                "CROSSCAST_CACHE_MB is a whole number of MiB, at least 8, not `{v}`"
            )),
        },
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: false,
            key_file: sealed::KeyFile::default_path(),
            holder: "crosscast".into(),
            cache_mb: DEFAULT_CACHE_MB,
        }
    }
}

impl Store {
    /// Opens the data directory in `dir`, failing clearly if it is not one
    /// or another process holds it.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with(dir, &OpenOptions::default())
    }

    /// Opens the data directory in `dir`, creating it if needed.
    pub fn create(dir: &Path) -> Result<Store> {
        Store::open_with(
            dir,
            &OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )
    }

    /// A data directory for unit tests in `dir`, its key file in it too.
    #[cfg(test)]
    pub fn for_tests(dir: &Path) -> Store {
        Store::open_with(
            dir,
            &OpenOptions {
                create: true,
                key_file: dir.join("key"),
                holder: "test".into(),
                cache_mb: 16,
            },
        )
        .expect("a store for tests")
    }

    /// Opens (or, with `create`, creates) the data directory in `dir`.
    pub fn open_with(dir: &Path, options: &OpenOptions) -> Result<Store> {
        check_data_dir(dir, options.create)?;
        std::fs::create_dir_all(dir)?;
        private(dir)?;
        // The directory's own lock, taken before sled opens: the pid file,
        // locked for as long as the store is open, says who holds it.
        let pid_file = dir.join("crosscast.pid");
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pid_file)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&pid_file)
                    .map(|s| s.trim().to_string())
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "another process".into());
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        // The pid and the command's name: never its arguments, which may
        // name files or values an operator would rather not leave here.
        let me = format!("process {} ({})", std::process::id(), options.holder);
        lock.set_len(0)?;
        std::io::Write::write_all(&mut lock, me.as_bytes())?;
        sled_released(&dir.join("db").join("db"))?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            // Bounded cache: the page cache serves repeated column blocks; the
            // OS cache serves the rest.
            .cache_capacity(options.cache_mb * 1024 * 1024)
            .open()?;
        private(dir)?;
        let store = Store {
            db,
            dir: dir.to_path_buf(),
            keys: std::sync::Arc::new(sealed::KeyFile::at(options.key_file.clone())),
            published: Default::default(),
            blocks: std::sync::Arc::new(blockfiles::Files::new(dir)),
            _lock: std::sync::Arc::new(lock),
            pinned: None,
            tallies: Default::default(),
        };
        store.seal_plaintext()?;
        Ok(store)
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

/// Refuses a path that is not a data directory: a file, or (unless
/// `create`) a directory without a database in it.
/// How long to wait for a store this process just closed to let go of
/// sled's file.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until nobody holds sled's own lock on `file`.
///
/// Holding the pid file, only a store this process closed can still hold
/// it: sled's `Drop` returns before its I/O threads close the file
/// (spacejam/sled#1234), so opening the directory again at once (the demo
/// runs one command after another) can find it locked. sled reports that
/// as an untyped error; the wait decides on the lock itself.
fn sled_released(file: &Path) -> Result<()> {
    let Ok(probe) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
    else {
        // No database yet (or sled will say what is wrong with it).
        return Ok(());
    };
    let started = std::time::Instant::now();
    loop {
        match probe.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < RELEASE_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

fn check_data_dir(dir: &Path, create: bool) -> Result<()> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(StoreError::NotADataDirectory(format!(
            "{shown} is not a directory: --data names a Crosscast data directory"
        ))),
        Ok(_) if create || dir.join("db").is_dir() => Ok(()),
        Ok(_) => Err(StoreError::NotADataDirectory(format!(
            "{shown} is not a Crosscast data directory (no database in it); create one with \
             `crosscast --data {shown} init`"
        ))),
        Err(_) if create => Ok(()),
        Err(e) => Err(StoreError::NotADataDirectory(format!(
            "there is no data directory at {shown} ({e}); create one with `crosscast --data \
             {shown} init`"
        ))),
    }
}

/// Makes `dir` and everything in it its owner's alone: directories 0700,
/// files 0600.
fn private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |m: u32| std::fs::Permissions::from_mode(m);
    std::fs::set_permissions(dir, mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            private(&entry.path())?;
        } else if kind.is_file() {
            std::fs::set_permissions(entry.path(), mode(0o600))?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// sled's file still locked by a closing store delays the next open; it
    /// does not fail it.
    #[test]
    fn opening_again_waits_for_sled_to_let_go() {
        let tmp = tempfile::tempdir().unwrap();
        drop(Store::for_tests(tmp.path()));
        let sled_file = tmp.path().join("db").join("db");
        let held = std::fs::OpenOptions::new()
            .write(true)
            .open(&sled_file)
            .unwrap();
        held.lock().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let started = std::time::Instant::now();
        let store = Store::for_tests(tmp.path());
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        release.join().unwrap();
        drop(store);
        // And one command after another, as the demo runs them.
        for _ in 0..50 {
            let store = Store::for_tests(tmp.path());
            store.flush().unwrap();
        }
    }
}
