//! Reaching an account without sending a message, one step at a time, for
//! `crosscast doctor`: the name, the egress policy, TCP, TLS with the
//! trusted CAs, the protocol's greeting (SMTP's EHLO and its extensions;
//! HTTP/2 by ALPN where the scheme requires it) and the credentials (a
//! token exchange or AUTH where there is one). The first step that fails
//! ends the check, with the fix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::failure::Failure;
use super::net::probe;
use super::net::trust::Trust;
use crate::caps::signing::{self, Checked};
use crate::store::Store;
use crate::store::deliveries::Cause;
use crate::store::settings::{Account, AuthScheme};

/// Longest wait for a TCP connection or a TLS handshake (the account's
/// timeout if shorter).
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// One step and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Which (`resolve`, `egress`, `tcp`, `tls`, `smtp`, `http`, `credentials`).
    pub name: &'static str,
    /// What it found, or what is wrong and how to fix it.
    pub outcome: Result<String, Problem>,
}

/// A step that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Why, by kind.
    pub cause: Cause,
    /// What happened.
    pub message: String,
    /// What the operator can do about it.
    pub fix: String,
}

/// Checks every step of reaching `account`, stopping at the first failure.
pub async fn check(store: &Store, trust: &Trust, account: &Account) -> Vec<Step> {
    let mut steps = Vec::new();
    // Each step pushes its line; `?` ends the check at the first failure.
    let _ = walk(store, trust, account, &mut steps).await;
    steps
}

/// Records a step's outcome; a failure stops the walk.
fn record<T>(
    steps: &mut Vec<Step>,
    account: &Account,
    name: &'static str,
    outcome: Result<(T, String), Failure>,
) -> Result<T, ()> {
    match outcome {
        Ok((value, said)) => {
            steps.push(Step {
                name,
                outcome: Ok(said),
            });
            Ok(value)
        }
        Err(f) => {
            steps.push(Step {
                name,
                outcome: Err(Problem {
                    fix: fix(f.cause, name, account),
                    cause: f.cause,
                    message: f.message,
                }),
            });
            Err(())
        }
    }
}

/// Where an account's URL points.
struct Place {
    host: String,
    port: u16,
    smtp: bool,
    tls: bool,
}

async fn walk(
    store: &Store,
    trust: &Trust,
    account: &Account,
    steps: &mut Vec<Step>,
) -> Result<(), ()> {
    let place = record(steps, account, "url", locate(account))?;
    let handshake = connect(trust, account, &place, steps).await?;
    if place.smtp {
        return greet_smtp(store, trust, account, steps).await;
    }
    if let Some(h) = handshake {
        let h2 = h.alpn.as_deref() == Some("h2");
        let greeting = match (account.auth, h2) {
            (_, true) => Ok(((), "HTTP/2 (ALPN h2)".to_string())),
            (AuthScheme::Apns, false) => Err(Failure::permanent(
                Cause::Protocol,
                format!(
                    "APNs speaks HTTP/2 only, and {} chose {} by ALPN",
                    place.host,
                    h.alpn.as_deref().unwrap_or("no protocol")
                ),
            )),
            (_, false) => Ok(((), "HTTP/1.1".to_string())),
        };
        record(steps, account, "http", greeting)?;
    }
    let checked = signing::check(store, trust, account).await.map(|c| {
        let said = match c {
            Checked::Nothing => "none: requests go without a credential".to_string(),
            Checked::Exchanged { endpoint } => {
                format!("the token endpoint {endpoint} gave an access token")
            }
            Checked::Unverifiable(what) => what,
        };
        ((), said)
    });
    record(steps, account, "credentials", checked)
}

/// The host and port of the account's URL, and its protocol.
fn locate(account: &Account) -> Result<(Place, String), Failure> {
    let url = url::Url::parse(&account.url)
        .map_err(|e| Failure::permanent(Cause::Account, format!("`{}`: {e}", account.url)))?;
    let port = url.port().or(match url.scheme() {
        "smtps" => Some(465),
        "smtp" => Some(25),
        _ => url.port_or_known_default(),
    });
    match (url.host_str(), port) {
        (Some(host), Some(port)) if !host.is_empty() => Ok((
            Place {
                host: host.to_string(),
                port,
                smtp: matches!(url.scheme(), "smtp" | "smtps"),
                tls: matches!(url.scheme(), "https" | "smtps"),
            },
            format!("{}://{host}:{port}", url.scheme()),
        )),
        _ => Err(Failure::permanent(
            Cause::Account,
            format!("`{}` names no host and port", account.url),
        )),
    }
}

