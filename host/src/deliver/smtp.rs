//! SMTP transport: lettre's pooled async client, one pool per account.
//!
//! The account URL says how to reach the relay: `smtp://host:port` (plain),
//! `smtp://host:587?tls=required` (STARTTLS, refused if not offered),
//! `?tls=opportunistic`, or `smtps://host:465` (TLS from the first byte).
//! TLS trusts the public roots and the operator's CAs (`crosscast ca add`).
//! With `--user` and a secret the host authenticates (AUTH PLAIN/LOGIN), and
//! with `--param dkim_domain=... --param dkim_selector=... --param
//! dkim_key=SECRET` (an RSA private key, PKCS#1 PEM, kept as a secret) it
//! DKIM-signs every message (RFC 6376): the key never leaves the host.

use std::collections::HashMap;
use std::sync::Mutex;

use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::store::Store;

use crate::runtime::channel::wit::{Answer, Email, SmtpReply};
use crate::store::settings::Account;

/// A relay connection pool and how messages through it are signed.
#[derive(Clone)]
pub struct Relay {
    account: Account,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    dkim: Option<std::sync::Arc<DkimConfig>>,
}

/// SMTP connection pools by account name.
pub struct SmtpTransports {
    pools: Mutex<HashMap<String, Relay>>,
    /// The operator's CAs (PEM), trusted besides the public roots.
    cas: Vec<Vec<u8>>,
}

impl SmtpTransports {
    /// Pools that trust these CAs (PEM) besides the public roots.
    pub fn new(cas: Vec<Vec<u8>>) -> SmtpTransports {
        SmtpTransports {
            pools: Mutex::default(),
            cas,
        }
    }

    /// Drops every pool (call inside the tokio runtime).
    pub fn close(&self) {
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The account's pool, built on first use (and again if the account changed).
    pub fn relay(&self, store: &Store, account: &Account) -> Result<Relay, String> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = pools.get(&account.name)
            && r.account == *account
        {
            return Ok(r.clone());
        }
        let unusable = |e: &dyn std::fmt::Display| {
            format!(
                "{}account `{}` has an unusable SMTP URL `{}`: {e}",
                super::http::REFUSED,
                account.name,
                account.url
            )
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&account.url)
            .map_err(|e| unusable(&e))?;
        let url = url::Url::parse(&account.url).map_err(|e| unusable(&e))?;
        let mode = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        if url.scheme() == "smtps" || mode.is_some() {
            let host = url.host_str().unwrap_or_default().to_string();
            let mut params = TlsParameters::builder(host);
            for pem in &self.cas {
                let cert = Certificate::from_pem(pem).map_err(|e| unusable(&e))?;
                params = params.add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| unusable(&e))?;
            builder = builder.tls(match (url.scheme(), mode.as_deref()) {
                ("smtps", _) => Tls::Wrapper(params),
                (_, Some("opportunistic")) => Tls::Opportunistic(params),
                _ => Tls::Required(params),
            });
        }
        let secret = |name: &str| -> Result<String, String> {
            store
                .secret(name)
                .map(|s| String::from_utf8_lossy(&s).trim().to_string())
                .map_err(|e| format!("{}{e}", super::http::REFUSED))
        };
        if let (Some(user), Some(name)) = (&account.user, &account.secret) {
            builder = builder.credentials(Credentials::new(user.clone(), secret(name)?));
        }
        let dkim = match account.params.get("dkim_key") {
            None => None,
            Some(key) => {
                let param = |p: &str| {
                    account
                        .param(p)
                        .map(str::to_string)
                        .map_err(|e| format!("{}{e}", super::http::REFUSED))
                };
                let pem = secret(key)?;
                let key = DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa).map_err(|e| {
                    format!(
                        "{}secret `{key}` is not an RSA private key (PKCS#1 PEM) for DKIM: {e}",
                        super::http::REFUSED
                    )
                })?;
                // relaxed/relaxed survives relays that refold headers; the
                // one-click headers are signed, as mailbox providers require.
                // Not Content-Type: lettre writes a multipart's at
                // formatting, after signing, so the signature would not hold.
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
                Some(std::sync::Arc::new(DkimConfig::new(
                    param("dkim_selector")?,
                    param("dkim_domain")?,
                    key,
                    signed
                        .iter()
                        .map(|h| HeaderName::new_from_ascii_str(h))
                        .collect(),
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                )))
            }
        };
        // As many pooled connections as messages in flight: a smaller pool
        // closes the surplus after each message and reconnects for the next.
        let connections = account
            .concurrency
            .unwrap_or(super::throttle::DEFAULT_CONCURRENCY);
        builder = builder.pool_config(PoolConfig::new().max_size(connections));
        let relay = Relay {
            account: account.clone(),
            transport: builder.build(),
            dkim,
        };
        pools.insert(account.name.clone(), relay.clone());
        Ok(relay)
    }

    /// Sends one email through `relay` (from [`SmtpTransports::relay`]);
    /// the answer is the server's final reply.
    pub async fn send(relay: &Relay, email: &Email) -> Answer {
        let account = &relay.account;
        let mut message = match build(email) {
            Ok(m) => m,
            Err(e) => {
                return Answer::Smtp(SmtpReply {
                    code: 550,
                    message: format!("not sent: {e}"),
                });
            }
        };
        if let Some(dkim) = &relay.dkim {
            message.sign(dkim);
        }
        let (envelope, raw) = (message.envelope(), message.formatted());
        let mut outcome = relay.transport.send_raw(envelope, &raw).await;
        // A pooled connection the relay closed meanwhile is dropped: send
        // again on another one. Each pooled connection
        // fails at most once, and a relay that cannot be reached fails to
        // connect, which ends the loop.
        let pooled = account
            .concurrency
            .unwrap_or(super::throttle::DEFAULT_CONCURRENCY);
        for _ in 0..pooled {
            if !outcome.as_ref().is_err_and(connection_lost) {
                break;
            }
            outcome = relay.transport.send_raw(envelope, &raw).await;
        }
        match outcome {
            Ok(r) => Answer::Smtp(SmtpReply {
                code: r.code().to_string().parse().unwrap_or(250),
                message: r.message().collect::<Vec<_>>().join(" "),
            }),
            Err(e) => match e.status().map(|c| c.to_string().parse().unwrap_or(554)) {
                // The relay refusing the session (our credentials, TLS
                // first) says nothing about the recipient: never let it
                // read as a bounce that quarantines the address.
                Some(code @ (530 | 534 | 535 | 538)) => Answer::TransportError(format!(
                    "{}the relay of account `{}` refused the session ({code}): {e}",
                    super::http::REFUSED,
                    account.name
                )),
                Some(454) => Answer::TransportError(format!(
                    "the relay of account `{}` cannot authenticate now (454): {e}",
                    account.name
                )),
                Some(code) => Answer::Smtp(SmtpReply {
                    code,
                    message: e.to_string(),
                }),
                None => Answer::TransportError(format!("SMTP: {e}")),
            },
        }
    }
}

