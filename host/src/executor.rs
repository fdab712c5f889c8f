//! Runs workflows: creates runs, executes pending tasks one by one, turns
//! their outputs into the next tasks, parks waiting tasks on timers, and
//! fires due timers.
//!
//! Every step is recorded before the next begins (task started, outputs
//! stored, next tasks created — atomically), so a process that dies resumes
//! where it was: a task still pending is executed again from its inputs.
//!
//! One executor may drive several runs at once (`crosscast serve`), each
//! run by one thread at a time: a run's tasks build on one another, and
//! two drivers of one run would send its messages twice.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::Context as _;

use crate::caps::population::Cursor;
use crate::caps::{Context, crash_reporter};
use crate::clock::Clock;
use crate::deliver::Transports;
use crate::runtime::bindings::activity::exports::crosscast::plugin::activity as wit;
use crate::runtime::{Loaded, Runtime};
use crate::store::Store;
use crate::store::runs::{InputRef, JoinState, OutputRef, Run, Task, TaskState};
use crate::workflow::{Activity, Workflow};

/// What a run does with its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Sends.
    Real,
    /// Builds and previews without sending, listing `messages` per delivery.
    Dry {
        /// How many targets' messages each delivery lists (at least 1).
        messages: u32,
    },
}

/// Executes runs on one store.
pub struct Executor {
    store: Store,
    runtime: Arc<Runtime>,
    clock: Clock,
    transports: Transports,
    /// Runs a thread of this process is driving.
    driving: Mutex<HashSet<u64>>,
    /// Signalled when a run is let go.
    released: Condvar,
    /// Set by [`Executor::stop`]: no task starts, no delivery sends more.
    stopping: AtomicBool,
}

/// A run claimed by one driver, let go when dropped.
struct Claim<'a> {
    executor: &'a Executor,
    run: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut driving = self.executor.lock_driving();
        driving.remove(&self.run);
        self.executor.released.notify_all();
    }
}

/// What one pass of the worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Timers that came due.
    pub timers: usize,
    /// Tasks executed.
    pub tasks: usize,
    /// Tasks executed that failed.
    pub failed: usize,
}

impl Executor {
    /// An executor of the runs in `store`, on `clock`, calling plugins
    /// through `runtime` and sending through `transports`.
    pub fn new(store: Store, runtime: Arc<Runtime>, clock: Clock, transports: Transports) -> Self {
        Executor {
            store,
            runtime,
            clock,
            transports,
            driving: Mutex::new(HashSet::new()),
            released: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// The clock runs are on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Stops for good: no task starts from now on, and each delivery under
    /// way sends nothing more, records the answers to what is on the wire
    /// and leaves its task pending (the next process resumes it).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True once [`Executor::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn lock_driving(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.driving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims a run, waiting while another thread drives it.
    fn claim(&self, run: u64) -> Claim<'_> {
        let mut driving = self.lock_driving();
        while driving.contains(&run) {
            driving = self
                .released
                .wait(driving)
                .unwrap_or_else(|p| p.into_inner());
        }
        driving.insert(run);
        Claim {
            executor: self,
            run,
        }
    }

    /// Claims a run unless another thread drives it.
    fn try_claim(&self, run: u64) -> Option<Claim<'_>> {
        // The lock is let go before a claim exists: a claim's drop takes it.
        let claimed = self.lock_driving().insert(run);
        claimed.then(|| Claim {
            executor: self,
            run,
        })
    }

    /// Runs some thread of this process is driving now.
    pub fn busy(&self) -> usize {
        self.lock_driving().len()
    }

