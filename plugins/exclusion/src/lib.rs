//! Exclusion: the records of one population that are in none of the others.
//!
//! A join: it runs when a population has arrived on each incoming
//! transition. Config: `keep`, the transition whose records are kept, as
//! `activity.transition` (e.g. `"query.done"`); the other inputs are
//! subtracted. Emits on `done`.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::select::IdSet;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    keep: String,
}

fn load(json: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    match cfg.keep.split_once('.') {
        Some((a, t)) if !a.is_empty() && !t.is_empty() => Ok(cfg),
        _ => Err(vec![ConfigError::new(
            "keep",
            format!(
                "`{}` is not a transition: write activity.transition, e.g. \"query.done\"",
                cfg.keep
            ),
        )]),
    }
}

struct Exclusion;

impl Activity for Exclusion {
    fn describe() -> Descriptor {
        Descriptor::new(
            "exclusion",
            env!("CARGO_PKG_VERSION"),
            "Joins populations: the kept input minus every other input",
        )
        .inputs(2, 16)
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        load(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let cfg = load(&task.config).map_err(|es| es[0].to_string())?;
        let sources: Vec<&str> = task.inputs.iter().map(|i| i.source.as_str()).collect();
        let main = task
            .inputs
            .iter()
            .find(|i| i.source == cfg.keep)
            .ok_or_else(|| {
                format!(
                    "no input arrives from `{}` (inputs: {})",
                    cfg.keep,
                    sources.join(", ")
                )
            })?;
        let dimension = common_dimension(&task.inputs)?.unwrap_or_default();
        let mut out = Outputs::new();
        if main.population.count() == 0 {
            if !dimension.is_empty() {
                out.emit("done", &dimension, &[])?;
            }
            return out.finish().map(|_| Outcome::Done);
        }
        let mut excluded = IdSet::new();
        for input in task.inputs.iter().filter(|i| i.source != cfg.keep) {
            for_each_batch(&input.population, |ids| {
                ids.iter().for_each(|&id| excluded.insert(id));
                Ok(())
            })?;
        }
        out.emit("done", &dimension, &[])?;
        for_each_batch(&main.population, |ids| {
            let left: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| !excluded.contains(*id))
                .collect();
            out.emit("done", &dimension, &left)
        })?;
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Exclusion);
