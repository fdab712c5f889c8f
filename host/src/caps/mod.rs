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

use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::runtime::Limits;
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

/// A function turning a guest failure of `plugin` into the message its task
/// fails with.
pub fn crash_reporter(
    plugin: String,
    limits: Limits,
    stderr: MemoryOutputPipe,
) -> impl Fn(wasmtime::Error) -> String {
    move |e| {
        format!(
            "plugin `{plugin}` {}",
            describe_failure(&e, limits, &stderr)
        )
    }
}

/// Turns a guest failure into a sentence for the operator, with what the
/// guest wrote to stderr (a Rust panic message, say) when there is any.
pub fn describe_failure(e: &wasmtime::Error, limits: Limits, stderr: &MemoryOutputPipe) -> String {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>()
        && *trap == wasmtime::Trap::Interrupt
    {
        return format!(
            "ran out of time (limit {} s) and was stopped",
            limits.timeout.as_secs_f64()
        );
    }
    let text = format!("{e:?}");
    if text.contains("growing memory") || text.contains("forcing trap when growing") {
        return format!(
            "ran out of memory (limit {} MiB) and was stopped",
            limits.memory_bytes >> 20
        );
    }
    let said = guest_said(&stderr.contents());
    let first = text.lines().next().unwrap_or("").to_string();
    match (e.downcast_ref::<wasmtime::Trap>(), said) {
        (Some(_), Some(said)) => format!("crashed: {said}"),
        (Some(trap), None) => format!("crashed: {trap} ({first})"),
        (None, _) => format!("failed: {first}"),
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
