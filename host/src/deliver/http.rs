//! HTTP transport: one pooled client (HTTP/1.1 and HTTP/2 over rustls); the
//! host joins the account's base URL and applies its credentials.
//!
//! Messages go out through hyper's pooled client directly: reqwest's
//! per-request layers (a redirect policy that parses every URL again, URL
//! conversions) cost 5–10% of a send's CPU (BENCHMARKS.md). reqwest still
//! serves the rare token exchanges.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::caps::signing::{Credential, credential};
use crate::runtime::channel::wit::{Answer, HttpRequest, HttpResponse};
use crate::store::Store;
use crate::store::settings::Account;

/// Largest response body read and kept for classification.
const MAX_BODY: usize = 64 * 1024;

/// The connector: TLS (or plain HTTP) over TCP, names resolved under the
/// egress policy.
type Connector = hyper_rustls::HttpsConnector<HttpConnector<super::egress::PolicyResolver>>;

/// How long a request may take, connection included.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The shared HTTP client.
pub struct HttpTransport {
    /// Token exchanges (OAuth) and other rare calls.
    client: reqwest::Client,
    /// Messages.
    sender: Client<Connector, Full<Bytes>>,
    /// One token acquisition at a time, so concurrent sends share one token
    /// instead of each signing or exchanging their own.
    signing: tokio::sync::Mutex<()>,
    /// Credentials made recently, by account: reused for [`REMEMBER`] so a
    /// message costs no store read or digest (tokens live far longer).
    recent: std::sync::Mutex<std::collections::HashMap<String, Remembered>>,
}

/// A credential made recently (as its `Authorization` header), with the
/// account settings it was made for.
type Remembered = (Account, Option<http::HeaderValue>, std::time::Instant);

/// How long a credential is reused from memory before asking the store again.
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(30);

impl HttpTransport {
    /// A client with connection pooling and sane timeouts, trusting the
    /// public roots and the CA certificates the operator added.
    pub fn new(store: &Store) -> anyhow::Result<HttpTransport> {
        let mut builder = reqwest::Client::builder();
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for (name, pem) in store.cas()? {
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!("trusted CA `{name}` is not a PEM certificate: {e}")
            })?;
            builder = builder.add_root_certificate(cert);
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            for der in CertificateDer::pem_slice_iter(&pem) {
                let der = der.map_err(|e| {
                    anyhow::anyhow!("trusted CA `{name}` is not a PEM certificate: {e}")
                })?;
                roots.add(der).map_err(|e| {
                    anyhow::anyhow!("trusted CA `{name}` is not a usable certificate: {e}")
                })?;
            }
        }
        // Names of accounts that may resolve to internal addresses.
        let allow_internal = store
            .accounts()?
            .into_iter()
            .filter(|a| a.params.get("allow_private").is_some_and(|v| v == "true"))
            .filter_map(|a| {
                url::Url::parse(&a.url)
                    .ok()?
                    .host_str()
                    .map(|h| h.to_ascii_lowercase())
            })
            .collect();
        let resolver = super::egress::PolicyResolver::new(allow_internal);
        let client = builder
            .dns_resolver(Arc::new(resolver.clone()))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .build()?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = HttpConnector::new_with_resolver(resolver);
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let sender = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpTransport {
            client,
            sender,
            signing: tokio::sync::Mutex::new(()),
            recent: Default::default(),
        })
    }

    /// The account's base URL, parsed once per round of messages.
    pub fn base(account: &Account) -> Result<reqwest::Url, String> {
        let base = reqwest::Url::parse(&account.url).map_err(|e| {
            format!(
                "{REFUSED}account `{}` has an unusable URL `{}`: {e}",
                account.name, account.url
            )
        })?;
        if base.host_str().is_none() || base.cannot_be_a_base() {
            return Err(format!(
                "{REFUSED}account `{}` has no host in its URL `{}`",
                account.name, account.url
            ));
        }
        Ok(base)
    }

    /// Sends one request relative to the account's URL (`base`, from
    /// [`HttpTransport::base`]).
    pub async fn send(
        &self,
        store: &Store,
        account: &Account,
        base: &reqwest::Url,
        req: &HttpRequest,
    ) -> Answer {
        let url = match request_url(base, &req.path) {
            Ok(u) => u,
            Err(e) => return Answer::TransportError(e),
        };
        let method = match http::Method::from_bytes(req.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Answer::TransportError(format!(
                    "{REFUSED}bad HTTP method `{}`",
                    req.method
                ));
            }
        };
        let authorization = match self.credential(store, account).await {
            Ok(a) => a,
            Err(e) => return Answer::TransportError(format!("{REFUSED}credentials: {e}")),
        };
        let mut r = http::Request::builder()
            .method(method)
            .uri(url.as_str())
            .header(http::header::USER_AGENT, USER_AGENT);
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("authorization") {
                // Credentials are the host's business, never the plugin's.
                continue;
            }
            r = r.header(k, v);
        }
        if let Some(a) = authorization {
            r = r.header(http::header::AUTHORIZATION, a);
        }
        let request = match r.body(Full::new(Bytes::from(req.body.clone()))) {
            Ok(r) => r,
            Err(e) => {
                return Answer::TransportError(format!("{REFUSED}HTTP {url}: bad request: {e}"));
            }
        };
        let exchange = async {
            let resp = self.sender.request(request).await?;
            let (parts, mut body) = resp.into_parts();
            // Only the first MAX_BODY bytes are read: a provider's answer
            // never holds more than that in memory.
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    let room = MAX_BODY - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                    if kept.len() == MAX_BODY {
                        break;
                    }
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, kept))
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Err(_) => Answer::TransportError(format!(
                "HTTP {url}: no answer within {} s",
                TIMEOUT.as_secs()
            )),
            Ok(Ok((parts, body))) => {
                let headers = parts
                    .headers
                    .iter()
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
            Ok(Err(e)) => {
                let e: &(dyn std::error::Error + 'static) = &*e;
                let chain = error_chain(e);
                // What only the operator can fix is not worth retrying: an
                // address the egress policy denies, a certificate not trusted.
                let refused = chain.contains("egress denied")
                    || std::iter::successors(Some(e), |e| e.source()).any(|c| {
                        // rustls' error may sit inside an io::Error, whose
                        // `source` skips it.
                        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
                            c.downcast_ref::<std::io::Error>()?
                                .get_ref()?
                                .downcast_ref::<rustls::Error>()
                        });
                        matches!(tls, Some(rustls::Error::InvalidCertificate(_)))
                    });
                let prefix = if refused { REFUSED } else { "" };
                Answer::TransportError(format!("{prefix}HTTP {url}: {chain}"))
            }
        }
    }
}

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("crosscast/", env!("CARGO_PKG_VERSION"));

