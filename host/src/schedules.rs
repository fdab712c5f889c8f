//! Schedules at work: adding one (a workflow with `[schedule]`, validated
//! as `run` would) and starting the runs that are due, which `crosscast
//! serve` does on each pass of its worker and as soon as its virtual clock
//! moves.
//!
//! Occurrences missed while no server ran (or crossed by one move of the
//! virtual clock) start one run, not one each: the next is then counted
//! from now. A schedule that does not overlap its runs starts none while
//! its previous run is still going (running, waiting or paused), and
//! counts the occurrence as skipped.

use anyhow::bail;
use serde::Serialize;

use crate::cli::App;
use crate::clock::format_ms;
use crate::executor::RunKind;
use crate::store::Store;
use crate::store::runs::{Control, TaskState, run_label};
use crate::store::schedules::ScheduleRecord;
use crate::workflow::Workflow;

/// A schedule as `schedule list --json` and the API show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// Its number.
    pub id: u64,
    /// The workflow's name.
    pub workflow: String,
    /// The file it was added from.
    pub file: String,
    /// The cron expression.
    pub cron: String,
    /// The IANA time zone its times of day are in.
    pub timezone: String,
    /// No run before (RFC 3339).
    pub start: Option<String>,
    /// No run after (RFC 3339).
    pub end: Option<String>,
    /// Whether a run may start while the previous one is still going.
    pub overlap: bool,
    /// When the next run is due (RFC 3339); none once past the end.
    pub next: Option<String>,
    /// The runs it started, oldest first (`7`).
    pub runs: Vec<String>,
    /// Runs not started because the previous one was still going.
    pub skipped: u64,
    /// Why the last run due did not start.
    pub last_error: Option<String>,
}

impl ScheduleView {
    /// The view of a kept schedule.
    pub fn of(s: &ScheduleRecord) -> ScheduleView {
        ScheduleView {
            id: s.id,
            workflow: s.workflow.clone(),
            file: s.file.clone(),
            cron: s.schedule.cron.clone(),
            timezone: s.schedule.timezone.clone(),
            start: s.schedule.start_ms.map(format_ms),
            end: s.schedule.end_ms.map(format_ms),
            overlap: s.schedule.overlap,
            next: s.next_at.map(format_ms),
            runs: s.runs.iter().map(|r| run_label(*r)).collect(),
            skipped: s.skipped,
            last_error: s.last_error.clone(),
        }
    }
}

/// Keeps `wf` (validated from `source`, read from `file`) as a schedule;
/// its first run is due at its next occurrence from now.
pub fn add(app: &App, file: &str, source: String, wf: &Workflow) -> anyhow::Result<ScheduleRecord> {
    let Some(schedule) = wf.schedule.clone() else {
        bail!(
            "{file} has no [schedule]: add one (cron = \"0 9 * * MON\", timezone = \"Europe/Paris\"), \
             or start it once with `crosscast run {file}`"
        );
    };
    let now = app.clock.now_ms();
    let mut record = ScheduleRecord {
        id: 0,
        workflow: wf.name.clone(),
        file: file.to_string(),
        source,
        next_at: schedule.next_after(now),
        schedule,
        runs: Vec::new(),
        skipped: 0,
        last_error: None,
        created_at: now,
    };
    record.id = app.store.add_schedule(record.clone())?;
    Ok(record)
}

/// One look at what is due at a time, in this process.
static DUE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held while timers are fired and schedules' runs started: the worker's
/// pass, or a move of the clock with all it makes due (so the move counts
/// what it started, and an occurrence starts one run).
pub type Due = std::sync::MutexGuard<'static, ()>;

/// Takes the turn to look at what is due.
pub fn due() -> Due {
    DUE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the runs due now; the runs started. The server's worker drives
/// them.
pub fn start_due(app: &App, _held: &Due) -> anyhow::Result<Vec<u64>> {
    let now = app.clock.now_ms();
    let mut started = Vec::new();
    for mut s in app.store.schedules()? {
        let Some(due) = s.next_at.filter(|due| *due <= now) else {
            continue;
        };
        s.next_at = s.schedule.next_after(now);
        let previous = s.runs.last().copied();
        let still_going = match previous {
            Some(run) => going(&app.store, run)?,
            None => false,
        };
        if still_going && !s.schedule.overlap {
            s.skipped += 1;
            tracing::info!(
                schedule = s.id,
                "run due at {} not started: run {} is still going (overlap = false)",
                format_ms(due),
                run_label(previous.unwrap_or_default())
            );
        } else {
            match app.validate_bytes(&s.file, s.source.clone().into_bytes())? {
                Ok((wf, _)) => {
                    let exec = app.executor()?;
                    let run = exec.create_for(&wf, &s.file, RunKind::Real, Some(s.id))?;
                    tracing::info!(
                        schedule = s.id,
                        run = %run_label(run),
                        "run due at {} started",
                        format_ms(due)
                    );
                    s.runs.push(run);
                    s.last_error = None;
                    started.push(run);
                }
                Err(diagnostics) => {
                    let error = diagnostics.join("; ");
                    tracing::warn!(
                        schedule = s.id,
                        "run due at {} not started: {error}",
                        format_ms(due)
                    );
                    s.last_error = Some(error);
                }
            }
        }
        app.store.put_schedule(&s)?;
    }
    Ok(started)
}

/// A run still going: not cancelled, with a task pending or waiting.
fn going(store: &Store, run: u64) -> anyhow::Result<bool> {
    let r = match store.run(run) {
        Ok(r) => r,
        // A run deleted since is not going.
        Err(crate::store::StoreError::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if matches!(r.control, Control::Cancelled { .. }) {
        return Ok(false);
    }
    Ok(store
        .tasks(run)?
        .iter()
        .any(|t| matches!(t.state, TaskState::Pending | TaskState::Waiting { .. })))
}
