//! A JSON webhook receiver, as chat apps and in-house services expose: any
//! `POST` under its root, recorded as received. It answers `200` with
//! `{"id":"hook-N"}`, or `410 Gone` for a `to` it was told is gone, so a
//! channel's every verdict can be shown against the wire.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedHook {
    /// Path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl ReceivedHook {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<ReceivedHook>>>,
    gone: Arc<Mutex<HashSet<String>>>,
}

/// The running receiver.
pub struct Webhook {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Shared,
}

impl Webhook {
    /// Starts it on 127.0.0.1 on a free port, on the current tokio runtime.
    pub async fn start() -> std::io::Result<Webhook> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let app = Router::new()
            .fallback(post(receive))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Webhook { addr, shared })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `410 Gone` to messages whose JSON `to` is `to`.
    pub fn gone(&self, to: &str) {
        lock(&self.shared.gone).insert(to.to_string());
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<ReceivedHook> {
        lock(&self.shared.received).clone()
    }
}

async fn receive(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let hook = ReceivedHook {
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: body.to_vec(),
    };
    let to = hook.json()["to"].as_str().map(str::to_string);
    let n = {
        let mut received = lock(&shared.received);
        received.push(hook);
        received.len()
    };
    if to.is_some_and(|to| lock(&shared.gone).contains(&to)) {
        return (StatusCode::GONE, axum::Json(json!({"error": "gone"}))).into_response();
    }
    (
        StatusCode::OK,
        axum::Json(json!({"id": format!("hook-{n}")})),
    )
        .into_response()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