/// A credential as its `Authorization` header (marked sensitive, so it is
/// never logged).
fn authorization(c: &Credential) -> Result<Option<http::HeaderValue>, String> {
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
    let mut v = http::HeaderValue::from_str(&text)
        .map_err(|_| "the credential is not a valid header value".to_string())?;
    v.set_sensitive(true);
    Ok(Some(v))
}

impl HttpTransport {
    /// The account's credential: from memory if made in the last
    /// [`REMEMBER`], else from the store's cache or freshly signed, one
    /// acquisition at a time.
    async fn credential(
        &self,
        store: &Store,
        account: &Account,
    ) -> Result<Option<http::HeaderValue>, String> {
        let fresh = |recent: &std::collections::HashMap<String, Remembered>| {
            recent
                .get(&account.name)
                .filter(|(a, _, at)| a == account && at.elapsed() < REMEMBER)
                .map(|(_, c, _)| c.clone())
        };
        if let Some(c) = fresh(&self.recent.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(c);
        }
        let _one_at_a_time = self.signing.lock().await;
        if let Some(c) = fresh(&self.recent.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(c);
        }
        let c = authorization(&credential(store, &self.client, account).await?)?;
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                account.name.clone(),
                (account.clone(), c.clone(), std::time::Instant::now()),
            );
        Ok(c)
    }
}

/// The URL of a request: the account's base with the plugin's path (and
/// query) appended. Only the path and query come from the plugin, so the
/// scheme, host and port stay the account's, whatever the path says.
fn request_url(base: &reqwest::Url, path: &str) -> Result<reqwest::Url, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{REFUSED}request path `{path}` must start with `/`"
        ));
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

/// Prefix of transport errors the host decided (policy, configuration,
/// trust): the delivery fails them for good instead of retrying.
pub(crate) const REFUSED: &str = "refused: ";

/// An error with its causes: reqwest's own message hides the TLS reason.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::request_url;

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
