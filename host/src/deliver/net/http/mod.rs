//! HTTP exchanges with a provider's origin: a request ready for the wire
//! goes on the lane's connection (`conn.rs`: hyper's HTTP/1.1 or HTTP/2,
//! chosen by ALPN; rustls with the public roots and the operator's CAs;
//! names resolved under the egress policy), and its answer is read back,
//! up to 64 KiB. Each exchange is bounded by the origin's timeout; a
//! request the provider never processed (its connection went away first)
//! goes again on a new connection.

pub mod conn;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::HttpConnector;

use super::egress::{PolicyResolver, check_literal};
use super::error::{Kind, NetError};
use super::trust::Trust;

/// Largest response body read and kept.
const MAX_BODY: usize = 64 * 1024;

/// A provider's answer: its status and headers, and its body up to 64 KiB.
pub type Response = http::Response<Vec<u8>>;

/// Connections and exchanges with every origin.
pub struct HttpClient {
    connections: conn::Connections,
}

/// Where an account's requests go, resolved once: the scheme and authority
/// of its URL, and how long an exchange may take.
pub struct Origin {
    /// As errors and the connection pool name it (`https://api.example`).
    pub name: Arc<str>,
    /// What connections are made to: the scheme and authority alone.
    dial: http::Uri,
    /// How long an exchange may take, from the moment its request is sent
    /// to its whole answer.
    pub timeout: Duration,
}

impl Origin {
    /// The origin of `url`, its host checked under the egress policy if it
    /// is an IP literal (a name is checked when it resolves).
    pub fn new(
        url: &url::Url,
        allow_internal: bool,
        timeout: Duration,
    ) -> Result<Origin, NetError> {
        let unusable = |e: &dyn std::fmt::Display| {
            NetError::permanent(Kind::Config, format!("unusable URL `{url}`: {e}"))
        };
        let Some(host) = url.host_str().filter(|_| !url.cannot_be_a_base()) else {
            return Err(unusable(&"no host"));
        };
        check_literal(host, allow_internal)
            .map_err(|e| NetError::permanent(Kind::Policy, e.to_string()))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let name = format!("{}://{authority}", url.scheme());
        let dial = name.parse::<http::Uri>().map_err(|e| unusable(&e))?;
        if dial.scheme().is_none() || dial.authority().is_none() {
            return Err(unusable(&"no scheme or host"));
        }
        Ok(Origin {
            name: Arc::from(name.as_str()),
            dial,
            timeout,
        })
    }

    /// The scheme and authority requests to this origin carry.
    pub fn uri(&self) -> &http::Uri {
        &self.dial
    }

    /// The host and port, as failures name the server.
    pub fn authority(&self) -> &str {
        self.dial.authority().map_or("", |a| a.as_str())
    }
}

impl HttpClient {
    /// A client trusting `trust`; names in `allow_internal` may resolve to
    /// internal addresses (IP literals are checked per origin by
    /// [`Origin::new`]).
    pub fn new(trust: &Trust, allow_internal: HashSet<String>) -> anyhow::Result<HttpClient> {
        let mut tcp = HttpConnector::new_with_resolver(PolicyResolver::new(allow_internal));
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(trust.client_config()?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        Ok(HttpClient {
            connections: conn::Connections::new(connector),
        })
    }

    /// Sends `request` (its URI absolute, on `origin`) on the lane's
    /// connection `held` and reads the answer; bounded by the origin's
    /// timeout.
    pub async fn send(
        &self,
        origin: &Origin,
        held: &mut Option<conn::Conn>,
        request: http::Request<conn::Body>,
    ) -> Result<Response, NetError> {
        let url = request.uri().to_string();
        let broke = |e: &(dyn std::error::Error + 'static)| {
            NetError::of_error(origin.authority(), e).context(format!("HTTP {url}"))
        };
        let exchange = async {
            let response = self
                .connections
                .send(&origin.name, &origin.dial, held, request)
                .await
                .map_err(|e| broke(&e))?;
            let (parts, mut body) = response.into_parts();
            let mut kept: Vec<u8> = Vec::new();
            while kept.len() < MAX_BODY {
                let Some(frame) = body.frame().await else {
                    break;
                };
                if let Ok(data) = frame.map_err(|e| broke(&e))?.into_data() {
                    let room = MAX_BODY - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Ok(http::Response::from_parts(parts, kept))
        };
        tokio::time::timeout(origin.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(no_answer(&url, origin.timeout)))
    }

    /// Takes back a lane's connection to `origin` when the lane ends.
    pub fn park(&self, origin: &Origin, conn: conn::Conn) {
        self.connections.park(&origin.name, conn);
    }
}

/// The error of an exchange that took longer than `limit`.
pub fn no_answer(url: &dyn std::fmt::Display, limit: Duration) -> NetError {
    NetError::transient(
        Kind::Timeout,
        format!("HTTP {url}: no answer within {} s", limit.as_secs_f32()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_the_scheme_and_authority_under_the_egress_policy() {
        let at = |u: &str, internal: bool| {
            Origin::new(
                &url::Url::parse(u).unwrap(),
                internal,
                Duration::from_secs(1),
            )
        };
        let o = at("https://api.example:8443/prefix/", false).unwrap();
        assert_eq!(&*o.name, "https://api.example:8443");
        assert_eq!(o.authority(), "api.example:8443");
        let e = at("http://127.0.0.1:9000", false).err().unwrap();
        assert_eq!((e.kind, e.permanent), (Kind::Policy, true), "{e}");
        assert!(at("http://127.0.0.1:9000", true).is_ok());
        let e = at("mailto:x@y.example", true).err().unwrap();
        assert_eq!(e.kind, Kind::Config, "{e}");
    }
}
