//! The operator's settings: external accounts and secrets.
//!
//! Secrets are stored in the data directory and only ever read by host
//! capabilities; no WIT function returns them.

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, json_decode, json_encode};

/// A named connection to a provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Base URL (`smtp://host:port`, `https://api.example`).
    pub url: String,
    /// Public user / account identifier.
    pub user: Option<String>,
    /// Name of the secret holding the password or token.
    pub secret: Option<String>,
}

impl Store {
    /// Creates or replaces an account.
    pub fn put_account(&self, account: &Account) -> Result<()> {
        self.tree("settings")?
            .insert(format!("account/{}", account.name), json_encode(account))?;
        self.flush()
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Result<Account> {
        match self.tree("settings")?.get(format!("account/{name}"))? {
            Some(v) => json_decode("settings", &v),
            None => Err(StoreError::NotFound(format!(
                "no account `{name}` (see `crosscast account list`)"
            ))),
        }
    }

    /// Every account.
    pub fn accounts(&self) -> Result<Vec<Account>> {
        self.tree("settings")?
            .scan_prefix("account/")
            .values()
            .map(|v| json_decode("settings", &v?))
            .collect()
    }

    /// Stores a secret.
    pub fn put_secret(&self, name: &str, value: &[u8]) -> Result<()> {
        self.tree("settings")?
            .insert(format!("secret/{name}"), value)?;
        self.flush()
    }

    /// A secret's bytes, for host capabilities only.
    pub(crate) fn secret(&self, name: &str) -> Result<Vec<u8>> {
        self.tree("settings")?
            .get(format!("secret/{name}"))?
            .map(|v| v.to_vec())
            .ok_or_else(|| {
                StoreError::NotFound(format!("no secret `{name}` (see `crosscast secret list`)"))
            })
    }

    /// Names of the stored secrets.
    pub fn secret_names(&self) -> Result<Vec<String>> {
        self.tree("settings")?
            .scan_prefix("secret/")
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?["secret/".len()..]).into_owned()))
            .collect()
    }
}
