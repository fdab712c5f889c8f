//! Signal: holds each arriving population until a signal of its name is
//! sent to the run (`crosscast signal RUN NAME`, or
//! `POST /api/v1/runs/{run}/signals/{name}`), then passes it on along
//! `done`.
//!
//! Config: `name`, and optionally `timeout` (`2d`): with it, the population
//! leaves on `timeout` when no signal came within that long of its arrival.
//! A signal sent before the activity is reached counts (the host keeps
//! every signal of a run). A signal naming records (`--ids`) lets through
//! only those of the population: the records themselves, or, for a
//! population of another dimension, the records linked to them (the app
//! subscriptions of the recipients named).

use crosscast_sdk::activity::*;
use crosscast_sdk::config;
use crosscast_sdk::select::IdSet;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    name: String,
    #[serde(default)]
    timeout: Option<String>,
}

/// A checked config: the signal's name and the timeout in milliseconds.
struct Checked {
    name: String,
    timeout: Option<i64>,
}

fn check(json: &str) -> Result<Checked, Vec<ConfigError>> {
    let cfg: Config = config::parse(json)?;
    let name = cfg.name.trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(vec![ConfigError::new(
            "name",
            format!(
                "`{}` is not a signal name: ASCII letters, digits, `-`, `_` or `.`",
                cfg.name
            ),
        )]);
    }
    let timeout = match &cfg.timeout {
        None => None,
        Some(t) => {
            let d = humantime::parse_duration(t).map_err(|e| {
                vec![ConfigError::new(
                    "timeout",
                    format!("`{t}` is not a duration ({e}); write e.g. 2d, 36h, 90min"),
                )]
            })?;
            Some(
                i64::try_from(d.as_millis())
                    .map_err(|_| vec![ConfigError::new("timeout", "too long")])?,
            )
        }
    };
    Ok(Checked {
        name: name.to_string(),
        timeout,
    })
}

struct SignalActivity;

impl Activity for SignalActivity {
    fn describe() -> Descriptor {
        Descriptor::new(
            "signal",
            env!("CARGO_PKG_VERSION"),
            "Holds a population until a signal is sent to the run, or a timeout",
        )
    }

    fn configure(config: &str) -> Result<Vec<String>, Vec<ConfigError>> {
        let cfg = check(config)?;
        let mut transitions = vec!["done".to_string()];
        if cfg.timeout.is_some() {
            transitions.push("timeout".into());
        }
        Ok(transitions)
    }

    fn execute(task: Task) -> Result<Outcome, String> {
        let cfg = check(&task.config).map_err(|es| es[0].to_string())?;
        let deadline = cfg.timeout.map(|t| task.started_at.saturating_add(t));
        // A signal counts if it came before the deadline, whenever this
        // execution happens to run.
        let signal = task
            .signals
            .iter()
            .find(|s| s.name == cfg.name && deadline.is_none_or(|d| s.at < d));
        let transition = match (signal, deadline) {
            (Some(_), _) => "done",
            (None, Some(d)) if now_ms() >= d => "timeout",
            (None, until) => return Ok(Outcome::wait_for_signal(&cfg.name, until)),
        };
        let named = match signal.and_then(|s| s.ids.as_ref()) {
            Some(ids) => Some((ids.dimension(), members(ids)?)),
            None => None,
        };
        let mut out = Outputs::new();
        for input in &task.inputs {
            let dimension = input.population.dimension();
            // Announced even when empty: the transition is taken either way.
            out.emit(transition, &dimension, &[])?;
            match &named {
                None => for_each_batch(&input.population, |ids| {
                    out.emit(transition, &dimension, ids)
                })?,
                Some((of, set)) => {
                    let keep = Restriction::new(&dimension, of)?;
                    for_each_batch(&input.population, |ids| {
                        let kept = keep.apply(&dimension, ids, set)?;
                        out.emit(transition, &dimension, &kept)
                    })?;
                }
            }
        }
        out.finish()?;
        Ok(Outcome::Done)
    }
}

/// The ids of a population, as a set.
fn members(population: &Population) -> Result<IdSet, String> {
    let mut set = IdSet::new();
    for_each_batch(population, |ids| {
        ids.iter().for_each(|&id| set.insert(id));
        Ok(())
    })?;
    Ok(set)
}

/// How records of a population are matched against named records.
enum Restriction {
    /// The same dimension: by id.
    Same,
    /// Through a link of the population's dimension to the named one.
    Link(String),
}

impl Restriction {
    fn new(dimension: &str, named: &str) -> Result<Restriction, String> {
        if dimension == named {
            return Ok(Restriction::Same);
        }
        links(dimension)?
            .into_iter()
            .find(|(_, target)| target == named)
            .map(|(link, _)| Restriction::Link(link))
            .ok_or_else(|| {
                format!(
                    "the signal names records of `{named}`, and this population is of \
                     `{dimension}`, with no link to `{named}`"
                )
            })
    }

    /// The ids of `ids` that the named records `set` let through.
    fn apply(&self, dimension: &str, ids: &[u64], set: &IdSet) -> Result<Vec<u64>, String> {
        Ok(match self {
            Restriction::Same => ids.iter().copied().filter(|&id| set.contains(id)).collect(),
            Restriction::Link(link) => ids
                .iter()
                .zip(follow(dimension, link, ids)?)
                .filter(|(_, owner)| owner.is_some_and(|o| set.contains(o)))
                .map(|(&id, _)| id)
                .collect(),
        })
    }
}

crosscast_sdk::export_activity!(SignalActivity);
