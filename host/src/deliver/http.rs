//! HTTP transport: requests built from a plugin's messages on the
//! account's origin, with the host's credentials, sent over the pooled
//! connections of `connections.rs` (HTTP/1.1 through `h1.rs`, HTTP/2
//! through the h2 crate, either over rustls), and answers read back for
//! classification.
//!
//! Messages bypass pooled clients: lanes (`lanes.rs`) hold their
//! connection, so no task is spawned, no pool searched and nothing handed
//! between tasks per message (BENCHMARKS.md). reqwest serves the rare token
//! exchanges.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use base64::Engine;
use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;

use super::connections::{Connections, H2, Origin};
use super::failure::Failure;
use super::h1::H1;
use super::trust::Trust;
use crate::caps::signing::{Credential, credential};
use crate::runtime::channel::wit::{Answer, HttpRequest, HttpResponse};
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::settings::Account;

/// A message's answer from its provider, or why there is none.
pub type Outcome = Result<Answer, Failure>;

/// Largest response body read and kept for classification.
const MAX_BODY: usize = 64 * 1024;

/// The shared HTTP client.
pub struct HttpTransport {
    /// What TLS trusts (token exchanges build their client from it).
    trust: Trust,
    /// Connections for messages.
    pub connections: Connections,
    /// One acquisition at a time per account, so concurrent sends share
    /// one token instead of each signing or exchanging their own, while a
    /// slow token endpoint holds up only its own account.
    flights: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Credentials made recently, by account: reused for [`REMEMBER`] so a
    /// message costs no store read or digest (tokens live far longer); a
    /// failure is kept for [`REMEMBER_FAILURE`], so a burst of messages
    /// shares one failed attempt instead of each making its own.
    recent: std::sync::Mutex<std::collections::HashMap<String, Remembered>>,
}

/// A credential made recently (as its `Authorization` header) or the
/// failure to make it, with the account settings it was made for.
type Remembered = (
    Account,
    Result<Option<http::HeaderValue>, Failure>,
    std::time::Instant,
);

/// How long a credential is reused from memory before asking the store again.
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a failure to make a credential answers for the account.
const REMEMBER_FAILURE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the requests through one account share, resolved once: its base
/// URL and the origin connections go to.
pub struct Target {
    base: reqwest::Url,
    /// Scheme and authority of the base URL.
    pub origin: Origin,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The base URL's path without its trailing `/`: requests' paths go
    /// after it.
    prefix: String,
    /// The `Host` header of HTTP/1.1 requests.
    host: http::HeaderValue,
    /// The origin as errors name it.
    name: Arc<str>,
    /// How long a request may take once it is on a connection.
    pub timeout: std::time::Duration,
    /// The account's credential as this route last had it, and until when
    /// it may be reused: a message then costs no map lookup or comparison
    /// of account settings (2.5% of an HTTP/2 lane's CPU, BENCHMARKS.md).
    credential: std::sync::Mutex<Option<(Option<http::HeaderValue>, std::time::Instant)>>,
}

impl Target {
    /// The route's copy of the account's credential, while it is fresh.
    pub fn fresh_credential(&self) -> Option<Option<http::HeaderValue>> {
        let slot = self.credential.lock().unwrap_or_else(|p| p.into_inner());
        let (c, until) = slot.as_ref()?;
        (std::time::Instant::now() < *until).then(|| c.clone())
    }
}

/// A request ready for a connection: head and body.
pub struct Outbound {
    /// Method, URI, headers: the URI absolute for HTTP/2, its path for
    /// HTTP/1.1 (whose host is in the `Host` header).
    pub head: http::Request<()>,
    /// The body.
    pub body: Bytes,
    /// The request as errors name it.
    pub url: Label,
}

/// Names a request in errors: its origin and path, put together only when
/// an error is written.
#[derive(Clone)]
pub struct Label {
    origin: Arc<str>,
    path: http::uri::PathAndQuery,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin, self.path)
    }
}

