//! `crosscast serve`: one process holding the data directory as a service.
//! It runs the worker (timers, pending tasks, retries; several runs at
//! once), the one-click unsubscribe endpoint, the HTTP API, and a loopback
//! listener through which the CLI has the server carry its commands out.
//! SIGTERM or Ctrl-C stop it gracefully: no task starts and no message is
//! built any more, the answers to messages on the wire are recorded, and
//! what is left resumes on the next start.

pub mod api;
pub mod commands;
pub mod discovery;
pub mod routes;
pub mod session;
mod tls;
mod ui;
mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cli::App;
use crate::clock::Clock;
use crate::store::OpenOptions;

/// The address the API listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8340";

/// `crosscast serve`'s options.
#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
pub struct ServeArgs {
    /// Where the HTTP API listens: a loopback address unless it has
    /// --tls-cert and --tls-key.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// The API's TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Most runs the worker drives at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Pause between the worker's passes over timers and pending runs, in
    /// milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
}

/// Runs the server until SIGTERM or Ctrl-C; the exit code.
pub fn main(
    data: &Path,
    options: &OpenOptions,
    now: Option<&str>,
    args: ServeArgs,
) -> anyhow::Result<u8> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "error: --listen {} is not a loopback address: the API would carry tokens in the \
             clear; give --tls-cert and --tls-key, or listen on 127.0.0.1",
            args.listen
        );
        return Ok(2);
    }
    // A virtual clock moves only when told to (`crosscast clock advance`).
    let clock = match now {
        Some(t) => Clock::moving(t)?,
        None => Clock::System,
    };
    let app = Arc::new(App::open_with(data, clock.clone(), options)?);
    // Uploads an earlier server was importing when it died.
    let _ = std::fs::remove_dir_all(app.store.dir().join("uploads"));
    crate::interrupt::doing(crate::interrupt::Doing::Serving);
    let exec = app.executor()?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("serve")
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let token = crate::store::tokens::random_token();
    let servers = tokio.block_on(async {
        let api = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {} for the API", args.listen))?;
        let commands = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on a loopback port for commands")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let file = discovery::ServerFile {
            pid: std::process::id(),
            commands: format!("http://{}", commands.local_addr()?),
            api: format!("{scheme}://{}", api.local_addr()?),
            token: token.clone(),
        };
        let mut servers = Vec::new();
        let shared = api::Shared {
            app: app.clone(),
            commands_token: None,
            sessions: Some(Arc::new(session::Sessions::new(tls.is_some()))),
        };
        servers.push(tokio::spawn(api::serve(
            api,
            api::router(shared.clone(), axum::Router::new()),
            tls,
            stopped(stop_rx.clone()),
        )));
        let for_cli = api::Shared {
            commands_token: Some(Arc::new(token)),
            sessions: None,
            ..shared
        };
        servers.push(tokio::spawn(api::serve(
            commands,
            api::router(for_cli, commands::router()),
            None,
            stopped(stop_rx.clone()),
        )));
        if let Some(endpoint) = app.store.unsubscribe_endpoint()? {
            let listener = tokio::net::TcpListener::bind(endpoint.listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {} for unsubscribes", endpoint.listen)
                })?;
            tracing::info!(
                "one-click unsubscribe endpoint on http://{}",
                endpoint.listen
            );
            let router = crate::unsubscribe::router(app.store.clone())?;
            servers.push(tokio::spawn(api::serve(
                listener,
                router,
                None,
                stopped(stop_rx.clone()),
            )));
        }
        discovery::write(data, &file).context("cannot write serve.json")?;
        tracing::info!(
            api = %file.api,
            clock = %match &clock {
                Clock::System => "system".to_string(),
                c => format!("virtual, at {}", crate::clock::format_ms(c.now_ms())),
            },
            parallel = args.parallel,
            "serving {}",
            data.display()
        );
        anyhow::Ok(servers)
    })?;
    let worker = worker::spawn(
        app.clone(),
        exec.clone(),
        args.parallel.into(),
        Duration::from_millis(args.poll_ms),
    )?;
    // Until SIGTERM or Ctrl-C.
    while !crate::interrupt::requested() {
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!(
        "stopping: no task starts and no message is built any more; recording the answers to \
         messages on the wire"
    );
    exec.stop();
    let _ = stop_tx.send(true);
    tokio.block_on(async {
        for s in servers {
            let _ = s.await;
        }
    });
    let _ = worker.join();
    app.store.flush()?;
    discovery::remove(data);
    let left = exec.runs_with_pending()?.len();
    tracing::info!(
        "stopped: every outcome is stored, nothing was lost; {left} run(s) with work left resume \
         when the server starts again"
    );
    Ok(0)
}

/// Resolves once the server is told to stop.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
