//! The WebAssembly runtime: one engine, linkers built once, components
//! verified and precompiled at install, a fresh sandboxed `Store` per
//! execution.
//!
//! Sandbox: WASI is linked with an empty context (no files, env, args,
//! sockets; the wall clock is the run's clock); each store has a memory limit
//! and an epoch deadline driven by a ticker thread, so a runaway guest traps
//! instead of hanging the host. A trapped store is dropped, never reused.

pub mod activity;
pub mod bindings;
pub mod channel;
pub mod compile_cache;
pub mod contract;
pub mod limits;
pub mod preflight;
mod state;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{CallHook, Config, Engine, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;

pub use limits::{Hit, Limits};
pub use state::{Emitted, HostState};

use crate::caps::Context;
use crate::caps::clock::{GuestClock, GuestClockView, GuestTime};
use crate::caps::log::Chatter;
use crate::store::plugins::{PluginKind, PluginRecord};
use crate::store::suppression::AddressKind;
use crate::store::{Store, StoreError};
use activity::ActivityPre;
use channel::ChannelPre;

/// How often the epoch advances.
const TICK: Duration = Duration::from_millis(10);

/// A plugin that failed or could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a component of a world Crosscast knows.
    #[error("{0}")]
    Invalid(String),
    /// The guest trapped, ran out of time or memory.
    #[error("plugin `{plugin}` {message}")]
    Crashed {
        /// Which plugin.
        plugin: String,
        /// What happened.
        message: String,
    },
    /// The component targets a newer contract than this host loads.
    #[error("{0}")]
    TooNew(String),
    /// The same name and version is installed with other bytes.
    #[error(
        "plugin `{name}` {version} is installed with other bytes (installed sha256 {installed}, \
         this file {new}): give the new build another version, or replace it with --force"
    )]
    SameVersion {
        /// The plugin's name.
        name: String,
        /// The version both claim.
        version: String,
        /// sha256 of the installed component.
        installed: String,
        /// sha256 of the one refused.
        new: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `install` does when the same name and version is installed with
/// other bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameVersion {
    /// Refuse: a version names one build.
    Refuse,
    /// Replace it (`--force`, and `init` for the built-ins).
    Replace,
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The stored record.
    pub record: PluginRecord,
    /// What the component was built against.
    pub contract: contract::Contract,
    /// sha256 of the component it replaced under the same name, if any.
    pub replaced: Option<String>,
}

/// What the operator chose about a channel's suppression list at install.
#[derive(Debug, Clone, Default)]
pub struct ListChoice {
    /// The list it shares (`--suppression-list`), instead of its own.
    pub list: Option<String>,
    /// What that list holds (`--list-kind`).
    pub kind: Option<AddressKind>,
}

/// A verified component and what it says of itself.
struct Examined {
    component: Component,
    record: PluginRecord,
    facts: Option<ChannelFacts>,
    contract: contract::Contract,
}

/// What a channel says of itself at install, besides its name.
#[derive(Debug, Clone)]
struct ChannelFacts {
    /// The dimension it sends per.
    target: &'static str,
    /// The suppression list it declares.
    list: Option<String>,
}

/// A loaded, ready-to-instantiate plugin.
#[derive(Clone)]
pub enum Loaded {
    /// An activity.
    Activity(ActivityPre),
    /// A channel.
    Channel(ChannelPre),
}

/// The engine and everything compiled with it.
pub struct Runtime {
    engine: Engine,
    engine_hash: u64,
    activity_linker: Linker<HostState>,
    channel_linker: Linker<HostState>,
    /// Links 0.2.0 and 0.3.0 channels: their worlds import the same.
    channel_v2_linker: Linker<HostState>,
    limits: Limits,
    cache: Mutex<HashMap<String, Loaded>>,
    /// Compiled components shared by data directories, if asked for.
    compiled: Option<compile_cache::CompileCache>,
}

