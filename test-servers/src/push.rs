//! Push providers on loopback, strict like the real ones:
//!
//! - [`ApnsServer`]: `POST /3/device/<token>` over HTTP/2 with TLS only
//!   (ALPN `h2`; HTTP/1.1 and plaintext are refused), an ES256 provider token
//!   checked against the team's public key (`kid`, `iss` = team id, `iat` not
//!   older than an hour), `apns-topic` required, payload ≤ 4096 bytes.
//! - [`FcmServer`]: the service account's token endpoint (RS256 assertion:
//!   `aud` = token URI, scope, grant type) and
//!   `POST /v1/projects/{id}/messages:send`, which requires a token it issued.
//!
//! Both answer with the providers' status codes and JSON error bodies, and
//! record what they accepted.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::pace::{Pace, PaceReport};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

use crate::tls::TestTls;

/// One push as received by either server.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPush {
    /// The device token / registration token.
    pub token: String,
    /// Request headers that matter (`apns-*`).
    pub headers: Vec<(String, String)>,
    /// The JSON payload.
    pub payload: serde_json::Value,
    /// The id the server answered with.
    pub id: String,
}

/// What a push server accepted, and how its requests came, shared by its
/// handlers and its handle.
#[derive(Clone, Default)]
struct Accepted {
    pushes: Arc<Mutex<Vec<ReceivedPush>>>,
    pace: Arc<Pace>,
}

impl Accepted {
    fn pushes(&self) -> std::sync::MutexGuard<'_, Vec<ReceivedPush>> {
        self.pushes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves `router` on 127.0.0.1 over TLS; `h2_only` refuses anything but
/// HTTP/2 negotiated by ALPN.
async fn serve_tls(router: Router, tls: &TestTls, h2_only: bool) -> anyhow::Result<SocketAddr> {
    let alpn: &[&[u8]] = if h2_only {
        &[b"h2"]
    } else {
        &[b"h2", b"http/1.1"]
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(alpn)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // As real providers do: frames go out when written, never held
            // back by Nagle for the client's delayed ACK.
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                if h2_only && !h2 {
                    // Apple speaks HTTP/2 only: no ALPN agreement, no service.
                    return;
                }
                let service = TowerToHyperService::new(router);
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = if h2 {
                    builder
                        .http2_only()
                        .serve_connection(TokioIo::new(tls), service)
                        .await
                } else {
                    builder.serve_connection(TokioIo::new(tls), service).await
                };
            });
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------- faults

/// An error answer a push server injects for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFault {
    /// The HTTP status (`410`, `400`, `429`, `503`...).
    pub status: u16,
    /// APNs: the `reason` (`Unregistered`, `BadDeviceToken`...); FCM: the
    /// `errorCode` (`UNREGISTERED`, `QUOTA_EXCEEDED`, `UNAVAILABLE`...).
    pub reason: String,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u32>,
}

impl PushFault {
    /// A fault without `Retry-After`.
    pub fn new(status: u16, reason: &str) -> PushFault {
        PushFault {
            status,
            reason: reason.to_string(),
            retry_after: None,
        }
    }
}

/// Faults a push server injects, deterministically; set them with
/// `inject` on a running server.
#[derive(Debug, Clone, Default)]
pub struct PushFaults {
    /// Answers scripted per device token: the n-th push to the token gets the
    /// n-th answer; past the script, the push is accepted.
    pub per_token: HashMap<String, Vec<PushFault>>,
    /// Every n-th valid push (counted from `inject`) gets this answer.
    pub every_nth: Option<(u64, PushFault)>,
    /// Every answer waits this long: a slow provider.
    pub delay: std::time::Duration,
}

/// Injected faults and what they have counted.
#[derive(Debug, Default)]
struct FaultState {
    faults: PushFaults,
    seen: u64,
    per_token: HashMap<String, usize>,
}

impl FaultState {
    fn next(&mut self, token: &str) -> Option<PushFault> {
        self.seen += 1;
        if let Some(script) = self.faults.per_token.get(token) {
            let i = self.per_token.entry(token.to_string()).or_default();
            *i += 1;
            if let Some(f) = script.get(*i - 1) {
                return Some(f.clone());
            }
        }
        match &self.faults.every_nth {
            Some((k, f)) if *k > 0 && self.seen.is_multiple_of(*k) => Some(f.clone()),
            _ => None,
        }
    }
}

fn with_retry_after(mut response: Response, fault: &PushFault) -> Response {
    if let Some(secs) = fault.retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("a number"));
    }
    response
}

// ---------------------------------------------------------------- APNs

/// What the APNs server accepts.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// The team id tokens must be issued by.
    pub team_id: String,
    /// The key id tokens must name.
    pub key_id: String,
    /// The key's public half (SPKI PEM).
    pub public_key_pem: String,
}

#[derive(Clone)]
struct ApnsState {
    config: ApnsConfig,
    accepted: Accepted,
    faults: Arc<Mutex<FaultState>>,
}

/// A running APNs server.
#[derive(Clone)]
pub struct ApnsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Accepted,
    faults: Arc<Mutex<FaultState>>,
}

