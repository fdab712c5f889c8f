//! A Twilio-compatible Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP Basic auth (Account SID : auth token) and a form body (`To`,
//! `From`, `Body`). It answers as Twilio does: 201 with the message resource
//! (`sid` SM…), or a JSON error with Twilio's code.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;

use crate::tls::TestTls;

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSms {
    /// The sid it was given.
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `From`.
    pub from: String,
    /// `Body`.
    pub body: String,
}

/// A Twilio error answer to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsFault {
    /// The HTTP status (`400`, `429`, `503`...).
    pub status: u16,
    /// Twilio's error code (`21211` invalid number, `21610` unsubscribed,
    /// `20429` too many requests...).
    pub code: u32,
    /// The message.
    pub message: String,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u32>,
}

impl SmsFault {
    /// An error answer without `Retry-After`.
    pub fn new(status: u16, code: u32, message: &str) -> SmsFault {
        SmsFault {
            status,
            code,
            message: message.to_string(),
            retry_after: None,
        }
    }
}

/// Faults the API injects, deterministically.
#[derive(Debug, Clone, Default)]
pub struct SmsFaults {
    /// Answers scripted per `To` number: the n-th request to the number gets
    /// the n-th answer; past the script, the message is accepted.
    pub per_number: HashMap<String, Vec<SmsFault>>,
    /// Every n-th request (over the API's life) gets this answer.
    pub every_nth: Option<(u64, SmsFault)>,
}

#[derive(Clone)]
struct Shared {
    account_sid: String,
    auth_token: String,
    received: Arc<Mutex<Vec<ReceivedSms>>>,
    faults: Arc<Mutex<SmsFaults>>,
    /// Requests seen (valid ones), and per number.
    seen: Arc<Mutex<(u64, HashMap<String, usize>)>>,
    load: Arc<Mutex<Load>>,
}

/// How the API is loaded: its reply delay and what it has seen.
#[derive(Debug, Default)]
struct Load {
    delay: std::time::Duration,
    in_flight: usize,
    max_in_flight: usize,
    arrivals: Vec<std::time::Instant>,
    /// Connections accepted.
    connections: usize,
}

/// A running SMS API.
#[derive(Clone)]
pub struct SmsApi {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The Account SID it accepts.
    pub account_sid: String,
    /// The auth token it accepts.
    pub auth_token: String,
    received: Arc<Mutex<Vec<ReceivedSms>>>,
    shared: Shared,
}

impl SmsApi {
    /// Starts the API on 127.0.0.1 on a free port, on the current tokio runtime.
    pub async fn start(account_sid: &str, auth_token: &str) -> std::io::Result<SmsApi> {
        SmsApi::start_with(account_sid, auth_token, SmsFaults::default()).await
    }

    /// Starts the API with faults to inject.
    pub async fn start_with(
        account_sid: &str,
        auth_token: &str,
        faults: SmsFaults,
    ) -> std::io::Result<SmsApi> {
        SmsApi::serve(account_sid, auth_token, faults, None).await
    }

    /// Starts the API over TLS (HTTP/1.1 only, as ALPN tells clients),
    /// with a certificate from `tls`.
    pub async fn start_tls(
        account_sid: &str,
        auth_token: &str,
        tls: &TestTls,
    ) -> anyhow::Result<SmsApi> {
        let config = tls.server_config(&[b"http/1.1"])?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        Ok(SmsApi::serve(
            account_sid,
            auth_token,
            SmsFaults::default(),
            Some(acceptor),
        )
        .await?)
    }

