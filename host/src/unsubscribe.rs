//! One-click unsubscribe (RFC 8058): the links the host puts in every email
//! and the endpoint `crosscast worker` serves for them.
//!
//! A link ends in an opaque token: the run and the recipient's internal id,
//! authenticated with an HMAC-SHA256 under a key that never leaves the data
//! directory (no address, no guessable counter). A POST with the body
//! `List-Unsubscribe=One-Click` puts the recipient's email address on the
//! `email` denylist; a GET only shows a page with a button, because mail
//! scanners follow links and must never unsubscribe anyone.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
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
    key: hmac::Key,
}

const MAC_LEN: usize = 16;

impl Signer {
    /// The one-click link of `recipient` in `run`.
    pub fn link(&self, run: u64, recipient: u64) -> String {
        format!(
            "{}/{}",
            self.url.trim_end_matches('/'),
            token(&self.key, run, recipient)
        )
    }
}

fn token(key: &hmac::Key, run: u64, recipient: u64) -> String {
    let mut raw = Vec::with_capacity(16 + MAC_LEN);
    raw.extend_from_slice(&run.to_be_bytes());
    raw.extend_from_slice(&recipient.to_be_bytes());
    let tag = hmac::sign(key, &raw);
    raw.extend_from_slice(&tag.as_ref()[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The (run, recipient) a token names, if it is one of ours.
fn verify(key: &hmac::Key, token: &str) -> Option<(u64, u64)> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() != 16 + MAC_LEN {
        return None;
    }
    let full = hmac::sign(key, &raw[..16]);
    // Compare every byte whatever differs, so timing says nothing.
    let diff = full.as_ref()[..MAC_LEN]
        .iter()
        .zip(&raw[16..])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return None;
    }
    let run = u64::from_be_bytes(raw[..8].try_into().ok()?);
    let recipient = u64::from_be_bytes(raw[8..16].try_into().ok()?);
    Some((run, recipient))
}

impl Store {
    /// Configures the endpoint (and creates the signing key once).
    pub fn set_unsubscribe(&self, endpoint: &Endpoint) -> Result<()> {
        self.unsubscribe_key()?;
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
            key: self.unsubscribe_key()?,
        }))
    }

    fn unsubscribe_key(&self) -> Result<hmac::Key> {
        let tree = self.tree("settings")?;
        let bytes = match tree.get("unsubscribe/key")? {
            Some(k) => k.to_vec(),
            None => {
                let mut k = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                    .map_err(|_| std::io::Error::other("no system randomness"))?;
                tree.insert("unsubscribe/key", &k)?;
                self.flush()?;
                k.to_vec()
            }
        };
        Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
    }
}

#[derive(Clone)]
struct Shared {
    store: Store,
    key: hmac::Key,
}

/// Serves the endpoint until the process ends (run on its own thread).
pub fn serve(store: Store, endpoint: Endpoint) -> anyhow::Result<()> {
    let key = store.unsubscribe_key()?;
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
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(page).post(one_click))
            .with_state(Shared { store, key });
        axum::serve(listener, app).await?;
        Ok(())
    })
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A GET never unsubscribes: it shows a button that POSTs.
async fn page(State(s): State<Shared>, Path(path): Path<String>) -> Response {
    let token = last_segment(&path);
    if verify(&s.key, token).is_none() {
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
    let Some((run, recipient)) = verify(&s.key, last_segment(&path)) else {
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
    match record(&s.store, run, recipient) {
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

/// Puts the recipient's address on the email denylist; returns it.
fn record(store: &Store, run: u64, recipient: u64) -> anyhow::Result<String> {
    let cols = store
        .audience()
        .fetch("recipient", &[recipient], &["email".to_string()])?;
    let address = cols
        .into_iter()
        .next()
        .and_then(|c| c.into_iter().next().flatten())
        .context("the recipient has no email address any more")?;
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
    fn tokens_verify_and_forgeries_do_not() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let t = token(&key, 7, 42);
        assert_eq!(verify(&key, &t), Some((7, 42)));
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        assert_eq!(verify(&other, &t), None);
        let mut raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        raw[15] ^= 1; // another recipient, same tag
        assert_eq!(verify(&key, &URL_SAFE_NO_PAD.encode(raw)), None);
        assert_eq!(verify(&key, "not-a-token"), None);
        assert_eq!(t.len(), 43, "32 bytes, base64url without padding");
    }
}
