//! Checks a parsed workflow against the installed plugins: unknown plugins,
//! bad config (the plugin's own checks, templates included), unknown and
//! dangling transitions, inputs, cycles.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::parse::{Diagnostic, Parsed};
use super::{Activity, Workflow};
use crate::runtime::Runtime;
use crate::store::Store;

/// Validates; every problem found is reported. A valid workflow comes
/// with its warnings; an invalid one's diagnostics include them.
pub fn validate(
    parsed: &Parsed,
    store: &Store,
    runtime: &Runtime,
) -> Result<(Workflow, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut activities = Vec::new();
    let mut configs = Vec::new();
    let mut inputs_range: HashMap<String, (u32, u32)> = HashMap::new();
    // Read once: a file may name an unknown plugin thousands of times.
    let installed: Vec<String> = store
        .plugins()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.name)
        .collect();
    for raw in &parsed.activities {
        let prefix = format!("activity.{}", raw.id);
        let Some((kind, kind_span)) = &raw.kind else {
            continue;
        };
        let plugin = match store.plugin(kind) {
            Ok(p) => p,
            Err(_) => {
                diags.push(parsed.at(
                    kind_span,
                    format!("{prefix}.type"),
                    unknown_plugin(kind, &installed),
                ));
                continue;
            }
        };
        let config = serde_json::to_string(&raw.config).unwrap_or_default();
        let configured = match runtime.configure(store, &plugin, &config) {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                for (field, message) in errors {
                    let span = parsed.config_span(raw, &field);
                    let path = if field.is_empty() {
                        format!("{prefix}.config")
                    } else {
                        format!("{prefix}.config.{}", super::needs::toml_path(&field))
                    };
                    diags.push(parsed.at(&span, path, message));
                }
                continue;
            }
            Err(e) => {
                diags.push(parsed.at(kind_span, format!("{prefix}.type"), e.to_string()));
                continue;
            }
        };
        inputs_range.insert(
            raw.id.clone(),
            (configured.min_inputs, configured.max_inputs),
        );
        configs.push((raw, plugin.clone(), configured.clone()));
        for (transition, (span, _)) in &raw.next {
            // `error` is the host's: taken when the activity fails.
            if !configured.outputs.contains(transition) && transition != crate::executor::ERROR {
                diags.push(parsed.at(
                    span,
                    format!("{prefix}.next.{transition}"),
                    format!(
                        "`{kind}` has no transition `{transition}` with this config (it has: {}, \
                         and `error` on failure)",
                        configured.outputs.join(", ")
                    ),
                ));
            }
        }
        activities.push(Activity {
            id: raw.id.clone(),
            kind: kind.clone(),
            config: raw.config.clone(),
            next: raw
                .next
                .iter()
                .map(|(t, (_, ts))| (t.clone(), ts.iter().map(|(s, _)| s.clone()).collect()))
                .collect(),
            outputs: configured.outputs,
            delivery: configured.delivery,
            join: configured.max_inputs > 1,
            validity_ms: raw.validity.as_ref().map(|(ms, _)| *ms),
        });
        if let Some((_, span)) = &raw.validity
            && !configured.delivery
        {
            diags.push(parsed.at(
                span,
                format!("{prefix}.validity"),
                format!("`validity` applies to deliveries, and `{kind}` is not a channel"),
            ));
        }
    }
    // Transitions must lead somewhere that exists.
    let ids: Vec<&str> = parsed.activities.iter().map(|a| a.id.as_str()).collect();
    let known: HashSet<&str> = ids.iter().copied().collect();
    let mut incoming: BTreeMap<&str, usize> = BTreeMap::new();
    for raw in &parsed.activities {
        for (transition, (_, targets)) in &raw.next {
            for (target, span) in targets {
                if !known.contains(target.as_str()) {
                    diags.push(parsed.at(
                        span,
                        format!("activity.{}.next.{transition}", raw.id),
                        dangling(target, &ids),
                    ));
                } else if target == &raw.id {
                    diags.push(parsed.at(
                        span,
                        format!("activity.{}.next.{transition}", raw.id),
                        "an activity cannot lead to itself",
                    ));
                } else if transition == crate::executor::ERROR
                    && inputs_range.get(target).is_some_and(|(_, max)| *max > 1)
                {
                    // A failure's population arrives on its own: a join
                    // would wait for its other inputs for ever.
                    diags.push(parsed.at(
                        span,
                        format!("activity.{}.next.{transition}", raw.id),
                        format!(
                            "an `error` transition cannot lead to a join (`{target}` gathers \
                             several inputs); lead it to an activity that takes one"
                        ),
                    ));
                } else {
                    *incoming.entry(target.as_str()).or_default() += 1;
                }
            }
        }
    }
    // Each activity must be able to take what arrives (one population at a
    // time: there is no implicit join).
    for raw in &parsed.activities {
        let Some(&(min, max)) = inputs_range.get(&raw.id) else {
            continue;
        };
        let n = incoming.get(raw.id.as_str()).copied().unwrap_or(0);
        let kind = raw.kind.as_ref().map(|k| k.0.as_str()).unwrap_or("?");
        if n == 0 && min > 0 {
            diags.push(parsed.at(
                &raw.id_span,
                format!("activity.{}", raw.id),
                format!(
                    "`{kind}` needs an incoming population, but no transition leads to `{}`",
                    raw.id
                ),
            ));
        }
        if max > 1 && n > 0 && (n < min as usize || n > max as usize) {
            diags.push(parsed.at(
                &raw.id_span,
                format!("activity.{}", raw.id),
                format!(
                    "`{kind}` joins {min} to {max} incoming transitions, but {n} lead to `{}`",
                    raw.id
                ),
            ));
        }
        if n > 0 && max == 0 {
            diags.push(parsed.at(
                &raw.id_span,
                format!("activity.{}", raw.id),
                format!(
                    "`{kind}` starts a workflow and takes no input, but a transition leads to `{}`",
                    raw.id
                ),
            ));
        }
    }
    if diags.is_empty()
        && let Some(d) = find_cycle(parsed)
    {
        diags.push(d);
    }
    // The names each config declares, against the data and the accounts.
    let checked: Vec<super::needs::Checked<'_>> = configs
        .iter()
        .map(|(raw, plugin, configured)| super::needs::Checked {
            raw,
            plugin,
            configured,
        })
        .collect();
    let named = super::needs::check(parsed, store, &checked);
    // A delivery whose names check builds one message for a sample record,
    // which the host vets as it would at send time (with a missing account
    // or attribute, the names' errors say more than the sample's).
    let wrong: HashSet<&str> = named
        .iter()
        .filter(|(_, d)| !d.warning)
        .map(|(id, _)| id.as_str())
        .collect();
    for c in checked
        .iter()
        .filter(|c| c.configured.delivery && !wrong.contains(c.raw.id.as_str()))
    {
        if let Some(d) = sampled(parsed, store, runtime, c) {
            diags.push(d);
        }
    }
    diags.extend(named.into_iter().map(|(_, d)| d));
    if diags.iter().all(|d| d.warning) {
        Ok((
            Workflow {
                name: parsed.name.clone(),
                activities,
                schedule: parsed.schedule.clone(),
            },
            diags,
        ))
    } else {
        Err(diags)
    }
}

