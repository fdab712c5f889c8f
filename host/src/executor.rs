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
use crate::runtime::activity::{ActivityPre, wit};
use crate::runtime::{Loaded, Runtime};
use crate::store::Store;
use crate::store::runs::{
    Control, InputRef, JoinState, OutputRef, Run, Task, TaskState, run_label,
};
use crate::store::signals::{NO_DEADLINE, SignalIds, SignalRecord};
use crate::workflow::{Activity, Workflow};

/// An operator's command a run's state refuses.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Paused: resume it first (or it is paused already).
    #[error("run {0} is paused: `crosscast run resume {0}` first")]
    Paused(String),
    /// Not paused: nothing to resume.
    #[error("run {0} is not paused")]
    NotPaused(String),
    /// Cancelled: nothing more happens to it.
    #[error("run {0} was cancelled")]
    Cancelled(String),
    /// No failed activity (failures that took an `error` transition are
    /// not retried: what follows them ran).
    #[error(
        "run {0} has no failed activity to retry (failures that took an `error` transition are \
         not retried)"
    )]
    NothingToRetry(String),
    /// The workflow has no such activity.
    #[error("run {0} has no activity `{1}`")]
    NoActivity(String, String),
    /// Finished: nothing in it could read a signal.
    #[error("run {0} has finished: no activity of it could read a signal")]
    Finished(String),
}

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
    /// Runs the operator paused or cancelled: their deliveries stop at the
    /// next round (the stored [`Control`] keeps them from starting again).
    halted: Mutex<HashSet<u64>>,
    /// Held while a signal is kept and its waiting tasks woken, and while
    /// a task parks to wait for one: a signal sent while a task decides to
    /// wait is never missed.
    signalling: Mutex<()>,
}