/// True if an open connection turned out closed rather than the relay
/// answering about this message: an incomplete reply or an I/O error on the
/// connection, not a failure to connect. A reply, even 421, is the relay's
/// word and goes to the plugin (a relay saying "slow down" gets backoff,
/// not an immediate resend).
fn connection_lost(e: &lettre::transport::smtp::Error) -> bool {
    // lettre exposes no `is_network`; its kinds have fixed names.
    e.status().is_none() && (e.is_response() || e.to_string().starts_with("network error"))
}

/// Builds the MIME message: Date and Message-ID added, text or text + HTML.
fn build(email: &Email) -> Result<Message, String> {
    let from: Mailbox = email
        .from
        .parse()
        .map_err(|e| format!("bad From `{}`: {e}", email.from))?;
    let to: Mailbox = email
        .to
        .parse()
        .map_err(|e| format!("bad address `{}`: {e}", email.to))?;
    let mut b = Message::builder()
        .from(from)
        .to(to)
        .subject(email.subject.clone())
        .message_id(None)
        .date_now();
    if let Some(r) = &email.reply_to {
        b = b.reply_to(r.parse().map_err(|e| format!("bad Reply-To `{r}`: {e}"))?);
    }
    let mut m = match &email.html {
        Some(html) => b.multipart(MultiPart::alternative_plain_html(
            email.text.clone(),
            html.clone(),
        )),
        None => b.body(email.text.clone()),
    }
    .map_err(|e| e.to_string())?;
    for (name, value) in &email.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|e| format!("bad header name `{name}`: {e}"))?;
        m.headers_mut()
            .insert_raw(HeaderValue::new(name, value.clone()));
    }
    Ok(m)
}
