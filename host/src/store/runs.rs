//! Runs, their tasks (one execution of an activity on one arriving
//! population) and the timers of waiting tasks.
//!
//! Trees: `runs` (run → [`Run`]), `tasks` (run, task → [`Task`]) and
//! `timers` (due instant, run, task → nothing), ordered by due instant so the
//! worker finds what is due with one range scan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{Result, Store, StoreError, json_decode, json_encode};

/// A run of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Its number.
    pub id: u64,
    /// The workflow's name.
    pub workflow_name: String,
    /// The file it was started from.
    pub workflow_file: String,
    /// The workflow as validated when the run started (JSON), so a run never
    /// changes when the file does.
    pub workflow: serde_json::Value,
    /// When it started, on the run's clock (ms).
    pub created_at: i64,
    /// A dry run: waits are crossed at once on the run's own clock, and
    /// deliveries build and preview their messages without sending.
    #[serde(default)]
    pub dry_run: bool,
    /// A dry run's deliveries list this many messages each (the first
    /// targets: what would be sent, excluded or refused, and why).
    #[serde(default = "one")]
    pub preview_messages: u32,
    /// What the operator said: run, pause or cancel.
    #[serde(default)]
    pub control: Control,
    /// The schedule that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<u64>,
}

fn one() -> u32 {
    1
}

/// What the operator said about a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum Control {
    /// Runs.
    #[default]
    Active,
    /// Paused at this instant: nothing starts, deliveries stop at their next
    /// round, timers wait for the resume.
    Paused {
        /// When (ms).
        at: i64,
    },
    /// Cancelled at this instant: nothing more is sent or started.
    Cancelled {
        /// When (ms).
        at: i64,
    },
}

/// Dry runs are numbered in a sequence of their own, stored above this in
/// the runs tree: `dry-3` is `DRY_RUNS + 3`.
pub const DRY_RUNS: u64 = 1 << 62;

/// A run's name for people and commands: `7`, or `dry-3` for a dry run.
pub fn run_label(id: u64) -> String {
    match id.checked_sub(DRY_RUNS) {
        Some(n) => format!("dry-{n}"),
        None => id.to_string(),
    }
}

/// A run's number within its sequence (what `--json` gives as `run`).
pub fn run_number(id: u64) -> u64 {
    id.checked_sub(DRY_RUNS).unwrap_or(id)
}

/// Reads a run as commands name it: `7`, or `dry-3`.
pub fn parse_run(s: &str) -> std::result::Result<u64, String> {
    let bad = || format!("`{s}` is not a run: a number (7), or dry-N for a dry run (dry-3)");
    let (dry, n) = match s.strip_prefix("dry-") {
        Some(n) => (true, n),
        None => (false, s),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    if n == 0 || n >= DRY_RUNS {
        return Err(bad());
    }
    Ok(if dry { DRY_RUNS + n } else { n })
}

/// A population arriving at a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRef {
    /// `activity.transition` it came from.
    pub source: String,
    /// The stored population.
    pub population: u64,
    /// How many ids.
    pub count: u64,
}

/// A population leaving a task on one transition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputRef {
    /// The stored population.
    pub population: u64,
    /// How many ids.
    pub count: u64,
}

/// Where a task is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// To execute (again, if it was interrupted).
    Pending,
    /// Waiting for its timer.
    Waiting {
        /// Due instant (ms).
        until: i64,
    },
    /// Finished.
    Done {
        /// Transition → population.
        outputs: BTreeMap<String, OutputRef>,
    },
    /// Failed; the message says why.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Cancelled by the operator before it finished.
    Cancelled {
        /// When (ms).
        at: i64,
    },
}

/// Counts of a delivery task's log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Accepted by the provider.
    pub sent: u64,
    /// Failed (hard or after the provider said retry).
    pub failed: u64,
    /// Not sent on purpose (no address...).
    pub excluded: u64,
    /// Already handled by an earlier attempt of the same task.
    pub skipped: u64,
    /// Failed for now, to be sent again (durable retries).
    #[serde(default)]
    pub retrying: u64,
}