/// What sending a signal did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Sent {
    /// The run, as commands name it.
    pub run: String,
    /// The signal's name.
    pub name: String,
    /// Its number within the run, from 1.
    pub seq: u64,
    /// How many records it names (`None`: it names none, so it lets the
    /// whole population through).
    pub ids: Option<u64>,
    /// Executions that were waiting for it and go on now.
    pub woken: usize,
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
            halted: Mutex::new(HashSet::new()),
            signalling: Mutex::new(()),
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

    fn lock_halted(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.halted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when a delivery of `run` must build no more messages.
    fn halted(&self, run: u64) -> bool {
        self.stopping() || self.lock_halted().contains(&run)
    }

    /// What a delivery needs of it.
    fn delivery_needs<'a>(
        &'a self,
        store: &'a Store,
        stop: &'a (dyn Fn() -> bool + Sync),
    ) -> crate::deliver::Needs<'a> {
        crate::deliver::Needs {
            store,
            runtime: &self.runtime,
            transports: &self.transports,
            stop,
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
        self.create_for(workflow, file, kind, None)
    }

    /// [`Executor::create`], for schedule `schedule` when given.
    pub fn create_for(
        &self,
        workflow: &Workflow,
        file: &str,
        kind: RunKind,
        schedule: Option<u64>,
    ) -> anyhow::Result<u64> {
        let id = match kind {
            RunKind::Real => self.store.next_run_id()?,
            RunKind::Dry { .. } => self.store.next_dry_run_id()?,
        };
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
            control: Control::Active,
            schedule,
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
            // Paused or cancelled (now, or by a command a moment ago).
            if self.store.control(run_id)? != Control::Active {
                return Ok((executed, failed));
            }
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
                if self.halted(run_id) {
                    return Ok((executed, failed));
                }
                if self.execute(&run, &workflow, task)? {
                    failed += 1;
                }
                executed += 1;
            }
        }
    }

    /// Pauses a run: nothing starts, its deliveries stop at their next
    /// round and keep their place, its timers wait. Returns once no thread
    /// drives it any more.
    pub fn pause(&self, run: u64) -> anyhow::Result<()> {
        let r = self.store.run(run)?;
        match r.control {
            Control::Active => {}
            Control::Paused { .. } => return Err(Refused::Paused(run_label(run)).into()),
            Control::Cancelled { .. } => return Err(Refused::Cancelled(run_label(run)).into()),
        }
        self.lock_halted().insert(run);
        self.store.set_control(
            run,
            Control::Paused {
                at: self.clock.now_ms(),
            },
        )?;
        // The driver, if any, stops at its next round and lets go.
        drop(self.claim(run));
        Ok(())
    }

    /// Resumes a paused run: timers that came due meanwhile fire now, and
    /// [`Executor::drive`] (or the worker) carries it on.
    pub fn resume(&self, run: u64) -> anyhow::Result<usize> {
        let r = self.store.run(run)?;
        if !matches!(r.control, Control::Paused { .. }) {
            return Err(Refused::NotPaused(run_label(run)).into());
        }
        self.store.set_control(run, Control::Active)?;
        self.lock_halted().remove(&run);
        self.fire_due()
    }

    /// Cancels a run: nothing more is sent or started. The answers to what
    /// is on the wire are recorded, every message not sent yet is marked
    /// `cancelled`, and its timers go. Returns the messages cancelled.
    pub fn cancel(&self, run: u64) -> anyhow::Result<usize> {
        let r = self.store.run(run)?;
        if let Control::Cancelled { .. } = r.control {
            return Err(Refused::Cancelled(run_label(run)).into());
        }
        let at = self.clock.now_ms();
        self.lock_halted().insert(run);
        self.store.set_control(run, Control::Cancelled { at })?;
        // Wait for the driver to record what is on the wire and let go.
        let _claim = self.claim(run);
        let workflow: Workflow =
            serde_json::from_value(r.workflow.clone()).context("stored workflow")?;
        let mut cancelled = 0;
        let stop = || true;
        for task in self.store.tasks(run)? {
            if !matches!(task.state, TaskState::Pending | TaskState::Waiting { .. }) || r.dry_run {
                continue;
            }
            let Some(activity) = workflow.activity(&task.activity).filter(|a| a.delivery) else {
                continue;
            };
            let plugin = self.store.plugin(&activity.kind)?;
            let Loaded::Channel(pre) = self.runtime.load(&self.store, &plugin.sha256)? else {
                continue;
            };
            let ctx = self.context(&self.store, run, activity, &plugin, at);
            let needs = self.delivery_needs(&self.store, &stop);
            cancelled += crate::deliver::cancel(&needs, run, activity, &task, pre, ctx, at)
                .map_err(anyhow::Error::msg)?;
        }
        self.store.cancel_tasks(run, at)?;
        Ok(cancelled)
    }

    /// Executes failed tasks again (those of `activity`, or every one),
    /// from their stored inputs, once the operator fixed the cause.
    /// Messages that failed before reaching the provider are sent again;
    /// nothing sent is. Returns the activities retried;
    /// [`Executor::drive`] (or the worker) carries the run on.
    pub fn retry(&self, run: u64, activity: Option<&str>) -> anyhow::Result<Vec<String>> {
        let r = self.store.run(run)?;
        match r.control {
            Control::Active => {}
            Control::Paused { .. } => return Err(Refused::Paused(run_label(run)).into()),
            Control::Cancelled { .. } => return Err(Refused::Cancelled(run_label(run)).into()),
        }
        let workflow: Workflow =
            serde_json::from_value(r.workflow.clone()).context("stored workflow")?;
        if let Some(a) = activity
            && workflow.activity(a).is_none()
        {
            return Err(Refused::NoActivity(run_label(run), a.to_string()).into());
        }
        let _claim = self.claim(run);
        let now = self.clock.now_ms();
        let mut retried: Vec<String> = Vec::new();
        for mut task in self.store.tasks(run)? {
            if !matches!(task.state, TaskState::Failed { .. })
                || activity.is_some_and(|a| a != task.activity)
            {
                continue;
            }
            let Some(a) = workflow.activity(&task.activity) else {
                continue;
            };
            if a.next.contains_key(ERROR) {
                // Its failure was routed on: what follows ran already.
                continue;
            }
            if a.delivery && !r.dry_run {
                self.store.requeue_unreached(run, &a.id, now)?;
            }
            task.state = TaskState::Pending;
            // A new start: a delivery's validity period counts from now.
            task.started_at = None;
            task.waited_past = false;
            self.store.put_task(run, &task)?;
            if !retried.contains(&task.activity) {
                retried.push(task.activity.clone());
            }
        }
        if retried.is_empty() {
            return Err(Refused::NothingToRetry(run_label(run)).into());
        }
        Ok(retried)
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
    /// many. A paused run's timers wait for its resume.
    pub fn fire_due(&self) -> anyhow::Result<usize> {
        let mut fired = 0;
        for (due, run, task) in self.store.due_timers(self.clock.now_ms())? {
            if self.store.control(run)? != Control::Active {
                continue;
            }
            self.store.fire_timer(due, run, task)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// A message of delivery `activity` of `run`, built now for one of the
    /// recipients it received, as it would leave: nothing is sent or
    /// logged. `None` for an activity that is no delivery, not reached, or
    /// whose first recipients would get no message.
    pub fn sample(&self, run: u64, activity: &str) -> anyhow::Result<Option<serde_json::Value>> {
        let r = self.store.run(run)?;
        let workflow: Workflow =
            serde_json::from_value(r.workflow.clone()).context("stored workflow")?;
        let Some(a) = workflow.activity(activity) else {
            return Err(Refused::NoActivity(run_label(run), activity.to_string()).into());
        };
        let Some(task) = self
            .store
            .tasks(run)?
            .into_iter()
            .find(|t| t.activity == activity && !t.inputs.is_empty())
        else {
            return Ok(None);
        };
        if !a.delivery {
            return Ok(None);
        }
        let plugin = self.store.plugin(&a.kind)?;
        let Loaded::Channel(pre) = self.runtime.load(&self.store, &plugin.sha256)? else {
            return Ok(None);
        };
        let store = self.store.pinned_now()?;
        let ctx = self.context(&store, run, a, &plugin, self.clock.now_ms());
        let never = || false;
        let needs = self.delivery_needs(&store, &never);
        crate::deliver::sample(&needs, a, &task, pre, ctx).map_err(anyhow::Error::msg)
    }

    /// Sends signal `name` to `run`, naming records `ids` of `dimension`
    /// (their dense ids, sorted) if given: kept for the whole run, and the
    /// executions waiting for it become pending ([`Executor::drive`] or
    /// the worker carries them on). A cancelled run takes none.
    pub fn signal(
        &self,
        run: u64,
        name: &str,
        ids: Option<(&str, Vec<u64>)>,
    ) -> anyhow::Result<Sent> {
        let r = self.store.run(run)?;
        if let Control::Cancelled { .. } = r.control {
            return Err(Refused::Cancelled(run_label(run)).into());
        }
        // A failed task may be retried and go on to a signal activity.
        let open = self.store.tasks(run)?.iter().any(|t| {
            matches!(
                t.state,
                TaskState::Pending | TaskState::Waiting { .. } | TaskState::Failed { .. }
            )
        });
        if !open {
            return Err(Refused::Finished(run_label(run)).into());
        }
        let ids = match ids {
            Some((dimension, ids)) => Some(SignalIds {
                dimension: dimension.to_string(),
                count: ids.len() as u64,
                population: self.store.write_population(dimension, &ids)?,
            }),
            None => None,
        };
        let _held = self.lock_signalling();
        let waiting: Vec<Task> = self
            .store
            .tasks(run)?
            .into_iter()
            .filter(|t| {
                matches!(t.state, TaskState::Waiting { .. }) && t.signal.as_deref() == Some(name)
            })
            .collect();
        let record = SignalRecord {
            seq: 0,
            name: name.to_string(),
            at: self.clock.now_ms(),
            ids,
        };
        let kept = self.store.add_signal(run, record, &waiting)?;
        tracing::info!(run = %run_label(run), signal = name, woken = waiting.len(), "signal");
        Ok(Sent {
            run: run_label(run),
            name: name.to_string(),
            seq: kept.seq,
            ids: kept.ids.map(|i| i.count),
            woken: waiting.len(),
        })
    }

    fn lock_signalling(&self) -> std::sync::MutexGuard<'_, ()> {
        self.signalling.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs with a pending task, not paused or cancelled.
    pub fn runs_with_pending(&self) -> anyhow::Result<Vec<u64>> {
        let mut runs = self.store.runs_with_pending()?;
        runs.retain(|r| matches!(self.store.control(*r), Ok(Control::Active)));
        Ok(runs)
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
            Err(e) => return self.fail(run, activity, task, e.to_string()),
        };
        // A dry run's task carries the instant the waits before it reached.
        let now = task.clock.unwrap_or_else(|| self.clock.now_ms());
        if task.started_at.is_none() || task.component.as_deref() != Some(&plugin.sha256) {
            task.started_at.get_or_insert(now);
            task.component = Some(plugin.sha256.clone());
            self.store.put_task(run.id, &task)?;
        }
        tracing::info!(run = %run_label(run.id), activity = %activity.id, plugin = %plugin.name, "executing");
        // One version of the audience for the whole execution.
        let store = self.store.pinned_now()?;
        let ctx = self.context(&store, run.id, activity, &plugin, now);
        let loaded = match self.runtime.load(&self.store, &plugin.sha256) {
            Ok(l) => l,
            Err(e) => return self.fail(run, activity, task, e.to_string()),
        };
        let stop = || self.halted(run.id);
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
                let needs = self.delivery_needs(&store, &stop);
                let limit = run.preview_messages;
                let r = crate::deliver::preview(&needs, activity, &task, pre, ctx, limit);
                r.map(|(preview, outputs)| {
                    task.preview = Some(preview);
                    Step::Done(outputs)
                })
            }
            Loaded::Channel(pre) => {
                let needs = self.delivery_needs(&store, &stop);
                let r = crate::deliver::deliver(&needs, run.id, activity, &task, pre, ctx);
                r.and_then(|d| {
                    task.delivery = Some(d.counts);
                    Ok(match d.wake_at {
                        _ if d.stopped => Step::Stopped,
                        // Messages are retrying: wait for the earliest on a
                        // persisted timer; `done` is taken once all are final.
                        Some(t) => Step::Wait(t),
                        None => {
                            self.unreached_only(run.id, &activity.id)?;
                            Step::Done(d.outputs)
                        }
                    })
                })
            }
        };
        task.elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            // Left pending, its counts kept: resumed by the next process,
            // or on the operator's resume.
            Ok(Step::Stopped) => self.store.put_task(run.id, &task)?,
            Ok(Step::Done(outputs)) => {
                let (next, joins) = self.successors(run, workflow, activity, &task, &outputs)?;
                task.state = TaskState::Done { outputs };
                task.signal = None;
                self.store.complete_task(run.id, &task, &next, &joins)?;
            }
            Ok(Step::Release(outputs, until)) => {
                let next = self.parts(workflow, activity, &task, &outputs)?;
                for (transition, out) in outputs {
                    task.released.entry(transition).or_default().push(out);
                }
                task.released_at = Some(now);
                match park(&mut task, until, now, run.dry_run) {
                    Ok(timer) => self.store.release_task(run.id, &task, &next, timer)?,
                    Err(error) => {
                        self.store.complete_task(run.id, &task, &next, &[])?;
                        return self.fail(run, activity, task, error);
                    }
                }
            }
            Ok(Step::Signal { name, until, seen }) => {
                let _held = self.lock_signalling();
                // Sent while the plugin ran: execute again at once.
                if self.store.signals(run.id)?.len() > seen {
                    self.store.put_task(run.id, &task)?;
                    return Ok(false);
                }
                let timer = match until {
                    // No timer: only the signal wakes it.
                    None => {
                        task.waited_past = false;
                        task.state = TaskState::Waiting { until: NO_DEADLINE };
                        Some(NO_DEADLINE)
                    }
                    Some(until) => match park(&mut task, until, now, run.dry_run) {
                        Ok(timer) => timer,
                        Err(error) => return self.fail(run, activity, task, error),
                    },
                };
                match timer {
                    Some(until) => {
                        task.signal = Some(name);
                        self.store.wait_task(run.id, &task, until)?;
                    }
                    None => self.store.put_task(run.id, &task)?,
                }
            }
            Ok(Step::Wait(until)) => match park(&mut task, until, now, run.dry_run) {
                Ok(Some(until)) => self.store.wait_task(run.id, &task, until)?,
                Ok(None) => self.store.put_task(run.id, &task)?,
                Err(error) => return self.fail(run, activity, task, error),
            },
            Err(error) => return self.fail(run, activity, task, error),
        }
        Ok(matches!(task.state, TaskState::Failed { .. }))
    }

    /// What the host knows of a task while its plugin executes.
    fn context(
        &self,
        store: &Store,
        run: u64,
        activity: &Activity,
        plugin: &crate::store::plugins::PluginRecord,
        now: i64,
    ) -> Arc<Context> {
        Arc::new(Context {
            store: Some(store.clone()),
            now_ms: now,
            run,
            activity: activity.id.clone(),
            plugin: plugin.name.clone(),
            accounts: plugin.accounts.clone(),
            outputs: activity.outputs.clone(),
        })
    }

    /// Records a task's failure. Nothing downstream of it starts, unless
    /// its activity has an `error` transition: that is taken with what
    /// arrived at the task. Returns true (it failed).
    fn fail(
        &self,
        run: &Run,
        activity: &Activity,
        mut task: Task,
        error: String,
    ) -> anyhow::Result<bool> {
        tracing::warn!(run = %run_label(run.id), activity = %activity.id, "failed: {error}");
        task.state = TaskState::Failed { error };
        let Some(targets) = activity.next.get(ERROR) else {
            self.store.put_task(run.id, &task)?;
            return Ok(true);
        };
        let source = format!("{}.{ERROR}", activity.id);
        let mut arrivals: Vec<InputRef> = task
            .inputs
            .iter()
            .map(|i| InputRef {
                source: source.clone(),
                ..i.clone()
            })
            .collect();
        if arrivals.is_empty() {
            // A start activity received nothing: nothing is passed on.
            arrivals.push(InputRef {
                source: source.clone(),
                population: self.store.write_population("", &[])?,
                count: 0,
            });
        }
        let mut next = Vec::new();
        for target in targets {
            for input in &arrivals {
                let mut t = new_task(&self.store, target, vec![input.clone()])?;
                t.clock = task.clock;
                next.push(t);
            }
        }
        self.store.complete_task(run.id, &task, &next, &[])?;
        Ok(true)
    }

    /// Fails a delivery whose every failed message never reached the
    /// provider while none was sent: the cause is the host's or the
    /// operator's (a grant, a secret, a certificate, a connection), not
    /// the messages', and the branch stops until it is fixed and retried.
    fn unreached_only(&self, run: u64, activity: &str) -> Result<(), String> {
        let v = self
            .store
            .verdicts(run, activity)
            .map_err(|e| e.to_string())?;
        match v.first_unreached {
            Some((cause, reason)) if v.sent == 0 && v.failed == 0 => Err(format!(
                "every message failed before reaching the provider ({} message(s), cause \
                 {cause}: {reason}); fix that, then `crosscast run retry {}`",
                v.unreached,
                run_label(run)
            )),
            _ => Ok(()),
        }
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
                let whole = match is_join {
                    true => self.whole(task, transition, outputs.get(transition))?,
                    false => outputs.get(transition).cloned(),
                };
                let input = match whole.as_ref() {
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

    /// The tasks a part passed on (`release-until`) starts: each target
    /// executes on the part, as on any arriving population. A join waits
    /// for the whole: it gets every part at once when the task is done.
    fn parts(
        &self,
        workflow: &Workflow,
        activity: &Activity,
        task: &Task,
        outputs: &BTreeMap<String, OutputRef>,
    ) -> anyhow::Result<Vec<Task>> {
        let mut next = Vec::new();
        for (transition, targets) in &activity.next {
            let Some(out) = outputs.get(transition) else {
                continue;
            };
            for target in targets {
                if workflow.activity(target).is_some_and(|a| a.join) {
                    continue;
                }
                let input = InputRef {
                    source: format!("{}.{transition}", activity.id),
                    population: out.population,
                    count: out.count,
                };
                let mut t = new_task(&self.store, target, vec![input])?;
                t.clock = task.clock;
                next.push(t);
            }
        }
        Ok(next)
    }

    /// What left a task on `transition` over all its parts and `last`, as
    /// one population (what a join receives); `last` alone when the task
    /// passed nothing on in parts.
    fn whole(
        &self,
        task: &Task,
        transition: &str,
        last: Option<&OutputRef>,
    ) -> anyhow::Result<Option<OutputRef>> {
        let Some(parts) = task.released.get(transition) else {
            return Ok(last.cloned());
        };
        let mut ids = Vec::new();
        let mut dimension = String::new();
        for part in parts.iter().chain(last) {
            let meta = self.store.population_meta(part.population)?;
            dimension = meta.dimension;
            for b in 0..meta.blocks {
                ids.extend(self.store.population_block(part.population, b)?);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(Some(OutputRef {
            population: self.store.write_population(&dimension, &ids)?,
            count: ids.len() as u64,
        }))
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
        pre: ActivityPre,
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
        let stored = self.store.signals(run.id).map_err(|e| e.to_string())?;
        let seen = stored.len();
        let mut signals = Vec::with_capacity(seen);
        for s in stored {
            let ids = match s.ids {
                Some(ids) => {
                    let meta = self
                        .store
                        .population_meta(ids.population)
                        .map_err(|e| e.to_string())?;
                    let cursor =
                        Cursor::stored(meta.dimension, ids.population, meta.count, meta.blocks);
                    Some(
                        st.data_mut()
                            .table
                            .push(cursor)
                            .map_err(|e| e.to_string())?,
                    )
                }
                None => None,
            };
            signals.push(wit::Signal {
                name: s.name,
                at: s.at,
                ids,
            });
        }
        let arg = wit::Task {
            run_id: run.id.to_string(),
            activity_id: activity.id.clone(),
            config: activity.config.to_string(),
            started_at: task.started_at.unwrap_or(0),
            inputs,
            released_at: task.released_at,
            signals,
        };
        let outcome = instance
            .execute(&mut st, arg)
            .map_err(|e| crash(e, st.data()))?;
        // Both directions: `execute` itself and every call the guest made.
        let calls = st.data().host_calls + 1;
        let release = match outcome {
            Err(message) => return Err(format!("plugin `{plugin}` reported: {message}")),
            Ok(wit::Outcome::WaitUntil(t)) => return Ok((Step::Wait(t), calls)),
            Ok(wit::Outcome::WaitForSignal(w)) => {
                let step = Step::Signal {
                    name: w.name,
                    until: w.until,
                    seen,
                };
                return Ok((step, calls));
            }
            Ok(wit::Outcome::ReleaseUntil(t)) => Some(t),
            Ok(wit::Outcome::Done) => None,
        };
        {
            {
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
                match release {
                    Some(until) => Ok((Step::Release(outputs, until), calls)),
                    None => Ok((Step::Done(outputs), calls)),
                }
            }
        }
    }
}

/// The transition the host takes when an activity fails, if the workflow
/// gives it one.
pub const ERROR: &str = "error";

/// Join activities and what has arrived at them.
type Joins = Vec<(String, JoinState)>;

/// How an execution ended.
pub(crate) enum Step {
    /// Finished with these outputs.
    Done(BTreeMap<String, OutputRef>),
    /// Waiting until this instant.
    Wait(i64),
    /// Passed these outputs on; the rest waits until this instant.
    Release(BTreeMap<String, OutputRef>, i64),
    /// Waiting for a signal, or until an instant.
    Signal {
        /// The signal's name.
        name: String,
        /// The deadline, if any.
        until: Option<i64>,
        /// How many signals of the run the plugin was given.
        seen: usize,
    },
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
        signal: None,
        released_at: None,
        released: BTreeMap::new(),
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

/// Applies to `task`, which asked at `now` to wait until `until`, what
/// [`wait`] decides: `Ok(Some(t))` it parks on a timer at `t` (its state
/// set to waiting); `Ok(None)` it stays pending, executed again at once or,
/// in a dry run, on its own clock moved to `until`; `Err` the reason the
/// wait is refused.
fn park(task: &mut Task, until: i64, now: i64, dry_run: bool) -> Result<Option<i64>, String> {
    match wait(until, now, task.waited_past) {
        Wait::Refused(error) => Err(error),
        // Still pending: executed again at once, on the same clock.
        Wait::Over => {
            task.waited_past = true;
            Ok(None)
        }
        // Cross the wait on the task's own clock: execute again at `until`
        // instead of parking on a timer.
        Wait::Until(until) if dry_run => {
            task.waited_past = false;
            task.clock = Some(until);
            Ok(None)
        }
        Wait::Until(until) => {
            task.waited_past = false;
            task.state = TaskState::Waiting { until };
            Ok(Some(until))
        }
    }
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
