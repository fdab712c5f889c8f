//! How a delivery reaches its accounts: the transports every delivery of
//! the process shares (the HTTP client, relays, credentials, throttles), an
//! account resolved into a [`Route`] once per execution, and one message
//! sent on a lane's connection with its outcome as the delivery layer
//! reads it (the provider's answer, or a [`Failure`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lettre::message::dkim::DkimConfig;

use super::credentials::Credentials;
use super::failure::Failure;
use super::net::http::{HttpClient, conn};
use super::net::smtp::{self, Relay};
use super::net::trust::Trust;
use super::pipeline::throttle;
use super::request::{self, AnswerHeaders, Target};
use crate::runtime::channel::wit;
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::settings::Account;

/// A message's answer from its provider, or why there is none.
pub type Outcome = Result<wit::Answer, Failure>;

/// The network side of deliveries: connections kept across executions,
/// credentials, each account's limits.
pub struct Transports {
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) wire: Arc<Wire>,
}

/// What sends: shared with the tasks that carry each message.
pub(super) struct Wire {
    pub(super) http: HttpClient,
    pub(super) credentials: Credentials,
    mailers: Mailers,
    pub(super) throttles: throttle::Throttles,
}

impl Transports {
    /// Transports that run their I/O on `runtime`.
    pub fn new(runtime: tokio::runtime::Handle, store: &Store) -> anyhow::Result<Transports> {
        Ok(Transports {
            runtime,
            wire: Arc::new(Wire::new(store, Trust::new(store.cas()?)?)?),
        })
    }
}

impl Drop for Transports {
    fn drop(&mut self) {
        // Parked connections deregister from the runtime's reactor.
        let _guard = self.runtime.enter();
        self.wire.mailers.close();
    }
}

/// An account as one execution's messages use it, resolved once: its
/// limits and how to reach it.
pub(super) struct Route {
    pub(super) account: Account,
    pub(super) throttle: Arc<throttle::Throttle>,
    pub(super) way: Way,
}

/// How a route reaches its provider.
pub(super) enum Way {
    /// Through the account's SMTP relay.
    Smtp(Arc<Mailer>),
    /// To the account's base URL.
    Http(Box<Target>),
}

impl Wire {
    fn new(store: &Store, trust: Trust) -> anyhow::Result<Wire> {
        // Names of accounts that may resolve to internal addresses (IP
        // literals are checked per account by `Target::new`).
        let allow_internal = store
            .accounts()?
            .into_iter()
            .filter(Account::allows_internal)
            .filter_map(|a| {
                url::Url::parse(&a.url)
                    .ok()?
                    .host_str()
                    .map(|h| h.to_ascii_lowercase())
            })
            .collect();
        Ok(Wire {
            http: HttpClient::new(&trust, allow_internal)?,
            credentials: Credentials::new(trust.clone()),
            mailers: Mailers::new(trust)?,
            throttles: throttle::Throttles::default(),
        })
    }

    /// A wire for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(store: &Store) -> Wire {
        Wire::new(store, Trust::new(Vec::new()).expect("the public roots")).expect("a wire")
    }

    /// Resolves an account for email or HTTP messages.
    pub(super) fn route(&self, store: &Store, name: &str, email: bool) -> Result<Route, Failure> {
        let account = store
            .account(name)
            .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))?;
        let way = if email {
            Way::Smtp(self.mailers.of(store, &account)?)
        } else if account.secret_in_url() {
            Way::Http(Box::new(Target::new(&with_url_secret(store, &account)?)?))
        } else {
            Way::Http(Box::new(Target::new(&account)?))
        };
        Ok(Route {
            throttle: self.throttles.of(&account),
            account,
            way,
        })
    }

    /// Sends one HTTP message on the lane's connection `held`, with the
    /// account's credential; the answer keeps the headers `keep` names.
    pub(super) async fn send_http(
        &self,
        store: &Store,
        route: &Route,
        target: &Target,
        held: &mut Option<conn::Conn>,
        message: &wit::HttpRequest,
        keep: &AnswerHeaders,
    ) -> Outcome {
        let authorization = match target.fresh_credential() {
            Some(c) => c,
            None => {
                self.credentials
                    .credential(store, &route.account, target)
                    .await?
            }
        };
        let request = request::request(target, message, authorization.as_ref())?;
        let response = self.http.send(&target.origin, held, request).await?;
        Ok(request::answer(response, keep))
    }
}