impl Runtime {
    /// Builds the engine and linkers and starts the epoch ticker.
    pub fn new(limits: Limits) -> anyhow::Result<Arc<Runtime>> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Component-model async is not used; leaving it on triples call cost.
        config.concurrency_support(false);
        // `CROSSCAST_WASM_PROFILER=perfmap` names guest functions for `perf`
        // (in /tmp/perf-PID.map): a profile then shows where plugins spend.
        if std::env::var("CROSSCAST_WASM_PROFILER").is_ok_and(|v| v == "perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.finish();

        // One linker per world: WASI (empty context) plus the world's
        // imports. The monotonic clock is the guest's own (`caps::clock`):
        // wasmtime-wasi's sleeps in real time, blocking the host.
        let linker = |add: fn(&mut Linker<HostState>) -> wasmtime::Result<()>| {
            let mut l = Linker::new(&engine);
            let wasi = |l: &mut Linker<HostState>| -> wasmtime::Result<()> {
                wasmtime_wasi::p2::add_to_linker_sync(l)?;
                l.allow_shadowing(true);
                wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<
                    HostState,
                    GuestClock,
                >(l, |s| GuestClockView {
                    time: &s.time,
                    table: &mut s.table,
                })?;
                l.allow_shadowing(false);
                Ok(())
            };
            wasi(&mut l).map_err(|e| anyhow::anyhow!("{e}"))?;
            add(&mut l).map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::Ok(l)
        };
        // 0.4.0's worlds import what 0.1.0's (activity) and 0.2.0's
        // (channel) do, and the `references` types: one linker serves all.
        let activity_linker = linker(|l| {
            bindings::activity_v4::ActivityPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
                l,
                |s| s,
            )
        })?;
        let channel_linker = linker(|l| {
            bindings::channel::ChannelPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
                l,
                |s| s,
            )
        })?;
        let channel_v2_linker = linker(|l| {
            bindings::channel_v4::ChannelPlugin::add_to_linker::<HostState, HasSelf<HostState>>(
                l,
                |s| s,
            )
        })?;

        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                }
            })?;
        Ok(Arc::new(Runtime {
            engine,
            engine_hash,
            activity_linker,
            channel_linker,
            channel_v2_linker,
            limits,
            cache: Mutex::new(HashMap::new()),
            compiled: compile_cache::CompileCache::from_env(),
        }))
    }

    /// The limits every execution gets.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A fresh sandboxed store for one execution.
    pub fn new_store(&self, ctx: Arc<Context>) -> wasmtime::Store<HostState> {
        // What the guest says is capped; it never grows host memory.
        let chatter = Chatter::new(self.limits.chatter, ctx.run, &ctx.activity, &ctx.plugin);
        let time = GuestTime::new(ctx.now_ms);
        let wasi = WasiCtxBuilder::new()
            .wall_clock(time.clone())
            .monotonic_clock(time.clone())
            .stdout(chatter.stdout())
            .stderr(chatter.stderr())
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .tables(64)
            .memories(8)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            wasi,
            table: Default::default(),
            limiter: limits::Limiter::new(limits),
            ctx,
            emitted: Default::default(),
            chatter,
            time,
            call: limits::CallTime::start(self.limits.timeout),
            late: None,
            host_calls: 0,
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Every host call is timed: one that returns after the guest
        // call's time is up ends the call, the hit recorded as such.
        store.call_hook(|mut cx, hook| {
            let s = cx.data_mut();
            match hook {
                CallHook::CallingHost => s.call.entering_host(),
                CallHook::ReturningFromHost => {
                    if let Some(hit) = s.call.leaving_host() {
                        s.late.get_or_insert(hit);
                        return Err(wasmtime::Error::msg(
                            "the call's time ran out in a host call",
                        ));
                    }
                }
                CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
        self.arm(&mut store);
        store
    }

    /// Resets the deadline before a guest call: the epoch deadline (time
    /// in wasm) and the call's clock (time in host calls).
    pub fn arm(&self, store: &mut wasmtime::Store<HostState>) {
        let ticks = (self.limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.data_mut().call = limits::CallTime::start(self.limits.timeout);
    }

    /// Verifies a component and describes it: its world, name and version.
    pub fn inspect(&self, bytes: &[u8]) -> Result<(Component, PluginRecord), PluginError> {
        self.examine(bytes).map(|e| (e.component, e.record))
    }

    /// [`Runtime::inspect`], with what a channel says of itself.
    fn examine(&self, bytes: &[u8]) -> Result<Examined, PluginError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self
            .compile(&sha256, bytes)
            .map_err(|e| PluginError::Invalid(format!("not a valid WebAssembly component: {e}")))?;
        let contract = contract::Contract::read(&self.engine, &component, bytes)?;
        let loaded = self.link(&component)?;
        let ctx = Arc::new(Context::inspection());
        let mut store = self.new_store(ctx);
        let crash = |e: wasmtime::Error, st: &wasmtime::Store<HostState>| PluginError::Crashed {
            plugin: "(being installed)".into(),
            message: crate::caps::describe_failure(&e, self.limits, st.data()),
        };
        // Both worlds describe themselves with a name, version and summary.
        let mut facts = None;
        let (name, version, summary, kind) = match loaded {
            Loaded::Activity(pre) => {
                let p = pre.instantiate(&mut store).map_err(|e| crash(e, &store))?;
                let d = p.describe(&mut store).map_err(|e| crash(e, &store))?;
                (d.name, d.version, d.summary, PluginKind::Activity)
            }
            Loaded::Channel(pre) => {
                let p = pre.instantiate(&mut store).map_err(|e| crash(e, &store))?;
                let d = p.describe(&mut store).map_err(|e| crash(e, &store))?;
                if let Some(list) = &d.suppression_list {
                    crate::store::suppression::check_list_name(list).map_err(|e| {
                        PluginError::Invalid(format!(
                            "channel `{}` declares a suppression list: {e}",
                            d.name
                        ))
                    })?;
                }
                facts = Some(ChannelFacts {
                    target: match d.target {
                        channel::wit::Target::Recipient => "recipient",
                        channel::wit::Target::Subscription => "subscription",
                    },
                    list: d.suppression_list.clone(),
                });
                (d.name, d.version, d.summary, PluginKind::Channel)
            }
        };
        let record = PluginRecord {
            name,
            version,
            summary,
            kind,
            sha256,
            accounts: vec![],
            suppression_list: None,
            contract: None,
        };
        if record.name.is_empty()
            || !record
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(PluginError::Invalid(format!(
                "plugin name `{}` must be non-empty ASCII letters, digits, `-` or `_`",
                record.name
            )));
        }
        Ok(Examined {
            component,
            record,
            facts,
            contract,
        })
    }

    /// Compiles a component (whose sha256 is `sha256`), or loads it from
    /// the compile cache when there is one.
    fn compile(&self, sha256: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        match &self.compiled {
            Some(cache) => cache.component(&self.engine, self.engine_hash, sha256, bytes),
            None => Component::new(&self.engine, bytes),
        }
    }

    /// Installs a component: verify, describe, precompile, store. The same
    /// name and version with other bytes is refused unless `same` says
    /// replace. Grants and the suppression list of a plugin being replaced
    /// are kept; a
    /// chosen list (channels only) replaces the list. A channel's list gets
    /// its kind: the one chosen, else the one it was declared with, else
    /// what the channel sends per (device tokens for subscriptions, phone
    /// numbers for recipients); the kind must be of the channel's records.
    pub fn install(
        &self,
        store: &Store,
        bytes: &[u8],
        accounts: &[String],
        choice: &ListChoice,
        same: SameVersion,
    ) -> Result<Installed, PluginError> {
        let Examined {
            component,
            mut record,
            facts,
            contract,
        } = self.examine(bytes)?;
        if (choice.list.is_some() || choice.kind.is_some()) && record.kind != PluginKind::Channel {
            let option = if choice.list.is_some() {
                "--suppression-list"
            } else {
                "--list-kind"
            };
            return Err(PluginError::Invalid(format!(
                "{option} is for channels; `{}` is an activity",
                record.name
            )));
        }
        // A new version keeps what the operator decided about the old one.
        let mut replaced = None;
        if let Ok(old) = store.plugin(&record.name) {
            if old.version == record.version
                && old.sha256 != record.sha256
                && same == SameVersion::Refuse
            {
                return Err(PluginError::SameVersion {
                    name: record.name,
                    version: record.version,
                    installed: old.sha256,
                    new: record.sha256,
                });
            }
            if old.sha256 != record.sha256 {
                replaced = Some(old.sha256);
            }
            record.accounts = old.accounts;
            record.suppression_list = old.suppression_list;
        }
        record.contract = Some(contract.to_string());
        if let Some(list) = &choice.list {
            record.suppression_list = Some(list.clone());
        }
        let list_kind = match &facts {
            Some(facts) => Some(list_kind(store, &record, facts, choice.kind)?),
            None => None,
        };
        for a in accounts {
            if !record.accounts.contains(a) {
                record.accounts.push(a.clone());
            }
        }
        let artifact = component
            .serialize()
            .map_err(|e| PluginError::Invalid(format!("cannot precompile: {e}")))?;
        store.put_artifact(self.engine_hash, &record.sha256, &artifact)?;
        if let Some((list, kind)) = list_kind {
            store.declare_list_kind(&list, kind)?;
        }
        store.put_plugin(&record, bytes)?;
        Ok(Installed {
            record,
            contract,
            replaced,
        })
    }

    /// Loads an installed component by sha256, from the in-process cache, the
    /// precompiled artifact, or (new engine) by compiling the stored bytes.
    pub fn load(&self, store: &Store, sha256: &str) -> Result<Loaded, PluginError> {
        if let Some(l) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sha256)
        {
            return Ok(l.clone());
        }
        let component = match store.artifact(self.engine_hash, sha256)? {
            // SAFETY: artifacts are only ever written by `install`/`load` of
            // this host, keyed by this engine's compatibility hash.
            Some(bytes) => unsafe { Component::deserialize(&self.engine, &bytes) }
                .map_err(|e| PluginError::Invalid(format!("stored artifact does not load: {e}")))?,
            None => {
                let bytes = store.component(sha256)?;
                let c = self.compile(sha256, &bytes).map_err(|e| {
                    PluginError::Invalid(format!("stored component does not compile: {e}"))
                })?;
                let artifact = c
                    .serialize()
                    .map_err(|e| PluginError::Invalid(e.to_string()))?;
                store.put_artifact(self.engine_hash, sha256, &artifact)?;
                c
            }
        };
        let loaded = self.link(&component)?;
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha256.to_string(), loaded.clone());
        Ok(loaded)
    }

    fn link(&self, component: &Component) -> Result<Loaded, PluginError> {
        // 0.5.0's activity world imports what 0.4.0's does: one linker.
        let as_activity_v5 = self
            .activity_linker
            .instantiate_pre(component)
            .and_then(bindings::activity_v5::ActivityPluginPre::new);
        let activity_v5_err = match as_activity_v5 {
            Ok(pre) => return Ok(Loaded::Activity(ActivityPre::V5(pre))),
            Err(e) => e,
        };
        let as_activity = self
            .activity_linker
            .instantiate_pre(component)
            .and_then(bindings::activity::ActivityPluginPre::new);
        let activity_err = match as_activity {
            Ok(pre) => return Ok(Loaded::Activity(ActivityPre::V1(pre))),
            Err(e) => e,
        };
        // 0.3.0's world imports what 0.2.0's does: one linker for both.
        let as_channel_v3 = self
            .channel_v2_linker
            .instantiate_pre(component)
            .and_then(bindings::channel_v3::ChannelPluginPre::new);
        let channel_v3_err = match as_channel_v3 {
            Ok(pre) => return Ok(Loaded::Channel(ChannelPre::V3(pre))),
            Err(e) => e,
        };
        let as_channel_v2 = self
            .channel_v2_linker
            .instantiate_pre(component)
            .and_then(bindings::channel_v2::ChannelPluginPre::new);
        let channel_v2_err = match as_channel_v2 {
            Ok(pre) => return Ok(Loaded::Channel(ChannelPre::V2(pre))),
            Err(e) => e,
        };
        match self
            .channel_linker
            .instantiate_pre(component)
            .and_then(bindings::channel::ChannelPluginPre::new)
        {
            Ok(pre) => Ok(Loaded::Channel(ChannelPre::V1(pre))),
            Err(channel_err) => Err(PluginError::Invalid(format!(
                "the component implements none of crosscast:plugin/activity-plugin@0.5.0 \
                 ({activity_v5_err}), crosscast:plugin/activity-plugin@0.1.0 \
                 ({activity_err}), crosscast:plugin/channel-plugin@0.3.0 ({channel_v3_err}), \
                 crosscast:plugin/channel-plugin@0.2.0 ({channel_v2_err}) \
                 and crosscast:plugin/channel-plugin@0.1.0 ({channel_err})"
            ))),
        }
    }
}

