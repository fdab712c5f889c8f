//! The connections HTTP lanes hold, made with hyper's connection API.
//!
//! A lane keeps its own HTTP/1.1 connection for message after message, so
//! an account never sees more connections than its concurrency (hyper-util's
//! pooled client opens extra ones whenever a request comes before the last
//! answer's connection is back in its pool). When the provider speaks
//! HTTP/2 (chosen by ALPN) every lane holds a handle on the origin's one
//! connection. Connections a lane leaves behind wait, for a while, for the
//! next delivery to the same origin.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tower_service::Service as _;

/// A request's body: the plugin's bytes, whole.
pub type Body = Full<Bytes>;

/// TCP (names resolved under the egress policy), then TLS or plain HTTP.
pub type Connector =
    hyper_rustls::HttpsConnector<HttpConnector<crate::deliver::net::egress::PolicyResolver>>;

/// Errors hyper's connector returns (the egress policy's among them).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a connection may wait unused for the next delivery.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// Unused HTTP/1.1 connections kept per origin.
const IDLE_PER_ORIGIN: usize = 64;

/// Why there is no connection, or no answer on one.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// No connection could be made (resolution, the egress policy, TCP, TLS).
    #[error("could not connect")]
    Connect(#[source] BoxError),
    /// The connection was made but HTTP could not start on it.
    #[error("the HTTP handshake failed")]
    Handshake(#[source] hyper::Error),
    /// The exchange broke, or the connection went away, after the request
    /// may have been written.
    #[error("the exchange failed")]
    Exchange(#[source] hyper::Error),
}

/// A connection a lane holds.
pub enum Conn {
    /// A connection of the lane's own: one exchange at a time.
    H1(http1::SendRequest<Body>),
    /// A handle on the origin's shared connection: a stream per exchange.
    H2(http2::SendRequest<Body>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    /// Sends `request` once the connection may take it. `Err` carries the
    /// request back when it never left, so it can go on another connection.
    async fn send(
        &mut self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, (ConnError, Option<http::Request<Body>>)> {
        match self {
            Conn::H1(s) => {
                // HTTP/1.1 names the origin in `Host` and the path alone in
                // the request line.
                let authority = request.uri().authority().map(|a| a.as_str().to_owned());
                if let Some(a) = authority.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
                    request.headers_mut().insert(http::header::HOST, a);
                }
                if let Some(p) = request.uri().path_and_query().cloned() {
                    *request.uri_mut() = http::Uri::from(p);
                }
                if let Err(e) = s.ready().await {
                    return Err((ConnError::Exchange(e), Some(request)));
                }
                s.try_send_request(request).await.map_err(|mut e| {
                    let back = e.take_message();
                    (ConnError::Exchange(e.into_error()), back)
                })
            }
            Conn::H2(s) => {
                if let Err(e) = s.ready().await {
                    return Err((ConnError::Exchange(e), Some(request)));
                }
                s.try_send_request(request).await.map_err(|mut e| {
                    let back = e.take_message();
                    (ConnError::Exchange(e.into_error()), back)
                })
            }
        }
    }
}

/// What an origin is known to speak, its shared HTTP/2 connection and its
/// idle HTTP/1.1 ones.
#[derive(Default)]
struct Known {
    /// It answered a connection with HTTP/1.1: lanes connect in parallel.
    http1: bool,
    /// Its HTTP/2 connection, shared by every lane.
    http2: Option<http2::SendRequest<Body>>,
    /// HTTP/1.1 connections no lane holds, and since when.
    idle: Vec<(http1::SendRequest<Body>, Instant)>,
}

/// An origin's connections.
#[derive(Default)]
struct Origin {
    /// Held while a connection finds out what the origin speaks, so the
    /// lanes starting together open one HTTP/2 connection, not one each.
    dialing: tokio::sync::Mutex<()>,
    known: Mutex<Known>,
}

impl Origin {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection ready to hand out: the shared HTTP/2 one, or an idle
    /// HTTP/1.1 one still open.
    fn take(&self) -> Option<Conn> {
        let mut known = self.known();
        if let Some(h2) = &known.http2 {
            if !h2.is_closed() {
                return Some(Conn::H2(h2.clone()));
            }
            known.http2 = None;
        }
        while let Some((h1, since)) = known.idle.pop() {
            if !h1.is_closed() && since.elapsed() < IDLE_FOR {
                return Some(Conn::H1(h1));
            }
        }
        None
    }
}

/// Every origin's connections, made through one connector.
pub struct Connections {
    connector: Connector,
    origins: Mutex<HashMap<Arc<str>, Arc<Origin>>>,
}

impl Connections {
    /// Connections made through `connector`.
    pub fn new(connector: Connector) -> Connections {
        Connections {
            connector,
            origins: Mutex::new(HashMap::new()),
        }
    }

    fn origin(&self, origin: &Arc<str>) -> Arc<Origin> {
        let mut origins = self.origins.lock().unwrap_or_else(|p| p.into_inner());
        origins.entry(origin.clone()).or_default().clone()
    }

    /// Sends `request` to `origin` (whose scheme and authority `dial` is) on
    /// the lane's connection `held`, made or replaced as needed. A request
    /// that never left its connection (it had gone away) goes once more on
    /// a new one.
    pub async fn send(
        &self,
        origin: &Arc<str>,
        dial: &http::Uri,
        held: &mut Option<Conn>,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ConnError> {
        let mut request = request;
        loop {
            let (mut conn, fresh) = match held.take().filter(|c| !c.is_closed()) {
                Some(c) => (c, false),
                None => self.connection(origin, dial).await?,
            };
            match conn.send(request).await {
                Ok(response) => {
                    *held = Some(conn);
                    return Ok(response);
                }
                Err((e, Some(back))) if !fresh => {
                    tracing::debug!(%origin, error = %e, "sending again on a new connection");
                    request = back;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// A connection to `origin` (its shared HTTP/2 one, an idle one, or a
    /// new one) and whether it was just made.
    async fn connection(
        &self,
        origin: &Arc<str>,
        dial: &http::Uri,
    ) -> Result<(Conn, bool), ConnError> {
        let o = self.origin(origin);
        if let Some(c) = o.take() {
            return Ok((c, false));
        }
        if o.known().http1 || dial.scheme() != Some(&http::uri::Scheme::HTTPS) {
            return Ok((self.dial(dial).await?, true));
        }
        let _first = o.dialing.lock().await;
        if let Some(c) = o.take() {
            return Ok((c, false));
        }
        let conn = self.dial(dial).await?;
        let mut known = o.known();
        match &conn {
            Conn::H2(s) => known.http2 = Some(s.clone()),
            Conn::H1(_) => known.http1 = true,
        }
        Ok((conn, true))
    }

    /// A new connection to `dial`, HTTP/2 if TLS negotiated it.
    async fn dial(&self, dial: &http::Uri) -> Result<Conn, ConnError> {
        let io = self
            .connector
            .clone()
            .call(dial.clone())
            .await
            .map_err(ConnError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(ConnError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "HTTP/2 connection ended");
                }
            });
            Ok(Conn::H2(sender))
        } else {
            let (sender, connection) = http1::handshake(io).await.map_err(ConnError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "HTTP/1.1 connection ended");
                }
            });
            Ok(Conn::H1(sender))
        }
    }

    /// Takes back a lane's connection for the next delivery to `origin`.
    pub fn park(&self, origin: &Arc<str>, conn: Conn) {
        let Conn::H1(h1) = conn else {
            // The origin keeps its HTTP/2 connection itself.
            return;
        };
        if h1.is_closed() {
            return;
        }
        let o = self.origin(origin);
        let mut known = o.known();
        known
            .idle
            .retain(|(c, since)| !c.is_closed() && since.elapsed() < IDLE_FOR);
        if known.idle.len() < IDLE_PER_ORIGIN {
            known.idle.push((h1, Instant::now()));
        }
    }
}
