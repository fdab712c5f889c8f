//! The API's routes (`/api/v1/...`), each with its OpenAPI description:
//! the document `GET /api/v1/openapi.json` serves is built from these
//! same routes, so it names every one. Runs (start one from a workflow's
//! text, their status, members and delivery log), suppression lists,
//! imports (streamed upload), accounts and plugins (never a secret), the
//! clock.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{ApiError, Reply, Shared, blocking};
use crate::cli::log::EntryView;
use crate::cli::{RunStatus, RunSummary};
use crate::store::plugins::PluginRecord;
use crate::store::settings::Account;
use crate::store::suppression::Suppression;

/// The document's frame: its title, version and the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(title = "Crosscast API", version = "1", description = "Every request carries `Authorization: Bearer TOKEN` (`crosscast token create NAME`)."),
    modifiers(&BearerScheme),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Adds the bearer scheme every route requires.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The routes, and the OpenAPI document describing them.
pub fn split() -> (axum::Router<Shared>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(runs, start_run))
        .routes(routes!(run_status))
        .routes(routes!(run_graph))
        .routes(routes!(activity))
        .routes(routes!(cancel_run))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(retry_run))
        .routes(routes!(signal_run))
        .routes(routes!(deliveries))
        .routes(routes!(members))
        .routes(routes!(suppression))
        .routes(routes!(import))
        .routes(routes!(accounts))
        .routes(routes!(plugins))
        .routes(routes!(clock))
        .routes(routes!(advance))
        .routes(routes!(schedules, add_schedule))
        .routes(routes!(remove_schedule))
        .split_for_parts();
    let served = doc.clone();
    let router = router.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || async move { Json(served) }),
    );
    (router, doc)
}

/// The OpenAPI document (`GET /api/v1/openapi.json` serves it too).
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// An error's body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

/// A run just started.
#[derive(Serialize, ToSchema)]
struct Started {
    /// Its number in its sequence.
    run: u64,
    /// How to name it: `7`, or `dry-3` for a dry run.
    id: String,
    /// Worth saying about the workflow, not reasons to refuse it.
    warnings: Vec<String>,
}

/// A workflow refused.
#[derive(Serialize, ToSchema)]
struct Refused {
    error: String,
    /// `NAME:LINE:COLUMN: field: message`, one per problem.
    diagnostics: Vec<String>,
}

/// 422: a workflow refused, with what is wrong and where.
fn refused(error: &str, diagnostics: Vec<String>) -> axum::response::Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(Refused {
            error: error.to_string(),
            diagnostics,
        }),
    )
        .into_response()
}

/// The external ids of the records that took a transition.
#[derive(Serialize, ToSchema)]
struct Members {
    ids: Vec<String>,
}

/// An entry of a suppression list.
#[derive(Serialize, ToSchema)]
struct Suppressed {
    list: String,
    address: String,
    #[serde(flatten)]
    entry: Suppression,
}

/// What an import did.
#[derive(Serialize, ToSchema)]
struct Imported {
    inserted: u64,
    updated: u64,
    /// An earlier import found interrupted and discarded.
    interrupted_before: Option<String>,
    /// With `skip_invalid`: the records refused, none stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<u64>,
    /// With `skip_invalid`: the first refused records (at most
    /// 1,000), each with its line, its reasons and its fields, as
    /// `crosscast import --skip-invalid FILE` writes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    rejects: Option<Vec<serde_json::Value>>,
}

/// Most refused records an import's answer lists.
const REJECTS_LISTED: usize = 1000;

/// The first refused records of a rejects file (NDJSON).
fn read_rejects(path: &std::path::Path) -> anyhow::Result<Vec<serde_json::Value>> {
    use std::io::BufRead as _;
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut out = Vec::new();
    for line in file.lines().take(REJECTS_LISTED) {
        out.push(serde_json::from_str(&line?)?);
    }
    Ok(out)
}

