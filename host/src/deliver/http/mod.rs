//! HTTP transport: requests built from a plugin's messages on the account's
//! origin, with the host's credentials (`credentials.rs`), sent on the
//! lane's connection (`conn.rs`: hyper's HTTP/1.1 or HTTP/2, chosen by
//! ALPN; rustls with the public roots and the operator's CAs; names
//! resolved under the egress policy), and answers read back, up to 64 KiB,
//! for classification. Each request is bounded by the account's timeout; a
//! request the provider never processed (its connection went away first)
//! goes again on a new connection.

pub mod conn;
mod credentials;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;

use super::failure::Failure;
use super::trust::Trust;
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
    /// The connections messages go on.
    connections: conn::Connections,
    /// One credential acquisition at a time per account.
    flights: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Credentials (or failures to make them) made recently, by account.
    recent: std::sync::Mutex<std::collections::HashMap<String, credentials::Remembered>>,
}

/// What the requests through one account share, resolved once: its base
/// URL, origin and timeout, and its credential while fresh.
pub struct Target {
    base: reqwest::Url,
    /// Scheme and authority of the base URL.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// What connections are made to: the scheme and authority alone.
    dial: http::Uri,
    /// The base URL's path without its trailing `/`: requests' paths go
    /// after it.
    prefix: String,
    /// The origin as errors name it (`https://api.example`).
    pub origin: Arc<str>,
    /// How long a request may take, from the moment it is sent to its
    /// whole answer.
    pub timeout: std::time::Duration,
    /// The account's credential as this route last had it, and until when
    /// it may be reused: a message then costs no map lookup or comparison
    /// of account settings.
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
            connections: conn::Connections::new(connector),
            flights: Default::default(),
            recent: Default::default(),
        })
    }

    /// The account's base URL and origin, resolved once per delivery; an
    /// IP literal the egress policy refuses is refused here (a name is
    /// checked when it resolves).
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
            scheme,
            authority,
            dial: uri,
            origin: Arc::from(key.as_str()),
            timeout: account.step_timeout(),
            credential: std::sync::Mutex::new(None),
        })
    }

    /// The request for a plugin's message on `target`, with the account's
    /// credential (from [`HttpTransport::credential`]). A message the host
    /// refuses to send is refused here: the plugin's.
    pub fn request(
        target: &Target,
        req: &HttpRequest,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<http::Request<Full<Bytes>>, Failure> {
        let refuse = |what: String| Failure::permanent(Cause::Plugin, what);
        let path = request_path(target, &req.path).map_err(refuse)?;
        let url = format!("{}{path}", target.origin);
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| refuse(format!("bad HTTP method `{}`", req.method)))?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(target.scheme.clone());
        parts.authority = Some(target.authority.clone());
        parts.path_and_query = Some(path);
        let uri = http::Uri::from_parts(parts)
            .map_err(|e| refuse(format!("HTTP {url}: bad request: {e}")))?;
        let mut request = http::Request::new(Full::new(Bytes::from(req.body.clone())));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.reserve(req.headers.len() + 2);
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(USER_AGENT),
        );
        for (k, v) in &req.headers {
            // Credentials, the host and the framing are the host's business,
            // never the plugin's; so is how the connection is used.
            if HOSTS_OWN.iter().any(|own| k.eq_ignore_ascii_case(own)) {
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
        Ok(request)
    }

    /// Sends a plugin's message to `target` with `authorization` on the
    /// lane's connection `held` and reads the answer, keeping the headers
    /// `keep` names; bounded by the target's timeout.
    pub async fn send(
        &self,
        target: &Target,
        held: &mut Option<conn::Conn>,
        req: &HttpRequest,
        authorization: Option<&http::HeaderValue>,
        keep: &AnswerHeaders,
    ) -> Outcome {
        let request = HttpTransport::request(target, req, authorization)?;
        let url = request.uri().to_string();
        let exchange = async {
            let response = self
                .connections
                .send(&target.origin, &target.dial, held, request)
                .await
                .map_err(|e| transport_error(&target.origin, &url, &e))?;
            let (parts, mut body) = response.into_parts();
            let mut kept: Vec<u8> = Vec::new();
            while kept.len() < MAX_BODY {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let frame = frame.map_err(|e| transport_error(&target.origin, &url, &e))?;
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Ok(answer(parts, kept, keep))
        };
        tokio::time::timeout(target.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(no_answer(&url, target.timeout)))
    }
}

impl HttpTransport {
    /// Takes back a lane's connection to `target` when the lane ends.
    pub fn park(&self, target: &Target, conn: conn::Conn) {
        self.connections.park(&target.origin, conn);
    }
}

/// Headers the host writes or leaves to the client: credentials, the host,
/// the framing and the connection's use.
const HOSTS_OWN: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
];

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

/// A failed exchange or connection with `origin`, classified by its
/// error's types ([`Failure::of_error`]).
fn transport_error(origin: &str, url: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    Failure::of_error(authority(origin), e).context(format!("HTTP {url}"))
}

/// The host and port of an origin (`https://api.example:8443`), as
/// failures name the server.
pub fn authority(origin: &str) -> &str {
    origin.split_once("://").map_or(origin, |(_, a)| a)
}

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("crosscast/", env!("CARGO_PKG_VERSION"));

#[cfg(test)]
mod tests {
    use super::*;

    /// The header names of the answer to a response with `headers`, read
    /// through `keep`.
    fn kept(headers: &[(&str, &str)], keep: &AnswerHeaders) -> Vec<(String, String)> {
        let mut response = http::Response::builder().status(200);
        for (k, v) in headers {
            response = response.header(*k, *v);
        }
        let (parts, ()) = response.body(()).unwrap().into_parts();
        match super::answer(parts, b"{}".to_vec(), keep) {
            Answer::Http(r) => {
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
    fn requests_go_to_the_account_origin_with_the_host_s_credential_only() {
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
        let r = HttpTransport::request(&t, &m, Some(&credential)).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "https://api.example:8443/prefix/v1/send?x=1"
        );
        let h = r.headers();
        assert_eq!(h["authorization"], "Bearer t", "the host's credential only");
        assert_eq!(h.get_all("authorization").iter().count(), 1);
        assert!(h.get("connection").is_none() && h.get("host").is_none());
        assert!(h.get("content-length").is_none(), "the client sizes it");
        assert_eq!(h["content-type"], "application/json");
        let anonymous = HttpTransport::request(&t, &m, None).unwrap();
        assert!(
            anonymous.headers().get("authorization").is_none(),
            "the plugin's is dropped"
        );
    }

    #[test]
    fn odd_paths_are_encoded_or_refused() {
        let t = target("http://127.0.0.1:9000");
        let spaced = HttpTransport::request(&t, &message("/a b", &[]), None).unwrap();
        assert_eq!(spaced.uri().path(), "/a%20b");
        let Err(e) = HttpTransport::request(&t, &message("v1/send", &[]), None) else {
            panic!("a relative path is refused");
        };
        assert!(
            e.permanent && e.cause == Cause::Plugin && e.message.contains("must start with `/`"),
            "{e:?}"
        );
        let Err(e) = HttpTransport::request(&t, &message("/x", &[("bad name", "v")]), None) else {
            panic!("a bad header name is refused");
        };
        assert!(e.message.contains("bad header name `bad name`"), "{e:?}");
    }
}
