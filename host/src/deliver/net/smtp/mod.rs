//! SMTP: the account's relay, reached over a connection the host opens
//! itself (`connect.rs`: resolved and checked under the egress policy,
//! `TCP_NODELAY`, TLS, greeting, STARTTLS, AUTH), and one transaction per
//! message on it (`transaction.rs`), every step bounded in time. lettre
//! speaks the protocol on the socket handed to it
//! (`AsyncSmtpConnection::connect_with_transport`). The message comes
//! ready for the wire ([`Built`], made by the delivery layer's `email.rs`).
//!
//! The account URL says how to reach the relay: `smtp://host:port` (plain),
//! `smtp://host:587?tls=required` (STARTTLS, refused if not offered),
//! `?tls=opportunistic`, or `smtps://host:465` (TLS from the first byte).
//! TLS trusts the public roots and the operator's CAs (`crosscast ca add`).
//! With credentials the host authenticates (AUTH PLAIN/LOGIN).
//!
//! A lane keeps its connection from one message to the next and parks it
//! with the relay when it ends, for the next delivery; a kept connection
//! the relay closed meanwhile is found on its first reply, and the message
//! goes again at once on a new one (nothing of it was accepted).

mod connect;
mod transaction;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

pub use connect::Conn;

use super::error::{Kind, NetError};
use super::trust::Trust;

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

/// An email ready for a relay.
pub struct Built {
    /// MAIL FROM and RCPT TO.
    pub envelope: Envelope,
    /// The message, headers and body, signed if it is to be.
    pub raw: Vec<u8>,
}

/// A relay's reply to a message: its final reply, or its first refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code (250, 550, ...).
    pub code: u16,
    /// The reply's text, its lines joined.
    pub message: String,
}

/// A relay: where it is, how sessions open, and its parked connections.
pub struct Relay {
    host: String,
    port: u16,
    security: Security,
    /// For STARTTLS (lettre upgrades the connection).
    starttls: Option<TlsParameters>,
    /// For implicit TLS (the host's own handshake before lettre).
    tls: Arc<rustls::ClientConfig>,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    allow_internal: bool,
    /// Connections lanes left open, for the next ones.
    idle: Mutex<Vec<Conn>>,
}

/// How to reach a relay, besides its URL.
pub struct Access<'a> {
    /// What TLS trusts.
    pub trust: &'a Trust,
    /// The client side of TLS, made from `trust` once for every relay.
    pub tls: Arc<rustls::ClientConfig>,
    /// AUTH's user name and password.
    pub credentials: Option<(String, String)>,
    /// How long each step may take.
    pub timeout: Duration,
    /// The egress policy lets it reach internal addresses.
    pub allow_internal: bool,
}

/// What a relay offered a session, for `crosscast doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The extensions its EHLO reply named (after STARTTLS, if any).
    pub extensions: Vec<String>,
    /// The session is protected by TLS (implicit, or STARTTLS).
    pub tls: bool,
    /// AUTH was given the account's credentials and accepted them.
    pub authenticated: bool,
}

impl Relay {
    /// Opens a session as a delivery would (greeting, STARTTLS, EHLO,
    /// AUTH), says what the relay offered, and quits without a message.
    pub async fn probe(&self) -> Result<Session, NetError> {
        let mut conn = self.connect().await?;
        let _ = connect::timed(self.timeout, &self.name(), "QUIT", conn.smtp.quit()).await;
        Ok(Session {
            tls: self.security == Security::Implicit || conn.smtp.is_encrypted(),
            extensions: std::mem::take(&mut conn.extensions),
            authenticated: self.credentials.is_some(),
        })
    }

    /// The relay a URL names: `smtp://host:port` (plain),
    /// `smtp://host:587?tls=required` or `?tls=opportunistic` (STARTTLS),
    /// `smtps://host:465` (implicit TLS). The error says what is wrong
    /// with the URL.
    pub fn new(url: &str, access: Access<'_>) -> Result<Relay, String> {
        let url = url::Url::parse(url).map_err(|e| e.to_string())?;
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
                return Err(format!("tls={other} (use required or opportunistic)"));
            }
            (scheme, _) => return Err(format!("`{scheme}` is not smtp or smtps")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("no host")?
            .to_string();
        let port = url.port().unwrap_or(match security {
            Security::Implicit => 465,
            _ => 25,
        });
        let starttls = match security {
            Security::StartTls { .. } => {
                let mut params = TlsParameters::builder(host.trim_matches(['[', ']']).into());
                for pem in access.trust.ca_pems() {
                    let cert = Certificate::from_pem(pem).map_err(|e| e.to_string())?;
                    params = params.add_root_certificate(cert);
                }
                Some(params.build_rustls().map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        Ok(Relay {
            host,
            port,
            security,
            starttls,
            tls: access.tls,
            credentials: access
                .credentials
                .map(|(user, password)| Credentials::new(user, password)),
            hello: ClientId::default(),
            timeout: access.timeout,
            allow_internal: access.allow_internal,
            idle: Mutex::default(),
        })
    }

    /// Sends one message on the lane's connection in `slot` (a parked one,
    /// or a new one, if it holds none); the connection stays in `slot`
    /// while it is usable. The answer is the relay's final reply, or its
    /// first refusal.
    pub async fn send(&self, slot: &mut Option<Conn>, built: &Built) -> Result<Reply, NetError> {
        // A kept connection found closed is replaced once: a new one that
        // fails the same way says something about the relay.
        for _ in 0..2 {
            let mut conn = match slot.take().or_else(|| self.unpark()) {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            match transaction::send(&mut conn, &self.name(), built, self.timeout).await {
                transaction::Ended::Answered { reply, keep } => {
                    if keep {
                        *slot = Some(conn.used());
                    }
                    return self.session_refused(&reply).map_or_else(|| Ok(reply), Err);
                }
                transaction::Ended::Lost(_) if conn.was_used() => continue,
                transaction::Ended::Lost(f) | transaction::Ended::Failed(f) => return Err(f),
            }
        }
        Err(NetError::transient(
            Kind::Protocol,
            format!(
                "SMTP {}: the relay closed two connections before answering",
                self.name()
            ),
        ))
    }

    /// A refusal that is about the session (our credentials, TLS first),
    /// not the recipient: it must never read as a bounce that quarantines
    /// the address.
    fn session_refused(&self, reply: &Reply) -> Option<NetError> {
        let why = format!(
            "the relay {} refused the session ({}): {}",
            self.name(),
            reply.code,
            reply.message
        );
        match reply.code {
            530 | 534 | 535 | 538 => Some(NetError::permanent(Kind::Credentials, why)),
            454 => Some(NetError::transient(Kind::Credentials, why)),
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
