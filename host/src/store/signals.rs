//! Signals sent to runs (`crosscast signal RUN NAME`): kept for the whole
//! run, so an activity reached after its signal came still sees it, and
//! handed to every activity execution of the run.
//!
//! Tree: `signals` (run, sequence → [`SignalRecord`]), in the order they
//! came.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::runs::{Task, TaskState, task_key, timer_key, tx_err};
use super::{Result, Store, StoreError, json_decode, json_encode};

const TREE: &str = "signals";

/// The instant a signal wait without a deadline is parked at: no timer is
/// set for it.
pub const NO_DEADLINE: i64 = i64::MAX;

/// Records a signal names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignalIds {
    /// Their dimension.
    pub dimension: String,
    /// The stored population of their ids.
    pub population: u64,
    /// How many.
    pub count: u64,
}

/// A signal as kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignalRecord {
    /// Its number within the run, from 1.
    pub seq: u64,
    /// Its name.
    pub name: String,
    /// When it came, on the run's clock (ms).
    pub at: i64,
    /// The records it names, if any.
    pub ids: Option<SignalIds>,
}

fn key(run: u64, seq: u64) -> [u8; 16] {
    task_key(run, seq)
}

impl Store {
    /// The signals sent to `run`, oldest first.
    pub fn signals(&self, run: u64) -> Result<Vec<SignalRecord>> {
        self.tree(TREE)?
            .scan_prefix(run.to_be_bytes())
            .values()
            .map(|v| json_decode(TREE, &v?))
            .collect()
    }

    /// Keeps a signal for `run` and makes pending, atomically, the tasks
    /// `waiting` names (tasks waiting for it); returns it, numbered.
    pub fn add_signal(
        &self,
        run: u64,
        mut signal: SignalRecord,
        waiting: &[Task],
    ) -> Result<SignalRecord> {
        signal.seq = self.signals(run)?.last().map_or(1, |s| s.seq + 1);
        let signals = self.tree(TREE)?;
        let tasks = self.tree("tasks")?;
        let timers = self.tree("timers")?;
        (&signals, &tasks, &timers)
            .transaction(|(s, t, tm)| {
                s.insert(&key(run, signal.seq), json_encode(&signal))?;
                for task in waiting {
                    let TaskState::Waiting { until } = task.state else {
                        continue;
                    };
                    if until != NO_DEADLINE {
                        tm.remove(&timer_key(until, run, task.id))?;
                    }
                    let mut task = task.clone();
                    task.state = TaskState::Pending;
                    t.insert(&task_key(run, task.id), json_encode(&task))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(())
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(signal)
    }
}