/// The clock runs are on.
#[derive(Serialize, ToSchema)]
struct ClockNow {
    /// RFC 3339.
    now: String,
    /// A virtual clock (`serve --now`), which `advance` moves.
    #[serde(rename = "virtual")]
    is_virtual: bool,
}

/// The clock after a move.
#[derive(Serialize, ToSchema)]
struct Moved {
    now: String,
    /// Timers that came due.
    fired: usize,
    /// Runs started by schedules that came due.
    started: usize,
}

/// Which runs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RunsQuery {
    /// Only runs in this state: running, waiting, paused, done, failed,
    /// cancelled.
    state: Option<String>,
    /// Only runs of this workflow (its name).
    workflow: Option<String>,
    /// Dry runs instead of real runs.
    #[serde(default)]
    dry: bool,
}

/// Runs, oldest first, as `crosscast runs --json`.
#[utoipa::path(get, path = "/api/v1/runs", params(RunsQuery), responses(
    (status = 200, body = Vec<RunSummary>), (status = 401, body = ErrorBody)))]
async fn runs(State(s): State<Shared>, Query(q): Query<RunsQuery>) -> Reply {
    blocking(move || {
        let filter = crate::cli::RunFilter {
            state: q.state,
            workflow: q.workflow,
            dry: q.dry,
        };
        Ok(Json(crate::cli::list_runs(&s.app.store, &filter)?).into_response())
    })
    .await
}

/// A run named in a path: `7`, or `dry-3`.
fn run_id(s: &str) -> Result<u64, ApiError> {
    crate::store::runs::parse_run(s).map_err(|e| ApiError(StatusCode::NOT_FOUND, e))
}

/// Cancels a run, as `crosscast run cancel RUN`: its status after.
#[utoipa::path(post, path = "/api/v1/runs/{run}/cancel", params(("run" = String, Path)),
    responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn cancel_run(State(s): State<Shared>, Path(run): Path<String>) -> Reply {
    steer(s, run, |exec, run| exec.cancel(run).map(drop)).await
}

/// Pauses a run, as `crosscast run pause RUN`: its status after.
#[utoipa::path(post, path = "/api/v1/runs/{run}/pause", params(("run" = String, Path)),
    responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn pause_run(State(s): State<Shared>, Path(run): Path<String>) -> Reply {
    steer(s, run, |exec, run| exec.pause(run).map(drop)).await
}

/// Resumes a paused run (the worker carries it on): its status now.
#[utoipa::path(post, path = "/api/v1/runs/{run}/resume", params(("run" = String, Path)),
    responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn resume_run(State(s): State<Shared>, Path(run): Path<String>) -> Reply {
    steer(s, run, |exec, run| exec.resume(run).map(drop)).await
}

/// Which failed activity to retry.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RetryQuery {
    /// Only this activity (every failed one when absent).
    activity: Option<String>,
}

/// Retries a run's failed activities (the worker carries it on): its
/// status now.
#[utoipa::path(post, path = "/api/v1/runs/{run}/retry", params(("run" = String, Path), RetryQuery),
    responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn retry_run(
    State(s): State<Shared>,
    Path(run): Path<String>,
    Query(q): Query<RetryQuery>,
) -> Reply {
    steer(s, run, move |exec, run| {
        exec.retry(run, q.activity.as_deref()).map(drop)
    })
    .await
}

/// What a signal names.
#[derive(Deserialize, ToSchema, Default)]
struct SignalBody {
    /// Only these records go on: their external ids. Every one must be of
    /// a record, or nothing is sent (422).
    #[serde(default)]
    ids: Option<Vec<String>>,
    /// The dimension the ids are of (`recipient` by default).
    #[serde(default)]
    dimension: Option<String>,
}

