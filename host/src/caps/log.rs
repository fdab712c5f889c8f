//! What a guest says: `crosscast:plugin/log` lines and what it writes to
//! stdout and stderr, into the host's tracing log, capped per execution
//! ([`ChatterLimits`]: bytes in all, lines a second). What goes over the cap
//! is counted and reported once, when the execution ends; writing is never
//! itself a failure. The last lines of stderr are kept for failure
//! messages (a Rust panic's message).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::runtime::HostState;
use crate::runtime::bindings::activity::crosscast::plugin::log::{Host, Level};

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.host_calls += 1;
        self.chatter.line(level, &message);
        Ok(())
    }
}

/// How much of what a guest says reaches the host's log per execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatterLimits {
    /// Bytes in all (log lines, stdout and stderr).
    pub bytes: u64,
    /// Lines a second.
    pub lines_per_s: u32,
}

impl Default for ChatterLimits {
    fn default() -> Self {
        ChatterLimits {
            bytes: 1 << 20,
            lines_per_s: 1_000,
        }
    }
}

/// Most of stderr kept for failure messages.
const TAIL: usize = 16 * 1024;

/// Longest partial line held before it is passed on as a line.
const MAX_LINE: usize = 4 * 1024;

/// What one execution's guest says, shared by its log capability and its
/// stdout and stderr streams.
#[derive(Clone)]
pub struct Chatter(Arc<Mutex<Said>>);

/// Where a guest's words go and what was dropped.
struct Said {
    /// Who speaks: run, activity, plugin.
    who: (u64, String, String),
    limits: ChatterLimits,
    /// Bytes passed on so far.
    passed: u64,
    /// The current second's start and the lines passed in it.
    window: (Instant, u32),
    dropped_bytes: u64,
    dropped_lines: u64,
    /// The end of stderr.
    tail: VecDeque<u8>,
    /// A line being written, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

/// A guest output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Chatter {
    /// What `plugin` says while executing `activity` of `run`.
    pub fn new(limits: ChatterLimits, run: u64, activity: &str, plugin: &str) -> Chatter {
        Chatter(Arc::new(Mutex::new(Said {
            who: (run, activity.to_string(), plugin.to_string()),
            limits,
            passed: 0,
            window: (Instant::now(), 0),
            dropped_bytes: 0,
            dropped_lines: 0,
            tail: VecDeque::new(),
            partial: [Vec::new(), Vec::new()],
        })))
    }

    fn said(&self) -> std::sync::MutexGuard<'_, Said> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A log line at `level`, passed on if the cap allows.
    pub fn line(&self, level: Level, text: &str) {
        self.said().pass(level, text);
    }

    /// The end of what the guest wrote to stderr.
    pub fn stderr_tail(&self) -> Vec<u8> {
        let said = self.said();
        let mut out: Vec<u8> = said.tail.iter().copied().collect();
        out.extend_from_slice(&said.partial[Stream::Stderr as usize]);
        out
    }

    /// What went over the cap so far: (bytes, lines).
    pub fn dropped(&self) -> (u64, u64) {
        let said = self.said();
        (said.dropped_bytes, said.dropped_lines)
    }

    /// The guest's stdout, as WASI gives it.
    pub fn stdout(&self) -> GuestOutput {
        GuestOutput(self.clone(), Stream::Stdout)
    }

    /// The guest's stderr, as WASI gives it.
    pub fn stderr(&self) -> GuestOutput {
        GuestOutput(self.clone(), Stream::Stderr)
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut said = self.said();
        if stream == Stream::Stderr {
            let tail = &mut said.tail;
            tail.extend(bytes.iter().copied().skip(bytes.len().saturating_sub(TAIL)));
            let over = tail.len().saturating_sub(TAIL);
            tail.drain(..over);
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let partial = &mut said.partial[stream as usize];
            match rest.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    partial.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                }
                None => {
                    partial.extend_from_slice(rest);
                    if partial.len() < MAX_LINE {
                        return;
                    }
                    rest = &[];
                }
            }
            let line = std::mem::take(&mut said.partial[stream as usize]);
            said.pass_stream(stream, &line);
        }
    }
}