/// One execution of an activity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// Its number within the run.
    pub id: u64,
    /// The workflow activity id.
    pub activity: String,
    /// What arrived (empty for a start activity).
    pub inputs: Vec<InputRef>,
    /// Where it is.
    pub state: TaskState,
    /// When it first started executing (stable across resumes).
    pub started_at: Option<i64>,
    /// sha256 of the component that executed it.
    pub component: Option<String>,
    /// For deliveries: what happened to the messages.
    pub delivery: Option<DeliveryCounts>,
    /// Calls across the wasm boundary in its last execution, both ways.
    #[serde(default)]
    pub calls: u64,
    /// Wall time of its last execution, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// A dry run's clock for this task: the instant the waits before it
    /// reached (`None`: the run's clock).
    #[serde(default)]
    pub clock: Option<i64>,
    /// A dry run's delivery preview: counts and one rendered message.
    #[serde(default)]
    pub preview: Option<serde_json::Value>,
    /// Its last execution asked to wait until an instant already past: it
    /// ran again at once, and may not ask that twice in a row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waited_past: bool,
    /// The signal it waits for, while it waits for one (its `until` is
    /// then the deadline, or `signals::NO_DEADLINE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The clock of its last execution that passed part of its population
    /// on (`release-until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<i64>,
    /// The parts passed on so far, per transition, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub released: BTreeMap<String, Vec<OutputRef>>,
}

/// Populations waiting at a join activity, in rounds: the first round takes
/// one population per incoming transition; a second arrival on the same
/// transition starts the next round.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinState {
    /// Rounds not yet complete, oldest first: source → population.
    pub rounds: Vec<std::collections::BTreeMap<String, InputRef>>,
}

impl JoinState {
    /// Adds an arrival; returns the inputs of a round it completes, in the
    /// order of `incoming`.
    pub fn arrive(&mut self, input: InputRef, incoming: &[String]) -> Option<Vec<InputRef>> {
        let i = match self
            .rounds
            .iter()
            .position(|r| !r.contains_key(&input.source))
        {
            Some(i) => i,
            None => {
                self.rounds.push(Default::default());
                self.rounds.len() - 1
            }
        };
        self.rounds[i].insert(input.source.clone(), input);
        if !incoming.iter().all(|s| self.rounds[i].contains_key(s)) {
            return None;
        }
        let mut round = self.rounds.remove(i);
        Some(incoming.iter().filter_map(|s| round.remove(s)).collect())
    }
}

fn join_key(run: u64, activity: &str) -> Vec<u8> {
    let mut k = run.to_be_bytes().to_vec();
    k.extend_from_slice(activity.as_bytes());
    k
}

pub(super) fn task_key(run: u64, task: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&run.to_be_bytes());
    k[8..].copy_from_slice(&task.to_be_bytes());
    k
}

pub(super) fn timer_key(until: i64, run: u64, task: u64) -> [u8; 24] {
    // Offset so negative instants still sort before positive ones.
    let due = (until as u64) ^ (1u64 << 63);
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&due.to_be_bytes());
    k[8..].copy_from_slice(&task_key(run, task));
    k
}

