//! Signing on a plugin's behalf: the host turns an account's secret into the
//! credential a provider wants — Basic auth, a bearer token, an APNs provider
//! token (ES256 JWT) or a Google OAuth access token (RS256 assertion
//! exchanged at the service account's token URI). Plugins never see the
//! secret or the token. Tokens are cached in the store, so separate
//! executions and processes reuse them: APNs tokens for 40 minutes (Apple
//! wants them refreshed after 20 and before 60), OAuth tokens until
//! `expires_in`. Token times are on the system clock, the providers' clock.
//!
//! A failure says whether trying again may help: a token endpoint that
//! cannot be reached, does not answer in time or answers 5xx or 429 is
//! transient (the messages are retried with backoff); one that refuses the
//! grant, a key that does not sign, a missing secret or an untrusted
//! certificate is permanent. The token endpoint is reached under the
//! account's egress policy, like the provider itself.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::deliver::failure::Failure;
use crate::deliver::net::trust::Trust;
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::settings::{Account, AuthScheme};

/// How long an APNs provider token is reused.
const APNS_TOKEN_TTL_MS: i64 = 40 * 60 * 1000;
/// Default OAuth scope for FCM.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// What to put on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing.
    None,
    /// HTTP Basic.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: Option<String>,
    },
    /// `Authorization: Bearer ...`.
    Bearer(String),
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The credential for a request of `account`; token exchanges trust
/// `trust`.
pub async fn credential(
    store: &Store,
    trust: &Trust,
    account: &Account,
) -> Result<Credential, Failure> {
    // Its secret is in the URL it is sent to: no header carries it.
    if account.secret_in_url() {
        return Ok(Credential::None);
    }
    let secret = match &account.secret {
        Some(name) => Some(
            store
                .secret(name)
                .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))?,
        ),
        None => None,
    };
    let text = |s: &Option<Vec<u8>>| {
        s.as_ref()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
    };
    let need = |s: Option<Vec<u8>>| {
        s.ok_or_else(|| {
            Failure::permanent(
                Cause::Account,
                format!(
                    "account `{}` has no secret (set one with --secret)",
                    account.name
                ),
            )
        })
    };
    match account.auth {
        AuthScheme::Auto => Ok(match (&account.user, text(&secret)) {
            (Some(user), password) => Credential::Basic {
                user: user.clone(),
                password,
            },
            (None, Some(token)) => Credential::Bearer(token),
            (None, None) => Credential::None,
        }),
        AuthScheme::Basic => Ok(Credential::Basic {
            user: account.user.clone().ok_or_else(|| {
                Failure::permanent(
                    Cause::Account,
                    format!("account `{}` needs --user for basic auth", account.name),
                )
            })?,
            password: text(&secret),
        }),
        AuthScheme::Bearer => Ok(Credential::Bearer(
            text(&Some(need(secret)?)).unwrap_or_default(),
        )),
        AuthScheme::Apns => {
            apns_token(store, account, &need(secret)?, Reuse::Cached).map(Credential::Bearer)
        }
        AuthScheme::Google => google_token(store, trust, account, &need(secret)?, Reuse::Cached)
            .await
            .map(Credential::Bearer),
    }
}

/// Whether a token may come from the store's cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// A cached token is good enough (sending).
    Cached,
    /// Make a new one (checking the secret itself).
    Fresh,
}

/// What checking an account's credential without sending can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Requests go without a credential.
    Nothing,
    /// The token endpoint exchanged the credential for a token.
    Exchanged {
        /// Where.
        endpoint: String,
    },
    /// Made here (a signed token, a password, a secret in the URL): only
    /// the provider, reading a request, can say whether it is right.
    Unverifiable(String),
}

/// Checks an account's credential without sending a message: a token
/// exchange where there is one (never from the cache), a local signature
/// where the scheme signs, the secret's presence otherwise.
pub async fn check(store: &Store, trust: &Trust, account: &Account) -> Result<Checked, Failure> {
    let unverifiable = |what: String| {
        Ok(Checked::Unverifiable(format!(
            "{what}; not verifiable without sending"
        )))
    };
    if account.secret_in_url() {
        store
            .secret(account.secret.as_deref().unwrap_or_default())
            .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))?;
        return unverifiable("the secret goes in the URL".into());
    }
    match account.auth {
        AuthScheme::Google | AuthScheme::Apns => {
            let name = account.secret.as_deref().ok_or_else(|| {
                Failure::permanent(
                    Cause::Account,
                    format!(
                        "account `{}` has no secret (set one with --secret)",
                        account.name
                    ),
                )
            })?;
            let secret = store
                .secret(name)
                .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))?;
            if account.auth == AuthScheme::Apns {
                apns_token(store, account, &secret, Reuse::Fresh)?;
                return unverifiable(format!(
                    "signed an ES256 provider token (team {}, key {})",
                    param(account, "team_id")?,
                    param(account, "key_id")?
                ));
            }
            google_token(store, trust, account, &secret, Reuse::Fresh).await?;
            let endpoint = serde_json::from_slice::<ServiceAccountKey>(&secret)
                .map(|sa| sa.token_uri)
                .unwrap_or_default();
            Ok(Checked::Exchanged { endpoint })
        }
        _ => match credential(store, trust, account).await? {
            Credential::None => Ok(Checked::Nothing),
            Credential::Basic { user, .. } => unverifiable(format!("Basic auth as `{user}`")),
            Credential::Bearer(_) => unverifiable("a bearer token".into()),
        },
    }
}