impl HttpTransport {
    /// A transport trusting `trust`, its connections made under the
    /// egress policy of the store's accounts.
    pub fn new(store: &Store, trust: &Trust) -> anyhow::Result<HttpTransport> {
        // Names of accounts that may resolve to internal addresses (IP
        // literals are checked per account by `target`).
        let allow_internal = store
            .accounts()?
            .into_iter()
            .filter(super::egress::allows_internal)
            .filter_map(|a| {
                url::Url::parse(&a.url)
                    .ok()?
                    .host_str()
                    .map(|h| h.to_ascii_lowercase())
            })
            .collect();
        let resolver = super::egress::PolicyResolver::new(allow_internal);
        let mut tcp = HttpConnector::new_with_resolver(resolver);
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(trust.client_config()?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        Ok(HttpTransport {
            trust: trust.clone(),
            connections: Connections::new(connector),
            flights: Default::default(),
            recent: Default::default(),
        })
    }

    /// The account's base URL and origin, resolved once per round; an IP
    /// literal the egress policy refuses is refused here (a name is checked
    /// when it resolves).
    pub fn target(account: &Account) -> Result<Target, Failure> {
        let unusable = |e: &dyn std::fmt::Display| {
            Failure::permanent(
                Cause::Account,
                format!(
                    "account `{}` has an unusable URL `{}`: {e}",
                    account.name, account.url
                ),
            )
        };
        let base = reqwest::Url::parse(&account.url).map_err(|e| unusable(&e))?;
        let Some(host) = base.host_str().filter(|_| !base.cannot_be_a_base()) else {
            return Err(unusable(&"no host"));
        };
        super::egress::check_literal(host, super::egress::allows_internal(account))
            .map_err(|e| Failure::permanent(Cause::Policy, e.to_string()))?;
        let authority = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let key = format!("{}://{authority}", base.scheme());
        let uri = key.parse::<http::Uri>().map_err(|e| unusable(&e))?;
        let host = http::HeaderValue::from_str(&authority).map_err(|e| unusable(&e))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| unusable(&"no scheme"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| unusable(&"no host"))?;
        Ok(Target {
            prefix: base.path().trim_end_matches('/').to_string(),
            base,
            name: Arc::from(key.as_str()),
            origin: Origin { key, uri },
            scheme,
            authority,
            host,
            timeout: account.step_timeout(),
            credential: std::sync::Mutex::new(None),
        })
    }

    /// The request for a plugin's message on `target`, with the account's
    /// credential (from [`HttpTransport::credential`]); for HTTP/2 when
    /// `h2`. A message the host refuses to send is answered at once.
    pub fn request(
        target: &Target,
        req: &HttpRequest,
        authorization: Option<&http::HeaderValue>,
        h2: bool,
    ) -> Result<Outbound, Failure> {
        let refuse = |what: String| Failure::permanent(Cause::Plugin, what);
        let path = request_path(target, &req.path).map_err(refuse)?;
        let url = Label {
            origin: target.name.clone(),
            path: path.clone(),
        };
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| refuse(format!("bad HTTP method `{}`", req.method)))?;
        let uri = if h2 {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(target.scheme.clone());
            parts.authority = Some(target.authority.clone());
            parts.path_and_query = Some(path);
            http::Uri::from_parts(parts)
                .map_err(|e| refuse(format!("HTTP {url}: bad request: {e}")))?
        } else {
            http::Uri::from(path)
        };
        let mut head = http::Request::new(());
        *head.method_mut() = method;
        *head.uri_mut() = uri;
        let headers = head.headers_mut();
        headers.reserve(req.headers.len() + 4);
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        if !h2 {
            headers.insert(http::header::HOST, target.host.clone());
        }
        for (k, v) in &req.headers {
            // Credentials are the host's business, never the plugin's;
            // HTTP/2 has no connection-specific headers.
            // Framing and the host are the host's too.
            if [
                "authorization",
                "host",
                "content-length",
                "transfer-encoding",
            ]
            .iter()
            .any(|own| k.eq_ignore_ascii_case(own))
                || h2 && connection_specific(k)
            {
                continue;
            }
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| refuse(format!("HTTP {url}: bad header name `{k}`: {e}")))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|e| refuse(format!("HTTP {url}: bad value of header `{k}`: {e}")))?;
            headers.append(name, value);
        }
        if let Some(a) = authorization {
            headers.insert(http::header::AUTHORIZATION, a.clone());
        }
        if h2 && !req.body.is_empty() {
            headers.insert(http::header::CONTENT_LENGTH, req.body.len().into());
        }
        Ok(Outbound {
            head,
            body: Bytes::from(req.body.clone()),
            url,
        })
    }
}

/// The request head a lane built last, reused while its messages repeat
/// the method, path, headers and credential (a channel's messages mostly
/// do): building a header map per message, every name and value parsed and
/// hashed, was 8% of an HTTP/2 lane's CPU (BENCHMARKS.md).
#[derive(Default)]
pub struct Heads(Option<Head>);

