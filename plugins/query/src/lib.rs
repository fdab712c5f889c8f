//! Query: selects the records of one dimension that match a filter.
//!
//! Config: `dimension` (e.g. `subscription`), an optional `filter` (all
//! records when absent) and an optional `limit` (`{ size = 1000 }`,
//! `{ size = "10%", select = "random", seed = 7 }`,
//! `{ size = 50, select = "rank", by = "score", descending = true }`).
//! Emits on `done`.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::select::{Limit, LimitConfig, Selector};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    dimension: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    limit: Option<LimitConfig>,
}

struct Plan {
    dimension: String,
    filter: Option<Filter>,
    limit: Option<Limit>,
}

fn load(json: &str) -> Result<Plan, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    config::reads("dimension", &cfg.dimension);
    let mut errors = Vec::new();
    let filter = match &cfg.filter {
        Some(src) => config::filter("filter", src)
            .map_err(|e| errors.push(e))
            .ok(),
        None => None,
    };
    let limit = match &cfg.limit {
        Some(l) => l.validate("limit").map_err(|es| errors.extend(es)).ok(),
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        dimension: cfg.dimension,
        filter,
        limit,
    })
}

/// Which rows of a batch match the filter (all when there is none).
fn matches(plan: &Plan, columns: &Columns, len: usize, now: i64) -> Result<Vec<bool>, String> {
    match &plan.filter {
        Some(f) => f.evaluate(columns, len, now).map_err(|e| e.to_string()),
        None => Ok(vec![true; len]),
    }
}

struct Query;

impl Activity for Query {
    fn describe() -> Descriptor {
        Descriptor::new(
            "query",
            env!("CARGO_PKG_VERSION"),
            "Selects the records of a dimension that match a filter",
        )
        .inputs(0, 0)
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        load(config)?;
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let plan = load(&task.config).map_err(|es| es[0].to_string())?;
        let now = now_ms();
        let population = scan(&plan.dimension)?;
        let filter_fields = plan
            .filter
            .as_ref()
            .map(|f| f.fields().to_vec())
            .unwrap_or_default();
        let rank_field: Vec<Field> = plan.limit.iter().filter_map(Limit::field).collect();
        let fields = merge_fields([filter_fields.as_slice(), rank_field.as_slice()]);
        let dim = plan.dimension.as_str();
        let mut out = Outputs::new();
        out.emit("done", dim, &[])?;
        let Some(limit) = &plan.limit else {
            for_each_batch_with(&population, &fields, |ids, columns| {
                let keep = matches(&plan, columns, ids.len(), now)?;
                let selected: Vec<u64> = ids
                    .iter()
                    .zip(keep)
                    .filter(|(_, k)| *k)
                    .map(|(id, _)| *id)
                    .collect();
                out.emit("done", dim, &selected)
            })?;
            return out.finish().map(|_| Outcome::Done);
        };
        let candidates = if limit.needs_count() {
            let mut n = 0u64;
            for_each_batch_with(&population, &fields, |ids, columns| {
                n += matches(&plan, columns, ids.len(), now)?
                    .iter()
                    .filter(|m| **m)
                    .count() as u64;
                Ok(())
            })?;
            Some(n)
        } else {
            None
        };
        let mut selector = Selector::new(limit.pick.clone(), limit.keep(candidates));
        let rank_path = limit.field().map(|f| f.path);
        for_each_batch_with(&population, &fields, |ids, columns| {
            let m = matches(&plan, columns, ids.len(), now)?;
            selector.offer(ids, &m, rank_path.as_ref().and_then(|p| columns.get(p)));
            Ok(())
        })?;
        out.emit("done", dim, &selector.finish())?;
        out.finish().map(|_| Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Query);
