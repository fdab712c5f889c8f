//! The account's credential on each request: made from its secret by
//! `caps::signing` (Basic, bearer, APNs provider token, Google OAuth), kept
//! in memory for a while, one acquisition at a time per account so a slow
//! token endpoint holds up only its own account's messages, and a failure
//! remembered for a moment so a burst of messages shares one attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::failure::Failure;
use super::net::trust::Trust;
use super::request::Target;
use crate::caps::signing::{Credential, credential};
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::settings::Account;

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

/// A credential as its `Authorization` header (marked sensitive, so it is
/// never logged).
fn authorization(c: &Credential) -> Result<Option<http::HeaderValue>, Failure> {
    use base64::Engine as _;
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

/// Accounts' credentials, made on demand and kept for a while.
pub struct Credentials {
    /// What token exchanges trust.
    trust: Trust,
    /// One credential acquisition at a time per account.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Credentials (or failures to make them) made recently, by account.
    recent: Mutex<HashMap<String, Remembered>>,
}

impl Credentials {
    /// Credentials whose token exchanges trust `trust`.
    pub fn new(trust: Trust) -> Credentials {
        Credentials {
            trust,
            flights: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    /// The account's credential for requests to `target`: the route's own
    /// copy while it is fresh, else [`Credentials::remembered`].
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
        let fresh = |recent: &HashMap<String, Remembered>| {
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

#[cfg(test)]
mod tests {
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
        let transport = Arc::new(Credentials::new(Trust::new(Vec::new()).unwrap()));
        let stuck = {
            let (transport, store, slow) = (transport.clone(), store.clone(), slow.clone());
            tokio::spawn(async move {
                let target = Target::new(&slow).unwrap();
                transport.credential(&store, &slow, &target).await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let target = Target::new(&fast).unwrap();
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
        let transport = Credentials::new(Trust::new(Vec::new()).unwrap());
        let target = Target::new(&down).unwrap();
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
        let target = Target::new(&refused).unwrap();
        let f = transport
            .credential(&store, &refused, &target)
            .await
            .unwrap_err();
        assert_eq!((f.cause, f.permanent), (Cause::Credentials, true), "{f}");
        assert!(f.message.contains("invalid_grant"), "{f}");
    }
}