/// What a head was built from, and the head (its body's length aside).
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    authorization: Option<http::HeaderValue>,
    h2: bool,
    /// An empty body adds no `content-length` of the host's own.
    empty: bool,
    head: http::Request<()>,
    /// The head as HTTP/1.1 writes it (built for HTTP/1.1 only).
    wire: bytes::Bytes,
    /// It asks for the connection to be closed after the answer.
    close: bool,
    url: Label,
}

/// An HTTP/1.1 request's head as written, and what its exchange needs to
/// know of it.
pub struct H1Head {
    /// Request line and headers ([`super::h1::head_bytes`]).
    pub wire: Bytes,
    /// A `HEAD` request.
    pub head_only: bool,
    /// A method whose requests carry a body, so an empty one is sized.
    pub sized: bool,
    /// The request asks for the connection to be closed after it.
    pub close: bool,
    /// The request as errors name it.
    pub url: Label,
}

impl Heads {
    /// [`HttpTransport::request`], from the last head when the message
    /// repeats what it was built from.
    pub fn request(
        &mut self,
        target: &Target,
        req: &HttpRequest,
        authorization: Option<&http::HeaderValue>,
        h2: bool,
    ) -> Result<Outbound, Failure> {
        let empty = req.body.is_empty();
        if let Some(last) = self.last(req, authorization, h2) {
            let mut head = copy_head(&last.head);
            if h2 && !empty {
                head.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, req.body.len().into());
            }
            return Ok(Outbound {
                head,
                body: Bytes::from(req.body.clone()),
                url: last.url.clone(),
            });
        }
        let out = HttpTransport::request(target, req, authorization, h2)?;
        let head = copy_head(&out.head);
        let wire = if h2 {
            Bytes::new()
        } else {
            super::h1::head_bytes(&out.head)
        };
        let close = out
            .head
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| super::h1::tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case("close")));
        self.0 = Some(Head {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            authorization: authorization.cloned(),
            h2,
            empty,
            head,
            wire,
            close,
            url: out.url.clone(),
        });
        Ok(out)
    }

    /// The HTTP/1.1 head of a message, as written: the last one's when the
    /// message repeats it, so a message costs no header map.
    pub fn h1(
        &mut self,
        target: &Target,
        req: &HttpRequest,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<H1Head, Failure> {
        if self.last(req, authorization, false).is_none() {
            self.request(target, req, authorization, false)?;
        }
        let last = self.0.as_ref().expect("built just now");
        let method = last.head.method();
        Ok(H1Head {
            wire: last.wire.clone(),
            head_only: method == http::Method::HEAD,
            sized: [http::Method::POST, http::Method::PUT, http::Method::PATCH].contains(method),
            close: last.close,
            url: last.url.clone(),
        })
    }

    /// The last head built, if `req` repeats what it was built from.
    fn last(
        &self,
        req: &HttpRequest,
        authorization: Option<&http::HeaderValue>,
        h2: bool,
    ) -> Option<&Head> {
        self.0.as_ref().filter(|last| {
            last.h2 == h2
                && last.empty == req.body.is_empty()
                && last.method == req.method
                && last.path == req.path
                && last.headers == req.headers
                && last.authorization.as_ref() == authorization
        })
    }
}

/// A copy of a request head (`http::Request` is not `Clone`).
fn copy_head(head: &http::Request<()>) -> http::Request<()> {
    let mut copy = http::Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.headers_mut() = head.headers().clone();
    copy
}

/// What an HTTP lane reuses from one request to the next: its last head and
/// its deadline timer.
#[derive(Default)]
pub struct Reused {
    /// The last head built.
    pub heads: Heads,
    /// The bound on each request's time.
    pub deadline: Deadline,
}

/// A lane's bound on how long each of its requests may take (the account's
/// timeout), on one timer re-armed only when it fires before the current
/// request's deadline: a request costs no insertion into and removal from
/// the runtime's timer wheel.
#[derive(Default)]
pub struct Deadline {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Deadline {
    /// `exchange`'s output, or `None` if it took longer than `limit`.
    pub async fn bound<F: Future>(
        &mut self,
        exchange: F,
        limit: std::time::Duration,
    ) -> Option<F::Output> {
        let until = tokio::time::Instant::now() + limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        let mut exchange = std::pin::pin!(exchange);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            // Fired: at this request's deadline, or at an earlier one's.
            while sleep.as_mut().poll(cx).is_ready() {
                if tokio::time::Instant::now() >= until {
                    return Poll::Ready(None);
                }
                sleep.as_mut().reset(until);
            }
            Poll::Pending
        })
        .await
    }
}

