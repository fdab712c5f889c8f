//! Installed plugins: their records, component bytes and precompiled
//! artifacts (keyed by the engine's compatibility hash, so a new wasmtime or
//! another configuration recompiles instead of loading foreign bytes).

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, json_decode, json_encode};

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    /// An activity (query, split, wait...).
    Activity,
    /// A delivery channel (email, SMS...).
    Channel,
}

/// An installed plugin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PluginRecord {
    /// Name, as workflows reference it in `type`.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub summary: String,
    /// Its world.
    pub kind: PluginKind,
    /// sha256 of the component bytes (hex).
    pub sha256: String,
    /// Accounts the operator granted it.
    pub accounts: Vec<String>,
    /// For a channel sending HTTP requests, the suppression list its
    /// quarantines and opt-outs go to and exclusions are read from, when the
    /// operator chose one (`--suppression-list sms` makes a third party's SMS
    /// channel honour the SMS denylist); otherwise the channel's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppression_list: Option<String>,
    /// What it was built against (`crosscast:plugin/channel@0.3.0,
    /// crosscast-sdk 0.1.0`), as found at install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
}

impl Store {
    /// Stores a plugin's component bytes (by sha256) and its record.
    pub fn put_plugin(&self, record: &PluginRecord, component: &[u8]) -> Result<()> {
        self.tree("components")?
            .insert(record.sha256.as_bytes(), component)?;
        self.tree("plugins")?
            .insert(record.name.as_bytes(), json_encode(record))?;
        self.flush()
    }

    /// Updates a plugin's record (grants).
    pub fn update_plugin(&self, record: &PluginRecord) -> Result<()> {
        self.tree("plugins")?
            .insert(record.name.as_bytes(), json_encode(record))?;
        self.flush()
    }

    /// An installed plugin by name.
    pub fn plugin(&self, name: &str) -> Result<PluginRecord> {
        match self.tree("plugins")?.get(name.as_bytes())? {
            Some(v) => json_decode("plugins", &v),
            None => Err(StoreError::NotFound(format!(
                "no plugin `{name}` is installed (see `crosscast plugin list`)"
            ))),
        }
    }

    /// Every installed plugin, by name.
    pub fn plugins(&self) -> Result<Vec<PluginRecord>> {
        self.tree("plugins")?
            .iter()
            .values()
            .map(|v| json_decode("plugins", &v?))
            .collect()
    }

    /// A component's bytes by sha256.
    pub fn component(&self, sha256: &str) -> Result<Vec<u8>> {
        self.tree("components")?
            .get(sha256.as_bytes())?
            .map(|v| v.to_vec())
            .ok_or_else(|| StoreError::NotFound(format!("component {sha256} is not stored")))
    }

    /// A precompiled artifact written by this host for `engine`.
    pub fn artifact(&self, engine: u64, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree("artifacts")?
            .get(artifact_key(engine, sha256))?
            .map(|v| v.to_vec()))
    }

    /// Stores a precompiled artifact.
    pub fn put_artifact(&self, engine: u64, sha256: &str, bytes: &[u8]) -> Result<()> {
        self.tree("artifacts")?
            .insert(artifact_key(engine, sha256), bytes)?;
        self.flush()
    }
}

fn artifact_key(engine: u64, sha256: &str) -> Vec<u8> {
    let mut k = engine.to_be_bytes().to_vec();
    k.extend_from_slice(sha256.as_bytes());
    k
}