/// Sends a signal to a run, as `crosscast signal RUN NAME`: the `signal`
/// activities waiting for it go on (the worker carries them), and one
/// reached later finds it. The body is optional.
#[utoipa::path(post, path = "/api/v1/runs/{run}/signals/{name}",
    params(("run" = String, Path), ("name" = String, Path)),
    request_body(content = SignalBody, content_type = "application/json", description = "Optional: the records it names"),
    responses((status = 200, body = crate::executor::Sent), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn signal_run(
    State(s): State<Shared>,
    Path((run, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Reply {
    let body: SignalBody = match body.iter().all(u8::is_ascii_whitespace) {
        true => SignalBody::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the body: {e}")))?,
    };
    blocking(move || {
        let run = run_id(&run)?;
        let dimension = body.dimension.as_deref().unwrap_or("recipient");
        let keys: Option<Vec<(usize, String)>> = body.ids.map(|ids| {
            ids.into_iter()
                .enumerate()
                .map(|(i, k)| (i + 1, k))
                .collect()
        });
        let exec = s.app.executor()?;
        let sent =
            crate::signals::send(&exec, &s.app.store, run, &name, dimension, keys.as_deref())
                .map_err(|e| match e.downcast_ref::<crate::signals::SignalError>() {
                    Some(crate::signals::SignalError::BadName(_)) => {
                        ApiError(StatusCode::BAD_REQUEST, format!("{e:#}"))
                    }
                    Some(crate::signals::SignalError::UnknownIds { .. }) => {
                        ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}"))
                    }
                    None => ApiError::from(e),
                })?;
        Ok(Json(sent).into_response())
    })
    .await
}

/// Does `what` to the run named `run`, and answers with its status after.
async fn steer(
    s: Shared,
    run: String,
    what: impl FnOnce(&crate::executor::Executor, u64) -> anyhow::Result<()> + Send + 'static,
) -> Reply {
    blocking(move || {
        let run = run_id(&run)?;
        let exec = s.app.executor()?;
        what(&exec, run)?;
        Ok(Json(crate::cli::status_of(&s.app.store, run)?).into_response())
    })
    .await
}

/// How a run is started through the API.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(post, path = "/api/v1/runs", params(StartRun),
    request_body(content = String, content_type = "application/toml", description = "The workflow (TOML)"),
    responses((status = 201, body = Started, headers(("location" = String))),
        (status = 422, body = Refused), (status = 401, body = ErrorBody)))]
async fn start_run(
    State(s): State<Shared>,
    Query(q): Query<StartRun>,
    body: axum::body::Bytes,
) -> Reply {
    blocking(move || {
        let name = q.name.unwrap_or_else(|| "api".to_string());
        let (wf, warnings) = match s.app.validate_bytes(&name, body.to_vec())? {
            Ok(v) => v,
            Err(diagnostics) => return Ok(refused("the workflow is not valid", diagnostics)),
        };
        let kind = match q.dry_run {
            true => crate::executor::RunKind::Dry { messages: 1 },
            false => crate::executor::RunKind::Real,
        };
        let run = s.app.executor()?.create(&wf, &name, kind)?;
        let id = crate::store::runs::run_label(run);
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/runs/{id}"))],
            Json(Started {
                run: crate::store::runs::run_number(run),
                id,
                warnings,
            }),
        )
            .into_response())
    })
    .await
}

