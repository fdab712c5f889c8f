//! SMTP: the account's relay, reached over a connection the host opens
//! itself (`connect.rs`: resolved and checked under the egress policy,
//! `TCP_NODELAY`, TLS, greeting, STARTTLS, AUTH), and one transaction per
//! message on it (`transaction.rs`), every step bounded in time. lettre
//! speaks the protocol on the socket handed to it
//! (`AsyncSmtpConnection::connect_with_transport`); `message.rs` builds the
//! MIME.
//!
//! The account URL says how to reach the relay: `smtp://host:port` (plain),
//! `smtp://host:587?tls=required` (STARTTLS, refused if not offered),
//! `?tls=opportunistic`, or `smtps://host:465` (TLS from the first byte).
//! TLS trusts the public roots and the operator's CAs (`crosscast ca add`).
//! With `--user` and a secret the host authenticates (AUTH PLAIN/LOGIN), and
//! with `--param dkim_domain=... --param dkim_selector=... --param
//! dkim_key=SECRET` (an RSA private key, PKCS#1 PEM, kept as a secret) it
//! DKIM-signs every message (RFC 6376): the key never leaves the host.
//!
//! A lane keeps its connection from one message to the next and parks it
//! with the relay when it ends, for the next delivery; a kept connection
//! the relay closed meanwhile is found on its first reply, and the message
//! goes again at once on a new one (nothing of it was accepted).

mod connect;
pub mod message;
mod transaction;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

pub use connect::Conn;

use super::failure::Failure;
use super::trust::Trust;
use crate::runtime::channel::wit::{Answer, Email};
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::settings::Account;

/// How a relay's sessions are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain text.
    Plain,
    /// STARTTLS (RFC 3207): required, or used when offered.
    StartTls {
        /// Refuse a relay that does not offer it.
        required: bool,
    },
    /// TLS from the first byte (RFC 8314, `smtps://`).
    Implicit,
}

/// An account's relay: where it is, how sessions open, how messages are
/// signed, and its parked connections.
pub struct Relay {
    account: Account,
    host: String,
    port: u16,
    security: Security,
    /// For STARTTLS (lettre upgrades the connection).
    starttls: Option<TlsParameters>,
    /// For implicit TLS (the host's own handshake before lettre).
    tls: Arc<rustls::ClientConfig>,
    credentials: Option<Credentials>,
    dkim: Option<DkimConfig>,
    hello: ClientId,
    timeout: Duration,
    allow_internal: bool,
    /// Connections lanes left open, for the next ones.
    idle: Mutex<Vec<Conn>>,
}

/// Relays by account name.
pub struct Relays {
    relays: Mutex<HashMap<String, Arc<Relay>>>,
    trust: Trust,
    tls: Arc<rustls::ClientConfig>,
}

impl Relays {
    /// Relays whose TLS trusts `trust`.
    pub fn new(trust: Trust) -> anyhow::Result<Relays> {
        let tls = Arc::new(trust.client_config()?);
        Ok(Relays {
            relays: Mutex::default(),
            trust,
            tls,
        })
    }

    /// Drops every relay and its parked connections (call inside the tokio
    /// runtime).
    pub fn close(&self) {
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The account's relay, resolved on first use (and again if the account
    /// changed).
    pub fn relay(&self, store: &Store, account: &Account) -> Result<Arc<Relay>, Failure> {
        let mut relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = relays.get(&account.name)
            && r.account == *account
        {
            return Ok(r.clone());
        }
        let relay = Arc::new(self.resolve(store, account)?);
        relays.insert(account.name.clone(), relay.clone());
        Ok(relay)
    }

    fn resolve(&self, store: &Store, account: &Account) -> Result<Relay, Failure> {
        let unusable = |e: &dyn std::fmt::Display| {
            Failure::permanent(
                Cause::Account,
                format!(
                    "account `{}` has an unusable SMTP URL `{}`: {e}",
                    account.name, account.url
                ),
            )
        };
        let url = url::Url::parse(&account.url).map_err(|e| unusable(&e))?;
        let mode = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let security = match (url.scheme(), mode.as_deref()) {
            ("smtps", _) => Security::Implicit,
            ("smtp", None) => Security::Plain,
            ("smtp", Some("required")) => Security::StartTls { required: true },
            ("smtp", Some("opportunistic")) => Security::StartTls { required: false },
            ("smtp", Some(other)) => {
                return Err(unusable(&format!(
                    "tls={other} (use required or opportunistic)"
                )));
            }
            (scheme, _) => return Err(unusable(&format!("`{scheme}` is not smtp or smtps"))),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| unusable(&"no host"))?
            .to_string();
        let port = url.port().unwrap_or(match security {
            Security::Implicit => 465,
            _ => 25,
        });
        let starttls = match security {
            Security::StartTls { .. } => {
                let mut params = TlsParameters::builder(host.trim_matches(['[', ']']).into());
                for pem in self.trust.ca_pems() {
                    let cert = Certificate::from_pem(pem).map_err(|e| unusable(&e))?;
                    params = params.add_root_certificate(cert);
                }
                Some(params.build_rustls().map_err(|e| unusable(&e))?)
            }
            _ => None,
        };
        let secret = |name: &str| -> Result<String, Failure> {
            store
                .secret(name)
                .map(|s| String::from_utf8_lossy(&s).trim().to_string())
                .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))
        };
        let credentials = match (&account.user, &account.secret) {
            (Some(user), Some(name)) => Some(Credentials::new(user.clone(), secret(name)?)),
            _ => None,
        };
        let dkim = match account.params.get("dkim_key") {
            None => None,
            Some(key) => Some(dkim(account, &secret(key)?, key)?),
        };
        Ok(Relay {
            account: account.clone(),
            host,
            port,
            security,
            starttls,
            tls: self.tls.clone(),
            credentials,
            dkim,
            hello: ClientId::default(),
            timeout: account.step_timeout(),
            allow_internal: super::egress::allows_internal(account),
            idle: Mutex::default(),
        })
    }
}

