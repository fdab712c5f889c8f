//! Split: carves one population into ordered subsets.
//!
//! Config:
//! - `subsets = [{ name, filter?, limit?, skip_empty? }]`, evaluated in order;
//!   each takes what matches its filter (everything when it has none) among
//!   what the earlier subsets left — first match wins — unless `overlap =
//!   true`, when each subset sees the whole population. A `limit` keeps a
//!   count or a percentage of the subset (first ids, a seeded random sample,
//!   or ranked by an attribute); records a limit leaves out stay available to
//!   later subsets and the complement.
//! - `complement`: a transition for what no subset took.
//! - `skip_empty`: an empty subset's transition is not taken (nothing
//!   downstream runs); per subset, or for all here (the complement too).
//!
//! Memory stays bounded: each limited subset costs one pass (two for a
//! percentage) over the population with a heap of the kept records, and the
//! ids kept so far are a bitmap.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::select::{IdSet, Limit, LimitConfig, Selector};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    subsets: Vec<SubsetConfig>,
    #[serde(default)]
    complement: Option<String>,
    #[serde(default)]
    overlap: bool,
    #[serde(default)]
    skip_empty: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubsetConfig {
    name: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    limit: Option<LimitConfig>,
    #[serde(default)]
    skip_empty: Option<bool>,
}

struct Subset {
    name: String,
    filter: Option<Filter>,
    limit: Option<Limit>,
    skip_empty: bool,
}