    async fn serve(
        account_sid: &str,
        auth_token: &str,
        faults: SmsFaults,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<SmsApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            received: received.clone(),
            faults: Arc::new(Mutex::new(faults)),
            seen: Arc::default(),
            load: Arc::default(),
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(create_message),
            )
            .with_state(shared.clone());
        let load = shared.load.clone();
        tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    // Out of descriptors, say: as axum's server does, wait
                    // and go on accepting.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // As real providers do: answers go out when written.
                let _ = tcp.set_nodelay(true);
                lock(&load).connections += 1;
                let (app, tls) = (app.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = TowerToHyperService::new(app);
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let builder = builder.http1_only();
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
            }
        });
        Ok(SmsApi {
            addr,
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            received,
            shared,
        })
    }

    /// Replaces the faults (and restarts their counts) on the running API.
    pub fn inject(&self, faults: SmsFaults) {
        *self.shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
        *self.shared.seen.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    }

    /// Holds every answer this long: a slow provider keeps requests in flight.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.shared
            .load
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .delay = delay;
    }

    /// The most requests it was answering at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared
            .load
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .max_in_flight
    }

    /// When each request arrived (authenticated or not), in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.shared
            .load
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .arrivals
            .clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.shared.load).connections
    }

    /// `http://127.0.0.1:PORT`, for an account URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`: the account URL of an API started with
    /// [`SmsApi::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Everything accepted so far.
    pub fn received(&self) -> Vec<ReceivedSms> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many messages were accepted so far (without copying them).
    pub fn received_count(&self) -> usize {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

async fn create_message(
    State(s): State<Shared>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let delay = {
        let mut load = s.load.lock().unwrap_or_else(|p| p.into_inner());
        load.arrivals.push(std::time::Instant::now());
        load.in_flight += 1;
        load.max_in_flight = load.max_in_flight.max(load.in_flight);
        load.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = answer(&s, &sid, &headers, &body);
    s.load.lock().unwrap_or_else(|p| p.into_inner()).in_flight -= 1;
    response
}

fn answer(s: &Shared, sid: &str, headers: &HeaderMap, body: &str) -> Response {
    match basic_auth(headers) {
        Some((u, p)) if u == s.account_sid && p == s.auth_token => {}
        _ => return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate"),
    }
    if sid != s.account_sid {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    let form: Vec<(String, String)> = url_pairs(body);
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let Some(to) = get("To") else {
        return error(
            StatusCode::BAD_REQUEST,
            21604,
            "A 'To' phone number is required.",
        );
    };
    let Some(from) = get("From") else {
        return error(
            StatusCode::BAD_REQUEST,
            21603,
            "A 'From' phone number is required.",
        );
    };
    let Some(text) = get("Body") else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if !is_e164(&to) {
        return error(
            StatusCode::BAD_REQUEST,
            21211,
            &format!("Invalid 'To' Phone Number: {to}"),
        );
    }
    if let Some(fault) = injected(s, &to) {
        let mut response = error(
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::BAD_REQUEST),
            fault.code,
            &fault.message,
        );
        if let Some(secs) = fault.retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("a number"));
        }
        return response;
    }
    let n = {
        let mut r = s.received.lock().unwrap_or_else(|p| p.into_inner());
        let n = r.len() as u128 + 1;
        let sid = format!("SM{n:032x}");
        r.push(ReceivedSms {
            sid: sid.clone(),
            to: to.clone(),
            from: from.clone(),
            body: text.clone(),
        });
        sid
    };
    let segments = text.chars().count().div_ceil(160).max(1);
    let resource = json!({
        "sid": n,
        "account_sid": s.account_sid,
        "to": to,
        "from": from,
        "body": text,
        "status": "queued",
        "direction": "outbound-api",
        "num_segments": segments.to_string(),
        "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{}/Messages/{n}.json", s.account_sid),
    });
    (StatusCode::CREATED, axum::Json(resource)).into_response()
}

/// The fault to answer a valid request to `to` with, if any.
fn injected(s: &Shared, to: &str) -> Option<SmsFault> {
    let mut seen = s.seen.lock().unwrap_or_else(|p| p.into_inner());
    seen.0 += 1;
    let n = seen.0;
    let faults = s.faults.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(script) = faults.per_number.get(to) {
        let i = seen.1.entry(to.to_string()).or_default();
        *i += 1;
        if let Some(f) = script.get(*i - 1) {
            return Some(f.clone());
        }
    }
    match &faults.every_nth {
        Some((k, f)) if *k > 0 && n.is_multiple_of(*k) => Some(f.clone()),
        _ => None,
    }
}

fn url_pairs(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