/// A run's status, as `crosscast status RUN --json`.
#[utoipa::path(get, path = "/api/v1/runs/{run}", params(("run" = String, Path)),
    responses((status = 200, body = RunStatus), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn run_status(State(s): State<Shared>, Path(run): Path<String>) -> Reply {
    blocking(move || {
        let run = run_id(&run)?;
        Ok(Json(crate::cli::status_of(&s.app.store, run)?).into_response())
    })
    .await
}

/// A run's graph: its activities with their states and delivery counts,
/// and its transitions with the number of records that took each, as
/// `crosscast graph RUN` draws them.
#[utoipa::path(get, path = "/api/v1/runs/{run}/graph", params(("run" = String, Path)),
    responses((status = 200, body = crate::graph::Graph), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn run_graph(State(s): State<Shared>, Path(run): Path<String>) -> Reply {
    blocking(move || {
        let run = run_id(&run)?;
        Ok(Json(crate::graph::Graph::of_stored_run(&s.app.store, run)?).into_response())
    })
    .await
}

/// One activity of a run: its status, its exclusions and failures by
/// reason, and (a delivery) a message built now for one of its recipients,
/// as it would leave; nothing is sent.
#[utoipa::path(get, path = "/api/v1/runs/{run}/activities/{activity}",
    params(("run" = String, Path), ("activity" = String, Path), SampleQuery),
    responses((status = 200, body = crate::cli::ActivityDetail), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn activity(
    State(s): State<Shared>,
    Path((run, activity)): Path<(String, String)>,
    Query(q): Query<SampleQuery>,
) -> Reply {
    blocking(move || {
        let run = run_id(&run)?;
        let mut detail = crate::cli::activity_detail(&s.app.store, run, &activity)?;
        if q.sample && detail.status.deliveries.is_some() {
            // A plugin that cannot build one says why instead.
            detail.sample = match s.app.executor()?.sample(run, &activity) {
                Ok(sample) => sample,
                Err(e) => Some(serde_json::json!({ "error": format!("{e:#}") })),
            };
        }
        Ok(Json(detail).into_response())
    })
    .await
}

/// Whether to build a sample message.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SampleQuery {
    /// Build a delivery's sample message (the default); `false` skips it,
    /// for a page that refreshes the counts.
    #[serde(default = "yes")]
    sample: bool,
}

fn yes() -> bool {
    true
}

/// A run's delivery log, filtered, as `crosscast deliveries RUN --json`.
#[utoipa::path(get, path = "/api/v1/runs/{run}/deliveries", params(("run" = String, Path), DeliveryQuery),
    responses((status = 200, body = Vec<EntryView>), (status = 404, body = ErrorBody),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn deliveries(
    State(s): State<Shared>,
    Path(run): Path<String>,
    Query(filter): Query<DeliveryQuery>,
) -> Reply {
    let state = listed::<crate::cli::log::State>("state", filter.state.as_deref())?;
    let cause = listed::<crate::store::deliveries::Cause>("cause", filter.cause.as_deref())?;
    blocking(move || {
        let run = run_id(&run)?;
        let filter = crate::cli::log::Filter {
            activity: filter.activity,
            id: filter.id,
            to: filter.to,
            limit: filter.limit,
            state,
            cause,
            reason: filter.reason,
        };
        let entries = crate::cli::log::select(&s.app.store, run, &filter)?;
        let out: Vec<EntryView> = entries.iter().map(crate::cli::log::entry_view).collect();
        Ok(Json(out).into_response())
    })
    .await
}

/// Filters of the delivery log.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only this delivery activity.
    activity: Option<String>,
    /// Only the record with this external id.
    id: Option<String>,
    /// Only messages to this address.
    to: Option<String>,
    /// At most this many entries.
    limit: Option<usize>,
    /// Only these states, comma-separated: in_flight, sent, failed,
    /// excluded, retrying, cancelled.
    state: Option<String>,
    /// Only failures (and retries) of these causes, comma-separated, as
    /// `deliveries --cause` names them.
    cause: Option<String>,
    /// Only entries whose reason contains this text.
    reason: Option<String>,
}

/// A comma-separated list of `field`'s values, as the CLI names them; 400
/// on a name it does not know.
fn listed<T: clap::ValueEnum>(field: &str, given: Option<&str>) -> Result<Vec<T>, ApiError> {
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return Ok(Vec::new());
    };
    given
        .split(',')
        .map(|v| {
            // The CLI's names are kebab-case; JSON's are snake_case.
            T::from_str(&v.trim().replace('_', "-"), true).map_err(|_| {
                let known: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| {
                        v.to_possible_value()
                            .map(|p| p.get_name().replace('-', "_"))
                    })
                    .collect();
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{field} `{v}`: one of {}", known.join(", ")),
                )
            })
        })
        .collect()
}

