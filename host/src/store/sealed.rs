//! Values sealed at rest: the operator's secrets, the unsubscribe key and
//! cached provider tokens. Each is sealed with ChaCha20-Poly1305 (ring)
//! under a key kept *outside* the data directory (the key file, by default
//! `$XDG_CONFIG_HOME/crosscast/key`), bound to its name, so a copied data
//! directory holds nothing usable without the key file. Plaintext values
//! of earlier versions are sealed when the store opens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};

use super::{Result, Store, StoreError};

/// First byte of a sealed value: its format.
const SEALED_V1: u8 = 1;

/// Settings keys of sealed values: this prefix and the value's name.
const PREFIX: &str = "sealed/";

/// The key sealing a data directory's secrets, read (or made) on first use.
pub struct KeyFile {
    path: PathBuf,
    key: OnceLock<Arc<aead::LessSafeKey>>,
}

impl KeyFile {
    /// The key in the file at `path`.
    pub fn at(path: PathBuf) -> KeyFile {
        KeyFile {
            path,
            key: OnceLock::new(),
        }
    }

    /// Where the key is by default: `CROSSCAST_KEY_FILE`, else
    /// `$XDG_CONFIG_HOME/crosscast/key`, else `~/.config/crosscast/key`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("CROSSCAST_KEY_FILE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("."));
        config.join("crosscast").join("key")
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key; made (32 random bytes, mode 0600) if the file does not exist
    /// and `create` is set.
    fn key(&self, create: bool) -> Result<Arc<aead::LessSafeKey>> {
        if let Some(k) = self.key.get() {
            return Ok(k.clone());
        }
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => self.make()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Sealed(format!(
                    "the key file {} does not exist: secrets of this data directory were sealed \
                     with a key kept outside it; point --key-file (or CROSSCAST_KEY_FILE) at that key",
                    self.path.display()
                )));
            }
            Err(e) => {
                return Err(StoreError::Sealed(format!(
                    "cannot read the key file {}: {e}",
                    self.path.display()
                )));
            }
        };
        let unbound = <[u8; 32]>::try_from(bytes.as_slice())
            .ok()
            .and_then(|k| aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &k).ok())
            .ok_or_else(|| {
                StoreError::Sealed(format!(
                    "the key file {} does not hold a key (32 bytes)",
                    self.path.display()
                ))
            })?;
        let key = Arc::new(aead::LessSafeKey::new(unbound));
        Ok(self.key.get_or_init(|| key).clone())
    }

    /// Writes a new random key, readable by its owner only.
    fn make(&self) -> Result<Vec<u8>> {
        let mut k = [0u8; 32];
        SystemRandom::new()
            .fill(&mut k)
            .map_err(|_| StoreError::Io(std::io::Error::other("no system randomness")))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(&k)?;
        f.sync_all()?;
        Ok(k.to_vec())
    }
}

impl Store {
    /// Where the key sealing this data directory's secrets is.
    pub fn key_file(&self) -> &Path {
        self.keys.path()
    }

    /// Seals `value` under `name` and stores it (flushed).
    pub(crate) fn put_sealed(&self, name: &str, value: &[u8]) -> Result<()> {
        let tree = self.tree("settings")?;
        // A new key for a store that already holds values sealed with
        // another would make those unreadable: only the first value makes
        // the key.
        let first = tree.scan_prefix(PREFIX).next().is_none();
        let key = self.keys.key(first)?;
        let mut nonce = [0u8; aead::NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| StoreError::Io(std::io::Error::other("no system randomness")))?;
        let mut sealed = value.to_vec();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(name.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| StoreError::Sealed(format!("cannot seal `{name}`")))?;
        let mut stored = Vec::with_capacity(1 + nonce.len() + sealed.len());
        stored.push(SEALED_V1);
        stored.extend_from_slice(&nonce);
        stored.extend_from_slice(&sealed);
        tree.insert(format!("{PREFIX}{name}"), stored)?;
        self.flush()
    }

