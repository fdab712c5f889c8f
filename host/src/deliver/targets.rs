//! Whom a delivery sends to: the ids of its input population, or their
//! distinct linked recipients when the channel sends once per recipient;
//! and what it passes on (the population it received).

use std::collections::BTreeMap;

use super::Needs;
use crate::runtime::channel::wit;
use crate::store::audience::dimension;
use crate::store::runs::{InputRef, OutputRef, Task};

/// A delivery's input population and the ids to send to in it.
pub(super) fn task_targets<'t>(
    needs: &Needs<'_>,
    task: &'t Task,
    target: wit::Target,
) -> Result<(&'t InputRef, String, Vec<u64>), String> {
    let input = task
        .inputs
        .first()
        .ok_or("a delivery needs an incoming population")?;
    let meta = needs
        .store
        .population_meta(input.population)
        .map_err(|e| e.to_string())?;
    let (dimension, ids) = targets(needs, &meta.dimension, input.population, target)?;
    Ok((input, dimension, ids))
}

/// A delivery's outputs: the population it received, on `done`.
pub(super) fn passes_on(input: &InputRef) -> BTreeMap<String, OutputRef> {
    BTreeMap::from([(
        "done".to_string(),
        OutputRef {
            population: input.population,
            count: input.count,
        },
    )])
}

/// The ids to send to: the population itself, or its distinct linked
/// recipients when the channel sends once per recipient.
fn targets(
    needs: &Needs<'_>,
    dim: &str,
    population: u64,
    target: wit::Target,
) -> Result<(String, Vec<u64>), String> {
    let want = match target {
        wit::Target::Recipient => "recipient",
        wit::Target::Subscription => "subscription",
    };
    let ids = needs
        .store
        .population_ids(population)
        .map_err(|e| e.to_string())?;
    if ids.is_empty() || dim == want {
        return Ok((want.to_string(), ids));
    }
    let d = dimension(dim).map_err(|e| e.to_string())?;
    let link = d.links.iter().find(|l| l.target == want).ok_or_else(|| {
        format!("this channel sends per {want}, and a {dim} population has no link to {want}s")
    })?;
    let mut out: Vec<u64> = Vec::new();
    for chunk in ids.chunks(10_000) {
        let linked = needs
            .store
            .audience()
            .read_links(d, link.name, chunk)
            .map_err(|e| e.to_string())?;
        out.extend(linked.into_iter().flatten());
    }
    out.sort_unstable();
    out.dedup();
    Ok((want.to_string(), out))
}
