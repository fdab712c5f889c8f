//! Change dimension: the same audience seen as records of another
//! dimension, through a link between the two.
//!
//! Config: `to`, the target dimension. From app subscriptions to recipients,
//! each subscription's recipient (once each: two devices, one recipient);
//! from recipients to app subscriptions, every subscription of those
//! recipients (a scan of the subscriptions, with the recipients as a bitmap).
//! Emits on `done`.

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::select::IdSet;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    to: String,
}

struct ChangeDimension;

impl Activity for ChangeDimension {
    fn describe() -> Descriptor {
        Descriptor::new(
            "change-dimension",
            env!("CARGO_PKG_VERSION"),
            "Moves a population to a linked dimension (subscriptions <-> recipients)",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        let cfg = config::parse::<Config>(config)?;
        config::emits("to", &cfg.to);
        Ok(vec!["done".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let cfg: Config = config::parse(&task.config).map_err(|es| es[0].to_string())?;
        let mut out = Outputs::new();
        for input in &task.inputs {
            let from = input.population.dimension();
            out.emit("done", &cfg.to, &[])?;
            if from == cfg.to {
                for_each_batch(&input.population, |ids| out.emit("done", &cfg.to, ids))?;
                continue;
            }
            // Forward: a link of the input's dimension leads to the target.
            if let Some((link, _)) = links(&from)?.into_iter().find(|(_, t)| *t == cfg.to) {
                for_each_batch(&input.population, |ids| {
                    let targets: Vec<u64> =
                        follow(&from, &link, ids)?.into_iter().flatten().collect();
                    // The host deduplicates: two devices give one recipient.
                    out.emit("done", &cfg.to, &targets)
                })?;
                continue;
            }
            // Backward: a link of the target's dimension leads to the input's.
            let Some((link, _)) = links(&cfg.to)?.into_iter().find(|(_, t)| *t == from) else {
                return Err(format!(
                    "no link between dimensions `{from}` and `{}`",
                    cfg.to
                ));
            };
            let mut members = IdSet::new();
            for_each_batch(&input.population, |ids| {
                ids.iter().for_each(|&id| members.insert(id));
                Ok(())
            })?;
            let all = scan(&cfg.to)?;
            for_each_batch(&all, |ids| {
                let owners = follow(&cfg.to, &link, ids)?;
                let hit: Vec<u64> = ids
                    .iter()
                    .zip(owners)
                    .filter(|(_, o)| o.is_some_and(|o| members.contains(o)))
                    .map(|(id, _)| *id)
                    .collect();
                out.emit("done", &cfg.to, &hit)
            })?;
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(ChangeDimension);
