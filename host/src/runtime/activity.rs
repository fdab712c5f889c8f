//! Activity plugins of every supported contract version behind one type.
//!
//! The host works with the newest activity interface (`0.5.0`); plugins
//! built against `activity@0.1.0` (worlds 0.1.0 and 0.4.0) are adapted:
//! their task carries no signals nor last release, and their outcomes are
//! `done` or `wait-until`, which mean the same in 0.5.0.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Resource};

use super::HostState;
use super::bindings::{activity as v1b, activity_v5 as v5b};
use crate::caps::population::Cursor;

/// The activity interface the host works with.
pub use v5b::exports::crosscast::plugin0_5_0::activity as wit;

use v1b::exports::crosscast::plugin::activity as v1;

/// A linked activity plugin, ready to instantiate.
#[derive(Clone)]
pub enum ActivityPre {
    /// Built against `crosscast:plugin/activity@0.1.0` (worlds 0.1.0, 0.4.0).
    V1(v1b::ActivityPluginPre<HostState>),
    /// Built against `crosscast:plugin/activity-plugin@0.5.0`.
    V5(v5b::ActivityPluginPre<HostState>),
}

/// A config's outgoing transitions, or what is wrong with it: (field,
/// message) pairs.
pub type Configured = Result<Vec<String>, Vec<(String, String)>>;

/// An instantiated activity plugin.
pub enum Activity {
    /// A 0.1.0 activity, adapted.
    V1(v1b::ActivityPlugin),
    /// A 0.5.0 activity.
    V5(v5b::ActivityPlugin),
}

impl ActivityPre {
    /// The linked component, to instantiate and to look up other exports
    /// (0.4.0's `activity-preflight`) on the same instance.
    pub fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            ActivityPre::V1(p) => p.instance_pre(),
            ActivityPre::V5(p) => p.instance_pre(),
        }
    }

    /// The activity of an instance made from [`ActivityPre::instance_pre`].
    pub fn load(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Activity> {
        Ok(match self {
            ActivityPre::V1(_) => Activity::V1(v1b::ActivityPlugin::new(store, instance)?),
            ActivityPre::V5(_) => Activity::V5(v5b::ActivityPlugin::new(store, instance)?),
        })
    }

    /// A fresh instance in `store`.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Activity> {
        Ok(match self {
            ActivityPre::V1(p) => Activity::V1(p.instantiate(store)?),
            ActivityPre::V5(p) => Activity::V5(p.instantiate(store)?),
        })
    }
}

impl Activity {
    /// What the activity says of itself.
    pub fn describe(&self, store: &mut Store<HostState>) -> wasmtime::Result<wit::Descriptor> {
        Ok(match self {
            Activity::V1(p) => {
                let d = p.crosscast_plugin_activity().call_describe(store)?;
                wit::Descriptor {
                    name: d.name,
                    version: d.version,
                    summary: d.summary,
                    min_inputs: d.min_inputs,
                    max_inputs: d.max_inputs,
                }
            }
            Activity::V5(p) => p.crosscast_plugin0_5_0_activity().call_describe(store)?,
        })
    }

    /// Checks a config: its outgoing transitions, or (field, message) pairs.
    pub fn configure(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Configured> {
        let pairs = |es: Vec<v1b::crosscast::plugin::types::ConfigError>| {
            es.into_iter().map(|e| (e.field, e.message)).collect()
        };
        Ok(match self {
            Activity::V1(p) => p
                .crosscast_plugin_activity()
                .call_configure(store, config)?
                .map_err(pairs),
            Activity::V5(p) => p
                .crosscast_plugin0_5_0_activity()
                .call_configure(store, config)?
                .map_err(pairs),
        })
    }

    /// Runs one execution. A 0.1.0 activity gets the task without its
    /// signals and last release (the host drops their handles).
    pub fn execute(
        &self,
        store: &mut Store<HostState>,
        task: wit::Task,
    ) -> wasmtime::Result<Result<wit::Outcome, String>> {
        match self {
            Activity::V5(p) => p
                .crosscast_plugin0_5_0_activity()
                .call_execute(store, &task),
            Activity::V1(p) => {
                let wit::Task {
                    run_id,
                    activity_id,
                    config,
                    started_at,
                    inputs,
                    released_at: _,
                    signals,
                } = task;
                for s in signals {
                    if let Some(ids) = s.ids {
                        drop_cursor(store, ids)?;
                    }
                }
                let task = v1::Task {
                    run_id,
                    activity_id,
                    config,
                    started_at,
                    inputs: inputs
                        .into_iter()
                        .map(|i| v1::Input {
                            source: i.source,
                            population: i.population,
                        })
                        .collect(),
                };
                let outcome = p.crosscast_plugin_activity().call_execute(store, &task)?;
                Ok(outcome.map(|o| match o {
                    v1::Outcome::Done => wit::Outcome::Done,
                    v1::Outcome::WaitUntil(t) => wit::Outcome::WaitUntil(t),
                }))
            }
        }
    }
}

/// Frees a population handle the guest never receives.
fn drop_cursor(store: &mut Store<HostState>, r: Resource<Cursor>) -> wasmtime::Result<()> {
    store.data_mut().table.delete(r)?;
    Ok(())
}
