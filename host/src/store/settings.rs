//! The operator's settings: external accounts and secrets.
//!
//! Secrets are sealed in the data directory (`sealed`) and only ever read by
//! host capabilities; no WIT function returns them. The data directory also
//! holds its own random instance key, which makes its Message-IDs its own.

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, json_decode, json_encode};

/// How the host authenticates requests of an account.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    Hash,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// Basic auth when the account has a user, else a bearer token (the secret).
    #[default]
    Auto,
    /// HTTP Basic: user and secret.
    Basic,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// APNs provider token: ES256 JWT signed with the secret (.p8 key);
    /// params `team_id` and `key_id`.
    Apns,
    /// Google OAuth 2.0 for service accounts: the secret is the service
    /// account JSON; the host exchanges an RS256 assertion for access tokens.
    Google,
}

/// A named connection to a provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
pub struct Account {
    /// Its name.
    pub name: String,
    /// Base URL (`smtp://host:port`, `https://api.example`).
    pub url: String,
    /// Public user / account identifier.
    pub user: Option<String>,
    /// Name of the secret holding the password, token or key.
    pub secret: Option<String>,
    /// How requests are authenticated.
    #[serde(default)]
    pub auth: AuthScheme,
    /// Public parameters (team id, key id, project id, topic...).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// Most messages per second through this account (none: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Most messages in flight at once through this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// How long each network step may take, in seconds (none: the
    /// default, [`DEFAULT_TIMEOUT_S`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

/// How long, by default, each network step of an account may take: an
/// HTTP request from the moment it is on a connection to its whole answer,
/// an SMTP greeting, command or message to its reply, a token exchange.
pub const DEFAULT_TIMEOUT_S: u32 = 30;

/// Where an account's URL takes its secret (`https://hooks.example/{secret}`):
/// a webhook whose URL is its credential. The host puts the secret there
/// when it sends; plugins and listings see the placeholder.
pub const URL_SECRET: &str = "{secret}";

/// The account parameters crosscast itself reads (plugins may read others,
/// such as APNs' `topic`).
pub const HOST_PARAMS: &[&str] = &["allow_private", "team_id", "key_id", "project_id"];

/// The host parameter `name` is most likely a misspelling of, if any.
fn near_host_param(name: &str) -> Option<&'static str> {
    if HOST_PARAMS.contains(&name) {
        return None;
    }
    HOST_PARAMS
        .iter()
        .copied()
        .find(|p| strsim::levenshtein(name, p) <= 2 || p.eq_ignore_ascii_case(name))
}

impl Account {
    /// True if the secret goes in the URL's path rather than a header.
    pub fn secret_in_url(&self) -> bool {
        self.url.contains(URL_SECRET)
    }

    /// Checks an account's settings that `account set` can refuse at once.
    pub fn check(&self) -> Result<(), String> {
        if self.secret_in_url() {
            self.check_url_secret()?;
        }
        url::Url::parse(&self.url).map_err(|e| format!("`{}` is not a URL: {e}", self.url))?;
        for name in self.params.keys() {
            if let Some(meant) = near_host_param(name) {
                return Err(format!(
                    "`{name}` is not a parameter crosscast reads: did you mean `{meant}`?"
                ));
            }
        }
        if let Some(v) = self.params.get("allow_private")
            && v != "true"
            && v != "false"
        {
            return Err(format!("allow_private is `true` or `false`, not `{v}`"));
        }
        let needed: &[&str] = match self.auth {
            AuthScheme::Apns => &["team_id", "key_id"],
            AuthScheme::Google => &["project_id"],
            _ => &[],
        };
        for p in needed {
            self.param(p)?;
        }
        Ok(())
    }