/// A request's path and query: the account's base path with the plugin's
/// appended. Only the path and query come from the plugin; the scheme and
/// authority are always the account's. A path that is not valid as it
/// stands (a space, say) is percent-encoded as URLs are.
fn request_path(target: &Target, path: &str) -> Result<http::uri::PathAndQuery, String> {
    if !path.starts_with('/') {
        return Err(format!("request path `{path}` must start with `/`"));
    }
    let joined = if target.prefix.is_empty() {
        http::uri::PathAndQuery::try_from(path)
    } else {
        http::uri::PathAndQuery::try_from(format!("{}{path}", target.prefix))
    };
    joined.or_else(|_| {
        let url = request_url(&target.base, path)?;
        http::uri::PathAndQuery::try_from(&url[url::Position::BeforePath..])
            .map_err(|e| format!("request path `{path}` is not usable: {e}"))
    })
}

/// Headers that describe one HTTP/1.1 connection and are malformed in HTTP/2
/// (RFC 9113, 8.2.2).
fn connection_specific(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
    ]
    .iter()
    .any(|c| name.eq_ignore_ascii_case(c))
}

/// Sends one request over HTTP/1.1 and reads the answer; `Err` if it
/// never left (the connection had closed), so it can go on another
/// connection.
pub async fn send_h1(
    h1: &mut H1,
    head: &H1Head,
    body: &[u8],
    (deadline, limit): (&mut Deadline, std::time::Duration),
    keep: &AnswerHeaders,
) -> Result<Outcome, ()> {
    let request = super::h1::Request {
        head: &head.wire,
        body,
        head_only: head.head_only,
        sized: head.sized,
        close: head.close,
    };
    let exchange = h1.exchange(&request, |name| keep.keeps_name(name), MAX_BODY);
    match deadline.bound(exchange, limit).await {
        // Half a request or answer may sit on it: the exchange left it
        // given up.
        None => Ok(Err(no_answer(&head.url, limit))),
        Some(Ok(r)) => Ok(Ok(Answer::Http(HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }))),
        Some(Err(super::h1::Failure::Failed(e))) => Ok(Err(Failure::transient(
            Cause::Protocol,
            format!("HTTP {}: {e}", head.url),
        ))),
        Some(Err(super::h1::Failure::Unsent)) => Err(()),
    }
}

/// Opens one HTTP/2 stream: the request's headers and body are queued on
/// the connection and leave with the next write.
pub fn start_h2(
    h2: &H2,
    head: http::Request<()>,
    body: Bytes,
) -> Result<h2::client::ResponseFuture, h2::Error> {
    // A clone per stream: a handle that saw the provider's stream limit
    // refuses new streams until polled ready; a fresh one lets h2 queue them.
    let mut sender = h2.sender.clone();
    let end = body.is_empty();
    let (response, mut stream) = sender.send_request(head, end)?;
    if !end {
        stream.send_data(body, true)?;
    }
    Ok(response)
}

/// The answer on an HTTP/2 stream opened by [`start_h2`], however long it
/// takes: the caller bounds it (the account's timeout).
pub async fn finish_h2(
    response: h2::client::ResponseFuture,
    url: Label,
    keep: AnswerHeaders,
) -> Outcome {
    let exchange = async {
        let resp = response.await?;
        let (parts, mut body) = resp.into_parts();
        let mut kept = Vec::new();
        while let Some(data) = body.data().await {
            let data = data?;
            // Give the window back, or the connection stalls.
            let _ = body.flow_control().release_capacity(data.len());
            let room = MAX_BODY - kept.len();
            let data = &data[..data.len().min(room)];
            if kept.is_empty() {
                // Answers mostly come in one frame: one exact allocation.
                kept = data.to_vec();
            } else {
                kept.extend_from_slice(data);
            }
            if kept.len() == MAX_BODY {
                break;
            }
        }
        Ok::<_, h2::Error>((parts, kept))
    };
    match exchange.await {
        Ok((parts, body)) => Ok(answer(parts, body, &keep)),
        Err(e) => Err(transport_error(&url, &e)),
    }
}

/// The response headers a channel reads (its descriptor's `answer-headers`):
/// only these are copied into its answers, because each header crossing
/// into the plugin costs two allocations in guest memory. `None`: all.
#[derive(Clone, Default)]
pub struct AnswerHeaders(Option<Arc<[http::HeaderName]>>);