/// The name, the egress policy, TCP and (where the URL says) TLS; the
/// handshake if there was one.
async fn connect(
    trust: &Trust,
    account: &Account,
    place: &Place,
    steps: &mut Vec<Step>,
) -> Result<Option<probe::Handshake>, ()> {
    let host = &place.host;
    let limit = STEP_LIMIT.min(account.step_timeout());
    let found = probe::lookup(host, place.port).await.map_err(Failure::from);
    let addrs = record(
        steps,
        account,
        "resolve",
        found.map(|a| {
            let literal = host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok();
            let said = match literal {
                true => format!("{host} is an address: nothing to resolve"),
                false => format!("{host} is {}", list(a.iter().map(|a| a.ip().to_string()))),
            };
            (a, said)
        }),
    )?;
    let allowed = probe::allowed(host, &addrs, account.allows_internal()).map_err(Failure::from);
    let usable = record(
        steps,
        account,
        "egress",
        allowed.map(|u| {
            let internal = u.iter().any(|a| super::net::egress::is_internal(a.ip()));
            let said = match internal {
                true => "internal address allowed (allow_private=true)",
                false => "public address",
            };
            (u, said.to_string())
        }),
    )?;
    let started = Instant::now();
    let connected = probe::tcp(host, &usable, limit)
        .await
        .map_err(Failure::from);
    let tcp = record(
        steps,
        account,
        "tcp",
        connected.map(|(s, a)| {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            (s, format!("connected to {a} in {ms:.1} ms"))
        }),
    )?;
    if !place.tls {
        let said = match place.smtp {
            true => "not from the first byte (smtp://; STARTTLS if the URL asks for it)",
            false => "none: plain http://, only for a provider on your own network",
        };
        record(steps, account, "tls", Ok(((), said.to_string())))?;
        return Ok(None);
    }
    let alpn: &[&str] = if place.smtp { &[] } else { &["h2", "http/1.1"] };
    let shaken = probe::tls(tcp, host, trust, alpn, limit)
        .await
        .map_err(Failure::from);
    record(
        steps,
        account,
        "tls",
        shaken.map(|h| {
            let said = match &h.alpn {
                Some(p) => format!("{}, certificate trusted, ALPN {p}", h.version),
                None => format!("{}, certificate trusted", h.version),
            };
            (h, said)
        }),
    )
    .map(Some)
}

/// An SMTP session as a delivery opens it (greeting, STARTTLS, EHLO,
/// AUTH), quit before any message.
async fn greet_smtp(
    store: &Store,
    trust: &Trust,
    account: &Account,
    steps: &mut Vec<Step>,
) -> Result<(), ()> {
    let session = match trust
        .client_config()
        .map_err(|e| Failure::permanent(Cause::Certificate, e.to_string()))
        .and_then(|c| super::routes::relay(store, trust, Arc::new(c), account))
    {
        Ok(relay) => relay.probe().await.map_err(Failure::from),
        Err(f) => Err(f),
    };
    // AUTH is part of opening the session: its refusal is the credentials'
    // step, anything else the protocol's.
    if let Err(f) = &session
        && f.cause == Cause::Credentials
    {
        let answered = "greeting and EHLO answered".to_string();
        record(steps, account, "smtp", Ok(((), answered)))?;
        return record(steps, account, "credentials", Err(f.clone()));
    }
    let session = record(
        steps,
        account,
        "smtp",
        session.map(|s| {
            let said = format!(
                "greeting and EHLO answered{}; extensions: {}",
                if s.tls { " over TLS" } else { "" },
                list(s.extensions.iter().cloned())
            );
            (s, said)
        }),
    )?;
    let said = match (&account.user, session.authenticated) {
        (Some(user), true) => format!("AUTH accepted for `{user}`"),
        _ => "none: the relay is used without AUTH".to_string(),
    };
    record(steps, account, "credentials", Ok(((), said)))
}

/// Names joined for a line, or "none".
fn list(names: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = names.collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// What the operator can do about a failed step.
fn fix(cause: Cause, step: &str, account: &Account) -> String {
    let name = &account.name;
    match (cause, step) {
        (_, "url") => {
            format!("give the account a URL such as https://host or smtp://host:587: `crosscast account set {name} --url URL ...`")
        }
        (_, "resolve") => "check the host name in the account's URL (`crosscast account list`), or this machine's DNS".to_string(),
        (Cause::Policy, _) => format!(
            "if the provider is meant to be on your own network, allow it: `crosscast account set {name} ... --param allow_private=true`"
        ),
        (Cause::Certificate, _) => {
            "if the provider uses a private CA, trust it: `crosscast ca add NAME CA.pem`; else check the host name in the URL".to_string()
        }
        (Cause::Connect | Cause::Timeout, "tcp") => "nothing answers there: check the port in the account's URL and that the server runs and lets this machine in".to_string(),
        (Cause::Credentials, _) => match account.auth {
            AuthScheme::Google => format!(
                "the service account key is not one the provider accepts: store the right one with `crosscast secret set {} --from-file KEY.json`",
                account.secret.as_deref().unwrap_or(name)
            ),
            _ => format!(
                "set the right password or key: `crosscast secret set {} --from-file FILE`",
                account.secret.as_deref().unwrap_or(name)
            ),
        },
        (Cause::Account, _) => format!(
            "complete the account: `crosscast account set {name} ...` (--secret, --user, --param), and `crosscast secret set` for its secret"
        ),
        (Cause::Protocol, "http") => {
            "point the account at the provider's HTTP/2 endpoint".to_string()
        }
        (Cause::Protocol, _) => format!(
            "the server at {} does not speak the protocol the URL names: check the URL's scheme and port",
            account.url
        ),
        _ => "try again; if it persists, check the server and the network between".to_string(),
    }
}
