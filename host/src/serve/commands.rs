//! Commands the CLI has the server carry out, while the server holds the
//! data directory: `POST /api/v1/cli` with the parsed command, answered
//! with what it prints as it prints it (NDJSON events: `{"out": TEXT}`,
//! `{"err": TEXT}`, then `{"exit": CODE}`). Only the token of
//! `serve.json` may ask, on the loopback listener: a command names files
//! of the client's, which the server reads and writes as the directory's
//! owner.

use std::io::Write;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::api::{Caller, Shared};
use crate::cli::{Command, Io, Place};

/// What the client sends.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The command, its paths absolute.
    pub command: Command,
    /// Standard input, for a command that reads it (`--from-file -`).
    #[serde(default)]
    pub stdin: Option<String>,
}

/// What the server streams back.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// Text the command printed.
    Out(String),
    /// Text it wrote to its error stream.
    Err(String),
    /// It ended with this exit code.
    Exit(u8),
}

/// The commands' route (on the loopback listener only).
pub fn router() -> axum::Router<Shared> {
    axum::Router::new().route("/api/v1/cli", axum::routing::post(carry_out))
}

async fn carry_out(
    State(s): State<Shared>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<Request>,
) -> Response {
    if !matches!(caller, Caller::Cli) {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "error": "commands are for the CLI on this machine (the token of serve.json)"
            })),
        )
            .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let app = s.app.clone();
    let name = request.command.name();
    let hung_up = tx.clone();
    tracing::info!(command = name, "carrying out a command for the CLI");
    // A thread of its own: commands block (a run drives its tasks).
    let spawned = std::thread::Builder::new()
        .name(format!("cli-{name}"))
        .spawn(move || {
            let mut io = Io {
                out: Box::new(Chunks::new(tx.clone(), Event::Out)),
                err: Box::new(Chunks::new(tx.clone(), Event::Err)),
                stdin: Box::new(std::io::Cursor::new(
                    request.stdin.unwrap_or_default().into_bytes(),
                )),
                place: Place::Served,
                // The response was dropped: the client went away (Ctrl-C).
                cancelled: std::sync::Arc::new(move || hung_up.is_closed()),
            };
            let code = match crate::cli::execute(&app, request.command, &mut io) {
                Ok(code) => code,
                Err(e) => crate::cli::exit_code(&e, &mut io),
            };
            let _ = io.out.flush();
            let _ = io.err.flush();
            drop(io);
            let _ = tx.blocking_send(Event::Exit(code));
        });
    if let Err(e) = spawned {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let events = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).expect("serializable event");
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(events),
    )
        .into_response()
}

/// A writer sending what it is given as events, in chunks that end on a
/// character's boundary.
struct Chunks {
    tx: tokio::sync::mpsc::Sender<Event>,
    event: fn(String) -> Event,
    buf: Vec<u8>,
}

/// Bytes gathered before an event is sent.
const CHUNK: usize = 16 * 1024;

impl Chunks {
    fn new(tx: tokio::sync::mpsc::Sender<Event>, event: fn(String) -> Event) -> Chunks {
        Chunks {
            tx,
            event,
            buf: Vec::new(),
        }
    }

    /// Sends what is buffered up to the last whole character.
    fn send(&mut self) -> std::io::Result<()> {
        let whole = match std::str::from_utf8(&self.buf) {
            Ok(_) => self.buf.len(),
            // An incomplete character at the end waits for its rest.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.buf.len(),
        };
        if whole == 0 {
            return Ok(());
        }
        let bytes: Vec<u8> = self.buf.drain(..whole).collect();
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        // The client went away: the command stops at its next write, as
        // it would writing to a closed pipe.
        self.tx
            .blocking_send((self.event)(text))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        let _ = self.send();
    }
}