/// What the host would refuse in a message the delivery builds for a
/// sample record.
fn sampled(
    parsed: &Parsed,
    store: &Store,
    runtime: &Runtime,
    c: &super::needs::Checked<'_>,
) -> Option<Diagnostic> {
    use crate::deliver::sample::{Sampled, sample};
    let (_, kind_span) = c.raw.kind.as_ref()?;
    let config = serde_json::to_string(&c.raw.config).unwrap_or_default();
    let message = match sample(store, runtime, c.plugin, &config) {
        Ok(Sampled::Refused(reason)) => {
            format!("a message built for a sample record would be refused: {reason}")
        }
        Err(e) => format!("building a message for a sample record failed: {e}"),
        Ok(Sampled::Send | Sampled::Excluded(_)) => return None,
    };
    Some(parsed.at(kind_span, format!("activity.{}.type", c.raw.id), message))
}

/// Reports the transition that closes a cycle, if the graph has one. The
/// walk keeps its own stack: a chain of many thousand activities must not
/// overflow the thread's.
fn find_cycle(parsed: &Parsed) -> Option<Diagnostic> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let index: HashMap<&str, usize> = parsed
        .activities
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.as_str(), i))
        .collect();
    // Each activity's edges: (transition, target index, span of the target).
    let edges: Vec<Vec<(&str, usize, &std::ops::Range<usize>)>> = parsed
        .activities
        .iter()
        .map(|raw| {
            raw.next
                .iter()
                .flat_map(|(transition, (_, targets))| {
                    targets.iter().filter_map(|(target, span)| {
                        index
                            .get(target.as_str())
                            .map(|&j| (transition.as_str(), j, span))
                    })
                })
                .collect()
        })
        .collect();
    let mut marks = vec![Mark::New; parsed.activities.len()];
    for root in 0..parsed.activities.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // (activity, next edge to follow)
        let mut stack = vec![(root, 0usize)];
        marks[root] = Mark::Active;
        while let Some((i, e)) = stack.last_mut() {
            let i = *i;
            let Some(&(transition, j, span)) = edges[i].get(*e) else {
                marks[i] = Mark::Done;
                stack.pop();
                continue;
            };
            *e += 1;
            match marks[j] {
                Mark::Active => {
                    let raw = &parsed.activities[i];
                    let target = &parsed.activities[j].id;
                    return Some(parsed.at(
                        span,
                        format!("activity.{}.next.{transition}", raw.id),
                        format!(
                            "this transition closes a cycle through `{target}`: workflows must be acyclic"
                        ),
                    ));
                }
                Mark::New => {
                    marks[j] = Mark::Active;
                    stack.push((j, 0));
                }
                Mark::Done => {}
            }
        }
    }
    None
}

/// How many names a message lists, or compares a mistyped one with: each
/// problem costs the same however large the file, so that checking stays
/// linear in its size.
const NAMES_SHOWN: usize = 20;
const NAMES_COMPARED: usize = 500;

/// An unknown plugin: the one meant, or what is installed.
fn unknown_plugin(kind: &str, installed: &[String]) -> String {
    let names: Vec<&str> = installed.iter().map(String::as_str).collect();
    if let Some(meant) = crate::spelling::near(kind, &names) {
        return format!("unknown plugin `{kind}`: did you mean `{meant}`?");
    }
    if names.is_empty() {
        return format!("unknown plugin `{kind}` (none installed; run `crosscast init`)");
    }
    format!("unknown plugin `{kind}` (installed: {})", shown(&names))
}

/// A transition to an activity that does not exist.
fn dangling(target: &str, ids: &[&str]) -> String {
    let meant = (ids.len() <= NAMES_COMPARED)
        .then(|| crate::spelling::near(target, ids))
        .flatten();
    match meant {
        Some(meant) => {
            format!("dangling transition: no activity `{target}`: did you mean `{meant}`?")
        }
        None => format!(
            "dangling transition: no activity `{target}` (activities: {})",
            shown(ids)
        ),
    }
}

/// The first [`NAMES_SHOWN`] names, and how many more there are.
fn shown(names: &[&str]) -> String {
    let mut out = names[..names.len().min(NAMES_SHOWN)].join(", ");
    if names.len() > NAMES_SHOWN {
        out.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    out
}