impl ApnsServer {
    /// Starts the server on the current tokio runtime.
    pub async fn start(tls: &TestTls, config: ApnsConfig) -> anyhow::Result<ApnsServer> {
        let accepted = Accepted::default();
        let faults = Arc::new(Mutex::new(FaultState::default()));
        let state = ApnsState {
            config,
            accepted: accepted.clone(),
            faults: faults.clone(),
        };
        let router = Router::new()
            .route("/3/device/{token}", post(apns_push))
            .with_state(state);
        let addr = serve_tls(router, tls, true).await?;
        Ok(ApnsServer {
            addr,
            accepted,
            faults,
        })
    }

    /// Injects faults from now on (replacing earlier ones).
    pub fn inject(&self, faults: PushFaults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = FaultState {
            faults,
            ..FaultState::default()
        };
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Pushes accepted so far.
    pub fn received(&self) -> Vec<ReceivedPush> {
        self.accepted.pushes().clone()
    }

    /// How many were accepted so far (without copying them).
    pub fn received_count(&self) -> usize {
        self.accepted.pushes().len()
    }

    /// How requests reached the send endpoint since the last call: how
    /// many, and how long the server waited between bursts.
    pub fn take_pace(&self) -> PaceReport {
        self.accepted.pace.take()
    }
}

fn apns_error(status: StatusCode, reason: &str) -> Response {
    let mut body = json!({ "reason": reason });
    if status == StatusCode::GONE {
        body["timestamp"] = json!(now() * 1000);
    }
    (status, [("apns-id", uuid_like())], axum::Json(body)).into_response()
}

fn uuid_like() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012X}")
}

#[derive(Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

fn check_provider_token(
    cfg: &ApnsConfig,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(token) = auth
        .strip_prefix("bearer ")
        .or_else(|| auth.strip_prefix("Bearer "))
    else {
        return Err((StatusCode::FORBIDDEN, "MissingProviderToken"));
    };
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| (StatusCode::FORBIDDEN, "InvalidProviderToken"))?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(cfg.key_id.as_str()) {
        return Err((StatusCode::FORBIDDEN, "InvalidProviderToken"));
    }
    let key = DecodingKey::from_ec_pem(cfg.public_key_pem.as_bytes())
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<ProviderClaims>(token, &key, &validation)
        .map_err(|_| (StatusCode::FORBIDDEN, "InvalidProviderToken"))?;
    if data.claims.iss != cfg.team_id {
        return Err((StatusCode::FORBIDDEN, "InvalidProviderToken"));
    }
    let t = now();
    if data.claims.iat + 3600 < t || data.claims.iat > t + 300 {
        return Err((StatusCode::FORBIDDEN, "ExpiredProviderToken"));
    }
    Ok(())
}

async fn apns_push(
    State(s): State<ApnsState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    s.accepted.pace.tick();
    if let Err((status, reason)) = check_provider_token(&s.config, &headers) {
        return apns_error(status, reason);
    }
    let Some(topic) = headers
        .get("apns-topic")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    else {
        return apns_error(StatusCode::BAD_REQUEST, "MissingTopic");
    };
    let _ = topic;
    if token.len() != 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
        return apns_error(StatusCode::BAD_REQUEST, "BadDeviceToken");
    }
    if body.len() > 4096 {
        return apns_error(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) if v.get("aps").is_some() => v,
        _ => return apns_error(StatusCode::BAD_REQUEST, "PayloadEmpty"),
    };
    match headers.get("apns-push-type").and_then(|v| v.to_str().ok()) {
        None
        | Some(
            "alert" | "background" | "voip" | "complication" | "fileprovider" | "mdm"
            | "liveactivity",
        ) => {}
        Some(_) => return apns_error(StatusCode::BAD_REQUEST, "InvalidPushType"),
    }
    let (fault, delay) = {
        let mut faults = s.faults.lock().unwrap_or_else(|p| p.into_inner());
        (faults.next(&token), faults.faults.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(f) = fault {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST);
        return with_retry_after(apns_error(status, &f.reason), &f);
    }
    let id = uuid_like();
    let kept: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("apns-"))
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    s.accepted.pushes().push(ReceivedPush {
        token,
        headers: kept,
        payload,
        id: id.clone(),
    });
    (StatusCode::OK, [("apns-id", id)]).into_response()
}

// ---------------------------------------------------------------- FCM

/// What the FCM server accepts.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// The Firebase project.
    pub project_id: String,
    /// The service account's email (the assertion's issuer).
    pub client_email: String,
    /// The service account key's public half (SPKI PEM).
    pub public_key_pem: String,
}

#[derive(Clone)]
struct FcmState {
    config: FcmConfig,
    token_uri: Arc<Mutex<String>>,
    issued: Arc<Mutex<HashSet<String>>>,
    accepted: Accepted,
    faults: Arc<Mutex<FaultState>>,
}

/// A running FCM server (token endpoint and HTTP v1 send).
#[derive(Clone)]
pub struct FcmServer {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Accepted,
    issued: Arc<Mutex<HashSet<String>>>,
    faults: Arc<Mutex<FaultState>>,
}

