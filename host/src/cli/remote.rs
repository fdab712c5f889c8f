//! The client side of a command the server carries out: the command, its
//! paths made absolute, goes to the server named by `serve.json`; what it
//! prints comes back as it is printed, and its exit code is this process's.

use std::io::{Read as _, Write as _};

use anyhow::{Context as _, bail};

use super::{Cli, Command, Io, absolutize};
use crate::serve::commands::{Event, Request};
use crate::serve::discovery::ServerFile;

/// Has the server carry out `cli`'s command; returns its exit code.
pub fn forward(server: &ServerFile, cli: Cli, io: &mut Io) -> anyhow::Result<u8> {
    let pid = server.pid;
    let mut command = cli.command;
    match &command {
        Command::Init { .. } => {
            writeln!(
                io.err,
                "error: crosscast serve (process {pid}) holds this data directory: it exists \
                 already, and `init` is for a new one"
            )?;
            return Ok(3);
        }
        Command::Worker { .. } => {
            writeln!(
                io.err,
                "crosscast serve (process {pid}) holds this data directory and does the \
                 worker's job (timers, retries, unsubscribes): no worker is needed"
            )?;
            return Ok(3);
        }
        _ => {}
    }
    if cli.now.is_some() {
        writeln!(
            io.err,
            "error: --now: crosscast serve (process {pid}) holds this data directory and runs \
             on its own clock (`crosscast clock advance DUR` moves a virtual one)"
        )?;
        return Ok(2);
    }
    absolutize(&mut command, &std::env::current_dir()?);
    let stdin = if command.reads_stdin() {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        Some(s)
    } else {
        None
    };
    tracing::debug!(pid, url = %server.commands, "the server carries the command out");
    let request = Request { command, stdin };
    crate::interrupt::doing(crate::interrupt::Doing::Forwarded);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(exchange(server, &request, io))
}

/// Sends the request and relays the events until the exit code comes.
async fn exchange(server: &ServerFile, request: &Request, io: &mut Io) -> anyhow::Result<u8> {
    let pid = server.pid;
    {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let mut response = client
            .post(format!("{}/api/v1/cli", server.commands))
            .bearer_auth(&server.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(request)?)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach crosscast serve (process {pid}) at {}",
                    server.commands
                )
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            bail!("crosscast serve (process {pid}) refused the command: {status} {text}");
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<Event>(&line)? {
                    Event::Out(text) => io.out.write_all(text.as_bytes())?,
                    Event::Err(text) => io.err.write_all(text.as_bytes())?,
                    Event::Exit(code) => return Ok(code),
                }
            }
        }
        bail!(
            "crosscast serve (process {pid}) stopped before the command ended: see its log; \
             what the command did is stored"
        )
    }
}