/// The account's DKIM signing settings, its key from the secret `key`.
fn dkim(account: &Account, pem: &str, key: &str) -> Result<DkimConfig, Failure> {
    let param = |p: &str| {
        account
            .param(p)
            .map(str::to_string)
            .map_err(|e| Failure::permanent(Cause::Account, e))
    };
    let signing = DkimSigningKey::new(pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
        Failure::permanent(
            Cause::Credentials,
            format!("secret `{key}` is not an RSA private key (PKCS#1 PEM) for DKIM: {e}"),
        )
    })?;
    // relaxed/relaxed survives relays that refold headers; the one-click
    // headers are signed, as mailbox providers require. Not Content-Type:
    // lettre writes a multipart's at formatting, after signing, so the
    // signature would not hold.
    let signed = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "MIME-Version",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ];
    Ok(DkimConfig::new(
        param("dkim_selector")?,
        param("dkim_domain")?,
        signing,
        signed
            .iter()
            .map(|h| HeaderName::new_from_ascii_str(h))
            .collect(),
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    ))
}

impl Relay {
    /// The account this relay is for.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Sends one email to `to` (the stored address) with `message_id` on the
    /// lane's connection in `slot` (a parked one, or a new one, if it holds
    /// none); the connection stays in `slot` while it is usable. The answer
    /// is the relay's final reply.
    pub async fn send(
        &self,
        slot: &mut Option<Conn>,
        email: &Email,
        to: &str,
        message_id: &str,
    ) -> Result<Answer, Failure> {
        let built = message::build(email, to, message_id, self.dkim.as_ref())
            .map_err(|e| Failure::permanent(Cause::Plugin, e))?;
        // A kept connection found closed is replaced once: a new one that
        // fails the same way says something about the relay.
        for _ in 0..2 {
            let mut conn = match slot.take().or_else(|| self.unpark()) {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match transaction::send(&mut conn, &self.name(), &built, self.timeout).await {
                transaction::Ended::Answered { reply, keep } => {
                    if keep {
                        *slot = Some(conn.used());
                    }
                    return self
                        .session_refused(reply.code, &reply.message)
                        .map_or_else(|| Ok(Answer::Smtp(reply)), Err);
                }
                transaction::Ended::Lost(_) if conn.was_used() => continue,
                transaction::Ended::Lost(f) | transaction::Ended::Failed(f) => return Err(f),
            }
        }
        Err(Failure::transient(
            Cause::Protocol,
            format!(
                "SMTP {}: the relay closed two connections before answering",
                self.name()
            ),
        ))
    }

    /// A refusal that is about the session (our credentials, TLS first),
    /// not the recipient: it must never read as a bounce that quarantines
    /// the address.
    fn session_refused(&self, code: u16, message: &str) -> Option<Failure> {
        let why = format!(
            "the relay of account `{}` refused the session ({code}): {message}",
            self.account.name
        );
        match code {
            530 | 534 | 535 | 538 => Some(Failure::permanent(Cause::Credentials, why)),
            454 => Some(Failure::transient(Cause::Credentials, why)),
            _ => None,
        }
    }

    /// Keeps a lane's connection for the next delivery.
    pub fn park(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn.used());
    }

    fn unpark(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// The relay as errors name it.
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