struct Plan {
    subsets: Vec<Subset>,
    complement: Option<String>,
    overlap: bool,
    skip_empty: bool,
    fields: Vec<Field>,
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
        let filter = match &s.filter {
            Some(src) => config::filter(&format!("subsets.{i}.filter"), src)
                .map_err(|e| errors.push(e))
                .ok(),
            None => None,
        };
        let limit = match &s.limit {
            Some(l) => l
                .validate(&format!("subsets.{i}.limit"))
                .map_err(|es| errors.extend(es))
                .ok(),
            None => None,
        };
        subsets.push(Subset {
            name: s.name.clone(),
            filter,
            limit,
            skip_empty: s.skip_empty.unwrap_or(cfg.skip_empty),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let lists: Vec<Vec<Field>> = subsets
        .iter()
        .map(|s| {
            let mut f: Vec<Field> = s.filter.iter().flat_map(|f| f.fields().to_vec()).collect();
            f.extend(s.limit.as_ref().and_then(Limit::field));
            f
        })
        .collect();
    let fields = merge_fields(lists.iter().map(Vec::as_slice));
    Ok(Plan {
        subsets,
        complement: cfg.complement,
        overlap: cfg.overlap,
        skip_empty: cfg.skip_empty,
        fields,
    })
}

impl Plan {
    /// Which rows of a batch each subset `0..=upto` takes. `chosen[s]` holds
    /// the records a limited subset kept (decided by an earlier pass); a
    /// limited subset without it yet takes all its candidates, which is what
    /// the pass deciding it needs.
    fn assign(
        &self,
        ids: &[u64],
        columns: &Columns,
        now: i64,
        upto: usize,
        chosen: &[Option<IdSet>],
    ) -> Result<Vec<Vec<bool>>, String> {
        let mut left = vec![true; ids.len()];
        let mut taken = Vec::with_capacity(upto + 1);
        for (s, subset) in self.subsets.iter().enumerate().take(upto + 1) {
            let matched = match &subset.filter {
                Some(f) => f
                    .evaluate(columns, ids.len(), now)
                    .map_err(|e| e.to_string())?,
                None => vec![true; ids.len()],
            };
            let mut row: Vec<bool> = matched
                .iter()
                .zip(&left)
                .map(|(m, l)| *m && (self.overlap || *l))
                .collect();
            if let Some(kept) = &chosen[s] {
                row.iter_mut()
                    .zip(ids)
                    .for_each(|(r, id)| *r &= kept.contains(*id));
            }
            if !self.overlap {
                left.iter_mut().zip(&row).for_each(|(l, r)| *l &= !*r);
            }
            taken.push(row);
        }
        Ok(taken)
    }
}

struct Split;

impl Activity for Split {
    fn describe() -> Descriptor {
        Descriptor::new(
            "split",
            env!("CARGO_PKG_VERSION"),
            "Splits a population into ordered subsets (first match wins)",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        let plan = load(config)?;
        let mut outs: Vec<String> = plan.subsets.into_iter().map(|s| s.name).collect();
        outs.extend(plan.complement);
        Ok(outs)
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let plan = load(&task.config).map_err(|es| es[0].to_string())?;
        let now = now_ms();
        for input in &task.inputs {
            split(&plan, &input.population, now)?;
        }
        Ok(Outcome::Done)
    }
}

fn split(plan: &Plan, population: &Population, now: i64) -> Result<(), String> {
    let dimension = population.dimension();
    let n = plan.subsets.len();
    // Decide each limited subset in order: its candidates depend on what the
    // subsets before it kept.
    let mut chosen: Vec<Option<IdSet>> = vec![None; n];
    for (s, subset) in plan.subsets.iter().enumerate() {
        let Some(limit) = &subset.limit else { continue };
        let candidates = if limit.needs_count() {
            let mut count = 0u64;
            for_each_batch_with(population, &plan.fields, |ids, columns| {
                let taken = plan.assign(ids, columns, now, s, &chosen)?;
                count += taken[s].iter().filter(|t| **t).count() as u64;
                Ok(())
            })?;
            Some(count)
        } else {
            None
        };
        let mut selector = Selector::new(limit.pick.clone(), limit.keep(candidates));
        let rank = limit.field().map(|f| f.path);
        for_each_batch_with(population, &plan.fields, |ids, columns| {
            let taken = plan.assign(ids, columns, now, s, &chosen)?;
            selector.offer(ids, &taken[s], rank.as_ref().and_then(|p| columns.get(p)));
            Ok(())
        })?;
        chosen[s] = Some(IdSet::from_ids(&selector.finish()));
    }
    // The final pass: every subset's records and the complement.
    let mut out = Outputs::new();
    let mut counts = vec![0u64; n + 1];
    let mut buffers: Vec<Vec<u64>> = vec![Vec::new(); n + 1];
    for_each_batch_with(population, &plan.fields, |ids, columns| {
        let taken = plan.assign(ids, columns, now, n - 1, &chosen)?;
        for (s, row) in taken.iter().enumerate() {
            buffers[s].clear();
            buffers[s].extend(ids.iter().zip(row).filter(|(_, t)| **t).map(|(id, _)| *id));
        }
        buffers[n].clear();
        buffers[n].extend(
            ids.iter()
                .enumerate()
                .filter(|(i, _)| taken.iter().all(|row| !row[*i]))
                .map(|(_, id)| *id),
        );
        for (s, buf) in buffers.iter().enumerate() {
            counts[s] += buf.len() as u64;
            // An empty batch is not emitted: whether a transition is taken at
            // all is decided below.
            if !buf.is_empty()
                && let Some(name) = transition(plan, s)
            {
                out.emit(name, &dimension, buf)?;
            }
        }
        Ok(())
    })?;
    for (s, count) in counts.iter().enumerate() {
        let Some(name) = transition(plan, s) else {
            continue;
        };
        let skip = if s < n {
            plan.subsets[s].skip_empty
        } else {
            plan.skip_empty
        };
        if *count == 0 && !skip {
            out.emit(name, &dimension, &[])?;
        }
    }
    out.finish()
}

/// The transition of subset `s`, or of the complement when `s` is past them.
fn transition(plan: &Plan, s: usize) -> Option<&str> {
    match plan.subsets.get(s) {
        Some(subset) => Some(&subset.name),
        None => plan.complement.as_deref(),
    }
}

crosscast_sdk::export_activity!(Split);
