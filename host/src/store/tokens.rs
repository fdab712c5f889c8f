//! API tokens: bearer tokens for `crosscast serve`'s HTTP API. A token is
//! shown once when made; only its SHA-256 is kept, so a copy of the data
//! directory lets no one in.

use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Result, Store, StoreError, json_decode, json_encode};

/// A token as kept: its name, when it was made, the hash of its value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiToken {
    /// Who uses it.
    pub name: String,
    /// When it was made (ms since the epoch).
    pub created_at: i64,
    /// SHA-256 of the token, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub sha256: String,
}

/// Starts every token: says what it is to a secret scanner and to people.
pub const PREFIX: &str = "cct_";

const TREE: &str = "tokens";

/// SHA-256 of a token, hex.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (256 bits).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    format!("{PREFIX}{}", hex::encode(bytes))
}

impl Store {
    /// Makes a token named `name`; returns its value (shown once).
    pub fn create_token(&self, name: &str, now_ms: i64) -> Result<String> {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(StoreError::NotFound(format!(
                "`{name}` cannot name a token: 1 to 64 printable characters"
            )));
        }
        let tree = self.tree(TREE)?;
        let token = random_token();
        let record = ApiToken {
            name: name.to_string(),
            created_at: now_ms,
            sha256: digest(&token),
        };
        let made = tree.compare_and_swap(name, None::<&[u8]>, Some(json_encode(&record)))?;
        if made.is_err() {
            return Err(StoreError::NotFound(format!(
                "there is a token named `{name}` already: revoke it first, or choose another name"
            )));
        }
        self.flush()?;
        Ok(token)
    }

    /// The tokens, by name (their hashes included).
    pub fn tokens(&self) -> Result<Vec<ApiToken>> {
        self.tree(TREE)?
            .iter()
            .map(|kv| json_decode(TREE, &kv?.1))
            .collect()
    }

    /// Revokes a token; false if there is none of that name.
    pub fn revoke_token(&self, name: &str) -> Result<bool> {
        let gone = self.tree(TREE)?.remove(name)?.is_some();
        self.flush()?;
        Ok(gone)
    }

    /// The token whose value is `token`, if it is one not revoked.
    pub fn token_named_by(&self, token: &str) -> Result<Option<ApiToken>> {
        let hash = digest(token);
        // Few tokens: a scan; the comparison is on hashes, so its timing
        // says nothing about a token's value.
        Ok(self.tokens()?.into_iter().find(|t| t.sha256 == hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_shown_once_kept_hashed_and_revoked_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let token = store.create_token("ci", 1).unwrap();
        assert!(token.starts_with(PREFIX) && token.len() == PREFIX.len() + 64);
        assert!(store.create_token("ci", 2).is_err(), "one token per name");
        let kept = store.tokens().unwrap();
        assert_eq!(kept.len(), 1);
        assert_ne!(kept[0].sha256, token, "only the hash is kept");
        assert_eq!(store.token_named_by(&token).unwrap().unwrap().name, "ci");
        assert!(store.token_named_by("cct_0000").unwrap().is_none());
        assert!(store.revoke_token("ci").unwrap());
        assert!(!store.revoke_token("ci").unwrap());
        assert!(store.token_named_by(&token).unwrap().is_none());
    }
}