/// The external ids of the records that left an activity on a transition.
#[utoipa::path(get, path = "/api/v1/runs/{run}/members/{activity}/{transition}",
    params(("run" = String, Path), ("activity" = String, Path), ("transition" = String, Path)),
    responses((status = 200, body = Members), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn members(
    State(s): State<Shared>,
    Path((run, activity, transition)): Path<(String, String, String)>,
) -> Reply {
    blocking(move || {
        let run = run_id(&run)?;
        let ids = crate::cli::members(&s.app.store, run, &activity, &transition)
            .map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("{e:#}")))?;
        Ok(Json(Members { ids }).into_response())
    })
    .await
}

/// Which suppression list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    list: Option<String>,
}

/// Suppressed addresses: every list, or one.
#[utoipa::path(get, path = "/api/v1/suppression", params(ListQuery),
    responses((status = 200, body = Vec<Suppressed>), (status = 401, body = ErrorBody)))]
async fn suppression(State(s): State<Shared>, Query(q): Query<ListQuery>) -> Reply {
    blocking(move || {
        let mut out = Vec::new();
        for (list, address, entry) in s.app.store.suppression_list(q.list.as_deref())? {
            out.push(Suppressed {
                list,
                address,
                entry,
            });
        }
        Ok(Json(out).into_response())
    })
    .await
}

/// An upload's format.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    /// `csv` (the default) or `ndjson`.
    #[serde(default)]
    format: Option<String>,
    /// Store the valid records and answer with the refused ones, instead
    /// of refusing the whole upload.
    #[serde(default)]
    skip_invalid: bool,
}

/// Imports the body (CSV or NDJSON, streamed to a file in the data
/// directory first): all or nothing, as `crosscast import`; with
/// `skip_invalid`, the valid records, answering with the refused ones.
#[utoipa::path(post, path = "/api/v1/imports/{dimension}",
    params(("dimension" = String, Path, description = "`recipients` or `subscriptions`"), ImportQuery),
    request_body(content = String, content_type = "text/csv", description = "The file: CSV with a header, or NDJSON"),
    responses((status = 200, body = Imported), (status = 422, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
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
        let rejects = Upload(path.with_extension("rejects.ndjson"));
        let options = crate::import::Options {
            rejects: q.skip_invalid.then(|| rejects.0.clone()),
            ..Default::default()
        };
        match crate::import::import_file(&s.app.store, dimension, &path, &options) {
            Ok(r) => Ok(Json(Imported {
                inserted: r.inserted,
                updated: r.updated,
                interrupted_before: r.interrupted.map(|i| i.to_string()),
                rejected: q.skip_invalid.then_some(r.rejected),
                rejects: match q.skip_invalid {
                    true => Some(read_rejects(&rejects.0)?),
                    false => None,
                },
            })
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

/// The accounts: each names its secret, never its value.
#[utoipa::path(get, path = "/api/v1/accounts", responses(
    (status = 200, body = Vec<Account>), (status = 401, body = ErrorBody)))]
async fn accounts(State(s): State<Shared>) -> Reply {
    // An account names its secret; the secret's value never leaves the store.
    blocking(move || Ok(Json(s.app.store.accounts()?).into_response())).await
}

/// The installed plugins.
#[utoipa::path(get, path = "/api/v1/plugins", responses(
    (status = 200, body = Vec<PluginRecord>), (status = 401, body = ErrorBody)))]
async fn plugins(State(s): State<Shared>) -> Reply {
    blocking(move || Ok(Json(s.app.store.plugins()?).into_response())).await
}

/// The clock runs are on.
#[utoipa::path(get, path = "/api/v1/clock", responses(
    (status = 200, body = ClockNow), (status = 401, body = ErrorBody)))]