/// What a plugin said of a config.
#[derive(Debug, Clone)]
pub struct Configured {
    /// Outgoing transitions.
    pub outputs: Vec<String>,
    /// Fewest inputs per execution.
    pub min_inputs: u32,
    /// Most inputs per execution.
    pub max_inputs: u32,
    /// A delivery (channel plugin).
    pub delivery: bool,
    /// A channel's target dimension (`recipient`, `subscription`).
    pub target: Option<&'static str>,
    /// What the config names outside itself, when the plugin declares it
    /// (contract 0.4.0 and later).
    pub needs: Option<preflight::Needs>,
}

impl Runtime {
    /// Asks a plugin whether a config is valid; errors are (field, message).
    pub fn configure(
        &self,
        store: &Store,
        plugin: &PluginRecord,
        config: &str,
    ) -> Result<Result<Configured, Vec<(String, String)>>, PluginError> {
        let ctx = Arc::new(Context {
            store: Some(store.clone()),
            now_ms: 0,
            run: 0,
            activity: String::new(),
            plugin: plugin.name.clone(),
            accounts: plugin.accounts.clone(),
            outputs: Vec::new(),
        });
        let mut st = self.new_store(ctx);
        let crash = |e: wasmtime::Error, st: &wasmtime::Store<HostState>| PluginError::Crashed {
            plugin: plugin.name.clone(),
            message: crate::caps::describe_failure(&e, self.limits, st.data()),
        };
        match self.load(store, &plugin.sha256)? {
            Loaded::Activity(pre) => {
                let instance = pre
                    .instance_pre()
                    .instantiate(&mut st)
                    .map_err(|e| crash(e, &st))?;
                let a = pre.load(&mut st, &instance).map_err(|e| crash(e, &st))?;
                let d = a.describe(&mut st).map_err(|e| crash(e, &st))?;
                let outputs = match a.configure(&mut st, config) {
                    Ok(Ok(outputs)) => outputs,
                    Ok(Err(es)) => return Ok(Err(es)),
                    Err(e) => return Err(crash(e, &st)),
                };
                let needs = preflight::activity(pre.instance_pre(), &mut st, &instance, config)
                    .map_err(|e| crash(e, &st))?;
                Ok(Ok(Configured {
                    outputs,
                    min_inputs: d.min_inputs,
                    max_inputs: d.max_inputs,
                    delivery: false,
                    target: None,
                    needs,
                }))
            }
            Loaded::Channel(pre) => {
                let instance = pre
                    .instance_pre()
                    .instantiate(&mut st)
                    .map_err(|e| crash(e, &st))?;
                let c = pre.load(&mut st, &instance).map_err(|e| crash(e, &st))?;
                let d = c.describe(&mut st).map_err(|e| crash(e, &st))?;
                if let Err(es) = c.configure(&mut st, config).map_err(|e| crash(e, &st))? {
                    return Ok(Err(es));
                }
                let needs = preflight::channel(pre.instance_pre(), &mut st, &instance, config)
                    .map_err(|e| crash(e, &st))?;
                Ok(Ok(Configured {
                    outputs: vec!["done".to_string()],
                    min_inputs: 1,
                    max_inputs: 1,
                    delivery: true,
                    target: Some(match d.target {
                        channel::wit::Target::Recipient => "recipient",
                        channel::wit::Target::Subscription => "subscription",
                    }),
                    needs,
                }))
            }
        }
    }

