//! The HTTP API, `/api/v1/...`: JSON, every request with a bearer token
//! (`crosscast token create`). Runs (start one from a workflow's text,
//! their status, members and delivery log), suppression lists, imports
//! (streamed upload), accounts and plugins (never a secret), the clock.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::cli::App;
use crate::store::StoreError;

/// What every handler reaches.
#[derive(Clone)]
pub struct Shared {
    /// The data directory, its executor and clock.
    pub app: Arc<App>,
    /// On the commands' listener: the token of `serve.json`, which alone
    /// may have commands carried out (they name the client's files).
    pub commands_token: Option<Arc<String>>,
    /// On the API's listener: the web UI's sessions, whose cookie stands
    /// for the token they signed in with.
    pub sessions: Option<Arc<super::session::Sessions>>,
}

/// Who a request comes from: the CLI, or an API token's name.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The CLI, with the token of `serve.json`.
    Cli,
    /// An API token.
    Token(String),
}

/// The API's routes and `more`, behind the bearer-token check; the
/// OpenAPI document is built from the same routes.
pub fn router(shared: Shared, more: axum::Router<Shared>) -> axum::Router {
    let (routes, _) = super::routes::split();
    let checked = routes
        .merge(more)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ));
    // The web UI's pages and sign-in are open; what they show comes from
    // the routes above.
    let open = match &shared.sessions {
        Some(sessions) => super::ui::router(sessions.clone()),
        None => axum::Router::new(),
    };
    checked.merge(open).with_state(shared)
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop`
/// resolves, then lets the requests under way finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let result = match tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(tls) => {
            serve_tls(listener, router, tls, stop).await;
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!("a listener stopped: {e}");
    }
}

/// [`serve`] over TLS: each connection's handshake, then HTTP/1.1 or
/// HTTP/2 as the client chose (ALPN).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: tokio_rustls::TlsAcceptor,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("cannot accept a connection: {e}");
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let (tls, router, watcher) = (tls.clone(), router.clone(), graceful.watcher());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    // Requests under way finish; a connection that stays busy longer is
    // dropped with the process.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await;
}

/// An API error: its status and a message for people.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        use crate::executor::Refused;
        let status = match (e.downcast_ref::<StoreError>(), e.downcast_ref::<Refused>()) {
            (Some(StoreError::NotFound(_)), _) => StatusCode::NOT_FOUND,
            (Some(StoreError::ImportUnderWay(_)), _) => StatusCode::CONFLICT,
            (_, Some(Refused::NoActivity(..))) => StatusCode::NOT_FOUND,
            (_, Some(_)) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, format!("{e:#}"))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        anyhow::Error::new(e).into()
    }
}

/// A handler's answer.
pub type Reply = Result<Response, ApiError>;

/// Runs store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// 401 unless the request carries a token this listener accepts.
async fn authenticate(State(s): State<Shared>, mut request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let unauthorized = |why: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": why })),
        )
            .into_response()
    };
    // Without a bearer token, the web UI's session cookie stands for the
    // token it signed in with.
    let from_session = given.is_none();
    let given = given.or_else(|| {
        let sessions = s.sessions.as_ref()?;
        sessions.token(&super::session::cookie_value(request.headers())?)
    });
    let Some(token) = given else {
        return unauthorized(
            "no bearer token: send `Authorization: Bearer TOKEN` (crosscast token create NAME)",
        );
    };
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    if from_session && !safe && !request.headers().contains_key(super::session::UI_HEADER) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "a change with the session cookie must come from the web UI" })),
        )
            .into_response();
    }
    // Hashes compared, so the time a comparison takes says nothing of the
    // token.
    let given_hash = crate::store::tokens::digest(&token);
    let caller = if s
        .commands_token
        .as_deref()
        .is_some_and(|t| crate::store::tokens::digest(t) == given_hash)
    {
        Caller::Cli
    } else {
        let store = s.app.store.clone();
        match tokio::task::spawn_blocking(move || store.token_named_by(&token)).await {
            Ok(Ok(Some(t))) => Caller::Token(t.name),
            Ok(Ok(None)) => return unauthorized("unknown or revoked token"),
            Ok(Err(e)) => return ApiError::from(e).into_response(),
            Err(e) => {
                return ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}