/// An account's relay and how its messages are signed.
pub(super) struct Mailer {
    account: Account,
    relay: Relay,
    dkim: Option<DkimConfig>,
}

impl Mailer {
    /// Sends one email to `to` (the stored address) with `message_id` on
    /// the lane's session in `slot`.
    pub(super) async fn send(
        &self,
        slot: &mut Option<smtp::Conn>,
        email: &wit::Email,
        to: &str,
        message_id: &str,
    ) -> Outcome {
        let built = super::email::build(email, to, message_id, self.dkim.as_ref())
            .map_err(|e| Failure::permanent(Cause::Plugin, e))?;
        let reply =
            self.relay.send(slot, &built).await.map_err(|e| {
                Failure::from(e).context(format!("account `{}`", self.account.name))
            })?;
        Ok(wit::Answer::Smtp(wit::SmtpReply {
            code: reply.code,
            message: reply.message,
        }))
    }

    /// Keeps a lane's session for the next delivery.
    pub(super) fn park(&self, conn: smtp::Conn) {
        self.relay.park(conn);
    }
}

/// Mailers by account name, made on first use (and again if the account
/// changed).
struct Mailers {
    mailers: Mutex<HashMap<String, Arc<Mailer>>>,
    trust: Trust,
    tls: Arc<rustls::ClientConfig>,
}

impl Mailers {
    fn new(trust: Trust) -> anyhow::Result<Mailers> {
        let tls = Arc::new(trust.client_config()?);
        Ok(Mailers {
            mailers: Mutex::default(),
            trust,
            tls,
        })
    }

    /// Drops every relay and its parked connections (call inside the tokio
    /// runtime).
    fn close(&self) {
        self.mailers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn of(&self, store: &Store, account: &Account) -> Result<Arc<Mailer>, Failure> {
        let mut mailers = self.mailers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mailers.get(&account.name)
            && m.account == *account
        {
            return Ok(m.clone());
        }
        let mailer = Arc::new(self.make(store, account)?);
        mailers.insert(account.name.clone(), mailer.clone());
        Ok(mailer)
    }

    /// The account's relay (its secret read from the store) and DKIM key.
    fn make(&self, store: &Store, account: &Account) -> Result<Mailer, Failure> {
        let relay = relay(store, &self.trust, self.tls.clone(), account)?;
        let dkim = match account.params.get("dkim_key") {
            None => None,
            Some(key) => Some(super::email::dkim(account, &secret_text(store, key)?, key)?),
        };
        Ok(Mailer {
            account: account.clone(),
            relay,
            dkim,
        })
    }
}

/// A secret as text, trimmed.
fn secret_text(store: &Store, name: &str) -> Result<String, Failure> {
    store
        .secret(name)
        .map(|s| String::from_utf8_lossy(&s).trim().to_string())
        .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))
}

/// The relay of an SMTP account, with its credentials read from the store.
pub(super) fn relay(
    store: &Store,
    trust: &Trust,
    tls: Arc<rustls::ClientConfig>,
    account: &Account,
) -> Result<Relay, Failure> {
    let credentials = match (&account.user, &account.secret) {
        (Some(user), Some(name)) => Some((user.clone(), secret_text(store, name)?)),
        _ => None,
    };
    let access = smtp::Access {
        trust,
        tls,
        credentials,
        timeout: account.step_timeout(),
        allow_internal: account.allows_internal(),
    };
    Relay::new(&account.url, access).map_err(|e| {
        Failure::permanent(
            Cause::Account,
            format!(
                "account `{}` has an unusable SMTP URL `{}`: {e}",
                account.name, account.url
            ),
        )
    })
}

/// The account with its secret in its URL, for the route's target only: the
/// account a route keeps (and what plugins and logs see) has the
/// placeholder.
fn with_url_secret(store: &Store, account: &Account) -> Result<Account, Failure> {
    let name = account.secret.as_deref().unwrap_or_default();
    let secret = store
        .secret(name)
        .map_err(|e| Failure::permanent(Cause::Account, e.to_string()))?;
    let secret = String::from_utf8_lossy(&secret).trim().to_string();
    let url = account
        .url_with_secret(&secret)
        .map_err(|e| Failure::permanent(Cause::Account, e))?;
    // Checked here so that no message quotes the URL with its secret.
    url::Url::parse(&url).map_err(|e| {
        Failure::permanent(
            Cause::Account,
            format!(
                "account `{}`: its URL with its secret is not a URL: {e}",
                account.name
            ),
        )
    })?;
    Ok(Account {
        url,
        ..account.clone()
    })
}