    /// The account parameters a channel declares it may read (none for an
    /// activity, or a plugin of a contract before 0.4.0).
    pub fn account_params(
        &self,
        store: &Store,
        plugin: &PluginRecord,
    ) -> Result<Vec<String>, PluginError> {
        let Loaded::Channel(pre) = self.load(store, &plugin.sha256)? else {
            return Ok(Vec::new());
        };
        let mut st = self.new_store(Arc::new(Context::inspection()));
        let crash = |e: wasmtime::Error, st: &wasmtime::Store<HostState>| PluginError::Crashed {
            plugin: plugin.name.clone(),
            message: crate::caps::describe_failure(&e, self.limits, st.data()),
        };
        let instance = pre
            .instance_pre()
            .instantiate(&mut st)
            .map_err(|e| crash(e, &st))?;
        preflight::account_params(pre.instance_pre(), &mut st, &instance).map_err(|e| crash(e, &st))
    }
}

/// The suppression list a channel's HTTP messages use, and its kind (see
/// [`Runtime::install`]).
fn list_kind(
    store: &Store,
    record: &PluginRecord,
    facts: &ChannelFacts,
    chosen: Option<AddressKind>,
) -> Result<(String, AddressKind), PluginError> {
    let list = record
        .suppression_list
        .clone()
        .or_else(|| facts.list.clone())
        .unwrap_or_else(|| record.name.clone());
    let declared = store.declared_list_kind(&list)?;
    let kind = match (chosen, declared) {
        (Some(k), Some(d)) if k != d => {
            return Err(PluginError::Invalid(format!(
                "suppression list `{list}` holds {}; it cannot hold {} too",
                d.plural(),
                k.plural()
            )));
        }
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) if facts.target == "subscription" => AddressKind::Token,
        (None, None) => AddressKind::Phone,
    };
    let (dimension, column) = kind.column();
    if dimension != facts.target && list != crate::store::suppression::EMAIL_LIST {
        return Err(PluginError::Invalid(format!(
            "channel `{}` sends per {}, and a list of {} is checked against a {dimension}'s \
             {column}: choose --list-kind {}",
            record.name,
            facts.target,
            kind.plural(),
            if facts.target == "subscription" {
                "token"
            } else {
                "phone or --list-kind email"
            }
        )));
    }
    Ok((list, kind))
}