impl FcmServer {
    /// Starts the server on the current tokio runtime.
    pub async fn start(tls: &TestTls, config: FcmConfig) -> anyhow::Result<FcmServer> {
        let accepted = Accepted::default();
        let issued = Arc::new(Mutex::new(HashSet::new()));
        let token_uri = Arc::new(Mutex::new(String::new()));
        let faults = Arc::new(Mutex::new(FaultState::default()));
        let state = FcmState {
            config,
            token_uri: token_uri.clone(),
            issued: issued.clone(),
            accepted: accepted.clone(),
            faults: faults.clone(),
        };
        let router = Router::new()
            .route("/token", post(fcm_token))
            .route("/v1/projects/{*send}", post(fcm_send))
            .with_state(state);
        let addr = serve_tls(router, tls, false).await?;
        *token_uri.lock().unwrap_or_else(|p| p.into_inner()) = format!("https://{addr}/token");
        Ok(FcmServer {
            addr,
            accepted,
            issued,
            faults,
        })
    }

    /// Injects faults from now on (replacing earlier ones).
    pub fn inject(&self, faults: PushFaults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = FaultState {
            faults,
            ..FaultState::default()
        };
    }

    /// `https://127.0.0.1:PORT`, the send API's base URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The token endpoint, for the service account's `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("https://{}/token", self.addr)
    }

    /// Messages accepted so far.
    pub fn received(&self) -> Vec<ReceivedPush> {
        self.accepted.pushes().clone()
    }

    /// How many were accepted so far (without copying them).
    pub fn received_count(&self) -> usize {
        self.accepted.pushes().len()
    }

    /// How requests reached the send endpoint since the last call: how
    /// many, and how long the server waited between bursts.
    pub fn take_pace(&self) -> PaceReport {
        self.accepted.pace.take()
    }

    /// How many access tokens the token endpoint issued.
    pub fn tokens_issued(&self) -> usize {
        self.issued.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[derive(Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    exp: u64,
    iat: u64,
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn fcm_token(State(s): State<FcmState>, body: String) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| {
        form.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    if get("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error("unsupported_grant_type", "Invalid grant_type");
    }
    let Some(assertion) = get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let Ok(key) = DecodingKey::from_rsa_pem(s.config.public_key_pem.as_bytes()) else {
        return oauth_error("server_error", "bad test key");
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Assertion>(&assertion, &key, &validation) {
        Ok(d) => d.claims,
        Err(e) => return oauth_error("invalid_grant", &format!("Invalid JWT Signature: {e}")),
    };
    let token_uri = s
        .token_uri
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if claims.aud != token_uri {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe (aud)",
        );
    }
    if claims.iss != s.config.client_email {
        return oauth_error("invalid_grant", "Invalid JWT: iss");
    }
    if !claims
        .scope
        .split(' ')
        .any(|x| x == "https://www.googleapis.com/auth/firebase.messaging")
    {
        return oauth_error("invalid_scope", "firebase.messaging scope is required");
    }
    if claims.exp <= now() || claims.exp > claims.iat + 3600 {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes)",
        );
    }
    let token = {
        let mut issued = s.issued.lock().unwrap_or_else(|p| p.into_inner());
        let t = format!("ya29.test-{}-{}", issued.len() + 1, now());
        issued.insert(t.clone());
        t
    };
    axum::Json(json!({ "access_token": token, "expires_in": 3599, "token_type": "Bearer" }))
        .into_response()
}

fn fcm_error(status: StatusCode, name: &str, message: &str, fcm_code: Option<&str>) -> Response {
    let mut error = json!({ "code": status.as_u16(), "message": message, "status": name });
    if let Some(c) = fcm_code {
        error["details"] = json!([{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c }]);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

async fn fcm_send(
    State(s): State<FcmState>,
    Path(send): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    s.accepted.pace.tick();
    let Some(project) = send
        .strip_suffix("/messages:send")
        .or_else(|| send.strip_suffix(":send"))
    else {
        return fcm_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found", None);
    };
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let issued = auth.strip_prefix("Bearer ").is_some_and(|t| {
        s.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(t)
    });
    if !issued {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        );
    }
    if project != s.config.project_id {
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
        );
    }
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return fcm_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
                None,
            );
        }
    };
    let Some(token) = payload["message"]["token"].as_str().map(str::to_string) else {
        return fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
            Some("INVALID_ARGUMENT"),
        );
    };
    let (fault, delay) = {
        let mut faults = s.faults.lock().unwrap_or_else(|p| p.into_inner());
        (faults.next(&token), faults.faults.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(f) = fault {
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_REQUEST);
        // The canonical status name Google gives each HTTP status.
        let name = match f.status {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        let response = fcm_error(status, name, &f.reason, Some(&f.reason));
        return with_retry_after(response, &f);
    }
    let id = format!("projects/{project}/messages/0:{}", uuid_like());
    s.accepted.pushes().push(ReceivedPush {
        token,
        headers: vec![],
        payload,
        id: id.clone(),
    });
    axum::Json(json!({ "name": id })).into_response()
}
