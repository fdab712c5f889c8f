//! Keeps a seeded sample of its population: a record is in the sample when
//! a hash of its id and the seed falls under `percent`, so the same seed
//! always keeps the same records (a control group that stays put across
//! runs). The others leave on `rest`.
//!
//! Config, in the workflow (`[activity.control.config]`):
//!
//! ```toml
//! percent = 10   # 0 to 100
//! seed = 7       # optional: another seed, another sample
//! ```

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    percent: u32,
    #[serde(default)]
    seed: u64,
}

/// Parses and checks a config; the host reports errors at `validate` time
/// with the field's line in the workflow file.
fn load(json: &str) -> Result<Config, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    if cfg.percent > 100 {
        return Err(vec![ConfigError::new("percent", "expected 0 to 100")]);
    }
    Ok(cfg)
}

/// Whether `id` is in the sample (SplitMix64 of the id and the seed).
fn kept(id: u64, seed: u64, percent: u32) -> bool {
    let mut z = id ^ seed.rotate_left(32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % 100 < u64::from(percent)
}

struct Sample;

impl Activity for Sample {
    fn describe() -> Descriptor {
        Descriptor::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Keeps a seeded sample of its population; the rest leaves on `rest`",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        load(config).map(|_| vec!["sample".into(), "rest".into()])
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let cfg = load(&task.config).map_err(|es| es[0].to_string())?;
        // Emits are buffered and handed to the host in large lists.
        let mut out = Outputs::new();
        for input in &task.inputs {
            let dimension = input.population.dimension();
            // Both transitions are taken, even when one gets nobody.
            out.emit("sample", &dimension, &[])?;
            out.emit("rest", &dimension, &[])?;
            // Ids come 16,384 at a time: one host call per batch.
            for_each_batch(&input.population, |ids| {
                let (sample, rest): (Vec<u64>, Vec<u64>) =
                    ids.iter().partition(|&&id| kept(id, cfg.seed, cfg.percent));
                out.emit("sample", &dimension, &sample)?;
                out.emit("rest", &dimension, &rest)
            })?;
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

crosscast_sdk::export_activity!(Sample);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_about_percent_and_stable_per_seed() {
        let ids = 1..=10_000u64;
        let count = |seed| ids.clone().filter(|&id| kept(id, seed, 10)).count();
        assert!((900..1100).contains(&count(0)), "{}", count(0));
        assert_eq!(count(3), count(3));
        let differs = ids.clone().any(|id| kept(id, 0, 10) != kept(id, 1, 10));
        assert!(differs, "another seed, another sample");
        assert!(ids.clone().all(|id| kept(id, 5, 100) && !kept(id, 5, 0)));
    }

    /// `execute` runs in crosscast's sandbox on these records: the real
    /// code, the host's populations (it needs `crosscast` on PATH or in
    /// CROSSCAST_BIN).
    #[test]
    fn the_host_runs_it_on_records() {
        use crosscast_sdk::testing::{Plugin, Record};
        let plugin = Plugin::build(env!("CARGO_MANIFEST_DIR")).unwrap();
        let world = plugin.world().unwrap();
        let records: Vec<Record> = (1..=200)
            .map(|i| Record::new(&format!("R{i:03}")))
            .collect();
        world.recipients(&records).unwrap();
        let all = world.execute("recipient", "{ percent = 100 }").unwrap();
        assert_eq!(all.state, "done", "{:?}", all.errors);
        assert_eq!(all.transitions["sample"].len(), 200);
        assert!(all.transitions["rest"].is_empty());
        let tenth = world
            .execute("recipient", "{ percent = 10, seed = 3 }")
            .unwrap();
        let (sample, rest) = (&tenth.transitions["sample"], &tenth.transitions["rest"]);
        assert_eq!(sample.len() + rest.len(), 200);
        assert!(
            (5..=40).contains(&sample.len()),
            "about a tenth: {}",
            sample.len()
        );
        let again = world
            .execute("recipient", "{ percent = 10, seed = 3 }")
            .unwrap();
        assert_eq!(
            again.transitions["sample"], *sample,
            "the same seed, the same sample"
        );
    }

    #[test]
    fn a_config_is_checked() {
        assert_eq!(
            Sample::configure(r#"{"percent": 101}"#).unwrap_err()[0].field,
            "percent"
        );
        assert_eq!(
            Sample::configure(r#"{"percent": 10}"#).unwrap(),
            ["sample", "rest"]
        );
    }
}
