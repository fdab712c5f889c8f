//! Query: selects the records of one dimension that match a filter.
//!
//! Config: `dimension` (e.g. `subscription`) and an optional `filter`; all
//! records of the dimension when it is absent. Emits on `done`.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    dimension: String,
    #[serde(default)]
    filter: Option<String>,
}

fn load(json: &str) -> Result<(Config, Option<Filter>), Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    let filter = match &cfg.filter {
        Some(src) => Some(config::filter("filter", src).map_err(|e| vec![e])?),
        None => None,
    };
    Ok((cfg, filter))
}

struct Query;

impl Activity for Query {
    fn describe() -> Descriptor {
        Descriptor {
            name: "query".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Selects the records of a dimension that match a filter".into(),
            min_inputs: 0,
            max_inputs: 0,
        }
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        load(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let (cfg, filter) = load(&task.config).map_err(|es| es[0].to_string())?;
        let population = scan(&cfg.dimension)?;
        let paths = filter.as_ref().map(|f| f.paths()).unwrap_or_default();
        for_each_batch(&population, |ids| {
            let Some(filter) = &filter else {
                return emit("done", &cfg.dimension, ids);
            };
            let columns = fetch(&cfg.dimension, ids, &paths)?;
            let keep = filter
                .evaluate(&columns, ids.len())
                .map_err(|e| e.to_string())?;
            let selected: Vec<u64> = ids
                .iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|(id, _)| *id)
                .collect();
            emit("done", &cfg.dimension, &selected)
        })?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Query);
