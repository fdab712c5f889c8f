//! Split: carves one population into ordered subsets, first match wins.
//!
//! Config: `subsets = [{ name, filter }]`, evaluated in order, each on what
//! the earlier ones left; optional `complement` names a transition for what no
//! subset took. One outgoing transition per subset (plus the complement).

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    subsets: Vec<Subset>,
    #[serde(default)]
    complement: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subset {
    name: String,
    filter: String,
}

struct Plan {
    subsets: Vec<(String, Filter)>,
    complement: Option<String>,
    paths: Vec<String>,
}

fn load(json: &str) -> Result<Plan, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    let mut errors = Vec::new();
    let mut subsets = Vec::new();
    if cfg.subsets.is_empty() {
        errors.push(ConfigError::new("subsets", "at least one subset is needed"));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, s) in cfg.subsets.iter().enumerate() {
        if names.contains(&s.name.as_str()) || cfg.complement.as_deref() == Some(s.name.as_str()) {
            errors.push(ConfigError::new(
                format!("subsets.{i}.name"),
                format!("`{}` is used twice", s.name),
            ));
        }
        names.push(&s.name);
        match config::filter(&format!("subsets.{i}.filter"), &s.filter) {
            Ok(f) => subsets.push((s.name.clone(), f)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut paths = Vec::new();
    for (_, f) in &subsets {
        for p in f.paths() {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    Ok(Plan {
        subsets,
        complement: cfg.complement,
        paths,
    })
}

struct Split;

impl Activity for Split {
    fn describe() -> Descriptor {
        Descriptor {
            name: "split".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Splits a population into ordered subsets (first match wins)".into(),
            min_inputs: 1,
            max_inputs: 1,
        }
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        let plan = load(config)?;
        let mut outs: Vec<String> = plan.subsets.into_iter().map(|(n, _)| n).collect();
        outs.extend(plan.complement);
        Ok(outs)
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let plan = load(&task.config).map_err(|es| es[0].to_string())?;
        for input in &task.inputs {
            let dimension = input.population.dimension();
            for_each_batch(&input.population, |ids| {
                let columns = fetch(&dimension, ids, &plan.paths)?;
                let mut left = vec![true; ids.len()];
                for (name, filter) in &plan.subsets {
                    let matched = filter
                        .evaluate(&columns, ids.len())
                        .map_err(|e| e.to_string())?;
                    let mut taken = Vec::new();
                    for (i, m) in matched.into_iter().enumerate() {
                        if m && left[i] {
                            left[i] = false;
                            taken.push(ids[i]);
                        }
                    }
                    emit(name, &dimension, &taken)?;
                }
                if let Some(name) = &plan.complement {
                    let rest: Vec<u64> = ids
                        .iter()
                        .zip(&left)
                        .filter(|(_, l)| **l)
                        .map(|(id, _)| *id)
                        .collect();
                    emit(name, &dimension, &rest)?;
                }
                Ok(())
            })?;
        }
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Split);
