//! Signals sent to runs (`crosscast signal RUN NAME [--ids FILE]`, `POST
//! /api/v1/runs/{run}/signals/{name}`): the name checked, the records named
//! resolved from their external ids, then kept and delivered by the
//! executor ([`crate::executor::Executor::signal`]).

use crate::executor::{Executor, Sent};
use crate::store::Store;

/// Most unknown ids a refusal lists.
const LISTED: usize = 10;

/// A signal refused before anything is kept.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The name is not one a `signal` activity can wait for.
    #[error("`{0}` is not a signal name: ASCII letters, digits, `-`, `_` or `.`")]
    BadName(String),
    /// Some ids are of no record: nothing is sent.
    #[error(
        "{count} id(s) are of no {dimension} (nothing was sent): {}",
        listed(.unknown, *.count)
    )]
    UnknownIds {
        /// The dimension looked in.
        dimension: String,
        /// How many are unknown.
        count: usize,
        /// The first ones: (line or position, from 1; id).
        unknown: Vec<(usize, String)>,
    },
}

fn listed(unknown: &[(usize, String)], count: usize) -> String {
    let mut s: Vec<String> = unknown
        .iter()
        .map(|(line, id)| format!("line {line}: `{id}`"))
        .collect();
    if count > unknown.len() {
        s.push(format!("and {} more", count - unknown.len()));
    }
    s.join(", ")
}

/// Checks a signal's name.
pub fn check_name(name: &str) -> Result<(), SignalError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(SignalError::BadName(name.to_string())),
    }
}

/// The ids of a file of external ids, one per line: blank lines and lines
/// starting with `#` are skipped, and a first line `id` (a CSV header).
/// Each with its line number.
pub fn read_ids(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(i, l)| !(l.is_empty() || l.starts_with('#') || (*i == 1 && *l == "id")))
        .map(|(i, l)| (i, l.to_string()))
        .collect()
}

/// The internal ids of external ids of `dimension`, sorted and each once;
/// refused, with the first unknown ones, if any is of no record.
pub fn resolve(
    store: &Store,
    dimension: &str,
    keys: &[(usize, String)],
) -> anyhow::Result<Vec<u64>> {
    crate::store::audience::dimension(dimension)?;
    let index = store.audience().key_index(dimension)?;
    let mut ids = Vec::with_capacity(keys.len());
    let mut unknown = Vec::new();
    let mut count = 0;
    for (line, key) in keys {
        match index.get(key) {
            Some(id) => ids.push(id),
            None => {
                count += 1;
                if unknown.len() < LISTED {
                    unknown.push((*line, key.clone()));
                }
            }
        }
    }
    if count > 0 {
        return Err(SignalError::UnknownIds {
            dimension: dimension.to_string(),
            count,
            unknown,
        }
        .into());
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Sends signal `name` to `run`, naming the records `keys` of `dimension`
/// when given.
pub fn send(
    exec: &Executor,
    store: &Store,
    run: u64,
    name: &str,
    dimension: &str,
    keys: Option<&[(usize, String)]>,
) -> anyhow::Result<Sent> {
    check_name(name)?;
    store.run(run)?;
    let ids = match keys {
        Some(keys) => Some((dimension, resolve(store, dimension, keys)?)),
        None => None,
    };
    exec.signal(run, name, ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ids_file_skips_its_header_blanks_and_comments() {
        let ids = read_ids("id\nr1\n\n# late ones\n  r2  \n");
        assert_eq!(ids, [(2, "r1".to_string()), (5, "r2".to_string())]);
        assert!(check_name("files-ready.v2").is_ok());
        assert!(matches!(
            check_name("two words"),
            Err(SignalError::BadName(_))
        ));
        assert!(check_name("").is_err());
    }
}
