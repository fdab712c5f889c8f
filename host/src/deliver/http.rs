//! HTTP transport: one pooled client (HTTP/1.1 and HTTP/2 over rustls); the
//! host joins the account's base URL and applies its credentials.

use crate::caps::signing::{Credential, credential};
use crate::runtime::channel::wit::{Answer, HttpRequest, HttpResponse};
use crate::store::Store;
use crate::store::settings::Account;

/// Largest response body kept for classification.
const MAX_BODY: usize = 64 * 1024;

/// The shared HTTP client.
pub struct HttpTransport {
    client: reqwest::Client,
    /// One token acquisition at a time, so concurrent sends share one token
    /// instead of each signing or exchanging their own.
    signing: tokio::sync::Mutex<()>,
    /// Credentials made recently, by account: reused for [`REMEMBER`] so a
    /// message costs no store read or digest (tokens live far longer).
    recent: std::sync::Mutex<std::collections::HashMap<String, Remembered>>,
}

/// A credential made recently, with the account settings it was made for.
type Remembered = (Account, Credential, std::time::Instant);

/// How long a credential is reused from memory before asking the store again.
const REMEMBER: std::time::Duration = std::time::Duration::from_secs(30);

impl HttpTransport {
    /// A client with connection pooling and sane timeouts, trusting the
    /// public roots and the CA certificates the operator added.
    pub fn new(store: &Store) -> anyhow::Result<HttpTransport> {
        let mut builder = reqwest::Client::builder();
        for (name, pem) in store.cas()? {
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!("trusted CA `{name}` is not a PEM certificate: {e}")
            })?;
            builder = builder.add_root_certificate(cert);
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
        let client = builder
            .dns_resolver(std::sync::Arc::new(super::egress::PolicyResolver::new(
                allow_internal,
            )))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crosscast/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpTransport {
            client,
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
        let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Answer::TransportError(format!(
                    "{REFUSED}bad HTTP method `{}`",
                    req.method
                ));
            }
        };
        let mut r = self
            .client
            .request(method, url.clone())
            .body(req.body.clone());
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("authorization") {
                // Credentials are the host's business, never the plugin's.
                continue;
            }
            r = r.header(k, v);
        }
        let credential = self.credential(store, account).await;
        match credential {
            Ok(Credential::None) => {}
            Ok(Credential::Basic { user, password }) => r = r.basic_auth(user, password),
            Ok(Credential::Bearer(token)) => r = r.bearer_auth(token),
            Err(e) => return Answer::TransportError(format!("{REFUSED}credentials: {e}")),
        }
        match r.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let mut body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                body.truncate(MAX_BODY);
                Answer::Http(HttpResponse {
                    status,
                    headers,
                    body,
                })
            }
            Err(e) => {
                let chain = error_chain(&e);
                // What only the operator can fix is not worth retrying: an
                // address the egress policy denies, a certificate not trusted.
                let refused = chain.contains("egress denied")
                    || std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                        .any(|c| {
                            // rustls' error may sit inside an io::Error,
                            // whose `source` skips it.
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

impl HttpTransport {
    /// The account's credential: from memory if made in the last
    /// [`REMEMBER`], else from the store's cache or freshly signed, one
    /// acquisition at a time.
    async fn credential(&self, store: &Store, account: &Account) -> Result<Credential, String> {
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
        let c = credential(store, &self.client, account).await?;
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
