//! The HTTP API, `/api/v1/...`: JSON, every request with a bearer token
//! (`crosscast token create`). Runs (start one from a workflow's text,
//! their status, members and delivery log), suppression lists, imports
//! (streamed upload), accounts and plugins (never a secret), the clock.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

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
}

/// Who a request comes from: the CLI, or an API token's name.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The CLI, with the token of `serve.json`.
    Cli,
    /// An API token.
    Token(String),
}

/// The API's routes and `more`, behind the bearer-token check.
pub fn router(shared: Shared, more: axum::Router<Shared>) -> axum::Router {
    more.route("/api/v1/runs", get(runs).post(start_run))
        .route("/api/v1/runs/{run}", get(run_status))
        .route("/api/v1/runs/{run}/deliveries", get(deliveries))
        .route(
            "/api/v1/runs/{run}/members/{activity}/{transition}",
            get(members),
        )
        .route("/api/v1/suppression", get(suppression))
        .route("/api/v1/imports/{dimension}", post(import))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/clock", get(clock))
        .route("/api/v1/clock/advance", post(advance))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ))
        .with_state(shared)
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
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let status = match e.downcast_ref::<StoreError>() {
            Some(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            Some(StoreError::ImportUnderWay(_)) => StatusCode::CONFLICT,
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

type Reply = Result<Response, ApiError>;

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
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
    let Some(token) = given else {
        return unauthorized(
            "no bearer token: send `Authorization: Bearer TOKEN` (crosscast token create NAME)",
        );
    };
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

async fn runs(State(s): State<Shared>) -> Reply {
    blocking(move || {
        let mut out = Vec::new();
        for r in s.app.store.runs()? {
            let (state, _) = crate::cli::run_status(&s.app.store, r.id)?;
            out.push(json!({
                "run": r.id,
                "workflow": r.workflow_name,
                "file": r.workflow_file,
                "dry_run": r.dry_run,
                "started_at": crate::clock::format_ms(r.created_at),
                "state": state,
            }));
        }
        Ok(Json(Value::Array(out)).into_response())
    })
    .await
}

/// How a run is started through the API.
#[derive(Deserialize)]
struct StartRun {
    /// Shown as the run's file (`status`); `api` by default.
    #[serde(default)]
    name: Option<String>,
    /// A dry run: nothing is sent.
    #[serde(default)]
    dry_run: bool,
}

/// Starts a run of the workflow in the body (TOML): 201 and its number,
/// or 422 and the diagnostics. The worker drives it.
async fn start_run(
    State(s): State<Shared>,
    Query(q): Query<StartRun>,
    body: axum::body::Bytes,
) -> Reply {
    blocking(move || {
        let name = q.name.unwrap_or_else(|| "api".to_string());
        let (wf, warnings) = match s.app.validate_bytes(&name, body.to_vec())? {
            Ok(v) => v,
            Err(diagnostics) => {
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(
                        json!({ "error": "the workflow is not valid", "diagnostics": diagnostics }),
                    ),
                )
                    .into_response());
            }
        };
        let kind = match q.dry_run {
            true => crate::executor::RunKind::Dry { messages: 1 },
            false => crate::executor::RunKind::Real,
        };
        let run = s.app.executor()?.create(&wf, &name, kind)?;
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/runs/{run}"))],
            Json(json!({ "run": run, "warnings": warnings })),
        )
            .into_response())
    })
    .await
}

async fn run_status(State(s): State<Shared>, Path(run): Path<u64>) -> Reply {
    blocking(move || Ok(Json(crate::cli::status_json(&s.app.store, run)?).into_response())).await
}

async fn deliveries(
    State(s): State<Shared>,
    Path(run): Path<u64>,
    Query(filter): Query<DeliveryQuery>,
) -> Reply {
    blocking(move || {
        let filter = crate::cli::log::Filter {
            activity: filter.activity,
            id: filter.id,
            to: filter.to,
            limit: filter.limit,
            ..Default::default()
        };
        let entries = crate::cli::log::select(&s.app.store, run, &filter)?;
        let out: Vec<Value> = entries
            .iter()
            .map(crate::cli::log::entry_json)
            .collect::<anyhow::Result<_>>()?;
        Ok(Json(Value::Array(out)).into_response())
    })
    .await
}

