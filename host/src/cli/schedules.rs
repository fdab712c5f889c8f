//! `crosscast schedule`: workflows whose runs `crosscast serve` starts when
//! their `[schedule]` says.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;

use super::App;
use super::io::{Io, note, out};
use crate::schedules::ScheduleView;

/// Schedule commands.
#[derive(Subcommand, Debug, serde::Serialize, serde::Deserialize)]
pub enum ScheduleCommand {
    /// Keep a workflow with a `[schedule]`: `crosscast serve` starts its
    /// runs when due. Validated now, and again for each run.
    Add {
        /// The workflow file.
        file: PathBuf,
        /// The schedule as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The schedules: when each next starts a run, the runs it started.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a schedule: no run starts from it any more (its runs go on).
    Remove {
        /// Its number.
        id: u64,
    },
}

/// Carries out a schedule command; the exit code.
pub(super) fn execute(app: &App, io: &mut Io, command: ScheduleCommand) -> anyhow::Result<u8> {
    match command {
        ScheduleCommand::Add { file, json } => {
            let name = file.display().to_string();
            let bytes =
                std::fs::read(&file).map_err(|e| anyhow::anyhow!("cannot read {name}: {e}"))?;
            let Some(wf) =
                super::execute::validated(io, app.validate_bytes(&name, bytes.clone())?)?
            else {
                return Ok(2);
            };
            // Valid, so UTF-8.
            let source = String::from_utf8_lossy(&bytes).into_owned();
            let record = crate::schedules::add(app, &name, source, &wf)?;
            let view = ScheduleView::of(&record);
            if json {
                out!(io, "{}", serde_json::to_string_pretty(&view)?);
            } else {
                let next = view.next.as_deref().unwrap_or("never (past its end)");
                out!(
                    io,
                    "schedule {}: {} ({} in {}), next run {next}",
                    view.id,
                    view.workflow,
                    view.cron,
                    view.timezone
                );
                note!(
                    io,
                    "runs start while `crosscast serve` runs; occurrences missed while it does not \
                     start one run when it starts"
                );
            }
        }
        ScheduleCommand::List { json } => {
            let views: Vec<ScheduleView> = app
                .store
                .schedules()?
                .iter()
                .map(ScheduleView::of)
                .collect();
            if json {
                out!(io, "{}", serde_json::to_string_pretty(&views)?);
                return Ok(0);
            }
            out!(
                io,
                "{:<4} {:<20} {:<18} {:<18} {:<21} {:<6} SKIPPED",
                "ID",
                "WORKFLOW",
                "CRON",
                "TIMEZONE",
                "NEXT",
                "RUNS"
            );
            for v in views {
                out!(
                    io,
                    "{:<4} {:<20} {:<18} {:<18} {:<21} {:<6} {}",
                    v.id,
                    v.workflow,
                    v.cron,
                    v.timezone,
                    v.next.as_deref().unwrap_or("ended"),
                    v.runs.len(),
                    v.skipped
                );
                if let Some(e) = v.last_error {
                    out!(io, "     last run due did not start: {e}");
                }
            }
        }
        ScheduleCommand::Remove { id } => {
            let gone = app.store.remove_schedule(id)?;
            out!(
                io,
                "schedule {id} removed ({}): no run starts from it any more",
                gone.workflow
            );
        }
    }
    Ok(0)
}