    /// What a delivery needs of it.
    fn delivery_needs(&self) -> crate::deliver::Needs<'_> {
        crate::deliver::Needs {
            store: &self.store,
            runtime: &self.runtime,
            transports: &self.transports,
            stop: &self.stopping,
        }
    }

    /// Starts a run of a validated workflow and drives it until it ends or
    /// waits. A dry run crosses its waits at once and sends nothing.
    pub fn start(&self, workflow: &Workflow, file: &str, kind: RunKind) -> anyhow::Result<u64> {
        let id = self.create(workflow, file, kind)?;
        self.drive(id)?;
        Ok(id)
    }

    /// Creates a run of a validated workflow, its start tasks pending
    /// ([`Executor::drive`] runs them).
    pub fn create(&self, workflow: &Workflow, file: &str, kind: RunKind) -> anyhow::Result<u64> {
        let id = self.store.next_run_id()?;
        let (dry_run, preview_messages) = match kind {
            RunKind::Real => (false, 1),
            RunKind::Dry { messages } => (true, messages.max(1)),
        };
        let run = Run {
            id,
            workflow_name: workflow.name.clone(),
            workflow_file: file.to_string(),
            workflow: serde_json::to_value(workflow)?,
            created_at: self.clock.now_ms(),
            dry_run,
            preview_messages,
        };
        let mut tasks = Vec::new();
        for a in workflow.starts() {
            tasks.push(new_task(&self.store, &a.id, Vec::new())?);
        }
        self.store.create_run(&run, &tasks)?;
        Ok(id)
    }

    /// Executes pending tasks of a run until none is left (waiting first
    /// while another thread drives it).
    pub fn drive(&self, run_id: u64) -> anyhow::Result<usize> {
        let _claim = self.claim(run_id);
        Ok(self.drive_counting(run_id)?.0)
    }

    /// Drives a run unless another thread does: `None` then. Returns the
    /// tasks executed and how many of them failed.
    pub fn try_drive(&self, run_id: u64) -> Option<anyhow::Result<(usize, usize)>> {
        let _claim = self.try_claim(run_id)?;
        Some(self.drive_counting(run_id))
    }

    /// [`Executor::drive`], also counting the tasks that failed; the
    /// caller holds the run's claim.
    fn drive_counting(&self, run_id: u64) -> anyhow::Result<(usize, usize)> {
        let run = self.store.run(run_id)?;
        let workflow: Workflow =
            serde_json::from_value(run.workflow.clone()).context("stored workflow")?;
        let (mut executed, mut failed) = (0, 0);
        loop {
            let pending: Vec<Task> = self
                .store
                .tasks(run_id)?
                .into_iter()
                .filter(|t| t.state == TaskState::Pending)
                .collect();
            if pending.is_empty() || self.stopping() {
                return Ok((executed, failed));
            }
            for task in pending {
                if self.stopping() {
                    return Ok((executed, failed));
                }
                if self.execute(&run, &workflow, task)? {
                    failed += 1;
                }
                executed += 1;
            }
        }
    }

    /// Fires the timers due now and executes everything pending that no
    /// other thread is driving.
    pub fn tick(&self) -> anyhow::Result<Tick> {
        let mut tick = Tick {
            timers: self.fire_due()?,
            ..Tick::default()
        };
        for run in self.runs_with_pending()? {
            if let Some(r) = self.try_drive(run) {
                let (executed, failed) = r?;
                tick.tasks += executed;
                tick.failed += failed;
            }
        }
        Ok(tick)
    }

    /// Fires the timers due now (their tasks become pending); returns how
    /// many.
    pub fn fire_due(&self) -> anyhow::Result<usize> {
        let mut fired = 0;
        for (due, run, task) in self.store.due_timers(self.clock.now_ms())? {
            self.store.fire_timer(due, run, task)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// Runs with a pending task.
    pub fn runs_with_pending(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self.store.runs_with_pending()?)
    }

    /// Executes one task; true if it failed.
    fn execute(&self, run: &Run, workflow: &Workflow, mut task: Task) -> anyhow::Result<bool> {
        let Some(activity) = workflow.activity(&task.activity) else {
            task.state = TaskState::Failed {
                error: format!("activity `{}` is not in the workflow", task.activity),
            };
            self.store.put_task(run.id, &task)?;
            return Ok(true);
        };
        let plugin = match self.store.plugin(&activity.kind) {
            Ok(p) => p,
            Err(e) => {
                task.state = TaskState::Failed {
                    error: e.to_string(),
                };
                self.store.put_task(run.id, &task)?;
                return Ok(true);
            }
        };
        // A dry run's task carries the instant the waits before it reached.
        let now = task.clock.unwrap_or_else(|| self.clock.now_ms());
        if task.started_at.is_none() || task.component.as_deref() != Some(&plugin.sha256) {
            task.started_at.get_or_insert(now);
            task.component = Some(plugin.sha256.clone());
            self.store.put_task(run.id, &task)?;
        }
        tracing::info!(run = run.id, activity = %activity.id, plugin = %plugin.name, "executing");
        let ctx = Arc::new(Context {
            store: Some(self.store.clone()),
            now_ms: now,
            run: run.id,
            activity: activity.id.clone(),
            plugin: plugin.name.clone(),
            accounts: plugin.accounts.clone(),
            outputs: activity.outputs.clone(),
        });
        let loaded = match self.runtime.load(&self.store, &plugin.sha256) {
            Ok(l) => l,
            Err(e) => {
                task.state = TaskState::Failed {
                    error: e.to_string(),
                };
                self.store.put_task(run.id, &task)?;
                return Ok(true);
            }
        };
        let started = std::time::Instant::now();
        let result = match loaded {
            Loaded::Activity(pre) => {
                self.execute_activity(run, activity, &task, pre, ctx)
                    .map(|(step, calls)| {
                        task.calls = calls;
                        step
                    })
            }
            Loaded::Channel(pre) if run.dry_run => {
                let needs = self.delivery_needs();
                let limit = run.preview_messages;
                let r = crate::deliver::preview(&needs, activity, &task, pre, ctx, limit);
                r.map(|(preview, outputs)| {
                    task.preview = Some(preview);
                    Step::Done(outputs)
                })
            }
            Loaded::Channel(pre) => {
                let needs = self.delivery_needs();
                let r = crate::deliver::deliver(&needs, run.id, activity, &task, pre, ctx);
                r.map(|d| {
                    task.delivery = Some(d.counts);
                    match d.wake_at {
                        _ if d.stopped => Step::Stopped,
                        // Messages are retrying: wait for the earliest on a
                        // persisted timer; `done` is taken once all are final.
                        Some(t) => Step::Wait(t),
                        None => Step::Done(d.outputs),
                    }
                })
            }
        };
        task.elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            // Left pending, its counts kept: the next process resumes it.
            Ok(Step::Stopped) => self.store.put_task(run.id, &task)?,
            Ok(Step::Done(outputs)) => {
                let (next, joins) = self.successors(run, workflow, activity, &task, &outputs)?;
                task.state = TaskState::Done { outputs };
                self.store.complete_task(run.id, &task, &next, &joins)?;
            }
            Ok(Step::Wait(until)) => match wait(until, now, task.waited_past) {
                Wait::Refused(error) => {
                    task.state = TaskState::Failed { error };
                    self.store.put_task(run.id, &task)?;
                }
                // Still pending: executed again at once, on the same clock.
                Wait::Over => {
                    task.waited_past = true;
                    self.store.put_task(run.id, &task)?;
                }
                // Cross the wait on the task's own clock: execute again at
                // `until` instead of parking on a timer.
                Wait::Until(until) if run.dry_run => {
                    task.waited_past = false;
                    task.clock = Some(until);
                    self.store.put_task(run.id, &task)?;
                }
                Wait::Until(until) => {
                    task.waited_past = false;
                    task.state = TaskState::Waiting { until };
                    self.store.wait_task(run.id, &task, until)?;
                }
            },
            Err(error) => {
                tracing::warn!(run = run.id, activity = %activity.id, "failed: {error}");
                task.state = TaskState::Failed { error };
                self.store.put_task(run.id, &task)?;
            }
        }
        Ok(matches!(task.state, TaskState::Failed { .. }))
    }

    /// The tasks a finished task's outputs start, and the joins they arrive
    /// at. A join activity runs once a population has arrived on each of its
    /// incoming transitions; a transition not taken arrives there empty, so a
    /// skipped subset never leaves a join waiting forever.
    fn successors(
        &self,
        run: &Run,
        workflow: &Workflow,
        activity: &Activity,
        task: &Task,
        outputs: &BTreeMap<String, OutputRef>,
    ) -> anyhow::Result<(Vec<Task>, Joins)> {
        let mut next = Vec::new();
        let mut joins: Joins = Vec::new();
        for (transition, targets) in &activity.next {
            let source = format!("{}.{transition}", activity.id);
            for target in targets {
                let is_join = workflow.activity(target).is_some_and(|a| a.join);
                let input = match outputs.get(transition) {
                    Some(out) => InputRef {
                        source: source.clone(),
                        population: out.population,
                        count: out.count,
                    },
                    None if is_join => InputRef {
                        source: source.clone(),
                        population: self.empty_like(task, outputs)?,
                        count: 0,
                    },
                    None => continue,
                };
                let inputs = if is_join {
                    let i = match joins.iter().position(|(a, _)| a == target) {
                        Some(i) => i,
                        None => {
                            joins.push((target.clone(), self.store.join_state(run.id, target)?));
                            joins.len() - 1
                        }
                    };
                    match joins[i].1.arrive(input, &workflow.incoming(target)) {
                        Some(inputs) => inputs,
                        None => continue,
                    }
                } else {
                    vec![input]
                };
                let mut t = new_task(&self.store, target, inputs)?;
                // Downstream of a crossed wait, a dry run's clock stays where
                // the wait took it.
                t.clock = task.clock;
                next.push(t);
            }
        }
        Ok((next, joins))
    }

    /// An empty population of the dimension a task worked on.
    fn empty_like(
        &self,
        task: &Task,
        outputs: &BTreeMap<String, OutputRef>,
    ) -> anyhow::Result<u64> {
        let any = outputs
            .values()
            .map(|o| o.population)
            .chain(task.inputs.iter().map(|i| i.population))
            .next();
        let dimension = match any {
            Some(p) => self.store.population_meta(p)?.dimension,
            None => String::new(),
        };
        Ok(self.store.write_population(&dimension, &[])?)
    }

    fn execute_activity(
        &self,
        run: &Run,
        activity: &Activity,
        task: &Task,
        pre: crate::runtime::bindings::activity::ActivityPluginPre<crate::runtime::HostState>,
        ctx: Arc<Context>,
    ) -> Result<(Step, u64), String> {
        let limits = self.runtime.limits();
        let plugin = ctx.plugin.clone();
        let mut st = self.runtime.new_store(ctx);
        let crash = crash_reporter(plugin.clone(), limits);
        let instance = pre.instantiate(&mut st).map_err(|e| crash(e, st.data()))?;
        let mut inputs = Vec::new();
        for i in &task.inputs {
            let meta = self
                .store
                .population_meta(i.population)
                .map_err(|e| e.to_string())?;
            let cursor = Cursor::stored(meta.dimension, i.population, meta.count, meta.blocks);
            let population = st
                .data_mut()
                .table
                .push(cursor)
                .map_err(|e| e.to_string())?;
            inputs.push(wit::Input {
                source: i.source.clone(),
                population,
            });
        }
        let arg = wit::Task {
            run_id: run.id.to_string(),
            activity_id: activity.id.clone(),
            config: activity.config.to_string(),
            started_at: task.started_at.unwrap_or(0),
            inputs,
        };
        let outcome = instance
            .crosscast_plugin_activity()
            .call_execute(&mut st, &arg)
            .map_err(|e| crash(e, st.data()))?;
        // Both directions: `execute` itself and every call the guest made.
        let calls = st.data().host_calls + 1;
        match outcome {
            Err(message) => Err(format!("plugin `{plugin}` reported: {message}")),
            Ok(wit::Outcome::WaitUntil(t)) => Ok((Step::Wait(t), calls)),
            Ok(wit::Outcome::Done) => {
                tracing::debug!(calls, "activity done");
                let mut emitted = std::mem::take(&mut st.data_mut().emitted);
                drop(st);
                let mut outputs = BTreeMap::new();
                for transition in &activity.outputs {
                    // A transition the plugin never emitted on is not taken
                    // (a split's skip-empty subset): nothing downstream runs.
                    let Some(e) = emitted.remove(transition) else {
                        continue;
                    };
                    let (dimension, ids) = (e.dimension.clone(), e.ids());
                    let population = self
                        .store
                        .write_population(&dimension, &ids)
                        .map_err(|e| e.to_string())?;
                    outputs.insert(
                        transition.clone(),
                        OutputRef {
                            population,
                            count: ids.len() as u64,
                        },
                    );
                }
                Ok((Step::Done(outputs), calls))
            }
        }
    }
}

