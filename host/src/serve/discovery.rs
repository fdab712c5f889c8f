//! How the CLI finds the server holding a data directory: `serve.json` in
//! it, written once the server listens and removed when it stops. It names
//! the server's loopback address for commands and the token they carry; the
//! data directory is its owner's alone (0700, the file 0600), so reading it
//! is what proves a client may act on the directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `serve.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerFile {
    /// The server's process id.
    pub pid: u32,
    /// Where the CLI's commands go (`http://127.0.0.1:PORT`).
    pub commands: String,
    /// Where the HTTP API listens, as people reach it.
    pub api: String,
    /// The token commands carry.
    pub token: String,
}

/// The file's path in a data directory.
pub fn path(data: &Path) -> PathBuf {
    data.join("serve.json")
}

/// Writes the file (0600, like everything in the data directory),
/// atomically: a client never reads half of it.
pub fn write(data: &Path, file: &ServerFile) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = data.join("serve.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(file).expect("serializable"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(data))
}

/// The server holding `data`, if its file is there and names a live
/// process.
pub fn find(data: &Path) -> Option<ServerFile> {
    let bytes = std::fs::read(path(data)).ok()?;
    let file: ServerFile = serde_json::from_slice(&bytes).ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(file.pid as libc::pid_t, 0) } == 0;
    alive.then_some(file)
}

/// Removes the file (the server is stopping).
pub fn remove(data: &Path) {
    let _ = std::fs::remove_file(path(data));
}
