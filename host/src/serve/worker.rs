//! The server's worker: fires due timers, starts schedules' runs when due,
//! and drives runs with pending tasks, each on a thread of its own, up to a
//! bound, so a run stuck in a slow plugin or a slow relay never holds up
//! another.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cli::App;
use crate::executor::Executor;

/// Starts the worker; it ends, having waited for the runs it drives, once
/// the executor is stopped.
pub fn spawn(
    app: Arc<App>,
    exec: Arc<Executor>,
    parallel: usize,
    poll: Duration,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("worker".into())
        .spawn(move || work(&app, &exec, parallel, poll))
}

fn work(app: &App, exec: &Arc<Executor>, parallel: usize, poll: Duration) {
    let mut drivers: Vec<(u64, JoinHandle<()>)> = Vec::new();
    while !exec.stopping() {
        drivers.retain(|(_, d)| !d.is_finished());
        let due = crate::schedules::due();
        match exec.fire_due() {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} timer(s) due"),
            Err(e) => tracing::error!("cannot fire the timers due: {e:#}"),
        }
        // Schedules' runs due: created here, driven below like any other.
        if let Err(e) = crate::schedules::start_due(app, &due) {
            tracing::error!("cannot start the scheduled runs due: {e:#}");
        }
        drop(due);
        let pending = match exec.runs_with_pending() {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!("cannot list the runs with work: {e:#}");
                Vec::new()
            }
        };
        for run in pending {
            if drivers.len() >= parallel {
                break;
            }
            if drivers.iter().any(|(r, _)| *r == run) {
                continue;
            }
            let exec = exec.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("run-{run}"))
                .spawn(move || drive(&exec, run));
            match spawned {
                Ok(d) => drivers.push((run, d)),
                Err(e) => tracing::error!("cannot start a thread for run {run}: {e}"),
            }
        }
        std::thread::sleep(poll);
    }
    for (_, d) in drivers {
        let _ = d.join();
    }
}

/// Drives one run unless another thread (a command's `run`) does.
fn drive(exec: &Executor, run: u64) {
    match exec.try_drive(run) {
        None => {}
        Some(Ok((0, _))) => {}
        Some(Ok((executed, 0))) => tracing::info!(run, "{executed} task(s) executed"),
        Some(Ok((executed, failed))) => {
            tracing::warn!(run, "{executed} task(s) executed, {failed} failed")
        }
        Some(Err(e)) => tracing::error!(run, "cannot drive the run: {e:#}"),
    }
}