/// Filters of the delivery log.
#[derive(Deserialize)]
struct DeliveryQuery {
    activity: Option<String>,
    id: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

async fn members(
    State(s): State<Shared>,
    Path((run, activity, transition)): Path<(u64, String, String)>,
) -> Reply {
    blocking(move || {
        let ids = crate::cli::members(&s.app.store, run, &activity, &transition)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("{e:#}")))?;
        Ok(Json(json!({ "ids": ids })).into_response())
    })
    .await
}

/// Which suppression list.
#[derive(Deserialize)]
struct ListQuery {
    list: Option<String>,
}

async fn suppression(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Reply {
    blocking(move || {
        let mut out = Vec::new();
        for (list, address, entry) in s.app.store.suppression_list(q.list.as_deref())? {
            let mut v = serde_json::to_value(&entry).map_err(anyhow::Error::from)?;
            v["list"] = list.into();
            v["address"] = address.into();
            out.push(v);
        }
        Ok(Json(Value::Array(out)).into_response())
    })
    .await
}

/// An upload's format.
#[derive(Deserialize)]
struct ImportQuery {
    /// `csv` (the default) or `ndjson`.
    #[serde(default)]
    format: Option<String>,
}

/// Imports the body (CSV or NDJSON, streamed to a file in the data
/// directory first): all or nothing, as `crosscast import`.
async fn import(
    State(s): State<Shared>,
    Path(dimension): Path<String>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Reply {
    let dimension = match dimension.as_str() {
        "recipients" | "recipient" => "recipient",
        "subscriptions" | "subscription" => "subscription",
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no dimension `{other}`: recipients or subscriptions"),
            ));
        }
    };
    let ext = match q.format.as_deref().unwrap_or("csv") {
        "csv" => "csv",
        "ndjson" | "jsonl" => "ndjson",
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("format `{other}`: csv or ndjson"),
            ));
        }
    };
    let dir = s.app.store.dir().join("uploads");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(anyhow::Error::from)?;
    let path = dir.join(format!("{}.{ext}", crate::store::tokens::random_token()));
    let upload = Upload(path.clone());
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(anyhow::Error::from)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(anyhow::Error::from)?;
    }
    drop(file);
    blocking(move || {
        let _upload = upload;
        let options = crate::import::Options::default();
        match crate::import::import_file(&s.app.store, dimension, &path, &options) {
            Ok(r) => Ok(Json(json!({
                "inserted": r.inserted,
                "updated": r.updated,
                "interrupted_before": r.interrupted.map(|i| i.to_string()),
            }))
            .into_response()),
            Err(e @ crate::import::ImportError::Invalid { .. }) => Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string().replace(&path.display().to_string(), "upload"),
            )),
            Err(e) => Err(anyhow::Error::new(e).into()),
        }
    })
    .await
}

/// An uploaded file, deleted once imported (or not).
struct Upload(std::path::PathBuf);

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn accounts(State(s): State<Shared>) -> Reply {
    // An account names its secret; the secret's value never leaves the store.
    blocking(move || Ok(Json(s.app.store.accounts()?).into_response())).await
}

async fn plugins(State(s): State<Shared>) -> Reply {
    blocking(move || Ok(Json(s.app.store.plugins()?).into_response())).await
}

async fn clock(State(s): State<Shared>) -> Reply {
    let c = &s.app.clock;
    Ok(Json(json!({
        "now": crate::clock::format_ms(c.now_ms()),
        "virtual": !c.is_system(),
    }))
    .into_response())
}

/// How far to move the clock.
#[derive(Deserialize)]
struct Advance {
    /// A duration: `7d`, `36h`.
    by: String,
}

async fn advance(State(s): State<Shared>, Json(a): Json<Advance>) -> Reply {
    let step = humantime::parse_duration(&a.by)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("`{}`: {e}", a.by)))?;
    let ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
    let now = s
        .app
        .clock
        .advance(ms)
        .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    blocking(move || {
        let fired = s.app.executor()?.fire_due()?;
        Ok(Json(json!({ "now": crate::clock::format_ms(now), "fired": fired })).into_response())
    })
    .await
}