impl AnswerHeaders {
    /// The selection a descriptor names. A name that is not a valid header
    /// name matches no header, so it is left out.
    pub fn new(names: Option<&[String]>) -> AnswerHeaders {
        AnswerHeaders(names.map(|names| {
            names
                .iter()
                .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        }))
    }

    fn keeps(&self, name: &http::HeaderName) -> bool {
        self.0.as_ref().is_none_or(|names| names.contains(name))
    }

    /// [`AnswerHeaders::keeps`] for a name as it came off the wire.
    fn keeps_name(&self, name: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n.as_str().eq_ignore_ascii_case(name)))
    }
}

/// A response as the plugin reads it: the headers it reads, in the order
/// the provider sent them.
fn answer(parts: http::response::Parts, body: Vec<u8>, keep: &AnswerHeaders) -> Answer {
    let headers = parts
        .headers
        .iter()
        .filter(|(k, _)| keep.keeps(k))
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Answer::Http(HttpResponse {
        status: parts.status.as_u16(),
        headers,
        body,
    })
}

/// The failure of a request that took longer than `limit`.
pub fn no_answer(url: &dyn std::fmt::Display, limit: std::time::Duration) -> Failure {
    Failure::transient(
        Cause::Timeout,
        format!("HTTP {url}: no answer within {} s", limit.as_secs_f32()),
    )
}

/// A failed exchange or connection, classified by its error's types
/// ([`Failure::of_error`]).
pub fn transport_error(url: &Label, e: &(dyn std::error::Error + 'static)) -> Failure {
    Failure::of_error(authority(&url.origin), e).context(format!("HTTP {url}"))
}

/// The host and port of an origin (`https://api.example:8443`), as
/// failures name the server.
pub fn authority(origin: &str) -> &str {
    origin.split_once("://").map_or(origin, |(_, a)| a)
}

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("crosscast/", env!("CARGO_PKG_VERSION"));

/// A credential as its `Authorization` header (marked sensitive, so it is
/// never logged).
fn authorization(c: &Credential) -> Result<Option<http::HeaderValue>, Failure> {
    let text = match c {
        Credential::None => return Ok(None),
        Credential::Basic { user, password } => {
            let pair = format!("{user}:{}", password.as_deref().unwrap_or(""));
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        }
        Credential::Bearer(token) => format!("Bearer {token}"),
    };
    let mut v = http::HeaderValue::from_str(&text).map_err(|_| {
        Failure::permanent(
            Cause::Credentials,
            "the credential is not a valid header value",
        )
    })?;
    v.set_sensitive(true);
    Ok(Some(v))
}

impl HttpTransport {
    /// The account's credential for requests to `target`: the route's own
    /// copy while it is fresh, else [`HttpTransport::remembered`].
    pub async fn credential(
        &self,
        store: &Store,
        account: &Account,
        target: &Target,
    ) -> Result<Option<http::HeaderValue>, Failure> {
        if let Some(c) = target.fresh_credential() {
            return Ok(c);
        }
        let (c, made) = self.remembered(store, account).await?;
        // Never reused longer than the transport's copy would be.
        *target.credential.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((c.clone(), made + REMEMBER));
        Ok(c)
    }

    /// The account's credential and when it was made: from memory if made
    /// in the last [`REMEMBER`] (or its failure, in the last
    /// [`REMEMBER_FAILURE`]), else from the store's cache or freshly signed,
    /// one acquisition at a time per account.
    async fn remembered(
        &self,
        store: &Store,
        account: &Account,
    ) -> Result<(Option<http::HeaderValue>, std::time::Instant), Failure> {
        let fresh = |recent: &std::collections::HashMap<String, Remembered>| {
            let (a, c, at) = recent.get(&account.name)?;
            let ttl = if c.is_ok() {
                REMEMBER
            } else {
                REMEMBER_FAILURE
            };
            (a == account && at.elapsed() < ttl).then(|| c.clone().map(|c| (c, *at)))
        };
        if let Some(c) = fresh(&self.recent.lock().unwrap_or_else(|p| p.into_inner())) {
            return c;
        }
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(account.name.clone())
            .or_default()
            .clone();
        let _one_at_a_time = flight.lock().await;
        if let Some(c) = fresh(&self.recent.lock().unwrap_or_else(|p| p.into_inner())) {
            return c;
        }
        let made = credential(store, &self.trust, account)
            .await
            .and_then(|c| authorization(&c))
            .map_err(|f| f.context(format!("credentials of account `{}`", account.name)));
        let at = std::time::Instant::now();
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.name.clone(), (account.clone(), made.clone(), at));
        made.map(|c| (c, at))
    }
}