    /// The value sealed under `name`, opened.
    pub(crate) fn get_sealed(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(stored) = self.tree("settings")?.get(format!("{PREFIX}{name}"))? else {
            return Ok(None);
        };
        let key = self.keys.key(false)?;
        let unreadable = || {
            StoreError::Sealed(format!(
                "`{name}` cannot be opened with the key in {}: it was sealed with another key",
                self.keys.path().display()
            ))
        };
        let (nonce, sealed) = match stored.split_first() {
            Some((&SEALED_V1, rest)) if rest.len() >= aead::NONCE_LEN => {
                rest.split_at(aead::NONCE_LEN)
            }
            _ => return Err(unreadable()),
        };
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| unreadable())?;
        let mut buf = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, aead::Aad::from(name.as_bytes()), &mut buf)
            .map_err(|_| unreadable())?;
        Ok(Some(plain.to_vec()))
    }

    /// Removes the value sealed under `name` (flushed); false if none.
    pub(crate) fn remove_sealed(&self, name: &str) -> Result<bool> {
        let removed = self
            .tree("settings")?
            .remove(format!("{PREFIX}{name}"))?
            .is_some();
        self.flush()?;
        Ok(removed)
    }

    /// The names of sealed values starting with `prefix`.
    pub(crate) fn sealed_names(&self, prefix: &str) -> Result<Vec<String>> {
        let full = format!("{PREFIX}{prefix}");
        self.tree("settings")?
            .scan_prefix(&full)
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[PREFIX.len()..]).into_owned()))
            .collect()
    }

    /// Seals what earlier versions stored in plain text: secrets and the
    /// unsubscribe key (moved, the plain copies removed); cached tokens are
    /// dropped (they are made again when needed).
    pub(crate) fn seal_plaintext(&self) -> Result<()> {
        let settings = self.tree("settings")?;
        let mut plain: Vec<(String, Vec<u8>)> = Vec::new();
        for kv in settings.scan_prefix("secret/") {
            let (k, v) = kv?;
            plain.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        if let Some(v) = settings.get("unsubscribe/key")? {
            plain.push(("unsubscribe/key".into(), v.to_vec()));
        }
        for (name, value) in &plain {
            self.put_sealed(name, value)?;
            settings.remove(name.as_str())?;
        }
        let tokens = self.tree("tokens")?;
        if !tokens.is_empty() {
            tokens.clear()?;
        }
        if !plain.is_empty() {
            self.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_of_earlier_versions_is_sealed_on_open_and_bound_to_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        // What an earlier version wrote: plain text.
        let settings = store.tree("settings").unwrap();
        settings
            .insert("secret/old", b"plain-old-secret".as_ref())
            .unwrap();
        settings
            .insert("unsubscribe/key", [9u8; 32].as_ref())
            .unwrap();
        store
            .tree("tokens")
            .unwrap()
            .insert("k", b"tok".as_ref())
            .unwrap();
        store.flush().unwrap();
        drop((settings, store));
        let store = Store::for_tests(dir.path());
        assert_eq!(store.secret("old").unwrap(), b"plain-old-secret");
        assert_eq!(store.secret_names().unwrap(), ["old"]);
        let settings = store.tree("settings").unwrap();
        assert!(
            settings.get("secret/old").unwrap().is_none(),
            "plain copy gone"
        );
        assert!(settings.get("unsubscribe/key").unwrap().is_none());
        assert_eq!(
            store.get_sealed("unsubscribe/key").unwrap().unwrap(),
            [9u8; 32]
        );
        assert!(store.tree("tokens").unwrap().is_empty());
        // A sealed value moved under another name does not open.
        let sealed = settings.get("sealed/secret/old").unwrap().unwrap();
        settings.insert("sealed/secret/other", sealed).unwrap();
        assert!(matches!(store.secret("other"), Err(StoreError::Sealed(_))));
        // Nor with another key.
        drop((settings, store));
        std::fs::write(dir.path().join("key"), [1u8; 32]).unwrap();
        let store = Store::for_tests(dir.path());
        let e = store.secret("old").unwrap_err().to_string();
        assert!(e.contains("sealed with another key"), "{e}");
    }
}
