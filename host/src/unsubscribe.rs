//! One-click unsubscribe (RFC 8058): the links the host puts in every email
//! and the endpoint `crosscast worker` serves for them.
//!
//! A link ends in an opaque token: the run, the recipient's internal id and
//! the address the email went to, sealed (ChaCha20-Poly1305, a random nonce
//! per link) under a key that never leaves the data directory: nothing in
//! it can be read or forged. A POST with the body
//! `List-Unsubscribe=One-Click` puts that address on the `email` denylist,
//! even if the recipient's address changed since (RFC 8058 unsubscribes
//! the address the message went to); a GET only shows a page with a button,
//! because mail scanners follow links and must never unsubscribe anyone.
//! Links of earlier versions (run and recipient under an HMAC, no address)
//! still work, for the recipient's current address.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::{aead, hmac};
use serde::{Deserialize, Serialize};

use crate::store::suppression::{Suppression, SuppressionKind};
use crate::store::{Result, Store, json_decode, json_encode};

/// Where the endpoint listens and the public URL links start with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    /// The address `crosscast worker` listens on.
    pub listen: SocketAddr,
    /// The links' base (a reverse proxy's public URL), `http://{listen}/unsubscribe` by default.
    pub url: String,
}

/// Signs links for one delivery.
pub struct Signer {
    url: String,
    keys: Keys,
    random: SystemRandom,
}

/// The keys derived from the data directory's unsubscribe key.
#[derive(Clone)]
struct Keys {
    /// Tags the links of earlier versions (read, never written).
    legacy: hmac::Key,
    /// Seals the links.
    seal: Arc<aead::LessSafeKey>,
}

/// Bytes of an earlier version's tag.
const MAC_LEN: usize = 16;

/// First byte of a sealed link: its format.
const SEALED: u8 = 2;

/// Bound to every sealed link: a token of another purpose never opens.
const AAD: &[u8] = b"crosscast one-click unsubscribe";

/// What a link names.
#[derive(Debug, PartialEq, Eq)]
struct Link {
    run: u64,
    recipient: u64,
    /// The address the email went to (`None` in an earlier version's link).
    address: Option<String>,
}

impl Keys {
    fn new(secret: &[u8]) -> Keys {
        let legacy = hmac::Key::new(hmac::HMAC_SHA256, secret);
        // A key of its own for sealing, derived so that one stored secret
        // serves both and neither use can stand in for the other.
        let derived = hmac::sign(&legacy, b"crosscast/unsubscribe/seal/v1");
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, derived.as_ref())
            .expect("a 32-byte key");
        Keys {
            legacy,
            seal: Arc::new(aead::LessSafeKey::new(unbound)),
        }
    }
}

impl Signer {
    /// The one-click link of `recipient` in `run`, for the email to `address`.
    pub fn link(&self, run: u64, recipient: u64, address: &str) -> Result<String, String> {
        let token = seal(&self.keys, &self.random, run, recipient, address)
            .map_err(|_| "no system randomness for an unsubscribe link".to_string())?;
        Ok(format!("{}/{token}", self.url.trim_end_matches('/')))
    }
}

