//! Compiled components shared by data directories: `CROSSCAST_COMPILE_CACHE`
//! names a directory where the native code of each component (by engine and
//! sha256) is kept once compiled, so installing the same component in
//! another data directory (`init` in every test, every demo) loads it
//! instead of compiling it again.
//!
//! Off unless set. What the directory holds is native code this process
//! will run, so it is used only when it is this user's own and nobody
//! else may write to it. wasmtime's own cache would do the same at the
//! price of a zstd build and a configuration file; this is the few lines
//! the host needs, on wasmtime's public `serialize`/`deserialize_file`.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The environment variable naming the directory.
pub const ENV: &str = "CROSSCAST_COMPILE_CACHE";

/// A directory of compiled components, trusted as this user's own.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache `CROSSCAST_COMPILE_CACHE` names, if set and usable: made
    /// (0700) when missing; ignored, with a warning, when another user may
    /// write to it.
    pub fn from_env() -> Option<CompileCache> {
        let dir = PathBuf::from(std::env::var_os(ENV).filter(|v| !v.is_empty())?);
        match Self::at(&dir) {
            Ok(cache) => Some(cache),
            Err(why) => {
                tracing::warn!("{ENV}={} is not used: {why}", dir.display());
                None
            }
        }
    }

    /// The cache in `dir`, made when missing, if only this user may write
    /// to it.
    pub fn at(dir: &Path) -> Result<CompileCache, String> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create it: {e}"))?;
        }
        let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
        // SAFETY: getuid has no preconditions and cannot fail.
        let me = unsafe { libc::getuid() };
        if !meta.is_dir() {
            return Err("not a directory".into());
        }
        if meta.uid() != me {
            return Err("it belongs to another user".into());
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err("others may write to it (chmod go-w)".into());
        }
        Ok(CompileCache {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, engine_hash: u64, sha256: &str) -> PathBuf {
        self.dir.join(format!("{engine_hash:016x}-{sha256}.cwasm"))
    }

    /// The component of `bytes` (whose sha256 is `sha256`): loaded from the
    /// cache, or compiled and then kept there.
    pub fn component(
        &self,
        engine: &Engine,
        engine_hash: u64,
        sha256: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.path(engine_hash, sha256);
        if path.exists() {
            // SAFETY: the file is this engine's serialization of these
            // bytes, written below by this host into a directory only this
            // user may write to (checked in `at`).
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!("{} does not load, compiling: {e}", path.display()),
            }
        }
        let component = Component::new(engine, bytes)?;
        // Written aside and renamed: a reader never sees half a file.
        let aside = path.with_extension(format!("{}.part", std::process::id()));
        let kept = component
            .serialize()
            .map_err(std::io::Error::other)
            .and_then(|artifact| std::fs::write(&aside, artifact))
            .and_then(|()| std::fs::rename(&aside, &path));
        if let Err(e) = kept {
            let _ = std::fs::remove_file(&aside);
            tracing::warn!("cannot keep {}: {e}", path.display());
        }
        Ok(component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directory_of_ones_own_is_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        let cache = CompileCache::at(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "made private");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            CompileCache::at(&dir)
                .unwrap_err()
                .contains("others may write")
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

        // Compiled once, then loaded: the second engine compiles nothing.
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        // The empty component: the magic, version 0xd, layer 1.
        let bytes = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        cache.component(&engine, 7, "abc", &bytes).unwrap();
        let kept = dir.join(format!("{:016x}-abc.cwasm", 7));
        assert!(kept.exists());
        // A damaged file is compiled again, not trusted.
        std::fs::write(&kept, b"not an artifact").unwrap();
        cache.component(&engine, 7, "abc", &bytes).unwrap();
        assert!(std::fs::read(&kept).unwrap() != b"not an artifact");
    }
}