/// Cache key: the account, and a digest of the secret so a new secret means a new token.
fn cache_key(account: &Account, secret: &[u8]) -> String {
    format!(
        "{}:{}",
        account.name,
        &hex::encode(Sha256::digest(secret))[..16]
    )
}

#[derive(Serialize)]
struct ApnsClaims<'a> {
    iss: &'a str,
    iat: i64,
}

/// A store failure while caching tokens: the next attempt may do better.
fn store_failure(e: crate::store::StoreError) -> Failure {
    Failure::transient(Cause::Credentials, format!("token cache: {e}"))
}

/// A parameter the account needs.
fn param<'a>(account: &'a Account, name: &str) -> Result<&'a str, Failure> {
    account
        .param(name)
        .map_err(|e| Failure::permanent(Cause::Account, e))
}

fn apns_token(
    store: &Store,
    account: &Account,
    p8: &[u8],
    reuse: Reuse,
) -> Result<String, Failure> {
    let key = cache_key(account, p8);
    let now = now_ms();
    if reuse == Reuse::Cached
        && let Some(t) = store.cached_token(&key, now).map_err(store_failure)?
    {
        return Ok(t);
    }
    let team = param(account, "team_id")?;
    let kid = param(account, "key_id")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let signing_key = jsonwebtoken::EncodingKey::from_ec_pem(p8).map_err(|e| {
        Failure::permanent(
            Cause::Credentials,
            format!(
                "account `{}`: the secret is not an APNs .p8 key: {e}",
                account.name
            ),
        )
    })?;
    let token = jsonwebtoken::encode(
        &header,
        &ApnsClaims {
            iss: team,
            iat: now / 1000,
        },
        &signing_key,
    )
    .map_err(|e| signing_failed(account, &e))?;
    store
        .cache_token(&key, &token, now + APNS_TOKEN_TTL_MS)
        .map_err(store_failure)?;
    Ok(token)
}

#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: String,
    token_uri: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: i64,
}

fn signing_failed(account: &Account, e: &jsonwebtoken::errors::Error) -> Failure {
    Failure::permanent(
        Cause::Credentials,
        format!("account `{}`: signing failed: {e}", account.name),
    )
}

async fn google_token(
    store: &Store,
    trust: &Trust,
    account: &Account,
    json: &[u8],
    reuse: Reuse,
) -> Result<String, Failure> {
    let key = cache_key(account, json);
    let now = now_ms();
    if reuse == Reuse::Cached
        && let Some(t) = store.cached_token(&key, now).map_err(store_failure)?
    {
        return Ok(t);
    }
    let sa: ServiceAccountKey = serde_json::from_slice(json).map_err(|e| {
        Failure::permanent(
            Cause::Credentials,
            format!(
                "account `{}`: the secret is not a service account JSON: {e}",
                account.name
            ),
        )
    })?;
    let scope = account
        .params
        .get("scope")
        .map(String::as_str)
        .unwrap_or(FCM_SCOPE);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = sa.private_key_id.clone();
    let signing_key =
        jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key.as_bytes()).map_err(|e| {
            Failure::permanent(
                Cause::Credentials,
                format!(
                    "account `{}`: bad service account private key: {e}",
                    account.name
                ),
            )
        })?;
    let iat = now / 1000;
    let claims = Assertion {
        iss: &sa.client_email,
        scope,
        aud: &sa.token_uri,
        iat,
        exp: iat + 3600,
    };
    let assertion = jsonwebtoken::encode(&header, &claims, &signing_key)
        .map_err(|e| signing_failed(account, &e))?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    let t: TokenResponse = exchange(trust, account, &sa.token_uri, form)
        .await
        .map_err(|f| f.context(format!("token exchange at {}", sa.token_uri)))?;
    let until = now + (t.expires_in - 60).max(0) * 1000;
    store
        .cache_token(&key, &t.access_token, until)
        .map_err(store_failure)?;
    Ok(t.access_token)
}

/// Posts `form` to a token endpoint under the account's egress policy and
/// timeout, and reads the token from its answer.
async fn exchange(
    trust: &Trust,
    account: &Account,
    token_uri: &str,
    form: String,
) -> Result<TokenResponse, Failure> {
    let url = url::Url::parse(token_uri)
        .map_err(|e| Failure::permanent(Cause::Credentials, format!("not a URL: {e}")))?;
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Err(Failure::permanent(
            Cause::Credentials,
            "the URL names no host",
        ));
    };
    let bare = host.trim_matches(['[', ']']);
    let authority = format!("{host}:{port}");
    let allow = account.allows_internal();
    let addrs = crate::deliver::net::egress::resolve(host, port, allow)
        .await
        .map_err(|e| Failure::of_error(&authority, &*e))?;
    // The client connects only to the addresses the policy let through.
    let client = trust
        .reqwest()
        .resolve_to_addrs(bare, &addrs)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(account.step_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Failure::transient(Cause::Credentials, e.to_string()))?;
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            Failure::transient(
                Cause::Timeout,
                format!(
                    "no answer within {} s",
                    account.step_timeout().as_secs_f32()
                ),
            )
        } else {
            Failure::of_error(&authority, &e)
        }
    };
    let resp = client
        .post(url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(failed)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(failed)?;
    let said = || {
        String::from_utf8_lossy(&body)
            .chars()
            .take(300)
            .collect::<String>()
    };
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Failure::transient(
            Cause::Credentials,
            format!("answered {status}: {}", said()),
        ));
    }
    if !status.is_success() {
        return Err(Failure::permanent(
            Cause::Credentials,
            format!("refused ({status}): {}", said()),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| Failure::transient(Cause::Protocol, format!("unreadable answer: {e}")))
}
