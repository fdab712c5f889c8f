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
    recent: std::sync::Mutex<std::collections::HashMap<Account, (Credential, std::time::Instant)>>,
}

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

    /// Sends one request relative to the account's URL.
    pub async fn send(&self, store: &Store, account: &Account, req: &HttpRequest) -> Answer {
        if !req.path.starts_with('/') {
            return Answer::TransportError(format!(
                "{REFUSED}request path `{}` must start with `/`",
                req.path
            ));
        }
        let url = format!("{}{}", account.url.trim_end_matches('/'), req.path);
        // The request must stay on the account's host, whatever the path says.
        let host = |u: &str| {
            url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
        };
        if host(&url).is_none() || host(&url) != host(&account.url) {
            return Answer::TransportError(format!(
                "{REFUSED}egress denied: {url} leaves the host of account `{}`",
                account.name
            ));
        }
        let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                return Answer::TransportError(format!(
                    "{REFUSED}bad HTTP method `{}`",
                    req.method
                ));
            }
        };
        let mut r = self.client.request(method, &url).body(req.body.clone());
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
        let fresh =
            |recent: &std::collections::HashMap<Account, (Credential, std::time::Instant)>| {
                recent
                    .get(account)
                    .filter(|(_, at)| at.elapsed() < REMEMBER)
                    .map(|(c, _)| c.clone())
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
            .insert(account.clone(), (c.clone(), std::time::Instant::now()));
        Ok(c)
    }
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