    /// The rules of a `{secret}` in the URL.
    fn check_url_secret(&self) -> Result<(), String> {
        let after_authority = self
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, path)| path);
        if !after_authority.is_some_and(|p| p.contains(URL_SECRET)) {
            return Err(format!(
                "`{URL_SECRET}` may stand only in the URL's path, never its host: `{}`",
                self.url
            ));
        }
        if self.secret.is_none() {
            return Err(format!("`{URL_SECRET}` in the URL needs --secret NAME"));
        }
        if self.auth != AuthScheme::Auto || self.user.is_some() {
            return Err(format!(
                "an account whose URL holds its secret (`{URL_SECRET}`) authenticates by it \
                 alone: drop --auth and --user"
            ));
        }
        Ok(())
    }

    /// The URL with `secret` in its place, for the host's own requests.
    pub fn url_with_secret(&self, secret: &str) -> Result<String, String> {
        // A path's characters only: a `?`, `#` or space would move the
        // secret out of the path (into a query or fragment a log may show).
        let fits = |c: char| c.is_ascii_alphanumeric() || "-._~/!$&'()*+,;=:@%".contains(c);
        if secret.is_empty() || !secret.chars().all(fits) {
            return Err(format!(
                "the secret of account `{}` cannot stand in a URL's path (letters, digits, \
                 `/` and `-._~!$&'()*+,;=:@%` only)",
                self.name
            ));
        }
        Ok(self.url.replace(URL_SECRET, secret))
    }

    /// How long each network step may take ([`Account::timeout`]).
    pub fn step_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.timeout.unwrap_or(DEFAULT_TIMEOUT_S)))
    }

    /// True if the account may reach internal addresses (`--param
    /// allow_private=true`), which the egress policy otherwise refuses.
    pub fn allows_internal(&self) -> bool {
        self.params
            .get("allow_private")
            .is_some_and(|v| v == "true")
    }

    /// True when its authentication needs a secret (a bearer token, a
    /// signing key, a service account).
    pub fn needs_secret(&self) -> bool {
        matches!(
            self.auth,
            AuthScheme::Bearer | AuthScheme::Apns | AuthScheme::Google
        ) || self.secret_in_url()
    }

    /// A parameter the account must have.
    pub fn param(&self, name: &str) -> Result<&str, String> {
        self.params
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("account `{}` needs --param {name}=...", self.name))
    }
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

    /// Stores a secret, sealed.
    pub fn put_secret(&self, name: &str, value: &[u8]) -> Result<()> {
        self.put_sealed(&format!("secret/{name}"), value)
    }

    /// A secret's bytes, for host capabilities only.
    pub(crate) fn secret(&self, name: &str) -> Result<Vec<u8>> {
        self.get_sealed(&format!("secret/{name}"))?.ok_or_else(|| {
            StoreError::NotFound(format!("no secret `{name}` (see `crosscast secret list`)"))
        })
    }

    /// Removes a secret; false if there was none.
    pub fn remove_secret(&self, name: &str) -> Result<bool> {
        self.remove_sealed(&format!("secret/{name}"))
    }

    /// Names of the stored secrets.
    pub fn secret_names(&self) -> Result<Vec<String>> {
        Ok(self
            .sealed_names("secret/")?
            .into_iter()
            .map(|n| n["secret/".len()..].to_string())
            .collect())
    }
}

impl Store {
    /// This data directory's random key (made on first use): what makes
    /// its Message-IDs differ from another installation's for the same run,
    /// activity and target.
    pub fn instance_key(&self) -> Result<[u8; 16]> {
        let tree = self.tree("settings")?;
        if let Some(v) = tree.get("instance-key")?
            && let Ok(key) = <[u8; 16]>::try_from(v.as_ref())
        {
            return Ok(key);
        }
        let mut key = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key).map_err(
            |_| StoreError::Io(std::io::Error::other("the system has no random numbers")),
        )?;
        tree.insert("instance-key", &key)?;
        self.flush()?;
        Ok(key)
    }

    /// Trusts a CA certificate (PEM) for outbound TLS, under a name.
    pub fn put_ca(&self, name: &str, pem: &[u8]) -> Result<()> {
        self.tree("settings")?.insert(format!("ca/{name}"), pem)?;
        self.flush()
    }

    /// The trusted CA certificates: (name, PEM).
    pub fn cas(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.tree("settings")?
            .scan_prefix("ca/")
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k["ca/".len()..]).into_owned(),
                    v.to_vec(),
                ))
            })
            .collect()
    }

    /// A cached token, if still valid at `now_ms` (system clock).
    pub(crate) fn cached_token(&self, key: &str, now_ms: i64) -> Result<Option<String>> {
        Ok(match self.get_sealed(&format!("token/{key}"))? {
            Some(v) => {
                let (token, until): (String, i64) = json_decode("tokens", &v)?;
                (until > now_ms).then_some(token)
            }
            None => None,
        })
    }

    /// Caches a token until `until_ms` (system clock), sealed like secrets.
    pub(crate) fn cache_token(&self, key: &str, token: &str, until_ms: i64) -> Result<()> {
        self.put_sealed(&format!("token/{key}"), &json_encode(&(token, until_ms)))
    }
}
