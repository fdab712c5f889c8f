//! The web UI `crosscast serve` gives at `/`: plain HTML, CSS and
//! JavaScript compiled into the binary (no build step, nothing fetched from
//! elsewhere), reading only the public API. Signing in exchanges an API
//! token for a session cookie (see [`super::session`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::api::Shared;
use super::session::{Sessions, cookie_value};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// What a page may load: its own script and style, nothing else; it may
/// not be framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; frame-src 'self'; \
                      base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The UI's pages and its sign-in, open to anyone (the data behind them
/// is the API's, behind its token check).
pub fn router(sessions: Arc<Sessions>) -> axum::Router<Shared> {
    axum::Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/ui/session", post(sign_in).delete(sign_out))
        .layer(axum::Extension(sessions))
}

/// A file of the UI with its type and the headers that keep it to itself.
fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A sign-in: the API token.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Exchanges a valid API token for a session cookie; 401 for any other.
/// JSON only, so a form on another site cannot sign a browser in.
async fn sign_in(
    State(s): State<Shared>,
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    Json(given): Json<SignIn>,
) -> Response {
    let token = given.token.trim().to_string();
    let store = s.app.store.clone();
    let checked = token.clone();
    let found = tokio::task::spawn_blocking(move || store.token_named_by(&checked)).await;
    let name = match found {
        Ok(Ok(Some(t))) => t.name,
        Ok(Ok(None)) => {
            tracing::info!("web UI sign-in refused: unknown or revoked token");
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "unknown or revoked token" })),
            )
                .into_response();
        }
        Ok(Err(e)) => return super::api::ApiError::from(e).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    tracing::info!(token = %name, "web UI sign-in");
    let value = sessions.open(token);
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, sessions.set_cookie(Some(&value)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers, Json(json!({ "name": name }))).into_response()
}

/// Ends the browser's session and removes its cookie.
async fn sign_out(
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    headers: HeaderMap,
) -> Response {
    if let Some(value) = cookie_value(&headers) {
        sessions.close(&value);
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, sessions.set_cookie(None))],
    )
        .into_response()
}
