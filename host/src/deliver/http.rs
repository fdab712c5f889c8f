//! HTTP transport: one pooled client (HTTP/1.1 and HTTP/2 over rustls); the
//! host joins the account's base URL and applies its credentials.

use crate::runtime::bindings::channel::exports::crosscast::plugin::channel::{
    Answer, HttpRequest, HttpResponse,
};
use crate::store::settings::Account;

/// Largest response body kept for classification.
const MAX_BODY: usize = 64 * 1024;

/// The shared HTTP client.
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A client with connection pooling and sane timeouts.
    pub fn new() -> anyhow::Result<HttpTransport> {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crosscast/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpTransport { client })
    }

    /// Sends one request relative to the account's URL.
    pub async fn send(&self, account: &Account, secret: Option<&str>, req: &HttpRequest) -> Answer {
        if !req.path.starts_with('/') {
            return Answer::TransportError(format!(
                "request path `{}` must start with `/`",
                req.path
            ));
        }
        let url = format!("{}{}", account.url.trim_end_matches('/'), req.path);
        let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Answer::TransportError(format!("bad HTTP method `{}`", req.method)),
        };
        let mut r = self.client.request(method, &url).body(req.body.clone());
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case("authorization") {
                // Credentials are the host's business, never the plugin's.
                continue;
            }
            r = r.header(k, v);
        }
        if let Some(user) = &account.user {
            r = r.basic_auth(user, secret);
        } else if let Some(token) = secret {
            r = r.bearer_auth(token);
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
            Err(e) => Answer::TransportError(format!("HTTP {url}: {e}")),
        }
    }
}