fn seal(
    keys: &Keys,
    random: &SystemRandom,
    run: u64,
    recipient: u64,
    address: &str,
) -> std::result::Result<String, ring::error::Unspecified> {
    let mut nonce = [0u8; aead::NONCE_LEN];
    // A fresh nonce per link: a nonce used twice would leak both plaintexts.
    random.fill(&mut nonce)?;
    let mut raw = Vec::with_capacity(1 + nonce.len() + 16 + address.len() + MAC_LEN);
    raw.push(SEALED);
    raw.extend_from_slice(&nonce);
    let mut text = Vec::with_capacity(16 + address.len() + aead::CHACHA20_POLY1305.tag_len());
    text.extend_from_slice(&run.to_be_bytes());
    text.extend_from_slice(&recipient.to_be_bytes());
    text.extend_from_slice(address.as_bytes());
    keys.seal.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(AAD),
        &mut text,
    )?;
    raw.extend_from_slice(&text);
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// An earlier version's token: run and recipient under a truncated HMAC.
#[cfg(test)]
fn legacy_token(key: &hmac::Key, run: u64, recipient: u64) -> String {
    let mut raw = Vec::with_capacity(16 + MAC_LEN);
    raw.extend_from_slice(&run.to_be_bytes());
    raw.extend_from_slice(&recipient.to_be_bytes());
    let tag = hmac::sign(key, &raw);
    raw.extend_from_slice(&tag.as_ref()[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// What a token names, if it is one of ours.
fn verify(keys: &Keys, token: &str) -> Option<Link> {
    let mut raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() == 16 + MAC_LEN {
        return verify_legacy(&keys.legacy, &raw);
    }
    if raw.first() != Some(&SEALED) || raw.len() < 1 + aead::NONCE_LEN + 16 + MAC_LEN {
        return None;
    }
    let nonce = aead::Nonce::try_assume_unique_for_key(&raw[1..1 + aead::NONCE_LEN]).ok()?;
    let text = keys
        .seal
        .open_in_place(nonce, aead::Aad::from(AAD), &mut raw[1 + aead::NONCE_LEN..])
        .ok()?;
    let run = u64::from_be_bytes(text[..8].try_into().ok()?);
    let recipient = u64::from_be_bytes(text[8..16].try_into().ok()?);
    let address = std::str::from_utf8(&text[16..]).ok()?.to_string();
    Some(Link {
        run,
        recipient,
        address: Some(address),
    })
}

fn verify_legacy(key: &hmac::Key, raw: &[u8]) -> Option<Link> {
    let full = hmac::sign(key, &raw[..16]);
    // Compare every byte whatever differs, so timing says nothing.
    let diff = full.as_ref()[..MAC_LEN]
        .iter()
        .zip(&raw[16..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return None;
    }
    Some(Link {
        run: u64::from_be_bytes(raw[..8].try_into().ok()?),
        recipient: u64::from_be_bytes(raw[8..16].try_into().ok()?),
        address: None,
    })
}

impl Store {
    /// Configures the endpoint (and creates the signing key once).
    pub fn set_unsubscribe(&self, endpoint: &Endpoint) -> Result<()> {
        self.unsubscribe_keys()?;
        self.tree("settings")?
            .insert("unsubscribe/endpoint", json_encode(endpoint))?;
        self.flush()
    }

    /// Turns one-click links off.
    pub fn clear_unsubscribe(&self) -> Result<()> {
        self.tree("settings")?.remove("unsubscribe/endpoint")?;
        self.flush()
    }

    /// The configured endpoint, if any.
    pub fn unsubscribe_endpoint(&self) -> Result<Option<Endpoint>> {
        self.tree("settings")?
            .get("unsubscribe/endpoint")?
            .map(|v| json_decode("settings", &v))
            .transpose()
    }

    /// A signer for links when an endpoint is configured.
    pub fn unsubscribe_settings(&self) -> Result<Option<Signer>> {
        let Some(endpoint) = self.unsubscribe_endpoint()? else {
            return Ok(None);
        };
        Ok(Some(Signer {
            url: endpoint.url,
            keys: self.unsubscribe_keys()?,
            random: SystemRandom::new(),
        }))
    }

    fn unsubscribe_keys(&self) -> Result<Keys> {
        // Sealed like secrets: a copied data directory cannot forge links.
        let bytes = match self.get_sealed("unsubscribe/key")? {
            Some(k) => k,
            None => {
                let mut k = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                    .map_err(|_| std::io::Error::other("no system randomness"))?;
                self.put_sealed("unsubscribe/key", &k)?;
                k.to_vec()
            }
        };
        Ok(Keys::new(&bytes))
    }
}

#[derive(Clone)]
struct Shared {
    store: Store,
    keys: Keys,
}

/// Serves the endpoint until the process ends (run on its own thread).
pub fn serve(store: Store, endpoint: Endpoint) -> anyhow::Result<()> {
    let app = router(store)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(endpoint.listen)
            .await
            .with_context(|| format!("cannot listen on {} for unsubscribes", endpoint.listen))?;
        tracing::info!(
            "one-click unsubscribe endpoint on http://{}",
            endpoint.listen
        );
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// The endpoint's routes: a page for a GET, the unsubscribe for a POST.
pub fn router(store: Store) -> anyhow::Result<axum::Router> {
    let keys = store.unsubscribe_keys()?;
    Ok(axum::Router::new()
        .route("/{*path}", axum::routing::get(page).post(one_click))
        .with_state(Shared { store, keys }))
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A GET never unsubscribes: it shows a button that POSTs.
async fn page(State(s): State<Shared>, Path(path): Path<String>) -> Response {
    let token = last_segment(&path);
    if verify(&s.keys, token).is_none() {
        return (StatusCode::NOT_FOUND, "unknown unsubscribe link\n").into_response();
    }
    Html(format!(
        "<!doctype html><title>Unsubscribe</title>\
         <form method=post action=\"{token}\">\
         <input type=hidden name=List-Unsubscribe value=One-Click>\
         <button>Unsubscribe from these emails</button></form>"
    ))
    .into_response()
}

/// The RFC 8058 POST: `List-Unsubscribe=One-Click` in the body.
async fn one_click(State(s): State<Shared>, Path(path): Path<String>, body: String) -> Response {
    let Some(link) = verify(&s.keys, last_segment(&path)) else {
        return (StatusCode::NOT_FOUND, "unknown unsubscribe link\n").into_response();
    };
    let one_click = body
        .split('&')
        .any(|kv| kv.trim() == "List-Unsubscribe=One-Click");
    if !one_click {
        return (
            StatusCode::BAD_REQUEST,
            "expected the body List-Unsubscribe=One-Click (RFC 8058)\n",
        )
            .into_response();
    }
    let run = link.run;
    match record(&s.store, link) {
        Ok(address) => {
            tracing::info!("run {run}: {address} unsubscribed (one-click)");
            (StatusCode::OK, "unsubscribed\n").into_response()
        }
        Err(e) => {
            tracing::error!("one-click unsubscribe failed: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again later\n").into_response()
        }
    }
}

/// Puts the address the link's email went to on the email denylist (the
/// recipient's current one for an earlier version's link); returns it.
fn record(store: &Store, link: Link) -> anyhow::Result<String> {
    let Link {
        run,
        recipient,
        address,
    } = link;
    let address = match address {
        Some(a) => a,
        None => store
            .audience()
            .fetch("recipient", &[recipient], &["email".to_string()])?
            .into_iter()
            .next()
            .and_then(|c| c.into_iter().next().flatten())
            .context("the recipient has no email address any more")?,
    };
    let entry = Suppression {
        kind: SuppressionKind::Denylist,
        reason: "one-click unsubscribe (RFC 8058)".into(),
        source: format!("unsubscribe link of run {run}"),
        at: chrono::Utc::now().timestamp_millis(),
    };
    store.suppress("email", &[(address.clone(), entry)])?;
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_address_sealed_and_forgeries_do_not_open() {
        let keys = Keys::new(b"k1");
        let random = SystemRandom::new();
        let t = seal(&keys, &random, 7, 42, "ada@example.com").unwrap();
        let link = Link {
            run: 7,
            recipient: 42,
            address: Some("ada@example.com".into()),
        };
        assert_eq!(verify(&keys, &t), Some(link));
        assert!(!t.contains("ada"), "opaque: {t}");
        // A fresh nonce each time: two links for the same email differ.
        assert_ne!(seal(&keys, &random, 7, 42, "ada@example.com").unwrap(), t);
        assert_eq!(verify(&Keys::new(b"k2"), &t), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        let last = raw.len() - 20;
        raw[last] ^= 1; // another address, same tag
        assert_eq!(verify(&keys, &URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(verify(&keys, "not-a-token"), None);
    }

    #[test]
    fn links_of_earlier_versions_still_verify_without_an_address() {
        let keys = Keys::new(b"k1");
        let t = legacy_token(&keys.legacy, 7, 42);
        assert_eq!(t.len(), 43, "32 bytes, base64url without padding");
        let link = Link {
            run: 7,
            recipient: 42,
            address: None,
        };
        assert_eq!(verify(&keys, &t), Some(link));
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[15] ^= 1; // another recipient, same tag
        assert_eq!(verify(&keys, &URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(verify(&Keys::new(b"k2"), &t), None);
    }
}
