//! Intersection: the records present in every incoming population.
//!
//! A join: it runs when a population has arrived on each incoming
//! transition. Every input must hold the same dimension; an empty input
//! makes the result empty. Memory: one bitmap per pass (a bit per id).

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::select::IdSet;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

struct Intersection;

impl Activity for Intersection {
    fn describe() -> Descriptor {
        Descriptor::new(
            "intersection",
            env!("CARGO_PKG_VERSION"),
            "Joins populations: the records present in every input",
        )
        .inputs(2, 16)
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        config::parse::<Config>(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let dimension = common_dimension(&task.inputs)?.unwrap_or_default();
        let mut out = Outputs::new();
        if task.inputs.iter().any(|i| i.population.count() == 0) {
            if !dimension.is_empty() {
                out.emit("done", &dimension, &[])?;
            }
            return out.finish().map(|_| Outcome::Done);
        }
        // Keep the smallest input's ids, then narrow by each other input;
        // the last narrowing emits as it goes.
        let mut order: Vec<&Input> = task.inputs.iter().collect();
        order.sort_by_key(|i| i.population.count());
        let mut kept = IdSet::new();
        for_each_batch(&order[0].population, |ids| {
            ids.iter().for_each(|&id| kept.insert(id));
            Ok(())
        })?;
        out.emit("done", &dimension, &[])?;
        let last = order.len() - 1;
        for (n, input) in order.iter().enumerate().skip(1) {
            let mut next = IdSet::new();
            for_each_batch(&input.population, |ids| {
                let both: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|id| kept.contains(*id))
                    .collect();
                if n == last {
                    out.emit("done", &dimension, &both)
                } else {
                    both.iter().for_each(|&id| next.insert(id));
                    Ok(())
                }
            })?;
            kept = next;
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Intersection);