impl Said {
    /// Whether a line of `len` bytes may be passed on now; counts it.
    fn admit(&mut self, len: usize) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        let len = len as u64;
        if self.passed + len > self.limits.bytes || self.window.1 >= self.limits.lines_per_s {
            self.dropped_bytes += len;
            self.dropped_lines += 1;
            return false;
        }
        self.passed += len;
        self.window.1 += 1;
        true
    }

    fn pass(&mut self, level: Level, text: &str) {
        if !self.admit(text.len()) {
            return;
        }
        let (run, activity, plugin) = (&self.who.0, &self.who.1, &self.who.2);
        match level {
            Level::Trace => tracing::trace!(run, activity, plugin, "{text}"),
            Level::Debug => tracing::debug!(run, activity, plugin, "{text}"),
            Level::Info => tracing::info!(run, activity, plugin, "{text}"),
            Level::Warn => tracing::warn!(run, activity, plugin, "{text}"),
            Level::Error => tracing::error!(run, activity, plugin, "{text}"),
        }
    }

    fn pass_stream(&mut self, stream: Stream, line: &[u8]) {
        if !self.admit(line.len()) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (run, activity, plugin) = (&self.who.0, &self.who.1, &self.who.2);
        match stream {
            Stream::Stdout => tracing::info!(run, activity, plugin, stream = "stdout", "{text}"),
            Stream::Stderr => tracing::info!(run, activity, plugin, stream = "stderr", "{text}"),
        }
    }
}

impl Drop for Said {
    /// Reported once, when the execution's store is gone.
    fn drop(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                self.pass_stream(stream, &line);
            }
        }
        if self.dropped_lines > 0 {
            let (run, activity, plugin) = (&self.who.0, &self.who.1, &self.who.2);
            tracing::warn!(
                run,
                activity,
                plugin,
                "… {} of log dropped ({} line(s) over the cap of {} and {} lines/s per execution)",
                size(self.dropped_bytes),
                self.dropped_lines,
                size(self.limits.bytes),
                self.limits.lines_per_s
            );
        }
    }
}

/// A byte count for people: `1.1 GB`, `512 B`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A guest's stdout or stderr: every write accepted, passed on as lines
/// within the cap.
#[derive(Clone)]
pub struct GuestOutput(Chatter, Stream);

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.0.write(self.1, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: what is over the cap is dropped, not refused.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.write(self.1, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatter_over_the_cap_is_counted_not_refused_and_stderr_s_end_kept() {
        let chatter = Chatter::new(
            ChatterLimits {
                bytes: 1_000,
                lines_per_s: 1_000_000,
            },
            1,
            "a",
            "p",
        );
        let mut err = chatter.stderr();
        for i in 0..2_000 {
            let line = format!("progress: {i} of 2000\n");
            OutputStream::write(&mut err, Bytes::from(line)).unwrap();
        }
        let (bytes, lines) = chatter.dropped();
        assert!(lines > 1_900 && bytes > 30_000, "{lines} lines, {bytes} B");
        let tail = String::from_utf8(chatter.stderr_tail()).unwrap();
        assert!(tail.len() <= TAIL);
        assert!(tail.ends_with("progress: 1999 of 2000\n"), "{tail}");
        // Lines a second: the rest of the second is dropped.
        let quick = Chatter::new(
            ChatterLimits {
                bytes: u64::MAX,
                lines_per_s: 10,
            },
            1,
            "a",
            "p",
        );
        for _ in 0..25 {
            quick.line(Level::Warn, "hello");
        }
        assert_eq!(quick.dropped(), (75, 15));
        assert_eq!(size(1_100_000_000), "1.1 GB");
        assert_eq!(size(512), "512 B");
    }
}