pub(super) fn tx_err(e: sled::transaction::TransactionError<StoreError>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

impl Store {
    /// The next run number: 1, 2, 3... (sled's own ids jump after a restart).
    pub fn next_run_id(&self) -> Result<u64> {
        self.next_in("run_seq")
    }

    /// The next dry run: `dry-1`, `dry-2`... apart from real runs, so dry
    /// runs use up no run numbers.
    pub fn next_dry_run_id(&self) -> Result<u64> {
        Ok(DRY_RUNS + self.next_in("dry_run_seq")?)
    }

    /// The next number of a sequence kept in `meta` (1 first).
    pub(super) fn next_in(&self, sequence: &str) -> Result<u64> {
        let v = self.tree("meta")?.update_and_fetch(sequence, |old| {
            let n = old
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|b| b.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1))
    }

    /// Stores a new run with its first tasks, atomically, and flushes.
    pub fn create_run(&self, run: &Run, tasks: &[Task]) -> Result<()> {
        let runs = self.tree("runs")?;
        let task_tree = self.tree("tasks")?;
        (&runs, &task_tree)
            .transaction(|(r, t)| {
                r.insert(&run.id.to_be_bytes(), json_encode(run))?;
                for task in tasks {
                    t.insert(&task_key(run.id, task.id), json_encode(task))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// A run by number.
    pub fn run(&self, id: u64) -> Result<Run> {
        match self.tree("runs")?.get(id.to_be_bytes())? {
            Some(v) => json_decode("runs", &v),
            None => Err(StoreError::NotFound(format!(
                "run {} does not exist",
                run_label(id)
            ))),
        }
    }

    /// Sets what the operator said about a run; returns the run as it was.
    pub fn set_control(&self, id: u64, control: Control) -> Result<Run> {
        let runs = self.tree("runs")?;
        let before = runs
            .transaction(|r| {
                let Some(v) = r.get(id.to_be_bytes())? else {
                    return Err(ConflictableTransactionError::Abort(StoreError::NotFound(
                        format!("run {} does not exist", run_label(id)),
                    )));
                };
                let mut run: Run =
                    json_decode("runs", &v).map_err(ConflictableTransactionError::Abort)?;
                let before = run.clone();
                run.control = control;
                r.insert(&id.to_be_bytes(), json_encode(&run))?;
                Ok(before)
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(before)
    }

    /// What the operator said about a run (a small read: deliveries ask it
    /// at every round).
    pub fn control(&self, id: u64) -> Result<Control> {
        Ok(self.run(id)?.control)
    }

    /// Cancels the tasks of a run that have not finished, and removes their
    /// timers, atomically.
    pub fn cancel_tasks(&self, run: u64, at: i64) -> Result<usize> {
        let tasks = self.tree("tasks")?;
        let timers = self.tree("timers")?;
        let open: Vec<Task> = self
            .tasks(run)?
            .into_iter()
            .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Waiting { .. }))
            .collect();
        (&tasks, &timers)
            .transaction(|(t, tm)| {
                for task in &open {
                    if let TaskState::Waiting { until } = task.state {
                        tm.remove(&timer_key(until, run, task.id))?;
                    }
                    let mut task = task.clone();
                    task.state = TaskState::Cancelled { at };
                    t.insert(&task_key(run, task.id), json_encode(&task))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(open.len())
    }

    /// Every run, oldest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        self.tree("runs")?
            .iter()
            .values()
            .map(|v| json_decode("runs", &v?))
            .collect()
    }

    /// The tasks of a run, in creation order.
    pub fn tasks(&self, run: u64) -> Result<Vec<Task>> {
        self.tree("tasks")?
            .scan_prefix(run.to_be_bytes())
            .values()
            .map(|v| json_decode("tasks", &v?))
            .collect()
    }

    /// Overwrites one task (e.g. to record when it started) and flushes.
    pub fn put_task(&self, run: u64, task: &Task) -> Result<()> {
        self.tree("tasks")?
            .insert(task_key(run, task.id), json_encode(task))?;
        self.flush()
    }

    /// Records a finished task, the tasks its outputs start and the joins
    /// its outputs arrived at, atomically.
    pub fn complete_task(
        &self,
        run: u64,
        task: &Task,
        next: &[Task],
        joins: &[(String, JoinState)],
    ) -> Result<()> {
        let tasks = self.tree("tasks")?;
        let join_tree = self.tree("joins")?;
        (&tasks, &join_tree)
            .transaction(|(t, j)| {
                t.insert(&task_key(run, task.id), json_encode(task))?;
                for n in next {
                    t.insert(&task_key(run, n.id), json_encode(n))?;
                }
                for (activity, state) in joins {
                    j.insert(join_key(run, activity), json_encode(state))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// What has arrived so far at a join activity of a run.
    pub fn join_state(&self, run: u64, activity: &str) -> Result<JoinState> {
        match self.tree("joins")?.get(join_key(run, activity))? {
            Some(v) => json_decode("joins", &v),
            None => Ok(JoinState::default()),
        }
    }

    /// Puts a task to sleep until `until`, with its timer, atomically.
    pub fn wait_task(&self, run: u64, task: &Task, until: i64) -> Result<()> {
        let tasks = self.tree("tasks")?;
        let timers = self.tree("timers")?;
        (&tasks, &timers)
            .transaction(|(t, tm)| {
                t.insert(&task_key(run, task.id), json_encode(task))?;
                // A wait for a signal alone has no timer: the signal wakes it.
                if until != super::signals::NO_DEADLINE {
                    tm.insert(&timer_key(until, run, task.id), &[])?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// Records a task that passed part of its population on: the task
    /// (waiting on a timer at `timer`, when given) and the tasks the part
    /// starts, atomically.
    pub fn release_task(
        &self,
        run: u64,
        task: &Task,
        next: &[Task],
        timer: Option<i64>,
    ) -> Result<()> {
        let tasks = self.tree("tasks")?;
        let timers = self.tree("timers")?;
        (&tasks, &timers)
            .transaction(|(t, tm)| {
                t.insert(&task_key(run, task.id), json_encode(task))?;
                for n in next {
                    t.insert(&task_key(run, n.id), json_encode(n))?;
                }
                if let Some(until) = timer {
                    tm.insert(&timer_key(until, run, task.id), &[])?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// Timers due at or before `now`: (due, run, task), earliest first.
    pub fn due_timers(&self, now: i64) -> Result<Vec<(i64, u64, u64)>> {
        let end = timer_key(now, u64::MAX, u64::MAX);
        let mut out = Vec::new();
        for kv in self.tree("timers")?.range(..=end.to_vec()) {
            let (k, _) = kv?;
            let due =
                (u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8])) ^ (1u64 << 63)) as i64;
            let run = u64::from_be_bytes(k[8..16].try_into().unwrap_or([0; 8]));
            let task = u64::from_be_bytes(k[16..24].try_into().unwrap_or([0; 8]));
            out.push((due, run, task));
        }
        Ok(out)
    }

    /// The earliest timer, if any.
    pub fn next_timer(&self) -> Result<Option<i64>> {
        Ok(self.tree("timers")?.first()?.map(|(k, _)| {
            (u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8])) ^ (1u64 << 63)) as i64
        }))
    }

    /// Fires a timer: the task becomes pending again and the timer goes, atomically.
    pub fn fire_timer(&self, due: i64, run: u64, task_id: u64) -> Result<()> {
        let tasks = self.tree("tasks")?;
        let timers = self.tree("timers")?;
        (&tasks, &timers)
            .transaction(|(t, tm)| {
                let key = task_key(run, task_id);
                if let Some(v) = t.get(key)? {
                    let mut task: Task =
                        json_decode("tasks", &v).map_err(ConflictableTransactionError::Abort)?;
                    if matches!(task.state, TaskState::Waiting { .. }) {
                        task.state = TaskState::Pending;
                        t.insert(&key, json_encode(&task))?;
                    }
                }
                tm.remove(&timer_key(due, run, task_id))?;
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// Runs that have a pending task.
    pub fn runs_with_pending(&self) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        for kv in self.tree("tasks")?.iter() {
            let (k, v) = kv?;
            let task: Task = json_decode("tasks", &v)?;
            let run = u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8]));
            if task.state == TaskState::Pending && out.last() != Some(&run) {
                out.push(run);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, state: TaskState) -> Task {
        Task {
            id,
            activity: "a".into(),
            inputs: vec![],
            state,
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
        }
    }

    #[test]
    fn timers_fire_in_order_and_only_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_tests(dir.path());
        assert_eq!(store.next_run_id().unwrap(), 1);
        assert_eq!(store.next_run_id().unwrap(), 2);
        let run = Run {
            id: 2,
            workflow_name: "w".into(),
            workflow_file: "w.toml".into(),
            workflow: serde_json::json!({}),
            created_at: 0,
            dry_run: false,
            preview_messages: 1,
            control: Control::Active,
            schedule: None,
        };
        store
            .create_run(
                &run,
                &[task(10, TaskState::Pending), task(11, TaskState::Pending)],
            )
            .unwrap();
        store
            .wait_task(2, &task(10, TaskState::Waiting { until: 5_000 }), 5_000)
            .unwrap();
        store
            .wait_task(2, &task(11, TaskState::Waiting { until: -10 }), -10)
            .unwrap();
        assert_eq!(store.next_timer().unwrap(), Some(-10));
        assert_eq!(store.due_timers(4_999).unwrap(), vec![(-10, 2, 11)]);
        assert_eq!(
            store.due_timers(5_000).unwrap(),
            vec![(-10, 2, 11), (5_000, 2, 10)]
        );
        assert!(store.runs_with_pending().unwrap().is_empty());
        store.fire_timer(-10, 2, 11).unwrap();
        assert_eq!(store.due_timers(5_000).unwrap(), vec![(5_000, 2, 10)]);
        assert_eq!(store.runs_with_pending().unwrap(), vec![2]);
        let states: Vec<TaskState> = store
            .tasks(2)
            .unwrap()
            .into_iter()
            .map(|t| t.state)
            .collect();
        assert_eq!(
            states,
            vec![TaskState::Waiting { until: 5_000 }, TaskState::Pending]
        );
    }

    #[test]
    fn joins_gather_one_population_per_transition_in_rounds() {
        let incoming = vec!["a.done".to_string(), "b.done".to_string()];
        let input = |source: &str, population: u64| InputRef {
            source: source.into(),
            population,
            count: 1,
        };
        let mut j = JoinState::default();
        assert_eq!(j.arrive(input("a.done", 1), &incoming), None);
        // A second arrival on the same transition waits for the next round.
        assert_eq!(j.arrive(input("a.done", 2), &incoming), None);
        assert_eq!(j.rounds.len(), 2);
        let round = j.arrive(input("b.done", 3), &incoming).unwrap();
        assert_eq!(
            round.iter().map(|i| i.population).collect::<Vec<_>>(),
            [1, 3],
            "inputs come in the order of the incoming transitions"
        );
        let round = j.arrive(input("b.done", 4), &incoming).unwrap();
        assert_eq!(
            round.iter().map(|i| i.population).collect::<Vec<_>>(),
            [2, 4]
        );
        assert!(j.rounds.is_empty());
    }
}
