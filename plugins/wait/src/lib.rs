//! Wait: holds each arriving population for a duration of the run's clock.
//!
//! Config: `duration` (`7d`, `36h`, `90min`). The plugin never sleeps: it
//! asks the host to execute it again at `started-at + duration`, and the host
//! persists that timer, so the wait survives restarts.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    duration: String,
}

fn duration_ms(json: &str) -> Result<i64, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    let d = humantime::parse_duration(&cfg.duration).map_err(|e| {
        vec![ConfigError::new(
            "duration",
            format!(
                "`{}` is not a duration ({e}); write e.g. 7d, 36h, 90min",
                cfg.duration
            ),
        )]
    })?;
    i64::try_from(d.as_millis()).map_err(|_| vec![ConfigError::new("duration", "too long")])
}

struct Wait;

impl Activity for Wait {
    fn describe() -> Descriptor {
        Descriptor::new(
            "wait",
            env!("CARGO_PKG_VERSION"),
            "Holds a population for a duration, durably",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        duration_ms(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let wait = duration_ms(&task.config).map_err(|es| es[0].to_string())?;
        let due = task.started_at.saturating_add(wait);
        if now_ms() < due {
            return Ok(Outcome::WaitUntil(due));
        }
        let mut out = Outputs::new();
        for input in &task.inputs {
            let dimension = input.population.dimension();
            // Announced even when empty: the transition is taken either way.
            out.emit("done", &dimension, &[])?;
            for_each_batch(&input.population, |ids| out.emit("done", &dimension, ids))?;
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Wait);