async fn clock(State(s): State<Shared>) -> Reply {
    let c = &s.app.clock;
    Ok(Json(ClockNow {
        now: crate::clock::format_ms(c.now_ms()),
        is_virtual: !c.is_system(),
    })
    .into_response())
}

/// How far to move the clock.
#[derive(Deserialize, ToSchema)]
struct Advance {
    /// A duration: `7d`, `36h`.
    by: String,
}

/// Moves the server's virtual clock forward; due timers fire at once.
#[utoipa::path(post, path = "/api/v1/clock/advance", request_body = Advance, responses(
    (status = 200, body = Moved), (status = 409, body = ErrorBody), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody)))]
async fn advance(State(s): State<Shared>, Json(a): Json<Advance>) -> Reply {
    let step = humantime::parse_duration(&a.by)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("`{}`: {e}", a.by)))?;
    let ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
    blocking(move || {
        let due = crate::schedules::due();
        let now = s
            .app
            .clock
            .advance(ms)
            .map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
        let fired = s.app.executor()?.fire_due()?;
        let started = crate::schedules::start_due(&s.app, &due)?.len();
        drop(due);
        Ok(Json(Moved {
            now: crate::clock::format_ms(now),
            fired,
            started,
        })
        .into_response())
    })
    .await
}

/// The schedules, oldest first, as `crosscast schedule list --json`.
#[utoipa::path(get, path = "/api/v1/schedules", responses(
    (status = 200, body = Vec<crate::schedules::ScheduleView>), (status = 401, body = ErrorBody)))]
async fn schedules(State(s): State<Shared>) -> Reply {
    blocking(move || {
        let views: Vec<crate::schedules::ScheduleView> = s
            .app
            .store
            .schedules()?
            .iter()
            .map(crate::schedules::ScheduleView::of)
            .collect();
        Ok(Json(views).into_response())
    })
    .await
}

/// How a schedule is added through the API.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AddSchedule {
    /// Shown as the schedule's file; `api` by default.
    #[serde(default)]
    name: Option<String>,
}

/// Adds the workflow in the body (TOML, with a `[schedule]`): 201 and the
/// schedule, or 422 and the diagnostics.
#[utoipa::path(post, path = "/api/v1/schedules", params(AddSchedule),
    request_body(content = String, content_type = "application/toml", description = "The workflow (TOML) with its [schedule]"),
    responses((status = 201, body = crate::schedules::ScheduleView, headers(("location" = String))),
        (status = 422, body = Refused), (status = 401, body = ErrorBody)))]
async fn add_schedule(
    State(s): State<Shared>,
    Query(q): Query<AddSchedule>,
    body: axum::body::Bytes,
) -> Reply {
    blocking(move || {
        let name = q.name.unwrap_or_else(|| "api".to_string());
        let wf = match s.app.validate_bytes(&name, body.to_vec())? {
            Ok((wf, _)) => wf,
            Err(diagnostics) => return Ok(refused("the workflow is not valid", diagnostics)),
        };
        if wf.schedule.is_none() {
            return Ok(refused(
                "the workflow has no [schedule]: POST it to /api/v1/runs to run it once",
                Vec::new(),
            ));
        }
        let source = String::from_utf8_lossy(&body).into_owned();
        let record = crate::schedules::add(&s.app, &name, source, &wf)?;
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, format!("/api/v1/schedules/{}", record.id))],
            Json(crate::schedules::ScheduleView::of(&record)),
        )
            .into_response())
    })
    .await
}

/// Removes a schedule (its runs go on): what it was.
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", params(("id" = u64, Path)),
    responses((status = 200, body = crate::schedules::ScheduleView), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn remove_schedule(State(s): State<Shared>, Path(id): Path<u64>) -> Reply {
    blocking(move || {
        let gone = s.app.store.remove_schedule(id)?;
        Ok(Json(crate::schedules::ScheduleView::of(&gone)).into_response())
    })
    .await
}
