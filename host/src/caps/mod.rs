//! Host capabilities: what a guest may ask of the host, one module each.
//!
//! Every capability reads its permissions from the execution's [`Context`]
//! (the plugin, its grants, the run's clock), so one place decides what a
//! plugin may touch. Storage failures are traps (host problems); requests a
//! plugin got wrong come back as `Err(String)`.

pub mod accounts;
pub mod attributes;
pub mod clock;
pub mod log;
pub mod output;
pub mod population;
pub mod signing;

use crate::runtime::{Hit, HostState, Limits};
use crate::store::Store;

/// Most ids one `read` returns, whatever the guest asks: bounds host memory.
pub const MAX_BATCH: u32 = 65_536;

/// What one execution may touch.
pub struct Context {
    /// The store; absent while a plugin is inspected at install.
    pub store: Option<Store>,
    /// The run's clock for this execution (ms).
    pub now_ms: i64,
    /// The run.
    pub run: u64,
    /// The activity id in the workflow.
    pub activity: String,
    /// The plugin's name.
    pub plugin: String,
    /// Accounts granted to the plugin.
    pub accounts: Vec<String>,
    /// Transitions the activity may emit on.
    pub outputs: Vec<String>,
}

impl Context {
    /// The context for describing a component at install: no data at all.
    pub fn inspection() -> Context {
        Context {
            store: None,
            now_ms: 0,
            run: 0,
            activity: String::new(),
            plugin: String::new(),
            accounts: Vec::new(),
            outputs: Vec::new(),
        }
    }

    pub(crate) fn store(&self) -> Result<&Store, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "no data is available while a plugin is being installed".to_string())
    }
}

/// Turns a guest failure into the message its task fails with, reading the
/// store's state (which limit, if any, was hit).
pub type CrashReporter = Box<dyn Fn(wasmtime::Error, &HostState) -> String>;

/// A function turning a guest failure of `plugin` into the message its task
/// fails with (the store's state says which limit, if any, was hit).
pub fn crash_reporter(
    plugin: String,
    limits: Limits,
) -> impl Fn(wasmtime::Error, &HostState) -> String {
    move |e, state| format!("plugin `{plugin}` {}", describe_failure(&e, limits, state))
}

/// Turns a guest failure into a sentence for the operator: the limit it
/// hit (as the limiter or the call's clock recorded it, or wasmtime's
/// interrupt trap), its exit code, or its error chain, with what the guest
/// wrote to stderr (a Rust panic message, say) when there is any.
pub fn describe_failure(e: &wasmtime::Error, limits: Limits, state: &HostState) -> String {
    let (in_host, total) = state.spent();
    let secs = |d: std::time::Duration| {
        if d.subsec_millis() == 0 {
            format!("{} s", d.as_secs())
        } else {
            format!("{:.1} s", d.as_secs_f64())
        }
    };
    match state.hit() {
        Some(Hit::Memory) => {
            return format!(
                "ran out of memory (limit {} MiB) and was stopped",
                limits.memory_bytes >> 20
            );
        }
        Some(Hit::Table) => return "ran out of table space and was stopped".into(),
        Some(Hit::BlockedInHost { call, in_host }) => {
            return format!(
                "ran out of time (limit {}): blocked in a host call for {} ({} in host calls in \
                 all, timed by the host) and was stopped",
                secs(limits.timeout),
                secs(call),
                secs(in_host)
            );
        }
        None => {}
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return format!(
            "ran out of time (limit {}: {} running in wasm, {} in host calls) and was stopped",
            secs(limits.timeout),
            secs(total.saturating_sub(in_host)),
            secs(in_host)
        );
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        let said = guest_said(&state.chatter.stderr_tail())
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        // WASI 0.2's `exit` carries success or failure only: a guest's
        // `exit(3)` arrives as 1.
        return match exit.0 {
            0 => format!("exited early with success status{said}"),
            code => format!("exited with a failure status (code {code}){said}"),
        };
    }
    let chain = chain(e);
    let said = guest_said(&state.chatter.stderr_tail());
    match (e.downcast_ref::<wasmtime::Trap>(), said) {
        (Some(_), Some(said)) => format!("crashed: {said}"),
        (Some(trap), None) => format!("crashed: {trap} ({chain})"),
        (None, _) => format!("failed: {chain}"),
    }
}

/// An error's chain of causes, one line each joined, without wasm
/// backtraces (the first line of a trap's own message is its cause).
fn chain(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        let first = first.trim_end_matches(':').trim().to_string();
        if !first.is_empty() && !parts.iter().any(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    if parts.is_empty() {
        "unknown error".into()
    } else {
        parts.join(": ")
    }
}

/// The gist of a guest's stderr: a panic's message, else its last line.
fn guest_said(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        let message = lines
            .get(i + 1)
            .filter(|l| !l.starts_with("note:"))
            .copied()
            .unwrap_or(lines[i]);
        return Some(format!("panicked: {message}"));
    }
    lines.last().map(|l| l.to_string())
}
