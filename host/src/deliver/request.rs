//! HTTP messages as the host sends them: a plugin's request built on its
//! account's origin (the plugin's path and headers, never its host,
//! credentials or framing; the host's credential), and the provider's
//! response read back as the plugin's answer, with the headers its channel
//! reads.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;

use super::failure::Failure;
use super::net::http::{Origin, Response};
use crate::runtime::channel::wit::{Answer, HttpRequest, HttpResponse};
use crate::store::deliveries::Cause;
use crate::store::settings::Account;

/// What the requests through one account share, resolved once: its origin
/// and base path, and its credential while fresh.
pub struct Target {
    /// Where requests go, and how long they may take.
    pub origin: Origin,
    base: url::Url,
    /// The base URL's path without its trailing `/`: requests' paths go
    /// after it.
    prefix: String,
    /// The account's credential as this route last had it, and until when
    /// it may be reused: a message then costs no map lookup or comparison
    /// of account settings.
    pub(super) credential:
        std::sync::Mutex<Option<(Option<http::HeaderValue>, std::time::Instant)>>,
}

impl Target {
    /// The account's base URL and origin, resolved once per delivery; an
    /// IP literal the egress policy refuses is refused here (a name is
    /// checked when it resolves).
    pub fn new(account: &Account) -> Result<Target, Failure> {
        let base = url::Url::parse(&account.url).map_err(|e| {
            Failure::permanent(
                Cause::Account,
                format!(
                    "account `{}` has an unusable URL `{}`: {e}",
                    account.name, account.url
                ),
            )
        })?;
        let origin = Origin::new(&base, account.allows_internal(), account.step_timeout())
            .map_err(|e| Failure::from(e).context(format!("account `{}`", account.name)))?;
        Ok(Target {
            prefix: base.path().trim_end_matches('/').to_string(),
            base,
            origin,
            credential: std::sync::Mutex::new(None),
        })
    }

    /// The route's copy of the account's credential, while it is fresh.
    pub fn fresh_credential(&self) -> Option<Option<http::HeaderValue>> {
        let slot = self.credential.lock().unwrap_or_else(|p| p.into_inner());
        let (c, until) = slot.as_ref()?;
        (std::time::Instant::now() < *until).then(|| c.clone())
    }
}

/// The request for a plugin's message on `target`, with the account's
/// credential. A message the host refuses to send is refused here: the
/// plugin's.
pub fn request(
    target: &Target,
    req: &HttpRequest,
    authorization: Option<&http::HeaderValue>,
) -> Result<http::Request<Full<Bytes>>, Failure> {
    let refuse = |what: String| Failure::permanent(Cause::Plugin, what);
    let path = request_path(target, &req.path).map_err(refuse)?;
    // For messages: the plugin's path, never the joined one, which may
    // hold an account's secret (`{secret}` in its URL).
    let url = format!("{}{}", target.origin.name, req.path);
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| refuse(format!("bad HTTP method `{}`", req.method)))?;
    let mut parts = target.origin.uri().clone().into_parts();
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
fn request_url(base: &url::Url, path: &str) -> Result<url::Url, String> {
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
pub fn answer(response: Response, keep: &AnswerHeaders) -> Answer {
    let (parts, body) = response.into_parts();
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
        match super::answer(response.body(b"{}".to_vec()).unwrap(), keep) {
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
        let base = url::Url::parse("https://api.example:8443/prefix/").unwrap();
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
        let root = url::Url::parse("http://127.0.0.1:9000").unwrap();
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
        Target::new(&account).unwrap()
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
        let r = request(&t, &m, Some(&credential)).unwrap();
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
        let anonymous = request(&t, &m, None).unwrap();
        assert!(
            anonymous.headers().get("authorization").is_none(),
            "the plugin's is dropped"
        );
    }

    #[test]
    fn odd_paths_are_encoded_or_refused() {
        let t = target("http://127.0.0.1:9000");
        let spaced = request(&t, &message("/a b", &[]), None).unwrap();
        assert_eq!(spaced.uri().path(), "/a%20b");
        let Err(e) = request(&t, &message("v1/send", &[]), None) else {
            panic!("a relative path is refused");
        };
        assert!(
            e.permanent && e.cause == Cause::Plugin && e.message.contains("must start with `/`"),
            "{e:?}"
        );
        let Err(e) = request(&t, &message("/x", &[("bad name", "v")]), None) else {
            panic!("a bad header name is refused");
        };
        assert!(e.message.contains("bad header name `bad name`"), "{e:?}");
    }
}