/// The URL of a request: the account's base with the plugin's path (and
/// query) appended. Only the path and query come from the plugin, so the
/// scheme, host and port stay the account's, whatever the path says.
fn request_url(base: &reqwest::Url, path: &str) -> Result<reqwest::Url, String> {
    if !path.starts_with('/') {
        return Err(format!("request path `{path}` must start with `/`"));
    }
    let mut url = base.clone();
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let prefix = base.path().trim_end_matches('/');
    if prefix.is_empty() {
        url.set_path(path);
    } else {
        url.set_path(&format!("{prefix}{path}"));
    }
    url.set_query(query);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::{AnswerHeaders, request_url};
    use crate::runtime::channel::wit;

    /// The header names of the answer to a response with `headers`, read
    /// through `keep`.
    fn kept(headers: &[(&str, &str)], keep: &AnswerHeaders) -> Vec<(String, String)> {
        let mut response = http::Response::builder().status(200);
        for (k, v) in headers {
            response = response.header(*k, *v);
        }
        let (parts, ()) = response.body(()).unwrap().into_parts();
        match super::answer(parts, b"{}".to_vec(), keep) {
            wit::Answer::Http(r) => {
                assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
                r.headers
            }
            other => panic!("not an HTTP answer: {other:?}"),
        }
    }

    #[test]
    fn answers_carry_only_the_headers_the_channel_reads() {
        let sent = [
            ("date", "Tue, 01 Dec 2026 09:00:00 GMT"),
            ("Retry-After", "30"),
            ("content-type", "application/json"),
            ("x-trace", "a"),
            ("x-trace", "b"),
        ];
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let names = ["X-Trace".to_string(), "retry-after".to_string()];
        assert_eq!(
            kept(&sent, &AnswerHeaders::new(Some(&names))),
            [
                pair("retry-after", "30"),
                pair("x-trace", "a"),
                pair("x-trace", "b")
            ],
            "named ones, every value, any case"
        );
        assert!(kept(&sent, &AnswerHeaders::new(Some(&[]))).is_empty());
        let bad = ["no spaces allowed".to_string()];
        assert!(kept(&sent, &AnswerHeaders::new(Some(&bad))).is_empty());
        assert_eq!(
            kept(&sent, &AnswerHeaders::new(None)).len(),
            sent.len(),
            "none named: every header"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_gets_its_whole_time_from_one_lane_timer() {
        use super::Deadline;
        use std::time::Duration;
        const TIMEOUT: Duration = Duration::from_secs(30);
        let mut deadline = Deadline::default();
        let quick = deadline.bound(async { 1 }, TIMEOUT).await;
        assert_eq!(quick, Some(1));
        // Armed for the first request's deadline, the timer fires while
        // this one still has time: it waits on, for its own 30 s.
        tokio::time::advance(TIMEOUT - Duration::from_secs(10)).await;
        let late = deadline
            .bound(
                async {
                    tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
                    2
                },
                TIMEOUT,
            )
            .await;
        assert_eq!(late, Some(2));
        let start = tokio::time::Instant::now();
        let never = deadline.bound(std::future::pending::<()>(), TIMEOUT).await;
        assert_eq!(never, None);
        assert_eq!(start.elapsed(), TIMEOUT);
    }

    #[test]
    fn request_urls_stay_on_the_account_host() {
        let base = reqwest::Url::parse("https://api.example:8443/prefix/").unwrap();
        let url = |p: &str| request_url(&base, p).map(|u| u.to_string());
        assert_eq!(
            url("/v1/send?x=1").unwrap(),
            "https://api.example:8443/prefix/v1/send?x=1"
        );
        for sneaky in ["//evil.example/x", "/@evil.example/x", "/..//evil.example"] {
            let u = request_url(&base, sneaky).unwrap();
            assert_eq!(u.host_str(), Some("api.example"), "{sneaky}: {u}");
            assert_eq!(u.port(), Some(8443), "{sneaky}: {u}");
        }
        assert!(url("v1/send").unwrap_err().contains("must start with `/`"));
        let root = reqwest::Url::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            request_url(&root, "/2010-04-01/Messages.json")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9000/2010-04-01/Messages.json"
        );
    }
}

#[cfg(test)]
mod request_tests {
    use super::*;

    fn target(url: &str) -> Target {
        let account: Account = serde_json::from_value(serde_json::json!({
            "name": "acct",
            "url": url,
            "params": { "allow_private": "true" },
        }))
        .unwrap();
        HttpTransport::target(&account).unwrap()
    }

    fn message(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            account: "acct".into(),
            method: "POST".into(),
            recipient: "r".into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn requests_go_to_the_account_origin_in_either_protocol() {
        let t = target("https://api.example:8443/prefix/");
        let credential = http::HeaderValue::from_static("Bearer t");
        let m = message(
            "/v1/send?x=1",
            &[
                ("content-type", "application/json"),
                ("Authorization", "Bearer plugin"),
                ("connection", "close"),
                ("Host", "elsewhere.example"),
                ("content-length", "999"),
            ],
        );
        let h2 = HttpTransport::request(&t, &m, Some(&credential), true)
            .ok()
            .unwrap();
        assert_eq!(
            h2.head.uri().to_string(),
            "https://api.example:8443/prefix/v1/send?x=1"
        );
        let h = h2.head.headers();
        assert_eq!(h["authorization"], "Bearer t", "the host's credential only");
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert!(h.get("connection").is_none() && h.get("host").is_none());
        assert_eq!(h["content-length"], "2");
        assert_eq!(
            h2.url.to_string(),
            "https://api.example:8443/prefix/v1/send?x=1"
        );
        let h1 = HttpTransport::request(&t, &m, None, false).ok().unwrap();
        assert_eq!(h1.head.uri().to_string(), "/prefix/v1/send?x=1");
        let h = h1.head.headers();
        assert_eq!(h["host"], "api.example:8443");
        assert_eq!(h.get_all("host").iter().count(), 1, "the account's only");
        assert!(h.get("content-length").is_none(), "the exchange sizes it");
        assert!(h.get("authorization").is_none(), "the plugin's is dropped");
        assert_eq!(h["connection"], "close");
        let mut heads = Heads::default();
        let written = heads.h1(&t, &m, Some(&credential)).ok().unwrap();
        assert!(written.close && written.sized && !written.head_only);
        assert_eq!(
            String::from_utf8(written.wire.to_vec()).unwrap(),
            format!(
                "POST /prefix/v1/send?x=1 HTTP/1.1\r\nuser-agent: {USER_AGENT}\r\n\
                 host: api.example:8443\r\ncontent-type: application/json\r\n\
                 connection: close\r\nauthorization: Bearer t\r\n"
            )
        );
    }

    #[test]
    fn a_lane_reuses_its_last_head_only_for_the_same_message_head() {
        let t = target("https://api.example:8443/prefix/");
        let (a, b) = (
            http::HeaderValue::from_static("Bearer a"),
            http::HeaderValue::from_static("Bearer b"),
        );
        let mut heads = Heads::default();
        // Each head as the lane builds it equals a fresh build.
        let mut check = |m: &HttpRequest, auth: Option<&http::HeaderValue>, h2: bool| {
            let reused = heads.request(&t, m, auth, h2).ok().unwrap();
            let fresh = HttpTransport::request(&t, m, auth, h2).ok().unwrap();
            assert_eq!(reused.head.method(), fresh.head.method());
            assert_eq!(reused.head.uri(), fresh.head.uri());
            assert_eq!(reused.head.headers(), fresh.head.headers());
            assert_eq!(
                (reused.body, reused.url.to_string()),
                (fresh.body, fresh.url.to_string())
            );
            if !h2 {
                let written = heads.h1(&t, m, auth).ok().unwrap();
                assert_eq!(written.wire, crate::deliver::h1::head_bytes(&fresh.head));
                assert_eq!(written.head_only, m.method == "HEAD");
            }
            reused.head.headers().clone()
        };
        let mut m = message("/v1/send", &[("content-type", "application/json")]);
        check(&m, Some(&a), true);
        m.body = b"{\"longer\":true}".to_vec();
        assert_eq!(check(&m, Some(&a), true)["content-length"], "15");
        assert_eq!(check(&m, Some(&b), true)["authorization"], "Bearer b");
        m.body.clear();
        assert!(check(&m, Some(&b), true).get("content-length").is_none());
        m.path = "/v1/other".into();
        check(&m, Some(&b), true);
        m.headers.push(("x-extra".into(), "1".into()));
        assert_eq!(check(&m, None, true)["x-extra"], "1");
        assert_eq!(check(&m, None, false)["host"], "api.example:8443");
        m.method = "PUT".into();
        check(&m, None, false);
        m.method = "HEAD".into();
        check(&m, None, false);
    }

    #[test]
    fn odd_paths_are_encoded_or_refused() {
        let t = target("http://127.0.0.1:9000");
        let spaced = HttpTransport::request(&t, &message("/a b", &[]), None, true)
            .ok()
            .unwrap();
        assert_eq!(spaced.head.uri().path(), "/a%20b");
        let Err(e) = HttpTransport::request(&t, &message("v1/send", &[]), None, true) else {
            panic!("a relative path is refused");
        };
        assert!(
            e.permanent && e.cause == Cause::Plugin && e.message.contains("must start with `/`"),
            "{e:?}"
        );
        let Err(e) = HttpTransport::request(&t, &message("/x", &[("bad name", "v")]), None, true)
        else {
            panic!("a bad header name is refused");
        };
        assert!(e.message.contains("bad header name `bad name`"), "{e:?}");
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An account signing with a Google service account whose token
    /// endpoint is `token_uri`.
    fn google(store: &Store, name: &str, token_uri: &str) -> Account {
        let sa = crosscast_test_servers::keys::ServiceAccount::generate("p").unwrap();
        store
            .put_secret(name, sa.json(token_uri).as_bytes())
            .unwrap();
        let account: Account = serde_json::from_value(serde_json::json!({
            "name": name,
            "url": "http://127.0.0.1:9",
            "secret": name,
            "auth": "google",
            "params": { "allow_private": "true" },
        }))
        .unwrap();
        store.put_account(&account).unwrap();
        account
    }

    /// A token endpoint that accepts connections and never answers.
    async fn mute() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        format!("http://{addr}/token")
    }

    /// A token endpoint that answers every request with `status` and `body`.
    async fn answering(status: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = s.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/token")
    }

    /// A token endpoint that gives a token.
    async fn quick() -> String {
        answering("200 OK", r#"{"access_token":"tok","expires_in":3600}"#).await
    }

    /// One account whose token endpoint hangs holds up only its own
    /// messages: another account's token comes meanwhile.
    #[tokio::test]
    async fn a_slow_token_endpoint_stalls_only_its_own_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let slow = google(&store, "slow", &mute().await);
        let fast = google(&store, "fast", &quick().await);
        let transport =
            Arc::new(HttpTransport::new(&store, &Trust::new(Vec::new()).unwrap()).unwrap());
        let stuck = {
            let (transport, store, slow) = (transport.clone(), store.clone(), slow.clone());
            tokio::spawn(async move {
                let target = HttpTransport::target(&slow).unwrap();
                transport.credential(&store, &slow, &target).await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let target = HttpTransport::target(&fast).unwrap();
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            transport.credential(&store, &fast, &target),
        )
        .await
        .expect("the other account's token did not wait for the slow one");
        let header = got.unwrap().expect("a bearer token");
        assert_eq!(header.to_str().unwrap(), "Bearer tok");
        assert!(!stuck.is_finished(), "the slow exchange is still waiting");
        stuck.abort();
    }

    /// A token endpoint that refuses connections is a transient failure
    /// (retried later), remembered for a moment so a burst of messages
    /// shares it; one answering 400 is a permanent one with its reason.
    #[tokio::test]
    async fn token_failures_say_whether_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let down = google(&store, "down", &format!("http://{closed}/token"));
        let transport = HttpTransport::new(&store, &Trust::new(Vec::new()).unwrap()).unwrap();
        let target = HttpTransport::target(&down).unwrap();
        let f = transport
            .credential(&store, &down, &target)
            .await
            .unwrap_err();
        assert_eq!((f.cause, f.permanent), (Cause::Connect, false), "{f}");
        assert!(f.message.contains("token exchange"), "{f}");
        let again = transport
            .credential(&store, &down, &target)
            .await
            .unwrap_err();
        assert_eq!(again, f, "remembered");

        let refusing = answering(
            "400 Bad Request",
            r#"{"error":"invalid_grant","error_description":"Invalid JWT"}"#,
        )
        .await;
        let refused = google(&store, "refused", &refusing);
        let target = HttpTransport::target(&refused).unwrap();
        let f = transport
            .credential(&store, &refused, &target)
            .await
            .unwrap_err();
        assert_eq!((f.cause, f.permanent), (Cause::Credentials, true), "{f}");
        assert!(f.message.contains("invalid_grant"), "{f}");
    }
}
