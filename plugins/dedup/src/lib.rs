//! Deduplication: one record per distinct value of an attribute.
//!
//! Config: `by`, the attribute path (`email`, `recipient.email`); optional
//! `duplicates`, a transition for the records left out; `empty` says what
//! happens to records without a value: `keep` (default) or `drop` (they
//! then go to `duplicates`). The first record of each value (lowest id,
//! i.e. first imported) is kept. Values are remembered as 64-bit hashes, so
//! a million distinct values take about 16 MiB of guest memory.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    by: String,
    #[serde(default)]
    duplicates: Option<String>,
    #[serde(default)]
    empty: Option<String>,
}

fn load(json: &str) -> Result<(Config, bool), Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    config::attribute("by", &cfg.by);
    let keep_empty = match cfg.empty.as_deref() {
        None | Some("keep") => true,
        Some("drop") => false,
        Some(other) => {
            return Err(vec![ConfigError::new(
                "empty",
                format!("`{other}` is not `keep` or `drop`"),
            )]);
        }
    };
    if cfg.duplicates.as_deref() == Some("done") {
        return Err(vec![ConfigError::new(
            "duplicates",
            "`done` is the transition of the kept records: name the duplicates otherwise",
        )]);
    }
    Ok((cfg, keep_empty))
}

fn hash(s: &str) -> u64 {
    // SipHash with fixed keys: the same value always hashes the same.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

struct Dedup;

impl Activity for Dedup {
    fn describe() -> Descriptor {
        Descriptor::new(
            "dedup",
            env!("CARGO_PKG_VERSION"),
            "Keeps one record per distinct value of an attribute",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        let (cfg, _) = load(config)?;
        Ok(std::iter::once("done".to_string())
            .chain(cfg.duplicates)
            .collect())
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let (cfg, keep_empty) = load(&task.config).map_err(|es| es[0].to_string())?;
        let fields = [Field {
            path: cfg.by.clone(),
            presence_only: false,
        }];
        let mut out = Outputs::new();
        for input in &task.inputs {
            let dimension = input.population.dimension();
            out.emit("done", &dimension, &[])?;
            if let Some(d) = &cfg.duplicates {
                out.emit(d, &dimension, &[])?;
            }
            let mut seen: HashSet<u64> = HashSet::new();
            for_each_batch_with(&input.population, &fields, |ids, columns| {
                let col = &columns[&cfg.by];
                let (mut kept, mut dropped) = (Vec::new(), Vec::new());
                for (i, &id) in ids.iter().enumerate() {
                    let keep = match col.get(i) {
                        Some(v) => seen.insert(hash(&v.to_text())),
                        None => keep_empty,
                    };
                    if keep {
                        kept.push(id)
                    } else {
                        dropped.push(id)
                    }
                }
                out.emit("done", &dimension, &kept)?;
                match &cfg.duplicates {
                    Some(d) => out.emit(d, &dimension, &dropped),
                    None => Ok(()),
                }
            })?;
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Dedup);
