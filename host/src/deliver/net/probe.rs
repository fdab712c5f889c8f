//! The steps of reaching a provider one at a time, for `crosscast doctor`:
//! the name, the egress policy on what it resolved to, TCP, and TLS with
//! the operator's trust and what ALPN chose. Each step fails on its own, so
//! a report can say which one broke; sending uses the same policy, trust
//! and errors through `http` and `smtp`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::egress::{EgressDenied, Unresolved, is_internal};
use super::error::{Kind, NetError};
use super::trust::Trust;

/// The addresses `host` resolves to (an IP literal is its own address),
/// before the egress policy looks at them.
pub async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, NetError> {
    let bare = host.trim_matches(['[', ']']);
    if let Ok(ip) = bare.parse() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|source| {
            NetError::of_error(
                host,
                &Unresolved {
                    host: host.to_string(),
                    source,
                },
            )
        })?;
    Ok(found.collect())
}

/// The addresses the egress policy lets the account reach: internal ones
/// only if it allows them, refused if none is left.
pub fn allowed(
    host: &str,
    addrs: &[SocketAddr],
    allow_internal: bool,
) -> Result<Vec<SocketAddr>, NetError> {
    let usable: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| allow_internal || !is_internal(a.ip()))
        .collect();
    if usable.is_empty() {
        let denied = EgressDenied {
            host: host.to_string(),
            addresses: addrs.iter().map(|a| a.ip()).collect(),
        };
        return Err(NetError::permanent(Kind::Policy, denied.to_string()));
    }
    Ok(usable)
}

/// A TCP connection to the first of `addrs` that answers within `limit`.
pub async fn tcp(
    host: &str,
    addrs: &[SocketAddr],
    limit: Duration,
) -> Result<(TcpStream, SocketAddr), NetError> {
    let mut last = None;
    for &addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => {
                last = Some(NetError::of_error(host, &e).context(format!("connecting to {addr}")))
            }
            Err(_) => {
                last = Some(NetError::transient(
                    Kind::Timeout,
                    format!(
                        "connecting to {addr}: no connection within {} s",
                        limit.as_secs_f32()
                    ),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        NetError::transient(Kind::Connect, format!("{host}: no address to connect to"))
    }))
}

/// What a TLS handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The protocol version (`TLSv1_3`).
    pub version: String,
    /// The application protocol ALPN chose (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
}

/// A TLS handshake on `tcp` for `host`, trusting `trust`, offering `alpn`.
pub async fn tls(
    tcp: TcpStream,
    host: &str,
    trust: &Trust,
    alpn: &[&str],
    limit: Duration,
) -> Result<Handshake, NetError> {
    let bare = host.trim_matches(['[', ']']).to_string();
    let server = rustls::pki_types::ServerName::try_from(bare)
        .map_err(|e| NetError::permanent(Kind::Config, format!("{host} is not a TLS name: {e}")))?;
    let mut config = trust
        .client_config()
        .map_err(|e| NetError::permanent(Kind::Config, e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::time::timeout(limit, connector.connect(server, tcp))
        .await
        .map_err(|_| {
            NetError::transient(
                Kind::Timeout,
                format!("{host}: no TLS handshake within {} s", limit.as_secs_f32()),
            )
        })?
        .map_err(|e| NetError::of_error(host, &e))?;
    let (_, session) = stream.get_ref();
    Ok(Handshake {
        version: session
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    })
}
