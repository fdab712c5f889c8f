//! An open data directory and what commands need of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};

use crate::clock::Clock;
use crate::deliver::Transports;
use crate::executor::Executor;
use crate::runtime::{Limits, Runtime};
use crate::store::{OpenOptions, Store};
use crate::workflow::{self, Workflow};

/// A validated workflow and its warnings, or the diagnostics refusing it
/// (rendered lines).
pub type Validated = Result<(Workflow, Vec<String>), Vec<String>>;

/// An open data directory with a runtime and an executor: what commands
/// need. One is shared by every command a server carries out.
pub struct App {
    /// The store.
    pub store: Store,
    /// The clock.
    pub clock: Clock,
    runtime: Mutex<Option<Arc<Runtime>>>,
    executor: Mutex<Option<Arc<Executor>>>,
    /// Runs the transports' connections (built with the executor).
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
}

fn limits_from_env() -> Limits {
    let mut l = Limits::default();
    if let Some(ms) = std::env::var("CROSSCAST_PLUGIN_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        l.timeout = std::time::Duration::from_millis(ms);
    }
    if let Some(mb) = std::env::var("CROSSCAST_PLUGIN_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        l.memory_bytes = mb << 20;
    }
    if let Some(bytes) = std::env::var("CROSSCAST_PLUGIN_LOG_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        l.chatter.bytes = bytes;
    }
    if let Some(lines) = std::env::var("CROSSCAST_PLUGIN_LOG_LINES_PER_S")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        l.chatter.lines_per_s = lines;
    }
    l
}

impl App {
    /// Opens a data directory.
    pub fn open(data: &Path, clock: Clock) -> anyhow::Result<App> {
        App::open_with(data, clock, &OpenOptions::default())
    }

    /// Opens (or creates) a data directory.
    pub fn open_with(data: &Path, clock: Clock, options: &OpenOptions) -> anyhow::Result<App> {
        let store = Store::open_with(data, options)?;
        Ok(App {
            store,
            clock,
            runtime: Mutex::new(None),
            executor: Mutex::new(None),
            tokio: Mutex::new(None),
        })
    }

    /// The wasm runtime (built on first use).
    pub fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if runtime.is_none() {
            *runtime = Some(Runtime::new(limits_from_env())?);
        }
        Ok(runtime.clone().expect("set above"))
    }

    /// The executor on this store and clock (built on first use, then
    /// shared: one executor knows which runs are being driven).
    pub fn executor(&self) -> anyhow::Result<Arc<Executor>> {
        let mut executor = self.executor.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = executor.as_ref() {
            return Ok(e.clone());
        }
        let mut tokio = self.tokio.lock().unwrap_or_else(|p| p.into_inner());
        if tokio.is_none() {
            *tokio = Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?,
            );
        }
        let handle = tokio.as_ref().expect("set above").handle().clone();
        let e = Arc::new(Executor::new(
            self.store.clone(),
            self.runtime()?,
            self.clock.clone(),
            Transports::new(handle, &self.store)?,
        ));
        *executor = Some(e.clone());
        Ok(e)
    }

    /// Installs the built-in plugins from `dir`.
    pub fn init(&self, dir: &Path) -> anyhow::Result<Vec<crate::store::plugins::PluginRecord>> {
        let rt = self.runtime()?;
        let mut out = Vec::new();
        for name in BUILTINS {
            let path = dir.join(format!("crosscast_plugin_{name}.wasm"));
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "cannot read {} (build the plugins with `cargo xtask plugins`)",
                    path.display()
                )
            })?;
            out.push(
                // The built-ins come with this binary: a rebuild replaces them.
                rt.install(
                    &self.store,
                    &bytes,
                    &[],
                    &Default::default(),
                    crate::runtime::SameVersion::Replace,
                )
                .with_context(|| path.display().to_string())?
                .record,
            );
        }
        Ok(out)
    }

    /// Parses and validates a workflow file: the workflow and warnings, or
    /// the diagnostics, as rendered lines.
    pub fn validate(&self, file: &Path) -> anyhow::Result<Validated> {
        let name = file.display().to_string();
        let bytes = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
        self.validate_bytes(&name, bytes)
    }

    /// [`App::validate`] on a workflow's bytes, named `name` in diagnostics.
    pub fn validate_bytes(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<Validated> {
        let text = match workflow::decode(bytes) {
            Ok(text) => text,
            Err(d) => return Ok(Err(vec![d.render(name)])),
        };
        let parsed = match workflow::parse(&text) {
            Ok(p) => p,
            Err(ds) => return Ok(Err(ds.iter().map(|d| d.render(name)).collect())),
        };
        let rt = self.runtime()?;
        Ok(match workflow::validate(&parsed, &self.store, &rt) {
            // Warnings are worth saying, not a reason to refuse.
            Ok((wf, warnings)) => Ok((wf, warnings.iter().map(|w| w.render(name)).collect())),
            Err(ds) => Err(ds.iter().map(|d| d.render(name)).collect()),
        })
    }
}

/// The built-in plugins `init` installs, by file stem.
pub const BUILTINS: &[&str] = &[
    "query",
    "split",
    "wait",
    "signal",
    "email",
    "sms",
    "apns",
    "fcm",
    "union",
    "intersection",
    "exclusion",
    "dedup",
    "change_dimension",
];

/// The directory of the built-in plugin components: `given`, or beside
/// the executable.
pub fn builtin_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    let exe = std::env::current_exe()?;
    let base = exe.parent().context("executable has no directory")?;
    for candidate in [
        base.join("../wasm32-wasip2/plugin"),
        base.join("plugins"),
        base.join("../share/crosscast/plugins"),
    ] {
        if candidate.join("crosscast_plugin_query.wasm").exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the built-in plugins: build them with `cargo xtask plugins` or pass --plugins DIR"
    )
}