/// Join activities and what has arrived at them.
type Joins = Vec<(String, JoinState)>;

/// How an execution ended.
pub(crate) enum Step {
    /// Finished with these outputs.
    Done(BTreeMap<String, OutputRef>),
    /// Waiting until this instant.
    Wait(i64),
    /// Stopped before its end (the process is stopping): still pending.
    Stopped,
}

fn new_task(store: &Store, activity: &str, inputs: Vec<InputRef>) -> anyhow::Result<Task> {
    Ok(Task {
        id: store.next_id()?,
        activity: activity.to_string(),
        inputs,
        state: TaskState::Pending,
        started_at: None,
        component: None,
        delivery: None,
        calls: 0,
        elapsed_ms: 0,
        clock: None,
        preview: None,
        waited_past: false,
    })
}

/// Furthest ahead a wait may name: further is a plugin's mistake (a wait
/// of centuries, an instant out of range), not a campaign.
const LONGEST_WAIT_MS: i64 = 10 * 366 * 24 * 3_600_000;

/// What becomes of a task asking, at `now`, to wait until `until`.
enum Wait {
    /// A later instant, within reach: park until then.
    Until(i64),
    /// Not after its clock: the wait is over, run again at once.
    Over,
    /// Refused, with the reason.
    Refused(String),
}

fn wait(until: i64, now: i64, waited_past: bool) -> Wait {
    let (at, clock) = (crate::clock::format_ms(until), crate::clock::format_ms(now));
    if until > now.saturating_add(LONGEST_WAIT_MS) {
        Wait::Refused(format!(
            "asked to wait until {at}, more than 10 years after its clock {clock}"
        ))
    } else if until > now {
        Wait::Until(until)
    } else if waited_past {
        Wait::Refused(format!(
            "asked again to wait until {at}, which is not after its clock {clock}: a wait \
             must name a later instant"
        ))
    } else {
        Wait::Over
    }
}
