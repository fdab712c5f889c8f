//! Schedules: workflows whose runs `crosscast serve` starts when due
//! (`crosscast schedule add FILE`). The workflow's text is kept and
//! validated again for each run, so a run is checked against the plugins
//! and audience of its own day, as `crosscast run FILE` would be.

use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, json_decode, json_encode};
use crate::workflow::schedule::Schedule;

const TREE: &str = "schedules";

/// A schedule as kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Its number.
    pub id: u64,
    /// The workflow's name.
    pub workflow: String,
    /// The file it was added from.
    pub file: String,
    /// The workflow's text.
    pub source: String,
    /// When its runs are due.
    pub schedule: Schedule,
    /// When the next run is due (ms); `None` once past the schedule's end.
    pub next_at: Option<i64>,
    /// The runs it started, oldest first.
    #[serde(default)]
    pub runs: Vec<u64>,
    /// Times a run was due while the previous one was still going (and the
    /// schedule does not overlap runs): no run started.
    #[serde(default)]
    pub skipped: u64,
    /// Why the last run due did not start (the workflow no longer valid).
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was added (ms, on the clock runs are on).
    pub created_at: i64,
}

impl Store {
    /// Keeps a new schedule; its number.
    pub fn add_schedule(&self, mut record: ScheduleRecord) -> Result<u64> {
        record.id = self.next_in("schedule_seq")?;
        self.put_schedule(&record)?;
        Ok(record.id)
    }

    /// Replaces a schedule's record.
    pub fn put_schedule(&self, record: &ScheduleRecord) -> Result<()> {
        self.tree(TREE)?
            .insert(record.id.to_be_bytes(), json_encode(record))?;
        self.flush()?;
        Ok(())
    }

    /// The schedules, oldest first.
    pub fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.tree(TREE)?
            .iter()
            .map(|kv| json_decode(TREE, &kv?.1))
            .collect()
    }

    /// Removes schedule `id`; what it was.
    pub fn remove_schedule(&self, id: u64) -> Result<ScheduleRecord> {
        let gone = self.tree(TREE)?.remove(id.to_be_bytes())?;
        self.flush()?;
        match gone {
            Some(bytes) => json_decode(TREE, &bytes),
            None => Err(StoreError::NotFound(format!(
                "schedule {id} does not exist"
            ))),
        }
    }
}
