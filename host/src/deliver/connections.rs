//! Connections to HTTP providers, kept across rounds and deliveries.
//!
//! Lanes (`lanes.rs`) borrow them. An HTTP/2 connection is shared: one
//! carries every stream of a lane, and its driver runs as its own task. An
//! HTTP/1.1 connection (`h1.rs`) is lent to one lane at a time and given
//! back when the lane is done with it. Each is opened through the egress-checked
//! connector; TLS chooses the protocol (ALPN), plain HTTP is HTTP/1.1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::h1::H1;

/// TCP (names resolved under the egress policy), then TLS or plain HTTP.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector<super::egress::PolicyResolver>>;

/// Errors from connecting, with their causes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long opening a connection may take, TLS and HTTP/2 handshakes included.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a connection goes: scheme and authority.
#[derive(Clone, Debug)]
pub struct Origin {
    /// `scheme://authority`, the pool's key.
    pub key: String,
    /// The same as a URI, for the connector.
    pub uri: http::Uri,
}

/// An HTTP/2 connection: many streams at once, shared by whoever sends.
#[derive(Clone)]
pub struct H2 {
    /// Opens streams on the connection.
    pub sender: h2::client::SendRequest<Bytes>,
    /// Set when the connection's driver ended (closed, failed, GOAWAY).
    closed: Arc<AtomicBool>,
}

impl H2 {
    /// True once the connection can carry no more streams.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// An open connection of either protocol.
pub enum Conn {
    /// HTTP/1.1.
    H1(H1),
    /// HTTP/2.
    H2(H2),
}

/// Open connections by origin.
pub struct Connections {
    connector: Connector,
    /// HTTP/1.1 connections nobody is using.
    idle: Mutex<HashMap<String, Vec<H1>>>,
    /// The HTTP/2 connection of each origin that speaks it.
    shared: Mutex<HashMap<String, H2>>,
}

impl Connections {
    /// An empty pool opening connections through `connector`.
    pub fn new(connector: Connector) -> Connections {
        Connections {
            connector,
            idle: Mutex::default(),
            shared: Mutex::default(),
        }
    }

    /// A connection to `origin`: its open HTTP/2 connection, an idle
    /// HTTP/1.1 one, or a new one (call within the runtime).
    pub async fn get(&self, origin: &Origin) -> Result<Conn, BoxError> {
        if let Some(h2) = lock(&self.shared).get(&origin.key)
            && !h2.is_closed()
        {
            return Ok(Conn::H2(h2.clone()));
        }
        loop {
            let idle = lock(&self.idle).get_mut(&origin.key).and_then(Vec::pop);
            let Some(mut h1) = idle else { break };
            // The provider may have closed it while it sat idle.
            if h1.usable().await {
                return Ok(Conn::H1(h1));
            }
        }
        self.connect(origin).await
    }

    /// Gives an HTTP/1.1 connection back for the next lane, if still open.
    pub fn put_back(&self, origin: &Origin, h1: H1) {
        if h1.is_closed() {
            return;
        }
        lock(&self.idle)
            .entry(origin.key.clone())
            .or_default()
            .push(h1);
    }

    /// Opens a new connection; an HTTP/2 one replaces the origin's shared one.
    async fn connect(&self, origin: &Origin) -> Result<Conn, BoxError> {
        let open = async {
            let mut connector = self.connector.clone();
            std::future::poll_fn(|cx| connector.poll_ready(cx)).await?;
            let io = connector.call(origin.uri.clone()).await?;
            if io.connected().is_negotiated_h2() {
                let (sender, driver) = h2::client::Builder::new()
                    .handshake::<_, Bytes>(TokioIo::new(io))
                    .await?;
                let closed = Arc::new(AtomicBool::new(false));
                let flag = closed.clone();
                tokio::spawn(async move {
                    // Its end is each stream's error; nothing more to report.
                    let _ = driver.await;
                    flag.store(true, Ordering::Release);
                });
                Ok::<_, BoxError>(Conn::H2(H2 { sender, closed }))
            } else {
                Ok(Conn::H1(H1::new(io)))
            }
        };
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no connection to {} within {} s",
                        origin.key,
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            })??;
        if let Conn::H2(h2) = &conn {
            lock(&self.shared).insert(origin.key.clone(), h2.clone());
        }
        Ok(conn)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
