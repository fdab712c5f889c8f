//! Signing on a plugin's behalf: the host turns an account's secret into the
//! credential a provider wants — Basic auth, a bearer token, an APNs provider
//! token (ES256 JWT) or a Google OAuth access token (RS256 assertion
//! exchanged at the service account's token URI). Plugins never see the
//! secret or the token. Tokens are cached in the store, so separate
//! executions and processes reuse them: APNs tokens for 40 minutes (Apple
//! wants them refreshed after 20 and before 60), OAuth tokens until
//! `expires_in`. Token times are on the system clock, the providers' clock.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;
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

/// The credential for a request of `account`.
pub async fn credential(
    store: &Store,
    http: &reqwest::Client,
    account: &Account,
) -> Result<Credential, String> {
    let secret = match &account.secret {
        Some(name) => Some(store.secret(name).map_err(|e| e.to_string())?),
        None => None,
    };
    let text = |s: &Option<Vec<u8>>| {
        s.as_ref()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
    };
    let need = |s: Option<Vec<u8>>| {
        s.ok_or_else(|| {
            format!(
                "account `{}` has no secret (set one with --secret)",
                account.name
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
            user: account
                .user
                .clone()
                .ok_or_else(|| format!("account `{}` needs --user for basic auth", account.name))?,
            password: text(&secret),
        }),
        AuthScheme::Bearer => Ok(Credential::Bearer(
            text(&Some(need(secret)?)).unwrap_or_default(),
        )),
        AuthScheme::Apns => apns_token(store, account, &need(secret)?).map(Credential::Bearer),
        AuthScheme::Google => google_token(store, http, account, &need(secret)?)
            .await
            .map(Credential::Bearer),
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

fn apns_token(store: &Store, account: &Account, p8: &[u8]) -> Result<String, String> {
    let key = cache_key(account, p8);
    let now = now_ms();
    if let Some(t) = store.cached_token(&key, now).map_err(|e| e.to_string())? {
        return Ok(t);
    }
    let team = account.param("team_id")?;
    let kid = account.param("key_id")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let signing_key = jsonwebtoken::EncodingKey::from_ec_pem(p8).map_err(|e| {
        format!(
            "account `{}`: the secret is not an APNs .p8 key: {e}",
            account.name
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
    .map_err(|e| format!("account `{}`: signing failed: {e}", account.name))?;
    store
        .cache_token(&key, &token, now + APNS_TOKEN_TTL_MS)
        .map_err(|e| e.to_string())?;
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

async fn google_token(
    store: &Store,
    http: &reqwest::Client,
    account: &Account,
    json: &[u8],
) -> Result<String, String> {
    let key = cache_key(account, json);
    let now = now_ms();
    if let Some(t) = store.cached_token(&key, now).map_err(|e| e.to_string())? {
        return Ok(t);
    }
    let sa: ServiceAccountKey = serde_json::from_slice(json).map_err(|e| {
        format!(
            "account `{}`: the secret is not a service account JSON: {e}",
            account.name
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
            format!(
                "account `{}`: bad service account private key: {e}",
                account.name
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
        .map_err(|e| format!("account `{}`: signing failed: {e}", account.name))?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", &assertion)
        .finish();
    let resp = http
        .post(&sa.token_uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| {
            format!(
                "token exchange at {}: {}",
                sa.token_uri,
                crate::deliver::http::error_chain(&e)
            )
        })?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("token exchange at {}: {e}", sa.token_uri))?;
    if !status.is_success() {
        return Err(format!(
            "token exchange at {} refused ({status}): {}",
            sa.token_uri,
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        ));
    }
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|e| format!("token exchange at {}: unreadable answer: {e}", sa.token_uri))?;
    let until = now + (t.expires_in - 60).max(0) * 1000;
    store
        .cache_token(&key, &t.access_token, until)
        .map_err(|e| e.to_string())?;
    Ok(t.access_token)
}
