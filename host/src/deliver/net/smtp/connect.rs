//! Opening a session with a relay: the host resolves the relay's name
//! under the egress policy, connects the socket itself (`TCP_NODELAY`:
//! lettre writes a message and its final dot separately, which Nagle's
//! algorithm would hold for the server's delayed ACK), does implicit TLS,
//! and hands the stream to lettre, which reads the greeting and speaks
//! EHLO, STARTTLS and AUTH. Each step is bounded by the account's timeout.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::authentication::DEFAULT_MECHANISMS;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::commands::Ehlo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::{Relay, Security};
use crate::deliver::net::error::{Kind, NetError, error_chain, untrusted, untrusted_certificate};

/// Longest wait for a TCP connection (the account's timeout if shorter).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open session with a relay.
pub struct Conn {
    pub(super) smtp: AsyncSmtpConnection,
    /// The relay offered PIPELINING (RFC 2920).
    pub(super) pipelining: bool,
    /// The extensions its EHLO reply named (`PIPELINING`, `SIZE`...).
    pub(super) extensions: Vec<String>,
    /// It carried a message before (or was parked): the relay may have
    /// closed it since.
    used: bool,
}

impl Conn {
    /// The same session, marked as having carried a message.
    pub(super) fn used(mut self) -> Conn {
        self.used = true;
        self
    }

    /// True if it carried a message before.
    pub(super) fn was_used(&self) -> bool {
        self.used
    }
}

/// `step` within `limit`, or a transient timeout naming `what`.
pub(super) async fn timed<T>(
    limit: Duration,
    relay: &str,
    what: &str,
    step: impl Future<Output = T>,
) -> Result<T, NetError> {
    tokio::time::timeout(limit, step).await.map_err(|_| {
        NetError::transient(
            Kind::Timeout,
            format!(
                "SMTP {relay}: no answer to {what} within {} s",
                limit.as_secs_f32()
            ),
        )
    })
}

/// A session-level lettre error (not a reply to a message) as a failure.
pub(super) fn session_error(
    relay: &str,
    what: &str,
    e: &lettre::transport::smtp::Error,
) -> NetError {
    let detail = error_chain(e);
    if untrusted_certificate(e) {
        return NetError::permanent(Kind::Certificate, untrusted(relay, &detail));
    }
    match e.status().map(u16::from) {
        // The relay's refusal of the session itself.
        Some(code) if code >= 500 => NetError::permanent(
            Kind::Protocol,
            format!("SMTP {relay}: {what} refused ({code}): {}", reply_text(e)),
        ),
        Some(code) => NetError::transient(
            Kind::Protocol,
            format!(
                "SMTP {relay}: {what} refused for now ({code}): {}",
                reply_text(e)
            ),
        ),
        // lettre's own refusal: a missing extension, an unusable reply.
        None if e.is_client() => {
            NetError::permanent(Kind::Protocol, format!("SMTP {relay}: {what}: {detail}"))
        }
        None => NetError::transient(Kind::Protocol, format!("SMTP {relay}: {what}: {detail}")),
    }
}

/// The text of a negative reply lettre turned into an error (its source).
pub(super) fn reply_text(e: &lettre::transport::smtp::Error) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

impl Relay {
    /// Opens a session, ready for a transaction.
    pub(super) async fn connect(&self) -> Result<Conn, NetError> {
        let name = self.name();
        let limit = self.timeout;
        let stream = self.stream().await?;
        let mut smtp = timed(
            limit,
            &name,
            "the greeting",
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
        )
        .await?
        .map_err(|e| session_error(&name, "greeting", &e))?;
        if let Security::StartTls { required } = self.security {
            let params = self.starttls.clone().expect("made for STARTTLS");
            if smtp.can_starttls() {
                timed(limit, &name, "STARTTLS", smtp.starttls(params, &self.hello))
                    .await?
                    .map_err(|e| session_error(&name, "STARTTLS", &e))?;
            } else if required {
                return Err(NetError::permanent(
                    Kind::Protocol,
                    format!(
                        "SMTP {name}: the relay does not offer STARTTLS, which the account \
                         requires (tls=required)"
                    ),
                ));
            }
        }
        // lettre keeps what EHLO offered to itself, PIPELINING aside: ask
        // again and read the keywords (before AUTH, which EHLO would reset).
        let features = timed(
            limit,
            &name,
            "EHLO",
            smtp.command(Ehlo::new(self.hello.clone())),
        )
        .await?
        .map_err(|e| session_error(&name, "EHLO", &e))?;
        let extensions: Vec<String> = features
            .message()
            .skip(1)
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect();
        let pipelining = extensions.iter().any(|k| k == "PIPELINING");
        if let Some(credentials) = &self.credentials {
            let auth = timed(
                limit,
                &name,
                "AUTH",
                smtp.auth(DEFAULT_MECHANISMS, credentials),
            )
            .await?;
            if let Err(e) = auth {
                let mut f = session_error(&name, "AUTH", &e);
                if e.status().is_some() {
                    f.kind = Kind::Credentials;
                }
                return Err(f);
            }
        }
        Ok(Conn {
            smtp,
            pipelining,
            extensions,
            used: false,
        })
    }

    /// The relay's socket, wrapped in TLS for an implicit-TLS relay.
    async fn stream(&self) -> Result<Box<dyn AsyncTokioStream>, NetError> {
        let tcp = self.tcp().await?;
        if self.security != Security::Implicit {
            return Ok(Box::new(tcp));
        }
        let name = self.name();
        let server =
            rustls::pki_types::ServerName::try_from(self.host.trim_matches(['[', ']']).to_string())
                .map_err(|e| {
                    NetError::permanent(Kind::Config, format!("SMTP {name}: not a TLS name: {e}"))
                })?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let handshake = connector.connect(server, tcp);
        let tls = timed(self.timeout, &name, "the TLS handshake", handshake)
            .await?
            .map_err(|e| NetError::of_error(&name, &e).context(format!("SMTP {name}")))?;
        Ok(Box::new(Tls(tls)))
    }

    /// A TCP connection to the relay, its name resolved under the egress
    /// policy; each address tried in turn.
    async fn tcp(&self) -> Result<TcpStream, NetError> {
        let name = self.name();
        let addrs =
            crate::deliver::net::egress::resolve(&self.host, self.port, self.allow_internal)
                .await
                .map_err(|e| NetError::of_error(&name, &*e).context(format!("SMTP {name}")))?;
        let limit = CONNECT_TIMEOUT.min(self.timeout);
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    tcp.set_nodelay(true)
                        .map_err(|e| NetError::of_error(&name, &e))?;
                    return Ok(tcp);
                }
                Ok(Err(e)) => {
                    last = Some(NetError::of_error(&name, &e).context(connecting(&name, addr)))
                }
                Err(_) => {
                    last = Some(NetError::transient(
                        Kind::Timeout,
                        format!(
                            "{}: no connection within {} s",
                            connecting(&name, addr),
                            limit.as_secs_f32()
                        ),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            NetError::transient(
                Kind::Connect,
                format!("SMTP {name}: no address to connect to"),
            )
        }))
    }
}

fn connecting(name: &str, addr: SocketAddr) -> String {
    format!("SMTP {name}: connecting to {addr}")
}

/// A TLS stream lettre can speak over (its trait is implemented for plain
/// TCP only).
#[derive(Debug)]
struct Tls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Tls {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
