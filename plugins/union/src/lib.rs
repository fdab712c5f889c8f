//! Union: the records of every incoming population, each once.
//!
//! A join: it runs when a population has arrived on each incoming
//! transition. Every input must hold the same dimension. Emits on `done`.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

struct Union;

impl Activity for Union {
    fn describe() -> Descriptor {
        Descriptor::new(
            "union",
            env!("CARGO_PKG_VERSION"),
            "Joins populations: every record of any input, once",
        )
        .inputs(1, 16)
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        config::parse::<Config>(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let Some(dimension) = common_dimension(&task.inputs)? else {
            // Every input arrived empty: the result is empty too.
            return Ok(Outcome::Done);
        };
        let mut out = Outputs::new();
        out.emit("done", &dimension, &[])?;
        for input in task.inputs.iter().filter(|i| i.population.count() > 0) {
            // The host deduplicates what is emitted.
            for_each_batch(&input.population, |ids| out.emit("done", &dimension, ids))?;
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Union);
